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
 *  - The watch thread follows every update of the bucket and posts it to the loop's inbox; a
 *    second one does the same for the bucket of desired watches (vigil_watches), a third for the
 *    leases (vigil_leases: the owners `streams` shows).
 *  - Live streams: the loop owns the copy of the desired watches (`desired`), runs the reconciler
 *    (a timer every TTL/3) and starts and stops the streams. The lease thread runs the claims and
 *    releases the loop asks for (`lcmds`) and renews every lease every TTL/3; the lease table
 *    (`leases`: revision, trusted-until time, the stream's last JetStream sequence) is under `mu`
 *    and read by the loop (the fence before each record, via the stream manager's hook), the
 *    records thread and `info`. The records thread publishes the records the loop queues (`recs`)
 *    to VIGIL_EVENTS while the lease is trusted. `events` from JetStream and `watch` creates run on
 *    the operations thread; their replies are built on the loop (ev_query).
 *  - `cancel` of a job running elsewhere: the operations thread sends the request on
 *    vigil.cancel.<id> (or writes `cancelled` to the bucket when nobody answers); libnats' own
 *    thread delivers the requests of other nodes (subscription vigil.cancel.>) to the inbox, and
 *    the loop cancels the job if it runs it and queues the answer for the operations thread.
 *  - Inbox messages wake the loop through `async`; the loop never calls libnats, and no thread but
 *    the loop calls the job manager or the bus.
 */
#include "cluster.h"

#include "common.h"

#include <math.h>
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
#define EV_STREAM   "VIGIL_EVENTS"
#define EV_SUBJECTS "vigil.stream.>"
#define WATCHES     "vigil_watches"
#define LEASES      "vigil_leases"
#define MAX_LEASES  1024
#define REC_MAX     65536 /* records waiting for JetStream before new ones are dropped */
#define LEASE_VALID 0.8   /* of the TTL: how long after a write was sent the lease is trusted */
#define RETRY_MS    10000 /* a stream that failed to start here is not claimed again for this */

#define CANCEL_PFX  "vigil.cancel." /* + job id: a cancel of a job that runs on another node */
#define CANCEL_WAIT 2000            /* ms the asking node waits for the running node's reply */
#define FWD_PFX     "vigil.job." /* + job id + .state/.progress/.token: a job run on another node */

enum cmd_type {
    CMD_PUBLISH,
    CMD_STATE,
    CMD_FINISH,
    CMD_NAK,
    CMD_DESIRE,
    CMD_UNDESIRE,
    CMD_EVENTS,
    CMD_CANCEL,
    CMD_REPLY
};
enum in_type {
    IN_JOB,
    IN_ENTRY,
    IN_DESIRED,
    IN_CLAIMED,
    IN_CLAIM_FAIL,
    IN_LOST,
    IN_EVENTS,
    IN_CANCEL,
    IN_FORWARD,
    IN_LEASE
};
enum lcmd_type { LC_CLAIM, LC_RELEASE };

/* `events` answered from JetStream: filled by the operations thread, answered by the loop. */
typedef struct ev_query {
    void (*done)(char *out, size_t len, void *opaque);
    void *opaque;
    cJSON *reply; /* loop-owned */
    char id_json[VG_ID_MAX + 24];
    char name[VG_ID_MAX + 1];
    unsigned long long since;
    int limit;
    char *watch; /* a `watch` to record (the request, JSON); NULL: `events` or `cancel` */
    int cancel;  /* a `cancel` of the job q->name (answer: what happened, JSON) */
    char *answer;
    char *stored; /* watch: the bucket's value when the name was taken already */
    int answered; /* the loop answered already (shutdown) */
    /* Results (operations thread). */
    int found; /* the subject holds records */
    int failed;
    char err[256];
    char **lines;
    size_t n;
    unsigned long long last, oldest;
    int more;
    struct ev_query *next; /* the loop's list of queries in flight */
} ev_query;

/* A lease this node holds (under mu: the lease, records and loop threads read it). */
typedef struct lease {
    char name[VG_ID_MAX + 1];
    uint64_t rev;
    double valid_until;     /* monotonic ms: the lease is trusted until then */
    uint64_t last_subj_seq; /* JetStream sequence of the stream's last record (0: none) */
    int lost;
} lease;

typedef struct lcmd {
    enum lcmd_type type;
    char name[VG_ID_MAX + 1];
    struct lcmd *next;
} lcmd;

typedef struct rec {
    char name[VG_ID_MAX + 1];
    unsigned long long seq;
    char *line;
    size_t len;
    struct rec *next;
} rec;

/* Loop-owned: a desired watch (the bucket's value) and what this node does about it. */
typedef struct desired {
    char name[VG_ID_MAX + 1];
    char *req; /* the watch request (JSON) */
    int claiming, owned;
    double retry_at; /* monotonic ms: no claim before (a failed start here, a lease lost) */
    double free_at; /* monotonic ms: since when this node has seen it unclaimed or held elsewhere */
    char owner[128]; /* the node named by its lease key when it last changed (`streams`) */
    double owner_at; /* monotonic ms: then (a key not renewed for the TTL is gone) */
    struct desired *next;
} desired;

typedef struct cmd {
    enum cmd_type type;
    char id[VG_ID_MAX + 1];
    char *data;  /* PUBLISH: the request; STATE, FINISH: the job view (JSON); REPLY: what is
                    published (core NATS) on the subject in view; owned */
    char *view;  /* PUBLISH: the queued view */
    ev_query *q; /* EVENTS */
    struct cmd *next;
} cmd;

typedef struct inmsg {
    enum in_type type;
    char id[VG_ID_MAX + 1];
    char *data; /* JOB: the request; ENTRY: the bucket's value (NULL: deleted); CANCEL: the reply
                   subject */
    size_t len;
    uint64_t delivered; /* JOB: deliveries; CLAIMED: the stream's first sequence number */
    char kind[16];      /* FORWARD: state, progress or token */
    ev_query *q;        /* EVENTS */
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
    int accepted_here; /* this node queued it: its node's state/progress/token reach our bus */
    int fwd_seen;      /* messages of it came from the node running it */
    int fwd_tokens;    /* tokens of it that came so far */
    int done_held;     /* final, `done` held until its last tokens came (they travel apart) */
    int want_tokens;
    double done_by; /* monotonic ms: `done` goes then even if tokens are missing */
    double at_ms;   /* when it arrived, for result_ttl_s */
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
    vg_streams *streams;
    int sink;
    char node[128];
    int max_jobs;      /* cluster_max_jobs and cluster_ack_wait_s, copied at start (the threads */
    double ack_wait_s; /* read them; a reload rewrites the configuration) */
    uv_async_t async;
    uv_timer_t prune, reconcile;
    int handles_open;
    double ttl_ms; /* the leases bucket's TTL (cluster_lease_ttl_s when it was created) */

    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    kvStore *kv;
    kvStore *kv_watches, *kv_leases;
    natsSubscription *sub, *cancel_sub, *fwd_sub;
    kvWatcher *watcher, *dwatcher, *lwatcher;

    pthread_t pull_th, ops_th, watch_th, dwatch_th, lease_th, rec_th, lwatch_th;
    int threads;
    pthread_mutex_t mu;
    pthread_cond_t cv, lcv, rcv;
    atomic_int rec_stop; /* the records thread ends once its queue is empty (before stop) */
    lcmd *lcmds, *lcmds_tail;
    rec *recs, *recs_tail;
    size_t n_recs;
    lease leases[MAX_LEASES];
    int n_leases;
    atomic_ullong rec_published, rec_fenced, rec_dropped;
    atomic_int stop;     /* threads end (ops after its queue is empty) */
    atomic_int draining; /* no more pulls */
    cmd *cmds, *cmds_tail;
    inmsg *in, *in_tail;
    held_msg held[MAX_HELD];
    int n_held;

    /* Loop-owned. */
    centry *cache[CACHE_SLOTS];
    int n_cache;
    int n_done_held;
    mine_job *mine;
    desired *desired;
    desired *releasing; /* unwatched while running here: released once the stream is gone */
    ev_query *queries;
    int claiming;
    unsigned long long claims, lost;
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

/* Waits on cv (mu held) for at most ms milliseconds of the realtime clock pthread uses. */
static void cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, double ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(ms * 1e6);
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cv, mu, &ts);
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

/* Appends m to the operations thread's queue and wakes it; the queue owns m from here. */
static void cmd_push(vg_cluster *c, cmd *m)
{
    pthread_mutex_lock(&c->mu);
    if (c->cmds_tail)
        c->cmds_tail->next = m;
    else
        c->cmds = m;
    c->cmds_tail = m;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Queues an operation for job id (data and view, owned by the queue from here; freed on failure).
 */
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
    cmd_push(c, m);
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
            kvEntry *ke = NULL;
            if (kvStore_Get(&ke, c->kv, jid->valuestring) == NATS_OK &&
                view_final(kvEntry_Value(ke), (size_t)kvEntry_ValueLen(ke))) {
                /* Final in the cluster already (cancelled before it ran, or finished by a node
                 * that died before its ack): acked, not run. */
                vg_log(VG_LOG_INFO, MOD, "job %s: final in the cluster already; acked",
                       jid->valuestring);
                kvEntry_Destroy(ke);
                natsMsg_AckSync(m, NULL, NULL);
                natsMsg_Destroy(m);
                free(in);
                free(copy);
                cJSON_Delete(o);
                continue;
            }
            kvEntry_Destroy(ke);
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

/* ===================================================================================================
 * Live streams: threads. Records go to the JetStream stream VIGIL_EVENTS on the subject
 * vigil.stream.<name>.event (every record of the stream, whatever its kind), with Nats-Msg-Id
 * <name>:<seq> and the subject's last sequence expected (a stale owner's publish is refused by the
 * server); leases are keys of the bucket vigil_leases (TTL = the lease TTL), desired watches keys
 * of vigil_watches.
 */
static void ev_subject(const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "vigil.stream.%s.event", name);
}

/* The record's seq (0 when it has none). */
static unsigned long long rec_seq(const char *d, int len)
{
    cJSON *o = cJSON_ParseWithLength(d, (size_t)(len > 0 ? len : 0));
    const cJSON *sq = cJSON_GetObjectItemCaseSensitive(o, "seq");
    unsigned long long v = cJSON_IsNumber(sq) && sq->valuedouble >= 1 && sq->valuedouble < 9e15
                               ? (unsigned long long)sq->valuedouble
                               : 0;
    cJSON_Delete(o);
    return v;
}

/* Under mu. */
static lease *lease_find(vg_cluster *c, const char *name)
{
    for (int i = 0; i < c->n_leases; i++)
        if (!strcmp(c->leases[i].name, name))
            return &c->leases[i];
    return NULL;
}

/* Under mu. */
static void lease_forget(vg_cluster *c, const char *name)
{
    lease *l = lease_find(c, name);
    if (l)
        *l = c->leases[--c->n_leases];
}

/* Whether this node may publish a record of name now: it holds the lease and its last renewal
 * was sent less than LEASE_VALID x TTL ago (by the monotonic clock, which runs on while the
 * process is stopped). Any thread. */
static int lease_valid(vg_cluster *c, const char *name, uint64_t *last_subj_seq)
{
    pthread_mutex_lock(&c->mu);
    lease *l = lease_find(c, name);
    int ok = l && !l->lost && mono_ms() < l->valid_until;
    if (ok && last_subj_seq)
        *last_subj_seq = l->last_subj_seq;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static void post_name(vg_cluster *c, enum in_type t, const char *name, uint64_t n)
{
    inmsg *in = calloc(1, sizeof *in);
    if (!in) {
        vg_log(VG_LOG_ERR, MOD, "stream %s: out of memory telling the loop", name);
        return;
    }
    in->type = t;
    snprintf(in->id, sizeof in->id, "%s", name);
    in->delivered = n;
    post_in(c, in);
}

/* Lease thread: claims name (a create: fails while anyone holds it, or adopts a key that still
 * names this node), then reads the stream's last record in JetStream. */
static void lease_claim(vg_cluster *c, const char *name)
{
    kvEntry *e = NULL;
    uint64_t rev = 0;
    double t0 = mono_ms();
    natsStatus s = kvStore_Get(&e, c->kv_leases, name);
    if (s == NATS_OK) {
        int ours = kvEntry_ValueLen(e) == (int)strlen(c->node) &&
                   !memcmp(kvEntry_Value(e), c->node, strlen(c->node));
        uint64_t last = kvEntry_Revision(e);
        kvEntry_Destroy(e);
        /* A key naming this node is a lease of this node's earlier run (same cluster_node). */
        s = ours ? kvStore_Update(&rev, c->kv_leases, name, c->node, (int)strlen(c->node), last)
                 : NATS_ERR;
    } else if (s == NATS_NOT_FOUND) {
        s = kvStore_Create(&rev, c->kv_leases, name, c->node, (int)strlen(c->node));
    }
    if (s != NATS_OK) {
        post_name(c, IN_CLAIM_FAIL, name, 0);
        return;
    }
    char subj[VG_ID_MAX + 32];
    ev_subject(name, subj, sizeof subj);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    unsigned long long last_seq = 0;
    uint64_t lss = 0;
    s = js_GetLastMsg(&m, c->js, EV_STREAM, subj, NULL, &jerr);
    if (s == NATS_OK) {
        last_seq = rec_seq(natsMsg_GetData(m), natsMsg_GetDataLength(m));
        lss = natsMsg_GetSequence(m);
        natsMsg_Destroy(m);
    } else if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
        s = NATS_OK;
    }
    if (s != NATS_OK) {
        vg_log(VG_LOG_WARNING, MOD, "stream %s: cannot read its last record: %s", name,
               nats_err(s));
        kvStore_Delete(c->kv_leases, name);
        post_name(c, IN_CLAIM_FAIL, name, 0);
        return;
    }
    pthread_mutex_lock(&c->mu);
    lease *l = lease_find(c, name);
    if (!l && c->n_leases < MAX_LEASES)
        l = &c->leases[c->n_leases++];
    if (l) {
        snprintf(l->name, sizeof l->name, "%s", name);
        l->rev = rev;
        l->valid_until = t0 + c->ttl_ms * LEASE_VALID;
        l->last_subj_seq = lss;
        l->lost = 0;
    }
    pthread_mutex_unlock(&c->mu);
    if (!l) {
        kvStore_Delete(c->kv_leases, name);
        post_name(c, IN_CLAIM_FAIL, name, 0);
        return;
    }
    vg_log(VG_LOG_NOTICE, MOD, "stream %s: lease taken (revision %llu); records continue at %llu",
           name, (unsigned long long)rev, last_seq + 1);
    post_name(c, IN_CLAIMED, name, last_seq + 1);
}

/* Lease thread: lets go of name's lease (deletes the key if it is still this node's). */
static void lease_release(vg_cluster *c, const char *name)
{
    pthread_mutex_lock(&c->mu);
    lease *l = lease_find(c, name);
    int held = l && !l->lost;
    uint64_t rev = l ? l->rev : 0;
    lease_forget(c, name);
    pthread_mutex_unlock(&c->mu);
    if (!held)
        return;
    kvEntry *e = NULL;
    if (kvStore_Get(&e, c->kv_leases, name) == NATS_OK) {
        if (kvEntry_Revision(e) == rev)
            kvStore_Delete(c->kv_leases, name);
        kvEntry_Destroy(e);
    }
    vg_log(VG_LOG_INFO, MOD, "stream %s: lease released", name);
}

/* Lease thread: every lease held is renewed with a revision-checked update; a renewal that fails
 * or comes late loses the lease (the loop stops the stream). */
static void lease_renew_all(vg_cluster *c)
{
    char names[64][VG_ID_MAX + 1];
    uint64_t revs[64];
    int n = 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->n_leases && n < 64; i++)
        if (!c->leases[i].lost) {
            snprintf(names[n], sizeof names[n], "%s", c->leases[i].name);
            revs[n++] = c->leases[i].rev;
        }
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++) {
        double t0 = mono_ms();
        uint64_t rev = 0;
        natsStatus s = NATS_OK;
        int late = !lease_valid(c, names[i], NULL);
        if (!late)
            s = kvStore_Update(&rev, c->kv_leases, names[i], c->node, (int)strlen(c->node),
                               revs[i]);
        pthread_mutex_lock(&c->mu);
        lease *l = lease_find(c, names[i]);
        int lost = 0;
        if (l && !l->lost && l->rev == revs[i]) {
            if (!late && s == NATS_OK) {
                l->rev = rev;
                l->valid_until = t0 + c->ttl_ms * LEASE_VALID;
            } else {
                l->lost = lost = 1;
            }
        }
        pthread_mutex_unlock(&c->mu);
        if (lost) {
            vg_log(VG_LOG_WARNING, MOD, "stream %s: lease lost (%s)", names[i],
                   late ? "the renewal is late" : nats_err(s));
            post_name(c, IN_LOST, names[i], 0);
        }
    }
    if (c->n_leases > 64)
        vg_log(VG_LOG_WARNING, MOD, "more than 64 leases: only 64 renewed per round");
}

