/*
 * test_kernels.c: the engine's own kernels (model/kernels*.c) at every instruction-set level this
 * CPU supports, against the scalar kernels and against a double-precision reference; packing and
 * unpacking of the BF16 and Q8_0 layouts; the fp16 conversions; the ISA names and VG_ISA parsing;
 * the weight type names; the thread pool; the fused attention (every level against a double
 * softmax); and vg_add (every level bit for bit against the plain loop).
 *
 * Tolerances: a vectorized kernel computes the scalar kernel's function with another order of
 * float additions, so |y_level - y_scalar| <= 1e-5 * sum_k |w_k x_k| (float32 round-off over K up
 * to 4096 stays far below that). The scalar kernel itself is checked against double arithmetic on
 * the same packed values (BF16: the widened weights and x; Q8_0: the integer dots scaled). The
 * several-rows kernels (bf16_gemm, q8_gemm) are held to the same bound on the bf16-rounded x, and
 * q8_gemm to bit equality with each level's q8_gemv row by row.
 */
#include "common.h"
#include "engine.h"
#include "kernels.h"
#include "model.h"
#include "pool.h"

#include <math.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

typedef struct packed {
    size_t rows, K, groups;
    unsigned char *bf, *q8;
    float *w; /* original float32 */
} packed;

static void make(packed *p, size_t rows, size_t K, float scale)
{
    p->rows = rows;
    p->K = K;
    p->groups = (rows + VG_PACK_ROWS - 1) / VG_PACK_ROWS;
    p->w = malloc(rows * K * sizeof(float));
    p->bf = calloc(p->groups, vg_pack_group_bytes_bf16(K));
    p->q8 = calloc(p->groups, vg_pack_group_bytes_q8(K));
    assert_non_null(p->w);
    assert_non_null(p->bf);
    assert_non_null(p->q8);
    float *zero = calloc(K, sizeof(float));
    for (size_t i = 0; i < rows * K; i++)
        p->w[i] = frand() * scale;
    for (size_t r = 0; r < p->groups * VG_PACK_ROWS; r++) {
        const float *src = r < rows ? p->w + r * K : zero;
        vg_pack_row_bf16(
            src, K, (int)(r % VG_PACK_ROWS),
            (uint16_t *)(void *)(p->bf + (r / VG_PACK_ROWS) * vg_pack_group_bytes_bf16(K)));
        vg_pack_row_q8(src, K, (int)(r % VG_PACK_ROWS),
                       (int8_t *)(p->q8 + (r / VG_PACK_ROWS) * vg_pack_group_bytes_q8(K)));
    }
    free(zero);
}

static void unmake(packed *p)
{
    free(p->w);
    free(p->bf);
    free(p->q8);
}

/* Packing round trips: BF16 within half an ulp of bf16, Q8_0 within half a step of its scale. */
static void test_pack_roundtrip(void **state)
{
    (void)state;
    packed p;
    make(&p, 7, 96, 0.05f);
    float *row = malloc(p.K * sizeof(float));
    for (size_t r = 0; r < p.rows; r++) {
        const unsigned char *gb = p.bf + (r / VG_PACK_ROWS) * vg_pack_group_bytes_bf16(p.K);
        vg_unpack_row_bf16((const uint16_t *)(const void *)gb, p.K, (int)(r % VG_PACK_ROWS), row);
        for (size_t k = 0; k < p.K; k++)
            assert_true(fabsf(row[k] - p.w[r * p.K + k]) <= fabsf(p.w[r * p.K + k]) * 0x1p-8f);
        const unsigned char *gq = p.q8 + (r / VG_PACK_ROWS) * vg_pack_group_bytes_q8(p.K);
        vg_unpack_row_q8((const int8_t *)gq, p.K, (int)(r % VG_PACK_ROWS), row);
        for (size_t b = 0; b < p.K / VG_QK; b++) {
            float amax = 0;
            for (int j = 0; j < VG_QK; j++)
                amax = fmaxf(amax, fabsf(p.w[r * p.K + b * VG_QK + (size_t)j]));
            for (int j = 0; j < VG_QK; j++) {
                size_t k = b * VG_QK + (size_t)j;
                assert_true(fabsf(row[k] - p.w[r * p.K + k]) <= amax / 127.0f * 0.51f + 1e-7f);
            }
        }
    }
    free(row);
    unmake(&p);
}

static void test_f16(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) /* NaN */
            continue;
        float f = vg_f16_to_f32_k((uint16_t)h);
        assert_int_equal(vg_f32_to_f16(f), h);
    }
    assert_int_equal(vg_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(vg_f32_to_f16(65520.0f), 0x7c00);       /* rounds to infinity */
    assert_int_equal(vg_f32_to_f16(1.00048828125f), 0x3c00); /* tie to even */
    assert_int_equal(vg_f32_to_f16(5.9604645e-8f), 0x0001);
}

/* Double-precision references of the scalar kernels' functions. */
static void ref_bf16(const packed *p, const float *x, double *y, double *mag)
{
    float *row = malloc(p->K * sizeof(float));
    for (size_t r = 0; r < p->rows; r++) {
        const unsigned char *gb = p->bf + (r / VG_PACK_ROWS) * vg_pack_group_bytes_bf16(p->K);
        vg_unpack_row_bf16((const uint16_t *)(const void *)gb, p->K, (int)(r % VG_PACK_ROWS), row);
        double s = 0, m = 0;
        for (size_t k = 0; k < p->K; k++) {
            s += (double)row[k] * x[k];
            m += fabs((double)row[k] * x[k]);
        }
        y[r] = s;
        mag[r] = m;
    }
    free(row);
}

