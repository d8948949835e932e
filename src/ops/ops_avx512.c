// The AVX-512 backend ("kernels"): the linear layers through gemm.c's register-tile products, the
// packed attention and the layernorm in registers. Each takes the shapes its kernels fit (the
// model's: heads of 16..64 and sequences of up to 16 rows; C a multiple of 16) and runs the
// reference op (ops_reference.c) for any other. Built for AVX-512 targets.
#if defined(__AVX512F__)
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "ops/backend.h"
#include "ops/gemm.h"

// ---------------------------------------------------------------------------------------------
// linear layers: gemm.c's products, bias, residual and ReLU fused into the output pass

static void matmul_forward_kernels(float *out, const float *inp, const float *weight, const float *weight_packed,
                                   const float *bias, const float *residual, int relu, int N, int C, int OC) {
#pragma omp parallel
    {
        int lo, hi;
        thread_share(N, &lo, &hi);
        if (hi > lo && weight_packed) {
            gemm_nt_packed(out + (size_t)lo * OC, OC, inp + (size_t)lo * C, C, weight_packed, hi - lo, OC, C, bias,
                           residual ? residual + (size_t)lo * OC : NULL, OC, relu);
        } else if (hi > lo) {
            gemm_nt(out + (size_t)lo * OC, OC, inp + (size_t)lo * C, C, weight, C, hi - lo, OC, C, bias,
                    residual ? residual + (size_t)lo * OC : NULL, OC, relu);
        }
    }
}

static void matmul_backward_kernels(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                    const float *weight, int N, int C, int OC) {
#pragma omp parallel
    {
        int lo, hi;
        thread_share(N, &lo, &hi);  // dinp: rows of the batch
        if (dinp && hi > lo)
            gemm_nn(dinp + (size_t)lo * C, C, dout + (size_t)lo * OC, OC, weight, C, hi - lo, C, OC, 1);
        thread_share(OC, &lo, &hi);  // dweight and dbias: its own rows, each reducing over the whole batch
        if (hi > lo) {
            gemm_tn(dweight + (size_t)lo * C, C, dout + lo, OC, inp, C, N, hi - lo, C);
            if (dbias) ops_column_sums(dbias, dout, N, OC, lo, hi);
        }
    }
}

// relu(x) then a linear layer: the input gradient written in one masked product
static void matmul_backward_relu_kernels(float *dinp, float *dweight, float *dbias, const float *dout,
                                         const float *inp, const float *weight, int N, int C, int OC) {
#pragma omp parallel
    {
        int lo, hi;
        thread_share(N, &lo, &hi);
        if (hi > lo)
            gemm_nn_masked(dinp + (size_t)lo * C, C, dout + (size_t)lo * OC, OC, weight, C, inp + (size_t)lo * C,
                           C, hi - lo, C, OC);
    }
    matmul_backward_kernels(NULL, dweight, dbias, dout, inp, weight, N, C, OC);
}

// ---------------------------------------------------------------------------------------------
// attention


// AVX-512 versions of the packed attention for sequences of at most 16 rows and head sizes that
// are whole 16-lane vectors (the published shape: 16 positions, heads of 32): all keys, or all
// queries, fit one vector. The readout kernels take the last layer's single query with its keys in
// lanes; the query-major kernels further down take every query of the other layers at once.
// Tested against the reference (test_backends, and the padded reference in test_ops).
enum { FAST_KEYS = 16, FAST_HEAD = 64 };

static int attention_fast_fits(int T, int hs) { return T <= FAST_KEYS && hs % 16 == 0 && hs <= FAST_HEAD; }

// e^x on 16 lanes for x <= 0 (scores minus their maximum): x = n ln2 + r with |r| <= ln2 / 2, e^r by
// its Taylor series to r^7 (truncation below 6e-9 relative), times 2^n. Lanes outside `live` are 0.
static inline __m512 exp_lanes(__m512 x, __mmask16 live) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2 in two parts
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(live, p, n);
}

// A 16 x 16 block transposed in registers: four rounds of lane shuffles (64 in all), far fewer
// instructions than 256 scalar copies, and no scalar stores for vector loads to wait on.
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {  // pairs of rows interleaved element by element
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {  // then pairs of elements
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int i = 0; i < 16; i += 8)  // then 128-bit quarters, twice
        for (int j = 0; j < 4; j++) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}

