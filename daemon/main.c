/*
 * main.c: vigild, the vigil daemon.
 *
 * Start-up (main thread, before the loop): options and config file, runtime and state
 * directories, a lock file so only one daemon owns the sockets, the journal (load, compact, open),
 * the model (loaded once), the job manager's threads, the sockets, signals and the systemd
 * watchdog. Then the libuv loop runs on this thread: it answers requests (never blocking: job work
 * happens on the job manager's threads, journal writes on the journal's thread) and publishes
 * events. SIGHUP re-reads the config and applies the keys that can change live; SIGTERM/SIGINT
 * cancel the running jobs, wait for their results to be journaled, close everything and exit 0,
 * or EX_IOERR (74) when some results could not be written to the journal (the disk was full or
 * failing and stayed so: those results are lost, and the exit status says so).
 */
#define _DEFAULT_SOURCE /* realpath, flock */
#include "bus.h"
#include "daemon.h"
#include "dispatch.h"
#include "http.h"
#include "ipc.h"
#include "jobs.h"
#include "model.h"
#include "mqtt.h"
#include "cluster.h"
#include "pipeline.h"
#include "streams.h"

#include "common.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define MOD            "vigild"
#define EXIT_UNDURABLE 74 /* EX_IOERR: stopped with results that are not on disk */
#define DEFAULT_CONFIG "/etc/vigil/vigild.conf"
#define MAX_OVERRIDES  64

typedef struct daemon_ctx {
    uv_loop_t *loop;
    vg_daemon_config cfg;
    const char *config_path;
    int config_explicit;
    const char *overrides[MAX_OVERRIDES][2]; /* key, value from the command line */
    int n_overrides;
    vg_model *model;
    vg_jobs *jobs;
    vg_streams *streams;
    vg_infer_gate *gate; /* clip jobs and streams take turns on the model */
    int idle_pending;    /* managers still stopping */
    vg_ipc_server *ipc;
    vg_bus *bus;          /* publication fan-out: the PUB socket and the other doors */
    vg_dispatch dispatch; /* the one request path of every door */
    vg_http *http;        /* the HTTP door; NULL unless http_url is set */
    vg_mqtt *mqtt;        /* the MQTT bridge; NULL unless mqtt_url is set */
    vg_cluster *cluster;  /* cluster mode; NULL unless cluster_url is set */
    vg_journal *journal;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t watchdog;
    int watchdog_on;
    int stopping;
    double started_ms;
    int exit_code;
} daemon_ctx;

/* Writes text indented by `indent` columns, wrapped at word boundaries before column 100. */
static void print_wrapped(FILE *f, int indent, const char *text)
{
    const int width = 100 - indent;
    while (*text) {
        int n = (int)strlen(text);
        if (n > width) {
            n = width;
            while (n > 0 && text[n] != ' ')
                n--;
            if (n == 0)
                n = width;
        }
        fprintf(f, "%*s%.*s\n", indent, "", n, text);
        text += n;
        while (*text == ' ')
            text++;
    }
}

/* --help: one entry per configuration key, generated from the table in daemon/config.c. */
static void usage_key(const vg_daemon_config_key *k, void *opaque)
{
    FILE *f = opaque;
    fprintf(f, "  %s (%s, default '%s', %s)\n", k->name, k->type_name, k->default_value,
            k->live ? "live" : "restart");
    char line[512];
    if (k->type == VG_CFG_TYPE_STRING)
        snprintf(line, sizeof line, "%s", k->description);
    else
        snprintf(line, sizeof line, "%s Takes %s.", k->description, k->expect);
    print_wrapped(f, 6, line);
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: vigild [OPTIONS]\n"
        "\n"
        "The vigil daemon: answers questions about videos with a Qwen3-VL model. It loads the\n"
        "model once, listens on a command socket (REQ/REP) and an event socket (PUB) and runs\n"
        "jobs on worker threads. It stays in the foreground and logs to stderr (journald).\n"
        "\n"
        "options:\n"
        "  --config FILE       configuration file (default " DEFAULT_CONFIG "; a missing default\n"
        "                      file is not an error)\n"
        "  --model DIR         model directory (config key model_dir)\n"
        "  --runtime-dir DIR   sockets and lock file (config key runtime_dir)\n"
        "  --state-dir DIR     the job journal (config key state_dir)\n"
        "  --log-level LEVEL   err, warning, notice, info or debug (config key log_level)\n"
        "  --set KEY=VALUE     any configuration key below (repeatable)\n"
        "  --foreground        accepted for compatibility; vigild never forks\n"
        "  --check-config      print the effective configuration and exit\n"
        "  --help              this text\n"
        "  --version           the version\n"
        "\n"
        "signals: SIGHUP reloads the config and applies the keys marked live below; the\n"
        "others keep their value until a restart. SIGTERM and SIGINT stop gracefully (running\n"
        "jobs end as cancelled). Command-line settings override the file, also after a reload.\n"
        "\n"
        "configuration keys (`key = value` in the file, or --set KEY=VALUE; systemd/vigild.conf\n"
        "in the source tree is an example that documents them all):\n");
    vg_daemon_config_foreach(NULL, usage_key, f);
}

