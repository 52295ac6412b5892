/*
 * cluster.h: vigild's cluster mode on NATS JetStream (private to daemon/; docs/cluster.md). Off
 * unless cluster_url is set; then every node with the same server shares clip jobs:
 *  - `ask` on any node puts the request in the JetStream work-queue stream VIGIL_JOBS (subject
 *    vigil.jobs, the job id as Nats-Msg-Id) and records the job as queued in the KV bucket
 *    vigil_results (bucket TTL = result_ttl_s);
 *  - each node pulls from the shared durable pull consumer only while it runs fewer than
 *    cluster_max_jobs cluster jobs, runs the job with its own job manager (jobs.h), marks progress
 *    (in-progress ack) every cluster_ack_wait_s / 3, and acks once the final state is in the
 * bucket;
 *  - a job whose node dies is redelivered after cluster_ack_wait_s; the final state is written with
 *    a revision-checked update that never replaces a final state, so a client sees one result per
 *    job id whatever node it asks (`job ID` answers from a loop-side copy of the bucket, fed by a
 *    KV watcher) and the accepting node republishes the result as `job/ID/done` on its bus;
 *  - the state/progress/token messages of a job go from the node running it to the node that
 *    accepted it (core NATS vigil.job.<id>.<kind>), which puts them on its bus;
 *  - `cancel` on any node: a job running elsewhere is cancelled by its node (a core NATS request
 *    on vigil.cancel.<id>, which every node subscribes to); a job no node runs is recorded
 *    cancelled in the bucket (revision-checked, never over a final state) and a node that pulls
 *    it acks it without running it;
 *  - `watch` on any node records the watch in the KV bucket vigil_watches; each node's reconciler
 *    (a loop timer every third of the lease TTL) claims desired streams that run nowhere, up to
 *    max_streams, with a key in the bucket vigil_leases (create; bucket TTL = the lease TTL),
 *    renews it with revision-checked updates and stops the stream when a renewal fails or is late;
 *    the stream's records go to JetStream (VIGIL_EVENTS, vigil.stream.<name>.event), and a new
 *    owner continues their sequence numbers. Before each record the stream manager asks whether
 *    the lease is still valid by the monotonic clock (fencing).
 *
 * Threads: libnats runs its own threads; cluster.c adds seven (pull, operations, results watch,
 * desired-watches watch, leases, records, leases watch). None of
 * them touches daemon state: they talk to the loop through a mutex-protected inbox and a uv_async,
 * and the loop talks to them through a command queue. Every function here runs on the loop thread
 * (vg_cluster_start before the loop runs, vg_cluster_free after it stopped).
 */
#ifndef VG_DAEMON_CLUSTER_H
#define VG_DAEMON_CLUSTER_H

#include "bus.h"
#include "daemon.h"
#include "jobs.h"
#include "streams.h"

#include <cjson/cJSON.h>
#include <uv.h>

typedef struct vg_cluster vg_cluster;

typedef struct vg_cluster_params {
    uv_loop_t *loop;
    const vg_daemon_config *cfg; /* borrowed; cluster keys are restart-only */
    vg_jobs *jobs;               /* borrowed; runs the jobs this node pulls */
    vg_bus *bus;                 /* borrowed; the cluster is one of its sinks */
    vg_streams *streams;         /* borrowed; runs the streams whose lease this node holds */
} vg_cluster_params;

/* Checks the cluster keys (URL scheme, TLS files in pairs). 0 or VG_EINVAL with a sentence. */
int vg_cluster_check_config(const vg_daemon_config *cfg, char *err, size_t errlen);

/* Connects to cluster_url (waiting up to a few seconds: this runs before the loop), creates or
 * binds the stream, the consumer and the bucket, and starts the threads. *out is owned by the
 * caller (vg_cluster_stop on the loop, then vg_cluster_free). VG_EIO with a sentence when the
 * server cannot be reached or refuses. */
int vg_cluster_start(const vg_cluster_params *p, vg_cluster **out, char *err, size_t errlen);

/* Handles what the cluster answers instead of the local managers: `ask` (queued in JetStream),
 * `job` (the bucket's view when it is final or the job is not in the local table), `cancel` of a
 * job that does not run here (its final state, or cancelled in the cluster behind the reply),
 * `watch` and
 * `unwatch` (recorded in / removed from the bucket of desired watches; the node holding the
 * stream's lease runs it). Returns 1
 * when it handled r (reply filled, or a negative code in *rc with *wire and err), 0 when the local
 * path should run. c NULL: 0. data[len] is the request as received. */
int vg_cluster_handle(vg_cluster *c, const vg_request *r, const char *data, size_t len,
                      cJSON *reply, int *rc, const char **wire, char *err, size_t errlen);

/* What the cluster answers later, for a door that can wait (dispatch.h): `watch` of a name the
 * node does not know yet (recorded with a KV create, so that of two nodes watching one name at
 * once one records it and the other answers existing or conflict), and `events NAME` when this
 * node cannot answer from memory (it does not run the stream, or its recent records do not reach
 * back to `since`): read from JetStream (vigil.stream.NAME.event), and `cancel` of a job the
 * cluster knows that neither runs here nor is final (answered once its node or the bucket has
 * cancelled it: docs/cluster.md). Same contract as
 * vg_streams_events_from_log: returns 1 when it took reply (done is called later on the loop,
 * once), 0 when the request goes the immediate way (c NULL, shutting down, another op, a request
 * answered at once). data[len] is the request as received. */
int vg_cluster_defer(vg_cluster *c, const vg_request *r, const char *data, size_t len, cJSON *reply,
                     void (*done)(char *out, size_t len, void *opaque), void *opaque);

/* Adds "cluster" to info (nothing when c is NULL). */
void vg_cluster_add_info(const vg_cluster *c, cJSON *o);

/* Stop of the daemon begins: stop pulling, and give the jobs that the shutdown cancels back to the
 * queue (negative ack: another node runs them) instead of recording them as cancelled. */
void vg_cluster_drain(vg_cluster *c);
/* Closes the loop handles; the threads finish their queued commands. NULL is a no-op. */
void vg_cluster_stop(vg_cluster *c);
/* After the loop stopped: joins the threads, closes the connection, frees. NULL is a no-op. */
void vg_cluster_free(vg_cluster *c);

#endif
