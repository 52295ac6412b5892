/*
 * test_hardening_e2e.c: the real vigild (random tiny model, default 1 MiB message limit) against
 * the wire attacks of issue #13:
 *  - item 3: 10,000 mutated requests (invalid UTF-8, raw control characters, \u0000, duplicate
 * keys, cut and flipped bytes, some still valid asks whose questions then appear in `jobs`) each
 * get a reply that is strictly valid: it parses as JSON, is valid UTF-8 and holds no raw control
 * byte; a `jobs` listing is checked the same way every 50 messages. A journal left by an older
 * vigild with an invalid-UTF-8 question must not make `jobs` or `job` replies invalid either.
 *  - item 6: a directory or a file at the socket path: vigild refuses with a sentence, no abort.
 *  - item 5: idle connections up to vigild's descriptor limit: `info` still answered, no spin.
 *  - item 7: requests of 1,048,573 to 1,048,576 bytes (within the documented 1 MiB) get a reply,
 * and 1,048,577 bytes get `too_large` rather than silence.
 */
#define _GNU_SOURCE /* prlimit */
#include "common.h"
#include "daemon.h"
#include "ipc.h"
#include "../support/vg_testd.h"

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[256], model[320], media[320], rt[320], st[320], cmd_url[400], video[400];
static pid_t daemon_pid = -1;
static unsigned rng = 20261206;

