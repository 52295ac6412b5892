/*
 * test_e2e.c: the real vigild on a random-weight tiny model, driven by the `vigil` client, by
 * nanocat and by raw sockets (ipc/'s client helpers), everything in a temporary directory.
 *
 * Covers: streaming (tokens with contiguous sequence numbers that add up to the final text),
 * fetching a result after missing the stream, cancel, eight clients at once, a resent request that
 * does not start a second job, `info` latency while a job is generating (p99 over 200 requests <
 * 50 ms, printed), 10,000 malformed/random/oversized messages, media outside the roots, SIGTERM
 * during a job and the result after a restart, and the systemd notifications.
 *
 * Busy jobs use greedy decoding: on random weights it repeats one token and never hits a stop id,
 * so a large max_new_tokens keeps the inference thread busy for seconds.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "ipc.h"
#include "../support/vg_testd.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define BIN VG_BINARY_DIR

static char dir[256], conf[320], model[320], media[320], video[400], rt[320], st[320], cmd_url[400],
    ev_url[400], notify_name[64];
static char tcp_url[64];
static pid_t daemon_pid = -1;
static int notify_fd = -1;
static int have_nanocat;
static unsigned rng = 12345;

static unsigned rnd(void)
{
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

/* One request/reply on a fresh REQ socket; returns the parsed reply or NULL on timeout. */
static cJSON *call_raw(const char *req, size_t len, int timeout_ms)
{
    return vg_testd_call(cmd_url, req, len, timeout_ms);
}

static cJSON *call(const char *req)
{
    return call_raw(req, strlen(req), 10000);
}

/* The job object of a `job` reply (caller deletes), or NULL. */
static cJSON *get_job(const char *id)
{
    char req[256];
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"job\",\"job\":\"%s\"}", id);
    cJSON *r = call(req);
    if (!vg_testd_is_ok(r)) {
        cJSON_Delete(r);
        return NULL;
    }
    cJSON *j = cJSON_DetachItemFromObjectCaseSensitive(r, "job");
    cJSON_Delete(r);
    return j;
}

static int is_final(const char *s)
{
    return !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled");
}

/* Waits until the job is final (or timeout); returns the job object. */
static cJSON *wait_job(const char *id, double timeout_s)
{
    double until = vg_now_ms() + timeout_s * 1000;
    while (vg_now_ms() < until) {
        cJSON *j = get_job(id);
        if (j && is_final(vg_testd_jstr(j, "state")))
            return j;
        cJSON_Delete(j);
        vg_testd_sleep_ms(20);
    }
    return NULL;
}

/* Waits until the job has produced at least n tokens. */
static int wait_tokens(const char *id, int n, double timeout_s)
{
    double until = vg_now_ms() + timeout_s * 1000;
    while (vg_now_ms() < until) {
        cJSON *j = get_job(id);
        int got = j ? (int)vg_testd_jnum(j, "n_tokens") : -1;
        int fin = j && is_final(vg_testd_jstr(j, "state"));
        cJSON_Delete(j);
        if (got >= n)
            return 1;
        if (fin)
            return 0;
        vg_testd_sleep_ms(10);
    }
    return 0;
}

static cJSON *ask(const char *job, const char *extra)
{
    char req[2048];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"id\":\"r-%s\",\"job\":\"%s\",\"video\":\"%s\","
             "\"question\":\"What happens?\"%s%s}",
             job, job, video, extra ? "," : "", extra ? extra : "");
    return call(req);
}

#define BUSY "\"generation\":{\"greedy\":true,\"max_new_tokens\":16000}"

static void write_conf(const char *text)
{
    vg_testd_write_file(conf, text);
}

static int start_daemon(void)
{
    char log[400], tcp[128];
    snprintf(log, sizeof log, "%s/vigild.log", dir);
    snprintf(tcp, sizeof tcp, "tcp_cmd_url=%s", tcp_url);
    const char *sets[] = {"max_new_tokens_limit=16000", "max_message_size=65536", tcp, NULL};
    vg_testd_spec spec = {.log = log,
                          .conf = conf,
                          .model = model,
                          .rt = rt,
                          .st = st,
                          .media = media,
                          .cmd_url = cmd_url,
                          .log_level = "notice",
                          .sets = sets,
                          .notify_name = notify_name,
                          .notify_fd = notify_fd,
                          .call_timeout_ms = 10000};
    return vg_testd_start(&spec, &daemon_pid);
}

/* SIGTERM and wait; returns the exit status (or -1). */
static int stop_daemon(void)
{
    return vg_testd_stop(&daemon_pid, 3000, NULL);
}

