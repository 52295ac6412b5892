/*
 * daemon.h: the testable parts of vigild (library vg_daemon_core): configuration, the request
 * protocol, the result journal, the systemd notification helper, the inference gate and the event
 * tracker of live streams (plus the worker->loop mailbox, in mailbox.h because it needs libuv).
 * main.c, jobs.c and the stream files build the daemon from these.
 *
 * Threads: the config and protocol functions are pure (any thread; each object belongs to one
 * thread at a time). A vg_journal's append runs on the loop thread and never blocks; its writes and
 * fsyncs happen on the journal's own thread. Errors are negative VG_E* codes with a sentence in
 * err[errlen].
 */
#ifndef VG_DAEMON_H
#define VG_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ===================================================================================================
 * Configuration: `key = value` lines, '#' comments, blank lines. One table in daemon/config.c is
 * the source of truth: each key is one row (name, type, bounds, default, storage, live or
 * restart-only, description) and every function below walks it. systemd/vigild.conf documents every
 * key (a unit test checks both directions and the [live] marks).
 */
#define VG_CFG_MAX_ROOTS 16
#define VG_CFG_STR       1024

typedef struct vg_daemon_config {
    char model_dir[VG_CFG_STR];
    char weight_type[16];         /* auto, f32, bf16 or q8_0 (restart-only) */
    char runtime_dir[VG_CFG_STR]; /* default /run/vigil */
    char state_dir[VG_CFG_STR];   /* default /var/lib/vigil */
    char cmd_url[VG_CFG_STR];     /* default ipc://<runtime_dir>/vigil.cmd */
    char events_url[VG_CFG_STR];  /* default ipc://<runtime_dir>/vigil.events */
    char tcp_cmd_url[VG_CFG_STR]; /* optional tcp://HOST:PORT */
    char tcp_events_url[VG_CFG_STR];
    int allow_remote; /* tcp on non-loopback addresses */
    int socket_mode;  /* default 0660 */
    int log_level;    /* VG_LOG_* */
    size_t max_message_size;
    int max_queued_jobs;        /* queued + running jobs before `busy` */
    int max_concurrent_decodes; /* decode threads (restart to change) */
    int inference_threads;      /* BLAS threads of the inference thread; 0 = all CPUs */
    int max_new_tokens_limit;   /* per-job token budget ceiling */
    int default_max_new_tokens; /* when the request gives none */
    double job_deadline_s;      /* ceiling and default of a job's wall-clock deadline */
    double result_ttl_s;        /* how long finished results stay retrievable */
    int max_frames_limit;       /* ceiling for a request's nframes / max_frames */
    long max_pixels_limit;      /* ceiling for a request's per-frame max_pixels */
    char media_roots[VG_CFG_MAX_ROOTS][VG_CFG_STR]; /* realpath()'d */
    int n_media_roots;
    char allowed_protocols[256]; /* URL schemes accepted for media, comma-separated */
    /* live streams (daemon/streams.c) */
    int max_streams;               /* streams watched at once */
    double stream_stall_timeout_s; /* no frame for this long: stalled, reconnect */
    int stream_max_new_tokens;     /* token budget of one standing-question answer */
    int stream_log_max_records;    /* a stream's log keeps its newest this many records */
    int stream_snapshots_max;      /* JPEG snapshots of `started` events kept per stream */
    /* HTTP door (daemon/http.c; docs/http.md) */
    char http_url[VG_CFG_STR];        /* http(s)://HOST:PORT; empty: no HTTP server */
    char http_tls_cert[VG_CFG_STR];   /* PEM certificate chain (https) */
    char http_tls_key[VG_CFG_STR];    /* PEM private key (https) */
    char http_token_file[VG_CFG_STR]; /* bearer token file; empty: no token */
    int http_max_connections;         /* requests in progress at once; more get 503 */
    size_t http_max_upload;           /* chat completion bodies (inline videos and frames) */
    double http_timeout_s;            /* to receive a request's headers and body */
    char http_www_dir[VG_CFG_STR];    /* the web page's files; empty: no page */
    /* MQTT bridge (daemon/mqtt.c; docs/mqtt.md) */
    char mqtt_url[VG_CFG_STR];               /* mqtt://HOST[:PORT] or mqtts://; empty: no bridge */
    char mqtt_protocol[8];                   /* "5" or "3.1.1" */
    char mqtt_client_id[128];                /* empty: vigild-<hostname> */
    char mqtt_prefix[128];                   /* topic prefix, default "vigil/" */
    char mqtt_username[256];                 /* empty: none */
    char mqtt_password_file[VG_CFG_STR];     /* the password, read at start; empty: none */
    char mqtt_ca_file[VG_CFG_STR];           /* mqtts: CA bundle (empty: the system's) */
    char mqtt_cert_file[VG_CFG_STR];         /* mqtts: client certificate (PEM) */
    char mqtt_key_file[VG_CFG_STR];          /* mqtts: its private key (PEM) */
    int mqtt_keepalive_s;                    /* MQTT keepalive */
    int mqtt_queue_max;                      /* QoS 1 messages kept until acknowledged */
    size_t mqtt_queue_max_bytes;             /* and their bytes */
    char mqtt_discovery_prefix[128];         /* Home Assistant discovery; empty: none */
    char mqtt_frigate_questions[VG_CFG_STR]; /* '|'-separated; empty: no Frigate consumer */
    char mqtt_frigate_url[VG_CFG_STR];       /* Frigate's base URL (http://frigate:5000) */
    char mqtt_frigate_topic[128];            /* default frigate/reviews */
    /* the event tracker's defaults (stream_track.c; a watch request may override them) */
    int stream_event_confirm;
    double stream_event_min_duration_s, stream_event_hold_s, stream_event_merge_gap_s;
    /* Cluster mode (daemon/cluster.c; docs/cluster.md) */
    char cluster_url[VG_CFG_STR]; /* nats://HOST[:PORT][,...] or tls://; empty: one node */
    char cluster_node[128];       /* this node's name; empty: <hostname>-<pid> */
    char cluster_username[256];   /* empty: none */
    char cluster_password_file[VG_CFG_STR]; /* the password, read at start; empty: none */
    char cluster_creds_file[VG_CFG_STR];    /* NATS .creds (JWT + nkey seed); empty: none */
    char cluster_ca_file[VG_CFG_STR];       /* tls://: CA bundle (empty: the system's) */
    char cluster_cert_file[VG_CFG_STR];     /* tls://: client certificate (PEM) */
    char cluster_key_file[VG_CFG_STR];      /* tls://: its private key (PEM) */
    int cluster_max_jobs;                   /* clip jobs this node pulls and runs at once */
    double cluster_ack_wait_s;              /* silence after which a job is redelivered */
    double cluster_lease_ttl_s;             /* a stream lease's life without renewal */
} vg_daemon_config;

