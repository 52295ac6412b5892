/*
 * streams.c: live streams: standing questions over camera feeds, answered as events as they happen.
 *
 * Per stream, the reader thread opens the URL (stop flag, stall timeout), reads frames with
 * vg_media_next_frame resized to the stream's smart_resize size, samples at the stream's fps by
 * presentation time (the first frame at or after each 1/fps tick), patchifies each pair of sampled
 * frames (one temporal slice) and hands it to the stream inference thread through a small bounded
 * queue (when the model falls behind, the newest pair is dropped and counted: memory stays
 * bounded). A drop or a stall (no frame for stream_stall_timeout_s) publishes `stalled`, then
 * `reconnecting` with exponential backoff (0.5 s doubling to 30 s); a file that ends is `ended`.
 * Stream time is the first session's presentation time minus its first frame's; after a reconnect
 * it continues from the last frame plus the wall-clock gap, so it never goes back. Files (not live)
 * are paced at their native rate times the stream's speed knob (replays, soak tests).
 *
 * One stream inference thread serves every stream, round-robin, one unit of work per stream per
 * turn (encode and append one pair, or answer the standing questions once), so no stream starves
 * another. Clip jobs have their own inference thread (jobs.c); the two take turns through the
 * inference gate (a FIFO ticket lock, below), held by the streams for one step and by the jobs for
 * one job, so the model's heavy calls never run twice at once (no BLAS oversubscription) and
 * neither side waits longer than one unit of the other. While a long clip job runs, a stream's
 * pair queue fills and new pairs are dropped (counted in dropped_pairs).
 *
 * The KV window of a stream: [head "<|im_start|>user\n"] [pair 1] ... [pair k], each pair
 * "<t seconds><|vision_start|>pads<|vision_end|>". A new pair is encoded once (its vision output
 * kept in a ring of the last window_s seconds) and prefilled alone, positions continuing; the
 * oldest pair leaves with vg_seq_remove (RoPE is relative: the gap in positions is harmless; the
 * head stays). A question prefills "question<|im_end|>\n<|im_start|>assistant\n", generates, then
 * vg_seq_truncate drops the suffix and answer again. So the work per second of video and per
 * update does not grow with the window's age.
 *
 * Timestamps: the pairs' "<t seconds>" are printed relative to the window base (the oldest pair's
 * first frame at the last rebase), keeping them inside the range the model saw in training (clips
 * of 0-40 s): answers are mapped back to stream time by adding the base. When the newest pair's
 * relative time would pass max(40, 2 * window_s) or its positions would pass half of
 * max_position_embeddings, the window is rebased: the KV cache is cut back to the head and every
 * pair in the ring is prefilled again from its cached vision output with a new base and fresh
 * positions (one full window prefill, amortized over tens of seconds).
 *
 * Events: each answer is parsed (vg_answer_parse) and fed to the question's track
 * (vg_stream_track_update): `started` and `ended` transitions, in stream seconds and UTC wall-clock
 * (the wall time at which the pair holding that stream time was received).
 *
 * Loop thread: the stream table, watch/unwatch/streams/events, sequence numbers, publishing on
 * `stream/<name>/{state,answer,event}`, the per-stream log (a vg_journal in
 * <state_dir>/streams/<name>.events, written and fsync'd by its own thread) and a bounded ring of
 * recent records for `events`. Workers send it messages through a bounded queue and a uv_async.
 * The reader thread loads the log at start (last sequence number, recent records) and opens it;
 * the janitor thread closes the logs of removed streams, so the loop never touches a file.
 * Retention: a log keeps the newest stream_log_max_records records (snapshotted when the watch is
 * accepted, as log_max): the reader cuts a longer log back when it loads it, and the log's writer
 * thread cuts it back to log_max whenever log_max / 2 records have been appended beyond those kept
 * (at most 1.5 x log_max on disk). Sequence numbers are unaffected: the newest record survives.
 * A stream is freed on the loop once its reader and the inference thread have let go of it and the
 * janitor has closed its log (until then it stays in the table as `stopping`, so watching the same
 * name again reads a complete log).
 */
#define _XOPEN_SOURCE 700
#include "streams.h"

#include "common.h"
#include "qa.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MOD            "streams"
#define MSG_QUEUE_CAP  8192
#define PAIR_QUEUE_CAP 4
#define EV_RING_CAP    1024
#define ANSWER_MAX     8192
#define TS_TOKENS_MAX  48
#define BACKOFF_MIN_S  0.5
#define BACKOFF_MAX_S  30.0
#define TS_HORIZON_MIN 40.0
#define DEFAULT_FPS    2.0
#define DEFAULT_WINDOW 16.0
#define DEFAULT_UPDATE 2.0
/* Questions are first answered once the window holds this much video (or the whole window, if it
 * is shorter): an answer over one pair has almost no context (the demo model was trained on clips
 * of 4 s and more and answers a 0.5 s window with noise). */
#define DEFAULT_MIN_WINDOW 4.0

/* ===================================================================================================
 * Event transitions (pure).
 */
