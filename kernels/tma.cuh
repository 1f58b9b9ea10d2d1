// Tensor maps for the TMA loads of the sm_90a kernels: a 4-d bf16 tensor read in boxes
// whose rows are 64 channels (128 bytes, the span of the 128-byte swizzle that wgmma's
// descriptors read). The map is encoded on the host by the driver's
// cuTensorMapEncodeTiled (through the runtime's entry-point query, so nothing links
// libcuda) and passed to the kernel as a __grid_constant__ parameter.
#pragma once
#include <cuda.h>

#include <cstdint>

#include "common/check.h"
#include "kernels/cuda_common.cuh"

#ifndef LNS_CUDA_EMU
#include <cudaTypedefs.h>
#endif

namespace {

// dims innermost first (dims[0]: channels, contiguous), strides in bytes of dims 1..3,
// box in elements (box[0] = 64); elements outside the tensor load as zeros.
inline CUtensorMap tensor_map_bf16(const void* base, const uint64_t (&dims)[4], const uint64_t (&strides)[3],
                                   const uint32_t (&box)[4]) {
    alignas(64) CUtensorMap map;
#ifdef LNS_CUDA_EMU
    emu::encode_tensor_map(&map, base, dims, strides, box);
#else
    static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
        void* fn = nullptr;
        cudaDriverEntryPointQueryResult found{};
        cudaCheck(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
        LNS_CHECK(fn && found == cudaDriverEntryPointSuccess,
                  "cuTensorMapEncodeTiled: not in this driver (TMA needs CUDA 12 and an sm_90 device)");
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
    }();
    const uint32_t element_strides[4] = {1, 1, 1, 1};
    const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, const_cast<void*>(base), dims, strides, box,
                              element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    LNS_CHECK(r == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed (CUresult %d) for dims %llu x %llu x %llu x %llu",
              (int)r, (unsigned long long)dims[0], (unsigned long long)dims[1], (unsigned long long)dims[2],
              (unsigned long long)dims[3]);
#endif
    return map;
}

}  // namespace
