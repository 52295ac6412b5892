/*
 * kernels.c: the portable (scalar) kernels for packed weights, packing and unpacking of the BF16
 * and Q8_0 group layouts of kernels.h, the Q8_0 activation quantizer, and the dispatch table that
 * picks a level's kernels (kernels_x86.c holds the AVX2 and AVX-512 ones).
 *
 * The several-rows kernels (bf16_gemm, q8_gemm) apply the one-row dot of each level to every
 * row; the scalar ones here loop over the rows (the reference, not a fast path).
 *
 * The scalar kernels are the reference the vectorized ones are tested against (tests/model/
 * test_kernels.c): same packed data, same quantized activations, the same function up to the order
 * of the float additions. Everything here is pure; any thread.
 */
#include "kernels.h"

#include <math.h>
#include <string.h>

/* ---- fp16 / bf16 conversions ---- */

uint16_t vg_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: subnormal half (or zero) */
        if (ax < 0x33000000u)
            return (uint16_t)sign;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(ax >> 23); /* 14..24 */
        uint32_t h = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((ax - 0x38000000u) >> 13);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

float vg_f16_to_f32_k(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    if (e == 0) {
        float f = ldexpf((float)m, -24);
        return sign ? -f : f;
    }
    if (e == 31)
        x = sign | 0x7f800000u | (m << 13);
    else
        x = sign | ((e + 112u) << 23) | (m << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static inline float bf16_to_f32(uint16_t v)
{
    uint32_t x = (uint32_t)v << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN stays a (quiet) NaN */
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ---- packing ---- */

void vg_pack_row_bf16(const float *src, size_t K, int r, uint16_t *group)
{
    vg_kernels_get(-1)->pack_row_bf16(src, K, r, group);
}

void vg_pack_row_bf16_scalar(const float *src, size_t K, int r, uint16_t *group)
{
    for (size_t c = 0; c < K / VG_QK; c++) {
        uint16_t *d = group + (c * VG_PACK_ROWS + (size_t)r) * VG_QK;
        for (int j = 0; j < VG_QK; j++)
            d[j] = f32_to_bf16(src[c * VG_QK + (size_t)j]);
    }
}

void vg_pack_row_bf16_raw(const void *src, size_t K, int r, uint16_t *group)
{
    const unsigned char *s = src;
    for (size_t c = 0; c < K / VG_QK; c++)
        memcpy(group + (c * VG_PACK_ROWS + (size_t)r) * VG_QK, s + c * VG_QK * 2,
               VG_QK * sizeof(uint16_t));
}

void vg_unpack_row_bf16(const uint16_t *group, size_t K, int r, float *dst)
{
    for (size_t c = 0; c < K / VG_QK; c++) {
        const uint16_t *s = group + (c * VG_PACK_ROWS + (size_t)r) * VG_QK;
        for (int j = 0; j < VG_QK; j++)
            dst[c * VG_QK + (size_t)j] = bf16_to_f32(s[j]);
    }
}

static inline uint16_t *q8_scales(int8_t *group, size_t K)
{
    return (uint16_t *)(void *)(group + (size_t)VG_PACK_ROWS * K);
}

void vg_pack_row_q8(const float *src, size_t K, int r, int8_t *group)
{
    vg_kernels_get(-1)->pack_row_q8(src, K, r, group);
}

void vg_pack_row_q8_scalar(const float *src, size_t K, int r, int8_t *group)
{
    uint16_t *sc = q8_scales(group, K);
    for (size_t b = 0; b < K / VG_QK; b++) {
        const float *x = src + b * VG_QK;
        float amax = 0.0f;
        for (int j = 0; j < VG_QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        /* the scale is stored as fp16, so quantize with the fp16-rounded scale */
        uint16_t h = vg_f32_to_f16(amax / 127.0f);
        float d = vg_f16_to_f32_k(h);
        float id = d > 0.0f ? 1.0f / d : 0.0f;
        int8_t *q = group + (b * VG_PACK_ROWS + (size_t)r) * VG_QK;
        for (int j = 0; j < VG_QK; j++) {
            float v = nearbyintf(x[j] * id);
            q[j] = (int8_t)(v != v ? 0 : v > 127.0f ? 127 : v < -127.0f ? -127 : v);
        }
        sc[b * VG_PACK_ROWS + (size_t)r] = h;
    }
}

void vg_unpack_row_q8(const int8_t *group, size_t K, int r, float *dst)
{
    const uint16_t *sc = (const uint16_t *)(const void *)(group + (size_t)VG_PACK_ROWS * K);
    for (size_t b = 0; b < K / VG_QK; b++) {
        float d = vg_f16_to_f32_k(sc[b * VG_PACK_ROWS + (size_t)r]);
        const int8_t *q = group + (b * VG_PACK_ROWS + (size_t)r) * VG_QK;
        for (int j = 0; j < VG_QK; j++)
            dst[b * VG_QK + (size_t)j] = d * (float)q[j];
    }
}

void vg_q8_quantize(const float *x, size_t K, int8_t *xq, float *xd)
{
    vg_kernels_get(-1)->q8_quantize(x, K, xq, xd);
}

void vg_q8_quantize_scalar(const float *x, size_t K, int8_t *xq, float *xd)
{
    for (size_t b = 0; b < K / VG_QK; b++) {
        const float *s = x + b * VG_QK;
        float amax = 0.0f;
        for (int j = 0; j < VG_QK; j++)
            amax = fmaxf(amax, fabsf(s[j]));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < VG_QK; j++) {
            float v = nearbyintf(s[j] * id);
            xq[b * VG_QK + (size_t)j] = (int8_t)(isnan(v)      ? 0
                                                 : v > 127.0f  ? 127
                                                 : v < -127.0f ? -127
                                                               : v);
        }
        xd[b] = d;
    }
}

/* ---- scalar kernels ---- */

static void bf16_prep_scalar(const float *x, size_t K, float *xp)
{
    memcpy(xp, x, K * sizeof(float));
}

/* Row r of a BF16 group against prepared x: the one order of additions every scalar product uses
 * (per chunk, then across chunks). */
static inline float bf16_dot_scalar(const uint16_t *grp, size_t K, int r, const float *xp)
{
    float acc = 0.0f;
    for (size_t c = 0; c < K / VG_QK; c++) {
        const uint16_t *s = grp + (c * VG_PACK_ROWS + (size_t)r) * VG_QK;
        const float *xc = xp + c * VG_QK;
        float part = 0.0f;
        for (int j = 0; j < VG_QK; j++)
            part += bf16_to_f32(s[j]) * xc[j];
        acc += part;
    }
    return acc;
}

static void bf16_gemv_scalar(const uint16_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                             const float *xp, float *y)
{
    for (size_t g = g0; g < g1; g++) {
        const uint16_t *grp = w + g * VG_PACK_ROWS * K;
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            size_t row = g * VG_PACK_ROWS + (size_t)r;
            if (row >= rows)
                break;
            y[row] = bf16_dot_scalar(grp, K, r, xp);
        }
    }
}

void vg_bf16_round(const float *x, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = bf16_to_f32(f32_to_bf16(x[i]));
}

static void bf16_prep_n_scalar(const float *x, size_t n, size_t K, float *xp)
{
    vg_bf16_round(x, n * K, xp);
}

static void bf16_gemm_scalar(const uint16_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                             const float *xp, size_t n, float *y, size_t ldy)
{
    for (size_t g = g0; g < g1; g++) {
        const uint16_t *grp = w + g * VG_PACK_ROWS * K;
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            size_t row = g * VG_PACK_ROWS + (size_t)r;
            if (row >= rows)
                break;
            for (size_t i = 0; i < n; i++)
                y[i * ldy + row] = bf16_dot_scalar(grp, K, r, xp + i * K);
        }
    }
}

/* Row r of a Q8_0 group against a quantized x: exact int32 block dots, scaled and summed in block
 * order (the scalar q8_gemv and q8_gemm share it, so they agree bit for bit). */
static inline float q8_dot_scalar(const int8_t *grp, size_t K, int r, const int8_t *xq,
                                  const float *xd)
{
    const uint16_t *sc = (const uint16_t *)(const void *)(grp + (size_t)VG_PACK_ROWS * K);
    float acc = 0.0f;
    for (size_t b = 0; b < K / VG_QK; b++) {
        const int8_t *q = grp + (b * VG_PACK_ROWS + (size_t)r) * VG_QK;
        const int8_t *xb = xq + b * VG_QK;
        int32_t isum = 0;
        for (int j = 0; j < VG_QK; j++)
            isum += (int32_t)q[j] * (int32_t)xb[j];
        acc += (float)isum * (vg_f16_to_f32_k(sc[b * VG_PACK_ROWS + (size_t)r]) * xd[b]);
    }
    return acc;
}

static void q8_gemv_scalar(const int8_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                           const int8_t *xq, const float *xd, float *y)
{
    const size_t gb = vg_pack_group_bytes_q8(K);
    for (size_t g = g0; g < g1; g++) {
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            size_t row = g * VG_PACK_ROWS + (size_t)r;
            if (row >= rows)
                break;
            y[row] = q8_dot_scalar(w + g * gb, K, r, xq, xd);
        }
    }
}

