/*
 * media_clip.c: vg_media_read_video, decoding the frames a sampling plan asks for (qwen-vl-utils
 * "Path A", spec §1.2-§1.4 and §1.7).
 *
 * Decoding. Packets are decoded sequentially with frame threading; the n-th frame the decoder
 * outputs (presentation order, as the reference decoders and the ffmpeg CLI number them) has index
 * n. Only frames whose index is in the plan go to the conversion pool (media_conv.c); the others
 * are dropped right after decoding. Decoding stops at the last sampled index.
 *
 * Fast path (decode_fast). Counting decoder outputs needs every frame decoded. For local H.264 and
 * MPEG-1/2/4 files in containers with real per-packet PTS (mp4/mov, MKV/WebM, MPEG-TS, HLS) whose
 * packets all sit on the grid start + index / fps, the index is known from the packet's PTS before
 * decoding, so skip_frame = NONREF is set per packet for unsampled frames: a non-reference frame
 * is never used for prediction, so every other frame decodes to the same pixels. This is exact
 * only if the packet indices are 0, 1, 2, ... without gaps or repeats: that is verified up to the
 * last sampled index, together with the decoded frames' order, and any deviation (VFR, a gap, a
 * missing timestamp, a short file) reopens the input and decodes sequentially instead. Other
 * codecs (VP8/9, HEVC, AV1, ...) are always decoded sequentially.
 *
 * Timestamps. If every decoded frame up to the last sampled one lies within two time-base ticks of
 * index / fps after the first frame's time, the stream is constant-frame-rate and the sampled
 * frames get exactly index / fps (the reference's value, §1.7); otherwise (variable frame rate)
 * they get their real presentation times.
 *
 * Short streams. If the stream ends before the last sampled index (a truncated file, or a header
 * count that was too high), the plan is recomputed with the number of frames actually decoded and
 * the input is decoded again from a fresh open (over the network too; if that open fails, its
 * error is returned). A second shortfall fails with VG_EMEDIA.
 *
 * Thread: the vg_media's thread; it starts the conversion workers of media_conv.c and joins them
 * before vg_media_read_video returns.
 */
#include "media_internal.h"

#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    int64_t index;
    int pos; /* position in the plan */
} slot;

static int cmp_slot(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return x->pos - y->pos;
}

#define SHORT_STREAM 1  /* internal: the stream ended early; *decoded holds the real count */
#define FALLBACK     2  /* internal: the fast path does not apply; decode sequentially */
#define LOOKAHEAD    64 /* packets read past the last sampled frame to see every earlier index */

/* Whether unsampled non-reference frames may be skipped: codecs whose non-reference frames are
 * never used for prediction (H.264 nal_ref_idc 0, MPEG-1/2/4 B-frames), a local file (so the
 * sequential path can start again), a start time and a frame rate. */
static int fast_eligible(const vg_media *m)
{
    if (!m->is_file || m->start_pts == AV_NOPTS_VALUE || !(m->info.fps > 0) || !m->dec)
        return 0;
    /* Only containers that store real presentation times per packet (AVI and raw streams
     * synthesize them from the decode order, which would misname reordered frames). */
    const char *f = m->fmt->iformat ? m->fmt->iformat->name : "";
    if (!strstr(f, "mov") && !strstr(f, "matroska") && strcmp(f, "mpegts") != 0 &&
        strcmp(f, "hls") != 0)
        return 0;
    switch (m->dec->codec_id) {
    case AV_CODEC_ID_H264:
    case AV_CODEC_ID_MPEG4:
    case AV_CODEC_ID_MPEG2VIDEO:
    case AV_CODEC_ID_MPEG1VIDEO:
        return 1;
    default:
        return 0;
    }
}

