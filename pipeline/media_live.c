/*
 * media_live.c: live reading. vg_media_next_frame: the decoder's next frame (media_decode.c),
 * converted and resized with the vg_media's own converter, and its time in seconds from the
 * input's origin (media_pts_seconds, the same origin as vg_media_read_video's timeline).
 * vg_media_wait_size: the frame size of a live stream joined between keyframes.
 *
 * Joining mid-GOP. H.264 or HEVC in MPEG-TS (or RTP without parameter sets in its SDP) carries
 * its SPS/PPS in band, with each keyframe; a receiver that joins after one has no frame size until
 * the next, which may be tens of seconds away (x264's default GOP is 250 frames). The probe then
 * ends with a size of 0x0: media_live_check_dims lets that pass at open for a network input that
 * cannot seek, and vg_media_wait_size reads on, dropping the packets before the first keyframe
 * (the decoder could only fail on them, loudly), decodes that keyframe and keeps the frame for
 * vg_media_next_frame. Data arriving counts as progress: each read gets the read (stall) timeout;
 * the whole wait is bounded by VG_MEDIA_KEY_WAIT_S.
 *
 * Invariant: m->frame is unreferenced before vg_media_next_frame returns, whatever the outcome;
 * between vg_media_wait_size and the next vg_media_next_frame it holds the first frame (m->held).
 * The last time returned is kept so that a frame without a timestamp gets the previous one plus a
 * frame period.
 *
 * Thread: the vg_media's thread (a stream's reader thread in vigild); no worker threads.
 */
#include "media_internal.h"

#include "common.h"

#include <math.h>
#include <time.h>

/* A network input that cannot seek: what vg_media_info calls live whatever its duration. */
static int unseekable_network(const vg_media *m)
{
    return !m->is_file && m->fmt && !(m->fmt->pb && (m->fmt->pb->seekable & AVIO_SEEKABLE_NORMAL));
}

int media_live_check_dims(const vg_media *m, int w, int h, char *err, size_t errlen)
{
    if (w == 0 && h == 0 && unseekable_network(m))
        return 0; /* vg_media_wait_size learns it from the first keyframe */
    return media_check_dims(w, h, "the video stream", err, errlen);
}

/* The demuxer failed while waiting for a keyframe: the sentence, as media_decode.c reports reads.
 */
static int wait_read_failed(vg_media *m, int r, char *err, size_t errlen)
{
    char eb[AV_ERROR_MAX_STRING_SIZE];
    /* A stall met while buffered data was still being returned leaves its error in the I/O
     * context, and the next read only says "end of file". */
    if (r == AVERROR_EOF && m->fmt->pb &&
        (m->fmt->pb->error == AVERROR(ETIMEDOUT) || m->fmt->pb->error == AVERROR_EXIT))
        r = m->fmt->pb->error;
    int code = media_map_error(m, r);
    if (code == VG_ECANCELED)
        return vg_fail(err, errlen, code, "waiting for the first keyframe was cancelled.");
    if (code == VG_ETIMEDOUT)
        return vg_fail(err, errlen, code, "no data for %d ms while waiting for the first keyframe.",
                       m->params.read_timeout_ms);
    if (r == AVERROR_EOF)
        return vg_fail(err, errlen, VG_EPIPE, "the stream ended before its first keyframe.");
    return vg_fail(err, errlen, code == VG_EMEDIA ? VG_EIO : code,
                   "reading the stream failed while waiting for its first keyframe: %s.",
                   media_averr(r, eb, sizeof eb));
}

/* Reads and drops packets up to the video stream's first keyframe, which is left in m->pkt for
 * the decoder (pkt_pending: media_decode_next sends it first). */
