// Linear layers on cuBLASLt: out = inp @ w^T (+ bias) (-> GELU), and its backward.
//
// Layouts. Every tensor is row-major (cpu/cpu_backend.h); cuBLASLt is column-major,
// and a row-major (R, K) matrix is the column-major (K, R) matrix with ld K. So
//   forward   out^T (OC,N)  = w^T-as-stored(C,OC)^T . inp^T (C,N)     A=w   op T, B=inp  op N
//   dinp      dinp^T (C,N)  = w (C,OC) . dout^T (OC,N)                A=w   op N, B=dout op N
//   dw        dw^T (C,OC)  += inp^T (C,N) . dout (N,OC)               A=inp op N, B=dout op T
// Every leading dimension is C or OC and never N, so N (= B*T) may be anything, while
// C and OC must be multiples of 8: bf16 rows of 16 bytes, which the tensor-core
// algorithms and the GELU epilogue's aux matrix need (its ld must be divisible by 8).
//
// Precision: operands in floatX (bf16, or fp32 under ENABLE_FP32), compute and
// scale type fp32 (CUBLAS_COMPUTE_32F, never TF32), one rounding to floatX at the end.
// Split-K reductions are restricted to fp32 partials in the workspace where the
// heuristic allows it: the in-place scheme would add partials in bf16.
//
// GELU. cuBLASLt's GELU epilogues are the tanh approximation
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// (the function GPT-2 and cpu/activation.cpp use), evaluated with the hardware's
// approximate tanh: relative error ~1e-4, far below bf16's 2^-9 but above fp32's.
// So the bf16 build fuses: GELU_AUX(_BIAS) writes pre_gelu as the aux output and
// gelu(pre) as D; DGELU reads pre_gelu and writes gelu'(pre) * (dout @ w). The fp32
// build, whose purpose is exact comparison with the CPU, runs the same matmuls with a
// plain (or BIAS) epilogue and applies GELU / GELU' in a kernel below with tanhf.
// If the heuristic has no fused algorithm for a shape, the unfused path runs instead.
//
// dbias (+= column sums of dout) is our own two-kernel reduction, not the BGRADB
// epilogue: BGRADB overwrites instead of adding, would tie dbias to the dw matmul's
// split-K choice, and its reduction order is not documented. Here each block sums a
// fixed slab of DBIAS_ROWS rows in a fixed order into fp32 partials
// (SCRATCH_MATMUL_DBIAS), and a second kernel adds the slabs in order: the bits
// depend only on N and OC. No atomics anywhere; cuBLASLt is deterministic for a
// fixed shape, device and workspace on one stream.
#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "common/check.h"
#include "common/nvtx.h"
#include "kernels/cuda_common.cuh"

namespace {

#ifdef ENABLE_FP32
constexpr cudaDataType_t DATA_TYPE = CUDA_R_32F;
constexpr bool FUSE_GELU = false;  // exact comparison build: GELU with tanhf, below
#else
constexpr cudaDataType_t DATA_TYPE = CUDA_R_16BF;
constexpr bool FUSE_GELU = true;
#endif
constexpr size_t WORKSPACE_BYTES = (size_t)32 << 20;  // what Hopper's fastest kernels ask for

// ---------------------------------------------------------------------------
// elementwise GELU for the unfused path (the formulas of cpu/activation.cpp)

constexpr float GELU_K = 0.7978845608028654f;  // sqrt(2/pi)

__global__ void gelu_forward_kernel(floatX* __restrict__ out, const floatX* __restrict__ inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float x = to_float(inp[i]);
        out[i] = from_float<floatX>(0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x))));
    }
}

// dinp = gelu'(pre) * dinp, in place
__global__ void gelu_backward_inplace_kernel(floatX* dinp, const floatX* __restrict__ pre, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float x = to_float(pre[i]);
        const float u = GELU_K * (x + 0.044715f * x * x * x);
        const float th = tanhf(u);
        const float sech2 = 1.0f - th * th;
        const float grad = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = from_float<floatX>(grad * to_float(dinp[i]));
    }
}

