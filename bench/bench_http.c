/*
 * bench_http.c: `info` latency over vigild's HTTP door while a clip job infers, with the native
 * command socket (nanomsg REQ/REP) measured in the same run as the peer. Not a test.
 *
 * It makes the random tiny test model (`vigil-model random`, greedy decoding never meets a stop id
 * there, so a job with a large max_new_tokens keeps the inference thread busy), a 10 s clip, starts
 * vigild with http_url on loopback, starts such a job over HTTP (POST /v1/jobs), then sends N
 * `GET /v1/info` on one keep-alive HTTP/1.1 connection and N native `info` requests, one at a
 * time, and prints p50/p99/max of each, the ratio, whether the job was still running at the end,
 * and the CPU. Goal (issue 15): HTTP p99 under 50 ms.
 *
 * usage: bench_http [--n 500] [--tokens 4000]
 * Run from the build tree (it uses BIN/daemon/vigild, BIN/tools/vigil-model).
 */
#define _GNU_SOURCE
#include "common.h"
#include "../tests/support/vg_testd.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

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

/* One request on a keep-alive connection; returns the body (malloc'd) or NULL. */
static char *http_call(int fd, const char *req)
{
    if (send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req))
        return NULL;
    size_t cap = 1 << 16, got = 0;
    char *b = malloc(cap);
    while (b && got < cap - 1) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 10000) <= 0)
            break;
        ssize_t n = recv(fd, b + got, cap - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        b[got] = 0;
        char *end = strstr(b, "\r\n\r\n");
        const char *cl = strcasestr(b, "content-length:");
        if (end && cl && (size_t)(end + 4 - b) + strtoul(cl + 15, NULL, 10) <= got) {
            char *body = strdup(end + 4);
            free(b);
            return body;
        }
    }
    free(b);
    return NULL;
}

static void stats(const char *what, double *lat, int n, double *p99_out)
{
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    double p99 = lat[(int)(n * 0.99) - 1 < 0 ? 0 : (int)(n * 0.99) - 1];
    printf("| %s | %d | %.3f | %.3f | %.3f |\n", what, n, lat[n / 2], p99, lat[n - 1]);
    *p99_out = p99;
}

int main(int argc, char **argv)
{
    int n = 500, tokens = 4000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens"))
            tokens = atoi(argv[i + 1]);
    }
    if (n < 10 || n > 100000 || tokens < 1) {
        fprintf(stderr, "usage: bench_http [--n 10-100000] [--tokens N]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char dir[256], model[320], media[320], rt[320], st[320], cmd_url[400];
    if (vg_testd_need_tools() != 0 ||
        vg_testd_tmpdir("/tmp/vg-bench-http-XXXXXX", dir, model, media, rt, st, cmd_url) != 0 ||
        vg_testd_make_model(dir, model) != 0) {
        fprintf(stderr, "bench_http: needs vigild, vigil-model and ffmpeg in the build tree\n");
        return 1;
    }
    char clip[400], conf[320], logf[320], http_url[96], base_req[600];
    snprintf(clip, sizeof clip, "%s/clip.mp4", media);
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    snprintf(logf, sizeof logf, "%s/vigild.log", dir);
    vg_testd_write_file(conf, "# bench\n");
    if (vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=320x240:rate=10 "
                    "-t 10 -pix_fmt yuv420p '%s'",
                    clip) != 0)
        return 1;
    int port = free_port();
    snprintf(http_url, sizeof http_url, "http_url=http://127.0.0.1:%d", port);
    char tok[64];
    snprintf(tok, sizeof tok, "max_new_tokens_limit=%d", tokens);
    const char *sets[] = {http_url, tok, NULL};
    vg_testd_spec spec = {.log = logf,
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
        fprintf(stderr, "bench_http: vigild did not start (log %s)\n", logf);
        return 1;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, "bench_http: cannot connect\n");
        vg_testd_stop(&pid, 500, NULL);
        return 1;
    }
    char body[1024];
    snprintf(body, sizeof body,
             "{\"video\":\"%s\",\"question\":\"Describe the video.\",\"generation\":{\"greedy\":"
             "true,\"max_new_tokens\":%d}}",
             clip, tokens);
    snprintf(base_req, sizeof base_req,
             "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    char *r = http_call(fd, base_req);
    cJSON *o = r ? cJSON_Parse(r) : NULL;
    char job[128];
    snprintf(job, sizeof job, "%s", vg_testd_jstr(o, "job"));
    cJSON_Delete(o);
    free(r);
    /* Wait until the job is generating. */
    for (int i = 0; i < 600; i++) {
        char q[256];
        snprintf(q, sizeof q, "GET /v1/jobs/%s HTTP/1.1\r\nHost: x\r\n\r\n", job);
        r = http_call(fd, q);
        int gen = r && strstr(r, "\"stage\":\"generate\"");
        free(r);
        if (gen)
            break;
        vg_testd_sleep_ms(50);
    }
    double *lh = calloc((size_t)n, sizeof *lh), *ln = calloc((size_t)n, sizeof *ln);
    int fails = 0;
    for (int i = 0; i < n; i++) {
        double t0 = vg_now_ms();
        r = http_call(fd, "GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n");
        lh[i] = vg_now_ms() - t0;
        fails += !r || !strstr(r, "\"ok\":true");
        free(r);
        t0 = vg_now_ms();
        o = vg_testd_call(cmd_url, "{\"v\":1,\"op\":\"info\"}", 19, 10000);
        ln[i] = vg_now_ms() - t0;
        fails += !vg_testd_is_ok(o);
        cJSON_Delete(o);
    }
    char q[256];
    snprintf(q, sizeof q, "GET /v1/jobs/%s HTTP/1.1\r\nHost: x\r\n\r\n", job);
    r = http_call(fd, q);
    int running = r && strstr(r, "\"state\":\"running\"");
    free(r);
    char cpu[256] = "";
    vg_testd_sh(cpu, sizeof cpu,
                "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'");
    cpu[strcspn(cpu, "\n")] = 0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("CPU: %s (%ld online); job %s %s during the whole run; %d failed requests\n\n", cpu,
           ncpu, job, running ? "still generating" : "FINISHED (raise --tokens)", fails);
    printf("| door | requests | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n");
    double p99h, p99n;
    stats("HTTP GET /v1/info (keep-alive)", lh, n, &p99h);
    stats("nanomsg info (new REQ socket each)", ln, n, &p99n);
    printf("\nHTTP p99 / native p99: %.2f; goal HTTP p99 < 50 ms: %s\n", p99h / p99n,
           p99h < 50 ? "met" : "NOT met");
    close(fd);
    free(lh);
    free(ln);
    vg_testd_stop(&pid, 1000, NULL);
    vg_testd_sh(NULL, 0, "rm -rf '%s'", dir);
    return 0;
}
