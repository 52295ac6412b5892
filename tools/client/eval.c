/*
 * eval.c: `vigil eval`, the temporal-grounding benchmark of the model vigild serves, with the
 * video-blind baseline it must beat (issue 6). See docs/eval.md for the metrics.
 *
 * Flow: load the JSONL file (malformed lines become per-line errors), optionally fix the blind
 * fractions (given, or fitted on a training file), then keep up to --concurrency jobs in flight:
 * each line is an `ask` with a job id chosen here (so a resent ask is deduplicated by the daemon),
 * and its result is polled with `job` (no pub/sub: a dropped event cannot lose a result). A final
 * job is scored at once; a failed ask, a failed job or a timeout is an error of that line only.
 * The run is aborted only when the daemon stops answering altogether.
 *
 * Single-threaded and blocking; everything the daemon sends is validated before use.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "eval.h"

#include "common.h"
#include "ipc.h"
#include "pipeline.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE_VIDEO  4096
#define MAX_LINE_QUERY  8192
#define MAX_CONCURRENCY 64
#define POLL_MS         50
/* Consecutive requests without a reply before the run is given up. */
#define MAX_LOST_REPLIES 3

/* ===================================================================================================
 * Scoring.
 */
double vg_eval_tiou(double ps, double pe, double ts, double te)
{
    if (!isfinite(ps) || !isfinite(pe) || !isfinite(ts) || !isfinite(te))
        return 0;
    if (pe < ps) {
        double t = ps;
        ps = pe, pe = t;
    }
    if (te < ts) {
        double t = ts;
        ts = te, te = t;
    }
    double inter = fmin(pe, te) - fmax(ps, ts);
    double uni = fmax(pe, te) - fmin(ps, ts);
    if (uni <= 0)
        return ps == ts && pe == te ? 1.0 : 0.0;
    if (inter <= 0)
        return 0;
    double r = inter / uni;
    return r > 1 ? 1 : r;
}

void vg_eval_acc_positive(vg_eval_acc *a, double tiou)
{
    a->n_positive++;
    a->sum_tiou += tiou;
    a->hit03 += tiou >= 0.3;
    a->hit05 += tiou >= 0.5;
    a->hit07 += tiou >= 0.7;
}

void vg_eval_acc_negative(vg_eval_acc *a, int correct)
{
    a->n_negative++;
    a->negative_correct += correct != 0;
}

void vg_eval_acc_error(vg_eval_acc *a)
{
    a->n_errors++;
}

void vg_eval_metrics_get(const vg_eval_acc *a, vg_eval_metrics *out)
{
    double np = (double)a->n_positive, nn = (double)a->n_negative;
    out->n_positive = a->n_positive;
    out->n_negative = a->n_negative;
    out->n_errors = a->n_errors;
    out->mean_tiou = np > 0 ? a->sum_tiou / np : NAN;
    out->r03 = np > 0 ? (double)a->hit03 / np : NAN;
    out->r05 = np > 0 ? (double)a->hit05 / np : NAN;
    out->r07 = np > 0 ? (double)a->hit07 / np : NAN;
    out->negative_accuracy = nn > 0 ? (double)a->negative_correct / nn : NAN;
    out->mean_tiou_all =
        np + nn > 0 ? (a->sum_tiou + (double)a->negative_correct) / (np + nn) : NAN;
}

int vg_eval_fit_blind(const double *duration, const double *start, const double *end, size_t n,
                      double *a, double *b, double *mean_tiou)
{
    if (n == 0)
        return VG_EINVAL;
    double best = -1;
    int best_i = 0, best_j = 100;
    for (int i = 0; i < 100; i++)
        for (int j = i + 1; j <= 100; j++) {
            double fa = i / 100.0, fb = j / 100.0, sum = 0;
            for (size_t k = 0; k < n; k++)
                sum += vg_eval_tiou(fa * duration[k], fb * duration[k], start[k], end[k]);
            if (sum > best) {
                best = sum;
                best_i = i, best_j = j;
            }
        }
    *a = best_i / 100.0;
    *b = best_j / 100.0;
    *mean_tiou = best / (double)n;
    return 0;
}

/* ===================================================================================================
 * Benchmark files.
 */
void vg_eval_item_clear(vg_eval_item *it)
{
    if (!it)
        return;
    free(it->video);
    free(it->query);
    free(it->error);
    memset(it, 0, sizeof *it);
}

/* A number field: 1 with *v set, 0 when absent or null, -1 when present but not a finite number. */
static int opt_number(const cJSON *o, const char *key, double *v)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it || cJSON_IsNull(it))
        return 0;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return -1;
    *v = it->valuedouble;
    return 1;
}

static int is_url(const char *s)
{
    if (!strncmp(s, "file:", 5))
        return 1;
    const char *p = strstr(s, "://");
    if (!p || p == s)
        return 0;
    for (const char *q = s; q < p; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
              (q > s && ((*q >= '0' && *q <= '9') || *q == '+' || *q == '-' || *q == '.'))))
            return 0;
    return 1;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