/* Fast path. A frame's index is its PTS on the grid start + index / fps, which equals its position
 * in presentation order exactly when the packets' indices are 0, 1, 2, ... without gaps or repeats,
 * which is checked for every index up to the last sampled one (reading up to LOOKAHEAD packets
 * more at the end); the decoded frames must also come out on the grid in increasing order. Any
 * deviation (VFR, a gap, a missing timestamp, a short stream) returns FALLBACK and the caller
 * decodes everything sequentially from a fresh open. Unsampled non-reference frames are then
 * never decoded: nothing refers to them, so every other frame decodes to the same pixels. */
static int decode_fast(vg_media *m, const slot *order, int n, uint8_t *rgb, size_t fsz, int W,
                       int H, vg_progress_fn progress, void *opaque, char *err, size_t errlen)
{
    int64_t last = order[n - 1].index;
    double fps = m->info.fps;
    if (last >= ((int64_t)1 << 28)) /* a frame count from a lying header: no map that large */
        return FALLBACK;
    uint8_t *map = calloc((size_t)(last + 1), 2);
    if (!map)
        return FALLBACK;
    for (int k = 0; k < n; k++)
        map[order[k].index] = 1;
    m->sampled = map;
    m->seen = map + last + 1;
    m->map_len = last + 1;
    m->seen_upto_last = 0;
    m->skip_invalid = 0;
    m->skip_tol = 2.0 * av_q2d(m->tb) + 1e-9;
    m->skip_mode = 1;

    conv_pool pool;
    int rc = media_pool_start(&pool, media_pool_workers(n), W, H, err, errlen);
    if (rc < 0)
        goto done;
    int next = 0;
    int64_t prev = -1, outputs = 0, errors0 = m->dec_errors_total;
    int reorder = 0;
    uint64_t last_progress = 0;
    while (next < n) {
        if (atomic_load(&pool.failed)) {
            rc = media_pool_finish(&pool, 0, err, errlen);
            if (rc == 0)
                rc = vg_fail(err, errlen, VG_EDECODE, "a frame could not be converted.");
            goto done;
        }
        rc = media_decode_next(m, err, errlen);
        if (rc == VG_EPIPE || m->skip_invalid) {
            rc = FALLBACK;
            goto out_pool;
        }
        if (rc < 0)
            goto out_pool;
        int64_t ts = m->frame->best_effort_timestamp;
        if (ts == AV_NOPTS_VALUE) {
            rc = FALLBACK;
            goto out_pool;
        }
        /* A frame the decoder failed on, or a reorder depth it had to raise (it then drops an
         * out-of-order frame), would shift the reference's count: decode sequentially. */
        if (prev < 0)
            reorder = m->dec->has_b_frames;
        double t = (double)(ts - m->start_pts) * av_q2d(m->tb);
        int64_t idx = llround(t * fps);
        if (m->dec_errors_total != errors0 || m->dec->has_b_frames != reorder || idx <= prev ||
            fabs(t - (double)idx / fps) > m->skip_tol) {
            rc = FALLBACK;
            goto out_pool;
        }
        prev = idx;
        if (idx > last) {
            rc = FALLBACK; /* a sampled frame was not produced */
            goto out_pool;
        }
        if (next < n && order[next].index < idx) {
            rc = FALLBACK;
            goto out_pool;
        }
        int sampled = next < n && order[next].index == idx;
        if (sampled) {
            rc = media_pool_submit(&pool, m, rgb + (size_t)order[next].pos * fsz, err, errlen);
            if (rc < 0)
                goto out_pool;
            while (next < n && order[next].index == idx)
                next++;
        }
        outputs++;
        av_frame_unref(m->frame);
        if (progress) {
            uint64_t now = vg_now_ns();
            if (sampled || now - last_progress > 100000000u) {
                last_progress = now;
                if (progress("decode", (double)(idx + 1) / (double)(last + 1), opaque) != 0) {
                    rc = vg_fail(err, errlen, VG_ECANCELED, "decoding was cancelled.");
                    goto out_pool;
                }
            }
        }
    }
    rc = media_pool_finish(&pool, 0, err, errlen);
    if (rc < 0)
        goto done;
    /* Every index up to the last sampled one must have had its packet; a reordered one may still
     * be ahead in the file. */
    for (int k = 0; k < LOOKAHEAD && m->seen_upto_last < last + 1 && !m->skip_invalid; k++) {
        media_arm(m, m->params.read_timeout_ms);
        int r = av_read_frame(m->fmt, m->pkt);
        media_disarm(m);
        if (r < 0)
            break;
        if (m->pkt->stream_index == m->vstream)
            media_classify_packet(m);
        av_packet_unref(m->pkt);
    }
    if (m->skip_invalid || m->seen_upto_last != last + 1 || m->dec_errors_total != errors0)
        rc = FALLBACK;
    else
        vg_log(VG_LOG_DEBUG, "media", "%s: fast path: %lld of %lld frames decoded", m->url,
               (long long)outputs, (long long)(last + 1));
    goto done;
out_pool:
    media_pool_finish(&pool, 1, NULL, 0);
done:
    av_frame_unref(m->frame);
    m->skip_mode = 0;
    if (m->dec)
        m->dec->skip_frame = AVDISCARD_DEFAULT;
    m->sampled = NULL;
    m->seen = NULL;
    m->map_len = 0;
    free(map);
    return rc;
}

