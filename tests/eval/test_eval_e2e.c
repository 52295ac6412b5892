/*
 * test_eval_e2e.c: `vigil eval` end to end: the real vigild on a random-weight tiny model, three
 * tiny ffmpeg lavfi clips and a JSONL file with two positives, a negative, a line whose video does
 * not exist and a malformed line, everything in a temporary directory.
 *
 * The random model's answers are noise, so the numbers are checked for consistency, not quality:
 * counts, errors reported per line without aborting, every metric recomputed from the per-line
 * results, each prediction equal to the first event of the daemon's own job, and the blind
 * baseline: [0, 1] of clips whose truth covers the whole clip scores tIoU 1, and a fit on a
 * training file whose truths all lie at 0.25..0.75 finds exactly those fractions. Also: `busy`
 * replies retried, --timeout-ms and SIGINT cancelling the jobs in flight, vigild killed mid-run,
 * usage errors, and no sanitizer report from vigil in the sanitizer build.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "eval.h"
#include "ipc.h"
#include "pipeline.h"
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

static char dir[256], model[320], media[320], rt[320], st[320], cmd_url[400], jsonl[400],
    train[400];
static double dur_a; /* container duration of a.mp4 */
static pid_t daemon_pid = -1;

static cJSON *call(const char *req)
{
    return vg_testd_call(cmd_url, req, strlen(req), 5000);
}

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *it = get(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : NAN;
}

static int start_daemon(void)
{
    char log[400], conf[400];
    snprintf(log, sizeof log, "%s/vigild.log", dir);
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    /* max_queued_jobs = 2 so that --concurrency 6 meets `busy` */
    if (vg_testd_write_file(conf, "max_queued_jobs = 2\n") != 0)
        return -1;
    vg_testd_spec spec = {.log = log,
                          .conf = conf,
                          .model = model,
                          .rt = rt,
                          .st = st,
                          .media = media,
                          .cmd_url = cmd_url,
                          .log_level = "notice",
                          .clear_notify_env = 1,
                          .call_timeout_ms = 5000};
    return vg_testd_start(&spec, &daemon_pid);
}

static int stop_daemon(void)
{
    return vg_testd_stop(&daemon_pid, 1000, NULL);
}

