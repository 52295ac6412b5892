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

#include <float.h>
#include <math.h>
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

/* The whole blocks of n values of block type t, each through deq; the block's values and bytes
 * come from the one table of GGML types (gguf.c). */
static int deq_blocks(uint32_t t, void (*deq)(const unsigned char *, float *),
                      const unsigned char *p, size_t n, float *dst)
{
    size_t be, bb;
    if (vg_ggml_type_block(t, &be, &bb) != 0)
        return -1;
    for (size_t b = 0; b < n / be; b++)
        deq(p + bb * b, dst + be * b);
    return 0;
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
        return deq_blocks(t, deq_q8_0, p, n, dst);
    case VG_GGML_Q4_0:
        return deq_blocks(t, deq_q4_0, p, n, dst);
    case VG_GGML_Q4_1:
        return deq_blocks(t, deq_q4_1, p, n, dst);
    case VG_GGML_Q5_0:
        return deq_blocks(t, deq_q5_0, p, n, dst);
    case VG_GGML_Q5_1:
        return deq_blocks(t, deq_q5_1, p, n, dst);
    case VG_GGML_Q4_K:
        return deq_blocks(t, deq_q4_k, p, n, dst);
    case VG_GGML_Q5_K:
        return deq_blocks(t, deq_q5_k, p, n, dst);
    case VG_GGML_Q6_K:
        return deq_blocks(t, deq_q6_k, p, n, dst);
    default:
        return -1;
    }
}

/* ---------------------------------------------------------------------------------------------------
 * The engine's view of GGUF tensors (internal.h: vg_tensor with a block dtype).
 */
uint32_t vg_dtype_ggml(vg_dtype dt)
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
        if (vg_dtype_ggml((vg_dtype)d) == ggml_type) {
            *out = (vg_dtype)d;
            return 0;
        }
    return -1;
}

void vg_dtype_block(vg_dtype dt, size_t *elems, size_t *bytes)
{
    if (vg_ggml_type_block(vg_dtype_ggml(dt), elems, bytes) != 0) {
        *elems = 1;
        *bytes = 4;
    }
}

const char *vg_dtype_block_name(vg_dtype dt)
{
    return vg_ggml_type_name(vg_dtype_ggml(dt));
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
    vg_quant_dequant(vg_dtype_ggml(t->dtype), p, (r1 - r0) * K, dst);
}

void vg_tensor_dequant_all(const vg_tensor *t, float *dst)
{
    vg_quant_dequant(vg_dtype_ggml(t->dtype), t->data, t->numel, dst);
}

float vg_tensor_elem_f32(const vg_tensor *t, size_t i)
{
    size_t be, bb;
    vg_dtype_block(t->dtype, &be, &bb);
    float blk[256];
    vg_quant_dequant(vg_dtype_ggml(t->dtype), (const unsigned char *)t->data + i / be * bb, be,
                     blk);
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

/* ---------------------------------------------------------------------------------------------------
 * Quantization: llama.cpp's reference quantizers (ggml-quants.c quantize_row_*_ref, which
 * llama-quantize runs without an importance matrix), operation for operation, so that the bytes
 * match llama-quantize's (test_gguf_model checks them against llama-quantize's own files).
 */
/* float -> IEEE half, round to nearest even (what F16C's _cvtss_sh(x, 0) gives). */
static uint16_t to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) /* 65520 and up round to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: a half subnormal (or zero); exact scaling by 2^24 */
        float a;
        memcpy(&a, &ax, 4);
        return (uint16_t)(sign | (uint32_t)nearbyintf(a * 16777216.0f));
    }
    uint32_t h = (((ax >> 23) - 112) << 10) | ((ax >> 13) & 0x3ffu), rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

static void put_half(unsigned char *p, float f)
{
    uint16_t h = to_half(f);
    memcpy(p, &h, 2);
}

static int nearest_int(float fval)
{
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

#define QMIN(a, b) ((a) < (b) ? (a) : (b))
#define QMAX(a, b) ((a) > (b) ? (a) : (b))

static void q_q8_0(const float *x, unsigned char *y)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++)
        amax = QMAX(amax, fabsf(x[j]));
    const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
    put_half(y, d);
    for (int j = 0; j < 32; j++)
        y[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
}

static void q_q4_0(const float *x, unsigned char *y)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    const float d = max / -8, id = d ? 1.0f / d : 0.0f;
    put_half(y, d);
    for (int j = 0; j < 16; j++) {
        const float x0 = x[j] * id, x1 = x[16 + j] * id;
        const uint8_t a = (uint8_t)QMIN(15, (int8_t)(x0 + 8.5f)),
                      b = (uint8_t)QMIN(15, (int8_t)(x1 + 8.5f));
        y[2 + j] = (unsigned char)(a | (b << 4));
    }
}

static void q_q5_0(const float *x, unsigned char *y)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    const float d = max / -16, id = d ? 1.0f / d : 0.0f;
    put_half(y, d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        const float x0 = x[j] * id, x1 = x[16 + j] * id;
        const uint8_t a = (uint8_t)QMIN(31, (int8_t)(x0 + 16.5f)),
                      b = (uint8_t)QMIN(31, (int8_t)(x1 + 16.5f));
        y[6 + j] = (unsigned char)((a & 15) | ((b & 15) << 4));
        qh |= ((a & 0x10u) >> 4) << j;
        qh |= ((b & 0x10u) >> 4) << (j + 16);
    }
    memcpy(y + 2, &qh, 4);
}