int elementwise_blocks(size_t n) {
    const size_t blocks = (n + 255) / 256;
    return (int)(blocks < ((size_t)1 << 20) ? blocks : ((size_t)1 << 20));  // grid-stride beyond
}

// ---------------------------------------------------------------------------
// dbias += sum over rows of dout (N, OC), deterministic

constexpr int DBIAS_ROWS = 128;      // rows per slab (one partial per slab and column)
constexpr int DBIAS_LANES = 32;      // threadIdx.x: a 16-byte group of columns each
constexpr int DBIAS_ROW_LANES = 8;   // threadIdx.y: interleaved rows within the slab
constexpr int DBIAS_COLS = DBIAS_LANES * x128::size;  // columns per block

// grid (slabs = ceil(N / DBIAS_ROWS), ceil(OC / DBIAS_COLS)): slabs on x, which has no
// 65535 limit; partial (slabs, OC)
__global__ void __launch_bounds__(DBIAS_LANES * DBIAS_ROW_LANES)
    dbias_partial_kernel(float* __restrict__ partial, const floatX* __restrict__ dout, int N, int OC) {
    __shared__ float sums[DBIAS_ROW_LANES][DBIAS_COLS];
    const int col0 = blockIdx.y * DBIAS_COLS;
    const int col = col0 + threadIdx.x * x128::size;
    const int r0 = blockIdx.x * DBIAS_ROWS;
    const int r1 = min(r0 + DBIAS_ROWS, N);
    float acc[x128::size];
    for (int k = 0; k < x128::size; k++) acc[k] = 0.0f;
    if (col < OC)  // OC is a multiple of x128::size, so the whole group is in range
        for (int r = r0 + threadIdx.y; r < r1; r += DBIAS_ROW_LANES) {
            const x128 v = load128cs(dout + (size_t)r * OC + col);
            for (int k = 0; k < x128::size; k++) acc[k] += to_float(v[k]);
        }
    for (int k = 0; k < x128::size; k++) sums[threadIdx.y][threadIdx.x * x128::size + k] = acc[k];
    __syncthreads();
    // one column per thread, the row lanes added in order
    for (int c = threadIdx.y * DBIAS_LANES + threadIdx.x; c < DBIAS_COLS; c += DBIAS_LANES * DBIAS_ROW_LANES) {
        if (col0 + c >= OC) break;
        float s = 0.0f;
        for (int y = 0; y < DBIAS_ROW_LANES; y++) s += sums[y][c];
        partial[(size_t)blockIdx.x * OC + col0 + c] = s;
    }
}

__global__ void dbias_finish_kernel(floatX* dbias, const float* __restrict__ partial, int slabs, int OC) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= OC) return;
    float s = 0.0f;
    for (int p = 0; p < slabs; p++) s += partial[(size_t)p * OC + c];
    dbias[c] = from_float<floatX>(to_float(dbias[c]) + s);
}

void dbias_accumulate(floatX* dbias, const floatX* dout, int N, int OC) {
    const int slabs = ceil_div(N, DBIAS_ROWS);
    float* partial = (float*)cuda_scratch(SCRATCH_MATMUL_DBIAS, (size_t)slabs * OC * sizeof(float));
    LNS_LAUNCH(dbias_partial_kernel, dim3(slabs, ceil_div(OC, DBIAS_COLS)), dim3(DBIAS_LANES, DBIAS_ROW_LANES), 0,
               partial, dout, N, OC);
    cudaCheckLaunch();
    LNS_LAUNCH(dbias_finish_kernel, ceil_div(OC, 256), 256, 0, dbias, partial, slabs, OC);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// one cuBLASLt matmul, column-major: D (m,n) = op(A) op(B) + beta D, with an epilogue

struct Gemm {
    bool ta = false, tb = false;  // op(A) = A^T, op(B) = B^T
    int m = 0, n = 0, k = 0;
    int64_t lda = 0, ldb = 0, ldd = 0;
    const void* A = nullptr;
    const void* B = nullptr;
    void* D = nullptr;
    float beta = 0.0f;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void* bias = nullptr;  // BIAS, GELU_AUX_BIAS: (m)
    const void* aux = nullptr;   // GELU_AUX*: written; DGELU: read. (m,n), ld aux_ld
    int64_t aux_ld = 0;
};

// Largest power of two (<= 256) dividing the address: what the heuristic may assume.
uint32_t alignment_of(const void* p) {
    const uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && a % al != 0) al >>= 1;
    return al;
}