static void ref_q8(const packed *p, const int8_t *xq, const float *xd, double *y, double *mag)
{
    const size_t gbytes = vg_pack_group_bytes_q8(p->K);
    for (size_t r = 0; r < p->rows; r++) {
        const int8_t *g = (const int8_t *)(p->q8 + (r / VG_PACK_ROWS) * gbytes);
        const uint16_t *sc = (const uint16_t *)(const void *)(g + VG_PACK_ROWS * p->K);
        int rr = (int)(r % VG_PACK_ROWS);
        double s = 0, m = 0;
        for (size_t b = 0; b < p->K / VG_QK; b++) {
            const int8_t *q = g + (b * VG_PACK_ROWS + (size_t)rr) * VG_QK;
            double d = (double)vg_f16_to_f32_k(sc[b * VG_PACK_ROWS + (size_t)rr]) * xd[b];
            long is = 0, ia = 0;
            for (int j = 0; j < VG_QK; j++) {
                is += (long)q[j] * xq[b * VG_QK + (size_t)j];
                ia += labs((long)q[j] * xq[b * VG_QK + (size_t)j]);
            }
            s += d * (double)is;
            m += fabs(d) * (double)ia;
        }
        y[r] = s;
        mag[r] = m;
    }
}

static void check_shape(size_t rows, size_t K)
{
    packed p;
    make(&p, rows, K, 0.05f);
    float *x = malloc(K * sizeof(float)), *xp = malloc(K * sizeof(float));
    float *xd = malloc(K / VG_QK * sizeof(float));
    int8_t *xq = malloc(K);
    float *y0 = malloc((rows + 8) * sizeof(float)), *y1 = malloc((rows + 8) * sizeof(float));
    double *yr = malloc(rows * sizeof(double)), *mag = malloc(rows * sizeof(double));
    for (size_t k = 0; k < K; k++)
        x[k] = frand();
    vg_q8_quantize(x, K, xq, xd);
    const vg_kernels *ks = vg_kernels_get(VG_ISA_SCALAR);

    /* scalar against double */
    ks->bf16_prep(x, K, xp);
    ks->bf16_gemv((const uint16_t *)(const void *)p.bf, K, rows, 0, p.groups, xp, y0);
    ref_bf16(&p, x, yr, mag);
    for (size_t r = 0; r < rows; r++)
        assert_true(fabs(y0[r] - yr[r]) <= 1e-5 * mag[r] + 1e-30);
    ks->q8_gemv((const int8_t *)p.q8, K, rows, 0, p.groups, xq, xd, y0);
    ref_q8(&p, xq, xd, yr, mag);
    for (size_t r = 0; r < rows; r++)
        assert_true(fabs(y0[r] - yr[r]) <= 1e-5 * mag[r] + 1e-30);

    /* every level against scalar, on the whole range and on a split range (rows past `rows`
     * must stay untouched) */
    for (int lvl = VG_ISA_AVX2; lvl <= vg_isa_detect(); lvl++) {
        const vg_kernels *kv = vg_kernels_get(lvl);
        for (int kind = 0; kind < 2; kind++) {
            if (kind == 0) {
                ks->bf16_prep(x, K, xp);
                ks->bf16_gemv((const uint16_t *)(const void *)p.bf, K, rows, 0, p.groups, xp, y0);
                ref_bf16(&p, x, yr, mag);
            } else {
                ks->q8_gemv((const int8_t *)p.q8, K, rows, 0, p.groups, xq, xd, y0);
                ref_q8(&p, xq, xd, yr, mag);
            }
            for (size_t i = 0; i < rows + 8; i++)
                y1[i] = -12345.0f;
            size_t mid = p.groups / 2;
            for (int part = 0; part < 2; part++) {
                size_t g0 = part ? mid : 0, g1 = part ? p.groups : mid;
                if (kind == 0) {
                    kv->bf16_prep(x, K, xp);
                    kv->bf16_gemv((const uint16_t *)(const void *)p.bf, K, rows, g0, g1, xp, y1);
                } else {
                    kv->q8_gemv((const int8_t *)p.q8, K, rows, g0, g1, xq, xd, y1);
                }
            }
            for (size_t r = 0; r < rows; r++) {
                if (!(fabs((double)y1[r] - y0[r]) <= 1e-5 * mag[r] + 1e-30))
                    fail_msg("%s %s rows %zu K %zu: row %zu: %g vs scalar %g (sum|wx| %g)",
                             vg_isa_name(lvl), kind ? "q8_0" : "bf16", rows, K, r, y1[r], y0[r],
                             mag[r]);
            }
            for (size_t r = rows; r < rows + 8; r++)
                assert_true(y1[r] == -12345.0f);
        }
    }
    free(x);
    free(xp);
    free(xd);
    free(xq);
    free(y0);
    free(y1);
    free(yr);
    free(mag);
    unmake(&p);
}

