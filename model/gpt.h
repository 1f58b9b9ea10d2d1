// The model, orchestrated once for every backend and every norm scheme.
//
// Backend is cpu_backend or cuda_backend: the same op names and signatures, with
// floatX the activation type. The residual stream is carried as (base, addend):
// its value is base + addend, and the addition is fused into the next norm. A
// sublayer f (attention or MLP) is either
//   pre-type  (pre, lns, sandwich, Mix-LN's upper blocks): res = base + addend,
//             n = Norm(res) * s(l); f = F(n) [sandwich: f = Norm_out(f)]; stream (res, f)
//   post-type (post, deepnorm, Mix-LN's lower blocks):    f = F(base);
//             res = alpha*base + f, out = Norm(res); stream (out, -)
// and the final norm closes the stream before the head. LayerScale / SkipInit multiply
// f by the branch's learnable g as it joins the stream, for either kind: the addend
// is g*f, and post-type computes res = alpha*base + g*f (the skip path stays
// unscaled, as in pre-type). LNS's after-sublayer placement multiplies f there too.
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "comm/comm.h"
#include "common/nvtx.h"
#include "model/config.h"
#include "model/init.h"
#include "model/params.h"

// --attention: flash keeps only the per-row log-sum-exp of every head's scores
// (B,NH,T) and recomputes the probabilities in backward; naive, the first version,
// stores them (B,NH,T,T). automatic is flash where the backend supports the head size.
enum class AttentionKind { automatic, flash, naive };

// ZeRO-1 over `world` ranks: the flat buffers padded with zeros to n_alloc elements, a
// multiple of world x 8, so every rank's optimizer shard [begin, begin + n) has the same
// length (what all-gather takes) and starts 16-byte aligned for bf16. One rank: no
// padding, and the shard is everything.
struct ZeroShard {
    size_t n_alloc, begin, n;
};
inline ZeroShard zero_shard(size_t total, int rank, int world) {
    const size_t unit = (size_t)world * 8;
    const size_t n_alloc = world > 1 ? (total + unit - 1) / unit * unit : total;
    const ShardRange r = shard_range(n_alloc, rank, world, 8);
    return {n_alloc, r.begin, r.size()};
}

template <class Backend>
struct GPT {
    using floatX = typename Backend::floatX;
    using Ops = Backend;

    // One norm application: its saved statistics and where its input lives.
    struct NormActs {
        floatX* res = nullptr;   // (N,C) materialised alpha*x + y, when there was an addition
        floatX* out = nullptr;   // (N,C)
        float* mean = nullptr;   // (N) LayerNorm only
        float* rstd = nullptr;   // (N)
        const floatX* normalised = nullptr;  // set in forward: res, or x when no addition
        const floatX* x = nullptr;           // set in forward: the stream base it read
    };
    struct LayerActs {
        NormActs ln1, ln1o, ln2, ln2o;  // ln1o/ln2o: sandwich's output norms
        floatX *qkv, *qkvr, *att, *atty, *attproj;   // (N,3C) (N,3C) (B,NH,T,T) (N,C) (N,C); naive: qkvr, att
        float* lse;                                  // (B,NH,T) flash only
        floatX *fch, *fch_act, *fcproj;              // (N,W1) (N,F) (N,C)
        // branch scaling, per branch (0 attention, 1 MLP): its output (N,C) and input
        floatX* scaled[2] = {nullptr, nullptr};
        const floatX* scaled_in[2] = {nullptr, nullptr};
    };

    ModelConfig cfg;
    ParamLayout layout;
    int B = 0, T = 0;  // the largest batch the activations were sized for

