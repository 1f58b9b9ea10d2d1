// The emulator's scheduler and collectives; see cuda_emu.h. Built where the CUDA
// headers are (LNS_CUDA); no GPU is needed.
#ifdef LNS_CUDA
#include "test/emu/cuda_emu.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda_common.cuh"

namespace emu {

Index block_idx, grid_dim, block_dim;

namespace {

// ---- fibers: a saved context per emulated thread and one for the scheduler.
// On x86-64 a switch saves the callee-saved registers and the stack pointer (and the
// SSE/x87 control words) in a few instructions; ucontext's swapcontext would also make
// a signal-mask system call on every switch, most of the emulator's time. Elsewhere,
// ucontext.
#if defined(__x86_64__)
extern "C" void lns_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .globl lns_emu_switch
    .type lns_emu_switch, @function
lns_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr (%rsp)
    fnstcw 8(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 8(%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size lns_emu_switch, .-lns_emu_switch
)");

struct Context {
    void* sp = nullptr;
};
// A context that enters entry() (which must never return) on the given stack: the
// frame lns_emu_switch pops, with entry() as its return address.
void context_make(Context& c, char* stack, size_t bytes, void (*entry)()) {
    uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
    uint64_t* f = reinterpret_cast<uint64_t*>(top - 128);  // 16-aligned: entry() starts as if called
    uint32_t mxcsr = 0;
    uint16_t fpucw = 0;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    std::memset(f, 0, 128);
    f[0] = mxcsr, f[1] = fpucw;  // then r15, r14, r13, r12, rbx, rbp: zero
    f[8] = (uint64_t)(uintptr_t)entry;
    c.sp = f;
}
void context_switch(Context& from, Context& to) { lns_emu_switch(&from.sp, to.sp); }
// A parked context resumes with the SSE and x87 control words it saved; give it the
// caller's (a rounding mode set between launches reaches every emulated thread).
void context_refresh_fp(Context& c) {
    uint64_t* f = static_cast<uint64_t*>(c.sp);
    uint32_t mxcsr = 0;
    uint16_t fpucw = 0;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    f[0] = mxcsr, f[1] = fpucw;
}
#else
struct Context {
    ucontext_t uc;
};
void context_make(Context& c, char* stack, size_t bytes, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
void context_refresh_fp(Context&) {}  // ucontext keeps each context's own FP environment
#endif

constexpr size_t STACK_BYTES = 256 * 1024;

enum class State { ready, barrier, collective, mbarrier, named, bulk, semaphore, wgmma, done };
enum class Op { none, shfl, shfl_down, ldmatrix, ldmatrix_trans, mma, wgmma };

struct AsyncCopy {
    unsigned char* dst;
    const unsigned char* src;
    int bytes;  // read from src; the rest of the 16 is zero-filled
};

// An mbarrier: arrivals still expected in the current phase, transaction bytes still to
// land (negative when copies land before their expect_tx), completed phases.
struct MBarrier {
    unsigned expected = 0, pending = 0;
    long tx = 0;
    unsigned phase = 0;
};

// What encode_tensor_map stores in a CUtensorMap (128 opaque bytes on a GPU).
struct TensorMap {
    uint64_t magic;
    const unsigned char* base;
    uint64_t dims[4], strides[3];  // strides in bytes of dimensions 1..3
    uint32_t box[4];
};
constexpr uint64_t TENSOR_MAP_MAGIC = 0x4c4e53544d415034ull;
static_assert(sizeof(TensorMap) <= sizeof(CUtensorMap), "fits the opaque tensor map");

struct TmaCopy {
    unsigned char* dst;
    TensorMap map;
    int c[4];
    size_t bar;  // smem offset of the barrier its bytes complete on
};

// The shared-memory elements one warp's wgmma read, and their bytes then: the hardware may
// read them any time until the wait, so they must be the same at the wait that retires it.
struct WgmmaOperands {
    std::vector<uint32_t> off;
    std::vector<uint16_t> bits;
    size_t lo = SIZE_MAX, hi = 0;  // the bytes they span, [lo, hi): no TMA copy into them before the wait
    bool checked = false;          // by the warp's first lane to retire it (the warp waits as one)
};

struct WgmmaResult {
    float* dst;  // the thread's accumulator registers
    std::vector<float> value;
    std::shared_ptr<WgmmaOperands> operands;  // one per warp
};

// A thread's asynchronous operations of one kind (cp.async, wgmma) in commit groups:
// commit closes the open group; retire(n, complete) completes, in issue order, every
// operation of all but the newest n committed groups.
template <class Operation>
struct AsyncGroups {
    std::vector<std::pair<Operation, long>> ops;  // with its group, -1 while open
    long committed = 0;
    void issue(Operation op) { ops.push_back({std::move(op), -1}); }
    void commit() {
        for (auto& o : ops)
            if (o.second < 0) o.second = committed;
        committed++;
    }
    bool retires_any(int pending_groups) const {  // whether retire(pending_groups) completes one
        for (const auto& o : ops)
            if (o.second >= 0 && o.second < committed - pending_groups) return true;
        return false;
    }
    template <class Complete>
    void retire(int pending_groups, Complete&& complete) {
        const long retire_below = committed - pending_groups;
        std::vector<std::pair<Operation, long>> keep;
        for (auto& o : ops)
            if (o.second >= 0 && o.second < retire_below) complete(o.first);
            else keep.push_back(std::move(o));
        ops.swap(keep);
    }
    void clear() { ops.clear(), committed = 0; }
};

// A bulk copy from shared to global memory: its source must stay as it was at issue until
// the wait that retires it for reading; written at the wait that completes it.
struct BulkCopy {
    unsigned char* dst = nullptr;
    size_t src = 0;  // smem offset
    uint32_t bytes = 0;
    bool add = false, read = false;
    long group = -1;  // -1 while its group is open
    std::vector<unsigned char> data;
};

struct Thread {
    // Its fiber runs one emulated thread after another (fiber_loop); `parked` while it
    // waits between them, so starting the next needs no new context.
    Context ctx;
    std::unique_ptr<char[]> stack;
    bool parked = false;
    Index idx;
    State state = State::done;
    // the collective this lane waits in: its operands and, once the warp is complete, its results
    Op op = Op::none;
    int arg = 0;
    const void* ptr = nullptr;
    uint32_t in[6] = {};
    float acc[4] = {};
    uint32_t out[4] = {};
    AsyncGroups<AsyncCopy> copies;
    long cp_issued = 0;  // cp.async calls so far: the k-th of each lane is the warp's k-th instruction
    // wgmma operands: accumulators (as pending or in registers), B descriptor, shape
    std::vector<float> wg_acc;
    uint64_t desc = 0, desc_a = 0;
    bool a_smem = false;  // A by descriptor (desc_a), not from registers
    bool trans_a = false;  // ... M-major
    int nt = 0;
    bool trans = false;
    float* wg_dst = nullptr;
    AsyncGroups<WgmmaResult> wg_pending;
    bool wg_fenced = false;  // a wgmma.fence since the last wgmma.wait_group
    int named = 0;           // State::named: the named barrier waited at
    size_t mbar = 0;         // State::mbarrier: the barrier (smem offset) and the parity waited for
    unsigned mbar_parity = 0;
    std::vector<BulkCopy> bulk;  // bulk copies not yet written
    long bulk_committed = 0;
    int bulk_pending = 0;  // State::bulk: the wait_group's argument, and whether it is .read
    bool bulk_read_only = false;
    const int* sem = nullptr;  // State::semaphore: the counter and the value waited for
    int sem_value = 0;
};

struct Block {
    std::vector<Thread> threads;
    // per warp, per cp.async instruction: each lane's shared-memory destination (or null)
    // and global source (null when it copies nothing)
    struct CpLanes {
        std::array<const unsigned char*, 32> dst{}, src{};
    };
    std::vector<std::vector<CpLanes>> cp_lanes;
    // per 16-byte chunk of shared memory, filled by cp.async: the thread whose wait
    // landed it while no barrier has published it since (-1: published or never copied),
    // the thread that landed it last, and whether that thread has fenced it for the
    // async proxy (wgmma) since
    std::vector<int> unpublished, lander;
    std::vector<char> proxy_fenced;
    // the shared memory as the async proxy (wgmma's descriptors, bulk copies) sees it: its
    // own writes (TMA) land in both, ordinary stores only through a fence.proxy.async. A
    // fence by any thread brings over every store so far: a fence missing in some threads
    // only is not caught, one missing in all is.
    std::vector<unsigned char> async_view;
    std::map<size_t, MBarrier> mbars;  // by smem offset
    struct Named {
        int count = 0, arrived = 0;  // threads expected and arrived in the current use
    };
    std::array<Named, 16> named;
    std::vector<TmaCopy> tma_pending;
    // threads an arrival just let through an mbarrier: they run next, before the arriving
    // warp's other lanes, as a GPU may run them
    std::vector<Thread*> priority;
    Context scheduler;
    Thread* current = nullptr;
    const std::function<void()>* fn = nullptr;
    unsigned char* smem = nullptr;
    size_t smem_bytes = 0;
    Index idx;  // its blockIdx
    unsigned long seq = 0;  // its place in the launch order
    std::vector<unsigned char> own_smem;  // (resident blocks) its shared memory, aligned within
};
// The blocks of a launch that may run at once (set_resident_blocks), and the one running.
std::vector<std::unique_ptr<Block>> g_blocks = [] {
    std::vector<std::unique_ptr<Block>> v;
    v.push_back(std::make_unique<Block>());
    return v;
}();
Block* g = g_blocks[0].get();
Order g_order = Order::forward;
Landing g_landing = Landing::late;
WgmmaRetire g_wgmma_retire = WgmmaRetire::at_wait;
int g_resident = 1;
int g_launch_resident = 1;  // the running launch's resident blocks

MemStats g_stats;

// Shared-memory wavefronts of 8 accesses of 16 bytes (an ldmatrix matrix, or one phase of
// a warp's 128-bit accesses): 32 banks of 4 bytes are 8 groups of 16 bytes, and a
// wavefront serves one 16-byte chunk per group; the same chunk twice is one access.
int wavefronts8(const unsigned char* const (&chunk)[8], int n = 8) {
    int per_group[8] = {0};
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int j = 0; j < i; j++) seen = seen || chunk[j] == chunk[i];
        if (!seen) per_group[((uintptr_t)chunk[i] / 16) % 8]++;
    }
    int w = 1;
    for (int n : per_group) w = std::max(w, n);
    return w;
}

// The failure of thread t of the running block (the current one by default).
[[noreturn]] void fail_at(const Thread* t, const std::string& what) {
    throw Error("emulated block (" + std::to_string(block_idx.x) + "," + std::to_string(block_idx.y) +
                ") thread " + std::to_string(t ? t->idx.x : 0) + ": " + what);
}
[[noreturn]] void fail(const std::string& what) { fail_at(g->current, what); }

int tid_of(const Thread* t) { return (int)(t - g->threads.data()); }
size_t chunk_of(const void* p) { return (size_t)(static_cast<const unsigned char*>(p) - g->smem) / 16; }

void check_smem(const void* p, size_t bytes, const char* op) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    if (c < g->smem || c + bytes > g->smem + g->smem_bytes)
        fail(std::string(op) + ": shared-memory access at offset " + std::to_string((long)(c - g->smem)) +
             " outside the launch's " + std::to_string(g->smem_bytes) + " bytes");
    if ((uintptr_t)c % 16 != 0) fail(std::string(op) + ": shared-memory address not 16-byte aligned");
}

// Leaves the fiber for the scheduler until it is made ready again.
void block_on(State s) {
    Thread* t = g->current;
    t->state = s;
    context_switch(t->ctx, g->scheduler);
}

// Errors inside a fiber cannot unwind through a context switch; they are carried out
// to the scheduler and rethrown there.
std::string g_error;

// A fiber's whole life: the emulated threads the scheduler starts on it, one by one.
[[noreturn]] void fiber_loop() {
    for (;;) {
        g->current->parked = false;
        try {
            (*g->fn)();
            if (!g->current->bulk.empty())
                throw Error("thread " + std::to_string(tid_of(g->current)) +
                            " exits with bulk copies it has not waited for (cp.async.bulk.wait_group)");
        } catch (const std::exception& e) {
            g_error = e.what();
        }
        g->current->state = State::done;
        g->current->parked = true;
        context_switch(g->current->ctx, g->scheduler);
    }
}

float bf16_lo(uint32_t r) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(r & 0xffff))); }
float bf16_hi(uint32_t r) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(r >> 16))); }

