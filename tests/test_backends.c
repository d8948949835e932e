// Every op family on every backend this build has (the kernels in every variant the CPU runs),
// against the reference ("loops"), as ggml's test-backend-ops does: the same random inputs through
// both, forward and backward, on shapes the fast kernels take and on shapes they hand back to the
// reference (each backend must be right on both), at one thread and at two. Each output is judged
// relative to its largest reference value.
#include "testutil.h"

#include "ops/gemm.h"
#include "ops/ops.h"
#include "rng.h"

// float sums of a few hundred terms in another order (and the kernels' own e^x, good to 6e-9)
// against the reference's: a few ulps of the largest value.
static const double BACKEND_TOL = 1e-5;

static float *random_floats(size_t n, Rng *rng) {
    float *x = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(2.0 * rng_uniform(rng) - 1.0);
    return x;
}

// Largest |got - want| over the largest |want|; prints it and fails above BACKEND_TOL.
static void expect_close(const char *what, const char *backend, const float *got, const float *want, size_t n) {
    double err = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)got[i] - want[i]));
        scale = fmax(scale, fabs((double)want[i]));
    }
    double rel = scale > 0 ? err / scale : err;
    printf("  %-9s %-24s %.1e\n", backend, what, rel);
    if (!(rel < BACKEND_TOL)) fail_msg("%s on %s: %.3g relative to the reference (tolerance %.0e)", what, backend, rel,
                                       BACKEND_TOL);
}

// The kernel variants this CPU runs (ops_kernel_variants), split into names[] inside list.
static int kernel_variant_names(char *list, size_t size, char **names, int max) {
    char *rest = NULL;
    snprintf(list, size, "%s", ops_kernel_variants());
    int count = 0;
    for (char *name = strtok_r(list, " ", &rest); name && count < max; name = strtok_r(NULL, " ", &rest))
        names[count++] = name;
    return count;
}

// ---------------------------------------------------------------------------------------------
// matmul: the fused forward (bias, residual, ReLU, packed weights), the backward, and the backward
// through a ReLU

typedef struct {
    float *out, *dinp, *dweight, *dbias, *dinp_relu, *dweight_relu, *dbias_relu;
} MatmulResult;

static MatmulResult run_matmul(const char *backend, const float *inp, const float *weight, const float *packed,
                               const float *bias, const float *residual, const float *dout, int N, int C, int OC) {
    assert_int_equal(ops_set_backend(OPS_MATMUL, backend), 0);
    MatmulResult r = {
        .out = mallocCheck(sizeof(float) * N * OC),
        .dinp = calloc((size_t)N * C, sizeof(float)),
        .dweight = calloc((size_t)OC * C, sizeof(float)),
        .dbias = calloc(OC, sizeof(float)),
        .dinp_relu = mallocCheck(sizeof(float) * N * C),
        .dweight_relu = calloc((size_t)OC * C, sizeof(float)),
        .dbias_relu = calloc(OC, sizeof(float)),
    };
    matmul_forward_fused(r.out, inp, weight, packed, bias, residual, 1, N, C, OC);
    matmul_backward(r.dinp, r.dweight, r.dbias, dout, inp, weight, NULL, N, C, OC);
    // inp as a ReLU's output: its non-positive entries mask the input gradient
    matmul_backward_relu(r.dinp_relu, r.dweight_relu, r.dbias_relu, dout, inp, weight, NULL, N, C, OC);
    return r;
}

static void matmul_result_free(MatmulResult *r) {
    free(r->out);
    free(r->dinp);
    free(r->dweight);
    free(r->dbias);
    free(r->dinp_relu);
    free(r->dweight_relu);
    free(r->dbias_relu);
}