    // Data parallel with ZeRO-1 (zero_shard): params and grads are whole on every rank,
    // padded to n_alloc; the optimizer state covers [opt_begin, opt_begin + opt_n) only.
    size_t n_alloc = 0, opt_begin = 0, opt_n = 0;
    floatX* params = nullptr;  // (n_alloc) the flat parameter buffer
    floatX* grads = nullptr;   // same layout
    float* master = nullptr;   // (opt_n) fp32 master weights of the shard, when floatX is not float
    float* m = nullptr;        // (opt_n) AdamW moments of the shard
    float* v = nullptr;
    // Called after the backward pass of each block (0-based), last block first: the data
    // parallel trainer starts that block's gradient reduction there.
    std::function<void(int)> on_block_backward;

    // activations (one arena) and gradient scratch (one arena)
    void* act_arena = nullptr;
    void* grad_arena = nullptr;
    size_t act_bytes = 0, grad_bytes = 0;
    std::vector<LayerActs> acts;
    floatX* encoded = nullptr;  // (N,C)
    NormActs lnf;
    floatX* logits = nullptr;   // (N,Vp), overwritten by dlogits in backward
    float* losses = nullptr;    // (N)
    int* inputs = nullptr;      // (N) on the backend
    int* targets = nullptr;     // (N)
    floatX *dresidual, *dn, *df, *datty, *dqkv, *dqkvr, *datt, *dfch_act, *dfch;

    bool recompute = false;     // one shared MLP activation buffer, recomputed in backward
    bool flash = false;         // attention_flash_* (lse saved) rather than attention_* (probabilities saved)
    floatX* kv_cache = nullptr; // sampling: per layer K then V, each (NH, T, hs); allocated on first use
    int decode_pos = -1;        // >= 0 while forward_decode runs: attention reads the cache
    int cur_B = 0, cur_T = 0;
    float last_loss = 0.0f;
    int valid_targets = 0;      // targets >= 0 in the last forward
    std::vector<int> host_targets;
    std::vector<float> host_losses;
    // Layer pruning (evaluation only): when 0 <= skip_block < n_layer, forward skips that
    // block's residual branches, so its input stream passes through unchanged. backward
    // refuses to run while it is set.
    int skip_block = -1;
    // The stream (base, addend) after each block of the last forward; its value is
    // base + addend (addend may be null). Pointers into the activation arena.
    std::vector<std::pair<const floatX*, const floatX*>> stream_after;

    GPT(const ModelConfig& c, int maxB, int maxT, bool recompute_mlp = false,
        AttentionKind attention = AttentionKind::automatic, int rank = 0, int world = 1)
        : cfg(c), layout(build_param_layout(c)), B(maxB), T(maxT), recompute(recompute_mlp) {
        REQUIRE_INPUT(maxT <= cfg.max_seq_len, "--seq-len: %d exceeds the model's maximum sequence length %d",
                      maxT, cfg.max_seq_len);
        const bool flash_ok = Ops::attention_flash_supported(cfg.head_dim());
        REQUIRE_INPUT(attention != AttentionKind::flash || flash_ok,
                      "--attention flash: the %s backend has no flash kernels for head size %d in this build; "
                      "use --attention naive", Backend::name, cfg.head_dim());
        flash = attention == AttentionKind::flash || (attention == AttentionKind::automatic && flash_ok);
        const ZeroShard sh = zero_shard(layout.total, rank, world);
        n_alloc = sh.n_alloc, opt_begin = sh.begin, opt_n = sh.n;
        params = (floatX*)Ops::alloc(n_alloc * sizeof(floatX), "parameters");
        grads = (floatX*)Ops::alloc(n_alloc * sizeof(floatX), "gradients");
        m = (float*)Ops::alloc(opt_n * sizeof(float), "AdamW first moments");
        v = (float*)Ops::alloc(opt_n * sizeof(float), "AdamW second moments");
        if (!std::is_same<floatX, float>::value) master = (float*)Ops::alloc(opt_n * sizeof(float), "fp32 master weights");
        Ops::zero(params, n_alloc * sizeof(floatX));
        Ops::zero(grads, n_alloc * sizeof(floatX));
        Ops::zero(m, opt_n * sizeof(float));
        Ops::zero(v, opt_n * sizeof(float));
        plan_activations(true);
        plan_activations(false);
    }
    ~GPT() {
        for (void* p : {(void*)params, (void*)grads, (void*)master, (void*)m, (void*)v, act_arena, grad_arena,
                        (void*)kv_cache})
            if (p) Ops::release(p);
    }
    GPT(const GPT&) = delete;
    GPT& operator=(const GPT&) = delete;

