/*
 * test_http_e2e.c: vigild's HTTP door (daemon/http.c) against the real daemon with the bundled demo
 * model, on loopback, driven by real clients: curl, the `openai` npm package from Node (installed
 * into $VG_NPM_CACHE/openai4, default ~/.cache/vigil/npm/openai4, when it is not there yet),
 * promtool (Debian prometheus) and raw sockets.
 *
 * Covers: a chat completion about a clip (file: URL), its SSE form through curl, the openai client
 * streaming an answer in each of the three video forms (data:video/mp4 video_url, llama.cpp's
 * input_video, a list of image_url JPEG frames), /v1/models, /health, /metrics accepted by
 * `promtool check metrics`, the REST mirror (ask, job feed, job, jobs, cancel), a live stream
 * watched over REST whose SSE feed shows a `started` event, and bad input (malformed JSON, an
 * oversized body, base64 that is not a video, a path outside the media roots, slow-loris clients,
 * a client that vanishes mid-stream, 1000 connections at once): 4xx JSON errors or a closed
 * connection, and vigild answering afterwards. The daemon log must be free of sanitizer reports.
 */
#define _GNU_SOURCE
#include "common.h"
#include "../support/vg_testd.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define QUESTION "When is the red box visible?"

static char dir[256], conf[320], model[320], media[320], rt[320], st[320], cmd_url[400];
static char base[64], clip[400], out_path[400], npm_dir[1024];
static int port;
static pid_t daemon_pid = -1;

/* ---- helpers ------------------------------------------------------------------------------ */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (void *)&a, &l))
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

/* Runs curl with args (shell words) against the server; the body goes to out_path, the status is
 * returned (-1 when curl failed). *json gets the parsed body when it is JSON (may be NULL). */
static int curl(cJSON **json, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int curl(cJSON **json, const char *fmt, ...)
{
    char args[2048], status[32] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int rc = vg_testd_sh(status, sizeof status, "curl -s -m 120 -o '%s' -w '%%{http_code}' %s",
                         out_path, args);
    if (json) {
        char *data = NULL;
        size_t len = 0;
        char err[256];
        *json = NULL;
        if (vg_read_file(out_path, 64 << 20, &data, &len, err, sizeof err) == 0)
            *json = cJSON_ParseWithLength(data, len);
        free(data);
    }
    return rc == 0 ? atoi(status) : -1;
}

static const char *error_code(const cJSON *o)
{
    return vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(o, "error"), "code");
}

static char *read_out(void)
{
    char *data = NULL;
    size_t len = 0;
    char err[256];
    if (vg_read_file(out_path, 64 << 20, &data, &len, err, sizeof err) != 0)
        return strdup("");
    return data;
}

static void assert_alive(void)
{
    cJSON *o;
    assert_int_equal(curl(&o, "%s/health", base), 200);
    assert_string_equal(vg_testd_jstr(o, "status"), "ok");
    cJSON_Delete(o);
}

/* The "from S to E seconds" interval of the demo model's answer overlaps the red box's [3, 7]. */
static void assert_red_answer(const char *text)
{
    const char *p = strstr(text, "red box is visible from ");
    if (!p)
        fail_msg("unexpected answer: %s", text);
    double s = -1, e = -1;
    assert_int_equal(sscanf(p, "red box is visible from %lf to %lf", &s, &e), 2);
    if (!(s < 7 && e > 3))
        fail_msg("interval %.1f-%.1f does not overlap the box's 3-7 s: %s", s, e, text);
}

static int connect_raw(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Waits up to ms for fd to be closed by the server (EOF or reset): 1 closed, 0 still open. */
static int closed_within(int fd, int ms)
{
    char b[4096];
    for (int waited = 0; waited < ms; waited += 100) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) > 0) {
            ssize_t n = recv(fd, b, sizeof b, 0);
            if (n <= 0)
                return 1;
        }
    }
    return 0;
}

