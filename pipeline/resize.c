/*
 * resize.c: antialiased bicubic resize of interleaved RGB uint8 frames, equal (up to rare +-1 at
 * near-ties) to the reference's torchvision resize(uint8, BICUBIC, antialias=True) on torch 1.13:
 * uint8 -> float32, separable Pillow-style antialiased filtering (width pass first, then height,
 * both in float32), clamp to [0, 255], round half to even.
 *
 * Filter (docs/qwen3vl.md §1.4, torch's _compute_indices_weights_aa): Keys cubic with a = -0.5;
 * scale = in/out (float32); support = 2*scale when downscaling, else 2; the taps of output i are j
 * in [int(center - support + 0.5), int(center + support + 0.5)) clamped to the image, with center =
 * scale*(i + 0.5) and weight filter((j - center + 0.5) / max(scale, 1)), normalised to sum
 * 1. The intermediate types follow torch's expressions (float32 center and weights, double filter
 * arithmetic), and each output is accumulated tap by tap in float32 in the same order as torch.
 *
 * Taps are computed once per output row and column; the inner loops only multiply and add floats.
 * Pure function with its own scratch: any thread may call it.
 */
#include "pipeline.h"

#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ROWS  8          /* source rows per width-pass block */
#define LANES (ROWS * 3) /* floats per source column of a block */

typedef struct taps {
    int *start; /* [out] first source index */
    int *size;  /* [out] number of taps */
    float *w;   /* [out][stride] weights */
    int stride; /* max taps per output */
} taps;

static float aa_cubic(float xf)
{
    double x = xf;
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return (float)(((a + 2.0) * x - (a + 3.0)) * x * x + 1);
    if (x < 2.0)
        return (float)((((x - 5) * x + 8) * x - 4) * a);
    return 0.0f;
}

static void taps_free(taps *t)
{
    free(t->start);
    free(t->size);
    free(t->w);
}

static int taps_make(int in, int out, taps *t)
{
    memset(t, 0, sizeof *t);
    float scale = (float)in / (float)out;
    float support = (scale >= 1.0f) ? (float)(4 * 0.5 * scale) : (float)(4 * 0.5);
    float invscale = (scale >= 1.0f) ? (float)(1.0 / scale) : 1.0f;
    int stride = (int)ceilf(support) * 2 + 1;
    t->stride = stride;
    t->start = malloc((size_t)out * sizeof *t->start);
    t->size = malloc((size_t)out * sizeof *t->size);
    t->w = calloc((size_t)out * (size_t)stride, sizeof *t->w);
    if (!t->start || !t->size || !t->w) {
        taps_free(t);
        return VG_ENOMEM;
    }
    for (int i = 0; i < out; i++) {
        float center = (float)(scale * (i + 0.5));
        int64_t xmin = (int64_t)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int64_t xmax = (int64_t)(center + support + 0.5);
        if (xmax > in)
            xmax = in;
        int64_t xsize = xmax - xmin;
        if (xsize > stride)
            xsize = stride;
        if (xsize < 1) { /* cannot happen for sane sizes; keep the nearest pixel */
            xmin = xmin >= in ? in - 1 : xmin;
            xsize = 1;
        }
        float *w = t->w + (size_t)i * stride;
        float total = 0.0f;
        for (int64_t j = 0; j < xsize; j++) {
            float d = (float)(j + xmin) - center;
            float v = aa_cubic((float)((d + 0.5) * invscale));
            w[j] = v;
            total += v;
        }
        for (int64_t j = 0; j < xsize; j++)
            if (total != 0.0f)
                w[j] /= total;
        t->start[i] = (int)xmin;
        t->size[i] = (int)xsize;
    }
    return 0;
}

typedef float v8f __attribute__((vector_size(32)));

/* A macro, not a function: returning a 32-byte vector from a function changes the ABI without AVX.
 */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(v))

static inline uint8_t to_u8(float v)
{
    if (!(v > 0.0f)) /* also catches NaN */
        return 0;
    if (v >= 255.0f)
        return 255;
    return (uint8_t)rintf(v);
}

