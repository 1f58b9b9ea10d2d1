// Causal multi-head attention without the (T,T) matrices (FlashAttention-2 style):
// the same function as attention.cu and cpu/attention.cpp, computed tile by tile
// with an online softmax. Forward saves out and the per-row log-sum-exp; backward
// recomputes the probabilities from q, k and lse.
//
// Layouts (row-major): qkv, dqkv (B,T,3C) with [q | k | v] per token; out, dout
// (B,T,C); lse (B,NH,T) in natural-log units of the scaled scores. Heads of
// D = C/NH channels, D in {48, 64, 128} (template parameter; the wgmma and TMA kernels,
// whose tiles are whole 64-channel boxes, 64 and 128 only). The kernels read q, k, v
// through HeadViews, so they take qkv itself or the head-major rotated copy alike.
//
// Tiles. A block of 4 warps owns 64 rows of one head (queries in forward and in the dq
// kernel, keys in the dk/dv kernel), 16 per warp, and loops over tiles of the other
// side (the forward can also run blocks of 8 warps and 128 query rows, which share each
// key tile: FlashOptions::forward_warps): 64 keys in forward; in backward 64 (D = 64)
// or 32 (D = 48, 128) keys or queries, which bounds the fp32 accumulators a thread holds
// (dk and dv: 2 x D/2 registers). Tiles live in shared memory, rows padded by 8 bf16
// (16 bytes) so that the 8 row addresses of one ldmatrix fall in distinct banks.
// Products are mma.sync.m16n8k16 (bf16 in, fp32 accumulate): operands from smem via
// ldmatrix (.trans for the operand whose rows are the reduction index), the forward's Q
// fragments kept in registers across key tiles, probabilities and score gradients
// re-packed from accumulator fragments to operand fragments in registers. mma.sync runs on
// sm_80 and sm_90a alike.
//
// Hopper (WG kernels, sm_90a, opt-in: cuda_backend::FlashOptions::wgmma). The same
// kernels with every product on wgmma.mma_async m64nNk16: the block's 4 warps are one
// warpgroup, A (the rows the block owns, or P / dS) comes from registers in the
// mma.sync fragment layout, B (the loop's tiles) from shared memory by descriptor, in
// the unswizzled core-matrix layout (load_tile_cm). The accumulators have the mma.sync
// layout, so softmax, masks and stores are shared. cp.async writes through the generic
// proxy and wgmma reads through the async proxy: fence.proxy.async after each wait,
// before the barrier. The forward has a kernel of its own (flash_forward_wg_kernel) that
// overlaps the softmax of one key tile with the product of the previous one; the
// backward kernels wait for each product.
//
// Hopper, FlashAttention-3's structure (the *_tma kernels, sm_90a, opt-in:
// FlashOptions::tma): a producer warpgroup issues TMA copies into a two-stage ring
// guarded by mbarriers, two consumer warpgroups compute on wgmma, tiles in the 128-byte
// swizzle; forward over 128 x 128 tiles in persistent blocks, backward in one pass per
// key block with dq's parts added in a fixed order (or as two kernels: dq; dk, dv).
//
// Pipelining. Tiles are cp.async copies (global -> smem, no register round trip),
// issued one stage ahead: in forward V_j lands while S = Q K_j^T is computed and
// K_{j+1} while O += P V_j is (FlashAttention-2's order, one K and one V buffer); the
// backward kernels double-buffer their inner tiles and copy tile j+1 while tile j is
// used. The waits (cp_async_wait) and the two barriers per step are what makes a
// buffer safe to read and to overwrite; the tests run this source on the
// CPU emulator (test/emu), which lands copies only at their wait and lets a warp run ahead.
//
// RoPE (enum Rope below): by default q and k are rotated once into a head-major copy
// before the kernels (qkv_permute), so every tile is a plain copy; Rope::on_load
// instead rotates them as tiles are copied (fp32 arithmetic, rounded to bf16 once;
// cos and sin from a (T, D/2) table built once per call) and writes no copy, at the
// price of synchronous loads and redoing the rotation for every query block. Both
// apply the transposed rotation to dq and dk in registers before storing them.
// bench_kernels --attention measures the two.
//
// Causality and partial tiles: key tiles strictly above a query block's diagonal
// are never visited; inside a tile, entries with key > query are masked. Rows at or
// beyond T are loaded as zeros (never garbage: 0 * NaN would poison the products),
// their probabilities are masked, and they are not stored, so any T works.
//
// Roundings: where nvcc could contract a product and a sum to an FMA, the kernels say
// which (__fmaf_rn, or __fmul_rn to keep them apart), so every instantiation rounds alike
// and the variants that should agree bit for bit do on the GPU too.
//
// Determinism: no atomics in any sum. The dq kernel (one block per query block, looping
// over key tiles in order) and the dk/dv kernel (one block per key block, looping over
// query tiles in order) each write their outputs once; D = rowsum(dout * out) is one
// warp's fixed-order sum per row. The TMA kernels' atomics only hand out work (tickets)
// and order the one-pass backward's additions into dq (counters), so no result depends
// on which block does what, or when.
//
// PRECISION=FP32 builds have no flash kernels (mma.sync takes bf16): the model uses
// the first attention there (attention_flash_supported is false).
#pragma once
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "common/check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/qkv_permute.cuh"
#include "kernels/rope.cuh"
#include "kernels/ptx.cuh"
#include "kernels/tma.cuh"

namespace {

using bf16 = __nv_bfloat16;
using b128 = Packed128<bf16>;

constexpr int WARPS = 4, THREADS = 32 * WARPS;
constexpr int BLOCK = 16 * WARPS;  // rows a block owns
constexpr int PAD = 8;             // bf16 per smem row: rows 16 bytes apart modulo 128
constexpr float LOG2E = 1.4426950408889634f;
template <int D> constexpr int ROW_STRIDE = D + PAD;
// the inner tile of the backward kernels: keys (dq) or queries (dk, dv)
template <int D> constexpr int INNER_BWD = D == 64 ? 64 : 32;
// Blocks per SM that the D = 128 forward (4 warps) and dq kernels are compiled for on
// sm_90. Left to themselves they take 179 and 178 registers: 2 blocks of 4 warps per SM,
// 8 warps to hide the latencies of ldmatrix, mma and exp2. Capped at 168 registers
// (8 and 28-52 bytes of spills), 3 blocks fit in the register file and in shared memory
// (52 and 70 KB per block): on an H200, 223 instead of 185 TFLOP/s forward and 157
// instead of 150 backward at (4, 16, 2048, 128). On sm_80 the dq kernel's 3 would not
// fit in shared memory, and sm_100/sm_120 are unmeasured: they keep the compiler's choice.
// Every other case says 0 (no minimum), not 1: an explicit 1 moves ptxas to more
// registers (D = 64 forward: 146 instead of 126) and cost those kernels up to 26 %.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
constexpr int D128_MIN_BLOCKS = 3;
#else
constexpr int D128_MIN_BLOCKS = 0;
#endif

// Where RoPE is applied: none (theta 0); prepass, q and k rotated into a head-major
// copy by qkv_permute before the kernels, which then copy plain tiles with cp.async;
// on_load, rotated as tiles are copied to smem through registers (no copy written).
// Both rotate dq and dk back in registers before storing them.
enum class Rope { none, prepass, on_load };

// One of q, k, v, dout as rows of D channels: (b, h, t, i) at
// p + b * batch + h * head + t * row + i.
struct HeadView {
    const bf16* p;
    size_t batch, head, row;
    __device__ const bf16* at(int b, int h) const { return p + b * batch + h * head; }
};

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // lo in the low half: the lower column
    uint32_t r;
    memcpy(&r, &v, 4);
    return r;
}

// Accumulator fragment of a warp's 16 x 8NT tile: acc[nt][e] is row g + 8(e/2),
// column 8nt + 2(lane%4) + e%2, with g = lane/4.

// The A fragment (16 x 16) of columns 16kk.. of a 16-row tile in smem, row stride sa.
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* A, int sa, int kk) {
    const int lane = threadIdx.x % 32;  // matrices: rows 0-7 / 8-15 x columns 0-7, then 8-15
    ldsm_x4(a, A + (lane % 16) * sa + kk * 16 + (lane / 16) * 8);
}
// The 16 rows of this warp of a padded tile as A fragments over D channels.
template <int D>
__device__ __forceinline__ void load_a_rows(uint32_t (&a)[D / 16][4], const bf16* tile) {
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        load_a(a[kk], tile + (threadIdx.x / 32) * 16 * ROW_STRIDE<D>, ROW_STRIDE<D>, kk);
}

