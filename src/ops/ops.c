#include "ops/ops.h"

#include <math.h>
#include <string.h>

#ifdef PF_HAVE_BLAS
#include <cblas.h>
void openblas_set_num_threads(int num_threads);  // OpenBLAS extension; not in every cblas.h
#endif
#ifdef _OPENMP
#include <omp.h>
#endif
#include <unistd.h>

#include "ops/gemm.h"

enum { BACKEND_LOOPS, BACKEND_BLAS, BACKEND_KERNELS };
static const char *const backend_names[] = {"loops", "openblas", "kernels"};

// The fastest this build has: the AVX-512 kernels measured fastest on the model's shapes (see
// bench_train's per-backend lines), then OpenBLAS, then plain loops.
static int best_backend(void) {
    if (gemm_available()) return BACKEND_KERNELS;
#ifdef PF_HAVE_BLAS
    return BACKEND_BLAS;
#else
    return BACKEND_LOOPS;
#endif
}
static int matmul_backend = -1;  // chosen on first use

static int current_backend(void) {
    if (matmul_backend < 0) matmul_backend = best_backend();
    return matmul_backend;
}

int ops_set_matmul_backend(const char *name) {
    int have[3] = {1, 0, gemm_available()};
#ifdef PF_HAVE_BLAS
    have[BACKEND_BLAS] = 1;
#endif
    for (int b = 0; b < 3; b++)
        if (strcmp(name, backend_names[b]) == 0 && have[b]) {
            matmul_backend = b;
            return 0;
        }
    return -1;
}

int ops_set_threads(int n) {
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
#ifdef PF_HAVE_BLAS
    // OpenMP threads split each product and call a single-threaded BLAS: one thread pool, not two
    // pools spinning against each other on few cores (which halved throughput when measured).
    openblas_set_num_threads(1);
#endif
    return n;
}

enum { LAYERNORM_BLOCK = 256 };  // columns per block of the layernorm backward's local buffers

// The calling thread's share [lo, hi) of `total` rows inside a parallel region.
static void thread_share(int total, int *lo, int *hi) {
#ifdef _OPENMP
    int threads = omp_get_num_threads(), id = omp_get_thread_num();
#else
    int threads = 1, id = 0;
#endif
    *lo = (int)((long)total * id / threads);
    *hi = (int)((long)total * (id + 1) / threads);
}

// dbias[lo..hi) += column sums of dout (N, OC) over those columns, rows streamed in order so the
// inner loop is contiguous (and the sum order fixed: results do not depend on the thread count).
static void column_sums(float *dbias, const float *dout, int N, int OC, int lo, int hi) {
    enum { BLOCK = 64 };  // whole blocks keep their sums in registers across the rows
    for (; lo + BLOCK <= hi; lo += BLOCK) {
        float sums[BLOCK] = {0};
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC + lo;
            for (int j = 0; j < BLOCK; j++) sums[j] += d[j];
        }
        for (int j = 0; j < BLOCK; j++) dbias[lo + j] += sums[j];
    }
    float sums[1024];
    for (int start = lo; start < hi; start += 1024) {
        int width = hi - start < 1024 ? hi - start : 1024;
        memset(sums, 0, sizeof(float) * width);
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC + start;
            for (int j = 0; j < width; j++) sums[j] += d[j];
        }
        for (int j = 0; j < width; j++) dbias[start + j] += sums[j];
    }
}

const char *ops_backend(void) {
    return backend_names[current_backend()];
}

void embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C) {
    int half = C / 2;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *row = out + (size_t)n * C;
        memcpy(row, table + (size_t)tokens[2 * n] * half, sizeof(float) * half);
        memcpy(row + half, table + (size_t)tokens[2 * n + 1] * half, sizeof(float) * half);
    }
}

void embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int N, int C) {
    // Serial: rows of the table are shared between positions, and N * C is small next to the layers.
    int half = C / 2;
    for (int n = 0; n < N; n++) {
        const float *drow = dout + (size_t)n * C;
        for (int side = 0; side < 2; side++) {
            float *dt = dtable + (size_t)tokens[2 * n + side] * half;
            const float *d = drow + side * half;
            for (int i = 0; i < half; i++) dt[i] += d[i];
        }
    }
}

