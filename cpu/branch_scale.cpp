// Branch scaling: a residual branch's output times g (per channel or one scalar) and
// a constant factor.
#include <vector>

#include "common/check.h"
#include "cpu/cpu_backend.h"

void cpu_backend::branch_scale_forward(float* out, const float* inp, const float* g, float factor, int N, int C,
                                       int channels) {
    LNS_CHECK(g == nullptr || channels == 1 || channels == C, "branch scale: channels must be 1 or C");
    const int gstride = channels == 1 ? 0 : 1;
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const size_t i = (size_t)n * C + c;
            out[i] = inp[i] * (g ? g[c * gstride] : 1.0f) * factor;
        }
}

void cpu_backend::branch_scale_backward(float* dinp, float* dg, const float* dout, const float* inp, const float* g,
                                        float factor, int N, int C, int channels) {
    LNS_CHECK(g == nullptr || channels == 1 || channels == C, "branch scale: channels must be 1 or C");
    const int gstride = channels == 1 ? 0 : 1;
    // The parameter gradient first: dinp may alias dout. Threads own channels and
    // walk rows in order; a scalar g adds the channel sums in channel order.
    if (g && dg) {
        std::vector<double> col(C);
#pragma omp parallel for
        for (int c = 0; c < C; c++) {
            double s = 0.0;
            for (int n = 0; n < N; n++) s += dout[(size_t)n * C + c] * inp[(size_t)n * C + c];
            col[c] = s;
        }
        if (channels == 1) {
            double s = 0.0;
            for (int c = 0; c < C; c++) s += col[c];
            dg[0] += (float)(factor * s);
        } else {
            for (int c = 0; c < C; c++) dg[c] += (float)(factor * col[c]);
        }
    }
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const size_t i = (size_t)n * C + c;
            dinp[i] = dout[i] * (g ? g[c * gstride] : 1.0f) * factor;
        }
}