const char* epilogue_name(cublasLtEpilogue_t e) {
    switch (e) {
        case CUBLASLT_EPILOGUE_DEFAULT: return "none";
        case CUBLASLT_EPILOGUE_BIAS: return "BIAS";
        case CUBLASLT_EPILOGUE_GELU_AUX: return "GELU_AUX";
        case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: return "GELU_AUX_BIAS";
        case CUBLASLT_EPILOGUE_DGELU: return "DGELU";
        default: return "other";
    }
}

// The heuristic's first choice for a configuration, looked up once. Its answer depends
// only on the descriptors (shapes, epilogue, the alignment of the pointers), so the
// cache keeps the same algorithm, hence the same bits, for the same call.
std::mutex g_algo_mutex;
std::map<std::vector<int64_t>, cublasLtMatmulAlgo_t> g_algos;

struct LtDescs {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    ~LtDescs() {
        if (d) cublasLtMatrixLayoutDestroy(d);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};

// CUBLAS_STATUS_SUCCESS and *algo, or what the heuristic answered when it found none
// (NOT_SUPPORTED, or INVALID_VALUE for a descriptor this cuBLASLt refuses).
cublasStatus_t find_algo(const Gemm& g, const LtDescs& ds, cublasLtMatmulAlgo_t* algo) {
    const uint32_t al_a = alignment_of(g.A), al_b = alignment_of(g.B), al_d = alignment_of(g.D);
    const std::vector<int64_t> key = {g.ta, g.tb, g.m, g.n, g.k, g.lda, g.ldb, g.ldd, (int64_t)g.epilogue,
                                      al_a, al_b, al_d, g.bias ? alignment_of(g.bias) : 0,
                                      g.aux ? alignment_of(g.aux) : 0, g.aux_ld};
    std::lock_guard<std::mutex> lock(g_algo_mutex);
    auto it = g_algos.find(key);
    if (it != g_algos.end()) {
        *algo = it->second;
        return CUBLAS_STATUS_SUCCESS;
    }
    cublasStatus_t st = CUBLAS_STATUS_NOT_SUPPORTED;
    // fp32 split-K partials first; any reduction scheme if that leaves nothing
    for (uint32_t mask : {(uint32_t)CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, (uint32_t)CUBLASLT_REDUCTION_SCHEME_MASK}) {
        cublasLtMatmulPreference_t pref;
        cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
        const uint64_t ws = WORKSPACE_BYTES;
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask,
                                                         sizeof mask));
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                         sizeof al_a));
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                         sizeof al_b));
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d,
                                                         sizeof al_d));
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d,
                                                         sizeof al_d));
        cublasLtMatmulHeuristicResult_t result;
        int found = 0;
        st = cublasLtMatmulAlgoGetHeuristic(g_cublaslt, ds.op, ds.a, ds.b, ds.d, ds.d, pref, 1, &result, &found);
        cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
        if (st == CUBLAS_STATUS_SUCCESS) {
            if (found > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
                g_algos[key] = result.algo;
                *algo = result.algo;
                return CUBLAS_STATUS_SUCCESS;
            }
            st = CUBLAS_STATUS_NOT_SUPPORTED;
        }
    }
    return st;
}