    // Carves the arenas. The first pass (measure) only adds up sizes.
    void plan_activations(bool measure) {
        const size_t N = (size_t)B * T, C = cfg.n_embd, NH = cfg.n_head;
        const size_t F = cfg.ffn_hidden, W1 = cfg.mlp_in_width(), Vp = cfg.padded_vocab();
        char* base = (char*)act_arena;
        size_t off = 0;
        auto take = [&](size_t bytes) -> void* {
            void* p = measure ? nullptr : base + off;
            off += (bytes + 255) / 256 * 256;
            return p;
        };
        auto X = [&](size_t n) { return (floatX*)take(n * sizeof(floatX)); };
        auto Fl = [&](size_t n) { return (float*)take(n * sizeof(float)); };
        auto norm = [&](NormActs& a, bool with_res) {
            a.res = with_res ? X(N * C) : nullptr;
            a.out = X(N * C);
            a.mean = cfg.norm_kind() == NormKind::layernorm ? Fl(N) : nullptr;
            a.rstd = Fl(N);
        };
        acts.assign(cfg.n_layer, LayerActs{});
        encoded = X(N * C);
        floatX* shared_fch_act = recompute ? X(N * F) : nullptr;
        for (auto& a : acts) {
            norm(a.ln1, true);
            a.qkv = X(N * 3 * C);
            a.qkvr = flash ? nullptr : X(N * 3 * C);
            a.att = flash ? nullptr : X((size_t)B * NH * T * T);
            a.lse = flash ? Fl((size_t)B * NH * T) : nullptr;
            a.atty = X(N * C), a.attproj = X(N * C);
            if (cfg.sandwich()) norm(a.ln1o, false);
            norm(a.ln2, true);
            a.fch = X(N * W1), a.fch_act = recompute ? shared_fch_act : X(N * F), a.fcproj = X(N * C);
            if (cfg.sandwich()) norm(a.ln2o, false);
            if (branch_scaled())
                for (auto& sc : a.scaled) sc = X(N * C);
        }
        norm(lnf, true);
        logits = X(N * Vp);
        losses = Fl(N);
        inputs = (int*)take(N * sizeof(int));
        targets = (int*)take(N * sizeof(int));
        if (measure) {
            act_bytes = off;
            act_arena = Ops::alloc(act_bytes, "activations");
        }

        base = (char*)grad_arena;
        off = 0;
        dresidual = X(N * C), dn = X(N * C), df = X(N * C), datty = X(N * C);
        dqkv = X(N * 3 * C);
        dqkvr = flash ? nullptr : X(N * 3 * C);
        datt = flash ? nullptr : X((size_t)B * NH * T * T);
        dfch_act = X(N * F), dfch = X(N * W1);
        if (measure) {
            grad_bytes = off;
            grad_arena = Ops::alloc(grad_bytes, "activation gradients");
        }
    }

    floatX* P(long offset) const { return offset < 0 ? nullptr : params + offset; }
    floatX* G(long offset) const { return offset < 0 ? nullptr : grads + offset; }

