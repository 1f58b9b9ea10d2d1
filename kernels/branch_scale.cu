// Branch scaling of cuda_backend (LayerScale, SkipInit, LNS after the sublayer);
// kernels/branch_scale.cuh has the kernels and their launches.
#include "common/nvtx.h"
#include "kernels/branch_scale.cuh"

void cuda_backend::branch_scale_forward(floatX* out, const floatX* inp, const floatX* g, float factor, int N, int C,
                                        int channels) {
    NVTX_RANGE("branch_scale_forward");
    bscale_forward(out, inp, g, factor, N, C, channels);
}

void cuda_backend::branch_scale_backward(floatX* dinp, floatX* dg, const floatX* dout, const floatX* inp,
                                         const floatX* g, float factor, int N, int C, int channels) {
    NVTX_RANGE("branch_scale_backward");
    bscale_backward(dinp, dg, dout, inp, g, factor, N, C, channels);
}
