// The ops' backend seam (inside src/ops/ only; callers use ops.h). A backend is one table of the
// ops that have more than one implementation, all with the signatures of ops.h: the reference
// (ops_reference.c, plain loops, every op), OpenBLAS for the matmuls (ops_blas.c), and the kernels
// (ops_kernels.c with gemm.c, one variant per instruction set, kernels.h) for the matmuls, the
// attention and the layernorm. A NULL
// entry: the backend does not offer that op family. Where a fast kernel does not fit the shapes at
// hand, its backend runs the reference op itself. ops.c chooses a backend per family at run time.
#ifndef PATHFORMER_OPS_BACKEND_H
#define PATHFORMER_OPS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"  // pf_thread_share, omp.h

typedef struct {
    const char *name;
    // OPS_MATMUL
    void (*matmul_forward_fused)(float *out, const float *inp, const float *weight, const float *weight_packed,
                                 const float *bias, const float *residual, int relu, int N, int C, int OC);
    void (*matmul_backward)(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, const float *weight_rows, int N, int C, int OC);
    // NULL within the family: ops.c composes it from matmul_backward and relu_backward
    void (*matmul_backward_relu)(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                 const float *weight, const float *weight_rows, int N, int C, int OC);
    // OPS_ATTENTION
    void (*attention_forward_packed)(float *out, float *att, const float *qkv, const float *key_counts,
                                     const int *offsets, int B, int T, int C, int NH, int last_only);
    void (*attention_backward_packed)(float *dqkv, const float *dout, const float *qkv, const float *att,
                                      const int *offsets, int B, int T, int C, int NH, int last_only);
    // OPS_LAYERNORM
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                              const float *bias, int N, int C);
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *weight, const float *mean, const float *rstd, int N, int C);
} OpsBackend;

extern const OpsBackend OPS_REFERENCE;  // "loops"
#ifdef PF_HAVE_BLAS
extern const OpsBackend OPS_BLAS;       // "openblas"
#endif
// "kernels": one table per instruction set (kernels.h), the one in use chosen at start (ops.c)

// Whether a parallel region begun here would run on more than one thread: not inside a gradient
// worker's region (a nested region runs on the worker alone) nor with one thread set. There an op
// runs its loop on the calling thread, since libgomp would still set up and tear down a team of one
// around it, with a futex call at its barrier, about six times an example in a training step (make
// bench-ab, AVX2, one thread, time against regions everywhere: training 0.98, inference 0.96).
static inline int pf_team_useful(void) {
#ifdef _OPENMP
    return omp_get_max_threads() > 1 && omp_get_active_level() < omp_get_max_active_levels();
#else
    return 0;
#endif
}

// PF_PARALLEL(body): body on a team of threads where pf_team_useful, else on the calling thread alone.
// Within body, PF_SHARE(total, &lo, &hi) is this thread's share of total items (all of them without
// a team: pf_thread_share would split them by a worker's number in its own region).
#define PF_PARALLEL(...)                                                                                 \
    do {                                                                                                 \
        if (pf_team_useful()) {                                                                          \
            _Pragma("omp parallel") {                                                                    \
                const int pf_team = 1;                                                                   \
                __VA_ARGS__                                                                              \
            }                                                                                            \
        } else {                                                                                         \
            const int pf_team = 0;                                                                       \
            __VA_ARGS__                                                                                  \
        }                                                                                                \
    } while (0)
#define PF_SHARE(total, lo, hi) (pf_team ? pf_thread_share(total, lo, hi) : (void)(*(lo) = 0, *(hi) = (total)))

enum { LAYERNORM_BLOCK = 256 };  // columns per block of the layernorm backward's local buffers

// dbias[lo..hi) += column sums of dout (N, OC) over those columns (every matmul backend's bias
// gradient, so that it is the same bits whichever computes the products).
void ops_column_sums(float *dbias, const float *dout, int N, int OC, int lo, int hi);
// The elementwise tail of a fused linear layer on rows lo..hi of out (the BLAS and loop backends).
void ops_residual_relu_rows(float *out, const float *residual, int relu, int lo, int hi, int OC);

#endif
