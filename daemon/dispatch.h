/*
 * dispatch.h: the one request path of vigild (private to daemon/). Every door -- the nanomsg
 * command socket, the HTTP front end -- hands a native request (docs/protocol.md: one JSON object)
 * to vg_dispatch_request and sends back the native reply it returns; the doors translate, they
 * never handle an operation themselves.
 *
 * Threads: loop thread only.
 */
#ifndef VG_DAEMON_DISPATCH_H
#define VG_DAEMON_DISPATCH_H

#include "cluster.h"
#include "daemon.h"
#include "jobs.h"
#include "streams.h"

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct vg_dispatch {
    const vg_daemon_config *cfg; /* borrowed: the limits are read at each request */
    vg_jobs *jobs;               /* borrowed */
    vg_streams *streams;         /* borrowed */
    /* Adds the `info` fields to o (main.c owns what info reports). */
    void (*add_info)(cJSON *o, void *opaque);
    void *opaque;
    vg_cluster *cluster; /* borrowed; NULL unless cluster_url is set (cluster.h: ask and job) */
} vg_dispatch;

/* Parses data[len] as a native request, runs it (info, the job operations, the stream operations)
 * and returns the native reply as a malloc'd NUL-terminated JSON string (the caller frees it) with
 * its length in *reply_len, or NULL when memory ran out (the door then drops the request). An
 * invalid request gets an error reply, never NULL. */
char *vg_dispatch_request(const vg_dispatch *d, const char *data, size_t len, size_t *reply_len);

/* Called with a request's reply: reply is malloc'd and owned by the callee (NULL when memory ran
 * out: the door drops the request). */
typedef void (*vg_dispatch_done)(char *reply, size_t len, void *opaque);

/* The same request path for a door that can wait: done(reply, len, opaque) is called exactly once,
 * on the loop thread, either before this returns or later. Later only for what must not run on the
 * loop: `events` of a stream that is not watched, read from its log on disk (streams.h); through
 * vg_dispatch_request that request answers as if no log existed. */
void vg_dispatch_request_async(const vg_dispatch *d, const char *data, size_t len,
                               vg_dispatch_done done, void *opaque);

#endif
