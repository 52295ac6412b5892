/*
 * test_ipc.c: ipc/ on a real libuv loop with real nanomsg sockets in a temporary directory.
 *
 * The loop runs on the test's main thread; clients run on helper threads. Replies are held back
 * and sent in reverse order to prove that the raw REP keeps each request's routing header.
 */
#include "common.h"
#include "ipc.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#define N_CLIENTS 6
#define N_CALLS   20

typedef struct fixture {
    char dir[256];
    char cmd[300], ev[300];
    uv_loop_t loop;
    vg_ipc_server *srv;
    vg_ipc_req *held[N_CLIENTS];
    char held_data[N_CLIENTS][64];
    int n_held;
    int hold; /* batch size: reply once this many requests are held (in reverse order) */
    _Atomic int clients_done;
    uv_timer_t tick;
    int n_requests;
} fixture;

static void on_req(vg_ipc_server *srv, vg_ipc_req *req, const char *data, size_t len, void *op)
{
    fixture *f = op;
    f->n_requests++;
    if (len >= 5 && memcmp(data, "topic", 5) == 0) {
        vg_ipc_publish(srv, "job/a/token", "A", 1);
        vg_ipc_publish(srv, "job/b/token", "B", 1);
        vg_ipc_reply(req, "ok", 2);
        return;
    }
    if (f->hold <= 1) {
        char buf[128];
        int n = snprintf(buf, sizeof buf, "re:%.*s", (int)len, data);
        vg_ipc_reply(req, buf, (size_t)n);
        return;
    }
    f->held[f->n_held] = req;
    snprintf(f->held_data[f->n_held], sizeof f->held_data[0], "%.*s", (int)len, data);
    if (++f->n_held == f->hold) {
        for (int i = f->n_held - 1; i >= 0; i--) {
            char buf[128];
            int n = snprintf(buf, sizeof buf, "re:%s", f->held_data[i]);
            vg_ipc_reply(f->held[i], buf, (size_t)n);
        }
        f->n_held = 0;
    }
}

