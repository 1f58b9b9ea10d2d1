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
