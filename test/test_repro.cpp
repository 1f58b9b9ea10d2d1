// The reproduction and plotting scripts on the CPU: scripts/repro.py runs the tiny Table 1
// grid (one document per row) and draws it with scripts/plot_runs.py; every chart must be a
// valid PNG and summary.md must hold the logs' numbers. Also the --data-layout flag's errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test/test_util.h"

namespace {

using json = nlohmann::json;

std::string slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

uint32_t be32(const std::string& s, size_t at) {
    return (uint32_t)(unsigned char)s[at] << 24 | (uint32_t)(unsigned char)s[at + 1] << 16 |
           (uint32_t)(unsigned char)s[at + 2] << 8 | (uint32_t)(unsigned char)s[at + 3];
}

// A PNG: the signature, an IHDR chunk first with a nonzero size, and chunks that follow
// one another by their lengths up to an IEND that ends the file.
void require_png(const std::string& path) {
    INFO(path);
    const std::string s = slurp(path);
    REQUIRE(s.size() > 8 + 25 + 12);
    REQUIRE(s.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
    REQUIRE(s.compare(12, 4, "IHDR") == 0);
    CHECK(be32(s, 16) > 100);  // width and height in pixels
    CHECK(be32(s, 20) > 100);
    size_t at = 8;
    std::string type;
    while (at + 12 <= s.size()) {
        type = s.substr(at + 4, 4);
        at += 12 + be32(s, at);
        if (type == "IEND") break;
    }
    REQUIRE(type == "IEND");
    REQUIRE(at == s.size());
}

struct Log {
    json config, last_step, last_val, prune;
    double best_val = INFINITY;
};

Log read_log(const std::string& dir) {
    Log l;
    std::ifstream f(dir + "/log.jsonl");
    std::string line;
    while (std::getline(f, line)) {
        const json r = json::parse(line);
        const std::string t = r.at("type");
        if (t == "config") l.config = r;
        if (t == "step") l.last_step = r;
        if (t == "val") l.last_val = r, l.best_val = std::fmin(l.best_val, r.at("val_loss").get<double>());
        if (t == "prune") l.prune = r;
    }
    return l;
}

// The cells of summary.md's row for `run`, split at '|'.
std::vector<std::string> summary_row(const std::string& md, const std::string& run) {
    std::istringstream in(md);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("| " + run + " |", 0) != 0) continue;
        std::vector<std::string> cells;
        std::string cell;
        std::istringstream ls(line.substr(1));
        while (std::getline(ls, cell, '|')) cells.push_back(cell.substr(1, cell.size() - 2));
        return cells;
    }
    FAIL("summary.md has no row for " << run << ":\n" << md);
    return {};
}

// python3 running scripts/NAME from the repository root, with `args`
std::string script(const std::string& name, const std::string& args) {
    return "cd " + repo_root() + " && /usr/bin/python3 -B scripts/" + name + " " + args;
}

// cmd with its stdout a pipe whose reader has already gone (as when piped to head)
std::string into_closed_pipe(const std::string& cmd) {
    return "/usr/bin/python3 -c \"import os, subprocess, sys; r, w = os.pipe(); os.close(r); "
           "sys.exit(subprocess.run(sys.argv[1:], stdout=w).returncode)\" sh -c '" + cmd + "'";
}

// A run directory whose log.jsonl holds a config, two steps and a val record, then `tail`.
void fake_run(const std::string& dir, const std::string& tail = "") {
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/log.jsonl", std::ios::binary)
        << "{\"type\":\"config\",\"preset\":\"llama-tiny\",\"model\":{\"norm_scheme\":\"pre\"}}\n"
           "{\"type\":\"step\",\"step\":1,\"loss\":2.5}\n{\"type\":\"step\",\"step\":2,\"loss\":2.0}\n"
           "{\"type\":\"val\",\"step\":2,\"val_loss\":2.1,\"perplexity\":8.166}\n"
        << tail;
}

}  // namespace

