/*
 * http.c: the HTTP door (http.h, docs/http.md).
 *
 * One libwebsockets context on vigild's loop (LWS_SERVER_OPTION_LIBUV with the loop passed in
 * foreign_loops), HTTP/1.1 only (ALPN http/1.1 under TLS). Each request gets a `conn` from the
 * moment its headers are in until the connection closes; responses are queued in the conn and
 * written from the writable callback, one lws_write per callback. A conn that waits for records
 * (a chat completion waiting for its job, an SSE feed) is subscribed by topic prefix and fed from
 * the bus sink.
 */
#define _DEFAULT_SOURCE /* strncasecmp, getrandom */
#include "http.h"
#include "jsonget.h"
#include "strbuf.h"
#include "http_chat.h"

#include "common.h"
#include "pipeline.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MOD          "http"
#define WRITE_CHUNK  16384
#define SSE_OUT_MAX  (4u << 20) /* a feed further behind than this is cut (PUB semantics) */
#define PATH_MAX_LEN 512

enum method { M_GET = 1, M_POST, M_DELETE, M_OTHER };
enum body_kind { B_NONE, B_CHAT, B_ASK, B_WATCH, B_CANCEL };
enum sub_kind { S_NONE, S_CHAT, S_FEED };

typedef struct conn conn;
struct conn {
    struct lws *wsi; /* NULL once the connection closed (an orphan waiting for its spool work) */
    vg_http *h;
    conn *prev, *next; /* h->conns */
    int method;
    enum body_kind body_kind;
    char path[PATH_MAX_LEN];
    vg_buf body;
    size_t body_max;
    int body_refused; /* the response is out; the rest of the body is ignored */
    double deadline_ms;
    /* response */
    unsigned char *hdr;
    size_t hdr_len;
    int hdr_sent, responded, final, streaming, close_after;
    vg_buf out;
    size_t out_off;
    /* subscription */
    enum sub_kind sub;
    char topic[160]; /* prefix */
    int feed_ends_on_done;
    /* chat */
    int chat_stream, include_usage, max_tokens, work_pending;
    char job[VG_ID_MAX + 1];
    char model[128];
    char spool[VG_CFG_STR + 64];
    double created;
    int n_tokens;
    cJSON *pending_ask; /* the native ask, waiting for the spool work */
    cJSON *pending_req; /* the parsed body whose base64 the spool work reads */
};

typedef struct psd {
    conn *c;
} psd;

typedef struct stream_stat {
    struct stream_stat *next;
    char name[VG_ID_MAX + 1];
    unsigned long long started, ended, answers, errors;
    double answer_s;
} stream_stat;

struct vg_http {
    uv_loop_t *loop;
    const vg_daemon_config *cfg;
    const vg_dispatch *dispatch;
    vg_bus *bus;
    int sink;
    struct lws_context *ctx;
    uv_timer_t heartbeat; /* SSE comments, so that idle feeds stay open through proxies */
    char iface[256];
    int port, tls;
    char token[512];
    size_t token_len;
    char spool_dir[VG_CFG_STR + 32];
    conn *conns;
    int n_conns, stopping;
    int n_wsi;      /* libwebsockets connections, the listener included */
    int n_admitted; /* connections served (a request of theirs got past the limit) */
    double started_ms;
    /* metrics fed by the bus sink */
    unsigned long long jobs_done[4]; /* completed, failed, cancelled, other */
    double stage_s[4];               /* decode, encode, prefill, generate */
    unsigned long long tokens, video_tokens, prompt_tokens;
    unsigned long long requests, responses[6]; /* by status class 1xx..5xx (index 1..5) */
    stream_stat *streams;
    struct {
        const char *name, *type;
        char *data; /* read at start; NULL when absent */
        size_t len;
    } www[3];
};

/* ===================================================================================================
 * Small helpers.
 */
/* Runs a native request (the one request path) and returns the parsed reply, or NULL (memory). */
static cJSON *native(vg_http *h, cJSON *req)
{
    char *s = cJSON_PrintUnformatted(req);
    if (!s)
        return NULL;
    size_t n = 0;
    char *r = vg_dispatch_request(h->dispatch, s, strlen(s), &n);
    free(s);
    if (!r)
        return NULL;
    cJSON *o = cJSON_ParseWithLength(r, n);
    free(r);
    return o;
}

static cJSON *native_op(vg_http *h, const char *op)
{
    cJSON *q = cJSON_CreateObject();
    if (!q)
        return NULL;
    cJSON_AddNumberToObject(q, "v", VG_PROTO_VERSION);
    cJSON_AddStringToObject(q, "op", op);
    return q;
}

static int reply_ok(const cJSON *r)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"));
}

/* The HTTP status of a native error code. */
static int status_of(const char *code)
{
    static const struct {
        const char *code;
        int status;
    } map[] = {
        {VG_WIRE_BAD_JSON, 400},   {VG_WIRE_BAD_REQUEST, 400}, {VG_WIRE_BAD_VERSION, 400},
        {VG_WIRE_UNKNOWN_OP, 400}, {VG_WIRE_TOO_LARGE, 413},   {VG_WIRE_LIMIT, 400},
        {VG_WIRE_BUSY, 429},       {VG_WIRE_NOT_FOUND, 404},   {VG_WIRE_FORBIDDEN, 403},
        {VG_WIRE_CONFLICT, 409},   {VG_WIRE_SHUTTING, 503},    {"media", 400},
        {"deadline", 504},         {"timeout", 504},           {"limit", 400},
        {"cancelled", 499},        {"shutdown", 503},          {"interrupted", 503},
    };
    for (size_t i = 0; code && i < VG_ARRAY_LEN(map); i++)
        if (!strcmp(map[i].code, code))
            return map[i].status;
    return 500;
}

static const char *error_type(int status)
{
    return status == 401   ? "authentication_error"
           : status == 403 ? "permission_error"
           : status == 404 ? "not_found_error"
           : status == 429 ? "rate_limit_error"
           : status < 500  ? "invalid_request_error"
                           : "server_error";
}

/* ===================================================================================================
 * Responses.
 */
static void conn_writable(conn *c)
{
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
}

