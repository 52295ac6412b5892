/*
 * quant_x86.c: AVX2 and AVX-512 VNNI GEMV kernels on the interleaved block layout (quant.h).
 *
 * Each sub-block chunk (64 bytes: four rows' 32 values as nibbles, plus Q5_K's fifth bits or
 * Q6_K's high bits) is widened to unsigned bytes (at most 63) and multiplied with the activation's
 * int8 values by VPMADDUBSW (pair sums at most 2 * 63 * 127, no saturation); the int16 sums are
 * multiplied by the rows' sub-block scales and summed into int32 by VPDPWSSD (AVX-512 VNNI: one
 * 512-bit register holds all four rows, row r in 128-bit lane r) or VPMADDWD + VPADDD (AVX2: two
 * rows a register). The mins (Q4_K / Q5_K) and Q6_K's offset of 32 go through the activation's
 * sums of 32 / 16, and each superblock's int32 sums are scaled in float32 once. The integer sums
 * are those of the scalar kernel (quant_kq.c); only the float accumulation order differs.
 * Q4_0 / Q4_1 / Q5_0 / Q5_1 have a float d per 32 values instead: their per-sub-block int32 sums
 * (VPMADDUBSW + VPMADDWD by ones; AVX-512 VPDPBUSD) are scaled in float32 one sub-block at a time.
 * Each function carries its own target attribute (the file builds for baseline x86-64). Pure.
 */
#include "quant.h"

#include "gguf.h"
#include "kernels.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_AVX512                                                                                   \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

static void store_rows(const float out[4], size_t g, size_t rows, float *y)
{
    for (int r = 0; r < 4; r++)
        if (g * 4 + (size_t)r < rows)
            y[g * 4 + (size_t)r] = out[r];
}

/* ================================ AVX2 ================================ */

T_AVX2 static inline float hsum128(__m128 s)
{
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Four fp16 values at p as float32 (exact). */
T_AVX2 static inline void half4(const unsigned char *p, float out[4])
{
    _mm_storeu_ps(out, _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(const void *)p)));
}

/* 0x10 in byte p where bit p of m is set. */
T_AVX2 static inline __m256i bits_to_16(uint32_t m)
{
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2,
                                         2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), sel);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* [v[a] x4, v[b] x4] of the four floats at p, times dx. */
T_AVX2 static inline __m256 pair_scale(const unsigned char *p, int a, float dx)
{
    const __m256i idx = _mm256_setr_epi32(a, a, a, a, a + 1, a + 1, a + 1, a + 1);
    __m256 v =
        _mm256_castps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(const void *)p)));
    return _mm256_mul_ps(_mm256_permutevar8x32_ps(v, idx), _mm256_set1_ps(dx));
}

