// Depth diagnostics (model/diagnostics.h) and layer pruning (GPT::skip_block):
// the diagnostics against the PyTorch reference on the same weights and batch, the
// pruned model against a model built without the block, and a tiny training run in
// which deeper blocks' output variance grows faster under Pre-LN than under LNS.
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "cpu/cpu_backend.h"
#include "dataloader/shard.h"
#include "model/diagnostics.h"
#include "model/gpt.h"
#include "model/hf_io.h"
#include "test/test_util.h"

namespace {

const int B = 2, T = 16;

ModelConfig tiny_cfg(Arch arch, NormScheme scheme) {
    ModelConfig c = preset(arch == Arch::gpt2 ? "gpt2-tiny" : "llama-tiny");
    c.norm = scheme;
    return c;
}

// Random weights with norm weights and biases moved off 1 and 0.
std::vector<float> random_params(const ParamLayout& layout, uint64_t seed) {
    std::vector<float> p;
    init_params(p, layout, seed);
    return perturbed(layout, p, seed + 1);
}

double rel(double a, double b) { return std::fabs(a - b) / std::fmax(std::fabs(b), 1e-30); }

}  // namespace

// Tolerances. The stream values agree with PyTorch to ~1e-6 relative (fp32, different
// summation orders; doc/reference-errors.md), and every statistic here is computed in
// double from them on each side, so variances, RMS and gradient norms (smooth
// functions of the values) agree to the same order: 1e-4 is a 100x margin. The angle
// between two vectors moves by at most ~delta radians when each moves by a relative
// delta, so the angular distance (angle / pi) agrees to ~1e-6 absolute: 1e-4 again.
TEST_CASE("depth diagnostics match the PyTorch reference on the same weights and batch", "[diag][torch]") {
    TmpDir tmp;
    struct Case {
        ModelConfig cfg;
        std::string dir;
        std::vector<std::vector<float>> h;  // h_0..h_L
        DepthDiag d;
    };
    std::vector<Case> cases;
    for (Arch arch : {Arch::gpt2, Arch::llama})
        for (NormScheme s : {NormScheme::pre, NormScheme::lns, NormScheme::sandwich, NormScheme::post,
                             NormScheme::deepnorm, NormScheme::mix}) {
            Case c;
            c.cfg = tiny_cfg(arch, s);
            c.dir = tmp / ("case" + std::to_string(cases.size()));
            GPT<cpu_backend> model(c.cfg, B, T);
            const std::vector<float> params = random_params(model.layout, 31 + cases.size());
            model.set_params(params);
            std::vector<int> x, y;
            make_batch(x, y, B * T, c.cfg.vocab_size, 5 + cases.size());
            save_pretrained(c.dir, c.cfg, model.layout, params);
            StFile batch;
            batch["inputs"] = StTensor::i32({B, T}, x.data());
            batch["targets"] = StTensor::i32({B, T}, y.data());
            write_safetensors(c.dir + "/batch.safetensors", batch);
            std::ofstream(c.dir + "/diag.json") << "{}";
            c.d = depth_diagnostics(model, x.data(), y.data(), B, T);
            // depth_diagnostics left the activations of its forward and zeroed the gradients
            for (int l = -1; l < c.cfg.n_layer; l++) c.h.push_back(model.stream_host(l));
            const std::vector<float> g = model.get_grads();
            CHECK(std::count(g.begin(), g.end(), 0.0f) == (long)g.size());
            cases.push_back(std::move(c));
        }
    std::string cmd = "/usr/bin/python3 " + repo_root() + "/test/torch_ref/run.py", out;
    for (auto& c : cases) cmd += " " + c.dir;
    const int rc = run_command(cmd, &out);
    INFO(out);
    REQUIRE(rc == 0);

    std::string table = "| arch | norm | hidden states | variances, RMS, gradient norms | angular distance |\n"
                        "|---|---|---|---|---|\n";
    for (const Case& c : cases) {
        INFO(to_string(c.cfg.arch) << " " << to_string(c.cfg.norm));
        StFile ref = read_safetensors(c.dir + "/ref.safetensors");
        const int L = c.cfg.n_layer;
        double worst_h = 0, worst_stat = 0, worst_ang = 0;
        for (int l = 0; l <= L; l++) {
            INFO("h_" << l);
            REQUIRE(ref.count("hidden." + std::to_string(l)));
            worst_h = std::fmax(worst_h, max_rel_err(c.h[l], ref.at("hidden." + std::to_string(l)).to_f32()));
        }
        const auto vt = ref.at("diag.var_token").to_f32(), va = ref.at("diag.var_all").to_f32();
        const auto rms = ref.at("diag.rms").to_f32(), gn = ref.at("diag.grad_norm").to_f32();
        const auto ang = ref.at("diag.angular").to_f32();
        REQUIRE(vt.size() == (size_t)L);
        REQUIRE(ang.size() == (size_t)(L + 1) * (L + 1));
        for (int l = 0; l < L; l++) {
            const BlockDiag& b = c.d.blocks[l];
            for (double e : {rel(b.var_token, vt[l]), rel(b.var_all, va[l]), rel(b.rms, rms[l]), rel(b.grad_norm, gn[l])})
                worst_stat = std::fmax(worst_stat, e);
            CHECK(b.grad_norm > 0);
        }
        for (int i = 0; i <= L; i++)
            for (int j = 0; j <= L; j++)
                worst_ang = std::fmax(worst_ang, std::fabs(c.d.angular[i][j] - ang[(size_t)i * (L + 1) + j]));
        INFO("worst: hidden " << worst_h << ", statistics " << worst_stat << ", angular " << worst_ang);
        CHECK(worst_h < 1e-4);
        CHECK(worst_stat < 1e-4);
        CHECK(worst_ang < 1e-4);
        table += strfmt("| %s | %s | %.1e | %.1e | %.1e |\n", to_string(c.cfg.arch), to_string(c.cfg.norm), worst_h,
                        worst_stat, worst_ang);
    }
    if (const char* path = getenv("LNS_DIAG_TABLE")) std::ofstream(path) << table;
}