// rows (len, stride): this example's packed q | k | v (stride 3C) or output gradients (stride C).
// Columns col .. col + hs, transposed for s < len into dst[i * 16 + s] (lanes from len on are zero).
static inline void transpose_head(float *dst, const float *rows, size_t stride, int col, int hs, int len) {
    for (int i0 = 0; i0 < hs; i0 += 16) {
        __m512 block[16];
        for (int s = 0; s < 16; s++)
            block[s] = s < len ? _mm512_loadu_ps(rows + (size_t)s * stride + col + i0) : _mm512_setzero_ps();
        transpose16(block);
        for (int i = 0; i < 16; i++) _mm512_store_ps(dst + (i0 + i) * FAST_KEYS, block[i]);
    }
}

// dst[s] = sum_i rows_s[col + i] * lanes[i * 16 + lane] for rows first <= s < len (stride between
// rows): each row's products with a transposed operand, rows four at a time as independent chains
// (past the last row a group repeats it and drops the result).
static inline void rows_times_lanes(__m512 *dst, const float *rows, size_t stride, int col, const float *lanes,
                                    int hs, int first, int len) {
    for (int s = first; s < len; s += 4) {
        const float *r[4];
        for (int j = 0; j < 4; j++) r[j] = rows + (size_t)(s + j < len ? s + j : len - 1) * stride + col;
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int i = 0; i < hs; i++) {
            __m512 x = _mm512_load_ps(lanes + i * FAST_KEYS);
            for (int j = 0; j < 4; j++) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(r[j][i]), x, acc[j]);
        }
        for (int j = 0; j < 4 && s + j < len; j++) dst[s + j] = acc[j];
    }
}

// One (example, head) of the last layer: its readout row (the last, len - 1) is the only query.
// out: that query's output row.
static void attention_head_forward_readout(float *out, float *att, const float *rows, const float *counts, int len,
                                           int T, int C, int h, int hs, float scale) {
    size_t C3 = (size_t)3 * C;
    int t = len - 1;
    float keys_t[FAST_HEAD * FAST_KEYS] __attribute__((aligned(64)));
    float probs[FAST_KEYS] __attribute__((aligned(64)));
    transpose_head(keys_t, rows, C3, C + h * hs, hs, len);
    __mmask16 live = (__mmask16)((1u << len) - 1u);
    __m512 copies = counts ? _mm512_maskz_loadu_ps(live, counts) : _mm512_set1_ps(1.0f);
    __m512 score[FAST_KEYS];  // score[t]: the query against every key
    rows_times_lanes(score, rows, C3, h * hs, keys_t, hs, t, len);
    __m512 scaled = _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), live, score[t], _mm512_set1_ps(scale));
    float maxval = _mm512_reduce_max_ps(scaled);
    __m512 e = _mm512_mul_ps(exp_lanes(_mm512_sub_ps(scaled, _mm512_set1_ps(maxval)), live), copies);
    __m512 a = _mm512_mul_ps(e, _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(e)));
    _mm512_store_ps(probs, a);
    _mm512_mask_storeu_ps(att + (size_t)t * T, live, a);
    for (int i0 = 0; i0 < hs; i0 += 16) {
        __m512 o = _mm512_setzero_ps();
        for (int s = 0; s < len; s++)
            o = _mm512_fmadd_ps(_mm512_set1_ps(probs[s]), _mm512_loadu_ps(rows + (size_t)s * C3 + 2 * C + h * hs + i0),
                                o);
        _mm512_storeu_ps(out + h * hs + i0, o);
    }
}

