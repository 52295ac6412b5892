/*
 * avlog.c: routes FFmpeg's log messages into vg_log. FFmpeg calls the callback from any thread that
 * runs libav* code; vg_log is thread-safe. Lines are accumulated per call with av_log_format_line2,
 * FFmpeg's levels mapped onto syslog's, and the per-frame chatter (verbose and below) dropped
 * before formatting unless vigil itself logs at debug level.
 *
 * Errors and warnings can be per packet too (a live H.264 stream joined between keyframes: the
 * parser and the probing decoder complain about every packet before the keyframe, hundreds of
 * lines): each message (by its format string) is logged at most RL_BURST times per RL_WINDOW_S
 * seconds, then one line says that the rest are suppressed, and the next one after the window
 * says how many were.
 */
#include "pipeline.h"

#include "common.h"

#include <libavutil/log.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define RL_SLOTS    64
#define RL_BURST    5
#define RL_WINDOW_S 60

/* Per format string (direct-mapped by its address; a collision just restarts the count). */
static struct {
    const char *fmt;
    uint64_t since_ns;
    unsigned count, dropped;
} rl[RL_SLOTS];
static pthread_mutex_t rl_mu = PTHREAD_MUTEX_INITIALIZER;

/* Whether a message with this format may be logged now; *dropped_before: how many like it were
 * suppressed in the window that just ended (to be said first). *last: this is the last one of the
 * burst. */
static int rate_ok(const char *fmt, unsigned *dropped_before, int *last)
{
    uint64_t now = vg_now_ns();
    size_t i = ((uintptr_t)fmt >> 3) % RL_SLOTS;
    int ok;
    pthread_mutex_lock(&rl_mu);
    *dropped_before = 0;
    if (rl[i].fmt != fmt || now - rl[i].since_ns > (uint64_t)RL_WINDOW_S * 1000000000u) {
        if (rl[i].fmt == fmt)
            *dropped_before = rl[i].dropped;
        rl[i].fmt = fmt;
        rl[i].since_ns = now;
        rl[i].count = 0;
        rl[i].dropped = 0;
    }
    ok = ++rl[i].count <= RL_BURST;
    *last = rl[i].count == RL_BURST;
    if (!ok)
        rl[i].dropped++;
    pthread_mutex_unlock(&rl_mu);
    return ok;
}

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
    unsigned dropped = 0;
    int last = 0;
    if (av_level <= AV_LOG_WARNING && !rate_ok(fmt, &dropped, &last))
        return;
    char line[1024];
    int print_prefix = 1;
    if (av_log_format_line2(avcl, av_level, fmt, ap, line, sizeof line, &print_prefix) < 0)
        return;
    if (dropped)
        vg_log_write(level, "ffmpeg", "(%u more messages like the next were suppressed)", dropped);
    if (!last) {
        vg_log_write(level, "ffmpeg", "%s", line);
        return;
    }
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    vg_log_write(level, "ffmpeg", "%s (repeated: more like it are not logged for %d s)", line,
                 RL_WINDOW_S);
}

void vg_pipe_log_init(void)
{
    av_log_set_level(AV_LOG_DEBUG);
    av_log_set_callback(av_callback);
}
