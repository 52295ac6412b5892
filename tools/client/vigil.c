/*
 * vigil.c: `vigil`, the command-line client of vigild (ask, info, jobs, job, cancel) and the
 * front end of the offline tools (plan).
 *
 * Single-threaded and blocking. `ask` subscribes to the job's event topic and waits until the
 * subscription is live (the daemon's `sync` op echoes a message on the topic) before it sends the
 * ask with a job id it chose itself, so no token can be published before the client listens. If
 * messages are lost anyway (PUB drops for slow subscribers), the final text comes from the `done`
 * event or, failing that, from the `job` op.
 */
#include "cmds.h"
#include "common.h"
#include "eval.h"
#include "ipc.h"
#include "watch.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_RUNTIME "/run/vigil"

typedef struct client {
    char cmd_url[1100];
    char events_url[1100];
    int timeout_ms;
    int json;
} client;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vigil [--runtime-dir DIR] [--timeout MS] COMMAND [ARGS]\n"
               "\n"
               "Talks to vigild, the Qwen3-VL video daemon, and runs the offline tools.\n"
               "\n"
               "commands:\n"
               "  ask VIDEO QUESTION   ask about a video file (path or URL); streams the answer,\n"
               "                       then prints the events as a table\n"
               "  info                 daemon version, model, capabilities, queue\n"
               "  jobs                 recent jobs\n"
               "  job ID               one job's state and full result\n"
               "  cancel ID            cancel a queued or running job\n"
               "  watch URL QUESTION   standing question over a live stream (vigil watch --help)\n"
               "  streams              watched streams; unwatch NAME stops one\n"
               "  events NAME          a stream's published records (--since SEQ)\n"
               "  eval FILE.jsonl ...  benchmark the served model on Charades-STA-style lines\n"
               "                       (mean tIoU, R@0.3/0.5/0.7, negatives; see vigil eval "
               "--help)\n"
               "  eval --live FILE.jsonl  benchmark live annotation: videos replayed as streams,\n"
               "                       events scored (F1 at 1/2 s, delays, spurious per hour)\n"
               "  plan ...             show how a video would be sampled (offline; see vigil plan "
               "--help)\n"
               "\n"
               "global options:\n"
               "  --runtime-dir DIR    where vigild's sockets are (default $VIGIL_RUNTIME_DIR "
               "or " DEFAULT_RUNTIME ")\n"
               "  --cmd-url URL        command socket URL (default ipc://DIR/vigil.cmd)\n"
               "  --events-url URL     event socket URL (default ipc://DIR/vigil.events)\n"
               "  --timeout MS         reply timeout (default 10000)\n"
               "  --json               machine-readable output (one JSON object)\n"
               "  --help, --version\n"
               "\n"
               "ask options:\n"
               "  --system TEXT        system prompt\n"
               "  --job ID             job id to use (default: a fresh one)\n"
               "  --fps F --nframes N --min-frames N --max-frames N --min-pixels N --max-pixels N\n"
               "  --total-pixels N --size HxW --start SEC --end SEC      frame sampling\n"
               "  --max-new-tokens N --temperature T --top-k K --top-p P --seed S --greedy\n"
               "  --repetition-penalty X --presence-penalty X            generation\n"
               "  --deadline SEC       give up after this long\n"
               "  --no-wait            print the job id and return at once\n"
               "With --json, ask prints exactly one object {\"text\":..., \"events\":[{\"start\","
               "\"end\",\"label\"}]}\n"
               "(seconds). On a terminal, progress (stage and percent) goes to stderr.\n"
               "Exit status: 0 success, 1 failure (job failed or cancelled, daemon unreachable), 2 "
               "usage.\n");
}

/* Sends a request object (consumed) and returns the parsed reply, or NULL with a message. */
static cJSON *call(const client *c, cJSON *req, int quiet)
{
    char err[512];
    vg_ipc_client *cl;
    char *s = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (!s)
        return NULL;
    int rc = vg_ipc_client_open(c->cmd_url, c->timeout_ms, 2000, 0, &cl, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "vigil: %s\n", err);
        free(s);
        return NULL;
    }
    char *reply = NULL;
    size_t len = 0;
    rc = vg_ipc_client_call(cl, s, strlen(s), &reply, &len);
    vg_ipc_client_close(cl);
    free(s);
    if (rc < 0) {
        if (!quiet)
            fprintf(stderr, "vigil: no reply from vigild at %s (%s); is it running?\n", c->cmd_url,
                    vg_strerror(rc));
        return NULL;
    }
    cJSON *o = cJSON_ParseWithLength(reply, len);
    free(reply);
    if (!o)
        fprintf(stderr, "vigil: the daemon's reply is not JSON\n");
    return o;
}

