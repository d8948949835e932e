// Finite-difference gradient checks of every backward op and of the whole model, checkpoint round
// trips, PyTorch-style initialization, and bit-for-bit determinism of forward + backward.
//
// Each op check defines a scalar loss L = sum(out * R) with fixed random R, so dL/dout = R is fed to
// the backward op; the forward runs in float32 and the loss difference is taken in double.
#include "testutil.h"

#include <unistd.h>

#include "batch.h"
#include "config.h"
#include "train.h"
#include "model.h"
#include "ops/ops.h"
#include "rng.h"
#include "safetensors.h"

// An entry passes when |analytic - numeric| <= GRAD_TOL * max(|numeric|, floor), floor being a tenth
// of the tensor's largest gradient: float32 forwards leave central differences with round-off noise
// of 1e-5..1e-4 of the gradients' scale, so tiny entries are judged against the tensor's scale. (The
// whole-model check's worst error stayed under 4e-3 over 60 seeds of weights and batch.)
static const double GRAD_TOL = 1e-2;
// A second backward call on top of the first must double the gradient up to float round-off.
static const double ACCUMULATE_TOL = 1e-5;

typedef double (*LossFn)(void *ctx);

static float *random_array(size_t n, float lo, float hi, Rng *rng) {
    float *x = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)rng_uniform(rng);
    return x;
}

static float *copy_array(const float *x, size_t n) {
    float *copy = mallocCheck(n * sizeof(float));
    memcpy(copy, x, n * sizeof(float));
    return copy;
}

static double weighted_sum(const float *out, const float *R, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (double)out[i] * R[i];
    return sum;
}

static double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

// Central difference of loss() in x[i], over the step that float actually represents.
static double numeric_gradient(LossFn loss, void *ctx, float *x, size_t i, float step) {
    float saved = x[i], plus = saved + step, minus = saved - step;
    x[i] = plus;
    double loss_plus = loss(ctx);
    x[i] = minus;
    double loss_minus = loss(ctx);
    x[i] = saved;
    return (loss_plus - loss_minus) / ((double)plus - minus);
}

// Largest error of analytic against numeric at the given entries, in the sense of GRAD_TOL; prints it.
static double compare_gradients(const char *what, const float *analytic, const size_t *indices, const double *numeric,
                                size_t count, double floor) {
    double worst = 0.0, worst_diff = 0.0;
    for (size_t k = 0; k < count; k++) {
        double diff = fabs(analytic[indices[k]] - numeric[k]);
        double error = diff / fmax(fmax(fabs(numeric[k]), floor), 1e-30);
        if (!(error <= worst)) worst = error;  // NaN propagates as a failure
        if (diff > worst_diff) worst_diff = diff;
    }
    printf("  %-58s %4zu entries  max|a-n| %.2e  max err %.2e\n", what, count, worst_diff, worst);
    return worst;
}

// Checks every entry of x against the analytic gradient of the whole tensor.
static void check_gradient(const char *what, LossFn loss, void *ctx, float *x, const float *analytic, size_t n,
                           float step) {
    size_t *indices = mallocCheck(n * sizeof(size_t));
    double *numeric = mallocCheck(n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        indices[i] = i;
        numeric[i] = numeric_gradient(loss, ctx, x, i, step);
    }
    assert_true(compare_gradients(what, analytic, indices, numeric, n, 0.1 * max_abs(analytic, n)) <= GRAD_TOL);
    free(indices);
    free(numeric);
}

// `twice` holds two accumulated backward calls, `once` the result of one.
static void assert_doubled(const float *once, const float *twice, size_t n) {
    double scale = max_abs(once, n);
    for (size_t i = 0; i < n; i++) assert_true(fabs(twice[i] - 2.0 * once[i]) <= ACCUMULATE_TOL * scale);
}

// ---------------------------------------------------------------------------------------------
// Op gradient checks

typedef struct {
    const int32_t *tokens;
    float *table, *out;
    float *R;
    int N, C;
} EmbeddingCase;

static double embedding_loss(void *ctx) {
    EmbeddingCase *e = ctx;
    embedding_forward(e->out, e->tokens, e->table, e->N, e->C);
    return weighted_sum(e->out, e->R, (size_t)e->N * e->C);
}

static void test_embedding_backward(void **state) {
    enum { V = 6, N = 6, C = 8 };
    // Repeated tokens on both sides, padding (0), and row 5 unused (its gradient is 0).
    const int32_t tokens[2 * N] = {1, 2, 3, 1, 0, 0, 4, 4, 2, 3, 1, 1};
    size_t table_size = (size_t)V * C / 2;
    Rng rng = rng_stream(1, 0, 0);
    EmbeddingCase e = {tokens, random_array(table_size, -1, 1, &rng), mallocCheck(N * C * sizeof(float)),
                       random_array(N * C, -1, 1, &rng), N, C};
    float *dtable = callocCheck(table_size, sizeof(float));

    embedding_backward(dtable, e.R, tokens, N, C);
    float *once = copy_array(dtable, table_size);
    embedding_backward(dtable, e.R, tokens, N, C);
    assert_doubled(once, dtable, table_size);
    check_gradient("embedding dtable", embedding_loss, &e, e.table, once, table_size, 1e-3f);

    free(once);
    free(dtable);
    free(e.table);
    free(e.out);
    free(e.R);
}

typedef struct {
    float *out, *inp, *weight, *bias;  // bias NULL: no bias
    float *R;
    int N, C, OC;
} MatmulCase;

static double matmul_loss(void *ctx) {
    MatmulCase *m = ctx;
    matmul_forward(m->out, m->inp, m->weight, m->bias, m->N, m->C, m->OC);
    return weighted_sum(m->out, m->R, (size_t)m->N * m->OC);
}

