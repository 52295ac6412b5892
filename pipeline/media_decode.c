/*
 * media_decode.c: the pull decoder shared by clip decoding (media_clip.c) and live reading
 * (media_live.c), and the one conversion of a timestamp into seconds.
 *
 * Decoding. media_decode_next hands out the decoder's next frame in presentation order, reading
 * and sending packets only when the decoder asks for them (a pull API turns FFmpeg's read -> send
 * -> receive loop inside out: receive first, then a refused packet again, then a new one). An
 * optional packet hook sees each video packet before the decoder does (the clip fast path sets
 * skip_frame there). Invariants: m->pkt holds a packet only while pkt_pending (the decoder refused
 * it with EAGAIN); once the demuxer reports the end (or a read error on a local file), a NULL
 * packet drains the decoder and eof_sent stays set until the input is reopened. Up to
 * MAX_DECODE_ERRORS consecutive undecodable packets or frames are skipped, as the ffmpeg CLI skips
 * them.
 *
 * Time. A frame's time is in seconds from the input's origin: (pts - origin) x time_base, where the
 * origin is the video stream's start time as the container declares it (m->start_pts, which is
 * also vg_media_info.start_time) or, when it declares none, the first timestamp decoded since the
 * input was opened. media_pts_seconds is the only place a presentation timestamp becomes seconds;
 * clip decoding and live reading both use it, so their times share the origin. media_ticks_seconds
 * is the only place a count of time-base ticks becomes seconds.
 *
 * Thread: the thread that owns the vg_media (libavcodec runs its own frame threads inside).
 */
#include "media_internal.h"

#include "common.h"

#include <math.h>
#include <stdio.h>
#include <time.h>

double media_ticks_seconds(const vg_media *m, int64_t ticks)
{
    return (double)ticks * av_q2d(m->tb);
}

double media_pts_seconds(const vg_media *m, int64_t pts)
{
    if (pts == AV_NOPTS_VALUE || m->origin == AV_NOPTS_VALUE)
        return NAN;
    return media_ticks_seconds(m, pts - m->origin);
}

double media_frame_seconds(vg_media *m)
{
    int64_t ts = m->frame->best_effort_timestamp;
    if (ts == AV_NOPTS_VALUE)
        ts = m->frame->pts;
    if (ts != AV_NOPTS_VALUE && m->origin == AV_NOPTS_VALUE)
        m->origin = ts;
    return media_pts_seconds(m, ts);
}

/* Counts a packet or frame the decoder failed on (the ffmpeg CLI skips those); too many in a row
 * fail with VG_EDECODE. */
static int decoder_error(vg_media *m, int r, char *err, size_t errlen)
{
    media_averr(r, m->last_dec_error, sizeof m->last_dec_error);
    m->dec_errors_total++;
    if (++m->dec_errors > MAX_DECODE_ERRORS)
        return vg_fail(err, errlen, VG_EDECODE, "the decoder failed on '%.200s': %s.", m->url,
                       m->last_dec_error);
    return 0;
}

/* Sends the packet the decoder refused earlier, now that it returned its frames. */
static int send_pending(vg_media *m, char *err, size_t errlen)
{
    int r = avcodec_send_packet(m->dec, m->pkt);
    if (r == AVERROR(EAGAIN))
        return vg_fail(err, errlen, VG_EDECODE,
                       "the %s decoder neither accepts data nor returns frames.",
                       m->dec->codec ? m->dec->codec->name : "video");
    m->pkt_pending = 0;
    av_packet_unref(m->pkt);
    return r < 0 ? decoder_error(m, r, err, errlen) : 0;
}

/* The demuxer said no more (r < 0, not EAGAIN): an error for a network input, cancellation or a
 * stall; otherwise the end, and the decoder is drained. */
