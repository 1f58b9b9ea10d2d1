// CUDA ops' own source on the CPU emulator of test/emu, against the CPU twin, with the
// bounds of the [gpu] tests in test/test_cuda_ops.cpp: inputs in bf16, each output
// rounded once to bf16 (U = 2^-8 relative) after fp32 arithmetic (ACC = 1e-5 against the
// CPU's fp32 in a different order).
//
// The fused residual + norm + LayerNorm Scaling pair (kernels/norm.cuh): both forward
// modes (a warp per row, C <= 1024, and a block per row), the 128-bit and scalar paths,
// both backward row splits (one row group, and several combined through shared memory),
// the fixed-order dw/db reduction, and that no result depends on which warp runs ahead.
// Cross-entropy (kernels/crossentropy.cuh): padding columns, ignored targets, in place.
// AdamW and the squared norm (kernels/adamw.cuh): the CPU's fp32 values to the bit,
// stochastic rounding to a neighbouring bf16 by seed, the norm in a fixed order.
// GELU and SwiGLU (kernels/activation.cuh): vector and scalar paths, tails.
// Branch scaling (kernels/branch_scale.cuh): per channel, scalar, factor only, in place.
// Embeddings (kernels/encoder.cuh): repeated and unseen tokens, with and without wpe.
// KV-cache attention (kernels/attention_kv.cuh): decoding step by step, with RoPE.
// The first attention (kernels/attention.cuh): its permutation and causal softmax
// kernels around host-emulated cuBLAS GEMMs, with and without RoPE.
#include <catch2/catch.hpp>

#if defined(LNS_CUDA) && !defined(ENABLE_FP32)
#include "test/emu/cuda_emu.h"
// after the emulator
#include "cpu/cpu_backend.h"
#include "kernels/activation.cuh"
#include "kernels/adamw.cuh"
#include "kernels/attention.cuh"
#include "kernels/attention_kv.cuh"
#include "kernels/branch_scale.cuh"
#include "kernels/crossentropy.cuh"
#include "kernels/encoder.cuh"
#include "kernels/norm.cuh"
#include "test/emu/bf16_vec.h"
#include "test/flash_bounds.h"
#include "test/test_util.h"

namespace {

constexpr double U = 1.0 / 256, ACC = 1e-5, TOL = U + ACC;

using bf16 = __nv_bfloat16;

std::vector<float> rand_v(size_t n, uint64_t seed, float std = 1.0f, float offset = 0.0f) {
    auto v = randn(n, seed, std);
    for (auto& x : v) x += offset;
    return v;
}
const char* name(NormKind k) { return k == NormKind::layernorm ? "layernorm" : "rmsnorm"; }

}  // namespace

