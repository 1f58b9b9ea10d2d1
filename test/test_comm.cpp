// The communicator: ZeRO-1 shards cover every parameter exactly once, and the MPI
// collectives are exact and never hang (run under mpirun with 2 and 3 ranks).
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <vector>

#include "comm/comm.h"
#include "test/test_util.h"

TEST_CASE("ZeRO-1 shards cover every element exactly once, aligned, balanced", "[comm]") {
    for (size_t n : {1ul, 7ul, 8ul, 1000ul, 1001ul, 124475904ul + 3})
        for (int size : {1, 2, 3, 5, 8}) {
            INFO("n " << n << " ranks " << size);
            size_t next = 0, smallest = n, largest = 0;
            for (int r = 0; r < size; r++) {
                const ShardRange s = shard_range(n, r, size, 8);
                CHECK(s.begin == next);  // contiguous, in rank order, no gap or overlap
                CHECK((s.begin % 8 == 0 || s.begin == n));
                next = s.end;
                smallest = std::min(smallest, s.size()), largest = std::max(largest, s.size());
            }
            CHECK(next == n);
            CHECK(largest - smallest <= 8 + 7);  // at most one unit apart, plus the ragged tail
        }
}

#ifdef LNS_MPI
namespace {
// test_comm_mpi is built beside this test binary
std::string mpirun(int ranks, const std::string& args) {
    const std::string dir = std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
    return "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " " + dir + "/test_comm_mpi " +
           args;
}
}  // namespace

TEST_CASE("MPI collectives: all-reduce, reduce-scatter, all-gather, broadcast, barrier", "[comm][mpi]") {
    for (int ranks : {2, 3}) {
        std::string out;
        const int rc = run_command(mpirun(ranks, ""), &out);
        INFO(out);
        CHECK(rc == 0);
        CHECK(out.find("FAILED") == std::string::npos);
        for (int r = 0; r < ranks; r++)
            CHECK(out.find("rank " + std::to_string(r) + " of " + std::to_string(ranks) + ": ok") != std::string::npos);
    }
}

TEST_CASE("a stalled rank stops every rank with a message instead of a hang", "[comm][mpi]") {
    std::string out;
    const auto t0 = std::chrono::steady_clock::now();
    const int rc = run_command(mpirun(2, "stall"), &out);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(out);
    CHECK(rc != 0);
    CHECK(out.find("did not complete within 2 s") != std::string::npos);
    CHECK(s < 30.0);  // the stalled rank sleeps 60 s: the abort ended it
}
#endif

#ifdef LNS_CUDA
#include "kernels/cuda_backend.h"

TEST_CASE("NCCL as a single rank: the collectives over device buffers", "[gpu][comm]") {
    auto boot = make_single_comm();
    auto nccl = make_nccl_comm(*boot, 60.0);
    CHECK(nccl->size() == 1);
    const size_t n = 1000;
    std::vector<float> host(n), back(n);
    for (size_t i = 0; i < n; i++) host[i] = (float)i;
    float* a = (float*)cuda_backend::alloc(n * sizeof(float), "test");
    float* b = (float*)cuda_backend::alloc(n * sizeof(float), "test");
    cuda_backend::copy_from_host(a, host.data(), n * sizeof(float));
    nccl->all_reduce_sum(a, n, DType::f32);  // one rank: the sum is the input
    nccl->reduce_scatter_sum(b, a, n, DType::f32);
    nccl->all_gather(a, b, n, DType::f32);
    nccl->broadcast(a, n * sizeof(float), 0);
    nccl->barrier();
    cuda_backend::copy_to_host(back.data(), a, n * sizeof(float));
    CHECK(back == host);
    cuda_backend::release(a), cuda_backend::release(b);
}
#endif
