// train_gpt: pre-trains GPT-2 and LLaMA style models with any of the norm schemes
// compared in "The Curse of Depth in Large Language Models" (arXiv 2502.05795),
// including LayerNorm Scaling (--norm lns). One orchestration (model/gpt.h) drives
// the CPU fp32 reference backend or the CUDA backend.
//
// Read top to bottom: options -> model config -> validation -> ranks and backend ->
// run(): data, model, resume, the training loop (guards, checkpoints, evaluation,
// sampling), saving. Several ranks (mpirun, srun) train data parallel with ZeRO-1
// (train/data_parallel.h); rank 0 prints, logs and samples.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"
#include "common/rng.h"
#include "cpu/cpu_backend.h"
#ifdef LNS_CUDA
#include "kernels/cuda_backend.h"
#endif
#include "dataloader/dataloader.h"
#include "dataloader/shard.h"
#include "model/diagnostics.h"
#include "model/gpt.h"
#include "model/hf_io.h"
#include "tokenizer/tokenizer.h"
#include "comm/comm.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/guards.h"
#include "train/optimizer.h"
#include "train/run_dir.h"
#include "train/schedule.h"

using json = nlohmann::json;

// ----------------------------------------------------------------------------
// options

struct Options {
    std::string model = "gpt2-tiny", norm = "pre", init = "normal", device = "auto";
    // model overrides (applied only when given)
    int n_layer = 0, n_head = 0, n_embd = 0, ffn_hidden = 0, vocab_size = 0, max_seq_len = 0;
    float norm_eps = 0, rope_theta = 0, mix_alpha = -1, init_std = 0;
    float layerscale = 0;
    bool skipinit = false;
    std::string lns_placement = "norm-output";
    // data
    std::string train_data, val_data, tokenizer, data_layout = "packed";
    int doc_token = -1;
    int batch_size = 4, seq_len = 64, total_batch_size = 0;
    bool shuffle = false, overfit_batch = false;
    // optimization
    int steps = 100, warmup = 0;
    float lr = 3e-4f, lr_min_frac = 0.1f, wsd_decay_frac = 0.2f;
    std::string schedule = "cosine";
    AdamWConfig adamw;
    float spike_z = 0.0f;
    int spike_window = 100;
    // run
    uint64_t seed = 42;
    std::string out_dir, init_from, save_to;
    int eval_every = 0, val_batches = 8, val_tokens = 0, threads = 0;
    int ckpt_every = 0, ckpt_keep = 2, ckpt_keep_every = 0;
    bool resume = false, resume_changes = false, eval_only = false, recompute = false;
    std::string attention = "auto", flash_kernels = "auto";
    int sample_every = 0, sample_tokens = 0, top_k = 0;
    int diag_every = 0;
    bool eval_prune = false;
    double comm_timeout = 600;
    std::string comm_dir;
    float temperature = 1.0f;
    std::string prompt;
};

static void add_options(CLI::App& app, Options& o) {
    app.set_config("--config", "", "read options from a TOML file (flags given on the command line win)");
    app.allow_config_extras(false);  // a misspelt key in the file is an error, not a default silently kept
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
    app.add_option("--layerscale", o.layerscale, "LayerScale: a learnable per-channel multiplier on each residual "
                   "branch, initialised to this value (0 = off)")->group(M);
    app.add_flag("--skipinit", o.skipinit, "SkipInit: a learnable scalar multiplier on each residual branch, "
                 "initialised to 1/sqrt(L)")->group(M);
    app.add_option("--lns-placement", o.lns_placement, "with --norm lns, where 1/sqrt(l) applies: norm-output (LNS), "
                   "before-norm, after-sublayer, attn-only, ffn-only")->group(M);
    app.add_option("--init-from", o.init_from, "load DIR/config.json + DIR/model.safetensors")->group(M);

    const char* D = "Data";
    app.add_option("--train-data", o.train_data, "training shards (file or glob)")->group(D);
    app.add_option("--val-data", o.val_data, "validation shards (file or glob)")->group(D);
    app.add_option("--tokenizer", o.tokenizer, "for samples: bytes, gpt2[:DIR], sentencepiece:PATH "
                   "(default: bytes for vocab 256, gpt2 for 50257)")->group(D);
    app.add_option("-b,--batch-size", o.batch_size, "micro-batch size B")->group(D);
    app.add_option("-t,--seq-len", o.seq_len, "sequence length T")->group(D);
    app.add_option("--total-batch-size", o.total_batch_size,
                   "tokens per optimizer step over all ranks; a multiple of B*T*ranks (gradient accumulation); "
                   "0 = B*T*ranks")->group(D);
    app.add_flag("--shuffle", o.shuffle, "visit shards and windows in a seeded random order")->group(D);
    app.add_option("--data-layout", o.data_layout, "packed: rows cut from the token stream (llm.c); documents: one "
                   "document per row, truncated to T+1 or padded with masked targets (doc/curse-of-depth.md)")->group(D);
    app.add_option("--doc-token", o.doc_token, "documents layout: the token that starts each document (default: the "
                   "tokenizer's end-of-text; 0 for bytes)")->group(D);
    app.add_flag("--overfit-batch", o.overfit_batch, "train on the first batch over and over (debugging)")->group(D);

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
    app.add_option("--spike-z", o.spike_z, "skip the update when loss or gradient norm has a z-score above this "
                   "over the recent steps; 0 = off")->group(O);
    app.add_option("--spike-window", o.spike_window, "steps the spike z-score looks back over (100)")->group(O);

    const char* R = "Run";
    app.add_option("--device", o.device, "auto, cpu or cuda")->group(R);
    app.add_option("--seed", o.seed, "seed for initialisation, data order and sampling")
        ->check(CLI::Validator(  // -1 would wrap to 2^64 - 1
            [](std::string& v) { return v.rfind('-', 0) == 0 ? std::string("expected an integer >= 0") : ""; },
            ""))
        ->group(R);
    app.add_option("--threads", o.threads, "CPU threads (0 = OpenMP default)")->group(R);
    app.add_flag("--recompute", o.recompute, "recompute the MLP activation in backward instead of storing it")->group(R);
    app.add_option("--attention", o.attention, "flash (stores only each row's log-sum-exp), naive (the first version, "
                   "stores the (T,T) probabilities) or auto (flash where the backend supports the head size)")->group(R);
    app.add_option("--flash-kernels", o.flash_kernels, "the CUDA backend's flash attention kernels: mma (mma.sync, "
                   "any sm_80+ GPU), tma (TMA + wgmma, warp-specialised: sm_90 GPUs) or auto (the default, mma)")
        ->group(R);
    app.add_option("--out-dir", o.out_dir, "run directory: log.jsonl, config.toml, checkpoints")->group(R);
    app.add_option("--ckpt-every", o.ckpt_every, "checkpoint every N steps (0 = only when stopped by a signal)")
        ->group(R);
    app.add_option("--ckpt-keep", o.ckpt_keep, "keep the newest K checkpoints (2)")->group(R);
    app.add_option("--ckpt-keep-every", o.ckpt_keep_every, "also keep every checkpoint whose step is a multiple of M")
        ->group(R);
    app.add_flag("--resume", o.resume, "continue from the newest complete checkpoint in --out-dir")
        ->group(R)
        ->configurable(false);
    app.add_flag("--resume-changes", o.resume_changes, "with --resume: let --steps, the learning-rate schedule, "
                 "--grad-clip, --weight-decay and the spike guard differ from the checkpoint's (e.g. a lower --lr "
                 "after a divergence, or more --steps); the model, data, batch and seed must still match")
        ->group(R)
        ->configurable(false);
    app.add_option("--eval-every", o.eval_every, "validation every N steps (0 = only at the end)")->group(R);
    app.add_option("--val-batches", o.val_batches, "batches per validation, each of B rows on every rank (0 = the whole val set)")->group(R);
    app.add_option("--val-tokens", o.val_tokens, "tokens per validation; overrides --val-batches")->group(R);
    app.add_flag("--eval-only", o.eval_only, "print 'val_loss <float>' for the model (or --resume checkpoint) and exit")
        ->group(R);
    app.add_option("--diag-every", o.diag_every, "depth diagnostics every N steps (and before the first) on a fixed "
                   "batch, logged as 'diag' records (0 = off; doc/curse-of-depth.md)")->group(R);
    app.add_flag("--eval-prune", o.eval_prune, "after training (or with --eval-only, appending to --out-dir's log): "
                 "validation loss with each block removed in turn, logged as a 'prune' record")->group(R);
    app.add_option("--save-to", o.save_to, "write DIR/config.json + DIR/model.safetensors at the end")->group(R);
    app.add_option("--sample-every", o.sample_every, "print a sample every N steps (0 = off)")->group(R);
    app.add_option("--sample-tokens", o.sample_tokens, "tokens per sample (also printed after training when > 0)")
        ->group(R);
    app.add_option("--prompt", o.prompt, "sample prompt (default: the end-of-text token)")->group(R);
    app.add_option("--temperature", o.temperature, "sampling temperature (1.0)")->group(R);
    app.add_option("--top-k", o.top_k, "sample from the k most likely tokens (0 = all)")->group(R);

    const char* P = "Several ranks (mpirun -np N, srun; doc/multi-gpu.md)";
    app.add_option("--comm-timeout", o.comm_timeout, "seconds a collective may wait for the other ranks before "
                   "every rank stops with an error (600; 0 = no limit)")->group(P);
    app.add_option("--comm-dir", o.comm_dir, "srun without MPI: a directory every rank sees, for NCCL's "
                   "bootstrap files (default: --out-dir, else .)")->group(P);
}

