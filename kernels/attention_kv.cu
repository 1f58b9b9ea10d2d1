// KV-cache attention of cuda_backend, for sampling; kernels/attention_kv.cuh has the
// kernel and its launch.
#include "common/nvtx.h"
#include "kernels/attention_kv.cuh"

void cuda_backend::attention_kv_forward(floatX* out, floatX* kcache, floatX* vcache, const floatX* qkv, int pos, int C,
                                        int NH, int Tmax, float rope_theta) {
    NVTX_RANGE("attention_kv_forward");
    kv_forward(out, kcache, vcache, qkv, pos, C, NH, Tmax, rope_theta);
}
