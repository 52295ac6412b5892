/*
 * test_streams_e2e.c: the real vigild watching live streams that ffmpeg generates on loopback
 * (UDP MPEG-TS), on a random-weight tiny model, with a subscriber on the event socket.
 *
 * Covers: watch with two standing questions; the states connecting -> live; raw answers for each
 * question every update interval; the ffmpeg source killed mid-stream (stalled, reconnecting) and
 * started again (live again, answers continue, stream time never goes back); every record the
 * subscriber saw is in the `events` reply and in the per-stream log with contiguous sequence
 * numbers; `vigil events NAME --since SEQ` returns exactly the newer ones; unwatch ends the stream
 * (state `ended`, gone from `streams`) and `events` then reads its log on disk (watched: false);
 * two live streams and a file (paced at its native rate, ending with `ended`) at once; bad watch
 * requests.
 *
 * The random model's answers are noise, so event transitions are checked by test_streams_unit;
 * here the plumbing is. test_demo_box_events (the acceptance check: a box appears at 4 s and
 * disappears at 9 s, started/ended within 2 s) needs the trained demo model and is skipped while
 * models/demo/config.json is absent.
 *
 * Every ffmpeg and vigild this test starts is killed in the teardown, also after a failure.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "ipc.h"
#include "../support/vg_testd.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define BIN VG_BINARY_DIR

static char dir[256], model[320], media[320], rt[320], st[320], conf[320], cmd_url[400],
    ev_url[400];
static pid_t daemon_pid = -1;
#define MAX_CHILDREN 8
static pid_t children[MAX_CHILDREN]; /* ffmpeg sources */
static int port_base;
static vg_ipc_sub *sub;

/* Records received by the subscriber, in order (a JSON array). */
static cJSON *seen;

static cJSON *call(const char *req)
{
    return vg_testd_call(cmd_url, req, strlen(req), 10000);
}

static const char *err_code(const cJSON *r)
{
    return vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "code");
}

/* ---- processes ---------------------------------------------------------------------------- */

/* Starts an ffmpeg that sends lavfi (NULL: a 160x120 test pattern at 10 fps) to
 * udp://127.0.0.1:port in real time. Returns its slot. */
static int start_source(int port, const char *lavfi)
{
    return vg_testd_start_source(children, MAX_CHILDREN, port, lavfi);
}

static void kill_source(int slot)
{
    vg_testd_kill_source(children, slot);
}

static void kill_all(void)
{
    vg_testd_kill_all(children, MAX_CHILDREN, &daemon_pid);
}

static int start_daemon(const char *model_dir)
{
    return vg_testd_start_streams(dir, conf, model_dir, rt, st, media, cmd_url, &daemon_pid);
}

static int stop_daemon(void)
{
    return vg_testd_stop(&daemon_pid, 2000, kill_all);
}

/* ---- subscriber --------------------------------------------------------------------------- */

/* Receives for up to ms, appending records to `seen`. */
static void pump(int ms)
{
    double until = vg_now_ms() + ms;
    do {
        char *msg = NULL;
        const char *topic, *payload;
        size_t len;
        int rc = vg_ipc_sub_recv(sub, 20, &msg, &topic, &payload, &len);
        if (rc == 0) {
            cJSON *o = cJSON_ParseWithLength(payload, len);
            if (o) {
                cJSON_AddStringToObject(o, "_topic", topic);
                cJSON_AddItemToArray(seen, o);
            }
        }
        free(msg);
    } while (vg_now_ms() < until);
}

/* Index of the first record at or after from for stream name matching kind and (for states) the
 * state or (for answers) the question; -1 if none. */
static int find_rec(int from, const char *name, const char *kind, const char *state, int question)
{
    int n = cJSON_GetArraySize(seen);
    for (int i = from; i < n; i++) {
        const cJSON *r = cJSON_GetArrayItem(seen, i);
        if (strcmp(vg_testd_jstr(r, "stream"), name) || strcmp(vg_testd_jstr(r, "kind"), kind))
            continue;
        if (state && strcmp(vg_testd_jstr(r, "state"), state))
            continue;
        if (question >= 0 && (int)vg_testd_jnum(r, "question") != question)
            continue;
        return i;
    }
    return -1;
}

/* Waits (pumping) until find_rec succeeds; returns the index or -1 after timeout_ms. */
static int wait_rec(int from, const char *name, const char *kind, const char *state, int question,
                    int timeout_ms)
{
    double until = vg_now_ms() + timeout_ms;
    for (;;) {
        int i = find_rec(from, name, kind, state, question);
        if (i >= 0 || vg_now_ms() > until)
            return i;
        pump(50);
    }
}

static int count_rec(int from, const char *name, const char *kind, int question)
{
    int k = 0, i = from;
    while ((i = find_rec(i, name, kind, NULL, question)) >= 0) {
        k++;
        i++;
    }
    return k;
}

static cJSON *watch(const char *name, const char *url, const char *extra)
{
    char req[2048];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"watch\",\"name\":\"%s\",\"url\":\"%s\",\"questions\":[\"Is there "
             "a red box? When?\",\"What moves?\"],\"fps\":2,\"window_s\":6,\"update_s\":1%s%s}",
             name, url, extra ? "," : "", extra ? extra : "");
    return call(req);
}

static cJSON *stream_info(const char *name)
{
    cJSON *r = call("{\"v\":1,\"op\":\"streams\"}");
    cJSON *found = NULL;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(r, "streams"))
    {
        if (!strcmp(vg_testd_jstr(s, "name"), name))
            found = cJSON_Duplicate(s, 1);
    }
    cJSON_Delete(r);
    return found;
}

