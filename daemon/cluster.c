/*
 * cluster.c: cluster mode on NATS JetStream (cluster.h; docs/cluster.md).
 *
 * Threads and ownership:
 *  - The loop owns the vg_cluster struct's loop-side fields: the copy of the results bucket
 *    (`cache`, fed by the watch thread), the set of cluster jobs this node runs (`mine`), and the
 *    counters shown by `info`.
 *  - The pull thread fetches one message at a time from the shared pull consumer, only while fewer
 *    than cluster_max_jobs messages are held; it puts the message in `held` (under `mu`) and posts
 *    the request to the loop's inbox.
 *  - The operations thread runs the blocking JetStream calls the loop asks for (commands queued in
 *    `cmds` under `mu`): publishing a job, writing a job's state to the bucket, acking; every
 *    ack_wait/3 it marks each held message in progress.
 *  - The watch thread follows every update of the bucket and posts it to the loop's inbox.
 *  - Inbox messages wake the loop through `async`; the loop never calls libnats, and no thread but
 *    the loop calls the job manager or the bus.
 */
#include "cluster.h"

#include "common.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MOD         "cluster"
#define STREAM      "VIGIL_JOBS"
#define SUBJECT     "vigil.jobs"
#define CONSUMER    "vigil-workers"
#define BUCKET      "vigil_results"
#define MAX_HELD    64
#define CACHE_SLOTS 1024
#define MAX_TRIES   5 /* deliveries of one job before it is recorded as failed */

enum cmd_type { CMD_PUBLISH, CMD_STATE, CMD_FINISH, CMD_NAK };
enum in_type { IN_JOB, IN_ENTRY };

typedef struct cmd {
    enum cmd_type type;
    char id[VG_ID_MAX + 1];
    char *data; /* PUBLISH: the request; STATE, FINISH: the job view (JSON); owned */
    char *view; /* PUBLISH: the queued view */
    struct cmd *next;
} cmd;

typedef struct inmsg {
    enum in_type type;
    char id[VG_ID_MAX + 1];
    char *data; /* JOB: the request; ENTRY: the bucket's value (NULL: deleted) */
    size_t len;
    uint64_t delivered;
    struct inmsg *next;
} inmsg;

typedef struct held_msg {
    char id[VG_ID_MAX + 1];
    natsMsg *m;
} held_msg;

typedef struct centry {
    char id[VG_ID_MAX + 1];
    char *view; /* JSON */
    int final;
    double at_ms; /* when it arrived, for result_ttl_s */
    struct centry *next;
} centry;

typedef struct mine_job {
    char id[VG_ID_MAX + 1];
    struct mine_job *next;
} mine_job;

struct vg_cluster {
    uv_loop_t *loop;
    const vg_daemon_config *cfg;
    vg_jobs *jobs;
    vg_bus *bus;
    int sink;
    char node[128];
    int max_jobs;      /* cluster_max_jobs and cluster_ack_wait_s, copied at start (the threads */
    double ack_wait_s; /* read them; a reload rewrites the configuration) */
    uv_async_t async;
    uv_timer_t prune;
    int handles_open;

    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    kvStore *kv;
    natsSubscription *sub;
    kvWatcher *watcher;

    pthread_t pull_th, ops_th, watch_th;
    int threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int stop;     /* threads end (ops after its queue is empty) */
    atomic_int draining; /* no more pulls */
    cmd *cmds, *cmds_tail;
    inmsg *in, *in_tail;
    held_msg held[MAX_HELD];
    int n_held;

    /* Loop-owned. */
    centry *cache[CACHE_SLOTS];
    int n_cache;
    mine_job *mine;
    unsigned counter;
    unsigned long long accepted, pulled, finished, redelivered_done;
};

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *nats_err(natsStatus s)
{
    const char *t = nats_GetLastError(NULL);
    return t && *t ? t : natsStatus_GetText(s);
}

static int is_final_state(const char *st)
{
    return !strcmp(st, "completed") || !strcmp(st, "failed") || !strcmp(st, "cancelled");
}

/* Whether a view (JSON text) holds a final state. */
static int view_final(const char *s, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(s, len);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "state");
    int f = cJSON_IsString(st) && is_final_state(st->valuestring);
    cJSON_Delete(o);
    return f;
}

/* KV keys are dot-separated tokens: a job id with an empty token cannot be a key. */
static int key_ok(const char *id)
{
    size_t n = strlen(id);
    return n > 0 && id[n - 1] != '.' && !strstr(id, "..");
}

/* ===================================================================================================
 * Threads -> loop.
 */
static void post_in(vg_cluster *c, inmsg *m)
{
    pthread_mutex_lock(&c->mu);
    if (c->in_tail)
        c->in_tail->next = m;
    else
        c->in = m;
    c->in_tail = m;
    pthread_mutex_unlock(&c->mu);
    uv_async_send(&c->async);
}