    // ---- parameters in and out (host fp32, the flat layout)
    void set_params(const std::vector<float>& host) {
        LNS_CHECK(host.size() == layout.total, "parameter count mismatch");
        Ops::upload_f32(params, host.data(), host.size());
        if (master) upload_shard(master, host);
    }
    // The fp32 parameters: the master weights where they exist. With several ranks each
    // holds only its shard of those, so the caller gathers them first (data_parallel.h).
    std::vector<float> get_params() const {
        std::vector<float> host(layout.total);
        LNS_CHECK(!master || opt_n >= layout.total, "get_params: master weights are sharded; gather them first");
        if (master) Ops::copy_to_host(host.data(), master, host.size() * sizeof(float));
        else Ops::download_f32(host.data(), params, host.size());
        return host;
    }
    // The optimizer state, for checkpoints: params (layout.total) as the backend holds
    // them (exact: bf16 values are exact in fp32); master weights (empty when params are
    // fp32) and AdamW moments of this rank's shard, cut to the real parameters
    // [opt_begin, min(opt_begin + opt_n, layout.total)).
    size_t opt_real() const { return opt_begin >= layout.total ? 0 : std::min(opt_n, layout.total - opt_begin); }
    // with_params = false leaves p empty (a rank that saves only its shard).
    void get_state(std::vector<float>& p, std::vector<float>& mw, std::vector<float>& m1, std::vector<float>& m2,
                   bool with_params = true) const {
        const size_t n = layout.total, k = opt_real();
        p.resize(with_params ? n : 0), m1.resize(k), m2.resize(k), mw.resize(master ? k : 0);
        if (with_params) Ops::download_f32(p.data(), params, n);
        if (master) Ops::copy_to_host(mw.data(), master, k * sizeof(float));
        Ops::copy_to_host(m1.data(), m, k * sizeof(float));
        Ops::copy_to_host(m2.data(), v, k * sizeof(float));
    }
    void set_state(const std::vector<float>& p, const std::vector<float>& mw, const std::vector<float>& m1,
                   const std::vector<float>& m2) {
        const size_t n = layout.total, k = opt_real();
        REQUIRE_INPUT(p.size() == n && m1.size() == k && m2.size() == k,
                      "checkpoint holds %zu parameters (%zu in this shard), the model has %zu (%zu)", p.size(),
                      m1.size(), n, k);
        REQUIRE_INPUT(mw.empty() == (master == nullptr),
                      "checkpoint from a backend with%s master weights; resume on the same device kind",
                      mw.empty() ? "out" : "");
        Ops::upload_f32(params, p.data(), n);
        if (master) Ops::copy_from_host(master, mw.data(), k * sizeof(float));
        Ops::copy_from_host(m, m1.data(), k * sizeof(float));
        Ops::copy_from_host(v, m2.data(), k * sizeof(float));
    }
    // this rank's part of a full host vector into a shard buffer
    void upload_shard(float* dst, const std::vector<float>& full) const {
        const size_t k = opt_real();
        if (k) Ops::copy_from_host(dst, full.data() + opt_begin, k * sizeof(float));
    }
    std::vector<float> get_grads() const {
        std::vector<float> host(layout.total);
        Ops::download_f32(host.data(), grads, host.size());
        return host;
    }
    void init_random(uint64_t seed) {
        std::vector<float> host;
        init_params(host, layout, seed);
        set_params(host);
    }
    void zero_grad() { Ops::zero(grads, n_alloc * sizeof(floatX)); }
    // logits of one row of the last forward, (Vp) floats
    void download_logits_row(float* dst, int row) const {
        Ops::download_f32(dst, logits + (size_t)row * cfg.padded_vocab(), cfg.padded_vocab());
    }

    // ---- forward: returns the mean loss over targets >= 0 (or 0 without targets)
    float forward(const int* host_inputs, const int* host_tgts, int b, int t) {
        REQUIRE_INPUT(b <= B && t <= T, "batch (%d, %d) exceeds the planned (%d, %d)", b, t, B, T);
        cur_B = b, cur_T = t;
        const int N = b * t, C = cfg.n_embd, Vp = cfg.padded_vocab();
        NVTX_RANGE("forward");
        Ops::copy_from_host(inputs, host_inputs, (size_t)N * sizeof(int));

        Ops::encoder_forward(encoded, inputs, P(layout.wte), P(layout.wpe), b, t, C);
        blocks_and_head();

        if (!host_tgts) return 0.0f;
        Ops::copy_from_host(targets, host_tgts, (size_t)N * sizeof(int));
        Ops::crossentropy_forward(losses, logits, targets, N, cfg.vocab_size, Vp);
        host_losses.resize(N);
        Ops::copy_to_host(host_losses.data(), losses, (size_t)N * sizeof(float));
        double sum = 0.0;
        valid_targets = 0;
        for (int i = 0; i < N; i++)
            if (host_tgts[i] >= 0) sum += host_losses[i], valid_targets++;
        last_loss = valid_targets ? (float)(sum / valid_targets) : 0.0f;
        return last_loss;
    }

