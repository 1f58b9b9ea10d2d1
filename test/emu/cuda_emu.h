// A CPU emulator of the CUDA execution model, for running kernel source on machines
// without a GPU. Include it first in a translation unit compiled by the host compiler
// (with LNS_CUDA_EMU defined); the kernel headers included after it then compile as
// plain C++.
//
// What is emulated:
//   - every thread of a block is a fiber with its own stack (cuda_emu.cpp); blocks run one
//     after another (or, set_resident_blocks, a few at once, taking turns), each starting
//     with shared memory filled with 0xFF (NaN in bf16 and fp32), so a read before a
//     write poisons the result;
//   - __syncthreads is a block barrier; warp collectives (__shfl_xor/down_sync, ldmatrix,
//     mma.sync) wait until all 32 lanes of the warp arrive and are computed from the
//     PTX ISA's definitions of their fragment layouts;
//   - cp.async fills its destination with 0xFF at issue and copies the data at the
//     cp.async.wait_group that retires its group, so a read before the wait sees NaNs;
//     until a barrier, only the waiting thread may read what landed (ldmatrix and wgmma
//     fail otherwise), and wgmma also needs that thread's fence.proxy.async;
//   - wgmma (m64nNk16, bf16, A from registers, B from a no-swizzle descriptor) runs per
//     warp (.sync waits for the warp only: each warp reads B when it arrives, its 16 rows
//     of A and D), and decodes the descriptor by the PTX ISA's
//     canonical layouts; it needs a wgmma.fence since the thread's last wait, its
//     registers read NaN until the wgmma.wait_group that retires it, and later wgmmas
//     into the same registers chain on the pending values. A wait that retires one fails
//     if the operands' bytes in shared memory changed since the issue (the hardware reads
//     them until the wait); with WgmmaRetire::late it ends only when no thread can run on
//     (before TMA copies land), a warp at a time, so the other warps run ahead meanwhile;
//   - mbarriers (init, arrive, arrive.expect_tx, try_wait.parity) keep their arrival
//     count, transaction bytes and phase; a thread that waits for a phase blocks until
//     it completes. TMA tensor copies (cp.async.bulk.tensor, 128-byte swizzle) fill
//     their destination with 0xFF at issue and land, completing their bytes on the
//     barrier, only when no thread can run on (and then only those for barriers that a
//     thread waits on, if any), so a read before its wait, or after a wait on another
//     barrier, sees NaNs and a refill issued before the readers released the buffer is
//     caught (Landing::eager lands them at issue instead, so that consumers run as far
//     ahead as the barriers let them); the arrival or eager copy that completes a phase
//     lets its waiters run at once, ahead of the thread that completed it, and a TMA copy into shared memory that a wgmma not yet retired
//     by its wait reads fails (a buffer released too early);
//   - named barriers (bar.sync, bar.arrive with an id and a thread count): a sync blocks
//     until the count of threads have synced or arrived; a block that exits with a
//     named barrier partly arrived fails;
//   - wgmma with A from shared memory (both operands by descriptor), and descriptors in
//     the 128-byte swizzle mode (the layout TMA writes), decoded by the same canonical
//     layouts with the 16-byte chunk bits XORed by the 128-byte row bits of the address;
//   - bulk copies and reductions from shared to global memory (cp.async.bulk,
//     cp.reduce.async.bulk .add.f32) read their source at the wait_group.read that
//     retires them, once no thread can run on (after TMA copies land), and write at the
//     full wait_group, so a buffer released before the
//     read, or a semaphore passed on before the writes, is caught; a thread that exits
//     with bulk copies not waited for fails, as does a bulk copy onto global memory that
//     an earlier one of the thread has yet to write (their order is undefined);
//   - semaphores in global memory (blocks ordered by a counter): a wait blocks until the
//     counter reads its value (past it fails). With blocks one after another, a wait
//     that the block's own threads cannot end fails, as one on a block not yet started
//     would hang a GPU; with resident blocks, a wait that no resident block can end
//     (a deadlock);
//   - scheduling is warp-serial: the first warp in the chosen order runs until it
//     blocks on a barrier or exits before the next one runs, so a warp gets as far
//     ahead of the others as the code allows and a missing barrier lets it overwrite
//     a tile another warp still reads. Order::reverse runs the last warp first.
//
//   - a launch over 48 KiB of dynamic shared memory fails unless cudaFuncSetAttribute
//     raised the kernel's limit, as on a GPU;
//   - ldmatrix and cp.async count the shared-memory wavefronts and global sectors their
//     addresses need (mem_stats), so bank conflicts and uncoalesced loads show without a GPU.
//
// What is not: timing, the memory model beyond the above, bank conflicts, register
// limits, and the compiler's code generation. The [gpu] tests cover those.
#pragma once
#ifndef LNS_CUDA_EMU
#define LNS_CUDA_EMU  // kernel headers included after this one compile for the emulator
#endif
#include <cublas_v2.h>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <algorithm>
#include <functional>