/* How a key's value is written and stored. */
typedef enum vg_daemon_config_type {
    VG_CFG_TYPE_STRING,    /* text of at most max bytes */
    VG_CFG_TYPE_ENUM,      /* one of `choices` (stored as text) */
    VG_CFG_TYPE_INT,       /* integer in [min, max]; 0x and 0 prefixes, K/M/G binary suffixes */
    VG_CFG_TYPE_LONG,      /* the same, stored as a long */
    VG_CFG_TYPE_SIZE,      /* a size in bytes, same syntax, stored as a size_t */
    VG_CFG_TYPE_DOUBLE,    /* decimal number in [min, max] */
    VG_CFG_TYPE_BOOL,      /* yes/no, true/false, on/off, 1/0 */
    VG_CFG_TYPE_MODE,      /* octal file mode in [min, max] */
    VG_CFG_TYPE_LOG_LEVEL, /* err, warning, notice, info, debug, or 3 to 7 */
    VG_CFG_TYPE_PATHS      /* comma-separated absolute paths, at most max of them */
} vg_daemon_config_type;

/* One key as vg_daemon_config_foreach and vg_daemon_config_apply_live show it. The strings are
 * borrowed: static ones live as long as the program, `expect` and `value` only for the callback. */
typedef struct vg_daemon_config_key {
    const char *name;           /* as in the file and in --set */
    vg_daemon_config_type type; /* see above */
    const char *type_name;      /* "integer", "string", ... for --help */
    double min, max;            /* bounds of numbers; max bytes of a string, max paths */
    const char *const *choices; /* VG_CFG_TYPE_ENUM: the values, NULL-terminated; else NULL */
    const char *default_value;  /* the built-in default as written in the file ("": empty) */
    const char *expect;         /* the values it takes, as a phrase ("an integer from 1 to 9") */
    const char *value;          /* its value in the config walked, as --check-config prints it */
    int live;                   /* 1: SIGHUP applies it; 0: it changes only on a restart */
    const char *description;    /* one or two sentences */
} vg_daemon_config_key;