static void test_gemv_levels(void **state)
{
    (void)state;
    /* 16416: 513 blocks, past the AVX-512 q8_0 GEMV's table of per-block corrections */
    size_t shapes[][2] = {{1, 32},    {4, 64},    {7, 96},   {13, 256},
                          {64, 1024}, {37, 2048}, {9, 6144}, {5, 16416}};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        check_shape(shapes[i][0], shapes[i][1]);
    printf("kernels checked at levels scalar..%s (this CPU: %s)\n", vg_isa_name(vg_isa_detect()),
           vg_isa_name(vg_isa_detect()));
}

/* The several-rows kernels: n rows of x through bf16_gemm / q8_gemm at every level, on a split
 * group range, y with a row stride wider than the matrix (the gap and padding rows untouched).
 *  - bf16: against double arithmetic on the bf16-rounded x (1e-5 of sum |w x|), and the scalar
 *    level equal, bit for bit, to its 1-row GEMV on the rounded row;
 *  - q8_0: every level equal, bit for bit, to its own q8_gemv on vg_q8_quantize of each row. */
static void check_rows(size_t rows, size_t K, size_t n)
{
    packed p;
    make(&p, rows, K, 0.05f);
    const size_t nb = K / VG_QK, ldy = rows + 3;
    float *x = malloc(n * K * sizeof(float)), *xr = malloc(n * K * sizeof(float));
    float *xp = malloc(n * K * sizeof(float)), *xp1 = malloc(K * sizeof(float));
    float *xd = malloc(n * nb * sizeof(float)), *xd1 = malloc(nb * sizeof(float));
    int8_t *xq = malloc(n * K), *xq1 = malloc(K);
    float *y = malloc(n * ldy * sizeof(float)), *y1 = malloc((rows + 8) * sizeof(float));
    double *yr = malloc(rows * sizeof(double)), *mag = malloc(rows * sizeof(double));
    for (size_t i = 0; i < n * K; i++)
        x[i] = frand() * (i % 7 == 0 ? 4.0f : 1.0f);
    vg_bf16_round(x, n * K, xr);
    for (size_t i = 0; i < n * K; i++)
        assert_true(xr[i] == vg_bf16_to_f32(vg_f32_to_bf16(x[i])));
    const size_t mid = p.groups / 3;
    for (int lvl = VG_ISA_SCALAR; lvl <= vg_isa_detect(); lvl++) {
        const vg_kernels *kv = vg_kernels_get(lvl);
        for (int kind = 0; kind < 2; kind++) {
            for (size_t i = 0; i < n * ldy; i++)
                y[i] = -12345.0f;
            for (int part = 0; part < 2; part++) {
                size_t g0 = part ? mid : 0, g1 = part ? p.groups : mid;
                if (kind == 0) {
                    kv->bf16_prep_n(x, n, K, xp);
                    kv->bf16_gemm((const uint16_t *)(const void *)p.bf, K, rows, g0, g1, xp, n, y,
                                  ldy);
                } else {
                    kv->q8_prep_n(x, n, K, xq, xd);
                    kv->q8_gemm((const int8_t *)p.q8, K, rows, g0, g1, xq, xd, n, y, ldy);
                }
            }
            for (size_t i = 0; i < n; i++) {
                const float *yi = y + i * ldy;
                if (kind == 0) {
                    ref_bf16(&p, xr + i * K, yr, mag);
                    for (size_t r = 0; r < rows; r++)
                        if (!(fabs((double)yi[r] - yr[r]) <= 1e-5 * mag[r] + 1e-30))
                            fail_msg("%s bf16_gemm rows %zu K %zu n %zu: x row %zu, row %zu: %g vs "
                                     "%g (sum|wx| %g)",
                                     vg_isa_name(lvl), rows, K, n, i, r, yi[r], yr[r], mag[r]);
                    if (lvl == VG_ISA_SCALAR) {
                        kv->bf16_prep(xr + i * K, K, xp1);
                        kv->bf16_gemv((const uint16_t *)(const void *)p.bf, K, rows, 0, p.groups,
                                      xp1, y1);
                        assert_memory_equal(yi, y1, rows * sizeof(float));
                    }
                } else {
                    vg_q8_quantize(x + i * K, K, xq1, xd1);
                    assert_memory_equal(xd + i * nb, xd1, nb * sizeof(float));
                    kv->q8_gemv((const int8_t *)p.q8, K, rows, 0, p.groups, xq1, xd1, y1);
                    for (size_t r = 0; r < rows; r++)
                        if (memcmp(&yi[r], &y1[r], sizeof(float)) != 0)
                            fail_msg("%s q8_gemm rows %zu K %zu n %zu: x row %zu, row %zu: %.9g "
                                     "vs q8_gemv %.9g",
                                     vg_isa_name(lvl), rows, K, n, i, r, yi[r], y1[r]);
                }
                for (size_t r = rows; r < ldy; r++)
                    assert_true(yi[r] == -12345.0f);
            }
        }
    }
    free(x);
    free(xr);
    free(xp);
    free(xp1);
    free(xd);
    free(xd1);
    free(xq);
    free(xq1);
    free(y);
    free(y1);
    free(yr);
    free(mag);
    unmake(&p);
}

