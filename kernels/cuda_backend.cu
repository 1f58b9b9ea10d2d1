// The CUDA backend's device state: the stream and library handles, grow-only
// scratch buffers, device memory, and host <-> device transfers (fp32 on the host,
// floatX on the device, converted on the device with round-to-nearest-even).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <type_traits>

#include "common/check.h"
#include "kernels/cuda_common.cuh"

cudaStream_t g_stream = nullptr;
cublasLtHandle_t g_cublaslt = nullptr;
cublasHandle_t g_cublas = nullptr;
cudaDeviceProp g_props = {};

namespace {
constexpr double GIB = 1024.0 * 1024.0 * 1024.0;
// Transfers convert at most this many elements per round through SCRATCH_CONVERT
// (64 MiB of fp32), so the staging buffer stays small whatever the tensor size.
constexpr size_t CONVERT_CHUNK = (size_t)1 << 24;
constexpr int CONVERT_THREADS = 256;

struct Scratch {
    void* ptr = nullptr;
    size_t bytes = 0;
};
Scratch g_scratch[NUM_SCRATCH];
int g_device = -1;  // the device init() selected; -1 before init

// Launched by nothing: init() asks for its attributes to learn whether this build
// carries code for the device at all.
__global__ void probe_kernel() {}

__global__ void f32_to_floatX_kernel(floatX* dst, const float* src, size_t n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = from_float<floatX>(src[i]);
}
__global__ void floatX_to_f32_kernel(float* dst, const floatX* src, size_t n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = to_float(src[i]);
}

constexpr bool FLOATX_IS_F32 = std::is_same<floatX, float>::value;
}  // namespace

void* cuda_scratch(ScratchSlot slot, size_t bytes) {
    LNS_CHECK((int)slot >= 0 && (int)slot < (int)NUM_SCRATCH, "scratch slot %d out of range", (int)slot);
    Scratch& s = g_scratch[slot];
    if (bytes > s.bytes) {
        // Kernels already queued may still use the old buffer: drain the stream first.
        cudaCheck(cudaStreamSynchronize(g_stream));
        if (s.ptr) cudaCheck(cudaFree(s.ptr));
        s.ptr = nullptr;
        s.bytes = 0;
        const size_t MIB = (size_t)1 << 20;
        const size_t want = (bytes + MIB - 1) / MIB * MIB;  // whole MiB: fewer regrowths
        s.ptr = cuda_backend::alloc(want, "a scratch buffer");
        s.bytes = want;
    }
    return s.ptr;
}

// ---- device, stream, handles

int cuda_backend::device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();  // no driver or no device: not an error here
        return 0;
    }
    return n;
}

void cuda_backend::init(int device) {
    if (g_device >= 0) {
        LNS_CHECK(device == g_device, "cuda_backend::init(%d) after init(%d): one device per process", device,
                  g_device);
        return;
    }
    const int count = device_count();
    REQUIRE_INPUT(count > 0, "no CUDA device found: use --device cpu");
    REQUIRE_INPUT(device >= 0 && device < count, "CUDA device %d does not exist (%d found)", device, count);
    cudaCheck(cudaSetDevice(device));
    cudaCheck(cudaGetDeviceProperties(&g_props, device));
    cudaFuncAttributes attr;
    const cudaError_t e = cudaFuncGetAttributes(&attr, probe_kernel);
    if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction) {
        (void)cudaGetLastError();
        throw UserError(strfmt("this build has no kernels for %s (sm_%d%d): rebuild on this machine "
                               "(make clean && make) or with make GPU_ARCH=%d%d%s",
                               g_props.name, g_props.major, g_props.minor, g_props.major, g_props.minor,
                               g_props.major == 9 && g_props.minor == 0 ? "a" : ""));
    }
    cudaCheck(e);
    cudaCheck(cudaStreamCreate(&g_stream));
    cublasCheck(cublasLtCreate(&g_cublaslt));
    cublasCheck(cublasCreate(&g_cublas));
    cublasCheck(cublasSetStream(g_cublas, g_stream));
    // Default math: tensor cores for bf16, and no TF32 for fp32 (the FP32 build stays fp32).
    cublasCheck(cublasSetMathMode(g_cublas, CUBLAS_DEFAULT_MATH));
    g_device = device;
    (void)attention_flash_has_wgmma();  // reads the device image's flag once, here, outside any stream work
}

