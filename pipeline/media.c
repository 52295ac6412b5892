/*
 * media.c: opening files and network streams with libavformat, and decoding the frames a sampling
 * plan asks for (qwen-vl-utils "Path A", spec §1.2-§1.4 and §1.7).
 *
 * Opening. The URL's scheme is checked against the protocol whitelist before FFmpeg sees it (the
 * scheme is found the way libavformat finds it, so "concat:", "subfile," or "gopher://" are
 * refused with VG_EPROTOCOL), and the whitelist is also handed to libavformat so that nested opens
 * (HLS segments, RTSP's RTP sockets) obey it. Demuxers are limited to a list of audio/video
 * containers, so a text file is never shown to e.g. the "tty" demuxer as a video. Every input has
 * an interrupt callback reading the caller's atomic stop flag and a deadline that is armed around
 * each blocking call (open + stream probing: open_timeout_ms; each packet read: read_timeout_ms)
 * and disarmed otherwise; the protocols' own timeouts (rw_timeout, timeout) are set as well. Frame
 * sizes are checked against VG_MEDIA_MAX_DIM / VG_MEDIA_MAX_PIXELS from the container header before
 * any frame is probed or decoded, and again on every decoded frame.
 *
 * Frame count. mp4/mov/avi headers carry an exact count (nb_frames); it is used when it agrees
 * with duration x fps. Otherwise (MKV/WebM, MPEG-TS, ...) a local file is counted exactly by
 * reading its video packets without decoding them, and the input is then reopened (a fresh demuxer
 * is the exact "seek back to the start" for every format). Network inputs get duration x fps.
 *
 * Decoding (vg_media_read_video). Packets are decoded sequentially with frame threading; the n-th
 * frame the decoder outputs (presentation order, as the reference decoders and the ffmpeg CLI
 * number them) has index n. Only frames whose index is in the plan are converted to RGB24 with
 * libswscale (full size, the frame's own matrix and range, swscale's default bicubic flags as the
 * ffmpeg CLI uses them) and then resized with vg_resize_rgb(); the others are dropped right after
 * decoding. Conversion and resizing run on worker threads (half the CPUs, 1 to 8) that receive
 * new references to the sampled frames through a bounded queue, so they overlap decoding. Decoding
 * stops at the last sampled index.
 *
 * Fast path (decode_fast). Counting decoder outputs needs every frame decoded. For local H.264 and
 * MPEG-1/2/4 files in containers with real per-packet PTS (mp4/mov, MKV/WebM, MPEG-TS, HLS) whose
 * packets all sit on the grid start + index / fps, the index is known from
 * the packet's PTS before decoding, so skip_frame = NONREF is set per packet for unsampled frames:
 * a non-reference frame is never used for prediction, so every other frame decodes to the same
 * pixels. This is exact only if the packet indices are 0, 1, 2, ... without gaps or repeats: that
 * is verified up to the last sampled index, together with the decoded frames' order, and any
 * deviation (VFR, a gap, a missing timestamp, a short file) reopens the input and decodes
 * sequentially instead. Other codecs (VP8/9, HEVC, AV1, ...) are always decoded sequentially.
 *
 * Timestamps. Each decoded frame's time is (best_effort_timestamp - stream start) x time_base. If
 * every decoded frame up to the last sampled one lies within two time-base ticks of index / fps
 * after the first frame's time, the stream is constant-frame-rate and the sampled frames get
 * exactly index / fps (the reference's value, §1.7); otherwise (variable frame rate) they get their
 * real presentation times.
 *
 * Short streams. If the stream ends before the last sampled index (a truncated file, or a header
 * count that was too high), the plan is recomputed with the number of frames actually decoded and
 * the input is decoded again from a fresh open (over the network too; if that open fails, its
 * error is returned). A second shortfall fails with VG_EMEDIA.
 *
 * Live. An input is live (vg_media_next_frame only, total_frames 0) when its length is unknown, or
 * when it comes over the network and cannot seek (RTSP, RTP/UDP, live HLS, HTTP without ranges);
 * a seekable network file of known length (HTTP with ranges, VOD HLS) is read like a local one.
 *
 * Threads: one vg_media belongs to one thread at a time (the thread that calls these functions);
 * libavcodec runs its own decoding threads inside, and vg_media_read_video its conversion workers,
 * which it joins before returning (each owns its swscale context; they share only the queue, an
 * atomic failure flag and the first error under a mutex, and write disjoint output slots). Only
 * params.stop is shared with the caller's other threads, and it is atomic.
 */
#include "pipeline.h"

#include "common.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/cpu.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define VG_MEDIA_MAX_DIM    16384
#define VG_MEDIA_MAX_PIXELS (8192L * 8192L)
#define VG_MEDIA_MAX_FPS    1000.0
#define MAX_DECODE_ERRORS   64 /* consecutive failed packets before giving up */

