// Inline-PTX wrappers for the tensor-core kernels: ldmatrix, mma.sync, cp.async and named
// barriers (sm_80 and later); wgmma, mbarriers, TMA and setmaxnreg (sm_90a).
// test/emu/cuda_emu.h defines the same functions for the CPU emulator, which compiles
// only the address helpers below.
#pragma once
#include <cstdint>

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// Shared-memory matrix descriptor of wgmma, without swizzling: start address, and the
// byte offsets between 8 x 16-byte core matrices adjacent in K (lbo) and in M or N (sbo).
__device__ __forceinline__ uint64_t wgmma_desc(const void* p, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((smem_addr(p) & 0x3FFFF) >> 4) | (uint64_t)((lbo & 0x3FFFF) >> 4) << 16 |
           (uint64_t)((sbo & 0x3FFFF) >> 4) << 32;
}
// The same in the 128-byte swizzle mode (the layout TMA writes with SWIZZLE_128B): rows of
// 128 bytes, 16-byte chunk c of row r at chunk c ^ (r % 8) of 1024-byte-aligned 8-row
// atoms. K-major: lbo unused (16), sbo the bytes between 8-row groups; N-major: lbo the
// bytes between 64-element column blocks, sbo between 8-row groups along K.
__device__ __forceinline__ uint64_t wgmma_desc_sw128(const void* p, uint32_t lbo, uint32_t sbo) {
    return wgmma_desc(p, lbo, sbo) | (uint64_t)1 << 62;
}

#ifndef LNS_CUDA_EMU

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, register i
// receives it (lane l: row l/4, columns 2(l%4), +1; .trans: the transpose).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}
// c (16x8 fp32) += a (16x16 bf16, row) * b (16x8 bf16, col)
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared without a register round trip, completed by
// cp_async_wait; !valid writes 16 zero bytes and reads nothing (src-size 0).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}
// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Named barrier `id` (1..15; 0 is __syncthreads) of `count` threads, a multiple of 32:
// sync waits until count threads have synced or arrived, arrive does not wait.
// Constant ids: with an id in a register, ptxas reserves all 16 barriers.
template <int ID, int COUNT>
__device__ __forceinline__ void named_barrier_sync() {
    asm volatile("bar.sync %0, %1;\n" ::"n"(ID), "n"(COUNT) : "memory");
}
template <int ID, int COUNT>
__device__ __forceinline__ void named_barrier_arrive() {
    asm volatile("bar.arrive %0, %1;\n" ::"n"(ID), "n"(COUNT) : "memory");
}

// ---- Hopper (sm_90a): warpgroup MMA. The kernels that use these run only where
// the device is sm_90; other targets compile them to nothing.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LNS_SM90A 1
#else
#define LNS_SM90A 0
#endif
// Orders this thread's register (and shared-memory) writes before the next wgmma reads them.
__device__ __forceinline__ void wgmma_fence() {
#if LNS_SM90A
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if LNS_SM90A
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Waits until at most N committed wgmma groups are in flight; their accumulators are
// not to be read before.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if LNS_SM90A
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Shared memory written by ordinary stores or cp.async, read next by wgmma (the async proxy).
__device__ __forceinline__ void fence_proxy_async() {
#if LNS_SM90A
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Keeps the compiler from moving accesses of a wgmma's registers (accumulators, and A
// fragments a wgmma in flight still reads) across the fence, commit and wait, which are
// asm statements it cannot see through.
__device__ __forceinline__ void fence_register(float& x) { asm volatile("" : "+f"(x)::"memory"); }
__device__ __forceinline__ void fence_register(uint32_t& x) { asm volatile("" : "+r"(x)::"memory"); }
template <class T, int N>
__device__ __forceinline__ void wgmma_fence_operands(T (&d)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) fence_register(d[i][e]);
}
// The accumulator operands of a wgmma, d[NT][4] as NT * 4 "+f" registers in order: rows
// i..i+3 of d, then the whole of d for NT = 4, 8, 16.
#define LNS_WGMMA_D4_AT(d, i)                                                                                \
    "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3]), "+f"(d[i + 1][0]), "+f"(d[i + 1][1]),       \
        "+f"(d[i + 1][2]), "+f"(d[i + 1][3]), "+f"(d[i + 2][0]), "+f"(d[i + 2][1]), "+f"(d[i + 2][2]),       \
        "+f"(d[i + 2][3]), "+f"(d[i + 3][0]), "+f"(d[i + 3][1]), "+f"(d[i + 3][2]), "+f"(d[i + 3][3])
#define LNS_WGMMA_D4(d) LNS_WGMMA_D4_AT(d, 0)
#define LNS_WGMMA_D8(d) LNS_WGMMA_D4_AT(d, 0), LNS_WGMMA_D4_AT(d, 4)
#define LNS_WGMMA_D16(d) LNS_WGMMA_D8(d), LNS_WGMMA_D4_AT(d, 8), LNS_WGMMA_D4_AT(d, 12)

// d (64 x N fp32, this thread's N/2: the mma.sync accumulator layout for the warp's
// rows 16w..16w+15) += A (64 x 16 bf16 from registers: mma.sync A fragments of the
// warp's 16 rows) * B (16 x N bf16 in smem, desc_b; TRANS_B 0: K-major, 1: N-major).
template <int TRANS_B>
__device__ __forceinline__ void wgmma_bf16(float (&d)[4][4], const uint32_t (&a)[4], uint64_t desc_b) {
#if LNS_SM90A
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, {%16, %17, %18, %19}, %20, p, 1, 1, %22;\n}\n"
        : LNS_WGMMA_D4(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1), "n"(TRANS_B));