static int ensure_openai(void)
{
    const char *cache = getenv("VG_NPM_CACHE");
    const char *home = getenv("HOME");
    char root[900];
    if (cache && *cache)
        snprintf(root, sizeof root, "%s", cache);
    else
        snprintf(root, sizeof root, "%s/.cache/vigil/npm", home && *home ? home : "/tmp");
    snprintf(npm_dir, sizeof npm_dir, "%s/openai4", root);
    if (strchr(npm_dir, '\''))
        return -1;
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/node_modules/openai/index.mjs", npm_dir);
    if (access(probe, R_OK) == 0)
        return 0;
    /* Into a private directory, renamed into place: concurrent runs never see half a package. */
    int rc = vg_testd_sh(NULL, 0,
                         "set -e; mkdir -p '%s'; t=$(mktemp -d '%s/tmp.XXXXXX'); "
                         "npm install --prefix \"$t\" --no-audit --no-fund --loglevel=error "
                         "openai@4 >&2; mv -T \"$t\" '%s' 2>/dev/null || rm -rf \"$t\"",
                         root, root, npm_dir);
    if (rc != 0 || access(probe, R_OK) != 0) {
        fprintf(stderr, "'npm install openai@4' failed: this test needs node, npm and the npm "
                        "registry (or a filled cache in $VG_NPM_CACHE/openai4)\n");
        return -1;
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
    if (vg_testd_tmpdir("/tmp/vg-http-e2e-XXXXXX", dir, model, media, rt, st, cmd_url) != 0)
        return -1;
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    snprintf(out_path, sizeof out_path, "%s/out", dir);
    vg_testd_write_file(conf, "# everything is on the command line\n");
    snprintf(clip, sizeof clip, "%s/red.mp4", media);
    /* 10 s, a red box from 3 to 7 s; its frames at 2 fps as JPEGs; a 24 s clip for the stream. */
    if (vg_testd_sh(NULL, 0,
                    "cd '%s' && ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                    "color=c=gray:s=320x240:d=10:r=10 -vf \"drawbox=x=100:y=80:w=60:h=60:"
                    "color=red:t=fill:enable='between(t,3,7)'\" -c:v libx264 -pix_fmt yuv420p "
                    "red.mp4 && mkdir -p ../frames && ffmpeg -nostdin -loglevel error -i red.mp4 "
                    "-vf fps=2 -q:v 4 ../frames/f%%03d.jpg && ffmpeg -nostdin -loglevel error -y "
                    "-f lavfi -i color=c=gray:s=320x240:d=24:r=10 -vf \"drawbox=x=100:y=80:w=60:"
                    "h=60:color=red:t=fill:enable='between(t,8,20)'\" -c:v libx264 -pix_fmt "
                    "yuv420p live.mp4",
                    media) != 0) {
        fprintf(stderr, "ffmpeg failed\n");
        return -1;
    }
    if ((port = free_port()) < 0)
        return -1;
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    char http_url[96], logf[320];
    snprintf(http_url, sizeof http_url, "http_url=%s", base);
    snprintf(logf, sizeof logf, "%s/vigild.log", dir);
    const char *sets[] = {http_url, "http_timeout_s=2", "http_max_connections=256",
                          "allowed_protocols=http", NULL};
    vg_testd_spec spec = {.log = logf,
                          .conf = conf,
                          .model = VG_SOURCE_DIR "/models/demo",
                          .rt = rt,
                          .st = st,
                          .media = media,
                          .cmd_url = cmd_url,
                          .log_level = "info",
                          .sets = sets,
                          .clear_notify_env = 1,
                          .call_timeout_ms = 10000};
    if (vg_testd_start(&spec, &daemon_pid) != 0) {
        fprintf(stderr, "vigild did not start; its log:\n");
        vg_testd_sh(NULL, 0, "cat '%s' >&2", logf);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (daemon_pid > 0 && vg_testd_stop(&daemon_pid, 3000, NULL) != 0) {
        fprintf(stderr, "vigild did not exit cleanly\n");
        rc = -1;
    }
    if (vg_testd_check_log(dir) != 0)
        rc = -1;
    /* The page's screenshot stays for a look (the rest of the directory goes). */
    vg_testd_sh(NULL, 0, "cp '%s/page.png' '%s/vigil-http-page.png' 2>/dev/null; true", dir,
                VG_BINARY_DIR);
    if (rc == 0)
        vg_testd_sh(NULL, 0, "rm -rf '%s'", dir);
    return rc;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_chat_file_url(void **state)
{
    (void)state;
    char body[1024];
    snprintf(body, sizeof body, "%s/chat.json", dir);
    char json[1024];
    snprintf(json, sizeof json,
             "{\"model\":\"demo\",\"temperature\":0,\"seed\":7,\"max_tokens\":64,\"extra\":1,"
             "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"video_url\","
             "\"video_url\":{\"url\":\"file://%s\"}},{\"type\":\"text\",\"text\":\"" QUESTION
             "\"}]}]}",
             clip);
    vg_testd_write_file(body, json);
    cJSON *o;
    assert_int_equal(
        curl(&o, "-H 'content-type: application/json' -d @'%s' %s/v1/chat/completions", body, base),
        200);
    assert_string_equal(vg_testd_jstr(o, "object"), "chat.completion");
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c0, "message");
    assert_red_answer(vg_testd_jstr(msg, "content"));
    assert_string_equal(vg_testd_jstr(c0, "finish_reason"), "stop");
    const cJSON *vx = cJSON_GetObjectItemCaseSensitive(o, "vigil");
    assert_true(strlen(vg_testd_jstr(vx, "job")) > 0);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(vx, "events")) >= 1);
    assert_true(vg_testd_jnum(cJSON_GetObjectItemCaseSensitive(o, "usage"), "completion_tokens") >
                0);
    /* The snapshot of the job's first event: the frame at its start shows the red box (the pixel
     * at the box's centre, after scaling to 32x24, is red). */
    char job[128], px[32] = "";
    snprintf(job, sizeof job, "%s", vg_testd_jstr(vx, "job"));
    cJSON_Delete(o);
    assert_int_equal(curl(NULL, "%s/v1/jobs/%s/events/0/snapshot.jpg", base, job), 200);
    assert_int_equal(vg_testd_sh(px, sizeof px,
                                 "ffmpeg -nostdin -loglevel error -i '%s' -vf "
                                 "scale=32:24,crop=1:1:13:11 -f rawvideo -pix_fmt rgb24 - | od "
                                 "-An -tu1",
                                 out_path),
                     0);
    unsigned r = 0, g = 255, b = 255;
    assert_int_equal(sscanf(px, "%u %u %u", &r, &g, &b), 3);
    if (!(r > 180 && g < 80 && b < 80))
        fail_msg("the snapshot's box pixel is %u,%u,%u, not red", r, g, b);
    assert_int_equal(curl(&o, "%s/v1/jobs/%s/events/7/snapshot.jpg", base, job), 404);
    cJSON_Delete(o);
}