static int add_override(daemon_ctx *d, const char *key, const char *value)
{
    if (d->n_overrides >= MAX_OVERRIDES) {
        fprintf(stderr, "vigild: too many overrides\n");
        return -1;
    }
    d->overrides[d->n_overrides][0] = key;
    d->overrides[d->n_overrides][1] = value;
    d->n_overrides++;
    return 0;
}

/* Builds a config from defaults, the file and the overrides. */
static int build_config(daemon_ctx *d, vg_daemon_config *c, char *err, size_t errlen)
{
    vg_daemon_config_defaults(c);
    char e2[600];
    int rc = vg_daemon_config_load(c, d->config_path, e2, sizeof e2);
    if (rc == VG_ENOENT && !d->config_explicit)
        rc = 0;
    if (rc < 0)
        return vg_fail(err, errlen, rc, "%s", e2);
    for (int i = 0; i < d->n_overrides; i++) {
        rc = vg_daemon_config_set(c, d->overrides[i][0], d->overrides[i][1], e2, sizeof e2);
        if (rc < 0)
            return vg_fail(err, errlen, rc, "command line: %s", e2);
    }
    if ((rc = vg_daemon_config_finish(c, e2, sizeof e2)) < 0)
        return vg_fail(err, errlen, rc, "%s", e2);
    if ((rc = vg_ipc_check_url(c->cmd_url, c->allow_remote, e2, sizeof e2)) < 0 ||
        (rc = vg_ipc_check_url(c->events_url, c->allow_remote, e2, sizeof e2)) < 0 ||
        (c->tcp_cmd_url[0] &&
         (rc = vg_ipc_check_url(c->tcp_cmd_url, c->allow_remote, e2, sizeof e2)) < 0) ||
        (c->tcp_events_url[0] &&
         (rc = vg_ipc_check_url(c->tcp_events_url, c->allow_remote, e2, sizeof e2)) < 0))
        return vg_fail(err, errlen, rc, "%s", e2);
    if ((rc = vg_http_check_config(c, e2, sizeof e2)) < 0)
        return vg_fail(err, errlen, rc, "%s", e2);
    if ((rc = vg_mqtt_check_config(c, e2, sizeof e2)) < 0)
        return vg_fail(err, errlen, rc, "%s", e2);
    if ((rc = vg_cluster_check_config(c, e2, sizeof e2)) < 0)
        return vg_fail(err, errlen, rc, "%s", e2);
    return 0;
}

/* The HTTP door spools uploaded videos under the state directory; its jobs must pass the media
 * policy like any other, so that directory is one more media root while the door is open. */
