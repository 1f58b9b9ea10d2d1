// qkv (B,T,3C) -> head-major copies (B,NH,T,hs) of q and k rotated by RoPE (and of v):
// the first attention's batched GEMMs read them, and the flash kernels read the rotated
// q, k from them when RoPE is applied before the kernels.
#pragma once
#include "kernels/cuda_common.cuh"
#include "kernels/rope.cuh"

namespace {

// The permutations run one block per token (b, t), its threads striding over the
// token's channels: reads or writes of the (B,T,.) side are contiguous, and the index
// arithmetic within a token is 32-bit.
constexpr int PERMUTE_THREADS = 256;

// qkv (B,T,3C) -> qkvr (the first `parts` of q, k, v, each (B,NH,T,hs)), rotating q
// and k by +angle; the partner channel of a rotation pair is read from the same head.
template <bool ROPE>
__global__ void __launch_bounds__(PERMUTE_THREADS)
    qkv_permute_kernel(floatX* __restrict__ qkvr, const floatX* __restrict__ qkv,
                       const __grid_constant__ RopeFreqs freqs, int T, int NH, int hs, size_t BTC, int parts) {
    const int bt = blockIdx.x, t = bt % T, C = NH * hs, h2 = hs / 2;
    const size_t b = bt / T;
    const floatX* src = qkv + (size_t)bt * 3 * C;
    for (int j = threadIdx.x; j < parts * C; j += PERMUTE_THREADS) {
        const int part = j / C, h = (j % C) / hs, d = j % hs;
        float x = to_float(src[j]);
        if (ROPE && part < 2) {
            float c, s;
            if (d < h2) {  // dst[i] = a*c - b*s
                rope_cos_sin(freqs, t, d, &c, &s);
                x = __fsub_rn(__fmul_rn(x, c), __fmul_rn(to_float(src[j + h2]), s));
            } else {       // dst[i + h2] = b*c + a*s
                rope_cos_sin(freqs, t, d - h2, &c, &s);
                x = __fadd_rn(__fmul_rn(x, c), __fmul_rn(to_float(src[j - h2]), s));
            }
        }
        qkvr[part * BTC + ((b * NH + h) * T + t) * hs + d] = from_float<floatX>(x);
    }
}

// parts 3: q, k, v at qkvr, qkvr + B*T*C, qkvr + 2*B*T*C; parts 2: q and k only.
void qkv_permute(floatX* qkvr, const floatX* qkv, int B, int T, int C, int NH, float rope_theta, int parts) {
    const int hs = C / NH, BT = B * T;
    const size_t BTC = (size_t)BT * C;
    if (rope_theta > 0) {
        auto* kernel = qkv_permute_kernel<true>;
        LNS_LAUNCH(kernel, BT, PERMUTE_THREADS, 0, qkvr, qkv, rope_freqs(hs, rope_theta), T, NH, hs, BTC, parts);
    } else {
        auto* kernel = qkv_permute_kernel<false>;
        LNS_LAUNCH(kernel, BT, PERMUTE_THREADS, 0, qkvr, qkv, RopeFreqs{}, T, NH, hs, BTC, parts);
    }
    cudaCheckLaunch();
}

}  // namespace
