/*
 * stream_watch.h: what the network-source stream tests (test_streams_keyframe.c,
 * test_streams_rtsp.c) share: a vigild on the bundled demo model (models/demo) in a temporary
 * directory with a subscriber on its event socket, the records that subscriber received, requests
 * on the command socket, and source processes (ffmpeg, the RTSP server) started and killed by pid.
 * Compiled into each of those tests; one daemon per test executable.
 */
#ifndef VG_TESTS_STREAM_WATCH_H
#define VG_TESTS_STREAM_WATCH_H

#include <cjson/cJSON.h>
#include <sys/types.h>

/* Paths of the running test: sw_dir (the temporary directory), sw_state (vigild's state dir),
 * sw_rt (its runtime dir, for `vigil --runtime-dir`). */
extern char sw_dir[256], sw_state[320], sw_rt[320];
/* Every record the subscriber received, in order (each with "_topic" added). */
extern cJSON *sw_seen;

/* Makes the temporary directory (tmpl: a mkdtemp template), starts vigild on the demo model with
 * --set sets (NULL-terminated, may be NULL) at log level log_level, and subscribes to "stream/".
 * Returns 0, or -1 with a line on stderr (the daemon's log printed). */
int sw_setup(const char *tmpl, const char *const *sets, const char *log_level);
/* Kills the sources still running, stops vigild (SIGTERM; it must exit 0), checks its log for
 * sanitizer reports, removes the directory (unless VG_KEEP_TMP is set). Returns 0 or -1. */
int sw_teardown(void);

/* One request on the command socket (10 s); the reply (caller deletes) or NULL. */
cJSON *sw_call(const char *req);
/* Receives records for ms milliseconds into sw_seen. */
void sw_pump(int ms);
/* Index of the first record at or after from of stream name with kind and (when not NULL) state;
 * -1 if none. sw_wait pumps until there is one or timeout_ms passed. */
int sw_find(int from, const char *name, const char *kind, const char *state);
int sw_wait(int from, const char *name, const char *kind, const char *state, int timeout_ms);
/* The stream's entry of a `streams` reply (caller deletes), or NULL. */
cJSON *sw_stream(const char *name);
/* Prints the records of stream name from index from (for a failing test's output). */
void sw_dump(int from, const char *name);
/* Whether the sequence numbers of stream name's records in sw_seen rise by one each (none
 * missing, none repeated); also how many there were. */
int sw_seq_contiguous(const char *name, int *count);

/* Starts argv (argv[0] looked up in PATH) with stdin from /dev/null and stdout and stderr appended
 * to sw_dir/<log>; returns its pid or -1. Up to 8 run at once; sw_teardown kills the rest. */
pid_t sw_spawn(const char *log, char *const argv[]);
/* SIGKILLs and reaps pid (when > 0). */
void sw_kill(pid_t pid);

#endif
