// train_gpt end to end on the CPU backend: it learns real text, is deterministic
// (run to run and across thread counts), round-trips through --save-to /
// --init-from --eval-only, and refuses bad flags with a message naming the flag.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "dataloader/shard.h"
#include "test/test_util.h"
#include "train/checkpoint.h"

namespace {

std::string train_gpt() { return repo_root() + "/train_gpt"; }

}  // namespace

TEST_CASE("train_gpt learns Shakespeare bytes on the CPU (gpt2 and llama, LNS)", "[e2e]") {
    TextShards data;
    for (const char* model : {"gpt2-tiny", "llama-tiny"}) {
        DYNAMIC_SECTION(model) {
            TmpDir run;
            std::string out;
            const std::string cmd = train_gpt() + " --device cpu --model " + model +
                                    " --norm lns -b 8 -t 64 --steps 150 --lr 3e-3 --warmup 10 --eval-every 75 "
                                    "--val-batches 0 --train-data " + data.train + " --val-data " + data.val +
                                    " --out-dir " + run.path;
            const int rc = run_command(cmd, &out);
            INFO(cmd << "\n" << out);
            REQUIRE(rc == 0);
            const auto loss = values_after(out, "\\| loss");
            const auto val = values_after(out, "val_loss");
            REQUIRE(loss.size() == 150);
            REQUIRE(val.size() == 2);
            // Uniform bytes start at ln(256) = 5.55. Measured after 150 steps (train
            // loss averaged over the last 5 steps / val): gpt2-tiny 2.96 / 2.86,
            // llama-tiny 2.75 / 2.60. We require a drop of more than 2.3 nats and a
            // val loss below 3.1, under the train text's byte unigram entropy (3.28):
            // the model must have learned more than letter frequencies.
            CHECK(loss[0] == Approx(std::log(256.0)).margin(0.1));
            double tail = 0.0;
            for (int i = 145; i < 150; i++) tail += loss[i] / 5;
            CHECK(loss[0] - tail > 2.3);
            CHECK(val[1] < 3.1);
            CHECK(val[1] < val[0]);

            // the JSON log: a config record, then one record per step and per eval
            std::ifstream log(run / "log.jsonl");
            std::string line;
            int steps = 0, evals = 0;
            REQUIRE(std::getline(log, line));
            auto cfg = nlohmann::json::parse(line);
            CHECK(cfg["type"] == "config");
            CHECK(cfg["model"]["norm_scheme"] == "lns");
            while (std::getline(log, line)) {
                auto j = nlohmann::json::parse(line);
                if (j["type"] == "step") CHECK(j["loss"].get<double>() == Approx(loss[steps++]).epsilon(1e-5));
                if (j["type"] == "val") evals++;
            }
            CHECK(steps == 150);
            CHECK(evals == 2);
        }
    }
}

TEST_CASE("same seed, same numbers: across runs and across thread counts", "[e2e]") {
    TextShards data;
    const std::string base = train_gpt() + " --device cpu --model llama-tiny --norm lns -b 4 -t 32 --steps 6 "
                             "--train-data " + data.train + " --seed 3";
    std::string a, b, c;
    REQUIRE(run_command(base + " --threads 2", &a) == 0);
    REQUIRE(run_command(base + " --threads 2", &b) == 0);
    REQUIRE(run_command(base + " --threads 1", &c) == 0);
    const auto la = values_after(a, "\\| loss"), lb = values_after(b, "\\| loss"), lc = values_after(c, "\\| loss");
    const auto na = values_after(a, "\\| norm"), nc = values_after(c, "\\| norm");
    REQUIRE(la.size() == 6);
    CHECK(la == lb);
    CHECK(la == lc);
    CHECK(na == nc);
    std::string d;
    REQUIRE(run_command(train_gpt() + " --device cpu --model llama-tiny --norm lns -b 4 -t 32 --steps 6 "
                        "--train-data " + data.train + " --seed 4", &d) == 0);
    CHECK(values_after(d, "\\| loss") != la);  // the seed matters
}

TEST_CASE("--save-to, then --init-from --eval-only reproduces the final validation loss", "[e2e]") {
    TextShards data;
    TmpDir run;
    for (const char* model : {"gpt2-tiny", "llama-tiny"}) {
        DYNAMIC_SECTION(model) {
            std::string out, eval;
            const std::string dir = run / model;
            REQUIRE(run_command(train_gpt() + " --device cpu --model " + model + " --norm mix -b 4 -t 32 "
                                "--steps 5 --train-data " + data.train + " --val-data " + data.val +
                                " --val-batches 4 --save-to " + dir, &out) == 0);
            const auto val = values_after(out, "val_loss");
            REQUIRE(val.size() == 1);
            const int rc = run_command(train_gpt() + " --device cpu --init-from " + dir + " --eval-only -b 4 -t 32 "
                                       "--val-batches 4 --val-data " + data.val, &eval);
            INFO(eval);
            REQUIRE(rc == 0);
            const auto v2 = values_after(eval, "val_loss");
            REQUIRE(v2.size() == 1);
            CHECK(v2[0] == Approx(val[0]).epsilon(1e-6));
            // the norm scheme travels in config.json
            std::ifstream f(dir + "/config.json");
            CHECK(nlohmann::json::parse(f)["norm_scheme"] == "mix");
        }
    }
}