/* Fills c with the built-in defaults: each row's default parsed as if it came from the file
 * (runtime /run/vigil, state /var/lib/vigil, model models/demo or VG_DEFAULT_MODEL_DIR). Any
 * thread; cannot fail. */
void vg_daemon_config_defaults(vg_daemon_config *c);

/* Applies one `key = value` setting to c (the file's lines and --set go through it). Returns 0;
 * VG_ENOENT for an unknown key ("unknown key 'k'"); VG_EINVAL for a value of the wrong type or out
 * of bounds, with a sentence in err naming the key, the value and what the key takes. On failure c
 * is unchanged. Any thread (c belongs to the caller). */
int vg_daemon_config_set(vg_daemon_config *c, const char *key, const char *value, char *err,
                         size_t errlen);

/* Parses text[len] (a config file's content) into c (on top of what c already holds). Errors name
 * the line; the lines before the bad one stay applied. */
int vg_daemon_config_parse(vg_daemon_config *c, const char *text, size_t len, char *err,
                           size_t errlen);

/* Reads and parses a file. A missing file is VG_ENOENT (callers decide whether that matters). */
int vg_daemon_config_load(vg_daemon_config *c, const char *path, char *err, size_t errlen);

/* Fills the derived defaults (socket URLs from runtime_dir), caps default_max_new_tokens at
 * max_new_tokens_limit, resolves the media roots with realpath() and checks allowed_protocols.
 * Returns 0, VG_EINVAL or VG_ENOENT (a media root that does not exist) with a sentence in err. */
int vg_daemon_config_finish(vg_daemon_config *c, char *err, size_t errlen);

/* Called once per key by vg_daemon_config_foreach, in table order (the order --check-config
 * prints). */
typedef void (*vg_daemon_config_key_cb)(const vg_daemon_config_key *key, void *opaque);

/* Calls cb for every key. With c, each key's `value` is c's value formatted as the file writes it;
 * with c NULL, `value` is NULL (enough for --help). Runs cb on the calling thread; cannot fail. */
void vg_daemon_config_foreach(const vg_daemon_config *c, vg_daemon_config_key_cb cb, void *opaque);

/* Returns 1 for a key SIGHUP applies live, 0 for a restart-only key, VG_ENOENT for an unknown
 * key. */
int vg_daemon_config_key_is_live(const char *key);

/* Told about one key whose value differs between the running config and the reloaded one, before
 * anything is copied; key->value is the new value. For a live key, returning 0 lets
 * vg_daemon_config_apply_live copy the new value and a negative code keeps the old one (a side
 * effect that failed, such as resizing the transport's message limit). For a restart-only key
 * (key->live == 0) the result is ignored and nothing is copied. */
typedef int (*vg_daemon_config_change_cb)(const vg_daemon_config_key *key,
                                          const vg_daemon_config *next, void *opaque);

/* The SIGHUP step: compares cur (running) with next (freshly built and finished) key by key, calls
 * cb (may be NULL) for each key that differs, and copies into cur exactly the live keys whose cb
 * returned 0. Restart-only keys keep cur's value. Returns how many restart-only keys differ (0 or
 * more). Runs on the thread that owns cur (vigild: the loop thread); next is only read. */
int vg_daemon_config_apply_live(vg_daemon_config *cur, const vg_daemon_config *next,
                                vg_daemon_config_change_cb cb, void *opaque);

/* ===================================================================================================
 * Protocol (docs/protocol.md): one JSON object per request, {"v":1,"op":...,"id":...}.
 */
enum vg_op {
    VG_OP_ASK = 1,
    VG_OP_INFO,
    VG_OP_JOB,
    VG_OP_JOBS,
    VG_OP_CANCEL,
    VG_OP_SYNC,
    VG_OP_WATCH,
    VG_OP_UNWATCH,
    VG_OP_STREAMS,
    VG_OP_EVENTS
};

#define VG_PROTO_VERSION        1
#define VG_ID_MAX               64   /* job ids and request ids (strings) */
#define VG_TEXT_MAX             8192 /* question / system */
#define VG_VIDEO_MAX            4096 /* path or URL */
#define VG_STREAM_MAX_QUESTIONS 8    /* standing questions per stream */

