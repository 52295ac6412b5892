/*
 * ops.c: the engine's dense float32 kernels: linear layers through OpenBLAS (sgemm for several
 * rows, sgemv for one), LayerNorm, RMSNorm, the two GELUs and softmax. Norm statistics accumulate
 * in double so that the result is the correctly rounded float32 of the exact value wherever
 * possible (the reference agrees with a float64 forward to ~5e-6). Stateless; any thread.
 */
#include "engine.h"
#include "kernels.h"
#include "simd_x86.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

/* The AVX-512 versions below do the same arithmetic per element as the portable code (the norms'
 * sums in double, the same exp polynomial); only the order of the double sums and the FMA
 * contractions of the polynomial differ (about an ulp). They run when the kernel level is AVX-512
 * (VG_ISA can force the portable code, which test_golden_avx2/scalar then check). The decode
 * attention's dot products and weighted sums (vg_attn_scores, vg_attn_mix) sum in a different
 * order than the portable code (float32 either way; test_ops holds both to a float64 reference). */
#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))

/* g = SiLU(g) * u = g / (1 + e^-g) * u over n values. */
AVX512 static void silu_mul_avx512(float *g, const float *u, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_loadu_ps(g + i);
        __m512 e = vg_exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        __m512 y = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(y, _mm512_loadu_ps(u + i)));
    }
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        __m512 x = _mm512_maskz_loadu_ps(k, g + i);
        __m512 e = vg_exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        __m512 y = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(g + i, k, _mm512_mul_ps(y, _mm512_maskz_loadu_ps(k, u + i)));
    }
}

/* silu_mul_avx512's values, 32 at a time, rounded to bf16 as to_bf16_avx512 rounds them (the same
 * instructions per lane, so bit for bit silu_mul then vg_to_bf16). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static size_t
silu_mul_b16_avx512(const float *g, const float *u, size_t n, uint16_t *out)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 y[2];
        for (int h = 0; h < 2; h++) {
            __m512 x = _mm512_loadu_ps(g + i + 16 * h);
            __m512 e = vg_exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
            __m512 s = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
            y[h] = _mm512_mul_ps(s, _mm512_loadu_ps(u + i + 16 * h));
        }
        _mm512_storeu_si512((void *)(out + i), (__m512i)_mm512_cvtne2ps_pbh(y[1], y[0]));
    }
    return i;
}

AVX512 static void gelu_tanh_avx512(float *x, size_t n)
{
    const __m512 k2 = _mm512_set1_ps(-2.0f * 0.7978845608028654f), c = _mm512_set1_ps(0.044715f);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 u = _mm512_mul_ps(
            _mm512_add_ps(v, _mm512_mul_ps(_mm512_mul_ps(c, v), _mm512_mul_ps(v, v))), k2);
        _mm512_mask_storeu_ps(x + i, k,
                              _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), vg_exp16(u))));
    }
}

AVX512 static void add_avx512(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(
            y + i, k,
            _mm512_add_ps(_mm512_maskz_loadu_ps(k, y + i), _mm512_maskz_loadu_ps(k, x + i)));
    }
}

/* Sum of the d values of r (squared when sq) in double, 16 per step. */
AVX512 static double sum_pd(const float *r, size_t d, int sq, double sub)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    const __m512d m = _mm512_set1_pd(sub);
    size_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m512 v = _mm512_loadu_ps(r + j);
        __m512d lo = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), m);
        __m512d hi = _mm512_sub_pd(
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))), m);
        a0 = sq ? _mm512_fmadd_pd(lo, lo, a0) : _mm512_add_pd(a0, lo);
        a1 = sq ? _mm512_fmadd_pd(hi, hi, a1) : _mm512_add_pd(a1, hi);
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
    for (; j < d; j++) {
        double t = r[j] - sub;
        s += sq ? t * t : t;
    }
    return s;
}