// f(), with the message of a UserError prefixed by what the input came from.
template <class F>
static auto naming(const std::string& source, F&& f) {
    try {
        return f();
    } catch (const UserError& e) {
        throw UserError(source + ": " + e.what());
    }
}

static ModelConfig model_config(const Options& o, const CLI::App& app) {
    REQUIRE_INPUT(!(o.resume && !o.init_from.empty()), "--resume and --init-from: give one of them");
    REQUIRE_INPUT(o.init_from.empty() || app.count("--model") == 0,
                  "--model and --init-from: give one of them (the model of --init-from is its config.json)");
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
    if (given("--layerscale")) c.layerscale = o.layerscale;
    if (given("--skipinit")) c.skipinit = o.skipinit;
    if (given("--lns-placement")) c.lns_placement = parse_lns_placement(o.lns_placement);
    // flags that would otherwise be silently ignored
    REQUIRE_INPUT(!given("--rope-theta") || c.rope(), "--rope-theta: a %s model has no RoPE (learned positions)",
                  to_string(c.arch));
    REQUIRE_INPUT(!given("--mix-alpha") || c.norm == NormScheme::mix, "--mix-alpha: only with --norm mix (got %s)",
                  to_string(c.norm));
    if (o.init_from.empty()) c.validate();
    else naming(o.init_from + "/config.json (or a flag overriding it)", [&] { c.validate(); });
    return c;
}

