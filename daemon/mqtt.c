/*
 * mqtt.c: the MQTT bridge (mqtt.h; docs/mqtt.md).
 *
 * Layout:
 *  - the connection: one libmosquitto client object per connection attempt (so a lost
 *    connection takes libmosquitto's own queues with it, and what is resent is exactly this
 *    file's queue), connected on the thread pool, then driven by a uv_poll on its socket and a
 *    1 s timer for keepalives; reconnects after 0.5 s doubling to 30 s;
 *  - the queue: QoS 1 messages (change feed, job states) kept until their PUBACK; bounded in count
 *    and bytes, the oldest dropped first, and each stream's dropped range remembered;
 *  - the translation of stream records (state, answer, event) into retained topics, the change
 *    feed and discovery; a pure function of the records in seq order, so a replay from the
 *    stream's log yields byte-identical messages;
 *  - commands (JSON on <prefix>{watch,unwatch,ask}/set through the one request path) and the
 *    Frigate consumer.
 *
 * Records reach the bridge through its bus sink, which only copies them into an inbox; they are
 * handled on the next loop turn, so the bridge may call the request path (which reads the stream
 * table) without re-entering the code that published them.
 */
#define _DEFAULT_SOURCE /* timegm, gethostname */
#include "mqtt.h"
#include "jsonget.h"

#include "common.h"

#include <ctype.h>
#include <math.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MOD            "mqtt"
#define SLUG_MAX       48
#define TOPIC_MAX      512
#define MAX_QUESTIONS  8
#define MAX_FRIGATE_Q  8
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define REPLAY_BACK    64 /* records read before a dropped range: the answers the events follow */

/* ===================================================================================================
 * State.
 */
typedef struct mquestion {
    char text[8192 + 1];
    char slug[SLUG_MAX + 8];
    int known;
    int active;        /* retained <q>/active: ON */
    int discovered;    /* discovery configs published on this connection */
    char *answer_text; /* the last answer's text (owned) */
    char open_id[160]; /* the occurrence being tracked ("" none) */
    char *open_after;  /* its last `after` object (owned JSON) */
    uint8_t *snap;     /* the last event's JPEG snapshot (owned), retained on <q>/snapshot */
    size_t snap_len;
} mquestion;

/* The change feed's translator state of one stream. */
typedef struct xlate {
    mquestion q[MAX_QUESTIONS];
    int n_q;
} xlate;

typedef struct mstream {
    struct mstream *next;
    char name[128];
    char *state_json; /* last state record (owned), retained on <stream>/state */
    int ended;        /* its last state is `ended` */
    int fetched;      /* questions read from the `streams` operation */
    xlate x;
    /* Change-feed messages dropped from the queue: seqs [drop_first, drop_last] (0: none). */
    unsigned long long drop_first, drop_last;
} mstream;

typedef struct qmsg {
    struct qmsg *next, *prev;
    char *topic;
    char *payload;
    size_t len;
    int retain;
    char stream[128]; /* a stream's change-feed message: replayable ("" otherwise) */
    unsigned long long seq;
    int sent, mid;
    int replay; /* regenerated from the stream's log: outside the bounds, never dropped */
} qmsg;

typedef struct inbox_item {
    struct inbox_item *next;
    char *topic;
    char *payload;
    size_t len;
} inbox_item;

typedef struct frigate_job {
    struct frigate_job *next;
    char job[80];
    char review[64];
    char camera[64];
    int qi;
    double start_time, end_time;
} frigate_job;

typedef struct conn conn;

enum { ST_WAIT, ST_CONNECTING, ST_HANDSHAKE, ST_CONNECTED, ST_STOPPED };

struct vg_mqtt {
    uv_loop_t *loop;
    const vg_daemon_config *cfg;
    const vg_dispatch *dispatch;
    vg_bus *bus;
    int sink;
    char model_name[128];
    /* settings */
    char host[VG_CFG_STR];
    int port, tls, protocol;
    char client_id[160];
    char prefix[160];
    char *password; /* owned; wiped on free */
    char frigate_q[MAX_FRIGATE_Q][8192 + 1];
    int n_frigate_q;
    /* connection */
    int state;
    conn *c;
    int backoff_ms;
    uv_timer_t retry, misc, drain;
    int handles_open;
    /* queue */
    qmsg *qhead, *qtail;
    size_t q_n, q_bytes;
    /* inbox */
    inbox_item *in_head, *in_tail;
    /* streams */
    mstream *streams;
    frigate_job *fjobs;
    /* counters */
    unsigned long long published, dropped, replayed, lost, reconnects, commands, command_errors,
        frigate_reviews, connects;
};

struct conn {
    vg_mqtt *b;
    struct mosquitto *m;
    uv_poll_t poll;
    uv_work_t work;
    int poll_open;
    int connect_rc;
    int connect_errno;
    int lost;      /* set in a callback, handled after libmosquitto returns */
    int lost_rc;   /* MOSQ_ERR_* or a CONNACK reason */
    int refused;   /* the broker answered CONNACK with a failure */
    int abandoned; /* the bridge stopped while the connect ran on the pool */
};

static void schedule_retry(vg_mqtt *b);
static void on_poll(uv_poll_t *h, int status, int events);
static void flush_queue(vg_mqtt *b);
static void on_connected(vg_mqtt *b);

/* ===================================================================================================
 * Small helpers.
 */
void vg_mqtt_slug(const char *question, int index, char *out, size_t outlen)
{
    size_t n = 0, cap = VG_MIN(outlen - 1, (size_t)SLUG_MAX);
    int pending_sep = 0;
    for (const unsigned char *p = (const unsigned char *)question; *p && n < cap; p++) {
        if (isalnum(*p) && *p < 128) {
            if (pending_sep && n > 0 && n + 1 < cap)
                out[n++] = '_';
            else if (pending_sep && n > 0)
                break;
            pending_sep = 0;
            out[n++] = (char)tolower(*p);
        } else {
            pending_sep = 1;
        }
    }
    out[n] = 0;
    if (n == 0)
        snprintf(out, outlen, "q%d", index);
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static char *dup_s(const char *s)
{
    return dup_n(s, strlen(s));
}

/* ISO 8601 UTC with milliseconds ("2026-12-06T05:53:37.123Z") to Unix seconds; -1 if not one. */
static double iso_to_unix(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm) + ms / 1000.0;
}

static const char *mosq_err(int rc)
{
    return rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc);
}

/* ===================================================================================================
 * Configuration.
 */
static int parse_url(const char *url, char *host, size_t hostlen, int *port, int *tls)
{
    const char *p;
    if (!strncmp(url, "mqtt://", 7)) {
        p = url + 7;
        *tls = 0;
        *port = 1883;
    } else if (!strncmp(url, "mqtts://", 8)) {
        p = url + 8;
        *tls = 1;
        *port = 8883;
    } else {
        return -1;
    }
    if (strchr(p, '@') || strchr(p, '/') || strchr(p, '?'))
        return -1; /* credentials go in their own keys; no path */
    const char *colon;
    size_t hl;
    if (*p == '[') {
        const char *e = strchr(p, ']');
        if (!e)
            return -1;
        hl = (size_t)(e - p - 1);
        if (hl == 0 || hl >= hostlen)
            return -1;
        memcpy(host, p + 1, hl);
        host[hl] = 0;
        colon = e[1] == ':' ? e + 1 : (e[1] ? NULL : e + 1);
        if (!colon)
            return -1;
    } else {
        colon = strchr(p, ':');
        hl = colon ? (size_t)(colon - p) : strlen(p);
        if (hl == 0 || hl >= hostlen)
            return -1;
        memcpy(host, p, hl);
        host[hl] = 0;
    }
    if (colon && *colon == ':') {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || v < 1 || v > 65535)
            return -1;
        *port = (int)v;
    }
    for (const char *h = host; *h; h++)
        if (!isalnum((unsigned char)*h) && !strchr(".-:_", *h))
            return -1;
    return 0;
}

static int valid_topic_prefix(const char *s, int allow_empty)
{
    if (!*s)
        return allow_empty;
    if (strlen(s) > 100)
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p == '+' || *p == '#' || *p < 0x20 || *p >= 0x7f)
            return 0;
    return 1;
}

static int check_file(const char *key, const char *path, char *err, size_t errlen)
{
    if (path[0] && access(path, R_OK) != 0)
        return vg_fail(err, errlen, VG_ENOENT, "%s: cannot read '%s': %s", key, path,
                       strerror(errno));
    return 0;
}

/* Splits mqtt_frigate_questions at '|' into out (trimmed, empty parts skipped). Returns the count,
 * or -1 when there are too many or one is too long. */
static int split_questions(const char *s, char out[][8192 + 1], int max)
{
    int n = 0;
    while (*s) {
        const char *e = strchr(s, '|');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        const char *a = s, *z = s + len;
        while (a < z && isspace((unsigned char)*a))
            a++;
        while (z > a && isspace((unsigned char)z[-1]))
            z--;
        if (z > a) {
            if (n >= max || (size_t)(z - a) > 8192)
                return -1;
            memcpy(out[n], a, (size_t)(z - a));
            out[n][z - a] = 0;
            n++;
        }
        s = e ? e + 1 : s + len;
    }
    return n;
}