int vg_eval_parse_line(const char *text, size_t len, const char *base_dir, vg_eval_item *out,
                       char *err, size_t errlen)
{
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!o)
        return vg_fail(err, errlen, VG_EFORMAT, "not valid JSON");
    if (!end || end < text || end > text + len || !blank(end, (size_t)(text + len - end))) {
        cJSON_Delete(o);
        return vg_fail(err, errlen, VG_EFORMAT, "text after the JSON object");
    }
    int rc = VG_EFORMAT;
    vg_eval_item it;
    memset(&it, 0, sizeof it);
    if (!cJSON_IsObject(o)) {
        vg_fail(err, errlen, rc, "not a JSON object");
        goto out;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "video");
    if (!cJSON_IsString(v) || !v->valuestring[0]) {
        vg_fail(err, errlen, rc, "\"video\" is missing or not a non-empty string");
        goto out;
    }
    if (strlen(v->valuestring) > MAX_LINE_VIDEO) {
        vg_fail(err, errlen, rc, "\"video\" is longer than %d bytes", MAX_LINE_VIDEO);
        goto out;
    }
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "query");
    if (!q)
        q = cJSON_GetObjectItemCaseSensitive(o, "question");
    if (!cJSON_IsString(q) || !q->valuestring[0]) {
        vg_fail(err, errlen, rc, "\"query\" is missing or not a non-empty string");
        goto out;
    }
    if (strlen(q->valuestring) > MAX_LINE_QUERY) {
        vg_fail(err, errlen, rc, "\"query\" is longer than %d bytes", MAX_LINE_QUERY);
        goto out;
    }
    double s = 0, e = 0, d = 0;
    int hs = opt_number(o, "start", &s), he = opt_number(o, "end", &e);
    int hd = opt_number(o, "duration", &d);
    if (hs < 0 || he < 0) {
        vg_fail(err, errlen, rc, "\"start\" and \"end\" must be numbers (seconds)");
        goto out;
    }
    if (hs != he) {
        vg_fail(err, errlen, rc,
                "\"start\" and \"end\" must be given together (neither: a negative)");
        goto out;
    }
    if (hs && (s < 0 || e < s)) {
        vg_fail(err, errlen, rc, "the interval %g..%g is not 0 <= start <= end", s, e);
        goto out;
    }
    if (hd < 0 || (hd && d <= 0)) {
        vg_fail(err, errlen, rc, "\"duration\" must be a positive number of seconds");
        goto out;
    }
    const char *video = v->valuestring;
    if (video[0] != '/' && !is_url(video) && base_dir) {
        size_t n = strlen(base_dir) + strlen(video) + 2;
        it.video = malloc(n);
        if (it.video)
            snprintf(it.video, n, "%s/%s", base_dir, video);
    } else {
        it.video = strdup(video);
    }
    it.query = strdup(q->valuestring);
    if (!it.video || !it.query) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
        goto out;
    }
    it.positive = hs;
    it.start = s;
    it.end = e;
    it.duration = hd ? d : 0;
    *out = it;
    memset(&it, 0, sizeof it);
    rc = 0;
out:
    vg_eval_item_clear(&it);
    cJSON_Delete(o);
    return rc;
}

void vg_eval_set_free(vg_eval_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        vg_eval_item_clear(&s->items[i]);
    free(s->items);
    free(s);
}