static void test_matmul_on_every_backend(void **state) {
    (void)state;
    const int shapes[][3] = {{400, 64, 192}, {37, 64, 256}, {64, 256, 64}, {13, 31, 47}};
    Rng rng = rng_stream(21, 0, 0);
    for (int threads = 1; threads <= 2; threads++) {
        ops_set_threads(threads);
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            int N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
            float *inp = random_floats((size_t)N * C, &rng), *weight = random_floats((size_t)OC * C, &rng);
            float *bias = random_floats(OC, &rng), *residual = random_floats((size_t)N * OC, &rng);
            float *dout = random_floats((size_t)N * OC, &rng);
            for (size_t i = 0; i < (size_t)N * C; i++) inp[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
            float *packed = mallocCheck(sizeof(float) * gemm_packed_floats(OC, C));
            gemm_pack(packed, weight, C, OC, C);
            MatmulResult ref = run_matmul("loops", inp, weight, packed, bias, residual, dout, N, C, OC);
            printf("matmul N %d, C %d, OC %d, %d threads\n", N, C, OC, threads);
            for (int b = 0; b < ops_num_backends(OPS_MATMUL); b++) {
                const char *name = ops_backend_name(OPS_MATMUL, b);
                MatmulResult got = run_matmul(name, inp, weight, packed, bias, residual, dout, N, C, OC);
                expect_close("forward (fused)", name, got.out, ref.out, (size_t)N * OC);
                expect_close("backward dinp", name, got.dinp, ref.dinp, (size_t)N * C);
                expect_close("backward dweight", name, got.dweight, ref.dweight, (size_t)OC * C);
                expect_close("backward dbias", name, got.dbias, ref.dbias, OC);
                expect_close("backward_relu dinp", name, got.dinp_relu, ref.dinp_relu, (size_t)N * C);
                expect_close("backward_relu dweight", name, got.dweight_relu, ref.dweight_relu, (size_t)OC * C);
                expect_close("backward_relu dbias", name, got.dbias_relu, ref.dbias_relu, OC);
                matmul_result_free(&got);
            }
            matmul_result_free(&ref);
            free(inp);
            free(weight);
            free(bias);
            free(residual);
            free(dout);
            free(packed);
        }
    }
    assert_int_equal(ops_set_backend(OPS_MATMUL, "no-such-backend"), -1);
    ops_set_backend(OPS_MATMUL, ops_backend_name(OPS_MATMUL, 0));
}

// ---------------------------------------------------------------------------------------------
// attention over packed rows: every query, or the last only; keys with copies, or one each

typedef struct {
    float *out, *dqkv;
} AttentionResult;

// dqkv starts as `fill` everywhere: the backward writes it (the reference run starts from zeros, the
// others from garbage)
static AttentionResult run_attention(const char *backend, const float *qkv, const float *counts, const int *offsets,
                                     const float *dout, int B, int T, int C, int NH, int last_only, float fill) {
    assert_int_equal(ops_set_backend(OPS_ATTENTION, backend), 0);
    int N = offsets[B], out_rows = last_only ? B : N;
    AttentionResult r = {mallocCheck(sizeof(float) * out_rows * C), mallocCheck(sizeof(float) * N * 3 * C)};
    for (size_t i = 0; i < (size_t)N * 3 * C; i++) r.dqkv[i] = fill;
    float *att = mallocCheck(sizeof(float) * B * NH * T * T);
    attention_forward_packed(r.out, att, qkv, counts, offsets, B, T, C, NH, last_only);
    attention_backward_packed(r.dqkv, dout, qkv, att, offsets, B, T, C, NH, last_only);
    free(att);
    return r;
}

static void test_attention_on_every_backend(void **state) {
    (void)state;
    // (T, C, NH): the kernels take sequences of up to 16 rows with heads of 16..64 in steps of 16;
    // the last two hand back to the reference (a longer sequence, a head of 24)
    const int shapes[][3] = {{16, 64, 2}, {16, 64, 4}, {12, 128, 2}, {20, 64, 2}, {16, 48, 2}};
    const int B = 9;
    Rng rng = rng_stream(22, 0, 0);
    for (int threads = 1; threads <= 2; threads++) {
        ops_set_threads(threads);
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            int T = shapes[s][0], C = shapes[s][1], NH = shapes[s][2];
            int offsets[B + 1];
            offsets[0] = 0;
            for (int b = 0; b < B; b++) offsets[b + 1] = offsets[b] + 1 + (int)rng_below(&rng, (uint32_t)T);
            int N = offsets[B];
            float *qkv = random_floats((size_t)N * 3 * C, &rng), *counts = mallocCheck(sizeof(float) * N);
            for (int r = 0; r < N; r++) counts[r] = (float)(1 + rng_below(&rng, 3));
            for (int last_only = 0; last_only <= 1; last_only++)
                for (int weighted = 0; weighted <= 1; weighted++) {
                    int out_rows = last_only ? B : N;
                    float *dout = random_floats((size_t)out_rows * C, &rng);
                    const float *key_counts = weighted ? counts : NULL;
                    AttentionResult ref =
                        run_attention("loops", qkv, key_counts, offsets, dout, B, T, C, NH, last_only, 0.0f);
                    printf("attention T %d, C %d, NH %d, %s, %s, %d threads\n", T, C, NH,
                           last_only ? "last query" : "every query", weighted ? "key counts" : "one copy each",
                           threads);
                    for (int b = 0; b < ops_num_backends(OPS_ATTENTION); b++) {
                        const char *name = ops_backend_name(OPS_ATTENTION, b);
                        AttentionResult got =
                            run_attention(name, qkv, key_counts, offsets, dout, B, T, C, NH, last_only, 12345.0f);
                        expect_close("forward out", name, got.out, ref.out, (size_t)out_rows * C);
                        expect_close("backward dqkv", name, got.dqkv, ref.dqkv, (size_t)N * 3 * C);
                        free(got.out);
                        free(got.dqkv);
                    }
                    free(ref.out);
                    free(ref.dqkv);
                    free(dout);
                }
            free(qkv);
            free(counts);
        }
    }
    assert_int_equal(ops_set_backend(OPS_ATTENTION, "openblas"), -1);  // not an attention backend
    ops_set_backend(OPS_ATTENTION, ops_backend_name(OPS_ATTENTION, 0));
}

