// NCCL for the emulated backend (see runtime_emu.h): the emulated ranks are processes
// under mpirun and their device memory is host memory, so each collective is the MPI
// collective on it. bf16 sums are computed in fp32 and rounded once, which for two
// ranks is what NCCL's bf16 addition gives; with more, NCCL rounds at every hop of its
// ring and the emulation is more exact than it. One rank needs no MPI: copies.
#ifdef LNS_CUDA
#include "test/emu/cuda_emu.h"

#include <string>
#include <vector>

#ifdef LNS_MPI
#include <mpi.h>
#endif

struct ncclComm {
    int rank = 0, size = 1;
#ifdef LNS_MPI
    MPI_Comm mpi = MPI_COMM_NULL;
#endif
};

namespace emu {

namespace {

size_t elem_bytes(ncclDataType_t t) {
    switch (t) {
    case ncclFloat: return 4;
    case ncclBfloat16: return 2;
    case ncclUint8: return 1;
    default: throw Error("emulated NCCL: data type " + std::to_string((int)t) + " is not emulated");
    }
}

std::vector<float> to_f32(const void* p, size_t n, ncclDataType_t t) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++)
        v[i] = t == ncclFloat ? static_cast<const float*>(p)[i]
                              : __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    return v;
}
void from_f32(void* p, const std::vector<float>& v, ncclDataType_t t) {
    for (size_t i = 0; i < v.size(); i++)
        if (t == ncclFloat) static_cast<float*>(p)[i] = v[i];
        else static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v[i]);
}

void check_sum(ncclDataType_t t, ncclRedOp_t op) {
    if (op != ncclSum) throw Error("emulated NCCL: only sums are emulated");
    if (t != ncclFloat && t != ncclBfloat16) throw Error("emulated NCCL: sums of fp32 and bf16 only");
}

#ifdef LNS_MPI
void mpi_check(int rc, const char* what) {
    if (rc != MPI_SUCCESS) throw Error(std::string("emulated NCCL: ") + what + " failed in MPI");
}
#endif

}  // namespace

ncclResult_t nccl_get_unique_id(ncclUniqueId* id) {
    *id = ncclUniqueId{};
    std::snprintf(id->internal, sizeof id->internal, "emulated");
    return ncclSuccess;
}

ncclResult_t nccl_comm_init_rank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
    if (std::string(id.internal) != "emulated") throw Error("ncclCommInitRank: an id ncclGetUniqueId did not make");
    if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    ncclComm* c = new ncclComm;
    c->rank = rank, c->size = nranks;
    if (nranks > 1) {
#ifdef LNS_MPI
        int inited = 0, size = 0, me = 0;
        MPI_Initialized(&inited);
        if (!inited) throw Error("emulated NCCL: " + std::to_string(nranks) + " ranks need mpirun");
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        MPI_Comm_rank(MPI_COMM_WORLD, &me);
        if (size != nranks || me != rank)
            throw Error("emulated NCCL: rank " + std::to_string(rank) + " of " + std::to_string(nranks) +
                        " is MPI rank " + std::to_string(me) + " of " + std::to_string(size));
        mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi), "MPI_Comm_dup");
#else
        throw Error("emulated NCCL: several ranks need an MPI build");
#endif
    }
    *comm = c;
    return ncclSuccess;
}

ncclResult_t nccl_comm_destroy(ncclComm_t comm) {
#ifdef LNS_MPI
    if (comm && comm->mpi != MPI_COMM_NULL) MPI_Comm_free(&comm->mpi);
#endif
    delete comm;
    return ncclSuccess;
}

ncclResult_t nccl_all_reduce(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                             ncclComm_t comm, cudaStream_t) {
    check_sum(t, op);
    const size_t bytes = count * elem_bytes(t);
    check_device_range(send, bytes, "ncclAllReduce send buffer");
    check_device_range(recv, bytes, "ncclAllReduce receive buffer");
    std::vector<float> v = to_f32(send, count, t);
#ifdef LNS_MPI
    if (comm->size > 1)
        mpi_check(MPI_Allreduce(MPI_IN_PLACE, v.data(), (int)count, MPI_FLOAT, MPI_SUM, comm->mpi), "all-reduce");
#endif
    from_f32(recv, v, t);
    return ncclSuccess;
}

ncclResult_t nccl_reduce_scatter(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                                 ncclComm_t comm, cudaStream_t) {
    check_sum(t, op);
    const size_t eb = elem_bytes(t);
    check_device_range(send, count * comm->size * eb, "ncclReduceScatter send buffer");
    check_device_range(recv, count * eb, "ncclReduceScatter receive buffer");
    std::vector<float> all = to_f32(send, count * comm->size, t), mine(all.begin(), all.begin() + count);
#ifdef LNS_MPI
    if (comm->size > 1)
        mpi_check(MPI_Reduce_scatter_block(all.data(), mine.data(), (int)count, MPI_FLOAT, MPI_SUM, comm->mpi),
                  "reduce-scatter");
#endif
    from_f32(recv, mine, t);
    return ncclSuccess;
}

ncclResult_t nccl_all_gather(const void* send, void* recv, size_t count, ncclDataType_t t, ncclComm_t comm,
                             cudaStream_t) {
    const size_t bytes = count * elem_bytes(t);
    check_device_range(send, bytes, "ncclAllGather send buffer");
    check_device_range(recv, bytes * comm->size, "ncclAllGather receive buffer");
    unsigned char* mine = static_cast<unsigned char*>(recv) + bytes * comm->rank;
    if (send != mine) std::memmove(mine, send, bytes);
#ifdef LNS_MPI
    if (comm->size > 1)
        mpi_check(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, (int)bytes, MPI_BYTE, comm->mpi),
                  "all-gather");
#endif
    return ncclSuccess;
}

ncclResult_t nccl_broadcast(const void* send, void* recv, size_t count, ncclDataType_t t, int root, ncclComm_t comm,
                            cudaStream_t) {
    const size_t bytes = count * elem_bytes(t);
    if (comm->rank == root) check_device_range(send, bytes, "ncclBroadcast send buffer");
    check_device_range(recv, bytes, "ncclBroadcast receive buffer");
    if (comm->rank == root && send != recv) std::memmove(recv, send, bytes);
#ifdef LNS_MPI
    if (comm->size > 1) mpi_check(MPI_Bcast(recv, (int)bytes, MPI_BYTE, root, comm->mpi), "broadcast");
#endif
    return ncclSuccess;
}

}  // namespace emu

#endif  // LNS_CUDA