// Every flag is checked here, before anything large is allocated.
static void validate_options(const Options& o, const ModelConfig& c) {
    REQUIRE_INPUT(o.device == "auto" || o.device == "cpu" || o.device == "cuda",
                  "--device: expected auto, cpu or cuda, got '%s'", o.device.c_str());
    REQUIRE_INPUT(o.attention == "auto" || o.attention == "flash" || o.attention == "naive",
                  "--attention: expected auto, flash or naive, got '%s'", o.attention.c_str());
    REQUIRE_INPUT(o.flash_kernels == "auto" || o.flash_kernels == "mma" || o.flash_kernels == "tma",
                  "--flash-kernels: expected auto, mma or tma, got '%s'", o.flash_kernels.c_str());
    REQUIRE_INPUT(o.flash_kernels == "auto" || o.attention != "naive",
                  "--flash-kernels %s: flash kernels, but --attention naive", o.flash_kernels.c_str());
    REQUIRE_INPUT(o.batch_size >= 1, "--batch-size: expected >= 1, got %d", o.batch_size);
    REQUIRE_INPUT(o.seq_len >= 1 && o.seq_len <= c.max_seq_len,
                  "--seq-len: expected 1..%d (the model's maximum sequence length), got %d", c.max_seq_len, o.seq_len);
    const int bt = o.batch_size * o.seq_len;
    REQUIRE_INPUT(o.total_batch_size == 0 || (o.total_batch_size > 0 && o.total_batch_size % bt == 0),
                  "--total-batch-size: expected a positive multiple of --batch-size x --seq-len = %d, got %d", bt,
                  o.total_batch_size);
    REQUIRE_INPUT(o.steps >= 0, "--steps: expected >= 0, got %d", o.steps);
    REQUIRE_INPUT(o.lr >= 0 && std::isfinite(o.lr), "--lr: expected a finite value >= 0, got %g", o.lr);
    REQUIRE_INPUT(o.warmup >= 0, "--warmup: expected >= 0, got %d", o.warmup);
    parse_schedule(o.schedule);
    REQUIRE_INPUT(o.lr_min_frac >= 0 && o.lr_min_frac <= 1, "--lr-min-frac: expected in [0, 1], got %g", o.lr_min_frac);
    REQUIRE_INPUT(o.wsd_decay_frac >= 0 && o.wsd_decay_frac <= 1, "--wsd-decay-frac: expected in [0, 1], got %g",
                  o.wsd_decay_frac);
    REQUIRE_INPUT(o.adamw.beta1 >= 0 && o.adamw.beta1 < 1, "--beta1: expected in [0, 1), got %g", o.adamw.beta1);
    REQUIRE_INPUT(o.adamw.beta2 >= 0 && o.adamw.beta2 < 1, "--beta2: expected in [0, 1), got %g", o.adamw.beta2);
    REQUIRE_INPUT(o.adamw.eps > 0, "--adam-eps: expected > 0, got %g", o.adamw.eps);
    REQUIRE_INPUT(o.adamw.weight_decay >= 0, "--weight-decay: expected >= 0, got %g", o.adamw.weight_decay);
    REQUIRE_INPUT(o.adamw.grad_clip >= 0, "--grad-clip: expected >= 0 (0 = off), got %g", o.adamw.grad_clip);
    REQUIRE_INPUT(o.spike_z >= 0, "--spike-z: expected >= 0 (0 = off), got %g", o.spike_z);
    REQUIRE_INPUT(o.spike_window >= 2, "--spike-window: expected >= 2, got %d", o.spike_window);
    REQUIRE_INPUT(o.threads >= 0, "--threads: expected >= 0, got %d", o.threads);
    REQUIRE_INPUT(o.temperature > 0, "--temperature: expected > 0, got %g", o.temperature);
    REQUIRE_INPUT(o.top_k >= 0, "--top-k: expected >= 0, got %d", o.top_k);
    REQUIRE_INPUT(o.sample_tokens >= 0, "--sample-tokens: expected >= 0, got %d", o.sample_tokens);
    REQUIRE_INPUT(o.sample_every >= 0, "--sample-every: expected >= 0, got %d", o.sample_every);
    REQUIRE_INPUT(o.sample_every == 0 || o.sample_tokens > 0, "--sample-every: needs --sample-tokens > 0");
    REQUIRE_INPUT(o.eval_every >= 0, "--eval-every: expected >= 0, got %d", o.eval_every);
    REQUIRE_INPUT(o.val_batches >= 0, "--val-batches: expected >= 0, got %d", o.val_batches);
    REQUIRE_INPUT(o.val_tokens >= 0, "--val-tokens: expected >= 0, got %d", o.val_tokens);
    REQUIRE_INPUT(o.ckpt_every >= 0, "--ckpt-every: expected >= 0, got %d", o.ckpt_every);
    REQUIRE_INPUT(o.ckpt_keep >= 1, "--ckpt-keep: expected >= 1, got %d", o.ckpt_keep);
    REQUIRE_INPUT(o.ckpt_keep_every >= 0, "--ckpt-keep-every: expected >= 0, got %d", o.ckpt_keep_every);
    REQUIRE_INPUT(!o.resume || !o.out_dir.empty(), "--resume: needs --out-dir (the run directory to resume)");
    REQUIRE_INPUT(!o.resume_changes || o.resume, "--resume-changes: only with --resume");
    REQUIRE_INPUT(o.ckpt_every == 0 || !o.out_dir.empty(), "--ckpt-every: needs --out-dir to write checkpoints into");
    REQUIRE_INPUT(o.eval_only || o.steps == 0 || !o.train_data.empty(),
                  "--train-data: required to train (a shard file or glob)");
    REQUIRE_INPUT(!o.eval_only || !o.val_data.empty(), "--val-data: required with --eval-only");
    REQUIRE_INPUT(o.eval_every == 0 || !o.val_data.empty(), "--eval-every: needs --val-data");
    REQUIRE_INPUT(o.diag_every >= 0, "--diag-every: expected >= 0, got %d", o.diag_every);
    REQUIRE_INPUT(!o.eval_prune || !o.val_data.empty(), "--eval-prune: needs --val-data");
    REQUIRE_INPUT(o.comm_timeout >= 0, "--comm-timeout: expected >= 0 seconds (0 = no limit), got %g", o.comm_timeout);
    REQUIRE_INPUT(o.data_layout == "packed" || o.data_layout == "documents",
                  "--data-layout: expected packed or documents, got '%s'", o.data_layout.c_str());
    REQUIRE_INPUT(o.doc_token >= -1 && o.doc_token < c.vocab_size, "--doc-token: expected a token id in [0, %d), got %d",
                  c.vocab_size, o.doc_token);
    REQUIRE_INPUT(o.doc_token == -1 || o.data_layout == "documents", "--doc-token: only with --data-layout documents");
    REQUIRE_INPUT(!(o.overfit_batch && o.shuffle), "--overfit-batch and --shuffle: the first batch is trained on "
                  "again and again, so there is no data order to shuffle; give one of them");
}

// The tokenizer of the data: --tokenizer, else the usual one of the vocabulary size ("" if none).
static std::string tokenizer_spec(const Options& o, const ModelConfig& cfg) {
    return !o.tokenizer.empty() ? o.tokenizer : cfg.vocab_size == 256 ? "bytes" : cfg.vocab_size == 50257 ? "gpt2" : "";
}

// --data-layout documents: documents start at --doc-token, else at the tokenizer's end-of-text
// token (what the shard tools write before each document); bytes has none, and its shards
// (scripts/text_to_shards.py --documents) use byte 0.
static RowLayout row_layout(const Options& o, const ModelConfig& cfg) {
    if (o.data_layout != "documents") return {};
    if (o.doc_token >= 0) return {true, o.doc_token};
    const std::string spec = tokenizer_spec(o, cfg);
    REQUIRE_INPUT(!spec.empty(), "--data-layout documents: no tokenizer known for vocabulary %d; give --doc-token "
                  "(the token that starts each document) or --tokenizer", cfg.vocab_size);
    const int eot = spec == "bytes" ? 0 : make_tokenizer(spec)->eot_token();
    REQUIRE_INPUT(eot >= 0 && eot < cfg.vocab_size, "--data-layout documents: --tokenizer %s has no end-of-text token "
                  "in the vocabulary; give --doc-token", spec.c_str());
    return {true, eot};
}

// Fields of run_config that --resume-changes lets a resumed run change: they shape the
// updates still to come, not the state a checkpoint holds or the order of the data.
static const char* const CHANGEABLE_ON_RESUME[] = {"steps", "lr", "warmup", "schedule", "lr_min_frac",
                                                   "wsd_decay_frac", "adamw.grad_clip", "adamw.weight_decay",
                                                   "spike.z", "spike.window"};
static bool changeable_on_resume(const std::string& difference) {  // "field: old -> new"
    const std::string field = difference.substr(0, difference.find(':'));
    for (const char* f : CHANGEABLE_ON_RESUME)
        if (field == f) return true;
    return false;
}

// The training files as a checkpoint records them: the name and size of each, in the
// loader's order. A saved data position (shard, window) means something only over the
// same list; the glob's text may change (the files moved) as long as the list does not.
static json shard_list(const std::string& pattern) {
    json j = json::array();
    for (const std::string& p : expand_glob(pattern))
        j.push_back({std::filesystem::path(p).filename().string(), std::filesystem::file_size(p)});
    return j;
}
static std::string describe_shards(const json& list) {
    std::string s = std::to_string(list.size()) + " files:";
    for (size_t i = 0; i < list.size() && i < 6; i++)
        s += strfmt(" %s (%llu bytes)", list[i][0].get<std::string>().c_str(), list[i][1].get<unsigned long long>());
    return list.size() > 6 ? s + " ..." : s;
}