// The elementwise tail of a fused linear layer on rows lo..hi of out (the BLAS and loop backends).
static void residual_relu_rows(float *out, const float *residual, int relu, int lo, int hi, int OC) {
    for (size_t i = (size_t)lo * OC; i < (size_t)hi * OC; i++) {
        float v = out[i];
        if (residual) v = residual[i] + v;
        out[i] = relu && v < 0.0f ? 0.0f : v;
    }
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int C, int OC) {
    matmul_forward_fused(out, inp, weight, NULL, bias, NULL, 0, N, C, OC);
}

void matmul_forward_fused(float *out, const float *inp, const float *weight, const float *weight_packed,
                          const float *bias, const float *residual, int relu, int N, int C, int OC) {
    int backend = current_backend();
#pragma omp parallel
    {
        int lo, hi;
        thread_share(N, &lo, &hi);
        if (hi > lo && backend == BACKEND_KERNELS && weight_packed) {
            gemm_nt_packed(out + (size_t)lo * OC, OC, inp + (size_t)lo * C, C, weight_packed, hi - lo, OC, C, bias,
                           residual ? residual + (size_t)lo * OC : NULL, OC, relu);
        } else if (hi > lo && backend == BACKEND_KERNELS) {
            gemm_nt(out + (size_t)lo * OC, OC, inp + (size_t)lo * C, C, weight, C, hi - lo, OC, C, bias,
                    residual ? residual + (size_t)lo * OC : NULL, OC, relu);
        } else if (hi > lo && backend == BACKEND_BLAS) {
#ifdef PF_HAVE_BLAS
            // The bias goes in first and the product is added to it (beta 1): with beta 0 OpenBLAS
            // clears the output in a separate pass, which cost about 9% of inference.
            for (int n = lo; bias && n < hi; n++) memcpy(out + (size_t)n * OC, bias, sizeof(float) * OC);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, hi - lo, OC, C, 1.0f, inp + (size_t)lo * C, C, weight,
                        C, bias ? 1.0f : 0.0f, out + (size_t)lo * OC, OC);
#endif
            if (residual || relu) residual_relu_rows(out, residual, relu, lo, hi, OC);
        } else if (hi > lo) {
            for (int n = lo; n < hi; n++) {
                const float *x = inp + (size_t)n * C;
                float *o = out + (size_t)n * OC;
                for (int j = 0; j < OC; j++) {
                    const float *w = weight + (size_t)j * C;
                    double sum = 0.0;  // in double, as accurate as a blocked BLAS product (see matmul_backward)
                    for (int i = 0; i < C; i++) sum += (double)x[i] * w[i];
                    o[j] = (bias ? bias[j] : 0.0f) + (float)sum;
                }
            }
            if (residual || relu) residual_relu_rows(out, residual, relu, lo, hi, OC);
        }
    }
}

