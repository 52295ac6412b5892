/*
 * eval_live.c: `vigil eval --live`, the live-annotation benchmark (issue 18; docs/eval.md).
 *
 * Each video of the file is watched by vigild as a live stream (a file replayed at --speed through
 * the stream path: reader, KV window, standing questions, event tracker), the events it publishes
 * are collected from the event socket (SUB, topic stream/NAME/) until the stream ends, and they
 * are scored against the true intervals at event level: a published event (its `ended` record, or
 * a `started` one never ended) matches a true interval of the same question when both ends are
 * within the tolerance (one-to-one, greedy by distance). Precision, recall and F1 at 1 s and 2 s,
 * the onset and offset delays (publish time of `started` / `ended` minus the wall time of the true
 * boundary) of the events matched at 2 s, spurious events (overlapping no true interval) per hour
 * of stream, and the events a person would see as wrong (end before start, or outside the
 * stream) are reported. One thread; the process's own sockets.
 */
#define _DEFAULT_SOURCE /* timegm */
#define _XOPEN_SOURCE   700
#include "eval.h"

#include "common.h"
#include "ipc.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_Q   8
#define MAX_IV  4096
#define MAX_EVS 4096

typedef struct live_q {
    char *query;
    double (*iv)[2];
    size_t n_iv;
    /* Published events: start, end, publish times of started/ended (NAN if none). */
    double (*ev)[4];
    size_t n_ev;
    size_t active; /* index of the open event + 1, 0 = none */
} live_q;

typedef struct live_video {
    char *video;
    double duration;
    live_q q[MAX_Q];
    int nq;
} live_video;

typedef struct live_opts {
    const char *file;
    double speed, timeout_s;
    cJSON *knobs; /* extra watch fields */
    int json, verbose;
} live_opts;

static volatile sig_atomic_t live_interrupted;

static void live_sigint(int sig)
{
    (void)sig;
    live_interrupted = 1;
}

static double unix_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" -> unix seconds (NAN if malformed). */
static double iso_unix(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms = 0;
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                     &tm.tm_min, &tm.tm_sec, &ms) < 6)
        return NAN;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return (double)t + ms / 1000.0;
}

static void videos_free(live_video *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].video);
        for (int k = 0; k < v[i].nq; k++) {
            free(v[i].q[k].query);
            free(v[i].q[k].iv);
            free(v[i].q[k].ev);
        }
    }
    free(v);
}

