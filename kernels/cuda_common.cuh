// Shared by the CUDA kernels: error checks, the stream and library handles, grow-
// only scratch buffers, bf16 helpers, 128-bit packed loads and block reductions.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda_backend.h"

using floatX = cuda_backend::floatX;

// ---- error checks: file:line, what failed, a hint
inline void cuda_check(cudaError_t e, const char* file, int line) {
    if (e != cudaSuccess) {
        fprintf(stderr, "%s:%d: CUDA error: %s (%s)\n  hint: run under compute-sanitizer; "
                "CUDA_LAUNCH_BLOCKING=1 pins the failing launch\n", file, line, cudaGetErrorString(e),
                cudaGetErrorName(e));
        std::exit(EXIT_FAILURE);
    }
}
#define cudaCheck(err) cuda_check((err), __FILE__, __LINE__)
// after every launch: launch-configuration errors surface here, not later
#define cudaCheckLaunch() cuda_check(cudaGetLastError(), __FILE__, __LINE__)

inline void cublas_check(cublasStatus_t s, const char* file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "%s:%d: cuBLAS error %d (%s)\n  hint: check shapes, leading dimensions and "
                "alignment (16 bytes) of the operands\n", file, line, (int)s, cublasGetStatusString(s));
        std::exit(EXIT_FAILURE);
    }
}
#define cublasCheck(status) cublas_check((status), __FILE__, __LINE__)

// ---- process-wide state, set up by cuda_backend::init
extern cudaStream_t g_stream;        // every op runs on this stream, in order
extern cublasLtHandle_t g_cublaslt;  // matmuls
extern cublasHandle_t g_cublas;      // batched GEMMs in attention (set to g_stream)
extern cudaDeviceProp g_props;

// Device scratch that only grows; one buffer per slot, contents not kept between
// ops. Slots keep users from sharing a buffer by accident.
enum ScratchSlot {
    SCRATCH_NORM_PARTIALS,  // residual_norm_backward: per-block dw/db partial sums
    SCRATCH_REDUCE,         // norm_squared and other fixed-order reductions
    SCRATCH_CONVERT,        // upload_f32 / download_f32 staging
    SCRATCH_ENCODER,        // encoder_backward's bucket tables
    SCRATCH_ATTN_A,         // attention: permuted / unpermuted temporaries
    SCRATCH_ATTN_B,
    SCRATCH_ATTN_C,         // flash attention: q, k rotated before the kernels
    SCRATCH_ATTN_DQ,        // flash attention (TMA): dq in fp32 and the counters that order its sums
    SCRATCH_ROPE,           // attention: the (T, hs/2) RoPE cos/sin table
    SCRATCH_MATMUL_WORKSPACE,  // cuBLASLt workspace
    SCRATCH_MATMUL_DBIAS,   // per-block dbias partials
    NUM_SCRATCH
};
void* cuda_scratch(ScratchSlot slot, size_t bytes);

// ---- numerics
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// Sum over the block; every thread gets the result. Fixed order: deterministic.
// `shared` holds at least 32 floats; blockDim.x a multiple of 32.
__device__ __forceinline__ float block_sum(float v, float* shared) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nwarps ? shared[lane] : 0.0f;
    return warp_sum(v);
}

// 16 bytes of T, for 128-bit loads and stores (8 bf16 or 4 floats).
template <class T>
struct alignas(16) Packed128 {
    static constexpr int size = 16 / sizeof(T);
    T v[size];
    __device__ __forceinline__ T& operator[](int i) { return v[i]; }
    __device__ __forceinline__ const T& operator[](int i) const { return v[i]; }
};
template <class T>
__device__ __forceinline__ Packed128<T> load128(const T* p) { return *reinterpret_cast<const Packed128<T>*>(p); }
template <class T>
__device__ __forceinline__ Packed128<T> load128cs(const T* p) {  // streaming: read once
    Packed128<T> r;
    *reinterpret_cast<int4*>(&r) = __ldcs(reinterpret_cast<const int4*>(p));
    return r;
}
template <class T>
__device__ __forceinline__ void store128(T* p, const Packed128<T>& v) { *reinterpret_cast<Packed128<T>*>(p) = v; }
using x128 = Packed128<floatX>;
using f128 = Packed128<float>;

inline bool aligned16(const void* p) { return ((uintptr_t)p & 15u) == 0; }

// VEC consecutive elements to/from fp32: one 128-bit access when VEC is the packed
// width (the caller checks alignment), element by element otherwise.
template <int VEC>
__device__ __forceinline__ void load_f(float (&f)[VEC], const floatX* p) {
    if constexpr (VEC == x128::size) {
        const x128 t = load128(p);
#pragma unroll
        for (int k = 0; k < VEC; k++) f[k] = to_float(t[k]);
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) f[k] = to_float(p[k]);
    }
}
template <int VEC>
__device__ __forceinline__ void store_f(floatX* p, const float (&f)[VEC]) {
    if constexpr (VEC == x128::size) {
        x128 t;
#pragma unroll
        for (int k = 0; k < VEC; k++) t[k] = from_float<floatX>(f[k]);
        store128(p, t);
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) p[k] = from_float<floatX>(f[k]);
    }
}

// Stochastic rounding of fp32 to bf16 from a hash of (index, seed): unbiased, and
// the same bits for the same seed.
__device__ __forceinline__ uint32_t hash_u32(uint32_t x) {
    x ^= x >> 16, x *= 0x7feb352dU, x ^= x >> 15, x *= 0x846ca68bU, x ^= x >> 16;
    return x;
}
__device__ __forceinline__ void stochastic_round(float in, __nv_bfloat16* out, uint32_t idx, uint32_t seed) {
    const uint32_t r = hash_u32(idx * 0x9E3779B9U ^ seed) & 0xFFFFu;
    const uint32_t bits = __float_as_uint(in);
    *out = __ushort_as_bfloat16((unsigned short)((bits + r) >> 16));
}
__device__ __forceinline__ void stochastic_round(float in, float* out, uint32_t, uint32_t) { *out = in; }

inline int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

// The block's dynamic shared memory (a launch's third parameter), 16-byte aligned.
// test/emu/cuda_emu.h defines it first for the CPU emulator.
#ifndef LNS_CUDA_EMU
__device__ __forceinline__ unsigned char* dynamic_smem() {
    extern __shared__ __align__(16) unsigned char lns_dynamic_smem[];
    return lns_dynamic_smem;
}
#endif

// kernel<<<grid, block, smem, g_stream>>>(args...); kernel is a name or a pointer.
// test/emu/cuda_emu.h defines it first to run kernels on the CPU emulator.
#ifndef LNS_LAUNCH
#define LNS_LAUNCH(kernel, grid, block, smem_bytes, ...) kernel<<<(grid), (block), (smem_bytes), g_stream>>>(__VA_ARGS__)
#endif
