// Training and inference throughput of the published model (d 64, 11 layers, 2 heads, FFN 256)
// on real pretrain batches, next to the PyTorch reference (bench/torch_bench.py) measured in the
// same run on the same batch shape. Prints medians and the ratios.
//
// usage: build/bench_train [BATCH] [REPEATS] [THREADS] [MICRO]   (defaults 2048 5 2 64)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef PF_HAVE_BLAS
#include <cblas.h>
void openblas_set_num_threads(int num_threads);
#endif

#include "adam.h"
#include "batch.h"
#include "common.h"
#include "config.h"
#include "eval.h"
#include "model.h"
#include "ops/ops.h"
#include "train.h"

// Median GFLOP/s of a 2048^3 single-precision GEMM through the BLAS with `threads` threads
// (0 when the build has no BLAS). The BLAS is set back to one thread afterwards, as training uses it.
static double gemm_peak_gflops(int threads, int repeats) {
#ifdef PF_HAVE_BLAS
    enum { DIM = 2048 };
    float *a = mallocCheck(sizeof(float) * DIM * DIM), *b = mallocCheck(sizeof(float) * DIM * DIM);
    float *c = mallocCheck(sizeof(float) * DIM * DIM);
    for (size_t i = 0; i < (size_t)DIM * DIM; i++) {
        a[i] = (float)(i % 7) * 0.25f;
        b[i] = (float)(i % 5) * 0.5f;
    }
    openblas_set_num_threads(threads);
    double rates[101];
    for (int r = 0; r <= repeats; r++) {
        double start = pf_now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, DIM, DIM, DIM, 1.0f, a, DIM, b, DIM, 0.0f, c, DIM);
        rates[r] = 2.0 * DIM * DIM * DIM / (pf_now_seconds() - start) / 1e9;
    }
    openblas_set_num_threads(1);
    free(a);
    free(b);
    free(c);
    return pf_median(rates + 1, repeats);
#else
    (void)threads;
    (void)repeats;
    return 0.0;
#endif
}

// The cores' single-precision multiply-add limit, GFLOP/s: `threads` threads each run 16 (AVX2: 12)
// independent chains of vector FMAs on registers (no memory traffic), about 0.15 s, median of
// `repeats`, with the widest vectors of the kernel variant in use (ops_kernels_variant: the binary
// is built for plain x86-64, each measurement function for its own instruction set). 0 on a variant
// without FMA.
// 16 chains for AVX-512's 32 registers; 12 for AVX2's 16 (16 chains, x and y need 18 ymm registers:
// three chains then went through the stack, and the limit measured 130 GFLOP/s on 2 cores where the
// kernels reached more). Either is more than the 8 that two FMA units of latency 4 keep busy.
#define FMA_CHAINS16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define FMA_CHAINS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define FMA_INIT(c) Vec acc##c = SET1((float)(c));
#define FMA_STEP(c) acc##c = OP(acc##c, x, y);
#define FMA_SUM(c) acc0 = c ? ADD(acc0, acc##c) : acc0;
// SET1, OP (the FMA), ADD and STORE: the vector operations, defined around each use.
#define DEFINE_FMA_PEAK(NAME, TARGET, VEC, LANES, N)                                                                 \
    __attribute__((target(TARGET))) static double NAME(int threads, int repeats) {                                   \
        typedef VEC Vec;                                                                                             \
        enum { STEPS = 10000000, CHAINS = N };                                                                       \
        double rates[101];                                                                                           \
        float sums[256];                                                                                             \
        int ran = 1; /* threads that really ran the chains */                                                        \
        for (int r = 0; r <= repeats; r++) {                                                                         \
            double start = pf_now_seconds();                                                                         \
            _Pragma("omp parallel num_threads(threads)") {                                                           \
                Vec x = SET1(0.999999f), y = SET1(1e-7f);                                                            \
                FMA_CHAINS##N(FMA_INIT)                                                                              \
                for (int i = 0; i < STEPS; i++) {                                                                    \
                    FMA_CHAINS##N(FMA_STEP)                                                                          \
                }                                                                                                    \
                FMA_CHAINS##N(FMA_SUM)                                                                               \
                float lanes[LANES];                                                                                  \
                STORE(lanes, acc0);                                                                                  \
                sums[pf_thread_id() % 256] = lanes[0];                                                               \
                if (pf_thread_id() == 0) ran = pf_thread_count();                                                    \
            }                                                                                                        \
            double seconds = pf_now_seconds() - start;                                                               \
            rates[r] = 2.0 * LANES * CHAINS * (double)STEPS * ran / seconds / 1e9;                                   \
        }                                                                                                            \
        if (sums[0] < 0.0f) printf("(%g)\n", sums[0]); /* keeps the chains' results alive */                         \
        return pf_median(rates + 1, repeats);                                                                        \
    }