static int group_setup(void **state)
{
    if (vg_testd_need_tools() != 0) {
        fprintf(stderr, "skipped: vigild, vigil, vigil-model or ffmpeg is missing\n");
        return -1;
    }
    have_nanocat = vg_testd_sh(NULL, 0, "command -v nanocat >/dev/null 2>&1") == 0;
    if (vg_testd_tmpdir("/tmp/vg-e2e-XXXXXX", dir, model, media, rt, st, cmd_url) != 0)
        return -1;
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    write_conf("max_queued_jobs = 12\n");
    snprintf(video, sizeof video, "%s/t.mp4", media);
    snprintf(ev_url, sizeof ev_url, "ipc://%s/vigil.events", rt);
    /* A free loopback port for the optional TCP listener. */
    int ts = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sin;
    if (ts < 0 || bind(ts, (struct sockaddr *)&sin, sizeof sin) ||
        getsockname(ts, (struct sockaddr *)&sin, &sl))
        return -1;
    close(ts);
    snprintf(tcp_url, sizeof tcp_url, "tcp://127.0.0.1:%d", ntohs(sin.sin_port));
    if (vg_testd_make_model(dir, model) != 0) {
        fprintf(stderr, "cannot make the test model\n");
        return -1;
    }
    if (vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=160x120:rate=10 "
                    "-t 3 '%s'",
                    video)) {
        fprintf(stderr, "ffmpeg failed\n");
        return -1;
    }
    /* A notify socket in the abstract namespace, as systemd may pass. */
    snprintf(notify_name, sizeof notify_name, "@vg-e2e-notify-%ld", (long)getpid());
    notify_fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, notify_name, strlen(notify_name));
    sa.sun_path[0] = 0;
    if (bind(notify_fd, (struct sockaddr *)&sa,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(notify_name)))) {
        perror("bind notify");
        return -1;
    }
    if (start_daemon() != 0) {
        fprintf(stderr, "vigild did not start; see %s/vigild.log\n", dir);
        vg_testd_sh(NULL, 0, "cat '%s/vigild.log' >&2", dir);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    int rc = 0;
    if (daemon_pid > 0 && stop_daemon() != 0) {
        fprintf(stderr, "vigild did not exit cleanly\n");
        rc = -1;
        /* Sanitizer reports of the daemon land in its log. */
        if (vg_testd_check_log(dir) != 0)
            rc = -1;
    }
    if (notify_fd >= 0)
        close(notify_fd);
    if (dir[0] && !getenv("VG_KEEP_TMP"))
        vg_testd_sh(NULL, 0, "rm -rf '%s'", dir);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */

static void test_info_and_cli(void **state)
{
    char out[16384];
    assert_int_equal(
        vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --runtime-dir '%s' --json info", BIN, rt),
        0);
    cJSON *r = cJSON_Parse(out);
    assert_true(vg_testd_is_ok(r));
    assert_string_equal(vg_testd_jstr(r, "version"), VG_VERSION);
    const cJSON *cap = cJSON_GetObjectItemCaseSensitive(r, "capabilities");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cap, "video")));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(cap, "streams"));
    assert_true(vg_testd_jnum(cJSON_GetObjectItemCaseSensitive(r, "model"), "layers") > 0);
    assert_true(vg_testd_jnum(r, "queue_depth") >= 0);
    cJSON_Delete(r);
    /* The configured TCP listener (loopback) answers too. */
    assert_int_equal(
        vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --cmd-url '%s' --json info", BIN, tcp_url),
        0);
    r = cJSON_Parse(out);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    /* VIGIL_RUNTIME_DIR finds the daemon too; the human-readable form names the model. */
    assert_int_equal(
        vg_testd_sh(out, sizeof out, "VIGIL_RUNTIME_DIR='%s' '%s/tools/vigil' info", rt, BIN), 0);
    assert_non_null(strstr(out, "model: model"));
    assert_int_equal(vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --help", BIN), 0);
    for (const char *w = "ask\0info\0jobs\0job\0cancel\0plan\0"; *w; w += strlen(w) + 1)
        assert_non_null(strstr(out, w));
    assert_int_equal(vg_testd_sh(out, sizeof out, "'%s/daemon/vigild' --help", BIN), 0);
    assert_non_null(strstr(out, "--runtime-dir"));
    /* --help and --check-config list the configuration keys from the table in daemon/config.c. */
    assert_non_null(strstr(out, "\n  weight_type (enum, default 'auto', restart)\n"));
    assert_non_null(strstr(out, "\n  max_queued_jobs (integer, default '16', live)\n"));
    assert_non_null(strstr(out, "\n  media_roots (path list, default '', live)\n"));
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "'%s/daemon/vigild' --config '%s' --set weight_type=bf16 "
                                 "--set max_streams=3 --check-config",
                                 BIN, conf),
                     0);
    assert_non_null(strstr(out, "\nweight_type = bf16\n"));
    assert_non_null(strstr(out, "\nmax_streams = 3\n"));
    assert_non_null(strstr(out, "\nmax_queued_jobs = 12\n")); /* from the file */
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "'%s/daemon/vigild' --config '%s' --set weight_type=f16 "
                                 "--check-config 2>&1",
                                 BIN, conf),
                     2);
    assert_non_null(strstr(out, "weight_type"));
    assert_int_equal(vg_testd_sh(out, sizeof out, "'%s/daemon/vigild' --version", BIN), 0);
    assert_non_null(strstr(out, VG_VERSION));
    assert_int_equal(vg_testd_sh(NULL, 0, "'%s/tools/vigil' --bogus 2>/dev/null", BIN), 2);
    /* A daemon that is not there: a clear failure, not a hang. */
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "'%s/tools/vigil' --timeout 300 --runtime-dir /nonexistent info "
                                 "2>/dev/null",
                                 BIN),
                     1);
    if (have_nanocat) {
        assert_int_equal(
            vg_testd_sh(out, sizeof out,
                        "nanocat --req --connect '%s' --data '{\"v\":1,\"op\":\"info\"}' -A "
                        "2>&1",
                        cmd_url),
            0);
        assert_non_null(strstr(out, "\"ok\":true"));
        assert_int_equal(
            vg_testd_sh(out, sizeof out,
                        "nanocat --req --connect '%s' --data '{\"v\":1,\"op\":\"nope\"}' -A "
                        "2>&1",
                        cmd_url),
            0);
        assert_non_null(strstr(out, "\"code\":\"unknown_op\""));
    }
}

