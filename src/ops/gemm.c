#include "ops/gemm.h"

#include <stddef.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>

// A register tile is ROWS rows x PANEL columns of C: 24 accumulators of 16 lanes, two vectors of the
// streamed operand and one broadcast, within the 32 vector registers. KCHUNK bounds the depth of
// gemm_nt's packed weights.
// MCHUNK rows of a gemm_tn reduction go into registers from zero before they are added to C: float
// sums of a hundred-odd terms of random sign then stay as accurate as a blocked BLAS product.
// WT_FLOATS bounds gemm_nt's packed weights (64 KiB on the stack).
enum { ROWS = 12, PANEL = 32, KCHUNK = 512, MCHUNK = 128, WT_FLOATS = 16384 };

#define ALWAYS_INLINE inline __attribute__((always_inline))

static ALWAYS_INLINE __mmask16 lanes(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n > 0 ? n : 0)) - 1u);
}

// What happens to a tile's sums before they are stored: C + sums when accumulating, then + bias,
// then + residual rows, then ReLU, then zero where a mask is <= 0 (each optional). Sums are added
// in this order, which is the order of the unfused ops (bias into the product, then the residual
// op, then the ReLU op; the mask is relu_backward's).
typedef struct {
    int accumulate, relu, ldr, ldm;
    const float *bias;      // (columns) or NULL
    const float *residual;  // rows with stride ldr, or NULL
    const float *mask;      // rows with stride ldm, or NULL: outputs where it is <= 0 become 0
} Epilogue;

// C[i, 0..w) = epilogue(sum_k A[i, k] B[k, 0..w)) for i < mr (w <= PANEL through the masks).
static ALWAYS_INLINE void tile_ab(const int mr, float *C, int ldc, const float *A, int lda, const float *B, int ldb,
                                  int K, __mmask16 m0, __mmask16 m1, const Epilogue *e) {
    __m512 c0[ROWS], c1[ROWS];
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb;
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16);
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            __m512 a = _mm512_set1_ps(A[(size_t)i * lda + k]);
            c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
        }
    }
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (e->bias) {
        bias0 = _mm512_maskz_loadu_ps(m0, e->bias);
        bias1 = _mm512_maskz_loadu_ps(m1, e->bias + 16);
    }
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        float *c = C + (size_t)i * ldc;
        if (e->accumulate) {
            c0[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c), c0[i]);
            c1[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + 16), c1[i]);
        }
        if (e->bias) {
            c0[i] = _mm512_add_ps(bias0, c0[i]);
            c1[i] = _mm512_add_ps(bias1, c1[i]);
        }
        if (e->residual) {
            const float *r = e->residual + (size_t)i * e->ldr;
            c0[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, r), c0[i]);
            c1[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, r + 16), c1[i]);
        }
        if (e->relu) {
            c0[i] = _mm512_max_ps(c0[i], _mm512_setzero_ps());
            c1[i] = _mm512_max_ps(c1[i], _mm512_setzero_ps());
        }
        if (e->mask) {
            const float *r = e->mask + (size_t)i * e->ldm;
            __mmask16 k0 = _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(m0, r), _mm512_setzero_ps(), _CMP_GT_OQ);
            __mmask16 k1 = _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(m1, r + 16), _mm512_setzero_ps(), _CMP_GT_OQ);
            c0[i] = _mm512_maskz_mov_ps(k0, c0[i]);
            c1[i] = _mm512_maskz_mov_ps(k1, c1[i]);
        }
        _mm512_mask_storeu_ps(c, m0, c0[i]);
        _mm512_mask_storeu_ps(c + 16, m1, c1[i]);
    }
}