T_AVX2 static void gemv_q45k_avx2(int q5, const unsigned char *w, size_t K, size_t rows, size_t g0,
                                  size_t g1, const vg_kq_act *x, float *y)
{
    const size_t nb = K / 256, rb = q5 ? 720 : 592, cb = q5 ? 80 : 64;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    /* byte s (row 0 / 2) in the low lane, 8 + s (row 1 / 3) in the high lane, zero-extended */
    const __m256i sbase = _mm256_setr_epi16(
        (short)0x8000, (short)0x8000, (short)0x8000, (short)0x8000, (short)0x8000, (short)0x8000,
        (short)0x8000, (short)0x8000, (short)0x8008, (short)0x8008, (short)0x8008, (short)0x8008,
        (short)0x8008, (short)0x8008, (short)0x8008, (short)0x8008);
    for (size_t g = g0; g < g1; g++) {
        const unsigned char *grp = w + g * nb * rb;
        __m256 f0 = _mm256_setzero_ps(), f1 = f0;
        for (size_t b = 0; b < nb; b++) {
            const unsigned char *rec = grp + b * rb;
            const int8_t *xq = x->q + 256 * b;
            const __m256i sc01 = _mm256_broadcastsi128_si256(
                _mm_loadu_si128((const __m128i *)(const void *)(rec + 16)));
            const __m256i sc23 = _mm256_broadcastsi128_si256(
                _mm_loadu_si128((const __m128i *)(const void *)(rec + 32)));
            __m256i a0 = _mm256_setzero_si256(), a1 = a0;
            for (int s = 0; s < 8; s++) {
                const unsigned char *c = rec + 80 + (size_t)s * cb;
                const __m256i sm = _mm256_add_epi16(sbase, _mm256_set1_epi16((short)s));
                const __m256i xl = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s)));
                const __m256i xh = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s + 16)));
                __m256i v0 = _mm256_loadu_si256((const __m256i *)(const void *)c);
                __m256i v1 = _mm256_loadu_si256((const __m256i *)(const void *)(c + 32));
                __m256i l0 = _mm256_and_si256(v0, m4),
                        h0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m4);
                __m256i l1 = _mm256_and_si256(v1, m4),
                        h1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m4);
                if (q5) {
                    uint32_t bl[2], bh[2];
                    memcpy(bl, c + 64, 8);
                    memcpy(bh, c + 72, 8);
                    l0 = _mm256_or_si256(l0, bits_to_16(bl[0]));
                    l1 = _mm256_or_si256(l1, bits_to_16(bl[1]));
                    h0 = _mm256_or_si256(h0, bits_to_16(bh[0]));
                    h1 = _mm256_or_si256(h1, bits_to_16(bh[1]));
                }
                __m256i p0 =
                    _mm256_add_epi16(_mm256_maddubs_epi16(l0, xl), _mm256_maddubs_epi16(h0, xh));
                __m256i p1 =
                    _mm256_add_epi16(_mm256_maddubs_epi16(l1, xl), _mm256_maddubs_epi16(h1, xh));
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(p0, _mm256_shuffle_epi8(sc01, sm)));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(p1, _mm256_shuffle_epi8(sc23, sm)));
            }
            const __m256i bs = _mm256_broadcastsi128_si256(
                _mm_loadu_si128((const __m128i *)(const void *)(x->bs32 + 8 * b)));
            const __m256i mm0 = _mm256_madd_epi16(
                _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(rec + 48))),
                bs);
            const __m256i mm1 = _mm256_madd_epi16(
                _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(rec + 64))),
                bs);
            const float dx = x->d[b];
            f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), pair_scale(rec, 0, dx), f0);
            f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), pair_scale(rec, 2, dx), f1);
            f0 = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mm0), pair_scale(rec + 8, 0, dx), f0);
            f1 = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mm1), pair_scale(rec + 8, 2, dx), f1);
        }
        const float out[4] = {
            hsum128(_mm256_castps256_ps128(f0)), hsum128(_mm256_extractf128_ps(f0, 1)),
            hsum128(_mm256_castps256_ps128(f1)), hsum128(_mm256_extractf128_ps(f1, 1))};
        store_rows(out, g, rows, y);
    }
}

/* Sum over the 16 scales of row a (low lane) and row a + 1 (high lane) times the activation's
 * sums of 16, as 8 int32 (four per row). */
T_AVX2 static inline __m256i q6_offset(const unsigned char *sc, __m256i bs)
{
    __m256i o0 = _mm256_madd_epi16(
        _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)sc)), bs);
    __m256i o1 = _mm256_madd_epi16(
        _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(sc + 16))), bs);
    return _mm256_add_epi32(_mm256_permute2x128_si256(o0, o1, 0x20),
                            _mm256_permute2x128_si256(o0, o1, 0x31));
}

