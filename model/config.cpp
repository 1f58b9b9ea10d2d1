#include "model/config.h"

#include <algorithm>

const char* to_string(Arch a) { return a == Arch::gpt2 ? "gpt2" : "llama"; }

const char* to_string(NormScheme s) {
    switch (s) {
        case NormScheme::pre: return "pre";
        case NormScheme::post: return "post";
        case NormScheme::mix: return "mix";
        case NormScheme::sandwich: return "sandwich";
        case NormScheme::deepnorm: return "deepnorm";
        case NormScheme::lns: return "lns";
    }
    return "?";
}

const char* to_string(InitScheme s) {
    switch (s) {
        case InitScheme::normal: return "normal";
        case InitScheme::scaled: return "scaled";
        case InitScheme::depth_scaled: return "depth-scaled";
    }
    return "?";
}

const char* to_string(LnsPlacement p) {
    switch (p) {
        case LnsPlacement::norm_output: return "norm-output";
        case LnsPlacement::before_norm: return "before-norm";
        case LnsPlacement::after_sublayer: return "after-sublayer";
        case LnsPlacement::attn_only: return "attn-only";
        case LnsPlacement::ffn_only: return "ffn-only";
    }
    return "?";
}

Arch parse_arch(const std::string& s) {
    if (s == "gpt2") return Arch::gpt2;
    if (s == "llama") return Arch::llama;
    throw UserError("unknown architecture '" + s + "': expected gpt2 or llama");
}

NormScheme parse_norm_scheme(const std::string& s) {
    for (NormScheme n : {NormScheme::pre, NormScheme::post, NormScheme::mix, NormScheme::sandwich,
                         NormScheme::deepnorm, NormScheme::lns})
        if (s == to_string(n)) return n;
    throw UserError("--norm: unknown scheme '" + s + "': expected pre, post, mix, sandwich, deepnorm or lns");
}

InitScheme parse_init_scheme(const std::string& s) {
    for (InitScheme i : {InitScheme::normal, InitScheme::scaled, InitScheme::depth_scaled})
        if (s == to_string(i)) return i;
    throw UserError("--init: unknown scheme '" + s + "': expected normal, scaled or depth-scaled");
}

LnsPlacement parse_lns_placement(const std::string& s) {
    for (LnsPlacement p : {LnsPlacement::norm_output, LnsPlacement::before_norm, LnsPlacement::after_sublayer,
                           LnsPlacement::attn_only, LnsPlacement::ffn_only})
        if (s == to_string(p)) return p;
    throw UserError("--lns-placement: unknown placement '" + s +
                    "': expected norm-output, before-norm, after-sublayer, attn-only or ffn-only");
}

namespace {
ModelConfig gpt2(int L, int H, int C) {
    ModelConfig c;
    c.arch = Arch::gpt2;
    c.n_layer = L, c.n_head = H, c.n_embd = C, c.ffn_hidden = 4 * C;
    c.vocab_size = 50257, c.max_seq_len = 1024, c.norm_eps = 1e-5f;
    return c;
}
ModelConfig llama(int C, int L, int H, int F) {
    ModelConfig c;
    c.arch = Arch::llama;
    c.n_layer = L, c.n_head = H, c.n_embd = C, c.ffn_hidden = F;
    c.vocab_size = 32000, c.max_seq_len = 1024, c.norm_eps = 1e-6f;
    return c;
}
const std::map<std::string, ModelConfig>& presets() {
    static const std::map<std::string, ModelConfig> p = [] {
        std::map<std::string, ModelConfig> m;
        m["gpt2-124m"] = gpt2(12, 12, 768);
        m["gpt2-350m"] = gpt2(24, 16, 1024);
        m["gpt2-774m"] = gpt2(36, 20, 1280);
        m["gpt2-1.5b"] = gpt2(48, 25, 1600);
        // The paper's LLaMA sizes (Table 9 of arXiv 2502.05795).
        m["llama-130m"] = llama(768, 12, 12, 2048);
        m["llama-250m"] = llama(768, 24, 16, 2560);
        m["llama-350m"] = llama(1024, 24, 16, 2736);
        m["llama-1b"] = llama(2048, 24, 32, 5461);
        m["llama-7b"] = llama(4096, 32, 32, 11008);
        // Small models for tests (tiny) and CPU quick runs (mini), byte-level vocab.
        ModelConfig t = gpt2(4, 4, 32);
        t.vocab_size = 256, t.max_seq_len = 64;
        m["gpt2-tiny"] = t;
        t = llama(32, 4, 4, 64);
        t.vocab_size = 256, t.max_seq_len = 64;
        m["llama-tiny"] = t;
        t = gpt2(6, 4, 128);
        t.vocab_size = 256, t.max_seq_len = 256;
        m["gpt2-mini"] = t;
        t = llama(128, 6, 4, 352);
        t.vocab_size = 256, t.max_seq_len = 256;
        m["llama-mini"] = t;
        return m;
    }();
    return p;
}
}  // namespace