    // ---- one token at position pos (0 <= pos < T) through the model, attending to the
    // tokens fed at positions [0, pos) through the KV cache; the logits are row 0.
    void forward_decode(int token, int pos) {
        REQUIRE_INPUT(pos >= 0 && pos < T, "decode position %d outside [0, %d)", pos, T);
        const int C = cfg.n_embd;
        if (!kv_cache) kv_cache = (floatX*)Ops::alloc((size_t)cfg.n_layer * 2 * T * C * sizeof(floatX), "KV cache");
        NVTX_RANGE("decode");
        cur_B = 1, cur_T = 1;
        Ops::copy_from_host(inputs, &token, sizeof(int));
        Ops::encoder_forward(encoded, inputs, P(layout.wte), layout.wpe >= 0 ? P(layout.wpe) + (size_t)pos * C : nullptr,
                             1, 1, C);
        decode_pos = pos;
        blocks_and_head();
        decode_pos = -1;
    }

    // ---- backward: adds d(loss * loss_scale)/d(params) into grads. loss_scale is
    // 1 for a single batch and 1/steps under gradient accumulation.
    void backward(float loss_scale = 1.0f) {
        const int b = cur_B, t = cur_T, N = b * t, C = cfg.n_embd, Vp = cfg.padded_vocab();
        const float dloss = valid_targets ? loss_scale / valid_targets : 0.0f;
        LNS_CHECK(skip_block < 0, "backward with a pruned block (skip_block is for evaluation only)");
        NVTX_RANGE("backward");
        Ops::crossentropy_backward(logits, logits, targets, dloss, N, cfg.vocab_size, Vp);
        Ops::matmul_backward(dn, G(layout.lm_head), nullptr, logits, lnf.out, P(layout.lm_head), N, C, Vp, false);
        Ops::residual_norm_backward(dresidual, nullptr, G(layout.lnf_w), G(layout.lnf_b), dn, nullptr,
                                    lnf.normalised, P(layout.lnf_w), lnf.mean, lnf.rstd, 1.0f, N, C,
                                    cfg.norm_kind(), cfg.norm, 0);
        for (int l = cfg.n_layer - 1; l >= 0; l--) {
            const BlockParams& bp = layout.blocks[l];
            LayerActs& a = acts[l];
            const bool post = cfg.block_is_post(l);
            NVTX_RANGE("block backward", l + 1);
            sublayer_backward(a, a.ln2, a.ln2o, bp.ln2_w, bp.ln2_b, bp.ln2o_w, bp.ln2o_b, post, l, false);
            sublayer_backward(a, a.ln1, a.ln1o, bp.ln1_w, bp.ln1_b, bp.ln1o_w, bp.ln1o_b, post, l, true);
            if (on_block_backward) on_block_backward(l);
        }
        Ops::encoder_backward(G(layout.wte), G(layout.wpe), dresidual, inputs, b, t, C);
    }

