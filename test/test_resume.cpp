// Long runs that survive: a run killed at any step (SIGKILL, or during a checkpoint
// write) and resumed gives exactly the losses of a run never stopped; SIGTERM saves
// and stops; a checkpoint of another configuration is refused; a NaN stops the run
// with a loadable checkpoint; spikes are skipped and logged.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/check.h"
#include "dataloader/shard.h"
#include "test/test_util.h"
#include "train/checkpoint.h"

namespace {

using Shards = TextShards;

std::string base_cmd(const Shards& d, const std::string& dir, int steps, const std::string& lr = "3e-3",
                     const std::string& norm = "lns") {
    return repo_root() + "/train_gpt --device cpu --model llama-tiny -b 4 -t 32 --warmup 3 --shuffle --threads 2 "
                         "--norm " + norm + " --lr " + lr + " --steps " + std::to_string(steps) +
           " --train-data " + d.train + " --out-dir " + dir;
}

}  // namespace

TEST_CASE("SIGKILL at random steps, then --resume: the joined losses equal an uninterrupted run", "[resume]") {
    Shards data;
    TmpDir ref_dir, dir;
    const int S = 24;
    REQUIRE(run_until(base_cmd(data, ref_dir.path, S), 0, 0, nullptr) == 0);
    const auto ref = logged_losses(ref_dir.path);
    REQUIRE(ref.size() == (size_t)S);

    // Several kills in one run, at steps drawn from a seeded RNG, checkpointing every 2.
    Rng rng(2024);
    const std::string cmd = base_cmd(data, dir.path, S) + " --ckpt-every 2 --resume";
    int step = 0, kills = 0;
    while (step < S - 4 && kills < 4) {
        step += 2 + (int)(rng.next_u64() % 5);
        std::string out;
        const int rc = run_until(cmd, step, SIGKILL, &out);
        INFO(out);
        CHECK(rc == 128 + SIGKILL);
        kills++;
    }
    std::string out;
    REQUIRE(run_until(cmd, 0, 0, &out) == 0);
    INFO(out);
    CHECK(out.find("resuming from") != std::string::npos);
    CHECK(logged_losses(dir.path) == ref);  // bit-identical, step for step
}

TEST_CASE("a kill during a checkpoint write leaves the previous checkpoint loadable", "[resume]") {
    Shards data;
    TmpDir ref_dir, dir;
    const int S = 16;
    REQUIRE(run_until(base_cmd(data, ref_dir.path, S), 0, 0, nullptr) == 0);
    const std::string cmd = base_cmd(data, dir.path, S) + " --ckpt-every 5 --resume";
    REQUIRE(run_until(cmd, 7, SIGKILL, nullptr) == 128 + SIGKILL);  // leaves ckpt 5
    std::string out;
    // resumes from 5, then dies halfway through writing checkpoint 10
    CHECK(run_until("env LNS_FAULT=partial-write " + cmd, 0, 0, &out) == 9);
    auto cks = list_checkpoints(dir.path);
    REQUIRE(cks.size() == 1);
    CHECK(cks[0].first == 5);
    std::ifstream tmp(checkpoint_path(dir.path, 10) + ".tmp");
    CHECK(tmp.good());  // the torn file exists, under its temporary name only
    REQUIRE(run_until(cmd, 0, 0, &out) == 0);
    INFO(out);
    CHECK(out.find("ckpt_00000005") != std::string::npos);
    CHECK(logged_losses(dir.path) == logged_losses(ref_dir.path));
}