int vg_mqtt_check_config(const vg_daemon_config *c, char *err, size_t errlen)
{
    if (!c->mqtt_url[0])
        return 0;
    char host[VG_CFG_STR];
    int port, tls, rc;
    if (strchr(c->mqtt_url, '@'))
        return vg_fail(err, errlen, VG_EINVAL,
                       "mqtt_url must not hold a user name or password (it is not repeated here; "
                       "use mqtt_username and mqtt_password_file)");
    if (parse_url(c->mqtt_url, host, sizeof host, &port, &tls) < 0)
        return vg_fail(err, errlen, VG_EINVAL,
                       "mqtt_url '%s' is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
                       c->mqtt_url);
    if (!tls && (c->mqtt_cert_file[0] || c->mqtt_key_file[0] || c->mqtt_ca_file[0]))
        return vg_fail(err, errlen, VG_EINVAL,
                       "mqtt_ca_file, mqtt_cert_file and mqtt_key_file need an mqtts:// mqtt_url");
    if (!c->mqtt_cert_file[0] != !c->mqtt_key_file[0])
        return vg_fail(err, errlen, VG_EINVAL,
                       "mqtt_cert_file and mqtt_key_file go together (both or neither)");
    if ((rc = check_file("mqtt_ca_file", c->mqtt_ca_file, err, errlen)) < 0 ||
        (rc = check_file("mqtt_cert_file", c->mqtt_cert_file, err, errlen)) < 0 ||
        (rc = check_file("mqtt_key_file", c->mqtt_key_file, err, errlen)) < 0 ||
        (rc = check_file("mqtt_password_file", c->mqtt_password_file, err, errlen)) < 0)
        return rc;
    if (c->mqtt_password_file[0] && !c->mqtt_username[0])
        return vg_fail(err, errlen, VG_EINVAL, "mqtt_password_file needs mqtt_username");
    if (!valid_topic_prefix(c->mqtt_prefix, 0))
        return vg_fail(err, errlen, VG_EINVAL,
                       "mqtt_prefix must be 1-100 printable ASCII characters without + or #");
    if (!valid_topic_prefix(c->mqtt_discovery_prefix, 1))
        return vg_fail(err, errlen, VG_EINVAL,
                       "mqtt_discovery_prefix must be printable ASCII without + or #");
    if (!valid_topic_prefix(c->mqtt_frigate_topic, 0))
        return vg_fail(err, errlen, VG_EINVAL,
                       "mqtt_frigate_topic must be a topic without + or # (up to 100 bytes)");
    for (const char *p = c->mqtt_client_id; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return vg_fail(err, errlen, VG_EINVAL, "mqtt_client_id must be printable ASCII");
    static char qs[MAX_FRIGATE_Q][8192 + 1];
    int nq = split_questions(c->mqtt_frigate_questions, qs, MAX_FRIGATE_Q);
    if (nq < 0)
        return vg_fail(err, errlen, VG_EINVAL,
                       "mqtt_frigate_questions: at most %d questions of at most 8192 bytes",
                       MAX_FRIGATE_Q);
    if (nq > 0 && strncmp(c->mqtt_frigate_url, "http://", 7) &&
        strncmp(c->mqtt_frigate_url, "https://", 8))
        return vg_fail(err, errlen, VG_EINVAL,
                       "mqtt_frigate_questions needs mqtt_frigate_url (http:// or https://)");
    return 0;
}

/* ===================================================================================================
 * The queue of QoS 1 messages.
 */
static void qmsg_free(qmsg *q)
{
    if (!q)
        return;
    free(q->topic);
    free(q->payload);
    free(q);
}

static void q_unlink(vg_mqtt *b, qmsg *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        b->qhead = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        b->qtail = q->prev;
    if (!q->replay) {
        b->q_n--;
        b->q_bytes -= q->len + strlen(q->topic);
    }
}

static mstream *find_stream(vg_mqtt *b, const char *name);

static void widen_drop_range(vg_mqtt *b, const qmsg *q)
{
    mstream *s = q->stream[0] ? find_stream(b, q->stream) : NULL;
    if (!s)
        return;
    if (!s->drop_first || q->seq < s->drop_first)
        s->drop_first = q->seq;
    if (q->seq > s->drop_last)
        s->drop_last = q->seq;
}

/* Drops the oldest messages while the queue is over its bounds (the newest always stays); a
 * stream's change-feed message widens that stream's dropped range (replayed from its log on the
 * next connection). Replayed messages do not count: the log holds them. */
static void q_trim(vg_mqtt *b)
{
    while ((int)b->q_n > b->cfg->mqtt_queue_max || b->q_bytes > b->cfg->mqtt_queue_max_bytes) {
        qmsg *victim = b->qhead;
        while (victim && victim->replay)
            victim = victim->next;
        if (!victim || victim == b->qtail)
            return;
        q_unlink(b, victim);
        b->dropped++;
        widen_drop_range(b, victim);
        if (b->dropped == 1 || b->dropped % 1000 == 0)
            vg_log(VG_LOG_WARNING, MOD,
                   "the message queue is full (mqtt_queue_max %d, mqtt_queue_max_bytes %zu): "
                   "dropped the oldest (%llu so far; stream events are replayed from their log)",
                   b->cfg->mqtt_queue_max, b->cfg->mqtt_queue_max_bytes, b->dropped);
        qmsg_free(victim);
    }
}

static int send_one(vg_mqtt *b, qmsg *q);

/* Queues a QoS 1 message (taking nothing: copies topic and payload) and sends it at once when
 * connected. front: a replayed message, put before every queued one (the caller sends them),
 * outside the bounds (q_n, q_bytes count the others). */
static void enqueue(vg_mqtt *b, const char *topic, const char *payload, size_t len, int retain,
                    const char *stream, unsigned long long seq, int front)
{
    qmsg *q = calloc(1, sizeof *q);
    if (!q || !(q->topic = dup_s(topic)) || !(q->payload = dup_n(payload, len))) {
        qmsg_free(q);
        b->dropped++;
        return;
    }
    q->len = len;
    q->retain = retain;
    q->seq = seq;
    if (stream)
        snprintf(q->stream, sizeof q->stream, "%s", stream);
    q->replay = front;
    if (front) {
        q->next = b->qhead;
        if (b->qhead)
            b->qhead->prev = q;
        else
            b->qtail = q;
        b->qhead = q;
    } else {
        q->prev = b->qtail;
        if (b->qtail)
            b->qtail->next = q;
        else
            b->qhead = q;
        b->qtail = q;
    }
    if (!front) {
        b->q_n++;
        b->q_bytes += len + strlen(topic);
    }
    if (!front && b->state == ST_CONNECTED)
        send_one(b, q);
    q_trim(b);
}

/* ===================================================================================================
 * The connection.
 */
static void update_poll(conn *c)
{
    if (!c->poll_open || c->lost)
        return;
    int ev = UV_READABLE;
    if (mosquitto_want_write(c->m))
        ev |= UV_WRITABLE;
    uv_poll_start(&c->poll, ev, on_poll);
}

static void conn_closed(uv_handle_t *h)
{
    conn *c = h->data;
    mosquitto_destroy(c->m);
    free(c);
}

/* Ends connection c (the bridge's current one): closes its poll, destroys the client once the
 * poll is closed, marks queued messages unsent and schedules a reconnect unless stopping. */
static void conn_end(vg_mqtt *b, conn *c, int log_it)
{
    if (b->c == c)
        b->c = NULL;
    int was = b->state;
    if (b->state != ST_STOPPED)
        b->state = ST_WAIT;
    for (mstream *s = b->streams; s; s = s->next)
        for (int i = 0; i < s->x.n_q; i++)
            s->x.q[i].discovered = 0;
    /* Replayed messages not acknowledged go back to being a dropped range (the log has them). */
    for (qmsg *q = b->qhead, *nx; q; q = nx) {
        nx = q->next;
        q->sent = 0;
        if (q->replay) {
            widen_drop_range(b, q);
            q_unlink(b, q);
            qmsg_free(q);
        }
    }
    if (log_it && was == ST_CONNECTED)
        vg_log(VG_LOG_WARNING, MOD, "lost the connection to %s:%d: %s", b->host, b->port,
               c->refused ? mosquitto_reason_string(c->lost_rc) : mosq_err(c->lost_rc));
    else if (log_it && was == ST_HANDSHAKE && !c->refused)
        vg_log(VG_LOG_WARNING, MOD,
               "the connection to %s:%d failed before the broker answered (%s): %s", b->host,
               b->port, b->tls ? "TLS handshake or CONNECT" : "CONNECT", mosq_err(c->lost_rc));
    if (c->poll_open) {
        uv_poll_stop(&c->poll);
        c->poll.data = c;
        uv_close((uv_handle_t *)&c->poll, conn_closed);
    } else {
        mosquitto_destroy(c->m);
        free(c);
    }
    if (b->state != ST_STOPPED)
        schedule_retry(b);
}

static void check_lost(conn *c)
{
    vg_mqtt *b = c->b;
    if (c->lost && b->c == c)
        conn_end(b, c, 1);
    else if (b->c == c)
        update_poll(c);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    conn *c = h->data;
    if (status < 0) {
        c->lost = 1;
        c->lost_rc = MOSQ_ERR_CONN_LOST;
    }
    if (!c->lost && (events & UV_READABLE)) {
        /* A TLS record may hold several packets: read until libmosquitto has nothing left (a
         * read with no data returns at once on the non-blocking socket). */
        for (int i = 0; i < 16 && !c->lost; i++) {
            int rc = mosquitto_loop_read(c->m, 1);
            if (rc != MOSQ_ERR_SUCCESS) {
                c->lost = 1;
                if (!c->lost_rc)
                    c->lost_rc = rc;
            }
            if (!c->b->tls)
                break;
        }
    }
    if (!c->lost && (events & UV_WRITABLE)) {
        int rc = mosquitto_loop_write(c->m, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            c->lost = 1;
            c->lost_rc = rc;
        }
    }
    check_lost(c);
}

static void on_misc(uv_timer_t *t)
{
    vg_mqtt *b = t->data;
    conn *c = b->c;
    if (!c || !c->poll_open)
        return;
    int rc = mosquitto_loop_misc(c->m);
    if (rc != MOSQ_ERR_SUCCESS && !c->lost) {
        c->lost = 1;
        c->lost_rc = rc;
    }
    check_lost(c);
}

/* libmosquitto callbacks (called inside mosquitto_loop_read/write on the loop thread). */
static void cb_connect(struct mosquitto *m, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
    conn *c = obj;
    vg_mqtt *b = c->b;
    if (b->c != c)
        return;
    if (rc != 0) {
        c->lost = 1;
        c->refused = 1;
        c->lost_rc = rc;
        vg_log(VG_LOG_ERR, MOD, "the broker %s:%d refused the connection: %s", b->host, b->port,
               b->protocol == MQTT_PROTOCOL_V5 ? mosquitto_reason_string(rc)
                                               : mosquitto_connack_string(rc));
        return;
    }
    on_connected(b);
}

static void cb_disconnect(struct mosquitto *m, void *obj, int rc, const mosquitto_property *p)
{
    conn *c = obj;
    if (!c->lost) {
        c->lost = 1;
        c->lost_rc = rc ? rc : MOSQ_ERR_CONN_LOST;
    }
}

static void cb_publish(struct mosquitto *m, void *obj, int mid, int reason,
                       const mosquitto_property *p)
{
    conn *c = obj;
    vg_mqtt *b = c->b;
    if (b->c != c)
        return;
    for (qmsg *q = b->qhead; q; q = q->next) {
        if (q->sent && q->mid == mid) {
            q_unlink(b, q);
            qmsg_free(q);
            b->published++;
            if (reason >= 0x80)
                vg_log(VG_LOG_WARNING, MOD, "the broker refused a message: %s",
                       mosquitto_reason_string(reason));
            return;
        }
    }
}

static void on_message(vg_mqtt *b, const struct mosquitto_message *msg,
                       const mosquitto_property *props);

static void cb_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    conn *c = obj;
    if (c->b->c == c && c->b->state == ST_CONNECTED)
        on_message(c->b, msg, props);
}

