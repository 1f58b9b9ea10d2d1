#include "comm/comm.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <thread>

#include "common/check.h"

#ifdef LNS_MPI
#include <mpi.h>
#endif

size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

ShardRange shard_range(size_t n, int rank, int size, size_t align) {
    LNS_CHECK(size >= 1 && rank >= 0 && rank < size && align >= 1, "bad shard request");
    const size_t units = (n + align - 1) / align;  // whole alignment units
    const size_t base = units / size, extra = units % size;
    const size_t first = rank * base + std::min<size_t>(rank, extra);
    const size_t count = base + ((size_t)rank < extra ? 1 : 0);
    return {std::min(n, first * align), std::min(n, (first + count) * align)};
}

bool launched_by_mpi() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_NTASKS"})
        if (const char* s = getenv(v)) {
            if (std::string(v) == "SLURM_NTASKS" || std::string(v) == "PMIX_RANK") return true;
            return atoi(s) > 1;
        }
    return false;
}

namespace {

class SingleComm : public Comm {
public:
    const char* name() const override { return "single"; }
    void all_reduce_sum(void*, size_t, DType) override {}
    void reduce_scatter_sum(void* out, const void* in, size_t shard, DType t) override {
        if (out != in) std::memmove(out, in, shard * dtype_size(t));
    }
    void all_gather(void* out, const void* in, size_t shard, DType t) override {
        if (out != in) std::memmove(out, in, shard * dtype_size(t));
    }
    void broadcast(void*, size_t, int) override {}
    void barrier() override {}
    [[noreturn]] void abort(const std::string& why) override {
        fprintf(stderr, "error: %s\n", why.c_str());
        std::exit(1);
    }
};

#ifdef LNS_MPI
// MPI has no bf16 sum; host gradients are fp32 (the CPU backend), so only f32 is
// reduced here and bf16 is refused.
MPI_Datatype mpi_type(DType t) {
    LNS_CHECK(t == DType::f32, "MPI collectives carry fp32 host buffers");
    return MPI_FLOAT;
}

class MpiComm : public Comm {
public:
    explicit MpiComm(double timeout_s) : timeout_s_(timeout_s) {
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited) MPI_Init(nullptr, nullptr);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
        MPI_Comm_size(MPI_COMM_WORLD, &size_);
        MPI_Comm local;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
        MPI_Comm_rank(local, &local_rank_);
        MPI_Comm_free(&local);
    }
    ~MpiComm() override {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
    }
    const char* name() const override { return "mpi"; }

    void all_reduce_sum(void* buf, size_t n, DType t) override {
        MPI_Request r;
        MPI_Iallreduce(MPI_IN_PLACE, buf, count(n), mpi_type(t), MPI_SUM, MPI_COMM_WORLD, &r);
        wait(r, "all-reduce");
    }
    void reduce_scatter_sum(void* out, const void* in, size_t shard, DType t) override {
        MPI_Request r;
        MPI_Ireduce_scatter_block(in, out, count(shard), mpi_type(t), MPI_SUM, MPI_COMM_WORLD, &r);
        wait(r, "reduce-scatter");
    }
    void all_gather(void* out, const void* in, size_t shard, DType t) override {
        MPI_Request r;
        MPI_Iallgather(in, count(shard), mpi_type(t), out, count(shard), mpi_type(t), MPI_COMM_WORLD, &r);
        wait(r, "all-gather");
    }
    void broadcast(void* buf, size_t bytes, int root) override {
        MPI_Request r;
        MPI_Ibcast(buf, count(bytes), MPI_BYTE, root, MPI_COMM_WORLD, &r);
        wait(r, "broadcast");
    }
    void barrier() override {
        MPI_Request r;
        MPI_Ibarrier(MPI_COMM_WORLD, &r);
        wait(r, "barrier");
    }
    [[noreturn]] void abort(const std::string& why) override {
        fprintf(stderr, "error: rank %d: %s\n", rank_, why.c_str());
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
        std::exit(1);
    }

private:
    int count(size_t n) {
        if (n > (size_t)INT32_MAX) abort("a collective of more than 2^31 elements; use more ranks or NCCL");
        return (int)n;
    }
    // Polls a non-blocking collective so a missing rank becomes an error, not a hang.
    void wait(MPI_Request& r, const char* what) {
        const auto start = std::chrono::steady_clock::now();
        int done = 0;
        while (true) {
            MPI_Test(&r, &done, MPI_STATUS_IGNORE);
            if (done) return;
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            if (timeout_s_ > 0 && s > timeout_s_)
                abort(strfmt("%s did not complete within %.0f s: another rank failed or stalled", what, timeout_s_));
            std::this_thread::sleep_for(std::chrono::microseconds(s < 1 ? 10 : 1000));
        }
    }
    double timeout_s_;
};
#endif

}  // namespace

std::unique_ptr<Comm> make_single_comm() { return std::make_unique<SingleComm>(); }

std::unique_ptr<Comm> make_mpi_comm(double timeout_s) {
#ifdef LNS_MPI
    return std::make_unique<MpiComm>(timeout_s);
#else
    (void)timeout_s;
    throw UserError("several ranks were launched, but this build has no MPI (install libopenmpi-dev and rebuild)");
#endif
}
