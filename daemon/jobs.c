/*
 * jobs.c: vigild's jobs: the table of jobs, the workers that run them and their results.
 *
 * Threads and ownership:
 *  - The loop thread owns the job table and every loop-side field of a job (state, streamed text,
 *    result). It creates a job from an `ask`, journals it and pushes it onto the decode queue.
 *  - Decode threads (max_concurrent_decodes of them) pop a job, open the media, decode and resize
 *    the sampled frames, patchify them, and push the job onto the inference queue.
 *  - The inference thread (one; the engine spreads its BLAS work over its own threads) encodes each
 *    temporal slice, builds the prompt, prefills and generates, and parses the answer.
 *  - Workers read only the job's immutable request fields and write only its w_* scratch fields;
 *    everything they report (progress, tokens, the result) travels as a jmsg through the jobs'
 *    mailbox (mailbox.h: post always takes the message; the loop drains it completely). Progress
 *    and tokens are best effort (dropped when memory runs out); DONE must arrive (allocated with
 *    vg_mailbox_alloc_must). The loop never frees a job while `in_worker` is set (set when queued
 *    for a worker, cleared by the worker's DONE message).
 *  - Cancellation: job->cancel (atomic) is read by FFmpeg's interrupt callback and by the engine
 *    between layers and tokens; the loop sets it for `cancel`, the deadline and shutdown.
 *  - Durability: each journaled state of a job remembers its record's sequence number (jseq); the
 *    job is durable once the journal reports that number on disk. The journal's writer thread wakes
 *    the loop (jasync) when records become durable or the disk starts or stops failing. A finished
 *    job's `done` is published once its final record is durable (durable: true), or at once with
 *    durable: false while the journal is failing (then `job/ID/durable` follows when the retried
 *    record reaches the disk). While the journal fails, new jobs are refused (`storage`).
 */
#include "jobs.h"

#include "common.h"
#include "mailbox.h"
#include "pipeline.h"
#include "qa.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOD           "jobs"
#define MSG_QUEUE_CAP 65536
#define MAX_RETAINED  10000

enum job_state { ST_QUEUED, ST_RUNNING, ST_COMPLETED, ST_FAILED, ST_CANCELLED };
static const char *const state_names[] = {"queued", "running", "completed", "failed", "cancelled"};

enum cancel_reason { CANCEL_NONE, CANCEL_USER, CANCEL_DEADLINE, CANCEL_SHUTDOWN };

typedef struct job_timings {
    double decode_ms, encode_ms, prefill_ms, generate_ms;
    int frames, video_tokens, prompt_tokens;
} job_timings;

typedef struct job {
    /* Immutable once queued (read by workers). */
    char id[VG_ID_MAX + 1];
    char req_id[VG_ID_MAX + 1];
    char *video, *resolved, *question, *system;
    int is_url;
    vg_media_policy *policy; /* what decoding may open, as configured when the job was accepted */
    int max_frames_limit;    /* the daemon's ceilings when the job was accepted (the decode */
    long max_pixels_limit;   /* worker never reads the configuration SIGHUP rewrites) */
    vg_req_sampling sampling;
    vg_req_generation gen;
    int max_new_tokens;
    double deadline_s;
    atomic_int cancel; /* enum cancel_reason */

    /* Loop-owned. */
    enum job_state state;
    double created, started, finished; /* unix seconds */
    double deadline_mono_ms;
    int in_worker;
    char stage[16];
    int percent;
    char *text;
    size_t text_len, text_cap;
    int n_tokens;
    cJSON *events;
    char err_code[32];
    char *err_msg;
    job_timings timings;
    uint64_t jseq;       /* the journal record of the job's latest state; 0: read from disk */
    int jlost;           /* that record could not be queued: not durable until the next one */
    int done_pending;    /* finished; `done` waits for the final record to be durable */
    int durable_pending; /* `done` went out with durable: false; `durable` is still owed */
    struct job *next;

    /* Worker-owned scratch. */
    vg_video *w_video;
    float *w_patches;
    size_t w_rows, w_cols;
    char *w_text;
    size_t w_len, w_cap;
    vg_event *w_events; /* the parsed answer */
    size_t w_n_events;
    int w_seq;
    double w_t0;
    job_timings w_timings;
} job;

enum msg_type { MSG_STARTED, MSG_PROGRESS, MSG_TOKEN, MSG_DONE };

typedef struct jmsg {
    enum msg_type type;
    job *j;
    int seq, percent;
    char stage[16];
    char *text; /* TOKEN: the piece; DONE: the full text (owned by the message) */
    size_t len;
    /* DONE */
    int status; /* 0 or a VG_E* code */
    char code[32];
    char *errmsg;
    cJSON *events;
    job_timings timings;
} jmsg;

struct vg_jobs {
    uv_loop_t *loop;
    vg_model *model;
    const vg_model_info *mi;
    const vg_daemon_config *cfg;
    vg_journal *journal;
    vg_infer_gate *gate;
    vg_bus *bus;    /* borrowed: where records are published */
    vg_mailbox *mb; /* workers -> loop */
    uv_timer_t timer;
    uv_async_t jasync; /* the journal's writer thread: records became durable or failing changed */
    int n_done_pending, n_durable_pending;
    vg_queue *decode_q, *infer_q;
    pthread_t *decoders;
    int n_decoders;
    pthread_t infer;
    int infer_started;
    job *head;
    int n_jobs, n_active, n_queued, n_running;
    int status_queued, status_running; /* last counts sent as STATUS= */
    unsigned counter;
    int stopping;
    void (*on_idle)(void *);
    void *on_idle_opaque;
    int closing, handles_closed; /* the mailbox and the timer */
    /* Cluster mode (cluster.h): told of each finished job instead of publishing its `done`. */
    vg_jobs_done_fn done_hook;
    void *done_opaque;
};

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void job_free(job *j)
{
    if (!j)
        return;
    free(j->video);
    free(j->resolved);
    vg_media_policy_free(j->policy);
    free(j->question);
    free(j->system);
    free(j->text);
    cJSON_Delete(j->events);
    free(j->err_msg);
    vg_video_free(j->w_video);
    free(j->w_patches);
    free(j->w_text);
    free(j->w_events);
    free(j);
}

