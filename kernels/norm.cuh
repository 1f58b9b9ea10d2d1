// Fused residual add + LayerNorm/RMSNorm + LayerNorm Scaling on the GPU.
//
// Forward: a warp per row (C <= 1024) or a block per row; the residual is rounded
// to storage first and the stored value is what gets normalised, so forward and
// backward (which only sees the stored res) agree. Statistics in fp32.
//
// Backward, deterministic without atomics:
//  1. residual_norm_backward_kernel: block g owns rows [g*R, (g+1)*R) (R depends on
//     N only). A warp per row computes the row sums; then threads own channel
//     chunks, walk the block's rows in order, write dx/dy and keep dw/db sums in
//     registers, combined across row groups in a fixed order through shared memory,
//     and written as fp32 partials (one 2C row per block) to SCRATCH_NORM_PARTIALS.
//  2. norm_param_grad_kernel: per channel, the partials summed in block order, then
//     added into dw/db.
// The grid, the row split and every reduction order depend only on (N, C), never
// on the device or on timing: the same inputs give the same bits.
// The kernels and their launches, used by norm.cu.
#pragma once
#include <algorithm>
#include <cstdint>

#include "common/check.h"
#include "kernels/cuda_common.cuh"

namespace {
constexpr int NORM_FWD_THREADS = 256;  // warp-per-row mode: 8 rows per block
constexpr int NORM_WARP_MAX_C = 1024;  // widest row a single warp takes in forward
constexpr int NORM_BWD_THREADS = 256;
constexpr int NORM_BWD_MIN_ROWS = 16;   // rows per block in backward, at least
constexpr int NORM_BWD_MAX_ROWS = 256;  // and at most (shared row statistics)
constexpr int NORM_BWD_TARGET_BLOCKS = 1024;
constexpr int NORM_RED_SLICES = 8;  // norm_param_grad_kernel: warps per block, each a slice of the partials


// Sum over the threads that share a row: the warp, or the whole block.
template <bool WARP>
__device__ __forceinline__ float row_sum(float v, float* shared) {
    if constexpr (WARP) return warp_sum(v);
    else return block_sum(v, shared);
}

// WARP: warp w of block b normalises row b*(blockDim/32) + w; else block b row b.
// Every pass walks the row with the same thread -> element map, so a thread only
// rereads the res values it wrote itself.
template <int VEC, bool WARP>
__global__ void __launch_bounds__(1024)
    residual_norm_forward_kernel(floatX* res, floatX* out, float* mean, float* rstd, const floatX* x,
                                 const floatX* y, float alpha, const floatX* w, const floatX* b, int N, int C,
                                 bool layernorm, float eps, NormScheme scheme, int layer) {
    __shared__ float shared[32];
    int row, tid, nthreads;
    if constexpr (WARP) {
        row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
        tid = threadIdx.x % 32;
        nthreads = 32;
        if (row >= N) return;  // the whole warp: no block-wide barrier in this mode
    } else {
        row = blockIdx.x;
        tid = threadIdx.x;
        nthreads = blockDim.x;
    }
    const float s = depth_scale(scheme, layer);
    const size_t off = (size_t)row * C;
    const floatX* xr = x + off;
    const floatX* yr = y ? y + off : nullptr;
    floatX* rr = res ? res + off : nullptr;
    const floatX* src = rr ? rr : xr;  // the row that is normalised

    // pass 1: res = alpha*x + y, rounded to storage; the row sum of what was stored
    float sum = 0.0f;
    for (int c = tid * VEC; c < C; c += nthreads * VEC) {
        float v[VEC];
        load_f<VEC>(v, xr + c);
        if (rr) {
            float yv[VEC];
            if (yr) load_f<VEC>(yv, yr + c);
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                // _rn: no FMA contraction, the same rounding as the CPU's alpha*x + y
                const float r = __fadd_rn(__fmul_rn(alpha, v[k]), yr ? yv[k] : 0.0f);
                v[k] = to_float(from_float<floatX>(r));
            }
            store_f<VEC>(rr + c, v);
        }
#pragma unroll
        for (int k = 0; k < VEC; k++) sum += v[k];
    }
    const float m = layernorm ? row_sum<WARP>(sum, shared) / C : 0.0f;