/* Streaming: subscribe, sync, ask; tokens arrive in order and add up to the final text. */
static void test_ask_streaming(void **state)
{
    vg_ipc_sub *sub;
    char err[256];
    assert_int_equal(vg_ipc_sub_open(ev_url, "job/stream1/", &sub, err, sizeof err), 0);
    int synced = 0;
    for (int i = 0; i < 100 && !synced; i++) {
        cJSON_Delete(call("{\"v\":1,\"op\":\"sync\",\"job\":\"stream1\"}"));
        char *msg;
        const char *t, *p;
        size_t pl;
        if (vg_ipc_sub_recv(sub, 50, &msg, &t, &p, &pl) == 0) {
            synced = !strcmp(t, "job/stream1/sync");
            free(msg);
        }
    }
    assert_true(synced);
    cJSON *r = ask("stream1", "\"generation\":{\"max_new_tokens\":24,\"seed\":7}");
    assert_true(vg_testd_is_ok(r));
    assert_string_equal(vg_testd_jstr(r, "job"), "stream1");
    cJSON_Delete(r);
    char text[65536] = "";
    size_t tl = 0;
    int next_seq = 0, progress = 0, done = 0;
    cJSON *fin = NULL;
    while (!done) {
        char *msg;
        const char *t, *p;
        size_t pl;
        int rc = vg_ipc_sub_recv(sub, 20000, &msg, &t, &p, &pl);
        assert_int_equal(rc, 0);
        cJSON *e = cJSON_ParseWithLength(p, pl);
        assert_non_null(e);
        if (!strcmp(t, "job/stream1/token")) {
            assert_int_equal((int)vg_testd_jnum(e, "seq"), next_seq);
            next_seq++;
            size_t n = strlen(vg_testd_jstr(e, "text"));
            assert_true(tl + n < sizeof text);
            memcpy(text + tl, vg_testd_jstr(e, "text"), n + 1);
            tl += n;
        } else if (!strcmp(t, "job/stream1/progress")) {
            progress++;
        } else if (!strcmp(t, "job/stream1/done")) {
            fin = e;
            e = NULL;
            done = 1;
        }
        cJSON_Delete(e);
        free(msg);
    }
    vg_ipc_sub_close(sub);
    assert_string_equal(vg_testd_jstr(fin, "state"), "completed");
    assert_true(progress >= 4); /* decode, encode, prefill, generate */
    assert_true(next_seq > 0 && next_seq <= 24);
    assert_int_equal((int)vg_testd_jnum(fin, "n_tokens"), next_seq);
    assert_string_equal(vg_testd_jstr(fin, "text"), text);
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(fin, "events")));
    assert_true(vg_testd_jnum(cJSON_GetObjectItemCaseSensitive(fin, "timings"), "frames") >= 2);
    cJSON_Delete(fin);
}

/* nanocat as the subscriber: it sees the job's tokens and its done message. */
static void test_nanocat_stream(void **state)
{
    if (!have_nanocat) {
        skip();
        return;
    }
    char log[400];
    snprintf(log, sizeof log, "%s/nanocat-sub.txt", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        execlp("nanocat", "nanocat", "--sub", "--connect", ev_url, "--subscribe", "job/nc1/", "-A",
               (char *)NULL);
        _exit(127);
    }
    char out[1 << 16];
    int synced = 0;
    for (int i = 0; i < 200 && !synced; i++) {
        cJSON_Delete(call("{\"v\":1,\"op\":\"sync\",\"job\":\"nc1\"}"));
        vg_testd_sleep_ms(25);
        synced = vg_testd_sh(NULL, 0, "grep -q '^job/nc1/sync' '%s'", log) == 0;
    }
    assert_true(synced);
    cJSON *r = ask("nc1", "\"generation\":{\"max_new_tokens\":6,\"greedy\":true}");
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    cJSON *j = wait_job("nc1", 30);
    assert_non_null(j);
    int done = 0;
    for (int i = 0; i < 200 && !done; i++) {
        done = vg_testd_sh(NULL, 0, "grep -q '^job/nc1/done' '%s'", log) == 0;
        if (!done)
            vg_testd_sleep_ms(10);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    assert_true(done);
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "grep -c '^job/nc1/token {\"job\":\"nc1\",\"seq\":' '%s'", log),
                     0);
    assert_int_equal(atoi(out), (int)vg_testd_jnum(j, "n_tokens"));
    assert_int_equal(vg_testd_sh(NULL, 0, "grep -q '^job/nc1/progress' '%s'", log), 0);
    cJSON_Delete(j);
}

/* On a terminal, `vigil ask` shows the stage and percent on stderr. */
static void test_cli_progress_on_tty(void **state)
{
    if (vg_testd_sh(NULL, 0, "command -v script >/dev/null 2>&1") != 0) {
        skip();
        return;
    }
    char out[1 << 16];
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "script -qec \"'%s/tools/vigil' --runtime-dir '%s' ask '%s' 'Q' "
                                 "--max-new-tokens 4\" /dev/null",
                                 BIN, rt, video),
                     0);
    assert_non_null(strstr(out, "[decode "));
    assert_non_null(strstr(out, "%]"));
}