static void connect_work(uv_work_t *w)
{
    conn *c = w->data;
    vg_mqtt *b = c->b;
    errno = 0;
    c->connect_rc =
        mosquitto_connect_bind_async(c->m, b->host, b->port, b->cfg->mqtt_keepalive_s, NULL);
    c->connect_errno = errno;
}

static void connect_done(uv_work_t *w, int status)
{
    conn *c = w->data;
    vg_mqtt *b = c->b;
    if (c->abandoned || status < 0 || b->state == ST_STOPPED) {
        mosquitto_destroy(c->m);
        free(c);
        return;
    }
    if (c->connect_rc != MOSQ_ERR_SUCCESS) {
        errno = c->connect_errno;
        vg_log(b->connects ? VG_LOG_WARNING : VG_LOG_ERR, MOD, "cannot connect to %s:%d: %s",
               b->host, b->port,
               c->connect_rc == MOSQ_ERR_ERRNO && c->connect_errno
                   ? strerror(c->connect_errno)
                   : mosquitto_strerror(c->connect_rc));
        b->c = NULL;
        mosquitto_destroy(c->m);
        free(c);
        b->state = ST_WAIT;
        schedule_retry(b);
        return;
    }
    int fd = mosquitto_socket(c->m);
    if (fd < 0 || uv_poll_init_socket(b->loop, &c->poll, fd) < 0) {
        vg_log(VG_LOG_WARNING, MOD, "cannot poll the broker's socket");
        b->c = NULL;
        mosquitto_destroy(c->m);
        free(c);
        b->state = ST_WAIT;
        schedule_retry(b);
        return;
    }
    c->poll.data = c;
    c->poll_open = 1;
    b->state = ST_HANDSHAKE;
    update_poll(c);
}

/* libmosquitto's own errors and warnings (TLS verification, protocol errors); its debug lines
 * are not forwarded. It never logs the password. */
static void cb_log(struct mosquitto *m, void *obj, int level, const char *text)
{
    if (level & MOSQ_LOG_ERR)
        vg_log(VG_LOG_WARNING, MOD, "libmosquitto: %s", text);
    else if (level & MOSQ_LOG_WARNING)
        vg_log(VG_LOG_INFO, MOD, "libmosquitto: %s", text);
}

static int configure(vg_mqtt *b, struct mosquitto *m)
{
    const vg_daemon_config *cfg = b->cfg;
    int rc;
    if ((rc = mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, b->protocol)) != 0)
        return rc;
    if (cfg->mqtt_username[0] &&
        (rc = mosquitto_username_pw_set(m, cfg->mqtt_username, b->password)) != 0)
        return rc;
    if (b->tls) {
        const char *ca = cfg->mqtt_ca_file[0] ? cfg->mqtt_ca_file : NULL;
        if ((rc = mosquitto_tls_set(m, ca, ca ? NULL : "/etc/ssl/certs",
                                    cfg->mqtt_cert_file[0] ? cfg->mqtt_cert_file : NULL,
                                    cfg->mqtt_key_file[0] ? cfg->mqtt_key_file : NULL, NULL)) != 0)
            return rc;
    }
    char topic[TOPIC_MAX];
    snprintf(topic, sizeof topic, "%savailable", b->prefix);
    if ((rc = mosquitto_will_set(m, topic, 7, "offline", 1, true)) != 0)
        return rc;
    mosquitto_log_callback_set(m, cb_log);
    mosquitto_connect_v5_callback_set(m, cb_connect);
    mosquitto_disconnect_v5_callback_set(m, cb_disconnect);
    mosquitto_publish_v5_callback_set(m, cb_publish);
    mosquitto_message_v5_callback_set(m, cb_message);
    return 0;
}

static void start_connect(vg_mqtt *b)
{
    if (b->state == ST_STOPPED || b->c)
        return;
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        schedule_retry(b);
        return;
    }
    c->b = b;
    c->m = mosquitto_new(b->client_id, true, c);
    int rc = c->m ? configure(b, c->m) : MOSQ_ERR_NOMEM;
    if (rc != 0) {
        vg_log(VG_LOG_ERR, MOD, "cannot set up the MQTT client: %s", mosq_err(rc));
        mosquitto_destroy(c->m);
        free(c);
        schedule_retry(b);
        return;
    }
    b->c = c;
    b->state = ST_CONNECTING;
    c->work.data = c;
    if (uv_queue_work(b->loop, &c->work, connect_work, connect_done) < 0) {
        b->c = NULL;
        mosquitto_destroy(c->m);
        free(c);
        b->state = ST_WAIT;
        schedule_retry(b);
    }
}

static void on_retry(uv_timer_t *t)
{
    vg_mqtt *b = t->data;
    b->reconnects++;
    start_connect(b);
}

static void schedule_retry(vg_mqtt *b)
{
    if (b->state == ST_STOPPED)
        return;
    int ms = b->backoff_ms;
    b->backoff_ms = VG_MIN(b->backoff_ms * 2, BACKOFF_MAX_MS);
    vg_log(VG_LOG_INFO, MOD, "reconnecting to %s:%d in %.1f s", b->host, b->port, ms / 1000.0);
    uv_timer_start(&b->retry, on_retry, (uint64_t)ms, 0);
}

/* Publishes directly (retained state, discovery, replies, QoS 0 records): not kept if the
 * connection drops (the retained topics are all published again on the next connection). */
static void publish_now(vg_mqtt *b, const char *topic, const char *payload, size_t len, int qos,
                        int retain, const mosquitto_property *props)
{
    conn *c = b->c;
    if (b->state != ST_CONNECTED || !c)
        return;
    int rc = mosquitto_publish_v5(c->m, NULL, topic, (int)len, payload, qos, retain, props);
    if (rc == MOSQ_ERR_SUCCESS)
        b->published++;
    else if (rc != MOSQ_ERR_NO_CONN)
        vg_log(VG_LOG_WARNING, MOD, "cannot publish on %s: %s", topic, mosq_err(rc));
}

