/*
 * client.c: blocking REQ and SUB helpers for the `vigil` tool and the tests.
 *
 * Thread: any thread except the daemon's loop thread; one object belongs to one thread at a time.
 * A REQ socket resends a request that got no reply after the resend interval, with the same bytes;
 * the daemon makes that harmless by deduplicating on the request id.
 */
#include "ipc.h"

#include "common.h"

#include <nanomsg/nn.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>

#include <stdlib.h>
#include <string.h>

struct vg_ipc_client {
    int sock;
};

struct vg_ipc_sub {
    int sock;
    int timeout_set;
};

static int map_errno(int e)
{
    switch (e) {
    case ETIMEDOUT:
    case EAGAIN:
        return VG_ETIMEDOUT;
    case EINVAL:
        return VG_EINVAL;
    case ENOMEM:
        return VG_ENOMEM;
    case EMSGSIZE:
        return VG_EMSGSIZE;
    default:
        return VG_EIO;
    }
}

static int set_int(int sock, int level, int opt, int v)
{
    return nn_setsockopt(sock, level, opt, &v, sizeof v) < 0 ? map_errno(nn_errno()) : 0;
}

static int connect_url(int sock, const char *url, char *err, size_t errlen)
{
    int rc = vg_ipc_check_url(url, 1, err, errlen);
    if (rc < 0)
        return rc;
    if (strchr(url, '['))
        set_int(sock, NN_SOL_SOCKET, NN_IPV4ONLY, 0);
    if (nn_connect(sock, url) < 0)
        return vg_fail(err, errlen, VG_EIO, "cannot connect to '%s': %s", url,
                       nn_strerror(nn_errno()));
    return 0;
}

int vg_ipc_client_open(const char *url, int timeout_ms, int resend_ms, size_t max_reply,
                       vg_ipc_client **out, char *err, size_t errlen)
{
    vg_ipc_client *c = calloc(1, sizeof *c);
    if (!c)
        return VG_ENOMEM;
    c->sock = nn_socket(AF_SP, NN_REQ);
    if (c->sock < 0) {
        free(c);
        return vg_fail(err, errlen, VG_EIO, "cannot create a socket: %s", nn_strerror(nn_errno()));
    }
    if (timeout_ms <= 0)
        timeout_ms = 10000;
    if (max_reply == 0 || max_reply > VG_IPC_MAX_REPLY)
        max_reply = VG_IPC_MAX_REPLY;
    int rc = set_int(c->sock, NN_SOL_SOCKET, NN_RCVTIMEO, timeout_ms);
    if (!rc)
        rc = set_int(c->sock, NN_SOL_SOCKET, NN_SNDTIMEO, timeout_ms);
    if (!rc)
        rc = set_int(c->sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, (int)max_reply);
    if (!rc && resend_ms > 0)
        rc = set_int(c->sock, NN_REQ, NN_REQ_RESEND_IVL, resend_ms);
    if (rc < 0)
        vg_fail(err, errlen, rc, "cannot set socket options");
    else
        rc = connect_url(c->sock, url, err, errlen);
    if (rc < 0) {
        vg_ipc_client_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

void vg_ipc_client_close(vg_ipc_client *c)
{
    if (!c)
        return;
    nn_close(c->sock);
    free(c);
}

static int recv_copy(int sock, int flags, char **msg, size_t *len)
{
    void *buf = NULL;
    int n;
    do {
        n = nn_recv(sock, &buf, NN_MSG, flags);
    } while (n < 0 && nn_errno() == EINTR);
    if (n < 0)
        return map_errno(nn_errno());
    char *copy = malloc((size_t)n + 1);
    if (!copy) {
        nn_freemsg(buf);
        return VG_ENOMEM;
    }
    memcpy(copy, buf, (size_t)n);
    copy[n] = 0;
    nn_freemsg(buf);
    *msg = copy;
    *len = (size_t)n;
    return 0;
}

int vg_ipc_client_call(vg_ipc_client *c, const char *req, size_t len, char **reply,
                       size_t *reply_len)
{
    if (!c || (!req && len) || !reply || !reply_len)
        return VG_EINVAL;
    int rc;
    do {
        rc = nn_send(c->sock, req, len, 0);
    } while (rc < 0 && nn_errno() == EINTR);
    if (rc < 0)
        return map_errno(nn_errno());
    return recv_copy(c->sock, 0, reply, reply_len);
}

int vg_ipc_sub_open(const char *url, const char *topic, vg_ipc_sub **out, char *err, size_t errlen)
{
    if (!topic || strlen(topic) > VG_IPC_TOPIC_MAX)
        return vg_fail(err, errlen, VG_EINVAL, "bad topic");
    vg_ipc_sub *s = calloc(1, sizeof *s);
    if (!s)
        return VG_ENOMEM;
    s->sock = nn_socket(AF_SP, NN_SUB);
    if (s->sock < 0) {
        free(s);
        return vg_fail(err, errlen, VG_EIO, "cannot create a socket: %s", nn_strerror(nn_errno()));
    }
    int rc = 0;
    if (nn_setsockopt(s->sock, NN_SUB, NN_SUB_SUBSCRIBE, topic, strlen(topic)) < 0)
        rc = vg_fail(err, errlen, VG_EIO, "cannot subscribe: %s", nn_strerror(nn_errno()));
    else
        rc = set_int(s->sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, (int)VG_IPC_MAX_REPLY);
    if (!rc)
        rc = connect_url(s->sock, url, err, errlen);
    if (rc < 0) {
        vg_ipc_sub_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void vg_ipc_sub_close(vg_ipc_sub *s)
{
    if (!s)
        return;
    nn_close(s->sock);
    free(s);
}

int vg_ipc_sub_recv(vg_ipc_sub *s, int timeout_ms, char **msg, const char **topic,
                    const char **payload, size_t *payload_len)
{
    if (!s || !msg || !topic || !payload || !payload_len)
        return VG_EINVAL;
    int rc = set_int(s->sock, NN_SOL_SOCKET, NN_RCVTIMEO, timeout_ms < 0 ? -1 : timeout_ms);
    if (rc < 0)
        return rc;
    size_t len;
    if ((rc = recv_copy(s->sock, 0, msg, &len)) < 0)
        return rc;
    char *sp = memchr(*msg, ' ', len);
    if (!sp) {
        *topic = *msg;
        *payload = *msg + len;
        *payload_len = 0;
        return VG_EFORMAT;
    }
    *sp = 0;
    *topic = *msg;
    *payload = sp + 1;
    *payload_len = len - (size_t)(sp + 1 - *msg);
    return 0;
}