/* The client: streams to stdout, --json gives exactly one object; a relative path works. */
static void test_cli_ask(void **state)
{
    static char out[1 << 16];
    assert_int_equal(
        vg_testd_sh(out, sizeof out,
                    "cd '%s' && '%s/tools/vigil' --runtime-dir '%s' --json ask t.mp4 'What "
                    "happens?' --max-new-tokens 12 --seed 3",
                    media, BIN, rt),
        0);
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "text")));
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "events")));
    assert_int_equal(cJSON_GetArraySize(o), 2);
    cJSON_Delete(o);
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "'%s/tools/vigil' --runtime-dir '%s' ask '%s' 'What happens?' "
                                 "--max-new-tokens 12 --job cli-plain",
                                 BIN, rt, video),
                     0);
    assert_true(strstr(out, "(no events)") || strstr(out, "label"));
    cJSON *j = get_job("cli-plain");
    assert_non_null(j);
    assert_non_null(
        strstr(out, vg_testd_jstr(j, "text"))); /* the streamed answer is the job's text */
    cJSON_Delete(j);
    assert_int_equal(
        vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --runtime-dir '%s' jobs", BIN, rt), 0);
    assert_non_null(strstr(out, "cli-plain"));
    assert_int_equal(
        vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --runtime-dir '%s' job cli-plain", BIN, rt),
        0);
    assert_non_null(strstr(out, "completed"));
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "'%s/tools/vigil' --runtime-dir '%s' job no-such-job 2>/dev/null",
                                 BIN, rt),
                     1);
}

/* Nobody listened to the stream: the result is still there through `job`. */
static void test_missed_stream(void **state)
{
    char out[65536];
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "'%s/tools/vigil' --runtime-dir '%s' ask '%s' 'Q' --no-wait --job "
                                 "nostream --max-new-tokens 16",
                                 BIN, rt, video),
                     0);
    cJSON *j = wait_job("nostream", 30);
    assert_non_null(j);
    assert_string_equal(vg_testd_jstr(j, "state"), "completed");
    assert_true(vg_testd_jnum(j, "n_tokens") > 0);
    cJSON_Delete(j);
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "'%s/tools/vigil' --runtime-dir '%s' --json job nostream", BIN,
                                 rt),
                     0);
    cJSON *o = cJSON_Parse(out);
    assert_string_equal(vg_testd_jstr(o, "state"), "completed");
    cJSON_Delete(o);
}

static void test_resend_dedupe(void **state)
{
    /* The same bytes twice, as a REQ socket's automatic resend delivers them. */
    char req[1024];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"id\":\"resend-1\",\"video\":\"%s\",\"question\":\"Q\","
             "\"generation\":{\"max_new_tokens\":8}}",
             video);
    cJSON *a = call(req);
    cJSON *b = call(req);
    assert_true(vg_testd_is_ok(a) && vg_testd_is_ok(b));
    assert_string_equal(vg_testd_jstr(a, "job"), vg_testd_jstr(b, "job"));
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "existing")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(b, "existing")));
    cJSON *j = wait_job(vg_testd_jstr(a, "job"), 30);
    assert_non_null(j);
    cJSON_Delete(j);
    /* With a client-chosen job id too, and through nanocat. */
    cJSON *c = ask("dup-job", "\"generation\":{\"max_new_tokens\":8}");
    cJSON *d = ask("dup-job", "\"generation\":{\"max_new_tokens\":8}");
    assert_true(vg_testd_is_ok(c) && vg_testd_is_ok(d));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "existing")));
    if (have_nanocat) {
        char out[4096];
        snprintf(req, sizeof req,
                 "{\"v\":1,\"op\":\"ask\",\"id\":\"n1\",\"job\":\"dup-job\",\"video\":\"%s\","
                 "\"question\":\"What happens?\"}",
                 video);
        assert_int_equal(vg_testd_sh(out, sizeof out,
                                     "nanocat --req --connect '%s' --data '%s' -A 2>&1", cmd_url,
                                     req),
                         0);
        assert_non_null(strstr(out, "\"existing\":true"));
    }
    /* The same job id for a different question is a conflict, not a silent reuse. */
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"job\":\"dup-job\",\"video\":\"%s\",\"question\":\"other\"}",
             video);
    cJSON *e = call(req);
    assert_false(vg_testd_is_ok(e));
    assert_string_equal(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(e, "error"), "code"),
                        "conflict");
    /* Exactly one job each. */
    cJSON *l = call("{\"v\":1,\"op\":\"jobs\",\"limit\":1000}");
    int n_resend = 0, n_dup = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(l, "jobs"))
    {
        n_resend += !strcmp(vg_testd_jstr(it, "job"), vg_testd_jstr(a, "job"));
        n_dup += !strcmp(vg_testd_jstr(it, "job"), "dup-job");
    }
    assert_int_equal(n_resend, 1);
    assert_int_equal(n_dup, 1);
    cJSON_Delete(l);
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(c);
    cJSON_Delete(d);
    cJSON_Delete(e);
    cJSON *f = wait_job("dup-job", 30);
    cJSON_Delete(f);
}

