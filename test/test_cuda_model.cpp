// The whole model on the CUDA backend against the CPU oracle: one training step of
// every architecture x norm scheme (loss and every gradient), twenty steps of
// training, and bitwise determinism. Runs only where a GPU exists.
//
// Tolerances. PRECISION=FP32: the two backends differ only in summation order, as
// the CPU does against PyTorch, so the same 1e-4 (max-relative) bound applies.
// bf16: every stored activation and gradient is rounded to 8 significant bits
// (relative RMS error ~2^-9 / sqrt(3) ~ 1e-3 per rounding). A gradient passes ~10
// such roundings per sublayer and 2 sublayers per block through 4 blocks; independent
// errors add in quadrature, sqrt(80) * 1e-3 ~ 1e-2, so we bound the relative L2 error
// ||gpu - cpu|| / ||cpu|| of each gradient tensor by 3e-2 and the loss by 1e-2.
#ifdef LNS_CUDA
#include <catch2/catch.hpp>

#include <cstring>

#include "cpu/cpu_backend.h"
#include "kernels/cuda_backend.h"
#include "model/gpt.h"
#include "test/test_util.h"
#include "train/optimizer.h"

namespace {
#ifdef ENABLE_FP32
const double LOSS_TOL = 1e-4, GRAD_TOL = 1e-4;
#else
const double LOSS_TOL = 1e-2, GRAD_TOL = 3e-2;
#endif
const int B = 2, T = 32;

// What the device will hold: the host values rounded to floatX.
void round_to_device_precision(std::vector<float>& v) {
#ifndef ENABLE_FP32
    for (float& x : v) {
        uint32_t bits;
        std::memcpy(&bits, &x, 4);
        bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;  // round to nearest even
        std::memcpy(&x, &bits, 4);
    }
#else
    (void)v;
#endif
}

[[maybe_unused]] double rel_l2(const float* a, const float* b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double grad_err(const float* a, const float* b, size_t n) {
#ifdef ENABLE_FP32
    return max_rel_err(a, b, n);
#else
    return rel_l2(a, b, n);
#endif
}

ModelConfig small(const char* preset_name, NormScheme s) {
    ModelConfig c = preset(preset_name);
    c.norm = s;
    c.vocab_size = 200;  // padded to 256
    return c;
}

std::vector<int> tokens(size_t n, int V, uint64_t seed) {
    Rng rng(seed);
    std::vector<int> t(n);
    for (auto& x : t) x = (int)(rng.next_u64() % V);
    return t;
}
// One forward and backward on both backends from the same (device-rounded) weights:
// the loss and every gradient tensor.
void one_step_matches(const ModelConfig& cfg) {
    GPT<cpu_backend> cpu(cfg, B, T);
    GPT<cuda_backend> gpu(cfg, B, T);
    std::vector<float> p;
    init_params(p, cpu.layout, 11);
    round_to_device_precision(p);
    cpu.set_params(p);
    gpu.set_params(p);
    auto x = tokens(B * T, cfg.vocab_size, 1), y = tokens(B * T, cfg.vocab_size, 2);
    y[5] = -1;
    const float lc = cpu.forward(x.data(), y.data(), B, T), lg = gpu.forward(x.data(), y.data(), B, T);
    CHECK(std::fabs(lg - lc) / lc < LOSS_TOL);
    cpu.zero_grad(), gpu.zero_grad();
    cpu.backward(), gpu.backward();
    const auto gc = cpu.get_grads(), gg = gpu.get_grads();
    for (const auto& t : cpu.layout.tensors) {
        INFO("gradient of " << t.name);
        CHECK(grad_err(gg.data() + t.offset, gc.data() + t.offset, t.size) < GRAD_TOL);
    }
}
}  // namespace

TEST_CASE("CUDA: one training step of every arch x norm scheme matches the CPU backend", "[gpu][model]") {
    for (const char* name : {"gpt2-tiny", "llama-tiny"})
        for (NormScheme s : {NormScheme::pre, NormScheme::post, NormScheme::mix, NormScheme::sandwich,
                             NormScheme::deepnorm, NormScheme::lns}) {
            DYNAMIC_SECTION(name << " " << to_string(s)) {
                one_step_matches(small(name, s));
            }
        }
}

// SkipInit is left to the op test (branch_scale with channels == 1): its scalar's
// gradient is one sum of B*T*C products that largely cancel (doc/reference-errors.md),
// too ill-conditioned for a bf16 bound set for whole tensors.
TEST_CASE("CUDA: one training step with LayerScale and the LNS placements matches the CPU backend",
          "[gpu][model][baselines]") {
    for (const char* name : {"gpt2-tiny", "llama-tiny"})
        for (int v = 0; v < 6; v++) {
            ModelConfig cfg = small(name, v < 3 ? NormScheme::pre : NormScheme::lns);
            if (v == 0) cfg.layerscale = 0.1f;
            if (v == 1) cfg.norm = NormScheme::post, cfg.layerscale = 0.5f;
            if (v == 2) cfg.norm = NormScheme::sandwich, cfg.layerscale = 0.1f;
            if (v == 3) cfg.lns_placement = LnsPlacement::before_norm;
            if (v == 4) cfg.lns_placement = LnsPlacement::after_sublayer, cfg.layerscale = 0.5f;
            if (v == 5) cfg.lns_placement = LnsPlacement::ffn_only;
            DYNAMIC_SECTION(name << " " << to_string(cfg.norm) << " variant " << v) { one_step_matches(cfg); }
        }
}

TEST_CASE("CUDA: twenty AdamW steps track the CPU run; same seed, same bits", "[gpu][model]") {
    for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
        DYNAMIC_SECTION(name) {
            const ModelConfig cfg = small(name, NormScheme::lns);
            AdamWConfig opt;
            opt.weight_decay = 0.1f;
            auto train = [&](auto& model, const std::vector<float>& p) {
                model.set_params(p);
                std::vector<float> losses;
                for (int step = 0; step < 20; step++) {
                    auto x = tokens(B * T, cfg.vocab_size, 100 + step), y = tokens(B * T, cfg.vocab_size, 200 + step);
                    model.zero_grad();
                    losses.push_back(model.forward(x.data(), y.data(), B, T));
                    model.backward();
                    optimizer_step(model, opt, 1e-3f, step + 1, 7 + step);
                }
                return losses;
            };
            std::vector<float> p;
            GPT<cpu_backend> cpu(cfg, B, T);
            init_params(p, cpu.layout, 12);
            round_to_device_precision(p);
            GPT<cuda_backend> gpu(cfg, B, T), gpu2(cfg, B, T);
            const auto lc = train(cpu, p), lg = train(gpu, p), lg2 = train(gpu2, p);
            CHECK(lg == lg2);  // bitwise: deterministic kernels, same seeds
            for (int i = 0; i < 20; i++) {
                INFO("step " << i << ": cpu " << lc[i] << " gpu " << lg[i]);
                // bf16 master-weight updates use stochastic rounding, so the runs drift
                // apart slowly; the bound doubles over the run.
                CHECK(std::fabs(lg[i] - lc[i]) / lc[i] < LOSS_TOL * 2);
            }
            CHECK(lg[19] < lg[0]);
        }
    }
}