static void check_matmul(const char *label, int with_bias, int want_dinp) {
    enum { N = 5, C = 7, OC = 6 };  // odd sizes, so no path relies on a multiple of a vector width
    Rng rng = rng_stream(2, with_bias, want_dinp);
    MatmulCase m = {mallocCheck(N * OC * sizeof(float)),
                    random_array(N * C, -1, 1, &rng),
                    random_array(OC * C, -1, 1, &rng),
                    with_bias ? random_array(OC, -1, 1, &rng) : NULL,
                    random_array(N * OC, -1, 1, &rng),
                    N,
                    C,
                    OC};
    float *dinp = want_dinp ? callocCheck(N * C, sizeof(float)) : NULL;
    float *dweight = callocCheck(OC * C, sizeof(float));
    float *dbias = with_bias ? callocCheck(OC, sizeof(float)) : NULL;

    matmul_backward(dinp, dweight, dbias, m.R, m.inp, m.weight, NULL, N, C, OC);
    float *dinp_once = dinp ? copy_array(dinp, N * C) : NULL;
    float *dweight_once = copy_array(dweight, OC * C);
    float *dbias_once = dbias ? copy_array(dbias, OC) : NULL;
    matmul_backward(dinp, dweight, dbias, m.R, m.inp, m.weight, NULL, N, C, OC);
    assert_doubled(dweight_once, dweight, OC * C);
    if (dinp) assert_doubled(dinp_once, dinp, N * C);
    if (dbias) assert_doubled(dbias_once, dbias, OC);

    char what[96];
    snprintf(what, sizeof(what), "%s dweight", label);
    check_gradient(what, matmul_loss, &m, m.weight, dweight_once, OC * C, 1e-3f);
    if (dinp) {
        snprintf(what, sizeof(what), "%s dinp", label);
        check_gradient(what, matmul_loss, &m, m.inp, dinp_once, N * C, 1e-3f);
    }
    if (dbias) {
        snprintf(what, sizeof(what), "%s dbias", label);
        check_gradient(what, matmul_loss, &m, m.bias, dbias_once, OC, 1e-3f);
    }

    free(dinp);
    free(dweight);
    free(dbias);
    free(dinp_once);
    free(dweight_once);
    free(dbias_once);
    free(m.out);
    free(m.inp);
    free(m.weight);
    free(m.bias);
    free(m.R);
}

static void test_matmul_backward(void **state) {
    check_matmul("matmul+bias", 1, 1);
    check_matmul("matmul no bias", 0, 1);
    check_matmul("matmul+bias, dinp NULL", 1, 0);
}

typedef struct {
    float *out, *att, *qkv;
    const uint8_t *pad;
    float *R;
    int B, T, C, NH;
} AttentionCase;

static double attention_loss(void *ctx) {
    AttentionCase *a = ctx;
    attention_forward(a->out, a->att, a->qkv, a->pad, a->B, a->T, a->C, a->NH);
    return weighted_sum(a->out, a->R, (size_t)a->B * a->T * a->C);
}

static void test_attention_backward(void **state) {
    enum { B = 2, T = 5, C = 8, NH = 2 };
    // Example 0 has padding between real positions; in example 1 only the last position is real.
    const uint8_t pad[B * T] = {0, 1, 0, 1, 0, 1, 1, 1, 1, 0};
    size_t qkv_size = (size_t)B * T * 3 * C;
    Rng rng = rng_stream(3, 0, 0);
    AttentionCase a = {mallocCheck(B * T * C * sizeof(float)),
                       mallocCheck(B * NH * T * T * sizeof(float)),
                       random_array(qkv_size, -1.5f, 1.5f, &rng),  // wide enough for a peaked softmax
                       pad,
                       random_array(B * T * C, -1, 1, &rng),
                       B,
                       T,
                       C,
                       NH};
    attention_loss(&a);

    // Forward: probabilities are 0 on padded keys and sum to 1; a lone real key takes all the weight.
    for (int row = 0; row < B * NH * T; row++) {
        const float *p = a.att + (size_t)row * T;
        int b = row / (NH * T);
        double sum = 0.0;
        for (int s = 0; s < T; s++) {
            if (pad[b * T + s]) assert_true(p[s] == 0.0f);
            sum += p[s];
        }
        assert_true(fabs(sum - 1.0) < 1e-6);
    }
    for (int t = 0; t < T; t++) {
        const float *v_last = a.qkv + ((size_t)1 * T + T - 1) * 3 * C + 2 * C;
        for (int i = 0; i < C; i++) assert_true(a.out[((size_t)1 * T + t) * C + i] == v_last[i]);
    }

    float *dqkv = callocCheck(qkv_size, sizeof(float));
    attention_backward(dqkv, a.R, a.qkv, a.att, pad, B, T, C, NH);
    float *once = copy_array(dqkv, qkv_size);
    attention_backward(dqkv, a.R, a.qkv, a.att, pad, B, T, C, NH);
    assert_doubled(once, dqkv, qkv_size);

    // Padded keys and values receive exactly nothing.
    for (int bt = 0; bt < B * T; bt++) {
        if (!pad[bt]) continue;
        for (int i = C; i < 3 * C; i++) assert_true(once[(size_t)bt * 3 * C + i] == 0.0f);
    }
    check_gradient("attention dqkv (B=2 T=5 C=8 NH=2, padded keys)", attention_loss, &a, a.qkv, once, qkv_size,
                   1e-3f);

    free(once);
    free(dqkv);
    free(a.out);
    free(a.att);
    free(a.qkv);
    free(a.R);
}

