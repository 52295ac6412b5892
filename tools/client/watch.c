/*
 * watch.c: `vigil watch`, `vigil unwatch`, `vigil streams` and `vigil events`: the client side of
 * vigild's live streams (docs/protocol.md, "Live streams").
 *
 * watch subscribes to stream/<name>/ before it sends the request (so nothing published after the
 * reply is missed), then prints every state change, answer and event transition until interrupted,
 * --for seconds have passed, or the stream ends; --detach returns after the reply. events prints
 * the records with a sequence number above --since from the daemon's log ring. Single-threaded;
 * everything is freed before returning.
 */
#define _POSIX_C_SOURCE 200809L
#include "watch.h"

#include "common.h"
#include "ipc.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static cJSON *new_req(const char *op)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "v", 1);
    cJSON_AddStringToObject(o, "op", op);
    char id[48];
    snprintf(id, sizeof id, "w%ld-%lx", (long)getpid(), (unsigned long)(vg_now_ns() & 0xffffffff));
    cJSON_AddStringToObject(o, "id", id);
    return o;
}

/* Sends req (consumed); returns the reply when ok, else NULL after printing why. */
static cJSON *call_ok(const vg_watch_conn *c, cJSON *req)
{
    char err[512];
    char *s = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (!s)
        return NULL;
    vg_ipc_client *cl;
    if (vg_ipc_client_open(c->cmd_url, c->timeout_ms, 2000, 0, &cl, err, sizeof err) < 0) {
        fprintf(stderr, "vigil: %s\n", err);
        free(s);
        return NULL;
    }
    char *reply = NULL;
    size_t len = 0;
    int rc = vg_ipc_client_call(cl, s, strlen(s), &reply, &len);
    vg_ipc_client_close(cl);
    free(s);
    if (rc < 0) {
        fprintf(stderr, "vigil: no reply from vigild at %s (%s); is it running?\n", c->cmd_url,
                vg_strerror(rc));
        return NULL;
    }
    cJSON *o = cJSON_ParseWithLength(reply, len);
    free(reply);
    if (!o) {
        fprintf(stderr, "vigil: the daemon's reply is not JSON\n");
        return NULL;
    }
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ok"))) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
        const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "code"));
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "message"));
        fprintf(stderr, "vigil: %s: %s\n", code ? code : "error", msg ? msg : "(no message)");
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
    return s ? s : "";
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : 0;
}

/* One record (state, answer, event) as a line. */
static void print_record(const cJSON *r, int json)
{
    if (json) {
        char *s = cJSON_PrintUnformatted(r);
        if (s)
            printf("%s\n", s);
        free(s);
        fflush(stdout);
        return;
    }
    const char *kind = jstr(r, "kind");
    printf("#%-6.0f %-8s ", jnum(r, "seq"), jstr(r, "stream"));
    if (!strcmp(kind, "state")) {
        printf("state %s%s%s\n", jstr(r, "state"), *jstr(r, "detail") ? ": " : "",
               jstr(r, "detail"));
    } else if (!strcmp(kind, "answer")) {
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(r, "window");
        printf("answer q%.0f [%.1f-%.1f s] ", jnum(r, "question"), jnum(w, "start"),
               jnum(w, "end"));
        for (const char *p = jstr(r, "text"); *p; p++)
            putchar((unsigned char)*p < 0x20 ? ' ' : *p); /* one line per record */
        putchar('\n');
    } else if (!strcmp(kind, "event")) {
        const char *ev = jstr(r, "event");
        if (!strcmp(ev, "started"))
            printf("STARTED q%.0f %s at %.1f s (%s), score %.3f: %s\n", jnum(r, "question"),
                   jstr(r, "label"), jnum(r, "start"), jstr(r, "start_wall"), jnum(r, "score"),
                   jstr(r, "text"));
        else if (!strcmp(ev, "update"))
            printf("UPDATE  q%.0f %s from %.1f s (%s)\n", jnum(r, "question"), jstr(r, "label"),
                   jnum(r, "start"), jstr(r, "start_wall"));
        else
            printf("ENDED   q%.0f %s %.1f-%.1f s (%s - %s), score %.3f\n", jnum(r, "question"),
                   jstr(r, "label"), jnum(r, "start"), jnum(r, "end"), jstr(r, "start_wall"),
                   jstr(r, "end_wall"), jnum(r, "score"));
    } else {
        printf("%s %s\n", kind, jstr(r, "error"));
    }
    fflush(stdout);
}

/* Prints the records of stream name that the subscription delivers until SIGINT, the deadline or
 * the stream's end. */
