/*
 * media_decode.c: the pull decoder shared by clip decoding (media_clip.c) and live reading
 * (media_live.c): media_decode_next hands out the decoder's next frame in presentation order,
 * reading and sending packets as the decoder asks for them, and media_frame_time gives a decoded
 * frame's time.
 *
 * Invariants: m->pkt holds a packet only while pkt_pending (the decoder refused it with EAGAIN);
 * once the demuxer reports the end (or a read error on a local file), a NULL packet drains the
 * decoder and eof_sent stays set until the input is reopened. Up to MAX_DECODE_ERRORS consecutive
 * undecodable packets or frames are skipped, as the ffmpeg CLI skips them.
 *
 * Thread: the thread that owns the vg_media (libavcodec runs its own frame threads inside).
 */
#include "media_internal.h"

#include "common.h"

#include <math.h>
#include <stdio.h>
#include <time.h>

/* Fast path: the presentation index of m->pkt from its PTS on the frame grid; marks it seen and
 * tells the decoder to skip the frame if it is an unsampled non-reference one. A packet without a
 * timestamp, off the grid or repeated makes the fast path invalid. */
void media_classify_packet(vg_media *m)
{
    const AVPacket *p = m->pkt;
    int64_t idx = -1;
    if (p->pts != AV_NOPTS_VALUE && !(p->flags & AV_PKT_FLAG_DISCARD)) {
        double t = (double)(p->pts - m->start_pts) * av_q2d(m->tb);
        double x = t * m->info.fps;
        if (isfinite(x) && x > -0.5 && x < 1e15) {
            idx = llround(x);
            if (fabs(t - (double)idx / m->info.fps) > m->skip_tol)
                idx = -1;
        }
    }
    if (idx < 0) {
        m->skip_invalid = 1;
        m->dec->skip_frame = AVDISCARD_DEFAULT;
        return;
    }
    if (idx < m->map_len) {
        if (m->seen[idx])
            m->skip_invalid = 1;
        else
            m->seen_upto_last++;
        m->seen[idx] = 1;
    }
    int need = idx < m->map_len && m->sampled[idx];
    m->dec->skip_frame = need ? AVDISCARD_DEFAULT : AVDISCARD_NONREF;
}

/* The next decoded frame into m->frame: 0, VG_EPIPE at the end, or an error. */
int media_decode_next(vg_media *m, char *err, size_t errlen)
{
    char eb[AV_ERROR_MAX_STRING_SIZE];
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
        if (r != AVERROR(EAGAIN)) {
            /* A damaged frame (reported by a frame thread): skip it as the ffmpeg CLI does. */
            media_averr(r, m->last_dec_error, sizeof m->last_dec_error);
            m->dec_errors_total++;
            if (++m->dec_errors > MAX_DECODE_ERRORS)
                return vg_fail(err, errlen, VG_EDECODE, "the decoder failed on '%.200s': %s.",
                               m->url, m->last_dec_error);
            continue;
        }
        if (m->eof_sent)
            return vg_fail(err, errlen, VG_EPIPE, "end of '%.200s'.", m->url);
        if (m->pkt_pending) {
            r = avcodec_send_packet(m->dec, m->pkt);
            if (r == AVERROR(EAGAIN))
                return vg_fail(err, errlen, VG_EDECODE,
                               "the %s decoder neither accepts data nor returns frames.",
                               m->dec->codec ? m->dec->codec->name : "video");
            m->pkt_pending = 0;
            av_packet_unref(m->pkt);
            if (r < 0)
                m->dec_errors_total++;
            if (r < 0 && ++m->dec_errors > MAX_DECODE_ERRORS)
                return vg_fail(err, errlen, VG_EDECODE, "the decoder failed on '%.200s': %s.",
                               m->url, media_averr(r, eb, sizeof eb));
            continue;
        }

        media_arm(m, m->params.read_timeout_ms);
        r = av_read_frame(m->fmt, m->pkt);
        media_disarm(m);
        m->consumed = 1;
        if (r == AVERROR(EAGAIN)) { /* a non-blocking demuxer: wait, within the read timeout */
            uint64_t now = vg_now_ns();
            if (!again_since)
                again_since = now;
            else if (now - again_since > (uint64_t)m->params.read_timeout_ms * 1000000u)
                return vg_fail(err, errlen, VG_ETIMEDOUT, "no data from '%.200s' for %d ms.",
                               m->url, m->params.read_timeout_ms);
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        again_since = 0;
        if (r < 0) {
            /* A stall met while earlier data was still being returned leaves its error in the
             * I/O context, and the next read only says "end of file". */
            if (r == AVERROR_EOF && !m->is_file && m->fmt->pb &&
                (m->fmt->pb->error == AVERROR(ETIMEDOUT) || m->fmt->pb->error == AVERROR_EXIT))
                r = m->fmt->pb->error;
            int code = media_map_error(m, r);
            if (code == VG_ECANCELED)
                return vg_fail(err, errlen, code, "decoding '%.200s' was cancelled.", m->url);
            if (code == VG_ETIMEDOUT)
                return vg_fail(err, errlen, code, "no data from '%.200s' for %d ms.", m->url,
                               m->params.read_timeout_ms);
            if (r != AVERROR_EOF && !m->is_file)
                return vg_fail(err, errlen, code == VG_EMEDIA ? VG_EIO : code,
                               "reading '%.200s' failed: %s.", m->url,
                               media_averr(r, eb, sizeof eb));
            if (r != AVERROR_EOF)
                vg_log(VG_LOG_WARNING, "media", "%s: read error, treated as the end (%s)", m->url,
                       media_averr(r, eb, sizeof eb));
            m->eof_sent = 1;
            avcodec_send_packet(m->dec, NULL); /* drain */
            continue;
        }
        if (m->pkt->stream_index != m->vstream) {
            av_packet_unref(m->pkt);
            continue;
        }
        if (m->skip_mode)
            media_classify_packet(m);
        r = avcodec_send_packet(m->dec, m->pkt);
        if (r == AVERROR(EAGAIN)) { /* frames first; the packet is sent again then */
            m->pkt_pending = 1;
            continue;
        }
        av_packet_unref(m->pkt);
        if (r < 0) {
            media_averr(r, m->last_dec_error, sizeof m->last_dec_error);
            vg_log(VG_LOG_DEBUG, "media", "%s: packet not decodable (%s)", m->url,
                   m->last_dec_error);
            m->dec_errors_total++;
            if (++m->dec_errors > MAX_DECODE_ERRORS)
                return vg_fail(err, errlen, VG_EDECODE, "the decoder failed on '%.200s': %s.",
                               m->url, m->last_dec_error);
        }
    }
}

/* Frame time in seconds from base (the stream start; without one, the first frame's time, set
 * here), or NAN without a timestamp. */
double media_frame_time(const vg_media *m, int64_t *base)
{
    int64_t ts = m->frame->best_effort_timestamp;
    if (ts == AV_NOPTS_VALUE)
        ts = m->frame->pts;
    if (ts == AV_NOPTS_VALUE)
        return NAN;
    if (*base == AV_NOPTS_VALUE)
        *base = ts;
    return (double)(ts - *base) * av_q2d(m->tb);
}