static int group_setup(void **state)
{
    (void)state;
    if (vg_testd_need_tools() != 0) {
        fprintf(stderr, "vigild, vigil, vigil-model or ffmpeg is missing\n");
        return -1;
    }
    if (vg_testd_tmpdir("/tmp/vg-eval-XXXXXX", dir, model, media, rt, st, cmd_url) != 0)
        return -1;
    snprintf(jsonl, sizeof jsonl, "%s/eval.jsonl", media);
    snprintf(train, sizeof train, "%s/train.jsonl", dir);
    if (vg_testd_make_model(dir, model) != 0) {
        fprintf(stderr, "cannot make the test model\n");
        return -1;
    }
    if (vg_testd_sh(NULL, 0,
                    "cd '%s' && ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                    "testsrc2=size=160x120:rate=10 -t 3 "
                    "a.mp4 && ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                    "color=c=red:size=128x96:rate=12 -t 4 "
                    "-c:v mpeg4 b.mkv && ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                    "testsrc=size=96x128:rate=15 -t 2.5 c.mp4",
                    media)) {
        fprintf(stderr, "ffmpeg failed\n");
        return -1;
    }
    /* The truth of a.mp4 is the whole clip as its container states it (the blind baseline reads
     * the same duration); b.mkv's duration comes from the line. */
    char a[400], err[256];
    snprintf(a, sizeof a, "%s/a.mp4", media);
    vg_media *m;
    vg_media_params mp = vg_media_default_params();
    if (vg_media_open(a, &mp, &m, err, sizeof err) < 0)
        return -1;
    dur_a = vg_media_get_info(m)->duration;
    vg_media_close(m);
    if (!(dur_a > 2.5 && dur_a < 3.5))
        return -1;
    char text[2048];
    snprintf(text, sizeof text,
             "{\"video\":\"a.mp4\",\"query\":\"When is the red box visible?\",\"start\":0,"
             "\"end\":%.17g}\n"
             "{\"video\":\"b.mkv\",\"query\":\"When does the green box appear?\",\"start\":0,"
             "\"end\":4,\"duration\":4,\"source\":\"lavfi\"}\n"
             "\n"
             "{\"video\":\"%s/c.mp4\",\"query\":\"When is the blue box visible?\"}\n"
             "{\"video\":\"missing.mp4\",\"query\":\"When is the white box visible?\",\"start\":1,"
             "\"end\":2}\n"
             "{\"video\":\"a.mp4\",\"query\":\"When\",\"start\":2}\n",
             dur_a, media);
    if (vg_testd_write_file(jsonl, text) ||
        vg_testd_write_file(train, "{\"video\":\"t1.mp4\",\"query\":\"Q\","
                                   "\"start\":2.5,\"end\":7.5,\"duration\":10}\n"
                                   "{\"video\":\"t2.mp4\",\"query\":\"Q\","
                                   "\"start\":5,\"end\":15,\"duration\":20}\n"
                                   "{\"video\":\"t3.mp4\",\"query\":\"Q\"}\n"
                                   "{\"video\":\"t4.mp4\",\"query\":\"Q\","
                                   "\"start\":1,\"end\":3,\"duration\":4}\n"))
        return -1;
    if (start_daemon() != 0) {
        fprintf(stderr, "vigild did not start; its log:\n");
        vg_testd_sh(NULL, 0, "cat '%s/vigild.log' >&2", dir);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (daemon_pid > 0 && stop_daemon() != 0) {
        fprintf(stderr, "vigild did not exit cleanly\n");
        rc = -1;
    }
    if (dir[0] && vg_testd_check_log(dir) != 0)
        rc = -1;
    if (dir[0] && !getenv("VG_KEEP_TMP"))
        vg_testd_sh(NULL, 0, "rm -rf '%s'", dir);
    return rc;
}

/* Runs vigil eval with args; returns the parsed stdout (NULL when it is not JSON) and the exit
 * status. stderr goes to dir/eval.err. */
static cJSON *run_eval(const char *args, int *status)
{
    static char out[1 << 18];
    *status =
        vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --runtime-dir '%s' eval %s 2>'%s/eval.err'",
                    BIN, rt, args, dir);
    /* In the sanitizer build a report also exits with 1: look for one. */
    if (vg_testd_sh(NULL, 0, "grep -q 'Sanitizer\\|runtime error' '%s/eval.err'", dir) == 0) {
        vg_testd_sh(NULL, 0, "cat '%s/eval.err' >&2", dir);
        fail_msg("sanitizer report from vigil eval %s", args);
    }
    return cJSON_Parse(out);
}

static const cJSON *line_of(const cJSON *lines, int line)
{
    const cJSON *l;
    cJSON_ArrayForEach(l, lines)
    {
        if ((int)num(l, "line") == line)
            return l;
    }
    return NULL;
}