// The kernels backend's attention gives the same bytes on every kernel variant the CPU runs, on
// every sequence length its kernels take (1 .. 16 rows: each length splits into its own groups of
// rows, sized per variant, and lengths of at most 8 take two heads at once), with two and four heads
// and key counts on and off.
static void test_attention_same_bits_on_every_variant(void **state) {
    (void)state;
    enum { T = 16, C = 64, B = 2 * T };
    char list[128], *names[8];
    int num_names = kernel_variant_names(list, sizeof(list), names, 8);
    const char *initial = ops_kernels_variant();
    int offsets[B + 1];
    offsets[0] = 0;
    for (int b = 0; b < B; b++) offsets[b + 1] = offsets[b] + 1 + (b * 7) % T;  // each length twice, mixed
    int N = offsets[B];
    Rng rng = rng_stream(23, 0, 0);
    float *qkv = random_floats((size_t)N * 3 * C, &rng), *dout = random_floats((size_t)N * C, &rng);
    float *counts = mallocCheck(sizeof(float) * N);
    for (int r = 0; r < N; r++) counts[r] = (float)(1 + rng_below(&rng, 3));
    for (int NH = 2; NH <= 4; NH += 2)
        for (int weighted = 0; weighted <= 1; weighted++) {
            AttentionResult first = {NULL, NULL};
            for (int v = 0; v < num_names; v++) {
                assert_int_equal(ops_set_kernels_variant(names[v]), 0);
                AttentionResult got =
                    run_attention("kernels", qkv, weighted ? counts : NULL, offsets, dout, B, T, C, NH, 0, 12345.0f);
                if (v == 0) {
                    first = got;
                    continue;
                }
                if (memcmp(got.out, first.out, sizeof(float) * N * C) != 0 ||
                    memcmp(got.dqkv, first.dqkv, sizeof(float) * N * 3 * C) != 0)
                    fail_msg("attention (%d heads, %s): kernels %s differ from kernels %s", NH,
                             weighted ? "key counts" : "one copy each", names[v], names[0]);
                free(got.out);
                free(got.dqkv);
            }
            printf("attention, lengths 1..%d, %d heads, %s: the same bytes on kernels %s\n", T, NH,
                   weighted ? "key counts" : "one copy each", ops_kernel_variants());
            free(first.out);
            free(first.dqkv);
        }
    free(qkv);
    free(dout);
    free(counts);
    assert_int_equal(ops_set_kernels_variant(initial), 0);
    ops_set_backend(OPS_ATTENTION, ops_backend_name(OPS_ATTENTION, 0));
}