static int send_one(vg_mqtt *b, qmsg *q)
{
    conn *c = b->c;
    if (!c || b->state != ST_CONNECTED)
        return -1;
    int rc =
        mosquitto_publish_v5(c->m, &q->mid, q->topic, (int)q->len, q->payload, 1, q->retain, NULL);
    if (rc == MOSQ_ERR_SUCCESS) {
        q->sent = 1;
        return 0;
    }
    if (rc == MOSQ_ERR_OVERSIZE_PACKET || rc == MOSQ_ERR_PAYLOAD_SIZE) {
        vg_log(VG_LOG_WARNING, MOD, "a message on %s is larger than the broker takes: dropped",
               q->topic);
        q_unlink(b, q);
        qmsg_free(q);
        b->dropped++;
    }
    return -1;
}

static void flush_queue(vg_mqtt *b)
{
    qmsg *q = b->qhead;
    while (q && b->state == ST_CONNECTED) {
        qmsg *nx = q->next;
        if (!q->sent)
            send_one(b, q);
        q = nx;
    }
}

/* ===================================================================================================
 * Streams: retained topics, discovery, the change feed.
 */
static mstream *find_stream(vg_mqtt *b, const char *name)
{
    for (mstream *s = b->streams; s; s = s->next)
        if (!strcmp(s->name, name))
            return s;
    return NULL;
}

static void xlate_clear(xlate *x)
{
    for (int i = 0; i < MAX_QUESTIONS; i++) {
        free(x->q[i].answer_text);
        free(x->q[i].open_after);
        free(x->q[i].snap);
        x->q[i].answer_text = x->q[i].open_after = NULL;
        x->q[i].snap = NULL;
        x->q[i].open_id[0] = 0;
    }
}

static void set_question(xlate *x, int i, const char *text)
{
    if (i < 0 || i >= MAX_QUESTIONS)
        return;
    mquestion *q = &x->q[i];
    if (q->known && !strcmp(q->text, text))
        return;
    snprintf(q->text, sizeof q->text, "%s", text);
    vg_mqtt_slug(text, i, q->slug, SLUG_MAX + 1);
    /* Two questions of one stream with the same slug: the later one gets _<index>. */
    for (int j = 0; j < i; j++)
        if (x->q[j].known && !strcmp(x->q[j].slug, q->slug)) {
            size_t n = strlen(q->slug);
            snprintf(q->slug + n, sizeof q->slug - n, "_%d", i);
            break;
        }
    q->known = 1;
    if (i >= x->n_q)
        x->n_q = i + 1;
}

/* The stream's questions from the request path (`streams`), once. */
static void fetch_questions(vg_mqtt *b, mstream *s)
{
    if (s->fetched)
        return;
    s->fetched = 1;
    const char *req = "{\"v\":1,\"op\":\"streams\"}";
    size_t n = 0;
    char *rep = vg_dispatch_request(b->dispatch, req, strlen(req), &n);
    cJSON *r = rep ? cJSON_ParseWithLength(rep, n) : NULL;
    free(rep);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(r, "streams"), *it;
    cJSON_ArrayForEach(it, arr)
    {
        const char *name = vg_jstr(it, "name");
        if (!name || strcmp(name, s->name))
            continue;
        const cJSON *qs = cJSON_GetObjectItemCaseSensitive(it, "questions"), *q;
        int i = 0;
        cJSON_ArrayForEach(q, qs)
        {
            if (cJSON_IsString(q))
                set_question(&s->x, i, q->valuestring);
            i++;
        }
    }
    cJSON_Delete(r);
}

static mstream *get_stream(vg_mqtt *b, const char *name)
{
    mstream *s = find_stream(b, name);
    if (s)
        return s;
    if (!(s = calloc(1, sizeof *s)))
        return NULL;
    snprintf(s->name, sizeof s->name, "%s", name);
    s->next = b->streams;
    b->streams = s;
    return s;
}

/* Home Assistant ids: the stream name with anything but [A-Za-z0-9_-] as '_'. */
static void ha_id(const char *name, char *out, size_t outlen)
{
    size_t n = 0;
    for (; *name && n + 1 < outlen; name++)
        out[n++] = isalnum((unsigned char)*name) || *name == '-' ? *name : '_';
    out[n] = 0;
}

static void add_device(vg_mqtt *b, cJSON *o, const mstream *s)
{
    char topic[TOPIC_MAX], id[160];
    ha_id(s->name, id, sizeof id);
    snprintf(topic, sizeof topic, "%savailable", b->prefix);
    cJSON_AddStringToObject(o, "availability_topic", topic);
    cJSON_AddStringToObject(o, "payload_available", "online");
    cJSON_AddStringToObject(o, "payload_not_available", "offline");
    cJSON *d = cJSON_AddObjectToObject(o, "device");
    cJSON *ids = cJSON_AddArrayToObject(d, "identifiers");
    char did[200];
    snprintf(did, sizeof did, "vigil_%s", id);
    cJSON_AddItemToArray(ids, cJSON_CreateString(did));
    char dn[200];
    snprintf(dn, sizeof dn, "vigil %s", s->name);
    cJSON_AddStringToObject(d, "name", dn);
    cJSON_AddStringToObject(d, "manufacturer", "vigil");
    cJSON_AddStringToObject(d, "model", b->model_name);
    cJSON_AddStringToObject(d, "sw_version", VG_VERSION);
    cJSON *org = cJSON_AddObjectToObject(o, "origin");
    cJSON_AddStringToObject(org, "name", "vigil");
    cJSON_AddStringToObject(org, "sw_version", VG_VERSION);
}

/* Discovery configs of question i of s (binary_sensor, event and, when streams keep snapshots,
 * image), once per connection. */
static void publish_discovery(vg_mqtt *b, mstream *s, int i)
{
    mquestion *q = &s->x.q[i];
    if (!b->cfg->mqtt_discovery_prefix[0] || !q->known || b->state != ST_CONNECTED)
        return;
    if (q->discovered)
        return;
    char id[160], topic[TOPIC_MAX], uid[TOPIC_MAX], st[TOPIC_MAX];
    ha_id(s->name, id, sizeof id);
    static const char *const comps[] = {"binary_sensor", "event", "image"};
    static const char *const suffix[] = {"", "_event", "_snapshot"};
    int n_comps = b->cfg->stream_snapshots_max > 0 ? 3 : 2;
    for (int k = 0; k < n_comps; k++) {
        snprintf(topic, sizeof topic, "%s/%s/vigil_%s/%s/config", b->cfg->mqtt_discovery_prefix,
                 comps[k], id, q->slug);
        cJSON *o = cJSON_CreateObject();
        if (!o)
            return;
        cJSON_AddStringToObject(o, "name", q->text);
        snprintf(uid, sizeof uid, "vigil_%s_%s%s", id, q->slug, suffix[k]);
        cJSON_AddStringToObject(o, "unique_id", uid);
        if (k == 0) {
            snprintf(st, sizeof st, "%s%s/%s/active", b->prefix, s->name, q->slug);
            cJSON_AddStringToObject(o, "state_topic", st);
            cJSON_AddStringToObject(o, "payload_on", "ON");
            cJSON_AddStringToObject(o, "payload_off", "OFF");
        } else if (k == 2) {
            snprintf(st, sizeof st, "%s%s/%s/snapshot", b->prefix, s->name, q->slug);
            cJSON_AddStringToObject(o, "image_topic", st);
            cJSON_AddStringToObject(o, "content_type", "image/jpeg");
        } else {
            snprintf(st, sizeof st, "%s%s/%s/event", b->prefix, s->name, q->slug);
            cJSON_AddStringToObject(o, "state_topic", st);
            cJSON *types = cJSON_AddArrayToObject(o, "event_types");
            cJSON_AddItemToArray(types, cJSON_CreateString("new"));
            cJSON_AddItemToArray(types, cJSON_CreateString("update"));
            cJSON_AddItemToArray(types, cJSON_CreateString("end"));
        }
        add_device(b, o, s);
        char *txt = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (txt)
            publish_now(b, topic, txt, strlen(txt), 1, 1, NULL);
        free(txt);
    }
    q->discovered = 1;
}

static void publish_active(vg_mqtt *b, mstream *s, int i)
{
    mquestion *q = &s->x.q[i];
    if (!q->known)
        return;
    char topic[TOPIC_MAX];
    snprintf(topic, sizeof topic, "%s%s/%s/active", b->prefix, s->name, q->slug);
    publish_now(b, topic, q->active ? "ON" : "OFF", q->active ? 2 : 3, 1, 1, NULL);
}

static void publish_state(vg_mqtt *b, mstream *s)
{
    if (!s->state_json)
        return;
    char topic[TOPIC_MAX];
    snprintf(topic, sizeof topic, "%s%s/state", b->prefix, s->name);
    publish_now(b, topic, s->state_json, strlen(s->state_json), 1, 1, NULL);
}

static void publish_snapshot(vg_mqtt *b, mstream *s, int i)
{
    mquestion *q = &s->x.q[i];
    if (!q->known || !q->snap)
        return;
    char topic[TOPIC_MAX];
    snprintf(topic, sizeof topic, "%s%s/%s/snapshot", b->prefix, s->name, q->slug);
    publish_now(b, topic, (const char *)q->snap, q->snap_len, 1, 1, NULL);
}

