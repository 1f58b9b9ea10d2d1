#!/usr/bin/env python3
"""kernels/attention_flash.cu emulated on the CPU, statement by statement.

The machines that build this project have no GPU, so the flash kernels' index arithmetic
(ldmatrix addresses, mma.sync fragments, accumulator-to-operand re-packing, causal and
partial-tile masks, loop bounds, RoPE and its transpose) is checked here: ldmatrix and
mma.m16n8k16 follow the fragment layouts of the PTX ISA, every kernel is ported line by
line (lanes vectorised, warps and blocks in sequence, bf16 rounding where the kernel
rounds), and the results are compared with a float64 reference of the same function.
It checks neither races nor the compiler; the [gpu] tests do that where a GPU exists.
Keep it in step with attention_flash.cu when the kernels change.

usage: flash_emulation.py [--quick]    exit status 1 when an error exceeds the bounds of
test/test_cuda_matmul_attention.cpp (out 2e-2, lse 1e-2, dq dk dv 3e-2) or a NaN appears.
"""
import math
import sys

import numpy as np

WARPS, THREADS, BLOCK, PAD = 4, 128, 64, 8
LOG2E = 1.4426950408889634
LANES = np.arange(32)
G, TIG = LANES // 4, LANES % 4


def bf16(x):
    x = np.asarray(x, dtype=np.float32)
    b = x.view(np.uint32).astype(np.uint64)
    u = np.uint64
    b = ((b + u(0x7FFF) + ((b >> u(16)) & u(1))) & u(0xFFFF0000)).astype(np.uint32)
    return b.view(np.float32)


def f32(x):
    return np.asarray(x, dtype=np.float32)