static void test_cancel(void **state)
{
    cJSON *r = ask("to-cancel", BUSY);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    assert_true(wait_tokens("to-cancel", 5, 30));
    char out[4096];
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "'%s/tools/vigil' --runtime-dir '%s' cancel to-cancel", BIN, rt),
                     0);
    assert_non_null(strstr(out, "to-cancel"));
    cJSON *j = wait_job("to-cancel", 30);
    assert_non_null(j);
    assert_string_equal(vg_testd_jstr(j, "state"), "cancelled");
    assert_true(vg_testd_jnum(j, "n_tokens") < 16000);
    assert_true(strlen(vg_testd_jstr(j, "text")) > 0); /* the partial answer is kept */
    cJSON_Delete(j);
    /* Cancelling a finished or unknown job. */
    cJSON *c = call("{\"v\":1,\"op\":\"cancel\",\"job\":\"to-cancel\"}");
    assert_true(vg_testd_is_ok(c));
    assert_string_equal(vg_testd_jstr(c, "state"), "cancelled");
    cJSON_Delete(c);
    c = call("{\"v\":1,\"op\":\"cancel\",\"job\":\"never-was\"}");
    assert_false(vg_testd_is_ok(c));
    cJSON_Delete(c);
}

typedef struct cli_run {
    int idx, rc;
    char out[8192];
} cli_run;

static void *run_cli(void *arg)
{
    cli_run *c = arg;
    c->rc = vg_testd_sh(
        c->out, sizeof c->out,
        "'%s/tools/vigil' --runtime-dir '%s' --json ask '%s' 'Client %d?' --job eight-%d "
        "--max-new-tokens 10",
        BIN, rt, video, c->idx, c->idx);
    return NULL;
}