static unsigned rnd(void)
{
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

/* Strictly valid as cJSON_PrintUnformatted writes JSON: parses, valid UTF-8, no byte below 0x20
 * (the printer emits no whitespace, and control characters inside strings must be escaped). */
static int strictly_valid(const char *rep, size_t rl, const char **why)
{
    if (vg_utf8_check(rep, rl) != rl) {
        *why = "invalid UTF-8";
        return 0;
    }
    for (size_t i = 0; i < rl; i++)
        if ((unsigned char)rep[i] < 0x20) {
            *why = "a raw control byte";
            return 0;
        }
    cJSON *o = cJSON_ParseWithLength(rep, rl);
    if (!o) {
        *why = "not JSON";
        return 0;
    }
    cJSON_Delete(o);
    return 1;
}

/* One call on client c; fails the test unless a strictly valid reply arrives. Returns the reply
 * (caller frees). */
static char *must_reply(vg_ipc_client *c, const char *req, size_t len, const char *what, size_t *rl)
{
    char *rep = NULL;
    int rc = vg_ipc_client_call(c, req, len, &rep, rl);
    if (rc != 0)
        fail_msg("%s (%zu bytes): no reply (%s)", what, len, vg_strerror(rc));
    const char *why = "";
    if (!strictly_valid(rep, *rl, &why)) {
        fprintf(stderr, "request: %.*s\nreply: %.*s\n", (int)VG_MIN(len, 300), req,
                (int)VG_MIN(*rl, 300), rep);
        fail_msg("%s: the reply is %s", what, why);
    }
    return rep;
}

static int group_setup(void **state)
{
    if (vg_testd_need_tools() != 0) {
        fprintf(stderr, "skipped: vigild, vigil, vigil-model or ffmpeg is missing\n");
        return -1;
    }
    if (vg_testd_tmpdir("/tmp/vg-harden-XXXXXX", dir, model, media, rt, st, cmd_url) != 0)
        return -1;
    if (vg_testd_make_model(dir, model) != 0)
        return -1;
    snprintf(video, sizeof video, "%s/t.mp4", media);
    if (vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=64x48:rate=4 "
                    "-t 1 '%s'",
                    video))
        return -1;
    /* A journal written before requests were checked: a finished job whose question is not
     * UTF-8 (what one bad ask left behind, across restarts). */
    mkdir(st, 0755);
    char json[512], path[400], line[600];
    snprintf(json, sizeof json,
             "{\"job\":\"poison\",\"state\":\"completed\",\"created\":%ld,\"finished\":%ld,"
             "\"video\":\"%s\",\"question\":\"bad \xFF\xFE byte \xE2\x82\",\"n_tokens\":1,"
             "\"text\":\"half \xF0\x9F\"}",
             (long)time(NULL), (long)time(NULL), video);
    snprintf(line, sizeof line, "%08x %s\n", vg_crc32(json, strlen(json)), json);
    snprintf(path, sizeof path, "%s/jobs.journal", st);
    if (vg_testd_write_file(path, line) != 0)
        return -1;
    char log[400], conf[400];
    snprintf(log, sizeof log, "%s/vigild.log", dir);
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    if (vg_testd_write_file(conf, "# defaults: max_message_size = 1 MiB\n") != 0)
        return -1;
    const char *sets[] = {"max_queued_jobs=64", NULL};
    vg_testd_spec spec = {.log = log,
                          .conf = conf,
                          .model = model,
                          .rt = rt,
                          .st = st,
                          .media = media,
                          .cmd_url = cmd_url,
                          .log_level = "notice",
                          .sets = sets,
                          .clear_notify_env = 1,
                          .call_timeout_ms = 10000};
    if (vg_testd_start(&spec, &daemon_pid) != 0) {
        vg_testd_sh(NULL, 0, "cat '%s' >&2", log);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    int rc = 0;
    if (daemon_pid > 0 && vg_testd_stop(&daemon_pid, 3000, NULL) != 0)
        rc = -1;
    if (vg_testd_check_log(dir) != 0)
        rc = -1;
    if (rc == 0)
        vg_testd_sh(NULL, 0, "rm -rf '%s'", dir);
    return rc;
}

/* The poisoned journal record is listed and fetched with U+FFFD in place of the bad bytes. */
static void test_poisoned_journal(void **state)
{
    vg_ipc_client *c;
    char err[256];
    assert_int_equal(vg_ipc_client_open(cmd_url, 10000, 0, 0, &c, err, sizeof err), 0);
    const char *reqs[] = {"{\"v\":1,\"op\":\"jobs\",\"limit\":1000}",
                          "{\"v\":1,\"op\":\"job\",\"job\":\"poison\"}"};
    for (size_t i = 0; i < VG_ARRAY_LEN(reqs); i++) {
        size_t rl;
        char *rep = must_reply(c, reqs[i], strlen(reqs[i]), reqs[i], &rl);
        assert_non_null(strstr(rep, "poison"));
        assert_non_null(strstr(rep, "bad \xEF\xBF\xBD"));
        free(rep);
    }
    vg_ipc_client_close(c);
}

/* Appends a random mutation of the kinds the attack used to buf at *n (cap bytes). */
static void mutate(char *buf, size_t *n, size_t cap)
{
    static const char *const pieces[] = {
        "\xFF", "\xC3",    "\xED\xA0\x80", "\xC0\xAF", "\xF4\x90\x80\x80", "\x01",    "\x1F",
        "\x00", "\\u0000", "\\ud800",      "\\udc00",  "\\u001b",          "\n",      "\x7F",
        "\"",   "\\",      "\xE2\x82\xAC", "\xF0\x9F", "\",\"op\":\"info", "\":1,\"v"};
    int k = (int)(rnd() % 4);
    size_t at = *n ? rnd() % *n : 0;
    if (k == 0 || k == 1) { /* insert a piece */
        const char *p = pieces[rnd() % VG_ARRAY_LEN(pieces)];
        size_t pl = strcmp(p, "") == 0 || p[0] ? strlen(p) : 1; /* "\x00" is one NUL byte */
        if (*n + pl >= cap)
            return;
        memmove(buf + at + pl, buf + at, *n - at);
        memcpy(buf + at, p, pl);
        *n += pl;
    } else if (k == 2) { /* flip a byte to anything */
        if (*n)
            buf[at] = (char)rnd();
    } else { /* cut */
        *n = at;
    }
}

static void test_mutated_requests(void **state)
{
    char q[200];
    snprintf(q, sizeof q, "what happens in \xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80?");
    char bases[8][900];
    snprintf(bases[0], sizeof bases[0],
             "{\"v\":1,\"op\":\"ask\",\"video\":\"%s\",\"question\":\"%s\",\"generation\":{"
             "\"max_new_tokens\":1}}",
             video, q);
    snprintf(bases[1], sizeof bases[1],
             "{\"v\":1,\"id\":\"r-1\",\"op\":\"ask\",\"video\":\"%s\",\"question\":\"%s\","
             "\"system\":\"be brief\",\"sampling\":{\"nframes\":2},\"generation\":{"
             "\"max_new_tokens\":1,\"seed\":7}}",
             video, q);
    snprintf(bases[2], sizeof bases[2], "{\"v\":1,\"op\":\"jobs\",\"limit\":1000}");
    snprintf(bases[3], sizeof bases[3], "{\"v\":1,\"op\":\"job\",\"job\":\"poison\"}");
    snprintf(bases[4], sizeof bases[4],
             "{\"v\":1,\"op\":\"watch\",\"url\":\"udp://127.0.0.1:9\",\"name\":\"cam\","
             "\"question\":\"%s\"}",
             q);
    snprintf(bases[5], sizeof bases[5], "{\"v\":1,\"op\":\"events\",\"name\":\"cam\"}");
    snprintf(bases[6], sizeof bases[6],
             "{\"v\":1,\"op\":\"ask\",\"video\":\"%s/%s\",\"question\":\"q\"}", media, q);
    snprintf(bases[7], sizeof bases[7], "{\"v\":1,\"op\":\"info\",\"id\":12}");
    vg_ipc_client *c;
    char err[256];
    assert_int_equal(vg_ipc_client_open(cmd_url, 10000, 0, 0, &c, err, sizeof err), 0);
    const int total = 10000;
    int n_ok = 0, n_err = 0, n_bad_request = 0, n_lists = 0;
    double t0 = vg_now_ms();
    for (int i = 0; i < total; i++) {
        char buf[2048];
        const char *b = bases[rnd() % VG_ARRAY_LEN(bases)];
        size_t n = strlen(b);
        memcpy(buf, b, n);
        int m = 1 + (int)(rnd() % 3);
        for (int k = 0; k < m; k++)
            mutate(buf, &n, sizeof buf);
        size_t rl;
        char what[64];
        snprintf(what, sizeof what, "mutated request %d", i);
        char *rep = must_reply(c, buf, n, what, &rl);
        cJSON *o = cJSON_ParseWithLength(rep, rl);
        if (vg_testd_is_ok(o)) {
            n_ok++;
        } else {
            n_err++;
            if (!strcmp(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(o, "error"), "code"),
                        "bad_request"))
                n_bad_request++;
        }
        cJSON_Delete(o);
        free(rep);
        if (i % 50 == 49) {
            const char *l = "{\"v\":1,\"op\":\"jobs\",\"limit\":1000}";
            free(must_reply(c, l, strlen(l), "jobs listing", &rl));
            n_lists++;
        }
    }
    double secs = (vg_now_ms() - t0) / 1000.0;
    vg_ipc_client_close(c);
    printf("hardening: %d mutated requests -> %d strictly valid replies (%d ok, %d errors, %d "
           "bad_request) and %d valid `jobs` listings in %.1f s\n",
           total, n_ok + n_err, n_ok, n_err, n_bad_request, n_lists, secs);
    fflush(stdout);
    assert_int_equal(n_ok + n_err, total);
    assert_true(n_bad_request > total / 4);
    assert_true(secs < 150);
    assert_int_equal(kill(daemon_pid, 0), 0);
}

