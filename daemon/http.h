/*
 * http.h: vigild's HTTP door (private to daemon/; docs/http.md). An HTTP/1.1 server with SSE on the
 * daemon's own libuv loop (libwebsockets with its libuv event library on a foreign loop). Every
 * route is translated into a native request for the one request path (dispatch.h), and live
 * output comes from the publication fan-out (bus.h): the HTTP door has no handler of its own.
 *
 * Routes: POST /v1/chat/completions (OpenAI-compatible, three video forms, SSE with `stream`),
 * GET /v1/models, the REST mirror of the native protocol under /v1/jobs and /v1/streams, SSE feeds
 * (/v1/events, /v1/jobs/{id}/events, /v1/streams/{name}/events with Accept: text/event-stream),
 * GET /metrics (Prometheus text format), GET /health, GET /v1/info.
 *
 * Threads: every function runs on the loop thread; request bodies are decoded and spooled to disk
 * on libuv's thread pool.
 */
#ifndef VG_DAEMON_HTTP_H
#define VG_DAEMON_HTTP_H

#include "bus.h"
#include "daemon.h"
#include "dispatch.h"

#include <uv.h>

typedef struct vg_http vg_http;

typedef struct vg_http_params {
    uv_loop_t *loop;
    const vg_daemon_config *cfg; /* borrowed; http_* keys, limits read at each request */
    const vg_dispatch *dispatch; /* borrowed; outlives the server */
    vg_bus *bus;                 /* borrowed; the server registers a sink */
} vg_http_params;

/* Checks cfg's http_* keys (URL form, loopback unless allow_remote, TLS files, the token file)
 * without opening anything. Returns 0, or VG_EINVAL / VG_ENOENT with a sentence. An empty http_url
 * is valid (the door stays closed). */
int vg_http_check_config(const vg_daemon_config *cfg, char *err, size_t errlen);

/* The directory where uploaded videos are spooled: <state_dir>/http-spool (created 0700 by
 * vg_http_start). vigild adds it to the media roots while the HTTP door is open, so that the jobs
 * it starts pass the media policy. */
void vg_http_spool_dir(const vg_daemon_config *cfg, char *out, size_t outlen);

/* Starts listening on cfg->http_url. *out owned by the caller: vg_http_stop on the loop, then
 * vg_http_free after the loop has run dry. */
int vg_http_start(const vg_http_params *p, vg_http **out, char *err, size_t errlen);

/* Closes every connection and the listener (asynchronously: the loop finishes the closing).
 * NULL is a no-op. */
void vg_http_stop(vg_http *h);

/* After uv_run returned. NULL is a no-op. */
void vg_http_free(vg_http *h);

#endif
