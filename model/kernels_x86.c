/*
 * kernels_x86.c: the AVX2+FMA+F16C and AVX-512 (F/BW/VL/DQ + BF16 + VNNI) kernels of kernels.h.
 *
 * Each function carries its own target attribute, so the file is built for baseline x86-64 and the
 * binary runs anywhere; cpu.c decides at run time which table (vg_kernels_avx2, vg_kernels_avx512)
 * may be called. Both compute exactly the scalar kernels' function (kernels.c), differing only in
 * the order of float additions:
 *  - bf16: a bf16 value widened to float32 is the value shifted left by 16 bits, so a 32-bit lane
 *    holding two bf16 gives its even element by a shift and its odd element by masking off the low
 *    half. The activation is pre-split (bf16_prep) into the even and odd elements of each chunk, so
 *    the inner loop is load, shift, and, two FMAs: no cross-lane conversion.
 *  - q8_0: the sign trick (|w| as unsigned bytes times x with w's sign) turns the s8 x s8 dot into
 *    the u8 x s8 form of VPDPBUSD (AVX-512 VNNI) or VPMADDUBSW + VPMADDWD (AVX2); |w| <= 127 and
 *    |x| <= 127 keep VPMADDUBSW's 16-bit pair sums from saturating. The AVX-512 GEMV instead flips
 *    w's sign bit (w + 128, unsigned) and starts each lane's sum at -128 * that lane's x sum
 *    (tabled once per call up to K = 16384): the same exact int32, in fewer operations. Each
 * block's int32 dot becomes a float and is scaled by w_scale * x_scale with an FMA. The
 * several-rows kernels (bf16_gemm, q8_gemm) read each packed group once per call and apply it to
 * VG_GEMM_MR x rows per pass: AVX-512 bf16 with VDPBF16PS on x rounded to bf16 (16 accumulators:
 * four weight rows by four x rows), q8_0 with VPDPBUSD on x biased to unsigned bytes (q + 128; the
 * accumulator starts at -128 * sum(w), so the int32 dot is the same exact value as the sign
 * trick's), the AVX2 ones with the 1-row kernel's operations per x row. q8_gemm returns bit for bit
 * what q8_gemv of the same level returns row by row. Pure functions; any thread.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_AVX512                                                                                   \
    __attribute__((                                                                                \
        target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni")))

static inline size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* ================================ AVX2 ================================ */

T_AVX2 static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Per 16-column half-chunk: the 8 even elements, then the 8 odd ones. */
T_AVX2 static void bf16_prep_avx2(const float *x, size_t K, float *xp)
{
    for (size_t c = 0; c < K; c += 16)
        for (int j = 0; j < 8; j++) {
            xp[c + (size_t)j] = x[c + 2 * (size_t)j];
            xp[c + 8 + (size_t)j] = x[c + 2 * (size_t)j + 1];
        }
}

/* Row r of the group: 32 bf16 at s + r * 32 against the chunk's even/odd x halves. The
 * accumulators are named variables (an array indexed in a loop ends up on the stack at -O2). */
#define BF16_ROW_AVX2(r, e, o)                                                                     \
    do {                                                                                           \
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(const void *)(s + (r)*VG_QK));           \
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(const void *)(s + (r)*VG_QK + 16));      \
        e = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), xe0, e);               \
        o = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v0, hi)), xo0, o);                \
        e = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), xe1, e);               \
        o = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v1, hi)), xo1, o);                \
    } while (0)

T_AVX2 static void bf16_gemv_avx2(const uint16_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                                  const float *xp, float *y)
{
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    for (size_t g = g0; g < g1; g++) {
        const uint16_t *grp = w + g * VG_PACK_ROWS * K;
        __m256 e0 = _mm256_setzero_ps(), e1 = e0, e2 = e0, e3 = e0;
        __m256 o0 = e0, o1 = e0, o2 = e0, o3 = e0;
        for (size_t c = 0; c < K / VG_QK; c++) {
            const float *xc = xp + c * VG_QK;
            const __m256 xe0 = _mm256_loadu_ps(xc), xo0 = _mm256_loadu_ps(xc + 8);
            const __m256 xe1 = _mm256_loadu_ps(xc + 16), xo1 = _mm256_loadu_ps(xc + 24);
            const uint16_t *s = grp + c * VG_PACK_ROWS * VG_QK;
            BF16_ROW_AVX2(0, e0, o0);
            BF16_ROW_AVX2(1, e1, o1);
            BF16_ROW_AVX2(2, e2, o2);
            BF16_ROW_AVX2(3, e3, o3);
        }
        const float out[VG_PACK_ROWS] = {
            hsum256(_mm256_add_ps(e0, o0)), hsum256(_mm256_add_ps(e1, o1)),
            hsum256(_mm256_add_ps(e2, o2)), hsum256(_mm256_add_ps(e3, o3))};
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            size_t row = g * VG_PACK_ROWS + (size_t)r;
            if (row < rows)
                y[row] = out[r];
        }
    }
}

#define Q8_ROW_AVX2(r, acc)                                                                        \
    do {                                                                                           \
        __m256i wv = _mm256_loadu_si256((const __m256i *)(const void *)(q + (r)*VG_QK));           \
        __m256i p = _mm256_madd_epi16(                                                             \
            _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv)), ones);       \
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),                                               \
                              _mm256_permutevar8x32_ps(s8, _mm256_set1_epi32(r)), acc);            \
    } while (0)

