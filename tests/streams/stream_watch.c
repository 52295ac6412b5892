/*
 * stream_watch.c: the shared harness of the network-source stream tests (see stream_watch.h),
 * built on tests/support/vg_testd.c.
 */
#define _XOPEN_SOURCE 700
#include "stream_watch.h"

#include "../support/vg_testd.h"
#include "common.h"
#include "ipc.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROCS 8

char sw_dir[256], sw_state[320], sw_rt[320];
cJSON *sw_seen;
static char model[320], media[320], conf[320], cmd_url[400], ev_url[400];
static pid_t daemon_pid = -1;
static pid_t procs[MAX_PROCS];
static vg_ipc_sub *sub;

int sw_setup(const char *tmpl, const char *const *sets, const char *log_level)
{
    if (vg_testd_need_tools() != 0) {
        fprintf(stderr, "vigild, vigil, vigil-model or ffmpeg is missing\n");
        return -1;
    }
    if (vg_testd_tmpdir(tmpl, sw_dir, model, media, sw_rt, sw_state, cmd_url) != 0)
        return -1;
    snprintf(ev_url, sizeof ev_url, "ipc://%s/vigil.events", sw_rt);
    snprintf(conf, sizeof conf, "%s/vigild.conf", sw_dir);
    if (vg_testd_write_file(conf, "# test configuration: everything is on the command line\n"))
        return -1;
    sw_seen = cJSON_CreateArray();
    char log[400];
    snprintf(log, sizeof log, "%s/vigild.log", sw_dir);
    vg_testd_spec spec = {.log = log,
                          .conf = conf,
                          .model = VG_SOURCE_DIR "/models/demo",
                          .rt = sw_rt,
                          .st = sw_state,
                          .media = media,
                          .cmd_url = cmd_url,
                          .log_level = log_level,
                          .sets = sets,
                          .call_timeout_ms = 10000};
    if (vg_testd_start(&spec, &daemon_pid) != 0) {
        fprintf(stderr, "vigild did not start; its log:\n");
        vg_testd_sh(NULL, 0, "cat '%s' >&2", log);
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

static void kill_daemon(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGKILL);
        waitpid(daemon_pid, NULL, 0);
        daemon_pid = -1;
    }
}

int sw_teardown(void)
{
    int rc = 0;
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i] > 0)
            sw_kill(procs[i]);
    if (daemon_pid > 0 && vg_testd_stop(&daemon_pid, 2000, kill_daemon) != 0) {
        fprintf(stderr, "vigild did not exit cleanly\n");
        rc = -1;
    }
    kill_daemon();
    vg_ipc_sub_close(sub);
    sub = NULL;
    if (sw_dir[0] && vg_testd_check_log(sw_dir) != 0)
        rc = -1;
    cJSON_Delete(sw_seen);
    sw_seen = NULL;
    if (sw_dir[0] && !getenv("VG_KEEP_TMP"))
        vg_testd_sh(NULL, 0, "rm -rf '%s'", sw_dir);
    return rc;
}

cJSON *sw_call(const char *req)
{
    return vg_testd_call(cmd_url, req, strlen(req), 10000);
}

void sw_pump(int ms)
{
    double until = vg_now_ms() + ms;
    do {
        char *msg = NULL;
        const char *topic, *payload;
        size_t len;
        if (vg_ipc_sub_recv(sub, 20, &msg, &topic, &payload, &len) == 0) {
            cJSON *o = cJSON_ParseWithLength(payload, len);
            if (o) {
                cJSON_AddStringToObject(o, "_topic", topic);
                cJSON_AddItemToArray(sw_seen, o);
            }
        }
        free(msg);
    } while (vg_now_ms() < until);
}

int sw_find(int from, const char *name, const char *kind, const char *state)
{
    int n = cJSON_GetArraySize(sw_seen);
    for (int i = from; i < n; i++) {
        const cJSON *r = cJSON_GetArrayItem(sw_seen, i);
        if (strcmp(vg_testd_jstr(r, "stream"), name) || strcmp(vg_testd_jstr(r, "kind"), kind))
            continue;
        if (state && strcmp(vg_testd_jstr(r, "state"), state))
            continue;
        return i;
    }
    return -1;
}

int sw_wait(int from, const char *name, const char *kind, const char *state, int timeout_ms)
{
    double until = vg_now_ms() + timeout_ms;
    for (;;) {
        int i = sw_find(from, name, kind, state);
        if (i >= 0 || vg_now_ms() > until)
            return i;
        sw_pump(50);
    }
}

cJSON *sw_stream(const char *name)
{
    cJSON *r = sw_call("{\"v\":1,\"op\":\"streams\"}");
    cJSON *found = NULL;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(r, "streams"))
    {
        if (!found && !strcmp(vg_testd_jstr(s, "name"), name))
            found = cJSON_Duplicate(s, 1);
    }
    cJSON_Delete(r);
    return found;
}

void sw_dump(int from, const char *name)
{
    for (int i = from; i < cJSON_GetArraySize(sw_seen); i++) {
        const cJSON *r = cJSON_GetArrayItem(sw_seen, i);
        if (strcmp(vg_testd_jstr(r, "stream"), name))
            continue;
        char *t = cJSON_PrintUnformatted(r);
        printf("  %s\n", t);
        free(t);
    }
}

int sw_seq_contiguous(const char *name, int *count)
{
    double last = -1;
    int n = 0, ok = 1;
    const cJSON *r;
    cJSON_ArrayForEach(r, sw_seen)
    {
        if (strcmp(vg_testd_jstr(r, "stream"), name))
            continue;
        double seq = vg_testd_jnum(r, "seq");
        if (last >= 0 && seq != last + 1)
            ok = 0;
        last = seq;
        n++;
    }
    if (count)
        *count = n;
    return ok;
}

pid_t sw_spawn(const char *log, char *const argv[])
{
    int slot = -1;
    for (int i = 0; i < MAX_PROCS && slot < 0; i++)
        if (procs[i] <= 0)
            slot = i;
    if (slot < 0)
        return -1;
    char path[400];
    snprintf(path, sizeof path, "%s/%s", sw_dir, log);
    pid_t pid = vg_testd_spawn(path, argv);
    if (pid < 0)
        return -1;
    procs[slot] = pid;
    return pid;
}

void sw_kill(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i] == pid)
            procs[i] = 0;
}
