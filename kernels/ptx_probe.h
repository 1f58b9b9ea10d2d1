// The PTX probes of kernels/ptx_probe.cuh on the GPU, for test/test_ptx_probe.cpp: host
// arrays in (bf16 bit patterns) and out (fp32). Each returns false, running nothing,
// where there is no device for it (any CUDA device for mma; for wgmma an sm_90 device
// and a build with sm_90a code) or in a PRECISION=FP32 build.
#pragma once
#include <cstdint>

namespace ptx_probe {
// c_nt = a b_nt^T, c_nn = a b_nn; all 16 x 16 row-major; rows >= a_rows of a read as zeros
bool mma(float* c_nt, float* c_nn, const uint16_t* a, const uint16_t* b_nt, const uint16_t* b_nn, int a_rows);
// s = q k^T (64 x 64), o = q v (64 x dv); q, k 64 x 64, v 64 x dv, dv in {64, 128}
bool wgmma(float* s, float* o, const uint16_t* q, const uint16_t* k, const uint16_t* v, int dv);
}  // namespace ptx_probe
