// train_gpt: pre-trains GPT-2 and LLaMA style models with any of the norm schemes
// compared in "The Curse of Depth in Large Language Models" (arXiv 2502.05795),
// including LayerNorm Scaling (--norm lns). One orchestration (model/gpt.h) drives
// the CPU fp32 reference backend or the CUDA backend.
//
// Read top to bottom: options -> model config -> backend choice -> run():
// data, model, optimizer, the training loop, evaluation, sampling, saving.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/rng.h"
#include "cpu/cpu_backend.h"
#ifdef LNS_CUDA
#include "kernels/cuda_backend.h"
#endif
#include "dataloader/dataloader.h"
#include "model/gpt.h"
#include "model/hf_io.h"
#include "tokenizer/bytes.h"
#include "train/optimizer.h"
#include "train/schedule.h"

// ----------------------------------------------------------------------------
// options

struct Options {
    std::string model = "gpt2-tiny", norm = "pre", init = "normal", device = "auto";
    // model overrides (applied only when given)
    int n_layer = 0, n_head = 0, n_embd = 0, ffn_hidden = 0, vocab_size = 0, max_seq_len = 0;
    float norm_eps = 0, rope_theta = 0, mix_alpha = -1, init_std = 0;
    // data
    std::string train_data, val_data;
    int batch_size = 4, seq_len = 64, total_batch_size = 0;
    // optimization
    int steps = 100, warmup = 0;
    float lr = 3e-4f, lr_min_frac = 0.1f, wsd_decay_frac = 0.2f;
    std::string schedule = "cosine";
    AdamWConfig adamw;
    // run
    uint64_t seed = 42;
    std::string out_dir, init_from, save_to;
    int eval_every = 0, val_batches = 8, sample_tokens = 0, threads = 0;
    bool eval_only = false, recompute = false;
    float temperature = 1.0f;
    int top_k = 0;
};

static void add_options(CLI::App& app, Options& o) {
    const char* M = "Model";
    app.add_option("--model", o.model, "preset: " + [] {
        std::string s;
        for (auto& n : preset_names()) s += (s.empty() ? "" : ", ") + n;
        return s;
    }())->group(M);
    app.add_option("--norm", o.norm, "norm scheme: pre, post, mix, sandwich, deepnorm, lns")->group(M);
    app.add_option("--init", o.init, "initialisation: normal, scaled, depth-scaled")->group(M);
    app.add_option("--n-layer", o.n_layer, "override: number of blocks L")->group(M);
    app.add_option("--n-head", o.n_head, "override: attention heads")->group(M);
    app.add_option("--n-embd", o.n_embd, "override: width C")->group(M);
    app.add_option("--ffn-hidden", o.ffn_hidden, "override: MLP hidden width F")->group(M);
    app.add_option("--vocab-size", o.vocab_size, "override: vocabulary size V")->group(M);
    app.add_option("--max-seq-len", o.max_seq_len, "override: maximum sequence length")->group(M);
    app.add_option("--norm-eps", o.norm_eps, "override: norm epsilon")->group(M);
    app.add_option("--rope-theta", o.rope_theta, "override: RoPE base (llama)")->group(M);
    app.add_option("--mix-alpha", o.mix_alpha, "Mix-LN: fraction of lower blocks that are post-LN (0.25)")->group(M);
    app.add_option("--init-std", o.init_std, "override: init standard deviation (0.02)")->group(M);
    app.add_option("--init-from", o.init_from, "load DIR/config.json + DIR/model.safetensors")->group(M);

    const char* D = "Data";
    app.add_option("--train-data", o.train_data, "training shards (file or glob)")->group(D);
    app.add_option("--val-data", o.val_data, "validation shards (file or glob)")->group(D);
    app.add_option("-b,--batch-size", o.batch_size, "micro-batch size B")->group(D);
    app.add_option("-t,--seq-len", o.seq_len, "sequence length T")->group(D);
    app.add_option("--total-batch-size", o.total_batch_size,
                   "tokens per optimizer step; a multiple of B*T (gradient accumulation); 0 = B*T")->group(D);

    const char* O = "Optimization";
    app.add_option("--steps", o.steps, "optimizer steps")->group(O);
    app.add_option("--lr", o.lr, "peak learning rate")->group(O);
    app.add_option("--warmup", o.warmup, "linear warmup steps")->group(O);
    app.add_option("--schedule", o.schedule, "cosine, linear, constant or wsd")->group(O);
    app.add_option("--lr-min-frac", o.lr_min_frac, "decay floor as a fraction of --lr (0.1)")->group(O);
    app.add_option("--wsd-decay-frac", o.wsd_decay_frac, "WSD: fraction of steps spent decaying (0.2)")->group(O);
    app.add_option("--weight-decay", o.adamw.weight_decay, "AdamW decoupled weight decay, matrices only")->group(O);
    app.add_option("--beta1", o.adamw.beta1, "AdamW beta1 (0.9)")->group(O);
    app.add_option("--beta2", o.adamw.beta2, "AdamW beta2 (0.95)")->group(O);
    app.add_option("--adam-eps", o.adamw.eps, "AdamW epsilon (1e-8)")->group(O);
    app.add_option("--grad-clip", o.adamw.grad_clip, "clip the global gradient norm; 0 = off (1.0)")->group(O);

    const char* R = "Run";
    app.add_option("--device", o.device, "auto, cpu or cuda")->group(R);
    app.add_option("--seed", o.seed, "seed for initialisation and sampling")->group(R);
    app.add_option("--threads", o.threads, "CPU threads (0 = OpenMP default)")->group(R);
    app.add_flag("--recompute", o.recompute, "recompute the MLP activation in backward instead of storing it")->group(R);
    app.add_option("--out-dir", o.out_dir, "run directory: log.jsonl")->group(R);
    app.add_option("--eval-every", o.eval_every, "validation every N steps (0 = only at the end)")->group(R);
    app.add_option("--val-batches", o.val_batches, "batches per validation (0 = the whole val set)")->group(R);
    app.add_flag("--eval-only", o.eval_only, "print 'val_loss <float>' for the model and exit")->group(R);
    app.add_option("--save-to", o.save_to, "write DIR/config.json + DIR/model.safetensors at the end")->group(R);
    app.add_option("--sample-tokens", o.sample_tokens, "after training, print a sample of N tokens")->group(R);
    app.add_option("--temperature", o.temperature, "sampling temperature (1.0)")->group(R);
    app.add_option("--top-k", o.top_k, "sample from the k most likely tokens (0 = all)")->group(R);
}

