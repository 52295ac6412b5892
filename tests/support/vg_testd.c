/*
 * vg_testd.c: the shared harness of the end-to-end tests (see vg_testd.h): shell commands, one
 * request/reply, cJSON accessors, the random tiny model, vigild started and stopped, ffmpeg
 * loopback sources.
 */
#define _XOPEN_SOURCE 700
#include "vg_testd.h"

#include "common.h"
#include "ipc.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BIN VG_BINARY_DIR

int vg_testd_need_tools(void)
{
    if (access(BIN "/daemon/vigild", X_OK) || access(BIN "/tools/vigil", X_OK) ||
        access(BIN "/tools/vigil-model", X_OK) ||
        vg_testd_sh(NULL, 0, "ffmpeg -version >/dev/null 2>&1"))
        return -1;
    return 0;
}

int vg_testd_tmpdir(const char *tmpl, char dir[256], char model[320], char media[320], char rt[320],
                    char st[320], char cmd_url[400])
{
    snprintf(dir, 256, "%s", tmpl);
    if (!mkdtemp(dir))
        return -1;
    snprintf(model, 320, "%s/model", dir);
    snprintf(media, 320, "%s/media", dir);
    snprintf(rt, 320, "%s/run", dir);
    snprintf(st, 320, "%s/state", dir);
    snprintf(cmd_url, 400, "ipc://%s/vigil.cmd", rt);
    mkdir(media, 0755);
    return 0;
}

void vg_testd_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int vg_testd_sh(char *out, size_t cap, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = 0;
    char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, p)) > 0) {
        if (out && n + 1 < cap) {
            size_t k = VG_MIN(r, cap - 1 - n);
            memcpy(out + n, buf, k);
            n += k;
        }
    }
    if (out && cap)
        out[n] = 0;
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

cJSON *vg_testd_call(const char *url, const char *req, size_t len, int timeout_ms)
{
    vg_ipc_client *c;
    char err[256];
    if (vg_ipc_client_open(url, timeout_ms, 0, 0, &c, err, sizeof err) < 0)
        return NULL;
    char *rep = NULL;
    size_t rl;
    int rc = vg_ipc_client_call(c, req, len, &rep, &rl);
    vg_ipc_client_close(c);
    if (rc < 0)
        return NULL;
    cJSON *o = cJSON_ParseWithLength(rep, rl);
    free(rep);
    return o;
}

int vg_testd_is_ok(const cJSON *r)
{
    return r && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok"));
}

const char *vg_testd_jstr(const cJSON *o, const char *k)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
    return s ? s : "";
}

double vg_testd_jnum(const cJSON *o, const char *k)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : -1;
}

int vg_testd_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f) ? -1 : 0;
}

int vg_testd_make_model(const char *dir, const char *out)
{
    char tmpm[400], cfg[400], err[256], path[500];
    snprintf(tmpm, sizeof tmpm, "%s/model0", dir);
    if (vg_testd_sh(NULL, 0,
                    "'%s/tools/vigil-model' random --preset tiny --out '%s' >/dev/null 2>&1", BIN,
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
                               cJSON_GetObjectItemCaseSensitive(tok, "model"), "vocab"))
    {
        max_id = VG_MAX(max_id, (int)it->valuedouble);
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(tok, "added_tokens"))
    {
        max_id = VG_MAX(max_id, (int)vg_testd_jnum(it, "id"));
    }
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
    return vg_testd_sh(NULL, 0,
                       "'%s/tools/vigil-model' random --config '%s' --out '%s' >/dev/null 2>&1",
                       BIN, cfg, out);
}

static int answers_info(const vg_testd_spec *spec)
{
    const char *req = "{\"v\":1,\"op\":\"info\"}";
    cJSON *r = vg_testd_call(spec->cmd_url, req, strlen(req), spec->call_timeout_ms);
    int ok = vg_testd_is_ok(r);
    cJSON_Delete(r);
    return ok;
}

