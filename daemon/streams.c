/*
 * streams.c: live streams: standing questions over camera feeds, answered as events as they happen.
 * This file is the loop side; the reader threads are in stream_reader.c, the inference thread and
 * the KV window in stream_infer.c, the event transitions in stream_track.c and the inference gate
 * in infer_gate.c (streams_internal.h holds what they share; docs/design.md has the picture).
 *
 * Loop thread: the stream table, watch/unwatch/streams/events, sequence numbers, publishing on
 * `stream/<name>/{state,answer,event}`, the per-stream log (a vg_journal in
 * <state_dir>/streams/<name>.events, written and fsync'd by its own thread) and a bounded ring of
 * recent records for `events`. Workers send it messages through the streams' mailbox (mailbox.h:
 * post always takes the message; the loop drains it completely).
 * The reader thread loads the log at start (last sequence number, recent records) and opens it;
 * the janitor thread (here) closes the logs of removed streams, so the loop never touches a file.
 * Retention: a log keeps the newest stream_log_max_records records (snapshotted when the watch is
 * accepted, as log_max): the reader cuts a longer log back when it loads it, and the log's writer
 * thread cuts it back to log_max whenever log_max / 2 records have been appended beyond those kept
 * (at most 1.5 x log_max on disk). Sequence numbers are unaffected: the newest record survives.
 * A stream is freed on the loop once its reader and the inference thread have let go of it and the
 * janitor has closed its log (until then it stays in the table as `stopping`, so watching the same
 * name again reads a complete log).
 * `events` of a stream no longer in the table (unwatched, or watched before a restart) is served
 * from its log file, read on libuv's thread pool (events_from_log below); a shutdown waits for
 * those reads (n_reading) before the stream manager reports itself idle.
 * A log whose writes fail (a full disk) keeps its records in memory and retries them (journal.c);
 * `streams` shows it in the stream's `log` object, and new watches are refused while the daemon's
 * job journal is failing.
 */
#define _XOPEN_SOURCE 700
#include "streams_internal.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <strings.h>

#define MOD            "streams"
#define MSG_QUEUE_CAP  8192
#define PAIR_QUEUE_CAP 4
#define DEFAULT_FPS    2.0
#define DEFAULT_WINDOW 16.0
#define DEFAULT_UPDATE 2.0
/* Questions are first answered once the window holds this much video (or the whole window, if it
 * is shorter): an answer over one pair has almost no context (the demo model was trained on clips
 * of 4 s and more and answers a 0.5 s window with noise). */
#define DEFAULT_MIN_WINDOW 4.0

static const char *const state_names[] = {"connecting", "live", "stalled", "reconnecting", "ended"};

static void msg_free(void *p)
{
    smsg *m = p;
    if (!m)
        return;
    cJSON_Delete(m->payload);
    for (size_t i = 0; i < m->n_lines; i++)
        free(m->lines[i]);
    free(m->lines);
    free(m->line_seq);
    if (m->log)
        vg_journal_close(m->log);
    free(m);
}

static void stream_free(stream *s)
{
    if (!s)
        return;
    free(s->url);
    free(s->resolved);
    vg_media_policy_free(s->policy);
    for (int i = 0; i < s->nq; i++)
        free(s->qtext[i]);
    if (s->pairs) {
        void *it;
        while (vg_queue_pop(s->pairs, &it, 0) == 0)
            pair_free(it);
        vg_queue_destroy(s->pairs);
    }
    for (size_t i = 0; i < EV_RING_CAP; i++)
        free(s->ring[i]);
    for (size_t i = 0; i < s->snap_cap; i++)
        free(s->snap[i].jpeg);
    free(s->snap);
    for (int i = 0; s->kept && i < s->snapshots_max; i++)
        free(s->kept[i].jpeg);
    free(s->kept);
    pthread_mutex_destroy(&s->snap_mu);
    free(s);
}

/* ===================================================================================================
 * Workers -> loop, through ss->mb (mailbox.h): vg_mailbox_post takes the message and blocks only
 * while the loop is MSG_QUEUE_CAP messages behind.
 */
void post_publish(stream *s, const char *kind, cJSON *payload)
{
    smsg *m = calloc(1, sizeof *m);
    if (!m) {
        cJSON_Delete(payload);
        return;
    }
    m->type = M_PUBLISH;
    m->s = s;
    snprintf(m->kind, sizeof m->kind, "%s", kind);
    m->payload = payload;
    vg_mailbox_post(s->ss->mb, m);
}

void post_state(stream *s, enum stream_state st, const char *detail)
{
    cJSON *p = cJSON_CreateObject();
    if (!p)
        return;
    cJSON_AddStringToObject(p, "state", state_names[st]);
    if (detail && *detail)
        cJSON_AddStringToObject(p, "detail", detail);
    vg_log(st == SS_LIVE || st == SS_CONNECTING ? VG_LOG_INFO : VG_LOG_NOTICE, MOD,
           "stream %s: %s%s%s", s->name, state_names[st], detail && *detail ? ": " : "",
           detail ? detail : "");
    post_publish(s, "state", p);
}

void post_simple(stream *s, enum msg_type t)
{
    smsg *m = vg_mailbox_alloc_must(sizeof *m); /* without it the stream could never be freed */
    m->type = t;
    m->s = s;
    vg_mailbox_post(s->ss->mb, m);
}

/* ===================================================================================================
 * The janitor thread: closes removed streams' logs (the close fsyncs).
 */
