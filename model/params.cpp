#include "model/params.h"

#include <cmath>

namespace {

// Tensors are declared in model order; add() returns the tensor's index, which
// finish() turns into offsets once every tensor is known.
struct LayoutBuilder {
    ParamLayout& L;
    long add(const std::string& name, std::vector<int> shape, float std, float value = 0.0f) {
        ParamTensor t;
        t.name = name;
        t.shape = std::move(shape);
        t.size = 1;
        for (int d : t.shape) t.size *= (size_t)d;
        t.decay = t.shape.size() >= 2;
        t.init_std = std;
        t.init_value = value;
        L.tensors.push_back(t);
        return (long)L.tensors.size() - 1;
    }
    ParamTensor& last() { return L.tensors.back(); }

    // Decayed tensors (matrices, embeddings) first, then the rest, each in model order:
    // AdamW then covers the buffer in one call with one boundary. Adjacent matrices
    // (q|k|v, gate|up) stay adjacent.
    void finish() {
        L.total = 0;
        for (bool decay : {true, false})
            for (auto& t : L.tensors)
                if (t.decay == decay) t.offset = L.total, L.total += t.size;
        L.n_decay = 0;
        for (auto& t : L.tensors)
            if (t.decay) L.n_decay += t.size;
        auto to_offset = [&](long& f) { f = f < 0 ? -1 : (long)L.tensors[f].offset; };
        for (auto& b : L.blocks)
            for (long* f : {&b.ln1_w, &b.ln1_b, &b.qkv_w, &b.qkv_b, &b.attn_proj_w, &b.attn_proj_b, &b.ln1o_w,
                            &b.ln1o_b, &b.ln2_w, &b.ln2_b, &b.fc_w, &b.fc_b, &b.mlp_proj_w, &b.mlp_proj_b, &b.ln2o_w,
                            &b.ln2o_b, &b.attn_scale, &b.mlp_scale})
                to_offset(*f);
        for (long* f : {&L.wte, &L.wpe, &L.lnf_w, &L.lnf_b, &L.lm_head}) to_offset(*f);
    }
};

}  // namespace

const ParamTensor* ParamLayout::find(const std::string& name) const {
    for (auto& t : tensors)
        if (t.name == name) return &t;
    return nullptr;
}

