/*
 * journal.c: the durable record of jobs, so results survive a restart.
 *
 * Format: one record per line, "XXXXXXXX <json>\n", XXXXXXXX the CRC-32 of <json> in lower-case
 * hex. Appends only ever add whole lines after a newline, so a crash can leave at most one torn
 * line at the end; load skips it (no trailing newline) and any line whose checksum does not match.
 * The daemon rewrites the journal on start (compaction: the newest record of each live job),
 * through a temporary file, fsync, rename and a directory fsync, so either the old or the new file
 * survives. A compaction rule groups by a key field (jobs: newest record per job, expired ones
 * dropped), or only cuts the file to its newest keep_last records (streams' event logs), or both.
 *
 * Threads: vg_journal_append runs on the loop thread and only pushes onto a bounded queue; the
 * writer thread pops everything queued, writes it and fsyncs once per batch (group commit). When
 * enough records have been appended since the last compaction, the writer thread also compacts the
 * file (by its rule) and reopens it, so a long-running daemon's journal stays proportional to the
 * records it keeps.
 * vg_journal_load / vg_journal_rewrite run at start-up, before the loop.
 *
 * Durability: every appended record has a sequence number (1, 2, ... in append order). The writer
 * keeps the records it has taken from the queue in a pending list until a write and an fdatasync of
 * the whole batch have succeeded; only then does `durable` (the newest record on disk) advance and
 * the owner's notify callback run. When a write or the fsync fails (ENOSPC, EDQUOT, EIO), the file
 * is cut back to its size after the last good batch (so it never holds a partial record in the
 * middle), the records stay pending, the journal reports itself failing (vg_journal_get_status),
 * and the writer retries the whole pending list with a backoff (100 ms doubling to 5 s), taking new
 * records into the list meanwhile. A retry that succeeds makes everything durable and clears the
 * failure. Rewriting the data (not just fsyncing again) matters: after a failed fsync Linux may
 * have dropped the dirty pages and cleared the error. Compaction waits while records are pending.
 *
 * Test hook: with VG_TEST_JOURNAL_ENOSPC=FILE in the environment, every write and fsync fails with
 * ENOSPC while FILE exists (tests/hardening uses it where it cannot mount a small tmpfs).
 */
#include "daemon.h"

#include "common.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MOD          "journal"
#define QUEUE_CAP    8192
#define PENDING_MAX  ((size_t)1 << 20) /* records held in memory while the disk fails */
#define RETRY_MIN_MS 100.0
#define RETRY_MAX_MS 5000.0

typedef struct rec {
    struct rec *next;
    uint64_t seq;
    size_t len;
    char line[]; /* "XXXXXXXX json\n" */
} rec;