T_AVX2 static void q8_gemv_avx2(const int8_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                                const int8_t *xq, const float *xd, float *y)
{
    const size_t gb = vg_pack_group_bytes_q8(K), nb = K / VG_QK;
    const __m256i ones = _mm256_set1_epi16(1);
    for (size_t g = g0; g < g1; g++) {
        const int8_t *grp = w + g * gb;
        const uint16_t *sc = (const uint16_t *)(const void *)(grp + (size_t)VG_PACK_ROWS * K);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t b = 0; b < nb; b++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)(xq + b * VG_QK));
            __m128 s4 = _mm_cvtph_ps(
                _mm_loadl_epi64((const __m128i *)(const void *)(sc + b * VG_PACK_ROWS)));
            const __m256 s8 = _mm256_castps128_ps256(_mm_mul_ps(s4, _mm_set1_ps(xd[b])));
            const int8_t *q = grp + b * VG_PACK_ROWS * VG_QK;
            Q8_ROW_AVX2(0, a0);
            Q8_ROW_AVX2(1, a1);
            Q8_ROW_AVX2(2, a2);
            Q8_ROW_AVX2(3, a3);
        }
        const float out[VG_PACK_ROWS] = {hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)};
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            size_t row = g * VG_PACK_ROWS + (size_t)r;
            if (row < rows)
                y[row] = out[r];
        }
    }
}

/* ---- AVX2: several activation rows ---- */

/* x rounded to bf16, then laid out per row as bf16_prep_avx2 does. */
T_AVX2 static void bf16_prep_n_avx2(const float *x, size_t n, size_t K, float *xp)
{
    for (size_t i = 0; i < n; i++) {
        float *t = xp + i * K;
        vg_bf16_round(x + i * K, K, t);
        for (size_t c = 0; c < K; c += 16) {
            float tmp[16];
            for (int j = 0; j < 16; j++)
                tmp[j] = t[c + (size_t)j];
            for (int j = 0; j < 8; j++) {
                t[c + (size_t)j] = tmp[2 * j];
                t[c + 8 + (size_t)j] = tmp[2 * j + 1];
            }
        }
    }
}

/* One x row's FMAs against the widened chunk of a weight row (the 1-row kernel's order). */
#define BF16_X_AVX2(xr, e, o)                                                                      \
    do {                                                                                           \
        const float *xc = (xr) + c * VG_QK;                                                        \
        e = _mm256_fmadd_ps(we0, _mm256_loadu_ps(xc), e);                                          \
        o = _mm256_fmadd_ps(wo0, _mm256_loadu_ps(xc + 8), o);                                      \
        e = _mm256_fmadd_ps(we1, _mm256_loadu_ps(xc + 16), e);                                     \
        o = _mm256_fmadd_ps(wo1, _mm256_loadu_ps(xc + 24), o);                                     \
    } while (0)

/* Weight row by weight row of the group (16 registers: one row's chunk widened once, used by
 * VG_GEMM_MR x rows read from L1); a last partial block of x rows repeats its last row. */
T_AVX2 static void bf16_gemm_avx2(const uint16_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                                  const float *xp, size_t n, float *y, size_t ldy)
{
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    for (size_t g = g0; g < g1; g++) {
        const uint16_t *grp = w + g * VG_PACK_ROWS * K;
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            const size_t row = g * VG_PACK_ROWS + (size_t)r;
            if (row >= rows)
                break;
            for (size_t i0 = 0; i0 < n; i0 += VG_GEMM_MR) {
                const float *x0 = xp + i0 * K, *x1 = xp + min_sz(i0 + 1, n - 1) * K;
                const float *x2 = xp + min_sz(i0 + 2, n - 1) * K;
                const float *x3 = xp + min_sz(i0 + 3, n - 1) * K;
                __m256 e0 = _mm256_setzero_ps(), e1 = e0, e2 = e0, e3 = e0;
                __m256 o0 = e0, o1 = e0, o2 = e0, o3 = e0;
                for (size_t c = 0; c < K / VG_QK; c++) {
                    const uint16_t *s = grp + (c * VG_PACK_ROWS + (size_t)r) * VG_QK;
                    __m256i v0 = _mm256_loadu_si256((const __m256i *)(const void *)s);
                    __m256i v1 = _mm256_loadu_si256((const __m256i *)(const void *)(s + 16));
                    const __m256 we0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
                    const __m256 wo0 = _mm256_castsi256_ps(_mm256_and_si256(v0, hi));
                    const __m256 we1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
                    const __m256 wo1 = _mm256_castsi256_ps(_mm256_and_si256(v1, hi));
                    BF16_X_AVX2(x0, e0, o0);
                    BF16_X_AVX2(x1, e1, o1);
                    BF16_X_AVX2(x2, e2, o2);
                    BF16_X_AVX2(x3, e3, o3);
                }
                const float out[VG_GEMM_MR] = {
                    hsum256(_mm256_add_ps(e0, o0)), hsum256(_mm256_add_ps(e1, o1)),
                    hsum256(_mm256_add_ps(e2, o2)), hsum256(_mm256_add_ps(e3, o3))};
                for (size_t k = 0; k < VG_GEMM_MR && i0 + k < n; k++)
                    y[(i0 + k) * ldy + row] = out[k];
            }
        }
    }
}

/* x row xr's block b against the weight row's block (|w| in aw, w's signs in wv), scaled by
 * w_scale * x_scale exactly as Q8_ROW_AVX2 does. */
