/*
 * plan.c: the sampling plan of qwen-vl-utils' "Path A" (docs/qwen3vl.md §1.1-§1.4, §1.7) in exact
 * arithmetic.
 *
 * From a decoder's frame count, average fps and frame size it computes how many frames to sample
 * (smart_nframes, with the optional video_start/video_end clipping of calculate_video_frame_range),
 * which frames (torch.linspace in float32, emulated bit-exactly as the torch 1.13 AVX2 CPU kernel
 * does it, then round half to even), the per-frame pixel budget, the resized size (smart_resize in
 * double precision with Python's half-to-even round()), the grid, the token counts and the
 * "<t.t seconds>" timestamp strings (mean time of each temporal pair, formatted from a double).
 *
 * Invariants: every value follows the reference's operation order, so a plan equals the reference
 * for the same inputs; impossible inputs fail with a sentence instead of producing a 0-sized grid.
 * Pure functions, no global state: any thread may call them.
 */
#include "pipeline.h"

#include "common.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VG_MAX_RATIO 200.0

vg_sample_params vg_sample_default_params(void)
{
    vg_sample_params p;
    memset(&p, 0, sizeof p);
    p.fps = 2.0;
    p.nframes = 0;
    p.min_frames = 4;
    p.max_frames = 768;
    p.min_pixels = 128L * 32 * 32;
    p.max_pixels = 768L * 32 * 32;
    p.total_pixels = 128000.0 * 32 * 32 * 0.9;
    p.resized_height = 0;
    p.resized_width = 0;
    p.video_start = -1.0;
    p.video_end = -1.0;
    p.factor = 32;
    p.temporal_patch = 2;
    return p;
}

/*
 * torch.linspace(start, end, n) for a float32 result as torch 1.13's CPU kernel computes it
 * (docs/qwen3vl.md §1.3): step and the two-sided base in float32 with one rounding (FMA), elements
 * produced in blocks of 16 (two vectors of 8 lanes, lane k = base(c) + k*step with two roundings)
 * while a whole block fits, the tail element by element. Statements are kept separate so that no
 * compiler contracts the two-rounding lanes into an FMA (ISO C mode, -ffp-contract=off).
 */
static float lin_base(float start, float end, float step, int64_t n, int64_t half, int64_t i)
{
    if (i < half)
        return fmaf(step, (float)i, start);
    return fmaf(-step, (float)(n - 1 - i), end);
}

/* rint() of a float as an int64, saturating instead of overflowing (inputs are the caller's). */
static int64_t rint_i64(float v)
{
    float r = rintf(v);
    if (!(r > -9.2e18f))
        return r != r ? 0 : INT64_MIN;
    if (r >= 9.2e18f)
        return INT64_MAX;
    return (int64_t)r;
}

void vg_linspace_round_f32(double start, double end, int n, int64_t *out)
{
    if (n <= 0 || !out)
        return;
    float fs = (float)start, fe = (float)end;
    if (n == 1) {
        out[0] = rint_i64(fs);
        return;
    }
    float step = (fe - fs) / (float)(n - 1);
    int64_t half = n / 2;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int v = 0; v < 2; v++) {
            int64_t c = i + 8 * v;
            float b = lin_base(fs, fe, step, n, half, c);
            for (int k = 0; k < 8; k++) {
                volatile float ks = (float)k * step;
                float val = b + ks;
                out[c + k] = rint_i64(val);
            }
        }
    }
    for (; i < n; i++)
        out[i] = rint_i64(lin_base(fs, fe, step, n, half, i));
}

/* Python round_by_factor / ceil_by_factor / floor_by_factor on doubles. */
static double round_by(double x, double f)
{
    return nearbyint(x / f) * f;
}
static double ceil_by(double x, double f)
{
    return ceil(x / f) * f;
}
static double floor_by(double x, double f)
{
    return floor(x / f) * f;
}

