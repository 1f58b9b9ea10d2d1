// AdamW and the gradient norm on the GPU.
//
// adamw_update computes torch.optim.AdamW's update with the CPU twin's
// expressions; the host derives the per-step constants exactly as cpu/adamw.cpp
// does and the kernel uses round-to-nearest intrinsics (no FMA contraction), so
// the fp32 values (master, m, v) match the CPU's to the bit. With a master copy,
// params = stochastic_round(master), seeded by (seed, element index).
//
// norm_squared: a grid fixed by n alone; each block sums its grid-stride share in
// double and writes one partial to SCRATCH_REDUCE, then one warp adds the partials
// in a fixed order. Same inputs, same bits, on any device.
// The kernels and their launches, used by adamw.cu.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda_common.cuh"

namespace {
constexpr int ADAMW_THREADS = 256;
constexpr int ADAMW_MAX_BLOCKS = 1 << 16;  // grid-stride beyond this
constexpr int NS_THREADS = 256;
constexpr int NS_MAX_BLOCKS = 1024;


__global__ void adamw_kernel(floatX* params, float* master, const floatX* grads, float* m, float* v, size_t n,
                             float beta1, float beta2, float eps, float decay, float step, float bc2_sqrt,
                             float grad_scale, uint32_t seed) {
    const float one_m_b1 = __fsub_rn(1.0f, beta1), one_m_b2 = __fsub_rn(1.0f, beta2);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = __fmul_rn(to_float(grads[i]), grad_scale);
        float p = __fmul_rn(master ? master[i] : to_float(params[i]), decay);
        const float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(one_m_b1, g));
        const float vi = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(one_m_b2, g), g));
        m[i] = mi;
        v[i] = vi;
        p = __fsub_rn(p, __fdiv_rn(__fmul_rn(step, mi), __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps)));
        if (master) master[i] = p;
        stochastic_round(p, params + i, (uint32_t)i, seed);  // identity when floatX is float
    }
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Block b sums squares of the VEC-chunks b*blockDim + tid + k*gridDim*blockDim;
// block 0 also takes the n % VEC tail. partials[b] = the block's sum.
template <int VEC>
__global__ void __launch_bounds__(NS_THREADS) sumsq_partial_kernel(double* partials, const floatX* x, size_t n) {
    __shared__ double shared[32];
    const size_t chunks = n / VEC;
    double acc = 0.0;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < chunks; j += (size_t)gridDim.x * blockDim.x) {
        float f[VEC];
        if constexpr (VEC == x128::size) {
            const x128 t = load128cs(x + j * VEC);
#pragma unroll
            for (int k = 0; k < VEC; k++) f[k] = to_float(t[k]);
        } else {
#pragma unroll
            for (int k = 0; k < VEC; k++) f[k] = to_float(x[j * VEC + k]);
        }
#pragma unroll
        for (int k = 0; k < VEC; k++) acc = fma((double)f[k], (double)f[k], acc);
    }
    if (blockIdx.x == 0)
        for (size_t i = chunks * VEC + threadIdx.x; i < n; i += blockDim.x) {
            const double f = to_float(x[i]);
            acc = fma(f, f, acc);
        }
    // fixed tree: warps, then the warps' sums
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    acc = warp_sum_d(acc);
    if (lane == 0) shared[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = warp_sum_d(lane < nwarps ? shared[lane] : 0.0);
        if (lane == 0) partials[blockIdx.x] = acc;
    }
}

// One warp: lane k adds partials k, k+32, ... in order, then a fixed tree; the
// total goes to partials[G].
__global__ void sumsq_final_kernel(double* partials, int G) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < G; i += 32) acc += partials[i];
    acc = warp_sum_d(acc);
    if (threadIdx.x == 0) partials[G] = acc;
}

// The launches, used by adamw.cu.
void adamw(floatX* params, float* master, const floatX* grads, float* m, float* v, size_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, int t, float grad_scale, uint32_t seed) {
    if (n == 0) return;
    // the CPU twin's constants, computed the same way on the host
    const float bc1 = 1.0f - std::pow(beta1, (float)t);
    const float bc2_sqrt = std::sqrt(1.0f - std::pow(beta2, (float)t));
    const float step = lr / bc1;
    const float decay = 1.0f - lr * weight_decay;
    const int blocks = (int)std::min<size_t>((n + ADAMW_THREADS - 1) / ADAMW_THREADS, ADAMW_MAX_BLOCKS);
    auto* kernel = adamw_kernel;
    LNS_LAUNCH(kernel, blocks, ADAMW_THREADS, 0, params, master, grads, m, v, n, beta1, beta2, eps, decay, step,
               bc2_sqrt, grad_scale, seed);
    cudaCheckLaunch();
}

// sum of x^2 in double, left in device memory; the returned pointer holds it once the
// stream reaches it
const double* sumsq(const floatX* x, size_t n) {
    constexpr int V8 = x128::size;
    const bool vec = aligned16(x);
    const size_t chunks = vec ? n / V8 : n;
    const int G = (int)std::max<size_t>(1, std::min<size_t>((chunks + NS_THREADS - 1) / NS_THREADS, NS_MAX_BLOCKS));
    double* partials = (double*)cuda_scratch(SCRATCH_REDUCE, (size_t)(G + 1) * sizeof(double));
    auto* partial = vec ? sumsq_partial_kernel<V8> : sumsq_partial_kernel<1>;
    LNS_LAUNCH(partial, G, NS_THREADS, 0, partials, x, n);
    cudaCheckLaunch();
    auto* final_sum = sumsq_final_kernel;
    LNS_LAUNCH(final_sum, 1, 32, 0, partials, G);
    cudaCheckLaunch();
    return partials + G;
}
}  // namespace
