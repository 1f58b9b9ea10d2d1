// Softmax cross-entropy of cuda_backend; kernels/crossentropy.cuh has the kernels and
// their launches.
#include "common/nvtx.h"
#include "kernels/crossentropy.cuh"

void cuda_backend::crossentropy_forward(float* losses, const floatX* logits, const int* targets, int N, int V,
                                        int Vp) {
    NVTX_RANGE("crossentropy_forward");
    ce_forward(losses, logits, targets, N, V, Vp);
}

void cuda_backend::crossentropy_backward(floatX* dlogits, const floatX* logits, const int* targets, float dloss,
                                         int N, int V, int Vp) {
    NVTX_RANGE("crossentropy_backward");
    ce_backward(dlogits, logits, targets, dloss, N, V, Vp);
}