T_AVX2 static void gemv_q6k_avx2(const unsigned char *w, size_t K, size_t rows, size_t g0,
                                 size_t g1, const vg_kq_act *x, float *y)
{
    const size_t nb = K / 256, rb = 840;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(0x03),
                  mc = _mm256_set1_epi8(0x0c);
    for (size_t g = g0; g < g1; g++) {
        const unsigned char *grp = w + g * nb * rb;
        __m256 f0 = _mm256_setzero_ps(), f1 = f0;
        for (size_t b = 0; b < nb; b++) {
            const unsigned char *rec = grp + b * rb;
            const int8_t *xq = x->q + 256 * b;
            /* int8 scales: row 0 / 2 in the low lane, row 1 / 3 in the high lane */
            const __m256i sc01 = _mm256_loadu_si256((const __m256i *)(const void *)(rec + 8));
            const __m256i sc23 = _mm256_loadu_si256((const __m256i *)(const void *)(rec + 40));
            __m256i a0 = _mm256_setzero_si256(), a1 = a0;
            for (int s = 0; s < 8; s++) {
                const unsigned char *c = rec + 72 + (size_t)s * 96;
                const __m256i ml = _mm256_set1_epi16((short)(0x0101 * (2 * s)));
                const __m256i mh = _mm256_set1_epi16((short)(0x0101 * (2 * s + 1)));
                const __m256i xl = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s)));
                const __m256i xh = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s + 16)));
                const __m256i hb = _mm256_loadu_si256((const __m256i *)(const void *)(c + 64));
                for (int half = 0; half < 2; half++) {
                    const __m256i v =
                        _mm256_loadu_si256((const __m256i *)(const void *)(c + 32 * half));
                    const __m256i h = half ? _mm256_srli_epi16(hb, 4) : hb;
                    const __m256i lo = _mm256_or_si256(
                        _mm256_and_si256(v, m4), _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
                    const __m256i hi =
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                        _mm256_slli_epi16(_mm256_and_si256(h, mc), 2));
                    const __m256i sc = half ? sc23 : sc01;
                    const __m256i sl = _mm256_srai_epi16(_mm256_shuffle_epi8(sc, ml), 8);
                    const __m256i sh = _mm256_srai_epi16(_mm256_shuffle_epi8(sc, mh), 8);
                    __m256i d =
                        _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), sl),
                                         _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), sh));
                    if (half)
                        a1 = _mm256_add_epi32(a1, d);
                    else
                        a0 = _mm256_add_epi32(a0, d);
                }
            }
            const __m256i bs =
                _mm256_loadu_si256((const __m256i *)(const void *)(x->bs16 + 16 * b));
            a0 = _mm256_sub_epi32(a0, _mm256_slli_epi32(q6_offset(rec + 8, bs), 5));
            a1 = _mm256_sub_epi32(a1, _mm256_slli_epi32(q6_offset(rec + 40, bs), 5));
            const float dx = x->d[b];
            f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), pair_scale(rec, 0, dx), f0);
            f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), pair_scale(rec, 2, dx), f1);
        }
        const float out[4] = {
            hsum128(_mm256_castps256_ps128(f0)), hsum128(_mm256_extractf128_ps(f0, 1)),
            hsum128(_mm256_castps256_ps128(f1)), hsum128(_mm256_extractf128_ps(f1, 1))};
        store_rows(out, g, rows, y);
    }
}

/* The chunk at c as unsigned bytes, two rows a register: lo[h] the values 0-15 of rows 2h (low
 * lane) and 2h + 1 (high lane), hi[h] the values 16-31. */
T_AVX2 static inline void widen256(uint32_t t, const unsigned char *c, __m256i lo[2], __m256i hi[2])
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i hb = t == VG_GGML_Q6_K
                           ? _mm256_loadu_si256((const __m256i *)(const void *)(c + 64))
                           : _mm256_setzero_si256(); /* a 4-bit chunk ends at c + 64 */
    for (int h = 0; h < 2; h++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(c + 32 * h));
        lo[h] = _mm256_and_si256(v, m4);
        hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if (vg_kq_five_bits(t)) {
            uint32_t bl, bh;
            memcpy(&bl, c + 64 + 4 * h, 4);
            memcpy(&bh, c + 72 + 4 * h, 4);
            lo[h] = _mm256_or_si256(lo[h], bits_to_16(bl));
            hi[h] = _mm256_or_si256(hi[h], bits_to_16(bh));
        } else if (t == VG_GGML_Q6_K) {
            const __m256i x = h ? _mm256_srli_epi16(hb, 4) : hb;
            lo[h] = _mm256_or_si256(lo[h],
                                    _mm256_slli_epi16(_mm256_and_si256(x, _mm256_set1_epi8(3)), 4));
            hi[h] = _mm256_or_si256(
                hi[h], _mm256_slli_epi16(_mm256_and_si256(x, _mm256_set1_epi8(12)), 2));
        }
    }
}

/* Row r's scales for sub-block s of a record: *sl for its values 0-15, *sh for 16-31 (Q6_K's two
 * int8 sub-scales; one for the others) times d[r] (the 32-value types: their own d), and *ml what
 * is subtracted after the product: the K-quant min (dm[r] times its 6-bit min), -m for Q4_1 /
 * Q5_1, 0 otherwise; as the scalar unpacking computes them ((d q) - (-m) is (d q) + m exactly).
 * Shared by the widening kernels of both levels. */
T_AVX2 static inline void row_scales(uint32_t t, const unsigned char *rec, const float d[4],
                                     const float dm[4], int r, int s, float *sl, float *sh,
                                     float *ml)
{
    if (vg_kq_b32(t)) {
        uint16_t h;
        memcpy(&h, rec + 2 * (4 * s + r), 2);
        *sl = *sh = _cvtsh_ss(h);
        *ml = 0.0f;
        if (vg_kq_has_min(t)) {
            memcpy(&h, rec + 64 + 2 * (4 * s + r), 2);
            *ml = -_cvtsh_ss(h);
        }
    } else if (t == VG_GGML_Q6_K) {
        const int8_t *sc6 = (const int8_t *)(rec + 8 + 16 * r);
        *sl = d[r] * (float)sc6[2 * s];
        *sh = d[r] * (float)sc6[2 * s + 1];
        *ml = 0.0f;
    } else {
        *sl = *sh = d[r] * (float)rec[16 + 8 * r + s];
        *ml = dm[r] * (float)rec[48 + 8 * r + s];
    }
}

