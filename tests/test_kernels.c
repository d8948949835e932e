// The fast kernels against plain references, on every kernel variant the CPU runs (AVX-512, AVX2,
// plain; NEON): the matrix products (gemm.h) against double-precision
// loops on every tile edge (rows, columns and depths around the 12 x 32 tiles, leading dimensions
// wider than the matrices, accumulate on and off), the matmul ops through each backend this build
// has against the plain-loop backend, the backends that say a row's bits do not depend on the
// rows around it keeping that promise, and ops called inside a worker's parallel region doing all
// of their rows, as a team of threads would.
#include "testutil.h"

#include "ops/gemm.h"
#include "ops/ops.h"
#include "rng.h"

// float sums of up to a few hundred products against double: a few ulps of the largest partial sum
static const double GEMM_TOL = 2e-6;

// The ops judged as the parity test judges them: difference relative to the tensor's largest value.
// (The weight gradient sums 685 float products of random sign, so its float error reaches 1e-6.)
static const double OP_TOL = 5e-6;

static float *random_matrix(size_t n, Rng *rng) {
    float *x = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(2.0 * rng_uniform(rng) - 1.0);
    return x;
}

// Worst |got - want| relative to the scale of the sum (sum of |terms| plus |initial value|).
static double worst(const float *got, const double *want, const double *scale, int M, int N, int ld) {
    double bad = 0.0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double d = fabs(got[(size_t)i * ld + j] - want[(size_t)i * N + j]) / (scale[(size_t)i * N + j] + 1e-30);
            if (d > bad) bad = d;
        }
    return bad;
}

// gemm_nn: C (M, N) (+)= A (M, K) B with B (K, N). gemm_nt: C = A W^T with W (N, K), and with
// `option` the whole epilogue: relu(residual + (A W^T + bias)).
static double check_product(int M, int N, int K, int transposed, int option, Rng *rng) {
    int lda = K + 3, ldb = (transposed ? K : N) + 5, ldc = N + 7, ldr = N + 2;
    int accumulate = !transposed && option, fused = transposed && option;
    float *A = random_matrix((size_t)M * lda, rng);
    float *B = random_matrix((size_t)(transposed ? N : K) * ldb, rng);
    float *bias = random_matrix(N, rng), *residual = random_matrix((size_t)M * ldr, rng);
    float *C = random_matrix((size_t)M * ldc, rng), *C0 = mallocCheck(sizeof(float) * (size_t)M * ldc);
    memcpy(C0, C, sizeof(float) * (size_t)M * ldc);
    double *want = mallocCheck(sizeof(double) * (size_t)M * N), *scale = mallocCheck(sizeof(double) * (size_t)M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double sum = accumulate ? C0[(size_t)i * ldc + j] : 0.0, abs_sum = fabs(sum);
            for (int k = 0; k < K; k++) {
                double b = transposed ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                sum += (double)A[(size_t)i * lda + k] * b;
                abs_sum += fabs((double)A[(size_t)i * lda + k] * b);
            }
            if (fused) {
                sum += (double)bias[j] + residual[(size_t)i * ldr + j];
                abs_sum += fabs(bias[j]) + fabs(residual[(size_t)i * ldr + j]);
                if (sum < 0.0) sum = 0.0;
            }
            want[(size_t)i * N + j] = sum;
            scale[(size_t)i * N + j] = abs_sum;
        }
    if (transposed) {
        gemm_nt(C, ldc, A, lda, B, ldb, M, N, K, fused ? bias : NULL, fused ? residual : NULL, ldr, fused);
        // the weight packed beforehand gives the same bits
        float *packed = mallocCheck(sizeof(float) * gemm_packed_floats(N, K));
        float *again = mallocCheck(sizeof(float) * (size_t)M * ldc);
        memcpy(again, C0, sizeof(float) * (size_t)M * ldc);
        gemm_pack(packed, B, ldb, N, K);
        gemm_nt_packed(again, ldc, A, lda, packed, M, N, K, fused ? bias : NULL, fused ? residual : NULL, ldr, fused);
        assert_memory_equal(again, C, sizeof(float) * (size_t)M * ldc);
        free(packed);
        free(again);
    } else
        gemm_nn(C, ldc, A, lda, B, ldb, M, N, K, accumulate);
    double bad = worst(C, want, scale, M, N, ldc);
    // the padding columns of C stay untouched
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++) assert_true(C[(size_t)i * ldc + j] == C0[(size_t)i * ldc + j]);
    free(A);
    free(B);
    free(bias);
    free(residual);
    free(C);
    free(C0);
    free(want);
    free(scale);
    return bad;
}

