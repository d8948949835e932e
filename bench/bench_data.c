// Data generation speed: examples/s to sample and encode each named data set into a Batch, on one
// thread and on all threads (median of 5 runs of 2^18 examples each).
#include <stdio.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "batch.h"
#include "common.h"
#include "graph.h"

#define RUNS 5
#define BATCH (1 << 15)
#define STEPS 8  // 2^18 examples per run

static void set_threads(int threads) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}

// Median examples/s over RUNS runs; each run uses fresh steps so no run repeats another's examples.
static double measure(Batch *batch, const DataSet *set, const DataConfig *cfg, int threads) {
    set_threads(threads);
    double rates[RUNS];
    for (int run = 0; run < RUNS; run++) {
        double start = pf_now_seconds();
        for (int step = 0; step < STEPS; step++)
            batch_fill(batch, set, cfg, 1234, (uint64_t)(run * STEPS + step), 0);
        double seconds = pf_now_seconds() - start;
        rates[run] = (double)BATCH * STEPS / seconds;
    }
    return pf_median(rates, RUNS);
}

int main(void) {
    DataConfig cfg = data_config_default();
    int all_threads = 1;
#ifdef _OPENMP
    all_threads = omp_get_max_threads();
#endif
    Batch batch;
    batch_alloc(&batch, BATCH, data_config_seq_len(&cfg));
    printf("data generation: sample + encode, median of %d runs of %d examples\n", RUNS, BATCH * STEPS);
    printf("%-24s %16s %16s %8s\n", "data set", "1 thread ex/s", "all ex/s", "speedup");
    double pretrain_one = 0.0, pretrain_all = 0.0;
    for (int i = 0; DATASET_NAMES[i]; i++) {
        DataSet set;
        if (dataset_lookup(&set, DATASET_NAMES[i], &cfg) != 0) {
            fprintf(stderr, "bench_data: %s\n", pf_last_error());
            return EXIT_FAILURE;
        }
        double one = measure(&batch, &set, &cfg, 1);
        double all = measure(&batch, &set, &cfg, all_threads);
        printf("%-24s %16.0f %16.0f %7.2fx\n", set.name, one, all, all / one);
        if (i == 0) {
            pretrain_one = one;
            pretrain_all = all;
        }
    }
    printf("(all = %d threads)\n", all_threads);

    // the same sampler in plain Python (bench/python_data.py), measured in this run
    const char *python = getenv("PF_PYTHON") ? getenv("PF_PYTHON") : "/usr/bin/python3";
    char command[512], line[256];
    snprintf(command, sizeof(command), "%s bench/python_data.py 20000 3", python);
    FILE *pipe = popen(command, "r");
    double python_rate = 0.0;
    while (pipe && fgets(line, sizeof(line), pipe)) sscanf(line, "python_pretrain_examples_per_s %lf", &python_rate);
    if (!pipe || pclose(pipe) != 0 || python_rate <= 0.0)
        printf("Python baseline unavailable (%s)\n", command);
    else
        printf("python      pretrain sampler, one process: %.0f examples/s; ratio pathformer/python: %.1fx on one "
               "thread, %.1fx on %d\n",
               python_rate, pretrain_one / python_rate, pretrain_all / python_rate, all_threads);
    batch_free(&batch);
    return EXIT_SUCCESS;
}
