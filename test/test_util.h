// Helpers shared by the tests.
#pragma once
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/rng.h"
#include "model/params.h"

// True when a CUDA device can run the GPU tests (always false in a CPU-only build).
bool gpu_available();
// CUDA devices this machine has (0 in a CPU-only build).
int gpu_count();

// A test that needs a CUDA device: tagged [gpu], run only where one exists. The
// files holding such tests are compiled a second time for the CPU emulator (test/emu,
// the Makefile's EMU_OBJ), where each runs on every machine as "emulated: NAME",
// tagged [emulation], with cuda_backend standing for the emulated backend.
// MULTIGPU_TAG marks a test that needs two GPUs; the emulator has as many as mpirun starts.
#ifdef LNS_CUDA_EMU
#define GPU_TEST_CASE(name, tags) TEST_CASE("emulated: " name, "[emulation]" tags)
#define MULTIGPU_TAG ""
#else
#define GPU_TEST_CASE(name, tags) TEST_CASE(name, "[gpu]" tags)
#define MULTIGPU_TAG "[multigpu]"
#endif

// A fresh directory under /tmp, removed with everything in it at scope exit.
struct TmpDir {
    std::string path;
    TmpDir() {
        char tmpl[] = "/tmp/lns_test_XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TmpDir() { std::filesystem::remove_all(path); }
    std::string operator/(const std::string& name) const { return path + "/" + name; }
};

inline std::vector<float> randn(size_t n, uint64_t seed, float std = 1.0f) {
    Rng rng(seed);
    std::vector<float> v(n);
    for (auto& x : v) x = std * rng.normal();
    return v;
}

// max|a - b| / max|b|: the error relative to the tensor's scale, so entries near
// zero do not blow it up. A NaN, or an infinity the other side lacks, is an infinite
// error (fmax alone would skip NaNs).
inline double max_rel_err(const float* a, const float* b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
            if (a[i] == b[i]) continue;
            return INFINITY;
        }
        num = std::fmax(num, std::fabs((double)a[i] - b[i]));
        den = std::fmax(den, std::fabs((double)b[i]));
    }
    return den > 0 ? num / den : num;
}
inline double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() ? max_rel_err(a.data(), b.data(), a.size()) : INFINITY;
}

// Where a (rows, cols) row-major tensor a is off b by more than tol * max|b| (or NaN where
// b is not): its rows and columns with such entries, as ranges, "rows 64-129; cols 0-63",
// or "none". A failing GPU kernel's pattern (whole column blocks, rows past a tile,
// every other head) points at its cause.
inline std::string mismatch_map(const std::vector<float>& a, const std::vector<float>& b, size_t rows, size_t cols,
                                double tol) {
    if (a.size() != b.size() || a.size() != rows * cols) return "sizes differ";
    double scale = 0.0;
    for (float v : b)
        if (std::isfinite(v)) scale = std::fmax(scale, std::fabs((double)v));
    std::vector<char> bad_row(rows, 0), bad_col(cols, 0);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            const float x = a[r * cols + c], y = b[r * cols + c];
            const bool ok = std::isfinite(x) && std::isfinite(y) ? std::fabs((double)x - y) <= tol * scale : x == y;
            if (!ok) bad_row[r] = bad_col[c] = 1;
        }
    auto ranges = [](const std::vector<char>& bad) {
        std::string s;
        int shown = 0;
        for (size_t i = 0; i < bad.size(); i++) {
            if (!bad[i] || (i > 0 && bad[i - 1])) continue;
            size_t j = i;
            while (j + 1 < bad.size() && bad[j + 1]) j++;
            if (++shown > 8) return s + " ...";
            s += (s.empty() ? "" : " ") + std::to_string(i) + (j > i ? "-" + std::to_string(j) : "");
        }
        return s.empty() ? std::string("none") : s;
    };
    const std::string r = ranges(bad_row);
    return r == "none" ? r : "rows " + r + "; cols " + ranges(bad_col);
}

// For a check's message: ", off at <mismatch_map>" when err (max_rel_err(a, b)) is not
// below tol, else nothing.
inline std::string off_at(const std::vector<float>& a, const std::vector<float>& b, size_t rows, size_t cols,
                          double err, double tol) {
    return err < tol ? std::string() : ", off at " + mismatch_map(a, b, rows, cols, tol);
}

// Part `part` (0 q, 1 k, 2 v) of a (B*T, 3C) tensor, as (B*T, C).
inline std::vector<float> qkv_part(const std::vector<float>& x, int BT, int C, int part) {
    std::vector<float> r((size_t)BT * C);
    for (int n = 0; n < BT; n++)
        std::copy_n(x.begin() + (size_t)n * 3 * C + (size_t)part * C, C, r.begin() + (size_t)n * C);
    return r;
}

// Norm weights of exactly 1 and biases of 0 would hide a misplaced weight or bias:
// this moves every tensor that init sets to a constant by N(0, std).
std::vector<float> perturbed(const ParamLayout& layout, std::vector<float> p, uint64_t seed, float std = 0.2f);
// n random inputs and targets in [0, V)
void make_batch(std::vector<int>& x, std::vector<int>& y, int n, int V, uint64_t seed);

// Runs a shell command, returns its exit status and captures stdout+stderr.
int run_command(const std::string& cmd, std::string* output);
// Runs sh -c cmd, capturing stdout+stderr in *out (when given); kill_at_step > 0 sends
// `sig` once the line of that step appears. The exit status, 128 + signal if killed.
int run_until(const std::string& cmd, int kill_at_step, int sig, std::string* out);

// train_gpt built on the emulated CUDA backend (the Makefile's EMU_TRAIN), beside this
// test binary; empty in builds without CUDA.
std::string emulated_train_gpt();
// "mpirun -np N " with the flags the tests need (root in containers, more ranks than cores)
std::string mpirun(int ranks);

// Every number printed after `key` (a regex) in a program's output, in order.
std::vector<double> values_after(const std::string& out, const std::string& key);

// step -> loss of the 'step' records in RUN/log.jsonl (a CHECK fails on a repeated step)
std::map<int, double> logged_losses(const std::string& run_dir);
// step -> another field of those records ("grad_norm", "lr", ...)
std::map<int, double> logged_values(const std::string& run_dir, const std::string& field);

// Directory the tests run from (the repository root); LNS_ROOT overrides.
std::string repo_root();
// The train_gpt whose --device cuda a [gpu] test runs: the real one, or on the emulator
// the emulated one (static: the two compilations of a test file differ here).
static inline std::string cuda_train_gpt() {
#ifdef LNS_CUDA_EMU
    return emulated_train_gpt();
#else
    return repo_root() + "/train_gpt";
#endif
}

// Byte-level shards of the Shakespeare excerpt in test/data (64 KiB of real text):
// the first 90% as train.bin, the rest as val.bin, in a fresh directory.
struct TextShards {
    TmpDir dir;
    std::string train, val;
    TextShards();
};
