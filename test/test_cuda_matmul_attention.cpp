// The CUDA matmul and attention ops against their CPU twins (cpu_backend), op by op,
// on random inputs at shapes that include odd row counts (N = 1, 7, 300), widths
// that are multiples of 8 but not of the kernels' tiles, T from 1 to 257 and head
// sizes 8, 48, 64, with and without RoPE; and their bitwise determinism. The flash
// pair against its CPU twin for T in {1, 7, 64, 257, 1024} and head sizes 64, 128, and
// for T in {7, 257} at head size 48.
//
// Every input is put on the device first and read back, so the CPU computes from
// exactly the values the GPU holds (bf16-rounded in the bf16 build). Errors are
// max|gpu - cpu| / max|cpu| per tensor (max_rel_err).
//
// Tolerances.
// PRECISION=FP32: both sides compute in fp32 and differ only in summation order
// (and by <= 2 ulp in expf / sincosf / tanhf). For the matmuls' sums of <= 768 O(1)
// terms that is ~1e-6 of a tensor's scale; for attention, replaying the kernels'
// summation order on the CPU gives <= 5e-7 on every tensor here. Bound 1e-5.
// bf16:
//  - matmul: fp32 accumulation and one rounding of the output to bf16 (8 significant
//    bits), at most 2^-8 of the element, hence of the tensor's max: 3.9e-3, plus fp32
//    sums (~1e-6). Bound 4e-3. dbias += (our kernel) rounds the sum once as well.
//    cuBLASLt's beta = 1 outputs (dw, accumulated dinp) round twice on an H200
//    (cuBLAS 13.0; measured up to 5.4e-3 on dw, over the one-rounding bound): alpha AB
//    is rounded to bf16 before C is added and the sum rounded. That is at most
//    2^-8 (|AB| + |D|) <= 2^-8 (2 max|D| + max|C|), and these inputs have
//    max|C| <= ~1.1 max|D|: 3.1 * 2^-8 = 1.21e-2, bound 1.25e-2.
//  - the fused GELU epilogues evaluate tanh with the hardware's approximation (about
//    1e-4 relative); gelu'(x) amplifies an error in tanh by |0.5 - x tanh k (1 + 3c x^2)|
//    <= ~7 for |x| < 5, which can add a few 1e-3 where GELU' is steep. Bound 1e-2.
//  - attention rounds to bf16 on every store: q,k after RoPE, the scores, the
//    probabilities, y; in backward dy . v, the score gradients (where p (dp - sum p dp)
//    cancels) and dq, dk, dv. A score error of 2^-9 |s| moves a probability by
//    ~|s| 2^-8 of itself (|s| <~ 4 with these N(0,1) inputs). Replaying exactly these
//    roundings on the CPU for exactly these inputs gives max_rel_err <= 5.3e-3 on the
//    probabilities, 5.9e-3 on out and 8.6e-3 on dq, dk, dv (inputs of std 2, i.e.
//    sharper softmaxes, give up to 1.9e-2: the bound holds for these inputs only).
//    Bounds 1.5e-2 on att and out, 2.5e-2 on dqkv (~3x).
#ifdef LNS_CUDA
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/check.h"
#include "cpu/cpu_backend.h"
#include "kernels/cuda_backend.h"
#include "test/flash_bounds.h"
#include "test/test_util.h"

namespace {
using Cpu = cpu_backend;
using Gpu = cuda_backend;
using gX = cuda_backend::floatX;

#ifdef ENABLE_FP32
const double MATMUL_TOL = 1e-5, MATMUL_ACC_TOL = 1e-5, GELU_TOL = 1e-5, ATT_PROB_TOL = 1e-5, ATT_OUT_TOL = 1e-5, ATT_GRAD_TOL = 1e-5;
#else
const double MATMUL_TOL = 4e-3, MATMUL_ACC_TOL = 1.25e-2, GELU_TOL = 1e-2, ATT_PROB_TOL = 1.5e-2, ATT_OUT_TOL = 1.5e-2, ATT_GRAD_TOL = 2.5e-2;
#endif

// n floatX on the device, released at scope exit.
struct DevBuf {
    gX* p = nullptr;
    size_t n = 0;
    explicit DevBuf(size_t count) : n(count) { p = (gX*)Gpu::alloc(std::max<size_t>(n, 1) * sizeof(gX), "test"); }
    ~DevBuf() { Gpu::release(p); }
    DevBuf(const DevBuf&) = delete;
    DevBuf& operator=(const DevBuf&) = delete;
    void set(const std::vector<float>& h) {
        REQUIRE(h.size() == n);
        Gpu::upload_f32(p, h.data(), n);
        Gpu::synchronize();
    }
    std::vector<float> get() const {
        Gpu::synchronize();
        std::vector<float> h(n);
        Gpu::download_f32(h.data(), p, n);
        return h;
    }
};

// Uploads h and replaces it with what the device holds.
void to_device(DevBuf& d, std::vector<float>& h) {
    d.set(h);
    h = d.get();
}

struct MatShape {
    int N, C, OC;
};
const MatShape MAT_SHAPES[] = {{1, 40, 96}, {7, 96, 40}, {96, 768, 96}, {96, 40, 768}, {300, 96, 136}};

struct AttShape {
    int B, T, NH, hs;
};
const AttShape ATT_SHAPES[] = {{2, 1, 2, 8}, {2, 7, 3, 48}, {1, 64, 4, 64}, {2, 64, 2, 8}, {1, 257, 2, 48},
                               {1, 257, 1, 64}};
const float THETAS[] = {0.0f, 10000.0f};
}  // namespace

