// Pointwise MLP activations: GELU (tanh approximation, GPT-2) and SwiGLU (LLaMA).
#include <cmath>

#include "cpu/cpu_backend.h"

static const float GELU_K = 0.7978845608028654f;  // sqrt(2/pi)

void cpu_backend::gelu_forward(float* out, const float* inp, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + std::tanh(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

void cpu_backend::gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + 0.044715f * x * x * x);
        float th = std::tanh(u);
        float sech2 = 1.0f - th * th;
        float grad = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = grad * dout[i];
    }
}

void cpu_backend::swiglu_forward(float* out, const float* inp, int N, int F) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* g = inp + (size_t)n * 2 * F;
        const float* u = g + F;
        float* o = out + (size_t)n * F;
        for (int f = 0; f < F; f++) {
            float sig = 1.0f / (1.0f + std::exp(-g[f]));
            o[f] = g[f] * sig * u[f];
        }
    }
}

void cpu_backend::swiglu_backward(float* dinp, const float* inp, const float* dout, int N, int F) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* g = inp + (size_t)n * 2 * F;
        const float* u = g + F;
        const float* d = dout + (size_t)n * F;
        float* dg = dinp + (size_t)n * 2 * F;
        float* du = dg + F;
        for (int f = 0; f < F; f++) {
            float sig = 1.0f / (1.0f + std::exp(-g[f]));
            float silu = g[f] * sig;
            dg[f] = d[f] * u[f] * sig * (1.0f + g[f] * (1.0f - sig));
            du[f] = d[f] * silu;
        }
    }
}