// acc[mt] (MT tiles of 16 x 8NT) += a[mt] (16 x 16, the step's A fragments) B^T, B
// (8NT x 16) in smem at Bm (the step's first column), row stride sb: each B fragment
// loaded once for the MT tiles.
template <int MT, int NT>
__device__ __forceinline__ void mma_step_nt_mt(float (&acc)[MT][NT][4], const uint32_t (&a)[MT][4], const bf16* Bm,
                                               int sb) {
    static_assert(NT % 2 == 0, "whole 16x16 steps");
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
        uint32_t b[4];  // matrices: B rows 0-7 x k 0-7, rows 0-7 x k 8-15, rows 8-15 x k 0-7, 8-15 x 8-15
        ldsm_x4(b, Bm + (np * 16 + lane % 8 + (lane / 16) * 8) * sb + (lane / 8 % 2) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            mma_bf16(acc[mt][2 * np], a[mt], b[0], b[1]);
            mma_bf16(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
        }
    }
}
// The same for one tile: acc (16 x 8NT) += a (16 x 16) B^T.
template <int NT>
__device__ __forceinline__ void mma_step_nt(float (&acc)[NT][4], const uint32_t (&a)[4], const bf16* Bm, int sb) {
    mma_step_nt_mt<1, NT>(reinterpret_cast<float(&)[1][NT][4]>(acc), reinterpret_cast<const uint32_t(&)[1][4]>(a),
                          Bm, sb);
}
// acc[mt] (MT tiles of 16 x 8NT) += A_mt (16 x K) B^T: A's MT tiles of 16 rows in smem
// from A (row stride sa), B (8NT x K) in smem at Bm (row stride sb).
template <int MT, int NT, int K>
__device__ __forceinline__ void mma_ss_nt_mt(float (&acc)[MT][NT][4], const bf16* A, int sa, const bf16* Bm,
                                             int sb) {
    static_assert(K % 16 == 0, "whole 16x16 steps");
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) load_a(a[mt], A + mt * 16 * sa, sa, kk);
        mma_step_nt_mt<MT, NT>(acc, a, Bm + kk * 16, sb);
    }
}
// acc (16 x 8NT) += A (16 x K) B^T; A and B (8NT x K) in smem, row strides sa, sb.
template <int NT, int K>
__device__ __forceinline__ void mma_ss_nt(float (&acc)[NT][4], const bf16* A, int sa, const bf16* Bm, int sb) {
    mma_ss_nt_mt<1, NT, K>(reinterpret_cast<float(&)[1][NT][4]>(acc), A, sa, Bm, sb);
}
// The same with A (16 x K) held in registers (load_a for each kk).
template <int NT, int K>
__device__ __forceinline__ void mma_rs_nt(float (&acc)[NT][4], const uint32_t (&a)[K / 16][4], const bf16* Bm,
                                          int sb) {
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++) mma_step_nt<NT>(acc, a[kk], Bm + kk * 16, sb);
}
// acc[mt] (MT tiles of 16 x 8NT) += A_mt (16 x K) B; A as register fragments, B (K x 8NT)
// in smem, row stride sb, each B fragment loaded once for the MT tiles.
template <int MT, int NT, int K>
__device__ __forceinline__ void mma_rs_nn_mt(float (&acc)[MT][NT][4], const uint32_t (&a)[MT][K / 16][4],
                                             const bf16* Bm, int sb) {
    static_assert(NT % 2 == 0 && K % 16 == 0, "whole 16x16 steps");
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++)
#pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t b[4];  // transposed matrices: k 0-7 / 8-15 x columns 0-7, then columns 8-15
            ldsm_x4_trans(b, Bm + (kk * 16 + lane % 16) * sb + np * 16 + (lane / 16) * 8);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                mma_bf16(acc[mt][2 * np], a[mt][kk], b[0], b[1]);
                mma_bf16(acc[mt][2 * np + 1], a[mt][kk], b[2], b[3]);
            }
        }
}
// acc (16 x 8NT) += A (16 x K) B; A as register fragments, B (K x 8NT) in smem, row stride sb.
template <int NT, int K>
__device__ __forceinline__ void mma_rs_nn(float (&acc)[NT][4], const uint32_t (&a)[K / 16][4], const bf16* Bm,
                                          int sb) {
    mma_rs_nn_mt<1, NT, K>(reinterpret_cast<float(&)[1][NT][4]>(acc),
                           reinterpret_cast<const uint32_t(&)[1][K / 16][4]>(a), Bm, sb);
}
// A 16 x 8NT accumulator tile, rounded to bf16, as the A operand (16 x 8NT) of mma_rs_nn.
template <int NT>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[NT / 2][4], const float (&c)[NT][4]) {
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) {
        a[kk][0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
        a[kk][1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
        a[kk][2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
        a[kk][3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
    }
}

// Rows [row0, row0 + ROWS) of one head's D channels (src: row 0, channel 0; ld: the
// row stride) into smem; zeros at rows >= T. Without ROPE the rows are cp.async copies
// that land at the cp_async_wait retiring the caller's next commit. ROPE rotates the
// pairs (i, i + D/2) of row t by +angle(t), as qkv_permute_kernel does, with
// rope[t][i] = (cos, sin), through registers: the tile is complete when this returns.
template <int D, int ROWS, bool ROPE, int NTH = THREADS>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* src, size_t ld, int row0, int T,
                                          const float2* __restrict__ rope) {
    if constexpr (!ROPE) {
        constexpr int CHUNKS = D / 8;  // 16 bytes each
        for (int c = threadIdx.x; c < ROWS * CHUNKS; c += NTH) {
            const int r = c / CHUNKS, i0 = (c % CHUNKS) * 8, t = row0 + r;
            cp_async_16(s + r * ROW_STRIDE<D> + i0, src + (size_t)(t < T ? t : 0) * ld + i0, t < T);
        }
        return;
    }
    constexpr int H = D / 2, CHUNKS = H / 8;  // 8 pairs per chunk: two 16-byte loads
    for (int c = threadIdx.x; c < ROWS * CHUNKS; c += NTH) {
        const int r = c / CHUNKS, i0 = (c % CHUNKS) * 8, t = row0 + r;
        b128 lo, hi;
        if (t < T) {
            const bf16* p = src + (size_t)t * ld + i0;
            lo = load128(p), hi = load128(p + H);
            if (ROPE) {
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    const float2 cs = rope[(size_t)t * H + i0 + k];
                    const float2 r = rope_rotate(to_float(lo[k]), to_float(hi[k]), cs.x, cs.y);
                    lo[k] = from_float<bf16>(r.x);
                    hi[k] = from_float<bf16>(r.y);
                }
            }
        } else {
#pragma unroll
            for (int k = 0; k < 8; k++) lo[k] = hi[k] = from_float<bf16>(0.0f);
        }
        store128(s + r * ROW_STRIDE<D> + i0, lo);
        store128(s + r * ROW_STRIDE<D> + i0 + H, hi);
    }
}

// Row g + 8r of a warp's 16 x D accumulator, times scale, to dst (the row's channel
// 0 of the head); ROPE rotates the pairs by -angle(t) (the transpose of load_tile's).
template <int D, bool ROPE>
__device__ __forceinline__ void store_row(bf16* dst, const float (&acc)[D / 8][4], int r, int t, float scale,
                                          const float2* __restrict__ rope) {
    const int tig = threadIdx.x % 4;
#pragma unroll
    for (int nt = 0; nt < D / 16; nt++) {  // channel i in the first half, i + D/2 in tile nt + D/16
        float a[2], b[2];
#pragma unroll
        for (int e = 0; e < 2; e++) {
            a[e] = acc[nt][2 * r + e] * scale, b[e] = acc[nt + D / 16][2 * r + e] * scale;
            if (ROPE) {
                const float2 cs = rope[(size_t)t * (D / 2) + nt * 8 + tig * 2 + e];
                const float2 r = rope_rotate(a[e], b[e], cs.x, -cs.y);  // the transpose
                a[e] = r.x, b[e] = r.y;
            }
        }
        *reinterpret_cast<__nv_bfloat162*>(dst + nt * 8 + tig * 2) = __floats2bfloat162_rn(a[0], a[1]);
        *reinterpret_cast<__nv_bfloat162*>(dst + D / 2 + nt * 8 + tig * 2) = __floats2bfloat162_rn(b[0], b[1]);
    }
}

// store_row, rotated back where there is a RoPE table (rope non-null).
template <int D>
__device__ __forceinline__ void store_row_rope(bf16* dst, const float (&acc)[D / 8][4], int r, int t, float scale,
                                               const float2* __restrict__ rope) {
    if (rope) store_row<D, true>(dst, acc, r, t, scale, rope);
    else store_row<D, false>(dst, acc, r, t, scale, nullptr);
}

// Rows [row0, row0 + ROWS) of one head (as load_tile, by cp.async, zeros at rows >= T)
// in wgmma's core-matrix layout without swizzling: the 16 bytes of row r, channels
// 8c..8c+7, at byte (r/8) * 16D + 128c + 16 (r%8). Each 8 x 8 block of (rows,
// channels) is one contiguous 128-byte core matrix, core matrices run along the
// channels, then along the rows: K-major for K in S = Q K^T (lbo 128, sbo 16D) and
// N-major for V in O = P V (lbo 16D, sbo 128).
// A warp copies 8 rows x 4 chunks at a time: 64 contiguous bytes of each row from global
// memory, and four whole core matrices (512 bytes, the minimum of 4 wavefronts) to smem.
template <int D, int ROWS, int NTH = THREADS>
__device__ __forceinline__ void load_tile_cm(bf16* s, const bf16* src, size_t ld, int row0, int T) {
    constexpr int CHUNKS = D / 8, QUADS = CHUNKS / 4;
    static_assert(CHUNKS % 4 == 0 && ROWS % 8 == 0, "whole 8-row, 4-chunk pieces");
    for (int c = threadIdx.x; c < ROWS * CHUNKS; c += NTH) {
        const int piece = c / 32, l = c % 32;
        const int r = (piece / QUADS) * 8 + l % 8, c8 = (piece % QUADS) * 4 + l / 8, t = row0 + r;
        cp_async_16(s + (r / 8) * 8 * D + c8 * 64 + (r % 8) * 8, src + (size_t)(t < T ? t : 0) * ld + c8 * 8, t < T);
    }
}

// The warpgroup's products, complete on return; A as each warp's 16 rows of mma.sync A
// fragments (a[kk] for columns 16kk..), B a tile in the core-matrix layout (load_tile_cm).
// acc (64 x N) += A (64 x K) B^T, B N rows x K channels read K-major (lbo 128 bytes to the
// next 8 channels, sbo 16K to the next 8 rows): S = Q K^T, dP = dout V^T, and transposed.
// wgmma_issue_*: the same products issued as one committed group, not waited for.
template <int N, int K>
__device__ __forceinline__ void wgmma_issue_nt(float (&acc)[N / 8][4], const uint32_t (&a)[K / 16][4],
                                               const bf16* Bm) {
    wgmma_fence_operands(acc);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++)  // channels 16kk..: two core matrices along K
        wgmma_bf16<0>(acc, a[kk], wgmma_desc(Bm + kk * 2 * 64, 128, 16 * K));
    wgmma_commit();
}
template <int N, int K>
__device__ __forceinline__ void wgmma_nt(float (&acc)[N / 8][4], const uint32_t (&a)[K / 16][4], const bf16* Bm) {
    wgmma_issue_nt<N, K>(acc, a, Bm);
    wgmma_wait<0>();
    wgmma_fence_operands(acc);
}
// acc (64 x N) += A (64 x K) B, B K rows x N channels read N-major (lbo 16N bytes to the
// next 8 rows, sbo 128 to the next 8 channels): O += P V, dq += dS K, dv += P^T dout, ...
template <int N, int K>
__device__ __forceinline__ void wgmma_issue_nn(float (&acc)[N / 8][4], const uint32_t (&a)[K / 16][4],
                                               const bf16* Bm) {
    wgmma_fence_operands(acc);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++)  // rows 16kk..: two 8-row groups along K
        wgmma_bf16<1>(acc, a[kk], wgmma_desc(Bm + kk * 2 * 8 * N, 16 * N, 128));
    wgmma_commit();
}
template <int N, int K>
__device__ __forceinline__ void wgmma_nn(float (&acc)[N / 8][4], const uint32_t (&a)[K / 16][4], const bf16* Bm) {
    wgmma_issue_nn<N, K>(acc, a, Bm);
    wgmma_wait<0>();
    wgmma_fence_operands(acc);
}

// A loop tile (K, V; in backward also Q, dout): padded rows for ldmatrix, or (WG) the
// core-matrix layout that wgmma reads.
template <int D, int ROWS, bool ROPE, bool WG, int NTH = THREADS>
__device__ __forceinline__ void load_inner(bf16* s, const bf16* src, size_t ld, int row0, int T,
                                           const float2* __restrict__ rope) {
    static_assert(!(WG && ROPE), "the wgmma path takes q, k rotated before the kernels");
    if constexpr (WG) load_tile_cm<D, ROWS, NTH>(s, src, ld, row0, T);
    else load_tile<D, ROWS, ROPE, NTH>(s, src, ld, row0, T, rope);
}
// The WG kernels are launched only where the device image has sm_90a code (wgmma_built).
__device__ __forceinline__ void trap_without_sm90a() {
#if !defined(LNS_CUDA_EMU) && !LNS_SM90A && defined(__CUDA_ARCH__)
    __trap();
#endif
}

// ---- forward, shared by both kernels below.
// The online-softmax step of one key tile for this warp's rows: s (16 x 8NT, the scores
// against keys key0..) masked above the diagonal when `mask`, m and l updated, s turned
// into the unnormalised probabilities, and corr[r] the factor that rescales the output
// rows accumulated so far.
template <int NT>
__device__ __forceinline__ void softmax_tile(float (&s)[NT][4], float (&m)[2], float (&l)[2], float (&corr)[2],
                                             const int (&row)[2], int key0, bool mask, float sl2) {
    const int tig = threadIdx.x % 4;
    if (mask)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (key0 + nt * 8 + tig * 2 + e % 2 > row[e / 2]) s[nt][e] = -INFINITY;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = m[r];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // finite: rows start at multiples of 16, so a tile the warp computes has its first
        // key at or below every row of the warp
        corr[r] = exp2f((m[r] - mx) * sl2);  // 0 on the first tile (m = -inf)
        m[r] = mx, l[r] = __fmul_rn(l[r], corr[r]);  // pinned: not fused with the sum below
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 2 * r; e < 2 * r + 2; e++) {
                s[nt][e] = exp2f((s[nt][e] - mx) * sl2);
                l[r] += s[nt][e];
            }
    }
}
template <int NT>
__device__ __forceinline__ void rescale_rows(float (&o)[NT][4], const float (&corr)[2]) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[nt][e] *= corr[e / 2];
}
// out = o / l for this warp's rows below T, and lse = m * scale + log(l).
template <int D>
__device__ __forceinline__ void store_forward(bf16* out, float* lse, const float (&o)[D / 8][4], const float (&m)[2],
                                              float (&l)[2], const int (&row)[2], int T, int C, float scale) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        if (row[r] >= T) continue;
        store_row<D, false>(out + (size_t)row[r] * C, o, r, row[r], 1.0f / l[r], nullptr);
        if (threadIdx.x % 4 == 0) lse[row[r]] = __fmaf_rn(m[r], scale, logf(l[r]));
    }
}

// The backward's recomputed tile, the same in every backward kernel: P = exp2(S sl2 -
// lse2) where the key is at or before the query and the query is below T (else 0), and
// dS = P (dP - Dv). Rows are queries (dq): s (S) becomes dS; columns are keys key0 +
// 8nt + 2tig + e%2.
template <int NT>
__device__ __forceinline__ void score_grads(float (&s)[NT][4], const float (&dp)[NT][4], int key0,
                                            const int (&row)[2], int T, float sl2, const float (&lse2)[2],
                                            const float (&dv)[2]) {
    const int tig = threadIdx.x % 4;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int key = key0 + nt * 8 + tig * 2 + e % 2, r = e / 2;
            const float p = key <= row[r] && row[r] < T ? exp2f(__fmaf_rn(s[nt][e], sl2, -lse2[r])) : 0.0f;
            s[nt][e] = p * (dp[nt][e] - dv[r]);
        }
}
// Transposed (dk, dv): rows are keys, columns queries t0 + qi with their lse2[qi] and
// Dv[qi]; s (S^T) becomes P^T and dp (dP^T) dS^T.
template <int NT>
__device__ __forceinline__ void probs_score_grads_t(float (&s)[NT][4], float (&dp)[NT][4], int t0,
                                                    const int (&key)[2], int T, float sl2, const float* lse2,
                                                    const float* Dv) {
    const int tig = threadIdx.x % 4;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int qi = nt * 8 + tig * 2 + e % 2, t = t0 + qi;
            const float p = t >= key[e / 2] && t < T ? exp2f(__fmaf_rn(s[nt][e], sl2, -lse2[qi])) : 0.0f;
            s[nt][e] = p;
            dp[nt][e] = p * (dp[nt][e] - Dv[qi]);
        }
}