// Every product of gemm.h gives the same bytes on every kernel variant the CPU runs, on shapes
// around each variant's tile edges (AVX-512: 12-row tiles of one panel and 6-row tiles of two; AVX2:
// 6 rows of 16 columns; plain: 2 rows), with every epilogue (bias, residual, ReLU, accumulation, a
// mask) and depths past GEMM_KCHUNK. Before the products pass through the model (the golden hash),
// a wrong edge shows here with its shape.
static void test_products_same_bits_on_every_variant(void **state) {
    (void)state;
    char list[128], *names[8];
    int num_names = kernel_variant_names(list, sizeof(list), names, 8);
    const char *initial = ops_kernels_variant();
    // under the sanitizer or an emulator, fewer sizes: the tiles' edges and the model's widths
    static const int all_sizes[] = {1, 5, 6, 7, 12, 13, 31, 33, 64, 65, 80, 96, 127, 192, 256};
    static const int few_sizes[] = {1, 7, 13, 33, 65, 96, 127};
    const int depths[] = {1, 17, 64, 256, GEMM_KCHUNK + 9};
    enum { DEPTHS = sizeof(depths) / sizeof(depths[0]), OUTPUTS = 8 };
    int slow = test_under_sanitizer();
    const int *sizes = slow ? few_sizes : all_sizes;
    const int count = slow ? (int)(sizeof(few_sizes) / sizeof(int)) : (int)(sizeof(all_sizes) / sizeof(int));
    const int most = 256, deepest = GEMM_KCHUNK + 9;
    Rng rng = rng_stream(29, 0, 0);
    float *A = random_floats((size_t)most * deepest, &rng), *W = random_floats((size_t)most * deepest, &rng);
    float *bias = random_floats(most, &rng), *residual = random_floats((size_t)most * most, &rng);
    float *mask = random_floats((size_t)most * most, &rng), *start = random_floats((size_t)most * deepest, &rng);
    float *packed =
        mallocCheck(sizeof(float) * (gemm_packed_floats(most, deepest) + gemm_rows_packed_floats(deepest, most)));
    size_t out_floats = (size_t)most * deepest;
    float *first[OUTPUTS], *got = mallocCheck(sizeof(float) * out_floats);
    for (int o = 0; o < OUTPUTS; o++) first[o] = mallocCheck(sizeof(float) * out_floats);
    int shapes = 0;
    for (int a = 0; a < count; a++)
        for (int b = 0; b < count; b++) {
            int M = sizes[a], N = sizes[b], K = depths[(a + 2 * b) % DEPTHS];
            for (int v = 0; v < num_names; v++) {
                assert_int_equal(ops_set_kernels_variant(names[v]), 0);
                for (int o = 0; o < OUTPUTS; o++) {
                    float *C = v == 0 ? first[o] : got;
                    memcpy(C, start, sizeof(float) * out_floats);  // accumulating products add to it
                    switch (o) {
                    case 0:
                        gemm_nt(C, N, A, K, W, K, M, N, K, NULL, NULL, 0, 0);
                        break;
                    case 1:
                        gemm_nt(C, N, A, K, W, K, M, N, K, bias, residual, N, 1);
                        break;
                    case 2:
                        gemm_pack(packed, W, K, N, K);
                        gemm_nt_packed(C, N, A, K, packed, M, N, K, bias, residual, N, 0);
                        break;
                    case 3:
                        gemm_nn(C, N, A, K, W, N, M, N, K, 1);
                        break;
                    case 4:
                        gemm_nn_masked(C, N, A, K, W, N, mask, N, M, N, K);
                        break;
                    case 5:
                        gemm_pack_rows(packed, W, N, K, N);
                        gemm_nn_packed(C, N, A, K, packed, M, N, K, 0);
                        break;
                    case 6:
                        gemm_pack_rows(packed, W, N, K, N);
                        gemm_nn_masked_packed(C, N, A, K, packed, mask, N, M, N, K);
                        break;
                    default:
                        gemm_tn(C, K, A, N, W, K, M, N, K);
                        break; // C (N, K) += A^T B
                    }
                    if (v > 0 && memcmp(got, first[o], sizeof(float) * out_floats) != 0)
                        fail_msg("product %d, M %d N %d K %d: kernels %s differ from kernels %s", o, M, N, K, names[v],
                                 names[0]);
                }
            }
            shapes++;
        }
    printf("products, %d shapes, 8 forms: the same bytes on kernels %s\n", shapes, ops_kernel_variants());
    for (int o = 0; o < OUTPUTS; o++) free(first[o]);
    free(got);
    free(A);
    free(W);
    free(bias);
    free(residual);
    free(mask);
    free(start);
    free(packed);
    assert_int_equal(ops_set_kernels_variant(initial), 0);
}

// ---------------------------------------------------------------------------------------------
// layernorm

typedef struct {
    float *out, *mean, *rstd, *dinp, *dweight, *dbias;
} LayernormResult;

