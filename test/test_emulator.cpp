// What only the emulated backend can show, beside the [gpu] tests it runs as
// "emulated: ..." (test_util.h: GPU_TEST_CASE): that no result depends on which warp
// runs ahead, that the model frees what it allocates, and that the emulated runtime and
// cuBLASLt catch the misuse they are there to catch (so a green emulated test means
// something).
#include <catch2/catch.hpp>

#include <cfenv>

#ifdef LNS_CUDA
#include "test/emu/cuda_emu.h"
// after the emulator: cuda_backend is the emulated backend here
#include "kernels/cuda_backend.h"
#include "kernels/ptx.cuh"
#include "test/model_compare.h"

using namespace model_compare;

namespace {

// The emulator's warp order for a scope.
struct WarpOrder {
    explicit WarpOrder(emu::Order o, emu::Landing l = emu::Landing::late,
                       emu::WgmmaRetire r = emu::WgmmaRetire::at_wait) {
        emu::set_order(o);
        emu::set_landing(l);
        emu::set_wgmma_retire(r);
    }
    ~WarpOrder() {
        emu::set_order(emu::Order::forward);
        emu::set_landing(emu::Landing::late);
        emu::set_wgmma_retire(emu::WgmmaRetire::at_wait);
    }
};

// The emulator's resident blocks for a scope.
struct ResidentBlocks {
    explicit ResidentBlocks(int n) { emu::set_resident_blocks(n); }
    ~ResidentBlocks() { emu::set_resident_blocks(1); }
};

struct Outcome {
    float loss;
    std::vector<float> grads, params, decoded;
};

// A training step, an AdamW update and three decoding steps with the KV cache.
Outcome run(const ModelConfig& cfg, AttentionKind attention, emu::Order order) {
    WarpOrder w(order);
    GPT<cuda_backend> m(cfg, B, T, false, attention);
    std::vector<float> p;
    init_params(p, m.layout, 21);
    round_to_device_precision(p);
    const auto x = tokens(B * T, cfg.vocab_size, 22), y = tokens(B * T, cfg.vocab_size, 23);
    Outcome o;
    o.loss = step(m, p, x, y, &o.grads);
    AdamWConfig opt;
    opt.weight_decay = 0.1f;
    optimizer_step(m, opt, 1e-3f, 1, 24);
    o.params = m.get_params();
    const int Vp = cfg.padded_vocab();
    for (int t = 0; t < 3; t++) {
        m.forward_decode(x[t], t);
        o.decoded.resize((size_t)(t + 1) * Vp);
        m.download_logits_row(o.decoded.data() + (size_t)t * Vp, 0);
    }
    return o;
}

}  // namespace

TEST_CASE("emulated backend: no result depends on which warp runs ahead", "[emulation][model]") {
    struct Case {
        const char* what;
        ModelConfig cfg;
        AttentionKind attention;
        cuda_backend::FlashOptions flash;
    };
    const Case cases[] = {
        {"gpt2-tiny lns", small("gpt2-tiny", NormScheme::lns), AttentionKind::naive, {}},
        {"llama-tiny LayerScale", baseline_variant("llama-tiny", 0), AttentionKind::naive, {}},
        {"gpt2-tiny post", small("gpt2-tiny", NormScheme::post), AttentionKind::naive, {}},
#ifndef ENABLE_FP32
        {"gpt2 flash", small_flash("gpt2-tiny"), AttentionKind::flash, {}},
        {"llama flash", small_flash("llama-tiny"), AttentionKind::flash, {}},
        {"llama flash, RoPE on load", small_flash("llama-tiny"), AttentionKind::flash, {true, false}},
        {"llama flash, wgmma", small_flash("llama-tiny"), AttentionKind::flash, {false, true}},
        {"llama flash, wgmma, 8-warp forward", small_flash("llama-tiny"), AttentionKind::flash, {false, true, 8}},
        {"llama flash, TMA kernels", small_flash("llama-tiny"), AttentionKind::flash, {false, false, 4, true}},
#endif
    };
    for (const Case& c : cases) {
        DYNAMIC_SECTION(c.what) {
            cuda_backend::attention_flash_options(c.flash);
            const Outcome first = run(c.cfg, c.attention, emu::Order::forward);
            const Outcome last = run(c.cfg, c.attention, emu::Order::reverse);
            cuda_backend::attention_flash_options({});
            CHECK(first.loss == last.loss);
            const bool grads = first.grads == last.grads, params = first.params == last.params,
                       decoded = first.decoded == last.decoded;
            CHECK(grads);
            CHECK(params);
            CHECK(decoded);
        }
    }
}

// Device buffers through the backend's own transfers.
struct Buf {
    void* p;
    size_t bytes;
    explicit Buf(size_t b) : p(cuda_backend::alloc(b, "test")), bytes(b) {}
    ~Buf() { cuda_backend::release(p); }
    Buf(const Buf&) = delete;
    Buf& operator=(const Buf&) = delete;
    cuda_backend::floatX* x() const { return static_cast<cuda_backend::floatX*>(p); }
    float* f() const { return static_cast<float*>(p); }
    std::vector<unsigned char> bits() const {
        std::vector<unsigned char> h(bytes);
        cuda_backend::copy_to_host(h.data(), p, bytes);
        return h;
    }
};
using floatX = cuda_backend::floatX;