// C (N, K) += A^T B with A (M, N), B (M, K)
static double check_gradient_product(int M, int N, int K, Rng *rng) {
    int lda = N + 2, ldb = K + 4, ldc = K + 6;
    float *A = random_matrix((size_t)M * lda, rng), *B = random_matrix((size_t)M * ldb, rng);
    float *C = random_matrix((size_t)N * ldc, rng), *C0 = mallocCheck(sizeof(float) * (size_t)N * ldc);
    memcpy(C0, C, sizeof(float) * (size_t)N * ldc);
    double *want = mallocCheck(sizeof(double) * (size_t)N * K), *scale = mallocCheck(sizeof(double) * (size_t)N * K);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) {
            double sum = C0[(size_t)i * ldc + k], abs_sum = fabs(sum);
            for (int m = 0; m < M; m++) {
                double term = (double)A[(size_t)m * lda + i] * B[(size_t)m * ldb + k];
                sum += term;
                abs_sum += fabs(term);
            }
            want[(size_t)i * K + k] = sum;
            scale[(size_t)i * K + k] = abs_sum;
        }
    gemm_tn(C, ldc, A, lda, B, ldb, M, N, K);
    double bad = worst(C, want, scale, N, K, ldc);
    for (int i = 0; i < N; i++)
        for (int k = K; k < ldc; k++) assert_true(C[(size_t)i * ldc + k] == C0[(size_t)i * ldc + k]);
    free(A);
    free(B);
    free(C);
    free(C0);
    free(want);
    free(scale);
    return bad;
}

static void test_gemm_against_double(void **state) {
    (void)state;
    Rng rng = rng_stream(11, 0, 0);
    // sizes around the tile edges (12 rows, 16-lane vectors, 32-column panels) and the model's own
    const int sizes[] = {1, 2, 5, 11, 12, 13, 15, 16, 17, 31, 32, 33, 47, 64, 65, 192, 256};
    const int count = (int)(sizeof(sizes) / sizeof(sizes[0]));
    double bad_nt = 0.0, bad_nn = 0.0, bad_tn = 0.0;
    int cases = 0;
    for (int a = 0; a < count; a++)
        for (int b = 0; b < count; b++) {
            int M = sizes[a], N = sizes[b], K = sizes[(a + 2 * b) % count];
            int option = (a + b) % 2;  // nt: the fused bias, residual and ReLU; nn: accumulate
            double e;
            if ((e = check_product(M, N, K, 1, option, &rng)) > bad_nt) bad_nt = e;
            if ((e = check_product(M, N, K, 0, option, &rng)) > bad_nn) bad_nn = e;
            if ((e = check_gradient_product(M, N, K, &rng)) > bad_tn) bad_tn = e;
            cases++;
        }
    // depth past gemm_nt's packed chunk, and a real micro-batch's row count
    double e;
    if ((e = check_product(29, 40, 1100, 1, 1, &rng)) > bad_nt) bad_nt = e;
    if ((e = check_product(685, 192, 64, 1, 1, &rng)) > bad_nt) bad_nt = e;
    if ((e = check_product(685, 64, 256, 0, 1, &rng)) > bad_nn) bad_nn = e;
    if ((e = check_product(29, 40, 1100, 0, 1, &rng)) > bad_nn) bad_nn = e;
    if ((e = check_gradient_product(685, 256, 64, &rng)) > bad_tn) bad_tn = e;
    printf("gemm kernels (%s) against double loops, %d shapes: worst relative error nt %.2e, nn %.2e, tn %.2e\n",
           ops_kernels_variant(), cases + 2, bad_nt, bad_nn, bad_tn);
    assert_true(bad_nt < GEMM_TOL);
    assert_true(bad_nn < GEMM_TOL);
    assert_true(bad_tn < GEMM_TOL);
}