// Runs the matmul on g_stream; returns the heuristic's status when it has no algorithm
// (nothing is launched then). Failures of the matmul itself are fatal.
cublasStatus_t lt_matmul(const Gemm& g) {
    LtDescs ds;
    cublasCheck(cublasLtMatmulDescCreate(&ds.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    cublasCheck(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    const uint32_t epilogue = g.epilogue;
    cublasCheck(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    if (g.bias)
        cublasCheck(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof g.bias));
    if (g.aux) {
        cublasCheck(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &g.aux,
                                                   sizeof g.aux));
        cublasCheck(cublasLtMatmulDescSetAttribute(ds.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &g.aux_ld,
                                                   sizeof g.aux_ld));
    }
    // stored shapes: A is (m,k) or, transposed, (k,m); B (k,n) or (n,k); D (m,n)
    cublasCheck(cublasLtMatrixLayoutCreate(&ds.a, DATA_TYPE, g.ta ? g.k : g.m, g.ta ? g.m : g.k, g.lda));
    cublasCheck(cublasLtMatrixLayoutCreate(&ds.b, DATA_TYPE, g.tb ? g.n : g.k, g.tb ? g.k : g.n, g.ldb));
    cublasCheck(cublasLtMatrixLayoutCreate(&ds.d, DATA_TYPE, g.m, g.n, g.ldd));

    cublasLtMatmulAlgo_t algo;
    const cublasStatus_t st = find_algo(g, ds, &algo);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    const float alpha = 1.0f;
    void* ws = cuda_scratch(SCRATCH_MATMUL_WORKSPACE, WORKSPACE_BYTES);
    cublasCheck(cublasLtMatmul(g_cublaslt, ds.op, &alpha, g.A, ds.a, g.B, ds.b, &g.beta, g.D, ds.d, g.D, ds.d, &algo,
                               ws, WORKSPACE_BYTES, g_stream));
    return CUBLAS_STATUS_SUCCESS;
}

// Runs the matmul or exits naming the shape.
void lt_matmul_or_die(const char* op, const char* what, const Gemm& g, int N, int C, int OC) {
    const cublasStatus_t st = lt_matmul(g);
    if (st == CUBLAS_STATUS_SUCCESS) return;
    fprintf(stderr,
            "%s: cuBLASLt has no algorithm for %s (N=%d, C=%d, OC=%d: m=%d n=%d k=%d, lda=%lld ldb=%lld ldd=%lld, "
            "epilogue %s, beta %g): %s\n  hint: the operands must be 16-byte aligned, C and OC multiples of 8\n",
            op, what, N, C, OC, g.m, g.n, g.k, (long long)g.lda, (long long)g.ldb, (long long)g.ldd,
            epilogue_name(g.epilogue), (double)g.beta, cublasGetStatusString(st));
    std::exit(EXIT_FAILURE);
}

void warn_unfused_once(const char* what, int N, int C, int OC) {
    static bool warned = false;
    if (warned) return;
    warned = true;
    fprintf(stderr, "warning: no cuBLASLt algorithm fuses %s for N=%d C=%d OC=%d; applying it in a separate kernel\n",
            what, N, C, OC);
}

// Shapes come from the model's widths (flags), so a bad one is the user's to fix.
void check_shape(const char* op, int N, int C, int OC) {
    REQUIRE_INPUT(N >= 0 && C > 0 && OC > 0, "%s: expected N >= 0 and positive widths, got N=%d C=%d OC=%d", op, N, C,
                  OC);
    REQUIRE_INPUT(C % 8 == 0 && OC % 8 == 0,
                  "%s (N=%d, C=%d, OC=%d): the CUDA backend needs matmul widths that are multiples of 8 "
                  "(16-byte rows for cuBLASLt); choose --n-embd and --ffn-hidden accordingly",
                  op, N, C, OC);
}

void check_aligned(const char* op, const char* name, const void* p) {
    LNS_CHECK((uintptr_t)p % 16 == 0, "%s: %s = %p is not 16-byte aligned (cuBLASLt and the 128-bit loads need it)", op,
              name, p);
}

}  // namespace

void cuda_backend::matmul_forward(floatX* out, const floatX* inp, const floatX* w, const floatX* bias, int N, int C,
                                  int OC, floatX* pre_gelu) {
    NVTX_RANGE("matmul_forward");
    const char* op = "matmul_forward";
    check_shape(op, N, C, OC);
    check_aligned(op, "out", out), check_aligned(op, "inp", inp), check_aligned(op, "w", w);
    check_aligned(op, "bias", bias), check_aligned(op, "pre_gelu", pre_gelu);
    if (N == 0) return;

    Gemm g;
    g.ta = true, g.tb = false;
    g.m = OC, g.n = N, g.k = C;
    g.A = w, g.lda = C;
    g.B = inp, g.ldb = C;
    g.ldd = OC;
    g.bias = bias;
    if (pre_gelu && FUSE_GELU) {
        g.D = out;
        g.epilogue = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
        g.aux = pre_gelu, g.aux_ld = OC;
        if (lt_matmul(g) == CUBLAS_STATUS_SUCCESS) return;
        warn_unfused_once("GELU", N, C, OC);
        g.aux = nullptr, g.aux_ld = 0;
    }
    g.D = pre_gelu ? pre_gelu : out;
    g.epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    lt_matmul_or_die(op, "out = inp @ w^T + bias", g, N, C, OC);
    if (pre_gelu) {
        const size_t n = (size_t)N * OC;
        LNS_LAUNCH(gelu_forward_kernel, elementwise_blocks(n), 256, 0, out, pre_gelu, n);
        cudaCheckLaunch();
    }
}

void cuda_backend::matmul_backward(floatX* dinp, floatX* dw, floatX* dbias, const floatX* dout, const floatX* inp,
                                   const floatX* w, int N, int C, int OC, bool accumulate, const floatX* pre_gelu) {
    NVTX_RANGE("matmul_backward");
    const char* op = "matmul_backward";
    LNS_CHECK(!(pre_gelu && accumulate), "the GELU backward epilogue writes dinp");
    check_shape(op, N, C, OC);
    check_aligned(op, "dinp", dinp), check_aligned(op, "dw", dw), check_aligned(op, "dbias", dbias);
    check_aligned(op, "dout", dout), check_aligned(op, "inp", inp), check_aligned(op, "w", w);
    check_aligned(op, "pre_gelu", pre_gelu);
    if (N == 0) return;

    // dbias and dw first, dinp last: dinp is the only output written over.
    if (dbias) dbias_accumulate(dbias, dout, N, OC);
    if (dw) {
        Gemm g;  // dw^T (C,OC) += inp^T (C,N) . dout (N,OC)
        g.ta = false, g.tb = true;
        g.m = C, g.n = OC, g.k = N;
        g.A = inp, g.lda = C;
        g.B = dout, g.ldb = OC;
        g.D = dw, g.ldd = C;
        g.beta = 1.0f;
        lt_matmul_or_die(op, "dw += dout^T @ inp", g, N, C, OC);
    }
    if (dinp) {
        Gemm g;  // dinp^T (C,N) = w (C,OC) . dout^T (OC,N)
        g.ta = false, g.tb = false;
        g.m = C, g.n = N, g.k = OC;
        g.A = w, g.lda = C;
        g.B = dout, g.ldb = OC;
        g.D = dinp, g.ldd = C;
        g.beta = accumulate ? 1.0f : 0.0f;
        if (pre_gelu && FUSE_GELU) {
            g.epilogue = CUBLASLT_EPILOGUE_DGELU;
            g.aux = pre_gelu, g.aux_ld = C;
            if (lt_matmul(g) == CUBLAS_STATUS_SUCCESS) return;
            warn_unfused_once("GELU'", N, C, OC);
            g.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
            g.aux = nullptr, g.aux_ld = 0;
        }
        lt_matmul_or_die(op, "dinp = dout @ w", g, N, C, OC);
        if (pre_gelu) {
            const size_t n = (size_t)N * C;
            LNS_LAUNCH(gelu_backward_inplace_kernel, elementwise_blocks(n), 256, 0, dinp, pre_gelu, n);
            cudaCheckLaunch();
        }
    }
}
