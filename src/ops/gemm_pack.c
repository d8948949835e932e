// gemm.h's packed weight layout, the same for every variant of the products, and the products of
// the variant in use.
#include "ops/gemm.h"

#include <string.h>

#include "ops/kernels.h"
#include "ops/ops.h"

static int padded_columns(int N) { return (N + GEMM_PANEL - 1) / GEMM_PANEL * GEMM_PANEL; }

size_t gemm_packed_floats(int N, int K) { return (size_t)padded_columns(N) * (K > 0 ? K : 1); }

void gemm_pack(float *packed, const float *W, int ldw, int N, int K) {
    for (int k0 = 0; k0 < K; k0 += GEMM_KCHUNK) {
        int kc = K - k0 < GEMM_KCHUNK ? K - k0 : GEMM_KCHUNK;
        float *chunk = packed + (size_t)k0 * padded_columns(N);
        for (int j = 0; j < padded_columns(N); j++) {
            float *out = chunk + (size_t)(j / GEMM_PANEL) * kc * GEMM_PANEL + j % GEMM_PANEL;
            for (int k = 0; k < kc; k++) out[k * GEMM_PANEL] = j < N ? W[(size_t)j * ldw + k0 + k] : 0.0f;
        }
    }
}

size_t gemm_rows_packed_floats(int K, int N) { return (size_t)padded_columns(N) * (K > 0 ? K : 1); }

void gemm_pack_rows(float *packed, const float *B, int ldb, int K, int N) {
    for (int n0 = 0; n0 < N; n0 += GEMM_PANEL) {
        float *panel = packed + (size_t)n0 * K;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < GEMM_PANEL; j++)
                panel[k * GEMM_PANEL + j] = n0 + j < N ? B[(size_t)k * ldb + n0 + j] : 0.0f;
    }
}

void gemm_nt(float *C, int ldc, const float *A, int lda, const float *W, int ldw, int M, int N, int K,
             const float *bias, const float *residual, int ldr, int relu) {
    ops_kernels_gemm()->nt(C, ldc, A, lda, W, ldw, M, N, K, bias, residual, ldr, relu);
}

void gemm_nt_packed(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                    const float *bias, const float *residual, int ldr, int relu) {
    ops_kernels_gemm()->nt_packed(C, ldc, A, lda, packed, M, N, K, bias, residual, ldr, relu);
}

void gemm_nn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K, int accumulate) {
    ops_kernels_gemm()->nn(C, ldc, A, lda, B, ldb, M, N, K, accumulate);
}

void gemm_nn_masked(float *C, int ldc, const float *A, int lda, const float *B, int ldb, const float *mask, int ldm,
                    int M, int N, int K) {
    ops_kernels_gemm()->nn_masked(C, ldc, A, lda, B, ldb, mask, ldm, M, N, K);
}

void gemm_nn_packed(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                    int accumulate) {
    ops_kernels_gemm()->nn_packed(C, ldc, A, lda, packed, M, N, K, accumulate);
}

void gemm_nn_masked_packed(float *C, int ldc, const float *A, int lda, const float *packed, const float *mask,
                           int ldm, int M, int N, int K) {
    ops_kernels_gemm()->nn_masked_packed(C, ldc, A, lda, packed, mask, ldm, M, N, K);
}

void gemm_tn(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K) {
    ops_kernels_gemm()->tn(C, ldc, A, lda, B, ldb, M, N, K);
}