/* Error codes on the wire ("code" of an error reply). */
#define VG_WIRE_BAD_JSON    "bad_json"
#define VG_WIRE_BAD_REQUEST "bad_request"
#define VG_WIRE_BAD_VERSION "bad_version"
#define VG_WIRE_UNKNOWN_OP  "unknown_op"
#define VG_WIRE_TOO_LARGE   "too_large"
#define VG_WIRE_BUSY        "busy"
#define VG_WIRE_NOT_FOUND   "not_found"
#define VG_WIRE_FORBIDDEN   "forbidden"
#define VG_WIRE_LIMIT       "limit"
#define VG_WIRE_CONFLICT    "conflict"
#define VG_WIRE_SHUTTING    "shutting_down"
#define VG_WIRE_STORAGE     "storage" /* the state directory cannot be written */
#define VG_WIRE_INTERNAL    "internal"

/* Sampling knobs; negative or zero means "not given" unless noted. */
typedef struct vg_req_sampling {
    double fps;
    int nframes, min_frames, max_frames;
    long min_pixels, max_pixels;
    double total_pixels;
    int resized_height, resized_width;
    double start, end; /* < 0 = not given */
} vg_req_sampling;

/* Generation knobs; has_* says whether the request gave it. */
typedef struct vg_req_generation {
    int has_max_new_tokens, max_new_tokens;
    int has_temperature;
    double temperature;
    int has_top_k, top_k;
    int has_top_p;
    double top_p;
    int has_seed;
    uint64_t seed;
    int has_greedy, greedy;
    int has_repetition_penalty;
    double repetition_penalty;
    int has_presence_penalty;
    double presence_penalty;
} vg_req_generation;

typedef struct vg_request {
    enum vg_op op;
    char id[VG_ID_MAX + 1]; /* request id as text ("" when absent); numbers are printed */
    int has_id;
    char id_json[VG_ID_MAX + 24]; /* the id exactly as it should be echoed (JSON) */
    /* ask */
    char job[VG_ID_MAX + 1]; /* client-chosen job id, or "" (also: job/cancel target) */
    char *video;             /* malloc'd; NULL unless ask */
    char *question;          /* malloc'd */
    char *system;            /* malloc'd or NULL */
    vg_req_sampling sampling;
    vg_req_generation gen;
    double deadline_s; /* 0 = default */
    /* jobs; events */
    int limit;
    /* watch (the URL is in video), unwatch, events: the stream's name ("" when absent) */
    char name[VG_ID_MAX + 1];
    char *questions[VG_STREAM_MAX_QUESTIONS]; /* malloc'd */
    int n_questions;
    double stream_fps, window_s, update_s, min_window_s; /* 0 = default */
    double speed;                                        /* files: playback rate; 0 = native (1) */
    long stream_max_pixels;                              /* 0 = default */
    double since;                                        /* events: sequence numbers above this */
    /* watch: the RTSP lower transport, "tcp", "udp" or "auto"; "" = the default (tcp) */
    char rtsp_transport[8];
    /* The event tracker's knobs, each used where its bit of track_set is set (1 confirm,
     * 2 min_duration_s, 4 hold_s, 8 merge_gap_s), else the configuration's default. */
    unsigned track_set;
    long confirm;
    double min_duration_s, hold_s, merge_gap_s;
} vg_request;

typedef struct vg_proto_limits {
    size_t max_message_size;
    int max_new_tokens; /* ceiling */
    double deadline_s;  /* ceiling */
    int max_frames;     /* ceiling for nframes / max_frames */
    long max_pixels;    /* ceiling for max_pixels / min_pixels / resized area */
} vg_proto_limits;

/* Parses and validates data[len]. Invalid UTF-8, raw control characters in strings, \u0000 and a
 * key given twice in one object are refused (bad_request); so is an odd sampling.nframes.
 * On success fills *out (free with vg_request_clear) and returns 0.
 * On failure returns a negative code, sets *wire_code to one of VG_WIRE_*, writes a sentence
 * into err and, when the request id could be read, fills out->id_json so the error reply can echo
 * it (out needs no clearing then). */
int vg_proto_parse(const char *data, size_t len, const vg_proto_limits *lim, vg_request *out,
                   const char **wire_code, char *err, size_t errlen);
void vg_request_clear(vg_request *r);

/* Checks a job id: 1..VG_ID_MAX bytes of [A-Za-z0-9._-], not starting with '.'. */
int vg_proto_valid_job_id(const char *id);

/* Builds {"v":1,"id":<id_json>,"ok":false,"error":{"code":..,"message":..}} into a malloc'd
 * string (NULL on OOM). id_json may be NULL or "" (then "id":null). */