static void *janitor_main(void *arg)
{
    vg_streams *ss = arg;
    void *item;
    while (vg_queue_pop(ss->janitor_q, &item, -1) == 0) {
        stream *s = item;
        vg_journal_close(s->log);
        s->log = NULL;
        post_simple(s, M_LOG_CLOSED);
    }
    return NULL;
}

/* ===================================================================================================
 * Loop side.
 */
static stream *find_stream(vg_streams *ss, const char *name)
{
    for (stream *s = ss->head; s; s = s->next)
        if (!strcmp(s->name, name))
            return s;
    return NULL;
}

static void ring_push(stream *s, char *line, unsigned long long seq)
{
    size_t at = (s->ring_head + s->ring_n) % EV_RING_CAP;
    if (s->ring_n == EV_RING_CAP) {
        at = s->ring_head;
        free(s->ring[at]);
        s->ring_head = (s->ring_head + 1) % EV_RING_CAP;
    } else {
        s->ring_n++;
    }
    s->ring[at] = line;
    s->ring_seq[at] = seq;
}

/* Reader thread: the frame at stream time t joins the ring of JPEG frames (the oldest leaves). */
void snap_keep_frame(stream *s, double t, const uint8_t *rgb, int w, int h)
{
    if (s->snapshots_max <= 0)
        return;
    uint8_t *jpeg;
    size_t len;
    char err[128];
    if (vg_jpeg_encode_rgb(rgb, w, h, 4, &jpeg, &len, err, sizeof err) < 0)
        return;
    pthread_mutex_lock(&s->snap_mu);
    if (!s->snap) {
        size_t cap = (size_t)VG_MIN(ceil(s->window_s * s->fps) + 4.0, (double)SNAP_RING_MAX);
        s->snap = calloc(cap, sizeof *s->snap);
        s->snap_cap = s->snap ? cap : 0;
    }
    if (s->snap_cap) {
        size_t at = (s->snap_head + s->snap_n) % s->snap_cap;
        if (s->snap_n == s->snap_cap) {
            at = s->snap_head;
            s->snap_head = (s->snap_head + 1) % s->snap_cap;
            free(s->snap[at].jpeg);
        } else {
            s->snap_n++;
        }
        s->snap[at] = (snap_frame){t, jpeg, len};
        jpeg = NULL;
    }
    pthread_mutex_unlock(&s->snap_mu);
    free(jpeg);
}

/* Loop: for a `started` event record o (sequence number seq), keeps a copy of the frame nearest to
 * its start among the frames the reader kept. Returns 1 when a snapshot was kept. */
static int snap_take(stream *s, const cJSON *o, unsigned long long seq)
{
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(o, "event");
    const cJSON *start = cJSON_GetObjectItemCaseSensitive(o, "start");
    if (s->snapshots_max <= 0 || !cJSON_IsString(ev) || strcmp(ev->valuestring, "started") ||
        !cJSON_IsNumber(start))
        return 0;
    if (!s->kept && !(s->kept = calloc((size_t)s->snapshots_max, sizeof *s->kept)))
        return 0;
    uint8_t *copy = NULL;
    size_t len = 0;
    pthread_mutex_lock(&s->snap_mu);
    size_t best = SIZE_MAX;
    double best_d = INFINITY;
    for (size_t i = 0; i < s->snap_n; i++) {
        size_t k = (s->snap_head + i) % s->snap_cap;
        double d = fabs(s->snap[k].t - start->valuedouble);
        if (d < best_d) {
            best_d = d;
            best = k;
        }
    }
    if (best != SIZE_MAX && (copy = malloc(s->snap[best].len))) {
        memcpy(copy, s->snap[best].jpeg, s->snap[best].len);
        len = s->snap[best].len;
    }
    pthread_mutex_unlock(&s->snap_mu);
    if (!copy)
        return 0;
    size_t cap = (size_t)s->snapshots_max;
    size_t at = (s->kept_head + s->kept_n) % cap;
    if (s->kept_n == cap) {
        at = s->kept_head;
        s->kept_head = (s->kept_head + 1) % cap;
        free(s->kept[at].jpeg);
    } else {
        s->kept_n++;
    }
    s->kept[at] = (snap_kept){seq, copy, len};
    return 1;
}

int vg_streams_snapshot(vg_streams *ss, const char *name, unsigned long long seq,
                        const uint8_t **jpeg, size_t *len)
{
    for (stream *s = ss ? ss->head : NULL; s; s = s->next) {
        if (strcmp(s->name, name))
            continue;
        for (size_t i = 0; i < s->kept_n; i++) {
            const snap_kept *k = &s->kept[(s->kept_head + i) % (size_t)s->snapshots_max];
            if (k->seq == seq) {
                *jpeg = k->jpeg;
                *len = k->len;
                return 0;
            }
        }
        return VG_ENOENT;
    }
    return VG_ENOENT;
}

static void stop_stream(stream *s);