int vg_eval_load(const char *path, size_t max_items, vg_eval_set **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return vg_fail(err, errlen, errno == ENOENT ? VG_ENOENT : VG_EIO, "%s: %s", path,
                       strerror(errno));
    /* The directory of the file, absolute, for relative videos. */
    char *base = NULL;
    char *real = realpath(path, NULL);
    if (real) {
        char *slash = strrchr(real, '/');
        if (slash == real)
            slash[1] = 0;
        else if (slash)
            *slash = 0;
        base = real;
    }
    vg_eval_set *s = calloc(1, sizeof *s);
    size_t cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    int lineno = 0, rc = 0;
    if (!s || !base) {
        rc = vg_fail(err, errlen, s ? VG_EIO : VG_ENOMEM, "%s: %s", path,
                     s ? strerror(errno) : "out of memory");
        goto done;
    }
    while ((max_items == 0 || s->n < max_items) && (n = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        if (blank(line, (size_t)n))
            continue;
        if (s->n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            vg_eval_item *ni = realloc(s->items, nc * sizeof *ni);
            if (!ni) {
                rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
                goto done;
            }
            s->items = ni, cap = nc;
        }
        vg_eval_item *it = &s->items[s->n];
        memset(it, 0, sizeof *it);
        char why[512];
        int prc = vg_eval_parse_line(line, (size_t)n, base, it, why, sizeof why);
        if (prc == VG_ENOMEM) {
            rc = vg_fail(err, errlen, prc, "out of memory");
            goto done;
        }
        if (prc < 0)
            it->error = strdup(why);
        it->line = lineno;
        s->n++;
    }
    if (ferror(f))
        rc = vg_fail(err, errlen, VG_EIO, "%s: read error", path);
done:
    free(line);
    free(base);
    fclose(f);
    if (rc < 0) {
        vg_eval_set_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ===================================================================================================
 * Predictions.
 */
static int prediction_of(const cJSON *job, size_t *n_events, double *start, double *end, char *err,
                         size_t errlen)
{
    if (!cJSON_IsObject(job))
        return vg_fail(err, errlen, VG_EFORMAT, "the job is not a JSON object");
    size_t n = 0;
    double s = 0, e = 0;
    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(job, "events");
    if (cJSON_IsArray(evs)) {
        const cJSON *ev;
        cJSON_ArrayForEach(ev, evs)
        {
            double a, b;
            if (opt_number(ev, "start", &a) != 1 || opt_number(ev, "end", &b) != 1)
                continue;
            if (n++ == 0)
                s = fmin(a, b), e = fmax(a, b);
        }
    } else {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(job, "text");
        if (!cJSON_IsString(text))
            return vg_fail(err, errlen, VG_EFORMAT, "the job has neither events nor text");
        vg_event *ev = NULL;
        size_t ne = 0;
        if (vg_answer_parse(text->valuestring, &ev, &ne) < 0)
            return vg_fail(err, errlen, VG_EFORMAT, "the answer cannot be parsed");
        for (size_t i = 0; i < ne; i++) {
            if (!isfinite(ev[i].start) || !isfinite(ev[i].end))
                continue;
            if (n++ == 0)
                s = fmin(ev[i].start, ev[i].end), e = fmax(ev[i].start, ev[i].end);
        }
        free(ev);
    }
    *n_events = n;
    *start = s;
    *end = e;
    return 0;
}

int vg_eval_job_prediction(const char *job_json, size_t len, size_t *n_events, double *start,
                           double *end, char *err, size_t errlen)
{
    cJSON *o = cJSON_ParseWithLength(job_json, len);
    if (!o)
        return vg_fail(err, errlen, VG_EFORMAT, "the job is not valid JSON");
    int rc = prediction_of(o, n_events, start, end, err, errlen);
    cJSON_Delete(o);
    return rc;
}

/* ===================================================================================================
 * Clip durations for the blind baseline: the line's "duration", else the container's, cached per
 * video.
 */
typedef struct dur_entry {
    char *video;     /* NULL = empty slot */
    double duration; /* > 0, or 0 when it could not be read (why in error) */
    char *error;
} dur_entry;

typedef struct dur_cache {
    dur_entry *slots;
    size_t cap, n;
} dur_cache;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void dur_cache_free(dur_cache *c)
{
    for (size_t i = 0; i < c->cap; i++) {
        free(c->slots[i].video);
        free(c->slots[i].error);
    }
    free(c->slots);
    memset(c, 0, sizeof *c);
}

static dur_entry *dur_slot(dur_cache *c, const char *video)
{
    if (c->n * 2 >= c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 256;
        dur_entry *ns = calloc(nc, sizeof *ns);
        if (!ns)
            return NULL;
        for (size_t i = 0; i < c->cap; i++) {
            if (!c->slots[i].video)
                continue;
            size_t k = hash_str(c->slots[i].video) & (nc - 1);
            while (ns[k].video)
                k = (k + 1) & (nc - 1);
            ns[k] = c->slots[i];
        }
        free(c->slots);
        c->slots = ns, c->cap = nc;
    }
    size_t k = hash_str(video) & (c->cap - 1);
    while (c->slots[k].video && strcmp(c->slots[k].video, video) != 0)
        k = (k + 1) & (c->cap - 1);
    return &c->slots[k];
}

/* The clip's duration in seconds (> 0), or 0 with the reason in err. */
static double duration_of(dur_cache *c, const vg_eval_item *it, char *err, size_t errlen)
{
    if (it->duration > 0)
        return it->duration;
    dur_entry *e = dur_slot(c, it->video);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return 0;
    }
    if (!e->video) {
        e->video = strdup(it->video);
        if (!e->video) {
            snprintf(err, errlen, "out of memory");
            return 0;
        }
        c->n++;
        vg_media *m = NULL;
        char why[512] = "";
        vg_media_params p = vg_media_default_params();
        int rc = vg_media_open(it->video, &p, &m, why, sizeof why);
        if (rc == 0) {
            const vg_media_info *info = vg_media_get_info(m);
            double d = info->duration;
            if (!(d > 0) && info->total_frames > 0 && info->fps > 0)
                d = (double)info->total_frames / info->fps;
            if (d > 0 && isfinite(d))
                e->duration = d;
            else
                snprintf(why, sizeof why, "the container does not say how long the clip is");
            vg_media_close(m);
        }
        if (!(e->duration > 0))
            e->error = strdup(why[0] ? why : vg_strerror(rc));
    }
    if (!(e->duration > 0))
        snprintf(err, errlen, "duration of %s unknown: %s", it->video,
                 e->error ? e->error : "out of memory");
    return e->duration;
}

/* ===================================================================================================
 * The daemon.
 */
typedef struct conn {
    const char *url;
    int timeout_ms;
    vg_ipc_client *cl;
    int lost;          /* consecutive requests without a reply */
    unsigned seq;      /* request ids */
    size_t busy_count; /* `busy` replies to ask (retried) */
} conn;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static cJSON *new_req(conn *c, const char *op)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    char id[48];
    snprintf(id, sizeof id, "e%ld-%u", (long)getpid(), ++c->seq);
    if (!cJSON_AddNumberToObject(o, "v", 1) || !cJSON_AddStringToObject(o, "op", op) ||
        !cJSON_AddStringToObject(o, "id", id)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Sends req (consumed) and returns the parsed reply object, or NULL (no reply, or not a JSON
 * object) with the reason in err. */
static cJSON *conn_call(conn *c, cJSON *req, char *err, size_t errlen)
{
    char *s = req ? cJSON_PrintUnformatted(req) : NULL;
    cJSON_Delete(req);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int rc = 0;
    if (!c->cl)
        rc = vg_ipc_client_open(c->url, c->timeout_ms, 2000, 0, &c->cl, err, errlen);
    char *reply = NULL;
    size_t len = 0;
    if (rc == 0) {
        rc = vg_ipc_client_call(c->cl, s, strlen(s), &reply, &len);
        if (rc < 0) {
            snprintf(err, errlen, "no reply from vigild at %s (%s)", c->url, vg_strerror(rc));
            /* A fresh socket for the next request: this one may still wait for the old reply. */
            vg_ipc_client_close(c->cl);
            c->cl = NULL;
        }
    }
    free(s);
    if (rc < 0) {
        c->lost++;
        return NULL;
    }
    c->lost = 0;
    cJSON *o = cJSON_ParseWithLength(reply, len);
    free(reply);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        snprintf(err, errlen, "the daemon's reply is not a JSON object");
        return NULL;
    }
    return o;
}

static const char *jstr(const cJSON *o, const char *k, const char *dflt)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(it) ? it->valuestring : dflt;
}

/* "code: message" of an error reply or a failed job's error object. */
static void error_text(const cJSON *e, char *out, size_t cap)
{
    snprintf(out, cap, "%s: %s", jstr(e, "code", "error"), jstr(e, "message", "(no message)"));
}

/* ===================================================================================================
 * The run.
 */
enum { PENDING, RUNNING, SCORED, FAILED };

typedef struct result {
    int status;
    int asked; /* an ask was sent (the job may exist even without a reply) */
    char job[80];
    double t_submit;
    size_t n_events;
    double ps, pe; /* the first predicted event when n_events > 0 */
    double tiou;   /* positives */
    char *text;    /* the answer, for --verbose */
    char *error;
    /* Blind baseline. */
    int blind_ok;
    double blind_tiou, duration;
    char *blind_error;
} result;

typedef struct opts {
    const char *file, *fit_file;
    int json, verbose, concurrency;
    size_t max;
    long timeout_ms;
    int have_blind;
    double blind_a, blind_b;
    cJSON *sampling, *generation;
    const char *system;
} opts;

static void set_error(result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(result *r, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    free(r->error);
    r->error = strdup(buf);
    r->status = FAILED;
}

/* Submits item i. Returns 1 when the job runs, 0 when the line failed or must be retried (busy:
 * r->status stays PENDING), -1 when the daemon gave no reply. */
static int submit(conn *c, const opts *o, const vg_eval_item *it, result *r)
{
    cJSON *req = new_req(c, "ask"); /* NULL: conn_call reports it */
    cJSON_AddStringToObject(req, "video", it->video);
    cJSON_AddStringToObject(req, "question", it->query);
    cJSON_AddStringToObject(req, "job", r->job);
    if (o->system)
        cJSON_AddStringToObject(req, "system", o->system);
    if (cJSON_GetArraySize(o->sampling))
        cJSON_AddItemToObject(req, "sampling", cJSON_Duplicate(o->sampling, 1));
    if (cJSON_GetArraySize(o->generation))
        cJSON_AddItemToObject(req, "generation", cJSON_Duplicate(o->generation, 1));
    char err[512];
    r->asked = 1;
    cJSON *rep = conn_call(c, req, err, sizeof err);
    if (!rep) {
        if (c->lost)
            return -1;
        set_error(r, "ask: %s", err);
        return 0;
    }
    int ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "ok"));
    if (!ok) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(rep, "error");
        if (!strcmp(jstr(e, "code", ""), "busy")) {
            c->busy_count++;
            cJSON_Delete(rep);
            return 0;
        }
        char t[700];
        error_text(e, t, sizeof t);
        set_error(r, "ask: %s", t);
        cJSON_Delete(rep);
        return 0;
    }
    cJSON_Delete(rep);
    r->status = RUNNING;
    r->t_submit = vg_now_ms();
    return 1;
}

