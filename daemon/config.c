/*
 * config.c: vigild's configuration as one table. Each key is one row of `rows[]` below: its name,
 * its type, its bounds, its default (written as in the file), where it is stored in
 * vg_daemon_config (offsetof), whether SIGHUP applies it live, and a sentence for --help. Every
 * function that deals with keys walks the table: the defaults (each row's default parsed like a
 * file line), `key = value` from the file and from --set, formatting values for --check-config and
 * --help, and comparing and copying live keys on a reload. Adding a key is a struct field, a row
 * and its paragraph in systemd/vigild.conf (a unit test checks the file against the table).
 *
 * Cross-key rules (derived socket URLs, default_max_new_tokens capped by max_new_tokens_limit,
 * media roots resolved with realpath(), the characters of allowed_protocols) stay in
 * vg_daemon_config_finish.
 *
 * Thread: the loop thread at start-up and on SIGHUP (the file is small; reading it is the one piece
 * of file I/O the loop thread does, and only on an operator's signal). Pure except for
 * vg_daemon_config_load (reads the file) and vg_daemon_config_finish (realpath() of the media
 * roots). The table is constant.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "daemon.h"

#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef VG_DEFAULT_MODEL_DIR
#define VG_DEFAULT_MODEL_DIR "models/demo"
#endif
#ifndef VG_DEFAULT_WWW_DIR
#define VG_DEFAULT_WWW_DIR "daemon/www"
#endif

/* ===================================================================================================
 * The table.
 */
typedef struct cfg_row {
    const char *name;
    size_t off;       /* offsetof(vg_daemon_config, field) */
    size_t size;      /* sizeof the field (a string's capacity) */
    size_t count_off; /* VG_CFG_TYPE_PATHS: offsetof the int that counts the paths */
    vg_daemon_config_type type;
    double min, max; /* inclusive bounds of numbers */
    const char *const *choices;
    const char *def; /* the default, written as in the file */
    int live;
    const char *desc;
} cfg_row;

/* The field's name is the key; _Generic refuses to compile a row whose C type does not match.
 * (Left unformatted: clang-format splits the _Generic association and the braces of each row.) */
/* clang-format off */
#define FIELD(f, ctype)                                                                            \
    .name = #f, .off = offsetof(vg_daemon_config, f),                                              \
    .size = _Generic(((vg_daemon_config *)0)->f, ctype: sizeof(((vg_daemon_config *)0)->f))
#define ROW(f, ctype, t, lo, hi, d, l, text)                                                       \
    {FIELD(f, ctype), .type = t, .min = lo, .max = hi, .def = d, .live = l, .desc = text}
#define K_STRING(f, d, l, text)         ROW(f, char *, VG_CFG_TYPE_STRING, 0, 0, d, l, text)
#define K_INT(f, lo, hi, d, l, text)    ROW(f, int, VG_CFG_TYPE_INT, lo, hi, d, l, text)
#define K_LONG(f, lo, hi, d, l, text)   ROW(f, long, VG_CFG_TYPE_LONG, lo, hi, d, l, text)
#define K_SIZE(f, lo, hi, d, l, text)   ROW(f, size_t, VG_CFG_TYPE_SIZE, lo, hi, d, l, text)
#define K_DOUBLE(f, lo, hi, d, l, text) ROW(f, double, VG_CFG_TYPE_DOUBLE, lo, hi, d, l, text)
#define K_BOOL(f, d, l, text)           ROW(f, int, VG_CFG_TYPE_BOOL, 0, 1, d, l, text)
#define K_MODE(f, d, l, text)           ROW(f, int, VG_CFG_TYPE_MODE, 0, 0777, d, l, text)
#define K_LEVEL(f, d, l, text)          ROW(f, int, VG_CFG_TYPE_LOG_LEVEL, 3, 7, d, l, text)
#define K_ENUM(f, ch, d, l, text)                                                                  \
    {FIELD(f, char *), .type = VG_CFG_TYPE_ENUM, .choices = ch, .def = d, .live = l, .desc = text}