/* Everything retained about s, again (after a connect). */
static void publish_stream_all(vg_mqtt *b, mstream *s)
{
    publish_state(b, s);
    for (int i = 0; i < s->x.n_q; i++) {
        if (!s->ended)
            publish_discovery(b, s, i);
        publish_active(b, s, i);
        publish_snapshot(b, s, i);
    }
}

/* A `started` record with "snapshot": true: the JPEG the stream kept for it becomes the question's
 * retained snapshot. */
static void take_snapshot(vg_mqtt *b, mstream *s, int qi, const cJSON *rec)
{
    const char *what = vg_jstr(rec, "event");
    if (qi < 0 || qi >= MAX_QUESTIONS || !what || strcmp(what, "started") != 0 ||
        !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "snapshot")))
        return;
    const uint8_t *jpeg = NULL;
    size_t len = 0;
    unsigned long long seq = (unsigned long long)vg_jnum(rec, "seq", 0);
    if (vg_streams_snapshot(b->dispatch->streams, s->name, seq, &jpeg, &len) < 0 || !len)
        return;
    uint8_t *copy = malloc(len);
    if (!copy)
        return;
    memcpy(copy, jpeg, len);
    free(s->x.q[qi].snap);
    s->x.q[qi].snap = copy;
    s->x.q[qi].snap_len = len;
    publish_snapshot(b, s, qi);
}

/* One output message of the translator. */
typedef struct xmsg {
    char topic[TOPIC_MAX];
    char *payload;
    size_t len;
    unsigned long long seq;
} xmsg;

/* Translates one `event` record of stream s (in seq order) into the change-feed messages
 * (<prefix>events and <prefix><stream>/<q>/event), updating x. Pure in (x, record): replays run
 * it on a scratch x. Returns the count written to out[2] (payloads owned by the caller), sets
 * *active to the question's new activity (-1 unchanged) and *qi to its index. */
static int translate_event(vg_mqtt *b, const char *stream, xlate *x, const cJSON *rec, xmsg out[2],
                           int *active, int *qi)
{
    *active = -1;
    int i = (int)vg_jnum(rec, "question", -1);
    *qi = i;
    const char *what = vg_jstr(rec, "event"), *qtext = vg_jstr(rec, "question_text");
    unsigned long long seq = (unsigned long long)vg_jnum(rec, "seq", 0);
    if (i < 0 || i >= MAX_QUESTIONS || !what || !seq)
        return 0;
    mquestion *q = &x->q[i];
    if (!q->known && qtext)
        set_question(x, i, qtext);
    if (!q->known)
        return 0;
    const char *type = !strcmp(what, "started") ? "new" : !strcmp(what, "ended") ? "end" : "update";
    int is_new = !strcmp(type, "new") || !q->open_id[0];
    if (is_new)
        snprintf(q->open_id, sizeof q->open_id, "%s-%llu", stream, seq);
    cJSON *before = NULL;
    if (!is_new && q->open_after)
        before = cJSON_Parse(q->open_after);
    cJSON *after = before ? cJSON_Duplicate(before, 1) : cJSON_CreateObject();
    if (!after) {
        cJSON_Delete(before);
        return 0;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(after, "id");
    cJSON_AddStringToObject(after, "id", q->open_id);
    static const char *const keys[] = {
        "stream",   "question", "question_index", "question_text", "label",
        "start",    "end",      "start_time",     "end_time",      "start_wall",
        "end_wall", "text",     "has_snapshot",   "origin",        "seq",
        "end_seq"};
    for (size_t k = 0; k < VG_ARRAY_LEN(keys); k++)
        cJSON_DeleteItemFromObjectCaseSensitive(after, keys[k]);
    const char *sw = vg_jstr(rec, "start_wall"), *ew = vg_jstr(rec, "end_wall");
    cJSON_AddStringToObject(after, "stream", stream);
    cJSON_AddStringToObject(after, "question", q->slug);
    cJSON_AddNumberToObject(after, "question_index", i);
    cJSON_AddStringToObject(after, "question_text", q->text);
    cJSON_AddStringToObject(after, "label", vg_jstr(rec, "label") ? vg_jstr(rec, "label") : "");
    cJSON_AddNumberToObject(after, "start", vg_jnum(rec, "start", 0));
    double st = iso_to_unix(sw), et = iso_to_unix(ew);
    int ended = !strcmp(type, "end");
    if (ended)
        cJSON_AddNumberToObject(after, "end", vg_jnum(rec, "end", 0));
    else
        cJSON_AddNullToObject(after, "end");
    if (st >= 0)
        cJSON_AddNumberToObject(after, "start_time", st);
    else
        cJSON_AddNullToObject(after, "start_time");
    if (ended && et >= 0)
        cJSON_AddNumberToObject(after, "end_time", et);
    else
        cJSON_AddNullToObject(after, "end_time");
    cJSON_AddStringToObject(after, "start_wall", sw ? sw : "");
    if (ended && ew)
        cJSON_AddStringToObject(after, "end_wall", ew);
    else
        cJSON_AddNullToObject(after, "end_wall");
    cJSON_AddStringToObject(after, "text", q->answer_text ? q->answer_text : "");
    /* The `started` record says whether a snapshot was kept; later messages carry it on. */
    int has_snap = is_new ? cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "snapshot"))
                          : cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(before, "has_snapshot"));
    cJSON_AddBoolToObject(after, "has_snapshot", has_snap);
    cJSON_AddStringToObject(after, "origin", "stream");
    /* seq: the record that started the occurrence (the id's number); end_seq: the one that ended
     * it. `events NAME --since seq-1` returns them. */
    unsigned long long first = 0;
    const char *dash = strrchr(q->open_id, '-');
    if (dash)
        first = strtoull(dash + 1, NULL, 10);
    cJSON_AddNumberToObject(after, "seq", (double)first);
    if (ended)
        cJSON_AddNumberToObject(after, "end_seq", (double)seq);
    else
        cJSON_AddNullToObject(after, "end_seq");

    cJSON *feed = cJSON_CreateObject();
    int n = 0;
    if (feed) {
        cJSON_AddStringToObject(feed, "type", type);
        cJSON_AddItemToObject(feed, "before", before ? before : cJSON_CreateNull());
        before = NULL;
        cJSON_AddItemToObject(feed, "after", cJSON_Duplicate(after, 1));
        char *t = cJSON_PrintUnformatted(feed);
        if (t) {
            snprintf(out[n].topic, TOPIC_MAX, "%sevents", b->prefix);
            out[n].payload = t;
            out[n].len = strlen(t);
            out[n].seq = seq;
            n++;
        }
        cJSON_Delete(feed);
    }
    cJSON_Delete(before);
    /* Home Assistant's event entity: the `after` object with event_type. */
    cJSON *ev = cJSON_Duplicate(after, 1);
    if (ev) {
        cJSON_AddStringToObject(ev, "event_type", type);
        char *t = cJSON_PrintUnformatted(ev);
        if (t) {
            snprintf(out[n].topic, TOPIC_MAX, "%s%s/%s/event", b->prefix, stream, q->slug);
            out[n].payload = t;
            out[n].len = strlen(t);
            out[n].seq = seq;
            n++;
        }
        cJSON_Delete(ev);
    }
    free(q->open_after);
    q->open_after = cJSON_PrintUnformatted(after);
    cJSON_Delete(after);
    if (ended) {
        q->open_id[0] = 0;
        free(q->open_after);
        q->open_after = NULL;
        *active = 0;
    } else {
        *active = 1;
    }
    return n;
}

static void translate_answer(xlate *x, const cJSON *rec)
{
    int i = (int)vg_jnum(rec, "question", -1);
    const char *t = vg_jstr(rec, "text");
    if (i < 0 || i >= MAX_QUESTIONS || !t)
        return;
    free(x->q[i].answer_text);
    x->q[i].answer_text = dup_s(t);
}

static void on_stream_record(vg_mqtt *b, const char *name, const char *kind, const char *payload,
                             size_t len)
{
    mstream *s = get_stream(b, name);
    if (!s)
        return;
    fetch_questions(b, s);
    if (!strcmp(kind, "state")) {
        free(s->state_json);
        s->state_json = dup_n(payload, len);
        cJSON *rec = cJSON_ParseWithLength(payload, len);
        const char *st = vg_jstr(rec, "state");
        if (st && strcmp(st, "ended") != 0 && s->ended) {
            s->ended = 0; /* watched again */
            s->fetched = 0;
            fetch_questions(b, s);
        }
        publish_state(b, s);
        if (st && !strcmp(st, "ended")) {
            /* The stream stopped (unwatched, or the daemon stops: the records do not say which):
             * its questions are no longer happening. Its entities stay (retained discovery), so a
             * restart does not delete them from Home Assistant. */
            for (int i = 0; i < s->x.n_q; i++) {
                if (s->x.q[i].active) {
                    s->x.q[i].active = 0;
                    publish_active(b, s, i);
                }
            }
            s->ended = 1;
        } else {
            for (int i = 0; i < s->x.n_q; i++) {
                publish_discovery(b, s, i);
                if (st && !strcmp(st, "connecting"))
                    publish_active(b, s, i); /* OFF: HA has a state from the start */
            }
        }
        cJSON_Delete(rec);
        return;
    }
    cJSON *rec = cJSON_ParseWithLength(payload, len);
    if (!rec)
        return;
    if (!strcmp(kind, "answer")) {
        translate_answer(&s->x, rec);
    } else if (!strcmp(kind, "event")) {
        xmsg out[2];
        int active, qi;
        int n = translate_event(b, s->name, &s->x, rec, out, &active, &qi);
        unsigned long long seq = (unsigned long long)vg_jnum(rec, "seq", 0);
        if (qi >= 0 && qi < MAX_QUESTIONS && s->x.q[qi].known) {
            publish_discovery(b, s, qi);
            if (active >= 0) {
                s->x.q[qi].active = active;
                publish_active(b, s, qi);
            }
            take_snapshot(b, s, qi, rec); /* before `new`, so has_snapshot finds it there */
        }
        for (int k = 0; k < n; k++) {
            enqueue(b, out[k].topic, out[k].payload, out[k].len, 0, s->name, seq, 0);
            free(out[k].payload);
        }
    }
    cJSON_Delete(rec);
}

