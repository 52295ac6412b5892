/*
 * safetensors.c: reading and writing safetensors checkpoints.
 *
 * Reading: each file is mapped read-only (PROT_READ, MAP_PRIVATE) and never written. Its header is
 * copied out and parsed with cJSON; nothing in the mapping is used before the whole header has been
 * validated: header length within the file (and under VG_ST_MAX_HEADER), a JSON object, known
 * dtypes, shapes of at most VG_MAX_DIMS non-negative integers with an overflow-checked element
 * count, data_offsets inside the data section and matching numel * element size, no two tensors
 * overlapping, no duplicate names (also across shards). A sharded checkpoint is described by
 * model.safetensors.index.json, whose weight_map values must be plain file names in the same
 * directory. Tensor data pointers may be misaligned (the format does not promise alignment), so
 * elements are only ever read through memcpy. Tensors are kept sorted by name for lookup.
 *
 * Writing: the header (keys sorted, "__metadata__" first, padded with spaces to a multiple of 8
 * like the reference writer) is computed from names, dtypes and shapes alone, so data can be
 * streamed tensor by tensor; the file goes to path.tmp, is fsync'ed and renamed over path.
 *
 * Threads: a vg_st is immutable after opening and may be read from any number of threads.
 * Little-endian hosts only (the format is little-endian and so is every target of vigil).
 */
#include "internal.h"

#include "common.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define VG_ST_MAX_HEADER ((uint64_t)100 * 1024 * 1024)
#define VG_ST_MAX_INDEX  ((size_t)64 * 1024 * 1024)
#define VG_ST_MAX_NAME   1024

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

typedef struct st_file {
    char *path;
    void *map;
    size_t size;
    int fd; /* the file that was checked and mapped, kept open for vg_st_locate (-1: none) */
    const unsigned char *data; /* start of the data section */
    size_t data_size;
} st_file;

struct vg_st {
    st_file *files;
    size_t n_files;
    vg_tensor *tensors; /* sorted by name */
    size_t n;
    size_t bytes;
    vg_arena *arena;         /* names and paths */
    void (*release)(void *); /* vg_st_wrap: the keeper of the tensors' data, called at close */
    void *release_arg;
    /* vg_st_wrap: where a tensor's bytes lie in the keeper's files (vg_st_set_locate) */
    int (*locate)(void *arg, const void *data, size_t n, int *fd, uint64_t *off);
};

/* ---------------------------------------------------------------------------------------------------
 * Scalar conversions.
 */
uint16_t vg_f32_to_bf16(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep the sign, force a quiet mantissa bit */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; overflow rounds up to inf */
    return (uint16_t)(u >> 16);
}

float vg_f16_to_f32(uint16_t v)
{
    uint32_t sign = (uint32_t)(v & 0x8000u) << 16;
    uint32_t exp = (v >> 10) & 0x1fu;
    uint32_t man = v & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalize */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            man &= 0x3ffu;
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0u);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

size_t vg_dtype_size(vg_dtype dt)
{
    return dt == VG_DT_F32 ? 4 : 2;
}

const char *vg_dtype_name(vg_dtype dt)
{
    switch (dt) {
    case VG_DT_F32:
        return "F32";
    case VG_DT_BF16:
        return "BF16";
    case VG_DT_F16:
        return "F16";
    default:
        return vg_dtype_block_name(dt);
    }
}

void vg_tensor_to_f32(const vg_tensor *t, float *dst)
{
    const unsigned char *src = t->data;
    size_t n = t->numel;
    switch (t->dtype) {
    case VG_DT_F32:
        if (n)
            memcpy(dst, src, n * 4);
        break;
    case VG_DT_BF16: {
        uint32_t *d = (uint32_t *)(void *)dst;
        if (((uintptr_t)src & 1u) ==
            0) { /* the usual case: a plain widening loop that vectorizes */
            const uint16_t *s = (const uint16_t *)(const void *)src;
            for (size_t i = 0; i < n; i++)
                d[i] = (uint32_t)s[i] << 16;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, src + 2 * i, 2);
            d[i] = (uint32_t)v << 16;
        }
        break;
    }
    case VG_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, src + 2 * i, 2);
            dst[i] = vg_f16_to_f32(v);
        }
        break;
    default: /* GGUF block types (quant.c) */
        vg_tensor_dequant_all(t, dst);
        break;
    }
}

