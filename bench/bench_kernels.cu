// bench_kernels: each CUDA op of kernels/ alone, on the shapes of a training step of
// gpt2-124m and llama-130m, timed with CUDA events: warm-up launches, the L2 cache
// flushed before every timed launch, the median of N. Reports GB/s and TFLOP/s and
// their share of two ceilings measured here first on the same device: the copy
// bandwidth of a large device-to-device cudaMemcpy and the rate of a large bf16
// GEMM through our cuBLASLt path. The matmul rows are cuBLASLt on the model's GEMM
// shapes.
//
//   bench_kernels [--model gpt2-124m|llama-130m|all] [-b B] [-t T] [--reps N] [--warmup W]
//   bench_kernels --ceilings     only the ceilings, as `copy_gbs X` / `gemm_tflops Y` lines
//                                (what scripts/ncu_table.py --ceilings reads)
//   bench_kernels --attention    only the attention comparison: flash against the first
//                                version at (B,H,T,D) = (8,12,1024,64), (4,16,2048,128),
//                                (64,12,256,64), as `attn_tflops ...` lines (scripts/gpu_check.sh);
//                                --attention-rows classic or tma: all but the TMA kernels' rows,
//                                or only those (a kernel that hangs then takes only its own)
//
// Bytes are each op's compulsory DRAM traffic (every input read once, every output
// written once, in the activation type), FLOPs the nominal count (2 per multiply-add,
// the first attention counted over the full T x T square, the flash pair over the causal
// half it computes); both are written next to each op below.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda_common.cuh"
#include "model/config.h"
#include "model/params.h"

namespace {

struct Ceilings {
    double copy_gbs = 0, gemm_tflops = 0;
};

struct Opts {
    std::string model = "all";
    int B = 0, T = 0, reps = 20, warmup = 3;
    bool ceilings_only = false, attention_only = false;
    std::string attention_rows = "all";
};

[[noreturn]] void usage(const char* msg) {
    fprintf(stderr, "bench_kernels: %s\nusage: bench_kernels [--model gpt2-124m|llama-130m|all] [-b B] [-t T] "
            "[--reps N] [--warmup W] | --ceilings | --attention [--attention-rows all|classic|tma]\n", msg);
    exit(2);
}

Opts parse(int argc, char** argv) {
    Opts o;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto val = [&]() -> const char* {
            if (i + 1 >= argc) usage((a + ": missing value").c_str());
            return argv[++i];
        };
        if (a == "--ceilings") o.ceilings_only = true;
        else if (a == "--attention") o.attention_only = true;
        else if (a == "--attention-rows") o.attention_rows = val();
        else if (a == "--model") o.model = val();
        else if (a == "-b") o.B = atoi(val());
        else if (a == "-t") o.T = atoi(val());
        else if (a == "--reps") o.reps = atoi(val());
        else if (a == "--warmup") o.warmup = atoi(val());
        else if (a == "-h" || a == "--help") usage("kernel micro-benchmarks");
        else usage(("unknown argument " + a).c_str());
    }
    if (o.reps < 1 || o.warmup < 0) usage("--reps must be >= 1 and --warmup >= 0");
    if (o.attention_rows != "all" && o.attention_rows != "classic" && o.attention_rows != "tma")
        usage(("--attention-rows: expected all, classic or tma, got " + o.attention_rows).c_str());
    if (o.model != "all" && o.model != "gpt2-124m" && o.model != "llama-130m")
        usage(("--model: expected gpt2-124m, llama-130m or all, got " + o.model).c_str());
    return o;
}

// Device memory released at exit of the scope.
struct Buf {
    void* p = nullptr;
    explicit Buf(size_t bytes) { p = cuda_backend::alloc(std::max<size_t>(bytes, 256), "benchmark buffer"); }
    ~Buf() { cuda_backend::release(p); }
    Buf(const Buf&) = delete;
    Buf& operator=(const Buf&) = delete;
    template <class T> T* as() const { return (T*)p; }
};

