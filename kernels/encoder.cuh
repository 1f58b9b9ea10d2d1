// Token (and learned position) embeddings on the GPU.
//
// encoder_backward is deterministic without atomics: positions are bucketed by
// token id on the host in ascending position order, and one thread owns each
// (token, channel chunk) and sums that bucket's rows in order, starting from the
// gradient already there, exactly as the CPU twin does.
// The kernels and their launches, used by encoder.cu.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/check.h"
#include "kernels/cuda_common.cuh"

namespace {
constexpr int ENC_THREADS = 256;      // encoder_forward, dwpe
constexpr int ENC_BWD_THREADS = 128;  // dwte: channel chunks of one token per block


// VEC consecutive floatX as fp32: one 128-bit access when VEC is x128's width.
// One thread per VEC channels of one (b, t) row.
template <int VEC>
__global__ void encoder_forward_kernel(floatX* out, const int* inp, const floatX* wte, const floatX* wpe, int N,
                                       int T, int C) {
    const int chunks = C / VEC;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * chunks) return;
    const int bt = (int)(idx / chunks), c = (int)(idx % chunks) * VEC;
    float e[VEC];
    load_f<VEC>(e, wte + (size_t)inp[bt] * C + c);
    if (wpe) {
        float p[VEC];
        load_f<VEC>(p, wpe + (size_t)(bt % T) * C + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) e[k] += p[k];
    }
    store_f<VEC>(out + (size_t)bt * C + c, e);
}

// table = [tokens (U) | starts (U+1) | positions (N)]: bucket u holds token
// tokens[u] at positions[starts[u] .. starts[u+1]), ascending. Block (u, y) owns
// channel chunks y*blockDim .. of token u; each thread sums its chunk in order.
template <int VEC>
__global__ void encoder_backward_wte_kernel(floatX* dwte, const floatX* dout, const int* table, int U, int C) {
    const int u = blockIdx.x;
    const int j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= C / VEC) return;
    const int c = j * VEC;
    const int tok = table[u];
    const int p0 = table[U + u], p1 = table[U + u + 1];
    const int* pos = table + 2 * U + 1;
    floatX* dst = dwte + (size_t)tok * C + c;
    float acc[VEC];
    load_f<VEC>(acc, dst);
    for (int i = p0; i < p1; i++) {
        float d[VEC];
        load_f<VEC>(d, dout + (size_t)pos[i] * C + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) acc[k] += d[k];
    }
    store_f<VEC>(dst, acc);
}

// One thread per VEC channels of one position t: sums b = 0..B-1 in order.
template <int VEC>
__global__ void encoder_backward_wpe_kernel(floatX* dwpe, const floatX* dout, int B, int T, int C) {
    const int chunks = C / VEC;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)T * chunks) return;
    const int t = (int)(idx / chunks), c = (int)(idx % chunks) * VEC;
    floatX* dst = dwpe + (size_t)t * C + c;
    float acc[VEC];
    load_f<VEC>(acc, dst);
    for (int b = 0; b < B; b++) {
        float d[VEC];
        load_f<VEC>(d, dout + ((size_t)b * T + t) * C + c);
#pragma unroll
        for (int k = 0; k < VEC; k++) acc[k] += d[k];
    }
    store_f<VEC>(dst, acc);
}

// The launches, used by encoder.cu.
void enc_forward(floatX* out, const int* inp, const floatX* wte, const floatX* wpe, int B, int T, int C) {
    const int N = B * T;
    if (N <= 0 || C <= 0) return;
    constexpr int V8 = x128::size;
    const bool vec = C % V8 == 0 && aligned16(out) && aligned16(wte) && aligned16(wpe);
    auto* kernel = vec ? encoder_forward_kernel<V8> : encoder_forward_kernel<1>;
    LNS_LAUNCH(kernel, ceil_div((long)N * (vec ? C / V8 : C), ENC_THREADS), ENC_THREADS, 0, out, inp, wte, wpe, N, T,
               C);
    cudaCheckLaunch();
}

void enc_backward(floatX* dwte, floatX* dwpe, const floatX* dout, const int* inp, int B, int T, int C) {
    const int N = B * T;
    if (N <= 0 || C <= 0) return;
    // Bucket the positions by token on the host (the ids are N ints; this syncs):
    // a counting sort, so each bucket lists its positions in ascending order.
    std::vector<int> ids(N);
    cuda_backend::copy_to_host(ids.data(), inp, (size_t)N * sizeof(int));
    const auto [lo, hi] = std::minmax_element(ids.begin(), ids.end());
    LNS_CHECK(*lo >= 0, "encoder_backward: negative token id %d", *lo);
    std::vector<int> count((size_t)*hi + 2, 0);
    for (int id : ids) count[(size_t)id + 1]++;
    for (size_t id = 1; id < count.size(); id++) count[id] += count[id - 1];  // count[id]: first slot of id
    std::vector<int> tokens, starts;
    for (size_t id = 0; id + 1 < count.size(); id++)
        if (count[id + 1] > count[id]) tokens.push_back((int)id), starts.push_back(count[id]);
    starts.push_back(N);
    const int U = (int)tokens.size();
    std::vector<int> table(2 * (size_t)U + 1 + N);
    std::copy(tokens.begin(), tokens.end(), table.begin());
    std::copy(starts.begin(), starts.end(), table.begin() + U);
    int* positions = table.data() + 2 * U + 1;
    for (int i = 0; i < N; i++) positions[count[ids[i]]++] = i;
    int* d_table = (int*)cuda_scratch(SCRATCH_ENCODER, table.size() * sizeof(int));
    cuda_backend::copy_from_host(d_table, table.data(), table.size() * sizeof(int));

    constexpr int V8 = x128::size;
    const bool vec = C % V8 == 0 && aligned16(dwte) && aligned16(dwpe) && aligned16(dout);
    const int chunks = vec ? C / V8 : C;
    const int threads = std::min(ENC_BWD_THREADS, (chunks + 31) / 32 * 32);
    const dim3 grid(U, ceil_div(chunks, threads));
    auto* wte_kernel = vec ? encoder_backward_wte_kernel<V8> : encoder_backward_wte_kernel<1>;
    LNS_LAUNCH(wte_kernel, grid, threads, 0, dwte, dout, d_table, U, C);
    cudaCheckLaunch();
    if (dwpe) {
        auto* wpe_kernel = vec ? encoder_backward_wpe_kernel<V8> : encoder_backward_wpe_kernel<1>;
        LNS_LAUNCH(wpe_kernel, ceil_div((long)T * chunks, ENC_THREADS), ENC_THREADS, 0, dwpe, dout, B, T, C);
        cudaCheckLaunch();
    }
}

}  // namespace