/* After a connect: the change-feed messages of each stream's dropped range, from the stream's
 * log through the request path (`events`), translated again from REPLAY_BACK records earlier (the
 * answers and the start of the occurrences they belong to), put at the front of the queue. */
static void replay_stream(vg_mqtt *b, mstream *s)
{
    if (!s->drop_first)
        return;
    unsigned long long first = s->drop_first, last = s->drop_last;
    s->drop_first = s->drop_last = 0;
    unsigned long long since = first > REPLAY_BACK ? first - REPLAY_BACK - 1 : 0;
    xlate *x = calloc(1, sizeof *x);
    if (!x)
        return;
    for (int i = 0; i < s->x.n_q; i++)
        if (s->x.q[i].known)
            set_question(x, i, s->x.q[i].text);
    /* Collected first, then queued at the front in reverse, so they keep their order. */
    xmsg *msgs = NULL;
    size_t n_msgs = 0, cap = 0;
    unsigned long long found = 0, oldest = 0;
    int more = 1;
    while (more) {
        char req[256];
        int rl =
            snprintf(req, sizeof req,
                     "{\"v\":1,\"op\":\"events\",\"name\":\"%s\",\"since\":%llu,\"limit\":1000}",
                     s->name, since);
        size_t n = 0;
        char *rep = vg_dispatch_request(b->dispatch, req, (size_t)rl, &n);
        cJSON *r = rep ? cJSON_ParseWithLength(rep, n) : NULL;
        free(rep);
        const cJSON *evs = cJSON_GetObjectItemCaseSensitive(r, "events"), *it;
        more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "more")) &&
               cJSON_GetArraySize(evs) > 0;
        cJSON_ArrayForEach(it, evs)
        {
            unsigned long long seq = (unsigned long long)vg_jnum(it, "seq", 0);
            if (!oldest)
                oldest = seq;
            if (seq <= since)
                continue;
            since = seq;
            if (seq > last) {
                more = 0;
                break;
            }
            const char *kind = vg_jstr(it, "kind");
            if (kind && !strcmp(kind, "answer"))
                translate_answer(x, it);
            if (!kind || strcmp(kind, "event") != 0)
                continue;
            xmsg out[2];
            int active, qi;
            int k = translate_event(b, s->name, x, it, out, &active, &qi);
            for (int j = 0; j < k; j++) {
                if (seq < first) {
                    free(out[j].payload);
                    continue;
                }
                if (n_msgs == cap) {
                    size_t nc = cap ? cap * 2 : 16;
                    xmsg *nm = realloc(msgs, nc * sizeof *nm);
                    if (!nm) {
                        free(out[j].payload);
                        continue;
                    }
                    msgs = nm;
                    cap = nc;
                }
                msgs[n_msgs++] = out[j];
            }
            if (seq >= first)
                found++;
        }
        cJSON_Delete(r);
    }
    for (size_t i = n_msgs; i-- > 0;) {
        enqueue(b, msgs[i].topic, msgs[i].payload, msgs[i].len, 0, s->name, msgs[i].seq, 1);
        free(msgs[i].payload);
    }
    free(msgs);
    b->replayed += found;
    if (!oldest || oldest > first) {
        b->lost++;
        vg_log(VG_LOG_WARNING, MOD,
               "stream %s: events dropped from the queue (from seq %llu) are no longer in memory; "
               "read them with `vigil events %s --since %llu`",
               s->name, first, s->name, first - 1);
    }
    vg_log(VG_LOG_NOTICE, MOD,
           "stream %s: replayed %llu events (seq %llu-%llu) from its log after the queue dropped "
           "them",
           s->name, found, first, last);
    xlate_clear(x);
    free(x);
}

/* ===================================================================================================
 * Jobs, commands and the Frigate consumer.
 */
static void publish_job_result_frigate(vg_mqtt *b, frigate_job *fj, const cJSON *job);

static void on_job_record(vg_mqtt *b, const char *id, const char *kind, const char *payload,
                          size_t len)
{
    char topic[TOPIC_MAX];
    snprintf(topic, sizeof topic, "%sjobs/%s/%s", b->prefix, id, kind);
    if (!strcmp(kind, "state") || !strcmp(kind, "done"))
        enqueue(b, topic, payload, len, 0, NULL, 0, 0);
    else
        publish_now(b, topic, payload, len, 0, 0, NULL);
    if (strcmp(kind, "done") != 0)
        return;
    for (frigate_job **pp = &b->fjobs; *pp; pp = &(*pp)->next) {
        frigate_job *fj = *pp;
        if (strcmp(fj->job, id) != 0)
            continue;
        cJSON *job = cJSON_ParseWithLength(payload, len);
        if (job)
            publish_job_result_frigate(b, fj, job);
        cJSON_Delete(job);
        *pp = fj->next;
        free(fj);
        return;
    }
}

static void reply(vg_mqtt *b, const char *rtopic, const void *corr, uint16_t corr_len,
                  const char *text, size_t len)
{
    mosquitto_property *props = NULL;
    char topic[TOPIC_MAX];
    if (rtopic) {
        snprintf(topic, sizeof topic, "%s", rtopic);
        if (corr && corr_len)
            mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr, corr_len);
    } else {
        snprintf(topic, sizeof topic, "%sreply", b->prefix);
    }
    publish_now(b, topic, text, len, 1, 0, props);
    mosquitto_property_free_all(&props);
}

/* A message's payload as one JSON value and nothing after it (no NUL inside); NULL otherwise. */
static cJSON *parse_payload(const struct mosquitto_message *msg)
{
    size_t len = (size_t)msg->payloadlen;
    if (!msg->payload || len == 0 || memchr(msg->payload, 0, len))
        return NULL;
    /* libmosquitto NUL-terminates every payload (payloadlen + 1 bytes): cJSON checks that NUL
     * follows the value. */
    return cJSON_ParseWithLengthOpts(msg->payload, len + 1, NULL, 1);
}

static void on_command(vg_mqtt *b, const char *op, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    b->commands++;
    char *rtopic = NULL;
    void *corr = NULL;
    uint16_t corr_len = 0;
    if (props) {
        mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &rtopic, false);
        mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);
    }
    if (rtopic && (strchr(rtopic, '+') || strchr(rtopic, '#'))) {
        free(rtopic);
        rtopic = NULL;
    }
    char *rep = NULL;
    size_t n = 0;
    char why[300] = "";
    size_t max = b->cfg->max_message_size;
    if ((size_t)msg->payloadlen > max) {
        snprintf(why, sizeof why, "the command is %d bytes, over max_message_size (%zu)",
                 msg->payloadlen, max);
        rep = vg_proto_error_reply("", VG_WIRE_TOO_LARGE, why, &n);
    } else {
        cJSON *o = parse_payload(msg);
        if (!cJSON_IsObject(o)) {
            snprintf(why, sizeof why, "the payload on %s is not one JSON object", msg->topic);
            rep = vg_proto_error_reply("", VG_WIRE_BAD_JSON, why, &n);
        } else {
            const cJSON *ov = cJSON_GetObjectItemCaseSensitive(o, "op");
            if (ov && (!cJSON_IsString(ov) || strcmp(ov->valuestring, op) != 0)) {
                snprintf(why, sizeof why, "\"op\" on %s must be \"%s\" (or left out)", msg->topic,
                         op);
                rep = vg_proto_error_reply("", VG_WIRE_BAD_REQUEST, why, &n);
            } else {
                if (!ov)
                    cJSON_AddStringToObject(o, "op", op);
                if (!cJSON_GetObjectItemCaseSensitive(o, "v"))
                    cJSON_AddNumberToObject(o, "v", VG_PROTO_VERSION);
                /* The request path checks the rest (fields, UTF-8, duplicates) as for any door;
                 * a payload cJSON repaired would hide that, so the original text goes through
                 * when it already has v and op. */
                char *req = NULL;
                if (ov && cJSON_GetObjectItemCaseSensitive(o, "v"))
                    req = dup_n(msg->payload, (size_t)msg->payloadlen);
                else
                    req = cJSON_PrintUnformatted(o);
                if (req)
                    rep = vg_dispatch_request(b->dispatch, req, strlen(req), &n);
                free(req);
            }
        }
        cJSON_Delete(o);
    }
    if (rep) {
        cJSON *r = cJSON_ParseWithLength(rep, n);
        if (r && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"))) {
            b->command_errors++;
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
            vg_log(VG_LOG_WARNING, MOD, "command on %s refused: %s: %s", msg->topic,
                   vg_jstr(e, "code") ? vg_jstr(e, "code") : "?",
                   vg_jstr(e, "message") ? vg_jstr(e, "message") : "");
        }
        cJSON_Delete(r);
        reply(b, rtopic, corr, corr_len, rep, n);
    }
    free(rep);
    free(rtopic);
    free(corr);
}