/* Built twice (AVX2 and baseline x86-64, chosen at load time by the CPU) and at -O3 (see
 * pipeline/CMakeLists.txt): the lane loops vectorize. ISO C mode keeps contraction off, so both
 * clones round exactly like the reference's separate multiply and add. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
int vg_resize_rgb(const uint8_t *src, int sw, int sh, size_t src_stride, uint8_t *dst, int dw,
                  int dh)
{
    if (!src || !dst || sw <= 0 || sh <= 0 || dw <= 0 || dh <= 0)
        return VG_EINVAL;
    if (sw > 65536 || sh > 65536 || dw > 65536 || dh > 65536)
        return VG_ERANGE;
    if (src_stride == 0)
        src_stride = (size_t)sw * 3;
    if (src_stride < (size_t)sw * 3)
        return VG_EINVAL;

    taps tx, ty;
    if (taps_make(sw, dw, &tx))
        return VG_ENOMEM;
    if (taps_make(sh, dh, &ty)) {
        taps_free(&tx);
        return VG_ENOMEM;
    }
    size_t hrow = (size_t)dw * 3;
    float *tmp = malloc((size_t)sh * hrow * sizeof *tmp);
    float *block = malloc((size_t)sw * LANES * sizeof *block);
    float *acc = malloc(hrow * sizeof *acc);
    if (!tmp || !block || !acc) {
        free(tmp);
        free(block);
        free(acc);
        taps_free(&tx);
        taps_free(&ty);
        return VG_ENOMEM;
    }

    /* Width pass, ROWS source rows at a time: the block is transposed to [sx][row][c] so that one
     * output column is ROWS*3 independent sums over contiguous lanes (vectorizable), each still
     * accumulated tap by tap in torch's order. */
    for (int y0 = 0; y0 < sh; y0 += ROWS) {
        int nr = sh - y0 < ROWS ? sh - y0 : ROWS;
        for (int r = 0; r < nr; r++) {
            const uint8_t *s = src + (size_t)(y0 + r) * src_stride;
            for (int x = 0; x < sw; x++)
                for (int c = 0; c < 3; c++)
                    block[(size_t)x * LANES + r * 3 + c] = (float)s[x * 3 + c];
        }
        for (int x = 0; x < dw; x++) {
            const float *w = tx.w + (size_t)x * tx.stride;
            const float *p = block + (size_t)tx.start[x] * LANES;
            int n = tx.size[x];
            /* Three 8-lane accumulators kept in registers (GCC vector types: AVX in the AVX2
             * clone, pairs of SSE registers otherwise); per lane the same multiply-then-add
             * sequence as the scalar form. */
            v8f a0, a1, a2;
            LOAD8(a0, p);
            LOAD8(a1, p + 8);
            LOAD8(a2, p + 16);
            v8f s0 = a0 * w[0], s1 = a1 * w[0], s2 = a2 * w[0];
            for (int j = 1; j < n; j++) {
                const float *pj = p + (size_t)j * LANES;
                float wj = w[j];
                LOAD8(a0, pj);
                LOAD8(a1, pj + 8);
                LOAD8(a2, pj + 16);
                s0 += a0 * wj;
                s1 += a1 * wj;
                s2 += a2 * wj;
            }
            float sum[LANES];
            memcpy(sum, &s0, sizeof s0);
            memcpy(sum + 8, &s1, sizeof s1);
            memcpy(sum + 16, &s2, sizeof s2);
            float *o = tmp + (size_t)y0 * hrow + (size_t)x * 3;
            for (int r = 0; r < nr; r++, o += hrow) {
                o[0] = sum[r * 3];
                o[1] = sum[r * 3 + 1];
                o[2] = sum[r * 3 + 2];
            }
        }
    }

    /* Height pass: each output row accumulates its source rows in tap order. */
    for (int y = 0; y < dh; y++) {
        const float *w = ty.w + (size_t)y * ty.stride;
        int n = ty.size[y];
        const float *r0 = tmp + (size_t)ty.start[y] * hrow;
        for (size_t k = 0; k < hrow; k++)
            acc[k] = r0[k] * w[0];
        for (int j = 1; j < n; j++) {
            const float *rj = r0 + (size_t)j * hrow;
            float wj = w[j];
            for (size_t k = 0; k < hrow; k++)
                acc[k] += rj[k] * wj;
        }
        uint8_t *o = dst + (size_t)y * hrow;
        for (size_t k = 0; k < hrow; k++)
            o[k] = to_u8(acc[k]);
    }

    free(tmp);
    free(block);
    free(acc);
    taps_free(&tx);
    taps_free(&ty);
    return 0;
}
