/*
 * test_streams_rtsp.c: vigild watching RTSP from a real server (issue 13, item 14): GStreamer's
 * RTSP server library, run by rtsp_server.py on loopback, serving live H.264 (160x120, 10 fps), on
 * the bundled demo model.
 *
 * Covers: the transport chosen with the watch's rtsp_transport ("tcp", the default; "udp";
 * "auto": FFmpeg's UDP then TCP), each against a server that accepts only that transport, and the
 * other one refused there (so the choice is real); credentials in the URL (user:pass@) against a
 * server that requires them, and a wrong password, with neither password nor its Basic encoding in
 * any reply, record, error, stream log or vigild's log (run at debug level, FFmpeg's chatter
 * included); a server killed mid-stream and started again (stalled, reconnecting, live again,
 * sequence numbers contiguous); a URL naming a stream the server does not have (stalled with a
 * sentence, reconnecting with a growing backoff, the daemon answering meanwhile).
 *
 * Exits 77 (CTest skip) only when the RTSP server cannot run (GStreamer's RTSP server or its
 * Python bindings absent); scripts/install-deps.sh installs them.
 */
#define _XOPEN_SOURCE 700
#include "stream_watch.h"

#include "../support/vg_testd.h"
#include "common.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define PYTHON "/usr/bin/python3"
#define SERVER VG_SOURCE_DIR "/tests/streams/rtsp_server.py"

/* The credentials, and what a leak would look like: the password, or user:password in Basic
 * encoding (base64). */
#define USER      "viewer"
#define PASS      "Pa55-w0rd"
#define PASS_B64  "dmlld2VyOlBhNTUtdzByZA=="
#define WRONG     "Wr0ngPw-77"
#define WRONG_B64 "dmlld2VyOldyMG5nUHctNzc="

static int port_base;

/* Starts rtsp_server.py on port (transport "tcp", "udp" or "any"; user NULL: no authentication)
 * and waits until it says it listens. Returns its pid, or -1. */
static pid_t start_server(int port, const char *transport, const char *user, const char *pass)
{
    char sport[16], log[64];
    snprintf(sport, sizeof sport, "%d", port);
    snprintf(log, sizeof log, "rtsp-%d.log", port);
    char *argv[12] = {PYTHON, SERVER, sport, "cam", "--transport", (char *)transport, NULL};
    if (user) {
        argv[6] = "--user";
        argv[7] = (char *)user;
        argv[8] = "--password";
        argv[9] = (char *)pass;
        argv[10] = NULL;
    }
    char path[400];
    snprintf(path, sizeof path, "%s/%s", sw_dir, log);
    remove(path);
    pid_t pid = sw_spawn(log, argv);
    for (int i = 0; pid > 0 && i < 300; i++) {
        if (vg_testd_sh(NULL, 0, "grep -q '^ready' '%s' 2>/dev/null", path) == 0)
            return pid;
        vg_testd_sleep_ms(50);
    }
    vg_testd_sh(NULL, 0, "cat '%s' >&2", path);
    sw_kill(pid);
    return -1;
}

/* transport: the watch's rtsp_transport, or NULL for the default. */
static cJSON *watch(const char *name, const char *url, const char *transport)
{
    char req[1024], tr[64] = "";
    if (transport)
        snprintf(tr, sizeof tr, ",\"rtsp_transport\":\"%s\"", transport);
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"watch\",\"name\":\"%s\",\"url\":\"%s\",\"question\":\"Is there a "
             "red box?\",\"fps\":2,\"window_s\":4,\"update_s\":1,\"max_pixels\":9216%s}",
             name, url, tr);
    return sw_call(req);
}

static void unwatch(const char *name)
{
    char req[128];
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"unwatch\",\"name\":\"%s\"}", name);
    cJSON *r = sw_call(req);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
}

/* Waits for state of stream name from record from; dumps its records on a timeout. */
static int expect_state(int from, const char *name, const char *state, int timeout_ms)
{
    int i = sw_wait(from, name, "state", state, timeout_ms);
    if (i < 0) {
        printf("stream %s never became %s:\n", name, state);
        sw_dump(from, name);
        /* What the RTSP servers said (GStreamer's warnings, a crash), for the diagnosis. */
        vg_testd_sh(NULL, 0,
                    "for f in '%s'/rtsp-*.log; do echo \"== $f\"; tail -n 40 \"$f\"; done >&2",
                    sw_dir);
    }
    return i;
}

/* Frames read by stream name so far (-1 when it is not watched). */
static double frames_of(const char *name)
{
    cJSON *s = sw_stream(name);
    double f = vg_testd_jnum(s, "frames");
    cJSON_Delete(s);
    return f;
}