    // ---- after forward: the residual stream on the host, fp32, one (N*C) vector per
    // entry. stream_host(l) is the stream after block l (l = 0..L-1), i.e. the input of
    // block l+1; stream_host(-1) is the embedding output, the input of block 0. For
    // pre-type blocks (pre, lns, sandwich) that is base + addend, added here on the host;
    // for post-type blocks (post, deepnorm) it is the block's final norm output. The
    // stream after the last block is the input of the final norm.
    std::vector<float> stream_host(int l) const {
        const size_t n = (size_t)cur_B * cur_T * cfg.n_embd;
        std::vector<float> h(n);
        if (l < 0) {
            Ops::download_f32(h.data(), encoded, n);
            return h;
        }
        LNS_CHECK(l < (int)stream_after.size(), "stream_host: no forward has run");
        Ops::download_f32(h.data(), stream_after[l].first, n);
        if (stream_after[l].second) {
            std::vector<float> y(n);
            Ops::download_f32(y.data(), stream_after[l].second, n);
            for (size_t i = 0; i < n; i++) h[i] += y[i];
        }
        return h;
    }
    // The output hidden state of every block (stream_host(0..L-1)).
    std::vector<std::vector<float>> hidden_states() const {
        std::vector<std::vector<float>> hs;
        for (int l = 0; l < cfg.n_layer; l++) hs.push_back(stream_host(l));
        return hs;
    }

  private:
    // From `encoded` through every block (but skip_block) and the head into logits,
    // for the cur_B x cur_T rows; stream_after records the stream after each block.
    void blocks_and_head() {
        const floatX* base = encoded;
        const floatX* addend = nullptr;
        stream_after.assign(cfg.n_layer, {nullptr, nullptr});
        for (int l = 0; l < cfg.n_layer; l++) {
            const BlockParams& bp = layout.blocks[l];
            LayerActs& a = acts[l];
            const bool post = cfg.block_is_post(l);
            if (l != skip_block) {
                NVTX_RANGE("block", l + 1);
                sublayer_forward(a, a.ln1, a.ln1o, bp.ln1_w, bp.ln1_b, bp.ln1o_w, bp.ln1o_b, post, l, true, base, addend);
                sublayer_forward(a, a.ln2, a.ln2o, bp.ln2_w, bp.ln2_b, bp.ln2o_w, bp.ln2o_b, post, l, false, base, addend);
            }
            stream_after[l] = {base, addend};
        }
        NVTX_RANGE("head");
        norm_forward(lnf, base, addend, 1.0f, layout.lnf_w, layout.lnf_b, 0, cfg.norm_eps);
        Ops::matmul_forward(logits, lnf.out, P(layout.lm_head), nullptr, cur_B * cur_T, cfg.n_embd, cfg.padded_vocab());
    }

    void norm_forward(NormActs& n, const floatX* x, const floatX* y, float alpha, long w, long bias, int layer,
                      float eps) {
        const int N = cur_B * cur_T;
        const bool add = y != nullptr || alpha != 1.0f;
        Ops::residual_norm_forward(add ? n.res : nullptr, n.out, n.mean, n.rstd, x, y, alpha, P(w), P(bias), N,
                                   cfg.n_embd, cfg.norm_kind(), eps, cfg.norm, layer);
        n.normalised = add ? n.res : x;
        n.x = x;
    }

