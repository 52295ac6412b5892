/*
 * streams.h: vigild's live streams (private to daemon/): standing questions over camera feeds,
 * answered over a sliding window of the stream kept in the language model's KV cache, with event
 * transitions published on `stream/<name>/` and appended to a per-stream log.
 *
 * Threads: every vg_streams_* function runs on the loop thread and never blocks. Each stream has
 * its own reader thread (open, reconnect, decode, sample, patchify); one stream inference thread
 * serves every stream (encode, window prefill, answers); a janitor thread closes finished streams'
 * logs (the close fsyncs). Workers report to the loop through a bounded queue and a uv_async.
 * vg_stream_track_update is pure (any thread).
 */
#ifndef VG_DAEMON_STREAMS_H
#define VG_DAEMON_STREAMS_H

#include "daemon.h"
#include "ipc.h"
#include "model.h"
#include "pipeline.h"

#include <cjson/cJSON.h>
#include <uv.h>

/* ===================================================================================================
 * Event transitions of one standing question (pure).
 */
typedef struct vg_stream_track {
    int active;   /* an event is ongoing */
    double start; /* its start, stream seconds */
    double end;   /* the latest end seen for it, stream seconds */
    char label[256];
} vg_stream_track;

enum { VG_TRANSITION_STARTED = 1, VG_TRANSITION_ENDED = 2 };

typedef struct vg_stream_transition {
    int kind;          /* VG_TRANSITION_* */
    double start, end; /* stream seconds; end only for ENDED */
    char label[256];
} vg_stream_transition;

/* Feeds one answer's parsed events ev[n] (times relative to base: stream time = base + t) over the
 * window [win_start, win_end] (stream seconds) into t. An event counts as present when, mapped to
 * stream time and clipped to the window, it ends no earlier than win_end - gap (it reaches the
 * newest video); of several, the one that ends last. Transitions written to out[0..1], count
 * returned:
 *  - not active, present: STARTED at the event's start;
 *  - active, present but starting more than gap after the tracked end: ENDED (tracked start, end)
 *    then STARTED (a new occurrence);
 *  - active, not present: ENDED at the end the answer gives for an event overlapping the tracked
 *    one (its end is well before the window end), else at the last end seen;
 *  - otherwise none (an active event's end advances).
 * NULL ev with n 0 is "no event". Returns 0, 1 or 2, or VG_EINVAL for bad arguments. */
int vg_stream_track_update(vg_stream_track *t, const vg_event *ev, size_t n, double base,
                           double win_start, double win_end, double gap,
                           vg_stream_transition out[2]);

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
void vg_streams_set_ipc(vg_streams *ss, vg_ipc_server *ipc);

/* Handles watch, unwatch, streams and events (docs/protocol.md). Adds the reply's fields to reply
 * and returns 0, or a negative code with *wire_code and a sentence in err. */
int vg_streams_handle(vg_streams *ss, const vg_request *req, cJSON *reply, const char **wire_code,
                      char *err, size_t errlen);

/* Number of streams in the table (for `info`). */
int vg_streams_count(const vg_streams *ss);

/* Graceful stop: stops every stream (state `ended` is published and logged) and calls
 * done(opaque) on the loop once every stream thread has finished. */
void vg_streams_shutdown(vg_streams *ss, void (*done)(void *opaque), void *opaque);

/* After the loop has stopped: joins the threads, closes the logs, frees everything. NULL is a
 * no-op. */
void vg_streams_destroy(vg_streams *ss);

#endif