#ifndef LNS_CUDA_EMU  // host-side checks, the same on the emulator
TEST_CASE("CUDA matmul rejects widths that are not multiples of 8", "[cuda][matmul]") {
    // checked before any device call, so this runs without a GPU
    CHECK_THROWS_WITH(Gpu::matmul_forward(nullptr, nullptr, nullptr, nullptr, 4, 12, 16),
                      Catch::Contains("multiples of 8"));
    CHECK_THROWS_AS(Gpu::matmul_forward(nullptr, nullptr, nullptr, nullptr, 4, 16, 20), UserError);
    CHECK_THROWS_AS(Gpu::matmul_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 4, 16, 20, false),
                    UserError);
}
#endif

GPU_TEST_CASE("CUDA matmul_forward matches the CPU (plain, bias, GELU epilogue)", "[matmul]") {
    for (const MatShape& s : MAT_SHAPES)
        for (bool bias : {false, true})
            for (bool gelu : {false, true}) {
                DYNAMIC_SECTION("N " << s.N << " C " << s.C << " OC " << s.OC << (bias ? " bias" : "")
                                     << (gelu ? " gelu" : "")) {
                    const size_t NC = (size_t)s.N * s.C, NO = (size_t)s.N * s.OC, WC = (size_t)s.OC * s.C;
                    auto inp = randn(NC, 100), w = randn(WC, 101, 1.0f / std::sqrt((float)s.C)),
                         b = randn(s.OC, 102, 0.5f);
                    DevBuf d_inp(NC), d_w(WC), d_b(s.OC), d_out(NO), d_pre(NO);
                    to_device(d_inp, inp), to_device(d_w, w), to_device(d_b, b);

                    std::vector<float> out(NO), pre(NO);
                    Cpu::matmul_forward(out.data(), inp.data(), w.data(), bias ? b.data() : nullptr, s.N, s.C, s.OC,
                                        gelu ? pre.data() : nullptr);
                    Gpu::matmul_forward(d_out.p, d_inp.p, d_w.p, bias ? d_b.p : nullptr, s.N, s.C, s.OC,
                                        gelu ? d_pre.p : nullptr);
                    const double err = max_rel_err(d_out.get(), out);
                    INFO("out error " << err);
                    CHECK(err < (gelu ? GELU_TOL : MATMUL_TOL));
                    if (gelu) {
                        const double perr = max_rel_err(d_pre.get(), pre);
                        INFO("pre_gelu error " << perr);
                        CHECK(perr < MATMUL_TOL);
                    }
                }
            }
}

GPU_TEST_CASE("CUDA matmul_backward matches the CPU (plain, accumulate, GELU', dw, dbias)", "[matmul]") {
    enum Mode { plain, accumulate, gelu };
    for (const MatShape& s : MAT_SHAPES)
        for (Mode mode : {plain, accumulate, gelu}) {
            DYNAMIC_SECTION("N " << s.N << " C " << s.C << " OC " << s.OC << " "
                                 << (mode == plain ? "plain" : mode == accumulate ? "accumulate" : "gelu")) {
                const size_t NC = (size_t)s.N * s.C, NO = (size_t)s.N * s.OC, WC = (size_t)s.OC * s.C;
                auto dout = randn(NO, 200), inp = randn(NC, 201), w = randn(WC, 202, 1.0f / std::sqrt((float)s.C)),
                     pre = randn(NC, 203, 1.5f);
                // what the outputs hold before: dinp is overwritten unless accumulating,
                // dw and dbias are added to
                auto dinp = randn(NC, 204), dw = randn(WC, 205, 0.1f), dbias = randn(s.OC, 206, 0.1f);
                DevBuf d_dout(NO), d_inp(NC), d_w(WC), d_pre(NC), d_dinp(NC), d_dw(WC), d_dbias(s.OC);
                to_device(d_dout, dout), to_device(d_inp, inp), to_device(d_w, w), to_device(d_pre, pre);
                to_device(d_dinp, dinp), to_device(d_dw, dw), to_device(d_dbias, dbias);

                const bool acc = mode == accumulate;
                const float* cpre = mode == gelu ? pre.data() : nullptr;
                const gX* gpre = mode == gelu ? d_pre.p : nullptr;
                Cpu::matmul_backward(dinp.data(), dw.data(), dbias.data(), dout.data(), inp.data(), w.data(), s.N, s.C,
                                     s.OC, acc, cpre);
                Gpu::matmul_backward(d_dinp.p, d_dw.p, d_dbias.p, d_dout.p, d_inp.p, d_w.p, s.N, s.C, s.OC, acc, gpre);
                const double e_dinp = max_rel_err(d_dinp.get(), dinp), e_dw = max_rel_err(d_dw.get(), dw),
                             e_db = max_rel_err(d_dbias.get(), dbias);
                INFO("dinp " << e_dinp << " dw " << e_dw << " dbias " << e_db);
                CHECK(e_dinp < (mode == gelu ? GELU_TOL : acc ? MATMUL_ACC_TOL : MATMUL_TOL));
                CHECK(e_dw < MATMUL_ACC_TOL);
                CHECK(e_db < MATMUL_TOL);
            }
        }
}

