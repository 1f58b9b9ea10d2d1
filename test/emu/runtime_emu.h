// The CUDA runtime, cuBLAS and cuBLASLt calls of the CUDA backend's host code, on the
// host, for the CPU emulator (included by cuda_emu.h). With them, kernels/*.cu compile
// as host C++ into an emulated backend (emu_backend, the Makefile's EMU_OBJ): the real
// backend's code from memory management to the matmuls' descriptors, every kernel on the
// emulator. What they check, where a GPU would fail or misbehave:
//   - device memory: cudaMalloc fills new memory with 0xFF (NaN in bf16 and fp32), so a
//     read before any write poisons the result; copies and memsets may not run past the
//     end of an allocation, and a kernel that writes past one (into the red zone behind
//     it) is named after its launch; copies must go the direction their kind says;
//     cudaFree takes only what cudaMalloc returned;
//   - cuBLASLt: the descriptors must describe one consistent problem (D's layout gives
//     m and n, A's gives k, B must agree, ld >= rows), the epilogue's pointers and aux
//     leading dimension as documented in cublasLt.h, and an algorithm is used only for
//     the problem and alignments the heuristic was asked about;
//   - C is not read when beta is 0 (cuBLAS's contract), so a NaN there does not leak.
//   - NCCL: the collectives of comm/nccl_comm.cu over MPI between the emulated ranks'
//     host memory (under mpirun), or as copies for one rank; buffers must hold the
//     counts asked for (an overrun of a cudaMalloc allocation is caught).
// Streams and events are a formality: every launch, copy and collective completes
// before it returns.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace emu {

constexpr size_t DEVICE_BYTES = (size_t)16 << 30;  // what cudaMemGetInfo reports

cudaError_t get_device_count(int* n);
cudaError_t set_device(int device);
cudaError_t get_device_properties(cudaDeviceProp* p, int device);
cudaError_t device_get_attribute(int* value, cudaDeviceAttr attr, int device);  // the SM count only
cudaError_t stream_create(cudaStream_t* s);
cudaError_t stream_synchronize(cudaStream_t s);
cudaError_t device_malloc(void** p, size_t bytes);
cudaError_t device_free(void* p);
cudaError_t mem_get_info(size_t* free_bytes, size_t* total_bytes);
cudaError_t memset_async(void* p, int value, size_t bytes, cudaStream_t s);
cudaError_t memcpy_async(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s);
size_t device_bytes_in_use();
// Throws when [p, p + bytes) starts inside a cudaMalloc allocation and runs past its end
// (memory outside every allocation is the caller's host memory).
void check_device_range(const void* p, size_t bytes, const char* what);
// Throws when anything wrote into the red zone behind an allocation; `after` names the
// culprit (launch checks after every kernel).
void check_red_zones(const char* after);

// cuBLAS: the strided batched GEMM (column-major, fp32 accumulation, bf16 or fp32 storage)
cublasStatus_t gemm_strided_batched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                    const void* alpha, const void* A, cudaDataType at, int lda, long long sa,
                                    const void* B, cudaDataType bt, int ldb, long long sb, const void* beta, void* C,
                                    cudaDataType ct, int ldc, long long sc, int batch, cublasComputeType_t,
                                    cublasGemmAlgo_t);

// cuBLASLt: descriptors, the heuristic and the matmul (epilogues DEFAULT, BIAS, GELU_AUX,
// GELU_AUX_BIAS and DGELU; anything else fails with emu::Error)
cublasStatus_t lt_matmul_desc_create(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale);
cublasStatus_t lt_matmul_desc_destroy(cublasLtMatmulDesc_t d);
cublasStatus_t lt_matmul_desc_set(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const void* buf,
                                  size_t size);
cublasStatus_t lt_layout_create(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows, uint64_t cols,
                                int64_t ld);
cublasStatus_t lt_layout_destroy(cublasLtMatrixLayout_t l);
cublasStatus_t lt_preference_create(cublasLtMatmulPreference_t* p);
cublasStatus_t lt_preference_destroy(cublasLtMatmulPreference_t p);
cublasStatus_t lt_preference_set(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr,
                                 const void* buf, size_t size);
cublasStatus_t lt_heuristic(cublasLtHandle_t, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                            cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                            cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t* results,
                            int* found);
cublasStatus_t lt_matmul(cublasLtHandle_t, cublasLtMatmulDesc_t op, const void* alpha, const void* A,
                         cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                         const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t d,
                         const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes, cudaStream_t);

// NCCL (comm/nccl_comm.cu's calls): sum reductions of fp32 and bf16 (summed in fp32,
// rounded to bf16 once), all-gather, and byte broadcast
ncclResult_t nccl_get_unique_id(ncclUniqueId* id);
ncclResult_t nccl_comm_init_rank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t nccl_comm_destroy(ncclComm_t comm);
ncclResult_t nccl_all_reduce(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                             ncclComm_t comm, cudaStream_t);
ncclResult_t nccl_reduce_scatter(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                                 ncclComm_t comm, cudaStream_t);
ncclResult_t nccl_all_gather(const void* send, void* recv, size_t count, ncclDataType_t t, ncclComm_t comm,
                             cudaStream_t);
