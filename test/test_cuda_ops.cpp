// Every CUDA op against its CPU twin (cpu/cpu_backend.h), plus the properties the
// CPU twin cannot show: in-place aliasing, bitwise determinism, stochastic rounding.
//
// Inputs are rounded to storage precision (bf16, or nothing in the FP32 build) on
// the host first, so both backends see identical values; the differences left are
// (a) the GPU rounding its outputs to storage and (b) fp32 arithmetic against the
// CPU's (double accumulators in norms, softmax and reductions; other summation
// orders; tanhf/expf within 2 ulp).
//  - (a) Rounding to nearest bf16 moves a value by at most 2^-8 of itself (8-bit
//    significand, unit roundoff 2^-8), so by at most 2^-8 of max|ref|: U = 2^-8.
//  - (b) is ~1e-7..1e-6 of the tensor's scale at these sizes; asserted at 1e-5.
// An output rounded once is asserted within U + 1e-5 (1e-5 in the FP32 build);
// the same bound applies to every op below because where the GPU rounds an
// intermediate (the norm's residual), the test compares against the CPU run on
// that rounded intermediate instead.
//
// Tagged [gpu]: run only where a CUDA device exists, counted as skipped elsewhere.
#ifdef LNS_CUDA
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/cpu_backend.h"
#include "kernels/cuda_backend.h"
#include "test/test_util.h"

using Gpu = cuda_backend;
using Cpu = cpu_backend;
using gfloat = Gpu::floatX;

namespace {
#ifdef ENABLE_FP32
constexpr double U = 0.0;  // fp32 storage: nothing rounded beyond the arithmetic
#else
constexpr double U = 1.0 / 256;  // bf16 unit roundoff
#endif
constexpr double ACC = 1e-5;          // fp32 vs double arithmetic, see the file comment
constexpr double TOL = U + ACC;       // outputs rounded once to storage
constexpr double TOL_SR = 2 * U + ACC;  // stochastic rounding: less than one ulp (2U) away

#ifdef LNS_CUDA_EMU
#define REQUIRE_GPU() Gpu::init(0)
#else
#define REQUIRE_GPU()                           \
    do {                                        \
        if (!gpu_available()) {                 \
            WARN("no CUDA device: not run");    \
            return;                             \
        }                                       \
    } while (0)
#endif

// Round to nearest even bf16 (what the device's __float2bfloat16_rn does);
// identity in the FP32 build.
float round_x(float f) {
#ifdef ENABLE_FP32
    return f;
#else
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return f;  // inf, nan
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    std::memcpy(&f, &u, 4);
    return f;
#endif
}
std::vector<float> round_x(std::vector<float> v) {
    for (auto& x : v) x = round_x(x);
    return v;
}
std::vector<float> rand_x(size_t n, uint64_t seed, float std = 1.0f, float offset = 0.0f) {
    auto v = randn(n, seed, std);
    for (auto& x : v) x = round_x(x + offset);
    return v;
}
double max_abs_err(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return INFINITY;
    double e = 0.0;
    for (size_t i = 0; i < a.size(); i++) e = std::fmax(e, std::fabs((double)a[i] - b[i]));
    return e;
}
double max_abs(const std::vector<float>& a) {
    double m = 0.0;
    for (float x : a) m = std::fmax(m, std::fabs((double)x));
    return m;
}
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Device buffer of n T, freed at scope exit. `offset` elements of padding in front
// misalign the data (offset 1 forces the kernels' scalar paths).
template <class T>
struct Dev {
    T* base = nullptr;
    T* p = nullptr;
    size_t n = 0;
    explicit Dev(size_t n_, size_t offset = 0) : n(n_) {
        base = (T*)Gpu::alloc((n + offset + 1) * sizeof(T), "a test tensor");
        p = base + offset;
    }
    ~Dev() { Gpu::release(base); }
    Dev(const Dev&) = delete;
    Dev& operator=(const Dev&) = delete;
};
// floatX tensor, filled from and read back as fp32
struct DevX : Dev<gfloat> {
    explicit DevX(size_t n_, size_t offset = 0) : Dev(n_, offset) {}
    explicit DevX(const std::vector<float>& h, size_t offset = 0) : Dev(h.size(), offset) { set(h); }
    void set(const std::vector<float>& h) {
        REQUIRE(h.size() == n);
        Gpu::upload_f32(p, h.data(), n);
    }
    std::vector<float> get() const {
        std::vector<float> h(n);
        Gpu::download_f32(h.data(), p, n);
        return h;
    }
};
// fp32 or int tensor, copied as is
template <class T>
struct DevR : Dev<T> {
    explicit DevR(size_t n_) : Dev<T>(n_) {}
    explicit DevR(const std::vector<T>& h) : Dev<T>(h.size()) { set(h); }
    void set(const std::vector<T>& h) {
        REQUIRE(h.size() == this->n);
        Gpu::copy_from_host(this->p, h.data(), h.size() * sizeof(T));
    }
    std::vector<T> get() const {
        std::vector<T> h(this->n);
        Gpu::copy_to_host(h.data(), this->p, h.size() * sizeof(T));
        return h;
    }
};
using DevF = DevR<float>;
using DevI = DevR<int>;

const char* kind_name(NormKind k) { return k == NormKind::layernorm ? "layernorm" : "rmsnorm"; }
}  // namespace