#define DEFAULT_WHITELIST "file,http,https,tcp,tls,rtsp,rtp,udp,hls,crypto,data"
/* Demuxers we accept: video containers, the network stream formats, and the audio containers
 * (so an audio file gets "no video stream" rather than "not a media file"). HLS copies this list to
 * its segment demuxers. */
#define FORMAT_WHITELIST                                                                           \
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpegtsraw,hls,applehttp,rtsp,rtp,sdp,"       \
    "yuv4mpegpipe,flv,live_flv,mpeg,mpegvideo,h264,hevc,m4v,ivf,asf,nut,ogg,mxf,dv,"               \
    "mpjpeg,gif,wav,mp3,aac,flac,ac3,eac3,webvtt"

enum { WHY_NONE = 0, WHY_STOP, WHY_DEADLINE };

/* A frame -> RGB24 converter: a swscale context for one input format and an aligned full-size
 * RGB buffer. One per thread that converts. */
typedef struct converter {
    struct SwsContext *sws;
    int w, h, fmt, space, range;
    uint8_t *full;
    size_t full_size;
} converter;

struct vg_media {
    char *url;
    char *whitelist;
    vg_media_params params;
    int is_file; /* the "file" protocol */

    /* Nested opens (params.allow_url): libavformat's own io_open, and the first refusal. */
    int (*io_open_default)(AVFormatContext *, AVIOContext **, const char *, int, AVDictionary **);
    char refused[512];

    /* Interrupt state: read by interrupt_cb on this thread. */
    uint64_t deadline_ns; /* 0 = none */
    int why;

    AVFormatContext *fmt;
    AVCodecContext *dec;
    int vstream;
    AVRational tb;
    int64_t start_pts; /* stream start in tb units, AV_NOPTS_VALUE if unknown */
    vg_media_info info;

    /* Decoding state. */
    AVPacket *pkt;
    AVFrame *frame;
    int eof_sent;
    int pkt_pending; /* pkt was refused with EAGAIN and must be sent again */
    int consumed;    /* packets were read since the last (re)open */
    int dec_errors;  /* consecutive */
    int64_t dec_errors_total;
    char last_dec_error[128];
    double last_pts_s; /* for next_frame when a frame has no timestamp */
    int have_last_pts;

    converter conv; /* for vg_media_next_frame */

    /* Non-reference skipping (read_video's fast path, see decode_fast): each packet's
     * presentation index from its PTS decides whether its frame may be skipped. */
    int skip_mode;
    int skip_invalid;       /* a packet broke the rules: the fast path is abandoned */
    const uint8_t *sampled; /* [map_len] 1 = a sampled index */
    int64_t map_len;
    uint8_t *seen;          /* [map_len] packet indices read */
    int64_t seen_upto_last; /* distinct indices < map_len read */
    double skip_tol;
};

/* ------------------------------------------------------------------------------------------------
 * Helpers.
 */
static void converter_free(converter *cv)
{
    sws_freeContext(cv->sws);
    av_free(cv->full);
    memset(cv, 0, sizeof *cv);
}

static const char *averr(int e, char *buf, size_t len)
{
    if (av_strerror(e, buf, len) < 0)
        snprintf(buf, len, "FFmpeg error %d", e);
    return buf;
}

static int stop_requested(const vg_media *m)
{
    return m->params.stop && atomic_load(m->params.stop) != 0;
}

static int interrupt_cb(void *opaque)
{
    vg_media *m = opaque;
    if (stop_requested(m)) {
        m->why = WHY_STOP;
        return 1;
    }
    if (m->deadline_ns && vg_now_ns() > m->deadline_ns) {
        m->why = WHY_DEADLINE;
        return 1;
    }
    return 0;
}

static void arm(vg_media *m, int timeout_ms)
{
    m->why = WHY_NONE;
    m->deadline_ns = timeout_ms > 0 ? vg_now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
}

static void disarm(vg_media *m)
{
    m->deadline_ns = 0;
}