static void msg_free(void *p)
{
    jmsg *m = p;
    if (!m)
        return;
    free(m->text);
    free(m->errmsg);
    cJSON_Delete(m->events);
    free(m);
}

static job *find_job(vg_jobs *js, const char *id)
{
    for (job *j = js->head; j; j = j->next)
        if (!strcmp(j->id, id))
            return j;
    return NULL;
}

static int is_final(enum job_state s)
{
    return s >= ST_COMPLETED;
}

/* ===================================================================================================
 * JSON views of a job (replies, journal, events).
 */
static cJSON *timings_json(const job_timings *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "decode_ms", t->decode_ms);
    cJSON_AddNumberToObject(o, "encode_ms", t->encode_ms);
    cJSON_AddNumberToObject(o, "prefill_ms", t->prefill_ms);
    cJSON_AddNumberToObject(o, "generate_ms", t->generate_ms);
    cJSON_AddNumberToObject(o, "frames", t->frames);
    cJSON_AddNumberToObject(o, "video_tokens", t->video_tokens);
    cJSON_AddNumberToObject(o, "prompt_tokens", t->prompt_tokens);
    return o;
}

static double num_of(const cJSON *o, const char *k)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : 0;
}

static const char *str_of(const cJSON *o, const char *k)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static void add_error(cJSON *o, const job *j)
{
    if (!j->err_code[0]) {
        cJSON_AddNullToObject(o, "error");
        return;
    }
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", j->err_code);
    char msg[2048]; /* a sentence quoting the URL: without its credentials */
    vg_url_redact(j->err_msg, msg, sizeof msg);
    cJSON_AddStringToObject(e, "message", msg);
}

/* full: everything (job reply, journal); else a summary for `jobs`. */
static cJSON *job_json(const job *j, int full)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "job", j->id);
    cJSON_AddStringToObject(o, "state", state_names[j->state]);
    cJSON_AddNumberToObject(o, "created", j->created);
    if (j->started > 0)
        cJSON_AddNumberToObject(o, "started", j->started);
    if (j->finished > 0)
        cJSON_AddNumberToObject(o, "finished", j->finished);
    char video[VG_VIDEO_MAX + 8]; /* the URL without its credentials (vg_url_redact) */
    vg_url_redact(j->video, video, sizeof video);
    cJSON_AddStringToObject(o, "video", video);
    cJSON_AddStringToObject(o, "question", j->question ? j->question : "");
    cJSON_AddNumberToObject(o, "n_tokens", j->n_tokens);
    if (!is_final(j->state)) {
        cJSON_AddStringToObject(o, "stage", j->stage[0] ? j->stage : "queued");
        cJSON_AddNumberToObject(o, "percent", j->percent);
    }
    add_error(o, j);
    if (!full)
        return o;
    if (j->req_id[0])
        cJSON_AddStringToObject(o, "request", j->req_id);
    cJSON_AddStringToObject(o, "text", j->text ? j->text : "");
    cJSON_AddItemToObject(o, "events",
                          j->events ? cJSON_Duplicate(j->events, 1) : cJSON_CreateArray());
    cJSON_AddItemToObject(o, "timings", timings_json(&j->timings));
    return o;
}

static void journal_job(vg_jobs *js, job *j)
{
    if (!js->journal)
        return;
    cJSON *o = job_json(j, 1);
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) {
        vg_log(VG_LOG_ERR, MOD, "job %s: out of memory writing the journal", j->id);
        return;
    }
    if (vg_journal_append(js->journal, s, strlen(s)) == 0) {
        j->jseq = vg_journal_last_seq(js->journal);
        j->jlost = 0;
    } else {
        j->jlost = 1;
    }
    free(s);
}

/* Whether the job's latest state is on disk. */
static int job_durable(const vg_jobs *js, const job *j, const vg_journal_status *st)
{
    return js->journal && !j->jlost && j->jseq <= st->durable;
}

static void add_durable(const vg_jobs *js, cJSON *o, const job *j)
{
    vg_journal_status st;
    vg_journal_get_status(js->journal, &st);
    cJSON_AddBoolToObject(o, "durable", job_durable(js, j, &st));
}

static void publish(vg_jobs *js, const job *j, const char *kind, cJSON *payload)
{
    if (js->done_hook && (!strcmp(kind, "done") || !strcmp(kind, "durable"))) {
        /* Cluster mode: the cluster publishes the result it records, once (vg_jobs_set_done_hook).
         */
        cJSON_Delete(payload);
        if (!strcmp(kind, "done"))
            js->done_hook(j->id, js->done_opaque);
        return;
    }
    if (!js->bus) {
        cJSON_Delete(payload);
        return;
    }
    char topic[VG_IPC_TOPIC_MAX];
    snprintf(topic, sizeof topic, "job/%s/%s", j->id, kind);
    char *s = cJSON_PrintUnformatted(payload);
    cJSON_Delete(payload);
    if (s) {
        vg_bus_publish(js->bus, topic, s, strlen(s));
        free(s);
    }
}

/* ===================================================================================================
 * Workers. They report through js->mb (mailbox.h): vg_mailbox_post takes the message and blocks
 * only while the loop is MSG_QUEUE_CAP messages behind (back-pressure on the model).
 */
/* STARTED and PROGRESS: best effort, dropped when memory runs out. */
static void post_simple(vg_jobs *js, job *j, enum msg_type t, const char *stage, int percent)
{
    jmsg *m = calloc(1, sizeof *m);
    if (!m)
        return;
    m->type = t;
    m->j = j;
    m->percent = percent;
    if (stage)
        snprintf(m->stage, sizeof m->stage, "%s", stage);
    vg_mailbox_post(js->mb, m);
}

static void post_done(vg_jobs *js, job *j, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void post_done(vg_jobs *js, job *j, int status, const char *code, const char *fmt, ...)
{
    /* Must arrive: without the DONE message the job would stay in a worker forever. */
    jmsg *m = vg_mailbox_alloc_must(sizeof *m);
    m->type = MSG_DONE;
    m->j = j;
    m->status = status;
    if (code)
        snprintf(m->code, sizeof m->code, "%s", code);
    if (fmt) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        m->errmsg = strdup(buf);
    }
    m->text = j->w_text;
    m->len = j->w_len;
    j->w_text = NULL;
    j->w_len = j->w_cap = 0;
    m->timings = j->w_timings;
    if (status == 0 && m->text)
        m->events = vg_qa_events_json(j->w_events, j->w_n_events, "clip");
    free(j->w_events);
    j->w_events = NULL;
    j->w_n_events = 0;
    vg_video_free(j->w_video);
    j->w_video = NULL;
    free(j->w_patches);
    j->w_patches = NULL;
    vg_media_policy_free(j->policy); /* with the input's descriptor: a finished job holds none */
    j->policy = NULL;
    vg_mailbox_post(js->mb, m);
}