TEST_CASE("the fused norm + LNS kernels, run on the CPU emulator, match the CPU twin", "[norm][emulation]") {
    for (NormKind kind : {NormKind::layernorm, NormKind::rmsnorm})
        for (NormScheme scheme : {NormScheme::pre, NormScheme::lns})
            for (int C : {32, 40, 771, 1032})  // 1032: a block per row; 771: the scalar path
                for (int N : {1, 7}) {
                    DYNAMIC_SECTION(name(kind) << " " << to_string(scheme) << " C " << C << " N " << N) {
                        const bool ln = kind == NormKind::layernorm;
                        const int layer = 3;
                        const size_t NC = (size_t)N * C;
                        const Bf16Vec x(rand_v(NC, 10 + C, 1.0f, 0.5f)), y(rand_v(NC, 11 + C));
                        const Bf16Vec w(rand_v(C, 12, 0.3f, 1.0f)), b(rand_v(C, 13, 0.3f));
                        Bf16Vec res(NC), out(NC);
                        std::vector<float> mean(N, NAN), rstd(N, NAN);
                        norm_forward(res.v.data(), out.v.data(), ln ? mean.data() : nullptr, rstd.data(), x.v.data(),
                                     y.v.data(), 1.0f, w.v.data(), ln ? b.v.data() : nullptr, N, C, kind, 1e-5f,
                                     scheme, layer);
                        // the kernel normalises the residual as stored (rounded); so does the reference
                        std::vector<float> r_res(NC), r_out(NC), r_mean(N), r_rstd(N);
                        cpu_backend::residual_norm_forward(r_res.data(), r_out.data(), r_mean.data(), r_rstd.data(),
                                                           x.f.data(), y.f.data(), 1.0f, w.f.data(),
                                                           ln ? b.f.data() : nullptr, N, C, kind, 1e-5f, scheme, layer);
                        CHECK(max_rel_err(res.get(), r_res) <= TOL);
                        const auto stored = res.get();
                        cpu_backend::residual_norm_forward(nullptr, r_out.data(), r_mean.data(), r_rstd.data(),
                                                           stored.data(), nullptr, 1.0f, w.f.data(),
                                                           ln ? b.f.data() : nullptr, N, C, kind, 1e-5f, scheme, layer);
                        CHECK(max_rel_err(out.get(), r_out) <= TOL);
                        CHECK(max_rel_err(rstd, r_rstd) <= ACC);
                        if (ln) CHECK(max_rel_err(mean, r_mean) <= ACC);

                        // backward (pre-type: dres given), against the CPU on the same inputs
                        const Bf16Vec dout(rand_v(NC, 22)), dres(rand_v(NC, 23));
                        const Bf16Vec dw0(rand_v(C, 24)), db0(rand_v(C, 25));
                        Bf16Vec dx(NC), dw = dw0, db = db0;
                        norm_backward(dx.v.data(), nullptr, dw.v.data(), ln ? db.v.data() : nullptr, dout.v.data(),
                                      dres.v.data(), res.v.data(), w.v.data(), ln ? mean.data() : nullptr, rstd.data(),
                                      1.0f, N, C, kind, scheme, layer);
                        std::vector<float> r_dx(NC), r_dw = dw0.f, r_db = db0.f;
                        cpu_backend::residual_norm_backward(r_dx.data(), nullptr, r_dw.data(),
                                                            ln ? r_db.data() : nullptr, dout.f.data(), dres.f.data(),
                                                            stored.data(), w.f.data(), mean.data(), rstd.data(), 1.0f,
                                                            N, C, kind, scheme, layer);
                        CHECK(max_rel_err(dx.get(), r_dx) <= TOL);
                        CHECK(max_rel_err(dw.get(), r_dw) <= TOL);
                        if (ln) CHECK(max_rel_err(db.get(), r_db) <= TOL);
                    }
                }
}

TEST_CASE("the fused norm backward gives the same bits whichever warp runs ahead", "[norm][emulation]") {
    // 70 rows of 40 channels: several row groups per block, combined through shared memory
    const int N = 70, C = 40, layer = 5;
    const size_t NC = (size_t)N * C;
    const Bf16Vec res(rand_v(NC, 30, 1.0f, 0.3f)), w(rand_v(C, 31, 0.3f, 1.0f)), dout(rand_v(NC, 32));
    const Bf16Vec dw0(rand_v(C, 33)), db0(rand_v(C, 34));
    std::vector<float> mean(N), rstd(N), out(NC);
    cpu_backend::residual_norm_forward(nullptr, out.data(), mean.data(), rstd.data(), res.f.data(), nullptr, 1.0f,
                                       w.f.data(), nullptr, N, C, NormKind::layernorm, 1e-5f, NormScheme::lns, layer);
    std::vector<float> got[2];
    for (int o = 0; o < 2; o++) {
        Bf16Vec dx(NC), dy(NC), dw = dw0, db = db0;
        emu::set_order(o ? emu::Order::reverse : emu::Order::forward);
        norm_backward(dx.v.data(), dy.v.data(), dw.v.data(), db.v.data(), dout.v.data(), nullptr, res.v.data(),
                      w.v.data(), mean.data(), rstd.data(), 1.6f, N, C, NormKind::layernorm, NormScheme::lns, layer);
        emu::set_order(emu::Order::forward);
        for (const Bf16Vec* v : {&dx, &dy, &dw, &db})
            for (float f : v->get()) got[o].push_back(f);
    }
    CHECK(std::memcmp(got[0].data(), got[1].data(), got[0].size() * 4) == 0);
    std::vector<float> r_dx(NC), r_dy(NC), r_dw = dw0.f, r_db = db0.f;
    cpu_backend::residual_norm_backward(r_dx.data(), r_dy.data(), r_dw.data(), r_db.data(), dout.f.data(), nullptr,
                                        res.f.data(), w.f.data(), mean.data(), rstd.data(), 1.6f, N, C,
                                        NormKind::layernorm, NormScheme::lns, layer);
    std::vector<float> want;
    for (const auto* v : {&r_dx, &r_dy, &r_dw, &r_db}) want.insert(want.end(), v->begin(), v->end());
    CHECK(max_rel_err(got[0], want) <= TOL);
}