// The 16 x 16 A operand of a warp's m16n8k16 fragments (lanes[l].in[0..3]), g = lane/4,
// t = lane%4: a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..); wgmma takes
// each warp's 16 rows of A from registers in the same layout.
void unpack_a(const Thread* lanes, float (&A)[16][16]) {
    for (int l = 0; l < 32; l++) {
        const int gr = l / 4, t = l % 4;
        const uint32_t* a = lanes[l].in;
        for (int j = 0; j < 2; j++) {
            auto half = [&](uint32_t r) { return j ? bf16_hi(r) : bf16_lo(r); };
            A[gr][2 * t + j] = half(a[0]);
            A[gr + 8][2 * t + j] = half(a[1]);
            A[gr][2 * t + 8 + j] = half(a[2]);
            A[gr + 8][2 * t + 8 + j] = half(a[3]);
        }
    }
}

// Executes the collective all 32 lanes of warp w wait in.
void resolve(Thread* lanes) {
    const Op op = lanes[0].op;
    for (int l = 0; l < 32; l++)
        if (lanes[l].op != op || ((op == Op::shfl || op == Op::shfl_down) && lanes[l].arg != lanes[0].arg))
            fail("lanes of one warp wait in different collectives");
    switch (op) {
    case Op::shfl:
        for (int l = 0; l < 32; l++) lanes[l].out[0] = lanes[l ^ lanes[0].arg].in[0];
        break;
    case Op::shfl_down:  // lanes past the end keep their own value
        for (int l = 0; l < 32; l++) lanes[l].out[0] = lanes[l + lanes[0].arg < 32 ? l + lanes[0].arg : l].in[0];
        break;
    case Op::ldmatrix:
    case Op::ldmatrix_trans:
        // matrix i has its 8 rows (8 b16 each) at the addresses of lanes 8i..8i+7; lane l
        // receives row l/4, columns 2(l%4) and 2(l%4)+1 (.trans: column l/4, rows 2(l%4), +1)
        g_stats.ldmatrix++;
        for (int i = 0; i < 4; i++) {
            const unsigned char* rows[8];
            for (int r = 0; r < 8; r++) rows[r] = static_cast<const unsigned char*>(lanes[8 * i + r].ptr);
            g_stats.ldmatrix_wavefronts += wavefronts8(rows);
            uint16_t m[8][8];
            for (int r = 0; r < 8; r++) {
                const int owner = g->unpublished[chunk_of(lanes[8 * i + r].ptr)];
                if (owner >= 0 && owner != tid_of(&lanes[8 * i + r]))
                    fail("ldmatrix reads shared memory thread " + std::to_string(owner) +
                         "'s cp.async wait landed, with no barrier since");
                std::memcpy(m[r], lanes[8 * i + r].ptr, 16);
            }
            for (int l = 0; l < 32; l++) {
                const int a = l / 4, b = 2 * (l % 4);
                const uint16_t lo = op == Op::ldmatrix ? m[a][b] : m[b][a];
                const uint16_t hi = op == Op::ldmatrix ? m[a][b + 1] : m[b + 1][a];
                lanes[l].out[i] = (uint32_t)lo | ((uint32_t)hi << 16);
            }
        }
        break;
    case Op::mma: {
        // m16n8k16, A row-major 16x16 (unpack_a), B column-major 16x8, C/D 16x8; g = lane/4,
        // t = lane%4: b0 (k 2t.., n g), b1 (k 2t+8.., n g); c0,c1 (g, 2t..), c2,c3 (g+8, 2t..)
        float A[16][16], B[16][8], C[16][8];
        unpack_a(lanes, A);
        for (int l = 0; l < 32; l++) {
            const int gr = l / 4, t = l % 4;
            for (int j = 0; j < 2; j++) {
                B[2 * t + j][gr] = j ? bf16_hi(lanes[l].in[4]) : bf16_lo(lanes[l].in[4]);
                B[2 * t + 8 + j][gr] = j ? bf16_hi(lanes[l].in[5]) : bf16_lo(lanes[l].in[5]);
                C[gr][2 * t + j] = lanes[l].acc[j];
                C[gr + 8][2 * t + j] = lanes[l].acc[2 + j];
            }
        }
        // bf16 products are exact in fp32; the sum is rounded once to fp32, within the
        // tensor core's own (unspecified, truncating) accumulation error
        float D[16][8];
        for (int m = 0; m < 16; m++)
            for (int n = 0; n < 8; n++) {
                double s = C[m][n];
                for (int k = 0; k < 16; k++) s += (double)A[m][k] * B[k][n];
                D[m][n] = (float)s;
            }
        for (int l = 0; l < 32; l++) {
            const int gr = l / 4, t = l % 4;
            for (int j = 0; j < 2; j++) {
                std::memcpy(&lanes[l].out[j], &D[gr][2 * t + j], 4);
                std::memcpy(&lanes[l].out[2 + j], &D[gr + 8][2 * t + j], 4);
            }
        }
        break;
    }
    case Op::none:
    case Op::wgmma:  // resolved per warpgroup
        fail("internal: a warp-level resolve of no collective or of a wgmma");
    }
    for (int l = 0; l < 32; l++) lanes[l].state = State::ready;
}