static void q8_prep_n_scalar(const float *x, size_t n, size_t K, int8_t *xq, float *xd)
{
    for (size_t i = 0; i < n; i++)
        vg_q8_quantize_scalar(x + i * K, K, xq + i * K, xd + i * (K / VG_QK));
}

static void q8_gemm_scalar(const int8_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                           const int8_t *xq, const float *xd, size_t n, float *y, size_t ldy)
{
    const size_t gb = vg_pack_group_bytes_q8(K), nb = K / VG_QK;
    for (size_t g = g0; g < g1; g++) {
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            size_t row = g * VG_PACK_ROWS + (size_t)r;
            if (row >= rows)
                break;
            for (size_t i = 0; i < n; i++)
                y[i * ldy + row] = q8_dot_scalar(w + g * gb, K, r, xq + i * K, xd + i * nb);
        }
    }
}

static uint64_t read_xor_scalar(const uint64_t *p, size_t n)
{
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a ^= p[i];
        b ^= p[i + 1];
        c ^= p[i + 2];
        d ^= p[i + 3];
    }
    for (; i < n; i++)
        a ^= p[i];
    return a ^ b ^ c ^ d;
}

void vg_widen_f16_scalar(const void *src, size_t n, float *dst)
{
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = vg_f16_to_f32_k(h);
    }
}

static const vg_kernels k_scalar = {
    .bf16_prep = bf16_prep_scalar,
    .bf16_gemv = bf16_gemv_scalar,
    .q8_gemv = q8_gemv_scalar,
    .bf16_prep_n = bf16_prep_n_scalar,
    .bf16_gemm = bf16_gemm_scalar,
    .q8_prep_n = q8_prep_n_scalar,
    .q8_gemm = q8_gemm_scalar,
    .read_xor = read_xor_scalar,
    .pack_row_q8 = vg_pack_row_q8_scalar,
    .pack_row_bf16 = vg_pack_row_bf16_scalar,
    .widen_f16 = vg_widen_f16_scalar,
    .q8_quantize = vg_q8_quantize_scalar,
};

#if defined(__x86_64__)
extern const vg_kernels vg_kernels_avx2, vg_kernels_avx512;
#endif

const vg_kernels *vg_kernels_get(int level)
{
    if (level < 0)
        level = vg_isa_level();
#if defined(__x86_64__)
    if (level >= VG_ISA_AVX512)
        return &vg_kernels_avx512;
    if (level >= VG_ISA_AVX2)
        return &vg_kernels_avx2;
#endif
    return &k_scalar;
}