char *vg_proto_error_reply(const char *id_json, const char *code, const char *message, size_t *len);

/* ===================================================================================================
 * Media access policy.
 */
/* Decides whether video (a path or URL from a request) may be opened. A path (or file: URL) must
 * resolve with realpath() to a regular file under one of roots that can also be opened beneath
 * that root (vg_daemon_open_beneath: no link out of it); the resolved path goes into resolved. A
 * URL's scheme must be in allowed (comma-separated). *is_url tells which. Returns 0, VG_EPATH,
 * VG_EPROTOCOL, VG_ENOENT, VG_EINVAL or VG_EBUSY (no descriptor left) with a sentence. Anything
 * outside the roots gets the same VG_EPATH and sentence whether it exists or not; VG_ENOENT only
 * for an absent name whose directory resolves inside a root. Does a few stat() and O_PATH open
 * calls; opens nothing for reading. Any thread. */
int vg_daemon_media_check(const char *video, const char (*roots)[VG_CFG_STR], int n_roots,
                          const char *allowed, char *resolved, size_t resolved_len, int *is_url,
                          char *err, size_t errlen);

/* vg_daemon_media_check that also opens a local file for reading, beneath its root, and hands the
 * descriptor to the caller in *fd (O_RDONLY | O_CLOEXEC; the caller closes it, or gives it to
 * vg_media_policy_create); *fd is -1 for a URL. The file the caller then reads through *fd is the
 * file checked, whatever happens to its name afterwards. Same errors. Any thread. */
int vg_daemon_media_open(const char *video, const char (*roots)[VG_CFG_STR], int n_roots,
                         const char *allowed, char *resolved, size_t resolved_len, int *is_url,
                         int *fd, char *err, size_t errlen);

/* Opens rel (relative) beneath the directory rootfd without resolving anything outside it:
 * openat2() with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS (links inside the tree are followed, ".."
 * or a link leading out fails with EXDEV), or, where the kernel has no openat2 (ENOSYS, before
 * Linux 5.6; EPERM from a seccomp filter) or no_openat2 is set (tests), component by component with
 * O_NOFOLLOW (no link is followed at all; ".." fails with EXDEV; a link as the last component opens
 * the link itself under O_PATH, which the caller sees as not a regular file). flags are open(2)
 * flags; O_CLOEXEC is added. Returns the descriptor or -1 with errno. Any thread. */
int vg_daemon_open_beneath(int rootfd, const char *rel, int flags, int no_openat2);

/* What a job or stream may open, snapshotted from the configuration on the loop thread when the
 * request is accepted: worker threads read only the snapshot (SIGHUP rewrites the configuration
 * in place), and a reload applies to jobs and streams accepted after it. */
typedef struct vg_media_policy vg_media_policy;

/* Snapshot of cfg's media roots and allowed protocols for an input that vg_daemon_media_open
 * classified as a URL (is_url) or a local file, with the input's checked path and descriptor
 * (input_fd, -1 for none): the policy takes input_fd in every case (closed on failure and by
 * vg_media_policy_free). *out is the caller's: vg_media_policy_free(). */
int vg_media_policy_create(const vg_daemon_config *cfg, int is_url, const char *input, int input_fd,
                           vg_media_policy **out);
void vg_media_policy_free(vg_media_policy *p);

/* The protocol whitelist to hand to vg_media_open: "file" for a local file; the allowed protocols
 * plus tcp, tls and crypto (what they are built on) for a URL. Owned by p. */
const char *vg_media_policy_whitelist(const vg_media_policy *p);

/* vg_media_params.allow_url with opaque = the policy: a nested path or file: URL (an HLS playlist
 * under a media root naming a segment) must resolve under a media root, as a requested file must
 * (the pipeline checks other URLs against vg_media_policy_whitelist itself). Any thread. */
int vg_media_policy_allow(void *opaque, const char *url, char *err, size_t errlen);

/* vg_media_params.open_file with opaque = the policy: the input's own path gets a new descriptor
 * of the file its check opened (the descriptor travels from the request's check to the decoder),
 * any other path or file: URL (what a playlist names) is checked and opened beneath its root in
 * one step (vg_daemon_media_open). *fd is the caller's. Any thread. */
int vg_media_policy_open(void *opaque, const char *url, int *fd, char *err, size_t errlen);

/* ===================================================================================================
 * Journal: append-only JSON lines in the state directory, each "XXXXXXXX <json>\n" with the
 * CRC-32 of <json> in hex. A line without its newline (a torn write) or with a wrong checksum is
 * skipped on load, so a crash at any moment leaves a readable journal.
 */