// The packed attention (padding removed) against the padded reference: same outputs and the same
// gradients on every real row, within float round-off.
static void check_attention_packed(int C, int NH) {
    enum { B = 3, T = 6 };
    const uint8_t pad[B * T] = {0, 1, 0, 0, 1, 0, /**/ 1, 1, 1, 1, 1, 0, /**/ 0, 0, 0, 0, 0, 0};
    size_t padded_qkv = (size_t)B * T * 3 * C;
    Rng rng = rng_stream(9, 0, 0);
    float *qkv = random_array(padded_qkv, -1.5f, 1.5f, &rng);
    float *dout = random_array((size_t)B * T * C, -1, 1, &rng);
    // padded rows never reach the loss in the model, so their output gradient is zero there too
    for (int bt = 0; bt < B * T; bt++)
        if (pad[bt]) memset(dout + (size_t)bt * C, 0, C * sizeof(float));
    int offsets[B + 1], rows[B * T], N = 0;
    for (int b = 0; b < B; b++) {
        offsets[b] = N;
        for (int t = 0; t < T; t++)
            if (!pad[b * T + t]) rows[N++] = b * T + t;
    }
    offsets[B] = N;
    float *packed_qkv = mallocCheck((size_t)N * 3 * C * sizeof(float));
    float *packed_dout = mallocCheck((size_t)N * C * sizeof(float));
    for (int r = 0; r < N; r++) {
        memcpy(packed_qkv + (size_t)r * 3 * C, qkv + (size_t)rows[r] * 3 * C, 3 * C * sizeof(float));
        memcpy(packed_dout + (size_t)r * C, dout + (size_t)rows[r] * C, C * sizeof(float));
    }
    float *out = mallocCheck((size_t)B * T * C * sizeof(float)),
          *att = mallocCheck((size_t)B * NH * T * T * sizeof(float));
    float *packed_out = mallocCheck((size_t)N * C * sizeof(float));
    float *packed_att = mallocCheck((size_t)B * NH * T * T * sizeof(float));
    float *dqkv = callocCheck(padded_qkv, sizeof(float)), *packed_dqkv = callocCheck((size_t)N * 3 * C, sizeof(float));
    attention_forward(out, att, qkv, pad, B, T, C, NH);
    attention_forward_packed(packed_out, packed_att, packed_qkv, NULL, offsets, B, T, C, NH, 0);
    attention_backward(dqkv, dout, qkv, att, pad, B, T, C, NH);
    attention_backward_packed(packed_dqkv, packed_dout, packed_qkv, packed_att, offsets, B, T, C, NH, 0);
    double max_out = 0.0, max_grad = 0.0;
    for (int r = 0; r < N; r++) {
        for (int i = 0; i < C; i++)
            max_out = fmax(max_out, fabs(packed_out[(size_t)r * C + i] - out[(size_t)rows[r] * C + i]));
        for (int i = 0; i < 3 * C; i++)
            max_grad = fmax(max_grad, fabs(packed_dqkv[(size_t)r * 3 * C + i] - dqkv[(size_t)rows[r] * 3 * C + i]));
    }
    printf("attention packed vs padded (head size %d): max|out diff| %.2e, max|dqkv diff| %.2e\n", C / NH, max_out,
           max_grad);
    assert_true(max_out < 1e-6);
    assert_true(max_grad < 1e-6);

    // last_only: one query per example (its last row), the same values as the full computation's
    // last rows; with the output gradient only on those rows, the same dqkv. (Where built, the
    // AVX-512 kernels take last_only a query at a time and the full computation all queries at once,
    // so the sums differ in order.)
    float *last_out = mallocCheck((size_t)B * C * sizeof(float)),
          *last_dout = mallocCheck((size_t)B * C * sizeof(float));
    float *last_dqkv = callocCheck((size_t)N * 3 * C, sizeof(float)),
          *full_dqkv = callocCheck((size_t)N * 3 * C, sizeof(float));
    float *sparse_dout = callocCheck((size_t)N * C, sizeof(float));
    for (int b = 0; b < B; b++) {
        int last = offsets[b + 1] - 1;
        memcpy(last_dout + (size_t)b * C, packed_dout + (size_t)last * C, C * sizeof(float));
        memcpy(sparse_dout + (size_t)last * C, last_dout + (size_t)b * C, C * sizeof(float));
    }
    attention_forward_packed(last_out, packed_att, packed_qkv, NULL, offsets, B, T, C, NH, 1);
    attention_backward_packed(last_dqkv, last_dout, packed_qkv, packed_att, offsets, B, T, C, NH, 1);
    attention_backward_packed(full_dqkv, sparse_dout, packed_qkv, packed_att, offsets, B, T, C, NH, 0);
    double max_last_out = 0.0, max_last_grad = 0.0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < C; i++)
            max_last_out = fmax(max_last_out, fabs(last_out[(size_t)b * C + i] -
                                                   packed_out[(size_t)(offsets[b + 1] - 1) * C + i]));
    for (size_t i = 0; i < (size_t)N * 3 * C; i++)
        max_last_grad = fmax(max_last_grad, fabs(last_dqkv[i] - full_dqkv[i]));
    printf("attention last_only vs full: max|out diff| %.2e, max|dqkv diff| %.2e\n", max_last_out, max_last_grad);
    assert_true(max_last_out < 1e-6);
    assert_true(max_last_grad < 1e-6);
    free(last_out);
    free(last_dout);
    free(last_dqkv);
    free(full_dqkv);
    free(sparse_dout);
    free(qkv);
    free(dout);
    free(packed_qkv);
    free(packed_dout);
    free(out);
    free(att);
    free(packed_out);
    free(packed_att);
    free(dqkv);
    free(packed_dqkv);
}

// Head sizes below one 16-lane block, and of two blocks plus a remainder (the plain kernels' two
// paths), and of whole blocks (the published 32, which the AVX-512 kernels take where built).
static void test_attention_packed_matches_padded(void **state) {
    check_attention_packed(8, 2);
    check_attention_packed(72, 2);
    check_attention_packed(64, 2);
    check_attention_packed(64, 4);
}

typedef struct {
    float *out, *mean, *rstd, *inp, *weight, *bias;
    float *R;
    int N, C;
} LayernormCase;

static double layernorm_loss(void *ctx) {
    LayernormCase *l = ctx;
    layernorm_forward(l->out, l->mean, l->rstd, l->inp, l->weight, l->bias, l->N, l->C);
    return weighted_sum(l->out, l->R, (size_t)l->N * l->C);
}

static void test_layernorm_backward(void **state) {
    enum { N = 4, C = 8 };
    Rng rng = rng_stream(4, 0, 0);
    LayernormCase l = {mallocCheck(N * C * sizeof(float)), mallocCheck(N * sizeof(float)),
                       mallocCheck(N * sizeof(float)),     random_array(N * C, -2, 2, &rng),
                       random_array(C, 0.5f, 1.5f, &rng),  random_array(C, -0.5f, 0.5f, &rng),
                       random_array(N * C, -1, 1, &rng),   N,
                       C};
    for (int n = 0; n < N; n++)  // rows with different means, so the mean's gradient path matters
        for (int i = 0; i < C; i++) l.inp[n * C + i] += (float)n - 1.5f;
    layernorm_loss(&l);

    float *dinp = callocCheck(N * C, sizeof(float));
    float *dweight = callocCheck(C, sizeof(float));
    float *dbias = callocCheck(C, sizeof(float));
    layernorm_backward(dinp, dweight, dbias, l.R, l.inp, l.weight, l.mean, l.rstd, N, C);
    float *dinp_once = copy_array(dinp, N * C), *dweight_once = copy_array(dweight, C);
    float *dbias_once = copy_array(dbias, C);
    layernorm_backward(dinp, dweight, dbias, l.R, l.inp, l.weight, l.mean, l.rstd, N, C);
    assert_memory_equal(dinp_once, dinp, sizeof(float) * N * C);  // written; the parameters' added to
    assert_doubled(dweight_once, dweight, C);
    assert_doubled(dbias_once, dbias, C);

    check_gradient("layernorm dinp", layernorm_loss, &l, l.inp, dinp_once, N * C, 1e-3f);
    check_gradient("layernorm dweight", layernorm_loss, &l, l.weight, dweight_once, C, 1e-3f);
    check_gradient("layernorm dbias", layernorm_loss, &l, l.bias, dbias_once, C, 1e-3f);

    free(dinp);
    free(dweight);
    free(dbias);
    free(dinp_once);
    free(dweight_once);
    free(dbias_once);
    free(l.out);
    free(l.mean);
    free(l.rstd);
    free(l.inp);
    free(l.weight);
    free(l.bias);
    free(l.R);
}