#ifndef LNS_CUDA_EMU  // host-side checks, the same on the emulator
TEST_CASE("cuda device_count never fails, with or without a driver", "[cuda]") {
    const int n = Gpu::device_count();
    CHECK(n >= 0);
    CHECK((n > 0) == gpu_available());
}
#endif

GPU_TEST_CASE("cuda memory: transfers round to nearest, copies are exact, out of memory is a UserError", "[cuda]") {
    REQUIRE_GPU();
    char desc[256];
    Gpu::describe(desc, sizeof desc);
    INFO("device: " << desc);
    CHECK(std::strstr(desc, "GiB") != nullptr);

    // sizes around the staging chunk (2^24 elements) and ties that round to even
    for (size_t n : {(size_t)1, (size_t)7, (size_t)1000, ((size_t)1 << 24) + 3}) {
        INFO("n " << n);
        auto h = randn(n, 1 + n);
        if (n >= 4) {
            h[0] = 1.0f + 1.0f / 256;  // halfway between bf16 1 and 1 + 2^-7: to 1
            h[1] = 1.0f + 3.0f / 256;  // halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6
            h[2] = -0.0f;
            h[3] = 3.0e38f;
        }
        DevX d(h);
        CHECK(same_bits(d.get(), round_x(h)));
    }
    std::vector<int> ids = {3, -1, 7, 1 << 30};
    DevI di(ids);
    CHECK(di.get() == ids);
    Gpu::zero(di.p, ids.size() * sizeof(int));
    CHECK(di.get() == std::vector<int>(ids.size(), 0));

    try {
        Gpu::alloc((size_t)1 << 52, "a test of the out-of-memory path");
        FAIL("a 4 PiB allocation succeeded");
    } catch (const UserError& e) {
        const std::string msg = e.what();
        CHECK(msg.find("a test of the out-of-memory path") != std::string::npos);
        CHECK(msg.find("--batch-size") != std::string::npos);
        CHECK(msg.find("GiB free") != std::string::npos);
    }
    // the failed allocation left no error behind
    DevX after(randn(5, 2));
    CHECK(after.get().size() == 5);
}