static int decode_plan(vg_media *m, vg_plan *plan, uint8_t *rgb, vg_progress_fn progress,
                       void *opaque, int64_t *decoded, char *err, size_t errlen)
{
    int n = plan->nframes, H = plan->resized_height, W = plan->resized_width;
    if (n <= 0 || H <= 0 || W <= 0 || !plan->frame_indices)
        return vg_fail(err, errlen, VG_EINVAL, "the plan samples no frames.");
    size_t fsz = (size_t)H * (size_t)W * 3;
    slot *order = malloc((size_t)n * sizeof *order);
    double *times = malloc((size_t)n * sizeof *times);
    if (!order || !times) {
        free(order);
        free(times);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    }
    for (int i = 0; i < n; i++) {
        order[i].index = plan->frame_indices[i];
        order[i].pos = i;
    }
    qsort(order, (size_t)n, sizeof *order, cmp_slot);
    int rc = 0;
    if (order[0].index < 0) {
        rc = vg_fail(err, errlen, VG_EINVAL, "the plan has a negative frame index.");
        goto out;
    }
    rc = media_rewind(m, err, errlen);
    if (rc < 0)
        goto out;
    if (fast_eligible(m)) {
        rc = decode_fast(m, order, n, rgb, fsz, W, H, progress, opaque, err, errlen);
        if (rc == 0) {
            for (int k = 1; k < n; k++)
                if (order[k].index == order[k - 1].index)
                    memcpy(rgb + (size_t)order[k].pos * fsz, rgb + (size_t)order[k - 1].pos * fsz,
                           fsz);
            for (int k = 0; k < n; k++)
                times[k] = (double)plan->frame_indices[k] / m->info.fps;
            *decoded = order[n - 1].index + 1;
            rc = vg_plan_set_frame_times(plan, times);
            if (rc < 0)
                rc = vg_fail(err, errlen, rc, "cannot set the frame times of the plan.");
            goto out;
        }
        if (rc != FALLBACK)
            goto out;
        vg_log(VG_LOG_DEBUG, "media", "%s: sequential path (timestamps off the frame grid)",
               m->url);
        rc = media_rewind(m, err, errlen);
        if (rc < 0)
            goto out;
    }

    conv_pool pool;
    rc = media_pool_start(&pool, media_pool_workers(n), W, H, err, errlen);
    if (rc < 0)
        goto out;

    int64_t last = order[n - 1].index;
    double fps = m->info.fps;
    double tol = 2.0 * av_q2d(m->tb) + 1e-9;
    int64_t base = m->start_pts;
    double t0 = NAN;
    int cfr = 1;
    int next = 0;
    int64_t i = 0;
    uint64_t last_progress = 0;
    for (;; i++) {
        if (atomic_load(&pool.failed)) {
            rc = media_pool_finish(&pool, 0, err, errlen);
            if (rc == 0)
                rc = vg_fail(err, errlen, VG_EDECODE, "a frame could not be converted.");
            goto out;
        }
        rc = media_decode_next(m, err, errlen);
        if (rc == VG_EPIPE) {
            *decoded = i;
            if (i == 0 && m->dec_errors > 0)
                rc = vg_fail(err, errlen, VG_EDECODE, "no frame of '%.200s' could be decoded: %s.",
                             m->url, m->last_dec_error);
            else
                rc = SHORT_STREAM;
            goto out_pool;
        }
        if (rc < 0)
            goto out_pool;
        double t = media_frame_time(m, &base);
        /* On the grid from the first timed frame: AVI with B-frames, for one, has every timestamp
         * one frame late (taken from the decode order) and none on the last frame. A frame
         * without a timestamp does not decide. */
        if (!isnan(t) && isnan(t0)) {
            t0 = t - (double)i / fps;
        } else if (!isnan(t) && fabs((t - t0) - (double)i / fps) > tol) {
            cfr = 0;
        }
        int first_pos = -1;
        while (next < n && order[next].index == i) {
            int pos = order[next].pos;
            if (first_pos < 0) { /* repeated indices are copied once all frames are converted */
                rc = media_pool_submit(&pool, m, rgb + (size_t)pos * fsz, err, errlen);
                if (rc < 0)
                    goto out_pool;
                first_pos = pos;
            }
            times[pos] = isnan(t) ? (double)i / fps : t;
            next++;
        }
        av_frame_unref(m->frame);
        if (progress) {
            uint64_t now = vg_now_ns();
            if (first_pos >= 0 || now - last_progress > 100000000u || i == last) {
                last_progress = now;
                if (progress("decode", (double)(i + 1) / (double)(last + 1), opaque) != 0) {
                    rc = vg_fail(err, errlen, VG_ECANCELED, "decoding was cancelled.");
                    goto out_pool;
                }
            }
        }
        if (next == n)
            break;
    }
    *decoded = i + 1;
    rc = media_pool_finish(&pool, 0, err, errlen);
    if (rc < 0)
        goto out;
    for (int k = 1; k < n; k++)
        if (order[k].index == order[k - 1].index)
            memcpy(rgb + (size_t)order[k].pos * fsz, rgb + (size_t)order[k - 1].pos * fsz, fsz);
    if (cfr) {
        for (int k = 0; k < n; k++)
            times[k] = (double)plan->frame_indices[k] / fps;
    } else {
        vg_log(VG_LOG_DEBUG, "media", "%s: variable frame rate, using presentation times", m->url);
    }
    rc = vg_plan_set_frame_times(plan, times);
    if (rc < 0)
        rc = vg_fail(err, errlen, rc, "cannot set the frame times of the plan.");
    goto out;
out_pool:
    media_pool_finish(&pool, 1, NULL, 0);
out:
    av_frame_unref(m->frame);
    free(order);
    free(times);
    return rc;
}