/* Maps an FFmpeg error (after an interrupted or failed call) onto a vigil code. */
static int map_error(const vg_media *m, int e)
{
    if (m->why == WHY_STOP)
        return VG_ECANCELED;
    if (m->why == WHY_DEADLINE || e == AVERROR(ETIMEDOUT))
        return VG_ETIMEDOUT;
    if (e == AVERROR_EXIT)
        return stop_requested(m) ? VG_ECANCELED : VG_ETIMEDOUT;
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

static int check_dims(int w, int h, const char *what, char *err, size_t errlen)
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

/* A raw YUV4MPEG2 header is parsed by libavformat into a frame-sized packet; its W/H fields are
 * checked here first so that a huge claim gets our sentence instead of an allocation failure. */
static int check_y4m_header(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char line[256];
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    if (n < 10 || strncmp(line, "YUV4MPEG2 ", 10) != 0)
        return 0;
    long w = 0, h = 0;
    for (char *p = line + 9; *p && *p != '\n'; p++) {
        if (p[0] == ' ' && p[1] == 'W')
            w = strtol(p + 2, NULL, 10);
        else if (p[0] == ' ' && p[1] == 'H')
            h = strtol(p + 2, NULL, 10);
    }
    if (w > VG_MEDIA_MAX_DIM || h > VG_MEDIA_MAX_DIM || w * h > VG_MEDIA_MAX_PIXELS)
        return vg_fail(err, errlen, VG_ELIMIT,
                       "'%.200s' claims frames of %ldx%ld pixels, over the limit of %dx%d and %ld "
                       "pixels per frame.",
                       path, w, h, VG_MEDIA_MAX_DIM, VG_MEDIA_MAX_DIM, VG_MEDIA_MAX_PIXELS);
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
    arm(m, m->params.read_timeout_ms); /* RTSP sends a TEARDOWN on close */
    avformat_close_input(&m->fmt);
    disarm(m);
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
    arm(m, m->params.open_timeout_ms);
    int found = 0;
    if (avio_open2(&pb, m->url, AVIO_FLAG_READ, &cb, NULL) >= 0) {
        const AVInputFormat *f = NULL;
        if (av_probe_input_buffer2(pb, &f, m->url, NULL, 0, 0) >= 0 && f &&
            av_match_list(f->name, FORMAT_WHITELIST, ',') <= 0) {
            snprintf(name, len, "%s (%s)", f->name, f->long_name ? f->long_name : "?");
            found = 1;
        }
        avio_closep(&pb);
    }
    disarm(m);
    return found;
}

/* A URL refused by params.allow_url fails the whole input, even where the demuxer would go on
 * without it (HLS skips a segment it cannot open). */
static int check_refused(const vg_media *m, char *err, size_t errlen)
{
    if (m->refused[0])
        return vg_fail(err, errlen, VG_EPATH, "%s.", m->refused);
    return 0;
}

/* fmt->io_open when params.allow_url is set: every URL the demuxer opens (the input, an HLS
 * playlist's variants, segments and keys) must pass the protocol whitelist, as the input did, and a
 * local one the caller's policy; a refusal is kept, so it fails the whole input. */
static int checked_io_open(AVFormatContext *s, AVIOContext **pb, const char *url, int flags,
                           AVDictionary **options)
{
    vg_media *m = s->opaque;
    if (!m || !m->io_open_default)
        return AVERROR(EPERM);
    char why[400] = "", scheme[32];
    if (check_protocol(url, m->whitelist, scheme, sizeof scheme, why, sizeof why) < 0 ||
        (!strcmp(scheme, "file") &&
         m->params.allow_url(m->params.allow_opaque, url, why, sizeof why) < 0)) {
        if (!m->refused[0])
            snprintf(m->refused, sizeof m->refused, "'%.200s' refers to '%.200s', refused: %s",
                     m->url, url, why[0] ? why : "not allowed");
        return AVERROR(EPERM);
    }
    return m->io_open_default(s, pb, url, flags, options);
}

/* Opens the container, probes the streams, picks the video stream and opens its decoder. On a
 * reopen (expect_stream >= 0) the same stream with the same size must come back. */
static int open_input(vg_media *m, int expect_stream, char *err, size_t errlen)
{
    char eb[AV_ERROR_MAX_STRING_SIZE];
    AVFormatContext *fmt = avformat_alloc_context();
    if (!fmt)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory opening '%.200s'.", m->url);
    fmt->interrupt_callback.callback = interrupt_cb;
    fmt->interrupt_callback.opaque = m;
    if (m->params.allow_url) {
        m->io_open_default = fmt->io_open;
        fmt->opaque = m;
        fmt->io_open = checked_io_open;
    }

    AVDictionary *opts = NULL;
    int64_t read_us = (int64_t)m->params.read_timeout_ms * 1000;
    av_dict_set(&opts, "protocol_whitelist", m->whitelist, 0);
    av_dict_set(&opts, "format_whitelist", FORMAT_WHITELIST, 0);
    if (read_us > 0) {
        av_dict_set_int(&opts, "rw_timeout", read_us, 0);
        if (!m->is_file)
            av_dict_set_int(&opts, "timeout", read_us, 0); /* tcp/http/udp/rtsp socket I/O, µs */
    }

    arm(m, m->params.open_timeout_ms);
    int r = avformat_open_input(&fmt, m->url, NULL, &opts);
    av_dict_free(&opts);
    if (r < 0) {
        disarm(m);
        if (m->refused[0])
            return check_refused(m, err, errlen);
        int code = map_error(m, r);
        if (code == VG_ETIMEDOUT)
            return vg_fail(err, errlen, code, "opening '%.200s' timed out after %d ms (%s).",
                           m->url, m->params.open_timeout_ms, averr(r, eb, sizeof eb));
        if (code == VG_ECANCELED)
            return vg_fail(err, errlen, code, "opening '%.200s' was cancelled.", m->url);
        char fname[160];
        if (r == AVERROR(EINVAL) && refused_format(m, fname, sizeof fname))
            return vg_fail(err, errlen, VG_EMEDIA,
                           "'%.200s' looks like %s, which is not a supported video container.",
                           m->url, fname);
        if (code == VG_EMEDIA)
            return vg_fail(err, errlen, code,
                           "cannot open '%.200s': %s (not a supported video container, or a "
                           "corrupt or truncated file).",
                           m->url, averr(r, eb, sizeof eb));
        return vg_fail(err, errlen, code, "cannot open '%.200s': %s.", m->url,
                       averr(r, eb, sizeof eb));
    }
    m->fmt = fmt;

    /* Sizes claimed by the header, before any frame is probed or decoded. */
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        AVCodecParameters *par = fmt->streams[i]->codecpar;
        if (par->codec_type == AVMEDIA_TYPE_VIDEO && (par->width != 0 || par->height != 0)) {
            char what[64];
            snprintf(what, sizeof what, "video stream #%u", i);
            int c = check_dims(par->width, par->height, what, err, errlen);
            if (c < 0) {
                disarm(m);
                return c;
            }
        }
    }

    r = avformat_find_stream_info(fmt, NULL);
    disarm(m);
    if (r < 0) {
        int code = map_error(m, r);
        if (code == VG_ETIMEDOUT)
            return vg_fail(err, errlen, code,
                           "reading the stream information of '%.200s' timed out after %d ms.",
                           m->url, m->params.open_timeout_ms);
        if (code == VG_ECANCELED)
            return vg_fail(err, errlen, code, "opening '%.200s' was cancelled.", m->url);
        return vg_fail(err, errlen, code == VG_EIO ? VG_EIO : VG_EMEDIA,
                       "cannot read the stream information of '%.200s': %s.", m->url,
                       averr(r, eb, sizeof eb));
    }
    int c = pick_stream(m, err, errlen);
    if (c < 0)
        return c;
    if (expect_stream >= 0 && m->vstream != expect_stream)
        return vg_fail(err, errlen, VG_EMEDIA, "'%.200s' changed while it was being read.", m->url);
    AVStream *st = fmt->streams[m->vstream];
    for (unsigned i = 0; i < fmt->nb_streams; i++)
        if ((int)i != m->vstream)
            fmt->streams[i]->discard = AVDISCARD_ALL;
    AVCodecParameters *par = st->codecpar;
    c = check_dims(par->width, par->height, "the video stream", err, errlen);
    if (c < 0)
        return c;
    if (expect_stream >= 0 && (par->width != m->info.width || par->height != m->info.height))
        return vg_fail(err, errlen, VG_EMEDIA, "'%.200s' changed while it was being read.", m->url);

    const AVCodec *codec = avcodec_find_decoder(par->codec_id);
    if (!codec)
        return vg_fail(err, errlen, VG_EMEDIA, "no decoder for the %s video of '%.200s'.",
                       avcodec_get_name(par->codec_id), m->url);
    m->dec = avcodec_alloc_context3(codec);
    if (!m->dec)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory opening a decoder.");
    r = avcodec_parameters_to_context(m->dec, par);
    if (r < 0)
        return vg_fail(err, errlen, VG_EMEDIA, "bad codec parameters in '%.200s': %s.", m->url,
                       averr(r, eb, sizeof eb));
    m->dec->pkt_timebase = st->time_base;
    m->dec->thread_count = m->params.decode_threads > 0 ? m->params.decode_threads : 0;
    m->dec->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
    r = avcodec_open2(m->dec, codec, NULL);
    if (r < 0)
        return vg_fail(err, errlen, VG_EMEDIA, "cannot open the %s decoder: %s.", codec->name,
                       averr(r, eb, sizeof eb));
    m->tb = st->time_base;
    m->start_pts = st->start_time;
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
        in->duration = (double)st->duration * av_q2d(st->time_base);
    else if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0)
        in->duration = (double)fmt->duration / AV_TIME_BASE;
    if (st->start_time != AV_NOPTS_VALUE)
        in->start_time = (double)st->start_time * av_q2d(st->time_base);
    else if (fmt->start_time != AV_NOPTS_VALUE)
        in->start_time = (double)fmt->start_time / AV_TIME_BASE;
    if (!isfinite(in->duration) || in->duration < 0)
        in->duration = 0;
    if (!isfinite(in->start_time))
        in->start_time = 0;
    int seekable = fmt->pb && (fmt->pb->seekable & AVIO_SEEKABLE_NORMAL);
    /* Live: a network stream without a known length or without seeking (RTSP, RTP/UDP, live HLS,
     * an unseekable HTTP stream), or any input of unknown length. */
    in->is_live = in->duration <= 0 || (!m->is_file && !seekable);
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