static void test_eval_json(void **state)
{
    (void)state;
    char args[1024];
    snprintf(args, sizeof args,
             "'%s' --json --verbose --blind 0,1 --concurrency 2 --max-new-tokens 24 "
             "--timeout-ms 60000",
             jsonl);
    int status;
    cJSON *r = run_eval(args, &status);
    if (!r)
        vg_testd_sh(NULL, 0, "cat '%s/eval.err' >&2", dir);
    assert_non_null(r);
    assert_int_equal(status, 1); /* two lines failed */
    assert_int_equal(num(r, "n_lines"), 5);
    assert_true(cJSON_IsString(get(r, "model")));
    assert_int_equal(num(r, "n_positive"), 2);
    assert_int_equal(num(r, "n_negative"), 1);
    assert_int_equal(num(r, "n_errors"), 2);
    assert_true(num(r, "elapsed_s") > 0);
    /* The errors name their lines: the missing video (refused by the daemon) and the line with a
     * start but no end. */
    const cJSON *errs = get(r, "errors");
    assert_int_equal(cJSON_GetArraySize(errs), 2);
    const cJSON *e0 = cJSON_GetArrayItem(errs, 0), *e1 = cJSON_GetArrayItem(errs, 1);
    assert_int_equal(num(e0, "line"), 5);
    assert_non_null(strstr(cJSON_GetStringValue(get(e0, "message")), "not_found"));
    assert_int_equal(num(e1, "line"), 6);
    assert_non_null(strstr(cJSON_GetStringValue(get(e1, "message")), "malformed"));
    char errtext[4096];
    assert_int_equal(vg_testd_sh(errtext, sizeof errtext, "cat '%s/eval.err'", dir), 0);
    assert_non_null(strstr(errtext, "line 5 ("));
    assert_non_null(strstr(errtext, "missing.mp4): ask: not_found"));
    assert_non_null(strstr(errtext, "line 6 ("));

    /* Every metric is what the per-line results give, and every prediction is the first event of
     * the daemon's job. */
    const cJSON *lines = get(r, "lines");
    assert_int_equal(cJSON_GetArraySize(lines), 5);
    vg_eval_acc acc, bacc;
    memset(&acc, 0, sizeof acc);
    memset(&bacc, 0, sizeof bacc);
    const int scored[] = {1, 2, 4};
    for (size_t k = 0; k < VG_ARRAY_LEN(scored); k++) {
        const cJSON *l = line_of(lines, scored[k]);
        assert_non_null(l);
        assert_null(get(l, "error"));
        const char *job = cJSON_GetStringValue(get(l, "job"));
        assert_non_null(job);
        char req[256];
        snprintf(req, sizeof req, "{\"v\":1,\"op\":\"job\",\"job\":\"%s\"}", job);
        cJSON *jr = call(req);
        assert_true(jr && cJSON_IsTrue(get(jr, "ok")));
        const cJSON *j = get(jr, "job");
        assert_string_equal(cJSON_GetStringValue(get(j, "state")), "completed");
        assert_string_equal(cJSON_GetStringValue(get(l, "text")),
                            cJSON_GetStringValue(get(j, "text")));
        int nev = cJSON_GetArraySize(get(j, "events"));
        assert_int_equal(num(l, "n_events"), nev);
        if (nev > 0) {
            const cJSON *ev = cJSON_GetArrayItem(get(j, "events"), 0);
            assert_float_equal(num(l, "pred_start"), fmin(num(ev, "start"), num(ev, "end")), 1e-9);
            assert_float_equal(num(l, "pred_end"), fmax(num(ev, "start"), num(ev, "end")), 1e-9);
        }
        cJSON_Delete(jr);
        if (cJSON_IsTrue(get(l, "positive"))) {
            double t = nev ? vg_eval_tiou(num(l, "pred_start"), num(l, "pred_end"), num(l, "start"),
                                          num(l, "end"))
                           : 0;
            assert_float_equal(num(l, "tiou"), t, 1e-12);
            vg_eval_acc_positive(&acc, t);
            /* --blind 0,1 on a truth that covers the whole clip. */
            assert_float_equal(num(l, "blind_tiou"), 1.0, 1e-12);
            vg_eval_acc_positive(&bacc, num(l, "blind_tiou"));
        } else {
            assert_int_equal(cJSON_IsTrue(get(l, "correct")), nev == 0);
            vg_eval_acc_negative(&acc, nev == 0);
            vg_eval_acc_negative(&bacc, 0);
        }
    }
    assert_float_equal(num(line_of(lines, 1), "duration"), dur_a, 1e-9);
    assert_float_equal(num(line_of(lines, 2), "duration"), 4, 0);
    vg_eval_metrics m;
    vg_eval_metrics_get(&acc, &m);
    assert_float_equal(num(r, "mean_tiou"), m.mean_tiou, 1e-12);
    assert_float_equal(num(r, "r_at_0_3"), m.r03, 1e-12);
    assert_float_equal(num(r, "r_at_0_5"), m.r05, 1e-12);
    assert_float_equal(num(r, "r_at_0_7"), m.r07, 1e-12);
    assert_float_equal(num(r, "negative_accuracy"), m.negative_accuracy, 1e-12);
    assert_float_equal(num(r, "mean_tiou_all"), m.mean_tiou_all, 1e-12);

    const cJSON *b = get(r, "blind");
    assert_true(cJSON_IsObject(b));
    assert_float_equal(num(b, "a"), 0, 0);
    assert_float_equal(num(b, "b"), 1, 0);
    assert_string_equal(cJSON_GetStringValue(get(b, "fractions")), "given");
    assert_float_equal(num(b, "mean_tiou"), 1.0, 1e-12);
    assert_float_equal(num(b, "r_at_0_7"), 1.0, 0);
    assert_float_equal(num(b, "negative_accuracy"), 0.0, 0);
    assert_int_equal(num(b, "n_positive"), 2);
    assert_int_equal(num(b, "n_negative"), 1);
    assert_int_equal(num(b, "n_errors"), 0);
    assert_float_equal(num(b, "mean_tiou_all"), 2.0 / 3.0, 1e-12);
    assert_float_equal(num(r, "margin_tiou"), m.mean_tiou - 1.0, 1e-12);
    assert_float_equal(num(r, "margin_tiou_all"), m.mean_tiou_all - 2.0 / 3.0, 1e-12);
    cJSON_Delete(r);
}