// The part of the configuration a checkpoint must agree with to resume exactly.
static json run_config(const Options& o, const ModelConfig& c, const RowLayout& rows) {
    json j = {{"model", json::parse(config_to_json(c))},
            {"batch_size", o.batch_size},
            {"seq_len", o.seq_len},
            {"total_batch_size", o.total_batch_size},
            {"steps", o.steps},
            {"lr", o.lr},
            {"warmup", o.warmup},
            {"schedule", o.schedule},
            {"lr_min_frac", o.lr_min_frac},
            {"wsd_decay_frac", o.wsd_decay_frac},
            {"adamw", {{"beta1", o.adamw.beta1}, {"beta2", o.adamw.beta2}, {"eps", o.adamw.eps},
                       {"weight_decay", o.adamw.weight_decay}, {"grad_clip", o.adamw.grad_clip}}},
            {"spike", {{"z", o.spike_z}, {"window", o.spike_window}}},
            {"train_data", o.train_data},
            {"shuffle", o.shuffle},
            {"overfit_batch", o.overfit_batch},
            {"seed", o.seed}};
    // only when not the default, so checkpoints of packed runs stay resumable
    if (rows.documents) j["data_layout"] = o.data_layout, j["doc_token"] = rows.doc_token;
    return j;
}

// ----------------------------------------------------------------------------
// evaluation, sampling, logging

// The mean loss over `batches` validation batches (0: the whole set). A batch is B rows
// on every rank: each rank reads its own windows, and the batch means are averaged over
// all ranks, so N ranks of B rows evaluate what one process of N*B rows would.
template <class Backend>
static float evaluate(DataParallel<Backend>& dp, DataLoader& val, int batches, int B, int T) {
    val.reset();
    const int n = batches > 0 ? std::min<int>(batches, (int)val.num_batches()) : (int)val.num_batches();
    std::vector<int> x((size_t)B * T), y((size_t)B * T);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        val.next_batch(x.data(), y.data());
        sum += dp.model.forward(x.data(), y.data(), B, T);
    }
    if (dp.size() == 1) return (float)(sum / n);
    float tot[2] = {(float)sum, (float)n};
    dp.sum(tot, 2);
    return tot[0] / tot[1];
}

// Validation loss with each block removed in turn (its residual branches skipped).
// Returns the loss per removed block; `full` gets the unpruned loss.
template <class Backend>
static std::vector<float> evaluate_pruned(DataParallel<Backend>& dp, DataLoader& val, int batches, int B, int T,
                                          float& full) {
    full = evaluate(dp, val, batches, B, T);
    std::vector<float> out;
    for (int l = 0; l < dp.model.cfg.n_layer; l++) {
        dp.model.skip_block = l;
        out.push_back(evaluate(dp, val, batches, B, T));
    }
    dp.model.skip_block = -1;
    return out;
}

template <class Backend>
static json prune_report(DataParallel<Backend>& dp, DataLoader& val, int batches, int B, int T, int step) {
    float full = 0;
    const std::vector<float> pruned = evaluate_pruned(dp, val, batches, B, T, full);
    printf("prune | val_loss %.6f with every block\n| block | val_loss without it | increase |\n", full);
    json layers = json::array();
    for (size_t l = 0; l < pruned.size(); l++) {
        printf("| %5zu | %.6f | %+.6f |\n", l + 1, pruned[l], pruned[l] - full);
        layers.push_back({{"layer", l + 1}, {"val_loss", pruned[l]}, {"increase", pruned[l] - full}});
    }
    return {{"type", "prune"}, {"step", step}, {"val_loss", full}, {"layers", layers}};
}

// Autoregressive sampling with a KV cache: each new token costs one token's forward.
// When the context reaches --seq-len the cache is rebuilt from its last half.
template <class Backend>
static std::vector<int> sample(GPT<Backend>& model, std::vector<int> tokens, int n, float temperature, int top_k,
                               Rng& rng) {
    const int Vp = model.cfg.padded_vocab(), V = model.cfg.vocab_size, Tmax = model.T;
    const size_t prompt = tokens.size();
    auto refill = [&](size_t keep) {  // the last `keep` tokens at positions 0..keep-1
        for (size_t i = 0; i < keep; i++) model.forward_decode(tokens[tokens.size() - keep + i], (int)i);
        return (int)keep;
    };
    int pos = refill(std::min(tokens.size(), (size_t)Tmax));
    std::vector<float> logits(Vp);
    std::vector<double> probs(V);
    for (int i = 0; i < n; i++) {
        model.download_logits_row(logits.data(), 0);
        float kth = -INFINITY;
        if (top_k > 0 && top_k < V) {
            std::vector<float> sorted(logits.begin(), logits.begin() + V);
            std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<float>());
            kth = sorted[top_k - 1];
        }
        float maxv = -INFINITY;
        for (int v = 0; v < V; v++) maxv = std::fmax(maxv, logits[v]);
        double sum = 0.0;
        for (int v = 0; v < V; v++)
            sum += probs[v] = logits[v] >= kth ? std::exp((logits[v] - maxv) / temperature) : 0.0;
        double u = rng.uniform() * sum, c = 0.0;
        int next = V - 1;
        for (int v = 0; v < V; v++)
            if ((c += probs[v]) >= u && probs[v] > 0) {
                next = v;
                break;
            }
        tokens.push_back(next);
        if (i + 1 == n) break;
        if (pos == Tmax) pos = refill(std::max<size_t>(1, Tmax / 2));
        else model.forward_decode(next, pos++);
    }
    return std::vector<int>(tokens.begin() + prompt, tokens.end());
}

struct JsonLog {
    std::ofstream f;
    // A resumed run keeps the records up to its checkpoint and drops those a killed
    // run wrote after it, so the log holds one record per step.
    void open(const std::string& dir, int resumed_at) {
        if (dir.empty()) return;
        const std::string path = dir + "/log.jsonl";
        if (resumed_at > 0) {
            std::ifstream in(path);
            std::string line, kept;
            while (std::getline(in, line)) {
                json j = json::parse(line, nullptr, false);
                if (j.is_discarded()) continue;  // a line cut short by the kill
                if (!j.contains("step") || j["step"].get<int>() <= resumed_at) kept += line + "\n";
            }
            write_file_atomic(path, kept);
        }
        f.open(path, resumed_at > 0 ? std::ios::app : std::ios::out | std::ios::trunc);
        REQUIRE_INPUT(f.good(), "--out-dir: cannot write %s", path.c_str());
    }
    void write(const json& j) {
        if (f.is_open()) f << j.dump() << "\n" << std::flush;
    }
};

// Model FLOPs per token for forward + backward (PaLM, appendix B): 6 per parameter
// plus 12 * L * C * T for attention scores and their use.
static double flops_per_token(const ModelConfig& c, size_t params, int T) {
    return 6.0 * (double)params + 12.0 * c.n_layer * c.n_embd * (double)T;
}

