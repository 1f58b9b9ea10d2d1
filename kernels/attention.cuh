// Causal multi-head attention, the materialising version: the (T,T) scores and
// probabilities of every head live in `att`, and the products are cuBLAS strided
// batched GEMMs over the B*NH heads. The same functions as cpu/attention.cpp,
// including RoPE in Hugging Face's rotate_half layout (channel i of a head pairs
// with channel i + hs/2).
//
// Layouts (row-major):
//   qkv, dqkv (B,T,3C): per token [q | k | v], heads of hs = C/NH channels.
//   qkvr, dqkvr: this backend's own layout, read only by attention_backward:
//     three (B,NH,T,hs) tensors one after the other, q and k after RoPE, v copied:
//       q = qkvr, k = qkvr + B*T*C, v = qkvr + 2*B*T*C
//     so that every head's (T,hs) block is contiguous, one batch of a strided GEMM.
//   att, datt (B,NH,T,T): row t holds the probabilities (scores' gradients) of
//     query t over keys 0..t; entries above the diagonal are 0, as on the CPU.
//   out, dout (B,T,C).
// Scratch: SCRATCH_ATTN_A holds y (B,NH,T,hs) before it is unpermuted into out, and
// in backward the permuted dout.
//
// Precision: GEMMs take floatX operands, accumulate in fp32 (CUBLAS_COMPUTE_32F)
// and round once on output. The softmax and its backward read floatX and do all
// arithmetic in fp32. RoPE angles: inv_freq is computed on the host exactly as
// cpu/attention.cpp does (std::pow in fp32), the angle t * inv_freq is the same fp32
// product, and sincosf (2 ulp) differs from the CPU's cosf/sinf by a few ulp. The
// rotations are written with explicit roundings (__fmul_rn, __fadd_rn) so the products
// are not contracted into FMAs and match the CPU's arithmetic.
//
// Determinism: no atomics; reductions run in a fixed order within one warp; cuBLAS
// GEMMs are deterministic for fixed shapes on one device and stream.
// The kernels and the launch sequences, used by attention.cu.
#pragma once
#include <cmath>

#include "common/check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/qkv_permute.cuh"
#include "kernels/rope.cuh"

