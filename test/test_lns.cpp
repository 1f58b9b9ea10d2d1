// LayerNorm Scaling specifically. LNS multiplies the output of both norms of block l
// (1-based) by 1/sqrt(l), after the weight and bias, and leaves the final norm alone.
// That is exactly a Pre-LN model whose block-l norm weights and biases are divided by
// sqrt(l), which gives a test independent of any reference implementation: the two
// must agree to rounding, and each plausible mistake (scaling the final norm, a
// 0-based or shifted l, scaling one norm only) must make them disagree.
#include <catch2/catch.hpp>

#include <functional>

#include "cpu/cpu_backend.h"
#include "model/gpt.h"
#include "test/test_util.h"

namespace {
const int B = 2, T = 8;

// Pre-LN weights equivalent to LNS: block l's norm affine parameters times s(l),
// with s(l) given so the test can also build the wrong variants.
std::vector<float> fold_scale(const ParamLayout& L, std::vector<float> p, const std::function<float(int, int)>& s,
                              float final_scale) {
    auto scale = [&](long off, float f) {
        if (off >= 0)
            for (size_t i = 0; i < L.tensors.size(); i++)
                if ((long)L.tensors[i].offset == off)
                    for (size_t k = 0; k < L.tensors[i].size; k++) p[off + k] *= f;
    };
    for (size_t l = 0; l < L.blocks.size(); l++) {
        const BlockParams& b = L.blocks[l];
        scale(b.ln1_w, s((int)l + 1, 1)), scale(b.ln1_b, s((int)l + 1, 1));
        scale(b.ln2_w, s((int)l + 1, 2)), scale(b.ln2_b, s((int)l + 1, 2));
    }
    scale(L.lnf_w, final_scale), scale(L.lnf_b, final_scale);
    return p;
}

std::vector<float> logits_of(GPT<cpu_backend>& m, const std::vector<float>& params, const std::vector<int>& x,
                             const std::vector<int>& y, std::vector<float>* grads = nullptr) {
    m.set_params(params);
    m.forward(x.data(), y.data(), B, T);
    const int Vp = m.cfg.padded_vocab();
    std::vector<float> out((size_t)B * T * Vp);
    for (int n = 0; n < B * T; n++) m.download_logits_row(out.data() + (size_t)n * Vp, n);
    if (grads) {
        m.zero_grad();
        m.backward();
        *grads = m.get_grads();
    }
    return out;
}
}  // namespace

TEST_CASE("depth_scale is 1/sqrt(l) for LNS blocks, 1 for the final norm and other schemes", "[lns]") {
    CHECK(depth_scale(NormScheme::lns, 0) == 1.0f);
    CHECK(depth_scale(NormScheme::lns, 1) == 1.0f);
    CHECK(depth_scale(NormScheme::lns, 4) == 0.5f);
    CHECK(depth_scale(NormScheme::lns, 12) == Approx(1.0 / std::sqrt(12.0)).epsilon(1e-7));
    for (NormScheme s : {NormScheme::pre, NormScheme::post, NormScheme::mix, NormScheme::sandwich, NormScheme::deepnorm})
        CHECK(depth_scale(s, 5) == 1.0f);
}

TEST_CASE("LNS equals Pre-LN with block-l norm weights divided by sqrt(l), and no variant does", "[lns]") {
    for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
        DYNAMIC_SECTION(name) {
            ModelConfig lns = preset(name), pre = preset(name);
            lns.norm = NormScheme::lns, pre.norm = NormScheme::pre;
            GPT<cpu_backend> m_lns(lns, B, T), m_pre(pre, B, T);
            std::vector<float> p;
            init_params(p, m_lns.layout, 5);
            p = perturbed(m_lns.layout, p, 6, 0.3f);  // non-trivial norm parameters: a scaled bias shows too
            std::vector<int> x, y;
            make_batch(x, y, B * T, 256, 7);

            std::vector<float> g_lns, g_pre;
            const auto ref = logits_of(m_lns, p, x, y, &g_lns);
            auto s = [](int l, int) { return 1.0f / std::sqrt((float)l); };
            const auto folded = fold_scale(m_pre.layout, p, s, 1.0f);
            CHECK(max_rel_err(logits_of(m_pre, folded, x, y, &g_pre), ref) < 1e-5);
            // chain rule: dL/dw under LNS = s(l) * dL/dw' of the folded Pre-LN model
            const BlockParams& b3 = m_lns.layout.blocks[2];
            for (long off : {b3.ln1_w, b3.ln2_w}) {
                std::vector<float> a(g_lns.begin() + off, g_lns.begin() + off + lns.n_embd);
                std::vector<float> e(g_pre.begin() + off, g_pre.begin() + off + lns.n_embd);
                for (auto& v : e) v /= std::sqrt(3.0f);
                CHECK(max_rel_err(a, e) < 1e-5);
            }

            // The variants a wrong implementation would compute differ by far more.
            const float L = (float)lns.n_layer;
            auto differs = [&](const std::vector<float>& q) { return max_rel_err(logits_of(m_pre, q, x, y), ref) > 1e-3; };
            CHECK(differs(fold_scale(m_pre.layout, p, s, 1.0f / std::sqrt(L + 1))));  // final norm scaled too
            CHECK(differs(fold_scale(m_pre.layout, p, [](int l, int) { return 1.0f / std::sqrt((float)l + 1); }, 1.0f)));
            CHECK(differs(fold_scale(m_pre.layout, p, [](int l, int) { return l > 1 ? 1.0f / std::sqrt((float)l - 1) : 1.0f; }, 1.0f)));
            CHECK(differs(fold_scale(m_pre.layout, p, [&](int l, int k) { return k == 1 ? s(l, k) : 1.0f; }, 1.0f)));
            CHECK(differs(fold_scale(m_pre.layout, p, [&](int l, int k) { return k == 2 ? s(l, k) : 1.0f; }, 1.0f)));
            CHECK(differs(p));  // and LNS is not Pre-LN
        }
    }
}