static void test_eval_text_and_fit(void **state)
{
    (void)state;
    /* The fit on train.jsonl: every truth at 0.25..0.75 of its clip (durations from the lines; the
     * videos do not exist and are not needed). Text output, the first two lines only. */
    char args[1024], out[8192];
    snprintf(args, sizeof args,
             "'%s' --blind-fit '%s' --max 2 --max-new-tokens 8 --greedy --concurrency 1", jsonl,
             train);
    int status = vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --runtime-dir '%s' eval %s 2>&1",
                             BIN, rt, args);
    if (status != 0)
        fprintf(stderr, "%s", out);
    assert_int_equal(status, 0);
    assert_null(strstr(out, "Sanitizer"));
    assert_non_null(strstr(out, "2 lines, 2 positive, 0 negative, 0 errors"));
    assert_non_null(strstr(out, "blind 0.25-0.75"));
    assert_non_null(strstr(out, "fitted on"));
    assert_non_null(strstr(out, "3 positives, mean tIoU 1.000"));
    assert_non_null(strstr(out, "margin over the blind baseline"));
    /* --verbose: one line per question and its answer on stderr. */
    snprintf(args, sizeof args, "'%s' --verbose --max 2 --max-new-tokens 8", jsonl);
    status =
        vg_testd_sh(out, sizeof out, "'%s/tools/vigil' --runtime-dir '%s' eval %s 2>&1 >/dev/null",
                    BIN, rt, args);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "line 1: truth 0.0-3.0, predicted "));
    assert_non_null(strstr(out, "line 2: truth 0.0-4.0, predicted "));
    assert_non_null(strstr(out, "    answer: "));
    assert_null(strstr(out, "Sanitizer"));

    int st2;
    snprintf(args, sizeof args, "'%s' --json --blind-fit '%s' --max 1 --max-new-tokens 8", jsonl,
             train);
    cJSON *r = run_eval(args, &st2);
    assert_non_null(r);
    assert_int_equal(st2, 0);
    const cJSON *b = get(r, "blind");
    assert_float_equal(num(b, "a"), 0.25, 1e-12);
    assert_float_equal(num(b, "b"), 0.75, 1e-12);
    assert_string_equal(cJSON_GetStringValue(get(b, "fractions")), "fitted");
    assert_int_equal(num(b, "fit_n_positive"), 3);
    assert_float_equal(num(b, "fit_mean_tiou"), 1.0, 1e-12);
    /* a.mp4's truth is the whole clip: tIoU of [0.25, 0.75] is 0.5. */
    assert_float_equal(num(b, "mean_tiou"), 0.5, 1e-9);
    assert_null(get(r, "lines"));
    cJSON_Delete(r);
}

/* More jobs in flight than the daemon takes (max_queued_jobs = 2): `busy` replies are retried, so
 * every line is still scored. */
static void test_busy_retry(void **state)
{
    (void)state;
    char path[400], text[4096] = "";
    snprintf(path, sizeof path, "%s/many.jsonl", media);
    for (int i = 0; i < 8; i++) {
        size_t n = strlen(text);
        snprintf(text + n, sizeof text - n,
                 "{\"video\":\"c.mp4\",\"query\":\"When is box %d visible?\"%s}\n", i,
                 i % 2 ? ",\"start\":0.5,\"end\":1.5" : "");
    }
    assert_int_equal(vg_testd_write_file(path, text), 0);
    char args[1024];
    snprintf(args, sizeof args, "'%s' --json --concurrency 6 --max-new-tokens 48 --greedy", path);
    int status;
    cJSON *r = run_eval(args, &status);
    assert_non_null(r);
    assert_int_equal(status, 0);
    assert_int_equal(num(r, "n_positive"), 4);
    assert_int_equal(num(r, "n_negative"), 4);
    assert_int_equal(num(r, "n_errors"), 0);
    assert_true(num(r, "busy_retries") > 0);
    cJSON_Delete(r);
}