void matmul_backward_relu(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                          const float *weight, int N, int C, int OC) {
    if (current_backend() == BACKEND_KERNELS) {
#pragma omp parallel
        {
            int lo, hi;
            thread_share(N, &lo, &hi);
            if (hi > lo)
                gemm_nn_masked(dinp + (size_t)lo * C, C, dout + (size_t)lo * OC, OC, weight, C, inp + (size_t)lo * C,
                               C, hi - lo, C, OC);
        }
        matmul_backward(NULL, dweight, dbias, dout, inp, weight, N, C, OC);
        return;
    }
    memset(dinp, 0, sizeof(float) * (size_t)N * C);
    matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
    relu_backward(dinp, inp, (size_t)N * C);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int N, int C, int OC) {
    int backend = current_backend();
    if (backend != BACKEND_LOOPS) {
#pragma omp parallel
        {
            int lo, hi;
            thread_share(N, &lo, &hi);  // dinp: rows of the batch
            if (dinp && hi > lo) {
                if (backend == BACKEND_KERNELS)
                    gemm_nn(dinp + (size_t)lo * C, C, dout + (size_t)lo * OC, OC, weight, C, hi - lo, C, OC, 1);
#ifdef PF_HAVE_BLAS
                else
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, hi - lo, C, OC, 1.0f,
                                dout + (size_t)lo * OC, OC, weight, C, 1.0f, dinp + (size_t)lo * C, C);
#endif
            }
            thread_share(OC, &lo, &hi);  // dweight and dbias: its own rows, each reducing over the whole batch
            if (hi > lo) {
                if (backend == BACKEND_KERNELS)
                    gemm_tn(dweight + (size_t)lo * C, C, dout + lo, OC, inp, C, N, hi - lo, C);
#ifdef PF_HAVE_BLAS
                else
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hi - lo, C, N, 1.0f, dout + lo, OC, inp, C,
                                1.0f, dweight + (size_t)lo * C, C);
#endif
                if (dbias) column_sums(dbias, dout, N, OC, lo, hi);
            }
        }
        return;
    }
    // Plain loops: sums in double, in blocks of columns, so that the long reductions (over OC for
    // dinp, over every row for dweight) stay as accurate as a blocked BLAS product.
    enum { BLOCK = 256 };
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * OC;
            float *di = dinp + (size_t)n * C;
            for (int i0 = 0; i0 < C; i0 += BLOCK) {
                int width = C - i0 < BLOCK ? C - i0 : BLOCK;
                double acc[BLOCK];
                for (int i = 0; i < width; i++) acc[i] = di[i0 + i];
                for (int j = 0; j < OC; j++) {
                    const float *w = weight + (size_t)j * C + i0;
                    for (int i = 0; i < width; i++) acc[i] += (double)d[j] * w[i];
                }
                for (int i = 0; i < width; i++) di[i0 + i] = (float)acc[i];
            }
        }
    }
#pragma omp parallel
    {
        int lo, hi;
        thread_share(OC, &lo, &hi);
        for (int j = lo; j < hi; j++) {
            float *dw = dweight + (size_t)j * C;
            for (int i0 = 0; i0 < C; i0 += BLOCK) {
                int width = C - i0 < BLOCK ? C - i0 : BLOCK;
                double acc[BLOCK];
                for (int i = 0; i < width; i++) acc[i] = dw[i0 + i];
                for (int n = 0; n < N; n++) {
                    const float *x = inp + (size_t)n * C + i0;
                    double dj = dout[(size_t)n * OC + j];
                    for (int i = 0; i < width; i++) acc[i] += dj * x[i];
                }
                for (int i = 0; i < width; i++) dw[i0 + i] = (float)acc[i];
            }
        }
        if (dbias && hi > lo) column_sums(dbias, dout, N, OC, lo, hi);
    }
}


