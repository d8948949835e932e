// Inside src/ops/ only: what each variant of the kernels (gemm.c and ops_kernels.c, compiled once per
// instruction set, see lanes.h) defines, under its own names, and the tables through which ops.c
// reaches them.
#ifndef PATHFORMER_OPS_KERNELS_H
#define PATHFORMER_OPS_KERNELS_H

#include "ops/backend.h"

// One variant's products (gemm.h's, with the same meaning).
typedef struct {
    void (*nt)(float *C, int ldc, const float *A, int lda, const float *W, int ldw, int M, int N, int K,
               const float *bias, const float *residual, int ldr, int relu);
    void (*nt_packed)(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                      const float *bias, const float *residual, int ldr, int relu);
    void (*nn)(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K,
               int accumulate);
    void (*nn_masked)(float *C, int ldc, const float *A, int lda, const float *B, int ldb, const float *mask,
                      int ldm, int M, int N, int K);
    void (*nn_packed)(float *C, int ldc, const float *A, int lda, const float *packed, int M, int N, int K,
                      int accumulate);
    void (*nn_masked_packed)(float *C, int ldc, const float *A, int lda, const float *packed, const float *mask,
                             int ldm, int M, int N, int K);
    void (*tn)(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int M, int N, int K);
} GemmKernels;

// A variant: its name, its products and its backend (named "kernels").
typedef struct {
    const char *name;
    const GemmKernels *gemm;
    const OpsBackend *ops;
} KernelVariant;

#if defined(__x86_64__)
extern const GemmKernels GEMM_KERNELS_avx512, GEMM_KERNELS_avx2, GEMM_KERNELS_plain;
extern const OpsBackend OPS_KERNELS_avx512, OPS_KERNELS_avx2, OPS_KERNELS_plain;
#elif defined(__aarch64__)
extern const GemmKernels GEMM_KERNELS_neon;
extern const OpsBackend OPS_KERNELS_neon;
#else
extern const GemmKernels GEMM_KERNELS_plain;
extern const OpsBackend OPS_KERNELS_plain;
#endif

// The products of the variant in use (ops.c).
const GemmKernels *ops_kernels_gemm(void);

// Adds a variant under a new name, for ops_set_kernels_variant (not listed by ops_kernel_variants):
// the same kernels built from another revision's sources, which bench/ab/bench_ab.c times against
// this one's. It runs where the built-in variant `like` runs. -1 when the name is taken, `like` is
// not built in, or four were added already. *v is copied.
int ops_add_kernels_variant(const KernelVariant *v, const char *like);

#ifdef PF_VARIANT
// Inside a variant's own files: its products, under its own names.
#define gemm_nt PF_KERNEL(gemm_nt)
#define gemm_nt_packed PF_KERNEL(gemm_nt_packed)
#define gemm_nn PF_KERNEL(gemm_nn)
#define gemm_nn_masked PF_KERNEL(gemm_nn_masked)
#define gemm_nn_packed PF_KERNEL(gemm_nn_packed)
#define gemm_nn_masked_packed PF_KERNEL(gemm_nn_masked_packed)
#define gemm_tn PF_KERNEL(gemm_tn)
#endif

#endif