static void test_curl_sse(void **state)
{
    (void)state;
    char body[1024], json[1024];
    snprintf(body, sizeof body, "%s/chat-sse.json", dir);
    snprintf(json, sizeof json,
             "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":"
             "\"user\",\"content\":[{\"type\":\"video_url\",\"video_url\":{\"url\":\"%s\"}},"
             "{\"type\":\"text\",\"text\":\"" QUESTION "\"}]}]}",
             clip);
    vg_testd_write_file(body, json);
    assert_int_equal(curl(NULL, "-N -d @'%s' %s/v1/chat/completions", body, base), 200);
    char *s = read_out();
    assert_non_null(strstr(s, "data: [DONE]\n\n"));
    /* Concatenate every delta.content: it is the answer. */
    char text[4096] = "";
    int chunks = 0, finish = 0, usage = 0;
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: {", 7))
            continue;
        cJSON *o = cJSON_Parse(line + 6);
        assert_non_null(o);
        assert_string_equal(vg_testd_jstr(o, "object"), "chat.completion.chunk");
        const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
        const char *t = vg_testd_jstr(cJSON_GetObjectItemCaseSensitive(c0, "delta"), "content");
        strncat(text, t, sizeof text - strlen(text) - 1);
        if (!strcmp(vg_testd_jstr(c0, "finish_reason"), "stop"))
            finish++;
        if (cJSON_GetObjectItemCaseSensitive(o, "usage"))
            usage++;
        chunks++;
        cJSON_Delete(o);
    }
    free(s);
    assert_true(chunks >= 3);
    assert_int_equal(finish, 1);
    assert_int_equal(usage, 1);
    assert_red_answer(text);
}

/* Writes a request file for the openai client with the given content part(s) (JSON text). */
static void openai_form(const char *name, const char *parts_json)
{
    char path[400], out[4096];
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"model\":\"demo\",\"mm_processor_kwargs\":{\"fps\":2},\"messages\":[{\"role\":"
            "\"system\",\"content\":\"You answer with time ranges.\"},{\"role\":\"user\","
            "\"content\":[%s,{\"type\":\"text\",\"text\":\"" QUESTION "\"}]}]}",
            parts_json);
    fclose(f);
    int rc = vg_testd_sh(out, sizeof out, "node '%s/openai_stream.mjs' '%s' '%s/v1' '%s'",
                         VG_SOURCE_DIR "/tests/http", npm_dir, base, path);
    if (rc != 0)
        fail_msg("the openai client failed for %s (exit %d): %s", name, rc, out);
    cJSON *o = cJSON_Parse(out);
    if (!o)
        fail_msg("%s: not JSON: %s", name, out);
    printf("openai %s: %s", name, out);
    assert_red_answer(vg_testd_jstr(o, "text"));
    assert_true(vg_testd_jnum(o, "chunks") >= 3);
    assert_string_equal(vg_testd_jstr(o, "finish"), "stop");
    assert_true(strlen(vg_testd_jstr(o, "job")) > 0);
    cJSON_Delete(o);
}

