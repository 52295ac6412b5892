/*
 * config.c: vigild's configuration: defaults, the `key = value` file format, command-line
 * overrides (`--set key=value` goes through vg_daemon_config_set), and the final checks.
 *
 * Thread: the loop thread at start-up and on SIGHUP (the file is small; reading it is the one piece
 * of file I/O the loop thread does, and only on an operator's signal). Pure except for
 * vg_daemon_config_load (reads the file) and vg_daemon_config_finish (realpath() of the media
 * roots).
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "daemon.h"

#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef VG_DEFAULT_MODEL_DIR
#define VG_DEFAULT_MODEL_DIR "models/demo"
#endif

void vg_daemon_config_defaults(vg_daemon_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->model_dir, sizeof c->model_dir, "%s", VG_DEFAULT_MODEL_DIR);
    snprintf(c->runtime_dir, sizeof c->runtime_dir, "/run/vigil");
    snprintf(c->state_dir, sizeof c->state_dir, "/var/lib/vigil");
    c->socket_mode = 0660;
    c->log_level = VG_LOG_INFO;
    c->max_message_size = 1 << 20;
    c->max_queued_jobs = 16;
    c->max_concurrent_decodes = 2;
    c->inference_threads = 0;
    c->max_new_tokens_limit = 4096;
    c->default_max_new_tokens = 1024;
    c->job_deadline_s = 600;
    c->result_ttl_s = 86400;
    c->max_frames_limit = 768;
    c->max_pixels_limit = 16384L * 32 * 32;
    c->max_streams = 8;
    c->stream_stall_timeout_s = 5;
    c->stream_max_new_tokens = 64;
    c->stream_log_max_records = 100000;
    snprintf(c->allowed_protocols, sizeof c->allowed_protocols, "http,https");
}

static int parse_long(const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 0);
    if (errno || end == v)
        return -1;
    long mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1024L * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1024L * 1024 * 1024, end++;
    if (*end)
        return -1;
    if (__builtin_mul_overflow(x, mul, &x) || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

static int parse_double(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi))
        return -1;
    *out = x;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "on"))
        return *out = 1, 0;
    if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "off"))
        return *out = 0, 0;
    return -1;
}

static int set_str(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);
    if (n >= cap)
        return -1;
    memcpy(dst, v, n + 1);
    return 0;
}

static int set_roots(vg_daemon_config *c, const char *v)
{
    int n = 0;
    const char *p = v;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && isspace((unsigned char)*p))
            p++, len--;
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        if (len) {
            if (n >= VG_CFG_MAX_ROOTS || len >= VG_CFG_STR || p[0] != '/')
                return -1;
            memcpy(c->media_roots[n], p, len);
            c->media_roots[n][len] = 0;
            n++;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    c->n_media_roots = n;
    return 0;
}

static const char *const all_keys[] = {
    "model_dir",
    "runtime_dir",
    "state_dir",
    "cmd_url",
    "events_url",
    "tcp_cmd_url",
    "tcp_events_url",
    "allow_remote",
    "socket_mode",
    "log_level",
    "max_message_size",
    "max_queued_jobs",
    "max_concurrent_decodes",
    "inference_threads",
    "max_new_tokens_limit",
    "default_max_new_tokens",
    "job_deadline_s",
    "result_ttl_s",
    "max_frames_limit",
    "max_pixels_limit",
    "media_roots",
    "allowed_protocols",
    "max_streams",
    "stream_stall_timeout_s",
    "stream_max_new_tokens",
    "stream_log_max_records",
    NULL,
};

const char *const *vg_daemon_config_keys(void)
{
    return all_keys;
}

static const char *const live_keys[] = {
    "log_level",
    "max_message_size",
    "max_queued_jobs",
    "max_new_tokens_limit",
    "default_max_new_tokens",
    "job_deadline_s",
    "result_ttl_s",
    "max_frames_limit",
    "max_pixels_limit",
    "media_roots",
    "allowed_protocols",
    "max_streams",
    "stream_stall_timeout_s",
    "stream_max_new_tokens",
    "stream_log_max_records",
};

int vg_daemon_config_key_is_live(const char *key)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(live_keys); i++)
        if (!strcmp(key, live_keys[i]))
            return 1;
    return 0;
}

int vg_daemon_config_set(vg_daemon_config *c, const char *key, const char *v, char *err,
                         size_t errlen)
{
    long l;
    double d;
    int bad = 0;
#define STR(name)                                                                                  \
    if (!strcmp(key, #name)) {                                                                     \
        bad = set_str(c->name, sizeof c->name, v);                                                 \
        goto done;                                                                                 \
    }
#define INT(name, lo, hi)                                                                          \
    if (!strcmp(key, #name)) {                                                                     \
        bad = parse_long(v, lo, hi, &l);                                                           \
        if (!bad)                                                                                  \
            c->name = (int)l;                                                                      \
        goto done;                                                                                 \
    }
#define DBL(name, lo, hi)                                                                          \
    if (!strcmp(key, #name)) {                                                                     \
        bad = parse_double(v, lo, hi, &d);                                                         \
        if (!bad)                                                                                  \
            c->name = d;                                                                           \
        goto done;                                                                                 \
    }
    STR(model_dir)
    STR(runtime_dir)
    STR(state_dir)
    STR(cmd_url)
    STR(events_url)
    STR(tcp_cmd_url)
    STR(tcp_events_url)
    STR(allowed_protocols)
    INT(max_queued_jobs, 1, 100000)
    INT(max_concurrent_decodes, 1, 64)
    INT(inference_threads, 0, 1024)
    INT(max_new_tokens_limit, 1, 1 << 20)
    INT(default_max_new_tokens, 1, 1 << 20)
    INT(max_frames_limit, 2, 100000)
    DBL(job_deadline_s, 0.1, 1e7)
    DBL(result_ttl_s, 0, 1e9)
    INT(max_streams, 0, 1024)
    DBL(stream_stall_timeout_s, 0.2, 3600)
    INT(stream_max_new_tokens, 1, 1 << 16)
    INT(stream_log_max_records, 100, 1 << 30)
    if (!strcmp(key, "max_pixels_limit")) {
        bad = parse_long(v, 1024, 1L << 34, &l);
        if (!bad)
            c->max_pixels_limit = l;
        goto done;
    }
    if (!strcmp(key, "max_message_size")) {
        bad = parse_long(v, 256, 64L << 20, &l);
        if (!bad)
            c->max_message_size = (size_t)l;
        goto done;
    }
    if (!strcmp(key, "allow_remote")) {
        bad = parse_bool(v, &c->allow_remote);
        goto done;
    }
    if (!strcmp(key, "socket_mode")) {
        char *end;
        errno = 0;
        long m = strtol(v, &end, 8);
        bad = errno || end == v || *end || m < 0 || m > 0777;
        if (!bad)
            c->socket_mode = (int)m;
        goto done;
    }
    if (!strcmp(key, "log_level")) {
        int lv = vg_log_parse_level(v);
        bad = lv < 0;
        if (!bad)
            c->log_level = lv;
        goto done;
    }
    if (!strcmp(key, "media_roots")) {
        bad = set_roots(c, v);
        goto done;
    }
#undef STR
#undef INT
#undef DBL
    return vg_fail(err, errlen, VG_ENOENT, "unknown key '%s'", key);
done:
    if (bad)
        return vg_fail(err, errlen, VG_EINVAL, "bad value '%s' for '%s'", v, key);
    return 0;
}

int vg_daemon_config_parse(vg_daemon_config *c, const char *text, size_t len, char *err,
                           size_t errlen)
{
    size_t pos = 0;
    int lineno = 0;
    char line[4096];
    while (pos < len) {
        lineno++;
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n >= sizeof line)
            return vg_fail(err, errlen, VG_EINVAL, "line %d: longer than %zu bytes", lineno,
                           sizeof line - 1);
        memcpy(line, start, n);
        line[n] = 0;
        if (memchr(line, 0, n))
            return vg_fail(err, errlen, VG_EINVAL, "line %d: NUL byte", lineno);
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (!*p || *p == '#')
            continue;
        char *eq = strchr(p, '=');
        if (!eq)
            return vg_fail(err, errlen, VG_EINVAL, "line %d: expected 'key = value'", lineno);
        char *kend = eq;
        while (kend > p && isspace((unsigned char)kend[-1]))
            kend--;
        *kend = 0;
        char *v = eq + 1;
        while (isspace((unsigned char)*v))
            v++;
        char *vend = v + strlen(v);
        while (vend > v && isspace((unsigned char)vend[-1]))
            vend--;
        *vend = 0;
        if (vend - v >= 2 && v[0] == '"' && vend[-1] == '"') {
            v++;
            vend[-1] = 0;
        }
        char e2[512];
        int rc = vg_daemon_config_set(c, p, v, e2, sizeof e2);
        if (rc < 0)
            return vg_fail(err, errlen, rc, "line %d: %s", lineno, e2);
    }
    return 0;
}

int vg_daemon_config_load(vg_daemon_config *c, const char *path, char *err, size_t errlen)
{
    char *data;
    size_t len;
    char e2[512];
    int rc = vg_read_file(path, 1 << 20, &data, &len, e2, sizeof e2);
    if (rc < 0)
        return vg_fail(err, errlen, rc, "%s", e2); /* names the file */
    rc = vg_daemon_config_parse(c, data, len, e2, sizeof e2);
    free(data);
    if (rc < 0)
        return vg_fail(err, errlen, rc, "%s: %s", path, e2);
    return 0;
}

