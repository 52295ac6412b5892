/*
 * test_resize.c: vg_resize_rgb against torchvision's antialiased bicubic (fixture made offline by
 * make_resize_fixture.py, inputs regenerated here from the same seeds), and vg_patchify against the
 * golden pixel_values_videos.
 */
#include "tests.h"

#include "common.h"
#include "pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Must match make_frame() in make_resize_fixture.py bit for bit. */
static uint32_t xorshift32(uint32_t s)
{
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return s;
}

static uint8_t *make_frame(uint32_t seed, int w, int h)
{
    uint32_t s = seed * 2654435761u + 12345u;
    if (s == 0)
        s = 1;
    uint8_t *out = malloc((size_t)w * h * 3);
    assert_non_null(out);
    size_t i = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                s = xorshift32(s);
                int base;
                if (c == 0)
                    base = x * 255 / (w > 1 ? w - 1 : 1);
                else if (c == 1)
                    base = y * 255 / (h > 1 ? h - 1 : 1);
                else
                    base = ((x + y) * 4) & 255;
                int noise = (int)(s % 64) - 32;
                int checker = ((x / 5 + y / 7) % 2) ? 60 : -60;
                int v = base + noise + checker;
                out[i++] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    return out;
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void test_resize_fixture(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/resize_fixture.bin", VG_TEST_DIR);
    char *data = NULL;
    size_t len = 0;
    char err[256];
    assert_int_equal(vg_read_file(path, 1 << 24, &data, &len, err, sizeof err), 0);
    const unsigned char *p = (const unsigned char *)data;
    assert_true(len >= 12 && memcmp(p, "VGRS", 4) == 0 && rd32(p + 4) == 1);
    uint32_t ncases = rd32(p + 8);
    size_t off = 12;
    double sum_all = 0;
    size_t n_all = 0;
    int max_all = 0;
    for (uint32_t k = 0; k < ncases; k++) {
        assert_true(off + 20 <= len);
        uint32_t seed = rd32(p + off), sw = rd32(p + off + 4), sh = rd32(p + off + 8);
        uint32_t dw = rd32(p + off + 12), dh = rd32(p + off + 16);
        off += 20;
        size_t n = (size_t)dw * dh * 3;
        assert_true(off + n <= len);
        uint8_t *src = make_frame(seed, (int)sw, (int)sh);
        uint8_t *dst = malloc(n);
        assert_non_null(dst);
        assert_int_equal(
            vg_resize_rgb(src, (int)sw, (int)sh, (size_t)sw * 3, dst, (int)dw, (int)dh), 0);
        double sum = 0;
        int maxd = 0;
        size_t ndiff = 0;
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)dst[i] - (int)p[off + i]);
            sum += d;
            ndiff += d != 0;
            if (d > maxd)
                maxd = d;
        }
        printf("resize %ux%u -> %ux%u: mean abs diff %.5f, max %d, %zu of %zu values differ\n", sw,
               sh, dw, dh, sum / (double)n, maxd, ndiff, n);
        assert_true(sum / (double)n <= 0.5);
        assert_true(maxd <= 2);
        sum_all += sum;
        n_all += n;
        if (maxd > max_all)
            max_all = maxd;
        off += n;
        free(src);
        free(dst);
    }
    printf("resize vs torchvision antialiased bicubic: %u cases, mean abs diff %.6f, max %d\n",
           ncases, sum_all / (double)n_all, max_all);
    assert_true(ncases >= 6);
    free(data);
}

void test_resize_basic(void **state)
{
    (void)state;
    /* Same size is the identity; a constant image stays constant at any scale. */
    uint8_t *src = make_frame(9, 37, 23);
    uint8_t *dst = malloc(37 * 23 * 3);
    assert_non_null(dst);
    assert_int_equal(vg_resize_rgb(src, 37, 23, 37 * 3, dst, 37, 23), 0);
    assert_memory_equal(src, dst, 37 * 23 * 3);
    free(dst);
    uint8_t flat[50 * 40 * 3];
    memset(flat, 77, sizeof flat);
    uint8_t out[123 * 7 * 3];
    assert_int_equal(vg_resize_rgb(flat, 50, 40, 0, out, 123, 7), 0);
    for (size_t i = 0; i < sizeof out; i++)
        assert_int_equal(out[i], 77);
    /* A padded stride is honoured. */
    uint8_t *padded = calloc(23, 40 * 3);
    assert_non_null(padded);
    for (int y = 0; y < 23; y++)
        memcpy(padded + (size_t)y * 40 * 3, src + (size_t)y * 37 * 3, 37 * 3);
    uint8_t a[16 * 9 * 3], b[16 * 9 * 3];
    assert_int_equal(vg_resize_rgb(src, 37, 23, 37 * 3, a, 16, 9), 0);
    assert_int_equal(vg_resize_rgb(padded, 37, 23, 40 * 3, b, 16, 9), 0);
    assert_memory_equal(a, b, sizeof a);
    /* Extreme but valid: 1 pixel to many and many to 1. */
    uint8_t one[3] = {10, 200, 30}, big[64 * 3];
    assert_int_equal(vg_resize_rgb(one, 1, 1, 3, big, 64, 1), 0);
    assert_int_equal(big[63 * 3 + 1], 200);
    assert_int_equal(vg_resize_rgb(src, 37, 23, 37 * 3, one, 1, 1), 0);
    /* Bad arguments. */
    assert_int_equal(vg_resize_rgb(NULL, 37, 23, 0, a, 16, 9), VG_EINVAL);
    assert_int_equal(vg_resize_rgb(src, 0, 23, 0, a, 16, 9), VG_EINVAL);
    assert_int_equal(vg_resize_rgb(src, 37, 23, 10, a, 16, 9), VG_EINVAL);
    assert_int_equal(vg_resize_rgb(src, 37, 23, 0, a, -1, 9), VG_EINVAL);
    free(padded);
    free(src);
}