/* Waits until the stream is gone from `streams`. */
static int wait_gone(const char *name, int timeout_ms)
{
    double until = vg_now_ms() + timeout_ms;
    while (vg_now_ms() < until) {
        cJSON *s = stream_info(name);
        cJSON_Delete(s);
        if (!s)
            return 1;
        pump(50);
    }
    return 0;
}

/* ---- setup -------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (vg_testd_need_tools() != 0) {
        fprintf(stderr, "vigild, vigil, vigil-model or ffmpeg is missing\n");
        return -1;
    }
    if (vg_testd_tmpdir("/tmp/vg-stream-e2e-XXXXXX", dir, model, media, rt, st, cmd_url) != 0)
        return -1;
    snprintf(ev_url, sizeof ev_url, "ipc://%s/vigil.events", rt);
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    FILE *cf = fopen(conf, "w");
    if (!cf)
        return -1;
    fputs("# test configuration: everything is on the command line\n", cf);
    fclose(cf);
    port_base = 21000 + (int)(getpid() % 20000) * 2;
    seen = cJSON_CreateArray();
    if (vg_testd_make_model(dir, model) != 0) {
        fprintf(stderr, "cannot make the test model\n");
        return -1;
    }
    char file[400];
    snprintf(file, sizeof file, "%s/clip.ts", media);
    if (vg_testd_sh(
            NULL, 0,
            "ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=160x120:rate=10 -t 5 "
            "-c:v mpeg2video '%s'",
            file)) {
        fprintf(stderr, "ffmpeg failed\n");
        return -1;
    }
    if (start_daemon(model) != 0) {
        fprintf(stderr, "vigild did not start; its log:\n");
        vg_testd_sh(NULL, 0, "cat '%s/vigild.log' >&2", dir);
        return -1;
    }
    char err[256];
    if (vg_ipc_sub_open(ev_url, "stream/", &sub, err, sizeof err) < 0) {
        fprintf(stderr, "subscribe: %s\n", err);
        return -1;
    }
    vg_testd_sleep_ms(200);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    for (int i = 0; i < MAX_CHILDREN; i++)
        kill_source(i);
    if (daemon_pid > 0 && stop_daemon() != 0) {
        fprintf(stderr, "vigild did not exit cleanly\n");
        rc = -1;
    }
    kill_all();
    vg_ipc_sub_close(sub);
    sub = NULL;
    if (vg_testd_sh(NULL, 0, "grep -q 'Sanitizer\\|runtime error' '%s/vigild.log'", dir) == 0) {
        fprintf(stderr, "sanitizer errors in the daemon log:\n");
        vg_testd_sh(NULL, 0, "cat '%s/vigild.log' >&2", dir);
        rc = -1;
    }
    cJSON_Delete(seen);
    seen = NULL;
    if (dir[0] && !getenv("VG_KEEP_TMP"))
        vg_testd_sh(NULL, 0, "rm -rf '%s'", dir);
    return rc;
}

/* Sequence numbers of the lines of a stream's log ("CRC32 json" lines), into a JSON array. */
static cJSON *log_records(const char *name)
{
    char path[500], err[256];
    snprintf(path, sizeof path, "%s/streams/%s.events", st, name);
    char *data;
    size_t len;
    cJSON *arr = cJSON_CreateArray();
    if (vg_read_file(path, 1 << 26, &data, &len, err, sizeof err) < 0)
        return arr;
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strlen(line) < 10 || line[8] != ' ')
            continue;
        cJSON *o = cJSON_Parse(line + 9);
        if (o)
            cJSON_AddItemToArray(arr, o);
    }
    free(data);
    return arr;
}

static int has_seq(const cJSON *arr, double seq, const char *kind)
{
    const cJSON *o;
    cJSON_ArrayForEach(o, arr)
    {
        if (vg_testd_jnum(o, "seq") == seq && !strcmp(vg_testd_jstr(o, "kind"), kind))
            return 1;
    }
    return 0;
}