static void post_cmd(vg_cluster *c, enum cmd_type t, const char *id, char *data, char *view)
{
    cmd *m = calloc(1, sizeof *m);
    if (!m) {
        free(data);
        free(view);
        vg_log(VG_LOG_ERR, MOD, "job %s: out of memory queueing a cluster operation", id);
        return;
    }
    m->type = t;
    snprintf(m->id, sizeof m->id, "%s", id);
    m->data = data;
    m->view = view;
    pthread_mutex_lock(&c->mu);
    if (c->cmds_tail)
        c->cmds_tail->next = m;
    else
        c->cmds = m;
    c->cmds_tail = m;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Removes and returns id's held message (NULL if none); the caller owns it. */
static natsMsg *take_held(vg_cluster *c, const char *id)
{
    natsMsg *m = NULL;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->n_held; i++)
        if (!strcmp(c->held[i].id, id)) {
            m = c->held[i].m;
            c->held[i] = c->held[--c->n_held];
            break;
        }
    pthread_cond_broadcast(&c->cv); /* a free slot: the pull thread may fetch */
    pthread_mutex_unlock(&c->mu);
    return m;
}

static void *pull_main(void *arg)
{
    vg_cluster *c = arg;
    while (!atomic_load(&c->stop)) {
        pthread_mutex_lock(&c->mu);
        while (!atomic_load(&c->stop) && (atomic_load(&c->draining) || c->n_held >= c->max_jobs))
            pthread_cond_wait(&c->cv, &c->mu);
        pthread_mutex_unlock(&c->mu);
        if (atomic_load(&c->stop))
            break;
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s = natsSubscription_Fetch(&list, c->sub, 1, 1000, &jerr);
        if (s == NATS_TIMEOUT)
            continue;
        if (s != NATS_OK) {
            vg_log(VG_LOG_DEBUG, MOD, "fetch: %s", nats_err(s));
            sleep_ms(500);
            continue;
        }
        for (int i = 0; i < list.Count; i++) {
            natsMsg *m = list.Msgs[i];
            list.Msgs[i] = NULL;
            const char *d = natsMsg_GetData(m);
            int dl = natsMsg_GetDataLength(m);
            cJSON *o = cJSON_ParseWithLength(d, (size_t)dl);
            const cJSON *jid = cJSON_GetObjectItemCaseSensitive(o, "job");
            inmsg *in = calloc(1, sizeof *in);
            char *copy = malloc((size_t)dl + 1);
            if (!cJSON_IsString(jid) || !vg_proto_valid_job_id(jid->valuestring) ||
                !key_ok(jid->valuestring) || !in || !copy) {
                /* Not a job of ours (or no memory): terminate it / let it come back. */
                if (in && copy)
                    natsMsg_Term(m, NULL);
                else
                    natsMsg_Nak(m, NULL);
                natsMsg_Destroy(m);
                free(in);
                free(copy);
                cJSON_Delete(o);
                continue;
            }
            jsMsgMetaData *meta = NULL;
            if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
                in->delivered = meta->NumDelivered;
                jsMsgMetaData_Destroy(meta);
            }
            memcpy(copy, d, (size_t)dl);
            copy[dl] = '\0';
            in->type = IN_JOB;
            snprintf(in->id, sizeof in->id, "%s", jid->valuestring);
            in->data = copy;
            in->len = (size_t)dl;
            cJSON_Delete(o);
            pthread_mutex_lock(&c->mu);
            int dup = 0;
            for (int k = 0; k < c->n_held; k++)
                if (!strcmp(c->held[k].id, in->id)) {
                    /* Redelivered to the node that runs it (it was late marking progress):
                     * keep the newest delivery. */
                    natsMsg_Destroy(c->held[k].m);
                    c->held[k].m = m;
                    dup = 1;
                }
            if (!dup) {
                snprintf(c->held[c->n_held].id, sizeof c->held[0].id, "%s", in->id);
                c->held[c->n_held++].m = m;
            }
            pthread_mutex_unlock(&c->mu);
            post_in(c, in);
        }
        natsMsgList_Destroy(&list);
    }
    return NULL;
}

/* Writes view as id's state unless the bucket already holds a final state for id (exactly one
 * result per job id, whatever node finishes first). A final view is retried until it is written
 * or the node stops (a result must not be acked unrecorded), a progress state 8 times. Returns 0
 * (written, or a final state is there already) or -1. */
static int kv_write_state(vg_cluster *c, const char *id, const char *view, int final)
{
    int len = (int)strlen(view);
    long pause = 100;
    for (int tries = 0; tries < 8 || (final && !atomic_load(&c->stop)); tries++) {
        kvEntry *e = NULL;
        uint64_t rev = 0;
        natsStatus s = kvStore_Get(&e, c->kv, id);
        if (s == NATS_NOT_FOUND) {
            s = kvStore_Create(&rev, c->kv, id, view, len);
        } else if (s == NATS_OK) {
            int fin = view_final(kvEntry_Value(e), (size_t)kvEntry_ValueLen(e));
            uint64_t last = kvEntry_Revision(e);
            kvEntry_Destroy(e);
            if (fin) {
                vg_log(VG_LOG_INFO, MOD, "job %s: already final in the cluster; kept", id);
                return 0;
            }
            s = kvStore_Update(&rev, c->kv, id, view, len, last);
        }
        if (s == NATS_OK)
            return 0;
        vg_log(tries == 8 ? VG_LOG_WARNING : VG_LOG_DEBUG, MOD,
               "job %s: bucket write: %s (retrying)", id, nats_err(s));
        sleep_ms(pause);
        pause = VG_MIN(pause * 2, 2000);
    }
    vg_log(VG_LOG_ERR, MOD, "job %s: could not record its state in the cluster", id);
    return -1;
}

