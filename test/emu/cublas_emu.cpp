// cuBLAS's strided batched GEMM and cuBLASLt's matmul on the host, for the emulated
// backend; see runtime_emu.h. They test the callers' operands and descriptors, not
// cuBLAS: products are summed in double and rounded once to the output type, where the
// library sums in fp32 in an order of its own (within the tests' bf16 bounds).
#ifdef LNS_CUDA
#include "test/emu/cuda_emu.h"

#include <cmath>
#include <string>

namespace emu {

namespace {
float load_elem(const void* p, cudaDataType t, size_t i) {
    if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
    if (t == CUDA_R_16BF) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    throw Error("emulated GEMM: only fp32 and bf16 operands are emulated");
}
void store_elem(void* p, cudaDataType t, size_t i, float v) {
    if (t == CUDA_R_32F) static_cast<float*>(p)[i] = v;
    else if (t == CUDA_R_16BF) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    else throw Error("emulated GEMM: only fp32 and bf16 results are emulated");
}
}  // namespace

// C (m x n) = alpha op(A) op(B) + beta C per batch, column-major: op(A)(i, p) is
// A[i + p lda] (N) or A[p + i lda] (T), op(B)(p, j) is B[p + j ldb] (N) or B[j + p ldb] (T).
cublasStatus_t gemm_strided_batched(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                    const void* alpha, const void* A, cudaDataType at, int lda, long long sa,
                                    const void* B, cudaDataType bt, int ldb, long long sb, const void* beta, void* C,
                                    cudaDataType ct, int ldc, long long sc, int batch, cublasComputeType_t,
                                    cublasGemmAlgo_t) {
    // as cuBLAS: leading dimensions at least the stored rows
    if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, ta == CUBLAS_OP_N ? m : k) ||
        ldb < std::max(1, tb == CUBLAS_OP_N ? k : n) || ldc < std::max(1, m))
        return CUBLAS_STATUS_INVALID_VALUE;
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double acc = 0.0;
                for (int p = 0; p < k; p++) {
                    const size_t ia = b * sa + (ta == CUBLAS_OP_N ? i + (size_t)p * lda : p + (size_t)i * lda);
                    const size_t ib = b * sb + (tb == CUBLAS_OP_N ? p + (size_t)j * ldb : j + (size_t)p * ldb);
                    acc += (double)load_elem(A, at, ia) * load_elem(B, bt, ib);
                }
                const size_t ic = b * sc + i + (size_t)j * ldc;
                store_elem(C, ct, ic, (float)(al * acc + (be != 0.0f ? be * load_elem(C, ct, ic) : 0.0)));
            }
    return CUBLAS_STATUS_SUCCESS;
}

// ---- cuBLASLt

namespace {

struct MatmulDesc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void* bias = nullptr;
    const void* aux = nullptr;
    int64_t aux_ld = 0;
};
struct Layout {
    cudaDataType type;
    uint64_t rows, cols;
    int64_t ld;
};
struct Preference {
    uint64_t workspace = 0;
    uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D: what the caller promises
};

MatmulDesc* get(cublasLtMatmulDesc_t d) { return reinterpret_cast<MatmulDesc*>(d); }
Layout* get(cublasLtMatrixLayout_t l) { return reinterpret_cast<Layout*>(l); }
Preference* get(cublasLtMatmulPreference_t p) { return reinterpret_cast<Preference*>(p); }

