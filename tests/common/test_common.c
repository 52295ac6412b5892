/*
 * test_common.c: unit tests of common/: errors, logging, the arena and the bounded queue.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- errors ---- */
static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(vg_strerror(0), "success");
    assert_string_equal(vg_strerror(VG_EMODEL), "unusable model checkpoint");
    assert_string_equal(vg_strerror(VG_ETIMEDOUT), "timed out");
    assert_non_null(vg_strerror(-12345678));
    assert_non_null(vg_strerror(-ENOSPC));
    char err[64];
    assert_int_equal(vg_fail(err, sizeof err, VG_EINVAL, "bad %s #%d", "thing", 3), VG_EINVAL);
    assert_string_equal(err, "bad thing #3");
    assert_int_equal(vg_fail(NULL, 0, VG_EIO, "ignored"), VG_EIO);
}

/* ---- logging ---- */
struct captured {
    int count;
    int level;
    char module[32];
    char msg[256];
};

static void sink(int level, const char *module, const char *msg, void *opaque)
{
    struct captured *c = opaque;
    c->count++;
    c->level = level;
    snprintf(c->module, sizeof c->module, "%s", module);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
}

static int evaluated;
static int side_effect(void)
{
    evaluated++;
    return 42;
}

static void test_log_levels(void **state)
{
    (void)state;
    struct captured c = {0};
    vg_log_set_sink(sink, &c);
    vg_log_set_level(VG_LOG_WARNING);
    evaluated = 0;
    vg_log(VG_LOG_INFO, "test", "value %d", side_effect());
    assert_int_equal(evaluated, 0); /* filtered before the arguments are evaluated */
    assert_int_equal(c.count, 0);
    vg_log(VG_LOG_ERR, "test", "value %d\n", side_effect());
    assert_int_equal(evaluated, 1);
    assert_int_equal(c.count, 1);
    assert_int_equal(c.level, VG_LOG_ERR);
    assert_string_equal(c.module, "test");
    assert_string_equal(c.msg, "value 42"); /* trailing newline removed */
    vg_log(VG_LOG_WARNING, "m", "two\nlines");
    assert_string_equal(c.msg, "two lines");
    vg_log_set_sink(NULL, NULL);
    vg_log_set_level(VG_LOG_INFO);

    assert_int_equal(vg_log_parse_level("debug"), VG_LOG_DEBUG);
    assert_int_equal(vg_log_parse_level("WARNING"), VG_LOG_WARNING);
    assert_int_equal(vg_log_parse_level("5"), VG_LOG_NOTICE);
    assert_int_equal(vg_log_parse_level("loud"), -1);
    vg_log_set_level(99);
    assert_int_equal(vg_log_get_level(), VG_LOG_DEBUG);
    vg_log_set_level(VG_LOG_INFO);
}

