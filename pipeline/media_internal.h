/*
 * media_internal.h: what the media_*.c files of pipeline/ share: struct vg_media, the converter
 * and the conversion pool, and the helpers one file defines and another calls. Private to
 * pipeline/: nothing outside this folder includes it (FFmpeg types stay inside the module).
 */
#ifndef VG_MEDIA_INTERNAL_H
#define VG_MEDIA_INTERNAL_H

#include "common.h"
#include "pipeline.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define VG_MEDIA_MAX_DIM    16384
#define VG_MEDIA_MAX_PIXELS (8192L * 8192L)
#define VG_MEDIA_MAX_FPS    1000.0
#define MAX_DECODE_ERRORS   64 /* consecutive failed packets before giving up */
/* Frame buffers one input may hold at once (decoder frame threads, queued frames, converters'
 * full-size RGB frames), which bounds the threads for large frames. */
#define VG_MEDIA_FRAME_BUDGET ((size_t)512 << 20)
/* Most frames counted in a network input whose length is unknown before it is refused as
 * endless. */
#define VG_MEDIA_MAX_COUNT 1000000

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
    int is_file;     /* the "file" protocol */
    int clip_reopen; /* a network input without seeking read as a clip: reopened from its start */
    int fd;          /* a local input's descriptor (owned; -1: libavformat opens it by name), read
                        through media_fdio.c by every open of this input */
    AVIOContext *pb; /* the fdio context of the open input, or NULL */

    /* Nested opens (params.allow_url / open_file): libavformat's own io_open and io_close2, and
     * the first refusal. */
    int (*io_open_default)(AVFormatContext *, AVIOContext **, const char *, int, AVDictionary **);
    int (*io_close2_default)(AVFormatContext *, AVIOContext *);
    char refused[512];

    /* Interrupt state: read by interrupt_cb on this thread. */
    uint64_t deadline_ns; /* 0 = none */
    int why;

    AVFormatContext *fmt;
    AVCodecContext *dec;
    int vstream;
    AVRational tb;
    int64_t start_pts; /* the stream's declared start in tb units, AV_NOPTS_VALUE if unknown */
    int64_t origin;    /* the time origin in tb units (media_decode.c): start_pts, or the first
                          timestamp decoded since the open when that is unknown */
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
    int held; /* m->frame holds the frame vg_media_wait_size decoded, for vg_media_next_frame */

    converter conv; /* for vg_media_next_frame */
};

/* ---- media_open.c: opening, interrupts, errors. */

/* av_strerror into buf, or "FFmpeg error N"; returns buf. */
const char *media_averr(int e, char *buf, size_t len);
/* Whether the caller's stop flag is set. */
int media_stop_requested(const vg_media *m);
/* Arms the interrupt deadline timeout_ms from now (0 = none) around one blocking call; disarm
 * after it. */
void media_arm(vg_media *m, int timeout_ms);
void media_disarm(vg_media *m);
/* An FFmpeg error after an interrupted or failed call as a VG_E* code. */
int media_map_error(const vg_media *m, int e);
/* Bytes of one w x h frame as the memory budget counts it (3 per pixel). */
size_t media_frame_bytes(int w, int h);
/* Decoder threads for w x h frames: params.decode_threads (0: the CPUs + 1, at most 16), fewer when
 * their frames would exceed half of VG_MEDIA_FRAME_BUDGET; at least 1. */
int media_decode_threads(const vg_media *m, int w, int h);
/* VG_EMEDIA for a size <= 0, VG_ELIMIT over VG_MEDIA_MAX_DIM / VG_MEDIA_MAX_PIXELS. */
int media_check_dims(int w, int h, const char *what, char *err, size_t errlen);
/* VG_EPATH with the sentence of the first URL params.allow_url refused, else 0. */
int media_check_refused(const vg_media *m, char *err, size_t errlen);
/* Reads the whole input without decoding to count its video frames (a network input at most
 * VG_MEDIA_MAX_COUNT, else VG_EMEDIA), reopens it, and sets info.total_frames and info.duration. */