static void cancel_job(conn *c, const char *job)
{
    cJSON *req = new_req(c, "cancel");
    if (!req)
        return;
    cJSON_AddStringToObject(req, "job", job);
    char err[256];
    cJSON_Delete(conn_call(c, req, err, sizeof err));
}

/* Polls a running job; scores it when final. Returns 1 when the line is finished, 0 when still
 * running, -1 when the daemon gave no reply. */
static int poll_job(conn *c, const opts *o, const vg_eval_item *it, result *r)
{
    cJSON *req = new_req(c, "job"); /* NULL: conn_call reports it */
    cJSON_AddStringToObject(req, "job", r->job);
    char err[512];
    cJSON *rep = conn_call(c, req, err, sizeof err);
    if (!rep) {
        if (c->lost)
            return -1;
        set_error(r, "job: %s", err);
        return 1;
    }
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rep, "ok"))) {
        char t[700];
        error_text(cJSON_GetObjectItemCaseSensitive(rep, "error"), t, sizeof t);
        set_error(r, "job %s: %s", r->job, t);
        cJSON_Delete(rep);
        return 1;
    }
    const cJSON *job = cJSON_GetObjectItemCaseSensitive(rep, "job");
    const char *state = jstr(job, "state", "");
    int rc = 1;
    if (!strcmp(state, "completed")) {
        if (prediction_of(job, &r->n_events, &r->ps, &r->pe, err, sizeof err) < 0) {
            set_error(r, "job %s: %s", r->job, err);
        } else {
            if (it->positive)
                r->tiou = r->n_events ? vg_eval_tiou(r->ps, r->pe, it->start, it->end) : 0;
            r->status = SCORED;
            const char *text = jstr(job, "text", NULL);
            if (o->verbose && text)
                r->text = strdup(text);
        }
    } else if (!strcmp(state, "failed") || !strcmp(state, "cancelled")) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(job, "error");
        char t[700];
        if (cJSON_IsObject(e))
            error_text(e, t, sizeof t);
        else
            snprintf(t, sizeof t, "no error given");
        set_error(r, "job %s %s: %s", r->job, state, t);
    } else if (!strcmp(state, "queued") || !strcmp(state, "running")) {
        rc = 0;
        if (o->timeout_ms > 0 && vg_now_ms() - r->t_submit > (double)o->timeout_ms) {
            cancel_job(c, r->job);
            set_error(r, "job %s: no result after %ld ms (cancelled)", r->job, o->timeout_ms);
            rc = 1;
        }
    } else {
        set_error(r, "job %s: unexpected state \"%s\"", r->job, state);
    }
    cJSON_Delete(rep);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------
 * Output.
 */