/* vg_url_redact: the userinfo of every URL, as libavformat splits it, becomes "***". */
static void test_url_redact(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"rtsp://admin:s3cret@10.0.0.7:554/cam?tcp", "rtsp://***@10.0.0.7:554/cam?tcp"},
        {"rtsp://user@cam/live", "rtsp://***@cam/live"},
        {"rtsp://a:b@c@cam/x", "rtsp://***@cam/x"},     /* the last '@' of the authority */
        {"http://cam/path@2/x", "http://cam/path@2/x"}, /* '@' past the authority: no userinfo */
        {"cannot open 'rtsp://u:p@h/a': 401. Then 'http://x:y@z'.",
         "cannot open 'rtsp://***@h/a': 401. Then 'http://***@z'."},
        {"udp://127.0.0.1:5000", "udp://127.0.0.1:5000"},
        {"no url: a@b, ://@x", "no url: a@b, ://@x"},
        {"", ""},
        {"Sending: DESCRIBE rtsp://h/cam RTSP/1.0  CSeq: 3  Authorization: Basic dXNlcjpwYXNz  "
         "--",
         "Sending: DESCRIBE rtsp://h/cam RTSP/1.0  CSeq: 3  Authorization: ***  --"},
        {"Authorization: Digest username=\"u\", response=\"ab\"\r\nCSeq: 4",
         "Authorization: ***\r\nCSeq: 4"},
    };
    char out[256];
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++) {
        size_t n = vg_url_redact(cases[i][0], out, sizeof out);
        assert_string_equal(out, cases[i][1]);
        assert_int_equal(n, strlen(cases[i][1]));
    }
    /* Cut short, never with a piece of the secret. */
    vg_url_redact("rtsp://admin:s3cret@cam/live", out, 12);
    assert_string_equal(out, "rtsp://***@");
    vg_url_redact(NULL, out, sizeof out);
    assert_string_equal(out, "");
    /* Log lines go through it, whoever writes them. */
    struct captured c = {0};
    vg_log_set_sink(sink, &c);
    vg_log(VG_LOG_ERR, "ffmpeg", "[rtsp] opening rtsp://admin:s3cret@cam/live");
    assert_string_equal(c.msg, "[rtsp] opening rtsp://***@cam/live");
    vg_log_set_sink(NULL, NULL);
}

static void test_log_stderr_prefix(void **state)
{
    (void)state;
    /* Redirect stderr into a pipe and check the syslog prefix. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(2);
    dup2(fds[1], 2);
    vg_log(VG_LOG_NOTICE, "daemon", "hello %s", "world");
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    char buf[128] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    assert_true(n > 0);
    assert_string_equal(buf, "<5>daemon: hello world\n");
}

/* ---- arena ---- */
static void test_arena(void **state)
{
    (void)state;
    vg_arena *a = vg_arena_create(128);
    assert_non_null(a);
    char *s = vg_arena_strdup(a, "hello");
    assert_string_equal(s, "hello");
    for (int i = 0; i < 100; i++) {
        size_t align = (size_t)1 << (i % 8);
        unsigned char *p = vg_arena_alloc(a, (size_t)(i * 7 + 1), align);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % align, 0);
        memset(p, 0xab, (size_t)(i * 7 + 1));
    }
    void *big = vg_arena_alloc(a, 1 << 20, 64);
    assert_non_null(big);
    memset(big, 1, 1 << 20);
    assert_null(vg_arena_alloc(a, 8, 3));         /* not a power of two */
    assert_null(vg_arena_calloc(a, SIZE_MAX, 2)); /* overflow */
    assert_null(vg_arena_alloc(a, SIZE_MAX - 8, 16));
    int *z = vg_arena_calloc(a, 10, sizeof(int));
    for (int i = 0; i < 10; i++)
        assert_int_equal(z[i], 0);
    assert_true(vg_arena_used(a) > (1 << 20));
    vg_arena_reset(a);
    assert_int_equal(vg_arena_used(a), 0);
    assert_true(vg_arena_reserved(a) <= (1 << 20));
    assert_non_null(vg_arena_strndup(a, "abcdef", 3));
    vg_arena_destroy(a);
    vg_arena_destroy(NULL);
}

/* ---- queue ---- */
static void test_queue_basic(void **state)
{
    (void)state;
    vg_queue *q;
    assert_int_equal(vg_queue_create(0, &q), VG_EINVAL);
    assert_int_equal(vg_queue_create(2, &q), 0);
    int a = 1, b = 2, c = 3;
    void *out;
    assert_int_equal(vg_queue_pop(q, &out, 0), VG_EAGAIN);
    assert_int_equal(vg_queue_pop(q, &out, 20), VG_ETIMEDOUT);
    assert_int_equal(vg_queue_push(q, &a, 0), 0);
    assert_int_equal(vg_queue_push(q, &b, 0), 0);
    assert_int_equal(vg_queue_push(q, &c, 0), VG_EAGAIN);
    assert_int_equal(vg_queue_push(q, &c, 20), VG_ETIMEDOUT);
    assert_int_equal(vg_queue_push(q, NULL, 0), VG_EINVAL);
    assert_int_equal(vg_queue_len(q), 2);
    assert_int_equal(vg_queue_pop(q, &out, 0), 0);
    assert_ptr_equal(out, &a);
    vg_queue_close(q);
    assert_int_equal(vg_queue_push(q, &c, 0), VG_EPIPE);
    assert_int_equal(vg_queue_pop(q, &out, -1), 0); /* drained after close */
    assert_ptr_equal(out, &b);
    assert_int_equal(vg_queue_pop(q, &out, -1), VG_EPIPE);
    vg_queue_destroy(q);
    vg_queue_destroy(NULL);
}