// The flash variants: RoPE rotated first, in the loads, on wgmma; 8-warp forward blocks;
// forward warps of 32 rows; the TMA kernels, with the backward in one pass (dq added in
// order) or in two kernels.
const std::pair<const char*, cuda_backend::FlashOptions> FLASH_VARIANTS[] = {
    {"default", {}},
    {"rope_on_load", {true, false, 4}},
    {"wgmma", {false, true, 4}},
    {"8 warps", {false, false, 8}},
    {"wgmma, 8 warps", {false, true, 8}},
    {"32 rows per warp", {false, false, 4, false, false, false, 1, 32}},
    {"tma", {false, false, 4, true}},
    {"tma, dq kernel", {false, false, 4, true, true}},
    {"tma, forward block per work", {false, false, 4, true, false, true}},
    {"tma, backward heads in threes", {false, false, 4, true, false, false, 3}}};

// One head of T = 150 (three key tiles, the last partial), or NH heads of T, through the
// flash pair with RoPE, in one of the variants, on fresh buffers.
struct FlashRun {
    static constexpr int B = 1;
    const int T, NH, C;
    const size_t n3, n1;
    Buf qkv, dout, out, lse, dqkv;
    FlashRun(int hs, cuda_backend::FlashOptions options, int T_ = 150, int NH_ = 1)
        : T(T_), NH(NH_), C(NH * hs), n3((size_t)B * T * 3 * C), n1((size_t)B * T * C), qkv(n3 * sizeof(floatX)),
          dout(n1 * sizeof(floatX)), out(n1 * sizeof(floatX)), lse((size_t)B * NH * T * 4), dqkv(n3 * sizeof(floatX)) {
        cuda_backend::upload_f32(qkv.x(), randn(n3, 610).data(), n3);
        cuda_backend::upload_f32(dout.x(), randn(n1, 611).data(), n1);
        cuda_backend::attention_flash_options(options);
    }
    ~FlashRun() { cuda_backend::attention_flash_options({}); }
    void forward() { cuda_backend::attention_flash_forward(out.x(), lse.f(), qkv.x(), B, T, C, NH, 10000.0f); }
    void backward() {
        cuda_backend::attention_flash_backward(dqkv.x(), dout.x(), qkv.x(), out.x(), lse.f(), B, T, C, NH, 10000.0f);
    }
    std::vector<unsigned char> results() const {
        std::vector<unsigned char> r;
        for (const Buf* b : {&out, &lse, &dqkv}) {
            const auto h = b->bits();
            r.insert(r.end(), h.begin(), h.end());
        }
        return r;
    }
};

// Ops at shapes past the model's: several key tiles in the flash pipelines, several row
// groups per block combined through shared memory in the norm backward, in schedules that
// let different warps run ahead: the first or the last warp first; for the wgmma kernels
// also with each wgmma wait ending as late as it may (the other warps run on, and may store
// onto its operands); for the TMA kernels also with their copies landing at issue
// (consumers then run ahead as far as the barriers let them, where they otherwise wait for
// each copy), in either warp order. Every schedule must give the bits of the first.
TEST_CASE("emulated backend: multi-tile flash and norm backward give the same bits whichever warp runs ahead",
          "[emulation][flash][norm]") {
#ifndef ENABLE_FP32
    using emu::Landing, emu::Order, emu::WgmmaRetire;
    const struct {
        Order order;
        Landing landing;
        WgmmaRetire retire;
    } schedules[] = {{Order::forward, Landing::late, WgmmaRetire::at_wait},
                     {Order::reverse, Landing::late, WgmmaRetire::at_wait},
                     {Order::forward, Landing::late, WgmmaRetire::late},  // wgmma from here
                     {Order::forward, Landing::eager, WgmmaRetire::at_wait},  // TMA from here
                     {Order::reverse, Landing::eager, WgmmaRetire::at_wait},
                     {Order::forward, Landing::eager, WgmmaRetire::late}};
    for (int hs : {48, 64, 128})
        for (const auto& [name, options] : FLASH_VARIANTS) {
            if (hs == 48 && (options.wgmma || options.tma)) continue;  // the default kernels there
            DYNAMIC_SECTION("flash hs " << hs << " variant " << name) {
                const int n = options.tma ? 6 : options.wgmma ? 3 : 2;
                std::vector<unsigned char> first;
                for (int o = 0; o < n; o++) {
                    INFO("schedule " << o);
                    WarpOrder w(schedules[o].order, schedules[o].landing, schedules[o].retire);
                    FlashRun run(hs, options);
                    run.forward();
                    run.backward();
                    if (o == 0) first = run.results();
                    else CHECK(run.results() == first);
                }
            }
        }
#endif
    SECTION("norm backward, 70 rows of 40") {
        const int N = 70, C = 40, layer = 5;
        const size_t NC = (size_t)N * C;
        Buf res(NC * sizeof(floatX)), w(C * sizeof(floatX)), dout(NC * sizeof(floatX)), mean(N * 4), rstd(N * 4);
        std::vector<float> h_res = randn(NC, 30), h_w = randn(C, 31, 0.3f), h_mean(N), h_rstd(N), h_out(NC);
        for (float& v : h_w) v += 1.0f;
        cuda_backend::upload_f32(res.x(), h_res.data(), NC);
        cuda_backend::upload_f32(w.x(), h_w.data(), C);
        cuda_backend::upload_f32(dout.x(), randn(NC, 32).data(), NC);
        cpu_backend::residual_norm_forward(nullptr, h_out.data(), h_mean.data(), h_rstd.data(), h_res.data(), nullptr,
                                           1.0f, h_w.data(), nullptr, N, C, NormKind::layernorm, 1e-5f,
                                           NormScheme::lns, layer);
        cuda_backend::copy_from_host(mean.p, h_mean.data(), N * 4);
        cuda_backend::copy_from_host(rstd.p, h_rstd.data(), N * 4);
        std::vector<unsigned char> got[2];
        for (int o = 0; o < 2; o++) {
            WarpOrder order(o ? emu::Order::reverse : emu::Order::forward);
            Buf dx(NC * sizeof(floatX)), dy(NC * sizeof(floatX)), dw(C * sizeof(floatX)), db(C * sizeof(floatX));
            cuda_backend::zero(dw.p, dw.bytes), cuda_backend::zero(db.p, db.bytes);
            cuda_backend::residual_norm_backward(dx.x(), dy.x(), dw.x(), db.x(), dout.x(), nullptr, res.x(), w.x(),
                                                 mean.f(), rstd.f(), 1.6f, N, C, NormKind::layernorm, NormScheme::lns,
                                                 layer);
            for (const Buf* b : {&dx, &dy, &dw, &db}) {
                const auto h = b->bits();
                got[o].insert(got[o].end(), h.begin(), h.end());
            }
        }
        CHECK(got[0] == got[1]);
    }
}