/* Reads every video packet of a local file without decoding, then reopens it. */
static int count_packets(vg_media *m, char *err, size_t errlen)
{
    char eb[AV_ERROR_MAX_STRING_SIZE];
    int64_t n = 0;
    int again = 0;
    for (;;) {
        if (stop_requested(m))
            return vg_fail(err, errlen, VG_ECANCELED, "opening '%.200s' was cancelled.", m->url);
        arm(m, m->params.read_timeout_ms);
        int r = av_read_frame(m->fmt, m->pkt);
        disarm(m);
        if (r == AVERROR(EAGAIN) && ++again < 1000)
            continue;
        again = 0;
        if (r < 0) {
            if (r == AVERROR_EOF)
                break;
            int code = map_error(m, r);
            if (code == VG_ECANCELED || code == VG_ETIMEDOUT)
                return vg_fail(err, errlen, code, "counting the frames of '%.200s' %s.", m->url,
                               code == VG_ECANCELED ? "was cancelled" : "timed out");
            vg_log(VG_LOG_WARNING, "media", "%s: read error after %lld video packets (%s)", m->url,
                   (long long)n, averr(r, eb, sizeof eb));
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
    if (is_file) {
        const char *path = strncmp(url, "file:", 5) == 0 ? url + 5 : url;
        struct stat sb;
        if (stat(path, &sb) != 0)
            return vg_fail(err, errlen, errno == ENOENT ? VG_ENOENT : VG_EIO,
                           "cannot open '%.200s': %s.", url, strerror(errno));
        if (S_ISDIR(sb.st_mode))
            return vg_fail(err, errlen, VG_EMEDIA, "'%.200s' is a directory, not a video.", url);
        if (S_ISREG(sb.st_mode) && sb.st_size == 0)
            return vg_fail(err, errlen, VG_EMEDIA, "'%.200s' is an empty file.", url);
        r = check_y4m_header(path, err, errlen);
        if (r < 0)
            return r;
    }

    vg_media *m = calloc(1, sizeof *m);
    if (!m)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    m->params = params;
    m->is_file = is_file;
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
    r = open_input(m, -1, err, errlen);
    if (r < 0)
        goto fail;
    r = check_refused(m, err, errlen);
    if (r < 0)
        goto fail;
    fill_info(m);
    if (!m->info.is_live && !count_trusted(m)) {
        if (m->is_file) {
            r = count_packets(m, err, errlen);
            if (r < 0)
                goto fail;
        } else if (m->info.duration > 0 && m->info.fps > 0) {
            m->info.total_frames = llround(m->info.duration * m->info.fps);
        }
    }
    if (m->info.fps == 0.0 && m->info.total_frames > 0 && m->info.duration > 0) {
        double f = (double)m->info.total_frames / m->info.duration;
        m->info.fps = (isfinite(f) && f <= VG_MEDIA_MAX_FPS) ? f : 0.0;
    }
    if (m->info.duration == 0.0 && m->info.total_frames > 0 && m->info.fps > 0)
        m->info.duration = (double)m->info.total_frames / m->info.fps;
    if (m->info.is_live)
        m->info.total_frames = 0;
    r = check_refused(m, err, errlen); /* probing or counting met a refused segment */
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
    converter_free(&m->conv);
    free(m->url);
    free(m->whitelist);
    free(m);
}

const vg_media_info *vg_media_get_info(const vg_media *m)
{
    return m ? &m->info : NULL;
}

/* ------------------------------------------------------------------------------------------------
 * Decoding.
 */

/* Fast path: the presentation index of m->pkt from its PTS on the frame grid; marks it seen and
 * tells the decoder to skip the frame if it is an unsampled non-reference one. A packet without a
 * timestamp, off the grid or repeated makes the fast path invalid. */
static void classify_packet(vg_media *m)
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
static int decode_next(vg_media *m, char *err, size_t errlen)
{
    char eb[AV_ERROR_MAX_STRING_SIZE];
    uint64_t again_since = 0;
    if (!m->fmt || !m->dec)
        return vg_fail(err, errlen, VG_EIO, "'%.200s' could not be reopened after an error.",
                       m->url);
    for (;;) {
        if (stop_requested(m))
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
            averr(r, m->last_dec_error, sizeof m->last_dec_error);
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
                               m->url, averr(r, eb, sizeof eb));
            continue;
        }

        arm(m, m->params.read_timeout_ms);
        r = av_read_frame(m->fmt, m->pkt);
        disarm(m);
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
            int code = map_error(m, r);
            if (code == VG_ECANCELED)
                return vg_fail(err, errlen, code, "decoding '%.200s' was cancelled.", m->url);
            if (code == VG_ETIMEDOUT)
                return vg_fail(err, errlen, code, "no data from '%.200s' for %d ms.", m->url,
                               m->params.read_timeout_ms);
            if (r != AVERROR_EOF && !m->is_file)
                return vg_fail(err, errlen, code == VG_EMEDIA ? VG_EIO : code,
                               "reading '%.200s' failed: %s.", m->url, averr(r, eb, sizeof eb));
            if (r != AVERROR_EOF)
                vg_log(VG_LOG_WARNING, "media", "%s: read error, treated as the end (%s)", m->url,
                       averr(r, eb, sizeof eb));
            m->eof_sent = 1;
            avcodec_send_packet(m->dec, NULL); /* drain */
            continue;
        }
        if (m->pkt->stream_index != m->vstream) {
            av_packet_unref(m->pkt);
            continue;
        }
        if (m->skip_mode)
            classify_packet(m);
        r = avcodec_send_packet(m->dec, m->pkt);
        if (r == AVERROR(EAGAIN)) { /* frames first; the packet is sent again then */
            m->pkt_pending = 1;
            continue;
        }
        av_packet_unref(m->pkt);
        if (r < 0) {
            averr(r, m->last_dec_error, sizeof m->last_dec_error);
            vg_log(VG_LOG_DEBUG, "media", "%s: packet not decodable (%s)", m->url,
                   m->last_dec_error);
            m->dec_errors_total++;
            if (++m->dec_errors > MAX_DECODE_ERRORS)
                return vg_fail(err, errlen, VG_EDECODE, "the decoder failed on '%.200s': %s.",
                               m->url, m->last_dec_error);
        }
    }
}