// Thread i of the block, at the start of the kernel.
// A fiber that a failed launch left inside a kernel starts afresh (its frames are
// abandoned, not unwound).
void start_fiber(Thread& t, int i) {
    if (!t.stack) t.stack.reset(new char[STACK_BYTES]);
    if (!t.parked) context_make(t.ctx, t.stack.get(), STACK_BYTES, fiber_loop);
    else context_refresh_fp(t.ctx);
    t.idx = Index{(unsigned)(i % block_dim.x), (unsigned)(i / block_dim.x % block_dim.y),
                  (unsigned)(i / (block_dim.x * block_dim.y))};
    t.state = State::ready;
    t.op = Op::none;
    t.copies.clear();
    t.cp_issued = 0;
    t.wg_pending.clear();
    t.wg_fenced = false;
    t.bulk.clear();
    t.bulk_committed = 0;
}

// The byte offset in shared memory of element (mn, k) of a wgmma operand (16 x N or
// 64 x 16) by its descriptor, after the PTX ISA's canonical layouts (cute's
// make_gmma_desc states them the same way): without swizzling, 8 x 16-byte core matrices,
// K-major (mn%8)*16 + (mn/8)*sbo + (k%8)*2 + (k/8)*lbo, MN-major (mn%8)*2 + (mn/8)*sbo +
// (k%8)*16 + (k/8)*lbo; with the 128-byte swizzle, rows of 128 bytes in 8-row atoms,
// K-major (mn%8)*128 + (mn/8)*sbo + k*2, MN-major (mn%64)*2 + (mn/64)*lbo + (k%8)*128 +
// (k/8)*sbo, and then address bits 4-6 XOR bits 7-9. A swizzled start must lie at a
// row 0 of an atom (bits 7-9 clear): the base-offset field is not emulated.
size_t desc_offset(uint64_t desc, int mn, int k, bool mn_major) {
    const size_t start = (desc & 0x3FFF) << 4, lbo = ((desc >> 16) & 0x3FFF) << 4, sbo = ((desc >> 32) & 0x3FFF) << 4;
    const unsigned mode = (unsigned)(desc >> 62);
    if (((desc >> 49) & 7) != 0) fail("wgmma: a descriptor base offset is not emulated");
    if (mode == 0)
        return mn_major ? start + (mn % 8) * 2 + (mn / 8) * sbo + (k % 8) * 16 + (k / 8) * lbo
                        : start + (mn % 8) * 16 + (mn / 8) * sbo + (k % 8) * 2 + (k / 8) * lbo;
    if (mode != 1) fail("wgmma: only unswizzled and 128-byte swizzled descriptors are emulated");
    if ((start >> 7) & 7) fail("wgmma: a 128-byte swizzled operand must start at row 0 of an atom");
    const size_t off = mn_major ? start + (mn % 64) * 2 + (mn / 64) * lbo + (k % 8) * 128 + (k / 8) * sbo
                                : start + (mn % 8) * 128 + (mn / 8) * sbo + k * 2;
    return off ^ (((off >> 7) & 7) << 4);
}

constexpr const char* UNFENCED = " reads shared memory that ordinary stores changed after the last "
                                 "fence.proxy.async (the async proxy does not see them without one)";

// One bf16 of a wgmma operand in shared memory, with the checks on how it landed.
float desc_element(size_t off, const char* what) {
    check_smem(g->smem + (off & ~(size_t)15), 16, what);
    const size_t ch = off / 16;
    if (g->unpublished[ch] >= 0)
        fail(std::string(what) + " reads shared memory a cp.async landed (thread " + std::to_string(g->unpublished[ch]) +
             ") that no barrier has published since");
    if (g->lander[ch] >= 0 && !g->proxy_fenced[ch])
        fail(std::string(what) + " reads cp.async data without a fence.proxy.async by the thread that waited for it");
    if (std::memcmp(g->smem + off, g->async_view.data() + off, 2) != 0) fail(std::string(what) + UNFENCED);
    uint16_t u;
    std::memcpy(&u, g->smem + off, 2);
    return __bfloat162float(__ushort_as_bfloat16(u));
}

