// Single products through the PTX wrappers and the flash kernels' fragment helpers, on
// known inputs. test/test_ptx_probe.cpp runs them on the GPU and on the CPU emulator
// (test/emu) and compares both with a host GEMM: where the emulator's reading of the PTX
// ISA (ldmatrix, mma.sync, cp.async zero-fill, wgmma descriptors and layouts) differs
// from the hardware, it shows here, in one instruction, rather than as a wrong attention
// output.
#pragma once
#include "kernels/attention_flash.cuh"

namespace {

// A warp's 16 x 8NT accumulator tile to rows row0.. of a row-major fp32 matrix.
template <int NT>
__device__ __forceinline__ void store_acc(float* dst, int ld, const float (&acc)[NT][4], int row0) {
    const int lane = threadIdx.x % 32, g = lane / 4, tig = lane % 4;
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dst[(row0 + g + 8 * (e / 2)) * ld + nt * 8 + tig * 2 + e % 2] = acc[nt][e];
}

// c_nt = A B_nt^T and c_nn = A B_nn, all 16 x 16 row-major; rows of A at or beyond
// a_rows arrive as zeros (cp.async with src-size 0). One warp multiplies.
__global__ void __launch_bounds__(THREADS) probe_mma_kernel(float* c_nt, float* c_nn, const bf16* a, const bf16* b_nt,
                                                            const bf16* b_nn, int a_rows) {
    constexpr int S = ROW_STRIDE<16>;
    unsigned char* smem = dynamic_smem();
    bf16* sA = reinterpret_cast<bf16*>(smem);
    bf16* sBt = sA + 16 * S;
    bf16* sBn = sBt + 16 * S;
    load_tile<16, 16, false>(sA, a, 16, 0, a_rows, nullptr);
    load_tile<16, 16, false>(sBt, b_nt, 16, 0, 16, nullptr);
    load_tile<16, 16, false>(sBn, b_nn, 16, 0, 16, nullptr);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    if (threadIdx.x >= 32) return;
    float nt[2][4] = {}, nn[2][4] = {};
    mma_ss_nt<2, 16>(nt, sA, S, sBt, S);
    uint32_t af[1][4];
    load_a(af[0], sA, S, 0);
    mma_rs_nn<2, 16>(nn, af, sBn, S);
    store_acc<2>(c_nt, 16, nt, 0);
    store_acc<2>(c_nn, 16, nn, 0);
}

// The flash kernels' two wgmma patterns as they issue them: s = A1 B1^T (64 x N over K
// channels, wgmma_nt) and o = A2 B2 (64 x DV over N rows, wgmma_nn); A1 64 x K, B1 N x K,
// A2 64 x N, B2 N x DV, all row-major. (N, K, DV): (64, 64, 64) the forward and backward
// at D = 64, (64, 128, 128) the forward at D = 128, (32, 128, 128) the backward at D = 128.
template <int N, int K, int DV>
__global__ void __launch_bounds__(THREADS) probe_wgmma_kernel(float* s_out, float* o_out, const bf16* a1,
                                                              const bf16* b1, const bf16* a2, const bf16* b2) {
#if defined(LNS_CUDA_EMU) || LNS_SM90A
    unsigned char* smem = dynamic_smem();
    bf16* sA1 = reinterpret_cast<bf16*>(smem);  // padded rows (ldmatrix)
    bf16* sB1 = sA1 + 64 * ROW_STRIDE<K>;         // core matrices
    bf16* sA2 = sB1 + N * K;                      // padded rows
    bf16* sB2 = sA2 + 64 * ROW_STRIDE<N>;         // core matrices
    load_tile<K, 64, false>(sA1, a1, K, 0, 64, nullptr);
    load_tile_cm<K, N>(sB1, b1, K, 0, N);
    load_tile<N, 64, false>(sA2, a2, N, 0, 64, nullptr);
    load_tile_cm<DV, N>(sB2, b2, DV, 0, N);
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    const int warp = threadIdx.x / 32;
    uint32_t f1[K / 16][4], f2[N / 16][4];
    load_a_rows<K>(f1, sA1);
    load_a_rows<N>(f2, sA2);
    float s[N / 8][4] = {}, o[DV / 8][4] = {};
    wgmma_nt<N, K>(s, f1, sB1);
    wgmma_nn<DV, N>(o, f2, sB2);
    store_acc<N / 8>(s_out, N, s, warp * 16);
    store_acc<DV / 8>(o_out, DV, o, warp * 16);
#elif defined(__CUDA_ARCH__)
    __trap();  // launched only on sm_90 devices
#endif
}

// The TMA forward's loads and products (flash_forward_tma_kernel): three tiles copied
// by TMA in the 128-byte swizzle (A: 128 rows of D of which rows >= a_rows lie outside the
// tensor and arrive as zeros; B1: 128 x D; B2: 128 x D), then s = A[64..127] B1^T (both
// by descriptor, tma_issue_nt) and o = A2 B2 (A2 64 x 128 from registers, B2 read
// N-major, tma_issue_nn), all row-major. Then the single-pass backward's dq product and
// its bulk copies (flash_dkv_tma_kernel<D, true>): u = A^T B2[:, D-64..] over A's 128
// rows and first 64 channels (A M-major, B2's last box N-major), stored to u_out by a
// bulk copy and then added to it by a bulk reduction: u_out = 2u (64 x 64). One warpgroup.
template <int D>
__global__ void __launch_bounds__(128)
    probe_tma_kernel(float* s_out, float* o_out, float* u_out, const __grid_constant__ CUtensorMap ta,
                     const __grid_constant__ CUtensorMap tb1, const __grid_constant__ CUtensorMap tb2, const bf16* a2) {
#if defined(LNS_CUDA_EMU) || LNS_SM90A
    using tma_fwd::TILE;
    unsigned char* smem = align_1024(dynamic_smem());
    uint64_t* bar = reinterpret_cast<uint64_t*>(smem + 3 * TILE<D>);
    if (threadIdx.x == 0) {
        mbar_init(bar, 1);
        fence_mbar_init();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        mbar_arrive_expect_tx(bar, 3 * TILE<D>);
        for (int c = 0; c < D / 64; c++) {
            tma_rows(smem + c * tma_fwd::BOX, &ta, bar, true, c, 0, 0, 0);
            tma_rows(smem + TILE<D> + c * tma_fwd::BOX, &tb1, bar, true, c, 0, 0, 0);
            tma_rows(smem + 2 * TILE<D> + c * tma_fwd::BOX, &tb2, bar, true, c, 0, 0, 0);
        }
    }
    mbar_wait(bar, 0);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    float s[16][4] = {};
    tma_issue_nt<D, 128>(s, smem + 64 * 128, tma_fwd::BOX, smem + TILE<D>, tma_fwd::BOX);
    wgmma_wait<0>();
    wgmma_fence_operands(s);
    uint32_t p[8][4];  // the warp's 16 rows of A2 as mma.sync A fragments
    auto pair = [&](int r, int c) {
        const bf16* x = a2 + (size_t)(warp * 16 + r) * 128 + c;
        uint32_t v;
        memcpy(&v, x, 4);
        return v;
    };
    for (int kk = 0; kk < 8; kk++) {
        p[kk][0] = pair(g, 16 * kk + 2 * t), p[kk][1] = pair(g + 8, 16 * kk + 2 * t);
        p[kk][2] = pair(g, 16 * kk + 2 * t + 8), p[kk][3] = pair(g + 8, 16 * kk + 2 * t + 8);
    }
    float o[D / 8][4] = {};
    tma_issue_nn<D, 128>(o, p, smem + 2 * TILE<D>, tma_fwd::BOX);
    wgmma_wait<0>();
    wgmma_fence_operands(o);
    wgmma_fence_operands(p);
    store_acc<16>(s_out, 128, s, warp * 16);
    store_acc<D / 8>(o_out, D, o, warp * 16);
    float u[8][4] = {};
    const unsigned char* b2_box = smem + 2 * TILE<D> + (D / 64 - 1) * tma_fwd::BOX;
    wgmma_fence();
    for (int kk = 0; kk < 8; kk++)
        wgmma_bf16_ss<1, 1>(u, wgmma_desc_sw128(smem + kk * 16 * 128, tma_fwd::BOX, 1024),
                            wgmma_desc_sw128(b2_box + kk * 16 * 128, tma_fwd::BOX, 1024));
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_fence_operands(u);
    float* su = reinterpret_cast<float*>(smem + 3 * TILE<D> + 128);  // 64 x 64, row-major
    for (int nt = 0; nt < 8; nt++)
        for (int e = 0; e < 4; e++) su[(warp * 16 + g + 8 * (e / 2)) * 64 + nt * 8 + 2 * t + e % 2] = u[nt][e];
    fence_proxy_async();
    __syncthreads();
    if (threadIdx.x == 0) {
        bulk_store(u_out, su, 64 * 64 * 4);
        bulk_commit();
        bulk_wait<0>();
        bulk_reduce_add(u_out, su, 64 * 64 * 4);
        bulk_commit();
        bulk_wait<0>();
    }
#elif defined(__CUDA_ARCH__)
    __trap();  // launched only on sm_90 devices
#endif
}

// A row-major (rows, D) bf16 matrix as a TMA tensor (D, rows, 1, 1) in 128-row boxes.
inline CUtensorMap probe_tensor(const bf16* x, int rows, int D) {
    const uint64_t row = (uint64_t)D * sizeof(bf16);
    return tensor_map_bf16(x, {(uint64_t)D, (uint64_t)rows, 1, 1}, {row, row * rows, row * rows}, {64, 128, 1, 1});
}

template <int D>
void probe_tma(float* s, float* o, float* u, const bf16* a, int a_rows, const bf16* b1, const bf16* b2,
               const bf16* a2) {
    auto* kernel = probe_tma_kernel<D>;
    const size_t bytes = 3 * tma_fwd::TILE<D> + 1024 + 128 + 64 * 64 * 4;  // tiles, alignment, barrier, u
    allow_smem(kernel, bytes);
    LNS_LAUNCH(kernel, 1, 128, bytes, s, o, u, probe_tensor(a, a_rows, D), probe_tensor(b1, 128, D),
               probe_tensor(b2, 128, D), a2);
    cudaCheckLaunch();
}

void probe_mma(float* c_nt, float* c_nn, const bf16* a, const bf16* b_nt, const bf16* b_nn, int a_rows) {
    auto* kernel = probe_mma_kernel;
    LNS_LAUNCH(kernel, 1, THREADS, 3 * 16 * ROW_STRIDE<16> * sizeof(bf16), c_nt, c_nn, a, b_nt, b_nn, a_rows);
    cudaCheckLaunch();
}

template <int N, int K, int DV>
void probe_wgmma(float* s, float* o, const bf16* a1, const bf16* b1, const bf16* a2, const bf16* b2) {
    auto* kernel = probe_wgmma_kernel<N, K, DV>;
    const size_t bytes = (64 * ROW_STRIDE<K> + N * K + 64 * ROW_STRIDE<N> + N * DV) * sizeof(bf16);
    allow_smem(kernel, bytes);  // 58 KiB at (64, 128, 128)
    LNS_LAUNCH(kernel, 1, THREADS, bytes, s, o, a1, b1, a2, b2);
    cudaCheckLaunch();
}

// Calls fn(integral_constant N, K, DV) for one of the probed shapes; false for others.
template <class Fn>
bool probe_wgmma_shape(int n, int k, int dv, Fn&& fn) {
    using std::integral_constant;
    if (n == 64 && k == 64 && dv == 64)
        fn(integral_constant<int, 64>{}, integral_constant<int, 64>{}, integral_constant<int, 64>{});
    else if (n == 64 && k == 128 && dv == 128)
        fn(integral_constant<int, 64>{}, integral_constant<int, 128>{}, integral_constant<int, 128>{});
    else if (n == 32 && k == 128 && dv == 128)
        fn(integral_constant<int, 32>{}, integral_constant<int, 128>{}, integral_constant<int, 128>{});
    else
        return false;
    return true;
}

}  // namespace
