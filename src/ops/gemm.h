// Single-precision matrix products for the model's skinny shapes (rows = tokens, 64..256 columns),
// with AVX-512 register-tile kernels: weights stream from L1 while the long token dimension runs
// through registers, so no general-purpose packing pass is needed. Single-threaded; the callers
// split rows or output blocks between threads. All matrices are row-major with leading dimensions.
// gemm_available() says whether this build has the kernels (an AVX-512 target); when it has not,
// the ops use the BLAS or plain loops instead. Tested against double-precision loops (test_ops).
#ifndef PATHFORMER_GEMM_H
#define PATHFORMER_GEMM_H

#include <stddef.h>

int gemm_available(void);

// C (M, N) = relu(residual + (A (M, K) @ W^T + bias)) with W (N, K) as a linear layer stores its
// weight; bias (N), residual (M, N) with row stride ldr and the ReLU are each optional (NULL, 0).
// A fused linear layer: one pass over C instead of one per elementwise op, with the same sums.
void gemm_nt(float *C, int ldc, const float *A, int lda, const float *W, int ldw, int M, int N, int K,
             const float *bias, const float *residual, int ldr, int relu);
// W (N, K) packed once for gemm_nt_packed (a weight that stays fixed for many products, as within a
// training step): gemm_packed_floats(N, K) floats, filled by gemm_pack.
size_t gemm_packed_floats(int N, int K);
void gemm_pack(float *packed, const float *W, int ldw, int N, int K);
// gemm_nt with W already packed: the same results bit for bit, without packing W on every call.
void gemm_nt_packed(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                    const float *bias, const float *residual, int ldr, int relu);

// C (M, N) = A (M, K) @ B (K, N), or += when accumulate
void gemm_nn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K, int accumulate);
// C (M, N) = A (M, K) @ B (K, N), zero where mask (M, N, row stride ldm) is <= 0: the input
// gradient of a linear layer through the ReLU before it (mask: the ReLU's output).
void gemm_nn_masked(float *C, int ldc, const float *A, int lda, const float *B, int ldb, const float *mask, int ldm,
                    int M, int N, int K);
// C (N, K) += A^T @ B with A (M, N) and B (M, K): the sum runs over the M rows (a weight gradient)
void gemm_tn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K);

#endif