// Executes one warp's part of a wgmma: rows 16w..16w+15 of D (64 x N) += A B, the warp
// giving those rows of A (mma.sync A fragments, or by descriptor) and holding those rows
// of D. .sync waits for the warp only, so each warp reads B when it gets there: a warp
// that runs ahead and overwrites a tile another warp's wgmma has yet to read is caught.
void resolve_wgmma(Thread* th) {
    const int nt = th[0].nt, N = 8 * nt;
    for (int i = 0; i < 32; i++)
        if (th[i].op != Op::wgmma || th[i].nt != nt || th[i].desc != th[0].desc || th[i].trans != th[0].trans ||
            th[i].a_smem != th[0].a_smem || th[i].desc_a != th[0].desc_a || th[i].trans_a != th[0].trans_a)
            fail("lanes of one warp wait in different wgmma operations");
    std::vector<float> Bm(16 * N);
    auto operands = std::make_shared<WgmmaOperands>();
    auto read = [&](size_t off, const char* what) {
        operands->lo = std::min(operands->lo, off), operands->hi = std::max(operands->hi, off + 2);
        const float x = desc_element(off, what);
        uint16_t u;
        std::memcpy(&u, g->smem + off, 2);
        operands->off.push_back((uint32_t)off), operands->bits.push_back(u);
        return x;
    };
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < N; n++) Bm[k * N + n] = read(desc_offset(th[0].desc, n, k, th[0].trans), "wgmma B");
    float A[16][16];
    if (th[0].a_smem) {
        const int row0 = 16 * (tid_of(th) / 32 % 4);  // the warp's rows of the warpgroup's 64
        for (int m = 0; m < 16; m++)
            for (int k = 0; k < 16; k++) A[m][k] = read(desc_offset(th[0].desc_a, row0 + m, k, th[0].trans_a), "wgmma A");
    } else {
        unpack_a(th, A);
    }
    for (int l = 0; l < 32; l++) {
        const int gr = l / 4, t = l % 4;
        std::vector<float>& acc = th[l].wg_acc;  // acc[4 nt' + e]: row gr + 8(e/2), column 8nt' + 2t + e%2
        for (int q = 0; q < nt; q++)
            for (int e = 0; e < 4; e++) {
                const int m = gr + 8 * (e / 2), n = 8 * q + 2 * t + e % 2;
                double sum = acc[4 * q + e];
                for (int k = 0; k < 16; k++) sum += (double)A[m][k] * Bm[k * N + n];
                acc[4 * q + e] = (float)sum;
            }
    }
    for (int i = 0; i < 32; i++) {
        Thread& t = th[i];
        t.wg_pending.issue({t.wg_dst, t.wg_acc, operands});
        t.state = State::ready;
    }
}

// A warp's 128-bit accesses are served a quarter-warp (8 lanes) at a time. Its global
// reads touch 32-byte sectors: at best its bytes / 32 of them.
void count_cp_async_accesses() {
    for (const auto& warp : g->cp_lanes)
        for (const auto& instr : warp) {
            g_stats.cp_async++;
            for (int phase = 0; phase < 4; phase++) {
                const unsigned char* p[8];
                int k = 0;
                for (int l = 8 * phase; l < 8 * phase + 8; l++)
                    if (instr.dst[l]) p[k++] = instr.dst[l];
                if (k) g_stats.cp_async_wavefronts += wavefronts8(p, k);
            }
            std::vector<uintptr_t> sectors;
            for (const unsigned char* q : instr.src)
                if (q) sectors.push_back((uintptr_t)q / 32);
            std::sort(sectors.begin(), sectors.end());
            g_stats.cp_async_sectors += std::unique(sectors.begin(), sectors.end()) - sectors.begin();
            g_stats.cp_async_sectors_min += (16 * sectors.size() + 31) / 32;
        }
}

bool mbar_passed(const Thread& t) {
    auto it = g->mbars.find(t.mbar);
    return it != g->mbars.end() && (it->second.phase & 1) != t.mbar_parity;
}

void mbar_complete_tx(MBarrier& b, long bytes) {
    b.tx -= bytes;
    if (b.pending == 0 && b.tx == 0) b.phase++, b.pending = b.expected;
}

// TMA copies in flight land: the box, zeros outside the tensor, in the 128-byte
// swizzle (16-byte chunk c of 128-byte row r at chunk c ^ (r % 8); destinations are
// 1024-byte aligned), then their bytes complete on their barriers.
// Only the copies for barriers some thread waits on land, when there are such: the
// others stay in flight, so a read that waited on the wrong barrier sees NaNs.
void land(const TmaCopy& c) {
    const TensorMap& m = c.map;
    const size_t rows = (size_t)m.box[1] * m.box[2] * m.box[3];
    for (size_t r = 0; r < rows; r++) {
        const int i1 = (int)(r % m.box[1]), i2 = (int)(r / m.box[1] % m.box[2]), i3 = (int)(r / m.box[1] / m.box[2]);
        const long x1 = (long)c.c[1] + i1, x2 = (long)c.c[2] + i2, x3 = (long)c.c[3] + i3;
        const bool in_row = x1 >= 0 && x1 < (long)m.dims[1] && x2 >= 0 && x2 < (long)m.dims[2] && x3 >= 0 &&
                            x3 < (long)m.dims[3];
        for (int i0 = 0; i0 < (int)m.box[0]; i0++) {
            const long x0 = (long)c.c[0] + i0;
            uint16_t v = 0;
            if (in_row && x0 >= 0 && x0 < (long)m.dims[0])
                std::memcpy(&v, m.base + x0 * 2 + x1 * m.strides[0] + x2 * m.strides[1] + x3 * m.strides[2], 2);
            size_t off = (size_t)(c.dst - g->smem) + r * 128 + i0 * 2;
            off ^= ((off >> 7) & 7) << 4;
            std::memcpy(g->smem + off, &v, 2);
            std::memcpy(g->async_view.data() + off, &v, 2);
        }
    }
    const size_t bytes = rows * 128;
    for (size_t ch = (size_t)(c.dst - g->smem) / 16; ch < (size_t)(c.dst - g->smem + bytes) / 16; ch++)
        g->unpublished[ch] = g->lander[ch] = -1;  // async-proxy data: no cp.async rules
    mbar_complete_tx(g->mbars.at(c.bar), (long)bytes);
}

void land_tma() {
    std::vector<TmaCopy> copies, keep;
    for (const TmaCopy& c : g->tma_pending) {
        bool waited = false;
        for (const Thread& t : g->threads) waited = waited || (t.state == State::mbarrier && t.mbar == c.bar);
        (waited ? copies : keep).push_back(c);
    }
    if (copies.empty()) copies.swap(keep);
    g->tma_pending.swap(keep);
    for (const TmaCopy& c : copies) land(c);
}

