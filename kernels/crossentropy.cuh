// Softmax cross-entropy over the first V of Vp logits on the GPU: one block per
// row. Each thread keeps an online (max, sum of exp) over its columns in fp32;
// the block combines the pairs in a fixed tree (deterministic). The padded tail
// V..Vp never enters the softmax and gets zero gradient.
//
// crossentropy_backward may run in place (dlogits == logits): every read of the
// row for the statistics happens before the block's barrier, and afterwards each
// thread reads a logit and then writes its gradient, the same element.
// The kernels and their launches, used by crossentropy.cu.
#pragma once
#include <algorithm>
#include <cstdint>

#include "kernels/cuda_common.cuh"

namespace {
constexpr int CE_MAX_THREADS = 512;


struct MaxSum {
    float m;  // running max
    float s;  // sum of exp(x - m)
};
__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
    const float m = fmaxf(a.m, b.m);
    if (m == -INFINITY) return {m, 0.0f};  // both empty
    return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

// This thread's columns c < V of row l, VEC at a time (c + VEC <= Vp is guaranteed
// by Vp % VEC == 0 on the vector path).
template <int VEC>
__device__ MaxSum thread_maxsum(const floatX* l, int V) {
    MaxSum acc = {-INFINITY, 0.0f};
    for (int c = threadIdx.x * VEC; c < V; c += blockDim.x * VEC) {
        float v[VEC];
        load_f<VEC>(v, l + c);
        float cm = -INFINITY;
#pragma unroll
        for (int k = 0; k < VEC; k++)
            if (c + k < V) cm = fmaxf(cm, v[k]);
        if (cm > acc.m) {
            acc.s *= expf(acc.m - cm);  // 0 * exp(-inf) = 0 on the first chunk
            acc.m = cm;
        }
#pragma unroll
        for (int k = 0; k < VEC; k++)
            if (c + k < V) acc.s += expf(v[k] - acc.m);
    }
    return acc;
}

// Fixed tree over the block (shuffle-down within warps, then warp 0 over the
// warps); every thread gets lane 0's result. Contains __syncthreads: call with the
// whole block.
__device__ MaxSum block_maxsum(MaxSum v) {
    __shared__ float sm[32], ss[32];
    __shared__ MaxSum result;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    for (int o = 16; o > 0; o >>= 1) {
        const MaxSum other = {__shfl_down_sync(0xffffffffu, v.m, o), __shfl_down_sync(0xffffffffu, v.s, o)};
        if (lane + o < 32) v = combine(v, other);
    }
    if (lane == 0) sm[warp] = v.m, ss[warp] = v.s;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? MaxSum{sm[lane], ss[lane]} : MaxSum{-INFINITY, 0.0f};
        for (int o = 16; o > 0; o >>= 1) {
            const MaxSum other = {__shfl_down_sync(0xffffffffu, v.m, o), __shfl_down_sync(0xffffffffu, v.s, o)};
            if (lane + o < 32) v = combine(v, other);
        }
        if (lane == 0) result = v;
    }
    __syncthreads();
    return result;
}

template <int VEC>
__global__ void crossentropy_forward_kernel(float* losses, const floatX* logits, const int* targets, int V, int Vp) {
    const int n = blockIdx.x;
    const int tgt = targets[n];
    if (tgt < 0) {  // the whole block
        if (threadIdx.x == 0) losses[n] = 0.0f;
        return;
    }
    const floatX* l = logits + (size_t)n * Vp;
    const MaxSum ms = block_maxsum(thread_maxsum<VEC>(l, V));
    if (threadIdx.x == 0) losses[n] = (ms.m + logf(ms.s)) - to_float(l[tgt]);
}

template <int VEC>
__global__ void crossentropy_backward_kernel(floatX* dlogits, const floatX* logits, const int* targets, float dloss,
                                             int V, int Vp) {
    const int n = blockIdx.x;
    const int tgt = targets[n];
    const floatX* l = logits + (size_t)n * Vp;
    floatX* d = dlogits + (size_t)n * Vp;
    float lse = 0.0f;
    if (tgt >= 0) {  // block-uniform
        const MaxSum ms = block_maxsum(thread_maxsum<VEC>(l, V));
        lse = ms.m + logf(ms.s);
    }
    for (int c = threadIdx.x * VEC; c < Vp; c += blockDim.x * VEC) {
        float v[VEC];
        if (tgt >= 0) {
            load_f<VEC>(v, l + c);
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                const int i = c + k;
                v[k] = i < V ? dloss * (expf(v[k] - lse) - (i == tgt ? 1.0f : 0.0f)) : 0.0f;
            }
        } else {
#pragma unroll
            for (int k = 0; k < VEC; k++) v[k] = 0.0f;
        }
        store_f<VEC>(d + c, v);
    }
}

int ce_threads(int chunks) { return std::min(CE_MAX_THREADS, std::max(32, (chunks + 31) / 32 * 32)); }

// The launches, used by crossentropy.cu.
void ce_forward(float* losses, const floatX* logits, const int* targets, int N, int V, int Vp) {
    if (N <= 0) return;
    constexpr int V8 = x128::size;
    const bool vec = Vp % V8 == 0 && aligned16(logits);
    auto* kernel = vec ? crossentropy_forward_kernel<V8> : crossentropy_forward_kernel<1>;
    LNS_LAUNCH(kernel, N, ce_threads(vec ? Vp / V8 : Vp), 0, losses, logits, targets, V, Vp);
    cudaCheckLaunch();
}

void ce_backward(floatX* dlogits, const floatX* logits, const int* targets, float dloss, int N, int V, int Vp) {
    if (N <= 0) return;
    constexpr int V8 = x128::size;
    const bool vec = Vp % V8 == 0 && aligned16(logits) && aligned16(dlogits);
    auto* kernel = vec ? crossentropy_backward_kernel<V8> : crossentropy_backward_kernel<1>;
    LNS_LAUNCH(kernel, N, ce_threads(vec ? Vp / V8 : Vp), 0, dlogits, logits, targets, dloss, V, Vp);
    cudaCheckLaunch();
}
}  // namespace