TEST_CASE("the cross-entropy kernels, run on the CPU emulator, match the CPU twin", "[emulation]") {
    for (int V : {100, 771})
        for (int N : {1, 7})
            for (float scale : {1.0f, 10.0f}) {  // 10: a peaked softmax
                const int Vp = (V + 127) / 128 * 128;
                const size_t NV = (size_t)N * Vp;
                DYNAMIC_SECTION("N " << N << " V " << V << " scale " << scale) {
                    const Bf16Vec logits(rand_v(NV, 50 + V + N, scale));  // noise in the padding must not matter
                    Rng rng(51 + N);
                    std::vector<int> tgt(N);
                    for (int i = 0; i < N; i++) tgt[i] = (i % 4 == 3) ? -1 : (int)(rng.next_u64() % V);
                    const float dloss = 1.0f / N;
                    std::vector<float> r_losses(N), r_dl(NV);
                    cpu_backend::crossentropy_forward(r_losses.data(), logits.f.data(), tgt.data(), N, V, Vp);
                    cpu_backend::crossentropy_backward(r_dl.data(), logits.f.data(), tgt.data(), dloss, N, V, Vp);
                    double max_logit = 1.0;
                    for (float f : logits.f) max_logit = std::max(max_logit, (double)std::fabs(f));

                    std::vector<float> losses(N, NAN);
                    ce_forward(losses.data(), logits.v.data(), tgt.data(), N, V, Vp);
                    double err = 0;
                    for (int n = 0; n < N; n++) err = std::max(err, std::fabs((double)losses[n] - r_losses[n]));
                    CHECK(err <= ACC * max_logit);  // a log-sum-exp of values up to max_logit, in fp32
                    Bf16Vec dl(NV);
                    ce_backward(dl.v.data(), logits.v.data(), tgt.data(), dloss, N, V, Vp);
                    const auto got = dl.get();
                    err = 0;
                    bool zeros = true;
                    for (size_t i = 0; i < NV; i++) {
                        err = std::max(err, std::fabs((double)got[i] - r_dl[i]));
                        if ((tgt[i / Vp] < 0 || (int)(i % Vp) >= V) && got[i] != 0.0f) zeros = false;
                    }
                    CHECK(err <= TOL * dloss);
                    CHECK(zeros);
                    // in place, as the fused classifier runs it: the same bits
                    Bf16Vec io = logits;
                    ce_backward(io.v.data(), io.v.data(), tgt.data(), dloss, N, V, Vp);
                    CHECK(std::memcmp(io.v.data(), dl.v.data(), NV * 2) == 0);
                }
            }
    // a row width that is not a multiple of the vector width: the scalar path
    const int N = 5, V = 37, Vp = 41;
    const Bf16Vec logits(rand_v((size_t)N * Vp, 60, 2.0f));
    const std::vector<int> tgt = {0, 36, -1, 5, 20};
    std::vector<float> r_losses(N), r_dl((size_t)N * Vp), losses(N, NAN);
    cpu_backend::crossentropy_forward(r_losses.data(), logits.f.data(), tgt.data(), N, V, Vp);
    cpu_backend::crossentropy_backward(r_dl.data(), logits.f.data(), tgt.data(), 0.5f, N, V, Vp);
    ce_forward(losses.data(), logits.v.data(), tgt.data(), N, V, Vp);
    Bf16Vec dl((size_t)N * Vp);
    ce_backward(dl.v.data(), logits.v.data(), tgt.data(), 0.5f, N, V, Vp);
    CHECK(max_rel_err(losses, r_losses) <= ACC * 8);
    CHECK(max_rel_err(dl.get(), r_dl) <= TOL);
}