GPU_TEST_CASE("cuda encoder forward and backward match the CPU; backward is deterministic", "[cuda]") {
    REQUIRE_GPU();
    const int V = 13;  // tokens 5..11 never appear
    const std::pair<int, int> batches[] = {{1, 1}, {1, 7}, {4, 16}, {8, 64}};  // (B, T)
    for (int C : {32, 40, 771})
        for (const auto& bt : batches)
            for (bool learned : {true, false}) {
                const int B = bt.first, T = bt.second, N = B * T;
                INFO("C " << C << " B " << B << " T " << T << (learned ? " with wpe" : " without wpe"));
                Rng rng(100 + C + N);
                std::vector<int> inp(N);
                for (int i = 0; i < N; i++) inp[i] = i % 3 == 0 ? 12 : (int)(rng.next_u64() % 5);  // many repeats
                auto wte = rand_x((size_t)V * C, 1), wpe = rand_x((size_t)T * C, 2);
                std::vector<float> out(N * (size_t)C);
                Cpu::encoder_forward(out.data(), inp.data(), wte.data(), learned ? wpe.data() : nullptr, B, T, C);
                DevI g_inp(inp);
                DevX g_wte(wte), g_wpe(wpe), g_out(N * (size_t)C);
                Gpu::encoder_forward(g_out.p, g_inp.p, g_wte.p, learned ? g_wpe.p : nullptr, B, T, C);
                CHECK(max_rel_err(g_out.get(), out) <= TOL);

                auto dout = rand_x(N * (size_t)C, 3), dwte0 = rand_x((size_t)V * C, 4, 0.1f),
                     dwpe0 = rand_x((size_t)T * C, 5, 0.1f);
                std::vector<float> dwte = dwte0, dwpe = dwpe0;
                Cpu::encoder_backward(dwte.data(), learned ? dwpe.data() : nullptr, dout.data(), inp.data(), B, T, C);
                DevX g_dout(dout), g_dwte(dwte0), g_dwpe(dwpe0);
                Gpu::encoder_backward(g_dwte.p, learned ? g_dwpe.p : nullptr, g_dout.p, g_inp.p, B, T, C);
                const auto r_dwte = g_dwte.get(), r_dwpe = g_dwpe.get();
                CHECK(max_rel_err(r_dwte, dwte) <= TOL);
                if (learned) CHECK(max_rel_err(r_dwpe, dwpe) <= TOL);
                else CHECK(same_bits(r_dwpe, dwpe0));
                // rows of tokens never seen are untouched
                for (int tok = 5; tok <= 11; tok++)
                    CHECK(std::memcmp(&r_dwte[(size_t)tok * C], &dwte0[(size_t)tok * C], C * sizeof(float)) == 0);
                // deterministic: the same accumulation again gives the same bits
                g_dwte.set(dwte0), g_dwpe.set(dwpe0);
                Gpu::encoder_backward(g_dwte.p, learned ? g_dwpe.p : nullptr, g_dout.p, g_inp.p, B, T, C);
                CHECK(same_bits(g_dwte.get(), r_dwte));
                CHECK(same_bits(g_dwpe.get(), r_dwpe));
            }
}

GPU_TEST_CASE("cuda residual_norm forward matches the CPU", "[cuda][norm]") {
    REQUIRE_GPU();
    for (NormKind kind : {NormKind::layernorm, NormKind::rmsnorm})
        for (NormScheme scheme : {NormScheme::pre, NormScheme::lns})
            for (int C : {32, 40, 771, 1030, 2048})
                for (int N : {1, 7, 64})
                    for (int mode = 0; mode < 4; mode++) {
                        // 0: res = x + y; 1: res = 1.6x + y (DeepNorm); 2: plain norm of x;
                        // 3: as 0 with misaligned pointers (the scalar path at any C)
                        const bool ln = kind == NormKind::layernorm, add = mode != 2;
                        const float alpha = mode == 1 ? 1.6f : 1.0f;
                        const int layer = 3;
                        const size_t off = mode == 3 ? 1 : 0, NC = (size_t)N * C;
                        INFO(kind_name(kind) << " " << to_string(scheme) << " C " << C << " N " << N << " mode "
                                             << mode);
                        auto x = rand_x(NC, 10 + C, 1.0f, 0.5f), y = rand_x(NC, 11 + C);
                        auto w = rand_x(C, 12, 0.3f, 1.0f), b = rand_x(C, 13, 0.3f);
                        DevX g_x(x, off), g_y(y, off), g_w(w, off), g_b(b, off), g_res(NC, off), g_out(NC, off);
                        DevF g_mean(N), g_rstd(N);
                        Gpu::residual_norm_forward(add ? g_res.p : nullptr, g_out.p, ln ? g_mean.p : nullptr,
                                                   g_rstd.p, g_x.p, add ? g_y.p : nullptr, alpha, g_w.p,
                                                   ln ? g_b.p : nullptr, N, C, kind, 1e-5f, scheme, layer);
                        // The GPU normalises the residual as stored; the reference normalises the same values.
                        std::vector<float> normalised = x;
                        if (add) {
                            std::vector<float> res(NC), out(NC), mean(N), rstd(N);
                            Cpu::residual_norm_forward(res.data(), out.data(), mean.data(), rstd.data(), x.data(),
                                                       y.data(), alpha, w.data(), ln ? b.data() : nullptr, N, C, kind,
                                                       1e-5f, scheme, layer);
                            normalised = g_res.get();
                            CHECK(max_rel_err(normalised, res) <= TOL);
                            // and end to end, against the unrounded residual: at most one more rounding of
                            // res (2^-8 of |res|, |res - mean| * rstd ~ |xhat| here) on top
                            CHECK(max_rel_err(g_out.get(), out) <= 3 * U + ACC);
                        }
                        std::vector<float> out(NC), mean(N), rstd(N);
                        Cpu::residual_norm_forward(nullptr, out.data(), mean.data(), rstd.data(), normalised.data(),
                                                   nullptr, 1.0f, w.data(), ln ? b.data() : nullptr, N, C, kind, 1e-5f,
                                                   scheme, layer);
                        CHECK(max_rel_err(g_out.get(), out) <= TOL);
                        CHECK(max_rel_err(g_rstd.get(), rstd) <= ACC);
                        if (ln) CHECK(max_rel_err(g_mean.get(), mean) <= ACC);
                    }
}