/* 8 unsigned bytes -> (scale * (q - off)) - min (off: vg_kq_offset) as the scalar unpacking
 * computes it (no fused multiply-add). */
T_AVX2 static inline void deq8_f32(__m128i q8, __m256i off, float scale, float min, float *o)
{
    __m256 q = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(q8), off));
    _mm256_storeu_ps(o,
                     _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(scale), q), _mm256_set1_ps(min)));
}

T_AVX2 static void group_f32_avx2(uint32_t t, const unsigned char *group, size_t K, float *dst)
{
    const size_t hdr = vg_kq_hdr_bytes(t), cb = vg_kq_chunk_bytes(t), rb = vg_kq_rec_bytes(t);
    const __m256i off = _mm256_set1_epi32(vg_kq_offset(t));
    for (size_t b = 0; b < K / 256; b++) {
        const unsigned char *rec = group + b * rb;
        float d[4], dm[4];
        half4(rec, d);
        half4(rec + 8, dm); /* unused but by Q4_K / Q5_K */
        for (int s = 0; s < 8; s++) {
            __m256i lo[2], hi[2];
            widen256(t, rec + hdr + (size_t)s * cb, lo, hi);
            for (int r = 0; r < 4; r++) {
                float sl, sh, ml;
                row_scales(t, rec, d, dm, r, s, &sl, &sh, &ml);
                /* row r: lane r % 2 of register r / 2 */
                const __m128i l = (r & 1) ? _mm256_extracti128_si256(lo[r / 2], 1)
                                          : _mm256_castsi256_si128(lo[r / 2]);
                const __m128i h = (r & 1) ? _mm256_extracti128_si256(hi[r / 2], 1)
                                          : _mm256_castsi256_si128(hi[r / 2]);
                float *o = dst + (size_t)r * K + 256 * b + 32 * (size_t)s;
                deq8_f32(l, off, sl, ml, o);
                deq8_f32(_mm_srli_si128(l, 8), off, sl, ml, o + 8);
                deq8_f32(h, off, sh, ml, o + 16);
                deq8_f32(_mm_srli_si128(h, 8), off, sh, ml, o + 24);
            }
        }
    }
}

/* Q4_0 / Q4_1 / Q5_0 / Q5_1: per sub-block the int32 sums q . x (four per row, two rows a
 * register), the offset times the activation's sum of 32 taken from the first of each row's
 * four, then scaled by the row's own float d (times dx); Q4_1 / Q5_1 add m dx sum x. */
T_AVX2 static void gemv_b32_avx2(uint32_t t, const unsigned char *w, size_t K, size_t rows,
                                 size_t g0, size_t g1, const vg_kq_act *x, float *y)
{
    const int mn = vg_kq_has_min(t), off = vg_kq_offset(t);
    const size_t nb = K / 256, hdr = vg_kq_hdr_bytes(t), cb = vg_kq_chunk_bytes(t),
                 rb = vg_kq_rec_bytes(t);
    const __m256i one = _mm256_set1_epi16(1);
    for (size_t g = g0; g < g1; g++) {
        const unsigned char *grp = w + g * nb * rb;
        __m256 f0 = _mm256_setzero_ps(), f1 = f0;
        for (size_t b = 0; b < nb; b++) {
            const unsigned char *rec = grp + b * rb;
            const int8_t *xq = x->q + 256 * b;
            const float dx = x->d[b];
            for (int s = 0; s < 8; s++) {
                const __m256i xl = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s)));
                const __m256i xh = _mm256_broadcastsi128_si256(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s + 16)));
                __m256i lo[2], hi[2];
                widen256(t, rec + hdr + (size_t)s * cb, lo, hi);
                __m256i a0 = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo[0], xl),
                                                                _mm256_maddubs_epi16(hi[0], xh)),
                                               one);
                __m256i a1 = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo[1], xl),
                                                                _mm256_maddubs_epi16(hi[1], xh)),
                                               one);
                const int bs = x->bs32[8 * b + (size_t)s];
                if (off) {
                    const __m256i o = _mm256_setr_epi32(off * bs, 0, 0, 0, off * bs, 0, 0, 0);
                    a0 = _mm256_sub_epi32(a0, o);
                    a1 = _mm256_sub_epi32(a1, o);
                }
                f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), pair_scale(rec + 8 * s, 0, dx), f0);
                f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), pair_scale(rec + 8 * s, 2, dx), f1);
                if (mn) {
                    const __m256 sx = _mm256_setr_ps((float)bs, 0, 0, 0, (float)bs, 0, 0, 0);
                    f0 = _mm256_fmadd_ps(sx, pair_scale(rec + 64 + 8 * s, 0, dx), f0);
                    f1 = _mm256_fmadd_ps(sx, pair_scale(rec + 64 + 8 * s, 2, dx), f1);
                }
            }
        }
        const float out[4] = {
            hsum128(_mm256_castps256_ps128(f0)), hsum128(_mm256_extractf128_ps(f0, 1)),
            hsum128(_mm256_castps256_ps128(f1)), hsum128(_mm256_extractf128_ps(f1, 1))};
        store_rows(out, g, rows, y);
    }
}