// Shared-memory bank conflicts (emu::mem_stats): an ldmatrix.x4 needs 4 wavefronts when
// each matrix's 8 rows fall in distinct 16-byte bank groups, a warp's cp.async 4.
__global__ void ldmatrix_rows_kernel(int row_stride_bytes) {
    unsigned char* smem = dynamic_smem();
    const int lane = threadIdx.x % 32;
    uint32_t r[4];
    ldsm_x4(r, smem + (lane % 8) * row_stride_bytes + (lane / 8) * 16);
}

__global__ void cp_async_rows_kernel(const unsigned char* src, int src_stride_bytes, int dst_stride_bytes) {
    unsigned char* smem = dynamic_smem();
    const int lane = threadIdx.x % 32;
    cp_async_16(smem + lane * dst_stride_bytes, src + lane * src_stride_bytes, true);
    cp_async_commit();
    cp_async_wait<0>();
}

TEST_CASE("the emulator counts shared-memory wavefronts and global sectors", "[emulation]") {
    for (int stride : {16, 144, 128}) {  // contiguous, padded rows, rows in one bank group
        emu::reset_mem_stats();
        LNS_LAUNCH(ldmatrix_rows_kernel, 1, 32, 8 * 256, stride);
        const emu::MemStats s = emu::mem_stats();
        INFO("ldmatrix row stride " << stride);
        CHECK(s.ldmatrix == 1);
        CHECK(s.ldmatrix_wavefronts == (stride == 128 ? 32 : 4));
    }
    alignas(32) static unsigned char global[32 * 64];
    for (int stride : {16, 64}) {  // coalesced, or one 16-byte piece per 64 bytes
        emu::reset_mem_stats();
        LNS_LAUNCH(cp_async_rows_kernel, 1, 32, 32 * 128, global, stride, stride == 16 ? 16 : 128);
        const emu::MemStats s = emu::mem_stats();
        INFO("cp.async stride " << stride);
        CHECK(s.cp_async == 1);
        CHECK(s.cp_async_sectors_min == 16);
        CHECK(s.cp_async_sectors == (stride == 16 ? 16 : 32));
        CHECK(s.cp_async_wavefronts == (stride == 16 ? 4 : 32));  // 128-byte destination rows: 8-way
    }
}

// The TMA kernels' blocks wait on one another (the one-pass backward's counters) and share
// their work (the forward's and the backward's tickets). Four at a time, taking turns a
// step each or the newest first (which then gets ahead of the blocks it must wait for),
// and two at a time started from the last block (work by blockIdx instead of by ticket
// would then wait for blocks that cannot start), and four newest first with the copies
// landing at issue and the wgmma waits ending late, they must give the bits they give one
// after another: two heads of T = 300, three key blocks each (the last waits for none,
// the first for both others) over five query tiles, and six forward works.
TEST_CASE("emulated backend: TMA flash blocks running at once give the bits of blocks in turn",
          "[emulation][flash]") {
#ifndef ENABLE_FP32
    for (int hs : {64, 128})
        for (const auto& [name, options] : FLASH_VARIANTS) {
            if (!options.tma) continue;
            DYNAMIC_SECTION("hs " << hs << " variant " << name) {
                const struct {
                    const char* name;
                    int resident;
                    emu::Order order;
                    emu::Landing landing = emu::Landing::late;
                    emu::WgmmaRetire retire = emu::WgmmaRetire::at_wait;
                } schedules[] = {{"in turn", 1, emu::Order::forward},
                                 {"4 at once, taking turns", 4, emu::Order::forward},
                                 {"4 at once, from the last block, newest first", 4, emu::Order::reverse},
                                 {"2 at once, from the last block, newest first", 2, emu::Order::reverse},
                                 {"4 at once, newest first, copies landing at issue, wgmma waits ending late", 4,
                                  emu::Order::reverse, emu::Landing::eager, emu::WgmmaRetire::late}};
                constexpr int N = std::size(schedules);
                std::vector<unsigned char> got[N];
                for (int r = 0; r < N; r++) {
                    INFO(schedules[r].name);
                    ResidentBlocks resident(schedules[r].resident);
                    WarpOrder w(schedules[r].order, schedules[r].landing, schedules[r].retire);
                    FlashRun run(hs, options, 300, 2);
                    run.forward();
                    run.backward();
                    got[r] = run.results();
                    if (r > 0) CHECK(got[r] == got[0]);
                }
            }
        }
#endif
}