TEST_CASE("repro.py table1 --scale tiny trains every norm; plot_runs.py writes every chart and the logs' numbers",
          "[repro]") {
    TmpDir d;
    const std::string root = repo_root(), out = d / "repro";
    std::string log;
    const std::string cmd = "cd " + root + " && OMP_NUM_THREADS=1 /usr/bin/python3 -B scripts/repro.py table1 "
                            "--scale tiny --steps 30 --out " + out;
    const int rc = run_command(cmd, &log);
    INFO(cmd << "\n" << log);
    REQUIRE(rc == 0);

    const std::string grid = out + "/table1-tiny", plots = grid + "/plots";
    for (const char* png : {"loss.png", "variance.png", "angular.png", "prune.png"}) require_png(plots + "/" + png);
    const std::string md = slurp(plots + "/summary.md");
    for (const char* norm : {"post", "deepnorm", "mix", "pre", "lns"}) {
        const std::string run = std::string("tiny-") + norm;
        INFO(run);
        const Log l = read_log(grid + "/" + run);
        // the grid's setup: one document per row, the paper's optimizer settings
        REQUIRE(l.config.at("data_layout") == "documents");
        REQUIRE(l.config.at("doc_token") == 0);
        REQUIRE(l.config.at("model").at("norm_scheme") == norm);
        REQUIRE(l.config.at("adamw").at("beta2").get<double>() == Approx(0.999));
        REQUIRE(l.config.at("adamw").at("grad_clip").get<double>() == 0.0);

        const auto c = summary_row(md, run);
        REQUIRE(c.size() == 10);
        CHECK(c[1] == "llama-tiny");
        CHECK(c[2] == norm);
        CHECK(c[3] == "-");  // the runs differ only in --norm
        CHECK(md.find("`--n-layer 6 ") != std::string::npos);
        CHECK(c[4] == "30");
        // printed with 4 decimals (perplexity 3): equal to the log's value within half a unit
        CHECK(std::stod(c[5]) == Approx(l.last_step.at("loss").get<double>()).margin(0.5e-4));
        CHECK(std::stod(c[6]) == Approx(l.last_val.at("val_loss").get<double>()).margin(0.5e-4));
        CHECK(std::stod(c[7]) == Approx(l.best_val).margin(0.5e-4));
        CHECK(std::stod(c[8]) == Approx(l.last_val.at("perplexity").get<double>()).margin(0.5e-3));
        CHECK(std::stod(c[8]) == Approx(std::exp(std::stod(c[6]))).epsilon(1e-3));
        // pruning: full loss, the largest increase and its block
        double top = -INFINITY;
        int block = 0;
        for (const auto& b : l.prune.at("layers"))
            if (b.at("increase").get<double>() > top) top = b.at("increase"), block = b.at("layer");
        char want[64];
        snprintf(want, sizeof want, "full %.4f; max %+.4f (block %d)", l.prune.at("val_loss").get<double>(), top,
                 block);
        CHECK(c[9].find(want) == 0);
    }
}

TEST_CASE("--data-layout and --doc-token refuse bad values by name", "[repro]") {
    TextShards data;  // bytes without document separators
    const std::string base = repo_root() + "/train_gpt --device cpu --model llama-tiny -b 2 -t 16 --steps 1 "
                             "--train-data " + data.train;
    std::string out;
    REQUIRE(run_command(base + " --data-layout rows", &out) == 1);
    CHECK_THAT(out, Catch::Contains("--data-layout") && Catch::Contains("rows"));
    out.clear();
    REQUIRE(run_command(base + " --data-layout documents --doc-token 256", &out) == 1);
    CHECK_THAT(out, Catch::Contains("--doc-token") && Catch::Contains("256"));
    out.clear();
    REQUIRE(run_command(base + " --doc-token 10", &out) == 1);
    CHECK_THAT(out, Catch::Contains("--doc-token") && Catch::Contains("--data-layout documents"));
    // no byte 0 in the text: one document, fewer than the batch's 2 rows
    out.clear();
    REQUIRE(run_command(base + " --data-layout documents", &out) == 1);
    CHECK_THAT(out, Catch::Contains(data.train) && Catch::Contains("document separators"));
}

