// The OpenBLAS backend: the linear layers' products through cblas_sgemm, one call per thread on its
// own rows (ops_set_threads keeps the library single-threaded). Built when make found a CBLAS.
#ifdef PF_HAVE_BLAS
#include <cblas.h>
#include <string.h>

#include "ops/backend.h"

static void matmul_forward_blas(float *out, const float *inp, const float *weight, const float *weight_packed,
                                const float *bias, const float *residual, int relu, int N, int C, int OC) {
    PF_PARALLEL({
        int lo, hi;
        PF_SHARE(N, &lo, &hi);
        if (hi > lo) {
            // The bias goes in first and the product is added to it (beta 1): with beta 0 OpenBLAS
            // clears the output in a separate pass, which cost about 9% of inference.
            for (int n = lo; bias && n < hi; n++) memcpy(out + (size_t)n * OC, bias, sizeof(float) * OC);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, OC, C, 1.0f, inp + (size_t)lo * C, C, weight,
                        C, bias ? 1.0f : 0.0f, out + (size_t)lo * OC, OC);
            if (residual || relu) ops_residual_relu_rows(out, residual, relu, lo, hi, OC);
        }
    });
}

static void matmul_backward_blas(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                 const float *weight, const float *weight_rows, int N, int C, int OC) {
    (void)weight_rows;  // the kernels' layout
    PF_PARALLEL({
        int lo, hi;
        PF_SHARE(N, &lo, &hi);  // dinp: rows of the batch
        if (dinp && hi > lo)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo, C, OC, 1.0f, dout + (size_t)lo * OC, OC,
                        weight, C, 1.0f, dinp + (size_t)lo * C, C);
        PF_SHARE(OC, &lo, &hi);  // dweight and dbias: its own rows, each reducing over the whole batch
        if (hi > lo) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hi - lo, C, N, 1.0f, dout + lo, OC, inp, C, 1.0f,
                        dweight + (size_t)lo * C, C);
            if (dbias) ops_column_sums(dbias, dout, N, OC, lo, hi);
        }
    });
}

const OpsBackend OPS_BLAS = {
    .name = "openblas",
    .matmul_forward_fused = matmul_forward_blas,
    .matmul_backward = matmul_backward_blas,
};
#else
typedef int ops_blas_not_built;  // ISO C wants a translation unit to declare something
#endif