int vg_stream_track_update(vg_stream_track *t, const vg_event *ev, size_t n, double base,
                           double win_start, double win_end, double gap,
                           vg_stream_transition out[2])
{
    if (!t || !out || (n > 0 && !ev) || !(win_end >= win_start) || !(gap >= 0))
        return VG_EINVAL;
    int present = 0, overlap = 0;
    double ps = 0, pe = 0, oe = 0;
    const char *plabel = "";
    for (size_t i = 0; i < n; i++) {
        double s = base + ev[i].start, e = base + ev[i].end;
        if (!isfinite(s) || !isfinite(e))
            continue;
        if (e < s) {
            double x = s;
            s = e;
            e = x;
        }
        if (e < win_start || s > win_end)
            continue; /* outside what the model saw */
        s = VG_MAX(s, win_start);
        e = VG_MIN(e, win_end);
        if (e >= win_end - gap && (!present || e > pe)) {
            present = 1;
            ps = s;
            pe = e;
            plabel = ev[i].label;
        } else if (t->active && s <= t->end + gap && e >= t->start && (!overlap || e > oe)) {
            overlap = 1;
            oe = e;
        }
    }
    int k = 0;
    if (t->active && present && ps > t->end + gap) {
        out[k].kind = VG_TRANSITION_ENDED;
        out[k].start = t->start;
        out[k].end = t->end;
        snprintf(out[k].label, sizeof out[k].label, "%s", t->label);
        k++;
        t->active = 0;
    }
    if (!t->active && present) {
        t->active = 1;
        t->start = ps;
        t->end = pe;
        snprintf(t->label, sizeof t->label, "%s", plabel);
        out[k].kind = VG_TRANSITION_STARTED;
        out[k].start = ps;
        out[k].end = pe;
        snprintf(out[k].label, sizeof out[k].label, "%s", plabel);
        return k + 1;
    }
    if (t->active && present) {
        t->end = VG_MAX(t->end, pe);
        return k;
    }
    if (t->active) {
        out[k].kind = VG_TRANSITION_ENDED;
        out[k].start = t->start;
        out[k].end = overlap ? VG_MAX(oe, t->start) : t->end;
        snprintf(out[k].label, sizeof out[k].label, "%s", t->label);
        t->active = 0;
        k++;
    }
    return k;
}

/* ===================================================================================================
 * Inference gate: a ticket lock (FIFO, so whoever waits first goes first).
 */
struct vg_infer_gate {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    unsigned long long next, serving;
};

int vg_infer_gate_create(vg_infer_gate **out)
{
    vg_infer_gate *g = calloc(1, sizeof *g);
    if (!g)
        return VG_ENOMEM;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cond, NULL);
    *out = g;
    return 0;
}

void vg_infer_gate_destroy(vg_infer_gate *g)
{
    if (!g)
        return;
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cond);
    free(g);
}

