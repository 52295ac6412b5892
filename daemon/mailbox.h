/*
 * mailbox.h: the one way worker threads report to the loop thread (private to daemon/; library
 * vg_daemon_core). A mailbox is a bounded queue of messages and a uv_async_t whose callback, on
 * the loop, drains the queue completely and hands each message to its owner's handle callback.
 * jobs.c and streams.c each own one; what a message holds is theirs, the transport is this.
 *
 * Ownership, the one rule: vg_mailbox_post always takes the message. When it returns 0 the
 * message will be handed to handle() on the loop, which then owns it; when it fails (the mailbox
 * is closed) the mailbox has already freed it with the owner's free_msg. Either way the poster
 * never touches the message again.
 *
 * Coalescing: the wake-up is uv_async_send, and libuv coalesces sends: several posts may give one
 * callback, and a post made while the callback runs may be handled by that same callback. That is
 * why the callback drains the queue completely. Messages posted by one thread are handled in the
 * order they were posted.
 *
 * Back-pressure: when `capacity` messages wait, vg_mailbox_post blocks until the loop has drained
 * some (workers slow down while the loop is behind; memory stays bounded). So the loop thread
 * itself must never post.
 *
 * Messages that must arrive: some messages are a worker's last word about an object (a job is
 * done, a thread has let go of a stream); the owner frees the object only when that message
 * arrives, so losing it to a failed allocation would leak the object and stall a shutdown forever.
 * Allocate those with vg_mailbox_alloc_must, which waits for memory instead of failing. Every
 * other message (progress, tokens, records to publish) is allocated with calloc and dropped by
 * its poster when memory runs out. The owner closes its mailbox only once every message it must
 * receive has arrived, so a must message is never freed unhandled.
 *
 * Threads and lifetime: create, close and destroy run on the loop thread; post and
 * vg_mailbox_alloc_must on any other thread. close stops the mailbox: later posts fail (and free
 * their message, waking any poster blocked on a full queue); the uv_async_t is closed and
 * closed(opaque) runs on the loop once libuv is done with it. destroy, once no thread posts any
 * more, frees the messages still queued (with free_msg, unhandled) and the mailbox. The handle's
 * memory is released only after its close callback (libuv's rule): destroying a mailbox that was
 * never closed closes it, and its memory is then released by the close callback when the loop
 * runs again.
 */
#ifndef VG_DAEMON_MAILBOX_H
#define VG_DAEMON_MAILBOX_H

#include <stddef.h>
#include <uv.h>

typedef struct vg_mailbox vg_mailbox;

typedef struct vg_mailbox_params {
    uv_loop_t *loop;
    size_t capacity;                         /* messages that may wait (1 .. 1 << 24) */
    void (*handle)(void *msg, void *opaque); /* loop thread; takes msg */
    void (*drained)(void *opaque);           /* optional; loop thread, after each complete drain */
    void (*free_msg)(void *msg);             /* frees an unhandled message; any thread */
    void *opaque;                            /* passed to handle, drained and closed */
} vg_mailbox_params;

/* Creates a mailbox on p->loop (loop thread). Returns 0, VG_EINVAL (a NULL loop, handle or
 * free_msg, or a capacity out of range), VG_ENOMEM, or libuv's error from uv_async_init; on
 * failure nothing is left to close. */
int vg_mailbox_create(const vg_mailbox_params *p, vg_mailbox **out);

/* Any thread but the loop's. Takes msg (not NULL) whatever happens: returns 0 (it will be handled
 * on the loop), or VG_EPIPE (the mailbox is closed: msg was freed with free_msg). Blocks while the
 * queue is full. */
int vg_mailbox_post(vg_mailbox *mb, void *msg);

/* calloc(1, size) for a message that must arrive: never returns NULL, waits (10 ms naps) until
 * memory appears. Any thread but the loop's. */
void *vg_mailbox_alloc_must(size_t size);

/* Loop thread, once (later calls do nothing): later posts fail, messages still queued stay for
 * destroy, and closed(opaque) (optional) runs on the loop once the uv_async_t is closed. */
void vg_mailbox_close(vg_mailbox *mb, void (*closed)(void *opaque));

/* Loop thread, after every thread that posts has stopped (normally after closed() ran): frees
 * what is still queued with free_msg, then the mailbox (see the lifetime rule above for a mailbox
 * that is still open or closing). closed() is not called after destroy. NULL is a no-op. */
void vg_mailbox_destroy(vg_mailbox *mb);

#endif