#define Q8_X_AVX2(xr, xdr, acc)                                                                    \
    do {                                                                                           \
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)((xr) + b * VG_QK));  \
        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wv)), ones);   \
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ws * (xdr)[b]), acc);          \
    } while (0)

T_AVX2 static void q8_gemm_avx2(const int8_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                                const int8_t *xq, const float *xd, size_t n, float *y, size_t ldy)
{
    const size_t gb = vg_pack_group_bytes_q8(K), nb = K / VG_QK;
    const __m256i ones = _mm256_set1_epi16(1);
    for (size_t g = g0; g < g1; g++) {
        const int8_t *grp = w + g * gb;
        const uint16_t *sc = (const uint16_t *)(const void *)(grp + (size_t)VG_PACK_ROWS * K);
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            const size_t row = g * VG_PACK_ROWS + (size_t)r;
            if (row >= rows)
                break;
            for (size_t i0 = 0; i0 < n; i0 += VG_GEMM_MR) {
                const size_t i1 = min_sz(i0 + 1, n - 1), i2 = min_sz(i0 + 2, n - 1);
                const size_t i3 = min_sz(i0 + 3, n - 1);
                const int8_t *x0 = xq + i0 * K, *x1 = xq + i1 * K, *x2 = xq + i2 * K;
                const int8_t *x3 = xq + i3 * K;
                const float *d0 = xd + i0 * nb, *d1 = xd + i1 * nb, *d2 = xd + i2 * nb;
                const float *d3 = xd + i3 * nb;
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                for (size_t b = 0; b < nb; b++) {
                    const __m256i wv = _mm256_loadu_si256(
                        (const __m256i *)(const void *)(grp +
                                                        (b * VG_PACK_ROWS + (size_t)r) * VG_QK));
                    const __m256i aw = _mm256_sign_epi8(wv, wv);
                    const float ws = _cvtsh_ss(sc[b * VG_PACK_ROWS + (size_t)r]);
                    Q8_X_AVX2(x0, d0, a0);
                    Q8_X_AVX2(x1, d1, a1);
                    Q8_X_AVX2(x2, d2, a2);
                    Q8_X_AVX2(x3, d3, a3);
                }
                const float out[VG_GEMM_MR] = {hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)};
                for (size_t k = 0; k < VG_GEMM_MR && i0 + k < n; k++)
                    y[(i0 + k) * ldy + row] = out[k];
            }
        }
    }
}

static void q8_prep_n_avx2(const float *x, size_t n, size_t K, int8_t *xq, float *xd)
{
    for (size_t i = 0; i < n; i++)
        vg_q8_quantize_scalar(x + i * K, K, xq + i * K, xd + i * (K / VG_QK));
}

/* The streaming-read ceiling reads with software prefetches 512 bytes (64 words) ahead: on the
 * Sapphire Rapids host of docs/benchmarks.md they lift one thread's read from 15 to 19 GB/s (the
 * hardware prefetchers alone keep fewer lines in flight), and a ceiling must be the best read. */
#define READ_PF 64
T_AVX2 static uint64_t read_xor_avx2(const uint64_t *p, size_t n)
{
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm_prefetch((const char *)(p + i + READ_PF), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i + READ_PF + 8), _MM_HINT_T0);
        a = _mm256_xor_si256(a, _mm256_loadu_si256((const __m256i *)(const void *)(p + i)));
        b = _mm256_xor_si256(b, _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 4)));
        c = _mm256_xor_si256(c, _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 8)));
        d = _mm256_xor_si256(d, _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 12)));
    }
    a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    uint64_t r[4];
    _mm256_storeu_si256((__m256i *)(void *)r, a);
    uint64_t x = r[0] ^ r[1] ^ r[2] ^ r[3];
    for (; i < n; i++)
        x ^= p[i];
    return x;
}

/* F16C: 8 values per conversion (exact), the tail through the scalar form. */
T_AVX2 static void widen_f16_avx2(const void *src, size_t n, float *dst)
{
    const unsigned char *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(s + 2 * i))));
    vg_widen_f16_scalar(s + 2 * i, n - i, dst + i);
}

const vg_kernels vg_kernels_avx2 = {
    .bf16_prep = bf16_prep_avx2,
    .bf16_gemv = bf16_gemv_avx2,
    .q8_gemv = q8_gemv_avx2,
    .bf16_prep_n = bf16_prep_n_avx2,
    .bf16_gemm = bf16_gemm_avx2,
    .q8_prep_n = q8_prep_n_avx2,
    .q8_gemm = q8_gemm_avx2,
    .read_xor = read_xor_avx2,
    .pack_row_q8 = vg_pack_row_q8_scalar,
    .pack_row_bf16 = vg_pack_row_bf16_scalar,
    .widen_f16 = widen_f16_avx2,
    .q8_quantize = vg_q8_quantize_scalar,
};

/* ================================ AVX-512 ================================ */

T_AVX512 static inline float hsum256_512(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Per 32-column chunk: the 16 even elements, then the 16 odd ones. */
T_AVX512 static void bf16_prep_avx512(const float *x, size_t K, float *xp)
{
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    for (size_t c = 0; c < K; c += 32) {
        __m512 a = _mm512_loadu_ps(x + c), b = _mm512_loadu_ps(x + c + 16);
        _mm512_storeu_ps(xp + c, _mm512_permutex2var_ps(a, ie, b));
        _mm512_storeu_ps(xp + c + 16, _mm512_permutex2var_ps(a, io, b));
    }
}

#define BF16_ROW_AVX512(r, e, o)                                                                   \
    do {                                                                                           \
        __m512i v = _mm512_loadu_si512((const void *)(s + (r)*VG_QK));                             \
        e = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), xe, e);                 \
        o = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)), xo, o);                  \
    } while (0)