/* Prepares the header block: status, type, length (LWS_ILLEGAL_HTTP_CONTENT_LEN: until close). */
static int make_headers(conn *c, int status, const char *type, lws_filepos_t len, int sse)
{
    unsigned char tmp[LWS_PRE + 2048];
    unsigned char *start = tmp + LWS_PRE, *p = start, *end = tmp + sizeof tmp - 1;
    if (lws_add_http_common_headers(c->wsi, (unsigned)status, type, len, &p, end))
        return -1;
    static const char *const hdrs[][2] = {{"cache-control:", "no-store"},
                                          {"x-content-type-options:", "nosniff"}};
    for (size_t i = 0; i < VG_ARRAY_LEN(hdrs); i++)
        if (lws_add_http_header_by_name(c->wsi, (const unsigned char *)hdrs[i][0],
                                        (const unsigned char *)hdrs[i][1], (int)strlen(hdrs[i][1]),
                                        &p, end))
            return -1;
    if (sse && lws_add_http_header_by_name(c->wsi, (const unsigned char *)"x-accel-buffering:",
                                           (const unsigned char *)"no", 2, &p, end))
        return -1;
    if ((sse || c->close_after) &&
        lws_add_http_header_by_name(c->wsi, (const unsigned char *)"connection:",
                                    (const unsigned char *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_http_header(c->wsi, &p, end))
        return -1;
    size_t n = (size_t)(p - start);
    free(c->hdr);
    if (!(c->hdr = malloc(LWS_PRE + n)))
        return -1;
    memcpy(c->hdr + LWS_PRE, start, n);
    c->hdr_len = n;
    c->hdr_sent = 0;
    return 0;
}

static void respond(conn *c, int status, const char *type, const char *body, size_t len)
{
    if (c->responded || !c->wsi)
        return;
    c->responded = 1;
    c->h->responses[VG_MIN(status / 100, 5)]++;
    if (c->body_kind != B_NONE && !c->body_refused && c->method == M_POST &&
        lws_hdr_total_length(c->wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 && c->body.len == 0 &&
        status >= 400)
        c->close_after = 1; /* an unread body would be taken for the next request */
    if (make_headers(c, status, type, len ? (lws_filepos_t)len : 0, 0) < 0 ||
        (len && vg_buf_add(&c->out, body, len) < 0)) {
        c->close_after = 1;
    }
    c->final = 1;
    conn_writable(c);
}

static void respond_json(conn *c, int status, cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        respond(c, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    respond(c, status, "application/json", s, strlen(s));
    free(s);
}

/* {"error":{"code","message","type"}}: the native error object plus OpenAI's `type`. */
static void respond_error(conn *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void respond_error(conn *c, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", error_type(status));
    respond_json(c, status, o);
}

/* A native reply as the HTTP response: 200 (or ok_status) for ok, the mapped status otherwise. */
static void respond_native(conn *c, cJSON *r, int ok_status)
{
    if (!r) {
        respond_error(c, 500, VG_WIRE_INTERNAL, "out of memory");
        return;
    }
    if (reply_ok(r)) {
        respond_json(c, ok_status, r);
        return;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
    int status = status_of(vg_jstr(e, "code"));
    cJSON_AddStringToObject((cJSON *)e, "type", error_type(status));
    respond_json(c, status, r);
}

static void sse_begin(conn *c)
{
    if (c->responded || !c->wsi)
        return;
    c->responded = c->streaming = 1;
    c->h->responses[2]++;
    if (make_headers(c, 200, "text/event-stream", LWS_ILLEGAL_HTTP_CONTENT_LEN, 1) < 0)
        c->close_after = c->final = 1;
    /* A feed lives as long as the client reads it. */
    lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
    conn_writable(c);
}

/* Queues one SSE frame; a client more than SSE_OUT_MAX behind is cut. */
static void sse_send(conn *c, const char *event, const char *id, const char *data, size_t len)
{
    if (c->final)
        return;
    if (c->out.len - c->out_off > SSE_OUT_MAX) {
        vg_log(VG_LOG_WARNING, MOD, "an SSE client is too far behind; closing it");
        c->final = c->close_after = 1;
        conn_writable(c);
        return;
    }
    int rc = 0;
    if (event)
        rc |= vg_buf_addf(&c->out, "event: %s\n", event);
    if (id)
        rc |= vg_buf_addf(&c->out, "id: %s\n", id);
    rc |= vg_buf_add(&c->out, "data: ", 6);
    rc |= vg_buf_add(&c->out, data, len); /* JSON without raw newlines */
    rc |= vg_buf_add(&c->out, "\n\n", 2);
    if (rc)
        c->final = c->close_after = 1;
    conn_writable(c);
}

/* Every 15 s an SSE comment on each open feed: proxies keep idle feeds open, and a client that
 * vanished without a FIN is noticed at the write. */
static void on_heartbeat(uv_timer_t *t)
{
    vg_http *h = t->data;
    for (conn *c = h->conns; c; c = c->next) {
        if (!c->wsi || !c->streaming || c->final)
            continue;
        if (vg_buf_add(&c->out, ": keep-alive\n\n", 14) == 0)
            conn_writable(c);
    }
}

static void sse_end(conn *c)
{
    c->final = 1;
    conn_writable(c);
}

/* ===================================================================================================
 * Connections.
 */
static void conn_unlink_spool(conn *c)
{
    if (c->spool[0]) {
        unlink(c->spool);
        c->spool[0] = 0;
    }
}

/* Forgets the request: subscription, buffers, response state. */
static void conn_reset(conn *c)
{
    conn_unlink_spool(c);
    vg_buf_free(&c->body);
    vg_buf_free(&c->out);
    free(c->hdr);
    cJSON_Delete(c->pending_ask);
    cJSON_Delete(c->pending_req);
    struct lws *wsi = c->wsi;
    vg_http *h = c->h;
    conn *prev = c->prev, *next = c->next;
    int work = c->work_pending;
    memset(c, 0, sizeof *c);
    c->wsi = wsi;
    c->h = h;
    c->prev = prev;
    c->next = next;
    c->work_pending = work;
}

static conn *conn_new(vg_http *h, struct lws *wsi)
{
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->wsi = wsi;
    c->h = h;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    return c;
}

static void conn_free(conn *c)
{
    vg_http *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->n_conns--;
    c->wsi = NULL;
    conn_reset(c);
    free(c);
}

/* The client went away: a chat completion's job is cancelled (nobody will read its answer). */
static void conn_closed(conn *c)
{
    vg_http *h = c->h;
    if (c->sub == S_CHAT && c->job[0] && !h->stopping) {
        cJSON *q = native_op(h, "cancel");
        if (q) {
            cJSON_AddStringToObject(q, "job", c->job);
            cJSON_Delete(native(h, q));
            cJSON_Delete(q);
            vg_log(VG_LOG_INFO, MOD, "job %s: the HTTP client went away; cancelled", c->job);
        }
    }
    c->sub = S_NONE;
    c->wsi = NULL;
    if (c->work_pending)
        return; /* the spool work frees it */
    conn_free(c);
}

/* ===================================================================================================
 * Chat completions (OpenAI-compatible).
 */
typedef struct spool_work {
    uv_work_t w;
    conn *c;
    char *b64; /* points into c->pending_req (kept alive while work_pending) */
    size_t b64_len;
    vg_chat_frame *frames; /* or: JPEG frames written as one video (pipeline.h vg_frames_to_video);
                            * their base64 inside c->pending_req */
    int n_frames;
    double frames_fps;
    size_t max;
    char path[VG_CFG_STR + 64];
    int rc;
    char err[256];
} spool_work;

/* Frames: each decoded from base64, their total within the limit, written as one video. */
static void spool_frames(spool_work *sw)
{
    vg_image_blob *blobs = calloc((size_t)sw->n_frames, sizeof *blobs);
    size_t total = 0;
    int i = 0;
    if (!blobs) {
        sw->rc = VG_ENOMEM;
        snprintf(sw->err, sizeof sw->err, "out of memory decoding the frames");
        return;
    }
    for (; i < sw->n_frames; i++) {
        unsigned char *d = malloc(sw->frames[i].len / 4 * 3 + 4);
        long n = d ? vg_b64_decode(sw->frames[i].p, sw->frames[i].len, d) : -2;
        blobs[i].data = d;
        blobs[i].len = n > 0 ? (size_t)n : 0;
        if (n < 0) {
            sw->rc = n == -2 ? VG_ENOMEM : VG_EINVAL;
            snprintf(sw->err, sizeof sw->err, "frame %d: %s", i,
                     n == -2 ? "out of memory" : "a character outside base64");
            i++;
            goto done;
        }
        total += (size_t)n;
        if (total > sw->max) {
            sw->rc = VG_ERANGE;
            snprintf(sw->err, sizeof sw->err, "the decoded frames pass the limit of %zu bytes",
                     sw->max);
            i++;
            goto done;
        }
    }
    sw->rc =
        vg_frames_to_video(blobs, sw->n_frames, sw->frames_fps, sw->path, sw->err, sizeof sw->err);
    if (sw->rc == VG_EMEDIA)
        sw->rc = VG_EINVAL;
done:
    for (int k = 0; k < i; k++)
        free((void *)blobs[k].data);
    free(blobs);
}

static void spool_run(uv_work_t *w)
{
    spool_work *sw = w->data;
    if (sw->n_frames) {
        spool_frames(sw);
        return;
    }
    size_t cap = sw->b64_len / 4 * 3 + 4;
    unsigned char *d = malloc(cap);
    if (!d) {
        sw->rc = VG_ENOMEM;
        snprintf(sw->err, sizeof sw->err, "out of memory decoding the video");
        return;
    }
    long n = vg_b64_decode(sw->b64, sw->b64_len, d);
    if (n < 0) {
        sw->rc = VG_EINVAL;
        snprintf(sw->err, sizeof sw->err, "the video's base64 has a character outside base64");
    } else if ((size_t)n > sw->max) {
        sw->rc = VG_ERANGE;
        snprintf(sw->err, sizeof sw->err, "the decoded video has %ld bytes; the limit is %zu", n,
                 sw->max);
    } else if (!vg_looks_like_video(d, (size_t)n)) {
        sw->rc = VG_EINVAL;
        snprintf(sw->err, sizeof sw->err,
                 "the base64 data is not a video (no MP4, Matroska/WebM, AVI, MPEG-TS/PS, Ogg or "
                 "FLV header)");
    } else {
        int fd = open(sw->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        size_t off = 0;
        while (fd >= 0 && off < (size_t)n) {
            ssize_t k = write(fd, d + off, (size_t)n - off);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                break;
            off += (size_t)k;
        }
        if (fd < 0 || off < (size_t)n) {
            sw->rc = -(errno ? errno : EIO);
            snprintf(sw->err, sizeof sw->err, "cannot spool the video: %s", strerror(errno));
            if (fd >= 0)
                unlink(sw->path);
        }
        if (fd >= 0)
            close(fd);
    }
    free(d);
}

static void chat_start_job(conn *c, cJSON *ask);
static void chat_record(conn *c, const char *kind, const char *payload, size_t len);

static void spool_done(uv_work_t *w, int status)
{
    spool_work *sw = w->data;
    conn *c = sw->c;
    c->work_pending = 0;
    if (!c->wsi || c->h->stopping) {
        if (!sw->rc)
            unlink(sw->path);
        if (!c->wsi)
            conn_free(c);
        free(sw->frames);
        free(sw);
        return;
    }
    vg_buf_free(&c->body); /* the base64 is no longer needed */
    cJSON_Delete(c->pending_req);
    c->pending_req = NULL;
    cJSON *ask = c->pending_ask;
    c->pending_ask = NULL;
    if (sw->rc < 0 || status < 0) {
        int st = sw->rc == VG_ERANGE ? 413 : sw->rc == VG_EINVAL ? 400 : 500;
        respond_error(c, st,
                      st == 413   ? VG_WIRE_TOO_LARGE
                      : st == 400 ? "bad_video"
                                  : "internal",
                      "%s", sw->err[0] ? sw->err : "the upload failed");
        cJSON_Delete(ask);
    } else {
        snprintf(c->spool, sizeof c->spool, "%s", sw->path);
        cJSON_AddStringToObject(ask, "video", sw->path);
        chat_start_job(c, ask);
    }
    free(sw->frames);
    free(sw);
}

/* Inline video or frames: decoded and spooled on the thread pool, then the job starts
 * (spool_done). Takes req, and ch's ask and frames. */
static void chat_spool(conn *c, cJSON *req, vg_chat_req *ch)
{
    vg_http *h = c->h;
    spool_work *sw = calloc(1, sizeof *sw);
    unsigned char rnd[12];
    if (!sw || getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
        free(sw);
        vg_chat_free(ch);
        cJSON_Delete(req);
        respond_error(c, 500, VG_WIRE_INTERNAL, "cannot prepare the upload");
        return;
    }
    char ext[16];
    vg_chat_spool_ext(ch, ext, sizeof ext);
    int o = snprintf(sw->path, sizeof sw->path, "%s/up-", h->spool_dir);
    for (size_t i = 0; i < sizeof rnd; i++)
        o += snprintf(sw->path + o, sizeof sw->path - (size_t)o, "%02x", rnd[i]);
    snprintf(sw->path + o, sizeof sw->path - (size_t)o, ".%s", ext);
    sw->frames = ch->frames; /* taken */
    sw->n_frames = ch->frames ? ch->n_frames : 0;
    sw->frames_fps = ch->frames_fps;
    sw->c = c;
    sw->b64 = (char *)ch->b64;
    sw->b64_len = ch->b64_len;
    sw->max = h->cfg->http_max_upload;
    sw->w.data = sw;
    c->pending_req = req; /* holds the base64 strings the work reads */
    c->pending_ask = ch->ask;
    ch->ask = NULL;
    ch->frames = NULL;
    c->work_pending = 1;
    if (uv_queue_work(h->loop, &sw->w, spool_run, spool_done) < 0) {
        c->work_pending = 0;
        free(sw->frames);
        free(sw);
        respond_error(c, 500, VG_WIRE_INTERNAL, "cannot queue the upload");
    }
}

/* POST /v1/chat/completions: the request becomes a native ask (http_chat.c; its video a path or
 * URL as given, or a spooled file), answered from the job's records (chat_record). */
static void chat_request(conn *c)
{
    vg_http *h = c->h;
    cJSON *req = cJSON_ParseWithLength(c->body.p ? c->body.p : "", c->body.len);
    vg_chat_req ch;
    const char *code = NULL;
    char err[256];
    int st = vg_chat_translate(req, h->cfg->max_frames_limit, h->cfg->default_max_new_tokens, &ch,
                               &code, err, sizeof err);
    if (st) {
        cJSON_Delete(req);
        respond_error(c, st, code, "%s", err);
        return;
    }
    c->max_tokens = ch.max_tokens;
    c->chat_stream = ch.stream;
    c->include_usage = ch.include_usage;
    if (ch.model[0]) {
        snprintf(c->model, sizeof c->model, "%s", ch.model);
    } else {
        cJSON *q = native_op(h, "info"), *info = native(h, q);
        const char *name = vg_jstr(cJSON_GetObjectItemCaseSensitive(info, "model"), "name");
        snprintf(c->model, sizeof c->model, "%s", name ? name : "vigil");
        cJSON_Delete(q);
        cJSON_Delete(info);
    }
    c->created = (double)time(NULL);
    if (ch.url) {
        cJSON *ask = ch.ask;
        ch.ask = NULL;
        cJSON_AddStringToObject(ask, "video", ch.url);
        vg_chat_free(&ch);
        cJSON_Delete(req);
        chat_start_job(c, ask);
        return;
    }
    chat_spool(c, req, &ch); /* takes req, ch's ask and frames */
}

/* Sends the native ask and subscribes to the job's records. Takes ask. */
static void chat_start_job(conn *c, cJSON *ask)
{
    vg_http *h = c->h;
    cJSON *r = native(h, ask);
    cJSON_Delete(ask);
    if (!r || !reply_ok(r)) {
        conn_unlink_spool(c);
        respond_native(c, r, 200);
        return;
    }
    snprintf(c->job, sizeof c->job, "%s", vg_jstr(r, "job") ? vg_jstr(r, "job") : "");
    int existing = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "existing"));
    cJSON_Delete(r);
    c->sub = S_CHAT;
    snprintf(c->topic, sizeof c->topic, "job/%s/", c->job);
    if (existing) {
        /* A job that may have finished already: answer from its stored result. */
        cJSON *q = native_op(h, "job");
        cJSON_AddStringToObject(q, "job", c->job);
        cJSON *jr = native(h, q);
        cJSON_Delete(q);
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(jr, "job");
        const char *st = vg_jstr(j, "state");
        if (st && (!strcmp(st, "completed") || !strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
            char *s = cJSON_PrintUnformatted(j);
            if (s) {
                chat_record(c, "done", s, strlen(s)); /* as if it were live */
                free(s);
            }
        }
        cJSON_Delete(jr);
    }
}

static cJSON *chunk_base(conn *c, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    char id[VG_ID_MAX + 16];
    snprintf(id, sizeof id, "chatcmpl-%s", c->job);
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", c->created);
    cJSON_AddStringToObject(o, "model", c->model);
    return o;
}

static void sse_json(conn *c, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s) {
        sse_send(c, NULL, NULL, s, strlen(s));
        free(s);
    }
}

static cJSON *usage_of(const cJSON *job)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(job, "timings");
    double pt = vg_jnum(t, "prompt_tokens", 0), ct = vg_jnum(job, "n_tokens", 0);
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", pt);
    cJSON_AddNumberToObject(u, "completion_tokens", ct);
    cJSON_AddNumberToObject(u, "total_tokens", pt + ct);
    return u;
}

static cJSON *vigil_ext(const cJSON *job)
{
    cJSON *v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "job", vg_jstr(job, "job") ? vg_jstr(job, "job") : "");
    cJSON_AddStringToObject(v, "state", vg_jstr(job, "state") ? vg_jstr(job, "state") : "");
    const char *keys[] = {"events", "timings", "error"};
    for (size_t i = 0; i < VG_ARRAY_LEN(keys); i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(job, keys[i]);
        if (x)
            cJSON_AddItemToObject(v, keys[i], cJSON_Duplicate(x, 1));
    }
    return v;
}

/* One record of the chat's job (token or done). Called by the bus sink and for a job that had
 * finished before the request. */
static void chat_record(conn *c, const char *kind, const char *payload, size_t len)
{
    if (!strcmp(kind, "token")) {
        c->n_tokens++;
        if (!c->chat_stream)
            return;
        cJSON *p = cJSON_ParseWithLength(payload, len);
        const char *t = vg_jstr(p, "text");
        if (!t || (!*t && c->n_tokens > 1)) { /* a stop token's empty text */
            cJSON_Delete(p);
            return;
        }
        if (!c->responded)
            sse_begin(c);
        cJSON *o = chunk_base(c, "chat.completion.chunk");
        cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c0 = cJSON_CreateObject();
        cJSON_AddItemToArray(ch, c0);
        cJSON_AddNumberToObject(c0, "index", 0);
        cJSON *d = cJSON_AddObjectToObject(c0, "delta");
        if (c->n_tokens == 1)
            cJSON_AddStringToObject(d, "role", "assistant");
        cJSON_AddStringToObject(d, "content", t ? t : "");
        cJSON_AddNullToObject(c0, "finish_reason");
        cJSON_Delete(p);
        sse_json(c, o);
        return;
    }
    if (strcmp(kind, "done"))
        return;
    c->sub = S_NONE;
    conn_unlink_spool(c);
    cJSON *job = cJSON_ParseWithLength(payload, len);
    const char *state = vg_jstr(job, "state");
    int ok = state && !strcmp(state, "completed");
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(job, "error");
    double nt = vg_jnum(job, "n_tokens", 0);
    const char *finish = nt >= c->max_tokens ? "length" : "stop";
    if (!ok && !c->responded) {
        /* Nothing was streamed yet: a proper HTTP error. */
        const char *code = vg_jstr(err, "code");
        cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
        int st = status_of(code ? code : "failed");
        cJSON_AddStringToObject(e, "code", code ? code : "failed");
        cJSON_AddStringToObject(
            e, "message", vg_jstr(err, "message") ? vg_jstr(err, "message") : "the job failed");
        cJSON_AddStringToObject(e, "type", error_type(st));
        cJSON_AddItemToObject(o, "vigil", vigil_ext(job));
        cJSON_Delete(job);
        respond_json(c, st, o);
        return;
    }
    const char *text = vg_jstr(job, "text");
    if (!c->chat_stream) {
        cJSON *o = chunk_base(c, "chat.completion");
        cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c0 = cJSON_CreateObject();
        cJSON_AddItemToArray(ch, c0);
        cJSON_AddNumberToObject(c0, "index", 0);
        cJSON *msg = cJSON_AddObjectToObject(c0, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content", text ? text : "");
        cJSON_AddStringToObject(c0, "finish_reason", finish);
        cJSON_AddItemToObject(o, "usage", usage_of(job));
        cJSON_AddItemToObject(o, "vigil", vigil_ext(job));
        cJSON_Delete(job);
        respond_json(c, 200, o);
        return;
    }
    if (!c->responded)
        sse_begin(c);
    if (!ok) {
        cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
        const char *code = vg_jstr(err, "code");
        cJSON_AddStringToObject(e, "code", code ? code : "failed");
        cJSON_AddStringToObject(
            e, "message", vg_jstr(err, "message") ? vg_jstr(err, "message") : "the job failed");
        cJSON_AddStringToObject(e, "type", "server_error");
        cJSON_AddItemToObject(o, "vigil", vigil_ext(job));
        sse_json(c, o);
    } else {
        cJSON *o = chunk_base(c, "chat.completion.chunk");
        cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c0 = cJSON_CreateObject();
        cJSON_AddItemToArray(ch, c0);
        cJSON_AddNumberToObject(c0, "index", 0);
        cJSON_AddObjectToObject(c0, "delta");
        cJSON_AddStringToObject(c0, "finish_reason", finish);
        cJSON_AddItemToObject(o, "vigil", vigil_ext(job));
        sse_json(c, o);
        if (c->include_usage) {
            o = chunk_base(c, "chat.completion.chunk");
            cJSON_AddArrayToObject(o, "choices");
            cJSON_AddItemToObject(o, "usage", usage_of(job));
            sse_json(c, o);
        }
    }
    cJSON_Delete(job);
    sse_send(c, NULL, NULL, "[DONE]", 6);
    sse_end(c);
}

/* ===================================================================================================
 * The bus sink: metrics, chat completions, SSE feeds.
 */
static stream_stat *stream_stat_of(vg_http *h, const char *name, size_t n)
{
    for (stream_stat *s = h->streams; s; s = s->next)
        if (strlen(s->name) == n && !memcmp(s->name, name, n))
            return s;
    if (n > VG_ID_MAX)
        return NULL;
    stream_stat *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    memcpy(s->name, name, n);
    s->next = h->streams;
    h->streams = s;
    return s;
}

static void observe(vg_http *h, const char *topic, const char *payload, size_t len)
{
    const char *kind = strrchr(topic, '/');
    if (!kind)
        return;
    kind++;
    if (!strncmp(topic, "job/", 4) && !strcmp(kind, "done")) {
        cJSON *j = cJSON_ParseWithLength(payload, len);
        const char *st = vg_jstr(j, "state");
        int k = !st                        ? 3
                : !strcmp(st, "completed") ? 0
                : !strcmp(st, "failed")    ? 1
                : !strcmp(st, "cancelled") ? 2
                                           : 3;
        h->jobs_done[k]++;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "timings");
        static const char *const stages[] = {"decode_ms", "encode_ms", "prefill_ms", "generate_ms"};
        for (int i = 0; i < 4; i++)
            h->stage_s[i] += vg_jnum(t, stages[i], 0) / 1000.0;
        h->tokens += (unsigned long long)vg_jnum(j, "n_tokens", 0);
        h->prompt_tokens += (unsigned long long)vg_jnum(t, "prompt_tokens", 0);
        h->video_tokens += (unsigned long long)vg_jnum(t, "video_tokens", 0);
        cJSON_Delete(j);
    } else if (!strncmp(topic, "stream/", 7)) {
        const char *name = topic + 7, *slash = strchr(name, '/');
        if (!slash)
            return;
        stream_stat *s = stream_stat_of(h, name, (size_t)(slash - name));
        if (!s)
            return;
        if (!strcmp(kind, "answer")) {
            cJSON *a = cJSON_ParseWithLength(payload, len);
            s->answers++;
            s->answer_s += (vg_jnum(a, "prefill_ms", 0) + vg_jnum(a, "generate_ms", 0)) / 1000.0;
            cJSON_Delete(a);
        } else if (!strcmp(kind, "event")) {
            cJSON *e = cJSON_ParseWithLength(payload, len);
            const char *ev = vg_jstr(e, "event");
            if (ev && !strcmp(ev, "started"))
                s->started++;
            else if (ev && !strcmp(ev, "ended"))
                s->ended++;
            cJSON_Delete(e);
        } else if (!strcmp(kind, "error")) {
            s->errors++;
        }
    }
}

static void feed_record(conn *c, const char *topic, const char *kind, const char *payload,
                        size_t len)
{
    char id[32] = "";
    if (!strncmp(topic, "stream/", 7)) {
        cJSON *p = cJSON_ParseWithLength(payload, len);
        double seq = vg_jnum(p, "seq", -1);
        if (seq >= 0)
            snprintf(id, sizeof id, "%.0f", seq);
        cJSON_Delete(p);
    }
    if (!c->responded)
        sse_begin(c);
    sse_send(c, kind, id[0] ? id : NULL, payload, len);
    if (c->feed_ends_on_done && !strcmp(kind, "done")) {
        c->sub = S_NONE;
        sse_end(c);
    }
}

static void http_sink(const char *topic, const char *payload, size_t len, void *opaque)
{
    vg_http *h = opaque;
    observe(h, topic, payload, len);
    const char *kind = strrchr(topic, '/');
    kind = kind ? kind + 1 : topic;
    for (conn *c = h->conns, *nx; c; c = nx) {
        nx = c->next;
        if (c->sub == S_NONE || !c->wsi || strncmp(topic, c->topic, strlen(c->topic)))
            continue;
        if (c->sub == S_CHAT)
            chat_record(c, kind, payload, len);
        else
            feed_record(c, topic, kind, payload, len);
    }
}

/* ===================================================================================================
 * Metrics (Prometheus text format 0.0.4).
 */
static void metric(vg_buf *b, const char *name, const char *type, const char *help)
{
    vg_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One unlabelled metric per row, read from a field of an `info` object (a boolean as 0/1). */
typedef struct info_metric {
    const char *field, *name, *type, *help;
} info_metric;

static void info_metrics(vg_buf *b, const cJSON *o, const info_metric *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, rows[i].field);
        metric(b, rows[i].name, rows[i].type, rows[i].help);
        vg_buf_addf(b, "%s %.0f\n", rows[i].name,
                    cJSON_IsBool(v) ? (double)cJSON_IsTrue(v) : vg_jnum(o, rows[i].field, 0));
    }
}

static void route_metrics(conn *c)
{
    vg_http *h = c->h;
    vg_buf b = {0};
    cJSON *q = native_op(h, "info");
    cJSON *info = native(h, q);
    cJSON_Delete(q);
    q = native_op(h, "streams");
    cJSON *streams = native(h, q);
    cJSON_Delete(q);
    metric(&b, "vigil_up", "gauge", "1 while vigild answers.");
    vg_buf_addf(&b, "vigil_up 1\n");
    metric(&b, "vigil_uptime_seconds", "gauge", "Seconds since vigild started.");
    vg_buf_addf(&b, "vigil_uptime_seconds %.3f\n", vg_jnum(info, "uptime_s", 0));
    metric(&b, "vigil_jobs_queued", "gauge", "Clip jobs waiting for a worker.");
    vg_buf_addf(&b, "vigil_jobs_queued %.0f\n", vg_jnum(info, "queue_depth", 0));
    metric(&b, "vigil_jobs_running", "gauge", "Clip jobs being worked on.");
    vg_buf_addf(&b, "vigil_jobs_running %.0f\n", vg_jnum(info, "jobs_running", 0));
    metric(&b, "vigil_jobs_retained", "gauge", "Jobs whose results are kept (result_ttl_s).");
    vg_buf_addf(&b, "vigil_jobs_retained %.0f\n", vg_jnum(info, "jobs_retained", 0));
    metric(&b, "vigil_jobs_finished_total", "counter", "Clip jobs finished since start, by state.");
    static const char *const states[] = {"completed", "failed", "cancelled", "other"};
    for (int i = 0; i < 4; i++)
        vg_buf_addf(&b, "vigil_jobs_finished_total{state=\"%s\"} %llu\n", states[i],
                    h->jobs_done[i]);
    metric(&b, "vigil_job_stage_seconds_total", "counter",
           "Seconds finished clip jobs spent in each stage since start.");
    static const char *const stages[] = {"decode", "encode", "prefill", "generate"};
    for (int i = 0; i < 4; i++)
        vg_buf_addf(&b, "vigil_job_stage_seconds_total{stage=\"%s\"} %.6f\n", stages[i],
                    h->stage_s[i]);
    metric(&b, "vigil_tokens_generated_total", "counter",
           "Tokens generated by finished clip jobs since start.");
    vg_buf_addf(&b, "vigil_tokens_generated_total %llu\n", h->tokens);
    metric(&b, "vigil_prompt_tokens_total", "counter",
           "Prompt tokens (video included) of finished clip jobs since start.");
    vg_buf_addf(&b, "vigil_prompt_tokens_total %llu\n", h->prompt_tokens);
    metric(&b, "vigil_video_tokens_total", "counter",
           "Video tokens of finished clip jobs since start.");
    vg_buf_addf(&b, "vigil_video_tokens_total %llu\n", h->video_tokens);
    metric(&b, "vigil_streams", "gauge", "Live streams in the table.");
    vg_buf_addf(&b, "vigil_streams %.0f\n", vg_jnum(info, "streams", 0));
    static const struct {
        const char *field, *name, *help;
    } sm[] = {
        {"frames", "vigil_stream_frames_total", "Frames sampled from the stream."},
        {"pairs", "vigil_stream_pairs_total", "Frame pairs encoded."},
        {"dropped_pairs", "vigil_stream_dropped_pairs_total",
         "Frame pairs dropped because inference fell behind."},
        {"answers", "vigil_stream_answers_total", "Standing-question answers."},
        {"reconnects", "vigil_stream_reconnects_total", "Reconnections of the stream."},
        {"discontinuities", "vigil_stream_discontinuities_total",
         "Jumps of the stream's own clock that stream time was rebased over."},
    };
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(streams, "streams"), *s;
    for (size_t i = 0; i < VG_ARRAY_LEN(sm); i++) {
        metric(&b, sm[i].name, "counter", sm[i].help);
        cJSON_ArrayForEach(s, list)
        {
            vg_buf_addf(&b, "%s{stream=\"%s\"} %.0f\n", sm[i].name,
                        vg_jstr(s, "name") ? vg_jstr(s, "name") : "", vg_jnum(s, sm[i].field, 0));
        }
    }
    metric(&b, "vigil_stream_events_total", "counter",
           "Event transitions published since start, by stream and kind.");
    for (stream_stat *st = h->streams; st; st = st->next) {
        vg_buf_addf(&b, "vigil_stream_events_total{stream=\"%s\",kind=\"started\"} %llu\n",
                    st->name, st->started);
        vg_buf_addf(&b, "vigil_stream_events_total{stream=\"%s\",kind=\"ended\"} %llu\n", st->name,
                    st->ended);
    }
    metric(&b, "vigil_stream_answer_latency_seconds", "summary",
           "Seconds from a round's prefill to its answer (prefill + generate) since start.");
    for (stream_stat *st = h->streams; st; st = st->next) {
        vg_buf_addf(&b, "vigil_stream_answer_latency_seconds_sum{stream=\"%s\"} %.6f\n", st->name,
                    st->answer_s);
        vg_buf_addf(&b, "vigil_stream_answer_latency_seconds_count{stream=\"%s\"} %llu\n", st->name,
                    st->answers);
    }
    const cJSON *ipc = cJSON_GetObjectItemCaseSensitive(info, "ipc");
    static const info_metric im[] = {
        {"received", "vigil_ipc_requests_total", "counter",
         "Requests received on the command socket."},
        {"published", "vigil_ipc_published_total", "counter",
         "Records published on the event socket."},
        {"dropped_replies", "vigil_ipc_dropped_replies_total", "counter",
         "Replies dropped because their connection went away."},
        {"fd_trips", "vigil_ipc_fd_trips_total", "counter",
         "Times the descriptor guard closed every connection."},
    };
    info_metrics(&b, ipc, im, VG_ARRAY_LEN(im));
    /* The state directory's durability (docs/protocol.md, "Durability"). */
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(info, "state");
    metric(&b, "vigil_journal_failing", "gauge",
           "1 while the job journal cannot be written (results are not durable), else 0.");
    const char *jstate = vg_jstr(sd, "journal");
    vg_buf_addf(&b, "vigil_journal_failing %d\n", jstate && strcmp(jstate, "ok") != 0);
    static const info_metric dm[] = {
        {"undurable_jobs", "vigil_jobs_undurable", "gauge",
         "Finished jobs whose result is not on disk yet."},
        {"pending_records", "vigil_journal_pending_records", "gauge",
         "Journal records waiting in memory for a retry."},
        {"lost_records", "vigil_journal_lost_records_total", "counter",
         "Journal records dropped because too many were waiting."},
        {"stream_logs_failing", "vigil_stream_logs_failing", "gauge",
         "Stream logs that cannot be written."},
    };
    info_metrics(&b, sd, dm, VG_ARRAY_LEN(dm));
    /* The MQTT bridge, when one is configured (info's `mqtt` object). */
    const cJSON *mq = cJSON_GetObjectItemCaseSensitive(info, "mqtt");
    if (cJSON_IsObject(mq)) {
        static const info_metric mm[] = {
            {"connected", "vigil_mqtt_connected", "gauge", "1 while connected to the broker."},
            {"queued", "vigil_mqtt_queued_messages", "gauge",
             "Messages waiting for the broker (QoS 1 queue)."},
            {"published", "vigil_mqtt_published_total", "counter", "Messages published."},
            {"dropped", "vigil_mqtt_dropped_total", "counter",
             "Messages dropped from the full queue (events among them are replayed)."},
            {"replayed", "vigil_mqtt_replayed_total", "counter",
             "Event messages replayed from the stream logs after a reconnect."},
            {"lost", "vigil_mqtt_lost_total", "counter",
             "Event messages that could not be replayed."},
            {"reconnects", "vigil_mqtt_reconnects_total", "counter",
             "Reconnections to the broker."},
            {"command_errors", "vigil_mqtt_command_errors_total", "counter",
             "Commands on .../set topics answered with an error."},
        };
        info_metrics(&b, mq, mm, VG_ARRAY_LEN(mm));
    }
    metric(&b, "vigil_http_requests_total", "counter", "HTTP requests received.");
    vg_buf_addf(&b, "vigil_http_requests_total %llu\n", h->requests);
    metric(&b, "vigil_http_responses_total", "counter", "HTTP responses, by status class.");
    for (int i = 1; i <= 5; i++)
        vg_buf_addf(&b, "vigil_http_responses_total{class=\"%dxx\"} %llu\n", i, h->responses[i]);
    metric(&b, "vigil_http_connections", "gauge", "Open HTTP connections.");
    vg_buf_addf(&b, "vigil_http_connections %d\n", h->n_wsi - 1);
    metric(&b, "vigil_http_requests_in_progress", "gauge", "HTTP requests in progress.");
    vg_buf_addf(&b, "vigil_http_requests_in_progress %d\n", h->n_conns);
    cJSON_Delete(info);
    cJSON_Delete(streams);
    if (!b.p) {
        respond_error(c, 500, VG_WIRE_INTERNAL, "out of memory");
        return;
    }
    respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len);
    vg_buf_free(&b);
}

/* ===================================================================================================
 * Routes.
 */
static int path_is(const char *path, const char *p)
{
    return !strcmp(path, p) || (!strncmp(path, p, strlen(p)) && !strcmp(path + strlen(p), "/"));
}

/* Copies the segment after prefix (up to the next '/' or the end) into out; returns the rest.
 */
static const char *segment(const char *path, const char *prefix, char *out, size_t outlen)
{
    size_t n = strlen(prefix);
    if (strncmp(path, prefix, n))
        return NULL;
    const char *s = path + n, *e = strchr(s, '/');
    size_t k = e ? (size_t)(e - s) : strlen(s);
    if (k == 0 || k >= outlen)
        return NULL;
    memcpy(out, s, k);
    out[k] = 0;
    return e ? e : s + k;
}

static int urlarg(conn *c, const char *name, char *out, int outlen)
{
    char key[64], tmp[256];
    snprintf(key, sizeof key, "%s=", name);
    const char *v = lws_get_urlarg_by_name(c->wsi, key, tmp, (int)sizeof tmp);
    if (!v)
        return 0;
    snprintf(out, (size_t)outlen, "%s", v);
    return 1;
}

static int wants_sse(conn *c)
{
    char acc[256] = "";
    if (lws_hdr_copy(c->wsi, acc, sizeof acc, WSI_TOKEN_HTTP_ACCEPT) <= 0)
        return 0;
    return strstr(acc, "text/event-stream") != NULL;
}

static void route_models(conn *c)
{
    cJSON *q = native_op(c->h, "info");
    cJSON *info = native(c->h, q);
    cJSON_Delete(q);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(info, "model");
    const char *name = vg_jstr(m, "name") ? vg_jstr(m, "name") : "vigil";
    double ctx = vg_jnum(m, "max_position_embeddings", 0);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data"), *e = cJSON_CreateObject();
    cJSON_AddItemToArray(data, e);
    cJSON_AddStringToObject(e, "id", name);
    cJSON_AddStringToObject(e, "object", "model");
    cJSON_AddNumberToObject(e, "created",
                            (double)(time(NULL) - (time_t)vg_jnum(info, "uptime_s", 0)));
    cJSON_AddStringToObject(e, "owned_by", "vigil");
    cJSON_AddNumberToObject(e, "max_model_len", ctx); /* vLLM */
    cJSON *meta = cJSON_AddObjectToObject(e, "meta"); /* llama.cpp */
    cJSON_AddNumberToObject(meta, "n_ctx", ctx);
    cJSON_AddNumberToObject(meta, "n_ctx_train", ctx);
    cJSON_AddNumberToObject(meta, "n_params", vg_jnum(m, "params", 0));
    cJSON_AddNumberToObject(meta, "n_vocab", vg_jnum(m, "vocab_size", 0));
    cJSON_Delete(info);
    respond_json(c, 200, o);
}

static void route_health(conn *c)
{
    cJSON *q = native_op(c->h, "info");
    cJSON *info = native(c->h, q);
    cJSON_Delete(q);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(info, "model");
    int up = info && reply_ok(info) && m && !c->h->stopping;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", up ? "ok" : "unavailable");
    cJSON_AddBoolToObject(o, "loop", 1);
    cJSON_AddBoolToObject(o, "model_loaded", m != NULL);
    cJSON_AddNumberToObject(o, "uptime_s", vg_jnum(info, "uptime_s", 0));
    cJSON_Delete(info);
    respond_json(c, up ? 200 : 503, o);
}

/* A body that must be a JSON object: parsed, or an error response and NULL. */
static cJSON *body_object(conn *c)
{
    cJSON *o = cJSON_ParseWithLength(c->body.p ? c->body.p : "", c->body.len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        respond_error(c, 400, VG_WIRE_BAD_JSON, "the body is not one JSON object");
        return NULL;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(o, "v");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "op");
    return o;
}

static void with_op(cJSON *o, const char *op)
{
    cJSON_AddItemToObject(o, "v", cJSON_CreateNumber(VG_PROTO_VERSION));
    cJSON_AddItemToObject(o, "op", cJSON_CreateString(op));
}

static void route_body(conn *c)
{
    vg_http *h = c->h;
    if (c->body_kind == B_CHAT) {
        chat_request(c);
        return;
    }
    cJSON *o = body_object(c);
    if (!o)
        return;
    with_op(o, c->body_kind == B_ASK ? "ask" : "watch");
    cJSON *r = native(h, o);
    cJSON_Delete(o);
    int existing = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "existing"));
    respond_native(c, r, existing ? 200 : 201);
}