static void test_eight_clients(void **state)
{
    cli_run runs[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        runs[i].idx = i;
        pthread_create(&th[i], NULL, run_cli, &runs[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 8; i++) {
        if (runs[i].rc != 0)
            fail_msg("client %d: exit %d: %s", i, runs[i].rc, runs[i].out);
        cJSON *o = cJSON_Parse(runs[i].out);
        assert_non_null(o);
        char id[32];
        snprintf(id, sizeof id, "eight-%d", i);
        cJSON *j = get_job(id);
        assert_non_null(j);
        assert_string_equal(vg_testd_jstr(j, "state"), "completed");
        assert_string_equal(vg_testd_jstr(o, "text"), vg_testd_jstr(j, "text"));
        cJSON_Delete(j);
        cJSON_Delete(o);
    }
}

/* A job past its deadline is stopped and fails with code "deadline". */
static void test_deadline(void **state)
{
    cJSON *r = ask("late", "\"deadline_s\":0.3," BUSY);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    cJSON *j = wait_job("late", 30);
    assert_non_null(j);
    assert_string_equal(vg_testd_jstr(j, "state"), "failed");
    assert_string_equal(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(j, "error"), "code"),
                        "deadline");
    assert_true(vg_testd_jnum(j, "n_tokens") < 16000);
    cJSON_Delete(j);
}

/* More asks than max_queued_jobs: the excess gets `busy`, the others run. */
static void test_busy(void **state)
{
    int ok = 0, busy = 0;
    char ids[20][32];
    for (int i = 0; i < 20; i++) {
        snprintf(ids[i], sizeof ids[i], "flood-%d", i);
        cJSON *r = ask(ids[i], BUSY);
        if (vg_testd_is_ok(r))
            ok++;
        else if (!strcmp(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "code"),
                         "busy"))
            busy++;
        cJSON_Delete(r);
    }
    assert_int_equal(ok, 12); /* max_queued_jobs in the test config */
    assert_int_equal(busy, 8);
    for (int i = 0; i < 20; i++) {
        char req[128];
        snprintf(req, sizeof req, "{\"v\":1,\"op\":\"cancel\",\"job\":\"%s\"}", ids[i]);
        cJSON_Delete(call(req));
    }
    for (int i = 0; i < 12; i++) {
        cJSON *j = wait_job(ids[i], 30);
        assert_non_null(j);
        assert_string_equal(vg_testd_jstr(j, "state"), "cancelled");
        cJSON_Delete(j);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_info_latency_while_busy(void **state)
{
    cJSON *r = ask("busy-1", BUSY);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    assert_true(wait_tokens("busy-1", 3, 30));
    vg_ipc_client *c;
    char err[256];
    assert_int_equal(vg_ipc_client_open(cmd_url, 5000, 0, 0, &c, err, sizeof err), 0);
    double lat[200];
    int busy_replies = 0;
    for (int i = 0; i < 200; i++) {
        const char *req = "{\"v\":1,\"op\":\"info\",\"id\":1}";
        char *rep;
        size_t len;
        double t0 = vg_now_ms();
        assert_int_equal(vg_ipc_client_call(c, req, strlen(req), &rep, &len), 0);
        lat[i] = vg_now_ms() - t0;
        cJSON *o = cJSON_ParseWithLength(rep, len);
        assert_true(vg_testd_is_ok(o));
        busy_replies += vg_testd_jnum(o, "jobs_running") >= 1;
        cJSON_Delete(o);
        free(rep);
    }
    vg_ipc_client_close(c);
    cJSON *j = get_job("busy-1");
    int still_running = j && !strcmp(vg_testd_jstr(j, "state"), "running");
    cJSON_Delete(j);
    qsort(lat, 200, sizeof lat[0], cmp_double);
    double p99 = lat[197]; /* the 198th of 200 */
    printf("info latency while a job is generating: p50 %.3f ms, p99 %.3f ms, max %.3f ms "
           "(%d/200 replies saw the job running)\n",
           lat[99], p99, lat[199], busy_replies);
    fflush(stdout);
    assert_int_equal(busy_replies, 200);
    assert_true(still_running);
    assert_true(p99 < 50.0);
    cJSON_Delete(call("{\"v\":1,\"op\":\"cancel\",\"job\":\"busy-1\"}"));
    cJSON *f = wait_job("busy-1", 30);
    assert_non_null(f);
    cJSON_Delete(f);
}

static void test_media_security(void **state)
{
    const char *bad[] = {"/etc/passwd",        "../../etc/passwd",
                         "file:///etc/passwd", "concat:/etc/passwd",
                         "rtsp://127.0.0.1/x", "subfile:,,start,0,end,1,,:/etc/passwd"};
    const char *codes[] = {"forbidden", "forbidden", "forbidden",
                           "forbidden", "forbidden", "forbidden"};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        char req[1024];
        snprintf(req, sizeof req, "{\"v\":1,\"op\":\"ask\",\"video\":\"%s\",\"question\":\"Q\"}",
                 bad[i]);
        cJSON *r = call(req);
        assert_false(vg_testd_is_ok(r));
        const char *code = vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "code");
        if (strcmp(code, codes[i]) != 0)
            fail_msg("%s: code %s", bad[i], code);
        cJSON_Delete(r);
    }
    /* A symlink inside the root that points outside it. */
    char link[500];
    snprintf(link, sizeof link, "%s/escape.mp4", media);
    assert_int_equal(symlink("/etc/passwd", link), 0);
    char req[1024];
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"ask\",\"video\":\"%s\",\"question\":\"Q\"}", link);
    cJSON *r = call(req);
    assert_false(vg_testd_is_ok(r));
    assert_string_equal(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "code"),
                        "forbidden");
    cJSON_Delete(r);
    /* A file in the root that is not a video fails as a job, with a sentence. */
    char junk[500];
    snprintf(junk, sizeof junk, "%s/junk.mp4", media);
    FILE *f = fopen(junk, "w");
    fputs("not a video", f);
    fclose(f);
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"job\":\"junk\",\"video\":\"%s\",\"question\":\"Q\"}", junk);
    r = call(req);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    cJSON *j = wait_job("junk", 30);
    assert_non_null(j);
    assert_string_equal(vg_testd_jstr(j, "state"), "failed");
    assert_true(strlen(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(j, "error"), "message")) > 0);
    cJSON_Delete(j);

    /* An HLS playlist inside the root is a video; a segment it names must be inside the roots
     * too. The same TS segment outside the root (refused) and inside it (decoded). */
    const char *where[] = {dir, media};
    for (int k = 0; k < 2; k++) {
        char seg[500], list[500], body[1200];
        snprintf(seg, sizeof seg, "%s/seg%d.ts", where[k], k);
        assert_int_equal(vg_testd_sh(NULL, 0,
                                     "ffmpeg -nostdin -loglevel error -y -i '%s' -c copy '%s'",
                                     video, seg),
                         0);
        snprintf(list, sizeof list, "%s/list%d.m3u8", media, k);
        snprintf(body, sizeof body,
                 "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:3.0,\n%s\n"
                 "#EXT-X-ENDLIST\n",
                 seg);
        f = fopen(list, "w");
        assert_non_null(f);
        fputs(body, f);
        fclose(f);
        snprintf(req, sizeof req,
                 "{\"v\":1,\"op\":\"ask\",\"job\":\"hls%d\",\"video\":\"%s\","
                 "\"question\":\"Q\",\"generation\":{\"max_new_tokens\":2}}",
                 k, list);
        r = call(req);
        assert_true(vg_testd_is_ok(r));
        cJSON_Delete(r);
        char id[16];
        snprintf(id, sizeof id, "hls%d", k);
        j = wait_job(id, 60);
        assert_non_null(j);
        const char *msg = vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(j, "error"), "message");
        printf("  playlist naming %s: %s %s\n", seg, vg_testd_jstr(j, "state"), msg);
        if (k == 0) {
            assert_string_equal(vg_testd_jstr(j, "state"), "failed");
            assert_non_null(strstr(msg, "outside the configured media roots"));
        } else {
            assert_string_equal(vg_testd_jstr(j, "state"), "completed");
        }
        cJSON_Delete(j);
    }
}

/* 10,000 malformed, random or oversized messages: every one answered with an error or refused by
 * the size limit, no crash, and the daemon still serves. */