namespace {

#ifdef ENABLE_FP32
constexpr cudaDataType_t DATA_TYPE = CUDA_R_32F;
#else
constexpr cudaDataType_t DATA_TYPE = CUDA_R_16BF;
#endif

// dqkvr (dq, dk, dv each (B,NH,T,hs)) -> dqkv (B,T,3C), rotating dq and dk by -angle
// (the transpose of the forward rotation), cos and sin from rope_table. One block per token.
template <bool ROPE>
__global__ void __launch_bounds__(PERMUTE_THREADS)
    qkv_unpermute_kernel(floatX* __restrict__ dqkv, const floatX* __restrict__ dqkvr, const float2* __restrict__ rope,
                         int T, int NH, int hs, size_t BTC) {
    const int bt = blockIdx.x, t = bt % T, C = NH * hs, h2 = hs / 2;
    const size_t b = bt / T;
    floatX* dst = dqkv + (size_t)bt * 3 * C;
    for (int j = threadIdx.x; j < 3 * C; j += PERMUTE_THREADS) {
        const int part = j / C, h = (j % C) / hs, d = j % hs;
        const floatX* src = dqkvr + part * BTC + ((b * NH + h) * T + t) * hs;  // this head's row
        float x = to_float(src[d]);
        if (ROPE && part < 2) {
            const bool first = d < h2;  // x: a pair's first channel (a), else its second (b)
            const float y = to_float(src[first ? d + h2 : d - h2]);
            const float2 cs = rope[(size_t)t * h2 + (first ? d : d - h2)];
            const float2 r = first ? rope_rotate(x, y, cs.x, -cs.y) : rope_rotate(y, x, cs.x, -cs.y);
            x = first ? r.x : r.y;
        }
        dst[j] = from_float<floatX>(x);
    }
}

// (B,NH,T,hs) -> (B,T,C) (TO_ROWS) or back; one block per token.
template <bool TO_ROWS>
__global__ void __launch_bounds__(PERMUTE_THREADS)
    head_permute_kernel(floatX* __restrict__ dst, const floatX* __restrict__ src, int T, int NH, int hs) {
    const int bt = blockIdx.x, t = bt % T, C = NH * hs;
    const size_t b = bt / T;
    for (int j = threadIdx.x; j < C; j += PERMUTE_THREADS) {
        const int h = j / hs, d = j % hs;
        const size_t rows = (size_t)bt * C + j, heads = ((b * NH + h) * T + t) * hs + d;
        if (TO_ROWS)
            dst[rows] = src[heads];
        else
            dst[heads] = src[rows];
    }
}

// Causal softmax in place over rows of att (B*NH*T rows of T): row (bh, t) keeps
// p[j] = exp(s[j] - max) / sum for j <= t and 0 above the diagonal. One warp per
// row; an online max/sum per lane, then a fixed butterfly across lanes.
constexpr int SOFTMAX_THREADS = 256;
__global__ void __launch_bounds__(SOFTMAX_THREADS) causal_softmax_kernel(floatX* att, int rows, int T) {
    const int row = blockIdx.x * (SOFTMAX_THREADS / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;  // the whole warp
    const int t = row % T;
    floatX* x = att + (size_t)row * T;
    float m = -INFINITY, s = 0.0f;
    for (int j = lane; j <= t; j += 32) {
        const float v = to_float(x[j]);
        if (v > m) {
            s *= expf(m - v);  // 0 * 0 on the first element
            m = v;
        }
        s += expf(v - m);
    }
    const float mx = warp_max(m);                  // finite: lane 0 holds element 0
    s = m == -INFINITY ? 0.0f : s * expf(m - mx);  // lanes with no element add 0
    const float inv = 1.0f / warp_sum(s);
    for (int j = lane; j < T; j += 32) x[j] = from_float<floatX>(j <= t ? expf(to_float(x[j]) - mx) * inv : 0.0f);
}

// Softmax backward in place over rows of datt: dpre[j] = p[j] (dp[j] - sum_k p[k] dp[k])
// * scale for j <= t, 0 above the diagonal.
__global__ void __launch_bounds__(SOFTMAX_THREADS)
    causal_softmax_backward_kernel(floatX* datt, const floatX* __restrict__ att, int rows, int T, float scale) {
    const int row = blockIdx.x * (SOFTMAX_THREADS / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const int t = row % T;
    const floatX* p = att + (size_t)row * T;
    floatX* dp = datt + (size_t)row * T;
    float acc = 0.0f;
    for (int j = lane; j <= t; j += 32) acc += to_float(p[j]) * to_float(dp[j]);
    const float pd = warp_sum(acc);
    for (int j = lane; j < T; j += 32)  // each lane rewrites only the elements it read
        dp[j] = from_float<floatX>(j <= t ? to_float(p[j]) * (to_float(dp[j]) - pd) * scale : 0.0f);
}

// Strided batched GEMM over the B*NH heads, column-major as cuBLAS sees it:
// D (m,n) = alpha op(A) op(B), each operand one contiguous block per head.
void batched_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const floatX* A, int lda, long long strideA,
                  const floatX* B, int ldb, long long strideB, floatX* D, int ldd, long long strideD, int batch) {
    const float beta = 0.0f;
    cublasCheck(cublasGemmStridedBatchedEx(g_cublas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m,
                                           n, k, &alpha, A, DATA_TYPE, lda, strideA, B, DATA_TYPE, ldb, strideB, &beta,
                                           D, DATA_TYPE, ldd, strideD, batch, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT));
}

int check_attention(const char* op, int B, int T, int C, int NH, float rope_theta) {
    LNS_CHECK(B >= 1 && T >= 1 && NH >= 1 && C >= NH && C % NH == 0, "%s: bad shape B=%d T=%d C=%d NH=%d", op, B, T, C,
              NH);
    const int hs = C / NH;
    LNS_CHECK(!(rope_theta > 0) || (hs % 2 == 0 && hs / 2 <= MAX_ROPE_PAIRS),
              "%s: RoPE needs an even head dimension <= %d, got %d", op, 2 * MAX_ROPE_PAIRS, hs);
    LNS_CHECK((size_t)B * NH * T <= (size_t)INT32_MAX && (size_t)3 * C <= (size_t)INT32_MAX,
              "%s: B*NH*T = %zu rows exceed the kernels' int range", op, (size_t)B * NH * T);
    return hs;
}


void naive_attention_forward(floatX* out, floatX* qkvr, floatX* att, const floatX* qkv, int B, int T, int C, int NH,
                             float rope_theta) {
    const int hs = check_attention("attention_forward", B, T, C, NH, rope_theta);
    const size_t BTC = (size_t)B * T * C;
    const int heads = B * NH, rows = B * NH * T;
    const long long tT = (long long)T * T, tH = (long long)T * hs;
    const float scale = 1.0f / std::sqrt((float)hs);
    floatX *q = qkvr, *k = qkvr + BTC, *v = qkvr + 2 * BTC;

    const int BT = B * T;
    qkv_permute(qkvr, qkv, B, T, C, NH, rope_table(T, hs, rope_theta), 3);

    // Per head, column-major as cuBLAS sees it: a row-major (T,hs) block is a (hs,T)
    // matrix with ld hs, and row-major att (T,T) is att^T with ld T.
    // att[t][t2] = scale * q[t] . k[t2]: att^T (T,T) = scale * k (T,hs) . q^T (hs,T)
    batched_gemm(true, false, T, T, hs, scale, k, hs, tH, q, hs, tH, att, T, tT, heads);
    auto* softmax = causal_softmax_kernel;
    LNS_LAUNCH(softmax, ceil_div(rows, SOFTMAX_THREADS / 32), SOFTMAX_THREADS, 0, att, rows, T);
    cudaCheckLaunch();

    // y[t] = sum_t2 att[t][t2] v[t2]: y^T (hs,T) = v^T (hs,T) . att^T (T,T)
    floatX* y = (floatX*)cuda_scratch(SCRATCH_ATTN_A, BTC * sizeof(floatX));
    batched_gemm(false, false, hs, T, T, 1.0f, v, hs, tH, att, T, tT, y, hs, tH, heads);
    auto* to_rows = head_permute_kernel<true>;
    LNS_LAUNCH(to_rows, BT, PERMUTE_THREADS, 0, out, y, T, NH, hs);
    cudaCheckLaunch();
}

void naive_attention_backward(floatX* dqkv, floatX* dqkvr, floatX* datt, const floatX* dout, const floatX* qkvr,
                              const floatX* att, int B, int T, int C, int NH, float rope_theta) {
    const int hs = check_attention("attention_backward", B, T, C, NH, rope_theta);
    const size_t BTC = (size_t)B * T * C;
    const int heads = B * NH, rows = B * NH * T;
    const long long tT = (long long)T * T, tH = (long long)T * hs;
    const float scale = 1.0f / std::sqrt((float)hs);
    const floatX *q = qkvr, *k = qkvr + BTC, *v = qkvr + 2 * BTC;
    floatX *dq = dqkvr, *dk = dqkvr + BTC, *dv = dqkvr + 2 * BTC;

    const int BT = B * T;
    floatX* dy = (floatX*)cuda_scratch(SCRATCH_ATTN_A, BTC * sizeof(floatX));  // dout as (B,NH,T,hs)
    auto* to_heads = head_permute_kernel<false>;
    LNS_LAUNCH(to_heads, BT, PERMUTE_THREADS, 0, dy, dout, T, NH, hs);
    cudaCheckLaunch();

    // Per head, column-major as in forward (row-major (T,hs) = (hs,T) with ld hs).
    // datt[t][t2] = dy[t] . v[t2]: datt^T (T,T) = v (T,hs) . dy^T (hs,T)
    batched_gemm(true, false, T, T, hs, 1.0f, v, hs, tH, dy, hs, tH, datt, T, tT, heads);
    // dv[t2] = sum_t att[t][t2] dy[t]: dv^T (hs,T) = dy^T (hs,T) . att (T,T), att = (att^T)^T
    batched_gemm(false, true, hs, T, T, 1.0f, dy, hs, tH, att, T, tT, dv, hs, tH, heads);
    auto* softmax_bwd = causal_softmax_backward_kernel;
    LNS_LAUNCH(softmax_bwd, ceil_div(rows, SOFTMAX_THREADS / 32), SOFTMAX_THREADS, 0, datt, att, rows, T, scale);
    cudaCheckLaunch();
    // dq[t] = sum_t2 dpre[t][t2] k[t2]: dq^T (hs,T) = k^T (hs,T) . dpre^T (T,T)
    batched_gemm(false, false, hs, T, T, 1.0f, k, hs, tH, datt, T, tT, dq, hs, tH, heads);
    // dk[t2] = sum_t dpre[t][t2] q[t]: dk^T (hs,T) = q^T (hs,T) . dpre (T,T)
    batched_gemm(false, true, hs, T, T, 1.0f, q, hs, tH, datt, T, tT, dk, hs, tH, heads);

    const float2* rope = rope_table(T, hs, rope_theta);  // nullptr without RoPE
    auto* unpermute = rope ? qkv_unpermute_kernel<true> : qkv_unpermute_kernel<false>;
    LNS_LAUNCH(unpermute, BT, PERMUTE_THREADS, 0, dqkv, dqkvr, rope, T, NH, hs, BTC);
    cudaCheckLaunch();
}

}  // namespace
