/*
 * server.c: the daemon's nanomsg sockets on the libuv loop.
 *
 * Thread: everything here runs on the loop thread.
 *
 * Command socket: REP in raw mode (AF_SP_RAW). nn_recvmsg() with an NN_MSG control buffer hands us
 * each request's backtrace header (which pipe, which request id); we keep that buffer in the
 * vg_ipc_req and give it back to nn_sendmsg() with the reply, so nanomsg routes the reply to the
 * right client whatever the order of replies. A cooked REP would hold one request at a time and
 * silently drop the others.
 *
 * Socket paths: an ipc:// path is bound only when it is free or holds a stale socket (nobody
 * accepts a connection on it); a live socket, a directory or any other file is refused with a
 * sentence and left in place.
 *
 * Readiness: nanomsg signals both NN_RCVFD and NN_SNDFD as *readable* descriptors; they sit under
 * uv_poll handles (level-triggered). The receive callback drains at most VG_IPC_DRAIN_CAP messages
 * with NN_DONTWAIT; if more are waiting the descriptor stays readable and the next loop iteration
 * continues. A reply the socket cannot take (EAGAIN) waits in a small list that the NN_SNDFD poll
 * flushes; a raw REP normally drops replies for a vanished or full pipe itself (the REQ client
 * resends), so the list is a safety net with a cap.
 *
 * Every reply and event leaves as valid UTF-8: a message with an invalid sequence (old journal
 * records, half a character from a model) is repaired with U+FFFD before sending. JSON texts keep
 * bytes >= 0x80 inside strings only, so the repair keeps the JSON valid (docs/security.md).
 */
#include "ipc.h"

#include "common.h"

#include <nanomsg/nn.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MOD                "ipc"
#define PENDING_CAP        1024
#define PENDING_TIMEOUT_MS 5000.0
/* Bytes of routing header (a 4-byte request id per hop) allowed on top of max_message_size. */
#define VG_IPC_HEADER_SLACK 256

struct vg_ipc_req {
    vg_ipc_server *srv;
    void *control; /* nn_allocmsg'd header chunk from nn_recvmsg */
    char *data;    /* pending reply (only while waiting in the pending list) */
    size_t len;
    double queued_ms;
    vg_ipc_req *next;
};

struct vg_ipc_server {
    uv_loop_t *loop;
    int cmd, ev;
    uv_poll_t rpoll, wpoll;
    uv_timer_t retry;
    int wpoll_active;
    int n_handles_open;
    char *paths[2 * VG_IPC_MAX_URLS];
    int n_paths;
    struct endpoint {
        int sock, eid; /* eid < 0 while shut down by the descriptor guard */
        char *url;
    } eps[2 * VG_IPC_MAX_URLS];
    int n_eps;
    int mode;
    uv_timer_t fdwatch;
    int fd_tripped;
    double relisten_at_ms;
    size_t max_message_size;
    vg_ipc_request_cb on_request;
    void *opaque;
    vg_ipc_req *pend_head, *pend_tail;
    size_t n_pending;
    vg_ipc_stats stats;
};

static int nn_err_to_vg(int e)
{
    switch (e) {
    case EADDRINUSE:
        return VG_EEXIST;
    case EACCES:
    case EPERM:
        return VG_EACCES;
    case EINVAL:
    case ENAMETOOLONG:
    case EPROTONOSUPPORT:
        return VG_EINVAL;
    case ENOMEM:
        return VG_ENOMEM;
    case EAGAIN:
        return VG_EAGAIN;
    case ETIMEDOUT:
        return VG_ETIMEDOUT;
    default:
        return VG_EIO;
    }
}

static int is_loopback_host(const char *h, size_t n)
{
    if (n == 9 && memcmp(h, "localhost", 9) == 0)
        return 1;
    if (n == 5 && memcmp(h, "[::1]", 5) == 0)
        return 1;
    if (n >= 4 && memcmp(h, "127.", 4) == 0) {
        for (size_t i = 4; i < n; i++)
            if (!(h[i] == '.' || (h[i] >= '0' && h[i] <= '9')))
                return 0;
        return 1;
    }
    return 0;
}

