// The flash attention pair of cuda_backend; the kernels and their launches are in
// attention_flash.cuh.
#include "common/check.h"
#include "common/nvtx.h"
#include "kernels/cuda_common.cuh"

#ifndef ENABLE_FP32
#include "kernels/attention_flash.cuh"

namespace {
cuda_backend::FlashOptions g_options;
}

bool cuda_backend::attention_flash_supported(int head_dim) {
    return head_dim == 48 || head_dim == 64 || head_dim == 128;
}
void cuda_backend::attention_flash_options(FlashOptions o) {
    LNS_CHECK(o.forward_warps == 4 || o.forward_warps == 8, "attention_flash_options: forward_warps %d (4 or 8)",
              o.forward_warps);
    LNS_CHECK(o.forward_warp_rows == 16 || (o.forward_warp_rows == 32 && o.forward_warps == 4 && !o.wgmma),
              "attention_flash_options: forward_warp_rows %d (16, or 32 with forward_warps 4 and without wgmma)",
              o.forward_warp_rows);
    g_options = o;
}
bool cuda_backend::attention_flash_has_wgmma() {
    static const bool built = wgmma_built();
    return built;
}
namespace {
// The wgmma and TMA kernels: sm_90a images, heads of whole 64-channel boxes (64 and 128;
// 48 runs mma.sync whatever the options say)
bool hopper_kernels(int C, int NH) {
    return cuda_backend::attention_flash_has_wgmma() && NH > 0 && hopper_head(C / NH);
}
}  // namespace

void cuda_backend::attention_flash_forward(floatX* out, float* lse, const floatX* qkv, int B, int T, int C, int NH,
                                           float rope_theta) {
    NVTX_RANGE("attention_flash_forward");
    const bool sm90a = hopper_kernels(C, NH);
    flash_forward(out, lse, qkv, B, T, C, NH, rope_theta, g_options.rope_on_load, g_options.wgmma && sm90a,
                  g_options.forward_warps, g_options.tma && sm90a, g_options.tma_block_per_work,
                  g_options.forward_warp_rows);
}

void cuda_backend::attention_flash_backward(floatX* dqkv, const floatX* dout, const floatX* qkv, const floatX* out,
                                            const float* lse, int B, int T, int C, int NH, float rope_theta) {
    NVTX_RANGE("attention_flash_backward");
    const bool sm90a = hopper_kernels(C, NH);
    flash_backward(dqkv, dout, qkv, out, lse, B, T, C, NH, rope_theta, g_options.rope_on_load, g_options.wgmma && sm90a,
                   g_options.tma && sm90a, g_options.tma_dq_kernel, g_options.tma_bwd_head_group);
}

#else  // ENABLE_FP32

bool cuda_backend::attention_flash_supported(int) { return false; }
void cuda_backend::attention_flash_options(FlashOptions) {}
bool cuda_backend::attention_flash_has_wgmma() { return false; }

void cuda_backend::attention_flash_forward(floatX*, float*, const floatX*, int, int, int, int, float) {
    LNS_CHECK(false, "attention_flash_forward: a PRECISION=FP32 build has no flash kernels; use --attention naive");
}
void cuda_backend::attention_flash_backward(floatX*, const floatX*, const floatX*, const floatX*, const float*, int,
                                            int, int, int, float) {
    LNS_CHECK(false, "attention_flash_backward: a PRECISION=FP32 build has no flash kernels; use --attention naive");
}

#endif
