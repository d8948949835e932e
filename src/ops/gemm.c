// The products of gemm.h, one variant per instruction set (lanes.h): this file is compiled once per
// variant, and every variant gives the same bits.
#include "ops/lanes.h"
#include "ops/kernels.h"
#include "ops/gemm.h"

#include <stddef.h>
#include <string.h>

// A register tile is ROWS rows x PANEL columns of C (two 16-lane vectors per row). With AVX-512:
// 24 accumulators, two vectors of the streamed operand and one broadcast, within the 32 vector
// registers. Narrower registers take fewer rows (the tile's height changes how many sums run at
// once, never any one sum). AVX2's 16 registers hold a tile of 6 rows x one vector instead (12
// accumulators, B's vector in two, one broadcast): a 32-wide panel goes as two such tiles side by
// side, each sum still over k in order. (3 rows x two vectors needed 17 registers and spilled.)
// AVX-512 takes two whole panels at once where it can, in a wide tile of 6 rows x 64 columns
// (WIDE_TILES; the other variants compile the wide tile but never call it). WT_FLOATS bounds
// gemm_nt's packed weights (64 KiB on the stack).
#if defined(PF_LANES_AVX512)
enum { ROWS = 12, WIDE_TILES = 1 };
#elif defined(PF_LANES_AVX2)
enum { ROWS = 6, WIDE_TILES = 0 };
#define SPLIT_PANELS 1
#else
enum { ROWS = 2, WIDE_TILES = 0 };
#endif
enum { PANEL = GEMM_PANEL, KCHUNK = GEMM_KCHUNK, MCHUNK = GEMM_MCHUNK, WT_FLOATS = 16384 };
// The tiles' loops over the depth run two steps a pass: the same multiply-adds in the same order,
// with half the loop's own instructions. make bench-ab against the loops as written, training steps
// at batch 4,096, three runs of 6 pairs beside a control (the same code on both sides, which read
// 1.009-1.021): AVX2 0.979-0.983, AVX-512 0.985-0.987 (control 0.998-1.003). Four steps a pass
// read 0.969-0.993 and eight 0.975-0.989 on AVX2: no better, in more code.
#define UNROLL_DEPTH _Pragma("GCC unroll 2")

// What happens to a tile's sums before they are stored: C + sums when accumulating, then + bias,
// then + residual rows, then ReLU, then zero where a mask is <= 0 (each optional). Sums are added
// in this order, which is the order of the unfused ops (bias into the product, then the residual
// op, then the ReLU op; the mask is relu_backward's).
typedef struct {
    int accumulate, relu, ldr, ldm;
    const float *bias;     // (columns) or NULL
    const float *residual; // rows with stride ldr, or NULL
    const float *mask;     // rows with stride ldm, or NULL: outputs where it is <= 0 become 0
} Epilogue;

// A tile's loads and stores of its w0 and w1 live lanes: whole vectors when full (w0 = 16, and w1 = 16
// where two), so that the loop over k carries no test of the width.
#define LOAD_W0(p) (full ? v16_load(p) : v16_load_n(p, w0))
#define LOAD_W1(p) (full ? v16_load(p) : v16_load_n(p, w1))
#define STORE_W0(p, v) (full ? v16_store(p, v) : v16_store_n(p, v, w0))
#define STORE_W1(p, v) (full ? v16_store(p, v) : v16_store_n(p, v, w1))

// One vector of row i of a tile, columns col .. col + 16 of it (n live lanes; all 16 when full): the
// epilogue applied to its sum, then stored at c. bias: the bias vector of those columns, loaded.
static ALWAYS_INLINE void finish_vector(v16 sum, float *c, v16 bias, int i, int col, const int full, int n,
                                        const Epilogue *e) {
#define LOAD_N(p) (full ? v16_load(p) : v16_load_n(p, n))
    if (e->accumulate) sum = v16_add(LOAD_N(c), sum);
    if (e->bias) sum = v16_add(bias, sum);
    if (e->residual) sum = v16_add(LOAD_N(e->residual + (size_t)i * e->ldr + col), sum);
    if (e->relu) sum = v16_max(sum, v16_zero());
    if (e->mask) sum = v16_where_positive(LOAD_N(e->mask + (size_t)i * e->ldm + col), sum);
#undef LOAD_N
    if (full)
        v16_store(c, sum);
    else
        v16_store_n(c, sum, n);
}

