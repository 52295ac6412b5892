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
 *    |x| <= 127 keep VPMADDUBSW's 16-bit pair sums from saturating. Each block's int32 dot becomes
 *    a float and is scaled by w_scale * x_scale with an FMA.
 * Pure functions; any thread.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_AVX512                                                                                   \
    __attribute__((                                                                                \
        target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni")))

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

T_AVX2 static uint64_t read_xor_avx2(const uint64_t *p, size_t n)
{
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
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

const vg_kernels vg_kernels_avx2 = {
    .bf16_prep = bf16_prep_avx2,
    .bf16_gemv = bf16_gemv_avx2,
    .q8_gemv = q8_gemv_avx2,
    .read_xor = read_xor_avx2,
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

T_AVX512 static void bf16_gemv_avx512(const uint16_t *w, size_t K, size_t rows, size_t g0,
                                      size_t g1, const float *xp, float *y)
{
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    for (size_t g = g0; g < g1; g++) {
        const uint16_t *grp = w + g * VG_PACK_ROWS * K;
        __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0;
        __m512 o0 = e0, o1 = e0, o2 = e0, o3 = e0;
        for (size_t c = 0; c < K / VG_QK; c++) {
            const __m512 xe = _mm512_loadu_ps(xp + c * VG_QK);
            const __m512 xo = _mm512_loadu_ps(xp + c * VG_QK + 16);
            const uint16_t *s = grp + c * VG_PACK_ROWS * VG_QK;
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

/* One block b for the row pairs (0,1) and (2,3) of a group: 64 bytes hold two rows' 32 values. */
T_AVX512 static inline void q8_block_avx512(const int8_t *q, const uint16_t *sc, const int8_t *xq,
                                            float xd, __m512i i01, __m512i i23, __m512 *acc01,
                                            __m512 *acc23)
{
    const __m512i xv =
        _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)xq));
    __m128 s4 = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(const void *)sc));
    __m512 s = _mm512_castps128_ps512(_mm_mul_ps(s4, _mm_set1_ps(xd)));
    const __m512i z = _mm512_setzero_si512();
    __m512i w01 = _mm512_loadu_si512((const void *)q);
    __m512i w23 = _mm512_loadu_si512((const void *)(q + 64));
    __m512i x01 = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(w01), z, xv);
    __m512i x23 = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(w23), z, xv);
    __m512i d01 = _mm512_dpbusd_epi32(z, _mm512_abs_epi8(w01), x01);
    __m512i d23 = _mm512_dpbusd_epi32(z, _mm512_abs_epi8(w23), x23);
    *acc01 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d01), _mm512_permutexvar_ps(i01, s), *acc01);
    *acc23 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d23), _mm512_permutexvar_ps(i23, s), *acc23);
}

T_AVX512 static void q8_gemv_avx512(const int8_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                                    const int8_t *xq, const float *xd, float *y)
{
    const size_t gb = vg_pack_group_bytes_q8(K), nb = K / VG_QK;
    const __m512i i01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i i23 = _mm512_add_epi32(i01, _mm512_set1_epi32(2));
    for (size_t g = g0; g < g1; g++) {
        const int8_t *grp = w + g * gb;
        const uint16_t *sc = (const uint16_t *)(const void *)(grp + (size_t)VG_PACK_ROWS * K);
        __m512 a01 = _mm512_setzero_ps(), a23 = _mm512_setzero_ps();
        __m512 b01 = _mm512_setzero_ps(), b23 = _mm512_setzero_ps();
        size_t b = 0;
        for (; b + 2 <= nb; b += 2) {
            q8_block_avx512(grp + b * VG_PACK_ROWS * VG_QK, sc + b * VG_PACK_ROWS, xq + b * VG_QK,
                            xd[b], i01, i23, &a01, &a23);
            q8_block_avx512(grp + (b + 1) * VG_PACK_ROWS * VG_QK, sc + (b + 1) * VG_PACK_ROWS,
                            xq + (b + 1) * VG_QK, xd[b + 1], i01, i23, &b01, &b23);
        }
        if (b < nb)
            q8_block_avx512(grp + b * VG_PACK_ROWS * VG_QK, sc + b * VG_PACK_ROWS, xq + b * VG_QK,
                            xd[b], i01, i23, &a01, &a23);
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
}

T_AVX512 static uint64_t read_xor_avx512(const uint64_t *p, size_t n)
{
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
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

const vg_kernels vg_kernels_avx512 = {
    .bf16_prep = bf16_prep_avx512,
    .bf16_gemv = bf16_gemv_avx512,
    .q8_gemv = q8_gemv_avx512,
    .read_xor = read_xor_avx512,
};
#endif