static void test_gemm_levels(void **state)
{
    (void)state;
    /* rows: whole and partial groups; K: odd and even numbers of Q8_0 blocks (the AVX-512 q8
     * kernel alternates two accumulator sets); n: one, a partial block of x rows, several blocks */
    const size_t shapes[][3] = {{1, 32, 1},    {5, 32, 3},    {7, 96, 4},    {13, 256, 5},
                                {8, 160, 9},   {64, 1024, 2}, {37, 2048, 8}, {9, 6144, 6},
                                {30, 512, 17}, {4, 64, 64}};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        check_rows(shapes[i][0], shapes[i][1], shapes[i][2]);
}

static void test_read_xor(void **state)
{
    (void)state;
    uint64_t buf[203];
    for (size_t i = 0; i < 203; i++)
        buf[i] = rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    for (size_t n = 0; n <= 203; n += 29) {
        uint64_t want = vg_kernels_get(VG_ISA_SCALAR)->read_xor(buf, n);
        for (int l = VG_ISA_AVX2; l <= vg_isa_detect(); l++)
            assert_true(vg_kernels_get(l)->read_xor(buf, n) == want);
    }
}

/* Q8_0 activation quantization: every value within half a step, zero blocks give zero. */
static void test_quantize(void **state)
{
    (void)state;
    float x[96];
    int8_t q[96];
    float d[3];
    for (int i = 0; i < 96; i++)
        x[i] = i < 32 ? 0.0f : frand() * 3.0f;
    vg_q8_quantize(x, 96, q, d);
    assert_true(d[0] == 0.0f);
    for (int i = 0; i < 32; i++)
        assert_int_equal(q[i], 0);
    for (int i = 32; i < 96; i++) {
        assert_true(q[i] >= -127 && q[i] <= 127);
        assert_true(fabsf(q[i] * d[i / 32] - x[i]) <= d[i / 32] * 0.5f + 1e-6f);
    }
}

/* The offset of the first byte where a and b differ (they differ somewhere). */
static size_t first_diff(const unsigned char *a, const unsigned char *b)
{
    size_t i = 0;
    while (a[i] == b[i])
        i++;
    return i;
}

/* A row of K values (K a multiple of 32) for the level checks, by trial: blocks of every magnitude,
 * all-zero and subnormal blocks, exact rounding ties (x / scale = k + 1/2, both signs, for the
 * scale 0.5 of a max of 63.5), NaN and infinity lanes. */
static void fill_special(float *row, size_t K, int trial)
{
    const float mags[] = {1e-30f, 1e-8f, 1e-3f, 0.02f, 1.0f, 3e4f, 6e4f};
    for (size_t b = 0; b < K / 32; b++) {
        float *x = row + b * 32;
        const float m = mags[(b + (size_t)trial) % (sizeof mags / sizeof mags[0])];
        for (int j = 0; j < 32; j++)
            x[j] = frand() * m;
        switch ((b + (size_t)trial) % 8) {
        case 0: /* all zero */
            for (int j = 0; j < 32; j++)
                x[j] = 0.0f;
            break;
        case 1: /* scale 0.5 exactly (max 63.5): x / scale = k + 1/2 for x = (k + 1/2) / 2 */
            x[0] = 63.5f;
            for (int j = 1; j < 32; j++)
                x[j] = ((float)((j * 7) % 127 - 63) + 0.5f) * 0.5f * (j % 2 ? 1.0f : -1.0f);
            break;
        case 2: /* a NaN and an infinity lane */
            x[trial % 32] = NAN;
            if (trial % 3 == 0)
                x[(trial + 5) % 32] = -INFINITY;
            break;
        case 3: /* subnormals */
            for (int j = 0; j < 32; j++)
                x[j] = frand() * 1e-39f;
            break;
        default:
            break;
        }
    }
}

/* The activation's Q8_0 quantization (the decode path's, per token) at every level: the scalar
 * form's bytes and scales bit for bit, on the rows of fill_special. */
static void test_quantize_levels(void **state)
{
    (void)state;
    enum { K = 32 * 40 };
    static float row[K];
    static int8_t q0[K], q1[K];
    static float d0[K / 32], d1[K / 32];
    for (int trial = 0; trial < 200; trial++) {
        fill_special(row, K, trial);
        vg_q8_quantize_scalar(row, K, q0, d0);
        for (size_t i = 0; i < K; i++)
            assert_true(q0[i] >= -127 && q0[i] <= 127);
        for (int lvl = VG_ISA_AVX2; lvl <= vg_isa_detect(); lvl++) {
            memset(q1, 0x5a, sizeof q1);
            vg_kernels_get(lvl)->q8_quantize(row, K, q1, d1);
            for (size_t b = 0; b < K / 32; b++)
                if (memcmp(&d1[b], &d0[b], sizeof(float)) != 0)
                    fail_msg(
                        "%s q8_quantize, trial %d block %zu: scale %.9g, the scalar form's %.9g",
                        vg_isa_name(lvl), trial, b, d1[b], d0[b]);
            if (memcmp(q1, q0, K) != 0) {
                const size_t i = first_diff((const unsigned char *)q1, (const unsigned char *)q0);
                fail_msg("%s q8_quantize, trial %d: value %zu (%.9g) is %d, the scalar form's %d",
                         vg_isa_name(lvl), trial, i, row[i], q1[i], q0[i]);
            }
        }
    }
}

/* The loader's Q8_0 packing at every level writes the scalar reference's bytes: values and fp16
 * scales, on blocks of every magnitude, all-zero and subnormal blocks, exact rounding ties (x /
 * scale = k + 1/2, both signs), values at the clamp and NaN / infinity lanes. */