void attention_forward(float *out, float *att, const float *qkv, const uint8_t *pad, int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)3 * C;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const uint8_t *pad_b = pad + (size_t)b * T;
            for (int t = 0; t < T; t++) {
                const float *q = qkv + ((size_t)b * T + t) * C3 + h * hs;
                float *a = att + (((size_t)b * NH + h) * T + t) * T;
                float maxval = -INFINITY;
                for (int s = 0; s < T; s++) {
                    if (pad_b[s]) {
                        a[s] = -INFINITY;
                        continue;
                    }
                    const float *k = qkv + ((size_t)b * T + s) * C3 + C + h * hs;
                    float dot = 0.0f;
                    for (int i = 0; i < hs; i++) dot += q[i] * k[i];
                    a[s] = dot * scale;
                    if (a[s] > maxval) maxval = a[s];
                }
                float sum = 0.0f;
                for (int s = 0; s < T; s++) {
                    float e = pad_b[s] ? 0.0f : expf(a[s] - maxval);
                    a[s] = e;
                    sum += e;
                }
                float inv = 1.0f / sum;
                float *o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int s = 0; s < T; s++) {
                    a[s] *= inv;
                    if (pad_b[s]) continue;
                    const float *v = qkv + ((size_t)b * T + s) * C3 + 2 * C + h * hs;
                    for (int i = 0; i < hs; i++) o[i] += a[s] * v[i];
                }
            }
        }
    }
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, const uint8_t *pad,
                        int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)3 * C;
    // Parallel over (b, h): each pair writes only its own slices of dqkv.
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const uint8_t *pad_b = pad + (size_t)b * T;
            float datt[OPS_MAX_T];
            for (int t = 0; t < T; t++) {
                const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                const float *d = dout + ((size_t)b * T + t) * C + h * hs;
                const float *q = qkv + ((size_t)b * T + t) * C3 + h * hs;
                float *dq = dqkv + ((size_t)b * T + t) * C3 + h * hs;
                // out_t = sum_s a_ts v_s  =>  dv_s += a_ts d_t,  da_ts = d_t . v_s
                float weighted = 0.0f;
                for (int s = 0; s < T; s++) {
                    if (pad_b[s]) {
                        datt[s] = 0.0f;
                        continue;
                    }
                    const float *v = qkv + ((size_t)b * T + s) * C3 + 2 * C + h * hs;
                    float *dv = dqkv + ((size_t)b * T + s) * C3 + 2 * C + h * hs;
                    float dot = 0.0f;
                    for (int i = 0; i < hs; i++) {
                        dot += d[i] * v[i];
                        dv[i] += a[s] * d[i];
                    }
                    datt[s] = dot;
                    weighted += a[s] * dot;
                }
                // softmax backward, then through the scaled dot product
                for (int s = 0; s < T; s++) {
                    if (pad_b[s]) continue;
                    float dscore = a[s] * (datt[s] - weighted) * scale;
                    const float *k = qkv + ((size_t)b * T + s) * C3 + C + h * hs;
                    float *dk = dqkv + ((size_t)b * T + s) * C3 + C + h * hs;
                    for (int i = 0; i < hs; i++) {
                        dq[i] += dscore * k[i];
                        dk[i] += dscore * q[i];
                    }
                }
            }
        }
    }
}

#if defined(__AVX512F__)
#include <immintrin.h>

// AVX-512 versions of the packed attention for sequences of at most 16 rows and head sizes that
// are whole 16-lane vectors (the published shape: 16 positions, heads of 32): all keys, or all
// queries, fit one vector. The readout kernels take the last layer's single query with its keys in
// lanes; the query-major kernels further down take every query of the other layers at once.
// Tested against the padded reference with the other paths (test_ops).
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
#endif

// The packed kernels work on one (example, head) at a time with the keys (forward) or values
// (backward) transposed into a small buffer, so that every inner loop runs over independent lanes
// (keys, or head dimensions) and vectorizes without reordering any sum.
void attention_forward_packed(float *out, float *att, const float *qkv, const float *key_counts, const int *offsets,
                              int B, int T, int C, int NH, int last_only) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)3 * C;
#if defined(__AVX512F__)
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
#endif
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            int first = offsets[b], len = offsets[b + 1] - offsets[b];
            const float *rows = qkv + (size_t)first * C3;
            // lanes padded with zero keys to a multiple of 16, so the loops over keys vectorize fully
            int width = (len + 15) & ~15;
            float keys_t[ATTENTION_SCRATCH];  // (hs, width): keys_t[i * width + s] = k_s[i]
            float scores[OPS_MAX_T + 15];
            for (int i = 0; i < hs; i++)
                for (int s = 0; s < width; s++)
                    keys_t[i * width + s] = s < len ? rows[(size_t)s * C3 + C + h * hs + i] : 0.0f;
            for (int t = last_only ? len - 1 : 0; t < len; t++) {
                const float *q = rows + (size_t)t * C3 + h * hs;
                float *a = att + (((size_t)b * NH + h) * T + t) * T;
                for (int s0 = 0; s0 < width; s0 += 16) {
                    float acc[16] = {0};  // a fixed-size block stays in a register across i
                    for (int i = 0; i < hs; i++)
                        for (int l = 0; l < 16; l++) acc[l] += q[i] * keys_t[i * width + s0 + l];
                    memcpy(scores + s0, acc, sizeof(acc));
                }
                for (int s = 0; s < len; s++) a[s] = scores[s];
                float maxval = -INFINITY;
                for (int s = 0; s < len; s++) {
                    a[s] *= scale;
                    if (a[s] > maxval) maxval = a[s];
                }
                float sum = 0.0f;
                for (int s = 0; s < len; s++) {
                    a[s] = expf(a[s] - maxval);
                    if (key_counts) a[s] *= key_counts[first + s];
                    sum += a[s];
                }
                float inv = 1.0f / sum;
                for (int s = 0; s < len; s++) a[s] *= inv;
                float *o = out + (last_only ? (size_t)b : (size_t)first + t) * C + h * hs;
                int i0 = 0;
                for (; i0 + 16 <= hs; i0 += 16) {
                    float acc[16] = {0};
                    for (int s = 0; s < len; s++)
                        for (int l = 0; l < 16; l++) acc[l] += a[s] * rows[(size_t)s * C3 + 2 * C + h * hs + i0 + l];
                    memcpy(o + i0, acc, sizeof(acc));
                }
                for (; i0 < hs; i0++) {  // head sizes that are not a multiple of 16
                    float acc = 0.0f;
                    for (int s = 0; s < len; s++) acc += a[s] * rows[(size_t)s * C3 + 2 * C + h * hs + i0];
                    o[i0] = acc;
                }
            }
        }
    }
}