int vg_kq_group_to_f32_x86(int level, uint32_t t, const unsigned char *group, size_t K, float *dst)
{
    if (!vg_kq_rec_bytes(t) || level < VG_ISA_AVX2)
        return 0;
    group_f32_avx2(t, group, K, dst);
    return 1;
}

/* ================================ AVX-512 VNNI ================================ */

/* Each row's float (at p, four of them) in its 128-bit lane, times dx. */
T_AVX512 static inline __m512 row_scale(const unsigned char *p, float dx)
{
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512 v =
        _mm512_castps128_ps512(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(const void *)p)));
    return _mm512_mul_ps(_mm512_permutexvar_ps(idx, v), _mm512_set1_ps(dx));
}

T_AVX512 static inline void rows_out(__m512 f, size_t g, size_t rows, float *y)
{
    const float out[4] = {hsum128(_mm512_castps512_ps128(f)), hsum128(_mm512_extractf32x4_ps(f, 1)),
                          hsum128(_mm512_extractf32x4_ps(f, 2)),
                          hsum128(_mm512_extractf32x4_ps(f, 3))};
    store_rows(out, g, rows, y);
}

/* prefetch distance of the GEMVs, bytes: 2048 > 1024 > 3072 for Q4_K_M decode on the Xeon of
 * 2026-12-07 (504 MiB L3; 2 threads 20.2-21.4 -> 21.4-22.5 tok/s, 1 thread unchanged at
 * 10.8-12.2), as for the q8_0 GEMV (kernels_x86.c, Q8_PF) */
#define KQ_PF 2048

T_AVX512 static void gemv_q45k_avx512(int q5, const unsigned char *w, size_t K, size_t rows,
                                      size_t g0, size_t g1, const vg_kq_act *x, float *y)
{
    const size_t nb = K / 256, rb = q5 ? 720 : 592, cb = q5 ? 80 : 64, line = vg_pf_stride;
    const __m512i m4 = _mm512_set1_epi8(0x0f), v16 = _mm512_set1_epi8(0x10);
    /* int16 element e belongs to row e / 8: its scale is sc[e / 8][s], at 8 (e / 8) + s */
    const __m512i ibase = _mm512_set_epi16(24, 24, 24, 24, 24, 24, 24, 24, 16, 16, 16, 16, 16, 16,
                                           16, 16, 8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0);
    for (size_t g = g0; g < g1; g++) {
        const unsigned char *grp = w + g * nb * rb;
        __m512 f = _mm512_setzero_ps();
        for (size_t b = 0; b < nb; b++) {
            const unsigned char *rec = grp + b * rb;
            const int8_t *xq = x->q + 256 * b;
            for (size_t o = 0; o < rb; o += line) /* kernels.h: vg_pf_stride */
                _mm_prefetch((const char *)rec + KQ_PF + o, _MM_HINT_T0);
            const __m512i sc =
                _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(rec + 16)));
            __m512i acc = _mm512_setzero_si512();
            for (int s = 0; s < 8; s++) {
                const unsigned char *c = rec + 80 + (size_t)s * cb;
                const __m512i xl = _mm512_broadcast_i32x4(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s)));
                const __m512i xh = _mm512_broadcast_i32x4(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s + 16)));
                const __m512i v = _mm512_loadu_si512((const void *)c);
                __m512i lo = _mm512_and_si512(v, m4),
                        hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                if (q5) {
                    uint64_t bl, bh;
                    memcpy(&bl, c + 64, 8);
                    memcpy(&bh, c + 72, 8);
                    lo = _mm512_mask_add_epi8(lo, (__mmask64)bl, lo, v16);
                    hi = _mm512_mask_add_epi8(hi, (__mmask64)bh, hi, v16);
                }
                const __m512i p =
                    _mm512_add_epi16(_mm512_maddubs_epi16(lo, xl), _mm512_maddubs_epi16(hi, xh));
                const __m512i scv = _mm512_permutexvar_epi16(
                    _mm512_add_epi16(ibase, _mm512_set1_epi16((short)s)), sc);
                acc = _mm512_dpwssd_epi32(acc, p, scv);
            }
            const __m512i bs = _mm512_broadcast_i32x4(
                _mm_loadu_si128((const __m128i *)(const void *)(x->bs32 + 8 * b)));
            const __m512i mm = _mm512_madd_epi16(
                _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(rec + 48))),
                bs);
            const float dx = x->d[b];
            f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), row_scale(rec, dx), f);
            f = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mm), row_scale(rec + 8, dx), f);
        }
        rows_out(f, g, rows, y);
    }
}

