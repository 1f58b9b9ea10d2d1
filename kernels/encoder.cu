// Token and position embeddings of cuda_backend; kernels/encoder.cuh has the kernels and
// their launches.
#include "common/nvtx.h"
#include "kernels/encoder.cuh"

void cuda_backend::encoder_forward(floatX* out, const int* inp, const floatX* wte, const floatX* wpe, int B, int T,
                                   int C) {
    NVTX_RANGE("encoder_forward");
    enc_forward(out, inp, wte, wpe, B, T, C);
}

void cuda_backend::encoder_backward(floatX* dwte, floatX* dwpe, const floatX* dout, const int* inp, int B, int T,
                                    int C) {
    NVTX_RANGE("encoder_backward");
    enc_backward(dwte, dwpe, dout, inp, B, T, C);
}