int vg_ipc_check_url(const char *url, int allow_remote, char *err, size_t errlen)
{
    if (!url || !*url)
        return vg_fail(err, errlen, VG_EINVAL, "empty socket URL");
    if (strncmp(url, "ipc://", 6) == 0) {
        if (!url[6])
            return vg_fail(err, errlen, VG_EINVAL, "'%s' has no path", url);
        if (strlen(url + 6) >= 100)
            return vg_fail(err, errlen, VG_EINVAL, "'%s': the socket path is too long", url);
        return 0;
    }
    if (strncmp(url, "tcp://", 6) == 0) {
        const char *h = url + 6;
        const char *colon = strrchr(h, ':');
        if (!colon || colon == h || !colon[1])
            return vg_fail(err, errlen, VG_EINVAL, "'%s' needs tcp://HOST:PORT", url);
        for (const char *c = colon + 1; *c; c++)
            if (*c < '0' || *c > '9')
                return vg_fail(err, errlen, VG_EINVAL, "'%s': the port is not a number", url);
        if (!allow_remote && !is_loopback_host(h, (size_t)(colon - h)))
            return vg_fail(err, errlen, VG_EINVAL,
                           "'%s' is not a loopback address; set allow_remote = yes to listen on "
                           "other interfaces",
                           url);
        return 0;
    }
    return vg_fail(err, errlen, VG_EINVAL, "'%s': only ipc:// and tcp:// URLs are supported", url);
}

/* Makes path free for bind: nothing there is fine; a socket nobody listens on (left by a dead
 * process) is removed; anything else is refused with a sentence: a live socket (another daemon),
 * a directory (nanomsg would abort on it) or any other file (never deleted). */
static int clear_stale_socket(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        return vg_fail(err, errlen, errno == EACCES ? VG_EACCES : VG_EIO, "cannot use '%s': %s",
                       path, strerror(errno));
    }
    if (!S_ISSOCK(st.st_mode))
        return vg_fail(
            err, errlen, VG_EEXIST,
            "'%s' exists and is not a socket (%s); it is left alone: remove it or choose "
            "another socket path",
            path,
            S_ISDIR(st.st_mode)   ? "a directory"
            : S_ISREG(st.st_mode) ? "a file"
                                  : "not a socket");
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path)
        return vg_fail(err, errlen, VG_EINVAL, "'%s': the socket path is too long", path);
    memcpy(sa.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return vg_fail(err, errlen, VG_EIO, "cannot probe '%s': %s", path, strerror(errno));
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN || e == EINPROGRESS)
        return vg_fail(err, errlen, VG_EEXIST,
                       "another process is listening on '%s' (is another vigild running?)", path);
    if (e != ECONNREFUSED)
        return vg_fail(err, errlen, e == EACCES ? VG_EACCES : VG_EIO, "cannot probe '%s': %s", path,
                       strerror(e));
    if (unlink(path) != 0 && errno != ENOENT)
        return vg_fail(err, errlen, VG_EIO, "cannot remove the stale socket '%s': %s", path,
                       strerror(errno));
    vg_log(VG_LOG_INFO, MOD, "removed the stale socket '%s'", path);
    return 0;
}

/* Binds one URL: a stale socket file is cleared first, the path chmod'ed after. Returns the
 * endpoint id in *eid. */
static int bind_one(int sock, const char *url, int mode, int *eid, char *err, size_t errlen)
{
    int rc = vg_ipc_check_url(url, 1, err, errlen);
    if (rc < 0)
        return rc;
    const char *path = NULL;
    if (strncmp(url, "ipc://", 6) == 0) {
        path = url + 6;
        if ((rc = clear_stale_socket(path, err, errlen)) < 0)
            return rc;
    }
    if (strchr(url, '[')) {
        int v4only = 0;
        nn_setsockopt(sock, NN_SOL_SOCKET, NN_IPV4ONLY, &v4only, sizeof v4only);
    }
    int id = nn_bind(sock, url);
    if (id < 0) {
        int e = nn_errno();
        return vg_fail(err, errlen, nn_err_to_vg(e), "cannot listen on '%s': %s", url,
                       nn_strerror(e));
    }
    if (path && chmod(path, (mode_t)mode) != 0)
        return vg_fail(err, errlen, VG_EIO, "cannot chmod %04o '%s': %s", mode, path,
                       strerror(errno));
    *eid = id;
    return 0;
}

