// scripts/ncu_table.py, the Nsight Compute report parser behind scripts/profile.sh,
// on the hand-written export in test/data/profiling: phases from the NVTX ranges,
// times, shares, GB/s and TFLOP/s against given ceilings, and clear errors for bad input.
#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <sstream>

#include "test/test_util.h"

namespace {

std::string fixture() { return repo_root() + "/test/data/profiling/ncu_raw.csv"; }

std::string table_cmd(const std::string& report, const std::string& args) {
    return "/usr/bin/python3 " + repo_root() + "/scripts/ncu_table.py " + report + " " + args;
}

std::string slurp(const std::string& path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

// cmd with its stdout a pipe whose reader has already gone (as when piped to head)
std::string into_closed_pipe(const std::string& cmd) {
    return "/usr/bin/python3 -c \"import os, subprocess, sys; r, w = os.pipe(); os.close(r); "
           "sys.exit(subprocess.run(sys.argv[1:], stdout=w).returncode)\" " + cmd;
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
    const size_t at = text.find(from);
    REQUIRE(at != std::string::npos);
    return text.replace(at, from.size(), to);
}

std::vector<std::vector<std::string>> csv_rows(const std::string& text) {
    std::vector<std::vector<std::string>> rows;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {  // no quoted fields in the output
        std::vector<std::string> r;
        std::istringstream ls(line);
        for (std::string cell; std::getline(ls, cell, ',');) r.push_back(cell);
        rows.push_back(r);
    }
    return rows;
}

}  // namespace

TEST_CASE("ncu_table: per-kernel, per-phase numbers from the fixture", "[profiling]") {
    TmpDir dir;
    std::string out;
    const std::string cmd = table_cmd(fixture(), "--copy-gbs 4000 --gemm-tflops 800 --csv " + (dir / "t.csv") +
                                                     " --md " + (dir / "t.md"));
    const int rc = run_command(cmd, &out);
    INFO(cmd << "\n" << out);
    REQUIRE(rc == 0);
    const auto rows = csv_rows(slurp(dir / "t.csv"));
    REQUIRE(rows.size() == 16);  // header + 15 launches, no two in the same (phase, op, kernel)
    REQUIRE(rows[0] == std::vector<std::string>{"phase", "op", "kernel", "launches", "time_us", "share_pct", "gb_s",
                                                "tflop_s", "pct_copy_bw", "pct_bf16_gemm", "tensor_pct"});
    std::map<std::string, std::vector<std::string>> by;  // "phase|kernel" -> row
    double share = 0.0;
    for (size_t i = 1; i < rows.size(); i++) {
        REQUIRE(rows[i].size() == 11);
        by[rows[i][0] + "|" + rows[i][2]] = rows[i];
        share += std::stod(rows[i][5]);
    }
    CHECK(share == Approx(100.0).margin(0.011));

    // bytes / time: 200 MB in 50 us = 4000 GB/s = 100 % of the 4000 GB/s ceiling, 20 % of 250 us
    CHECK(by.at("optimizer|adamw_kernel") ==
          std::vector<std::string>{"optimizer", "adamw_update", "adamw_kernel", "1", "50.000", "20.00", "4000.0",
                                   "0.000", "100.0", "0.0", "0.0"});
    // norm_squared runs outside any model range: counted with the optimizer
    CHECK(by.at("optimizer|sumsq_partial_kernel")[4] == "2.000");
    // 8e9 tensor FLOP in 20 us = 400 TFLOP/s = 50 % of 800; the block comes from "block 1"
    const std::string gemm = "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_"
                             "segment_k_off_kernel__5x_cublas";
    CHECK(by.at("forward block 1|" + gemm) ==
          std::vector<std::string>{"forward block 1", "matmul_forward", gemm, "1", "20.000", "8.00", "400.0", "400.000",
                                   "10.0", "50.0", "60.0"});
    CHECK(by.at("forward block 2|" + gemm)[1] == "matmul_forward");
    CHECK(by.at("classifier|" + gemm)[4] == "40.000");
    CHECK(by.at("classifier backward|" + gemm)[6] == "1000.0");  // the lm_head backward: before any block range
    CHECK(by.at("backward block 2|" + gemm)[1] == "matmul_backward");
    // SASS FLOPs: 2 x 1e6 FFMA (written "1,000,000") + 1e6 FADD + 1e6 FMUL in 5 us... and 2e6 in 4 us
    CHECK(by.at("forward block 1|residual_norm_forward_kernel")[7] == "1.200");
    CHECK(by.at("forward block 1|causal_softmax_kernel")[7] == "0.500");
    CHECK(by.at("embedding|encoder_forward_kernel")[3] == "1");
    CHECK(by.at("embedding backward|encoder_backward_wte_kernel")[4] == "6.000");
    CHECK(by.at("backward block 1|residual_norm_backward_kernel")[6] == "3000.0");
    CHECK(by.at("classifier backward|crossentropy_backward_kernel")[5] == "2.00");
    CHECK(by.count("classifier|crossentropy_forward_kernel") == 1);  // the loss: after the head's range

    // rows run in step order: embedding first, the optimizer last, backward blocks last to first
    CHECK(rows[1][0] == "embedding");
    CHECK(rows.back()[0] == "optimizer");
    const std::string md = slurp(dir / "t.md");
    CHECK(md.find("| forward block 2 | 1 | 20.000 | 8.00 |") != std::string::npos);
    CHECK(md.find("| optimizer | 3 | 53.000 | 21.20 | 3886.8 |") != std::string::npos);
    CHECK(md.find("backward block 2") < md.find("backward block 1"));
}

// A real capture: profile.sh's export of one llama-130m step (B=64, T=256) on an H200
// (ncu 2025.3.1), cut to blocks 1 and 12 and the rest of the step (test/data/profiling/
// README.md). Thousands separators, "ns" units, ncu's NVTX stack text and kernel names
// as ncu writes them; the expected numbers were summed by hand from the rows.
TEST_CASE("ncu_table: a real H200 capture of llama-130m", "[profiling]") {
    TmpDir dir;
    std::string out;
    const std::string cmd = table_cmd(repo_root() + "/test/data/profiling/ncu_h200_llama130m.csv",
                                      "--copy-gbs 4230.1 --gemm-tflops 815.4 --md " + (dir / "t.md"));
    REQUIRE(run_command(cmd, &out) == 0);
    out = slurp(dir / "t.md");
    INFO(out);
    CHECK(out.find("70 kernel launches over 1 step(s); GPU time 9691.904 us per step") != std::string::npos);
    // block 1: 9 launches, 732.672 us, 879.2 MB moved -> 1200.1 GB/s, 28.4 % of 4230.1
    CHECK(out.find("| forward block 1 | 9 | 732.672 | 7.56 | 1200.1 |") != std::string::npos);
    CHECK(out.find("| backward block 12 | 19 | 1320.864 |") != std::string::npos);
    // the head's GEMM and norm, and the loss after them: 1105.824 + 477.120 us
    CHECK(out.find("| classifier | 3 | 1582.944 |") != std::string::npos);
    CHECK(out.find("| optimizer | 4 | 1051.584 |") != std::string::npos);
    CHECK(out.find("| other |") == std::string::npos);
    CHECK(out.find("| attention_flash_forward | flash_forward_kernel | 2 | 122.272 |") != std::string::npos);
}

TEST_CASE("ncu_table: an op is any name_forward/name_backward range, new kernels included", "[profiling]") {
    // the fixture's first launch, moved into block 1 as the flash attention op
    std::istringstream in(slurp(fixture()));
    std::string line, csv;
    while (std::getline(in, line) && line.rfind("==PROF==", 0) == 0) {}
    csv = line + "\n";                   // header
    std::getline(in, line), csv += line + "\n";  // units
    std::getline(in, line);
    const std::string from = "forward:encoder_forward:", to = "forward:block 1:attention_flash_forward:";
    REQUIRE(line.find(from) != std::string::npos);
    csv += line.replace(line.find(from), from.size(), to) + "\n";
    TmpDir dir;
    std::ofstream(dir / "one.csv") << csv;
    std::string out;
    REQUIRE(run_command(table_cmd(dir / "one.csv", "--copy-gbs 4000 --gemm-tflops 800 --csv " + (dir / "t.csv")),
                        &out) == 0);
    INFO(out);
    const auto rows = csv_rows(slurp(dir / "t.csv"));
    REQUIRE(rows.size() == 2);
    CHECK(rows[1][0] == "forward block 1");
    CHECK(rows[1][1] == "attention_flash_forward");
}

TEST_CASE("ncu_table: ceilings from bench_kernels --ceilings output, times per step", "[profiling]") {
    TmpDir dir;
    std::ofstream(dir / "ceil.txt") << "device NVIDIA H200\ncopy_gbs 2000\ngemm_tflops 400\n";
    std::string out;
    const std::string cmd = table_cmd(fixture(), "--ceilings " + (dir / "ceil.txt") + " --steps 2 --csv " + (dir / "t.csv"));
    REQUIRE(run_command(cmd, &out) == 0);
    INFO(out);
    CHECK(out.find("copy 2000.0 GB/s, bf16 GEMM 400.0 TFLOP/s") != std::string::npos);
    CHECK(out.find("GPU time 125.000 us per step") != std::string::npos);
    const auto rows = csv_rows(slurp(dir / "t.csv"));
    bool seen = false;
    for (const auto& r : rows)
        if (r.size() == 11 && r[2] == "adamw_kernel") {  // half the launches and time per step, same rates
            CHECK(r[3] == "0.5");
            CHECK(r[4] == "25.000");
            CHECK(r[6] == "4000.0");
            CHECK(r[8] == "200.0");
            seen = true;
        }
    CHECK(seen);
}

TEST_CASE("ncu_table: malformed input is refused with a message", "[profiling]") {
    TmpDir dir;
    std::string text = slurp(fixture());
    std::string out;
    SECTION("a row with a missing field") {
        const size_t at = text.find("::adamw_kernel(");
        REQUIRE(at != std::string::npos);
        const size_t cut = text.rfind(",\"0\"", text.find('\n', at));
        std::ofstream(dir / "bad.csv") << text.substr(0, cut) << "\n";
        REQUIRE(run_command(table_cmd(dir / "bad.csv", "--copy-gbs 1 --gemm-tflops 1"), &out) != 0);
        INFO(out);
        CHECK(out.find("ncu_table: error:") != std::string::npos);
        CHECK(out.find("line 19: 18 fields, the header has 19") != std::string::npos);
    }
    SECTION("not an ncu raw export") {
        std::ofstream(dir / "bad.csv") << "a,b\n1,2\n";
        REQUIRE(run_command(table_cmd(dir / "bad.csv", "--copy-gbs 1 --gemm-tflops 1"), &out) != 0);
        CHECK(out.find("no header row with a 'Kernel Name' column") != std::string::npos);
    }
    SECTION("a non-numeric metric") {
        const size_t at = text.find("\"50000\"");
        REQUIRE(at != std::string::npos);
        text.replace(at, 7, "\"fast\"");
        std::ofstream(dir / "bad.csv") << text;
        REQUIRE(run_command(table_cmd(dir / "bad.csv", "--copy-gbs 1 --gemm-tflops 1"), &out) != 0);
        CHECK(out.find("gpu__time_duration.sum is 'fast', not a number") != std::string::npos);
    }
    SECTION("no ceilings") {
        REQUIRE(run_command(table_cmd(fixture(), ""), &out) != 0);
        CHECK(out.find("need positive ceilings") != std::string::npos);
    }
}

TEST_CASE("ncu_table: --last-steps keeps the last steps only", "[profiling]") {
    TmpDir dir;
    // start-up launches and a warm-up step before the step of the fixture
    const std::string text = slurp(fixture());
    const size_t first = text.find("\n\"0\",") + 1;
    const std::string rows = text.substr(first);
    std::string init = rows.substr(0, rows.find('\n') + 1);
    init.replace(init.find("forward:encoder_forward"), 23, "probe");  // not a step start
    std::ofstream(dir / "two.csv") << text.substr(0, first) << init << rows << rows;
    std::string out;
    REQUIRE(run_command(table_cmd(dir / "two.csv", "--copy-gbs 4000 --gemm-tflops 800 --last-steps 1"), &out) == 0);
    CHECK(out.find("15 kernel launches over 1 step(s); GPU time 250.000 us per step") != std::string::npos);
    out.clear();
    REQUIRE(run_command(table_cmd(dir / "two.csv", "--copy-gbs 4000 --gemm-tflops 800 --last-steps 2"), &out) == 0);
    CHECK(out.find("30 kernel launches over 2 step(s); GPU time 250.000 us per step") != std::string::npos);
    out.clear();
    REQUIRE(run_command(table_cmd(dir / "two.csv", "--copy-gbs 4000 --gemm-tflops 800"), &out) == 0);
    CHECK(out.find("31 kernel launches over 1 step(s); GPU time 510.000 us per step") != std::string::npos);
    CHECK(out.find("| other | 1 | 10.000 |") != std::string::npos);
    REQUIRE(run_command(table_cmd(dir / "two.csv", "--copy-gbs 4000 --gemm-tflops 800 --last-steps 3"), &out) != 0);
    CHECK(out.find("--last-steps 3: the report holds 2 step(s)") != std::string::npos);
}

TEST_CASE("ncu_table: unreadable input and unwritable outputs are named, without a traceback", "[profiling]") {
    TmpDir dir;
    std::string out, args = "--copy-gbs 4000 --gemm-tflops 800";
    SECTION("--md and --csv in a folder that does not exist") {
        REQUIRE(run_command(table_cmd(fixture(), args + " --md /nonexistent_dir/t.md"), &out) == 1);
        CHECK(out.find("ncu_table: error: --md /nonexistent_dir/t.md: cannot write it (No such file or directory)") !=
              std::string::npos);
        REQUIRE(run_command(table_cmd(fixture(), args + " --csv /nonexistent_dir/t.csv"), &out) == 1);
        CHECK(out.find("ncu_table: error: --csv /nonexistent_dir/t.csv: cannot write it") != std::string::npos);
    }
    SECTION("a gzip-compressed report") {
        std::ofstream(dir / "r.csv.gz", std::ios::binary) << std::string("\x1f\x8b\x08\x00\xff\xfe\x80", 7);
        REQUIRE(run_command(table_cmd(dir / "r.csv.gz", args), &out) == 1);
        CHECK(out.find("ncu_table: error: " + (dir / "r.csv.gz") + ": not UTF-8 text at byte 1 (gzip-compressed: "
                       "gunzip it first)") != std::string::npos);
    }
    SECTION("no launch with a time") {
        // the header, the units and adamw's launch, whose time ncu could not measure
        std::istringstream in(slurp(fixture()));
        std::string line, csv;
        for (int kept = 0; std::getline(in, line);) {
            if (line.rfind("==", 0) == 0) continue;
            if (kept++ < 2 || line.find("adamw_kernel") != std::string::npos) csv += line + "\n";
        }
        std::ofstream(dir / "na.csv") << replaced(csv, "\"50000\"", "\"n/a\"");
        REQUIRE(run_command(table_cmd(dir / "na.csv", args), &out) == 1);
        CHECK(out.find("ncu_table: error: " + (dir / "na.csv") + ": no launch has a gpu__time_duration.sum value "
                       "(every cell empty or n/a)") != std::string::npos);
    }
    CHECK(out.find("Traceback") == std::string::npos);
}

TEST_CASE("ncu_table: empty or n/a cells are counted and left out of the rates, not read as 0", "[profiling]") {
    TmpDir dir;
    std::string text = replaced(slurp(fixture()), "\"200000000\"", "\"n/a\"");  // adamw's DRAM bytes
    text = replaced(text, "\"6000000\",\"2000\"", "\"6000000\",\"\"");         // sumsq_partial's time
    std::ofstream(dir / "na.csv") << text;
    std::string out;
    REQUIRE(run_command(table_cmd(dir / "na.csv", "--copy-gbs 4000 --gemm-tflops 800 --csv " + (dir / "t.csv")),
                        &out) == 0);
    INFO(out);
    CHECK(out.find("ncu_table: 2 metric cell(s) empty or n/a (gpu__time_duration.sum: 1, dram__bytes.sum: 1)") !=
          std::string::npos);
    std::map<std::string, std::vector<std::string>> by;
    for (const auto& r : csv_rows(slurp(dir / "t.csv"))) by[r[2]] = r;
    // adamw: its time counts, its GB/s is unknown, not 0 bytes in 50 us
    CHECK(by.at("adamw_kernel") == std::vector<std::string>{"optimizer", "adamw_update", "adamw_kernel", "1", "50.000",
                                                            "20.16", "", "0.000", "", "0.0", "0.0"});
    // no time: no time, share or rates, but still a launch
    CHECK(slurp(dir / "t.csv").find("\noptimizer,norm_squared,sumsq_partial_kernel,1,,,,,,,\n") != std::string::npos);
    // the phase: 50 + 1 us of 248; GB/s over the one launch with bytes and a time (sumsq_final: 0 bytes)
    CHECK(out.find("| optimizer | 3 | 51.000 | 20.56 | 0.0 |") != std::string::npos);
}

TEST_CASE("ncu_table: a report without NVTX ranges says that phases need --nvtx", "[profiling]") {
    TmpDir dir;
    std::ofstream(dir / "nonvtx.csv") << replaced(slurp(fixture()), "Push/Pop_Range", "Other");
    std::string out;
    REQUIRE(run_command(table_cmd(dir / "nonvtx.csv", "--copy-gbs 4000 --gemm-tflops 800"), &out) == 0);
    CHECK(out.find("ncu_table: no NVTX column: every launch is in phase 'other'; profile with `ncu --nvtx`") !=
          std::string::npos);
    CHECK(out.find("| other | 15 | 250.000 | 100.00 |") != std::string::npos);
    out.clear();  // with ranges: no such warning
    REQUIRE(run_command(table_cmd(fixture(), "--copy-gbs 4000 --gemm-tflops 800"), &out) == 0);
    CHECK(out.find("NVTX") == std::string::npos);
}

TEST_CASE("ncu_table: a reader that stops early (| head) ends it quietly", "[profiling]") {
    std::string out;
    REQUIRE(run_command(into_closed_pipe(table_cmd(fixture(), "--copy-gbs 4000 --gemm-tflops 800")), &out) == 1);
    CHECK(out == "");
}

TEST_CASE("make_random_shard.py: the shard profile.sh measures on, and a path it cannot write", "[profiling]") {
    TmpDir dir;
    const std::string cmd = "/usr/bin/python3 " + repo_root() + "/scripts/make_random_shard.py ";
    std::string out;
    REQUIRE(run_command(cmd + (dir / "r.bin") + " --tokens 100 --vocab 32000", &out) == 0);
    CHECK(std::filesystem::file_size(dir / "r.bin") == 1024 + 2 * 100);  // header, uint16 tokens
    out.clear();
    REQUIRE(run_command(cmd + "/nonexistent_dir/r.bin --tokens 100 --vocab 32000", &out) == 1);
    CHECK(out.find("error: /nonexistent_dir/r.bin: cannot write the shard (No such file or directory)") !=
          std::string::npos);
    CHECK(out.find("Traceback") == std::string::npos);
}