static int follow(vg_ipc_sub *sub, const char *name, double for_s, int json)
{
    double until = for_s > 0 ? vg_now_ms() + for_s * 1000.0 : 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (!interrupted && (!until || vg_now_ms() < until)) {
        char *msg = NULL;
        const char *topic, *payload;
        size_t len;
        int rc = vg_ipc_sub_recv(sub, 200, &msg, &topic, &payload, &len);
        if (rc == VG_ETIMEDOUT)
            continue;
        if (rc < 0) {
            free(msg);
            if (rc == VG_EFORMAT)
                continue;
            fprintf(stderr, "vigil: event socket: %s\n", vg_strerror(rc));
            return 1;
        }
        cJSON *r = cJSON_ParseWithLength(payload, len);
        free(msg);
        if (!r)
            continue;
        if (strcmp(jstr(r, "stream"), name)) {
            cJSON_Delete(r); /* subscribed to every stream until the reply named this one */
            continue;
        }
        print_record(r, json);
        int ended = !strcmp(jstr(r, "kind"), "state") && !strcmp(jstr(r, "state"), "ended");
        cJSON_Delete(r);
        if (ended)
            break;
    }
    return 0;
}

static int usage_watch(void)
{
    fprintf(
        stderr,
        "usage: vigil watch URL QUESTION [--name NAME] [--question Q]... [--fps F] [--window S]\n"
        "                   [--update S] [--min-window S] [--max-pixels N] [--detach] [--for S]\n"
        "                   [--rtsp-transport tcp|udp|auto] [--confirm N] [--min-duration S]\n"
        "                   [--hold S] [--merge-gap S] [--json]\n"
        "       vigil unwatch NAME\n"
        "       vigil streams [--json]\n"
        "       vigil events NAME [--since SEQ] [--limit N] [--json]\n");
    return 2;
}

static int parse_pos(const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    return end == s || *end || !(*out > 0) ? -1 : 0;
}

static int cmd_watch(int argc, char **argv, const vg_watch_conn *c)
{
    const char *url = NULL, *name = NULL, *transport = NULL;
    const char *qs[16];
    int nq = 0, detach = 0, json = c->json;
    double fps = 0, window = 0, update = 0, minwin = 0, maxpix = 0, for_s = 0;
    /* The event tracker's knobs (< 0: the daemon's default). */
    static const char *const tflag[] = {"--confirm", "--min-duration", "--hold", "--merge-gap"};
    static const char *const tkey[] = {"confirm", "min_duration_s", "hold_s", "merge_gap_s"};
    double tval[4] = {-1, -1, -1, -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int tk = -1;
        for (int k = 0; k < 4; k++)
            if (!strcmp(a, tflag[k]))
                tk = k;
        if (tk >= 0) {
            char *end;
            if (!v || (tval[tk] = strtod(v, &end), end == v || *end || !(tval[tk] >= 0)))
                return usage_watch();
            i++;
            continue;
        }
        double *num = !strcmp(a, "--fps")          ? &fps
                      : !strcmp(a, "--window")     ? &window
                      : !strcmp(a, "--update")     ? &update
                      : !strcmp(a, "--min-window") ? &minwin
                      : !strcmp(a, "--max-pixels") ? &maxpix
                      : !strcmp(a, "--for")        ? &for_s
                                                   : NULL;
        if (num) {
            if (!v || parse_pos(v, num) < 0)
                return usage_watch();
            i++;
        } else if (!strcmp(a, "--name") && v) {
            name = v, i++;
        } else if (!strcmp(a, "--rtsp-transport") && v) {
            transport = v, i++; /* the daemon checks the value */
        } else if (!strcmp(a, "--question") && v) {
            if (nq >= 16)
                return usage_watch();
            qs[nq++] = v, i++;
        } else if (!strcmp(a, "--detach")) {
            detach = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-' && a[1]) {
            return usage_watch();
        } else if (!url) {
            url = a;
        } else if (nq < 16) {
            qs[nq++] = a;
        } else {
            return usage_watch();
        }
    }
    if (!url || nq == 0)
        return usage_watch();
    cJSON *req = new_req("watch");
    cJSON_AddStringToObject(req, "url", url);
    if (name)
        cJSON_AddStringToObject(req, "name", name);
    cJSON *arr = cJSON_AddArrayToObject(req, "questions");
    for (int i = 0; i < nq; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(qs[i]));
    if (fps > 0)
        cJSON_AddNumberToObject(req, "fps", fps);
    if (window > 0)
        cJSON_AddNumberToObject(req, "window_s", window);
    if (update > 0)
        cJSON_AddNumberToObject(req, "update_s", update);
    if (minwin > 0)
        cJSON_AddNumberToObject(req, "min_window_s", minwin);
    if (maxpix > 0)
        cJSON_AddNumberToObject(req, "max_pixels", maxpix);
    if (transport)
        cJSON_AddStringToObject(req, "rtsp_transport", transport);
    for (int k = 0; k < 4; k++)
        if (tval[k] >= 0)
            cJSON_AddNumberToObject(req, tkey[k], tval[k]);
    /* Subscribe first (to the given name, or to every stream until the reply names it). */
    vg_ipc_sub *sub = NULL;
    char err[512], topic[128];
    snprintf(topic, sizeof topic, "stream/%s%s", name ? name : "", name ? "/" : "");
    if (!detach && vg_ipc_sub_open(c->events_url, topic, &sub, err, sizeof err) < 0) {
        fprintf(stderr, "vigil: %s\n", err);
        cJSON_Delete(req);
        return 1;
    }
    if (sub) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL); /* let the subscription reach the daemon */
    }
    cJSON *r = call_ok(c, req);
    if (!r) {
        vg_ipc_sub_close(sub);
        return 1;
    }
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "stream");
    const char *got = jstr(st, "name");
    if (json) {
        char *s = cJSON_PrintUnformatted(st);
        if (s)
            printf("%s\n", s);
        free(s);
    } else {
        printf("watching %s as %s (topic %s)%s\n", url, got, jstr(st, "topic"),
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "existing")) ? " (existing)" : "");
    }
    fflush(stdout);
    int rc = 0;
    if (sub)
        rc = follow(sub, got, for_s, json);
    vg_ipc_sub_close(sub);
    cJSON_Delete(r);
    return rc;
}