static int skip_to_keyframe(vg_media *m, long *skipped, char *err, size_t errlen)
{
    uint64_t start = vg_now_ns(), again_since = 0;
    uint64_t limit = (uint64_t)VG_MEDIA_KEY_WAIT_S * 1000000000u;
    const uint64_t read_ns = (uint64_t)m->params.read_timeout_ms * 1000000u;
    for (;;) {
        if (media_stop_requested(m))
            return vg_fail(err, errlen, VG_ECANCELED,
                           "waiting for the first keyframe was cancelled.");
        if (vg_now_ns() - start > limit)
            return vg_fail(err, errlen, VG_EMEDIA,
                           "no keyframe (which carries the frame size) in %d s of data (%ld "
                           "packets).",
                           VG_MEDIA_KEY_WAIT_S, *skipped);
        media_arm(m, m->params.read_timeout_ms);
        int r = av_read_frame(m->fmt, m->pkt);
        media_disarm(m);
        m->consumed = 1;
        if (r == AVERROR(EAGAIN)) { /* a non-blocking demuxer: wait, within the read timeout */
            uint64_t now = vg_now_ns();
            if (!again_since)
                again_since = now;
            else if (now - again_since > read_ns)
                return vg_fail(err, errlen, VG_ETIMEDOUT,
                               "no data for %d ms while waiting for the first keyframe.",
                               m->params.read_timeout_ms);
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        again_since = 0;
        if (r < 0)
            return wait_read_failed(m, r, err, errlen);
        if (m->pkt->stream_index == m->vstream && (m->pkt->flags & AV_PKT_FLAG_KEY)) {
            m->pkt_pending = 1;
            return 0;
        }
        if (m->pkt->stream_index == m->vstream)
            (*skipped)++;
        av_packet_unref(m->pkt);
    }
}

int vg_media_wait_size(vg_media *m, char *err, size_t errlen)
{
    if (!m)
        return vg_fail(err, errlen, VG_EINVAL, "vg_media_wait_size needs a media.");
    if (m->info.width > 0 && m->info.height > 0)
        return 0;
    if (!m->fmt || !m->dec || m->held)
        return vg_fail(err, errlen, VG_EINVAL, "vg_media_wait_size: the input is not open.");
    double t0 = vg_now_ms();
    long skipped = 0;
    int r = skip_to_keyframe(m, &skipped, err, errlen);
    if (r == 0)
        r = media_decode_next(m, NULL, NULL, err, errlen);
    if (r == 0 && m->refused[0])
        r = media_check_refused(m, err, errlen);
    if (r == 0)
        r = media_check_dims(m->frame->width, m->frame->height, "the video stream", err, errlen);
    if (r < 0) {
        av_frame_unref(m->frame);
        return r;
    }
    m->info.width = m->frame->width;
    m->info.height = m->frame->height;
    if (m->info.fps <= 0 && m->dec->framerate.num > 0 && m->dec->framerate.den > 0) {
        double f = av_q2d(m->dec->framerate);
        m->info.fps = isfinite(f) && f <= VG_MEDIA_MAX_FPS ? f : 0.0;
    }
    m->held = 1;
    vg_log(VG_LOG_INFO, "media",
           "joined between keyframes: frame size %dx%d from the first keyframe, %.1f s and %ld "
           "video packets later",
           m->info.width, m->info.height, (vg_now_ms() - t0) / 1000.0, skipped);
    return 0;
}

int vg_media_next_frame(vg_media *m, int width, int height, uint8_t *rgb, double *pts_seconds,
                        char *err, size_t errlen)
{
    if (!m || !rgb)
        return vg_fail(err, errlen, VG_EINVAL, "vg_media_next_frame needs a media and a buffer.");
    int r = media_check_dims(width, height, "the requested size", err, errlen);
    if (r < 0)
        return r == VG_EMEDIA ? VG_EINVAL : r;
    if (m->held) /* the first keyframe, decoded by vg_media_wait_size */
        r = 0;
    else
        r = media_decode_next(m, NULL, NULL, err, errlen);
    m->held = 0;
    if (m->refused[0]) {
        av_frame_unref(m->frame);
        return media_check_refused(m, err, errlen);
    }
    if (r < 0)
        return r;
    double t = media_frame_seconds(m);
    if (isnan(t)) /* no timestamp: one frame period after the previous frame */
        t = m->have_last_pts ? m->last_pts_s + (m->info.fps > 0 ? 1.0 / m->info.fps : 0.0) : 0.0;
    r = media_convert_frame(&m->conv, m->frame, rgb, width, height, err, errlen);
    av_frame_unref(m->frame);
    if (r < 0)
        return r;
    m->last_pts_s = t;
    m->have_last_pts = 1;
    if (pts_seconds)
        *pts_seconds = t;
    return 0;
}