/* The job's final state as the daemon reports it, waiting up to 10 s for it to end. */
static char *final_state(const char *job, char *out, size_t cap)
{
    char req[256];
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"job\",\"job\":\"%s\"}", job);
    snprintf(out, cap, "?");
    for (int i = 0; i < 500; i++) {
        cJSON *r = call(req);
        const char *js = cJSON_GetStringValue(get(get(r, "job"), "state"));
        if (js)
            snprintf(out, cap, "%s", js);
        cJSON_Delete(r);
        if (!strcmp(out, "completed") || !strcmp(out, "failed") || !strcmp(out, "cancelled"))
            break;
        vg_testd_sleep_ms(20);
    }
    return out;
}

/* A job without a result after --timeout-ms, and a run interrupted by SIGINT: the line is an error,
 * the job is cancelled in the daemon, the results so far are printed. Greedy decoding on random
 * weights never stops by itself, so 4096 tokens (seconds here) keep a job running long enough. */
static void test_timeout_and_interrupt(void **state)
{
    (void)state;
    char path[400], args[1024], stname[32];
    snprintf(path, sizeof path, "%s/slow.jsonl", media);
    assert_int_equal(vg_testd_write_file(path,
                                         "{\"video\":\"c.mp4\",\"query\":\"Q\",\"start\":0,"
                                         "\"end\":1}\n{\"video\":\"c.mp4\",\"query\":\"Q2\"}\n"),
                     0);
    snprintf(args, sizeof args,
             "'%s' --json --verbose --max 1 --timeout-ms 200 --greedy --max-new-tokens 4096", path);
    int status;
    cJSON *r = run_eval(args, &status);
    assert_non_null(r);
    assert_int_equal(status, 1);
    assert_int_equal(num(r, "n_errors"), 1);
    assert_int_equal(num(r, "n_positive"), 0);
    const cJSON *l = cJSON_GetArrayItem(get(r, "lines"), 0);
    assert_non_null(strstr(cJSON_GetStringValue(get(l, "error")), "no result after 200 ms"));
    assert_string_equal(final_state(cJSON_GetStringValue(get(l, "job")), stname, sizeof stname),
                        "cancelled");
    cJSON_Delete(r);

    /* SIGINT once a job runs: the jobs in flight are cancelled, the output still comes. */
    char outpath[400];
    snprintf(outpath, sizeof outpath, "%s/sigint.out", dir);
    double since = (double)time(NULL) - 1;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int dn = open("/dev/null", O_WRONLY);
        if (fd < 0 || dn < 0)
            _exit(127);
        dup2(fd, 1);
        dup2(dn, 2);
        execl(BIN "/tools/vigil", "vigil", "--runtime-dir", rt, "eval", path, "--json", "--verbose",
              "--greedy", "--max-new-tokens", "4096", (char *)NULL);
        _exit(127);
    }
    /* Both asks are in (the daemon lists them) and one job runs. */
    int running = 0, ours = 0;
    for (int i = 0; i < 1000 && !(running && ours == 2); i++) {
        cJSON *jr = call("{\"v\":1,\"op\":\"jobs\",\"limit\":10}");
        const cJSON *j;
        running = ours = 0;
        cJSON_ArrayForEach(j, get(jr, "jobs"))
        {
            const char *js = cJSON_GetStringValue(get(j, "state"));
            const char *q = cJSON_GetStringValue(get(j, "question"));
            if (num(j, "created") < since || !js || !q || strncmp(q, "Q", 1) != 0)
                continue;
            if (!strcmp(js, "running"))
                running = 1;
            if (!strcmp(js, "running") || !strcmp(js, "queued"))
                ours++;
        }
        cJSON_Delete(jr);
        if (!(running && ours == 2))
            vg_testd_sleep_ms(10);
    }
    assert_true(running && ours == 2);
    kill(pid, SIGINT);
    int wst = 0;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    assert_true(WIFEXITED(wst));
    assert_int_equal(WEXITSTATUS(wst), 1);
    char *text;
    size_t tl;
    char err[256];
    assert_int_equal(vg_read_file(outpath, 1 << 20, &text, &tl, err, sizeof err), 0);
    r = cJSON_Parse(text);
    free(text);
    assert_non_null(r);
    assert_true(cJSON_IsTrue(get(r, "interrupted")));
    /* The second job waits for the first (one model thread), so both were in flight. */
    assert_int_equal(num(r, "n_errors"), 2);
    const cJSON *it;
    cJSON_ArrayForEach(it, get(r, "lines"))
    {
        const char *e = cJSON_GetStringValue(get(it, "error"));
        const char *job = cJSON_GetStringValue(get(it, "job"));
        assert_non_null(e);
        assert_non_null(job);
        assert_non_null(strstr(e, "interrupted (job cancelled)"));
        assert_string_equal(final_state(job, stname, sizeof stname), "cancelled");
    }
    cJSON_Delete(r);
}

