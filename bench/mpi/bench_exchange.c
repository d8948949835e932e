// The gradient exchange of data-parallel training, timed on the ranks mpirun starts: every rank
// holds its share's gradient (550,433 floats, the published model) and every rank must end with the
// same sum, added in one order that depends on neither the rank count nor MPI's own reduction.
// Two ways are timed against each other:
//   allgather  every rank receives every partial ((K-1) gradients in) and adds all K in a binary
//              tree over rank index (dist_combine, each rank's partial one piece);
//   slices     rank s gathers slice s of every partial (all-to-all), adds them in the same tree,
//              and the summed slices are gathered back (2 (K-1)/K gradients in and out per rank,
//              as a ring all-reduce moves, whatever K is).
// Both must give every rank the bits of the same tree added in one process; the program checks it
// and exits non-zero otherwise. Training's own exchange (src/dist_mpi.c) is the slices one, over each
// rank's pieces of the micro-batch tree. Run: mpirun -np K build/bench_exchange [rounds]
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"

enum { NUM_PARAMETERS = 550433 };

static void *alloc_or_die(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "bench_exchange: out of memory (%zu bytes)\n", bytes);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return p;
}

// Rank r's partial gradient: values of every magnitude and sign, so that the order of additions
// shows in the bits.
static void fill_partial(float *out, size_t n, int rank) {
    uint64_t state = 0x9e3779b97f4a7c15ull * (uint64_t)(rank + 1);
    for (size_t i = 0; i < n; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        int exponent = (int)((state >> 59) & 15) - 8;
        float mantissa = (float)((state >> 40) & 0xfffff) / (float)0x100000 - 0.5f;
        out[i] = mantissa * (float)(1 << (exponent + 8)) / 256.0f;
    }
}

// parts[0..K) summed by the micro-batch tree (dist.h) over their index: pairs (0,1), (2,3), ..., then
// pairs of pairs; a part without a partner passes up unchanged. The sum ends in parts[0].
static void tree_sum(float **parts, DistPiece *units, int K, size_t n) {
    for (int r = 0; r < K; r++) units[r] = (DistPiece){r, r + 1};
    dist_combine(parts, units, K, K, n);
}

static void exchange_allgather(float *sum, const float *partial, float *all, float **parts, DistPiece *units, int K,
                               size_t n) {
    MPI_Allgather(partial, (int)n, MPI_FLOAT, all, (int)n, MPI_FLOAT, MPI_COMM_WORLD);
    for (int r = 0; r < K; r++) parts[r] = all + (size_t)r * n;
    tree_sum(parts, units, K, n);
    memcpy(sum, parts[0], sizeof(float) * n);
}

static void exchange_slices(float *sum, const float *partial, float *gathered, float **parts, DistPiece *units, int K,
                            int rank, size_t n, int *counts, int *displs) {
    size_t first, mine;
    dist_slice(rank, K, n, &first, &mine);
    int *recv_counts = counts + K, *recv_displs = displs + K;
    for (int s = 0; s < K; s++) {
        size_t f, c;
        dist_slice(s, K, n, &f, &c);
        counts[s] = (int)c;  // my slice s goes to rank s
        displs[s] = (int)f;
        recv_counts[s] = (int)mine;  // rank s's copy of my slice
        recv_displs[s] = (int)((size_t)s * mine);
    }
    MPI_Alltoallv(partial, counts, displs, MPI_FLOAT, gathered, recv_counts, recv_displs, MPI_FLOAT, MPI_COMM_WORLD);
    for (int r = 0; r < K; r++) parts[r] = gathered + (size_t)r * mine;
    tree_sum(parts, units, K, mine);
    MPI_Allgatherv(parts[0], (int)mine, MPI_FLOAT, sum, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, K;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &K);
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    if (rounds < 1 || rounds > 100000) {
        if (rank == 0) fprintf(stderr, "bench_exchange: rounds must be in 1..100000 (got '%s')\n", argv[1]);
        MPI_Finalize();
        return 1;
    }
    size_t n = NUM_PARAMETERS;
    float *partial = alloc_or_die(sizeof(float) * n), *sum = alloc_or_die(sizeof(float) * n);
    float *want = alloc_or_die(sizeof(float) * n), *all = alloc_or_die(sizeof(float) * n * (size_t)K);
    float **parts = alloc_or_die(sizeof(float *) * (size_t)K);
    DistPiece *units = alloc_or_die(sizeof(DistPiece) * (size_t)K);
    int *counts = alloc_or_die(sizeof(int) * 2 * (size_t)K), *displs = alloc_or_die(sizeof(int) * 2 * (size_t)K);
    fill_partial(partial, n, rank);

    // the sum as one process adds it: every partial rebuilt here, the same tree
    for (int r = 0; r < K; r++) {
        parts[r] = all + (size_t)r * n;
        fill_partial(parts[r], n, r);
    }
    tree_sum(parts, units, K, n);
    memcpy(want, parts[0], sizeof(float) * n);

    double median_ms[2];
    int identical = 1;
    double *times = alloc_or_die(sizeof(double) * (size_t)rounds);
    for (int method = 0; method < 2; method++) {
        for (int round = -2; round < rounds; round++) {  // two rounds of warm-up
            MPI_Barrier(MPI_COMM_WORLD);
            double start = MPI_Wtime();
            if (method == 0)
                exchange_allgather(sum, partial, all, parts, units, K, n);
            else
                exchange_slices(sum, partial, all, parts, units, K, rank, n, counts, displs);
            double local = MPI_Wtime() - start, slowest;
            MPI_Allreduce(&local, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);  // timing only
            if (round >= 0) times[round] = slowest;
            identical = identical && memcmp(sum, want, sizeof(float) * n) == 0;
        }
        qsort(times, (size_t)rounds, sizeof(double), compare_doubles);
        median_ms[method] = 1e3 * times[rounds / 2];
    }
    int all_identical;
    MPI_Allreduce(&identical, &all_identical, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rank == 0) {
        double gradient_mb = 4.0 * (double)n / 1e6;
        printf("K=%d ranks, gradient %.2f MB, %d rounds: allgather %.2f ms (%.2f MB in per rank), slices %.2f ms "
               "(%.2f MB in and %.2f MB out per rank); every rank has the one-process tree's bits: %s\n",
               K, gradient_mb, rounds, median_ms[0], gradient_mb * (K - 1), median_ms[1],
               gradient_mb * (K - 1) / K * 2, gradient_mb * (K - 1) / K * 2, all_identical ? "yes" : "NO");
    }
    free(times);
    free(partial);
    free(sum);
    free(want);
    free(all);
    free(parts);
    free(units);
    free(counts);
    free(displs);
    MPI_Finalize();
    return all_identical ? 0 : 1;
}
