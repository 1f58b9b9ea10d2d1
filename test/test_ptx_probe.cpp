// The PTX probes (kernels/ptx_probe.cuh) against a host GEMM, on the CPU emulator and,
// where there is one, on the GPU. The flash kernels' emulated tests rest on the
// emulator reading ldmatrix, mma.sync, cp.async, wgmma, TMA and the 128-byte swizzle as
// the hardware does; the GPU
// half of this file checks exactly that, one instruction pattern at a time.
//
// Bound: bf16 x bf16 products are exact in fp32, so the only error is the fp32
// accumulation over at most 128 terms: one rounding per 16-term step in the emulator, the
// tensor core's own per-step rounding (or truncation) on hardware, at most 8 steps of
// 2^-23 relative to a partial sum below sum|terms|, itself under 12x max|C| for these
// N(0,1) inputs: < 1.2e-5 of the output's scale. Bound 1e-4. A wrong fragment or
// descriptor layout moves entries by O(1) of the scale.
#include <catch2/catch.hpp>

#if defined(LNS_CUDA) && !defined(ENABLE_FP32)
#define LNS_CUDA_EMU
#include "test/emu/cuda_emu.h"
// after the emulator
#include "kernels/ptx_probe.cuh"
#include "kernels/ptx_probe.h"
#include "test/emu/bf16_vec.h"
#include "test/test_util.h"

namespace {

const double PROBE_TOL = 1e-4;

Bf16Vec rand_matrix(int rows, int cols, uint64_t seed) { return Bf16Vec(randn((size_t)rows * cols, seed)); }

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
    Bf16Vec a = rand_matrix(16, 16, 700), bt = rand_matrix(16, 16, 701), bn = rand_matrix(16, 16, 702);
    static constexpr int a_rows = 13;  // rows 13..15 of A arrive as zeros
    std::vector<float> want_nt, want_nn;
    MmaCase() {
        std::vector<float> a0 = a.f;
        std::fill(a0.begin() + a_rows * 16, a0.end(), 0.0f);
        want_nt = gemm(a0, bt.f, 16, 16, 16, true), want_nn = gemm(a0, bn.f, 16, 16, 16, false);
    }
};

struct WgmmaCase {
    int n, k, dv;
    Bf16Vec a1, b1, a2, b2;
    std::vector<float> want_s, want_o;
    WgmmaCase(int n_, int k_, int dv_)
        : n(n_), k(k_), dv(dv_), a1(rand_matrix(64, k_, 710)), b1(rand_matrix(n_, k_, 711)),
          a2(rand_matrix(64, n_, 712)), b2(rand_matrix(n_, dv_, 713)) {
        want_s = gemm(a1.f, b1.f, 64, n, k, true), want_o = gemm(a2.f, b2.f, 64, dv, n, false);
    }
};
// The TMA forward's pattern: A's rows 100..127 lie outside its tensor (zeros); s takes
// A's second 64 rows, as the second consumer warpgroup does.
struct TmaCase {
    static constexpr int a_rows = 100;
    int d;
    Bf16Vec a, b1, b2, a2;
    std::vector<float> want_s, want_o, want_u;
    explicit TmaCase(int d_)
        : d(d_), a(rand_matrix(a_rows, d_, 720)), b1(rand_matrix(128, d_, 721)), b2(rand_matrix(128, d_, 722)),
          a2(rand_matrix(64, 128, 723)) {
        std::vector<float> a_hi((size_t)64 * d, 0.0f);  // rows 64..127, zero from a_rows on
        std::copy(a.f.begin() + (size_t)64 * d, a.f.end(), a_hi.begin());
        want_s = gemm(a_hi, b1.f, 64, 128, d, true), want_o = gemm(a2.f, b2.f, 64, d, 128, false);
        // u = 2 a[:, 0..63]^T b2[:, d-64..] over 128 rows (a zero from a_rows), in fp32
        std::vector<float> at((size_t)64 * 128, 0.0f), b2h((size_t)128 * 64);
        for (int k = 0; k < a_rows; k++)
            for (int m = 0; m < 64; m++) at[(size_t)m * 128 + k] = a.f[(size_t)k * d + m];
        for (int k = 0; k < 128; k++)
            for (int n = 0; n < 64; n++) b2h[(size_t)k * 64 + n] = b2.f[(size_t)k * d + d - 64 + n];
        want_u = gemm(at, b2h, 64, 64, 128, false);
        for (float& x : want_u) x *= 2.0f;
    }
};

// (N, K, DV) as the flash kernels use them: D = 64 (both passes), the forward at D = 128,
// the backward at D = 128
const int WGMMA_SHAPES[][3] = {{64, 64, 64}, {64, 128, 128}, {32, 128, 128}};

