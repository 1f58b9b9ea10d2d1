// Data parallel training with ZeRO-1: the shards and gradient buckets cover every
// parameter exactly once, sharded AdamW and re-sharded checkpoints are exact, and
// under mpirun N ranks train as one process with the same global batch, resume from
// their checkpoints with any rank count, and stop together when one rank fails.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <regex>

#include "cpu/cpu_backend.h"
#include "model/gpt.h"
#include "test/test_util.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/optimizer.h"

namespace {

ModelConfig tiny(const std::string& preset_name, NormScheme norm = NormScheme::pre) {
    ModelConfig c = preset(preset_name);
    c.norm = norm;
    return c;
}

}  // namespace

TEST_CASE("ZeRO-1 shards of the flat buffer are equal, aligned, and hold every parameter once", "[dp]") {
    bool ragged = false;  // some case must not divide evenly
    for (const char* name : {"gpt2-tiny", "llama-tiny"})
        for (int world : {1, 2, 3, 5, 8}) {
            INFO(name << " ranks " << world);
            size_t next = 0, total = 0, n_alloc = 0, opt_n = 0;
            for (int r = 0; r < world; r++) {
                GPT<cpu_backend> m(tiny(name), 1, 8, false, AttentionKind::automatic, r, world);
                total = m.layout.total, n_alloc = m.n_alloc;
                if (r == 0) opt_n = m.opt_n;
                CHECK(m.opt_n == opt_n);          // equal: what all-gather needs
                CHECK(m.opt_begin == next);       // contiguous, rank order, no overlap
                CHECK(m.opt_begin % 8 == 0);      // 16-byte aligned bf16
                next = m.opt_begin + m.opt_n;
                // the state holds the real parameters of the shard only
                CHECK(m.opt_real() == std::min(m.opt_n, total - std::min(total, m.opt_begin)));
            }
            CHECK(next == n_alloc);
            CHECK(n_alloc >= total);
            CHECK(n_alloc - total < (size_t)8 * world);  // padding below one unit per rank
            if (world == 1) CHECK(n_alloc == total);
            ragged |= total % ((size_t)8 * world) != 0;
        }
    CHECK(ragged);
}

TEST_CASE("gradient buckets partition the parameters, each block's tensors in its own stage", "[dp]") {
    const std::regex block("(^|.*\\.)(h|layers)\\.([0-9]+)\\..*");
    for (const char* name : {"gpt2-tiny", "llama-tiny"})
        for (NormScheme s : {NormScheme::pre, NormScheme::sandwich, NormScheme::lns}) {
            const ModelConfig c = tiny(name, s);
            const ParamLayout L = build_param_layout(c);
            const std::vector<GradBucket> b = grad_buckets(L);
            INFO(name << " " << to_string(s));
            size_t next = 0;
            std::vector<int> seen_stage(c.n_layer + 1, 0);
            for (const GradBucket& k : b) {
                CHECK(k.begin == next);
                CHECK(k.end > k.begin);
                next = k.end;
                REQUIRE(k.stage >= -1);
                REQUIRE(k.stage < c.n_layer);
                seen_stage[k.stage + 1]++;
            }
            CHECK(next == L.total);
            for (int n : seen_stage) CHECK(n >= 1);  // every block, and the rest, reduced somewhere
            for (const ParamTensor& t : L.tensors) {
                std::smatch m;
                const int want = std::regex_match(t.name, m, block) ? std::stoi(m[3]) : -1;
                int holders = 0;
                for (const GradBucket& k : b)
                    if (t.offset >= k.begin && t.offset + t.size <= k.end) {
                        holders++;
                        CHECK(k.stage == want);
                    }
                CHECK(holders == 1);
            }
        }
}