/* Prefetch distance, bytes, into L2 (PREFETCHT1): the streaming AVX-512 GEMVs keep more of the
 * stream in flight when the software prefetches run far ahead into L2 and the loads find the lines
 * there than when they prefetch near into L1 (Xeon of 2026-12-07, one thread over 512 MiB,
 * alternating: bf16 17.7-18.0 GB/s with T0 at 1024 bytes -> 18.9-19.2 with T1 at 4096-16384; T1
 * at 2048-3072 no better than T0). */
#define BF16_PF 8192
T_AVX512 static void bf16_gemv_avx512(const uint16_t *w, size_t K, size_t rows, size_t g0,
                                      size_t g1, const float *xp, float *y)
{
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    const size_t line = vg_pf_stride;
    for (size_t g = g0; g < g1; g++) {
        const uint16_t *grp = w + g * VG_PACK_ROWS * K;
        __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0;
        __m512 o0 = e0, o1 = e0, o2 = e0, o3 = e0;
        for (size_t c = 0; c < K / VG_QK; c++) {
            const __m512 xe = _mm512_loadu_ps(xp + c * VG_QK);
            const __m512 xo = _mm512_loadu_ps(xp + c * VG_QK + 16);
            const uint16_t *s = grp + c * VG_PACK_ROWS * VG_QK;
            for (size_t o = 0; o < 256; o += line) /* the chunk's 256 bytes, BF16_PF ahead */
                _mm_prefetch((const char *)s + BF16_PF + o, _MM_HINT_T1);
            BF16_ROW_AVX512(0, e0, o0);
            BF16_ROW_AVX512(1, e1, o1);
            BF16_ROW_AVX512(2, e2, o2);
            BF16_ROW_AVX512(3, e3, o3);
        }
        const float out[VG_PACK_ROWS] = {_mm512_reduce_add_ps(_mm512_add_ps(e0, o0)),
                                         _mm512_reduce_add_ps(_mm512_add_ps(e1, o1)),
                                         _mm512_reduce_add_ps(_mm512_add_ps(e2, o2)),
                                         _mm512_reduce_add_ps(_mm512_add_ps(e3, o3))};
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            size_t row = g * VG_PACK_ROWS + (size_t)r;
            if (row < rows)
                y[row] = out[r];
        }
    }
}

/* -128 * (the 32 values of x summed per 4-byte lane): where each lane of the block's unsigned-form
 * dot starts (q8_block_avx512). */
T_AVX512 static inline __m256i q8_corr(const int8_t *x)
{
    const __m256i m128 = _mm256_set1_epi8((char)0x80); /* 128 as an unsigned byte */
    const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)x);
    return _mm256_sub_epi32(_mm256_setzero_si256(),
                            _mm256_dpbusd_epi32(_mm256_setzero_si256(), m128, v));
}

/* One block for the row pairs (0,1) and (2,3) of a group (64 bytes hold two rows' 32 values). The
 * weights are made unsigned by flipping their sign bit (w + 128) and each lane starts at corr =
 * q8_corr(x): every int32 lane ends at the exact signed dot, with no per-byte sign handling. */
T_AVX512 static inline void q8_block_avx512(const int8_t *q, const uint16_t *sc, const int8_t *xq,
                                            __m256i corr, float xd, __m512i i01, __m512i i23,
                                            __m512 *acc01, __m512 *acc23)
{
    const __m512i xv =
        _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)xq));
    const __m512i c = _mm512_broadcast_i64x4(corr);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m128 s4 = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(const void *)sc));
    __m512 s = _mm512_castps128_ps512(_mm_mul_ps(s4, _mm_set1_ps(xd)));
    __m512i w01 = _mm512_xor_si512(_mm512_loadu_si512((const void *)q), flip);
    __m512i w23 = _mm512_xor_si512(_mm512_loadu_si512((const void *)(q + 64)), flip);
    __m512i d01 = _mm512_dpbusd_epi32(c, w01, xv);
    __m512i d23 = _mm512_dpbusd_epi32(c, w23, xv);
    *acc01 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d01), _mm512_permutexvar_ps(i01, s), *acc01);
    *acc23 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d23), _mm512_permutexvar_ps(i23, s), *acc23);
}

/* Prefetch distance, bytes, into L2 (PREFETCHT1), as BF16_PF: at least Q8_PF, and far enough
 * that a group's scales (4 K bytes past its values' start, read from its first block on) are on
 * their way when the group starts. One thread over 512 MiB (Xeon of 2026-12-07, alternating), K =
 * 2048: 17.3-17.7 GB/s with T0 at 2048 bytes (the best T0 distance: 2048 > 3072 > 1024 > 512) ->
 * 18.9-20.1 with T1 at 8192-16384 (T1 at 2048-3072: 16.7-18.6; T2 alike); 2 threads 34.1-34.4 ->
 * 37.1-39.9. K = 6144: T1 at 12288 76-78 % of the read ceiling, at 4 K + 4096 = 28672 80-81 %
 * (prefetching each next group's scales explicitly instead: no better, decode a little worse). */