/* Subscribes c to a live feed with prefix topic. */
static void feed(conn *c, const char *topic, int ends_on_done)
{
    c->sub = S_FEED;
    snprintf(c->topic, sizeof c->topic, "%s", topic);
    c->feed_ends_on_done = ends_on_done;
    sse_begin(c);
    sse_send(c, "hello", NULL, "{}", 2); /* the subscription is live from here on */
}

typedef struct events_wait {
    conn *c;
    char name[VG_ID_MAX + 16];
} events_wait;

static void stream_events_reply(conn *c, const char *name, cJSON *r);

static void stream_events_done(char *reply, size_t len, void *opaque)
{
    events_wait *ew = opaque;
    conn *c = ew->c;
    c->work_pending = 0;
    if (!c->wsi) {
        conn_free(c); /* the client went away meanwhile */
    } else {
        cJSON *r = reply ? cJSON_ParseWithLength(reply, len) : NULL;
        stream_events_reply(c, ew->name, r); /* takes r */
    }
    free(reply);
    free(ew);
}

static void route_stream_events(conn *c, const char *name)
{
    char since[32] = "0", limit[32] = "";
    urlarg(c, "since", since, sizeof since);
    urlarg(c, "limit", limit, sizeof limit);
    char last[32] = "";
    if (lws_hdr_custom_copy(c->wsi, last, (int)sizeof last, "last-event-id:", 14) > 0)
        snprintf(since, sizeof since, "%s", last);
    char *end = NULL;
    double s = strtod(since, &end);
    if (end == since || *end || s < 0) {
        respond_error(c, 400, VG_WIRE_BAD_REQUEST, "since must be a sequence number");
        return;
    }
    cJSON *q = native_op(c->h, "events");
    cJSON_AddStringToObject(q, "name", name);
    cJSON_AddNumberToObject(q, "since", s);
    if (limit[0])
        cJSON_AddNumberToObject(q, "limit", atof(limit));
    char *qs = cJSON_PrintUnformatted(q);
    cJSON_Delete(q);
    events_wait *ew = qs ? calloc(1, sizeof *ew) : NULL;
    if (!ew) {
        free(qs);
        respond_error(c, 500, VG_WIRE_INTERNAL, "out of memory");
        return;
    }
    ew->c = c;
    snprintf(ew->name, sizeof ew->name, "%s", name);
    /* An unwatched stream's events are read from its log off the loop: answered later. */
    c->work_pending = 1;
    vg_dispatch_request_async(c->h->dispatch, qs, strlen(qs), stream_events_done, ew);
    free(qs);
}

