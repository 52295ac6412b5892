/*
 * test_hardening_disk.c: issue #13 item 2, acknowledged results and a full state disk, against the
 * real vigild (random tiny model).
 *
 * The state directory is a 1 MiB tmpfs mounted by the test when it can (root, as CI runs); where
 * mounting is not allowed, vigild runs with VG_TEST_JOURNAL_ENOSPC=FILE instead, which makes the
 * journal's writes fail with ENOSPC while FILE exists (daemon/journal.c). Either way the test runs
 * (it never skips) and says which it used. "Filling the disk" is a file that takes every free
 * block (or the fault file); "freeing" deletes it. VG_TEST_DISK_INJECT=1 forces the injection (to
 * check that path where mounting works).
 *
 * What must hold:
 *  - a result finished while the disk is full is reported `completed` with durable: false (`job`,
 *    `jobs`, the `done` event), `info` says state.journal = "failing" with the error, and new
 *    jobs are refused with code `storage`;
 *  - once space returns, the pending records are retried: durable: true, `info` back to "ok", new
 *    jobs accepted, a `job/ID/durable` event, and the results survive a kill -9 and a restart;
 *  - SIGTERM while results are not on disk exits with status 74 (EX_IOERR), not 0;
 *  - a stream's log on the full disk: `streams` (log.state) and `info` say it fails, new watches
 *    are refused, and once space returns every record is written in sequence, no broken line.
 */
#include "common.h"
#include "daemon.h"
#include "ipc.h"
#include "../support/vg_testd.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[256], model[320], media[320], rt[320], st[320], cmd_url[400], ev_url[400];
static char video[400], logpath[400], conf[400], fault[400];
static pid_t daemon_pid = -1;
static int use_tmpfs;

static int start_daemon(void)
{
    const char *sets[] = {"max_queued_jobs=64", NULL};
    vg_testd_spec spec = {.log = logpath,
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
        vg_testd_sh(NULL, 0, "cat '%s' >&2", logpath);
        return -1;
    }
    return 0;
}

static int group_setup(void **state)
{
    if (vg_testd_need_tools() != 0) {
        fprintf(stderr, "vigild, vigil, vigil-model or ffmpeg is missing\n");
        return -1;
    }
    if (vg_testd_tmpdir("/tmp/vg-disk-XXXXXX", dir, model, media, rt, st, cmd_url) != 0)
        return -1;
    snprintf(ev_url, sizeof ev_url, "ipc://%s/vigil.events", rt);
    if (vg_testd_make_model(dir, model) != 0)
        return -1;
    snprintf(video, sizeof video, "%s/t.mp4", media);
    if (vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=64x48:rate=4 "
                    "-t 1 '%s'",
                    video))
        return -1;
    mkdir(st, 0700);
    use_tmpfs =
        geteuid() == 0 && !getenv("VG_TEST_DISK_INJECT") &&
        vg_testd_sh(NULL, 0, "mount -t tmpfs -o size=1m,mode=0700 vg-disk-test '%s' 2>&1", st) == 0;
    snprintf(fault, sizeof fault, "%s/enospc", dir);
    if (use_tmpfs) {
        fprintf(stderr, "state directory: a 1 MiB tmpfs at %s\n", st);
    } else {
        fprintf(stderr, "cannot mount a tmpfs here: injecting ENOSPC (VG_TEST_JOURNAL_ENOSPC)\n");
        setenv("VG_TEST_JOURNAL_ENOSPC", fault, 1);
    }
    snprintf(logpath, sizeof logpath, "%s/vigild.log", dir);
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    if (vg_testd_write_file(conf, "# defaults\n") != 0)
        return -1;
    return start_daemon();
}

static int group_teardown(void **state)
{
    int rc = 0;
    if (daemon_pid > 0 && vg_testd_stop(&daemon_pid, 3000, NULL) != 0)
        rc = -1;
    if (vg_testd_check_log(dir) != 0)
        rc = -1;
    if (use_tmpfs && vg_testd_sh(NULL, 0, "umount '%s'", st) != 0)
        rc = -1;
    if (rc == 0)
        vg_testd_sh(NULL, 0, "rm -rf '%s'", dir);
    return rc;
}

static void fill_disk(void)
{
    if (use_tmpfs)
        /* dd stops at ENOSPC (its status is then 1). */
        vg_testd_sh(NULL, 0, "dd if=/dev/zero of='%s/filler' bs=4k 2>/dev/null; sync", st);
    else
        assert_int_equal(vg_testd_write_file(fault, "on\n"), 0);
}

