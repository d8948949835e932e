// The 16-lane float vector the kernels (gemm.c, ops_kernels.c) are written against, one definition
// per instruction set: AVX-512 (one register), AVX2 (two), ARM64 NEON (four) and plain x86-64 or
// any other target (sixteen floats, the compiler's own vectors). Every operation is exact per lane
// in IEEE single precision (add, sub, mul, div, max, fused multiply-add, rounding to an integer,
// scaling by a power of two) or only moves data, and the one horizontal sum adds its lanes in one
// fixed tree. So a kernel written once against v16 gives the same bits on every instruction set:
// the vector width changes how many instructions run, never which sums. (The Makefile compiles the
// kernels once per variant with -ffp-contract=off, so the compiler fuses nothing on its own.)
//
// A variant is chosen by the Makefile: PF_LANES_AVX512, PF_LANES_AVX2, PF_LANES_NEON or none
// (plain), with PF_VARIANT its name; PF_KERNEL(x) is x with that name appended, so that every
// variant's functions can live in one binary.
#ifndef PATHFORMER_OPS_LANES_H
#define PATHFORMER_OPS_LANES_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef PF_VARIANT
#error "the kernels are compiled once per variant: PF_VARIANT names it (see the Makefile)"
#endif
#define PF_CAT_(a, b) a##_##b
#define PF_CAT(a, b) PF_CAT_(a, b)
#define PF_KERNEL(x) PF_CAT(x, PF_VARIANT)

// Inlined wherever it is called, whatever the compiler's estimate: the kernels' helpers, whose
// constant arguments (tile heights, row counts) must fold into the caller.
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define LANES_INLINE static ALWAYS_INLINE