// ---- forward (mma.sync): grid (B*NH, query blocks), heaviest (last) query block first.
// A block of QW warps owns BQ = 16 QW MT query rows (QW 4: one 64-row tile; QW 8: two
// groups of 4 sharing each key tile, half the key and value traffic per row) and loops
// over key tiles of BLOCK: every row sees the same tiles in the same order either way,
// so the two give the same bits. A warp skips the products of a tile whose keys all lie
// above its rows. MT = 2: each warp owns two 16-row tiles (32 rows), and each K and V
// fragment it loads serves both (FlashAttention-2's tiling): half the shared-memory reads
// of K and V per row, twice the independent mma per load, and the same bits again; its
// rows of Q are read from shared memory per key tile, as the registers hold two tiles' O.
template <int D, int QW, bool ROPE_ON_LOAD, int MT = 1>
__global__ void __launch_bounds__(32 * QW, D == 128 && QW == 4 && MT == 1 ? D128_MIN_BLOCKS : 0)
    flash_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse, const HeadView q, const HeadView k,
                         const HeadView v, const float2* __restrict__ rope, int T, int NH, float scale) {
    constexpr int S = ROW_STRIDE<D>, NTH = 32 * QW, BQ = 16 * QW * MT;
    static_assert(MT == 1 || MT == 2, "one or two 16-row tiles per warp");
    static_assert(QW % 4 == 0, "whole warpgroups");
    unsigned char* smem = dynamic_smem();
    bf16* sQ = reinterpret_cast<bf16*>(smem);  // (BQ, D)
    bf16* sK = sQ + BQ * S;                    // (BLOCK, D)
    bf16* sV = sK + BLOCK * S;                 // (BLOCK, D)
    const int bh = blockIdx.x, b = bh / NH, h = bh % NH, C = NH * D;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
    const bf16 *qh = q.at(b, h), *kh = k.at(b, h), *vh = v.at(b, h);
    const float sl2 = scale * LOG2E;  // dot products to log2 units of the scaled scores
    const int first = q0 + warp * 16 * MT, last = first + 16 * MT - 1;  // this warp's rows
    const int tiles = (min(q0 + BQ, T) + BLOCK - 1) / BLOCK;  // causal: keys up to the last valid row

    load_tile<D, BQ, ROPE_ON_LOAD, NTH>(sQ, qh, q.row, q0, T, rope);
    load_tile<D, BLOCK, ROPE_ON_LOAD, NTH>(sK, kh, k.row, 0, T, rope);
    cp_async_commit();
    [[maybe_unused]] uint32_t qf[MT == 1 ? D / 16 : 1][4];  // MT 1: this warp's 16 query rows as A fragments, loaded once
    float o[MT][D / 8][4] = {};
    float m[MT][2], l[MT][2], corr[MT][2];  // raw max dot, partial row sums
    int row[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
        row[mt][0] = first + 16 * mt + g, row[mt][1] = first + 16 * mt + g + 8;
    }
    for (int j = 0; j < tiles; j++) {
        cp_async_wait<0>();
        __syncthreads();  // K_j (and Q) in smem; every warp done with V_{j-1}
        load_tile<D, BLOCK, false, NTH>(sV, vh, v.row, j * BLOCK, T, rope);  // lands during S = Q K^T
        cp_async_commit();
        if constexpr (MT == 1)
            if (j == 0) load_a_rows<D>(qf, sQ);
        // some key of the tile at or below a row; then (a warp's rows starting at a multiple
        // of 16 MT, key tiles at multiples of 64) its first key is at or below every row of the warp
        const bool active = (QW == 4 && MT == 1) || j * BLOCK <= last;
        uint32_t p[MT][BLOCK / 16][4];
        if (active) {
            float s[MT][BLOCK / 8][4] = {};
            if constexpr (MT == 1) mma_rs_nt<BLOCK / 8, D>(s[0], qf, sK, S);
            else mma_ss_nt_mt<MT, BLOCK / 8, D>(s, sQ + (first - q0) * S, S, sK, S);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                softmax_tile<BLOCK / 8>(s[mt], m[mt], l[mt], corr[mt], row[mt], j * BLOCK,
                                        j * BLOCK + BLOCK - 1 > first + 16 * mt, sl2);
                rescale_rows<D / 8>(o[mt], corr[mt]);
                acc_to_a<BLOCK / 8>(p[mt], s[mt]);
            }
        }
        cp_async_wait<0>();
        __syncthreads();  // V_j in smem; every warp done with K_j
        if (j + 1 < tiles) {  // K_{j+1} lands during O += P V
            load_tile<D, BLOCK, ROPE_ON_LOAD, NTH>(sK, kh, k.row, (j + 1) * BLOCK, T, rope);
            cp_async_commit();
        }
        if (active) mma_rs_nn_mt<MT, D / 8, BLOCK>(o, p, sV, S);
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
        store_forward<D>(out + (size_t)b * T * C + h * D, lse + (size_t)bh * T, o[mt], m[mt], l[mt], row[mt], T, C,
                         scale);
}

// ---- forward on wgmma (sm_90a): the same tiles, rows and results, each 4 warps being
// one warpgroup that owns 64 rows (QW 8: two warpgroups sharing the key tiles), K and V
// in the core-matrix layout. The softmax of key tile j+1 overlaps the product
// O += P_j V_j: both are issued asynchronously, S_{j+1} = Q K_{j+1}^T first; the
// warpgroup waits for S_{j+1} alone (wgmma.wait_group 1), computes its softmax, then
// waits for P_j V_j and rescales O. K and V are double-buffered: the copies of K_{j+2}
// and V_{j+1} land while tile j is computed. Neither the accumulators nor the A
// registers (P_j) of a wgmma in flight are touched before its wait.
template <int D, int QW>
__global__ void __launch_bounds__(32 * QW)
    flash_forward_wg_kernel(bf16* __restrict__ out, float* __restrict__ lse, const HeadView q, const HeadView k,
                            const HeadView v, int T, int NH, float scale) {
    constexpr int S = ROW_STRIDE<D>, NTH = 32 * QW, BQ = 16 * QW, NT = BLOCK / 8;
    static_assert(QW % 4 == 0, "whole warpgroups");
    trap_without_sm90a();
    unsigned char* smem = dynamic_smem();
    bf16* sQ = reinterpret_cast<bf16*>(smem);  // (BQ, D), then two K and two V tiles of (BLOCK, D)
    auto sK = [&](int j) { return sQ + (BQ + j % 2 * BLOCK) * S; };        // K_j
    auto sV = [&](int j) { return sQ + (BQ + (2 + j % 2) * BLOCK) * S; };  // V_j
    const int bh = blockIdx.x, b = bh / NH, h = bh % NH, C = NH * D;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;
    const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
    const bf16 *qh = q.at(b, h), *kh = k.at(b, h), *vh = v.at(b, h);
    const float sl2 = scale * LOG2E;
    const int first = q0 + warp / 4 * 64, last = first + 63;  // the warpgroup's rows
    const int tiles = (min(q0 + BQ, T) + BLOCK - 1) / BLOCK;
    // the tiles whose products this warpgroup computes: 0..wg_tiles-1 (warpgroup-uniform)
    const int wg_tiles = min(tiles, last / BLOCK + 1);

    load_tile<D, BQ, false, NTH>(sQ, qh, q.row, q0, T, nullptr);
    load_tile_cm<D, BLOCK, NTH>(sK(0), kh, k.row, 0, T);
    load_tile_cm<D, BLOCK, NTH>(sV(0), vh, v.row, 0, T);
    if (tiles > 1) load_tile_cm<D, BLOCK, NTH>(sK(1), kh, k.row, BLOCK, T);
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async();  // the copies, for wgmma's reads
    __syncthreads();
    uint32_t qf[D / 16][4];
    load_a_rows<D>(qf, sQ);
    float o[D / 8][4] = {};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, corr[2];
    const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    uint32_t p[BLOCK / 16][4];  // P_j: the A operand of O += P_j V_j
    {                           // tile 0: key 0 is at or below every row
        float s[NT][4] = {};
        wgmma_nt<BLOCK, D>(s, qf, sK(0));
        softmax_tile<NT>(s, m, l, corr, row, 0, BLOCK - 1 > first, sl2);
        acc_to_a<NT>(p, s);
    }
    for (int j = 0; j < tiles; j++) {
        if (j > 0) {  // K_{j+1} and V_j, copied during tile j-1
            cp_async_wait<0>();
            fence_proxy_async();
        }
        __syncthreads();  // and every warpgroup done with K_j and V_{j-1}, whose buffers are refilled
        if (j + 2 < tiles) load_tile_cm<D, BLOCK, NTH>(sK(j + 2), kh, k.row, (j + 2) * BLOCK, T);
        if (j + 1 < tiles) load_tile_cm<D, BLOCK, NTH>(sV(j + 1), vh, v.row, (j + 1) * BLOCK, T);
        cp_async_commit();
        // each branch a whole pipeline stage, issue to wait: ptxas serializes the wgmmas of
        // a stage it cannot follow through branches
        if (j + 1 < wg_tiles) {
            float sn[NT][4] = {};  // S_{j+1}
            wgmma_issue_nt<BLOCK, D>(sn, qf, sK(j + 1));
            wgmma_issue_nn<D, BLOCK>(o, p, sV(j));
            wgmma_wait<1>();  // S_{j+1} only: P_j V_j may still run
            wgmma_fence_operands(sn);
            const int key0 = (j + 1) * BLOCK;
            softmax_tile<NT>(sn, m, l, corr, row, key0, key0 + BLOCK - 1 > first, sl2);
            wgmma_wait<0>();  // P_j V_j
            wgmma_fence_operands(o);
            wgmma_fence_operands(p);  // P_j's registers stay P_j's until here
            rescale_rows<D / 8>(o, corr);
            acc_to_a<NT>(p, sn);
        } else if (j < wg_tiles) {  // the warpgroup's last tile
            wgmma_nn<D, BLOCK>(o, p, sV(j));
            wgmma_fence_operands(p);
        }
    }
    store_forward<D>(out + (size_t)b * T * C + h * D, lse + (size_t)bh * T, o, m, l, row, T, C, scale);
}

// ---- forward on TMA and wgmma with warp specialisation (sm_90a), FlashAttention-3's
// structure: a block of three warpgroups computes 128 query rows of one head at a time.
// Warpgroup 0 produces: one thread issues the TMA copies of Q and of 128-key tiles of K
// and V into a ring of two stages, each guarded by a "full" mbarrier (the copy's bytes
// have landed) and an "empty" one (all 8 consumer warps are done reading it); the other
// warps leave, and the warpgroup hands its registers to the consumers (setmaxnreg).
// Warpgroups 1 and 2 consume, 64 query rows each: S = Q K^T with both operands in smem
// (m64n128k16), the online softmax in registers, O += P V with P from registers and V
// read N-major. As in flash_forward_wg_kernel, the softmax of tile j+1 runs while P_j V_j
// does, and the two consumers take turns to issue their products (ping-pong, below).
// Every tile is boxes of 64 channels by 128 rows (two boxes at D = 128) in the 128-byte
// swizzle that TMA writes and the descriptors read; copies past T or the tensor's end are
// zeros. qk_head_major: q and k are the rotated head-major copy (TMA coordinates channel,
// row, head, batch) rather than rows of qkv (channel, head, row, batch); v is always rows
// of qkv.
//
// Persistent: the grid is at most one block per SM, and a block takes one (head, query
// block) after another from a ticket counter, heaviest (last) query blocks first, so
// that the loads of the next Q and its first K and V tiles overlap the last products and
// the stores of the one before. The producer takes the ticket, writes it to shared
// memory and then arrives on full_q, which the consumers wait on before they read it;
// they release Q (empty_q) after their last S product, which also says that they have
// read the ticket. The ring's stages and phases run on across a block's work, and the
// block that finishes last zeroes the counter for the next launch. persistent = 0: a
// block per work, each taking one ticket (the GPU's block scheduler then does the rest).
namespace tma_fwd {
constexpr int BM = 128, BN = 128, STAGES = 2, THREADS = 384;
constexpr int BOX = 128 * 128;  // bytes of one box: 128 rows of 64 channels
template <int D> constexpr int TILE = D / 64 * BOX;  // bytes of a Q, K or V tile
// the tiles, 1024 bytes to align them, the 10 mbarriers and the ticket's slot
template <int D> constexpr size_t smem() { return (1 + 2 * STAGES) * TILE<D> + 1024 + 128; }
}  // namespace tma_fwd
// The forward's ticket counter and count of finished blocks (zero between launches). One
// per device: TMA forwards on one device run one at a time (the backend's one stream).
__device__ int flash_forward_tickets[2];

