/*
 * vg_testd.h: the shared harness of the end-to-end tests (tests/daemon/test_e2e.c,
 * tests/eval/test_eval_e2e.c, tests/streams/test_streams_e2e.c, tests/streams/test_streams_soak.c):
 * shell commands with captured output, one request/reply on the command socket, small cJSON
 * accessors, the random tiny test model (`vigil-model random`), starting vigild with
 * --runtime-dir/--state-dir and waiting until it answers, stopping it, and the ffmpeg loopback
 * stream sources. Compiled into each of those tests (it is not a test itself); it uses the
 * VG_BINARY_DIR definition of the test target.
 */
#ifndef VG_TESTD_H
#define VG_TESTD_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <sys/types.h>

/* Whether BIN/daemon/vigild, BIN/tools/vigil and BIN/tools/vigil-model are executable and ffmpeg
 * runs: 0 when all are there, -1 when one is missing (the caller says so). */
int vg_testd_need_tools(void);

/* Makes a temporary directory from tmpl (a mkdtemp template such as "/tmp/vg-e2e-XXXXXX") in
 * dir and fills the caller's buffers with the paths under it: model = dir/model, media = dir/media
 * (created), rt = dir/run, st = dir/state, cmd_url = ipc://rt/vigil.cmd. Returns 0 or -1. */
int vg_testd_tmpdir(const char *tmpl, char dir[256], char model[320], char media[320], char rt[320],
                    char st[320], char cmd_url[400]);

/* Sleeps ms milliseconds. */
void vg_testd_sleep_ms(int ms);

/* Runs a shell command (printf-style); captures up to cap-1 bytes of its stdout into out (if out
 * is not NULL; NUL-terminated, the rest is read and dropped). Returns the exit status, or -1 when
 * it could not run or did not exit normally. */
int vg_testd_sh(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* One request/reply on a fresh REQ socket to url, waiting up to timeout_ms. Returns the parsed
 * reply (the caller owns it: cJSON_Delete), or NULL on a timeout or a reply that is not JSON. */
cJSON *vg_testd_call(const char *url, const char *req, size_t len, int timeout_ms);

/* Whether r is a reply with "ok": true (r may be NULL). */
int vg_testd_is_ok(const cJSON *r);

/* The string member k of o, or "" (never NULL). Borrowed from o: valid while o lives. */
const char *vg_testd_jstr(const cJSON *o, const char *k);

/* The number member k of o, or -1. */
double vg_testd_jnum(const cJSON *o, const char *k);

/* Writes text to path (created or truncated). Returns 0, or -1 on an error. */
int vg_testd_write_file(const char *path, const char *text);

/* Makes the random tiny test model in out, with dir as scratch (dir/model0, dir/config-small.json).
 * The random tokenizer has fewer ids than the preset's vocab_size and ids past the tokenizer cannot
 * be detokenized, so the model uses vocab_size = the tokenizer's size. Returns 0 or -1. */
int vg_testd_make_model(const char *dir, const char *out);

/* How vg_testd_start runs vigild. Strings are borrowed for the duration of the call. */
typedef struct vg_testd_spec {
    const char *log;     /* stdout and stderr of vigild are appended here */
    const char *conf;    /* --config */
    const char *model;   /* --model */
    const char *rt;      /* --runtime-dir */
    const char *st;      /* --state-dir */
    const char *media;   /* --set media_roots=media */
    const char *cmd_url; /* where the readiness `info` goes */
    const char *log_level;
    const char *const *sets; /* more --set KEY=VALUE arguments, NULL-terminated; may be NULL */
    /* Non-NULL: the child gets NOTIFY_SOCKET=notify_name and WATCHDOG_USEC=200000 (pings every
     * 100 ms) without WATCHDOG_PID, and vigild is ready once READY=1 arrives on notify_fd (or after
     * 20 s) and then answers one `info`. NULL: `info` is polled every 50 ms for up to 30 s. */
    const char *notify_name;
    int notify_fd;
    int clear_notify_env; /* the child runs without NOTIFY_SOCKET and WATCHDOG_USEC */
    int call_timeout_ms;  /* of each readiness `info` */
} vg_testd_spec;

/* Forks and execs BIN/daemon/vigild as spec says; *pid is its pid while it runs (-1 when it exited
 * before it was ready). Returns 0 once it answers `info`, else -1 (it may still run: see *pid). */
int vg_testd_start(const vg_testd_spec *spec, pid_t *pid);

/* vg_testd_start as the streams tests run vigild (log dir/vigild.log, allowed_protocols=udp,http,
 * stream_stall_timeout_s=1.5, stream_max_new_tokens=32, max_streams=4, log level info, `info`
 * polled with a 10 s timeout). */
int vg_testd_start_streams(const char *dir, const char *conf, const char *model, const char *rt,
                           const char *st, const char *media, const char *cmd_url, pid_t *pid);

/* SIGTERM to *pid and waits up to polls x 10 ms. Returns its exit status (128 + signal when
 * signalled) and sets *pid to -1. On a timeout it calls on_timeout when given, else SIGKILLs and
 * reaps *pid and sets it to -1; returns -1 then, and when *pid was not running. */
int vg_testd_stop(pid_t *pid, int polls, void (*on_timeout)(void));

/* Starts an ffmpeg that sends lavfi (NULL: a 160x120 test pattern at 10 fps) as MPEG-TS to
 * udp://127.0.0.1:port in real time, in the first free (<= 0) slot of children[n]. Returns the
 * slot, or -1 (no free slot: the ffmpeg is killed). */
int vg_testd_start_source(pid_t *children, int n, int port, const char *lavfi);

/* SIGKILLs and reaps children[slot] if it runs, and clears the slot. */
void vg_testd_kill_source(pid_t *children, int slot);

/* Kills and reaps every source in children[n] and then *daemon (SIGKILL), setting it to -1. */
void vg_testd_kill_all(pid_t *children, int n, pid_t *daemon);

/* Forks argv (execvp) with stdin from /dev/null and stdout and stderr appended to log. Returns the
 * pid, or -1 when fork fails (a failed exec exits 127). */
pid_t vg_testd_spawn(const char *log, char *const argv[]);

/* Whether something accepts TCP connections on 127.0.0.1:port. */
int vg_testd_port_open(int port);

/* Starts nats-server with JetStream, its file store in store_dir, on 127.0.0.1:port, logging to
 * log, and waits (up to 10 s) until the port accepts connections. Returns the pid (the caller stops
 * it with vg_testd_kill_wait), or -1 with a line on stderr when it did not come up (then killed).
 */
pid_t vg_testd_nats_start(const char *store_dir, int port, const char *log);

/* Sends sig to *pid when it is > 0, reaps it, and sets *pid to -1. */
void vg_testd_kill_wait(pid_t *pid, int sig);

/* Whether dir/vigild.log holds a sanitizer report; if so prints it to stderr and returns -1. */
int vg_testd_check_log(const char *dir);

#endif