// C[i, 0..w) = epilogue(sum_k A[i, k] B[k, 0..w)) for i < mr; w0, w1: the live lanes of the two
// vectors (w0 = min(w, 16), w1 = w - 16). With two = 0 (w <= 16) the second vector, whose lanes are
// all dead, is left out: the same sums at half the work (the BFS model's 16-wide products).
static ALWAYS_INLINE void tile_ab(const int mr, const int two, const int full, float *C, int ldc, const float *A,
                                  int lda, const float *B, int ldb, int K, int w0, int w1, const Epilogue *e) {
    v16 c0[ROWS], c1[ROWS];
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) c0[i] = c1[i] = v16_zero();
    UNROLL_DEPTH
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb;
        v16 b0 = LOAD_W0(b), b1 = two ? LOAD_W1(b + 16) : v16_zero();
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            v16 a = v16_set1(A[(size_t)i * lda + k]);
            c0[i] = v16_fma(a, b0, c0[i]);
            if (two) c1[i] = v16_fma(a, b1, c1[i]);
        }
    }
    v16 bias0 = v16_zero(), bias1 = v16_zero();
    if (e->bias) {
        bias0 = LOAD_W0(e->bias);
        if (two) bias1 = LOAD_W1(e->bias + 16);
    }
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        finish_vector(c0[i], C + (size_t)i * ldc, bias0, i, 0, full, w0, e);
        if (two) finish_vector(c1[i], C + (size_t)i * ldc + 16, bias1, i, 16, full, w1, e);
    }
}

// AVX-512 also has a wide tile: WIDE_ROWS rows x two whole panels (64 columns, four vectors a row),
// the second panel's B `second` floats after the first's. Per step of k it loads four vectors of B
// and broadcasts 6 values of A for 24 multiply-adds, where the 12-row tile broadcasts 12 for 24: in
// L1, on an Intel Xeon, 79% of the register-only FMA loop's rate against 87% (medians of 15
// alternating rounds, three runs). The same sums, so the same bits.
enum { WIDE_ROWS = 6 };
static ALWAYS_INLINE void tile_ab_wide(const int mr, float *C, int ldc, const float *A, int lda, const float *B,
                                       int ldb, size_t second, int K, const Epilogue *e) {
    v16 c[WIDE_ROWS][4];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) c[i][0] = c[i][1] = c[i][2] = c[i][3] = v16_zero();
    UNROLL_DEPTH
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb;
        v16 b0 = v16_load(b), b1 = v16_load(b + 16), b2 = v16_load(b + second), b3 = v16_load(b + second + 16);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            v16 a = v16_set1(A[(size_t)i * lda + k]);
            c[i][0] = v16_fma(a, b0, c[i][0]);
            c[i][1] = v16_fma(a, b1, c[i][1]);
            c[i][2] = v16_fma(a, b2, c[i][2]);
            c[i][3] = v16_fma(a, b3, c[i][3]);
        }
    }
    v16 bias[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) bias[j] = e->bias ? v16_load(e->bias + 16 * j) : v16_zero();
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) finish_vector(c[i][j], C + (size_t)i * ldc + 16 * j, bias[j], i, 16 * j, 1, 16, e);
}

