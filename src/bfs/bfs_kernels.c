// The BFS transformer's training kernels (bfs_kernels.h): its attention with a token in each lane,
// and the squash. Compiled once per instruction set (the Makefile's variants); the sums run in one
// order with fused multiply-adds on every variant, the exponential is lanes.h's polynomial.
#include "ops/lanes.h"
#include "bfs/bfs_kernels.h"

enum { L16 = BFS_KERNEL_LANES };
#define BFS_STRING_(x) #x
#define BFS_STRING(x) BFS_STRING_(x)

static inline int min_int(int a, int b) { return a < b ? a : b; }

// Columns col .. col + n (n <= 16) of rows 0 .. T - 1 (row stride `stride`) as n vectors with the
// token in the lanes (lanes from T on zero).
static inline void columns_to_lanes(v16 *dst, const float *rows, size_t stride, int col, int n, int T) {
    v16 block[L16];
    for (int t = 0; t < L16; t++) block[t] = t < T ? v16_load_n(rows + (size_t)t * stride + col, n) : v16_zero();
    v16_transpose(block);
    for (int i = 0; i < n; i++) dst[i] = block[i];
}

// The inverse: n column vectors (token in the lanes) into columns col .. col + n of rows 0 .. T - 1,
// added to what is there (add) or written.
static inline void lanes_to_columns(float *rows, size_t stride, int col, int n, int T, const v16 *src, int add) {
    v16 block[L16];
    for (int i = 0; i < L16; i++) block[i] = i < n ? src[i] : v16_zero();
    v16_transpose(block);
    for (int t = 0; t < T; t++) {
        float *row = rows + (size_t)t * stride + col;
        v16_store_n(row, add ? v16_add(v16_load_n(row, n), block[t]) : block[t], n);
    }
}

static ALWAYS_INLINE void attention_forward_body(float *y, float *att, const float *proj, int PW, int b0, int b1,
                                                 const int T, int C, int offset, const int H, const int QK,
                                                 const int HV) {
    int qcol = 0, kcol = H * QK, vcol = 2 * H * QK;
    v16 q[BFS_KERNEL_MAX_QK + L16];  // every head's query columns, the token in the lanes
    for (int b = b0; b < b1; b++) {
        const float *rows = proj + (size_t)b * T * PW;
        v16 out[L16], score[L16];
        for (int c0 = 0; c0 < H * QK; c0 += L16)
            columns_to_lanes(q + c0, rows, (size_t)PW, qcol + c0, min_int(L16, H * QK - c0), T);
        for (int i = 0; i < HV; i++) out[i] = v16_zero();
        for (int h = 0; h < H; h++) {
            // scores q_t . k_s for every query t at once; a softmax over the keys s
            const v16 *qh = q + h * QK;
            v16 max = v16_zero();
            for (int s = 0; s < T; s++) {
                const float *ks = rows + (size_t)s * PW + kcol + h * QK;
                v16 acc = v16_zero();
                for (int c = 0; c < QK; c++) acc = v16_fma(qh[c], v16_set1(ks[c]), acc);
                score[s] = acc;
                max = s == 0 ? acc : v16_max(max, acc);
            }
            v16 sum = v16_zero();
            for (int s = 0; s < T; s++) {
                score[s] = exp_lanes(v16_sub(score[s], max));
                sum = v16_add(sum, score[s]);
            }
            v16 inv = v16_div(v16_set1(1.0f), sum);
            float *p = att + ((size_t)b * H + h) * T * L16;
            for (int s = 0; s < T; s++) {
                v16 ps = v16_mul(score[s], inv);
                v16_store(p + (size_t)s * L16, ps);
                const float *vs = rows + (size_t)s * PW + vcol + h * HV;
                for (int i = 0; i < HV; i++) out[i] = v16_fma(ps, v16_set1(vs[i]), out[i]);
            }
        }
        lanes_to_columns(y + (size_t)b * T * C, (size_t)C, offset, HV, T, out, 1);
    }
}

