/*
 * queue.c: a bounded multi-producer, multi-consumer ring of pointers under one mutex with two
 * condition variables. Invariant: 0 <= count <= cap; items live at (head + i) % cap. Closing wakes
 * every waiter; pops still drain what was queued before the close. Any thread.
 */
#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct vg_queue {
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    void **items;
    size_t cap, head, count;
    int closed;
};

int vg_queue_create(size_t capacity, vg_queue **out)
{
    if (!out || capacity == 0 || capacity > (1u << 24))
        return VG_EINVAL;
    vg_queue *q = calloc(1, sizeof *q);
    if (!q)
        return VG_ENOMEM;
    q->items = calloc(capacity, sizeof *q->items);
    if (!q->items) {
        free(q);
        return VG_ENOMEM;
    }
    q->cap = capacity;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->not_empty, &ca);
    pthread_cond_init(&q->not_full, &ca);
    pthread_condattr_destroy(&ca);
    *out = q;
    return 0;
}

void vg_queue_destroy(vg_queue *q)
{
    if (!q)
        return;
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    free(q->items);
    free(q);
}

static struct timespec deadline_after(int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Waits on cv until pred() holds, the queue closes or the timeout passes. Lock held. */
static int wait_for(vg_queue *q, pthread_cond_t *cv, int (*ready)(const vg_queue *), int timeout_ms)
{
    if (ready(q) || q->closed)
        return 0;
    if (timeout_ms == 0)
        return VG_EAGAIN;
    struct timespec dl = deadline_after(timeout_ms > 0 ? timeout_ms : 0);
    while (!ready(q) && !q->closed) {
        if (timeout_ms < 0) {
            pthread_cond_wait(cv, &q->lock);
        } else if (pthread_cond_timedwait(cv, &q->lock, &dl) != 0) {
            if (!ready(q) && !q->closed)
                return VG_ETIMEDOUT;
        }
    }
    return 0;
}

static int has_room(const vg_queue *q)
{
    return q->count < q->cap;
}

static int has_item(const vg_queue *q)
{
    return q->count > 0;
}

int vg_queue_push(vg_queue *q, void *item, int timeout_ms)
{
    if (!q || !item)
        return VG_EINVAL;
    pthread_mutex_lock(&q->lock);
    int rc = q->closed ? VG_EPIPE : wait_for(q, &q->not_full, has_room, timeout_ms);
    if (rc == 0 && q->closed)
        rc = VG_EPIPE;
    if (rc == 0) {
        q->items[(q->head + q->count) % q->cap] = item;
        q->count++;
        pthread_cond_signal(&q->not_empty);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

int vg_queue_pop(vg_queue *q, void **item, int timeout_ms)
{
    if (!q || !item)
        return VG_EINVAL;
    pthread_mutex_lock(&q->lock);
    int rc = wait_for(q, &q->not_empty, has_item, timeout_ms);
    if (rc == 0) {
        if (q->count == 0) {
            rc = VG_EPIPE; /* closed and drained */
        } else {
            *item = q->items[q->head];
            q->items[q->head] = NULL;
            q->head = (q->head + 1) % q->cap;
            q->count--;
            pthread_cond_signal(&q->not_full);
        }
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

void vg_queue_close(vg_queue *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->lock);
}

size_t vg_queue_len(vg_queue *q)
{
    if (!q)
        return 0;
    pthread_mutex_lock(&q->lock);
    size_t n = q->count;
    pthread_mutex_unlock(&q->lock);
    return n;
}

size_t vg_queue_capacity(const vg_queue *q)
{
    return q ? q->cap : 0;
}