static void test_fuzz(void **state)
{
    static const char *bases[] = {
        "{\"v\":1,\"op\":\"info\",\"id\":1}",
        "{\"v\":1,\"op\":\"job\",\"job\":\"abc\",\"id\":\"x\"}",
        "{\"v\":1,\"op\":\"jobs\",\"limit\":5}",
        "{\"v\":1,\"op\":\"cancel\",\"job\":\"zzz\"}",
        "{\"v\":1,\"op\":\"ask\",\"video\":\"/etc/passwd\",\"question\":\"q\",\"sampling\":{"
        "\"fps\":2,\"nframes\":8},\"generation\":{\"top_k\":3}}",
        "{\"v\":1,\"op\":\"ask\",\"video\":\"ftp://x/y\",\"question\":\"q\",\"deadline_s\":1e9}",
    };
    vg_ipc_client *c;
    char err[256];
    assert_int_equal(vg_ipc_client_open(cmd_url, 5000, 0, 0, &c, err, sizeof err), 0);
    static char buf[70000];
    int n_err = 0, n_ok = 0, n_refused = 0;
    const int total = 10000;
    for (int i = 0; i < total; i++) {
        size_t len;
        int kind = i % 10;
        if (i % 1000 == 999) {
            /* Oversized: over max_message_size (64 KiB), refused by the transport. */
            len = 65536 + 100 + rnd() % 1000;
            memset(buf, 'a', len);
            vg_ipc_client *oc;
            assert_int_equal(vg_ipc_client_open(cmd_url, 300, 0, 0, &oc, err, sizeof err), 0);
            char *rep = NULL;
            size_t rl;
            int rc = vg_ipc_client_call(oc, buf, len, &rep, &rl);
            vg_ipc_client_close(oc);
            if (rc == VG_ETIMEDOUT) {
                n_refused++;
                continue;
            }
            assert_int_equal(rc, 0);
            cJSON *o = cJSON_ParseWithLength(rep, rl);
            free(rep);
            assert_false(vg_testd_is_ok(o));
            cJSON_Delete(o);
            n_err++;
            continue;
        }
        if (kind < 3) {
            /* Random bytes. */
            len = rnd() % 300;
            for (size_t k = 0; k < len; k++)
                buf[k] = (char)rnd();
        } else if (kind < 8) {
            /* A valid request with bytes flipped, cut short, or fields swapped. */
            const char *b = bases[rnd() % VG_ARRAY_LEN(bases)];
            len = strlen(b);
            memcpy(buf, b, len);
            int flips = 1 + (int)(rnd() % 4);
            for (int k = 0; k < flips; k++)
                buf[rnd() % len] = (char)(kind == 3 ? rnd() % 128 : rnd());
            if (kind == 4)
                len = rnd() % len;
        } else if (kind == 8) {
            /* Deep nesting and wrong types. */
            int depth = 1 + (int)(rnd() % 3000);
            len = 0;
            for (int k = 0; k < depth && len < 60000; k++)
                buf[len++] = (rnd() & 1) ? '[' : '{';
        } else {
            /* Oversized fields inside a message under the limit. */
            int n = snprintf(buf, sizeof buf,
                             "{\"v\":1,\"op\":\"ask\",\"video\":\"/x\",\"question\":\"");
            size_t q = 8193 + rnd() % 20000;
            memset(buf + n, 'q', q);
            len = (size_t)n + q;
            len += (size_t)snprintf(buf + len, sizeof buf - len, "\"}");
        }
        char *rep = NULL;
        size_t rl;
        int rc = vg_ipc_client_call(c, buf, len, &rep, &rl);
        if (rc != 0)
            fail_msg("message %d (kind %d, %zu bytes): no reply (%s)", i, kind, len,
                     vg_strerror(rc));
        cJSON *o = cJSON_ParseWithLength(rep, rl);
        free(rep);
        if (!o)
            fail_msg("message %d: the reply is not JSON", i);
        if (vg_testd_is_ok(o)) {
            n_ok++; /* a mutation that is still a valid info/jobs/... request */
        } else {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
            assert_true(strlen(vg_testd_jstr(e, "code")) > 0);
            assert_true(strlen(vg_testd_jstr(e, "message")) > 0);
            n_err++;
        }
        cJSON_Delete(o);
    }
    vg_ipc_client_close(c);
    printf("fuzz: %d messages: %d error replies, %d ok replies (still-valid mutations), %d "
           "refused by the size limit\n",
           total, n_err, n_ok, n_refused);
    fflush(stdout);
    assert_int_equal(n_err + n_ok + n_refused, total);
    assert_true(n_err > total * 9 / 10);
    /* Still serving, and the fuzz started no jobs (its asks name forbidden media). */
    cJSON *r = call("{\"v\":1,\"op\":\"info\"}");
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    assert_int_equal(kill(daemon_pid, 0), 0);
}

/* SIGHUP re-reads the file and applies live keys; command-line settings still win. */
static void test_sighup_reload(void **state)
{
    write_conf("max_queued_jobs = 5\nmax_new_tokens_limit = 10\nlog_level = debug\n");
    assert_int_equal(kill(daemon_pid, SIGHUP), 0);
    int applied = 0;
    for (int i = 0; i < 200 && !applied; i++) {
        cJSON *r = call("{\"v\":1,\"op\":\"info\"}");
        const cJSON *lim = cJSON_GetObjectItemCaseSensitive(r, "limits");
        applied = vg_testd_jnum(lim, "max_queued_jobs") == 5;
        if (applied)
            assert_true(vg_testd_jnum(lim, "max_new_tokens") ==
                        16000); /* --set overrides the file */
        cJSON_Delete(r);
        vg_testd_sleep_ms(10);
    }
    assert_true(applied);
    /* A broken file keeps the old configuration. */
    write_conf("max_queued_jobs = lots\n");
    assert_int_equal(kill(daemon_pid, SIGHUP), 0);
    vg_testd_sleep_ms(200);
    cJSON *r = call("{\"v\":1,\"op\":\"info\"}");
    assert_true(vg_testd_jnum(cJSON_GetObjectItemCaseSensitive(r, "limits"), "max_queued_jobs") ==
                5);
    cJSON_Delete(r);
    write_conf("max_queued_jobs = 12\n");
    assert_int_equal(kill(daemon_pid, SIGHUP), 0);
}