static void test_gemm_zero_depth(void **state) {
    (void)state;
    float C[6] = {1, 2, 3, 4, 5, 6}, A[1] = {0}, B[1] = {0}, bias[3] = {-1, 0, 2};
    gemm_nn(C, 3, A, 1, B, 3, 2, 3, 0, 1);
    assert_true(C[5] == 6.0f);
    gemm_nn(C, 3, A, 1, B, 3, 2, 3, 0, 0);
    for (int i = 0; i < 6; i++) assert_true(C[i] == 0.0f);
    gemm_nt(C, 3, A, 1, B, 1, 2, 3, 0, bias, NULL, 0, 1);  // no products: relu(bias) on every row
    assert_true(C[0] == 0.0f && C[1] == 0.0f && C[2] == 2.0f && C[3] == 0.0f && C[5] == 2.0f);
}

// matmul_forward / matmul_backward through each backend against the plain loops (which sum in double)
static void test_matmul_backends_agree(void **state) {
    (void)state;
    const char *backends[] = {"kernels", "openblas"};
    const int shapes[][3] = {{685, 64, 192}, {37, 64, 256}, {64, 256, 64}, {13, 31, 47}};
    Rng rng = rng_stream(12, 0, 0);
    for (int s = 0; s < 4; s++) {
        int N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *inp = random_matrix((size_t)N * C, &rng), *w = random_matrix((size_t)OC * C, &rng);
        float *bias = random_matrix(OC, &rng), *dout = random_matrix((size_t)N * OC, &rng);
        float *out_ref = mallocCheck(sizeof(float) * N * OC), *out = mallocCheck(sizeof(float) * N * OC);
        float *dinp_ref = calloc((size_t)N * C, sizeof(float)), *dinp = calloc((size_t)N * C, sizeof(float));
        float *dw_ref = calloc((size_t)OC * C, sizeof(float)), *dw = calloc((size_t)OC * C, sizeof(float));
        float *db_ref = calloc(OC, sizeof(float)), *db = calloc(OC, sizeof(float));
        assert_int_equal(ops_set_matmul_backend("loops"), 0);
        matmul_forward(out_ref, inp, w, bias, N, C, OC);
        matmul_backward(dinp_ref, dw_ref, db_ref, dout, inp, w, NULL, N, C, OC);
        for (int b = 0; b < 2; b++) {
            if (ops_set_matmul_backend(backends[b]) != 0) continue;  // not in this build
            memset(dinp, 0, sizeof(float) * N * C);
            memset(dw, 0, sizeof(float) * OC * C);
            memset(db, 0, sizeof(float) * OC);
            matmul_forward(out, inp, w, bias, N, C, OC);
            matmul_backward(dinp, dw, db, dout, inp, w, NULL, N, C, OC);
            // errors relative to each tensor's largest value, as the parity test judges them
            double e_out = 0, e_dinp = 0, e_dw = 0, e_db = 0, m_out = 0, m_dinp = 0, m_dw = 0, m_db = 0;
            for (size_t i = 0; i < (size_t)N * OC; i++) {
                e_out = fmax(e_out, fabs(out[i] - out_ref[i]));
                m_out = fmax(m_out, fabs(out_ref[i]));
            }
            for (size_t i = 0; i < (size_t)N * C; i++) {
                e_dinp = fmax(e_dinp, fabs(dinp[i] - dinp_ref[i]));
                m_dinp = fmax(m_dinp, fabs(dinp_ref[i]));
            }
            for (size_t i = 0; i < (size_t)OC * C; i++) {
                e_dw = fmax(e_dw, fabs(dw[i] - dw_ref[i]));
                m_dw = fmax(m_dw, fabs(dw_ref[i]));
            }
            for (int i = 0; i < OC; i++) {
                e_db = fmax(e_db, fabs(db[i] - db_ref[i]));
                m_db = fmax(m_db, fabs(db_ref[i]));
            }
            printf("matmul %s (N %d, C %d, OC %d) against loops: out %.1e, dinp %.1e, dweight %.1e, dbias %.1e\n",
                   backends[b], N, C, OC, e_out / m_out, e_dinp / m_dinp, e_dw / m_dw, e_db / m_db);
            assert_true(e_out / m_out < OP_TOL);
            assert_true(e_dinp / m_dinp < OP_TOL);
            assert_true(e_dw / m_dw < OP_TOL);
            assert_true(e_db / m_db < OP_TOL);
        }
        free(inp);
        free(w);
        free(bias);
        free(dout);
        free(out_ref);
        free(out);
        free(dinp_ref);
        free(dinp);
        free(dw_ref);
        free(dw);
        free(db_ref);
        free(db);
    }
    assert_int_equal(ops_set_matmul_backend("no-such-backend"), -1);
}