    // Attention (attn == true) or MLP on input `in` (N,C); result in a.attproj / a.fcproj.
    const floatX* branch_forward(LayerActs& a, const BlockParams& bp, bool attn, const floatX* in) {
        const int N = cur_B * cur_T, C = cfg.n_embd, F = cfg.ffn_hidden;
        NVTX_RANGE(attn ? "attention" : "mlp");
        if (attn) {
            Ops::matmul_forward(a.qkv, in, P(bp.qkv_w), P(bp.qkv_b), N, C, 3 * C);
            const float theta = cfg.rope() ? cfg.rope_theta : 0.0f;
            if (decode_pos >= 0) {  // one token against the cache of this layer
                floatX* k = kv_cache + (size_t)(&a - acts.data()) * 2 * T * C;
                Ops::attention_kv_forward(a.atty, k, k + (size_t)T * C, a.qkv, decode_pos, C, cfg.n_head, T, theta);
            } else if (flash) {
                Ops::attention_flash_forward(a.atty, a.lse, a.qkv, cur_B, cur_T, C, cfg.n_head, theta);
            } else {
                Ops::attention_forward(a.atty, a.qkvr, a.att, a.qkv, cur_B, cur_T, C, cfg.n_head, theta);
            }
            Ops::matmul_forward(a.attproj, a.atty, P(bp.attn_proj_w), P(bp.attn_proj_b), N, C, C);
            return a.attproj;
        }
        if (cfg.arch == Arch::gpt2) {  // fc + GELU in one matmul
            Ops::matmul_forward(a.fch_act, in, P(bp.fc_w), P(bp.fc_b), N, C, F, a.fch);
        } else {
            Ops::matmul_forward(a.fch, in, P(bp.fc_w), nullptr, N, C, cfg.mlp_in_width());
            Ops::swiglu_forward(a.fch_act, a.fch, N, F);
        }
        Ops::matmul_forward(a.fcproj, a.fch_act, P(bp.mlp_proj_w), P(bp.mlp_proj_b), N, F, C);
        return a.fcproj;
    }

    // Backward of branch_forward: reads dout (N,C), writes (or adds, accumulate) din.
    void branch_backward(LayerActs& a, const BlockParams& bp, bool attn, const floatX* in, const floatX* dout,
                         floatX* din, bool accumulate) {
        const int N = cur_B * cur_T, C = cfg.n_embd, F = cfg.ffn_hidden;
        NVTX_RANGE(attn ? "attention backward" : "mlp backward");
        if (attn) {
            Ops::matmul_backward(datty, G(bp.attn_proj_w), G(bp.attn_proj_b), dout, a.atty, P(bp.attn_proj_w), N, C, C, false);
            const float theta = cfg.rope() ? cfg.rope_theta : 0.0f;
            if (flash)
                Ops::attention_flash_backward(dqkv, datty, a.qkv, a.atty, a.lse, cur_B, cur_T, C, cfg.n_head, theta);
            else
                Ops::attention_backward(dqkv, dqkvr, datt, datty, a.qkvr, a.att, cur_B, cur_T, C, cfg.n_head, theta);
            Ops::matmul_backward(din, G(bp.qkv_w), G(bp.qkv_b), dqkv, in, P(bp.qkv_w), N, C, 3 * C, accumulate);
            return;
        }
        if (recompute) {  // the activation was overwritten by later blocks: recompute it
            if (cfg.arch == Arch::gpt2) Ops::gelu_forward(a.fch_act, a.fch, (size_t)N * F);
            else Ops::swiglu_forward(a.fch_act, a.fch, N, F);
        }
        if (cfg.arch == Arch::gpt2) {  // the proj matmul's backward applies GELU' as well
            Ops::matmul_backward(dfch, G(bp.mlp_proj_w), G(bp.mlp_proj_b), dout, a.fch_act, P(bp.mlp_proj_w), N, F, C,
                                 false, a.fch);
        } else {
            Ops::matmul_backward(dfch_act, G(bp.mlp_proj_w), nullptr, dout, a.fch_act, P(bp.mlp_proj_w), N, F, C, false);
            Ops::swiglu_backward(dfch, a.fch, dfch_act, N, F);
        }
        Ops::matmul_backward(din, G(bp.fc_w), G(bp.fc_b), dfch, in, P(bp.fc_w), N, C, cfg.mlp_in_width(), accumulate);
    }