static void stream_events_reply(conn *c, const char *name, cJSON *r)
{
    if (!wants_sse(c) || !reply_ok(r)) {
        respond_native(c, r, 200);
        return;
    }
    /* SSE: the records since `since`, then live ones (same loop turn: nothing falls between).
     */
    char topic[VG_ID_MAX + 16];
    snprintf(topic, sizeof topic, "stream/%s/", name);
    feed(c, topic, 0);
    const cJSON *ev;
    cJSON_ArrayForEach(ev, cJSON_GetObjectItemCaseSensitive(r, "events"))
    {
        char *p = cJSON_PrintUnformatted(ev);
        char t[VG_ID_MAX + 32];
        snprintf(t, sizeof t, "stream/%s/%s", name,
                 vg_jstr(ev, "kind") ? vg_jstr(ev, "kind") : "x");
        if (p)
            feed_record(c, t, vg_jstr(ev, "kind") ? vg_jstr(ev, "kind") : "record", p, strlen(p));
        free(p);
    }
    cJSON_Delete(r);
}

static void route_snapshot(conn *c, const char *name, unsigned long long seq)
{
    const uint8_t *jpeg;
    size_t len;
    if (vg_streams_snapshot(c->h->dispatch->streams, name, seq, &jpeg, &len) < 0) {
        respond_error(c, 404, VG_WIRE_NOT_FOUND,
                      "no snapshot of event %llu of stream '%s' (snapshots are kept for the newest "
                      "stream_snapshots_max `started` events of a watched stream)",
                      seq, name);
        return;
    }
    respond(c, 200, "image/jpeg", (const char *)jpeg, len);
}