/* Converts f to RGB24 at its own size (cv->full, 64-byte aligned rows, as the ffmpeg CLI's frames
 * have them, so that swscale takes the same code path) with the frame's colour matrix and range,
 * then copies or resizes it into dst (dw x dh, tightly packed). */
static int convert_frame(converter *cv, const AVFrame *f, uint8_t *dst, int dw, int dh, char *err,
                         size_t errlen)
{
    int r = check_dims(f->width, f->height, "a decoded frame", err, errlen);
    if (r < 0)
        return r;
    if (f->format < 0 || !f->data[0])
        return vg_fail(err, errlen, VG_EDECODE, "the decoder returned a frame without pixels.");
    int space = f->colorspace, range = f->color_range;
    if (!cv->sws || cv->w != f->width || cv->h != f->height || cv->fmt != f->format ||
        cv->space != space || cv->range != range) {
        cv->sws = sws_getCachedContext(cv->sws, f->width, f->height, f->format, f->width, f->height,
                                       AV_PIX_FMT_RGB24, SWS_BICUBIC, NULL, NULL, NULL);
        if (!cv->sws) {
            const char *name = av_get_pix_fmt_name(f->format);
            return vg_fail(err, errlen, VG_EDECODE, "cannot convert %s frames to RGB.",
                           name ? name : "?");
        }
        /* As the ffmpeg CLI's scale filter does: the frame's matrix, and its range when set. */
        int *inv, *tab, src_full, dst_full, bri, con, sat;
        if (sws_getColorspaceDetails(cv->sws, &inv, &src_full, &tab, &dst_full, &bri, &con, &sat) >=
            0) {
            const int *coefs = sws_getCoefficients(space);
            if (range != AVCOL_RANGE_UNSPECIFIED)
                src_full = range == AVCOL_RANGE_JPEG;
            sws_setColorspaceDetails(cv->sws, coefs, src_full, coefs, dst_full, bri, con, sat);
        }
        cv->w = f->width;
        cv->h = f->height;
        cv->fmt = f->format;
        cv->space = space;
        cv->range = range;
    }
    /* swscale's SIMD RGB24 writers work on widths rounded up (to 8 or 16 pixels) and can leave the
     * last columns unwritten when a row is only FFALIGN(width * 3, 64) bytes: give each row the
     * room av_frame_get_buffer() and the ffmpeg CLI give it. */
    int stride = FFALIGN(FFALIGN(f->width, 64) * 3, 64);
    size_t need = (size_t)stride * (size_t)f->height + 64;
    if (need > cv->full_size) {
        av_free(cv->full);
        cv->full = av_malloc(need);
        cv->full_size = cv->full ? need : 0;
        if (!cv->full)
            return vg_fail(err, errlen, VG_ENOMEM, "out of memory for a %dx%d frame.", f->width,
                           f->height);
    }
    uint8_t *dp[4] = {cv->full, NULL, NULL, NULL};
    int dl[4] = {stride, 0, 0, 0};
    int h = sws_scale(cv->sws, (const uint8_t *const *)f->data, f->linesize, 0, f->height, dp, dl);
    if (h != f->height)
        return vg_fail(err, errlen, VG_EDECODE, "RGB conversion of a %dx%d frame failed.", f->width,
                       f->height);
    if (dw == f->width && dh == f->height) {
        for (int y = 0; y < dh; y++)
            memcpy(dst + (size_t)y * dw * 3, cv->full + (size_t)y * stride, (size_t)dw * 3);
        return 0;
    }
    r = vg_resize_rgb(cv->full, f->width, f->height, (size_t)stride, dst, dw, dh);
    if (r < 0)
        return vg_fail(err, errlen, r, "resizing a %dx%d frame to %dx%d failed.", f->width,
                       f->height, dw, dh);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Conversion workers: the decoding thread hands each sampled frame (a new reference, no copy) to a
 * bounded queue; workers convert and resize it into its slot of the output, each with its own
 * converter, so resizing overlaps decoding. The first error wins and makes the workers skip the
 * remaining frames; closing the queue drains it and ends them.
 */
#define MAX_WORKERS 8

typedef struct conv_job {
    AVFrame *frame;
    uint8_t *dst;
} conv_job;

typedef struct conv_pool {
    vg_queue *q;
    pthread_t th[MAX_WORKERS];
    int n;
    int dw, dh;
    atomic_int failed;
    pthread_mutex_t mu;
    int code;
    char err[256];
} conv_pool;

static void *conv_worker(void *arg)
{
    conv_pool *pool = arg;
    converter cv;
    memset(&cv, 0, sizeof cv);
    void *item;
    while (vg_queue_pop(pool->q, &item, -1) == 0) {
        conv_job *j = item;
        if (!atomic_load(&pool->failed)) {
            char e[256];
            int r = convert_frame(&cv, j->frame, j->dst, pool->dw, pool->dh, e, sizeof e);
            if (r < 0) {
                pthread_mutex_lock(&pool->mu);
                if (!pool->code) {
                    pool->code = r;
                    snprintf(pool->err, sizeof pool->err, "%s", e);
                }
                pthread_mutex_unlock(&pool->mu);
                atomic_store(&pool->failed, 1);
            }
        }
        av_frame_free(&j->frame);
        free(j);
    }
    converter_free(&cv);
    return NULL;
}

static int workers_for(int nframes)
{
    int cpus = av_cpu_count(); /* honours the affinity mask, unlike sysconf */
    int n = cpus >= 4 ? cpus / 2 : 1;
    if (n > MAX_WORKERS)
        n = MAX_WORKERS;
    return VG_MAX(1, VG_MIN(n, nframes));
}

static int pool_start(conv_pool *pool, int workers, int dw, int dh, char *err, size_t errlen)
{
    memset(pool, 0, sizeof *pool);
    pool->dw = dw;
    pool->dh = dh;
    atomic_init(&pool->failed, 0);
    if (pthread_mutex_init(&pool->mu, NULL) != 0)
        return vg_fail(err, errlen, VG_ENOMEM, "cannot create a mutex.");
    int r = vg_queue_create((size_t)workers * 2, &pool->q);
    if (r < 0) {
        pthread_mutex_destroy(&pool->mu);
        return vg_fail(err, errlen, r, "cannot create the conversion queue.");
    }
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&pool->th[i], NULL, conv_worker, pool) != 0)
            break;
        pool->n++;
    }
    if (pool->n == 0) {
        vg_queue_destroy(pool->q);
        pthread_mutex_destroy(&pool->mu);
        return vg_fail(err, errlen, VG_ENOMEM, "cannot start a conversion thread.");
    }
    return 0;
}