/* smart_resize with a double max_pixels (the video budget is a float in the reference). */
static int smart_resize_d(double height, double width, int factor, double min_pixels,
                          double max_pixels, int *out_h, int *out_w, char *err, size_t errlen)
{
    if (factor <= 0)
        return vg_fail(err, errlen, VG_EINVAL, "the resize factor must be positive, got %d.",
                       factor);
    if (!(height >= 1) || !(width >= 1) || height > 1e9 || width > 1e9)
        return vg_fail(err, errlen, VG_EINVAL,
                       "a frame size of %.0fx%.0f cannot be resized: both sides must be between 1 "
                       "and 1e9 pixels.",
                       width, height);
    if (!(max_pixels >= min_pixels))
        return vg_fail(err, errlen, VG_EINVAL,
                       "max_pixels (%.1f) must be greater than or equal to min_pixels (%.0f).",
                       max_pixels, min_pixels);
    double ratio = fmax(height, width) / fmin(height, width);
    if (ratio > VG_MAX_RATIO)
        return vg_fail(err, errlen, VG_ERANGE,
                       "absolute aspect ratio must be smaller than %.0f, got %g (%.0fx%.0f).",
                       VG_MAX_RATIO, ratio, width, height);
    double f = factor;
    double h = fmax(f, round_by(height, f));
    double w = fmax(f, round_by(width, f));
    if (h * w > max_pixels) {
        double beta = sqrt((height * width) / max_pixels);
        h = floor_by(height / beta, f);
        w = floor_by(width / beta, f);
    } else if (h * w < min_pixels) {
        double beta = sqrt(min_pixels / (height * width));
        h = ceil_by(height * beta, f);
        w = ceil_by(width * beta, f);
    }
    if (h < f || w < f)
        return vg_fail(err, errlen, VG_ERANGE,
                       "a %.0fx%.0f frame shrinks to %.0fx%.0f under a budget of %.0f pixels: a "
                       "side would be 0; raise max_pixels or crop the video.",
                       width, height, w, h, max_pixels);
    if (h > 1e9 || w > 1e9)
        return vg_fail(err, errlen, VG_ERANGE, "the resized size %.0fx%.0f is too large.", w, h);
    *out_h = (int)h;
    *out_w = (int)w;
    return 0;
}

int vg_smart_resize(int height, int width, int factor, long min_pixels, long max_pixels, int *out_h,
                    int *out_w, char *err, size_t errlen)
{
    if (!out_h || !out_w)
        return vg_fail(err, errlen, VG_EINVAL, "vg_smart_resize needs output pointers.");
    return smart_resize_d(height, width, factor, (double)min_pixels, (double)max_pixels, out_h,
                          out_w, err, errlen);
}

void vg_plan_free(vg_plan *plan)
{
    if (!plan)
        return;
    free(plan->frame_indices);
    free(plan->frame_times);
    free(plan->pair_times);
    free(plan);
}

double vg_pair_time(double first, double last)
{
    return (first + last) / 2.0;
}

int vg_timeline_pair_times(const vg_timeline *tl, int temporal_patch, double *out, int n_pairs)
{
    if (!tl || !tl->seconds || tl->n <= 0 || temporal_patch <= 0 || !out || n_pairs <= 0 ||
        (int64_t)n_pairs * temporal_patch < tl->n ||
        (int64_t)(n_pairs - 1) * temporal_patch >= tl->n)
        return VG_EINVAL;
    for (int k = 0; k < n_pairs; k++) {
        /* An odd tail repeats the last frame. */
        int a = k * temporal_patch, b = VG_MIN(k * temporal_patch + temporal_patch - 1, tl->n - 1);
        out[k] = vg_pair_time(tl->seconds[a], tl->seconds[b]);
    }
    return 0;
}

int vg_time_token(double seconds, char *buf, size_t cap)
{
    if (!buf || !isfinite(seconds) || fabs(seconds) >= 1e30)
        return VG_ERANGE;
    int n = snprintf(buf, cap, "<%.1f seconds>", seconds);
    if (n < 0 || (size_t)n >= cap)
        return VG_ERANGE;
    return n;
}