ParamLayout build_param_layout(const ModelConfig& cfg) {
    cfg.validate();
    ParamLayout L;
    LayoutBuilder b{L};
    const int C = cfg.n_embd, F = cfg.ffn_hidden, Vp = cfg.padded_vocab(), nl = cfg.n_layer;
    const float s = cfg.init_std;
    // Output projections of each residual branch get the init scheme's factor;
    // DeepNorm additionally scales V, the attention output and every MLP weight.
    auto out_proj_std = [&](int l1) {
        switch (cfg.init) {
            case InitScheme::scaled: return s / std::sqrt(2.0f * nl);
            case InitScheme::depth_scaled: return s / std::sqrt(2.0f * l1);
            default: return s;
        }
    };
    const float beta = cfg.norm == NormScheme::deepnorm ? cfg.deepnorm_beta() : 1.0f;
    const bool bias = cfg.has_bias();
    // LayerScale / SkipInit: one multiplier per branch, 1-D so never weight-decayed.
    const int bs = cfg.branch_scale_channels();
    const std::string bs_name = cfg.skipinit ? "_skip_scale.weight" : "_layer_scale.weight";
    auto branch_scale = [&](const std::string& prefix, const char* branch) {
        return bs ? b.add(prefix + branch + bs_name, {bs}, 0.0f, cfg.branch_scale_init()) : -1L;
    };

    if (cfg.arch == Arch::gpt2) {
        L.wte = b.add("transformer.wte.weight", {Vp, C}, s);
        b.last().hf_rows = cfg.vocab_size;
        L.wpe = b.add("transformer.wpe.weight", {cfg.max_seq_len, C}, s);
        for (int l = 0; l < nl; l++) {
            BlockParams bp;
            std::string p = "transformer.h." + std::to_string(l) + ".";
            auto norm = [&](const std::string& n, long& w, long& bb) {
                w = b.add(p + n + ".weight", {C}, 0.0f, 1.0f);
                bb = b.add(p + n + ".bias", {C}, 0.0f, 0.0f);
            };
            auto linear = [&](const std::string& n, int out, int in, float std, long& w, long& bb) {
                w = b.add(p + n + ".weight", {out, in}, std);
                b.last().hf_transposed = true;
                bb = b.add(p + n + ".bias", {out}, 0.0f, 0.0f);
            };
            norm("ln_1", bp.ln1_w, bp.ln1_b);
            linear("attn.c_attn", 3 * C, C, s, bp.qkv_w, bp.qkv_b);
            {   // rows [2C, 3C) of c_attn are V
                auto& t = L.tensors[L.tensors.size() - 2];
                t.tail_rows = C;
                t.tail_std = s * beta;
            }
            linear("attn.c_proj", C, C, out_proj_std(l + 1) * beta, bp.attn_proj_w, bp.attn_proj_b);
            if (cfg.sandwich()) norm("ln_attn_out", bp.ln1o_w, bp.ln1o_b);
            bp.attn_scale = branch_scale(p, "attn");
            norm("ln_2", bp.ln2_w, bp.ln2_b);
            linear("mlp.c_fc", F, C, s * beta, bp.fc_w, bp.fc_b);
            linear("mlp.c_proj", C, F, out_proj_std(l + 1) * beta, bp.mlp_proj_w, bp.mlp_proj_b);
            if (cfg.sandwich()) norm("ln_mlp_out", bp.ln2o_w, bp.ln2o_b);
            bp.mlp_scale = branch_scale(p, "mlp");
            L.blocks.push_back(bp);
        }
        L.lnf_w = b.add("transformer.ln_f.weight", {C}, 0.0f, 1.0f);
        L.lnf_b = b.add("transformer.ln_f.bias", {C}, 0.0f, 0.0f);
        L.lm_head = L.wte;
    } else {
        LNS_CHECK(!bias, "llama has no biases");
        L.wte = b.add("model.embed_tokens.weight", {Vp, C}, s);
        b.last().hf_rows = cfg.vocab_size;
        for (int l = 0; l < nl; l++) {
            BlockParams bp;
            std::string p = "model.layers." + std::to_string(l) + ".";
            auto norm = [&](const std::string& n) { return b.add(p + n + ".weight", {C}, 0.0f, 1.0f); };
            auto linear = [&](const std::string& n, int out, int in, float std) {
                return b.add(p + n + ".weight", {out, in}, std);
            };
            bp.ln1_w = norm("input_layernorm");
            bp.qkv_w = linear("self_attn.q_proj", C, C, s);
            linear("self_attn.k_proj", C, C, s);
            linear("self_attn.v_proj", C, C, s * beta);
            bp.attn_proj_w = linear("self_attn.o_proj", C, C, out_proj_std(l + 1) * beta);
            if (cfg.sandwich()) bp.ln1o_w = norm("attn_out_layernorm");
            bp.attn_scale = branch_scale(p, "attn");
            bp.ln2_w = norm("post_attention_layernorm");
            bp.fc_w = linear("mlp.gate_proj", F, C, s * beta);
            linear("mlp.up_proj", F, C, s * beta);
            bp.mlp_proj_w = linear("mlp.down_proj", C, F, out_proj_std(l + 1) * beta);
            if (cfg.sandwich()) bp.ln2o_w = norm("mlp_out_layernorm");
            bp.mlp_scale = branch_scale(p, "mlp");
            L.blocks.push_back(bp);
        }
        L.lnf_w = b.add("model.norm.weight", {C}, 0.0f, 1.0f);
        L.lm_head = b.add("lm_head.weight", {Vp, C}, s);
        b.last().hf_rows = cfg.vocab_size;
    }
    b.finish();
    return L;
}