// The first 1024-byte-aligned byte at or after p in shared memory: where 128-byte
// swizzled boxes may start (the swizzle repeats every 8 rows of 128 bytes).
__device__ __forceinline__ unsigned char* align_1024(unsigned char* p) {
    return p + (1024 - smem_addr(p) % 1024) % 1024;
}
// Box `box` (channels 64 box..) of the map's box rows from t0, of head h of batch b, to dst.
__device__ __forceinline__ void tma_rows(void* dst, const CUtensorMap* map, uint64_t* bar, bool head_major, int box,
                                         int t0, int h, int b) {
    if (head_major) tma_load_4d(dst, map, bar, 64 * box, t0, h, b);
    else tma_load_4d(dst, map, bar, 64 * box, h, t0, b);
}
// s (64 x N) += A B^T over D channels, issued and committed, not waited for: A the 64
// rows at sA, B the N rows at sB, both tiles of swizzled boxes of 64 channels (a_box and
// b_box bytes apart). A k-step takes 16 channels: 32 bytes along the boxes' 128-byte rows.
template <int D, int N>
__device__ __forceinline__ void tma_issue_nt(float (&s)[N / 8][4], const unsigned char* sA, int a_box,
                                             const unsigned char* sB, int b_box) {
    wgmma_fence_operands(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        wgmma_bf16_ss(s, wgmma_desc_sw128(sA + kk / 4 * a_box + kk % 4 * 32, 16, 1024),
                      wgmma_desc_sw128(sB + kk / 4 * b_box + kk % 4 * 32, 16, 1024));
    wgmma_commit();
}
// The same with A as register fragments (load_a_sw128): no shared-memory reads for A.
template <int D, int N>
__device__ __forceinline__ void tma_issue_rs_nt(float (&s)[N / 8][4], const uint32_t (&a)[D / 16][4],
                                                const unsigned char* sB, int b_box) {
    wgmma_fence_operands(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        wgmma_bf16<0>(s, a[kk], wgmma_desc_sw128(sB + kk / 4 * b_box + kk % 4 * 32, 16, 1024));
    wgmma_commit();
}
// This warp's 16 of the 64 rows at sA (a tile of swizzled boxes, box bytes apart) as
// mma.sync A fragments over D channels: ldmatrix, chunk c of row r at chunk c ^ (r % 8).
template <int D>
__device__ __forceinline__ void load_a_sw128(uint32_t (&a)[D / 16][4], const unsigned char* sA, int box) {
    const int lane = threadIdx.x % 32, r = threadIdx.x / 32 % 4 * 16 + lane % 16;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        const int c = 2 * kk + lane / 16;  // the 8-channel chunk this lane addresses
        ldsm_x4(a[kk], sA + c / 8 * box + r * 128 + ((c % 8) ^ (r % 8)) * 16);
    }
}
// o (64 x D) += P B over K rows, issued and committed: P as register fragments, B the K
// rows at sB read N-major (16 rows of 128 bytes per k-step; its boxes b_box bytes apart
// along N).
template <int D, int K>
__device__ __forceinline__ void tma_issue_nn(float (&o)[D / 8][4], const uint32_t (&p)[K / 16][4],
                                             const unsigned char* sB, int b_box) {
    wgmma_fence_operands(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++) wgmma_bf16<1>(o, p[kk], wgmma_desc_sw128(sB + kk * 16 * 128, b_box, 1024));
    wgmma_commit();
}

template <int D>
__global__ void __launch_bounds__(tma_fwd::THREADS, 1)
    flash_forward_tma_kernel(bf16* __restrict__ out, float* __restrict__ lse, const __grid_constant__ CUtensorMap tq,
                             const __grid_constant__ CUtensorMap tk, const __grid_constant__ CUtensorMap tv,
                             int qk_head_major, int B, int T, int NH, float scale, int persistent) {
    using namespace tma_fwd;
    constexpr int NT = BN / 8;
    trap_without_sm90a();
    unsigned char* smem = align_1024(dynamic_smem());
    unsigned char* sQ = smem;
    auto sK = [&](int s) { return smem + (1 + s) * TILE<D>; };
    auto sV = [&](int s) { return smem + (1 + STAGES + s) * TILE<D>; };
    uint64_t* full_q = reinterpret_cast<uint64_t*>(smem + (1 + 2 * STAGES) * TILE<D>);
    uint64_t *full_k = full_q + 1, *full_v = full_k + STAGES, *empty_k = full_v + STAGES, *empty_v = empty_k + STAGES;
    uint64_t* empty_q = empty_v + STAGES;
    int* work_slot = reinterpret_cast<int*>(empty_q + 1);  // the (head, query block) of the Q in sQ
    const int C = NH * D, heads = B * NH, works = heads * ((T + BM - 1) / BM);
    // work w: head w % heads, query block (query blocks - 1 - w / heads): heaviest first
    auto work_q0 = [&](int w) { return ((works - 1 - w) / heads) * BM; };
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (threadIdx.x == 0) {
        mbar_init(full_q, 1), mbar_init(empty_q, 8);
        for (int s = 0; s < STAGES; s++) {
            mbar_init(full_k + s, 1), mbar_init(full_v + s, 1);  // the producer's arrive_expect_tx
            mbar_init(empty_k + s, 8), mbar_init(empty_v + s, 8);  // one arrival per consumer warp
        }
        fence_mbar_init();
    }
    __syncthreads();

    if (warp < 4) {  // the producer warpgroup
        setmaxnreg_dec<24>();
        if (threadIdx.x != 0) return;
        int w = block_ticket(flash_forward_tickets);
        for (int i = 0, kv = 0;; i++) {  // kv: the K and V tiles issued so far, the ring's position
            if (i > 0) mbar_wait(empty_q, (i - 1) & 1);  // Q_{i-1} read, the slot too
            *work_slot = w < works ? w : -1;
            if (w >= works) {
                mbar_arrive(full_q);  // the consumers' sign to leave
                break;
            }
            const int b = w % heads / NH, h = w % NH, q0 = work_q0(w);
            const int tiles = (min(q0 + BM, T) + BN - 1) / BN;  // causal: keys up to the last valid row
            mbar_arrive_expect_tx(full_q, TILE<D>);  // (releases the slot's store)
            for (int c = 0; c < D / 64; c++) tma_rows(sQ + c * BOX, &tq, full_q, qk_head_major, c, q0, h, b);
            // the next work (its latency hides behind the copies); a block per work takes one
            w = persistent ? block_ticket(flash_forward_tickets) : works;
            for (int j = 0; j < tiles; j++, kv++) {
                const int s = kv % STAGES, use = kv / STAGES;
                if (use > 0) mbar_wait(empty_k + s, (use - 1) & 1);  // K_{kv-2} read by every consumer warp
                mbar_arrive_expect_tx(full_k + s, TILE<D>);
                for (int c = 0; c < D / 64; c++)
                    tma_rows(sK(s) + c * BOX, &tk, full_k + s, qk_head_major, c, j * BN, h, b);
                if (use > 0) mbar_wait(empty_v + s, (use - 1) & 1);
                mbar_arrive_expect_tx(full_v + s, TILE<D>);
                for (int c = 0; c < D / 64; c++) tma_rows(sV(s) + c * BOX, &tv, full_v + s, false, c, j * BN, h, b);
            }
        }
        block_tickets_done(flash_forward_tickets);
        return;
    }

    setmaxnreg_inc<240>();  // the consumers: 2 x 128 threads x 240 + 128 x 24 fit 64 K registers
    const int wg = warp / 4 - 1, g = lane / 4;
    const float sl2 = scale * LOG2E;
    auto release = [&](uint64_t* bar) {
        if (lane == 0) mbar_arrive(bar);  // after this warp's wgmma_wait: its reads are done
    };
    const unsigned char* sQw = sQ + wg * 64 * 128;  // the warpgroup's 64 rows of each Q box
    auto issue_s = [&](float (&s)[NT][4], int stage) { tma_issue_nt<D, BN>(s, sQw, BOX, sK(stage), BOX); };
    float o[D / 8][4];
    auto issue_pv = [&](const uint32_t (&p)[BN / 16][4], int stage) { tma_issue_nn<D, BN>(o, p, sV(stage), BOX); };
    // FlashAttention-3's ping-pong: the consumer warpgroups take turns to issue their
    // products (named barriers 1 and 2 of 256 threads: one warpgroup syncs on its own, the
    // other arrives), so that one's softmax runs while the other's products do. Every turn
    // of one is preceded by one of the other; warpgroup 0 takes the first of each work,
    // and warpgroup 1 passes on none after its last, so both barriers end each work empty.
    auto my_turn = [&] { wg == 0 ? named_barrier_sync<1, 256>() : named_barrier_sync<2, 256>(); };
    auto your_turn = [&] { wg == 0 ? named_barrier_arrive<2, 256>() : named_barrier_arrive<1, 256>(); };
    for (int i = 0, kv = 0;; i++) {  // kv: the K and V tiles consumed so far
        mbar_wait(full_q, i & 1);
        const int w = *work_slot;
        if (w < 0) break;
        const int bh = w % heads, b = bh / NH, h = bh % NH, q0 = work_q0(w);
        const int tiles = (min(q0 + BM, T) + BN - 1) / BN;
        const int first = q0 + 64 * wg;  // the warpgroup's rows
        const int row[2] = {first + 16 * (warp % 4) + g, first + 16 * (warp % 4) + g + 8};
        if (wg == 1) your_turn();
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, corr[2];
        uint32_t p[BN / 16][4];  // P_j: the A operand of O += P_j V_j
#pragma unroll
        for (int nt = 0; nt < D / 8; nt++) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
        {  // tile 0: key 0 is at or below every row
            float s[NT][4] = {};
            const int stage = kv % STAGES;
            mbar_wait(full_k + stage, kv / STAGES & 1);
            my_turn();
            issue_s(s, stage);
            your_turn();
            wgmma_wait<0>();
            wgmma_fence_operands(s);
            release(empty_k + stage);
            if (tiles == 1) __syncwarp(), release(empty_q);  // its last S product (and every lane's read of w)
            softmax_tile<NT>(s, m, l, corr, row, 0, BN - 1 > first, sl2);
            acc_to_a<NT>(p, s);
        }
        for (int j = 0; j < tiles; j++, kv++) {
            const int s = kv % STAGES;
            // each branch a whole pipeline stage, issue to wait (see flash_forward_wg_kernel)
            if (j + 1 < tiles) {
                const int sn_stage = (kv + 1) % STAGES;
                float sn[NT][4] = {};  // S_{j+1}
                mbar_wait(full_k + sn_stage, (kv + 1) / STAGES & 1);
                mbar_wait(full_v + s, kv / STAGES & 1);
                my_turn();
                issue_s(sn, sn_stage);
                issue_pv(p, s);
                your_turn();
                wgmma_wait<1>();  // S_{j+1} only: P_j V_j may still run
                wgmma_fence_operands(sn);
                release(empty_k + sn_stage);
                if (j + 2 == tiles) __syncwarp(), release(empty_q);
                const int key0 = (j + 1) * BN;
                softmax_tile<NT>(sn, m, l, corr, row, key0, key0 + BN - 1 > first, sl2);
                wgmma_wait<0>();  // P_j V_j
                wgmma_fence_operands(o);
                wgmma_fence_operands(p);  // P_j's registers stay P_j's until here
                release(empty_v + s);
                rescale_rows<D / 8>(o, corr);
                acc_to_a<NT>(p, sn);
            } else {
                mbar_wait(full_v + s, kv / STAGES & 1);
                my_turn();
                issue_pv(p, s);
                if (wg == 0) your_turn();
                wgmma_wait<0>();
                wgmma_fence_operands(o);
                wgmma_fence_operands(p);
                release(empty_v + s);
            }
        }
        store_forward<D>(out + (size_t)b * T * C + h * D, lse + (size_t)bh * T, o, m, l, row, T, C, scale);
    }
}

// ---- backward on TMA and wgmma with warp specialisation (sm_90a, FlashOptions::tma), in
// the structure of flash_forward_tma_kernel: a block of three warpgroups owns 128 rows
// (64 per consumer warpgroup), loaded once; the producer streams 64-row tiles of the
// other side into a two-stage ring. Each step: two products with both operands in smem
// (m64n64k16), the probabilities and score gradients in registers, then the products
// with them from registers; the consumers wait for each.
//
// The default is FlashAttention-3's single pass: flash_dkv_tma_kernel<D, true> per key
// block also computes that block's part of dq, dS K, and adds it into an fp32 dq in
// global memory, and flash_dq_convert_kernel rounds that into dqkv. Five products per
// step instead of the seven of two kernels (dq and dk/dv each recompute S and dP).
// Deterministic: the parts of a 64-row query tile are added in a fixed order, key block
// ceil down to 0, each block waiting on a counter per tile until the blocks after it
// have added theirs. Blocks run their query tiles upward from the diagonal and are
// launched lightest (last key block) first, so key block n + 1 reaches each tile two
// steps before block n does and the waits are short. FlashOptions::tma_dq_kernel runs
// the two kernels of the FlashAttention-2 backward instead (flash_dq_tma_kernel, and
// flash_dkv_tma_kernel<D, false>: each output written once).
namespace tma_bwd {
constexpr int BM = 128, BI = 64, STAGES = 2, THREADS = 384;
static_assert(BM == 2 * BI, "key block n adds to the query tiles 2n.. (the counters' order)");
constexpr int OUT_BOX = BM * 128, IN_BOX = BI * 128;  // bytes of one 64-channel box
template <int D> constexpr int OUT = D / 64 * OUT_BOX;  // a 128-row tile of D channels
template <int D> constexpr int IN = D / 64 * IN_BOX;    // a 64-row tile
constexpr int STATS = STAGES * 2 * BI * 4;              // lse and Dv of each stage's rows
constexpr int DS = BM * 128;                            // dS of a step: 128 keys x 64 queries, bf16
constexpr int DQ = BI * 64 * 4;                        // a warpgroup's dq part: 64 rows x 64, fp32
// dq's parts of a step: at D = 128 each warpgroup's is half of the channels (over all 128
// keys), at D = 64 all of them over its own 64 keys, and the two parts sum. Either way
// each product is m64n64 with both operands in the canonical 64-wide swizzled layouts.
template <int D> constexpr bool DQ_HALVES = D == 128;
// two outer tiles, two stages of two inner tiles, (dk/dv) the stats; fused: two dS
// buffers and a dq part per consumer warpgroup; then the barriers, and 1024 bytes to
// align the tiles
template <int D, bool FUSED>
constexpr int BARS = 2 * OUT<D> + 2 * STAGES * IN<D> + STATS + (FUSED ? 2 * DS + 2 * DQ : 0);
template <int D, bool FUSED = false> constexpr size_t smem() { return BARS<D, FUSED> + 128 + 1024; }

// The kernels' shared memory, from the 1024-byte-aligned start of the dynamic allocation.
template <int D, bool FUSED = false>
struct Smem {
    unsigned char* base;
    __device__ explicit Smem(unsigned char* p) : base(align_1024(p)) {}
    __device__ unsigned char* outer(int i) const { return base + i * OUT<D>; }  // the block's rows, 2 tensors
    __device__ unsigned char* inner(int i, int s) const { return base + 2 * OUT<D> + (i * STAGES + s) * IN<D>; }
    __device__ float* stats(int s) const {  // lse (log2 units) then Dv of a stage's rows
        return reinterpret_cast<float*>(base + 2 * OUT<D> + 2 * STAGES * IN<D>) + s * 2 * BI;
    }
    __device__ unsigned char* ds(int i) const { return base + 2 * OUT<D> + 2 * STAGES * IN<D> + STATS + i * DS; }
    __device__ float* dq(int wg) const {
        return reinterpret_cast<float*>(base + 2 * OUT<D> + 2 * STAGES * IN<D> + STATS + 2 * DS + wg * DQ);
    }
    // full_o (the outer tiles), full and empty per stage, (fused) dq_full and dq_empty
    // per consumer warpgroup
    __device__ uint64_t* full_o() const { return reinterpret_cast<uint64_t*>(base + BARS<D, FUSED>); }
    __device__ uint64_t* full(int s) const { return full_o() + 1 + s; }
    __device__ uint64_t* empty(int s) const { return full_o() + 1 + STAGES + s; }
    __device__ uint64_t* dq_full(int wg) const { return full_o() + 1 + 2 * STAGES + wg; }
    __device__ uint64_t* dq_empty(int wg) const { return full_o() + 3 + 2 * STAGES + wg; }
    __device__ int* ticket() const { return reinterpret_cast<int*>(full_o() + 5 + 2 * STAGES); }  // (fused)
    // by thread 0, then a block barrier (which also publishes the ticket): full_o takes the
    // producer's one arrival, full full_arrivals, empty one per consumer warp; dq_full every
    // thread of its warpgroup, dq_empty the writer's one
    __device__ void init_barriers(int full_arrivals) const {
        if (threadIdx.x == 0) {
            mbar_init(full_o(), 1);
            for (int s = 0; s < STAGES; s++) mbar_init(full(s), full_arrivals), mbar_init(empty(s), 8);
            if (FUSED)
                for (int w = 0; w < 2; w++) mbar_init(dq_full(w), 128), mbar_init(dq_empty(w), 1);
            fence_mbar_init();
        }
        __syncthreads();
    }
};

// What the kernels take: the tensor maps of q, dout, k and v (the block's own tensors in
// BM-row boxes, the streamed ones in BI-row boxes), the rest as flash_dq_kernel's, and
// for the single pass the fp32 dq (B, NH, query tiles, 64 x D in parts of 64 x 64 in the
// accumulator order of dq_part_index) and the block ticket then the counters (B, NH,
// query tiles), zeros.
struct Args {
    CUtensorMap q, dout, k, v;
    bf16* dqkv;
    const float *lse, *Dv;
    const float2* rope;  // to rotate dq and dk back; null without RoPE
    int qk_head_major, T, NH;
    float scale;
    float* dq_acc;
    int* dq_sem;
    int head_group;  // (single pass) the tickets' order, below
};

// Where a consumer thread's element e of n-tile nt of its 64 x 64 dq part lies in the
// part: thread-minor, so that a warp's stores fill 32 consecutive words.
__device__ __forceinline__ int dq_part_index(int nt, int e, int thread) { return (nt * 4 + e) * 128 + thread; }
}  // namespace tma_bwd

// dq: query block of 128 rows (heaviest first); key tiles 0..diagonal.
template <int D>
__global__ void __launch_bounds__(tma_bwd::THREADS, 1) flash_dq_tma_kernel(const __grid_constant__ tma_bwd::Args a) {
    using namespace tma_bwd;
    const CUtensorMap *tq = &a.q, *tdo = &a.dout, *tk = &a.k, *tv = &a.v;
    const int qk_head_major = a.qk_head_major, T = a.T, NH = a.NH;
    trap_without_sm90a();
    const Smem<D> sm(dynamic_smem());
    unsigned char *sQ = sm.outer(0), *sdO = sm.outer(1);
    auto sK = [&](int s) { return sm.inner(0, s); };
    auto sV = [&](int s) { return sm.inner(1, s); };
    uint64_t* full_o = sm.full_o();
    const int bh = blockIdx.x, b = bh / NH, h = bh % NH, C = NH * D;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BM;
    const int tiles = (min(q0 + BM, T) + BI - 1) / BI;  // keys up to the block's last valid row
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    sm.init_barriers(1);  // the producer's arrive_expect_tx

    if (warp < 4) {  // the producer warpgroup: Q and dout once, then K and V tiles
        setmaxnreg_dec<24>();
        if (threadIdx.x != 0) return;
        mbar_arrive_expect_tx(full_o, 2 * OUT<D>);
        for (int c = 0; c < D / 64; c++) {
            tma_rows(sQ + c * OUT_BOX, tq, full_o, qk_head_major, c, q0, h, b);
            tma_rows(sdO + c * OUT_BOX, tdo, full_o, false, c, q0, h, b);
        }
        for (int j = 0; j < tiles; j++) {
            const int s = j % STAGES, use = j / STAGES;
            if (use > 0) mbar_wait(sm.empty(s), (use - 1) & 1);
            mbar_arrive_expect_tx(sm.full(s), 2 * IN<D>);
            for (int c = 0; c < D / 64; c++) {
                tma_rows(sK(s) + c * IN_BOX, tk, sm.full(s), qk_head_major, c, j * BI, h, b);
                tma_rows(sV(s) + c * IN_BOX, tv, sm.full(s), false, c, j * BI, h, b);
            }
        }
        return;
    }

    setmaxnreg_inc<240>();
    const int wg = warp / 4 - 1, g = lane / 4;
    const int row[2] = {q0 + 64 * wg + 16 * (warp % 4) + g, q0 + 64 * wg + 16 * (warp % 4) + g + 8};
    const float sl2 = a.scale * LOG2E;
    float lse2[2], dv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        lse2[r] = row[r] < T ? a.lse[(size_t)bh * T + row[r]] * LOG2E : 0.0f;
        dv[r] = row[r] < T ? a.Dv[(size_t)bh * T + row[r]] : 0.0f;
    }
    float dq[D / 8][4] = {};
    mbar_wait(full_o, 0);
    // this warpgroup's rows of Q and dout in registers, read once: A of S and dP from
    // registers halves their shared-memory traffic, which with B tiles of 64 rows would
    // otherwise bound the products
    uint32_t qf[D / 16][4], df[D / 16][4];
    load_a_sw128<D>(qf, sQ + wg * 64 * 128, OUT_BOX);
    load_a_sw128<D>(df, sdO + wg * 64 * 128, OUT_BOX);
    for (int j = 0; j < tiles; j++) {
        const int s = j % STAGES;
        mbar_wait(sm.full(s), j / STAGES & 1);
        float sc[BI / 8][4] = {}, dp[BI / 8][4] = {};
        tma_issue_rs_nt<D, BI>(sc, qf, sK(s), IN_BOX);
        tma_issue_rs_nt<D, BI>(dp, df, sV(s), IN_BOX);
        wgmma_wait<0>();
        wgmma_fence_operands(sc);
        wgmma_fence_operands(dp);
        score_grads<BI / 8>(sc, dp, j * BI, row, T, sl2, lse2, dv);
        uint32_t a[BI / 16][4];
        acc_to_a<BI / 8>(a, sc);
        tma_issue_nn<D, BI>(dq, a, sK(s), IN_BOX);
        wgmma_wait<0>();
        wgmma_fence_operands(dq);
        wgmma_fence_operands(a);
        if (lane == 0) mbar_arrive(sm.empty(s));  // this warp is done with K_j and V_j
    }
#pragma unroll
    for (int r = 0; r < 2; r++)
        if (row[r] < T)
            store_row_rope<D>(a.dqkv + ((size_t)b * T + row[r]) * 3 * C + h * D, dq, r, row[r], a.scale, a.rope);
}