static void on_tick(uv_timer_t *t)
{
    fixture *f = t->data;
    if (f->clients_done)
        uv_stop(&f->loop);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/vg-ipc-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->cmd, sizeof f->cmd, "ipc://%s/cmd", f->dir);
    snprintf(f->ev, sizeof f->ev, "ipc://%s/ev", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    vg_ipc_server_params p;
    memset(&p, 0, sizeof p);
    p.cmd_urls[0] = f->cmd;
    p.event_urls[0] = f->ev;
    p.socket_mode = 0660;
    p.max_message_size = 4096;
    p.on_request = on_req;
    p.opaque = f;
    char err[256];
    int rc = vg_ipc_server_start(&f->loop, &p, &f->srv, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    uv_timer_init(&f->loop, &f->tick);
    f->tick.data = f;
    uv_timer_start(&f->tick, on_tick, 5, 5);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    vg_ipc_server_stop(f->srv);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char path[300];
    snprintf(path, sizeof path, "%s/cmd", f->dir);
    assert_int_not_equal(access(path, F_OK), 0); /* stop unlinks the socket paths */
    rmdir(f->dir);
    free(f);
    return 0;
}

typedef struct client_arg {
    fixture *f;
    int idx;
    int ok;
} client_arg;

static void *client_main(void *arg)
{
    client_arg *a = arg;
    vg_ipc_client *c;
    char err[256];
    if (vg_ipc_client_open(a->f->cmd, 5000, 0, 0, &c, err, sizeof err) < 0)
        return NULL;
    for (int i = 0; i < N_CALLS; i++) {
        char req[64], want[80];
        snprintf(req, sizeof req, "c%d-%d", a->idx, i);
        snprintf(want, sizeof want, "re:%s", req);
        char *rep;
        size_t len;
        if (vg_ipc_client_call(c, req, strlen(req), &rep, &len) == 0) {
            a->ok += len == strlen(want) && memcmp(rep, want, len) == 0;
            free(rep);
        }
    }
    vg_ipc_client_close(c);
    return NULL;
}

static void *done_after(void *arg)
{
    client_arg *as = arg;
    pthread_t th[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++)
        pthread_create(&th[i], NULL, client_main, &as[i]);
    for (int i = 0; i < N_CLIENTS; i++)
        pthread_join(th[i], NULL);
    as[0].f->clients_done = 1;
    return NULL;
}

/* Six clients at once, replies in reverse order of arrival: each gets its own answer. */
static void test_out_of_order_replies(void **state)
{
    fixture *f = *state;
    f->hold = N_CLIENTS;
    client_arg as[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++)
        as[i] = (client_arg){f, i, 0};
    pthread_t th;
    pthread_create(&th, NULL, done_after, as);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    for (int i = 0; i < N_CLIENTS; i++)
        assert_int_equal(as[i].ok, N_CALLS);
    assert_int_equal(f->n_held, 0);
}

static void *oversize_client(void *arg)
{
    fixture *f = arg;
    vg_ipc_client *c;
    char err[256];
    static char big[10000];
    memset(big, 'x', sizeof big);
    if (vg_ipc_client_open(f->cmd, 300, 0, 0, &c, err, sizeof err) == 0) {
        char *rep;
        size_t len;
        /* Over the 4096-byte limit: refused by the transport, so no reply. */
        if (vg_ipc_client_call(c, big, sizeof big, &rep, &len) == 0)
            free(rep), f->n_held = -100;
        vg_ipc_client_close(c);
    }
    /* The server still serves a new client. */
    if (vg_ipc_client_open(f->cmd, 3000, 0, 0, &c, err, sizeof err) == 0) {
        char *rep;
        size_t len;
        if (vg_ipc_client_call(c, "hello", 5, &rep, &len) == 0) {
            if (len == 8 && memcmp(rep, "re:hello", 8) == 0)
                f->n_held = 7;
            free(rep);
        }
        vg_ipc_client_close(c);
    }
    f->clients_done = 1;
    return NULL;
}

static void test_size_limit(void **state)
{
    fixture *f = *state;
    f->hold = 1;
    pthread_t th;
    pthread_create(&th, NULL, oversize_client, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    assert_int_equal(f->n_held, 7);
}

static void *sub_client(void *arg)
{
    fixture *f = arg;
    vg_ipc_sub *s;
    vg_ipc_client *c;
    char err[256];
    int got_a = 0, got_b = 0;
    if (vg_ipc_sub_open(f->ev, "job/a/", &s, err, sizeof err) == 0 &&
        vg_ipc_client_open(f->cmd, 2000, 0, 0, &c, err, sizeof err) == 0) {
        /* Subscriptions connect asynchronously: trigger publications until one arrives. */
        for (int i = 0; i < 100 && !got_a; i++) {
            char *rep;
            size_t len;
            if (vg_ipc_client_call(c, "topic", 5, &rep, &len) == 0)
                free(rep);
            char *msg;
            const char *t, *p;
            size_t pl;
            while (vg_ipc_sub_recv(s, 20, &msg, &t, &p, &pl) == 0) {
                if (!strcmp(t, "job/a/token") && pl == 1 && p[0] == 'A')
                    got_a = 1;
                if (!strncmp(t, "job/b/", 6))
                    got_b = 1;
                free(msg);
            }
        }
        vg_ipc_client_close(c);
        vg_ipc_sub_close(s);
    }
    f->n_held = got_a && !got_b ? 1 : -1;
    f->clients_done = 1;
    return NULL;
}

static void test_publish_topics(void **state)
{
    fixture *f = *state;
    pthread_t th;
    pthread_create(&th, NULL, sub_client, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    assert_int_equal(f->n_held, 1);
    assert_int_equal(vg_ipc_publish(f->srv, "bad topic", "x", 1), VG_EINVAL);
    assert_int_equal(vg_ipc_publish(f->srv, "", "x", 1), VG_EINVAL);
}

static void test_socket_mode(void **state)
{
    fixture *f = *state;
    char path[300];
    struct stat st;
    snprintf(path, sizeof path, "%s/cmd", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0660);
    snprintf(path, sizeof path, "%s/ev", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0660);
}

static void test_url_check(void **state)
{
    char err[256];
    assert_int_equal(vg_ipc_check_url("ipc:///run/vigil/x", 0, err, sizeof err), 0);
    assert_int_equal(vg_ipc_check_url("tcp://127.0.0.1:7000", 0, err, sizeof err), 0);
    assert_int_equal(vg_ipc_check_url("tcp://localhost:7000", 0, err, sizeof err), 0);
    assert_int_equal(vg_ipc_check_url("tcp://[::1]:7000", 0, err, sizeof err), 0);
    assert_int_equal(vg_ipc_check_url("tcp://0.0.0.0:7000", 0, err, sizeof err), VG_EINVAL);
    assert_non_null(strstr(err, "allow_remote"));
    assert_int_equal(vg_ipc_check_url("tcp://0.0.0.0:7000", 1, err, sizeof err), 0);
    assert_int_equal(vg_ipc_check_url("tcp://127.0.0.1:", 0, err, sizeof err), VG_EINVAL);
    assert_int_equal(vg_ipc_check_url("tcp://127.0.0.1:x1", 0, err, sizeof err), VG_EINVAL);
    assert_int_equal(vg_ipc_check_url("ws://127.0.0.1:80", 1, err, sizeof err), VG_EINVAL);
    assert_int_equal(vg_ipc_check_url("ipc://", 1, err, sizeof err), VG_EINVAL);
    assert_int_equal(vg_ipc_check_url("", 1, err, sizeof err), VG_EINVAL);
}

static void test_start_bad_url(void **state)
{
    fixture *f = *state;
    /* A bad URL fails the start with a sentence, and nothing leaks. */
    vg_ipc_server_params p;
    memset(&p, 0, sizeof p);
    p.cmd_urls[0] = "tcp://127.0.0.1:0x";
    p.event_urls[0] = f->ev;
    p.on_request = on_req;
    vg_ipc_server *s2 = NULL;
    char err[256] = "";
    assert_true(vg_ipc_server_start(&f->loop, &p, &s2, err, sizeof err) < 0);
    assert_null(s2);
    assert_true(strlen(err) > 0);
}

/* Starts a second server with its command socket at path; returns its result (a started server is
 * stopped again). */
static int start_at(fixture *f, const char *path, char *err, size_t errlen)
{
    char cmd[400], ev[400];
    snprintf(cmd, sizeof cmd, "ipc://%s", path);
    snprintf(ev, sizeof ev, "ipc://%s/ev2", f->dir);
    vg_ipc_server_params p;
    memset(&p, 0, sizeof p);
    p.cmd_urls[0] = cmd;
    p.event_urls[0] = ev;
    p.on_request = on_req;
    p.opaque = f;
    vg_ipc_server *s2 = NULL;
    err[0] = 0;
    int rc = vg_ipc_server_start(&f->loop, &p, &s2, err, errlen);
    if (rc == 0) {
        assert_non_null(s2);
        vg_ipc_server_stop(s2);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    } else {
        assert_null(s2);
    }
    return rc;
}

/* Issue #13 item 6: a directory at the socket path used to abort inside nanomsg, and a regular
 * file there was deleted. Only a stale socket is replaced; the rest is refused with a sentence. */
static void test_socket_path_occupied(void **state)
{
    fixture *f = *state;
    char path[400], err[512];
    struct stat st;
    /* A directory. */
    snprintf(path, sizeof path, "%s/adir", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(start_at(f, path, err, sizeof err), VG_EEXIST);
    assert_non_null(strstr(err, "not a socket"));
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(rmdir(path), 0);
    /* A regular file: refused and kept. */
    snprintf(path, sizeof path, "%s/afile", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("precious", fp);
    fclose(fp);
    assert_int_equal(start_at(f, path, err, sizeof err), VG_EEXIST);
    assert_non_null(strstr(err, "not a socket"));
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 8);
    assert_int_equal(unlink(path), 0);
    /* The live socket of the fixture's server: refused, and the server keeps its path. */
    snprintf(path, sizeof path, "%s/cmd", f->dir);
    assert_int_equal(start_at(f, path, err, sizeof err), VG_EEXIST);
    assert_non_null(strstr(err, "listening"));
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    /* A stale socket (bound, then its owner gone without unlinking): replaced. */
    snprintf(path, sizeof path, "%s/stale", f->dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    assert_int_equal(lstat(path, &st), 0);
    if (start_at(f, path, err, sizeof err) != 0)
        fail_msg("stale socket not replaced: %s", err);
    /* A dangling symbolic link is not a socket either. */
    snprintf(path, sizeof path, "%s/alink", f->dir);
    assert_int_equal(symlink("/nonexistent/vigil.cmd", path), 0);
    assert_int_equal(start_at(f, path, err, sizeof err), VG_EEXIST);
    assert_int_equal(unlink(path), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_check),
        cmocka_unit_test_setup_teardown(test_socket_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_order_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_topics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_bad_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_path_occupied, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