typedef struct vg_journal vg_journal;

typedef struct vg_journal_stats {
    size_t good, torn, bad_crc;
} vg_journal_stats;

/* Calls cb for each intact line's JSON (NUL-terminated, borrowed for the call) in file order. A
 * missing file is not an error (no records). */
int vg_journal_load(const char *path, void (*cb)(const char *json, size_t len, void *opaque),
                    void *opaque, vg_journal_stats *stats, char *err, size_t errlen);

/* Writes lines[n] (JSON texts) as a new journal at path: a temporary file, fsync, rename, fsync of
 * the directory. Either the old or the new journal survives a crash. */
int vg_journal_rewrite(const char *path, char *const *lines, size_t n, char *err, size_t errlen);

/* How a journal is compacted. With key set, records are grouped by the string field `key`
 * (records without it are kept); of each group only the newest record stays, and it goes when its
 * number field `time` (Unix seconds; absent or 0 = still live) is more than ttl_s in the past.
 * Then, with keep_last > 0, only the newest keep_last of the records left stay. With key and time
 * NULL (keep_last must then be > 0) nothing is grouped or parsed: the journal is cut to its newest
 * keep_last records. Survivors keep their file order. */
typedef struct vg_journal_compaction {
    const char *key;  /* e.g. "job"; NULL = no grouping (time must be NULL too) */
    const char *time; /* e.g. "finished"; used only with key */
    double ttl_s;
    /* When the writer thread compacts; 0 = never. With key: once the appends since the last
     * compaction reach every plus the records it kept (so the work per append stays bounded
     * however many records are live). Without key: once they reach every, so a journal opened with
     * at most keep_last records holds fewer than keep_last + every once each batch is written. */
    size_t every;
    size_t keep_last; /* keep only the newest keep_last records, after the key rule if key is set;
                         0 = no limit */
} vg_journal_compaction;

/* Compacts the journal at path now (load, reduce, vg_journal_rewrite). *kept (optional) receives
 * the number of records left. VG_EINVAL when cp is NULL or names no rule (key and time must both be
 * set, or both be NULL with keep_last > 0). */
int vg_journal_compact(const char *path, const vg_journal_compaction *cp, size_t *kept, char *err,
                       size_t errlen);

/* Opens path for appending and starts the writer thread. cp (copied; its strings must outlive the
 * journal) turns on compaction by the writer thread when cp->every > 0; NULL = never. A cp with
 * every > 0 must be a rule vg_journal_compact accepts (VG_EINVAL otherwise). */
int vg_journal_open(const char *path, const vg_journal_compaction *cp, vg_journal **out, char *err,
                    size_t errlen);
/* Changes the compaction's ttl_s for later compactions (SIGHUP). Any thread. */
void vg_journal_set_ttl(vg_journal *j, double ttl_s);
/* Queues json[len] (copied) for appending; the writer thread writes and fsyncs it (batching what
 * is queued). Never blocks. On success the record's sequence number is vg_journal_last_seq(j).
 * Returns 0, VG_EAGAIN (queue full: the record is lost, logged and counted in `lost`), VG_ENOMEM
 * or VG_EINVAL (a newline in json). Loop thread (one appending thread per journal). */
int vg_journal_append(vg_journal *j, const char *json, size_t len);
/* The sequence number of the newest record appended (1 for the first; 0 before any or for NULL).
 * The appending thread. */
uint64_t vg_journal_last_seq(const vg_journal *j);

/* Where a journal's records stand. Records become durable in sequence order: every record with a
 * sequence number <= durable is written and fsync'd. While failing, the records after durable wait
 * in memory and the writer retries them with a backoff (100 ms doubling to 5 s); the first retry
 * that works clears failing and makes all of them durable. */
typedef struct vg_journal_status {
    int failing;       /* the last write or fsync failed; records wait in memory */
    int error;         /* its negative errno (-ENOSPC, -EDQUOT, -EIO) while failing, else 0 */
    char message[512]; /* while failing: "write to PATH failed: No space left on device" */
    double since;      /* while failing: Unix seconds of the first failure of this episode */
    uint64_t durable;  /* the newest sequence number on disk */
    size_t pending;    /* records taken by the writer and not on disk (after the last attempt) */
    uint64_t lost;     /* records dropped (the queue or the pending list was full) */
} vg_journal_status;

