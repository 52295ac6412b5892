/*
 * common.h: the plumbing every vigil module uses.
 *
 *  - error codes (negative numbers, -errno where one fits) and vg_strerror();
 *  - vg_log(): levelled logging to stderr with syslog "<N>" prefixes that journald understands, or
 * to an application sink; the level is checked before any argument is formatted;
 *  - vg_arena: a bump allocator for per-request scratch, freed all at once;
 *  - vg_queue: a bounded multi-producer, multi-consumer queue of pointers for handing work between
 *    threads, with blocking, timed and non-blocking operations and a close that wakes every waiter.
 *
 * Threads: everything here is thread-safe except a vg_arena, which belongs to one thread at a time.
 */
#ifndef VG_COMMON_H
#define VG_COMMON_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------------
 * Errors. Fallible functions return 0 on success or one of these negative codes. Codes that match
 * an errno value are -errno, so a libuv result passes straight through.
 */
#define VG_OK        0
#define VG_ENOMEM    (-ENOMEM)
#define VG_EINVAL    (-EINVAL)
#define VG_ENOENT    (-ENOENT)
#define VG_EIO       (-EIO)
#define VG_EACCES    (-EACCES)
#define VG_EBUSY     (-EBUSY)
#define VG_EAGAIN    (-EAGAIN)
#define VG_ETIMEDOUT (-ETIMEDOUT)
#define VG_ECANCELED (-ECANCELED)
#define VG_ENOTSUP   (-ENOTSUP)
#define VG_ERANGE    (-ERANGE)
#define VG_EPIPE     (-EPIPE)
#define VG_EMSGSIZE  (-EMSGSIZE)
#define VG_EPROTO    (-EPROTO)
#define VG_EEXIST    (-EEXIST)
/* Vigil's own codes, outside the errno range. */
#define VG_EFORMAT   (-20001) /* a file or message is malformed (bad header, bad JSON, ...) */
#define VG_EMODEL    (-20002) /* a model checkpoint is unusable (missing tensor, wrong shape, ...) */
#define VG_EMEDIA    (-20003) /* a video cannot be used (no video stream, undecodable, ...) */
#define VG_EDECODE   (-20004) /* the decoder failed on the data */
#define VG_ELIMIT    (-20005) /* a configured limit would be exceeded (tokens, pixels, size) */
#define VG_EPROTOCOL (-20006) /* a URL's protocol is not whitelisted */
#define VG_EPATH     (-20007) /* a path is outside the configured media roots */

/* Returns a static, human-readable description of an error code (never NULL, thread-safe). */
const char *vg_strerror(int err);

/* Writes a formatted message into err[errlen] when err is not NULL and errlen > 0, and returns
 * code. Lets a function fail with `return vg_fail(err, errlen, VG_EINVAL, "bad %s", what);`. */
int vg_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---------------------------------------------------------------------------------------------------
 * Logging. Levels are syslog's.
 */
enum vg_log_level {
    VG_LOG_ERR = 3,
    VG_LOG_WARNING = 4,
    VG_LOG_NOTICE = 5,
    VG_LOG_INFO = 6,
    VG_LOG_DEBUG = 7,
};

/* A sink receives each line (without newline) that passes the level check. Called on the logging
 * thread; must be thread-safe and must not call vg_log itself. */
typedef void (*vg_log_sink)(int level, const char *module, const char *msg, void *opaque);

/* Sets the most verbose level that is emitted (default VG_LOG_INFO). Thread-safe. */
void vg_log_set_level(int level);
int vg_log_get_level(void);
/* Parses "err", "warning", "notice", "info", "debug" (or a digit 3..7); returns -1 when unknown. */
int vg_log_parse_level(const char *name);
/* Replaces the sink; NULL restores the default (stderr with a "<N>module: " prefix). Thread-safe.
 */
void vg_log_set_sink(vg_log_sink sink, void *opaque);

/* Formats and emits one line. Prefer the vg_log() macro, which skips formatting when filtered out.
 */