static void *lease_main(void *arg)
{
    vg_cluster *c = arg;
    double period = c->ttl_ms / 3.0;
    double next = mono_ms() + period;
    pthread_mutex_lock(&c->mu);
    while (!atomic_load(&c->stop)) {
        if (c->lcmds) {
            lcmd *m = c->lcmds;
            c->lcmds = m->next;
            if (!c->lcmds)
                c->lcmds_tail = NULL;
            pthread_mutex_unlock(&c->mu);
            if (m->type == LC_CLAIM)
                lease_claim(c, m->name);
            else
                lease_release(c, m->name);
            free(m);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        double now = mono_ms();
        if (now >= next) {
            pthread_mutex_unlock(&c->mu);
            lease_renew_all(c);
            next = mono_ms() + period;
            pthread_mutex_lock(&c->mu);
            continue;
        }
        cond_wait_ms(&c->lcv, &c->mu, VG_MIN(next - now, 200.0));
    }
    /* Stopping: the leases still held go back at once (another node claims the streams without
     * waiting for the TTL). */
    while (c->n_leases > 0) {
        char name[VG_ID_MAX + 1];
        snprintf(name, sizeof name, "%s", c->leases[0].name);
        pthread_mutex_unlock(&c->mu);
        lease_release(c, name);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Records thread: one record to JetStream, while the lease is valid. */
static void rec_publish(vg_cluster *c, rec *r)
{
    char subj[VG_ID_MAX + 32], msgid[VG_ID_MAX + 32];
    ev_subject(r->name, subj, sizeof subj);
    snprintf(msgid, sizeof msgid, "%s:%llu", r->name, r->seq);
    for (;;) {
        uint64_t lss = 0;
        if (!lease_valid(c, r->name, &lss)) {
            atomic_fetch_add(&c->rec_fenced, 1);
            vg_log(VG_LOG_INFO, MOD, "stream %s: record %llu not published: no valid lease",
                   r->name, r->seq);
            return;
        }
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = msgid;
        po.ExpectLastSubjectSeq = lss; /* 0: the subject's first record, nothing to check */
        jsErrCode jerr = 0;
        jsPubAck *pa = NULL;
        natsStatus s = js_Publish(&pa, c->js, subj, r->line, (int)r->len, &po, &jerr);
        if (s == NATS_OK) {
            pthread_mutex_lock(&c->mu);
            lease *l = lease_find(c, r->name);
            if (l && pa && pa->Sequence > l->last_subj_seq)
                l->last_subj_seq = pa->Sequence;
            pthread_mutex_unlock(&c->mu);
            jsPubAck_Destroy(pa);
            atomic_fetch_add(&c->rec_published, 1);
            return;
        }
        jsPubAck_Destroy(pa);
        if (jerr == JSStreamWrongLastSequenceErr) {
            /* Another node published records of this stream since: it owns it now. */
            int lost = 0;
            pthread_mutex_lock(&c->mu);
            lease *l = lease_find(c, r->name);
            if (l && !l->lost)
                l->lost = lost = 1;
            pthread_mutex_unlock(&c->mu);
            atomic_fetch_add(&c->rec_fenced, 1);
            vg_log(VG_LOG_WARNING, MOD,
                   "stream %s: record %llu refused by JetStream (another node published); "
                   "lease lost",
                   r->name, r->seq);
            if (lost)
                post_name(c, IN_LOST, r->name, 0);
            return;
        }
        vg_log(VG_LOG_DEBUG, MOD, "stream %s: record %llu: %s (retrying)", r->name, r->seq,
               nats_err(s));
        sleep_ms(200);
    }
}

static void *rec_main(void *arg)
{
    vg_cluster *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->recs) {
            rec *r = c->recs;
            c->recs = r->next;
            if (!c->recs)
                c->recs_tail = NULL;
            c->n_recs--;
            pthread_mutex_unlock(&c->mu);
            rec_publish(c, r);
            free(r->line);
            free(r);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        if (atomic_load(&c->rec_stop))
            break;
        pthread_cond_wait(&c->rcv, &c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Operations thread: the records of q->name after q->since, from JetStream. The subject's records
 * are in sequence order, so the first one after since is found by a binary search over the
 * stream's sequence numbers (direct gets of the subject's next record), then up to limit are read
 * forward. */
static natsStatus ev_get_next(vg_cluster *c, const char *subj, uint64_t from, natsMsg **m)
{
    jsDirectGetMsgOptions o;
    jsDirectGetMsgOptions_Init(&o);
    o.Sequence = from;
    o.NextBySubject = subj;
    return js_DirectGetMsg(m, c->js, EV_STREAM, NULL, &o);
}

static void ev_read(vg_cluster *c, ev_query *q)
{
    char subj[VG_ID_MAX + 32];
    ev_subject(q->name, subj, sizeof subj);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetLastMsg(&m, c->js, EV_STREAM, subj, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr)
        return; /* no records */
    if (s != NATS_OK) {
        q->failed = 1;
        snprintf(q->err, sizeof q->err, "JetStream: %s", nats_err(s));
        return;
    }
    q->found = 1;
    q->last = rec_seq(natsMsg_GetData(m), natsMsg_GetDataLength(m));
    uint64_t last_ss = natsMsg_GetSequence(m);
    natsMsg_Destroy(m);
    if ((s = ev_get_next(c, subj, 1, &m)) != NATS_OK)
        goto fail;
    q->oldest = rec_seq(natsMsg_GetData(m), natsMsg_GetDataLength(m));
    uint64_t lo = natsMsg_GetSequence(m), hi = last_ss + 1;
    natsMsg_Destroy(m);
    /* The smallest stream sequence whose next record of the subject has a seq above since. */
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if ((s = ev_get_next(c, subj, mid, &m)) != NATS_OK)
            goto fail;
        unsigned long long rs = rec_seq(natsMsg_GetData(m), natsMsg_GetDataLength(m));
        uint64_t got = natsMsg_GetSequence(m);
        natsMsg_Destroy(m);
        if (rs > q->since)
            hi = mid;
        else
            lo = got + 1;
    }
    size_t cap = q->limit > 0 ? (size_t)q->limit : 0;
    q->lines = calloc(cap ? cap : 1, sizeof *q->lines);
    if (!q->lines) {
        q->failed = 1;
        snprintf(q->err, sizeof q->err, "out of memory");
        return;
    }
    for (uint64_t at = lo; at <= last_ss;) {
        if ((s = ev_get_next(c, subj, at, &m)) != NATS_OK)
            goto fail;
        at = natsMsg_GetSequence(m) + 1;
        int len = natsMsg_GetDataLength(m);
        if (rec_seq(natsMsg_GetData(m), len) > q->since) {
            if (q->n >= cap) {
                q->more = 1;
                natsMsg_Destroy(m);
                break;
            }
            q->lines[q->n] = malloc((size_t)len + 1);
            if (q->lines[q->n]) {
                memcpy(q->lines[q->n], natsMsg_GetData(m), (size_t)len);
                q->lines[q->n++][len] = '\0';
            }
        }
        natsMsg_Destroy(m);
    }
    return;
fail:
    q->failed = 1;
    snprintf(q->err, sizeof q->err, "JetStream: %s", nats_err(s));
}

/* Operations thread: records q->watch as q->name's desired watch unless the name is taken (then
 * q->stored is the watch there). */
static void watch_create(vg_cluster *c, ev_query *q)
{
    uint64_t rev = 0;
    natsStatus s = kvStore_Create(&rev, c->kv_watches, q->name, q->watch, (int)strlen(q->watch));
    if (s == NATS_OK) {
        q->found = 1; /* created */
        return;
    }
    kvEntry *e = NULL;
    if (kvStore_Get(&e, c->kv_watches, q->name) == NATS_OK) {
        int n = kvEntry_ValueLen(e);
        if ((q->stored = malloc((size_t)n + 1))) {
            memcpy(q->stored, kvEntry_Value(e), (size_t)n);
            q->stored[n] = '\0';
        }
        kvEntry_Destroy(e);
        if (q->stored)
            return;
    }
    q->failed = 1;
    snprintf(q->err, sizeof q->err, "the cluster could not record the watch: %s", nats_err(s));
}

/* `cancel` of a job that does not run on this node (operations thread). The node running it
 * answers a request on vigil.cancel.<id> and cancels it there; when none answers, the job is
 * queued (or its node died): its bucket entry becomes `cancelled` with a revision-checked update
 * that never replaces a final state, and the node that pulls it acks it without running it. What
 * happened goes to q->answer (q NULL: nobody waits for it). */
static void cancel_remote(vg_cluster *c, const char *id, ev_query *q)
{
    char subj[sizeof CANCEL_PFX + VG_ID_MAX], why[300] = "";
    snprintf(subj, sizeof subj, CANCEL_PFX "%s", id);
    cJSON *a = NULL;
    for (int tries = 0; tries < 5 && !a && !atomic_load(&c->stop); tries++) {
        natsMsg *rep = NULL;
        natsStatus s = natsConnection_RequestString(&rep, c->nc, subj, c->node, CANCEL_WAIT);
        if (s == NATS_OK) {
            a = cJSON_ParseWithLength(natsMsg_GetData(rep), (size_t)natsMsg_GetDataLength(rep));
            natsMsg_Destroy(rep);
            if (a)
                break;
        }
        if (s != NATS_OK && s != NATS_TIMEOUT && s != NATS_NO_RESPONDERS) {
            snprintf(why, sizeof why, "%s", nats_err(s));
            sleep_ms(250);
            continue;
        }
        /* Nobody runs it: the bucket. */
        kvEntry *e = NULL;
        s = kvStore_Get(&e, c->kv, id);
        if (s == NATS_NOT_FOUND) {
            a = cJSON_CreateObject();
            cJSON_AddStringToObject(a, "where", "none");
            break;
        }
        if (s != NATS_OK) {
            snprintf(why, sizeof why, "%s", nats_err(s));
            sleep_ms(250);
            continue;
        }
        cJSON *v = cJSON_ParseWithLength(kvEntry_Value(e), (size_t)kvEntry_ValueLen(e));
        uint64_t last = kvEntry_Revision(e);
        kvEntry_Destroy(e);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(v, "state");
        const cJSON *nd = cJSON_GetObjectItemCaseSensitive(v, "node");
        if (!v || !cJSON_IsString(st)) {
            cJSON_Delete(v);
            snprintf(why, sizeof why, "the cluster's record of the job is not a job view");
            break;
        }
        if (is_final_state(st->valuestring)) {
            a = cJSON_CreateObject();
            cJSON_AddStringToObject(a, "state", st->valuestring);
            cJSON_AddStringToObject(a, "where", "final");
            if (cJSON_IsString(nd))
                cJSON_AddStringToObject(a, "node", nd->valuestring);
            cJSON_Delete(v);
            break;
        }
        cJSON_ReplaceItemInObject(v, "state", cJSON_CreateString("cancelled"));
        cJSON_DeleteItemFromObject(v, "stage");
        cJSON_DeleteItemFromObject(v, "percent");
        cJSON *er = cJSON_CreateObject();
        cJSON_AddStringToObject(er, "code", "cancelled");
        cJSON_AddStringToObject(er, "message", "cancelled before a node ran it");
        cJSON_ReplaceItemInObject(v, "error", er);
        cJSON_DeleteItemFromObject(v, "cancelled_by");
        cJSON_AddStringToObject(v, "cancelled_by", c->node);
        cJSON_DeleteItemFromObject(v, "finished");
        cJSON_AddNumberToObject(v, "finished", unix_now());
        char *t = cJSON_PrintUnformatted(v);
        cJSON_Delete(v);
        uint64_t rev = 0;
        s = t ? kvStore_Update(&rev, c->kv, id, t, (int)strlen(t), last) : NATS_NO_MEMORY;
        free(t);
        if (s == NATS_OK) {
            vg_log(VG_LOG_NOTICE, MOD, "job %s: cancelled in the cluster before it ran", id);
            a = cJSON_CreateObject();
            cJSON_AddStringToObject(a, "state", "cancelled");
            cJSON_AddStringToObject(a, "where", "queued");
            break;
        }
        /* Another write came first (a node started it): ask again. */
        snprintf(why, sizeof why, "%s", nats_err(s));
    }
    if (!q) {
        if (!a)
            vg_log(VG_LOG_WARNING, MOD, "job %s: cancel: %s", id, why[0] ? why : "no answer");
        cJSON_Delete(a);
        return;
    }
    if (!a) {
        q->failed = 1;
        snprintf(q->err, sizeof q->err, "the cluster could not cancel job '%s': %s", id,
                 why[0] ? why : "no answer");
        return;
    }
    q->answer = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    if (!q->answer) {
        q->failed = 1;
        snprintf(q->err, sizeof q->err, "out of memory");
    }
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
    case CMD_DESIRE: {
        uint64_t rev = 0;
        natsStatus s;
        for (int tries = 0; tries < 8; tries++) {
            if ((s = kvStore_Put(&rev, c->kv_watches, m->id, m->data, (int)strlen(m->data))) ==
                NATS_OK)
                break;
            sleep_ms(250);
        }
        if (s != NATS_OK)
            vg_log(VG_LOG_ERR, MOD, "stream %s: cannot record the watch in the cluster: %s", m->id,
                   nats_err(s));
        break;
    }
    case CMD_UNDESIRE: {
        natsStatus s;
        for (int tries = 0; tries < 8; tries++) {
            if ((s = kvStore_Delete(c->kv_watches, m->id)) == NATS_OK)
                break;
            sleep_ms(250);
        }
        if (s != NATS_OK)
            vg_log(VG_LOG_ERR, MOD, "stream %s: cannot remove the watch from the cluster: %s",
                   m->id, nats_err(s));
        break;
    }
    case CMD_EVENTS: {
        if (m->q->watch)
            watch_create(c, m->q);
        else
            ev_read(c, m->q);
        inmsg *in = calloc(1, sizeof *in);
        if (!in) {
            vg_log(VG_LOG_ERR, MOD, "out of memory answering events of %s", m->q->name);
            m->q->failed = 1;
        }
        /* The query must come back to the loop (it owns the reply): without memory for the
         * message the loop finds it at shutdown. */
        if (in) {
            in->type = IN_EVENTS;
            in->q = m->q;
            post_in(c, in);
        }
        m->q = NULL;
        break;
    }
    case CMD_CANCEL:
        cancel_remote(c, m->id, m->q);
        if (m->q) {
            inmsg *in = calloc(1, sizeof *in);
            if (in) {
                in->type = IN_EVENTS;
                in->q = m->q;
                post_in(c, in);
            } else {
                vg_log(VG_LOG_ERR, MOD, "out of memory answering the cancel of %s", m->id);
            }
            m->q = NULL;
        }
        break;
    case CMD_REPLY:
        natsConnection_PublishString(c->nc, m->view, m->data);
        break;
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
        cond_wait_ms(&c->cv, &c->mu, VG_MIN(next - now, 200.0));
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Follows a bucket: every update is posted to the loop as type t (data NULL: deleted). */
static void watch_loop(vg_cluster *c, kvWatcher *w, enum in_type t)
{
    while (!atomic_load(&c->stop)) {
        kvEntry *e = NULL;
        natsStatus s = kvWatcher_Next(&e, w, 500);
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
            in->type = t;
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
}

static void *watch_main(void *arg)
{
    vg_cluster *c = arg;
    watch_loop(c, c->watcher, IN_ENTRY);
    return NULL;
}

static void *dwatch_main(void *arg)
{
    vg_cluster *c = arg;
    watch_loop(c, c->dwatcher, IN_DESIRED);
    return NULL;
}

static void *lwatch_main(void *arg)
{
    vg_cluster *c = arg;
    watch_loop(c, c->lwatcher, IN_LEASE);
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
            if (e->done_held)
                c->n_done_held--;
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

/* The result, once per job id on every node, whatever node ran it (the job manager publishes no
 * `done` in cluster mode). */
static void publish_done(vg_cluster *c, centry *e)
{
    if (e->done_held) {
        e->done_held = 0;
        c->n_done_held--;
    }
    char topic[VG_ID_MAX + 16];
    snprintf(topic, sizeof topic, "job/%s/done", e->id);
    vg_bus_publish(c->bus, topic, e->view, strlen(e->view));
}

/* Held `done`s whose tokens did not all come in time (a forwarded message lost). */
static void flush_done(vg_cluster *c)
{
    double now = mono_ms();
    for (int i = 0; i < CACHE_SLOTS && c->n_done_held > 0; i++)
        for (centry *e = c->cache[i]; e; e = e->next)
            if (e->done_held && now >= e->done_by)
                publish_done(c, e);
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
    if (mine_find(c, in->id)) {
        cJSON *v = cJSON_Parse(e->view);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(v, "state");
        if (cJSON_IsString(st) && !strcmp(st->valuestring, "cancelled")) {
            /* Cancelled in the cluster while it runs here (a cancel that found no node running
             * it just before this node pulled it): stop running it; the record is kept. */
            vg_request r;
            memset(&r, 0, sizeof r);
            r.op = VG_OP_CANCEL;
            snprintf(r.job, sizeof r.job, "%s", in->id);
            cJSON *o = cJSON_CreateObject();
            const char *wire = NULL;
            char err[256];
            if (o)
                vg_jobs_handle(c->jobs, &r, o, &wire, err, sizeof err);
            cJSON_Delete(o);
            vg_log(VG_LOG_NOTICE, MOD, "job %s: cancelled in the cluster; stopped here", in->id);
        }
        cJSON_Delete(v);
    }
    if (e->accepted_here && e->fwd_seen) {
        /* Run on another node, its tokens forwarded here: the last ones may still be on their
         * way (another subscription, another libnats thread); `done` comes after them. */
        cJSON *v = cJSON_Parse(e->view);
        const cJSON *nt = cJSON_GetObjectItemCaseSensitive(v, "n_tokens");
        int want = cJSON_IsNumber(nt) ? nt->valueint : 0;
        cJSON_Delete(v);
        if (e->fwd_tokens < want) {
            e->done_held = 1;
            e->want_tokens = want;
            e->done_by = mono_ms() + 1000;
            c->n_done_held++;
            return;
        }
    }
    publish_done(c, e);
}

/* ===================================================================================================
 * Live streams: the loop side (the reconciler). The desired watches are a copy of the bucket
 * vigil_watches (fed by its watcher); each tick (a third of the lease TTL) the loop asks the lease
 * thread to claim desired streams that run nowhere here, up to max_streams; a claimed stream is
 * started with the stream manager, continuing the sequence numbers found in JetStream; a lost
 * lease stops it; a stream no longer desired is stopped and, once gone, its lease released.
 */
static desired *desired_find(vg_cluster *c, const char *name)
{
    for (desired *d = c->desired; d; d = d->next)
        if (!strcmp(d->name, name))
            return d;
    return NULL;
}

/* Takes req. NULL when memory ran out (req freed). */
static desired *desired_set(vg_cluster *c, const char *name, char *req)
{
    desired *d = desired_find(c, name);
    if (!d) {
        if (!(d = calloc(1, sizeof *d))) {
            free(req);
            return NULL;
        }
        snprintf(d->name, sizeof d->name, "%s", name);
        d->free_at = mono_ms();
        d->next = c->desired;
        c->desired = d;
    }
    free(d->req);
    d->req = req;
    return d;
}

static void desired_remove(vg_cluster *c, const char *name)
{
    for (desired **p = &c->desired; *p; p = &(*p)->next)
        if (!strcmp((*p)->name, name)) {
            desired *d = *p;
            *p = d->next;
            free(d->req);
            d->req = NULL;
            if (d->owned) {
                /* Stopped here now (its `ended` record is published under the lease); the
                 * reconciler releases the lease once the stream is gone. */
                vg_streams_stop(c->streams, d->name);
                d->next = c->releasing;
                c->releasing = d;
            } else {
                free(d);
            }
            return;
        }
}

static void post_lcmd(vg_cluster *c, enum lcmd_type t, const char *name)
{
    lcmd *m = calloc(1, sizeof *m);
    if (!m) {
        vg_log(VG_LOG_ERR, MOD, "stream %s: out of memory queueing a lease operation", name);
        return;
    }
    m->type = t;
    snprintf(m->name, sizeof m->name, "%s", name);
    pthread_mutex_lock(&c->mu);
    if (c->lcmds_tail)
        c->lcmds_tail->next = m;
    else
        c->lcmds = m;
    c->lcmds_tail = m;
    pthread_cond_signal(&c->lcv);
    pthread_mutex_unlock(&c->mu);
}

static void reconcile(vg_cluster *c)
{
    if (atomic_load(&c->draining))
        return;
    /* Streams unwatched while they ran here: the lease goes once the local stream is gone. First:
     * a watch of the same name made since is claimed after the release (the lease thread runs
     * them in order), never released after its claim. */
    for (desired **p = &c->releasing; *p;) {
        desired *d = *p;
        if (vg_streams_has(c->streams, d->name)) {
            p = &d->next;
            continue;
        }
        post_lcmd(c, LC_RELEASE, d->name);
        *p = d->next;
        free(d);
    }
    double now = mono_ms();
    int owned = 0;
    for (desired *d = c->desired; d; d = d->next)
        owned += d->owned;
    int cap = c->cfg->max_streams;
    /* Spreading: a node running k streams waits k ticks before it claims a stream it has seen
     * free or held elsewhere, so that a node running fewer gets it first (every node still claims
     * it eventually, up to max_streams). */
    double tick = c->ttl_ms / 3.0;
    for (desired *d = c->desired; d && owned + c->claiming < cap; d = d->next) {
        if (d->owned || d->claiming || now < d->retry_at || now < d->free_at + owned * tick ||
            vg_streams_has(c->streams, d->name))
            continue;
        d->claiming = 1;
        c->claiming++;
        post_lcmd(c, LC_CLAIM, d->name);
    }
}

static void check_leases(vg_cluster *c);

static void on_reconcile(uv_timer_t *t)
{
    check_leases(t->data);
    reconcile(t->data);
    flush_done(t->data);
}

static void on_desired(vg_cluster *c, inmsg *in)
{
    if (!in->data) {
        desired_remove(c, in->id);
    } else {
        char *req = in->data;
        in->data = NULL;
        desired_set(c, in->id, req);
    }
    reconcile(c);
}

/* The lease of in->id is this node's: start the stream, its records continuing at
 * in->delivered. */
static void on_claimed(vg_cluster *c, inmsg *in)
{
    desired *d = desired_find(c, in->id);
    if (d && d->claiming) {
        d->claiming = 0;
        c->claiming--;
    }
    if (!d || !d->req || atomic_load(&c->draining)) {
        post_lcmd(c, LC_RELEASE, in->id);
        return;
    }
    vg_proto_limits lim = {c->cfg->max_message_size, c->cfg->max_new_tokens_limit,
                           c->cfg->job_deadline_s, c->cfg->max_frames_limit,
                           c->cfg->max_pixels_limit};
    vg_request r;
    const char *wire = NULL;
    char err[768];
    int rc = vg_proto_parse(d->req, strlen(d->req), &lim, &r, &wire, err, sizeof err);
    if (rc == 0 && r.op != VG_OP_WATCH) {
        rc = VG_EINVAL;
        snprintf(err, sizeof err, "the desired watch is not a watch request");
    }
    cJSON *reply = rc == 0 ? cJSON_CreateObject() : NULL;
    if (rc == 0) {
        snprintf(r.name, sizeof r.name, "%s", d->name);
        rc = reply
                 ? vg_streams_watch_at(c->streams, &r, in->delivered, reply, &wire, err, sizeof err)
                 : VG_ENOMEM;
    }
    vg_request_clear(&r);
    cJSON_Delete(reply);
    if (rc < 0) {
        vg_log(VG_LOG_WARNING, MOD, "stream %s: cannot run here: %s (retrying in %d s)", d->name,
               err, RETRY_MS / 1000);
        d->retry_at = mono_ms() + RETRY_MS;
        post_lcmd(c, LC_RELEASE, d->name);
        return;
    }
    d->owned = 1;
    c->claims++;
    vg_log(VG_LOG_NOTICE, MOD, "stream %s: running here (first record %llu)", d->name,
           (unsigned long long)in->delivered);
}

static void on_claim_fail(vg_cluster *c, inmsg *in)
{
    desired *d = desired_find(c, in->id);
    if (d && d->claiming) {
        d->claiming = 0;
        c->claiming--;
        d->free_at = mono_ms(); /* held elsewhere: the wait starts again */
        /* To the end of the list: the reconciler tries the others first (with one free slot, a
         * node would otherwise retry the first streams held elsewhere every tick and never reach
         * a free one further down). */
        desired **p = &c->desired;
        while (*p != d)
            p = &(*p)->next;
        *p = d->next;
        d->next = NULL;
        for (p = &c->desired; *p; p = &(*p)->next)
            ;
        *p = d;
    }
}

/* The lease of in->id is gone: the stream stops here at once (publish() refuses its records
 * already: the lease is marked lost). */
static void lose(vg_cluster *c, const char *name)
{
    c->lost++;
    vg_streams_stop(c->streams, name);
    desired *d = desired_find(c, name);
    if (d) {
        d->owned = 0;
        d->free_at = mono_ms();
        d->retry_at = mono_ms() + c->ttl_ms; /* another node claims it meanwhile */
    }
    for (desired **p = &c->releasing; *p; p = &(*p)->next)
        if (!strcmp((*p)->name, name)) {
            desired *x = *p;
            *p = x->next;
            free(x);
            break;
        }
    post_lcmd(c, LC_RELEASE, name); /* forgets it (the key is not this node's any more) */
}

static void on_lost(vg_cluster *c, inmsg *in)
{
    lose(c, in->id);
}

/* The loop's own look at the leases of the streams it runs (each tick): a lease whose renewal is
 * late (the lease thread is stuck on an unreachable server, say) is lost now, not when that call
 * returns. A lease already marked lost has its IN_LOST on the way. */
static void check_leases(vg_cluster *c)
{
    double now = mono_ms();
    for (desired *d = c->desired; d; d = d->next) {
        if (!d->owned)
            continue;
        pthread_mutex_lock(&c->mu);
        lease *l = lease_find(c, d->name);
        int late = l && !l->lost && now >= l->valid_until;
        if (late)
            l->lost = 1;
        pthread_mutex_unlock(&c->mu);
        if (late) {
            vg_log(VG_LOG_WARNING, MOD, "stream %s: lease lost (its renewal is late)", d->name);
            lose(c, d->name);
        }
    }
}

static int watch_same(const char *x, const char *y);
static void watch_reply(vg_cluster *c, const char *name, const char *req, int existing,
                        cJSON *reply);

static void ev_query_free(ev_query *q)
{
    if (!q)
        return;
    for (size_t i = 0; i < q->n; i++)
        free(q->lines[i]);
    free(q->lines);
    free(q->watch);
    free(q->stored);
    free(q->answer);
    cJSON_Delete(q->reply);
    free(q);
}

static void ev_unlink(vg_cluster *c, ev_query *q)
{
    for (ev_query **p = &c->queries; *p; p = &(*p)->next)
        if (*p == q) {
            *p = q->next;
            return;
        }
}

/* A query came back from the operations thread: answered here (or from the local log when
 * JetStream has no record of the stream). */
static void on_events(vg_cluster *c, inmsg *in)
{
    ev_query *q = in->q;
    ev_unlink(c, q);
    if (q->answered) {
        ev_query_free(q);
        return;
    }
    char *out = NULL;
    size_t len = 0;
    if (q->failed) {
        out = vg_proto_error_reply(q->id_json, VG_WIRE_INTERNAL, q->err, &len);
    } else if (q->cancel) {
        cJSON *a = cJSON_Parse(q->answer);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(a, "state");
        if (!cJSON_IsString(st)) {
            char msg[VG_ID_MAX + 80];
            snprintf(msg, sizeof msg, "no job '%s' (finished results are kept for result_ttl_s)",
                     q->name);
            out = vg_proto_error_reply(q->id_json, VG_WIRE_NOT_FOUND, msg, &len);
        } else {
            cJSON_AddStringToObject(q->reply, "job", q->name);
            for (cJSON *it = a->child; it; it = it->next)
                cJSON_AddItemToObject(q->reply, it->string, cJSON_Duplicate(it, 1));
            out = cJSON_PrintUnformatted(q->reply);
            len = out ? strlen(out) : 0;
        }
        cJSON_Delete(a);
    } else if (q->watch) {
        const char *have = q->stored ? q->stored : q->watch;
        if (q->stored && !watch_same(q->stored, q->watch)) {
            char msg[VG_ID_MAX + 96];
            snprintf(msg, sizeof msg,
                     "stream '%s' already exists for another URL or questions (unwatch it first)",
                     q->name);
            out = vg_proto_error_reply(q->id_json, VG_WIRE_CONFLICT, msg, &len);
        } else {
            char *copy = strdup(have);
            if (copy)
                desired_set(c, q->name, copy);
            if (!q->stored)
                vg_log(VG_LOG_INFO, MOD, "stream %s: watch recorded in the cluster", q->name);
            watch_reply(c, q->name, have, q->stored != NULL, q->reply);
            out = cJSON_PrintUnformatted(q->reply);
            len = out ? strlen(out) : 0;
            reconcile(c);
        }
    } else if (!q->found && !desired_find(c, q->name)) {
        /* Not in the cluster: maybe a log of this node's single-node days. */
        vg_request r;
        memset(&r, 0, sizeof r);
        r.op = VG_OP_EVENTS;
        snprintf(r.name, sizeof r.name, "%s", q->name);
        snprintf(r.id_json, sizeof r.id_json, "%s", q->id_json);
        r.since = (double)q->since;
        r.limit = q->limit;
        if (vg_streams_events_from_log(c->streams, &r, q->reply, q->done, q->opaque) > 0) {
            q->reply = NULL; /* taken */
            ev_query_free(q);
            return;
        }
        char msg[VG_ID_MAX + 32];
        snprintf(msg, sizeof msg, "no stream '%s'", q->name);
        out = vg_proto_error_reply(q->id_json, VG_WIRE_NOT_FOUND, msg, &len);
    } else {
        cJSON *o = q->reply;
        vg_streams_events_payload(o, q->name, desired_find(c, q->name) != NULL, q->lines, q->n,
                                  q->last, q->more, q->found && q->oldest > q->since + 1);
        cJSON_AddStringToObject(o, "source", "cluster");
        out = cJSON_PrintUnformatted(o);
        len = out ? strlen(out) : 0;
    }
    q->done(out, len, q->opaque);
    ev_query_free(q);
}

/* The stream manager's hooks (streams.h). */
static int hook_may_publish(const char *name, void *opaque)
{
    return lease_valid(opaque, name, NULL);
}

static void hook_on_record(const char *name, unsigned long long seq, const char *line, size_t len,
                           void *opaque)
{
    vg_cluster *c = opaque;
    rec *r = calloc(1, sizeof *r);
    char *copy = malloc(len + 1);
    pthread_mutex_lock(&c->mu);
    int full = c->n_recs >= REC_MAX;
    pthread_mutex_unlock(&c->mu);
    if (!r || !copy || full) {
        free(r);
        free(copy);
        atomic_fetch_add(&c->rec_dropped, 1);
        vg_log(VG_LOG_WARNING, MOD, "stream %s: record %llu not sent to JetStream (%s)", name, seq,
               full ? "too many waiting" : "out of memory");
        return;
    }
    memcpy(copy, line, len);
    copy[len] = '\0';
    snprintf(r->name, sizeof r->name, "%s", name);
    r->seq = seq;
    r->line = copy;
    r->len = len;
    pthread_mutex_lock(&c->mu);
    if (c->recs_tail)
        c->recs_tail->next = r;
    else
        c->recs = r;
    c->recs_tail = r;
    c->n_recs++;
    pthread_cond_signal(&c->rcv);
    pthread_mutex_unlock(&c->mu);
}

/* A cancel from another node (vigil.cancel.<id>): the node running the job cancels it and
 * answers; the others stay silent. */
static void on_cancel(vg_cluster *c, inmsg *in)
{
    if (!in->data || !mine_find(c, in->id))
        return;
    vg_request r;
    memset(&r, 0, sizeof r);
    r.op = VG_OP_CANCEL;
    snprintf(r.job, sizeof r.job, "%s", in->id);
    cJSON *o = cJSON_CreateObject();
    const char *wire = NULL;
    char err[256];
    if (!o || vg_jobs_handle(c->jobs, &r, o, &wire, err, sizeof err) != 0) {
        cJSON_Delete(o);
        return;
    }
    cJSON_DeleteItemFromObject(o, "job");
    cJSON_AddStringToObject(o, "where", "running");
    cJSON_AddStringToObject(o, "node", c->node);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    vg_log(VG_LOG_NOTICE, MOD, "job %s: cancelled at the request of another node", in->id);
    char *subj = in->data;
    in->data = NULL;
    if (s)
        post_cmd(c, CMD_REPLY, in->id, s, subj);
    else
        free(subj);
}

/* libnats' thread: a message on vigil.cancel.> goes to the loop. */
static void on_cancel_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    vg_cluster *c = closure;
    const char *subj = natsMsg_GetSubject(msg), *reply = natsMsg_GetReply(msg);
    const char *id = subj + strlen(CANCEL_PFX);
    if (!atomic_load(&c->draining) && reply && reply[0] &&
        !strncmp(subj, CANCEL_PFX, strlen(CANCEL_PFX)) && vg_proto_valid_job_id(id)) {
        inmsg *in = calloc(1, sizeof *in);
        char *r = strdup(reply);
        if (in && r) {
            in->type = IN_CANCEL;
            snprintf(in->id, sizeof in->id, "%s", id);
            in->data = r;
            post_in(c, in);
        } else {
            free(in);
            free(r);
        }
    }
    natsMsg_Destroy(msg);
}

/* libnats' thread: vigil.job.<id>.<kind> from the node running a job goes to the loop. */
static void on_fwd_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    vg_cluster *c = closure;
    const char *subj = natsMsg_GetSubject(msg);
    size_t pl = strlen(FWD_PFX), n = strlen(subj);
    const char *dot = strrchr(subj, '.');
    if (!atomic_load(&c->draining) && n > pl && !strncmp(subj, FWD_PFX, pl) && dot &&
        dot > subj + pl && (size_t)(dot - subj - pl) <= VG_ID_MAX &&
        (!strcmp(dot + 1, "state") || !strcmp(dot + 1, "progress") || !strcmp(dot + 1, "token"))) {
        inmsg *in = calloc(1, sizeof *in);
        int dl = natsMsg_GetDataLength(msg);
        char *d = malloc((size_t)dl + 1);
        if (in && d) {
            in->type = IN_FORWARD;
            memcpy(in->id, subj + pl, (size_t)(dot - subj - pl));
            in->id[dot - subj - pl] = '\0';
            snprintf(in->kind, sizeof in->kind, "%s", dot + 1);
            memcpy(d, natsMsg_GetData(msg), (size_t)dl);
            d[dl] = '\0';
            in->data = d;
            in->len = (size_t)dl;
            if (vg_proto_valid_job_id(in->id)) {
                post_in(c, in);
                in = NULL;
                d = NULL;
            }
        }
        free(in);
        free(d);
    }
    natsMsg_Destroy(msg);
}

/* A job's state/progress/token from the node that runs it: on this node's bus when this node
 * accepted the job and it is not final (its `done` comes from the bucket). */
static void on_forward(vg_cluster *c, inmsg *in)
{
    centry *e = cache_find(c, in->id);
    if (!e || !e->accepted_here || (e->final && !e->done_held) || mine_find(c, in->id) || !in->data)
        return;
    e->fwd_seen = 1;
    char topic[VG_ID_MAX + 32];
    snprintf(topic, sizeof topic, "job/%s/%s", in->id, in->kind);
    vg_bus_publish(c->bus, topic, in->data, in->len);
    if (!strcmp(in->kind, "token"))
        e->fwd_tokens++;
    if (e->done_held && e->fwd_tokens >= e->want_tokens)
        publish_done(c, e);
}

/* An update of the leases bucket: who runs the stream (for `streams`). */
static void on_lease(vg_cluster *c, inmsg *in)
{
    desired *d = desired_find(c, in->id);
    if (!d)
        return;
    if (in->data && in->len < sizeof d->owner) {
        snprintf(d->owner, sizeof d->owner, "%s", in->data);
        d->owner_at = mono_ms();
    } else {
        d->owner[0] = '\0';
    }
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
        switch (m->type) {
        case IN_JOB:
            on_job(c, m);
            break;
        case IN_ENTRY:
            on_entry(c, m);
            break;
        case IN_DESIRED:
            on_desired(c, m);
            break;
        case IN_CLAIMED:
            on_claimed(c, m);
            break;
        case IN_CLAIM_FAIL:
            on_claim_fail(c, m);
            break;
        case IN_LOST:
            on_lost(c, m);
            break;
        case IN_EVENTS:
            on_events(c, m);
            break;
        case IN_CANCEL:
            on_cancel(c, m);
            break;
        case IN_FORWARD:
            on_forward(c, m);
            break;
        case IN_LEASE:
            on_lease(c, m);
            break;
        }
        free(m->data);
        free(m);
        m = next;
    }
}

/* The bus sink: `state` records of the cluster jobs this node runs go to the bucket, and their
 * state/progress/token messages to the node that accepted them (vigil.job.<id>.<kind>). */
static void on_bus(const char *topic, const char *payload, size_t len, void *opaque)
{
    vg_cluster *c = opaque;
    if (strncmp(topic, "job/", 4))
        return;
    const char *id0 = topic + 4, *slash = strchr(id0, '/');
    if (!slash || (size_t)(slash - id0) > VG_ID_MAX)
        return;
    char id[VG_ID_MAX + 1];
    memcpy(id, id0, (size_t)(slash - id0));
    id[slash - id0] = '\0';
    if (!mine_find(c, id))
        return;
    const char *kind = slash + 1;
    centry *e = cache_find(c, id);
    if (!(e && e->accepted_here) &&
        (!strcmp(kind, "state") || !strcmp(kind, "progress") || !strcmp(kind, "token"))) {
        /* To the node that accepted it (its clients subscribed there): core NATS, best effort. */
        char *subj = malloc(sizeof FWD_PFX + VG_ID_MAX + 16), *pl = malloc(len + 1);
        if (subj && pl) {
            snprintf(subj, sizeof FWD_PFX + VG_ID_MAX + 16, FWD_PFX "%s.%s", id, kind);
            memcpy(pl, payload, len);
            pl[len] = '\0';
            post_cmd(c, CMD_REPLY, id, pl, subj);
        } else {
            free(subj);
            free(pl);
        }
    }
    if (strcmp(kind, "state"))
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
                if (e->done_held)
                    publish_done(c, e);
                *p = e->next;
                free(e->view);
                free(e);
                c->n_cache--;
            } else {
                p = &e->next;
            }
        }
}

/* Whether two watch requests (JSON) ask the same: the same URL and the same questions. */
static int watch_same(const char *x, const char *y)
{
    cJSON *o[2] = {cJSON_Parse(x), cJSON_Parse(y)};
    const cJSON *q[2][VG_STREAM_MAX_QUESTIONS];
    int n[2] = {0, 0};
    int same = o[0] && o[1];
    for (int k = 0; k < 2 && same; k++) {
        const cJSON *qs = cJSON_GetObjectItemCaseSensitive(o[k], "questions");
        const cJSON *q1 = cJSON_GetObjectItemCaseSensitive(o[k], "question");
        const cJSON *it;
        if (cJSON_IsArray(qs)) {
            cJSON_ArrayForEach(it, qs)
            {
                if (n[k] < VG_STREAM_MAX_QUESTIONS)
                    q[k][n[k]++] = it;
            }
        } else if (q1) {
            q[k][n[k]++] = q1;
        }
    }
    if (same) {
        const cJSON *u0 = cJSON_GetObjectItemCaseSensitive(o[0], "url");
        const cJSON *u1 = cJSON_GetObjectItemCaseSensitive(o[1], "url");
        same = cJSON_IsString(u0) && cJSON_IsString(u1) &&
               !strcmp(u0->valuestring, u1->valuestring) && n[0] == n[1];
        for (int i = 0; same && i < n[0]; i++)
            same = cJSON_IsString(q[0][i]) && cJSON_IsString(q[1][i]) &&
                   !strcmp(q[0][i]->valuestring, q[1][i]->valuestring);
    }
    cJSON_Delete(o[0]);
    cJSON_Delete(o[1]);
    return same;
}

/* The `watch` reply's stream object. */
static void watch_reply(vg_cluster *c, const char *name, const char *req, int existing,
                        cJSON *reply)
{
    cJSON *rq = cJSON_Parse(req);
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(rq, "url");
    char shown[VG_VIDEO_MAX + 8] = "";
    if (cJSON_IsString(u))
        vg_url_redact(u->valuestring, shown, sizeof shown);
    cJSON *o = cJSON_AddObjectToObject(reply, "stream");
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddStringToObject(o, "url", shown);
    cJSON *qs = cJSON_GetObjectItemCaseSensitive(rq, "questions");
    cJSON *q1 = cJSON_GetObjectItemCaseSensitive(rq, "question");
    if (cJSON_IsArray(qs)) {
        cJSON_AddItemToObject(o, "questions", cJSON_DetachItemViaPointer(rq, qs));
    } else {
        cJSON *arr = cJSON_AddArrayToObject(o, "questions");
        if (q1)
            cJSON_AddItemToArray(arr, cJSON_DetachItemViaPointer(rq, q1));
    }
    cJSON_Delete(rq);
    cJSON_AddStringToObject(o, "state",
                            vg_streams_has(c->streams, name) ? "running_here" : "queued");
    char topic[VG_ID_MAX + 16];
    snprintf(topic, sizeof topic, "stream/%s/", name);
    cJSON_AddStringToObject(o, "topic", topic);
    cJSON_AddBoolToObject(reply, "existing", existing);
}

/* Checks a `watch` in cluster mode and names it. Returns 1 when the cluster has a watch of that
 * name already (*d set: its request is d->req), 0 for a new one (*json: the request to record, a
 * malloc'd string: without its id, with its name), or a negative code with *wire and err. */
static int watch_prepare(vg_cluster *c, const vg_request *r, const char *data, size_t len,
                         char name[VG_ID_MAX + 1], desired **d, char **json, const char **wire,
                         char *err, size_t errlen)
{
    *d = NULL;
    *json = NULL;
    if (r->name[0]) {
        snprintf(name, VG_ID_MAX + 1, "%s", r->name);
    } else {
        for (int i = 1;; i++) {
            snprintf(name, VG_ID_MAX + 1, "cam%d", i);
            if (!desired_find(c, name))
                break;
        }
    }
    if (!key_ok(name)) {
        *wire = VG_WIRE_BAD_REQUEST;
        return vg_fail(err, errlen, VG_EINVAL,
                       "in cluster mode a stream name may not end with '.' or hold '..'");
    }
    cJSON *req = cJSON_ParseWithLength(data, len);
    if (req) {
        cJSON_DeleteItemFromObject(req, "id");
        cJSON_DeleteItemFromObject(req, "name");
        cJSON_AddStringToObject(req, "name", name);
        *json = cJSON_PrintUnformatted(req);
    }
    cJSON_Delete(req);
    if (!*json) {
        *wire = VG_WIRE_INTERNAL;
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    }
    desired *x = desired_find(c, name);
    if (x && x->req) {
        int same = watch_same(x->req, *json);
        free(*json);
        *json = NULL;
        if (!same) {
            *wire = VG_WIRE_CONFLICT;
            return vg_fail(err, errlen, VG_EEXIST,
                           "stream '%s' already exists for another URL or questions (unwatch it "
                           "first)",
                           name);
        }
        *d = x;
        return 1;
    }
    int rc = 0;
    if (atomic_load(&c->draining)) {
        *wire = VG_WIRE_SHUTTING;
        rc = vg_fail(err, errlen, VG_EAGAIN, "the daemon is shutting down");
    } else {
        /* The accepting node checks the input against its own media policy (the node that runs
         * it checks again). */
        char resolved[4200], perr[512];
        int is_url = 0;
        rc = vg_daemon_media_check(r->video, (const char(*)[VG_CFG_STR])c->cfg->media_roots,
                                   c->cfg->n_media_roots, c->cfg->allowed_protocols, resolved,
                                   sizeof resolved, &is_url, perr, sizeof perr);
        if (rc < 0) {
            *wire = rc == VG_ENOENT   ? VG_WIRE_NOT_FOUND
                    : rc == VG_EINVAL ? VG_WIRE_BAD_REQUEST
                    : rc == VG_EBUSY  ? VG_WIRE_BUSY
                                      : VG_WIRE_FORBIDDEN;
            rc = vg_fail(err, errlen, rc, "%s", perr);
        }
    }
    if (rc < 0) {
        free(*json);
        *json = NULL;
    }
    return rc;
}

/* `watch` answered at once (the door cannot wait; vg_cluster_defer answers the others): a new
 * watch is recorded with a put, the last of two concurrent watches of one name on two nodes
 * winning. */
static int handle_watch(vg_cluster *c, const vg_request *r, const char *data, size_t len,
                        cJSON *reply, const char **wire, char *err, size_t errlen)
{
    char name[VG_ID_MAX + 1];
    desired *d;
    char *json;
    int rc = watch_prepare(c, r, data, len, name, &d, &json, wire, err, errlen);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        watch_reply(c, name, d->req, 1, reply);
        return 0;
    }
    char *copy = strdup(json);
    if (!copy || !desired_set(c, name, copy)) {
        free(json);
        *wire = VG_WIRE_INTERNAL;
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    }
    watch_reply(c, name, json, 0, reply);
    post_cmd(c, CMD_DESIRE, name, json, NULL);
    vg_log(VG_LOG_INFO, MOD, "stream %s: watch recorded in the cluster", name);
    reconcile(c);
    return 0;
}