static void publish(vg_streams *ss, stream *s, const char *kind, cJSON *p)
{
    if (ss->hooks.may_publish && !ss->hooks.may_publish(s->name, ss->hooks.opaque)) {
        /* Fenced: the stream's lease is no longer this node's; another node publishes it. */
        cJSON_Delete(p);
        if (!s->removing) {
            vg_log(VG_LOG_WARNING, MOD, "stream %s: lease lost; stopped here, nothing published",
                   s->name);
            stop_stream(s);
        }
        return;
    }
    unsigned long long seq = s->next_seq++;
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        cJSON_Delete(p);
        return;
    }
    cJSON_AddStringToObject(o, "stream", s->name);
    cJSON_AddNumberToObject(o, "seq", (double)seq);
    cJSON_AddStringToObject(o, "kind", kind);
    cJSON *it = p ? p->child : NULL;
    while (it) {
        cJSON *nx = it->next;
        cJSON_AddItemToObject(o, it->string, cJSON_DetachItemViaPointer(p, it));
        it = nx;
    }
    cJSON_Delete(p);
    if (!cJSON_GetObjectItemCaseSensitive(o, "time"))
        cJSON_AddNumberToObject(o, "time", unix_now());
    if (ss->hooks.node)
        cJSON_AddStringToObject(o, "node", ss->hooks.node);
    if (!strcmp(kind, "event") && snap_take(s, o, seq))
        cJSON_AddTrueToObject(o, "snapshot");
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line)
        return;
    size_t len = strlen(line);
    if (ss->bus) {
        char topic[VG_IPC_TOPIC_MAX];
        snprintf(topic, sizeof topic, "stream/%s/%s", s->name, kind);
        vg_bus_publish(ss->bus, topic, line, len);
    }
    if (s->log && vg_journal_append(s->log, line, len) < 0)
        vg_log(VG_LOG_WARNING, MOD, "stream %s: record %llu was not logged", s->name, seq);
    if (ss->hooks.on_record)
        ss->hooks.on_record(s->name, seq, line, len, ss->hooks.opaque);
    ring_push(s, line, seq);
}

/* Frees a removed stream once its threads are done and its log is closed. The log is closed by the
 * janitor (it fsyncs) while the stream stays in the table as "stopping", so a new watch of the same
 * name cannot read the log before its last records are on disk. */
static void maybe_free(vg_streams *ss, stream *s)
{
    if (!s->removing || s->reader_running || s->infer_running || s->closing)
        return;
    if (s->log) {
        s->closing = 1;
        if (vg_queue_push(ss->janitor_q, s, 0) == 0)
            return;
        s->closing = 0;
        vg_journal_close(s->log); /* the janitor's queue is full or gone: rare */
        s->log = NULL;
    }
    stream **pp = &ss->head;
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp)
        *pp = s->next;
    ss->n_streams--;
    vg_log(VG_LOG_INFO, MOD, "stream %s removed", s->name);
    stream_free(s);
}

/* The mailbox's handle callback: takes m. */
static void handle_msg(void *msg, void *opaque)
{
    vg_streams *ss = opaque;
    smsg *m = msg;
    stream *s = m->s;
    switch (m->type) {
    case M_LOADED:
        s->loaded = 1;
        s->log = m->log;
        m->log = NULL;
        s->next_seq = m->last_seq + 1;
        if (s->first_seq) {
            /* Cluster mode: the sequence continues the cluster's; the local log's records may
             * be another run's and are not served (msg_free frees the lines). */
            s->next_seq = s->first_seq;
            break;
        }
        for (size_t i = 0; i < m->n_lines; i++) {
            ring_push(s, m->lines[i], m->line_seq[i]);
            m->lines[i] = NULL;
        }
        break;
    case M_PUBLISH:
        if (!strcmp(m->kind, "state")) {
            const char *st =
                cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m->payload, "state"));
            const char *d =
                cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m->payload, "detail"));
            for (int i = 0; st && i < (int)VG_ARRAY_LEN(state_names); i++)
                if (!strcmp(st, state_names[i]))
                    s->state = (enum stream_state)i;
            snprintf(s->detail, sizeof s->detail, "%s", d ? d : "");
        }
        publish(ss, s, m->kind, m->payload);
        m->payload = NULL;
        break;
    case M_READER_DONE:
        pthread_join(s->reader, NULL); /* it has posted its last message and is returning */
        s->reader_running = 0;
        maybe_free(ss, s);
        break;
    case M_INFER_DONE:
        s->infer_running = 0;
        maybe_free(ss, s);
        break;
    case M_LOG_CLOSED:
        s->closing = 0;
        maybe_free(ss, s);
        break;
    }
    msg_free(m);
}

/* The mailbox's close callback. */
static void on_closed(void *opaque)
{
    vg_streams *ss = opaque;
    if (ss->on_idle)
        ss->on_idle(ss->on_idle_opaque);
}

static void check_idle(vg_streams *ss)
{
    if (!ss->stopping || ss->head || ss->closed || ss->n_reading)
        return;
    ss->closed = 1;
    vg_mailbox_close(ss->mb, on_closed);
}

/* The mailbox's drained callback. */
static void on_drained(void *opaque)
{
    check_idle(opaque);
}

static void stop_stream(stream *s)
{
    s->removing = 1;
    atomic_store(&s->stop, 1);
    vg_streams *ss = s->ss;
    pthread_mutex_lock(&ss->mu);
    ss->work = 1;
    pthread_cond_signal(&ss->cond);
    pthread_mutex_unlock(&ss->mu);
}

void vg_streams_shutdown(vg_streams *ss, void (*done)(void *opaque), void *opaque)
{
    ss->stopping = 1;
    ss->on_idle = done;
    ss->on_idle_opaque = opaque;
    for (stream *s = ss->head; s; s = s->next)
        stop_stream(s);
    check_idle(ss);
}