/* Unix seconds of an ISO 8601 UTC time "YYYY-MM-DDTHH:MM:SS.mmmZ" (-1 if malformed). */
static double iso_to_unix(const char *s)
{
    int y, mo, d, h, mi;
    double sec;
    if (sscanf(s, "%d-%d-%dT%d:%d:%lfZ", &y, &mo, &d, &h, &mi, &sec) != 6)
        return -1;
    /* Days from 1970-01-01 (civil calendar, proleptic Gregorian). */
    y -= mo <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long days = era * 146097 + doe - 719468;
    return (double)days * 86400.0 + h * 3600.0 + mi * 60.0 + sec;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_live_drop_reconnect_log(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "udp://127.0.0.1:%d", port_base);
    int src = start_source(port_base, NULL);
    assert_true(src >= 0);
    int from = cJSON_GetArraySize(seen);
    cJSON *r = watch("cam1", url, NULL);
    assert_true(vg_testd_is_ok(r));
    assert_string_equal(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "stream"), "topic"),
                        "stream/cam1/");
    cJSON_Delete(r);
    /* A repeated identical watch returns the existing stream; another URL under the name is a
     * conflict. */
    r = watch("cam1", url, NULL);
    assert_true(vg_testd_is_ok(r));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "existing")));
    cJSON_Delete(r);
    r = watch("cam1", "udp://127.0.0.1:9", NULL);
    assert_string_equal(err_code(r), "conflict");
    cJSON_Delete(r);

    assert_true(wait_rec(from, "cam1", "state", "connecting", -1, 5000) >= 0);
    int live = wait_rec(from, "cam1", "state", "live", -1, 15000);
    assert_true(live >= 0);
    /* Answers to both questions, every update interval. */
    for (int q = 0; q < 2; q++) {
        int a = wait_rec(live, "cam1", "answer", NULL, q, 15000);
        assert_true(a >= 0);
        const cJSON *rec = cJSON_GetArrayItem(seen, a);
        assert_string_equal(vg_testd_jstr(rec, "_topic"), "stream/cam1/answer");
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(rec, "window");
        assert_true(vg_testd_jnum(w, "end") > vg_testd_jnum(w, "start"));
        assert_true(strlen(vg_testd_jstr(w, "end_wall")) == 24);
        /* The wall clock of the window's end: when that frame arrived, just now. */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        double wall = iso_to_unix(vg_testd_jstr(w, "end_wall"));
        printf("window %.3f-%.3f, walls %s - %s\n", vg_testd_jnum(w, "start"),
               vg_testd_jnum(w, "end"), vg_testd_jstr(w, "start_wall"),
               vg_testd_jstr(w, "end_wall"));
        assert_true(fabs(wall - (double)now.tv_sec) < 30);
        assert_true(fabs(iso_to_unix(vg_testd_jstr(w, "start_wall")) - wall -
                         (vg_testd_jnum(w, "start") - vg_testd_jnum(w, "end"))) < 1.0);
        assert_non_null(cJSON_GetObjectItemCaseSensitive(rec, "text"));
    }
    double until = vg_now_ms() + 15000;
    while (count_rec(live, "cam1", "answer", 0) < 3 && vg_now_ms() < until)
        pump(100);
    assert_true(count_rec(live, "cam1", "answer", 0) >= 3);
    int a_last = find_rec(live, "cam1", "answer", NULL, 0);
    while (find_rec(a_last + 1, "cam1", "answer", NULL, 0) >= 0)
        a_last = find_rec(a_last + 1, "cam1", "answer", NULL, 0);
    double end_before = vg_testd_jnum(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(seen, a_last), "window"), "end");

    /* While the source runs, the stream stays live (no spurious stall or reconnect). */
    assert_int_equal(find_rec(from, "cam1", "state", "stalled", -1), -1);
    assert_int_equal(find_rec(from, "cam1", "state", "reconnecting", -1), -1);
    /* The source dies: stalled, then reconnecting. */
    kill_source(src);
    int cut = cJSON_GetArraySize(seen);
    int stalled = wait_rec(cut, "cam1", "state", "stalled", -1, 10000);
    assert_true(stalled >= 0);
    assert_true(wait_rec(stalled, "cam1", "state", "reconnecting", -1, 10000) >= 0);
    /* It comes back: live again and annotating. */
    src = start_source(port_base, NULL);
    assert_true(src >= 0);
    int live2 = wait_rec(stalled, "cam1", "state", "live", -1, 30000);
    assert_true(live2 >= 0);
    int a2 = wait_rec(live2, "cam1", "answer", NULL, 0, 15000);
    assert_true(a2 >= 0);
    double end_after = vg_testd_jnum(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(seen, a2), "window"), "end");
    assert_true(end_after > end_before); /* stream time never goes back */
    cJSON *si = stream_info("cam1");
    assert_non_null(si);
    assert_true(vg_testd_jnum(si, "reconnects") >= 1);
    assert_true(vg_testd_jnum(si, "answers") >= 4);
    assert_true(vg_testd_jnum(si, "pairs") >= 4);
    cJSON_Delete(si);

    /* Unwatch: ended, then gone; the reader and inference threads let go. */
    r = call("{\"v\":1,\"op\":\"unwatch\",\"name\":\"cam1\"}");
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    int ended = wait_rec(live2, "cam1", "state", "ended", -1, 10000);
    assert_true(ended >= 0);
    assert_true(wait_gone("cam1", 10000));
    kill_source(src);
    pump(200);

    /* Sequence numbers of cam1 as the subscriber saw them: contiguous from 1. */
    double expect = 1;
    const cJSON *rec;
    int n_cam1 = 0;
    cJSON_ArrayForEach(rec, seen)
    {
        if (strcmp(vg_testd_jstr(rec, "stream"), "cam1"))
            continue;
        assert_true(vg_testd_jnum(rec, "seq") == expect);
        expect++;
        n_cam1++;
    }
    assert_true(n_cam1 >= 10);
    /* The log has every published record (the writer fsyncs off the loop: allow it a moment). */
    cJSON *logged = NULL;
    until = vg_now_ms() + 5000;
    do {
        cJSON_Delete(logged);
        logged = log_records("cam1");
        if (cJSON_GetArraySize(logged) >= n_cam1)
            break;
        vg_testd_sleep_ms(50);
    } while (vg_now_ms() < until);
    assert_int_equal(cJSON_GetArraySize(logged), n_cam1);
    cJSON_ArrayForEach(rec, seen)
    {
        if (!strcmp(vg_testd_jstr(rec, "stream"), "cam1"))
            assert_true(has_seq(logged, vg_testd_jnum(rec, "seq"), vg_testd_jstr(rec, "kind")));
    }
    cJSON_Delete(logged);
}

/* Watching again under the same name continues the numbering from the log; `events --since`
 * returns exactly what a subscriber missed. */