static int handle_unwatch(vg_cluster *c, const vg_request *r, cJSON *reply, const char **wire,
                          char *err, size_t errlen)
{
    desired *d = desired_find(c, r->name);
    if (!d || !d->req) {
        *wire = VG_WIRE_NOT_FOUND;
        return vg_fail(err, errlen, VG_ENOENT, "no stream '%s'", r->name);
    }
    post_cmd(c, CMD_UNDESIRE, r->name, NULL, NULL);
    desired_remove(c, r->name);
    cJSON_AddStringToObject(reply, "stream", r->name);
    cJSON_AddStringToObject(reply, "state", "stopping");
    return 0;
}

int vg_cluster_defer(vg_cluster *c, const vg_request *r, const char *data, size_t len, cJSON *reply,
                     void (*done)(char *out, size_t len, void *opaque), void *opaque)
{
    if (!c || atomic_load(&c->draining) ||
        (r->op != VG_OP_EVENTS && r->op != VG_OP_WATCH && r->op != VG_OP_CANCEL))
        return 0;
    char name[VG_ID_MAX + 1];
    char *json = NULL;
    if (r->op == VG_OP_CANCEL) {
        centry *e = cache_find(c, r->job);
        if (!key_ok(r->job) || mine_find(c, r->job) || !e || e->final)
            return 0; /* runs here, not in the cluster, or final: answered at once */
        snprintf(name, sizeof name, "%s", r->job);
    } else if (r->op == VG_OP_EVENTS) {
        if (!key_ok(r->name) ||
            vg_streams_events_covered(c->streams, r->name, (unsigned long long)r->since))
            return 0; /* a name the cluster cannot hold, or answered from memory */
        snprintf(name, sizeof name, "%s", r->name);
    } else {
        desired *d;
        const char *wire;
        char err[512];
        if (watch_prepare(c, r, data, len, name, &d, &json, &wire, err, sizeof err) != 0)
            return 0; /* answered at once by vg_cluster_handle */
    }
    ev_query *q = calloc(1, sizeof *q);
    cmd *m = calloc(1, sizeof *m);
    if (!q || !m) {
        free(q);
        free(m);
        free(json);
        return 0;
    }
    q->done = done;
    q->opaque = opaque;
    q->reply = reply;
    q->watch = json;
    snprintf(q->id_json, sizeof q->id_json, "%s", r->id_json);
    snprintf(q->name, sizeof q->name, "%s", name);
    q->since = (unsigned long long)r->since;
    q->limit = r->limit;
    q->cancel = r->op == VG_OP_CANCEL;
    m->type = q->cancel ? CMD_CANCEL : CMD_EVENTS;
    m->q = q;
    snprintf(m->id, sizeof m->id, "%s", name);
    q->next = c->queries;
    c->queries = q;
    cmd_push(c, m);
    return 1;
}