GPU_TEST_CASE("cuda residual_norm backward matches the CPU, in place and deterministically", "[cuda][norm]") {
    REQUIRE_GPU();
    struct Shape {
        int N, C;
    };
    // 20000 rows: more rows per block than the minimum, and a partial last block
    const Shape shapes[] = {{1, 32}, {7, 40}, {64, 771}, {64, 32}, {7, 1030}, {64, 2048}, {20000, 40}};
    for (NormKind kind : {NormKind::layernorm, NormKind::rmsnorm})
        for (NormScheme scheme : {NormScheme::pre, NormScheme::lns})
            for (const Shape& sh : shapes)
                for (int mode = 0; mode < 2; mode++) {
                    // 0: pre-type (dres given, no dy, alpha 1); 1: post-type (dy given, no dres, alpha 1.6)
                    const int N = sh.N, C = sh.C;
                    const size_t NC = (size_t)N * C;
                    const bool ln = kind == NormKind::layernorm, pre = mode == 0;
                    const float alpha = pre ? 1.0f : 1.6f;
                    const int layer = 5;
                    INFO(kind_name(kind) << " " << to_string(scheme) << " C " << C << " N " << N
                                         << (pre ? " pre" : " post"));
                    auto res = rand_x(NC, 20 + C, 1.0f, 0.3f), w = rand_x(C, 21, 0.3f, 1.0f);
                    auto dout = rand_x(NC, 22), dres = rand_x(NC, 23), dw0 = rand_x(C, 24), db0 = rand_x(C, 25);
                    std::vector<float> out(NC), mean(N), rstd(N);
                    Cpu::residual_norm_forward(nullptr, out.data(), mean.data(), rstd.data(), res.data(), nullptr,
                                               1.0f, w.data(), nullptr, N, C, kind, 1e-5f, scheme, layer);
                    std::vector<float> dx(NC), dy(NC), dw = dw0, db = db0;
                    Cpu::residual_norm_backward(dx.data(), pre ? nullptr : dy.data(), dw.data(), ln ? db.data() : nullptr,
                                                dout.data(), pre ? dres.data() : nullptr, res.data(), w.data(),
                                                mean.data(), rstd.data(), alpha, N, C, kind, scheme, layer);

                    DevX g_res(res), g_w(w), g_dout(dout), g_dres(dres), g_dw(dw0), g_db(db0), g_dx(NC), g_dy(NC);
                    DevF g_mean(mean), g_rstd(rstd);
                    auto run = [&](gfloat* dxp, const gfloat* doutp, const gfloat* dresp) {
                        g_dw.set(dw0), g_db.set(db0);
                        Gpu::residual_norm_backward(dxp, pre ? nullptr : g_dy.p, g_dw.p, ln ? g_db.p : nullptr, doutp,
                                                    dresp, g_res.p, g_w.p, ln ? g_mean.p : nullptr, g_rstd.p, alpha,
                                                    N, C, kind, scheme, layer);
                    };
                    run(g_dx.p, g_dout.p, pre ? g_dres.p : nullptr);
                    const auto r_dx = g_dx.get(), r_dy = g_dy.get(), r_dw = g_dw.get(), r_db = g_db.get();
                    CHECK(max_rel_err(r_dx, dx) <= TOL);
                    if (!pre) CHECK(max_rel_err(r_dy, dy) <= TOL);
                    CHECK(max_rel_err(r_dw, dw) <= TOL);
                    if (ln) CHECK(max_rel_err(r_db, db) <= TOL);
                    else CHECK(same_bits(r_db, db0));

                    // deterministic
                    run(g_dx.p, g_dout.p, pre ? g_dres.p : nullptr);
                    CHECK(same_bits(g_dx.get(), r_dx));
                    CHECK(same_bits(g_dw.get(), r_dw));
                    CHECK(same_bits(g_db.get(), r_db));
                    // in place: dx aliasing dout, and (pre) dx aliasing dres, give the same bits
                    DevX io(dout);
                    run(io.p, io.p, pre ? g_dres.p : nullptr);
                    CHECK(same_bits(io.get(), r_dx));
                    CHECK(same_bits(g_dw.get(), r_dw));
                    if (pre) {
                        DevX io2(dres);
                        run(io2.p, g_dout.p, io2.p);
                        CHECK(same_bits(io2.get(), r_dx));
                        CHECK(same_bits(g_dw.get(), r_dw));
                    }
                }
}

