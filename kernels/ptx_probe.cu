// ptx_probe.h on the GPU: copies in, one launch of kernels/ptx_probe.cuh, copies out.
#include "kernels/ptx_probe.h"

#include <vector>

#include "kernels/cuda_common.cuh"

#ifndef ENABLE_FP32
#include "kernels/ptx_probe.cuh"

namespace {
// n elements of T on the device, freed at scope exit
template <class T>
struct Dev {
    T* p = nullptr;
    explicit Dev(size_t n, const void* init = nullptr) {
        cudaCheck(cudaMalloc(&p, n * sizeof(T)));
        if (init) cudaCheck(cudaMemcpy(p, init, n * sizeof(T), cudaMemcpyHostToDevice));
    }
    ~Dev() { cudaFree(p); }
    void get(T* dst, size_t n) const { cudaCheck(cudaMemcpy(dst, p, n * sizeof(T), cudaMemcpyDeviceToHost)); }
};
bool have_device() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}
}  // namespace

bool ptx_probe::mma(float* c_nt, float* c_nn, const uint16_t* a, const uint16_t* b_nt, const uint16_t* b_nn,
                    int a_rows) {
    if (!have_device()) return false;
    Dev<bf16> da(256, a), dbt(256, b_nt), dbn(256, b_nn);
    Dev<float> dnt(256), dnn(256);
    probe_mma(dnt.p, dnn.p, da.p, dbt.p, dbn.p, a_rows);
    cudaCheck(cudaStreamSynchronize(g_stream));
    dnt.get(c_nt, 256), dnn.get(c_nn, 256);
    return true;
}

bool ptx_probe::wgmma(float* s, float* o, const uint16_t* a1, const uint16_t* b1, const uint16_t* a2,
                      const uint16_t* b2, int n, int k, int dv) {
    if (!have_device() || !wgmma_built()) return false;
    Dev<bf16> da1((size_t)64 * k, a1), db1((size_t)n * k, b1), da2((size_t)64 * n, a2), db2((size_t)n * dv, b2);
    Dev<float> ds((size_t)64 * n), dout((size_t)64 * dv);
    const bool shape = probe_wgmma_shape(n, k, dv, [&](auto N, auto K, auto DV) {
        probe_wgmma<decltype(N)::value, decltype(K)::value, decltype(DV)::value>(ds.p, dout.p, da1.p, db1.p, da2.p,
                                                                                 db2.p);
    });
    if (!shape) return false;
    cudaCheck(cudaStreamSynchronize(g_stream));
    ds.get(s, (size_t)64 * n), dout.get(o, (size_t)64 * dv);
    return true;
}

bool ptx_probe::tma(float* s, float* o, float* u, const uint16_t* a, int a_rows, const uint16_t* b1,
                    const uint16_t* b2, const uint16_t* a2, int d) {
    if (!have_device() || !wgmma_built() || (d != 64 && d != 128)) return false;
    Dev<bf16> da((size_t)a_rows * d, a), db1((size_t)128 * d, b1), db2((size_t)128 * d, b2), da2(64 * 128, a2);
    Dev<float> ds(64 * 128), dout((size_t)64 * d), du(64 * 64);
    if (d == 64) probe_tma<64>(ds.p, dout.p, du.p, da.p, a_rows, db1.p, db2.p, da2.p);
    else probe_tma<128>(ds.p, dout.p, du.p, da.p, a_rows, db1.p, db2.p, da2.p);
    cudaCheck(cudaStreamSynchronize(g_stream));
    ds.get(s, 64 * 128), dout.get(o, (size_t)64 * d), du.get(u, 64 * 64);
    return true;
}

#else  // ENABLE_FP32: no bf16 tensor-core kernels

bool ptx_probe::mma(float*, float*, const uint16_t*, const uint16_t*, const uint16_t*, int) { return false; }
bool ptx_probe::wgmma(float*, float*, const uint16_t*, const uint16_t*, const uint16_t*, const uint16_t*, int, int,
                      int) {
    return false;
}

bool ptx_probe::tma(float*, float*, float*, const uint16_t*, int, const uint16_t*, const uint16_t*, const uint16_t*,
                    int) {
    return false;
}

#endif