static void add_spool_root(vg_daemon_config *c)
{
    if (!c->http_url[0])
        return;
    char dir[VG_CFG_STR + 32], real[PATH_MAX];
    vg_http_spool_dir(c, dir, sizeof dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return;
    if (c->n_media_roots >= VG_CFG_MAX_ROOTS || !realpath(dir, real) ||
        strlen(real) >= VG_CFG_STR) {
        vg_log(VG_LOG_WARNING, MOD, "cannot add %s to the media roots: uploads will be refused",
               dir);
        return;
    }
    memcpy(c->media_roots[c->n_media_roots++], real, strlen(real) + 1);
}

/* --check-config: every key as `key = value`, in the table's order. */
static void print_key(const vg_daemon_config_key *k, void *opaque)
{
    printf("%s = %s\n", k->name, k->value);
}

/* ===================================================================================================
 * Requests (loop thread).
 */
static void add_info(daemon_ctx *d, cJSON *o)
{
    const vg_model_info *mi = vg_model_get_info(d->model);
    cJSON_AddStringToObject(o, "version", VG_VERSION);
    cJSON_AddNumberToObject(o, "protocol", VG_PROTO_VERSION);
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    cJSON_AddStringToObject(m, "name", mi->name);
    cJSON_AddNumberToObject(m, "params", (double)mi->n_params);
    cJSON_AddNumberToObject(m, "hidden_size", mi->hidden_size);
    cJSON_AddNumberToObject(m, "layers", mi->n_layers);
    cJSON_AddNumberToObject(m, "heads", mi->n_heads);
    cJSON_AddNumberToObject(m, "kv_heads", mi->n_kv_heads);
    cJSON_AddNumberToObject(m, "vocab_size", mi->vocab_size);
    cJSON_AddNumberToObject(m, "vision_depth", mi->vision_depth);
    cJSON_AddNumberToObject(m, "vision_hidden", mi->vision_hidden);
    cJSON_AddNumberToObject(m, "max_position_embeddings", mi->max_position_embeddings);
    cJSON_AddStringToObject(m, "weight_type", vg_weight_type_name(mi->weight_type));
    cJSON *cap = cJSON_AddObjectToObject(o, "capabilities");
    cJSON_AddBoolToObject(cap, "video", mi->has_vision);
    cJSON_AddBoolToObject(cap, "streams", d->streams != NULL);
    cJSON_AddNumberToObject(o, "streams", vg_streams_count(d->streams));
    int q, r, n;
    vg_jobs_counts(d->jobs, &q, &r, &n);
    cJSON_AddNumberToObject(o, "queue_depth", q);
    cJSON_AddNumberToObject(o, "jobs_running", r);
    cJSON_AddNumberToObject(o, "jobs_retained", n);
    cJSON *lim = cJSON_AddObjectToObject(o, "limits");
    cJSON_AddNumberToObject(lim, "max_queued_jobs", d->cfg.max_queued_jobs);
    cJSON_AddNumberToObject(lim, "max_message_size", (double)d->cfg.max_message_size);
    cJSON_AddNumberToObject(lim, "max_new_tokens", d->cfg.max_new_tokens_limit);
    cJSON_AddNumberToObject(lim, "job_deadline_s", d->cfg.job_deadline_s);
    cJSON_AddNumberToObject(lim, "result_ttl_s", d->cfg.result_ttl_s);
    cJSON_AddNumberToObject(lim, "max_concurrent_decodes", d->cfg.max_concurrent_decodes);
    cJSON_AddNumberToObject(o, "uptime_s", (vg_now_ms() - d->started_ms) / 1000.0);
    vg_ipc_stats st;
    vg_ipc_server_get_stats(d->ipc, &st);
    cJSON *is = cJSON_AddObjectToObject(o, "ipc");
    cJSON_AddNumberToObject(is, "received", (double)st.received);
    cJSON_AddNumberToObject(is, "replied", (double)st.replied);
    cJSON_AddNumberToObject(is, "published", (double)st.published);
    cJSON_AddNumberToObject(is, "dropped_replies", (double)st.dropped_replies);
    cJSON_AddNumberToObject(is, "fd_trips", (double)st.fd_trips);
    /* Durability of the state directory (docs/protocol.md, "Durability"). */
    vg_journal_status js;
    vg_journal_get_status(d->journal, &js);
    cJSON *sd = cJSON_AddObjectToObject(o, "state");
    cJSON_AddStringToObject(sd, "journal", js.failing ? "failing" : "ok");
    if (js.failing) {
        cJSON_AddStringToObject(sd, "error", js.message);
        cJSON_AddNumberToObject(sd, "since", js.since);
    }
    cJSON_AddNumberToObject(sd, "undurable_jobs", vg_jobs_undurable(d->jobs));
    cJSON_AddNumberToObject(sd, "pending_records", (double)js.pending);
    cJSON_AddNumberToObject(sd, "lost_records", (double)js.lost);
    cJSON_AddNumberToObject(sd, "stream_logs_failing", vg_streams_logs_failing(d->streams));
    vg_mqtt_add_info(d->mqtt, o);
    vg_cluster_add_info(d->cluster, o);
}

static void dispatch_add_info(cJSON *o, void *opaque)
{
    add_info(opaque, o);
}

/* A command socket request's reply (now, or later for what is read from disk). */
static void ipc_done(char *reply, size_t len, void *opaque)
{
    vg_ipc_req *req = opaque;
    if (!reply) {
        vg_ipc_req_drop(req);
        return;
    }
    vg_ipc_reply(req, reply, len);
    free(reply);
}

/* The command socket's door: the request goes through the one request path (dispatch.c). */
static void on_request(vg_ipc_server *srv, vg_ipc_req *req, const char *data, size_t len,
                       void *opaque)
{
    daemon_ctx *d = opaque;
    vg_dispatch_request_async(&d->dispatch, data, len, ipc_done, req);
}

/* The PUB socket is one sink of the bus. */
static void ipc_sink(const char *topic, const char *payload, size_t len, void *opaque)
{
    daemon_ctx *d = opaque;
    if (d->ipc)
        vg_ipc_publish(d->ipc, topic, payload, len);
}

/* ===================================================================================================
 * Signals, watchdog, shutdown.
 */
static void on_closed_noop(uv_handle_t *h) {}

static void on_jobs_idle(void *opaque)
{
    daemon_ctx *d = opaque;
    /* Every job has its final record queued for the journal; close the loop's handles. */
    vg_ipc_server_stop(d->ipc);
    d->ipc = NULL;
    vg_http_stop(d->http);
    vg_mqtt_stop(d->mqtt);
    vg_cluster_stop(d->cluster);
    uv_close((uv_handle_t *)&d->sigterm, on_closed_noop);
    uv_close((uv_handle_t *)&d->sigint, on_closed_noop);
    uv_close((uv_handle_t *)&d->sighup, on_closed_noop);
    if (d->watchdog_on)
        uv_close((uv_handle_t *)&d->watchdog, on_closed_noop);
}

/* The job and stream managers stop in parallel; the last one to finish closes the rest. */
static void on_part_idle(void *opaque)
{
    daemon_ctx *d = opaque;
    if (--d->idle_pending == 0)
        on_jobs_idle(d);
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    daemon_ctx *d = h->data;
    if (d->stopping) {
        vg_log(VG_LOG_NOTICE, MOD, "signal %d again; still waiting for jobs to stop", signum);
        return;
    }
    d->stopping = 1;
    vg_log(VG_LOG_NOTICE, MOD, "signal %d: stopping (cancelling running jobs)", signum);
    vg_sd_notify("STOPPING=1\nSTATUS=Stopping");
    d->idle_pending = 2;
    vg_cluster_drain(d->cluster); /* the cluster jobs cancelled now go back to the queue */
    vg_streams_shutdown(d->streams, on_part_idle, d);
    vg_jobs_shutdown(d->jobs, on_part_idle, d);
}

/* A key that differs after a reload: the side effects of the live keys that have one, and a warning
 * for the restart-only ones. Returning an error keeps the key's old value. */
static int on_reload_key(const vg_daemon_config_key *k, const vg_daemon_config *next, void *opaque)
{
    daemon_ctx *d = opaque;
    if (!k->live) {
        vg_log(VG_LOG_WARNING, MOD, "reload: %s changed to '%s'; it needs a restart", k->name,
               k->value);
        return 0;
    }
    if (!strcmp(k->name, "max_message_size")) {
        int rc = vg_ipc_server_set_max_message(d->ipc, next->max_message_size);
        if (rc < 0) {
            vg_log(VG_LOG_WARNING, MOD, "reload: cannot apply max_message_size: %s",
                   vg_strerror(rc));
            return rc;
        }
    } else if (!strcmp(k->name, "log_level")) {
        vg_log_set_level(next->log_level);
    } else if (!strcmp(k->name, "result_ttl_s")) {
        vg_journal_set_ttl(d->journal, next->result_ttl_s);
    }
    vg_log(VG_LOG_INFO, MOD, "reload: %s = %s", k->name, k->value);
    return 0;
}

static void on_hup(uv_signal_t *h, int signum)
{
    daemon_ctx *d = h->data;
    vg_daemon_config c;
    char err[768];
    vg_sd_notify("RELOADING=1");
    int rc = build_config(d, &c, err, sizeof err);
    if (rc >= 0)
        add_spool_root(&c);
    if (rc < 0) {
        vg_log(VG_LOG_ERR, MOD, "reload failed, keeping the old configuration: %s", err);
        vg_sd_notify("READY=1");
        return;
    }
    int restart = vg_daemon_config_apply_live(&d->cfg, &c, on_reload_key, d);
    vg_log(VG_LOG_NOTICE, MOD, "configuration reloaded%s",
           restart ? " (some changes need a restart)" : "");
    vg_sd_notify("READY=1\nSTATUS=Serving (configuration reloaded)");
}

static void on_watchdog(uv_timer_t *t)
{
    vg_sd_notify("WATCHDOG=1");
}

/* ===================================================================================================
 * Start-up.
 */
static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[VG_CFG_STR];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, mode) && errno != EEXIST)
        return -errno;
    return 0;
}