static int bind_all(vg_ipc_server *s, int sock, const char *const *urls, int mode, char *err,
                    size_t errlen)
{
    int n = 0;
    for (int i = 0; i < VG_IPC_MAX_URLS && urls[i]; i++, n++) {
        const char *url = urls[i];
        int eid, rc = bind_one(sock, url, mode, &eid, err, errlen);
        if (rc < 0)
            return rc;
        struct endpoint *ep = &s->eps[s->n_eps];
        ep->sock = sock;
        ep->eid = eid;
        ep->url = strdup(url);
        if (!ep->url)
            return VG_ENOMEM;
        s->n_eps++;
        if (strncmp(url, "ipc://", 6) == 0) {
            s->paths[s->n_paths] = strdup(url + 6);
            if (!s->paths[s->n_paths])
                return VG_ENOMEM;
            s->n_paths++;
        }
    }
    if (n == 0)
        return vg_fail(err, errlen, VG_EINVAL, "no socket URL given");
    return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Descriptor guard (issue #13 item 5). nanomsg accepts connections on its own worker thread and,
 * when accept() fails with EMFILE, retries at once, forever (nanomsg issue #152): a core spins and
 * no new client is accepted while idle peers hold every descriptor. nanomsg has no option to bound
 * connections, so the guard works from outside: every FDWATCH_MS it checks whether the descriptor
 * table is nearly full (only the top slots are probed, with fcntl; the table is counted through
 * /proc/self/fd only when one of them is in use). If it is, every listening endpoint is shut down,
 * which closes all of its connections (clients reconnect and resend by themselves), and after
 * RELISTEN_MS, once the table has room again, the same URLs are bound again.
 */
#define FDWATCH_MS  250
#define RELISTEN_MS 1000.0

/* The descriptor limit and how many to keep free (1/16 of it, 16 to 256). */
static long fd_limit(long *reserve)
{
    struct rlimit rl;
    long lim = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        lim =
            rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? 1L << 20 : (long)rl.rlim_cur;
    *reserve = VG_MIN(256, VG_MAX(16, lim / 16));
    return lim;
}

/* Open descriptors when the table is nearly full (within reserve of the limit), else 0. */
static long fd_table_nearly_full(long *limit)
{
    long reserve, lim = fd_limit(&reserve);
    *limit = lim;
    int high = 0;
    for (long fd = lim - 1; fd >= lim - reserve && fd >= 0 && !high; fd--)
        high = fcntl((int)fd, F_GETFD) != -1;
    if (!high)
        return 0; /* descriptors are handed out lowest first: the table never got this high */
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return lim; /* cannot even open a directory: full */
    long n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n >= lim - reserve ? n : 0;
}

static void on_fdwatch(uv_timer_t *t)
{
    vg_ipc_server *s = t->data;
    long lim, used = fd_table_nearly_full(&lim);
    if (!s->fd_tripped) {
        if (!used)
            return;
        for (int i = 0; i < s->n_eps; i++) {
            if (s->eps[i].eid >= 0)
                nn_shutdown(s->eps[i].sock, s->eps[i].eid);
            s->eps[i].eid = -1;
        }
        s->fd_tripped = 1;
        s->relisten_at_ms = vg_now_ms() + RELISTEN_MS;
        s->stats.fd_trips++;
        vg_log(VG_LOG_WARNING, MOD,
               "%ld of %ld file descriptors are open: closed every client connection; listening "
               "again in %.0f s",
               used, lim, RELISTEN_MS / 1000.0);
        return;
    }
    if (vg_now_ms() < s->relisten_at_ms || used)
        return;
    int down = 0;
    for (int i = 0; i < s->n_eps; i++) {
        struct endpoint *ep = &s->eps[i];
        char err[256];
        if (ep->eid < 0 && bind_one(ep->sock, ep->url, s->mode, &ep->eid, err, sizeof err) < 0) {
            ep->eid = -1;
            down++;
            vg_log(VG_LOG_WARNING, MOD, "listening again: %s", err);
        }
    }
    if (down) {
        s->relisten_at_ms = vg_now_ms() + RELISTEN_MS;
        return;
    }
    s->fd_tripped = 0;
    vg_log(VG_LOG_NOTICE, MOD, "listening again on every socket");
}

/* Lets this process use as many descriptors as its hard limit allows (the unit's LimitNOFILE). */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void req_free(vg_ipc_req *r)
{
    if (!r)
        return;
    if (r->control)
        nn_freemsg(r->control);
    free(r->data);
    free(r);
}

void vg_ipc_req_drop(vg_ipc_req *req)
{
    req_free(req);
}

/* Returns 0 when sent (control consumed), VG_EAGAIN when the socket cannot take it now, else an
 * error (control still ours). */
static int try_send(vg_ipc_server *s, vg_ipc_req *r, const char *data, size_t len)
{
    struct nn_iovec iov = {(void *)data, len};
    struct nn_msghdr h;
    memset(&h, 0, sizeof h);
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = &r->control;
    h.msg_controllen = NN_MSG;
    for (;;) {
        int rc = nn_sendmsg(s->cmd, &h, NN_DONTWAIT);
        if (rc >= 0) {
            r->control = NULL;
            s->stats.replied++;
            return 0;
        }
        int e = nn_errno();
        if (e == EINTR)
            continue;
        return e == EAGAIN ? VG_EAGAIN : nn_err_to_vg(e);
    }
}

static void start_wpoll(vg_ipc_server *s);
static void on_retry(uv_timer_t *t);

static void flush_pending(vg_ipc_server *s)
{
    vg_ipc_req **pp = &s->pend_head;
    vg_ipc_req *last = NULL;
    int progressed = 0;
    double now = vg_now_ms();
    while (*pp) {
        vg_ipc_req *r = *pp;
        int rc = try_send(s, r, r->data, r->len);
        if (rc == VG_EAGAIN && now - r->queued_ms < PENDING_TIMEOUT_MS) {
            last = r;
            pp = &r->next;
            continue;
        }
        if (rc < 0)
            s->stats.dropped_replies++;
        else
            progressed = 1;
        *pp = r->next;
        s->n_pending--;
        req_free(r);
    }
    s->pend_tail = last;
    if (!s->pend_head) {
        if (s->wpoll_active) {
            uv_poll_stop(&s->wpoll);
            s->wpoll_active = 0;
        }
        return;
    }
    if (!progressed && s->wpoll_active) {
        /* Writable for some pipe, not for ours: back off instead of spinning. */
        uv_poll_stop(&s->wpoll);
        s->wpoll_active = 0;
        uv_timer_start(&s->retry, on_retry, 10, 0);
    } else if (!s->wpoll_active) {
        start_wpoll(s);
    }
}

static void on_writable(uv_poll_t *h, int status, int events)
{
    flush_pending(h->data);
}

static void start_wpoll(vg_ipc_server *s)
{
    if (s->wpoll_active || !s->pend_head)
        return;
    if (uv_poll_start(&s->wpoll, UV_READABLE, on_writable) == 0)
        s->wpoll_active = 1;
}

static void on_retry(uv_timer_t *t)
{
    start_wpoll(t->data);
}

/* NULL when data[len] is valid UTF-8; else a malloc'd repaired copy in *fixed_len (or NULL on OOM,
 * with *oom set). */
static char *repair_utf8(const char *data, size_t len, size_t *fixed_len, int *oom)
{
    *oom = 0;
    if (vg_utf8_check(data, len) == len)
        return NULL;
    size_t cap;
    char *fixed = NULL;
    if (vg_mul_size(len, 3, &cap) == 0 && vg_add_size(cap, 1, &cap) == 0)
        fixed = malloc(cap);
    if (!fixed) {
        *oom = 1;
        return NULL;
    }
    *fixed_len = vg_utf8_sanitize(data, len, fixed, cap);
    vg_log(VG_LOG_WARNING, MOD, "an outgoing message held invalid UTF-8; repaired with U+FFFD");
    return fixed;
}

int vg_ipc_reply(vg_ipc_req *req, const char *data, size_t len)
{
    if (!req)
        return VG_EINVAL;
    int oom;
    size_t fixed_len = 0;
    char *fixed = repair_utf8(data, len, &fixed_len, &oom);
    if (oom) {
        req_free(req);
        return VG_ENOMEM;
    }
    if (fixed) {
        int rc = vg_ipc_reply(req, fixed, fixed_len);
        free(fixed);
        return rc;
    }
    vg_ipc_server *s = req->srv;
    if (len > VG_IPC_MAX_REPLY) {
        req_free(req);
        return VG_EMSGSIZE;
    }
    int rc = s->pend_head ? VG_EAGAIN : try_send(s, req, data, len);
    if (rc == 0) {
        req_free(req);
        return 0;
    }
    if (rc != VG_EAGAIN || s->n_pending >= PENDING_CAP) {
        s->stats.dropped_replies++;
        vg_log(VG_LOG_WARNING, MOD, "reply dropped: %s", vg_strerror(rc));
        req_free(req);
        return rc == VG_EAGAIN ? VG_EIO : rc;
    }
    req->data = malloc(len ? len : 1);
    if (!req->data) {
        req_free(req);
        return VG_ENOMEM;
    }
    memcpy(req->data, data, len);
    req->len = len;
    req->queued_ms = vg_now_ms();
    req->next = NULL;
    if (s->pend_tail)
        s->pend_tail->next = req;
    else
        s->pend_head = req;
    s->pend_tail = req;
    s->n_pending++;
    start_wpoll(s);
    return 0;
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    vg_ipc_server *s = h->data;
    for (int i = 0; i < VG_IPC_DRAIN_CAP; i++) {
        void *body = NULL, *control = NULL;
        struct nn_iovec iov = {&body, NN_MSG};
        struct nn_msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = &control;
        mh.msg_controllen = NN_MSG;
        int n = nn_recvmsg(s->cmd, &mh, NN_DONTWAIT);
        if (n < 0) {
            int e = nn_errno();
            if (e == EINTR)
                continue;
            if (e != EAGAIN)
                vg_log(VG_LOG_WARNING, MOD, "receive failed: %s", nn_strerror(e));
            return;
        }
        s->stats.received++;
        vg_ipc_req *r = calloc(1, sizeof *r);
        char *copy = malloc((size_t)n + 1);
        if (!r || !copy) {
            free(r);
            free(copy);
            nn_freemsg(body);
            if (control)
                nn_freemsg(control);
            vg_log(VG_LOG_ERR, MOD, "out of memory; request dropped");
            continue;
        }
        memcpy(copy, body, (size_t)n);
        copy[n] = 0;
        nn_freemsg(body);
        r->srv = s;
        r->control = control;
        s->on_request(s, r, copy, (size_t)n, s->opaque);
        free(copy);
    }
}

static int get_fd(int sock, int opt, int *fd)
{
    size_t sz = sizeof *fd;
    if (nn_getsockopt(sock, NN_SOL_SOCKET, opt, fd, &sz) < 0)
        return nn_err_to_vg(nn_errno());
    return 0;
}

static void server_free(vg_ipc_server *s)
{
    for (int i = 0; i < s->n_eps; i++)
        free(s->eps[i].url);
    for (int i = 0; i < s->n_paths; i++) {
        unlink(s->paths[i]);
        free(s->paths[i]);
    }
    free(s);
}

int vg_ipc_server_set_max_message(vg_ipc_server *s, size_t max)
{
    if (!s || max == 0 || max > (size_t)1 << 30)
        return VG_EINVAL;
    /* nanomsg applies NN_RCVMAXSIZE to the message as it arrives, with the REQ socket's routing
     * header (4 bytes per hop) in front of the body: without slack a request of the last few bytes
     * under the limit was dropped unanswered. The body's own limit is the caller's to check (the
     * daemon answers too_large), so a slightly larger request gets a reply instead of silence. */
    int v = (int)max + VG_IPC_HEADER_SLACK;
    if (nn_setsockopt(s->cmd, NN_SOL_SOCKET, NN_RCVMAXSIZE, &v, sizeof v) < 0)
        return nn_err_to_vg(nn_errno());
    s->max_message_size = max;
    return 0;
}

int vg_ipc_server_start(uv_loop_t *loop, const vg_ipc_server_params *p, vg_ipc_server **out,
                        char *err, size_t errlen)
{
    if (!loop || !p || !p->on_request || !out)
        return vg_fail(err, errlen, VG_EINVAL, "missing server parameters");
    vg_ipc_server *s = calloc(1, sizeof *s);
    if (!s)
        return VG_ENOMEM;
    s->loop = loop;
    s->on_request = p->on_request;
    s->opaque = p->opaque;
    s->cmd = nn_socket(AF_SP_RAW, NN_REP);
    s->ev = nn_socket(AF_SP, NN_PUB);
    int rc = 0;
    if (s->cmd < 0 || s->ev < 0) {
        rc = vg_fail(err, errlen, VG_EIO, "cannot create sockets: %s", nn_strerror(nn_errno()));
        goto fail;
    }
    rc = vg_ipc_server_set_max_message(s, p->max_message_size ? p->max_message_size : 1 << 20);
    if (rc < 0) {
        vg_fail(err, errlen, rc, "bad max_message_size %zu", p->max_message_size);
        goto fail;
    }
    int mode = p->socket_mode ? p->socket_mode : 0660;
    s->mode = mode;
    raise_fd_limit();
    if ((rc = bind_all(s, s->cmd, p->cmd_urls, mode, err, errlen)) < 0)
        goto fail;
    if ((rc = bind_all(s, s->ev, p->event_urls, mode, err, errlen)) < 0)
        goto fail;
    int rfd, wfd;
    if ((rc = get_fd(s->cmd, NN_RCVFD, &rfd)) < 0 || (rc = get_fd(s->cmd, NN_SNDFD, &wfd)) < 0) {
        vg_fail(err, errlen, rc, "cannot get the socket's descriptors");
        goto fail;
    }
    if ((rc = uv_poll_init(loop, &s->rpoll, rfd)) < 0) {
        vg_fail(err, errlen, rc, "uv_poll_init: %s", uv_strerror(rc));
        goto fail;
    }
    s->rpoll.data = s;
    s->n_handles_open = 1;
    if ((rc = uv_poll_init(loop, &s->wpoll, wfd)) < 0) {
        vg_fail(err, errlen, rc, "uv_poll_init: %s", uv_strerror(rc));
        goto fail_handles;
    }
    s->wpoll.data = s;
    s->n_handles_open = 2;
    uv_timer_init(loop, &s->retry);
    s->retry.data = s;
    s->n_handles_open = 3;
    uv_timer_init(loop, &s->fdwatch);
    s->fdwatch.data = s;
    s->n_handles_open = 4;
    uv_timer_start(&s->fdwatch, on_fdwatch, FDWATCH_MS, FDWATCH_MS);
    if ((rc = uv_poll_start(&s->rpoll, UV_READABLE, on_readable)) < 0) {
        vg_fail(err, errlen, rc, "uv_poll_start: %s", uv_strerror(rc));
        goto fail_handles;
    }
    *out = s;
    return 0;
fail_handles:
    /* The handles are closed by stop(), which frees s once they are. */
    vg_ipc_server_stop(s);
    return rc;
fail:
    if (s->cmd >= 0)
        nn_close(s->cmd);
    if (s->ev >= 0)
        nn_close(s->ev);
    server_free(s);
    return rc;
}

static void on_handle_closed(uv_handle_t *h)
{
    vg_ipc_server *s = h->data;
    if (--s->n_handles_open == 0)
        server_free(s);
}

void vg_ipc_server_stop(vg_ipc_server *s)
{
    if (!s)
        return;
    while (s->pend_head) {
        vg_ipc_req *r = s->pend_head;
        s->pend_head = r->next;
        req_free(r);
    }
    s->pend_tail = NULL;
    s->n_pending = 0;
    /* Close the uv handles before the sockets: the descriptors belong to the sockets. */
    uv_handle_t *hs[4] = {(uv_handle_t *)&s->rpoll, (uv_handle_t *)&s->wpoll,
                          (uv_handle_t *)&s->retry, (uv_handle_t *)&s->fdwatch};
    int n = s->n_handles_open;
    for (int i = 0; i < n; i++) {
        if (i < 2)
            uv_poll_stop((uv_poll_t *)hs[i]);
        uv_close(hs[i], on_handle_closed);
    }
    nn_close(s->cmd);
    nn_close(s->ev);
    s->cmd = s->ev = -1;
    if (n == 0)
        server_free(s);
}

int vg_ipc_publish(vg_ipc_server *s, const char *topic, const char *payload, size_t len)
{
    if (!s || !topic || strchr(topic, ' '))
        return VG_EINVAL;
    size_t tl = strlen(topic);
    if (tl == 0 || tl > VG_IPC_TOPIC_MAX || vg_utf8_check(topic, tl) != tl)
        return VG_EINVAL;
    int oom;
    size_t fixed_len = 0;
    char *fixed = repair_utf8(payload, len, &fixed_len, &oom);
    if (oom)
        return VG_ENOMEM;
    if (fixed) {
        int rc = vg_ipc_publish(s, topic, fixed, fixed_len);
        free(fixed);
        return rc;
    }
    size_t total;
    if (vg_add_size(tl + 1, len, &total) < 0)
        return VG_EINVAL;
    char stackbuf[1024];
    char *buf = total <= sizeof stackbuf ? stackbuf : malloc(total);
    if (!buf)
        return VG_ENOMEM;
    memcpy(buf, topic, tl);
    buf[tl] = ' ';
    if (len)
        memcpy(buf + tl + 1, payload, len);
    int rc = nn_send(s->ev, buf, total, NN_DONTWAIT);
    if (buf != stackbuf)
        free(buf);
    if (rc < 0)
        return nn_err_to_vg(nn_errno()) == VG_EAGAIN ? 0 : VG_EIO;
    s->stats.published++;
    return 0;
}

void vg_ipc_server_get_stats(const vg_ipc_server *s, vg_ipc_stats *out)
{
    *out = s->stats;
}
