// Softmax cross-entropy over the real vocabulary; the padded tail of the logits
// (columns V..Vp) never enters the softmax and gets zero gradient.
#include <cmath>

#include "cpu/cpu_backend.h"

namespace {
// log-sum-exp of a row's first V logits, in double for a clean reference.
double row_lse(const float* l, int V, float& maxv) {
    maxv = -INFINITY;
    for (int i = 0; i < V; i++) maxv = std::fmax(maxv, l[i]);
    double sum = 0.0;
    for (int i = 0; i < V; i++) sum += std::exp((double)l[i] - maxv);
    return std::log(sum) + maxv;
}
}  // namespace

void cpu_backend::crossentropy_forward(float* losses, const float* logits, const int* targets,
                                       int N, int V, int Vp) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* l = logits + (size_t)n * Vp;
        if (targets[n] < 0) {
            losses[n] = 0.0f;
            continue;
        }
        float maxv;
        losses[n] = (float)(row_lse(l, V, maxv) - l[targets[n]]);
    }
}

void cpu_backend::crossentropy_backward(float* dlogits, const float* logits, const int* targets,
                                        float dloss, int N, int V, int Vp) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float* l = logits + (size_t)n * Vp;
        float* d = dlogits + (size_t)n * Vp;
        const int tgt = targets[n];
        if (tgt < 0) {
            for (int i = 0; i < Vp; i++) d[i] = 0.0f;
            continue;
        }
        float maxv;
        const double lse = row_lse(l, V, maxv);
        for (int i = 0; i < V; i++) {  // reads l[i] before writing d[i]: safe in place
            float p = (float)std::exp((double)l[i] - lse);
            d[i] = dloss * (p - (i == tgt ? 1.0f : 0.0f));
        }
        for (int i = V; i < Vp; i++) d[i] = 0.0f;
    }
}
