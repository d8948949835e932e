// The attention on its own, as a training step runs it: attention_forward_packed and
// attention_backward_packed over real `pretrain` examples (packed by the model itself, repeated
// pairs merged), on every kernel variant this CPU runs and on the reference loops. Hot: one
// micro-batch of 64 examples again and again, its rows in cache; cold: 4,096 examples in turn, each
// example's rows last touched a pass earlier (the backward's case in a step). Sequences of at most 8
// rows (half of `pretrain`) and longer ones apart too: the kernels take two heads at once on the
// short ones. Prints medians of nanoseconds an example.
//
// usage: build/bench_attention [ROUNDS] [THREADS]   (defaults 30 1)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "common.h"
#include "config.h"
#include "graph.h"
#include "model.h"
#include "ops/ops.h"
#include "rng.h"

enum { MICRO = 64, EXAMPLES = 4096, DRAWN = 12288 };

// Examples laid out as the model packs them: example b owns rows offsets[b] .. offsets[b + 1] - 1.
typedef struct {
    int B, rows;
    int offsets[EXAMPLES + 1];
    float *counts;  // (rows) copies of each row's pair
} Packed;

// The first EXAMPLES drawn examples whose packed length lies in lo .. hi, with their key counts.
static void select_examples(Packed *out, const int *lengths, const float *counts, int lo, int hi) {
    out->B = 0;
    out->rows = 0;
    out->counts = mallocCheck(sizeof(float) * EXAMPLES * OPS_MAX_T);
    for (int i = 0, first = 0; i < DRAWN && out->B < EXAMPLES; first += lengths[i], i++) {
        if (lengths[i] < lo || lengths[i] > hi) continue;
        out->offsets[out->B++] = out->rows;
        memcpy(out->counts + out->rows, counts + first, sizeof(float) * lengths[i]);
        out->rows += lengths[i];
    }
    out->offsets[out->B] = out->rows;
}

typedef struct {
    double forward, backward;  // ns an example
} Timing;

// Forward then backward over micro-batches [0, batches) of set, `rounds` times; medians.
static Timing time_attention(const Packed *set, int batches, int rounds, const float *qkv, const float *dout,
                             float *out, float *dqkv, float *att, int T, int C, int NH) {
    double fwd[100], bwd[100];
    size_t att_per_batch = (size_t)MICRO * NH * T * T;
    for (int r = 0; r < rounds; r++) {
        double t0 = pf_now_seconds();
        for (int m = 0; m < batches; m++)
            attention_forward_packed(out, att + m * att_per_batch, qkv, set->counts, set->offsets + m * MICRO, MICRO,
                                     T, C, NH, 0);
        double t1 = pf_now_seconds();
        for (int m = 0; m < batches; m++)
            attention_backward_packed(dqkv, dout, qkv, att + m * att_per_batch, set->offsets + m * MICRO, MICRO, T, C,
                                      NH, 0);
        double t2 = pf_now_seconds();
        fwd[r] = (t1 - t0) * 1e9 / ((double)batches * MICRO);
        bwd[r] = (t2 - t1) * 1e9 / ((double)batches * MICRO);
    }
    return (Timing){pf_median(fwd, rounds), pf_median(bwd, rounds)};
}

typedef struct {
    const char *name;
    int lo, hi;  // packed lengths
} Subset;

