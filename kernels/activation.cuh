// Pointwise MLP activations on the GPU: GELU (tanh approximation) and SwiGLU,
// fp32 math with the CPU twin's formulas. Each thread takes VEC consecutive
// elements: one 128-bit access when the pointers are 16-byte aligned (and, for
// SwiGLU, F is a multiple of the vector width), elementwise otherwise.
// The kernels and their launches, used by activation.cu.
#pragma once
#include <cstdint>

#include "kernels/cuda_common.cuh"

namespace {
constexpr int ACT_THREADS = 256;
constexpr float GELU_K = 0.7978845608028654f;  // sqrt(2/pi)


__device__ __forceinline__ float gelu(float x) {
    return 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float gelu_grad(float x) {
    const float th = tanhf(GELU_K * (x + 0.044715f * x * x * x));
    const float sech2 = 1.0f - th * th;
    return 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
}
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// n elements, VEC per thread; the last thread takes the tail one by one.
template <int VEC>
__global__ void gelu_forward_kernel(floatX* out, const floatX* inp, size_t n) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    if (i >= n) return;
    if (i + VEC <= n) {
        float v[VEC];
        load_f<VEC>(v, inp + i);
#pragma unroll
        for (int k = 0; k < VEC; k++) v[k] = gelu(v[k]);
        store_f<VEC>(out + i, v);
    } else {
        for (size_t k = i; k < n; k++) out[k] = from_float<floatX>(gelu(to_float(inp[k])));
    }
}

template <int VEC>
__global__ void gelu_backward_kernel(floatX* dinp, const floatX* inp, const floatX* dout, size_t n) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    if (i >= n) return;
    if (i + VEC <= n) {
        float x[VEC], d[VEC];
        load_f<VEC>(x, inp + i);
        load_f<VEC>(d, dout + i);
#pragma unroll
        for (int k = 0; k < VEC; k++) x[k] = gelu_grad(x[k]) * d[k];
        store_f<VEC>(dinp + i, x);
    } else {
        for (size_t k = i; k < n; k++)
            dinp[k] = from_float<floatX>(gelu_grad(to_float(inp[k])) * to_float(dout[k]));
    }
}

// One thread per VEC columns f of one row n; F % VEC == 0.
template <int VEC>
__global__ void swiglu_forward_kernel(floatX* out, const floatX* inp, int N, int F) {
    const int chunks = F / VEC;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * chunks) return;
    const size_t n = idx / chunks;
    const int f = (int)(idx % chunks) * VEC;
    const floatX* g = inp + n * 2 * F + f;
    float gv[VEC], uv[VEC], o[VEC];
    load_f<VEC>(gv, g);
    load_f<VEC>(uv, g + F);
#pragma unroll
    for (int k = 0; k < VEC; k++) o[k] = gv[k] * sigmoid(gv[k]) * uv[k];
    store_f<VEC>(out + n * F + f, o);
}

template <int VEC>
__global__ void swiglu_backward_kernel(floatX* dinp, const floatX* inp, const floatX* dout, int N, int F) {
    const int chunks = F / VEC;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * chunks) return;
    const size_t n = idx / chunks;
    const int f = (int)(idx % chunks) * VEC;
    const floatX* g = inp + n * 2 * F + f;
    float gv[VEC], uv[VEC], d[VEC], dg[VEC], du[VEC];
    load_f<VEC>(gv, g);
    load_f<VEC>(uv, g + F);
    load_f<VEC>(d, dout + n * F + f);
#pragma unroll
    for (int k = 0; k < VEC; k++) {
        const float sig = sigmoid(gv[k]);
        dg[k] = d[k] * uv[k] * sig * (1.0f + gv[k] * (1.0f - sig));
        du[k] = d[k] * (gv[k] * sig);
    }
    floatX* dgp = dinp + n * 2 * F + f;
    store_f<VEC>(dgp, dg);
    store_f<VEC>(dgp + F, du);
}

// The launches, used by activation.cu.
void gelu_fwd(floatX* out, const floatX* inp, size_t n) {
    if (n == 0) return;
    constexpr int V8 = x128::size;
    const bool vec = aligned16(out) && aligned16(inp);
    auto* kernel = vec ? gelu_forward_kernel<V8> : gelu_forward_kernel<1>;
    LNS_LAUNCH(kernel, ceil_div((long)(vec ? (n + V8 - 1) / V8 : n), ACT_THREADS), ACT_THREADS, 0, out, inp, n);
    cudaCheckLaunch();
}

void gelu_bwd(floatX* dinp, const floatX* inp, const floatX* dout, size_t n) {
    if (n == 0) return;
    constexpr int V8 = x128::size;
    const bool vec = aligned16(dinp) && aligned16(inp) && aligned16(dout);
    auto* kernel = vec ? gelu_backward_kernel<V8> : gelu_backward_kernel<1>;
    LNS_LAUNCH(kernel, ceil_div((long)(vec ? (n + V8 - 1) / V8 : n), ACT_THREADS), ACT_THREADS, 0, dinp, inp, dout, n);
    cudaCheckLaunch();
}

void swiglu_fwd(floatX* out, const floatX* inp, int N, int F) {
    if (N <= 0 || F <= 0) return;
    constexpr int V8 = x128::size;
    const bool vec = F % V8 == 0 && aligned16(out) && aligned16(inp);
    auto* kernel = vec ? swiglu_forward_kernel<V8> : swiglu_forward_kernel<1>;
    LNS_LAUNCH(kernel, ceil_div((long)N * (vec ? F / V8 : F), ACT_THREADS), ACT_THREADS, 0, out, inp, N, F);
    cudaCheckLaunch();
}

void swiglu_bwd(floatX* dinp, const floatX* inp, const floatX* dout, int N, int F) {
    if (N <= 0 || F <= 0) return;
    constexpr int V8 = x128::size;
    const bool vec = F % V8 == 0 && aligned16(dinp) && aligned16(inp) && aligned16(dout);
    auto* kernel = vec ? swiglu_backward_kernel<V8> : swiglu_backward_kernel<1>;
    LNS_LAUNCH(kernel, ceil_div((long)N * (vec ? F / V8 : F), ACT_THREADS), ACT_THREADS, 0, dinp, inp, dout, N, F);
    cudaCheckLaunch();
}
}  // namespace
