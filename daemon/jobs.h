/*
 * jobs.h: vigild's job manager (private to daemon/). Owns the job table, the decode thread pool,
 * the inference thread and the mailbox (mailbox.h) that brings their results back to the loop.
 *
 * Threads: every function here runs on the loop thread. The workers never touch loop-owned state;
 * they report through messages that the async callback drains.
 */
#ifndef VG_DAEMON_JOBS_H
#define VG_DAEMON_JOBS_H

#include "bus.h"
#include "daemon.h"
#include "ipc.h"
#include "model.h"

#include <cjson/cJSON.h>
#include <uv.h>

typedef struct vg_jobs vg_jobs;

typedef struct vg_jobs_params {
    uv_loop_t *loop;
    vg_model *model;             /* borrowed; outlives the manager */
    const vg_daemon_config *cfg; /* borrowed; the loop may replace its live fields on SIGHUP */
    vg_journal *journal;         /* borrowed; may be NULL before it is opened */
    vg_infer_gate *gate;         /* borrowed, optional: held around each job's inference */
} vg_jobs_params;

/* Creates the manager and starts max_concurrent_decodes decode threads and the inference thread.
 */
int vg_jobs_create(const vg_jobs_params *p, vg_jobs **out, char *err, size_t errlen);

/* Start-up, before the loop runs: feeds one journal record (newest last). */
void vg_jobs_restore(vg_jobs *js, const char *json, size_t len);
/* Start-up: the JSON lines a compacted journal keeps (each a malloc'd string), newest state of
 * every job still within result_ttl; jobs that were queued or running when the daemon stopped
 * become failed with code "interrupted". The caller frees the strings and the array. */
int vg_jobs_snapshot(vg_jobs *js, char ***lines, size_t *n);
void vg_jobs_set_journal(vg_jobs *js, vg_journal *j);
/* Where records are published (bus.h); borrowed, outlives the manager. */
void vg_jobs_set_bus(vg_jobs *js, vg_bus *bus);
/* Cluster mode (cluster.h): a finished job's `done` (and `durable`) is not published; fn(id,
 * opaque) is called on the loop instead, at the moment `done` would have been published (the job's
 * final state is in the table: `job` answers it). The cluster publishes the result it records. */
typedef void (*vg_jobs_done_fn)(const char *job_id, void *opaque);
void vg_jobs_set_done_hook(vg_jobs *js, vg_jobs_done_fn fn, void *opaque);

/* Handles ask, job, jobs, cancel and sync. Job views carry `durable` (docs/protocol.md); while the
 * journal fails, a new ask gets VG_WIRE_STORAGE. Adds the reply's fields to reply (an object that
 * already holds v and id) and returns 0, or returns a negative code with *wire_code and a sentence
 * in err for an error reply. */
int vg_jobs_handle(vg_jobs *js, const vg_request *req, cJSON *reply, const char **wire_code,
                   char *err, size_t errlen);

/* Counts for `info`. */
void vg_jobs_counts(const vg_jobs *js, int *queued, int *running, int *retained);
/* For `info`: how many retained jobs' latest state is not yet on disk (journal failing or the
 * fsync not done yet). Walks the table. */
int vg_jobs_undurable(const vg_jobs *js);

/* Graceful stop: refuses new jobs, cancels every queued and running job, and calls done(opaque)
 * on the loop once no worker holds a job any more (at once if none does). */
void vg_jobs_shutdown(vg_jobs *js, void (*done)(void *opaque), void *opaque);

/* After the loop has stopped: stops and joins the threads, frees everything. NULL is a no-op. */
void vg_jobs_destroy(vg_jobs *js);

#endif