// cuBLASLt documents its GELU epilogues only as "GELU". With w = I (8x8) the matmul is
// exact, so out = gelu(x) and dinp = gelu'(x) up to the epilogue's arithmetic and one
// bf16 rounding (unbiased on average). On bands where the erf form differs from the
// tanh form by a consistent 4.2e-4 (gelu, x in [-3.2, -2.3], |gelu| < 0.025) and
// 6.5e-4 (gelu', x in [-2.6, -1.9]), the mean deviation of 32768 values tells the
// two apart: it must be nearer the tanh form, which the CPU uses.
GPU_TEST_CASE("CUDA matmul's GELU epilogues are the tanh approximation", "[matmul]") {
    const int N = 4096, C = 8;
    const size_t n = (size_t)N * C;
    const double K = 0.7978845608028654;
    auto gelu_tanh = [&](double x) { return 0.5 * x * (1 + std::tanh(K * (x + 0.044715 * x * x * x))); };
    auto gelu_erf = [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); };
    auto dgelu_tanh = [&](double x) {
        const double t = std::tanh(K * (x + 0.044715 * x * x * x));
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * 0.044715 * x * x);
    };
    auto dgelu_erf = [](double x) {
        return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
    };
    auto band = [&](double lo, double hi) {
        std::vector<float> v(n);
        for (size_t i = 0; i < n; i++) v[i] = (float)(lo + (hi - lo) * (double)i / (double)(n - 1));
        return v;
    };
    std::vector<float> eye((size_t)C * C, 0.0f), ones(n, 1.0f);
    for (int i = 0; i < C; i++) eye[(size_t)i * C + i] = 1.0f;
    DevBuf d_w((size_t)C * C), d_x(n), d_out(n), d_pre(n), d_ones(n), d_dw((size_t)C * C);
    d_w.set(eye), d_ones.set(ones), d_dw.set(std::vector<float>((size_t)C * C, 0.0f));

    auto x = band(-3.2, -2.3);
    to_device(d_x, x);
    Gpu::matmul_forward(d_out.p, d_x.p, d_w.p, nullptr, N, C, C, d_pre.p);
    CHECK(d_pre.get() == x);  // the aux output is the exact pre-activation
    const auto out = d_out.get();
    double dev_tanh = 0, dev_erf = 0;
    for (size_t i = 0; i < n; i++) dev_tanh += out[i] - gelu_tanh(x[i]), dev_erf += out[i] - gelu_erf(x[i]);
    dev_tanh /= (double)n, dev_erf /= (double)n;
    INFO("gelu: mean deviation from the tanh form " << dev_tanh << ", from the erf form " << dev_erf);
    CHECK(std::fabs(dev_tanh) < std::fabs(dev_erf));

    x = band(-2.6, -1.9);
    to_device(d_pre, x);
    Gpu::matmul_backward(d_out.p, d_dw.p, nullptr, d_ones.p, d_x.p, d_w.p, N, C, C, false, d_pre.p);
    const auto dinp = d_out.get();
    double ddev_tanh = 0, ddev_erf = 0;
    for (size_t i = 0; i < n; i++) ddev_tanh += dinp[i] - dgelu_tanh(x[i]), ddev_erf += dinp[i] - dgelu_erf(x[i]);
    ddev_tanh /= (double)n, ddev_erf /= (double)n;
    INFO("gelu': mean deviation from the tanh form " << ddev_tanh << ", from the erf form " << ddev_erf);
    CHECK(std::fabs(ddev_tanh) < std::fabs(ddev_erf));
}