/* Item 7: a request right at the documented 1 MiB limit gets a reply; one byte more gets
 * too_large. */
static void test_max_size_requests(void **state)
{
    vg_ipc_client *c;
    char err[256];
    assert_int_equal(vg_ipc_client_open(cmd_url, 10000, 0, 0, &c, err, sizeof err), 0);
    const char head[] = "{\"v\":1,\"op\":\"info\"}";
    size_t sizes[] = {1048572, 1048573, 1048574, 1048575, 1048576, 1048577};
    char *buf = malloc(1048577);
    assert_non_null(buf);
    for (size_t i = 0; i < VG_ARRAY_LEN(sizes); i++) {
        size_t n = sizes[i];
        memcpy(buf, head, sizeof head - 1);
        memset(buf + sizeof head - 1, ' ', n - (sizeof head - 1));
        char what[64];
        snprintf(what, sizeof what, "a request of %zu bytes", n);
        size_t rl;
        char *rep = must_reply(c, buf, n, what, &rl);
        cJSON *o = cJSON_ParseWithLength(rep, rl);
        if (n <= 1048576) {
            if (!vg_testd_is_ok(o))
                fail_msg("%s: %.*s", what, (int)rl, rep);
        } else {
            assert_string_equal(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(o, "error"), "code"),
                                "too_large");
        }
        cJSON_Delete(o);
        free(rep);
    }
    free(buf);
    vg_ipc_client_close(c);
}

/* Item 6 end to end: vigild with a directory, then a regular file, at its command socket's path
 * exits non-zero with a sentence (no abort inside nanomsg) and leaves the path as it was. */
