/*
 * streams_internal.h: what the stream files share (private to daemon/streams.c, stream_reader.c and
 * stream_infer.c; nothing else includes it). The public side is streams.h.
 *
 * The files and their threads:
 *  - streams.c: the loop side (the table, watch/unwatch/streams/events, publishing, the ring of
 *    recent records, freeing) and the janitor thread that closes removed streams' logs.
 *  - stream_reader.c: one reader thread per stream (its log loaded at start, open, reconnect,
 *    pacing, sampling by presentation time, pairs for the inference thread).
 *  - stream_infer.c: the one stream inference thread (the KV window of every stream, answers,
 *    event transitions).
 * Workers talk to the loop only through the messages below (smsg), posted to the streams' mailbox
 * (mailbox.h) with post_publish, post_state, post_simple or, for M_LOADED, vg_mailbox_post.
 * Functions shared between these files keep short unprefixed names, as file-local ones do
 * (STYLE.md): they never leave the stream code, and the code moved out of streams.c reads as it
 * did.
 */
#ifndef VG_DAEMON_STREAMS_INTERNAL_H
#define VG_DAEMON_STREAMS_INTERNAL_H

#include "streams.h"

#include "common.h"
#include "mailbox.h"
#include "qa.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define EV_RING_CAP 1024 /* recent records kept per stream for `events` */
#define ANSWER_MAX  8192 /* bytes of one answer kept by the inference thread */

enum stream_state { SS_CONNECTING, SS_LIVE, SS_STALLED, SS_RECONNECTING, SS_ENDED };

/* One pair of sampled frames (one temporal slice), patchified by the reader; owned by the pair
 * queue while queued, then by the inference thread, which frees it with pair_free. */
typedef struct pair_item {
    float *patches; /* [gh*gw][cols] */
    size_t rows, cols;
    int gh, gw;
    double t0, t1; /* stream seconds of the two frames */
    double wall;   /* unix seconds of the second frame (see reader_main) */
    int paced;     /* a file read at its own rate (wall: when it was due), else a live input */
} pair_item;

/* The times of one pair the stream's video-QA session holds (the session holds its vision output
 * and tokens). */
typedef struct win_entry {
    double t0, t1, wall; /* the pair's frames in stream seconds; wall: see pair_item */
    int paced;
} win_entry;

/* A sampled frame kept as JPEG for event snapshots (written by the reader, read by the loop, both
 * under stream.snap_mu), and an event's snapshot (loop-owned). */
typedef struct snap_frame {
    double t; /* stream seconds */
    uint8_t *jpeg;
    size_t len;
} snap_frame;

typedef struct snap_kept {
    unsigned long long seq; /* the `event` record's sequence number */
    uint8_t *jpeg;
    size_t len;
} snap_kept;

#define SNAP_RING_MAX 256 /* frames kept for snapshots per stream, at most */

typedef struct question {
    char *text;
    char label[64]; /* vg_stream_label of the question */
    vg_stream_track track;
    double start_wall;
} question;

typedef struct stream stream;
typedef struct vg_streams vg_streams;

/* One watched stream. Its fields fall in four ownership zones; which thread is running decides
 * which fields it may touch:
 *  - immutable after watch: set by the loop before the reader thread starts, then read by every
 *    thread (everything a worker needs from the configuration is copied here: workers never read
 *    vg_streams.cfg, which SIGHUP rewrites);
 *  - counters: atomics written by the workers and read by the loop (`streams`);
 *  - loop-owned: only the loop thread touches them;
 *  - inference-thread-owned: only the stream inference thread touches them (from the stream's
 *    first step to infer_release).
 * The loop frees a stream (stream_free) only after its reader has posted M_READER_DONE, the
 * inference thread M_INFER_DONE and the janitor M_LOG_CLOSED (when it had a log to close). */
struct stream {
    /* Immutable after watch (read by every thread). */
    vg_streams *ss;
    char name[VG_ID_MAX + 1];
    char *url, *resolved;
    int is_url;
    vg_media_policy *policy; /* what the reader may open, as configured at watch time */
    size_t log_max;          /* stream_log_max_records at watch time; 0 = no limit */
    int stall_ms;            /* stream_stall_timeout_s at watch time (workers never read cfg) */
    char rtsp_transport[8];  /* "tcp", "udp" or "auto" (the watch's rtsp_transport) */
    int max_new_tokens;      /* stream_max_new_tokens at watch time */
    double fps, window_s, update_s, min_window_s, speed;
    vg_track_params track;       /* the event tracker's knobs (stream_track.c) */
    long max_pixels, min_pixels; /* per frame (smart_resize budget) */
    int nq;
    char *qtext[VG_STREAM_MAX_QUESTIONS];
    atomic_int stop;
    vg_queue *pairs;   /* reader -> inference */
    int snapshots_max; /* stream_snapshots_max at watch time; 0 = no snapshots */
    /* Snapshots: the reader keeps the newest sampled frames as JPEG (snap_*, under snap_mu); the
     * loop copies the one at an event's start into kept (its newest snapshots_max). */
    pthread_mutex_t snap_mu;
    snap_frame *snap;
    size_t snap_cap, snap_n, snap_head;
    snap_kept *kept;
    size_t kept_n, kept_head;
    atomic_int eof; /* the reader reached the end of a file (its last pair is queued) */
    unsigned long long first_seq; /* cluster mode: the first record's seq (0: after the log) */
    /* The log, named at watch time (the reader loads and opens it). */
    char log_dir[VG_CFG_STR + 16];  /* <state_dir>/streams */
    char log_path[VG_CFG_STR + 96]; /* <log_dir>/<name>.events */