static int read_failed(vg_media *m, int r, char *err, size_t errlen)
{
    char eb[AV_ERROR_MAX_STRING_SIZE];
    /* A stall met while earlier data was still being returned leaves its error in the I/O
     * context, and the next read only says "end of file". */
    if (r == AVERROR_EOF && !m->is_file && m->fmt->pb &&
        (m->fmt->pb->error == AVERROR(ETIMEDOUT) || m->fmt->pb->error == AVERROR_EXIT))
        r = m->fmt->pb->error;
    int code = media_map_error(m, r);
    if (code == VG_ECANCELED)
        return vg_fail(err, errlen, code, "decoding '%.200s' was cancelled.", m->url);
    if (code == VG_ETIMEDOUT)
        return vg_fail(err, errlen, code, "no data from '%.200s' for %d ms.", m->url,
                       m->params.read_timeout_ms);
    /* A network input read as a clip ends like a file: FFmpeg reports the end of an HTTP body
     * without a length as an I/O error ("Stream ends prematurely"); a real truncation shows up as
     * a short stream (media_clip.c). */
    if (r != AVERROR_EOF && !m->is_file && !m->clip_reopen)
        return vg_fail(err, errlen, code == VG_EMEDIA ? VG_EIO : code,
                       "reading '%.200s' failed: %s.", m->url, media_averr(r, eb, sizeof eb));
    if (r != AVERROR_EOF)
        vg_log(VG_LOG_WARNING, "media", "%s: read error, treated as the end (%s)", m->url,
               media_averr(r, eb, sizeof eb));
    m->eof_sent = 1;
    avcodec_send_packet(m->dec, NULL); /* drain */
    return 0;
}

/* Reads the next packet and sends it to the decoder (or keeps it pending when the decoder wants
 * its frames taken first). *again_since times a non-blocking demuxer's EAGAIN. */
static int feed(vg_media *m, media_packet_fn on_packet, void *ctx, uint64_t *again_since, char *err,
                size_t errlen)
{
    media_arm(m, m->params.read_timeout_ms);
    int r = av_read_frame(m->fmt, m->pkt);
    media_disarm(m);
    m->consumed = 1;
    if (r == AVERROR(EAGAIN)) { /* a non-blocking demuxer: wait, within the read timeout */
        uint64_t now = vg_now_ns();
        if (!*again_since)
            *again_since = now;
        else if (now - *again_since > (uint64_t)m->params.read_timeout_ms * 1000000u)
            return vg_fail(err, errlen, VG_ETIMEDOUT, "no data from '%.200s' for %d ms.", m->url,
                           m->params.read_timeout_ms);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        return 0;
    }
    *again_since = 0;
    if (r < 0)
        return read_failed(m, r, err, errlen);
    if (m->pkt->stream_index != m->vstream) {
        av_packet_unref(m->pkt);
        return 0;
    }
    if (on_packet)
        on_packet(ctx, m);
    r = avcodec_send_packet(m->dec, m->pkt);
    if (r == AVERROR(EAGAIN)) { /* frames first; the packet is sent again then */
        m->pkt_pending = 1;
        return 0;
    }
    av_packet_unref(m->pkt);
    if (r < 0) {
        char eb[AV_ERROR_MAX_STRING_SIZE];
        vg_log(VG_LOG_DEBUG, "media", "%s: packet not decodable (%s)", m->url,
               media_averr(r, eb, sizeof eb));
        return decoder_error(m, r, err, errlen);
    }
    return 0;
}

int media_decode_next(vg_media *m, media_packet_fn on_packet, void *ctx, char *err, size_t errlen)
{
    uint64_t again_since = 0;
    if (!m->fmt || !m->dec)
        return vg_fail(err, errlen, VG_EIO, "'%.200s' could not be reopened after an error.",
                       m->url);
    for (;;) {
        if (media_stop_requested(m))
            return vg_fail(err, errlen, VG_ECANCELED, "decoding '%.200s' was cancelled.", m->url);
        int r = avcodec_receive_frame(m->dec, m->frame);
        if (r == 0) {
            m->dec_errors = 0;
            return 0;
        }
        if (r == AVERROR_EOF)
            return vg_fail(err, errlen, VG_EPIPE, "end of '%.200s'.", m->url);
        if (r != AVERROR(EAGAIN)) /* a damaged frame (reported by a frame thread): skip it */
            r = decoder_error(m, r, err, errlen);
        else if (m->eof_sent)
            return vg_fail(err, errlen, VG_EPIPE, "end of '%.200s'.", m->url);
        else if (m->pkt_pending)
            r = send_pending(m, err, errlen);
        else
            r = feed(m, on_packet, ctx, &again_since, err, errlen);
        if (r < 0)
            return r;
    }
}