// ---- the CUDA language, as host C++
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#undef __grid_constant__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
// static shared arrays are one per kernel instantiation, which serves every block as
// blocks run one after another (a declaration with blocks resident at once fails: see
// set_resident_blocks); dynamic shared memory is dynamic_smem()
#define __shared__ ::emu::static_shared(); static

namespace emu {

enum class Order { forward, reverse };
// When TMA copies land: as late as they may (when no thread can run on), or at once
enum class Landing { late, eager };
// When a wgmma.wait_group that retires a wgmma ends: at once (a warp that then reads what
// other threads should have stored first runs ahead of them), or as late as it may (the
// other warps run ahead meanwhile and may store onto its operands)
enum class WgmmaRetire { at_wait, late };

struct Index {
    unsigned x = 0, y = 0, z = 0;
};
extern Index block_idx, grid_dim, block_dim;
const Index& thread_idx();

constexpr size_t SMEM_CAPACITY = 228 * 1024;  // an H100/H200 SM's shared memory

// Runs fn once per thread of every block of the grid. smem is the translation unit's
// shared-memory array; smem_bytes the launch's dynamic size (accesses beyond it fail).
// Launches over 48 KiB of dynamic shared memory need set_max_dynamic_smem(kernel) first,
// as cudaFuncSetAttribute on a GPU.
void launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& fn, const void* kernel,
            const char* name);
void set_max_dynamic_smem(const void* kernel, size_t bytes);
void set_order(Order o);
void set_landing(Landing l);
void set_wgmma_retire(WgmmaRetire r);
// How many blocks of a launch run at once (default 1: one after another, in launch order).
// More run side by side, each with its own shared memory, as the blocks resident on a GPU
// do, so that blocks waiting on one another (semaphore_wait) can be tested: started in
// launch order and taking turns a step at a time, or (Order::reverse) started from the
// last block back, the newest that can go on first. Only
// for kernels whose shared memory is all dynamic: static __shared__ arrays are one per
// kernel here, so a thread that reaches such a declaration with more than one block
// resident fails.
void set_resident_blocks(int n);
// (what a __shared__ declaration runs first)
void static_shared();

// The memory accesses the emulator sees as warp instructions: shared-memory wavefronts of
// ldmatrix (ideal: 4 per .x4, one per matrix) and of cp.async's writes (ideal: 4 per warp
// instruction, a quarter-warp each), more meaning bank conflicts; and the 32-byte global
// sectors cp.async reads (ideal: its bytes / 32), more meaning uncoalesced loads. Plain
// loads and stores, and wgmma's reads through descriptors, are not counted.
struct MemStats {
    long ldmatrix = 0, ldmatrix_wavefronts = 0, cp_async = 0, cp_async_wavefronts = 0;
    long cp_async_sectors = 0, cp_async_sectors_min = 0;
};
MemStats mem_stats();
void reset_mem_stats();