static ModelConfig model_config(const Options& o, const CLI::App& app) {
    ModelConfig c = o.init_from.empty() ? preset(o.model) : load_pretrained_config(o.init_from);
    auto given = [&](const char* flag) { return app.count(flag) > 0; };
    if (given("--n-layer")) c.n_layer = o.n_layer;
    if (given("--n-head")) c.n_head = o.n_head;
    if (given("--n-embd")) c.n_embd = o.n_embd;
    if (given("--ffn-hidden")) c.ffn_hidden = o.ffn_hidden;
    else if (given("--n-embd") && c.arch == Arch::gpt2) c.ffn_hidden = 4 * c.n_embd;
    if (given("--vocab-size")) c.vocab_size = o.vocab_size;
    if (given("--max-seq-len")) c.max_seq_len = o.max_seq_len;
    if (given("--norm-eps")) c.norm_eps = o.norm_eps;
    if (given("--rope-theta")) c.rope_theta = o.rope_theta;
    if (given("--mix-alpha")) c.mix_alpha = o.mix_alpha;
    if (given("--init-std")) c.init_std = o.init_std;
    if (given("--norm") || o.init_from.empty()) c.norm = parse_norm_scheme(o.norm);
    if (given("--init") || o.init_from.empty()) c.init = parse_init_scheme(o.init);
    c.validate();
    return c;
}