// The padded tiles (attention_flash.cuh: ROW_STRIDE) and the core-matrix tiles of the
// wgmma path are laid out so that no ldmatrix or cp.async waits on a bank conflict, and
// the tile loads read whole 32-byte sectors (head rows of 128 or 256 contiguous bytes).
// The TMA kernels copy by TMA only; the separate dq kernel (tma_dq_kernel) reads its rows'
// A fragments from the 128-byte swizzled tiles with ldmatrix, which the swizzle keeps
// free of conflicts too. Heads of 48 (mma.sync only): rows of 6 chunks padded to 7, so
// the 8 chunks of a quarter-warp's cp.async, which span two rows, do not fall in 8
// distinct 16-byte bank groups: at most twice the minimum of wavefronts.
TEST_CASE("emulated backend: the flash kernels' ldmatrix and cp.async are conflict-free and coalesced",
          "[emulation][flash]") {
#ifndef ENABLE_FP32
    for (int hs : {48, 64, 128})
        for (const auto& [name, options] : FLASH_VARIANTS) {
            if (hs == 48 && (options.wgmma || options.tma)) continue;  // the default kernels there
            DYNAMIC_SECTION("hs " << hs << " variant " << name) {
                FlashRun run(hs, options);
                for (int pass = 0; pass < 2; pass++) {
                    INFO((pass ? "backward" : "forward"));
                    emu::reset_mem_stats();
                    if (pass == 0) run.forward();
                    else run.backward();
                    const emu::MemStats s = emu::mem_stats();
                    if (options.tma) {  // every tile by TMA; ldmatrix only for the dq kernel's A fragments
                        CHECK(s.cp_async == 0);
                        CHECK((s.ldmatrix > 0) == (pass == 1 && options.tma_dq_kernel));
                        CHECK(s.ldmatrix_wavefronts == 4 * s.ldmatrix);  // the swizzle spreads the rows
                        continue;
                    }
                    CHECK(s.ldmatrix > 0);
                    CHECK(s.cp_async > 0);
                    CHECK(s.ldmatrix_wavefronts == 4 * s.ldmatrix);
                    if (hs == 48) CHECK(s.cp_async_wavefronts <= 8 * s.cp_async);
                    else CHECK(s.cp_async_wavefronts == 4 * s.cp_async);
                    CHECK(s.cp_async_sectors == s.cp_async_sectors_min);  // whole sectors only
                }
            }
        }
#endif
}

TEST_CASE("emulated backend: a model returns all the device memory it allocates", "[emulation][model]") {
    const ModelConfig cfg = small("llama-tiny", NormScheme::lns);
    (void)run(cfg, AttentionKind::naive, emu::Order::forward);  // scratch buffers grow once and stay
    const size_t before = emu::device_bytes_in_use();
    {
        GPT<cuda_backend> m(cfg, B, T, true);
        CHECK(emu::device_bytes_in_use() > before);
    }
    CHECK(emu::device_bytes_in_use() == before);
}

__global__ void fill_kernel(float* p, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) p[i] = 1.0f;
}

