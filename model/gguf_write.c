/*
 * gguf_write.c: writing GGUF v3 files (gguf.h, "Writing"): the metadata and tensor infos in a
 * memory buffer, then the file streamed to path.tmp and renamed when complete, with the layout
 * llama.cpp's gguf-py writes (alignment 32, each tensor's data padded to it).
 *
 * One thread at a time.
 */
#include "common.h"
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALIGN 32

typedef struct wbuf {
    unsigned char *p;
    size_t n, cap;
    int oom;
} wbuf;

struct vg_gguf_writer {
    wbuf kv, ti;
    uint64_t n_kv, n_t;
    uint64_t *sizes; /* bytes of each tensor, in order */
    size_t cap_sizes;
    uint64_t data_off; /* next tensor's offset */
    int fd;
    char *path, *tmp;
    size_t cur;     /* tensor being written */
    uint64_t cur_n; /* its bytes so far */
    uint64_t pos;   /* bytes written to the file */
    unsigned char *out;
    size_t out_n;
};

static void put(wbuf *b, const void *d, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->n + n)
            nc *= 2;
        unsigned char *p = realloc(b->p, nc);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put32(wbuf *b, uint32_t v)
{
    put(b, &v, 4);
}

static void put64(wbuf *b, uint64_t v)
{
    put(b, &v, 8);
}

static void put_str(wbuf *b, const char *s, size_t n)
{
    put64(b, n);
    put(b, s, n);
}

int vg_gguf_w_create(vg_gguf_writer **out)
{
    vg_gguf_writer *w = calloc(1, sizeof *w);
    if (!w)
        return VG_ENOMEM;
    w->fd = -1;
    *out = w;
    return 0;
}

void vg_gguf_w_free(vg_gguf_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp);
    }
    free(w->kv.p);
    free(w->ti.p);
    free(w->sizes);
    free(w->path);
    free(w->tmp);
    free(w->out);
    free(w);
}

static int key(vg_gguf_writer *w, const char *k, uint32_t type)
{
    if (!k || !*k || strlen(k) > VG_GGUF_MAX_KEY || w->fd >= 0)
        return VG_EINVAL;
    put_str(&w->kv, k, strlen(k));
    put32(&w->kv, type);
    w->n_kv++;
    return w->kv.oom ? VG_ENOMEM : 0;
}

#define DONE() return w->kv.oom ? VG_ENOMEM : 0

int vg_gguf_w_str(vg_gguf_writer *w, const char *k, const char *s)
{
    int rc = key(w, k, VG_GGUF_STRING);
    if (rc < 0)
        return rc;
    put_str(&w->kv, s, strlen(s));
    DONE();
}

int vg_gguf_w_u32(vg_gguf_writer *w, const char *k, uint32_t v)
{
    int rc = key(w, k, VG_GGUF_UINT32);
    if (rc < 0)
        return rc;
    put32(&w->kv, v);
    DONE();
}

int vg_gguf_w_f32(vg_gguf_writer *w, const char *k, float v)
{
    int rc = key(w, k, VG_GGUF_FLOAT32);
    if (rc < 0)
        return rc;
    put(&w->kv, &v, 4);
    DONE();
}

int vg_gguf_w_bool(vg_gguf_writer *w, const char *k, int v)
{
    int rc = key(w, k, VG_GGUF_BOOL);
    if (rc < 0)
        return rc;
    unsigned char b = v ? 1 : 0;
    put(&w->kv, &b, 1);
    DONE();
}

static int arr(vg_gguf_writer *w, const char *k, uint32_t type, const void *v, size_t elem,
               size_t n)
{
    int rc = key(w, k, VG_GGUF_ARRAY);
    if (rc < 0)
        return rc;
    put32(&w->kv, type);
    put64(&w->kv, n);
    if (n)
        put(&w->kv, v, elem * n);
    DONE();
}

int vg_gguf_w_arr_i32(vg_gguf_writer *w, const char *k, const int32_t *v, size_t n)
{
    return arr(w, k, VG_GGUF_INT32, v, 4, n);
}

int vg_gguf_w_arr_f32(vg_gguf_writer *w, const char *k, const float *v, size_t n)
{
    return arr(w, k, VG_GGUF_FLOAT32, v, 4, n);
}

int vg_gguf_w_arr_bool(vg_gguf_writer *w, const char *k, const uint8_t *v, size_t n)
{
    return arr(w, k, VG_GGUF_BOOL, v, 1, n);
}

int vg_gguf_w_arr_str(vg_gguf_writer *w, const char *k, const char *const *s, const size_t *lens,
                      size_t n)
{
    int rc = arr(w, k, VG_GGUF_STRING, NULL, 0, 0);
    if (rc < 0)
        return rc;
    w->kv.n -= 8; /* rewrite the count */
    put64(&w->kv, n);
    for (size_t i = 0; i < n; i++)
        put_str(&w->kv, s[i], lens[i]);
    DONE();
}