/* Hands a reference to m->frame to the workers. */
static int pool_submit(conv_pool *pool, vg_media *m, uint8_t *dst, char *err, size_t errlen)
{
    conv_job *j = malloc(sizeof *j);
    if (!j)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    j->dst = dst;
    j->frame = av_frame_clone(m->frame);
    if (!j->frame) {
        free(j);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    }
    for (;;) {
        int r = vg_queue_push(pool->q, j, 100);
        if (r == 0)
            return 0;
        if (r != VG_ETIMEDOUT || stop_requested(m) || atomic_load(&pool->failed)) {
            av_frame_free(&j->frame);
            free(j);
            if (stop_requested(m))
                return vg_fail(err, errlen, VG_ECANCELED, "decoding '%.200s' was cancelled.",
                               m->url);
            return 0; /* the workers' error is reported by pool_finish */
        }
    }
}

/* Ends the workers after they converted (or, after an error, skipped) every frame; returns their
 * first error. */
static int pool_finish(conv_pool *pool, int abandon, char *err, size_t errlen)
{
    if (abandon)
        atomic_store(&pool->failed, 1);
    vg_queue_close(pool->q);
    for (int i = 0; i < pool->n; i++)
        pthread_join(pool->th[i], NULL);
    vg_queue_destroy(pool->q);
    pthread_mutex_destroy(&pool->mu);
    if (!abandon && pool->code)
        return vg_fail(err, errlen, pool->code, "%s", pool->err);
    return 0;
}

