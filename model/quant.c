/*
 * quant.c: dequantization of GGUF tensor types (quant.h).
 *
 * Each block is decoded with exactly the float32 operations of gguf-py's numpy reference, in the
 * same order (for Q4_K: dl = d * sc and ml = dmin * m rounded to float32 first, then dl * q - ml),
 * so the results are bit-identical; this file is compiled with -ffp-contract=off (model/
 * CMakeLists.txt) so that no multiply-add is fused. Blocks are read through memcpy (a GGUF tensor
 * is 32-byte aligned in the file, but a block of 34 or 18 bytes is not aligned to anything).
 *
 * Pure functions, any thread.
 */
#include "quant.h"

#include "gguf.h"
#include "internal.h"
#include "kernels.h"

#include <string.h>

/* IEEE half to float, as numpy's float16 -> float32 (every value exact, NaN payload kept). */
static float half(const unsigned char *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void deq_q8_0(const unsigned char *b, float *y)
{
    float d = half(b);
    for (int j = 0; j < 32; j++)
        y[j] = d * (float)(int8_t)b[2 + j];
}

static void deq_q4_0(const unsigned char *b, float *y)
{
    float d = half(b);
    const unsigned char *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((int)(qs[j] & 15) - 8);
        y[j + 16] = d * (float)((int)(qs[j] >> 4) - 8);
    }
}

static void deq_q4_1(const unsigned char *b, float *y)
{
    float d = half(b), m = half(b + 2);
    const unsigned char *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        float lo = d * (float)(qs[j] & 15), hi = d * (float)(qs[j] >> 4);
        y[j] = lo + m;
        y[j + 16] = hi + m;
    }
}

static void deq_q5_0(const unsigned char *b, float *y)
{
    float d = half(b);
    uint32_t qh;
    memcpy(&qh, b + 2, 4);
    const unsigned char *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 15) | (int)(((qh >> j) & 1) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)(lo - 16);
        y[j + 16] = d * (float)(hi - 16);
    }
}

static void deq_q5_1(const unsigned char *b, float *y)
{
    float d = half(b), m = half(b + 2);
    uint32_t qh;
    memcpy(&qh, b + 4, 4);
    const unsigned char *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 15) | (int)(((qh >> j) & 1) << 4);
        int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        float pl = d * (float)lo, ph = d * (float)hi;
        y[j] = pl + m;
        y[j + 16] = ph + m;
    }
}

/* The 8 six-bit scales and mins of a Q4_K / Q5_K block. */
static void scale_min_k4(const unsigned char *s, uint8_t sc[8], uint8_t m[8])
{
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 15) | ((s[j] >> 2) & 0x30));
        m[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30));
    }
}

static void deq_q4_k(const unsigned char *b, float *y)
{
    float d = half(b), dmin = half(b + 2);
    uint8_t sc[8], m[8];
    scale_min_k4(b + 4, sc, m);
    const unsigned char *qs = b + 16;
    for (int s = 0; s < 8; s++) {
        float dl = d * (float)sc[s], ml = dmin * (float)m[s];
        const unsigned char *q = qs + 32 * (s / 2);
        int shift = 4 * (s & 1);
        for (int j = 0; j < 32; j++) {
            float p = dl * (float)((q[j] >> shift) & 15);
            y[32 * s + j] = p - ml;
        }
    }
}

static void deq_q5_k(const unsigned char *b, float *y)
{
    float d = half(b), dmin = half(b + 2);
    uint8_t sc[8], m[8];
    scale_min_k4(b + 4, sc, m);
    const unsigned char *qh = b + 16, *qs = b + 48;
    for (int s = 0; s < 8; s++) {
        float dl = d * (float)sc[s], ml = dmin * (float)m[s];
        const unsigned char *q = qs + 32 * (s / 2);
        int shift = 4 * (s & 1);
        for (int j = 0; j < 32; j++) {
            int v = ((q[j] >> shift) & 15) | (((qh[j] >> s) & 1) << 4);
            float p = dl * (float)v;
            y[32 * s + j] = p - ml;
        }
    }
}

static void deq_q6_k(const unsigned char *b, float *y)
{
    const unsigned char *ql = b, *qh = b + 128, *sc = b + 192;
    float d = half(b + 208);
    for (int i = 0; i < 256; i++) {
        int h = i / 128, r = i % 128;
        int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 15;
        int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        float ds = d * (float)(int8_t)sc[i / 16];
        y[i] = ds * (float)((lo | (hi << 4)) - 32);
    }
}

int vg_quant_supported(uint32_t t)
{
    switch (t) {
    case VG_GGML_F32:
    case VG_GGML_F16:
    case VG_GGML_BF16:
    case VG_GGML_Q8_0:
    case VG_GGML_Q4_0:
    case VG_GGML_Q4_1:
    case VG_GGML_Q5_0:
    case VG_GGML_Q5_1:
    case VG_GGML_Q4_K:
    case VG_GGML_Q5_K:
    case VG_GGML_Q6_K:
        return 1;
    default:
        return 0;
    }
}