static void test_events_since(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "udp://127.0.0.1:%d", port_base);
    int src = start_source(port_base, NULL);
    assert_true(src >= 0);
    cJSON *logged = log_records("cam1");
    int before = cJSON_GetArraySize(logged);
    cJSON_Delete(logged);
    assert_true(before > 0);
    int from = cJSON_GetArraySize(seen);
    cJSON *r = watch("cam1", url, NULL);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    int c = wait_rec(from, "cam1", "state", "connecting", -1, 5000);
    assert_true(c >= 0);
    assert_true(vg_testd_jnum(cJSON_GetArrayItem(seen, c), "seq") == before + 1);
    assert_true(wait_rec(from, "cam1", "answer", NULL, 1, 20000) >= 0);
    /* The client's view of everything after `before`. */
    char out[1 << 16];
    assert_int_equal(
        vg_testd_sh(out, sizeof out,
                    "'%s/tools/vigil' --runtime-dir '%s' events cam1 --since %d --json", BIN, rt,
                    before),
        0);
    int lines = 0;
    double last = before;
    for (char *p = out, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        cJSON *o = cJSON_Parse(p);
        assert_non_null(o);
        assert_true(vg_testd_jnum(o, "seq") == last + 1);
        last = vg_testd_jnum(o, "seq");
        lines++;
        cJSON_Delete(o);
    }
    assert_true(lines >= 3);
    /* The op itself: since the last one, nothing; a limit is honoured. */
    char req[256];
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"events\",\"name\":\"cam1\",\"since\":%.0f}", 1e12);
    r = call(req);
    assert_true(vg_testd_is_ok(r));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "events")), 0);
    cJSON_Delete(r);
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"events\",\"name\":\"cam1\",\"since\":0,\"limit\":2}");
    r = call(req);
    assert_true(vg_testd_is_ok(r));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "events")), 2);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "more")));
    cJSON_Delete(r);
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "'%s/tools/vigil' --runtime-dir '%s' unwatch cam1 >/dev/null", BIN,
                                 rt),
                     0);
    assert_true(wait_gone("cam1", 10000));
    kill_source(src);
    /* Issue #13 item 12: unwatched, the stream is still answered from its log on disk (marked
     * watched: false): everything after since, in order, the same records as the file holds. */
    cJSON *disk = log_records("cam1");
    int on_disk = cJSON_GetArraySize(disk);
    assert_true(on_disk > before);
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"events\",\"name\":\"cam1\",\"since\":%d}", before);
    r = call(req);
    assert_true(vg_testd_is_ok(r));
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "watched")));
    assert_string_equal(vg_testd_jstr(r, "stream"), "cam1");
    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(r, "events");
    assert_int_equal(cJSON_GetArraySize(evs), on_disk - before);
    int k = before;
    const cJSON *ev;
    cJSON_ArrayForEach(ev, evs)
    {
        const cJSON *want = cJSON_GetArrayItem(disk, k++);
        assert_true(vg_testd_jnum(ev, "seq") == vg_testd_jnum(want, "seq"));
        assert_string_equal(vg_testd_jstr(ev, "kind"), vg_testd_jstr(want, "kind"));
    }
    assert_true(vg_testd_jnum(r, "last_seq") ==
                vg_testd_jnum(cJSON_GetArrayItem(disk, on_disk - 1), "seq"));
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "more")));
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "truncated")));
    cJSON_Delete(r);
    cJSON_Delete(disk);
    r = call("{\"v\":1,\"op\":\"events\",\"name\":\"cam1\",\"since\":0,\"limit\":2}");
    assert_true(vg_testd_is_ok(r));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r, "events")), 2);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "more")));
    cJSON_Delete(r);
    /* The CLI reads it the same way. */
    assert_int_equal(
        vg_testd_sh(out, sizeof out,
                    "'%s/tools/vigil' --runtime-dir '%s' events cam1 --since %d --json", BIN, rt,
                    before),
        0);
    assert_non_null(strstr(out, "\"seq\""));
    /* A name that never had a log: not_found. */
    r = call("{\"v\":1,\"op\":\"events\",\"name\":\"never-watched\"}");
    assert_false(vg_testd_is_ok(r));
    assert_string_equal(err_code(r), "not_found");
    cJSON_Delete(r);
}

/* Two live streams and a file at once; the file ends. */
static void test_several_streams(void **state)
{
    (void)state;
    int s1 = start_source(port_base, NULL), s2 = start_source(port_base + 1, NULL);
    assert_true(s1 >= 0 && s2 >= 0);
    char u1[128], u2[128], f[400];
    snprintf(u1, sizeof u1, "udp://127.0.0.1:%d", port_base);
    snprintf(u2, sizeof u2, "udp://127.0.0.1:%d", port_base + 1);
    snprintf(f, sizeof f, "%s/clip.ts", media);
    int from = cJSON_GetArraySize(seen);
    cJSON *r = watch("a", u1, NULL);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    r = watch("b", u2, "\"max_pixels\":8192");
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    r = watch("file", f, NULL);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    char out[8192];
    assert_int_equal(
        vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --runtime-dir '%s' streams", BIN, rt), 0);
    assert_non_null(strstr(out, "file"));
    const char *names[3] = {"a", "b", "file"};
    for (int i = 0; i < 3; i++) {
        assert_true(wait_rec(from, names[i], "answer", NULL, 0, 20000) >= 0);
        assert_true(wait_rec(from, names[i], "answer", NULL, 1, 20000) >= 0);
    }
    /* A clip job runs while the streams do (its own inference thread): it completes. */
    char req[1024];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"job\":\"clip1\",\"video\":\"%s\",\"question\":\"What "
             "happens?\",\"generation\":{\"max_new_tokens\":8}}",
             f);
    r = call(req);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    int done = 0;
    double until = vg_now_ms() + 30000;
    while (!done && vg_now_ms() < until) {
        pump(100);
        r = call("{\"v\":1,\"op\":\"job\",\"job\":\"clip1\"}");
        const char *stj = vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "job"), "state");
        done = !strcmp(stj, "completed");
        assert_true(strcmp(stj, "failed") && strcmp(stj, "cancelled"));
        cJSON_Delete(r);
    }
    assert_true(done);
    /* The 5 s file, paced at its native rate, ends. */
    assert_true(wait_rec(from, "file", "state", "ended", -1, 20000) >= 0);
    const cJSON *rec = cJSON_GetArrayItem(seen, find_rec(from, "file", "state", "ended", -1));
    assert_string_equal(vg_testd_jstr(rec, "detail"), "end of file");
    /* Stream b's frames follow its smaller pixel budget (8192 = 96x64 after smart_resize). */
    rec = cJSON_GetArrayItem(seen, find_rec(from, "b", "state", "live", -1));
    assert_non_null(strstr(vg_testd_jstr(rec, "detail"), "96x64"));
    cJSON *info = call("{\"v\":1,\"op\":\"info\"}");
    assert_true(vg_testd_jnum(info, "streams") == 3);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(info, "capabilities"), "streams")));
    cJSON_Delete(info);
    for (int i = 0; i < 3; i++) {
        char ureq[128];
        snprintf(ureq, sizeof ureq, "{\"v\":1,\"op\":\"unwatch\",\"name\":\"%s\"}", names[i]);
        r = call(ureq);
        assert_true(vg_testd_is_ok(r));
        cJSON_Delete(r);
    }
    for (int i = 0; i < 3; i++)
        assert_true(wait_gone(names[i], 10000));
    kill_source(s1);
    kill_source(s2);
}