TEST_CASE("repro.py: prepare-c4 takes --out-prefix, not --out; --only and --set name what is wrong", "[repro]") {
    TmpDir d;  // nothing is written there (--dry-run), nor read from it
    std::string out;
    REQUIRE(run_command(script("repro.py", "--help"), &out) == 0);
    CHECK(out.find("prepare-c4 --c4-dir DIR --spiece T5/spiece.model [--out-prefix data/c4]") != std::string::npos);
    CHECK(out.find("[--out data/c4]") == std::string::npos);
    out.clear();
    // --out is the grids' folder: the shards would have gone to data/c4
    const std::string c4 = "prepare-c4 --c4-dir c4 --spiece s.model --dry-run ";
    REQUIRE(run_command(script("repro.py", c4 + "--out " + (d / "c4")), &out) == 1);
    CHECK(out.find("error: --out: prepare-c4 writes its shards to --out-prefix") != std::string::npos);
    out.clear();
    REQUIRE(run_command(script("repro.py", c4 + "--out-prefix " + (d / "c4")), &out) == 0);
    CHECK(out.find("--out " + (d / "c4") + " " + (d / "c4_jsonl/c4-train")) != std::string::npos);
    out.clear();
    // no 1b at tiny scale (it was quietly tiny-lns); tiny-lns is the name there
    const std::string tiny = "table1 --scale tiny --dry-run ";
    REQUIRE(run_command(script("repro.py", tiny + "--only 1b-lns"), &out) == 1);
    CHECK(out.find("error: --only 1b-lns: no run of table1 at --scale tiny has that name") != std::string::npos);
    CHECK(out.find("sizes: tiny;") != std::string::npos);
    out.clear();
    REQUIRE(run_command(script("repro.py", tiny + "--only tiny-lns --out " + d.path), &out) == 0);
    CHECK(out.find("--out-dir " + (d / "table1-tiny/tiny-lns")) != std::string::npos);
    CHECK(out.find("tiny-pre") == std::string::npos);
    out.clear();
    REQUIRE(run_command(script("repro.py", "table1 --scale paper --only 1b-lns,bogus --dry-run"), &out) == 1);
    CHECK(out.find("error: --only bogus:") != std::string::npos);
    CHECK(out.find("sizes: 130m, 250m, 350m, 1b;") != std::string::npos);
    out.clear();
    REQUIRE(run_command(script("repro.py", "table1 --dry-run --set=--steps"), &out) == 1);
    CHECK(out.find("error: --set: --steps needs a value (the grid gives it one: --steps 60)") != std::string::npos);
    out.clear();
    REQUIRE(run_command(script("repro.py", "table1 --dry-run \"--set=--seed '1\""), &out) == 1);
    CHECK(out.find("error: --set: No closing quotation") != std::string::npos);
    CHECK(out.find("Traceback") == std::string::npos);
}

TEST_CASE("repro.py --only: the grid's plots cover its other runs already on disk", "[repro]") {
    TmpDir d;
    fake_run(d / "table1-tiny/tiny-post");                         // an earlier run of the grid
    std::filesystem::create_directories(d / "table1-tiny/tiny-mix");  // started, never logged
    std::string out;
    REQUIRE(run_command(script("repro.py", "table1 --scale tiny --only lns --dry-run --out " + d.path), &out) == 0);
    INFO(out);
    const std::string g = d / "table1-tiny";
    CHECK(out.find("scripts/plot_runs.py " + g + "/tiny-post " + g + "/tiny-lns --out " + g + "/plots\n") !=
          std::string::npos);
}

TEST_CASE("repro.py --dry-run into a reader that stops early (| head) ends quietly", "[repro]") {
    std::string out;
    REQUIRE(run_command(into_closed_pipe("cd " + repo_root() + " && /usr/bin/python3 -B scripts/repro.py table1 "
                                         "--scale paper --dry-run"),
                        &out) == 1);
    CHECK(out == "");
}

TEST_CASE("plot_runs.py and plot_loss.py: a partial last log line is skipped, other bad lines are named",
          "[repro]") {
    TmpDir d;
    std::string out;
    SECTION("a run killed, or still running, mid-write") {
        fake_run(d / "run", "{\"type\":\"step\",\"step\":3,\"lo");
        REQUIRE(run_command(script("plot_runs.py", d / "run --out " + (d / "plots")), &out) == 0);
        CHECK(out.find("warning: " + (d / "run") + "/log.jsonl:5: not a whole JSON record") != std::string::npos);
        CHECK(slurp(d / "plots/summary.md").find("| run | llama-tiny | pre | - | 2 | 2.0000 | 2.1000 |") !=
              std::string::npos);
        out.clear();
        fake_run(d / "run", "\n");  // an empty last line
        REQUIRE(run_command(script("plot_loss.py", d / "run -o " + (d / "loss.png")), &out) == 0);
        CHECK(out.find("log.jsonl:5: not a whole JSON record") != std::string::npos);
        require_png(d / "loss.png");
    }
    SECTION("the same line before the end is an error") {
        fake_run(d / "run", "{\"type\":\"step\",\"step\":3,\"lo\n{\"type\":\"step\",\"step\":4,\"loss\":1}\n");
        REQUIRE(run_command(script("plot_runs.py", d / "run --out " + (d / "plots")), &out) == 1);
        CHECK(out.find("error: " + (d / "run") + "/log.jsonl:5: not JSON") != std::string::npos);
    }
    SECTION("a line that is JSON but not a record") {
        fake_run(d / "run", "[1,2]\n");
        REQUIRE(run_command(script("plot_loss.py", d / "run -o " + (d / "loss.png")), &out) == 1);
        CHECK(out.find("error: " + (d / "run") + "/log.jsonl:5: an array, expected a JSON object") !=
              std::string::npos);
    }
    SECTION("bytes that are not UTF-8") {
        fake_run(d / "run", "{\"type\":\"step\",\"step\":3,\"loss\":\xff}\n{}\n");
        REQUIRE(run_command(script("plot_runs.py", d / "run --out " + (d / "plots")), &out) == 1);
        CHECK(out.find("error: " + (d / "run") + "/log.jsonl:5: not UTF-8 text") != std::string::npos);
    }
    CHECK(out.find("Traceback") == std::string::npos);
}

