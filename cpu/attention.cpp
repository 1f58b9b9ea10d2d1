// Causal multi-head self-attention with optional RoPE (Hugging Face rotate_half
// layout: channel i of a head pairs with channel i + hs/2).
#include <cmath>
#include <vector>

#include "cpu/cpu_backend.h"

namespace {
// cos/sin of position t for pair i, computed as Hugging Face does in fp32.
void rope_angles(std::vector<float>& cs, std::vector<float>& sn, int T, int hs, float theta) {
    const int h2 = hs / 2;
    cs.resize((size_t)T * h2), sn.resize((size_t)T * h2);
    for (int i = 0; i < h2; i++) {
        float inv_freq = 1.0f / std::pow(theta, (float)(2 * i) / (float)hs);
        for (int t = 0; t < T; t++) {
            float a = (float)t * inv_freq;
            cs[(size_t)t * h2 + i] = std::cos(a);
            sn[(size_t)t * h2 + i] = std::sin(a);
        }
    }
}
// Rotates one head vector by +angle (forward) or -angle (the transpose, for backward).
void rope_rotate(float* dst, const float* src, const float* cs, const float* sn, int hs, float sign) {
    const int h2 = hs / 2;
    for (int i = 0; i < h2; i++) {
        float a = src[i], b = src[i + h2], c = cs[i], s = sign * sn[i];
        dst[i] = a * c - b * s;
        dst[i + h2] = b * c + a * s;
    }
}

// dst (B,T,3C) = src with every q and k head rotated by sign * angle (v copied);
// rope_theta 0 copies all.
void rotate_qk(float* dst, const float* src, int B, int T, int C, int NH, float rope_theta, float sign) {
    const int hs = C / NH, C3 = 3 * C;
    std::vector<float> cs, sn;
    if (rope_theta > 0) rope_angles(cs, sn, T, hs, rope_theta);
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float* s = src + ((size_t)b * T + t) * C3;
            float* d = dst + ((size_t)b * T + t) * C3;
            for (int h = 0; h < 2 * NH; h++) {  // q and k heads
                if (rope_theta > 0)
                    rope_rotate(d + h * hs, s + h * hs, &cs[(size_t)t * hs / 2], &sn[(size_t)t * hs / 2], hs, sign);
                else
                    for (int i = 0; i < hs; i++) d[h * hs + i] = s[h * hs + i];
            }
            for (int i = 2 * C; i < C3; i++) d[i] = s[i];
        }
}
// s[t2] = scale * q_t . k_t2 for t2 <= t, for head h of the rotated rows at base
// (T,3C); returns their max.
float causal_scores(float* s, const float* base, int t, int C, int h, int hs, float scale) {
    const float* q = base + (size_t)t * 3 * C + h * hs;
    float maxv = -INFINITY;
    for (int t2 = 0; t2 <= t; t2++) {
        const float* k = base + (size_t)t2 * 3 * C + C + h * hs;
        float dot = 0.0f;
        for (int i = 0; i < hs; i++) dot += q[i] * k[i];
        s[t2] = dot * scale;
        maxv = std::fmax(maxv, s[t2]);
    }
    return maxv;
}
}  // namespace

void cpu_backend::attention_forward(float* out, float* qkvr, float* att, const float* qkv,
                                    int B, int T, int C, int NH, float rope_theta) {
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / std::sqrt((float)hs);
    rotate_qk(qkvr, qkv, B, T, C, NH, rope_theta, 1.0f);
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float* base = qkvr + (size_t)b * T * C3;
            for (int t = 0; t < T; t++) {
                float* a = att + (((size_t)b * NH + h) * T + t) * T;
                const float maxv = causal_scores(a, base, t, C, h, hs, scale);
                double sum = 0.0;
                for (int t2 = 0; t2 <= t; t2++) {
                    a[t2] = std::exp(a[t2] - maxv);
                    sum += a[t2];
                }
                const float inv = (float)(1.0 / sum);
                for (int t2 = 0; t2 <= t; t2++) a[t2] *= inv;
                for (int t2 = t + 1; t2 < T; t2++) a[t2] = 0.0f;
                float* o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* v = base + (size_t)t2 * C3 + 2 * C + h * hs;
                    for (int i = 0; i < hs; i++) o[i] += a[t2] * v[i];
                }
            }
        }
}

