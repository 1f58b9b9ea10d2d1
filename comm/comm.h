// Communication between ranks: the collectives the trainer needs, behind one small
// interface. Implementations: a single process (no-ops), MPI for host buffers (the
// CPU backend; OpenMPI), and NCCL for device buffers (bootstrapped over MPI).
// Every collective is blocking and has a time limit: a rank that fails or stalls
// makes every rank stop with a message instead of hanging.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

enum class DType { f32, bf16 };
size_t dtype_size(DType t);

class Comm {
public:
    virtual ~Comm() = default;
    int rank() const { return rank_; }
    int size() const { return size_; }
    int local_rank() const { return local_rank_; }  // rank within this node: picks the GPU
    virtual const char* name() const = 0;

    // in place: buf (n) = sum over ranks
    virtual void all_reduce_sum(void* buf, size_t n, DType t) = 0;
    // in (size*shard) on every rank -> out (shard) = sum over ranks of this rank's part
    virtual void reduce_scatter_sum(void* out, const void* in, size_t shard, DType t) = 0;
    // in (shard) on every rank -> out (size*shard), rank r's part at r*shard; in place
    // when in == out + rank*shard
    virtual void all_gather(void* out, const void* in, size_t shard, DType t) = 0;
    // Starts an in-place sum that is complete after the next wait_all(): the gradients
    // of one block are reduced while the backward pass goes on below it.
    virtual void all_reduce_sum_start(void* buf, size_t n, DType t) = 0;
    virtual void wait_all() = 0;
    virtual void broadcast(void* buf, size_t bytes, int root) = 0;
    virtual void barrier() = 0;
    // Ends every rank: the message is printed by this rank, the others are stopped.
    [[noreturn]] virtual void abort(const std::string& why) = 0;

protected:
    int rank_ = 0, size_ = 1, local_rank_ = 0;
};

// One rank, no communication.
std::unique_ptr<Comm> make_single_comm();
// MPI over host buffers. Needs the program to run under mpirun (or srun with PMIx);
// timeout_s bounds every collective (0: no limit). UserError when built without MPI.
std::unique_ptr<Comm> make_mpi_comm(double timeout_s);
// NCCL over device buffers, one GPU per rank (the caller selects it from local_rank);
// the unique id is broadcast over `bootstrap`, which must outlive the result. CUDA
// builds only.
std::unique_ptr<Comm> make_nccl_comm(Comm& bootstrap, double timeout_s);
// Who started this process. mpirun (OpenMPI) and srun with PMIx are MPI launches;
// plain srun without MPI support is `slurm`: rank and size come from SLURM_PROCID,
// SLURM_NTASKS and SLURM_LOCALID.
enum class Launcher { single, mpi, slurm };
struct LaunchInfo {
    Launcher kind = Launcher::single;
    int rank = 0, size = 1, local_rank = 0;
};
LaunchInfo detect_launch();
// Bootstrap without MPI (srun on GPUs): broadcast and barrier through small files in
// `dir`, which every rank must see (a shared file system). It carries only NCCL's
// unique id; data collectives are refused.
std::unique_ptr<Comm> make_file_comm(const LaunchInfo& li, const std::string& dir, double timeout_s);

// ZeRO-1: the contiguous part [begin, end) of n elements that rank r of `size` owns.
// Every element is owned by exactly one rank; parts differ in length by at most one
// `align` unit, and begin is a multiple of align (for 16-byte vector access).
struct ShardRange {
    size_t begin, end;
    size_t size() const { return end - begin; }
};
ShardRange shard_range(size_t n, int rank, int size, size_t align = 8);
