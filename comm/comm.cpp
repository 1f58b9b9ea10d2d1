#include "comm/comm.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "common/check.h"
#include "common/safetensors.h"  // write_file_atomic

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

static int env_int(const char* name, int fallback) {
    const char* s = getenv(name);
    return s && *s ? atoi(s) : fallback;
}

LaunchInfo detect_launch() {
    LaunchInfo li;
    int mpi_size = 0;  // rank, local rank: MPI itself tells
    if (getenv("OMPI_COMM_WORLD_SIZE")) mpi_size = env_int("OMPI_COMM_WORLD_SIZE", 1);  // mpirun (OpenMPI)
    else if (getenv("PMI_SIZE")) mpi_size = env_int("PMI_SIZE", 1);                    // MPICH-style launchers
    else if (getenv("PMIX_RANK")) mpi_size = env_int("SLURM_NTASKS", 1);               // srun --mpi=pmix
    if (mpi_size > 1) {
        li.kind = Launcher::mpi, li.size = mpi_size;
    } else if (mpi_size == 0 && env_int("SLURM_NTASKS", 1) > 1 && getenv("SLURM_PROCID")) {
        li.kind = Launcher::slurm;
        li.size = env_int("SLURM_NTASKS", 1);
        li.rank = env_int("SLURM_PROCID", 0);
        li.local_rank = env_int("SLURM_LOCALID", 0);
        REQUIRE_INPUT(li.rank >= 0 && li.rank < li.size, "SLURM_PROCID %d is outside [0, SLURM_NTASKS=%d)", li.rank,
                      li.size);
    }
    return li;
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
    void all_reduce_sum_start(void*, size_t, DType) override {}
    void wait_all() override {}
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
        const bool in_place = in == (const char*)out + (size_t)rank_ * shard * dtype_size(t);
        MPI_Iallgather(in_place ? MPI_IN_PLACE : in, count(shard), mpi_type(t), out, count(shard), mpi_type(t),
                       MPI_COMM_WORLD, &r);
        wait(r, "all-gather");
    }
    void all_reduce_sum_start(void* buf, size_t n, DType t) override {
        pending_.emplace_back();
        MPI_Iallreduce(MPI_IN_PLACE, buf, count(n), mpi_type(t), MPI_SUM, MPI_COMM_WORLD, &pending_.back());
        // MPI advances non-blocking collectives inside MPI calls: test the earlier ones
        int flag = 0;
        MPI_Testall((int)pending_.size(), pending_.data(), &flag, MPI_STATUSES_IGNORE);
    }
    void wait_all() override {
        for (MPI_Request& r : pending_) wait(r, "gradient all-reduce");
        pending_.clear();
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
    std::vector<MPI_Request> pending_;
};
#endif

// Files named by the job and a sequence number, written whole and renamed, so a
// reader never sees a partial one. Every rank calls the same collectives in the same
// order, so sequence numbers agree.
class FileComm : public Comm {
public:
    FileComm(const LaunchInfo& li, const std::string& dir, double timeout_s) : timeout_s_(timeout_s) {
        rank_ = li.rank, size_ = li.size, local_rank_ = li.local_rank;
        const char* job = getenv("SLURM_JOB_ID");
        const char* step = getenv("SLURM_STEP_ID");
        dir_ = dir + strfmt("/.lns-bootstrap-%s.%s", job ? job : "0", step ? step : "0");
        std::error_code ec;
        std::filesystem::create_directories(dir_, ec);
        REQUIRE_INPUT(std::filesystem::is_directory(dir_), "--comm-dir: cannot create %s (it must be on a file "
                      "system every rank sees)", dir_.c_str());
    }
    const char* name() const override { return "file"; }
    void all_reduce_sum(void*, size_t, DType) override { refuse(); }
    void reduce_scatter_sum(void*, const void*, size_t, DType) override { refuse(); }
    void all_gather(void*, const void*, size_t, DType) override { refuse(); }
    void all_reduce_sum_start(void*, size_t, DType) override { refuse(); }
    void wait_all() override {}
    void broadcast(void* buf, size_t bytes, int root) override {
        const std::string path = dir_ + strfmt("/bcast-%d", seq_++);
        if (rank_ == root) {
            write_file_atomic(path, std::string((const char*)buf, bytes));
            return;
        }
        const std::string data = wait_for(path, "broadcast");
        if (data.size() != bytes) abort(strfmt("%s holds %zu bytes, expected %zu", path.c_str(), data.size(), bytes));
        std::memcpy(buf, data.data(), bytes);
    }
    void barrier() override {
        const int k = seq_++;
        write_file_atomic(dir_ + strfmt("/barrier-%d.%d", k, rank_), "");
        for (int r = 0; r < size_; r++) wait_for(dir_ + strfmt("/barrier-%d.%d", k, r), "barrier");
    }
    [[noreturn]] void abort(const std::string& why) override {
        fprintf(stderr, "error: rank %d: %s\n", rank_, why.c_str());
        std::exit(1);
    }

private:
    [[noreturn]] void refuse() { abort("the file bootstrap carries only NCCL's id; data collectives need MPI or NCCL"); }
    std::string wait_for(const std::string& path, const char* what) {
        const auto start = std::chrono::steady_clock::now();
        while (true) {
            std::ifstream f(path, std::ios::binary);
            if (f) return std::string(std::istreambuf_iterator<char>(f), {});
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            if (timeout_s_ > 0 && s > timeout_s_)
                abort(strfmt("%s: %s did not appear within %.0f s: another rank failed or stalled", what, path.c_str(),
                             timeout_s_));
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
    std::string dir_;
    int seq_ = 0;
    double timeout_s_;
};

}  // namespace

std::unique_ptr<Comm> make_single_comm() { return std::make_unique<SingleComm>(); }

std::unique_ptr<Comm> make_file_comm(const LaunchInfo& li, const std::string& dir, double timeout_s) {
    return std::make_unique<FileComm>(li, dir, timeout_s);
}

std::unique_ptr<Comm> make_mpi_comm(double timeout_s) {
#ifdef LNS_MPI
    return std::make_unique<MpiComm>(timeout_s);
#else
    (void)timeout_s;
    throw UserError("several ranks were launched, but this build has no MPI (install libopenmpi-dev and rebuild)");
#endif
}
