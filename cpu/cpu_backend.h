// The CPU fp32 reference backend: plain C++ with OpenMP. It is the oracle every
// CUDA kernel is tested against, and the backend train_gpt uses without a GPU.
//
// Conventions shared with the CUDA backend (kernels/cuda_backend.h), which has the
// same op names and signatures with floatX = bf16 (or float under PRECISION=FP32):
//  - N = B*T rows; C channels; shapes are given in comments, row-major.
//  - Forward ops write their outputs. Backward ops write activation gradients and
//    ADD into parameter gradients (+=), so micro-batches accumulate.
//  - Every reduction has a fixed order that does not depend on the thread count:
//    same inputs, same bits.
#pragma once
#include <cstddef>
#include <cstdint>

#include "model/config.h"

struct cpu_backend {
    using floatX = float;
    static constexpr const char* name = "cpu";
    static constexpr bool grows_scratch = false;  // no device scratch: see data_parallel.h

    // ---- memory (host memory; the same calls move data on the CUDA backend)
    static void* alloc(size_t bytes, const char* what);
    static void release(void* p);
    static void zero(void* p, size_t bytes);
    static void copy_to_host(void* dst, const void* src, size_t bytes);
    static void copy_from_host(void* dst, const void* src, size_t bytes);
    // fp32 host values <-> floatX storage (identity here)
    static void upload_f32(floatX* dst, const float* src, size_t n);
    static void download_f32(float* dst, const floatX* src, size_t n);
    static void synchronize() {}

    // ---- embeddings: out = wte[inp] (+ wpe[t])
    // out (B,T,C), inp (B,T), wte (Vp,C), wpe (maxT,C) or null
    static void encoder_forward(floatX* out, const int* inp, const floatX* wte, const floatX* wpe,
                                int B, int T, int C);
    static void encoder_backward(floatX* dwte, floatX* dwpe, const floatX* dout, const int* inp,
                                 int B, int T, int C);

    // ---- fused residual + norm + depth scale
    // res = alpha*x + y  (y may be null; res may be null when y is null and alpha == 1,
    // then x itself is the normalised input), out = norm(res) * w (+ b) * s, with
    // s = depth_scale(scheme, layer) computed here from the 1-based layer (0: unscaled, for
    // the final norm and norms an LNS placement leaves alone; see ModelConfig::lns_site).
    // res,out,x,y (N,C); mean,rstd (N) (mean unused for RMSNorm); w,b (C), b may be null
    static void residual_norm_forward(floatX* res, floatX* out, float* mean, float* rstd,
                                      const floatX* x, const floatX* y, float alpha,
                                      const floatX* w, const floatX* b, int N, int C,
                                      NormKind kind, float eps, NormScheme scheme, int layer);
    // dr = dres + d(norm)/d(res)^T (dout * s);  dx = alpha*dr;  dy = dr (if dy not null);
    // dw += sum_rows(dout*s*xhat), db += sum_rows(dout*s). dx may alias dout or dres.
    // dres may be null (no gradient reaches res other than through the norm).
    static void residual_norm_backward(floatX* dx, floatX* dy, floatX* dw, floatX* db,
                                       const floatX* dout, const floatX* dres, const floatX* res,
                                       const floatX* w, const float* mean, const float* rstd,
                                       float alpha, int N, int C, NormKind kind,
                                       NormScheme scheme, int layer);

    // ---- branch scaling (LayerScale, SkipInit, LNS after-sublayer): a residual branch's
    // output times a learnable per-channel g and a constant factor as it joins the stream.
    // out = inp * g * factor; inp,out (N,C); g (channels) with channels C (one value per
    // channel) or 1 (one scalar, broadcast), or null (the factor alone).
    static void branch_scale_forward(floatX* out, const floatX* inp, const floatX* g, float factor, int N, int C,
                                     int channels);
    // dinp = dout * g * factor (dinp may alias dout); dg += factor * sum_rows(dout * inp),
    // also summed over the channels when channels == 1 (dg ignored when g is null).
    static void branch_scale_backward(floatX* dinp, floatX* dg, const floatX* dout, const floatX* inp,
                                      const floatX* g, float factor, int N, int C, int channels);