static const char *cancel_code(const job *j)
{
    int c = atomic_load(&j->cancel);
    return c == CANCEL_DEADLINE ? "deadline" : c == CANCEL_SHUTDOWN ? "shutdown" : "cancelled";
}

/* Finishes a job that failed in a stage with rc; a cancellation becomes a cancelled job. */
static void fail_job(vg_jobs *js, job *j, int rc, const char *stage, const char *err)
{
    if (rc == VG_ECANCELED || atomic_load(&j->cancel)) {
        post_done(js, j, VG_ECANCELED, cancel_code(j), "cancelled during %s", stage);
        return;
    }
    /* Opening or decoding the video: whatever else goes wrong there (a network or read error, a
     * redirect loop, a video too short to sample) is the video's fault, not the daemon's. */
    int media_stage = !strcmp(stage, "open") || !strcmp(stage, "decode");
    const char *code = rc == VG_EPATH                        ? "forbidden"
                       : rc == VG_EPROTOCOL                  ? "forbidden"
                       : rc == VG_ELIMIT                     ? "limit"
                       : rc == VG_ENOENT                     ? "not_found"
                       : rc == VG_EMEDIA || rc == VG_EDECODE ? "media"
                       : rc == VG_ETIMEDOUT                  ? "timeout"
                       : media_stage && rc != VG_ENOMEM      ? "media"
                                                             : "failed";
    post_done(js, j, rc, code, "%s: %s", stage, err && *err ? err : vg_strerror(rc));
}

typedef struct progress_ctx {
    vg_jobs *js;
    job *j;
    int last;
} progress_ctx;

static int on_decode_progress(const char *stage, double fraction, void *opaque)
{
    progress_ctx *pc = opaque;
    int pct = (int)(fraction * 100.0);
    if (pct > pc->last) {
        pc->last = pct;
        post_simple(pc->js, pc->j, MSG_PROGRESS, "decode", pct);
    }
    return atomic_load(&pc->j->cancel) != 0;
}

/* The checkpoint's defaults (qa.h, shared with live streams), the request's knobs, the ceilings. */
static vg_sample_params sample_params(const vg_jobs *js, const job *j)
{
    vg_sample_params p = vg_qa_sample_params(js->mi);
    const vg_req_sampling *s = &j->sampling;
    if (s->fps > 0)
        p.fps = s->fps;
    if (s->nframes > 0)
        p.nframes = s->nframes;
    if (s->min_frames > 0)
        p.min_frames = s->min_frames;
    if (s->max_frames > 0)
        p.max_frames = s->max_frames;
    if (s->min_pixels > 0)
        p.min_pixels = s->min_pixels;
    if (s->max_pixels > 0)
        p.max_pixels = s->max_pixels;
    if (s->total_pixels > 0)
        p.total_pixels = s->total_pixels;
    if (s->resized_height > 0) {
        p.resized_height = s->resized_height;
        p.resized_width = s->resized_width;
    }
    if (s->start >= 0)
        p.video_start = s->start;
    if (s->end >= 0)
        p.video_end = s->end;
    /* The daemon's ceilings apply to the model's defaults as well as to requests. */
    if (p.max_frames > j->max_frames_limit)
        p.max_frames = j->max_frames_limit;
    if (p.min_frames > p.max_frames)
        p.min_frames = p.max_frames;
    if (p.max_pixels <= 0 || p.max_pixels > j->max_pixels_limit)
        p.max_pixels = j->max_pixels_limit;
    if (p.min_pixels > p.max_pixels)
        p.min_pixels = p.max_pixels;
    return p;
}

static void decode_job(vg_jobs *js, job *j)
{
    char err[512] = "";
    post_simple(js, j, MSG_STARTED, "decode", 0);
    double t0 = vg_now_ms();
    vg_media_params mp = vg_media_default_params();
    mp.protocol_whitelist = vg_media_policy_whitelist(j->policy);
    mp.allow_url = vg_media_policy_allow;
    mp.open_file = vg_media_policy_open; /* the checked descriptor, never the path again */
    mp.allow_opaque = j->policy;
    mp.stop = &j->cancel;
    mp.max_frame_pixels = j->max_pixels_limit; /* refused before any frame is decoded */
    vg_media *m = NULL;
    int rc = vg_media_open(j->resolved, &mp, &m, err, sizeof err);
    if (rc < 0) {
        fail_job(js, j, rc, "open", err);
        return;
    }
    vg_sample_params sp = sample_params(js, j);
    progress_ctx pc = {js, j, -1};
    rc = vg_media_read_video(m, &sp, on_decode_progress, &pc, &j->w_video, err, sizeof err);
    vg_media_close(m);
    vg_media_policy_free(j->policy); /* its descriptor is not needed past decoding */
    j->policy = NULL;
    if (rc < 0) {
        fail_job(js, j, rc, "decode", err);
        return;
    }
    const vg_model_info *mi = js->mi;
    vg_video *v = j->w_video;
    rc = vg_patchify(v->rgb, v->T, v->H, v->W, mi->patch_size, mi->temporal_patch_size,
                     mi->spatial_merge_size, mi->image_mean, mi->image_std, &j->w_patches,
                     &j->w_rows, &j->w_cols);
    if (rc < 0) {
        fail_job(js, j, rc, "patchify", "");
        return;
    }
    free(v->rgb); /* the patches are all the model needs; the plan stays for the prompt */
    v->rgb = NULL;
    j->w_timings.decode_ms = vg_now_ms() - t0;
    j->w_timings.frames = v->T;
    if (atomic_load(&j->cancel)) {
        fail_job(js, j, VG_ECANCELED, "decode", "");
        return;
    }
    if (vg_queue_push(js->infer_q, j, -1) < 0)
        fail_job(js, j, VG_ECANCELED, "decode", "");
}