void cuda_backend::describe(char* buf, size_t n) {
    if (buf == nullptr || n == 0) return;
    snprintf(buf, n, "%s, %.1f GiB, sm_%d%d", g_props.name, (double)g_props.totalGlobalMem / GIB, g_props.major,
             g_props.minor);
}

void cuda_backend::synchronize() { cudaCheck(cudaStreamSynchronize(g_stream)); }

// ---- memory

void* cuda_backend::alloc(size_t bytes, const char* what) {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes > 0 ? bytes : 1);  // never a null buffer
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();  // reported below; clear it so later calls do not see it
        size_t free_b = 0, total_b = 0;
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
        throw UserError(strfmt("out of GPU memory allocating %.3f GiB for %s (%.2f GiB free of %.2f GiB): "
                               "reduce --batch-size or --seq-len, or use --recompute",
                               (double)bytes / GIB, what, (double)free_b / GIB, (double)total_b / GIB));
    }
    cudaCheck(e);
    return p;
}

void cuda_backend::release(void* p) {
    if (p) cudaCheck(cudaFree(p));
}

void cuda_backend::zero(void* p, size_t bytes) {
    if (bytes) cudaCheck(cudaMemsetAsync(p, 0, bytes, g_stream));
}

void cuda_backend::copy_to_host(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g_stream));
    cudaCheck(cudaStreamSynchronize(g_stream));
}

void cuda_backend::copy_from_host(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g_stream));
    cudaCheck(cudaStreamSynchronize(g_stream));  // the caller may reuse src at once
}

// Chunks go through one staging buffer; stream order keeps a chunk's copy from
// overwriting the staging buffer before the previous chunk's conversion read it.
void cuda_backend::upload_f32(floatX* dst, const float* src, size_t n) {
    if constexpr (FLOATX_IS_F32) {
        copy_from_host(dst, src, n * sizeof(float));
        return;
    }
    if (n == 0) return;
    float* stage = (float*)cuda_scratch(SCRATCH_CONVERT, std::min(n, CONVERT_CHUNK) * sizeof(float));
    for (size_t off = 0; off < n; off += CONVERT_CHUNK) {
        const size_t k = std::min(CONVERT_CHUNK, n - off);
        cudaCheck(cudaMemcpyAsync(stage, src + off, k * sizeof(float), cudaMemcpyHostToDevice, g_stream));
        LNS_LAUNCH(f32_to_floatX_kernel, ceil_div((long)k, CONVERT_THREADS), CONVERT_THREADS, 0, dst + off, stage, k);
        cudaCheckLaunch();
    }
    cudaCheck(cudaStreamSynchronize(g_stream));
}

void cuda_backend::download_f32(float* dst, const floatX* src, size_t n) {
    if constexpr (FLOATX_IS_F32) {
        copy_to_host(dst, src, n * sizeof(float));
        return;
    }
    if (n == 0) return;
    float* stage = (float*)cuda_scratch(SCRATCH_CONVERT, std::min(n, CONVERT_CHUNK) * sizeof(float));
    for (size_t off = 0; off < n; off += CONVERT_CHUNK) {
        const size_t k = std::min(CONVERT_CHUNK, n - off);
        LNS_LAUNCH(floatX_to_f32_kernel, ceil_div((long)k, CONVERT_THREADS), CONVERT_THREADS, 0, stage, src + off, k);
        cudaCheckLaunch();
        cudaCheck(cudaMemcpyAsync(dst + off, stage, k * sizeof(float), cudaMemcpyDeviceToHost, g_stream));
    }
    cudaCheck(cudaStreamSynchronize(g_stream));
}