/* A job this node accepted could not be queued: its failed view goes to the bucket if it can and
 * to this node's copy in any case (the loop publishes `done`). */
static void fail_publish(vg_cluster *c, cmd *m, const char *why)
{
    char msg[512];
    snprintf(msg, sizeof msg, "the cluster could not queue the job: %s", why);
    vg_log(VG_LOG_ERR, MOD, "job %s: %s", m->id, msg);
    cJSON *v = cJSON_Parse(m->view);
    char *t = NULL;
    if (v) {
        cJSON_ReplaceItemInObject(v, "state", cJSON_CreateString("failed"));
        cJSON_DeleteItemFromObject(v, "stage");
        cJSON_DeleteItemFromObject(v, "percent");
        cJSON *er = cJSON_CreateObject();
        cJSON_AddStringToObject(er, "code", "cluster");
        cJSON_AddStringToObject(er, "message", msg);
        cJSON_ReplaceItemInObject(v, "error", er);
        t = cJSON_PrintUnformatted(v);
        cJSON_Delete(v);
    }
    if (!t)
        return;
    uint64_t rev = 0;
    kvStore_Put(&rev, c->kv, m->id, t, (int)strlen(t));
    inmsg *in = calloc(1, sizeof *in);
    if (!in) {
        free(t);
        return;
    }
    in->type = IN_ENTRY;
    snprintf(in->id, sizeof in->id, "%s", m->id);
    in->data = t;
    in->len = strlen(t);
    post_in(c, in);
}

static void run_cmd(vg_cluster *c, cmd *m)
{
    switch (m->type) {
    case CMD_PUBLISH: {
        uint64_t rev = 0;
        natsStatus s = kvStore_Create(&rev, c->kv, m->id, m->view, (int)strlen(m->view));
        if (s != NATS_OK) {
            kvEntry *e = NULL;
            if (kvStore_Get(&e, c->kv, m->id) == NATS_OK) {
                /* The id is taken already (another node accepted the same job id): that job is
                 * the one; nothing is queued twice. */
                kvEntry_Destroy(e);
                vg_log(VG_LOG_INFO, MOD, "job %s: already in the cluster", m->id);
            } else {
                fail_publish(c, m, nats_err(s));
            }
            break;
        }
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = m->id;
        jsErrCode jerr = 0;
        jsPubAck *pa = NULL;
        s = js_Publish(&pa, c->js, SUBJECT, m->data, (int)strlen(m->data), &po, &jerr);
        jsPubAck_Destroy(pa);
        if (s != NATS_OK)
            fail_publish(c, m, nats_err(s));
        break;
    }
    case CMD_STATE:
        kv_write_state(c, m->id, m->data, 0);
        break;
    case CMD_FINISH: {
        int w = kv_write_state(c, m->id, m->data, 1);
        natsMsg *nm = take_held(c, m->id);
        if (nm) {
            /* Unrecorded (the node stops while the server is unreachable): not acked, so that
             * another node runs it. */
            natsStatus s = w == 0 ? natsMsg_AckSync(nm, NULL, NULL) : NATS_OK;
            if (s != NATS_OK)
                vg_log(VG_LOG_WARNING, MOD, "job %s: ack: %s", m->id, nats_err(s));
            natsMsg_Destroy(nm);
        }
        break;
    }
    case CMD_NAK: {
        natsMsg *nm = take_held(c, m->id);
        if (nm) {
            /* A second before it is offered again (to this node too, if it is the only one). */
            natsMsg_NakWithDelay(nm, 1000, NULL); /* milliseconds */
            natsMsg_Destroy(nm);
        }
        break;
    }
    }
}