/* Element i of t as float32 (t->data holds numel elements of t->dtype). */
static float element_f32(const vg_tensor *t, size_t i)
{
    const unsigned char *src = t->data;
    uint16_t h;
    float f;
    switch (t->dtype) {
    case VG_DT_F32:
        memcpy(&f, src + 4 * i, 4);
        return f;
    case VG_DT_BF16:
        memcpy(&h, src + 2 * i, 2);
        return vg_bf16_to_f32(h);
    case VG_DT_F16:
        memcpy(&h, src + 2 * i, 2);
        return vg_f16_to_f32(h);
    default:
        return vg_tensor_elem_f32(t, i);
    }
}

int vg_tensor_check_finite(const vg_tensor *t, char *err, size_t errlen)
{
    /* A sample, to stay cheap on mapped weights: the first VG_FINITE_HEAD elements, then about
     * VG_FINITE_SPREAD more spread evenly to the end (one page each at most). An all-NaN or
     * overflowed tensor is caught; a single NaN deep inside a large tensor may not be. */
    enum { VG_FINITE_HEAD = 1024, VG_FINITE_SPREAD = 1024 };
    size_t n = t->numel, head = n < VG_FINITE_HEAD ? n : VG_FINITE_HEAD;
    size_t step = n > head ? (n - head) / VG_FINITE_SPREAD + 1 : 1;
    for (size_t i = 0; i < n; i = i < head ? i + 1 : i + step) {
        float v = element_f32(t, i);
        if (!isfinite(v))
            return vg_fail(err, errlen, VG_EMODEL,
                           "%s: tensor '%s' holds a non-finite value (%s) at element %zu: the "
                           "checkpoint is corrupt",
                           t->file, t->name, isnan(v) ? "NaN" : "infinity", i);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Reading.
 */
static int parse_dtype(const char *s, vg_dtype *dt)
{
    if (strcmp(s, "F32") == 0)
        *dt = VG_DT_F32;
    else if (strcmp(s, "BF16") == 0)
        *dt = VG_DT_BF16;
    else if (strcmp(s, "F16") == 0)
        *dt = VG_DT_F16;
    else
        return -1;
    return 0;
}

/* A JSON number that is a non-negative integer no larger than 2^53 (exact in a double). */
static int json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return -1;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || d != floor(d))
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t o = 0;
    int w = snprintf(buf, cap, "[");
    o = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < ndim && o < cap; i++) {
        w = snprintf(buf + o, cap - o, "%s%lld", i ? "," : "", (long long)shape[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    if (o < cap)
        snprintf(buf + o, cap - o, "]");
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const vg_tensor *)a)->name, ((const vg_tensor *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const vg_tensor *x = *(const vg_tensor *const *)a, *y = *(const vg_tensor *const *)b;
    uintptr_t px = (uintptr_t)x->data, py = (uintptr_t)y->data;
    if (px != py)
        return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int grow_tensors(vg_st *st, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 256;
    while (nc < need)
        nc *= 2;
    vg_tensor *t = realloc(st->tensors, nc * sizeof *t);
    if (!t)
        return VG_ENOMEM;
    st->tensors = t;
    *cap = nc;
    return 0;
}

/* Maps one file, validates its header and appends its tensors to st->tensors. */
static int load_file(vg_st *st, size_t *cap, const char *path, char *err, size_t errlen)
{
    if (st->n_files % 16 == 0) {
        st_file *f = realloc(st->files, (st->n_files + 16) * sizeof *f);
        if (!f)
            return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
        st->files = f;
    }
    st_file *f = &st->files[st->n_files];
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->path = vg_arena_strdup(st->arena, path);
    if (!f->path)
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);

    /* O_NONBLOCK: a FIFO (or device) in place of the file must fail the S_ISREG check below
     * instead of blocking the open forever; it changes nothing for a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return vg_fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = -errno;
        close(fd);
        return vg_fail(err, errlen, e, "%s: %s", path, vg_strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return vg_fail(err, errlen, VG_EFORMAT, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return vg_fail(err, errlen, VG_EFORMAT,
                       "%s: truncated safetensors file (%lld bytes, need at least 8)", path,
                       (long long)sb.st_size);
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return vg_fail(err, errlen, VG_EFORMAT, "%s: file too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    if (map == MAP_FAILED) {
        close(fd);
        return vg_fail(err, errlen, -map_errno, "%s: mmap: %s", path, strerror(map_errno));
    }
    f->map = map;
    f->size = size;
    f->fd = fd;
    st->n_files++; /* from here on vg_st_close() unmaps it and closes fd */

    const unsigned char *p = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | p[i];
    if (hlen > size - 8)
        return vg_fail(err, errlen, VG_EFORMAT,
                       "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                       (unsigned long long)hlen, size);
    if (hlen > VG_ST_MAX_HEADER)
        return vg_fail(err, errlen, VG_EFORMAT,
                       "%s: header length %llu exceeds the %llu-byte limit", path,
                       (unsigned long long)hlen, (unsigned long long)VG_ST_MAX_HEADER);
    if (hlen < 2)
        return vg_fail(err, errlen, VG_EFORMAT, "%s: header is not a JSON object", path);
    f->data = p + 8 + hlen;
    f->data_size = size - 8 - (size_t)hlen;

    /* A NUL-terminated private copy, so the parser never runs off the mapping. */
    char *text = malloc((size_t)hlen + 1);
    if (!text)
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory for the header", path);
    memcpy(text, p + 8, (size_t)hlen);
    text[hlen] = '\0';
    cJSON *root = cJSON_ParseWithLength(text, (size_t)hlen);
    free(text);
    if (!root)
        return vg_fail(err, errlen, VG_EFORMAT, "%s: header is not valid JSON", path);
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: header is not a JSON object", path);
        goto out;
    }
    size_t first = st->n;
    for (const cJSON *e = root->child; e; e = e->next) {
        const char *name = e->string;
        if (!name || !*name) {
            rc = vg_fail(err, errlen, VG_EFORMAT, "%s: header has a tensor with an empty name",
                         path);
            goto out;
        }
        if (strcmp(name, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                rc = vg_fail(err, errlen, VG_EFORMAT, "%s: __metadata__ is not an object", path);
                goto out;
            }
            continue;
        }
        if (strlen(name) > VG_ST_MAX_NAME) {
            rc = vg_fail(err, errlen, VG_EFORMAT, "%s: tensor name longer than %d bytes", path,
                         VG_ST_MAX_NAME);
            goto out;
        }
        if (!cJSON_IsObject(e)) {
            rc = vg_fail(err, errlen, VG_EFORMAT, "%s: tensor '%s': entry is not an object", path,
                         name);
            goto out;
        }
        const cJSON *jdt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *jsh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *jof = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(jdt) || !cJSON_IsArray(jsh) || !cJSON_IsArray(jof)) {
            rc = vg_fail(err, errlen, VG_EFORMAT,
                         "%s: tensor '%s': needs string dtype, array shape and array data_offsets",
                         path, name);
            goto out;
        }
        vg_tensor t = {0};
        if (parse_dtype(jdt->valuestring, &t.dtype) != 0) {
            rc = vg_fail(err, errlen, VG_EMODEL,
                         "%s: tensor '%s': unsupported dtype '%.32s' (F32, BF16 and F16 are)", path,
                         name, jdt->valuestring);
            goto out;
        }
        int ndim = cJSON_GetArraySize(jsh);
        if (ndim > VG_MAX_DIMS) {
            rc = vg_fail(err, errlen, VG_EFORMAT, "%s: tensor '%s': %d dimensions (at most %d)",
                         path, name, ndim, VG_MAX_DIMS);
            goto out;
        }
        t.ndim = ndim;
        size_t numel = 1;
        int d = 0;
        for (const cJSON *s = jsh->child; s; s = s->next, d++) {
            uint64_t v;
            if (json_uint(s, &v) != 0) {
                rc = vg_fail(err, errlen, VG_EFORMAT,
                             "%s: tensor '%s': shape[%d] is not a non-negative integer", path, name,
                             d);
                goto out;
            }
            t.shape[d] = (int64_t)v;
            if (vg_mul_size(numel, (size_t)v, &numel) != 0) {
                rc = vg_fail(err, errlen, VG_EFORMAT, "%s: tensor '%s': element count overflows",
                             path, name);
                goto out;
            }
        }
        t.numel = numel;
        uint64_t begin, end;
        if (cJSON_GetArraySize(jof) != 2 || json_uint(jof->child, &begin) != 0 ||
            json_uint(jof->child->next, &end) != 0) {
            rc = vg_fail(err, errlen, VG_EFORMAT,
                         "%s: tensor '%s': data_offsets must be two non-negative integers", path,
                         name);
            goto out;
        }
        if (begin > end || end > f->data_size) {
            rc = vg_fail(err, errlen, VG_EFORMAT,
                         "%s: tensor '%s': data_offsets [%llu,%llu] outside the %zu-byte data "
                         "section",
                         path, name, (unsigned long long)begin, (unsigned long long)end,
                         f->data_size);
            goto out;
        }
        size_t nbytes;
        if (vg_mul_size(numel, vg_dtype_size(t.dtype), &nbytes) != 0 ||
            (uint64_t)nbytes != end - begin) {
            char sh[160];
            fmt_shape(sh, sizeof sh, t.ndim, t.shape);
            rc = vg_fail(err, errlen, VG_EFORMAT,
                         "%s: tensor '%s': shape %s of %s needs %zu bytes but data_offsets span "
                         "%llu",
                         path, name, sh, vg_dtype_name(t.dtype), numel * vg_dtype_size(t.dtype),
                         (unsigned long long)(end - begin));
            goto out;
        }
        t.nbytes = nbytes;
        t.data = f->data + begin;
        t.file = f->path;
        t.name = vg_arena_strdup(st->arena, name);
        if (!t.name || grow_tensors(st, cap, st->n + 1) != 0) {
            rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        st->tensors[st->n++] = t;
    }

    /* Overlap check within this file: sort the non-empty tensors by start. */
    size_t cnt = st->n - first;
    if (cnt > 1) {
        const vg_tensor **order = malloc(cnt * sizeof *order);
        if (!order) {
            rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        size_t m = 0;
        for (size_t i = first; i < st->n; i++)
            if (st->tensors[i].nbytes)
                order[m++] = &st->tensors[i];
        qsort(order, m, sizeof *order, cmp_tensor_offset);
        for (size_t i = 1; i < m; i++) {
            const unsigned char *prev_end =
                (const unsigned char *)order[i - 1]->data + order[i - 1]->nbytes;
            if ((const unsigned char *)order[i]->data < prev_end) {
                rc = vg_fail(err, errlen, VG_EFORMAT, "%s: tensors '%s' and '%s' overlap", path,
                             order[i - 1]->name, order[i]->name);
                break;
            }
        }
        free(order);
    }
out:
    cJSON_Delete(root);
    return rc;
}

static int valid_shard_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 255 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    if (strchr(s, '/') || strchr(s, '\\') || strstr(s, ".."))
        return 0;
    return 1;
}

static int finish_open(vg_st *st, char *err, size_t errlen)
{
    if (st->n > 1)
        qsort(st->tensors, st->n, sizeof *st->tensors, cmp_tensor_name);
    for (size_t i = 1; i < st->n; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return vg_fail(err, errlen, VG_EFORMAT, "%s: duplicate tensor '%s' (also in %s)",
                           st->tensors[i].file, st->tensors[i].name, st->tensors[i - 1].file);
    size_t total = 0;
    for (size_t i = 0; i < st->n; i++)
        total += st->tensors[i].nbytes; /* each lies within a mapped file: cannot overflow */
    st->bytes = total;
    return 0;
}

static vg_st *st_new(void)
{
    vg_st *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->arena = vg_arena_create(0);
    if (!st->arena) {
        free(st);
        return NULL;
    }
    return st;
}

void vg_st_close(vg_st *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_files; i++) {
        if (st->files[i].map)
            munmap(st->files[i].map, st->files[i].size);
        if (st->files[i].fd >= 0)
            close(st->files[i].fd);
    }
    free(st->files);
    free(st->tensors);
    vg_arena_destroy(st->arena);
    if (st->release)
        st->release(st->release_arg);
    free(st);
}

int vg_map_locate(const void *map, size_t size, int map_fd, const void *data, size_t n, int *fd,
                  uint64_t *off)
{
    const unsigned char *b = map, *d = data;
    if (!b || map_fd < 0 || d < b || (size_t)(d - b) > size || n > size - (size_t)(d - b))
        return -1;
    int c = fcntl(map_fd, F_DUPFD_CLOEXEC, 0);
    if (c < 0)
        return -1;
    *fd = c;
    *off = (uint64_t)(d - b);
    return 0;
}

int vg_st_locate(const vg_st *st, const vg_tensor *t, int *fd, uint64_t *off)
{
    if (!st || !t || !fd || !off)
        return -1;
    if (st->locate)
        return st->locate(st->release_arg, t->data, t->nbytes, fd, off);
    for (size_t i = 0; i < st->n_files; i++) {
        const st_file *f = &st->files[i];
        const unsigned char *b = f->map, *d = t->data;
        if (b && d >= b && (size_t)(d - b) <= f->size) /* the file holding t */
            return vg_map_locate(f->map, f->size, f->fd, t->data, t->nbytes, fd, off);
    }
    return -1;
}

void vg_st_set_locate(vg_st *st,
                      int (*locate)(void *arg, const void *data, size_t n, int *fd, uint64_t *off))
{
    if (st)
        st->locate = locate;
}

int vg_st_wrap(vg_tensor *tensors, size_t n, void (*release)(void *), void *arg, vg_st **out,
               char *err, size_t errlen)
{
    vg_st *st = st_new();
    if (!st) {
        free(tensors);
        if (release)
            release(arg);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    }
    st->tensors = tensors;
    st->n = n;
    st->release = release;
    st->release_arg = arg;
    int rc = finish_open(st, err, errlen);
    if (rc != 0) {
        vg_st_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

int vg_st_open_file(const char *path, vg_st **out, char *err, size_t errlen)
{
    if (!path || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_st_open_file: NULL argument");
    vg_st *st = st_new();
    if (!st)
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
    size_t cap = 0;
    int rc = load_file(st, &cap, path, err, errlen);
    if (rc == 0)
        rc = finish_open(st, err, errlen);
    if (rc != 0) {
        vg_st_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int open_index(vg_st *st, const char *dir, const char *index_path, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = vg_read_file(index_path, VG_ST_MAX_INDEX, &text, &len, err, errlen);
    if (rc != 0)
        return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root)
        return vg_fail(err, errlen, VG_EFORMAT, "%s: not valid JSON", index_path);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    size_t cap = 0;
    char **shards = NULL;
    size_t n_shards = 0;
    if (!cJSON_IsObject(wm) || !wm->child) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: missing or empty \"weight_map\" object",
                     index_path);
        goto out;
    }
    /* Distinct shard names, each checked to be a plain file name inside dir. */
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->string) {
            rc = vg_fail(err, errlen, VG_EFORMAT, "%s: weight_map entry '%s' is not a file name",
                         index_path, e->string ? e->string : "");
            goto out;
        }
        if (!valid_shard_name(e->valuestring)) {
            rc = vg_fail(err, errlen, VG_EFORMAT,
                         "%s: tensor '%s': shard '%.200s' is not a plain file name in the "
                         "checkpoint directory",
                         index_path, e->string, e->valuestring);
            goto out;
        }
        size_t i = 0;
        while (i < n_shards && strcmp(shards[i], e->valuestring) != 0)
            i++;
        if (i == n_shards) {
            char **ns = realloc(shards, (n_shards + 1) * sizeof *ns);
            if (!ns) {
                rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", index_path);
                goto out;
            }
            shards = ns;
            shards[n_shards++] = e->valuestring;
        }
    }
    for (size_t i = 0; i < n_shards; i++) {
        char *p = join_path(dir, shards[i]);
        if (!p) {
            rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", index_path);
            goto out;
        }
        rc = load_file(st, &cap, p, err, errlen);
        free(p);
        if (rc != 0)
            goto out;
    }
    rc = finish_open(st, err, errlen);
    if (rc != 0)
        goto out;
    /* Every tensor the index lists must be in the shard it names. */
    for (const cJSON *e = wm->child; e; e = e->next) {
        const vg_tensor *t = vg_st_find(st, e->string);
        const char *base = NULL;
        if (t) {
            base = strrchr(t->file, '/');
            base = base ? base + 1 : t->file;
        }
        if (!t || strcmp(base, e->valuestring) != 0) {
            rc = vg_fail(err, errlen, VG_EMODEL, "%s: tensor '%s' is listed in %s but not there",
                         index_path, e->string, e->valuestring);
            goto out;
        }
    }
out:
    free(shards);
    cJSON_Delete(root);
    return rc;
}

int vg_st_open_dir(const char *dir, vg_st **out, char *err, size_t errlen)
{
    if (!dir || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_st_open_dir: NULL argument");
    char *index_path = join_path(dir, "model.safetensors.index.json");
    char *single = join_path(dir, "model.safetensors");
    vg_st *st = st_new();
    int rc = 0;
    if (!index_path || !single || !st) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", dir);
        goto out;
    }
    if (access(index_path, F_OK) == 0) {
        rc = open_index(st, dir, index_path, err, errlen);
    } else if (access(single, F_OK) == 0) {
        size_t cap = 0;
        rc = load_file(st, &cap, single, err, errlen);
        if (rc == 0)
            rc = finish_open(st, err, errlen);
    } else {
        rc = vg_fail(err, errlen, VG_ENOENT,
                     "%s: neither model.safetensors nor model.safetensors.index.json exists", dir);
    }
out:
    free(index_path);
    free(single);
    if (rc != 0) {
        vg_st_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

const vg_tensor *vg_st_find(const vg_st *st, const char *name)
{
    if (!st || !name || st->n == 0)
        return NULL;
    vg_tensor key = {.name = name};
    return bsearch(&key, st->tensors, st->n, sizeof *st->tensors, cmp_tensor_name);
}

size_t vg_st_count(const vg_st *st)
{
    return st ? st->n : 0;
}

const vg_tensor *vg_st_at(const vg_st *st, size_t i)
{
    return st && i < st->n ? &st->tensors[i] : NULL;
}

size_t vg_st_bytes(const vg_st *st)
{
    return st ? st->bytes : 0;
}

static const char *file_base(const vg_st *st)
{
    if (st->n_files == 1) {
        const char *b = strrchr(st->files[0].path, '/');
        return b ? b + 1 : st->files[0].path;
    }
    return "model.safetensors.index.json";
}

int vg_st_expect(const vg_st *st, const char *name, int ndim, const int64_t *shape,
                 const vg_tensor **out, char *err, size_t errlen)
{
    const vg_tensor *t = vg_st_find(st, name);
    if (!t)
        return vg_fail(err, errlen, VG_EMODEL, "%s: tensor '%s' is missing",
                       st ? file_base(st) : "checkpoint", name ? name : "(null)");
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (!ok) {
        char have[160], want[160];
        const char *b = strrchr(t->file, '/');
        fmt_shape(have, sizeof have, t->ndim, t->shape);
        fmt_shape(want, sizeof want, ndim < 0 ? 0 : VG_MIN(ndim, VG_MAX_DIMS), shape);
        return vg_fail(err, errlen, VG_EMODEL, "%s: tensor '%s': shape %s, expected %s",
                       b ? b + 1 : t->file, name, have, want);
    }
    if (out)
        *out = t;
    return 0;
}

int vg_st_get_f32(const vg_st *st, const char *name, int ndim, const int64_t *shape, float **out,
                  char *err, size_t errlen)
{
    const vg_tensor *t;
    int rc = vg_st_expect(st, name, ndim, shape, &t, err, errlen);
    if (rc != 0)
        return rc;
    float *d = malloc(t->numel ? t->numel * sizeof *d : 1);
    if (!d)
        return vg_fail(err, errlen, VG_ENOMEM, "tensor '%s': out of memory (%zu floats)", name,
                       t->numel);
    vg_tensor_to_f32(t, d);
    *out = d;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Writing.
 */
#define WBUF_SIZE ((size_t)8 << 20)

struct vg_st_writer {
    int fd;
    char *path, *tmp;
    unsigned char *buf;
    size_t used;
    uint64_t expected, written; /* data bytes */
};

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > nc)
            nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            sb_put(b, esc, 2);
        } else if (*c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int write_all(int fd, const void *data, size_t n)
{
    const unsigned char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int cmp_index_by_name(const void *a, const void *b, const vg_st_write_tensor *t)
{
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

/* Insertion-free sort of an index permutation by name (qsort has no context argument in C11). */
static void sort_indices(size_t *idx, size_t n, const vg_st_write_tensor *t)
{
    /* Bottom-up merge sort: O(n log n), stable, no recursion. */
    size_t *tmp = malloc(n * sizeof *tmp);
    if (!tmp) { /* fall back to insertion sort */
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0 && cmp_index_by_name(&idx[j - 1], &idx[j], t) > 0; j--) {
                size_t s = idx[j];
                idx[j] = idx[j - 1];
                idx[j - 1] = s;
            }
        return;
    }
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = VG_MIN(lo + w, n), hi = VG_MIN(lo + 2 * w, n);
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = cmp_index_by_name(&idx[i], &idx[j], t) <= 0 ? idx[i++] : idx[j++];
            while (i < mid)
                tmp[k++] = idx[i++];
            while (j < hi)
                tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
    free(tmp);
}

void vg_st_writer_abort(vg_st_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp);
    }
    free(w->path);
    free(w->tmp);
    free(w->buf);
    free(w);
}

int vg_st_writer_open(const char *path, const vg_st_write_tensor *tensors, size_t n,
                      vg_st_writer **out, char *err, size_t errlen)
{
    if (!path || !out || (n && !tensors))
        return vg_fail(err, errlen, VG_EINVAL, "vg_st_writer_open: NULL argument");
    /* Validate and compute the data layout (data in the order given). */
    uint64_t off = 0;
    uint64_t *offs = malloc((n ? n : 1) * 2 * sizeof *offs);
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    sbuf hb = {0};
    vg_st_writer *w = NULL;
    int rc = 0;
    if (!offs || !idx) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const vg_st_write_tensor *t = &tensors[i];
        if (!t->name || !*t->name || strcmp(t->name, "__metadata__") == 0 ||
            strlen(t->name) > VG_ST_MAX_NAME) {
            rc = vg_fail(err, errlen, VG_EINVAL, "%s: tensor %zu has an invalid name", path, i);
            goto fail;
        }
        if (t->ndim < 0 || t->ndim > VG_MAX_DIMS ||
            (t->dtype != VG_DT_F32 && t->dtype != VG_DT_BF16 && t->dtype != VG_DT_F16)) {
            rc = vg_fail(err, errlen, VG_EINVAL, "%s: tensor '%s': bad dtype or rank", path,
                         t->name);
            goto fail;
        }
        size_t nb = vg_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 || vg_mul_size(nb, (size_t)t->shape[d], &nb) != 0) {
                rc = vg_fail(err, errlen, VG_EINVAL, "%s: tensor '%s': bad shape", path, t->name);
                goto fail;
            }
        }
        offs[2 * i] = off;
        off += nb;
        offs[2 * i + 1] = off;
        idx[i] = i;
    }
    sort_indices(idx, n, tensors);
    for (size_t i = 1; i < n; i++)
        if (strcmp(tensors[idx[i - 1]].name, tensors[idx[i]].name) == 0) {
            rc = vg_fail(err, errlen, VG_EINVAL, "%s: duplicate tensor '%s'", path,
                         tensors[idx[i]].name);
            goto fail;
        }

    /* Header: sorted keys, metadata first, no spaces; padded with spaces to a multiple of 8. */
    sb_str(&hb, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t k = 0; k < n; k++) {
        const vg_st_write_tensor *t = &tensors[idx[k]];
        char num[64];
        sb_str(&hb, ",");
        sb_json_string(&hb, t->name);
        sb_str(&hb, ":{\"dtype\":\"");
        sb_str(&hb, vg_dtype_name(t->dtype));
        sb_str(&hb, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            sb_str(&hb, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}",
                 (unsigned long long)offs[2 * idx[k]], (unsigned long long)offs[2 * idx[k] + 1]);
        sb_str(&hb, num);
    }
    sb_str(&hb, "}");
    while (!hb.oom && hb.len % 8 != 0)
        sb_str(&hb, " ");
    if (hb.oom) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory for the header", path);
        goto fail;
    }

    w = calloc(1, sizeof *w);
    if (!w) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    w->fd = -1;
    w->path = strdup(path);
    w->tmp = malloc(strlen(path) + 5);
    w->buf = malloc(WBUF_SIZE);
    if (!w->path || !w->tmp || !w->buf) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    sprintf(w->tmp, "%s.tmp", path);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        rc = vg_fail(err, errlen, -errno, "%s: %s", w->tmp, strerror(errno));
        goto fail;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hb.len >> (8 * i));
    if ((rc = write_all(w->fd, len8, 8)) != 0 || (rc = write_all(w->fd, hb.p, hb.len)) != 0) {
        rc = vg_fail(err, errlen, rc, "%s: write: %s", w->tmp, vg_strerror(rc));
        goto fail;
    }
    w->expected = off;
    free(offs);
    free(idx);
    free(hb.p);
    *out = w;
    return 0;