void vg_infer_gate_enter(vg_infer_gate *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    unsigned long long ticket = g->next++;
    while (g->serving != ticket)
        pthread_cond_wait(&g->cond, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

void vg_infer_gate_leave(vg_infer_gate *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->serving++;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mu);
}

/* ===================================================================================================
 * Types.
 */
static const char *const state_names[] = {"connecting", "live", "stalled", "reconnecting", "ended"};
enum stream_state { SS_CONNECTING, SS_LIVE, SS_STALLED, SS_RECONNECTING, SS_ENDED };

typedef struct pair_item {
    float *patches; /* [gh*gw][cols] */
    size_t rows, cols;
    int gh, gw;
    double t0, t1; /* stream seconds of the two frames */
    double wall;   /* unix seconds of the second frame (see reader_main) */
    int paced;     /* a file read at its own rate (wall: when it was due), else a live input */
} pair_item;

typedef struct win_entry {
    double t0, t1, wall; /* the pair's frames in stream seconds; wall: see pair_item */
    int paced;
} win_entry;

typedef struct question {
    char *text;
    vg_stream_track track;
    double start_wall;
} question;

typedef struct stream stream;
typedef struct vg_streams vg_streams;

struct stream {
    /* Immutable after watch (read by every thread). */
    vg_streams *ss;
    char name[VG_ID_MAX + 1];
    char *url, *resolved;
    int is_url;
    vg_media_policy *policy; /* what the reader may open, as configured at watch time */
    size_t log_max;          /* stream_log_max_records at watch time; 0 = no limit */
    int stall_ms;            /* stream_stall_timeout_s at watch time (workers never read cfg) */
    int max_new_tokens;      /* stream_max_new_tokens at watch time */
    double fps, window_s, update_s, min_window_s, speed;
    long max_pixels, min_pixels; /* per frame (smart_resize budget) */
    int nq;
    char *qtext[VG_STREAM_MAX_QUESTIONS];
    atomic_int stop;
    vg_queue *pairs; /* reader -> inference */

    /* Counters (written by workers, read by the loop). */
    atomic_long frames, n_pairs, dropped, answers, reconnects, rebases;
    _Atomic double win_start, win_end;

    /* Loop-owned. */
    enum stream_state state;
    char detail[256];
    double created;
    unsigned long long next_seq;
    char *ring[EV_RING_CAP]; /* recent records, JSON */
    unsigned long long ring_seq[EV_RING_CAP];
    size_t ring_n, ring_head; /* oldest at ring_head */
    vg_journal *log;
    int reader_running, infer_running, removing, loaded;
    int closing; /* the janitor owns log until M_LOG_CLOSED */
    pthread_t reader;
    stream *next;

    /* Inference-thread-owned. */
    int i_ready, i_failed;
    vg_qa *qa;         /* the KV window: head and pairs (qa.h) */
    win_entry *ring_w; /* the times of the pairs the session holds, oldest at w_head */
    size_t w_cap, w_n, w_head;
    size_t cap_tokens, max_suffix;
    double next_update_ms;
    int fresh; /* pairs since the last answer */
    question q[VG_STREAM_MAX_QUESTIONS];
    stream *i_next;
};

enum msg_type { M_LOADED, M_PUBLISH, M_READER_DONE, M_INFER_DONE, M_LOG_CLOSED };

typedef struct smsg {
    enum msg_type type;
    stream *s;
    char kind[16]; /* PUBLISH: state, answer or event */
    cJSON *payload;
    /* LOADED */
    vg_journal *log;
    unsigned long long last_seq;
    char **lines;
    unsigned long long *line_seq;
    size_t n_lines;
} smsg;

struct vg_streams {
    uv_loop_t *loop;
    vg_model *model;
    const vg_model_info *mi;
    const vg_daemon_config *cfg;
    vg_infer_gate *gate;
    vg_ipc_server *ipc;
    uv_async_t async;
    vg_queue *msgs, *janitor_q;
    stream *head;
    int n_streams;
    int stopping, closed;
    void (*on_idle)(void *);
    void *on_idle_opaque;
    /* The inference thread's list, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    stream *i_head;
    int quit, work;
    pthread_t infer, janitor;
    int infer_started, janitor_started;
};

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pair_free(pair_item *p)
{
    if (!p)
        return;
    free(p->patches);
    free(p);
}

static void msg_free(smsg *m)
{
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
    free(s);
}

/* Workers -> loop. Blocks only while the loop is MSG_QUEUE_CAP messages behind. */
static void post(vg_streams *ss, smsg *m)
{
    if (vg_queue_push(ss->msgs, m, -1) < 0) {
        msg_free(m);
        return;
    }
    uv_async_send(&ss->async);
}

static void post_publish(stream *s, const char *kind, cJSON *payload)
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
    post(s->ss, m);
}

static void post_state(stream *s, enum stream_state st, const char *detail)
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

static void post_simple(stream *s, enum msg_type t)
{
    smsg *m;
    while (!(m = calloc(1, sizeof *m)))
        uv_sleep(10); /* without it the stream could never be freed */
    m->type = t;
    m->s = s;
    post(s->ss, m);
}

/* Sleeps up to seconds, returning early (1) when the stream is stopped. */
static int nap(stream *s, double seconds)
{
    double until = vg_now_ms() + seconds * 1000.0;
    while (!atomic_load(&s->stop)) {
        double left = until - vg_now_ms();
        if (left <= 0)
            return 0;
        uv_sleep((unsigned)VG_MIN(left, 50.0) + 1);
    }
    return 1;
}

/* ===================================================================================================
 * Reader thread.
 */
typedef struct load_ctx {
    char **lines;
    unsigned long long *seq;
    size_t n, head;
    unsigned long long last;
} load_ctx;

static void on_log_record(const char *json, size_t len, void *opaque)
{
    load_ctx *lc = opaque;
    cJSON *o = cJSON_ParseWithLength(json, len);
    const cJSON *sq = cJSON_GetObjectItemCaseSensitive(o, "seq");
    if (cJSON_IsNumber(sq) && sq->valuedouble >= 1 && sq->valuedouble < 9e15) {
        unsigned long long v = (unsigned long long)sq->valuedouble;
        char *copy = strdup(json);
        if (copy) {
            size_t at = (lc->head + lc->n) % EV_RING_CAP;
            if (lc->n == EV_RING_CAP) {
                free(lc->lines[lc->head]);
                at = lc->head;
                lc->head = (lc->head + 1) % EV_RING_CAP;
            } else {
                lc->n++;
            }
            lc->lines[at] = copy;
            lc->seq[at] = v;
        }
        if (v > lc->last)
            lc->last = v;
    }
    cJSON_Delete(o);
}

static void mkdir_p(const char *path)
{
    char tmp[VG_CFG_STR + 16];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        mkdir(tmp, 0755);
        *p = '/';
    }
    mkdir(tmp, 0750);
}

/* Loads the stream's log (recent records, last sequence number), opens it for appending and hands
 * both to the loop. */
static void load_log(stream *s)
{
    vg_streams *ss = s->ss;
    char dir[VG_CFG_STR + 16], path[VG_CFG_STR + 96], err[512] = "";
    snprintf(dir, sizeof dir, "%s/streams", ss->cfg->state_dir);
    mkdir_p(dir);
    snprintf(path, sizeof path, "%s/%s.events", dir, s->name);
    smsg *m = calloc(1, sizeof *m);
    load_ctx lc = {calloc(EV_RING_CAP, sizeof(char *)),
                   calloc(EV_RING_CAP, sizeof(unsigned long long)), 0, 0, 0};
    if (!m || !lc.lines || !lc.seq) {
        free(m);
        free(lc.lines);
        free(lc.seq);
        post_simple(s, M_LOADED);
        return;
    }
    vg_journal_stats st = {0};
    if (vg_journal_load(path, on_log_record, &lc, &st, err, sizeof err) < 0)
        vg_log(VG_LOG_WARNING, MOD, "stream %s: cannot read its log: %s", s->name, err);
    /* Newest log_max records on disk; the writer thread cuts again after log_max / 2 appends. */
    vg_journal_compaction cp = {.every = s->log_max ? VG_MAX(s->log_max / 2, (size_t)1) : 0,
                                .keep_last = s->log_max};
    size_t kept = 0;
    if (s->log_max && st.good > s->log_max) {
        if (vg_journal_compact(path, &cp, &kept, err, sizeof err) < 0)
            vg_log(VG_LOG_WARNING, MOD, "stream %s: cannot compact its log: %s", s->name, err);
        else
            vg_log(VG_LOG_INFO, MOD, "stream %s: log cut to its newest %zu of %zu records", s->name,
                   kept, st.good);
    }
    m->type = M_LOADED;
    m->s = s;
    m->last_seq = lc.last;
    /* Oldest first. */
    m->lines = calloc(EV_RING_CAP, sizeof(char *));
    m->line_seq = calloc(EV_RING_CAP, sizeof(unsigned long long));
    if (m->lines && m->line_seq)
        for (size_t i = 0; i < lc.n; i++) {
            size_t at = (lc.head + i) % EV_RING_CAP;
            m->lines[i] = lc.lines[at];
            m->line_seq[i] = lc.seq[at];
            lc.lines[at] = NULL;
        }
    m->n_lines = m->lines && m->line_seq ? lc.n : 0;
    for (size_t i = 0; i < EV_RING_CAP; i++)
        free(lc.lines[i]);
    free(lc.lines);
    free(lc.seq);
    if (vg_journal_open(path, &cp, &m->log, err, sizeof err) < 0) {
        vg_log(VG_LOG_WARNING, MOD, "stream %s: events will not be logged: %s", s->name, err);
        m->log = NULL;
    }
    post(ss, m);
}