// The vectorized layernorm (sums in 16 lanes, column blocks) against plain double-precision loops,
// for a width with whole lanes and one with a remainder past a column block.
static void check_layernorm_against_plain(int N, int C) {
    Rng rng = rng_stream(12, (uint64_t)C, 0);
    size_t size = (size_t)N * C;
    float *inp = random_array(size, -2, 2, &rng), *dout = random_array(size, -1, 1, &rng);
    float *weight = random_array(C, 0.5f, 1.5f, &rng), *bias = random_array(C, -0.5f, 0.5f, &rng);
    float *out = mallocCheck(size * sizeof(float)), *mean = mallocCheck(N * sizeof(float));
    float *rstd = mallocCheck(N * sizeof(float));
    float *dinp = callocCheck(size, sizeof(float)), *dweight = callocCheck(C, sizeof(float));
    float *dbias = callocCheck(C, sizeof(float));
    layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
    layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);

    double *ref_dweight = callocCheck(C, sizeof(double)), *ref_dbias = callocCheck(C, sizeof(double));
    double max_out = 0.0, max_dinp = 0.0, max_param = 0.0;
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        double m = 0.0, var = 0.0;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        for (int i = 0; i < C; i++) var += (x[i] - m) * (x[i] - m);
        double s = 1.0 / sqrt(var / C + 1e-5), dnorm_mean = 0.0, dnorm_norm_mean = 0.0;
        for (int i = 0; i < C; i++) {
            double norm = (x[i] - m) * s;
            max_out = fmax(max_out, fabs(out[(size_t)n * C + i] - (norm * weight[i] + bias[i])));
            dnorm_mean += d[i] * weight[i] / C;
            dnorm_norm_mean += d[i] * weight[i] * norm / C;
            ref_dweight[i] += d[i] * norm;
            ref_dbias[i] += d[i];
        }
        for (int i = 0; i < C; i++) {
            double norm = (x[i] - m) * s;
            double want = s * (d[i] * weight[i] - dnorm_mean - norm * dnorm_norm_mean);
            max_dinp = fmax(max_dinp, fabs(dinp[(size_t)n * C + i] - want));
        }
    }
    for (int i = 0; i < C; i++) {
        max_param = fmax(max_param, fabs(dweight[i] - ref_dweight[i]) / (1.0 + fabs(ref_dweight[i])));
        max_param = fmax(max_param, fabs(dbias[i] - ref_dbias[i]) / (1.0 + fabs(ref_dbias[i])));
    }
    printf("layernorm (N %d, C %d) vs plain double loops: out %.2e, dinp %.2e, dweight/dbias (rel) %.2e\n", N, C,
           max_out, max_dinp, max_param);
    assert_true(max_out < 1e-5);
    assert_true(max_dinp < 1e-5);
    assert_true(max_param < 1e-5);

    // On one thread (as inside a training worker) the backward takes its one-pass path where there
    // is one: the same bits as the threaded loops above.
    float *dinp1 = mallocCheck(size * sizeof(float)), *dweight1 = callocCheck(C, sizeof(float));
    float *dbias1 = callocCheck(C, sizeof(float));
    for (size_t i = 0; i < size; i++) dinp1[i] = 12345.0f;  // written over, not added to
    ops_set_threads(1);
    layernorm_backward(dinp1, dweight1, dbias1, dout, inp, weight, mean, rstd, N, C);
    ops_set_threads(2);
    assert_memory_equal(dinp1, dinp, size * sizeof(float));
    assert_memory_equal(dweight1, dweight, C * sizeof(float));
    assert_memory_equal(dbias1, dbias, C * sizeof(float));
    free(dinp1);
    free(dweight1);
    free(dbias1);
    free(inp);
    free(dout);
    free(weight);
    free(bias);
    free(out);
    free(mean);
    free(rstd);
    free(dinp);
    free(dweight);
    free(dbias);
    free(ref_dweight);
    free(ref_dbias);
}

static void test_layernorm_matches_plain(void **state) {
    check_layernorm_against_plain(37, 64);
    check_layernorm_against_plain(19, 300);
}

typedef struct {
    float *out, *inp;
    float *R;
    size_t n;
} ReluCase;

static double relu_loss(void *ctx) {
    ReluCase *r = ctx;
    relu_forward(r->out, r->inp, r->n);
    return weighted_sum(r->out, r->R, r->n);
}

static void test_relu_backward(void **state) {
    enum { N = 40 };
    Rng rng = rng_stream(5, 0, 0);
    ReluCase r = {mallocCheck(N * sizeof(float)), random_array(N, 0.1f, 1, &rng), random_array(N, -1, 1, &rng), N};
    for (int i = 0; i < N; i += 2) r.inp[i] = -r.inp[i];  // |inp| >= 0.1 keeps the steps off the kink

    // In place: the gradient of out becomes the gradient of inp.
    float *grad = copy_array(r.R, N);
    relu_backward(grad, r.inp, N);
    check_gradient("relu dinp", relu_loss, &r, r.inp, grad, N, 1e-2f);

    // At exactly 0 the gradient is 0, as PyTorch's threshold_backward.
    float zero = 0.0f, dzero = 1.0f;
    relu_backward(&dzero, &zero, 1);
    assert_true(dzero == 0.0f);

    free(grad);
    free(r.out);
    free(r.inp);
    free(r.R);
}

typedef struct {
    float *pred, *inp, *weight, *bias;
    float *R;
    int B, T, C;
    int rows[8];
} ReadoutCase;

static double readout_loss(void *ctx) {
    ReadoutCase *r = ctx;
    readout_forward(r->pred, r->inp, r->rows, r->weight, r->bias, r->B, r->C);
    return weighted_sum(r->pred, r->R, r->B);
}