GPU_TEST_CASE("CUDA attention_forward matches the CPU", "[attention]") {
    for (const AttShape& s : ATT_SHAPES)
        for (float theta : THETAS) {
            DYNAMIC_SECTION("B " << s.B << " T " << s.T << " NH " << s.NH << " hs " << s.hs << " rope " << theta) {
                const int C = s.NH * s.hs, BT = s.B * s.T;
                const size_t n3 = (size_t)BT * 3 * C, nA = (size_t)s.B * s.NH * s.T * s.T;
                auto qkv = randn(n3, 300);
                DevBuf d_qkv(n3), d_qkvr(n3), d_att(nA), d_out((size_t)BT * C);
                to_device(d_qkv, qkv);
                std::vector<float> qkvr(n3), att(nA), out((size_t)BT * C);
                Cpu::attention_forward(out.data(), qkvr.data(), att.data(), qkv.data(), s.B, s.T, C, s.NH, theta);
                Gpu::attention_forward(d_out.p, d_qkvr.p, d_att.p, d_qkv.p, s.B, s.T, C, s.NH, theta);

                const auto g_att = d_att.get();
                const double e_att = max_rel_err(g_att, att), e_out = max_rel_err(d_out.get(), out);
                INFO("att " << e_att << " out " << e_out);
                CHECK(e_att < ATT_PROB_TOL);
                CHECK(e_out < ATT_OUT_TOL);
                size_t above = 0;  // causal: nothing above the diagonal, exactly
                for (size_t r = 0; r < (size_t)s.B * s.NH * s.T; r++)
                    for (int j = (int)(r % s.T) + 1; j < s.T; j++) above += g_att[r * s.T + j] != 0.0f;
                CHECK(above == 0);
            }
        }
}

// Decoding appends each position's rotated k to the cache; the full forward pass
// rotates the same k in qkv_permute. They share the angles and the roundings, so a
// sampled continuation sees the keys training saw, bit for bit (v is copied).
GPU_TEST_CASE("CUDA KV-cache rows are the full forward's rotated k and v, bit for bit", "[attention][kv]") {
    const int T = 9, NH = 2, hs = 64, C = NH * hs;
    for (float theta : THETAS) {
        DYNAMIC_SECTION("rope " << theta) {
            const size_t n3 = (size_t)T * 3 * C;
            DevBuf d_qkv(n3), d_qkvr(n3), d_att((size_t)NH * T * T), d_out((size_t)T * C);
            DevBuf kcache((size_t)NH * T * hs), vcache((size_t)NH * T * hs), d_o1(C);
            d_qkv.set(randn(n3, 330));
            Gpu::attention_forward(d_out.p, d_qkvr.p, d_att.p, d_qkv.p, 1, T, C, NH, theta);
            for (int pos = 0; pos < T; pos++)
                Gpu::attention_kv_forward(d_o1.p, kcache.p, vcache.p, d_qkv.p + (size_t)pos * 3 * C, pos, C, NH, T,
                                          theta);
            const auto qkvr = d_qkvr.get();  // q, k, v, each (1, NH, T, hs): the cache's layout
            const std::vector<float> k(qkvr.begin() + (ptrdiff_t)(T * C), qkvr.begin() + (ptrdiff_t)(2 * T * C));
            const std::vector<float> v(qkvr.begin() + (ptrdiff_t)(2 * T * C), qkvr.end());
            CHECK(kcache.get() == k);
            CHECK(vcache.get() == v);
        }
    }
}

GPU_TEST_CASE("CUDA attention_backward matches the CPU", "[attention]") {
    for (const AttShape& s : ATT_SHAPES)
        for (float theta : THETAS) {
            DYNAMIC_SECTION("B " << s.B << " T " << s.T << " NH " << s.NH << " hs " << s.hs << " rope " << theta) {
                const int C = s.NH * s.hs, BT = s.B * s.T;
                const size_t n3 = (size_t)BT * 3 * C, nA = (size_t)s.B * s.NH * s.T * s.T, n1 = (size_t)BT * C;
                auto qkv = randn(n3, 400), dout = randn(n1, 401);
                DevBuf d_qkv(n3), d_qkvr(n3), d_att(nA), d_out(n1), d_dout(n1), d_dqkv(n3), d_dqkvr(n3), d_datt(nA);
                to_device(d_qkv, qkv), to_device(d_dout, dout);
                std::vector<float> qkvr(n3), att(nA), out(n1), dqkv(n3), dqkvr(n3), datt(nA);
                Cpu::attention_forward(out.data(), qkvr.data(), att.data(), qkv.data(), s.B, s.T, C, s.NH, theta);
                Cpu::attention_backward(dqkv.data(), dqkvr.data(), datt.data(), dout.data(), qkvr.data(), att.data(),
                                        s.B, s.T, C, s.NH, theta);
                Gpu::attention_forward(d_out.p, d_qkvr.p, d_att.p, d_qkv.p, s.B, s.T, C, s.NH, theta);
                Gpu::attention_backward(d_dqkv.p, d_dqkvr.p, d_datt.p, d_dout.p, d_qkvr.p, d_att.p, s.B, s.T, C, s.NH,
                                        theta);
                const auto g = d_dqkv.get();
                for (int part = 0; part < 3; part++) {
                    const double err = max_rel_err(qkv_part(g, BT, C, part), qkv_part(dqkv, BT, C, part));
                    INFO("d" << "qkv"[part] << " error " << err);
                    CHECK(err < ATT_GRAD_TOL);
                }
            }
        }
}

