/*
 * media_live.c: vg_media_next_frame, live reading: the decoder's next frame (media_decode.c),
 * converted and resized with the vg_media's own converter, and its time in seconds from the
 * input's origin (media_pts_seconds, the same origin as vg_media_read_video's timeline).
 *
 * Invariant: m->frame is unreferenced before returning, whatever the outcome; the last time
 * returned is kept so that a frame without a timestamp gets the previous one plus a frame period.
 *
 * Thread: the vg_media's thread (a stream's reader thread in vigild); no worker threads.
 */
#include "media_internal.h"

#include "common.h"

#include <math.h>

int vg_media_next_frame(vg_media *m, int width, int height, uint8_t *rgb, double *pts_seconds,
                        char *err, size_t errlen)
{
    if (!m || !rgb)
        return vg_fail(err, errlen, VG_EINVAL, "vg_media_next_frame needs a media and a buffer.");
    int r = media_check_dims(width, height, "the requested size", err, errlen);
    if (r < 0)
        return r == VG_EMEDIA ? VG_EINVAL : r;
    r = media_decode_next(m, NULL, NULL, err, errlen);
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
