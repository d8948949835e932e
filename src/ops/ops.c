// The ops' dispatch: which backend runs each op family (backend.h), chosen at run time; the
// threads; and the ops that combine others.
#include "ops/ops.h"

#include <string.h>
#include <unistd.h>

#ifdef PF_HAVE_BLAS
void openblas_set_num_threads(int num_threads);  // OpenBLAS extension; not in every cblas.h
#endif

#include "ops/backend.h"

// The backends this build has, fastest first: the AVX-512 kernels measured fastest on the model's
// shapes (see bench_train's per-backend lines), then OpenBLAS, then the reference loops.
static const OpsBackend *const BACKENDS[] = {
#if defined(__AVX512F__)
    &OPS_KERNELS,
#endif
#ifdef PF_HAVE_BLAS
    &OPS_BLAS,
#endif
    &OPS_REFERENCE,
};
enum { NUM_BACKENDS = sizeof(BACKENDS) / sizeof(BACKENDS[0]) };

static const char *const FAMILY_NAMES[NUM_OP_FAMILIES] = {"matmul", "attention", "layernorm"};

static int offers(const OpsBackend *b, OpFamily family) {
    switch (family) {
    case OPS_MATMUL: return b->matmul_forward_fused != NULL;
    case OPS_ATTENTION: return b->attention_forward_packed != NULL;
    default: return b->layernorm_forward != NULL;
    }
}

// The backend of each family: the fastest that offers it, unless ops_set_backend chose another.
#if defined(__AVX512F__)
static const OpsBackend *chosen[NUM_OP_FAMILIES] = {&OPS_KERNELS, &OPS_KERNELS, &OPS_KERNELS};
#elif defined(PF_HAVE_BLAS)
static const OpsBackend *chosen[NUM_OP_FAMILIES] = {&OPS_BLAS, &OPS_REFERENCE, &OPS_REFERENCE};
#else
static const OpsBackend *chosen[NUM_OP_FAMILIES] = {&OPS_REFERENCE, &OPS_REFERENCE, &OPS_REFERENCE};
#endif

static const OpsBackend *backend_of(OpFamily family) { return chosen[family]; }

const char *ops_family_name(OpFamily family) { return FAMILY_NAMES[family]; }

int ops_num_backends(OpFamily family) {
    int n = 0;
    for (int i = 0; i < NUM_BACKENDS; i++) n += offers(BACKENDS[i], family);
    return n;
}

const char *ops_backend_name(OpFamily family, int i) {
    for (int b = 0; b < NUM_BACKENDS; b++)
        if (offers(BACKENDS[b], family) && i-- == 0) return BACKENDS[b]->name;
    return NULL;
}

int ops_set_backend(OpFamily family, const char *name) {
    for (int i = 0; i < NUM_BACKENDS; i++)
        if (strcmp(name, BACKENDS[i]->name) == 0 && offers(BACKENDS[i], family)) {
            chosen[family] = BACKENDS[i];
            return 0;
        }
    return -1;
}

const char *ops_get_backend(OpFamily family) { return backend_of(family)->name; }

const char *ops_backend(void) { return ops_get_backend(OPS_MATMUL); }

int ops_set_matmul_backend(const char *name) { return ops_set_backend(OPS_MATMUL, name); }

// OpenBLAS's sums for a row depend on the row's place in its register blocks (ops.h); the kernels
// and the loops sum each row on its own.
int ops_matmul_rows_independent(void) {
#ifdef PF_HAVE_BLAS
    return backend_of(OPS_MATMUL) != &OPS_BLAS;
#else
    return 1;
#endif
}

int ops_set_threads(int n) {
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
#ifdef PF_HAVE_BLAS
    // OpenMP threads split each product and call a single-threaded BLAS: one thread pool, not two
    // pools spinning against each other on few cores (which halved throughput when measured).
    openblas_set_num_threads(1);
#endif
    return n;
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
    matmul_forward_fused(out, inp, weight, NULL, bias, NULL, 0, N, C, OC);
}

void matmul_forward_fused(float *out, const float *inp, const float *weight, const float *weight_packed,
                          const float *bias, const float *residual, int relu, int N, int C, int OC) {
    backend_of(OPS_MATMUL)->matmul_forward_fused(out, inp, weight, weight_packed, bias, residual, relu, N, C, OC);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC) {
    backend_of(OPS_MATMUL)->matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
}

void matmul_backward_relu(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const float *weight, int N, int C, int OC) {
    const OpsBackend *b = backend_of(OPS_MATMUL);
    if (b->matmul_backward_relu) {
        b->matmul_backward_relu(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
        return;
    }
    memset(dinp, 0, sizeof(float) * (size_t)N * C);
    b->matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
    relu_backward(dinp, inp, (size_t)N * C);
}

void attention_forward_packed(float *out, float *att, const float *qkv, const float *key_counts, const int *offsets,
                              int B, int T, int C, int NH, int last_only) {
    backend_of(OPS_ATTENTION)->attention_forward_packed(out, att, qkv, key_counts, offsets, B, T, C, NH, last_only);
}

void attention_backward_packed(float *dqkv, const float *dout, const float *qkv, const float *att,
                               const int *offsets, int B, int T, int C, int NH, int last_only) {
    backend_of(OPS_ATTENTION)->attention_backward_packed(dqkv, dout, qkv, att, offsets, B, T, C, NH, last_only);
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C) {
    backend_of(OPS_LAYERNORM)->layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
    backend_of(OPS_LAYERNORM)->layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}
