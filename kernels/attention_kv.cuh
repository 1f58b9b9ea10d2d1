// Attention of one new token against a KV cache, for sampling (see
// cpu/cpu_backend.h: attention_kv_forward). One block per head: rotate q and k,
// append k and v to the cache, then scores, softmax and the weighted sum of V over
// rows [0, pos], all in fp32 with fixed-order block reductions (deterministic).
// The kernel and its launch, used by attention_kv.cu.
#pragma once
#include <cmath>

#include "common/check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/rope.cuh"

namespace {
constexpr int KV_THREADS = 128;

// rope: the angles of qkv_permute (inv_freq from the host, pinned roundings), so a
// cached k row has the bits the full forward pass gives that position; rope_on false: none.
__global__ void attention_kv_kernel(floatX* out, floatX* kcache, floatX* vcache, const floatX* qkv, int pos, int C,
                                    int NH, int Tmax, bool rope_on, const __grid_constant__ RopeFreqs rope) {
    float* smem = reinterpret_cast<float*>(dynamic_smem());  // q (hs), scores (pos + 1), reduction scratch (32)
    const int h = blockIdx.x, hs = C / NH, h2 = hs / 2;
    float* q = smem;
    float* att = smem + hs;
    float* red = att + pos + 1;
    floatX* k_row = kcache + ((size_t)h * Tmax + pos) * hs;
    floatX* v_row = vcache + ((size_t)h * Tmax + pos) * hs;
    const floatX* qin = qkv + h * hs;
    const floatX* kin = qkv + C + h * hs;
    const floatX* vin = qkv + 2 * C + h * hs;
    for (int i = threadIdx.x; i < hs; i += blockDim.x) {
        if (rope_on) {
            // the same pairing and angle as the CPU: channel i with i + hs/2
            const int j = i < h2 ? i : i - h2;
            float s, c;
            rope_cos_sin(rope, pos, j, &c, &s);
            const float qa = to_float(qin[j]), qb = to_float(qin[j + h2]);
            const float ka = to_float(kin[j]), kb = to_float(kin[j + h2]);
            const float2 rq = rope_rotate(qa, qb, c, s), rk = rope_rotate(ka, kb, c, s);
            q[i] = i < h2 ? rq.x : rq.y;
            k_row[i] = from_float<floatX>(i < h2 ? rk.x : rk.y);
        } else {
            q[i] = to_float(qin[i]);
            k_row[i] = kin[i];
        }
        v_row[i] = vin[i];
    }
    __syncthreads();  // the new k row is in the cache and q in shared memory

    const float scale = rsqrtf((float)hs);
    float local_max = -INFINITY;
    for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
        const floatX* kt = kcache + ((size_t)h * Tmax + t) * hs;
        float dot = 0.0f;
        for (int i = 0; i < hs; i++) dot += q[i] * to_float(kt[i]);
        att[t] = dot * scale;
        local_max = fmaxf(local_max, att[t]);
    }
    // block max: warp maxima, then the first warp (fixed order)
    local_max = warp_max(local_max);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = local_max;
    __syncthreads();
    float maxv = -INFINITY;
    for (int w = 0; w < (int)blockDim.x / 32; w++) maxv = fmaxf(maxv, red[w]);
    __syncthreads();
    float local_sum = 0.0f;
    for (int t = threadIdx.x; t <= pos; t += blockDim.x) local_sum += att[t] = expf(att[t] - maxv);
    const float inv = 1.0f / block_sum(local_sum, red);
    __syncthreads();
    for (int i = threadIdx.x; i < hs; i += blockDim.x) {
        float o = 0.0f;
        for (int t = 0; t <= pos; t++) o += att[t] * inv * to_float(vcache[((size_t)h * Tmax + t) * hs + i]);
        out[h * hs + i] = from_float<floatX>(o);
    }
}

// The launch, used by attention_kv.cu.
void kv_forward(floatX* out, floatX* kcache, floatX* vcache, const floatX* qkv, int pos, int C, int NH, int Tmax,
                float rope_theta) {
    LNS_CHECK(pos >= 0 && pos < Tmax, "position %d outside the cache of %d rows", pos, Tmax);
    const int hs = C / NH;
    LNS_CHECK(!(rope_theta > 0) || (hs % 2 == 0 && hs / 2 <= MAX_ROPE_PAIRS),
              "attention_kv_forward: RoPE needs an even head dimension <= %d, got %d", 2 * MAX_ROPE_PAIRS, hs);
    const size_t bytes = (size_t)(hs + pos + 1 + 32) * sizeof(float);
    auto* kernel = attention_kv_kernel;
    if (bytes > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    const bool rope_on = rope_theta > 0;
    LNS_LAUNCH(kernel, NH, KV_THREADS, bytes, out, kcache, vcache, qkv, pos, C, NH, Tmax, rope_on,
               rope_on ? rope_freqs(hs, rope_theta) : RopeFreqs{});
    cudaCheckLaunch();
}
}  // namespace