static void route_static(conn *c, int i)
{
    vg_http *h = c->h;
    if (!h->www[i].data) {
        respond_error(c, 404, VG_WIRE_NOT_FOUND,
                      "no web page (http_www_dir is empty or unreadable)");
        return;
    }
    respond(c, 200, h->www[i].type, h->www[i].data, h->www[i].len);
}

static void load_www(vg_http *h)
{
    static const char *const files[][2] = {{"index.html", "text/html; charset=utf-8"},
                                           {"app.js", "text/javascript; charset=utf-8"},
                                           {"style.css", "text/css; charset=utf-8"}};
    for (size_t i = 0; i < VG_ARRAY_LEN(files); i++) {
        h->www[i].name = files[i][0];
        h->www[i].type = files[i][1];
        if (!h->cfg->http_www_dir[0])
            continue;
        char path[VG_CFG_STR + 32], err[256];
        snprintf(path, sizeof path, "%s/%s", h->cfg->http_www_dir, files[i][0]);
        if (vg_read_file(path, 4 << 20, &h->www[i].data, &h->www[i].len, err, sizeof err) < 0) {
            vg_log(VG_LOG_WARNING, MOD, "web page: %s", err);
            h->www[i].data = NULL;
        }
    }
}

/* A clip job's event snapshot: the frame at the event's start, decoded from the job's video (a
 * local file that still passes the media policy) and encoded as JPEG on the thread pool. */