GPU_TEST_CASE("CUDA matmul and attention backward are bitwise deterministic", "[matmul][attention]") {
    SECTION("matmul_backward") {
        const int N = 300, C = 96, OC = 136;  // three dbias slabs, a partial column block
        const size_t NC = (size_t)N * C, NO = (size_t)N * OC, WC = (size_t)OC * C;
        auto dout = randn(NO, 500), inp = randn(NC, 501), w = randn(WC, 502, 0.1f), dw0 = randn(WC, 503, 0.1f),
             db0 = randn(OC, 504, 0.1f);
        DevBuf d_dout(NO), d_inp(NC), d_w(WC), d_dinp(NC), d_dw(WC), d_db(OC);
        d_dout.set(dout), d_inp.set(inp), d_w.set(w);
        std::vector<float> first[3];
        for (int run = 0; run < 2; run++) {
            d_dw.set(dw0), d_db.set(db0);
            Gpu::matmul_backward(d_dinp.p, d_dw.p, d_db.p, d_dout.p, d_inp.p, d_w.p, N, C, OC, false);
            const std::vector<float> got[3] = {d_dinp.get(), d_dw.get(), d_db.get()};
            if (run == 0)
                for (int i = 0; i < 3; i++) first[i] = got[i];
            else
                for (int i = 0; i < 3; i++) CHECK(got[i] == first[i]);
        }
    }
    SECTION("attention_backward") {
        const int B = 2, T = 100, NH = 2, hs = 64, C = NH * hs;
        const size_t n3 = (size_t)B * T * 3 * C, nA = (size_t)B * NH * T * T, n1 = (size_t)B * T * C;
        DevBuf d_qkv(n3), d_qkvr(n3), d_att(nA), d_out(n1), d_dout(n1), d_dqkv(n3), d_dqkvr(n3), d_datt(nA);
        d_qkv.set(randn(n3, 510)), d_dout.set(randn(n1, 511));
        std::vector<float> first;
        for (int run = 0; run < 2; run++) {
            Gpu::attention_forward(d_out.p, d_qkvr.p, d_att.p, d_qkv.p, B, T, C, NH, 10000.0f);
            Gpu::attention_backward(d_dqkv.p, d_dqkvr.p, d_datt.p, d_dout.p, d_qkvr.p, d_att.p, B, T, C, NH, 10000.0f);
            auto got = d_dqkv.get();
            if (run == 0)
                first = got;
            else
                CHECK(got == first);
        }
    }
}