int vg_daemon_config_finish(vg_daemon_config *c, char *err, size_t errlen)
{
    if (!c->runtime_dir[0] || !c->state_dir[0])
        return vg_fail(err, errlen, VG_EINVAL, "runtime_dir and state_dir must be set");
    if (!c->cmd_url[0] && snprintf(c->cmd_url, sizeof c->cmd_url, "ipc://%s/vigil.cmd",
                                   c->runtime_dir) >= (int)sizeof c->cmd_url)
        return vg_fail(err, errlen, VG_EINVAL, "runtime_dir is too long");
    if (!c->events_url[0] && snprintf(c->events_url, sizeof c->events_url, "ipc://%s/vigil.events",
                                      c->runtime_dir) >= (int)sizeof c->events_url)
        return vg_fail(err, errlen, VG_EINVAL, "runtime_dir is too long");
    if (c->default_max_new_tokens > c->max_new_tokens_limit)
        c->default_max_new_tokens = c->max_new_tokens_limit;
    for (int i = 0; i < c->n_media_roots; i++) {
        char real[PATH_MAX];
        if (!realpath(c->media_roots[i], real))
            return vg_fail(err, errlen, VG_ENOENT, "media root '%s': %s", c->media_roots[i],
                           strerror(errno));
        if (strlen(real) >= VG_CFG_STR)
            return vg_fail(err, errlen, VG_EINVAL, "media root '%s' is too long", real);
        memcpy(c->media_roots[i], real, strlen(real) + 1); /* fits: checked just above */
    }
    for (const char *p = c->allowed_protocols; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == ',' || *p == '+' || *p == '-' || *p == '.'))
            return vg_fail(err, errlen, VG_EINVAL, "allowed_protocols: '%c' is not allowed", *p);
    return 0;
}