// Dense bf16 tensor-core peak from the device name (datasheet figures), 0 when unknown.
[[maybe_unused]] static double peak_bf16_flops(const std::string& device) {
    if (device.find("H100") != std::string::npos || device.find("H200") != std::string::npos) return 989.4e12;
    if (device.find("A100") != std::string::npos) return 312e12;
    return 0.0;
}

static std::string hms(double seconds) {
    const long s = (long)seconds;
    return s >= 3600 ? strfmt("%ldh%02ldm", s / 3600, s / 60 % 60) : strfmt("%ldm%02lds", s / 60, s % 60);
}

// SIGINT, SIGTERM, SIGHUP (the terminal closed) and SIGPIPE (the reader of stdout gone)
// ask for a checkpoint at the end of the current step, then exit.
static std::atomic<int> g_stop_signal{0};
static void on_signal(int sig) { g_stop_signal = sig; }

// For tests: LNS_INJECT_NAN_STEP=k makes the loss of step k NaN.
static int injected_nan_step() {
    const char* s = getenv("LNS_INJECT_NAN_STEP");
    return s ? atoi(s) : -1;
}

// For tests: LNS_FAULT=rank-exit:R:K or rank-stall:R:K makes rank R fail or hang
// before step K; the other ranks must stop with a message, not hang.
static void injected_rank_fault(int rank, int step) {
    const char* s = getenv("LNS_FAULT");
    char kind[16] = {};
    int r = -1, k = -1;
    if (!s || sscanf(s, "rank-%15[a-z]:%d:%d", kind, &r, &k) != 3 || r != rank || k != step) return;
    if (std::string(kind) == "exit") {
        fprintf(stderr, "error: rank %d: injected failure before step %d\n", rank, step);
        std::exit(3);
    }
    fprintf(stderr, "rank %d: injected stall before step %d\n", rank, step);
    std::this_thread::sleep_for(std::chrono::hours(1));
}

// ----------------------------------------------------------------------------
// the run