template <class T>
cublasStatus_t read_attr(T& out, const void* buf, size_t size) {
    if (size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
    std::memcpy(&out, buf, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
}

bool has_bias(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
bool gelu_aux(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }

// The problem an algorithm was chosen for: its shapes, operations, data type, epilogue and
// the alignments it may assume (A, B, C, D as the caller promised in the preference; the
// bias and aux pointers' own, which the heuristic reads from the descriptor, cublasLt.h).
// An algorithm carries it (cublasLtMatmulAlgo_t's 8 words), and the matmul refuses
// another problem or less aligned pointers.
struct Problem {
    uint64_t m, n, k, ops, lda, ldb, ldd;
    uint64_t align;  // log2 of each of the 6 alignments, a byte each: A, B, C, D, bias, aux
};
const char* const ALIGNED_NAMES[6] = {"A", "B", "C", "D", "the bias", "the aux matrix"};
static_assert(sizeof(Problem) <= sizeof(cublasLtMatmulAlgo_t), "a Problem fits in an algorithm");

// The problem the descriptors describe, or why they are inconsistent.
std::string describe(const MatmulDesc& op, const Layout& a, const Layout& b, const Layout& c, const Layout& d,
                     Problem* pr) {
    if (op.compute != CUBLAS_COMPUTE_32F || op.scale != CUDA_R_32F) return "only fp32 compute and scale are emulated";
    if (d.type != CUDA_R_16BF && d.type != CUDA_R_32F) return "only bf16 and fp32 matrices are emulated";
    if (a.type != d.type || b.type != d.type || c.type != d.type) return "A, B, C and D differ in type";
    if (c.rows != d.rows || c.cols != d.cols || c.ld != d.ld) return "C and D have different layouts";
    const uint64_t m = d.rows, n = d.cols;
    const bool ta = op.ta == CUBLAS_OP_T, tb = op.tb == CUBLAS_OP_T;
    const uint64_t k = ta ? a.rows : a.cols;
    if ((ta ? a.cols : a.rows) != m) return "op(A) has " + std::to_string(ta ? a.cols : a.rows) + " rows, D " +
                                             std::to_string(m);
    if ((tb ? b.cols : b.rows) != k || (tb ? b.rows : b.cols) != n)
        return "op(B) is not k x n = " + std::to_string(k) + " x " + std::to_string(n);
    for (const Layout* l : {&a, &b, &d})
        if (l->ld < (int64_t)l->rows || l->ld < 1) return "a leading dimension is below the row count";
    switch (op.epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT:
    case CUBLASLT_EPILOGUE_BIAS:
    case CUBLASLT_EPILOGUE_GELU_AUX:
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
    case CUBLASLT_EPILOGUE_DGELU:
        break;
    default:
        return "epilogue " + std::to_string((int)op.epilogue) + " is not emulated";
    }
    if (has_bias(op.epilogue) && op.bias == nullptr) return "a BIAS epilogue without a bias pointer";
    if (gelu_aux(op.epilogue) || op.epilogue == CUBLASLT_EPILOGUE_DGELU) {
        if (op.aux == nullptr) return "a GELU epilogue without an aux pointer";
        if (op.aux_ld % 8 != 0 || op.aux_ld < (int64_t)m)
            return "the aux leading dimension " + std::to_string(op.aux_ld) +
                   " is not a multiple of 8 at least D's rows (cublasLt.h)";
    }
    *pr = {m, n, k, (uint64_t)ta | (uint64_t)tb << 1 | (uint64_t)op.epilogue << 8 | (uint64_t)d.type << 40,
           (uint64_t)a.ld, (uint64_t)b.ld,
           (uint64_t)d.ld, 0};
    return "";
}

uint32_t alignment_of(const void* p) {
    uint32_t al = 256;
    while (al > 1 && (uintptr_t)p % al != 0) al >>= 1;
    return al;
}
uint64_t log2_of(uint32_t al) {
    uint64_t l = 0;
    while ((1u << (l + 1)) <= al) l++;
    return l;
}

float gelu(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi): the tanh form cuBLASLt documents for its GELU
    return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}
float gelu_grad(float x) {
    const float k = 0.7978845608028654f;
    const float th = std::tanh(k * (x + 0.044715f * x * x * x));
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * k * (1.0f + 3.0f * 0.044715f * x * x);
}

}  // namespace

cublasStatus_t lt_matmul_desc_create(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale) {
    MatmulDesc* m = new MatmulDesc;
    m->compute = compute, m->scale = scale;
    *d = reinterpret_cast<cublasLtMatmulDesc_t>(m);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t lt_matmul_desc_destroy(cublasLtMatmulDesc_t d) {
    delete get(d);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t lt_matmul_desc_set(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const void* buf,
                                  size_t size) {
    MatmulDesc& m = *get(d);
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return read_attr(m.ta, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return read_attr(m.tb, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
        uint32_t e = 0;
        const cublasStatus_t s = read_attr(e, buf, size);
        m.epilogue = (cublasLtEpilogue_t)e;
        return s;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return read_attr(m.bias, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return read_attr(m.aux, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return read_attr(m.aux_ld, buf, size);
    default: throw Error("cublasLtMatmulDescSetAttribute: attribute " + std::to_string((int)attr) + " is not emulated");
    }
}

cublasStatus_t lt_layout_create(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows, uint64_t cols,
                                int64_t ld) {
    *l = reinterpret_cast<cublasLtMatrixLayout_t>(new Layout{type, rows, cols, ld});
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t lt_layout_destroy(cublasLtMatrixLayout_t l) {
    delete get(l);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t lt_preference_create(cublasLtMatmulPreference_t* p) {
    *p = reinterpret_cast<cublasLtMatmulPreference_t>(new Preference);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t lt_preference_destroy(cublasLtMatmulPreference_t p) {
    delete get(p);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t lt_preference_set(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr,
                                 const void* buf, size_t size) {
    Preference& q = *get(p);
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return read_attr(q.workspace, buf, size);
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK: {
        uint32_t mask = 0;
        return read_attr(mask, buf, size);  // no split-K here: every scheme is fine
    }
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return read_attr(q.align[0], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return read_attr(q.align[1], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return read_attr(q.align[2], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return read_attr(q.align[3], buf, size);
    default:
        throw Error("cublasLtMatmulPreferenceSetAttribute: attribute " + std::to_string((int)attr) +
                    " is not emulated");
    }
}

// One algorithm for any consistent problem; INVALID_VALUE for inconsistent descriptors.
cublasStatus_t lt_heuristic(cublasLtHandle_t, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a,
                            cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                            cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t* results,
                            int* found) {
    *found = 0;
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    Problem pr;
    if (!describe(*get(op), *get(a), *get(b), *get(c), *get(d), &pr).empty()) return CUBLAS_STATUS_INVALID_VALUE;
    const Preference& q = *get(pref);
    const MatmulDesc& o = *get(op);
    const uint32_t al[6] = {q.align[0], q.align[1], q.align[2], q.align[3], o.bias ? alignment_of(o.bias) : 1u,
                            o.aux ? alignment_of(o.aux) : 1u};
    for (int i = 0; i < 6; i++) pr.align |= log2_of(al[i]) << (8 * i);
    results[0] = cublasLtMatmulHeuristicResult_t{};
    std::memcpy(&results[0].algo, &pr, sizeof pr);
    results[0].workspaceSize = 0;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}

// D = epilogue(alpha op(A) op(B) + beta C), column-major. Misuse a GPU might survive by
// luck (an algorithm for another problem, pointers less aligned than promised) throws.
cublasStatus_t lt_matmul(cublasLtHandle_t, cublasLtMatmulDesc_t opd, const void* alpha, const void* A,
                         cublasLtMatrixLayout_t ad, const void* B, cublasLtMatrixLayout_t bd, const void* beta,
                         const void* C, cublasLtMatrixLayout_t cd, void* D, cublasLtMatrixLayout_t dd,
                         const cublasLtMatmulAlgo_t* algo, void*, size_t, cudaStream_t) {
    const MatmulDesc& op = *get(opd);
    const Layout &a = *get(ad), &b = *get(bd), &c = *get(cd), &d = *get(dd);
    Problem pr;
    const std::string why = describe(op, a, b, c, d, &pr);
    if (!why.empty()) throw Error("cublasLtMatmul: " + why);
    if (algo == nullptr) throw Error("cublasLtMatmul: no algorithm (the emulated heuristic always has one)");
    Problem chosen;
    std::memcpy(&chosen, algo, sizeof chosen);
    pr.align = chosen.align;
    if (std::memcmp(&chosen, &pr, sizeof pr) != 0)
        throw Error("cublasLtMatmul: the algorithm was chosen for another problem (m, n, k, operations, type, "
                    "epilogue or leading dimensions differ)");
    const void* ptrs[6] = {A, B, C, D, op.bias, op.aux};
    for (int i = 0; i < 6; i++)
        if (ptrs[i] && alignment_of(ptrs[i]) < (1u << ((chosen.align >> (8 * i)) & 0xFF)))
            throw Error(std::string("cublasLtMatmul: ") + ALIGNED_NAMES[i] +
                        " is less aligned than the algorithm was chosen for");
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    if (be != 0.0f && op.epilogue != CUBLASLT_EPILOGUE_DEFAULT)
        throw Error("cublasLtMatmul: beta with an epilogue is not emulated");
    const bool ta = op.ta == CUBLAS_OP_T, tb = op.tb == CUBLAS_OP_T;
    for (uint64_t j = 0; j < pr.n; j++)
        for (uint64_t i = 0; i < pr.m; i++) {
            double acc = 0.0;
            for (uint64_t p = 0; p < pr.k; p++) {
                const size_t ia = ta ? p + i * a.ld : i + p * a.ld, ib = tb ? j + p * b.ld : p + j * b.ld;
                acc += (double)load_elem(A, a.type, ia) * load_elem(B, b.type, ib);
            }
            const size_t id = i + j * d.ld;
            float v = (float)(al * acc + (be != 0.0f ? be * (double)load_elem(C, c.type, i + j * c.ld) : 0.0));
            if (has_bias(op.epilogue)) v += load_elem(op.bias, d.type, i);
            if (gelu_aux(op.epilogue)) {
                store_elem(const_cast<void*>(op.aux), d.type, i + j * op.aux_ld, v);
                v = gelu(v);
            } else if (op.epilogue == CUBLASLT_EPILOGUE_DGELU) {
                v *= gelu_grad(load_elem(op.aux, d.type, i + j * op.aux_ld));
            }
            store_elem(D, d.type, id, v);
        }
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace emu

#endif  // LNS_CUDA