TEST_CASE("bad flags exit non-zero with a message that names the flag (47 cases)", "[e2e][cli]") {
    TextShards data;
    const std::string ok = " --device cpu --model gpt2-tiny --steps 1";
    const std::string train = " --train-data " + data.train;
    const std::vector<std::pair<std::string, std::string>> cases = {
        {train + " --norm bogus", "--norm"},
        {train + " --init wide", "--init"},
        {train + " --model gpt9", "--model"},
        {train + " --seq-len 100", "--seq-len"},  // the tiny model's maximum is 64
        {train + " -b 0", "--batch-size"},
        {train + " --total-batch-size 100", "--total-batch-size"},
        {train + " --n-head 5", "--n-embd"},
        {train + " --lr -1", "--lr"},
        {train + " --schedule cyclic", "--schedule"},
        {train + " --device tpu", "--device"},
        {train + " --norm mix --mix-alpha 2", "--mix-alpha: expected in [0, 1]"},
        {train + " --mix-alpha 0.3", "--mix-alpha: only with --norm mix"},  // silently unused otherwise
        {train + " --rope-theta 500", "--rope-theta: a gpt2 model has no RoPE"},
        {train + " --grad-clip -1", "--grad-clip"},
        {"", "--train-data"},
        {" --train-data /nonexistent/x.bin", "/nonexistent/x.bin"},
        {train + " --eval-only", "--val-data"},
        {train + " --init-from /nonexistent_dir", "--model and --init-from"},  // --model would be ignored
        {train + " --warmup -1", "--warmup"},
        {train + " --beta2 1", "--beta2"},
        {train + " --weight-decay -0.1", "--weight-decay"},
        {train + " --spike-z -1", "--spike-z"},
        {train + " --spike-window 1", "--spike-window"},
        {train + " --ckpt-keep 0", "--ckpt-keep"},
        {train + " --ckpt-every 5", "--ckpt-every"},  // without --out-dir
        {train + " --resume", "--resume"},            // without --out-dir
        {train + " --out-dir /tmp/x --resume --init-from /tmp/y", "--resume and --init-from"},
        {train + " --sample-every 10", "--sample-every"},
        {train + " --eval-every 10", "--eval-every"},  // without --val-data
        {train + " --val-tokens -5", "--val-tokens"},
        {train + " --temperature 0", "--temperature"},
        {train + " --top-k -1", "--top-k"},
        {train + " --threads -2", "--threads"},
        {train + " --wsd-decay-frac 1.5", "--wsd-decay-frac"},
        {train + " --config /nonexistent.toml", "/nonexistent.toml"},
        {train + " --tokenizer sentencepiece:/nonexistent.model --sample-tokens 5", "/nonexistent.model"},
        {train + " --n-embd 30 --n-head 4", "--n-embd"},
        {train + " --vocab-size 1", "--vocab-size"},
        {train + " --n-layer 100000000", "--n-layer: expected 1..4096"},  // not minutes of layout building
        {train + " --seed -1", "--seed: expected an integer >= 0"},  // not 2^64 - 1
        {train + " --overfit-batch --shuffle", "--overfit-batch and --shuffle"},
        {train + " --val-data '/nonexistent/v_*.bin'", "--val-data: /nonexistent/v_*.bin: no file matches"},
        {train + " --save-to /proc/version", "--save-to"},  // a file, not a directory
        {train + " --out-dir /proc/version/run", "--out-dir: cannot create the directory /proc/version/run"},
        {train + " --flash-kernels fast", "--flash-kernels: expected auto, mma or tma"},
        {train + " --attention naive --flash-kernels mma", "--flash-kernels mma: flash kernels, but --attention naive"},
        {train + " --flash-kernels tma", "--flash-kernels tma: CUDA kernels, but this"},  // the CPU backend
    };
    for (auto& c : cases) {
        std::string out;
        const int rc = run_command(train_gpt() + ok + c.first, &out);
        INFO(c.first << " -> " << out);
        CHECK(rc != 0);
        CHECK(out.find(c.second) != std::string::npos);
        CHECK(out.find("| loss") == std::string::npos);  // refused before the first step
    }
    SECTION("--init-from: a missing config.json, then a bad value in one, named by file") {
        TmpDir dir;
        std::string out;
        CHECK(run_command(train_gpt() + " --device cpu --steps 1" + train + " --init-from " + dir.path, &out) == 1);
        CHECK(out.find(dir / "config.json") != std::string::npos);
        std::ofstream(dir / "config.json") << R"({"model_type": "llama", "vocab_size": 256, "max_position_embeddings": 64,
            "hidden_size": 32, "num_hidden_layers": -1, "num_attention_heads": 4, "intermediate_size": 64})";
        out.clear();
        CHECK(run_command(train_gpt() + " --device cpu --steps 1" + train + " --init-from " + dir.path, &out) == 1);
        INFO(out);
        CHECK(out.find(dir / "config.json" + ": --n-layer: expected 1..4096, got -1") != std::string::npos);
    }
    SECTION("LLaMA: RoPE's base must be positive (0 would drop the positions)") {
        std::string out;
        CHECK(run_command(train_gpt() + " --device cpu --model llama-tiny --steps 1" + train + " --rope-theta 0",
                          &out) == 1);
        CHECK(out.find("--rope-theta: expected a finite value > 0, got 0") != std::string::npos);
    }
    SECTION("a misspelt key in --config is an error naming the file and the key") {
        TmpDir dir;
        std::ofstream(dir / "c.toml") << "steps = 1\nlearning-rate = 0.5\n";
        std::string out;
        CHECK(run_command(train_gpt() + " --device cpu --model gpt2-tiny" + train + " --config " + (dir / "c.toml"),
                          &out) == 1);
        INFO(out);
        CHECK(out.find("--config " + (dir / "c.toml")) != std::string::npos);
        CHECK(out.find("learning-rate") != std::string::npos);
    }
}