static void q_q5_1(const float *x, unsigned char *y)
{
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
        if (x[j] < min)
            min = x[j];
        if (x[j] > max)
            max = x[j];
    }
    const float d = (max - min) / 31, id = d ? 1.0f / d : 0.0f;
    put_half(y, d);
    put_half(y + 2, min);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        const float x0 = (x[j] - min) * id, x1 = (x[16 + j] - min) * id;
        const uint8_t a = (uint8_t)(x0 + 0.5f), b = (uint8_t)(x1 + 0.5f);
        y[8 + j] = (unsigned char)((a & 15) | ((b & 15) << 4));
        qh |= ((a & 0x10u) >> 4) << j;
        qh |= ((b & 0x10u) >> 4) << (j + 16);
    }
    memcpy(y + 4, &qh, 4);
}

static float make_qx_quants(int n, int nmax, const float *x, int8_t *L, int rmse_type)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    /* rmse_type 1 (the only one Q6_K uses): weights x^2 */
    (void)rmse_type;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = QMAX(-nmax, QMIN(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = QMAX(-nmax, QMIN(nmax - 1, l));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + QMAX(-nmax, QMIN(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep)
{
    float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)QMAX(0, QMIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = QMAX(0, QMIN(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i)
                    L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): scales, mins and L[256]; y gets d, dmin and scales[12]. */
static void q_k_scales(const float *x, int nmax, float rmin, int nstep, unsigned char *y,
                       uint8_t *L)
{
    float mins[8], scales[8], weights[32], max_scale = 0, max_min = 0;
    uint8_t Laux[32];
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l)
            sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l)
            weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                     rmin, 0.1f, nstep);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    unsigned char *sc = y + 4;
    memset(sc, 0, 12);
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = QMIN(63, ls);
        lm = QMIN(63, lm);
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (unsigned char)((ls & 0xF) | ((lm & 0xF) << 4));
            sc[j - 4] |= (unsigned char)((ls >> 4) << 6);
            sc[j - 0] |= (unsigned char)((lm >> 4) << 6);
        }
    }
    put_half(y, max_scale / 63.f);
    put_half(y + 2, max_min / 63.f);
    uint8_t s8[8], m8[8];
    scale_min_k4(sc, s8, m8);
    for (int j = 0; j < 8; ++j) {
        const float d = half(y) * s8[j];
        if (!d)
            continue;
        const float dm = half(y + 2) * m8[j];
        for (int ii = 0; ii < 32; ++ii) {
            int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)QMAX(0, QMIN(nmax, l));
        }
    }
}

static void q_q4_k(const float *x, unsigned char *y)
{
    uint8_t L[256];
    q_k_scales(x, 15, -1.f, 20, y, L);
    unsigned char *q = y + 16;
    for (int j = 0; j < 256; j += 64) {
        for (int l = 0; l < 32; ++l)
            q[l] = (unsigned char)(L[j + l] | (L[j + l + 32] << 4));
        q += 32;
    }
}

static void q_q5_k(const float *x, unsigned char *y)
{
    uint8_t L[256];
    q_k_scales(x, 31, -0.5f, 15, y, L);
    unsigned char *qh = y + 16, *ql = y + 48;
    memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < 256; n += 64) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) {
                l1 -= 16;
                qh[j] |= m1;
            }
            if (l2 > 15) {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[j] = (unsigned char)(l1 | (l2 << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
        ql += 32;
    }
}

static void q_q6_k(const float *x, unsigned char *y)
{
    int8_t L[256];
    float scales[16], max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
        const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1);
        scales[ib] = scale;
        if (fabsf(scale) > max_abs_scale) {
            max_abs_scale = fabsf(scale);
            max_scale = scale;
        }
    }
    memset(y, 0, 210);
    if (max_abs_scale < 1e-15f)
        return; /* d = 0 */
    float iscale = -128.f / max_scale;
    put_half(y + 208, 1 / iscale);
    int8_t *sc = (int8_t *)(y + 192);
    for (int ib = 0; ib < 16; ++ib)
        sc[ib] = (int8_t)QMIN(127, nearest_int(iscale * scales[ib]));
    for (int j = 0; j < 16; ++j) {
        float d = half(y + 208) * sc[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(QMAX(-32, QMIN(31, l)) + 32);
        }
    }
    unsigned char *ql = y, *qh = y + 128;
    for (int j = 0; j < 256; j += 128) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF,
                          q4 = L[j + l + 96] & 0xF;
            ql[l] = (unsigned char)(q1 | (q3 << 4));
            ql[l + 32] = (unsigned char)(q2 | (q4 << 4));
            qh[l] = (unsigned char)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                    ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

int vg_quant_quantize(uint32_t t, const float *x, size_t n, void *dst)
{
    unsigned char *y = dst;
    size_t be, bb;
    if (vg_ggml_type_block(t, &be, &bb) != 0 || n % be)
        return -1;
    for (size_t b = 0; b < n / be; b++, x += be, y += bb) {
        switch (t) {
        case VG_GGML_F32:
            memcpy(y, x, 4);
            break;
        case VG_GGML_F16:
            put_half(y, x[0]);
            break;
        case VG_GGML_BF16: {
            uint16_t h = vg_f32_to_bf16(x[0]);
            memcpy(y, &h, 2);
            break;
        }
        case VG_GGML_Q8_0:
            q_q8_0(x, y);
            break;
        case VG_GGML_Q4_0:
            q_q4_0(x, y);
            break;
        case VG_GGML_Q5_0:
            q_q5_0(x, y);
            break;
        case VG_GGML_Q5_1:
            q_q5_1(x, y);
            break;
        case VG_GGML_Q4_K:
            q_q4_k(x, y);
            break;
        case VG_GGML_Q5_K:
            q_q5_k(x, y);
            break;
        case VG_GGML_Q6_K:
            q_q6_k(x, y);
            break;
        default:
            return -1;
        }
    }
    return 0;
}