// The fused linear layer gives the very bits of the separate ops it replaces, on every backend.
static void test_fused_forward_matches_separate_ops(void **state) {
    (void)state;
    const char *backends[] = {"kernels", "openblas", "loops"};
    enum { N = 45, C = 64, OC = 96 };
    Rng rng = rng_stream(13, 0, 0);
    float *inp = random_matrix((size_t)N * C, &rng), *w = random_matrix((size_t)OC * C, &rng);
    float *bias = random_matrix(OC, &rng), *residual = random_matrix((size_t)N * OC, &rng);
    float *separate = mallocCheck(sizeof(float) * N * OC), *fused = mallocCheck(sizeof(float) * N * OC);
    float *packed = mallocCheck(sizeof(float) * gemm_packed_floats(OC, C));
    gemm_pack(packed, w, C, OC, C);
    for (int b = 0; b < 3; b++) {
        if (ops_set_matmul_backend(backends[b]) != 0) continue;
        for (int variant = 0; variant < 3; variant++) {  // residual, ReLU, both
            int with_residual = variant != 1, relu = variant != 0;
            matmul_forward(separate, inp, w, bias, N, C, OC);
            if (with_residual) residual_forward(separate, residual, separate, (size_t)N * OC);
            if (relu) relu_forward(separate, separate, (size_t)N * OC);
            matmul_forward_fused(fused, inp, w, NULL, bias, with_residual ? residual : NULL, relu, N, C, OC);
            assert_memory_equal(separate, fused, sizeof(float) * N * OC);
            // and with the weight packed beforehand
            matmul_forward_fused(fused, inp, w, packed, bias, with_residual ? residual : NULL, relu, N, C, OC);
            assert_memory_equal(separate, fused, sizeof(float) * N * OC);
        }
    }
    free(inp);
    free(w);
    free(bias);
    free(residual);
    free(separate);
    free(fused);
    free(packed);
}