/* o[j] = (float)((r[j] - mean) * inv) * w[j] (+ b[j]), the conversions as in the portable code. */
AVX512 static void norm_out(const float *r, float *o, size_t d, double mean, double inv,
                            const float *w, const float *b)
{
    const __m512d m = _mm512_set1_pd(mean), s = _mm512_set1_pd(inv);
    size_t j = 0;
    for (; j + 8 <= d; j += 8) {
        __m512d x = _mm512_cvtps_pd(_mm256_loadu_ps(r + j));
        __m256 f = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_sub_pd(x, m), s));
        f = _mm256_mul_ps(f, _mm256_loadu_ps(w + j));
        if (b)
            f = _mm256_add_ps(f, _mm256_loadu_ps(b + j));
        _mm256_storeu_ps(o + j, f);
    }
    for (; j < d; j++) {
        float f = (float)((r[j] - mean) * inv) * w[j];
        o[j] = b ? f + b[j] : f;
    }
}

AVX512 static void layernorm_avx512(const float *x, float *y, size_t n, size_t d, const float *w,
                                    const float *b, float eps)
{
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * d;
        double mean = sum_pd(r, d, 0, 0.0) / (double)d;
        double v = sum_pd(r, d, 1, mean);
        norm_out(r, y + i * d, d, mean, 1.0 / sqrt(v / (double)d + eps), w, b);
    }
}

/* RMSNorm's o[j] = w[j] * (float)(r[j] * inv). */
AVX512 static void rmsnorm_avx512(const float *x, float *y, size_t n, size_t d, const float *w,
                                  float eps)
{
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * d;
        float *o = y + i * d;
        double inv = 1.0 / sqrt(sum_pd(r, d, 1, 0.0) / (double)d + eps);
        const __m512d s = _mm512_set1_pd(inv);
        size_t j = 0;
        for (; j + 8 <= d; j += 8) {
            __m256 f = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(r + j)), s));
            _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), f));
        }
        for (; j < d; j++)
            o[j] = w[j] * (float)(r[j] * inv);
    }
}

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));

static inline v4f vsel(v4i m, v4f a, v4f b)
{
    return (v4f)((m & (v4i)a) | (~m & (v4i)b));
}

/* e^x for 4 lanes: 0 below -87, x clamped to 88 above (never inf or a denormal); NaN stays NaN. */
static inline v4f exp4(v4f x)
{
    const v4f lo = {-87.0f, -87.0f, -87.0f, -87.0f}, hi = {88.0f, 88.0f, 88.0f, 88.0f};
    const v4i under = x < lo; /* e^x < 2^-125: flushed to 0 like expf's tiny results */
    x = vsel(under, lo, x);
    x = vsel(x > hi, hi, x);
    v4f n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
    v4f r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    v4f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    v4u e = (v4u)(__builtin_convertvector(n, v4i) + 127) << 23; /* unsigned: no UB for NaN */
    const v4f zero = {0.0f, 0.0f, 0.0f, 0.0f};
    return vsel(under, zero, p * (v4f)e);
}

static inline v4f load4(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void store4(float *p, v4f v)
{
    memcpy(p, &v, sizeof(v));
}

static inline float exp1(float x)
{
    v4f v = {x, 0.0f, 0.0f, 0.0f};
    return exp4(v)[0];
}

void vg_silu_mul_b16(const float *g, const float *u, size_t n, uint16_t *out)
{
    size_t i = vg_isa_level() >= VG_ISA_AVX512 ? silu_mul_b16_avx512(g, u, n, out) : 0;
    float tmp[256]; /* the rest (or every level below AVX-512): the float path, then rounded */
    for (; i < n; i += VG_ARRAY_LEN(tmp)) {
        const size_t len = VG_MIN(VG_ARRAY_LEN(tmp), n - i);
        memcpy(tmp, g + i, len * sizeof(float));
        vg_silu_mul(tmp, u + i, len);
        vg_to_bf16(tmp, len, out + i);
    }
}

void vg_silu_mul(float *g, const float *u, size_t n)
{
    if (vg_isa_level() >= VG_ISA_AVX512) {
        silu_mul_avx512(g, u, n);
        return;
    }
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f x = load4(g + i);
        store4(g + i, x / (1.0f + exp4(-x)) * load4(u + i));
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + exp1(-g[i])) * u[i];
}

