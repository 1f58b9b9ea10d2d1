// NCCL over device buffers (the CUDA backend). The NCCL unique id travels over a
// bootstrap communicator (MPI under mpirun or srun with PMIx, files under plain srun,
// the single-process one for one rank). Blocking collectives run on the backend's
// stream; the asynchronous gradient all-reduce runs on a stream of its own, ordered
// after the backward kernels that produced the gradients, so it overlaps the rest of
// the backward pass. Waiting polls the stream and
// NCCL's asynchronous error with a time limit, so a failed peer aborts every rank
// instead of hanging.
#include <nccl.h>

#include <chrono>
#include <thread>

#include "comm/comm.h"
#include "common/check.h"
#include "kernels/cuda_common.cuh"

namespace {

void nccl_check(ncclResult_t r, const char* file, int line) {
    if (r != ncclSuccess && r != ncclInProgress) {
        fprintf(stderr, "%s:%d: NCCL error: %s\n  hint: NCCL_DEBUG=INFO shows the transport and the failing peer\n",
                file, line, ncclGetErrorString(r));
        std::exit(EXIT_FAILURE);
    }
}
#define ncclCheck(r) nccl_check((r), __FILE__, __LINE__)

ncclDataType_t nccl_type(DType t) { return t == DType::f32 ? ncclFloat : ncclBfloat16; }

class NcclComm : public Comm {
public:
    NcclComm(Comm& bootstrap, double timeout_s) : boot_(bootstrap), timeout_s_(timeout_s) {
        rank_ = bootstrap.rank(), size_ = bootstrap.size(), local_rank_ = bootstrap.local_rank();
        ncclUniqueId id;
        if (rank_ == 0) ncclCheck(ncclGetUniqueId(&id));
        boot_.broadcast(&id, sizeof id, 0);
        ncclCheck(ncclCommInitRank(&comm_, size_, id, rank_));
        cudaCheck(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
        cudaCheck(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
        cudaCheck(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    }
    ~NcclComm() override {
        if (pending_) cudaStreamSynchronize(comm_stream_);  // an error path left a reduction in flight
        ncclCommDestroy(comm_);
        cudaEventDestroy(ready_);
        cudaEventDestroy(done_);
        cudaStreamDestroy(comm_stream_);
    }
    const char* name() const override { return "nccl"; }

    void all_reduce_sum(void* buf, size_t n, DType t) override {
        ncclCheck(ncclAllReduce(buf, buf, n, nccl_type(t), ncclSum, comm_, g_stream));
        wait("all-reduce");
    }
    void reduce_scatter_sum(void* out, const void* in, size_t shard, DType t) override {
        ncclCheck(ncclReduceScatter(in, out, shard, nccl_type(t), ncclSum, comm_, g_stream));
        wait("reduce-scatter");
    }
    void all_gather(void* out, const void* in, size_t shard, DType t) override {
        ncclCheck(ncclAllGather(in, out, shard, nccl_type(t), comm_, g_stream));
        wait("all-gather");
    }
    void all_reduce_sum_start(void* buf, size_t n, DType t) override {
        cudaCheck(cudaEventRecord(ready_, g_stream));  // the gradients are written
        cudaCheck(cudaStreamWaitEvent(comm_stream_, ready_, 0));
        ncclCheck(ncclAllReduce(buf, buf, n, nccl_type(t), ncclSum, comm_, comm_stream_));
        pending_ = true;
    }
    void wait_all() override {
        if (!pending_) return;
        cudaCheck(cudaEventRecord(done_, comm_stream_));
        cudaCheck(cudaStreamWaitEvent(g_stream, done_, 0));
        pending_ = false;
        wait("gradient all-reduce");
    }
    void broadcast(void* buf, size_t bytes, int root) override {
        ncclCheck(ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_, g_stream));
        wait("broadcast");
    }
    void barrier() override {
        // a one-element all-reduce on the stream, then the host-side barrier
        void* one = cuda_scratch(SCRATCH_REDUCE, sizeof(float));
        all_reduce_sum(one, 1, DType::f32);
        boot_.barrier();
    }
    [[noreturn]] void abort(const std::string& why) override {
        ncclCommAbort(comm_);
        boot_.abort(why);
        std::exit(1);  // not reached: abort does not return
    }

private:
    // Waits for the stream, watching NCCL's asynchronous error and the clock.
    void wait(const char* what) {
        const auto start = std::chrono::steady_clock::now();
        while (true) {
            const cudaError_t q = cudaStreamQuery(g_stream);
            if (q == cudaSuccess) return;
            if (q != cudaErrorNotReady) cudaCheck(q);
            ncclResult_t async = ncclSuccess;
            ncclCheck(ncclCommGetAsyncError(comm_, &async));
            if (async != ncclSuccess && async != ncclInProgress)
                abort(strfmt("NCCL %s failed: %s", what, ncclGetErrorString(async)));
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            if (timeout_s_ > 0 && s > timeout_s_)
                abort(strfmt("NCCL %s did not complete within %.0f s: another rank failed or stalled", what, timeout_s_));
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }
    Comm& boot_;
    double timeout_s_;
    ncclComm_t comm_ = nullptr;
    cudaStream_t comm_stream_ = nullptr;
    cudaEvent_t ready_ = nullptr, done_ = nullptr;
    bool pending_ = false;
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(Comm& bootstrap, double timeout_s) {
    return std::make_unique<NcclComm>(bootstrap, timeout_s);
}