/* Copies the status. Any thread. NULL j gives a zeroed status. */
void vg_journal_get_status(vg_journal *j, vg_journal_status *st);

/* notify(opaque) runs on the writer thread each time `durable` advances or `failing` changes,
 * with the journal's lock held: it must only wake its owner (e.g. uv_async_send) and never call
 * into the journal. Replaces the previous callback; NULL removes it, and once this returns the
 * old callback is not running and will not run again. Any thread. */
void vg_journal_set_notify(vg_journal *j, void (*notify)(void *opaque), void *opaque);

/* Writes everything queued (one more try for records that wait after failures), fsyncs, stops the
 * thread and closes. Returns 0 when every record appended is on disk; otherwise the negative
 * errno of the last failure (or VG_EIO when records were dropped), and the records not written
 * are lost (logged). NULL is a no-op returning 0. */
int vg_journal_close(vg_journal *j);

/* CRC-32 (IEEE, as zlib's crc32). */
uint32_t vg_crc32(const void *data, size_t len);

/* ===================================================================================================
 * Events of one standing question of a live stream (stream_track.c; pure, any thread).
 * vg_event is pipeline.h's parsed event (start, end, label, flags); this library only reads it.
 *
 * Two steps per answer:
 *  1. vg_stream_track_check: the answer's events are checked against the window the model was
 *     asked about. A range stated end first (VG_EVENT_REVERSED), an answer that also denies
 *     presence (VG_EVENT_CONTRADICTED), a non-finite time, or a range that starts before the
 *     window or ends after it by a pair or more (tolerance) is rejected; a smaller overshoot is
 *     clamped to the window.
 *  2. vg_stream_track_update: the accepted ranges vote on a timeline of small bins. Every answer
 *     votes on each bin of its window (seen), "present" on those its ranges cover (yes). A bin is
 *     on when at least `confirm` answers said present and at least half of those that saw it did
 *     (so one answer never starts an event, and one answer bridging two events is outvoted by
 *     the windows that saw the gap alone). Runs of on bins closer than merge_gap are one event;
 *     an event is published (STARTED) once it lasts min_duration, its start refined (UPDATE) as
 *     later windows vote, and it ends (ENDED) once every bin up to hold after its last on bin has
 *     been seen by `confirm` answers without turning on. Times are the ones the model stated, in
 *     stream seconds, never the time of the answer.
 */
typedef struct vg_event vg_event;

typedef struct vg_track_params {
    int confirm;         /* answers stating a moment present before it counts (>= 1; default 2) */
    double min_duration; /* s: shorter events are never published (default 1) */
    double hold;         /* s: video without the event before it ends (default 2) */
    double merge_gap;    /* s: events separated by less are one (default 3) */
    double tolerance;    /* s: overshoot past the window that is clamped (one pair: 2 / fps) */
    double horizon;      /* s: how far back votes are kept (>= the window's length) */
} vg_track_params;

/* Defaults for a stream with the given window length and frame rate. */
vg_track_params vg_track_default_params(double window_s, double fps);

/* Why vg_stream_track_check rejected or changed events (counters it adds to). */
typedef struct vg_track_checks {
    long reversed;      /* stated end before start */
    long out_of_window; /* outside the window by a pair or more, or not finite */
    long contradictory; /* the answer also denies presence */
    long clamped;       /* overshoot of less than a pair, clamped to the window */
} vg_track_checks;

/* Copies the acceptable events of ev[n] (stream seconds) into out[n] (the caller's array, may be
 * ev itself), clamped to [win_start, win_end]; counts the rest in *c (optional). Returns how many
 * were kept, or VG_EINVAL. */
int vg_stream_track_check(const vg_event *ev, size_t n, double win_start, double win_end,
                          double tolerance, vg_event *out, vg_track_checks *c);

typedef struct vg_stream_track {
    vg_track_params p;
    /* The vote timeline: a ring of bins of VG_TRACK_BIN seconds; absolute bin b lives at
     * b % cap. Bins before lo are forgotten; hi is one past the newest voted bin. */
    unsigned short *yes, *seen;
    float *score; /* sum of the scores of the yes votes */
    size_t cap;
    long lo, hi;
    int active;        /* STARTED published, ENDED not yet */
    double start, end; /* the active event (stream seconds), as refined */
    double run_end;    /* the end of its run of on bins */
    double pub_start;  /* the start last published (STARTED or UPDATE) */
    double scan_from;  /* runs ending before this are done (published or suppressed) */
    double score_sum;  /* the active event's answers: sum and count of their scores */
    long score_n;
    long suppressed; /* runs shorter than min_duration, never published */
    /* The newest answers' accepted ranges with their windows (a ring of VG_TRACK_OBS): the
     * boundaries of an event are the medians of the starts and ends these state inside their
     * windows (a range that touches its window's edge says nothing about that boundary). */
    double (*obs)[4]; /* start, end, window start, window end */
    size_t obs_n, obs_head;
    char text[512]; /* the newest answer that stated something present (stream time) */
} vg_stream_track;