GPU_TEST_CASE("cuda gelu forward and backward match the CPU, with tails and misaligned pointers", "[cuda]") {
    REQUIRE_GPU();
    for (size_t n : {(size_t)1, (size_t)7, (size_t)8, (size_t)1003, (size_t)64 * 771})
        for (size_t off : {(size_t)0, (size_t)1}) {
            INFO("n " << n << " offset " << off);
            auto x = rand_x(n, 30 + n, 2.0f), d = rand_x(n, 31);
            std::vector<float> out(n), dinp(n);
            Cpu::gelu_forward(out.data(), x.data(), n);
            Cpu::gelu_backward(dinp.data(), x.data(), d.data(), n);
            DevX g_x(x, off), g_d(d, off), g_out(n, off), g_dinp(n, off);
            Gpu::gelu_forward(g_out.p, g_x.p, n);
            Gpu::gelu_backward(g_dinp.p, g_x.p, g_d.p, n);
            CHECK(max_rel_err(g_out.get(), out) <= TOL);
            CHECK(max_rel_err(g_dinp.get(), dinp) <= TOL);
        }
}

GPU_TEST_CASE("cuda swiglu forward and backward match the CPU", "[cuda]") {
    REQUIRE_GPU();
    for (int F : {32, 40, 771})
        for (int N : {1, 7, 64}) {
            INFO("N " << N << " F " << F);
            const size_t NF = (size_t)N * F;
            auto inp = rand_x(2 * NF, 40 + F, 2.0f), d = rand_x(NF, 41);
            std::vector<float> out(NF), dinp(2 * NF);
            Cpu::swiglu_forward(out.data(), inp.data(), N, F);
            Cpu::swiglu_backward(dinp.data(), inp.data(), d.data(), N, F);
            DevX g_inp(inp), g_d(d), g_out(NF), g_dinp(2 * NF);
            Gpu::swiglu_forward(g_out.p, g_inp.p, N, F);
            Gpu::swiglu_backward(g_dinp.p, g_inp.p, g_d.p, N, F);
            CHECK(max_rel_err(g_out.get(), out) <= TOL);
            CHECK(max_rel_err(g_dinp.get(), dinp) <= TOL);
        }
}