fail:
    free(offs);
    free(idx);
    free(hb.p);
    vg_st_writer_abort(w);
    return rc;
}

static int flush_buf(vg_st_writer *w, char *err, size_t errlen)
{
    int rc = write_all(w->fd, w->buf, w->used);
    if (rc != 0)
        return vg_fail(err, errlen, rc, "%s: write: %s", w->tmp, vg_strerror(rc));
    w->used = 0;
    return 0;
}

int vg_st_writer_write(vg_st_writer *w, const void *data, size_t nbytes, char *err, size_t errlen)
{
    if (nbytes > w->expected - w->written)
        return vg_fail(err, errlen, VG_EINVAL, "%s: more tensor data than the header describes",
                       w->path);
    const unsigned char *p = data;
    w->written += nbytes;
    if (nbytes >= WBUF_SIZE) {
        int rc = flush_buf(w, err, errlen);
        if (rc == 0 && (rc = write_all(w->fd, p, nbytes)) != 0)
            rc = vg_fail(err, errlen, rc, "%s: write: %s", w->tmp, vg_strerror(rc));
        return rc;
    }
    while (nbytes) {
        size_t k = VG_MIN(nbytes, WBUF_SIZE - w->used);
        memcpy(w->buf + w->used, p, k);
        w->used += k;
        p += k;
        nbytes -= k;
        if (w->used == WBUF_SIZE) {
            int rc = flush_buf(w, err, errlen);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

int vg_st_writer_finish(vg_st_writer *w, char *err, size_t errlen)
{
    int rc = 0;
    if (w->written != w->expected) {
        rc = vg_fail(err, errlen, VG_EINVAL, "%s: %llu bytes of tensor data written, %llu expected",
                     w->path, (unsigned long long)w->written, (unsigned long long)w->expected);
    } else if ((rc = flush_buf(w, err, errlen)) == 0) {
        if (fsync(w->fd) != 0) {
            rc = vg_fail(err, errlen, -errno, "%s: fsync: %s", w->tmp, strerror(errno));
        } else {
            int fd = w->fd;
            w->fd = -1;
            if (close(fd) != 0) {
                rc = vg_fail(err, errlen, -errno, "%s: close: %s", w->tmp, strerror(errno));
                unlink(w->tmp);
            } else if (rename(w->tmp, w->path) != 0) {
                rc = vg_fail(err, errlen, -errno, "%s: rename: %s", w->path, strerror(errno));
                unlink(w->tmp);
            }
        }
    }
    vg_st_writer_abort(w);
    return rc;
}

int vg_st_write(const char *path, const vg_st_write_tensor *tensors, size_t n, char *err,
                size_t errlen)
{
    if (!path || (n && !tensors))
        return vg_fail(err, errlen, VG_EINVAL, "vg_st_write: NULL argument");
    /* Data in name order, like the header, so the file reads back in one sweep. */
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    vg_st_write_tensor *sorted = calloc(n ? n : 1, sizeof *sorted);
    if (!idx || !sorted) {
        free(idx);
        free(sorted);
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
    }
    for (size_t i = 0; i < n; i++) {
        idx[i] = i;
        if (!tensors[i].name) {
            free(idx);
            free(sorted);
            return vg_fail(err, errlen, VG_EINVAL, "%s: tensor %zu has no name", path, i);
        }
    }
    sort_indices(idx, n, tensors);
    for (size_t i = 0; i < n; i++)
        sorted[i] = tensors[idx[i]];
    free(idx);
    vg_st_writer *w;
    int rc = vg_st_writer_open(path, sorted, n, &w, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        size_t nb = vg_dtype_size(sorted[i].dtype);
        for (int d = 0; d < sorted[i].ndim; d++)
            nb *= (size_t)sorted[i].shape[d]; /* checked by vg_st_writer_open */
        if (nb && !sorted[i].data)
            rc = vg_fail(err, errlen, VG_EINVAL, "%s: tensor '%s' has no data", path,
                         sorted[i].name);
        else if (nb)
            rc = vg_st_writer_write(w, sorted[i].data, nb, err, errlen);
        if (rc != 0)
            vg_st_writer_abort(w);
    }
    if (rc == 0)
        rc = vg_st_writer_finish(w, err, errlen);
    free(sorted);
    return rc;
}