static int cmd_streams(const vg_watch_conn *c, int json)
{
    cJSON *r = call_ok(c, new_req("streams"));
    if (!r)
        return 1;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(r, "streams");
    if (json) {
        char *s = cJSON_PrintUnformatted(arr);
        if (s)
            printf("%s\n", s);
        free(s);
    } else if (cJSON_GetArraySize(arr) == 0) {
        printf("(no streams)\n");
    } else {
        printf("%-12s %-12s %7s %7s %7s %6s  %s\n", "name", "state", "pairs", "answers", "dropped",
               "seq", "url");
        const cJSON *s;
        cJSON_ArrayForEach(s, arr)
        {
            printf("%-12s %-12s %7.0f %7.0f %7.0f %6.0f  %s\n", jstr(s, "name"), jstr(s, "state"),
                   jnum(s, "pairs"), jnum(s, "answers"), jnum(s, "dropped_pairs"),
                   jnum(s, "last_seq"), jstr(s, "url"));
        }
    }
    cJSON_Delete(r);
    return 0;
}

static int cmd_events(int argc, char **argv, const vg_watch_conn *c)
{
    const char *name = NULL;
    double since = 0, limit = 0;
    int json = c->json;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (!strcmp(a, "--since") && v) {
            since = strtod(v, &end);
            if (end == v || *end || since < 0)
                return usage_watch();
            i++;
        } else if (!strcmp(a, "--limit") && v) {
            if (parse_pos(v, &limit) < 0)
                return usage_watch();
            i++;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!name && a[0] != '-') {
            name = a;
        } else {
            return usage_watch();
        }
    }
    if (!name)
        return usage_watch();
    cJSON *req = new_req("events");
    cJSON_AddStringToObject(req, "name", name);
    cJSON_AddNumberToObject(req, "since", since);
    if (limit > 0)
        cJSON_AddNumberToObject(req, "limit", limit);
    cJSON *r = call_ok(c, req);
    if (!r)
        return 1;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "events")) print_record(e, json);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "truncated")))
        fprintf(stderr, "vigil: older records are only in the stream's log file\n");
    cJSON_Delete(r);
    return 0;
}

int vg_cmd_stream(int argc, char **argv, const vg_watch_conn *c)
{
    const char *cmd = argv[0];
    int json = c->json;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--json"))
            json = 1;
    if (!strcmp(cmd, "watch"))
        return cmd_watch(argc, argv, c);
    if (!strcmp(cmd, "events"))
        return cmd_events(argc, argv, c);
    if (!strcmp(cmd, "streams")) {
        for (int i = 1; i < argc; i++)
            if (strcmp(argv[i], "--json"))
                return usage_watch();
        return cmd_streams(c, json);
    }
    if (!strcmp(cmd, "unwatch")) {
        if (argc != 2)
            return usage_watch();
        cJSON *req = new_req("unwatch");
        cJSON_AddStringToObject(req, "name", argv[1]);
        cJSON *r = call_ok(c, req);
        if (!r)
            return 1;
        if (!json)
            printf("stream %s: %s\n", jstr(r, "stream"), jstr(r, "state"));
        else {
            char *s = cJSON_PrintUnformatted(r);
            if (s)
                printf("%s\n", s);
            free(s);
        }
        cJSON_Delete(r);
        return 0;
    }
    return -1;
}