void vg_add(float *y, const float *x, size_t n)
{
    if (vg_isa_level() >= VG_ISA_AVX512) {
        add_avx512(y, x, n);
        return;
    }
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        store4(y + i, load4(y + i) + load4(x + i));
    for (; i < n; i++)
        y[i] += x[i];
}

void vg_add_rows(float *y, size_t n, size_t ld, size_t N, const float *b)
{
    for (size_t i = 0; b && i < n; i++)
        vg_add(y + i * ld, b, N);
}

typedef struct linear_job {
    const float *x, *w, *b;
    float *y;
    size_t n, in, out, ldy, parts;
} linear_job;

/* Part i of the output columns, whole multiples of 16 (the last part takes the rest). */
static void linear_task(void *arg, size_t i)
{
    const linear_job *j = arg;
    const size_t units = (j->out + 15) / 16;
    const size_t c0 = units * i / j->parts * 16;
    const size_t c1 = VG_MIN(units * (i + 1) / j->parts * 16, j->out);
    if (c0 >= c1)
        return;
    const float *w = j->w + c0 * j->in;
    if (j->n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)(c1 - c0), (int)j->in, 1.0f, w, (int)j->in,
                    j->x, 1, 0.0f, j->y + c0, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->n, (int)(c1 - c0), (int)j->in,
                    1.0f, j->x, (int)j->in, w, (int)j->in, 0.0f, j->y + c0, (int)j->ldy);
    for (size_t r = 0; j->b && r < j->n; r++)
        vg_add(j->y + r * j->ldy + c0, j->b + c0, c1 - c0);
}

void vg_linear_pool(vg_pool *p, const float *x, size_t n, size_t in, const float *w, const float *b,
                    size_t out, float *y, size_t ldy)
{
    if (n == 0 || out == 0)
        return;
    const size_t nt = (size_t)vg_pool_threads(p);
    linear_job j = {.x = x, .w = w, .b = b, .y = y, .n = n, .in = in, .out = out, .ldy = ldy};
    /* under about a million multiply-adds a region costs more than it saves */
    if (nt <= 1 || n * in * out < ((size_t)1 << 20) || out < 32 * nt) {
        j.parts = 1;
        linear_task(&j, 0);
        return;
    }
    /* sgemm: one part per thread (each part packs all of x again); sgemv: a few per thread, so
     * that a descheduled thread holds up little */
    j.parts = n == 1 ? VG_POOL_SPLIT * nt : nt;
    vg_pool_run(p, j.parts, linear_task, &j);
}

void vg_linear(const float *x, size_t n, size_t in, const float *w, const float *b, size_t out,
               float *y)
{
    vg_linear_pool(NULL, x, n, in, w, b, out, y, out); /* one call on this thread */
}

void vg_layernorm(const float *x, float *y, size_t n, size_t d, const float *w, const float *b,
                  float eps)
{
    if (vg_isa_level() >= VG_ISA_AVX512) {
        layernorm_avx512(x, y, n, d, w, b, eps);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * d;
        float *o = y + i * d;
        double s = 0.0;
        for (size_t j = 0; j < d; j++)
            s += r[j];
        double mean = s / (double)d;
        double v = 0.0;
        for (size_t j = 0; j < d; j++) {
            double t = r[j] - mean;
            v += t * t;
        }
        double inv = 1.0 / sqrt(v / (double)d + eps);
        for (size_t j = 0; j < d; j++)
            o[j] = (float)((r[j] - mean) * inv) * w[j] + b[j];
    }
}

void vg_rmsnorm(const float *x, float *y, size_t n, size_t d, const float *w, float eps)
{
    if (vg_isa_level() >= VG_ISA_AVX512) {
        rmsnorm_avx512(x, y, n, d, w, eps);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * d;
        float *o = y + i * d;
        double s = 0.0;
        for (size_t j = 0; j < d; j++)
            s += (double)r[j] * r[j];
        double inv = 1.0 / sqrt(s / (double)d + eps);
        for (size_t j = 0; j < d; j++)
            o[j] = w[j] * (float)(r[j] * inv);
    }
}