static void test_pack_q8_levels(void **state)
{
    (void)state;
    enum { K = 32 * 40 };
    static float row[K];
    const size_t gb = vg_pack_group_bytes_q8(K);
    unsigned char *want = malloc(gb), *got = malloc(gb);
    assert_non_null(want);
    assert_non_null(got);
    for (int trial = 0; trial < 200; trial++) {
        fill_special(row, K, trial);
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            memset(want, 0x5a, gb);
            vg_pack_row_q8_scalar(row, K, r, (int8_t *)want);
            for (int lvl = VG_ISA_AVX2; lvl <= vg_isa_detect(); lvl++) {
                memset(got, 0x5a, gb);
                vg_kernels_get(lvl)->pack_row_q8(row, K, r, (int8_t *)got);
                if (memcmp(got, want, gb) != 0) {
                    const size_t i = first_diff(got, want);
                    fail_msg(
                        "%s pack_row_q8, trial %d row %d: byte %zu is %d, the scalar form's %d",
                        vg_isa_name(lvl), trial, r, i, (int)(int8_t)got[i], (int)(int8_t)want[i]);
                }
            }
        }
    }
    /* the clamp held: -128 is never written */
    vg_pack_row_q8_scalar(row, K, 0, (int8_t *)want);
    for (size_t i = 0; i < (size_t)VG_PACK_ROWS * K; i++)
        assert_true((int8_t)want[i] >= -127);
    free(want);
    free(got);
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* bf16 packing at every level: the scalar reference's bytes on random values of every exponent,
 * exact ties (low half 0x8000, both parities of the kept bit), values rounding up to infinity,
 * subnormals (kept, not flushed), zeros of both signs, infinities and NaNs (quieted). */
static void test_pack_bf16_levels(void **state)
{
    (void)state;
    enum { K = 32 * 24 };
    static float row[K];
    const size_t gb = vg_pack_group_bytes_bf16(K);
    unsigned char *want = malloc(gb), *got = malloc(gb);
    assert_non_null(want);
    assert_non_null(got);
    for (int trial = 0; trial < 100; trial++) {
        for (size_t i = 0; i < K; i++) {
            uint32_t u = (uint32_t)(rng >> 7);
            frand();
            switch ((i + (size_t)trial) % 9) {
            case 0: /* a tie: low half exactly 0x8000 */
                u = (u & 0xffff0000u) | 0x8000u;
                break;
            case 1: /* subnormal */
                u &= 0x807fffffu;
                break;
            case 2: /* the largest floats: some round to infinity */
                u = (u & 0x8000ffffu) | 0x7f7f0000u;
                break;
            case 3: /* infinity or NaN (signalling or quiet) */
                u = (u & 0x8000ffffu) | (trial % 2 ? 0x7f800000u : 0x7fc00000u);
                if (trial % 4 == 1)
                    u |= 0x10000u; /* a NaN whose payload is in the top half */
                break;
            case 4:
                u &= 0x80000000u; /* +0 / -0 */
                break;
            default:
                break;
            }
            row[i] = from_bits(u);
        }
        for (int r = 0; r < VG_PACK_ROWS; r++) {
            memset(want, 0x5a, gb);
            vg_pack_row_bf16_scalar(row, K, r, (uint16_t *)(void *)want);
            for (int lvl = VG_ISA_AVX2; lvl <= vg_isa_detect(); lvl++) {
                memset(got, 0x5a, gb);
                vg_kernels_get(lvl)->pack_row_bf16(row, K, r, (uint16_t *)(void *)got);
                if (memcmp(got, want, gb) != 0)
                    fail_msg("%s pack_row_bf16, trial %d row %d: byte %zu differs",
                             vg_isa_name(lvl), trial, r, first_diff(got, want));
            }
        }
    }
    free(want);
    free(got);
}

/* fp16 widening at every level: all 65536 values against vg_f16_to_f32_k and the reader's
 * vg_f16_to_f32 (NaNs: still NaN with the same sign), at an odd byte offset and with a ragged
 * tail. */
static void test_widen_f16_levels(void **state)
{
    (void)state;
    const size_t n = 65536;
    unsigned char *src = malloc(2 * n + 1);
    float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    assert_non_null(src);
    assert_non_null(want);
    assert_non_null(got);
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)i;
        memcpy(src + 1 + 2 * i, &h, 2);
        want[i] = vg_f16_to_f32_k(h);
        /* the safetensors reader's own widening (vg_tensor_to_f32) agrees */
        const float o = vg_f16_to_f32(h);
        assert_true(isnan(want[i]) ? isnan(o) : memcmp(&o, &want[i], 4) == 0);
    }
    for (int lvl = VG_ISA_SCALAR; lvl <= vg_isa_detect(); lvl++) {
        for (size_t len = n - 5; len <= n; len += 5) {
            vg_kernels_get(lvl)->widen_f16(src + 1, len, got);
            for (size_t i = 0; i < len; i++) {
                uint32_t a, b;
                memcpy(&a, &got[i], 4);
                memcpy(&b, &want[i], 4);
                if (isnan(want[i]) ? !(isnan(got[i]) && (a >> 31) == (b >> 31)) : a != b)
                    fail_msg("%s widen_f16: 0x%04zx gave 0x%08x, want 0x%08x", vg_isa_name(lvl), i,
                             a, b);
            }
        }
    }
    free(src);
    free(want);
    free(got);
}