// C[i, 0..w) += sum_m A[m, i] B[m, 0..w) for i < nr: the reduction runs over the M rows with the
// tile of C held in registers throughout.
static ALWAYS_INLINE void tile_atb(const int nr, float *C, int ldc, const float *A, int lda, const float *B, int ldb,
                                   int M, __mmask16 m0, __mmask16 m1) {
    __m512 c0[ROWS], c1[ROWS];
#pragma GCC unroll 12
    for (int i = 0; i < nr; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int m = 0; m < M; m++) {
        const float *b = B + (size_t)m * ldb, *a = A + (size_t)m * lda;
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16);
#pragma GCC unroll 12
        for (int i = 0; i < nr; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < nr; i++) {
        float *c = C + (size_t)i * ldc;
        _mm512_mask_storeu_ps(c, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c), c0[i]));
        _mm512_mask_storeu_ps(c + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + 16), c1[i]));
    }
}

// Every tile height as its own fully unrolled kernel, so the accumulators stay in registers.
#define TILE_CASES(F, ...)                                                                                            \
    switch (rows) {                                                                                                    \
    case 12: F(12, __VA_ARGS__); break;                                                                                \
    case 11: F(11, __VA_ARGS__); break;                                                                                \
    case 10: F(10, __VA_ARGS__); break;                                                                                \
    case 9: F(9, __VA_ARGS__); break;                                                                                  \
    case 8: F(8, __VA_ARGS__); break;                                                                                  \
    case 7: F(7, __VA_ARGS__); break;                                                                                  \
    case 6: F(6, __VA_ARGS__); break;                                                                                  \
    case 5: F(5, __VA_ARGS__); break;                                                                                  \
    case 4: F(4, __VA_ARGS__); break;                                                                                  \
    case 3: F(3, __VA_ARGS__); break;                                                                                  \
    case 2: F(2, __VA_ARGS__); break;                                                                                  \
    default: F(1, __VA_ARGS__); break;                                                                                 \
    }

// C (M, N) = epilogue(A (M, K) B) where column panel p of B (K x PANEL, row stride ldb) starts at
// B + p * panel_step. Panels go in the outer loop, so one panel (K x PANEL: 8 KiB at K = 64) stays in
// L1 while the rows of A stream by, read in place. (Measured against the other order, row blocks
// outer with A packed: this one ran the model's forward products at 98-102 GFLOP/s per core
// against 78-93.)
static void product(float *C, int ldc, const float *A, int lda, const float *B, int ldb, size_t panel_step, int M,
                    int N, int K, Epilogue e) {
    const float *bias = e.bias, *residual = e.residual, *mask = e.mask;
    for (int n0 = 0, p = 0; n0 < N; n0 += PANEL, p++) {
        int w = N - n0 < PANEL ? N - n0 : PANEL;
        __mmask16 m0 = lanes(w), m1 = lanes(w - 16);
        const float *b = B + p * panel_step;
        if (bias) e.bias = bias + n0;
        for (int i0 = 0; i0 < M; i0 += ROWS) {
            int rows = M - i0 < ROWS ? M - i0 : ROWS;
            float *c = C + (size_t)i0 * ldc + n0;
            const float *a = A + (size_t)i0 * lda;
            if (residual) e.residual = residual + (size_t)i0 * e.ldr + n0;
            if (mask) e.mask = mask + (size_t)i0 * e.ldm + n0;
            TILE_CASES(tile_ab, c, ldc, a, lda, b, ldb, K, m0, m1, &e)
        }
    }
}

static void clear_rows(float *C, int ldc, int M, int N) {
    for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, sizeof(float) * N);
}

int gemm_available(void) { return 1; }

// The epilogue of zero products (K = 0).
static void epilogue_only(float *C, int ldc, int M, int N, const float *bias, const float *residual, int ldr,
                          int relu) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float v = bias ? bias[j] + 0.0f : 0.0f;
            if (residual) v = residual[(size_t)i * ldr + j] + v;
            C[(size_t)i * ldc + j] = relu && v < 0.0f ? 0.0f : v;
        }
}

// Columns n0 .. n0 + width of W^T for depths k0 .. k0 + kc, in panels: panel j / PANEL holds row k
// at k * PANEL, lane j % PANEL; lanes past N in the last panel are zero.
static void pack_block(float *dst, const float *W, int ldw, int n0, int width, int k0, int kc) {
    int padded = (width + PANEL - 1) / PANEL * PANEL;
    for (int j = 0; j < padded; j++) {
        float *out = dst + (size_t)(j / PANEL) * kc * PANEL + j % PANEL;
        if (j >= width) {
            for (int k = 0; k < kc; k++) out[k * PANEL] = 0.0f;
            continue;
        }
        const float *wrow = W + (size_t)(n0 + j) * ldw + k0;
        for (int k = 0; k < kc; k++) out[k * PANEL] = wrow[k];
    }
}