void vg_gelu_tanh(float *x, size_t n)
{
    /* 0.5 x (1 + tanh(u)) == x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3) */
    const float k2 = 2.0f * 0.7978845608028654f;
    if (vg_isa_level() >= VG_ISA_AVX512) {
        gelu_tanh_avx512(x, n);
        return;
    }
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v = load4(x + i);
        v4f u = (v + 0.044715f * v * v * v) * -k2;
        store4(x + i, v / (1.0f + exp4(u)));
    }
    for (; i < n; i++) {
        float v = x[i];
        x[i] = v / (1.0f + exp1(-k2 * (v + 0.044715f * v * v * v)));
    }
}

void vg_gelu_erf(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

void vg_softmax(float *x, size_t n)
{
    if (n == 0)
        return;
    size_t i = 0;
    float mx = x[0];
    if (n >= 4) {
        v4f m4 = load4(x);
        for (i = 4; i + 4 <= n; i += 4) {
            v4f v = load4(x + i);
            m4 = vsel(v > m4, v, m4);
        }
        for (int k = 0; k < 4; k++)
            mx = m4[k] > mx ? m4[k] : mx;
    }
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    /* float partial sums per lane, combined in double */
    v4f s4 = {0.0f, 0.0f, 0.0f, 0.0f};
    double s = 0.0;
    for (i = 0; i + 4 <= n; i += 4) {
        v4f e = exp4(load4(x + i) - mx);
        store4(x + i, e);
        s4 += e;
        if ((i & 1023) == 1020) { /* flush every 256 vectors to bound the float error */
            s += (double)s4[0] + s4[1] + s4[2] + s4[3];
            s4 = (v4f){0.0f, 0.0f, 0.0f, 0.0f};
        }
    }
    s += (double)s4[0] + s4[1] + s4[2] + s4[3];
    for (; i < n; i++) {
        x[i] = exp1(x[i] - mx);
        s += x[i];
    }
    float inv = (float)(1.0 / s);
    for (i = 0; i + 4 <= n; i += 4)
        store4(x + i, load4(x + i) * inv);
    for (; i < n; i++)
        x[i] *= inv;
}

/* ---- decode attention over one KV head, float32 or bf16 rows ---- */

/* Element i of a cached row: float32, or bf16 (b16) widened exactly. The kernels below take b16 as
 * a constant from their two wrappers, so each is compiled twice without a branch inside. */
static inline float kv_elem(const void *row, size_t i, int b16)
{
    return b16 ? vg_bf16_to_f32(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

static inline const void *kv_row(const void *base, size_t t, size_t hd, int b16)
{
    return (const unsigned char *)base + t * hd * (b16 ? 2 : 4);
}

/* The cached rows' bytes [0, n) seen ATT_PF bytes ahead, into L2: the attention of one decode step
 * streams each head's keys and values once, as the GEMVs stream the weights (kernels_x86.c,
 * BF16_PF). 2B q8_0 at 1 thread, alternating (Xeon of 2026-12-07): decode after 8k 5.80-5.87 ->
 * 6.23-6.24 tok/s, after 1k 8.75-8.86 -> 9.02-9.03. Prefetches never fault, past the cache's end
 * included. */
#define ATT_PF 4096
AVX512 static inline void kv_prefetch(const void *p, size_t n)
{
    const size_t line = vg_pf_stride; /* kernels.h */
    for (size_t o = 0; o < n; o += line)
        _mm_prefetch((const char *)p + ATT_PF + o, _MM_HINT_T1);
}

/* 16 elements of a cached row from element i. */
AVX512 static inline __m512 kv_load16(const void *row, size_t i, int b16)
{
    if (b16)
        return vg_load_bf16x16((const uint16_t *)row + i);
    return _mm512_loadu_ps((const float *)row + i);
}

/* The sums of the 16 lanes of a0..a3, as 4 floats in that order: pairs of lanes, then the four
 * vectors' 128-bit quarters side by side, then the quarters (one tree for all four, instead of
 * four horizontal reductions). */
AVX512 static inline __m128 hsum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3)
{
    const __m512 b0 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    const __m512 b1 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    const __m512 c = _mm512_add_ps(_mm512_shuffle_ps(b0, b1, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 d = _mm512_add_ps(c, _mm512_shuffle_f32x4(c, c, _MM_SHUFFLE(2, 3, 0, 1)));
    const __m512 e = _mm512_add_ps(d, _mm512_shuffle_f32x4(d, d, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm512_castps512_ps128(e);
}

/* Scores of keys t..t+T for G query heads (G * T accumulators, one per head and key, in
 * registers): each 16-value chunk of a key row is widened once for the G heads. */
#define SCORES_TILE(G, T)                                                                          \
    do {                                                                                           \
        __m512 acc[(G) * (T)];                                                                     \
        _Pragma("GCC unroll 16") for (int u = 0; u < (G) * (T); u++) acc[u] = _mm512_setzero_ps(); \
        kv_prefetch(kv_row(k, t, hd, b16), (T)*hd *(b16 ? 2 : 4));                                 \
        for (size_t j = 0; j < hd; j += 16) {                                                      \
            __m512 qv[G];                                                                          \
            _Pragma("GCC unroll 4") for (int g = 0; g < (G); g++) qv[g] =                          \
                _mm512_loadu_ps(q + (size_t)g * hd + j);                                           \
            _Pragma("GCC unroll 16") for (int i = 0; i < (T); i++)                                 \
            {                                                                                      \
                const __m512 kv = kv_load16(kv_row(k, t + (size_t)i, hd, b16), j, b16);            \
                _Pragma("GCC unroll 4") for (int g = 0; g < (G); g++) acc[g * (T) + i] =           \
                    _mm512_fmadd_ps(qv[g], kv, acc[g * (T) + i]);                                  \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 4") for (int g = 0; g < (G); g++)                                      \
            _Pragma("GCC unroll 4") for (int i = 0; i < (T); i += 4)                               \
                _mm_storeu_ps(scores + (size_t)g * ctx + t + (size_t)i,                            \
                              _mm_mul_ps(hsum4(acc[g * (T) + i], acc[g * (T) + i + 1],             \
                                               acc[g * (T) + i + 2], acc[g * (T) + i + 3]),        \
                                         _mm_set1_ps(scale)));                                     \
    } while (0)

/* AVX-512 (hd a multiple of 16): keys in tiles of 16 / grp (grp 1, 2 or 4: 16 accumulators),
 * each cached key row read once for the grp query heads sharing it; the remaining keys (and
 * other group sizes) one at a time, two accumulators per head. */
AVX512 __attribute__((always_inline)) static inline void
attn_scores_avx512(const float *q, size_t grp, const void *k, size_t ctx, size_t hd, float scale,
                   float *scores, int b16)
{
    size_t t = 0;
    if (grp == 1)
        for (; t + 16 <= ctx; t += 16)
            SCORES_TILE(1, 16);
    else if (grp == 2)
        for (; t + 8 <= ctx; t += 8)
            SCORES_TILE(2, 8);
    else if (grp == 4)
        for (; t + 4 <= ctx; t += 4)
            SCORES_TILE(4, 4);
    for (; t < ctx; t++) {
        const void *kr = kv_row(k, t, hd, b16);
        for (size_t g = 0; g < grp; g++) {
            const float *qr = q + g * hd;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            size_t j = 0;
            for (; j + 32 <= hd; j += 32) {
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qr + j), kv_load16(kr, j, b16), a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(qr + j + 16), kv_load16(kr, j + 16, b16), a1);
            }
            if (j < hd)
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qr + j), kv_load16(kr, j, b16), a0);
            scores[g * ctx + t] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) * scale;
        }
    }
}

/* Columns c..c + 16 U of out[g] for G heads (G * U accumulators in registers), each value row's
 * chunk read once for the G heads. */
#define MIX_TILE(G, U)                                                                             \
    do {                                                                                           \
        __m512 acc[(G) * (U)];                                                                     \
        _Pragma("GCC unroll 16") for (int a = 0; a < (G) * (U); a++) acc[a] = _mm512_setzero_ps(); \
        for (size_t t = 0; t < ctx; t++) {                                                         \
            const void *vr = kv_row(v, t, hd, b16);                                                \
            kv_prefetch((const unsigned char *)vr + c * (b16 ? 2 : 4), 16 * (U) * (b16 ? 2 : 4));  \
            __m512 w[G];                                                                           \
            _Pragma("GCC unroll 4") for (int g = 0; g < (G); g++) w[g] =                           \
                _mm512_set1_ps(p[(size_t)g * ctx + t]);                                            \
            _Pragma("GCC unroll 16") for (int u = 0; u < (U); u++)                                 \
            {                                                                                      \
                const __m512 vv = kv_load16(vr, c + 16 * (size_t)u, b16);                          \
                _Pragma("GCC unroll 4") for (int g = 0; g < (G); g++) acc[g * (U) + u] =           \
                    _mm512_fmadd_ps(w[g], vv, acc[g * (U) + u]);                                   \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 4") for (int g = 0; g < (G); g++)                                      \
            _Pragma("GCC unroll 16") for (int u = 0; u < (U); u++)                                 \
                _mm512_storeu_ps(out + (size_t)g * hd + c + 16 * (size_t)u, acc[g * (U) + u]);     \
    } while (0)

/* out[g][:] = sum_t p[g][t] v[t][:] (grp <= 4, hd a multiple of 64) in column chunks held in
 * registers, as wide as 16 accumulators allow (one head: 256 columns, two: 128, else 64), so that
 * a head size of 128 reads each value row once, in one pass, for grp <= 2. Every output sums over
 * t in order, whatever the chunk width. */
AVX512 __attribute__((always_inline)) static inline void attn_mix_avx512(const float *p, size_t grp,
                                                                         const void *v, size_t ctx,
                                                                         size_t hd, float *out,
                                                                         int b16)
{
    size_t c = 0;
    if (grp == 1)
        for (; c + 256 <= hd; c += 256)
            MIX_TILE(1, 16);
    else if (grp == 2)
        for (; c + 128 <= hd; c += 128)
            MIX_TILE(2, 8);
    for (; c < hd; c += 64) {
        if (grp == 1)
            MIX_TILE(1, 4);
        else if (grp == 2)
            MIX_TILE(2, 4);
        else if (grp == 3)
            MIX_TILE(3, 4);
        else
            MIX_TILE(4, 4);
    }
}

/* The portable forms: four lanes, the same for both element types. */
__attribute__((always_inline)) static inline void attn_scores_port(const float *q, size_t grp,
                                                                   const void *k, size_t ctx,
                                                                   size_t hd, float scale,
                                                                   float *scores, int b16)
{
    for (size_t t = 0; t < ctx; t++) {
        const void *kr = kv_row(k, t, hd, b16);
        for (size_t g = 0; g < grp; g++) {
            const float *qr = q + g * hd;
            v4f acc = {0.0f, 0.0f, 0.0f, 0.0f};
            size_t j = 0;
            for (; j + 4 <= hd; j += 4) {
                v4f kv = {kv_elem(kr, j, b16), kv_elem(kr, j + 1, b16), kv_elem(kr, j + 2, b16),
                          kv_elem(kr, j + 3, b16)};
                acc += load4(qr + j) * kv;
            }
            float sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
            for (; j < hd; j++)
                sum += qr[j] * kv_elem(kr, j, b16);
            scores[g * ctx + t] = sum * scale;
        }
    }
}

__attribute__((always_inline)) static inline void
attn_mix_port(const float *p, size_t grp, const void *v, size_t ctx, size_t hd, float *out, int b16)
{
    memset(out, 0, grp * hd * sizeof(float));
    for (size_t t = 0; t < ctx; t++) {
        const void *vr = kv_row(v, t, hd, b16);
        for (size_t g = 0; g < grp; g++) {
            const float w = p[g * ctx + t];
            float *o = out + g * hd;
            size_t j = 0;
            for (; j + 4 <= hd; j += 4) {
                v4f vv = {kv_elem(vr, j, b16), kv_elem(vr, j + 1, b16), kv_elem(vr, j + 2, b16),
                          kv_elem(vr, j + 3, b16)};
                store4(o + j, load4(o + j) + w * vv);
            }
            for (; j < hd; j++)
                o[j] += w * kv_elem(vr, j, b16);
        }
    }
}

AVX512 static void attn_scores_f32_avx512(const float *q, size_t grp, const void *k, size_t ctx,
                                          size_t hd, float scale, float *scores)
{
    attn_scores_avx512(q, grp, k, ctx, hd, scale, scores, 0);
}

AVX512 static void attn_scores_b16_avx512(const float *q, size_t grp, const void *k, size_t ctx,
                                          size_t hd, float scale, float *scores)
{
    attn_scores_avx512(q, grp, k, ctx, hd, scale, scores, 1);
}

AVX512 static void attn_mix_f32_avx512(const float *p, size_t grp, const void *v, size_t ctx,
                                       size_t hd, float *out)
{
    attn_mix_avx512(p, grp, v, ctx, hd, out, 0);
}

AVX512 static void attn_mix_b16_avx512(const float *p, size_t grp, const void *v, size_t ctx,
                                       size_t hd, float *out)
{
    attn_mix_avx512(p, grp, v, ctx, hd, out, 1);
}

void vg_attn_scores(const float *q, size_t grp, const float *k, size_t ctx, size_t hd, float scale,
                    float *scores)
{
    if (vg_isa_level() >= VG_ISA_AVX512 && hd % 16 == 0)
        attn_scores_f32_avx512(q, grp, k, ctx, hd, scale, scores);
    else
        attn_scores_port(q, grp, k, ctx, hd, scale, scores, 0);
}

void vg_attn_mix(const float *p, size_t grp, const float *v, size_t ctx, size_t hd, float *out)
{
    if (vg_isa_level() >= VG_ISA_AVX512 && grp <= 4 && hd % 64 == 0)
        attn_mix_f32_avx512(p, grp, v, ctx, hd, out);
    else
        attn_mix_port(p, grp, v, ctx, hd, out, 0);
}

/* The bf16 forms are the float32 ones on the widened values, operation for operation, so that a
 * bf16 cache gives at each level what a float32 cache holding the same values gives (test_ops
 * checks this bit for bit). */
void vg_attn_scores_bf16(const float *q, size_t grp, const uint16_t *k, size_t ctx, size_t hd,
                         float scale, float *scores)
{
    if (vg_isa_level() >= VG_ISA_AVX512 && hd % 16 == 0)
        attn_scores_b16_avx512(q, grp, k, ctx, hd, scale, scores);
    else
        attn_scores_port(q, grp, k, ctx, hd, scale, scores, 1);
}

void vg_attn_mix_bf16(const float *p, size_t grp, const uint16_t *v, size_t ctx, size_t hd,
                      float *out)
{
    if (vg_isa_level() >= VG_ISA_AVX512 && grp <= 4 && hd % 64 == 0)
        attn_mix_b16_avx512(p, grp, v, ctx, hd, out);
    else
        attn_mix_port(p, grp, v, ctx, hd, out, 1);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void
to_bf16_avx512(const float *x, size_t n, uint16_t *out)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512((void *)(out + i), (__m512i)v);
    }
    for (; i < n; i++)
        out[i] = vg_f32_to_bf16(x[i]);
}

void vg_to_bf16(const float *x, size_t n, uint16_t *out)
{
    if (vg_isa_level() >= VG_ISA_AVX512) {
        to_bf16_avx512(x, n, out);
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = vg_f32_to_bf16(x[i]);
}

AVX512 static void from_bf16_avx512(const uint16_t *x, size_t n, float *out)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, kv_load16(x, i, 1));
    for (; i < n; i++)
        out[i] = vg_bf16_to_f32(x[i]);
}

void vg_from_bf16(const uint16_t *x, size_t n, float *out)
{
    if (vg_isa_level() >= VG_ISA_AVX512) {
        from_bf16_avx512(x, n, out);
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = vg_bf16_to_f32(x[i]);
}