void attention_backward_packed(float *dqkv, const float *dout, const float *qkv, const float *att,
                               const int *offsets, int B, int T, int C, int NH, int last_only) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)3 * C;
#if defined(__AVX512F__)
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
#endif
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            int first = offsets[b], len = offsets[b + 1] - offsets[b];
            const float *rows = qkv + (size_t)first * C3;
            float *drows = dqkv + (size_t)first * C3;
            int width = (len + 15) & ~15;  // zero-padded lanes, as in the forward
            float values_t[ATTENTION_SCRATCH];  // (hs, width): values_t[i * width + s] = v_s[i]
            float dscores[ATTENTION_SCRATCH];   // (len, width): gradient of the scaled scores
            float datt[OPS_MAX_T + 15];
            for (int i = 0; i < hs; i++)
                for (int s = 0; s < width; s++)
                    values_t[i * width + s] = s < len ? rows[(size_t)s * C3 + 2 * C + h * hs + i] : 0.0f;
            int t0 = last_only ? len - 1 : 0;
            // queries: da_ts = d_t . v_s, softmax backward, dq_t = sum_s dscore_ts k_s
            for (int t = t0; t < len; t++) {
                const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                const float *d = dout + (last_only ? (size_t)b : (size_t)first + t) * C + h * hs;
                for (int s0 = 0; s0 < width; s0 += 16) {
                    float acc[16] = {0};  // a fixed-size block stays in a register across i
                    for (int i = 0; i < hs; i++)
                        for (int l = 0; l < 16; l++) acc[l] += d[i] * values_t[i * width + s0 + l];
                    memcpy(datt + s0, acc, sizeof(acc));
                }
                float weighted = 0.0f;
                for (int s = 0; s < len; s++) weighted += a[s] * datt[s];
                float *dscore = dscores + t * width;
                for (int s = 0; s < len; s++) dscore[s] = a[s] * (datt[s] - weighted) * scale;
                float *dq = drows + (size_t)t * C3 + h * hs;
                int i0 = 0;
                for (; i0 + 16 <= hs; i0 += 16) {  // whole blocks: a constant width stays in registers
                    float acc[16];
                    memcpy(acc, dq + i0, sizeof(acc));
                    for (int s = 0; s < len; s++) {
                        const float *k = rows + (size_t)s * C3 + C + h * hs + i0;
                        for (int l = 0; l < 16; l++) acc[l] += dscore[s] * k[l];
                    }
                    memcpy(dq + i0, acc, sizeof(acc));
                }
                for (; i0 < hs; i0++)  // head sizes that are not a multiple of 16
                    for (int s = 0; s < len; s++) dq[i0] += dscore[s] * rows[(size_t)s * C3 + C + h * hs + i0];
            }
            // keys and values: dk_s = sum_t dscore_ts q_t, dv_s = sum_t a_ts d_t (t in order)
            for (int s = 0; s < len; s++) {
                float *dk = drows + (size_t)s * C3 + C + h * hs;
                float *dv = drows + (size_t)s * C3 + 2 * C + h * hs;
                int i0 = 0;
                for (; i0 + 16 <= hs; i0 += 16) {
                    float acc_k[16], acc_v[16];
                    memcpy(acc_k, dk + i0, sizeof(acc_k));
                    memcpy(acc_v, dv + i0, sizeof(acc_v));
                    for (int t = t0; t < len; t++) {
                        float ds = dscores[t * width + s], a = att[(((size_t)b * NH + h) * T + t) * T + s];
                        const float *q = rows + (size_t)t * C3 + h * hs + i0;
                        const float *d = dout + (last_only ? (size_t)b : (size_t)first + t) * C + h * hs + i0;
                        for (int l = 0; l < 16; l++) {
                            acc_k[l] += ds * q[l];
                            acc_v[l] += a * d[l];
                        }
                    }
                    memcpy(dk + i0, acc_k, sizeof(acc_k));
                    memcpy(dv + i0, acc_v, sizeof(acc_v));
                }
                for (; i0 < hs; i0++) {
                    for (int t = t0; t < len; t++) {
                        dk[i0] += dscores[t * width + s] * rows[(size_t)t * C3 + h * hs + i0];
                        dv[i0] += att[(((size_t)b * NH + h) * T + t) * T + s] *
                                  dout[(last_only ? (size_t)b : (size_t)first + t) * C + h * hs + i0];
                    }
                }
            }
        }
    }
}