static void validate_options(const Options& o, const ModelConfig& c) {
    REQUIRE_INPUT(o.batch_size >= 1, "--batch-size: expected >= 1, got %d", o.batch_size);
    REQUIRE_INPUT(o.seq_len >= 1 && o.seq_len <= c.max_seq_len,
                  "--seq-len: expected 1..%d (the model's maximum sequence length), got %d", c.max_seq_len, o.seq_len);
    const int bt = o.batch_size * o.seq_len;
    REQUIRE_INPUT(o.total_batch_size == 0 || (o.total_batch_size > 0 && o.total_batch_size % bt == 0),
                  "--total-batch-size: expected a positive multiple of --batch-size x --seq-len = %d, got %d", bt,
                  o.total_batch_size);
    REQUIRE_INPUT(o.steps >= 0, "--steps: expected >= 0, got %d", o.steps);
    REQUIRE_INPUT(o.lr >= 0, "--lr: expected >= 0, got %g", o.lr);
    REQUIRE_INPUT(o.warmup >= 0, "--warmup: expected >= 0, got %d", o.warmup);
    REQUIRE_INPUT(o.lr_min_frac >= 0 && o.lr_min_frac <= 1, "--lr-min-frac: expected in [0, 1], got %g", o.lr_min_frac);
    REQUIRE_INPUT(o.adamw.beta1 >= 0 && o.adamw.beta1 < 1, "--beta1: expected in [0, 1), got %g", o.adamw.beta1);
    REQUIRE_INPUT(o.adamw.beta2 >= 0 && o.adamw.beta2 < 1, "--beta2: expected in [0, 1), got %g", o.adamw.beta2);
    REQUIRE_INPUT(o.adamw.eps > 0, "--adam-eps: expected > 0, got %g", o.adamw.eps);
    REQUIRE_INPUT(o.adamw.weight_decay >= 0, "--weight-decay: expected >= 0, got %g", o.adamw.weight_decay);
    REQUIRE_INPUT(o.adamw.grad_clip >= 0, "--grad-clip: expected >= 0 (0 = off), got %g", o.adamw.grad_clip);
    REQUIRE_INPUT(o.temperature > 0, "--temperature: expected > 0, got %g", o.temperature);
    REQUIRE_INPUT(o.top_k >= 0, "--top-k: expected >= 0, got %d", o.top_k);
    REQUIRE_INPUT(o.sample_tokens >= 0, "--sample-tokens: expected >= 0, got %d", o.sample_tokens);
    REQUIRE_INPUT(o.val_batches >= 0, "--val-batches: expected >= 0, got %d", o.val_batches);
    REQUIRE_INPUT(o.eval_only || o.steps == 0 || !o.train_data.empty(),
                  "--train-data: required to train (a shard file or glob)");
    REQUIRE_INPUT(!o.eval_only || !o.val_data.empty(), "--val-data: required with --eval-only");
    REQUIRE_INPUT(o.sample_tokens == 0 || c.vocab_size == ByteTokenizer::vocab_size,
                  "--sample-tokens: decoding needs the byte tokenizer (vocab 256); this model has vocab %d",
                  c.vocab_size);
}

// ----------------------------------------------------------------------------
// evaluation and sampling

template <class Backend>
static float evaluate(GPT<Backend>& model, DataLoader& val, int batches, int B, int T) {
    val.reset();
    const int n = batches > 0 ? std::min<int>(batches, (int)val.num_batches()) : (int)val.num_batches();
    std::vector<int> x((size_t)B * T), y((size_t)B * T);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        val.next_batch(x.data(), y.data());
        sum += model.forward(x.data(), y.data(), B, T);
    }
    return (float)(sum / n);
}

// Autoregressive sampling without a cache: every token re-runs the prefix (the
// CPU reference path; fine at the sizes the CPU trains).
template <class Backend>
static std::vector<int> sample(GPT<Backend>& model, int prompt_token, int n, float temperature, int top_k,
                               uint64_t seed) {
    const int Vp = model.cfg.padded_vocab(), V = model.cfg.vocab_size, Tmax = model.T;
    Rng rng(seed);
    std::vector<int> tokens{prompt_token};
    std::vector<float> logits(Vp), probs(V);
    for (int i = 0; i < n; i++) {
        const int t0 = std::max(0, (int)tokens.size() - Tmax);
        const int t = (int)tokens.size() - t0;
        model.forward(tokens.data() + t0, nullptr, 1, t);
        std::vector<float> last(Vp);
        model.download_logits_row(last.data(), t - 1);
        float maxv = -INFINITY;
        for (int v = 0; v < V; v++) maxv = std::fmax(maxv, last[v] / temperature);
        if (top_k > 0 && top_k < V) {  // keep the k largest
            std::vector<float> sorted(last.begin(), last.begin() + V);
            std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<float>());
            const float kth = sorted[top_k - 1];
            for (int v = 0; v < V; v++)
                if (last[v] < kth) last[v] = -INFINITY;
        }
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += probs[v] = std::exp(last[v] / temperature - maxv);
        double u = rng.uniform() * sum, c = 0.0;
        int next = V - 1;
        for (int v = 0; v < V; v++)
            if ((c += probs[v]) >= u) {
                next = v;
                break;
            }
        tokens.push_back(next);
    }
    return std::vector<int>(tokens.begin() + 1, tokens.end());
}