static cJSON *stream_json(const stream *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", s->name);
    char shown[VG_VIDEO_MAX + 8]; /* the URL without its credentials */
    vg_url_redact(s->url, shown, sizeof shown);
    cJSON_AddStringToObject(o, "url", shown);
    if (strncasecmp(s->url, "rtsp", 4) == 0)
        cJSON_AddStringToObject(o, "rtsp_transport", s->rtsp_transport);
    cJSON_AddStringToObject(
        o, "state", s->removing && s->state != SS_ENDED ? "stopping" : state_names[s->state]);
    if (s->detail[0])
        cJSON_AddStringToObject(o, "detail", s->detail);
    cJSON *qs = cJSON_AddArrayToObject(o, "questions");
    for (int i = 0; i < s->nq; i++)
        cJSON_AddItemToArray(qs, cJSON_CreateString(s->qtext[i]));
    cJSON_AddNumberToObject(o, "fps", s->fps);
    cJSON_AddNumberToObject(o, "window_s", s->window_s);
    cJSON_AddNumberToObject(o, "update_s", s->update_s);
    cJSON_AddNumberToObject(o, "min_window_s", s->min_window_s);
    cJSON_AddNumberToObject(o, "max_pixels", (double)s->max_pixels);
    cJSON_AddNumberToObject(o, "speed", s->speed);
    cJSON_AddNumberToObject(o, "created", s->created);
    cJSON_AddNumberToObject(o, "frames", (double)atomic_load(&s->frames));
    cJSON_AddNumberToObject(o, "pairs", (double)atomic_load(&s->n_pairs));
    cJSON_AddNumberToObject(o, "dropped_pairs", (double)atomic_load(&s->dropped));
    cJSON_AddNumberToObject(o, "answers", (double)atomic_load(&s->answers));
    cJSON_AddNumberToObject(o, "reconnects", (double)atomic_load(&s->reconnects));
    cJSON_AddNumberToObject(o, "rebases", (double)atomic_load(&s->rebases));
    cJSON_AddNumberToObject(o, "discontinuities", (double)atomic_load(&s->discontinuities));
    cJSON *ev = cJSON_AddObjectToObject(o, "events_checked");
    cJSON_AddNumberToObject(ev, "reversed", (double)atomic_load(&s->ev_reversed));
    cJSON_AddNumberToObject(ev, "out_of_window", (double)atomic_load(&s->ev_out_of_window));
    cJSON_AddNumberToObject(ev, "contradictory", (double)atomic_load(&s->ev_contradictory));
    cJSON_AddNumberToObject(ev, "clamped", (double)atomic_load(&s->ev_clamped));
    cJSON_AddNumberToObject(ev, "suppressed", (double)atomic_load(&s->ev_suppressed));
    cJSON *tk = cJSON_AddObjectToObject(o, "tracker");
    cJSON_AddNumberToObject(tk, "confirm", s->track.confirm);
    cJSON_AddNumberToObject(tk, "min_duration_s", s->track.min_duration);
    cJSON_AddNumberToObject(tk, "hold_s", s->track.hold);
    cJSON_AddNumberToObject(tk, "merge_gap_s", s->track.merge_gap);
    cJSON *w = cJSON_AddObjectToObject(o, "window");
    cJSON_AddNumberToObject(w, "start", atomic_load(&s->win_start));
    cJSON_AddNumberToObject(w, "end", atomic_load(&s->win_end));
    cJSON_AddNumberToObject(o, "last_seq", (double)(s->next_seq ? s->next_seq - 1 : 0));
    if (s->log) {
        vg_journal_status st;
        vg_journal_get_status(s->log, &st);
        cJSON *lg = cJSON_AddObjectToObject(o, "log");
        cJSON_AddStringToObject(lg, "state", st.failing ? "failing" : "ok");
        if (st.failing) {
            cJSON_AddStringToObject(lg, "error", st.message);
            cJSON_AddNumberToObject(lg, "since", st.since);
        }
        cJSON_AddNumberToObject(lg, "pending_records", (double)st.pending);
        cJSON_AddNumberToObject(lg, "lost_records", (double)st.lost);
    }
    char topic[VG_ID_MAX + 16];
    snprintf(topic, sizeof topic, "stream/%s/", s->name);
    cJSON_AddStringToObject(o, "topic", topic);
    return o;
}

static int same_watch(const stream *s, const vg_request *r)
{
    if (strcmp(s->url, r->video) || s->nq != r->n_questions)
        return 0;
    for (int i = 0; i < s->nq; i++)
        if (strcmp(s->qtext[i], r->questions[i]))
            return 0;
    return 1;
}

/* The stream's immutable knobs: sampling as clip jobs take it (the checkpoint's preprocessing
 * config, then the request's knobs, then the daemon's ceilings; qa.h), the window, and the copy of
 * the configuration its workers use (they never read the live one). */