int vg_quant_dequant(uint32_t t, const void *src, size_t n, float *dst)
{
    const unsigned char *p = src;
    switch (t) {
    case VG_GGML_F32:
        if (n)
            memcpy(dst, p, n * 4);
        return 0;
    case VG_GGML_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = half(p + 2 * i);
        return 0;
    case VG_GGML_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(&dst[i], &u, 4);
        }
        return 0;
    case VG_GGML_Q8_0:
        for (size_t b = 0; b < n / 32; b++)
            deq_q8_0(p + 34 * b, dst + 32 * b);
        return 0;
    case VG_GGML_Q4_0:
        for (size_t b = 0; b < n / 32; b++)
            deq_q4_0(p + 18 * b, dst + 32 * b);
        return 0;
    case VG_GGML_Q4_1:
        for (size_t b = 0; b < n / 32; b++)
            deq_q4_1(p + 20 * b, dst + 32 * b);
        return 0;
    case VG_GGML_Q5_0:
        for (size_t b = 0; b < n / 32; b++)
            deq_q5_0(p + 22 * b, dst + 32 * b);
        return 0;
    case VG_GGML_Q5_1:
        for (size_t b = 0; b < n / 32; b++)
            deq_q5_1(p + 24 * b, dst + 32 * b);
        return 0;
    case VG_GGML_Q4_K:
        for (size_t b = 0; b < n / 256; b++)
            deq_q4_k(p + 144 * b, dst + 256 * b);
        return 0;
    case VG_GGML_Q5_K:
        for (size_t b = 0; b < n / 256; b++)
            deq_q5_k(p + 176 * b, dst + 256 * b);
        return 0;
    case VG_GGML_Q6_K:
        for (size_t b = 0; b < n / 256; b++)
            deq_q6_k(p + 210 * b, dst + 256 * b);
        return 0;
    default:
        return -1;
    }
}

/* ---------------------------------------------------------------------------------------------------
 * The engine's view of GGUF tensors (internal.h: vg_tensor with a block dtype).
 */
static uint32_t dtype_ggml(vg_dtype dt)
{
    static const uint32_t map[] = {
        [VG_DT_F32] = VG_GGML_F32,   [VG_DT_BF16] = VG_GGML_BF16, [VG_DT_F16] = VG_GGML_F16,
        [VG_DT_Q8_0] = VG_GGML_Q8_0, [VG_DT_Q4_0] = VG_GGML_Q4_0, [VG_DT_Q4_K] = VG_GGML_Q4_K,
        [VG_DT_Q5_K] = VG_GGML_Q5_K, [VG_DT_Q6_K] = VG_GGML_Q6_K, [VG_DT_Q4_1] = VG_GGML_Q4_1,
        [VG_DT_Q5_0] = VG_GGML_Q5_0, [VG_DT_Q5_1] = VG_GGML_Q5_1,
    };
    return (unsigned)dt < sizeof map / sizeof map[0] ? map[dt] : UINT32_MAX;
}

int vg_dtype_from_ggml(uint32_t ggml_type, vg_dtype *out)
{
    for (int d = VG_DT_F32; d <= VG_DT_Q5_1; d++)
        if (dtype_ggml((vg_dtype)d) == ggml_type) {
            *out = (vg_dtype)d;
            return 0;
        }
    return -1;
}

void vg_dtype_block(vg_dtype dt, size_t *elems, size_t *bytes)
{
    if (vg_ggml_type_block(dtype_ggml(dt), elems, bytes) != 0) {
        *elems = 1;
        *bytes = 4;
    }
}

const char *vg_dtype_block_name(vg_dtype dt)
{
    return vg_ggml_type_name(dtype_ggml(dt));
}

static size_t row_len(const vg_tensor *t)
{
    return t->ndim ? (size_t)t->shape[t->ndim - 1] : 1;
}

void vg_tensor_rows_f32(const vg_tensor *t, size_t r0, size_t r1, float *dst)
{
    size_t K = row_len(t), be, bb;
    vg_dtype_block(t->dtype, &be, &bb);
    const unsigned char *p = (const unsigned char *)t->data + r0 * (K / be) * bb;
    vg_quant_dequant(dtype_ggml(t->dtype), p, (r1 - r0) * K, dst);
}

void vg_tensor_dequant_all(const vg_tensor *t, float *dst)
{
    vg_quant_dequant(dtype_ggml(t->dtype), t->data, t->numel, dst);
}

float vg_tensor_elem_f32(const vg_tensor *t, size_t i)
{
    size_t be, bb;
    vg_dtype_block(t->dtype, &be, &bb);
    float blk[256];
    vg_quant_dequant(dtype_ggml(t->dtype), (const unsigned char *)t->data + i / be * bb, be, blk);
    return blk[i % be];
}

void vg_pack_row_q8_raw(const void *blocks, size_t K, int r, int8_t *group)
{
    const unsigned char *b = blocks;
    uint16_t *sc = (uint16_t *)(void *)(group + (size_t)VG_PACK_ROWS * K);
    for (size_t k = 0; k < K / 32; k++, b += 34) {
        int8_t *q = group + (k * VG_PACK_ROWS + (size_t)r) * 32;
        memcpy(&sc[k * VG_PACK_ROWS + (size_t)r], b, 2);
        memcpy(q, b + 2, 32);
        for (int j = 0; j < 32; j++) /* the kernels' invariant: |q| <= 127 */
            if (q[j] == -128)
                q[j] = -127;
    }
}
