/*
 * media_open.c: opening files and network streams with libavformat (vg_media_open / close /
 * get_info), the policy every input and every URL it refers to passes, the stream information, and
 * the interrupt and error plumbing the other media_*.c files share.
 *
 * Policy. The URL's scheme is checked against the protocol whitelist before FFmpeg sees it (the
 * scheme is found the way libavformat finds it, so "concat:", "subfile," or "gopher://" are
 * refused with VG_EPROTOCOL), and the whitelist is also handed to libavformat so that nested opens
 * (HLS segments, RTSP's RTP sockets) obey it. With params.allow_url, every URL the demuxer opens
 * goes through checked_io_open: the same whitelist check, then the caller's policy for local
 * paths; the first refusal is kept in m->refused and fails the whole input (media_check_refused).
 * With params.open_file, local files are never opened by name: the input's descriptor comes from
 * the caller once (open_local) and every nested local file's from the hook, each read through
 * media_fdio.c's AVIOContext (checked_io_close2 frees those), so the file decoded is the file the
 * caller checked. Without it, a local regular file is still opened here once and read through its
 * descriptor. Demuxers are limited to a list of audio/video containers, so a text file is never
 * shown to e.g. the "tty" demuxer as a video. Frame sizes are checked against VG_MEDIA_MAX_DIM /
 * VG_MEDIA_MAX_PIXELS and params.max_frame_pixels from the container header before any frame is
 * probed or decoded; the decoder gets max_pixels, and its threads are bounded by the frame size
 * (VG_MEDIA_FRAME_BUDGET).
 *
 * Interrupts. Every input has an interrupt callback reading the caller's atomic stop flag and a
 * deadline that is armed around each blocking call (open + stream probing: open_timeout_ms; each
 * packet read: read_timeout_ms) and disarmed otherwise; the protocols' own timeouts (rw_timeout,
 * timeout) are set as well.
 *
 * Frame count. mp4/mov/avi headers carry an exact count (nb_frames); it is used when it agrees
 * with duration x fps. Otherwise (MKV/WebM, MPEG-TS, ...) a local file is counted exactly by
 * reading its video packets without decoding them, and the input is then reopened (a fresh demuxer
 * is the exact "seek back to the start" for every format). Network inputs get duration x fps.
 *
 * Live. A network input is live (total_frames 0) when its length is unknown or it cannot seek
 * (RTSP, RTP/UDP, live HLS, HTTP without ranges), as is a session a local file describes (SDP) or
 * an open HLS playlist; a seekable network file of known length (HTTP with ranges, VOD HLS) is read
 * like a local one, and a local file of unknown length is counted. vg_media_read_video still
 * reads a live input that ends (HTTP without ranges) as a clip (media_clip.c).
 *
 * Thread: the one thread that owns the vg_media at the time (see pipeline.h); the interrupt
 * callback runs on it, inside libavformat's blocking calls.
 */
#include "media_internal.h"

#include "common.h"

#include <libavutil/avstring.h>
#include <libavutil/cpu.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_WHITELIST "file,http,https,tcp,tls,rtsp,rtp,udp,hls,crypto,data"
/* Demuxers we accept: video containers, the network stream formats, and the audio containers
 * (so an audio file gets "no video stream" rather than "not a media file"). HLS copies this list to
 * its segment demuxers. */
#define FORMAT_WHITELIST                                                                           \
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpegtsraw,hls,applehttp,rtsp,rtp,sdp,"       \
    "yuv4mpegpipe,flv,live_flv,mpeg,mpegvideo,h264,hevc,m4v,ivf,asf,nut,ogg,mxf,dv,"               \
    "mpjpeg,gif,wav,mp3,aac,flac,ac3,eac3,webvtt"

const char *media_averr(int e, char *buf, size_t len)
{
    if (av_strerror(e, buf, len) < 0)
        snprintf(buf, len, "FFmpeg error %d", e);
    return buf;
}

int media_stop_requested(const vg_media *m)
{
    return m->params.stop && atomic_load(m->params.stop) != 0;
}

static int interrupt_cb(void *opaque)
{
    vg_media *m = opaque;
    if (media_stop_requested(m)) {
        m->why = WHY_STOP;
        return 1;
    }
    if (m->deadline_ns && vg_now_ns() > m->deadline_ns) {
        m->why = WHY_DEADLINE;
        return 1;
    }
    return 0;
}

void media_arm(vg_media *m, int timeout_ms)
{
    m->why = WHY_NONE;
    m->deadline_ns = timeout_ms > 0 ? vg_now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
}

void media_disarm(vg_media *m)
{
    m->deadline_ns = 0;
}