// The epilogue settings of depth chunk k0 .. k0 + kc of K: the bias goes in with the first chunk,
// the residual and ReLU with the last.
static Epilogue chunk_epilogue(int k0, int kc, int K, int n0, const float *bias, const float *residual, int ldr,
                               int relu) {
    int final = k0 + kc == K;
    Epilogue e = {.accumulate = k0 > 0,
                  .relu = relu && final,
                  .ldr = ldr,
                  .bias = k0 == 0 && bias ? bias + n0 : NULL,
                  .residual = final && residual ? residual + n0 : NULL};
    return e;
}

void gemm_nt(float *C, int ldc, const float *A, int lda, const float *W, int ldw, int M, int N, int K,
             const float *bias, const float *residual, int ldr, int relu) {
    if (K == 0) {
        epilogue_only(C, ldc, M, N, bias, residual, ldr, relu);
        return;
    }
    // W^T packed in panels, as many columns at a time as WT_FLOATS holds (all of the model's
    // weights at once: 64 x 256 = 16,384 floats)
    float wt[WT_FLOATS] __attribute__((aligned(64)));
    for (int k0 = 0; k0 < K; k0 += KCHUNK) {
        int kc = K - k0 < KCHUNK ? K - k0 : KCHUNK;
        int block = WT_FLOATS / (kc * PANEL) * PANEL;  // columns per packing
        for (int n0 = 0; n0 < N; n0 += block) {
            int width = N - n0 < block ? N - n0 : block;
            pack_block(wt, W, ldw, n0, width, k0, kc);
            Epilogue e = chunk_epilogue(k0, kc, K, n0, bias, residual, ldr, relu);
            product(C + n0, ldc, A + k0, lda, wt, PANEL, (size_t)kc * PANEL, M, width, kc, e);
        }
    }
}

// The packed layout: depth chunks of KCHUNK, each holding every column's panels.
static int padded_columns(int N) { return (N + PANEL - 1) / PANEL * PANEL; }

size_t gemm_packed_floats(int N, int K) { return (size_t)padded_columns(N) * (K > 0 ? K : 1); }

void gemm_pack(float *packed, const float *W, int ldw, int N, int K) {
    for (int k0 = 0; k0 < K; k0 += KCHUNK) {
        int kc = K - k0 < KCHUNK ? K - k0 : KCHUNK;
        pack_block(packed + (size_t)k0 * padded_columns(N), W, ldw, 0, N, k0, kc);
    }
}

void gemm_nt_packed(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                    const float *bias, const float *residual, int ldr, int relu) {
    if (K == 0) {
        epilogue_only(C, ldc, M, N, bias, residual, ldr, relu);
        return;
    }
    for (int k0 = 0; k0 < K; k0 += KCHUNK) {
        int kc = K - k0 < KCHUNK ? K - k0 : KCHUNK;
        Epilogue e = chunk_epilogue(k0, kc, K, 0, bias, residual, ldr, relu);
        product(C, ldc, A + k0, lda, packed + (size_t)k0 * padded_columns(N), PANEL, (size_t)kc * PANEL, M, N, kc,
                e);
    }
}

void gemm_nn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K, int accumulate) {
    if (K == 0 && !accumulate) clear_rows(C, ldc, M, N);
    Epilogue e = {.accumulate = accumulate};
    if (K > 0) product(C, ldc, A, lda, B, ldb, PANEL, M, N, K, e);
}

void gemm_nn_masked(float *C, int ldc, const float *A, int lda, const float *B, int ldb, const float *mask, int ldm,
                    int M, int N, int K) {
    if (K == 0) {
        clear_rows(C, ldc, M, N);
        return;
    }
    Epilogue e = {.mask = mask, .ldm = ldm};
    product(C, ldc, A, lda, B, ldb, PANEL, M, N, K, e);
}

