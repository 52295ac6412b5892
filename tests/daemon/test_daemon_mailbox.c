/*
 * test_daemon_mailbox.c: the worker -> loop mailbox (daemon/mailbox.c) on a real libuv loop.
 *  - many producers through a tiny queue (back-pressure): every message handled once, in each
 *    producer's order, then close runs its callback and uv_loop_close finds no handle left;
 *  - "post always takes the message": after close a post fails and frees its message, and a
 *    poster blocked on a full queue wakes up and frees its own; destroy frees what was queued;
 *  - destroying a mailbox that was never closed closes its handle, and its memory is released by
 *    the close callback (ASan would see a leak or a use after free);
 *  - vg_mailbox_alloc_must and bad parameters.
 */
#include "common.h"
#include "mailbox.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define PRODUCERS 3
#define PER_PROD  2000

typedef struct tmsg {
    int producer, seq;
} tmsg;

typedef struct ctx {
    vg_mailbox *mb;
    int handled, next[PRODUCERS], out_of_order, closed_calls, close_at;
    atomic_int freed;
} ctx;

static void t_free(void *m)
{
    free(m);
}

static ctx *g_ctx; /* for t_free_counted: free_msg has no opaque */

static void t_free_counted(void *m)
{
    atomic_fetch_add(&g_ctx->freed, 1);
    free(m);
}

static void t_handle(void *msg, void *opaque)
{
    ctx *c = opaque;
    tmsg *m = msg;
    if (m->seq != c->next[m->producer])
        c->out_of_order++;
    c->next[m->producer] = m->seq + 1;
    c->handled++;
    free(m);
}

static void t_closed(void *opaque)
{
    ctx *c = opaque;
    c->closed_calls++;
}

static void t_drained(void *opaque)
{
    ctx *c = opaque;
    if (c->close_at && c->handled >= c->close_at)
        vg_mailbox_close(c->mb, t_closed); /* a second call does nothing */
}

typedef struct prod {
    ctx *c;
    int id, n, failed;
} prod;

static void *producer_main(void *arg)
{
    prod *p = arg;
    for (int i = 0; i < p->n; i++) {
        tmsg *m = malloc(sizeof *m);
        m->producer = p->id;
        m->seq = i;
        if (vg_mailbox_post(p->c->mb, m) != 0)
            p->failed++;
    }
    return NULL;
}