// Retires a thread's bulk copies as its wait_group asked (t.bulk_pending groups may stay
// in flight): reads the sources of those not read yet and, unless .read, writes them.
void bulk_retire(Thread& t) {
    const long below = t.bulk_committed - t.bulk_pending;
    std::vector<BulkCopy> keep;
    for (BulkCopy& c : t.bulk) {
        if (c.group < 0 || c.group >= below) {
            keep.push_back(std::move(c));
            continue;
        }
        if (!c.read) {  // c.data: the source at issue, which must not have changed since
            if (std::memcmp(g->smem + c.src, c.data.data(), c.bytes) != 0)
                fail_at(&t, std::string(c.add ? "cp.reduce.async.bulk" : "cp.async.bulk") +
                                ": its source in shared memory changed between the copy's issue and its read wait");
            c.read = true;
        }
        if (t.bulk_read_only) {
            keep.push_back(std::move(c));
        } else if (c.add) {
            for (uint32_t i = 0; i < c.bytes; i += 4) {
                float a, b;
                std::memcpy(&a, c.dst + i, 4), std::memcpy(&b, c.data.data() + i, 4);
                a += b;
                std::memcpy(c.dst + i, &a, 4);
            }
        } else {
            std::memcpy(c.dst, c.data.data(), c.bytes);
        }
    }
    t.bulk.swap(keep);
}

// The current block (g) at the start of the kernel: fresh shared memory, barriers, fibers.
void start_block() {
    const int n = (int)g->threads.size(), warps = n / 32;
    std::memset(g->smem, 0xff, g->smem_bytes);
    g->unpublished.assign(g->smem_bytes / 16 + 1, -1);
    g->lander.assign(g->smem_bytes / 16 + 1, -1);
    g->proxy_fenced.assign(g->smem_bytes / 16 + 1, 0);
    g->async_view.assign(g->smem, g->smem + g->smem_bytes);
    g->mbars.clear();
    g->tma_pending.clear();
    g->priority.clear();
    g->named = {};
    for (int i = 0; i < n; i++) start_fiber(g->threads[i], i);
    g->cp_lanes.assign(warps, {});
}

void run_thread(Thread* t) {
    g->current = t;
    context_switch(g->scheduler, t->ctx);
    g->current = nullptr;
    if (!g_error.empty()) {
        const std::string e = g_error;
        g_error.clear();
        throw Error(e);
    }
}

// One step of the current block: `ran` when some thread ran or something landed, `done`
// when every thread has exited, `waiting` when the threads that have not exited can go on
// only once another block adds to the counters they wait on (semaphore_wait).
enum class Step { ran, done, waiting };
Step step_block(Order order) {
    const int n = (int)g->threads.size(), warps = n / 32;
    for (Thread& t : g->threads)
        if (t.state == State::semaphore && *t.sem == t.sem_value) t.state = State::ready;
        else if (t.state == State::semaphore && *t.sem > t.sem_value)
            fail_at(&t, "semaphore_wait: the counter went past " + std::to_string(t.sem_value) + " to " +
                 std::to_string(*t.sem) + " while a thread waited for it");
    bool progressed = false;
    while (!g->priority.empty()) {
        Thread* t = g->priority.front();
        g->priority.erase(g->priority.begin());
        if (t->state == State::ready) run_thread(t), progressed = true;
    }
    for (int k = 0; k < warps && !progressed; k++) {
        const int w = order == Order::forward ? k : warps - 1 - k;
        Thread* lanes = &g->threads[32 * w];
        for (int l = 0; l < 32; l++)
            if (lanes[l].state == State::mbarrier && mbar_passed(lanes[l])) lanes[l].state = State::ready;
        for (int l = 0; l < 32 && g->priority.empty(); l++)
            if (lanes[l].state == State::ready) {
                run_thread(&lanes[l]);
                progressed = true;
            }
        int waiting = 0, done = 0;
        for (int l = 0; l < 32; l++) {
            waiting += lanes[l].state == State::collective;
            done += lanes[l].state == State::done;
        }
        if (waiting == 32 && lanes[0].op == Op::wgmma) {
            if (warps < 4 * (w / 4 + 1)) fail("wgmma in a block without a whole warpgroup");
            resolve_wgmma(lanes);
            progressed = true;
        } else if (waiting == 32) {
            resolve(lanes);
            progressed = true;
        } else if (waiting > 0 && waiting + done == 32) {
            fail("warp " + std::to_string(w) + ": a collective waits for lanes that have exited");
        }
    }
    if (progressed) return Step::ran;
    int at_barrier = 0, done = 0, at_mbar = 0, at_named = 0, at_sem = 0;
    for (Thread& t : g->threads) {
        at_barrier += t.state == State::barrier, done += t.state == State::done, at_mbar += t.state == State::mbarrier;
        at_named += t.state == State::named, at_sem += t.state == State::semaphore;
    }
    if (done == n) {
        if (!g->tma_pending.empty()) fail("the block exits with TMA copies in flight");
        for (int id = 1; id < 16; id++)
            if (g->named[id].arrived)
                fail("the block exits with named barrier " + std::to_string(id) + " partly arrived (" +
                     std::to_string(g->named[id].arrived) + " of " + std::to_string(g->named[id].count) + ")");
        count_cp_async_accesses();
        return Step::done;
    }
    if (at_barrier + done < n) {  // not a block barrier that every thread has reached
        // a warp's wgmma wait ends now, one warp at a time (the first in the order), so the
        // warps after it run as far as they can while its wgmmas may still read their operands
        for (int k = 0; k < warps; k++) {
            Thread* lanes = &g->threads[32 * (order == Order::forward ? k : warps - 1 - k)];
            bool any = false;
            for (int l = 0; l < 32; l++)
                if (lanes[l].state == State::wgmma) lanes[l].state = State::ready, any = true;
            if (any) return Step::ran;
        }
        if (!g->tma_pending.empty()) {  // no thread can run on: the copies land now, as late as they may
            land_tma();
            return Step::ran;
        }
        bool bulk = false;  // then bulk copies read (and write), as late as they may
        for (Thread& t : g->threads)
            if (t.state == State::bulk) bulk_retire(t), t.state = State::ready, bulk = true;
        if (bulk) return Step::ran;
        if (at_sem > 0) return Step::waiting;  // on another block, or on none (the caller decides)
        if (at_mbar > 0) fail("deadlock: threads wait for mbarrier phases that never complete");
        if (at_named > 0) fail("deadlock: threads wait at named barriers that never fill");
        fail("deadlock: lanes wait in collectives their warps never complete");
    }
    for (Thread& t : g->threads)
        if (t.state == State::barrier) t.state = State::ready;
    std::fill(g->unpublished.begin(), g->unpublished.end(), -1);
    return Step::ran;
}

// A thread's wait that no block left can end, named for the failure.
[[noreturn]] void fail_semaphore(bool others) {
    for (const Thread& t : g->threads)
        if (t.state == State::semaphore)
            fail_at(&t, "semaphore_wait reads " + std::to_string(*t.sem) + ", waits for " +
                            std::to_string(t.sem_value) +
                            (others ? ": every resident block waits so, a deadlock"
                                    : ": blocks run one after another in launch order here, and those that would "
                                      "add to it have not run (on a GPU they must have started, or the wait never "
                                      "ends)"));
    fail("internal: no semaphore wait");
}

Thread* self(const char* what) {
    if (!g->current) throw Error(std::string(what) + " called outside an emulated kernel");
    return g->current;
}

}  // namespace

const Index& thread_idx() { return self("threadIdx")->idx; }