static void on_journal_record(const char *json, size_t len, void *opaque)
{
    vg_jobs_restore(opaque, json, len);
}

static int open_journal(daemon_ctx *d, char *err, size_t errlen)
{
    char path[VG_CFG_STR + 32];
    snprintf(path, sizeof path, "%s/jobs.journal", d->cfg.state_dir);
    vg_journal_stats st;
    int rc = vg_journal_load(path, on_journal_record, d->jobs, &st, err, errlen);
    if (rc < 0)
        return rc;
    if (st.torn || st.bad_crc)
        vg_log(VG_LOG_WARNING, MOD, "journal %s: skipped %zu torn and %zu damaged lines", path,
               st.torn, st.bad_crc);
    char **lines = NULL;
    size_t n = 0;
    if ((rc = vg_jobs_snapshot(d->jobs, &lines, &n)) < 0)
        return vg_fail(err, errlen, rc, "cannot compact the journal");
    rc = vg_journal_rewrite(path, lines, n, err, errlen);
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
    if (rc < 0) {
        /* A full or failing disk: the journal as it is still holds every result (the rewrite
         * only compacts), so serve them and append to it; the next start compacts. */
        vg_log(VG_LOG_WARNING, MOD, "journal %s not compacted, appending to it as it is: %s", path,
               err);
        rc = 0;
    }
    vg_log(VG_LOG_INFO, MOD, "journal %s: %zu records read, %zu jobs kept", path, st.good, n);
    /* Compact while running too: after as many appends as 2000 plus the records kept. */
    vg_journal_compaction cp = {
        .key = "job", .time = "finished", .ttl_s = d->cfg.result_ttl_s, .every = 2000};
    if ((rc = vg_journal_open(path, &cp, &d->journal, err, errlen)) < 0)
        return rc;
    vg_jobs_set_journal(d->jobs, d->journal);
    vg_streams_set_journal(d->streams, d->journal);
    return 0;
}