static int safe_token(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
            return 0;
    return 1;
}

/* A message on mqtt_frigate_topic: when a review ends, one clip job per configured question. */
static void on_frigate(vg_mqtt *b, const struct mosquitto_message *msg)
{
    if ((size_t)msg->payloadlen > b->cfg->max_message_size) {
        vg_log(VG_LOG_WARNING, MOD,
               "a Frigate review of %d bytes is over max_message_size: ignored", msg->payloadlen);
        return;
    }
    cJSON *o = parse_payload(msg);
    const char *type = vg_jstr(o, "type");
    if (!o || !type) {
        vg_log(VG_LOG_WARNING, MOD, "a message on %s is not a Frigate review: ignored", msg->topic);
        cJSON_Delete(o);
        return;
    }
    if (strcmp(type, "end") != 0) {
        cJSON_Delete(o);
        return;
    }
    const cJSON *after = cJSON_GetObjectItemCaseSensitive(o, "after");
    const char *id = vg_jstr(after, "id"), *camera = vg_jstr(after, "camera");
    double t0 = vg_jnum(after, "start_time", -1), t1 = vg_jnum(after, "end_time", -1);
    if (!id || !camera || !safe_token(id, 48) || !safe_token(camera, 48) || !(t0 > 0) ||
        !(t1 >= t0) || t1 - t0 > 86400) {
        vg_log(VG_LOG_WARNING, MOD,
               "a Frigate review on %s has no usable after.id, after.camera, after.start_time and "
               "after.end_time: ignored",
               msg->topic);
        cJSON_Delete(o);
        return;
    }
    b->frigate_reviews++;
    char url[VG_CFG_STR + 256];
    const char *base = b->cfg->mqtt_frigate_url;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    snprintf(url, sizeof url, "%.*s/api/%s/start/%.3f/end/%.3f/clip.mp4", (int)bl, base, camera, t0,
             t1);
    for (int i = 0; i < b->n_frigate_q; i++) {
        frigate_job *fj = calloc(1, sizeof *fj);
        if (!fj)
            break;
        snprintf(fj->job, sizeof fj->job, "frigate-%s-q%d", id, i);
        snprintf(fj->review, sizeof fj->review, "%s", id);
        snprintf(fj->camera, sizeof fj->camera, "%s", camera);
        fj->qi = i;
        fj->start_time = t0;
        fj->end_time = t1;
        cJSON *req = cJSON_CreateObject();
        cJSON_AddNumberToObject(req, "v", VG_PROTO_VERSION);
        cJSON_AddStringToObject(req, "op", "ask");
        cJSON_AddStringToObject(req, "job", fj->job);
        cJSON_AddStringToObject(req, "video", url);
        cJSON_AddStringToObject(req, "question", b->frigate_q[i]);
        char *txt = cJSON_PrintUnformatted(req);
        cJSON_Delete(req);
        size_t n = 0;
        char *rep = txt ? vg_dispatch_request(b->dispatch, txt, strlen(txt), &n) : NULL;
        free(txt);
        cJSON *r = rep ? cJSON_ParseWithLength(rep, n) : NULL;
        free(rep);
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"))) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
            vg_log(VG_LOG_WARNING, MOD, "Frigate review %s: cannot ask about %s: %s: %s", id, url,
                   vg_jstr(e, "code") ? vg_jstr(e, "code") : "internal",
                   vg_jstr(e, "message") ? vg_jstr(e, "message") : "out of memory");
            free(fj);
        } else if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "existing"))) {
            free(fj); /* the same review again: its job runs (or ran) already */
        } else {
            vg_log(VG_LOG_INFO, MOD, "Frigate review %s (%s): job %s", id, camera, fj->job);
            fj->next = b->fjobs;
            b->fjobs = fj;
        }
        cJSON_Delete(r);
    }
    cJSON_Delete(o);
}

static void publish_job_result_frigate(vg_mqtt *b, frigate_job *fj, const cJSON *job)
{
    const char *state = vg_jstr(job, "state");
    cJSON *feed = cJSON_CreateObject();
    if (!feed)
        return;
    cJSON_AddStringToObject(feed, "type", "end");
    cJSON_AddNullToObject(feed, "before");
    cJSON *a = cJSON_AddObjectToObject(feed, "after");
    cJSON_AddStringToObject(a, "id", fj->job);
    cJSON_AddStringToObject(a, "stream", fj->camera);
    char slug[SLUG_MAX + 1];
    vg_mqtt_slug(b->frigate_q[fj->qi], fj->qi, slug, sizeof slug);
    cJSON_AddStringToObject(a, "question", slug);
    cJSON_AddNumberToObject(a, "question_index", fj->qi);
    cJSON_AddStringToObject(a, "question_text", b->frigate_q[fj->qi]);
    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(job, "events");
    const cJSON *e0 = cJSON_GetArrayItem(evs, 0);
    cJSON_AddStringToObject(a, "label", e0 && vg_jstr(e0, "label") ? vg_jstr(e0, "label") : "");
    if (e0) {
        cJSON_AddNumberToObject(a, "start", vg_jnum(e0, "start", 0));
        cJSON_AddNumberToObject(a, "end", vg_jnum(e0, "end", 0));
        cJSON_AddNumberToObject(a, "start_time", fj->start_time + vg_jnum(e0, "start", 0));
        cJSON_AddNumberToObject(a, "end_time", fj->start_time + vg_jnum(e0, "end", 0));
    } else {
        cJSON_AddNullToObject(a, "start");
        cJSON_AddNullToObject(a, "end");
        cJSON_AddNumberToObject(a, "start_time", fj->start_time);
        cJSON_AddNumberToObject(a, "end_time", fj->end_time);
    }
    cJSON_AddStringToObject(a, "text", vg_jstr(job, "text") ? vg_jstr(job, "text") : "");
    cJSON_AddFalseToObject(a, "has_snapshot");
    cJSON_AddStringToObject(a, "origin", "frigate");
    cJSON_AddStringToObject(a, "frigate_review_id", fj->review);
    cJSON_AddStringToObject(a, "job", fj->job);
    cJSON_AddStringToObject(a, "state", state ? state : "");
    cJSON_AddItemToObject(a, "events", evs ? cJSON_Duplicate(evs, 1) : cJSON_CreateArray());
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(job, "error");
    cJSON_AddItemToObject(a, "error", err ? cJSON_Duplicate(err, 1) : cJSON_CreateNull());
    char *txt = cJSON_PrintUnformatted(feed);
    cJSON_Delete(feed);
    if (txt) {
        char topic[TOPIC_MAX];
        snprintf(topic, sizeof topic, "%sevents", b->prefix);
        enqueue(b, topic, txt, strlen(txt), 0, NULL, 0, 0);
    }
    free(txt);
}

static void on_message(vg_mqtt *b, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    static const char *const ops[] = {"watch", "unwatch", "ask"};
    size_t pl = strlen(b->prefix);
    if (!strncmp(msg->topic, b->prefix, pl)) {
        for (size_t i = 0; i < VG_ARRAY_LEN(ops); i++) {
            size_t ol = strlen(ops[i]);
            if (!strncmp(msg->topic + pl, ops[i], ol) && !strcmp(msg->topic + pl + ol, "/set")) {
                on_command(b, ops[i], msg, props);
                return;
            }
        }
    }
    if (b->n_frigate_q > 0 && !strcmp(msg->topic, b->cfg->mqtt_frigate_topic))
        on_frigate(b, msg);
}

static void on_connected(vg_mqtt *b)
{
    b->state = ST_CONNECTED;
    b->backoff_ms = BACKOFF_MIN_MS;
    b->connects++;
    vg_log(VG_LOG_NOTICE, MOD, "connected to %s:%d (MQTT %s%s)", b->host, b->port,
           b->protocol == MQTT_PROTOCOL_V5 ? "5" : "3.1.1", b->tls ? ", TLS" : "");
    conn *c = b->c;
    char topic[TOPIC_MAX];
    static const char *const ops[] = {"watch", "unwatch", "ask"};
    for (size_t i = 0; i < VG_ARRAY_LEN(ops); i++) {
        snprintf(topic, sizeof topic, "%s%s/set", b->prefix, ops[i]);
        mosquitto_subscribe_v5(c->m, NULL, topic, 1, 0, NULL);
    }
    if (b->n_frigate_q > 0)
        mosquitto_subscribe_v5(c->m, NULL, b->cfg->mqtt_frigate_topic, 1, 0, NULL);
    snprintf(topic, sizeof topic, "%savailable", b->prefix);
    publish_now(b, topic, "online", 6, 1, 1, NULL);
    for (mstream *s = b->streams; s; s = s->next)
        publish_stream_all(b, s);
    for (mstream *s = b->streams; s; s = s->next)
        replay_stream(b, s);
    flush_queue(b);
}