static void add_num(cJSON *o, const char *k, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

static void add_metrics(cJSON *o, const vg_eval_metrics *m)
{
    add_num(o, "mean_tiou", m->mean_tiou);
    add_num(o, "r_at_0_3", m->r03);
    add_num(o, "r_at_0_5", m->r05);
    add_num(o, "r_at_0_7", m->r07);
    add_num(o, "negative_accuracy", m->negative_accuracy);
    add_num(o, "mean_tiou_all", m->mean_tiou_all);
    cJSON_AddNumberToObject(o, "n_positive", (double)m->n_positive);
    cJSON_AddNumberToObject(o, "n_negative", (double)m->n_negative);
    cJSON_AddNumberToObject(o, "n_errors", (double)m->n_errors);
}

static void fmt3(char *out, size_t cap, double v)
{
    if (isfinite(v))
        snprintf(out, cap, "%.3f", v);
    else
        snprintf(out, cap, "-");
}

static void print_metrics_line(const char *name, const vg_eval_metrics *m)
{
    char t[16], a[16], b[16], c[16], n[16], all[16];
    fmt3(t, sizeof t, m->mean_tiou);
    fmt3(a, sizeof a, m->r03);
    fmt3(b, sizeof b, m->r05);
    fmt3(c, sizeof c, m->r07);
    fmt3(n, sizeof n, m->negative_accuracy);
    fmt3(all, sizeof all, m->mean_tiou_all);
    printf("%-18s %9s %7s %7s %7s %10s %9s %6zu %6zu %6zu\n", name, t, a, b, c, n, all,
           m->n_positive, m->n_negative, m->n_errors);
}

/* ---------------------------------------------------------------------------------------------------
 * Blind fit on a training file.
 */
typedef struct fit_info {
    size_t n_used, n_skipped;
    double train_tiou;
} fit_info;

static int fit_from_file(const char *path, dur_cache *cache, double *a, double *b, fit_info *fi,
                         int verbose)
{
    char err[1024];
    vg_eval_set *s = NULL;
    if (vg_eval_load(path, 0, &s, err, sizeof err) < 0) {
        fprintf(stderr, "vigil eval: --blind-fit: %s\n", err);
        return -1;
    }
    double *d = calloc(s->n + 1, sizeof *d), *st = calloc(s->n + 1, sizeof *st),
           *en = calloc(s->n + 1, sizeof *en);
    int rc = -1;
    size_t n = 0;
    memset(fi, 0, sizeof *fi);
    if (!d || !st || !en) {
        fprintf(stderr, "vigil eval: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < s->n; i++) {
        const vg_eval_item *it = &s->items[i];
        if (it->error) {
            fi->n_skipped++;
            if (verbose)
                fprintf(stderr, "vigil eval: %s:%d: skipped: %s\n", path, it->line, it->error);
            continue;
        }
        if (!it->positive)
            continue;
        double dur = duration_of(cache, it, err, sizeof err);
        if (!(dur > 0)) {
            fi->n_skipped++;
            if (verbose)
                fprintf(stderr, "vigil eval: %s:%d: skipped: %s\n", path, it->line, err);
            continue;
        }
        d[n] = dur, st[n] = it->start, en[n] = it->end;
        n++;
    }
    if (n == 0) {
        fprintf(stderr, "vigil eval: --blind-fit: %s has no usable positive line\n", path);
        goto out;
    }
    vg_eval_fit_blind(d, st, en, n, a, b, &fi->train_tiou);
    fi->n_used = n;
    if (fi->n_skipped)
        fprintf(stderr,
                "vigil eval: --blind-fit: %zu lines of %s skipped (malformed or no duration)\n",
                fi->n_skipped, path);
    rc = 0;
out:
    free(d);
    free(st);
    free(en);
    vg_eval_set_free(s);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------
 * Command line.
 */
static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: vigil [--runtime-dir DIR] eval FILE.jsonl [OPTIONS]\n"
        "\n"
        "Benchmarks the model vigild serves on Charades-STA-style lines {\"video\", \"query\",\n"
        "\"start\", \"end\"} (no start/end: no event is expected). Relative videos resolve\n"
        "against the file's directory; the daemon must be allowed to read them (media_roots).\n"
        "Prints mean tIoU, R@0.3/0.5/0.7 over positives and the accuracy on negatives.\n"
        "\n"
        "options:\n"
        "  --blind A,B          also score the video-blind interval [A*duration, B*duration]\n"
        "  --blind-fit TRAIN.jsonl  the same with A,B fitted on TRAIN's positives (best mean\n"
        "                       tIoU, steps of 0.01); durations from a \"duration\" key or the "
        "file\n"
        "  --json               one JSON object (see docs/eval.md)\n"
        "  --concurrency N      jobs in flight at once (default 2)\n"
        "  --max N              only the first N lines\n"
        "  --timeout-ms MS      cancel a job without a result after MS (default: no limit but\n"
        "                       the daemon's job deadline)\n"
        "  --verbose            one line per question on stderr (with --json: a \"lines\" array)\n"
        "  --system TEXT --fps F --max-frames N --max-pixels N       sent with each ask\n"
        "  --max-new-tokens N --temperature T --top-k K --top-p P --seed S --greedy\n"
        "Without generation options the model's own defaults apply.\n"
        "Exit status: 0 all lines scored, 1 some lines failed or vigild was lost, 2 usage.\n"
        "\n"
        "vigil eval --live FILE.jsonl [--speed X] ...: the live-stream benchmark (event-level\n"
        "precision/recall/F1, delays, spurious events; see vigil eval --live --help).\n");
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return end == s || *end || errno || !isfinite(*out) ? -1 : 0;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, opts *o)
{
    static const char *const snum[][2] = {
        {"--fps", "fps"}, {"--max-frames", "max_frames"}, {"--max-pixels", "max_pixels"}};
    static const char *const gnum[][2] = {{"--max-new-tokens", "max_new_tokens"},
                                          {"--temperature", "temperature"},
                                          {"--top-k", "top_k"},
                                          {"--top-p", "top_p"},
                                          {"--seed", "seed"}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        long l;
        int done = 0;
        for (size_t k = 0; k < VG_ARRAY_LEN(snum) && !done; k++)
            if (!strcmp(a, snum[k][0])) {
                if (!v || parse_double(v, &d) < 0)
                    return fprintf(stderr, "vigil eval: %s needs a number\n", a), -1;
                cJSON_AddNumberToObject(o->sampling, snum[k][1], d);
                done = 1, i++;
            }
        for (size_t k = 0; k < VG_ARRAY_LEN(gnum) && !done; k++)
            if (!strcmp(a, gnum[k][0])) {
                if (!v || parse_double(v, &d) < 0)
                    return fprintf(stderr, "vigil eval: %s needs a number\n", a), -1;
                cJSON_AddNumberToObject(o->generation, gnum[k][1], d);
                done = 1, i++;
            }
        if (done)
            continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--verbose")) {
            o->verbose = 1;
        } else if (!strcmp(a, "--greedy")) {
            cJSON_AddTrueToObject(o->generation, "greedy");
        } else if (!strcmp(a, "--system") && v) {
            o->system = v, i++;
        } else if (!strcmp(a, "--blind") && v) {
            char *comma = strchr(v, ',');
            char buf[64];
            if (!comma || strlen(v) >= sizeof buf)
                return fprintf(stderr, "vigil eval: --blind takes A,B (fractions)\n"), -1;
            memcpy(buf, v, (size_t)(comma - v));
            buf[comma - v] = 0;
            if (parse_double(buf, &o->blind_a) < 0 || parse_double(comma + 1, &o->blind_b) < 0 ||
                o->blind_a < 0 || o->blind_b > 1 || o->blind_a >= o->blind_b)
                return fprintf(stderr, "vigil eval: --blind needs 0 <= A < B <= 1\n"), -1;
            o->have_blind = 1, i++;
        } else if (!strcmp(a, "--blind-fit") && v) {
            o->fit_file = v, i++;
        } else if (!strcmp(a, "--concurrency") && v) {
            if (parse_long(v, 1, MAX_CONCURRENCY, &l) < 0)
                return fprintf(stderr, "vigil eval: --concurrency is 1..%d\n", MAX_CONCURRENCY), -1;
            o->concurrency = (int)l, i++;
        } else if (!strcmp(a, "--max") && v) {
            if (parse_long(v, 1, LONG_MAX, &l) < 0)
                return fprintf(stderr, "vigil eval: --max needs a positive count\n"), -1;
            o->max = (size_t)l, i++;
        } else if (!strcmp(a, "--timeout-ms") && v) {
            if (parse_long(v, 0, LONG_MAX, &l) < 0)
                return fprintf(stderr, "vigil eval: --timeout-ms needs milliseconds\n"), -1;
            o->timeout_ms = l, i++;
        } else if (a[0] == '-' && a[1]) {
            return fprintf(stderr, "vigil eval: unknown option or missing value: %s\n", a), -1;
        } else if (!o->file) {
            o->file = a;
        } else {
            return fprintf(stderr, "vigil eval: one benchmark file only\n"), -1;
        }
    }
    if (!o->file)
        return fprintf(stderr, "vigil eval: no benchmark file given\n"), -1;
    if (o->have_blind && o->fit_file)
        return fprintf(stderr, "vigil eval: --blind and --blind-fit exclude each other\n"), -1;
    return 0;
}