static void stream_knobs(stream *s, const vg_request *r)
{
    const vg_streams *ss = s->ss;
    const vg_daemon_config *cfg = ss->cfg;
    vg_sample_params sp = vg_qa_sample_params(ss->mi);
    s->fps = r->stream_fps > 0 ? r->stream_fps : sp.fps > 0 ? sp.fps : DEFAULT_FPS;
    s->max_pixels = r->stream_max_pixels > 0
                        ? VG_MIN(r->stream_max_pixels, cfg->max_pixels_limit)
                        : vg_qa_stream_max_pixels(ss->mi, cfg->max_pixels_limit);
    s->min_pixels = vg_qa_stream_min_pixels(ss->mi, s->max_pixels);
    s->window_s = VG_MAX(r->window_s > 0 ? r->window_s : DEFAULT_WINDOW, 2.0 / s->fps);
    s->update_s = r->update_s > 0 ? r->update_s : DEFAULT_UPDATE;
    s->min_window_s =
        VG_MIN(r->min_window_s > 0 ? r->min_window_s : DEFAULT_MIN_WINDOW, s->window_s);
    s->speed = r->speed > 0 ? r->speed : 1.0;
    s->track = vg_track_default_params(s->window_s, s->fps);
    s->track.confirm = (int)(r->track_set & 1u ? r->confirm : cfg->stream_event_confirm);
    s->track.min_duration =
        r->track_set & 2u ? r->min_duration_s : cfg->stream_event_min_duration_s;
    s->track.hold = r->track_set & 4u ? r->hold_s : cfg->stream_event_hold_s;
    s->track.merge_gap = r->track_set & 8u ? r->merge_gap_s : cfg->stream_event_merge_gap_s;
    s->log_max = (size_t)VG_MAX(cfg->stream_log_max_records, 0);
    snprintf(s->log_dir, sizeof s->log_dir, "%s/streams", cfg->state_dir);
    snprintf(s->log_path, sizeof s->log_path, "%s/%s.events", s->log_dir, s->name);
    s->stall_ms = (int)(cfg->stream_stall_timeout_s * 1000.0);
    snprintf(s->rtsp_transport, sizeof s->rtsp_transport, "%s",
             r->rtsp_transport[0] ? r->rtsp_transport : "tcp");
    s->max_new_tokens = cfg->stream_max_new_tokens;
    s->snapshots_max = cfg->stream_snapshots_max;
}

static int handle_watch(vg_streams *ss, const vg_request *r, unsigned long long first_seq,
                        cJSON *reply, const char **wire, char *err, size_t errlen)
{
    char name[VG_ID_MAX + 1];
    if (r->name[0]) {
        snprintf(name, sizeof name, "%s", r->name);
    } else {
        /* Default name: "cam" plus the smallest free number. */
        for (int i = 1;; i++) {
            snprintf(name, sizeof name, "cam%d", i);
            if (!find_stream(ss, name))
                break;
        }
    }
    stream *dup = find_stream(ss, name);
    if (dup) {
        if (dup->removing || !same_watch(dup, r)) {
            *wire = VG_WIRE_CONFLICT;
            return vg_fail(err, errlen, VG_EEXIST,
                           dup->removing ? "stream '%s' is still stopping; try again shortly"
                                         : "stream '%s' already exists for another URL or "
                                           "questions (unwatch it first)",
                           name);
        }
        cJSON_AddItemToObject(reply, "stream", stream_json(dup));
        cJSON_AddBoolToObject(reply, "existing", 1);
        return 0;
    }
    if (ss->stopping) {
        *wire = VG_WIRE_SHUTTING;
        return vg_fail(err, errlen, VG_EAGAIN, "the daemon is shutting down");
    }
    vg_journal_status jst;
    vg_journal_get_status(ss->journal, &jst);
    for (stream *o = ss->head; o && !jst.failing; o = o->next)
        vg_journal_get_status(o->log, &jst); /* any log that fails: the same disk */
    if (jst.failing) {
        *wire = VG_WIRE_STORAGE;
        return vg_fail(err, errlen, VG_EIO,
                       "the state directory cannot be written (%s); no new streams until it can "
                       "(see `info` state.journal)",
                       jst.message);
    }
    if (ss->n_streams >= ss->cfg->max_streams) {
        *wire = VG_WIRE_BUSY;
        return vg_fail(err, errlen, VG_EBUSY, "%d streams are watched (max_streams)",
                       ss->n_streams);
    }
    const vg_model_info *mi = ss->mi;
    if (!mi->has_vision) {
        *wire = VG_WIRE_BAD_REQUEST;
        return vg_fail(err, errlen, VG_ENOTSUP, "the model has no vision tower");
    }
    char resolved[4200], perr[512];
    int is_url = 0, fd = -1;
    /* The file is opened here, beneath its root; every (re)connection reads this descriptor
     * through the policy (docs/security.md, item 1). */
    int rc = vg_daemon_media_open(r->video, (const char(*)[VG_CFG_STR])ss->cfg->media_roots,
                                  ss->cfg->n_media_roots, ss->cfg->allowed_protocols, resolved,
                                  sizeof resolved, &is_url, &fd, perr, sizeof perr);
    if (rc < 0) {
        *wire = rc == VG_ENOENT   ? VG_WIRE_NOT_FOUND
                : rc == VG_EINVAL ? VG_WIRE_BAD_REQUEST
                : rc == VG_EBUSY  ? VG_WIRE_BUSY
                                  : VG_WIRE_FORBIDDEN;
        return vg_fail(err, errlen, rc, "%s", perr);
    }
    vg_media_policy *policy = NULL;
    if (vg_media_policy_create(ss->cfg, is_url, resolved, fd, &policy) < 0) { /* takes fd */
        *wire = VG_WIRE_INTERNAL;
        return VG_ENOMEM;
    }
    stream *s = calloc(1, sizeof *s);
    if (!s) {
        vg_media_policy_free(policy);
        *wire = VG_WIRE_INTERNAL;
        return VG_ENOMEM;
    }
    s->policy = policy;
    s->ss = ss;
    pthread_mutex_init(&s->snap_mu, NULL);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->url = strdup(r->video);
    s->resolved = strdup(resolved);
    s->is_url = is_url;
    stream_knobs(s, r);
    s->nq = r->n_questions;
    int oom = !s->url || !s->resolved;
    for (int i = 0; i < s->nq; i++)
        oom |= !(s->qtext[i] = strdup(r->questions[i]));
    atomic_init(&s->stop, 0);
    s->created = unix_now();
    s->first_seq = first_seq;
    s->next_seq = first_seq ? first_seq : 1;
    if (oom || vg_queue_create(PAIR_QUEUE_CAP, &s->pairs) < 0) {
        stream_free(s);
        *wire = VG_WIRE_INTERNAL;
        return VG_ENOMEM;
    }
    if ((rc = pthread_create(&s->reader, NULL, reader_main, s)) != 0) {
        stream_free(s);
        *wire = VG_WIRE_INTERNAL;
        return vg_fail(err, errlen, -rc, "cannot start the stream's reader thread");
    }
    s->reader_running = 1;
    s->infer_running = 1;
    s->next = ss->head;
    ss->head = s;
    ss->n_streams++;
    pthread_mutex_lock(&ss->mu);
    s->i_next = ss->i_head;
    ss->i_head = s;
    pthread_mutex_unlock(&ss->mu);
    vg_log(VG_LOG_INFO, MOD, "stream %s: watching %s (%d questions)", s->name, s->url, s->nq);
    cJSON_AddItemToObject(reply, "stream", stream_json(s));
    cJSON_AddBoolToObject(reply, "existing", 0);
    return 0;
}