// Random floatX in [-scale, scale), from a fixed seed.
void fill(floatX* d, size_t n, float scale, unsigned seed) {
    std::vector<float> h(n);
    uint32_t s = seed * 2654435761u + 1;
    for (auto& x : h) {
        s = s * 1664525u + 1013904223u;
        x = scale * ((s >> 8) * (2.0f / 16777216.0f) - 1.0f);
    }
    cuda_backend::upload_f32(d, h.data(), n);
}
void fill_tokens(int* d, size_t n, int V, unsigned seed) {
    std::vector<int> h(n);
    uint32_t s = seed;
    for (auto& x : h) s = s * 1664525u + 1013904223u, x = (int)((s >> 8) % (uint32_t)V);
    cuda_backend::copy_from_host(d, h.data(), n * sizeof(int));
}

// Times fn: warm-up launches, then reps launches each after an L2 flush, median in ms.
struct Timer {
    int reps, warmup;
    Buf flush;
    size_t flush_bytes;
    cudaEvent_t e0, e1;
    Timer(int r, int w, size_t l2) : reps(r), warmup(w), flush(2 * l2 + (1 << 20)), flush_bytes(2 * l2 + (1 << 20)) {
        cudaCheck(cudaEventCreate(&e0));
        cudaCheck(cudaEventCreate(&e1));
    }
    ~Timer() {
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
    }
    double median_ms(const std::function<void()>& fn) {
        for (int i = 0; i < warmup; i++) fn();
        std::vector<float> ms(reps);
        for (int i = 0; i < reps; i++) {
            cudaCheck(cudaMemsetAsync(flush.p, i & 0xff, flush_bytes, g_stream));  // evicts the op's data from L2
            cudaCheck(cudaEventRecord(e0, g_stream));
            fn();
            cudaCheck(cudaEventRecord(e1, g_stream));
            cudaCheck(cudaEventSynchronize(e1));
            cudaCheck(cudaEventElapsedTime(&ms[i], e0, e1));
        }
        std::sort(ms.begin(), ms.end());
        return reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
    }
};

Ceilings measure_ceilings(Timer& tm) {
    Ceilings c;
    {  // copy: 1 GiB device to device; read + write both count, as DRAM traffic does
        const size_t bytes = (size_t)1 << 30;
        Buf a(bytes), b(bytes);
        cudaCheck(cudaMemsetAsync(a.p, 1, bytes, g_stream));
        const double ms = tm.median_ms([&] { cudaCheck(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice, g_stream)); });
        c.copy_gbs = 2.0 * bytes / (ms * 1e6);
    }
    {  // GEMM: 8192^3 through matmul_forward (cuBLASLt, bf16 operands, fp32 accumulation)
        const int n = 8192;
        Buf x((size_t)n * n * sizeof(floatX)), w((size_t)n * n * sizeof(floatX)), y((size_t)n * n * sizeof(floatX));
        fill(x.as<floatX>(), (size_t)n * n, 1.0f, 1);
        fill(w.as<floatX>(), (size_t)n * n, 0.01f, 2);
        const double ms = tm.median_ms([&] { cuda_backend::matmul_forward(y.as<floatX>(), x.as<floatX>(), w.as<floatX>(), nullptr, n, n, n); });
        c.gemm_tflops = 2.0 * n * n * (double)n / (ms * 1e9);
    }
    return c;
}

struct Row {
    std::string op, shape;
    double ms, bytes, flops;
};

void print_rows(const std::vector<Row>& rows, const Ceilings& c) {
    printf("| op | shape | time (us) | GB/s | TFLOP/s | %% copy BW | %% bf16 GEMM |\n|---|---|---|---|---|---|---|\n");
    for (const Row& r : rows) {
        const double gbs = r.bytes / (r.ms * 1e6), tf = r.flops / (r.ms * 1e9);
        printf("| %s | %s | %.1f | %.0f | %.1f | %.1f | %.1f |\n", r.op.c_str(), r.shape.c_str(), r.ms * 1e3, gbs, tf,
               100 * gbs / c.copy_gbs, 100 * tf / c.gemm_tflops);
    }
}