static int take_lock(const vg_daemon_config *c, int *fd_out, char *err, size_t errlen)
{
    char path[VG_CFG_STR + 32];
    snprintf(path, sizeof path, "%s/vigild.lock", c->runtime_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return vg_fail(err, errlen, -errno, "cannot open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return vg_fail(err, errlen, VG_EBUSY, "another vigild is running (lock %s is held)", path);
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0 && write(fd, pid, (size_t)n) < 0)
        vg_log(VG_LOG_WARNING, MOD, "cannot write the pid into %s", path);
    *fd_out = fd;
    return 0;
}

static int load_model(daemon_ctx *d, char *err, size_t errlen)
{
    struct stat st;
    if (stat(d->cfg.model_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return vg_fail(err, errlen, VG_ENOENT,
                       "model directory '%s' does not exist; set model_dir in the config or pass "
                       "--model DIR (a small test model: vigil-model random --preset tiny --out "
                       "DIR)",
                       d->cfg.model_dir);
    vg_model_params mp = vg_model_default_params();
    mp.n_threads = d->cfg.inference_threads;
    char e2[600] = "";
    /* The configuration table accepts only the names the engine knows (auto, f32, bf16, q8_0). */
    if (vg_weight_type_parse(d->cfg.weight_type, &mp.weight_type) < 0)
        return vg_fail(err, errlen, VG_EINVAL, "weight_type '%s' is not a weight type",
                       d->cfg.weight_type);
    double t0 = vg_now_ms();
    int rc = vg_model_load(d->cfg.model_dir, &mp, &d->model, e2, sizeof e2);
    if (rc < 0)
        return vg_fail(err, errlen, rc, "cannot load the model from '%s': %s", d->cfg.model_dir,
                       e2[0] ? e2 : vg_strerror(rc));
    const vg_model_info *mi = vg_model_get_info(d->model);
    vg_log(VG_LOG_INFO, MOD, "model %s loaded in %.0f ms (%zu parameters, %d layers, %s weights)",
           mi->name, vg_now_ms() - t0, mi->n_params, mi->n_layers,
           vg_weight_type_name(mi->weight_type));
    if (!mi->has_vision)
        return vg_fail(err, errlen, VG_EMODEL, "the model in '%s' has no vision tower",
                       d->cfg.model_dir);
    return 0;
}

static int parse_args(daemon_ctx *d, int argc, char **argv, int *check_only)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--version")) {
            printf("vigild %s (protocol %d)\n", VG_VERSION, VG_PROTO_VERSION);
            exit(0);
        } else if (!strcmp(a, "--foreground") || !strcmp(a, "-f")) {
            continue;
        } else if (!strcmp(a, "--check-config")) {
            *check_only = 1;
            continue;
        }
        if (!val) {
            fprintf(stderr, "vigild: unknown option or missing value: %s\n", a);
            return -1;
        }
        i++;
        int rc = 0;
        if (!strcmp(a, "--config")) {
            d->config_path = val;
            d->config_explicit = 1;
        } else if (!strcmp(a, "--model")) {
            rc = add_override(d, "model_dir", val);
        } else if (!strcmp(a, "--runtime-dir")) {
            rc = add_override(d, "runtime_dir", val);
        } else if (!strcmp(a, "--state-dir")) {
            rc = add_override(d, "state_dir", val);
        } else if (!strcmp(a, "--log-level")) {
            rc = add_override(d, "log_level", val);
        } else if (!strcmp(a, "--set")) {
            char *eq = strchr(val, '=');
            if (!eq) {
                fprintf(stderr, "vigild: --set needs KEY=VALUE\n");
                return -1;
            }
            *eq = 0;
            rc = add_override(d, val, eq + 1);
        } else {
            fprintf(stderr, "vigild: unknown option %s (see vigild --help)\n", a);
            return -1;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static daemon_ctx d;
    d.config_path = DEFAULT_CONFIG;
    int check_only = 0;
    if (parse_args(&d, argc, argv, &check_only) < 0)
        return 2;
    char err[1024];
    if (build_config(&d, &d.cfg, err, sizeof err) < 0) {
        fprintf(stderr, "vigild: %s\n", err);
        return 2;
    }
    if (check_only) {
        vg_daemon_config_foreach(&d.cfg, print_key, NULL);
        return 0;
    }
    vg_log_set_level(d.cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    d.started_ms = vg_now_ms();
    int rc, lock_fd = -1;
    if ((rc = mkdir_p(d.cfg.runtime_dir, 0755)) < 0 || (rc = mkdir_p(d.cfg.state_dir, 0700)) < 0) {
        vg_log(VG_LOG_ERR, MOD, "cannot create %s or %s: %s", d.cfg.runtime_dir, d.cfg.state_dir,
               vg_strerror(rc));
        return 1;
    }
    add_spool_root(&d.cfg);
    if (take_lock(&d.cfg, &lock_fd, err, sizeof err) < 0) {
        vg_log(VG_LOG_ERR, MOD, "%s", err);
        return 1;
    }
    vg_pipe_log_init();
    vg_sd_notify("STATUS=Loading the model");
    if (load_model(&d, err, sizeof err) < 0) {
        vg_log(VG_LOG_ERR, MOD, "%s", err);
        return 1;
    }
    d.loop = uv_default_loop();
    if (vg_infer_gate_create(&d.gate) < 0) {
        vg_log(VG_LOG_ERR, MOD, "out of memory");
        return 1;
    }
    vg_jobs_params jp = {d.loop, d.model, &d.cfg, NULL, d.gate};
    if (vg_jobs_create(&jp, &d.jobs, err, sizeof err) < 0) {
        vg_log(VG_LOG_ERR, MOD, "%s", err);
        return 1;
    }
    vg_streams_params sp = {d.loop, d.model, &d.cfg, d.gate};
    if (vg_streams_create(&sp, &d.streams, err, sizeof err) < 0) {
        vg_log(VG_LOG_ERR, MOD, "%s", err);
        return 1;
    }
    if (open_journal(&d, err, sizeof err) < 0) {
        vg_log(VG_LOG_ERR, MOD, "journal: %s", err);
        return 1;
    }
    vg_ipc_server_params ip;
    memset(&ip, 0, sizeof ip);
    int nc = 0, ne = 0;
    ip.cmd_urls[nc++] = d.cfg.cmd_url;
    ip.event_urls[ne++] = d.cfg.events_url;
    if (d.cfg.tcp_cmd_url[0])
        ip.cmd_urls[nc++] = d.cfg.tcp_cmd_url;
    if (d.cfg.tcp_events_url[0])
        ip.event_urls[ne++] = d.cfg.tcp_events_url;
    ip.socket_mode = d.cfg.socket_mode;
    ip.max_message_size = d.cfg.max_message_size;
    ip.on_request = on_request;
    ip.opaque = &d;
    if (vg_ipc_server_start(d.loop, &ip, &d.ipc, err, sizeof err) < 0) {
        vg_log(VG_LOG_ERR, MOD, "%s", err);
        return 1;
    }
    if (vg_bus_create(&d.bus) < 0 || vg_bus_add_sink(d.bus, ipc_sink, &d) < 0) {
        vg_log(VG_LOG_ERR, MOD, "out of memory");
        return 1;
    }
    d.dispatch = (vg_dispatch){&d.cfg, d.jobs, d.streams, dispatch_add_info, &d, NULL};
    vg_jobs_set_bus(d.jobs, d.bus);
    vg_streams_set_bus(d.streams, d.bus);
    if (d.cfg.http_url[0]) {
        vg_http_params hp = {d.loop, &d.cfg, &d.dispatch, d.bus};
        if (vg_http_start(&hp, &d.http, err, sizeof err) < 0) {
            vg_log(VG_LOG_ERR, MOD, "%s", err);
            return 1;
        }
    }
    if (d.cfg.mqtt_url[0]) {
        vg_mqtt_params mp = {d.loop, &d.cfg, &d.dispatch, d.bus, vg_model_get_info(d.model)->name};
        if (vg_mqtt_start(&mp, &d.mqtt, err, sizeof err) < 0) {
            vg_log(VG_LOG_ERR, MOD, "%s", err);
            return 1;
        }
    }
    if (d.cfg.cluster_url[0]) {
        vg_cluster_params cp = {d.loop, &d.cfg, d.jobs, d.bus, d.streams};
        if (vg_cluster_start(&cp, &d.cluster, err, sizeof err) < 0) {
            vg_log(VG_LOG_ERR, MOD, "cluster: %s", err);
            return 1;
        }
        d.dispatch.cluster = d.cluster;
    }
    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sigint);
    uv_signal_init(d.loop, &d.sighup);
    d.sigterm.data = d.sigint.data = d.sighup.data = &d;
    uv_signal_start(&d.sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_stop_signal, SIGINT);
    uv_signal_start(&d.sighup, on_hup, SIGHUP);
    uint64_t wd = vg_sd_watchdog_usec();
    if (wd > 0) {
        uv_timer_init(d.loop, &d.watchdog);
        uint64_t ms = VG_MAX(wd / 2000, 1);
        uv_timer_start(&d.watchdog, on_watchdog, ms, ms);
        d.watchdog_on = 1;
    }
    vg_log(VG_LOG_NOTICE, MOD, "vigild %s ready: commands on %s, events on %s", VG_VERSION,
           d.cfg.cmd_url, d.cfg.events_url);
    vg_sd_notify("READY=1\nSTATUS=Serving");
    uv_run(d.loop, UV_RUN_DEFAULT);

    vg_streams_destroy(d.streams);
    vg_jobs_destroy(d.jobs);
    vg_infer_gate_destroy(d.gate);
    vg_http_free(d.http);
    vg_mqtt_free(d.mqtt);
    vg_cluster_free(d.cluster);
    vg_bus_destroy(d.bus);
    if (vg_journal_close(d.journal) < 0) {
        vg_log(VG_LOG_ERR, MOD, "stopping with results that are not on disk (exit status %d)",
               EXIT_UNDURABLE);
        d.exit_code = EXIT_UNDURABLE;
    }
    vg_model_free(d.model);
    uv_loop_close(d.loop);
    vg_log(VG_LOG_NOTICE, MOD, "stopped");
    close(lock_fd);
    return d.exit_code;
}