static cJSON *new_req(const char *op)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "v", 1);
    cJSON_AddStringToObject(o, "op", op);
    char id[48];
    snprintf(id, sizeof id, "c%ld-%lx", (long)getpid(), (unsigned long)(vg_now_ns() & 0xffffffff));
    cJSON_AddStringToObject(o, "id", id);
    return o;
}

/* Prints the error of a failed reply; returns 1 if the reply was not ok. */
static int reply_failed(const cJSON *r)
{
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "ok")))
        return 0;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
    fprintf(stderr, "vigil: %s: %s\n", cJSON_IsString(code) ? code->valuestring : "error",
            cJSON_IsString(msg) ? msg->valuestring : "(no message)");
    return 1;
}

/* call() that also turns an error reply into NULL (after printing it). */
static cJSON *call_ok(const client *c, cJSON *req, int quiet)
{
    cJSON *r = call(c, req, quiet);
    if (r && reply_failed(r)) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

static const char *jstr(const cJSON *o, const char *k, const char *dflt)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(it) ? it->valuestring : dflt;
}

static double jnum(const cJSON *o, const char *k, double dflt)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(it) ? it->valuedouble : dflt;
}

static void print_json(const cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    if (s) {
        printf("%s\n", s);
        free(s);
    }
}

static void print_events(const cJSON *events)
{
    int n = cJSON_GetArraySize(events);
    if (n == 0) {
        printf("(no events)\n");
        return;
    }
    printf("%9s  %9s  %s\n", "start", "end", "label");
    const cJSON *e;
    cJSON_ArrayForEach(e, events)
    {
        printf("%8.1fs  %8.1fs  %s\n", jnum(e, "start", 0), jnum(e, "end", 0),
               jstr(e, "label", ""));
    }
}

/* {"text":..., "events":[{start,end,label}]} from a job or done object. */
static void print_result_json(const cJSON *job)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "text", jstr(job, "text", ""));
    cJSON *arr = cJSON_AddArrayToObject(o, "events");
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(job, "events"))
    {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "start", jnum(e, "start", 0));
        cJSON_AddNumberToObject(x, "end", jnum(e, "end", 0));
        cJSON_AddStringToObject(x, "label", jstr(e, "label", ""));
        cJSON_AddItemToArray(arr, x);
    }
    print_json(o);
    cJSON_Delete(o);
}

static int parse_num(const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    return end == s || *end ? -1 : 0;
}

/* Fetches the job object (the "job" field of a job reply), or NULL. */
static cJSON *fetch_job(const client *c, const char *id, int quiet)
{
    cJSON *req = new_req("job");
    cJSON_AddStringToObject(req, "job", id);
    cJSON *r = call_ok(c, req, quiet);
    if (!r)
        return NULL;
    cJSON *j = cJSON_DetachItemFromObjectCaseSensitive(r, "job");
    cJSON_Delete(r);
    return j;
}

static int is_final_state(const char *s)
{
    return !strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled");
}

static int finish(const client *c, const cJSON *job, const char *printed)
{
    const char *state = jstr(job, "state", "?");
    const char *text = jstr(job, "text", "");
    if (c->json) {
        print_result_json(job);
    } else {
        size_t np = strlen(printed);
        if (strncmp(text, printed, np) == 0) {
            fputs(text + np, stdout);
        } else {
            fprintf(stderr, "\nvigil: some streamed tokens were lost; the full answer:\n");
            fputs(text, stdout);
        }
        printf("\n\n");
        print_events(cJSON_GetObjectItemCaseSensitive(job, "events"));
    }
    fflush(stdout);
    if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(job, "durable")))
        fprintf(stderr,
                "vigil: job %s: the result is not on disk yet (vigild cannot write its "
                "state directory; see `vigil info`): a restart before that loses it\n",
                jstr(job, "job", "?"));
    if (strcmp(state, "completed") != 0) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(job, "error");
        fprintf(stderr, "vigil: job %s %s: %s\n", jstr(job, "job", "?"), state,
                jstr(e, "message", ""));
        return 1;
    }
    return 0;
}