// Tolerances here are absolute. The loss is lse - l[target], a difference of
// quantities of the logits' scale that fp32 holds to ~1e-7 of it: ACC * max|logit|.
// Every gradient entry is dloss * (p - onehot), |.| <= dloss: TOL * dloss (a row
// whose target has p ~ 1 has only tiny entries, so a relative bound would not do).
GPU_TEST_CASE("cuda crossentropy matches the CPU, ignores padding and targets < 0, runs in place", "[cuda]") {
    REQUIRE_GPU();
    for (int V : {100, 771, 1000})
        for (int N : {1, 7, 64})
            for (float scale : {1.0f, 10.0f}) {  // 10: a peaked softmax
                const int Vp = (V + 127) / 128 * 128;
                const size_t NV = (size_t)N * Vp;
                INFO("N " << N << " V " << V << " Vp " << Vp << " scale " << scale);
                auto logits = rand_x(NV, 50 + V + N, scale);  // padding columns hold noise: must not matter
                Rng rng(51 + N);
                std::vector<int> tgt(N);
                for (int i = 0; i < N; i++) tgt[i] = (i % 4 == 3) ? -1 : (int)(rng.next_u64() % V);
                const float dloss = 1.0f / N;
                std::vector<float> losses(N), dl(NV);
                Cpu::crossentropy_forward(losses.data(), logits.data(), tgt.data(), N, V, Vp);
                Cpu::crossentropy_backward(dl.data(), logits.data(), tgt.data(), dloss, N, V, Vp);

                DevX g_logits(logits), g_dl(NV);
                DevI g_tgt(tgt);
                DevF g_losses(N);
                Gpu::crossentropy_forward(g_losses.p, g_logits.p, g_tgt.p, N, V, Vp);
                CHECK(max_abs_err(g_losses.get(), losses) <= ACC * std::max(1.0, max_abs(logits)));
                Gpu::crossentropy_backward(g_dl.p, g_logits.p, g_tgt.p, dloss, N, V, Vp);
                const auto r_dl = g_dl.get();
                CHECK(max_abs_err(r_dl, dl) <= TOL * dloss);
                bool zeros = true;
                for (int n = 0; n < N; n++)
                    for (int i = 0; i < Vp; i++)
                        if ((tgt[n] < 0 || i >= V) && r_dl[(size_t)n * Vp + i] != 0.0f) zeros = false;
                CHECK(zeros);

                // deterministic, and in place (the fused classifier) gives the same bits
                Gpu::crossentropy_backward(g_dl.p, g_logits.p, g_tgt.p, dloss, N, V, Vp);
                CHECK(same_bits(g_dl.get(), r_dl));
                Gpu::crossentropy_backward(g_logits.p, g_logits.p, g_tgt.p, dloss, N, V, Vp);
                CHECK(same_bits(g_logits.get(), r_dl));
            }
    // a row width that is not a multiple of the vector width: the scalar path
    const int N = 5, V = 37, Vp = 41;
    auto logits = rand_x((size_t)N * Vp, 60, 2.0f);
    std::vector<int> tgt = {0, 36, -1, 5, 20};
    std::vector<float> losses(N), dl((size_t)N * Vp);
    Cpu::crossentropy_forward(losses.data(), logits.data(), tgt.data(), N, V, Vp);
    Cpu::crossentropy_backward(dl.data(), logits.data(), tgt.data(), 0.5f, N, V, Vp);
    DevX g_logits(logits), g_dl((size_t)N * Vp);
    DevI g_tgt(tgt);
    DevF g_losses(N);
    Gpu::crossentropy_forward(g_losses.p, g_logits.p, g_tgt.p, N, V, Vp);
    Gpu::crossentropy_backward(g_dl.p, g_logits.p, g_tgt.p, 0.5f, N, V, Vp);
    CHECK(max_abs_err(g_losses.get(), losses) <= ACC * std::max(1.0, max_abs(logits)));
    CHECK(max_abs_err(g_dl.get(), dl) <= TOL * 0.5);
}