/* ===================================================================================================
 * The sink and the inbox.
 */
static void handle_record(vg_mqtt *b, const char *topic, const char *payload, size_t len)
{
    const char *kind = strrchr(topic, '/');
    if (!kind)
        return;
    char name[128];
    if (!strncmp(topic, "stream/", 7)) {
        size_t n = (size_t)(kind - (topic + 7));
        if (n == 0 || n >= sizeof name)
            return;
        memcpy(name, topic + 7, n);
        name[n] = 0;
        on_stream_record(b, name, kind + 1, payload, len);
    } else if (!strncmp(topic, "job/", 4)) {
        size_t n = (size_t)(kind - (topic + 4));
        if (n == 0 || n >= sizeof name)
            return;
        memcpy(name, topic + 4, n);
        name[n] = 0;
        on_job_record(b, name, kind + 1, payload, len);
    }
}

static void on_drain(uv_timer_t *t)
{
    vg_mqtt *b = t->data;
    inbox_item *it = b->in_head;
    b->in_head = b->in_tail = NULL;
    while (it) {
        inbox_item *nx = it->next;
        if (b->state != ST_STOPPED)
            handle_record(b, it->topic, it->payload, it->len);
        free(it->topic);
        free(it->payload);
        free(it);
        it = nx;
    }
    if (b->c)
        update_poll(b->c);
}

static void sink(const char *topic, const char *payload, size_t len, void *opaque)
{
    vg_mqtt *b = opaque;
    if (b->state == ST_STOPPED)
        return;
    inbox_item *it = calloc(1, sizeof *it);
    if (!it || !(it->topic = dup_s(topic)) || !(it->payload = dup_n(payload, len))) {
        if (it)
            free(it->topic);
        free(it);
        b->dropped++;
        return;
    }
    it->len = len;
    if (b->in_tail)
        b->in_tail->next = it;
    else
        b->in_head = it;
    b->in_tail = it;
    if (!uv_is_active((uv_handle_t *)&b->drain))
        uv_timer_start(&b->drain, on_drain, 0, 0);
}

/* ===================================================================================================
 * Start, stop, info.
 */
int vg_mqtt_start(const vg_mqtt_params *p, vg_mqtt **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = vg_mqtt_check_config(p->cfg, err, errlen);
    if (rc < 0)
        return rc;
    vg_mqtt *b = calloc(1, sizeof *b);
    if (!b)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    b->loop = p->loop;
    b->cfg = p->cfg;
    b->dispatch = p->dispatch;
    b->bus = p->bus;
    b->sink = -1;
    snprintf(b->model_name, sizeof b->model_name, "%s", p->model_name ? p->model_name : "vigild");
    parse_url(p->cfg->mqtt_url, b->host, sizeof b->host, &b->port, &b->tls);
    b->protocol = !strcmp(p->cfg->mqtt_protocol, "3.1.1") ? MQTT_PROTOCOL_V311 : MQTT_PROTOCOL_V5;
    size_t pl = strlen(p->cfg->mqtt_prefix);
    snprintf(b->prefix, sizeof b->prefix, "%s%s", p->cfg->mqtt_prefix,
             pl && p->cfg->mqtt_prefix[pl - 1] == '/' ? "" : "/");
    if (p->cfg->mqtt_client_id[0]) {
        snprintf(b->client_id, sizeof b->client_id, "%s", p->cfg->mqtt_client_id);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = 0;
        snprintf(b->client_id, sizeof b->client_id, "vigild-%s", host);
    }
    b->n_frigate_q = split_questions(p->cfg->mqtt_frigate_questions, b->frigate_q, MAX_FRIGATE_Q);
    if (b->n_frigate_q < 0)
        b->n_frigate_q = 0;
    if (p->cfg->mqtt_password_file[0]) {
        size_t len = 0;
        char e2[512];
        if ((rc = vg_read_file(p->cfg->mqtt_password_file, 4096, &b->password, &len, e2,
                               sizeof e2)) < 0) {
            free(b);
            return vg_fail(err, errlen, rc, "mqtt_password_file: %s", e2);
        }
        while (len > 0 && (b->password[len - 1] == '\n' || b->password[len - 1] == '\r'))
            b->password[--len] = 0;
    }
    mosquitto_lib_init();
    b->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(b->loop, &b->retry);
    uv_timer_init(b->loop, &b->misc);
    uv_timer_init(b->loop, &b->drain);
    b->retry.data = b->misc.data = b->drain.data = b;
    b->handles_open = 3;
    uv_timer_start(&b->misc, on_misc, 1000, 1000);
    if ((b->sink = vg_bus_add_sink(b->bus, sink, b)) < 0) {
        vg_mqtt_stop(b);
        *out = b;
        return vg_fail(err, errlen, VG_EBUSY, "no free sink on the publication bus");
    }
    vg_log(VG_LOG_NOTICE, MOD, "bridge to %s:%d (MQTT %s%s), topics under %s", b->host, b->port,
           b->protocol == MQTT_PROTOCOL_V5 ? "5" : "3.1.1", b->tls ? ", TLS" : "", b->prefix);
    b->state = ST_WAIT;
    start_connect(b);
    *out = b;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    vg_mqtt *b = h->data;
    b->handles_open--;
}

void vg_mqtt_stop(vg_mqtt *b)
{
    if (!b || b->state == ST_STOPPED)
        return;
    vg_bus_remove_sink(b->bus, b->sink);
    b->sink = -1;
    /* Records still in the inbox (the last `done` and `ended`) go out first. */
    on_drain(&b->drain);
    conn *c = b->c;
    if (c && b->state == ST_CONNECTED) {
        char topic[TOPIC_MAX];
        snprintf(topic, sizeof topic, "%savailable", b->prefix);
        mosquitto_publish_v5(c->m, NULL, topic, 7, "offline", 1, true, NULL);
        /* What the socket takes now; the rest is lost with the connection (QoS 1 messages would
         * be resent by the next vigild only as far as the streams' logs go). */
        for (int i = 0; i < 64 && mosquitto_want_write(c->m); i++)
            if (mosquitto_loop_write(c->m, 1) != MOSQ_ERR_SUCCESS)
                break;
        mosquitto_disconnect_v5(c->m, 0, NULL);
        vg_log(VG_LOG_NOTICE, MOD, "disconnected from %s:%d", b->host, b->port);
    }
    b->state = ST_STOPPED;
    if (c) {
        if (c->poll_open) {
            b->c = NULL;
            uv_poll_stop(&c->poll);
            c->poll.data = c;
            uv_close((uv_handle_t *)&c->poll, conn_closed);
        } else {
            c->abandoned = 1; /* connect_done frees it */
            b->c = NULL;
        }
    }
    uv_close((uv_handle_t *)&b->retry, on_handle_closed);
    uv_close((uv_handle_t *)&b->misc, on_handle_closed);
    uv_close((uv_handle_t *)&b->drain, on_handle_closed);
}

void vg_mqtt_free(vg_mqtt *b)
{
    if (!b)
        return;
    while (b->qhead) {
        qmsg *q = b->qhead;
        q_unlink(b, q);
        qmsg_free(q);
    }
    while (b->in_head) {
        inbox_item *it = b->in_head;
        b->in_head = it->next;
        free(it->topic);
        free(it->payload);
        free(it);
    }
    while (b->streams) {
        mstream *s = b->streams;
        b->streams = s->next;
        xlate_clear(&s->x);
        free(s->state_json);
        free(s);
    }
    while (b->fjobs) {
        frigate_job *f = b->fjobs;
        b->fjobs = f->next;
        free(f);
    }
    if (b->password) {
        volatile char *p = b->password;
        while (*p)
            *p++ = 0;
        free(b->password);
    }
    mosquitto_lib_cleanup();
    free(b);
}

void vg_mqtt_add_info(const vg_mqtt *b, cJSON *o)
{
    if (!b)
        return;
    cJSON *m = cJSON_AddObjectToObject(o, "mqtt");
    if (!m)
        return;
    cJSON_AddBoolToObject(m, "connected", b->state == ST_CONNECTED);
    cJSON_AddNumberToObject(m, "queued", (double)b->q_n);
    cJSON_AddNumberToObject(m, "queued_bytes", (double)b->q_bytes);
    cJSON_AddNumberToObject(m, "published", (double)b->published);
    cJSON_AddNumberToObject(m, "dropped", (double)b->dropped);
    cJSON_AddNumberToObject(m, "replayed", (double)b->replayed);
    cJSON_AddNumberToObject(m, "lost", (double)b->lost);
    cJSON_AddNumberToObject(m, "connects", (double)b->connects);
    cJSON_AddNumberToObject(m, "reconnects", (double)b->reconnects);
    cJSON_AddNumberToObject(m, "commands", (double)b->commands);
    cJSON_AddNumberToObject(m, "command_errors", (double)b->command_errors);
    cJSON_AddNumberToObject(m, "frigate_reviews", (double)b->frigate_reviews);
}
