// Training throughput of the hand-built BFS transformer as `bfs robust` trains it (N = 8, batch
// 512, Adam, one damaged matrix): the reference path (BFS_TRAINING_REFERENCE: the plain-loop ops
// with OpenMP inside each op) against the fast path (BFS_TRAINING: the kernels of bfs_kernels.h),
// alternating, in the same run. Prints the median examples/s of each, by wall clock and by the
// process's CPU time (a fairer figure on a machine shared with other jobs), and the ratios.
//
// usage: build/bench_bfs [STEPS] [REPEATS] [THREADS] [N]   (defaults 20 5 1 8)
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "adam.h"
#include "bfs/bfs.h"
#include "common.h"
#include "ops/ops.h"
#include "rng.h"

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

enum { BATCH = 512 };

// `steps` Adam steps (lr 1e-6) of a model whose reach_v head 3 was replaced by N(0, 1) entries;
// examples/s by wall clock and by CPU time; the last loss in *loss.
static void measure(BfsModel *m, int steps, double *wall_rate, double *cpu_rate, double *loss) {
    bfs_construct(m);
    size_t size;
    float *w = bfs_matrix(m, &m->params, BFS_REACH_V, 3, &size);
    Rng rng = rng_stream(1, 2, 3);
    for (size_t i = 0; i < size; i++) w[i] = (float)rng_normal(&rng);
    AdamState adam;
    adam_create(&adam, m->num_parameters);
    AdamConfig cfg = adam_config_default();
    float labels[BATCH];
    double wall = pf_now_seconds(), cpu = cpu_seconds();
    for (int step = 0; step < steps; step++) {
        bfs_make_batch(m, labels, 7, (uint64_t)step, BATCH);
        bfs_zero_grad(m);
        bfs_forward_backward(m, labels, BATCH);
        *loss = bfs_mse(m, labels, BATCH);
        adam_update(&adam, m->params_memory, m->grads_memory, 1e-6f, &cfg);
    }
    *wall_rate = (double)steps * BATCH / (pf_now_seconds() - wall);
    *cpu_rate = (double)steps * BATCH / (cpu_seconds() - cpu);
    adam_free(&adam);
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 20, repeats = argc > 2 ? atoi(argv[2]) : 5;
    int threads = argc > 3 ? atoi(argv[3]) : 1, n = argc > 4 ? atoi(argv[4]) : 8;
    if (steps < 1 || repeats < 1 || repeats > 100 || threads < 1 || n < BFS_MIN_N || n > 15) {
        fprintf(stderr, "usage: bench_bfs [STEPS >= 1] [REPEATS 1..100] [THREADS >= 1] [N 3..15]\n");
        return 2;
    }
    ops_set_threads(threads);
    BfsConfig cfg = {n, 0, BFS_DEFAULT_SCALE, 0};
    BfsModel reference, fast;
    bfs_model_create(&reference, &cfg, BATCH, BFS_TRAINING_REFERENCE);
    bfs_model_create(&fast, &cfg, BATCH, BFS_TRAINING);
    printf("bfs training, N = %d, batch %d, %d steps per measurement, %d repeats, %d thread(s), kernels %s\n", n, BATCH,
           steps, repeats, threads, ops_kernels_variant());
    double ref_wall[100], ref_cpu[100], fast_wall[100], fast_cpu[100], ref_loss = 0, fast_loss = 0;
    for (int r = 0; r < repeats; r++) {
        measure(&reference, steps, &ref_wall[r], &ref_cpu[r], &ref_loss);
        measure(&fast, steps, &fast_wall[r], &fast_cpu[r], &fast_loss);
    }
    double rw = pf_median(ref_wall, repeats), rc = pf_median(ref_cpu, repeats);
    double fw = pf_median(fast_wall, repeats), fc = pf_median(fast_cpu, repeats);
    printf("%-10s %16s %16s %14s\n", "path", "examples/s wall", "examples/s CPU", "last loss");
    printf("%-10s %16.0f %16.0f %14.6g\n", "reference", rw, rc, ref_loss);
    printf("%-10s %16.0f %16.0f %14.6g\n", "fast", fw, fc, fast_loss);
    printf("fast / reference: %.2fx by wall clock, %.2fx by CPU time\n", fw / rw, fc / rc);
    bfs_model_free(&reference);
    bfs_model_free(&fast);
    return 0;
}
