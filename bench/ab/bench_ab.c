// This tree's kernels against another revision's, in one process: `make bench-ab BASE=REV` builds
// REV's src/ops/gemm.c and ops_kernels.c once per variant under the names "<variant>-base" and links
// them beside this tree's. Each pair of rounds runs the same training step (the published model on
// real pretrain batches, as bench_train) and the same inference once on each, in alternating order,
// and the ratio of their times is taken within the pair: on a machine whose speed drifts by tens of
// per cent from one minute to the next, both sides of a ratio see the same minute. Prints, per
// variant, the median examples/s of each and the median and quartiles of the per-pair ratios.
//
// usage: build/ab/bench_ab [PAIRS] [BATCH] [THREADS] [VARIANT ...]
//        (defaults 40 1024 1, every variant this CPU runs but the plain one)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adam.h"
#include "common.h"
#include "config.h"
#include "eval.h"
#include "model.h"
#include "ops/kernels.h"
#include "ops/ops.h"
#include "train.h"

// The base revision's variants, each under its name and the built-in variant whose instructions
// it uses.
typedef struct {
    const char *like;
    KernelVariant variant;
} BaseVariant;
#if defined(__x86_64__)
extern const GemmKernels GEMM_KERNELS_avx512_base, GEMM_KERNELS_avx2_base, GEMM_KERNELS_plain_base;
extern const OpsBackend OPS_KERNELS_avx512_base, OPS_KERNELS_avx2_base, OPS_KERNELS_plain_base;
static const BaseVariant BASE[] = {
    {"avx512", {"avx512-base", &GEMM_KERNELS_avx512_base, &OPS_KERNELS_avx512_base}},
    {"avx2", {"avx2-base", &GEMM_KERNELS_avx2_base, &OPS_KERNELS_avx2_base}},
    {"plain", {"plain-base", &GEMM_KERNELS_plain_base, &OPS_KERNELS_plain_base}},
};
#elif defined(__aarch64__)
extern const GemmKernels GEMM_KERNELS_neon_base;
extern const OpsBackend OPS_KERNELS_neon_base;
static const BaseVariant BASE[] = {{"neon", {"neon-base", &GEMM_KERNELS_neon_base, &OPS_KERNELS_neon_base}}};
#else
extern const GemmKernels GEMM_KERNELS_plain_base;
extern const OpsBackend OPS_KERNELS_plain_base;
static const BaseVariant BASE[] = {{"plain", {"plain-base", &GEMM_KERNELS_plain_base, &OPS_KERNELS_plain_base}}};
#endif
enum { NUM_BASE = sizeof(BASE) / sizeof(BASE[0]), MAX_PAIRS = 100 };

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The q-quantile of n values (sorted in place), by the nearest rank.
static double quantile(double *values, int n, double q) {
    qsort(values, (size_t)n, sizeof(double), compare_doubles);
    int i = (int)(q * (n - 1) + 0.5);
    return values[i];
}

typedef struct {
    Model model;
    GradientWorkers *workers;
    AdamState adam;
    AdamConfig adam_cfg;
    DataSet set;
    RunConfig cfg;
    EvalResult *eval;
} Bench;

// One training step (the gradient and the Adam update) and one inference pass over a batch, on the
// kernels named (compare checked that they run here); seconds of each.
static void run_round(Bench *b, const char *variant, long step, double *train_s, double *infer_s) {
    ops_set_kernels_variant(variant);
    BatchStats stats;
    double start = pf_now_seconds();
    gradient_workers_step(b->workers, &b->set, step, &stats);
    adam_update(&b->adam, b->model.params_memory, b->model.grads_memory, 1e-4f, &b->adam_cfg);
    *train_s = pf_now_seconds() - start;
    start = pf_now_seconds();
    eval_model(b->eval, &b->model, "pretrain", &b->cfg.data, 1, b->cfg.batch_size);
    *infer_s = pf_now_seconds() - start;
}