std::string shape(const char* fmt, long a, long b = 0, long c = 0) {
    char buf[96];
    snprintf(buf, sizeof buf, fmt, a, b, c);
    return buf;
}

// One training step's ops of `name` at (B, T), each alone.
std::vector<Row> bench_model(const std::string& name, int B, int T, Timer& tm) {
    ModelConfig cfg = preset(name);
    cfg.norm = NormScheme::lns;
    const long N = (long)B * T, C = cfg.n_embd, NH = cfg.n_head, F = cfg.ffn_hidden, W1 = cfg.mlp_in_width();
    const long V = cfg.vocab_size, Vp = cfg.padded_vocab();
    const double s = sizeof(floatX);
    const bool gpt2 = cfg.arch == Arch::gpt2;
    const NormKind kind = cfg.norm_kind();
    const float theta = cfg.rope() ? cfg.rope_theta : 0.0f;

    Buf wte((size_t)Vp * C * s), wpe((size_t)T * C * s), tok(N * sizeof(int)), tgt(N * sizeof(int));
    Buf x(N * C * s), y(N * C * s), res(N * C * s), out(N * C * s), dx(N * C * s), mean(N * 4), rstd(N * 4);
    Buf nw(C * s), nb(C * s), dnw(C * s), dnb(C * s);
    Buf qkv(N * 3 * C * s), qkvr(N * 3 * C * s), att((size_t)B * NH * T * T * s), datt((size_t)B * NH * T * T * s);
    Buf dqkv(N * 3 * C * s), dqkvr(N * 3 * C * s);
    Buf h(N * W1 * s), hact(N * F * s), dh(N * W1 * s), dhact(N * F * s);
    Buf wbig((size_t)std::max(W1, Vp) * std::max(C, F) * s), dwbig((size_t)std::max(W1, Vp) * std::max(C, F) * s);
    Buf bias(std::max(3 * C, W1) * s), dbias(std::max(3 * C, W1) * s);
    Buf logits((size_t)N * Vp * s), losses(N * 4);
    fill(wte.as<floatX>(), Vp * C, 0.02f, 3), fill(wpe.as<floatX>(), T * C, 0.02f, 4);
    fill_tokens(tok.as<int>(), N, (int)V, 5), fill_tokens(tgt.as<int>(), N, (int)V, 6);
    fill(x.as<floatX>(), N * C, 1.0f, 7), fill(y.as<floatX>(), N * C, 1.0f, 8), fill(out.as<floatX>(), N * C, 1.0f, 9);
    fill(nw.as<floatX>(), C, 1.0f, 10), fill(nb.as<floatX>(), C, 0.1f, 11);
    fill(qkv.as<floatX>(), N * 3 * C, 1.0f, 12), fill(h.as<floatX>(), N * W1, 1.0f, 13);
    fill(wbig.as<floatX>(), std::max(W1, Vp) * std::max(C, F), 0.02f, 14), fill(bias.as<floatX>(), std::max(3 * C, W1), 0.02f, 15);
    fill(logits.as<floatX>(), N * Vp, 1.0f, 16), fill(hact.as<floatX>(), N * F, 1.0f, 17);
    fill(dh.as<floatX>(), N * W1, 1.0f, 18);
    cuda_backend::zero(dwbig.p, (size_t)std::max(W1, Vp) * std::max(C, F) * s);
    cuda_backend::synchronize();

    std::vector<Row> rows;
    auto run = [&](const std::string& op, const std::string& shp, double bytes, double flops, const std::function<void()>& fn) {
        rows.push_back({op, shp, tm.median_ms(fn), bytes, flops});
        fprintf(stderr, "  %s %s: %.1f us\n", op.c_str(), shp.c_str(), rows.back().ms * 1e3);
    };
    floatX *X = x.as<floatX>(), *Y = y.as<floatX>(), *R = res.as<floatX>(), *O = out.as<floatX>(), *DX = dx.as<floatX>();
    float* MEAN = kind == NormKind::layernorm ? mean.as<float>() : nullptr;
    floatX* NB = gpt2 ? nb.as<floatX>() : nullptr;
    floatX* DNB = gpt2 ? dnb.as<floatX>() : nullptr;
    floatX *Wb = wbig.as<floatX>(), *DWb = dwbig.as<floatX>(), *BI = gpt2 ? bias.as<floatX>() : nullptr;
    floatX* DBI = gpt2 ? dbias.as<floatX>() : nullptr;
    const std::string nc = shape("N=%ld C=%ld", N, C);

    // encoder: read a row of wte (and wpe) per token, write the row
    run("encoder_forward", nc, (2.0 * N * C + (gpt2 ? T * C : 0)) * s + 4.0 * N, 0,
        [&] { cuda_backend::encoder_forward(O, tok.as<int>(), wte.as<floatX>(), gpt2 ? wpe.as<floatX>() : nullptr, B, T, C); });
    run("encoder_backward", nc, (2.0 * N * C + (gpt2 ? 2.0 * T * C : 0)) * s + 4.0 * N, 0, [&] {
        cuda_backend::encoder_backward(wte.as<floatX>(), gpt2 ? wpe.as<floatX>() : nullptr, O, tok.as<int>(), B, T, C);
    });
    // fused residual add + norm: read x, y; write res, out, statistics
    run("residual_norm_forward", nc, 4.0 * N * C * s + 8.0 * N, 0, [&] {
        cuda_backend::residual_norm_forward(R, O, MEAN, rstd.as<float>(), X, Y, 1.0f, nw.as<floatX>(), NB, N, C, kind,
                                            cfg.norm_eps, cfg.norm, 3);
    });
    // read dout, dres, res, statistics; write dx (dw, db are C-sized)
    run("residual_norm_backward", nc, 4.0 * N * C * s + 8.0 * N, 0, [&] {
        cuda_backend::residual_norm_backward(DX, nullptr, dnw.as<floatX>(), DNB, O, Y, R, nw.as<floatX>(), MEAN,
                                             rstd.as<float>(), 1.0f, N, C, kind, cfg.norm, 3);
    });
    // attention: QK^T and AV, 2*B*NH*T*T*hs each; read qkv, write out, write + read att
    const double att_elems = (double)B * NH * T * T;
    run("attention_forward", shape("B=%ld T=%ld NH=%ld", B, T, NH), (4.0 * N * C + 2.0 * att_elems) * s,
        4.0 * B * T * (double)T * C, [&] {
            cuda_backend::attention_forward(O, qkvr.as<floatX>(), att.as<floatX>(), qkv.as<floatX>(), B, T, C, NH, theta);
        });
    run("attention_backward", shape("B=%ld T=%ld NH=%ld", B, T, NH), (7.0 * N * C + 3.0 * att_elems) * s,
        8.0 * B * T * (double)T * C, [&] {
            cuda_backend::attention_backward(dqkv.as<floatX>(), dqkvr.as<floatX>(), datt.as<floatX>(), O,
                                             qkvr.as<floatX>(), att.as<floatX>(), B, T, C, NH, theta);
        });
    if (cuda_backend::attention_flash_supported((int)(C / NH))) {
        // read qkv, write out and lse; backward reads qkv, out, dout, lse and writes dqkv
        const double lse_bytes = 4.0 * B * NH * T;
        Buf lse((size_t)lse_bytes);
        run("attention_flash_forward", shape("B=%ld T=%ld NH=%ld", B, T, NH), 4.0 * N * C * s + lse_bytes,
            2.0 * B * T * (double)T * C, [&] {
                cuda_backend::attention_flash_forward(O, lse.as<float>(), qkv.as<floatX>(), B, T, C, NH, theta);
            });
        run("attention_flash_backward", shape("B=%ld T=%ld NH=%ld", B, T, NH), 8.0 * N * C * s + lse_bytes,
            5.0 * B * T * (double)T * C, [&] {
                cuda_backend::attention_flash_backward(dqkv.as<floatX>(), X, qkv.as<floatX>(), O, lse.as<float>(), B, T,
                                                       C, NH, theta);
            });
    }
    if (gpt2) {
        const size_t n = (size_t)N * F;
        run("gelu_forward", shape("n=%ld", (long)n), 2.0 * n * s, 0,
            [&] { cuda_backend::gelu_forward(hact.as<floatX>(), h.as<floatX>(), n); });
        run("gelu_backward", shape("n=%ld", (long)n), 3.0 * n * s, 0,
            [&] { cuda_backend::gelu_backward(dhact.as<floatX>(), h.as<floatX>(), hact.as<floatX>(), n); });
    } else {
        run("swiglu_forward", shape("N=%ld F=%ld", N, F), 3.0 * N * F * s, 0,
            [&] { cuda_backend::swiglu_forward(hact.as<floatX>(), h.as<floatX>(), N, F); });
        run("swiglu_backward", shape("N=%ld F=%ld", N, F), 5.0 * N * F * s, 0,
            [&] { cuda_backend::swiglu_backward(dh.as<floatX>(), h.as<floatX>(), hact.as<floatX>(), N, F); });
    }
    // cross-entropy over the padded logits: read (forward), read + write (backward)
    run("crossentropy_forward", shape("N=%ld Vp=%ld", N, Vp), (double)N * Vp * s + 8.0 * N, 0, [&] {
        cuda_backend::crossentropy_forward(losses.as<float>(), logits.as<floatX>(), tgt.as<int>(), N, V, Vp);
    });
    run("crossentropy_backward", shape("N=%ld Vp=%ld", N, Vp), 2.0 * N * Vp * s + 4.0 * N, 0, [&] {
        // in place, as the model does
        cuda_backend::crossentropy_backward(logits.as<floatX>(), logits.as<floatX>(), tgt.as<int>(), 1.0f / N, N, V, Vp);
    });

    // cuBLASLt on every GEMM shape of a step: forward 2*N*C*OC, backward twice that
    struct G { const char* what; long C, OC; bool gelu; };
    std::vector<G> gemms = {{"qkv", C, 3 * C, false}, {"attn proj", C, C, false},
                            {gpt2 ? "fc+gelu" : "gate|up", C, W1, gpt2}, {"mlp proj", F, C, false},
                            {"lm_head", C, Vp, false}};
    for (const G& g : gemms) {
        const std::string shp = shape("N=%ld C=%ld OC=%ld", N, g.C, g.OC) + " " + g.what;
        const double io = ((double)N * g.C + (double)g.C * g.OC + (double)N * g.OC) * s;
        floatX* bias_p = g.OC == Vp ? nullptr : BI;
        run("matmul_forward", shp, io + (g.gelu ? N * g.OC * s : 0), 2.0 * N * g.C * g.OC, [&] {
            floatX* dst = g.gelu ? hact.as<floatX>() : g.OC == Vp ? logits.as<floatX>() : dh.as<floatX>();
            cuda_backend::matmul_forward(dst, g.C == F ? hact.as<floatX>() : X,
                                         Wb, bias_p, N, g.C, g.OC, g.gelu ? h.as<floatX>() : nullptr);
        });
        // reads dout, inp, w; writes dinp, dw (accumulating: dw read too)
        run("matmul_backward", shp, io + ((double)N * g.C + 2.0 * g.C * g.OC) * s, 4.0 * N * g.C * g.OC, [&] {
            cuda_backend::matmul_backward(g.C == F ? dhact.as<floatX>() : DX, DWb, bias_p ? DBI : nullptr,
                                          g.OC == Vp ? logits.as<floatX>() : dh.as<floatX>(),
                                          g.C == F ? hact.as<floatX>() : X, Wb, N, g.C, g.OC, true);
        });
    }
    return rows;
}

