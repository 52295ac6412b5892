/*
 * internal.h: model/'s private interfaces between its files (never included outside model/).
 *
 *  - safetensors.c: mapping and validating safetensors files (single or sharded), tensor lookup,
 *    dtype conversion, and writing checkpoints;
 *  - config.c: config.json / generation_config.json / video_preprocessor_config.json into a
 *    vg_model_info and vg_gen_params, with every value range-checked;
 *  - random.c: vg_model_write_random() (presets and random weights);
 *  - tokenizer.c: the tokenizer (public API in model.h);
 *  - model.c, vision.c, text.c, rope.c, sampling.c, generate.c: the engine.
 */
#ifndef VG_MODEL_INTERNAL_H
#define VG_MODEL_INTERNAL_H

#include "model.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------------
 * safetensors (safetensors.c)
 */
/* F32, BF16 and F16 come from safetensors and GGUF; the block types only from GGUF (gguf_model.c),
 * whose tensors reach the engine through vg_st_wrap() with the Hugging Face names and shapes. */
typedef enum vg_dtype {
    VG_DT_F32 = 0,
    VG_DT_BF16 = 1,
    VG_DT_F16 = 2,
    VG_DT_Q8_0 = 3,
    VG_DT_Q4_0 = 4,
    VG_DT_Q4_K = 5,
    VG_DT_Q5_K = 6,
    VG_DT_Q6_K = 7,
    VG_DT_Q4_1 = 8, /* Q4_1, Q5_0, Q5_1: what llama-quantize falls back to for rows that are */
    VG_DT_Q5_0 = 9, /* not a whole number of 256-value K-quant blocks */
    VG_DT_Q5_1 = 10,
} vg_dtype;

#define VG_MAX_DIMS 8

typedef struct vg_tensor {
    const char *name; /* owned by the vg_st */
    vg_dtype dtype;
    int ndim;
    int64_t shape[VG_MAX_DIMS];
    size_t numel;
    const void *data; /* inside the read-only mapping; validated to lie within the file */
    size_t nbytes;
    const char *file; /* the shard's path, for error messages */
} vg_tensor;

typedef struct vg_st vg_st;

/* Opens dir/model.safetensors, or every shard named by dir/model.safetensors.index.json. Each file
 * is mapped read-only and its header validated: header length within the file, JSON well formed,
 * known dtypes, shapes non-negative with numel*size == data_offsets span, offsets within the data
 * section, no two tensors overlapping, no duplicate names, and (for an index) every listed tensor
 * present in its shard. Errors name the file and the tensor. Caller frees with vg_st_close(). */
int vg_st_open_dir(const char *dir, vg_st **out, char *err, size_t errlen);
/* Opens one safetensors file (same checks). */
int vg_st_open_file(const char *path, vg_st **out, char *err, size_t errlen);
void vg_st_close(vg_st *st);
/* The tensor named name, or NULL. */
const vg_tensor *vg_st_find(const vg_st *st, const char *name);
size_t vg_st_count(const vg_st *st);
const vg_tensor *vg_st_at(const vg_st *st, size_t i);
/* Total bytes of tensor data mapped. */
size_t vg_st_bytes(const vg_st *st);
/* A vg_st over tensors[n] that another reader has validated (the GGUF pair, gguf_model.c): takes
 * the malloc'd array (sorted here; duplicate names refused) and calls release(arg) from
 * vg_st_close() (and on failure), which frees whatever holds the names and data. */
int vg_st_wrap(vg_tensor *tensors, size_t n, void (*release)(void *), void *arg, vg_st **out,
               char *err, size_t errlen);
/* If data[0..n) lies within map[0..size) (a file mapped from descriptor map_fd): *fd a new
 * close-on-exec descriptor of that file (the caller closes it), *off the offset of data in it.
 * 0, else -1 (outside the mapping, no descriptor, or dup() failed). */
int vg_map_locate(const void *map, size_t size, int map_fd, const void *data, size_t n, int *fd,
                  uint64_t *off);
/* Where t's bytes lie on disk: *fd a new descriptor (close-on-exec; the caller closes it) of the
 * very file that was opened, checked and mapped (never the path again), *off the offset of
 * t->data in it. 0, or -1 when t is not in a file (rebuilt in memory) or dup() failed. */
int vg_st_locate(const vg_st *st, const vg_tensor *t, int *fd, uint64_t *off);
/* For a vg_st_wrap: locate(arg, data, n, fd, off) answers vg_st_locate (arg = the release arg). */
void vg_st_set_locate(vg_st *st,
                      int (*locate)(void *arg, const void *data, size_t n, int *fd, uint64_t *off));

/* GGUF block types (quant.c). Rows of a tensor of any dtype as float32: rows r0..r1-1 of a tensor
 * whose last dimension is the row (shape[ndim-1] values; a 0-d/1-d tensor is one row). */
void vg_tensor_rows_f32(const vg_tensor *t, size_t r0, size_t r1, float *dst);
/* Every element of t as float32 (dst[numel]). */
void vg_tensor_dequant_all(const vg_tensor *t, float *dst);
/* Element i of t as float32 (decodes its block). */
float vg_tensor_elem_f32(const vg_tensor *t, size_t i);
/* Name of a block dtype ("Q8_0", ...). */
const char *vg_dtype_block_name(vg_dtype dt);
/* The vg_dtype of a ggml type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K); -1
 * for others. */
int vg_dtype_from_ggml(uint32_t ggml_type, vg_dtype *out);
/* The ggml type of a vg_dtype; UINT32_MAX for a value outside the enum. */
uint32_t vg_dtype_ggml(vg_dtype dt);
/* Values per block and bytes per block of a dtype (1 and 4/2 for F32/BF16/F16). */
void vg_dtype_block(vg_dtype dt, size_t *elems, size_t *bytes);