/* Watches file f as stream name replayed at 20x (fps 2, a 6 s window updated every 0.2 s of
 * stream time) and waits for it to end; the index of the first record after the request. */
static int replay_file(const char *name, const char *f)
{
    char req[1024];
    int from = cJSON_GetArraySize(seen);
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"watch\",\"name\":\"%s\",\"url\":\"%s\",\"question\":"
             "\"What happens?\",\"fps\":2,\"window_s\":6,\"update_s\":0.2,\"speed\":20}",
             name, f);
    cJSON *r = call(req);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    assert_true(wait_rec(from, name, "state", "ended", -1, 30000) >= 0);
    return from;
}

/* Unwatches stream name and waits until it is gone. */
static void unwatch_gone(const char *name)
{
    char req[256];
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"unwatch\",\"name\":\"%s\"}", name);
    cJSON *r = call(req);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    assert_true(wait_gone(name, 10000));
}

/* A 100 s file replayed at 20x: the window slides (start and end advance, its length stays within
 * window_s) and is rebased from the cached vision outputs whenever the relative timestamps would
 * pass 40 s, so the base follows the stream and end - base stays within 40 s plus a pair. */
static void test_replay_window_rebase(void **state)
{
    (void)state;
    char f[400];
    snprintf(f, sizeof f, "%s/long.ts", media);
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                                 "testsrc2=size=160x120:rate=4 -t 100 -c:v mpeg2video -g 8 '%s'",
                                 f),
                     0);
    int from = replay_file("replay", f);
    cJSON *si = stream_info("replay");
    assert_non_null(si);
    printf("replay: %.0f pairs, %.0f rebases\n", vg_testd_jnum(si, "pairs"),
           vg_testd_jnum(si, "rebases"));
    assert_true(vg_testd_jnum(si, "rebases") >= 3); /* the first pair, then about every 34 s */
    assert_true(vg_testd_jnum(si, "pairs") >= 45);
    cJSON_Delete(si);
    int n = 0;
    double last_end = -1, max_base = 0;
    for (int i = find_rec(from, "replay", "answer", NULL, 0); i >= 0;
         i = find_rec(i + 1, "replay", "answer", NULL, 0)) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(seen, i), "window");
        double ws = vg_testd_jnum(w, "start"), we = vg_testd_jnum(w, "end"),
               base = vg_testd_jnum(w, "base");
        assert_true(we - ws <= 6.0 + 1e-6);
        assert_true(base <= ws + 1e-6);
        assert_true(we - base <= 40.0 + 1.5);
        assert_true(we >= last_end);
        last_end = we;
        max_base = fmax(max_base, base);
        n++;
    }
    printf("replay: %d answers, last window end %.1f s, largest base %.1f s\n", n, last_end,
           max_base);
    assert_true(n >= 10);
    assert_true(last_end > 90);
    assert_true(max_base > 50);
    unwatch_gone("replay");
}

/* A clip whose presentation times start again (two MPEG-TS recordings concatenated: 20 s from
 * 1000 s, then 20 s from 10 s). FFmpeg's demuxer turns the reset into a leap of 2^33 ticks (it
 * unwraps what it takes for a 33-bit wrap: +26.2 hours), the case of a live MPEG-TS stream's
 * second wrap. Stream time must go on from where it was: the replay reaches the end of both parts
 * (about 40 s of stream time, not a nap of 26 hours / speed), with one discontinuity counted and
 * the windows' ends never going back. */