static int no_secret(const char *text)
{
    if (!text)
        return 1;
    if (strstr(text, PASS) || strstr(text, PASS_B64) || strstr(text, WRONG) ||
        strstr(text, WRONG_B64)) {
        printf("a secret leaked: %s\n", text);
        return 0;
    }
    return 1;
}

static int json_no_secret(const cJSON *o)
{
    char *t = cJSON_PrintUnformatted(o);
    int ok = no_secret(t);
    free(t);
    return ok;
}

static int group_setup(void **state)
{
    (void)state;
    port_base = 40001 + (int)(getpid() % 10000) * 2;
    /* Debug level: FFmpeg's RTSP chatter (requests, replies, URLs) reaches the log too. */
    static const char *const sets[] = {"allowed_protocols=rtsp", "stream_stall_timeout_s=1.5",
                                       "stream_max_new_tokens=16", NULL};
    return sw_setup("/tmp/vg-stream-rtsp-XXXXXX", sets, "debug");
}

static int group_teardown(void **state)
{
    (void)state;
    return sw_teardown();
}

/* rtsp_transport picks the transport: each goes live on a server that accepts only that one, and
 * asking a TCP-only server for UDP fails with a sentence (then reconnects). The default is TCP;
 * "auto" is FFmpeg's (UDP, then TCP when the server refuses UDP). */
static void test_rtsp_tcp_and_udp(void **state)
{
    (void)state;
    int ptcp = port_base, pudp = port_base + 2;
    pid_t stcp = start_server(ptcp, "tcp", NULL, NULL);
    pid_t sudp = start_server(pudp, "udp", NULL, NULL);
    assert_true(stcp > 0 && sudp > 0);
    int from = cJSON_GetArraySize(sw_seen);
    char on_tcp[256], on_udp[256];
    snprintf(on_tcp, sizeof on_tcp, "rtsp://127.0.0.1:%d/cam", ptcp);
    snprintf(on_udp, sizeof on_udp, "rtsp://127.0.0.1:%d/cam", pudp);
    static const struct {
        const char *name, *transport;
        int tcp_server, live;
    } w[] = {
        {"tcp", "tcp", 1, 1},   {"udp", "udp", 0, 1},        {"default", NULL, 1, 1},
        {"auto", "auto", 1, 1}, {"udp-on-tcp", "udp", 1, 0}, {"default-on-udp", NULL, 0, 0},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(w); i++) {
        cJSON *r = watch(w[i].name, w[i].tcp_server ? on_tcp : on_udp, w[i].transport);
        assert_true(vg_testd_is_ok(r));
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "stream");
        assert_string_equal(vg_testd_jstr(st, "rtsp_transport"),
                            w[i].transport ? w[i].transport : "tcp");
        cJSON_Delete(r);
    }
    /* The client's --rtsp-transport. */
    char out[4096];
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "'%s/tools/vigil' --runtime-dir '%s' watch '%s' 'Is there a red "
                                 "box?' --name cli --rtsp-transport udp --detach --json",
                                 VG_BINARY_DIR, sw_rt, on_udp),
                     0);
    cJSON *r = watch("bad", on_tcp, "sctp");
    assert_string_equal(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "code"),
                        "bad_request");
    cJSON_Delete(r);
    for (size_t i = 0; i < VG_ARRAY_LEN(w); i++) {
        if (w[i].live) {
            assert_true(expect_state(from, w[i].name, "live", 20000) >= 0);
            continue;
        }
        int st = expect_state(from, w[i].name, "stalled", 20000);
        assert_true(st >= 0);
        const char *detail = vg_testd_jstr(cJSON_GetArrayItem(sw_seen, st), "detail");
        printf("%s: %s\n", w[i].name, detail);
        assert_true(strlen(detail) > 10);
    }
    assert_true(expect_state(from, "cli", "live", 20000) >= 0);
    unwatch("cli");
    /* Frames keep coming over both transports; the refused ones never went live. */
    double t0 = frames_of("tcp"), u0 = frames_of("udp");
    sw_pump(2000);
    assert_true(frames_of("tcp") > t0);
    assert_true(frames_of("udp") > u0);
    for (size_t i = 0; i < VG_ARRAY_LEN(w); i++) {
        if (w[i].live)
            assert_int_equal(sw_find(from, w[i].name, "state", "stalled"), -1);
        else
            assert_int_equal(sw_find(from, w[i].name, "state", "live"), -1);
    }
    for (size_t i = 0; i < VG_ARRAY_LEN(w); i++)
        unwatch(w[i].name);
    for (size_t i = 0; i < VG_ARRAY_LEN(w); i++)
        assert_true(expect_state(from, w[i].name, "ended", 10000) >= 0);
    sw_kill(stcp);
    sw_kill(sudp);
}

/* user:pass@ in the URL: the stream goes live on a server that requires them; a wrong password
 * stalls with a sentence; neither secret appears anywhere vigild writes. */