// Its backward. dout: the readout query's output gradient row.
static void attention_head_backward_readout(float *drows, const float *dout, const float *rows, const float *att,
                                            int len, int T, int C, int h, int hs, float scale) {
    size_t C3 = (size_t)3 * C;
    int t = len - 1;
    float values_t[FAST_HEAD * FAST_KEYS] __attribute__((aligned(64)));
    float dscores[FAST_KEYS] __attribute__((aligned(64)));
    transpose_head(values_t, rows, C3, 2 * C + h * hs, hs, len);
    __mmask16 live = (__mmask16)((1u << len) - 1u);
    // da_s = d . v_s, the softmax backward, dq += sum_s dscore_s k_s
    __m512 datt;
    rows_times_lanes(&datt, dout, C, h * hs, values_t, hs, 0, 1);
    const float *a = att + (size_t)t * T;
    __m512 prob = _mm512_maskz_loadu_ps(live, a);
    float weighted = _mm512_reduce_add_ps(_mm512_mul_ps(prob, datt));
    __m512 ds = _mm512_mul_ps(_mm512_mul_ps(prob, _mm512_sub_ps(datt, _mm512_set1_ps(weighted))),
                              _mm512_set1_ps(scale));
    _mm512_store_ps(dscores, ds);
    for (int i0 = 0; i0 < hs; i0 += 16) {
        float *dq = drows + (size_t)t * C3 + h * hs + i0;
        __m512 acc0 = _mm512_loadu_ps(dq), acc1 = _mm512_setzero_ps();
        int s = 0;
        for (; s + 1 < len; s += 2) {
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(dscores[s]), _mm512_loadu_ps(rows + (size_t)s * C3 + C + h * hs + i0),
                                   acc0);
            acc1 = _mm512_fmadd_ps(_mm512_set1_ps(dscores[s + 1]),
                                   _mm512_loadu_ps(rows + (size_t)(s + 1) * C3 + C + h * hs + i0), acc1);
        }
        if (s < len)
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(dscores[s]), _mm512_loadu_ps(rows + (size_t)s * C3 + C + h * hs + i0),
                                   acc0);
        _mm512_storeu_ps(dq, _mm512_add_ps(acc0, acc1));
    }
    // keys and values, one term each: dk_s += dscore_s q, dv_s += a_s d
    for (int i0 = 0; i0 < hs; i0 += 16) {
        __m512 q = _mm512_loadu_ps(rows + (size_t)t * C3 + h * hs + i0);
        __m512 d = _mm512_loadu_ps(dout + h * hs + i0);
        for (int s = 0; s < len; s++) {
            float *dkrow = drows + (size_t)s * C3 + C + h * hs + i0;
            float *dvrow = drows + (size_t)s * C3 + 2 * C + h * hs + i0;
            __m512 dk = _mm512_mul_ps(_mm512_set1_ps(dscores[s]), q), dv = _mm512_mul_ps(_mm512_set1_ps(a[s]), d);
            _mm512_storeu_ps(dkrow, _mm512_add_ps(_mm512_loadu_ps(dkrow), dk));
            _mm512_storeu_ps(dvrow, _mm512_add_ps(_mm512_loadu_ps(dvrow), dv));
        }
    }
}

// The query-major kernels below take every query of an (example, head) at once, one query per
// lane: a score vector holds one key's scores against all queries, so the softmax over keys is
// elementwise across len vectors (no horizontal sums), and each product is len or hs independent
// chains. They keep the probabilities key-major: att[s * T + t] is query t's weight on key s (the
// readout kernels above, which serve last_only, keep att[t * T + s]).

// Rows t < len of out (stride ldo, columns col .. col + hs) get (or, with accumulate, gain)
// sum_s weights[s] (lane t) * rows_s[col + i]: the sums run with the head dimensions as 16
// independent chains, then a transpose turns them back into rows.
static inline void lanes_times_rows(float *out, size_t ldo, int col, const __m512 *weights, const float *rows,
                                    size_t C3, int rcol, int hs, int len, int accumulate) {
    for (int i0 = 0; i0 < hs; i0 += 16) {
        __m512 acc[16];
        for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
        for (int s = 0; s < len; s++) {
            const float *r = rows + (size_t)s * C3 + rcol + i0;
            for (int i = 0; i < 16; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(r[i]), weights[s], acc[i]);
        }
        transpose16(acc);
        for (int t = 0; t < len; t++) {
            float *o = out + (size_t)t * ldo + col + i0;
            _mm512_storeu_ps(o, accumulate ? _mm512_add_ps(_mm512_loadu_ps(o), acc[t]) : acc[t]);
        }
    }
}

