/*
 * simd_x86.h: vector helpers shared by model/'s x86 kernels (private to model/; include only from
 * files that already include <immintrin.h> on x86-64).
 */
#ifndef VG_MODEL_SIMD_X86_H
#define VG_MODEL_SIMD_X86_H

#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>

/* e^x for 16 lanes with the polynomial of ops.c's portable exp4 (1 ulp), 2^n applied with
 * VSCALEFPS: 0 below -87 (masked and underflowing scores), x clamped to 88 above, NaN stays NaN.
 * Callers need AVX-512F at least (their own target attribute, a superset, inlines it). */
__attribute__((target("avx512f"))) static inline __m512 vg_exp16(__m512 x)
{
    const __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
    x = _mm512_mask_blend_ps(under, x, _mm512_set1_ps(-87.0f));
    x = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(88.0f), _CMP_GT_OQ), x,
                             _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p =
        _mm512_fmadd_ps(r, _mm512_set1_ps(1.9875691500e-4f), _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_mov_ps((__mmask16)~under, _mm512_scalef_ps(p, n));
}

/* 16 bf16 values (h) widened to float32 (exact: the bits moved up by 16). AVX-512F at least. */
__attribute__((target("avx512f"))) static inline __m512 vg_bf16x16_ps(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* The same, loaded from p (unaligned). */
__attribute__((target("avx512f"))) static inline __m512 vg_load_bf16x16(const uint16_t *p)
{
    return vg_bf16x16_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

/* AMX tile configuration (palette 1): tile t gets rows[t] rows of 64 bytes for t < 8, the others
 * none; loaded for the calling thread (release with _tile_release). Callers need AMX-TILE (their
 * own target attribute). */
typedef struct vg_tilecfg {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) vg_tilecfg;

__attribute__((target("amx-tile"))) static inline void vg_tiles_config(const uint8_t rows[8])
{
    vg_tilecfg cfg;
    __builtin_memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = rows[t];
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
}
#endif

#endif