static int handle_events(vg_streams *ss, const vg_request *r, cJSON *reply)
{
    stream *s = find_stream(ss, r->name);
    cJSON *arr = cJSON_CreateArray();
    unsigned long long since = (unsigned long long)r->since;
    int n = 0, more = 0;
    unsigned long long oldest = 0;
    for (size_t i = 0; i < s->ring_n; i++) {
        size_t at = (s->ring_head + i) % EV_RING_CAP;
        if (!oldest)
            oldest = s->ring_seq[at];
        if (s->ring_seq[at] <= since)
            continue;
        if (n >= r->limit) {
            more = 1;
            break;
        }
        cJSON *o = cJSON_Parse(s->ring[at]);
        if (o) {
            cJSON_AddItemToArray(arr, o);
            n++;
        }
    }
    cJSON_AddStringToObject(reply, "stream", s->name);
    cJSON_AddBoolToObject(reply, "watched", 1);
    cJSON_AddItemToObject(reply, "events", arr);
    cJSON_AddNumberToObject(reply, "last_seq", (double)(s->next_seq ? s->next_seq - 1 : 0));
    cJSON_AddBoolToObject(reply, "more", more);
    /* Records older than the ring are only in the log file on disk. */
    cJSON_AddBoolToObject(reply, "truncated", oldest > since + 1);
    return 0;
}

int vg_streams_handle(vg_streams *ss, const vg_request *r, cJSON *reply, const char **wire,
                      char *err, size_t errlen)
{
    stream *s;
    switch (r->op) {
    case VG_OP_WATCH:
        return handle_watch(ss, r, 0, reply, wire, err, errlen);
    case VG_OP_STREAMS: {
        cJSON *arr = cJSON_AddArrayToObject(reply, "streams");
        for (s = ss->head; s; s = s->next)
            cJSON_AddItemToArray(arr, stream_json(s));
        return 0;
    }
    case VG_OP_UNWATCH:
    case VG_OP_EVENTS:
        s = find_stream(ss, r->name);
        if (!s || (r->op == VG_OP_UNWATCH && s->removing)) {
            *wire = VG_WIRE_NOT_FOUND;
            return vg_fail(err, errlen, VG_ENOENT, "no stream '%s'", r->name);
        }
        if (r->op == VG_OP_EVENTS)
            return handle_events(ss, r, reply);
        stop_stream(s);
        cJSON_AddStringToObject(reply, "stream", s->name);
        cJSON_AddStringToObject(reply, "state", "stopping");
        return 0;
    default:
        break;
    }
    *wire = VG_WIRE_INTERNAL;
    return vg_fail(err, errlen, VG_EINVAL, "op not handled by the stream manager");
}

int vg_streams_watch_at(vg_streams *ss, const vg_request *r, unsigned long long first_seq,
                        cJSON *reply, const char **wire, char *err, size_t errlen)
{
    return handle_watch(ss, r, first_seq ? first_seq : 1, reply, wire, err, errlen);
}

void vg_streams_set_hooks(vg_streams *ss, const vg_streams_hooks *h)
{
    if (h)
        ss->hooks = *h;
    else
        memset(&ss->hooks, 0, sizeof ss->hooks);
}

int vg_streams_has(const vg_streams *ss, const char *name)
{
    for (const stream *s = ss ? ss->head : NULL; s; s = s->next)
        if (!strcmp(s->name, name))
            return 1;
    return 0;
}

int vg_streams_events_covered(const vg_streams *ss, const char *name, unsigned long long since)
{
    for (const stream *s = ss ? ss->head : NULL; s; s = s->next) {
        if (strcmp(s->name, name))
            continue;
        if (!s->loaded)
            return 0;
        unsigned long long oldest = s->ring_n ? s->ring_seq[s->ring_head] : s->next_seq;
        return oldest <= since + 1;
    }
    return 0;
}