typedef struct session {
    vg_media *m;
    int W, H, gh, gw;
    uint8_t *frame[2];
    double ft[2];
    int nf;
} session;

static int session_open(stream *s, session *se, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    const vg_model_info *mi = ss->mi;
    vg_media_params mp = vg_media_default_params();
    mp.protocol_whitelist = vg_media_policy_whitelist(s->policy);
    mp.allow_url = vg_media_policy_allow;
    mp.allow_opaque = s->policy;
    mp.stop = &s->stop;
    int stall_ms = s->stall_ms;
    mp.read_timeout_ms = stall_ms;
    /* Probing a live MPEG-TS stream reads up to several seconds of it; a deadline that cuts it
     * short leaves an error in the I/O context that ends the session after the first frame. */
    mp.open_timeout_ms = VG_MAX(stall_ms, 10000);
    int rc = vg_media_open(s->resolved, &mp, &se->m, err, errlen);
    if (rc < 0)
        return rc;
    const vg_media_info *in = vg_media_get_info(se->m);
    int factor = mi->patch_size * mi->spatial_merge_size;
    rc = vg_smart_resize(in->height, in->width, factor, s->min_pixels, s->max_pixels, &se->H,
                         &se->W, err, errlen);
    if (rc < 0)
        return rc;
    se->gh = se->H / mi->patch_size;
    se->gw = se->W / mi->patch_size;
    size_t bytes = (size_t)se->W * (size_t)se->H * 3;
    se->frame[0] = malloc(bytes);
    se->frame[1] = malloc(bytes);
    if (!se->frame[0] || !se->frame[1])
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for %dx%d frames", se->W, se->H);
    return 0;
}

static void session_close(session *se)
{
    vg_media_close(se->m);
    free(se->frame[0]);
    free(se->frame[1]);
    memset(se, 0, sizeof *se);
}

/* Patchifies the session's two frames and queues them for the inference thread. */
static void emit_pair(stream *s, session *se, double wall, int paced)
{
    const vg_model_info *mi = s->ss->mi;
    uint8_t *both = malloc((size_t)se->W * se->H * 3 * 2);
    pair_item *p = calloc(1, sizeof *p);
    if (!both || !p) {
        free(both);
        free(p);
        atomic_fetch_add(&s->dropped, 1);
        return;
    }
    size_t fb = (size_t)se->W * se->H * 3;
    memcpy(both, se->frame[0], fb);
    memcpy(both + fb, se->frame[1], fb);
    int rc = vg_patchify(both, 2, se->H, se->W, mi->patch_size, mi->temporal_patch_size,
                         mi->spatial_merge_size, mi->image_mean, mi->image_std, &p->patches,
                         &p->rows, &p->cols);
    free(both);
    if (rc < 0) {
        free(p);
        atomic_fetch_add(&s->dropped, 1);
        return;
    }
    p->gh = se->gh;
    p->gw = se->gw;
    p->t0 = se->ft[0];
    p->t1 = se->ft[1];
    p->wall = wall;
    p->paced = paced;
    if (vg_queue_push(s->pairs, p, 0) < 0) {
        pair_free(p);
        atomic_fetch_add(&s->dropped, 1);
        return;
    }
    atomic_fetch_add(&s->n_pairs, 1);
    vg_streams *ss = s->ss;
    pthread_mutex_lock(&ss->mu);
    ss->work = 1;
    pthread_cond_signal(&ss->cond);
    pthread_mutex_unlock(&ss->mu);
}

