/*
 * quant_x86.c: AVX2 products on Q4_K / Q6_K blocks with a Q8_K activation (quant.h). Used at the
 * avx2 and avx512 levels (the AVX2 code is what runs there; no 512-bit variant yet). Each block's
 * integer sums are those of the scalar kernels in quant.c: VPMADDUBSW (unsigned 4/6-bit weights x
 * signed int8 activations, pairs summed in int16 without overflow: at most 2 * 63 * 127) then
 * VPMADDWD by the sub-block scales into int32; the mins (Q4_K) and the -32 offset (Q6_K) go
 * through the activation's sums of 16. Pure, any thread.
 */
#include "quant.h"

#include "gguf.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))

T_AVX2 static inline float h2f(const unsigned char *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

T_AVX2 static inline int hsum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

T_AVX2 static float dot_q4_k(const unsigned char *w, size_t nb, const vg_q8k *x)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    float sum = 0.0f;
    for (size_t b = 0; b < nb; b++, w += 144) {
        const unsigned char *s = w + 4;
        uint8_t sc[8], m[8];
        for (int j = 0; j < 4; j++) {
            sc[j] = s[j] & 63;
            m[j] = s[j + 4] & 63;
            sc[j + 4] = (uint8_t)((s[j + 8] & 15) | ((s[j] >> 2) & 0x30));
            m[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30));
        }
        const int8_t *q8 = x->q + 256 * b;
        const int16_t *bs = x->bsums + 16 * b;
        __m256i acc = _mm256_setzero_si256();
        for (int i = 0; i < 4; i++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(w + 16 + 32 * i));
            __m256i lo = _mm256_and_si256(q, m4),
                    hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m256i xl = _mm256_loadu_si256((const __m256i *)(const void *)(q8 + 64 * i));
            __m256i xh = _mm256_loadu_si256((const __m256i *)(const void *)(q8 + 64 * i + 32));
            __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl),
                                           _mm256_set1_epi16((short)sc[2 * i]));
            __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh),
                                           _mm256_set1_epi16((short)sc[2 * i + 1]));
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(pl, ph));
        }
        int32_t summ = 0;
        for (int j = 0; j < 8; j++)
            summ += m[j] * (bs[2 * j] + bs[2 * j + 1]);
        const float d = x->d[b];
        sum += h2f(w) * d * (float)hsum_i32(acc) - h2f(w + 2) * d * (float)summ;
    }
    return sum;
}

T_AVX2 static float dot_q6_k(const unsigned char *w, size_t nb, const vg_q8k *x)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x03);
    float sum = 0.0f;
    for (size_t b = 0; b < nb; b++, w += 210) {
        const int8_t *sc = (const int8_t *)(w + 192);
        const int8_t *q8 = x->q + 256 * b;
        const int16_t *bs = x->bsums + 16 * b;
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const unsigned char *ql = w + 64 * h, *qh = w + 128 + 32 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(ql + 32));
            __m256i hb = _mm256_loadu_si256((const __m256i *)(const void *)qh);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
            q[1] = _mm256_or_si256(
                _mm256_and_si256(l1, m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
            q[2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
            q[3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
            for (int k = 0; k < 4; k++) {
                const int g = 8 * h + 2 * k; /* scale groups g (values 0..15) and g + 1 */
                __m256i xv =
                    _mm256_loadu_si256((const __m256i *)(const void *)(q8 + 128 * h + 32 * k));
                __m256i p = _mm256_maddubs_epi16(q[k], xv);
                __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, s));
            }
        }
        int32_t off = 0;
        for (int g = 0; g < 16; g++)
            off += sc[g] * bs[g];
        sum += h2f(w + 208) * x->d[b] * (float)(hsum_i32(acc) - 32 * off);
    }
    return sum;
}

int vg_quant_gemv_avx2(uint32_t t, const unsigned char *w, size_t row_bytes, size_t K, size_t r0,
                       size_t r1, const vg_q8k *x, float *y)
{
    if (t != VG_GGML_Q4_K && t != VG_GGML_Q6_K)
        return 0;
    for (size_t r = r0; r < r1; r++)
        y[r] = t == VG_GGML_Q4_K ? dot_q4_k(w + r * row_bytes, K / 256, x)
                                 : dot_q6_k(w + r * row_bytes, K / 256, x);
    return 1;
}

#else
int vg_quant_gemv_avx2(uint32_t t, const unsigned char *w, size_t row_bytes, size_t K, size_t r0,
                       size_t r1, const vg_q8k *x, float *y)
{
    (void)t, (void)w, (void)row_bytes, (void)K, (void)r0, (void)r1, (void)x, (void)y;
    return 0;
}
#endif