    // pass 2: variance about the mean (two-pass, no cancellation)
    float ss = 0.0f;
    for (int c = tid * VEC; c < C; c += nthreads * VEC) {
        float v[VEC];
        load_f<VEC>(v, src + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) ss += (v[k] - m) * (v[k] - m);
    }
    const float var = row_sum<WARP>(ss, shared) / C;
    const float rs = 1.0f / sqrtf(var + eps);

    // pass 3: out = (xhat * w + b) * s
    for (int c = tid * VEC; c < C; c += nthreads * VEC) {
        float v[VEC], wv[VEC], o[VEC];
        load_f<VEC>(v, src + c);
        load_f<VEC>(wv, w + c);
        float bv[VEC];
        if (b) load_f<VEC>(bv, b + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) o[k] = ((v[k] - m) * rs * wv[k] + (b ? bv[k] : 0.0f)) * s;
        store_f<VEC>(out + off + c, o);
    }
    if (tid == 0) {
        if (mean) mean[row] = m;
        rstd[row] = rs;
    }
}

template <int VEC, bool WARP>
void launch_forward(int blocks, int threads, floatX* res, floatX* out, float* mean, float* rstd, const floatX* x,
                    const floatX* y, float alpha, const floatX* w, const floatX* b, int N, int C, bool layernorm,
                    float eps, NormScheme scheme, int layer) {
    auto* kernel = residual_norm_forward_kernel<VEC, WARP>;
    LNS_LAUNCH(kernel, blocks, threads, 0, res, out, mean, rstd, x, y, alpha, w, b, N, C, layernorm, eps, scheme,
               layer);
    cudaCheckLaunch();
}