void vg_log_write(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void vg_log_writev(int level, const char *module, const char *fmt, va_list ap);

/* The level check comes before the arguments are evaluated or formatted. */
#define vg_log(level, module, ...)                                                                 \
    do {                                                                                           \
        if ((level) <= vg_log_get_level())                                                         \
            vg_log_write((level), (module), __VA_ARGS__);                                          \
    } while (0)

/* ---------------------------------------------------------------------------------------------------
 * Arena: bump allocation in blocks; everything is freed by vg_arena_reset() or vg_arena_destroy().
 * One thread at a time.
 */
typedef struct vg_arena vg_arena;

/* Creates an arena whose blocks are at least block_size bytes (0 picks 64 KiB). NULL on OOM. */
vg_arena *vg_arena_create(size_t block_size);
/* Frees every block. NULL is a no-op. */
void vg_arena_destroy(vg_arena *a);
/* Returns size bytes aligned to align (a power of two, at most 4096; 0 means 16), owned by the
 * arena. NULL on OOM or when size overflows. size 0 returns a valid unique pointer. */
void *vg_arena_alloc(vg_arena *a, size_t size, size_t align);
/* Like vg_arena_alloc, zero-filled, for n elements of size bytes; NULL on overflow or OOM. */
void *vg_arena_calloc(vg_arena *a, size_t n, size_t size);
/* Copies a NUL-terminated string (or len bytes + NUL with vg_arena_strndup) into the arena. */
char *vg_arena_strdup(vg_arena *a, const char *s);
char *vg_arena_strndup(vg_arena *a, const char *s, size_t len);
/* Frees all allocations but keeps the first block for reuse. */
void vg_arena_reset(vg_arena *a);
/* Bytes handed out since the last reset, and bytes reserved from the system. */
size_t vg_arena_used(const vg_arena *a);
size_t vg_arena_reserved(const vg_arena *a);

/* ---------------------------------------------------------------------------------------------------
 * Bounded MPMC queue of non-NULL pointers. The queue never owns the items: whoever pops one owns
 * it, and whoever destroys a queue that still holds items must drain it first (vg_queue_pop with
 * 0).
 */
typedef struct vg_queue vg_queue;

/* Creates a queue holding at most capacity items (1 .. 1<<24). */
int vg_queue_create(size_t capacity, vg_queue **out);
/* Destroys the queue. No thread may be using it. NULL is a no-op. */
void vg_queue_destroy(vg_queue *q);
/* Adds item (not NULL). timeout_ms: 0 = never wait, < 0 = wait forever, > 0 = wait that long.
 * Returns 0, VG_EAGAIN (full and timeout 0), VG_ETIMEDOUT, VG_EPIPE (closed) or VG_EINVAL. On
 * failure the caller still owns item. */
int vg_queue_push(vg_queue *q, void *item, int timeout_ms);
/* Removes the oldest item into *item. Same timeout rules. Returns 0, VG_EAGAIN, VG_ETIMEDOUT, or
 * VG_EPIPE once the queue is closed and empty (items pushed before the close are still delivered).
 */
int vg_queue_pop(vg_queue *q, void **item, int timeout_ms);
/* Closes the queue: later pushes fail with VG_EPIPE, waiting threads wake up. Idempotent. */
void vg_queue_close(vg_queue *q);
size_t vg_queue_len(vg_queue *q);
size_t vg_queue_capacity(const vg_queue *q);

/* ---------------------------------------------------------------------------------------------------
 * Small helpers.
 */
/* Monotonic clock in nanoseconds / milliseconds. */
uint64_t vg_now_ns(void);
double vg_now_ms(void);
/* Reads a whole file (at most max_bytes) into a NUL-terminated malloc'd buffer the caller frees. */
int vg_read_file(const char *path, size_t max_bytes, char **data, size_t *len, char *err,
                 size_t errlen);
/* Checked size arithmetic: returns 0 and stores the result, or VG_ERANGE on overflow. */
static inline int vg_mul_size(size_t a, size_t b, size_t *out)
{
    if (__builtin_mul_overflow(a, b, out))
        return VG_ERANGE;
    return 0;
}
static inline int vg_add_size(size_t a, size_t b, size_t *out)
{
    if (__builtin_add_overflow(a, b, out))
        return VG_ERANGE;
    return 0;
}

/* UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). vg_utf8_check
 * returns len when s[0..len) is valid UTF-8, else the offset of the first byte of the first invalid
 * sequence. vg_utf8_sanitize copies s[0..len) into out (cap bytes, NUL-terminated) with each
 * invalid sequence and each U+0000 replaced by U+FFFD, so the text survives as a C string (JSON,
 * journal, logs); it returns the bytes written, or 0 with out[0] = 0 when cap < 3 * len + 1. Pure;
 * any thread. */
size_t vg_utf8_check(const char *s, size_t len);
size_t vg_utf8_sanitize(const char *s, size_t len, char *out, size_t cap);

/* Copies text into out (cap bytes, NUL-terminated, cut short when it does not fit) with the
 * credentials of every URL in it replaced by "***" (in "rtsp://user:pass@cam/live", "user:pass"
 * becomes "***"; the userinfo as libavformat parses it: before the last '@' of the authority),
 * and the value of every "Authorization:" header quoted in it (FFmpeg's debug output shows its
 * RTSP and HTTP requests) by " ***". Text without either is copied unchanged. Returns the bytes
 * written (without the NUL). Everything that shows a URL or a sentence quoting one outside the
 * daemon (logs, replies, events) goes through it. Pure; any thread. */
size_t vg_url_redact(const char *text, char *out, size_t cap);

#define VG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define VG_MIN(a, b)    ((a) < (b) ? (a) : (b))
#define VG_MAX(a, b)    ((a) > (b) ? (a) : (b))

/* For broken internal invariants only, never for input. Logs and aborts. */
#define VG_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            vg_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)
void vg_assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn));

#ifdef __cplusplus
}
#endif
#endif
