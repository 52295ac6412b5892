/*
 * strbuf.h: a growable byte string, always NUL-terminated after its len bytes (private to daemon/:
 * the HTTP door's bodies and responses, the chat translation's texts). Zero-initialize one
 * ({0}); the caller owns p and frees it with vg_buf_free. Functions return 0, or VG_ENOMEM with
 * the content unchanged. Any thread; a vg_buf is not shared.
 */
#ifndef VG_DAEMON_STRBUF_H
#define VG_DAEMON_STRBUF_H

#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct vg_buf {
    char *p;
    size_t len, cap;
} vg_buf;

/* Room for more bytes and the terminating NUL. */
static inline int vg_buf_reserve(vg_buf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + more + 1) {
        if (cap > ((size_t)1 << 40))
            return VG_ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return VG_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int vg_buf_add(vg_buf *b, const void *d, size_t n)
{
    if (vg_buf_reserve(b, n) < 0)
        return VG_ENOMEM;
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

static inline int vg_buf_addf(vg_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int vg_buf_addf(vg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || vg_buf_reserve(b, (size_t)n) < 0)
        return VG_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

static inline void vg_buf_free(vg_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

#endif