// Pre-LN: skipping block l is the model with block l removed (the same weights, L-1
// blocks). Both run the same ops in the same order on the same values, so they agree
// bit for bit. Under LNS the reduced model is not the same function (its later blocks
// would be scaled by 1/sqrt(l-1) instead of 1/sqrt(l)), so there the check is direct:
// the stream leaving the skipped block is bitwise its input, earlier blocks are
// untouched and later blocks are evaluated at their own depth.
TEST_CASE("pruning block l equals the model without block l", "[diag]") {
    for (Arch arch : {Arch::gpt2, Arch::llama}) {
        const ModelConfig cfg = tiny_cfg(arch, NormScheme::pre);
        const int L = cfg.n_layer;
        GPT<cpu_backend> model(cfg, B, T);
        const std::vector<float> params = random_params(model.layout, 7);
        model.set_params(params);
        std::vector<int> x, y;
        make_batch(x, y, B * T, cfg.vocab_size, 8);
        const float full = model.forward(x.data(), y.data(), B, T);
        for (int l = 0; l < L; l++) {
            INFO(to_string(arch) << " without block " << l);
            ModelConfig small = cfg;
            small.n_layer = L - 1;
            GPT<cpu_backend> reduced(small, B, T);
            std::vector<float> p(reduced.layout.total);
            const std::string drop = diag::block_prefix(cfg, l);
            for (const auto& t : reduced.layout.tensors) {  // block j of the reduced model is block j or j+1
                std::string name = t.name;
                for (int j = l; j < L - 1; j++) {
                    const std::string pj = diag::block_prefix(small, j);
                    if (name.compare(0, pj.size(), pj) == 0) {
                        name = diag::block_prefix(cfg, j + 1) + name.substr(pj.size());
                        break;
                    }
                }
                const ParamTensor* src = model.layout.find(name);
                REQUIRE(src);
                REQUIRE(src->size == t.size);
                std::copy(params.begin() + src->offset, params.begin() + src->offset + t.size, p.begin() + t.offset);
            }
            reduced.set_params(p);
            const float want = reduced.forward(x.data(), y.data(), B, T);
            model.skip_block = l;
            const float got = model.forward(x.data(), y.data(), B, T);
            model.skip_block = -1;
            CHECK(got == want);
            CHECK(got != full);
            std::vector<float> a(cfg.padded_vocab()), b(cfg.padded_vocab());
            for (int n = 0; n < B * T; n += 7) {
                model.download_logits_row(a.data(), n);
                reduced.download_logits_row(b.data(), n);
                CHECK(a == b);
            }
        }
    }
    // LNS: direct check
    const ModelConfig cfg = tiny_cfg(Arch::llama, NormScheme::lns);
    const int L = cfg.n_layer;
    GPT<cpu_backend> model(cfg, B, T);
    model.set_params(random_params(model.layout, 9));
    std::vector<int> x, y;
    make_batch(x, y, B * T, cfg.vocab_size, 10);
    const float full = model.forward(x.data(), y.data(), B, T);
    std::vector<std::vector<float>> h;
    for (int l = -1; l < L; l++) h.push_back(model.stream_host(l));
    const int k = 1;
    model.skip_block = k;
    const float pruned = model.forward(x.data(), y.data(), B, T);
    CHECK(pruned != full);
    for (int l = -1; l < k; l++) CHECK(model.stream_host(l) == h[l + 1]);  // before the skipped block: unchanged
    CHECK(model.stream_host(k) == model.stream_host(k - 1));               // the skipped block: identity
    CHECK(model.stream_host(k + 1) != h[k + 2]);
    model.skip_block = -1;
    CHECK(model.forward(x.data(), y.data(), B, T) == full);
}