#define Q8_PF 12288

/* blocks whose q8_corr is tabled once per call (16 KiB on the stack); beyond, computed per use */
#define Q8_CORR_BLOCKS 512

T_AVX512 static void q8_gemv_avx512(const int8_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                                    const int8_t *xq, const float *xd, float *y)
{
    const size_t gb = vg_pack_group_bytes_q8(K), nb = K / VG_QK;
    const __m512i i01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i i23 = _mm512_add_epi32(i01, _mm512_set1_epi32(2));
    __m256i table[Q8_CORR_BLOCKS];
    const int tabled = nb <= Q8_CORR_BLOCKS;
    const size_t line = vg_pf_stride;
    size_t pf = (size_t)VG_PACK_ROWS * K + 4096; /* see Q8_PF */
    if (pf < Q8_PF)
        pf = Q8_PF;
    for (size_t b = 0; tabled && b < nb; b++)
        table[b] = q8_corr(xq + b * VG_QK);
    /* the first pf bytes, which the loop's prefetches (pf ahead) never ask for */
    for (size_t o = 0; g0 < g1 && o < pf; o += line)
        _mm_prefetch((const char *)(w + g0 * gb) + o, _MM_HINT_T1);
#define Q8_BLOCK(b, acc01, acc23)                                                                  \
    q8_block_avx512(grp + (b)*VG_PACK_ROWS * VG_QK, sc + (b)*VG_PACK_ROWS, xq + (b)*VG_QK,         \
                    tabled ? table[b] : q8_corr(xq + (b)*VG_QK), xd[b], i01, i23, &acc01, &acc23)
    for (size_t g = g0; g < g1; g++) {
        const int8_t *grp = w + g * gb;
        const uint16_t *sc = (const uint16_t *)(const void *)(grp + (size_t)VG_PACK_ROWS * K);
        __m512 a01 = _mm512_setzero_ps(), a23 = _mm512_setzero_ps();
        __m512 b01 = _mm512_setzero_ps(), b23 = _mm512_setzero_ps();
        size_t b = 0;
        for (; b + 2 <= nb; b += 2) {
            const char *ahead = (const char *)(grp + b * VG_PACK_ROWS * VG_QK) + pf;
            for (size_t o = 0; o < 256; o += line) /* the two blocks' 256 bytes */
                _mm_prefetch(ahead + o, _MM_HINT_T1);
            Q8_BLOCK(b, a01, a23);
            Q8_BLOCK(b + 1, b01, b23);
        }
        if (b < nb)
            Q8_BLOCK(b, a01, a23);
        /* The loop's prefetch address advanced by the values' bytes only (128 per block), the
         * stream by 136: without this, 512 bytes of a later group (K = 2048) were never asked
         * for, 6 % of the stream left to the demand loads. 2B q8_0 decode, alternating (Xeon of
         * 2026-12-07): 1 thread 8.69-9.21 -> 9.13-9.65 tok/s, 2 threads 16.5-17.6 -> 17.8-18.5;
         * the GEMV alone 85-88 -> 89-92 % of the read. Distances rechecked with it: 4 K + 2048 /
         * + 4096 / + 8192 alike, 8192 and 16384 flat worse. */
        for (size_t o = (size_t)VG_PACK_ROWS * K; o < gb; o += line)
            _mm_prefetch((const char *)grp + pf + o, _MM_HINT_T1);
        a01 = _mm512_add_ps(a01, b01);
        a23 = _mm512_add_ps(a23, b23);
        float out[VG_PACK_ROWS] = {
            hsum256_512(_mm512_castps512_ps256(a01)),
            hsum256_512(_mm512_extractf32x8_ps(a01, 1)),
            hsum256_512(_mm512_castps512_ps256(a23)),
            hsum256_512(_mm512_extractf32x8_ps(a23, 1)),
        };
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            size_t row = g * VG_PACK_ROWS + (size_t)r;
            if (row < rows)
                y[row] = out[r];
        }
    }
#undef Q8_BLOCK
}

/* ---- AVX-512: several activation rows ---- */

/* Each row rounded to bf16 (nearest even) and stored as K uint16 at the start of its K floats. */
T_AVX512 static void bf16_prep_n_avx512(const float *x, size_t n, size_t K, float *xp)
{
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * K;
        uint16_t *o = (uint16_t *)(void *)(xp + i * K);
        for (size_t c = 0; c < K; c += 32) {
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(xi + c + 16), _mm512_loadu_ps(xi + c));
            _mm512_storeu_si512((void *)(o + c), (__m512i)v);
        }
    }
}

#define DP_ROW_AVX512(xr, a0, a1, a2, a3)                                                          \
    do {                                                                                           \
        const __m512bh xv = (__m512bh)_mm512_loadu_si512((const void *)((xr) + c * VG_QK));        \
        a0 = _mm512_dpbf16_ps(a0, w0, xv);                                                         \
        a1 = _mm512_dpbf16_ps(a1, w1, xv);                                                         \
        a2 = _mm512_dpbf16_ps(a2, w2, xv);                                                         \
        a3 = _mm512_dpbf16_ps(a3, w3, xv);                                                         \
    } while (0)