static void *decoder_main(void *arg)
{
    vg_jobs *js = arg;
    void *item;
    while (vg_queue_pop(js->decode_q, &item, -1) == 0) {
        job *j = item;
        if (atomic_load(&j->cancel))
            post_done(js, j, VG_ECANCELED, cancel_code(j), "cancelled before it started");
        else
            decode_job(js, j);
    }
    return NULL;
}

typedef struct gen_ctx {
    vg_jobs *js;
    job *j;
    const char *stage;
} gen_ctx;

/* Streams each piece of the answer to the loop (the QA layer keeps the whole text). */
static int on_piece(const char *text, size_t len, void *opaque)
{
    gen_ctx *g = opaque;
    job *j = g->j;
    jmsg *m = calloc(1, sizeof *m); /* best effort: dropped when memory runs out */
    if (m) {
        m->type = MSG_TOKEN;
        m->j = j;
        m->seq = j->w_seq++;
        m->text = malloc(len + 1);
        if (m->text) {
            memcpy(m->text, text, len);
            m->text[len] = 0;
            m->len = len;
        }
        vg_mailbox_post(g->js->mb, m);
    }
    return atomic_load(&j->cancel) != 0;
}

static void on_encoded(double fraction, void *opaque)
{
    gen_ctx *g = opaque;
    post_simple(g->js, g->j, MSG_PROGRESS, "encode", (int)(fraction * 100.0));
}

static void on_stage(const char *stage, void *opaque)
{
    gen_ctx *g = opaque;
    g->stage = stage;
    post_simple(g->js, g->j, MSG_PROGRESS, stage, 0);
}

/* The generation knobs of a request over the model's defaults. */
static vg_gen_params gen_params(const vg_jobs *js, const job *j)
{
    vg_gen_params gp = vg_model_default_gen_params(js->model);
    const vg_req_generation *g = &j->gen;
    gp.max_new_tokens = j->max_new_tokens;
    if (g->has_temperature)
        gp.temperature = (float)g->temperature;
    if (g->has_top_k)
        gp.top_k = g->top_k;
    if (g->has_top_p)
        gp.top_p = (float)g->top_p;
    if (g->has_seed)
        gp.seed = g->seed;
    if (g->has_greedy)
        gp.do_sample = !g->greedy;
    if (g->has_repetition_penalty)
        gp.repetition_penalty = (float)g->repetition_penalty;
    if (g->has_presence_penalty)
        gp.presence_penalty = (float)g->presence_penalty;
    return gp;
}

/* Encodes the job's slices and asks its question through the video-QA layer (qa.h). */
static void infer_job(vg_jobs *js, job *j)
{
    char err[512] = "";
    const vg_model_info *mi = js->mi;
    const vg_video *v = j->w_video;
    const vg_plan *plan = v->plan;
    int gt = plan->grid_t, gh = plan->grid_h, gw = plan->grid_w;
    int merge = mi->spatial_merge_size;
    vg_vision_out **vo = NULL;
    double *times = NULL;
    gen_ctx gc = {js, j, "encode"};
    int rc;
    if ((size_t)gt * gh * gw != j->w_rows) {
        rc = vg_fail(err, sizeof err, VG_EINVAL, "patch rows %zu do not match the grid %dx%dx%d",
                     j->w_rows, gt, gh, gw);
        goto out;
    }
    post_simple(js, j, MSG_PROGRESS, "encode", 0);
    double t0 = vg_now_ms();
    rc = vg_qa_encode_video(js->model, j->w_patches, gt, gh, gw, j->w_cols, &j->cancel, on_encoded,
                            &gc, &vo, err, sizeof err);
    if (rc < 0)
        goto out;
    free(j->w_patches);
    j->w_patches = NULL;
    j->w_timings.encode_ms = vg_now_ms() - t0;

    gc.stage = "prompt";
    times = malloc((size_t)gt * sizeof *times);
    if (!times) {
        rc = VG_ENOMEM;
        goto out;
    }
    if ((rc = vg_timeline_pair_times(&v->timeline, mi->temporal_patch_size, times, gt)) < 0) {
        rc = vg_fail(err, sizeof err, rc, "the decoded timeline does not cover %d pairs", gt);
        goto out;
    }
    vg_qa_ask_params ap = {gen_params(js, j), on_piece, on_stage, &gc, &j->cancel, 0};
    vg_qa_answer ans = {0};
    rc = vg_qa_run(js->model, j->system, vo, times, gt, gh / merge, gw / merge, j->question, &ap,
                   &ans, err, sizeof err);
    free(vo); /* vg_qa_run took the outputs; the array stays ours */
    vo = NULL;
    if (rc < 0)
        goto out;
    j->w_timings.video_tokens = gt * (gh / merge) * (gw / merge);
    j->w_timings.prompt_tokens = (int)ans.prompt_tokens;
    j->w_timings.prefill_ms = ans.prefill_ms;
    j->w_timings.generate_ms = ans.generate_ms;
    j->w_text = ans.text;
    j->w_len = ans.len;
    j->w_cap = ans.len + 1;
    j->w_events = ans.events;
    j->w_n_events = ans.n_events;
out:
    if (vo)
        for (int t = 0; t < gt; t++)
            vg_vision_out_free(vo[t]);
    free(vo);
    free(times);
    if (rc < 0)
        fail_job(js, j, rc, gc.stage, err);
    else
        post_done(js, j, 0, NULL, NULL);
}

static void *infer_main(void *arg)
{
    vg_jobs *js = arg;
    void *item;
    while (vg_queue_pop(js->infer_q, &item, -1) == 0) {
        job *j = item;
        if (atomic_load(&j->cancel)) {
            fail_job(js, j, VG_ECANCELED, "encode", "");
        } else {
            vg_infer_gate_enter(js->gate); /* shared with live streams (stream_infer.c) */
            infer_job(js, j);
            vg_infer_gate_leave(js->gate);
        }
    }
    return NULL;
}

/* ===================================================================================================
 * Loop side.
 */