#define K_PATHS(f, n, d, l, text)                                                                  \
    {FIELD(f, char(*)[VG_CFG_STR]), .count_off = offsetof(vg_daemon_config, n),                    \
     .type = VG_CFG_TYPE_PATHS, .max = VG_CFG_MAX_ROOTS, .def = d, .live = l, .desc = text}
/* clang-format on */
#define LIVE    1
#define RESTART 0

static const char *const weight_types[] = {"auto", "f32", "bf16", "q8_0", NULL};
static const char *const mqtt_protocols[] = {"5", "3.1.1", NULL};

/* In the order --check-config prints and --help lists. */
static const cfg_row rows[] = {
    K_STRING(model_dir, VG_DEFAULT_MODEL_DIR, RESTART,
             "The Qwen3-VL checkpoint directory (Hugging Face layout: config.json, "
             "model.safetensors, tokenizer.json, ...), loaded once at start."),
    K_ENUM(weight_type, weight_types, "auto", RESTART,
           "The weight type the model is loaded in; auto keeps the checkpoint's own."),
    K_STRING(runtime_dir, "/run/vigil", RESTART,
             "Sockets and the lock file (systemd: RuntimeDirectory=vigil)."),
    K_STRING(state_dir, "/var/lib/vigil", RESTART,
             "The job journal and the stream logs (systemd: StateDirectory=vigil)."),
    K_STRING(cmd_url, "", RESTART,
             "Command socket (REQ/REP, JSON requests); empty: ipc://<runtime_dir>/vigil.cmd."),
    K_STRING(events_url, "", RESTART,
             "Event socket (PUB); empty: ipc://<runtime_dir>/vigil.events."),
    K_STRING(tcp_cmd_url, "", RESTART,
             "An extra TCP command listener (tcp://HOST:PORT); none when empty."),
    K_STRING(tcp_events_url, "", RESTART,
             "An extra TCP event listener (tcp://HOST:PORT); none when empty."),
    K_BOOL(allow_remote, "no", RESTART,
           "Lets the TCP listeners use non-loopback addresses (TCP has no authentication or "
           "encryption)."),
    K_MODE(socket_mode, "0660", RESTART,
           "Permissions of the ipc:// socket files (octal), applied after bind."),
    K_LEVEL(log_level, "info", LIVE,
            "Messages at this level and more severe ones are logged (--check-config prints the "
            "number, 3 to 7)."),
    K_SIZE(max_message_size, 256, 64L << 20, "1M", LIVE,
           "Largest request message in bytes; the transport refuses larger ones."),
    K_INT(max_queued_jobs, 1, 100000, "16", LIVE,
          "Jobs queued or running at once; more asks get the error `busy`."),
    K_INT(max_concurrent_decodes, 1, 64, "2", RESTART,
          "Decode threads: how many videos are decoded at the same time."),
    K_INT(inference_threads, 0, 1024, "0", RESTART,
          "BLAS threads of the inference thread; 0 = all online CPUs."),
    K_INT(max_new_tokens_limit, 1, 1 << 20, "4096", LIVE,
          "Ceiling for a request's max_new_tokens."),
    K_INT(default_max_new_tokens, 1, 1 << 20, "1024", LIVE,
          "Token budget of a request that gives none (at most max_new_tokens_limit)."),
    K_DOUBLE(job_deadline_s, 0.1, 1e7, "600", LIVE,
             "Wall-clock deadline of a job in seconds (ceiling and default); a job past it fails "
             "with code deadline."),
    K_DOUBLE(result_ttl_s, 0, 1e9, "86400", LIVE,
             "How long finished results stay retrievable with `job`, also across restarts, in "
             "seconds."),
    K_INT(max_frames_limit, 2, 100000, "768", LIVE,
          "Ceiling for a request's frame count (nframes, max_frames)."),
    K_LONG(max_pixels_limit, 1024, 1L << 34, "16777216", LIVE,
           "Ceiling for a request's per-frame max_pixels."),
    K_STRING(allowed_protocols, "http,https", LIVE,
             "URL schemes that may be fetched, comma-separated; file: URLs count as paths."),
    K_INT(max_streams, 0, 1024, "8", LIVE,
          "Streams watched at once; more watches get the error `busy`."),
    K_DOUBLE(stream_stall_timeout_s, 0.2, 3600, "5", LIVE,
             "A stream that delivers no frame for this long (seconds) is stalled and reconnected."),
    K_INT(stream_max_new_tokens, 1, 1 << 16, "64", LIVE,
          "Token budget of each standing-question answer."),
    K_INT(stream_event_confirm, 1, 100, "2", LIVE,
          "Answers that must state a moment present before it is part of a stream event."),
    K_DOUBLE(stream_event_min_duration_s, 0, 3600, "1", LIVE,
             "Stream events shorter than this (seconds) are never published."),
    K_DOUBLE(stream_event_hold_s, 0, 3600, "2", LIVE,
             "Seconds of stream without the event, confirmed by the answers, before `ended`."),
    K_DOUBLE(stream_event_merge_gap_s, 0, 3600, "3", LIVE,
             "Stream events separated by less than this (seconds) are one event."),
    K_INT(stream_log_max_records, 100, 1 << 30, "100000", LIVE,
          "Records kept in each stream's log (for streams watched after a reload)."),
    K_STRING(http_url, "", RESTART,
             "The HTTP door (http://HOST:PORT or https://HOST:PORT: OpenAI-compatible chat "
             "completions, REST, SSE, /metrics, the web page); none when empty. Loopback only "
             "unless allow_remote."),
    K_STRING(http_tls_cert, "", RESTART, "PEM certificate chain of an https:// http_url."),
    K_STRING(http_tls_key, "", RESTART, "PEM private key of an https:// http_url."),
    K_STRING(http_token_file, "", RESTART,
             "A file holding the bearer token every HTTP request but /health must carry "
             "(Authorization: Bearer TOKEN); none when empty."),
    K_INT(http_max_connections, 1, 100000, "1024", RESTART,
          "Open HTTP connections at once; requests on more get 503."),
    K_SIZE(http_max_upload, 1024, 4L << 30, "64M", LIVE,
           "Largest chat completion body in bytes (inline base64 videos and frames are spooled "
           "to <state_dir>/http-spool); other HTTP bodies are limited by max_message_size."),
    K_DOUBLE(http_timeout_s, 0.5, 3600, "30", RESTART,
             "Seconds a client has to send a request's headers and body; slower ones are cut."),
    K_STRING(http_www_dir, VG_DEFAULT_WWW_DIR, RESTART,
             "The web page's files (index.html, app.js, style.css), read once at start and served "
             "at /; empty: no page."),
    K_INT(stream_snapshots_max, 0, 100000, "100", LIVE,
          "JPEG snapshots of `started` events kept per stream, in memory (for streams watched "
          "after a reload); 0: none."),
    K_STRING(
        mqtt_url, "", RESTART,
        "The MQTT bridge's broker (mqtt://HOST[:PORT], default port 1883, or mqtts:// for TLS, "
        "default port 8883); none when empty."),
    K_ENUM(mqtt_protocol, mqtt_protocols, "5", RESTART, "MQTT protocol version."),
    K_STRING(mqtt_client_id, "", RESTART, "MQTT client id; empty: vigild-<hostname>."),
    K_STRING(mqtt_prefix, "vigil/", RESTART,
             "Prefix of every topic the bridge publishes and of its command topics."),
    K_STRING(mqtt_username, "", RESTART, "MQTT user name; none when empty."),
    K_STRING(mqtt_password_file, "", RESTART,
             "A file holding the MQTT password (read at start); none when empty."),
    K_STRING(mqtt_ca_file, "", RESTART,
             "mqtts://: PEM CA certificates the broker is checked against; empty: the system's."),
    K_STRING(mqtt_cert_file, "", RESTART, "mqtts://: PEM client certificate; none when empty."),
    K_STRING(mqtt_key_file, "", RESTART, "mqtts://: PEM private key of mqtt_cert_file."),
    K_INT(mqtt_keepalive_s, 5, 3600, "30", RESTART, "MQTT keepalive interval in seconds."),
    K_INT(mqtt_queue_max, 1, 10000000, "10000", RESTART,
          "QoS 1 messages (events, job states) kept until the broker acknowledges them; beyond "
          "it the oldest are dropped (counted; stream events are replayed from the stream's log)."),
    K_SIZE(mqtt_queue_max_bytes, 1024, 4L << 30, "16M", RESTART,
           "Bytes of those messages kept at most."),
    K_STRING(mqtt_discovery_prefix, "homeassistant", RESTART,
             "Home Assistant MQTT discovery prefix; no discovery messages when empty."),
    K_STRING(mqtt_frigate_questions, "", RESTART,
             "Questions asked about each Frigate review's clip when it ends, separated by '|'; "
             "no Frigate consumer when empty."),
    K_STRING(mqtt_frigate_url, "", RESTART,
             "Frigate's base URL (http://frigate:5000): clips are fetched from "
             "<url>/api/<camera>/start/<start>/end/<end>/clip.mp4."),
    K_STRING(mqtt_frigate_topic, "frigate/reviews", RESTART, "Frigate's review topic."),
    K_STRING(cluster_url, "", RESTART,
             "Cluster mode: the NATS JetStream server(s) (nats://HOST[:PORT], comma-separated, "
             "or tls:// for TLS); one independent node when empty."),
    K_STRING(cluster_node, "", RESTART,
             "This node's name in the cluster; empty: <hostname>-<pid>."),
    K_STRING(cluster_username, "", RESTART, "NATS user name; none when empty."),
    K_STRING(cluster_password_file, "", RESTART,
             "A file holding the NATS password (read at start); none when empty."),
    K_STRING(cluster_creds_file, "", RESTART,
             "A NATS credentials file (user JWT and nkey seed); none when empty."),
    K_STRING(cluster_ca_file, "", RESTART,
             "tls://: PEM CA certificates the server is checked against; empty: the system's."),
    K_STRING(cluster_cert_file, "", RESTART, "tls://: PEM client certificate; none when empty."),
    K_STRING(cluster_key_file, "", RESTART, "tls://: PEM private key of cluster_cert_file."),
    K_INT(cluster_max_jobs, 1, 64, "1", RESTART,
          "Clip jobs this node pulls from the cluster's queue and runs at once (a busy node does "
          "not fetch)."),
    K_DOUBLE(cluster_ack_wait_s, 1, 3600, "30", RESTART,
             "Seconds without a sign of progress after which a clip job is redelivered to another "
             "node (progress is marked every third of it)."),
    K_DOUBLE(cluster_lease_ttl_s, 1, 3600, "10", RESTART,
             "Seconds a node's lease on a live stream lasts without renewal (renewed every third "
             "of it); the bucket's TTL, set by the first node that creates it."),
    K_PATHS(media_roots, n_media_roots, "", LIVE,
            "Directories whose files may be asked about (absolute paths, comma-separated, resolved "
            "with realpath()); empty: no local files."),
};

