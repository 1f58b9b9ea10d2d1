// Host tensors for the emulated tests: bf16 values, as the device stores them, beside
// the same values in fp32 for the CPU twin.
#pragma once
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <vector>

struct Bf16Vec {
    std::vector<__nv_bfloat16> v;
    std::vector<float> f;
    explicit Bf16Vec(const std::vector<float>& x) {  // rounded to nearest
        for (float a : x) v.push_back(__float2bfloat16_rn(a)), f.push_back(__bfloat162float(v.back()));
    }
    explicit Bf16Vec(size_t n) : v(n, __float2bfloat16_rn(NAN)), f(n, NAN) {}  // an output: NaN until written
    std::vector<float> get() const {  // v now, in fp32
        std::vector<float> r;
        for (__nv_bfloat16 a : v) r.push_back(__bfloat162float(a));
        return r;
    }
    const uint16_t* bits() const { return reinterpret_cast<const uint16_t*>(v.data()); }
};