static void test_openai_three_forms(void **state)
{
    (void)state;
    assert_int_equal(ensure_openai(), 0);
    /* 1: video_url with an inline data:video/mp4 (vLLM, VSS). */
    char *b64 = NULL;
    size_t cap = 4 << 20;
    assert_non_null(b64 = malloc(cap));
    assert_int_equal(vg_testd_sh(b64, cap, "base64 -w0 '%s'", clip), 0);
    char *part = malloc(cap + 512);
    assert_non_null(part);
    snprintf(part, cap + 512,
             "{\"type\":\"video_url\",\"video_url\":{\"url\":\"data:video/mp4;base64,%s\"}}", b64);
    openai_form("video_url", part);
    /* 2: llama.cpp's input_video with raw base64. */
    snprintf(part, cap + 512, "{\"type\":\"input_video\",\"input_video\":{\"data\":\"%s\"}}", b64);
    openai_form("input_video", part);
    /* 3: a list of image_url JPEG frames in one message (Frigate, LLM Vision). */
    char frames[400];
    snprintf(frames, sizeof frames, "%s/../frames", media);
    assert_int_equal(
        vg_testd_sh(part, cap + 512,
                    "sep=''; for f in '%s'/*.jpg; do printf '%%s{\"type\":\"image_url\","
                    "\"image_url\":{\"url\":\"data:image/jpeg;base64,%%s\",\"detail\":\"low\"}}' "
                    "\"$sep\" \"$(base64 -w0 \"$f\")\"; sep=,; done",
                    frames),
        0);
    openai_form("image_url_frames", part);
    free(part);
    free(b64);
    /* The spool directory holds nothing once the jobs are done. */
    char n[32];
    vg_testd_sh(n, sizeof n, "ls '%s/http-spool' | wc -l", st);
    assert_int_equal(atoi(n), 0);
}

static void test_models_health_metrics(void **state)
{
    (void)state;
    cJSON *o;
    assert_int_equal(curl(&o, "%s/v1/models", base), 200);
    const cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "data"), 0);
    assert_string_equal(vg_testd_jstr(m, "id"), "demo");
    double ctx = vg_testd_jnum(m, "max_model_len");
    assert_true(ctx > 0);
    assert_true(vg_testd_jnum(cJSON_GetObjectItemCaseSensitive(m, "meta"), "n_ctx") == ctx);
    cJSON_Delete(o);
    assert_alive();
    assert_int_equal(curl(NULL, "%s/metrics", base), 200);
    char out[4096] = "";
    int rc = vg_testd_sh(out, sizeof out, "promtool check metrics < '%s' 2>&1", out_path);
    if (rc != 0)
        fail_msg("promtool check metrics refused /metrics (exit %d): %s", rc, out);
    char *s = read_out();
    assert_non_null(strstr(s, "vigil_jobs_finished_total{state=\"completed\"}"));
    assert_non_null(strstr(s, "vigil_tokens_generated_total"));
    assert_null(strstr(s, "vigil_tokens_generated_total 0\n"));
    free(s);
}

static void test_rest_mirror(void **state)
{
    (void)state;
    cJSON *o;
    char body[1200];
    snprintf(body, sizeof body, "-d '{\"video\":\"%s\",\"question\":\"" QUESTION "\"}'", clip);
    assert_int_equal(curl(&o, "%s %s/v1/jobs", body, base), 201);
    char job[128];
    snprintf(job, sizeof job, "%s", vg_testd_jstr(o, "job"));
    assert_true(strlen(job) > 0);
    cJSON_Delete(o);
    /* The job's feed ends by itself after its done record. */
    assert_int_equal(curl(NULL, "-N %s/v1/jobs/%s/events", base, job), 200);
    char *s = read_out();
    assert_non_null(strstr(s, "event: done\n"));
    free(s);
    assert_int_equal(curl(&o, "%s/v1/jobs/%s", base, job), 200);
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, "job");
    assert_string_equal(vg_testd_jstr(j, "state"), "completed");
    assert_red_answer(vg_testd_jstr(j, "text"));
    cJSON_Delete(o);
    assert_int_equal(curl(&o, "'%s/v1/jobs?limit=3'", base), 200);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "jobs")) >= 1);
    cJSON_Delete(o);
    assert_int_equal(curl(&o, "-X POST %s/v1/jobs/%s/cancel", base, job), 200);
    cJSON_Delete(o);
    assert_int_equal(curl(&o, "-X DELETE %s/v1/jobs/no-such-job", base), 404);
    assert_string_equal(error_code(o), "not_found");
    cJSON_Delete(o);
}