void set_order(Order o) { g_order = o; }
void set_landing(Landing l) { g_landing = l; }
void set_wgmma_retire(WgmmaRetire r) { g_wgmma_retire = r; }
void set_resident_blocks(int n) {
    if (n < 1) throw Error("set_resident_blocks: at least one block");
    g_resident = n;
}
void static_shared() {
    if (g_launch_resident > 1)
        fail("a static __shared__ array with " + std::to_string(g_launch_resident) +
             " blocks resident: here it is one array for all of them (set_resident_blocks needs kernels "
             "whose shared memory is all dynamic_smem())");
}

MemStats mem_stats() { return g_stats; }
void reset_mem_stats() { g_stats = MemStats{}; }

namespace {
std::vector<std::pair<const void*, size_t>> g_smem_optin;  // kernel, opted-in dynamic bytes
}
void set_max_dynamic_smem(const void* kernel, size_t bytes) {
    for (auto& k : g_smem_optin)
        if (k.first == kernel) {
            k.second = bytes;
            return;
        }
    g_smem_optin.push_back({kernel, bytes});
}

void launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& fn, const void* kernel,
            const char* name) {
    const size_t n = (size_t)block.x * block.y * block.z;
    if (smem_bytes > 48 * 1024) {  // CUDA refuses these without cudaFuncSetAttribute
        size_t allowed = 48 * 1024;
        for (const auto& k : g_smem_optin)
            if (k.first == kernel) allowed = k.second;
        if (smem_bytes > allowed)
            throw Error("launch: " + std::to_string(smem_bytes) + " bytes of dynamic shared memory without "
                        "cudaFuncAttributeMaxDynamicSharedMemorySize (CUDA fails such a launch)");
    }
    if (n == 0 || n % 32 != 0 || n > 1024) throw Error("launch: block size must be a multiple of 32, at most 1024");
    if (block.z > 64) throw Error("launch: blockDim.z above 64");
    if (grid.y > 65535 || grid.z > 65535) throw Error("launch: gridDim.y or .z above 65535");
    if (smem_bytes > SMEM_CAPACITY - 1024)
        throw Error("launch: " + std::to_string(smem_bytes) + " bytes of shared memory, above the 227 KiB a block may have");
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) throw Error("launch: empty grid");
    grid_dim = Index{grid.x, grid.y, grid.z};
    block_dim = Index{block.x, block.y, block.z};
    // resident blocks: block 0's shared memory is a static array, the others' their own
    const int resident = (int)std::min<size_t>((size_t)g_resident, (size_t)grid.x * grid.y * grid.z);
    while ((int)g_blocks.size() < resident) g_blocks.push_back(std::make_unique<Block>());
    alignas(128) static unsigned char memory[SMEM_CAPACITY];
    for (int r = 0; r < resident; r++) {
        Block& b = *g_blocks[r];
        if (r > 0 && b.own_smem.empty()) b.own_smem.resize(SMEM_CAPACITY + 128);
        unsigned char* own = b.own_smem.data();
        b.smem = r == 0 ? memory : own + (128 - (uintptr_t)own % 128) % 128;
        b.threads.resize(n);
        b.fn = &fn;
        b.smem_bytes = smem_bytes;
    }
    // Blocks start as slots free, each taking its first step then (its first warp runs, as
    // it would on the SM it starts on: a block takes a ticket when it starts, not when
    // others let it run). Order::forward: in launch order (x fastest), the resident ones
    // taking turns a step at a time. reverse (with resident blocks): from the last block
    // back, which a kernel must not rely on either, and the newest that can go on runs, so
    // that a block started later gets ahead of those before it.
    struct Done {  // however the launch ends: no block running, no thread current
        ~Done() {
            for (auto& b : g_blocks) b->current = nullptr;
            g = g_blocks[0].get();
            g_launch_resident = 1;
        }
    } done;
    g_launch_resident = resident;
    const bool backward = resident > 1 && g_order == Order::reverse;
    unsigned long next = 0;
    const unsigned long blocks = (unsigned long)grid.x * grid.y * grid.z;
    std::vector<Block*> slots(resident, nullptr);
    for (;;) {
        for (int r = 0; r < resident && next < blocks; r++)
            if (!slots[r]) {
                const unsigned long i = backward ? blocks - 1 - next : next;
                g = slots[r] = g_blocks[r].get();
                g->idx = block_idx = Index{(unsigned)(i % grid.x), (unsigned)(i / grid.x % grid.y),
                                           (unsigned)(i / grid.x / grid.y)};
                g->seq = next++;
                start_block();
                // (one block at a time: as it is, so that Order::reverse runs the last warp first)
                if (step_block(resident > 1 ? Order::forward : g_order) == Step::done) slots[r--] = nullptr;
            }
        std::vector<int> turn;  // the slots in the order they step
        for (int r = 0; r < resident; r++)
            if (slots[r]) turn.push_back(r);
        if (g_order == Order::reverse)
            std::sort(turn.begin(), turn.end(), [&](int a, int b) { return slots[a]->seq > slots[b]->seq; });
        const bool any = !turn.empty();
        bool ran = false;
        for (int r : turn) {
            g = slots[r], block_idx = g->idx;
            const Step st = step_block(g_order);
            if (st == Step::done) slots[r] = nullptr;
            ran = ran || st != Step::waiting;
            if (ran && g_order == Order::reverse) break;
        }
        if (!any) break;
        if (!ran) fail_semaphore(resident > 1);
    }
    check_red_zones((std::string("kernel ") + name).c_str());
}

void syncthreads() {
    self("__syncthreads");
    block_on(State::barrier);
}

uint32_t shfl(uint32_t v, int arg, bool down) {
    Thread* t = self("__shfl_sync");
    if (arg < 0 || arg > 31) fail("__shfl_xor_sync / __shfl_down_sync: lane argument out of range");
    t->op = down ? Op::shfl_down : Op::shfl, t->arg = arg, t->in[0] = v;
    block_on(State::collective);
    t->op = Op::none;
    return t->out[0];
}

void ldmatrix_x4(uint32_t (&r)[4], const void* p, bool trans) {
    Thread* t = self("ldmatrix");
    check_smem(p, 16, "ldmatrix");
    t->op = trans ? Op::ldmatrix_trans : Op::ldmatrix, t->ptr = p;
    block_on(State::collective);
    t->op = Op::none;
    for (int i = 0; i < 4; i++) r[i] = t->out[i];
}

void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    Thread* t = self("mma.sync");
    t->op = Op::mma;
    for (int i = 0; i < 4; i++) t->in[i] = a[i], t->acc[i] = c[i];
    t->in[4] = b0, t->in[5] = b1;
    block_on(State::collective);
    t->op = Op::none;
    for (int i = 0; i < 4; i++) std::memcpy(&c[i], &t->out[i], 4);
}

void cp_async_16(void* dst, const void* src, int src_bytes) {
    Thread* t = self("cp.async");
    check_smem(dst, 16, "cp.async");
    if (src_bytes > 0 && (uintptr_t)src % 16 != 0) fail("cp.async: global address not 16-byte aligned");
    t->copies.issue({(unsigned char*)dst, (const unsigned char*)src, src_bytes});
    const int tid = tid_of(t);
    auto& warp = g->cp_lanes[tid / 32];
    if ((long)warp.size() <= t->cp_issued) warp.resize(t->cp_issued + 1);
    Block::CpLanes& instr = warp[t->cp_issued++];
    instr.dst[tid % 32] = static_cast<const unsigned char*>(dst);
    instr.src[tid % 32] = src_bytes > 0 ? static_cast<const unsigned char*>(src) : nullptr;
    std::memset(dst, 0xff, 16);  // undefined until the wait: a read before it sees NaNs
}