// ----------------------------------------------------------------------------
// the run

struct JsonLog {
    std::ofstream f;
    void open(const std::string& dir, const nlohmann::json& config) {
        if (dir.empty()) return;
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        f.open(dir + "/log.jsonl", std::ios::out | std::ios::trunc);
        REQUIRE_INPUT(f.good(), "--out-dir: cannot write %s/log.jsonl", dir.c_str());
        write(config);
    }
    void write(const nlohmann::json& j) {
        if (f.is_open()) f << j.dump() << "\n" << std::flush;
    }
};

// Model FLOPs per token for forward + backward (PaLM, appendix B): 6 per parameter
// plus 12 * L * C * T for attention scores and their use.
static double flops_per_token(const ModelConfig& c, size_t params, int T) {
    return 6.0 * (double)params + 12.0 * c.n_layer * c.n_embd * (double)T;
}

// Dense bf16 tensor-core peak from the device name (datasheet figures), 0 when unknown.
static double peak_bf16_flops(const std::string& device) {
    if (device.find("H100") != std::string::npos || device.find("H200") != std::string::npos) return 989.4e12;
    if (device.find("A100") != std::string::npos) return 312e12;
    return 0.0;
}

template <class Backend>
static int run(const Options& o, const ModelConfig& cfg, double peak_flops) {
    const int B = o.batch_size, T = o.seq_len;
    const int accum = o.total_batch_size > 0 ? o.total_batch_size / (B * T) : 1;

    // data (opened before any large allocation, so a bad path fails fast)
    std::unique_ptr<DataLoader> train, val;
    if (!o.eval_only && o.steps > 0) train = std::make_unique<DataLoader>(o.train_data, B, T, cfg.vocab_size);
    if (!o.val_data.empty()) val = std::make_unique<DataLoader>(o.val_data, B, T, cfg.vocab_size);

    GPT<Backend> model(cfg, B, T, o.recompute);
    if (!o.init_from.empty()) {
        std::vector<float> host;
        load_safetensors_model(o.init_from + "/model.safetensors", model.layout, host);
        model.set_params(host);
    } else {
        model.init_random(o.seed);
    }

    if (o.eval_only) {
        printf("val_loss %.6f\n", evaluate(model, *val, o.val_batches, B, T));
        return 0;
    }

    printf("model %s | norm %s | init %s | L %d C %d heads %d F %d V %d (padded %d) | %.2fM parameters\n",
           to_string(cfg.arch), to_string(cfg.norm), to_string(cfg.init), cfg.n_layer, cfg.n_embd, cfg.n_head,
           cfg.ffn_hidden, cfg.vocab_size, cfg.padded_vocab(), model.layout.total / 1e6);
    printf("batch B %d x T %d x %d accumulation = %d tokens/step\n", B, T, accum, B * T * accum);
    {   // the memory plan: one allocation per part
        const double GiB = 1024.0 * 1024.0 * 1024.0, P = (double)model.layout.total;
        const double px = P * sizeof(typename Backend::floatX);
        printf("memory (GiB): parameters %.3f | gradients %.3f | AdamW state %.3f | master weights %.3f | "
               "activations %.3f | activation gradients %.3f\n", px / GiB, px / GiB, 2 * P * 4 / GiB,
               model.master ? P * 4 / GiB : 0.0, model.act_bytes / GiB, model.grad_bytes / GiB);
    }
    if (train) printf("train data: %zu shards, %zu tokens/epoch\n", train->shards().size(), train->tokens_per_epoch());

    nlohmann::json config = nlohmann::json::parse(config_to_json(cfg));
    config = {{"type", "config"}, {"model", config}, {"preset", o.model}, {"backend", Backend::name},
              {"batch_size", B}, {"seq_len", T}, {"grad_accum", accum}, {"steps", o.steps}, {"lr", o.lr},
              {"warmup", o.warmup}, {"schedule", o.schedule}, {"seed", o.seed}};
    JsonLog log;
    log.open(o.out_dir, config);

    LrSchedule sched;
    sched.kind = parse_schedule(o.schedule);
    sched.lr = o.lr, sched.warmup = o.warmup, sched.total = o.steps;
    sched.min_frac = o.lr_min_frac, sched.decay_frac = o.wsd_decay_frac;

    std::vector<int> x((size_t)B * T), y((size_t)B * T);
    for (int step = 0; step < o.steps; step++) {
        auto t0 = std::chrono::steady_clock::now();
        model.zero_grad();
        double loss = 0.0;
        for (int micro = 0; micro < accum; micro++) {
            train->next_batch(x.data(), y.data());
            loss += model.forward(x.data(), y.data(), B, T) / accum;
            model.backward(1.0f / accum);
        }
        const float lr = sched.at(step);
        float norm;
        {
            NVTX_RANGE("optimizer");
            norm = optimizer_step(model, o.adamw, lr, step + 1, (uint32_t)(o.seed + step));
        }
        Backend::synchronize();
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        const double tok_s = (double)B * T * accum / (ms / 1000.0);
        const double mfu = peak_flops > 0 ? tok_s * flops_per_token(cfg, model.layout.total, T) / peak_flops : 0.0;
        char mfu_s[32] = "";
        if (peak_flops > 0) snprintf(mfu_s, sizeof mfu_s, " | MFU %.1f%%", 100.0 * mfu);
        printf("step %5d/%d | loss %.6f | norm %.4f | lr %.3e | %.1f ms | %.0f tok/s%s\n", step + 1, o.steps, loss,
               norm, lr, ms, tok_s, mfu_s);
        fflush(stdout);
        REQUIRE_INPUT(std::isfinite(loss) && std::isfinite(norm), "step %d: loss %g, gradient norm %g is not finite",
                      step + 1, loss, norm);
        log.write({{"type", "step"}, {"step", step + 1}, {"loss", loss}, {"grad_norm", norm}, {"lr", lr},
                   {"ms", ms}, {"tok_per_s", tok_s}, {"mfu", mfu}});
        const bool last = step + 1 == o.steps;
        if (val && (last || (o.eval_every > 0 && (step + 1) % o.eval_every == 0))) {
            const float vl = evaluate(model, *val, o.val_batches, B, T);
            printf("val   %5d | val_loss %.6f\n", step + 1, vl);
            log.write({{"type", "val"}, {"step", step + 1}, {"val_loss", vl}});
        }
    }

    if (o.sample_tokens > 0) {
        ByteTokenizer tok;
        std::vector<int> ids = sample(model, '\n', o.sample_tokens, o.temperature, o.top_k, o.seed);
        printf("---- sample (%d tokens, temperature %.2f) ----\n%s\n----\n", o.sample_tokens, o.temperature,
               tok.decode(ids).c_str());
    }
    if (!o.save_to.empty()) {
        save_pretrained(o.save_to, cfg, model.layout, model.get_params());
        printf("saved %s/model.safetensors and config.json\n", o.save_to.c_str());
    }
    return 0;
}

