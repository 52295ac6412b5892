/*
 * ipc.h: vigil's message transport (the only public header of ipc/). Every nanomsg call lives in
 * ipc/, so a move to nng (wire-compatible) touches this folder only; no nn_* type appears here.
 *
 * Server side (the daemon), driven by a libuv loop:
 *  - a command socket: REP in raw mode, so any number of requests may be outstanding and replies
 *    may go out in any order. Each received request becomes a vg_ipc_req that keeps the request's
 *    routing header until vg_ipc_reply() sends the answer back to the client that asked.
 *  - an event socket: PUB. Every message is "<topic> <payload>"; topics look like
 *    "job/<id>/token" and "stream/<name>/...", so a subscriber filters with a prefix such as
 *    "job/<id>/".
 *  The sockets' NN_RCVFD/NN_SNDFD descriptors sit under uv_poll handles; a readable command socket
 *  is drained with NN_DONTWAIT, at most VG_IPC_DRAIN_CAP messages per callback, so one flood of
 *  requests cannot starve the loop.
 *
 * Client side (the `vigil` tool and tests): blocking REQ and SUB helpers with timeouts.
 *
 * Threads: a vg_ipc_server and all its vg_ipc_req belong to the loop thread. A vg_ipc_client or a
 * vg_ipc_sub belongs to one thread at a time. Errors are negative VG_E* codes (common.h) with a
 * sentence in err[errlen] where one is taken.
 */
#ifndef VG_IPC_H
#define VG_IPC_H

#include <stddef.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Messages received per poll callback before the loop gets to run other handles. */
#define VG_IPC_DRAIN_CAP 64
/* Longest topic accepted by vg_ipc_publish() and the subscribe helpers. */
#define VG_IPC_TOPIC_MAX 256
/* Largest reply the server sends and the client helpers accept by default. */
#define VG_IPC_MAX_REPLY ((size_t)16 << 20)
/* At most this many URLs per socket. */
#define VG_IPC_MAX_URLS 4

/* ---------------------------------------------------------------------------------------------------
 * URLs.
 */
/* Checks that url is an ipc:// URL with a path, or a tcp:// URL whose host is a loopback address
 * (127.x.y.z, ::1, localhost) unless allow_remote is non-zero. Returns 0 or VG_EINVAL. */
int vg_ipc_check_url(const char *url, int allow_remote, char *err, size_t errlen);

/* ---------------------------------------------------------------------------------------------------
 * Server.
 */
typedef struct vg_ipc_server vg_ipc_server;
typedef struct vg_ipc_req vg_ipc_req;

/* Called on the loop thread for each request. data[len] (NUL-terminated for convenience, though it
 * may contain NULs) is borrowed for the call. The callee owns req and must eventually pass it to
 * exactly one of vg_ipc_reply() or vg_ipc_req_drop(), during the call or later. */
typedef void (*vg_ipc_request_cb)(vg_ipc_server *srv, vg_ipc_req *req, const char *data, size_t len,
                                  void *opaque);

typedef struct vg_ipc_server_params {
    const char *cmd_urls[VG_IPC_MAX_URLS]; /* NULL-terminated when fewer */
    const char *event_urls[VG_IPC_MAX_URLS];
    int socket_mode; /* chmod() applied to each ipc:// path after bind, e.g. 0660 */
    /* Requests larger than this plus a little routing-header slack are dropped by the transport
     * (NN_RCVMAXSIZE); those between the two reach on_request, which must check len itself. */
    size_t max_message_size;
    vg_ipc_request_cb on_request;
    void *opaque;
} vg_ipc_server_params;

/* Binds every URL and starts polling on loop. Raises the process's soft RLIMIT_NOFILE to its hard
 * limit, and guards the descriptor table: when it is nearly full (idle peers holding every
 * descriptor, which made nanomsg spin on EMFILE), every listening endpoint is shut down, closing
 * all connections, and bound again a second later (docs/security.md). An ipc:// path that holds a
 * stale socket (left by a dead process: connecting to it is refused) is replaced; a socket someone
 * listens on, a directory or any other file there is refused with VG_EEXIST and a sentence, and
 * left in place. Returns 0, VG_EINVAL (bad URL or params), VG_EACCES, VG_EEXIST (address in use) or
 * VG_EIO. */