static int read_video(vg_media *m, const vg_sample_params *p, vg_progress_fn progress, void *opaque,
                      vg_video **out, char *err, size_t errlen);

int vg_media_read_video(vg_media *m, const vg_sample_params *p, vg_progress_fn progress,
                        void *opaque, vg_video **out, char *err, size_t errlen)
{
    if (!m || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_media_read_video needs a media and *out.");
    int rc = read_video(m, p, progress, opaque, out, err, errlen);
    if (m->refused[0]) {
        if (rc == 0) {
            vg_video_free(*out);
            *out = NULL;
        }
        return media_check_refused(m, err, errlen);
    }
    return rc;
}

static int read_video(vg_media *m, const vg_sample_params *p, vg_progress_fn progress, void *opaque,
                      vg_video **out, char *err, size_t errlen)
{
    if (m->info.is_live)
        return vg_fail(err, errlen, VG_EINVAL,
                       "'%.200s' is a live stream; read it frame by frame (vg_media_next_frame).",
                       m->url);
    if (m->info.total_frames <= 0)
        return vg_fail(err, errlen, VG_EMEDIA, "the frame count of '%.200s' is unknown.", m->url);
    if (m->info.fps <= 0)
        return vg_fail(err, errlen, VG_EMEDIA, "the frame rate of '%.200s' is unknown.", m->url);
    vg_sample_params sp = p ? *p : vg_sample_default_params();
    int64_t total = m->info.total_frames;
    for (int attempt = 0;; attempt++) {
        vg_plan *plan = NULL;
        int rc = vg_plan_compute(total, m->info.fps, m->info.width, m->info.height, &sp, &plan, err,
                                 errlen);
        if (rc < 0)
            return rc;
        size_t fsz, all;
        if (vg_mul_size((size_t)plan->resized_height * 3, (size_t)plan->resized_width, &fsz) ||
            vg_mul_size(fsz, (size_t)plan->nframes, &all)) {
            vg_plan_free(plan);
            return vg_fail(err, errlen, VG_ELIMIT, "the sampled video is too large.");
        }
        uint8_t *rgb = malloc(all ? all : 1);
        if (!rgb) {
            vg_plan_free(plan);
            return vg_fail(err, errlen, VG_ENOMEM, "out of memory for %d frames of %dx%d.",
                           plan->nframes, plan->resized_width, plan->resized_height);
        }
        int64_t decoded = 0;
        rc = decode_plan(m, plan, rgb, progress, opaque, &decoded, err, errlen);
        if (rc == 0) {
            vg_video *v = calloc(1, sizeof *v);
            if (!v) {
                free(rgb);
                vg_plan_free(plan);
                return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
            }
            v->plan = plan;
            v->timeline.n = plan->nframes;
            v->timeline.index = malloc((size_t)plan->nframes * sizeof *v->timeline.index);
            v->timeline.seconds = malloc((size_t)plan->nframes * sizeof *v->timeline.seconds);
            if (!v->timeline.index || !v->timeline.seconds) {
                free(rgb);
                vg_video_free(v);
                return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
            }
            memcpy(v->timeline.index, plan->frame_indices,
                   (size_t)plan->nframes * sizeof *v->timeline.index);
            memcpy(v->timeline.seconds, plan->frame_times,
                   (size_t)plan->nframes * sizeof *v->timeline.seconds);
            v->T = plan->nframes;
            v->H = plan->resized_height;
            v->W = plan->resized_width;
            v->rgb = rgb;
            *out = v;
            return 0;
        }
        int64_t needed = 0;
        for (int k = 0; k < plan->nframes; k++)
            needed = VG_MAX(needed, plan->frame_indices[k] + 1);
        free(rgb);
        vg_plan_free(plan);
        if (rc != SHORT_STREAM)
            return rc;
        if (attempt > 0 || decoded < 1)
            return vg_fail(err, errlen, VG_EMEDIA,
                           "'%.200s' ended after %lld decoded frames, but %lld were needed.",
                           m->url, (long long)decoded, (long long)needed);
        vg_log(VG_LOG_WARNING, "media",
               "%s: only %lld of the %lld frames announced could be decoded; sampling again",
               m->url, (long long)decoded, (long long)total);
        total = decoded;
        m->info.total_frames = decoded;
    }
}

void vg_video_free(vg_video *v)
{
    if (!v)
        return;
    vg_plan_free(v->plan);
    free(v->timeline.index);
    free(v->timeline.seconds);
    free(v->rgb);
    free(v);
}
