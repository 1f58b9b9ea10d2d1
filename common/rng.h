// A small deterministic RNG (splitmix64 seeding a xorshift64*), identical on every
// platform and compiler: the same seed gives the same weights everywhere.
#pragma once
#include <cmath>
#include <cstdint>

struct Rng {
    uint64_t state;
    explicit Rng(uint64_t seed) {
        uint64_t z = seed + 0x9E3779B97F4A7C15ull;  // splitmix64: spreads small seeds
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        state = (z ^ (z >> 31)) | 1;
    }
    uint64_t next_u64() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return state * 0x2545F4914F6CDD1Dull;
    }
    // uniform in (0, 1): 24 random bits, never 0 (safe for log)
    float uniform() { return ((next_u64() >> 40) + 0.5f) / 16777216.0f; }
    // standard normal, Box-Muller (one value per call, for simplicity)
    float normal() {
        float u1 = uniform(), u2 = uniform();
        return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.283185307179586f * u2);
    }
};
