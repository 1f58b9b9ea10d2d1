// The flash attention kernels' own source (kernels/attention_flash.cuh), compiled for
// the host and run on the CPU emulator of test/emu, against the CPU twin with the
// [gpu] tests' bounds (test/flash_bounds.h). This checks the kernels' indexing,
// fragment layouts, masks, loop bounds, barriers and cp.async waits on machines
// without a GPU; speed, the compiler and the hardware's own rounding are left to the
// [gpu] tests.
#include <catch2/catch.hpp>

#if defined(LNS_CUDA) && !defined(ENABLE_FP32)
#define LNS_CUDA_EMU
#include "test/emu/cuda_emu.h"
// after the emulator
#include "cpu/cpu_backend.h"
#include "kernels/attention_flash.cuh"
#include "test/emu/bf16_vec.h"
#include "test/flash_bounds.h"
#include "test/test_util.h"

namespace {

struct Result {
    Bf16Vec out, dqkv;
    std::vector<float> lse;
};
Result run_emulated(const Bf16Vec& qkv, const Bf16Vec& dout, int B, int T, int NH, int hs, float theta,
                    emu::Order order, bool rope_on_load = false, bool wgmma = false) {
    const int C = NH * hs;
    Result r{Bf16Vec((size_t)B * T * C), Bf16Vec(qkv.v.size()), std::vector<float>((size_t)B * NH * T, NAN)};
    emu::set_order(order);
    flash_forward(r.out.v.data(), r.lse.data(), qkv.v.data(), B, T, C, NH, theta, rope_on_load, wgmma);
    flash_backward(r.dqkv.v.data(), dout.v.data(), qkv.v.data(), r.out.v.data(), r.lse.data(), B, T, C, NH, theta,
                   rope_on_load, wgmma);
    emu::set_order(emu::Order::forward);
    return r;
}

struct Shape {
    int B, T, NH, hs;
};

}  // namespace

TEST_CASE("the flash kernels, run on the CPU emulator, match the CPU twin", "[flash][emulation]") {
    // the [gpu] tests' T in {1, 7, 64, 257} for both head sizes, plus partial tiles of
    // the backward's 32-row inner tiles (T 130); T = 1024 is left to the GPU (minutes here)
    const Shape shapes[] = {{2, 1, 2, 64},  {2, 7, 3, 64},  {1, 64, 2, 64},  {1, 130, 2, 64}, {1, 257, 1, 64},
                            {2, 1, 2, 128}, {2, 7, 1, 128}, {1, 64, 2, 128}, {1, 130, 1, 128}, {1, 257, 1, 128}};
    // RoPE none, rotated before the kernels, rotated on load; then every product on wgmma
    for (const Shape& s : shapes)
        for (int variant = 0; variant < 5; variant++) {
            const int rope = variant % 3;
            const bool wgmma = variant >= 3;
            const float theta = rope ? 10000.0f : 0.0f;
            DYNAMIC_SECTION("B " << s.B << " T " << s.T << " NH " << s.NH << " hs " << s.hs << " rope "
                                 << (const char*[]){"none", "prepass", "on_load"}[rope]
                                 << (wgmma ? " wgmma" : "")) {
                const int C = s.NH * s.hs, BT = s.B * s.T;
                const Bf16Vec qkv(randn((size_t)BT * 3 * C, 600)), dout(randn((size_t)BT * C, 601));
                const auto &qkv_f = qkv.f, &dout_f = dout.f;
                std::vector<float> out((size_t)BT * C), lse((size_t)s.B * s.NH * s.T), dqkv(qkv_f.size());
                cpu_backend::attention_flash_forward(out.data(), lse.data(), qkv_f.data(), s.B, s.T, C, s.NH, theta);
                cpu_backend::attention_flash_backward(dqkv.data(), dout_f.data(), qkv_f.data(), out.data(), lse.data(),
                                                      s.B, s.T, C, s.NH, theta);
                const Result r =
                    run_emulated(qkv, dout, s.B, s.T, s.NH, s.hs, theta, emu::Order::forward, rope == 2, wgmma);
                const double e_out = max_rel_err(r.out.get(), out), e_lse = max_rel_err(r.lse, lse);
                INFO("out " << e_out << " lse " << e_lse);
                CHECK(e_out < FLASH_OUT_TOL);
                CHECK(e_lse < FLASH_LSE_TOL);
                const auto g = r.dqkv.get();
                for (int p = 0; p < 3; p++) {
                    const double err = max_rel_err(qkv_part(g, BT, C, p), qkv_part(dqkv, BT, C, p));
                    INFO("d" << "qkv"[p] << " error " << err);
                    CHECK(err < FLASH_GRAD_TOL);
                }
            }
        }
}

TEST_CASE("the flash kernels give the same bits whichever warp runs ahead", "[flash][emulation]") {
    // Warps read tiles other warps copied; the emulator runs the first warp (then the
    // last) as far ahead as the barriers allow. Without races the results are equal.
    // RoPE rotated before the kernels or in their loads rounds the same fp32 products
    // once, so those two agree bit for bit as well (the [gpu] tests check it on hardware).
    const int B = 1, T = 150, NH = 1;
    auto same = [](const Result& a, const Result& b) {
        return std::memcmp(a.out.v.data(), b.out.v.data(), a.out.v.size() * 2) == 0 &&
               std::memcmp(a.dqkv.v.data(), b.dqkv.v.data(), a.dqkv.v.size() * 2) == 0 && a.lse == b.lse;
    };
    for (int hs : {64, 128}) {
        const int C = NH * hs;
        const Bf16Vec qkv(randn((size_t)B * T * 3 * C, 610)), dout(randn((size_t)B * T * C, 611));
        std::vector<Result> first;
        for (int variant = 0; variant < 3; variant++) {  // RoPE rotated first, on load, on wgmma
            const bool on_load = variant == 1, wgmma = variant == 2;
            first.push_back(run_emulated(qkv, dout, B, T, NH, hs, 10000.0f, emu::Order::forward, on_load, wgmma));
            const Result last = run_emulated(qkv, dout, B, T, NH, hs, 10000.0f, emu::Order::reverse, on_load, wgmma);
            CHECK(same(first[variant], last));
        }
        CHECK(same(first[0], first[1]));
    }
}

#endif