static void test_socket_path_occupied(void **state)
{
    char rt2[400], sock[450], out[4096];
    snprintf(rt2, sizeof rt2, "%s/run2", dir);
    snprintf(sock, sizeof sock, "%s/vigil.cmd", rt2);
    assert_int_equal(mkdir(rt2, 0755), 0);
    for (int kind = 0; kind < 2; kind++) {
        if (kind == 0)
            assert_int_equal(mkdir(sock, 0700), 0);
        else
            assert_int_equal(vg_testd_write_file(sock, "precious\n"), 0);
        int rc = vg_testd_sh(out, sizeof out,
                             "timeout 60 '%s/daemon/vigild' --config '%s/vigild.conf' --model '%s' "
                             "--runtime-dir '%s' --state-dir '%s/state2' --set media_roots='%s' "
                             "2>&1",
                             VG_BINARY_DIR, dir, model, rt2, dir, media);
        if (rc == 0 || rc == -1 || rc == 124 || !strstr(out, "not a socket"))
            fail_msg("vigild with a %s at its socket path: status %d, output:\n%s",
                     kind ? "file" : "directory", rc, out);
        struct stat stt;
        assert_int_equal(lstat(sock, &stt), 0);
        assert_true(kind == 0 ? S_ISDIR(stt.st_mode) : S_ISREG(stt.st_mode) && stt.st_size == 9);
        if (kind == 0)
            assert_int_equal(rmdir(sock), 0);
        else
            assert_int_equal(unlink(sock), 0);
    }
}

/* CPU seconds vigild has used (user + system), from /proc/PID/stat. */
static double cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st_ = 0;
    /* After ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st_) != 2)
        return -1;
    return (double)(ut + st_) / (double)sysconf(_SC_CLK_TCK);
}

/* Item 5: idle connections up to vigild's descriptor limit. nanomsg retried accept() in a tight
 * loop on EMFILE (a core spinning) and new clients were never accepted, so `info` timed out. Now
 * vigild notices the descriptor table filling, drops the listeners' connections and listens again:
 * it must answer `info` and not spin. Runs last: it leaves vigild with a small limit. */
static void test_descriptor_exhaustion(void **state)
{
    struct rlimit lim = {256, 256}, old;
    assert_int_equal(prlimit(daemon_pid, RLIMIT_NOFILE, &lim, &old), 0);
    char path[450];
    snprintf(path, sizeof path, "%s/vigil.cmd", rt);
    enum { N_IDLE = 400 };
    int fds[N_IDLE], n_conn = 0;
    for (int i = 0; i < N_IDLE; i++) {
        fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fds[i] < 0)
            continue;
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        memcpy(sa.sun_path, path, strlen(path));
        /* A full listen backlog says EAGAIN: retry a little while vigild accepts. */
        for (int k = 0; k < 20; k++) {
            if (connect(fds[i], (struct sockaddr *)&sa, sizeof sa) == 0) {
                /* The SP protocol header of a REQ peer: nanomsg drops a connection that does not
                 * send one within a second; with it the connection stays, idle, like an idle
                 * client's. */
                static const unsigned char sp_req[8] = {0, 'S', 'P', 0, 0, 48, 0, 0};
                if (write(fds[i], sp_req, sizeof sp_req) == (ssize_t)sizeof sp_req)
                    n_conn++;
                break;
            }
            if (errno != EAGAIN)
                break;
            vg_testd_sleep_ms(5);
        }
    }
    vg_testd_sleep_ms(1500);
    double c0 = cpu_seconds(daemon_pid), t0 = vg_now_ms();
    vg_testd_sleep_ms(2000);
    double cpu = (cpu_seconds(daemon_pid) - c0) / ((vg_now_ms() - t0) / 1000.0);
    const char *info = "{\"v\":1,\"op\":\"info\"}";
    cJSON *r = NULL;
    double t1 = vg_now_ms();
    for (int i = 0; i < 5 && !vg_testd_is_ok(r); i++) {
        cJSON_Delete(r);
        r = vg_testd_call(cmd_url, info, strlen(info), 3000);
    }
    double info_ms = vg_now_ms() - t1;
    int ok = vg_testd_is_ok(r);
    cJSON_Delete(r);
    for (int i = 0; i < N_IDLE; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    printf("hardening: %d idle connections against a limit of 256 descriptors: vigild used %.0f%% "
           "of a core; `info` %s after %.0f ms\n",
           n_conn, cpu * 100, ok ? "answered" : "NOT answered", info_ms);
    fflush(stdout);
    assert_true(n_conn > 150); /* with vigild's own descriptors: up to the limit */
    assert_true(ok);
    assert_true(cpu < 0.5);
    assert_int_equal(kill(daemon_pid, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_poisoned_journal),      cmocka_unit_test(test_max_size_requests),
        cmocka_unit_test(test_mutated_requests),      cmocka_unit_test(test_socket_path_occupied),
        cmocka_unit_test(test_descriptor_exhaustion),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