int vg_cluster_handle(vg_cluster *c, const vg_request *r, const char *data, size_t len,
                      cJSON *reply, int *rc, const char **wire, char *err, size_t errlen)
{
    if (!c)
        return 0;
    if (r->op == VG_OP_WATCH || r->op == VG_OP_UNWATCH) {
        *rc = r->op == VG_OP_WATCH ? handle_watch(c, r, data, len, reply, wire, err, errlen)
                                   : handle_unwatch(c, r, reply, wire, err, errlen);
        return 1;
    }
    if (r->op == VG_OP_STREAMS) {
        /* The streams this node runs (the stream manager's full view, `owner` this node), then
         * the cluster's other desired watches with their owner (the leases bucket). */
        *rc = vg_streams_handle(c->streams, r, reply, wire, err, errlen);
        cJSON *arr = cJSON_GetObjectItemCaseSensitive(reply, "streams");
        if (*rc < 0 || !cJSON_IsArray(arr))
            return 1;
        cJSON *it;
        cJSON_ArrayForEach(it, arr) cJSON_AddStringToObject(it, "owner", c->node);
        double now = mono_ms();
        for (const desired *d = c->desired; d; d = d->next) {
            if (vg_streams_has(c->streams, d->name) || !d->req)
                continue;
            cJSON *tmp = cJSON_CreateObject();
            if (!tmp)
                break;
            watch_reply(c, d->name, d->req, 0, tmp);
            cJSON *o = cJSON_DetachItemFromObject(tmp, "stream");
            cJSON_Delete(tmp);
            if (!o)
                break;
            int held = d->owner[0] && now - d->owner_at < c->ttl_ms;
            cJSON_ReplaceItemInObject(o, "state",
                                      cJSON_CreateString(held ? "running_elsewhere" : "unclaimed"));
            if (held)
                cJSON_AddStringToObject(o, "owner", d->owner);
            else
                cJSON_AddNullToObject(o, "owner");
            cJSON_AddItemToArray(arr, o);
        }
        return 1;
    }
    if (r->op == VG_OP_CANCEL) {
        /* Runs here, or not in the cluster: the local job manager answers. */
        centry *e = cache_find(c, r->job);
        if (!key_ok(r->job) || mine_find(c, r->job) || !e)
            return 0;
        *rc = 0;
        cJSON *v = cJSON_Parse(e->view);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(v, "state");
        const cJSON *nd = cJSON_GetObjectItemCaseSensitive(v, "node");
        cJSON_AddStringToObject(reply, "job", r->job);
        if (e->final) {
            cJSON_AddStringToObject(reply, "state",
                                    cJSON_IsString(st) ? st->valuestring : "cancelled");
            cJSON_AddStringToObject(reply, "where", "final");
            if (cJSON_IsString(nd))
                cJSON_AddStringToObject(reply, "node", nd->valuestring);
        } else {
            /* A door that cannot wait: the operations thread cancels it in the cluster. */
            post_cmd(c, CMD_CANCEL, r->job, NULL, NULL);
            cJSON_AddStringToObject(reply, "state", "cancelling");
            cJSON_AddStringToObject(reply, "where", "cluster");
        }
        cJSON_Delete(v);
        return 1;
    }
    if (r->op != VG_OP_ASK && r->op != VG_OP_JOB)
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
        centry *ne = NULL;
        if (rs && vs && vs2)
            ne = cache_set(c, id, vs2); /* takes vs2 */
        else
            free(vs2);
        if (ne)
            ne->accepted_here = 1;
        if (!ne) {
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
    cJSON *so = cJSON_AddObjectToObject(ci, "streams");
    int desired_n = 0, owned = 0;
    for (const desired *d = c->desired; d; d = d->next) {
        desired_n++;
        owned += d->owned;
    }
    cJSON_AddNumberToObject(so, "desired", desired_n);
    cJSON_AddNumberToObject(so, "owned", owned);
    cJSON_AddNumberToObject(so, "max", c->cfg->max_streams);
    cJSON_AddNumberToObject(so, "lease_ttl_s", c->ttl_ms / 1000.0);
    cJSON_AddNumberToObject(so, "claims", (double)c->claims);
    cJSON_AddNumberToObject(so, "leases_lost", (double)c->lost);
    cJSON_AddNumberToObject(so, "records_published", (double)atomic_load(&c->rec_published));
    cJSON_AddNumberToObject(so, "records_fenced", (double)atomic_load(&c->rec_fenced));
    cJSON_AddNumberToObject(so, "records_dropped", (double)atomic_load(&c->rec_dropped));
    cJSON *la = cJSON_AddArrayToObject(so, "leases");
    vg_cluster *mc = (vg_cluster *)c; /* the lock only */
    double now = mono_ms();
    pthread_mutex_lock(&mc->mu);
    cJSON_AddNumberToObject(so, "records_waiting", (double)mc->n_recs);
    for (int i = 0; i < mc->n_leases; i++) {
        const lease *l = &mc->leases[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "stream", l->name);
        cJSON_AddNumberToObject(e, "revision", (double)l->rev);
        cJSON_AddBoolToObject(e, "valid", !l->lost && now < l->valid_until);
        cJSON_AddNumberToObject(e, "valid_for_s", VG_MAX(0.0, (l->valid_until - now) / 1000.0));
        cJSON_AddItemToArray(la, e);
    }
    pthread_mutex_unlock(&mc->mu);
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

    /* Live streams: the records, the desired watches and the leases. */
    jsStreamConfig ec;
    jsStreamConfig_Init(&ec);
    const char *esubjects[] = {EV_SUBJECTS};
    ec.Name = EV_STREAM;
    ec.Subjects = esubjects;
    ec.SubjectsLen = 1;
    ec.Storage = js_FileStorage;
    ec.AllowDirect = true;
    ec.MaxMsgsPerSubject = cfg->stream_log_max_records > 0 ? cfg->stream_log_max_records : -1;
    si = NULL;
    s = js_AddStream(&si, c->js, &ec, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK && jerr != JSStreamNameExistErr)
        return vg_fail(err, errlen, VG_EIO, "stream %s: %s (JetStream error %d)", EV_STREAM,
                       nats_err(s), (int)jerr);
    kvConfig_Init(&kc);
    kc.Bucket = WATCHES;
    kc.History = 1;
    kc.StorageType = js_FileStorage;
    if ((s = js_CreateKeyValue(&c->kv_watches, c->js, &kc)) != NATS_OK &&
        (s = js_KeyValue(&c->kv_watches, c->js, WATCHES)) != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "bucket %s: %s", WATCHES, nats_err(s));
    kvConfig_Init(&kc);
    kc.Bucket = LEASES;
    kc.History = 1;
    kc.StorageType = js_FileStorage;
    kc.TTL = (int64_t)(cfg->cluster_lease_ttl_s * 1e9);
    if ((s = js_CreateKeyValue(&c->kv_leases, c->js, &kc)) != NATS_OK &&
        (s = js_KeyValue(&c->kv_leases, c->js, LEASES)) != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "bucket %s: %s", LEASES, nats_err(s));
    /* The bucket's TTL is the lease TTL, whatever this node's key says (the first node to
     * create the bucket set it). */
    c->ttl_ms = cfg->cluster_lease_ttl_s * 1000.0;
    kvStatus *ks = NULL;
    if (kvStore_Status(&ks, c->kv_leases) == NATS_OK) {
        double ttl = (double)kvStatus_TTL(ks) / 1e6;
        if (ttl > 0 && fabs(ttl - c->ttl_ms) > 1.0) {
            vg_log(VG_LOG_WARNING, MOD,
                   "cluster_lease_ttl_s is %.1f s but bucket %s has %.1f s: using the bucket's",
                   cfg->cluster_lease_ttl_s, LEASES, ttl / 1000.0);
            c->ttl_ms = ttl;
        }
        kvStatus_Destroy(ks);
    }
    if ((s = kvStore_WatchAll(&c->dwatcher, c->kv_watches, &wo)) != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "watching bucket %s: %s", WATCHES, nats_err(s));
    if ((s = kvStore_WatchAll(&c->lwatcher, c->kv_leases, &wo)) != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "watching bucket %s: %s", LEASES, nats_err(s));
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
    c->streams = p->streams;
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
    pthread_cond_init(&c->lcv, NULL);
    pthread_cond_init(&c->rcv, NULL);
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
    uv_timer_init(c->loop, &c->reconcile);
    c->reconcile.data = c;
    uint64_t tick = (uint64_t)VG_MAX(c->ttl_ms / 3.0, 100.0);
    uv_timer_start(&c->reconcile, on_reconcile, tick, tick);
    c->handles_open = 1;
    vg_streams_hooks hk = {hook_may_publish, hook_on_record, c, c->node};
    vg_streams_set_hooks(c->streams, &hk);
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
            if (pthread_create(&c->watch_th, NULL, watch_main, c) == 0) {
                c->threads = 3;
                if (pthread_create(&c->dwatch_th, NULL, dwatch_main, c) == 0) {
                    c->threads = 4;
                    if (pthread_create(&c->lease_th, NULL, lease_main, c) == 0) {
                        c->threads = 5;
                        if (pthread_create(&c->rec_th, NULL, rec_main, c) == 0) {
                            c->threads = 6;
                            if (pthread_create(&c->lwatch_th, NULL, lwatch_main, c) == 0)
                                c->threads = 7;
                        }
                    }
                }
            }
        }
    }
    *out = c;
    if (c->threads < 7)
        return vg_fail(err, errlen, VG_ENOMEM, "cannot start the cluster's threads");
    natsStatus cs =
        natsConnection_Subscribe(&c->cancel_sub, c->nc, CANCEL_PFX ">", on_cancel_msg, c);
    if (cs != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "subscribing to %s>: %s", CANCEL_PFX, nats_err(cs));
    cs = natsConnection_Subscribe(&c->fwd_sub, c->nc, FWD_PFX ">", on_fwd_msg, c);
    if (cs != NATS_OK)
        return vg_fail(err, errlen, VG_EIO, "subscribing to %s>: %s", FWD_PFX, nats_err(cs));
    vg_log(VG_LOG_NOTICE, MOD,
           "node %s in the cluster at %s (max %d jobs, ack wait %.1f s; max %d streams, lease TTL "
           "%.1f s)",
           c->node, p->cfg->cluster_url, p->cfg->cluster_max_jobs, p->cfg->cluster_ack_wait_s,
           p->cfg->max_streams, c->ttl_ms / 1000.0);
    return 0;
}

