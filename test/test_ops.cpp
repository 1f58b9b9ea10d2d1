// Every CPU op's backward against central finite differences of its forward.
//
// Each check takes a scalar L = sum(r * out) for a fixed random r, so dout = r,
// and compares the analytic gradient with (L(x+h) - L(x-h)) / 2h, L summed in double.
// Tolerance: inputs are O(1) and h = 1e-2, so the truncation error is ~h^2 = 1e-4 of
// the gradient's scale and fp32 rounding of the outputs adds ~1e-7 * sqrt(n) * |out| / h
// ~ 1e-4; we assert max|num - ana| / max|ana| < 2e-3, a 10x margin over both.
#include <catch2/catch.hpp>

#include <functional>

#include "cpu/cpu_backend.h"
#include "test/test_util.h"

using Ops = cpu_backend;

namespace {
const float H = 1e-2f;
const double TOL = 2e-3;

double dot(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0.0;
    for (size_t i = 0; i < a.size(); i++) s += (double)a[i] * b[i];
    return s;
}

// Numerical gradient of loss() with respect to x, compared with `analytic`.
double fd_error(std::vector<float>& x, const std::vector<float>& analytic, const std::function<double()>& loss) {
    std::vector<float> num(x.size());
    for (size_t i = 0; i < x.size(); i++) {
        const float keep = x[i];
        x[i] = keep + H;
        const double lp = loss();
        x[i] = keep - H;
        const double lm = loss();
        x[i] = keep;
        num[i] = (float)((lp - lm) / (2.0 * H));
    }
    return max_rel_err(analytic.data(), num.data(), x.size());
}
}  // namespace

TEST_CASE("encoder backward matches finite differences", "[ops]") {
    const int B = 2, T = 3, C = 5, V = 7;
    std::vector<int> inp = {1, 3, 1, 6, 0, 1};  // repeated tokens accumulate
    auto wte = randn(V * C, 1), wpe = randn(T * C, 2), r = randn(B * T * C, 3);
    std::vector<float> out(B * T * C), dwte(V * C, 0.0f), dwpe(T * C, 0.0f);
    auto loss = [&] {
        Ops::encoder_forward(out.data(), inp.data(), wte.data(), wpe.data(), B, T, C);
        return dot(out, r);
    };
    Ops::encoder_backward(dwte.data(), dwpe.data(), r.data(), inp.data(), B, T, C);
    CHECK(fd_error(wte, dwte, loss) < TOL);
    CHECK(fd_error(wpe, dwpe, loss) < TOL);
    // rows of tokens never seen get no gradient
    for (int c = 0; c < C; c++) CHECK(dwte[2 * C + c] == 0.0f);
}

TEST_CASE("residual_norm backward matches finite differences", "[ops][norm]") {
    const int N = 6, C = 12;
    for (NormKind kind : {NormKind::layernorm, NormKind::rmsnorm})
        for (NormScheme scheme : {NormScheme::pre, NormScheme::lns})
            for (float alpha : {1.0f, 1.6f}) {
                const bool ln = kind == NormKind::layernorm;
                const int layer = 3;  // LNS scale 1/sqrt(3) when scheme == lns
                DYNAMIC_SECTION((ln ? "layernorm" : "rmsnorm") << " " << to_string(scheme) << " alpha " << alpha) {
                    auto x = randn(N * C, 10), y = randn(N * C, 11), w = randn(C, 12, 0.5f), b = randn(C, 13);
                    for (auto& v : w) v += 1.0f;
                    auto r = randn(N * C, 14), rres = randn(N * C, 15);  // weights on out and res
                    std::vector<float> res(N * C), out(N * C), mean(N), rstd(N);
                    auto loss = [&] {
                        Ops::residual_norm_forward(res.data(), out.data(), mean.data(), rstd.data(), x.data(),
                                                   y.data(), alpha, w.data(), ln ? b.data() : nullptr, N, C, kind,
                                                   1e-5f, scheme, layer);
                        return dot(out, r) + dot(res, rres);  // res is also used downstream
                    };
                    loss();
                    std::vector<float> dx(N * C), dy(N * C), dw(C, 0.0f), db(C, 0.0f);
                    Ops::residual_norm_backward(dx.data(), dy.data(), dw.data(), ln ? db.data() : nullptr, r.data(),
                                                rres.data(), res.data(), w.data(), mean.data(), rstd.data(), alpha,
                                                N, C, kind, scheme, layer);
                    CHECK(fd_error(x, dx, loss) < TOL);
                    CHECK(fd_error(y, dy, loss) < TOL);
                    CHECK(fd_error(w, dw, loss) < TOL);
                    if (ln) CHECK(fd_error(b, db, loss) < TOL);

                    // In place: dx aliasing dout, and dx aliasing dres, give the same bits.
                    std::vector<float> inout = r, dw2(C, 0.0f), db2(C, 0.0f);
                    Ops::residual_norm_backward(inout.data(), nullptr, dw2.data(), db2.data(), inout.data(),
                                                rres.data(), res.data(), w.data(), mean.data(), rstd.data(), alpha,
                                                N, C, kind, scheme, layer);
                    CHECK(inout == dx);
                    CHECK(dw2 == dw);
                    std::vector<float> inres = rres;
                    Ops::residual_norm_backward(inres.data(), nullptr, dw2.data(), db2.data(), r.data(), inres.data(),
                                                res.data(), w.data(), mean.data(), rstd.data(), alpha, N, C, kind,
                                                scheme, layer);
                    CHECK(inres == dx);
                }
            }
}