#if defined(PF_LANES_AVX512)
#include <immintrin.h>
typedef __m512 v16;
static inline __mmask16 lanes_mask_(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n > 0 ? n : 0)) - 1u);
}
LANES_INLINE v16 v16_zero(void) { return _mm512_setzero_ps(); }
LANES_INLINE v16 v16_set1(float x) { return _mm512_set1_ps(x); }
LANES_INLINE v16 v16_load(const float *p) { return _mm512_loadu_ps(p); }
LANES_INLINE void v16_store(float *p, v16 v) { _mm512_storeu_ps(p, v); }
LANES_INLINE v16 v16_load_n(const float *p, int n) { return _mm512_maskz_loadu_ps(lanes_mask_(n), p); }
LANES_INLINE void v16_store_n(float *p, v16 v, int n) { _mm512_mask_storeu_ps(p, lanes_mask_(n), v); }
LANES_INLINE v16 v16_add(v16 a, v16 b) { return _mm512_add_ps(a, b); }
LANES_INLINE v16 v16_sub(v16 a, v16 b) { return _mm512_sub_ps(a, b); }
LANES_INLINE v16 v16_mul(v16 a, v16 b) { return _mm512_mul_ps(a, b); }
LANES_INLINE v16 v16_div(v16 a, v16 b) { return _mm512_div_ps(a, b); }
LANES_INLINE v16 v16_max(v16 a, v16 b) { return _mm512_max_ps(a, b); }
LANES_INLINE v16 v16_fma(v16 a, v16 b, v16 c) { return _mm512_fmadd_ps(a, b, c); }
LANES_INLINE v16 v16_fnma(v16 a, v16 b, v16 c) { return _mm512_fnmadd_ps(a, b, c); }
// x rounded to the nearest integer, ties to even
LANES_INLINE v16 v16_round(v16 x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// x * 2^n for integral n in [-126, 127] (one rounding, as a multiplication by 2^n)
LANES_INLINE v16 v16_scale_pow2(v16 x, v16 n) { return _mm512_scalef_ps(x, n); }
// v where m > 0, else 0 (a NaN in m gives 0)
LANES_INLINE v16 v16_where_positive(v16 m, v16 v) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_GT_OQ), v);
}
// v in lanes below n, 0 above
LANES_INLINE v16 v16_first(v16 v, int n) { return _mm512_maskz_mov_ps(lanes_mask_(n), v); }
// Lanes 0-7 of a, then lanes 0-7 of b (two 8-lane halves in one vector)
LANES_INLINE v16 v16_join_low(v16 a, v16 b) {
    return _mm512_insertf32x8(a, _mm512_castps512_ps256(b), 1);
}
// Lanes 8-15 of v moved to 0-7, zeros above
LANES_INLINE v16 v16_high(v16 v) { return _mm512_zextps256_ps512(_mm512_extractf32x8_ps(v, 1)); }
// A 16 x 16 block transposed in registers: four rounds of lane shuffles (64 in all), far fewer
// instructions than 256 scalar copies, and no scalar stores for vector loads to wait on.
LANES_INLINE void v16_transpose(v16 r[16]) {
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
// The lanes' sum in the fixed tree: lane l + lane l + 8, then + 4, + 2, + 1.
LANES_INLINE float v16_sum(v16 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

#else  // the other variants: vectors of 16 floats in parts of the target's width
#if defined(PF_LANES_AVX2)
#include <immintrin.h>
#define LANES_PARTS 2
typedef __m256 lanes_part;
#define PART_ZERO() _mm256_setzero_ps()
#define PART_SET1(x) _mm256_set1_ps(x)
#define PART_LOAD(p) _mm256_loadu_ps(p)
#define PART_STORE(p, v) _mm256_storeu_ps(p, v)
#define PART_ADD(a, b) _mm256_add_ps(a, b)
#define PART_SUB(a, b) _mm256_sub_ps(a, b)
#define PART_MUL(a, b) _mm256_mul_ps(a, b)
#define PART_DIV(a, b) _mm256_div_ps(a, b)
#define PART_MAX(a, b) _mm256_max_ps(a, b)
#define PART_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define PART_FNMA(a, b, c) _mm256_fnmadd_ps(a, b, c)
#define PART_ROUND(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define PART_POW2(n) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23))
#define PART_WHERE_POSITIVE(m, v) _mm256_and_ps(_mm256_cmp_ps(m, _mm256_setzero_ps(), _CMP_GT_OQ), v)
#elif defined(PF_LANES_NEON)
#include <arm_neon.h>
#define LANES_PARTS 4
typedef float32x4_t lanes_part;
#define PART_ZERO() vdupq_n_f32(0.0f)
#define PART_SET1(x) vdupq_n_f32(x)
#define PART_LOAD(p) vld1q_f32(p)
#define PART_STORE(p, v) vst1q_f32(p, v)
#define PART_ADD(a, b) vaddq_f32(a, b)
#define PART_SUB(a, b) vsubq_f32(a, b)
#define PART_MUL(a, b) vmulq_f32(a, b)
#define PART_DIV(a, b) vdivq_f32(a, b)
#define PART_MAX(a, b) lanes_neon_max_(a, b)
#define PART_FMA(a, b, c) vfmaq_f32(c, a, b)
#define PART_FNMA(a, b, c) vfmsq_f32(c, a, b)
#define PART_ROUND(x) vrndnq_f32(x)
#define PART_POW2(n) vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23))
#define PART_WHERE_POSITIVE(m, v) \
    vreinterpretq_f32_u32(vandq_u32(vcgtq_f32(m, vdupq_n_f32(0.0f)), vreinterpretq_u32_f32(v)))
// x86's max: b where either is NaN or both are zeros (vmaxq would give NaN, and +0 for (+0, -0))
static inline float32x4_t lanes_neon_max_(float32x4_t a, float32x4_t b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
#else  // plain: one float per part; the compiler packs what the target allows
#define LANES_PARTS 16
typedef float lanes_part;
#define PART_ZERO() 0.0f
#define PART_SET1(x) (x)
#define PART_LOAD(p) (*(p))
#define PART_STORE(p, v) (*(p) = (v))
#define PART_ADD(a, b) ((a) + (b))
#define PART_SUB(a, b) ((a) - (b))
#define PART_MUL(a, b) ((a) * (b))
#define PART_DIV(a, b) ((a) / (b))
#define PART_MAX(a, b) ((a) > (b) ? (a) : (b))
#define PART_FMA(a, b, c) fmaf(a, b, c)
#define PART_FNMA(a, b, c) fmaf(-(a), b, c)
#define PART_ROUND(x) lanes_round_even_(x)
#define PART_POW2(n) lanes_pow2_(n)
#define PART_WHERE_POSITIVE(m, v) ((m) > 0.0f ? (v) : 0.0f)
static inline float lanes_round_even_(float x) {  // |x| < 2^22: adding 1.5 * 2^23 rounds to an integer
    float magic = 12582912.0f;
    volatile float shifted = x + magic;  // volatile: no algebra may cancel the two steps
    return shifted - magic;
}
static inline float lanes_pow2_(float n) {
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float p;
    memcpy(&p, &bits, sizeof(p));
    return p;
}
#endif

enum { PART_WIDTH = 16 / LANES_PARTS };
typedef struct {
    lanes_part p[LANES_PARTS];
} v16;

#define LANES_MAP(expr)                                      \
    v16 r;                                                   \
    for (int j = 0; j < LANES_PARTS; j++) r.p[j] = (expr);   \
    return r

LANES_INLINE v16 v16_zero(void) { LANES_MAP(PART_ZERO()); }
LANES_INLINE v16 v16_set1(float x) { LANES_MAP(PART_SET1(x)); }
LANES_INLINE v16 v16_load(const float *p) { LANES_MAP(PART_LOAD(p + j * PART_WIDTH)); }
LANES_INLINE void v16_store(float *p, v16 v) {
    for (int j = 0; j < LANES_PARTS; j++) PART_STORE(p + j * PART_WIDTH, v.p[j]);
}
#if defined(PF_LANES_AVX2)
// The first n lanes through masked loads and stores (a part's lanes from n on are neither read nor
// written; a load gives them 0).
static inline __m256i lanes_avx2_mask_(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
LANES_INLINE v16 v16_load_n(const float *p, int n) {
    if (n >= 16) return v16_load(p);
    v16 r;
    r.p[0] = n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes_avx2_mask_(n));
    r.p[1] = n > 8 ? _mm256_maskload_ps(p + 8, lanes_avx2_mask_(n - 8)) : _mm256_setzero_ps();
    return r;
}
LANES_INLINE void v16_store_n(float *p, v16 v, int n) {
    if (n >= 16) {
        v16_store(p, v);
        return;
    }
    if (n >= 8) {
        _mm256_storeu_ps(p, v.p[0]);
        if (n > 8) _mm256_maskstore_ps(p + 8, lanes_avx2_mask_(n - 8), v.p[1]);
    } else if (n > 0) {
        _mm256_maskstore_ps(p, lanes_avx2_mask_(n), v.p[0]);
    }
}
#else
LANES_INLINE v16 v16_load_n(const float *p, int n) {
    if (n >= 16) return v16_load(p);
    float buf[16] = {0};
    if (n > 0) memcpy(buf, p, sizeof(float) * (size_t)n);
    return v16_load(buf);
}
LANES_INLINE void v16_store_n(float *p, v16 v, int n) {
    if (n >= 16) {
        v16_store(p, v);
        return;
    }
    float buf[16];
    v16_store(buf, v);
    if (n > 0) memcpy(p, buf, sizeof(float) * (size_t)n);
}
#endif
LANES_INLINE v16 v16_add(v16 a, v16 b) { LANES_MAP(PART_ADD(a.p[j], b.p[j])); }
LANES_INLINE v16 v16_sub(v16 a, v16 b) { LANES_MAP(PART_SUB(a.p[j], b.p[j])); }
LANES_INLINE v16 v16_mul(v16 a, v16 b) { LANES_MAP(PART_MUL(a.p[j], b.p[j])); }
LANES_INLINE v16 v16_div(v16 a, v16 b) { LANES_MAP(PART_DIV(a.p[j], b.p[j])); }
// b where either is NaN or both are zeros, as x86's max instructions
LANES_INLINE v16 v16_max(v16 a, v16 b) { LANES_MAP(PART_MAX(a.p[j], b.p[j])); }
LANES_INLINE v16 v16_fma(v16 a, v16 b, v16 c) { LANES_MAP(PART_FMA(a.p[j], b.p[j], c.p[j])); }
LANES_INLINE v16 v16_fnma(v16 a, v16 b, v16 c) { LANES_MAP(PART_FNMA(a.p[j], b.p[j], c.p[j])); }
LANES_INLINE v16 v16_round(v16 x) { LANES_MAP(PART_ROUND(x.p[j])); }
LANES_INLINE v16 v16_scale_pow2(v16 x, v16 n) { LANES_MAP(PART_MUL(x.p[j], PART_POW2(n.p[j]))); }
LANES_INLINE v16 v16_where_positive(v16 m, v16 v) { LANES_MAP(PART_WHERE_POSITIVE(m.p[j], v.p[j])); }
// Lanes 0-7 of a, then lanes 0-7 of b (two 8-lane halves in one vector: parts move, nothing else)
LANES_INLINE v16 v16_join_low(v16 a, v16 b) { LANES_MAP(j < LANES_PARTS / 2 ? a.p[j] : b.p[j - LANES_PARTS / 2]); }
// Lanes 8-15 of v moved to 0-7, zeros above
LANES_INLINE v16 v16_high(v16 v) { LANES_MAP(j < LANES_PARTS / 2 ? v.p[j + LANES_PARTS / 2] : PART_ZERO()); }
#if defined(PF_LANES_AVX2)
LANES_INLINE v16 v16_first(v16 v, int n) {
    v.p[0] = _mm256_and_ps(v.p[0], _mm256_castsi256_ps(lanes_avx2_mask_(n)));
    v.p[1] = _mm256_and_ps(v.p[1], _mm256_castsi256_ps(lanes_avx2_mask_(n - 8)));
    return v;
}
// An 8 x 8 block transposed in registers: rows interleaved in pairs, then pairs of pairs, then the
// 128-bit halves exchanged (24 shuffles).
static inline void lanes_avx2_transpose8_(__m256 out[8], const __m256 in[8]) {
    __m256 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(in[i], in[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(in[i], in[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        out[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
        out[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
}
// 16 x 16 as four 8 x 8 blocks, each transposed, the off-diagonal two exchanged.
LANES_INLINE void v16_transpose(v16 r[16]) {
    __m256 in[4][8], out[4][8];  // blocks: rows 0-7 | 8-15, lanes 0-7 | 8-15
    for (int i = 0; i < 8; i++)
        for (int b = 0; b < 4; b++) in[b][i] = r[(b / 2) * 8 + i].p[b % 2];
    for (int b = 0; b < 4; b++) lanes_avx2_transpose8_(out[b], in[b]);
    for (int i = 0; i < 8; i++) {
        r[i].p[0] = out[0][i];
        r[i].p[1] = out[2][i];
        r[i + 8].p[0] = out[1][i];
        r[i + 8].p[1] = out[3][i];
    }
}
// The lanes' sum in the same tree as the other variants, in shuffles: lane l + lane l + 8 (the two
// parts), then + 4, + 2, + 1.
LANES_INLINE float v16_sum(v16 v) {
    __m256 a = _mm256_add_ps(v.p[0], v.p[1]);
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}
#else
LANES_INLINE v16 v16_first(v16 v, int n) {
    float buf[16];
    v16_store(buf, v);
    for (int l = n < 0 ? 0 : n; l < 16; l++) buf[l] = 0.0f;
    return v16_load(buf);
}
LANES_INLINE void v16_transpose(v16 r[16]) {
    float a[16][16], t[16][16];
    for (int i = 0; i < 16; i++) v16_store(a[i], r[i]);
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) t[j][i] = a[i][j];
    for (int i = 0; i < 16; i++) r[i] = v16_load(t[i]);
}
LANES_INLINE float v16_sum(v16 v) {
    float l[16];
    v16_store(l, v);
    for (int width = 8; width >= 1; width /= 2)
        for (int i = 0; i < width; i++) l[i] = l[i] + l[i + width];
    return l[0];
}
#endif
#endif

// e^x on 16 lanes for x <= 0 (scores minus their maximum): x = n ln2 + r with |r| <= ln2 / 2, e^r by
// its Taylor series to r^7 (truncation below 6e-9 relative), times 2^n. One polynomial, every variant
// (the encoder's attention and the BFS transformer's kernels).
LANES_INLINE v16 exp_lanes(v16 x) {
    x = v16_max(x, v16_set1(-87.0f));
    v16 n = v16_round(v16_mul(x, v16_set1(1.44269504088896341f)));
    v16 r = v16_fnma(n, v16_set1(0.693145751953125f), x);  // ln2 in two parts
    r = v16_fnma(n, v16_set1(1.42860682030941723212e-6f), r);
    v16 p = v16_set1(1.0f / 5040.0f);
    p = v16_fma(p, r, v16_set1(1.0f / 720.0f));
    p = v16_fma(p, r, v16_set1(1.0f / 120.0f));
    p = v16_fma(p, r, v16_set1(1.0f / 24.0f));
    p = v16_fma(p, r, v16_set1(1.0f / 6.0f));
    p = v16_fma(p, r, v16_set1(0.5f));
    p = v16_fma(p, r, v16_set1(1.0f));
    p = v16_fma(p, r, v16_set1(1.0f));
    return v16_scale_pow2(p, n);
}

#endif