// Backward, phase 1. Block g: rows [g*rows_per_block, ...). See the file comment.
template <int VEC>
__global__ void __launch_bounds__(NORM_BWD_THREADS)
    residual_norm_backward_kernel(floatX* dx, floatX* dy, float* partials, const floatX* dout,
                                  const floatX* dres, const floatX* res, const floatX* w, const float* mean,
                                  const float* rstd, float alpha, int N, int C, int rows_per_block,
                                  bool layernorm, NormScheme scheme, int layer) {
    __shared__ float row_m[NORM_BWD_MAX_ROWS], row_rs[NORM_BWD_MAX_ROWS];
    __shared__ float row_mg[NORM_BWD_MAX_ROWS], row_mgx[NORM_BWD_MAX_ROWS];
    __shared__ float comb_w[NORM_BWD_THREADS * VEC], comb_b[NORM_BWD_THREADS * VEC];

    const float s = depth_scale(scheme, layer);
    const int row0 = blockIdx.x * rows_per_block;
    const int nrows = min(rows_per_block, N - row0);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;

    // 1a. per row, a warp each: mean(g) and mean(g * xhat) with g = dout * s * w
    for (int i = warp; i < nrows; i += nwarps) {
        const int n = row0 + i;
        const size_t off = (size_t)n * C;
        const float m = layernorm ? mean[n] : 0.0f, rs = rstd[n];
        float sg = 0.0f, sgx = 0.0f;
        for (int c = lane * VEC; c < C; c += 32 * VEC) {
            float d[VEC], r[VEC], wv[VEC];
            load_f<VEC>(d, dout + off + c);
            load_f<VEC>(r, res + off + c);
            load_f<VEC>(wv, w + c);
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                const float g = d[k] * s * wv[k];
                sg += g;
                sgx += g * ((r[k] - m) * rs);
            }
        }
        sg = warp_sum(sg);
        sgx = warp_sum(sgx);
        if (lane == 0) {
            row_m[i] = m;
            row_rs[i] = rs;
            row_mg[i] = layernorm ? sg / C : 0.0f;
            row_mgx[i] = sgx / C;
        }
    }
    // Every read of the block's rows in 1a is done before any write in 1b: dx may
    // alias dout or dres. In 1b each element is read, then written, by one thread.
    __syncthreads();

    // 1b. threads own channel chunks; a row group walks its rows in ascending order.
    const int chunks = C / VEC;
    const int groups = chunks >= (int)blockDim.x ? 1 : (int)blockDim.x / chunks;
    const int group = groups == 1 ? 0 : (int)threadIdx.x / chunks;
    const int j0 = groups == 1 ? (int)threadIdx.x : (int)threadIdx.x % chunks;
    const int jstride = groups == 1 ? (int)blockDim.x : chunks;  // groups > 1: one chunk each
    float* pw = partials + (size_t)blockIdx.x * 2 * C;
    float* pb = pw + C;
    for (int j = j0; j < chunks && group < groups; j += jstride) {
        const int c = j * VEC;
        float wv[VEC], aw[VEC], ab[VEC];
        load_f<VEC>(wv, w + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) aw[k] = ab[k] = 0.0f;
        for (int i = group; i < nrows; i += groups) {
            const size_t idx = (size_t)(row0 + i) * C + c;
            const float m = row_m[i], rs = row_rs[i], mg = row_mg[i], mgx = row_mgx[i];
            float d[VEC], r[VEC], dr0[VEC], dr[VEC];
            load_f<VEC>(d, dout + idx);
            load_f<VEC>(r, res + idx);
            if (dres) load_f<VEC>(dr0, dres + idx);
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                const float ds = d[k] * s;
                const float xhat = (r[k] - m) * rs;
                aw[k] += ds * xhat;
                ab[k] += ds;
                dr[k] = rs * (ds * wv[k] - mg - xhat * mgx) + (dres ? dr0[k] : 0.0f);
            }
            if (dy) store_f<VEC>(dy + idx, dr);
#pragma unroll
            for (int k = 0; k < VEC; k++) dr[k] *= alpha;
            store_f<VEC>(dx + idx, dr);
        }
        if (groups == 1) {
#pragma unroll
            for (int k = 0; k < VEC; k++) pw[c + k] = aw[k], pb[c + k] = ab[k];
        } else {
#pragma unroll
            for (int k = 0; k < VEC; k++) comb_w[group * C + c + k] = aw[k], comb_b[group * C + c + k] = ab[k];
        }
    }
    if (groups > 1) {  // block-uniform
        __syncthreads();
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float tw = 0.0f, tb = 0.0f;
            for (int g = 0; g < groups; g++) tw += comb_w[g * C + c], tb += comb_b[g * C + c];
            pw[c] = tw;
            pb[c] = tb;
        }
    }
}

// Backward, phase 2: column col of the (G, 2C) partials ([dw | db] per block) is
// summed over blocks in order: warp k sums a contiguous slice of blocks, then
// the slices are added in order.
__global__ void __launch_bounds__(32 * NORM_RED_SLICES)
    norm_param_grad_kernel(floatX* dw, floatX* db, const float* partials, int G, int C) {
    __shared__ float sh[NORM_RED_SLICES][32];
    const int lane = threadIdx.x % 32, slice = threadIdx.x / 32;
    const int col = blockIdx.x * 32 + lane;
    const int per = (G + NORM_RED_SLICES - 1) / NORM_RED_SLICES;
    const int g0 = slice * per, g1 = min(G, g0 + per);
    float acc = 0.0f;
    if (col < 2 * C)
        for (int g = g0; g < g1; g++) acc += partials[(size_t)g * 2 * C + col];
    sh[slice][lane] = acc;
    __syncthreads();
    if (slice == 0 && col < 2 * C) {
        float t = 0.0f;
#pragma unroll
        for (int k = 0; k < NORM_RED_SLICES; k++) t += sh[k][lane];
        floatX* dst = col < C ? (dw ? dw + col : nullptr) : (db ? db + (col - C) : nullptr);
        if (dst) *dst = from_float<floatX>(to_float(*dst) + t);
    }
}