/* Finds name and checks it has exactly ndim dims with the given shape; VG_EMODEL with a sentence
 * ("model.safetensors: tensor 'x': shape [3,4], expected [4,4]") otherwise, VG_EMODEL if missing.
 */
int vg_st_expect(const vg_st *st, const char *name, int ndim, const int64_t *shape,
                 const vg_tensor **out, char *err, size_t errlen);
/* Samples t's elements (the first 1024 and about 1024 more spread evenly) and returns VG_EMODEL
 * with a sentence naming the tensor if one is NaN or infinite (a corrupt checkpoint that would
 * answer garbage), else 0. Reads at most about 1024 pages of the mapping. Any thread. */
int vg_tensor_check_finite(const vg_tensor *t, char *err, size_t errlen);
/* Converts a tensor's elements to float32 into dst[numel]. */
void vg_tensor_to_f32(const vg_tensor *t, float *dst);
/* vg_st_expect + a malloc'd float32 copy (caller free()s). */
int vg_st_get_f32(const vg_st *st, const char *name, int ndim, const int64_t *shape, float **out,
                  char *err, size_t errlen);

/* Scalar conversions. bf16 widens exactly (inline: the portable kernels call it per element). */
static inline float vg_bf16_to_f32(uint16_t v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t vg_f32_to_bf16(float v); /* round to nearest even */
float vg_f16_to_f32(uint16_t v);

/* Writing: tensors given by name, dtype, shape and data (in that dtype); the file is written to
 * path.tmp and renamed. Metadata {"format":"pt"}. */
typedef struct vg_st_write_tensor {
    const char *name;
    vg_dtype dtype;
    int ndim;
    int64_t shape[VG_MAX_DIMS];
    const void *data;
} vg_st_write_tensor;
int vg_st_write(const char *path, const vg_st_write_tensor *tensors, size_t n, char *err,
                size_t errlen);

/* Streaming writer (used by vg_st_write and random.c, for checkpoints too large to hold in memory):
 * the header is computed from the names, dtypes and shapes of tensors[n] (data ignored), and the
 * data of every tensor must then be supplied with vg_st_writer_write(), in the order given, in
 * chunks of any size. vg_st_writer_finish() checks the byte count, fsyncs and renames path.tmp to
 * path, and frees the writer in every case; vg_st_writer_abort() removes path.tmp and frees it. */
typedef struct vg_st_writer vg_st_writer;
int vg_st_writer_open(const char *path, const vg_st_write_tensor *tensors, size_t n,
                      vg_st_writer **out, char *err, size_t errlen);
int vg_st_writer_write(vg_st_writer *w, const void *data, size_t nbytes, char *err, size_t errlen);
int vg_st_writer_finish(vg_st_writer *w, char *err, size_t errlen);
void vg_st_writer_abort(vg_st_writer *w);
/* Bytes per element (4 or 2) and the safetensors name ("F32", "BF16", "F16") of a dtype. */
size_t vg_dtype_size(vg_dtype dt);
const char *vg_dtype_name(vg_dtype dt);

/* ---------------------------------------------------------------------------------------------------
 * tokenizer (tokenizer.c): a tokenizer from a tokenizer.json document already parsed (the GGUF
 * loader builds one from tokenizer.ggml.*); name stands for the file in error messages. The
 * document is borrowed for the call. Same checks and errors as vg_tokenizer_load(). */
struct cJSON;
int vg_tokenizer_from_cjson(const struct cJSON *root, const char *name, vg_tokenizer **out,
                            char *err, size_t errlen);

/* ---------------------------------------------------------------------------------------------------
 * config (config.c)
 */
/* Reads dir/config.json (must be a Qwen3VLForConditionalGeneration / model_type "qwen3_vl"; a clear
 * error otherwise), dir/generation_config.json and dir/video_preprocessor_config.json when present.
 * Fills info (name, n_params and weight_bytes excepted) and gen (Qwen3-VL Instruct defaults
 * overlaid with generation_config.json). Every value is range-checked (positive sizes, heads
 * dividing hidden, head_dim even, mrope sections summing to head_dim/2, deepstack indexes < depth,
 * limits that keep the arithmetic in size_t, ...). */
int vg_model_config_load(const char *dir, vg_model_info *info, vg_gen_params *gen, char *err,
                         size_t errlen);

/* What vg_model_config_load does after reading dir/config.json, given its text: parses it, then
 * dir's generation_config.json and video_preprocessor_config.json when present (dir may be NULL:
 * defaults only), and names the model after dir (or name_path when given). Used for GGUF models,
 * whose config text is made from the GGUF metadata. */
int vg_model_config_load_text(const char *dir, const char *name_path, const char *json, size_t len,
                              vg_model_info *info, vg_gen_params *gen, char *err, size_t errlen);

/* Reads a config.json text (already loaded) the same way; used by vg_model_config_load and by
 * tests. */
int vg_model_config_parse(const char *json, size_t len, vg_model_info *info, char *err,
                          size_t errlen);

/* ---------------------------------------------------------------------------------------------------
 * random checkpoints (random.c), beside vg_model_write_random() of model.h
 */
/* The sizes of a preset ("2b", "4b", "8b", "tiny"); token ids are left 0 (the tokenizer that
 * vg_model_write_random() writes decides them). VG_EINVAL for an unknown name. */
int vg_random_preset(const char *name, vg_model_info *info, char *err, size_t errlen);
/* The config.json text (Hugging Face layout) describing info; malloc'd, NULL on OOM. */
char *vg_random_config_json(const vg_model_info *info);

#endif