TEST_CASE("CUDA: KV-cache decoding matches the full forward and the CPU", "[gpu][model][kv]") {
    const int TT = 40;
    for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
        DYNAMIC_SECTION(name) {
            const ModelConfig cfg = small(name, NormScheme::lns);
            GPT<cpu_backend> cpu(cfg, 1, TT);
            GPT<cuda_backend> gpu(cfg, 1, TT);
            std::vector<float> p;
            init_params(p, cpu.layout, 14);
            round_to_device_precision(p);
            cpu.set_params(p), gpu.set_params(p);
            auto x = tokens(TT, cfg.vocab_size, 5);
            const int Vp = cfg.padded_vocab();
            std::vector<float> full((size_t)TT * Vp), dec(Vp), ref(Vp);
            gpu.forward(x.data(), nullptr, 1, TT);
            for (int t = 0; t < TT; t++) gpu.download_logits_row(full.data() + (size_t)t * Vp, t);
            for (int t = 0; t < TT; t++) {
                INFO("position " << t);
                gpu.forward_decode(x[t], t), cpu.forward_decode(x[t], t);
                gpu.download_logits_row(dec.data(), 0), cpu.download_logits_row(ref.data(), 0);
                // same kernels but the attention: bf16 storage of one op's output differs
                CHECK(max_rel_err(dec.data(), full.data() + (size_t)t * Vp, Vp) < GRAD_TOL);
                CHECK(max_rel_err(dec.data(), ref.data(), Vp) < GRAD_TOL);
            }
        }
    }
}