#if defined(__x86_64__)
#define SET1 _mm512_set1_ps
#define OP _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define STORE _mm512_storeu_ps
DEFINE_FMA_PEAK(fma_peak_avx512, "avx512f,fma", __m512, 16, 16)
#undef SET1
#undef OP
#undef ADD
#undef STORE
#define SET1 _mm256_set1_ps
#define OP _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define STORE _mm256_storeu_ps
DEFINE_FMA_PEAK(fma_peak_avx2, "avx2,fma", __m256, 8, 12)
#undef SET1
#undef OP
#undef ADD
#undef STORE
#endif

static double fma_peak_gflops(int threads, int repeats) {
#if defined(__x86_64__)
    if (strcmp(ops_kernels_variant(), "avx512") == 0) return fma_peak_avx512(threads, repeats);
    if (strcmp(ops_kernels_variant(), "avx2") == 0) return fma_peak_avx2(threads, repeats);
#endif
    (void)threads;
    (void)repeats;
    return 0.0;
}

// FLOPs this model really runs per example, averaged over a pretrain batch: packed rows only (n
// distinct real pairs per example, since repeated pairs share a row, plus the target pair), the last
// layer's attention and feed-forward on the readout row only.
// Products count 2 per multiply-add; attention scores and weighted sums 4 n^2 C per full layer.
// Training counts three times the forward (the backward takes two products per forward product).
static double actual_forward_flops(const Batch *batch, const ModelConfig *m) {
    double C = m->d_model, F = m->d_ff, L = m->n_layers, total = 0.0;
    for (int b = 0; b < batch->B; b++) {
        const int32_t *pairs = batch->tokens + (size_t)b * batch->T * 2;
        double n = 1;  // the target pair, last
        for (int t = 0; t < batch->T - 1; t++) {
            int seen = pairs[2 * t] == 0;
            for (int u = 0; u < t && !seen; u++)
                seen = pairs[2 * u] == pairs[2 * t] && pairs[2 * u + 1] == pairs[2 * t + 1];
            n += !seen;
        }
        double full_layer = n * (2 * C * 3 * C + 2 * C * C + 4 * C * F) + 4 * C * n * n;
        double last_layer = n * 2 * C * 3 * C + 4 * C * n + 2 * C * C + 4 * C * F;
        total += (L - 1) * full_layer + last_layer + 2 * C;
    }
    return total / batch->B;
}

