// Model-level properties of the CPU backend that need no reference implementation:
// parameter counts of the presets, the flat layout, gradient accumulation,
// recomputation, and the Hugging Face round trip.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/check.h"
#include "cpu/cpu_backend.h"
#include "model/gpt.h"
#include "model/hf_io.h"
#include "test/test_util.h"
#include "train/schedule.h"

TEST_CASE("preset parameter counts match the architectures' formulas", "[model]") {
    // GPT-2 124M with the vocabulary padded to 50304, as llm.c counts it
    CHECK(build_param_layout(preset("gpt2-124m")).total == 124475904u);
    // LLaMA: untied embedding and head (V*C each), per block 4C^2 + 3CF + 2C, final norm C
    auto llama = [](size_t C, size_t L, size_t F) { return 32000 * C * 2 + L * (4 * C * C + 3 * C * F + 2 * C) + C; };
    CHECK(build_param_layout(preset("llama-130m")).total == llama(768, 12, 2048));
    CHECK(build_param_layout(preset("llama-350m")).total == llama(1024, 24, 2736));
    CHECK(build_param_layout(preset("llama-1b")).total == llama(2048, 24, 5461));
    // sandwich adds two norms per block
    ModelConfig s = preset("gpt2-124m");
    s.norm = NormScheme::sandwich;
    CHECK(build_param_layout(s).total == 124475904u + 12 * 4 * 768);
}

TEST_CASE("the flat layout: contiguous, fused q|k|v and gate|up, tied GPT-2 head", "[model]") {
    for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
        const ParamLayout L = build_param_layout(preset(name));
        // every element belongs to exactly one tensor; decayed tensors fill [0, n_decay)
        std::vector<int> owner(L.total, 0);
        size_t decayed = 0;
        for (const auto& t : L.tensors) {
            for (size_t i = 0; i < t.size; i++) owner[t.offset + i]++;
            CHECK((t.offset + t.size <= L.n_decay) == t.decay);
            if (t.decay) decayed += t.size;
        }
        CHECK(std::all_of(owner.begin(), owner.end(), [](int c) { return c == 1; }));
        CHECK(decayed == L.n_decay);
        const auto& b0 = L.blocks[0];
        if (std::string(name) == "llama-tiny") {
            CHECK(L.find("model.layers.0.self_attn.k_proj.weight")->offset == (size_t)b0.qkv_w + 32 * 32);
            CHECK(L.find("model.layers.0.self_attn.v_proj.weight")->offset == (size_t)b0.qkv_w + 2 * 32 * 32);
            CHECK(L.find("model.layers.0.mlp.up_proj.weight")->offset == (size_t)b0.fc_w + 64 * 32);
            CHECK(L.lm_head != L.wte);
            CHECK(L.find("model.norm.weight")->decay == false);
        } else {
            CHECK(L.lm_head == L.wte);
            CHECK(L.find("transformer.h.0.attn.c_attn.weight")->hf_transposed);
            CHECK(L.find("transformer.wte.weight")->decay == true);
        }
    }
}

namespace {
std::vector<float> grads_for(GPT<cpu_backend>& m, const std::vector<int>& x, const std::vector<int>& y, int B, int T,
                             int micro) {
    m.zero_grad();
    const int rows = B / micro;
    for (int k = 0; k < micro; k++) {
        m.forward(x.data() + k * rows * T, y.data() + k * rows * T, rows, T);
        m.backward(1.0f / micro);
    }
    return m.get_grads();
}
}  // namespace

TEST_CASE("gradient accumulation over micro-batches equals one large batch", "[model]") {
    const int B = 4, T = 16;
    const ModelConfig cfg = [] {
        ModelConfig c = preset("llama-tiny");
        c.norm = NormScheme::lns;
        return c;
    }();
    GPT<cpu_backend> m(cfg, B, T);
    m.init_random(3);
    Rng rng(4);
    std::vector<int> x(B * T), y(B * T);
    for (int i = 0; i < B * T; i++) x[i] = (int)(rng.next_u64() % 256), y[i] = (int)(rng.next_u64() % 256);
    const auto one = grads_for(m, x, y, B, T, 1), four = grads_for(m, x, y, B, T, 4);
    // the same sums in another order: fp32 rounding only
    CHECK(max_rel_err(four, one) < 1e-5);
}

TEST_CASE("recomputing the MLP activation gives identical gradients", "[model]") {
    const int B = 2, T = 16;
    for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
        DYNAMIC_SECTION(name) {
            ModelConfig cfg = preset(name);
            cfg.norm = NormScheme::mix;
            GPT<cpu_backend> a(cfg, B, T, false), b(cfg, B, T, true);
            a.init_random(5), b.init_random(5);
            Rng rng(6);
            std::vector<int> x(B * T), y(B * T);
            for (int i = 0; i < B * T; i++) x[i] = (int)(rng.next_u64() % 256), y[i] = (int)(rng.next_u64() % 256);
            CHECK(b.act_bytes < a.act_bytes);
            CHECK(grads_for(a, x, y, B, T, 1) == grads_for(b, x, y, B, T, 1));
        }
    }
}