// dk, dv (and with FUSED dq's parts): key block of 128 rows; query tiles from the
// diagonal to T, with their lse (log2 units) and Dv, which the producer warp stores
// beside each stage: its 32 lanes are the stage's "full" arrivals, so the stores are
// visible with the copy. With FUSED the producer warpgroup's second warp adds dq's
// parts into global memory (bulk copies from shared memory, in the counters' order).
template <int D, bool FUSED>
__global__ void __launch_bounds__(tma_bwd::THREADS, 1) flash_dkv_tma_kernel(const __grid_constant__ tma_bwd::Args a) {
    using namespace tma_bwd;
    const CUtensorMap *tq = &a.q, *tdo = &a.dout, *tk = &a.k, *tv = &a.v;
    const int qk_head_major = a.qk_head_major, T = a.T, NH = a.NH;
    trap_without_sm90a();
    const Smem<D, FUSED> sm(dynamic_smem());
    unsigned char *sK = sm.outer(0), *sV = sm.outer(1);
    auto sQ = [&](int s) { return sm.inner(0, s); };
    auto sdO = [&](int s) { return sm.inner(1, s); };
    auto sL = [&](int s) { return sm.stats(s); };  // lse * log2(e)
    auto sD = [&](int s) { return sm.stats(s) + BI; };
    uint64_t* full_o = sm.full_o();
    // FUSED: blocks take their work in the order they start, by a ticket, each head's key
    // blocks lightest (last) first: a block then waits only for blocks that have started,
    // whatever order the GPU launches them in. head_group heads at a time (0: all) hand out
    // their last key blocks, then the ones before, and so on. 1, head by head, has the
    // blocks running at once share few heads' Q and dout in L2, but ends the launch on the
    // last heads' heaviest blocks; more heads put the heaviest blocks last, side by side,
    // so the SMs finish closer together (one block per SM, T = 2048, 64 heads, equal
    // steps: 152 steps for 1, 146 for 32, 144 for all). Else a (B*NH, key blocks) grid,
    // heaviest first.
    if (FUSED && threadIdx.x == 0) *sm.ticket() = block_ticket(a.dq_sem);
    sm.init_barriers(32);  // the producer warp's lanes, after their stores of the stage's stats
    const int blocks = (T + BM - 1) / BM;
    int bh = blockIdx.x, n = blockIdx.y;
    if constexpr (FUSED) {
        const int job = *sm.ticket(), heads = gridDim.x / blocks;
        const int group = a.head_group > 0 ? min(a.head_group, heads) : heads;
        const int g0 = job / (group * blocks) * group, in_group = min(group, heads - g0), r = job - g0 * blocks;
        bh = g0 + r % in_group, n = blocks - 1 - r / in_group;
    }
    const int b = bh / NH, h = bh % NH, C = NH * D, k0 = n * BM;
    const int first = k0 / BI, tiles = (T + BI - 1) / BI;  // causal: no query tile before the diagonal
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    if (warp < 4) {  // the producer warpgroup: K and V once, then Q, dout and their row stats
        setmaxnreg_dec<24>();
        if constexpr (FUSED) {
            if (warp == 1 && lane == 0) {  // the dq writer
                float* acc = a.dq_acc + (size_t)bh * tiles * BI * D;
                int* sem = a.dq_sem + 1 + (size_t)bh * tiles;
                for (int i = first; i < tiles; i++) {
                    const int use = i - first;
                    semaphore_wait(sem + i, i / 2 - n);  // blocks i/2 .. n+1 have added theirs
                    for (int w = 0; w < 2; w++) {
                        mbar_wait(sm.dq_full(w), use & 1);
                        float* dst = acc + (size_t)i * BI * D + (DQ_HALVES<D> ? w * BI * 64 : 0);
                        // the tile's first part is stored (nothing to zero); at D = 64 the
                        // second adds to the first once that is written: a fixed order
                        if (i / 2 == n && (DQ_HALVES<D> || w == 0)) bulk_store(dst, sm.dq(w), DQ);
                        else bulk_reduce_add(dst, sm.dq(w), DQ);
                        if (!DQ_HALVES<D> && w == 0) bulk_commit(), bulk_wait<0>();
                    }
                    bulk_commit();
                    bulk_wait_read<0>();
                    for (int w = 0; w < 2; w++) mbar_arrive(sm.dq_empty(w));
                    bulk_wait<0>();
                    semaphore_add(sem + i, 1);
                }
            }
        }
        if (warp != 0) return;
        if (lane == 0) {
            mbar_arrive_expect_tx(full_o, 2 * OUT<D>);
            for (int c = 0; c < D / 64; c++) {
                tma_rows(sK + c * OUT_BOX, tk, full_o, qk_head_major, c, k0, h, b);
                tma_rows(sV + c * OUT_BOX, tv, full_o, false, c, k0, h, b);
            }
        }
        const float *lse_h = a.lse + (size_t)bh * T, *Dv_h = a.Dv + (size_t)bh * T;
        for (int i = first; i < tiles; i++) {
            const int s = (i - first) % STAGES, use = (i - first) / STAGES;
            if (use > 0) mbar_wait(sm.empty(s), (use - 1) & 1);
            for (int r = lane; r < BI; r += 32) {
                const int t = i * BI + r;
                sL(s)[r] = t < T ? lse_h[t] * LOG2E : 0.0f;
                sD(s)[r] = t < T ? Dv_h[t] : 0.0f;
            }
            if (lane == 0) {
                mbar_arrive_expect_tx(sm.full(s), 2 * IN<D>);
                for (int c = 0; c < D / 64; c++) {
                    tma_rows(sQ(s) + c * IN_BOX, tq, sm.full(s), qk_head_major, c, i * BI, h, b);
                    tma_rows(sdO(s) + c * IN_BOX, tdo, sm.full(s), false, c, i * BI, h, b);
                }
            } else {
                mbar_arrive(sm.full(s));
            }
        }
        return;
    }

    setmaxnreg_inc<240>();
    const int wg = warp / 4 - 1, g = lane / 4, tig = lane % 4;
    const int krow[2] = {64 * wg + 16 * (warp % 4) + g, 64 * wg + 16 * (warp % 4) + g + 8};  // in the block
    const int key[2] = {k0 + krow[0], k0 + krow[1]};
    const float sl2 = a.scale * LOG2E;
    float dk[D / 8][4] = {}, dv[D / 8][4] = {};
    mbar_wait(full_o, 0);
    for (int i = first; i < tiles; i++) {
        const int s = (i - first) % STAGES, use = i - first;
        mbar_wait(sm.full(s), use / STAGES & 1);
        float sc[BI / 8][4] = {}, dp[BI / 8][4] = {};  // S^T = K Q^T, dP^T = V dout^T
        tma_issue_nt<D, BI>(sc, sK + wg * 64 * 128, OUT_BOX, sQ(s), IN_BOX);
        tma_issue_nt<D, BI>(dp, sV + wg * 64 * 128, OUT_BOX, sdO(s), IN_BOX);
        wgmma_wait<0>();
        wgmma_fence_operands(sc);
        wgmma_fence_operands(dp);
        probs_score_grads_t<BI / 8>(sc, dp, i * BI, key, T, sl2, sL(s), sD(s));
        uint32_t ap[BI / 16][4], ad[BI / 16][4];
        acc_to_a<BI / 8>(ap, sc);
        acc_to_a<BI / 8>(ad, dp);
        if constexpr (FUSED) {
            // dS^T as the A operand of dq = dS K, M-major: key row r of the block holds its
            // 64 queries, 128 bytes in the 128-byte swizzle (chunk c at c ^ r % 8). Two
            // buffers: a warp that stores step i + 1's has passed this step's barrier, after
            // every warp's wait for step i - 1's product.
            unsigned char* ds = sm.ds(use % 2);
#pragma unroll
            for (int kk = 0; kk < BI / 16; kk++)
#pragma unroll
                for (int j = 0; j < 4; j++) {  // ad[kk][j]: row g + 8 (j % 2), queries 8 (2kk + j / 2) + 2 tig, +1
                    const int r = krow[j % 2], c = 2 * kk + j / 2;
                    *reinterpret_cast<uint32_t*>(ds + r * 128 + ((c ^ (r % 8)) * 16) + tig * 4) = ad[kk][j];
                }
            fence_proxy_async();  // the stores, for wgmma's reads
        }
        tma_issue_nn<D, BI>(dv, ap, sdO(s), IN_BOX);  // dv += P^T dout
        tma_issue_nn<D, BI>(dk, ad, sQ(s), IN_BOX);   // dk += dS^T Q
        if constexpr (FUSED) {
            // dq's part (64 x 64) = dS K: D = 128, channels 64 wg.. over all 128 keys (dS of
            // both warpgroups, K's box wg); D = 64, every channel over this warpgroup's 64
            // keys. A is dS M-major, B K's rows N-major.
            constexpr int KEYS = DQ_HALVES<D> ? BM : BM / 2;
            float dq[8][4] = {};
            named_barrier_sync<1, 256>();  // both warpgroups' dS stored
            const unsigned char* ds = sm.ds(use % 2) + (DQ_HALVES<D> ? 0 : wg * 64 * 128);
            const unsigned char* kb = DQ_HALVES<D> ? sK + wg * OUT_BOX : sK + wg * 64 * 128;
            wgmma_fence_operands(dq);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < KEYS / 16; kk++)
                wgmma_bf16_ss<1, 1>(dq, wgmma_desc_sw128(ds + kk * 16 * 128, DS, 1024),
                                    wgmma_desc_sw128(kb + kk * 16 * 128, OUT_BOX, 1024));
            wgmma_commit();
            wgmma_wait<0>();
            wgmma_fence_operands(dq);
            wgmma_fence_operands(dv);
            wgmma_fence_operands(dk);
            wgmma_fence_operands(ap);
            wgmma_fence_operands(ad);
            if (lane == 0) mbar_arrive(sm.empty(s));  // this warp is done with the stage
            // the part to shared memory once the writer has read the last one, then to it
            if (use > 0) mbar_wait(sm.dq_empty(wg), (use - 1) & 1);
            float* part = sm.dq(wg);
            const int thread = threadIdx.x % 128;
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) part[dq_part_index(nt, e, thread)] = dq[nt][e];
            fence_proxy_async();  // for the bulk copy's reads
            mbar_arrive(sm.dq_full(wg));
        } else {
            wgmma_wait<0>();
            wgmma_fence_operands(dv);
            wgmma_fence_operands(dk);
            wgmma_fence_operands(ap);
            wgmma_fence_operands(ad);
            if (lane == 0) mbar_arrive(sm.empty(s));  // this warp is done with the stage
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (key[r] >= T) continue;
        bf16* dst = a.dqkv + ((size_t)b * T + key[r]) * 3 * C + h * D;
        store_row_rope<D>(dst + C, dk, r, key[r], a.scale, a.rope);
        store_row<D, false>(dst + 2 * C, dv, r, key[r], 1.0f, nullptr);
    }
}