    // LayerScale / SkipInit and LNS after-sublayer: every branch output passes through
    // branch_scale (g absent under after-sublayer alone; the factor 1 without it).
    bool branch_scaled() const {
        return cfg.branch_scale_channels() > 0 ||
               (cfg.norm == NormScheme::lns && cfg.lns_placement == LnsPlacement::after_sublayer);
    }
    // The branch output f as it joins the stream: g * f * factor, or f itself.
    const floatX* scale_forward(LayerActs& a, int l, bool attn, const floatX* f) {
        if (!branch_scaled()) return f;
        const BlockParams& bp = layout.blocks[l];
        a.scaled_in[attn ? 0 : 1] = f;
        floatX* out = a.scaled[attn ? 0 : 1];
        Ops::branch_scale_forward(out, f, P(attn ? bp.attn_scale : bp.mlp_scale), cfg.lns_site(l, attn).branch,
                                  cur_B * cur_T, cfg.n_embd, cfg.branch_scale_channels());
        return out;
    }
    // Backward of scale_forward: the gradient of f from that of g*f (din may alias
    // dout); returns dout itself when the branch is unscaled.
    const floatX* scale_backward(LayerActs& a, int l, bool attn, floatX* din, const floatX* dout) {
        if (!branch_scaled()) return dout;
        const BlockParams& bp = layout.blocks[l];
        const long g = attn ? bp.attn_scale : bp.mlp_scale;
        Ops::branch_scale_backward(din, G(g), dout, a.scaled_in[attn ? 0 : 1], P(g), cfg.lns_site(l, attn).branch,
                                   cur_B * cur_T, cfg.n_embd, cfg.branch_scale_channels());
        return din;
    }

    void sublayer_forward(LayerActs& a, NormActs& nin, NormActs& nout, long w, long b, long wo, long bo, bool post,
                          int l, bool attn, const floatX*& base, const floatX*& addend) {
        const BlockParams& bp = layout.blocks[l];
        const LnsSite site = cfg.lns_site(l, attn);
        if (post) {
            LNS_CHECK(addend == nullptr, "a post-norm sublayer never follows a pending residual addition");
            const floatX* f = scale_forward(a, l, attn, branch_forward(a, bp, attn, base));
            norm_forward(nin, base, f, cfg.residual_alpha(), w, b, site.norm_layer, site.norm_eps);
            base = nin.out;
            return;
        }
        norm_forward(nin, base, addend, 1.0f, w, b, site.norm_layer, site.norm_eps);
        base = nin.normalised;
        const floatX* f = branch_forward(a, bp, attn, nin.out);
        if (cfg.sandwich()) {
            norm_forward(nout, f, nullptr, 1.0f, wo, bo, l + 1, cfg.norm_eps);
            f = nout.out;
        }
        addend = scale_forward(a, l, attn, f);
    }

    // dresidual holds the gradient of the stream after this sublayer (for pre-type,
    // of both res and the addend, which are equal); on return, of the stream before.
    void sublayer_backward(LayerActs& a, NormActs& nin, NormActs& nout, long w, long b, long wo, long bo, bool post,
                           int l, bool attn) {
        const BlockParams& bp = layout.blocks[l];
        const int N = cur_B * cur_T, C = cfg.n_embd;
        const NormKind kind = cfg.norm_kind();
        const int layer = cfg.lns_site(l, attn).norm_layer;
        if (post) {
            Ops::residual_norm_backward(dresidual, df, G(w), G(b), dresidual, nullptr, nin.normalised, P(w), nin.mean,
                                        nin.rstd, cfg.residual_alpha(), N, C, kind, cfg.norm, layer);
            scale_backward(a, l, attn, df, df);
            branch_backward(a, bp, attn, nin.x, df, dresidual, true);
            return;
        }
        const floatX* dbranch = scale_backward(a, l, attn, df, dresidual);
        if (cfg.sandwich()) {
            Ops::residual_norm_backward(df, nullptr, G(wo), G(bo), dbranch, nullptr, nout.normalised, P(wo),
                                        nout.mean, nout.rstd, 1.0f, N, C, kind, cfg.norm, l + 1);
            dbranch = df;
        }
        branch_backward(a, bp, attn, nin.out, dbranch, dn, false);
        Ops::residual_norm_backward(dresidual, nullptr, G(w), G(b), dn, dresidual, nin.normalised, P(w), nin.mean,
                                    nin.rstd, 1.0f, N, C, kind, cfg.norm, layer);
    }
};