static int cmd_ask(client *c, int argc, char **argv)
{
    const char *video = NULL, *question = NULL, *system = NULL, *job_id = NULL;
    int no_wait = 0;
    cJSON *sampling = cJSON_CreateObject(), *gen = cJSON_CreateObject();
    double deadline = 0;
    static const char *const snum[][2] = {
        {"--fps", "fps"},
        {"--nframes", "nframes"},
        {"--min-frames", "min_frames"},
        {"--max-frames", "max_frames"},
        {"--min-pixels", "min_pixels"},
        {"--max-pixels", "max_pixels"},
        {"--total-pixels", "total_pixels"},
        {"--start", "start"},
        {"--end", "end"},
    };
    static const char *const gnum[][2] = {
        {"--max-new-tokens", "max_new_tokens"},
        {"--temperature", "temperature"},
        {"--top-k", "top_k"},
        {"--top-p", "top_p"},
        {"--seed", "seed"},
        {"--repetition-penalty", "repetition_penalty"},
        {"--presence-penalty", "presence_penalty"},
    };
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        int done = 0;
        for (size_t k = 0; k < VG_ARRAY_LEN(snum) && !done; k++)
            if (!strcmp(a, snum[k][0])) {
                if (!v || parse_num(v, &d) < 0)
                    goto usage;
                cJSON_AddNumberToObject(sampling, snum[k][1], d);
                done = 1, i++;
            }
        for (size_t k = 0; k < VG_ARRAY_LEN(gnum) && !done; k++)
            if (!strcmp(a, gnum[k][0])) {
                if (!v || parse_num(v, &d) < 0)
                    goto usage;
                cJSON_AddNumberToObject(gen, gnum[k][1], d);
                done = 1, i++;
            }
        if (done)
            continue;
        if (!strcmp(a, "--greedy")) {
            cJSON_AddTrueToObject(gen, "greedy");
        } else if (!strcmp(a, "--json")) {
            c->json = 1;
        } else if (!strcmp(a, "--no-wait")) {
            no_wait = 1;
        } else if (!strcmp(a, "--size") && v) {
            int h, w;
            if (sscanf(v, "%dx%d", &h, &w) != 2)
                goto usage;
            cJSON_AddNumberToObject(sampling, "resized_height", h);
            cJSON_AddNumberToObject(sampling, "resized_width", w);
            i++;
        } else if (!strcmp(a, "--system") && v) {
            system = v, i++;
        } else if (!strcmp(a, "--job") && v) {
            job_id = v, i++;
        } else if (!strcmp(a, "--deadline") && v) {
            if (parse_num(v, &deadline) < 0)
                goto usage;
            i++;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "vigil ask: unknown option %s\n", a);
            goto usage;
        } else if (!video) {
            video = a;
        } else if (!question) {
            question = a;
        } else {
            goto usage;
        }
    }
    if (!video || !question)
        goto usage;

    /* A relative path becomes absolute here: the daemon does not share our working directory. */
    char absvideo[8192];
    if (video[0] != '/' && !strstr(video, "://") && strncmp(video, "file:", 5) != 0) {
        char cwd[4096];
        if (!getcwd(cwd, sizeof cwd)) {
            perror("vigil: getcwd");
            rc = 1;
            goto out;
        }
        snprintf(absvideo, sizeof absvideo, "%s/%s", cwd, video);
        video = absvideo;
    }
    char jid[80];
    if (job_id)
        snprintf(jid, sizeof jid, "%s", job_id);
    else
        snprintf(jid, sizeof jid, "c%lx-%lx-%x", (unsigned long)time(NULL), (long)getpid(),
                 (unsigned)(vg_now_ns() & 0xffffff));
    char topic[128];
    snprintf(topic, sizeof topic, "job/%s/", jid);
    char err[512];
    vg_ipc_sub *sub = NULL;
    if (!no_wait && vg_ipc_sub_open(c->events_url, topic, &sub, err, sizeof err) < 0) {
        fprintf(stderr, "vigil: %s\n", err);
        rc = 1;
        goto out;
    }
    /* Wait until our subscription is live: the daemon echoes `sync` on the job's topic. */
    int synced = 0;
    for (int attempt = 0; sub && attempt < 50 && !synced; attempt++) {
        cJSON *req = new_req("sync");
        cJSON_AddStringToObject(req, "job", jid);
        cJSON *r = call(c, req, 0);
        if (!r) {
            rc = 1;
            vg_ipc_sub_close(sub);
            goto out;
        }
        cJSON_Delete(r);
        double until = vg_now_ms() + 100;
        while (!synced && vg_now_ms() < until) {
            char *msg;
            const char *t, *p;
            size_t pl;
            if (vg_ipc_sub_recv(sub, 20, &msg, &t, &p, &pl) == 0) {
                size_t tl = strlen(topic);
                synced = strncmp(t, topic, tl) == 0 && strcmp(t + tl, "sync") == 0;
                free(msg);
            }
        }
    }
    cJSON *req = new_req("ask");
    cJSON_AddStringToObject(req, "video", video);
    cJSON_AddStringToObject(req, "question", question);
    cJSON_AddStringToObject(req, "job", jid);
    if (system)
        cJSON_AddStringToObject(req, "system", system);
    if (cJSON_GetArraySize(sampling)) {
        cJSON_AddItemToObject(req, "sampling", sampling);
        sampling = NULL;
    }
    if (cJSON_GetArraySize(gen)) {
        cJSON_AddItemToObject(req, "generation", gen);
        gen = NULL;
    }
    if (deadline > 0)
        cJSON_AddNumberToObject(req, "deadline_s", deadline);
    cJSON *r = call_ok(c, req, 0);
    if (!r) {
        vg_ipc_sub_close(sub);
        rc = 1;
        goto out;
    }
    cJSON_Delete(r);
    if (no_wait) {
        printf("%s\n", jid);
        rc = 0;
        goto out;
    }
    signal(SIGINT, on_sigint);
    int tty = isatty(2);
    int expect = 0, cancel_sent = 0, progress_shown = 0;
    char *printed = calloc(1, 1);
    size_t printed_len = 0;
    cJSON *final = NULL;
    double last_poll = vg_now_ms();
    int failed_polls = 0;
    while (!final) {
        if (interrupted && !cancel_sent) {
            cJSON *cr = new_req("cancel");
            cJSON_AddStringToObject(cr, "job", jid);
            cJSON_Delete(call(c, cr, 1));
            cancel_sent = 1;
            fprintf(stderr, "\nvigil: cancelling job %s\n", jid);
        }
        char *msg = NULL;
        const char *t, *p;
        size_t pl;
        int got = vg_ipc_sub_recv(sub, 250, &msg, &t, &p, &pl);
        if (got == 0) {
            const char *kind = t + strlen(topic);
            cJSON *ev = cJSON_ParseWithLength(p, pl);
            if (ev && !strcmp(kind, "token")) {
                int seq = (int)jnum(ev, "seq", -1);
                const char *txt = jstr(ev, "text", "");
                if (seq == expect && printed) {
                    if (progress_shown && tty) {
                        fprintf(stderr, "\r\033[K");
                        progress_shown = 0;
                    }
                    size_t tl = strlen(txt);
                    char *np = realloc(printed, printed_len + tl + 1);
                    if (np) {
                        printed = np;
                        memcpy(printed + printed_len, txt, tl + 1);
                        printed_len += tl;
                        if (!c->json) {
                            fputs(txt, stdout);
                            fflush(stdout);
                        }
                    }
                }
                expect = seq + 1 > expect ? seq + 1 : expect;
            } else if (ev && !strcmp(kind, "progress")) {
                if (tty && expect == 0) {
                    fprintf(stderr, "\r\033[K[%s %d%%]", jstr(ev, "stage", "?"),
                            (int)jnum(ev, "percent", 0));
                    progress_shown = 1;
                }
            } else if (ev && !strcmp(kind, "done")) {
                final = ev;
                ev = NULL;
            }
            cJSON_Delete(ev);
            free(msg);
            last_poll = vg_now_ms();
        } else {
            free(msg);
            /* Quiet for a second: maybe the done event was lost; ask for the job. */
            if (vg_now_ms() - last_poll > 1000) {
                last_poll = vg_now_ms();
                cJSON *j = fetch_job(c, jid, 1);
                if (!j && ++failed_polls >= 3) {
                    fprintf(stderr, "\nvigil: lost contact with vigild; the job is %s\n", jid);
                    break;
                }
                if (j)
                    failed_polls = 0;
                if (j && is_final_state(jstr(j, "state", "")))
                    final = j;
                else
                    cJSON_Delete(j);
            }
        }
    }
    if (progress_shown && tty)
        fprintf(stderr, "\r\033[K");
    vg_ipc_sub_close(sub);
    rc = final ? finish(c, final, printed) : 1;
    cJSON_Delete(final);
    free(printed);
