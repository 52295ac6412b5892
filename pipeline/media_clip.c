/*
 * media_clip.c: vg_media_read_video, decoding the frames a sampling plan asks for (qwen-vl-utils
 * "Path A", docs/qwen3vl.md §1.2-§1.4 and §1.7).
 *
 * Decoding. Packets are decoded sequentially with frame threading; the n-th frame the decoder
 * outputs (presentation order, as the reference decoders and the ffmpeg CLI number them) has index
 * n. Only frames whose index is in the plan go to the conversion pool (media_conv.c); the others
 * are dropped right after decoding. Decoding stops at the last sampled index. One loop, run_pass,
 * does this for both paths below; a frame_policy says how a decoded frame's index is known (the
 * sequential policy counts outputs, the fast policy reads it off the PTS grid) and keeps its own
 * state in a local struct.
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
 * Timestamps. The result is a timeline (vg_video.timeline); the plan is input only and is not
 * changed. Frame times come from media_pts_seconds (media_decode.c: seconds from the input's
 * origin). If every decoded frame up to the last sampled one lies within two time-base ticks of
 * index / fps after the first frame's time, the stream is constant-frame-rate (constant_rate 1) and
 * the sampled frames get exactly index / fps (the reference's value, docs/qwen3vl.md §1.7, and the
 * plan's planned times); otherwise (variable frame rate) they get their real presentation times.
 * The fast path only succeeds on the grid, so its frames always get index / fps.
 *
 * Short streams. If the stream ends before the last sampled index (a truncated file, or a header
 * count that was too high), the plan is recomputed with the number of frames actually decoded and
 * the input is decoded again from a fresh open (over the network too; if that open fails, its
 * error is returned). A second shortfall fails with VG_EMEDIA.
 *
 * Unseekable network inputs. A network input that cannot seek or has no known length (HTTP without
 * byte ranges) is read as a clip from its start (clip_reopen: every pass reopens it, a fresh
 * request): its frames are counted first when its length is unknown, then the sequential pass
 * runs as for any network input. Live streams by nature (RTSP, RTP, UDP, SDP, an open HLS
 * playlist) are refused with VG_EMEDIA and a sentence that says to watch them.
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
#include <strings.h>

#define LOOKAHEAD 64 /* packets read past the last sampled frame to see every earlier index */

/* A sampled frame: its index in presentation order and its position in the plan. */
typedef struct slot {
    int64_t index;
    int pos;
} slot;

static int cmp_slot(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return x->pos - y->pos;
}

/* One decoding pass: what it is asked for and what it found. */
typedef struct clip_pass {
    vg_media *m;
    const slot *order; /* [n] sorted by index */
    int n;
    int64_t last; /* order[n - 1].index */
    uint8_t *rgb; /* [n][H][W][3], by plan position */
    size_t fsz;   /* H * W * 3 */
    int W, H;
    double *seconds; /* [n] by plan position: each sampled frame's time */
    vg_progress_fn progress;
    void *opaque;
    int64_t decoded; /* out: frames decoded (the last index seen + 1) */
} clip_pass;

/* How a pass ended when it did not fail. */
typedef enum pass_end {
    PASS_DONE,    /* every sampled frame was decoded and handed to the workers */
    PASS_SHORT,   /* the stream ended first; clip_pass.decoded holds the frames there were */
    PASS_OFF_GRID /* the policy cannot name the frames' indices (the fast path does not apply) */
} pass_end;

/* Which frames a pass sees and how their indices are known. */
typedef struct frame_policy {
    media_packet_fn on_packet; /* optional: sees each packet before the decoder */
    /* The index and time (seconds from the origin) of the frame in m->frame; non-zero when the
     * index cannot be known (the pass ends PASS_OFF_GRID). */
    int (*on_frame)(void *ctx, vg_media *m, int64_t *index, double *seconds);
    void *ctx;
    const int *off_grid; /* optional: set by on_packet when a packet breaks the policy's rules */
} frame_policy;

/* Ends a pass's frame: a sampled one (the first of its repeats) goes to the workers and every
 * plan position with its index gets its time. Advances *next; sets *sampled. */
