/*
 * avlog.c: routes FFmpeg's log messages into vg_log. FFmpeg calls the callback from any thread that
 * runs libav* code; vg_log is thread-safe. Lines are accumulated per call with av_log_format_line2,
 * FFmpeg's levels mapped onto syslog's, and the per-frame chatter (verbose and below) dropped
 * before formatting unless vigil itself logs at debug level.
 */
#include "pipeline.h"

#include "common.h"

#include <libavutil/log.h>

static int map_level(int av_level)
{
    if (av_level <= AV_LOG_ERROR)
        return VG_LOG_ERR;
    if (av_level <= AV_LOG_WARNING)
        return VG_LOG_WARNING;
    if (av_level <= AV_LOG_INFO)
        return VG_LOG_INFO;
    return VG_LOG_DEBUG;
}

static void av_callback(void *avcl, int av_level, const char *fmt, va_list ap)
{
    int level = map_level(av_level);
    /* A custom callback sees every level: FFmpeg's trace (the RTSP reply byte by byte) stays out.
     */
    if (av_level > av_log_get_level() || level > vg_log_get_level())
        return;
    /* FFmpeg's INFO is chatty stream description; keep it at debug for the daemon's journal. */
    if (av_level > AV_LOG_WARNING && vg_log_get_level() < VG_LOG_DEBUG)
        return;
    char line[1024];
    int print_prefix = 1;
    if (av_log_format_line2(avcl, av_level, fmt, ap, line, sizeof line, &print_prefix) < 0)
        return;
    vg_log_write(level, "ffmpeg", "%s", line);
}

void vg_pipe_log_init(void)
{
    av_log_set_level(AV_LOG_DEBUG);
    av_log_set_callback(av_callback);
}
