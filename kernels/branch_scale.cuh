// Branch scaling on the GPU (see cpu/cpu_backend.h): out = inp * g * factor.
//
// Backward, deterministic without atomics: block b owns rows [b*R, (b+1)*R) (R depends
// on N only); each thread owns channels, walks the block's rows in order, writes dinp
// and keeps sum(dout * inp) in a register, written as one fp32 partial row per block
// to SCRATCH_REDUCE. Then branch_scale_param_grad_kernel sums each channel's partials
// in block order; a scalar g adds those channel sums through the fixed-order
// block_sum. Every order depends only on (N, C).
// The kernels and their launches, used by branch_scale.cu.
#pragma once
#include <algorithm>

#include "common/check.h"
#include "kernels/cuda_common.cuh"

namespace {
constexpr int BS_THREADS = 256;
constexpr int BS_MIN_ROWS = 32;
constexpr int BS_TARGET_BLOCKS = 1024;

__global__ void branch_scale_kernel(floatX* out, const floatX* inp, const floatX* g, float factor, size_t n, int C,
                                    int gstride) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float gv = g ? to_float(g[(int)(i % C) * gstride]) : 1.0f;
        out[i] = from_float<floatX>(to_float(inp[i]) * gv * factor);
    }
}

// Phase 1. Each element is read, then written, by one thread: dinp may alias dout.
__global__ void __launch_bounds__(BS_THREADS)
    branch_scale_backward_kernel(floatX* dinp, float* partials, const floatX* dout, const floatX* inp,
                                 const floatX* g, float factor, int N, int C, int gstride, int rows_per_block) {
    const int row0 = blockIdx.x * rows_per_block;
    const int row1 = min(N, row0 + rows_per_block);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float gv = to_float(g[c * gstride]);
        float acc = 0.0f;
        for (int n = row0; n < row1; n++) {
            const size_t i = (size_t)n * C + c;
            const float d = to_float(dout[i]);
            acc += d * to_float(inp[i]);
            dinp[i] = from_float<floatX>(d * gv * factor);
        }
        partials[(size_t)blockIdx.x * C + c] = acc;
    }
}

// Phase 2: per channel, the G partials in block order; channels == 1 runs as a
// single block and adds the channel sums through block_sum.
__global__ void branch_scale_param_grad_kernel(floatX* dg, const float* partials, int G, int C, int channels,
                                               float factor) {
    __shared__ float shared[32];
    float acc = 0.0f;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
        float col = 0.0f;
        for (int b = 0; b < G; b++) col += partials[(size_t)b * C + c];
        if (channels == 1) acc += col;
        else dg[c] = from_float<floatX>(to_float(dg[c]) + factor * col);
    }
    if (channels == 1) {  // grid of one block: every thread reaches the barrier
        const float total = block_sum(acc, shared);
        if (threadIdx.x == 0) dg[0] = from_float<floatX>(to_float(dg[0]) + factor * total);
    }
}

// The launches, used by branch_scale.cu.
void bscale_forward(floatX* out, const floatX* inp, const floatX* g, float factor, int N, int C, int channels) {
    LNS_CHECK(g == nullptr || channels == 1 || channels == C, "branch scale: channels must be 1 or C");
    const size_t n = (size_t)N * C;
    if (n == 0) return;
    const int blocks = (int)std::min<size_t>((n + BS_THREADS - 1) / BS_THREADS, 65536);
    auto* kernel = branch_scale_kernel;
    LNS_LAUNCH(kernel, blocks, BS_THREADS, 0, out, inp, g, factor, n, C, channels == 1 ? 0 : 1);
    cudaCheckLaunch();
}

void bscale_backward(floatX* dinp, floatX* dg, const floatX* dout, const floatX* inp, const floatX* g, float factor,
                     int N, int C, int channels) {
    LNS_CHECK(g == nullptr || channels == 1 || channels == C, "branch scale: channels must be 1 or C");
    if (N <= 0 || C <= 0) return;
    const int gstride = channels == 1 ? 0 : 1;
    if (!g || !dg) {  // the constant factor alone: no parameter gradient
        const size_t n = (size_t)N * C;
        const int blocks = (int)std::min<size_t>((n + BS_THREADS - 1) / BS_THREADS, 65536);
        auto* kernel = branch_scale_kernel;
        LNS_LAUNCH(kernel, blocks, BS_THREADS, 0, dinp, dout, g, factor, n, C, gstride);
        cudaCheckLaunch();
        return;
    }
    const int rows = std::max(BS_MIN_ROWS, ceil_div(N, BS_TARGET_BLOCKS));
    const int G = ceil_div(N, rows);
    float* partials = (float*)cuda_scratch(SCRATCH_REDUCE, (size_t)G * C * sizeof(float));
    auto* rows_kernel = branch_scale_backward_kernel;
    LNS_LAUNCH(rows_kernel, G, BS_THREADS, 0, dinp, partials, dout, inp, g, factor, N, C, gstride, rows);
    cudaCheckLaunch();
    auto* param_kernel = branch_scale_param_grad_kernel;
    LNS_LAUNCH(param_kernel, channels == 1 ? 1 : ceil_div(C, BS_THREADS), BS_THREADS, 0, dg, partials, G, C, channels,
               factor);
    cudaCheckLaunch();
}
}  // namespace