static void test_stream_feed(void **state)
{
    (void)state;
    cJSON *o;
    char body[1200];
    snprintf(body, sizeof body,
             "-d '{\"name\":\"cam1\",\"url\":\"%s/live.mp4\",\"question\":\"" QUESTION
             "\",\"speed\":2}'",
             media);
    assert_int_equal(curl(&o, "%s %s/v1/streams", body, base), 201);
    cJSON_Delete(o);
    /* The SSE feed (catch-up from 0, then live) shows a `started` event; curl stops once grep has
     * seen it (a hang guard of 120 s, not a timing check). */
    char out[256] = "";
    int rc = vg_testd_sh(out, sizeof out,
                         "curl -sN -m 120 -H 'Accept: text/event-stream' "
                         "'%s/v1/streams/cam1/events?since=0' | grep -m1 -o "
                         "'\"event\":\"started\"'",
                         base);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "started"));
    assert_int_equal(curl(&o, "'%s/v1/streams/cam1/events?since=0'", base), 200);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "events")) >= 2);
    /* The started event has a snapshot: a JPEG of the sampled frame at its start. */
    double seq = -1;
    const cJSON *ev;
    cJSON_ArrayForEach(ev, cJSON_GetObjectItemCaseSensitive(o, "events"))
    {
        if (!strcmp(vg_testd_jstr(ev, "event"), "started") &&
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev, "snapshot")))
            seq = vg_testd_jnum(ev, "seq");
    }
    cJSON_Delete(o);
    assert_true(seq > 0);
    assert_int_equal(curl(NULL, "%s/v1/streams/cam1/events/%.0f/snapshot.jpg", base, seq), 200);
    char probe[128] = "";
    assert_int_equal(vg_testd_sh(probe, sizeof probe,
                                 "ffprobe -v error -show_entries stream=codec_name,width -of "
                                 "csv=p=0 '%s'",
                                 out_path),
                     0);
    assert_non_null(strstr(probe, "mjpeg,"));
    assert_true(atoi(strchr(probe, ',') + 1) > 0);
    assert_int_equal(curl(&o, "%s/v1/streams/cam1/events/999999/snapshot.jpg", base), 404);
    cJSON_Delete(o);
    assert_int_equal(curl(&o, "%s/v1/streams", base), 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "streams")), 1);
    cJSON_Delete(o);
    assert_int_equal(curl(&o, "-X DELETE %s/v1/streams/cam1", base), 200);
    cJSON_Delete(o);
    /* Once unwatched (the stream leaves the table when its log is closed), its events are read
     * from the log on disk through the same route: `watched` false, the records still there. A
     * name never watched has no log: 404. (A bound of 60 s on the wait, not a timing check.) */
    int unwatched = 0;
    for (int i = 0; i < 600 && !unwatched; i++) {
        assert_int_equal(curl(&o, "'%s/v1/streams/cam1/events?since=0'", base), 200);
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "watched");
        if (cJSON_IsFalse(w)) {
            unwatched = 1;
            assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "events")) >= 2);
        }
        cJSON_Delete(o);
        if (!unwatched)
            usleep(100 * 1000);
    }
    assert_true(unwatched);
    assert_int_equal(curl(&o, "'%s/v1/streams/nosuchcam/events?since=0'", base), 404);
    cJSON_Delete(o);
    assert_int_equal(curl(NULL, "%s/metrics", base), 200);
    char *s = read_out();
    assert_non_null(strstr(s, "\nvigil_journal_failing 0\n"));
    assert_non_null(strstr(s, "vigil_stream_events_total{stream=\"cam1\",kind=\"started\"} "));
    assert_null(strstr(s, "vigil_stream_events_total{stream=\"cam1\",kind=\"started\"} 0\n"));
    free(s);
}

static void test_bad_input(void **state)
{
    (void)state;
    cJSON *o;
    assert_int_equal(curl(&o, "-d '{\"messages\":[' %s/v1/chat/completions", base), 400);
    assert_string_equal(error_code(o), "bad_json");
    cJSON_Delete(o);
    assert_int_equal(curl(&o,
                          "-d '{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}' "
                          "%s/v1/chat/completions",
                          base),
                     400);
    assert_string_equal(error_code(o), "bad_request");
    cJSON_Delete(o);
    /* Outside the media roots. */
    assert_int_equal(curl(&o,
                          "-d '{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                          "\"video_url\",\"video_url\":{\"url\":\"file:///etc/passwd\"}},{\"type\":"
                          "\"text\",\"text\":\"q\"}]}]}' %s/v1/chat/completions",
                          base),
                     403);
    assert_string_equal(error_code(o), "forbidden");
    cJSON_Delete(o);
    /* Base64 that is not a video. */
    assert_int_equal(
        curl(&o,
             "-d '{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
             "\"input_video\",\"input_video\":{\"data\":\"aGVsbG8gdGhlcmUgdGhpcyBp"
             "cyBub3QgYSB2aWRlbyBhdCBhbGw=\"}},{\"type\":\"text\",\"text\":\"q\"}]}]}' "
             "%s/v1/chat/completions",
             base),
        400);
    assert_string_equal(error_code(o), "bad_video");
    cJSON_Delete(o);
    /* A JPEG frame that is not a JPEG. */
    assert_int_equal(
        curl(&o,
             "-d '{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
             "\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,aGVsbG8=\"}"
             "},{\"type\":\"text\",\"text\":\"q\"}]}]}' %s/v1/chat/completions",
             base),
        400);
    cJSON_Delete(o);
    /* Oversized: a REST body over max_message_size (1 MiB). */
    char big[400];
    snprintf(big, sizeof big, "%s/big.json", dir);
    assert_int_equal(vg_testd_sh(NULL, 0, "head -c 2000000 /dev/zero | tr '\\0' ' ' > '%s'", big),
                     0);
    assert_int_equal(curl(&o, "--data-binary @'%s' %s/v1/jobs", big, base), 413);
    assert_string_equal(error_code(o), "too_large");
    cJSON_Delete(o);
    assert_int_equal(curl(&o, "%s/v1/nothing-here", base), 404);
    assert_string_equal(error_code(o), "not_found");
    cJSON_Delete(o);
    assert_alive();
}