static ALWAYS_INLINE void attention_backward_body(float *dproj, const float *dy, const float *proj, const float *att,
                                                  int PW, int b0, int b1, const int T, int C, int offset,
                                                  const int H, const int QK, const int HV) {
    int qcol = 0, kcol = H * QK, vcol = 2 * H * QK;
    v16 dcol[2 * BFS_KERNEL_MAX_QK + L16];  // the example's q and k gradients, a vector (over tokens) per column
    for (int b = b0; b < b1; b++) {
        const float *rows = proj + (size_t)b * T * PW, *dyrows = dy + (size_t)b * T * C;
        v16 dout[L16];
        columns_to_lanes(dout, dyrows, (size_t)C, offset, HV, T);  // lane: query t
        for (int h = 0; h < H; h++) {
            const float *p = att + ((size_t)b * H + h) * T * L16;
            v16 P[L16], ds[L16];  // lane: query t
            // through the weighted sum: dp_s = dout_t . v_s; then the softmax
            // (every key's sum advances together, each in its own order: no chain waits on another)
            for (int s = 0; s < T; s++) {
                P[s] = v16_load(p + (size_t)s * L16);
                ds[s] = v16_zero();
            }
            for (int i = 0; i < HV; i++) {
                const float *vi = rows + vcol + h * HV + i;
                for (int s = 0; s < T; s++) ds[s] = v16_fma(dout[i], v16_set1(vi[(size_t)s * PW]), ds[s]);
            }
            // sum over s of p_s dp_s in three chains (s mod 3), so that the subtraction below does not
            // wait on one chain of T fused multiply-adds
            v16 part[3] = {v16_zero(), v16_zero(), v16_zero()};
            for (int s = 0; s < T; s++) part[s % 3] = v16_fma(P[s], ds[s], part[s % 3]);
            v16 dp_dot_p = v16_add(v16_add(part[0], part[1]), part[2]);
            for (int s = 0; s < T; s++) ds[s] = v16_mul(P[s], v16_sub(ds[s], dp_dot_p));
            // dq_t = sum over s of ds_ts k_s (lane: query t)
            for (int c = 0; c < QK; c++) {
                v16 acc = v16_zero();
                for (int s = 0; s < T; s++)
                    acc = v16_fma(ds[s], v16_set1(rows[(size_t)s * PW + kcol + h * QK + c]), acc);
                dcol[qcol + h * QK + c] = acc;
            }
            // dv_s = sum over t of p_ts dout_t: a row of the value's columns (lane: i), every key's sum
            // advancing together over t
            v16 dv[L16];
            for (int s = 0; s < T; s++) dv[s] = v16_zero();
            for (int t = 0; t < T; t++) {
                v16 dyt = v16_load_n(dyrows + (size_t)t * C + offset, HV);
                for (int s = 0; s < T; s++) dv[s] = v16_fma(v16_set1(p[(size_t)s * L16 + t]), dyt, dv[s]);
            }
            for (int s = 0; s < T; s++) v16_store_n(dproj + ((size_t)b * T + s) * PW + vcol + h * HV, dv[s], HV);
            // dk_s = sum over t of ds_ts q_t: key s in the lanes
            for (int s = T; s < L16; s++) ds[s] = v16_zero();
            v16_transpose(ds);
            for (int c = 0; c < QK; c++) {
                v16 acc = v16_zero();
                for (int t = 0; t < T; t++)
                    acc = v16_fma(ds[t], v16_set1(rows[(size_t)t * PW + qcol + h * QK + c]), acc);
                dcol[kcol + h * QK + c] = acc;
            }
        }
        for (int c0 = 0; c0 < 2 * H * QK; c0 += L16)  // the q and k columns
            lanes_to_columns(dproj + (size_t)b * T * PW, (size_t)PW, qcol + c0, min_int(L16, 2 * H * QK - c0), T,
                             dcol + qcol + c0, 0);
    }
}

// The kernels with the sizes constants where they are N = 8's (T = 9 tokens, the published size and
// bfs robust's; the reach heads H = 8, QK = 2, HV = 8, the record head H = 1, QK = 3, HV = 8): the
// loops unroll and their vectors stay in registers (the same sums). Measured against the token
// count alone as a constant: 1-4% more examples/s (three alternating runs of the training step).
#define BFS_SHAPES(body, ...)                                                     \
    do {                                                                          \
        if (T == 9 && H == 8 && QK == 2 && HV == 8)                               \
            body(__VA_ARGS__, 9, C, offset, 8, 2, 8);                             \
        else if (T == 9 && H == 1 && QK == 3 && HV == 8)                          \
            body(__VA_ARGS__, 9, C, offset, 1, 3, 8);                             \
        else                                                                      \
            body(__VA_ARGS__, T, C, offset, H, QK, HV);                           \
    } while (0)

static void attention_forward(float *y, float *att, const float *proj, int PW, int b0, int b1, int T, int C, int offset,
                              int H, int QK, int HV) {
    BFS_SHAPES(attention_forward_body, y, att, proj, PW, b0, b1);
}

static void attention_backward(float *dproj, const float *dy, const float *proj, const float *att, int PW, int b0,
                               int b1, int T, int C, int offset, int H, int QK, int HV) {
    BFS_SHAPES(attention_backward_body, dproj, dy, proj, att, PW, b0, b1);
}

// sigmoid(z) from e = e^-|z| <= 1, so that the exponential never overflows: 1 / (1 + e) for z > 0,
// e / (1 + e) otherwise.
static inline v16 sigmoid_lanes(v16 z) {
    v16 one = v16_set1(1.0f);
    v16 e = exp_lanes(v16_sub(v16_zero(), v16_max(z, v16_sub(v16_zero(), z))));
    v16 num = v16_add(e, v16_where_positive(z, v16_sub(one, e)));
    return v16_div(num, v16_add(one, e));
}

static const float SQUASH_GAIN = 5.0f;

static void squash_forward(float *out, const float *inp, int r0, int r1, int C, int offset, int W) {
    for (int r = r0; r < r1; r++)
        for (int c0 = 0; c0 < W; c0 += L16) {
            int n = min_int(L16, W - c0);
            size_t at = (size_t)r * C + offset + c0;
            v16 s = sigmoid_lanes(v16_mul(v16_set1(SQUASH_GAIN), v16_load_n(inp + at, n)));
            v16_store_n(out + at, v16_sub(v16_add(s, s), v16_set1(1.0f)), n);
        }
}

static void squash_backward(float *dinp, const float *dout, const float *inp, int r0, int r1, int C, int offset,
                            int W) {
    for (int r = r0; r < r1; r++)
        for (int c0 = 0; c0 < W; c0 += L16) {
            int n = min_int(L16, W - c0);
            size_t at = (size_t)r * C + offset + c0;
            v16 s = sigmoid_lanes(v16_mul(v16_set1(SQUASH_GAIN), v16_load_n(inp + at, n)));
            v16 slope = v16_mul(v16_set1(2.0f * SQUASH_GAIN), v16_mul(s, v16_sub(v16_set1(1.0f), s)));
            v16_store_n(dinp + at, v16_mul(v16_load_n(dout + at, n), slope), n);
        }
}

const BfsKernels PF_KERNEL(BFS_KERNELS) = {
    .name = BFS_STRING(PF_VARIANT),
    .attention_forward = attention_forward,
    .attention_backward = attention_backward,
    .squash_forward = squash_forward,
    .squash_backward = squash_backward,
};