T_AVX512 static void gemv_q6k_avx512(const unsigned char *w, size_t K, size_t rows, size_t g0,
                                     size_t g1, const vg_kq_act *x, float *y)
{
    const size_t nb = K / 256, rb = 840, line = vg_pf_stride;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m3 = _mm512_set1_epi8(0x03),
                  mc = _mm512_set1_epi8(0x0c);
    /* int16 element e belongs to row e / 8: its scale sc[e / 8][j] is at 16 (e / 8) + j of the
     * 64 int16 of rows 0-1 and 2-3 */
    const __m512i ibase =
        _mm512_set_epi16(48, 48, 48, 48, 48, 48, 48, 48, 32, 32, 32, 32, 32, 32, 32, 32, 16, 16, 16,
                         16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0);
    for (size_t g = g0; g < g1; g++) {
        const unsigned char *grp = w + g * nb * rb;
        __m512 f = _mm512_setzero_ps();
        for (size_t b = 0; b < nb; b++) {
            const unsigned char *rec = grp + b * rb;
            const int8_t *xq = x->q + 256 * b;
            for (size_t o = 0; o < rb; o += line) /* kernels.h: vg_pf_stride */
                _mm_prefetch((const char *)rec + KQ_PF + o, _MM_HINT_T0);
            const __m512i sc01 =
                _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(rec + 8)));
            const __m512i sc23 =
                _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(rec + 40)));
            __m512i acc = _mm512_setzero_si512();
            for (int s = 0; s < 8; s++) {
                const unsigned char *c = rec + 72 + (size_t)s * 96;
                const __m512i xl = _mm512_broadcast_i32x4(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s)));
                const __m512i xh = _mm512_broadcast_i32x4(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s + 16)));
                const __m512i v = _mm512_loadu_si512((const void *)c);
                const __m256i hb = _mm256_loadu_si256((const __m256i *)(const void *)(c + 64));
                const __m512i h =
                    _mm512_inserti64x4(_mm512_castsi256_si512(hb), _mm256_srli_epi16(hb, 4), 1);
                const __m512i lo = _mm512_or_si512(_mm512_and_si512(v, m4),
                                                   _mm512_slli_epi16(_mm512_and_si512(h, m3), 4));
                const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4),
                                                   _mm512_slli_epi16(_mm512_and_si512(h, mc), 2));
                const __m512i il = _mm512_add_epi16(ibase, _mm512_set1_epi16((short)(2 * s)));
                const __m512i ih = _mm512_add_epi16(il, _mm512_set1_epi16(1));
                acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(lo, xl),
                                          _mm512_permutex2var_epi16(sc01, il, sc23));
                acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(hi, xh),
                                          _mm512_permutex2var_epi16(sc01, ih, sc23));
            }
            const __m512i bs = _mm512_broadcast_i64x4(
                _mm256_loadu_si256((const __m256i *)(const void *)(x->bs16 + 16 * b)));
            const __m512i o01 = _mm512_madd_epi16(sc01, bs), o23 = _mm512_madd_epi16(sc23, bs);
            const __m512i off =
                _mm512_add_epi32(_mm512_shuffle_i32x4(o01, o23, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_i32x4(o01, o23, _MM_SHUFFLE(3, 1, 3, 1)));
            acc = _mm512_sub_epi32(acc, _mm512_slli_epi32(off, 5));
            f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), row_scale(rec, x->d[b]), f);
        }
        rows_out(f, g, rows, y);
    }
}

/* The chunk at c (sub-block of a record) as unsigned bytes: *lo the values 0-15 of each row (row
 * r in 128-bit lane r), *hi the values 16-31. */
