/*
 * mailbox.c: worker -> loop messages: a bounded vg_queue and a uv_async_t (mailbox.h states the
 * rules).
 *
 * Invariants: `open` (under mu) is 1 from create until close; uv_async_send is called only under
 * mu while open, so no send can race with uv_close or follow it (libuv forbids touching a closing
 * handle). The queue is closed together with `open`, so a poster blocked on a full queue wakes up
 * with VG_EPIPE and frees its message. The async callback drains the queue completely (sends
 * coalesce). The memory of the mailbox, which holds the uv_async_t, is freed either by destroy
 * once the close callback has run, or by the close callback itself when destroy came first.
 *
 * Threads: create, close, destroy and the callbacks on the loop thread; post and alloc_must on
 * workers.
 */
#include "mailbox.h"

#include "common.h"

#include <pthread.h>
#include <stdlib.h>

enum mb_state { MB_OPEN, MB_CLOSING, MB_CLOSED };

struct vg_mailbox {
    uv_async_t async;
    vg_queue *q;
    pthread_mutex_t mu;
    int open; /* under mu */
    /* Loop-owned. */
    enum mb_state state;
    int destroyed; /* destroy came before the close callback: the callback frees */
    void (*handle)(void *msg, void *opaque);
    void (*drained)(void *opaque);
    void (*free_msg)(void *msg);
    void (*closed)(void *opaque);
    void *opaque;
};

static void on_async(uv_async_t *a)
{
    vg_mailbox *mb = a->data;
    void *msg;
    while (vg_queue_pop(mb->q, &msg, 0) == 0)
        mb->handle(msg, mb->opaque);
    if (mb->drained)
        mb->drained(mb->opaque);
}

static void on_close(uv_handle_t *h)
{
    vg_mailbox *mb = h->data;
    mb->state = MB_CLOSED;
    if (mb->destroyed) {
        free(mb);
        return;
    }
    if (mb->closed)
        mb->closed(mb->opaque);
}

int vg_mailbox_create(const vg_mailbox_params *p, vg_mailbox **out)
{
    if (!p || !p->loop || !p->handle || !p->free_msg || !out || p->capacity < 1 ||
        p->capacity > ((size_t)1 << 24))
        return VG_EINVAL;
    vg_mailbox *mb = calloc(1, sizeof *mb);
    if (!mb)
        return VG_ENOMEM;
    int rc = vg_queue_create(p->capacity, &mb->q);
    if (rc < 0) {
        free(mb);
        return rc;
    }
    /* Last: nothing can fail once the handle exists (a failed uv_async_init leaves none). */
    if ((rc = uv_async_init(p->loop, &mb->async, on_async)) < 0) {
        vg_queue_destroy(mb->q);
        free(mb);
        return rc;
    }
    pthread_mutex_init(&mb->mu, NULL);
    mb->async.data = mb;
    mb->open = 1;
    mb->state = MB_OPEN;
    mb->handle = p->handle;
    mb->drained = p->drained;
    mb->free_msg = p->free_msg;
    mb->opaque = p->opaque;
    *out = mb;
    return 0;
}

int vg_mailbox_post(vg_mailbox *mb, void *msg)
{
    if (!msg)
        return VG_EINVAL;
    int rc = vg_queue_push(mb->q, msg, -1); /* blocks while the loop is capacity messages behind */
    if (rc < 0) {
        mb->free_msg(msg);
        return VG_EPIPE;
    }
    pthread_mutex_lock(&mb->mu);
    if (mb->open)
        uv_async_send(&mb->async);
    pthread_mutex_unlock(&mb->mu);
    return 0;
}

void *vg_mailbox_alloc_must(size_t size)
{
    void *m;
    while (!(m = calloc(1, size)))
        uv_sleep(10);
    return m;
}

void vg_mailbox_close(vg_mailbox *mb, void (*closed)(void *opaque))
{
    if (!mb || mb->state != MB_OPEN)
        return;
    pthread_mutex_lock(&mb->mu);
    mb->open = 0;
    pthread_mutex_unlock(&mb->mu);
    vg_queue_close(mb->q);
    mb->state = MB_CLOSING;
    mb->closed = closed;
    uv_close((uv_handle_t *)&mb->async, on_close);
}

void vg_mailbox_destroy(vg_mailbox *mb)
{
    if (!mb)
        return;
    void *msg;
    vg_queue_close(mb->q);
    while (vg_queue_pop(mb->q, &msg, 0) == 0)
        mb->free_msg(msg);
    vg_queue_destroy(mb->q);
    mb->q = NULL;
    pthread_mutex_destroy(&mb->mu);
    if (mb->state == MB_CLOSED) {
        free(mb);
        return;
    }
    /* Still open or closing: libuv holds the handle until its close callback, which frees. */
    mb->destroyed = 1;
    if (mb->state == MB_OPEN) {
        mb->state = MB_CLOSING;
        uv_close((uv_handle_t *)&mb->async, on_close);
    }
}
