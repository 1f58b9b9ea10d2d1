// RoPE angles on the device, shared by the attention kernels: inv_freq is computed
// on the host exactly as cpu/attention.cpp does (std::pow in fp32) and passed by
// value; the angle t * inv_freq is the same fp32 product, and sincosf (2 ulp)
// differs from the CPU's cosf/sinf by a few ulp.
#pragma once
#include <cmath>

constexpr int MAX_ROPE_PAIRS = 256;  // hs <= 512 with RoPE
// inv_freq[i] = theta^(-2i/hs), passed by value to the kernels (1 KiB of parameters)
struct RopeFreqs {
    float inv_freq[MAX_ROPE_PAIRS];
};

inline RopeFreqs rope_freqs(int hs, float theta) {
    RopeFreqs f{};
    if (theta > 0)
        for (int i = 0; i < hs / 2; i++) f.inv_freq[i] = 1.0f / std::pow(theta, (float)(2 * i) / (float)hs);
    return f;
}

// The pair (a, b) = (channel i, channel i + hs/2) rotated by the angle whose cos and
// sin are (c, s): (a c - b s, b c + a s); with -s, the transpose (backward). Each product
// and sum rounds on its own (never contracted into an FMA), as cpu/attention.cpp
// computes them, so every kernel that rotates gives the CPU's bits.
__device__ __forceinline__ float2 rope_rotate(float a, float b, float c, float s) {
    return make_float2(__fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)), __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
}

// cos and sin of position t for pair i, as cpu/attention.cpp's rope_angles
__device__ __forceinline__ void rope_cos_sin(const RopeFreqs& f, int t, int i, float* c, float* s) {
    const float a = __fmul_rn((float)t, f.inv_freq[i]);
    sincosf(a, s, c);
}