out:
    cJSON_Delete(sampling);
    cJSON_Delete(gen);
    return rc;
usage:
    fprintf(stderr, "usage: vigil ask VIDEO QUESTION [OPTIONS] (see vigil --help)\n");
    rc = 2;
    goto out;
}

static int cmd_info(client *c)
{
    cJSON *r = call_ok(c, new_req("info"), 0);
    if (!r)
        return 1;
    if (c->json) {
        print_json(r);
        cJSON_Delete(r);
        return 0;
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(r, "model");
    const cJSON *cap = cJSON_GetObjectItemCaseSensitive(r, "capabilities");
    printf("vigild %s (protocol %d)\n", jstr(r, "version", "?"), (int)jnum(r, "protocol", 0));
    printf("model: %s, %.0f parameters, %d layers, hidden %d, vision depth %d\n",
           jstr(m, "name", "?"), jnum(m, "params", 0), (int)jnum(m, "layers", 0),
           (int)jnum(m, "hidden_size", 0), (int)jnum(m, "vision_depth", 0));
    printf("capabilities: video %s, streams %s\n",
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cap, "video")) ? "yes" : "no",
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cap, "streams")) ? "yes" : "no");
    printf("jobs: %d queued, %d running, %d retained; up %.0f s\n", (int)jnum(r, "queue_depth", 0),
           (int)jnum(r, "jobs_running", 0), (int)jnum(r, "jobs_retained", 0),
           jnum(r, "uptime_s", 0));
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(r, "state");
    if (sd && !strcmp(jstr(sd, "journal", "ok"), "failing"))
        printf("state: journal FAILING for %.0f s: %s; %d results not on disk, new jobs refused\n",
               VG_MAX((double)time(NULL) - jnum(sd, "since", 0), 0.0), jstr(sd, "error", "?"),
               (int)jnum(sd, "undurable_jobs", 0));
    else if (sd)
        printf("state: journal ok%s\n",
               jnum(sd, "stream_logs_failing", 0) > 0 ? ", some stream logs failing" : "");
    cJSON_Delete(r);
    return 0;
}