// C[i, 0..w) += sum_m A[m, i] B[m, 0..w) for i < nr: the reduction runs over the M rows with the
// tile of C held in registers throughout, from zero; the sum is added to C at the end (or, with
// add = 0, stored: C then gets the sum alone, as 0 + sum would give, since a sum from +0 is never -0).
static ALWAYS_INLINE void tile_atb(const int nr, const int two, const int full, float *C, int ldc, const float *A,
                                   int lda, const float *B, int ldb, int M, int w0, int w1, int add) {
    v16 c0[ROWS], c1[ROWS];
#pragma GCC unroll 12
    for (int i = 0; i < nr; i++) c0[i] = c1[i] = v16_zero();
    UNROLL_DEPTH
    for (int m = 0; m < M; m++) {
        const float *b = B + (size_t)m * ldb, *a = A + (size_t)m * lda;
        v16 b0 = LOAD_W0(b), b1 = two ? LOAD_W1(b + 16) : v16_zero();
#pragma GCC unroll 12
        for (int i = 0; i < nr; i++) {
            v16 ai = v16_set1(a[i]);
            c0[i] = v16_fma(ai, b0, c0[i]);
            if (two) c1[i] = v16_fma(ai, b1, c1[i]);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < nr; i++) {
        float *c = C + (size_t)i * ldc;
        STORE_W0(c, add ? v16_add(LOAD_W0(c), c0[i]) : c0[i]);
        if (two) STORE_W1(c + 16, add ? v16_add(LOAD_W1(c + 16), c1[i]) : c1[i]);
    }
}

// The wide tile of the reduction: WIDE_ROWS rows x 64 columns of C (four whole vectors), B's row m
// read at b, b + 16, b + 32, b + 48.
static ALWAYS_INLINE void tile_atb_wide(const int nr, float *C, int ldc, const float *A, int lda, const float *B,
                                        int ldb, int M, int add) {
    v16 c[WIDE_ROWS][4];
#pragma GCC unroll 6
    for (int i = 0; i < nr; i++) c[i][0] = c[i][1] = c[i][2] = c[i][3] = v16_zero();
    UNROLL_DEPTH
    for (int m = 0; m < M; m++) {
        const float *b = B + (size_t)m * ldb, *a = A + (size_t)m * lda;
        v16 b0 = v16_load(b), b1 = v16_load(b + 16), b2 = v16_load(b + 32), b3 = v16_load(b + 48);
#pragma GCC unroll 6
        for (int i = 0; i < nr; i++) {
            v16 ai = v16_set1(a[i]);
            c[i][0] = v16_fma(ai, b0, c[i][0]);
            c[i][1] = v16_fma(ai, b1, c[i][1]);
            c[i][2] = v16_fma(ai, b2, c[i][2]);
            c[i][3] = v16_fma(ai, b3, c[i][3]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < nr; i++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            float *c_ij = C + (size_t)i * ldc + 16 * j;
            v16_store(c_ij, add ? v16_add(v16_load(c_ij), c[i][j]) : c[i][j]);
        }
}

// Every tile height as its own fully unrolled kernel, so the accumulators stay in registers; each
// in a one-vector form for panels of at most 16 live columns (the only form where SPLIT_PANELS).
#if defined(SPLIT_PANELS)
#define TILE(kernel, rows, ...) (w0 == 16 ? kernel(rows, 0, 1, __VA_ARGS__) : kernel(rows, 0, 0, __VA_ARGS__))
#else
#define TILE(kernel, rows, ...)                                                                      \
    (w1 > 0 ? (w1 == 16 ? kernel(rows, 1, 1, __VA_ARGS__) : kernel(rows, 1, 0, __VA_ARGS__))          \
            : (w0 == 16 ? kernel(rows, 0, 1, __VA_ARGS__) : kernel(rows, 0, 0, __VA_ARGS__)))
#endif
// The switch over tile heights: the kernel at each height this variant's registers hold.
// clang-format off
#define TILE_CASE(kernel, rows, ...) case rows: TILE(kernel, rows, __VA_ARGS__); break;
#define TILE_CASES_SMALL(kernel, ...) TILE_CASE(kernel, 2, __VA_ARGS__) default: TILE(kernel, 1, __VA_ARGS__); break;
#define TILE_CASES_MID(kernel, ...) TILE_CASE(kernel, 6, __VA_ARGS__) TILE_CASE(kernel, 5, __VA_ARGS__) \
    TILE_CASE(kernel, 4, __VA_ARGS__) TILE_CASE(kernel, 3, __VA_ARGS__)
#define TILE_CASES_WIDE(kernel, ...) TILE_CASE(kernel, 12, __VA_ARGS__) TILE_CASE(kernel, 11, __VA_ARGS__) \
    TILE_CASE(kernel, 10, __VA_ARGS__) TILE_CASE(kernel, 9, __VA_ARGS__) TILE_CASE(kernel, 8, __VA_ARGS__) \
    TILE_CASE(kernel, 7, __VA_ARGS__)
#if defined(PF_LANES_AVX512)
#define TILE_SWITCH(rows, kernel, ...) switch (rows) { TILE_CASES_WIDE(kernel, __VA_ARGS__) \
    TILE_CASES_MID(kernel, __VA_ARGS__) TILE_CASES_SMALL(kernel, __VA_ARGS__) }
#elif defined(PF_LANES_AVX2)
#define TILE_SWITCH(rows, kernel, ...) switch (rows) { TILE_CASES_MID(kernel, __VA_ARGS__) \
    TILE_CASES_SMALL(kernel, __VA_ARGS__) }
#else
#define TILE_SWITCH(rows, kernel, ...) switch (rows) { TILE_CASES_SMALL(kernel, __VA_ARGS__) }
#endif
// clang-format on

static void tile_ab_rows(int rows, float *C, int ldc, const float *A, int lda, const float *B, int ldb, int K, int w0,
                         int w1, const Epilogue *e) {
#if defined(SPLIT_PANELS)
    if (w1 > 0) {  // columns 16 .. 16 + w1 as a tile of their own, after the first 16
        Epilogue right = *e;
        if (right.bias) right.bias += 16;
        if (right.residual) right.residual += 16;
        if (right.mask) right.mask += 16;
        tile_ab_rows(rows, C, ldc, A, lda, B, ldb, K, w0, 0, e);
        tile_ab_rows(rows, C + 16, ldc, A, lda, B + 16, ldb, K, w1, 0, &right);
        return;
    }
#endif
    TILE_SWITCH(rows, tile_ab, C, ldc, A, lda, B, ldb, K, w0, w1, e)
}

static void tile_atb_rows(int rows, float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int w0,
                          int w1, int add) {
#if defined(SPLIT_PANELS)
    if (w1 > 0) {
        tile_atb_rows(rows, C, ldc, A, lda, B, ldb, M, w0, 0, add);
        tile_atb_rows(rows, C + 16, ldc, A, lda, B + 16, ldb, M, w1, 0, add);
        return;
    }
#endif
    TILE_SWITCH(rows, tile_atb, C, ldc, A, lda, B, ldb, M, w0, w1, add)
}

// The wide tiles at each height up to WIDE_ROWS, the height folded in.
// clang-format off
#define WIDE_CASE(kernel, rows, ...) case rows: kernel(rows, __VA_ARGS__); break;
#define WIDE_SWITCH(rows, kernel, ...) switch (rows) { WIDE_CASE(kernel, 6, __VA_ARGS__) WIDE_CASE(kernel, 5, __VA_ARGS__) \
    WIDE_CASE(kernel, 4, __VA_ARGS__) WIDE_CASE(kernel, 3, __VA_ARGS__) WIDE_CASE(kernel, 2, __VA_ARGS__) \
    default: kernel(1, __VA_ARGS__); break; }