/* Malformed chat completions of every shape: each gets a 4xx JSON error naming a code. */
static void test_bad_chat_shapes(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "",
        "[]",
        "null",
        "\"text\"",
        "{\"messages\":{}}",
        "{\"messages\":[]}",
        "{\"messages\":[1,2,3]}",
        "{\"messages\":[{\"role\":7,\"content\":[]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":42}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"video_url\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"video_url\","
        "\"video_url\":{\"url\":5}},{\"type\":\"text\",\"text\":\"q\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"video_url\","
        "\"video_url\":{\"url\":\"data:video/mp4,notbase64\"}},{\"type\":\"text\","
        "\"text\":\"q\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"video_url\","
        "\"video_url\":{\"url\":\"data:text/plain;base64,aGk=\"}},{\"type\":\"text\","
        "\"text\":\"q\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_video\","
        "\"input_video\":{\"data\":\"!!!!\"}},{\"type\":\"text\",\"text\":\"q\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_video\","
        "\"input_video\":{\"data\":\"\"}},{\"type\":\"text\",\"text\":\"q\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
        "\"image_url\":{\"url\":\"http://example.com/a.jpg\"}},{\"type\":\"text\","
        "\"text\":\"q\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"video_url\","
        "\"video_url\":{\"url\":\"data:video/jpeg;base64,,,,\"}},{\"type\":\"text\","
        "\"text\":\"q\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"video_url\","
        "\"video_url\":{\"url\":\"relative/path.mp4\"}},{\"type\":\"text\","
        "\"text\":\"q\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"video_url\","
        "\"video_url\":{\"url\":\"gopher://x/y\"}},{\"type\":\"text\",\"text\":\"q\"}]}]}",
        "{\"max_tokens\":-5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
        "\"video_url\",\"video_url\":{\"url\":\"/nonexistent/x.mp4\"}},{\"type\":\"text\","
        "\"text\":\"q\"}]}]}",
        "{\"vigil\":{\"frames_fps\":0},\"messages\":[{\"role\":\"user\",\"content\":[{"
        "\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/\"}},"
        "{\"type\":\"text\",\"text\":\"q\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"\\u0000\"}]}",
    };
    char path[400];
    snprintf(path, sizeof path, "%s/bad.json", dir);
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        vg_testd_write_file(path, bodies[i]);
        cJSON *o;
        int status = curl(&o, "--data-binary @'%s' %s/v1/chat/completions", path, base);
        const char *code = error_code(o);
        if (status < 400 || status >= 500 || !*code)
            fail_msg("body %zu (%s): status %d, error code '%s'", i, bodies[i], status, code);
        cJSON_Delete(o);
    }
    /* Nesting past cJSON's limit. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 5000; i++)
        fputc('[', f);
    fclose(f);
    cJSON *o;
    assert_int_equal(curl(&o, "--data-binary @'%s' %s/v1/chat/completions", path, base), 400);
    cJSON_Delete(o);
    assert_alive();
}

static void test_slow_loris(void **state)
{
    (void)state;
    /* Headers one byte at a time, every 300 ms: cut after http_timeout_s (2 s). */
    int fd = connect_raw();
    assert_true(fd >= 0);
    const char *req =
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    int cut = 0;
    for (size_t i = 0; i < strlen(req) && !cut; i++) {
        if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1 || closed_within(fd, 300))
            cut = 1;
    }
    close(fd);
    assert_true(cut);
    /* A body that never comes: cut too. */
    fd = connect_raw();
    assert_true(fd >= 0);
    const char *post = "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"vid";
    assert_int_equal(send(fd, post, strlen(post), MSG_NOSIGNAL), (ssize_t)strlen(post));
    assert_int_equal(closed_within(fd, 60000), 1);
    close(fd);
    assert_alive();
}

static void test_vanishing_client(void **state)
{
    (void)state;
    char json[1200], req[2048];
    snprintf(json, sizeof json,
             "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
             "\"video_url\",\"video_url\":{\"url\":\"%s\"}},{\"type\":\"text\",\"text\":\"" QUESTION
             "\"}]}]}",
             clip);
    for (int round = 0; round < 2; round++) {
        int fd = connect_raw();
        assert_true(fd >= 0);
        snprintf(req, sizeof req,
                 "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(json), json);
        assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
        if (round == 1) {
            /* Read the first bytes of the stream, then vanish. */
            char b[64];
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 60000) > 0)
                (void)recv(fd, b, sizeof b, 0);
        }
        close(fd);
    }
    vg_testd_sleep_ms(500);
    assert_alive();
}