static void free_disk(void)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", use_tmpfs ? st : dir, use_tmpfs ? "filler" : "enospc");
    assert_int_equal(unlink(path), 0);
}

static cJSON *call(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static cJSON *call(const char *fmt, ...)
{
    char req[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(req, sizeof req, fmt, ap);
    va_end(ap);
    cJSON *r = vg_testd_call(cmd_url, req, strlen(req), 20000);
    if (!r)
        fail_msg("no reply to %s", req);
    return r;
}

static const char *err_code(const cJSON *r)
{
    return vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "code");
}

static int is_true(const cJSON *o, const char *k)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

/* `info`'s state.journal. */
static int journal_failing(void)
{
    cJSON *r = call("{\"v\":1,\"op\":\"info\"}");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(r, "state");
    assert_non_null(s);
    int failing = !strcmp(vg_testd_jstr(s, "journal"), "failing");
    if (failing) {
        assert_non_null(strstr(vg_testd_jstr(s, "error"), "No space left on device"));
        assert_true(vg_testd_jnum(s, "since") > 0);
    } else {
        assert_string_equal(vg_testd_jstr(s, "journal"), "ok");
    }
    cJSON_Delete(r);
    return failing;
}

/* Polls `job ID` until its state is final; returns the job object (caller frees the reply). */
static cJSON *wait_final(const char *id, cJSON **reply)
{
    for (int i = 0; i < 6000; i++) {
        cJSON *r = call("{\"v\":1,\"op\":\"job\",\"job\":\"%s\"}", id);
        if (!vg_testd_is_ok(r)) {
            char *t = cJSON_PrintUnformatted(r);
            fail_msg("job %s: %s", id, t);
        }
        cJSON *j = cJSON_GetObjectItemCaseSensitive(r, "job");
        const char *s = vg_testd_jstr(j, "state");
        if (strcmp(s, "queued") && strcmp(s, "running")) {
            *reply = r;
            return j;
        }
        cJSON_Delete(r);
        vg_testd_sleep_ms(20);
    }
    fail_msg("job %s never finished", id);
    return NULL;
}

/* Polls `job ID` until its durable flag is want. */
static void wait_durable(const char *id, int want)
{
    for (int i = 0; i < 3000; i++) {
        cJSON *reply;
        cJSON *j = wait_final(id, &reply);
        int d = is_true(j, "durable");
        cJSON_Delete(reply);
        if (d == want)
            return;
        vg_testd_sleep_ms(20);
    }
    fail_msg("job %s: durable never became %s", id, want ? "true" : "false");
}

static void ask(const char *id, const char *question)
{
    cJSON *r = call("{\"v\":1,\"op\":\"ask\",\"job\":\"%s\",\"video\":\"%s\",\"question\":\"%s\"}",
                    id, video, question);
    if (!vg_testd_is_ok(r))
        fail_msg("ask %s refused: %s", id, err_code(r));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(r, "durable"));
    cJSON_Delete(r);
}

static void check_completed(const char *id)
{
    cJSON *reply;
    cJSON *j = wait_final(id, &reply);
    assert_string_equal(vg_testd_jstr(j, "state"), "completed");
    cJSON_Delete(reply);
}

/* The next event on topic that sub receives (others are skipped); NULL after 20 s of silence. */
static cJSON *recv_event(vg_ipc_sub *sub, const char *topic)
{
    for (;;) {
        char *msg = NULL;
        const char *t, *p;
        size_t pl = 0;
        int rc = vg_ipc_sub_recv(sub, 20000, &msg, &t, &p, &pl);
        if (rc == VG_ETIMEDOUT)
            return NULL;
        cJSON *o = rc == 0 && !strcmp(t, topic) ? cJSON_ParseWithLength(p, pl) : NULL;
        free(msg);
        if (o)
            return o;
    }
}