#define VG_TRACK_BIN 0.1 /* seconds per timeline bin */
#define VG_TRACK_OBS 256 /* answers' ranges kept for the boundaries */

enum { VG_TRANSITION_STARTED = 1, VG_TRANSITION_ENDED = 2, VG_TRANSITION_UPDATE = 3 };

typedef struct vg_stream_transition {
    int kind;          /* VG_TRANSITION_* */
    double start, end; /* stream seconds: the event's start and its latest end */
    double score;      /* mean vg_qa_answer.score of the answers that stated it (<= 0) */
    char text[512];    /* the newest answer that stated it (as given to the update) */
} vg_stream_transition;

#define VG_TRACK_MAX_OUT 8 /* transitions one update can give */

/* Prepares t with params p (copied; invalid values take the defaults' place). Returns 0,
 * VG_EINVAL or VG_ENOMEM. Free with vg_stream_track_free. */
int vg_stream_track_init(vg_stream_track *t, const vg_track_params *p);
void vg_stream_track_free(vg_stream_track *t);
/* Feeds one answer: ev[n], already checked (vg_stream_track_check: stream seconds, inside the
 * window), over the window [win_start, win_end], with the answer's score and its text for readers
 * (optional). Writes up to VG_TRACK_MAX_OUT transitions to out and returns how many, or VG_EINVAL.
 * NULL ev with n 0 is an answer that states nothing present. */
int vg_stream_track_update(vg_stream_track *t, const vg_event *ev, size_t n, double win_start,
                           double win_end, double score, const char *text,
                           vg_stream_transition *out);

/* Ends the active event, if any, where the answers last saw it (the stream has ended): writes an
 * ENDED transition to *out and returns 1, else returns 0 (VG_EINVAL for NULL arguments). */
int vg_stream_track_finish(vg_stream_track *t, vg_stream_transition *out);

/* A short label for events of a standing question: the thing it asks about ("When is the red box
 * visible?" -> "red box"), else the subject of the answer ("The red box is visible ..." -> "red
 * box"), else the question itself, cut to fit out[cap]. */
void vg_stream_label(const char *question, const char *answer, char *out, size_t cap);
/* Rewrites the answer text for a reader: every number the answer stated as a time of one of its
 * events (relative to the window base) becomes that time in stream seconds (base added), so
 * "visible from 13.2 to 20.2 seconds" with base 25 reads "from 38.2 to 45.2 seconds". out[cap]
 * always ends with NUL (truncated at a UTF-8 boundary). */
void vg_stream_text(const char *answer, const vg_event *ev, size_t n, double base, char *out,
                    size_t cap);

/* ===================================================================================================
 * Inference gate (infer_gate.c): a FIFO (ticket) lock that serializes the model's heavy
 * calls between the clip-job inference thread and the stream inference thread, so neither can
 * starve the other: each waits at most one unit of the other (one clip job's inference, or one
 * stream step: one pair's encode and prefill, or one round of answers). Any thread; NULL gates are
 * no-ops.
 */
typedef struct vg_infer_gate vg_infer_gate;
int vg_infer_gate_create(vg_infer_gate **out);
void vg_infer_gate_destroy(vg_infer_gate *g);
void vg_infer_gate_enter(vg_infer_gate *g);
void vg_infer_gate_leave(vg_infer_gate *g);

/* ===================================================================================================
 * systemd notification (sd_notify without libsystemd): NOTIFY_SOCKET may be a path or an abstract
 * socket ("@name"). Returns 0 when sent, 0 as well when NOTIFY_SOCKET is unset, or a negative
 * error. Never blocks (MSG_DONTWAIT).
 */
int vg_sd_notify(const char *state);
/* The watchdog interval in microseconds from WATCHDOG_USEC (checking WATCHDOG_PID), or 0. */
uint64_t vg_sd_watchdog_usec(void);

#ifdef __cplusplus
}
#endif
#endif