void vg_cluster_drain(vg_cluster *c)
{
    if (!c)
        return;
    atomic_store(&c->draining, 1);
    /* `events` read from JetStream and not answered yet: answered now (the doors close before
     * the operations thread could bring them back). */
    for (ev_query *q = c->queries; q; q = q->next) {
        if (q->answered)
            continue;
        q->answered = 1;
        size_t len = 0;
        char *out =
            vg_proto_error_reply(q->id_json, VG_WIRE_SHUTTING, "the daemon is shutting down", &len);
        q->done(out, len, q->opaque);
    }
}

void vg_cluster_stop(vg_cluster *c)
{
    if (!c)
        return;
    atomic_store(&c->draining, 1); /* on_cancel_msg posts nothing more */
    if (c->sink >= 0)
        vg_bus_remove_sink(c->bus, c->sink);
    c->sink = -1;
    vg_cluster_drain(c); /* answers the queries left (none after a drain) */
    if (c->handles_open) {
        vg_streams_set_hooks(c->streams, NULL);
        uv_close((uv_handle_t *)&c->async, NULL);
        uv_close((uv_handle_t *)&c->prune, NULL);
        uv_close((uv_handle_t *)&c->reconcile, NULL);
        c->handles_open = 0;
    }
}

void vg_cluster_free(vg_cluster *c)
{
    if (!c)
        return;
    if (c->cancel_sub)
        natsSubscription_Unsubscribe(c->cancel_sub);
    if (c->fwd_sub)
        natsSubscription_Unsubscribe(c->fwd_sub);
    /* The records first (published while the leases are held), then the rest (the lease thread
     * releases the leases as it ends). */
    atomic_store(&c->rec_stop, 1);
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->rcv);
    pthread_mutex_unlock(&c->mu);
    if (c->threads >= 6)
        pthread_join(c->rec_th, NULL);
    atomic_store(&c->stop, 1);
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->cv);
    pthread_cond_broadcast(&c->lcv);
    pthread_mutex_unlock(&c->mu);
    if (c->threads >= 1)
        pthread_join(c->ops_th, NULL);
    if (c->threads >= 2)
        pthread_join(c->pull_th, NULL);
    if (c->threads >= 3)
        pthread_join(c->watch_th, NULL);
    if (c->threads >= 4)
        pthread_join(c->dwatch_th, NULL);
    if (c->threads >= 5)
        pthread_join(c->lease_th, NULL);
    if (c->threads >= 7)
        pthread_join(c->lwatch_th, NULL);
    for (int i = 0; i < c->n_held; i++) {
        natsMsg_Nak(c->held[i].m, NULL); /* not finished here: another node runs it */
        natsMsg_Destroy(c->held[i].m);
    }
    if (c->watcher) {
        kvWatcher_Stop(c->watcher);
        kvWatcher_Destroy(c->watcher);
    }
    if (c->dwatcher) {
        kvWatcher_Stop(c->dwatcher);
        kvWatcher_Destroy(c->dwatcher);
    }
    if (c->lwatcher) {
        kvWatcher_Stop(c->lwatcher);
        kvWatcher_Destroy(c->lwatcher);
    }
    kvStore_Destroy(c->kv);
    kvStore_Destroy(c->kv_watches);
    kvStore_Destroy(c->kv_leases);
    natsSubscription_Destroy(c->sub);
    natsSubscription_Destroy(c->cancel_sub);
    natsSubscription_Destroy(c->fwd_sub);
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
        free(m); /* an EVENTS query is still in c->queries */
        m = n;
    }
    for (cmd *m = c->cmds; m;) {
        cmd *n = m->next;
        free(m->data);
        free(m->view);
        free(m); /* m->q: in c->queries */
        m = n;
    }
    for (ev_query *q = c->queries; q;) {
        ev_query *n = q->next;
        ev_query_free(q);
        q = n;
    }
    for (lcmd *m = c->lcmds; m;) {
        lcmd *n = m->next;
        free(m);
        m = n;
    }
    for (rec *r = c->recs; r;) {
        rec *n = r->next;
        free(r->line);
        free(r);
        r = n;
    }
    for (desired *d = c->desired; d;) {
        desired *n = d->next;
        free(d->req);
        free(d);
        d = n;
    }
    for (desired *d = c->releasing; d;) {
        desired *n = d->next;
        free(d);
        d = n;
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
    pthread_cond_destroy(&c->lcv);
    pthread_cond_destroy(&c->rcv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
