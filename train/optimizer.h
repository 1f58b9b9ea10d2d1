// One optimizer step over the flat buffers: global gradient norm, clipping as
// torch.nn.utils.clip_grad_norm_ does it, and AdamW with weight decay on the
// matrices only. The layout puts every decayed tensor first, so the update is two
// calls of one kernel: [0, n_decay) with decay, the rest without. With ZeRO-1 each
// rank updates only its shard (train/data_parallel.h gathers the parameters).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "model/gpt.h"

struct AdamWConfig {
    float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
    float grad_clip = 1.0f;  // 0: no clipping
};

template <class Backend>
float grad_norm(const GPT<Backend>& model) {
    return (float)std::sqrt(Backend::norm_squared(model.grads, model.n_alloc));
}

// AdamW on this rank's shard [opt_begin, opt_begin + opt_n) of the flat buffers (all of
// them with one rank), clipped by the global pre-clip gradient norm `norm`.
template <class Backend>
void adamw_step(GPT<Backend>& model, const AdamWConfig& o, float lr, int t, uint32_t seed, float norm) {
    float scale = 1.0f;
    if (o.grad_clip > 0.0f) scale = std::fmin(1.0f, o.grad_clip / (norm + 1e-6f));
    const size_t lo = model.opt_begin, hi = model.opt_begin + model.opt_n;
    const size_t bounds[3] = {0, model.layout.n_decay, model.layout.total};
    for (int k = 0; k < 2; k++) {
        const size_t b = std::max(lo, bounds[k]), e = std::min(hi, bounds[k + 1]);
        if (b >= e) continue;
        const size_t s = b - lo;  // offset into the shard's state
        Backend::adamw_update(model.params + b, model.master ? model.master + s : nullptr, model.grads + b,
                              model.m + s, model.v + s, e - b, lr, o.beta1, o.beta2, o.eps,
                              k == 0 ? o.weight_decay : 0.0f, t, scale, seed + (uint32_t)k);
    }
}

// One rank: the gradient norm, then the update. Returns the norm before clipping.
template <class Backend>
float optimizer_step(GPT<Backend>& model, const AdamWConfig& o, float lr, int t, uint32_t seed) {
    const float norm = grad_norm(model);
    adamw_step(model, o, lr, t, seed, norm);
    return norm;
}