TEST_CASE("SIGTERM or SIGHUP checkpoints the step it ends and exits; resuming continues exactly", "[resume]") {
    Shards data;
    TmpDir ref_dir;
    const int S = 12;
    REQUIRE(run_until(base_cmd(data, ref_dir.path, S), 0, 0, nullptr) == 0);
    for (int sig : {SIGTERM, SIGHUP}) {  // SIGHUP: the terminal of an interactive run closed
        DYNAMIC_SECTION("signal " << sig) {
            TmpDir dir;
            const std::string cmd = base_cmd(data, dir.path, S) + " --resume";  // no periodic checkpoints
            std::string out;
            const int rc = run_until(cmd, 5, sig, &out);
            INFO(out);
            CHECK(rc == 128 + sig);
            CHECK(out.find("stopped by signal " + std::to_string(sig)) != std::string::npos);
            auto cks = list_checkpoints(dir.path);
            REQUIRE(cks.size() == 1);
            CHECK(cks[0].first >= 5);
            REQUIRE(run_until(cmd, 0, 0, nullptr) == 0);
            CHECK(logged_losses(dir.path) == logged_losses(ref_dir.path));
        }
    }
}

TEST_CASE("a checkpoint of another configuration is refused, naming the fields", "[resume]") {
    Shards data;
    TmpDir dir;
    REQUIRE(run_until(base_cmd(data, dir.path, 4) + " --ckpt-every 2", 0, 0, nullptr) == 0);
    std::string out;
    const int rc = run_until(base_cmd(data, dir.path, 4, "1e-3", "pre") + " --resume", 0, 0, &out);
    INFO(out);
    CHECK(rc == 1);
    CHECK(out.find("different configuration") != std::string::npos);
    CHECK(out.find("lr: ") != std::string::npos);
    CHECK(out.find("model.norm_scheme: \"lns\" -> \"pre\"") != std::string::npos);
    CHECK(out.find("ckpt_00000004.safetensors") != std::string::npos);
}

// The recovery from a divergence: resume from the last good checkpoint with a lower
// learning rate (or extend a finished run). Only the fields that shape later updates may change.
TEST_CASE("--resume-changes continues with a new lr and more steps; the model may not change", "[resume]") {
    Shards data;
    TmpDir dir;
    REQUIRE(run_until(base_cmd(data, dir.path, 4) + " --ckpt-every 2", 0, 0, nullptr) == 0);
    const std::string changed = base_cmd(data, dir.path, 8, "1e-3") + " --ckpt-every 2 --resume";
    std::string out;
    CHECK(run_until(changed, 0, 0, &out) == 1);  // not without saying so
    CHECK(out.find("a resumed run may change these with --resume-changes") != std::string::npos);
    out.clear();
    CHECK(run_until(base_cmd(data, dir.path, 8, "1e-3", "pre") + " --resume --resume-changes", 0, 0, &out) == 1);
    CHECK(out.find("model.norm_scheme") != std::string::npos);
    CHECK(out.find("--resume-changes covers only") != std::string::npos);
    out.clear();
    REQUIRE(run_until(changed + " --resume-changes", 0, 0, &out) == 0);
    INFO(out);
    CHECK(out.find("--resume-changes: continuing with these settings changed") != std::string::npos);
    CHECK(out.find("steps: 4 -> 8") != std::string::npos);
    CHECK(out.find("lr: ") != std::string::npos);
    const auto lr = logged_values(dir.path, "lr");
    REQUIRE(lr.size() == 8);
    CHECK(lr.at(4) > 1e-3);  // the first run's schedule (peak 3e-3)
    for (int step = 5; step <= 8; step++) CHECK(lr.at(step) <= 1e-3 * (1 + 1e-6));
    // the checkpoints now hold the new settings: a plain --resume with them is exact
    out.clear();
    CHECK(run_until(changed, 0, 0, &out) == 0);
    CHECK(out.find("resuming from " + checkpoint_path(dir.path, 8)) != std::string::npos);
}