static void test_replay_pts_reset(void **state)
{
    (void)state;
    char a[400], b[400], f[400];
    snprintf(a, sizeof a, "%s/reset-a.ts", media);
    snprintf(b, sizeof b, "%s/reset-b.ts", media);
    snprintf(f, sizeof f, "%s/reset.ts", media);
    assert_int_equal(
        vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                    "testsrc2=size=160x120:rate=4 -t 20 -c:v mpeg2video -g 8 "
                    "-output_ts_offset 1000 '%s' && ffmpeg -nostdin -loglevel error "
                    "-y -f lavfi -i testsrc2=size=160x120:rate=4 -t 20 -c:v "
                    "mpeg2video -g 8 -output_ts_offset 10 '%s' && cat '%s' '%s' > '%s'",
                    a, b, a, b, f),
        0);
    int from = replay_file("reset", f);
    cJSON *si = stream_info("reset");
    assert_non_null(si);
    printf("reset: %.0f frames, %.0f pairs, %.0f discontinuities\n", vg_testd_jnum(si, "frames"),
           vg_testd_jnum(si, "pairs"), vg_testd_jnum(si, "discontinuities"));
    assert_true(vg_testd_jnum(si, "discontinuities") == 1);
    assert_true(vg_testd_jnum(si, "frames") >= 150); /* 160 frames in both parts */
    cJSON_Delete(si);
    double last_end = -1;
    for (int i = find_rec(from, "reset", "answer", NULL, 0); i >= 0;
         i = find_rec(i + 1, "reset", "answer", NULL, 0)) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(seen, i), "window");
        double we = vg_testd_jnum(w, "end");
        assert_true(we >= last_end);
        last_end = we;
    }
    printf("reset: last window end %.1f s of stream time\n", last_end);
    assert_true(last_end > 35 && last_end < 45);
    unwatch_gone("reset");
}

/* The client: `vigil watch` (no --name: the default name) prints the stream's records as JSON lines
 * for --for seconds; `vigil streams` lists it; `vigil unwatch` stops it. */
static void test_cli_watch(void **state)
{
    (void)state;
    int src = start_source(port_base + 1, NULL);
    assert_true(src >= 0);
    char out[1 << 16];
    assert_int_equal(
        vg_testd_sh(out, sizeof out,
                    "'%s/tools/vigil' --runtime-dir '%s' watch udp://127.0.0.1:%d 'What "
                    "happens?' --question 'Is there a red box?' --fps 2 --window 4 --update 1 "
                    "--for 6 --json",
                    BIN, rt, port_base + 1),
        0);
    /* First line: the stream; then records of that stream only. */
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    *nl = 0;
    cJSON *st0 = cJSON_Parse(out);
    assert_non_null(st0);
    char name[64];
    snprintf(name, sizeof name, "%s", vg_testd_jstr(st0, "name"));
    assert_true(!strncmp(name, "cam", 3));
    cJSON_Delete(st0);
    int states = 0, answers[2] = {0, 0};
    for (char *p = nl + 1, *e; *p; p = e + 1) {
        e = strchr(p, '\n');
        if (!e)
            break;
        *e = 0;
        cJSON *o = cJSON_Parse(p);
        assert_non_null(o);
        assert_string_equal(vg_testd_jstr(o, "stream"), name);
        if (!strcmp(vg_testd_jstr(o, "kind"), "state"))
            states++;
        if (!strcmp(vg_testd_jstr(o, "kind"), "answer"))
            answers[(int)vg_testd_jnum(o, "question") & 1]++;
        cJSON_Delete(o);
    }
    assert_true(states >= 2); /* connecting, live */
    assert_true(answers[0] >= 1 && answers[1] >= 1);
    assert_int_equal(
        vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --runtime-dir '%s' streams", BIN, rt), 0);
    assert_non_null(strstr(out, name));
    assert_int_equal(vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --runtime-dir '%s' unwatch %s",
                                 BIN, rt, name),
                     0);
    assert_true(wait_gone(name, 10000));
    assert_int_not_equal(vg_testd_sh(NULL, 0,
                                     "'%s/tools/vigil' --runtime-dir '%s' unwatch %s 2>/dev/null",
                                     BIN, rt, name),
                         0);
    kill_source(src);
}

static void test_bad_requests(void **state)
{
    (void)state;
    struct {
        const char *req, *code;
    } cases[] = {
        {"{\"v\":1,\"op\":\"watch\",\"url\":\"udp://127.0.0.1:9\"}", "bad_request"},
        {"{\"v\":1,\"op\":\"watch\",\"question\":\"q\"}", "bad_request"},
        {"{\"v\":1,\"op\":\"watch\",\"url\":\"rtsp://127.0.0.1:9/x\",\"question\":\"q\"}",
         "forbidden"},
        {"{\"v\":1,\"op\":\"watch\",\"url\":\"/etc/passwd\",\"question\":\"q\"}", "forbidden"},
        {"{\"v\":1,\"op\":\"watch\",\"url\":\"udp://127.0.0.1:9\",\"question\":\"q\",\"fps\":0}",
         "bad_request"},
        {"{\"v\":1,\"op\":\"watch\",\"url\":\"udp://127.0.0.1:9\",\"question\":\"q\",\"name\":"
         "\"../x\"}",
         "bad_request"},
        {"{\"v\":1,\"op\":\"watch\",\"url\":\"udp://127.0.0.1:9\",\"questions\":[\"1\",\"2\","
         "\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}",
         "limit"},
        {"{\"v\":1,\"op\":\"watch\",\"url\":\"udp://127.0.0.1:9\",\"questions\":[1]}",
         "bad_request"},
        {"{\"v\":1,\"op\":\"unwatch\",\"name\":\"nope\"}", "not_found"},
        {"{\"v\":1,\"op\":\"unwatch\"}", "bad_request"},
        {"{\"v\":1,\"op\":\"events\",\"name\":\"nope\"}", "not_found"},
        {"{\"v\":1,\"op\":\"events\",\"name\":\"x\",\"since\":-1}", "bad_request"},
        {"{\"v\":1,\"op\":\"streams\",\"extra\":1}", "bad_request"},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++) {
        cJSON *r = call(cases[i].req);
        assert_non_null(r);
        if (strcmp(err_code(r), cases[i].code))
            fail_msg("%s: got %s, want %s", cases[i].req, err_code(r), cases[i].code);
        cJSON_Delete(r);
    }
    /* max_streams = 4: the fifth is busy (the streams try to connect to nothing meanwhile). */
    for (int i = 0; i < 5; i++) {
        char req[256];
        snprintf(req, sizeof req,
                 "{\"v\":1,\"op\":\"watch\",\"name\":\"n%d\",\"url\":\"udp://127.0.0.1:%d\","
                 "\"question\":\"q\"}",
                 i, port_base + 2 + i);
        cJSON *r = call(req);
        if (i < 4)
            assert_true(vg_testd_is_ok(r));
        else
            assert_string_equal(err_code(r), "busy");
        cJSON_Delete(r);
    }
    /* A dead stream never blocks the loop: info answers at once. */
    double t0 = vg_now_ms();
    cJSON *r = call("{\"v\":1,\"op\":\"info\"}");
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    assert_true(vg_now_ms() - t0 < 1500); /* generous: CI machines are loaded */
    for (int i = 0; i < 4; i++) {
        char req[128], name[16];
        snprintf(name, sizeof name, "n%d", i);
        snprintf(req, sizeof req, "{\"v\":1,\"op\":\"unwatch\",\"name\":\"%s\"}", name);
        r = call(req);
        assert_true(vg_testd_is_ok(r));
        cJSON_Delete(r);
        assert_true(wait_gone(name, 10000));
    }
}