static void test_full_disk(void **state)
{
    char q[1600];
    /* A long question makes each record larger than a tmpfs page: the first one after the disk
     * is full cannot land in the last page's slack. */
    size_t n = 0;
    while (n + 16 < sizeof q)
        n += (size_t)snprintf(q + n, sizeof q - n, "what moves? ");
    /* 1. A result with space: durable. */
    ask("a1", "what moves?");
    check_completed("a1");
    wait_durable("a1", 1);
    assert_false(journal_failing());

    /* 2. The disk fills: results finished now are completed but not durable, and `info` says
     * so. Jobs are asked until the journal has failed (with a tmpfs the first records may still
     * fit in the journal's last page). */
    vg_ipc_sub *sub;
    char err[256];
    assert_int_equal(vg_ipc_sub_open(ev_url, "job/b", &sub, err, sizeof err), 0);
    vg_testd_sleep_ms(200); /* the subscription reaches vigild (PUB drops what nobody takes) */
    fill_disk();
    char last[16] = "";
    int failing = 0;
    for (int i = 1; i <= 16 && !failing; i++) {
        snprintf(last, sizeof last, "b%d", i);
        cJSON *r = call("{\"v\":1,\"op\":\"ask\",\"job\":\"%s\",\"video\":\"%s\",\"question\":"
                        "\"%s\"}",
                        last, video, q);
        if (!vg_testd_is_ok(r)) {
            /* The journal failed between two asks (an earlier job's record): refused. */
            fprintf(stderr, "ask %s refused: %s\n", last,
                    vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "message"));
            assert_string_equal(err_code(r), "storage");
            assert_true(i > 1);
            cJSON_Delete(r);
            snprintf(last, sizeof last, "b%d", i - 1);
            failing = 1;
            break;
        }
        cJSON_Delete(r);
        check_completed(last);
        for (int k = 0; k < 100 && !(failing = journal_failing()); k++)
            vg_testd_sleep_ms(20);
    }
    assert_true(failing);
    fprintf(stderr, "the journal failed by job %s\n", last);
    wait_durable(last, 0);
    cJSON *r = call("{\"v\":1,\"op\":\"jobs\"}");
    int listed = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(r, "jobs"))
    {
        if (!strcmp(vg_testd_jstr(it, "job"), last)) {
            listed = 1;
            assert_false(is_true(it, "durable"));
            assert_string_equal(vg_testd_jstr(it, "state"), "completed");
        }
        if (!strcmp(vg_testd_jstr(it, "job"), "a1"))
            assert_true(is_true(it, "durable"));
    }
    assert_true(listed);
    cJSON_Delete(r);
    r = call("{\"v\":1,\"op\":\"info\"}");
    assert_true(vg_testd_jnum(cJSON_GetObjectItemCaseSensitive(r, "state"), "undurable_jobs") >= 1);
    cJSON_Delete(r);
    /* The `done` event said durable: false (the last job's, at the latest). */
    char topic[64];
    snprintf(topic, sizeof topic, "job/%s/done", last);
    cJSON *ev = recv_event(sub, topic);
    assert_non_null(ev);
    assert_false(is_true(ev, "durable"));
    cJSON_Delete(ev);

    /* 3. New jobs are refused with a sentence; a retried ask of an existing job still answers. */
    r = call("{\"v\":1,\"op\":\"ask\",\"job\":\"c1\",\"video\":\"%s\",\"question\":\"what?\"}",
             video);
    assert_false(vg_testd_is_ok(r));
    assert_string_equal(err_code(r), "storage");
    assert_non_null(strstr(vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(r, "error"), "message"),
                           "cannot be written"));
    cJSON_Delete(r);

    /* 4. Space returns: the retry makes everything durable, `job/ID/durable` says so, and new
     * jobs are accepted again. */
    free_disk();
    wait_durable(last, 1);
    snprintf(topic, sizeof topic, "job/%s/durable", last);
    ev = recv_event(sub, topic);
    assert_non_null(ev);
    assert_true(is_true(ev, "durable"));
    cJSON_Delete(ev);
    vg_ipc_sub_close(sub);
    assert_false(journal_failing());
    r = call("{\"v\":1,\"op\":\"info\"}");
    assert_int_equal(vg_testd_jnum(cJSON_GetObjectItemCaseSensitive(r, "state"), "undurable_jobs"),
                     0);
    cJSON_Delete(r);
    ask("c1", "what?");
    check_completed("c1");
    wait_durable("c1", 1);

    /* 5. kill -9 and a restart: every result acknowledged as durable is read back. */
    kill(daemon_pid, SIGKILL);
    waitpid(daemon_pid, NULL, 0);
    daemon_pid = -1;
    assert_int_equal(start_daemon(), 0);
    char b_last[16];
    snprintf(b_last, sizeof b_last, "%s", last);
    const char *ids[] = {"a1", b_last, "c1"};
    for (size_t i = 0; i < VG_ARRAY_LEN(ids); i++) {
        check_completed(ids[i]);
        wait_durable(ids[i], 1);
    }

    /* 6. SIGTERM with a result that is not on disk: exit status 74, not 0. */
    fill_disk();
    failing = 0;
    for (int i = 1; i <= 16 && !failing; i++) {
        snprintf(last, sizeof last, "d%d", i);
        r = call("{\"v\":1,\"op\":\"ask\",\"job\":\"%s\",\"video\":\"%s\",\"question\":\"%s\"}",
                 last, video, q);
        int ok = vg_testd_is_ok(r);
        cJSON_Delete(r);
        if (!ok)
            break;
        check_completed(last);
        for (int k = 0; k < 100 && !(failing = journal_failing()); k++)
            vg_testd_sleep_ms(20);
    }
    assert_true(journal_failing());
    assert_int_equal(vg_testd_stop(&daemon_pid, 3000, NULL), 74);

    /* 7. Restarted while the disk is still full: vigild starts (it cannot compact its journal)
     * and serves the results that were durable. */
    assert_int_equal(start_daemon(), 0);
    for (size_t i = 0; i < VG_ARRAY_LEN(ids); i++)
        check_completed(ids[i]);
    free_disk();
    /* A clean stop with everything on disk exits 0. */
    assert_int_equal(vg_testd_stop(&daemon_pid, 3000, NULL), 0);
}

