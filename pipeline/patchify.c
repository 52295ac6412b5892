/*
 * patchify.c: resized RGB uint8 frames -> normalized pixel_values_videos rows (docs/qwen3vl.md
 * docs/qwen3vl.md §1.6).
 *
 * value = (x/255 - mean[c]) / std[c], computed as the reference does, (x - 255 mean) / (255 std) in
 * float32, written in the reference's flatten order: rows are (t, bh, bw, mh, mw) with 2x2 merge
 * windows consecutive, columns (c, tp, py, px). An odd frame count repeats the last frame. The
 * 256-entry per-channel lookup table keeps the inner loop to copies. Pure function: any thread may
 * call it.
 */
#include "pipeline.h"

#include "common.h"

#include <stdlib.h>

int vg_patchify(const uint8_t *frames, int T, int H, int W, int patch, int temporal_patch,
                int merge, const float mean[3], const float std[3], float **out, size_t *rows,
                size_t *cols)
{
    if (!frames || !out || !rows || !cols || !mean || !std)
        return VG_EINVAL;
    if (T <= 0 || H <= 0 || W <= 0 || patch <= 0 || temporal_patch <= 0 || merge <= 0)
        return VG_EINVAL;
    if (H % (patch * merge) || W % (patch * merge))
        return VG_EINVAL;
    for (int c = 0; c < 3; c++)
        if (!(std[c] != 0.0f))
            return VG_EINVAL;

    size_t gt = ((size_t)T + temporal_patch - 1) / temporal_patch;
    size_t gh = (size_t)H / patch, gw = (size_t)W / patch;
    size_t ncols = (size_t)3 * temporal_patch * patch * patch;
    size_t nrows, total;
    if (vg_mul_size(gt, gh * gw, &nrows) || vg_mul_size(nrows, ncols, &total) ||
        total > ((size_t)1 << 34))
        return VG_ERANGE;
    float *o = malloc(total * sizeof *o);
    if (!o)
        return VG_ENOMEM;

    /* Hugging Face's fast processors fuse rescale and normalize: (x - 255*mean) / (255*std), in
     * float32 with the fused constants made in double. This reproduces its values bit for bit
     * (x/255 then normalize differs by up to 1 ulp). */
    float lut[3][256];
    for (int c = 0; c < 3; c++) {
        float m = (float)((double)mean[c] * 255.0), sd = (float)((double)std[c] * 255.0);
        for (int v = 0; v < 256; v++)
            lut[c][v] = ((float)v - m) / sd;
    }

    size_t bh_n = gh / merge, bw_n = gw / merge;
    size_t frame_bytes = (size_t)H * W * 3;
    size_t r = 0;
    for (size_t t = 0; t < gt; t++)
        for (size_t bh = 0; bh < bh_n; bh++)
            for (size_t bw = 0; bw < bw_n; bw++)
                for (int mh = 0; mh < merge; mh++)
                    for (int mw = 0; mw < merge; mw++, r++) {
                        float *dst = o + r * ncols;
                        size_t y0 = (bh * merge + mh) * patch, x0 = (bw * merge + mw) * patch;
                        for (int c = 0; c < 3; c++)
                            for (int tp = 0; tp < temporal_patch; tp++) {
                                size_t f = t * temporal_patch + tp;
                                if (f >= (size_t)T)
                                    f = T - 1;
                                const uint8_t *fr = frames + f * frame_bytes;
                                for (int py = 0; py < patch; py++) {
                                    const uint8_t *s = fr + ((y0 + py) * W + x0) * 3 + c;
                                    for (int px = 0; px < patch; px++)
                                        *dst++ = lut[c][s[px * 3]];
                                }
                            }
                    }
    *out = o;
    *rows = nrows;
    *cols = ncols;
    return 0;
}