void cp_async_commit() {
    self("cp.async.commit_group")->copies.commit();
}

void cp_async_wait(int pending_groups) {
    Thread* t = self("cp.async.wait_group");
    t->copies.retire(pending_groups, [t](const AsyncCopy& c) {
        if (c.bytes > 0) std::memcpy(c.dst, c.src, c.bytes);
        std::memset(c.dst + c.bytes, 0, 16 - c.bytes);
        const size_t ch = chunk_of(c.dst);
        g->unpublished[ch] = g->lander[ch] = tid_of(t);
        g->proxy_fenced[ch] = 0;
    });
}

void bulk_copy(void* dst, const void* src, uint32_t bytes, bool add) {
    Thread* t = self(add ? "cp.reduce.async.bulk" : "cp.async.bulk");
    const unsigned char* s = static_cast<const unsigned char*>(src);
    check_smem(s, bytes, "cp.async.bulk");
    if (bytes == 0 || bytes % 16 != 0 || (uintptr_t)dst % 16 != 0 || (s - g->smem) % 16 != 0)
        fail("cp.async.bulk: sizes and addresses must be multiples of 16 bytes");
    // two in flight onto the same bytes land in either order: results that vary by run
    unsigned char* d = static_cast<unsigned char*>(dst);
    for (const BulkCopy& o : t->bulk)
        if (o.dst < d + bytes && d < o.dst + o.bytes)
            fail("cp.async.bulk onto global memory that an earlier bulk copy of this thread has yet to write "
                 "(their order is undefined: wait for it first)");
    BulkCopy c;
    c.dst = d, c.src = (size_t)(s - g->smem), c.bytes = bytes, c.add = add;
    if (std::memcmp(s, g->async_view.data() + c.src, bytes) != 0)
        fail(std::string(add ? "cp.reduce.async.bulk" : "cp.async.bulk") + UNFENCED);
    c.data.assign(s, s + bytes);
    t->bulk.push_back(std::move(c));
}

void bulk_commit() {
    Thread* t = self("cp.async.bulk.commit_group");
    for (BulkCopy& c : t->bulk)
        if (c.group < 0) c.group = t->bulk_committed;
    t->bulk_committed++;
}

void bulk_wait(int pending_groups, bool read_only) {
    Thread* t = self("cp.async.bulk.wait_group");
    const long below = t->bulk_committed - pending_groups;
    bool work = false;
    for (const BulkCopy& c : t->bulk) work = work || (c.group >= 0 && c.group < below && !(c.read && read_only));
    if (!work) return;
    t->bulk_pending = pending_groups, t->bulk_read_only = read_only;
    block_on(State::bulk);  // until no thread can run on (bulk_retire)
}

void semaphore_wait(const int* p, int value) {
    Thread* t = self("semaphore_wait");
    if (*p == value) return;
    if (*p > value)
        fail("semaphore_wait reads " + std::to_string(*p) + ", past the " + std::to_string(value) + " it waits for");
    t->sem = p, t->sem_value = value;
    block_on(State::semaphore);
}

void semaphore_add(int* p, int value) {
    Thread* t = self("semaphore_add");
    if (!t->bulk.empty()) fail("semaphore_add before this thread's bulk copies have completed their writes");
    *p += value;
}

unsigned char* dynamic_smem() {
    self("dynamic shared memory");
    return g->smem;
}

uint32_t smem_offset(const void* p) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    if (!g->smem || c < g->smem || c >= g->smem + SMEM_CAPACITY) fail("shared-memory address outside shared memory");
    return (uint32_t)(c - g->smem);
}

void fence_proxy_async() {
    const int tid = tid_of(self("fence.proxy.async"));
    for (size_t ch = 0; ch < g->lander.size(); ch++)
        if (g->lander[ch] == tid) g->proxy_fenced[ch] = 1;
    std::memcpy(g->async_view.data(), g->smem, g->smem_bytes);
}

void wgmma_fence() { self("wgmma.fence")->wg_fenced = true; }

namespace {
void wgmma_issue(Thread* t, float* d, int nt, uint64_t desc_b, bool trans_b) {
    if (!t->wg_fenced) fail("wgmma.mma_async without a wgmma.fence since the last wgmma.wait_group");
    t->op = Op::wgmma, t->nt = nt, t->desc = desc_b, t->trans = trans_b, t->wg_dst = d;
    // the accumulator: the newest pending result for these registers, else the registers
    t->wg_acc.assign(d, d + 4 * nt);
    for (const auto& r : t->wg_pending.ops)
        if (r.first.dst == d) t->wg_acc = r.first.value;
    std::fill(d, d + 4 * nt, NAN);  // undefined until the wait
    block_on(State::collective);
    t->op = Op::none;
}
}  // namespace

void wgmma_ss(float* d, int nt, uint64_t desc_a, uint64_t desc_b, bool trans_a, bool trans_b) {
    Thread* t = self("wgmma.mma_async");
    t->a_smem = true, t->desc_a = desc_a, t->trans_a = trans_a;
    wgmma_issue(t, d, nt, desc_b, trans_b);
}

void wgmma(float* d, int nt, const uint32_t (&a)[4], uint64_t desc_b, bool trans_b) {
    Thread* t = self("wgmma.mma_async");
    t->a_smem = false, t->desc_a = 0, t->trans_a = false;
    for (int i = 0; i < 4; i++) t->in[i] = a[i];
    wgmma_issue(t, d, nt, desc_b, trans_b);
}
void wgmma_commit() {
    self("wgmma.commit_group")->wg_pending.commit();
}

void wgmma_wait(int pending_groups) {
    Thread* t = self("wgmma.wait_group");
    t->wg_fenced = false;
    if (g_wgmma_retire == WgmmaRetire::late && t->wg_pending.retires_any(pending_groups))
        block_on(State::wgmma);  // the scheduler ends it
    t->wg_pending.retire(pending_groups, [](const WgmmaResult& r) {
        WgmmaOperands& ops = *r.operands;
        if (!ops.checked)
            for (size_t i = 0; i < ops.off.size(); i++)
                if (std::memcmp(g->smem + ops.off[i], &ops.bits[i], 2) != 0)
                    fail("wgmma.wait_group: shared memory at offset " + std::to_string(ops.off[i]) +
                         ", which a wgmma of this warp reads, changed before the wait retired it (the "
                         "hardware may read its operands until then)");
        ops.checked = true;
        std::copy(r.value.begin(), r.value.end(), r.dst);
    });
}

namespace {
// The smem offset of an mbarrier: 8 aligned bytes of the launch's shared memory.
size_t mbar_offset(const void* bar, const char* op) {
    const unsigned char* c = static_cast<const unsigned char*>(bar);
    if (c < g->smem || c + 8 > g->smem + g->smem_bytes || (uintptr_t)c % 8 != 0)
        fail(std::string(op) + ": the mbarrier is not an aligned 8 bytes of the launch's shared memory");
    return (size_t)(c - g->smem);
}
MBarrier& mbar_of(const void* bar, const char* op, size_t* off_out = nullptr) {
    const size_t off = mbar_offset(bar, op);
    auto it = g->mbars.find(off);
    if (it == g->mbars.end()) fail(std::string(op) + ": mbarrier not initialised");
    if (off_out) *off_out = off;
    return it->second;
}
}  // namespace