/* A live camera on loopback with the trained demo model: the source draws a red box from t_on to
 * t_off of its own time; vigild must publish `started` and `ended` within 2 s of the truth (stream
 * time). knobs: extra watch fields ("" = every knob at its default). With watch_first, vigild
 * listens before the source starts, so its stream time 0 is the source's first frame and the
 * truth is t_on / t_off exactly; otherwise the truth comes from wall-clock times (which count the
 * source's start-up against vigild). */
static void demo_box_run(const char *name, int port, const char *lavfi, double t_on, double t_off,
                         const char *knobs, int timeout_ms, int watch_first)
{
    if (access(VG_SOURCE_DIR "/models/demo/config.json", R_OK) != 0) {
        fprintf(stderr, "skipped: models/demo/config.json is absent (the demo model is not "
                        "trained yet)\n");
        skip();
    }
    /* A daemon on the demo model. */
    assert_int_equal(stop_daemon(), 0);
    assert_int_equal(start_daemon(VG_SOURCE_DIR "/models/demo"), 0);
    vg_ipc_sub_close(sub);
    char err[256];
    assert_int_equal(vg_ipc_sub_open(ev_url, "stream/", &sub, err, sizeof err), 0);
    vg_testd_sleep_ms(200);
    char req[512];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"watch\",\"name\":\"%s\",\"url\":\"udp://127.0.0.1:%d\","
             "\"question\":\"When is the red box visible?\"%s}",
             name, port, knobs);
    int from = cJSON_GetArraySize(seen), src = -1;
    cJSON *r = NULL;
    if (watch_first) {
        r = call(req);
        assert_true(vg_testd_is_ok(r));
        cJSON_Delete(r);
        vg_testd_sleep_ms(1000); /* the reader has opened the UDP socket */
    }
    src = start_source(port, lavfi);
    assert_true(src >= 0);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double src_t0 = (double)now.tv_sec + now.tv_nsec / 1e9; /* the source's time 0, as wall time */
    if (!watch_first) {
        r = call(req);
        assert_true(vg_testd_is_ok(r));
        cJSON_Delete(r);
    }
    int started = -1, ended = -1;
    double until = vg_now_ms() + timeout_ms;
    while ((started < 0 || ended < 0) && vg_now_ms() < until) {
        pump(100);
        for (int i = from; i < cJSON_GetArraySize(seen); i++) {
            const cJSON *e = cJSON_GetArrayItem(seen, i);
            if (strcmp(vg_testd_jstr(e, "stream"), name) ||
                strcmp(vg_testd_jstr(e, "kind"), "event"))
                continue;
            if (started < 0 && !strcmp(vg_testd_jstr(e, "event"), "started"))
                started = i;
            if (ended < 0 && !strcmp(vg_testd_jstr(e, "event"), "ended"))
                ended = i;
        }
    }
    kill_source(src);
    if (started < 0 || ended < 0)
        for (int i = from; i < cJSON_GetArraySize(seen); i++) {
            char *txt = cJSON_PrintUnformatted(cJSON_GetArrayItem(seen, i));
            printf("  %s\n", txt);
            free(txt);
        }
    assert_true(started >= 0 && ended >= 0);
    /* Stream time 0 is the first frame vigild received, which UDP joins wherever the source is;
     * the records' wall-clock times (when those frames arrived) give the stream time of the
     * truth: source time T is wall src_t0 + T (ffmpeg -re sends in real time), i.e. stream time
     * T + src_t0 - wall(stream 0). */
    const cJSON *es = cJSON_GetArrayItem(seen, started), *ee = cJSON_GetArrayItem(seen, ended);
    double wall0 = iso_to_unix(vg_testd_jstr(es, "start_wall")) - vg_testd_jnum(es, "start");
    assert_true(wall0 > 0);
    double truth_start = t_on + src_t0 - wall0, truth_end = t_off + src_t0 - wall0;
    if (watch_first) {
        truth_start = t_on;
        truth_end = t_off;
    }
    printf("%s: started %.1f s (truth %.1f), ended %.1f s (truth %.1f), stream seconds\n", name,
           vg_testd_jnum(es, "start"), truth_start, vg_testd_jnum(ee, "end"), truth_end);
    assert_true(fabs(vg_testd_jnum(es, "start") - truth_start) <= 2.0);
    assert_true(fabs(vg_testd_jnum(ee, "end") - truth_end) <= 2.0);
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"unwatch\",\"name\":\"%s\"}", name);
    cJSON_Delete(call(req));
}