#define DP_STORE_AVX512(k, a0, a1, a2, a3)                                                         \
    do {                                                                                           \
        if (i0 + (k) < n) {                                                                        \
            float *yr = y + (i0 + (k)) * ldy + g * VG_PACK_ROWS;                                   \
            const float v[VG_PACK_ROWS] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1),     \
                                           _mm512_reduce_add_ps(a2), _mm512_reduce_add_ps(a3)};    \
            for (size_t r = 0; r < VG_PACK_ROWS && g * VG_PACK_ROWS + r < rows; r++)               \
                yr[r] = v[r];                                                                      \
        }                                                                                          \
    } while (0)

/* VDPBF16PS: 16 pairs of a weight row times the same pairs of an x row per instruction; the four
 * rows of a chunk are loaded once for VG_GEMM_MR x rows (16 accumulators). */
T_AVX512 static void bf16_gemm_avx512(const uint16_t *w, size_t K, size_t rows, size_t g0,
                                      size_t g1, const float *xp, size_t n, float *y, size_t ldy)
{
    for (size_t g = g0; g < g1; g++) {
        const uint16_t *grp = w + g * VG_PACK_ROWS * K;
        for (size_t i0 = 0; i0 < n; i0 += VG_GEMM_MR) {
            const uint16_t *x0 = (const uint16_t *)(const void *)(xp + i0 * K);
            const uint16_t *x1 = (const uint16_t *)(const void *)(xp + min_sz(i0 + 1, n - 1) * K);
            const uint16_t *x2 = (const uint16_t *)(const void *)(xp + min_sz(i0 + 2, n - 1) * K);
            const uint16_t *x3 = (const uint16_t *)(const void *)(xp + min_sz(i0 + 3, n - 1) * K);
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
            __m512 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
            __m512 a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            for (size_t c = 0; c < K / VG_QK; c++) {
                const uint16_t *s = grp + c * VG_PACK_ROWS * VG_QK;
                const __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)s);
                const __m512bh w1 = (__m512bh)_mm512_loadu_si512((const void *)(s + VG_QK));
                const __m512bh w2 = (__m512bh)_mm512_loadu_si512((const void *)(s + 2 * VG_QK));
                const __m512bh w3 = (__m512bh)_mm512_loadu_si512((const void *)(s + 3 * VG_QK));
                DP_ROW_AVX512(x0, a00, a01, a02, a03);
                DP_ROW_AVX512(x1, a10, a11, a12, a13);
                DP_ROW_AVX512(x2, a20, a21, a22, a23);
                DP_ROW_AVX512(x3, a30, a31, a32, a33);
            }
            DP_STORE_AVX512(0, a00, a01, a02, a03);
            DP_STORE_AVX512(1, a10, a11, a12, a13);
            DP_STORE_AVX512(2, a20, a21, a22, a23);
            DP_STORE_AVX512(3, a30, a31, a32, a33);
        }
    }
}

/* vg_q8_quantize_scalar's operations on 16 lanes: the same max (fmaxf ignores a NaN value; so
 * does VMAXPS with the running max as its second operand), the same division, reciprocal and
 * product, VRNDSCALEPS to nearest even as nearbyintf in the default rounding mode, NaN to 0. */
T_AVX512 static void q8_quantize_avx512(const float *x, size_t K, int8_t *xq, float *xd)
{
    const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
    for (size_t b = 0; b < K / VG_QK; b++) {
        const float *s = x + b * VG_QK;
        const __m512 v0 = _mm512_loadu_ps(s), v1 = _mm512_loadu_ps(s + 16);
        __m512 m = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_setzero_ps());
        m = _mm512_max_ps(_mm512_abs_ps(v1), m);
        const float amax = _mm512_reduce_max_ps(m);
        const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        __m512 q[2] = {_mm512_mul_ps(v0, vid), _mm512_mul_ps(v1, vid)};
        for (int h = 0; h < 2; h++) {
            __m512 r = _mm512_roundscale_ps(q[h], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r, r, _CMP_ORD_Q), r);
            r = _mm512_min_ps(_mm512_max_ps(r, nlim), lim);
            _mm_storeu_si128((__m128i *)(void *)(xq + b * VG_QK + 16 * (size_t)h),
                             _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(r)));
        }
        xd[b] = d;
    }
}

/* Quantized as vg_q8_quantize (this level's form), then biased to unsigned bytes (q + 128) for
 * VPDPBUSD. */
T_AVX512 static void q8_prep_n_avx512(const float *x, size_t n, size_t K, int8_t *xq, float *xd)
{
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (size_t i = 0; i < n; i++) {
        int8_t *q = xq + i * K;
        q8_quantize_avx512(x + i * K, K, q, xd + i * (K / VG_QK));
        for (size_t c = 0; c < K; c += 32) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(q + c));
            v = _mm256_xor_si256(v, _mm512_castsi512_si256(bias));
            _mm256_storeu_si256((__m256i *)(void *)(q + c), v);
        }
    }
}

/* One x row's block against the block's row pairs (0,1) and (2,3): with x biased by 128,
 * VPDPBUSD started from -128 * sum(w) gives the exact signed dot that q8_block_avx512 computes
 * from flipped weights; the scale (w_scale * x_scale, lane by lane) and the FMA are the same. */