static void *reader_main(void *arg)
{
    stream *s = arg;
    load_log(s);
    post_state(s, SS_CONNECTING, NULL); /* not the URL: it may carry credentials */
    double backoff = BACKOFF_MIN_S;
    double last_t = 0, last_mono = 0, next_tick = 0;
    int have_last = 0, file_ended = 0, first = 1;
    char err[512];
    while (!atomic_load(&s->stop)) {
        if (!first) {
            char d[64];
            snprintf(d, sizeof d, "in %.1f s", backoff);
            post_state(s, SS_RECONNECTING, d);
            if (nap(s, backoff))
                break;
            backoff = VG_MIN(backoff * 2, BACKOFF_MAX_S);
            atomic_fetch_add(&s->reconnects, 1);
        }
        first = 0;
        session se;
        memset(&se, 0, sizeof se);
        err[0] = 0;
        int rc = session_open(s, &se, err, sizeof err);
        if (rc < 0) {
            session_close(&se);
            if (atomic_load(&s->stop))
                break;
            post_state(s, SS_STALLED, err[0] ? err : vg_strerror(rc));
            continue;
        }
        const vg_media_info *in = vg_media_get_info(se.m);
        int paced = !in->is_live && !s->is_url;
        double sess_first = NAN, sess_offset = 0, sess_mono0 = 0;
        /* Live input: the wall time of stream time t is t + the smallest (arrival - t) seen this
         * session. Frames are never early, only late (the demuxer's probing buffers the first
         * seconds of a stream and hands them over at once), so the smallest offset is the one of
         * frames delivered on time. Paced files arrive exactly when due. */
        double wall_off = NAN;
        int live = 0;
        while (!atomic_load(&s->stop)) {
            double pts;
            err[0] = 0;
            rc = vg_media_next_frame(se.m, se.W, se.H, se.frame[se.nf], &pts, err, sizeof err);
            if (rc < 0)
                break;
            double mono = vg_now_ms();
            if (isnan(sess_first)) {
                sess_first = pts;
                sess_offset = have_last ? last_t + VG_MAX((mono - last_mono) / 1000.0, 0.001) : 0;
                sess_mono0 = mono;
                if (!have_last)
                    next_tick = 0;
            }
            double t = sess_offset + (pts - sess_first);
            if (have_last && t <= last_t)
                continue; /* a repeated or reordered timestamp */
            if (paced) {
                double due = sess_mono0 + (pts - sess_first) * 1000.0 / s->speed;
                if (due > mono && nap(s, (due - mono) / 1000.0))
                    break;
            }
            last_t = t;
            last_mono = vg_now_ms();
            have_last = 1;
            if (!paced) {
                double off = unix_now() - t;
                if (isnan(wall_off) || off < wall_off)
                    wall_off = off;
            }
            atomic_fetch_add(&s->frames, 1);
            if (!live) {
                live = 1;
                backoff = BACKOFF_MIN_S;
                char d[96];
                snprintf(d, sizeof d, "%dx%d sampled at %g fps", se.W, se.H, s->fps);
                post_state(s, SS_LIVE, d);
            }
            if (t + 1e-6 < next_tick)
                continue;
            double step = 1.0 / s->fps;
            while (next_tick <= t + 1e-6)
                next_tick += step;
            se.ft[se.nf++] = t;
            if (se.nf == 2) {
                emit_pair(s, &se, paced ? unix_now() : se.ft[1] + wall_off, paced);
                se.nf = 0;
            }
        }
        session_close(&se);
        if (atomic_load(&s->stop))
            break;
        if (rc == VG_EPIPE && !s->is_url) {
            file_ended = 1;
            break;
        }
        post_state(s, SS_STALLED,
                   rc == VG_ETIMEDOUT ? "no frame within stream_stall_timeout_s"
                   : rc == VG_EPIPE   ? "the stream ended"
                                      : (err[0] ? err : vg_strerror(rc)));
    }
    post_state(s, SS_ENDED, file_ended ? "end of file" : "unwatched");
    post_simple(s, M_READER_DONE);
    return NULL;
}

/* ===================================================================================================
 * Inference thread: the KV window, held by a video-QA session (qa.h); this file keeps the policy
 * (which pairs the window holds, when to rebase) and each pair's times.
 */
static int infer_init(stream *s, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    const vg_model_info *mi = ss->mi;
    int rc;
    size_t max_suffix = 0;
    for (int i = 0; i < s->nq; i++) {
        size_t n = 0;
        s->q[i].text = s->qtext[i];
        if ((rc = vg_qa_question_tokens(ss->model, s->qtext[i], &n, err, errlen)) < 0)
            return rc;
        max_suffix = VG_MAX(max_suffix, n);
    }
    int factor = mi->patch_size * mi->spatial_merge_size;
    size_t tok_pair = (size_t)(s->max_pixels / ((long)factor * factor)) + 1;
    s->w_cap = (size_t)ceil(s->window_s * s->fps / 2.0) + 2;
    size_t cap =
        8 + s->w_cap * (tok_pair + TS_TOKENS_MAX + 2) + max_suffix + (size_t)s->max_new_tokens + 8;
    if (cap > (size_t)mi->max_position_embeddings)
        return vg_fail(err, errlen, VG_ELIMIT,
                       "a window of %g s at %g fps and %ld pixels needs %zu tokens; the model "
                       "allows %d",
                       s->window_s, s->fps, s->max_pixels, cap, mi->max_position_embeddings);
    s->cap_tokens = cap;
    s->max_suffix = max_suffix;
    s->ring_w = calloc(s->w_cap, sizeof *s->ring_w);
    if (!s->ring_w)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    vg_qa_params qp = {cap, NULL};
    if ((rc = vg_qa_create(ss->model, &qp, &s->qa, err, errlen)) < 0 ||
        (rc = vg_qa_sync(s->qa, &s->stop, err, errlen)) < 0)
        return rc;
    s->max_suffix = max_suffix;
    s->i_ready = 1;
    return 0;
}

static void infer_release(stream *s)
{
    free(s->ring_w);
    s->ring_w = NULL;
    s->w_n = 0;
    vg_qa_free(s->qa);
    s->qa = NULL;
}

/* The times of the i-th pair the window holds (0 = oldest). */
static win_entry *win_at(stream *s, size_t i)
{
    return &s->ring_w[(s->w_head + i) % s->w_cap];
}

