/*
 * media_conv.c: decoded frames to resized RGB. A converter turns a frame into RGB24 at its own size
 * with libswscale (the frame's own matrix and range, swscale's default bicubic flags as the ffmpeg
 * CLI uses them) and then resizes it with vg_resize_rgb(). The conversion pool runs converters on
 * worker threads (half the CPUs, 1 to MAX_WORKERS) so that converting overlaps decoding.
 *
 * Invariants: the decoding thread hands each sampled frame (a new reference, no copy) to a bounded
 * queue; each worker owns its converter and writes only the output slot named in its job. The
 * first error wins and makes the workers skip the remaining frames; closing the queue drains it and
 * ends them, and media_pool_finish joins them before returning.
 *
 * Threads: media_pool_start / submit / finish run on the decoding thread; conv_worker on the
 * pool's threads, which share only the queue, the atomic failure flag and the first error under
 * a mutex. A converter used outside the pool (vg_media_next_frame's) belongs to the vg_media's
 * thread.
 */
#include "media_internal.h"

#include "common.h"

#include <libavutil/cpu.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void media_converter_free(converter *cv)
{
    sws_freeContext(cv->sws);
    av_free(cv->full);
    memset(cv, 0, sizeof *cv);
}

/* Converts f to RGB24 at its own size (cv->full, 64-byte aligned rows, as the ffmpeg CLI's frames
 * have them, so that swscale takes the same code path) with the frame's colour matrix and range,
 * then copies or resizes it into dst (dw x dh, tightly packed). */
int media_convert_frame(converter *cv, const AVFrame *f, uint8_t *dst, int dw, int dh, char *err,
                        size_t errlen)
{
    int r = media_check_dims(f->width, f->height, "a decoded frame", err, errlen);
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
            int r = media_convert_frame(&cv, j->frame, j->dst, pool->dw, pool->dh, e, sizeof e);
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
    media_converter_free(&cv);
    return NULL;
}

int media_pool_workers(int nframes, int w, int h)
{
    int cpus = av_cpu_count(); /* honours the affinity mask, unlike sysconf */
    int n = cpus >= 4 ? cpus / 2 : 1;
    if (n > MAX_WORKERS)
        n = MAX_WORKERS;
    /* Each worker holds a full-size RGB frame and its two queued frames: half the budget. */
    size_t fit = VG_MEDIA_FRAME_BUDGET / 2 / (3 * media_frame_bytes(w, h));
    if ((size_t)n > fit)
        n = (int)fit;
    return VG_MAX(1, VG_MIN(n, nframes));
}

int media_pool_start(conv_pool *pool, int workers, int dw, int dh, char *err, size_t errlen)
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
int media_pool_submit(conv_pool *pool, vg_media *m, uint8_t *dst, char *err, size_t errlen)
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
        if (r != VG_ETIMEDOUT || media_stop_requested(m) || atomic_load(&pool->failed)) {
            av_frame_free(&j->frame);
            free(j);
            if (media_stop_requested(m))
                return vg_fail(err, errlen, VG_ECANCELED, "decoding '%.200s' was cancelled.",
                               m->url);
            return 0; /* the workers' error is reported by pool_finish */
        }
    }
}

/* Ends the workers after they converted (or, after an error, skipped) every frame; returns their
 * first error. */
int media_pool_finish(conv_pool *pool, int abandon, char *err, size_t errlen)
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