TEST_CASE("the emulated runtime catches what a GPU would fault on or leave undefined", "[emulation]") {
    void* p = nullptr;
    REQUIRE(cudaMalloc(&p, 100) == cudaSuccess);
    float f;
    std::memcpy(&f, p, 4);
    CHECK(std::isnan(f));  // fresh device memory is NaN, so reading it before writing shows
    std::vector<char> host(200, 1);
    CHECK(cudaMemcpyAsync(p, host.data(), 100, cudaMemcpyHostToDevice, nullptr) == cudaSuccess);
    CHECK_THROWS_WITH(cudaMemcpyAsync(p, host.data(), 101, cudaMemcpyHostToDevice, nullptr),
                      Catch::Contains("past the end"));
    CHECK_THROWS_WITH(cudaMemcpyAsync(host.data(), (char*)p + 60, 41, cudaMemcpyDeviceToHost, nullptr),
                      Catch::Contains("past the end"));
    CHECK_THROWS_WITH(cudaMemsetAsync((char*)p + 1, 0, 100, nullptr), Catch::Contains("past the end"));
    CHECK_THROWS_WITH(cudaFree((char*)p + 16), Catch::Contains("not a pointer cudaMalloc returned"));
    // a copy whose kind contradicts its pointers (here: arguments swapped)
    CHECK_THROWS_WITH(cudaMemcpyAsync(host.data(), p, 100, cudaMemcpyHostToDevice, nullptr),
                      Catch::Contains("not what cudaMemcpyKind"));
    // a kernel writing one element past the end of a buffer is named after its launch
    float* buf = static_cast<float*>(p);
    LNS_LAUNCH(fill_kernel, 1, 32, 0, buf, 25);  // 100 bytes: 25 floats
    CHECK_THROWS_WITH(LNS_LAUNCH(fill_kernel, 1, 32, 0, buf, 26), Catch::Contains("kernel fill_kernel wrote past the end"));
    CHECK(cudaFree(p) == cudaSuccess);
    CHECK_THROWS(cudaFree(p));  // twice
    // cuBLAS refuses a leading dimension below the rows it stores
    const float one = 1.0f, zero = 0.0f;
    std::vector<float> a(64), b(64), c(64);
    CHECK(cublasGemmStridedBatchedEx(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, a.data(), CUDA_R_32F, 7, 0,
                                     b.data(), CUDA_R_32F, 8, 0, &zero, c.data(), CUDA_R_32F, 8, 0, 1,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
}

// One TMA box (rows x 64 bf16 of a tensor of `rows_valid` rows) to smem, then every bf16
// of the box's smem as it lies there, read after the barrier's phase (wait) or at once.
__global__ void tma_box_kernel(float* out, const __grid_constant__ CUtensorMap map, int rows, bool wait) {
    unsigned char* smem = dynamic_smem();
    uint64_t* bar = reinterpret_cast<uint64_t*>(smem + rows * 128);
    if (threadIdx.x == 0) {
        mbar_init(bar, 1);
        mbar_arrive_expect_tx(bar, rows * 128);
        tma_load_4d(smem, &map, bar, 0, 0, 0, 0);
    }
    __syncthreads();
    if (wait) mbar_wait(bar, 0);
    const __nv_bfloat16* s = reinterpret_cast<const __nv_bfloat16*>(smem);
    for (int i = threadIdx.x; i < rows * 64; i += blockDim.x) out[i] = __bfloat162float(s[i]);
}
// Waits for a phase that needs two arrivals and gets one.
__global__ void stalled_phase_kernel() {
    uint64_t* bar = reinterpret_cast<uint64_t*>(dynamic_smem());
    if (threadIdx.x == 0) mbar_init(bar, 2);
    __syncthreads();
    if (threadIdx.x == 0) mbar_arrive(bar);
    mbar_wait(bar, 0);
}

// Warp 0 syncs on named barrier 1 of 64 threads, warp 1 arrives `arrivals` times.
__global__ void named_barrier_kernel(int arrivals) {
    if (threadIdx.x < 32) named_barrier_sync<1, 64>();
    else
        for (int i = 0; i < arrivals; i++) named_barrier_arrive<1, 64>();
}

TEST_CASE("the emulated TMA lands swizzled boxes at the barrier's phase; stalled phases and unbalanced named barriers fail",
          "[emulation]") {
    const int rows = 16, valid = 11;  // rows 11..15 lie outside the tensor
    std::vector<__nv_bfloat16> src((size_t)valid * 64);
    for (size_t i = 0; i < src.size(); i++) src[i] = __float2bfloat16_rn((float)(i % 251) + 1.0f);
    alignas(64) CUtensorMap map;
    emu::encode_tensor_map(&map, src.data(), {64, (uint64_t)valid, 1, 1}, {128, 128 * valid, 128 * valid},
                           {64, (uint32_t)rows, 1, 1});
    std::vector<float> out(rows * 64, -1.0f);
    const size_t smem = rows * 128 + 8;
    LNS_LAUNCH(tma_box_kernel, 1, 64, smem, out.data(), map, rows, true);
    // element (r, c) at 16-byte chunk (c / 8) ^ (r % 8) of row r
    int wrong = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < 64; c++) {
            const float want = r < valid ? __bfloat162float(src[(size_t)r * 64 + c]) : 0.0f;
            wrong += out[r * 64 + ((c / 8) ^ (r % 8)) * 8 + c % 8] != want;
        }
    CHECK(wrong == 0);
    CHECK(out[1 * 64 + 0] != __bfloat162float(src[64]));  // row 1 is swizzled: chunk 0 holds chunk 1
    // without the wait: the reads come before the copy lands, and the block exits with it in flight
    CHECK_THROWS_WITH(LNS_LAUNCH(tma_box_kernel, 1, 64, smem, out.data(), map, rows, false),
                      Catch::Contains("TMA copies in flight"));
    CHECK(std::isnan(out[0]));
    CHECK_THROWS_WITH(LNS_LAUNCH(stalled_phase_kernel, 1, 32, 8), Catch::Contains("mbarrier phases that never complete"));
    LNS_LAUNCH(named_barrier_kernel, 1, 64, 0, 1);  // one sync, one arrival: balanced
    CHECK_THROWS_WITH(LNS_LAUNCH(named_barrier_kernel, 1, 64, 0, 0), Catch::Contains("named barriers that never fill"));
    CHECK_THROWS_WITH(LNS_LAUNCH(named_barrier_kernel, 1, 64, 0, 2), Catch::Contains("partly arrived"));
    CHECK_THROWS_WITH(emu::encode_tensor_map(&map, src.data(), {64, (uint64_t)valid, 1, 1},
                                             {120, 120 * valid, 120 * valid}, {64, (uint32_t)rows, 1, 1}),
                      Catch::Contains("multiples of 16"));
}

// 16 floats of shared memory (i + 1) to dst by a bulk copy, then added by a bulk reduction
// (dst = 2 (i + 1)); `early` overwrites the source with -1 (and fences) after the copy's
// commit but before its read wait, `skip_wait` exits without waiting, `overlap` reduces onto dst
// before the copy has written it, `unfenced` leaves out the fence.proxy.async between the
// stores and the copy.
__global__ void bulk_copy_kernel(float* dst, bool early, bool skip_wait, bool overlap = false, bool unfenced = false) {
    float* s = reinterpret_cast<float*>(dynamic_smem());
    if (threadIdx.x != 0) return;
    for (int i = 0; i < 16; i++) s[i] = (float)(i + 1);
    if (!unfenced) fence_proxy_async();
    bulk_store(dst, s, 64);
    bulk_commit();
    if (overlap) bulk_reduce_add(dst + 12, s, 16);
    if (skip_wait) return;
    if (early) {
        for (int i = 0; i < 16; i++) s[i] = -1.0f;
        fence_proxy_async();  // (no help: the copy may read its source any time until its read wait)
    }
    bulk_wait_read<0>();
    bulk_wait<0>();
    bulk_reduce_add(dst, s, 64);
    bulk_commit();
    bulk_wait<0>();
}
// Block x waits until the counter reads `first ? x : gridDim.x - 1 - x`, then adds 1; with
// `unfinished` it adds before its bulk copy's writes are complete.
__global__ void semaphore_kernel(int* counter, float* dst, bool first, bool unfinished) {
    if (threadIdx.x != 0) return;
    semaphore_wait(counter, first ? blockIdx.x : gridDim.x - 1 - blockIdx.x);
    if (unfinished) {
        float* s = reinterpret_cast<float*>(dynamic_smem());
        s[0] = s[1] = s[2] = s[3] = 0.0f;
        fence_proxy_async();
        bulk_store(dst, s, 16);
        bulk_commit();
        bulk_wait_read<0>();
    }
    semaphore_add(counter, 1);
    if (unfinished) bulk_wait<0>();
}

// out[block] = the sum of its threads' indices, through a static shared array of one
// entry per warp (blocks of at most 32 warps).
__global__ void static_shared_sum_kernel(int* out) {
    __shared__ int part[32];
    const int w = threadIdx.x / 32;
    if (threadIdx.x % 32 == 0) part[w] = 32 * 32 * w + 31 * 32 / 2;  // its warp's indices
    __syncthreads();
    if (threadIdx.x == 0) {
        int sum = 0;
        for (unsigned i = 0; i < blockDim.x / 32; i++) sum += part[i];
        out[blockIdx.x] = sum;
    }
}

TEST_CASE("emulated bulk copies read at their read wait and write at completion; semaphores order blocks",
          "[emulation]") {
    alignas(16) float dst[16];
    LNS_LAUNCH(bulk_copy_kernel, 1, 32, 64, dst, false, false);
    int wrong = 0;
    for (int i = 0; i < 16; i++) wrong += dst[i] != 2.0f * (i + 1);
    CHECK(wrong == 0);
    // a source overwritten before the read wait (a race), or stored without a fence
    CHECK_THROWS_WITH(LNS_LAUNCH(bulk_copy_kernel, 1, 32, 64, dst, true, false),
                      Catch::Contains("cp.async.bulk: its source in shared memory changed between the copy's issue "
                                      "and its read wait"));
    CHECK_THROWS_WITH(LNS_LAUNCH(bulk_copy_kernel, 1, 32, 64, dst, false, false, false, true),
                      Catch::Contains("cp.async.bulk reads shared memory that ordinary stores changed after the last "
                                      "fence.proxy.async"));
    CHECK_THROWS_WITH(LNS_LAUNCH(bulk_copy_kernel, 1, 32, 64, dst, false, true),
                      Catch::Contains("bulk copies it has not waited for"));
    CHECK_THROWS_WITH(LNS_LAUNCH(bulk_copy_kernel, 1, 32, 64, dst, false, false, true),
                      Catch::Contains("has yet to write"));
    int counter = 0;
    LNS_LAUNCH(semaphore_kernel, 4, 32, 16, &counter, dst, true, false);  // block x after blocks 0..x-1
    CHECK(counter == 4);
    counter = 0;  // block x after blocks x+1..: they run later here
    CHECK_THROWS_WITH(LNS_LAUNCH(semaphore_kernel, 4, 32, 16, &counter, dst, false, false),
                      Catch::Contains("semaphore_wait reads 0, waits for 3"));
    counter = 0;
    CHECK_THROWS_WITH(LNS_LAUNCH(semaphore_kernel, 1, 32, 16, &counter, dst, true, true),
                      Catch::Contains("before this thread's bulk copies have completed"));
    {  // blocks at once: a wait on a later block ends if that block is resident too
        ResidentBlocks resident(4);
        counter = 0;
        LNS_LAUNCH(semaphore_kernel, 4, 32, 16, &counter, dst, false, false);
        CHECK(counter == 4);
        counter = 0;  // 5 blocks, 4 at a time: blocks 0..3 wait for block 4, which never starts
        CHECK_THROWS_WITH(LNS_LAUNCH(semaphore_kernel, 5, 32, 16, &counter, dst, false, false),
                          Catch::Contains("every resident block waits so"));
        CHECK_THROWS_WITH(emu::thread_idx(), Catch::Contains("outside an emulated kernel"));  // none left current
        counter = 0;  // and after that failure, a launch starts afresh
        LNS_LAUNCH(semaphore_kernel, 3, 32, 16, &counter, dst, false, false);
        CHECK(counter == 3);
        // static shared arrays are one per kernel here: blocks resident together would share it
        int sums[2] = {-1, -1};
        CHECK_THROWS_WITH(LNS_LAUNCH(static_shared_sum_kernel, 2, 64, 0, sums),
                          Catch::Contains("a static __shared__ array with 2 blocks resident"));
        LNS_LAUNCH(static_shared_sum_kernel, 1, 64, 0, sums);  // one block: nothing shares it
        CHECK(sums[0] == 63 * 64 / 2);
    }
    int sums[2] = {-1, -1};  // blocks in turn
    LNS_LAUNCH(static_shared_sum_kernel, 2, 64, 0, sums);
    CHECK((sums[0] == 63 * 64 / 2 && sums[1] == 63 * 64 / 2));
}

// c = A B^T (64 x 32) by one wgmma with both operands by descriptor (K-major core
// matrices of 8 rows x 16 bytes), A (64 x 16) and B (32 x 16) all ones, put in shared
// memory by ordinary stores, with or without the fence.proxy.async the async proxy needs
// to see them. c: each thread's 16 accumulators.
__global__ void wgmma_after_stores_kernel(float* c, bool fence) {
    unsigned char* smem = dynamic_smem();
    __nv_bfloat16* s = reinterpret_cast<__nv_bfloat16*>(smem);
    for (int i = threadIdx.x; i < (64 + 32) * 16; i += blockDim.x) s[i] = __float2bfloat16(1.0f);
    if (fence) fence_proxy_async();
    __syncthreads();
    float d[4][4] = {};
    wgmma_fence();
    wgmma_bf16_ss(d, wgmma_desc(smem, 128, 256), wgmma_desc(smem + 64 * 16 * 2, 128, 256));
    wgmma_commit();
    wgmma_wait<0>();
    for (int nt = 0; nt < 4; nt++)
        for (int e = 0; e < 4; e++) c[threadIdx.x * 16 + nt * 4 + e] = d[nt][e];
}

TEST_CASE("the emulated async proxy sees ordinary shared-memory stores only through fence.proxy.async",
          "[emulation]") {
    std::vector<float> c(128 * 16, 0.0f);
    LNS_LAUNCH(wgmma_after_stores_kernel, 1, 128, 3072, c.data(), true);
    int wrong = 0;
    for (float x : c) wrong += x != 16.0f;
    CHECK(wrong == 0);
    CHECK_THROWS_WITH(LNS_LAUNCH(wgmma_after_stores_kernel, 1, 128, 3072, c.data(), false),
                      Catch::Contains("wgmma B reads shared memory that ordinary stores changed after the last "
                                      "fence.proxy.async"));
}

// The same product by warps 0-3 of 5 with the operands fenced, and then a store of 2 into
// an operand: into B by warp 4 after a barrier that follows the wait (fine), by warp 4 with
// no barrier between (a race: the hardware reads B until the wait), or into A's row 48 by
// warp 3 itself between commit and wait (only warp 3 reads that row).
enum class OperandStore { after_wait, other_warp, own_warp };
__global__ void wgmma_operand_store_kernel(float* c, OperandStore when) {
    unsigned char* smem = dynamic_smem();
    __nv_bfloat16* s = reinterpret_cast<__nv_bfloat16*>(smem);
    __nv_bfloat16* b = s + 64 * 16;
    for (int i = threadIdx.x; i < (64 + 32) * 16; i += blockDim.x) s[i] = __float2bfloat16(1.0f);
    fence_proxy_async();
    __syncthreads();
    const int warp = threadIdx.x / 32;
    float d[4][4] = {};
    if (warp < 4) {
        wgmma_fence();
        wgmma_bf16_ss(d, wgmma_desc(smem, 128, 256), wgmma_desc(b, 128, 256));
        wgmma_commit();
        // A's (48, 0): core matrix 6 in M, 256 bytes (128 elements) apart
        if (when == OperandStore::own_warp && threadIdx.x == 96) s[6 * 128] = __float2bfloat16(2.0f);
        wgmma_wait<0>();
    } else if (when == OperandStore::other_warp) {
        b[threadIdx.x % 32] = __float2bfloat16(2.0f);
    }
    __syncthreads();
    if (warp == 4 && when == OperandStore::after_wait) b[threadIdx.x % 32] = __float2bfloat16(2.0f);
    if (warp < 4)
        for (int nt = 0; nt < 4; nt++)
            for (int e = 0; e < 4; e++) c[threadIdx.x * 16 + nt * 4 + e] = d[nt][e];
}

TEST_CASE("emulated wgmma operands must stay unchanged until the wait that retires it", "[emulation]") {
    std::vector<float> c(128 * 16, 0.0f);
    LNS_LAUNCH(wgmma_operand_store_kernel, 1, 160, 3072, c.data(), OperandStore::after_wait);
    int wrong = 0;
    for (float x : c) wrong += x != 16.0f;
    CHECK(wrong == 0);
    const std::string changed = "which a wgmma of this warp reads, changed before the wait retired it";
    // warp 3's own store, whenever its wait ends
    for (emu::WgmmaRetire r : {emu::WgmmaRetire::at_wait, emu::WgmmaRetire::late}) {
        WarpOrder w(emu::Order::forward, emu::Landing::late, r);
        CHECK_THROWS_WITH(LNS_LAUNCH(wgmma_operand_store_kernel, 1, 160, 3072, c.data(), OperandStore::own_warp),
                          Catch::Contains("thread 96: wgmma.wait_group: shared memory at offset 1536, " + changed));
    }
    // warp 4's, once the waits end late (warp 4 then runs first); warp 0's ends first, and
    // B, which every warp reads, fails there
    WarpOrder w(emu::Order::forward, emu::Landing::late, emu::WgmmaRetire::late);
    CHECK_THROWS_WITH(LNS_LAUNCH(wgmma_operand_store_kernel, 1, 160, 3072, c.data(), OperandStore::other_warp),
                      Catch::Contains("thread 0: wgmma.wait_group: shared memory at offset 2048, " + changed));
}

// 1/3 in each thread's rounding mode: the host's, also on fibers reused from an earlier launch
// (a volatile global: the compiler may fold a constant argument even into a volatile parameter)
volatile float g_three = 3.0f;
__global__ void third_kernel(float* out) { out[threadIdx.x] = 1.0f / g_three; }

TEST_CASE("emulated threads run in the host's floating-point rounding mode", "[emulation]") {
    std::vector<float> out(64);
    LNS_LAUNCH(third_kernel, 1, 32, 0, out.data());  // fibers now parked
    const int mode = std::fegetround();
    std::fesetround(FE_DOWNWARD);
    const float down = 1.0f / g_three;
    LNS_LAUNCH(third_kernel, 1, 64, 0, out.data());  // 32 reused fibers, 32 new
    std::fesetround(mode);
    const float nearest = 1.0f / g_three;
    REQUIRE(down != nearest);
    for (int i = 0; i < 64; i++) {
        INFO("thread " << i);
        CHECK(out[i] == down);
    }
}

// D (m,n) = A^T B with A stored (k,m), B (k,n), all column-major bf16, through the
// calls kernels/matmul.cu makes.
struct LtCall {
    static constexpr int m = 16, n = 8, k = 32;
    int a_rows = k, a_cols = m;
    int64_t lda = k;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void* aux = nullptr;
    int64_t aux_ld = 0;
    uint32_t promise_a = 16;                       // the alignment of A the heuristic is told (B, D: 16)
    size_t a_offset = 0;                           // elements: A less aligned than promised
    const cublasLtMatmulAlgo_t* algo = nullptr;    // instead of the heuristic's
    cublasLtMatmulAlgo_t* found_algo = nullptr;    // the heuristic's, out

    std::vector<__nv_bfloat16> A = std::vector<__nv_bfloat16>((size_t)k * m + 8, __float2bfloat16(1.0f));
    std::vector<__nv_bfloat16> B = std::vector<__nv_bfloat16>((size_t)k * n, __float2bfloat16(2.0f));
    std::vector<__nv_bfloat16> D = std::vector<__nv_bfloat16>((size_t)m * n, __float2bfloat16(NAN));

    // The heuristic's status; the matmul runs when it succeeds.
    cublasStatus_t run() {
        cublasLtMatmulDesc_t op;
        cublasLtMatrixLayout_t a, b, d;
        cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
        const cublasOperation_t t = CUBLAS_OP_T;
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t);
        const uint32_t e = epilogue;
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e);
        if (aux) {
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux);
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld);
        }
        cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, a_rows, a_cols, lda);
        cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, k, n, k);
        cublasLtMatrixLayoutCreate(&d, CUDA_R_16BF, m, n, m);
        cublasLtMatmulPreference_t pref;
        cublasLtMatmulPreferenceCreate(&pref);
        const uint32_t al16 = 16;  // what malloc gives the vectors
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &promise_a,
                                             sizeof promise_a);
        for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
            cublasLtMatmulPreferenceSetAttribute(pref, attr, &al16, sizeof al16);
        cublasLtMatmulHeuristicResult_t r;
        int found = 0;
        const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(nullptr, op, a, b, d, d, pref, 1, &r, &found);
        cublasLtMatmulPreferenceDestroy(pref);
        std::exception_ptr failure;
        if (st == CUBLAS_STATUS_SUCCESS) {
            if (found_algo) *found_algo = r.algo;
            const float one = 1.0f, zero = 0.0f;
            try {
                cublasLtMatmul(nullptr, op, &one, A.data() + a_offset, a, B.data(), b, &zero, D.data(), d, D.data(),
                               d, algo ? algo : &r.algo, nullptr, 0, nullptr);
            } catch (...) {
                failure = std::current_exception();
            }
        }
        cublasLtMatrixLayoutDestroy(d), cublasLtMatrixLayoutDestroy(b), cublasLtMatrixLayoutDestroy(a);
        cublasLtMatmulDescDestroy(op);
        if (failure) std::rethrow_exception(failure);
        return st;
    }
};

