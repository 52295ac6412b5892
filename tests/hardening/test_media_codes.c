/*
 * test_media_codes.c: issue #13 items 8 and 11 through the real vigild (docs/security.md).
 *  - item 8: a raw H.264 file (no duration) and an MPEG-TS over HTTP without byte ranges or a
 *    length (a loopback server started here) are answered as clips; a 1-frame clip, a start past
 *    the end and an HTTP redirect loop fail with code `media` and a sentence for users, never
 *    `failed` or the pipeline's internal advice.
 *  - item 11: an 8192x8192 clip of about 200 KB fails with code `media` under the default
 *    max_pixels_limit (4096 x 4096), and vigild's peak RSS (VmHWM) grows by less than 64 MiB for
 *    it (the attack saw +1.3 GiB).
 */
#define _GNU_SOURCE
#include "common.h"
#include "../media/media_testutil.h"
#include "../support/vg_testd.h"

#include <cjson/cJSON.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* Descriptors open in pid. */
static int count_fds(pid_t pid)
{
    char cmd[128], out[64];
    snprintf(cmd, sizeof cmd, "ls /proc/%ld/fd | wc -l", (long)pid);
    if (vg_testd_sh(out, sizeof out, "%s", cmd) != 0)
        return -1;
    return atoi(out);
}

static long vm_hwm_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* Asks about video (extra: more request members, "" for none) and waits for the job to end.
 * Returns the final `job` object (caller frees) or NULL. */
static cJSON *ask_and_wait(const char *cmd_url, const char *video, const char *extra)
{
    char req[2048];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"ask\",\"video\":\"%s\",\"question\":\"what happens?\","
             "\"generation\":{\"max_new_tokens\":1}%s}",
             video, extra);
    cJSON *r = vg_testd_call(cmd_url, req, strlen(req), 10000);
    if (!vg_testd_is_ok(r)) {
        printf("  ask %s: %s\n", video, r ? cJSON_PrintUnformatted(r) : "no reply");
        cJSON_Delete(r);
        return NULL;
    }
    char id[128];
    snprintf(id, sizeof id, "%s", vg_testd_jstr(r, "job"));
    cJSON_Delete(r);
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"job\",\"job\":\"%s\"}", id);
    for (int k = 0; k < 1200; k++) {
        r = vg_testd_call(cmd_url, req, strlen(req), 10000);
        cJSON *j = cJSON_GetObjectItemCaseSensitive(r, "job");
        const char *st = vg_testd_jstr(j, "state");
        if (!strcmp(st, "completed") || !strcmp(st, "failed") || !strcmp(st, "cancelled")) {
            cJSON *out = cJSON_DetachItemFromObjectCaseSensitive(r, "job");
            cJSON_Delete(r);
            return out;
        }
        cJSON_Delete(r);
        vg_testd_sleep_ms(50);
    }
    return NULL;
}

/* The job's error code ("" when it completed); prints the outcome. */
static const char *outcome(const cJSON *job, const char *what, char *msg, size_t msglen)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(job, "error");
    const char *code = cJSON_IsObject(e) ? vg_testd_jstr(e, "code") : "";
    snprintf(msg, msglen, "%s", cJSON_IsObject(e) ? vg_testd_jstr(e, "message") : "");
    printf("  %-20s %-10s %-6s %s\n", what, vg_testd_jstr(job, "state"), code, msg);
    return code;
}