static void text_append(job *j, const char *s, size_t n)
{
    size_t need = j->text_len + n + 1;
    if (need > j->text_cap) {
        size_t cap = VG_MAX(need, j->text_cap * 2 + 256);
        char *p = realloc(j->text, cap);
        if (!p)
            return;
        j->text = p;
        j->text_cap = cap;
    }
    memcpy(j->text + j->text_len, s, n);
    j->text_len += n;
    j->text[j->text_len] = 0;
}

/* Publishes what durability owes: `done` of finished jobs whose final record is on disk (or at
 * once, durable: false, while the journal fails, when the record could not even be queued, or when
 * force is set: shutdown), and `durable`
 * for jobs whose `done` said false and whose record has now reached the disk. */
static void journal_progress(vg_jobs *js, int force)
{
    if (!js->n_done_pending && !js->n_durable_pending)
        return;
    vg_journal_status st;
    vg_journal_get_status(js->journal, &st);
    for (job *j = js->head; j && (js->n_done_pending || js->n_durable_pending); j = j->next) {
        int durable = job_durable(js, j, &st);
        if (j->done_pending && (durable || st.failing || j->jlost || force || !js->journal)) {
            j->done_pending = 0;
            js->n_done_pending--;
            cJSON *p = job_json(j, 1);
            cJSON_AddBoolToObject(p, "durable", durable);
            publish(js, j, "done", p);
            if (!durable) {
                j->durable_pending = 1;
                js->n_durable_pending++;
            }
        } else if (j->durable_pending && durable) {
            j->durable_pending = 0;
            js->n_durable_pending--;
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "job", j->id);
            cJSON_AddStringToObject(p, "state", state_names[j->state]);
            cJSON_AddBoolToObject(p, "durable", 1);
            publish(js, j, "durable", p);
        }
    }
}

static void on_jasync(uv_async_t *a)
{
    journal_progress(a->data, 0);
}

/* The journal's notify callback (its writer thread). */
static void on_journal_notify(void *opaque)
{
    vg_jobs *js = opaque;
    uv_async_send(&js->jasync);
}

/* The mailbox's handle callback: takes m. */
static void handle_msg(void *msg, void *opaque)
{
    vg_jobs *js = opaque;
    jmsg *m = msg;
    job *j = m->j;
    cJSON *p;
    switch (m->type) {
    case MSG_STARTED:
        if (j->state == ST_QUEUED) {
            j->state = ST_RUNNING;
            j->started = unix_now();
            js->n_queued--;
            js->n_running++;
        }
        snprintf(j->stage, sizeof j->stage, "%s", m->stage);
        j->percent = 0;
        p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "job", j->id);
        cJSON_AddStringToObject(p, "state", "running");
        publish(js, j, "state", p);
        break;
    case MSG_PROGRESS:
        snprintf(j->stage, sizeof j->stage, "%s", m->stage);
        j->percent = m->percent;
        p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "job", j->id);
        cJSON_AddStringToObject(p, "stage", m->stage);
        cJSON_AddNumberToObject(p, "percent", m->percent);
        publish(js, j, "progress", p);
        break;
    case MSG_TOKEN:
        if (m->text)
            text_append(j, m->text, m->len);
        j->n_tokens = m->seq + 1;
        p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "job", j->id);
        cJSON_AddNumberToObject(p, "seq", m->seq);
        cJSON_AddStringToObject(p, "text", m->text ? m->text : "");
        publish(js, j, "token", p);
        break;
    case MSG_DONE:
        if (j->state == ST_QUEUED)
            js->n_queued--;
        else if (j->state == ST_RUNNING)
            js->n_running--;
        js->n_active--;
        j->in_worker = 0;
        j->finished = unix_now();
        j->timings = m->timings;
        if (m->text) {
            free(j->text);
            j->text = m->text;
            j->text_len = j->text_cap = m->len;
            m->text = NULL;
        }
        if (m->status == 0)
            j->state = ST_COMPLETED;
        else if (m->status == VG_ECANCELED && strcmp(m->code, "deadline") != 0)
            j->state = ST_CANCELLED;
        else
            j->state = ST_FAILED;
        if (m->code[0]) {
            snprintf(j->err_code, sizeof j->err_code, "%s", m->code);
            free(j->err_msg);
            j->err_msg = m->errmsg;
            m->errmsg = NULL;
        }
        cJSON_Delete(j->events);
        j->events = m->events ? m->events : cJSON_CreateArray();
        m->events = NULL;
        j->stage[0] = 0;
        journal_job(js, j);
        /* `done` goes out once the final record is on disk (journal_progress). */
        j->done_pending = 1;
        js->n_done_pending++;
        journal_progress(js, 0);
        vg_log(VG_LOG_INFO, MOD, "job %s %s (%d tokens)", j->id, state_names[j->state],
               j->n_tokens);
        break;
    }
    msg_free(m);
}

static void prune(vg_jobs *js)
{
    double now = unix_now();
    double ttl = js->cfg->result_ttl_s;
    job **pp = &js->head;
    int i = 0;
    while (*pp) {
        job *j = *pp;
        /* Newest first: beyond MAX_RETAINED the oldest finished results go first. */
        int expired =
            is_final(j->state) && !j->in_worker && (now - j->finished > ttl || i++ >= MAX_RETAINED);
        if (expired) {
            *pp = j->next;
            js->n_jobs--;
            js->n_done_pending -= j->done_pending;
            js->n_durable_pending -= j->durable_pending;
            job_free(j);
        } else {
            pp = &j->next;
        }
    }
}

static void on_timer(uv_timer_t *t)
{
    vg_jobs *js = t->data;
    double now = vg_now_ms();
    for (job *j = js->head; j; j = j->next)
        if (j->in_worker && now > j->deadline_mono_ms && !atomic_load(&j->cancel)) {
            atomic_store(&j->cancel, CANCEL_DEADLINE);
            vg_log(VG_LOG_NOTICE, MOD, "job %s passed its deadline", j->id);
        }
    prune(js);
    journal_progress(js, 0); /* a wake-up from the journal is never needed for correctness */
    /* systemctl status shows what the daemon is doing. */
    if (!js->stopping &&
        (js->n_queued != js->status_queued || js->n_running != js->status_running)) {
        char status[96];
        snprintf(status, sizeof status, "STATUS=Serving: %d running, %d queued", js->n_running,
                 js->n_queued);
        vg_sd_notify(status);
        js->status_queued = js->n_queued;
        js->status_running = js->n_running;
    }
}