typedef struct jsnap_work {
    uv_work_t w;
    conn *c;
    char path[VG_CFG_STR + 64];
    double t;
    uint8_t *jpeg;
    size_t len;
    int rc;
    char err[512];
} jsnap_work;

static void jsnap_run(uv_work_t *w)
{
    jsnap_work *jw = w->data;
    vg_media_params mp = vg_media_default_params();
    mp.protocol_whitelist = "file";
    vg_media *m = NULL;
    jw->rc = vg_media_open(jw->path, &mp, &m, jw->err, sizeof jw->err);
    if (jw->rc < 0)
        return;
    vg_sample_params sp = {.fps = 2.0,
                           .nframes = 2,
                           .min_frames = 2,
                           .max_frames = 2,
                           .max_pixels = 640 * 480,
                           .video_start = jw->t,
                           .video_end = jw->t + 1.0,
                           .factor = 32,
                           .temporal_patch = 2};
    vg_video *v = NULL;
    jw->rc = vg_media_read_video(m, &sp, NULL, NULL, &v, jw->err, sizeof jw->err);
    if (jw->rc == 0)
        jw->rc =
            vg_jpeg_encode_rgb(v->rgb, v->W, v->H, 3, &jw->jpeg, &jw->len, jw->err, sizeof jw->err);
    vg_video_free(v);
    vg_media_close(m);
}

static void jsnap_done(uv_work_t *w, int status)
{
    jsnap_work *jw = w->data;
    conn *c = jw->c;
    c->work_pending = 0;
    if (!c->wsi)
        conn_free(c);
    else if (jw->rc < 0 || status < 0)
        respond_error(c, 422, "media", "cannot take the snapshot: %s",
                      jw->err[0] ? jw->err : vg_strerror(jw->rc));
    else
        respond(c, 200, "image/jpeg", (const char *)jw->jpeg, jw->len);
    free(jw->jpeg);
    free(jw);
}

static void route_job_snapshot(conn *c, const char *id, int index)
{
    vg_http *h = c->h;
    cJSON *q = native_op(h, "job");
    cJSON_AddStringToObject(q, "job", id);
    cJSON *r = native(h, q);
    cJSON_Delete(q);
    if (!reply_ok(r)) {
        respond_native(c, r, 200);
        return;
    }
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(r, "job");
    const cJSON *ev = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "events"), index);
    const cJSON *start = cJSON_GetObjectItemCaseSensitive(ev, "start");
    const char *video = vg_jstr(j, "video");
    char resolved[VG_CFG_STR + 64], err[512];
    int is_url = 0;
    if (!cJSON_IsNumber(start) || !video) {
        cJSON_Delete(r);
        respond_error(c, 404, VG_WIRE_NOT_FOUND, "job %s has no event %d", id, index);
        return;
    }
    int rc = vg_daemon_media_check(video, h->cfg->media_roots, h->cfg->n_media_roots,
                                   h->cfg->allowed_protocols, resolved, sizeof resolved, &is_url,
                                   err, sizeof err);
    double t = start->valuedouble;
    cJSON_Delete(r);
    if (rc < 0 || is_url) {
        respond_error(c, 404, VG_WIRE_NOT_FOUND,
                      "no snapshot: clip-job snapshots are taken from a local video that is still "
                      "under the media roots%s%s",
                      rc < 0 ? ": " : "", rc < 0 ? err : "");
        return;
    }
    jsnap_work *jw = calloc(1, sizeof *jw);
    if (!jw) {
        respond_error(c, 500, VG_WIRE_INTERNAL, "out of memory");
        return;
    }
    jw->c = c;
    jw->t = VG_MAX(t, 0.0);
    snprintf(jw->path, sizeof jw->path, "%s", resolved);
    jw->w.data = jw;
    c->work_pending = 1;
    if (uv_queue_work(h->loop, &jw->w, jsnap_run, jsnap_done) < 0) {
        c->work_pending = 0;
        free(jw);
        respond_error(c, 500, VG_WIRE_INTERNAL, "cannot queue the snapshot");
    }
}

static void simple_op(conn *c, const char *op, const char *key, const char *val)
{
    cJSON *q = native_op(c->h, op);
    if (key)
        cJSON_AddStringToObject(q, key, val);
    char limit[32];
    if (!strcmp(op, "jobs") && urlarg(c, "limit", limit, sizeof limit))
        cJSON_AddNumberToObject(q, "limit", atof(limit));
    cJSON *r = native(c->h, q);
    cJSON_Delete(q);
    respond_native(c, r, 200);
}

