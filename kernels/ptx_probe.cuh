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
    extern __shared__ __align__(16) unsigned char smem[];
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

// The wgmma forward's two products as it issues them: s = Q K^T (64 x 64, over 64
// channels) and o = Q V (64 x DV, Q standing in for P), Q and K 64 x 64, V 64 x DV.
template <int DV>
__global__ void __launch_bounds__(THREADS) probe_wgmma_kernel(float* s_out, float* o_out, const bf16* q, const bf16* k,
                                                              const bf16* v) {
#if defined(LNS_CUDA_EMU) || LNS_SM90A
    constexpr int S = ROW_STRIDE<64>;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16* sQ = reinterpret_cast<bf16*>(smem);
    bf16* sK = sQ + 64 * S;
    bf16* sV = sK + 64 * 64;
    load_tile<64, 64, false>(sQ, q, 64, 0, 64, nullptr);
    load_tile_cm<64, 64>(sK, k, 64, 0, 64);
    load_tile_cm<DV, 64>(sV, v, DV, 0, 64);
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    const int warp = threadIdx.x / 32;
    uint32_t qf[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; kk++) load_a(qf[kk], sQ + warp * 16 * S, S, kk);
    float s[BLOCK / 8][4] = {}, o[DV / 8][4] = {};
    wgmma_qk<64>(s, qf, sK);
    wgmma_pv<DV>(o, qf, sV);
    store_acc<BLOCK / 8>(s_out, 64, s, warp * 16);
    store_acc<DV / 8>(o_out, DV, o, warp * 16);
#elif defined(__CUDA_ARCH__)
    __trap();  // launched only on sm_90 devices
#endif
}

void probe_mma(float* c_nt, float* c_nn, const bf16* a, const bf16* b_nt, const bf16* b_nn, int a_rows) {
    auto* kernel = probe_mma_kernel;
    LNS_LAUNCH(kernel, 1, THREADS, 3 * 16 * ROW_STRIDE<16> * sizeof(bf16), c_nt, c_nn, a, b_nt, b_nn, a_rows);
    cudaCheckLaunch();
}

template <int DV>
void probe_wgmma(float* s, float* o, const bf16* q, const bf16* k, const bf16* v) {
    auto* kernel = probe_wgmma_kernel<DV>;
    LNS_LAUNCH(kernel, 1, THREADS, (64 * ROW_STRIDE<64> + 64 * 64 + 64 * DV) * sizeof(bf16), s, o, q, k, v);
    cudaCheckLaunch();
}

}  // namespace