// Flash attention against the CPU twin; bounds in test/flash_bounds.h.
namespace {
const AttShape FLASH_SHAPES[] = {{2, 1, 2, 64}, {2, 7, 3, 64}, {1, 64, 2, 64}, {1, 257, 2, 64}, {1, 1024, 2, 64},
                                 {2, 1, 2, 128}, {2, 7, 1, 128}, {1, 64, 2, 128}, {1, 257, 2, 128},
                                 {1, 1024, 1, 128}, {2, 7, 3, 48}, {1, 257, 2, 48}};

// The kernel variants (cuda_backend::FlashOptions): RoPE rotated before the kernels
// (default) or in the tile loads; the products on wgmma (sm_90a builds on sm_90
// devices; elsewhere the option is ignored); forward blocks of 4 or 8 warps; the TMA
// kernels (sm_90a as well), with the backward in one pass or with a dq kernel of its own.
struct FlashVariant {
    const char* name;
    Gpu::FlashOptions options;
};
const FlashVariant FLASH_VARIANTS[] = {{"default", {}},
                                       {"rope_on_load", {true, false, 4}},
                                       {"wgmma", {false, true, 4}},
                                       {"8 warps", {false, false, 8}},
                                       {"rope_on_load, 8 warps", {true, false, 8}},
                                       {"wgmma, 8 warps", {false, true, 8}},
                                       {"tma", {false, false, 4, true}},
                                       {"tma, dq kernel", {false, false, 4, true, true}},
                                       {"tma, forward block per work", {false, false, 4, true, false, true}},
                                       {"tma, backward heads in threes", {false, false, 4, true, false, false, 3}},
                                       {"32 rows per warp", {false, false, 4, false, false, false, 1, 32}},
                                       {"rope_on_load, 32 rows per warp", {true, false, 4, false, false, false, 1, 32}}};
// the tests below pick variants by index: 3..5 the 8-warp twins of 0..2, 6..9 the TMA
// kernels, 10..11 the 32-row warps of 0..1
static_assert(std::size(FLASH_VARIANTS) == 12, "variant indices");

// scripts/gpu_check.sh runs these tests twice: first with LNS_FLASH_VARIANTS=mma, the TMA
// variants left out, so that a TMA kernel that hangs (its process then killed) cannot hide
// the other variants' results; then with all. LNS_TEST_PROGRESS=1 names each variant and
// shape on stderr before it runs: the last line of a hung run's log says where.
bool tma_left_out() {
    const char* v = std::getenv("LNS_FLASH_VARIANTS");
    if (!v || std::string(v) == "all") return false;
    if (std::string(v) == "mma") return true;
    FAIL("LNS_FLASH_VARIANTS='" << v << "': expected mma (the TMA variants left out) or all");
    return false;
}
bool runs(const FlashVariant& v) { return !(v.options.tma && tma_left_out()); }
void progress(const FlashVariant& v, int B, int T, int NH, int hs) {
    if (std::getenv("LNS_TEST_PROGRESS"))
        std::fprintf(stderr, "[flash] %s, B %d T %d NH %d hs %d\n", v.name, B, T, NH, hs);
}

// n floats on the device (lse), released at scope exit.
struct DevF32 {
    float* p = nullptr;
    size_t n = 0;
    explicit DevF32(size_t count) : n(count) { p = (float*)Gpu::alloc(std::max<size_t>(n, 1) * 4, "test"); }
    ~DevF32() { Gpu::release(p); }
    DevF32(const DevF32&) = delete;
    DevF32& operator=(const DevF32&) = delete;
    void set(const std::vector<float>& h) {
        REQUIRE(h.size() == n);
        Gpu::copy_from_host(p, h.data(), n * 4);
        Gpu::synchronize();
    }
    std::vector<float> get() const {
        Gpu::synchronize();
        std::vector<float> h(n);
        Gpu::copy_to_host(h.data(), p, n * 4);
        return h;
    }
};
}  // namespace

GPU_TEST_CASE("CUDA flash attention matches the CPU twin, forward and backward", "[attention][flash]") {
#ifdef ENABLE_FP32
    CHECK_FALSE(Gpu::attention_flash_supported(64));  // the model uses the first attention
#else
    CHECK(Gpu::attention_flash_supported(48));
    CHECK(Gpu::attention_flash_supported(64));
    CHECK(Gpu::attention_flash_supported(128));
    CHECK_FALSE(Gpu::attention_flash_supported(32));
    CHECK_FALSE(Gpu::attention_flash_supported(96));
    if (!Gpu::attention_flash_has_wgmma()) WARN("no sm_90a kernels for this device: the wgmma variant runs mma.sync");
    for (const AttShape& s : FLASH_SHAPES)
        for (float theta : THETAS) {
            DYNAMIC_SECTION("B " << s.B << " T " << s.T << " NH " << s.NH << " hs " << s.hs << " rope " << theta) {
                const int C = s.NH * s.hs, BT = s.B * s.T;
                const size_t n3 = (size_t)BT * 3 * C, n1 = (size_t)BT * C, nL = (size_t)s.B * s.NH * s.T;
                auto qkv = randn(n3, 600), dout = randn(n1, 601);
                DevBuf d_qkv(n3), d_out(n1), d_dout(n1), d_dqkv(n3);
                DevF32 d_lse(nL);
                to_device(d_qkv, qkv), to_device(d_dout, dout);
                std::vector<float> out(n1), lse(nL), dqkv(n3);
                Cpu::attention_flash_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, C, s.NH, theta);
                Cpu::attention_flash_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T,
                                              C, s.NH, theta);
                for (const FlashVariant& variant : FLASH_VARIANTS) {
                    if (!runs(variant)) continue;
                    // no wgmma or TMA kernels at 48: those options run the default ones (the
                    // partial-tile test checks that), here only time
                    if (s.hs == 48 && (variant.options.wgmma || variant.options.tma)) continue;
                    INFO("variant " << variant.name);
                    progress(variant, s.B, s.T, s.NH, s.hs);
                    Gpu::attention_flash_options(variant.options);
                    Gpu::attention_flash_forward(d_out.p, d_lse.p, d_qkv.p, s.B, s.T, C, s.NH, theta);
                    Gpu::attention_flash_backward(d_dqkv.p, d_dout.p, d_qkv.p, d_out.p, d_lse.p, s.B, s.T, C, s.NH,
                                                  theta);
                    Gpu::attention_flash_options({});
                    // on a failure, where: rows (b*T + t) and columns (h*hs + channel; lse: rows b*NH + h)
                    const auto g_out = d_out.get(), g_lse = d_lse.get();
                    const double e_out = max_rel_err(g_out, out), e_lse = max_rel_err(g_lse, lse);
                    INFO("out " << e_out << off_at(g_out, out, BT, C, e_out, FLASH_OUT_TOL) << "; lse " << e_lse
                                << off_at(g_lse, lse, (size_t)s.B * s.NH, s.T, e_lse, FLASH_LSE_TOL));
                    CHECK(e_out < FLASH_OUT_TOL);
                    CHECK(e_lse < FLASH_LSE_TOL);
                    const auto g = d_dqkv.get();
                    for (int part = 0; part < 3; part++) {
                        const auto got = qkv_part(g, BT, C, part), want = qkv_part(dqkv, BT, C, part);
                        const double err = max_rel_err(got, want);
                        INFO("d" << "qkv"[part] << " error " << err << off_at(got, want, BT, C, err, FLASH_GRAD_TOL));
                        CHECK(err < FLASH_GRAD_TOL);
                    }
                }
            }
        }