// got against the host GEMM's want (rows x cols) within PROBE_TOL; if not, where it is off
// (whole column blocks: a descriptor's stride; rows past 8 or 16: a fragment's layout)
void check_gemm(const std::vector<float>& got, const std::vector<float>& want, size_t rows, size_t cols) {
    const double err = max_rel_err(got, want);
    INFO("error " << err << off_at(got, want, rows, cols, err, PROBE_TOL));
    CHECK(err < PROBE_TOL);
}

}  // namespace

TEST_CASE("PTX probes on the CPU emulator match a host GEMM", "[flash][emulation]") {
    const MmaCase c;
    std::vector<float> nt(256, NAN), nn(256, NAN);
    probe_mma(nt.data(), nn.data(), c.a.v.data(), c.bt.v.data(), c.bn.v.data(), c.a_rows);
    check_gemm(nt, c.want_nt, 16, 16);
    check_gemm(nn, c.want_nn, 16, 16);
    for (const auto& sh : WGMMA_SHAPES) {
        const WgmmaCase w(sh[0], sh[1], sh[2]);
        std::vector<float> s((size_t)64 * w.n, NAN), o((size_t)64 * w.dv, NAN);
        REQUIRE(probe_wgmma_shape(w.n, w.k, w.dv, [&](auto N, auto K, auto DV) {
            probe_wgmma<decltype(N)::value, decltype(K)::value, decltype(DV)::value>(
                s.data(), o.data(), w.a1.v.data(), w.b1.v.data(), w.a2.v.data(), w.b2.v.data());
        }));
        INFO("n " << w.n << " k " << w.k << " dv " << w.dv);
        check_gemm(s, w.want_s, 64, w.n);
        check_gemm(o, w.want_o, 64, w.dv);
    }
    for (int d : {64, 128}) {
        const TmaCase t(d);
        std::vector<float> s(64 * 128, NAN), o((size_t)64 * d, NAN), u(64 * 64, NAN);
        if (d == 64)
            probe_tma<64>(s.data(), o.data(), u.data(), t.a.v.data(), t.a_rows, t.b1.v.data(), t.b2.v.data(),
                          t.a2.v.data());
        else
            probe_tma<128>(s.data(), o.data(), u.data(), t.a.v.data(), t.a_rows, t.b1.v.data(), t.b2.v.data(),
                           t.a2.v.data());
        INFO("tma d " << d);
        check_gemm(s, t.want_s, 64, 128);
        check_gemm(o, t.want_o, 64, d);
        check_gemm(u, t.want_u, 64, 64);
    }
}

TEST_CASE("PTX probes on the GPU match a host GEMM", "[gpu][flash]") {
    const MmaCase c;
    std::vector<float> nt(256, NAN), nn(256, NAN);
    REQUIRE(ptx_probe::mma(nt.data(), nn.data(), c.a.bits(), c.bt.bits(), c.bn.bits(), c.a_rows));
    INFO("ldmatrix + mma.sync (A B^T), then ldmatrix.trans (A B); cp.async zero-fill of A's last rows");
    check_gemm(nt, c.want_nt, 16, 16);
    check_gemm(nn, c.want_nn, 16, 16);
    for (const auto& sh : WGMMA_SHAPES) {
        const WgmmaCase w(sh[0], sh[1], sh[2]);
        std::vector<float> s((size_t)64 * w.n, NAN), o((size_t)64 * w.dv, NAN);
        if (!ptx_probe::wgmma(s.data(), o.data(), w.a1.bits(), w.b1.bits(), w.a2.bits(), w.b2.bits(), w.n, w.k, w.dv)) {
            WARN("no sm_90a kernels for this device: the wgmma probe did not run");
            break;
        }
        INFO("wgmma n " << w.n << " k " << w.k << " dv " << w.dv << ": K-major B1 (wgmma_nt), N-major B2 (wgmma_nn)");
        check_gemm(s, w.want_s, 64, w.n);
        check_gemm(o, w.want_o, 64, w.dv);
    }
    for (int d : {64, 128}) {
        const TmaCase t(d);
        std::vector<float> s(64 * 128, NAN), o((size_t)64 * d, NAN), u(64 * 64, NAN);
        if (!ptx_probe::tma(s.data(), o.data(), u.data(), t.a.bits(), t.a_rows, t.b1.bits(), t.b2.bits(), t.a2.bits(),
                            d)) {
            WARN("no sm_90a kernels for this device: the TMA probe did not run");
            break;
        }
        INFO("tma d " << d << ": TMA 128-byte swizzle with zero fill, A and B by descriptor (s), B N-major (o); "
                             "A M-major, bulk copy then bulk reduction (u)");
        check_gemm(s, t.want_s, 64, 128);
        check_gemm(o, t.want_o, 64, d);
        check_gemm(u, t.want_u, 64, 64);
    }
}

#endif
