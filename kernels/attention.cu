// The first (materialising) attention of cuda_backend; kernels/attention.cuh has the
// kernels and the launch sequences.
#include "common/nvtx.h"
#include "kernels/attention.cuh"

void cuda_backend::attention_forward(floatX* out, floatX* qkvr, floatX* att, const floatX* qkv, int B, int T, int C,
                                     int NH, float rope_theta) {
    NVTX_RANGE("attention_forward");
    naive_attention_forward(out, qkvr, att, qkv, B, T, C, NH, rope_theta);
}

void cuda_backend::attention_backward(floatX* dqkv, floatX* dqkvr, floatX* datt, const floatX* dout,
                                      const floatX* qkvr, const floatX* att, int B, int T, int C, int NH,
                                      float rope_theta) {
    NVTX_RANGE("attention_backward");
    naive_attention_backward(dqkv, dqkvr, datt, dout, qkvr, att, B, T, C, NH, rope_theta);
}