TEST_CASE("plot_runs.py: runs in folders of the same name are told apart; --out must be a folder", "[repro]") {
    TmpDir d;
    fake_run(d / "a/run");
    fake_run(d / "b/run");
    fake_run(d / "c");
    std::string out;
    REQUIRE(run_command(script("plot_runs.py", (d / "a/run") + " " + (d / "b/run") + " " + (d / "c") + " --out " +
                                                   (d / "plots")),
                        &out) == 0);
    const std::string md = slurp(d / "plots/summary.md");
    CHECK(md.find("\n| a/run | llama-tiny |") != std::string::npos);
    CHECK(md.find("\n| b/run | llama-tiny |") != std::string::npos);
    CHECK(md.find("\n| c | llama-tiny |") != std::string::npos);
    std::ofstream(d / "afile") << "x";
    out.clear();
    REQUIRE(run_command(script("plot_runs.py", (d / "c") + " --out " + (d / "afile")), &out) == 1);
    CHECK(out.find("error: --out " + (d / "afile") + ": expected a folder (or a new name), found a file") !=
          std::string::npos);
    CHECK(out.find("Traceback") == std::string::npos);
}

TEST_CASE("plot_loss.py: -o needs a known extension and gets its folder; --smooth must be >= 1", "[repro]") {
    TmpDir d;
    fake_run(d / "run");
    const std::string run = d / "run";
    std::string out;
    REQUIRE(run_command(script("plot_loss.py", run + " -o " + (d / "new/dir/loss.png")), &out) == 0);
    CHECK(out.find("wrote " + (d / "new/dir/loss.png")) != std::string::npos);
    require_png(d / "new/dir/loss.png");
    for (const char* name : {"loss.foo", "lossnoext"}) {
        out.clear();
        REQUIRE(run_command(script("plot_loss.py", run + " -o " + (d / name)), &out) == 1);
        CHECK(out.find("error: -o " + (d / name) + ": expected a file name ending in one of ") != std::string::npos);
        CHECK(out.find(" .png ") != std::string::npos);
        CHECK(!std::filesystem::exists(d / (name + std::string(".png"))));
    }
    out.clear();
    REQUIRE(run_command(script("plot_loss.py", run + " -o " + (d / "loss.png") + " --smooth -3"), &out) == 1);
    CHECK(out.find("error: --smooth: expected >= 1, got -3") != std::string::npos);
    CHECK(out.find("Traceback") == std::string::npos);
}

TEST_CASE("text_to_shards.py --documents: too few documents to split is said in documents", "[repro]") {
    TmpDir d;
    std::ofstream(d / "one.txt") << std::string(5000, 'x') << "\n";
    std::ofstream(d / "blank.txt") << "\n\n\n\n";
    std::string out;
    REQUIRE(run_command(script("text_to_shards.py",
                               "--tokenizer bytes --documents paragraphs " + (d / "one.txt") + " " + (d / "o")),
                        &out) == 1);
    CHECK(out.find("error: " + (d / "one.txt") + ": found 1 document(s) (--documents paragraphs); need at least 2 to "
                   "split train and val") != std::string::npos);
    out.clear();
    REQUIRE(run_command(script("text_to_shards.py", "--tokenizer bytes --documents endoftext " + (d / "blank.txt") +
                                                        " " + (d / "o")),
                        &out) == 1);
    CHECK(out.find("found 0 document(s)") != std::string::npos);
    CHECK(out.find("0 bytes") == std::string::npos);
}