// clang-format on
_Static_assert(WIDE_ROWS == 6, "WIDE_SWITCH has a case for each height up to WIDE_ROWS");

static void tile_ab_wide_rows(int rows, float *C, int ldc, const float *A, int lda, const float *B, int ldb,
                              size_t second, int K, const Epilogue *e) {
    WIDE_SWITCH(rows, tile_ab_wide, C, ldc, A, lda, B, ldb, second, K, e)
}

static void tile_atb_wide_rows(int rows, float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M,
                               int add) {
    WIDE_SWITCH(rows, tile_atb_wide, C, ldc, A, lda, B, ldb, M, add)
}

// C (M, N) = epilogue(A (M, K) B) where column panel p of B (K x PANEL, row stride ldb) starts at
// B + p * panel_step. Panels go in the outer loop, so one panel (K x PANEL: 8 KiB at K = 64) stays in
// L1 while the rows of A stream by, read in place. (Measured against the other order, row blocks
// outer with A packed: this one ran the model's forward products at 98-102 GFLOP/s per core
// against 78-93, AVX-512.) Each tile asks for the next tile's rows of C for writing: in a training
// step C is a saved activation or a gradient last touched a pass earlier, whose lines would
// otherwise be fetched only as the tile stores them (make bench-ab, training steps, time against
// the tiles without: AVX-512 0.968 and 0.960, AVX2 0.971 and 0.983; inference unchanged).
static void product(float *C, int ldc, const float *A, int lda, const float *B, int ldb, size_t panel_step, int M,
                    int N, int K, Epilogue e) {
    const float *bias = e.bias, *residual = e.residual;
    for (int n0 = 0, p = 0; n0 < N; n0 += PANEL, p++) {
        int w = N - n0 < PANEL ? N - n0 : PANEL;
        int w0 = w < 16 ? w : 16, w1 = w - 16;
        const float *b = B + p * panel_step;
        if (bias) e.bias = bias + n0;
        if (WIDE_TILES && N - n0 >= 2 * PANEL) {  // two whole panels through the wide tile
            for (int i0 = 0; i0 < M; i0 += WIDE_ROWS) {
                int rows = M - i0 < WIDE_ROWS ? M - i0 : WIDE_ROWS;
                if (residual) e.residual = residual + (size_t)i0 * e.ldr + n0;
                for (int i = i0 + WIDE_ROWS; i < i0 + 2 * WIDE_ROWS && i < M; i++)
                    for (int j = 0; j < 2 * PANEL; j += 16) __builtin_prefetch(C + (size_t)i * ldc + n0 + j, 1);
                tile_ab_wide_rows(rows, C + (size_t)i0 * ldc + n0, ldc, A + (size_t)i0 * lda, lda, b, ldb,
                                  panel_step, K, &e);
            }
            n0 += PANEL;
            p++;
            continue;
        }
        for (int i0 = 0; i0 < M; i0 += ROWS) {
            int rows = M - i0 < ROWS ? M - i0 : ROWS;
            float *c = C + (size_t)i0 * ldc + n0;
            const float *a = A + (size_t)i0 * lda;
            if (residual) e.residual = residual + (size_t)i0 * e.ldr + n0;
            for (int i = i0 + ROWS; i < i0 + 2 * ROWS && i < M; i++) {
                __builtin_prefetch(C + (size_t)i * ldc + n0, 1);
                if (w > 16) __builtin_prefetch(C + (size_t)i * ldc + n0 + 16, 1);
            }
            tile_ab_rows(rows, c, ldc, a, lda, b, ldb, K, w0, w1, &e);
        }
    }
}