// One (example, head), every query. counts: copies of each key (NULL: one each).
static void attention_head_forward_lanes(float *out, float *att, const float *rows, const float *counts, int len,
                                         int T, int C, int h, int hs, float scale) {
    size_t C3 = (size_t)3 * C;
    float queries_t[FAST_HEAD * FAST_KEYS] __attribute__((aligned(64)));
    transpose_head(queries_t, rows, C3, h * hs, hs, len);
    __m512 score[FAST_KEYS];
    rows_times_lanes(score, rows, C3, C + h * hs, queries_t, hs, 0, len);
    // lanes past len (no query) hold zero scores: finite, and never stored
    __m512 vscale = _mm512_set1_ps(scale), maxval = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps();
    for (int s = 0; s < len; s++) {
        score[s] = _mm512_mul_ps(score[s], vscale);
        maxval = _mm512_max_ps(maxval, score[s]);
    }
    for (int s = 0; s < len; s++) {
        score[s] = exp_lanes(_mm512_sub_ps(score[s], maxval), (__mmask16)0xFFFF);
        if (counts) score[s] = _mm512_mul_ps(score[s], _mm512_set1_ps(counts[s]));
        sum = _mm512_add_ps(sum, score[s]);
    }
    __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), sum);
    __mmask16 live = (__mmask16)((1u << len) - 1u);
    for (int s = 0; s < len; s++) {
        score[s] = _mm512_mul_ps(score[s], inv);
        _mm512_mask_storeu_ps(att + (size_t)s * T, live, score[s]);
    }
    lanes_times_rows(out, C, h * hs, score, rows, C3, 2 * C + h * hs, hs, len, 0);
}

// Its backward: drows (q | k | v rows of the example) gain the gradients.
static void attention_head_backward_lanes(float *drows, const float *dout, const float *rows, const float *att,
                                          int len, int T, int C, int h, int hs, float scale) {
    size_t C3 = (size_t)3 * C;
    float dout_t[FAST_HEAD * FAST_KEYS] __attribute__((aligned(64)));
    float dscores[FAST_KEYS][FAST_KEYS] __attribute__((aligned(64)));
    transpose_head(dout_t, dout, C, h * hs, hs, len);
    __m512 datt[FAST_KEYS], prob[FAST_KEYS];
    rows_times_lanes(datt, rows, C3, 2 * C + h * hs, dout_t, hs, 0, len);  // d_t . v_s
    __mmask16 live = (__mmask16)((1u << len) - 1u);
    __m512 weighted = _mm512_setzero_ps();
    for (int s = 0; s < len; s++) {
        prob[s] = _mm512_maskz_loadu_ps(live, att + (size_t)s * T);
        weighted = _mm512_fmadd_ps(prob[s], datt[s], weighted);
    }
    __m512 vscale = _mm512_set1_ps(scale);
    for (int s = 0; s < len; s++) {  // the softmax backward, scaled
        datt[s] = _mm512_mul_ps(_mm512_mul_ps(prob[s], _mm512_sub_ps(datt[s], weighted)), vscale);
        _mm512_store_ps(dscores[s], datt[s]);
    }
    lanes_times_rows(drows, C3, h * hs, datt, rows, C3, C + h * hs, hs, len, 1);  // dq_t += sum_s ds_ts k_s
    // keys and values: dk_s += sum_t ds_ts q_t, dv_s += sum_t a_ts d_t, four keys at a time
    for (int s = 0; s < len; s += 4) {
        int group = len - s < 4 ? len - s : 4;
        for (int i0 = 0; i0 < hs; i0 += 16) {
            __m512 dk[4], dv[4];
            for (int j = 0; j < 4; j++) dk[j] = dv[j] = _mm512_setzero_ps();
            for (int t = 0; t < len; t++) {
                __m512 q = _mm512_loadu_ps(rows + (size_t)t * C3 + h * hs + i0);
                __m512 d = _mm512_loadu_ps(dout + (size_t)t * C + h * hs + i0);
                for (int j = 0; j < 4; j++) {
                    int key = s + (j < group ? j : 0);
                    dk[j] = _mm512_fmadd_ps(_mm512_set1_ps(dscores[key][t]), q, dk[j]);
                    dv[j] = _mm512_fmadd_ps(_mm512_set1_ps(att[(size_t)key * T + t]), d, dv[j]);
                }
            }
            for (int j = 0; j < group; j++) {
                float *dkrow = drows + (size_t)(s + j) * C3 + C + h * hs + i0;
                float *dvrow = drows + (size_t)(s + j) * C3 + 2 * C + h * hs + i0;
                _mm512_storeu_ps(dkrow, _mm512_add_ps(_mm512_loadu_ps(dkrow), dk[j]));
                _mm512_storeu_ps(dvrow, _mm512_add_ps(_mm512_loadu_ps(dvrow), dv[j]));
            }
        }
    }
}

