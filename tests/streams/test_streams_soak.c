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

static void kill_source(int slot)
{
    if (slot < 0 || children[slot] <= 0)
        return;
    kill(children[slot], SIGKILL);
    waitpid(children[slot], NULL, 0);
    children[slot] = 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int sh(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int sh(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = 0, r;
    char buf[4096];
    while ((r = fread(buf, 1, sizeof buf, p)) > 0)
        if (out && n + 1 < cap) {
            size_t k = VG_MIN(r, cap - 1 - n);
            memcpy(out + n, buf, k);
            n += k;
        }
    if (out && cap)
        out[n] = 0;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static cJSON *call(const char *req)
{
    vg_ipc_client *c;
    char err[256];
    if (vg_ipc_client_open(cmd_url, 10000, 0, 0, &c, err, sizeof err) < 0)
        return NULL;
    char *rep = NULL;
    size_t rl;
    int rc = vg_ipc_client_call(c, req, strlen(req), &rep, &rl);
    vg_ipc_client_close(c);
    if (rc < 0)
        return NULL;
    cJSON *o = cJSON_ParseWithLength(rep, rl);
    free(rep);
    return o;
}

static int is_ok(const cJSON *r)
{
    return r && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"));
}

static const char *jstr(const cJSON *o, const char *k)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
    return s ? s : "";
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : -1;
}

static void kill_all(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        kill_source(i);
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGKILL);
        waitpid(daemon_pid, NULL, 0);
        daemon_pid = -1;
    }
}

static int start_daemon(const char *model_dir)
{
    char log[400];
    snprintf(log, sizeof log, "%s/vigild.log", dir);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        char roots[400];
        snprintf(roots, sizeof roots, "media_roots=%s", media);
        execl(BIN "/daemon/vigild", "vigild", "--model", model_dir, "--runtime-dir", rt,
              "--state-dir", st, "--config", conf, "--set", roots, "--set",
              "allowed_protocols=udp,http", "--set", "stream_stall_timeout_s=1.5", "--set",
              "stream_max_new_tokens=8", "--set", "max_streams=4", "--log-level", "info",
              (char *)NULL);
        _exit(127);
    }
    daemon_pid = pid;
    double until = vg_now_ms() + 30000;
    while (vg_now_ms() < until) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            daemon_pid = -1;
            return -1;
        }
        cJSON *r = call("{\"v\":1,\"op\":\"info\"}");
        int ok = is_ok(r);
        cJSON_Delete(r);
        if (ok)
            return 0;
        sleep_ms(50);
    }
    return -1;
}

static int stop_daemon(void)
{
    if (daemon_pid <= 0)
        return -1;
    kill(daemon_pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 2000; i++) {
        if (waitpid(daemon_pid, &status, WNOHANG) == daemon_pid) {
            daemon_pid = -1;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        sleep_ms(10);
    }
    kill_all();
    return -1;
}

/* The random tokenizer has fewer ids than the preset's vocab_size (see test_e2e.c). */
static int make_model(void)
{
    char tmpm[400], cfg[400], err[256], path[500];
    snprintf(tmpm, sizeof tmpm, "%s/model0", dir);
    if (sh(NULL, 0, "'%s/tools/vigil-model' random --preset tiny --out '%s' >/dev/null 2>&1", BIN,
           tmpm))
        return -1;
    char *data;
    size_t len;
    snprintf(path, sizeof path, "%s/tokenizer.json", tmpm);
    if (vg_read_file(path, 1 << 26, &data, &len, err, sizeof err) < 0)
        return -1;
    cJSON *tok = cJSON_ParseWithLength(data, len);
    free(data);
    int max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(
                               cJSON_GetObjectItemCaseSensitive(tok, "model"), "vocab")) max_id =
        VG_MAX(max_id, (int)it->valuedouble);
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(tok, "added_tokens")) max_id =
        VG_MAX(max_id, (int)jnum(it, "id"));
    cJSON_Delete(tok);
    snprintf(path, sizeof path, "%s/config.json", tmpm);
    if (max_id < 0 || vg_read_file(path, 1 << 20, &data, &len, err, sizeof err) < 0)
        return -1;
    cJSON *c = cJSON_ParseWithLength(data, len);
    free(data);
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(c, "text_config");
    cJSON_ReplaceItemInObjectCaseSensitive(tc ? tc : c, "vocab_size",
                                           cJSON_CreateNumber(max_id + 1));
    char *s = cJSON_Print(c);
    cJSON_Delete(c);
    snprintf(cfg, sizeof cfg, "%s/config-small.json", dir);
    FILE *f = fopen(cfg, "w");
    if (!f || !s) {
        if (f)
            fclose(f);
        free(s);
        return -1;
    }
    fputs(s, f);
    fclose(f);
    free(s);
    return sh(NULL, 0, "'%s/tools/vigil-model' random --config '%s' --out '%s' >/dev/null 2>&1",
              BIN, cfg, model);
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
    assert_int_equal(make_model(), 0);
    char file[400];
    snprintf(file, sizeof file, "%s/long.ts", media);
    assert_int_equal(sh(NULL, 0,
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
    assert_true(is_ok(r));
    cJSON_Delete(r);
    long base = -1, lo = 1L << 60, hi = 0, kept[512];
    double t_stream = 0, next_print = 0;
    double until = vg_now_ms() + 150000;
    int ended = 0, samples = 0;
    while (vg_now_ms() < until && !ended) {
        sleep_ms(1000);
        r = call("{\"v\":1,\"op\":\"streams\"}");
        const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "streams"), 0);
        t_stream = jnum(cJSON_GetObjectItemCaseSensitive(s, "window"), "end");
        ended = !strcmp(jstr(s, "state"), "ended");
        double pairs = jnum(s, "pairs"), answers = jnum(s, "answers"),
               dropped = jnum(s, "dropped_pairs");
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
        sh(NULL, 0, "rm -rf '%s'", dir);
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