/* Frame time in seconds from base (the stream start; without one, the first frame's time, set
 * here), or NAN without a timestamp. */
static double frame_time(const vg_media *m, int64_t *base)
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

/* Reopens the input so that decoding starts again at frame 0 (also after a failed reopen). */
static int rewind_input(vg_media *m, char *err, size_t errlen)
{
    if (!m->consumed && m->fmt && m->dec)
        return 0;
    if (m->info.is_live)
        return vg_fail(err, errlen, VG_EINVAL,
                       "'%.200s' is a live stream and cannot be read from the start again.",
                       m->url);
    int stream = m->vstream;
    close_input(m);
    return open_input(m, stream, err, errlen);
}

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
    int rc = pool_start(&pool, workers_for(n), W, H, err, errlen);
    if (rc < 0)
        goto done;
    int next = 0;
    int64_t prev = -1, outputs = 0, errors0 = m->dec_errors_total;
    int reorder = 0;
    uint64_t last_progress = 0;
    while (next < n) {
        if (atomic_load(&pool.failed)) {
            rc = pool_finish(&pool, 0, err, errlen);
            if (rc == 0)
                rc = vg_fail(err, errlen, VG_EDECODE, "a frame could not be converted.");
            goto done;
        }
        rc = decode_next(m, err, errlen);
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
            rc = pool_submit(&pool, m, rgb + (size_t)order[next].pos * fsz, err, errlen);
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
    rc = pool_finish(&pool, 0, err, errlen);
    if (rc < 0)
        goto done;
    /* Every index up to the last sampled one must have had its packet; a reordered one may still
     * be ahead in the file. */
    for (int k = 0; k < LOOKAHEAD && m->seen_upto_last < last + 1 && !m->skip_invalid; k++) {
        arm(m, m->params.read_timeout_ms);
        int r = av_read_frame(m->fmt, m->pkt);
        disarm(m);
        if (r < 0)
            break;
        if (m->pkt->stream_index == m->vstream)
            classify_packet(m);
        av_packet_unref(m->pkt);
    }
    if (m->skip_invalid || m->seen_upto_last != last + 1 || m->dec_errors_total != errors0)
        rc = FALLBACK;
    else
        vg_log(VG_LOG_DEBUG, "media", "%s: fast path: %lld of %lld frames decoded", m->url,
               (long long)outputs, (long long)(last + 1));
    goto done;
out_pool:
    pool_finish(&pool, 1, NULL, 0);
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
    rc = rewind_input(m, err, errlen);
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
        rc = rewind_input(m, err, errlen);
        if (rc < 0)
            goto out;
    }

    conv_pool pool;
    rc = pool_start(&pool, workers_for(n), W, H, err, errlen);
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
            rc = pool_finish(&pool, 0, err, errlen);
            if (rc == 0)
                rc = vg_fail(err, errlen, VG_EDECODE, "a frame could not be converted.");
            goto out;
        }
        rc = decode_next(m, err, errlen);
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
        double t = frame_time(m, &base);
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
                rc = pool_submit(&pool, m, rgb + (size_t)pos * fsz, err, errlen);
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
    rc = pool_finish(&pool, 0, err, errlen);
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
    pool_finish(&pool, 1, NULL, 0);
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
        return check_refused(m, err, errlen);
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