static void test_isa_names(void **state)
{
    (void)state;
    assert_int_equal(vg_isa_parse("scalar"), VG_ISA_SCALAR);
    assert_int_equal(vg_isa_parse("AVX2"), VG_ISA_AVX2);
    assert_int_equal(vg_isa_parse("avx512"), VG_ISA_AVX512);
    assert_int_equal(vg_isa_parse("sse"), -1);
    for (int l = 0; l <= 2; l++)
        assert_int_equal(vg_isa_parse(vg_isa_name(l)), l);
    assert_true(vg_isa_level() <= vg_isa_detect());
    assert_int_equal(vg_isa_force(VG_ISA_SCALAR), 0);
    assert_int_equal(vg_isa_level(), VG_ISA_SCALAR);
    assert_int_equal(vg_isa_force(vg_isa_detect()), 0);
    assert_int_equal(vg_isa_force(7), VG_ENOTSUP);
}

static void test_weight_types(void **state)
{
    (void)state;
    int t = -1;
    assert_int_equal(vg_weight_type_parse("bf16", &t), 0);
    assert_int_equal(t, VG_WEIGHTS_BF16);
    assert_int_equal(vg_weight_type_parse("Q8_0", &t), 0);
    assert_int_equal(t, VG_WEIGHTS_Q8_0);
    assert_int_equal(vg_weight_type_parse("f32", &t), 0);
    assert_int_equal(t, VG_WEIGHTS_F32);
    assert_int_equal(vg_weight_type_parse("auto", &t), 0);
    assert_int_equal(t, VG_WEIGHTS_AUTO);
    t = 99;
    assert_true(vg_weight_type_parse("q4_0", &t) < 0);
    assert_true(vg_weight_type_parse(NULL, &t) < 0);
    assert_int_equal(t, 99);
    for (int i = VG_WEIGHTS_AUTO; i <= VG_WEIGHTS_Q8_0; i++) {
        assert_int_equal(vg_weight_type_parse(vg_weight_type_name(i), &t), 0);
        assert_int_equal(t, i);
    }
    assert_string_equal(vg_weight_type_name(42), "?");
}

/* Fused attention: the level's kernel and the portable one against a double-precision softmax,
 * full and causal, ragged sizes (rows not a multiple of 4, keys not a multiple of the tile). */
static void check_flash(size_t n, size_t ctx, size_t hd, long p0, float amp)
{
    const size_t ld = hd + 16; /* strided rows, as in the engine */
    float *q = malloc(n * ld * sizeof(float)), *k = malloc(ctx * ld * sizeof(float));
    float *v = malloc(ctx * ld * sizeof(float)), *o = malloc(n * ld * sizeof(float));
    float *scr = malloc(vg_flash_scratch_floats(n, hd) * sizeof(float));
    double *p = malloc(ctx * sizeof(double));
    for (size_t i = 0; i < n * ld; i++)
        q[i] = amp * frand(); /* amp > 1: scores spread over tens of units (exp underflow) */
    for (size_t i = 0; i < ctx * ld; i++) {
        k[i] = frand();
        v[i] = frand();
    }
    const float scale = 1.0f / sqrtf((float)hd);
    for (int lvl = VG_ISA_SCALAR; lvl <= vg_isa_detect(); lvl++) {
        for (size_t i = 0; i < n * ld; i++)
            o[i] = 777.0f;
        vg_flash_attn(lvl, q, ld, k, ld, v, ld, n, ctx, hd, scale, p0, o, ld, scr);
        for (size_t i = 0; i < n; i++) {
            size_t vis = p0 < 0 ? ctx : VG_MIN(ctx, (size_t)p0 + i + 1);
            double mx = -1e300, sum = 0;
            for (size_t j = 0; j < vis; j++) {
                double a = 0;
                for (size_t d = 0; d < hd; d++)
                    a += (double)q[i * ld + d] * k[j * ld + d];
                p[j] = a * scale;
                mx = p[j] > mx ? p[j] : mx;
            }
            for (size_t j = 0; j < vis; j++)
                sum += (p[j] = exp(p[j] - mx));
            for (size_t d = 0; d < hd; d++) {
                double r = 0;
                for (size_t j = 0; j < vis; j++)
                    r += p[j] / sum * v[j * ld + d];
                if (!(fabs(r - o[i * ld + d]) <= 2e-5))
                    fail_msg("flash %s n %zu ctx %zu hd %zu p0 %ld: row %zu dim %zu: %g vs %g",
                             vg_isa_name(lvl), n, ctx, hd, p0, i, d, o[i * ld + d], r);
            }
            for (size_t d = hd; d < ld; d++) /* the gap between rows is not written */
                assert_true(o[i * ld + d] == 777.0f);
        }
        /* bf16 keys and values (a bf16 KV cache): exactly the float32 kernel on the widened
         * values, at this level */
        uint16_t *kb = malloc(ctx * ld * 2), *vb = malloc(ctx * ld * 2);
        float *kw = malloc(ctx * ld * sizeof(float)), *vw = malloc(ctx * ld * sizeof(float));
        float *o2 = malloc(n * ld * sizeof(float));
        vg_to_bf16(k, ctx * ld, kb);
        vg_to_bf16(v, ctx * ld, vb);
        vg_from_bf16(kb, ctx * ld, kw);
        vg_from_bf16(vb, ctx * ld, vw);
        vg_flash_attn(lvl, q, ld, kw, ld, vw, ld, n, ctx, hd, scale, p0, o, ld, scr);
        memcpy(o2, o, n * ld * sizeof(float));
        vg_flash_attn_bf16(lvl, q, ld, kb, ld, vb, ld, n, ctx, hd, scale, p0, o2, ld, scr);
        for (size_t i = 0; i < n; i++)
            if (memcmp(o + i * ld, o2 + i * ld, hd * sizeof(float)) != 0)
                fail_msg("flash bf16 %s n %zu ctx %zu hd %zu p0 %ld: row %zu differs",
                         vg_isa_name(lvl), n, ctx, hd, p0, i);
        free(kb);
        free(vb);
        free(kw);
        free(vw);
        free(o2);
    }
    free(q);
    free(k);
    free(v);
    free(o);
    free(scr);
    free(p);
}