// The fused backward through a ReLU gives the values of clearing, matmul_backward and relu_backward.
static void test_backward_relu_matches_separate_ops(void **state) {
    (void)state;
    const char *backends[] = {"kernels", "openblas", "loops"};
    enum { N = 53, C = 96, OC = 64 };
    Rng rng = rng_stream(14, 0, 0);
    float *inp = random_matrix((size_t)N * C, &rng), *w = random_matrix((size_t)OC * C, &rng);
    float *dout = random_matrix((size_t)N * OC, &rng);
    for (size_t i = 0; i < (size_t)N * C; i++) inp[i] = inp[i] > 0.0f ? inp[i] : 0.0f;  // a ReLU's output
    float *dinp_a = mallocCheck(sizeof(float) * N * C), *dinp_b = mallocCheck(sizeof(float) * N * C);
    float *dw_a = mallocCheck(sizeof(float) * OC * C), *dw_b = mallocCheck(sizeof(float) * OC * C);
    float *db_a = mallocCheck(sizeof(float) * OC), *db_b = mallocCheck(sizeof(float) * OC);
    float *rows = mallocCheck(sizeof(float) * gemm_rows_packed_floats(OC, C));
    gemm_pack_rows(rows, w, C, OC, C);
    for (int b = 0; b < 3; b++) {
        if (ops_set_matmul_backend(backends[b]) != 0) continue;
        memset(dinp_a, 0, sizeof(float) * N * C);
        memset(dw_a, 0, sizeof(float) * OC * C);
        memset(db_a, 0, sizeof(float) * OC);
        matmul_backward(dinp_a, dw_a, db_a, dout, inp, w, NULL, N, C, OC);
        relu_backward(dinp_a, inp, (size_t)N * C);
        for (size_t i = 0; i < (size_t)N * C; i++) dinp_b[i] = 12345.0f;  // written over, not added to
        memset(dw_b, 0, sizeof(float) * OC * C);
        memset(db_b, 0, sizeof(float) * OC);
        matmul_backward_relu(dinp_b, dw_b, db_b, dout, inp, w, NULL, N, C, OC);
        for (size_t i = 0; i < (size_t)N * C; i++) assert_true(dinp_a[i] == dinp_b[i]);
        assert_memory_equal(dw_a, dw_b, sizeof(float) * OC * C);
        assert_memory_equal(db_a, db_b, sizeof(float) * OC);
        // the weight packed as the input gradients read it (a training step's): the same bits, fused
        // and not
        for (size_t i = 0; i < (size_t)N * C; i++) dinp_b[i] = 12345.0f;
        memset(dw_b, 0, sizeof(float) * OC * C);
        memset(db_b, 0, sizeof(float) * OC);
        matmul_backward_relu(dinp_b, dw_b, db_b, dout, inp, w, rows, N, C, OC);
        assert_memory_equal(dinp_a, dinp_b, sizeof(float) * N * C);
        assert_memory_equal(dw_a, dw_b, sizeof(float) * OC * C);
        assert_memory_equal(db_a, db_b, sizeof(float) * OC);
        memset(dinp_b, 0, sizeof(float) * N * C);
        matmul_backward(dinp_b, dw_b, db_b, dout, inp, w, rows, N, C, OC);
        relu_backward(dinp_b, inp, (size_t)N * C);
        assert_memory_equal(dinp_a, dinp_b, sizeof(float) * N * C);
    }
    free(inp);
    free(w);
    free(dout);
    free(dinp_a);
    free(dinp_b);
    free(dw_a);
    free(dw_b);
    free(db_a);
    free(db_b);
    free(rows);
}

// A backend that says its rows are independent (ops_matmul_rows_independent) gives every row of a
// forward product the same bits in any company: the rows called one at a time and in groups of 5
// and 13, on 1 and 3 threads, with the weight packed, against the whole product on 2 threads with
// the weight as it is (what layer 0's table of token pairs relies on: model_pack_weights computes
// it over all pairs, packed, and the unpacked forward over a batch's rows).
static void test_independent_rows_keep_their_bits(void **state) {
    (void)state;
    const char *backends[] = {"kernels", "openblas", "loops"};
    const int groups[] = {1, 5, 13}, threads[] = {1, 3};
    enum { N = 50, C = 64, OC = 192 };
    Rng rng = rng_stream(15, 0, 0);
    float *inp = random_matrix((size_t)N * C, &rng), *w = random_matrix((size_t)OC * C, &rng);
    float *bias = random_matrix(OC, &rng);
    float *whole = mallocCheck(sizeof(float) * N * OC), *parts = mallocCheck(sizeof(float) * N * OC);
    float *packed = mallocCheck(sizeof(float) * gemm_packed_floats(OC, C));
    gemm_pack(packed, w, C, OC, C);
    for (int b = 0; b < 3; b++) {
        if (ops_set_matmul_backend(backends[b]) != 0) continue;
        if (!ops_matmul_rows_independent()) {
            printf("%s: rows not independent, nothing to check\n", backends[b]);
            continue;
        }
        ops_set_threads(2);
        matmul_forward_fused(whole, inp, w, NULL, bias, NULL, 0, N, C, OC);
        for (int g = 0; g < 3; g++)
            for (int t = 0; t < 2; t++) {
                ops_set_threads(threads[t]);
                for (int r = 0; r < N; r += groups[g]) {
                    int rows = N - r < groups[g] ? N - r : groups[g];
                    matmul_forward_fused(parts + (size_t)r * OC, inp + (size_t)r * C, w, packed, bias, NULL, 0, rows, C,
                                         OC);
                }
                assert_memory_equal(whole, parts, sizeof(float) * N * OC);
            }
    }
    ops_set_threads(2);
    free(inp);
    free(w);
    free(bias);
    free(whole);
    free(parts);
    free(packed);
}