// Causal attention alone, flash against the first version, no RoPE (as PyTorch's
// scaled_dot_product_attention, which bench/bench_torch.py --attention times on the same
// shapes); then flash with RoPE in its two placements, on wgmma, with 8-warp forward
// blocks, and the TMA kernels (without and with RoPE; the backward also as two kernels,
// flash_tma_dq_kernel; the forward also on a block per work, flash_tma_block_per_work; the
// one-pass backward's key blocks handed out across 32 heads or all, flash_tma_bwd_group32
// and flash_tma_bwd_group_all).
// FLOPs, FlashAttention's
// convention: forward 4*B*H*T*T*D / 2 (the causal half of QK^T and PV), backward 2.5x the
// forward (five products of the same size against two). One line per (shape, kernel):
// attn_tflops B H T D kernel fwd X bwd Y.
// rows: "all", "classic" (all but the TMA kernels) or "tma" (those only).
void bench_attention(Timer& tm, const std::string& rows) {
    const bool classic = rows != "tma", tma = rows != "classic";
    struct S { int B, H, T, D; };
    const S shapes[] = {{8, 12, 1024, 64}, {4, 16, 2048, 128}, {64, 12, 256, 64}};  // the last: the paper's T = 256
    printf("\n## Causal attention, no RoPE (TFLOP/s: forward 2*B*H*T*T*D, backward 2.5x)\n\n");
    for (const S& a : shapes) {
        const int C = a.H * a.D;
        const size_t N = (size_t)a.B * a.T, s = sizeof(floatX), TT = (size_t)a.B * a.H * a.T * a.T;
        const double fwd_flops = 2.0 * a.B * a.H * (double)a.T * a.T * a.D;
        Buf qkv(N * 3 * C * s), out(N * C * s), dout(N * C * s), dqkv(N * 3 * C * s), lse((size_t)a.B * a.H * a.T * 4);
        fill(qkv.as<floatX>(), N * 3 * C, 1.0f, 30), fill(dout.as<floatX>(), N * C, 1.0f, 31);
        floatX *Q = qkv.as<floatX>(), *O = out.as<floatX>(), *DO = dout.as<floatX>(), *DQ = dqkv.as<floatX>();
        auto report = [&](const char* kernel, double fwd_ms, double bwd_ms) {
            printf("attn_tflops %d %d %d %d %s fwd %.1f bwd %.1f\n", a.B, a.H, a.T, a.D, kernel,
                   fwd_flops / (fwd_ms * 1e9), 2.5 * fwd_flops / (bwd_ms * 1e9));
        };
        if (cuda_backend::attention_flash_supported(a.D)) {
            float* L = lse.as<float>();
            if (classic) {  // mma.sync and wgmma kernels, and their variants
                const double f = tm.median_ms([&] { cuda_backend::attention_flash_forward(O, L, Q, a.B, a.T, C, a.H, 0.0f); });
                const double b = tm.median_ms(
                    [&] { cuda_backend::attention_flash_backward(DQ, DO, Q, O, L, a.B, a.T, C, a.H, 0.0f); });
                report("flash", f, b);
                // with RoPE: q, k rotated into a copy before the kernels (the default), or
                // rotated inside the kernels' tile loads; the better one should stay the default
                for (bool on_load : {false, true}) {
                    cuda_backend::attention_flash_options({on_load, false});
                    const double fr = tm.median_ms(
                        [&] { cuda_backend::attention_flash_forward(O, L, Q, a.B, a.T, C, a.H, 10000.0f); });
                    const double br = tm.median_ms(
                        [&] { cuda_backend::attention_flash_backward(DQ, DO, Q, O, L, a.B, a.T, C, a.H, 10000.0f); });
                    report(on_load ? "flash_rope_on_load" : "flash_rope_first", fr, br);
                }
                if (cuda_backend::attention_flash_has_wgmma()) {  // every product on wgmma
                    cuda_backend::attention_flash_options({false, true});
                    const double fw = tm.median_ms(
                        [&] { cuda_backend::attention_flash_forward(O, L, Q, a.B, a.T, C, a.H, 0.0f); });
                    const double bw = tm.median_ms(
                        [&] { cuda_backend::attention_flash_backward(DQ, DO, Q, O, L, a.B, a.T, C, a.H, 0.0f); });
                    report("flash_wgmma", fw, bw);
                }
                // forward blocks of 8 warps (128 query rows); the backward is the same kernels as above
                for (bool wg : {false, true}) {
                    if (wg && !cuda_backend::attention_flash_has_wgmma()) continue;
                    cuda_backend::attention_flash_options({false, wg, 8});
                    const double f8 = tm.median_ms(
                        [&] { cuda_backend::attention_flash_forward(O, L, Q, a.B, a.T, C, a.H, 0.0f); });
                    printf("attn_tflops %d %d %d %d %s fwd %.1f bwd -\n", a.B, a.H, a.T, a.D,
                           wg ? "flash_wgmma_8warps" : "flash_8warps", fwd_flops / (f8 * 1e9));
                }
                // forward warps of 32 rows (two 16-row tiles sharing each K and V fragment)
                cuda_backend::FlashOptions rows32;
                rows32.forward_warp_rows = 32;
                cuda_backend::attention_flash_options(rows32);
                const double f32 = tm.median_ms(
                    [&] { cuda_backend::attention_flash_forward(O, L, Q, a.B, a.T, C, a.H, 0.0f); });
                printf("attn_tflops %d %d %d %d flash_32rows fwd %.1f bwd -\n", a.B, a.H, a.T, a.D,
                       fwd_flops / (f32 * 1e9));
            }
            if (tma && cuda_backend::attention_flash_has_wgmma()) {  // the TMA kernels, without and with RoPE
                cuda_backend::attention_flash_options({false, false, 4, true});
                for (float theta : {0.0f, 10000.0f}) {
                    const double ft = tm.median_ms(
                        [&] { cuda_backend::attention_flash_forward(O, L, Q, a.B, a.T, C, a.H, theta); });
                    const double bt = tm.median_ms(
                        [&] { cuda_backend::attention_flash_backward(DQ, DO, Q, O, L, a.B, a.T, C, a.H, theta); });
                    report(theta > 0 ? "flash_tma_rope_first" : "flash_tma", ft, bt);
                }
                // the backward as two kernels (dq, then dk and dv) instead of one pass
                cuda_backend::attention_flash_options({false, false, 4, true, true});
                const double bk = tm.median_ms(
                    [&] { cuda_backend::attention_flash_backward(DQ, DO, Q, O, L, a.B, a.T, C, a.H, 0.0f); });
                printf("attn_tflops %d %d %d %d flash_tma_dq_kernel fwd - bwd %.1f\n", a.B, a.H, a.T, a.D,
                       2.5 * fwd_flops / (bk * 1e9));
                // the forward on a block per work, not persistent
                cuda_backend::attention_flash_options({false, false, 4, true, false, true});
                const double fb = tm.median_ms(
                    [&] { cuda_backend::attention_flash_forward(O, L, Q, a.B, a.T, C, a.H, 0.0f); });
                printf("attn_tflops %d %d %d %d flash_tma_block_per_work fwd %.1f bwd -\n", a.B, a.H, a.T, a.D,
                       fwd_flops / (fb * 1e9));
                // the one-pass backward's key blocks handed out across 32 heads, or all, not head by head
                for (int group : {32, 0}) {
                    cuda_backend::attention_flash_options({false, false, 4, true, false, false, group});
                    const double bg = tm.median_ms(
                        [&] { cuda_backend::attention_flash_backward(DQ, DO, Q, O, L, a.B, a.T, C, a.H, 0.0f); });
                    printf("attn_tflops %d %d %d %d %s fwd - bwd %.1f\n", a.B, a.H, a.T, a.D,
                           group ? "flash_tma_bwd_group32" : "flash_tma_bwd_group_all", 2.5 * fwd_flops / (bg * 1e9));
                }
            }
            cuda_backend::attention_flash_options({});
        }
        if (!classic) continue;  // the first version
        Buf qkvr(N * 3 * C * s), dqkvr(N * 3 * C * s), att(TT * s), datt(TT * s);
        floatX *QR = qkvr.as<floatX>(), *A = att.as<floatX>();
        const double f = tm.median_ms([&] { cuda_backend::attention_forward(O, QR, A, Q, a.B, a.T, C, a.H, 0.0f); });
        const double b = tm.median_ms([&] {
            cuda_backend::attention_backward(DQ, dqkvr.as<floatX>(), datt.as<floatX>(), DO, QR, A, a.B, a.T, C, a.H, 0.0f);
        });
        report("naive", f, b);
    }
}