/* Maps an FFmpeg error (after an interrupted or failed call) onto a vigil code. */
int media_map_error(const vg_media *m, int e)
{
    if (m->why == WHY_STOP)
        return VG_ECANCELED;
    if (m->why == WHY_DEADLINE || e == AVERROR(ETIMEDOUT))
        return VG_ETIMEDOUT;
    if (e == AVERROR_EXIT)
        return media_stop_requested(m) ? VG_ECANCELED : VG_ETIMEDOUT;
    if (e == AVERROR(ENOENT))
        return VG_ENOENT;
    if (e == AVERROR(EACCES) || e == AVERROR(EPERM))
        return VG_EACCES;
    if (e == AVERROR(ENOMEM))
        return VG_ENOMEM;
    if (e == AVERROR_PROTOCOL_NOT_FOUND)
        return VG_EPROTOCOL;
    if (e == AVERROR_INVALIDDATA || e == AVERROR_DEMUXER_NOT_FOUND || e == AVERROR(EINVAL) ||
        e == AVERROR_EOF || e == AVERROR_DECODER_NOT_FOUND || e == AVERROR_PATCHWELCOME ||
        e == AVERROR(ENOSYS))
        return VG_EMEDIA;
    return VG_EIO;
}

/* The protocol libavformat would pick for url (libavformat/avio.c url_find_protocol): the leading
 * run of scheme characters when a ':' follows it (or "subfile," with a ':' later), else "file". */