TEST_CASE("--val-batches beyond the validation set says so and evaluates the whole set", "[e2e][cli]") {
    TextShards data;
    const std::string cmd = train_gpt() + " --device cpu --model gpt2-tiny -b 4 -t 32 --eval-only --val-data " +
                            data.val + " --val-batches ";
    std::string all, capped;
    REQUIRE(run_command(cmd + "0", &all) == 0);
    REQUIRE(run_command(cmd + "100000", &capped) == 0);
    INFO(capped);
    CHECK(capped.find("--val-batches: the validation set holds") != std::string::npos);
    CHECK(all.find("the validation set holds") == std::string::npos);
    const auto a = values_after(all, "val_loss"), c = values_after(capped, "val_loss");
    REQUIRE(a.size() == 1);
    REQUIRE(c.size() == 1);
    CHECK(a[0] == c[0]);
}

// A run never writes into another run's directory: a new run there would truncate that
// log and its checkpoint retention would delete the other run's checkpoints (or its own).
TEST_CASE("a run directory is claimed before training: another run's directory and a locked one are refused, "
          "losing nothing", "[e2e][cli]") {
    TextShards data;
    TmpDir dir;
    const std::string cmd = train_gpt() + " --device cpu --model gpt2-tiny -b 4 -t 32 --train-data " + data.train +
                            " --out-dir " + dir.path;
    REQUIRE(run_command(cmd + " --steps 4 --ckpt-every 2", nullptr) == 0);
    auto bytes = [](const std::string& path) {
        std::ifstream f(path, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(f), {});
    };
    const std::string log = bytes(dir / "log.jsonl"), ckpt = bytes(checkpoint_path(dir.path, 4));
    REQUIRE(!log.empty());
    REQUIRE(!ckpt.empty());
    std::string out;
    SECTION("a new run into it") {
        CHECK(run_command(cmd + " --steps 3 --ckpt-every 1 --lr 1e-2", &out) == 1);
        INFO(out);
        CHECK(out.find("already holds a run (log.jsonl and 2 checkpoints (newest: step 4)); give --resume") !=
              std::string::npos);
    }
    SECTION("any run while another process holds the lock") {
        const int fd = open((dir / ".lock").c_str(), O_RDWR);
        REQUIRE(fd >= 0);
        REQUIRE(flock(fd, LOCK_EX | LOCK_NB) == 0);
        CHECK(run_command(cmd + " --steps 4 --ckpt-every 2 --resume", &out) == 1);
        close(fd);
        INFO(out);
        CHECK(out.find("is in use by another run") != std::string::npos);
        // the lock is the only thing in the way: released, the same command resumes
        out.clear();
        CHECK(run_command(cmd + " --steps 4 --ckpt-every 2 --resume", &out) == 0);
        CHECK(out.find("resuming from " + checkpoint_path(dir.path, 4)) != std::string::npos);
    }
    SECTION("--eval-only --resume with no checkpoint to evaluate") {
        TmpDir empty;
        CHECK(run_command(train_gpt() + " --device cpu --model gpt2-tiny -b 4 -t 32 --eval-only --resume --val-data " +
                              data.val + " --out-dir " + empty.path,
                          &out) == 1);
        INFO(out);
        CHECK(out.find("--eval-only --resume: no checkpoint in " + empty.path) != std::string::npos);
        CHECK(out.find("val_loss") == std::string::npos);
    }
    if (out.find("resuming") == std::string::npos) {  // refused: the old run is untouched
        CHECK(bytes(dir / "log.jsonl") == log);
        CHECK(bytes(checkpoint_path(dir.path, 4)) == ckpt);
        CHECK(list_checkpoints(dir.path).size() == 2);
    }
}