// Row chunks go in the outer loop: each chunk of A and B (MCHUNK rows) is brought in once, from
// memory when it is a saved activation, and every tile of C passes over it while it sits in cache.
static void reduce_rows(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K) {
    for (int r0 = 0; r0 < M; r0 += MCHUNK) {
        int chunk = M - r0 < MCHUNK ? M - r0 : MCHUNK;
        for (int i0 = 0; i0 < N; i0 += ROWS) {
            int rows = N - i0 < ROWS ? N - i0 : ROWS;
            for (int k0 = 0; k0 < K; k0 += PANEL) {
                int w = K - k0 < PANEL ? K - k0 : PANEL;
                __mmask16 m0 = lanes(w), m1 = lanes(w - 16);
                float *c = C + (size_t)i0 * ldc + k0;
                const float *a = A + (size_t)r0 * lda + i0, *b = B + (size_t)r0 * ldb + k0;
                TILE_CASES(tile_atb, c, ldc, a, lda, b, ldb, chunk, m0, m1)
            }
        }
    }
}

// With fewer rows of C than columns (linear2's weight gradient, 64 x 256), C^T = B^T A is the
// better shape for the tiles (12-row blocks, long rows streamed: measured 102 against 67 GFLOP/s):
// it goes into a zeroed buffer and is added to C transposed.
void gemm_tn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K) {
    if (N >= K || (size_t)N * K > WT_FLOATS) {
        reduce_rows(C, ldc, A, lda, B, ldb, M, N, K);
        return;
    }
    float ct[WT_FLOATS] __attribute__((aligned(64)));
    memset(ct, 0, sizeof(float) * (size_t)N * K);
    reduce_rows(ct, N, B, ldb, A, lda, M, K, N);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) C[(size_t)i * ldc + k] += ct[(size_t)k * N + i];
}

#else  // without AVX-512: plain loops, correct but not fast (the ops prefer a BLAS then)

int gemm_available(void) { return 0; }

void gemm_nt(float *C, int ldc, const float *A, int lda, const float *W, int ldw, int M, int N, int K,
             const float *bias, const float *residual, int ldr, int relu) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float sum = 0.0f;
            for (int k = 0; k < K; k++) sum += A[(size_t)i * lda + k] * W[(size_t)j * ldw + k];
            if (bias) sum = bias[j] + sum;
            if (residual) sum = residual[(size_t)i * ldr + j] + sum;
            C[(size_t)i * ldc + j] = relu && sum < 0.0f ? 0.0f : sum;
        }
}

size_t gemm_packed_floats(int N, int K) { return (size_t)N * K; }

void gemm_pack(float *packed, const float *W, int ldw, int N, int K) {
    for (int j = 0; j < N; j++) memcpy(packed + (size_t)j * K, W + (size_t)j * ldw, sizeof(float) * K);
}

void gemm_nt_packed(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                    const float *bias, const float *residual, int ldr, int relu) {
    gemm_nt(C, ldc, A, lda, packed, K, M, N, K, bias, residual, ldr, relu);
}

void gemm_nn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K, int accumulate) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float sum = 0.0f;
            for (int k = 0; k < K; k++) sum += A[(size_t)i * lda + k] * B[(size_t)k * ldb + j];
            C[(size_t)i * ldc + j] = accumulate ? C[(size_t)i * ldc + j] + sum : sum;
        }
}

void gemm_nn_masked(float *C, int ldc, const float *A, int lda, const float *B, int ldb, const float *mask, int ldm,
                    int M, int N, int K) {
    gemm_nn(C, ldc, A, lda, B, ldb, M, N, K, 0);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
            if (!(mask[(size_t)i * ldm + j] > 0.0f)) C[(size_t)i * ldc + j] = 0.0f;
}

void gemm_tn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K) {
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) {
            float sum = 0.0f;
            for (int m = 0; m < M; m++) sum += A[(size_t)m * lda + i] * B[(size_t)m * ldb + k];
            C[(size_t)i * ldc + k] += sum;
        }
}

#endif