static void test_readout_backward(void **state) {
    enum { B = 3, T = 4, C = 8 };
    size_t inp_size = (size_t)B * T * C;
    Rng rng = rng_stream(6, 0, 0);
    ReadoutCase r = {mallocCheck(B * sizeof(float)), random_array(inp_size, -1, 1, &rng),
                     random_array(C, -1, 1, &rng),   random_array(1, -1, 1, &rng),
                     random_array(B, -1, 1, &rng),   B,
                     T,                              C,
                     {T - 1, 2 * T - 1, 3 * T - 1}};  // the last position of each example

    float *dinp = callocCheck(inp_size, sizeof(float));
    float *dweight = callocCheck(C, sizeof(float));
    float dbias = 0.0f;
    readout_backward(dinp, dweight, &dbias, r.R, r.inp, r.rows, r.weight, B, C);
    float *dinp_once = copy_array(dinp, inp_size), *dweight_once = copy_array(dweight, C);
    float dbias_once = dbias;
    readout_backward(dinp, dweight, &dbias, r.R, r.inp, r.rows, r.weight, B, C);
    assert_doubled(dinp_once, dinp, inp_size);
    assert_doubled(dweight_once, dweight, C);
    assert_doubled(&dbias_once, &dbias, 1);

    // Every position but the last has gradient 0; the check covers them all.
    check_gradient("readout dinp", readout_loss, &r, r.inp, dinp_once, inp_size, 1e-3f);
    check_gradient("readout dweight", readout_loss, &r, r.weight, dweight_once, C, 1e-3f);
    check_gradient("readout dbias", readout_loss, &r, r.bias, &dbias_once, 1, 1e-3f);

    free(dinp);
    free(dweight);
    free(dinp_once);
    free(dweight_once);
    free(r.pred);
    free(r.inp);
    free(r.weight);
    free(r.bias);
    free(r.R);
}

typedef struct {
    float *pred;
    float *labels;
    int B;
    float scale;
} MseCase;

static double mse_loss(void *ctx) {
    MseCase *m = ctx;
    return m->scale * mse_forward(m->pred, m->labels, m->B);
}

static void test_mse_backward(void **state) {
    enum { B = 5 };
    Rng rng = rng_stream(7, 0, 0);
    MseCase m = {random_array(B, -1, 3, &rng), random_array(B, 0, 3, &rng), B, 1.0f / B};

    double sse = 0.0;
    for (int b = 0; b < B; b++) sse += ((double)m.pred[b] - m.labels[b]) * ((double)m.pred[b] - m.labels[b]);
    assert_true(fabs(mse_forward(m.pred, m.labels, B) - sse) <= 1e-12 * sse);

    // mse_backward writes dpred (it does not accumulate): stale values must not leak through.
    float dpred[B] = {100, 100, 100, 100, 100};
    mse_backward(dpred, m.pred, m.labels, NULL, B, m.scale);
    check_gradient("mse dpred", mse_loss, &m, m.pred, dpred, B, 1e-3f);

    free(m.pred);
    free(m.labels);
}

// ---------------------------------------------------------------------------------------------
// Whole model

static ModelConfig tiny_config(void) {
    ModelConfig cfg = {.vocab = 17, .seq_len = 16, .d_model = 8, .n_layers = 2, .n_heads = 2, .d_ff = 16};
    return cfg;
}

// B examples of the pretrain data set, encoded for sequence length T.
static void fill_pretrain_batch(Batch *batch, int B, int T, uint64_t seed) {
    DataConfig data = data_config_default();
    DataSet set;
    assert_int_equal(dataset_lookup(&set, "pretrain", &data), 0);
    assert_int_equal(data_config_seq_len(&data), T);
    batch_alloc(batch, B, T);
    batch_fill(batch, &set, &data, seed, 0, 0);
}

// Steps of the whole-model check: large enough that float round-off of the loss stays small next to
// the difference, small enough for curvature; smaller ones only to step clear of ReLU kinks.
static const float MODEL_MAX_STEP = 1e-2f, MODEL_MIN_STEP = 1e-3f;

static double model_loss(Model *model, const Batch *batch) {
    return model_forward(model, batch->tokens, batch->labels, batch->B) / batch->B;
}

// Which ReLU inputs of the last forward are positive: the model keeps only real (packed) rows, and
// its last layer only the B readout rows, all of which reach the loss.
static void relu_pattern(const Model *model, int B, uint8_t *pattern) {
    int T = model->config.seq_len, F = model->config.d_ff, L = model->config.n_layers;
    memset(pattern, 0, (size_t)L * B * T * F);
    for (int l = 0; l < L; l++) {
        int rows = l < L - 1 ? model->num_rows : B;
        for (int row = 0; row < rows; row++)
            for (int f = 0; f < F; f++) {
                size_t i = ((size_t)l * model->batch_capacity * T + row) * F + f;
                pattern[i] = model->acts.fc1_relu[i] > 0.0f;
            }
    }
}

// Central difference of the model's loss in x[i]. Returns 0 when a ReLU input that reaches the loss
// changes sign between the two points: the loss has a kink there, and the difference measures neither
// side's slope.
static int model_difference(Model *model, const Batch *batch, float *x, size_t i, float step, uint8_t *pattern_plus,
                            uint8_t *pattern_minus, double *numeric) {
    size_t n = (size_t)model->config.n_layers * batch->B * model->config.seq_len * model->config.d_ff;
    float saved = x[i], plus = saved + step, minus = saved - step;
    x[i] = plus;
    double loss_plus = model_loss(model, batch);
    relu_pattern(model, batch->B, pattern_plus);
    x[i] = minus;
    double loss_minus = model_loss(model, batch);
    relu_pattern(model, batch->B, pattern_minus);
    x[i] = saved;
    *numeric = (loss_plus - loss_minus) / ((double)plus - minus);
    return memcmp(pattern_plus, pattern_minus, n) == 0;
}

// Numeric gradient of the model's loss in x[i] with the largest step, halving from MODEL_MAX_STEP to
// MODEL_MIN_STEP, that crosses no ReLU kink. Returns 0 when even the smallest crosses one.
static int model_numeric_gradient(Model *model, const Batch *batch, float *x, size_t i, uint8_t *pattern_plus,
                                  uint8_t *pattern_minus, double *numeric) {
    for (float step = MODEL_MAX_STEP; step >= MODEL_MIN_STEP; step /= 2)
        if (model_difference(model, batch, x, i, step, pattern_plus, pattern_minus, numeric)) return 1;
    return 0;
}

static size_t param_slice_size(const Model *model, int index) {
    return model->param_sizes[index] / (model_param_is_layered(index) ? model->config.n_layers : 1);
}