// dinp starts as `fill` everywhere: the backward writes it (the reference run starts from zeros, the
// others from garbage)
static LayernormResult run_layernorm(const char *backend, const float *inp, const float *weight, const float *bias,
                                     const float *dout, int N, int C, float fill) {
    assert_int_equal(ops_set_backend(OPS_LAYERNORM, backend), 0);
    LayernormResult r = {
        .out = mallocCheck(sizeof(float) * N * C),
        .mean = mallocCheck(sizeof(float) * N),
        .rstd = mallocCheck(sizeof(float) * N),
        .dinp = mallocCheck(sizeof(float) * N * C),
        .dweight = calloc(C, sizeof(float)),
        .dbias = calloc(C, sizeof(float)),
    };
    for (size_t i = 0; i < (size_t)N * C; i++) r.dinp[i] = fill;
    layernorm_forward(r.out, r.mean, r.rstd, inp, weight, bias, N, C);
    layernorm_backward(r.dinp, r.dweight, r.dbias, dout, inp, weight, r.mean, r.rstd, N, C);
    return r;
}

static void layernorm_result_free(LayernormResult *r) {
    free(r->out);
    free(r->mean);
    free(r->rstd);
    free(r->dinp);
    free(r->dweight);
    free(r->dbias);
}

static void test_layernorm_on_every_backend(void **state) {
    (void)state;
    // (N, C): the kernels take C a multiple of 16 up to 256; the last two go to the reference
    const int shapes[][2] = {{300, 64}, {77, 256}, {50, 48}, {40, 50}, {20, 320}};
    Rng rng = rng_stream(23, 0, 0);
    for (int threads = 1; threads <= 2; threads++) {
        ops_set_threads(threads);  // the kernels' one-pass backward runs where one thread does all rows
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            int N = shapes[s][0], C = shapes[s][1];
            float *inp = random_floats((size_t)N * C, &rng), *weight = random_floats(C, &rng);
            float *bias = random_floats(C, &rng), *dout = random_floats((size_t)N * C, &rng);
            LayernormResult ref = run_layernorm("loops", inp, weight, bias, dout, N, C, 0.0f);
            printf("layernorm N %d, C %d, %d threads\n", N, C, threads);
            for (int b = 0; b < ops_num_backends(OPS_LAYERNORM); b++) {
                const char *name = ops_backend_name(OPS_LAYERNORM, b);
                LayernormResult got = run_layernorm(name, inp, weight, bias, dout, N, C, 12345.0f);
                expect_close("forward out", name, got.out, ref.out, (size_t)N * C);
                expect_close("forward mean", name, got.mean, ref.mean, N);
                expect_close("forward rstd", name, got.rstd, ref.rstd, N);
                expect_close("backward dinp", name, got.dinp, ref.dinp, (size_t)N * C);
                expect_close("backward dweight", name, got.dweight, ref.dweight, C);
                expect_close("backward dbias", name, got.dbias, ref.dbias, C);
                layernorm_result_free(&got);
            }
            layernorm_result_free(&ref);
            free(inp);
            free(weight);
            free(bias);
            free(dout);
        }
    }
    ops_set_backend(OPS_LAYERNORM, ops_backend_name(OPS_LAYERNORM, 0));
}

// The table as the build has it: the reference everywhere, the defaults the fastest.
static void test_backend_table(void **state) {
    (void)state;
    for (int f = 0; f < NUM_OP_FAMILIES; f++) {
        int n = ops_num_backends((OpFamily)f);
        assert_true(n >= 1);
        assert_string_equal(ops_backend_name((OpFamily)f, n - 1), "loops");
        assert_null(ops_backend_name((OpFamily)f, n));
        assert_string_equal(ops_get_backend((OpFamily)f), ops_backend_name((OpFamily)f, 0));
        printf("%-9s:", ops_family_name((OpFamily)f));
        for (int b = 0; b < n; b++) printf(" %s", ops_backend_name((OpFamily)f, b));
        printf("\n");
    }
    assert_string_equal(ops_backend(), ops_get_backend(OPS_MATMUL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_table),
        cmocka_unit_test(test_matmul_on_every_backend),
        cmocka_unit_test(test_attention_on_every_backend),
        cmocka_unit_test(test_layernorm_on_every_backend),
    };
    // the variants against each other, once (the test goes through them all itself)
    const struct CMUnitTest across[] = {cmocka_unit_test(test_products_same_bits_on_every_variant),
                                        cmocka_unit_test(test_attention_same_bits_on_every_variant)};
    int failed = cmocka_run_group_tests_name("across variants", across, NULL, NULL);
    // every kernel variant this CPU runs, each held to the reference
    return failed + test_run_per_variant(tests);
}