static const cfg_row *find_row(const char *name)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(rows); i++)
        if (!strcmp(rows[i].name, name))
            return &rows[i];
    return NULL;
}

static void *field(const cfg_row *r, vg_daemon_config *c)
{
    return (char *)c + r->off;
}

static const void *cfield(const cfg_row *r, const vg_daemon_config *c)
{
    return (const char *)c + r->off;
}

static int *path_count(const cfg_row *r, vg_daemon_config *c)
{
    return (int *)((char *)c + r->count_off);
}

static int cpath_count(const cfg_row *r, const vg_daemon_config *c)
{
    return *(const int *)((const char *)c + r->count_off);
}

/* ===================================================================================================
 * Parsing one value.
 */
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

/* Comma-separated absolute paths into a local list first, so that a bad list changes nothing. */
static int parse_paths(const cfg_row *r, vg_daemon_config *c, const char *v)
{
    char list[VG_CFG_MAX_ROOTS][VG_CFG_STR];
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
            if (n >= (int)r->max || len >= VG_CFG_STR || p[0] != '/')
                return -1;
            memcpy(list[n], p, len);
            list[n][len] = 0;
            n++;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    char(*dst)[VG_CFG_STR] = field(r, c);
    for (int i = 0; i < n; i++)
        memcpy(dst[i], list[i], strlen(list[i]) + 1);
    *path_count(r, c) = n;
    return 0;
}