// An op called inside a parallel region of several threads (as each gradient worker calls the
// model's ops in its own) does all of its rows on the calling thread, the same bytes as the same op
// split over a team of two: the linear layer forward and backward, the attention over sequences
// short enough to pair heads and longer, and the layer norm.
enum { WORKERS = 2, EXAMPLES = 6, SEQ = 16, WIDTH = 64, HEADS = 2, OUT = 192 };
typedef struct {
    float *out, *dinp, *dweight, *dbias, *att_out, *att, *dqkv, *ln_out, *mean, *rstd, *ln_dinp, *ln_dw, *ln_db;
} OpOutputs;

static OpOutputs op_outputs(int N) {
    OpOutputs o = {
        .out = callocCheck((size_t)N * OUT, sizeof(float)),
        .dinp = callocCheck((size_t)N * WIDTH, sizeof(float)),
        .dweight = callocCheck((size_t)OUT * WIDTH, sizeof(float)),
        .dbias = callocCheck(OUT, sizeof(float)),
        .att_out = callocCheck((size_t)N * WIDTH, sizeof(float)),
        .att = callocCheck((size_t)EXAMPLES * HEADS * SEQ * SEQ, sizeof(float)),
        .dqkv = callocCheck((size_t)N * 3 * WIDTH, sizeof(float)),
        .ln_out = callocCheck((size_t)N * WIDTH, sizeof(float)),
        .mean = callocCheck(N, sizeof(float)),
        .rstd = callocCheck(N, sizeof(float)),
        .ln_dinp = callocCheck((size_t)N * WIDTH, sizeof(float)),
        .ln_dw = callocCheck(WIDTH, sizeof(float)),
        .ln_db = callocCheck(WIDTH, sizeof(float)),
    };
    return o;
}

static void op_outputs_free(OpOutputs *o) {
    float *all[] = {o->out, o->dinp, o->dweight, o->dbias, o->att_out, o->att, o->dqkv,
                    o->ln_out, o->mean, o->rstd, o->ln_dinp, o->ln_dw, o->ln_db};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) free(all[i]);
}

static void run_ops(OpOutputs *o, const float *x, const float *w, const float *b, const float *dout,
                    const float *qkv, const float *datt, const int *offsets, int N) {
    matmul_forward_fused(o->out, x, w, NULL, b, NULL, 1, N, WIDTH, OUT);
    matmul_backward(o->dinp, o->dweight, o->dbias, dout, x, w, NULL, N, WIDTH, OUT);
    attention_forward_packed(o->att_out, o->att, qkv, NULL, offsets, EXAMPLES, SEQ, WIDTH, HEADS, 0);
    attention_backward_packed(o->dqkv, datt, qkv, o->att, offsets, EXAMPLES, SEQ, WIDTH, HEADS, 0);
    layernorm_forward(o->ln_out, o->mean, o->rstd, x, w, b, N, WIDTH);
    layernorm_backward(o->ln_dinp, o->ln_dw, o->ln_db, datt, x, w, o->mean, o->rstd, N, WIDTH);
}