# ---- PTX fragment semantics
def ldsm_x4(smem, addr, trans=False):
    """addr: (32,) element offsets into flat smem. Returns (32, 4, 2) values."""
    regs = np.zeros((32, 4, 2), np.float32)
    for i in range(4):
        M = np.stack([smem[addr[8 * i + r]: addr[8 * i + r] + 8] for r in range(8)])  # 8x8, row r from lane 8i+r
        for t in range(32):
            if not trans:
                regs[t, i] = M[t // 4, 2 * (t % 4): 2 * (t % 4) + 2]
            else:
                regs[t, i] = [M[2 * (t % 4), t // 4], M[2 * (t % 4) + 1, t // 4]]
    return regs


def mma(c, a, b0, b1):
    """c (32,4) fp32, a (32,4,2), b0/b1 (32,2): m16n8k16 row.col."""
    A = np.zeros((16, 16), np.float32)
    B = np.zeros((16, 8), np.float32)
    for t in range(32):
        g, q = t // 4, t % 4
        for j in range(2):
            A[g, 2 * q + j] = a[t, 0, j]
            A[g + 8, 2 * q + j] = a[t, 1, j]
            A[g, 8 + 2 * q + j] = a[t, 2, j]
            A[g + 8, 8 + 2 * q + j] = a[t, 3, j]
            B[2 * q + j, g] = b0[t, j]
            B[8 + 2 * q + j, g] = b1[t, j]
    Cm = np.zeros((16, 8), np.float32)
    for t in range(32):
        g, q = t // 4, t % 4
        for j in range(2):
            Cm[g, 2 * q + j] = c[t, j]
            Cm[g + 8, 2 * q + j] = c[t, 2 + j]
    Cm = f32(Cm + A.astype(np.float64) @ B.astype(np.float64))
    for t in range(32):
        g, q = t // 4, t % 4
        for j in range(2):
            c[t, j] = Cm[g, 2 * q + j]
            c[t, 2 + j] = Cm[g + 8, 2 * q + j]


def mma_ss_nt(acc, NT, K, smem, A, sa, Bm, sb):
    for kk in range(K // 16):
        a = ldsm_x4(smem, A + (LANES % 16) * sa + kk * 16 + (LANES // 16) * 8)
        for np_ in range(NT // 2):
            b = ldsm_x4(smem, Bm + (np_ * 16 + LANES % 8 + (LANES // 16) * 8) * sb + kk * 16 + (LANES // 8 % 2) * 8)
            mma(acc[:, 2 * np_], a, b[:, 0], b[:, 1])
            mma(acc[:, 2 * np_ + 1], a, b[:, 2], b[:, 3])


def mma_rs_nn(acc, NT, K, a, smem, Bm, sb):
    for kk in range(K // 16):
        for np_ in range(NT // 2):
            b = ldsm_x4(smem, Bm + (kk * 16 + LANES % 16) * sb + np_ * 16 + (LANES // 16) * 8, trans=True)
            mma(acc[:, 2 * np_], a[:, kk], b[:, 0], b[:, 1])
            mma(acc[:, 2 * np_ + 1], a[:, kk], b[:, 2], b[:, 3])


def acc_to_a(c, NT):
    a = np.zeros((32, NT // 2, 4, 2), np.float32)
    for kk in range(NT // 2):
        a[:, kk, 0] = bf16(c[:, 2 * kk, 0:2])
        a[:, kk, 1] = bf16(c[:, 2 * kk, 2:4])
        a[:, kk, 2] = bf16(c[:, 2 * kk + 1, 0:2])
        a[:, kk, 3] = bf16(c[:, 2 * kk + 1, 2:4])
    return a


def rope_cs(freqs, t, i):
    a = f32(np.float32(t) * freqs[i])
    return f32(np.cos(a)), f32(np.sin(a))


def load_tile(smem, base, D, ROWS, ROPE, src, ld, row0, T, freqs):
    """src: flat array, row t channel 0 at src_off + t*ld (src = (array, offset))."""
    arr, off = src
    H, CH, S = D // 2, D // 16, D + PAD
    for c in range(ROWS * CH):
        r, i0 = c // CH, (c % CH) * 8
        t = row0 + r
        if t < T:
            p = off + t * ld + i0
            lo, hi = arr[p: p + 8].copy(), arr[p + H: p + H + 8].copy()
            if ROPE:
                for k in range(8):
                    cs, sn = rope_cs(freqs, t, i0 + k)
                    a, b = lo[k], hi[k]
                    lo[k] = bf16(f32(a * cs) - f32(b * sn))
                    hi[k] = bf16(f32(b * cs) + f32(a * sn))
        else:
            lo, hi = np.zeros(8, np.float32), np.zeros(8, np.float32)
        smem[base + r * S + i0: base + r * S + i0 + 8] = lo
        smem[base + r * S + i0 + H: base + r * S + i0 + H + 8] = hi


def store_row(dst_arr, dst_off, acc, D, r, t, scale, ROPE, freqs, lanes_mask):
    for lane in range(32):
        if not lanes_mask[lane]:
            continue
        tig = lane % 4
        for nt in range(D // 16):
            a = [f32(acc[lane, nt, 2 * r + e] * scale) for e in range(2)]
            b = [f32(acc[lane, nt + D // 16, 2 * r + e] * scale) for e in range(2)]
            for e in range(2):
                if ROPE:
                    cs, sn = rope_cs(freqs, t[lane], nt * 8 + tig * 2 + e)
                    x = f32(f32(a[e] * cs) + f32(b[e] * sn))
                    b[e] = f32(f32(b[e] * cs) - f32(a[e] * sn))
                    a[e] = x
            o = dst_off[lane]
            dst_arr[o + nt * 8 + tig * 2: o + nt * 8 + tig * 2 + 2] = bf16(a)
            dst_arr[o + D // 2 + nt * 8 + tig * 2: o + D // 2 + nt * 8 + tig * 2 + 2] = bf16(b)


def quad_max(x):  # shfl_xor 1 then 2 across lanes
    x = np.maximum(x, x[LANES ^ 1])
    return np.maximum(x, x[LANES ^ 2])


def quad_sum(x):
    x = x + x[LANES ^ 1]
    return x + x[LANES ^ 2]


def forward(out, lse, qkv, freqs, B, T, NH, D, ROPE):
    S, C = D + PAD, NH * D
    scale = f32(1.0 / math.sqrt(D))
    sl2 = f32(scale * np.float32(LOG2E))
    ny = (T + BLOCK - 1) // BLOCK
    for bh in range(B * NH):
        for by in range(ny):
            smem = np.zeros(3 * BLOCK * S, np.float32)
            sQ, sK, sV = 0, BLOCK * S, 2 * BLOCK * S
            b, h = bh // NH, bh % NH
            qb = ny - 1 - by
            q0 = qb * BLOCK
            ld = 3 * C
            head = b * T * ld + h * D
            load_tile(smem, sQ, D, BLOCK, ROPE, (qkv, head), ld, q0, T, freqs)
            o = [np.zeros((32, D // 8, 4), np.float32) for _ in range(WARPS)]
            m = [np.full((32, 2), -np.inf, np.float32) for _ in range(WARPS)]
            l = [np.zeros((32, 2), np.float32) for _ in range(WARPS)]
            row = [np.stack([q0 + w * 16 + G, q0 + w * 16 + G + 8], 1) for w in range(WARPS)]
            for j in range(qb + 1):
                load_tile(smem, sK, D, BLOCK, ROPE, (qkv, head + C), ld, j * BLOCK, T, freqs)
                load_tile(smem, sV, D, BLOCK, False, (qkv, head + 2 * C), ld, j * BLOCK, T, freqs)
                for w in range(WARPS):
                    s = np.zeros((32, BLOCK // 8, 4), np.float32)
                    mma_ss_nt(s, BLOCK // 8, D, smem, sQ + w * 16 * S, S, sK, S)
                    if j == qb:
                        for nt in range(BLOCK // 8):
                            for e in range(4):
                                key = j * BLOCK + nt * 8 + TIG * 2 + e % 2
                                s[:, nt, e] = np.where(key > row[w][:, e // 2], -np.inf, s[:, nt, e])
                    for r in range(2):
                        mx = m[w][:, r].copy()
                        for nt in range(BLOCK // 8):
                            mx = np.maximum(mx, np.maximum(s[:, nt, 2 * r], s[:, nt, 2 * r + 1]))
                        mx = quad_max(mx)
                        with np.errstate(invalid="ignore"):
                            corr = f32(np.exp2(f32((m[w][:, r] - mx) * sl2)))
                        m[w][:, r] = mx
                        l[w][:, r] *= corr
                        o[w][:, :, 2 * r] *= corr[:, None]
                        o[w][:, :, 2 * r + 1] *= corr[:, None]
                        for nt in range(BLOCK // 8):
                            for e in (2 * r, 2 * r + 1):
                                s[:, nt, e] = f32(np.exp2(f32((s[:, nt, e] - mx) * sl2)))
                                l[w][:, r] += s[:, nt, e]
                    p = acc_to_a(s, BLOCK // 8)
                    mma_rs_nn(o[w], D // 8, BLOCK, p, smem, sV, S)
            for w in range(WARPS):
                for r in range(2):
                    l[w][:, r] = quad_sum(l[w][:, r])
                    valid = row[w][:, r] < T
                    dst = ((b * T + row[w][:, r]) * C + h * D)
                    for lane in range(32):
                        if valid[lane]:
                            store_row(out, np.full(32, dst[lane]), o[w], D, r, row[w][:, r], f32(1.0 / l[w][lane, r]),
                                      False, freqs, LANES == lane)
                            if lane % 4 == 0:
                                lse[bh * T + row[w][lane, r]] = m[w][lane, r] * scale + np.log(l[w][lane, r])


def dvec(Dv, dout, out, B, T, NH, D):
    for w in range(B * T * NH):
        h, bt = w % NH, w // NH
        x, y = dout[w * D:(w + 1) * D], out[w * D:(w + 1) * D]
        Dv[((bt // T) * NH + h) * T + bt % T] = f32(np.dot(x.astype(np.float64), y))


def dq_kernel(dqkv, dout, qkv, lse, Dv, freqs, B, T, NH, D, ROPE):
    S, C, KN = D + PAD, NH * D, (64 if D == 64 else 32)
    scale = f32(1.0 / math.sqrt(D))
    sl2 = f32(scale * np.float32(LOG2E))
    ny = (T + BLOCK - 1) // BLOCK
    for bh in range(B * NH):
        for by in range(ny):
            smem = np.zeros((2 * BLOCK + 2 * KN) * S, np.float32)
            sQ, sdO = 0, BLOCK * S
            sK = sdO + BLOCK * S
            sV = sK + KN * S
            b, h = bh // NH, bh % NH
            q0 = (ny - 1 - by) * BLOCK
            ld = 3 * C
            head = b * T * ld + h * D
            load_tile(smem, sQ, D, BLOCK, ROPE, (qkv, head), ld, q0, T, freqs)
            load_tile(smem, sdO, D, BLOCK, False, (dout, b * T * C + h * D), C, q0, T, freqs)
            row = [np.stack([q0 + w * 16 + G, q0 + w * 16 + G + 8], 1) for w in range(WARPS)]
            lse2 = [np.where(row[w] < T, lse[np.minimum(bh * T + row[w], len(lse) - 1)] * np.float32(LOG2E), 0).astype(np.float32) for w in range(WARPS)]
            dv = [np.where(row[w] < T, Dv[np.minimum(bh * T + row[w], len(Dv) - 1)], 0).astype(np.float32) for w in range(WARPS)]
            dq = [np.zeros((32, D // 8, 4), np.float32) for _ in range(WARPS)]
            tiles = (min(q0 + BLOCK, T) + KN - 1) // KN
            for j in range(tiles):
                load_tile(smem, sK, D, KN, ROPE, (qkv, head + C), ld, j * KN, T, freqs)
                load_tile(smem, sV, D, KN, False, (qkv, head + 2 * C), ld, j * KN, T, freqs)
                for w in range(WARPS):
                    s = np.zeros((32, KN // 8, 4), np.float32)
                    dp = np.zeros((32, KN // 8, 4), np.float32)
                    mma_ss_nt(s, KN // 8, D, smem, sQ + w * 16 * S, S, sK, S)
                    mma_ss_nt(dp, KN // 8, D, smem, sdO + w * 16 * S, S, sV, S)
                    for nt in range(KN // 8):
                        for e in range(4):
                            key = j * KN + nt * 8 + TIG * 2 + e % 2
                            r = e // 2
                            ok = (key <= row[w][:, r]) & (row[w][:, r] < T)
                            p = np.where(ok, np.exp2(f32(s[:, nt, e] * sl2 - lse2[w][:, r])), 0).astype(np.float32)
                            s[:, nt, e] = p * (dp[:, nt, e] - dv[w][:, r])
                    a = acc_to_a(s, KN // 8)
                    mma_rs_nn(dq[w], D // 8, KN, a, smem, sK, S)
            for w in range(WARPS):
                for r in range(2):
                    valid = row[w][:, r] < T
                    dst = (b * T + row[w][:, r]) * ld + h * D
                    store_row(dqkv, dst, dq[w], D, r, row[w][:, r], scale, ROPE, freqs, valid)


def dkv_kernel(dqkv, dout, qkv, lse, Dv, freqs, B, T, NH, D, ROPE):
    S, C, QN = D + PAD, NH * D, (64 if D == 64 else 32)
    scale = f32(1.0 / math.sqrt(D))
    sl2 = f32(scale * np.float32(LOG2E))
    ny = (T + BLOCK - 1) // BLOCK
    for bh in range(B * NH):
        for by in range(ny):
            smem = np.zeros((2 * BLOCK + 2 * QN) * S, np.float32)
            sK, sV = 0, BLOCK * S
            sQ = sV + BLOCK * S
            sdO = sQ + QN * S
            b, h = bh // NH, bh % NH
            k0 = by * BLOCK
            ld = 3 * C
            head = b * T * ld + h * D
            load_tile(smem, sK, D, BLOCK, ROPE, (qkv, head + C), ld, k0, T, freqs)
            load_tile(smem, sV, D, BLOCK, False, (qkv, head + 2 * C), ld, k0, T, freqs)
            key = [np.stack([k0 + w * 16 + G, k0 + w * 16 + G + 8], 1) for w in range(WARPS)]
            dk = [np.zeros((32, D // 8, 4), np.float32) for _ in range(WARPS)]
            dvv = [np.zeros((32, D // 8, 4), np.float32) for _ in range(WARPS)]
            i = k0 // QN
            while i * QN < T:
                load_tile(smem, sQ, D, QN, ROPE, (qkv, head), ld, i * QN, T, freqs)
                load_tile(smem, sdO, D, QN, False, (dout, b * T * C + h * D), C, i * QN, T, freqs)
                sL = np.zeros(QN, np.float32)
                sD = np.zeros(QN, np.float32)
                for r in range(QN):
                    t = i * QN + r
                    sL[r] = lse[bh * T + t] * np.float32(LOG2E) if t < T else 0
                    sD[r] = Dv[bh * T + t] if t < T else 0
                for w in range(WARPS):
                    s = np.zeros((32, QN // 8, 4), np.float32)
                    dp = np.zeros((32, QN // 8, 4), np.float32)
                    mma_ss_nt(s, QN // 8, D, smem, sK + w * 16 * S, S, sQ, S)
                    mma_ss_nt(dp, QN // 8, D, smem, sV + w * 16 * S, S, sdO, S)
                    for nt in range(QN // 8):
                        for e in range(4):
                            qi = nt * 8 + TIG * 2 + e % 2
                            q = i * QN + qi
                            ok = (q >= key[w][:, e // 2]) & (q < T)
                            p = np.where(ok, np.exp2(f32(s[:, nt, e] * sl2 - sL[qi])), 0).astype(np.float32)
                            s[:, nt, e] = p
                            dp[:, nt, e] = p * (dp[:, nt, e] - sD[qi])
                    a = acc_to_a(s, QN // 8)
                    mma_rs_nn(dvv[w], D // 8, QN, a, smem, sdO, S)
                    a = acc_to_a(dp, QN // 8)
                    mma_rs_nn(dk[w], D // 8, QN, a, smem, sQ, S)
                i += 1
            for w in range(WARPS):
                for r in range(2):
                    valid = key[w][:, r] < T
                    dst = (b * T + key[w][:, r]) * ld + h * D
                    store_row(dqkv, dst + C, dk[w], D, r, key[w][:, r], scale, ROPE, freqs, valid)
                    store_row(dqkv, dst + 2 * C, dvv[w], D, r, key[w][:, r], f32(1.0), False, freqs, valid)


# ---- float64 reference (the CPU twin's math)
def reference(qkv, dout, B, T, NH, D, theta):
    C = NH * D
    x = qkv.reshape(B, T, 3, NH, D).astype(np.float64)
    q, k, v = x[:, :, 0].transpose(0, 2, 1, 3), x[:, :, 1].transpose(0, 2, 1, 3), x[:, :, 2].transpose(0, 2, 1, 3)
    h2 = D // 2
    if theta > 0:
        inv = 1.0 / theta ** (np.arange(h2) * 2 / D)
        ang = np.arange(T)[:, None] * inv[None]
        cs, sn = np.cos(ang), np.sin(ang)
        rot = lambda y: np.concatenate([y[..., :h2] * cs - y[..., h2:] * sn, y[..., h2:] * cs + y[..., :h2] * sn], -1)
        unrot = lambda y: np.concatenate([y[..., :h2] * cs + y[..., h2:] * sn, y[..., h2:] * cs - y[..., :h2] * sn], -1)
    else:
        rot = unrot = lambda y: y
    qr, kr = rot(q), rot(k)
    sc = qr @ kr.transpose(0, 1, 3, 2) / math.sqrt(D)
    mask = np.tril(np.ones((T, T), bool))
    sc = np.where(mask, sc, -np.inf)
    mx = sc.max(-1, keepdims=True)
    lse = (mx + np.log(np.exp(sc - mx).sum(-1, keepdims=True)))[..., 0]
    P = np.exp(sc - lse[..., None])
    o = P @ v
    do = dout.reshape(B, T, NH, D).astype(np.float64).transpose(0, 2, 1, 3)
    dv = P.transpose(0, 1, 3, 2) @ do
    dP = do @ v.transpose(0, 1, 3, 2)
    Dd = (do * o).sum(-1, keepdims=True)
    dS = P * (dP - Dd) / math.sqrt(D)
    dq, dk = unrot(dS @ kr), unrot(dS.transpose(0, 1, 3, 2) @ qr)
    out = o.transpose(0, 2, 1, 3).reshape(B, T, C)
    dqkv = np.stack([dq, dk, dv], 2).transpose(0, 3, 2, 1, 4).reshape(B, T, 3 * C)
    return out, lse, dqkv


def rel(a, b):
    d = np.abs(b).max()
    return np.abs(a - b).max() / d if d > 0 else np.abs(a - b).max()


def main():
    cases = [(1, 1, 64, 0.0), (2, 7, 64, 10000.0), (1, 70, 64, 10000.0), (1, 130, 64, 0.0),
             (1, 7, 128, 10000.0), (1, 70, 128, 10000.0), (1, 97, 128, 0.0)]
    if "--quick" in sys.argv:  # every code path: T = 1, partial tiles, two blocks, both D, RoPE on and off
        cases = [(1, 1, 64, 0.0), (1, 70, 64, 10000.0), (1, 37, 128, 10000.0)]
    rng = np.random.default_rng(0)
    ok = True
    for B, T, D, theta in cases:
        NH = 2 if B == 1 else 1
        C = NH * D
        qkv = bf16(rng.standard_normal(B * T * 3 * C).astype(np.float32))
        dout = bf16(rng.standard_normal(B * T * C).astype(np.float32))
        freqs = np.array([f32(1.0 / np.power(np.float32(theta), np.float32(2 * i) / np.float32(D))) if theta > 0 else 0
                          for i in range(D // 2)], np.float32)
        out = np.full(B * T * C, np.nan, np.float32)
        lse = np.full(B * NH * T, np.nan, np.float32)
        forward(out, lse, qkv, freqs, B, T, NH, D, theta > 0)
        Dv = np.zeros(B * NH * T, np.float32)
        dvec(Dv, dout, out, B, T, NH, D)
        dqkv = np.full(B * T * 3 * C, np.nan, np.float32)
        dq_kernel(dqkv, dout, qkv, lse, Dv, freqs, B, T, NH, D, theta > 0)
        dkv_kernel(dqkv, dout, qkv, lse, Dv, freqs, B, T, NH, D, theta > 0)
        ro, rl, rd = reference(qkv, dout, B, T, NH, D, theta)
        g, rg = dqkv.reshape(B * T, 3, C), rd.reshape(B * T, 3, C)
        e = [rel(out, ro.ravel()), rel(lse, rl.ravel())] + [rel(g[:, p], rg[:, p]) for p in range(3)]
        nan = bool(np.isnan(out).any() or np.isnan(dqkv).any() or np.isnan(lse).any())
        good = not nan and e[0] < 2e-2 and e[1] < 1e-2 and max(e[2:]) < 3e-2
        ok = ok and good
        print(f"B={B} T={T} D={D} NH={NH} rope_theta={theta:g}: out {e[0]:.2e} lse {e[1]:.2e} dq {e[2]:.2e} "
              f"dk {e[3]:.2e} dv {e[4]:.2e}{' NaN' if nan else ''} {'ok' if good else 'FAILED'}", flush=True)
    print("flash emulation:", "ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