static int take_frame(clip_pass *cp, conv_pool *pool, int64_t idx, double t, int *next,
                      int *sampled, char *err, size_t errlen)
{
    *sampled = 0;
    while (*next < cp->n && cp->order[*next].index == idx) {
        int pos = cp->order[*next].pos;
        if (!*sampled) { /* repeated indices are copied once all frames are converted */
            int rc = media_pool_submit(pool, cp->m, cp->rgb + (size_t)pos * cp->fsz, err, errlen);
            if (rc < 0)
                return rc;
            *sampled = 1;
        }
        cp->seconds[pos] = t;
        (*next)++;
    }
    return 0;
}

/* The one decode loop: decodes until every sampled frame was handed to the conversion workers,
 * naming each frame's index with pol, and reports progress. Returns 0 with *end, or an error (the
 * workers' first one included). */
static int run_pass(clip_pass *cp, const frame_policy *pol, pass_end *end, char *err, size_t errlen)
{
    vg_media *m = cp->m;
    conv_pool pool;
    int rc = media_pool_start(&pool, media_pool_workers(cp->n, m->info.width, m->info.height),
                              cp->W, cp->H, err, errlen);
    if (rc < 0)
        return rc;
    int next = 0;
    uint64_t last_progress = 0;
    *end = PASS_DONE;
    cp->decoded = 0;
    while (next < cp->n) {
        if (atomic_load(&pool.failed)) {
            rc = media_pool_finish(&pool, 0, err, errlen);
            av_frame_unref(m->frame);
            return rc < 0 ? rc
                          : vg_fail(err, errlen, VG_EDECODE, "a frame could not be converted.");
        }
        rc = media_decode_next(m, pol->on_packet, pol->ctx, err, errlen);
        int64_t idx = 0;
        double t = NAN;
        if (pol->off_grid && *pol->off_grid)
            *end = PASS_OFF_GRID;
        else if (rc == VG_EPIPE)
            *end = PASS_SHORT;
        else if (rc < 0)
            goto abandon;
        else if (pol->on_frame(pol->ctx, m, &idx, &t) || cp->order[next].index < idx)
            *end = PASS_OFF_GRID; /* for the fast policy: a sampled index was not produced */
        if (*end != PASS_DONE) {
            rc = 0;
            goto abandon;
        }
        int sampled;
        rc = take_frame(cp, &pool, idx, t, &next, &sampled, err, errlen);
        if (rc < 0)
            goto abandon;
        cp->decoded = idx + 1;
        av_frame_unref(m->frame);
        if (cp->progress) {
            uint64_t now = vg_now_ns();
            if (sampled || now - last_progress > 100000000u) {
                last_progress = now;
                double f = (double)(idx + 1) / (double)(cp->last + 1);
                if (cp->progress("decode", f, cp->opaque) != 0) {
                    rc = vg_fail(err, errlen, VG_ECANCELED, "decoding was cancelled.");
                    goto abandon;
                }
            }
        }
    }
    return media_pool_finish(&pool, 0, err, errlen);
abandon:
    media_pool_finish(&pool, 1, NULL, 0);
    av_frame_unref(m->frame);
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Sequential policy: the n-th frame the decoder outputs has index n. Its time is its presentation
 * time; the frames vote whether the stream is on the constant-frame-rate grid.
 */
typedef struct seq_state {
    int64_t count; /* frames decoded so far */
    double fps;
    double tol; /* two time-base ticks */
    double t0;  /* the grid's start: the first timed frame's time minus its index / fps */
    int cfr;    /* every timed frame so far is on the grid */
} seq_state;

static int seq_frame(void *ctx, vg_media *m, int64_t *index, double *seconds)
{
    seq_state *ss = ctx;
    int64_t i = ss->count++;
    double t = media_frame_seconds(m);
    /* On the grid from the first timed frame: AVI with B-frames, for one, has every timestamp
     * one frame late (taken from the decode order) and none on the last frame. A frame without a
     * timestamp does not decide. */
    if (!isnan(t) && isnan(ss->t0))
        ss->t0 = t - (double)i / ss->fps;
    else if (!isnan(t) && fabs((t - ss->t0) - (double)i / ss->fps) > ss->tol)
        ss->cfr = 0;
    *index = i;
    *seconds = isnan(t) ? (double)i / ss->fps : t;
    return 0;
}

/* Decodes every frame up to the last sampled one. *cfr: whether they were all on the grid. */
static int decode_sequential(clip_pass *cp, pass_end *end, int *cfr, char *err, size_t errlen)
{
    vg_media *m = cp->m;
    seq_state ss = {
        .fps = m->info.fps, .tol = media_ticks_seconds(m, 2) + 1e-9, .t0 = NAN, .cfr = 1};
    frame_policy pol = {NULL, seq_frame, &ss, NULL};
    int rc = run_pass(cp, &pol, end, err, errlen);
    if (rc == 0 && *end == PASS_SHORT && cp->decoded == 0 && m->dec_errors > 0)
        return vg_fail(err, errlen, VG_EDECODE, "no frame of '%.200s' could be decoded: %s.",
                       m->url, m->last_dec_error);
    *cfr = ss.cfr;
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Fast policy. A frame's index is its PTS on the grid start + index / fps, which equals its
 * position in presentation order exactly when the packets' indices are 0, 1, 2, ... without gaps
 * or repeats, which is checked for every index up to the last sampled one (reading up to LOOKAHEAD
 * packets more at the end); the decoded frames must also come out on the grid in increasing order.
 * Any deviation (VFR, a gap, a missing timestamp, a short stream) ends the pass PASS_OFF_GRID and
 * the caller decodes everything sequentially from a fresh open. Unsampled non-reference frames are
 * never decoded: nothing refers to them, so every other frame decodes to the same pixels.
 */
typedef struct fast_state {
    const uint8_t *sampled; /* [map_len] 1 = a sampled index */
    uint8_t *seen;          /* [map_len] packet indices read */
    int64_t map_len;        /* last sampled index + 1 */
    int64_t seen_upto_last; /* distinct indices < map_len read */
    int invalid;            /* a packet broke the rules: the fast path is abandoned */
    double fps;
    double tol;      /* two time-base ticks */
    int64_t prev;    /* the last frame's index, -1 before the first */
    int reorder;     /* the decoder's reorder depth at the first frame */
    int64_t errors0; /* m->dec_errors_total at the start */
    int64_t outputs; /* frames decoded */
} fast_state;

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

/* The packet hook: m->pkt's index from its PTS on the frame grid; marks it seen and tells the
 * decoder to skip the frame if it is an unsampled non-reference one. A packet without a
 * timestamp, off the grid or repeated makes the pass invalid. */
static void fast_packet(void *ctx, vg_media *m)
{
    fast_state *fs = ctx;
    const AVPacket *p = m->pkt;
    int64_t idx = -1;
    if (p->pts != AV_NOPTS_VALUE && !(p->flags & AV_PKT_FLAG_DISCARD)) {
        double t = media_pts_seconds(m, p->pts);
        double x = t * fs->fps;
        if (isfinite(x) && x > -0.5 && x < 1e15) {
            idx = llround(x);
            if (fabs(t - (double)idx / fs->fps) > fs->tol)
                idx = -1;
        }
    }
    if (idx < 0) {
        fs->invalid = 1;
        m->dec->skip_frame = AVDISCARD_DEFAULT;
        return;
    }
    if (idx < fs->map_len) {
        if (fs->seen[idx])
            fs->invalid = 1;
        else
            fs->seen_upto_last++;
        fs->seen[idx] = 1;
    }
    int need = idx < fs->map_len && fs->sampled[idx];
    m->dec->skip_frame = need ? AVDISCARD_DEFAULT : AVDISCARD_NONREF;
}

static int fast_frame(void *ctx, vg_media *m, int64_t *index, double *seconds)
{
    fast_state *fs = ctx;
    int64_t ts = m->frame->best_effort_timestamp;
    if (ts == AV_NOPTS_VALUE)
        return 1;
    /* A frame the decoder failed on, or a reorder depth it had to raise (it then drops an
     * out-of-order frame), would shift the reference's count: decode sequentially. */
    if (fs->prev < 0)
        fs->reorder = m->dec->has_b_frames;
    double t = media_pts_seconds(m, ts);
    int64_t idx = llround(t * fs->fps);
    if (m->dec_errors_total != fs->errors0 || m->dec->has_b_frames != fs->reorder ||
        idx <= fs->prev || fabs(t - (double)idx / fs->fps) > fs->tol)
        return 1;
    fs->prev = idx;
    fs->outputs++;
    *index = idx;
    *seconds = t;
    return 0;
}

/* After the last sampled frame: every index up to it must have had its packet; a reordered one may
 * still be ahead in the file. */
static void fast_verify(vg_media *m, fast_state *fs, pass_end *end)
{
    for (int k = 0; k < LOOKAHEAD && fs->seen_upto_last < fs->map_len && !fs->invalid; k++) {
        media_arm(m, m->params.read_timeout_ms);
        int r = av_read_frame(m->fmt, m->pkt);
        media_disarm(m);
        if (r < 0)
            break;
        if (m->pkt->stream_index == m->vstream)
            fast_packet(fs, m);
        av_packet_unref(m->pkt);
    }
    if (fs->invalid || fs->seen_upto_last != fs->map_len || m->dec_errors_total != fs->errors0)
        *end = PASS_OFF_GRID;
    else
        vg_log(VG_LOG_DEBUG, "media", "%s: fast path: %lld of %lld frames decoded", m->url,
               (long long)fs->outputs, (long long)fs->map_len);
}

/* Decodes the sampled frames with unsampled non-reference frames skipped. *end is PASS_DONE, or
 * PASS_OFF_GRID when the caller must decode sequentially (a short stream included). */
static int decode_fast(clip_pass *cp, pass_end *end, char *err, size_t errlen)
{
    vg_media *m = cp->m;
    *end = PASS_OFF_GRID;
    if (cp->last >= ((int64_t)1 << 28)) /* a frame count from a lying header: no map that large */
        return 0;
    uint8_t *map = calloc((size_t)(cp->last + 1), 2);
    if (!map)
        return 0;
    for (int k = 0; k < cp->n; k++)
        map[cp->order[k].index] = 1;
    fast_state fs = {.sampled = map,
                     .seen = map + cp->last + 1,
                     .map_len = cp->last + 1,
                     .fps = m->info.fps,
                     .tol = media_ticks_seconds(m, 2) + 1e-9,
                     .prev = -1,
                     .errors0 = m->dec_errors_total};
    frame_policy pol = {fast_packet, fast_frame, &fs, &fs.invalid};
    int rc = run_pass(cp, &pol, end, err, errlen);
    if (rc == 0 && *end == PASS_DONE)
        fast_verify(m, &fs, end);
    else if (rc == 0)
        *end = PASS_OFF_GRID;
    if (m->dec)
        m->dec->skip_frame = AVDISCARD_DEFAULT;
    free(map);
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Runs the fast pass where it applies, and the sequential pass where it does not or found the
 * input off the grid, each from the first frame. *cfr: the frames are on the constant-frame-rate
 * grid (always so after a fast pass).
 */
static int decode_passes(clip_pass *cp, pass_end *end, int *cfr, char *err, size_t errlen)
{
    vg_media *m = cp->m;
    int rc = media_rewind(m, err, errlen);
    if (rc < 0)
        return rc;
    *cfr = 1;
    *end = PASS_OFF_GRID;
    if (fast_eligible(m)) {
        rc = decode_fast(cp, end, err, errlen);
        if (rc < 0 || *end != PASS_OFF_GRID)
            return rc;
        vg_log(VG_LOG_DEBUG, "media", "%s: sequential path (timestamps off the frame grid)",
               m->url);
        rc = media_rewind(m, err, errlen);
        if (rc < 0)
            return rc;
    }
    return decode_sequential(cp, end, cfr, err, errlen);
}

/* After a complete pass: plan positions that repeat an index get its pixels, and the timeline of
 * a constant-frame-rate input gets exactly index / fps (the reference's value). */
static void finish_timeline(const clip_pass *cp, vg_timeline *tl, int cfr)
{
    const slot *order = cp->order;
    for (int k = 1; k < cp->n; k++)
        if (order[k].index == order[k - 1].index)
            memcpy(cp->rgb + (size_t)order[k].pos * cp->fsz,
                   cp->rgb + (size_t)order[k - 1].pos * cp->fsz, cp->fsz);
    tl->constant_rate = cfr;
    if (cfr) {
        for (int k = 0; k < tl->n; k++)
            tl->seconds[k] = (double)tl->index[k] / cp->m->info.fps;
    } else {
        vg_log(VG_LOG_DEBUG, "media", "%s: variable frame rate, using presentation times",
               cp->m->url);
    }
}

/* ------------------------------------------------------------------------------------------------
 * The plan's frames into rgb and their times into tl (tl->index holds the plan's indices; seconds
 * and constant_rate are written). Returns 0 with *end PASS_DONE, or PASS_SHORT with *decoded the
 * frames the stream had, or an error. The plan is not changed.
 */
static int decode_plan(vg_media *m, const vg_plan *plan, uint8_t *rgb, vg_progress_fn progress,
                       void *opaque, vg_timeline *tl, int64_t *decoded, pass_end *end, char *err,
                       size_t errlen)
{
    int n = plan->nframes, H = plan->resized_height, W = plan->resized_width;
    if (n <= 0 || H <= 0 || W <= 0 || !plan->frame_indices)
        return vg_fail(err, errlen, VG_EINVAL, "the plan samples no frames.");
    slot *order = malloc((size_t)n * sizeof *order);
    if (!order)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    for (int i = 0; i < n; i++) {
        order[i].index = plan->frame_indices[i];
        order[i].pos = i;
    }
    qsort(order, (size_t)n, sizeof *order, cmp_slot);
    clip_pass cp = {.m = m,
                    .order = order,
                    .n = n,
                    .last = order[n - 1].index,
                    .rgb = rgb,
                    .fsz = (size_t)H * (size_t)W * 3,
                    .W = W,
                    .H = H,
                    .seconds = tl->seconds,
                    .progress = progress,
                    .opaque = opaque};
    int cfr = 1, rc = 0;
    if (order[0].index < 0)
        rc = vg_fail(err, errlen, VG_EINVAL, "the plan has a negative frame index.");
    else
        rc = decode_passes(&cp, end, &cfr, err, errlen);
    if (rc == 0)
        *decoded = cp.decoded;
    if (rc == 0 && *end == PASS_DONE)
        finish_timeline(&cp, tl, cfr);
    av_frame_unref(m->frame);
    free(order);
    return rc;
}

/* A video for plan p of total frames: the plan, the output buffer and the timeline's arrays (its
 * indices the plan's). */
static int new_video(vg_media *m, int64_t total, const vg_sample_params *sp, vg_video **out,
                     char *err, size_t errlen)
{
    vg_plan *plan = NULL;
    int rc =
        vg_plan_compute(total, m->info.fps, m->info.width, m->info.height, sp, &plan, err, errlen);
    if (rc == VG_EINVAL || rc == VG_ERANGE) {
        /* The sampling asks what this video cannot give (too few frames, a start past its end,
         * an extreme aspect ratio): a media error, with the plan's sentence. */
        char why[400];
        snprintf(why, sizeof why, "%s", err && errlen ? err : "");
        return vg_fail(err, errlen, VG_EMEDIA,
                       "'%.200s' (%lld frames of %dx%d at %.3g fps) cannot be sampled: %s", m->url,
                       (long long)total, m->info.width, m->info.height, m->info.fps,
                       why[0] ? why : vg_strerror(rc));
    }
    if (rc < 0)
        return rc;
    size_t fsz, all;
    if (vg_mul_size((size_t)plan->resized_height * 3, (size_t)plan->resized_width, &fsz) ||
        vg_mul_size(fsz, (size_t)plan->nframes, &all)) {
        vg_plan_free(plan);
        return vg_fail(err, errlen, VG_ELIMIT, "the sampled video is too large.");
    }
    vg_video *v = calloc(1, sizeof *v);
    if (!v) {
        vg_plan_free(plan);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    }
    v->plan = plan;
    v->T = plan->nframes;
    v->H = plan->resized_height;
    v->W = plan->resized_width;
    v->rgb = malloc(all ? all : 1);
    if (!v->rgb) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory for %d frames of %dx%d.", plan->nframes,
                     plan->resized_width, plan->resized_height);
        vg_video_free(v);
        return rc;
    }
    vg_timeline *tl = &v->timeline;
    tl->n = plan->nframes;
    tl->index = malloc((size_t)tl->n * sizeof *tl->index);
    tl->seconds = malloc((size_t)tl->n * sizeof *tl->seconds);
    if (!tl->index || !tl->seconds) {
        vg_video_free(v);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    }
    memcpy(tl->index, plan->frame_indices, (size_t)tl->n * sizeof *tl->index);
    *out = v;
    return 0;
}

/* Whether the input is a live stream by nature: a protocol or demuxer for streams without an end
 * (RTSP, RTP, UDP, SRT, RTMP, an SDP session) or an HLS playlist that is still open (no duration).
 */
static int endless(const vg_media *m)
{
    static const char *const schemes[] = {
        "rtsp:", "rtsps:", "rtp:", "udp:", "srt:", "rtmp:", "rtmps:", "tcp:"};
    for (size_t i = 0; i < VG_ARRAY_LEN(schemes); i++)
        if (!strncasecmp(m->url, schemes[i], strlen(schemes[i])))
            return 1;
    const char *f = m->fmt && m->fmt->iformat ? m->fmt->iformat->name : "";
    if (!strcmp(f, "rtsp") || !strcmp(f, "rtp") || !strcmp(f, "sdp"))
        return 1;
    return !strcmp(f, "hls") && !(m->info.duration > 0);
}

/* A network input that cannot seek or has no known length (HTTP without byte ranges, a stream of
 * unknown duration) is read as a clip from its start each time (a fresh request per pass): its
 * frames are counted first when the length is unknown, and it is then decoded sequentially, with
 * the same indices and times as a seekable copy. A live stream by nature is refused with
 * VG_EMEDIA. */
static int prepare_unseekable(vg_media *m, char *err, size_t errlen)
{
    if (endless(m))
        return vg_fail(err, errlen, VG_EMEDIA,
                       "'%.200s' is a live stream, which has no end to sample a clip from; watch "
                       "it (the watch operation) to ask about it as it plays.",
                       m->url);
    m->clip_reopen = 1;
    vg_media_info *in = &m->info;
    if (in->duration > 0 && in->fps > 0 && in->total_frames <= 0)
        in->total_frames = llround(in->duration * in->fps); /* checked by the short-stream rule */
    if (in->total_frames <= 0) {
        int rc = media_count_frames(m, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int read_video(vg_media *m, const vg_sample_params *p, vg_progress_fn progress, void *opaque,
                      vg_video **out, char *err, size_t errlen)
{
    if (m->info.is_live) {
        int rc = prepare_unseekable(m, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (m->info.total_frames <= 0)
        return vg_fail(err, errlen, VG_EMEDIA, "the frame count of '%.200s' is unknown.", m->url);
    if (m->info.fps <= 0)
        return vg_fail(err, errlen, VG_EMEDIA, "the frame rate of '%.200s' is unknown.", m->url);
    vg_sample_params sp = p ? *p : vg_sample_default_params();
    int64_t total = m->info.total_frames;
    for (int attempt = 0;; attempt++) {
        vg_video *v = NULL;
        int rc = new_video(m, total, &sp, &v, err, errlen);
        if (rc < 0)
            return rc;
        int64_t decoded = 0;
        pass_end end = PASS_DONE;
        rc = decode_plan(m, v->plan, v->rgb, progress, opaque, &v->timeline, &decoded, &end, err,
                         errlen);
        if (rc == 0 && end == PASS_DONE) {
            *out = v;
            return 0;
        }
        int64_t needed = 0;
        for (int k = 0; k < v->plan->nframes; k++)
            needed = VG_MAX(needed, v->plan->frame_indices[k] + 1);
        vg_video_free(v);
        if (rc < 0)
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