static void compare(Bench *b, const char *variant, int pairs) {
    char base[32];
    snprintf(base, sizeof(base), "%s-base", variant);
    const char *side[2] = {variant, base};
    for (int s = 0; s < 2; s++)
        if (ops_set_kernels_variant(side[s]) != 0) {
            fprintf(stderr, "bench_ab: no kernels %s here (this CPU runs: %s)\n", side[s], ops_kernel_variants());
            exit(1);
        }
    double train[2][MAX_PAIRS], infer[2][MAX_PAIRS], train_ratio[MAX_PAIRS], infer_ratio[MAX_PAIRS], unused;
    // The same step's gradient from the same weights on each side: the bits agree unless the base
    // revision computes other numbers (or its kernels do not fit this tree's interface).
    size_t bytes = sizeof(float) * b->model.num_parameters;
    float *first = mallocCheck(bytes);
    BatchStats stats;
    for (int s = 0; s < 2; s++) {
        ops_set_kernels_variant(side[s]);
        gradient_workers_step(b->workers, &b->set, 0, &stats);
        if (s == 0) memcpy(first, b->model.grads_memory, bytes);
    }
    int same = memcmp(first, b->model.grads_memory, bytes) == 0;
    free(first);
    printf("%-7s a step's gradient: %s\n", variant,
           same ? "the same bits on both sides" : "the two sides' bits differ (the base computes other numbers)");
    for (int s = 0; s < 2; s++) run_round(b, side[s], 0, &unused, &unused);  // warm-up
    for (int p = 0; p < pairs; p++) {
        for (int k = 0; k < 2; k++) {
            int s = (p + k) % 2;  // which side goes first alternates
            run_round(b, side[s], 1 + p, &train[s][p], &infer[s][p]);
        }
        train_ratio[p] = train[0][p] / train[1][p];
        infer_ratio[p] = infer[0][p] / infer[1][p];
    }
    int n = b->cfg.batch_size;
    printf("%-7s training:  this tree %6.0f examples/s, base %6.0f; time this/base: median %.3f (quartiles %.3f "
           "%.3f)\n",
           variant, n / quantile(train[0], pairs, 0.5), n / quantile(train[1], pairs, 0.5),
           quantile(train_ratio, pairs, 0.5), quantile(train_ratio, pairs, 0.25), quantile(train_ratio, pairs, 0.75));
    printf("%-7s inference: this tree %6.0f examples/s, base %6.0f; time this/base: median %.3f (quartiles %.3f "
           "%.3f)\n",
           variant, n / quantile(infer[0], pairs, 0.5), n / quantile(infer[1], pairs, 0.5),
           quantile(infer_ratio, pairs, 0.5), quantile(infer_ratio, pairs, 0.25), quantile(infer_ratio, pairs, 0.75));
    fflush(stdout);
}

int main(int argc, char **argv) {
    int pairs = argc > 1 ? atoi(argv[1]) : 40;
    int batch_size = argc > 2 ? atoi(argv[2]) : 1024;
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    if (pairs < 1 || pairs > MAX_PAIRS || batch_size < 1 || threads < 1) {
        fprintf(stderr, "usage: bench_ab [PAIRS 1..%d] [BATCH] [THREADS] [VARIANT ...]\n", MAX_PAIRS);
        return 1;
    }
    char runnable[128];
    snprintf(runnable, sizeof(runnable), "%s", ops_kernel_variants());
    for (int i = 0; i < NUM_BASE; i++)
        if (ops_add_kernels_variant(&BASE[i].variant, BASE[i].like) != 0) {
            fprintf(stderr, "bench_ab: cannot add the kernels %s\n", BASE[i].variant.name);
            return 1;
        }
    threads = ops_set_threads(threads);

    Bench b;
    config_preset(&b.cfg, "blog-pretrain");
    b.cfg.batch_size = batch_size;
    if (config_finalize(&b.cfg) != 0) {
        fprintf(stderr, "bench_ab: %s\n", pf_last_error());
        return 1;
    }
    dataset_lookup(&b.set, "pretrain", &b.cfg.data);
    model_create(&b.model, &b.cfg.model, b.cfg.micro_batch, 1);
    model_init(&b.model, 1, 1);
    b.workers = gradient_workers_create(&b.model, &b.cfg, threads);
    adam_create(&b.adam, b.model.num_parameters);
    b.adam_cfg = adam_config_default();
    b.eval = mallocCheck(sizeof(EvalResult));

    printf("this tree's kernels against the base revision's (%s): the published model, batch %d in micro-batches "
           "of %d, %d thread%s, %d pairs of rounds\n",
           getenv("PF_AB_BASE") ? getenv("PF_AB_BASE") : "BASE", batch_size, b.cfg.micro_batch, threads,
           threads == 1 ? "" : "s", pairs);
    int compared = 0;
    if (argc > 4) {
        for (int i = 4; i < argc; i++, compared++) compare(&b, argv[i], pairs);
    } else {
        for (char *name = strtok(runnable, " "); name; name = strtok(NULL, " "))
            if (strcmp(name, "plain") != 0 || strchr(ops_kernel_variants(), ' ') == NULL) {
                compare(&b, name, pairs);
                compared++;
            }
    }
    free(b.eval);
    gradient_workers_free(b.workers);
    adam_free(&b.adam);
    model_free(&b.model);
    return compared > 0 ? 0 : 1;
}