static void *ops_main(void *arg)
{
    vg_cluster *c = arg;
    double every_ms = c->ack_wait_s * 1000.0 / 3.0;
    double next = mono_ms() + every_ms;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->cmds) {
            cmd *m = c->cmds;
            c->cmds = m->next;
            if (!c->cmds)
                c->cmds_tail = NULL;
            pthread_mutex_unlock(&c->mu);
            run_cmd(c, m);
            free(m->data);
            free(m->view);
            free(m);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        if (atomic_load(&c->stop))
            break;
        double now = mono_ms();
        if (now >= next) {
            /* Still working on it: the server restarts each held message's ack wait. */
            for (int i = 0; i < c->n_held; i++)
                natsMsg_InProgress(c->held[i].m, NULL);
            next = now + every_ms;
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double wait = VG_MIN(next - now, 200.0);
        ts.tv_nsec += (long)(wait * 1e6);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void *watch_main(void *arg)
{
    vg_cluster *c = arg;
    while (!atomic_load(&c->stop)) {
        kvEntry *e = NULL;
        natsStatus s = kvWatcher_Next(&e, c->watcher, 500);
        if (s == NATS_TIMEOUT)
            continue;
        if (s != NATS_OK) {
            if (atomic_load(&c->stop))
                break;
            vg_log(VG_LOG_DEBUG, MOD, "watch: %s", nats_err(s));
            sleep_ms(200);
            continue;
        }
        if (!e)
            continue; /* the end of the initial values */
        const char *key = kvEntry_Key(e);
        inmsg *in = calloc(1, sizeof *in);
        if (in && strlen(key) <= VG_ID_MAX) {
            in->type = IN_ENTRY;
            snprintf(in->id, sizeof in->id, "%s", key);
            if (kvEntry_Operation(e) == kvOp_Put) {
                int n = kvEntry_ValueLen(e);
                in->data = malloc((size_t)n + 1);
                if (in->data) {
                    memcpy(in->data, kvEntry_Value(e), (size_t)n);
                    in->data[n] = '\0';
                    in->len = (size_t)n;
                }
            }
            if (kvEntry_Operation(e) != kvOp_Put || in->data) {
                post_in(c, in);
                in = NULL;
            }
        }
        free(in);
        kvEntry_Destroy(e);
    }
    return NULL;
}

/* ===================================================================================================
 * Loop side.
 */
static unsigned slot(const char *id)
{
    unsigned h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h % CACHE_SLOTS;
}

static centry *cache_find(vg_cluster *c, const char *id)
{
    for (centry *e = c->cache[slot(id)]; e; e = e->next)
        if (!strcmp(e->id, id))
            return e;
    return NULL;
}

static void cache_remove(vg_cluster *c, const char *id)
{
    for (centry **p = &c->cache[slot(id)]; *p; p = &(*p)->next)
        if (!strcmp((*p)->id, id)) {
            centry *e = *p;
            *p = e->next;
            free(e->view);
            free(e);
            c->n_cache--;
            return;
        }
}

/* Takes view. Returns the entry, or NULL when memory ran out (view freed). */
static centry *cache_set(vg_cluster *c, const char *id, char *view)
{
    centry *e = cache_find(c, id);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            free(view);
            return NULL;
        }
        snprintf(e->id, sizeof e->id, "%s", id);
        unsigned s = slot(id);
        e->next = c->cache[s];
        c->cache[s] = e;
        c->n_cache++;
    }
    free(e->view);
    e->view = view;
    e->final = view_final(view, strlen(view));
    e->at_ms = mono_ms();
    return e;
}

static mine_job **mine_find(vg_cluster *c, const char *id)
{
    for (mine_job **p = &c->mine; *p; p = &(*p)->next)
        if (!strcmp((*p)->id, id))
            return p;
    return NULL;
}

/* The local job manager's full view of id (a malloc'd JSON string with "node"), or NULL. */
static char *local_view(vg_cluster *c, const char *id, int *final)
{
    vg_request r;
    memset(&r, 0, sizeof r);
    r.op = VG_OP_JOB;
    snprintf(r.job, sizeof r.job, "%s", id);
    cJSON *o = cJSON_CreateObject();
    const char *wire = NULL;
    char err[256];
    char *s = NULL;
    if (o && vg_jobs_handle(c->jobs, &r, o, &wire, err, sizeof err) == 0) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "job");
        if (v) {
            cJSON_DeleteItemFromObject(v, "durable"); /* the bucket is the cluster's record */
            cJSON_AddStringToObject(v, "node", c->node);
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(v, "state");
            if (final)
                *final = cJSON_IsString(st) && is_final_state(st->valuestring);
            s = cJSON_PrintUnformatted(v);
        }
    }
    cJSON_Delete(o);
    return s;
}