// The masked product, C = mask ? A B : 0, in the other order: each block of ROWS rows passes over
// every panel before the next block, so that the mask and C rows go by in order, and each tile asks
// for the mask rows of the block below. The mask is a saved activation, far off in memory by the
// backward, and C as wide (256 columns); B is small and packed. Panels outer, the product ran at 65-69%
// of the multiply-add limit inside an AVX2 training step (with the mask asked for four tiles ahead;
// 47% without); rows first, 84-86%.
static void product_rows_first(float *C, int ldc, const float *A, int lda, const float *B, int ldb,
                               size_t panel_step, int M, int N, int K, const float *mask, int ldm) {
    Epilogue e = {.mask = mask, .ldm = ldm};
    int block = WIDE_TILES && N >= 2 * PANEL ? WIDE_ROWS : ROWS;  // pairs of panels through the wide tile
    for (int i0 = 0; i0 < M; i0 += block) {
        int rows = M - i0 < block ? M - i0 : block;
        const float *a = A + (size_t)i0 * lda;
        for (int n0 = 0, p = 0, panels; n0 < N; n0 += panels * PANEL, p += panels) {
            int wide = WIDE_TILES && N - n0 >= 2 * PANEL, w = N - n0 < PANEL ? N - n0 : PANEL;
            int w0 = w < 16 ? w : 16, w1 = w - 16, width = wide ? 2 * PANEL : w;
            float *c = C + (size_t)i0 * ldc + n0;
            const float *b = B + p * panel_step;
            panels = wide ? 2 : 1;
            e.mask = mask + (size_t)i0 * ldm + n0;
            for (int i = i0 + block; i < i0 + 2 * block && i < M; i++)
                for (int j = 0; j < width; j += 16) __builtin_prefetch(mask + (size_t)i * ldm + n0 + j);
            if (wide)
                tile_ab_wide_rows(rows, c, ldc, a, lda, b, ldb, panel_step, K, &e);
            else
                tile_ab_rows(rows, c, ldc, a, lda, b, ldb, K, w0, w1, &e);
        }
    }
}