static void test_media_codes(void **state)
{
    (void)state;
    if (vg_testd_need_tools() != 0 || mt_make_dir("codes") != 0)
        skip();
    char dir[256], model[320], media[320], rt[320], st[320], cmd_url[400];
    assert_int_equal(vg_testd_tmpdir("/tmp/vg-codes-XXXXXX", dir, model, media, rt, st, cmd_url),
                     0);
    assert_int_equal(vg_testd_make_model(dir, model), 0);
    /* Media: in the root, and in mt_dir for the HTTP server. */
    char a[1024];
    snprintf(a, sizeof a,
             "-f lavfi -i testsrc2=size=96x64:rate=10 -t 3 -c:v libx264 -pix_fmt yuv420p "
             "'%s/ref.mp4'",
             media);
    assert_int_equal(mt_ffmpeg(a), 0);
    snprintf(a, sizeof a, "-i '%s/ref.mp4' -c copy -bsf:v h264_mp4toannexb -f h264 '%s/raw.h264'",
             media, media);
    assert_int_equal(mt_ffmpeg(a), 0);
    snprintf(a, sizeof a, "-i '%s/ref.mp4' -c copy -f mpegts ref.ts", media);
    assert_int_equal(mt_ffmpeg(a), 0);
    snprintf(a, sizeof a,
             "-f lavfi -i testsrc2=size=96x64:rate=10 -frames:v 1 -c:v libx264 '%s/one.mp4'",
             media);
    assert_int_equal(mt_ffmpeg(a), 0);
    snprintf(a, sizeof a,
             "-f lavfi -i color=c=gray:s=8192x8192:r=2 -frames:v 4 -c:v libx264 -preset ultrafast "
             "'%s/big.mp4'",
             media);
    assert_int_equal(mt_ffmpeg(a), 0);
    mt_http srv;
    assert_int_equal(mt_http_start(&srv), 0);

    char log[400], conf[400];
    snprintf(log, sizeof log, "%s/vigild.log", dir);
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    assert_int_equal(vg_testd_write_file(conf, "# defaults: max_pixels_limit = 16777216\n"), 0);
    const char *sets[] = {"allowed_protocols=http", NULL};
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
    pid_t pid = -1;
    if (vg_testd_start(&spec, &pid) != 0) {
        vg_testd_sh(NULL, 0, "cat '%s' >&2", log);
        fail_msg("vigild did not start");
    }
    char video[600], msg[1024];
    /* A warm-up job, so that the RSS measured next is the daemon's working size. */
    snprintf(video, sizeof video, "%s/ref.mp4", media);
    cJSON *j = ask_and_wait(cmd_url, video, ",\"sampling\":{\"nframes\":4}");
    assert_non_null(j);
    assert_string_equal(outcome(j, "ref.mp4 (warm-up)", msg, sizeof msg), "");
    cJSON_Delete(j);

    int fds_before = count_fds(pid);

    /* Item 11. */
    long before = vm_hwm_kib(pid);
    snprintf(video, sizeof video, "%s/big.mp4", media);
    j = ask_and_wait(cmd_url, video, "");
    long after = vm_hwm_kib(pid);
    assert_non_null(j);
    assert_string_equal(outcome(j, "big.mp4 (8192x8192)", msg, sizeof msg), "media");
    assert_non_null(strstr(msg, "8192x8192"));
    cJSON_Delete(j);
    printf("  vigild peak RSS: %.1f MiB before, %.1f MiB after the 8192x8192 clip (+%.1f MiB)\n",
           before / 1024.0, after / 1024.0, (after - before) / 1024.0);
    assert_true(before > 0 && after - before < 64 * 1024);

    /* Item 8: answered as clips. */
    const char *good[][2] = {{"raw.h264", ",\"sampling\":{\"nframes\":4}"},
                             {"http:nolen/ref.ts", ",\"sampling\":{\"nframes\":4}"}};
    for (size_t i = 0; i < VG_ARRAY_LEN(good); i++) {
        if (!strncmp(good[i][0], "http:", 5))
            snprintf(video, sizeof video, "http://127.0.0.1:%d/%s", srv.port, good[i][0] + 5);
        else
            snprintf(video, sizeof video, "%s/%s", media, good[i][0]);
        j = ask_and_wait(cmd_url, video, good[i][1]);
        assert_non_null(j);
        assert_string_equal(outcome(j, good[i][0], msg, sizeof msg), "");
        cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "timings");
        assert_int_equal((int)vg_testd_jnum(tm, "frames"), 4);
        cJSON_Delete(j);
    }
    /* Item 8: media errors carry `media` and a sentence for users. */
    const char *bad[][2] = {{"one.mp4", ""},
                            {"ref.mp4", ",\"sampling\":{\"nframes\":4,\"start\":100}"},
                            {"http:loop", ""}};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        if (!strncmp(bad[i][0], "http:", 5))
            snprintf(video, sizeof video, "http://127.0.0.1:%d/%s", srv.port, bad[i][0] + 5);
        else
            snprintf(video, sizeof video, "%s/%s", media, bad[i][0]);
        j = ask_and_wait(cmd_url, video, bad[i][1]);
        assert_non_null(j);
        assert_string_equal(outcome(j, bad[i][0], msg, sizeof msg), "media");
        assert_true(strlen(msg) > 20);
        assert_null(strstr(msg, "vg_media_next_frame"));
        cJSON_Delete(j);
    }
    /* A finished job holds no descriptor of its video, whichever way it ended: 4 more jobs that
     * fail at the open, 12 in all. */
    snprintf(video, sizeof video, "%s/big.mp4", media);
    for (int i = 0; i < 4; i++) {
        j = ask_and_wait(cmd_url, video, "");
        assert_non_null(j);
        cJSON_Delete(j);
    }
    int fds_after = count_fds(pid);
    printf("  vigild's descriptors: %d before, %d after the jobs\n", fds_before, fds_after);
    assert_true(fds_before > 0 && fds_after <= fds_before + 2);
    int rc = vg_testd_stop(&pid, 3000, NULL);
    mt_http_stop(&srv);
    assert_int_equal(rc, 0);
    assert_int_equal(vg_testd_check_log(dir), 0);
    vg_testd_sh(NULL, 0, "rm -rf '%s'", dir);
    mt_remove_dir();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_media_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