TEST_CASE("residual_norm without an addition normalises x itself", "[ops][norm]") {
    const int N = 4, C = 8;
    auto x = randn(N * C, 20), w = randn(C, 21);
    std::vector<float> out(N * C), out2(N * C), res(N * C), mean(N), rstd(N), zeros(N * C, 0.0f);
    Ops::residual_norm_forward(nullptr, out.data(), mean.data(), rstd.data(), x.data(), nullptr, 1.0f, w.data(),
                               nullptr, N, C, NormKind::rmsnorm, 1e-6f, NormScheme::lns, 4);
    Ops::residual_norm_forward(res.data(), out2.data(), mean.data(), rstd.data(), x.data(), zeros.data(), 1.0f,
                               w.data(), nullptr, N, C, NormKind::rmsnorm, 1e-6f, NormScheme::lns, 4);
    CHECK(out == out2);
    // RMSNorm by hand, times the LNS factor 1/sqrt(4)
    double ms = 0.0;
    for (int c = 0; c < C; c++) ms += (double)x[c] * x[c];
    const double rs = 1.0 / std::sqrt(ms / C + 1e-6);
    for (int c = 0; c < C; c++) CHECK(out[c] == Approx(x[c] * rs * w[c] * 0.5).epsilon(1e-6));
}

TEST_CASE("branch_scale backward matches finite differences; in place gives the same bits", "[ops][branch_scale]") {
    const int N = 5, C = 6;
    const float factor = 0.6f;
    for (int channels : {C, 1, 0}) {
        DYNAMIC_SECTION("channels " << channels) {
            auto inp = randn(N * C, 40), g = randn(std::max(channels, 1), 41, 0.5f), r = randn(N * C, 42);
            for (auto& v : g) v += 1.0f;
            const float* gp = channels ? g.data() : nullptr;
            std::vector<float> out(N * C), dinp(N * C), dg(g.size(), 0.0f);
            auto loss = [&] {
                Ops::branch_scale_forward(out.data(), inp.data(), gp, factor, N, C, channels);
                return dot(out, r);
            };
            loss();
            Ops::branch_scale_backward(dinp.data(), dg.data(), r.data(), inp.data(), gp, factor, N, C, channels);
            CHECK(fd_error(inp, dinp, loss) < TOL);
            if (channels) CHECK(fd_error(g, dg, loss) < TOL);
            else CHECK(dg == std::vector<float>(1, 0.0f));  // nothing to learn
            // no g: out is inp times the factor, exactly
            loss();  // fd_error left out at a perturbed input
            if (channels == 0)
                for (int i = 0; i < N * C; i++) CHECK(out[i] == inp[i] * factor);

            std::vector<float> inout = r, dg2(g.size(), 0.0f);
            Ops::branch_scale_backward(inout.data(), dg2.data(), inout.data(), inp.data(), gp, factor, N, C, channels);
            CHECK(inout == dinp);
            CHECK(dg2 == dg);
        }
    }
}

TEST_CASE("matmul backward matches finite differences", "[ops]") {
    const int N = 5, C = 7, OC = 9;
    auto inp = randn(N * C, 30), w = randn(OC * C, 31), bias = randn(OC, 32), r = randn(N * OC, 33);
    std::vector<float> out(N * OC);
    auto loss = [&] {
        Ops::matmul_forward(out.data(), inp.data(), w.data(), bias.data(), N, C, OC);
        return dot(out, r);
    };
    std::vector<float> dinp(N * C, 123.0f), dw(OC * C, 0.0f), db(OC, 0.0f);
    Ops::matmul_backward(dinp.data(), dw.data(), db.data(), r.data(), inp.data(), w.data(), N, C, OC, false);
    CHECK(fd_error(inp, dinp, loss) < TOL);
    CHECK(fd_error(w, dw, loss) < TOL);
    CHECK(fd_error(bias, db, loss) < TOL);
    // accumulate adds onto what is there
    std::vector<float> acc(N * C, 1.0f), dw2(OC * C, 0.0f);
    Ops::matmul_backward(acc.data(), dw2.data(), nullptr, r.data(), inp.data(), w.data(), N, C, OC, true);
    for (int i = 0; i < N * C; i++) CHECK(acc[i] == Approx(dinp[i] + 1.0f).margin(1e-6));
}