static void clear_rows(float *C, int ldc, int M, int N) {
    for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, sizeof(float) * N);
}

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
        int block = WT_FLOATS / (kc * PANEL) * PANEL; // columns per packing
        for (int n0 = 0; n0 < N; n0 += block) {
            int width = N - n0 < block ? N - n0 : block;
            pack_block(wt, W, ldw, n0, width, k0, kc);
            Epilogue e = chunk_epilogue(k0, kc, K, n0, bias, residual, ldr, relu);
            product(C + n0, ldc, A + k0, lda, wt, PANEL, (size_t)kc * PANEL, M, width, kc, e);
        }
    }
}

// The packed layout's columns: whole panels.
static int padded_columns(int N) { return (N + PANEL - 1) / PANEL * PANEL; }

void gemm_nt_packed(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                    const float *bias, const float *residual, int ldr, int relu) {
    if (K == 0) {
        epilogue_only(C, ldc, M, N, bias, residual, ldr, relu);
        return;
    }
    for (int k0 = 0; k0 < K; k0 += KCHUNK) {
        int kc = K - k0 < KCHUNK ? K - k0 : KCHUNK;
        Epilogue e = chunk_epilogue(k0, kc, K, 0, bias, residual, ldr, relu);
        product(C, ldc, A + k0, lda, packed + (size_t)k0 * padded_columns(N), PANEL, (size_t)kc * PANEL, M, N, kc, e);
    }
}

// B packed into panels (gemm_pack_rows), so that each tile reads its panel in order: in place, a
// panel's rows lie ldb floats apart, and a weight last read in the forward comes from memory as the
// product runs. (AVX2 in a training step: the input gradients' products from 86-87% of the
// multiply-add limit to 89-91%.)
void gemm_nn_packed(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                    int accumulate) {
    if (K == 0 && !accumulate) clear_rows(C, ldc, M, N);
    Epilogue e = {.accumulate = accumulate};
    if (K > 0) product(C, ldc, A, lda, packed, PANEL, (size_t)K * PANEL, M, N, K, e);
}

void gemm_nn_masked_packed(float *C, int ldc, const float *A, int lda, const float *packed, const float *mask,
                           int ldm, int M, int N, int K) {
    if (K == 0) {
        clear_rows(C, ldc, M, N);
        return;
    }
    product_rows_first(C, ldc, A, lda, packed, PANEL, (size_t)K * PANEL, M, N, K, mask, ldm);
}

// Unpacked B: packed here when it fits (up to WT_FLOATS), else read in place.
void gemm_nn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K, int accumulate) {
    if (K > 0 && gemm_rows_packed_floats(K, N) <= WT_FLOATS) {
        float packed[WT_FLOATS] __attribute__((aligned(64)));
        gemm_pack_rows(packed, B, ldb, K, N);
        gemm_nn_packed(C, ldc, A, lda, packed, M, N, K, accumulate);
        return;
    }
    if (K == 0 && !accumulate) clear_rows(C, ldc, M, N);
    Epilogue e = {.accumulate = accumulate};
    if (K > 0) product(C, ldc, A, lda, B, ldb, PANEL, M, N, K, e);
}

void gemm_nn_masked(float *C, int ldc, const float *A, int lda, const float *B, int ldb, const float *mask, int ldm,
                    int M, int N, int K) {
    if (K > 0 && gemm_rows_packed_floats(K, N) <= WT_FLOATS) {
        float packed[WT_FLOATS] __attribute__((aligned(64)));
        gemm_pack_rows(packed, B, ldb, K, N);
        gemm_nn_masked_packed(C, ldc, A, lda, packed, mask, ldm, M, N, K);
        return;
    }
    if (K == 0) {
        clear_rows(C, ldc, M, N);
        return;
    }
    product_rows_first(C, ldc, A, lda, B, ldb, PANEL, M, N, K, mask, ldm);
}

