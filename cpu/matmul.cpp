// Linear layers, all three products through one row-major kernel
// out (M,N) (+)= A (M,K) @ B (K,N): rows of B are contiguous, so the inner loop
// vectorises across N while every output element still sums over k in order.
// Results therefore do not depend on the thread count or the vector width.
#include <vector>

#include "cpu/cpu_backend.h"

// Hot loops are compiled for AVX2 and for baseline x86-64; the CPU picks one at
// load time (the same one every run on a given machine).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MULTIVERSION
#endif

namespace {

MULTIVERSION
void gemm_rows(float* out, const float* A, const float* B, const float* bias, bool accumulate, int m0, int m1, int K,
               int N) {
    const int NB = 64;  // 4 rows x 64 columns of accumulators
    for (int j0 = 0; j0 < N; j0 += NB) {
        const int nb = N - j0 < NB ? N - j0 : NB;
        for (int m = m0; m < m1; m += 4) {
            const int rows = m1 - m < 4 ? m1 - m : 4;
            float acc[4][NB];
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < nb; j++)
                    acc[i][j] = (accumulate ? out[(size_t)(m + i) * N + j0 + j] : 0.0f) + (bias ? bias[j0 + j] : 0.0f);
            for (int k = 0; k < K; k++) {
                const float* br = B + (size_t)k * N + j0;
                for (int i = 0; i < rows; i++) {
                    const float a = A[(size_t)(m + i) * K + k];
                    for (int j = 0; j < nb; j++) acc[i][j] += a * br[j];
                }
            }
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < nb; j++) out[(size_t)(m + i) * N + j0 + j] = acc[i][j];
        }
    }
}

void gemm(float* out, const float* A, const float* B, const float* bias, bool accumulate, int M, int K, int N) {
    const int MB = 16;  // rows per task
#pragma omp parallel for schedule(static)
    for (int m0 = 0; m0 < M; m0 += MB) gemm_rows(out, A, B, bias, accumulate, m0, m0 + MB < M ? m0 + MB : M, K, N);
}

std::vector<float> transpose(const float* x, int rows, int cols) {  // (rows, cols) -> (cols, rows)
    std::vector<float> t((size_t)rows * cols);
#pragma omp parallel for
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) t[(size_t)c * rows + r] = x[(size_t)r * cols + c];
    return t;
}

}  // namespace

void cpu_backend::matmul_forward(float* out, const float* inp, const float* w, const float* bias,
                                 int N, int C, int OC, float* pre_gelu) {
    const std::vector<float> wT = transpose(w, OC, C);  // (C, OC)
    gemm(pre_gelu ? pre_gelu : out, inp, wT.data(), bias, false, N, C, OC);
    if (pre_gelu) gelu_forward(out, pre_gelu, (size_t)N * OC);
}

void cpu_backend::matmul_backward(float* dinp, float* dw, float* dbias, const float* dout,
                                  const float* inp, const float* w, int N, int C, int OC,
                                  bool accumulate, const float* pre_gelu) {
    LNS_CHECK(!(pre_gelu && accumulate), "the GELU backward epilogue writes dinp");
    if (dinp) gemm(dinp, dout, w, nullptr, accumulate, N, OC, C);  // (N,OC) @ (OC,C)
    if (dinp && pre_gelu) gelu_backward(dinp, pre_gelu, dinp, (size_t)N * C);
    const std::vector<float> doutT = transpose(dout, N, OC);        // (OC, N)
    gemm(dw, doutT.data(), inp, nullptr, true, OC, N, C);           // (OC,N) @ (N,C)
    if (dbias) {
#pragma omp parallel for
        for (int o = 0; o < OC; o++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++) s += doutT[(size_t)o * N + n];
            dbias[o] += s;
        }
    }
}
