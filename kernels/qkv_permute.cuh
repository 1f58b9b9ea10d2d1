// qkv (B,T,3C) -> head-major copies (B,NH,T,hs) of q and k rotated by RoPE (and of v):
// the first attention's batched GEMMs read them, and the flash kernels read the rotated
// q, k from them when RoPE is applied before the kernels.
#pragma once
#include "kernels/cuda_common.cuh"
#include "kernels/rope.cuh"

namespace {

constexpr int PERMUTE_THREADS = 256;

// (T, hs/2) table of (cos, sin) of every RoPE angle, rope_cos_sin's values: the
// permutation and the flash tiles then read 8 bytes per pair instead of evaluating
// sincosf (which made the permutation instruction-bound), and every reader of the
// call shares the table through L2.
__global__ void rope_table_kernel(float2* __restrict__ tab, const __grid_constant__ RopeFreqs f, int n, int h2) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    float c, s;
    rope_cos_sin(f, idx / h2, idx % h2, &c, &s);
    tab[idx] = make_float2(c, s);
}
// nullptr without RoPE (theta <= 0); the table lives in SCRATCH_ROPE until the next call.
const float2* rope_table(int T, int hs, float theta) {
    if (!(theta > 0)) return nullptr;
    const int n = T * (hs / 2);
    float2* tab = (float2*)cuda_scratch(SCRATCH_ROPE, (size_t)n * sizeof(float2));
    auto* kernel = rope_table_kernel;
    LNS_LAUNCH(kernel, ceil_div(n, 256), 256, 0, tab, rope_freqs(hs, theta), n, hs / 2);
    cudaCheckLaunch();
    return tab;
}

// qkv (B,T,3C) -> qkvr (the first `parts` of q, k, v, each (B,NH,T,hs)), rotating q
// and k by +angle. One thread per VEC consecutive channels of a head: 16-byte loads
// and stores when VEC is the packed width and hs a multiple of 2 VEC (a chunk then
// never straddles the two halves of the rotation pairs), else one channel per thread.
// The partner chunk (channels d +- hs/2 of the same head) is read again from L1/L2.
template <bool ROPE, int VEC>
__global__ void __launch_bounds__(PERMUTE_THREADS)
    qkv_permute_kernel(floatX* __restrict__ qkvr, const floatX* __restrict__ qkv, const float2* __restrict__ rope,
                       int T, int NH, int hs, size_t BTC, int parts, size_t chunks) {
    const size_t idx = (size_t)blockIdx.x * PERMUTE_THREADS + threadIdx.x;
    if (idx >= chunks) return;
    const int C = NH * hs, h2 = hs / 2, row_chunks = parts * C / VEC;
    const size_t bt = idx / row_chunks, b = bt / T;
    const int t = (int)(bt % T), j = (int)(idx % row_chunks) * VEC;  // channel in the token's parts * C
    const int part = j / C, h = (j % C) / hs, d = j % hs;
    const floatX* src = qkv + bt * 3 * C + j;
    float x[VEC];
    load_f<VEC>(x, src);
    if (ROPE && part < 2) {
        const bool first = d < h2;  // x: the pairs' first channels (a), else their second (b)
        float y[VEC];
        load_f<VEC>(y, first ? src + h2 : src - h2);
        const float2* cs = rope + (size_t)t * h2 + (first ? d : d - h2);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            const float2 r = first ? rope_rotate(x[k], y[k], cs[k].x, cs[k].y)
                                   : rope_rotate(y[k], x[k], cs[k].x, cs[k].y);
            x[k] = first ? r.x : r.y;
        }
    }
    store_f<VEC>(qkvr + part * BTC + ((b * NH + h) * T + t) * hs + d, x);
}

// parts 3: q, k, v at qkvr, qkvr + B*T*C, qkvr + 2*B*T*C; parts 2: q and k only.
// rope: rope_table(T, hs, theta), or nullptr for no rotation.
void qkv_permute(floatX* qkvr, const floatX* qkv, int B, int T, int C, int NH, const float2* rope, int parts) {
    const int hs = C / NH;
    const size_t BTC = (size_t)B * T * C;
    auto launch = [&](auto rope_c, auto vec_c) {
        constexpr bool R = decltype(rope_c)::value;
        constexpr int VEC = decltype(vec_c)::value;
        const size_t chunks = (size_t)parts * BTC / VEC;
        auto* kernel = qkv_permute_kernel<R, VEC>;
        LNS_LAUNCH(kernel, ceil_div((long)chunks, PERMUTE_THREADS), PERMUTE_THREADS, 0, qkvr, qkv, rope,
                   T, NH, hs, BTC, parts, chunks);
    };
    using Packed = std::integral_constant<int, x128::size>;
    using One = std::integral_constant<int, 1>;
    const bool packed = hs % (2 * x128::size) == 0 && aligned16(qkvr) && aligned16(qkv);
    if (rope) packed ? launch(std::true_type{}, Packed{}) : launch(std::true_type{}, One{});
    else packed ? launch(std::false_type{}, Packed{}) : launch(std::false_type{}, One{});
    cudaCheckLaunch();
}

}  // namespace
