// The emulated CUDA runtime: one device whose memory is host memory; see runtime_emu.h.
#ifdef LNS_CUDA
#include "test/emu/cuda_emu.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

namespace emu {

namespace {
// base address -> size of every live cudaMalloc allocation
std::map<uintptr_t, size_t>& allocations() {
    static std::map<uintptr_t, size_t> a;
    return a;
}
size_t g_in_use = 0;
// Behind every allocation, from its requested size to the next 256 bytes and 256 more: a
// red zone of this byte, checked after every launch, so a kernel writing past the end of
// a buffer is caught where it did it.
constexpr unsigned char RED = 0xA5;
constexpr size_t RED_EXTRA = 256;
size_t footprint(size_t bytes) { return (bytes + 255) / 256 * 256 + RED_EXTRA; }
int g_stream_token = 0;  // streams are its address: never null, never dereferenced

std::string hex(const void* p) {
    char b[32];
    snprintf(b, sizeof b, "%p", p);
    return b;
}

// The allocation holding address p: its (base, size), or null for host memory.
const std::pair<const uintptr_t, size_t>* containing(const void* p) {
    const uintptr_t a = (uintptr_t)p;
    auto it = allocations().upper_bound(a);
    if (it == allocations().begin()) return nullptr;
    --it;
    return a < it->first + it->second ? &*it : nullptr;
}
bool in_allocation(const void* p) { return containing(p) != nullptr; }

}  // namespace

void check_red_zones(const char* after) {
    for (const auto& [base, bytes] : allocations()) {
        const unsigned char* z = reinterpret_cast<const unsigned char*>(base) + bytes;
        const size_t n = footprint(bytes) - bytes;
        for (size_t i = 0; i < n; i++)
            if (z[i] != RED)
                throw Error(std::string(after) + " wrote past the end of a " + std::to_string(bytes) +
                            "-byte cudaMalloc allocation (first at byte " + std::to_string(bytes + i) + ")");
    }
}

// A device range [p, p + bytes) that starts inside an allocation must end inside it.
// Memory outside every allocation is the caller's host memory (tests hand host buffers
// to kernels as device memory), so only overruns of device buffers are caught.
void check_device_range(const void* p, size_t bytes, const char* what) {
    const auto* alloc = bytes ? containing(p) : nullptr;
    if (!alloc) return;
    const uintptr_t end = alloc->first + alloc->second;
    if ((uintptr_t)p + bytes > end)
        throw Error(std::string(what) + ": " + std::to_string(bytes) + " bytes at " + hex(p) + " run " +
                    std::to_string((uintptr_t)p + bytes - end) + " bytes past the end of a " +
                    std::to_string(alloc->second) + "-byte cudaMalloc allocation");
}
cudaError_t get_device_count(int* n) {
    *n = 1;
    return cudaSuccess;
}

cudaError_t set_device(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }

cudaError_t device_get_attribute(int* value, cudaDeviceAttr attr, int device) {
    if (device != 0) return cudaErrorInvalidDevice;
    if (attr != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
    cudaDeviceProp p;
    get_device_properties(&p, device);
    *value = p.multiProcessorCount;
    return cudaSuccess;
}

cudaError_t get_device_properties(cudaDeviceProp* p, int device) {
    if (device != 0) return cudaErrorInvalidDevice;
    *p = cudaDeviceProp{};
    snprintf(p->name, sizeof p->name, "CPU emulator");
    p->totalGlobalMem = DEVICE_BYTES;
    p->major = 9, p->minor = 0;  // it runs the sm_90a kernels (wgmma)
    p->multiProcessorCount = 132;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->sharedMemPerBlockOptin = SMEM_CAPACITY - 1024;
    p->sharedMemPerMultiprocessor = SMEM_CAPACITY;
    return cudaSuccess;
}

cudaError_t stream_create(cudaStream_t* s) {
    *s = reinterpret_cast<cudaStream_t>(&g_stream_token);
    return cudaSuccess;
}

cudaError_t stream_synchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t device_malloc(void** p, size_t bytes) {
    const size_t rounded = footprint(bytes);  // cudaMalloc's 256-byte alignment, and the red zone
    if (bytes == 0 || rounded > DEVICE_BYTES - g_in_use) return cudaErrorMemoryAllocation;
    unsigned char* q = static_cast<unsigned char*>(std::aligned_alloc(256, rounded));
    if (q == nullptr) return cudaErrorMemoryAllocation;
    std::memset(q, 0xff, bytes);  // NaN: undefined until written
    std::memset(q + bytes, RED, rounded - bytes);
    allocations()[(uintptr_t)q] = bytes;
    g_in_use += rounded;
    *p = q;
    return cudaSuccess;
}

cudaError_t device_free(void* p) {
    if (p == nullptr) return cudaSuccess;
    auto it = allocations().find((uintptr_t)p);
    if (it == allocations().end()) throw Error("cudaFree(" + hex(p) + "): not a pointer cudaMalloc returned");
    g_in_use -= footprint(it->second);
    allocations().erase(it);
    std::free(p);
    return cudaSuccess;
}

size_t device_bytes_in_use() { return g_in_use; }

cudaError_t mem_get_info(size_t* free_bytes, size_t* total_bytes) {
    *free_bytes = DEVICE_BYTES - g_in_use;
    *total_bytes = DEVICE_BYTES;
    return cudaSuccess;
}

cudaError_t memset_async(void* p, int value, size_t bytes, cudaStream_t) {
    check_device_range(p, bytes, "cudaMemsetAsync");
    std::memset(p, value, bytes);
    return cudaSuccess;
}

// The direction must be the pointers' (the CUDA documentation calls a wrong one undefined):
// device pointers lie in a cudaMalloc allocation, host pointers outside every one.
cudaError_t memcpy_async(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
    if (bytes == 0) return cudaSuccess;
    const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    const bool src_in = in_allocation(src), dst_in = in_allocation(dst);
    if (kind != cudaMemcpyDefault) {
        if (src_in != src_dev || dst_in != dst_dev)
            throw Error(std::string("cudaMemcpy: the source is ") + (src_in ? "device" : "host") +
                        " memory and the destination " + (dst_in ? "device" : "host") +
                        " memory, not what cudaMemcpyKind " + std::to_string((int)kind) + " says");
    }
    check_device_range(src, bytes, "cudaMemcpy source");
    check_device_range(dst, bytes, "cudaMemcpy destination");
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}

}  // namespace emu

#endif  // LNS_CUDA