TEST_CASE("CUDA: --attention flash with a head size the kernels lack fails naming the flag", "[cuda][model][flash]") {
    // checked before any device call, so this runs without a GPU
    const ModelConfig cfg = small("llama-tiny", NormScheme::lns);  // head size 8
    CHECK_THROWS_WITH((GPT<cuda_backend>(cfg, B, T, false, AttentionKind::flash)), Catch::Contains("--attention"));
}

TEST_CASE("CUDA: flash attention in the model matches the CPU and the first attention", "[gpu][model][flash]") {
    // head size 64, the smallest the flash kernels take; the tolerances are the
    // whole-model ones above (the attention ops are compared on their own elsewhere)
    for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
        DYNAMIC_SECTION(name) {
            ModelConfig cfg = small(name, NormScheme::lns);
            cfg.n_embd = 128, cfg.n_head = 2;
            if (cfg.arch == Arch::llama) cfg.ffn_hidden = 256;
            else cfg.ffn_hidden = 4 * cfg.n_embd;
            GPT<cpu_backend> cpu(cfg, B, T, false, AttentionKind::flash);
            const bool flash_ok = cuda_backend::attention_flash_supported(cfg.head_dim());
            GPT<cuda_backend> gpu(cfg, B, T, false, flash_ok ? AttentionKind::flash : AttentionKind::naive),
                naive(cfg, B, T, false, AttentionKind::naive);
            CHECK(gpu.flash == flash_ok);
            std::vector<float> p;
            init_params(p, cpu.layout, 15);
            round_to_device_precision(p);
            auto x = tokens(B * T, cfg.vocab_size, 6), y = tokens(B * T, cfg.vocab_size, 7);
            std::vector<float> grads[3];
            float loss[3];
            int i = 0;
            auto step = [&](auto& m) {
                m.set_params(p);
                m.zero_grad();
                loss[i] = m.forward(x.data(), y.data(), B, T);
                m.backward();
                grads[i++] = m.get_grads();
            };
            step(cpu), step(gpu), step(naive);
            for (int k = 1; k < 3; k++) {
                CHECK(std::fabs(loss[k] - loss[0]) / loss[0] < LOSS_TOL);
                for (const auto& t : cpu.layout.tensors) {
                    INFO((k == 1 ? "flash" : "naive") << " gradient of " << t.name);
                    CHECK(grad_err(grads[k].data() + t.offset, grads[0].data() + t.offset, t.size) < GRAD_TOL);
                }
            }
        }
    }
}

TEST_CASE("CUDA: --recompute gives the same gradients as storing the MLP activation", "[gpu][model]") {
    for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
        DYNAMIC_SECTION(name) {
            const ModelConfig cfg = small(name, NormScheme::lns);
            GPT<cuda_backend> a(cfg, B, T, false), b(cfg, B, T, true);
            std::vector<float> p;
            init_params(p, a.layout, 13);
            a.set_params(p), b.set_params(p);
            auto x = tokens(B * T, cfg.vocab_size, 3), y = tokens(B * T, cfg.vocab_size, 4);
            for (auto* m : {&a, &b}) {
                m->zero_grad();
                m->forward(x.data(), y.data(), B, T);
                m->backward();
            }
            CHECK(a.get_grads() == b.get_grads());
        }
    }
}
#endif
