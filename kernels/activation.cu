// GELU and SwiGLU of cuda_backend; kernels/activation.cuh has the kernels and their
// launches.
#include "common/nvtx.h"
#include "kernels/activation.cuh"

void cuda_backend::gelu_forward(floatX* out, const floatX* inp, size_t n) {
    NVTX_RANGE("gelu_forward");
    gelu_fwd(out, inp, n);
}

void cuda_backend::gelu_backward(floatX* dinp, const floatX* inp, const floatX* dout, size_t n) {
    NVTX_RANGE("gelu_backward");
    gelu_bwd(dinp, inp, dout, n);
}

void cuda_backend::swiglu_forward(floatX* out, const floatX* inp, int N, int F) {
    NVTX_RANGE("swiglu_forward");
    swiglu_fwd(out, inp, N, F);
}

void cuda_backend::swiglu_backward(floatX* dinp, const floatX* inp, const floatX* dout, int N, int F) {
    NVTX_RANGE("swiglu_backward");
    swiglu_bwd(dinp, inp, dout, N, F);
}
