/*
 * gguf.c: the GGUF v3 reader (gguf.h).
 *
 * Layout (little-endian): "GGUF", uint32 version (3), uint64 tensor count, uint64 key/value count;
 * the key/value pairs (key: uint64 length + bytes; uint32 value type; the value; a string is a
 * uint64 length + bytes; an array is a uint32 element type, a uint64 count and the elements); the
 * tensor infos (name string, uint32 n_dims, n_dims uint64 sizes innermost first, uint32 ggml type,
 * uint64 offset from the data section); padding to general.alignment (default 32); the data.
 *
 * Parsing is one pass with a cursor that never moves past the end of the mapping: every read goes
 * through need(), which compares the bytes wanted with the bytes left. The arrays of entries are
 * allocated only after the counts have been bounded by the bytes left (each key/value takes at
 * least 13 bytes, each tensor info at least 32), and hard limits cap them besides. Nested arrays
 * are refused (llama.cpp writes none). After the tensor infos, the data section is checked: each
 * tensor's offset aligned, its bytes inside the file, and (sorted by offset) no two overlapping.
 *
 * Threads: open on any thread; the result is immutable.
 */
#include "gguf.h"
#include "internal.h"

#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

#define MAX_KV      ((uint64_t)1 << 20)
#define MAX_TENSORS ((uint64_t)1 << 20)
#define MAX_STRING  ((uint64_t)256 << 20) /* one metadata string */
#define MAX_ALIGN   ((uint64_t)1 << 24)

struct vg_gguf {
    char *path;
    const char *base;
    void *map;
    size_t size;
    int fd; /* the mapped file, kept open for vg_gguf_locate (-1: none) */
    uint32_t alignment;
    size_t data_off; /* start of the data section in the file */
    vg_gguf_kv *kv;
    size_t n_kv;
    vg_gguf_tensor *t;
    size_t n_t;
    vg_gguf_tensor **by_name; /* sorted by name */
    vg_arena *arena;          /* keys and names */
};

/* ---------------------------------------------------------------------------------------------------
 * Types.
 */
static const struct {
    uint32_t type;
    const char *name;
    uint16_t elems, bytes;
} ggml_types[] = {
    {VG_GGML_F32, "F32", 1, 4},         {VG_GGML_F16, "F16", 1, 2},
    {VG_GGML_Q4_0, "Q4_0", 32, 18},     {VG_GGML_Q4_1, "Q4_1", 32, 20},
    {VG_GGML_Q5_0, "Q5_0", 32, 22},     {VG_GGML_Q5_1, "Q5_1", 32, 24},
    {VG_GGML_Q8_0, "Q8_0", 32, 34},     {VG_GGML_Q8_1, "Q8_1", 32, 36},
    {VG_GGML_Q2_K, "Q2_K", 256, 84},    {VG_GGML_Q3_K, "Q3_K", 256, 110},
    {VG_GGML_Q4_K, "Q4_K", 256, 144},   {VG_GGML_Q5_K, "Q5_K", 256, 176},
    {VG_GGML_Q6_K, "Q6_K", 256, 210},   {VG_GGML_Q8_K, "Q8_K", 256, 292},
    {VG_GGML_IQ4_NL, "IQ4_NL", 32, 18}, {VG_GGML_IQ4_XS, "IQ4_XS", 256, 136},
    {VG_GGML_I8, "I8", 1, 1},           {VG_GGML_I16, "I16", 1, 2},
    {VG_GGML_I32, "I32", 1, 4},         {VG_GGML_I64, "I64", 1, 8},
    {VG_GGML_F64, "F64", 1, 8},         {VG_GGML_BF16, "BF16", 1, 2},
};

int vg_ggml_type_block(uint32_t type, size_t *elems, size_t *bytes)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(ggml_types); i++)
        if (ggml_types[i].type == type) {
            if (elems)
                *elems = ggml_types[i].elems;
            if (bytes)
                *bytes = ggml_types[i].bytes;
            return 0;
        }
    return -1;
}

