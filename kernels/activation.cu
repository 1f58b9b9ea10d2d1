// Pointwise MLP activations on the GPU: GELU (tanh approximation) and SwiGLU,
// fp32 math with the CPU twin's formulas. Each thread takes VEC consecutive
// elements: one 128-bit access when the pointers are 16-byte aligned (and, for
// SwiGLU, F is a multiple of the vector width), elementwise otherwise.
#include <cstdint>

#include "common/nvtx.h"
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
}  // namespace

void cuda_backend::gelu_forward(floatX* out, const floatX* inp, size_t n) {
    NVTX_RANGE("gelu_forward");
    if (n == 0) return;
    constexpr int V8 = x128::size;
    if (aligned16(out) && aligned16(inp))
        gelu_forward_kernel<V8><<<ceil_div((long)((n + V8 - 1) / V8), ACT_THREADS), ACT_THREADS, 0, g_stream>>>(out, inp, n);
    else
        gelu_forward_kernel<1><<<ceil_div((long)n, ACT_THREADS), ACT_THREADS, 0, g_stream>>>(out, inp, n);
    cudaCheckLaunch();
}

void cuda_backend::gelu_backward(floatX* dinp, const floatX* inp, const floatX* dout, size_t n) {
    NVTX_RANGE("gelu_backward");
    if (n == 0) return;
    constexpr int V8 = x128::size;
    if (aligned16(dinp) && aligned16(inp) && aligned16(dout))
        gelu_backward_kernel<V8><<<ceil_div((long)((n + V8 - 1) / V8), ACT_THREADS), ACT_THREADS, 0, g_stream>>>(
            dinp, inp, dout, n);
    else
        gelu_backward_kernel<1><<<ceil_div((long)n, ACT_THREADS), ACT_THREADS, 0, g_stream>>>(dinp, inp, dout, n);
    cudaCheckLaunch();
}

void cuda_backend::swiglu_forward(floatX* out, const floatX* inp, int N, int F) {
    NVTX_RANGE("swiglu_forward");
    if (N <= 0 || F <= 0) return;
    constexpr int V8 = x128::size;
    if (F % V8 == 0 && aligned16(out) && aligned16(inp))
        swiglu_forward_kernel<V8><<<ceil_div((long)N * (F / V8), ACT_THREADS), ACT_THREADS, 0, g_stream>>>(out, inp, N, F);
    else
        swiglu_forward_kernel<1><<<ceil_div((long)N * F, ACT_THREADS), ACT_THREADS, 0, g_stream>>>(out, inp, N, F);
    cudaCheckLaunch();
}

void cuda_backend::swiglu_backward(floatX* dinp, const floatX* inp, const floatX* dout, int N, int F) {
    NVTX_RANGE("swiglu_backward");
    if (N <= 0 || F <= 0) return;
    constexpr int V8 = x128::size;
    if (F % V8 == 0 && aligned16(dinp) && aligned16(inp) && aligned16(dout))
        swiglu_backward_kernel<V8><<<ceil_div((long)N * (F / V8), ACT_THREADS), ACT_THREADS, 0, g_stream>>>(
            dinp, inp, dout, N, F);
    else
        swiglu_backward_kernel<1><<<ceil_div((long)N * F, ACT_THREADS), ACT_THREADS, 0, g_stream>>>(dinp, inp,
                                                                                                   dout, N, F);
    cudaCheckLaunch();
}