static void assert_same_outputs(const OpOutputs *got, const OpOutputs *want, int N) {
    assert_memory_equal(got->out, want->out, sizeof(float) * N * OUT);
    assert_memory_equal(got->dinp, want->dinp, sizeof(float) * N * WIDTH);
    assert_memory_equal(got->dweight, want->dweight, sizeof(float) * OUT * WIDTH);
    assert_memory_equal(got->dbias, want->dbias, sizeof(float) * OUT);
    assert_memory_equal(got->att_out, want->att_out, sizeof(float) * N * WIDTH);
    assert_memory_equal(got->att, want->att, sizeof(float) * EXAMPLES * HEADS * SEQ * SEQ);
    assert_memory_equal(got->dqkv, want->dqkv, sizeof(float) * N * 3 * WIDTH);
    assert_memory_equal(got->ln_out, want->ln_out, sizeof(float) * N * WIDTH);
    assert_memory_equal(got->mean, want->mean, sizeof(float) * N);
    assert_memory_equal(got->rstd, want->rstd, sizeof(float) * N);
    assert_memory_equal(got->ln_dinp, want->ln_dinp, sizeof(float) * N * WIDTH);
    assert_memory_equal(got->ln_dw, want->ln_dw, sizeof(float) * WIDTH);
    assert_memory_equal(got->ln_db, want->ln_db, sizeof(float) * WIDTH);
}

static void test_ops_in_a_worker_take_every_row(void **state) {
    (void)state;
    const int lens[EXAMPLES] = {3, 16, 8, 11, 5, 14};  // at most 8 rows: heads in pairs
    int offsets[EXAMPLES + 1] = {0};
    for (int e = 0; e < EXAMPLES; e++) offsets[e + 1] = offsets[e] + lens[e];
    int N = offsets[EXAMPLES];
    Rng rng = rng_stream(16, 0, 0);
    float *x = random_matrix((size_t)N * WIDTH, &rng), *w = random_matrix((size_t)OUT * WIDTH, &rng);
    float *b = random_matrix(OUT, &rng), *dout = random_matrix((size_t)N * OUT, &rng);
    float *qkv = random_matrix((size_t)N * 3 * WIDTH, &rng), *datt = random_matrix((size_t)N * WIDTH, &rng);
    ops_set_threads(WORKERS);
    OpOutputs team = op_outputs(N), workers[WORKERS];
    run_ops(&team, x, w, b, dout, qkv, datt, offsets, N);
    for (int t = 0; t < WORKERS; t++) workers[t] = op_outputs(N);
    int ran[WORKERS] = {0};  // fewer workers where the thread limit says so (one under qemu)
#pragma omp parallel num_threads(WORKERS)
    {
        run_ops(&workers[pf_thread_id()], x, w, b, dout, qkv, datt, offsets, N);
        ran[pf_thread_id()] = 1;
    }
    assert_true(ran[0]);
    for (int t = 0; t < WORKERS; t++) {
        if (ran[t]) assert_same_outputs(&workers[t], &team, N);
        op_outputs_free(&workers[t]);
    }
    op_outputs_free(&team);
    free(x);
    free(w);
    free(b);
    free(dout);
    free(qkv);
    free(datt);
}

int main(void) {
    ops_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_against_double),
        cmocka_unit_test(test_gemm_zero_depth),
        cmocka_unit_test(test_matmul_backends_agree),
        cmocka_unit_test(test_fused_forward_matches_separate_ops),
        cmocka_unit_test(test_backward_relu_matches_separate_ops),
        cmocka_unit_test(test_independent_rows_keep_their_bits),
        cmocka_unit_test(test_ops_in_a_worker_take_every_row),
    };
    // every kernel variant this CPU runs, each held to the reference
    return test_run_per_variant(tests);
}
