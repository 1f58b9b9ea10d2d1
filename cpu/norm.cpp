// Fused residual add + LayerNorm/RMSNorm + LayerNorm Scaling (depth scale).
#include <cmath>

#include "cpu/cpu_backend.h"

void cpu_backend::residual_norm_forward(float* res, float* out, float* mean, float* rstd,
                                        const float* x, const float* y, float alpha,
                                        const float* w, const float* b, int N, int C,
                                        NormKind kind, float eps, NormScheme scheme, int layer) {
    LNS_CHECK(res != nullptr || (y == nullptr && alpha == 1.0f), "res may be omitted only for a plain norm");
    const float s = depth_scale(scheme, layer);
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* xr = x + (size_t)n * C;
        const float* yr = y ? y + (size_t)n * C : nullptr;
        float* r = res ? res + (size_t)n * C : nullptr;
        const float* rr = xr;  // the row being normalised
        if (r) {
            for (int c = 0; c < C; c++) r[c] = alpha * xr[c] + (yr ? yr[c] : 0.0f);
            rr = r;
        }
        double m = 0.0;
        if (kind == NormKind::layernorm) {
            for (int c = 0; c < C; c++) m += rr[c];
            m /= C;
        }
        double v = 0.0;
        for (int c = 0; c < C; c++) v += (rr[c] - m) * (rr[c] - m);
        v /= C;
        float rs = (float)(1.0 / std::sqrt(v + eps));
        float* o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            float xhat = (float)(rr[c] - m) * rs;
            o[c] = (xhat * w[c] + (b ? b[c] : 0.0f)) * s;
        }
        if (mean) mean[n] = (float)m;
        rstd[n] = rs;
    }
}

void cpu_backend::residual_norm_backward(float* dx, float* dy, float* dw, float* db,
                                         const float* dout, const float* dres, const float* res,
                                         const float* w, const float* mean, const float* rstd,
                                         float alpha, int N, int C, NormKind kind,
                                         NormScheme scheme, int layer) {
    const float s = depth_scale(scheme, layer);
    const bool ln = kind == NormKind::layernorm;
    // Parameter gradients first: dx may alias dout. Threads own channels and walk
    // rows in order (deterministic).
#pragma omp parallel for
    for (int c = 0; c < C; c++) {
        double gw = 0.0, gb = 0.0;
        for (int n = 0; n < N; n++) {
            float d = dout[(size_t)n * C + c] * s;
            float xhat = (res[(size_t)n * C + c] - (ln ? mean[n] : 0.0f)) * rstd[n];
            gw += d * xhat;
            gb += d;
        }
        dw[c] += (float)gw;
        if (db) db[c] += (float)gb;
    }
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* d = dout + (size_t)n * C;
        const float* r = res + (size_t)n * C;
        const float m = ln ? mean[n] : 0.0f, rs = rstd[n];
        double sum_g = 0.0, sum_gx = 0.0;  // mean(g), mean(g*xhat) with g = dout*s*w
        for (int c = 0; c < C; c++) {
            float g = d[c] * s * w[c];
            sum_g += g;
            sum_gx += g * ((r[c] - m) * rs);
        }
        const float mg = ln ? (float)(sum_g / C) : 0.0f, mgx = (float)(sum_gx / C);
        for (int c = 0; c < C; c++) {
            float g = d[c] * s * w[c];
            float xhat = (r[c] - m) * rs;
            float dr = rs * (g - mg - xhat * mgx) + (dres ? dres[(size_t)n * C + c] : 0.0f);
            if (dy) dy[(size_t)n * C + c] = dr;
            dx[(size_t)n * C + c] = alpha * dr;
        }
    }
}