static void test_many_connections(void **state)
{
    (void)state;
    enum { N = 1000 };
    static int fds[N];
    int n_open = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = connect_raw();
        if (fds[i] >= 0)
            n_open++;
    }
    assert_int_equal(n_open, N);
    const char *req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < N; i++)
        assert_int_equal(send(fds[i], req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    int ok = 0, busy = 0, other = 0;
    for (int i = 0; i < N; i++) {
        char b[2048];
        size_t got = 0;
        /* Each answers with a whole response (a 60 s hang guard per connection). */
        while (got < sizeof b - 1) {
            struct pollfd p = {fds[i], POLLIN, 0};
            if (poll(&p, 1, 60000) <= 0)
                break;
            ssize_t n = recv(fds[i], b + got, sizeof b - 1 - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
            b[got] = 0;
            if (strstr(b, "\r\n\r\n") && strchr(strstr(b, "\r\n\r\n"), '}'))
                break;
        }
        b[got] = 0;
        if (!strncmp(b, "HTTP/1.1 200", 12) && strstr(b, "\"status\":\"ok\""))
            ok++;
        else if (!strncmp(b, "HTTP/1.1 503", 12) && strstr(b, "\"code\":\"busy\""))
            busy++;
        else
            other++;
    }
    for (int i = 0; i < N; i++)
        close(fds[i]);
    printf("1000 connections: %d answered 200, %d answered 503 busy, %d other\n", ok, busy, other);
    assert_int_equal(other, 0);
    assert_int_equal(ok + busy, N);
    assert_true(ok >= 1 && busy >= 1); /* http_max_connections = 256 */
    vg_testd_sleep_ms(300);
    assert_alive();
}

/* A second vigild on https:// with a bearer token: TLS works with a client that trusts the
 * certificate, requests without the token get 401 JSON (but /health), with it 200. */
static void test_tls_token(void **state)
{
    (void)state;
    char d2[400], rt2[420], st2[420], cmd2[460], cert[420], key[420], tokf[420], logf[420];
    snprintf(d2, sizeof d2, "%s/tls", dir);
    snprintf(rt2, sizeof rt2, "%s/run", d2);
    snprintf(st2, sizeof st2, "%s/state", d2);
    snprintf(cmd2, sizeof cmd2, "ipc://%s/vigil.cmd", rt2);
    snprintf(cert, sizeof cert, "%s/cert.pem", d2);
    snprintf(key, sizeof key, "%s/key.pem", d2);
    snprintf(tokf, sizeof tokf, "%s/token", d2);
    snprintf(logf, sizeof logf, "%s/vigild.log", d2);
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "mkdir -p '%s' && openssl req -x509 -newkey rsa:2048 -nodes "
                                 "-keyout '%s' -out '%s' -days 2 -subj /CN=127.0.0.1 -addext "
                                 "subjectAltName=IP:127.0.0.1 2>/dev/null && printf "
                                 "'s3cret-token-0123456789\\n' > '%s'",
                                 d2, key, cert, tokf),
                     0);
    int p2 = free_port();
    char url[128], set_url[160], set_cert[460], set_key[460], set_tok[460];
    snprintf(url, sizeof url, "https://127.0.0.1:%d", p2);
    snprintf(set_url, sizeof set_url, "http_url=%s", url);
    snprintf(set_cert, sizeof set_cert, "http_tls_cert=%s", cert);
    snprintf(set_key, sizeof set_key, "http_tls_key=%s", key);
    snprintf(set_tok, sizeof set_tok, "http_token_file=%s", tokf);
    const char *sets[] = {set_url, set_cert, set_key, set_tok, NULL};
    vg_testd_spec spec = {.log = logf,
                          .conf = conf,
                          .model = VG_SOURCE_DIR "/models/demo",
                          .rt = rt2,
                          .st = st2,
                          .media = media,
                          .cmd_url = cmd2,
                          .log_level = "info",
                          .sets = sets,
                          .clear_notify_env = 1,
                          .call_timeout_ms = 10000};
    pid_t pid = -1;
    if (vg_testd_start(&spec, &pid) != 0) {
        vg_testd_sh(NULL, 0, "cat '%s' >&2", logf);
        if (pid > 0)
            vg_testd_stop(&pid, 500, NULL);
        fail_msg("the TLS vigild did not start");
    }
    cJSON *o;
    int s_health = curl(&o, "--cacert '%s' %s/health", cert, url);
    cJSON_Delete(o);
    int s_noauth = curl(&o, "--cacert '%s' %s/v1/info", cert, url);
    char code[64];
    snprintf(code, sizeof code, "%s", error_code(o));
    cJSON_Delete(o);
    int s_bad = curl(NULL, "--cacert '%s' -H 'Authorization: Bearer wrong' %s/v1/info", cert, url);
    int s_auth =
        curl(&o, "--cacert '%s' -H 'Authorization: Bearer s3cret-token-0123456789' %s/v1/info",
             cert, url);
    int ok = vg_testd_is_ok(o);
    cJSON_Delete(o);
    int s_arg =
        curl(NULL, "--cacert '%s' '%s/v1/models?access_token=s3cret-token-0123456789'", cert, url);
    int s_untrusted = curl(NULL, "%s/health", url); /* curl refuses the self-signed certificate */
    int stop = vg_testd_stop(&pid, 3000, NULL);
    int clean = vg_testd_sh(NULL, 0, "grep -q 'Sanitizer\\|runtime error' '%s'", logf) != 0;
    assert_int_equal(s_health, 200);
    assert_int_equal(s_noauth, 401);
    assert_string_equal(code, "unauthorized");
    assert_int_equal(s_bad, 401);
    assert_int_equal(s_auth, 200);
    assert_true(ok);
    assert_int_equal(s_arg, 200);
    assert_true(s_untrusted == -1 || s_untrusted == 0);
    assert_int_equal(stop, 0);
    assert_true(clean);
}