TEST_CASE("the emulated cuBLASLt refuses inconsistent descriptors and misused algorithms", "[emulation][matmul]") {
    const int m = LtCall::m, n = LtCall::n, k = LtCall::k;
    {
        LtCall c;
        REQUIRE(c.run() == CUBLAS_STATUS_SUCCESS);
        CHECK(__bfloat162float(c.D[0]) == 2.0f * k);  // C (NaN here) is not read with beta 0
        CHECK(__bfloat162float(c.D[(size_t)m * n - 1]) == 2.0f * k);
    }
    LtCall not_op_a, short_ld, no_bias, aux_ld, aux_ok;
    not_op_a.a_rows = m, not_op_a.a_cols = k, not_op_a.lda = m;  // stored as if not transposed
    CHECK(not_op_a.run() == CUBLAS_STATUS_INVALID_VALUE);
    short_ld.lda = k - 1;
    CHECK(short_ld.run() == CUBLAS_STATUS_INVALID_VALUE);
    no_bias.epilogue = CUBLASLT_EPILOGUE_BIAS;
    CHECK(no_bias.run() == CUBLAS_STATUS_INVALID_VALUE);
    std::vector<__nv_bfloat16> aux((size_t)24 * n);
    aux_ld.epilogue = aux_ok.epilogue = CUBLASLT_EPILOGUE_GELU_AUX;
    aux_ld.aux = aux_ok.aux = aux.data();
    aux_ld.aux_ld = 20;  // not a multiple of 8
    aux_ok.aux_ld = 24;
    CHECK(aux_ld.run() == CUBLAS_STATUS_INVALID_VALUE);
    CHECK(aux_ok.run() == CUBLAS_STATUS_SUCCESS);

    // an algorithm the heuristic chose for another problem (no GELU epilogue)
    cublasLtMatmulAlgo_t plain;
    LtCall first, second;
    first.found_algo = &plain;
    REQUIRE(first.run() == CUBLAS_STATUS_SUCCESS);
    second.epilogue = CUBLASLT_EPILOGUE_GELU_AUX, second.aux = aux.data(), second.aux_ld = 24;
    second.algo = &plain;
    CHECK_THROWS_WITH(second.run(), Catch::Contains("chosen for another problem"));
    // an aux matrix less aligned than when the algorithm was chosen (the heuristic reads its address)
    cublasLtMatmulAlgo_t aligned_aux;
    LtCall third, fourth;
    third.epilogue = fourth.epilogue = CUBLASLT_EPILOGUE_GELU_AUX, third.aux_ld = fourth.aux_ld = 24;
    third.aux = aux.data(), fourth.aux = aux.data() + 1;
    third.found_algo = &aligned_aux;
    REQUIRE(third.run() == CUBLAS_STATUS_SUCCESS);
    fourth.algo = &aligned_aux;
    CHECK_THROWS_WITH(fourth.run(), Catch::Contains("the aux matrix is less aligned"));
    // A less aligned than the heuristic was told
    LtCall misaligned;
    misaligned.a_offset = 1;
    CHECK_THROWS_WITH(misaligned.run(), Catch::Contains("less aligned than the algorithm"));
    misaligned.promise_a = 2;
    CHECK(misaligned.run() == CUBLAS_STATUS_SUCCESS);
}
#endif