// A saved data position (shard, window) indexes the list of files the glob matched: a
// file added to the glob would silently shift it. The same files moved are fine.
TEST_CASE("a resumed run refuses training files that changed under the glob, and follows files that moved",
          "[resume]") {
    Shards data;
    TmpDir files, ref_dir, dir;
    const std::string a = files / "a", b = files / "b";
    std::filesystem::create_directories(a);
    std::filesystem::copy_file(data.train, a + "/s_1.bin");
    std::filesystem::copy_file(data.val, a + "/s_2.bin");
    auto cmd = [&](const std::string& glob, const std::string& out_dir) {
        return repo_root() + "/train_gpt --device cpu --model llama-tiny -b 4 -t 32 --warmup 3 --threads 2 --steps 8 "
                             "--ckpt-every 2 --resume --train-data '" + glob + "' --out-dir " + out_dir;
    };
    REQUIRE(run_until(cmd(a + "/s_*.bin", ref_dir.path), 0, 0, nullptr) == 0);
    REQUIRE(run_until(cmd(a + "/s_*.bin", dir.path), 5, SIGKILL, nullptr) == 128 + SIGKILL);
    std::filesystem::copy_file(data.val, a + "/s_0.bin");  // sorts first: every shard index moves
    std::string out;
    CHECK(run_until(cmd(a + "/s_*.bin", dir.path), 0, 0, &out) == 1);
    INFO(out);
    CHECK(out.find("not the files of the checkpoint") != std::string::npos);
    CHECK(out.find("now: 3 files: s_0.bin") != std::string::npos);
    std::filesystem::remove(a + "/s_0.bin");
    std::filesystem::rename(a, b);
    out.clear();
    REQUIRE(run_until(cmd(b + "/s_*.bin", dir.path), 0, 0, &out) == 0);
    CHECK(out.find("resuming from") != std::string::npos);
    CHECK(logged_losses(dir.path) == logged_losses(ref_dir.path));
}

TEST_CASE("an injected NaN stops the run with the step named and a loadable checkpoint", "[resume]") {
    Shards data;
    TmpDir dir;
    std::string out;
    const int rc = run_until("env LNS_INJECT_NAN_STEP=6 " + base_cmd(data, dir.path, 10), 0, 0, &out);
    INFO(out);
    CHECK(rc == 1);
    CHECK(out.find("step 6: loss is nan") != std::string::npos);
    auto cks = list_checkpoints(dir.path);
    REQUIRE(cks.size() == 1);
    CHECK(cks[0].first == 5);
    Checkpoint ck = load_checkpoint(cks[0].second);
    CHECK(ck.state["step"] == 5);
    CHECK(std::all_of(ck.params.begin(), ck.params.end(), [](float p) { return std::isfinite(p); }));
    // it evaluates (--eval-only needs only the same model) ...
    REQUIRE(run_until(base_cmd(data, dir.path, 99, "1e-4") + " --resume --eval-only --val-data " + data.val, 0, 0,
                      &out) == 0);
    CHECK(out.find("val_loss ") != std::string::npos);
    // ... and the run continues from it
    REQUIRE(run_until(base_cmd(data, dir.path, 10) + " --resume", 0, 0, &out) == 0);
    CHECK(logged_losses(dir.path).size() == 10);
}

TEST_CASE("loss spikes skip the update and are logged; --overfit-batch memorises one batch", "[resume]") {
    Shards data;
    TmpDir dir;
    std::string out;
    // a threshold low enough that ordinary noise trips it after the 20-step warm-up
    REQUIRE(run_until(base_cmd(data, dir.path, 40) + " --spike-z 0.5 --spike-window 20", 0, 0, &out) == 0);
    INFO(out);
    int skips = 0, steps = 0;
    std::ifstream f(dir / "log.jsonl");
    std::string line;
    while (std::getline(f, line)) {
        auto j = nlohmann::json::parse(line);
        if (j["type"] == "skip") {
            skips++;
            CHECK((j["loss_z"].get<double>() > 0.5 || j["norm_z"].get<double>() > 0.5));
            CHECK(j["step"].get<int>() > 20);
        }
        if (j["type"] == "step") steps++;
    }
    CHECK(skips > 0);
    CHECK(skips + steps == 40);

    TmpDir of;
    std::string overfit = base_cmd(data, of.path, 60, "1e-2") + " --overfit-batch";
    overfit.erase(overfit.find(" --shuffle"), 10);  // one batch: nothing to shuffle (refused)
    REQUIRE(run_until(overfit, 0, 0, &out) == 0);
    const auto l = logged_losses(of.path);
    CHECK(l.at(60) < 0.5 * l.at(1));  // one batch of 128 tokens is memorised fast
}
