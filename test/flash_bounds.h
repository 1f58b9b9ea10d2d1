// Error bounds of the flash attention kernels against their CPU twin, shared by the
// [gpu] tests, which also run on the CPU emulator (test/emu).
#pragma once

// Inputs are rounded to bf16 first. Tolerances (bf16; the kernels pass them on an H200): the
// kernels round q and k to bf16 after RoPE (the CPU rotates in fp32), the probabilities and score gradients
// to bf16 before their products, and out, dq, dk, dv once on store; every product
// accumulates in fp32. These are the roundings of the first version less the stored
// scores plus the rotated q, k, so the same analysis holds: up to 2^-8 (typically 2^-9) per
// rounding, a few in series, measured 5.9e-3 (out) and 8.6e-3 (grads) for the first
// version. Sums over up to 1024 keys of rounded probabilities average the rounding
// errors rather than add them. Bounds 2e-2 on out, 3e-2 on dq, dk, dv. lse is a
// probability-weighted mean of the scores' errors (~2^-9 |score| from q, k rounding),
// bound 1e-2 of the tensor's scale.
inline constexpr double FLASH_OUT_TOL = 2e-2, FLASH_GRAD_TOL = 3e-2, FLASH_LSE_TOL = 1e-2;