static void test_mailbox_order_backpressure(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    ctx c;
    memset(&c, 0, sizeof c);
    c.close_at = PRODUCERS * PER_PROD;
    vg_mailbox_params p = {&loop, 4, t_handle, t_drained, t_free, &c};
    assert_int_equal(vg_mailbox_create(&p, &c.mb), 0);
    pthread_t th[PRODUCERS];
    prod pr[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        pr[i] = (prod){&c, i, PER_PROD, 0};
        assert_int_equal(pthread_create(&th[i], NULL, producer_main, &pr[i]), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the mailbox is closed */
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(pr[i].failed, 0);
        assert_int_equal(c.next[i], PER_PROD);
    }
    assert_int_equal(c.handled, PRODUCERS * PER_PROD);
    assert_int_equal(c.out_of_order, 0);
    assert_int_equal(c.closed_calls, 1);
    vg_mailbox_destroy(c.mb);
    assert_int_equal(uv_loop_close(&loop), 0); /* no handle left behind */
}

static void *post_one(void *arg)
{
    ctx *c = arg;
    tmsg *m = calloc(1, sizeof *m);
    return (void *)(intptr_t)vg_mailbox_post(c->mb, m);
}

static void test_mailbox_post_takes_message(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    ctx c;
    memset(&c, 0, sizeof c);
    g_ctx = &c;
    vg_mailbox_params p = {&loop, 1, t_handle, NULL, t_free_counted, &c};
    assert_int_equal(vg_mailbox_create(&p, &c.mb), 0);
    /* The first post fills the queue; the second blocks until the close wakes it up. */
    pthread_t a, b;
    void *ra, *rb;
    assert_int_equal(pthread_create(&a, NULL, post_one, &c), 0);
    pthread_join(a, &ra);
    assert_int_equal((int)(intptr_t)ra, 0);
    assert_int_equal(pthread_create(&b, NULL, post_one, &c), 0);
    uv_sleep(50);
    vg_mailbox_close(c.mb, t_closed);
    pthread_join(b, &rb);
    assert_int_equal((int)(intptr_t)rb, VG_EPIPE);
    assert_int_equal(atomic_load(&c.freed), 1); /* the blocked poster's message */
    /* After close, a post fails at once and frees its message. */
    tmsg *m = calloc(1, sizeof *m);
    assert_int_equal(vg_mailbox_post(c.mb, m), VG_EPIPE);
    assert_int_equal(atomic_load(&c.freed), 2);
    assert_int_equal(vg_mailbox_post(c.mb, NULL), VG_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(c.closed_calls, 1);
    assert_int_equal(c.handled, 0); /* queued before the close, never handled ... */
    vg_mailbox_destroy(c.mb);
    assert_int_equal(atomic_load(&c.freed), 3); /* ... but freed by destroy */
    assert_int_equal(uv_loop_close(&loop), 0);
    g_ctx = NULL;
}

static void test_mailbox_destroy_open(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    ctx c;
    memset(&c, 0, sizeof c);
    vg_mailbox_params p = {&loop, 8, t_handle, NULL, t_free, &c};
    assert_int_equal(vg_mailbox_create(&p, &c.mb), 0);
    pthread_t a;
    void *ra;
    assert_int_equal(pthread_create(&a, NULL, post_one, &c), 0);
    pthread_join(a, &ra);
    assert_int_equal((int)(intptr_t)ra, 0);
    /* Never closed: destroy frees the queued message and closes the handle; the close callback
     * releases the memory when the loop runs. */
    vg_mailbox_destroy(c.mb);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(c.handled, 0);
    assert_int_equal(uv_loop_close(&loop), 0);

    /* Closed but destroyed before the close callback ran: the callback frees, closed() is not
     * called. */
    assert_int_equal(uv_loop_init(&loop), 0);
    memset(&c, 0, sizeof c);
    p.loop = &loop;
    assert_int_equal(vg_mailbox_create(&p, &c.mb), 0);
    vg_mailbox_close(c.mb, t_closed);
    vg_mailbox_destroy(c.mb);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(c.closed_calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    vg_mailbox_destroy(NULL);
}

static void test_mailbox_params(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    vg_mailbox *mb = NULL;
    vg_mailbox_params p = {&loop, 4, t_handle, NULL, t_free, NULL};
    vg_mailbox_params bad = p;
    bad.capacity = 0;
    assert_int_equal(vg_mailbox_create(&bad, &mb), VG_EINVAL);
    bad = p;
    bad.handle = NULL;
    assert_int_equal(vg_mailbox_create(&bad, &mb), VG_EINVAL);
    bad = p;
    bad.free_msg = NULL;
    assert_int_equal(vg_mailbox_create(&bad, &mb), VG_EINVAL);
    bad = p;
    bad.loop = NULL;
    assert_int_equal(vg_mailbox_create(&bad, &mb), VG_EINVAL);
    assert_null(mb);
    assert_int_equal(uv_loop_close(&loop), 0); /* a failed create leaves no handle */

    unsigned char *z = vg_mailbox_alloc_must(64);
    assert_non_null(z);
    for (int i = 0; i < 64; i++)
        assert_int_equal(z[i], 0);
    free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mailbox_order_backpressure),
        cmocka_unit_test(test_mailbox_post_takes_message),
        cmocka_unit_test(test_mailbox_destroy_open),
        cmocka_unit_test(test_mailbox_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