/* Called once for the mailbox, the timer and the journal's wake-up; the manager is idle after all
 * three. */
static void on_closed(void *opaque)
{
    vg_jobs *js = opaque;
    if (++js->handles_closed == 3 && js->on_idle)
        js->on_idle(js->on_idle_opaque);
}

static void on_handle_closed(uv_handle_t *h)
{
    on_closed(h->data);
}

static void check_idle(vg_jobs *js)
{
    if (!js->stopping || js->n_active > 0 || js->closing)
        return;
    js->closing = 1;
    /* The event socket closes next: every `done` goes out now, saying whether it is durable (the
     * exit status says whether everything reached the disk). */
    journal_progress(js, 1);
    vg_journal_set_notify(js->journal, NULL, NULL);
    vg_mailbox_close(js->mb, on_closed);
    uv_close((uv_handle_t *)&js->timer, on_handle_closed);
    uv_close((uv_handle_t *)&js->jasync, on_handle_closed);
}

/* The mailbox's drained callback. */
static void on_drained(void *opaque)
{
    check_idle(opaque);
}

void vg_jobs_shutdown(vg_jobs *js, void (*done)(void *opaque), void *opaque)
{
    js->stopping = 1;
    js->on_idle = done;
    js->on_idle_opaque = opaque;
    for (job *j = js->head; j; j = j->next)
        if (j->in_worker)
            atomic_store(&j->cancel, CANCEL_SHUTDOWN);
    check_idle(js);
}

/* ===================================================================================================
 * Requests.
 */
static int same_request(const job *j, const vg_request *r)
{
    return j->video && j->question && !strcmp(j->video, r->video) &&
           !strcmp(j->question, r->question);
}

static void reply_job_accepted(const vg_jobs *js, cJSON *reply, const job *j, int existing)
{
    cJSON_AddStringToObject(reply, "job", j->id);
    cJSON_AddStringToObject(reply, "state", state_names[j->state]);
    add_durable(js, reply, j);
    cJSON_AddBoolToObject(reply, "existing", existing);
    char topic[VG_ID_MAX + 8];
    snprintf(topic, sizeof topic, "job/%s/", j->id);
    cJSON_AddStringToObject(reply, "topic", topic);
}

static int handle_ask(vg_jobs *js, const vg_request *r, cJSON *reply, const char **wire, char *err,
                      size_t errlen)
{
    /* A repeated request (the REQ socket's automatic resend, or a client retrying) returns the job
     * it already started. */
    job *dup = NULL;
    if (r->job[0])
        dup = find_job(js, r->job);
    else if (r->has_id)
        for (job *j = js->head; j && !dup; j = j->next)
            if (!strcmp(j->req_id, r->id) && same_request(j, r))
                dup = j;
    if (dup) {
        if (!same_request(dup, r)) {
            *wire = VG_WIRE_CONFLICT;
            return vg_fail(err, errlen, VG_EEXIST,
                           "job '%s' already exists for a different video or question", r->job);
        }
        reply_job_accepted(js, reply, dup, 1);
        return 0;
    }
    if (js->stopping) {
        *wire = VG_WIRE_SHUTTING;
        return vg_fail(err, errlen, VG_EAGAIN, "the daemon is shutting down");
    }
    vg_journal_status jst;
    vg_journal_get_status(js->journal, &jst);
    if (jst.failing) {
        /* As a database refuses a commit it cannot make durable: the result would be lost by a
         * restart. Retried requests for jobs that exist still get their job (above). */
        *wire = VG_WIRE_STORAGE;
        return vg_fail(err, errlen, VG_EIO,
                       "the state directory cannot be written (%s); no new jobs until it can "
                       "(see `info` state.journal)",
                       jst.message);
    }
    if (js->n_active >= js->cfg->max_queued_jobs) {
        *wire = VG_WIRE_BUSY;
        return vg_fail(err, errlen, VG_EBUSY,
                       "%d jobs are queued or running (max_queued_jobs); "
                       "try again later",
                       js->n_active);
    }
    char resolved[4200];
    int is_url = 0, fd = -1;
    char perr[512];
    /* The file is opened here, beneath its root, and decoded through this descriptor (the
     * policy carries it to the decoder): docs/security.md, item 1. */
    int rc = vg_daemon_media_open(r->video, (const char(*)[VG_CFG_STR])js->cfg->media_roots,
                                  js->cfg->n_media_roots, js->cfg->allowed_protocols, resolved,
                                  sizeof resolved, &is_url, &fd, perr, sizeof perr);
    if (rc < 0) {
        *wire = rc == VG_ENOENT   ? VG_WIRE_NOT_FOUND
                : rc == VG_EINVAL ? VG_WIRE_BAD_REQUEST
                : rc == VG_EBUSY  ? VG_WIRE_BUSY
                                  : VG_WIRE_FORBIDDEN;
        return vg_fail(err, errlen, rc, "%s", perr);
    }
    vg_media_policy *policy = NULL;
    if (vg_media_policy_create(js->cfg, is_url, resolved, fd, &policy) < 0) { /* takes fd */
        *wire = VG_WIRE_INTERNAL;
        return VG_ENOMEM;
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        vg_media_policy_free(policy);
        *wire = VG_WIRE_INTERNAL;
        return VG_ENOMEM;
    }
    j->policy = policy;
    if (r->job[0])
        snprintf(j->id, sizeof j->id, "%s", r->job);
    else
        do {
            snprintf(j->id, sizeof j->id, "%llx-%x", (unsigned long long)(unix_now() * 1000),
                     ++js->counter);
        } while (find_job(js, j->id));
    snprintf(j->req_id, sizeof j->req_id, "%s", r->id);
    j->video = strdup(r->video);
    j->resolved = strdup(resolved);
    j->question = strdup(r->question);
    j->system = r->system ? strdup(r->system) : NULL;
    j->is_url = is_url;
    j->sampling = r->sampling;
    j->gen = r->gen;
    if (r->gen.has_max_new_tokens) {
        j->max_new_tokens = r->gen.max_new_tokens;
    } else {
        /* The checkpoint's own generation_config.json bound (e.g. the demo model's 32) when it is
         * tighter than the daemon's default. */
        int model_max = vg_model_default_gen_params(js->model).max_new_tokens;
        j->max_new_tokens = VG_MIN(js->cfg->default_max_new_tokens, model_max);
    }
    j->deadline_s = r->deadline_s > 0 ? r->deadline_s : js->cfg->job_deadline_s;
    j->max_frames_limit = js->cfg->max_frames_limit;
    j->max_pixels_limit = js->cfg->max_pixels_limit;
    j->deadline_mono_ms = vg_now_ms() + j->deadline_s * 1000.0;
    j->created = unix_now();
    j->state = ST_QUEUED;
    atomic_init(&j->cancel, CANCEL_NONE);
    if (!j->video || !j->resolved || !j->question || (r->system && !j->system)) {
        job_free(j);
        *wire = VG_WIRE_INTERNAL;
        return VG_ENOMEM;
    }
    if (vg_queue_push(js->decode_q, j, 0) < 0) {
        job_free(j);
        *wire = VG_WIRE_BUSY;
        return vg_fail(err, errlen, VG_EBUSY, "the decode queue is full; try again later");
    }
    j->in_worker = 1;
    j->next = js->head;
    js->head = j;
    js->n_jobs++;
    js->n_active++;
    js->n_queued++;
    journal_job(js, j);
    vg_log(VG_LOG_INFO, MOD, "job %s queued: %s", j->id, j->video);
    reply_job_accepted(js, reply, j, 0);
    return 0;
}

