/*
 * gguf.h: reading GGUF v3 files (llama.cpp's checkpoint format) -- model/'s private interface,
 * never included outside model/ and its tests.
 *
 * A vg_gguf is one file mapped read-only. vg_gguf_open() validates the whole header before
 * anything else reads the mapping: magic, version 3, the key/value section (every type, arrays,
 * string lengths), the tensor infos (names, at most 4 dimensions, known ggml types, rows a whole
 * number of blocks), general.alignment (a power of two), and every tensor's data lying inside the
 * file at an aligned offset without overlapping another. Every count and length read from the file
 * is checked against the bytes that remain before it is used, and nothing is allocated from a count
 * before that check, so a hostile file costs at most a few times its own size in memory.
 *
 * Values stay in the mapping; the accessors below decode them (little-endian, read through memcpy,
 * so misaligned values are fine). Strings in the file are not NUL-terminated: they come back as a
 * pointer and a length. Keys and tensor names are copied out NUL-terminated (a name holding a NUL
 * byte is refused).
 *
 * Threads: a vg_gguf is immutable after opening; any number of threads may read it.
 * Errors: VG_EFORMAT (a malformed file: the sentence says what and where), VG_EMODEL (a well-formed
 * file that lacks what the caller asked for), -errno for open/mmap failures.
 */
#ifndef VG_MODEL_GGUF_H
#define VG_MODEL_GGUF_H

#include <stddef.h>
#include <stdint.h>

/* Metadata value types (the GGUF spec's numbering). */
enum {
    VG_GGUF_UINT8 = 0,
    VG_GGUF_INT8 = 1,
    VG_GGUF_UINT16 = 2,
    VG_GGUF_INT16 = 3,
    VG_GGUF_UINT32 = 4,
    VG_GGUF_INT32 = 5,
    VG_GGUF_FLOAT32 = 6,
    VG_GGUF_BOOL = 7,
    VG_GGUF_STRING = 8,
    VG_GGUF_ARRAY = 9,
    VG_GGUF_UINT64 = 10,
    VG_GGUF_INT64 = 11,
    VG_GGUF_FLOAT64 = 12,
};

/* Tensor types (ggml's numbering). The reader knows the block size of these; any other number is
 * an "unknown tensor type" error. Which of them the engine can compute with is model.c's concern.
 */
enum {
    VG_GGML_F32 = 0,
    VG_GGML_F16 = 1,
    VG_GGML_Q4_0 = 2,
    VG_GGML_Q4_1 = 3,
    VG_GGML_Q5_0 = 6,
    VG_GGML_Q5_1 = 7,
    VG_GGML_Q8_0 = 8,
    VG_GGML_Q8_1 = 9,
    VG_GGML_Q2_K = 10,
    VG_GGML_Q3_K = 11,
    VG_GGML_Q4_K = 12,
    VG_GGML_Q5_K = 13,
    VG_GGML_Q6_K = 14,
    VG_GGML_Q8_K = 15,
    VG_GGML_IQ4_NL = 20,
    VG_GGML_IQ4_XS = 23,
    VG_GGML_I8 = 24,
    VG_GGML_I16 = 25,
    VG_GGML_I32 = 26,
    VG_GGML_I64 = 27,
    VG_GGML_F64 = 28,
    VG_GGML_BF16 = 30,
};

#define VG_GGUF_MAX_DIMS 4
#define VG_GGUF_MAX_NAME 256 /* bytes of a tensor name (ggml itself keeps 63) */
#define VG_GGUF_MAX_KEY  65535

typedef struct vg_gguf vg_gguf;

typedef struct vg_gguf_kv {
    const char *key;          /* NUL-terminated, owned by the vg_gguf */
    uint32_t type;            /* VG_GGUF_* */
    uint32_t arr_type;        /* element type when type is VG_GGUF_ARRAY */
    uint64_t n;               /* array element count (1 for a scalar) */
    const unsigned char *val; /* in the mapping: the scalar, the string's 8-byte length, or the
                                 first array element */
    size_t val_bytes;         /* bytes of the value (all elements) in the mapping */
} vg_gguf_kv;

typedef struct vg_gguf_tensor {
    const char *name; /* NUL-terminated, owned by the vg_gguf */
    uint32_t type;    /* VG_GGML_* */
    int ndim;
    int64_t ne[VG_GGUF_MAX_DIMS]; /* ggml order: ne[0] is the contiguous (innermost) dimension;
                                     unused dims are 1 */
    size_t numel;
    size_t nbytes;
    uint64_t offset;  /* from the start of the data section */
    const void *data; /* inside the mapping, validated */
} vg_gguf_tensor;

/* Maps and validates path (see the top of this file). Caller frees with vg_gguf_close(). */
int vg_gguf_open(const char *path, vg_gguf **out, char *err, size_t errlen);
void vg_gguf_close(vg_gguf *g);
/* If data[0..n) lies in g's mapping: *fd a new close-on-exec descriptor of the mapped file (the
 * caller closes it) and *off the offset of data in it; 0, else -1. */
int vg_gguf_locate(const vg_gguf *g, const void *data, size_t n, int *fd, uint64_t *off);
const char *vg_gguf_path(const vg_gguf *g);
/* The base name of the path, for error messages. */
const char *vg_gguf_base(const vg_gguf *g);
uint32_t vg_gguf_alignment(const vg_gguf *g);
/* Bytes of the file (the mapping). */
size_t vg_gguf_file_size(const vg_gguf *g);