static void url_scheme(const char *url, char *out, size_t outlen)
{
    static const char scheme_chars[] = "abcdefghijklmnopqrstuvwxyz"
                                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                       "0123456789+-.";
    size_t n = strspn(url, scheme_chars);
    int is_proto = url[n] == ':' || (strncmp(url, "subfile,", 8) == 0 && strchr(url + n + 1, ':'));
    if (!is_proto || n == 0) {
        snprintf(out, outlen, "file");
        return;
    }
    if (n >= outlen)
        n = outlen - 1;
    for (size_t i = 0; i < n; i++) {
        char c = url[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[n] = '\0';
}

static int in_list(const char *list, const char *name, size_t len)
{
    const char *p = list;
    while (*p) {
        size_t l = strcspn(p, ",");
        if (l == len && strncmp(p, name, len) == 0)
            return 1;
        p += l;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* Every '+'-separated part of the scheme ("hls+http") must be whitelisted. */
static int check_protocol(const char *url, const char *whitelist, char *scheme, size_t slen,
                          char *err, size_t errlen)
{
    url_scheme(url, scheme, slen);
    const char *p = scheme;
    while (*p) {
        size_t l = strcspn(p, "+");
        if (l == 0 || !in_list(whitelist, p, l))
            return vg_fail(err, errlen, VG_EPROTOCOL,
                           "the URL '%.200s' uses protocol '%s', which is not in the protocol "
                           "whitelist (%.200s).",
                           url, scheme, whitelist);
        p += l;
        if (*p == '+')
            p++;
    }
    return 0;
}

int media_check_dims(int w, int h, const char *what, char *err, size_t errlen)
{
    if (w <= 0 || h <= 0)
        return vg_fail(err, errlen, VG_EMEDIA, "%s has an invalid frame size %dx%d.", what, w, h);
    if (w > VG_MEDIA_MAX_DIM || h > VG_MEDIA_MAX_DIM || (long)w * h > VG_MEDIA_MAX_PIXELS)
        return vg_fail(err, errlen, VG_ELIMIT,
                       "%s has frames of %dx%d pixels, over the limit of %dx%d and %ld pixels per "
                       "frame.",
                       what, w, h, VG_MEDIA_MAX_DIM, VG_MEDIA_MAX_DIM, VG_MEDIA_MAX_PIXELS);
    return 0;
}

/* The largest frame this input may have: params.max_frame_pixels within the absolute cap. */
static long max_frame_pixels(const vg_media *m)
{
    long cap = m->params.max_frame_pixels;
    return cap > 0 && cap < VG_MEDIA_MAX_PIXELS ? cap : VG_MEDIA_MAX_PIXELS;
}

/* A source frame size from a header: VG_EMEDIA with a sentence when it is invalid or over the
 * absolute caps or params.max_frame_pixels (the input cannot be used; checked before any frame is
 * decoded, so an oversized input costs no frame buffer). */
static int check_source_dims(const vg_media *m, int w, int h, const char *what, char *err,
                             size_t errlen)
{
    int c = media_check_dims(w, h, what, err, errlen);
    if (c < 0)
        return VG_EMEDIA;
    long cap = max_frame_pixels(m);
    if ((long)w * h > cap)
        return vg_fail(err, errlen, VG_EMEDIA,
                       "%s has frames of %dx%d pixels, over the limit of %ld pixels per frame "
                       "(max_pixels_limit).",
                       what, w, h, cap);
    return 0;
}

/* A raw YUV4MPEG2 header is parsed by libavformat into a frame-sized packet; its W/H fields are
 * checked here first so that a huge claim gets our sentence instead of an allocation failure. */
static int check_y4m_header(const vg_media *m, char *err, size_t errlen)
{
    char line[256];
    ssize_t n = pread(m->fd, line, sizeof line - 1, 0);
    if (n < 0)
        return 0;
    line[n] = '\0';
    if (n < 10 || strncmp(line, "YUV4MPEG2 ", 10) != 0)
        return 0;
    const char *path = m->url;
    long w = 0, h = 0;
    for (char *p = line + 9; *p && *p != '\n'; p++) {
        if (p[0] == ' ' && p[1] == 'W')
            w = strtol(p + 2, NULL, 10);
        else if (p[0] == ' ' && p[1] == 'H')
            h = strtol(p + 2, NULL, 10);
    }
    if (w > VG_MEDIA_MAX_DIM || h > VG_MEDIA_MAX_DIM || w * h > max_frame_pixels(m))
        return vg_fail(err, errlen, VG_EMEDIA,
                       "'%.200s' claims frames of %ldx%ld pixels, over the limit of %dx%d and %ld "
                       "pixels per frame.",
                       path, w, h, VG_MEDIA_MAX_DIM, VG_MEDIA_MAX_DIM, max_frame_pixels(m));
    return 0;
}

static double q2d_ok(AVRational r)
{
    if (r.num <= 0 || r.den <= 0)
        return 0.0;
    double v = av_q2d(r);
    return (isfinite(v) && v > 0.0 && v <= VG_MEDIA_MAX_FPS) ? v : 0.0;
}

/* ------------------------------------------------------------------------------------------------
 * Opening.
 */
static void close_input(vg_media *m)
{
    avcodec_free_context(&m->dec);
    media_arm(m, m->params.read_timeout_ms); /* RTSP sends a TEARDOWN on close */
    avformat_close_input(&m->fmt);
    media_fdio_close(&m->pb); /* libavformat leaves a custom context to its owner */
    media_disarm(m);
    m->eof_sent = 0;
    m->consumed = 0;
    m->dec_errors = 0;
    m->pkt_pending = 0;
    if (m->pkt)
        av_packet_unref(m->pkt);
}

/* Picks the best video stream that is not a cover picture. */
static int pick_stream(vg_media *m, char *err, size_t errlen)
{
    AVFormatContext *fmt = m->fmt;
    int best = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    if (best >= 0 && (fmt->streams[best]->disposition & AV_DISPOSITION_ATTACHED_PIC))
        best = -1;
    if (best < 0) {
        for (unsigned i = 0; i < fmt->nb_streams; i++) {
            AVStream *st = fmt->streams[i];
            if (st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
                !(st->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
                best = (int)i;
                break;
            }
        }
    }
    if (best < 0)
        return vg_fail(err, errlen, VG_EMEDIA, "'%.200s' has no video stream.", m->url);
    m->vstream = best;
    return 0;
}

/* After a local file was refused: the demuxer libavformat would have picked, if it is one outside
 * FORMAT_WHITELIST (for the error message only). */
static int refused_format(vg_media *m, char *name, size_t len)
{
    if (!m->is_file)
        return 0;
    AVIOContext *pb = NULL;
    AVIOInterruptCB cb = {interrupt_cb, m};
    media_arm(m, m->params.open_timeout_ms);
    int found = 0;
    int r = m->fd >= 0 ? media_fdio_open(m->fd, 0, &cb, &pb)
                       : avio_open2(&pb, m->url, AVIO_FLAG_READ, &cb, NULL);
    if (r >= 0) {
        const AVInputFormat *f = NULL;
        if (av_probe_input_buffer2(pb, &f, m->url, NULL, 0, 0) >= 0 && f &&
            av_match_list(f->name, FORMAT_WHITELIST, ',') <= 0) {
            snprintf(name, len, "%s (%s)", f->name, f->long_name ? f->long_name : "?");
            found = 1;
        }
        if (media_fdio_is_ours(pb))
            media_fdio_close(&pb);
        else
            avio_closep(&pb);
    }
    media_disarm(m);
    return found;
}

/* A URL refused by params.allow_url fails the whole input, even where the demuxer would go on
 * without it (HLS skips a segment it cannot open). */
int media_check_refused(const vg_media *m, char *err, size_t errlen)
{
    if (m->refused[0])
        return vg_fail(err, errlen, VG_EPATH, "%s.", m->refused);
    return 0;
}

/* A nested local file through params.open_file: its descriptor, which must be a regular file, read
 * by an fdio that owns it. */
static int open_nested_file(vg_media *m, AVIOContext **pb, const char *url, char *why,
                            size_t whylen)
{
    int fd = -1;
    int r = m->params.open_file(m->params.allow_opaque, url, &fd, why, whylen);
    if (r < 0 || fd < 0)
        return r < 0 ? r : VG_EIO;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(why, whylen, "'%.200s' is not a regular file", url);
        return VG_EMEDIA;
    }
    AVIOInterruptCB cb = {interrupt_cb, m};
    if (media_fdio_open(fd, 1, &cb, pb) < 0) {
        close(fd);
        snprintf(why, whylen, "out of memory");
        return VG_ENOMEM;
    }
    return 0;
}

/* fmt->io_open when params.allow_url or open_file is set: every URL the demuxer opens (an HLS
 * playlist's variants, segments and keys; the input itself when libavformat opens it by name) must
 * pass the protocol whitelist, as the input did, and a local one the caller's policy: with
 * open_file the file is opened by it (checked and opened in one step) and read through its
 * descriptor, never by name; a refusal is kept, so it fails the whole input. */
static int checked_io_open(AVFormatContext *s, AVIOContext **pb, const char *url, int flags,
                           AVDictionary **options)
{
    vg_media *m = s->opaque;
    if (!m || !m->io_open_default)
        return AVERROR(EPERM);
    char why[400] = "", scheme[32];
    int refused = check_protocol(url, m->whitelist, scheme, sizeof scheme, why, sizeof why) < 0;
    if (!refused && !strcmp(scheme, "file")) {
        if (m->params.open_file) {
            if (flags & AVIO_FLAG_WRITE)
                refused = 1;
            else if (open_nested_file(m, pb, url, why, sizeof why) == 0)
                return 0;
            else
                refused = 1;
        } else {
            refused = m->params.allow_url(m->params.allow_opaque, url, why, sizeof why) < 0;
        }
    }
    if (refused) {
        if (!m->refused[0])
            snprintf(m->refused, sizeof m->refused, "'%.200s' refers to '%.200s', refused: %s",
                     m->url, url, why[0] ? why : "not allowed");
        return AVERROR(EPERM);
    }
    return m->io_open_default(s, pb, url, flags, options);
}

/* fmt->io_close2: contexts made by media_fdio.c are freed there (libavformat's default would take
 * their opaque for a URLContext); the others go to libavformat's own. */
static int checked_io_close2(AVFormatContext *s, AVIOContext *pb)
{
    if (media_fdio_is_ours(pb)) {
        media_fdio_close(&pb);
        return 0;
    }
    vg_media *m = s->opaque;
    if (m && m->io_close2_default)
        return m->io_close2_default(s, pb);
    avio_close(pb);
    return 0;
}

/* avformat_open_input failed with r: the sentence that says why (a refused nested URL, a timeout,
 * cancellation, a demuxer outside FORMAT_WHITELIST, not a container, ...). */
static int open_failed(vg_media *m, int r, char *err, size_t errlen)
{
    char eb[AV_ERROR_MAX_STRING_SIZE];
    if (m->refused[0])
        return media_check_refused(m, err, errlen);
    int code = media_map_error(m, r);
    if (code == VG_ETIMEDOUT)
        return vg_fail(err, errlen, code, "opening '%.200s' timed out after %d ms (%s).", m->url,
                       m->params.open_timeout_ms, media_averr(r, eb, sizeof eb));
    if (code == VG_ECANCELED)
        return vg_fail(err, errlen, code, "opening '%.200s' was cancelled.", m->url);
    char fname[160];
    if (r == AVERROR(EINVAL) && refused_format(m, fname, sizeof fname))
        return vg_fail(err, errlen, VG_EMEDIA,
                       "'%.200s' looks like %s, which is not a supported video container.", m->url,
                       fname);
    if (code == VG_EMEDIA)
        return vg_fail(err, errlen, code,
                       "cannot open '%.200s': %s (not a supported video container, or a corrupt "
                       "or truncated file).",
                       m->url, media_averr(r, eb, sizeof eb));
    if (!m->is_file && r == AVERROR(EIO)) /* libavformat's http says only EIO for these */
        return vg_fail(err, errlen, code,
                       "cannot open '%.200s': the server failed, closed the connection, or "
                       "redirected too many times (%s).",
                       m->url, media_averr(r, eb, sizeof eb));
    return vg_fail(err, errlen, code, "cannot open '%.200s': %s.", m->url,
                   media_averr(r, eb, sizeof eb));
}

/* Opens the container into m->fmt with the interrupt callback, the nested-URL hook, both
 * whitelists and the protocols' timeouts. Leaves the open deadline armed on success. */
static int open_container(vg_media *m, char *err, size_t errlen)
{
    AVFormatContext *fmt = avformat_alloc_context();
    if (!fmt)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory opening '%.200s'.", m->url);
    fmt->interrupt_callback.callback = interrupt_cb;
    fmt->interrupt_callback.opaque = m;
    fmt->opaque = m;
    m->io_close2_default = fmt->io_close2;
    fmt->io_close2 = checked_io_close2;
    if (m->params.allow_url || m->params.open_file) {
        m->io_open_default = fmt->io_open;
        fmt->io_open = checked_io_open;
    }
    if (m->fd >= 0) { /* a local file: read through its descriptor, never opened by name */
        if (media_fdio_open(m->fd, 0, &fmt->interrupt_callback, &m->pb) < 0) {
            avformat_free_context(fmt);
            return vg_fail(err, errlen, VG_ENOMEM, "out of memory opening '%.200s'.", m->url);
        }
        fmt->pb = m->pb;
    }

    AVDictionary *opts = NULL;
    int64_t read_us = (int64_t)m->params.read_timeout_ms * 1000;
    av_dict_set(&opts, "protocol_whitelist", m->whitelist, 0);
    av_dict_set(&opts, "format_whitelist", FORMAT_WHITELIST, 0);
    if (m->params.rtsp_transport) /* the rtsp demuxer's option; other demuxers leave it */
        av_dict_set(&opts, "rtsp_transport", m->params.rtsp_transport, 0);
    if (read_us > 0) {
        av_dict_set_int(&opts, "rw_timeout", read_us, 0);
        if (!m->is_file)
            av_dict_set_int(&opts, "timeout", read_us, 0); /* tcp/http/udp/rtsp socket I/O, µs */
    }

    media_arm(m, m->params.open_timeout_ms);
    int r = avformat_open_input(&fmt, m->url, NULL, &opts);
    av_dict_free(&opts);
    if (r < 0) { /* libavformat freed fmt, but not the custom context */
        media_fdio_close(&m->pb);
        media_disarm(m);
        return open_failed(m, r, err, errlen);
    }
    m->fmt = fmt;
    return 0;
}

/* Checks the sizes the header claims, before any frame is probed or decoded, then probes the
 * streams (within the open deadline, disarmed after). */
static int probe_streams(vg_media *m, char *err, size_t errlen)
{
    char eb[AV_ERROR_MAX_STRING_SIZE];
    AVFormatContext *fmt = m->fmt;
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        AVCodecParameters *par = fmt->streams[i]->codecpar;
        if (par->codec_type == AVMEDIA_TYPE_VIDEO && (par->width != 0 || par->height != 0)) {
            char what[64];
            snprintf(what, sizeof what, "video stream #%u", i);
            int c = check_source_dims(m, par->width, par->height, what, err, errlen);
            if (c < 0) {
                media_disarm(m);
                return c;
            }
        }
    }

    int r = avformat_find_stream_info(fmt, NULL);
    media_disarm(m);
    if (r < 0) {
        int code = media_map_error(m, r);
        if (code == VG_ETIMEDOUT)
            return vg_fail(err, errlen, code,
                           "reading the stream information of '%.200s' timed out after %d ms.",
                           m->url, m->params.open_timeout_ms);
        if (code == VG_ECANCELED)
            return vg_fail(err, errlen, code, "opening '%.200s' was cancelled.", m->url);
        return vg_fail(err, errlen, code == VG_EIO ? VG_EIO : VG_EMEDIA,
                       "cannot read the stream information of '%.200s': %s.", m->url,
                       media_averr(r, eb, sizeof eb));
    }
    return 0;
}

/* Bytes of one frame of w x h for the memory budget: 3 per pixel covers 8-bit 4:4:4 and RGB (the
 * converters' full-size RGB frame); 4:2:0 needs half. */
size_t media_frame_bytes(int w, int h)
{
    return (size_t)(w > 0 ? w : 1) * (size_t)(h > 0 ? h : 1) * 3;
}

int media_decode_threads(const vg_media *m, int w, int h)
{
    int want = m->params.decode_threads > 0 ? m->params.decode_threads : av_cpu_count() + 1;
    if (want > 16)
        want = 16; /* libavcodec's own ceiling for automatic frame threads */
    size_t fit = VG_MEDIA_FRAME_BUDGET / 2 / media_frame_bytes(w, h);
    if ((size_t)want > fit)
        want = fit > 1 ? (int)fit : 1;
    return want;
}

/* Opens the decoder of stream st into m->dec (frame and slice threads). */
static int open_decoder(vg_media *m, const AVStream *st, char *err, size_t errlen)
{
    char eb[AV_ERROR_MAX_STRING_SIZE];
    const AVCodecParameters *par = st->codecpar;
    const AVCodec *codec = avcodec_find_decoder(par->codec_id);
    if (!codec)
        return vg_fail(err, errlen, VG_EMEDIA, "no decoder for the %s video of '%.200s'.",
                       avcodec_get_name(par->codec_id), m->url);
    m->dec = avcodec_alloc_context3(codec);
    if (!m->dec)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory opening a decoder.");
    int r = avcodec_parameters_to_context(m->dec, par);
    if (r < 0)
        return vg_fail(err, errlen, VG_EMEDIA, "bad codec parameters in '%.200s': %s.", m->url,
                       media_averr(r, eb, sizeof eb));
    m->dec->pkt_timebase = st->time_base;
    /* The decoder refuses any frame over the input's limit (a size change mid-stream included),
     * and its frame threads, each holding a frame, are as many as fit the budget. */
    m->dec->max_pixels = max_frame_pixels(m);
    m->dec->thread_count = media_decode_threads(m, par->width, par->height);
    m->dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    r = avcodec_open2(m->dec, codec, NULL);
    if (r < 0)
        return vg_fail(err, errlen, VG_EMEDIA, "cannot open the %s decoder: %s.", codec->name,
                       media_averr(r, eb, sizeof eb));
    return 0;
}

/* Opens the container, probes the streams, picks the video stream and opens its decoder. On a
 * reopen (expect_stream >= 0) the same stream with the same size must come back. Sets the time
 * base and the time origin (media_decode.c). */
static int open_input(vg_media *m, int expect_stream, char *err, size_t errlen)
{
    int c = open_container(m, err, errlen);
    if (c == 0)
        c = probe_streams(m, err, errlen);
    if (c == 0)
        c = pick_stream(m, err, errlen);
    if (c < 0)
        return c;
    if (expect_stream >= 0 && m->vstream != expect_stream)
        return vg_fail(err, errlen, VG_EMEDIA, "'%.200s' changed while it was being read.", m->url);
    AVFormatContext *fmt = m->fmt;
    AVStream *st = fmt->streams[m->vstream];
    for (unsigned i = 0; i < fmt->nb_streams; i++)
        if ((int)i != m->vstream)
            fmt->streams[i]->discard = AVDISCARD_ALL;
    AVCodecParameters *par = st->codecpar;
    /* 0x0 passes only for a live network input joined between keyframes (media_live.c). */
    if (par->width == 0 && par->height == 0)
        c = media_live_check_dims(m, 0, 0, err, errlen);
    else
        c = check_source_dims(m, par->width, par->height, "the video stream", err, errlen);
    if (c < 0)
        return c;
    if (expect_stream >= 0 && (par->width != m->info.width || par->height != m->info.height))
        return vg_fail(err, errlen, VG_EMEDIA, "'%.200s' changed while it was being read.", m->url);
    c = open_decoder(m, st, err, errlen);
    if (c < 0)
        return c;
    m->tb = st->time_base;
    m->start_pts = st->start_time;
    m->origin = st->start_time;
    m->eof_sent = 0;
    m->consumed = 0;
    m->dec_errors = 0;
    return 0;
}

static void fill_info(vg_media *m)
{
    AVFormatContext *fmt = m->fmt;
    AVStream *st = fmt->streams[m->vstream];
    vg_media_info *in = &m->info;
    memset(in, 0, sizeof *in);
    in->width = st->codecpar->width;
    in->height = st->codecpar->height;
    in->fps = q2d_ok(st->avg_frame_rate);
    if (in->fps == 0.0)
        in->fps = q2d_ok(st->r_frame_rate);
    if (st->duration != AV_NOPTS_VALUE && st->duration > 0)
        in->duration = media_ticks_seconds(m, st->duration);
    else if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0)
        in->duration = (double)fmt->duration / AV_TIME_BASE;
    if (st->start_time != AV_NOPTS_VALUE)
        in->start_time = media_ticks_seconds(m, st->start_time); /* the time origin */
    else if (fmt->start_time != AV_NOPTS_VALUE)
        in->start_time = (double)fmt->start_time / AV_TIME_BASE;
    if (!isfinite(in->duration) || in->duration < 0)
        in->duration = 0;
    if (!isfinite(in->start_time))
        in->start_time = 0;
    int seekable = fmt->pb && (fmt->pb->seekable & AVIO_SEEKABLE_NORMAL);
    /* Live: a network stream without a known length or without seeking (RTSP, RTP/UDP, live HLS,
     * an unseekable HTTP stream), and a session a local file describes (SDP) or an open HLS
     * playlist. Any other local file ends: one of unknown length (a raw H.264 stream, an MPEG-TS
     * without timestamps to measure) is counted like any file. */
    const char *f = fmt->iformat ? fmt->iformat->name : "";
    int session = !strcmp(f, "sdp") || !strcmp(f, "rtsp") || !strcmp(f, "rtp") ||
                  (!strcmp(f, "hls") && in->duration <= 0);
    in->is_live = session || (!m->is_file && (in->duration <= 0 || !seekable));
    snprintf(in->codec, sizeof in->codec, "%s", avcodec_get_name(st->codecpar->codec_id));
    snprintf(in->format, sizeof in->format, "%s", fmt->iformat ? fmt->iformat->name : "?");
    if (!in->is_live && st->nb_frames > 0)
        in->total_frames = st->nb_frames;
}

/* Whether the header's frame count can be trusted (it agrees with duration x fps). */
static int count_trusted(const vg_media *m)
{
    const vg_media_info *in = &m->info;
    if (in->total_frames <= 0)
        return 0;
    if (in->duration <= 0 || in->fps <= 0)
        return 1;
    double expect = in->duration * in->fps;
    return fabs((double)in->total_frames - expect) <= 2.0 + 0.02 * expect;
}

/* Reads every video packet without decoding (a network input at most VG_MEDIA_MAX_COUNT: a longer
 * one is VG_EMEDIA; a local file always ends), then reopens the input. */
static int count_packets(vg_media *m, char *err, size_t errlen)
{
    char eb[AV_ERROR_MAX_STRING_SIZE];
    int64_t n = 0;
    int again = 0;
    for (;;) {
        if (!m->is_file && n > VG_MEDIA_MAX_COUNT)
            return vg_fail(err, errlen, VG_EMEDIA,
                           "'%.200s' did not end within %d frames; a stream without an end cannot "
                           "be asked about as a clip (watch it instead).",
                           m->url, VG_MEDIA_MAX_COUNT);
        if (media_stop_requested(m))
            return vg_fail(err, errlen, VG_ECANCELED, "opening '%.200s' was cancelled.", m->url);
        media_arm(m, m->params.read_timeout_ms);
        int r = av_read_frame(m->fmt, m->pkt);
        media_disarm(m);
        if (r == AVERROR(EAGAIN) && ++again < 1000)
            continue;
        again = 0;
        if (r < 0) {
            if (r == AVERROR_EOF)
                break;
            int code = media_map_error(m, r);
            if (code == VG_ECANCELED || code == VG_ETIMEDOUT)
                return vg_fail(err, errlen, code, "counting the frames of '%.200s' %s.", m->url,
                               code == VG_ECANCELED ? "was cancelled" : "timed out");
            vg_log(VG_LOG_WARNING, "media", "%s: read error after %lld video packets (%s)", m->url,
                   (long long)n, media_averr(r, eb, sizeof eb));
            break; /* a damaged tail: the decode pass finds the real end */
        }
        if (m->pkt->stream_index == m->vstream && m->pkt->size > 0 &&
            !(m->pkt->flags & AV_PKT_FLAG_DISCARD))
            n++;
        av_packet_unref(m->pkt);
    }
    close_input(m);
    int r = open_input(m, m->vstream, err, errlen);
    if (r < 0)
        return r;
    m->info.total_frames = n;
    return 0;
}

int media_count_frames(vg_media *m, char *err, size_t errlen)
{
    int r = count_packets(m, err, errlen);
    if (r == 0 && m->info.total_frames > 0 && m->info.fps > 0)
        m->info.duration = (double)m->info.total_frames / m->info.fps;
    return r;
}

/* The stream information with the frame count, frame rate and duration each completed from the
 * others where the header lacks them (a local file's frames counted when its count is not
 * trusted). */
static int complete_info(vg_media *m, char *err, size_t errlen)
{
    fill_info(m);
    vg_media_info *in = &m->info;
    if (!in->is_live && !count_trusted(m)) {
        if (m->is_file) {
            int r = count_packets(m, err, errlen);
            if (r < 0)
                return r;
        } else if (in->duration > 0 && in->fps > 0) {
            in->total_frames = llround(in->duration * in->fps);
        }
    }
    if (in->fps == 0.0 && in->total_frames > 0 && in->duration > 0) {
        double f = (double)in->total_frames / in->duration;
        in->fps = (isfinite(f) && f <= VG_MEDIA_MAX_FPS) ? f : 0.0;
    }
    if (in->duration == 0.0 && in->total_frames > 0 && in->fps > 0)
        in->duration = (double)in->total_frames / in->fps;
    if (in->is_live)
        in->total_frames = 0;
    return 0;
}

/* A local input's descriptor, m->fd: from params.open_file (the caller's checked open), else
 * opened here by name once (O_NONBLOCK, so that a FIFO does not block; no effect on a regular
 * file). It must be a non-empty regular file (without open_file, another kind, a FIFO or a device,
 * is left to libavformat to open by name as before) whose YUV4MPEG2 header, if it has one, claims
 * an allowed frame size. Every open of the input reads this descriptor, so a rewind reads the
 * same file even if its name now points elsewhere. */
static int open_local(vg_media *m, char *err, size_t errlen)
{
    const char *url = m->url;
    const char *path = strncmp(url, "file:", 5) == 0 ? url + 5 : url;
    int fd = -1;
    if (m->params.open_file) {
        char why[400] = "";
        int r = m->params.open_file(m->params.allow_opaque, url, &fd, why, sizeof why);
        if (r < 0 || fd < 0)
            return vg_fail(err, errlen, r < 0 ? r : VG_EIO, "%s",
                           why[0] ? why : "the file could not be opened");
    } else {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0) {
            int e = errno;
            return vg_fail(err, errlen,
                           e == ENOENT                 ? VG_ENOENT
                           : e == EACCES || e == EPERM ? VG_EACCES
                                                       : VG_EIO,
                           "cannot open '%.200s': %s.", url, strerror(e));
        }
    }
    struct stat sb;
    int c = 0;
    if (fstat(fd, &sb) != 0)
        c = vg_fail(err, errlen, VG_EIO, "cannot open '%.200s': %s.", url, strerror(errno));
    else if (S_ISDIR(sb.st_mode))
        c = vg_fail(err, errlen, VG_EMEDIA, "'%.200s' is a directory, not a video.", url);
    else if (!S_ISREG(sb.st_mode) && m->params.open_file)
        c = vg_fail(err, errlen, VG_EMEDIA, "'%.200s' is not a regular file.", url);
    else if (!S_ISREG(sb.st_mode)) {
        close(fd); /* a FIFO or a device: libavformat opens it by name */
        return 0;
    } else if (sb.st_size == 0)
        c = vg_fail(err, errlen, VG_EMEDIA, "'%.200s' is an empty file.", url);
    if (c < 0) {
        close(fd);
        return c;
    }
    m->fd = fd;
    return check_y4m_header(m, err, errlen);
}

vg_media_params vg_media_default_params(void)
{
    vg_media_params p;
    memset(&p, 0, sizeof p);
    p.open_timeout_ms = 10000;
    p.read_timeout_ms = 10000;
    p.protocol_whitelist = DEFAULT_WHITELIST;
    p.decode_threads = 0;
    p.stop = NULL;
    return p;
}

int vg_media_open(const char *url, const vg_media_params *p, vg_media **out, char *err,
                  size_t errlen)
{
    if (!url || !*url || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_media_open needs a URL and an out pointer.");
    vg_media_params params = p ? *p : vg_media_default_params();
    if (params.open_timeout_ms <= 0)
        params.open_timeout_ms = 10000;
    if (params.read_timeout_ms <= 0)
        params.read_timeout_ms = 10000;
    if (!params.protocol_whitelist || !*params.protocol_whitelist)
        params.protocol_whitelist = DEFAULT_WHITELIST;
    if (params.decode_threads < 0 || params.decode_threads > 64)
        params.decode_threads = 0;

    char scheme[32];
    int r = check_protocol(url, params.protocol_whitelist, scheme, sizeof scheme, err, errlen);
    if (r < 0)
        return r;

    int is_file = strcmp(scheme, "file") == 0;
    vg_media *m = calloc(1, sizeof *m);
    if (!m)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    m->params = params;
    m->is_file = is_file;
    m->fd = -1;
    m->vstream = -1;
    m->url = strdup(url);
    m->whitelist = strdup(params.protocol_whitelist);
    m->params.protocol_whitelist = m->whitelist;
    m->pkt = av_packet_alloc();
    m->frame = av_frame_alloc();
    if (!m->url || !m->whitelist || !m->pkt || !m->frame) {
        vg_media_close(m);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    }
    if (is_file) {
        r = open_local(m, err, errlen);
        if (r < 0)
            goto fail;
    }
    r = open_input(m, -1, err, errlen);
    if (r < 0)
        goto fail;
    r = media_check_refused(m, err, errlen);
    if (r < 0)
        goto fail;
    r = complete_info(m, err, errlen);
    if (r < 0)
        goto fail;
    r = media_check_refused(m, err, errlen); /* probing or counting met a refused segment */
    if (r < 0)
        goto fail;
    vg_log(VG_LOG_DEBUG, "media", "%s: %s %s %dx%d, %.3f fps, %lld frames, %.3f s from %.3f s%s",
           url, m->info.format, m->info.codec, m->info.width, m->info.height, m->info.fps,
           (long long)m->info.total_frames, m->info.duration, m->info.start_time,
           m->info.is_live ? ", live" : "");
    *out = m;
    return 0;
fail:
    vg_media_close(m);
    return r;
}

void vg_media_close(vg_media *m)
{
    if (!m)
        return;
    close_input(m);
    av_packet_free(&m->pkt);
    av_frame_free(&m->frame);
    media_converter_free(&m->conv);
    if (m->fd >= 0)
        close(m->fd);
    free(m->url);
    free(m->whitelist);
    free(m);
}

const vg_media_info *vg_media_get_info(const vg_media *m)
{
    return m ? &m->info : NULL;
}

/* Reopens the input so that decoding starts again at frame 0 (also after a failed reopen). */
int media_rewind(vg_media *m, char *err, size_t errlen)
{
    if (!m->consumed && m->fmt && m->dec)
        return 0;
    if (m->info.is_live && !m->clip_reopen)
        return vg_fail(err, errlen, VG_EINVAL,
                       "'%.200s' is a live stream and cannot be read from the start again.",
                       m->url);
    int stream = m->vstream;
    close_input(m);
    return open_input(m, stream, err, errlen);
}