/* A failed view for a job this node could not start. */
static char *failed_view(vg_cluster *c, const char *id, const char *code, const char *msg)
{
    cJSON *v = cJSON_CreateObject();
    cJSON_AddStringToObject(v, "job", id);
    cJSON_AddStringToObject(v, "state", "failed");
    cJSON *e = cJSON_AddObjectToObject(v, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(v, "node", c->node);
    char *s = cJSON_PrintUnformatted(v);
    cJSON_Delete(v);
    return s;
}

static void finish_with(vg_cluster *c, const char *id, char *view)
{
    if (!view) {
        /* Out of memory: the message is not acked; it comes back after the ack wait. */
        vg_log(VG_LOG_ERR, MOD, "job %s: out of memory recording its result", id);
        return;
    }
    c->finished++;
    post_cmd(c, CMD_FINISH, id, view, NULL);
}

/* A job pulled from the queue: run it here unless the cluster already has its result. */
static void on_job(vg_cluster *c, inmsg *in)
{
    c->pulled++;
    centry *ce = cache_find(c, in->id);
    if (ce && ce->final) {
        /* Finished elsewhere (its node died between the result and the ack): ack, do not rerun. */
        c->redelivered_done++;
        finish_with(c, in->id, strdup(ce->view));
        return;
    }
    if (mine_find(c, in->id))
        return; /* redelivered to the node that runs it: the newer message is held */
    if (in->delivered > MAX_TRIES) {
        char msg[160];
        snprintf(msg, sizeof msg, "the job was delivered %llu times without finishing",
                 (unsigned long long)in->delivered);
        finish_with(c, in->id, failed_view(c, in->id, "interrupted", msg));
        return;
    }
    vg_proto_limits lim = {c->cfg->max_message_size, c->cfg->max_new_tokens_limit,
                           c->cfg->job_deadline_s, c->cfg->max_frames_limit,
                           c->cfg->max_pixels_limit};
    vg_request r;
    const char *wire = NULL;
    char err[768];
    int rc = vg_proto_parse(in->data, in->len, &lim, &r, &wire, err, sizeof err);
    cJSON *reply = NULL;
    if (rc == 0 && r.op != VG_OP_ASK) {
        rc = VG_EINVAL;
        wire = VG_WIRE_BAD_REQUEST;
        snprintf(err, sizeof err, "the cluster queue holds a request that is not an ask");
    }
    if (rc == 0) {
        snprintf(r.job, sizeof r.job, "%s", in->id);
        reply = cJSON_CreateObject();
        rc = reply ? vg_jobs_handle(c->jobs, &r, reply, &wire, err, sizeof err) : VG_ENOMEM;
    }
    vg_request_clear(&r); /* safe after a failed parse too (proto.c zeroes it first) */
    cJSON_Delete(reply);
    if (rc < 0 && wire &&
        (!strcmp(wire, VG_WIRE_BUSY) || !strcmp(wire, VG_WIRE_SHUTTING) ||
         !strcmp(wire, VG_WIRE_STORAGE))) {
        /* This node cannot take it now (full, stopping, its disk failing): another node can. */
        vg_log(VG_LOG_WARNING, MOD, "job %s: handed back to the cluster: %s", in->id, err);
        post_cmd(c, CMD_NAK, in->id, NULL, NULL);
        return;
    }
    if (rc < 0) {
        vg_log(VG_LOG_WARNING, MOD, "job %s: not started here: %s", in->id, err);
        finish_with(c, in->id, failed_view(c, in->id, wire ? wire : VG_WIRE_INTERNAL, err));
        return;
    }
    int final = 0;
    char *view = local_view(c, in->id, &final);
    if (final) {
        finish_with(c, in->id, view); /* it existed here already, finished */
        return;
    }
    mine_job *mj = calloc(1, sizeof *mj);
    if (mj) {
        snprintf(mj->id, sizeof mj->id, "%s", in->id);
        mj->next = c->mine;
        c->mine = mj;
    }
    vg_log(VG_LOG_INFO, MOD, "job %s: running here (delivery %llu)", in->id,
           (unsigned long long)in->delivered);
    if (view)
        post_cmd(c, CMD_STATE, in->id, view, NULL);
}

/* An update of the bucket. */
static void on_entry(vg_cluster *c, inmsg *in)
{
    if (!in->data) {
        cache_remove(c, in->id);
        return;
    }
    int was_final = 0;
    centry *e = cache_find(c, in->id);
    if (e)
        was_final = e->final;
    char *view = in->data;
    in->data = NULL;
    e = cache_set(c, in->id, view);
    if (!e || !e->final || was_final)
        return;
    /* The result, once per job id on every node, whatever node ran it (the job manager publishes
     * no `done` in cluster mode). */
    char topic[VG_ID_MAX + 16];
    snprintf(topic, sizeof topic, "job/%s/done", in->id);
    vg_bus_publish(c->bus, topic, e->view, strlen(e->view));
}

static void on_async(uv_async_t *h)
{
    vg_cluster *c = h->data;
    pthread_mutex_lock(&c->mu);
    inmsg *m = c->in;
    c->in = c->in_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (m) {
        inmsg *next = m->next;
        if (m->type == IN_JOB)
            on_job(c, m);
        else
            on_entry(c, m);
        free(m->data);
        free(m);
        m = next;
    }
}

/* The bus sink: `state` records of the cluster jobs this node runs go to the bucket. */
static void on_bus(const char *topic, const char *payload, size_t len, void *opaque)
{
    (void)payload;
    (void)len;
    vg_cluster *c = opaque;
    if (strncmp(topic, "job/", 4))
        return;
    const char *id0 = topic + 4, *slash = strchr(id0, '/');
    if (!slash || (size_t)(slash - id0) > VG_ID_MAX || strcmp(slash + 1, "state"))
        return;
    char id[VG_ID_MAX + 1];
    memcpy(id, id0, (size_t)(slash - id0));
    id[slash - id0] = '\0';
    if (!mine_find(c, id))
        return;
    int final = 0;
    char *view = local_view(c, id, &final);
    if (view && !final)
        post_cmd(c, CMD_STATE, id, view, NULL);
    else
        free(view);
}

/* The job manager's done hook (jobs.h): a job this node ran has finished. */
static void on_done(const char *id, void *opaque)
{
    vg_cluster *c = opaque;
    mine_job **p = mine_find(c, id);
    if (!p)
        return;
    mine_job *mj = *p;
    *p = mj->next;
    free(mj);
    if (atomic_load(&c->draining)) {
        /* Cancelled by this node's shutdown: another node runs it. */
        vg_log(VG_LOG_NOTICE, MOD, "job %s: handed back to the cluster", id);
        post_cmd(c, CMD_NAK, id, NULL, NULL);
        return;
    }
    finish_with(c, id, local_view(c, id, NULL));
}

static void on_prune(uv_timer_t *t)
{
    vg_cluster *c = t->data;
    double ttl_ms = c->cfg->result_ttl_s * 1000.0, now = mono_ms();
    for (int i = 0; i < CACHE_SLOTS; i++)
        for (centry **p = &c->cache[i]; *p;) {
            centry *e = *p;
            if (e->final && now - e->at_ms > ttl_ms) {
                *p = e->next;
                free(e->view);
                free(e);
                c->n_cache--;
            } else {
                p = &e->next;
            }
        }
}

int vg_cluster_handle(vg_cluster *c, const vg_request *r, const char *data, size_t len,
                      cJSON *reply, int *rc, const char **wire, char *err, size_t errlen)
{
    if (!c || (r->op != VG_OP_ASK && r->op != VG_OP_JOB))
        return 0;
    *rc = 0;
    if (r->op == VG_OP_JOB) {
        centry *e = cache_find(c, r->job);
        if (!e)
            return 0;
        if (!e->final && mine_find(c, r->job)) {
            /* Running here: the local view has its progress; finished here but not yet recorded
             * in the bucket: the cluster's view (running) until the bucket says which result
             * is the one. */
            int final = 0;
            free(local_view(c, r->job, &final));
            if (!final)
                return 0;
        }
        cJSON *v = cJSON_Parse(e->view);
        if (!v)
            return 0;
        cJSON_AddItemToObject(reply, "job", v);
        return 1;
    }
    if (atomic_load(&c->draining)) {
        *wire = VG_WIRE_SHUTTING;
        *rc = vg_fail(err, errlen, VG_EAGAIN, "the daemon is shutting down");
        return 1;
    }
    char id[VG_ID_MAX + 1];
    if (r->job[0]) {
        snprintf(id, sizeof id, "%s", r->job);
    } else {
        unsigned rnd = (unsigned)getpid() * 2654435761u ^ (unsigned)(mono_ms() * 1000);
        snprintf(id, sizeof id, "%llx-%x-%x", (unsigned long long)(unix_now() * 1000),
                 rnd & 0xffffff, ++c->counter);
    }
    if (!key_ok(id)) {
        *wire = VG_WIRE_BAD_REQUEST;
        *rc = vg_fail(err, errlen, VG_EINVAL,
                      "in cluster mode a job id may not end with '.' or hold '..'");
        return 1;
    }
    centry *e = cache_find(c, id);
    if (e) {
        cJSON *v = cJSON_Parse(e->view);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(v, "state");
        cJSON_AddStringToObject(reply, "job", id);
        cJSON_AddStringToObject(reply, "state", cJSON_IsString(st) ? st->valuestring : "queued");
        cJSON_AddBoolToObject(reply, "durable", 1);
        cJSON_AddBoolToObject(reply, "existing", 1);
        cJSON_Delete(v);
    } else {
        cJSON *req = cJSON_ParseWithLength(data, len);
        cJSON *view = cJSON_CreateObject();
        if (!req || !view) {
            cJSON_Delete(req);
            cJSON_Delete(view);
            *wire = VG_WIRE_INTERNAL;
            *rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
            return 1;
        }
        cJSON_DeleteItemFromObject(req, "job");
        cJSON_AddStringToObject(req, "job", id);
        cJSON_AddStringToObject(view, "job", id);
        cJSON_AddStringToObject(view, "state", "queued");
        cJSON_AddNumberToObject(view, "created", unix_now());
        char video[VG_VIDEO_MAX + 8];
        vg_url_redact(r->video, video, sizeof video);
        cJSON_AddStringToObject(view, "video", video);
        cJSON_AddStringToObject(view, "question", r->question ? r->question : "");
        cJSON_AddNumberToObject(view, "n_tokens", 0);
        cJSON_AddStringToObject(view, "stage", "queued");
        cJSON_AddNumberToObject(view, "percent", 0);
        cJSON_AddNullToObject(view, "error");
        cJSON_AddStringToObject(view, "accepted_by", c->node);
        char *rs = cJSON_PrintUnformatted(req);
        char *vs = cJSON_PrintUnformatted(view);
        char *vs2 = vs ? strdup(vs) : NULL;
        cJSON_Delete(req);
        cJSON_Delete(view);
        if (!rs || !vs || !vs2 || !cache_set(c, id, vs2)) {
            free(rs);
            free(vs);
            *wire = VG_WIRE_INTERNAL;
            *rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
            return 1;
        }
        post_cmd(c, CMD_PUBLISH, id, rs, vs);
        c->accepted++;
        cJSON_AddStringToObject(reply, "job", id);
        cJSON_AddStringToObject(reply, "state", "queued");
        cJSON_AddBoolToObject(reply, "durable", 0);
        cJSON_AddBoolToObject(reply, "existing", 0);
        vg_log(VG_LOG_INFO, MOD, "job %s queued in the cluster: %s", id, video);
    }
    char topic[VG_ID_MAX + 8];
    snprintf(topic, sizeof topic, "job/%s/", id);
    cJSON_AddStringToObject(reply, "topic", topic);
    return 1;
}

void vg_cluster_add_info(const vg_cluster *c, cJSON *o)
{
    if (!c)
        return;
    cJSON *ci = cJSON_AddObjectToObject(o, "cluster");
    cJSON_AddStringToObject(ci, "node", c->node);
    natsConnStatus st = c->nc ? natsConnection_Status(c->nc) : NATS_CONN_STATUS_CLOSED;
    cJSON_AddStringToObject(ci, "connection",
                            st == NATS_CONN_STATUS_CONNECTED      ? "connected"
                            : st == NATS_CONN_STATUS_RECONNECTING ? "reconnecting"
                                                                  : "disconnected");
    int running = 0;
    for (const mine_job *m = c->mine; m; m = m->next)
        running++;
    cJSON_AddNumberToObject(ci, "running", running);
    cJSON_AddNumberToObject(ci, "max_jobs", c->max_jobs);
    cJSON_AddNumberToObject(ci, "accepted", (double)c->accepted);
    cJSON_AddNumberToObject(ci, "pulled", (double)c->pulled);
    cJSON_AddNumberToObject(ci, "finished", (double)c->finished);
    cJSON_AddNumberToObject(ci, "results_known", c->n_cache);
}

/* ===================================================================================================
 * Start and stop.
 */
int vg_cluster_check_config(const vg_daemon_config *cfg, char *err, size_t errlen)
{
    if (!cfg->cluster_url[0])
        return 0;
    char tmp[VG_CFG_STR];
    snprintf(tmp, sizeof tmp, "%s", cfg->cluster_url);
    int tls = -1;
    for (char *sv = NULL, *u = strtok_r(tmp, ",", &sv); u; u = strtok_r(NULL, ",", &sv)) {
        while (*u == ' ')
            u++;
        int t = !strncmp(u, "tls://", 6);
        if (!t && strncmp(u, "nats://", 7))
            return vg_fail(err, errlen, VG_EINVAL,
                           "cluster_url: '%s' is not nats://HOST[:PORT] or tls://HOST[:PORT]", u);
        if (tls >= 0 && t != tls)
            return vg_fail(err, errlen, VG_EINVAL, "cluster_url: mixes nats:// and tls:// servers");
        tls = t;
    }
    if (tls < 0)
        return vg_fail(err, errlen, VG_EINVAL, "cluster_url: no server");
    if (!cfg->cluster_cert_file[0] != !cfg->cluster_key_file[0])
        return vg_fail(err, errlen, VG_EINVAL,
                       "cluster_cert_file and cluster_key_file go together");
    if (!tls && (cfg->cluster_ca_file[0] || cfg->cluster_cert_file[0]))
        return vg_fail(err, errlen, VG_EINVAL,
                       "cluster_ca_file and cluster_cert_file need tls:// servers");
    return 0;
}

static int read_secret(const char *path, char *out, size_t cap, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return vg_fail(err, errlen, VG_EIO, "cluster_password_file %s: cannot be read", path);
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    return 0;
}

static int connect_all(vg_cluster *c, char *err, size_t errlen)
{
    const vg_daemon_config *cfg = c->cfg;
    natsStatus s = natsOptions_Create(&c->opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(c->opts, cfg->cluster_url);
    if (s == NATS_OK)
        s = natsOptions_SetName(c->opts, c->node);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(c->opts, -1); /* forever: the loop keeps serving */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(c->opts, 500);
    if (s == NATS_OK && cfg->cluster_username[0]) {
        char pw[1024] = "";
        if (cfg->cluster_password_file[0] &&
            read_secret(cfg->cluster_password_file, pw, sizeof pw, err, errlen) < 0)
            return VG_EIO;
        s = natsOptions_SetUserInfo(c->opts, cfg->cluster_username, pw);
        memset(pw, 0, sizeof pw);
    }
    if (s == NATS_OK && cfg->cluster_creds_file[0])
        s = natsOptions_SetUserCredentialsFromFiles(c->opts, cfg->cluster_creds_file, NULL);
    if (s == NATS_OK && !strncmp(cfg->cluster_url, "tls://", 6)) {
        s = natsOptions_SetSecure(c->opts, true);
        if (s == NATS_OK && cfg->cluster_ca_file[0])
            s = natsOptions_LoadCATrustedCertificates(c->opts, cfg->cluster_ca_file);
        if (s == NATS_OK && cfg->cluster_cert_file[0])
            s = natsOptions_LoadCertificatesChain(c->opts, cfg->cluster_cert_file,
                                                  cfg->cluster_key_file);
    }
    if (s != NATS_OK)
        return vg_fail(err, errlen, VG_EINVAL, "cluster options: %s", nats_err(s));
    if ((s = natsConnection_Connect(&c->nc, c->opts)) != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "cannot connect to %s: %s", cfg->cluster_url,
                       nats_err(s));
    if ((s = natsConnection_JetStream(&c->js, c->nc, NULL)) != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "JetStream: %s", nats_err(s));

    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {SUBJECT};
    sc.Name = STREAM;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = js_WorkQueuePolicy;
    sc.Storage = js_FileStorage;
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    s = js_AddStream(&si, c->js, &sc, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK && jerr != JSStreamNameExistErr)
        return vg_fail(err, errlen, VG_EIO, "stream %s: %s (JetStream error %d)", STREAM,
                       nats_err(s), (int)jerr);

    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = STREAM;
    so.Config.Durable = CONSUMER;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = (int64_t)(cfg->cluster_ack_wait_s * 1e9);
    so.Config.MaxDeliver = -1;
    if ((s = js_PullSubscribe(&c->sub, c->js, SUBJECT, CONSUMER, NULL, &so, &jerr)) != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "consumer %s: %s (JetStream error %d)", CONSUMER,
                       nats_err(s), (int)jerr);

    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = BUCKET;
    kc.History = 1;
    kc.StorageType = js_FileStorage;
    kc.TTL = (int64_t)(VG_MAX(cfg->result_ttl_s, 1.0) * 1e9); /* nanoseconds in libnats 3.4 */
    if ((s = js_CreateKeyValue(&c->kv, c->js, &kc)) != NATS_OK &&
        (s = js_KeyValue(&c->kv, c->js, BUCKET)) != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "bucket %s: %s", BUCKET, nats_err(s));
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    if ((s = kvStore_WatchAll(&c->watcher, c->kv, &wo)) != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "watching bucket %s: %s", BUCKET, nats_err(s));
    return 0;
}

int vg_cluster_start(const vg_cluster_params *p, vg_cluster **out, char *err, size_t errlen)
{
    *out = NULL;
    vg_cluster *c = calloc(1, sizeof *c);
    if (!c)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    c->loop = p->loop;
    c->cfg = p->cfg;
    c->jobs = p->jobs;
    c->bus = p->bus;
    c->sink = -1;
    c->max_jobs = VG_MIN(p->cfg->cluster_max_jobs, MAX_HELD);
    c->ack_wait_s = p->cfg->cluster_ack_wait_s;
    if (p->cfg->cluster_node[0]) {
        snprintf(c->node, sizeof c->node, "%s", p->cfg->cluster_node);
    } else {
        char host[64] = "vigild";
        gethostname(host, sizeof host - 1);
        snprintf(c->node, sizeof c->node, "%s-%d", host, (int)getpid());
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    int rc = connect_all(c, err, errlen);
    if (rc < 0) {
        vg_cluster_free(c);
        return rc;
    }
    uv_async_init(c->loop, &c->async, on_async);
    c->async.data = c;
    uv_timer_init(c->loop, &c->prune);
    c->prune.data = c;
    uv_timer_start(&c->prune, on_prune, 60000, 60000);
    c->handles_open = 1;
    vg_jobs_set_done_hook(c->jobs, on_done, c);
    if ((c->sink = vg_bus_add_sink(c->bus, on_bus, c)) < 0) {
        vg_cluster_stop(c);
        *out = c; /* the caller frees it after the loop closed the handles */
        return vg_fail(err, errlen, VG_EBUSY, "the bus has no room for the cluster's sink");
    }
    if (pthread_create(&c->ops_th, NULL, ops_main, c) == 0) {
        c->threads = 1;
        if (pthread_create(&c->pull_th, NULL, pull_main, c) == 0) {
            c->threads = 2;
            if (pthread_create(&c->watch_th, NULL, watch_main, c) == 0)
                c->threads = 3;
        }
    }
    *out = c;
    if (c->threads < 3)
        return vg_fail(err, errlen, VG_ENOMEM, "cannot start the cluster's threads");
    vg_log(VG_LOG_NOTICE, MOD, "node %s in the cluster at %s (max %d jobs, ack wait %.1f s)",
           c->node, p->cfg->cluster_url, p->cfg->cluster_max_jobs, p->cfg->cluster_ack_wait_s);
    return 0;
}

void vg_cluster_drain(vg_cluster *c)
{
    if (!c)
        return;
    atomic_store(&c->draining, 1);
}

void vg_cluster_stop(vg_cluster *c)
{
    if (!c)
        return;
    atomic_store(&c->draining, 1);
    if (c->sink >= 0)
        vg_bus_remove_sink(c->bus, c->sink);
    c->sink = -1;
    if (c->handles_open) {
        uv_close((uv_handle_t *)&c->async, NULL);
        uv_close((uv_handle_t *)&c->prune, NULL);
        c->handles_open = 0;
    }
}

void vg_cluster_free(vg_cluster *c)
{
    if (!c)
        return;
    atomic_store(&c->stop, 1);
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->threads >= 1)
        pthread_join(c->ops_th, NULL);
    if (c->threads >= 2)
        pthread_join(c->pull_th, NULL);
    if (c->threads >= 3)
        pthread_join(c->watch_th, NULL);
    for (int i = 0; i < c->n_held; i++) {
        natsMsg_Nak(c->held[i].m, NULL); /* not finished here: another node runs it */
        natsMsg_Destroy(c->held[i].m);
    }
    if (c->watcher) {
        kvWatcher_Stop(c->watcher);
        kvWatcher_Destroy(c->watcher);
    }
    kvStore_Destroy(c->kv);
    natsSubscription_Destroy(c->sub);
    jsCtx_Destroy(c->js);
    if (c->nc) {
        natsConnection_FlushTimeout(c->nc, 2000);
        natsConnection_Close(c->nc);
        natsConnection_Destroy(c->nc);
    }
    natsOptions_Destroy(c->opts);
    nats_CloseAndWait(2000);
    for (inmsg *m = c->in; m;) {
        inmsg *n = m->next;
        free(m->data);
        free(m);
        m = n;
    }
    for (cmd *m = c->cmds; m;) {
        cmd *n = m->next;
        free(m->data);
        free(m->view);
        free(m);
        m = n;
    }
    for (int i = 0; i < CACHE_SLOTS; i++)
        for (centry *e = c->cache[i]; e;) {
            centry *n = e->next;
            free(e->view);
            free(e);
            e = n;
        }
    for (mine_job *m = c->mine; m;) {
        mine_job *n = m->next;
        free(m);
        m = n;
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