// AdamW and the gradient norm over the whole parameter count of the model.
std::vector<Row> bench_optimizer(const std::string& name, Timer& tm) {
    ModelConfig cfg = preset(name);
    const size_t P = build_param_layout(cfg).total;
    const double s = sizeof(floatX);
    Buf params(P * s), grads(P * s), master(P * 4), m(P * 4), v(P * 4);
    fill(params.as<floatX>(), P, 0.02f, 20), fill(grads.as<floatX>(), P, 0.001f, 21);
    cuda_backend::zero(master.p, P * 4), cuda_backend::zero(m.p, P * 4), cuda_backend::zero(v.p, P * 4);
    std::vector<Row> rows;
    const std::string shp = shape("n=%ld", (long)P);
    // params r/w, grads r, master, m, v r/w (fp32)
    rows.push_back({"adamw_update", shp, tm.median_ms([&] {
                        cuda_backend::adamw_update(params.as<floatX>(), master.as<float>(), grads.as<floatX>(), m.as<float>(),
                                                   v.as<float>(), P, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 1.0f, 7u);
                    }), P * (3 * s + 24), 0});
    rows.push_back({"norm_squared", shp, tm.median_ms([&] { (void)cuda_backend::norm_squared(grads.as<floatX>(), P); }),
                    P * s, 0});
    return rows;
}

}  // namespace