const char *vg_ggml_type_name(uint32_t type)
{
    for (size_t i = 0; i < VG_ARRAY_LEN(ggml_types); i++)
        if (ggml_types[i].type == type)
            return ggml_types[i].name;
    return "?";
}

const char *vg_gguf_type_name(uint32_t type)
{
    static const char *const names[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                        "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                        "UINT64", "INT64",   "FLOAT64"};
    return type < VG_ARRAY_LEN(names) ? names[type] : "?";
}

/* Bytes of one scalar of a fixed-size type; 0 for STRING, ARRAY and unknown types. */
static size_t scalar_size(uint32_t type)
{
    switch (type) {
    case VG_GGUF_UINT8:
    case VG_GGUF_INT8:
    case VG_GGUF_BOOL:
        return 1;
    case VG_GGUF_UINT16:
    case VG_GGUF_INT16:
        return 2;
    case VG_GGUF_UINT32:
    case VG_GGUF_INT32:
    case VG_GGUF_FLOAT32:
        return 4;
    case VG_GGUF_UINT64:
    case VG_GGUF_INT64:
    case VG_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/* ---------------------------------------------------------------------------------------------------
 * The cursor.
 */
typedef struct cur {
    const unsigned char *base, *p, *end;
    const char *file;
    char *err;
    size_t errlen;
} cur;

static size_t left(const cur *c)
{
    return (size_t)(c->end - c->p);
}

static int need(cur *c, uint64_t n, const char *what)
{
    if (n > left(c))
        return vg_fail(c->err, c->errlen, VG_EFORMAT,
                       "%s: truncated GGUF file: %s needs %llu bytes at offset %zu, %zu left",
                       c->file, what, (unsigned long long)n, (size_t)(c->p - c->base), left(c));
    return 0;
}

static uint32_t rd32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static int get32(cur *c, uint32_t *v, const char *what)
{
    int rc = need(c, 4, what);
    if (rc < 0)
        return rc;
    *v = rd32(c->p);
    c->p += 4;
    return 0;
}

static int get64(cur *c, uint64_t *v, const char *what)
{
    int rc = need(c, 8, what);
    if (rc < 0)
        return rc;
    *v = rd64(c->p);
    c->p += 8;
    return 0;
}

/* A length-prefixed string: *s (in the mapping) and *len, at most max bytes. */
static int get_str(cur *c, uint64_t max, const unsigned char **s, size_t *len, const char *what)
{
    uint64_t n;
    int rc = get64(c, &n, what);
    if (rc < 0)
        return rc;
    if (n > max)
        return vg_fail(c->err, c->errlen, VG_EFORMAT,
                       "%s: %s is %llu bytes long (at most %llu allowed)", c->file, what,
                       (unsigned long long)n, (unsigned long long)max);
    if ((rc = need(c, n, what)) < 0)
        return rc;
    *s = c->p;
    *len = (size_t)n;
    c->p += n;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Opening.
 */
static int cmp_tensor_ptr_name(const void *a, const void *b)
{
    return strcmp((*(vg_gguf_tensor *const *)a)->name, (*(vg_gguf_tensor *const *)b)->name);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_tensor_ptr_off(const void *a, const void *b)
{
    const vg_gguf_tensor *x = *(vg_gguf_tensor *const *)a, *y = *(vg_gguf_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Parses one value of type `type` at the cursor (not an array's element count): checks its bytes
 * and, for a string, its length. */
static int skip_value(cur *c, uint32_t type, const char *key)
{
    size_t sz = scalar_size(type);
    if (sz) {
        int rc = need(c, sz, key);
        if (rc == 0)
            c->p += sz;
        return rc;
    }
    if (type == VG_GGUF_STRING) {
        const unsigned char *s;
        size_t len;
        return get_str(c, MAX_STRING, &s, &len, key);
    }
    return vg_fail(c->err, c->errlen, VG_EFORMAT, "%s: key '%s' has an unknown value type %u",
                   c->file, key, type);
}

static int parse_kv(vg_gguf *g, cur *c, vg_gguf_kv *kv)
{
    const unsigned char *ks;
    size_t klen;
    int rc = get_str(c, VG_GGUF_MAX_KEY, &ks, &klen, "metadata key");
    if (rc < 0)
        return rc;
    if (klen == 0 || memchr(ks, 0, klen))
        return vg_fail(c->err, c->errlen, VG_EFORMAT,
                       "%s: a metadata key is empty or holds a NUL byte", c->file);
    char *key = vg_arena_strndup(g->arena, (const char *)ks, klen);
    if (!key)
        return vg_fail(c->err, c->errlen, VG_ENOMEM, "%s: out of memory", c->file);
    kv->key = key;
    if ((rc = get32(c, &kv->type, key)) < 0)
        return rc;
    kv->n = 1;
    if (kv->type == VG_GGUF_ARRAY) {
        uint64_t n;
        if ((rc = get32(c, &kv->arr_type, key)) < 0 || (rc = get64(c, &n, key)) < 0)
            return rc;
        if (kv->arr_type == VG_GGUF_ARRAY)
            return vg_fail(c->err, c->errlen, VG_EFORMAT,
                           "%s: key '%s' is an array of arrays (not supported)", c->file, key);
        size_t sz = scalar_size(kv->arr_type);
        if (!sz && kv->arr_type != VG_GGUF_STRING)
            return vg_fail(c->err, c->errlen, VG_EFORMAT,
                           "%s: key '%s' is an array of unknown type %u", c->file, key,
                           kv->arr_type);
        /* every element takes at least sz (a string at least 8) bytes */
        uint64_t min_elem = sz ? sz : 8;
        if (n > left(c) / min_elem)
            return vg_fail(c->err, c->errlen, VG_EFORMAT,
                           "%s: key '%s' claims %llu array elements, more than the %zu bytes left "
                           "can hold",
                           c->file, key, (unsigned long long)n, left(c));
        kv->n = n;
        kv->val = c->p;
        if (sz) {
            c->p += (size_t)n * sz;
        } else {
            for (uint64_t i = 0; i < n; i++)
                if ((rc = skip_value(c, VG_GGUF_STRING, key)) < 0)
                    return rc;
        }
        kv->val_bytes = (size_t)(c->p - kv->val);
        return 0;
    }
    kv->val = c->p;
    if ((rc = skip_value(c, kv->type, key)) < 0)
        return rc;
    kv->val_bytes = (size_t)(c->p - kv->val);
    return 0;
}

static int parse_tensor(vg_gguf *g, cur *c, vg_gguf_tensor *t)
{
    const unsigned char *ns;
    size_t nlen;
    int rc = get_str(c, VG_GGUF_MAX_NAME, &ns, &nlen, "tensor name");
    if (rc < 0)
        return rc;
    if (nlen == 0 || memchr(ns, 0, nlen))
        return vg_fail(c->err, c->errlen, VG_EFORMAT,
                       "%s: a tensor name is empty or holds a NUL byte", c->file);
    char *name = vg_arena_strndup(g->arena, (const char *)ns, nlen);
    if (!name)
        return vg_fail(c->err, c->errlen, VG_ENOMEM, "%s: out of memory", c->file);
    t->name = name;
    uint32_t nd;
    if ((rc = get32(c, &nd, name)) < 0)
        return rc;
    if (nd < 1 || nd > VG_GGUF_MAX_DIMS)
        return vg_fail(c->err, c->errlen, VG_EFORMAT,
                       "%s: tensor '%s' has %u dimensions (1 to %d allowed)", c->file, name, nd,
                       VG_GGUF_MAX_DIMS);
    t->ndim = (int)nd;
    size_t numel = 1;
    for (int d = 0; d < VG_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v;
        if ((rc = get64(c, &v, name)) < 0)
            return rc;
        if (v > (uint64_t)INT64_MAX || vg_mul_size(numel, (size_t)v, &numel) != 0)
            return vg_fail(c->err, c->errlen, VG_EFORMAT,
                           "%s: tensor '%s': dimension %u (%llu) makes the element count overflow",
                           c->file, name, d, (unsigned long long)v);
        t->ne[d] = (int64_t)v;
    }
    t->numel = numel;
    if ((rc = get32(c, &t->type, name)) < 0)
        return rc;
    size_t be, bb;
    if (vg_ggml_type_block(t->type, &be, &bb) != 0)
        return vg_fail(c->err, c->errlen, VG_EFORMAT, "%s: tensor '%s' has an unknown type %u",
                       c->file, name, t->type);
    if ((uint64_t)t->ne[0] % be != 0)
        return vg_fail(c->err, c->errlen, VG_EFORMAT,
                       "%s: tensor '%s': row of %lld elements is not a whole number of %s blocks "
                       "(%zu)",
                       c->file, name, (long long)t->ne[0], vg_ggml_type_name(t->type), be);
    if (vg_mul_size(numel / be, bb, &t->nbytes) != 0)
        return vg_fail(c->err, c->errlen, VG_EFORMAT, "%s: tensor '%s' is too large", c->file,
                       name);
    return get64(c, &t->offset, name);
}

static int parse(vg_gguf *g, char *err, size_t errlen)
{
    cur c = {.base = g->map,
             .p = g->map,
             .end = (const unsigned char *)g->map + g->size,
             .file = g->base,
             .err = err,
             .errlen = errlen};
    int rc = need(&c, 24, "the header");
    if (rc < 0)
        return rc;
    if (memcmp(c.p, "GGUF", 4) != 0)
        return vg_fail(err, errlen, VG_EFORMAT, "%s: not a GGUF file (bad magic)", g->base);
    uint32_t version = rd32(c.p + 4);
    if (version != 3)
        return vg_fail(err, errlen, VG_EFORMAT,
                       "%s: GGUF version %u is not supported (version 3 is)", g->base, version);
    uint64_t n_t = rd64(c.p + 8), n_kv = rd64(c.p + 16);
    c.p += 24;
    if (n_kv > MAX_KV || n_kv > left(&c) / 13)
        return vg_fail(err, errlen, VG_EFORMAT,
                       "%s: absurd metadata count %llu for a file of %zu bytes", g->base,
                       (unsigned long long)n_kv, g->size);
    if (n_t > MAX_TENSORS || n_t > left(&c) / 32)
        return vg_fail(err, errlen, VG_EFORMAT,
                       "%s: absurd tensor count %llu for a file of %zu bytes", g->base,
                       (unsigned long long)n_t, g->size);
    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->t = calloc(n_t ? (size_t)n_t : 1, sizeof *g->t);
    g->by_name = calloc(n_t ? (size_t)n_t : 1, sizeof *g->by_name);
    if (!g->kv || !g->t || !g->by_name)
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", g->base);
    for (size_t i = 0; i < n_kv; i++) {
        if ((rc = parse_kv(g, &c, &g->kv[i])) < 0)
            return rc;
        g->n_kv++;
    }
    if (n_kv) { /* duplicate keys: sorted copies of the key pointers */
        const char **keys = malloc((size_t)n_kv * sizeof *keys);
        if (!keys)
            return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", g->base);
        for (size_t i = 0; i < n_kv; i++)
            keys[i] = g->kv[i].key;
        qsort(keys, n_kv, sizeof *keys, cmp_str_ptr);
        for (size_t i = 1; i < n_kv && rc == 0; i++)
            if (strcmp(keys[i - 1], keys[i]) == 0)
                rc = vg_fail(err, errlen, VG_EFORMAT, "%s: duplicate metadata key '%s'", g->base,
                             keys[i]);
        free(keys);
        if (rc < 0)
            return rc;
    }
    g->alignment = 32;
    const vg_gguf_kv *al = vg_gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->type != VG_GGUF_UINT32)
            return vg_fail(err, errlen, VG_EFORMAT, "%s: general.alignment is %s, not UINT32",
                           g->base, vg_gguf_type_name(al->type));
        uint32_t a = rd32(al->val);
        if (a == 0 || (a & (a - 1)) != 0 || a > MAX_ALIGN)
            return vg_fail(err, errlen, VG_EFORMAT,
                           "%s: general.alignment %u is not a power of two up to %llu", g->base, a,
                           (unsigned long long)MAX_ALIGN);
        g->alignment = a;
    }
    for (size_t i = 0; i < n_t; i++) {
        if ((rc = parse_tensor(g, &c, &g->t[i])) < 0)
            return rc;
        g->by_name[i] = &g->t[i];
        g->n_t++;
    }
    size_t pos = (size_t)(c.p - (const unsigned char *)g->map);
    size_t data = (pos + g->alignment - 1) / g->alignment * g->alignment;
    if (n_t && data > g->size)
        return vg_fail(err, errlen, VG_EFORMAT,
                       "%s: truncated GGUF file: the data section would start at %zu, past the end "
                       "(%zu bytes)",
                       g->base, data, g->size);
    g->data_off = data;
    size_t avail = data <= g->size ? g->size - data : 0;
    for (size_t i = 0; i < n_t; i++) {
        vg_gguf_tensor *t = &g->t[i];
        if (t->offset % g->alignment != 0)
            return vg_fail(err, errlen, VG_EFORMAT,
                           "%s: tensor '%s': data offset %llu is not a multiple of the alignment "
                           "%u",
                           g->base, t->name, (unsigned long long)t->offset, g->alignment);
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return vg_fail(err, errlen, VG_EFORMAT,
                           "%s: truncated GGUF file: tensor '%s' (%zu bytes at data offset %llu) "
                           "runs past the end of the file",
                           g->base, t->name, t->nbytes, (unsigned long long)t->offset);
        t->data = (const unsigned char *)g->map + data + t->offset;
    }
    if (n_t) {
        qsort(g->by_name, n_t, sizeof *g->by_name, cmp_tensor_ptr_name);
        for (size_t i = 1; i < n_t; i++)
            if (strcmp(g->by_name[i - 1]->name, g->by_name[i]->name) == 0)
                return vg_fail(err, errlen, VG_EFORMAT, "%s: duplicate tensor '%s'", g->base,
                               g->by_name[i]->name);
        vg_gguf_tensor **off = malloc((size_t)n_t * sizeof *off);
        if (!off)
            return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", g->base);
        memcpy(off, g->by_name, (size_t)n_t * sizeof *off);
        qsort(off, n_t, sizeof *off, cmp_tensor_ptr_off);
        for (size_t i = 1; i < n_t; i++)
            if (off[i - 1]->nbytes && off[i]->nbytes &&
                off[i - 1]->offset + off[i - 1]->nbytes > off[i]->offset) {
                rc = vg_fail(err, errlen, VG_EFORMAT,
                             "%s: tensors '%s' and '%s' overlap in the data section", g->base,
                             off[i - 1]->name, off[i]->name);
                break;
            }
        free(off);
        if (rc < 0)
            return rc;
    }
    return rc;
}

int vg_gguf_open(const char *path, vg_gguf **out, char *err, size_t errlen)
{
    if (!path || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_gguf_open: NULL argument");
    vg_gguf *g = calloc(1, sizeof *g);
    if (g)
        g->fd = -1;
    if (!g || !(g->path = strdup(path)) || !(g->arena = vg_arena_create(0))) {
        vg_gguf_close(g);
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
    }
    const char *b = strrchr(g->path, '/');
    g->base = b && b[1] ? b + 1 : g->path;
    int rc = 0;
    /* O_NONBLOCK: a FIFO in place of the file fails the S_ISREG check instead of blocking. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat sb;
    if (fd < 0) {
        rc = vg_fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
    } else if (fstat(fd, &sb) != 0) {
        rc = vg_fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: not a regular file", path);
    } else if (sb.st_size < 24) {
        rc = vg_fail(err, errlen, VG_EFORMAT,
                     "%s: truncated GGUF file (%lld bytes, the header alone is 24)", path,
                     (long long)sb.st_size);
    } else if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX / 2) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: file too large to map", path);
    } else {
        g->size = (size_t)sb.st_size;
        g->map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (g->map == MAP_FAILED) {
            g->map = NULL;
            rc = vg_fail(err, errlen, -errno, "%s: mmap: %s", path, strerror(errno));
        }
    }
    if (fd >= 0 && rc == 0)
        g->fd = fd; /* vg_gguf_close() closes it */
    else if (fd >= 0)
        close(fd);
    if (rc == 0)
        rc = parse(g, err, errlen);
    if (rc < 0) {
        vg_gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

int vg_gguf_locate(const vg_gguf *g, const void *data, size_t n, int *fd, uint64_t *off)
{
    return g ? vg_map_locate(g->map, g->size, g->fd, data, n, fd, off) : -1;
}

void vg_gguf_close(vg_gguf *g)
{
    if (!g)
        return;
    if (g->map)
        munmap(g->map, g->size);
    if (g->fd >= 0)
        close(g->fd);
    free(g->kv);
    free(g->t);
    free(g->by_name);
    vg_arena_destroy(g->arena);
    free(g->path);
    free(g);
}

/* ---------------------------------------------------------------------------------------------------
 * Access.
 */
const char *vg_gguf_path(const vg_gguf *g)
{
    return g->path;
}

const char *vg_gguf_base(const vg_gguf *g)
{
    return g->base;
}

uint32_t vg_gguf_alignment(const vg_gguf *g)
{
    return g->alignment;
}

size_t vg_gguf_file_size(const vg_gguf *g)
{
    return g->size;
}

size_t vg_gguf_n_kv(const vg_gguf *g)
{
    return g ? g->n_kv : 0;
}

const vg_gguf_kv *vg_gguf_kv_at(const vg_gguf *g, size_t i)
{
    return g && i < g->n_kv ? &g->kv[i] : NULL;
}

const vg_gguf_kv *vg_gguf_find_kv(const vg_gguf *g, const char *key)
{
    if (!g || !key)
        return NULL;
    for (size_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0)
            return &g->kv[i];
    return NULL;
}

size_t vg_gguf_n_tensors(const vg_gguf *g)
{
    return g ? g->n_t : 0;
}

const vg_gguf_tensor *vg_gguf_tensor_at(const vg_gguf *g, size_t i)
{
    return g && i < g->n_t ? &g->t[i] : NULL;
}

const vg_gguf_tensor *vg_gguf_find_tensor(const vg_gguf *g, const char *name)
{
    if (!g || !name || g->n_t == 0)
        return NULL;
    vg_gguf_tensor key = {.name = name}, *kp = &key;
    vg_gguf_tensor **r = bsearch(&kp, g->by_name, g->n_t, sizeof *g->by_name, cmp_tensor_ptr_name);
    return r ? *r : NULL;
}

/* Element i of a fixed-size integer type at p; -1 when type is not an integer (or the uint64 does
 * not fit in int64_t). */
static int int_at(uint32_t type, const unsigned char *p, int64_t *out)
{
    switch (type) {
    case VG_GGUF_UINT8:
    case VG_GGUF_BOOL:
        *out = p[0];
        return 0;
    case VG_GGUF_INT8:
        *out = (int8_t)p[0];
        return 0;
    case VG_GGUF_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        *out = v;
        return 0;
    }
    case VG_GGUF_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        *out = v;
        return 0;
    }
    case VG_GGUF_UINT32:
        *out = rd32(p);
        return 0;
    case VG_GGUF_INT32:
        *out = (int32_t)rd32(p);
        return 0;
    case VG_GGUF_UINT64: {
        uint64_t v = rd64(p);
        if (v > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)v;
        return 0;
    }
    case VG_GGUF_INT64:
        *out = (int64_t)rd64(p);
        return 0;
    default:
        return -1;
    }
}

static int float_at(uint32_t type, const unsigned char *p, double *out)
{
    if (type == VG_GGUF_FLOAT32) {
        float f;
        memcpy(&f, p, 4);
        *out = f;
        return 0;
    }
    if (type == VG_GGUF_FLOAT64) {
        memcpy(out, p, 8);
        return 0;
    }
    return -1;
}

static int missing(const vg_gguf *g, const char *key, char *err, size_t errlen)
{
    return vg_fail(err, errlen, VG_EMODEL, "%s: metadata key '%s' is missing", g->base, key);
}

static int wrong_type(const vg_gguf *g, const vg_gguf_kv *kv, const char *want, char *err,
                      size_t errlen)
{
    return vg_fail(err, errlen, VG_EMODEL, "%s: metadata key '%s' is %s, expected %s", g->base,
                   kv->key, vg_gguf_type_name(kv->type), want);
}

int vg_gguf_get_int(const vg_gguf *g, const char *key, int64_t min, int64_t max, int64_t *out,
                    char *err, size_t errlen)
{
    const vg_gguf_kv *kv = vg_gguf_find_kv(g, key);
    int64_t v;
    if (!kv)
        return missing(g, key, err, errlen);
    if (int_at(kv->type, kv->val, &v) != 0)
        return wrong_type(g, kv, "an integer", err, errlen);
    if (v < min || v > max)
        return vg_fail(err, errlen, VG_EMODEL, "%s: metadata '%s' = %lld is outside [%lld, %lld]",
                       g->base, key, (long long)v, (long long)min, (long long)max);
    *out = v;
    return 0;
}

int vg_gguf_get_float(const vg_gguf *g, const char *key, double *out, char *err, size_t errlen)
{
    const vg_gguf_kv *kv = vg_gguf_find_kv(g, key);
    double v;
    if (!kv)
        return missing(g, key, err, errlen);
    if (float_at(kv->type, kv->val, &v) != 0)
        return wrong_type(g, kv, "FLOAT32", err, errlen);
    if (!isfinite(v))
        return vg_fail(err, errlen, VG_EMODEL, "%s: metadata '%s' is not finite", g->base, key);
    *out = v;
    return 0;
}

int vg_gguf_get_str(const vg_gguf *g, const char *key, const char **s, size_t *len, char *err,
                    size_t errlen)
{
    const vg_gguf_kv *kv = vg_gguf_find_kv(g, key);
    if (!kv)
        return missing(g, key, err, errlen);
    if (kv->type != VG_GGUF_STRING)
        return wrong_type(g, kv, "STRING", err, errlen);
    *len = (size_t)rd64(kv->val);
    *s = (const char *)kv->val + 8;
    return 0;
}

int vg_gguf_get_arr(const vg_gguf *g, const char *key, const vg_gguf_kv **out, char *err,
                    size_t errlen)
{
    const vg_gguf_kv *kv = vg_gguf_find_kv(g, key);
    if (!kv)
        return missing(g, key, err, errlen);
    if (kv->type != VG_GGUF_ARRAY)
        return wrong_type(g, kv, "ARRAY", err, errlen);
    *out = kv;
    return 0;
}

int vg_gguf_arr_int(const vg_gguf_kv *kv, uint64_t i, int64_t *out)
{
    size_t sz = scalar_size(kv->arr_type);
    if (kv->type != VG_GGUF_ARRAY || i >= kv->n || !sz)
        return VG_EMODEL;
    return int_at(kv->arr_type, kv->val + (size_t)i * sz, out) == 0 ? 0 : VG_EMODEL;
}

int vg_gguf_arr_float(const vg_gguf_kv *kv, uint64_t i, double *out)
{
    size_t sz = scalar_size(kv->arr_type);
    if (kv->type != VG_GGUF_ARRAY || i >= kv->n || !sz)
        return VG_EMODEL;
    return float_at(kv->arr_type, kv->val + (size_t)i * sz, out) == 0 ? 0 : VG_EMODEL;
}

int vg_gguf_arr_str_next(const vg_gguf_kv *kv, vg_gguf_str_iter *it, const char **s, size_t *len)
{
    if (kv->type != VG_GGUF_ARRAY || kv->arr_type != VG_GGUF_STRING)
        return 0;
    if (!it->p) {
        it->p = kv->val;
        it->i = 0;
    }
    if (it->i >= kv->n)
        return 0;
    uint64_t n = rd64(it->p); /* validated at open */
    *s = (const char *)it->p + 8;
    *len = (size_t)n;
    it->p += 8 + n;
    it->i++;
    return 1;
}
