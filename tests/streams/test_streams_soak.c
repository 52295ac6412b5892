/*
 * test_streams_soak.c (label slow): thirty minutes of stream through vigild (a generated file
 * replayed at 30x its native rate, sampled at 2 fps with a 16 s window and answers every second, on
 * the random tiny model) while the daemon's resident memory is sampled from /proc. After a warm-up
 * of three stream minutes, RSS must stay within 5% of its first post-warm-up sample: the frame
 * ring, the vision-output ring, the KV window, the pair queue and the record ring are all bounded.
 * Prints the samples. Kills the daemon it started, also after a failure.
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
#define MAX_CHILDREN 1
static pid_t children[MAX_CHILDREN];

static cJSON *call(const char *req)
{
    return vg_testd_call(cmd_url, req, strlen(req), 10000);
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

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kib = atol(line + 6);
    fclose(f);
    return kib;
}

static void test_soak_rss_flat(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/vg-stream-soak-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(media, sizeof media, "%s/media", dir);
    snprintf(rt, sizeof rt, "%s/run", dir);
    snprintf(st, sizeof st, "%s/state", dir);
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    snprintf(cmd_url, sizeof cmd_url, "ipc://%s/vigil.cmd", rt);
    snprintf(ev_url, sizeof ev_url, "ipc://%s/vigil.events", rt);
    mkdir(media, 0755);
    FILE *cf = fopen(conf, "w");
    assert_non_null(cf);
    fclose(cf);
    assert_int_equal(vg_testd_make_model(dir, model), 0);
    char file[400];
    snprintf(file, sizeof file, "%s/long.ts", media);
    assert_int_equal(
        vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                    "testsrc2=size=160x120:rate=4 -t 1800 -c:v mpeg2video -g 8 -q:v 10 '%s'",
                    file),
        0);
    assert_int_equal(start_daemon(model), 0);
    char req[1024];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"watch\",\"name\":\"soak\",\"url\":\"%s\",\"questions\":[\"What "
             "happens?\",\"Is there a red box?\"],\"fps\":2,\"window_s\":16,\"update_s\":1,"
             "\"speed\":30}",
             file);
    cJSON *r = call(req);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    long base = -1, lo = 1L << 60, hi = 0, kept[512];
    double t_stream = 0, next_print = 0;
    double until = vg_now_ms() + 150000;
    int ended = 0, samples = 0;
    while (vg_now_ms() < until && !ended) {
        vg_testd_sleep_ms(1000);
        r = call("{\"v\":1,\"op\":\"streams\"}");
        const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "streams"), 0);
        t_stream = vg_testd_jnum(cJSON_GetObjectItemCaseSensitive(s, "window"), "end");
        ended = !strcmp(vg_testd_jstr(s, "state"), "ended");
        double pairs = vg_testd_jnum(s, "pairs"), answers = vg_testd_jnum(s, "answers"),
               dropped = vg_testd_jnum(s, "dropped_pairs");
        cJSON_Delete(r);
        long kib = rss_kib(daemon_pid);
        assert_true(kib > 0);
        if (t_stream >= next_print) {
            printf("stream %6.0f s  rss %7ld KiB  pairs %6.0f  dropped %5.0f  answers %5.0f\n",
                   t_stream, kib, pairs, dropped, answers);
            fflush(stdout);
            next_print = t_stream + 120;
        }
        if (t_stream < 180)
            continue; /* warm-up: allocator pools, the first full window */
        if (base < 0)
            base = kib;
        lo = VG_MIN(lo, kib);
        hi = VG_MAX(hi, kib);
        if (samples < 512)
            kept[samples++] = kib;
    }
    printf("after warm-up: %d samples, RSS %ld-%ld KiB (first %ld), stream reached %.0f s\n",
           samples, lo, hi, base, t_stream);
    assert_true(ended);
    assert_true(t_stream > 1700);
    assert_true(samples >= 10);
    /* Flat: the median RSS of each quarter of the run is within 5% of the first quarter's (no
     * growth); single samples may swing a little more while pairs and answers are in flight. */
    long med[4];
    for (int qt = 0; qt < 4; qt++) {
        int a = samples * qt / 4, b = samples * (qt + 1) / 4;
        long tmp[512];
        int n = b - a;
        memcpy(tmp, kept + a, (size_t)n * sizeof *tmp);
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && tmp[j - 1] > tmp[j]; j--) {
                long t = tmp[j];
                tmp[j] = tmp[j - 1];
                tmp[j - 1] = t;
            }
        med[qt] = tmp[n / 2];
    }
    printf("quarter medians: %ld %ld %ld %ld KiB\n", med[0], med[1], med[2], med[3]);
    for (int qt = 1; qt < 4; qt++)
        assert_true(labs(med[qt] - med[0]) <= med[0] / 20);
    assert_true(hi <= base * 1.10 && lo >= base * 0.90);
    assert_int_equal(stop_daemon(), 0);
}

static int teardown(void **state)
{
    (void)state;
    kill_all();
    if (dir[0] && !getenv("VG_KEEP_TMP"))
        vg_testd_sh(NULL, 0, "rm -rf '%s'", dir);
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (access(BIN "/daemon/vigild", X_OK) || access(BIN "/tools/vigil-model", X_OK) ||
        system("ffmpeg -version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "vigild, vigil-model or ffmpeg is missing\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_soak_rss_flat, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