/* calculate_video_frame_range: absolute [start, end] and the clipped frame count. */
static int frame_range(int64_t total, double fps, const vg_sample_params *p, int64_t *start,
                       int64_t *end, char *err, size_t errlen)
{
    *start = 0;
    *end = total - 1;
    int has_s = p->video_start >= 0, has_e = p->video_end >= 0;
    if (!has_s && !has_e)
        return 0;
    double max_duration = (double)total / fps;
    double s = 0, e = max_duration;
    if (has_s) {
        s = fmax(0.0, fmin(p->video_start, max_duration));
        *start = (int64_t)ceil(s * fps);
    }
    if (has_e) {
        e = fmax(0.0, fmin(p->video_end, max_duration));
        int64_t ef = (int64_t)floor(e * fps);
        *end = ef < total - 1 ? ef : total - 1;
    }
    if (*start >= *end)
        return vg_fail(err, errlen, VG_EINVAL,
                       "invalid time range: start frame %lld (at %gs) is not before end frame "
                       "%lld (at %gs); the video lasts %.2fs (%lld frames at %g fps).",
                       (long long)*start, s, (long long)*end, e, max_duration, (long long)total,
                       fps);
    return 0;
}

/* smart_nframes on the clipped frame count. */
static int smart_nframes(int64_t total, double fps, const vg_sample_params *p, int64_t *out,
                         char *err, size_t errlen)
{
    const double ff = 2.0; /* FRAME_FACTOR */
    double n;
    if (p->nframes > 0) {
        n = round_by((double)p->nframes, ff);
    } else {
        if (!(p->fps > 0) || !isfinite(p->fps))
            return vg_fail(err, errlen, VG_EINVAL, "the sampling fps must be positive, got %g.",
                           p->fps);
        if (p->min_frames < 0 || p->max_frames <= 0)
            return vg_fail(err, errlen, VG_EINVAL,
                           "min_frames (%d) must be >= 0 and max_frames (%d) positive.",
                           p->min_frames, p->max_frames);
        double min_frames = ceil_by((double)p->min_frames, ff);
        double max_frames = floor_by(fmin((double)p->max_frames, (double)total), ff);
        n = (double)total / fps * p->fps;
        n = fmin(fmin(fmax(n, min_frames), max_frames), (double)total);
        n = floor_by(n, ff);
    }
    if (!(ff <= n && n <= (double)total))
        return vg_fail(err, errlen, VG_EINVAL,
                       "nframes should in interval [2, %lld], but got %.0f. The video has too few "
                       "frames to sample.",
                       (long long)total, n);
    if (n > 1e6)
        return vg_fail(err, errlen, VG_ELIMIT, "%.0f frames is more than a plan may sample.", n);
    *out = (int64_t)n;
    return 0;
}