int vg_gguf_w_tensor(vg_gguf_writer *w, const char *name, uint32_t type, int ndim,
                     const int64_t *ne)
{
    size_t be, bb, numel = 1, bytes;
    if (!name || !*name || strlen(name) > VG_GGUF_MAX_NAME || ndim < 1 || ndim > VG_GGUF_MAX_DIMS ||
        vg_ggml_type_block(type, &be, &bb) != 0 || ne[0] % (int64_t)be || w->fd >= 0)
        return VG_EINVAL;
    for (int d = 0; d < ndim; d++)
        if (ne[d] < 0 || vg_mul_size(numel, (size_t)ne[d], &numel) != 0)
            return VG_EINVAL;
    if (vg_mul_size(numel / be, bb, &bytes) != 0)
        return VG_EINVAL;
    if (w->n_t == w->cap_sizes) {
        size_t nc = w->cap_sizes ? w->cap_sizes * 2 : 256;
        uint64_t *s = realloc(w->sizes, nc * sizeof *s);
        if (!s)
            return VG_ENOMEM;
        w->sizes = s;
        w->cap_sizes = nc;
    }
    w->sizes[w->n_t++] = bytes;
    put_str(&w->ti, name, strlen(name));
    put32(&w->ti, (uint32_t)ndim);
    for (int d = 0; d < ndim; d++)
        put64(&w->ti, (uint64_t)ne[d]);
    put32(&w->ti, type);
    put64(&w->ti, w->data_off);
    w->data_off += (bytes + ALIGN - 1) / ALIGN * ALIGN;
    return w->ti.oom ? VG_ENOMEM : 0;
}

static int write_all(vg_gguf_writer *w, const void *p, size_t n, char *err, size_t errlen)
{
    const unsigned char *c = p;
    while (n) {
        ssize_t k = write(w->fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return vg_fail(err, errlen, -errno, "%s: write: %s", w->tmp, strerror(errno));
        }
        c += k;
        n -= (size_t)k;
        w->pos += (uint64_t)k;
    }
    return 0;
}

static int pad(vg_gguf_writer *w, char *err, size_t errlen)
{
    static const unsigned char zero[ALIGN];
    size_t p = (size_t)(w->pos % ALIGN);
    return p ? write_all(w, zero, ALIGN - p, err, errlen) : 0;
}

int vg_gguf_w_begin(vg_gguf_writer *w, const char *path, char *err, size_t errlen)
{
    if (w->kv.oom || w->ti.oom)
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
    w->path = strdup(path);
    w->tmp = malloc(strlen(path) + 5);
    if (!w->path || !w->tmp)
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
    sprintf(w->tmp, "%s.tmp", path);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0)
        return vg_fail(err, errlen, -errno, "%s: %s", w->tmp, strerror(errno));
    unsigned char h[24];
    uint32_t version = 3;
    memcpy(h, "GGUF", 4);
    memcpy(h + 4, &version, 4);
    memcpy(h + 8, &w->n_t, 8);
    memcpy(h + 16, &w->n_kv, 8);
    int rc = write_all(w, h, 24, err, errlen);
    if (rc == 0)
        rc = write_all(w, w->kv.p, w->kv.n, err, errlen);
    if (rc == 0)
        rc = write_all(w, w->ti.p, w->ti.n, err, errlen);
    if (rc == 0)
        rc = pad(w, err, errlen);
    w->cur = 0;
    w->cur_n = 0;
    return rc;
}

int vg_gguf_w_data(vg_gguf_writer *w, const void *p, size_t n, char *err, size_t errlen)
{
    if (w->fd < 0 || w->cur >= w->n_t || n > w->sizes[w->cur] - w->cur_n)
        return vg_fail(err, errlen, VG_EINVAL, "%s: more tensor data than declared",
                       w->path ? w->path : "gguf");
    w->cur_n += n;
    return write_all(w, p, n, err, errlen);
}

int vg_gguf_w_end_tensor(vg_gguf_writer *w, char *err, size_t errlen)
{
    if (w->fd < 0 || w->cur >= w->n_t || w->cur_n != w->sizes[w->cur])
        return vg_fail(err, errlen, VG_EINVAL, "%s: tensor %zu has %llu bytes of data, not %llu",
                       w->path ? w->path : "gguf", w->cur, (unsigned long long)w->cur_n,
                       (unsigned long long)(w->cur < w->n_t ? w->sizes[w->cur] : 0));
    w->cur++;
    w->cur_n = 0;
    return pad(w, err, errlen);
}

int vg_gguf_w_finish(vg_gguf_writer *w, char *err, size_t errlen)
{
    if (w->fd < 0 || w->cur != w->n_t)
        return vg_fail(err, errlen, VG_EINVAL, "%s: %zu of %llu tensors written",
                       w->path ? w->path : "gguf", w->cur, (unsigned long long)w->n_t);
    if (fsync(w->fd) != 0)
        return vg_fail(err, errlen, -errno, "%s: fsync: %s", w->tmp, strerror(errno));
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0 || rename(w->tmp, w->path) != 0) {
        int e = errno;
        unlink(w->tmp);
        return vg_fail(err, errlen, -e, "%s: %s", w->path, strerror(e));
    }
    return 0;
}