#endif
}

// Small enough for compute-sanitizer (scripts/gpu_check.sh runs racecheck and memcheck
// on [sanitize]): partial tiles, both head sizes, every variant. RoPE rotated before the
// kernels or in their loads rounds the same fp32 products once, so those two agree
// bit for bit; wgmma sums in another order, so it agrees within bf16. A forward block
// of 8 warps gives every row the key tiles of a 4-warp block in the same order: the
// same bits, and so does a forward warp of 32 rows (two 16-row tiles sharing each K and V
// fragment). T = 130: 8-warp or 32-row-warp blocks whose first warps skip a key tile, a
// block with 2 valid rows of 128. At head size 48 the wgmma and TMA options run the
// default kernels, so the same checks hold there too.
GPU_TEST_CASE("CUDA flash attention variants agree on partial tiles", "[attention][flash][sanitize]") {
#ifndef ENABLE_FP32
    const int B = 1, T = 130, NH = 2;
    for (int hs : {48, 64, 128}) {
        DYNAMIC_SECTION("hs " << hs) {
            const int C = NH * hs;
            const size_t n3 = (size_t)B * T * 3 * C, n1 = (size_t)B * T * C;
            DevBuf d_qkv(n3), d_out(n1), d_dout(n1), d_dqkv(n3);
            DevF32 d_lse((size_t)B * NH * T);
            d_qkv.set(randn(n3, 620)), d_dout.set(randn(n1, 621));
            constexpr int NV = std::size(FLASH_VARIANTS);
            std::vector<float> out[NV], lse[NV], dqkv[NV];
            for (int i = 0; i < NV; i++) {
                if (!runs(FLASH_VARIANTS[i])) continue;
                progress(FLASH_VARIANTS[i], B, T, NH, hs);
                Gpu::attention_flash_options(FLASH_VARIANTS[i].options);
                d_out.set(std::vector<float>(n1, NAN)), d_lse.set(std::vector<float>(d_lse.n, NAN));
                d_dqkv.set(std::vector<float>(n3, NAN));  // nothing left over from the last variant
                Gpu::attention_flash_forward(d_out.p, d_lse.p, d_qkv.p, B, T, C, NH, 10000.0f);
                Gpu::attention_flash_backward(d_dqkv.p, d_dout.p, d_qkv.p, d_out.p, d_lse.p, B, T, C, NH, 10000.0f);
                out[i] = d_out.get(), lse[i] = d_lse.get(), dqkv[i] = d_dqkv.get();
            }
            Gpu::attention_flash_options({});
            CHECK(out[1] == out[0]);
            CHECK(lse[1] == lse[0]);
            CHECK(dqkv[1] == dqkv[0]);
            CHECK(max_rel_err(out[2], out[0]) < FLASH_OUT_TOL);
            CHECK(max_rel_err(lse[2], lse[0]) < FLASH_LSE_TOL);
            CHECK(max_rel_err(dqkv[2], dqkv[0]) < FLASH_GRAD_TOL);
            for (int i = 3; i < 6; i++) {  // 8 warps against 4, in the same variant
                INFO("variant " << FLASH_VARIANTS[i].name);
                CHECK(out[i] == out[i - 3]);
                CHECK(lse[i] == lse[i - 3]);
                CHECK(dqkv[i] == dqkv[i - 3]);
            }
            for (int i = 10; i < 12; i++) {  // 32 rows per warp against 16, in the same variant
                INFO("variant " << FLASH_VARIANTS[i].name);
                CHECK(out[i] == out[i - 10]);
                CHECK(lse[i] == lse[i - 10]);
                CHECK(dqkv[i] == dqkv[i - 10]);
            }
            if (tma_left_out()) continue;
            // the TMA kernels sum 128-key tiles forward and wgmma products backward: another order
            CHECK(max_rel_err(out[6], out[0]) < FLASH_OUT_TOL);
            CHECK(max_rel_err(lse[6], lse[0]) < FLASH_LSE_TOL);
            CHECK(max_rel_err(dqkv[6], dqkv[0]) < FLASH_GRAD_TOL);
            // the same forward; the backward's dk, dv from the same products in the same
            // order, its dq summed per key block (one pass) or per key tile (dq kernel)
            CHECK(out[7] == out[6]);
            CHECK(lse[7] == lse[6]);
            const int BT = B * T;
            CHECK(max_rel_err(qkv_part(dqkv[7], BT, C, 0), qkv_part(dqkv[6], BT, C, 0)) < FLASH_GRAD_TOL);
            CHECK(qkv_part(dqkv[7], BT, C, 1) == qkv_part(dqkv[6], BT, C, 1));
            CHECK(qkv_part(dqkv[7], BT, C, 2) == qkv_part(dqkv[6], BT, C, 2));
            // a work's rows come out the same whichever block takes it, and dq's parts add
            // in the same order whichever order the blocks start in
            for (int i : {8, 9}) {
                INFO("variant " << FLASH_VARIANTS[i].name);
                CHECK(out[i] == out[6]);
                CHECK(lse[i] == lse[6]);
                CHECK(dqkv[i] == dqkv[6]);
            }
        }
    }
#endif
}

