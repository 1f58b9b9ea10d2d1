// Model configuration: the two architectures, the norm schemes of the paper and
// its baselines, initialisations, and the named presets.
#pragma once
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "common/check.h"

#if defined(__CUDACC__)
#define HOST_DEVICE __host__ __device__
#else
#define HOST_DEVICE
#endif

enum class Arch { gpt2, llama };
enum class NormKind { layernorm, rmsnorm };
// pre: x + f(N(x)); post: N(x + f(x)); mix: first floor(alpha*L) blocks post, rest pre;
// sandwich: x + N_out(f(N_in(x))); deepnorm: N(alpha*x + f(x)); lns: pre with the
// outputs of both norms of block l scaled by 1/sqrt(l).
enum class NormScheme { pre, post, mix, sandwich, deepnorm, lns };
enum class InitScheme { normal, scaled, depth_scaled };
// Where LNS applies its factor 1/sqrt(l) (the placement ablation, Table 8 of the paper):
// norm_output, the paper's LNS: both norms' outputs; before_norm: both norms' inputs;
// after_sublayer: the attention and MLP outputs; attn_only / ffn_only: the output of
// the block's first / second norm only.
enum class LnsPlacement { norm_output, before_norm, after_sublayer, attn_only, ffn_only };

// LayerNorm Scaling. `layer` is 1-based for the norms inside block l and 0 for the
// final norm, which is never scaled. Every backend calls this one function so the
// factor cannot drift between them.
HOST_DEVICE inline float depth_scale(NormScheme scheme, int layer) {
    return (scheme == NormScheme::lns && layer > 0) ? 1.0f / sqrtf((float)layer) : 1.0f;
}

// How one pre-type sublayer of block l applies LNS under the configured placement
// (ModelConfig::lns_site): everything is depth_scale(scheme, l), so no placement
// can drift from the factor the norm op computes.
struct LnsSite {
    int norm_layer = 0;      // the layer the norm op scales its output by (0: unscaled)
    float norm_eps = 0.0f;   // before_norm: Norm(s*x) with eps is exactly Norm(x) with eps/s^2
    float branch = 1.0f;     // constant factor on the sublayer's output
};

struct ModelConfig {
    Arch arch = Arch::gpt2;
    int n_layer = 12;
    int n_head = 12;
    int n_embd = 768;       // C
    int ffn_hidden = 3072;  // F: 4C for gpt2, the preset's value for llama
    int vocab_size = 50257; // V
    int max_seq_len = 1024;
    float norm_eps = 1e-5f;
    float rope_theta = 10000.0f;
    NormScheme norm = NormScheme::pre;
    float mix_alpha = 0.25f;  // Mix-LN: fraction of blocks (from the bottom) that are post-LN
    InitScheme init = InitScheme::normal;
    float init_std = 0.02f;
    // Scaling baselines (Table 6 of the paper), combinable with every norm scheme: a
    // learnable multiplier on each residual branch's output before it joins the stream.
    float layerscale = 0.0f;  // LayerScale: per-channel (C) vectors initialised to this; 0 = off
    bool skipinit = false;    // SkipInit: one scalar per branch, initialised to 1/sqrt(L)
    LnsPlacement lns_placement = LnsPlacement::norm_output;  // only with norm == lns

    int padded_vocab() const { return (vocab_size + 127) / 128 * 128; }  // Vp
    int head_dim() const { return n_embd / n_head; }
    NormKind norm_kind() const { return arch == Arch::gpt2 ? NormKind::layernorm : NormKind::rmsnorm; }
    bool has_bias() const { return arch == Arch::gpt2; }
    bool tied_embeddings() const { return arch == Arch::gpt2; }
    bool learned_positions() const { return arch == Arch::gpt2; }
    bool rope() const { return arch == Arch::llama; }
    bool sandwich() const { return norm == NormScheme::sandwich; }
    // Number of leading blocks that use post-norm placement.
    int n_post_blocks() const {
        switch (norm) {
            case NormScheme::post:
            case NormScheme::deepnorm: return n_layer;
            case NormScheme::mix: return (int)std::floor(mix_alpha * n_layer);
            default: return 0;
        }
    }
    bool block_is_post(int l0) const { return l0 < n_post_blocks(); }  // l0: 0-based block
    float residual_alpha() const {  // DeepNorm's up-weighting of the skip connection
        return norm == NormScheme::deepnorm ? std::pow(2.0f * n_layer, 0.25f) : 1.0f;
    }
    float deepnorm_beta() const { return std::pow(8.0f * n_layer, -0.25f); }
    // Width of the first MLP matmul's output: fc (4C) for gpt2, gate|up (2F) for llama.
    int mlp_in_width() const { return arch == Arch::gpt2 ? ffn_hidden : 2 * ffn_hidden; }
    // Branch multipliers: C channels (LayerScale), 1 (SkipInit) or 0 (none).
    int branch_scale_channels() const { return layerscale != 0.0f ? n_embd : skipinit ? 1 : 0; }
    float branch_scale_init() const { return skipinit ? 1.0f / std::sqrt((float)n_layer) : layerscale; }
    // The LNS factor's site for the attention (attn) or MLP sublayer of 0-based block l0.
    LnsSite lns_site(int l0, bool attn) const {
        const int l = l0 + 1;
        const float s = depth_scale(norm, l);
        LnsSite r;
        r.norm_eps = norm_eps;
        switch (lns_placement) {
            case LnsPlacement::norm_output: r.norm_layer = l; break;
            case LnsPlacement::attn_only: r.norm_layer = attn ? l : 0; break;
            case LnsPlacement::ffn_only: r.norm_layer = attn ? 0 : l; break;
            case LnsPlacement::before_norm: r.norm_eps = norm_eps / (s * s); break;
            case LnsPlacement::after_sublayer: r.branch = s; break;
        }
        return r;
    }

    void validate() const;  // throws UserError naming the field
};

const char* to_string(Arch a);
const char* to_string(NormScheme s);
const char* to_string(InitScheme s);
const char* to_string(LnsPlacement p);
Arch parse_arch(const std::string& s);
NormScheme parse_norm_scheme(const std::string& s);
InitScheme parse_init_scheme(const std::string& s);
LnsPlacement parse_lns_placement(const std::string& s);

// Named presets (gpt2-124m, llama-130m, ..., and tiny ones for tests).
ModelConfig preset(const std::string& name);
std::vector<std::string> preset_names();