int vg_streams_stop(vg_streams *ss, const char *name)
{
    stream *s = find_stream(ss, name);
    if (!s)
        return VG_ENOENT;
    if (!s->removing)
        stop_stream(s);
    return 0;
}

int vg_streams_count(const vg_streams *ss)
{
    return ss ? ss->n_streams : 0;
}

void vg_streams_set_journal(vg_streams *ss, vg_journal *j)
{
    ss->journal = j;
}

int vg_streams_logs_failing(const vg_streams *ss)
{
    int n = 0;
    for (const stream *s = ss ? ss->head : NULL; s; s = s->next) {
        vg_journal_status st;
        vg_journal_get_status(s->log, &st);
        n += st.failing;
    }
    return n;
}

/* ===================================================================================================
 * `events` of a stream that is not watched: its log on disk, read on libuv's thread pool.
 */
void vg_streams_events_payload(cJSON *o, const char *name, int watched, char *const *lines,
                               size_t n, unsigned long long last, int more, int truncated)
{
    cJSON_AddStringToObject(o, "stream", name);
    cJSON_AddBoolToObject(o, "watched", watched);
    cJSON *arr = cJSON_AddArrayToObject(o, "events");
    for (size_t i = 0; i < n; i++) {
        cJSON *e = cJSON_Parse(lines[i]);
        if (e)
            cJSON_AddItemToArray(arr, e);
    }
    cJSON_AddNumberToObject(o, "last_seq", (double)last);
    cJSON_AddBoolToObject(o, "more", more);
    cJSON_AddBoolToObject(o, "truncated", truncated);
}

typedef struct log_read {
    uv_work_t work;
    vg_streams *ss;
    void (*done)(char *out, size_t len, void *opaque); /* takes out */
    void *opaque;
    cJSON *reply;
    char id_json[VG_ID_MAX + 24];
    char name[VG_ID_MAX + 1];
    char path[VG_CFG_STR + 96];
    unsigned long long since;
    size_t limit, keep; /* keep: the retention (newest records), 0 = all */
    /* Results (thread pool). */
    int rc;
    char err[512];
    size_t total, index; /* records in the file; the one being read */
    char **lines;        /* up to limit records after since, oldest first */
    size_t n;
    unsigned long long last, oldest;
    int more, oom;
} log_read;

static unsigned long long record_seq(const char *json, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(json, len);
    const cJSON *sq = cJSON_GetObjectItemCaseSensitive(o, "seq");
    unsigned long long v = cJSON_IsNumber(sq) && sq->valuedouble >= 1 && sq->valuedouble < 9e15
                               ? (unsigned long long)sq->valuedouble
                               : 0;
    cJSON_Delete(o);
    return v;
}

static void count_record(const char *json, size_t len, void *opaque)
{
    ((log_read *)opaque)->total++;
}

static void take_record(const char *json, size_t len, void *opaque)
{
    log_read *lr = opaque;
    size_t i = lr->index++;
    if (lr->keep && lr->total > lr->keep && i < lr->total - lr->keep)
        return; /* beyond the retention: the next compaction drops it */
    unsigned long long seq = record_seq(json, len);
    if (!seq)
        return;
    if (!lr->oldest || seq < lr->oldest)
        lr->oldest = seq;
    if (seq > lr->last)
        lr->last = seq;
    if (seq <= lr->since || lr->oom)
        return;
    if (lr->n >= lr->limit) {
        lr->more = 1;
        return;
    }
    if (!(lr->lines[lr->n] = strndup(json, len)))
        lr->oom = 1;
    else
        lr->n++;
}

static void log_read_work(uv_work_t *w)
{
    log_read *lr = w->data;
    struct stat st;
    if (stat(lr->path, &st) != 0) {
        lr->rc = errno == ENOENT ? VG_ENOENT : -errno;
        snprintf(lr->err, sizeof lr->err, "no stream '%s'%s", lr->name,
                 errno == ENOENT ? " (and no log of it)" : ": its log cannot be read");
        return;
    }
    if (!(lr->lines = calloc(lr->limit ? lr->limit : 1, sizeof *lr->lines))) {
        lr->rc = VG_ENOMEM;
        return;
    }
    /* Two passes: the count tells which records are within the retention. */
    char e2[256];
    lr->rc = vg_journal_load(lr->path, count_record, lr, NULL, e2, sizeof e2);
    if (lr->rc == 0)
        lr->rc = vg_journal_load(lr->path, take_record, lr, NULL, e2, sizeof e2);
    if (lr->rc == 0 && lr->oom)
        lr->rc = VG_ENOMEM;
    if (lr->rc < 0)
        snprintf(lr->err, sizeof lr->err, "cannot read the log of stream '%s': %s", lr->name,
                 lr->rc == VG_ENOMEM ? "out of memory" : e2);
}

static void log_read_done(uv_work_t *w, int status)
{
    log_read *lr = w->data;
    vg_streams *ss = lr->ss;
    char *out = NULL;
    size_t len = 0;
    if (lr->rc < 0 || status < 0) {
        const char *code = lr->rc == VG_ENOENT ? VG_WIRE_NOT_FOUND : VG_WIRE_INTERNAL;
        out = vg_proto_error_reply(lr->id_json, code, lr->err[0] ? lr->err : "cancelled", &len);
    } else {
        cJSON *o = lr->reply;
        /* Records before the oldest one retained are gone. */
        vg_streams_events_payload(o, lr->name, 0, lr->lines, lr->n, lr->last, lr->more,
                                  lr->oldest > lr->since + 1);
        out = cJSON_PrintUnformatted(o);
        len = out ? strlen(out) : 0;
    }
    lr->done(out, len, lr->opaque);
    cJSON_Delete(lr->reply);
    for (size_t i = 0; i < lr->n; i++)
        free(lr->lines[i]);
    free(lr->lines);
    free(lr);
    ss->n_reading--;
    check_idle(ss);
}