/* Reads the file: lines grouped by video (one stream each, up to MAX_Q questions). */
static int load(const char *path, live_video **out, size_t *n_out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return vg_fail(err, errlen, VG_ENOENT, "cannot read %s", path);
    char dir[PATH_MAX];
    char *rp = realpath(path, NULL);
    snprintf(dir, sizeof dir, "%s", rp ? rp : path);
    free(rp);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    live_video *v = NULL;
    size_t n = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0 && rc == 0) {
        lineno++;
        cJSON *o = cJSON_ParseWithLength(line, (size_t)len);
        if (!o) {
            size_t k = 0;
            while (k < (size_t)len && (line[k] == ' ' || line[k] == '\n' || line[k] == '\r'))
                k++;
            if (k == (size_t)len)
                continue; /* blank */
            rc = vg_fail(err, errlen, VG_EFORMAT, "line %d is not JSON", lineno);
            break;
        }
        const cJSON *jv = cJSON_GetObjectItemCaseSensitive(o, "video");
        const cJSON *jq = cJSON_GetObjectItemCaseSensitive(o, "query");
        if (!jq)
            jq = cJSON_GetObjectItemCaseSensitive(o, "question");
        const cJSON *ji = cJSON_GetObjectItemCaseSensitive(o, "intervals");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(o, "start");
        const cJSON *je = cJSON_GetObjectItemCaseSensitive(o, "end");
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(o, "duration");
        if (!cJSON_IsString(jv) || !cJSON_IsString(jq) || (ji && !cJSON_IsArray(ji))) {
            rc = vg_fail(err, errlen, VG_EFORMAT,
                         "line %d needs \"video\", \"query\" and optionally \"intervals\"", lineno);
            cJSON_Delete(o);
            break;
        }
        char video[PATH_MAX + 8];
        if (jv->valuestring[0] == '/' || strstr(jv->valuestring, "://") ||
            !strncmp(jv->valuestring, "file:", 5))
            snprintf(video, sizeof video, "%s", jv->valuestring);
        else
            snprintf(video, sizeof video, "%s/%s", dir, jv->valuestring);
        size_t vi = 0;
        while (vi < n && strcmp(v[vi].video, video))
            vi++;
        if (vi == n) {
            live_video *nv = realloc(v, (n + 1) * sizeof *v);
            if (!nv) {
                rc = VG_ENOMEM;
                cJSON_Delete(o);
                break;
            }
            v = nv;
            memset(&v[n], 0, sizeof v[n]);
            v[n].video = strdup(video);
            n++;
        }
        live_video *lv = &v[vi];
        if (cJSON_IsNumber(jd) && jd->valuedouble > 0)
            lv->duration = jd->valuedouble;
        if (lv->nq == MAX_Q) {
            rc = vg_fail(err, errlen, VG_ELIMIT, "line %d: more than %d questions for %s", lineno,
                         MAX_Q, video);
            cJSON_Delete(o);
            break;
        }
        live_q *q = &lv->q[lv->nq++];
        q->query = strdup(jq->valuestring);
        q->iv = calloc(MAX_IV, sizeof *q->iv);
        q->ev = calloc(MAX_EVS, sizeof *q->ev);
        if (!lv->video || !q->query || !q->iv || !q->ev) {
            rc = VG_ENOMEM;
            cJSON_Delete(o);
            break;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, ji)
        {
            const cJSON *a = cJSON_GetArrayItem(it, 0), *b = cJSON_GetArrayItem(it, 1);
            if (!cJSON_IsArray(it) || !cJSON_IsNumber(a) || !cJSON_IsNumber(b) ||
                !(a->valuedouble <= b->valuedouble) || a->valuedouble < 0 || q->n_iv == MAX_IV) {
                rc = vg_fail(err, errlen, VG_EFORMAT, "line %d: a bad interval", lineno);
                break;
            }
            q->iv[q->n_iv][0] = a->valuedouble;
            q->iv[q->n_iv][1] = b->valuedouble;
            q->n_iv++;
        }
        if (!ji && cJSON_IsNumber(js) && cJSON_IsNumber(je) && js->valuedouble <= je->valuedouble) {
            q->iv[0][0] = js->valuedouble;
            q->iv[0][1] = je->valuedouble;
            q->n_iv = 1;
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    if (rc == 0 && n == 0)
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s has no lines", path);
    if (rc < 0) {
        if (rc == VG_ENOMEM && !err[0])
            snprintf(err, errlen, "out of memory");
        videos_free(v, n);
        return rc;
    }
    *out = v;
    *n_out = n;
    return 0;
}

static cJSON *call(const vg_eval_conn *c, cJSON *req, char *err, size_t errlen)
{
    char *s = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    vg_ipc_client *cl;
    if (vg_ipc_client_open(c->cmd_url, c->reply_timeout_ms, 2000, 0, &cl, err, errlen) < 0) {
        free(s);
        return NULL;
    }
    char *reply = NULL;
    size_t len = 0;
    int rc = vg_ipc_client_call(cl, s, strlen(s), &reply, &len);
    vg_ipc_client_close(cl);
    free(s);
    if (rc < 0) {
        snprintf(err, errlen, "no reply from vigild at %s (%s); is it running?", c->cmd_url,
                 vg_strerror(rc));
        return NULL;
    }
    cJSON *o = cJSON_ParseWithLength(reply, len);
    free(reply);
    if (!o || !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok"))) {
        char *t = o ? cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(o, "error")) : NULL;
        snprintf(err, errlen, "vigild refused: %s", t ? t : "(not JSON)");
        free(t);
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static const char *jstr2(const cJSON *o, const char *k)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(x) ? x->valuestring : "";
}

/* Scores of one question at one tolerance. */
typedef struct live_score {
    size_t tp, n_pred, n_true;
} live_score;

/* Greedy one-to-one matching by distance (max of the two boundary errors <= tol); match[i] is the
 * true interval of event i or -1. */
static size_t match(const live_q *q, double tol, long *match_of_ev)
{
    char *used = calloc(q->n_iv + 1, 1);
    size_t tp = 0;
    for (size_t i = 0; i < q->n_ev; i++)
        match_of_ev[i] = -1;
    for (;;) {
        double best = INFINITY;
        size_t bi = 0, bj = 0;
        for (size_t i = 0; i < q->n_ev; i++) {
            if (match_of_ev[i] >= 0)
                continue;
            for (size_t j = 0; j < q->n_iv; j++) {
                if (used && used[j])
                    continue;
                double d = VG_MAX(fabs(q->ev[i][0] - q->iv[j][0]), fabs(q->ev[i][1] - q->iv[j][1]));
                if (d <= tol + 1e-9 && d < best) {
                    best = d;
                    bi = i;
                    bj = j;
                }
            }
        }
        if (!isfinite(best) || !used)
            break;
        match_of_ev[bi] = (long)bj;
        used[bj] = 1;
        tp++;
    }
    free(used);
    return tp;
}

static double ratio(size_t a, size_t b)
{
    return b ? (double)a / (double)b : NAN;
}

static void add_n(cJSON *o, const char *k, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, round(v * 10000) / 10000);
    else
        cJSON_AddNullToObject(o, k);
}