int vg_plan_compute(int64_t total_frames, double fps, int width, int height,
                    const vg_sample_params *params, vg_plan **out, char *err, size_t errlen)
{
    if (!out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_plan_compute needs an output pointer.");
    vg_sample_params p = params ? *params : vg_sample_default_params();
    if (p.factor <= 0 || p.factor % 2 || p.factor > 4096)
        return vg_fail(err, errlen, VG_EINVAL, "the resize factor must be a positive even number.");
    if (p.temporal_patch <= 0 || p.temporal_patch > 64)
        return vg_fail(err, errlen, VG_EINVAL, "the temporal patch size must be positive.");
    if (total_frames <= 0)
        return vg_fail(err, errlen, VG_EINVAL,
                       "the video has %lld frames: nothing to sample (a live stream has no frame "
                       "count).",
                       (long long)total_frames);
    if (total_frames > (int64_t)1 << 40)
        return vg_fail(err, errlen, VG_ERANGE, "a frame count of %lld is not plausible.",
                       (long long)total_frames);
    if (!(fps > 0) || !isfinite(fps) || fps > 1e6)
        return vg_fail(err, errlen, VG_EINVAL,
                       "the video frame rate must be positive and finite, got %g.", fps);
    if (width <= 0 || height <= 0)
        return vg_fail(err, errlen, VG_EINVAL,
                       "the frame size %dx%d is invalid: both sides must be positive.", width,
                       height);
    if (p.min_pixels < 0 || !(p.total_pixels >= 0) || p.max_pixels < 0)
        return vg_fail(err, errlen, VG_EINVAL, "pixel budgets must not be negative.");
    if (p.min_pixels > 1e15 || p.max_pixels > 1e15 || !(p.total_pixels <= 1e18))
        return vg_fail(err, errlen, VG_ERANGE, "a pixel budget is implausibly large.");

    int64_t start = 0, end = 0;
    int rc = frame_range(total_frames, fps, &p, &start, &end, err, errlen);
    if (rc)
        return rc;
    int64_t clipped = end - start + 1;
    int64_t nframes = 0;
    rc = smart_nframes(clipped, fps, &p, &nframes, err, errlen);
    if (rc)
        return rc;

    /* Per-frame budget (fetch_video). */
    double f = p.factor;
    double min_pixels = (double)(p.min_pixels ? p.min_pixels : (long)(128 * f * f));
    double total_pixels = p.total_pixels > 0 ? p.total_pixels : 128000.0 * f * f * 0.9;
    double cap = 768.0 * f * f;
    double max_pixels = fmax(fmin(cap, total_pixels / (double)nframes * 2.0),
                             (double)(long long)(min_pixels * 1.05));
    if (p.max_pixels > 0)
        max_pixels = fmin((double)p.max_pixels, max_pixels);

    int rh = 0, rw = 0;
    if (p.resized_height > 0 && p.resized_width > 0)
        rc = smart_resize_d(p.resized_height, p.resized_width, p.factor, 4.0 * f * f,
                            16384.0 * f * f, &rh, &rw, err, errlen);
    else
        rc = smart_resize_d(height, width, p.factor, min_pixels, max_pixels, &rh, &rw, err, errlen);
    if (rc)
        return rc;

    int tp = p.temporal_patch;
    int patch = p.factor / 2; /* Qwen3-VL merges 2x2 patches: factor = patch * 2 */
    int64_t n_pairs = (nframes + tp - 1) / tp;
    vg_plan *plan = calloc(1, sizeof *plan);
    if (!plan)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for a plan.");
    plan->frame_indices = malloc((size_t)nframes * sizeof *plan->frame_indices);
    plan->frame_times = malloc((size_t)nframes * sizeof *plan->frame_times);
    plan->pair_times = malloc((size_t)n_pairs * sizeof *plan->pair_times);
    if (!plan->frame_indices || !plan->frame_times || !plan->pair_times) {
        vg_plan_free(plan);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for a plan of %lld frames.",
                       (long long)nframes);
    }
    plan->nframes = (int)nframes;
    plan->n_pairs = (int)n_pairs;
    vg_linspace_round_f32((double)start, (double)end, (int)nframes, plan->frame_indices);
    for (int64_t i = 0; i < nframes; i++) {
        /* float32 rounding can never leave [start, end], but an index is used to seek: check. */
        if (plan->frame_indices[i] < start)
            plan->frame_indices[i] = start;
        if (plan->frame_indices[i] > end)
            plan->frame_indices[i] = end;
        plan->frame_times[i] = (double)plan->frame_indices[i] / fps;
    }
    vg_timeline planned = {plan->nframes, plan->frame_indices, plan->frame_times, 1};
    vg_timeline_pair_times(&planned, tp, plan->pair_times, plan->n_pairs);
    plan->resized_height = rh;
    plan->resized_width = rw;
    plan->grid_t = (int)n_pairs;
    plan->grid_h = rh / patch;
    plan->grid_w = rw / patch;
    plan->tokens_per_pair = (long)plan->grid_h * plan->grid_w / 4;
    plan->video_tokens = plan->tokens_per_pair * plan->grid_t;
    plan->sample_fps = (double)nframes / (double)clipped * fps;
    *out = plan;
    return 0;
}