static void test_rtsp_credentials(void **state)
{
    (void)state;
    int port = port_base + 4;
    pid_t srv = start_server(port, "any", USER, PASS);
    assert_true(srv > 0);
    int from = cJSON_GetArraySize(sw_seen);
    char url[256], shown[256];
    snprintf(url, sizeof url, "rtsp://" USER ":" PASS "@127.0.0.1:%d/cam", port);
    snprintf(shown, sizeof shown, "rtsp://***@127.0.0.1:%d/cam", port);
    cJSON *r = watch("cred", url, NULL);
    assert_true(vg_testd_is_ok(r));
    assert_true(json_no_secret(r));
    assert_string_equal(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "stream"), "url"), shown);
    cJSON_Delete(r);
    r = watch("cred", url, NULL); /* the same watch again: the existing stream */
    assert_true(vg_testd_is_ok(r));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "existing")));
    assert_true(json_no_secret(r));
    cJSON_Delete(r);
    snprintf(url, sizeof url, "rtsp://" USER ":" WRONG "@127.0.0.1:%d/cam", port);
    r = watch("wrongpw", url, NULL);
    assert_true(vg_testd_is_ok(r));
    assert_true(json_no_secret(r));
    cJSON_Delete(r);
    /* An error reply quoting a URL: a protocol outside allowed_protocols. */
    r = watch("ftp", "ftp://" USER ":" PASS "@127.0.0.1/cam", NULL);
    assert_false(vg_testd_is_ok(r));
    assert_true(json_no_secret(r));
    cJSON_Delete(r);

    assert_true(expect_state(from, "cred", "live", 20000) >= 0);
    int st = expect_state(from, "wrongpw", "stalled", 20000);
    assert_true(st >= 0);
    const char *detail = vg_testd_jstr(cJSON_GetArrayItem(sw_seen, st), "detail");
    printf("wrong password: %s\n", detail);
    assert_non_null(strstr(detail, "401"));
    assert_true(expect_state(st, "wrongpw", "reconnecting", 10000) >= 0);
    sw_pump(1500);
    r = sw_call("{\"v\":1,\"op\":\"streams\"}");
    assert_true(json_no_secret(r));
    cJSON_Delete(r);
    r = sw_call("{\"v\":1,\"op\":\"events\",\"name\":\"wrongpw\"}");
    assert_true(vg_testd_is_ok(r));
    assert_true(json_no_secret(r));
    cJSON_Delete(r);
    r = sw_call("{\"v\":1,\"op\":\"info\"}");
    assert_true(json_no_secret(r));
    cJSON_Delete(r);
    /* A clip job on the same URL fails (a live stream is no clip) with a sentence quoting the URL:
     * the job reply shows it without the password. */
    char req[512];
    snprintf(url, sizeof url, "rtsp://" USER ":" PASS "@127.0.0.1:%d/cam", port);
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"job\":\"credjob\",\"video\":\"%s\",\"question\":\"q\"}",
             url);
    r = sw_call(req);
    assert_true(vg_testd_is_ok(r));
    assert_true(json_no_secret(r));
    cJSON_Delete(r);
    cJSON *job = NULL;
    for (int i = 0; i < 200 && !job; i++) {
        r = sw_call("{\"v\":1,\"op\":\"job\",\"job\":\"credjob\"}");
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(r, "job");
        if (!strcmp(vg_testd_jstr(j, "state"), "failed") ||
            !strcmp(vg_testd_jstr(j, "state"), "completed"))
            job = cJSON_Duplicate(j, 1);
        assert_true(json_no_secret(r));
        cJSON_Delete(r);
        if (!job)
            vg_testd_sleep_ms(100);
    }
    assert_non_null(job);
    const char *msg = vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(job, "error"), "message");
    printf("clip job on the stream: %s\n", msg);
    assert_string_equal(vg_testd_jstr(job, "video"), shown);
    assert_non_null(strstr(msg, "rtsp://***@"));
    cJSON_Delete(job);
    r = sw_call("{\"v\":1,\"op\":\"jobs\"}");
    assert_true(json_no_secret(r));
    cJSON_Delete(r);
    unwatch("cred");
    unwatch("wrongpw");
    assert_true(expect_state(from, "cred", "ended", 10000) >= 0);
    assert_true(expect_state(from, "wrongpw", "ended", 10000) >= 0);
    sw_kill(srv);
    /* Every record published, the stream logs on disk and vigild's own log (debug level). */
    const cJSON *rec;
    cJSON_ArrayForEach(rec, sw_seen) assert_true(json_no_secret(rec));
    char out[4096] = "";
    int found = vg_testd_sh(out, sizeof out,
                            "grep -r -l -e '" PASS "' -e '" PASS_B64 "' -e '" WRONG
                            "' -e '" WRONG_B64 "' '%s/vigild.log' '%s'",
                            sw_dir, sw_state);
    if (found == 0)
        printf("secrets found in: %s\n", out);
    assert_int_equal(found, 1); /* grep: nothing found */
    /* The log did see the URL, redacted (so the check above looked at the right place). */
    assert_int_equal(vg_testd_sh(NULL, 0, "grep -q 'rtsp://\\*\\*\\*@' '%s/vigild.log'", sw_dir),
                     0);
}

