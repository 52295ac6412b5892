/*
 * model.h: vigil's Qwen3-VL inference engine (the only public header of model/).
 *
 * What it does: loads a Hugging Face Qwen3-VL checkpoint directory (config.json, model.safetensors
 * or a sharded index, tokenizer.json, generation_config.json), tokenizes and detokenizes text,
 * encodes video temporal slices with the vision tower (with DeepStack features), runs the Qwen3
 * language model with interleaved MRoPE over a KV cache, and samples tokens.
 *
 * Threading contract:
 *  - A vg_model is immutable after vg_model_load(): any number of threads may read it at once
 *    (vg_model_info, vg_model_tokenizer, the tokenizer functions), and vg_model_encode_slice() may
 * run on several threads at once (each call has its own scratch).
 *  - A vg_seq (one sequence's KV cache) belongs to one thread at a time.
 *  - The work of one call runs on the calling thread plus at most params.n_threads - 1 helpers:
 * the model's thread pool (sleeping workers) runs the engine's own kernels (bf16 / q8_0 GEMV,
 * attention) and the oneDNN products (one OpenMP thread per participant); a call that finds the
 * pool busy with another thread's call runs its share alone, so the cores are never
 * oversubscribed. OpenBLAS's thread count is process-wide (openblas_set_num_threads):
 * vg_model_load() sets it to 1, as the float32 products too run on the pool (one single-threaded
 * OpenBLAS call per participant). Norms, activations and softmax of many rows are split across
 * the pool as well.
 *  - Cancellation: the `cancel` flags passed in are read between layers and between tokens; setting
 * one from any thread makes the call return VG_ECANCELED soon after.
 *
 * Ownership: every *_free(NULL) is a no-op; out-pointers are set only on success; the caller frees
 * what an out-pointer receives with the matching *_free() (or free() where the comment says so).
 * Errors: negative VG_E* codes from common.h, with a sentence in err[errlen] naming the file,
 * tensor or field at fault.
 */
#ifndef VG_MODEL_H
#define VG_MODEL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ===================================================================================================
 * Tokenizer: Qwen2/Qwen3 byte-level BPE from tokenizer.json.
 */
typedef struct vg_tokenizer vg_tokenizer;

/* Loads tokenizer.json at path. Caller frees with vg_tokenizer_free(). */
int vg_tokenizer_load(const char *path, vg_tokenizer **out, char *err, size_t errlen);
void vg_tokenizer_free(vg_tokenizer *tok);

/* Encodes len bytes of UTF-8 text (NFC-normalized first). With parse_special != 0, added/special
 * tokens written literally in the text (e.g. "<|im_start|>") become their ids; otherwise they are
 * tokenized as plain text. No BOS is added. *ids receives a malloc'd array the caller free()s.
 * Invalid UTF-8 is an error (VG_EINVAL). Thread-safe. */
int vg_tokenizer_encode(const vg_tokenizer *tok, const char *text, size_t len, int parse_special,
                        int32_t **ids, size_t *n_ids);
/* Id of a token given by its exact vocabulary or added-token string, or -1. */
int32_t vg_tokenizer_token_id(const vg_tokenizer *tok, const char *token);
/* Number of ids (vocabulary plus added tokens; the largest id + 1). */
size_t vg_tokenizer_vocab_size(const vg_tokenizer *tok);
/* Raw bytes of one token (byte-level map reversed; specials give their literal text). Returns the
 * byte count written (at most cap), VG_EINVAL for an unknown id, or VG_ERANGE when the token is
 * longer than cap (vg_tokenizer_max_token_bytes() is always enough). Thread-safe. */
int vg_tokenizer_token_bytes(const vg_tokenizer *tok, int32_t id, char *buf, size_t cap);
/* Length in bytes of the longest token (128 for Qwen3). */
size_t vg_tokenizer_max_token_bytes(const vg_tokenizer *tok);
/* 1 if id is a special (added, special=true) token. */
int vg_tokenizer_is_special(const vg_tokenizer *tok, int32_t id);