// Sums in 16 float lanes, then the lanes pairwise: the loop vectorizes and the order is fixed, so
// results never depend on the thread count. (A plain sum cannot vectorize without reordering.)
static inline float lanes_sum(const float *x, int n) {
    float lanes[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) lanes[l] += x[i + l];
    for (int l = 0; i < n; i++, l++) lanes[l] += x[i];
    for (int width = 8; width >= 1; width /= 2)
        for (int l = 0; l < width; l++) lanes[l] += lanes[l + width];
    return lanes[0];
}

// The same for sum((x - m)^2).
static inline float lanes_sum_squared_deviation(const float *x, float m, int n) {
    float lanes[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) lanes[l] += (x[i + l] - m) * (x[i + l] - m);
    for (int l = 0; i < n; i++, l++) lanes[l] += (x[i] - m) * (x[i] - m);
    for (int width = 8; width >= 1; width /= 2)
        for (int l = 0; l < width; l++) lanes[l] += lanes[l + width];
    return lanes[0];
}

#if defined(__AVX512F__)
// lanes_sum's last steps on one vector of 16 lane sums: halves added pairwise down to lane 0.
static inline float fold_lanes(__m512 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

// layernorm_forward's rows for C a multiple of 16 (at most 256), in registers: the same operations
// in the same order as the loops below, so the same bits.
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
#endif

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int N, int C) {
#if defined(__AVX512F__)
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
#endif
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float m = lanes_sum(x, C) / (float)C;
        float var = lanes_sum_squared_deviation(x, m, C) / (float)C;
        float s = 1.0f / sqrtf(var + 1e-5f);
        float *o = out + (size_t)n * C;
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * weight[i] + bias[i];
        mean[n] = m;
        rstd[n] = s;
    }
}