// One chunk of rows (at most MCHUNK) of a reduction: every tile of C passes over the chunk of A and
// B while it sits in cache (brought in once, from memory when it is a saved activation). The tiles
// share out the asking for ahead_bytes from ahead on, a line at a time (the next chunk's rows).
static void reduce_chunk(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int chunk, int N, int K,
                         int add, const char *ahead, size_t ahead_bytes) {
    int block = WIDE_TILES && K >= 2 * PANEL ? WIDE_ROWS : ROWS;  // pairs of panels through the wide tile
    size_t tiles = (size_t)((N + block - 1) / block) * ((K + PANEL - 1) / PANEL);  // counted in panels
    size_t lines = (ahead_bytes + 63) / 64, per_panel = (lines + tiles - 1) / tiles, next = 0;
    for (int i0 = 0; i0 < N; i0 += block) {
        int rows = N - i0 < block ? N - i0 : block;
        for (int k0 = 0, panels; k0 < K; k0 += panels * PANEL) {
            int wide = WIDE_TILES && K - k0 >= 2 * PANEL, w = K - k0 < PANEL ? K - k0 : PANEL;
            float *c = C + (size_t)i0 * ldc + k0;
            panels = wide ? 2 : 1;
            for (size_t j = 0; j < panels * per_panel && next < lines; j++, next++) __builtin_prefetch(ahead + next * 64);
            if (wide)
                tile_atb_wide_rows(rows, c, ldc, A + i0, lda, B + k0, ldb, chunk, add);
            else
                tile_atb_rows(rows, c, ldc, A + i0, lda, B + k0, ldb, chunk, w < 16 ? w : 16, w - 16, add);
        }
    }
}

// C (N, K) += T^T for T (K, N): 16 x 16 blocks transposed in registers (the strided scalar loop
// took 2.6% of an AVX2 training step), the edges one by one; each C[i, k] gains T[k, i] alone.
static void add_transposed(float *C, int ldc, const float *T, int N, int K) {
    int N16 = N / 16 * 16, K16 = K / 16 * 16;
    for (int i0 = 0; i0 < N16; i0 += 16)
        for (int k0 = 0; k0 < K16; k0 += 16) {
            v16 block[16];
            for (int j = 0; j < 16; j++) block[j] = v16_load(T + (size_t)(k0 + j) * N + i0);
            v16_transpose(block);
            for (int j = 0; j < 16; j++) {
                float *c = C + (size_t)(i0 + j) * ldc + k0;
                v16_store(c, v16_add(v16_load(c), block[j]));
            }
        }
    for (int i = 0; i < N; i++)
        for (int k = i < N16 ? K16 : 0; k < K; k++) C[(size_t)i * ldc + k] += T[(size_t)k * N + i];
}

// With fewer rows of C than columns (linear2's weight gradient, 64 x 256), C^T = B^T A is the
// better shape for the tiles (12-row blocks, long rows streamed: measured 102 against 67 GFLOP/s):
// each chunk's sums go into a buffer and are added to C transposed, so that C gains the same chunk
// sums in the same order either way.
void gemm_tn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K) {
    int transposed = N < K && (size_t)N * K <= WT_FLOATS;
    float ct[WT_FLOATS] __attribute__((aligned(64)));
    for (int r0 = 0; r0 < M; r0 += MCHUNK) {
        int chunk = M - r0 < MCHUNK ? M - r0 : MCHUNK;
        const float *a = A + (size_t)r0 * lda, *b = B + (size_t)r0 * ldb;
        if (!transposed) {
            // B is a saved activation, far off in memory by the backward: the chunk's tiles ask
            // for the next chunk's rows as they go (AVX2 in a training step, in_proj's weight
            // gradient 81 -> 86% of the multiply-add limit, out_proj's 68 -> 80%, linear1's 84 ->
            // 87%). linear2's transposed product, whose B was read just before by the masked
            // product, gained nothing.
            int next = M - r0 - chunk < MCHUNK ? M - r0 - chunk : MCHUNK;
            size_t ahead = next > 0 ? sizeof(float) * ((size_t)(next - 1) * ldb + K) : 0;
            reduce_chunk(C, ldc, a, lda, b, ldb, chunk, N, K, 1, (const char *)(b + (size_t)chunk * ldb), ahead);
            continue;
        }
        reduce_chunk(ct, N, b, ldb, a, lda, chunk, K, N, 0, NULL, 0);
        add_transposed(C, ldc, ct, N, K);
    }
}

const GemmKernels PF_KERNEL(GEMM_KERNELS) = {
    .nt = gemm_nt,
    .nt_packed = gemm_nt_packed,
    .nn = gemm_nn,
    .nn_masked = gemm_nn_masked,
    .nn_packed = gemm_nn_packed,
    .nn_masked_packed = gemm_nn_masked_packed,
    .tn = gemm_tn,
};
