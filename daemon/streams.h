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

/* Graceful stop: stops every stream (state `ended` is published and logged) and calls
 * done(opaque) on the loop once every stream thread has finished. */
void vg_streams_shutdown(vg_streams *ss, void (*done)(void *opaque), void *opaque);

/* After the loop has stopped: joins the threads, closes the logs, frees everything. NULL is a
 * no-op. */
void vg_streams_destroy(vg_streams *ss);

#endif