    // ---- matmul: out = inp @ w^T (+ bias), optionally followed by GELU
    // out (N,OC), inp (N,C), w (OC,C), bias (OC) or null. With pre_gelu (N,OC) given,
    // pre_gelu = inp @ w^T + bias and out = gelu(pre_gelu) (the cuBLASLt GELU epilogue).
    static void matmul_forward(floatX* out, const floatX* inp, const floatX* w, const floatX* bias,
                               int N, int C, int OC, floatX* pre_gelu = nullptr);
    // dinp = (or += when accumulate) dout @ w; dw += dout^T @ inp; dbias += sum_rows(dout).
    // With pre_gelu (N,C) given, dinp = gelu'(pre_gelu) * (dout @ w): the gradient flows
    // through the GELU that produced inp (the DGELU epilogue); not with accumulate.
    static void matmul_backward(floatX* dinp, floatX* dw, floatX* dbias, const floatX* dout,
                                const floatX* inp, const floatX* w, int N, int C, int OC,
                                bool accumulate, const floatX* pre_gelu = nullptr);

    // ---- causal multi-head attention, RoPE on q and k when rope_theta > 0
    // qkv (B,T,3C) holds [q | k | v] per token, heads of hs = C/NH channels each.
    // qkvr (B,T,3C): q and k after RoPE, v copied; att (B,NH,T,T): softmax probabilities
    // (entries above the diagonal are 0); out (B,T,C).
    static void attention_forward(floatX* out, floatX* qkvr, floatX* att, const floatX* qkv,
                                  int B, int T, int C, int NH, float rope_theta);
    // dqkv (B,T,3C) written; datt (B,NH,T,T) and dqkvr (B,T,3C) are scratch.
    static void attention_backward(floatX* dqkv, floatX* dqkvr, floatX* datt, const floatX* dout,
                                   const floatX* qkvr, const floatX* att, int B, int T, int C,
                                   int NH, float rope_theta);

    // ---- the same attention without the (T,T) probabilities (flash style): forward
    // saves only out and the per-row log-sum-exp of the scaled scores; backward
    // recomputes the probabilities from qkv and lse. RoPE is applied to q and k as
    // they are read, so no rotated copy is stored.
    // qkv (B,T,3C), out (B,T,C), lse (B,NH,T): lse[b,h,t] = log sum_{t2<=t} exp(q_t.k_t2 / sqrt(hs)).
    static bool attention_flash_supported(int head_dim);  // every head size here
    static void attention_flash_forward(floatX* out, float* lse, const floatX* qkv, int B, int T, int C, int NH,
                                        float rope_theta);
    // dqkv (B,T,3C) written from dout (B,T,C) and the forward's qkv, out, lse.
    static void attention_flash_backward(floatX* dqkv, const floatX* dout, const floatX* qkv, const floatX* out,
                                         const float* lse, int B, int T, int C, int NH, float rope_theta);

    // ---- attention for one new token against a KV cache (sampling; inference only,
    // so no backward). qkv (1,3C) is the token's projection at position pos; q and k
    // are rotated as in attention_forward; k and v are written to row pos of the
    // layer's caches kcache, vcache (NH,Tmax,hs), whose rows [0,pos) hold earlier
    // tokens; out (1,C) is the causal attention of q over rows [0,pos].
    static void attention_kv_forward(floatX* out, floatX* kcache, floatX* vcache, const floatX* qkv, int pos, int C,
                                     int NH, int Tmax, float rope_theta);

    // ---- activations
    static void gelu_forward(floatX* out, const floatX* inp, size_t n);  // tanh approximation
    static void gelu_backward(floatX* dinp, const floatX* inp, const floatX* dout, size_t n);
    // inp (N,2F) = [gate | up] per row; out (N,F) = silu(gate) * up
    static void swiglu_forward(floatX* out, const floatX* inp, int N, int F);
    static void swiglu_backward(floatX* dinp, const floatX* inp, const floatX* dout, int N, int F);

    // ---- softmax cross-entropy over the first V of Vp logits; targets < 0 are ignored
    // losses (N), logits (N,Vp)
    static void crossentropy_forward(float* losses, const floatX* logits, const int* targets,
                                     int N, int V, int Vp);
    // dlogits (N,Vp) = dloss * (softmax - onehot), 0 in the padding and on ignored rows;
    // dlogits may alias logits (the fused classifier overwrites them in place).
    static void crossentropy_backward(floatX* dlogits, const floatX* logits, const int* targets,
                                      float dloss, int N, int V, int Vp);

    // ---- optimizer, over a contiguous range of the flat buffers
    // PyTorch's AdamW: p *= 1 - lr*wd; m,v moments; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps),
    // with g = grad * grad_scale. master is the fp32 copy when params are lower precision
    // (null on the CPU); seed drives stochastic rounding there.
    static void adamw_update(floatX* params, float* master, const floatX* grads, float* m, float* v,
                             size_t n, float lr, float beta1, float beta2, float eps,
                             float weight_decay, int t, float grad_scale, uint32_t seed);
    // sum of squares, fixed reduction order
    static double norm_squared(const floatX* x, size_t n);
};