TEST_CASE("AdamW shard by shard equals AdamW on the whole buffer, bit for bit", "[dp]") {
    const ModelConfig c = tiny("gpt2-tiny");
    GPT<cpu_backend> whole(c, 1, 8);
    const size_t P = whole.layout.total;
    const std::vector<float> p0 = randn(P, 1, 0.1f), g = randn(P, 2, 0.01f);
    const AdamWConfig o{0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    const float norm = 3.0f;  // above grad_clip: the clipping scale is exercised too
    auto load = [&](GPT<cpu_backend>& m) {
        m.set_params(p0);
        cpu_backend::copy_from_host(m.grads, g.data(), P * sizeof(float));
    };
    load(whole);
    for (int t = 1; t <= 3; t++) adamw_step(whole, o, 1e-2f, t, 0, norm);
    const std::vector<float> want = whole.get_params();
    for (int world : {2, 3, 7}) {
        INFO("ranks " << world);
        std::vector<float> got(P, NAN);
        bool straddles = false;  // a shard across the decay boundary
        for (int r = 0; r < world; r++) {
            GPT<cpu_backend> m(c, 1, 8, false, AttentionKind::automatic, r, world);
            load(m);
            for (int t = 1; t <= 3; t++) adamw_step(m, o, 1e-2f, t, 0, norm);
            const std::vector<float> mine = m.get_params();  // fp32 params: no master to gather
            for (size_t i = m.opt_begin; i < std::min(P, m.opt_begin + m.opt_n); i++) got[i] = mine[i];
            straddles |= m.opt_begin < m.layout.n_decay && m.opt_begin + m.opt_n > m.layout.n_decay;
        }
        CHECK(straddles);
        CHECK(std::memcmp(got.data(), want.data(), P * sizeof(float)) == 0);
    }
}

TEST_CASE("a checkpoint written by 3 ranks loads into any shard of any rank count, exactly", "[dp]") {
    TmpDir d;
    const size_t P = 1001;
    const std::vector<float> params = randn(P, 3), m1 = randn(P, 4), m2 = randn(P, 5), mw = randn(P, 6);
    const std::string path = checkpoint_path(d.path, 7);
    const int saved_world = 3;
    for (int r = saved_world - 1; r >= 0; r--) {  // the rank files first, the main file last
        const ShardRange s = shard_range(P + 7, r, saved_world, 8);  // padded: the last shard is cut to P
        const size_t e = std::min(P, s.end);
        Checkpoint c;
        c.config = {{"model", "x"}};
        c.state = {{"step", 7}, {"world_size", saved_world}, {"rank", r}};
        c.opt_begin = s.begin;
        c.m.assign(m1.begin() + s.begin, m1.begin() + e);
        c.v.assign(m2.begin() + s.begin, m2.begin() + e);
        c.master.assign(mw.begin() + s.begin, mw.begin() + e);
        if (r == 0) c.params = params;
        save_checkpoint(r == 0 ? path : checkpoint_rank_path(path, r), c);
    }
    for (int world : {1, 2, 3, 4}) {
        for (int r = 0; r < world; r++) {
            INFO("ranks " << world << " rank " << r);
            const ShardRange s = shard_range(P, r, world, 8);
            nlohmann::json own;
            Checkpoint c = load_checkpoint(path);
            own = load_optimizer_shard(c, path, s.begin, s.end, r, world);
            CHECK(c.params == params);
            CHECK(c.opt_begin == s.begin);
            CHECK(c.m == std::vector<float>(m1.begin() + s.begin, m1.begin() + s.end));
            CHECK(c.v == std::vector<float>(m2.begin() + s.begin, m2.begin() + s.end));
            CHECK(c.master == std::vector<float>(mw.begin() + s.begin, mw.begin() + s.end));
            // a rank's own state (its data position) only when the rank count is unchanged
            if (world == saved_world) CHECK(own.at("rank") == r);
            else CHECK(own.is_null());
        }
    }
    std::filesystem::remove(checkpoint_rank_path(path, 2));
    Checkpoint c = load_checkpoint(path);
    CHECK_THROWS_WITH(load_optimizer_shard(c, path, 0, P, 0, 1), Catch::Contains("rank2.safetensors"));
}

namespace {
// Two ranks seen from one: records every asynchronous all-reduce with a copy of its data
// at the moment it starts, and "sums" by doubling (the other rank holds the same values).
struct RecordingComm : Comm {
    struct Start {
        const float* buf;
        std::vector<float> at_start;
    };
    std::vector<Start> starts;
    std::vector<std::pair<float*, size_t>> pending;
    RecordingComm() { size_ = 2; }
    const char* name() const override { return "recording"; }
    void all_reduce_sum(void* buf, size_t n, DType) override {
        for (size_t i = 0; i < n; i++) ((float*)buf)[i] *= 2;
    }
    void reduce_scatter_sum(void*, const void*, size_t, DType) override { FAIL("not used"); }
    void all_gather(void*, const void*, size_t, DType) override {}
    void all_reduce_sum_start(void* buf, size_t n, DType) override {
        const float* b = (const float*)buf;
        starts.push_back({b, std::vector<float>(b, b + n)});
        pending.push_back({(float*)buf, n});
    }
    void wait_all() override {
        for (auto& [b, n] : pending) all_reduce_sum(b, n, DType::f32);
        pending.clear();
    }
    void broadcast(void*, size_t, int) override {}
    void barrier() override {}
    [[noreturn]] void abort(const std::string& why) override { throw std::runtime_error(why); }
};
}  // namespace

TEST_CASE("overlapped gradient reduction: each bucket starts once its gradients are final, deepest first",
          "[dp]") {
    for (const char* name : {"gpt2-tiny", "llama-tiny"}) {
        INFO(name);
        const ModelConfig c = tiny(name, NormScheme::lns);
        const int B = 2, T = 16;
        std::vector<int> x, y;
        make_batch(x, y, B * T, c.vocab_size, 5);
        // the reference: one rank, plain backward
        GPT<cpu_backend> ref(c, B, T);
        ref.init_random(1);
        ref.forward(x.data(), y.data(), B, T);
        ref.backward(0.5f);
        const std::vector<float> want = ref.get_grads();

        RecordingComm comm;
        GPT<cpu_backend> m(c, B, T, false, AttentionKind::automatic, 0, 2);
        m.init_random(1);
        DataParallel<cpu_backend> dp(comm, m);
        m.forward(x.data(), y.data(), B, T);
        dp.overlap_next_backward();
        m.backward(0.5f);
        const size_t started_in_backward = comm.starts.size();
        dp.finish_backward();

        // every bucket once, in backward order: blocks L-1 .. 0, then the rest
        REQUIRE(comm.starts.size() == dp.buckets.size());
        CHECK(started_in_backward == comm.starts.size() - std::count_if(dp.buckets.begin(), dp.buckets.end(),
                                                                         [](auto& b) { return b.stage == -1; }));
        int last_stage = c.n_layer;
        for (const auto& s : comm.starts) {
            const size_t off = s.buf - m.grads;
            const auto it = std::find_if(dp.buckets.begin(), dp.buckets.end(), [&](auto& b) { return b.begin == off; });
            REQUIRE(it != dp.buckets.end());
            const int stage = it->stage < 0 ? -1 : it->stage;
            CHECK(stage <= last_stage);  // never an earlier block before a later one
            last_stage = stage;
            // what the reduction read is what the whole backward pass ends with
            CHECK(std::memcmp(s.at_start.data(), want.data() + off, s.at_start.size() * sizeof(float)) == 0);
        }
        // and after the wait, the gradients are the sum over the (two identical) ranks
        const std::vector<float> got = m.get_grads();
        for (size_t i = 0; i < want.size(); i++)
            if (got[i] != 2 * want[i]) FAIL_CHECK("element " << i);
    }
}

#ifdef LNS_MPI
namespace {

std::string train(const TextShards& d, const std::string& model, int B, const std::string& extra) {
    return repo_root() + "/train_gpt --device cpu --threads 1 --model " + model + " --norm lns -t 32 --seed 11 " +
           "--lr 3e-3 --warmup 2 --train-data " + d.train + " --val-data " + d.val + " -b " +
           std::to_string(B) + " " + extra;
}
double last_val_loss(const std::string& dir) {
    std::ifstream f(dir + "/log.jsonl");
    std::string line;
    double v = NAN;
    while (std::getline(f, line)) {
        auto j = nlohmann::json::parse(line);
        if (j["type"] == "val") v = j["val_loss"].get<double>();
    }
    return v;
}
// The losses of two runs that differ only in how fp32 sums are split between ranks:
// one rank sums a weight gradient over all N rows, two ranks sum N/2 rows each and
// add the halves (a few ulps apart), and the logged loss is the fp32 mean of the
// ranks' losses (one rounding, 6e-8 relative). Measured over 10 steps at lr 3e-3:
// at most 1.2e-7 relative. 2e-6 leaves room for growth through AdamW while a wrong
// batch split, scaling or shard (1e-3 and more, seen while developing) fails.
void check_same_losses(const std::map<int, double>& a, const std::map<int, double>& b, int steps) {
    REQUIRE(a.size() == (size_t)steps);
    REQUIRE(b.size() == (size_t)steps);
    double worst = 0;
    for (auto& [s, l] : a) worst = std::max(worst, std::fabs(l - b.at(s)) / std::fabs(l));
    INFO("worst relative loss difference " << worst);
    CHECK(worst < 2e-6);
}

}  // namespace

TEST_CASE("2 ranks train like one process with the same global batch", "[dp][mpi]") {
    TextShards d;
    // llama: one micro-batch per rank; gpt2: gradient accumulation on top. Sequential
    // order: rank r of 2 reads the 2-row windows 2k+r, which together are exactly the
    // 4-row windows k of one process (shuffling permutes windows of either size).
    for (auto [model, extra1, extra2] :
         {std::tuple<const char*, const char*, const char*>{"llama-tiny", "", ""},
          {"gpt2-tiny", "--total-batch-size 512", "--total-batch-size 512"}}) {
        INFO(model);
        TmpDir one, two;
        const std::string common = " --steps 10 --val-batches 3 --out-dir ";
        std::string out;
        REQUIRE(run_command(train(d, model, 4, extra1 + common + one.path), &out) == 0);
        REQUIRE(run_command(mpirun(2) + train(d, model, 2, extra2 + common + two.path), &out) == 0);
        INFO(out);
        CHECK(out.find("data parallel: 2 ranks over mpi") != std::string::npos);
        check_same_losses(logged_losses(one.path), logged_losses(two.path), 10);
        CHECK(std::fabs(last_val_loss(one.path) - last_val_loss(two.path)) < 2e-6 * last_val_loss(one.path));
    }
}

TEST_CASE("data parallel checkpoints: same rank count resumes exactly, another re-shards", "[dp][mpi]") {
    TextShards d;
    // 2 ranks x B 2 x T 32 = 128 tokens per step; one rank gets there by accumulating 2
    // shuffled: each rank's position in the permuted window order must survive too
    const std::string run = train(d, "llama-tiny", 2, "--total-batch-size 128 --steps 8 --shuffle ");
    TmpDir full, part;
    std::string out;
    REQUIRE(run_command(mpirun(2) + run + "--out-dir " + full.path, &out) == 0);
    REQUIRE(run_command(mpirun(2) + run + "--ckpt-every 4 --ckpt-keep 1 --out-dir " + part.path, &out) == 0);
    INFO(out);
    // each rank's optimizer shard beside the main file; pruning took the step-4 pair
    CHECK(std::filesystem::exists(checkpoint_rank_path(checkpoint_path(part.path, 8), 1)));
    CHECK(!std::filesystem::exists(checkpoint_rank_path(checkpoint_path(part.path, 4), 1)));
    CHECK(!std::filesystem::exists(checkpoint_path(part.path, 4)));
    const auto want = logged_losses(full.path);

    for (int ranks : {2, 1}) {
        INFO("resumed on " << ranks << " ranks");
        TmpDir again;
        REQUIRE(run_command(mpirun(2) + run + "--ckpt-every 4 --out-dir " + again.path +
                                " && rm " + again.path + "/ckpt_00000008*", &out) == 0);
        REQUIRE(run_command(mpirun(ranks) + run + "--resume --out-dir " + again.path, &out) == 0);
        INFO(out);
        const auto got = logged_losses(again.path);
        REQUIRE(got.size() == 8);
        if (ranks == 2) {
            for (int s = 1; s <= 8; s++) CHECK(got.at(s) == want.at(s));  // bit for bit
        } else {
            CHECK(out.find("written by 2 ranks, this run has 1") != std::string::npos);
            check_same_losses(want, got, 8);
        }
    }
}

TEST_CASE("a rank that fails or stalls stops every rank with a message", "[dp][mpi]") {
    TextShards d;
    const std::string run = train(d, "llama-tiny", 2, "--steps 20 --comm-timeout 3");
    for (const char* fault : {"rank-exit:1:3", "rank-stall:1:3", "rank-stall:0:3"}) {
        INFO(fault);
        std::string out;
        const auto t0 = std::chrono::steady_clock::now();
        const int rc = run_command(std::string("LNS_FAULT=") + fault + " timeout 120 " + mpirun(2) + run, &out);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        INFO(out);
        CHECK(rc != 0);
        CHECK(rc != 124);  // not ended by `timeout`
        CHECK(s < 60);
        if (std::string(fault).find("exit") != std::string::npos) {
            CHECK(out.find("injected failure before step 3") != std::string::npos);
        } else {
            const int other = fault[11] == '1' ? 0 : 1;
            CHECK(out.find("error: rank " + std::to_string(other) +
                           ": gradient all-reduce did not complete within 3 s") != std::string::npos);
        }
    }
}

TEST_CASE("srun without MPI: files carry the bootstrap, the CPU backend refuses clearly", "[dp][mpi]") {
    TmpDir d;
    const std::string bin = std::filesystem::read_symlink("/proc/self/exe").parent_path().string() + "/test_comm_mpi";
    std::string cmd = "cd " + d.path + "; ";
    for (int r = 0; r < 3; r++)
        cmd += "(SLURM_JOB_ID=42 SLURM_NTASKS=3 SLURM_PROCID=" + std::to_string(r) + " SLURM_LOCALID=" +
               std::to_string(r) + " " + bin + " file " + d.path + " > out" + std::to_string(r) + " 2>&1) & ";
    cmd += "wait; cat out0 out1 out2";
    std::string out;
    run_command(cmd, &out);
    INFO(out);
    for (int r = 0; r < 3; r++) CHECK(out.find("rank " + std::to_string(r) + " of 3: ok") != std::string::npos);

    TextShards s;
    const int rc = run_command("SLURM_NTASKS=2 SLURM_PROCID=0 " + train(s, "llama-tiny", 2, "--steps 1"), &out);
    INFO(out);
    CHECK(rc == 1);
    CHECK(out.find("srun started 2 ranks without MPI") != std::string::npos);
}
#endif
