// The fused residual add + norm + LayerNorm Scaling of cuda_backend; kernels/norm.cuh
// has the kernels and their launches.
#include "common/nvtx.h"
#include "kernels/norm.cuh"

void cuda_backend::residual_norm_forward(floatX* res, floatX* out, float* mean, float* rstd, const floatX* x,
                                         const floatX* y, float alpha, const floatX* w, const floatX* b, int N,
                                         int C, NormKind kind, float eps, NormScheme scheme, int layer) {
    NVTX_RANGE("residual_norm_forward");
    norm_forward(res, out, mean, rstd, x, y, alpha, w, b, N, C, kind, eps, scheme, layer);
}

void cuda_backend::residual_norm_backward(floatX* dx, floatX* dy, floatX* dw, floatX* db, const floatX* dout,
                                          const floatX* dres, const floatX* res, const floatX* w, const float* mean,
                                          const float* rstd, float alpha, int N, int C, NormKind kind,
                                          NormScheme scheme, int layer) {
    NVTX_RANGE("residual_norm_backward");
    norm_backward(dx, dy, dw, db, dout, dres, res, w, mean, rstd, alpha, N, C, kind, scheme, layer);
}