static void test_flash(void **state)
{
    (void)state;
    check_flash(1, 1, 16, -1, 1.0f);
    check_flash(7, 7, 16, -1, 1.0f);
    check_flash(33, 130, 64, -1, 1.0f);
    check_flash(96, 96, 64, -1, 1.0f);
    check_flash(5, 70, 128, 65, 1.0f); /* causal after a cached prefix */
    check_flash(67, 67, 128, 0, 1.0f); /* causal from the start */
    check_flash(3, 200, 48, -1, 1.0f);
    check_flash(9, 9, 40, 0, 1.0f);   /* hd % 16 != 0: the AVX2 kernel also at the AVX-512 level */
    check_flash(6, 75, 24, 10, 1.0f); /* the same, fewer than 16 keys visible to some rows */
    check_flash(10, 140, 64, -1, 12.0f); /* wide score range: most probabilities underflow */
    check_flash(5, 5, 36, -1, 1.0f);     /* a head size without a fast kernel: the portable path */
}

static void add_task(void *arg, size_t i)
{
    _Atomic long *sum = arg;
    atomic_fetch_add(sum, (long)i + 1);
}

/* The pool runs every task exactly once, region after region, with 1..3 participants. */
static void test_pool(void **state)
{
    (void)state;
    for (int n = 1; n <= 3; n++) {
        vg_pool *p = NULL;
        assert_int_equal(vg_pool_create(n, &p), 0);
        assert_int_equal(vg_pool_threads(p), n);
        for (int rep = 0; rep < 2000; rep++) {
            _Atomic long sum = 0;
            size_t tasks = (size_t)(rep % 7);
            vg_pool_run(p, tasks, add_task, &sum);
            assert_int_equal(atomic_load(&sum), (long)(tasks * (tasks + 1) / 2));
        }
        vg_pool_destroy(p);
    }
    vg_pool_destroy(NULL);
}

static void slow_task(void *arg, size_t i)
{
    _Atomic long *sum = arg;
    if (i == 1) /* past the caller's polling: it goes to sleep and the worker wakes it */
        nanosleep(&(struct timespec){0, 300000}, NULL);
    atomic_fetch_add(sum, (long)i + 1);
}

static double cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Regions further apart than the workers poll (they sleep in between and are woken), a caller
 * that sleeps until a slow task ends, and an idle pool that uses no CPU: its workers poll for a
 * few microseconds after a region, never longer. */
static void test_pool_sleeps(void **state)
{
    (void)state;
    vg_pool *p = NULL;
    assert_int_equal(vg_pool_create(3, &p), 0);
    for (int rep = 0; rep < 40; rep++) {
        _Atomic long sum = 0;
        vg_pool_run(p, 6, rep % 2 ? slow_task : add_task, &sum);
        assert_int_equal(atomic_load(&sum), 21);
        nanosleep(&(struct timespec){0, 2000000}, NULL); /* 2 ms: the workers are asleep */
    }
    double c0 = cpu_ms();
    nanosleep(&(struct timespec){0, 200000000}, NULL); /* idle for 200 ms */
    double used = cpu_ms() - c0;
    /* two workers polling would use 400 ms; asleep they use none */
    assert_true(used < 40.0);
    vg_pool_destroy(p);
}

/* vg_add at every level: element-wise float additions, so bit for bit the plain loop's sums, for
 * every length around the vector widths (tails included) and into a buffer's last element. */
static void test_add_levels(void **state)
{
    (void)state;
    enum { N = 70 };
    float x[N], y0[N], y[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)((i * 37) % 23) * 0.37f - 3.1f;
        y0[i] = (float)((i * 11) % 17) * 1.3e-3f + 0.5f;
    }
    const int best = vg_isa_level();
    for (int lvl = VG_ISA_SCALAR; lvl <= vg_isa_detect(); lvl++) {
        assert_int_equal(vg_isa_force(lvl), 0);
        for (size_t n = 0; n <= N; n++) {
            memcpy(y, y0, sizeof(y));
            vg_add(y + (N - n), x, n);
            for (size_t i = 0; i < N; i++) {
                float want = i < N - n ? y0[i] : y0[i] + x[i - (N - n)];
                assert_memory_equal(&y[i], &want, sizeof(float));
            }
        }
    }
    assert_int_equal(vg_isa_force(best), 0);
}