TEST_CASE("the AdamW and norm_squared kernels, run on the CPU emulator, match the CPU twin", "[emulation]") {
    const size_t n = 1003;
    for (int t : {1, 7})
        for (float wd : {0.0f, 0.1f}) {
            INFO("t " << t << " weight decay " << wd);
            const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, gscale = 0.7f;
            const auto master0 = randn(n, 70), m0 = randn(n, 72, 0.1f);
            auto v0 = randn(n, 73, 0.1f);
            for (auto& x : v0) x *= x;
            const Bf16Vec grads(randn(n, 71));
            std::vector<float> p = master0, m = m0, v = v0;
            cpu_backend::adamw_update(p.data(), nullptr, grads.f.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd,
                                      t, gscale, 1234);
            auto run = [&](uint32_t seed, std::vector<float>& master, std::vector<float>& mm, std::vector<float>& vv) {
                master = master0, mm = m0, vv = v0;
                Bf16Vec params(n);
                adamw(params.v.data(), master.data(), grads.v.data(), mm.data(), vv.data(), n, lr, b1, b2, eps, wd, t,
                      gscale, seed);
                return params.get();
            };
            std::vector<float> master, mm, vv;
            const auto params = run(1234, master, mm, vv);
            // the same fp32 expressions without contraction: the CPU's values to the bit
            CHECK(std::memcmp(master.data(), p.data(), n * 4) == 0);
            CHECK(std::memcmp(mm.data(), m.data(), n * 4) == 0);
            CHECK(std::memcmp(vv.data(), v.data(), n * 4) == 0);
            bool neighbours = true;  // each param the master rounded down or up to a bf16
            for (size_t i = 0; i < n; i++) {
                uint32_t mb, pb;
                std::memcpy(&mb, &master[i], 4);
                std::memcpy(&pb, &params[i], 4);
                if (pb != (mb & 0xffff0000u) && pb != (mb & 0xffff0000u) + 0x10000u) neighbours = false;
            }
            CHECK(neighbours);
            CHECK(run(1235, master, mm, vv) != params);  // another seed rounds some differently
            CHECK(run(1234, master, mm, vv) == params);
        }
    {
        // stochastic rounding is unbiased: lr = 0 leaves master = 1 + 2^-9, a quarter of the
        // way from bf16 1 to 1 + 2^-7, so a quarter of the params round up (binomial sd
        // 0.0017 of n; bound 6 sd)
        const size_t n1 = 1 << 16;
        std::vector<float> master(n1, 1.0f + 1.0f / 512), m1(n1, 0.0f), v1(n1, 0.0f);
        const Bf16Vec zeros(std::vector<float>(n1, 0.0f));
        Bf16Vec params(n1);
        adamw(params.v.data(), master.data(), zeros.v.data(), m1.data(), v1.data(), n1, 0.0f, 0.9f, 0.95f, 1e-8f, 0.0f,
              1, 1.0f, 99);
        size_t up = 0;
        for (float x : params.get()) up += x > 1.0f;
        CHECK(std::fabs((double)up / n1 - 0.25) < 0.01);
    }
    for (size_t n2 : {(size_t)1, (size_t)7, (size_t)1000, (size_t)70001}) {
        const Bf16Vec x(randn(n2, 80 + n2));
        const double ref = cpu_backend::norm_squared(x.f.data(), n2);
        double got[2];
        for (int o = 0; o < 2; o++) {
            emu::set_order(o ? emu::Order::reverse : emu::Order::forward);
            got[o] = *sumsq(x.v.data(), n2);
        }
        emu::set_order(emu::Order::forward);
        INFO("n " << n2);
        // squares of bf16 values are exact in double; only the order of the additions differs
        CHECK(std::fabs(got[0] - ref) <= 1e-12 * ref);
        CHECK(std::memcmp(&got[0], &got[1], sizeof(double)) == 0);
    }
}