static int parse_mode(const char *v, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long m = strtol(v, &end, 8);
    if (errno || end == v || *end || m < lo || m > hi)
        return -1;
    *out = (int)m;
    return 0;
}

static int parse_choice(const char *const *choices, const char *v, char *dst, size_t cap)
{
    for (const char *const *ch = choices; *ch; ch++)
        if (!strcmp(*ch, v) && strlen(v) < cap) {
            memcpy(dst, v, strlen(v) + 1);
            return 0;
        }
    return -1;
}

static int parse_string(const char *v, char *dst, size_t cap)
{
    size_t n = strlen(v);
    if (n >= cap)
        return -1;
    memcpy(dst, v, n + 1);
    return 0;
}

/* Stores v into r's field of c; -1 (nothing stored) when v is not a value of the row. */
static int parse_row(const cfg_row *r, vg_daemon_config *c, const char *v)
{
    void *f = field(r, c);
    long l;
    double d;
    int i;
    switch (r->type) {
    case VG_CFG_TYPE_STRING:
        return parse_string(v, f, r->size);
    case VG_CFG_TYPE_ENUM:
        return parse_choice(r->choices, v, f, r->size);
    case VG_CFG_TYPE_INT:
    case VG_CFG_TYPE_LONG:
    case VG_CFG_TYPE_SIZE:
        if (parse_long(v, (long)r->min, (long)r->max, &l) < 0)
            return -1;
        if (r->type == VG_CFG_TYPE_INT)
            *(int *)f = (int)l; /* fits: the bounds of an int row are ints */
        else if (r->type == VG_CFG_TYPE_LONG)
            *(long *)f = l;
        else
            *(size_t *)f = (size_t)l; /* not negative: the bounds of a size row are >= 0 */
        return 0;
    case VG_CFG_TYPE_DOUBLE:
        if (parse_double(v, r->min, r->max, &d) < 0)
            return -1;
        *(double *)f = d;
        return 0;
    case VG_CFG_TYPE_BOOL:
        return parse_bool(v, f);
    case VG_CFG_TYPE_MODE:
        return parse_mode(v, (long)r->min, (long)r->max, f);
    case VG_CFG_TYPE_LOG_LEVEL:
        if ((i = vg_log_parse_level(v)) < 0)
            return -1;
        *(int *)f = i;
        return 0;
    case VG_CFG_TYPE_PATHS:
        return parse_paths(r, c, v);
    }
    return -1;
}