// dq of the single pass: a query tile's fp32 parts of 64 channels (tma_bwd::Args::dq_acc),
// scaled, rotated back with RoPE and rounded into dqkv. A block of 128 threads per tile,
// each thread reading the elements the kernel's thread of the same index wrote
// (coalesced), which are that thread's accumulator rows.
template <int D>
__global__ void __launch_bounds__(128)
    flash_dq_convert_kernel(bf16* __restrict__ dqkv, const float* __restrict__ acc, const float2* __restrict__ rope,
                            int T, int NH, float scale) {
    using namespace tma_bwd;
    const int bh = blockIdx.x, i = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * D;
    const float* src = acc + ((size_t)bh * gridDim.y + i) * BI * D;
    float dq[D / 8][4];  // channels 64c.. from part c
#pragma unroll
    for (int c = 0; c < D / 64; c++)
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) dq[c * 8 + nt][e] = src[c * BI * 64 + dq_part_index(nt, e, threadIdx.x)];
    const int row0 = i * BI + 16 * (threadIdx.x / 32) + threadIdx.x % 32 / 4;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = row0 + 8 * r;
        if (row < T) store_row_rope<D>(dqkv + ((size_t)b * T + row) * 3 * C + h * D, dq, r, row, scale, rope);
    }
}

// ---- backward pre-pass: Dv[b,h,t] = dout[b,t,h,:] . out[b,t,h,:], one warp per row
// in dout's order (contiguous reads).
template <int D>
__global__ void __launch_bounds__(THREADS)
    flash_dvec_kernel(float* __restrict__ Dv, const bf16* __restrict__ dout, const bf16* __restrict__ out, int T,
                      int NH, int rows) {
    const int w = blockIdx.x * WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (w >= rows) return;  // the whole warp
    const int h = w % NH, bt = w / NH;
    const bf16* x = dout + (size_t)w * D;
    const bf16* y = out + (size_t)w * D;
    float acc = 0.0f;
#pragma unroll
    for (int i = lane * 2; i < D; i += 64) {
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(x + i));
        const float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(y + i));
        acc += a.x * c.x + a.y * c.y;
    }
    acc = warp_sum(acc);
    if (lane == 0) Dv[((size_t)(bt / T) * NH + h) * T + bt % T] = acc;
}