/* vigild dies in the middle of a run: the run stops after a few requests without a reply, prints
 * what it has and exits 1. The daemon is started again for the tests that follow. */
static void test_daemon_lost(void **state)
{
    (void)state;
    char path[400], outpath[400];
    snprintf(path, sizeof path, "%s/slow.jsonl", media);
    snprintf(outpath, sizeof outpath, "%s/lost.out", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(BIN "/tools/vigil", "vigil", "--runtime-dir", rt, "--timeout", "300", "eval", path,
              "--json", "--greedy", "--max-new-tokens", "4096", (char *)NULL);
        _exit(127);
    }
    /* Once a job runs, kill the daemon without letting it answer anything more. */
    int running = 0;
    for (int i = 0; i < 1000 && !running; i++) {
        cJSON *jr = call("{\"v\":1,\"op\":\"jobs\",\"limit\":10}");
        const cJSON *j;
        cJSON_ArrayForEach(j, get(jr, "jobs"))
        {
            const char *js = cJSON_GetStringValue(get(j, "state"));
            running |= js && !strcmp(js, "running");
        }
        cJSON_Delete(jr);
        if (!running)
            vg_testd_sleep_ms(10);
    }
    assert_true(running);
    kill(daemon_pid, SIGKILL);
    waitpid(daemon_pid, NULL, 0);
    daemon_pid = -1;
    double t0 = vg_now_ms();
    int wst = 0;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    assert_true(vg_now_ms() - t0 < 15000);
    assert_true(WIFEXITED(wst));
    assert_int_equal(WEXITSTATUS(wst), 1);
    char *text, err[256];
    size_t tl;
    assert_int_equal(vg_read_file(outpath, 1 << 20, &text, &tl, err, sizeof err), 0);
    assert_non_null(strstr(text, "lost contact with vigild"));
    assert_null(strstr(text, "Sanitizer"));
    const char *brace = strchr(text, '{');
    cJSON *r = brace ? cJSON_Parse(brace) : NULL;
    free(text);
    assert_non_null(r);
    assert_int_equal(num(r, "n_errors"), 2);
    cJSON_Delete(r);
    assert_int_equal(start_daemon(), 0);
}

static void test_usage_and_failures(void **state)
{
    (void)state;
    char args[1024];
    int status;
    cJSON *r;
    static const char *const bad[] = {
        "",
        "--blind 0.5,0.2 x.jsonl",
        "--blind 0.5 x.jsonl",
        "--blind 0,1 --blind-fit t.jsonl x.jsonl",
        "--concurrency 0 x.jsonl",
        "--max -3 x.jsonl",
        "--bogus x.jsonl",
        "a.jsonl b.jsonl",
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        r = run_eval(bad[i], &status);
        cJSON_Delete(r);
        if (status != 2)
            fail_msg("vigil eval %s: status %d, not 2", bad[i], status);
    }
    /* A file that does not exist, and a daemon that is not there (no reply within --timeout). */
    snprintf(args, sizeof args, "'%s/none.jsonl'", dir);
    r = run_eval(args, &status);
    assert_null(r);
    assert_int_equal(status, 1);
    double t0 = vg_now_ms();
    char out[4096];
    status = vg_testd_sh(
        out, sizeof out,
        "'%s/tools/vigil' --runtime-dir '%s/nowhere' --timeout 300 eval --json '%s' 2>&1 "
        ">/dev/null",
        BIN, dir, jsonl);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "is vigild running?"));
    assert_null(strstr(out, "Sanitizer"));
    assert_true(vg_now_ms() - t0 < 10000);
}