/* Plays one video; fills its questions' events. Returns 0, or < 0 with err. */
static int play(const vg_eval_conn *c, const live_opts *o, live_video *v, int idx, cJSON *stats,
                double *wall0_out, double *stream_end, char *err, size_t errlen)
{
    char name[64], topic[96];
    snprintf(name, sizeof name, "evlive%ld-%d", (long)getpid(), idx);
    snprintf(topic, sizeof topic, "stream/%s/", name);
    vg_ipc_sub *sub = NULL;
    int rc = vg_ipc_sub_open(c->events_url, topic, &sub, err, errlen);
    if (rc < 0)
        return rc;
    struct timespec pause = {0, 200 * 1000000L}; /* the subscription reaches the publisher */
    nanosleep(&pause, NULL);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddNumberToObject(req, "v", 1);
    cJSON_AddStringToObject(req, "op", "watch");
    cJSON_AddStringToObject(req, "name", name);
    cJSON_AddStringToObject(req, "url", v->video);
    cJSON *qs = cJSON_AddArrayToObject(req, "questions");
    for (int i = 0; i < v->nq; i++)
        cJSON_AddItemToArray(qs, cJSON_CreateString(v->q[i].query));
    cJSON_AddNumberToObject(req, "speed", o->speed);
    const cJSON *k;
    cJSON_ArrayForEach(k, o->knobs) cJSON_AddItemToObject(req, k->string, cJSON_Duplicate(k, 1));
    cJSON *r = call(c, req, err, errlen);
    if (!r) {
        vg_ipc_sub_close(sub);
        return VG_EIO;
    }
    cJSON_Delete(r);
    double t_watch = unix_time();
    double limit = o->timeout_s > 0  ? o->timeout_s
                   : v->duration > 0 ? v->duration / o->speed + 120
                                     : 24 * 3600;
    double w0_sum = 0;
    long w0_n = 0;
    int ended = 0;
    double quiet_since = 0; /* after `ended`: the last answers and events still come */
    *stream_end = 0;
    while (!live_interrupted && unix_time() - t_watch < limit) {
        char *msg = NULL;
        const char *tp, *payload;
        size_t len;
        if (ended && unix_time() - quiet_since > 3.0)
            break;
        rc = vg_ipc_sub_recv(sub, 200, &msg, &tp, &payload, &len);
        if (rc == VG_ETIMEDOUT)
            continue;
        quiet_since = unix_time();
        if (rc < 0) {
            free(msg);
            if (rc == VG_EFORMAT)
                continue;
            vg_ipc_sub_close(sub);
            return vg_fail(err, errlen, rc, "event socket: %s", vg_strerror(rc));
        }
        cJSON *e = cJSON_ParseWithLength(payload, len);
        free(msg);
        if (!e)
            continue;
        const char *kind = jstr2(e, "kind");
        if (!strcmp(kind, "state") && !strcmp(jstr2(e, "state"), "ended"))
            ended = 1;
        if (!strcmp(kind, "answer")) {
            const cJSON *w = cJSON_GetObjectItemCaseSensitive(e, "window");
            double we = jnum(w, "end");
            if (isfinite(we))
                *stream_end = VG_MAX(*stream_end, we);
            if (o->verbose)
                fprintf(stderr, "answer q%d [%.1f, %.1f] base %.1f: %s\n", (int)jnum(e, "question"),
                        jnum(w, "start"), we, jnum(w, "base"), jstr2(e, "text"));
        }
        if (!strcmp(kind, "event")) {
            int qi = (int)jnum(e, "question");
            const char *what = jstr2(e, "event");
            double s = jnum(e, "start"), en = jnum(e, "end"), t = jnum(e, "time");
            double sw = iso_unix(jstr2(e, "start_wall"));
            if (isfinite(sw) && isfinite(s)) {
                w0_sum += sw - s / o->speed;
                w0_n++;
            }
            if (o->verbose) {
                char *txt = cJSON_PrintUnformatted(e);
                fprintf(stderr, "%s\n", txt ? txt : "");
                free(txt);
            }
            if (qi >= 0 && qi < v->nq) {
                live_q *q = &v->q[qi];
                if (!strcmp(what, "started") && q->n_ev < MAX_EVS) {
                    double *x = q->ev[q->n_ev++];
                    x[0] = s;
                    x[1] = isfinite(en) ? en : s;
                    x[2] = t;
                    x[3] = NAN;
                    q->active = q->n_ev;
                } else if (q->active && (!strcmp(what, "update") || !strcmp(what, "ended"))) {
                    double *x = q->ev[q->active - 1];
                    x[0] = s;
                    if (isfinite(en))
                        x[1] = en;
                    if (!strcmp(what, "ended")) {
                        x[3] = t;
                        q->active = 0;
                    }
                }
            }
        }
        cJSON_Delete(e);
    }
    /* The stream's checks (streams), then unwatch. */
    cJSON *sr = cJSON_CreateObject();
    cJSON_AddNumberToObject(sr, "v", 1);
    cJSON_AddStringToObject(sr, "op", "streams");
    char e2[256];
    r = call(c, sr, e2, sizeof e2);
    const cJSON *arr = r ? cJSON_GetObjectItemCaseSensitive(r, "streams") : NULL, *st;
    cJSON_ArrayForEach(st, arr) if (!strcmp(jstr2(st, "name"), name))
    {
        const cJSON *ck = cJSON_GetObjectItemCaseSensitive(st, "events_checked");
        const cJSON *x;
        cJSON_ArrayForEach(x, ck) if (cJSON_IsNumber(x))
        {
            const cJSON *have = cJSON_GetObjectItemCaseSensitive(stats, x->string);
            double prev = cJSON_IsNumber(have) ? have->valuedouble : 0;
            cJSON_DeleteItemFromObjectCaseSensitive(stats, x->string);
            cJSON_AddNumberToObject(stats, x->string, prev + x->valuedouble);
        }
        const cJSON *tk = cJSON_GetObjectItemCaseSensitive(st, "tracker");
        if (tk && !cJSON_GetObjectItemCaseSensitive(stats, "tracker"))
            cJSON_AddItemToObject(stats, "tracker", cJSON_Duplicate(tk, 1));
    }
    cJSON_Delete(r);
    cJSON *ur = cJSON_CreateObject();
    cJSON_AddNumberToObject(ur, "v", 1);
    cJSON_AddStringToObject(ur, "op", "unwatch");
    cJSON_AddStringToObject(ur, "name", name);
    cJSON_Delete(call(c, ur, e2, sizeof e2));
    vg_ipc_sub_close(sub);
    *wall0_out = w0_n ? w0_sum / (double)w0_n : t_watch;
    if (v->duration <= 0)
        v->duration = *stream_end;
    /* An event still open at the end lasts to the end of what was seen. */
    for (int i = 0; i < v->nq; i++)
        if (v->q[i].active)
            v->q[i].ev[v->q[i].active - 1][1] =
                VG_MAX(v->q[i].ev[v->q[i].active - 1][1], *stream_end);
    if (live_interrupted)
        return vg_fail(err, errlen, VG_ECANCELED, "interrupted");
    if (!ended)
        fprintf(stderr, "vigil eval --live: %s: no end of stream after %.0f s; scoring what came\n",
                v->video, limit);
    return 0;
}