TEST_CASE("matmul with the GELU epilogue: forward is gelu(matmul), backward matches finite differences", "[ops]") {
    const int N = 4, C = 6, OC = 5;
    auto inp = randn(N * C, 34), w = randn(OC * C, 35), bias = randn(OC, 36), r = randn(N * OC, 37);
    std::vector<float> out(N * OC), pre(N * OC), plain(N * OC), g(N * OC);
    Ops::matmul_forward(out.data(), inp.data(), w.data(), bias.data(), N, C, OC, pre.data());
    Ops::matmul_forward(plain.data(), inp.data(), w.data(), bias.data(), N, C, OC);
    Ops::gelu_forward(g.data(), plain.data(), plain.size());
    CHECK(pre == plain);
    CHECK(out == g);
    // backward through a following matmul whose input is the GELU output:
    // L = sum(r2 * (gelu(inp @ w^T + b) @ w2^T)), gradient wrt inp via pre_gelu
    const int OC2 = 3;
    auto w2 = randn(OC2 * OC, 38), r2 = randn(N * OC2, 39);
    std::vector<float> out2(N * OC2);
    auto loss = [&] {
        Ops::matmul_forward(out.data(), inp.data(), w.data(), bias.data(), N, C, OC, pre.data());
        Ops::matmul_forward(out2.data(), out.data(), w2.data(), nullptr, N, OC, OC2);
        return dot(out2, r2);
    };
    loss();
    std::vector<float> dpre(N * OC), dw2(OC2 * OC, 0.0f), dinp(N * C), dw(OC * C, 0.0f), db(OC, 0.0f);
    Ops::matmul_backward(dpre.data(), dw2.data(), nullptr, r2.data(), out.data(), w2.data(), N, OC, OC2, false, pre.data());
    Ops::matmul_backward(dinp.data(), dw.data(), db.data(), dpre.data(), inp.data(), w.data(), N, C, OC, false);
    CHECK(fd_error(inp, dinp, loss) < TOL);
    CHECK(fd_error(bias, db, loss) < TOL);
}

TEST_CASE("attention backward matches finite differences", "[ops][attention]") {
    const int B = 2, T = 5, NH = 2, C = 8;
    for (float theta : {0.0f, 10000.0f, 10.0f}) {
        DYNAMIC_SECTION("rope_theta " << theta) {
            auto qkv = randn(B * T * 3 * C, 40), r = randn(B * T * C, 41);
            std::vector<float> out(B * T * C), qkvr(B * T * 3 * C), att(B * NH * T * T);
            auto loss = [&] {
                Ops::attention_forward(out.data(), qkvr.data(), att.data(), qkv.data(), B, T, C, NH, theta);
                return dot(out, r);
            };
            loss();
            // causal: no probability above the diagonal, rows sum to 1
            for (int bh = 0; bh < B * NH; bh++)
                for (int t = 0; t < T; t++) {
                    double s = 0.0;
                    for (int t2 = 0; t2 < T; t2++) {
                        float p = att[((size_t)bh * T + t) * T + t2];
                        if (t2 > t) CHECK(p == 0.0f);
                        s += p;
                    }
                    CHECK(s == Approx(1.0).epsilon(1e-6));
                }
            std::vector<float> dqkv(B * T * 3 * C), dqkvr(B * T * 3 * C), datt(B * NH * T * T);
            Ops::attention_backward(dqkv.data(), dqkvr.data(), datt.data(), r.data(), qkvr.data(), att.data(), B, T,
                                    C, NH, theta);
            CHECK(fd_error(qkv, dqkv, loss) < TOL);
        }
    }
}

TEST_CASE("RoPE rotates pairs (i, i + hs/2) by t * theta^(-2i/hs)", "[ops][attention]") {
    // One head of size 4, T = 3: q at position t must equal the rotation of q.
    const int B = 1, T = 3, NH = 1, C = 4;
    auto qkv = randn(B * T * 3 * C, 50);
    std::vector<float> out(T * C), qkvr(T * 3 * C), att(T * T);
    Ops::attention_forward(out.data(), qkvr.data(), att.data(), qkv.data(), B, T, C, NH, 100.0f);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < 2; i++) {
            const double ang = t * std::pow(100.0, -2.0 * i / 4.0);
            const float* q = &qkv[t * 3 * C];
            CHECK(qkvr[t * 3 * C + i] == Approx(q[i] * std::cos(ang) - q[i + 2] * std::sin(ang)).margin(1e-6));
            CHECK(qkvr[t * 3 * C + i + 2] == Approx(q[i + 2] * std::cos(ang) + q[i] * std::sin(ang)).margin(1e-6));
        }
}

