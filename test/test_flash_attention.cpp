// The CPU twin of the flash attention pair (attention_flash_forward/backward) against
// the first attention (attention_forward/backward), and --attention end to end.
//
// Both compute the same function in fp32; they differ only in how a probability is
// formed (exp(s - lse) against exp(s - max) / sum) and in where dscore's
// sum_t2 p dp comes from (dout . out against the row's own sum). Each of those moves
// a value by a few fp32 ulp (~1e-7 relative); sums over <= 70 keys and 16 channels
// keep the error of every tensor near 1e-7 of its scale (measured <= 2e-7). Bound 1e-5.
#include <catch2/catch.hpp>

#include <cmath>

#include "cpu/cpu_backend.h"
#include "test/test_util.h"

using Ops = cpu_backend;

namespace {
const double TOL = 1e-5;
}

TEST_CASE("flash attention on the CPU equals the first attention, forward and backward", "[ops][attention][flash]") {
    const int B = 2, NH = 2, C = 32;  // hs = 16
    for (int T : {1, 7, 33, 70})
        for (float theta : {0.0f, 10000.0f}) {
            DYNAMIC_SECTION("T " << T << " rope_theta " << theta) {
                const size_t N = (size_t)B * T;
                auto qkv = randn(N * 3 * C, 100 + T), dout = randn(N * C, 200 + T);
                std::vector<float> out(N * C), qkvr(N * 3 * C), att((size_t)B * NH * T * T);
                std::vector<float> dqkv(N * 3 * C), dqkvr(N * 3 * C), datt(att.size());
                Ops::attention_forward(out.data(), qkvr.data(), att.data(), qkv.data(), B, T, C, NH, theta);
                Ops::attention_backward(dqkv.data(), dqkvr.data(), datt.data(), dout.data(), qkvr.data(), att.data(),
                                        B, T, C, NH, theta);

                std::vector<float> fout(N * C, NAN), lse((size_t)B * NH * T, NAN), fdqkv(N * 3 * C, NAN);
                Ops::attention_flash_forward(fout.data(), lse.data(), qkv.data(), B, T, C, NH, theta);
                Ops::attention_flash_backward(fdqkv.data(), dout.data(), qkv.data(), fout.data(), lse.data(), B, T,
                                              C, NH, theta);
                CHECK(max_rel_err(fout, out) < TOL);
                CHECK(max_rel_err(fdqkv, dqkv) < TOL);

                // lse is log sum_{t2<=t} exp(score), the scores recomputed here in
                // double from the rotated q, k the first attention kept.
                const int hs = C / NH;
                std::vector<float> direct(lse.size());
                for (int b = 0; b < B; b++)
                    for (int h = 0; h < NH; h++)
                        for (int t = 0; t < T; t++) {
                            double sum = 0.0;
                            for (int t2 = 0; t2 <= t; t2++) {
                                double dot = 0.0;
                                for (int i = 0; i < hs; i++)
                                    dot += (double)qkvr[((size_t)b * T + t) * 3 * C + h * hs + i] *
                                           qkvr[((size_t)b * T + t2) * 3 * C + C + h * hs + i];
                                sum += std::exp(dot / std::sqrt((double)hs));
                            }
                            direct[((size_t)b * NH + h) * T + t] = (float)std::log(sum);
                        }
                CHECK(max_rel_err(lse, direct) < TOL);
            }
        }
}

TEST_CASE("train_gpt --attention flash and naive give the same losses on the CPU", "[e2e][flash]") {
    TextShards data;
    for (const char* model : {"gpt2-tiny", "llama-tiny"}) {
        DYNAMIC_SECTION(model) {
            std::vector<double> loss[2];
            const char* kinds[2] = {"flash", "naive"};
            for (int k = 0; k < 2; k++) {
                std::string out;
                const std::string cmd = repo_root() + "/train_gpt --device cpu --threads 1 --model " + model +
                                        " --norm lns -b 4 -t 37 --steps 12 --lr 3e-3 --warmup 2 --val-batches 0 "
                                        "--train-data " + data.train + " --val-data " + data.val +
                                        " --attention " + kinds[k];
                const int rc = run_command(cmd, &out);
                INFO(cmd << "\n" << out);
                REQUIRE(rc == 0);
                loss[k] = values_after(out, "\\| loss");
                REQUIRE(loss[k].size() == 12);
            }
            // fp32 differences of ~1e-6 in attention's outputs and gradients enter the
            // updates; Adam's normalised steps carry them forward without growth over a
            // dozen steps (measured: equal to the 6 printed decimals). Bound 1e-4.
            for (int i = 0; i < 12; i++) CHECK(loss[0][i] == Approx(loss[1][i]).margin(1e-4));
        }
    }
    std::string out;
    CHECK(run_command(repo_root() + "/train_gpt --device cpu --attention fast --steps 1", &out) != 0);
    CHECK(out.find("--attention") != std::string::npos);
}

// The helper the GPU flash tests print on a failure: which rows and columns are off.
TEST_CASE("mismatch_map names the rows and columns that are off, as ranges", "[flash]") {
    const size_t rows = 130, cols = 128;
    std::vector<float> want = randn(rows * cols, 5), got = want;
    CHECK(mismatch_map(got, want, rows, cols, 1e-3) == "none");
    for (size_t r = 64; r < 130; r++)
        for (size_t c = 64; c < 128; c++) got[r * cols + c] += 0.5f;  // a whole box of channels, past a tile
    got[3 * cols + 7] = NAN;
    CHECK(mismatch_map(got, want, rows, cols, 1e-3) == "rows 3 64-129; cols 7 64-127");
    // within the tolerance, relative to the largest |want|: not off
    CHECK(mismatch_map(got, want, rows, cols, 10.0) == "rows 3; cols 7");
    CHECK(mismatch_map(got, want, rows, cols + 1, 1e-3) == "sizes differ");
    std::vector<float> every_other = want;
    for (size_t r = 0; r < 40; r += 2) every_other[r * cols] += 1.0f;
    CHECK(mismatch_map(every_other, want, rows, cols, 1e-3) == "rows 0 2 4 6 8 10 12 14 ...; cols 0");
}