static void evict_oldest(stream *s)
{
    vg_qa_evict_oldest(s->qa);
    s->w_head = (s->w_head + 1) % s->w_cap;
    s->w_n--;
}

/* Empties the window after a failure: the session keeps only its head. */
static void reset_window(stream *s)
{
    while (s->w_n > 0)
        evict_oldest(s);
}

static int add_pair(stream *s, pair_item *p, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    const vg_model_info *mi = ss->mi;
    int merge = mi->spatial_merge_size, mh = p->gh / merge, mw = p->gw / merge;
    vg_vision_out *vo = NULL;
    int rc = vg_model_encode_slice(ss->model, p->patches, p->gh, p->gw, &s->stop, &vo, err, errlen);
    if (rc < 0)
        return rc;
    while (s->w_n > 0 && (s->w_n >= s->w_cap - 1 || p->t1 - win_at(s, 0)->t0 > s->window_s + 1e-6))
        evict_oldest(s);
    size_t budget =
        vg_qa_pair_tokens(s->qa, mh, mw) + s->max_suffix + (size_t)s->max_new_tokens + 8;
    while (s->w_n > 0 && vg_qa_free_tokens(s->qa) < budget)
        evict_oldest(s);
    double t = vg_pair_time(p->t0, p->t1);
    if ((rc = vg_qa_append_pair(s->qa, vo, mh, mw, t, err, errlen)) < 0)
        return rc; /* the session took vo */
    win_entry *e = win_at(s, s->w_n);
    e->t0 = p->t0;
    e->t1 = p->t1;
    e->wall = p->wall;
    e->paced = p->paced;
    s->w_n++;
    /* Rebase when the timestamps would leave the trained range or the positions would pass the
     * limit (half of max_position_embeddings, or twice the window's tokens when that is larger,
     * so a rebase is never needed again at once). */
    double horizon = VG_MAX(TS_HORIZON_MIN, 2.0 * s->window_s);
    size_t maxpos = (size_t)mi->max_position_embeddings;
    size_t pos_limit = VG_MAX(maxpos / 2, VG_MIN(maxpos, 2 * s->cap_tokens));
    if (s->w_n == 1 || t - vg_qa_base(s->qa) > horizon ||
        (size_t)vg_qa_next_pos(s->qa) + budget > pos_limit) {
        atomic_fetch_add(&s->rebases, 1);
        rc = vg_qa_rebase(s->qa, win_at(s, 0)->t0, &s->stop, err, errlen);
        if (rc < 0)
            s->w_n = 0; /* the session dropped every pair */
    } else {
        rc = vg_qa_sync(s->qa, &s->stop, err, errlen);
        if (rc < 0) {
            s->w_n--; /* the session dropped the new pair; start again from the head */
            reset_window(s);
        }
    }
    if (rc < 0)
        return rc;
    atomic_store(&s->win_start, win_at(s, 0)->t0);
    atomic_store(&s->win_end, e->t1);
    s->fresh++;
    return 0;
}

/* Seconds of video in the window: from the oldest pair's first frame to one sampling interval
 * after the newest pair's last frame (a full window of k pairs at fps spans 2k / fps). */
static double window_span(stream *s)
{
    if (s->w_n == 0)
        return 0.0;
    return win_at(s, s->w_n - 1)->t1 - win_at(s, 0)->t0 + 1.0 / s->fps + 1e-6;
}

/* The wall-clock time of stream time t. Live input: from the newest pair, whose offset is the best
 * estimate so far (reader_main); the stream time of a live input runs with the wall clock, also
 * across reconnects. A paced file (any speed): from the pair nearest to t. */
static double wall_of(stream *s, double t)
{
    if (s->w_n > 0) {
        const win_entry *n = win_at(s, s->w_n - 1);
        if (!n->paced)
            return n->wall + (t - n->t1);
    }
    double best = 1e300, wall = unix_now();
    for (size_t i = 0; i < s->w_n; i++) {
        const win_entry *e = win_at(s, i);
        double d = fabs(e->t1 - t);
        if (d < best) {
            best = d;
            wall = e->wall + (t - e->t1);
        }
    }
    return wall;
}

static void add_time(cJSON *o, const char *key, const char *wkey, double t, double wall)
{
    char iso[64];
    cJSON_AddNumberToObject(o, key, vg_qa_round_ms(t));
    vg_qa_iso_utc(wall, iso, sizeof iso);
    cJSON_AddStringToObject(o, wkey, iso);
}