int main(int argc, char** argv) {
    // a line out as soon as it is measured: a run cut short (a hung kernel, the GPU check's
    // time limit) keeps what it had, also when stdout is a file or a pipe
    setvbuf(stdout, nullptr, _IOLBF, 0);
    const Opts o = parse(argc, argv);
    if (cuda_backend::device_count() == 0) {
        fprintf(stderr, "bench_kernels: no CUDA device found (this binary needs a GPU to measure anything)\n");
        return 1;
    }
    cuda_backend::init(0);
    char dev[256];
    cuda_backend::describe(dev, sizeof dev);
    Timer tm(o.reps, o.warmup, (size_t)g_props.l2CacheSize);
    const Ceilings c = measure_ceilings(tm);
    printf("device %s\ncopy_gbs %.1f\ngemm_tflops %.1f\n", dev, c.copy_gbs, c.gemm_tflops);
    if (o.ceilings_only) return 0;
    if (o.attention_only) {
        bench_attention(tm, o.attention_rows);
        return 0;
    }
    printf("\n# Kernel micro-benchmarks: median of %d, %d warm-up, L2 flushed before each (%s)\n", o.reps, o.warmup,
           sizeof(floatX) == 2 ? "bf16" : "fp32");
    for (const std::string& m : {std::string("gpt2-124m"), std::string("llama-130m")}) {
        if (o.model != "all" && o.model != m) continue;
        const bool gpt2 = m == "gpt2-124m";
        const int B = o.B ? o.B : (gpt2 ? 16 : 64), T = o.T ? o.T : (gpt2 ? 1024 : 256);
        fprintf(stderr, "%s, B=%d T=%d\n", m.c_str(), B, T);
        std::vector<Row> rows = bench_model(m, B, T, tm);
        for (Row& r : bench_optimizer(m, tm)) rows.push_back(r);
        printf("\n## %s, B=%d, T=%d\n\n", m.c_str(), B, T);
        print_rows(rows, c);
    }
    bench_attention(tm, o.attention_rows);
    return 0;
}