void norm_forward(floatX* res, floatX* out, float* mean, float* rstd, const floatX* x, const floatX* y, float alpha,
                  const floatX* w, const floatX* b, int N, int C, NormKind kind, float eps, NormScheme scheme,
                  int layer) {
    LNS_CHECK(res != nullptr || (y == nullptr && alpha == 1.0f), "res may be omitted only for a plain norm");
    if (N <= 0 || C <= 0) return;
    const bool ln = kind == NormKind::layernorm;
    constexpr int V8 = x128::size;
    const bool vec = C % V8 == 0 && aligned16(res) && aligned16(out) && aligned16(x) && aligned16(y) &&
                     aligned16(w) && aligned16(b);
    if (C <= NORM_WARP_MAX_C) {
        const int blocks = ceil_div(N, NORM_FWD_THREADS / 32);
        if (vec)
            launch_forward<V8, true>(blocks, NORM_FWD_THREADS, res, out, mean, rstd, x, y, alpha, w, b, N, C, ln, eps,
                                     scheme, layer);
        else
            launch_forward<1, true>(blocks, NORM_FWD_THREADS, res, out, mean, rstd, x, y, alpha, w, b, N, C, ln, eps,
                                    scheme, layer);
    } else {
        const int chunks = vec ? C / V8 : C;  // > 128 here
        const int threads = std::min(1024, (chunks + 31) / 32 * 32);
        if (vec)
            launch_forward<V8, false>(N, threads, res, out, mean, rstd, x, y, alpha, w, b, N, C, ln, eps, scheme,
                                      layer);
        else
            launch_forward<1, false>(N, threads, res, out, mean, rstd, x, y, alpha, w, b, N, C, ln, eps, scheme, layer);
    }
}

void norm_backward(floatX* dx, floatX* dy, floatX* dw, floatX* db, const floatX* dout, const floatX* dres,
                   const floatX* res, const floatX* w, const float* mean, const float* rstd, float alpha, int N, int C,
                   NormKind kind, NormScheme scheme, int layer) {
    if (N <= 0 || C <= 0) return;
    const bool ln = kind == NormKind::layernorm;
    LNS_CHECK(!ln || mean != nullptr, "LayerNorm backward needs the saved mean");
    const int rows = std::min(NORM_BWD_MAX_ROWS, std::max(NORM_BWD_MIN_ROWS, ceil_div(N, NORM_BWD_TARGET_BLOCKS)));
    const int G = ceil_div(N, rows);
    float* partials = (float*)cuda_scratch(SCRATCH_NORM_PARTIALS, (size_t)G * 2 * C * sizeof(float));
    constexpr int V8 = x128::size;
    const bool vec = C % V8 == 0 && aligned16(dx) && aligned16(dy) && aligned16(dout) && aligned16(dres) &&
                     aligned16(res) && aligned16(w);
    auto* rows_kernel = vec ? residual_norm_backward_kernel<V8> : residual_norm_backward_kernel<1>;
    LNS_LAUNCH(rows_kernel, G, NORM_BWD_THREADS, 0, dx, dy, partials, dout, dres, res, w, mean, rstd, alpha, N, C,
               rows, ln, scheme, layer);
    cudaCheckLaunch();
    auto* param_kernel = norm_param_grad_kernel;
    LNS_LAUNCH(param_kernel, ceil_div(2L * C, 32), 32 * NORM_RED_SLICES, 0, dw, db, partials, G, C);
    cudaCheckLaunch();
}

}  // namespace
