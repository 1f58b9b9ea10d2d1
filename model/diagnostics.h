// Depth diagnostics for the curse of depth (arXiv 2502.05795), computed on the host
// from the downloaded residual stream of one fixed batch (doc/curse-of-depth.md).
//
// h_l (l = 0..L) is the stream entering block l (h_0 the embeddings; h_L the stream
// after the last block, before the final norm). The output hidden state of block l is
// h_{l+1}: for pre-type blocks (pre, lns, sandwich) the stream base + addend after the
// block, for post-type blocks (post, deepnorm) the block's final norm output.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "model/gpt.h"

struct BlockDiag {
    double var_token = 0;  // mean over tokens of the variance across the C channels of h_{l+1}
    double var_all = 0;    // variance over all N*C elements of h_{l+1}
    double rms = 0;        // sqrt(mean of h_{l+1}^2) over all elements
    double grad_norm = 0;  // L2 norm of the gradient of the block's parameters
};

struct DepthDiag {
    std::vector<BlockDiag> blocks;             // L
    std::vector<std::vector<double>> angular;  // (L+1, L+1): mean over tokens of arccos(cos(h_i, h_j))/pi
};

namespace diag {

// Statistics of one stream value x (N rows of C); double accumulation.
inline void stream_stats(const std::vector<float>& x, int C, BlockDiag& d) {
    const size_t n = x.size(), N = n / C;
    double s = 0, s2 = 0, vt = 0;
    for (size_t r = 0; r < N; r++) {
        double m = 0, q = 0;
        for (int c = 0; c < C; c++) m += x[r * C + c];
        m /= C;
        for (int c = 0; c < C; c++) {
            const double v = x[r * C + c];
            q += (v - m) * (v - m);
            s += v, s2 += v * v;
        }
        vt += q / C;
    }
    const double mean = s / n;
    d.var_token = vt / N;
    d.var_all = s2 / n - mean * mean;
    d.rms = std::sqrt(s2 / n);
}

// Mean over rows of arccos(cos(a_r, b_r)) / pi; cos clamped to [-1, 1].
inline double angular_distance(const std::vector<float>& a, const std::vector<float>& b, int C) {
    const size_t N = a.size() / C;
    double sum = 0;
    for (size_t r = 0; r < N; r++) {
        double ab = 0, aa = 0, bb = 0;
        for (int c = 0; c < C; c++) {
            const double x = a[r * C + c], y = b[r * C + c];
            ab += x * y, aa += x * x, bb += y * y;
        }
        const double den = std::sqrt(aa * bb);
        const double cs = den > 0 ? std::fmax(-1.0, std::fmin(1.0, ab / den)) : 1.0;
        sum += std::acos(cs) / M_PI;
    }
    return sum / N;
}

// The Hugging Face name prefix of block l's parameters.
inline std::string block_prefix(const ModelConfig& c, int l) {
    return (c.arch == Arch::gpt2 ? "transformer.h." : "model.layers.") + std::to_string(l) + ".";
}

// Per-block gradient L2 norms from a host copy of the flat gradients.
inline std::vector<double> block_grad_norms(const ParamLayout& layout, const ModelConfig& c,
                                            const std::vector<float>& g) {
    std::vector<double> out(c.n_layer, 0.0);
    for (int l = 0; l < c.n_layer; l++) {
        const std::string pre = block_prefix(c, l);
        for (const auto& t : layout.tensors)
            if (t.name.compare(0, pre.size(), pre) == 0)
                for (size_t i = 0; i < t.size; i++) out[l] += (double)g[t.offset + i] * g[t.offset + i];
        out[l] = std::sqrt(out[l]);
    }
    return out;
}

}  // namespace diag

// One forward and one backward of (x, y) (B, T); the gradients are zeroed before and
// after, so a training run that calls this between steps is unaffected (the next
// step's forward overwrites the activations).
template <class Backend>
DepthDiag depth_diagnostics(GPT<Backend>& model, const int* x, const int* y, int B, int T) {
    const ModelConfig& c = model.cfg;
    const int L = c.n_layer, C = c.n_embd;
    LNS_CHECK(model.skip_block < 0, "depth_diagnostics with a pruned block");
    model.zero_grad();
    model.forward(x, y, B, T);
    std::vector<std::vector<float>> h;  // h_0..h_L
    h.push_back(model.stream_host(-1));
    for (int l = 0; l < L; l++) h.push_back(model.stream_host(l));
    model.backward();
    const std::vector<double> gn = diag::block_grad_norms(model.layout, c, model.get_grads());
    model.zero_grad();

    DepthDiag d;
    d.blocks.resize(L);
    for (int l = 0; l < L; l++) {
        diag::stream_stats(h[l + 1], C, d.blocks[l]);
        d.blocks[l].grad_norm = gn[l];
    }
    d.angular.assign(L + 1, std::vector<double>(L + 1, 0.0));
    for (int i = 0; i <= L; i++)
        for (int j = i + 1; j <= L; j++) d.angular[i][j] = d.angular[j][i] = diag::angular_distance(h[i], h[j], C);
    return d;
}