T_AVX512 static inline void widen512(uint32_t t, const unsigned char *c, __m512i *lo, __m512i *hi)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i v = _mm512_loadu_si512((const void *)c);
    *lo = _mm512_and_si512(v, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    if (vg_kq_five_bits(t)) {
        const __m512i v16 = _mm512_set1_epi8(0x10);
        uint64_t bl, bh;
        memcpy(&bl, c + 64, 8);
        memcpy(&bh, c + 72, 8);
        *lo = _mm512_mask_add_epi8(*lo, (__mmask64)bl, *lo, v16);
        *hi = _mm512_mask_add_epi8(*hi, (__mmask64)bh, *hi, v16);
    } else if (t == VG_GGML_Q6_K) {
        const __m256i hb = _mm256_loadu_si256((const __m256i *)(const void *)(c + 64));
        const __m512i h =
            _mm512_inserti64x4(_mm512_castsi256_si512(hb), _mm256_srli_epi16(hb, 4), 1);
        *lo = _mm512_or_si512(*lo, _mm512_slli_epi16(_mm512_and_si512(h, _mm512_set1_epi8(3)), 4));
        *hi = _mm512_or_si512(*hi, _mm512_slli_epi16(_mm512_and_si512(h, _mm512_set1_epi8(12)), 2));
    }
}

/* Q4_0 / Q4_1 / Q5_0 / Q5_1 (the AVX2 kernel's arithmetic, four rows a register): VPDPBUSD sums
 * four products of the unsigned quants and the int8 activation into int32 (four per row, row r
 * in 128-bit lane r); the record's 32 fp16 d (and m), [s][r], are widened and times dx once, and
 * sub-block s's four picked into the rows' lanes by one permute. */
T_AVX512 static void gemv_b32_avx512(uint32_t t, const unsigned char *w, size_t K, size_t rows,
                                     size_t g0, size_t g1, const vg_kq_act *x, float *y)
{
    const int mn = vg_kq_has_min(t), off = vg_kq_offset(t);
    const size_t nb = K / 256, hdr = vg_kq_hdr_bytes(t), cb = vg_kq_chunk_bytes(t),
                 rb = vg_kq_rec_bytes(t), line = vg_pf_stride;
    const __m512i ibase = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    for (size_t g = g0; g < g1; g++) {
        const unsigned char *grp = w + g * nb * rb;
        __m512 f = _mm512_setzero_ps();
        for (size_t b = 0; b < nb; b++) {
            const unsigned char *rec = grp + b * rb;
            const int8_t *xq = x->q + 256 * b;
            for (size_t o = 0; o < rb; o += line) /* kernels.h: vg_pf_stride */
                _mm_prefetch((const char *)rec + KQ_PF + o, _MM_HINT_T0);
            const __m512 dx = _mm512_set1_ps(x->d[b]);
            __m512 dv[2], mv[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
            for (int h = 0; h < 2; h++) {
                dv[h] = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256(
                                          (const __m256i *)(const void *)(rec + 32 * h))),
                                      dx);
                if (mn)
                    mv[h] = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256(
                                              (const __m256i *)(const void *)(rec + 64 + 32 * h))),
                                          dx);
            }
            for (int s = 0; s < 8; s++) {
                const __m512i xl = _mm512_broadcast_i32x4(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s)));
                const __m512i xh = _mm512_broadcast_i32x4(
                    _mm_loadu_si128((const __m128i *)(const void *)(xq + 32 * s + 16)));
                __m512i lo, hi;
                widen512(t, rec + hdr + (size_t)s * cb, &lo, &hi);
                __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xl);
                acc = _mm512_dpbusd_epi32(acc, hi, xh);
                const int bs = x->bs32[8 * b + (size_t)s];
                if (off)
                    acc = _mm512_sub_epi32(acc, _mm512_maskz_set1_epi32(0x1111, off * bs));
                const __m512i idx = _mm512_add_epi32(ibase, _mm512_set1_epi32(4 * (s & 3)));
                f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_permutexvar_ps(idx, dv[s >> 2]),
                                    f);
                if (mn)
                    f = _mm512_fmadd_ps(_mm512_maskz_mov_ps(0x1111, _mm512_set1_ps((float)bs)),
                                        _mm512_permutexvar_ps(idx, mv[s >> 2]), f);
            }
        }
        rows_out(f, g, rows, y);
    }
}

/* 16 unsigned bytes -> (scale * q) - min (Q6_K: scale * (q - 32)), float32 as the scalar unpacking
 * computes it (no fused multiply-add), rounded to bf16 (to nearest even; the values are finite). */
