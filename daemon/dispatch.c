/*
 * dispatch.c: the one request path (dispatch.h), moved out of main.c so that every door calls it.
 */
#include "dispatch.h"

#include "common.h"

#include <stdlib.h>
#include <string.h>

#define MOD "vigild"

static char *error_reply(const char *id_json, const char *code, const char *msg, size_t *len)
{
    return vg_proto_error_reply(id_json, code, msg, len);
}

/* The one request path; with done set, an `events` request for an unwatched stream is handed to
 * the stream manager's log reader (returns NULL with *deferred = 1: done answers later). */
static char *run(const vg_dispatch *d, const char *data, size_t len, size_t *reply_len,
                 vg_dispatch_done done, void *opaque, int *deferred)
{
    *deferred = 0;
    vg_proto_limits lim = {d->cfg->max_message_size, d->cfg->max_new_tokens_limit,
                           d->cfg->job_deadline_s, d->cfg->max_frames_limit,
                           d->cfg->max_pixels_limit};
    vg_request r;
    const char *wire = NULL;
    char err[768];
    int rc = vg_proto_parse(data, len, &lim, &r, &wire, err, sizeof err);
    if (rc < 0) {
        vg_log(VG_LOG_DEBUG, MOD, "bad request: %s", err);
        return error_reply(r.id_json, wire, err, reply_len);
    }
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        vg_request_clear(&r);
        return NULL;
    }
    cJSON_AddNumberToObject(o, "v", VG_PROTO_VERSION);
    cJSON *id = r.id_json[0] ? cJSON_Parse(r.id_json) : cJSON_CreateNull();
    cJSON_AddItemToObject(o, "id", id ? id : cJSON_CreateNull());
    cJSON_AddTrueToObject(o, "ok");
    int is_stream_op = r.op == VG_OP_WATCH || r.op == VG_OP_UNWATCH || r.op == VG_OP_STREAMS ||
                       r.op == VG_OP_EVENTS;
    if (done && vg_cluster_defer(d->cluster, &r, data, len, o, done, opaque) > 0) {
        vg_request_clear(&r); /* answered later, from the cluster */
        *deferred = 1;
        return NULL;
    }
    if (done && r.op == VG_OP_EVENTS &&
        vg_streams_events_from_log(d->streams, &r, o, done, opaque) > 0) {
        vg_request_clear(&r); /* an unwatched stream: answered from its log, later */
        *deferred = 1;
        return NULL;
    }
    if (r.op == VG_OP_INFO)
        d->add_info(o, d->opaque);
    else if (!vg_cluster_handle(d->cluster, &r, data, len, o, &rc, &wire, err, sizeof err))
        rc = is_stream_op ? vg_streams_handle(d->streams, &r, o, &wire, err, sizeof err)
                          : vg_jobs_handle(d->jobs, &r, o, &wire, err, sizeof err);
    if (rc < 0) {
        cJSON_Delete(o);
        char *s = error_reply(r.id_json, wire ? wire : VG_WIRE_INTERNAL, err, reply_len);
        vg_request_clear(&r);
        return s;
    }
    vg_request_clear(&r);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s)
        *reply_len = strlen(s);
    return s;
}

char *vg_dispatch_request(const vg_dispatch *d, const char *data, size_t len, size_t *reply_len)
{
    int deferred;
    return run(d, data, len, reply_len, NULL, NULL, &deferred);
}

void vg_dispatch_request_async(const vg_dispatch *d, const char *data, size_t len,
                               vg_dispatch_done done, void *opaque)
{
    int deferred;
    size_t n = 0;
    char *s = run(d, data, len, &n, done, opaque, &deferred);
    if (!deferred)
        done(s, s ? n : 0, opaque);
}