#endif
}
template <int TRANS_B>
__device__ __forceinline__ void wgmma_bf16(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc_b) {
#if LNS_SM90A
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "
        "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
        : LNS_WGMMA_D8(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1), "n"(TRANS_B));
#endif
}
template <int TRANS_B>
__device__ __forceinline__ void wgmma_bf16(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc_b) {
#if LNS_SM90A
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "
        "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, "
        "%34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, "
        "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
        : LNS_WGMMA_D16(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1), "n"(TRANS_B));
#endif
}
// d (64 x N fp32, as above) += A (64 x 16 bf16 in smem, desc_a) * B (16 x N in smem,
// desc_b): both operands by descriptor, no registers for A. TRANS_A / TRANS_B 0: K-major,
// 1: M- or N-major. N 32, 64 or 128.
template <int TRANS_A = 0, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_bf16_ss(float (&d)[4][4], uint64_t desc_a, uint64_t desc_b) {
#if LNS_SM90A
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
        "}, %16, %17, p, 1, 1, %19, %20;\n}\n"
        : LNS_WGMMA_D4(d)
        : "l"(desc_a), "l"(desc_b), "r"(1), "n"(TRANS_A), "n"(TRANS_B));
#endif
}
template <int TRANS_A = 0, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_bf16_ss(float (&d)[8][4], uint64_t desc_a, uint64_t desc_b) {
#if LNS_SM90A
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "
        "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
        "}, %32, %33, p, 1, 1, %35, %36;\n}\n"
        : LNS_WGMMA_D8(d)
        : "l"(desc_a), "l"(desc_b), "r"(1), "n"(TRANS_A), "n"(TRANS_B));
#endif
}
template <int TRANS_A = 0, int TRANS_B = 0>
__device__ __forceinline__ void wgmma_bf16_ss(float (&d)[16][4], uint64_t desc_a, uint64_t desc_b) {
#if LNS_SM90A
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, "
        "%18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, "
        "%34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, "
        "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, p, 1, 1, %67, %68;\n}\n"
        : LNS_WGMMA_D16(d)
        : "l"(desc_a), "l"(desc_b), "r"(1), "n"(TRANS_A), "n"(TRANS_B));
#endif
}