int main(int argc, char **argv) {
    int batch_size = argc > 1 ? atoi(argv[1]) : 2048;
    int repeats = argc > 2 ? atoi(argv[2]) : 5;
    int threads = ops_set_threads(argc > 3 ? atoi(argv[3]) : 2);
    if (batch_size < 1 || repeats < 1 || repeats > 100) {
        fprintf(stderr, "usage: bench_train [BATCH] [REPEATS 1..100] [THREADS] [MICRO]\n");
        return 1;
    }
    // the training path of `pathformer train --preset blog-pretrain`, with a smaller batch per step
    RunConfig cfg;
    config_preset(&cfg, "blog-pretrain");
    cfg.batch_size = batch_size;
    if (argc > 4) cfg.micro_batch = atoi(argv[4]);
    if (config_finalize(&cfg) != 0) {
        fprintf(stderr, "bench_train: %s\n", pf_last_error());
        return 1;
    }
    DataSet set;
    dataset_lookup(&set, "pretrain", &cfg.data);
    Model model;
    model_create(&model, &cfg.model, cfg.micro_batch, 1);
    model_init(&model, 1, 1);
    GradientWorkers *workers = gradient_workers_create(&model, &cfg, threads);
    AdamState adam;
    adam_create(&adam, model.num_parameters);
    AdamConfig adam_cfg = adam_config_default();
    BatchStats stats;
    EvalResult *eval = mallocCheck(sizeof(EvalResult));

    // Each round measures every matmul backend this build has, one after the other, so that the
    // comparison shares the machine's state; the default (fastest) backend is the headline.
    const char *default_backend = ops_backend();
    const char *candidates[] = {"kernels", "openblas"};
    const char *backends[2];
    int num_backends = 0;
    for (int b = 0; b < 2; b++)
        if (ops_set_matmul_backend(candidates[b]) == 0) backends[num_backends++] = candidates[b];
    if (num_backends == 0) backends[num_backends++] = default_backend;
    // The multiply-add limit is measured in every round too, beside the model, and each round's work
    // is set against its own round's limit: on a shared machine whose speed drifts from minute to
    // minute, a limit measured once, apart from the model, moved the percentages by 10 points.
    double rounds_train[2][101], rounds_infer[2][101], rounds_limit[101];
    for (int r = 0; r <= repeats; r++) {  // round 0 warms up
        for (int b = 0; b < num_backends; b++) {
            ops_set_matmul_backend(backends[b]);
            double start = pf_now_seconds();
            gradient_workers_step(workers, &set, r, &stats);
            adam_update(&adam, model.params_memory, model.grads_memory, 1e-4f, &adam_cfg);
            rounds_train[b][r] = batch_size / (pf_now_seconds() - start);
            start = pf_now_seconds();
            eval_model(eval, &model, "pretrain", &cfg.data, 1, batch_size);
            rounds_infer[b][r] = batch_size / (pf_now_seconds() - start);
        }
        rounds_limit[r] = fma_peak_gflops(threads, 1);
    }
    ops_set_matmul_backend(default_backend);
    int d = 0;  // the default backend's rounds
    for (int b = 0; b < num_backends; b++)
        if (strcmp(backends[b], default_backend) == 0) d = b;
    // examples/s per GFLOP/s of the round's limit (before the medians below sort the rounds)
    double per_limit_train[100], per_limit_infer[100];
    for (int r = 1; r <= repeats; r++) {
        per_limit_train[r - 1] = rounds_limit[r] > 0.0 ? rounds_train[d][r] / rounds_limit[r] : 0.0;
        per_limit_infer[r - 1] = rounds_limit[r] > 0.0 ? rounds_infer[d][r] / rounds_limit[r] : 0.0;
    }
    double backend_train[2], backend_infer[2];
    for (int b = 0; b < num_backends; b++) {
        backend_train[b] = pf_median(rounds_train[b] + 1, repeats);
        backend_infer[b] = pf_median(rounds_infer[b] + 1, repeats);
    }
    double c_train = backend_train[d], c_infer = backend_infer[d];
    if (num_backends > 1)
        printf("matmuls     %s: train %.0f, inference %.0f examples/s; %s: train %.0f, inference %.0f examples/s "
               "(same rounds, interleaved)\n",
               backends[0], backend_train[0], backend_infer[0], backends[1], backend_train[1], backend_infer[1]);
    // What a step spends outside the model: drawing its batch and the Adam update, timed alone
    Batch batch;
    batch_alloc(&batch, batch_size, cfg.model.seq_len);
    double data_times[101], adam_times[101];
    for (int r = 0; r < repeats; r++) {
        double start = pf_now_seconds();
        batch_fill(&batch, &set, &cfg.data, cfg.seed, 1000 + r, 0);
        data_times[r] = pf_now_seconds() - start;
        start = pf_now_seconds();
        adam_update(&adam, model.params_memory, model.grads_memory, 1e-4f, &adam_cfg);
        adam_times[r] = pf_now_seconds() - start;
    }
    double step_time = batch_size / c_train;
    double data_share = pf_median(data_times, repeats) / step_time, adam_share = pf_median(adam_times, repeats) / step_time;
    // The work per example drawn: a training step and an evaluation each run their batch's distinct
    // examples (the evaluation's batch is drawn again here as eval_model draws it).
    const Batch *ran = gradient_workers_last_batch(workers);
    double step_flops = 3.0 * actual_forward_flops(ran, &cfg.model) * ran->B / batch_size;
    batch_fill(&batch, &set, &cfg.data, 1, eval_stream_step("pretrain"), 0);
    double forward_flops = actual_forward_flops(&batch, &cfg.model);  // every example, as drawn
    BatchDistinct distinct;
    batch_distinct_create(&distinct, batch_size, cfg.model.seq_len);
    batch_distinct_collect(&distinct, &batch);
    double infer_flops = actual_forward_flops(&distinct.batch, &cfg.model) * distinct.batch.B / batch_size;
    batch_distinct_free(&distinct);
    batch_free(&batch);

    double peak = gemm_peak_gflops(threads, repeats), fma_peak = pf_median(rounds_limit + 1, repeats);
    // forward ~18 MFLOP and training ~54 MFLOP per example at 16 dense positions (SPEC §7)
    printf("pathformer  (%s, %d threads, batch %d in micro-batches of %d, median of %d): train %.0f examples/s "
           "(%.1f dense-equivalent GFLOP/s), inference %.0f examples/s\n",
           default_backend, threads, batch_size, cfg.micro_batch, repeats, c_train, c_train * 54e-3, c_infer);
    printf("work        per example drawn, as run (packed rows, repeated pairs merged, distinct examples): forward "
           "%.2f MFLOP (%.2f before dropping repeats; dense: 18), training %.2f MFLOP (dense: 54; the step ran %d "
           "distinct of %d): training %.1f GFLOP/s, inference %.1f GFLOP/s\n",
           infer_flops / 1e6, forward_flops / 1e6, step_flops / 1e6, ran->B, batch_size, c_train * step_flops / 1e9,
           c_infer * infer_flops / 1e9);
    printf("step        drawing the batch takes %.1f%% of a training step's time, the Adam update %.1f%%\n",
           100.0 * data_share, 100.0 * adam_share);
    if (peak > 0.0)
        printf("machine     single-precision GEMM peak (2048^3 sgemm, %d threads): %.1f GFLOP/s; the work as run "
               "reaches %.0f%% of it in training and %.0f%% in inference\n",
               threads, peak, 100.0 * c_train * step_flops / 1e9 / peak,
               100.0 * c_infer * infer_flops / 1e9 / peak);
    if (fma_peak > 0.0)
        printf("machine     multiply-add limit (vector FMAs on registers only, %d threads, measured in each round): "
               "%.1f GFLOP/s; the work as run reaches %.0f%% of its round's limit in training and %.0f%% in "
               "inference (medians of %d rounds)\n",
               threads, fma_peak, 100.0 * pf_median(per_limit_train, repeats) * step_flops / 1e9,
               100.0 * pf_median(per_limit_infer, repeats) * infer_flops / 1e9, repeats);

    const char *python = getenv("PF_PYTHON") ? getenv("PF_PYTHON") : "/usr/bin/python3";
    char command[512];
    // PyTorch runs the same batch size, one whole batch per step as the original code did, on real
    // pretrain examples drawn in Python.
    snprintf(command, sizeof(command), "%s bench/torch_bench.py %d %d %d", python, batch_size, repeats, threads);
    FILE *pipe = popen(command, "r");
    double torch_train = 0.0, torch_infer = 0.0;
    char line[256];
    while (pipe && fgets(line, sizeof(line), pipe)) {
        sscanf(line, "torch_train_examples_per_s %lf", &torch_train);
        sscanf(line, "torch_infer_examples_per_s %lf", &torch_infer);
    }
    if (!pipe || pclose(pipe) != 0 || torch_train <= 0.0) {
        printf("PyTorch baseline unavailable (%s)\n", command);
    } else {
        printf("pytorch     (%d threads, batch %d in one step, median of %d): train %.0f examples/s, inference %.0f "
               "examples/s\n",
               threads, batch_size, repeats, torch_train, torch_infer);
        printf("ratio pathformer/pytorch: train %.2fx, inference %.2fx\n", c_train / torch_train,
               c_infer / torch_infer);
    }
    free(eval);
    gradient_workers_free(workers);
    adam_free(&adam);
    model_free(&model);
    return 0;
}