int vg_streams_events_from_log(vg_streams *ss, const vg_request *r, cJSON *reply,
                               void (*done)(char *out, size_t len, void *opaque), void *opaque)
{
    /* A closed manager or no memory: vg_streams_handle answers (shutting down, or no stream). */
    if (find_stream(ss, r->name) || ss->closed)
        return 0;
    log_read *lr = calloc(1, sizeof *lr);
    if (!lr)
        return 0;
    lr->work.data = lr;
    lr->ss = ss;
    lr->done = done;
    lr->opaque = opaque;
    lr->reply = reply;
    snprintf(lr->id_json, sizeof lr->id_json, "%s", r->id_json);
    /* The name passed vg_proto_valid_job_id: [A-Za-z0-9._-], no leading dot, so no '/' or "..". */
    snprintf(lr->name, sizeof lr->name, "%s", r->name);
    snprintf(lr->path, sizeof lr->path, "%s/streams/%s.events", ss->cfg->state_dir, r->name);
    lr->since = (unsigned long long)r->since;
    lr->limit = r->limit > 0 ? (size_t)r->limit : 0;
    lr->keep = (size_t)VG_MAX(ss->cfg->stream_log_max_records, 0);
    ss->n_reading++;
    if (uv_queue_work(ss->loop, &lr->work, log_read_work, log_read_done) < 0) {
        ss->n_reading--; /* cannot fail for a valid request; answered as no stream */
        free(lr);
        return 0;
    }
    return 1;
}

void vg_streams_set_bus(vg_streams *ss, vg_bus *bus)
{
    ss->bus = bus;
}

int vg_streams_create(const vg_streams_params *p, vg_streams **out, char *err, size_t errlen)
{
    vg_streams *ss = calloc(1, sizeof *ss);
    if (!ss)
        return VG_ENOMEM;
    ss->loop = p->loop;
    ss->model = p->model;
    ss->mi = vg_model_get_info(p->model);
    ss->cfg = p->cfg;
    ss->gate = p->gate;
    pthread_mutex_init(&ss->mu, NULL);
    pthread_cond_init(&ss->cond, NULL);
    int rc;
    if ((rc = vg_queue_create(1024, &ss->janitor_q)) < 0) {
        vg_streams_destroy(ss);
        return vg_fail(err, errlen, rc, "cannot create the stream queues");
    }
    if ((rc = pthread_create(&ss->infer, NULL, infer_main, ss)) != 0) {
        vg_streams_destroy(ss);
        return vg_fail(err, errlen, -rc, "cannot start the stream inference thread");
    }
    ss->infer_started = 1;
    if ((rc = pthread_create(&ss->janitor, NULL, janitor_main, ss)) != 0) {
        vg_streams_destroy(ss);
        return vg_fail(err, errlen, -rc, "cannot start the stream janitor thread");
    }
    ss->janitor_started = 1;
    /* Last, the mailbox and its uv_async (closed by the shutdown): nothing can fail once it exists.
     * The threads touch it only for a stream, and streams arrive after this function returned. */
    vg_mailbox_params mp = {p->loop, MSG_QUEUE_CAP, handle_msg, on_drained, msg_free, ss};
    if ((rc = vg_mailbox_create(&mp, &ss->mb)) < 0) {
        vg_streams_destroy(ss);
        return vg_fail(err, errlen, rc, "cannot create the stream mailbox");
    }
    *out = ss;
    return 0;
}

void vg_streams_destroy(vg_streams *ss)
{
    if (!ss)
        return;
    /* Normally every stream is gone (vg_streams_shutdown); otherwise stop what is left. */
    for (stream *s = ss->head; s; s = s->next) {
        atomic_store(&s->stop, 1);
        s->removing = 1;
    }
    for (stream *s = ss->head; s; s = s->next)
        if (s->reader_running) {
            pthread_join(s->reader, NULL);
            s->reader_running = 0;
        }
    pthread_mutex_lock(&ss->mu);
    ss->quit = 1;
    pthread_cond_broadcast(&ss->cond);
    pthread_mutex_unlock(&ss->mu);
    if (ss->infer_started)
        pthread_join(ss->infer, NULL);
    void *item;
    if (ss->janitor_q) {
        vg_queue_close(ss->janitor_q);
        if (ss->janitor_started)
            pthread_join(ss->janitor, NULL);
        while (vg_queue_pop(ss->janitor_q, &item, 0) == 0) {
            stream *s = item;
            vg_journal_close(s->log);
            s->log = NULL;
        }
        vg_queue_destroy(ss->janitor_q);
    }
    vg_mailbox_destroy(ss->mb); /* frees what the loop did not handle (closing M_LOADED's log) */
    while (ss->head) {
        stream *s = ss->head;
        ss->head = s->next;
        if (s->log)
            vg_journal_close(s->log);
        stream_free(s);
    }
    pthread_mutex_destroy(&ss->mu);
    pthread_cond_destroy(&ss->cond);
    free(ss);
}