    /* Counters (written by workers, read by the loop). */
    atomic_long frames, n_pairs, dropped, answers, reconnects, rebases, discontinuities;
    /* Answers' events the tracker refused (stream_track.c): stated end first, outside the window
     * by a pair or more, contradicted by the answer; clamped: overshoot of less than a pair;
     * suppressed: runs shorter than the minimum duration. */
    atomic_long ev_reversed, ev_out_of_window, ev_contradictory, ev_clamped, ev_suppressed;
    _Atomic double win_start, win_end;

    /* Loop-owned. */
    enum stream_state state;
    char detail[256];
    double created;
    unsigned long long next_seq;
    char *ring[EV_RING_CAP]; /* recent records, JSON */
    unsigned long long ring_seq[EV_RING_CAP];
    size_t ring_n, ring_head; /* oldest at ring_head */
    vg_journal *log;
    int reader_running, infer_running, removing, loaded;
    int closing; /* the janitor owns log until M_LOG_CLOSED */
    pthread_t reader;
    stream *next;

    /* Inference-thread-owned. */
    int i_ready, i_failed;
    vg_qa *qa;         /* the KV window: head and pairs (qa.h) */
    win_entry *ring_w; /* the times of the pairs the session holds, oldest at w_head */
    size_t w_cap, w_n, w_head;
    size_t cap_tokens, max_suffix;
    double next_update_t;  /* stream seconds: the next answer is due once the window reaches it */
    double rebase_ms_pair; /* the least cost of a prefill per pair so far (align_base) */
    int finished;          /* the file ended and the open events were ended */
    int fresh;             /* pairs since the last answer */
    question q[VG_STREAM_MAX_QUESTIONS];
    stream *i_next;
};

/* Worker -> loop messages. The poster owns a message until it posts it; vg_mailbox_post always
 * takes it (the loop frees it with msg_free once handled, the mailbox on failure). */
enum msg_type { M_LOADED, M_PUBLISH, M_READER_DONE, M_INFER_DONE, M_LOG_CLOSED };

typedef struct smsg {
    enum msg_type type;
    stream *s;
    char kind[16]; /* PUBLISH: state, answer or event */
    cJSON *payload;
    /* LOADED */
    vg_journal *log;
    unsigned long long last_seq;
    char **lines;
    unsigned long long *line_seq;
    size_t n_lines;
} smsg;

struct vg_streams {
    /* Set at create; read by every thread. */
    uv_loop_t *loop;
    vg_model *model;
    const vg_model_info *mi;
    vg_infer_gate *gate;
    /* Loop-owned (cfg: the loop only, the workers use the stream's snapshot). */
    const vg_daemon_config *cfg;
    vg_bus *bus;    /* borrowed: where records are published */
    vg_mailbox *mb; /* workers -> loop (create and close on the loop; posted to by workers) */
    vg_queue *janitor_q;
    vg_journal *journal; /* the daemon's job journal: new watches wait while the state disk fails */
    int n_reading;       /* `events` of unwatched streams being read from disk (thread pool) */
    stream *head;
    int n_streams;
    int stopping, closed;
    vg_streams_hooks hooks; /* cluster mode (streams.h); zero otherwise */
    void (*on_idle)(void *);
    void *on_idle_opaque;
    /* The inference thread's list, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    stream *i_head;
    int quit, work;
    pthread_t infer, janitor;
    int infer_started, janitor_started;
};

static inline double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline void pair_free(pair_item *p)
{
    if (!p)
        return;
    free(p->patches);
    free(p);
}

/* streams.c: messages to the loop (any worker thread). post_publish takes payload (a best-effort
 * message: dropped, payload freed, when memory runs out); post_state publishes and logs a state
 * change; post_simple sends a message without payload that must arrive (a thread's last word about
 * the stream: allocated with vg_mailbox_alloc_must). */
void post_publish(stream *s, const char *kind, cJSON *payload);
void post_state(stream *s, enum stream_state st, const char *detail);
void post_simple(stream *s, enum msg_type t);
/* streams.c: keeps the sampled frame at stream time t (rgb, w x h) as JPEG for event snapshots
 * (the reader thread; a no-op when the stream keeps no snapshots). */
void snap_keep_frame(stream *s, double t, const uint8_t *rgb, int w, int h);

/* stream_reader.c: the reader thread of one stream (arg: the stream). */
void *reader_main(void *arg);

/* stream_infer.c: the stream inference thread (arg: the vg_streams). */
void *infer_main(void *arg);

#endif