// Analytic gradients of the MSE loss against central differences for a sample of entries of every
// parameter tensor of every layer.
static void test_model_gradient(void **state) {
    enum { B = 4, SAMPLES_PER_SLICE = 8, IN_PROJ_BIAS = 2, MAX_SLICE_SAMPLES = 64, VISIT_STRIDE = 7919 };
    ModelConfig cfg = tiny_config();
    Model model;
    model_create(&model, &cfg, B, 1);
    model_init(&model, 3, 0);
    Batch batch;
    fill_pretrain_batch(&batch, B, cfg.seq_len, 21);
    int padded = 0;
    for (int i = 0; i < B * cfg.seq_len; i++) padded += batch.tokens[2 * i] == 0;
    assert_true(padded > 0);  // the masked paths are exercised

    model_zero_grad(&model);
    double loss = model_forward(&model, batch.tokens, batch.labels, B) / B;
    model_backward(&model, batch.labels, NULL, B, 1.0f / B);
    int merged = B * cfg.seq_len - padded - model.num_rows;
    assert_true(merged > 0);  // repeated pairs ran as one row weighted by its copies

    size_t relu_inputs = (size_t)cfg.n_layers * B * cfg.seq_len * cfg.d_ff;
    uint8_t *pattern_plus = mallocCheck(relu_inputs), *pattern_minus = mallocCheck(relu_inputs);
    Rng rng = rng_stream(8, 0, 0);
    int C = cfg.d_model;
    size_t checked = 0, sought = 0, on_kink = 0;
    printf("whole model (vocab 17, T 16, C 8, L 2, NH 2, F 16; %d pretrain examples, %d padded positions, "
           "%d repeated pairs merged, loss %.4f):\n",
           B, padded, merged, loss);
    for (int index = 0; index < NUM_PARAM_TENSORS; index++) {
        int layers = model_param_is_layered(index) ? cfg.n_layers : 1;
        size_t n = param_slice_size(&model, index);
        // A sample of each slice; all of in_proj_bias, for its key part.
        size_t wanted = index == IN_PROJ_BIAS ? n : (n < SAMPLES_PER_SLICE ? n : SAMPLES_PER_SLICE);
        assert_true(wanted <= MAX_SLICE_SAMPLES);
        for (int layer = 0; layer < layers; layer++) {
            float *x = model_param_slice(&model, model.params_memory, index, layer);
            const float *g = model_param_slice(&model, model.grads_memory, index, layer);
            size_t indices[MAX_SLICE_SAMPLES], accepted = 0, start = rng_below(&rng, (uint32_t)n);
            double numeric[MAX_SLICE_SAMPLES];
            // Visits the slice in a scattered order (VISIT_STRIDE is a prime larger than any slice),
            // passing over entries that sit on ReLU kinks.
            for (size_t j = 0; j < n && accepted < wanted; j++) {
                size_t i = (start + j * VISIT_STRIDE) % n;
                if (model_numeric_gradient(&model, &batch, x, i, pattern_plus, pattern_minus, &numeric[accepted]))
                    indices[accepted++] = i;
                else
                    on_kink++;
            }
            char name[128];
            int64_t shape[2];
            model_param_name(&model, index, layer, name, sizeof(name), shape);
            assert_true(compare_gradients(name, g, indices, numeric, accepted, 0.1 * max_abs(g, n)) <= GRAD_TOL);
            checked += accepted;
            sought += wanted;
            if (index == IN_PROJ_BIAS) {
                // Softmax ignores a constant added to every score, so the key bias gets exactly 0.
                double key_max = max_abs(g + C, C), bias_max = max_abs(g, n);
                printf("    key bias max|grad| %.2e (q/v bias max|grad| %.2e)\n", key_max, bias_max);
                assert_true(key_max <= 1e-5 * bias_max);
            }
        }
    }
    printf("  %zu parameter entries checked, %zu passed over (on a ReLU kink)\n", checked, on_kink);
    assert_true(4 * checked >= 3 * sought);  // kinks must not hollow out the check
    free(pattern_plus);
    free(pattern_minus);
    batch_free(&batch);
    model_free(&model);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints, initialization, determinism

static void test_checkpoint_round_trip(void **state) {
    enum { B = 4 };
    ModelConfig cfg = tiny_config();
    cfg.n_heads = 4;  // not the default, so only the metadata can supply it
    Model model;
    model_create(&model, &cfg, B, 0);
    model_init(&model, 5, 0);
    Batch batch;
    fill_pretrain_batch(&batch, B, cfg.seq_len, 22);
    model_forward(&model, batch.tokens, NULL, B);

    char dir[512], path[600];
    test_scratch_dir(dir, sizeof(dir), "ops");
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    const char *const keys[] = {"step"}, *const values[] = {"123"};
    assert_int_equal(model_save(&model, path, 1, keys, values), 0);

    StFile file;
    if (st_load(&file, path) != 0) fail_msg("%s", pf_last_error());
    assert_non_null(st_metadata(&file, "step"));
    assert_string_equal(st_metadata(&file, "step"), "123");
    // Heads and sequence length cannot be inferred from shapes: start them wrong.
    ModelConfig loaded = {.n_heads = 1, .seq_len = 1};
    assert_int_equal(model_config_from_file(&loaded, &file), 0);
    assert_int_equal(loaded.vocab, cfg.vocab);
    assert_int_equal(loaded.seq_len, cfg.seq_len);
    assert_int_equal(loaded.d_model, cfg.d_model);
    assert_int_equal(loaded.n_layers, cfg.n_layers);
    assert_int_equal(loaded.n_heads, cfg.n_heads);
    assert_int_equal(loaded.d_ff, cfg.d_ff);

    Model copy;
    model_create(&copy, &loaded, B, 0);
    if (model_load_params(&copy, &file) != 0) fail_msg("%s", pf_last_error());
    assert_int_equal(copy.num_parameters, model.num_parameters);
    assert_memory_equal(copy.params_memory, model.params_memory, model.num_parameters * sizeof(float));
    model_forward(&copy, batch.tokens, NULL, B);
    assert_memory_equal(copy.pred, model.pred, B * sizeof(float));

    st_free(&file);
    assert_int_equal(remove(path), 0);
    assert_int_equal(rmdir(dir), 0);  // fails if the atomic write left a temporary file behind
    model_free(&copy);
    model_free(&model);
    batch_free(&batch);
}

static void test_parameter_count(void **state) {
    ModelConfig cfg = model_config_default();
    Model model;
    model_create(&model, &cfg, 1, 0);
    assert_int_equal(model.num_parameters, 550433);
    // The named tensors of the checkpoint cover exactly the parameters.
    size_t named = 0;
    for (int index = 0; index < NUM_PARAM_TENSORS; index++) {
        int layers = model_param_is_layered(index) ? cfg.n_layers : 1;
        char name[128];
        int64_t shape[2];
        int ndim = model_param_name(&model, index, 0, name, sizeof(name), shape);
        named += (size_t)layers * (size_t)shape[0] * (ndim == 2 ? (size_t)shape[1] : 1);
    }
    assert_int_equal(named, 550433);
    model_free(&model);
}

static void test_identical_layers(void **state) {
    ModelConfig cfg = tiny_config();
    cfg.n_layers = 3;
    Model model;
    model_create(&model, &cfg, 1, 0);
    for (int identical = 1; identical >= 0; identical--) {
        model_init(&model, 9, identical);
        for (int index = 0; index < NUM_PARAM_TENSORS; index++) {
            if (!model_param_is_layered(index)) continue;
            size_t bytes = param_slice_size(&model, index) * sizeof(float);
            const float *first = model_param_slice(&model, model.params_memory, index, 0);
            // Weights and the linear biases are random; the other biases and the norms are constants.
            int random = index == 1 || index == 3 || (index >= 5 && index <= 8);
            for (int layer = 1; layer < cfg.n_layers; layer++) {
                int same = memcmp(first, model_param_slice(&model, model.params_memory, index, layer), bytes) == 0;
                assert_int_equal(same, identical || !random);
            }
        }
    }
    model_free(&model);
}

static void mean_std(const float *x, size_t n, double *mean, double *std) {
    double sum = 0.0, sq = 0.0;
    for (size_t i = 0; i < n; i++) sum += x[i];
    *mean = sum / n;
    for (size_t i = 0; i < n; i++) sq += (x[i] - *mean) * (x[i] - *mean);
    *std = sqrt(sq / n);
}

// U(-bound, bound): every value inside; with enough values, the extremes reach near the bound and
// the mean and standard deviation (bound / sqrt(3)) match.
static void check_uniform(const char *what, const float *x, size_t n, double bound) {
    double mean, std;
    mean_std(x, n, &mean, &std);
    double extreme = max_abs(x, n);
    printf("  %-16s n %6zu  bound %.4f  max|x| %.4f  mean %+.4f  std %.4f (uniform %.4f)\n", what, n, bound, extreme,
           mean, std, bound / sqrt(3.0));
    assert_true(extreme <= bound);
    if (n < 256) return;
    assert_true(extreme >= 0.95 * bound);
    assert_true(fabs(mean) <= 0.15 * bound);
    assert_true(fabs(std / (bound / sqrt(3.0)) - 1.0) <= 0.1);
}

static void check_constant(const char *what, const float *x, size_t n, float value) {
    printf("  %-16s n %6zu  all %g\n", what, n, (double)value);
    for (size_t i = 0; i < n; i++) assert_true(x[i] == value);
}

static void test_init_statistics(void **state) {
    ModelConfig cfg = model_config_default();
    Model model;
    model_create(&model, &cfg, 1, 0);
    model_init(&model, 11, 0);  // independent layers: more draws per statistic
    const ParameterTensors *p = &model.params;
    const size_t *n = model.param_sizes;
    double C = cfg.d_model, F = cfg.d_ff;
    printf("initialization (published shape, all layers):\n");

    double mean, std;
    mean_std(p->embedding, n[0], &mean, &std);
    printf("  %-16s n %6zu  mean %+.4f  std %.4f (normal 1)\n", "embedding", n[0], mean, std);
    assert_true(fabs(mean) <= 0.15);
    assert_true(fabs(std - 1.0) <= 0.1);

    check_uniform("in_proj_weight", p->in_proj_w, n[1], sqrt(6.0 / (C + 3 * C)));
    check_constant("in_proj_bias", p->in_proj_b, n[2], 0.0f);
    check_uniform("out_proj.weight", p->out_proj_w, n[3], 1.0 / sqrt(C));
    check_constant("out_proj.bias", p->out_proj_b, n[4], 0.0f);
    check_uniform("linear1.weight", p->linear1_w, n[5], 1.0 / sqrt(C));
    check_uniform("linear1.bias", p->linear1_b, n[6], 1.0 / sqrt(C));
    check_uniform("linear2.weight", p->linear2_w, n[7], 1.0 / sqrt(F));
    check_uniform("linear2.bias", p->linear2_b, n[8], 1.0 / sqrt(F));
    check_constant("norm1.weight", p->norm1_w, n[9], 1.0f);
    check_constant("norm1.bias", p->norm1_b, n[10], 0.0f);
    check_constant("norm2.weight", p->norm2_w, n[11], 1.0f);
    check_constant("norm2.bias", p->norm2_b, n[12], 0.0f);
    check_uniform("fc_out.weight", p->fc_out_w, n[13], 1.0 / sqrt(C));
    check_uniform("fc_out.bias", p->fc_out_b, n[14], 1.0 / sqrt(C));
    model_free(&model);
}

// Two forward + backward passes with the same thread count give the same bits: no races, no
// reductions whose order depends on scheduling. On every matmul backend the build has (the default
// one alone would leave OpenBLAS untested wherever the kernels are available).
static void test_determinism(void **state) {
    enum { B = 8, THREADS = 4 };
    const char *backends[] = {"kernels", "openblas", "loops"};
    const char *default_backend = ops_backend();
    ModelConfig cfg = model_config_default();
    cfg.n_layers = 2;
    Model model;
    model_create(&model, &cfg, B, 1);
    model_init(&model, 13, 0);
    Batch batch;
    fill_pretrain_batch(&batch, B, cfg.seq_len, 23);
    ops_set_threads(THREADS);

    float *first_grads = mallocCheck(model.num_parameters * sizeof(float));
    float first_pred[B];
    for (int b = 0; b < 3; b++) {
        if (ops_set_matmul_backend(backends[b]) != 0) continue;  // not in this build
        printf("determinism on %s (layer 0's table of token pairs %s)\n", backends[b],
               ops_matmul_rows_independent() ? "on" : "off: rows not independent");
        for (int pass = 0; pass < 2; pass++) {
            model_zero_grad(&model);
            model_forward(&model, batch.tokens, batch.labels, B);
            model_backward(&model, batch.labels, NULL, B, 1.0f / B);
            if (pass == 0) {
                memcpy(first_grads, model.grads_memory, model.num_parameters * sizeof(float));
                memcpy(first_pred, model.pred, sizeof(first_pred));
            }
        }
        assert_memory_equal(first_pred, model.pred, sizeof(first_pred));
        assert_memory_equal(first_grads, model.grads_memory, model.num_parameters * sizeof(float));
        // inference, with its shared activation buffers, predicts the very same values
        double sse = model_infer(&model, batch.tokens, batch.labels, B);
        assert_memory_equal(first_pred, model.pred, sizeof(first_pred));
        assert_true(sse == model_forward(&model, batch.tokens, batch.labels, B));
        // and so do the packed weights, with layer 0's table of token pairs where the backend's rows
        // are independent (ops_matmul_rows_independent), gradients included
        model_pack_weights(&model);
        assert_int_equal(model.pair_table, ops_matmul_rows_independent());
        model_zero_grad(&model);
        model_forward(&model, batch.tokens, batch.labels, B);
        assert_memory_equal(first_pred, model.pred, sizeof(first_pred));
        model_backward(&model, batch.labels, NULL, B, 1.0f / B);
        assert_memory_equal(first_grads, model.grads_memory, model.num_parameters * sizeof(float));
        model_infer(&model, batch.tokens, batch.labels, B);
        assert_memory_equal(first_pred, model.pred, sizeof(first_pred));
        model_unpack_weights(&model);
    }

    assert_int_equal(ops_set_matmul_backend(default_backend), 0);
    ops_set_threads(2);
    free(first_grads);
    batch_free(&batch);
    model_free(&model);
}

// Repeated token pairs merged into one row weighted by its copies (the default) against every
// position on its own row: the same predictions and gradients up to the order of float sums, on
// the published model shape and a pretrain batch.
static void test_merged_repeats_match(void **state) {
    (void)state;
    enum { B = 64 };
    ModelConfig cfg = model_config_default();
    Model model;
    model_create(&model, &cfg, B, 1);
    model_init(&model, 9, 0);
    Batch batch;
    fill_pretrain_batch(&batch, B, cfg.seq_len, 31);
    float *grads[2], pred[2][B];
    int rows[2];
    for (int merge = 0; merge < 2; merge++) {
        model.merge_repeats = merge;
        model_zero_grad(&model);
        model_forward(&model, batch.tokens, batch.labels, B);
        model_backward(&model, batch.labels, NULL, B, 1.0f / B);
        memcpy(pred[merge], model.pred, sizeof(pred[merge]));
        grads[merge] = mallocCheck(model.num_parameters * sizeof(float));
        memcpy(grads[merge], model.grads_memory, model.num_parameters * sizeof(float));
        rows[merge] = model.num_rows;
    }
    double worst_pred = 0.0, worst = 0.0, largest = 0.0;
    for (int b = 0; b < B; b++) worst_pred = fmax(worst_pred, fabs(pred[1][b] - pred[0][b]));
    for (size_t i = 0; i < model.num_parameters; i++) {
        worst = fmax(worst, fabs(grads[1][i] - grads[0][i]));
        largest = fmax(largest, fabs(grads[0][i]));
    }
    printf("merged repeats: %d rows instead of %d; predictions within %.2e, gradients within %.2e of the largest\n",
           rows[1], rows[0], worst_pred, worst / largest);
    assert_true(rows[1] < rows[0]);
    assert_true(worst_pred <= 1e-5);
    assert_true(worst <= 1e-5 * largest);
    free(grads[0]);
    free(grads[1]);
    batch_free(&batch);
    model_free(&model);
}

// A step over the distinct examples of a batch, each weighted by its copies, gives the loss and the
// gradient of the full batch (up to the order of float sums), on a tune batch (many repeats).
static void test_dedupe_matches_full_batch(void **state) {
    (void)state;
    RunConfig cfg;
    config_preset(&cfg, "tiny");
    snprintf(cfg.set, sizeof(cfg.set), "tune");
    cfg.batch_size = 1024;
    cfg.micro_batch = 64;
    assert_int_equal(config_finalize(&cfg), 0);
    DataSet set;
    assert_int_equal(dataset_lookup(&set, cfg.set, &cfg.data), 0);
    Model model;
    model_create(&model, &cfg.model, cfg.micro_batch, 1);
    model_init(&model, 5, 1);
    float *full_grads = mallocCheck(model.num_parameters * sizeof(float));
    BatchStats full, distinct;
    int num_distinct[2];
    for (int dedupe = 0; dedupe < 2; dedupe++) {
        cfg.dedupe = dedupe;
        GradientWorkers *workers = gradient_workers_create(&model, &cfg, 2);
        assert_int_equal(gradient_workers_step(workers, &set, 3, dedupe ? &distinct : &full), 0);
        num_distinct[dedupe] = gradient_workers_last_batch(workers)->B;
        if (!dedupe) memcpy(full_grads, model.grads_memory, model.num_parameters * sizeof(float));
        gradient_workers_free(workers);
    }
    double worst = 0.0, largest = 0.0;
    for (size_t i = 0; i < model.num_parameters; i++) {
        worst = fmax(worst, fabs(model.grads_memory[i] - full_grads[i]));
        largest = fmax(largest, fabs(full_grads[i]));
    }
    printf("dedupe: %d distinct of %d tune examples; loss %.9g against %.9g, worst gradient difference %.2e of "
           "the largest\n",
           num_distinct[1], num_distinct[0], distinct.sse, full.sse, worst / largest);
    assert_int_equal(num_distinct[0], 1024);
    assert_true(num_distinct[1] < 900);  // tune batches repeat often (about 40% at this size)
    assert_true(fabs(distinct.sse - full.sse) <= 1e-5 * full.sse);
    assert_true(worst <= 1e-5 * largest);
    for (int label = 0; label <= PF_MAX_VERTICES; label++)
        assert_int_equal(distinct.label_count[label], full.label_count[label]);
    free(full_grads);
    model_free(&model);
}

int main(void) {
    ops_set_threads(2);
    printf("gradient checks (backend %s): max err = max |analytic - numeric| / max(|numeric|, 0.1 max|grad|), "
           "tolerance %.0e\n",
           ops_backend(), GRAD_TOL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedding_backward),
        cmocka_unit_test(test_matmul_backward),
        cmocka_unit_test(test_attention_backward),
        cmocka_unit_test(test_attention_packed_matches_padded),
        cmocka_unit_test(test_layernorm_backward),
        cmocka_unit_test(test_layernorm_matches_plain),
        cmocka_unit_test(test_relu_backward),
        cmocka_unit_test(test_readout_backward),
        cmocka_unit_test(test_mse_backward),
        cmocka_unit_test(test_dedupe_matches_full_batch),
        cmocka_unit_test(test_merged_repeats_match),
        cmocka_unit_test(test_model_gradient),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_parameter_count),
        cmocka_unit_test(test_identical_layers),
        cmocka_unit_test(test_init_statistics),
        cmocka_unit_test(test_determinism),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
