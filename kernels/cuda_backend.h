// The CUDA backend: the same op names and signatures as cpu_backend
// (cpu/cpu_backend.h, which documents every op), with floatX = bf16 (fp32 under
// PRECISION=FP32). All pointers are device pointers; ops run on one stream in
// order. Host-includable: g++ translation units (tests) call these too.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "model/config.h"

struct cuda_backend {
#ifdef ENABLE_FP32
    using floatX = float;
#else
    using floatX = __nv_bfloat16;
#endif
    static constexpr const char* name = "cuda";
    // Scratch buffers grow on first use (cudaFree + cudaMalloc); data_parallel.h keeps
    // that out of a backward pass whose gradient reductions are already in flight.
    static constexpr bool grows_scratch = true;

    // ---- device, stream, handles
    static int device_count();           // 0 when no driver or no device (never throws)
    static void init(int device);        // selects the device, creates the stream and cuBLASLt handle
    static void describe(char* buf, size_t n);  // "NVIDIA H200, 139.8 GiB, sm_90"
    static void synchronize();

    // ---- memory
    static void* alloc(size_t bytes, const char* what);  // UserError naming `what` when out of memory
    static void release(void* p);
    static void zero(void* p, size_t bytes);
    static void copy_to_host(void* dst, const void* src, size_t bytes);
    static void copy_from_host(void* dst, const void* src, size_t bytes);
    static void upload_f32(floatX* dst, const float* src, size_t n);   // host fp32 -> device floatX
    static void download_f32(float* dst, const floatX* src, size_t n); // device floatX -> host fp32

    // ---- ops (see cpu/cpu_backend.h)
    static void encoder_forward(floatX* out, const int* inp, const floatX* wte, const floatX* wpe,
                                int B, int T, int C);
    static void encoder_backward(floatX* dwte, floatX* dwpe, const floatX* dout, const int* inp,
                                 int B, int T, int C);
    static void residual_norm_forward(floatX* res, floatX* out, float* mean, float* rstd,
                                      const floatX* x, const floatX* y, float alpha,
                                      const floatX* w, const floatX* b, int N, int C,
                                      NormKind kind, float eps, NormScheme scheme, int layer);
    static void residual_norm_backward(floatX* dx, floatX* dy, floatX* dw, floatX* db,
                                       const floatX* dout, const floatX* dres, const floatX* res,
                                       const floatX* w, const float* mean, const float* rstd,
                                       float alpha, int N, int C, NormKind kind,
                                       NormScheme scheme, int layer);
    static void branch_scale_forward(floatX* out, const floatX* inp, const floatX* g, float factor, int N, int C,
                                     int channels);
    static void branch_scale_backward(floatX* dinp, floatX* dg, const floatX* dout, const floatX* inp,
                                      const floatX* g, float factor, int N, int C, int channels);
    static void matmul_forward(floatX* out, const floatX* inp, const floatX* w, const floatX* bias,
                               int N, int C, int OC, floatX* pre_gelu = nullptr);
    static void matmul_backward(floatX* dinp, floatX* dw, floatX* dbias, const floatX* dout,
                                const floatX* inp, const floatX* w, int N, int C, int OC,
                                bool accumulate, const floatX* pre_gelu = nullptr);
    static void attention_forward(floatX* out, floatX* qkvr, floatX* att, const floatX* qkv,
                                  int B, int T, int C, int NH, float rope_theta);
    static void attention_backward(floatX* dqkv, floatX* dqkvr, floatX* datt, const floatX* dout,
                                   const floatX* qkvr, const floatX* att, int B, int T, int C,
                                   int NH, float rope_theta);
    static bool attention_flash_supported(int head_dim);  // 48, 64 and 128, bf16 builds only
    static void attention_flash_forward(floatX* out, float* lse, const floatX* qkv, int B, int T, int C, int NH,
                                        float rope_theta);
    static void attention_flash_backward(floatX* dqkv, const floatX* dout, const floatX* qkv, const floatX* out,
                                         const float* lse, int B, int T, int C, int NH, float rope_theta);
    // CUDA only, variants of the flash kernels for benchmarks and tests; the results
    // agree within bf16 rounding. The defaults are the fastest on an H200 (doc/cuda.md).
    // rope_on_load: RoPE inside the tile loads instead of a rotated copy of q, k made
    // before the kernels. wgmma: forward and backward on Hopper's warpgroup MMA where the
    // device runs sm_90a code and the head size is 64 or 128 (ignored elsewhere).
    // forward_warps: 4 or 8 warps (64 or 128 query rows) per forward block; 8 halves the
    // key and value reads and gives the same bits.
    // tma: forward and backward as FlashAttention-3 structures them on Hopper (TMA copies
    // from a producer warpgroup, two consumer warpgroups on wgmma) where the device runs
    // sm_90a code and the head size is 64 or 128 (48 runs mma.sync); RoPE is then rotated
    // first and the other options are ignored. Its
    // backward is one pass with dq added in a fixed order (FlashAttention-3's deterministic
    // mode); tma_dq_kernel: FlashAttention-2's two kernels instead (dq, then dk and dv).
    // tma_block_per_work and tma_bwd_head_group change only which block does what, and
    // when: the same bits, for the benchmark to weigh.
    struct FlashOptions {
        bool rope_on_load = false;
        bool wgmma = false;
        int forward_warps = 4;
        bool tma = false;
        bool tma_dq_kernel = false;
        bool tma_block_per_work = false;  // the TMA forward on a block per (head, query block), not persistent
        // the one-pass backward's blocks: key blocks handed out in turn across this many
        // heads (1: head by head; 0: all heads)
        int tma_bwd_head_group = 1;
        // rows per warp of the mma.sync forward: 16, or 32 (two tiles sharing each K and V
        // fragment; with forward_warps 4 and without wgmma)
        int forward_warp_rows = 16;
    };
    static void attention_flash_options(FlashOptions options);
    static bool attention_flash_has_wgmma();  // the device runs this build's sm_90a kernels
    static void attention_kv_forward(floatX* out, floatX* kcache, floatX* vcache, const floatX* qkv, int pos, int C,
                                     int NH, int Tmax, float rope_theta);
    static void gelu_forward(floatX* out, const floatX* inp, size_t n);
    static void gelu_backward(floatX* dinp, const floatX* inp, const floatX* dout, size_t n);
    static void swiglu_forward(floatX* out, const floatX* inp, int N, int F);
    static void swiglu_backward(floatX* dinp, const floatX* inp, const floatX* dout, int N, int F);
    static void crossentropy_forward(float* losses, const floatX* logits, const int* targets,
                                     int N, int V, int Vp);
    static void crossentropy_backward(floatX* dlogits, const floatX* logits, const int* targets,
                                      float dloss, int N, int V, int Vp);
    static void adamw_update(floatX* params, float* master, const floatX* grads, float* m, float* v,
                             size_t n, float lr, float beta1, float beta2, float eps,
                             float weight_decay, int t, float grad_scale, uint32_t seed);
    static double norm_squared(const floatX* x, size_t n);
};