// One line per subset for the backend in use: hot (one micro-batch), then cold (all of them).
static void report(const char *label, const Packed sets[3], const Subset subsets[3], int rounds, const float *qkv,
                   const float *dout, float *out, float *dqkv, float *att, int T, int C, int NH) {
    for (int s = 0; s < 3; s++) {
        int batches = sets[s].B / MICRO;
        if (batches == 0) continue;
        Timing hot = time_attention(&sets[s], 1, rounds, qkv, dout, out, dqkv, att, T, C, NH);
        Timing cold = time_attention(&sets[s], batches, rounds < 5 ? rounds : 5, qkv, dout, out, dqkv, att, T, C, NH);
        printf("%-8s %-10s %12.0f %12.0f %12.0f %12.0f\n", label, subsets[s].name, hot.forward, hot.backward,
               cold.forward, cold.backward);
    }
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 30;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (rounds < 1 || rounds > 100 || threads < 1) {
        fprintf(stderr, "usage: bench_attention [ROUNDS 1..100] [THREADS]\n");
        return 1;
    }
    ops_set_threads(threads);
    RunConfig cfg;
    config_preset(&cfg, "blog-pretrain");
    if (config_finalize(&cfg) != 0) {
        fprintf(stderr, "bench_attention: %s\n", pf_last_error());
        return 1;
    }
    int T = cfg.model.seq_len, C = cfg.model.d_model, NH = cfg.model.n_heads;
    DataSet data;
    dataset_lookup(&data, "pretrain", &cfg.data);

    // The model packs each micro-batch (one layer is enough: only its packing is read).
    ModelConfig one_layer = cfg.model;
    one_layer.n_layers = 1;
    Model model;
    model_create(&model, &one_layer, MICRO, 0);
    model_init(&model, 1, 1);
    Batch batch;
    batch_alloc(&batch, MICRO, T);
    int *lengths = mallocCheck(sizeof(int) * DRAWN);
    float *counts = mallocCheck(sizeof(float) * DRAWN * T);
    int total_rows = 0;
    for (int m = 0; m < DRAWN / MICRO; m++) {
        batch_fill(&batch, &data, &cfg.data, 7, (uint64_t)m, 0);
        model_infer(&model, batch.tokens, NULL, MICRO);
        for (int b = 0; b < MICRO; b++) lengths[m * MICRO + b] = model.offsets[b + 1] - model.offsets[b];
        memcpy(counts + total_rows, model.key_counts, sizeof(float) * model.num_rows);
        total_rows += model.num_rows;
    }

    const Subset subsets[3] = {{"all", 1, T}, {"<= 8 rows", 1, 8}, {"> 8 rows", 9, T}};
    Packed sets[3];
    for (int s = 0; s < 3; s++) select_examples(&sets[s], lengths, counts, subsets[s].lo, subsets[s].hi);

    size_t max_rows = (size_t)EXAMPLES * T;
    Rng rng = rng_stream(5, 0, 0);
    float *qkv = mallocCheck(sizeof(float) * max_rows * 3 * C), *dout = mallocCheck(sizeof(float) * max_rows * C);
    for (size_t i = 0; i < max_rows * 3 * C; i++) qkv[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    for (size_t i = 0; i < max_rows * C; i++) dout[i] = rng_uniform(&rng) - 0.5f;
    float *out = mallocCheck(sizeof(float) * max_rows * C), *dqkv = mallocCheck(sizeof(float) * max_rows * 3 * C);
    float *att = mallocCheck(sizeof(float) * EXAMPLES * NH * T * T);

    printf("attention of the published model (d %d, %d heads) on 'pretrain' examples, %d thread%s, "
           "ns an example (medians of %d rounds)\n",
           C, NH, threads, threads == 1 ? "" : "s", rounds);
    for (int s = 0; s < 3; s++)
        printf("  %-10s %4d examples, %.1f rows each on average\n", subsets[s].name, sets[s].B,
               (double)sets[s].rows / sets[s].B);
    printf("%-8s %-10s %12s %12s %12s %12s\n", "kernels", "examples", "hot fwd", "hot bwd", "cold fwd", "cold bwd");
    // each variant of the kernels, then the reference loops
    char variants[64];
    snprintf(variants, sizeof(variants), "%s", ops_kernel_variants());
    char *save = NULL;
    for (char *v = strtok_r(variants, " ", &save); v; v = strtok_r(NULL, " ", &save)) {
        ops_set_kernels_variant(v);
        report(v, sets, subsets, rounds, qkv, dout, out, dqkv, att, T, C, NH);
    }
    if (ops_set_backend(OPS_ATTENTION, "loops") == 0)
        report("loops", sets, subsets, rounds, qkv, dout, out, dqkv, att, T, C, NH);

    for (int s = 0; s < 3; s++) free(sets[s].counts);
    free(qkv);
    free(dout);
    free(out);
    free(dqkv);
    free(att);
    free(lengths);
    free(counts);
    batch_free(&batch);
    model_free(&model);
    return 0;
}