// The curse of depth in miniature: llama-tiny with 8 blocks on Shakespeare bytes,
// 200 steps. Measured (var_token of block 8 / block 1 on the first validation batch,
// doc/curse-of-depth.md): step 0 pre 2.45, lns 1.27; step 200 pre 1.95
// (0.332 / 0.170), lns 1.14 (0.133 / 0.117). Asserted: the ratio is larger under
// Pre-LN than under LNS by more than 0.3 at every diagnostic, and the last block's
// output variance is larger under Pre-LN.
TEST_CASE("train_gpt --diag-every: deeper blocks' output variance grows faster under pre than under lns",
          "[diag][e2e]") {
    TmpDir dir;
    std::ifstream f(repo_root() + "/test/data/shakespeare_64k.txt", std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    REQUIRE(text.size() == 65536);
    std::vector<uint32_t> tok(text.size());
    for (size_t i = 0; i < tok.size(); i++) tok[i] = (unsigned char)text[i];
    const size_t split = tok.size() * 9 / 10;
    write_shard(dir / "train.bin", tok.data(), split, false);
    write_shard(dir / "val.bin", tok.data() + split, tok.size() - split, false);
    const int L = 8, steps = 200, every = 100;
    std::map<std::string, std::vector<nlohmann::json>> diags;
    for (const char* norm : {"pre", "lns"}) {
        const std::string run = dir / norm, cmd = repo_root() + "/train_gpt --device cpu --threads 2 --model llama-tiny "
            "--n-layer 8 --norm " + norm + " -b 4 -t 32 --steps 200 --lr 3e-3 --warmup 10 --diag-every 100 "
            "--eval-prune --val-batches 2 --train-data " + (dir / "train.bin") + " --val-data " + (dir / "val.bin") +
            " --out-dir " + run + " --save-to " + run + "/model";
        std::string out;
        const int rc = run_command(cmd, &out);
        INFO(cmd << "\n" << out);
        REQUIRE(rc == 0);
        std::ifstream log(run + "/log.jsonl");
        std::string line;
        int prunes = 0;
        while (std::getline(log, line)) {
            auto j = nlohmann::json::parse(line);
            if (j["type"] == "diag") {
                REQUIRE(j["layers"].size() == (size_t)L);
                for (int l = 0; l < L; l++) {
                    const auto& b = j["layers"][l];
                    CHECK(b["angular"].size() == (size_t)(L - l));
                    CHECK(b["grad_norm"].get<double>() > 0);
                    CHECK(b["var_all"].get<double>() >= b["var_token"].get<double>() * 0.5);
                }
                diags[norm].push_back(j);
            }
            if (j["type"] == "prune") {
                prunes++;
                REQUIRE(j["layers"].size() == (size_t)L);
                CHECK(j["step"] == steps);
            }
        }
        CHECK(prunes == 1);
        REQUIRE(diags[norm].size() == (size_t)(steps / every + 1));
        // --eval-only --eval-prune on the saved model: the same table, appended to a log
        std::string eval;
        const std::string ecmd = repo_root() + "/train_gpt --device cpu --threads 2 --init-from " + run +
                                 "/model -b 4 -t 32 --val-batches 2 --eval-only --eval-prune --val-data " +
                                 (dir / "val.bin") + " --out-dir " + run + "/eval";
        INFO(ecmd << "\n" << eval);
        REQUIRE(run_command(ecmd, &eval) == 0);
        std::ifstream elog(run + "/eval/log.jsonl");
        REQUIRE(std::getline(elog, line));
        auto e = nlohmann::json::parse(line);
        CHECK(e["type"] == "prune");
        REQUIRE(e["layers"].size() == (size_t)L);
        std::ifstream log2(run + "/log.jsonl");
        while (std::getline(log2, line)) {
            auto j = nlohmann::json::parse(line);
            if (j["type"] == "prune") {
                CHECK(e["val_loss"].get<double>() == Approx(j["val_loss"].get<double>()).epsilon(1e-6));
                for (int l = 0; l < L; l++)
                    CHECK(e["layers"][l]["val_loss"].get<double>() ==
                          Approx(j["layers"][l]["val_loss"].get<double>()).epsilon(1e-6));
            }
        }
    }
    for (size_t k = 0; k < diags["pre"].size(); k++) {
        auto ratio = [&](const char* norm) {
            const auto& ls = diags[norm][k]["layers"];
            return ls[L - 1]["var_token"].get<double>() / ls[0]["var_token"].get<double>();
        };
        const double pre = ratio("pre"), lns = ratio("lns");
        INFO("step " << diags["pre"][k]["step"] << ": last/first block variance, pre " << pre << ", lns " << lns);
        CHECK(pre > lns + 0.3);
        CHECK(diags["pre"][k]["layers"][L - 1]["var_token"].get<double>() >
              diags["lns"][k]["layers"][L - 1]["var_token"].get<double>());
    }
}

TEST_CASE("--diag-every and --eval-prune refuse bad values, naming the flag", "[diag][e2e]") {
    std::string out;
    const std::string base = repo_root() + "/train_gpt --device cpu --model llama-tiny --steps 0";
    CHECK(run_command(base + " --diag-every -1", &out) == 1);
    CHECK(out.find("--diag-every") != std::string::npos);
    CHECK(run_command(base + " --eval-prune", &out) == 1);
    CHECK(out.find("--eval-prune: needs --val-data") != std::string::npos);
}