TEST_CASE("the GELU and SwiGLU kernels, run on the CPU emulator, match the CPU twin", "[emulation]") {
    for (size_t n : {(size_t)1, (size_t)7, (size_t)8, (size_t)1003})
        for (size_t off : {(size_t)0, (size_t)1}) {  // 1: misaligned, the scalar path
            INFO("n " << n << " offset " << off);
            const Bf16Vec x(rand_v(n + off, 30 + n, 2.0f)), d(rand_v(n + off, 31));
            std::vector<float> r_out(n), r_dinp(n);
            cpu_backend::gelu_forward(r_out.data(), x.f.data() + off, n);
            cpu_backend::gelu_backward(r_dinp.data(), x.f.data() + off, d.f.data() + off, n);
            Bf16Vec out(n + off), dinp(n + off);
            gelu_fwd(out.v.data() + off, x.v.data() + off, n);
            gelu_bwd(dinp.v.data() + off, x.v.data() + off, d.v.data() + off, n);
            const auto o = out.get(), di = dinp.get();
            CHECK(max_rel_err(std::vector<float>(o.begin() + off, o.end()), r_out) <= TOL);
            CHECK(max_rel_err(std::vector<float>(di.begin() + off, di.end()), r_dinp) <= TOL);
        }
    for (int F : {32, 40, 771})
        for (int N : {1, 7}) {
            INFO("N " << N << " F " << F);
            const size_t NF = (size_t)N * F;
            const Bf16Vec inp(rand_v(2 * NF, 40 + F, 2.0f)), d(rand_v(NF, 41));
            std::vector<float> r_out(NF), r_dinp(2 * NF);
            cpu_backend::swiglu_forward(r_out.data(), inp.f.data(), N, F);
            cpu_backend::swiglu_backward(r_dinp.data(), inp.f.data(), d.f.data(), N, F);
            Bf16Vec out(NF), dinp(2 * NF);
            swiglu_fwd(out.v.data(), inp.v.data(), N, F);
            swiglu_bwd(dinp.v.data(), inp.v.data(), d.v.data(), N, F);
            CHECK(max_rel_err(out.get(), r_out) <= TOL);
            CHECK(max_rel_err(dinp.get(), r_dinp) <= TOL);
        }
}

TEST_CASE("the branch_scale kernels, run on the CPU emulator, match the CPU twin", "[emulation]") {
    const float factor = 0.7f;
    for (int C : {32, 771})
        for (int N : {1, 7, 100})
            for (int channels : {C, 1, 0}) {  // LayerScale, SkipInit, the factor alone
                INFO("N " << N << " C " << C << " channels " << channels);
                const size_t NC = (size_t)N * C;
                const Bf16Vec inp(rand_v(NC, 90 + C)), d(rand_v(NC, 91 + N));
                const Bf16Vec g(rand_v(std::max(channels, 1), 92, 0.5f, 1.0f)), dg0(rand_v(std::max(channels, 1), 93));
                const float* gp = channels ? g.f.data() : nullptr;
                std::vector<float> r_out(NC), r_dinp(NC), r_dg = dg0.f;
                cpu_backend::branch_scale_forward(r_out.data(), inp.f.data(), gp, factor, N, C, channels);
                cpu_backend::branch_scale_backward(r_dinp.data(), r_dg.data(), d.f.data(), inp.f.data(), gp, factor,
                                                   N, C, channels);
                const bf16* ggp = channels ? g.v.data() : nullptr;
                Bf16Vec out(NC), dinp(NC), dg = dg0;
                bscale_forward(out.v.data(), inp.v.data(), ggp, factor, N, C, channels);
                bscale_backward(dinp.v.data(), dg.v.data(), d.v.data(), inp.v.data(), ggp, factor, N, C, channels);
                CHECK(max_rel_err(out.get(), r_out) <= TOL);
                CHECK(max_rel_err(dinp.get(), r_dinp) <= TOL);
                if (channels) CHECK(max_rel_err(dg.get(), r_dg) <= TOL);
                else CHECK(dg.get() == dg0.f);  // no multiplier, no gradient
                // dinp aliasing dout: the same dinp, the same dg increment, bit for bit
                Bf16Vec io = d, dg2 = dg0;
                bscale_backward(io.v.data(), dg2.v.data(), io.v.data(), inp.v.data(), ggp, factor, N, C, channels);
                CHECK(std::memcmp(io.v.data(), dinp.v.data(), NC * 2) == 0);
                CHECK(dg2.get() == dg.get());
            }
}

