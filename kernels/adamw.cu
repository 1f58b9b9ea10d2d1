// AdamW and the gradient norm of cuda_backend; kernels/adamw.cuh has the kernels and
// their launches.
#include "common/nvtx.h"
#include "kernels/adamw.cuh"

void cuda_backend::adamw_update(floatX* params, float* master, const floatX* grads, float* m, float* v, size_t n,
                                float lr, float beta1, float beta2, float eps, float weight_decay, int t,
                                float grad_scale, uint32_t seed) {
    NVTX_RANGE("adamw_update");
    adamw(params, master, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t, grad_scale, seed);
}

double cuda_backend::norm_squared(const floatX* x, size_t n) {
    NVTX_RANGE("norm_squared");
    if (n == 0) return 0.0;
    double total = 0.0;
    copy_to_host(&total, sumsq(x, n), sizeof(double));
    return total;
}