void syncthreads();
uint32_t shfl(uint32_t v, int arg, bool down);  // xor with arg, or from lane + arg
void ldmatrix_x4(uint32_t (&r)[4], const void* p, bool trans);
void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
void cp_async_16(void* dst, const void* src, int src_bytes);
// wgmma.mma_async m64nNk16 bf16 -> f32, A from registers, B by descriptor (no swizzle)
void wgmma(float* d, int nt, const uint32_t (&a)[4], uint64_t desc_b, bool trans_b);
// the same with A (64 x 16; trans_a: M-major) by descriptor too
void wgmma_ss(float* d, int nt, uint64_t desc_a, uint64_t desc_b, bool trans_a, bool trans_b);
void wgmma_commit();
void wgmma_wait(int pending_groups);
// bar.sync / bar.arrive on named barrier id (1..15) of `count` threads
void named_barrier(int id, int count, bool wait);
void mbar_init(void* bar, unsigned arrivals);
void mbar_arrive(void* bar, unsigned tx_bytes);  // expect_tx(tx_bytes) and one arrival
void mbar_wait(void* bar, unsigned parity);
// cp.async.bulk.tensor of the box at coordinates c (innermost first) to dst
void tma_load(void* dst, const void* map, void* bar, const int (&c)[4]);
// cuTensorMapEncodeTiled for a 4-d bf16 tensor with SWIZZLE_128B, zero fill; throws Error
// where the driver would refuse the arguments
void encode_tensor_map(CUtensorMap* map, const void* base, const uint64_t (&dims)[4], const uint64_t (&strides)[3],
                       const uint32_t (&box)[4]);
// cp.async.bulk (add: cp.reduce.async.bulk .add.f32) of bytes from shared memory at src to
// global memory at dst, in the thread's bulk groups
void bulk_copy(void* dst, const void* src, uint32_t bytes, bool add);
void bulk_commit();
void bulk_wait(int pending_groups, bool read_only);
// a block-ordering counter in global memory: the wait blocks until it reads value
void semaphore_wait(const int* p, int value);
void semaphore_add(int* p, int value);
void wgmma_fence();
void fence_proxy_async();
uint32_t smem_offset(const void* p);
unsigned char* dynamic_smem();
void cp_async_commit();
void cp_async_wait(int pending_groups);

// Failures (a deadlock, an access outside the launch's shared memory, lanes that
// diverge at a collective) throw, so a test reports them.
struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx)
#define gridDim (emu::grid_dim)
#define blockDim (emu::block_dim)

inline void __syncthreads() { emu::syncthreads(); }
template <class T>
inline T emu_shfl(unsigned mask, T v, int arg, bool down) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "32- and 64-bit shuffles");
    if (mask != 0xffffffffu) throw emu::Error("warp shuffles: only full-warp masks are emulated");
    uint32_t u[sizeof(T) / 4];  // a 64-bit value moves as two 32-bit shuffles, as on the GPU
    std::memcpy(u, &v, sizeof(T));
    for (uint32_t& w : u) w = emu::shfl(w, arg, down);
    std::memcpy(&v, u, sizeof(T));
    return v;
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    return emu_shfl(mask, v, lane_mask, false);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta) {
    return emu_shfl(mask, v, (int)delta, true);
}
// a shuffle is a warp collective: every lane arrives before any goes on
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)emu_shfl(mask, 0u, 0, false); }
// Explicit roundings: each a separate fp32 rounding, as on the GPU. The empty asm makes the
// result opaque, so a build that contracts to FMA (EMU_FMA=1) cannot fuse them.
inline float emu_rounded(float r) {
#if defined(__x86_64__)
    asm("" : "+x"(r));
#else
    asm("" : "+w"(r));
#endif
    return r;
}
inline float __fmul_rn(float a, float b) { return emu_rounded(a * b); }
inline float __fadd_rn(float a, float b) { return emu_rounded(a + b); }
inline float __fsub_rn(float a, float b) { return emu_rounded(a - b); }
inline float __fmaf_rn(float a, float b, float c) { return emu_rounded(std::fma(a, b, c)); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, 4);
    return u;
}
template <class T>
inline T __ldcs(const T* p) {
    return *p;
}
using std::max;
using std::min;
inline uint32_t __cvta_generic_to_shared(const void* p) { return emu::smem_offset(p); }

// The runtime and libraries: kernels/*.cu compile for the emulator as well.
#include "test/emu/runtime_emu.h"