T_AVX512 static inline __m256i deq16_bf16(__m128i q8, __m512i off, __m512 scale, __m512 min)
{
    __m512 q = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(q8), off));
    __m512i u = _mm512_castps_si512(_mm512_sub_ps(_mm512_mul_ps(scale, q), min));
    u = _mm512_add_epi32(
        u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                            _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16));
}

#define DEQ_ROW(r)                                                                                 \
    do {                                                                                           \
        float sl, sh, ml;                                                                          \
        row_scales(t, rec, d, dm, r, s, &sl, &sh, &ml);                                            \
        uint16_t *o = out + (r)*32;                                                                \
        _mm256_storeu_si256((__m256i *)(void *)o,                                                  \
                            deq16_bf16(_mm512_extracti32x4_epi32(lo, r), off, _mm512_set1_ps(sl),  \
                                       _mm512_set1_ps(ml)));                                       \
        _mm256_storeu_si256((__m256i *)(void *)(o + 16),                                           \
                            deq16_bf16(_mm512_extracti32x4_epi32(hi, r), off, _mm512_set1_ps(sh),  \
                                       _mm512_set1_ps(ml)));                                       \
    } while (0)

T_AVX512 static void group_bf16_avx512(uint32_t t, const unsigned char *group, size_t K,
                                       uint16_t *dst)
{
    const size_t hdr = vg_kq_hdr_bytes(t), cb = vg_kq_chunk_bytes(t), rb = vg_kq_rec_bytes(t);
    const __m512i off = _mm512_set1_epi32(vg_kq_offset(t));
    for (size_t b = 0; b < K / 256; b++) {
        const unsigned char *rec = group + b * rb;
        float d[4], dm[4];
        half4(rec, d);
        half4(rec + 8, dm); /* unused but by Q4_K / Q5_K */
        for (int s = 0; s < 8; s++) {
            __m512i lo, hi;
            widen512(t, rec + hdr + (size_t)s * cb, &lo, &hi);
            uint16_t *out = dst + (8 * b + (size_t)s) * 4 * 32; /* [K / 32][4][32] */
            DEQ_ROW(0);
            DEQ_ROW(1);
            DEQ_ROW(2);
            DEQ_ROW(3);
        }
    }
}

int vg_kq_group_to_bf16_x86(int level, uint32_t t, const unsigned char *group, size_t K,
                            uint16_t *dst)
{
    if (!vg_kq_rec_bytes(t) || level < VG_ISA_AVX512)
        return 0;
    group_bf16_avx512(t, group, K, dst);
    return 1;
}

int vg_kq_gemv_x86(int level, uint32_t t, const unsigned char *w, size_t K, size_t rows, size_t g0,
                   size_t g1, const vg_kq_act *x, float *y)
{
    if (!vg_kq_rec_bytes(t) || level < VG_ISA_AVX2)
        return 0;
    if (vg_kq_b32(t)) {
        if (level >= VG_ISA_AVX512)
            gemv_b32_avx512(t, w, K, rows, g0, g1, x, y);
        else
            gemv_b32_avx2(t, w, K, rows, g0, g1, x, y);
    } else if (level >= VG_ISA_AVX512) {
        if (t == VG_GGML_Q6_K)
            gemv_q6k_avx512(w, K, rows, g0, g1, x, y);
        else
            gemv_q45k_avx512(t == VG_GGML_Q5_K, w, K, rows, g0, g1, x, y);
    } else if (t == VG_GGML_Q6_K) {
        gemv_q6k_avx2(w, K, rows, g0, g1, x, y);
    } else {
        gemv_q45k_avx2(t == VG_GGML_Q5_K, w, K, rows, g0, g1, x, y);
    }
    return 1;
}

#else
int vg_kq_gemv_x86(int level, uint32_t t, const unsigned char *w, size_t K, size_t rows, size_t g0,
                   size_t g1, const vg_kq_act *x, float *y)
{
    (void)level, (void)t, (void)w, (void)K, (void)rows, (void)g0, (void)g1, (void)x, (void)y;
    return 0;
}
int vg_kq_group_to_bf16_x86(int level, uint32_t t, const unsigned char *group, size_t K,
                            uint16_t *dst)
{
    (void)level, (void)t, (void)group, (void)K, (void)dst;
    return 0;
}
int vg_kq_group_to_f32_x86(int level, uint32_t t, const unsigned char *group, size_t K, float *dst)
{
    (void)level, (void)t, (void)group, (void)K, (void)dst;
    return 0;
}
#endif