static int answer_question(stream *s, int qi, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    question *q = &s->q[qi];
    vg_qa_ask_params ap = {
        vg_model_default_gen_params(ss->model), NULL, NULL, NULL, &s->stop, ANSWER_MAX};
    ap.gen.do_sample = 0;
    ap.gen.max_new_tokens = s->max_new_tokens;
    vg_qa_answer ans = {0};
    int rc = vg_qa_ask(s->qa, q->text, &ap, &ans, err, errlen);
    if (rc < 0)
        return rc;
    atomic_fetch_add(&s->answers, 1);

    double ws = win_at(s, 0)->t0, we = win_at(s, s->w_n - 1)->t1;
    double now = unix_now();
    cJSON *a = cJSON_CreateObject();
    if (a) {
        cJSON_AddNumberToObject(a, "question", qi);
        cJSON_AddStringToObject(a, "text", ans.text);
        cJSON *w = cJSON_AddObjectToObject(a, "window");
        add_time(w, "start", "start_wall", ws, wall_of(s, ws));
        add_time(w, "end", "end_wall", we, wall_of(s, we));
        cJSON_AddNumberToObject(w, "base", vg_qa_round_ms(vg_qa_base(s->qa)));
        cJSON *arr = vg_qa_events_json(ans.events, ans.n_events, "stream");
        if (arr)
            cJSON_AddItemToObject(a, "events", arr);
        cJSON_AddNumberToObject(a, "prefill_ms", round(ans.prefill_ms * 10) / 10);
        cJSON_AddNumberToObject(a, "generate_ms", round(ans.generate_ms * 10) / 10);
        cJSON_AddNumberToObject(a, "time", now);
        post_publish(s, "answer", a);
    }
    vg_stream_transition tr[2];
    double gap = VG_MAX(1.0, 4.0 / s->fps);
    int k = vg_stream_track_update(&q->track, ans.events, ans.n_events, 0.0, ws, we, gap, tr);
    vg_qa_answer_clear(&ans);
    for (int i = 0; i < k; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e)
            continue;
        cJSON_AddNumberToObject(e, "question", qi);
        cJSON_AddStringToObject(e, "question_text", q->text);
        int started = tr[i].kind == VG_TRANSITION_STARTED;
        cJSON_AddStringToObject(e, "event", started ? "started" : "ended");
        if (started)
            q->start_wall = wall_of(s, tr[i].start);
        vg_event ev = {tr[i].start, tr[i].end, ""};
        snprintf(ev.label, sizeof ev.label, "%s", tr[i].label);
        vg_qa_event_time et = {"stream", q->start_wall, wall_of(s, tr[i].end), 1};
        vg_qa_event_json(e, &ev, &et);
        cJSON_AddNumberToObject(e, "time", now);
        post_publish(s, "event", e);
    }
    return 0;
}

/* One unit of work for s: encode and append a pair, or answer the questions. Returns 1 if it did
 * something. */
static int infer_step(stream *s)
{
    char err[512] = "";
    int rc, did = 0;
    if (!s->i_ready) {
        if (s->i_failed)
            return 0;
        if ((rc = infer_init(s, err, sizeof err)) < 0) {
            s->i_failed = 1;
            vg_log(VG_LOG_ERR, MOD, "stream %s: %s", s->name, err[0] ? err : vg_strerror(rc));
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "error", err[0] ? err : vg_strerror(rc));
            post_publish(s, "error", p);
            return 0;
        }
    }
    void *item;
    if (vg_queue_pop(s->pairs, &item, 0) == 0) {
        pair_item *p = item;
        rc = add_pair(s, p, err, sizeof err);
        pair_free(p);
        if (rc < 0 && !atomic_load(&s->stop))
            vg_log(VG_LOG_WARNING, MOD, "stream %s: a pair was lost: %s", s->name,
                   err[0] ? err : vg_strerror(rc));
        did = 1;
    }
    double now = vg_now_ms();
    if (s->fresh > 0 && s->w_n > 0 && now >= s->next_update_ms &&
        window_span(s) >= s->min_window_s && !atomic_load(&s->stop)) {
        s->next_update_ms = now + s->update_s * 1000.0;
        s->fresh = 0;
        for (int i = 0; i < s->nq && !atomic_load(&s->stop); i++) {
            err[0] = 0;
            if ((rc = answer_question(s, i, err, sizeof err)) < 0 && rc != VG_ECANCELED)
                vg_log(VG_LOG_WARNING, MOD, "stream %s: question %d: %s", s->name, i,
                       err[0] ? err : vg_strerror(rc));
        }
        did = 1;
    }
    return did;
}

static void *infer_main(void *arg)
{
    vg_streams *ss = arg;
    for (;;) {
        pthread_mutex_lock(&ss->mu);
        if (ss->quit && !ss->i_head) {
            pthread_mutex_unlock(&ss->mu);
            break;
        }
        ss->work = 0;
        stream *list = ss->i_head;
        pthread_mutex_unlock(&ss->mu);
        int did = 0;
        /* Only this thread removes from the list, so walking it unlocked is safe; new streams
         * are pushed at the head and seen on the next pass. */
        for (stream *s = list, *nx; s; s = nx) {
            nx = s->i_next;
            if (atomic_load(&s->stop)) {
                pthread_mutex_lock(&ss->mu);
                stream **pp = &ss->i_head;
                while (*pp && *pp != s)
                    pp = &(*pp)->i_next;
                if (*pp)
                    *pp = s->i_next;
                pthread_mutex_unlock(&ss->mu);
                infer_release(s);
                post_simple(s, M_INFER_DONE);
                did = 1;
                continue;
            }
            vg_infer_gate_enter(ss->gate);
            did |= infer_step(s);
            vg_infer_gate_leave(ss->gate);
        }
        if (!did) {
            pthread_mutex_lock(&ss->mu);
            if (!ss->work && !ss->quit) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 20 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&ss->cond, &ss->mu, &ts);
            }
            pthread_mutex_unlock(&ss->mu);
        }
    }
    return NULL;
}

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

static void publish(vg_streams *ss, stream *s, const char *kind, cJSON *p)
{
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
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line)
        return;
    size_t len = strlen(line);
    if (ss->ipc) {
        char topic[VG_IPC_TOPIC_MAX];
        snprintf(topic, sizeof topic, "stream/%s/%s", s->name, kind);
        vg_ipc_publish(ss->ipc, topic, line, len);
    }
    if (s->log && vg_journal_append(s->log, line, len) < 0)
        vg_log(VG_LOG_WARNING, MOD, "stream %s: record %llu was not logged", s->name, seq);
    ring_push(s, line, seq);
}