int media_count_frames(vg_media *m, char *err, size_t errlen);
/* Reopens the input so that decoding starts again at frame 0 (also after a failed reopen); a no-op
 * when nothing was read since the open. VG_EINVAL for a live input unless clip_reopen is set. */
int media_rewind(vg_media *m, char *err, size_t errlen);

/* ---- media_live.c: live reading. */

/* The video stream's frame size as the container and the probe found it, checked at open
 * (media_check_dims), except that 0x0 passes for a network input that cannot seek: a live stream
 * joined between keyframes has no size until its next keyframe, which vg_media_wait_size waits for.
 */
int media_live_check_dims(const vg_media *m, int w, int h, char *err, size_t errlen);

/* ---- media_fdio.c: reading a local file through a descriptor (never by name). */

/* A custom AVIOContext reading fd with pread() at its own position (the descriptor's offset is
 * never used); owned: fd is closed by media_fdio_close. icb (copied; optional) is asked before
 * each read, as libavformat's protocols ask theirs. Returns 0 or AVERROR(ENOMEM). */
int media_fdio_open(int fd, int owned, const AVIOInterruptCB *icb, AVIOContext **out);
/* Whether pb was made by media_fdio_open (and must be closed by media_fdio_close). */
int media_fdio_is_ours(const AVIOContext *pb);
/* Frees *pb (its buffer, and its descriptor when owned) and sets it to NULL; NULL is a no-op. */
void media_fdio_close(AVIOContext **pb);

/* ---- media_decode.c: the pull decoder and the one PTS -> seconds conversion. */

/* Sees m->pkt, a packet of the video stream, before the decoder does; may set m->dec->skip_frame.
 */
typedef void (*media_packet_fn)(void *ctx, vg_media *m);

/* The next decoded frame into m->frame (the caller unreferences it): 0, VG_EPIPE at the end, or an
 * error with a sentence in err. on_packet (optional) sees every video packet read. */
int media_decode_next(vg_media *m, media_packet_fn on_packet, void *ctx, char *err, size_t errlen);

/* ticks of the video stream's time base in seconds (a duration: no origin). */
double media_ticks_seconds(const vg_media *m, int64_t ticks);

/* A presentation timestamp in seconds from the input's origin: (pts - origin) x time_base; NAN when
 * pts or the origin is unknown. The only PTS -> seconds conversion of the pipeline. */
double media_pts_seconds(const vg_media *m, int64_t pts);

/* m->frame's time (media_pts_seconds of its best-effort timestamp), NAN without one. The first
 * timestamp decoded becomes the origin when the container declares no start. */
double media_frame_seconds(vg_media *m);

/* ---- media_conv.c: conversion to RGB and the conversion workers. */

/* Frees cv's swscale context and buffer and zeroes it (a zeroed converter is ready for use). */
void media_converter_free(converter *cv);
/* f to RGB24 at its own size, then copied or resized into dst (dw x dh, tightly packed). */
int media_convert_frame(converter *cv, const AVFrame *f, uint8_t *dst, int dw, int dh, char *err,
                        size_t errlen);

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

/* How many workers convert nframes frames of w x h: half the CPUs (1 to MAX_WORKERS), at most
 * nframes, fewer when their frames would exceed half of VG_MEDIA_FRAME_BUDGET. */
int media_pool_workers(int nframes, int w, int h);
/* Starts workers converting to dw x dh. On failure nothing is left running. */
int media_pool_start(conv_pool *pool, int workers, int dw, int dh, char *err, size_t errlen);
/* Hands a new reference to m->frame to the workers, to be written at dst; waits while the queue is
 * full (VG_ECANCELED when m's stop flag is set meanwhile). A worker's error is not returned here.
 */
int media_pool_submit(conv_pool *pool, vg_media *m, uint8_t *dst, char *err, size_t errlen);
/* Ends and joins the workers after the queued frames (abandon: skipping them); returns the workers'
 * first error unless abandoned. */
int media_pool_finish(conv_pool *pool, int abandon, char *err, size_t errlen);

#endif