/* Streaming detokenizer: feeds ids one at a time and emits only complete UTF-8 characters, so a
 * character split across tokens is never emitted in halves. One thread at a time. */
typedef struct vg_detok vg_detok;
/* skip_special: special tokens produce no text. The tokenizer must outlive the detok. */
int vg_detok_create(const vg_tokenizer *tok, int skip_special, vg_detok **out);
void vg_detok_free(vg_detok *d);
/* Writes the text that became complete after id into out (NUL-terminated, at most cap-1 bytes) and
 * stores its length in *len. Invalid bytes that can never complete a character become U+FFFD at
 * once; an incomplete character waits for the next token. Text that does not fit in cap stays
 * pending and comes out with the next push or flush (nothing is lost); cap >= 3 *
 * vg_tokenizer_max_token_bytes() + 16 always holds one push (64 holds most tokens). An id the
 * vocabulary does not define (an embedding padding row) gives no text. Returns 0, or VG_EINVAL for
 * a negative id or a zero cap. */
int vg_detok_push(vg_detok *d, int32_t id, char *out, size_t cap, size_t *len);
/* Emits whatever is pending at the end of a stream, an incomplete character replaced by U+FFFD.
 * Returns 0 when all was written, VG_EMSGSIZE when cap was too small (call again for the rest). */
int vg_detok_flush(vg_detok *d, char *out, size_t cap, size_t *len);

/* ===================================================================================================
 * Model loading and description.
 */
typedef struct vg_model vg_model;

/* How the large matrices (every Linear weight, the embedding and lm_head) are held in memory.
 * Norm weights, biases, the vision patch embedding and position table stay float32 whatever the
 * choice (docs/weights.md lists them with the memory per preset). */
enum {
    VG_WEIGHTS_AUTO = 0, /* BF16 for a bf16 or f16 checkpoint (the released ones), else F32 */
    VG_WEIGHTS_F32 = 1,  /* float32: the reference, exact against the golden cases */
    VG_WEIGHTS_BF16 = 2, /* bfloat16 (round to nearest even); lossless for a bf16 checkpoint */
    VG_WEIGHTS_Q8_0 = 3, /* llama.cpp's Q8_0: blocks of 32 int8 values with one fp16 scale */
};

typedef struct vg_model_params {
    int n_threads;   /* engine + BLAS threads per call; 0 = number of online CPUs */
    int use_mmap;    /* 1: weights used from the read-only mapping where the dtype allows (F32);
                        0: weights converted/copied into ordinary memory (default) */
    int load_vision; /* 0 skips the vision tower (text-only tools); default 1 */
    int weight_type; /* VG_WEIGHTS_*; default VG_WEIGHTS_AUTO */
    const char *mmproj_path; /* GGUF: the mmproj file, when the model path is a .gguf text file
                                (a directory holding the pair finds it itself); NULL: none */
} vg_model_params;

vg_model_params vg_model_default_params(void);

/* Parses a weight type name ("auto", "f32", "bf16", "q8_0"; case-insensitive, "q8" accepted)
 * into *out (a VG_WEIGHTS_* value). Returns 0, or VG_EINVAL for another name (out untouched).
 * Pure function, any thread. */
int vg_weight_type_parse(const char *name, int *out);
/* The canonical name of a VG_WEIGHTS_* value ("auto", "f32", "bf16", "q8_0"), or "?" for an
 * unknown value. Static string; any thread. */
const char *vg_weight_type_name(int type);

/* Generation settings. vg_model_default_gen_params() gives the Qwen3-VL Instruct defaults overlaid
 * with the checkpoint's generation_config.json. */
#define VG_MAX_STOP_IDS 8
typedef struct vg_gen_params {
    int do_sample;     /* 0 = greedy */
    float temperature; /* > 0 */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    float
        repetition_penalty; /* 1 = off (HF semantics: divide positive, multiply negative logits) */
    float presence_penalty; /* 0 = off (vLLM semantics: subtract once per already-seen token) */
    uint64_t seed;
    int max_new_tokens;
    int32_t stop_ids[VG_MAX_STOP_IDS];
    int n_stop_ids;
} vg_gen_params;

