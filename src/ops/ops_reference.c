// The reference ops: every op of the model as plain loops, forward/backward pairs in the order a
// batch meets them (embedding, linear layers, attention, layernorm, residuals, ReLU, readout, loss),
// threaded with OpenMP. The other backends are tested against these (test_backends), and run them
// where their kernels do not fit the shapes. Sums whose order matters are written out in a fixed
// order, so results never depend on the thread count.
#include "ops/ops.h"

#include <math.h>
#include <string.h>

#include "ops/backend.h"

// ---------------------------------------------------------------------------------------------
// embedding: a token pair's row is its two tokens' embeddings side by side

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

// ---------------------------------------------------------------------------------------------
// linear layers (matmul): sums in double, as accurate as a blocked BLAS product

void ops_residual_relu_rows(float *out, const float *residual, int relu, int lo, int hi, int OC) {
    for (size_t i = (size_t)lo * OC; i < (size_t)hi * OC; i++) {
        float v = out[i];
        if (residual) v = residual[i] + v;
        out[i] = relu && v < 0.0f ? 0.0f : v;
    }
}

static void matmul_forward_reference(float *out, const float *inp, const float *weight, const float *weight_packed,
                                     const float *bias, const float *residual, int relu, int N, int C, int OC) {
#pragma omp parallel
    {
        int lo, hi;
        pf_thread_share(N, &lo, &hi);
        if (hi > lo) {
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
            if (residual || relu) ops_residual_relu_rows(out, residual, relu, lo, hi, OC);
        }
    }
}

// dbias[lo..hi) += column sums of dout (N, OC) over those columns, rows streamed in order so the
// inner loop is contiguous (and the sum order fixed: results do not depend on the thread count).
void ops_column_sums(float *dbias, const float *dout, int N, int OC, int lo, int hi) {
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

static void matmul_backward_reference(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                      const float *weight, const float *weight_rows, int N, int C, int OC) {
    (void)weight_rows;  // the kernels' layout
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
        pf_thread_share(OC, &lo, &hi);
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
        if (dbias && hi > lo) ops_column_sums(dbias, dout, N, OC, lo, hi);
    }
}

// ---------------------------------------------------------------------------------------------
// attention: over padded rows with a mask, and over packed rows (padding removed)

// e^x for x <= 0 (scores minus their maximum), the kernels' polynomial (ops_kernels.c: exp_lanes)
// one lane at a time: x = n ln2 + r, e^r by its Taylor series to r^7, times 2^n. The C library's
// expf has a variant per instruction set on x86-64; this gives the same bits everywhere.
static float exp_poly(float x) {
    x = x > -87.0f ? x : -87.0f;
    float n = nearbyintf(x * 1.44269504088896341f);
    float r = fmaf(-n, 0.693145751953125f, x);
    r = fmaf(-n, 1.42860682030941723212e-6f, r);
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    return ldexpf(p, (int)n);
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
                    float e = pad_b[s] ? 0.0f : exp_poly(a[s] - maxval);
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

// The packed reference works on one (example, head) at a time with the keys (forward) or values
// (backward) transposed into a small buffer, so that every inner loop runs over independent lanes
// (keys, or head dimensions) and vectorizes without reordering any sum. Its att is query-major:
// att[t * T + s] is query t's weight on key s.
static void attention_forward_packed_reference(float *out, float *att, const float *qkv, const float *key_counts,
                                               const int *offsets, int B, int T, int C, int NH, int last_only) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)3 * C;
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
                    a[s] = exp_poly(a[s] - maxval);
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

static void attention_backward_packed_reference(float *dqkv, const float *dout, const float *qkv, const float *att,
                                                const int *offsets, int B, int T, int C, int NH, int last_only) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)3 * C;
    memset(dqkv, 0, sizeof(float) * (size_t)offsets[B] * C3);  // written, not added to
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

// ---------------------------------------------------------------------------------------------
// layernorm

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

static void layernorm_forward_reference(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                        const float *bias, int N, int C) {
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

static void layernorm_backward_reference(float *dinp, float *dweight, float *dbias, const float *dout,
                                         const float *inp, const float *weight, const float *mean, const float *rstd,
                                         int N, int C) {
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
                di[i] = 0.0f + s * (d[i] * weight[i] - dnorm_mean - norm * dnorm_norm_mean);  // as if added to 0
            }
        }
        // Parameter gradients reduce over rows: each thread owns a range of columns and streams the
        // rows in order, with the columns as the contiguous inner loop.
        int lo, hi;
        pf_thread_share(C, &lo, &hi);
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

// ---------------------------------------------------------------------------------------------
// residuals, ReLU, readout, loss

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


const OpsBackend OPS_REFERENCE = {
    .name = "loops",
    .matmul_forward_fused = matmul_forward_reference,
    .matmul_backward = matmul_backward_reference,
    .attention_forward_packed = attention_forward_packed_reference,
    .attention_backward_packed = attention_backward_packed_reference,
    .layernorm_forward = layernorm_forward_reference,
    .layernorm_backward = layernorm_backward_reference,
};