static cJSON *stream_log_state(const char *name)
{
    cJSON *r = call("{\"v\":1,\"op\":\"streams\"}");
    cJSON *it, *out = NULL;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(r, "streams"))
    {
        if (!strcmp(vg_testd_jstr(it, "name"), name))
            out = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(it, "log"), 1);
    }
    cJSON_Delete(r);
    return out;
}

static int stream_log_failing(const char *name)
{
    cJSON *lg = stream_log_state(name);
    int failing = lg && !strcmp(vg_testd_jstr(lg, "state"), "failing");
    if (failing)
        assert_non_null(strstr(vg_testd_jstr(lg, "error"), "No space left on device"));
    cJSON_Delete(lg);
    return failing;
}

static void collect(const char *json, size_t len, void *opaque)
{
    cJSON_AddItemToArray(opaque, cJSON_ParseWithLength(json, len));
}

/* The journal alone (as the job journal and every stream log use it), writes failing with ENOSPC
 * (the test hook): records wait in memory, the status says failing, the file never holds a broken
 * record; once writes work the retry makes all of them durable, in order; a close while failing
 * reports the loss. */
static void test_journal_retry(void **state)
{
    char path[400], err[256], flag[400];
    snprintf(path, sizeof path, "%s/unit.journal", dir);
    snprintf(flag, sizeof flag, "%s/unit-enospc", dir);
    char *saved =
        getenv("VG_TEST_JOURNAL_ENOSPC") ? strdup(getenv("VG_TEST_JOURNAL_ENOSPC")) : NULL;
    setenv("VG_TEST_JOURNAL_ENOSPC", flag, 1);
    vg_journal *j;
    assert_int_equal(vg_journal_open(path, NULL, &j, err, sizeof err), 0);
    assert_int_equal(vg_journal_append(j, "{\"n\":1}", 7), 0);
    assert_int_equal(vg_journal_last_seq(j), 1);
    vg_journal_status js;
    for (int i = 0; i < 1000; i++) {
        vg_journal_get_status(j, &js);
        if (js.durable == 1)
            break;
        vg_testd_sleep_ms(5);
    }
    assert_int_equal(js.durable, 1);
    assert_false(js.failing);
    assert_int_equal(vg_testd_write_file(flag, "on\n"), 0);
    char rec[64];
    for (int n = 2; n <= 50; n++) {
        snprintf(rec, sizeof rec, "{\"n\":%d}", n);
        assert_int_equal(vg_journal_append(j, rec, strlen(rec)), 0);
    }
    for (int i = 0; i < 1000 && !js.failing; i++) {
        vg_journal_get_status(j, &js);
        vg_testd_sleep_ms(5);
    }
    assert_true(js.failing);
    assert_int_equal(js.error, -ENOSPC);
    assert_int_equal(js.durable, 1);
    assert_non_null(strstr(js.message, "No space left on device"));
    cJSON *got = cJSON_CreateArray();
    assert_int_equal(vg_journal_load(path, collect, got, NULL, err, sizeof err), 0);
    assert_int_equal(cJSON_GetArraySize(got), 1);
    cJSON_Delete(got);
    assert_int_equal(unlink(flag), 0);
    for (int i = 0; i < 2000; i++) { /* the backoff is at most 5 s */
        vg_journal_get_status(j, &js);
        if (!js.failing && js.durable == 50)
            break;
        vg_testd_sleep_ms(5);
    }
    assert_false(js.failing);
    assert_int_equal(js.durable, 50);
    vg_journal_stats ls;
    got = cJSON_CreateArray();
    assert_int_equal(vg_journal_load(path, collect, got, &ls, err, sizeof err), 0);
    assert_int_equal(cJSON_GetArraySize(got), 50);
    assert_int_equal(ls.torn + ls.bad_crc, 0);
    for (int n = 1; n <= 50; n++)
        assert_true(vg_testd_jnum(cJSON_GetArrayItem(got, n - 1), "n") == n);
    cJSON_Delete(got);
    /* Closing while the disk fails: the records are lost and close says so. */
    assert_int_equal(vg_testd_write_file(flag, "on\n"), 0);
    assert_int_equal(vg_journal_append(j, "{\"n\":51}", 8), 0);
    assert_int_equal(vg_journal_close(j), -ENOSPC);
    unlink(flag);
    got = cJSON_CreateArray();
    assert_int_equal(vg_journal_load(path, collect, got, &ls, err, sizeof err), 0);
    assert_int_equal(cJSON_GetArraySize(got), 50);
    assert_int_equal(ls.torn + ls.bad_crc, 0);
    cJSON_Delete(got);
    if (saved)
        setenv("VG_TEST_JOURNAL_ENOSPC", saved, 1);
    else
        unsetenv("VG_TEST_JOURNAL_ENOSPC");
    free(saved);
}