template <class Backend>
static int run(const Options& o, const ModelConfig& cfg, const CLI::App& app, double peak_flops, Comm& comm) {
    const int B = o.batch_size, T = o.seq_len, rank = comm.rank(), world = comm.size();
    const bool lead = rank == 0;  // prints (stdout of the others is closed), logs, samples
    // --total-batch-size is global: B*T tokens per micro-batch on each of `world` ranks
    REQUIRE_INPUT(o.total_batch_size % (B * T * world) == 0,
                  "--total-batch-size: expected a multiple of --batch-size x --seq-len x ranks = %d x %d x %d, got %d",
                  B, T, world, o.total_batch_size);
    const int accum = o.total_batch_size > 0 ? o.total_batch_size / (B * T * world) : 1;
    const RowLayout rows = row_layout(o, cfg);
    const json rcfg = run_config(o, cfg, rows);
    // the training files, recorded in checkpoints and compared with theirs on --resume
    const bool training = !o.eval_only && o.steps > 0;
    const json train_shards = training ? naming("--train-data", [&] { return shard_list(o.train_data); }) : json();
    // the directories this run writes, claimed before anything is read or trained
    if (lead && !o.eval_only) {
        if (!o.out_dir.empty()) claim_run_dir(o.out_dir, o.resume);
        if (!o.save_to.empty()) require_writable_dir(o.save_to, "--save-to");
    }

    // a checkpoint to resume from, refused if its configuration differs
    std::unique_ptr<Checkpoint> ck;
    json ck_rank_state;  // this rank's own saved state, when the rank count is unchanged
    if (o.resume) {
        auto all = list_checkpoints(o.out_dir);
        if (!all.empty()) {
            ck = std::make_unique<Checkpoint>(load_checkpoint(all.back().second));
            // evaluation needs only the same model; training needs the same run
            auto diffs = o.eval_only ? config_differences(ck->config.at("model"), rcfg.at("model"), "model")
                                     : config_differences(ck->config, rcfg);
            if (training && ck->state.contains("train_shards")) {
                const json& saved = ck->state.at("train_shards");
                const json& now = train_shards;
                REQUIRE_INPUT(saved == now, "--train-data %s: not the files of the checkpoint %s, whose data "
                              "position would point elsewhere in them\n  checkpoint: %s\n  now: %s",
                              o.train_data.c_str(), all.back().second.c_str(), describe_shards(saved).c_str(),
                              describe_shards(now).c_str());
                diffs.erase(std::remove_if(diffs.begin(), diffs.end(),  // the same files, moved
                                           [](const std::string& d) { return d.rfind("train_data:", 0) == 0; }),
                            diffs.end());
            }
            std::string list;
            for (auto& d : diffs) list += "\n  " + d;
            const bool changeable = std::all_of(diffs.begin(), diffs.end(), changeable_on_resume);
            if (!diffs.empty() && !(o.resume_changes && changeable)) {
                std::string msg = all.back().second + ": checkpoint of a different configuration; differing fields:";
                msg += list;
                if (changeable) msg += "\n(a resumed run may change these with --resume-changes)";
                else if (o.resume_changes) {
                    msg += "\n(--resume-changes covers only";
                    for (const char* f : CHANGEABLE_ON_RESUME) msg += std::string(" ") + f;
                    msg += ")";
                }
                throw UserError(msg);
            }
            if (!diffs.empty())
                printf("--resume-changes: continuing with these settings changed from the checkpoint's "
                       "(the schedule follows the new ones from here):%s\n", list.c_str());
            // this rank's optimizer slice, from the files of the ranks that wrote it
            const ZeroShard sh = zero_shard(build_param_layout(cfg).total, rank, world);
            ck_rank_state = load_optimizer_shard(*ck, all.back().second, sh.begin, sh.begin + sh.n, rank, world);
            printf("resuming from %s (step %d)\n", all.back().second.c_str(), all.back().first);
            const int saved_world = ck->state.value("world_size", 1);
            if (saved_world != world)
                printf("the checkpoint was written by %d ranks, this run has %d: the optimizer state is re-sharded "
                       "exactly; the data order continues from rank 0's position (not bit-identical to an "
                       "uninterrupted run)\n", saved_world, world);
        } else {
            REQUIRE_INPUT(!o.eval_only, "--eval-only --resume: no checkpoint in %s to evaluate", o.out_dir.c_str());
            printf("--resume: no checkpoint in %s yet, starting fresh\n", o.out_dir.c_str());
        }
    }

    // data and tokenizer (opened before any large allocation, so bad paths fail fast)
    std::unique_ptr<DataLoader> train, val;
    if (training)
        train = naming("--train-data", [&] {
            return std::make_unique<DataLoader>(o.train_data, B, T, cfg.vocab_size, rank, world, o.shuffle, o.seed,
                                                rows);
        });
    if (!o.val_data.empty())
        val = naming("--val-data", [&] {
            return std::make_unique<DataLoader>(o.val_data, B, T, cfg.vocab_size, rank, world, false, 0, rows);
        });
    const int val_batches = o.val_tokens > 0 ? std::max(1, o.val_tokens / (B * T * world)) : o.val_batches;
    if (val && val_batches > (int)val->num_batches())
        printf("%s: the validation set holds %zu batches of %d x %d per rank; each evaluation reads all of them\n",
               o.val_tokens > 0 ? "--val-tokens" : "--val-batches", val->num_batches(), B, T);
    std::unique_ptr<Tokenizer> tok;
    const std::string tok_spec = tokenizer_spec(o, cfg);
    if (o.sample_tokens > 0 && !tok_spec.empty()) {
        tok = make_tokenizer(tok_spec);
        REQUIRE_INPUT(tok->vocab_size() <= cfg.vocab_size, "--tokenizer: %s has %d tokens, the model only %d",
                      tok_spec.c_str(), tok->vocab_size(), cfg.vocab_size);
    }

    GPT<Backend> model(cfg, B, T, o.recompute,
                       o.attention == "flash"   ? AttentionKind::flash
                       : o.attention == "naive" ? AttentionKind::naive
                                                : AttentionKind::automatic,
                       rank, world);
    DataParallel<Backend> dp(comm, model);
    if (!o.init_from.empty()) {
        std::vector<float> host;
        load_safetensors_model(o.init_from + "/model.safetensors", model.layout, host);
        model.set_params(host);
    } else {
        model.init_random(o.seed);
    }
    int start_step = 0;
    Rng sample_rng(o.seed + 1);
    SpikeGuard loss_guard, norm_guard;
    for (SpikeGuard* g : {&loss_guard, &norm_guard}) g->window = o.spike_window, g->z_max = o.spike_z;
    if (ck) {
        model.set_state(ck->params, ck->master, ck->m, ck->v);
        const json& s = ck->state;
        start_step = s.at("step").get<int>();
        if (train && !s.at("loader").is_null()) {
            // this rank's own position; after a change of rank count, rank 0's position
            // moved on to this rank's next window
            const json& l = ck_rank_state.is_null() ? s.at("loader") : ck_rank_state.at("loader");
            LoaderState ls{l.at("shard").get<int64_t>(), l.at("window").get<int64_t>(), l.at("epoch").get<int64_t>(),
                           l.at("shuffle").get<bool>(), l.at("seed").get<uint64_t>()};
            train->restore(ls, !ck_rank_state.is_null());
        }
        sample_rng.state = s.at("sample_rng").get<uint64_t>();
        loss_guard.from_json(s.at("loss_history"));
        norm_guard.from_json(s.at("norm_history"));
        ck.reset();
    }

    if (o.eval_only) {
        const float vl = evaluate(dp, *val, val_batches, B, T);
        printf("val_loss %.6f\n", vl);
        if (o.eval_prune) {  // appended to the run's log when there is one
            const json r = prune_report(dp, *val, val_batches, B, T, start_step);
            if (!o.out_dir.empty() && lead) {
                std::error_code ec;
                std::filesystem::create_directories(o.out_dir, ec);
                std::ofstream f(o.out_dir + "/log.jsonl", std::ios::app);
                REQUIRE_INPUT(f.good(), "--out-dir: cannot write %s/log.jsonl", o.out_dir.c_str());
                f << r.dump() << "\n";
            }
        }
        return 0;
    }

    printf("model %s | norm %s | init %s | L %d C %d heads %d F %d V %d (padded %d) | %.2fM parameters\n",
           to_string(cfg.arch), to_string(cfg.norm), to_string(cfg.init), cfg.n_layer, cfg.n_embd, cfg.n_head,
           cfg.ffn_hidden, cfg.vocab_size, cfg.padded_vocab(), model.layout.total / 1e6);
    printf("batch B %d x T %d x %d accumulation x %d ranks = %d tokens/step\n", B, T, accum, world,
           B * T * accum * world);
    if (world > 1)
        printf("data parallel: %d ranks over %s, ZeRO-1 shards of %zu parameters, %zu gradient buckets\n", world,
               comm.name(), model.opt_n, dp.buckets.size());
    {   // the memory plan: one allocation per part
        const double GiB = 1024.0 * 1024.0 * 1024.0, P = (double)model.layout.total;
        const double px = P * sizeof(typename Backend::floatX);
        printf("memory (GiB): parameters %.3f | gradients %.3f | AdamW state %.3f | master weights %.3f | "
               "activations %.3f | activation gradients %.3f (per rank; attention %s)\n", px / GiB, px / GiB,
               2 * (double)model.opt_n * 4 / GiB, model.master ? model.opt_n * 4 / GiB : 0.0, model.act_bytes / GiB,
               model.grad_bytes / GiB, model.flash ? "flash" : "naive");
    }
    if (train) printf("train data: %zu shards, %zu tokens/epoch\n", train->shards().size(), train->tokens_per_epoch());

    // the run directory: the log, the options as TOML (rerun with --config), checkpoints
    JsonLog log;
    if (!o.out_dir.empty() && lead) {
        std::error_code ec;
        std::filesystem::create_directories(o.out_dir, ec);
        // only the options given (a preset plus overrides), so the file repeats this run
        write_file_atomic(o.out_dir + "/config.toml", app.config_to_str(false, false));
        log.open(o.out_dir, start_step);
        json c = {{"type", "config"}, {"preset", o.model}, {"backend", Backend::name}, {"resumed_at", start_step},
                  {"grad_accum", accum}, {"world_size", world}};
        c.update(rcfg);
        log.write(c);
    }
    // `ls`: the data position of the next step
    auto save = [&](int step, const LoaderState& ls) {
        if (o.out_dir.empty()) return;
        Checkpoint c;
        c.config = rcfg;
        model.get_state(c.params, c.master, c.m, c.v, lead);  // the parameters go in rank 0's file only
        c.opt_begin = model.opt_begin;
        json loader = nullptr;
        if (train) {
            loader = {{"shard", ls.shard}, {"window", ls.window}, {"epoch", ls.epoch}, {"shuffle", ls.shuffle},
                      {"seed", ls.seed}};
        }
        c.state = {{"step", step}, {"loader", loader}, {"sample_rng", sample_rng.state},
                   {"loss_history", loss_guard.to_json()}, {"norm_history", norm_guard.to_json()},
                   {"world_size", world}};
        if (train) c.state["train_shards"] = train_shards;
        const std::string path = checkpoint_path(o.out_dir, step);
        if (!lead) save_checkpoint(checkpoint_rank_path(path, rank), c);
        comm.barrier();  // every rank's file exists before the main file marks it complete
        if (!lead) return;
        save_checkpoint(path, c);
        prune_checkpoints(o.out_dir, o.ckpt_keep, o.ckpt_keep_every);
        printf("checkpoint %s\n", path.c_str());
    };
    auto print_sample = [&](int step) {
        std::vector<int> prompt = tok && !o.prompt.empty() ? tok->encode(o.prompt) : std::vector<int>{};
        if (prompt.empty()) prompt.push_back(tok && tok->eot_token() >= 0 ? tok->eot_token() : '\n');
        auto ids = sample(model, prompt, o.sample_tokens, o.temperature, o.top_k, sample_rng);
        std::string text;
        if (tok) text = tok->decode(ids);
        else for (int id : ids) text += std::to_string(id) + " ";
        printf("---- sample at step %d (%d tokens, temperature %.2f) ----\n%s%s\n----\n", step, o.sample_tokens,
               o.temperature, o.prompt.c_str(), text.c_str());
    };

    LrSchedule sched;
    sched.kind = parse_schedule(o.schedule);
    sched.lr = o.lr, sched.warmup = o.warmup, sched.total = o.steps;
    sched.min_frac = o.lr_min_frac, sched.decay_frac = o.wsd_decay_frac;

    // depth diagnostics on a fixed batch: the first validation batch, else the first
    // training batch (read by a loader of its own, so training's data order is untouched)
    std::vector<int> xd, yd;
    auto write_diag = [&](int step) {
        if (xd.empty()) {
            xd.resize((size_t)B * T), yd.resize((size_t)B * T);
            if (val) val->reset(), val->next_batch(xd.data(), yd.data());
            else DataLoader(o.train_data, B, T, cfg.vocab_size, 0, 1, false, 0, rows).next_batch(xd.data(), yd.data());
        }
        const DepthDiag d = depth_diagnostics(model, xd.data(), yd.data(), B, T);
        const int L = cfg.n_layer;
        json layers = json::array();
        std::string line;
        for (int l = 0; l < L; l++) {
            const BlockDiag& b = d.blocks[l];
            std::vector<double> ang;
            for (int k = l + 1; k <= L; k++) ang.push_back(d.angular[l][k]);
            layers.push_back({{"layer", l + 1}, {"var_token", b.var_token}, {"var_all", b.var_all}, {"rms", b.rms},
                              {"grad_norm", b.grad_norm}, {"angular", ang}});
            line += strfmt(" %.3g", b.var_token);
        }
        printf("diag  %5d | output variance by block:%s\n", step, line.c_str());
        log.write({{"type", "diag"}, {"step", step}, {"layers", layers}});
    };
    if (o.diag_every > 0 && start_step == 0 && o.steps > 0 && lead) write_diag(0);

    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) std::signal(sig, on_signal);
    const int nan_step = injected_nan_step();
    std::vector<int> x((size_t)B * T), y((size_t)B * T), x0, y0;
    const auto run_start = std::chrono::steady_clock::now();
    for (int step = start_step; step < o.steps; step++) {
        auto t0 = std::chrono::steady_clock::now();
        injected_rank_fault(rank, step + 1);
        const LoaderState data_before = train->state();
        model.zero_grad();
        double loss = 0.0;
        for (int micro = 0; micro < accum; micro++) {
            if (o.overfit_batch && !x0.empty()) x = x0, y = y0;
            else train->next_batch(x.data(), y.data());
            if (o.overfit_batch && x0.empty()) x0 = x, y0 = y;
            loss += model.forward(x.data(), y.data(), B, T) / accum;
            if (micro + 1 == accum) dp.overlap_next_backward();
            model.backward(1.0f / (accum * world));  // summed over ranks: the mean
        }
        dp.finish_backward();
        if (step + 1 == nan_step) loss = NAN;
        // one reduction for what every rank must agree on: loss, gradient norm, stop
        float agreed[3] = {(float)loss, (float)dp.shard_norm_squared(), g_stop_signal ? 1.0f : 0.0f};
        dp.sum(agreed, 3);
        if (world > 1) loss = agreed[0] / world;
        const bool stop = agreed[2] > 0;
        const float lr = sched.at(step);
        const float norm = std::sqrt(agreed[1]);
        if (!std::isfinite(loss) || !std::isfinite(norm)) {
            save(step, data_before);  // the state after the last good step: this update is not applied
            throw UserError(strfmt("step %d: %s is %g; stopped without applying the update%s", step + 1,
                                   std::isfinite(loss) ? "gradient norm" : "loss", std::isfinite(loss) ? norm : loss,
                                   o.out_dir.empty() ? "" : "; the last good state is checkpointed"));
        }
        const bool spike = loss_guard.is_spike(loss) || norm_guard.is_spike(norm);
        if (spike) {
            printf("step %5d/%d | loss %.6f | norm %.4f | spike (z %.1f, %.1f): update skipped\n", step + 1, o.steps,
                   loss, norm, loss_guard.zscore(loss), norm_guard.zscore(norm));
            log.write({{"type", "skip"}, {"step", step + 1}, {"loss", loss}, {"grad_norm", norm},
                       {"loss_z", loss_guard.zscore(loss)}, {"norm_z", norm_guard.zscore(norm)}});
        } else {
            NVTX_RANGE("optimizer");
            adamw_step(model, o.adamw, lr, step + 1, (uint32_t)(o.seed * 1000003u + step), norm);
            dp.gather_params();
            loss_guard.accept(loss);
            norm_guard.accept(norm);
        }
        Backend::synchronize();
        const auto now = std::chrono::steady_clock::now();
        const double ms = std::chrono::duration<double, std::milli>(now - t0).count();
        const double tok_s = (double)B * T * accum * world / (ms / 1000.0);
        const double mfu = peak_flops > 0 ? tok_s * flops_per_token(cfg, model.layout.total, T) / peak_flops : 0.0;
        const double elapsed = std::chrono::duration<double>(now - run_start).count();
        const double eta = elapsed / (step + 1 - start_step) * (o.steps - step - 1);
        if (!spike) {
            printf("step %5d/%d | loss %.6f | norm %.4f | lr %.3e | %.1f ms | %.0f tok/s%s | ETA %s\n", step + 1,
                   o.steps, loss, norm, lr, ms, tok_s, peak_flops > 0 ? strfmt(" | MFU %.1f%%", 100 * mfu).c_str() : "",
                   hms(eta).c_str());
            log.write({{"type", "step"}, {"step", step + 1}, {"loss", loss}, {"grad_norm", norm}, {"lr", lr},
                       {"ms", ms}, {"tok_per_s", tok_s}, {"mfu", mfu}});
        }
        fflush(stdout);

        const bool last = step + 1 == o.steps;
        if (val && (last || (o.eval_every > 0 && (step + 1) % o.eval_every == 0))) {
            const float vl = evaluate(dp, *val, val_batches, B, T);
            printf("val   %5d | val_loss %.6f | perplexity %.3f\n", step + 1, vl, std::exp(vl));
            log.write({{"type", "val"}, {"step", step + 1}, {"val_loss", vl}, {"perplexity", std::exp(vl)}});
        }
        if (o.diag_every > 0 && (step + 1) % o.diag_every == 0 && lead) write_diag(step + 1);
        if (val && o.eval_prune && last) log.write(prune_report(dp, *val, val_batches, B, T, step + 1));
        if (o.sample_every > 0 && (step + 1) % o.sample_every == 0 && lead) print_sample(step + 1);
        if ((o.ckpt_every > 0 && (step + 1) % o.ckpt_every == 0) || (last && o.ckpt_every > 0) || stop)
            save(step + 1, train->state());
        if (stop) {
            const int sig = g_stop_signal ? (int)g_stop_signal : SIGTERM;  // a rank that saw none stops with its peers
            // on stderr: stdout may be the closed pipe that stopped the run
            fprintf(stderr, "stopped by signal %d after step %d%s\n", sig, step + 1,
                    o.out_dir.empty() ? "; nothing was saved (no --out-dir to checkpoint into)" : "");
            return 128 + sig;
        }
    }

    if (o.sample_tokens > 0 && o.sample_every == 0 && lead) print_sample(o.steps);
    if (!o.save_to.empty()) {
        const std::vector<float> params = dp.gather_fp32_params();
        if (lead) save_pretrained(o.save_to, cfg, model.layout, params);
        printf("saved %s/model.safetensors and config.json\n", o.save_to.c_str());
    }
    return 0;
}