typedef struct vg_model_info {
    /* text */
    int vocab_size, hidden_size, n_layers, n_heads, n_kv_heads, head_dim, intermediate_size;
    float rms_norm_eps, rope_theta;
    int mrope_section[3];
    int mrope_interleaved;
    int tie_word_embeddings;
    int max_position_embeddings;
    /* vision */
    int has_vision;
    int vision_depth, vision_hidden, vision_heads, vision_intermediate, out_hidden_size;
    int patch_size, temporal_patch_size, spatial_merge_size, in_channels, num_position_embeddings;
    int n_deepstack;
    int deepstack_indexes[16];
    /* token ids */
    int32_t video_token_id, image_token_id, vision_start_token_id, vision_end_token_id;
    int32_t im_start_id, im_end_id, endoftext_id;
    /* preprocessing (video_preprocessor_config.json, when present; else the Qwen3-VL defaults) */
    float image_mean[3], image_std[3];
    double video_fps;
    int video_min_frames, video_max_frames;
    long video_min_pixels, video_max_pixels; /* per frame; 0 = not set by the checkpoint */
    /* description */
    char name[256];  /* the directory's base name */
    size_t n_params; /* parameters loaded */
    size_t weight_bytes;
    size_t text_weight_bytes; /* of weight_bytes, the text model's (what a decode step reads, with
                                 the KV cache; an embedding kept in the file is not counted) */
    int weight_type;          /* VG_WEIGHTS_F32, _BF16 or _Q8_0 as loaded (auto resolved) */
    int kv_bytes; /* bytes per cached key or value element: 4 (float32) with float32 weights, 2
                     (bf16) with the lossy types; the environment variable VG_KV_TYPE=f32 keeps
                     float32 for them */
    char isa[16]; /* kernel level in use: "avx512", "avx2" or "scalar" */
} vg_model_info;

/* Loads the checkpoint in dir. Every header, offset, dtype and shape is checked against the files
 * and config before use: a bad file gives VG_EMODEL/VG_EFORMAT with the file and tensor named in
 * err. Caller frees with vg_model_free(). */
int vg_model_load(const char *dir, const vg_model_params *params, vg_model **out, char *err,
                  size_t errlen);
void vg_model_free(vg_model *m);
const vg_model_info *vg_model_get_info(const vg_model *m);
/* Reads only the description of the checkpoint in dir (config.json, generation_config.json and
 * video_preprocessor_config.json), checked as vg_model_load checks them, without touching the
 * weights or the tokenizer: for tools that show what a model would do (vigil plan --model). The
 * weight counts stay 0. Any thread. */
int vg_model_read_info(const char *dir, vg_model_info *out, char *err, size_t errlen);
/* The model's tokenizer, owned by the model. */
const vg_tokenizer *vg_model_tokenizer(const vg_model *m);
vg_gen_params vg_model_default_gen_params(const vg_model *m);

/* ===================================================================================================
 * Vision: one temporal slice (one frame pair) at a time. A slice's output depends only on its own
 * pixels and grid, so callers may cache slices (live streams do).
 */
typedef struct vg_vision_out {
    int n_tokens;     /* grid_h * grid_w / merge^2 */
    int dim;          /* out_hidden_size */
    int n_deepstack;  /* number of DeepStack taps */
    float *embeds;    /* [n_tokens][dim] merger output */
    float *deepstack; /* [n_deepstack][n_tokens][dim] */
} vg_vision_out;

/* Encodes one slice. patches: [grid_h*grid_w][C*temporal_patch*patch*patch] float32 normalized
 * pixels in the docs/qwen3vl.md §1.6 order (the rows of one temporal slice of pixel_values_videos).
 * Caller frees *out with vg_vision_out_free(). Thread-safe on a shared model. */