static void usage_live(FILE *f)
{
    fprintf(f, "usage: vigil eval --live FILE.jsonl [--speed X] [--json] [--verbose]\n"
               "       [--timeout-s S] [--fps F] [--window-s S] [--update-s S] [--max-pixels N]\n"
               "       [--confirm N] [--min-duration-s S] [--hold-s S] [--merge-gap-s S]\n"
               "Each video is watched as a live stream replayed at --speed (default 3); lines are\n"
               "{\"video\", \"query\", \"intervals\": [[start, end], ...]} (see docs/eval.md).\n");
}

int vg_cmd_eval_live(int argc, char **argv, const vg_eval_conn *c)
{
    live_opts o = {NULL, 3.0, 0, cJSON_CreateObject(), c->json, 0};
    static const char *const knob_num[] = {
        "--fps",      "fps",      "--window-s",       "window_s",
        "--update-s", "update_s", "--max-pixels",     "max_pixels",
        "--confirm",  "confirm",  "--min-duration-s", "min_duration_s",
        "--hold-s",   "hold_s",   "--merge-gap-s",    "merge_gap_s",
        NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--live"))
            continue;
        if (!strcmp(a, "--json")) {
            o.json = 1;
            continue;
        }
        if (!strcmp(a, "--verbose")) {
            o.verbose = 1;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_live(stdout);
            cJSON_Delete(o.knobs);
            return 0;
        }
        int done = 0;
        if (i + 1 < argc) {
            char *end;
            double x = strtod(argv[i + 1], &end);
            int num_ok = *argv[i + 1] && !*end && isfinite(x);
            if (!strcmp(a, "--speed") && num_ok && x > 0)
                o.speed = x, done = 1;
            else if (!strcmp(a, "--timeout-s") && num_ok && x > 0)
                o.timeout_s = x, done = 1;
            for (int k = 0; knob_num[k] && !done; k += 2)
                if (!strcmp(a, knob_num[k]) && num_ok) {
                    cJSON_AddNumberToObject(o.knobs, knob_num[k + 1], x);
                    done = 1;
                }
            if (done) {
                i++;
                continue;
            }
        }
        if (a[0] != '-' && !o.file) {
            o.file = a;
            continue;
        }
        fprintf(stderr, "vigil eval --live: bad option '%s'\n", a);
        usage_live(stderr);
        cJSON_Delete(o.knobs);
        return 2;
    }
    if (!o.file || !o.knobs) {
        usage_live(stderr);
        cJSON_Delete(o.knobs);
        return 2;
    }
    if (!c->events_url) {
        fprintf(stderr, "vigil eval --live: no event socket URL\n");
        cJSON_Delete(o.knobs);
        return 2;
    }
    char err[1024] = "";
    live_video *v = NULL;
    size_t nv = 0;
    if (load(o.file, &v, &nv, err, sizeof err) < 0) {
        fprintf(stderr, "vigil eval --live: %s\n", err);
        cJSON_Delete(o.knobs);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = live_sigint;
    sigaction(SIGINT, &sa, NULL);
    static const double tols[2] = {1.0, 2.0};
    live_score sc[2] = {{0, 0, 0}, {0, 0, 0}};
    double onset_sum = 0, offset_sum = 0, hours = 0;
    size_t onset_n = 0, offset_n = 0, spurious = 0, invalid = 0;
    int status = 0;
    cJSON *stats = cJSON_CreateObject();
    cJSON *per = cJSON_CreateArray();
    double t0 = unix_time();
    for (size_t vi = 0; vi < nv && !live_interrupted; vi++) {
        double wall0 = 0, stream_end = 0;
        err[0] = 0;
        if (play(c, &o, &v[vi], (int)vi, stats, &wall0, &stream_end, err, sizeof err) < 0) {
            fprintf(stderr, "vigil eval --live: %s: %s\n", v[vi].video, err);
            status = 1;
            if (live_interrupted)
                break;
            continue;
        }
        hours += v[vi].duration / 3600.0;
        for (int qi = 0; qi < v[vi].nq; qi++) {
            live_q *q = &v[vi].q[qi];
            long *m = calloc(q->n_ev + 1, sizeof *m);
            if (!m)
                continue;
            for (int ti = 0; ti < 2; ti++) {
                size_t tp = match(q, tols[ti], m);
                sc[ti].tp += tp;
                sc[ti].n_pred += q->n_ev;
                sc[ti].n_true += q->n_iv;
            }
            /* m holds the 2 s matches now: delays. */
            for (size_t i = 0; i < q->n_ev; i++) {
                double *x = q->ev[i];
                if (x[1] < x[0] || x[0] < -1e-6 || x[1] > v[vi].duration + 1.0)
                    invalid++;
                int overlaps = 0;
                for (size_t j = 0; j < q->n_iv && !overlaps; j++)
                    overlaps = x[0] <= q->iv[j][1] && x[1] >= q->iv[j][0];
                spurious += !overlaps;
                if (m[i] < 0)
                    continue;
                const double *t = q->iv[m[i]];
                if (isfinite(x[2])) {
                    onset_sum += x[2] - (wall0 + t[0] / o.speed);
                    onset_n++;
                }
                if (isfinite(x[3])) {
                    offset_sum += x[3] - (wall0 + t[1] / o.speed);
                    offset_n++;
                }
            }
            cJSON *pq = cJSON_CreateObject();
            cJSON_AddStringToObject(pq, "video", v[vi].video);
            cJSON_AddStringToObject(pq, "query", q->query);
            cJSON *ti = cJSON_AddArrayToObject(pq, "truth");
            for (size_t j = 0; j < q->n_iv; j++) {
                double pair[2] = {q->iv[j][0], q->iv[j][1]};
                cJSON_AddItemToArray(ti, cJSON_CreateDoubleArray(pair, 2));
            }
            cJSON *pe = cJSON_AddArrayToObject(pq, "events");
            for (size_t i = 0; i < q->n_ev; i++) {
                cJSON *ev = cJSON_CreateObject();
                add_n(ev, "start", q->ev[i][0]);
                add_n(ev, "end", q->ev[i][1]);
                add_n(ev, "onset_delay_s",
                      isfinite(q->ev[i][2]) && m[i] >= 0
                          ? q->ev[i][2] - (wall0 + q->iv[m[i]][0] / o.speed)
                          : NAN);
                add_n(ev, "offset_delay_s",
                      isfinite(q->ev[i][3]) && m[i] >= 0
                          ? q->ev[i][3] - (wall0 + q->iv[m[i]][1] / o.speed)
                          : NAN);
                cJSON_AddNumberToObject(ev, "match_2s", (double)m[i]);
                cJSON_AddItemToArray(pe, ev);
            }
            cJSON_AddItemToArray(per, pq);
            free(m);
        }
    }
    double elapsed = unix_time() - t0;
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "file", o.file);
    cJSON_AddNumberToObject(out, "speed", o.speed);
    cJSON_AddItemToObject(out, "knobs", cJSON_Duplicate(o.knobs, 1));
    double f1[2];
    for (int ti = 0; ti < 2; ti++) {
        double p = ratio(sc[ti].tp, sc[ti].n_pred), r = ratio(sc[ti].tp, sc[ti].n_true);
        f1[ti] =
            sc[ti].n_pred + sc[ti].n_true ? 2.0 * sc[ti].tp / (sc[ti].n_pred + sc[ti].n_true) : NAN;
        char k[32];
        snprintf(k, sizeof k, "precision_%ds", (int)tols[ti]);
        add_n(out, k, p);
        snprintf(k, sizeof k, "recall_%ds", (int)tols[ti]);
        add_n(out, k, r);
        snprintf(k, sizeof k, "f1_%ds", (int)tols[ti]);
        add_n(out, k, f1[ti]);
    }
    cJSON_AddNumberToObject(out, "n_events", (double)sc[1].n_pred);
    cJSON_AddNumberToObject(out, "n_true", (double)sc[1].n_true);
    add_n(out, "mean_onset_delay_s", onset_n ? onset_sum / onset_n : NAN);
    add_n(out, "mean_offset_delay_s", offset_n ? offset_sum / offset_n : NAN);
    cJSON_AddNumberToObject(out, "spurious_events", (double)spurious);
    add_n(out, "spurious_per_hour", hours > 0 ? spurious / hours : NAN);
    cJSON_AddNumberToObject(out, "invalid_events", (double)invalid);
    add_n(out, "stream_hours", hours);
    cJSON_AddItemToObject(out, "checks", stats);
    add_n(out, "elapsed_s", elapsed);
    if (o.verbose || o.json)
        cJSON_AddItemToObject(out, "questions", per);
    else
        cJSON_Delete(per);
    if (o.json) {
        char *s = cJSON_PrintUnformatted(out);
        printf("%s\n", s ? s : "{}");
        free(s);
    } else {
        printf("vigil eval --live %s: %zu stream(s), %.1f min of video at %gx in %.0f s\n", o.file,
               nv, hours * 60, o.speed, elapsed);
        printf("events %zu for %zu true intervals; spurious %zu (%.1f per hour); invalid %zu\n",
               sc[1].n_pred, sc[1].n_true, spurious, hours > 0 ? spurious / hours : 0.0, invalid);
        for (int ti = 0; ti < 2; ti++)
            printf("tolerance %.0f s: precision %.3f  recall %.3f  F1 %.3f\n", tols[ti],
                   ratio(sc[ti].tp, sc[ti].n_pred), ratio(sc[ti].tp, sc[ti].n_true), f1[ti]);
        printf("mean onset delay %.2f s, mean offset delay %.2f s (wall clock, events matched at "
               "2 s)\n",
               onset_n ? onset_sum / onset_n : NAN, offset_n ? offset_sum / offset_n : NAN);
        char *ck = cJSON_PrintUnformatted(stats);
        printf("answers' ranges checked: %s\n", ck ? ck : "{}");
        free(ck);
    }
    cJSON_Delete(out);
    cJSON_Delete(o.knobs);
    videos_free(v, nv);
    return status;
}