// ----------------------------------------------------------------------------

// The ranks: one process; MPI (mpirun, or srun with PMIx), whose communicator carries
// the CPU backend's gradients and NCCL's bootstrap; or plain srun on GPUs, where NCCL's
// unique id travels through files. `boot` must outlive `data`.
struct Ranks {
    LaunchInfo launch;
    std::unique_ptr<Comm> boot, data;
    Comm& comm() { return data ? *data : *boot; }
};

static Ranks start_ranks(const Options& o) {
    Ranks r;
    r.launch = detect_launch();
    switch (r.launch.kind) {
        case Launcher::single: r.boot = make_single_comm(); break;
        case Launcher::mpi: r.boot = make_mpi_comm(o.comm_timeout); break;
        case Launcher::slurm:
            r.boot = make_file_comm(r.launch, !o.comm_dir.empty() ? o.comm_dir : !o.out_dir.empty() ? o.out_dir : ".",
                                    o.comm_timeout);
            break;
    }
    if (r.boot->rank() != 0) fclose(stdout), stdout = fopen("/dev/null", "w");  // rank 0 speaks for all
    return r;
}

int main(int argc, char** argv) {
    CLI::App app{"train_gpt: GPT-2 / LLaMA pre-training with LayerNorm Scaling and the norm schemes it is compared to"};
    Options o;
    add_options(app, o);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ConfigError& e) {  // CLI11 names the key but not the file
        std::string file = "(the file)";
        for (int i = 1; i < argc; i++) {
            const std::string a = argv[i];
            if (a == "--config" && i + 1 < argc) file = argv[i + 1];
            else if (a.rfind("--config=", 0) == 0) file = a.substr(9);
        }
        fprintf(stderr, "error: --config %s: %s (expected lines 'flag-name = value', the flags of --help)\n",
                file.c_str(), e.what());
        return 1;
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    Ranks ranks;
    try {
        if (o.threads > 0) omp_set_num_threads(o.threads);
        const ModelConfig cfg = model_config(o, app);
        validate_options(o, cfg);
        ranks = start_ranks(o);
        Comm& boot = *ranks.boot;
        if (boot.size() > 1) printf("ranks: %d (%s launch)\n", boot.size(), boot.name());
#ifdef LNS_CUDA
        const int ndev = o.device == "cpu" ? 0 : cuda_backend::device_count();
        REQUIRE_INPUT(o.device != "cuda" || ndev > 0, "--device cuda: no CUDA device found (use --device cpu or auto)");
        if (ndev > 0) {
            // cuBLASLt on 16-byte rows: checked here, before anything is allocated
            REQUIRE_INPUT(cfg.n_embd % 8 == 0 && cfg.ffn_hidden % 8 == 0,
                          "--n-embd / --ffn-hidden: the CUDA backend needs multiples of 8, got C=%d F=%d "
                          "(use --device cpu, or round --ffn-hidden)", cfg.n_embd, cfg.ffn_hidden);
            cuda_backend::init(boot.local_rank() % ndev);  // one GPU per rank of a node
            char desc[256];
            cuda_backend::describe(desc, sizeof desc);
            printf("backend cuda | %s\n", desc);
            if (o.flash_kernels != "auto") {  // asked for by name: they must be what runs
                REQUIRE_INPUT(cuda_backend::attention_flash_supported(cfg.head_dim()),
                              "--flash-kernels %s: no flash kernels for the model's head size %d here (bf16 builds: "
                              "48, 64 and 128)",
                              o.flash_kernels.c_str(), cfg.head_dim());
                REQUIRE_INPUT(o.flash_kernels != "tma" || cfg.head_dim() % 64 == 0,
                              "--flash-kernels tma: no TMA kernels for the model's head size %d (64 and 128); use mma",
                              cfg.head_dim());
                REQUIRE_INPUT(o.flash_kernels != "tma" || cuda_backend::attention_flash_has_wgmma(),
                              "--flash-kernels tma: this GPU does not run the build's sm_90a kernels (TMA and "
                              "wgmma need an H100 or H200 and a bf16 build); use mma");
                cuda_backend::FlashOptions flash;
                flash.tma = o.flash_kernels == "tma";
                cuda_backend::attention_flash_options(flash);
                printf("flash attention kernels: %s\n", flash.tma ? "TMA + wgmma (sm_90a)" : "mma.sync");
            }
            // LNS_NCCL_SINGLE=1 (tests): NCCL even for one rank, so one GPU exercises that path
            if (boot.size() > 1 || getenv("LNS_NCCL_SINGLE")) ranks.data = make_nccl_comm(boot, o.comm_timeout);
#ifdef ENABLE_FP32
            return run<cuda_backend>(o, cfg, app, 0.0, ranks.comm());  // no bf16 peak to compare fp32 with
#else
            return run<cuda_backend>(o, cfg, app, peak_bf16_flops(desc), ranks.comm());
#endif
        }
        if (o.device == "auto") printf("device: no GPU found, using the CPU backend\n");
        REQUIRE_INPUT(o.flash_kernels == "auto", "--flash-kernels %s: CUDA kernels, but this run uses the CPU backend "
                      "(no GPU, or --device cpu)", o.flash_kernels.c_str());
#else
        REQUIRE_INPUT(o.flash_kernels == "auto", "--flash-kernels %s: CUDA kernels, but this build has no CUDA backend",
                      o.flash_kernels.c_str());
        REQUIRE_INPUT(o.device != "cuda", "--device cuda: this build has no CUDA backend (built without nvcc); "
                      "use --device cpu or auto");
        if (o.device == "auto") printf("device: built without CUDA, using the CPU backend\n");
#endif
        REQUIRE_INPUT(ranks.launch.kind != Launcher::slurm, "srun started %d ranks without MPI: the CPU backend "
                      "reduces over MPI (use mpirun, or srun --mpi=pmix with an MPI build)", boot.size());
        printf("backend cpu | %d OpenMP threads\n", omp_get_max_threads());
        return run<cpu_backend>(o, cfg, app, 0.0, ranks.comm());
    } catch (const UserError& e) {
        if (ranks.boot && ranks.boot->size() > 1) ranks.boot->abort(e.what());  // stops every rank, not just this one
        fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