/* A POST's route: what its body is for, and its size limit (checked against Content-Length). */
static void route_post(conn *c)
{
    vg_http *h = c->h;
    const char *p = c->path, *rest;
    char id[VG_ID_MAX + 2];
    if (path_is(p, "/v1/chat/completions") || path_is(p, "/chat/completions")) {
        c->body_kind = B_CHAT;
    } else if (path_is(p, "/v1/jobs")) {
        c->body_kind = B_ASK;
    } else if (path_is(p, "/v1/streams")) {
        c->body_kind = B_WATCH;
    } else if ((rest = segment(p, "/v1/jobs/", id, sizeof id)) && path_is(rest, "/cancel")) {
        c->body_kind = B_CANCEL;
        snprintf(c->path, sizeof c->path, "%s", id); /* the job, for the completion */
    } else {
        respond_error(c, 404, VG_WIRE_NOT_FOUND, "no route POST %s", p);
        return;
    }
    c->body_max = c->body_kind == B_CHAT
                      ? h->cfg->http_max_upload / 3 * 4 + h->cfg->max_message_size
                      : h->cfg->max_message_size;
    char cl[32] = "";
    if (lws_hdr_copy(c->wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
        strtoull(cl, NULL, 10) > c->body_max) {
        c->close_after = 1;
        respond_error(c, 413, VG_WIRE_TOO_LARGE, "the body has %s bytes; the limit is %zu", cl,
                      c->body_max);
    }
}

/* GET /v1/jobs/{id}/events: SSE of the job's records until its done record. */
static void route_job_events(conn *c, const char *id)
{
    vg_http *h = c->h;
    /* Progress and tokens of one job until its done record; a finished job's feed is
     * its done record alone. */
    cJSON *q = native_op(h, "job");
    cJSON_AddStringToObject(q, "job", id);
    cJSON *r = native(h, q);
    cJSON_Delete(q);
    if (!reply_ok(r)) {
        respond_native(c, r, 200);
        return;
    }
    char topic[VG_ID_MAX + 8];
    snprintf(topic, sizeof topic, "job/%s/", id);
    feed(c, topic, 1);
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(r, "job");
    const char *st = vg_jstr(j, "state");
    if (st && (!strcmp(st, "completed") || !strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
        char *s = cJSON_PrintUnformatted(j);
        char t[VG_ID_MAX + 16];
        snprintf(t, sizeof t, "job/%s/done", id);
        if (s)
            feed_record(c, t, "done", s, strlen(s));
        free(s);
    }
    cJSON_Delete(r);
}

/* GET /v1/jobs/{id}[/...]. */
static void route_get_job(conn *c, const char *id, const char *rest)
{
    int ev_i = -1, n = 0;
    if (sscanf(rest, "/events/%d/snapshot.jpg%n", &ev_i, &n) == 1 && !rest[n] && ev_i >= 0) {
        route_job_snapshot(c, id, ev_i);
    } else if (!*rest || !strcmp(rest, "/")) {
        simple_op(c, "job", "job", id);
    } else if (path_is(rest, "/events")) {
        route_job_events(c, id);
    } else {
        respond_error(c, 404, VG_WIRE_NOT_FOUND, "no route GET %s", c->path);
    }
}

/* Routes a request whose headers are in (GET/DELETE answer here; POST waits for its body). */
static void route(conn *c)
{
    const char *p = c->path;
    char id[VG_ID_MAX + 2];
    const char *rest;
    if (c->method == M_POST) {
        route_post(c);
        return;
    }
    if (c->method == M_DELETE) {
        if ((rest = segment(p, "/v1/jobs/", id, sizeof id)) && !*rest)
            simple_op(c, "cancel", "job", id);
        else if ((rest = segment(p, "/v1/streams/", id, sizeof id)) && !*rest)
            simple_op(c, "unwatch", "name", id);
        else
            respond_error(c, 404, VG_WIRE_NOT_FOUND, "no route DELETE %s", p);
        return;
    }
    if (c->method != M_GET) {
        respond_error(c, 405, "method_not_allowed", "only GET, POST and DELETE are served");
        return;
    }
    if (!strcmp(p, "/") || !strcmp(p, "/index.html"))
        route_static(c, 0);
    else if (!strcmp(p, "/app.js"))
        route_static(c, 1);
    else if (!strcmp(p, "/style.css"))
        route_static(c, 2);
    else if (path_is(p, "/health") || path_is(p, "/v1/health"))
        route_health(c);
    else if (path_is(p, "/metrics") || path_is(p, "/v1/metrics"))
        route_metrics(c);
    else if (path_is(p, "/v1/models") || path_is(p, "/models"))
        route_models(c);
    else if (path_is(p, "/v1/info"))
        simple_op(c, "info", NULL, NULL);
    else if (path_is(p, "/v1/jobs"))
        simple_op(c, "jobs", NULL, NULL);
    else if (path_is(p, "/v1/streams"))
        simple_op(c, "streams", NULL, NULL);
    else if (path_is(p, "/v1/events")) {
        char topic[128] = "";
        urlarg(c, "topic", topic, sizeof topic);
        feed(c, topic, 0);
    } else if ((rest = segment(p, "/v1/jobs/", id, sizeof id))) {
        route_get_job(c, id, rest);
    } else if ((rest = segment(p, "/v1/streams/", id, sizeof id))) {
        unsigned long long seq = 0;
        int n = 0;
        if (path_is(rest, "/events"))
            route_stream_events(c, id);
        else if (sscanf(rest, "/events/%llu/snapshot.jpg%n", &seq, &n) == 1 && !rest[n])
            route_snapshot(c, id, seq);
        else
            respond_error(c, 404, VG_WIRE_NOT_FOUND, "no route GET %s", p);
    } else {
        respond_error(c, 404, VG_WIRE_NOT_FOUND, "no route GET %s", p);
    }
}

static int authorized(conn *c)
{
    vg_http *h = c->h;
    const char *p = c->path;
    if (!h->token_len || path_is(p, "/health") || !strcmp(p, "/") || !strcmp(p, "/index.html") ||
        !strcmp(p, "/app.js") || !strcmp(p, "/style.css"))
        return 1;
    char a[600] = "";
    const char *t;
    /* EventSource and <img> cannot send headers: GET requests may carry ?access_token=. */
    if (lws_hdr_copy(c->wsi, a, sizeof a, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 &&
        !strncasecmp(a, "Bearer ", 7))
        t = a + 7;
    else if (c->method == M_GET && urlarg(c, "access_token", a, sizeof a))
        t = a;
    else
        return 0;
    size_t n = strlen(t);
    unsigned diff = n != h->token_len;
    for (size_t i = 0; i < h->token_len; i++)
        diff |= (unsigned)(unsigned char)h->token[i] ^ (unsigned)(unsigned char)(i < n ? t[i] : 0);
    return diff == 0;
}

static int method_of(struct lws *wsi)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI))
        return M_GET;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
        return M_POST;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI))
        return M_DELETE;
    return M_OTHER;
}

static void body_complete(conn *c)
{
    if (c->responded || c->body_refused)
        return;
    /* The body is in: no more read deadline. */
    lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
    if (c->body_kind == B_CANCEL)
        simple_op(c, "cancel", "job", c->path);
    else
        route_body(c);
}

static int on_writable(conn *c)
{
    struct lws *wsi = c->wsi;
    if (c->hdr && !c->hdr_sent) {
        c->hdr_sent = 1;
        if (lws_write(wsi, c->hdr + LWS_PRE, c->hdr_len, LWS_WRITE_HTTP_HEADERS) != (int)c->hdr_len)
            return -1;
        if (c->out.len > c->out_off || c->final)
            lws_callback_on_writable(wsi);
        return 0;
    }
    size_t left = c->out.len - c->out_off;
    if (left) {
        unsigned char tmp[LWS_PRE + WRITE_CHUNK];
        size_t n = VG_MIN(left, (size_t)WRITE_CHUNK);
        memcpy(tmp + LWS_PRE, c->out.p + c->out_off, n);
        int last = n == left && c->final && !c->streaming;
        if (lws_write(wsi, tmp + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
            (int)n)
            return -1;
        c->out_off += n;
        if (c->out_off == c->out.len) {
            c->out.len = c->out_off = 0;
        } else {
            lws_callback_on_writable(wsi);
            return 0;
        }
        if (!c->final)
            return 0;
    }
    if (!c->final)
        return 0;
    if (c->streaming || c->close_after)
        return -1;
    /* Keep-alive: the next request on this connection starts afresh. */
    conn_reset(c);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* A connection is admitted at its first request while fewer than http_max_connections are; the
 * mark (lws's opaque user data) stays with it until it closes. */
static int admit(vg_http *h, struct lws *wsi)
{
    if (lws_get_opaque_user_data(wsi))
        return 1;
    if (h->n_admitted >= h->cfg->http_max_connections)
        return 0;
    h->n_admitted++;
    lws_set_opaque_user_data(wsi, h);
    return 1;
}

/* A request's headers are in: limits, authorization, then its route. */
static int on_headers(vg_http *h, struct lws *wsi, psd *pd, const char *path)
{
    conn *c = pd->c;
    if (!c) {
        if (!(c = conn_new(h, wsi)))
            return -1;
        pd->c = c;
    } else {
        conn_reset(c);
    }
    h->requests++;
    c->method = method_of(wsi);
    snprintf(c->path, sizeof c->path, "%s", path ? path : "/");
    c->deadline_ms = vg_now_ms() + h->cfg->http_timeout_s * 1000.0;
    if (h->stopping) {
        c->close_after = 1;
        respond_error(c, 503, VG_WIRE_SHUTTING, "vigild is stopping");
    } else if (!admit(h, wsi)) {
        c->close_after = 1;
        respond_error(c, 503, VG_WIRE_BUSY, "too many HTTP connections (limit %d)",
                      h->cfg->http_max_connections);
    } else if (!authorized(c)) {
        c->close_after = 1;
        respond_error(c, 401, "unauthorized", "a valid bearer token is required");
    } else {
        route(c);
    }
    if (c->method == M_POST && !c->responded) {
        char cl[32] = "";
        int has_len = lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
        if ((!has_len || strtoull(cl, NULL, 10) == 0) &&
            lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) <= 0)
            body_complete(c); /* no body is coming */
        else
            lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT,
                            (int)VG_MAX(1.0, h->cfg->http_timeout_s));
    }
    return 0;
}

/* A piece of a request's body: bounded, and within the request's absolute deadline. */
static int on_body(conn *c, const void *in, size_t len)
{
    if (c->responded || c->body_refused)
        return 0;
    if (c->body.len + len > c->body_max) {
        c->body_refused = 1;
        c->close_after = 1;
        respond_error(c, 413, VG_WIRE_TOO_LARGE, "the body is over the limit of %zu bytes",
                      c->body_max);
        return 0;
    }
    if (vg_buf_add(&c->body, in, len) < 0) {
        c->body_refused = 1;
        c->close_after = 1;
        respond_error(c, 500, VG_WIRE_INTERNAL, "out of memory");
        return 0;
    }
    /* A client that trickles its body cannot extend the deadline. */
    double left = (c->deadline_ms - vg_now_ms()) / 1000.0;
    if (left <= 0)
        return -1;
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_HTTP_CONTENT, (int)VG_MAX(1.0, left));
    return 0;
}

