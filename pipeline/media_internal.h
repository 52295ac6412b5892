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

/* ---- media_open.c: opening, interrupts, errors. */
const char *media_averr(int e, char *buf, size_t len);
int media_stop_requested(const vg_media *m);
void media_arm(vg_media *m, int timeout_ms);
void media_disarm(vg_media *m);
int media_map_error(const vg_media *m, int e);
int media_check_dims(int w, int h, const char *what, char *err, size_t errlen);
int media_check_refused(const vg_media *m, char *err, size_t errlen);
void media_close_input(vg_media *m);
int media_open_input(vg_media *m, int expect_stream, char *err, size_t errlen);
int media_rewind(vg_media *m, char *err, size_t errlen);

/* ---- media_decode.c: the pull decoder and frame times. */
void media_classify_packet(vg_media *m);
int media_decode_next(vg_media *m, char *err, size_t errlen);
double media_frame_time(const vg_media *m, int64_t *base);

/* ---- media_conv.c: conversion to RGB and the conversion workers. */
void media_converter_free(converter *cv);
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

int media_pool_workers(int nframes);
int media_pool_start(conv_pool *pool, int workers, int dw, int dh, char *err, size_t errlen);
int media_pool_submit(conv_pool *pool, vg_media *m, uint8_t *dst, char *err, size_t errlen);
int media_pool_finish(conv_pool *pool, int abandon, char *err, size_t errlen);

#endif