int vg_jobs_handle(vg_jobs *js, const vg_request *r, cJSON *reply, const char **wire, char *err,
                   size_t errlen)
{
    job *j;
    switch (r->op) {
    case VG_OP_ASK:
        return handle_ask(js, r, reply, wire, err, errlen);
    case VG_OP_JOB:
    case VG_OP_CANCEL:
        j = find_job(js, r->job);
        if (!j) {
            *wire = VG_WIRE_NOT_FOUND;
            return vg_fail(err, errlen, VG_ENOENT,
                           "no job '%s' (finished results are kept for "
                           "result_ttl_s)",
                           r->job);
        }
        if (r->op == VG_OP_CANCEL) {
            if (!is_final(j->state) && !atomic_load(&j->cancel))
                atomic_store(&j->cancel, CANCEL_USER);
            cJSON_AddStringToObject(reply, "job", j->id);
            cJSON_AddStringToObject(reply, "state",
                                    is_final(j->state) ? state_names[j->state] : "cancelling");
            return 0;
        }
        cJSON *view = job_json(j, 1);
        add_durable(js, view, j);
        cJSON_AddItemToObject(reply, "job", view);
        return 0;
    case VG_OP_JOBS: {
        cJSON *arr = cJSON_AddArrayToObject(reply, "jobs");
        int n = 0;
        vg_journal_status st;
        vg_journal_get_status(js->journal, &st);
        for (j = js->head; j && n < r->limit; j = j->next, n++) {
            cJSON *o = job_json(j, 0);
            cJSON_AddBoolToObject(o, "durable", job_durable(js, j, &st));
            cJSON_AddItemToArray(arr, o);
        }
        cJSON_AddNumberToObject(reply, "total", js->n_jobs);
        return 0;
    }
    case VG_OP_SYNC: {
        /* Lets a subscriber learn that its subscription is live before it asks. */
        job tmp;
        memset(&tmp, 0, sizeof tmp);
        snprintf(tmp.id, sizeof tmp.id, "%s", r->job);
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "job", r->job);
        publish(js, &tmp, "sync", p);
        cJSON_AddStringToObject(reply, "job", r->job);
        return 0;
    }
    case VG_OP_INFO:
    case VG_OP_WATCH: /* streams.c */
    case VG_OP_UNWATCH:
    case VG_OP_STREAMS:
    case VG_OP_EVENTS:
        break;
    }
    *wire = VG_WIRE_INTERNAL;
    return vg_fail(err, errlen, VG_EINVAL, "op not handled by the job manager");
}

void vg_jobs_counts(const vg_jobs *js, int *queued, int *running, int *retained)
{
    *queued = js->n_queued;
    *running = js->n_running;
    *retained = js->n_jobs;
}

int vg_jobs_undurable(const vg_jobs *js)
{
    vg_journal_status st;
    vg_journal_get_status(js->journal, &st);
    int n = 0;
    for (const job *j = js->head; j; j = j->next)
        n += !job_durable(js, j, &st);
    return n;
}

/* ===================================================================================================
 * Journal restore and snapshot (start-up, before the loop runs).
 */
static enum job_state parse_state(const char *s)
{
    for (int i = 0; i < (int)VG_ARRAY_LEN(state_names); i++)
        if (s && !strcmp(s, state_names[i]))
            return (enum job_state)i;
    return ST_FAILED;
}

void vg_jobs_restore(vg_jobs *js, const char *json, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(json, len);
    const char *id = o ? str_of(o, "job") : NULL;
    if (!id || !vg_proto_valid_job_id(id)) {
        vg_log(VG_LOG_WARNING, MOD, "journal: skipping a record without a valid job id");
        cJSON_Delete(o);
        return;
    }
    job *j = find_job(js, id);
    if (!j) {
        j = calloc(1, sizeof *j);
        if (!j) {
            cJSON_Delete(o);
            return;
        }
        snprintf(j->id, sizeof j->id, "%s", id);
        j->next = js->head;
        js->head = j;
        js->n_jobs++;
    }
    const char *s;
    if ((s = str_of(o, "request")) && strlen(s) <= VG_ID_MAX)
        snprintf(j->req_id, sizeof j->req_id, "%s", s);
    free(j->video);
    free(j->question);
    j->video = strdup((s = str_of(o, "video")) ? s : "");
    j->question = strdup((s = str_of(o, "question")) ? s : "");
    j->state = parse_state(str_of(o, "state"));
    j->created = num_of(o, "created");
    j->started = num_of(o, "started");
    j->finished = num_of(o, "finished");
    j->n_tokens = (int)num_of(o, "n_tokens");
    free(j->text);
    j->text = strdup((s = str_of(o, "text")) ? s : "");
    j->text_len = j->text_cap = j->text ? strlen(j->text) : 0;
    cJSON_Delete(j->events);
    cJSON *ev = cJSON_DetachItemFromObjectCaseSensitive(o, "events");
    j->events = cJSON_IsArray(ev) ? ev : (cJSON_Delete(ev), cJSON_CreateArray());
    j->err_code[0] = 0;
    free(j->err_msg);
    j->err_msg = NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (cJSON_IsObject(e)) {
        snprintf(j->err_code, sizeof j->err_code, "%s", (s = str_of(e, "code")) ? s : "failed");
        j->err_msg = strdup((s = str_of(e, "message")) ? s : "");
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "timings");
    if (cJSON_IsObject(t)) {
        j->timings.decode_ms = num_of(t, "decode_ms");
        j->timings.encode_ms = num_of(t, "encode_ms");
        j->timings.prefill_ms = num_of(t, "prefill_ms");
        j->timings.generate_ms = num_of(t, "generate_ms");
        j->timings.frames = (int)num_of(t, "frames");
        j->timings.video_tokens = (int)num_of(t, "video_tokens");
        j->timings.prompt_tokens = (int)num_of(t, "prompt_tokens");
    }
    cJSON_Delete(o);
}