ModelConfig preset(const std::string& name) {
    auto it = presets().find(name);
    if (it == presets().end()) {
        std::string all;
        for (auto& n : preset_names()) all += (all.empty() ? "" : ", ") + n;
        throw UserError("--model: unknown preset '" + name + "': expected one of " + all);
    }
    return it->second;
}

std::vector<std::string> preset_names() {
    std::vector<std::string> v;
    for (auto& kv : presets()) v.push_back(kv.first);
    return v;
}

void ModelConfig::validate() const {
    // a bound before anything is built per layer (an absurd depth would fill the host's memory
    // with layout entries before any size check); the paper's deepest models have 32 blocks
    REQUIRE_INPUT(n_layer >= 1 && n_layer <= 4096, "--n-layer: expected 1..4096, got %d", n_layer);
    REQUIRE_INPUT(n_head >= 1, "--n-head: expected >= 1, got %d", n_head);
    REQUIRE_INPUT(n_embd >= 1 && n_embd % n_head == 0,
                  "--n-embd: expected a positive multiple of --n-head (%d), got %d", n_head, n_embd);
    REQUIRE_INPUT(!rope() || head_dim() % 2 == 0,
                  "--n-embd/--n-head: RoPE needs an even head dimension, got %d", head_dim());
    REQUIRE_INPUT(ffn_hidden >= 1, "--ffn-hidden: expected >= 1, got %d", ffn_hidden);
    REQUIRE_INPUT(vocab_size >= 2, "--vocab-size: expected >= 2, got %d", vocab_size);
    REQUIRE_INPUT(max_seq_len >= 1, "--max-seq-len: expected >= 1, got %d", max_seq_len);
    REQUIRE_INPUT(norm_eps > 0, "--norm-eps: expected > 0, got %g", norm_eps);
    // rope_theta <= 0 would switch RoPE off in the kernels: a LLaMA with no positions at all
    REQUIRE_INPUT(!rope() || (std::isfinite(rope_theta) && rope_theta > 0),
                  "--rope-theta: expected a finite value > 0, got %g", rope_theta);
    REQUIRE_INPUT(mix_alpha >= 0 && mix_alpha <= 1, "--mix-alpha: expected in [0, 1], got %g", mix_alpha);
    REQUIRE_INPUT(init_std > 0, "--init-std: expected > 0, got %g", init_std);
    REQUIRE_INPUT(std::isfinite(layerscale) && layerscale >= 0,
                  "--layerscale: expected a finite initial value >= 0 (0 = off), got %g", layerscale);
    // Both would multiply the same branch twice; the paper compares them as alternatives.
    REQUIRE_INPUT(!(skipinit && layerscale != 0.0f),
                  "--layerscale and --skipinit: give one of them (both scale the same residual branches)");
    REQUIRE_INPUT(lns_placement == LnsPlacement::norm_output || norm == NormScheme::lns,
                  "--lns-placement %s: only valid with --norm lns (got --norm %s)", to_string(lns_placement),
                  to_string(norm));
}