// ---- dq: grid (B*NH, query blocks), heaviest first; loops over key tiles 0..diagonal,
// double-buffered. dS = P (dP - Dv), dP = dout V^T; dq = scale * dS K, then rotated back.
// WG: the three products on wgmma (sm_90a), inner tiles in the core-matrix layout.
template <int D, Rope R, bool WG>
__global__ void __launch_bounds__(THREADS, D == 128 && !WG ? D128_MIN_BLOCKS : 0)
    flash_dq_kernel(bf16* __restrict__ dqkv, const HeadView q, const HeadView k, const HeadView v,
                    const HeadView dout, const float* __restrict__ lse, const float* __restrict__ Dv,
                    const float2* __restrict__ rope, int T, int NH, float scale) {
    constexpr int S = ROW_STRIDE<D>, KN = INNER_BWD<D>;
    constexpr bool RL = R == Rope::on_load;
    if constexpr (WG) trap_without_sm90a();
    unsigned char* smem = dynamic_smem();
    bf16* sQ = reinterpret_cast<bf16*>(smem);  // (BLOCK, D)
    bf16* sdO = sQ + BLOCK * S;                // (BLOCK, D)
    bf16* sK = sdO + BLOCK * S;                // 2 x (KN, D)
    bf16* sV = sK + 2 * KN * S;                // 2 x (KN, D)
    const int bh = blockIdx.x, b = bh / NH, h = bh % NH, C = NH * D;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BLOCK;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4;
    const bf16 *kh = k.at(b, h), *vh = v.at(b, h);
    const float sl2 = scale * LOG2E;

    load_tile<D, BLOCK, RL>(sQ, q.at(b, h), q.row, q0, T, rope);
    load_tile<D, BLOCK, false>(sdO, dout.at(b, h), dout.row, q0, T, rope);
    load_inner<D, KN, RL, WG>(sK, kh, k.row, 0, T, rope);
    load_inner<D, KN, false, WG>(sV, vh, v.row, 0, T, rope);
    cp_async_commit();
    const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    float lse2[2], dv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        lse2[r] = row[r] < T ? lse[(size_t)bh * T + row[r]] * LOG2E : 0.0f;
        dv[r] = row[r] < T ? Dv[(size_t)bh * T + row[r]] : 0.0f;
    }
    float dq[D / 8][4] = {};
    const int tiles = (min(q0 + BLOCK, T) + KN - 1) / KN;  // keys up to the block's last valid row
    for (int j = 0; j < tiles; j++) {
        const int cur = (j & 1) * KN * S;
        if (j + 1 < tiles) {  // into the other buffer, which every warp left at the last barrier
            const int next = ((j + 1) & 1) * KN * S;
            load_inner<D, KN, RL, WG>(sK + next, kh, k.row, (j + 1) * KN, T, rope);
            load_inner<D, KN, false, WG>(sV + next, vh, v.row, (j + 1) * KN, T, rope);
            cp_async_commit();
            cp_async_wait<1>();  // all but tile j+1
        } else {
            cp_async_wait<0>();
        }
        if constexpr (WG) fence_proxy_async();  // the copies, for wgmma's reads
        __syncthreads();  // tile j in smem for every warp
        float s[KN / 8][4] = {}, dp[KN / 8][4] = {};
        if constexpr (WG) {  // A fragments reloaded each step: fewer live registers
            uint32_t f[D / 16][4];
            load_a_rows<D>(f, sQ);
            wgmma_nt<KN, D>(s, f, sK + cur);
            load_a_rows<D>(f, sdO);
            wgmma_nt<KN, D>(dp, f, sV + cur);
        } else {
            mma_ss_nt<KN / 8, D>(s, sQ + warp * 16 * S, S, sK + cur, S);
            mma_ss_nt<KN / 8, D>(dp, sdO + warp * 16 * S, S, sV + cur, S);
        }
        score_grads<KN / 8>(s, dp, j * KN, row, T, sl2, lse2, dv);
        uint32_t a[KN / 16][4];
        acc_to_a<KN / 8>(a, s);
        if constexpr (WG) wgmma_nn<D, KN>(dq, a, sK + cur);
        else mma_rs_nn<D / 8, KN>(dq, a, sK + cur, S);
        __syncthreads();  // every warp done with tile j before it is overwritten by j+2
    }
#pragma unroll
    for (int r = 0; r < 2; r++)
        if (row[r] < T)
            store_row<D, R != Rope::none>(dqkv + ((size_t)b * T + row[r]) * 3 * C + h * D, dq, r, row[r], scale,
                                          rope);
}

// lse (in log2 units) and Dv of query rows [t0, t0 + N) of one head, zeros beyond T.
template <int N>
__device__ __forceinline__ void load_row_stats(float* sL, float* sD, const float* lse, const float* Dv, int t0,
                                               int T) {
    for (int r = threadIdx.x; r < N; r += THREADS) {
        const int t = t0 + r;
        sL[r] = t < T ? lse[t] * LOG2E : 0.0f;
        sD[r] = t < T ? Dv[t] : 0.0f;
    }
}

// ---- dk, dv: grid (B*NH, key blocks), heaviest (first) key block first; loops over
// query tiles from the diagonal to T, double-buffered. Transposed products, keys as
// rows: S^T = K Q^T, dP^T = V dout^T, dv = P^T dout, dk = scale * dS^T Q, then
// rotated back. WG: the four products on wgmma (sm_90a), as in flash_dq_kernel.
template <int D, Rope R, bool WG>
__global__ void __launch_bounds__(THREADS)
    flash_dkv_kernel(bf16* __restrict__ dqkv, const HeadView q, const HeadView k, const HeadView v,
                     const HeadView dout, const float* __restrict__ lse, const float* __restrict__ Dv,
                     const float2* __restrict__ rope, int T, int NH, float scale) {
    constexpr int S = ROW_STRIDE<D>, QN = INNER_BWD<D>;
    constexpr bool RL = R == Rope::on_load;
    if constexpr (WG) trap_without_sm90a();
    unsigned char* smem = dynamic_smem();
    bf16* sK = reinterpret_cast<bf16*>(smem);  // (BLOCK, D)
    bf16* sV = sK + BLOCK * S;                 // (BLOCK, D)
    bf16* sQ = sV + BLOCK * S;                 // 2 x (QN, D)
    bf16* sdO = sQ + 2 * QN * S;               // 2 x (QN, D)
    float* sL = reinterpret_cast<float*>(sdO + 2 * QN * S);  // 2 x (QN): lse in log2 units
    float* sD = sL + 2 * QN;                                  // 2 x (QN)
    const int bh = blockIdx.x, b = bh / NH, h = bh % NH, C = NH * D;
    const int k0 = blockIdx.y * BLOCK;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4;
    const bf16 *qh = q.at(b, h), *dh = dout.at(b, h);
    const float *lse_h = lse + (size_t)bh * T, *Dv_h = Dv + (size_t)bh * T;
    const float sl2 = scale * LOG2E;

    const int first = k0 / QN, tiles = (T + QN - 1) / QN;  // causal: no query tile before the diagonal
    load_tile<D, BLOCK, RL>(sK, k.at(b, h), k.row, k0, T, rope);
    load_tile<D, BLOCK, false>(sV, v.at(b, h), v.row, k0, T, rope);
    load_inner<D, QN, RL, WG>(sQ, qh, q.row, first * QN, T, rope);
    load_inner<D, QN, false, WG>(sdO, dh, dout.row, first * QN, T, rope);
    load_row_stats<QN>(sL, sD, lse_h, Dv_h, first * QN, T);
    cp_async_commit();
    const int key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
    float dk[D / 8][4] = {}, dv[D / 8][4] = {};
    for (int i = first; i < tiles; i++) {
        const int buf = (i - first) & 1;
        if (i + 1 < tiles) {  // into the other buffer, which every warp left at the last barrier
            const int nb = buf ^ 1;
            load_inner<D, QN, RL, WG>(sQ + nb * QN * S, qh, q.row, (i + 1) * QN, T, rope);
            load_inner<D, QN, false, WG>(sdO + nb * QN * S, dh, dout.row, (i + 1) * QN, T, rope);
            load_row_stats<QN>(sL + nb * QN, sD + nb * QN, lse_h, Dv_h, (i + 1) * QN, T);
            cp_async_commit();
            cp_async_wait<1>();  // all but tile i+1
        } else {
            cp_async_wait<0>();
        }
        if constexpr (WG) fence_proxy_async();  // the copies, for wgmma's reads
        __syncthreads();  // tile i in smem for every warp
        const bf16 *cQ = sQ + buf * QN * S, *cdO = sdO + buf * QN * S;
        const float *cL = sL + buf * QN, *cD = sD + buf * QN;
        float s[QN / 8][4] = {}, dp[QN / 8][4] = {};
        if constexpr (WG) {  // A fragments reloaded each step: fewer live registers
            uint32_t f[D / 16][4];
            load_a_rows<D>(f, sK);
            wgmma_nt<QN, D>(s, f, cQ);
            load_a_rows<D>(f, sV);
            wgmma_nt<QN, D>(dp, f, cdO);
        } else {
            mma_ss_nt<QN / 8, D>(s, sK + warp * 16 * S, S, cQ, S);
            mma_ss_nt<QN / 8, D>(dp, sV + warp * 16 * S, S, cdO, S);
        }
        probs_score_grads_t<QN / 8>(s, dp, i * QN, key, T, sl2, cL, cD);
        uint32_t a[QN / 16][4];
        acc_to_a<QN / 8>(a, s);
        if constexpr (WG) wgmma_nn<D, QN>(dv, a, cdO);
        else mma_rs_nn<D / 8, QN>(dv, a, cdO, S);
        acc_to_a<QN / 8>(a, dp);
        if constexpr (WG) wgmma_nn<D, QN>(dk, a, cQ);
        else mma_rs_nn<D / 8, QN>(dk, a, cQ, S);
        __syncthreads();  // every warp done with tile i before it is overwritten by i+2
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (key[r] >= T) continue;
        bf16* dst = dqkv + ((size_t)b * T + key[r]) * 3 * C + h * D;
        store_row<D, R != Rope::none>(dst + C, dk, r, key[r], scale, rope);
        store_row<D, false>(dst + 2 * C, dv, r, key[r], 1.0f, rope);
    }
}

// Q (MT tiles of 16 rows per warp) and single K, V tiles; the wgmma kernel double-buffers K and V
template <int D, int QW, bool WG, int MT = 1>
constexpr size_t forward_smem() {
    return (16 * QW * MT + (WG ? 4 : 2) * BLOCK) * ROW_STRIDE<D> * sizeof(bf16);
}
template <int D> constexpr size_t dq_smem() { return (2 * BLOCK + 4 * INNER_BWD<D>) * ROW_STRIDE<D> * sizeof(bf16); }
template <int D> constexpr size_t dkv_smem() { return dq_smem<D>() + 4 * INNER_BWD<D> * sizeof(float); }

