// The shares of data-parallel training (src/dist.c) in one process: every rank count cuts a step's
// micro-batch tree into pieces that cover it once, each a whole sub-tree, and the pieces summed one
// by one and combined give the bits of the tree that train.c's GradientTree adds (rebuilt here as
// a binary counter, independently of dist.c's recursion). The MPI runs themselves are
// tests/mpi_test.sh's.
#include "testutil.h"

#include "dist.h"

enum { LEN = 37, MAX_N = 48, MAX_RANKS = 6 };

// Values of every magnitude and sign, so that the order of additions shows in the bits.
static void fill(float *out, size_t n, uint64_t seed) {
    uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        int exponent = (int)((state >> 58) & 31) - 16;
        out[i] = ((float)((state >> 40) & 0xffff) / 65536.0f - 0.5f) * ldexpf(1.0f, exponent);
    }
}

// The sum of vectors [first, end) of `all` as GradientTree adds them: each arrival joins the whole
// sub-trees it completes (binary counter), and what remains is joined from the smallest up.
static void counter_sum(float *out, float (*all)[LEN], long first, long end) {
    float level[64][LEN], acc[LEN];
    int filled[64] = {0};
    for (long i = 0; i < end - first; i++) {
        memcpy(acc, all[first + i], sizeof(acc));
        int j = 0;
        for (; (i >> j) & 1; j++) {
            for (int e = 0; e < LEN; e++) level[j][e] = level[j][e] + acc[e];
            memcpy(acc, level[j], sizeof(acc));
            filled[j] = 0;
        }
        memcpy(level[j], acc, sizeof(acc));
        filled[j] = 1;
    }
    int have = 0;
    for (int j = 0; j < 64; j++) {
        if (!filled[j]) continue;
        if (have)
            for (int e = 0; e < LEN; e++) acc[e] = level[j][e] + acc[e];
        else
            memcpy(acc, level[j], sizeof(acc));
        have = 1;
    }
    if (have)
        memcpy(out, acc, sizeof(acc));
    else
        memset(out, 0, sizeof(acc));
}

static int is_power_of_two(long x) { return x > 0 && (x & (x - 1)) == 0; }

static void test_pieces_cover_the_tree_once(void **state) {
    (void)state;
    DistPiece pieces[64];
    for (long n = 1; n <= MAX_N; n++)
        for (int K = 1; K <= MAX_RANKS; K++) {
            long next = 0;
            for (int r = 0; r < K; r++) {
                long first, end;
                dist_range(n, r, K, &first, &end);
                assert_int_equal(first, next);
                int count = dist_pieces(pieces, 64, n, first, end);
                assert_true(count <= dist_max_pieces(n));
                for (int i = 0; i < count; i++) {
                    long size = pieces[i].end - pieces[i].first;
                    assert_int_equal(pieces[i].first, next);
                    // a whole sub-tree: 2^j micro-batches aligned on 2^j, or the tail the tree ends with
                    assert_true((is_power_of_two(size) && pieces[i].first % size == 0) || pieces[i].end == n);
                    next = pieces[i].end;
                }
                assert_int_equal(next, end);
            }
            assert_int_equal(next, n);
        }
}

static void test_pieces_combined_give_the_tree_bits(void **state) {
    (void)state;
    static float all[MAX_N][LEN], sums[64][LEN];
    float want[LEN], in_order[LEN];
    float *parts[64];
    DistPiece pieces[64];
    int order_shows = 0;
    for (long n = 1; n <= MAX_N; n++) {
        for (long k = 0; k < n; k++) fill(all[k], LEN, (uint64_t)(n * 1000 + k));
        counter_sum(want, all, 0, n);
        memcpy(in_order, all[0], sizeof(in_order));  // left to right: a different order
        for (long k = 1; k < n; k++)
            for (int e = 0; e < LEN; e++) in_order[e] += all[k][e];
        order_shows |= memcmp(in_order, want, sizeof(want)) != 0;
        for (int K = 1; K <= MAX_RANKS; K++) {
            int total = 0;
            for (int r = 0; r < K; r++) {  // each rank sums its own pieces
                long first, end;
                dist_range(n, r, K, &first, &end);
                int count = dist_pieces(pieces + total, 64 - total, n, first, end);
                for (int i = 0; i < count; i++) counter_sum(sums[total + i], all, pieces[total + i].first,
                                                            pieces[total + i].end);
                total += count;
            }
            for (int i = 0; i < total; i++) parts[i] = sums[i];
            const float *got = dist_combine(parts, pieces, total, n, LEN);
            if (memcmp(got, want, sizeof(want)) != 0) fail_msg("n=%ld micro-batches, K=%d: not the tree's bits", n, K);
        }
    }
    assert_true(order_shows);  // the data can tell a wrong order from the right one
}

static void test_slices_cover_the_vector(void **state) {
    (void)state;
    for (int K = 1; K <= MAX_RANKS; K++)
        for (size_t n = 0; n < 20; n++) {
            size_t next = 0;
            for (int s = 0; s < K; s++) {
                size_t first, count;
                dist_slice(s, K, n, &first, &count);
                assert_int_equal(first, next);
                assert_true(count == n / K || count == n / K + 1);
                next = first + count;
            }
            assert_int_equal(next, n);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces_cover_the_tree_once),
        cmocka_unit_test(test_pieces_combined_give_the_tree_bits),
        cmocka_unit_test(test_slices_cover_the_vector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