static void check_idle(vg_streams *ss);

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

static void handle_msg(vg_streams *ss, smsg *m)
{
    stream *s = m->s;
    switch (m->type) {
    case M_LOADED:
        s->loaded = 1;
        s->log = m->log;
        m->log = NULL;
        s->next_seq = m->last_seq + 1;
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

static void on_async(uv_async_t *a)
{
    vg_streams *ss = a->data;
    void *item;
    while (vg_queue_pop(ss->msgs, &item, 0) == 0)
        handle_msg(ss, item);
    check_idle(ss);
}

static void on_closed(uv_handle_t *h)
{
    vg_streams *ss = h->data;
    if (ss->on_idle)
        ss->on_idle(ss->on_idle_opaque);
}

static void check_idle(vg_streams *ss)
{
    if (!ss->stopping || ss->head || ss->closed)
        return;
    ss->closed = 1;
    uv_close((uv_handle_t *)&ss->async, on_closed);
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
    cJSON_AddStringToObject(o, "url", s->url);
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
    cJSON *w = cJSON_AddObjectToObject(o, "window");
    cJSON_AddNumberToObject(w, "start", atomic_load(&s->win_start));
    cJSON_AddNumberToObject(w, "end", atomic_load(&s->win_end));
    cJSON_AddNumberToObject(o, "last_seq", (double)(s->next_seq ? s->next_seq - 1 : 0));
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

static int handle_watch(vg_streams *ss, const vg_request *r, cJSON *reply, const char **wire,
                        char *err, size_t errlen)
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
    int is_url = 0;
    int rc = vg_daemon_media_check(r->video, (const char(*)[VG_CFG_STR])ss->cfg->media_roots,
                                   ss->cfg->n_media_roots, ss->cfg->allowed_protocols, resolved,
                                   sizeof resolved, &is_url, perr, sizeof perr);
    if (rc < 0) {
        *wire = rc == VG_ENOENT   ? VG_WIRE_NOT_FOUND
                : rc == VG_EINVAL ? VG_WIRE_BAD_REQUEST
                                  : VG_WIRE_FORBIDDEN;
        return vg_fail(err, errlen, rc, "%s", perr);
    }
    stream *s = calloc(1, sizeof *s);
    if (!s) {
        *wire = VG_WIRE_INTERNAL;
        return VG_ENOMEM;
    }
    s->ss = ss;
    snprintf(s->name, sizeof s->name, "%s", name);
    s->url = strdup(r->video);
    s->resolved = strdup(resolved);
    s->is_url = is_url;
    s->fps = r->stream_fps > 0 ? r->stream_fps : DEFAULT_FPS;
    s->window_s = r->window_s > 0 ? r->window_s : DEFAULT_WINDOW;
    s->update_s = r->update_s > 0 ? r->update_s : DEFAULT_UPDATE;
    s->speed = r->speed > 0 ? r->speed : 1.0;
    /* One sampling model with clip jobs: the checkpoint's preprocessing config, then the
     * request's knobs, then the daemon's ceilings (qa.h). */
    vg_sample_params sp = vg_qa_sample_params(mi);
    if (r->stream_fps <= 0)
        s->fps = sp.fps > 0 ? sp.fps : DEFAULT_FPS;
    s->max_pixels = r->stream_max_pixels > 0
                        ? VG_MIN(r->stream_max_pixels, ss->cfg->max_pixels_limit)
                        : vg_qa_stream_max_pixels(mi, ss->cfg->max_pixels_limit);
    s->min_pixels = vg_qa_stream_min_pixels(mi, s->max_pixels);
    s->window_s = VG_MAX(s->window_s, 2.0 / s->fps);
    s->min_window_s =
        VG_MIN(r->min_window_s > 0 ? r->min_window_s : DEFAULT_MIN_WINDOW, s->window_s);
    s->nq = r->n_questions;
    int oom = !s->url || !s->resolved || vg_media_policy_create(ss->cfg, is_url, &s->policy) < 0;
    s->log_max = (size_t)VG_MAX(ss->cfg->stream_log_max_records, 0);
    s->stall_ms = (int)(ss->cfg->stream_stall_timeout_s * 1000.0);
    s->max_new_tokens = ss->cfg->stream_max_new_tokens;
    for (int i = 0; i < s->nq; i++)
        oom |= !(s->qtext[i] = strdup(r->questions[i]));
    atomic_init(&s->stop, 0);
    s->created = unix_now();
    s->next_seq = 1;
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
        return handle_watch(ss, r, reply, wire, err, errlen);
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

int vg_streams_count(const vg_streams *ss)
{
    return ss ? ss->n_streams : 0;
}

void vg_streams_set_ipc(vg_streams *ss, vg_ipc_server *ipc)
{
    ss->ipc = ipc;
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
    if ((rc = vg_queue_create(MSG_QUEUE_CAP, &ss->msgs)) < 0 ||
        (rc = vg_queue_create(1024, &ss->janitor_q)) < 0) {
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
    /* Last: nothing above can fail after the handle exists (it is closed by the shutdown). */
    uv_async_init(p->loop, &ss->async, on_async);
    ss->async.data = ss;
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
    if (ss->msgs) {
        while (vg_queue_pop(ss->msgs, &item, 0) == 0) {
            smsg *m = item;
            if (m->type == M_LOADED && m->s) {
                m->s->log = m->log;
                m->log = NULL;
            }
            msg_free(m);
        }
        vg_queue_destroy(ss->msgs);
    }
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