TEST_CASE("GELU and SwiGLU backward match finite differences", "[ops]") {
    const int N = 4, F = 6;
    auto x = randn(N * F, 60, 2.0f), r = randn(N * F, 61);
    std::vector<float> out(N * F), dx(N * F);
    auto gelu_loss = [&] {
        Ops::gelu_forward(out.data(), x.data(), x.size());
        return dot(out, r);
    };
    Ops::gelu_backward(dx.data(), x.data(), r.data(), x.size());
    CHECK(fd_error(x, dx, gelu_loss) < TOL);
    // GELU(1) with the tanh approximation
    float one = 1.0f, g;
    Ops::gelu_forward(&g, &one, 1);
    CHECK(g == Approx(0.8411920).epsilon(1e-6));

    auto gu = randn(N * 2 * F, 62, 2.0f);
    std::vector<float> dgu(N * 2 * F);
    auto swiglu_loss = [&] {
        Ops::swiglu_forward(out.data(), gu.data(), N, F);
        return dot(out, r);
    };
    Ops::swiglu_backward(dgu.data(), gu.data(), r.data(), N, F);
    CHECK(fd_error(gu, dgu, swiglu_loss) < TOL);
}

TEST_CASE("cross-entropy backward matches finite differences; padding and ignored rows get nothing", "[ops]") {
    const int N = 5, V = 10, Vp = 16;
    auto logits = randn(N * Vp, 70, 2.0f);
    std::vector<int> targets = {3, -1, 9, 0, 3};
    std::vector<float> losses(N);
    const float dloss = 0.7f;
    auto loss = [&] {
        Ops::crossentropy_forward(losses.data(), logits.data(), targets.data(), N, V, Vp);
        double s = 0.0;
        for (float l : losses) s += l;
        return dloss * s;
    };
    loss();
    CHECK(losses[1] == 0.0f);
    // row 0 by hand
    double z = 0.0;
    for (int i = 0; i < V; i++) z += std::exp((double)logits[i]);
    CHECK(losses[0] == Approx(std::log(z) - logits[3]).epsilon(1e-6));
    std::vector<float> d(N * Vp);
    Ops::crossentropy_backward(d.data(), logits.data(), targets.data(), dloss, N, V, Vp);
    CHECK(fd_error(logits, d, loss) < TOL);
    for (int n = 0; n < N; n++)
        for (int i = V; i < Vp; i++) CHECK(d[(size_t)n * Vp + i] == 0.0f);
    for (int i = 0; i < Vp; i++) CHECK(d[Vp + i] == 0.0f);
    // in place gives the same bits
    std::vector<float> inplace = logits;
    Ops::crossentropy_backward(inplace.data(), inplace.data(), targets.data(), dloss, N, V, Vp);
    CHECK(inplace == d);
}

TEST_CASE("AdamW matches the update rule of torch.optim.AdamW", "[ops][optim]") {
    const size_t n = 5;
    std::vector<float> p = {0.5f, -1.0f, 2.0f, 0.0f, 3.0f}, g = {0.1f, -0.2f, 0.3f, 1.0f, -5.0f};
    std::vector<float> m(n, 0.0f), v(n, 0.0f), p_ref = p;
    std::vector<double> m_ref(n, 0.0), v_ref(n, 0.0);
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, scale = 0.5f;
    for (int t = 1; t <= 3; t++) {
        Ops::adamw_update(p.data(), nullptr, g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, t, scale, 0);
        for (size_t i = 0; i < n; i++) {  // the textbook form, in double
            double gi = (double)g[i] * scale;
            m_ref[i] = b1 * m_ref[i] + (1 - b1) * gi;
            v_ref[i] = b2 * v_ref[i] + (1 - b2) * gi * gi;
            double mh = m_ref[i] / (1 - std::pow(b1, t)), vh = v_ref[i] / (1 - std::pow(b2, t));
            p_ref[i] = (float)(p_ref[i] * (1 - lr * wd) - lr * mh / (std::sqrt(vh) + eps));
        }
    }
    for (size_t i = 0; i < n; i++) CHECK(p[i] == Approx(p_ref[i]).epsilon(1e-5));
}

TEST_CASE("norm_squared is exact enough and independent of chunking", "[ops][optim]") {
    std::vector<float> x = randn(200000, 80);
    double ref = 0.0;
    for (float v : x) ref += (double)v * v;
    CHECK(Ops::norm_squared(x.data(), x.size()) == Approx(ref).epsilon(1e-12));
}