TEST_CASE("the encoder kernels, run on the CPU emulator, match the CPU twin", "[emulation]") {
    const int V = 13;  // tokens 5..11 never appear
    const std::pair<int, int> batches[] = {{1, 1}, {1, 7}, {4, 16}};  // (B, T)
    for (int C : {32, 40, 771})
        for (const auto& bt : batches)
            for (bool learned : {true, false}) {
                const int B = bt.first, T = bt.second, N = B * T;
                INFO("C " << C << " B " << B << " T " << T << (learned ? " with wpe" : " without wpe"));
                Rng rng(100 + C + N);
                std::vector<int> inp(N);
                for (int i = 0; i < N; i++) inp[i] = i % 3 == 0 ? 12 : (int)(rng.next_u64() % 5);  // many repeats
                const Bf16Vec wte(rand_v((size_t)V * C, 1)), wpe(rand_v((size_t)T * C, 2));
                std::vector<float> r_out((size_t)N * C);
                cpu_backend::encoder_forward(r_out.data(), inp.data(), wte.f.data(), learned ? wpe.f.data() : nullptr,
                                             B, T, C);
                Bf16Vec out((size_t)N * C);
                enc_forward(out.v.data(), inp.data(), wte.v.data(), learned ? wpe.v.data() : nullptr, B, T, C);
                CHECK(max_rel_err(out.get(), r_out) <= TOL);

                const Bf16Vec dout(rand_v((size_t)N * C, 3)), dwte0(rand_v((size_t)V * C, 4, 0.1f));
                const Bf16Vec dwpe0(rand_v((size_t)T * C, 5, 0.1f));
                std::vector<float> r_dwte = dwte0.f, r_dwpe = dwpe0.f;
                cpu_backend::encoder_backward(r_dwte.data(), learned ? r_dwpe.data() : nullptr, dout.f.data(),
                                              inp.data(), B, T, C);
                Bf16Vec dwte = dwte0, dwpe = dwpe0;
                enc_backward(dwte.v.data(), learned ? dwpe.v.data() : nullptr, dout.v.data(), inp.data(), B, T, C);
                const auto got = dwte.get();
                CHECK(max_rel_err(got, r_dwte) <= TOL);
                if (learned) CHECK(max_rel_err(dwpe.get(), r_dwpe) <= TOL);
                else CHECK(dwpe.get() == dwpe0.f);
                bool untouched = true;  // rows of tokens never seen
                for (size_t i = 5 * (size_t)C; i < 12 * (size_t)C; i++) untouched &= got[i] == dwte0.f[i];
                CHECK(untouched);
            }
}