// kernel<<<grid, block, smem, stream>>>(args...) as a call per emulated thread
#define LNS_LAUNCH(kernel, grid, block, smem_bytes, ...) \
    emu::launch((grid), (block), (smem_bytes), [&] { (kernel)(__VA_ARGS__); }, reinterpret_cast<const void*>(kernel), \
                #kernel)

inline unsigned char* dynamic_smem() { return emu::dynamic_smem(); }

// The PTX wrappers of kernels/ptx.cuh, emulated.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) { emu::ldmatrix_x4(r, p, false); }
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) { emu::ldmatrix_x4(r, p, true); }
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    emu::mma_m16n8k16_bf16(c, a, b0, b1);
}
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
    emu::cp_async_16(dst, src, valid ? 16 : 0);
}
__device__ __forceinline__ void cp_async_commit() { emu::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    emu::cp_async_wait(N);
}
__device__ __forceinline__ void wgmma_fence() { emu::wgmma_fence(); }
__device__ __forceinline__ void fence_proxy_async() { emu::fence_proxy_async(); }
template <class T, int N>
__device__ __forceinline__ void wgmma_fence_operands(T (&)[N][4]) {}
__device__ __forceinline__ void wgmma_commit() { emu::wgmma_commit(); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    emu::wgmma_wait(N);
}
template <int TRANS_B, int NT>
__device__ __forceinline__ void wgmma_bf16(float (&d)[NT][4], const uint32_t (&a)[4], uint64_t desc_b) {
    emu::wgmma(&d[0][0], NT, a, desc_b, TRANS_B != 0);
}
template <int TRANS_A = 0, int TRANS_B = 0, int NT>
__device__ __forceinline__ void wgmma_bf16_ss(float (&d)[NT][4], uint64_t desc_a, uint64_t desc_b) {
    static_assert(NT == 4 || NT == 8 || NT == 16, "the wrapped shapes: m64n32k16, m64n64k16, m64n128k16");
    emu::wgmma_ss(&d[0][0], NT, desc_a, desc_b, TRANS_A != 0, TRANS_B != 0);
}
template <int ID, int COUNT>
__device__ __forceinline__ void named_barrier_sync() {
    emu::named_barrier(ID, COUNT, true);
}
template <int ID, int COUNT>
__device__ __forceinline__ void named_barrier_arrive() {
    emu::named_barrier(ID, COUNT, false);
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t arrivals) { emu::mbar_init(bar, arrivals); }
__device__ __forceinline__ void fence_mbar_init() {}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) { emu::mbar_arrive(bar, bytes); }
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) { emu::mbar_arrive(bar, 0); }
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) { emu::mbar_wait(bar, parity); }
__device__ __forceinline__ void tma_load_4d(void* dst, const void* map, uint64_t* bar, int c0, int c1, int c2,
                                            int c3) {
    emu::tma_load(dst, map, bar, {c0, c1, c2, c3});
}
__device__ __forceinline__ void bulk_store(void* gdst, const void* ssrc, uint32_t bytes) {
    emu::bulk_copy(gdst, ssrc, bytes, false);
}
__device__ __forceinline__ void bulk_reduce_add(float* gdst, const float* ssrc, uint32_t bytes) {
    emu::bulk_copy(gdst, ssrc, bytes, true);
}
__device__ __forceinline__ void bulk_commit() { emu::bulk_commit(); }
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
    emu::bulk_wait(N, true);
}
template <int N>
__device__ __forceinline__ void bulk_wait() {
    emu::bulk_wait(N, false);
}
__device__ __forceinline__ void semaphore_wait(const int* p, int value) { emu::semaphore_wait(p, value); }
__device__ __forceinline__ void semaphore_add(int* p, int value) { emu::semaphore_add(p, value); }
__device__ __forceinline__ int block_ticket(int* counter) { return (*counter)++; }  // blocks run in turn
__device__ __forceinline__ void block_tickets_done(int* t) {
    if (++t[1] == (int)(emu::grid_dim.x * emu::grid_dim.y * emu::grid_dim.z)) t[0] = t[1] = 0;
}
template <int REGS>
__device__ __forceinline__ void setmaxnreg_inc() {}
template <int REGS>
__device__ __forceinline__ void setmaxnreg_dec() {}
