// The ops' dispatch: which backend runs each op family (backend.h), chosen at run time; the
// threads; and the ops that combine others.
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef PF_HAVE_BLAS
void openblas_set_num_threads(int num_threads);  // OpenBLAS extension; not in every cblas.h
#endif

#include "ops/backend.h"
#include "ops/kernels.h"

// The kernels' variants this build has, fastest first: one per instruction set (lanes.h), all
// giving the same bits. The fuzzing build has the plain one alone.
static const KernelVariant VARIANTS[] = {
#if defined(__x86_64__) && defined(PF_KERNELS_SIMD)
    {"avx512", &GEMM_KERNELS_avx512, &OPS_KERNELS_avx512},
    {"avx2", &GEMM_KERNELS_avx2, &OPS_KERNELS_avx2},
#endif
#if defined(__aarch64__)
    {"neon", &GEMM_KERNELS_neon, &OPS_KERNELS_neon},
#else
    {"plain", &GEMM_KERNELS_plain, &OPS_KERNELS_plain},
#endif
};
enum { NUM_VARIANTS = sizeof(VARIANTS) / sizeof(VARIANTS[0]) };

// Variants a program added (ops_add_kernels_variant: bench_ab's kernels of another revision), each
// with the built-in variant whose instructions it uses.
enum { MAX_EXTRA = 4 };
static KernelVariant extra[MAX_EXTRA];
static const KernelVariant *extra_like[MAX_EXTRA];
static int num_extra;

static const KernelVariant *built_in_named(const char *name) {
    for (int i = 0; i < NUM_VARIANTS; i++)
        if (strcmp(VARIANTS[i].name, name) == 0) return &VARIANTS[i];
    return NULL;
}

static const KernelVariant *variant_named(const char *name) {
    const KernelVariant *built_in = built_in_named(name);
    if (built_in) return built_in;
    for (int i = 0; i < num_extra; i++)
        if (strcmp(extra[i].name, name) == 0) return &extra[i];
    return NULL;
}

// Whether this CPU (and its operating system) runs the variant's instructions.
static int variant_runs(const KernelVariant *v) {
    for (int i = 0; i < num_extra; i++)
        if (v == &extra[i]) v = extra_like[i];
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (strcmp(v->name, "avx512") == 0) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    if (strcmp(v->name, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

int ops_add_kernels_variant(const KernelVariant *v, const char *like) {
    const KernelVariant *built_in = built_in_named(like);
    if (num_extra == MAX_EXTRA || variant_named(v->name) || !built_in) return -1;
    extra[num_extra] = *v;
    extra_like[num_extra++] = built_in;
    return 0;
}

// The variant in use: the fastest this CPU runs, or the one PF_KERNELS names (checked at start).
static const KernelVariant *variant = &VARIANTS[NUM_VARIANTS - 1];

// The backend of each family: the kernels unless ops_set_backend chose another.
static const OpsBackend *chosen[NUM_OP_FAMILIES];

__attribute__((constructor)) static void choose_kernels(void) {
    const char *forced = getenv("PF_KERNELS");
    if (forced && *forced) {
        const KernelVariant *v = variant_named(forced);
        if (!v || !variant_runs(v)) {
            fprintf(stderr, "error: PF_KERNELS=%s: %s (this build and CPU: %s)\n", forced,
                    v ? "this CPU cannot run that variant" : "no such variant of the kernels", ops_kernel_variants());
            exit(2);
        }
        variant = v;
    } else {
        for (int i = NUM_VARIANTS - 1; i >= 0; i--)
            if (variant_runs(&VARIANTS[i])) variant = &VARIANTS[i];
    }
    for (int f = 0; f < NUM_OP_FAMILIES; f++) chosen[f] = variant->ops;
}

const char *ops_kernels_variant(void) { return variant->name; }

const char *ops_kernel_variants(void) {
    static char list[64];
    list[0] = 0;
    for (int i = 0; i < NUM_VARIANTS; i++)
        if (variant_runs(&VARIANTS[i])) {
            if (list[0]) strcat(list, " ");
            strcat(list, VARIANTS[i].name);
        }
    return list;
}

int ops_set_kernels_variant(const char *name) {
    const KernelVariant *v = variant_named(name);
    if (!v || !variant_runs(v)) return -1;
    for (int f = 0; f < NUM_OP_FAMILIES; f++)
        if (chosen[f] == variant->ops) chosen[f] = v->ops;
    variant = v;
    return 0;
}

const GemmKernels *ops_kernels_gemm(void) { return variant->gemm; }

// The backends, fastest first: the kernels, then OpenBLAS (matmul only, outside the guarantee of
// the same bits everywhere), then the reference loops.
static const OpsBackend *backend_at(int i) {
    const OpsBackend *list[] = {
        variant->ops,
#ifdef PF_HAVE_BLAS
        &OPS_BLAS,
#endif
        &OPS_REFERENCE,
    };
    return i < (int)(sizeof(list) / sizeof(list[0])) ? list[i] : NULL;
}

static const char *const FAMILY_NAMES[NUM_OP_FAMILIES] = {"matmul", "attention", "layernorm"};

static int offers(const OpsBackend *b, OpFamily family) {
    switch (family) {
    case OPS_MATMUL: return b->matmul_forward_fused != NULL;
    case OPS_ATTENTION: return b->attention_forward_packed != NULL;
    default: return b->layernorm_forward != NULL;
    }
}

static const OpsBackend *backend_of(OpFamily family) { return chosen[family]; }

const char *ops_family_name(OpFamily family) { return FAMILY_NAMES[family]; }

int ops_num_backends(OpFamily family) {
    int n = 0;
    for (int i = 0; backend_at(i); i++) n += offers(backend_at(i), family);
    return n;
}

const char *ops_backend_name(OpFamily family, int i) {
    for (int b = 0; backend_at(b); b++)
        if (offers(backend_at(b), family) && i-- == 0) return backend_at(b)->name;
    return NULL;
}

int ops_set_backend(OpFamily family, const char *name) {
    for (int i = 0; backend_at(i); i++)
        if (strcmp(name, backend_at(i)->name) == 0 && offers(backend_at(i), family)) {
            chosen[family] = backend_at(i);
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
                     const float *weight, const float *weight_rows, int N, int C, int OC) {
    backend_of(OPS_MATMUL)->matmul_backward(dinp, dweight, dbias, dout, inp, weight, weight_rows, N, C, OC);
}

void matmul_backward_relu(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const float *weight, const float *weight_rows, int N, int C, int OC) {
    const OpsBackend *b = backend_of(OPS_MATMUL);
    if (b->matmul_backward_relu) {
        b->matmul_backward_relu(dinp, dweight, dbias, dout, inp, weight, weight_rows, N, C, OC);
        return;
    }
    memset(dinp, 0, sizeof(float) * (size_t)N * C);
    b->matmul_backward(dinp, dweight, dbias, dout, inp, weight, weight_rows, N, C, OC);
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