static void test_sigterm_and_restart(void **state)
{
    cJSON *r = ask("term-job", BUSY);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    assert_true(wait_tokens("term-job", 3, 30));
    /* Watchdog pings arrive every 100 ms (WATCHDOG_USEC 200 ms). The socket's queue is short (a
     * datagram socket holds about ten), so drain it first, as systemd would. */
    char buf[256];
    ssize_t n;
    while (recv(notify_fd, buf, sizeof buf - 1, MSG_DONTWAIT) > 0)
        ;
    vg_testd_sleep_ms(450);
    int stopping = 0, pings = 0;
    while ((n = recv(notify_fd, buf, sizeof buf - 1, MSG_DONTWAIT)) > 0) {
        buf[n] = 0;
        pings += strstr(buf, "WATCHDOG=1") != NULL;
    }
    assert_true(pings >= 2);
    assert_int_equal(stop_daemon(), 0); /* graceful: exit status 0 */
    while ((n = recv(notify_fd, buf, sizeof buf - 1, MSG_DONTWAIT)) > 0) {
        buf[n] = 0;
        stopping |= strstr(buf, "STOPPING=1") != NULL;
    }
    assert_true(stopping);
    /* The journal says how the job ended. */
    char out[1 << 16];
    assert_int_equal(
        vg_testd_sh(out, sizeof out, "grep -c '\"job\":\"term-job\"' '%s/jobs.journal'", st), 0);
    assert_int_equal(start_daemon(), 0);
    int rc = vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --runtime-dir '%s' --json job term-job",
                         BIN, rt);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    const char *s = vg_testd_jstr(j, "state");
    /* Exit 1 for a job that did not complete, 0 for one that did. */
    assert_true((!strcmp(s, "cancelled") && rc == 1) || (!strcmp(s, "completed") && rc == 0));
    assert_true(strlen(vg_testd_jstr(j, "text")) > 0);
    cJSON_Delete(j);
    /* Earlier results survived too. */
    cJSON *k = get_job("stream1");
    assert_non_null(k);
    assert_string_equal(vg_testd_jstr(k, "state"), "completed");
    cJSON_Delete(k);
}

/* A crash (SIGKILL) during a job: the restarted daemon replaces the stale sockets, reads the
 * journal, and reports the job as interrupted. */
static void test_crash_and_restart(void **state)
{
    cJSON *r = ask("crash-job", BUSY);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    assert_true(wait_tokens("crash-job", 3, 30));
    assert_int_equal(kill(daemon_pid, SIGKILL), 0);
    waitpid(daemon_pid, NULL, 0);
    daemon_pid = -1;
    char buf[256];
    while (recv(notify_fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
        ;
    assert_int_equal(start_daemon(), 0);
    cJSON *j = get_job("crash-job");
    assert_non_null(j);
    assert_string_equal(vg_testd_jstr(j, "state"), "failed");
    assert_string_equal(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(j, "error"), "code"),
                        "interrupted");
    cJSON_Delete(j);
    j = get_job("term-job"); /* and the earlier results are intact */
    assert_non_null(j);
    cJSON_Delete(j);
}

/* Results are kept for result_ttl_s, then `job` no longer finds them. */
static void test_result_ttl(void **state)
{
    cJSON *j = get_job("stream1");
    assert_non_null(j);
    cJSON_Delete(j);
    write_conf("max_queued_jobs = 12\nresult_ttl_s = 0.5\n");
    assert_int_equal(kill(daemon_pid, SIGHUP), 0);
    /* Within a few seconds every result has expired (the newest finished just before). */
    int gone = 0, total = -1;
    for (int i = 0; i < 500 && !(gone && total == 0); i++) {
        cJSON *r = call("{\"v\":1,\"op\":\"job\",\"job\":\"stream1\"}");
        gone = r && !vg_testd_is_ok(r) &&
               !strcmp(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "code"),
                       "not_found");
        cJSON_Delete(r);
        cJSON *l = call("{\"v\":1,\"op\":\"jobs\"}");
        total = (int)vg_testd_jnum(l, "total");
        cJSON_Delete(l);
        if (!(gone && total == 0))
            vg_testd_sleep_ms(10);
    }
    assert_true(gone);
    assert_int_equal(total, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info_and_cli),
        cmocka_unit_test(test_ask_streaming),
        cmocka_unit_test(test_cli_ask),
        cmocka_unit_test(test_nanocat_stream),
        cmocka_unit_test(test_cli_progress_on_tty),
        cmocka_unit_test(test_missed_stream),
        cmocka_unit_test(test_resend_dedupe),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_eight_clients),
        cmocka_unit_test(test_info_latency_while_busy),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_busy),
        cmocka_unit_test(test_media_security),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_sighup_reload),
        cmocka_unit_test(test_sigterm_and_restart),
        cmocka_unit_test(test_crash_and_restart),
        cmocka_unit_test(test_result_ttl),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