int vg_media_next_frame(vg_media *m, int width, int height, uint8_t *rgb, double *pts_seconds,
                        char *err, size_t errlen)
{
    if (!m || !rgb)
        return vg_fail(err, errlen, VG_EINVAL, "vg_media_next_frame needs a media and a buffer.");
    int r = check_dims(width, height, "the requested size", err, errlen);
    if (r < 0)
        return r == VG_EMEDIA ? VG_EINVAL : r;
    r = decode_next(m, err, errlen);
    if (m->refused[0]) {
        av_frame_unref(m->frame);
        return check_refused(m, err, errlen);
    }
    if (r < 0)
        return r;
    int64_t ts = m->frame->best_effort_timestamp;
    double t;
    if (ts != AV_NOPTS_VALUE)
        t = (double)ts * av_q2d(m->tb);
    else if (m->have_last_pts)
        t = m->last_pts_s + (m->info.fps > 0 ? 1.0 / m->info.fps : 0.0);
    else
        t = 0.0;
    r = convert_frame(&m->conv, m->frame, rgb, width, height, err, errlen);
    av_frame_unref(m->frame);
    if (r < 0)
        return r;
    m->last_pts_s = t;
    m->have_last_pts = 1;
    if (pts_seconds)
        *pts_seconds = t;
    return 0;
}
