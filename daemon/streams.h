/*
 * streams.h: vigild's live streams (private to daemon/): standing questions over camera feeds,
 * answered over a sliding window of the stream kept in the language model's KV cache, with event
 * transitions published on `stream/<name>/` and appended to a per-stream log.
 *
 * Threads: every vg_streams_* function runs on the loop thread and never blocks. Each stream has
 * its own reader thread (open, reconnect, decode, sample, patchify); one stream inference thread
 * serves every stream (encode, window prefill, answers); a janitor thread closes finished streams'
 * logs (the close fsyncs). Workers report to the loop through a mailbox (mailbox.h).
 * The pure event tracker (vg_stream_track_update) and the inference gate are declared in daemon.h
 * (library vg_daemon_core).
 */
#ifndef VG_DAEMON_STREAMS_H
#define VG_DAEMON_STREAMS_H

#include "bus.h"
#include "daemon.h"
#include "ipc.h"
#include "model.h"
#include "pipeline.h"

#include <cjson/cJSON.h>
#include <uv.h>

/* ===================================================================================================
 * The stream manager.
 */
typedef struct vg_streams vg_streams;

typedef struct vg_streams_params {
    uv_loop_t *loop;
    vg_model *model;             /* borrowed; outlives the manager */
    const vg_daemon_config *cfg; /* borrowed; the loop may replace live fields on SIGHUP */
    vg_infer_gate *gate;         /* borrowed, optional: held around each inference step */
} vg_streams_params;

/* Creates the manager and starts the stream inference and janitor threads. */
int vg_streams_create(const vg_streams_params *p, vg_streams **out, char *err, size_t errlen);
/* Where records are published (bus.h); borrowed, outlives the manager. */
void vg_streams_set_bus(vg_streams *ss, vg_bus *bus);

/* Handles watch, unwatch, streams and events (docs/protocol.md). Adds the reply's fields to reply
 * and returns 0, or a negative code with *wire_code and a sentence in err. */
int vg_streams_handle(vg_streams *ss, const vg_request *req, cJSON *reply, const char **wire_code,
                      char *err, size_t errlen);

/* The JPEG snapshot of stream name's `started` event record seq (the frame nearest to the event's
 * start, kept for the newest stream_snapshots_max events of a stream while it is in the table).
 * *jpeg is borrowed until the loop next runs a stream callback. Returns 0 or VG_ENOENT. */
int vg_streams_snapshot(vg_streams *ss, const char *name, unsigned long long seq,
                        const uint8_t **jpeg, size_t *len);

/* Number of streams in the table (for `info`). */
int vg_streams_count(const vg_streams *ss);

/* Borrows the daemon's job journal (outlives the manager): while it reports a failing disk, new
 * watches are refused with VG_WIRE_STORAGE, as new jobs are. */
void vg_streams_set_journal(vg_streams *ss, vg_journal *j);

/* For `info`: the streams whose log is failing to be written (its records wait in memory). */
int vg_streams_logs_failing(const vg_streams *ss);

/* `events NAME` for a stream that is not in the table (unwatched, or watched by an earlier run):
 * reads <state_dir>/streams/NAME.events on libuv's thread pool (never on the loop) and replies to
 * calls done(out, len, opaque) on the loop with the reply: the payload `events` has for a watched
 * stream plus "watched": false, bounded by the log's retention (its newest stream_log_max_records
 * records), or an error reply (`not_found` only when no log exists). out is malloc'd and done owns
 * it; out is NULL when memory ran out (the door drops the request). Returns 1 when it took reply
 * (done is called later, never from within this call) and 0 when the stream is in the table (the
 * caller keeps reply and goes on with vg_streams_handle). reply holds v, id and ok. A shutdown
 * waits for the reads in flight. */
int vg_streams_events_from_log(vg_streams *ss, const vg_request *r, cJSON *reply,
                               void (*done)(char *out, size_t len, void *opaque), void *opaque);

/* Fills o (a reply object) with the `events` payload of stream name read from a log or from the
 * cluster: stream, watched, events (lines[0..n): record JSON, oldest first; a line that does not
 * parse is left out), last_seq, more and truncated. lines stay the caller's. */
void vg_streams_events_payload(cJSON *o, const char *name, int watched, char *const *lines,
                               size_t n, unsigned long long last, int more, int truncated);

/* Cluster mode (cluster.c): what the stream manager asks before and tells after each record.
 * may_publish(name) runs before a record of stream name is published anywhere (bus, log,
 * JetStream): 0 means this node no longer holds the stream's lease, and the record is dropped and
 * the stream stopped (fencing). on_record(name, seq, line, len) gets every record published
 * (line borrowed for the call). Both on the loop thread; opaque is theirs. node, when set, is
 * added to every record as "node" (borrowed; outlives the hooks). */
typedef struct vg_streams_hooks {
    int (*may_publish)(const char *name, void *opaque);
    void (*on_record)(const char *name, unsigned long long seq, const char *line, size_t len,
                      void *opaque);
    void *opaque;
    const char *node;
} vg_streams_hooks;

/* Installs the hooks (copied; NULL removes them). Before any stream is watched. */
void vg_streams_set_hooks(vg_streams *ss, const vg_streams_hooks *h);

/* `watch` as vg_streams_handle does it, for a stream whose records continue a sequence kept
 * elsewhere (cluster mode): its first record is first_seq (>= 1), whatever its local log holds
 * (the log's records are not served by `events`: they may be another run's). */
int vg_streams_watch_at(vg_streams *ss, const vg_request *req, unsigned long long first_seq,
                        cJSON *reply, const char **wire_code, char *err, size_t errlen);

/* Whether stream name is in the table (watched, or still stopping). */
int vg_streams_has(const vg_streams *ss, const char *name);

/* Whether `events` of stream name after since can be answered from the stream's recent records
 * in memory: the stream is in the table and its ring holds every record after since. */
int vg_streams_events_covered(const vg_streams *ss, const char *name, unsigned long long since);

/* Stops stream name as `unwatch` does (no reply). Returns 0 or VG_ENOENT. */
int vg_streams_stop(vg_streams *ss, const char *name);

/* Graceful stop: stops every stream (state `ended` is published and logged) and calls
 * done(opaque) on the loop once every stream thread has finished. */
void vg_streams_shutdown(vg_streams *ss, void (*done)(void *opaque), void *opaque);

/* After the loop has stopped: joins the threads, closes the logs, frees everything. NULL is a
 * no-op. */
void vg_streams_destroy(vg_streams *ss);

#endif