// Kernels over 48 KiB of dynamic shared memory must say so once.
template <class Kernel>
void allow_smem(Kernel* k, size_t bytes) {
    cudaCheck(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <Rope R>
using RopeC = std::integral_constant<Rope, R>;
// Calls fn(integral_constant<int, D>, RopeC<mode>) for the runtime head size and mode.
// Calls fn(integral_constant<int, D>) for the runtime head size.
template <class Fn>
void with_head_size(int hs, Fn&& fn) {
    if (hs == 48) fn(std::integral_constant<int, 48>{});
    else if (hs == 64) fn(std::integral_constant<int, 64>{});
    else fn(std::integral_constant<int, 128>{});
}
// The head sizes of the wgmma and TMA kernels: whole 64-channel boxes (TMA) and whole
// 4-chunk pieces of core matrices (load_tile_cm).
constexpr bool hopper_head(int hs) { return hs % 64 == 0; }
template <class Fn>
void dispatch(int hs, Rope mode, Fn&& fn) {
    with_head_size(hs, [&](auto d) {
        if (mode == Rope::none) fn(d, RopeC<Rope::none>{});
        else if (mode == Rope::prepass) fn(d, RopeC<Rope::prepass>{});
        else fn(d, RopeC<Rope::on_load>{});
    });
}

// hopper: the wgmma or TMA kernels are asked for
int check_flash(const char* op, int B, int T, int C, int NH, float rope_theta, bool hopper,
                std::initializer_list<const void*> ptrs) {
    LNS_CHECK(B >= 1 && T >= 1 && NH >= 1 && C >= NH && C % NH == 0, "%s: bad shape B=%d T=%d C=%d NH=%d", op, B, T, C,
              NH);
    const int hs = C / NH;
    LNS_CHECK(hs == 48 || hs == 64 || hs == 128,
              "%s: no flash kernel for head size %d (48, 64 or 128); use --attention naive", op, hs);
    LNS_CHECK(!hopper || hopper_head(hs), "%s: no wgmma or TMA kernels for head size %d (64 or 128)", op, hs);
    LNS_CHECK(!(rope_theta > 0) || hs / 2 <= MAX_ROPE_PAIRS, "%s: head size %d too large for RoPE", op, hs);
    LNS_CHECK((size_t)B * NH <= (size_t)INT32_MAX && ceil_div(T, BLOCK) <= 65535 && (size_t)B * T * NH <= INT32_MAX,
              "%s: B=%d NH=%d T=%d exceed the kernels' grid", op, B, NH, T);
    for (const void* p : ptrs) LNS_CHECK(aligned16(p), "%s: tensors must be 16-byte aligned", op);
    return hs;
}


// q, k, v (part 0, 1, 2) of qkv (B,T,3C), or dout (B,T,C) with part 0 and ld = C
HeadView token_rows(const bf16* x, int part, int T, int C, int NH, int ld) {
    return {x + (size_t)part * C, (size_t)T * ld, (size_t)(C / NH), (size_t)ld};
}
// a head-major (B,NH,T,D) tensor
HeadView head_rows(const bf16* x, int T, int C, int NH) {
    const size_t D = C / NH;
    return {x, (size_t)NH * T * D, (size_t)T * D, D};
}

#ifndef LNS_CUDA_EMU
// 1 in a device image built for sm_90a (the wgmma kernels are real there, __trap elsewhere)
__device__ int flash_wgmma_built = LNS_SM90A;
// Whether the image the runtime loaded for the current device has the wgmma kernels.
bool wgmma_built() {
    int built = 0;
    cudaCheck(cudaMemcpyFromSymbol(&built, flash_wgmma_built, sizeof built));
    return built == 1;
}
#else
bool wgmma_built() { return true; }  // the emulator runs the WG kernels
#endif

Rope rope_mode(float theta, bool on_load) {
    return !(theta > 0) ? Rope::none : on_load ? Rope::on_load : Rope::prepass;
}

// q, k and v as the kernels read them: from qkv, or (Rope::prepass) q and k rotated
// into a head-major copy in SCRATCH_ATTN_C first.
void flash_inputs(HeadView (&qkv_v)[3], const bf16* qkv, int B, int T, int C, int NH, const float2* rope,
                  Rope mode) {
    for (int part = 0; part < 3; part++) qkv_v[part] = token_rows(qkv, part, T, C, NH, 3 * C);
    if (mode != Rope::prepass) return;
    const size_t BTC = (size_t)B * T * C;
    bf16* qk = (bf16*)cuda_scratch(SCRATCH_ATTN_C, 2 * BTC * sizeof(bf16));
    qkv_permute(qk, qkv, B, T, C, NH, rope, 2);
    qkv_v[0] = head_rows(qk, T, C, NH), qkv_v[1] = head_rows(qk + BTC, T, C, NH);
}

// The TMA view of q, k, v or dout: dims (channel, and the head, row and batch dimensions
// in the order of their strides: nested, as the driver wants them), boxes of 64 channels
// by `rows` rows. A head-major view (the rotated copy) has rows inside heads, rows of qkv
// or dout have heads inside rows; the kernels take the order as qk_head_major.
CUtensorMap tma_view(const HeadView& v, bool head_major, int B, int T, int NH, int D, uint32_t rows) {
    const uint64_t e = sizeof(bf16);
    if (head_major) return tensor_map_bf16(v.p, {(uint64_t)D, (uint64_t)T, (uint64_t)NH, (uint64_t)B},
                                               {v.row * e, v.head * e, v.batch * e}, {64, rows, 1, 1});
    return tensor_map_bf16(v.p, {(uint64_t)D, (uint64_t)NH, (uint64_t)T, (uint64_t)B},
                           {v.head * e, v.row * e, v.batch * e}, {64, 1, rows, 1});
}

// The launch sequences, used by cuda_backend.
// wgmma: the WG kernels (the caller checks wgmma_built() and a head size of 64 or 128);
// RoPE is then rotated first.
// warps: 4 or 8 per forward block (64 or 128 query rows); warp_rows: 16, or 32 (two
// 16-row tiles per warp, mma.sync with 4 warps only: 128 query rows). tma: flash_forward_tma_kernel
// (sm_90a too; RoPE rotated first, warps and wgmma ignored), on one block per SM, or
// (tma_block_per_work) as many blocks as works, so that the GPU's own block scheduler
// runs them.
void flash_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH, float rope_theta,
                   bool rope_on_load, bool wgmma, int warps, bool tma = false, bool tma_block_per_work = false,
                   int warp_rows = 16) {
    const int hs = check_flash("attention_flash_forward", B, T, C, NH, rope_theta, wgmma || tma, {out, qkv});
    const float scale = 1.0f / std::sqrt((float)hs);
    const Rope mode = rope_mode(rope_theta, rope_on_load && !wgmma && !tma);
    const float2* rope = rope_table(T, hs, rope_theta);  // nullptr without RoPE
    HeadView in[3];
    flash_inputs(in, qkv, B, T, C, NH, rope, mode);
    if (mode != Rope::on_load) rope = nullptr;  // the tiles are plain copies
    LNS_CHECK(warps == 4 || warps == 8, "attention_flash_forward: %d warps per block (4 or 8)", warps);
    LNS_CHECK(warp_rows == 16 || (warp_rows == 32 && warps == 4 && !wgmma),
              "attention_flash_forward: %d rows per warp with %d warps%s (16, or 32 with 4 warps and mma.sync)",
              warp_rows, warps, wgmma ? " on wgmma" : "");
    if (tma) {
        const bool qk_head_major = mode == Rope::prepass;  // the rotated copy
        const CUtensorMap tq = tma_view(in[0], qk_head_major, B, T, NH, hs, 128),
                          tk = tma_view(in[1], qk_head_major, B, T, NH, hs, 128),
                          tv = tma_view(in[2], false, B, T, NH, hs, 128);
        const int works = B * NH * ceil_div(T, tma_fwd::BM);  // (head, query block) pairs
        static const int sms = [] {  // the backend drives one device per process
            int device = 0, n = 0;
            cudaCheck(cudaGetDevice(&device));
            cudaCheck(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
            return n;
        }();
        const int grid = tma_block_per_work ? works : std::min(works, sms);
        with_head_size(hs, [&](auto d) {
            constexpr int D = decltype(d)::value;
            if constexpr (hopper_head(D)) {  // (check_flash)
                auto* fwd = flash_forward_tma_kernel<D>;
                static bool once = (allow_smem(fwd, tma_fwd::smem<D>()), true);
                (void)once;
                LNS_LAUNCH(fwd, grid, tma_fwd::THREADS, tma_fwd::smem<D>(), out, lse, tq, tk, tv, qk_head_major, B,
                           T, NH, scale, (int)!tma_block_per_work);
            }
        });
        cudaCheckLaunch();
        return;
    }
    dispatch(hs, mode, [&](auto d, auto r) {
        constexpr int D = decltype(d)::value;
        auto launch = [&](auto wg, auto qw, auto mt) {
            constexpr int QW = decltype(qw)::value, MT = decltype(mt)::value;
            constexpr bool WG = decltype(wg)::value;
            constexpr size_t smem = forward_smem<D, QW, WG, MT>();
            const dim3 grid(B * NH, ceil_div(T, 16 * QW * MT));
            if constexpr (WG) {
                static_assert(MT == 1, "the wgmma forward owns 16 rows per warp");
                auto* fwd = flash_forward_wg_kernel<D, QW>;
                static bool once = (allow_smem(fwd, smem), true);
                (void)once;
                LNS_LAUNCH(fwd, grid, 32 * QW, smem, out, lse, in[0], in[1], in[2], T, NH, scale);
            } else {
                auto* fwd = flash_forward_kernel<D, QW, decltype(r)::value == Rope::on_load, MT>;
                static bool once = (allow_smem(fwd, smem), true);
                (void)once;
                LNS_LAUNCH(fwd, grid, 32 * QW, smem, out, lse, in[0], in[1], in[2], rope, T, NH, scale);
            }
        };
        using one = std::integral_constant<int, 1>;
        auto with_warps = [&](auto wg) {
            if (warps == 8) return launch(wg, std::integral_constant<int, 8>{}, one{});
            if constexpr (!decltype(wg)::value)
                if (warp_rows == 32) return launch(wg, std::integral_constant<int, 4>{}, std::integral_constant<int, 2>{});
            launch(wg, std::integral_constant<int, 4>{}, one{});
        };
        if constexpr (decltype(r)::value == Rope::on_load || !hopper_head(D))
            with_warps(std::false_type{});  // wgmma: plain tiles of 64 or 128 channels only
        else if (wgmma) with_warps(std::true_type{});
        else with_warps(std::false_type{});
    });
    cudaCheckLaunch();
}

void flash_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int T,
                    int C, int NH, float rope_theta, bool rope_on_load, bool wgmma, bool tma = false,
                    bool tma_dq_kernel = false, int tma_head_group = 1) {
    const int hs =
        check_flash("attention_flash_backward", B, T, C, NH, rope_theta, wgmma || tma, {dqkv, dout, qkv, out});
    const float scale = 1.0f / std::sqrt((float)hs);
    const Rope mode = rope_mode(rope_theta, rope_on_load && !wgmma && !tma);
    const float2* rope = rope_table(T, hs, rope_theta);  // also for dq, dk to rotate back
    HeadView in[3];
    flash_inputs(in, qkv, B, T, C, NH, rope, mode);
    const HeadView dout_v = token_rows(dout, 0, T, C, NH, C);
    const int rows = B * T * NH;
    float* Dv = (float*)cuda_scratch(SCRATCH_ATTN_B, (size_t)rows * sizeof(float));  // (B,NH,T)
    with_head_size(hs, [&](auto d) {
        auto* dvec = flash_dvec_kernel<decltype(d)::value>;
        LNS_LAUNCH(dvec, ceil_div(rows, WARPS), THREADS, 0, Dv, dout, out, T, NH, rows);
    });
    cudaCheckLaunch();
    if (tma) {
        using tma_bwd::BI, tma_bwd::BM;
        // the dq kernel's own rows (q, dout) in 128-row boxes and its loop tiles (k, v) in 64;
        // the dk/dv kernel the other way round
        const bool qk_head_major = mode == Rope::prepass;  // the rotated copy
        auto view = [&](const HeadView& v, bool hm, uint32_t rows) { return tma_view(v, hm, B, T, NH, hs, rows); };
        const CUtensorMap q_out = view(in[0], qk_head_major, BM), q_in = view(in[0], qk_head_major, BI),
                          k_out = view(in[1], qk_head_major, BM), k_in = view(in[1], qk_head_major, BI),
                          v_out = view(in[2], false, BM), v_in = view(in[2], false, BI),
                          do_out = view(dout_v, false, BM), do_in = view(dout_v, false, BI);
        const float2* rope_back = mode == Rope::none ? nullptr : rope;
        const tma_bwd::Args dq_args{q_out, do_out, k_in, v_in, dqkv, lse, Dv, rope_back, qk_head_major, T, NH, scale,
                                    nullptr, nullptr, tma_head_group};
        tma_bwd::Args dkv_args = dq_args;
        dkv_args.q = q_in, dkv_args.dout = do_in, dkv_args.k = k_out, dkv_args.v = v_out;
        const int tiles = ceil_div(T, BI), blocks = ceil_div(T, BM);
        with_head_size(hs, [&](auto d) {
            constexpr int D = decltype(d)::value;
            if constexpr (hopper_head(D)) {  // (check_flash)
                if (!tma_dq_kernel) {  // the single pass, then dq's rounding
                    const size_t acc_bytes = (size_t)B * NH * tiles * BI * D * sizeof(float);
                    const size_t sem_bytes = (1 + (size_t)B * NH * tiles) * sizeof(int);  // the ticket, the counters
                    char* ws = (char*)cuda_scratch(SCRATCH_ATTN_DQ, acc_bytes + sem_bytes);
                    dkv_args.dq_acc = (float*)ws, dkv_args.dq_sem = (int*)(ws + acc_bytes);
                    cudaCheck(cudaMemsetAsync(dkv_args.dq_sem, 0, sem_bytes, g_stream));
                    auto* dkv = flash_dkv_tma_kernel<D, true>;
                    constexpr size_t smem = tma_bwd::smem<D, true>();
                    static bool once = (allow_smem(dkv, smem), true);
                    (void)once;
                    LNS_LAUNCH(dkv, B * NH * blocks, tma_bwd::THREADS, smem, dkv_args);
                    cudaCheckLaunch();
                    auto* convert = flash_dq_convert_kernel<D>;
                    LNS_LAUNCH(convert, dim3(B * NH, tiles), 128, 0, dqkv, dkv_args.dq_acc, rope_back, T, NH, scale);
                    return;
                }
                const dim3 grid(B * NH, blocks);
                auto* dq = flash_dq_tma_kernel<D>;
                auto* dkv = flash_dkv_tma_kernel<D, false>;
                static bool once = (allow_smem(dq, tma_bwd::smem<D>()), allow_smem(dkv, tma_bwd::smem<D>()), true);
                (void)once;
                LNS_LAUNCH(dq, grid, tma_bwd::THREADS, tma_bwd::smem<D>(), dq_args);
                cudaCheckLaunch();
                LNS_LAUNCH(dkv, grid, tma_bwd::THREADS, tma_bwd::smem<D>(), dkv_args);
            }
        });
        cudaCheckLaunch();
        return;
    }
    const dim3 grid(B * NH, ceil_div(T, BLOCK));
    dispatch(hs, mode, [&](auto d, auto r) {
        constexpr int D = decltype(d)::value;
        constexpr Rope R = decltype(r)::value;
        auto launch = [&](auto wg) {
            constexpr bool WG = decltype(wg)::value;
            auto* dq = flash_dq_kernel<D, R, WG>;
            auto* dkv = flash_dkv_kernel<D, R, WG>;
            static bool once = (allow_smem(dq, dq_smem<D>()), allow_smem(dkv, dkv_smem<D>()), true);
            (void)once;
            LNS_LAUNCH(dq, grid, THREADS, dq_smem<D>(), dqkv, in[0], in[1], in[2], dout_v, lse, Dv, rope, T, NH,
                       scale);
            cudaCheckLaunch();
            LNS_LAUNCH(dkv, grid, THREADS, dkv_smem<D>(), dqkv, in[0], in[1], in[2], dout_v, lse, Dv, rope, T, NH,
                       scale);
        };
        if constexpr (R == Rope::on_load || !hopper_head(D)) launch(std::false_type{});  // wgmma: plain tiles only
        else if (wgmma) launch(std::true_type{});
        else launch(std::false_type{});
    });
    cudaCheckLaunch();
}

}  // namespace