/* ===================================================================================================
 * Describing and formatting.
 */
static const char *type_name(vg_daemon_config_type t)
{
    switch (t) {
    case VG_CFG_TYPE_STRING:
        return "string";
    case VG_CFG_TYPE_ENUM:
        return "enum";
    case VG_CFG_TYPE_INT:
    case VG_CFG_TYPE_LONG:
        return "integer";
    case VG_CFG_TYPE_SIZE:
        return "size";
    case VG_CFG_TYPE_DOUBLE:
        return "number";
    case VG_CFG_TYPE_BOOL:
        return "bool";
    case VG_CFG_TYPE_MODE:
        return "octal mode";
    case VG_CFG_TYPE_LOG_LEVEL:
        return "log level";
    case VG_CFG_TYPE_PATHS:
        return "path list";
    }
    return "?";
}

/* What the row accepts, as a phrase that completes "expected ...". */
static void expect_text(const cfg_row *r, char *buf, size_t cap)
{
    size_t n;
    switch (r->type) {
    case VG_CFG_TYPE_STRING:
        snprintf(buf, cap, "text of at most %zu bytes", r->size - 1);
        return;
    case VG_CFG_TYPE_ENUM:
        n = (size_t)snprintf(buf, cap, "one of");
        for (const char *const *ch = r->choices; *ch && n < cap; ch++)
            n += (size_t)snprintf(buf + n, cap - n, "%s %s", ch == r->choices ? "" : ",", *ch);
        return;
    case VG_CFG_TYPE_INT:
    case VG_CFG_TYPE_LONG:
        snprintf(buf, cap, "an integer from %ld to %ld (suffixes K, M, G)", (long)r->min,
                 (long)r->max);
        return;
    case VG_CFG_TYPE_SIZE:
        snprintf(buf, cap, "a size in bytes from %ld to %ld (suffixes K, M, G)", (long)r->min,
                 (long)r->max);
        return;
    case VG_CFG_TYPE_DOUBLE:
        snprintf(buf, cap, "a number from %g to %g", r->min, r->max);
        return;
    case VG_CFG_TYPE_BOOL:
        snprintf(buf, cap, "yes or no (also true/false, on/off, 1/0)");
        return;
    case VG_CFG_TYPE_MODE:
        snprintf(buf, cap, "an octal file mode from %04lo to %04lo", (long)r->min, (long)r->max);
        return;
    case VG_CFG_TYPE_LOG_LEVEL:
        snprintf(buf, cap, "err, warning, notice, info or debug (or %ld to %ld)", (long)r->min,
                 (long)r->max);
        return;
    case VG_CFG_TYPE_PATHS:
        snprintf(buf, cap, "at most %ld comma-separated absolute paths", (long)r->max);
        return;
    }
    snprintf(buf, cap, "?");
}

