// NVTX ranges, so an Nsight Systems timeline reads like the model: "forward",
// "block 3", "attention", ... Compiled away unless the CUDA backend is built.
#pragma once

#ifdef LNS_CUDA
#include <nvtx3/nvToolsExt.h>

#include <cstdio>

struct NvtxRange {
    explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
    NvtxRange(const char* prefix, int index) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s %d", prefix, index);
        nvtxRangePushA(buf);
    }
    ~NvtxRange() { nvtxRangePop(); }
    NvtxRange(const NvtxRange&) = delete;
    NvtxRange& operator=(const NvtxRange&) = delete;
};
#define NVTX_CAT2(a, b) a##b
#define NVTX_CAT(a, b) NVTX_CAT2(a, b)
#define NVTX_RANGE(...) NvtxRange NVTX_CAT(nvtx_range_, __LINE__)(__VA_ARGS__)
#else
#define NVTX_RANGE(...) \
    do {                \
    } while (0)
#endif