TEST_CASE("Hugging Face round trip and clear errors for mismatched files", "[model][io]") {
    TmpDir dir;
    for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
        DYNAMIC_SECTION(name) {
            ModelConfig cfg = preset(name);
            cfg.norm = NormScheme::deepnorm;
            cfg.vocab_size = 200;
            const ParamLayout L = build_param_layout(cfg);
            std::vector<float> p, q;
            init_params(p, L, 9);
            save_pretrained(dir / name, cfg, L, p);
            const ModelConfig back = load_pretrained_config(dir / name);
            CHECK(back.arch == cfg.arch);
            CHECK(back.norm == NormScheme::deepnorm);
            CHECK(back.vocab_size == 200);
            CHECK(back.n_layer == cfg.n_layer);
            load_safetensors_model(dir / name + "/model.safetensors", L, q);
            CHECK(q == p);  // padding rows are zero on both sides

            // a file for another width names the tensor and both shapes
            ModelConfig wide = cfg;
            wide.n_embd = 64, wide.ffn_hidden = 2 * cfg.ffn_hidden;
            REQUIRE_THROWS_WITH(load_safetensors_model(dir / name + "/model.safetensors", build_param_layout(wide), q),
                                Catch::Contains("model.safetensors") && Catch::Contains("shape"));
        }
    }
    REQUIRE_THROWS_WITH(load_pretrained_config(dir / "missing"), Catch::Contains("missing/config.json"));
    // a llama config.json edited by hand: each fault named as itself, with the file
    std::filesystem::create_directories(dir / "edited");
    auto edited = [&](const std::string& heads, const std::string& kv) {
        std::ofstream(dir / "edited/config.json")
            << R"({"model_type": "llama", "vocab_size": 256, "max_position_embeddings": 64, "hidden_size": 32,
                   "num_hidden_layers": 2, "intermediate_size": 64, "num_attention_heads": )"
            << heads << R"(, "num_key_value_heads": )" << kv << "}";
        return dir / "edited";
    };
    CHECK(load_pretrained_config(edited("4", "4")).n_head == 4);
    REQUIRE_THROWS_WITH(load_pretrained_config(edited("3", "4")),  // 32 channels into 3 heads, before GQA
                        Catch::Contains("edited/config.json: --n-embd: expected a positive multiple of --n-head (3)"));
    REQUIRE_THROWS_WITH(load_pretrained_config(edited("4", "2")),
                        Catch::Contains("edited/config.json: grouped-query attention"));
    REQUIRE_THROWS_WITH(load_pretrained_config(edited("4", "\"x\"")), Catch::Contains("mistyped key"));
}

TEST_CASE("learning-rate schedules: warmup, then cosine / linear / constant / WSD to the floor", "[model][schedule]") {
    LrSchedule s;
    s.lr = 1.0f, s.warmup = 10, s.total = 110, s.min_frac = 0.1f, s.decay_frac = 0.2f;
    for (Schedule k : {Schedule::cosine, Schedule::linear, Schedule::constant, Schedule::wsd}) {
        s.kind = k;
        CHECK(s.at(0) == Approx(0.1f));  // (step + 1) / warmup
        CHECK(s.at(9) == Approx(1.0f));
        CHECK(s.at(10) == Approx(1.0f));  // the peak right after warmup
    }
    s.kind = Schedule::cosine;
    CHECK(s.at(60) == Approx(0.55f).epsilon(1e-5));  // halfway: floor + (peak - floor) / 2
    CHECK(s.at(109) == Approx(0.1f + 0.45f * (1.0f + std::cos(3.14159265f * 99.0f / 100.0f))).epsilon(1e-5));
    s.kind = Schedule::linear;
    CHECK(s.at(60) == Approx(0.55f).epsilon(1e-5));
    CHECK(s.at(110) == Approx(0.1f).epsilon(1e-5));
    s.kind = Schedule::constant;
    CHECK(s.at(109) == 1.0f);
    s.kind = Schedule::wsd;  // stable until step 88 (the last 20% = 22 steps decay)
    CHECK(s.at(87) == 1.0f);
    CHECK(s.at(88) == Approx(1.0f));
    CHECK(s.at(99) == Approx(1.0f - 0.9f * 11.0f / 22.0f).epsilon(1e-5));
    CHECK(s.at(110) == Approx(0.1f).epsilon(1e-5));
    CHECK_THROWS_WITH(parse_schedule("cyclic"), Catch::Contains("--schedule"));
}

TEST_CASE("decoding with the KV cache gives the logits of the full forward, position by position", "[model][kv]") {
    const int T = 12;
    for (const char* name : {"gpt2-tiny", "llama-tiny"})
        for (NormScheme s : {NormScheme::lns, NormScheme::post, NormScheme::sandwich, NormScheme::deepnorm}) {
            DYNAMIC_SECTION(name << " " << to_string(s)) {
                ModelConfig cfg = preset(name);
                cfg.norm = s;
                GPT<cpu_backend> m(cfg, 2, T);
                m.init_random(21);
                Rng rng(22);
                std::vector<int> x(T);
                for (auto& t : x) t = (int)(rng.next_u64() % 256);
                const int Vp = cfg.padded_vocab();
                std::vector<float> full((size_t)T * Vp), row(Vp);
                m.forward(x.data(), nullptr, 1, T);
                for (int t = 0; t < T; t++) m.download_logits_row(full.data() + (size_t)t * Vp, t);
                for (int t = 0; t < T; t++) {
                    m.forward_decode(x[t], t);
                    m.download_logits_row(row.data(), 0);
                    INFO("position " << t);
                    // the same arithmetic in the same order, except matmul blocking over rows
                    CHECK(max_rel_err(row.data(), full.data() + (size_t)t * Vp, Vp) < 1e-5);
                }
            }
        }
}
