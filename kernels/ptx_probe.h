// The PTX probes of kernels/ptx_probe.cuh on the GPU, for test/test_ptx_probe.cpp: host
// arrays in (bf16 bit patterns) and out (fp32). Each returns false, running nothing,
// where there is no device for it (any CUDA device for mma; for wgmma an sm_90 device
// and a build with sm_90a code) or in a PRECISION=FP32 build.
#pragma once
#include <cstdint>

namespace ptx_probe {
// c_nt = a b_nt^T, c_nn = a b_nn; all 16 x 16 row-major; rows >= a_rows of a read as zeros
bool mma(float* c_nt, float* c_nn, const uint16_t* a, const uint16_t* b_nt, const uint16_t* b_nn, int a_rows);
// s = a1 b1^T (64 x n), o = a2 b2 (64 x dv); a1 64 x k, b1 n x k, a2 64 x n, b2 n x dv;
// (n, k, dv) in {(64, 64, 64), (64, 128, 128), (32, 128, 128)}
bool wgmma(float* s, float* o, const uint16_t* a1, const uint16_t* b1, const uint16_t* a2, const uint16_t* b2, int n,
           int k, int dv);
// TMA (128-byte swizzle) and both-operand-in-smem wgmma, as the TMA forward uses them:
// a (a_rows x d; rows a_rows..127 arrive as zeros), b1, b2 (128 x d), a2 (64 x 128);
// s = a[64..127] b1^T (64 x 128), o = a2 b2 (64 x d); and as the single-pass backward's
// dq product (M-major A) with its bulk copies, u = 2 a[:, 0..63]^T b2[:, d-64..] (64 x 64,
// a's rows from a_rows on zeros); d 64 or 128
bool tma(float* s, float* o, float* u, const uint16_t* a, int a_rows, const uint16_t* b1, const uint16_t* b2,
         const uint16_t* a2, int d);
}  // namespace ptx_probe
