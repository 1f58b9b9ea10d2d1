// The PTX probes (kernels/ptx_probe.cuh) against a host GEMM, on the CPU emulator and,
// where there is one, on the GPU. The flash kernels' emulated tests rest on the
// emulator reading ldmatrix, mma.sync, cp.async and wgmma as the hardware does; the GPU
// half of this file checks exactly that, one instruction pattern at a time.
//
// Bound: bf16 x bf16 products are exact in fp32, so the only error is fp32
// accumulation of at most 64 terms (the emulator rounds once per 16; tensor cores keep
// at least fp32 precision per step), < 64 * 2^-23 * sum|terms|, and sum|terms| is under
// 10x max|C| for these N(0,1) inputs: below 1e-4 of the output's scale. A wrong
// fragment or descriptor layout moves entries by O(1) of the scale.
#include <catch2/catch.hpp>

#if defined(LNS_CUDA) && !defined(ENABLE_FP32)
#define LNS_CUDA_EMU
#include "test/emu/cuda_emu.h"
// after the emulator
#include "kernels/ptx_probe.cuh"
#include "kernels/ptx_probe.h"
#include "test/test_util.h"

namespace {

const double PROBE_TOL = 1e-4;

struct Bf16Matrix {
    std::vector<bf16> v;
    std::vector<float> f;  // the same values in fp32
    Bf16Matrix(int rows, int cols, uint64_t seed) {
        for (float x : randn((size_t)rows * cols, seed)) {
            v.push_back(__float2bfloat16_rn(x));
            f.push_back(__bfloat162float(v.back()));
        }
    }
    const uint16_t* bits() const { return reinterpret_cast<const uint16_t*>(v.data()); }
};

// C (M x N) = A (M x K) times B, B given as N x K (transposed) or K x N
std::vector<float> gemm(const std::vector<float>& A, const std::vector<float>& B, int M, int N, int K, bool b_nk) {
    std::vector<float> C((size_t)M * N);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)A[m * K + k] * (b_nk ? B[n * K + k] : B[k * N + n]);
            C[m * N + n] = (float)s;
        }
    return C;
}

struct MmaCase {
    Bf16Matrix a{16, 16, 700}, bt{16, 16, 701}, bn{16, 16, 702};
    static constexpr int a_rows = 13;  // rows 13..15 of A arrive as zeros
    std::vector<float> want_nt, want_nn;
    MmaCase() {
        std::vector<float> a0 = a.f;
        std::fill(a0.begin() + a_rows * 16, a0.end(), 0.0f);
        want_nt = gemm(a0, bt.f, 16, 16, 16, true), want_nn = gemm(a0, bn.f, 16, 16, 16, false);
    }
};

struct WgmmaCase {
    int dv;
    Bf16Matrix q{64, 64, 710}, k{64, 64, 711}, v;
    std::vector<float> want_s, want_o;
    explicit WgmmaCase(int dv_) : dv(dv_), v(64, dv_, 712) {
        want_s = gemm(q.f, k.f, 64, 64, 64, true), want_o = gemm(q.f, v.f, 64, dv, 64, false);
    }
};

}  // namespace

TEST_CASE("PTX probes on the CPU emulator match a host GEMM", "[flash][emulation]") {
    const MmaCase c;
    std::vector<float> nt(256, NAN), nn(256, NAN);
    probe_mma(nt.data(), nn.data(), c.a.v.data(), c.bt.v.data(), c.bn.v.data(), c.a_rows);
    CHECK(max_rel_err(nt, c.want_nt) < PROBE_TOL);
    CHECK(max_rel_err(nn, c.want_nn) < PROBE_TOL);
    for (int dv : {64, 128}) {
        const WgmmaCase w(dv);
        std::vector<float> s(64 * 64, NAN), o((size_t)64 * dv, NAN);
        if (dv == 64) probe_wgmma<64>(s.data(), o.data(), w.q.v.data(), w.k.v.data(), w.v.v.data());
        else probe_wgmma<128>(s.data(), o.data(), w.q.v.data(), w.k.v.data(), w.v.v.data());
        INFO("dv " << dv);
        CHECK(max_rel_err(s, w.want_s) < PROBE_TOL);
        CHECK(max_rel_err(o, w.want_o) < PROBE_TOL);
    }
}

TEST_CASE("PTX probes on the GPU match a host GEMM", "[gpu][flash]") {
    const MmaCase c;
    std::vector<float> nt(256, NAN), nn(256, NAN);
    REQUIRE(ptx_probe::mma(nt.data(), nn.data(), c.a.bits(), c.bt.bits(), c.bn.bits(), c.a_rows));
    INFO("ldmatrix + mma.sync (A B^T), then ldmatrix.trans (A B); cp.async zero-fill of A's last rows");
    CHECK(max_rel_err(nt, c.want_nt) < PROBE_TOL);
    CHECK(max_rel_err(nn, c.want_nn) < PROBE_TOL);
    for (int dv : {64, 128}) {
        const WgmmaCase w(dv);
        std::vector<float> s(64 * 64, NAN), o((size_t)64 * dv, NAN);
        if (!ptx_probe::wgmma(s.data(), o.data(), w.q.bits(), w.k.bits(), w.v.bits(), dv)) {
            WARN("no sm_90 device: the wgmma probe did not run");
            break;
        }
        INFO("wgmma, dv " << dv << ": K-major K (S = Q K^T), N-major V (O = Q V)");
        CHECK(max_rel_err(s, w.want_s) < PROBE_TOL);
        CHECK(max_rel_err(o, w.want_o) < PROBE_TOL);
    }
}

#endif