ncclResult_t nccl_broadcast(const void* send, void* recv, size_t count, ncclDataType_t t, int root, ncclComm_t comm,
                            cudaStream_t);

}  // namespace emu

// ---- the runtime
#define cudaGetDeviceCount(n) emu::get_device_count(n)
#define cudaSetDevice(d) emu::set_device(d)
#define cudaGetDeviceProperties(p, d) emu::get_device_properties(p, d)
#define cudaGetDevice(d) (*(d) = 0, cudaSuccess)
#define cudaDeviceGetAttribute(v, attr, d) emu::device_get_attribute(v, attr, d)
#define cudaFuncGetAttributes(attr, kernel) ((void)(attr), (void)(kernel), cudaSuccess)
#define cudaStreamCreate(s) emu::stream_create(s)
#define cudaStreamSynchronize(s) emu::stream_synchronize(s)
#define cudaMalloc(p, bytes) emu::device_malloc(reinterpret_cast<void**>(p), (bytes))
#define cudaFree(p) emu::device_free(p)
#define cudaMemGetInfo(f, t) emu::mem_get_info(f, t)
#define cudaMemsetAsync(p, v, bytes, s) emu::memset_async(p, v, bytes, s)
#define cudaMemcpyAsync(dst, src, bytes, kind, s) emu::memcpy_async(dst, src, bytes, kind, s)
#define cudaMemcpy(dst, src, bytes, kind) emu::memcpy_async(dst, src, bytes, kind, nullptr)
#define cudaMemcpyFromSymbol(dst, symbol, bytes) (std::memcpy((dst), &(symbol), (bytes)), cudaSuccess)
#define cudaFuncSetAttribute(kernel, attr, value) \
    (emu::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), (size_t)(value)), cudaSuccess)
#define cudaGetLastError() cudaSuccess
#define cudaStreamCreateWithFlags(s, flags) ((void)(flags), emu::stream_create(s))
#define cudaStreamDestroy(s) ((void)(s), cudaSuccess)
#define cudaStreamQuery(s) ((void)(s), cudaSuccess)
#define cudaEventCreateWithFlags(e, flags) (*(e) = nullptr, (void)(flags), cudaSuccess)
#define cudaEventDestroy(e) ((void)(e), cudaSuccess)
#define cudaEventRecord(e, s) ((void)(e), (void)(s), cudaSuccess)
#define cudaStreamWaitEvent(s, e, flags) ((void)(s), (void)(e), (void)(flags), cudaSuccess)

// ---- NCCL
#define ncclGetUniqueId emu::nccl_get_unique_id
#define ncclCommInitRank emu::nccl_comm_init_rank
#define ncclCommDestroy emu::nccl_comm_destroy
#define ncclCommAbort emu::nccl_comm_destroy
#define ncclCommGetAsyncError(comm, err) ((void)(comm), *(err) = ncclSuccess, ncclSuccess)
#define ncclAllReduce emu::nccl_all_reduce
#define ncclReduceScatter emu::nccl_reduce_scatter
#define ncclAllGather emu::nccl_all_gather
#define ncclBroadcast emu::nccl_broadcast

// ---- cuBLAS and cuBLASLt (cublas_v2.h maps some names to their _v2 functions)
#undef cublasCreate
#undef cublasSetStream
#define cublasCreate(h) (*(h) = nullptr, CUBLAS_STATUS_SUCCESS)
#define cublasSetStream(h, s) ((void)(h), (void)(s), CUBLAS_STATUS_SUCCESS)
#define cublasSetMathMode(h, m) ((void)(h), (void)(m), CUBLAS_STATUS_SUCCESS)
#define cublasGemmStridedBatchedEx emu::gemm_strided_batched
#define cublasLtCreate(h) (*(h) = nullptr, CUBLAS_STATUS_SUCCESS)
#define cublasLtMatmulDescCreate emu::lt_matmul_desc_create
#define cublasLtMatmulDescDestroy emu::lt_matmul_desc_destroy
#define cublasLtMatmulDescSetAttribute emu::lt_matmul_desc_set
#define cublasLtMatrixLayoutCreate emu::lt_layout_create
#define cublasLtMatrixLayoutDestroy emu::lt_layout_destroy
#define cublasLtMatmulPreferenceCreate emu::lt_preference_create
#define cublasLtMatmulPreferenceDestroy emu::lt_preference_destroy
#define cublasLtMatmulPreferenceSetAttribute emu::lt_preference_set
#define cublasLtMatmulAlgoGetHeuristic emu::lt_heuristic
#define cublasLtMatmul emu::lt_matmul

// ---- the backend's own names, kept apart from the real backend's in the same binary
#define cuda_backend emu_backend
#define cuda_scratch emu_cuda_scratch
#define g_stream emu_g_stream
#define g_cublaslt emu_g_cublaslt
#define g_cublas emu_g_cublas
#define g_props emu_g_props
#define make_nccl_comm emu_make_nccl_comm