static const float k_mean[3] = {0.5f, 0.5f, 0.5f}, k_std[3] = {0.5f, 0.5f, 0.5f};

void test_patchify_golden(void **state)
{
    (void)state;
    size_t flen = 0, plen = 0;
    char *frames = shared_read("golden/tiny1/frames_u8.bin", &flen);
    char *pix = shared_read("golden/tiny1/pixel_values_videos.bin", &plen);
    const int T = 8, H = 64, W = 96;
    assert_int_equal(flen, (size_t)T * H * W * 3);
    assert_int_equal(plen, (size_t)96 * 1536 * 4);
    /* The golden frames are already at a multiple of 32: the resize must be the identity. */
    uint8_t *re = malloc(flen);
    assert_non_null(re);
    for (int t = 0; t < T; t++)
        assert_int_equal(vg_resize_rgb((const uint8_t *)frames + (size_t)t * H * W * 3, W, H, 0,
                                       re + (size_t)t * H * W * 3, W, H),
                         0);
    assert_memory_equal(re, frames, flen);
    free(re);

    float *out = NULL;
    size_t rows = 0, cols = 0;
    assert_int_equal(
        vg_patchify((const uint8_t *)frames, T, H, W, 16, 2, 2, k_mean, k_std, &out, &rows, &cols),
        0);
    assert_int_equal(rows, 96);
    assert_int_equal(cols, 1536);
    const float *ref = (const float *)pix;
    double maxd = 0;
    size_t exact = 0;
    for (size_t i = 0; i < rows * cols; i++) {
        double d = fabs((double)out[i] - (double)ref[i]);
        if (d > maxd)
            maxd = d;
        exact += out[i] == ref[i];
    }
    printf("patchify vs golden pixel_values_videos: max abs diff %.3g, %zu of %zu bit-exact\n",
           maxd, exact, rows * cols);
    assert_true(maxd <= 1e-6);
    assert_int_equal(exact, rows * cols);
    free(out);
    free(frames);
    free(pix);
}

void test_patchify_odd(void **state)
{
    (void)state;
    /* 3 frames of 32x64: grid (2, 2, 4); the last pair repeats frame 2. */
    const int T = 3, H = 32, W = 64;
    uint8_t *fr = malloc((size_t)T * H * W * 3);
    assert_non_null(fr);
    for (size_t i = 0; i < (size_t)T * H * W * 3; i++)
        fr[i] = (uint8_t)(i * 31 + i / 7);
    float *out = NULL;
    size_t rows = 0, cols = 0;
    assert_int_equal(vg_patchify(fr, T, H, W, 16, 2, 2, k_mean, k_std, &out, &rows, &cols), 0);
    assert_int_equal(rows, 2 * 2 * 4);
    assert_int_equal(cols, 1536);
    /* docs/qwen3vl.md §1.6 order: row r = ((t*(gh/2) + bh)*(gw/2) + bw)*4 + mh*2 + mw, col =
     * ((c*2+tp)*16+py)*16+px
     */
    for (int t = 0; t < 2; t++)
        for (int bh = 0; bh < 1; bh++)
            for (int bw = 0; bw < 2; bw++)
                for (int mh = 0; mh < 2; mh++)
                    for (int mw = 0; mw < 2; mw++)
                        for (int c = 0; c < 3; c++)
                            for (int tp = 0; tp < 2; tp++)
                                for (int py = 0; py < 16; py += 5)
                                    for (int px = 0; px < 16; px += 3) {
                                        size_t r =
                                            (size_t)((t * 1 + bh) * 2 + bw) * 4 + mh * 2 + mw;
                                        size_t col = (size_t)((c * 2 + tp) * 16 + py) * 16 + px;
                                        int f = 2 * t + tp < T ? 2 * t + tp : T - 1;
                                        int y = (2 * bh + mh) * 16 + py,
                                            x = (2 * bw + mw) * 16 + px;
                                        uint8_t v = fr[(((size_t)f * H + y) * W + x) * 3 + c];
                                        float e = ((float)v - 127.5f) / 127.5f;
                                        assert_true(out[r * cols + col] == e);
                                    }
    free(out);
    /* Sizes that are not multiples of patch*merge, and bad arguments. */
    assert_int_equal(vg_patchify(fr, T, 30, W, 16, 2, 2, k_mean, k_std, &out, &rows, &cols),
                     VG_EINVAL);
    assert_int_equal(vg_patchify(fr, 0, H, W, 16, 2, 2, k_mean, k_std, &out, &rows, &cols),
                     VG_EINVAL);
    const float zero[3] = {0, 0, 0};
    assert_int_equal(vg_patchify(fr, T, H, W, 16, 2, 2, k_mean, zero, &out, &rows, &cols),
                     VG_EINVAL);
    free(fr);
}