static void attention_forward_kernels(float *out, float *att, const float *qkv, const float *key_counts,
                                      const int *offsets, int B, int T, int C, int NH, int last_only) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)3 * C;
    if (attention_fast_fits(T, hs)) {
#pragma omp parallel for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                int first = offsets[b], len = offsets[b + 1] - offsets[b];
                float *a = att + ((size_t)b * NH + h) * T * T;
                const float *counts = key_counts ? key_counts + first : NULL;
                if (last_only)
                    attention_head_forward_readout(out + (size_t)b * C, a, qkv + (size_t)first * C3, counts, len, T,
                                                   C, h, hs, scale);
                else
                    attention_head_forward_lanes(out + (size_t)first * C, a, qkv + (size_t)first * C3, counts, len, T,
                                                 C, h, hs, scale);
            }
        return;
    }
    OPS_REFERENCE.attention_forward_packed(out, att, qkv, key_counts, offsets, B, T, C, NH, last_only);
}

static void attention_backward_kernels(float *dqkv, const float *dout, const float *qkv, const float *att,
                                       const int *offsets, int B, int T, int C, int NH, int last_only) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)3 * C;
    if (attention_fast_fits(T, hs)) {
#pragma omp parallel for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                int first = offsets[b], len = offsets[b + 1] - offsets[b];
                const float *a = att + ((size_t)b * NH + h) * T * T;
                if (last_only)
                    attention_head_backward_readout(dqkv + (size_t)first * C3, dout + (size_t)b * C,
                                                    qkv + (size_t)first * C3, a, len, T, C, h, hs, scale);
                else
                    attention_head_backward_lanes(dqkv + (size_t)first * C3, dout + (size_t)first * C,
                                                  qkv + (size_t)first * C3, a, len, T, C, h, hs, scale);
            }
        return;
    }
    OPS_REFERENCE.attention_backward_packed(dqkv, dout, qkv, att, offsets, B, T, C, NH, last_only);
}

// ---------------------------------------------------------------------------------------------
// layernorm

// lanes_sum's last steps on one vector of 16 lane sums: halves added pairwise down to lane 0.
static inline float fold_lanes(__m512 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

// layernorm_forward's rows for C a multiple of 16 (at most 256), in registers: the same operations
// in the same order as the reference's loops, so the same bits.
static void layernorm_rows_avx512(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                  const float *bias, int N, int C) {
    int vectors = C / 16;
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        __m512 v[16], sum = _mm512_loadu_ps(x);
        v[0] = sum;
        for (int j = 1; j < vectors; j++) {
            v[j] = _mm512_loadu_ps(x + 16 * j);
            sum = _mm512_add_ps(sum, v[j]);
        }
        float m = fold_lanes(sum) / (float)C;
        __m512 vm = _mm512_set1_ps(m), squares = _mm512_setzero_ps();
        for (int j = 0; j < vectors; j++) {
            __m512 d = _mm512_sub_ps(v[j], vm);
            squares = _mm512_add_ps(squares, _mm512_mul_ps(d, d));
        }
        float s = 1.0f / sqrtf(fold_lanes(squares) / (float)C + 1e-5f);
        __m512 vs = _mm512_set1_ps(s);
        float *o = out + (size_t)n * C;
        for (int j = 0; j < vectors; j++) {
            __m512 y = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(v[j], vm), vs), _mm512_loadu_ps(weight + 16 * j));
            _mm512_storeu_ps(o + 16 * j, _mm512_add_ps(y, _mm512_loadu_ps(bias + 16 * j)));
        }
        mean[n] = m;
        rstd[n] = s;
    }
}