static int cb_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    psd *pd = user;
    vg_http *h = lws_context_user(lws_get_context(wsi));
    conn *c = pd ? pd->c : NULL;
    switch (reason) {
    case LWS_CALLBACK_WSI_CREATE:
        h->n_wsi++;
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        h->n_wsi--;
        if (lws_get_opaque_user_data(wsi))
            h->n_admitted--;
        return 0;
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        /* Past four times the limit a new connection is not even read (the ones up to there get a
         * 503 JSON error for their request). */
        return h->n_wsi - 1 > 4 * h->cfg->http_max_connections + 64 ? -1 : 0;
    case LWS_CALLBACK_HTTP:
        return pd ? on_headers(h, wsi, pd, in) : -1;
    case LWS_CALLBACK_HTTP_BODY:
        return c ? on_body(c, in, len) : 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (c)
            body_complete(c);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!c)
            return 0;
        return on_writable(c);
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL: /* the transaction's psd goes away with it */
        if (c) {
            pd->c = NULL;
            conn_closed(c);
        }
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"http", cb_http, sizeof(psd), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ===================================================================================================
 * Start and stop.
 */
/* Splits http(s)://HOST:PORT[/] into host and port. */
static int parse_url(const char *url, int *tls, char *host, size_t hostlen, int *port, char *err,
                     size_t errlen)
{
    const char *p;
    if (!strncmp(url, "http://", 7)) {
        *tls = 0;
        p = url + 7;
    } else if (!strncmp(url, "https://", 8)) {
        *tls = 1;
        p = url + 8;
    } else {
        return vg_fail(err, errlen, VG_EINVAL, "http_url '%s' must start with http:// or https://",
                       url);
    }
    const char *hs = p, *he;
    if (*p == '[') {
        hs = p + 1;
        if (!(he = strchr(hs, ']')))
            return vg_fail(err, errlen, VG_EINVAL, "http_url '%s': unterminated [", url);
        p = he + 1;
    } else {
        he = strchr(p, ':');
        if (!he)
            return vg_fail(err, errlen, VG_EINVAL, "http_url '%s' needs a port (HOST:PORT)", url);
        p = he;
    }
    if (*p != ':' || he == hs || (size_t)(he - hs) >= hostlen)
        return vg_fail(err, errlen, VG_EINVAL, "http_url '%s' needs HOST:PORT", url);
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = 0;
    char *end;
    long v = strtol(p + 1, &end, 10);
    if (end == p + 1 || (*end && strcmp(end, "/")) || v < 1 || v > 65535)
        return vg_fail(err, errlen, VG_EINVAL, "http_url '%s': the port must be 1-65535", url);
    *port = (int)v;
    return 0;
}

static int is_loopback(const char *host)
{
    return !strcmp(host, "localhost") || !strncmp(host, "127.", 4) || !strcmp(host, "::1");
}

int vg_http_check_config(const vg_daemon_config *cfg, char *err, size_t errlen)
{
    if (!cfg->http_url[0])
        return 0;
    int tls, port;
    char host[256];
    int rc = parse_url(cfg->http_url, &tls, host, sizeof host, &port, err, errlen);
    if (rc < 0)
        return rc;
    if (!cfg->allow_remote && !is_loopback(host))
        return vg_fail(err, errlen, VG_EINVAL,
                       "http_url '%s' is not a loopback address; set allow_remote = yes to serve "
                       "other hosts (with a token and TLS)",
                       cfg->http_url);
    if (tls && (!cfg->http_tls_cert[0] || !cfg->http_tls_key[0]))
        return vg_fail(err, errlen, VG_EINVAL,
                       "an https:// http_url needs http_tls_cert and http_tls_key");
    const char *files[] = {tls ? cfg->http_tls_cert : "", tls ? cfg->http_tls_key : "",
                           cfg->http_token_file};
    for (size_t i = 0; i < VG_ARRAY_LEN(files); i++)
        if (files[i][0] && access(files[i], R_OK) != 0)
            return vg_fail(err, errlen, VG_ENOENT, "cannot read %s: %s", files[i], strerror(errno));
    return 0;
}

void vg_http_spool_dir(const vg_daemon_config *cfg, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/http-spool", cfg->state_dir);
}

static int read_token(vg_http *h, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return vg_fail(err, errlen, VG_ENOENT, "cannot open http_token_file %s: %s", path,
                       strerror(errno));
    size_t n = fread(h->token, 1, sizeof h->token - 1, f);
    fclose(f);
    while (n && (h->token[n - 1] == '\n' || h->token[n - 1] == '\r' || h->token[n - 1] == ' '))
        n--;
    h->token[n] = 0;
    if (n < 16 || memchr(h->token, '\n', n))
        return vg_fail(err, errlen, VG_EINVAL,
                       "http_token_file %s must hold one token of 16 to 511 characters", path);
    h->token_len = n;
    return 0;
}

static void lws_logger(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        n--;
    vg_log(level == LLL_ERR ? VG_LOG_ERR : VG_LOG_WARNING, MOD, "libwebsockets: %.*s", (int)n,
           line);
}

/* Removes what a previous run left in the spool directory. */
static void clean_spool(const char *dir)
{
    uv_fs_t req;
    if (uv_fs_scandir(NULL, &req, dir, 0, NULL) < 0)
        return;
    uv_dirent_t ent;
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
        if (strncmp(ent.name, "up-", 3))
            continue;
        char p[VG_CFG_STR + 300];
        snprintf(p, sizeof p, "%s/%s", dir, ent.name);
        unlink(p);
    }
    uv_fs_req_cleanup(&req);
}

int vg_http_start(const vg_http_params *p, vg_http **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = vg_http_check_config(p->cfg, err, errlen);
    if (rc < 0)
        return rc;
    vg_http *h = calloc(1, sizeof *h);
    if (!h)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    h->loop = p->loop;
    h->cfg = p->cfg;
    h->dispatch = p->dispatch;
    h->bus = p->bus;
    h->sink = -1;
    h->started_ms = vg_now_ms();
    parse_url(p->cfg->http_url, &h->tls, h->iface, sizeof h->iface, &h->port, err, errlen);
    if (p->cfg->http_token_file[0] &&
        (rc = read_token(h, p->cfg->http_token_file, err, errlen)) < 0) {
        free(h);
        return rc;
    }
    vg_http_spool_dir(p->cfg, h->spool_dir, sizeof h->spool_dir);
    if (mkdir(h->spool_dir, 0700) != 0 && errno != EEXIST) {
        rc = vg_fail(err, errlen, -errno, "cannot create %s: %s", h->spool_dir, strerror(errno));
        free(h);
        return rc;
    }
    clean_spool(h->spool_dir);
    load_www(h);
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_logger);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    void *loops[1] = {p->loop};
    info.foreign_loops = loops;
    info.options = LWS_SERVER_OPTION_LIBUV;
    info.port = h->port;
    info.iface = !strcmp(h->iface, "localhost") ? "127.0.0.1" : h->iface;
    info.protocols = protocols;
    info.user = h;
    info.pcontext = &h->ctx; /* lws clears it once the context is wholly destroyed */
    info.timeout_secs = (unsigned)VG_MAX(1.0, p->cfg->http_timeout_s);
    info.keepalive_timeout = (int)VG_MAX(1.0, p->cfg->http_timeout_s);
    info.max_http_header_data = 4096;
    info.alpn = "http/1.1";
    info.server_string = "vigild";
    if (h->tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = p->cfg->http_tls_cert;
        info.ssl_private_key_filepath = p->cfg->http_tls_key;
    }
    h->ctx = lws_create_context(&info);
    if (!h->ctx) {
        free(h);
        return vg_fail(
            err, errlen, VG_EIO,
            "cannot serve HTTP on %s (address in use, no libuv event library, or bad TLS "
            "files; see the libwebsockets messages above)",
            p->cfg->http_url);
    }
    if ((h->sink = vg_bus_add_sink(p->bus, http_sink, h)) < 0) {
        lws_context_destroy(h->ctx); /* h stays allocated: lws may still call back */
        return vg_fail(err, errlen, VG_EBUSY, "the bus has no room for the HTTP sink");
    }
    uv_timer_init(p->loop, &h->heartbeat);
    h->heartbeat.data = h;
    uv_timer_start(&h->heartbeat, on_heartbeat, 15000, 15000);
    vg_log(VG_LOG_NOTICE, MOD, "serving %s%s", p->cfg->http_url,
           h->token_len ? " (bearer token required)" : "");
    *out = h;
    return 0;
}

void vg_http_stop(vg_http *h)
{
    if (!h || h->stopping)
        return;
    h->stopping = 1;
    uv_timer_stop(&h->heartbeat);
    uv_close((uv_handle_t *)&h->heartbeat, NULL);
    vg_bus_remove_sink(h->bus, h->sink);
    h->sink = -1;
    if (h->ctx)
        lws_context_destroy(h->ctx);
}

void vg_http_free(vg_http *h)
{
    if (!h)
        return;
    if (h->ctx) {
        /* On a foreign loop the destruction finishes in close callbacks: run them. */
        lws_context_destroy(h->ctx);
        uv_run(h->loop, UV_RUN_DEFAULT);
    }
    while (h->conns)
        conn_free(h->conns);
    for (size_t i = 0; i < VG_ARRAY_LEN(h->www); i++)
        free(h->www[i].data);
    while (h->streams) {
        stream_stat *n = h->streams->next;
        free(h->streams);
        h->streams = n;
    }
    free(h);
}