void cpu_backend::attention_backward(float* dqkv, float* dqkvr, float* datt, const float* dout,
                                     const float* qkvr, const float* att, int B, int T, int C,
                                     int NH, float rope_theta) {
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / std::sqrt((float)hs);
    // Each (b, h) owns its slice of dqkvr and walks t in order: deterministic.
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float* base = qkvr + (size_t)b * T * C3;
            float* dbase = dqkvr + (size_t)b * T * C3;
            for (int t = 0; t < T; t++)
                for (int part = 0; part < 3; part++)
                    for (int i = 0; i < hs; i++) dbase[(size_t)t * C3 + part * C + h * hs + i] = 0.0f;
            for (int t = 0; t < T; t++) {
                const float* a = att + (((size_t)b * NH + h) * T + t) * T;
                float* da = datt + (((size_t)b * NH + h) * T + t) * T;
                const float* d = dout + ((size_t)b * T + t) * C + h * hs;
                // d(probs) and dv
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* v = base + (size_t)t2 * C3 + 2 * C + h * hs;
                    float* dv = dbase + (size_t)t2 * C3 + 2 * C + h * hs;
                    float dot = 0.0f;
                    for (int i = 0; i < hs; i++) {
                        dot += d[i] * v[i];
                        dv[i] += a[t2] * d[i];
                    }
                    da[t2] = dot;
                }
                // softmax backward: dscore = p * (dp - sum(p * dp))
                double pd = 0.0;
                for (int t2 = 0; t2 <= t; t2++) pd += a[t2] * da[t2];
                for (int t2 = 0; t2 <= t; t2++) da[t2] = a[t2] * (da[t2] - (float)pd) * scale;
                for (int t2 = t + 1; t2 < T; t2++) da[t2] = 0.0f;
                const float* q = base + (size_t)t * C3 + h * hs;
                float* dq = dbase + (size_t)t * C3 + h * hs;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* k = base + (size_t)t2 * C3 + C + h * hs;
                    float* dk = dbase + (size_t)t2 * C3 + C + h * hs;
                    for (int i = 0; i < hs; i++) {
                        dq[i] += da[t2] * k[i];
                        dk[i] += da[t2] * q[i];
                    }
                }
            }
        }
    // Undo the rotation on dq and dk: the gradient rotates by -angle.
    rotate_qk(dqkv, dqkvr, B, T, C, NH, rope_theta, -1.0f);
}

// The flash pair computes the same function as attention_forward/backward but keeps
// only lse; the probabilities are recomputed as exp(score - lse). The rotated q, k
// live in a temporary for the duration of the call.
bool cpu_backend::attention_flash_supported(int) { return true; }

void cpu_backend::attention_flash_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                                          float rope_theta) {
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / std::sqrt((float)hs);
    std::vector<float> qkvr((size_t)B * T * C3);
    rotate_qk(qkvr.data(), qkv, B, T, C, NH, rope_theta, 1.0f);
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float* base = qkvr.data() + (size_t)b * T * C3;
            std::vector<float> s(T);
            for (int t = 0; t < T; t++) {
                const float maxv = causal_scores(s.data(), base, t, C, h, hs, scale);
                double sum = 0.0;
                for (int t2 = 0; t2 <= t; t2++) sum += std::exp(s[t2] - maxv);
                const float l = maxv + (float)std::log(sum);
                lse[((size_t)b * NH + h) * T + t] = l;
                float* o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float p = std::exp(s[t2] - l);
                    const float* v = base + (size_t)t2 * C3 + 2 * C + h * hs;
                    for (int i = 0; i < hs; i++) o[i] += p * v[i];
                }
            }
        }
}

