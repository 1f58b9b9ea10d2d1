// Token (and learned position) embeddings.
#include "cpu/cpu_backend.h"

void cpu_backend::encoder_forward(float* out, const int* inp, const float* wte, const float* wpe,
                                  int B, int T, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float* o = out + ((size_t)b * T + t) * C;
            const float* e = wte + (size_t)inp[b * T + t] * C;
            const float* p = wpe ? wpe + (size_t)t * C : nullptr;
            for (int c = 0; c < C; c++) o[c] = e[c] + (p ? p[c] : 0.0f);
        }
}

// Threads own disjoint channel ranges and walk the tokens in order, so repeated
// tokens accumulate in the same order whatever the thread count.
void cpu_backend::encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp,
                                   int B, int T, int C) {
    const int CH = 16;
#pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += CH) {
        int c1 = c0 + CH < C ? c0 + CH : C;
        for (int bt = 0; bt < B * T; bt++) {
            const float* d = dout + (size_t)bt * C;
            float* e = dwte + (size_t)inp[bt] * C;
            for (int c = c0; c < c1; c++) e[c] += d[c];
            if (dwpe) {
                float* p = dwpe + (size_t)(bt % T) * C;
                for (int c = c0; c < c1; c++) p[c] += d[c];
            }
        }
    }
}