size_t vg_gguf_n_kv(const vg_gguf *g);
const vg_gguf_kv *vg_gguf_kv_at(const vg_gguf *g, size_t i);
/* The entry with that key, or NULL. */
const vg_gguf_kv *vg_gguf_find_kv(const vg_gguf *g, const char *key);

size_t vg_gguf_n_tensors(const vg_gguf *g);
const vg_gguf_tensor *vg_gguf_tensor_at(const vg_gguf *g, size_t i);
const vg_gguf_tensor *vg_gguf_find_tensor(const vg_gguf *g, const char *name);

/* Typed metadata. Each returns 0, or VG_EMODEL naming the file and key when the key is missing,
 * has another type, or (integers) lies outside [min, max]. */
/* Any integer type (and bool). */
int vg_gguf_get_int(const vg_gguf *g, const char *key, int64_t min, int64_t max, int64_t *out,
                    char *err, size_t errlen);
/* FLOAT32 or FLOAT64, finite. */
int vg_gguf_get_float(const vg_gguf *g, const char *key, double *out, char *err, size_t errlen);
/* STRING: *s points into the mapping (not NUL-terminated), *len bytes. */
int vg_gguf_get_str(const vg_gguf *g, const char *key, const char **s, size_t *len, char *err,
                    size_t errlen);
/* ARRAY (of any element type); *kv is the entry. */
int vg_gguf_get_arr(const vg_gguf *g, const char *key, const vg_gguf_kv **kv, char *err,
                    size_t errlen);

/* Element i (< kv->n) of an array of integers (or bool) as int64_t; 0, or VG_EMODEL when the
 * element type is not an integer or a uint64 does not fit. */
int vg_gguf_arr_int(const vg_gguf_kv *kv, uint64_t i, int64_t *out);
/* Element i of an array of FLOAT32/FLOAT64. */
int vg_gguf_arr_float(const vg_gguf_kv *kv, uint64_t i, double *out);

/* Walks an array of strings in order: start with it.p = NULL; each call gives the next string
 * (pointer into the mapping and length) and returns 1, or 0 at the end (or for a non-string
 * array). The lengths were validated at open. */
typedef struct vg_gguf_str_iter {
    const unsigned char *p;
    uint64_t i;
} vg_gguf_str_iter;
int vg_gguf_arr_str_next(const vg_gguf_kv *kv, vg_gguf_str_iter *it, const char **s, size_t *len);

/* Block size (elements) and bytes per block of a tensor type; 0, or -1 for an unknown type. */
int vg_ggml_type_block(uint32_t type, size_t *elems, size_t *bytes);
/* "F32", "Q4_K", ... or "?" */
const char *vg_ggml_type_name(uint32_t type);
/* The value type's name ("UINT32", ...), or "?". */
const char *vg_gguf_type_name(uint32_t type);

/* ---------------------------------------------------------------------------------------------------
 * Writing (gguf_write.c). Metadata and tensor infos are collected in memory, in the order added;
 * vg_gguf_w_begin() then writes the header to path.tmp, the tensor data follows tensor by tensor
 * in the order the infos were added (vg_gguf_w_data in chunks of any size, vg_gguf_w_end_tensor
 * after each, which checks the byte count and pads to the 32-byte alignment), and
 * vg_gguf_w_finish() fsyncs and renames path.tmp to path. vg_gguf_w_free() removes an unfinished
 * path.tmp. Errors: VG_EINVAL (misuse, names over the limits), VG_ENOMEM, -errno from the I/O.
 * One thread at a time.
 */
typedef struct vg_gguf_writer vg_gguf_writer;
int vg_gguf_w_create(vg_gguf_writer **out);
void vg_gguf_w_free(vg_gguf_writer *w);
int vg_gguf_w_str(vg_gguf_writer *w, const char *key, const char *s);
int vg_gguf_w_u32(vg_gguf_writer *w, const char *key, uint32_t v);
int vg_gguf_w_f32(vg_gguf_writer *w, const char *key, float v);
int vg_gguf_w_bool(vg_gguf_writer *w, const char *key, int v);
/* Arrays: INT32, FLOAT32, BOOL (one byte each) and STRING (n strings of lens[i] bytes). */
int vg_gguf_w_arr_i32(vg_gguf_writer *w, const char *key, const int32_t *v, size_t n);
int vg_gguf_w_arr_f32(vg_gguf_writer *w, const char *key, const float *v, size_t n);
int vg_gguf_w_arr_bool(vg_gguf_writer *w, const char *key, const uint8_t *v, size_t n);
int vg_gguf_w_arr_str(vg_gguf_writer *w, const char *key, const char *const *s, const size_t *lens,
                      size_t n);
/* A tensor of ggml type `type` with ndim sizes ne[] (innermost first). */
int vg_gguf_w_tensor(vg_gguf_writer *w, const char *name, uint32_t type, int ndim,
                     const int64_t *ne);
int vg_gguf_w_begin(vg_gguf_writer *w, const char *path, char *err, size_t errlen);
int vg_gguf_w_data(vg_gguf_writer *w, const void *p, size_t n, char *err, size_t errlen);
int vg_gguf_w_end_tensor(vg_gguf_writer *w, char *err, size_t errlen);
int vg_gguf_w_finish(vg_gguf_writer *w, char *err, size_t errlen);

#endif
