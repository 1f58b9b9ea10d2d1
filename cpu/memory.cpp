#include <cstdlib>
#include <cstring>

#include "cpu/cpu_backend.h"

void* cpu_backend::alloc(size_t bytes, const char* what) {
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded > 0 ? rounded : 64);
    REQUIRE_INPUT(p != nullptr, "out of host memory allocating %.3f GiB for %s: reduce --batch-size or the model size",
                  bytes / (1024.0 * 1024.0 * 1024.0), what);
    return p;
}
void cpu_backend::release(void* p) { std::free(p); }
void cpu_backend::zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }
void cpu_backend::copy_to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void cpu_backend::copy_from_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void cpu_backend::upload_f32(floatX* dst, const float* src, size_t n) { std::memcpy(dst, src, n * sizeof(float)); }
void cpu_backend::download_f32(float* dst, const floatX* src, size_t n) { std::memcpy(dst, src, n * sizeof(float)); }
