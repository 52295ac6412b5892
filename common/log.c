/*
 * log.c: levelled logging. The level is an atomic read before anything is formatted; lines go to
 * the installed sink or to stderr with a syslog "<N>" prefix, which journald turns into priorities.
 * Thread-safe: the sink is swapped under a mutex, and each line is written with one write call.
 */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static _Atomic int g_level = VG_LOG_INFO;
static pthread_mutex_t g_sink_lock = PTHREAD_MUTEX_INITIALIZER;
static vg_log_sink g_sink;
static void *g_sink_opaque;

void vg_log_set_level(int level)
{
    if (level < VG_LOG_ERR)
        level = VG_LOG_ERR;
    if (level > VG_LOG_DEBUG)
        level = VG_LOG_DEBUG;
    atomic_store_explicit(&g_level, level, memory_order_relaxed);
}

int vg_log_get_level(void)
{
    return atomic_load_explicit(&g_level, memory_order_relaxed);
}

int vg_log_parse_level(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {
        {"err", VG_LOG_ERR},      {"error", VG_LOG_ERR},     {"warning", VG_LOG_WARNING},
        {"warn", VG_LOG_WARNING}, {"notice", VG_LOG_NOTICE}, {"info", VG_LOG_INFO},
        {"debug", VG_LOG_DEBUG},
    };
    if (!name)
        return -1;
    if (name[0] >= '3' && name[0] <= '7' && name[1] == '\0')
        return name[0] - '0';
    for (size_t i = 0; i < VG_ARRAY_LEN(names); i++)
        if (strcasecmp(name, names[i].name) == 0)
            return names[i].level;
    return -1;
}

void vg_log_set_sink(vg_log_sink sink, void *opaque)
{
    pthread_mutex_lock(&g_sink_lock);
    g_sink = sink;
    g_sink_opaque = opaque;
    pthread_mutex_unlock(&g_sink_lock);
}

void vg_log_writev(int level, const char *module, const char *fmt, va_list ap)
{
    if (level > vg_log_get_level())
        return;
    char msg[2048];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        return;
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        msg[--len] = '\0';
    /* Embedded newlines would start lines without a priority prefix: flatten them. */
    for (size_t i = 0; i < len; i++)
        if (msg[i] == '\n' || msg[i] == '\r')
            msg[i] = ' ';
    if (!module)
        module = "vigil";
    /* No credentials in a log line, whoever wrote it (FFmpeg quotes URLs too). */
    char clean[sizeof msg];
    if ((strstr(msg, "://") && strchr(msg, '@')) || strstr(msg, "Authorization:")) {
        vg_url_redact(msg, clean, sizeof clean);
        memcpy(msg, clean, sizeof msg);
    }

    pthread_mutex_lock(&g_sink_lock);
    vg_log_sink sink = g_sink;
    void *opaque = g_sink_opaque;
    if (sink) {
        sink(level, module, msg, opaque);
        pthread_mutex_unlock(&g_sink_lock);
        return;
    }
    pthread_mutex_unlock(&g_sink_lock);

    char line[2200];
    int ln = snprintf(line, sizeof line, "<%d>%s: %s\n", level, module, msg);
    if (ln < 0)
        return;
    if ((size_t)ln >= sizeof line) {
        ln = sizeof line - 1;
        line[ln - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)ln);
    (void)w;
}

void vg_log_write(int level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vg_log_writev(level, module, fmt, ap);
    va_end(ap);
}