int vg_jobs_snapshot(vg_jobs *js, char ***lines, size_t *n)
{
    double now = unix_now();
    for (job *j = js->head; j; j = j->next)
        if (!is_final(j->state)) {
            j->state = ST_FAILED;
            j->finished = now;
            snprintf(j->err_code, sizeof j->err_code, "interrupted");
            free(j->err_msg);
            j->err_msg = strdup("the daemon stopped before the job finished");
        }
    prune(js);
    char **out = calloc((size_t)js->n_jobs + 1, sizeof *out);
    if (!out)
        return VG_ENOMEM;
    /* The table is newest first; the journal is oldest first. */
    size_t k = (size_t)js->n_jobs;
    for (job *j = js->head; j; j = j->next) {
        cJSON *o = job_json(j, 1);
        out[--k] = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        if (!out[k]) {
            for (size_t i = 0; i < (size_t)js->n_jobs; i++)
                free(out[i]);
            free(out);
            return VG_ENOMEM;
        }
    }
    *lines = out;
    *n = (size_t)js->n_jobs;
    return 0;
}

/* ===================================================================================================
 * Life cycle.
 */
void vg_jobs_set_journal(vg_jobs *js, vg_journal *j)
{
    vg_journal_set_notify(js->journal, NULL, NULL);
    js->journal = j;
    vg_journal_set_notify(j, on_journal_notify, js);
}

void vg_jobs_set_bus(vg_jobs *js, vg_bus *bus)
{
    js->bus = bus;
}

void vg_jobs_set_done_hook(vg_jobs *js, vg_jobs_done_fn fn, void *opaque)
{
    js->done_hook = fn;
    js->done_opaque = opaque;
}

int vg_jobs_create(const vg_jobs_params *p, vg_jobs **out, char *err, size_t errlen)
{
    vg_jobs *js = calloc(1, sizeof *js);
    if (!js)
        return VG_ENOMEM;
    js->loop = p->loop;
    js->model = p->model;
    js->mi = vg_model_get_info(p->model);
    js->cfg = p->cfg;
    js->journal = p->journal;
    js->gate = p->gate;
    int rc;
    size_t qcap = (size_t)VG_MAX(p->cfg->max_queued_jobs, 1024);
    if ((rc = vg_queue_create(qcap, &js->decode_q)) < 0 ||
        (rc = vg_queue_create(qcap, &js->infer_q)) < 0) {
        vg_jobs_destroy(js);
        return vg_fail(err, errlen, rc, "cannot create the job queues");
    }
    /* The threads start before the loop handles exist: every failure below leaves no handle to
     * close, and vg_jobs_destroy only joins threads and frees memory. The threads touch the
     * mailbox only for a job, and jobs arrive after this function has returned. */
    js->decoders = calloc((size_t)p->cfg->max_concurrent_decodes, sizeof *js->decoders);
    if (!js->decoders) {
        vg_jobs_destroy(js);
        return VG_ENOMEM;
    }
    for (int i = 0; i < p->cfg->max_concurrent_decodes; i++) {
        if ((rc = pthread_create(&js->decoders[i], NULL, decoder_main, js)) != 0) {
            vg_jobs_destroy(js);
            return vg_fail(err, errlen, -rc, "cannot start a decode thread");
        }
        js->n_decoders++;
    }
    if ((rc = pthread_create(&js->infer, NULL, infer_main, js)) != 0) {
        vg_jobs_destroy(js);
        return vg_fail(err, errlen, -rc, "cannot start the inference thread");
    }
    js->infer_started = 1;
    /* Last, the loop handles (libuv: once a handle exists its memory may only be released from its
     * close callback): the mailbox, whose creation is the last step that can fail, then the
     * timer, which cannot fail. */
    vg_mailbox_params mp = {p->loop, MSG_QUEUE_CAP, handle_msg, on_drained, msg_free, js};
    if ((rc = vg_mailbox_create(&mp, &js->mb)) < 0) {
        vg_jobs_destroy(js);
        return vg_fail(err, errlen, rc, "cannot create the job mailbox");
    }
    uv_timer_init(p->loop, &js->timer);
    js->timer.data = js;
    uv_timer_start(&js->timer, on_timer, 100, 100);
    uv_async_init(p->loop, &js->jasync, on_jasync);
    js->jasync.data = js;
    vg_journal_set_notify(js->journal, on_journal_notify, js);
    *out = js;
    return 0;
}

void vg_jobs_destroy(vg_jobs *js)
{
    if (!js)
        return;
    vg_journal_set_notify(js->journal, NULL, NULL);
    if (js->decode_q)
        vg_queue_close(js->decode_q);
    if (js->infer_q)
        vg_queue_close(js->infer_q);
    for (int i = 0; i < js->n_decoders; i++)
        pthread_join(js->decoders[i], NULL);
    if (js->infer_started)
        pthread_join(js->infer, NULL);
    free(js->decoders);
    vg_mailbox_destroy(js->mb); /* frees what the loop did not handle */
    vg_queue_destroy(js->decode_q);
    vg_queue_destroy(js->infer_q);
    while (js->head) {
        job *j = js->head;
        js->head = j->next;
        job_free(j);
    }
    free(js);
}