static int cmd_jobs(client *c)
{
    cJSON *r = call_ok(c, new_req("jobs"), 0);
    if (!r)
        return 1;
    if (c->json) {
        print_json(r);
        cJSON_Delete(r);
        return 0;
    }
    printf("%-28s %-10s %-20s %s\n", "job", "state", "created", "video");
    const cJSON *j;
    cJSON_ArrayForEach(j, cJSON_GetObjectItemCaseSensitive(r, "jobs"))
    {
        time_t t = (time_t)jnum(j, "created", 0);
        char when[32];
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
        printf("%-28s %-10s %-20s %s\n", jstr(j, "job", "?"), jstr(j, "state", "?"), when,
               jstr(j, "video", ""));
    }
    cJSON_Delete(r);
    return 0;
}

static int cmd_job(client *c, const char *id)
{
    cJSON *j = fetch_job(c, id, 0);
    if (!j)
        return 1;
    int rc = 0;
    const char *state = jstr(j, "state", "?");
    if (c->json) {
        print_json(j);
    } else {
        printf("job %s: %s", jstr(j, "job", "?"), state);
        if (!is_final_state(state))
            printf(" (%s %d%%)", jstr(j, "stage", "?"), (int)jnum(j, "percent", 0));
        else if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "durable")))
            printf(" (not on disk yet)");
        printf("\nvideo: %s\nquestion: %s\n\n%s\n\n", jstr(j, "video", ""), jstr(j, "question", ""),
               jstr(j, "text", ""));
        print_events(cJSON_GetObjectItemCaseSensitive(j, "events"));
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        if (cJSON_IsObject(e))
            printf("error: %s: %s\n", jstr(e, "code", ""), jstr(e, "message", ""));
    }
    if (is_final_state(state) && strcmp(state, "completed") != 0)
        rc = 1;
    cJSON_Delete(j);
    return rc;
}

