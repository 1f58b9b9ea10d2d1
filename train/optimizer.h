// One optimizer step over the flat buffers: global gradient norm, clipping as
// torch.nn.utils.clip_grad_norm_ does it, and AdamW with weight decay on the
// matrices only. The layout puts every decayed tensor first, so the update is two
// calls of one kernel: [0, n_decay) with decay, the rest without.
#pragma once
#include <cmath>
#include <cstdint>

#include "model/gpt.h"

struct AdamWConfig {
    float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.0f;
    float grad_clip = 1.0f;  // 0: no clipping
};

template <class Backend>
float grad_norm(const GPT<Backend>& model) {
    return (float)std::sqrt(Backend::norm_squared(model.grads, model.layout.total));
}

// Returns the gradient norm before clipping. t is the 1-based step count.
template <class Backend>
float optimizer_step(GPT<Backend>& model, const AdamWConfig& o, float lr, int t, uint32_t seed) {
    const float norm = grad_norm(model);
    float scale = 1.0f;
    if (o.grad_clip > 0.0f) scale = std::fmin(1.0f, o.grad_clip / (norm + 1e-6f));
    const size_t bounds[3] = {0, model.layout.n_decay, model.layout.total};
    for (int k = 0; k < 2; k++) {
        const size_t off = bounds[k], n = bounds[k + 1] - bounds[k];
        if (n == 0) continue;
        Backend::adamw_update(model.params + off, model.master ? model.master + off : nullptr, model.grads + off,
                              model.m + off, model.v + off, n, lr, o.beta1, o.beta2, o.eps,
                              k == 0 ? o.weight_decay : 0.0f, t, scale, seed + (uint32_t)k);
    }
    return norm;
}