/* The first 120 bytes of an answer on one line of stderr (control characters as spaces). */
static void print_answer(const char *text)
{
    if (!text)
        return;
    char buf[128];
    size_t n = 0;
    for (; text[n] && n < 120; n++)
        buf[n] = (unsigned char)text[n] < 0x20 ? ' ' : text[n];
    size_t cut = n;
    while (text[n] && cut > 0 && ((unsigned char)text[cut] & 0xc0) == 0x80)
        cut--; /* do not split a UTF-8 sequence */
    buf[cut] = 0;
    fprintf(stderr, "    answer: %s%s\n", buf, text[n] ? "..." : "");
}

/* Runs the model over every line; returns 0, or -1 when the daemon was lost. */
static int run_model(conn *c, const opts *o, const vg_eval_set *s, result *res)
{
    int slots[MAX_CONCURRENCY];
    int nslots = 0;
    size_t next = 0, finished = 0;
    double t_busy = 0;
    unsigned long tag = (unsigned long)time(NULL) ^ ((unsigned long)getpid() << 16);
    while (finished < s->n) {
        if (interrupted)
            break;
        /* Fill the free slots (unless the daemon said busy a moment ago). */
        while (nslots < o->concurrency && next < s->n && vg_now_ms() >= t_busy) {
            const vg_eval_item *it = &s->items[next];
            result *r = &res[next];
            if (it->error) {
                set_error(r, "malformed line: %s", it->error);
                next++, finished++;
                continue;
            }
            if (!r->job[0])
                snprintf(r->job, sizeof r->job, "ev-%lx-%d-%zu", tag, it->line, next);
            int rc = submit(c, o, it, r);
            if (rc < 0) {
                if (c->lost >= MAX_LOST_REPLIES)
                    return -1;
                break;
            }
            if (rc == 0 && r->status == PENDING) {
                t_busy = vg_now_ms() + 250; /* busy: retry this line later */
                break;
            }
            if (rc == 0)
                finished++;
            else
                slots[nslots++] = (int)next;
            next++;
        }
        if (nslots == 0 && next >= s->n)
            break;
        sleep_ms(POLL_MS);
        for (int k = 0; k < nslots;) {
            size_t i = (size_t)slots[k];
            int rc = poll_job(c, o, &s->items[i], &res[i]);
            if (rc < 0) {
                if (c->lost >= MAX_LOST_REPLIES)
                    return -1;
                k++;
                continue;
            }
            if (rc == 0) {
                k++;
                continue;
            }
            finished++;
            slots[k] = slots[--nslots];
            if (o->verbose && !o->json && res[i].status == SCORED) {
                const vg_eval_item *it = &s->items[i];
                const result *r = &res[i];
                if (it->positive && r->n_events)
                    fprintf(stderr, "line %d: truth %.1f-%.1f, predicted %.1f-%.1f, tIoU %.3f\n",
                            it->line, it->start, it->end, r->ps, r->pe, r->tiou);
                else if (it->positive)
                    fprintf(stderr, "line %d: truth %.1f-%.1f, predicted nothing, tIoU 0\n",
                            it->line, it->start, it->end);
                else
                    fprintf(stderr, "line %d: negative, %zu events predicted: %s\n", it->line,
                            r->n_events, r->n_events ? "wrong" : "right");
                print_answer(r->text);
            }
        }
    }
    if (interrupted) {
        /* Every job that may exist: running ones, and asks whose reply the signal cut short. */
        for (size_t i = 0; i < s->n; i++)
            if (res[i].asked && (res[i].status == RUNNING || res[i].status == PENDING)) {
                cancel_job(c, res[i].job);
                set_error(&res[i], "interrupted (job cancelled)");
            }
    }
    return 0;
}