GPU_TEST_CASE("cuda adamw matches the CPU's AdamW; bf16 params are the stochastically rounded master", "[cuda]") {
    REQUIRE_GPU();
    const size_t n = 1003;
    for (int t : {1, 7})
        for (float wd : {0.0f, 0.1f}) {
            INFO("t " << t << " weight decay " << wd);
            const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, gscale = 0.7f;
            const uint32_t seed = 1234;
            auto master0 = randn(n, 70);  // fp32 master: not rounded
            auto grads = rand_x(n, 71), m0 = randn(n, 72, 0.1f), v0 = randn(n, 73, 0.1f);
            for (auto& x : v0) x *= x;
            std::vector<float> p = master0, m = m0, v = v0;
            Cpu::adamw_update(p.data(), nullptr, grads.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, t, gscale,
                              seed);

            DevX g_grads(grads), g_params(n);
            DevF g_m(m0), g_v(v0), g_master(master0);
#ifdef ENABLE_FP32
            float* master = nullptr;  // the FP32 build updates params directly
#else
            float* master = g_master.p;
#endif
            auto run = [&](uint32_t s) {
                g_params.set(master0), g_master.set(master0), g_m.set(m0), g_v.set(v0);
                Gpu::adamw_update(g_params.p, master, g_grads.p, g_m.p, g_v.p, n, lr, b1, b2, eps, wd, t, gscale, s);
            };
            run(seed);
            const auto r_params = g_params.get();
            const auto r_master = master ? g_master.get() : r_params;
            // The same fp32 expressions without FMA contraction: equal to the bit on x86 hosts.
            CHECK(max_rel_err(r_master, p) <= 1e-6);
            CHECK(max_rel_err(g_m.get(), m) <= 1e-6);
            CHECK(max_rel_err(g_v.get(), v) <= 1e-6);
            CHECK(max_rel_err(r_params, p) <= TOL_SR);
#ifndef ENABLE_FP32
            // each param is the master rounded toward zero or away from it, to a neighbouring bf16
            bool neighbours = true;
            for (size_t i = 0; i < n; i++) {
                uint32_t mb, pb;
                std::memcpy(&mb, &r_master[i], 4);
                std::memcpy(&pb, &r_params[i], 4);
                const uint32_t lo = mb & 0xffff0000u;
                if (pb != lo && pb != lo + 0x10000u) neighbours = false;
            }
            CHECK(neighbours);
            run(seed + 1);  // another seed rounds some differently
            CHECK(!same_bits(g_params.get(), r_params));
#endif
            run(seed);  // the same seed, the same bits
            CHECK(same_bits(g_params.get(), r_params));
        }
}

#ifndef ENABLE_FP32
GPU_TEST_CASE("cuda adamw's stochastic rounding is unbiased", "[cuda]") {
    REQUIRE_GPU();
    // lr = 0 leaves master = 1 + 2^-9, a quarter of the way from bf16 1 to 1 + 2^-7:
    // a quarter of the params must round up.
    const size_t n = 1 << 16;
    std::vector<float> master(n, 1.0f + 1.0f / 512), zeros(n, 0.0f);
    DevX g_params(n), g_grads(zeros);
    DevF g_master(master), g_m(zeros), g_v(zeros);
    Gpu::adamw_update(g_params.p, g_master.p, g_grads.p, g_m.p, g_v.p, n, 0.0f, 0.9f, 0.95f, 1e-8f, 0.0f, 1, 1.0f, 99);
    const auto p = g_params.get();
    size_t up = 0;
    for (float x : p) {
        CHECK((x == 1.0f || x == 1.0f + 1.0f / 128));
        up += x > 1.0f;
    }
    // binomial: sd = sqrt(n/4 * 3/4) ~ 111, i.e. 0.0017 of n; allow 6 sd
    CHECK(std::fabs((double)up / n - 0.25) < 0.01);
}
#endif