/* Headless Chromium shows the timeline of a live stream: a `started` interval appears while the
 * test watches (DOM and screenshot checked by page_check.mjs). */
static void test_page_timeline(void **state)
{
    (void)state;
    if (access("/usr/bin/chromium", X_OK) != 0 || access("/usr/bin/chromedriver", X_OK) != 0)
        fail_msg("this test needs Debian's chromium and chromium-driver (scripts/install-deps.sh)");
    int dport = free_port();
    char pid_s[32] = "";
    assert_int_equal(vg_testd_sh(pid_s, sizeof pid_s,
                                 "chromedriver --port=%d > '%s/chromedriver.log' 2>&1 & echo $!",
                                 dport, dir),
                     0);
    pid_t driver = (pid_t)atoi(pid_s);
    assert_true(driver > 0);
    int up = 0;
    for (int i = 0; i < 100 && !up; i++) {
        up = vg_testd_sh(NULL, 0, "curl -sf -o /dev/null http://127.0.0.1:%d/status", dport) == 0;
        if (!up)
            vg_testd_sleep_ms(100);
    }
    cJSON *o;
    char body[1200];
    snprintf(body, sizeof body,
             "-d '{\"name\":\"cam2\",\"url\":\"%s/live.mp4\",\"question\":\"" QUESTION "\"}'",
             media);
    int st_watch = curl(&o, "%s %s/v1/streams", body, base);
    cJSON_Delete(o);
    char out[4096] = "", shot[400];
    snprintf(shot, sizeof shot, "%s/page.png", dir);
    int rc = up && st_watch == 201
                 ? vg_testd_sh(out, sizeof out,
                               "node '%s/page_check.mjs' http://127.0.0.1:%d '%s/' cam2 '%s' "
                               "'%s' '" QUESTION "'",
                               VG_SOURCE_DIR "/tests/http", dport, base, shot, clip)
                 : -1;
    kill(driver, SIGTERM);
    vg_testd_sh(NULL, 0, "sleep 0.3; kill -9 %d 2>/dev/null; true", (int)driver);
    curl(&o, "-X DELETE %s/v1/streams/cam2", base);
    cJSON_Delete(o);
    if (!up)
        fail_msg("chromedriver did not start; see %s/chromedriver.log", dir);
    assert_int_equal(st_watch, 201);
    if (rc != 0)
        fail_msg("page_check failed (exit %d): %s", rc, out);
    printf("page: %s", out);
    cJSON *r = cJSON_Parse(out);
    assert_non_null(r);
    assert_true(vg_testd_jnum(r, "intervals") >= 1);
    assert_true(vg_testd_jnum(r, "started_lines") >= 1);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "snapshot_loaded")));
    assert_true(strlen(vg_testd_jstr(r, "answer")) > 0);
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(r, "screenshot");
    assert_true(vg_testd_jnum(sc, "width") > 0);
    assert_true(vg_testd_jnum(sc, "interval_pixels") >= 20);
    /* The ask form streamed an answer about the clip and listed its time range. */
    const cJSON *ask = cJSON_GetObjectItemCaseSensitive(r, "ask");
    assert_red_answer(vg_testd_jstr(ask, "answer"));
    assert_true(vg_testd_jnum(ask, "events") >= 1);
    assert_non_null(strstr(vg_testd_jstr(ask, "status"), "completed"));
    cJSON_Delete(r);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_file_url),      cmocka_unit_test(test_curl_sse),
        cmocka_unit_test(test_openai_three_forms), cmocka_unit_test(test_models_health_metrics),
        cmocka_unit_test(test_rest_mirror),        cmocka_unit_test(test_stream_feed),
        cmocka_unit_test(test_bad_input),          cmocka_unit_test(test_bad_chat_shapes),
        cmocka_unit_test(test_slow_loris),         cmocka_unit_test(test_vanishing_client),
        cmocka_unit_test(test_many_connections),   cmocka_unit_test(test_tls_token),
        cmocka_unit_test(test_page_timeline),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