int vg_testd_start(const vg_testd_spec *spec, pid_t *pid_out)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(spec->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        if (spec->notify_name) {
            setenv("NOTIFY_SOCKET", spec->notify_name, 1);
            setenv("WATCHDOG_USEC", "200000", 1); /* pings every 100 ms */
            unsetenv("WATCHDOG_PID");
        }
        if (spec->clear_notify_env) {
            unsetenv("NOTIFY_SOCKET");
            unsetenv("WATCHDOG_USEC");
        }
        char roots[400];
        snprintf(roots, sizeof roots, "media_roots=%s", spec->media);
        const char *argv[64];
        int n = 0;
        argv[n++] = "vigild";
        argv[n++] = "--config";
        argv[n++] = spec->conf;
        argv[n++] = "--model";
        argv[n++] = spec->model;
        argv[n++] = "--runtime-dir";
        argv[n++] = spec->rt;
        argv[n++] = "--state-dir";
        argv[n++] = spec->st;
        argv[n++] = "--set";
        argv[n++] = roots;
        for (int i = 0; spec->sets && spec->sets[i] && n < 60; i++) {
            argv[n++] = "--set";
            argv[n++] = spec->sets[i];
        }
        argv[n++] = "--log-level";
        argv[n++] = spec->log_level;
        argv[n] = NULL;
        execv(BIN "/daemon/vigild", (char *const *)argv);
        _exit(127);
    }
    *pid_out = pid;
    int status;
    if (spec->notify_name) {
        /* Ready when READY=1 arrives, then it must answer. */
        double until = vg_now_ms() + 20000;
        char buf[256];
        while (vg_now_ms() < until) {
            ssize_t n = recv(spec->notify_fd, buf, sizeof buf - 1, MSG_DONTWAIT);
            if (n > 0) {
                buf[n] = 0;
                if (strstr(buf, "READY=1"))
                    break;
            }
            if (waitpid(pid, &status, WNOHANG) == pid) {
                *pid_out = -1;
                return -1;
            }
            vg_testd_sleep_ms(10);
        }
        return answers_info(spec) ? 0 : -1;
    }
    double until = vg_now_ms() + 30000;
    while (vg_now_ms() < until) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            *pid_out = -1;
            return -1;
        }
        if (answers_info(spec))
            return 0;
        vg_testd_sleep_ms(50);
    }
    return -1;
}

int vg_testd_start_streams(const char *dir, const char *conf, const char *model, const char *rt,
                           const char *st, const char *media, const char *cmd_url, pid_t *pid)
{
    char log[400];
    snprintf(log, sizeof log, "%s/vigild.log", dir);
    static const char *const sets[] = {"allowed_protocols=udp,http", "stream_stall_timeout_s=1.5",
                                       "stream_max_new_tokens=32", "max_streams=4", NULL};
    vg_testd_spec spec = {.log = log,
                          .conf = conf,
                          .model = model,
                          .rt = rt,
                          .st = st,
                          .media = media,
                          .cmd_url = cmd_url,
                          .log_level = "info",
                          .sets = sets,
                          .call_timeout_ms = 10000};
    return vg_testd_start(&spec, pid);
}

int vg_testd_stop(pid_t *pid, int polls, void (*on_timeout)(void))
{
    if (*pid <= 0)
        return -1;
    kill(*pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < polls; i++) {
        if (waitpid(*pid, &status, WNOHANG) == *pid) {
            *pid = -1;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        vg_testd_sleep_ms(10);
    }
    if (on_timeout) {
        on_timeout();
        return -1;
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, &status, 0);
    *pid = -1;
    return -1;
}

int vg_testd_start_source(pid_t *children, int n, int port, const char *lavfi)
{
    char in[512], out[128];
    snprintf(in, sizeof in, "%s", lavfi ? lavfi : "testsrc2=size=160x120:rate=10");
    snprintf(out, sizeof out, "udp://127.0.0.1:%d?pkt_size=1316", port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execlp("ffmpeg", "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", in,
               "-c:v", "mpeg2video", "-g", "5", "-f", "mpegts", out, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < n; i++)
        if (children[i] <= 0) {
            children[i] = pid;
            return i;
        }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

void vg_testd_kill_source(pid_t *children, int slot)
{
    if (slot < 0 || children[slot] <= 0)
        return;
    kill(children[slot], SIGKILL);
    waitpid(children[slot], NULL, 0);
    children[slot] = 0;
}

void vg_testd_kill_all(pid_t *children, int n, pid_t *daemon)
{
    for (int i = 0; i < n; i++)
        vg_testd_kill_source(children, i);
    if (*daemon > 0) {
        kill(*daemon, SIGKILL);
        waitpid(*daemon, NULL, 0);
        *daemon = -1;
    }
}

int vg_testd_check_log(const char *dir)
{
    if (vg_testd_sh(NULL, 0, "grep -q 'Sanitizer\\|runtime error' '%s/vigild.log'", dir) != 0)
        return 0;
    fprintf(stderr, "sanitizer errors in the daemon log:\n");
    vg_testd_sh(NULL, 0, "cat '%s/vigild.log' >&2", dir);
    return -1;
}

pid_t vg_testd_spawn(const char *log, char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in >= 0)
            dup2(in, 0);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid < 0 ? -1 : pid;
}

pid_t vg_testd_nats_start(const char *store_dir, int port, const char *log)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    char *argv[] = {"nats-server",     "-js", "-a", "127.0.0.1", "-p", ps, "-sd",
                    (char *)store_dir, NULL};
    pid_t pid = vg_testd_spawn(log, argv);
    for (int i = 0; pid > 0 && i < 200 && !vg_testd_port_open(port); i++)
        vg_testd_sleep_ms(50);
    if (pid > 0 && vg_testd_port_open(port))
        return pid;
    fprintf(stderr, "nats-server did not start on port %d (%s)\n", port, log);
    vg_testd_kill_wait(&pid, SIGKILL);
    return -1;
}

void vg_testd_kill_wait(pid_t *pid, int sig)
{
    if (*pid > 0) {
        kill(*pid, sig);
        waitpid(*pid, NULL, 0);
    }
    *pid = -1;
}

int vg_testd_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}