// ----------------------------------------------------------------------------

int main(int argc, char** argv) {
    CLI::App app{"train_gpt: GPT-2 / LLaMA pre-training with LayerNorm Scaling and the norm schemes it is compared to"};
    Options o;
    add_options(app, o);
    CLI11_PARSE(app, argc, argv);
    try {
        if (o.threads > 0) omp_set_num_threads(o.threads);
        const ModelConfig cfg = model_config(o, app);
        validate_options(o, cfg);
        REQUIRE_INPUT(o.device == "auto" || o.device == "cpu" || o.device == "cuda",
                      "--device: expected auto, cpu or cuda, got '%s'", o.device.c_str());
#ifdef LNS_CUDA
        const int ndev = o.device == "cpu" ? 0 : cuda_backend::device_count();
        REQUIRE_INPUT(o.device != "cuda" || ndev > 0, "--device cuda: no CUDA device found (use --device cpu or auto)");
        if (ndev > 0) {
            cuda_backend::init(0);
            char desc[256];
            cuda_backend::describe(desc, sizeof desc);
            printf("backend cuda | %s\n", desc);
#ifdef ENABLE_FP32
            return run<cuda_backend>(o, cfg, 0.0);  // no bf16 peak to compare fp32 with
#else
            return run<cuda_backend>(o, cfg, peak_bf16_flops(desc));
#endif
        }
        if (o.device == "auto") printf("device: no GPU found, using the CPU backend\n");
#else
        REQUIRE_INPUT(o.device != "cuda", "--device cuda: this build has no CUDA backend (built without nvcc); "
                      "use --device cpu or auto");
        if (o.device == "auto") printf("device: built without CUDA, using the CPU backend\n");
#endif
        printf("backend cpu | %d OpenMP threads\n", omp_get_max_threads());
        return run<cpu_backend>(o, cfg, 0.0);
    } catch (const UserError& e) {
        fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