static int cmd_cancel(client *c, const char *id)
{
    cJSON *req = new_req("cancel");
    cJSON_AddStringToObject(req, "job", id);
    cJSON *r = call_ok(c, req, 0);
    if (!r)
        return 1;
    if (c->json)
        print_json(r);
    else
        printf("job %s: %s\n", jstr(r, "job", id), jstr(r, "state", "?"));
    cJSON_Delete(r);
    return 0;
}

int main(int argc, char **argv)
{
    client c;
    memset(&c, 0, sizeof c);
    c.timeout_ms = 10000;
    const char *rt = getenv("VIGIL_RUNTIME_DIR");
    if (!rt || !*rt)
        rt = DEFAULT_RUNTIME;
    const char *cmd_url = NULL, *events_url = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("vigil %s\n", VG_VERSION);
            return 0;
        } else if (!strcmp(a, "--json")) {
            c.json = 1;
        } else if (!strcmp(a, "--runtime-dir") && v) {
            rt = v, i++;
        } else if (!strcmp(a, "--cmd-url") && v) {
            cmd_url = v, i++;
        } else if (!strcmp(a, "--events-url") && v) {
            events_url = v, i++;
        } else if (!strcmp(a, "--timeout") && v) {
            c.timeout_ms = atoi(v), i++;
            if (c.timeout_ms <= 0) {
                fprintf(stderr, "vigil: bad --timeout\n");
                return 2;
            }
        } else {
            fprintf(stderr, "vigil: unknown option %s (see vigil --help)\n", a);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    snprintf(c.cmd_url, sizeof c.cmd_url, "%s", cmd_url ? cmd_url : "");
    snprintf(c.events_url, sizeof c.events_url, "%s", events_url ? events_url : "");
    if (!cmd_url)
        snprintf(c.cmd_url, sizeof c.cmd_url, "ipc://%s/vigil.cmd", rt);
    if (!events_url)
        snprintf(c.events_url, sizeof c.events_url, "ipc://%s/vigil.events", rt);
    const char *cmd = argv[i];
    int sub_argc = argc - i;
    char **sub_argv = argv + i;
    /* Per-command --json after the command name. */
    for (int k = 1; k < sub_argc; k++)
        if (!strcmp(sub_argv[k], "--json") && strcmp(cmd, "ask") != 0 && strcmp(cmd, "plan"))
            c.json = 1;
    int positional = 0;
    const char *arg1 = NULL;
    for (int k = 1; k < sub_argc; k++)
        if (strcmp(sub_argv[k], "--json") != 0) {
            positional++;
            if (!arg1)
                arg1 = sub_argv[k];
        }
    if (!strcmp(cmd, "plan"))
        return vg_cmd_plan(sub_argc, sub_argv);
    if (!strcmp(cmd, "ask"))
        return cmd_ask(&c, sub_argc, sub_argv);
    if (!strcmp(cmd, "eval")) {
        vg_eval_conn ec = {c.cmd_url, c.timeout_ms, c.json, c.events_url};
        return vg_cmd_eval(sub_argc, sub_argv, &ec);
    }
    vg_watch_conn wc = {c.cmd_url, c.events_url, c.timeout_ms, c.json};
    int src = vg_cmd_stream(sub_argc, sub_argv, &wc); /* watch, unwatch, streams, events */
    if (src >= 0)
        return src;
    if (!strcmp(cmd, "info") && positional == 0)
        return cmd_info(&c);
    if (!strcmp(cmd, "jobs") && positional == 0)
        return cmd_jobs(&c);
    if (!strcmp(cmd, "job") && positional == 1)
        return cmd_job(&c, arg1);
    if (!strcmp(cmd, "cancel") && positional == 1)
        return cmd_cancel(&c, arg1);
    fprintf(stderr, "vigil: unknown command or wrong arguments: %s (see vigil --help)\n", cmd);
    return 2;
}