#define PRODUCERS    4
#define PER_PRODUCER 20000

struct prod_arg {
    vg_queue *q;
    int id;
};

static void *producer(void *p)
{
    struct prod_arg *arg = p;
    for (int i = 0; i < PER_PRODUCER; i++) {
        uintptr_t v = ((uintptr_t)arg->id << 24) | (uintptr_t)(i + 1);
        if (vg_queue_push(arg->q, (void *)v, -1) != 0)
            return (void *)1;
    }
    return NULL;
}

struct cons_arg {
    vg_queue *q;
    long count;
    int last[PRODUCERS];
    int order_ok;
};

static void *consumer(void *p)
{
    struct cons_arg *arg = p;
    void *item;
    while (vg_queue_pop(arg->q, &item, -1) == 0) {
        uintptr_t v = (uintptr_t)item;
        int id = (int)(v >> 24), seq = (int)(v & 0xffffff);
        if (seq <= arg->last[id])
            arg->order_ok = 0; /* per-producer FIFO must hold for each consumer */
        arg->last[id] = seq;
        arg->count++;
    }
    return NULL;
}

static void test_queue_threads(void **state)
{
    (void)state;
    vg_queue *q;
    assert_int_equal(vg_queue_create(16, &q), 0);
    pthread_t prod[PRODUCERS], cons[2];
    struct prod_arg pa[PRODUCERS];
    struct cons_arg ca[2];
    memset(ca, 0, sizeof ca);
    for (int i = 0; i < 2; i++) {
        ca[i].q = q;
        ca[i].order_ok = 1;
        pthread_create(&cons[i], NULL, consumer, &ca[i]);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pa[i].q = q;
        pa[i].id = i;
        pthread_create(&prod[i], NULL, producer, &pa[i]);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        void *rv;
        pthread_join(prod[i], &rv);
        assert_null(rv);
    }
    vg_queue_close(q);
    for (int i = 0; i < 2; i++)
        pthread_join(cons[i], NULL);
    assert_int_equal(ca[0].count + ca[1].count, (long)PRODUCERS * PER_PRODUCER);
    assert_true(ca[0].order_ok && ca[1].order_ok);
    vg_queue_destroy(q);
}

static void test_read_file(void **state)
{
    (void)state;
    char path[] = "/tmp/vg_test_read_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "abc", 3), 3);
    close(fd);
    char *data;
    size_t len;
    char err[256];
    assert_int_equal(vg_read_file(path, 10, &data, &len, err, sizeof err), 0);
    assert_int_equal(len, 3);
    assert_string_equal(data, "abc");
    free(data);
    assert_int_equal(vg_read_file(path, 2, &data, &len, err, sizeof err), VG_ELIMIT);
    unlink(path);
    assert_int_equal(vg_read_file(path, 10, &data, &len, err, sizeof err), VG_ENOENT);
    assert_non_null(strstr(err, path));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),          cmocka_unit_test(test_log_levels),
        cmocka_unit_test(test_log_stderr_prefix), cmocka_unit_test(test_arena),
        cmocka_unit_test(test_queue_basic),       cmocka_unit_test(test_queue_threads),
        cmocka_unit_test(test_read_file),         cmocka_unit_test(test_url_redact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