void cpu_backend::attention_flash_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                                           const float* lse, int B, int T, int C, int NH, float rope_theta) {
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / std::sqrt((float)hs);
    std::vector<float> qkvr((size_t)B * T * C3), dqkvr((size_t)B * T * C3, 0.0f);
    rotate_qk(qkvr.data(), qkv, B, T, C, NH, rope_theta, 1.0f);
    // Each (b, h) owns its slice of dqkvr and walks t in order: deterministic.
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float* base = qkvr.data() + (size_t)b * T * C3;
            float* dbase = dqkvr.data() + (size_t)b * T * C3;
            for (int t = 0; t < T; t++) {
                const float* q = base + (size_t)t * C3 + h * hs;
                const float* d = dout + ((size_t)b * T + t) * C + h * hs;
                const float* o = out + ((size_t)b * T + t) * C + h * hs;
                const float l = lse[((size_t)b * NH + h) * T + t];
                float D = 0.0f;  // sum_t2 p dp = dout . out
                for (int i = 0; i < hs; i++) D += d[i] * o[i];
                float* dq = dbase + (size_t)t * C3 + h * hs;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* k = base + (size_t)t2 * C3 + C + h * hs;
                    const float* v = base + (size_t)t2 * C3 + 2 * C + h * hs;
                    float* dk = dbase + (size_t)t2 * C3 + C + h * hs;
                    float* dv = dbase + (size_t)t2 * C3 + 2 * C + h * hs;
                    float dot = 0.0f, dp = 0.0f;
                    for (int i = 0; i < hs; i++) dot += q[i] * k[i], dp += d[i] * v[i];
                    const float p = std::exp(dot * scale - l);
                    const float ds = p * (dp - D) * scale;
                    for (int i = 0; i < hs; i++) {
                        dv[i] += p * d[i];
                        dq[i] += ds * k[i];
                        dk[i] += ds * q[i];
                    }
                }
            }
        }
    rotate_qk(dqkv, dqkvr.data(), B, T, C, NH, rope_theta, -1.0f);
}

void cpu_backend::attention_kv_forward(float* out, float* kcache, float* vcache, const float* qkv, int pos, int C,
                                       int NH, int Tmax, float rope_theta) {
    const int hs = C / NH, h2 = hs / 2;
    const float scale = 1.0f / std::sqrt((float)hs);
    std::vector<float> cs(h2), sn(h2);
    for (int i = 0; i < h2 && rope_theta > 0; i++) {  // the angles of rope_angles() at row pos
        const float a = (float)pos * (1.0f / std::pow(rope_theta, (float)(2 * i) / (float)hs));
        cs[i] = std::cos(a), sn[i] = std::sin(a);
    }
#pragma omp parallel for
    for (int h = 0; h < NH; h++) {
        std::vector<float> q(hs), att(pos + 1);
        float* k = kcache + ((size_t)h * Tmax + pos) * hs;
        float* v = vcache + ((size_t)h * Tmax + pos) * hs;
        if (rope_theta > 0) {
            rope_rotate(q.data(), qkv + h * hs, cs.data(), sn.data(), hs, 1.0f);
            rope_rotate(k, qkv + C + h * hs, cs.data(), sn.data(), hs, 1.0f);
        } else {
            for (int i = 0; i < hs; i++) q[i] = qkv[h * hs + i], k[i] = qkv[C + h * hs + i];
        }
        for (int i = 0; i < hs; i++) v[i] = qkv[2 * C + h * hs + i];
        float maxv = -INFINITY;
        for (int t = 0; t <= pos; t++) {
            const float* kt = kcache + ((size_t)h * Tmax + t) * hs;
            float dot = 0.0f;
            for (int i = 0; i < hs; i++) dot += q[i] * kt[i];
            att[t] = dot * scale;
            maxv = std::fmax(maxv, att[t]);
        }
        double sum = 0.0;
        for (int t = 0; t <= pos; t++) sum += att[t] = std::exp(att[t] - maxv);
        const float inv = (float)(1.0 / sum);
        float* o = out + h * hs;
        for (int i = 0; i < hs; i++) o[i] = 0.0f;
        for (int t = 0; t <= pos; t++) {
            const float* vt = vcache + ((size_t)h * Tmax + t) * hs;
            for (int i = 0; i < hs; i++) o[i] += att[t] * inv * vt[i];
        }
    }
}