static void layernorm_forward_kernels(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                      const float *bias, int N, int C) {
    if (C % 16 == 0 && C <= 256) {
#pragma omp parallel
        {
            int lo, hi;
            thread_share(N, &lo, &hi);
            layernorm_rows_avx512(out + (size_t)lo * C, mean + lo, rstd + lo, inp + (size_t)lo * C, weight, bias,
                                  hi - lo, C);
        }
        return;
    }
    OPS_REFERENCE.layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
}

// layernorm_backward in one pass over the rows, for C a multiple of 16 (at most LAYERNORM_BLOCK),
// when one thread does all rows: the same operations in the same order as the reference's loops.
static void layernorm_backward_rows_avx512(float *dinp, float *dweight, float *dbias, const float *dout,
                                           const float *inp, const float *weight, const float *mean,
                                           const float *rstd, int N, int C) {
    float dw[LAYERNORM_BLOCK] __attribute__((aligned(64))), db[LAYERNORM_BLOCK] __attribute__((aligned(64)));
    memset(dw, 0, sizeof(float) * C);
    memset(db, 0, sizeof(float) * C);
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * C, *x = inp + (size_t)n * C;
        float *di = dinp + (size_t)n * C;
        __m512 vm = _mm512_set1_ps(mean[n]), vs = _mm512_set1_ps(rstd[n]);
        __m512 dnorm_sum = _mm512_setzero_ps(), dnorm_norm_sum = _mm512_setzero_ps();
        for (int i = 0; i < C; i += 16) {
            __m512 dv = _mm512_loadu_ps(d + i), norm = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm), vs);
            __m512 dnorm = _mm512_mul_ps(dv, _mm512_loadu_ps(weight + i));
            dnorm_sum = _mm512_add_ps(dnorm_sum, dnorm);
            dnorm_norm_sum = _mm512_add_ps(dnorm_norm_sum, _mm512_mul_ps(dnorm, norm));
            _mm512_store_ps(dw + i, _mm512_add_ps(_mm512_load_ps(dw + i), _mm512_mul_ps(dv, norm)));
            _mm512_store_ps(db + i, _mm512_add_ps(_mm512_load_ps(db + i), dv));
        }
        __m512 dnorm_mean = _mm512_set1_ps(fold_lanes(dnorm_sum) / (float)C);
        __m512 dnorm_norm_mean = _mm512_set1_ps(fold_lanes(dnorm_norm_sum) / (float)C);
        for (int i = 0; i < C; i += 16) {
            __m512 norm = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm), vs);
            __m512 t = _mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(d + i), _mm512_loadu_ps(weight + i)), dnorm_mean);
            t = _mm512_mul_ps(vs, _mm512_sub_ps(t, _mm512_mul_ps(norm, dnorm_norm_mean)));
            _mm512_storeu_ps(di + i, _mm512_add_ps(_mm512_loadu_ps(di + i), t));
        }
    }
    for (int i = 0; i < C; i++) {
        dweight[i] += dw[i];
        dbias[i] += db[i];
    }
}

static void layernorm_backward_kernels(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                       const float *weight, const float *mean, const float *rstd, int N, int C) {
#ifdef _OPENMP
    int one_thread = omp_in_parallel() || omp_get_max_threads() == 1;  // a worker's own rows
#else
    int one_thread = 1;
#endif
    if (one_thread && C % 16 == 0 && C <= LAYERNORM_BLOCK) {
        layernorm_backward_rows_avx512(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
        return;
    }
    OPS_REFERENCE.layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}

const OpsBackend OPS_KERNELS = {
    .name = "kernels",
    .matmul_forward_fused = matmul_forward_kernels,
    .matmul_backward = matmul_backward_kernels,
    .matmul_backward_relu = matmul_backward_relu_kernels,
    .attention_forward_packed = attention_forward_kernels,
    .attention_backward_packed = attention_backward_kernels,
    .layernorm_forward = layernorm_forward_kernels,
    .layernorm_backward = layernorm_backward_kernels,
};
#else
typedef int ops_avx512_not_built;  // ISO C wants a translation unit to declare something
#endif