// ---- Hopper: mbarriers and the tensor memory accelerator (TMA). A transaction
// barrier (mbarrier) completes a phase when its expected arrivals have arrived and the
// bytes announced by arrive_expect_tx have landed; waiters name the phase by its parity.
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t arrivals) {
#if LNS_SM90A
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(arrivals) : "memory");
#endif
}
// The initialised barriers, visible to the other threads' and the TMA unit's accesses
// (followed by a block barrier).
__device__ __forceinline__ void fence_mbar_init() {
#if LNS_SM90A
    asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// One arrival, announcing `bytes` more bytes that copies will land in this phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#if LNS_SM90A
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#if LNS_SM90A
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
#endif
}
// Waits until the phase of the given parity has completed (the barrier's current phase
// has the other parity).
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#if LNS_SM90A
    uint32_t done = 0;
    while (!done)
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(smem_addr(bar)), "r"(parity)
            : "memory");
#endif
}
// A box of a 4-d tensor (tensor map `map`, a kernel parameter) at coordinates c0..c3
// (innermost first; outside the tensor: zeros) to smem at dst, completing its bytes on bar.
__device__ __forceinline__ void tma_load_4d(void* dst, const void* map, uint64_t* bar, int c0, int c1, int c2,
                                            int c3) {
#if LNS_SM90A
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(smem_addr(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_addr(bar))
        : "memory");
#endif
}
// Bulk copies from shared to global memory (the async proxy: the threads that wrote the
// source fence.proxy.async first), in bulk groups of the issuing thread. bytes: a
// multiple of 16, both addresses 16-byte aligned.
__device__ __forceinline__ void bulk_store(void* gdst, const void* ssrc, uint32_t bytes) {
#if LNS_SM90A
    asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(gdst), "r"(smem_addr(ssrc)),
                 "r"(bytes)
                 : "memory");
#endif
}
// gdst[i] += ssrc[i] in fp32, each element atomically (in the L2)
__device__ __forceinline__ void bulk_reduce_add(float* gdst, const float* ssrc, uint32_t bytes) {
#if LNS_SM90A
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(gdst),
                 "r"(smem_addr(ssrc)), "r"(bytes)
                 : "memory");
#endif
}
__device__ __forceinline__ void bulk_commit() {
#if LNS_SM90A
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
// Until at most N of this thread's bulk groups have yet to read their shared memory
// (it may then be overwritten) ...
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
#if LNS_SM90A
    asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
#endif
}
// ... or to complete their writes.
template <int N>
__device__ __forceinline__ void bulk_wait() {
#if LNS_SM90A
    asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
// A counter in global memory that orders blocks: one thread spins until it reads `value`
// (acquire), and the async proxy's later accesses (bulk copies) come after; add (release,
// after the fence: every access of the block that a barrier ordered before it) passes on.
__device__ __forceinline__ void semaphore_wait(const int* p, int value) {
#if LNS_SM90A
    int v;
    do {
        asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    } while (v != value);
    asm volatile("fence.proxy.async.global;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void semaphore_add(int* p, int value) {
#if LNS_SM90A
    asm volatile("fence.acq_rel.gpu;\nred.relaxed.gpu.global.add.s32 [%0], %1;\n" ::"l"(p), "r"(value) : "memory");
#endif
}
// The next number of a counter in global memory (zeroed before the launch): blocks that
// take their work by it take it in the order they start.
__device__ __forceinline__ int block_ticket(int* counter) { return atomicAdd(counter, 1); }
// For counters that reset themselves: t[0] the ticket counter, t[1] the blocks that have
// taken their last ticket. One thread per block calls this after its last block_ticket(t);
// the grid's last zeroes both, so that the next launch finds them zero.
__device__ __forceinline__ void block_tickets_done(int* t) {
    __threadfence();  // this block's tickets before its count
    if (atomicAdd(t + 1, 1) == (int)(gridDim.x * gridDim.y * gridDim.z) - 1) {
        __threadfence();  // every block's count (and so its tickets) before the reset
        atomicExch(t, 0), atomicExch(t + 1, 0);
    }
}
// The warpgroup's register budget per thread, raised or lowered (all its warps execute it).
template <int REGS>
__device__ __forceinline__ void setmaxnreg_inc() {
#if LNS_SM90A
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(REGS));
#endif
}
template <int REGS>
__device__ __forceinline__ void setmaxnreg_dec() {
#if LNS_SM90A
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(REGS));
#endif
}
#endif  // LNS_CUDA_EMU
