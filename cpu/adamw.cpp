// AdamW (decoupled weight decay), written as torch.optim.AdamW computes it so the
// two agree to rounding.
#include <cmath>
#include <vector>

#include "cpu/cpu_backend.h"

void cpu_backend::adamw_update(float* params, float* master, const float* grads, float* m, float* v,
                               size_t n, float lr, float beta1, float beta2, float eps,
                               float weight_decay, int t, float grad_scale, uint32_t /*seed*/) {
    LNS_CHECK(master == nullptr, "the fp32 CPU backend keeps no master copy");
    const float bc1 = 1.0f - std::pow(beta1, (float)t);
    const float bc2_sqrt = std::sqrt(1.0f - std::pow(beta2, (float)t));
    const float step = lr / bc1;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        const float g = grads[i] * grad_scale;
        float p = params[i] * (1.0f - lr * weight_decay);
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        p -= step * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
        params[i] = p;
    }
}

// Fixed chunks summed in double, then added in chunk order: the result does not
// depend on how many threads ran.
double cpu_backend::norm_squared(const float* x, size_t n) {
    const size_t CHUNK = 1 << 16;
    const size_t nchunks = (n + CHUNK - 1) / CHUNK;
    std::vector<double> partial(nchunks, 0.0);
#pragma omp parallel for
    for (size_t k = 0; k < nchunks; k++) {
        double s = 0.0;
        size_t end = (k + 1) * CHUNK < n ? (k + 1) * CHUNK : n;
        for (size_t i = k * CHUNK; i < end; i++) s += (double)x[i] * x[i];
        partial[k] = s;
    }
    double total = 0.0;
    for (double p : partial) total += p;
    return total;
}