/* vigil eval --live with the trained demo model: a 36 s camera-like file with a red box in two
 * known intervals, replayed at 4x through vigild's live path. The published events are scored;
 * none may be reversed, outside the stream or spurious, and each interval must be found once. */
static void test_eval_live(void **state)
{
    (void)state;
    if (access(VG_SOURCE_DIR "/models/demo/config.json", R_OK) != 0) {
        fprintf(stderr, "skipped: models/demo is absent\n");
        skip();
    }
    char clip[400], lj[400], out[16384];
    snprintf(clip, sizeof clip, "%s/live.mp4", media);
    snprintf(lj, sizeof lj, "%s/live.jsonl", media);
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                                 "\"color=c=0x6a6a5a:size=320x240:rate=10,drawbox=x=100:y=80:w=52:"
                                 "h=48:color=0xE12323:t=fill:enable='between(t,6,15)+between(t,23,"
                                 "31)'\" -t 36 -c:v libx264 -pix_fmt yuv420p '%s'",
                                 clip),
                     0);
    assert_int_equal(vg_testd_write_file(lj, "{\"video\": \"live.mp4\", \"query\": \"When is the "
                                             "red box visible?\", \"intervals\": [[6, 15], [23, "
                                             "31]]}\n"),
                     0);
    assert_int_equal(stop_daemon(), 0);
    snprintf(model, sizeof model, "%s", VG_SOURCE_DIR "/models/demo");
    assert_int_equal(start_daemon(), 0);
    int status =
        vg_testd_sh(out, sizeof out,
                    "'%s/tools/vigil' --runtime-dir '%s' eval --live --json --speed 4 '%s' "
                    "2>'%s/live.err'",
                    BIN, rt, lj, dir);
    printf("%s\n", out);
    cJSON *r = cJSON_Parse(out);
    assert_non_null(r);
    assert_int_equal(status, 0);
    /* One event per interval, none spurious or invalid, each end within 3 s of the truth (the
     * demo model states ends about a second late: the 2 s figures are the benchmark's). */
    assert_int_equal(num(r, "n_events"), 2);
    assert_int_equal(num(r, "n_true"), 2);
    assert_int_equal(num(r, "invalid_events"), 0);
    assert_int_equal(num(r, "spurious_events"), 0);
    const cJSON *evs = get(cJSON_GetArrayItem(get(r, "questions"), 0), "events");
    static const double truth[2][2] = {{6, 15}, {23, 31}};
    assert_int_equal(cJSON_GetArraySize(evs), 2);
    for (int i = 0; i < 2; i++) {
        const cJSON *e = cJSON_GetArrayItem(evs, i);
        assert_true(fabs(num(e, "start") - truth[i][0]) <= 3.0);
        assert_true(fabs(num(e, "end") - truth[i][1]) <= 3.0);
    }
    assert_true(num(r, "f1_2s") >= 0 && num(r, "f1_2s") <= 1);
    const cJSON *ck = get(r, "checks");
    assert_true(cJSON_IsObject(get(ck, "tracker")));
    cJSON_Delete(r);
    /* Bad usage: no file, an unknown option. */
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "'%s/tools/vigil' --runtime-dir '%s' eval --live 2>/dev/null", BIN,
                                 rt),
                     2);
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "'%s/tools/vigil' --runtime-dir '%s' eval --live --bogus 1 '%s' "
                                 "2>/dev/null",
                                 BIN, rt, lj),
                     2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_json),   cmocka_unit_test(test_eval_text_and_fit),
        cmocka_unit_test(test_busy_retry),  cmocka_unit_test(test_timeout_and_interrupt),
        cmocka_unit_test(test_daemon_lost), cmocka_unit_test(test_usage_and_failures),
        cmocka_unit_test(test_eval_live),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
