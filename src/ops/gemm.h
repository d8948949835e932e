// Single-precision matrix products for the model's skinny shapes (rows = tokens, 64..256 columns):
// register-tile kernels in which weights stream from L1 while the long token dimension runs through
// registers, so no general-purpose packing pass is needed. Written once against the 16-lane vector
// of lanes.h and compiled per instruction set (AVX-512, AVX2, NEON, plain): every variant gives the
// same bits, each output a sum over the depth in one order with fused multiply-adds. Single-threaded;
// the callers split rows or output blocks between threads. All matrices are row-major with leading
// dimensions. The functions below run the variant in use (ops_kernels_variant); each variant's own
// copies are declared in kernels.h. Tested against double-precision loops (test_kernels).
#ifndef PATHFORMER_GEMM_H
#define PATHFORMER_GEMM_H

#include <stddef.h>

// C (M, N) = relu(residual + (A (M, K) @ W^T + bias)) with W (N, K) as a linear layer stores its
// weight; bias (N), residual (M, N) with row stride ldr and the ReLU are each optional (NULL, 0).
// A fused linear layer: one pass over C instead of one per elementwise op, with the same sums.
// Each C[i, j] is bias[j] + the sum over k in order (fused multiply-adds from zero), in chunks of
// GEMM_KCHUNK: every later chunk's sum is added to the earlier ones' result.
void gemm_nt(float *C, int ldc, const float *A, int lda, const float *W, int ldw, int M, int N, int K,
             const float *bias, const float *residual, int ldr, int relu);
// W (N, K) packed once for gemm_nt_packed (a weight that stays fixed for many products, as within a
// training step): gemm_packed_floats(N, K) floats, filled by gemm_pack. One layout for every variant.
size_t gemm_packed_floats(int N, int K);
void gemm_pack(float *packed, const float *W, int ldw, int N, int K);
// gemm_nt with W already packed: the same results bit for bit, without packing W on every call.
void gemm_nt_packed(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                    const float *bias, const float *residual, int ldr, int relu);

// C (M, N) = A (M, K) @ B (K, N), or C + that when accumulate
void gemm_nn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K, int accumulate);
// C (M, N) = A (M, K) @ B (K, N), zero where mask (M, N, row stride ldm) is <= 0: the input
// gradient of a linear layer through the ReLU before it (mask: the ReLU's output).
void gemm_nn_masked(float *C, int ldc, const float *A, int lda, const float *B, int ldb, const float *mask, int ldm,
                    int M, int N, int K);
// B (K, N) packed for the two above (a linear layer's weight as its input gradient reads it, which
// stays fixed through a training step): gemm_rows_packed_floats(K, N) floats, filled by
// gemm_pack_rows; panel p holds row k's columns p * GEMM_PANEL .. at k * GEMM_PANEL, lanes past N
// zero. One layout for every variant; the packed forms give the same results bit for bit.
size_t gemm_rows_packed_floats(int K, int N);
void gemm_pack_rows(float *packed, const float *B, int ldb, int K, int N);
void gemm_nn_packed(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                    int accumulate);
void gemm_nn_masked_packed(float *C, int ldc, const float *A, int lda, const float *packed, const float *mask,
                           int ldm, int M, int N, int K);
// C (N, K) += A^T @ B with A (M, N) and B (M, K): the sum runs over the M rows (a weight gradient),
// in chunks of GEMM_MCHUNK rows, each summed from zero and then added to C.
void gemm_tn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K);

// The packed layout: depth chunks of GEMM_KCHUNK, each holding panels of GEMM_PANEL columns (row k of
// a panel at k * GEMM_PANEL); lanes past N are zero. GEMM_MCHUNK: rows of a gemm_tn reduction that go
// into registers from zero before they are added to C, so that float sums of a hundred-odd terms of
// random sign stay as accurate as a blocked BLAS product.
enum { GEMM_PANEL = 32, GEMM_KCHUNK = 512, GEMM_MCHUNK = 128 };

#endif
