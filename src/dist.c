#include "dist.h"

#include <stdio.h>
#include <stdlib.h>

void dist_range(long n, int rank, int ranks, long *first, long *end) {
    *first = n * rank / ranks;
    *end = n * (rank + 1) / ranks;
}

// Where the tree over `size` micro-batches (size >= 2) splits: at the largest power of two below
// size (GradientTree: whole sub-trees of 2^j joined from the smallest up).
static long split_at(long size) {
    long p = 1;
    while (2 * p < size) p *= 2;
    return p;
}

static int collect(DistPiece *pieces, int count, int max, long lo, long hi, long first, long end) {
    if (hi <= first || lo >= end) return count;
    if (first <= lo && hi <= end) {
        if (count < max) pieces[count] = (DistPiece){lo, hi};
        return count + 1;
    }
    long mid = lo + split_at(hi - lo);  // partly inside: hi - lo >= 2
    count = collect(pieces, count, max, lo, mid, first, end);
    return collect(pieces, count, max, mid, hi, first, end);
}

int dist_pieces(DistPiece *pieces, int max, long n, long first, long end) {
    return n > 0 && first < end ? collect(pieces, 0, max, 0, n, first, end) : 0;
}

// A range meets at most two sub-trees of each size (one at each end), one size per tree level.
int dist_max_pieces(long n) {
    int levels = 1;
    while (n > 1) {
        n = (n + 1) / 2;
        levels++;
    }
    return 2 * levels;
}

static float *combine(float *const *parts, const DistPiece *pieces, int count, int *next, long lo, long hi,
                      size_t len) {
    if (*next < count && pieces[*next].first == lo && pieces[*next].end == hi) return parts[(*next)++];
    if (hi - lo < 2) {  // the pieces do not cover [0, n) as sub-trees: a caller's bug
        fprintf(stderr, "dist_combine: no piece holds micro-batch %ld\n", lo);
        abort();
    }
    long mid = lo + split_at(hi - lo);
    float *left = combine(parts, pieces, count, next, lo, mid, len);
    const float *right = combine(parts, pieces, count, next, mid, hi, len);
    for (size_t i = 0; i < len; i++) left[i] = left[i] + right[i];
    return left;
}

float *dist_combine(float *const *parts, const DistPiece *pieces, int count, long n, size_t len) {
    int next = 0;
    return combine(parts, pieces, count, &next, 0, n, len);
}

void dist_slice(int s, int K, size_t n, size_t *first, size_t *count) {
    size_t base = n / (size_t)K, extra = n % (size_t)K;
    *first = (size_t)s * base + ((size_t)s < extra ? (size_t)s : extra);
    *count = base + ((size_t)s < extra ? 1 : 0);
}