struct vg_journal {
    int fd;
    vg_queue *q;
    pthread_t thread;
    char path[4096];
    vg_journal_compaction cp;
    _Atomic long long ttl_ms;
    size_t appended, kept; /* writer thread */
    uint64_t next_seq;     /* loop thread: the sequence number of the next append */
    /* Writer thread: records taken from the queue and not yet on disk, oldest first. */
    rec *pend_head, *pend_tail;
    size_t n_pending;
    off_t good_size; /* the file's size after the last batch that was written and fsync'd */
    double retry_ms, next_retry; /* backoff while failing (vg_now_ms) */
    char fault_path[512];        /* test hook (see the top) */
    /* Shared (mu): the status and the owner's notify callback. */
    pthread_mutex_t mu;
    vg_journal_status st;
    void (*notify)(void *opaque);
    void *notify_opaque;
};

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t vg_crc32(const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

int vg_journal_load(const char *path, void (*cb)(const char *json, size_t len, void *opaque),
                    void *opaque, vg_journal_stats *stats, char *err, size_t errlen)
{
    vg_journal_stats st = {0};
    char *data = NULL;
    size_t len = 0;
    char e2[256];
    int rc = vg_read_file(path, (size_t)1 << 31, &data, &len, e2, sizeof e2);
    if (rc == VG_ENOENT) {
        if (stats)
            *stats = st;
        return 0;
    }
    if (rc < 0)
        return vg_fail(err, errlen, rc, "%s", e2);
    size_t pos = 0;
    while (pos < len) {
        char *line = data + pos;
        char *nl = memchr(line, '\n', len - pos);
        if (!nl) {
            st.torn++; /* the last write did not finish */
            break;
        }
        size_t n = (size_t)(nl - line);
        pos += n + 1;
        if (n == 0)
            continue;
        uint32_t want = 0;
        int ok = n >= 10 && line[8] == ' ';
        for (int i = 0; ok && i < 8; i++) {
            int h = hexval(line[i]);
            ok = h >= 0;
            want = want << 4 | (uint32_t)(h < 0 ? 0 : h);
        }
        if (!ok || vg_crc32(line + 9, n - 9) != want) {
            st.bad_crc++;
            continue;
        }
        *nl = 0;
        st.good++;
        cb(line + 9, n - 9, opaque);
    }
    free(data);
    if (stats)
        *stats = st;
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static rec *make_rec(const char *json, size_t len)
{
    rec *r = malloc(sizeof *r + len + 11);
    if (!r)
        return NULL;
    r->next = NULL;
    r->seq = 0;
    snprintf(r->line, 10, "%08x", vg_crc32(json, len));
    r->line[8] = ' ';
    memcpy(r->line + 9, json, len);
    r->line[9 + len] = '\n';
    r->len = len + 10;
    return r;
}

static int fsync_dir_of(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    int dfd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    int rc = fsync(dfd) ? -errno : 0;
    close(dfd);
    return rc;
}

int vg_journal_rewrite(const char *path, char *const *lines, size_t n, char *err, size_t errlen)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return vg_fail(err, errlen, VG_EINVAL, "journal path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return vg_fail(err, errlen, -errno, "cannot create %s: %s", tmp, strerror(errno));
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        size_t len = strlen(lines[i]);
        if (memchr(lines[i], '\n', len)) {
            rc = VG_EINVAL;
            break;
        }
        rec *r = make_rec(lines[i], len);
        if (!r) {
            rc = VG_ENOMEM;
            break;
        }
        rc = write_all(fd, r->line, r->len);
        free(r);
    }
    if (!rc && fsync(fd))
        rc = -errno;
    close(fd);
    if (!rc && rename(tmp, path))
        rc = -errno;
    if (!rc)
        rc = fsync_dir_of(path);
    if (rc) {
        unlink(tmp);
        return vg_fail(err, errlen, rc, "cannot rewrite %s: %s", path, vg_strerror(rc));
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Compaction.
 */
typedef struct cline {
    char *json;
    char *key; /* NULL = no key: always kept */
    double time;
    size_t order;
} cline;

typedef struct cset {
    cline *v;
    size_t n, cap;
    size_t seen; /* lines collected so far, including those already dropped */
    const vg_journal_compaction *cp;
    int oom;
} cset;

static int rule_ok(const vg_journal_compaction *cp)
{
    return cp && (cp->key ? cp->time != NULL : !cp->time && cp->keep_last > 0);
}

static void collect_line(const char *json, size_t len, void *opaque)
{
    cset *c = opaque;
    if (c->oom)
        return;
    char *copy = strndup(json, len);
    if (!copy) {
        c->oom = 1;
        return;
    }
    size_t order = c->seen++;
    if (!c->cp->key && c->n == c->cp->keep_last) {
        /* No grouping: a ring of the newest keep_last lines (the oldest sits at order % keep_last),
         * so memory stays bounded however long the file has grown; by_order restores file order. */
        cline *l = &c->v[order % c->cp->keep_last];
        free(l->json);
        l->json = copy;
        l->order = order;
        return;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        cline *v = realloc(c->v, cap * sizeof *v);
        if (!v) {
            free(copy);
            c->oom = 1;
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    cline *l = &c->v[c->n];
    memset(l, 0, sizeof *l);
    l->json = copy;
    l->order = order;
    if (c->cp->key) {
        cJSON *o = cJSON_ParseWithLength(json, len);
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, c->cp->key);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, c->cp->time);
        if (cJSON_IsString(k) && !(l->key = strdup(k->valuestring))) {
            cJSON_Delete(o);
            free(l->json);
            c->oom = 1;
            return;
        }
        if (cJSON_IsNumber(t))
            l->time = t->valuedouble;
        cJSON_Delete(o);
    }
    c->n++;
}

static int by_key_then_order(const void *a, const void *b)
{
    const cline *x = a, *y = b;
    if (!x->key || !y->key)
        return x->key ? 1 : y->key ? -1 : (x->order > y->order) - (x->order < y->order);
    int c = strcmp(x->key, y->key);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

static int by_order(const void *a, const void *b)
{
    const cline *x = a, *y = b;
    return (x->order > y->order) - (x->order < y->order);
}

int vg_journal_compact(const char *path, const vg_journal_compaction *cp, size_t *kept, char *err,
                       size_t errlen)
{
    if (!rule_ok(cp))
        return vg_fail(err, errlen, VG_EINVAL,
                       "no compaction rule (key and time, or keep_last without them)");
    cset c = {NULL, 0, 0, 0, cp, 0};
    int rc = vg_journal_load(path, collect_line, &c, NULL, err, errlen);
    if (rc == 0 && c.oom)
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory compacting %s", path);
    char **lines = NULL;
    size_t n = 0;
    if (rc == 0) {
        if (cp->key) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
            /* Group by key (file order within a group), keep each group's last line if live. */
            if (c.n > 1) /* qsort(NULL, 0, ...) is undefined: found by fuzz_journal */
                qsort(c.v, c.n, sizeof *c.v, by_key_then_order);
            size_t w = 0;
            for (size_t i = 0; i < c.n; i++) {
                cline *l = &c.v[i];
                int newest = !l->key || i + 1 == c.n || !c.v[i + 1].key ||
                             strcmp(l->key, c.v[i + 1].key) != 0;
                int expired = l->key && l->time > 0 && now - l->time > cp->ttl_s;
                if (newest && !expired) {
                    c.v[w++] = *l;
                } else {
                    free(l->json);
                    free(l->key);
                }
            }
            c.n = w;
        }
        if (c.n > 1)
            qsort(c.v, c.n, sizeof *c.v, by_order);
        if (cp->keep_last && c.n > cp->keep_last) {
            /* Only the newest keep_last survivors stay. */
            size_t cut = c.n - cp->keep_last;
            for (size_t i = 0; i < cut; i++) {
                free(c.v[i].json);
                free(c.v[i].key);
            }
            memmove(c.v, c.v + cut, cp->keep_last * sizeof *c.v);
            c.n = cp->keep_last;
        }
        lines = malloc((c.n ? c.n : 1) * sizeof *lines);
        if (!lines) {
            rc = VG_ENOMEM;
        } else {
            for (size_t i = 0; i < c.n; i++)
                lines[n++] = c.v[i].json;
            rc = vg_journal_rewrite(path, lines, n, err, errlen);
        }
    }
    for (size_t i = 0; i < c.n; i++) {
        free(c.v[i].json);
        free(c.v[i].key);
    }
    free(c.v);
    free(lines);
    if (rc == 0 && kept)
        *kept = n;
    return rc;
}

void vg_journal_set_ttl(vg_journal *j, double ttl_s)
{
    if (j)
        atomic_store(&j->ttl_ms, (long long)(ttl_s * 1000.0));
}

/* Writer thread: compacts the file and reopens it for appending. */
static void compact_now(vg_journal *j)
{
    vg_journal_compaction cp = j->cp;
    cp.ttl_s = (double)atomic_load(&j->ttl_ms) / 1000.0;
    char err[512];
    size_t kept = 0;
    double t0 = vg_now_ms();
    int rc = vg_journal_compact(j->path, &cp, &kept, err, sizeof err);
    if (rc < 0) {
        vg_log(VG_LOG_ERR, MOD, "compaction failed (the journal keeps growing): %s", err);
        j->kept = j->appended; /* try again after as many appends */
        j->appended = 0;
        return;
    }
    int fd = open(j->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        vg_log(VG_LOG_ERR, MOD, "cannot reopen %s: %s", j->path, strerror(errno));
        return; /* keep appending to the old file's descriptor: nothing is lost until restart */
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return;
    }
    close(j->fd);
    j->fd = fd;
    j->good_size = st.st_size;
    vg_log(VG_LOG_INFO, MOD, "compacted %s: %zu records after %zu appends (%.1f ms)", j->path, kept,
           j->appended, vg_now_ms() - t0);
    j->kept = kept;
    j->appended = 0;
}

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The test hook: ENOSPC while the named file exists. */
static int injected_fault(const vg_journal *j)
{
    return j->fault_path[0] && access(j->fault_path, F_OK) == 0 ? -ENOSPC : 0;
}

/* Updates the shared status and tells the owner (writer thread). */
static void set_status(vg_journal *j, int failing, int error, const char *what, uint64_t durable)
{
    pthread_mutex_lock(&j->mu);
    int changed = j->st.durable != durable || j->st.failing != failing;
    j->st.durable = durable;
    if (failing) {
        if (!j->st.failing)
            j->st.since = unix_now();
        j->st.error = error;
        snprintf(j->st.message, sizeof j->st.message, "%s %.400s failed: %s", what, j->path,
                 strerror(-error));
    } else {
        j->st.error = 0;
        j->st.message[0] = 0;
        j->st.since = 0;
    }
    j->st.failing = failing;
    j->st.pending = j->n_pending;
    if (changed && j->notify)
        j->notify(j->notify_opaque);
    pthread_mutex_unlock(&j->mu);
}

/* Writer thread: takes one record into the pending list (dropping it past PENDING_MAX). */
static void take(vg_journal *j, rec *r)
{
    if (j->n_pending >= PENDING_MAX) {
        pthread_mutex_lock(&j->mu);
        j->st.lost++;
        pthread_mutex_unlock(&j->mu);
        vg_log(VG_LOG_ERR, MOD, "%s: %zu records wait for the disk; record %llu is lost", j->path,
               j->n_pending, (unsigned long long)r->seq);
        free(r);
        return;
    }
    if (j->pend_tail)
        j->pend_tail->next = r;
    else
        j->pend_head = r;
    j->pend_tail = r;
    j->n_pending++;
}

/* Writer thread: writes every pending record and fsyncs once. On success the records are durable
 * and freed; on failure the file is cut back to its last good size and they stay pending. */
static int flush_pending(vg_journal *j)
{
    if (!j->pend_head)
        return 0;
    const char *what = "write to";
    int rc = injected_fault(j);
    struct stat st;
    /* After a failure whose cut did not work, the file may end inside a record: start a new line
     * so the next record stays intact (load skips the broken one by its checksum). */
    if (!rc && fstat(j->fd, &st) == 0 && st.st_size != j->good_size)
        rc = write_all(j->fd, "\n", 1);
    size_t n = 0;
    off_t bytes = 0;
    for (rec *r = j->pend_head; r && !rc; r = r->next) {
        rc = write_all(j->fd, r->line, r->len);
        bytes += (off_t)r->len;
        n++;
    }
    if (!rc) {
        what = "fsync of";
        rc = injected_fault(j);
        if (!rc && fdatasync(j->fd))
            rc = -errno;
    }
    uint64_t durable;
    pthread_mutex_lock(&j->mu);
    durable = j->st.durable;
    int was_failing = j->st.failing;
    pthread_mutex_unlock(&j->mu);
    if (rc) {
        if (ftruncate(j->fd, j->good_size) != 0)
            vg_log(VG_LOG_ERR, MOD, "cannot cut %s back to %lld bytes: %s", j->path,
                   (long long)j->good_size, strerror(errno));
        j->retry_ms = was_failing ? VG_MIN(j->retry_ms * 2, RETRY_MAX_MS) : RETRY_MIN_MS;
        j->next_retry = vg_now_ms() + j->retry_ms;
        if (!was_failing)
            vg_log(VG_LOG_ERR, MOD,
                   "%s %s failed: %s; %zu records wait in memory and are retried until it works",
                   what, j->path, strerror(-rc), j->n_pending);
        set_status(j, 1, rc, what, durable);
        return rc;
    }
    struct stat st2;
    j->good_size = fstat(j->fd, &st2) == 0 ? st2.st_size : j->good_size + bytes;
    durable = j->pend_tail->seq;
    while (j->pend_head) {
        rec *r = j->pend_head;
        j->pend_head = r->next;
        free(r);
    }
    j->pend_tail = NULL;
    j->n_pending = 0;
    j->appended += n;
    if (was_failing)
        vg_log(VG_LOG_NOTICE, MOD, "%s is written again: %zu records made durable", j->path, n);
    set_status(j, 0, 0, NULL, durable);
    return 0;
}

static void *writer_main(void *arg)
{
    vg_journal *j = arg;
    for (;;) {
        int failing = j->n_pending > 0; /* records stay pending only after a failure */
        int wait = -1;
        if (failing)
            wait = (int)VG_MAX(j->next_retry - vg_now_ms(), 0.0) + 1;
        void *item;
        int rc = vg_queue_pop(j->q, &item, wait);
        if (rc == VG_EPIPE)
            break;
        if (rc == 0) {
            /* Group commit: take what is queued now, then write it with one fsync. */
            int n = 0;
            do {
                take(j, item);
                n++;
            } while (n < 1024 && vg_queue_pop(j->q, &item, 0) == 0);
        } else if (rc != VG_ETIMEDOUT) {
            continue;
        }
        if (failing && vg_now_ms() < j->next_retry)
            continue; /* wait for the backoff; new records wait with the others */
        if (flush_pending(j) == 0 && j->cp.every &&
            j->appended >= j->cp.every + (j->cp.key ? j->kept : 0))
            compact_now(j);
    }
    return NULL;
}

int vg_journal_open(const char *path, const vg_journal_compaction *cp, vg_journal **out, char *err,
                    size_t errlen)
{
    if (cp && cp->every && !rule_ok(cp))
        return vg_fail(err, errlen, VG_EINVAL,
                       "compaction needs key and time fields, or keep_last without them");
    vg_journal *j = calloc(1, sizeof *j);
    if (!j)
        return VG_ENOMEM;
    snprintf(j->path, sizeof j->path, "%s", path);
    const char *fault = getenv("VG_TEST_JOURNAL_ENOSPC");
    if (fault)
        snprintf(j->fault_path, sizeof j->fault_path, "%s", fault);
    if (cp) {
        j->cp = *cp;
        atomic_init(&j->ttl_ms, (long long)(cp->ttl_s * 1000.0));
    }
    j->next_seq = 1;
    j->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (j->fd < 0) {
        int e = errno;
        free(j);
        return vg_fail(err, errlen, -e, "cannot open %s: %s", path, strerror(e));
    }
    /* If the file ends in a torn line, start on a fresh line so the next record stays intact
     * (flush_pending does it when this write fails). */
    struct stat st;
    if (fstat(j->fd, &st) == 0 && st.st_size > 0) {
        int rfd = open(path, O_RDONLY | O_CLOEXEC);
        char last = '\n';
        if (rfd >= 0) {
            if (pread(rfd, &last, 1, st.st_size - 1) != 1)
                last = '\n';
            close(rfd);
        }
        if (last != '\n' && write_all(j->fd, "\n", 1) == 0)
            st.st_size++;
    }
    j->good_size = st.st_size;
    pthread_mutex_init(&j->mu, NULL);
    int rc = vg_queue_create(QUEUE_CAP, &j->q);
    if (rc < 0) {
        pthread_mutex_destroy(&j->mu);
        close(j->fd);
        free(j);
        return vg_fail(err, errlen, rc, "cannot create the journal queue");
    }
    if ((rc = pthread_create(&j->thread, NULL, writer_main, j)) != 0) {
        vg_queue_destroy(j->q);
        pthread_mutex_destroy(&j->mu);
        close(j->fd);
        free(j);
        return vg_fail(err, errlen, -rc, "cannot start the journal thread");
    }
    *out = j;
    return 0;
}

int vg_journal_append(vg_journal *j, const char *json, size_t len)
{
    if (!j || !json || memchr(json, '\n', len))
        return VG_EINVAL;
    rec *r = make_rec(json, len);
    if (!r)
        return VG_ENOMEM;
    r->seq = j->next_seq;
    int rc = vg_queue_push(j->q, r, 0);
    if (rc < 0) {
        vg_log(VG_LOG_ERR, MOD, "journal queue full; a record is lost");
        free(r);
        pthread_mutex_lock(&j->mu);
        j->st.lost++;
        pthread_mutex_unlock(&j->mu);
        return rc;
    }
    j->next_seq++;
    return 0;
}

uint64_t vg_journal_last_seq(const vg_journal *j)
{
    return j ? j->next_seq - 1 : 0;
}

void vg_journal_get_status(vg_journal *j, vg_journal_status *st)
{
    memset(st, 0, sizeof *st);
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    *st = j->st;
    pthread_mutex_unlock(&j->mu);
}

void vg_journal_set_notify(vg_journal *j, void (*notify)(void *opaque), void *opaque)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    j->notify = notify;
    j->notify_opaque = opaque;
    pthread_mutex_unlock(&j->mu);
}

int vg_journal_close(vg_journal *j)
{
    if (!j)
        return 0;
    vg_queue_close(j->q);
    pthread_join(j->thread, NULL);
    /* The last word: what is still queued joins the pending records for one more try. */
    void *item;
    while (vg_queue_pop(j->q, &item, 0) == 0)
        take(j, item);
    int rc = flush_pending(j);
    if (rc == 0 && fsync(j->fd))
        rc = -errno;
    pthread_mutex_lock(&j->mu);
    uint64_t lost = j->st.lost;
    pthread_mutex_unlock(&j->mu);
    if (rc < 0)
        vg_log(VG_LOG_ERR, MOD, "%s: %zu records could not be written (%s); they are lost", j->path,
               j->n_pending, strerror(-rc));
    else if (lost)
        rc = VG_EIO;
    while (j->pend_head) {
        rec *r = j->pend_head;
        j->pend_head = r->next;
        free(r);
    }
    close(j->fd);
    vg_queue_destroy(j->q);
    pthread_mutex_destroy(&j->mu);
    free(j);
    return rc;
}