GPU_TEST_CASE("cuda norm_squared matches the CPU and is deterministic", "[cuda]") {
    REQUIRE_GPU();
    for (size_t n : {(size_t)1, (size_t)7, (size_t)1000, ((size_t)1 << 21) + 3})
        for (size_t off : {(size_t)0, (size_t)1}) {
            INFO("n " << n << " offset " << off);
            auto x = rand_x(n, 80 + n);
            const double ref = Cpu::norm_squared(x.data(), n);
            DevX g_x(x, off);
            const double a = Gpu::norm_squared(g_x.p, n), b = Gpu::norm_squared(g_x.p, n);
            // squares of the stored values are exact in double; only the order of double additions differs
            CHECK(std::fabs(a - ref) <= 1e-12 * ref);
            CHECK(std::memcmp(&a, &b, sizeof a) == 0);
        }
}
// dg sums N (or N*C) products in fp32 on the GPU (double on the CPU): ~sqrt(N) * 6e-8
// of the sum's scale at these sizes, far below ACC; then one rounding to storage. The
// scale of a sum of random-sign terms is sqrt(sum of squares) (see the scalar case).
GPU_TEST_CASE("cuda branch_scale matches the CPU: per channel, scalar, factor only; in place, deterministic",
          "[cuda][branch_scale]") {
    REQUIRE_GPU();
    const float factor = 0.7f;
    for (int C : {32, 771})
        for (int N : {1, 7, 1000})
            for (int channels : {C, 1, 0}) {
                INFO("N " << N << " C " << C << " channels " << channels);
                const size_t NC = (size_t)N * C;
                auto inp = rand_x(NC, 90 + C), d = rand_x(NC, 91 + N), g = rand_x(std::max(channels, 1), 92, 0.5f, 1.0f);
                auto dg = rand_x(g.size(), 93);
                const float* gp = channels ? g.data() : nullptr;
                std::vector<float> out(NC), dinp(NC), dg_ref = dg;
                Cpu::branch_scale_forward(out.data(), inp.data(), gp, factor, N, C, channels);
                Cpu::branch_scale_backward(dinp.data(), dg_ref.data(), d.data(), inp.data(), gp, factor, N, C, channels);
                DevX g_inp(inp), g_d(d), g_g(g), g_dg(dg), g_out(NC), g_dinp(NC);
                gfloat* ggp = channels ? g_g.p : nullptr;
                Gpu::branch_scale_forward(g_out.p, g_inp.p, ggp, factor, N, C, channels);
                Gpu::branch_scale_backward(g_dinp.p, g_dg.p, g_d.p, g_inp.p, ggp, factor, N, C, channels);
                CHECK(max_rel_err(g_out.get(), out) <= TOL);
                CHECK(max_rel_err(g_dinp.get(), dinp) <= TOL);
                const auto dg1 = g_dg.get();
                if (channels == C) {
                    CHECK(max_rel_err(dg1, dg_ref) <= TOL);
                } else if (channels == 1) {
                    // One sum of N*C products of random sign: its fp32 rounding errors scale with
                    // the sum's natural size sqrt(sum of squares), not with the result, which
                    // cancellation can make small (N 1000, C 771: a sum of -4.2 out of 771000
                    // unit terms, the fp32 sum 1.5e-4 away, 4e-5 of the result); the one
                    // rounding to storage scales with the result.
                    double ss = 0.0;
                    for (size_t i = 0; i < NC; i++) ss += ((double)d[i] * inp[i]) * ((double)d[i] * inp[i]);
                    const double scale = std::max(std::fabs((double)dg_ref[0]), factor * std::sqrt(ss));
                    INFO("dg " << dg1[0] << " reference " << dg_ref[0] << " scale " << scale);
                    CHECK(std::fabs((double)dg1[0] - dg_ref[0]) <= U * std::fabs((double)dg_ref[0]) + ACC * scale);
                } else {
                    CHECK(same_bits(dg1, dg));  // no multiplier, no gradient
                }

                // dinp aliasing dout: the same dinp; the same dg increment, bit for bit
                DevX g_io(d), g_dg2(dg);
                Gpu::branch_scale_backward(g_io.p, g_dg2.p, g_io.p, g_inp.p, ggp, factor, N, C, channels);
                CHECK(same_bits(g_io.get(), g_dinp.get()));
                CHECK(same_bits(g_dg2.get(), dg1));
            }
}
#endif  // LNS_CUDA