/* The server dies mid-stream and comes back on the same port. */
static void test_rtsp_server_restart(void **state)
{
    (void)state;
    int port = port_base + 6;
    pid_t srv = start_server(port, "any", NULL, NULL);
    assert_true(srv > 0);
    int from = cJSON_GetArraySize(sw_seen);
    char url[256];
    snprintf(url, sizeof url, "rtsp://127.0.0.1:%d/cam", port);
    cJSON *r = watch("restart", url, "udp"); /* UDP: the end shows as silence */
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    int live = expect_state(from, "restart", "live", 20000);
    assert_true(live >= 0);
    sw_pump(1500);
    sw_kill(srv);
    int st = expect_state(live, "restart", "stalled", 10000);
    assert_true(st >= 0);
    assert_true(expect_state(st, "restart", "reconnecting", 10000) >= 0);
    sw_pump(1000);
    srv = start_server(port, "any", NULL, NULL);
    assert_true(srv > 0);
    int live2 = expect_state(st, "restart", "live", 30000);
    assert_true(live2 >= 0);
    double f0 = frames_of("restart");
    sw_pump(1500);
    assert_true(frames_of("restart") > f0);
    cJSON *si = sw_stream("restart");
    assert_true(vg_testd_jnum(si, "reconnects") >= 1);
    cJSON_Delete(si);
    unwatch("restart");
    assert_true(expect_state(live2, "restart", "ended", 10000) >= 0);
    int n = 0;
    assert_true(sw_seq_contiguous("restart", &n));
    assert_true(n >= 6); /* connecting, live, stalled, reconnecting, live, ended at least */
    sw_kill(srv);
}

/* A path the server does not have: stalled with the server's answer, reconnecting with a growing
 * backoff, and the daemon answers all along. */
static void test_rtsp_missing_stream(void **state)
{
    (void)state;
    int port = port_base + 8;
    pid_t srv = start_server(port, "any", NULL, NULL);
    assert_true(srv > 0);
    int from = cJSON_GetArraySize(sw_seen);
    char url[256];
    snprintf(url, sizeof url, "rtsp://127.0.0.1:%d/nosuchcam", port);
    cJSON *r = watch("missing", url, NULL);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    int st = expect_state(from, "missing", "stalled", 20000);
    assert_true(st >= 0);
    const char *detail = vg_testd_jstr(cJSON_GetArrayItem(sw_seen, st), "detail");
    printf("missing stream: %s\n", detail);
    assert_non_null(strstr(detail, "404"));
    int rc1 = expect_state(st, "missing", "reconnecting", 10000);
    assert_true(rc1 >= 0);
    int st2 = expect_state(rc1, "missing", "stalled", 10000);
    assert_true(st2 >= 0);
    int rc2 = expect_state(st2, "missing", "reconnecting", 10000);
    assert_true(rc2 >= 0);
    /* The backoff grows: "in 0.5 s", then "in 1.0 s". */
    assert_string_equal(vg_testd_jstr(cJSON_GetArrayItem(sw_seen, rc1), "detail"), "in 0.5 s");
    assert_string_equal(vg_testd_jstr(cJSON_GetArrayItem(sw_seen, rc2), "detail"), "in 1.0 s");
    r = sw_call("{\"v\":1,\"op\":\"info\"}");
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    cJSON *si = sw_stream("missing");
    assert_non_null(si);
    const char *state_s = vg_testd_jstr(si, "state");
    assert_true(!strcmp(state_s, "stalled") || !strcmp(state_s, "reconnecting"));
    assert_true(vg_testd_jnum(si, "frames") == 0);
    cJSON_Delete(si);
    assert_int_equal(sw_find(from, "missing", "state", "live"), -1);
    unwatch("missing");
    assert_true(expect_state(from, "missing", "ended", 10000) >= 0);
    sw_kill(srv);
}

int main(void)
{
    if (access(PYTHON, X_OK) != 0 ||
        vg_testd_sh(NULL, 0, PYTHON " '" SERVER "' --check >/dev/null 2>&1") != 0) {
        printf("skipped: GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0, python3-gi, "
               "gstreamer1.0-plugins-ugly) is not installed; scripts/install-deps.sh installs "
               "it\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtsp_tcp_and_udp),
        cmocka_unit_test(test_rtsp_credentials),
        cmocka_unit_test(test_rtsp_server_restart),
        cmocka_unit_test(test_rtsp_missing_stream),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