void named_barrier(int id, int count, bool wait) {
    Thread* t = self(wait ? "bar.sync" : "bar.arrive");
    if (id < 1 || id > 15) fail("named barriers: id " + std::to_string(id) + " (1..15; 0 is __syncthreads)");
    if (count <= 0 || count % 32 != 0 || count > (int)g->threads.size())
        fail("named barriers: a thread count of " + std::to_string(count));
    Block::Named& b = g->named[id];
    if (b.arrived == 0) b.count = count;
    else if (b.count != count) fail("named barrier " + std::to_string(id) + ": thread counts differ in one use");
    if (++b.arrived == b.count) {  // the last thread: the others waiting here go on
        b.arrived = 0;
        for (Thread& o : g->threads)
            if (o.state == State::named && o.named == id) o.state = State::ready;
        return;
    }
    if (!wait) return;
    t->named = id;
    block_on(State::named);
}

void mbar_init(void* bar, unsigned arrivals) {
    self("mbarrier.init");
    const size_t off = mbar_offset(bar, "mbarrier.init");
    if (arrivals == 0) fail("mbarrier.init: an arrival count of 0");
    MBarrier& b = g->mbars[off];
    b = MBarrier{};
    b.expected = b.pending = arrivals;
}

namespace {
// A phase is complete: its waiters run at once, ahead of the thread that completed it
// and of its warp's other lanes
void run_waiters_first() {
    for (Thread& t : g->threads)
        if (t.state == State::mbarrier && mbar_passed(t)) t.state = State::ready, g->priority.push_back(&t);
    if (!g->priority.empty()) block_on(State::ready);
}
}  // namespace

void mbar_arrive(void* bar, unsigned tx_bytes) {
    self("mbarrier.arrive");
    MBarrier& b = mbar_of(bar, "mbarrier.arrive");
    if (b.pending == 0) fail("mbarrier.arrive: more arrivals than the phase expects");
    b.tx += tx_bytes;
    b.pending--;
    const unsigned phase = b.phase;
    mbar_complete_tx(b, 0);
    if (b.phase != phase) run_waiters_first();
}

void mbar_wait(void* bar, unsigned parity) {
    Thread* t = self("mbarrier.try_wait.parity");
    size_t off = 0;
    MBarrier& b = mbar_of(bar, "mbarrier.try_wait.parity", &off);
    if ((b.phase & 1) != (parity & 1)) return;
    t->mbar = off, t->mbar_parity = parity & 1;
    block_on(State::mbarrier);
}

void tma_load(void* dst, const void* map, void* bar, const int (&c)[4]) {
    self("cp.async.bulk.tensor");
    TmaCopy copy;
    std::memcpy(&copy.map, map, sizeof(TensorMap));
    if (copy.map.magic != TENSOR_MAP_MAGIC) fail("cp.async.bulk.tensor: not a tensor map from encode_tensor_map");
    const TensorMap& m = copy.map;
    const size_t bytes = (size_t)m.box[1] * m.box[2] * m.box[3] * 128;
    unsigned char* d = static_cast<unsigned char*>(dst);
    check_smem(d, bytes, "cp.async.bulk.tensor");
    if ((d - g->smem) % 1024 != 0) fail("cp.async.bulk.tensor: a 128-byte swizzled box must start 1024-byte aligned");
    mbar_of(bar, "cp.async.bulk.tensor", &copy.bar);
    // the hardware reads a wgmma's operands any time until its wait: a copy into them before
    // then (a buffer released too early) races with it. A warp's lanes wait together on a
    // GPU (.sync.aligned), so the lane that has retired the most speaks for its warp.
    const size_t d0 = (size_t)(d - g->smem), d1 = d0 + bytes;
    for (size_t w = 0; w < g->threads.size() / 32; w++) {
        const Thread* t = &g->threads[32 * w];
        for (int l = 1; l < 32; l++)
            if (g->threads[32 * w + l].wg_pending.ops.size() < t->wg_pending.ops.size()) t = &g->threads[32 * w + l];
        for (const auto& op : t->wg_pending.ops)
            if (op.first.operands->lo < d1 && d0 < op.first.operands->hi)
                fail("cp.async.bulk.tensor overwrites shared memory that a wgmma of warp " + std::to_string(w) +
                     " still reads (not yet retired by its wgmma.wait_group)");
    }
    for (const Thread& t : g->threads)
        for (const BulkCopy& b : t.bulk)
            if (!b.read && b.src < d1 && d0 < b.src + b.bytes)
                fail("cp.async.bulk.tensor overwrites the source of a bulk copy not yet retired for reading "
                     "(cp.async.bulk.wait_group.read)");
    copy.dst = d;
    std::memcpy(copy.c, c, sizeof copy.c);
    std::memset(d, 0xff, bytes);  // undefined until it lands
    std::memset(g->async_view.data() + d0, 0xff, bytes);
    if (g_landing == Landing::eager) {  // a copy may complete as soon as it is issued
        const unsigned phase = g->mbars.at(copy.bar).phase;
        land(copy);
        if (g->mbars.at(copy.bar).phase != phase) run_waiters_first();
    }
    else g->tma_pending.push_back(copy);
}

void encode_tensor_map(CUtensorMap* map, const void* base, const uint64_t (&dims)[4], const uint64_t (&strides)[3],
                       const uint32_t (&box)[4]) {
    auto refuse = [](const std::string& why) { throw Error("encode_tensor_map: " + why); };
    if ((uintptr_t)map % 64 != 0) refuse("the tensor map must be 64-byte aligned");
    if ((uintptr_t)base % 16 != 0) refuse("the global address must be 16-byte aligned");
    for (int i = 0; i < 4; i++) {
        if (dims[i] == 0 || dims[i] > (1ull << 32)) refuse("dimension " + std::to_string(i) + " out of (0, 2^32]");
        if (box[i] == 0 || box[i] > 256) refuse("box dimension " + std::to_string(i) + " out of (0, 256]");
    }
    for (int i = 0; i < 3; i++)
        if (strides[i] % 16 != 0 || strides[i] >= (1ull << 40)) refuse("strides must be multiples of 16 below 2^40");
    // the driver's nesting of the strides (each includes the dimensions inside it)
    if (strides[0] < dims[0] * 2 || strides[1] < strides[0] * dims[1] || strides[2] < strides[1] * dims[2])
        refuse("strides must nest (each at least the previous one times its dimension)");
    if (box[0] * 2 != 128) refuse("only boxes of 128-byte rows (the 128-byte swizzle's span) are emulated");
    TensorMap m{};
    m.magic = TENSOR_MAP_MAGIC;
    m.base = static_cast<const unsigned char*>(base);
    for (int i = 0; i < 4; i++) m.dims[i] = dims[i], m.box[i] = box[i];
    for (int i = 0; i < 3; i++) m.strides[i] = strides[i];
    std::memset(map, 0, sizeof(CUtensorMap));
    std::memcpy(map, &m, sizeof m);
}

}  // namespace emu

#endif  // LNS_CUDA
