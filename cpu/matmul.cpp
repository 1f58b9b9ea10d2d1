// Linear layers. Each output element is one thread's sequential sum, so results
// are independent of the thread count.
#include "cpu/cpu_backend.h"

void cpu_backend::matmul_forward(float* out, const float* inp, const float* w, const float* bias,
                                 int N, int C, int OC) {
    const int RB = 8;  // rows per tile: each weight element loaded once per 8 rows
#pragma omp parallel for collapse(2)
    for (int n0 = 0; n0 < N; n0 += RB)
        for (int o = 0; o < OC; o++) {
            const int rows = N - n0 < RB ? N - n0 : RB;
            float acc[RB];
            for (int i = 0; i < RB; i++) acc[i] = bias ? bias[o] : 0.0f;
            const float* wr = w + (size_t)o * C;
            for (int c = 0; c < C; c++) {
                float wc = wr[c];
                for (int i = 0; i < rows; i++) acc[i] += inp[(size_t)(n0 + i) * C + c] * wc;
            }
            for (int i = 0; i < rows; i++) out[(size_t)(n0 + i) * OC + o] = acc[i];
        }
}

void cpu_backend::matmul_backward(float* dinp, float* dw, float* dbias, const float* dout,
                                  const float* inp, const float* w, int N, int C, int OC,
                                  bool accumulate) {
    if (dinp) {
#pragma omp parallel for
        for (int n = 0; n < N; n++) {
            float* di = dinp + (size_t)n * C;
            if (!accumulate)
                for (int c = 0; c < C; c++) di[c] = 0.0f;
            const float* d = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++) {
                const float g = d[o];
                const float* wr = w + (size_t)o * C;
                for (int c = 0; c < C; c++) di[c] += g * wr[c];
            }
        }
    }
#pragma omp parallel for
    for (int o = 0; o < OC; o++) {
        float* dwr = dw + (size_t)o * C;
        float db = 0.0f;
        for (int n = 0; n < N; n++) {
            const float g = dout[(size_t)n * OC + o];
            const float* in = inp + (size_t)n * C;
            for (int c = 0; c < C; c++) dwr[c] += g * in[c];
            db += g;
        }
        if (dbias) dbias[o] += db;
    }
}
