// train_gpt's CUDA path end to end, on the emulated backend (build/train_gpt_emu: the
// same train_gpt.cu and kernels/*.cu, run on test/emu): training with evaluation and
// KV-cache sampling on the device, fp32 master weights and AdamW state through a
// checkpoint, a kill and a resume. Runs on every machine with the CUDA toolkit.
#include <signal.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "test/test_util.h"

#ifdef LNS_CUDA
namespace {
#ifdef ENABLE_FP32
constexpr double LOSS_TOL = 2e-4;  // test/model_compare.h: 1e-4, doubled for drift over the run
#else
constexpr double LOSS_TOL = 2e-2;  // bf16: 1e-2, doubled: stochastic rounding drifts the runs apart
#endif
constexpr int S = 12;

std::string cmd(const std::string& bin, const std::string& device, const TextShards& d, const std::string& dir) {
    return bin + " --device " + device + " --model llama-tiny -b 4 -t 32 --warmup 3 --shuffle --threads 2 --lr 3e-3 " +
           "--steps " + std::to_string(S) + " --train-data " + d.train + " --val-data " + d.val +
           " --eval-every 6 --sample-every 6 --sample-tokens 16 --out-dir " + dir;
}
}  // namespace

TEST_CASE("train_gpt --device cuda on the emulator tracks the CPU run and resumes exactly", "[emulation][e2e]") {
    const std::string bin = emulated_train_gpt();
    INFO("binary " << bin);
    REQUIRE(std::filesystem::exists(bin));  // make test builds it beside test_all
    TextShards data;
    TmpDir cpu_dir, dev_dir, dir;
    std::string out;
    REQUIRE(run_until(cmd(bin, "cpu", data, cpu_dir.path), 0, 0, nullptr) == 0);  // the same binary's CPU backend
    REQUIRE(run_until(cmd(bin, "cuda", data, dev_dir.path), 0, 0, &out) == 0);
    INFO(out);
    CHECK(out.find("backend cuda | CPU emulator") != std::string::npos);
    CHECK(values_after(out, "val_loss").size() == 2);  // steps 6 and 12
    const auto cpu = logged_losses(cpu_dir.path), dev = logged_losses(dev_dir.path);
    REQUIRE(cpu.size() == (size_t)S);
    REQUIRE(dev.size() == (size_t)S);
    for (const auto& [step, loss] : cpu) {
        INFO("step " << step << ": cpu " << loss << " emulated cuda " << dev.at(step));
        CHECK(std::fabs(dev.at(step) - loss) / loss < LOSS_TOL);
    }
    CHECK(dev.rbegin()->second < 0.9 * dev.begin()->second);  // it learns

    // killed after the step-9 checkpoint, resumed: the same losses, bit for bit
    const std::string resumable = cmd(bin, "cuda", data, dir.path) + " --ckpt-every 3 --resume";
    CHECK(run_until(resumable, 10, SIGKILL, nullptr) == 128 + SIGKILL);
    REQUIRE(run_until(resumable, 0, 0, &out) == 0);
    CHECK(out.find("resuming from") != std::string::npos);
    CHECK(logged_losses(dir.path) == dev);
}

// --flash-kernels on the emulated GPU (sm_90a): tma trains on the TMA + wgmma kernels,
// mma on the mma.sync ones. At T = 160 their key tiles (128 and 64 keys) split the online
// softmax differently, so the two runs round apart: equal bits would mean that the flag
// changed nothing.
TEST_CASE("train_gpt --flash-kernels tma trains on the TMA kernels, within bf16 of mma.sync", "[emulation][e2e]") {
    const std::string bin = emulated_train_gpt();
    REQUIRE(std::filesystem::exists(bin));
    TextShards data;
    auto run = [&](const std::string& kernels, const std::string& dir, std::string* out, int n_embd = 128) {
        return run_until(bin + " --device cuda --model llama-tiny --n-embd " + std::to_string(n_embd) +
                         " --n-head 2 --max-seq-len 256 -b 2 -t 160 --steps 6 --threads 2 --lr 3e-3 --train-data " +
                         data.train + " --flash-kernels " + kernels + " --out-dir " + dir, 0, 0, out);
    };
    TmpDir mma_dir, tma_dir;
    std::string out;
#ifdef ENABLE_FP32
    CHECK(run("tma", tma_dir.path, &out) != 0);  // fp32 builds have no flash kernels
    CHECK(out.find("--flash-kernels tma: no flash kernels for the model's head size 64") != std::string::npos);
#else
    REQUIRE(run("mma", mma_dir.path, &out) == 0);
    CHECK(out.find("flash attention kernels: mma.sync") != std::string::npos);
    REQUIRE(run("tma", tma_dir.path, &out) == 0);
    INFO(out);
    CHECK(out.find("flash attention kernels: TMA + wgmma") != std::string::npos);
    const auto mma = logged_losses(mma_dir.path), tma = logged_losses(tma_dir.path);
    REQUIRE(mma.size() == 6);
    REQUIRE(tma.size() == 6);
    int differ = 0;
    for (const auto& [step, loss] : mma) {
        INFO("step " << step << ": mma.sync " << loss << " TMA " << tma.at(step));
        CHECK(std::fabs(tma.at(step) - loss) / loss < LOSS_TOL);
        differ += tma.at(step) != loss;
    }
    CHECK(differ > 0);
    TmpDir d48;  // heads of 48: mma.sync only
    CHECK(run("tma", d48.path, &out, 96) != 0);
    CHECK(out.find("--flash-kernels tma: no TMA kernels for the model's head size 48 (64 and 128)") !=
          std::string::npos);
#endif
}
#endif