#define Q8_X_AVX512(bb, xr, xdr, acc01, acc23)                                                     \
    do {                                                                                           \
        const __m512i xv = _mm512_broadcast_i64x4(                                                 \
            _mm256_loadu_si256((const __m256i *)(const void *)((xr) + (bb)*VG_QK)));               \
        const __m512 xs = _mm512_set1_ps((xdr)[bb]);                                               \
        __m512i d01 = _mm512_dpbusd_epi32(c01, xv, w01);                                           \
        __m512i d23 = _mm512_dpbusd_epi32(c23, xv, w23);                                           \
        acc01 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d01), _mm512_mul_ps(ws01, xs), acc01);          \
        acc23 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d23), _mm512_mul_ps(ws23, xs), acc23);          \
    } while (0)

/* Block b of the group for the four x rows into accumulator set (A or B, as q8_gemv_avx512
 * alternates them). */
#define Q8_BLOCK_AVX512(S, bb)                                                                     \
    do {                                                                                           \
        const int8_t *q = grp + (bb)*VG_PACK_ROWS * VG_QK;                                         \
        const __m512i w01 = _mm512_loadu_si512((const void *)q);                                   \
        const __m512i w23 = _mm512_loadu_si512((const void *)(q + 64));                            \
        const __m512i c01 = _mm512_sub_epi32(z, _mm512_dpbusd_epi32(z, bias, w01));                \
        const __m512i c23 = _mm512_sub_epi32(z, _mm512_dpbusd_epi32(z, bias, w23));                \
        const __m512 s4 = _mm512_castps128_ps512(_mm_cvtph_ps(                                     \
            _mm_loadl_epi64((const __m128i *)(const void *)(sc + (bb)*VG_PACK_ROWS))));            \
        const __m512 ws01 = _mm512_permutexvar_ps(i01, s4);                                        \
        const __m512 ws23 = _mm512_permutexvar_ps(i23, s4);                                        \
        Q8_X_AVX512(bb, x0, d0, S##01_0, S##23_0);                                                 \
        Q8_X_AVX512(bb, x1, d1, S##01_1, S##23_1);                                                 \
        Q8_X_AVX512(bb, x2, d2, S##01_2, S##23_2);                                                 \
        Q8_X_AVX512(bb, x3, d3, S##01_3, S##23_3);                                                 \
    } while (0)

#define Q8_STORE_AVX512(k)                                                                         \
    do {                                                                                           \
        if (i0 + (k) < n) {                                                                        \
            const __m512 s01 = _mm512_add_ps(A01_##k, B01_##k);                                    \
            const __m512 s23 = _mm512_add_ps(A23_##k, B23_##k);                                    \
            const float v[VG_PACK_ROWS] = {hsum256_512(_mm512_castps512_ps256(s01)),               \
                                           hsum256_512(_mm512_extractf32x8_ps(s01, 1)),            \
                                           hsum256_512(_mm512_castps512_ps256(s23)),               \
                                           hsum256_512(_mm512_extractf32x8_ps(s23, 1))};           \
            float *yr = y + (i0 + (k)) * ldy + g * VG_PACK_ROWS;                                   \
            for (size_t r = 0; r < VG_PACK_ROWS && g * VG_PACK_ROWS + r < rows; r++)               \
                yr[r] = v[r];                                                                      \
        }                                                                                          \
    } while (0)

T_AVX512 static void q8_gemm_avx512(const int8_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                                    const int8_t *xq, const float *xd, size_t n, float *y,
                                    size_t ldy)
{
    const size_t gb = vg_pack_group_bytes_q8(K), nb = K / VG_QK;
    const __m512i i01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i i23 = _mm512_add_epi32(i01, _mm512_set1_epi32(2));
    const __m512i z = _mm512_setzero_si512(), bias = _mm512_set1_epi8((char)0x80);
    for (size_t g = g0; g < g1; g++) {
        const int8_t *grp = w + g * gb;
        const uint16_t *sc = (const uint16_t *)(const void *)(grp + (size_t)VG_PACK_ROWS * K);
        for (size_t i0 = 0; i0 < n; i0 += VG_GEMM_MR) {
            const size_t i1 = min_sz(i0 + 1, n - 1), i2 = min_sz(i0 + 2, n - 1);
            const size_t i3 = min_sz(i0 + 3, n - 1);
            const int8_t *x0 = xq + i0 * K, *x1 = xq + i1 * K, *x2 = xq + i2 * K;
            const int8_t *x3 = xq + i3 * K;
            const float *d0 = xd + i0 * nb, *d1 = xd + i1 * nb, *d2 = xd + i2 * nb;
            const float *d3 = xd + i3 * nb;
            __m512 A01_0 = _mm512_setzero_ps(), A23_0 = A01_0, A01_1 = A01_0, A23_1 = A01_0;
            __m512 A01_2 = A01_0, A23_2 = A01_0, A01_3 = A01_0, A23_3 = A01_0;
            __m512 B01_0 = A01_0, B23_0 = A01_0, B01_1 = A01_0, B23_1 = A01_0;
            __m512 B01_2 = A01_0, B23_2 = A01_0, B01_3 = A01_0, B23_3 = A01_0;
            size_t b = 0;
            for (; b + 2 <= nb; b += 2) {
                Q8_BLOCK_AVX512(A, b);
                Q8_BLOCK_AVX512(B, b + 1);
            }
            if (b < nb)
                Q8_BLOCK_AVX512(A, b);
            Q8_STORE_AVX512(0);
            Q8_STORE_AVX512(1);
            Q8_STORE_AVX512(2);
            Q8_STORE_AVX512(3);
        }
    }
}

/* The AVX-512 read prefetches into L2, 4 KiB ahead, as the AVX-512 GEMVs do (BF16_PF): 1 thread
 * 21.9-22.5 GB/s with T0 at 512 bytes -> 22.6-23.0 (4096-16384 alike), 2 threads 41.2-41.8 ->
 * 44.0-46.0 (Xeon of 2026-12-07), so the GEMVs are held to the better read. */
#define READ_PF_AVX512 4096
T_AVX512 static uint64_t read_xor_avx512(const uint64_t *p, size_t n)
{
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    const size_t line = vg_pf_stride;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (size_t o = 0; o < 256; o += line)
            _mm_prefetch((const char *)(p + i) + READ_PF_AVX512 + o, _MM_HINT_T1);
        a = _mm512_xor_si512(a, _mm512_loadu_si512((const void *)(p + i)));
        b = _mm512_xor_si512(b, _mm512_loadu_si512((const void *)(p + i + 8)));
        c = _mm512_xor_si512(c, _mm512_loadu_si512((const void *)(p + i + 16)));
        d = _mm512_xor_si512(d, _mm512_loadu_si512((const void *)(p + i + 24)));
    }
    a = _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d));
    uint64_t r[8];
    _mm512_storeu_si512((void *)r, a);
    uint64_t x = 0;
    for (int k = 0; k < 8; k++)
        x ^= r[k];
    for (; i < n; i++)
        x ^= p[i];
    return x;
}

/* vg_pack_row_q8_scalar's bytes, 32 values per step: the block's max |x| (NaN lanes as 0, as
 * fmaxf ignores them) and its fp16 scale from the same scalar helpers, then x * (1 / scale)
 * rounded to nearest even (nearbyintf in the default rounding mode), clamped, NaN to 0. */
T_AVX512 static void pack_row_q8_avx512(const float *src, size_t K, int r, int8_t *group)
{
    uint16_t *sc = (uint16_t *)(void *)(group + (size_t)VG_PACK_ROWS * K);
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    for (size_t b = 0; b < K / VG_QK; b++) {
        const __m512 x0 = _mm512_loadu_ps(src + b * VG_QK);
        const __m512 x1 = _mm512_loadu_ps(src + b * VG_QK + 16);
        const __mmask16 n0 = _mm512_cmp_ps_mask(x0, x0, _CMP_ORD_Q);
        const __mmask16 n1 = _mm512_cmp_ps_mask(x1, x1, _CMP_ORD_Q);
        const float amax =
            _mm512_reduce_max_ps(_mm512_max_ps(_mm512_maskz_mov_ps(n0, _mm512_abs_ps(x0)),
                                               _mm512_maskz_mov_ps(n1, _mm512_abs_ps(x1))));
        const uint16_t h = vg_f32_to_f16(amax / 127.0f);
        const float d = vg_f16_to_f32_k(h);
        const __m512 id = _mm512_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
        int8_t *q = group + (b * VG_PACK_ROWS + (size_t)r) * VG_QK;
        for (int half = 0; half < 2; half++) {
            __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(half ? x1 : x0, id),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            const __mmask16 ok = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
            v = _mm512_maskz_mov_ps(ok, _mm512_min_ps(_mm512_max_ps(v, lo), hi));
            _mm_storeu_si128((__m128i *)(void *)(q + 16 * half),
                             _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
        }
        sc[b * VG_PACK_ROWS + (size_t)r] = h;
    }
}

/* 16 float32 to bf16 as the scalar f32_to_bf16 rounds, in integer arithmetic (VCVTNEPS2BF16 would
 * flush subnormals): + 0x7fff + the kept lowest bit, then the top half; a NaN keeps its top half
 * with the quiet bit set. */
T_AVX512 static inline __m256i bf16_round16(__m512i x)
{
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), odd), 16);
    r = _mm512_mask_mov_epi32(r, nan,
                              _mm512_or_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

T_AVX512 static void pack_row_bf16_avx512(const float *src, size_t K, int r, uint16_t *group)
{
    for (size_t c = 0; c < K / VG_QK; c++) {
        uint16_t *d = group + (c * VG_PACK_ROWS + (size_t)r) * VG_QK;
        _mm256_storeu_si256((__m256i *)(void *)d,
                            bf16_round16(_mm512_loadu_si512((const void *)(src + c * VG_QK))));
        _mm256_storeu_si256((__m256i *)(void *)(d + 16),
                            bf16_round16(_mm512_loadu_si512((const void *)(src + c * VG_QK + 16))));
    }
}

T_AVX512 static void widen_f16_avx512(const void *src, size_t n, float *dst)
{
    const unsigned char *s = src;
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(
                                      (const __m256i *)(const void *)(s + 2 * i))));
    vg_widen_f16_scalar(s + 2 * i, n - i, dst + i);
}

const vg_kernels vg_kernels_avx512 = {
    .bf16_prep = bf16_prep_avx512,
    .bf16_gemv = bf16_gemv_avx512,
    .q8_gemv = q8_gemv_avx512,
    .bf16_prep_n = bf16_prep_n_avx512,
    .bf16_gemm = bf16_gemm_avx512,
    .q8_prep_n = q8_prep_n_avx512,
    .q8_gemm = q8_gemm_avx512,
    .read_xor = read_xor_avx512,
    .pack_row_q8 = pack_row_q8_avx512,
    .pack_row_bf16 = pack_row_bf16_avx512,
    .widen_f16 = widen_f16_avx512,
    .q8_quantize = q8_quantize_avx512,
};
#endif