#if defined(__AVX512F__)
// layernorm_backward in one pass over the rows, for C a multiple of 16 (at most LAYERNORM_BLOCK),
// when one thread does all rows: the same operations in the same order as the loops below.
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
#endif

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int N, int C) {
#if defined(__AVX512F__)
#ifdef _OPENMP
    int one_thread = omp_in_parallel() || omp_get_max_threads() == 1;  // a worker's own rows
#else
    int one_thread = 1;
#endif
    if (one_thread && C % 16 == 0 && C <= LAYERNORM_BLOCK) {
        layernorm_backward_rows_avx512(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
        return;
    }
#endif
#pragma omp parallel
    {
        float dnorm[LAYERNORM_BLOCK], dnorm_norm[LAYERNORM_BLOCK];
        // dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = dout * weight
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *d = dout + (size_t)n * C;
            const float *x = inp + (size_t)n * C;
            float *di = dinp + (size_t)n * C;
            float m = mean[n], s = rstd[n];
            float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
            for (int c0 = 0; c0 < C; c0 += LAYERNORM_BLOCK) {
                int width = C - c0 < LAYERNORM_BLOCK ? C - c0 : LAYERNORM_BLOCK;
                for (int i = 0; i < width; i++) {
                    dnorm[i] = d[c0 + i] * weight[c0 + i];
                    dnorm_norm[i] = dnorm[i] * ((x[c0 + i] - m) * s);
                }
                dnorm_sum += lanes_sum(dnorm, width);
                dnorm_norm_sum += lanes_sum(dnorm_norm, width);
            }
            float dnorm_mean = dnorm_sum / (float)C, dnorm_norm_mean = dnorm_norm_sum / (float)C;
            for (int i = 0; i < C; i++) {
                float norm = (x[i] - m) * s;
                di[i] += s * (d[i] * weight[i] - dnorm_mean - norm * dnorm_norm_mean);
            }
        }
        // Parameter gradients reduce over rows: each thread owns a range of columns and streams the
        // rows in order, with the columns as the contiguous inner loop.
        int lo, hi;
        thread_share(C, &lo, &hi);
        for (int c0 = lo; c0 < hi; c0 += LAYERNORM_BLOCK) {
            int width = hi - c0 < LAYERNORM_BLOCK ? hi - c0 : LAYERNORM_BLOCK;
            float *dw = dnorm, *db = dnorm_norm;  // reused as accumulators
            memset(dw, 0, sizeof(float) * width);
            memset(db, 0, sizeof(float) * width);
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C + c0, *d = dout + (size_t)n * C + c0;
                float m = mean[n], s = rstd[n];
                for (int i = 0; i < width; i++) {
                    dw[i] += d[i] * ((x[i] - m) * s);
                    db[i] += d[i];
                }
            }
            for (int i = 0; i < width; i++) {
                dweight[c0 + i] += dw[i];
                dbias[c0 + i] += db[i];
            }
        }
    }
}

void residual_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void gather_residual_forward(float *out, const float *x, const int *rows, const float *y, int B, int C) {
    for (int b = 0; b < B; b++)
        for (int i = 0; i < C; i++) out[(size_t)b * C + i] = x[(size_t)rows[b] * C + i] + y[(size_t)b * C + i];
}

void scatter_rows_add(float *dx, const int *rows, const float *dout, int B, int C) {
    for (int b = 0; b < B; b++)
        for (int i = 0; i < C; i++) dx[(size_t)rows[b] * C + i] += dout[(size_t)b * C + i];
}

void relu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void relu_backward(float *dinout, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        if (inp[i] <= 0.0f) dinout[i] = 0.0f;
}

void readout_forward(float *pred, const float *inp, const int *rows, const float *weight, const float *bias, int B,
                     int C) {
    for (int b = 0; b < B; b++) {
        const float *x = inp + (size_t)(rows ? rows[b] : b) * C;
        float sum = 0.0f;
        for (int i = 0; i < C; i++) sum += x[i] * weight[i];
        pred[b] = sum + bias[0];
    }
}

void readout_backward(float *dinp, float *dweight, float *dbias, const float *dpred, const float *inp, const int *rows,
                      const float *weight, int B, int C) {
    for (int b = 0; b < B; b++) {
        const float *x = inp + (size_t)(rows ? rows[b] : b) * C;
        float *dx = dinp + (size_t)(rows ? rows[b] : b) * C;
        for (int i = 0; i < C; i++) {
            dx[i] += dpred[b] * weight[i];
            dweight[i] += dpred[b] * x[i];
        }
        dbias[0] += dpred[b];
    }
}

double mse_forward(const float *pred, const float *labels, int B) {
    double sum = 0.0;
    for (int b = 0; b < B; b++) {
        double diff = (double)pred[b] - labels[b];
        sum += diff * diff;
    }
    return sum;
}

void mse_backward(float *dpred, const float *pred, const float *labels, const float *weights, int B, float scale) {
    for (int b = 0; b < B; b++) {
        dpred[b] = 2.0f * (pred[b] - labels[b]) * scale;
        if (weights) dpred[b] *= weights[b];
    }
}