int vg_model_encode_slice(vg_model *m, const float *patches, int grid_h, int grid_w,
                          const atomic_int *cancel, vg_vision_out **out, char *err, size_t errlen);
void vg_vision_out_free(vg_vision_out *v);

/* ===================================================================================================
 * Language model: a sequence with its KV cache.
 */
typedef struct vg_seq vg_seq;

/* Creates a sequence able to hold max_tokens positions (KV memory is allocated up front and checked
 * against max_position_embeddings). Caller frees with vg_seq_free(). */
int vg_seq_create(vg_model *m, size_t max_tokens, vg_seq **out, char *err, size_t errlen);
void vg_seq_free(vg_seq *s);
/* Tokens held in the cache. */
size_t vg_seq_len(const vg_seq *s);
/* Drops cached tokens from n_keep on (n_keep <= len). */
int vg_seq_truncate(vg_seq *s, size_t n_keep);
/* Removes count cached tokens starting at cache index start (start + count <= len); the later
 * tokens move down and keep their cached keys and values, which already carry their rotary
 * positions, so the sequence continues at the same positions (a caller that generates afterwards
 * passes rope_delta = next position - vg_seq_len). Attention is relative in RoPE, so the gap left
 * in the positions is harmless. Cost: one memmove per layer and KV head of the tokens after the
 * range. Returns 0 or VG_EINVAL (bad range). Same thread rules as the other vg_seq_* calls
 * (model/window.c). */
int vg_seq_remove(vg_seq *s, size_t start, size_t count);

/* Benchmarks only (vigil-model bench, bench_stream): makes the cache hold n tokens of pseudo-random
 * K/V without running the model, since decode and prefill cost depend on the cache length and not
 * its values. 0, or VG_ELIMIT when n exceeds the capacity. */
int vg_seq_fill_random(vg_seq *s, size_t n, uint64_t seed);

typedef struct vg_prefill_input {
    const int32_t *ids; /* [n] token ids */
    size_t n;
    const int32_t *pos; /* [3][n] MRoPE positions (t row, h row, w row), as get_rope_index gives */
    /* Visual features: the rows whose id is video_token_id or image_token_id take, in order, the
     * rows of vis_embeds [n_vis][out_hidden] and get vis_deepstack [n_deepstack][n_vis][out_hidden]
     * added after decoder layers 0..n_deepstack-1. n_vis must equal the number of such ids. */
    const float *vis_embeds;
    const float *vis_deepstack;
    size_t n_vis;
} vg_prefill_input;

/* Runs the n new tokens through the decoder, appending to the KV cache. logits (optional): when
 * all_logits is 0, receives [vocab] logits of the last token; else [n][vocab]. */
int vg_seq_prefill(vg_seq *s, const vg_prefill_input *in, float *logits, int all_logits,
                   const atomic_int *cancel, char *err, size_t errlen);
/* One token at MRoPE position pos on all three axes (cache position + rope_delta). logits: [vocab].
 */
int vg_seq_decode(vg_seq *s, int32_t id, int32_t pos, float *logits, char *err, size_t errlen);

/* ===================================================================================================
 * Sampling and generation.
 */
typedef struct vg_sampler vg_sampler;
/* Creates a sampler for params (seeded); caller frees with vg_sampler_free(). */
int vg_sampler_create(const vg_gen_params *params, size_t vocab, vg_sampler **out);
void vg_sampler_free(vg_sampler *s);
/* Chooses the next id from logits [vocab] (modified in place by penalties and temperature), given
 * the ids generated so far (the penalties apply to those). */
int32_t vg_sampler_sample(vg_sampler *s, float *logits, const int32_t *prev, size_t n_prev);

/* Per-token callback: id, the complete UTF-8 text it finished (may be empty) and its length.
 * Return non-zero to stop generation early. Runs on the generating thread. */
typedef int (*vg_token_cb)(int32_t id, const char *text, size_t len, void *opaque);