int vg_cmd_eval(int argc, char **argv, const vg_eval_conn *cn)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--live"))
            return vg_cmd_eval_live(argc, argv, cn);
    opts o;
    memset(&o, 0, sizeof o);
    o.json = cn->json;
    o.concurrency = 2;
    o.sampling = cJSON_CreateObject();
    o.generation = cJSON_CreateObject();
    vg_eval_set *s = NULL;
    result *res = NULL;
    dur_cache cache = {0};
    conn c = {.url = cn->cmd_url, .timeout_ms = cn->reply_timeout_ms};
    int status = 2;
    char err[1024];
    if (!o.sampling || !o.generation) {
        status = 1;
        goto out;
    }
    int prc = parse_args(argc, argv, &o);
    if (prc != 0) {
        if (prc < 0)
            fprintf(stderr, "usage: vigil eval FILE.jsonl [OPTIONS] (see vigil eval --help)\n");
        status = prc > 0 ? 0 : 2;
        goto out;
    }
    status = 1;
    vg_log_set_level(VG_LOG_ERR);
    vg_pipe_log_init();
    double t0 = vg_now_ms();
    if (vg_eval_load(o.file, o.max, &s, err, sizeof err) < 0) {
        fprintf(stderr, "vigil eval: %s\n", err);
        goto out;
    }
    if (s->n == 0) {
        fprintf(stderr, "vigil eval: %s has no lines\n", o.file);
        goto out;
    }
    fit_info fi = {0};
    if (o.fit_file) {
        if (fit_from_file(o.fit_file, &cache, &o.blind_a, &o.blind_b, &fi, o.verbose) < 0)
            goto out;
        o.have_blind = 1;
    }
    res = calloc(s->n, sizeof *res);
    if (!res) {
        fprintf(stderr, "vigil eval: out of memory\n");
        goto out;
    }
    /* Which model is being evaluated; also a quick check that vigild is there at all. */
    char model_name[128];
    cJSON *info = conn_call(&c, new_req(&c, "info"), err, sizeof err);
    if (!info) {
        fprintf(stderr, "vigil eval: %s; is vigild running?\n", err);
        goto out;
    }
    snprintf(model_name, sizeof model_name, "%s",
             jstr(cJSON_GetObjectItemCaseSensitive(info, "model"), "name", "?"));
    cJSON_Delete(info);
    signal(SIGINT, on_sigint);
    int lost = run_model(&c, &o, s, res) < 0;
    signal(SIGINT, SIG_DFL);
    if (lost)
        fprintf(stderr, "vigil eval: lost contact with vigild at %s; stopping\n", c.url);

    /* Score: the model on every line that ran, the blind baseline on the same lines. */
    vg_eval_acc am = {0}, ab = {0};
    for (size_t i = 0; i < s->n; i++) {
        const vg_eval_item *it = &s->items[i];
        result *r = &res[i];
        if (r->status == PENDING || r->status == RUNNING)
            set_error(r, lost ? "not evaluated: vigild was lost" : "not evaluated: interrupted");
        if (r->status == FAILED) {
            vg_eval_acc_error(&am);
            fprintf(stderr, "vigil eval: line %d (%s): %s\n", it->line, it->video ? it->video : "?",
                    r->error);
            continue;
        }
        if (it->positive)
            vg_eval_acc_positive(&am, r->tiou);
        else
            vg_eval_acc_negative(&am, r->n_events == 0);
        if (!o.have_blind)
            continue;
        r->duration = duration_of(&cache, it, err, sizeof err);
        if (!(r->duration > 0)) {
            r->blind_error = strdup(err);
            vg_eval_acc_error(&ab);
            fprintf(stderr, "vigil eval: line %d: blind baseline: %s\n", it->line, err);
            continue;
        }
        r->blind_ok = 1;
        if (it->positive) {
            r->blind_tiou =
                vg_eval_tiou(o.blind_a * r->duration, o.blind_b * r->duration, it->start, it->end);
            vg_eval_acc_positive(&ab, r->blind_tiou);
        } else {
            vg_eval_acc_negative(&ab, 0); /* the baseline always predicts an interval */
        }
    }
    double elapsed = (vg_now_ms() - t0) / 1000.0;
    vg_eval_metrics mm, mb;
    vg_eval_metrics_get(&am, &mm);
    vg_eval_metrics_get(&ab, &mb);
    double margin = mm.mean_tiou - mb.mean_tiou, margin_all = mm.mean_tiou_all - mb.mean_tiou_all;

    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "file", o.file);
        cJSON_AddStringToObject(j, "model", model_name);
        cJSON_AddNumberToObject(j, "n_lines", (double)s->n);
        add_metrics(j, &mm);
        cJSON_AddNumberToObject(j, "elapsed_s", elapsed);
        cJSON_AddNumberToObject(j, "busy_retries", (double)c.busy_count);
        if (interrupted)
            cJSON_AddTrueToObject(j, "interrupted");
        if (o.have_blind) {
            cJSON *b = cJSON_AddObjectToObject(j, "blind");
            cJSON_AddNumberToObject(b, "a", o.blind_a);
            cJSON_AddNumberToObject(b, "b", o.blind_b);
            cJSON_AddStringToObject(b, "fractions", o.fit_file ? "fitted" : "given");
            if (o.fit_file) {
                cJSON_AddStringToObject(b, "fit_file", o.fit_file);
                cJSON_AddNumberToObject(b, "fit_n_positive", (double)fi.n_used);
                cJSON_AddNumberToObject(b, "fit_n_skipped", (double)fi.n_skipped);
                add_num(b, "fit_mean_tiou", fi.train_tiou);
            }
            add_metrics(b, &mb);
            add_num(j, "margin_tiou", margin);
            add_num(j, "margin_tiou_all", margin_all);
        } else {
            cJSON_AddNullToObject(j, "blind");
        }
        cJSON *errs = cJSON_AddArrayToObject(j, "errors");
        cJSON *lines = o.verbose ? cJSON_AddArrayToObject(j, "lines") : NULL;
        for (size_t i = 0; i < s->n; i++) {
            const vg_eval_item *it = &s->items[i];
            const result *r = &res[i];
            if (r->status == FAILED) {
                cJSON *e = cJSON_CreateObject();
                cJSON_AddNumberToObject(e, "line", it->line);
                if (it->video)
                    cJSON_AddStringToObject(e, "video", it->video);
                cJSON_AddStringToObject(e, "message", r->error ? r->error : "?");
                cJSON_AddItemToArray(errs, e);
            }
            if (!lines)
                continue;
            cJSON *l = cJSON_CreateObject();
            cJSON_AddNumberToObject(l, "line", it->line);
            if (it->video) {
                cJSON_AddStringToObject(l, "video", it->video);
                cJSON_AddStringToObject(l, "query", it->query);
            }
            cJSON_AddBoolToObject(l, "positive", it->positive);
            if (it->positive) {
                cJSON_AddNumberToObject(l, "start", it->start);
                cJSON_AddNumberToObject(l, "end", it->end);
            }
            if (r->job[0])
                cJSON_AddStringToObject(l, "job", r->job);
            if (r->status == SCORED) {
                cJSON_AddNumberToObject(l, "n_events", (double)r->n_events);
                if (r->n_events) {
                    cJSON_AddNumberToObject(l, "pred_start", r->ps);
                    cJSON_AddNumberToObject(l, "pred_end", r->pe);
                }
                if (it->positive)
                    cJSON_AddNumberToObject(l, "tiou", r->tiou);
                else
                    cJSON_AddBoolToObject(l, "correct", r->n_events == 0);
                if (r->text)
                    cJSON_AddStringToObject(l, "text", r->text);
            } else {
                cJSON_AddStringToObject(l, "error", r->error ? r->error : "?");
            }
            if (r->blind_ok) {
                cJSON_AddNumberToObject(l, "duration", r->duration);
                if (it->positive)
                    cJSON_AddNumberToObject(l, "blind_tiou", r->blind_tiou);
            }
            cJSON_AddItemToArray(lines, l);
        }
        char *txt = cJSON_PrintUnformatted(j);
        if (txt)
            printf("%s\n", txt);
        free(txt);
        cJSON_Delete(j);
    } else {
        printf("vigil eval %s (model %s): %zu lines, %zu positive, %zu negative, %zu errors, "
               "%.1f s\n",
               o.file, model_name, s->n, mm.n_positive, mm.n_negative, mm.n_errors, elapsed);
        printf("%-18s %9s %7s %7s %7s %10s %9s %6s %6s %6s\n", "", "mean tIoU", "R@0.3", "R@0.5",
               "R@0.7", "negatives", "all", "pos", "neg", "errors");
        print_metrics_line("model", &mm);
        if (o.have_blind) {
            char name[64];
            snprintf(name, sizeof name, "blind %.2f-%.2f", o.blind_a, o.blind_b);
            print_metrics_line(name, &mb);
            if (o.fit_file)
                printf("blind fractions fitted on %s (%zu positives, mean tIoU %.3f there)\n",
                       o.fit_file, fi.n_used, fi.train_tiou);
            char m1[16] = "-", m2[16] = "-";
            if (isfinite(margin))
                snprintf(m1, sizeof m1, "%+.3f", margin);
            if (isfinite(margin_all))
                snprintf(m2, sizeof m2, "%+.3f", margin_all);
            printf("margin over the blind baseline: %s mean tIoU (positives), %s with negatives\n",
                   m1, m2);
        }
        printf("(R@x: share of positives with tIoU >= x; negatives: share of negatives without "
               "an event;\n all: mean over positives and negatives, a negative scoring 1 when "
               "right)\n");
    }
    fflush(stdout);
    status = mm.n_errors || lost || interrupted ? 1 : 0;
out:
    if (res)
        for (size_t i = 0; s && i < s->n; i++) {
            free(res[i].text);
            free(res[i].error);
            free(res[i].blind_error);
        }
    free(res);
    vg_eval_set_free(s);
    dur_cache_free(&cache);
    vg_ipc_client_close(c.cl);
    cJSON_Delete(o.sampling);
    cJSON_Delete(o.generation);
    return status;
}