// The TMA backward's dq is summed in global memory in an order its blocks agree on
// through counters: a larger shape on a GPU (16 key blocks per head, 32 heads: many
// blocks at once, several waiting) gives a wrong order more chances to show. There the
// persistent TMA forward's blocks also take many works each, in an order that varies
// between runs: its output must be that of one block per work, and agree with the default
// kernels within the flash bounds (each kernel's roundings average over the 2048 keys as
// over 1024: flash_bounds.h; measured errors against the CPU, 6e-3 and 9e-3, leave room
// for two kernels' differences); and the backward's blocks taken in another order must
// give the same bits.
GPU_TEST_CASE("CUDA flash attention backward is bitwise deterministic", "[attention][flash]") {
#ifndef ENABLE_FP32
    struct Shape {
        int B, T, NH, hs;
    };
#ifdef LNS_CUDA_EMU
    const Shape shapes[] = {{2, 300, 2, 128}};  // the emulator runs blocks in turn, in one order
#else
    const Shape shapes[] = {{2, 300, 2, 128}, {2, 2048, 16, 128}, {2, 2048, 16, 64}};
#endif
    for (const Shape& sh : shapes) {
        const int B = sh.B, T = sh.T, NH = sh.NH, hs = sh.hs, C = NH * hs;
        const size_t n3 = (size_t)B * T * 3 * C, n1 = (size_t)B * T * C;
        DevBuf d_qkv(n3), d_out(n1), d_dout(n1), d_dqkv(n3);
        DevF32 d_lse((size_t)B * NH * T);
        d_qkv.set(randn(n3, 610)), d_dout.set(randn(n1, 611));
        std::vector<float> out0, lse0, dqkv0, tma_out, tma_lse, tma_dqkv;
        // default, TMA (dq in order), and the TMA variants that change only which block does what
        for (int v : {0, 6, 8, 9}) {
            const FlashVariant& variant = FLASH_VARIANTS[v];
            if (!runs(variant)) continue;
            INFO("variant " << variant.name << ", B " << B << " T " << T << " NH " << NH << " hs " << hs);
            progress(variant, B, T, NH, hs);
            Gpu::attention_flash_options(variant.options);
            std::vector<float> first;
            for (int run = 0; run < 2; run++) {
                Gpu::attention_flash_forward(d_out.p, d_lse.p, d_qkv.p, B, T, C, NH, 10000.0f);
                Gpu::attention_flash_backward(d_dqkv.p, d_dout.p, d_qkv.p, d_out.p, d_lse.p, B, T, C, NH, 10000.0f);
                auto got = d_dqkv.get();
                if (run == 0)
                    first = got;
                else
                    CHECK(got == first);
            }
            Gpu::attention_flash_options({});
            if (v == 0) out0 = d_out.get(), lse0 = d_lse.get(), dqkv0 = first;
            if (v == 6) {  // and right, against the default kernels, as in the partial-tile test
                tma_out = d_out.get(), tma_lse = d_lse.get(), tma_dqkv = first;
                CHECK(max_rel_err(tma_out, out0) < FLASH_OUT_TOL);
                CHECK(max_rel_err(tma_lse, lse0) < FLASH_LSE_TOL);
                CHECK(max_rel_err(tma_dqkv, dqkv0) < FLASH_GRAD_TOL);
            }
            if (v > 6) {
                CHECK(d_out.get() == tma_out);
                CHECK(d_lse.get() == tma_lse);
                CHECK(first == tma_dqkv);
            }
        }
    }
#endif
}
#endif  // LNS_CUDA