/* r's value in c as the file writes it (what --check-config prints). */
static void format_row(const cfg_row *r, const vg_daemon_config *c, char *buf, size_t cap)
{
    const void *f = cfield(r, c);
    switch (r->type) {
    case VG_CFG_TYPE_STRING:
    case VG_CFG_TYPE_ENUM:
        snprintf(buf, cap, "%s", (const char *)f);
        return;
    case VG_CFG_TYPE_INT:
    case VG_CFG_TYPE_LOG_LEVEL:
        snprintf(buf, cap, "%d", *(const int *)f);
        return;
    case VG_CFG_TYPE_LONG:
        snprintf(buf, cap, "%ld", *(const long *)f);
        return;
    case VG_CFG_TYPE_SIZE:
        snprintf(buf, cap, "%zu", *(const size_t *)f);
        return;
    case VG_CFG_TYPE_DOUBLE:
        snprintf(buf, cap, "%g", *(const double *)f);
        return;
    case VG_CFG_TYPE_BOOL:
        snprintf(buf, cap, "%s", *(const int *)f ? "yes" : "no");
        return;
    case VG_CFG_TYPE_MODE:
        snprintf(buf, cap, "%04o", (unsigned)*(const int *)f);
        return;
    case VG_CFG_TYPE_PATHS: {
        const char(*list)[VG_CFG_STR] = f;
        size_t n = 0;
        buf[0] = 0;
        for (int i = 0; i < cpath_count(r, c) && n < cap; i++)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? "," : "", list[i]);
        return;
    }
    }
    snprintf(buf, cap, "?");
}

/* Big enough for every formatted value: a full path list with its commas. */
#define VALUE_CAP (VG_CFG_MAX_ROOTS * VG_CFG_STR + VG_CFG_MAX_ROOTS)