/* Generates after a prefill: first_logits are the prefill's last logits (modified); each new token
 * is decoded at position (vg_seq_len + rope_delta). Stops at a stop id (not emitted as text), at
 * max_new_tokens, when cb returns non-zero, or with VG_ECANCELED when *cancel becomes non-zero.
 * *out_ids (optional) receives a malloc'd array of generated ids (stop id included) to free(). */
int vg_generate(vg_seq *s, const vg_gen_params *params, float *first_logits, int32_t rope_delta,
                vg_token_cb cb, void *opaque, const atomic_int *cancel, int32_t **out_ids,
                size_t *n_out, char *err, size_t errlen);

/* As vg_generate, with each token's log-probability under the model passed to cb: the log-softmax
 * of the raw logits at the chosen id (before repetition/presence penalties, temperature, top-k and
 * top-p), natural log, <= 0. The sampled ids are exactly vg_generate's; the cost is one copy of
 * the logits and one pass over them per token. */
typedef int (*vg_token_lp_cb)(int32_t id, const char *text, size_t len, float logprob,
                              void *opaque);
int vg_generate_lp(vg_seq *s, const vg_gen_params *params, float *first_logits, int32_t rope_delta,
                   vg_token_lp_cb cb, void *opaque, const atomic_int *cancel, int32_t **out_ids,
                   size_t *n_out, char *err, size_t errlen);

/* ===================================================================================================
 * Tracing intermediates for parity checks (vigil-model golden). The callback sees tensors while
 * they are computed; it must copy what it keeps. name is one of: "vision.patch_embed",
 * "vision.pos_embed", "vision.rope_freqs", "vision.block_out" (index = block), "vision.embeds",
 * "vision.deepstack" (index = tap), "text.hidden_in" (index = layer; index n_layers = final norm
 * input), "text.layer_out", "text.rope_cos", "text.rope_sin", "text.final_hidden". rows x cols,
 * row-major float32; text tensors come once per prefill chunk (its rows, in order) and per decode
 * step. Not for production paths: set it only when one thread uses the model.
 */
typedef void (*vg_trace_fn)(const char *name, int index, const float *data, size_t rows,
                            size_t cols, void *opaque);
void vg_model_set_trace(vg_model *m, vg_trace_fn fn, void *opaque);

/* ===================================================================================================
 * Writing checkpoints (vigil-model random): a random-weight Qwen3-VL checkpoint in the Hugging Face
 * layout (config.json, model.safetensors in BF16, tokenizer.json copied from tokenizer_src when
 * given, else a small byte-level vocabulary, generation_config.json).
 */
typedef struct vg_random_spec {
    const char *preset;        /* "2b", "4b", "8b", "tiny", or NULL with config_path */
    const char *config_path;   /* a config.json to use instead of a preset */
    const char *tokenizer_src; /* a tokenizer.json to copy, or NULL */
    uint64_t seed;
    float std; /* weight standard deviation; 0 = 0.02 */
} vg_random_spec;
int vg_model_write_random(const vg_random_spec *spec, const char *out_dir, char *err,
                          size_t errlen);

/* `vigil-model quantize` (model/gguf_convert.c): writes the Hugging Face checkpoint in hf_dir as
 * the GGUF pair llama.cpp reads, into out_dir (created if missing): NAME-TYPE.gguf (the qwen3vl
 * text model; TYPE in capitals as in llama.cpp's file names) and mmproj-NAME-F16.gguf (BF16 for
 * bf16), plus generation_config.json and video_preprocessor_config.json copied; NAME is hf_dir's
 * base name. type is llama.cpp's name: "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m",
 * "q6_k" (llama-quantize's tensor mix without an importance matrix; the same bytes). text_path
 * (optional) receives the text file's path. Reads the checkpoint through its mapping, one row at a
 * time. VG_EINVAL for an unknown type; the loader's errors for a bad checkpoint. Any thread. */
int vg_model_quantize(const char *hf_dir, const char *type, const char *out_dir, char *text_path,
                      size_t text_cap, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