TEST_CASE("the KV-cache attention kernel, run on the CPU emulator, matches the CPU twin", "[emulation]") {
    // Decoding T positions one by one, with and without RoPE. The kernel caches k in
    // bf16 (the CPU in fp32) and rounds out once: fewer roundings than the flash kernels,
    // whose bound (test/flash_bounds.h) applies.
    const int T = 40, Tmax = 48;
    for (int hs : {8, 64})
        for (float theta : {0.0f, 10000.0f}) {
            INFO("hs " << hs << " rope " << theta);
            const int NH = 2, C = NH * hs;
            const Bf16Vec qkv(rand_v((size_t)T * 3 * C, 120 + hs));
            std::vector<float> r_k((size_t)NH * Tmax * hs), r_v(r_k.size()), r_out(C);
            Bf16Vec k(r_k.size()), v(r_k.size()), out(C);
            double worst = 0;
            for (int t = 0; t < T; t++) {
                cpu_backend::attention_kv_forward(r_out.data(), r_k.data(), r_v.data(),
                                                  qkv.f.data() + (size_t)t * 3 * C, t, C, NH, Tmax, theta);
                kv_forward(out.v.data(), k.v.data(), v.v.data(), qkv.v.data() + (size_t)t * 3 * C, t, C, NH, Tmax,
                           theta);
                worst = std::max(worst, max_rel_err(out.get(), r_out));
            }
            INFO("worst out error " << worst);
            CHECK(worst < FLASH_OUT_TOL);
        }
}

TEST_CASE("the first attention's kernels, run on the CPU emulator, match the CPU twin", "[emulation]") {
    // bounds of the [gpu] test (test/test_cuda_matmul_attention.cpp, bf16): probabilities
    // and out 1.5e-2, gradients 2.5e-2
    struct Shape {
        int B, T, NH, hs;
    };
    for (const Shape& s : {Shape{2, 1, 2, 8}, Shape{2, 7, 3, 48}, Shape{1, 37, 2, 64}})
        for (float theta : {0.0f, 10000.0f}) {
            INFO("B " << s.B << " T " << s.T << " NH " << s.NH << " hs " << s.hs << " rope " << theta);
            const int C = s.NH * s.hs, BT = s.B * s.T;
            const size_t n3 = (size_t)BT * 3 * C, nA = (size_t)s.B * s.NH * s.T * s.T, n1 = (size_t)BT * C;
            const Bf16Vec qkv(rand_v(n3, 300)), dout(rand_v(n1, 401));
            std::vector<float> r_qkvr(n3), r_att(nA), r_out(n1), r_dqkv(n3), r_dqkvr(n3), r_datt(nA);
            cpu_backend::attention_forward(r_out.data(), r_qkvr.data(), r_att.data(), qkv.f.data(), s.B, s.T, C, s.NH,
                                           theta);
            cpu_backend::attention_backward(r_dqkv.data(), r_dqkvr.data(), r_datt.data(), dout.f.data(),
                                            r_qkvr.data(), r_att.data(), s.B, s.T, C, s.NH, theta);
            Bf16Vec qkvr(n3), att(nA), out(n1), dqkv(n3), dqkvr(n3), datt(nA);
            naive_attention_forward(out.v.data(), qkvr.v.data(), att.v.data(), qkv.v.data(), s.B, s.T, C, s.NH, theta);
            naive_attention_backward(dqkv.v.data(), dqkvr.v.data(), datt.v.data(), dout.v.data(), qkvr.v.data(),
                                     att.v.data(), s.B, s.T, C, s.NH, theta);
            const auto a = att.get();
            CHECK(max_rel_err(a, r_att) < 1.5e-2);
            CHECK(max_rel_err(out.get(), r_out) < 1.5e-2);
            const auto g = dqkv.get();
            for (int p = 0; p < 3; p++) {  // dq, dk, dv each against its own scale
                INFO("d" << "qkv"[p]);
                CHECK(max_rel_err(qkv_part(g, BT, C, p), qkv_part(r_dqkv, BT, C, p)) < 2.5e-2);
            }
            size_t above = 0;  // causal: nothing above the diagonal, exactly
            for (size_t r = 0; r < (size_t)s.B * s.NH * s.T; r++)
                for (int j = (int)(r % s.T) + 1; j < s.T; j++) above += a[r * s.T + j] != 0.0f;
            CHECK(above == 0);
        }
}

#endif