int vg_ipc_server_start(uv_loop_t *loop, const vg_ipc_server_params *p, vg_ipc_server **out,
                        char *err, size_t errlen);

/* Changes the size limit for later messages. Loop thread. */
int vg_ipc_server_set_max_message(vg_ipc_server *srv, size_t max_message_size);

/* Stops polling, closes the sockets, unlinks the ipc:// paths and frees the server once its uv
 * handles are closed (the loop must run for that). Every vg_ipc_req must have been answered or
 * dropped before; replies still waiting for the socket are dropped. NULL is a no-op. */
void vg_ipc_server_stop(vg_ipc_server *srv);

/* Sends data[len] as the reply to req and frees req (on success and on failure). Invalid UTF-8 in
 * data is replaced with U+FFFD on the way out (a JSON text stays valid JSON). A reply that the
 * transport cannot take right now is kept and retried when the socket becomes writable. Returns 0,
 * VG_EMSGSIZE (larger than VG_IPC_MAX_REPLY; nothing is sent) or VG_EIO. */
int vg_ipc_reply(vg_ipc_req *req, const char *data, size_t len);

/* Frees req without answering (the client times out or resends). NULL is a no-op. */
void vg_ipc_req_drop(vg_ipc_req *req);

/* Publishes "<topic> <payload>" on the event socket, the payload repaired to valid UTF-8 as a
 * reply is. Never blocks: a subscriber that cannot keep
 * up loses messages (PUB semantics). topic must not contain a space. Returns 0, VG_EINVAL or
 * VG_ENOMEM. */
int vg_ipc_publish(vg_ipc_server *srv, const char *topic, const char *payload, size_t len);

/* Counters for `info` and tests. */
typedef struct vg_ipc_stats {
    unsigned long long received, replied, published, dropped_replies;
    unsigned long long fd_trips; /* times the descriptor guard closed every connection */
} vg_ipc_stats;
void vg_ipc_server_get_stats(const vg_ipc_server *srv, vg_ipc_stats *out);

/* ---------------------------------------------------------------------------------------------------
 * Client helpers (blocking; not for the loop thread).
 */
typedef struct vg_ipc_client vg_ipc_client;

/* Opens a REQ socket connected to url. timeout_ms bounds each vg_ipc_client_call (<= 0: 10 s);
 * resend_ms is the REQ resend interval (<= 0: the nanomsg default, 60 s). max_reply (0 = 16 MiB)
 * bounds a reply. */
int vg_ipc_client_open(const char *url, int timeout_ms, int resend_ms, size_t max_reply,
                       vg_ipc_client **out, char *err, size_t errlen);
void vg_ipc_client_close(vg_ipc_client *c);
/* Sends req[len] and waits for the reply, which *reply receives (malloc'd, NUL-terminated; the
 * caller free()s it). Returns 0, VG_ETIMEDOUT, VG_EMSGSIZE or VG_EIO. */
int vg_ipc_client_call(vg_ipc_client *c, const char *req, size_t len, char **reply,
                       size_t *reply_len);

typedef struct vg_ipc_sub vg_ipc_sub;
/* Opens a SUB socket connected to url and subscribed to the prefix topic ("" = everything). */
int vg_ipc_sub_open(const char *url, const char *topic, vg_ipc_sub **out, char *err, size_t errlen);
void vg_ipc_sub_close(vg_ipc_sub *s);
/* Waits up to timeout_ms (< 0 forever) for the next message. *topic and *payload point into *msg,
 * which the caller free()s; the topic is NUL-terminated in place. Returns 0, VG_ETIMEDOUT,
 * VG_EFORMAT (a message without a space; *msg is still set) or VG_EIO. */
int vg_ipc_sub_recv(vg_ipc_sub *s, int timeout_ms, char **msg, const char **topic,
                    const char **payload, size_t *payload_len);

#ifdef __cplusplus
}
#endif
#endif