static void describe(const cfg_row *r, const vg_daemon_config *c, vg_daemon_config_key *k,
                     char *expect, size_t ecap, char *value, size_t vcap)
{
    expect_text(r, expect, ecap);
    if (c)
        format_row(r, c, value, vcap);
    *k = (vg_daemon_config_key){
        .name = r->name,
        .type = r->type,
        .type_name = type_name(r->type),
        .min = r->min,
        .max = r->type == VG_CFG_TYPE_STRING || r->type == VG_CFG_TYPE_ENUM ? (double)(r->size - 1)
                                                                            : r->max,
        .choices = r->choices,
        .default_value = r->def,
        .expect = expect,
        .value = c ? value : NULL,
        .live = r->live,
        .description = r->desc,
    };
}

/* ===================================================================================================
 * The public functions.
 */
static int set_row(const cfg_row *r, vg_daemon_config *c, const char *v, char *err, size_t errlen)
{
    if (parse_row(r, c, v) == 0)
        return 0;
    char expect[160];
    expect_text(r, expect, sizeof expect);
    return vg_fail(err, errlen, VG_EINVAL, "bad value '%s' for %s: expected %s", v, r->name,
                   expect);
}

void vg_daemon_config_defaults(vg_daemon_config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < VG_ARRAY_LEN(rows); i++) {
        int rc = set_row(&rows[i], c, rows[i].def, NULL, 0);
        VG_ASSERT(rc == 0); /* a default its own row refuses; the unit tests catch it first */
    }
}

int vg_daemon_config_set(vg_daemon_config *c, const char *key, const char *v, char *err,
                         size_t errlen)
{
    const cfg_row *r = find_row(key);
    if (!r)
        return vg_fail(err, errlen, VG_ENOENT, "unknown key '%s'", key);
    return set_row(r, c, v, err, errlen);
}

void vg_daemon_config_foreach(const vg_daemon_config *c, vg_daemon_config_key_cb cb, void *opaque)
{
    _Static_assert(VALUE_CAP < 65536, "the value buffer lives on the stack");
    char expect[160], value[VALUE_CAP];
    for (size_t i = 0; i < VG_ARRAY_LEN(rows); i++) {
        vg_daemon_config_key k;
        describe(&rows[i], c, &k, expect, sizeof expect, value, sizeof value);
        cb(&k, opaque);
    }
}

int vg_daemon_config_key_is_live(const char *key)
{
    const cfg_row *r = find_row(key);
    return r ? r->live : VG_ENOENT;
}

static int rows_equal(const cfg_row *r, const vg_daemon_config *a, const vg_daemon_config *b)
{
    const void *fa = cfield(r, a), *fb = cfield(r, b);
    switch (r->type) {
    case VG_CFG_TYPE_STRING:
    case VG_CFG_TYPE_ENUM:
        return !strcmp(fa, fb);
    case VG_CFG_TYPE_PATHS: {
        const char(*la)[VG_CFG_STR] = fa, (*lb)[VG_CFG_STR] = fb;
        if (cpath_count(r, a) != cpath_count(r, b))
            return 0;
        for (int i = 0; i < cpath_count(r, a); i++)
            if (strcmp(la[i], lb[i]))
                return 0;
        return 1;
    }
    default:
        return !memcmp(fa, fb, r->size); /* scalars; doubles are bounded, never NaN */
    }
}

static void copy_row(const cfg_row *r, vg_daemon_config *dst, const vg_daemon_config *src)
{
    memcpy(field(r, dst), cfield(r, src), r->size);
    if (r->type == VG_CFG_TYPE_PATHS)
        *path_count(r, dst) = cpath_count(r, src);
}

int vg_daemon_config_apply_live(vg_daemon_config *cur, const vg_daemon_config *next,
                                vg_daemon_config_change_cb cb, void *opaque)
{
    char expect[160], value[VALUE_CAP];
    int restart = 0;
    for (size_t i = 0; i < VG_ARRAY_LEN(rows); i++) {
        const cfg_row *r = &rows[i];
        if (rows_equal(r, cur, next))
            continue;
        vg_daemon_config_key k;
        describe(r, next, &k, expect, sizeof expect, value, sizeof value);
        int rc = cb ? cb(&k, next, opaque) : 0;
        if (!r->live)
            restart++;
        else if (rc == 0)
            copy_row(r, cur, next);
    }
    return restart;
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