/* vg_silu_mul_b16 at every level: bit for bit vg_silu_mul then vg_to_bf16, for lengths around the
 * 32-value vector step (tails included), g left unchanged. */
static void test_silu_b16_levels(void **state)
{
    (void)state;
    enum { N = 100 };
    float g[N], g0[N], u[N], ref[N];
    uint16_t want[N], got[N];
    for (int i = 0; i < N; i++) {
        g0[i] = (float)((i * 37) % 41) * 0.31f - 6.2f;
        u[i] = (float)((i * 13) % 19) * 0.17f - 1.5f;
    }
    const int best = vg_isa_level();
    for (int lvl = VG_ISA_SCALAR; lvl <= vg_isa_detect(); lvl++) {
        assert_int_equal(vg_isa_force(lvl), 0);
        for (size_t n = 0; n <= N; n++) {
            memcpy(ref, g0, sizeof(ref));
            vg_silu_mul(ref, u, n);
            vg_to_bf16(ref, n, want);
            memcpy(g, g0, sizeof(g));
            vg_silu_mul_b16(g, u, n, got);
            assert_memory_equal(got, want, n * sizeof(uint16_t));
            assert_memory_equal(g, g0, sizeof(g));
        }
    }
    assert_int_equal(vg_isa_force(best), 0);
}

/* The blocked layout (amx.c): the scalar loop against double arithmetic on the same bf16 values,
 * and vg_blk_gemm (AMX tiles where vg_amx_ok) against the scalar loop, for 1, 3, 16 and 19 rows
 * (two passes of tiles), a matrix whose last block is padded, a range of blocks, a stride of x
 * wider than K (one part of a wider matrix) and the accumulating form. Tolerance as for the GEMV
 * kernels: 1e-5 * sum_k |w_k x_k|. */
static void test_blk_gemm(void **state)
{
    (void)state;
    const size_t K = 96, ldx = 160, N = 150, NB = (N + VG_BLK_N - 1) / VG_BLK_N;
    const size_t ns[] = {1, 3, 16, 19};
    uint16_t *w = calloc(NB * VG_BLK_N * K, sizeof(uint16_t));
    uint16_t *x = malloc(19 * ldx * sizeof(uint16_t));
    float *y0 = malloc(19 * N * sizeof(float)), *y1 = malloc(19 * N * sizeof(float));
    assert_non_null(w);
    assert_non_null(x);
    assert_non_null(y0);
    assert_non_null(y1);
    for (size_t r = 0; r < N; r++)
        for (size_t k = 0; k < K; k++)
            w[(r / VG_BLK_N) * VG_BLK_N * K + vg_blk_index(k, r % VG_BLK_N)] =
                vg_f32_to_bf16(frand());
    for (size_t i = 0; i < 19 * ldx; i++)
        x[i] = vg_f32_to_bf16(frand());
    print_message("blocked products through %s\n", vg_amx_ok() ? "AMX tiles" : "the scalar loop");
    for (size_t t = 0; t < VG_ARRAY_LEN(ns); t++) {
        const size_t n = ns[t];
        for (int acc = 0; acc < 2; acc++) {
            for (size_t i = 0; i < n * N; i++)
                y0[i] = y1[i] = (float)i * 0.25f;
            vg_blk_gemm_scalar(w, K, N, 0, NB, x, n, ldx, y0, N, acc);
            vg_blk_gemm(w, K, N, 1, NB, x, n, ldx, y1, N, acc); /* blocks 1.. then block 0 */
            vg_blk_gemm(w, K, N, 0, 1, x, n, ldx, y1, N, acc);
            for (size_t i = 0; i < n; i++)
                for (size_t r = 0; r < N; r++) {
                    double ref = acc ? (double)(i * N + r) * 0.25 : 0.0, mag = 0.0;
                    for (size_t k = 0; k < K; k++) {
                        const double p =
                            (double)vg_bf16_to_f32(
                                w[(r / VG_BLK_N) * VG_BLK_N * K + vg_blk_index(k, r % VG_BLK_N)]) *
                            (double)vg_bf16_to_f32(x[i * ldx + k]);
                        ref += p;
                        mag += fabs(p);
                    }
                    const double tol = 1e-5 * (mag + fabs(ref)) + 1e-6;
                    if (fabs(y0[i * N + r] - ref) > tol ||
                        fabs(y1[i * N + r] - y0[i * N + r]) > tol)
                        fail_msg("n %zu acc %d row %zu out %zu: scalar %g, vg_blk_gemm %g, double "
                                 "%g (AMX %d)",
                                 n, acc, i, r, (double)y0[i * N + r], (double)y1[i * N + r], ref,
                                 vg_amx_ok());
                }
        }
    }
    free(w);
    free(x);
    free(y0);
    free(y1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_gemv_levels),
        cmocka_unit_test(test_gemm_levels),
        cmocka_unit_test(test_blk_gemm),
        cmocka_unit_test(test_isa_names),
        cmocka_unit_test(test_weight_types),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_pool_sleeps),
        cmocka_unit_test(test_silu_b16_levels),
        cmocka_unit_test(test_read_xor),
        cmocka_unit_test(test_flash),
        cmocka_unit_test(test_add_levels),
        cmocka_unit_test(test_pack_q8_levels),
        cmocka_unit_test(test_quantize_levels),
        cmocka_unit_test(test_pack_bf16_levels),
        cmocka_unit_test(test_widen_f16_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