/* Acceptance with the trained demo model: a red box appears at 4 s and disappears at 9 s of the
 * stream; vigild publishes started and ended within 2 s of the truth (stream time). */
static void test_demo_box_events(void **state)
{
    (void)state;
    /* As the demo's training clips: a muted solid background, a filled red box. */
    demo_box_run("demo", port_base + 7,
                 "color=c=0x6a6a5a:size=160x120:rate=10,drawbox=x=50:y=40:w=26:h=24:"
                 "color=0xE12323:t=fill:enable='between(t,4,9)'",
                 4.0, 9.0, ",\"fps\":2,\"window_s\":8,\"update_s\":1,\"max_pixels\":9216", 30000,
                 0);
}

/* Every knob at its default (the sampling comes from the checkpoint's preprocessing config): a
 * 320x240 and a 1280x720 camera showing a red box from 8 s to 20 s. */
static void test_demo_defaults_320x240(void **state)
{
    (void)state;
    demo_box_run("cam320", port_base + 8,
                 "color=c=0x6a6a5a:size=320x240:rate=10,drawbox=x=100:y=80:w=52:h=48:"
                 "color=0xE12323:t=fill:enable='between(t,8,20)'",
                 8.0, 20.0, "", 50000, 1);
}

/* Checks that a job event has v's JSON type at every key, and that its numbers are in whole
 * milliseconds, as every published time is. */
static void assert_same_keys(const cJSON *job_ev, const cJSON *stream_ev)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, job_ev)
    {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(stream_ev, it->string);
        if (!o || (o->type & 0xFF) != (it->type & 0xFF)) {
            printf("key '%s' differs between a job event and a stream event\n", it->string);
            fail();
        }
        if (cJSON_IsNumber(it))
            assert_true(fabs(it->valuedouble * 1000.0 - round(it->valuedouble * 1000.0)) < 1e-6);
    }
}

/* A clip job's `done` events and a live stream's `started`/`ended` events share one JSON shape
 * (docs/protocol.md, "Events"): the same keys and types, the stream adding its wall-clock times. */
static void test_event_json_shape(void **state)
{
    (void)state;
    if (access(VG_SOURCE_DIR "/models/demo/config.json", R_OK) != 0)
        skip();
    char clip[400], out[512];
    snprintf(clip, sizeof clip, "%s/box.mp4", media);
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                                 "\"color=c=0x6a6a5a:size=320x240:rate=10,drawbox=x=100:y=80:w=52:"
                                 "h=48:color=0xE12323:t=fill:enable='between(t,3,8)'\" -t 12 "
                                 "-pix_fmt yuv420p -c:v libx264 '%s'",
                                 clip),
                     0);
    char req[640];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"job\":\"shape-1\",\"video\":\"%s\","
             "\"question\":\"When is the red box visible?\"}",
             clip);
    cJSON *r = call(req);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    cJSON *job = NULL;
    for (int i = 0; i < 600 && !job; i++) {
        r = call("{\"v\":1,\"op\":\"job\",\"job\":\"shape-1\"}");
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(r, "job");
        const char *state_s = vg_testd_jstr(j, "state");
        if (!strcmp(state_s, "completed") || !strcmp(state_s, "failed"))
            job = cJSON_Duplicate(j, 1);
        cJSON_Delete(r);
        if (!job)
            vg_testd_sleep_ms(100);
    }
    assert_non_null(job);
    assert_string_equal(vg_testd_jstr(job, "state"), "completed");
    const cJSON *jev = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(job, "events"), 0);
    assert_non_null(jev);
    /* The stream events of the earlier camera test, from its log. */
    const cJSON *started = NULL, *ended = NULL;
    for (int i = 0; i < cJSON_GetArraySize(seen); i++) {
        const cJSON *e = cJSON_GetArrayItem(seen, i);
        if (strcmp(vg_testd_jstr(e, "kind"), "event"))
            continue;
        if (!started && !strcmp(vg_testd_jstr(e, "event"), "started"))
            started = e;
        if (!ended && !strcmp(vg_testd_jstr(e, "event"), "ended"))
            ended = e;
    }
    assert_non_null(started);
    assert_non_null(ended);
    char *a = cJSON_PrintUnformatted(jev), *b = cJSON_PrintUnformatted(started),
         *c = cJSON_PrintUnformatted(ended);
    printf("job event:     %s\nstream started: %s\nstream ended:   %s\n", a, b, c);
    free(a);
    free(b);
    free(c);
    assert_same_keys(jev, started);
    assert_same_keys(jev, ended);
    assert_string_equal(vg_testd_jstr(jev, "origin"), "clip");
    assert_string_equal(vg_testd_jstr(started, "origin"), "stream");
    cJSON_Delete(job);
}

static void test_demo_defaults_1280x720(void **state)
{
    (void)state;
    demo_box_run("cam720", port_base + 9,
                 "color=c=0x6a6a5a:size=1280x720:rate=10,drawbox=x=400:y=240:w=208:h=144:"
                 "color=0xE12323:t=fill:enable='between(t,8,20)'",
                 8.0, 20.0, "", 50000, 1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    atexit(kill_all);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_live_drop_reconnect_log),
        cmocka_unit_test(test_events_since),
        cmocka_unit_test(test_several_streams),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_cli_watch),
        cmocka_unit_test(test_replay_window_rebase),
        cmocka_unit_test(test_replay_pts_reset),
        cmocka_unit_test(test_demo_box_events),
        cmocka_unit_test(test_demo_defaults_320x240),
        cmocka_unit_test(test_event_json_shape),
        cmocka_unit_test(test_demo_defaults_1280x720),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
