// The whole model on a device backend (Dev: cuda_backend on a GPU, emu_backend on the
// CPU emulator) against the CPU oracle: one training step (loss and every gradient),
// AdamW steps, KV-cache decoding, flash attention in the model and --recompute. The
// [gpu] tests (test_cuda_model.cpp, which also runs on the emulator) and the
// emulator's own (test_emulator.cpp) share these bodies.
//
// Tolerances. PRECISION=FP32: the two backends differ only in summation order, as
// the CPU does against PyTorch, so the same 1e-4 (max-relative) bound applies.
// bf16: every stored activation and gradient is rounded to 8 significant bits
// (relative RMS error ~2^-9 / sqrt(3) ~ 1e-3 per rounding). A gradient passes ~10
// such roundings per sublayer and 2 sublayers per block through 4 blocks; independent
// errors add in quadrature, sqrt(80) * 1e-3 ~ 1e-2, so we bound the relative L2 error
// ||dev - cpu|| / ||cpu|| of each gradient tensor by 3e-2 and the loss by 1e-2.
#pragma once
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/cpu_backend.h"
#include "model/gpt.h"
#include "test/test_util.h"
#include "train/optimizer.h"

namespace model_compare {

#ifdef ENABLE_FP32
constexpr double LOSS_TOL = 1e-4, GRAD_TOL = 1e-4;
#else
constexpr double LOSS_TOL = 1e-2, GRAD_TOL = 3e-2;
#endif
constexpr int B = 2, T = 32;

// What the device will hold: the host values rounded to floatX.
inline void round_to_device_precision(std::vector<float>& v) {
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

inline double rel_l2(const float* a, const float* b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

inline double grad_err(const float* a, const float* b, size_t n) {
#ifdef ENABLE_FP32
    return max_rel_err(a, b, n);
#else
    return rel_l2(a, b, n);
#endif
}

inline ModelConfig small(const char* preset_name, NormScheme s) {
    ModelConfig c = preset(preset_name);
    c.norm = s;
    c.vocab_size = 200;  // padded to 256
    return c;
}

// two heads of a size the flash kernels take (48, 64 or 128)
inline ModelConfig small_flash(const char* preset_name, int head_size = 64) {
    ModelConfig cfg = small(preset_name, NormScheme::lns);
    cfg.n_embd = 2 * head_size, cfg.n_head = 2;
    cfg.ffn_hidden = cfg.arch == Arch::llama ? 256 : 4 * cfg.n_embd;
    return cfg;
}

inline std::vector<int> tokens(size_t n, int V, uint64_t seed) {
    Rng rng(seed);
    std::vector<int> t(n);
    for (auto& x : t) x = (int)(rng.next_u64() % V);
    return t;
}

// One forward and backward from the same weights and batch: the loss and the gradients.
template <class Model>
float step(Model& m, const std::vector<float>& p, const std::vector<int>& x, const std::vector<int>& y,
           std::vector<float>* grads) {
    m.set_params(p);
    m.zero_grad();
    const float loss = m.forward(x.data(), y.data(), B, T);
    m.backward();
    *grads = m.get_grads();
    return loss;
}

// The loss and every gradient tensor of `dev` against `ref` (the CPU).
inline void check_step(const ParamLayout& layout, float loss, const std::vector<float>& grads, float ref_loss,
                       const std::vector<float>& ref_grads, const char* what) {
    CHECK(std::fabs(loss - ref_loss) / ref_loss < LOSS_TOL);
    for (const auto& t : layout.tensors) {
        INFO(what << " gradient of " << t.name);
        CHECK(grad_err(grads.data() + t.offset, ref_grads.data() + t.offset, t.size) < GRAD_TOL);
    }
}

// One training step on both backends from the same (device-rounded) weights.
template <class Dev>
void one_step_matches(const ModelConfig& cfg) {
    GPT<cpu_backend> cpu(cfg, B, T);
    GPT<Dev> dev(cfg, B, T);
    std::vector<float> p;
    init_params(p, cpu.layout, 11);
    round_to_device_precision(p);
    auto x = tokens(B * T, cfg.vocab_size, 1), y = tokens(B * T, cfg.vocab_size, 2);
    y[5] = -1;
    std::vector<float> gc, gd;
    const float lc = step(cpu, p, x, y, &gc), ld = step(dev, p, x, y, &gd);
    check_step(cpu.layout, ld, gd, lc, gc, Dev::name);
}

// `steps` AdamW steps from the weights p on one fixed batch (random tokens teach a model
// nothing but their uniform frequencies, which it already predicts; a fixed batch it
// can memorise, so the loss must fall); the losses.
template <class Model>
std::vector<float> train(Model& model, const std::vector<float>& p, int steps) {
    const ModelConfig& cfg = model.cfg;
    AdamWConfig opt;
    opt.weight_decay = 0.1f;
    model.set_params(p);
    const auto x = tokens(B * T, cfg.vocab_size, 100), y = tokens(B * T, cfg.vocab_size, 200);
    std::vector<float> losses;
    for (int s = 0; s < steps; s++) {
        model.zero_grad();
        losses.push_back(model.forward(x.data(), y.data(), B, T));
        model.backward();
        optimizer_step(model, opt, 1e-3f, s + 1, 7 + s);
    }
    return losses;
}

// The device run tracks the CPU run; a second device run gives the same bits. `between`
// runs before the second device run (the emulator changes its warp order there).
template <class Dev, class Between>
void training_tracks_cpu(const ModelConfig& cfg, int steps, Between&& between) {
    std::vector<float> p;
    GPT<cpu_backend> cpu(cfg, B, T);
    init_params(p, cpu.layout, 12);
    round_to_device_precision(p);
    GPT<Dev> dev(cfg, B, T), dev2(cfg, B, T);
    const auto lc = train(cpu, p, steps), ld = train(dev, p, steps);
    between();
    const auto ld2 = train(dev2, p, steps);
    CHECK(ld == ld2);  // bitwise: deterministic kernels, same seeds
    for (int i = 0; i < steps; i++) {
        INFO("step " << i << ": cpu " << lc[i] << " " << Dev::name << " " << ld[i]);
        // bf16 master-weight updates use stochastic rounding, so the runs drift
        // apart slowly; the bound doubles over the run.
        CHECK(std::fabs(ld[i] - lc[i]) / lc[i] < LOSS_TOL * 2);
    }
    CHECK(lc[steps - 1] < 0.95f * lc[0]);  // it learns (20 steps: ln 200 = 5.30 to about 4.6)
    CHECK(ld[steps - 1] < 0.95f * ld[0]);
}

// Decoding with the KV cache, position by position, against the full forward on the
// device and against the CPU's decoding.
template <class Dev>
void kv_decoding_matches(const ModelConfig& cfg, int TT) {
    GPT<cpu_backend> cpu(cfg, 1, TT);
    GPT<Dev> dev(cfg, 1, TT);
    std::vector<float> p;
    init_params(p, cpu.layout, 14);
    round_to_device_precision(p);
    cpu.set_params(p), dev.set_params(p);
    auto x = tokens(TT, cfg.vocab_size, 5);
    const int Vp = cfg.padded_vocab();
    std::vector<float> full((size_t)TT * Vp), dec(Vp), ref(Vp);
    dev.forward(x.data(), nullptr, 1, TT);
    for (int t = 0; t < TT; t++) dev.download_logits_row(full.data() + (size_t)t * Vp, t);
    for (int t = 0; t < TT; t++) {
        INFO("position " << t);
        dev.forward_decode(x[t], t), cpu.forward_decode(x[t], t);
        dev.download_logits_row(dec.data(), 0), cpu.download_logits_row(ref.data(), 0);
        // same kernels but the attention: bf16 storage of one op's output differs
        CHECK(max_rel_err(dec.data(), full.data() + (size_t)t * Vp, Vp) < GRAD_TOL);
        CHECK(max_rel_err(dec.data(), ref.data(), Vp) < GRAD_TOL);
    }
}

// Flash attention in the model (where the backend has it for the head size) and the
// first attention, both against the CPU, with the whole-model tolerances (the
// attention ops are compared on their own elsewhere).
template <class Dev>
void flash_in_model_matches(const ModelConfig& cfg) {
    GPT<cpu_backend> cpu(cfg, B, T, false, AttentionKind::flash);
    const bool flash_ok = Dev::attention_flash_supported(cfg.head_dim());
    GPT<Dev> flash(cfg, B, T, false, flash_ok ? AttentionKind::flash : AttentionKind::naive),
        naive(cfg, B, T, false, AttentionKind::naive);
    CHECK(flash.flash == flash_ok);
    std::vector<float> p;
    init_params(p, cpu.layout, 15);
    round_to_device_precision(p);
    auto x = tokens(B * T, cfg.vocab_size, 6), y = tokens(B * T, cfg.vocab_size, 7);
    std::vector<float> gc, gf, gn;
    const float lc = step(cpu, p, x, y, &gc);
    const float lf = step(flash, p, x, y, &gf);
    const float ln = step(naive, p, x, y, &gn);
    check_step(cpu.layout, lf, gf, lc, gc, "flash");
    check_step(cpu.layout, ln, gn, lc, gc, "naive");
}

// --recompute: the MLP activation recomputed in backward. The forward pass is the same,
// so the loss is the same bits. The gradients are the same bits where the recomputation
// repeats the forward's arithmetic: SwiGLU, and GELU in the FP32 build. The bf16 build
// fuses GELU into the fc matmul's epilogue, from the fp32 pre-activation, while the
// recomputation has only its bf16 copy: the activation moves by up to one bf16
// rounding, and the gradients by the whole-model bound.
template <class Dev>
void recompute_matches(const ModelConfig& cfg) {
    GPT<Dev> a(cfg, B, T, false), b(cfg, B, T, true);
    std::vector<float> p;
    init_params(p, a.layout, 13);
    round_to_device_precision(p);
    auto x = tokens(B * T, cfg.vocab_size, 3), y = tokens(B * T, cfg.vocab_size, 4);
    std::vector<float> ga, gb;
    const float la = step(a, p, x, y, &ga), lb = step(b, p, x, y, &gb);
    CHECK(la == lb);
#ifndef ENABLE_FP32
    if (cfg.arch == Arch::gpt2) {  // (the same bits where cuBLASLt declines to fuse: no matter)
        check_step(a.layout, lb, gb, la, ga, "recomputed");
        return;
    }
#endif
    const bool same_bits = ga == gb;
    CHECK(same_bits);
}

// LayerScale and the LNS placements: variant v of 6 (test_cuda_model.cpp lists them).
inline ModelConfig baseline_variant(const char* name, int v) {
    ModelConfig cfg = small(name, v < 3 ? NormScheme::pre : NormScheme::lns);
    if (v == 0) cfg.layerscale = 0.1f;
    if (v == 1) cfg.norm = NormScheme::post, cfg.layerscale = 0.5f;
    if (v == 2) cfg.norm = NormScheme::sandwich, cfg.layerscale = 0.1f;
    if (v == 3) cfg.lns_placement = LnsPlacement::before_norm;
    if (v == 4) cfg.lns_placement = LnsPlacement::after_sublayer, cfg.layerscale = 0.5f;
    if (v == 5) cfg.lns_placement = LnsPlacement::ffn_only;
    return cfg;
}

}  // namespace model_compare