/* A stream's log on the full disk: `streams` and `info` say it fails, new watches are refused;
 * once space returns its records are all written, in sequence, with no broken line. */
static void test_stream_log_full(void **state)
{
    char clip[400];
    snprintf(clip, sizeof clip, "%s/long.mp4", media);
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                                 "testsrc2=size=64x48:rate=4 -t 120 '%s'",
                                 clip),
                     0);
    assert_int_equal(start_daemon(), 0);
    cJSON *r = call("{\"v\":1,\"op\":\"watch\",\"name\":\"cam\",\"url\":\"%s\","
                    "\"question\":\"what moves?\",\"update_s\":0.5,\"min_window_s\":1}",
                    clip);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    cJSON *lg = NULL;
    for (int i = 0; i < 500 && !lg; i++) {
        lg = stream_log_state("cam");
        if (!lg)
            vg_testd_sleep_ms(20);
    }
    assert_non_null(lg);
    assert_string_equal(vg_testd_jstr(lg, "state"), "ok");
    cJSON_Delete(lg);
    fill_disk();
    int failing = 0;
    for (int i = 0; i < 3000 && !(failing = stream_log_failing("cam")); i++)
        vg_testd_sleep_ms(20);
    assert_true(failing);
    r = call("{\"v\":1,\"op\":\"info\"}");
    assert_true(
        vg_testd_jnum(cJSON_GetObjectItemCaseSensitive(r, "state"), "stream_logs_failing") >= 1);
    cJSON_Delete(r);
    r = call("{\"v\":1,\"op\":\"watch\",\"name\":\"cam2\",\"url\":\"%s\","
             "\"question\":\"what?\"}",
             clip);
    assert_false(vg_testd_is_ok(r));
    assert_string_equal(err_code(r), "storage");
    cJSON_Delete(r);
    free_disk();
    for (int i = 0; i < 1000 && stream_log_failing("cam"); i++)
        vg_testd_sleep_ms(20);
    assert_false(stream_log_failing("cam"));
    r = call("{\"v\":1,\"op\":\"unwatch\",\"name\":\"cam\"}");
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    /* Gone from the table: `events` then reads the log file itself. */
    int watched = 1;
    for (int i = 0; i < 1000 && watched; i++) {
        r = call("{\"v\":1,\"op\":\"events\",\"name\":\"cam\"}");
        assert_true(vg_testd_is_ok(r));
        watched = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "watched"));
        if (!watched) {
            const cJSON *ev;
            double seq = 0;
            cJSON_ArrayForEach(ev, cJSON_GetObjectItemCaseSensitive(r, "events"))
            {
                assert_true(vg_testd_jnum(ev, "seq") == seq + 1);
                seq = vg_testd_jnum(ev, "seq");
            }
            assert_true(seq >= 3);
            assert_true(vg_testd_jnum(r, "last_seq") == seq);
        }
        cJSON_Delete(r);
        if (watched)
            vg_testd_sleep_ms(20);
    }
    assert_false(watched);
    char path[500], err[256];
    snprintf(path, sizeof path, "%s/streams/cam.events", st);
    vg_journal_stats ls;
    cJSON *got = cJSON_CreateArray();
    assert_int_equal(vg_journal_load(path, collect, got, &ls, err, sizeof err), 0);
    assert_int_equal(ls.torn + ls.bad_crc, 0);
    cJSON_Delete(got);
    assert_int_equal(vg_testd_stop(&daemon_pid, 3000, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_journal_retry),
                                       cmocka_unit_test(test_full_disk),
                                       cmocka_unit_test(test_stream_log_full)};
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
