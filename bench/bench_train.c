// Training and inference throughput of the published model (d 64, 11 layers, 2 heads, FFN 256)
// on real pretrain batches, next to the PyTorch reference (bench/torch_bench.py) measured in the
// same run on the same batch shape. Prints medians and the ratios.
//
// usage: build/bench_train [BATCH] [REPEATS] [THREADS]   (defaults 512 5 2)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adam.h"
#include "batch.h"
#include "common.h"
#include "model.h"
#include "ops.h"

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, int n) {
    qsort(values, n, sizeof(double), compare_doubles);
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

int main(int argc, char **argv) {
    int batch_size = argc > 1 ? atoi(argv[1]) : 512;
    int repeats = argc > 2 ? atoi(argv[2]) : 5;
    int threads = ops_set_threads(argc > 3 ? atoi(argv[3]) : 2);
    if (batch_size < 1 || repeats < 1 || repeats > 100) {
        fprintf(stderr, "usage: bench_train [BATCH] [REPEATS 1..100] [THREADS]\n");
        return 1;
    }
    ModelConfig cfg = model_config_default();
    DataConfig data = data_config_default();
    DataSet set;
    dataset_lookup(&set, "pretrain", &data);
    Model model;
    model_create(&model, &cfg, batch_size, 1);
    model_init(&model, 1, 1);
    AdamState adam;
    adam_create(&adam, model.num_parameters);
    AdamConfig adam_cfg = adam_config_default();
    Batch batch;
    batch_alloc(&batch, batch_size, cfg.seq_len);

    double train[101], infer[101];
    for (int r = 0; r <= repeats; r++) {  // round 0 warms up
        batch_fill(&batch, &set, &data, 1, (uint64_t)r, 0);
        double start = pf_now_seconds();
        model_zero_grad(&model);
        model_forward(&model, batch.tokens, batch.labels, batch_size);
        model_backward(&model, batch.labels, batch_size, 1.0f / batch_size);
        adam_update(&adam, model.params_memory, model.grads_memory, 1e-4f, &adam_cfg);
        train[r] = batch_size / (pf_now_seconds() - start);
        start = pf_now_seconds();
        model_forward(&model, batch.tokens, NULL, batch_size);
        infer[r] = batch_size / (pf_now_seconds() - start);
    }
    double c_train = median(train + 1, repeats), c_infer = median(infer + 1, repeats);
    // forward ~18 MFLOP and training ~54 MFLOP per example at 16 dense positions (SPEC §7)
    printf("pathformer  (%s, %d threads, batch %d, median of %d): train %.0f examples/s (%.1f GFLOP/s), "
           "inference %.0f examples/s\n",
           ops_backend(), threads, batch_size, repeats, c_train, c_train * 54e-3, c_infer);

    const char *python = getenv("PF_PYTHON") ? getenv("PF_PYTHON") : "/usr/bin/python3";
    char command[512];
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
        printf("pytorch     (%d threads, batch %d, median of %d): train %.0f examples/s, inference %.0f examples/s\n",
               threads, batch_size, repeats, torch_train, torch_infer);
        printf("ratio pathformer/pytorch: train %.2fx, inference %.2fx\n", c_train / torch_train,
               c_infer / torch_infer);
    }
    batch_free(&batch);
    adam_free(&adam);
    model_free(&model);
    return 0;
}
