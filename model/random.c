/*
 * random.c: vg_model_write_random(), a random-weight Qwen3-VL checkpoint in the Hugging Face
 * layout, for tests and benchmarks without the real weights.
 *
 * Sizes come from a preset ("2b", "4b", "8b" from docs/qwen3vl.md §0.2, or "tiny") or from a
 * config.json that vg_model_config_parse() accepts. The directory receives config.json (regenerated
 * from the parsed sizes in the HF layout, token ids matching the tokenizer),
 * generation_config.json, video_preprocessor_config.json, tokenizer.json and model.safetensors
 * (BF16, the exact tensor names and shapes of docs/qwen3vl.md §3/§4; lm_head.weight only when
 * untied).
 *
 * tokenizer.json is copied from spec->tokenizer_src when given (its added tokens supply the ids),
 * else generated: a byte-level BPE in the real format with the 256 byte tokens (GPT-2
 * byte-to-unicode order), a few merges built from common words (" seconds" among them; digits are
 * never merged) and the 26 Qwen added tokens, at their real ids (151643...) when the vocabulary is
 * that large, else right after the merges.
 *
 * Weights: each tensor has its own PRNG stream (splitmix64 seeded from spec->seed and the tensor's
 * name, so values do not depend on the tensor order); matrices and embeddings are approximately
 * normal with standard deviation spec->std (a sum of four uniforms), biases the same with std/2,
 * norm weights exactly 1. The safetensors header is computed first and the data is streamed in
 * chunks, so memory stays small for the 2B-8B presets. Every file is written to a .tmp name and
 * renamed. Single-threaded.
 */
#include "internal.h"

#include "common.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FULL_SPECIAL_BASE   151643
#define N_ADDED             26
#define VG_CFG_MAX_TOKEN_ID 100000000

static const struct {
    const char *content;
    int special;
} added_tokens[N_ADDED] = {
    {"<|endoftext|>", 1},
    {"<|im_start|>", 1},
    {"<|im_end|>", 1},
    {"<|object_ref_start|>", 1},
    {"<|object_ref_end|>", 1},
    {"<|box_start|>", 1},
    {"<|box_end|>", 1},
    {"<|quad_start|>", 1},
    {"<|quad_end|>", 1},
    {"<|vision_start|>", 1},
    {"<|vision_end|>", 1},
    {"<|vision_pad|>", 1},
    {"<|image_pad|>", 1},
    {"<|video_pad|>", 1},
    {"<tool_call>", 0},
    {"</tool_call>", 0},
    {"<|fim_prefix|>", 0},
    {"<|fim_middle|>", 0},
    {"<|fim_suffix|>", 0},
    {"<|fim_pad|>", 0},
    {"<|repo_name|>", 0},
    {"<|file_sep|>", 0},
    {"<tool_response>", 0},
    {"</tool_response>", 0},
    {"<think>", 0},
    {"</think>", 0},
};
enum {
    TOK_ENDOFTEXT = 0,
    TOK_IM_START = 1,
    TOK_IM_END = 2,
    TOK_VISION_START = 9,
    TOK_VISION_END = 10,
    TOK_IMAGE_PAD = 12,
    TOK_VIDEO_PAD = 13,
};

/* Words whose byte-level spellings become merge chains (left to right). No digits. */
static const char *merge_words[] = {
    " seconds", " second", " the",  " The",  " video", " a",    " is",        " in",
    " and",     " of",     " to",   " What", " what",  " this", " happening", " person",
    " man",     " woman",  " dog",  " cat",  " car",   " red",  " blue",      " walking",
    " running", " frame",  " time", "ing",   "ed",     "er",    "\n\n",       "  ",
};

static const char *pretok_regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ---------------------------------------------------------------------------------------------------
 * Presets.
 */
typedef struct preset {
    const char *name;
    int v_depth, v_hidden, v_heads, v_inter, v_npos, n_ds, ds[3];
    int hidden, layers, heads, kv, head_dim, inter, vocab, tied, sec[3];
} preset;

static const preset presets[] = {
    {"2b",
     24,
     1024,
     16,
     4096,
     2304,
     3,
     {5, 11, 17},
     2048,
     28,
     16,
     8,
     128,
     6144,
     151936,
     1,
     {24, 20, 20}},
    {"4b",
     24,
     1024,
     16,
     4096,
     2304,
     3,
     {5, 11, 17},
     2560,
     36,
     32,
     8,
     128,
     9728,
     151936,
     1,
     {24, 20, 20}},
    {"8b",
     27,
     1152,
     16,
     4304,
     2304,
     3,
     {8, 16, 24},
     4096,
     36,
     32,
     8,
     128,
     12288,
     151936,
     0,
     {24, 20, 20}},
    {"tiny", 2, 64, 4, 128, 64, 1, {0, 0, 0}, 128, 2, 4, 2, 32, 256, 512, 1, {6, 5, 5}},
};

static void fill_common(vg_model_info *m)
{
    m->rms_norm_eps = 1e-6f;
    m->rope_theta = 5000000.0f;
    m->mrope_interleaved = 1;
    m->max_position_embeddings = 262144;
    m->has_vision = 1;
    m->patch_size = 16;
    m->temporal_patch_size = 2;
    m->spatial_merge_size = 2;
    m->in_channels = 3;
    for (int i = 0; i < 3; i++) {
        m->image_mean[i] = 0.5f;
        m->image_std[i] = 0.5f;
    }
    m->video_fps = 2.0;
    m->video_min_frames = 4;
    m->video_max_frames = 768;
}

int vg_random_preset(const char *name, vg_model_info *info, char *err, size_t errlen)
{
    for (size_t i = 0; name && i < VG_ARRAY_LEN(presets); i++) {
        const preset *p = &presets[i];
        if (strcmp(name, p->name) != 0)
            continue;
        vg_model_info m;
        memset(&m, 0, sizeof m);
        fill_common(&m);
        m.vision_depth = p->v_depth;
        m.vision_hidden = p->v_hidden;
        m.vision_heads = p->v_heads;
        m.vision_intermediate = p->v_inter;
        m.num_position_embeddings = p->v_npos;
        m.n_deepstack = p->n_ds;
        memcpy(m.deepstack_indexes, p->ds, sizeof p->ds);
        m.out_hidden_size = p->hidden;
        m.hidden_size = p->hidden;
        m.n_layers = p->layers;
        m.n_heads = p->heads;
        m.n_kv_heads = p->kv;
        m.head_dim = p->head_dim;
        m.intermediate_size = p->inter;
        m.vocab_size = p->vocab;
        m.tie_word_embeddings = p->tied;
        memcpy(m.mrope_section, p->sec, sizeof p->sec);
        snprintf(m.name, sizeof m.name, "random-%s", p->name);
        *info = m;
        return 0;
    }
    return vg_fail(err, errlen, VG_EINVAL, "unknown preset '%s' (2b, 4b, 8b or tiny)",
                   name ? name : "(null)");
}

/* ---------------------------------------------------------------------------------------------------
 * config.json, generation_config.json, video_preprocessor_config.json.
 */
/* The shortest decimal that reads back as f, as a double, so that 1e-6f prints as 1e-06. */
static double short_double(float f)
{
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f)
            return strtod(buf, NULL);
    }
    return (double)f;
}

/* cJSON_Print with the 2-space indentation and ": " separators of the HF writers (cJSON escapes
 * tabs inside strings, so every raw tab is formatting). */
static char *print_pretty(const cJSON *root)
{
    char *s = cJSON_Print(root);
    if (!s)
        return NULL;
    size_t tabs = 0;
    for (const char *c = s; *c; c++)
        tabs += *c == '\t';
    char *out = malloc(strlen(s) + tabs + 1);
    if (!out) {
        free(s);
        return NULL;
    }
    char *o = out;
    for (const char *c = s; *c; c++) {
        if (*c != '\t') {
            *o++ = *c;
        } else if (c > s && c[-1] == ':') {
            *o++ = ' ';
        } else {
            *o++ = ' ';
            *o++ = ' ';
        }
    }
    *o = '\0';
    free(s);
    return out;
}

static cJSON *int_array(const int *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

char *vg_random_config_json(const vg_model_info *m)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("Qwen3VLForConditionalGeneration"));
    cJSON_AddStringToObject(root, "dtype", "bfloat16");
    cJSON_AddNumberToObject(root, "image_token_id", m->image_token_id);
    cJSON_AddStringToObject(root, "model_type", "qwen3_vl");

    cJSON *t = cJSON_AddObjectToObject(root, "text_config");
    cJSON_AddBoolToObject(t, "attention_bias", 0);
    cJSON_AddNumberToObject(t, "attention_dropout", 0.0);
    cJSON_AddNumberToObject(t, "bos_token_id", m->endoftext_id);
    cJSON_AddNumberToObject(t, "eos_token_id", m->im_end_id);
    cJSON_AddNumberToObject(t, "head_dim", m->head_dim);
    cJSON_AddStringToObject(t, "hidden_act", "silu");
    cJSON_AddNumberToObject(t, "hidden_size", m->hidden_size);
    cJSON_AddNumberToObject(t, "initializer_range", 0.02);
    cJSON_AddNumberToObject(t, "intermediate_size", m->intermediate_size);
    cJSON_AddNumberToObject(t, "max_position_embeddings", m->max_position_embeddings);
    cJSON_AddStringToObject(t, "model_type", "qwen3_vl_text");
    cJSON_AddNumberToObject(t, "num_attention_heads", m->n_heads);
    cJSON_AddNumberToObject(t, "num_hidden_layers", m->n_layers);
    cJSON_AddNumberToObject(t, "num_key_value_heads", m->n_kv_heads);
    cJSON_AddNumberToObject(t, "rms_norm_eps", short_double(m->rms_norm_eps));
    cJSON *rs = cJSON_AddObjectToObject(t, "rope_scaling");
    cJSON_AddBoolToObject(rs, "mrope_interleaved", m->mrope_interleaved != 0);
    cJSON_AddItemToObject(rs, "mrope_section", int_array(m->mrope_section, 3));
    cJSON_AddStringToObject(rs, "rope_type", "default");
    cJSON_AddNumberToObject(t, "rope_theta", short_double(m->rope_theta));
    cJSON_AddBoolToObject(t, "tie_word_embeddings", m->tie_word_embeddings != 0);
    cJSON_AddBoolToObject(t, "use_cache", 1);
    cJSON_AddNumberToObject(t, "vocab_size", m->vocab_size);

    cJSON_AddBoolToObject(root, "tie_word_embeddings", m->tie_word_embeddings != 0);
    cJSON_AddStringToObject(root, "transformers_version", "4.57.0.dev0");
    cJSON_AddNumberToObject(root, "video_token_id", m->video_token_id);
    if (m->has_vision) {
        cJSON *v = cJSON_AddObjectToObject(root, "vision_config");
        cJSON_AddItemToObject(v, "deepstack_visual_indexes",
                              int_array(m->deepstack_indexes, m->n_deepstack));
        cJSON_AddNumberToObject(v, "depth", m->vision_depth);
        cJSON_AddStringToObject(v, "hidden_act", "gelu_pytorch_tanh");
        cJSON_AddNumberToObject(v, "hidden_size", m->vision_hidden);
        cJSON_AddNumberToObject(v, "in_channels", m->in_channels);
        cJSON_AddNumberToObject(v, "initializer_range", 0.02);
        cJSON_AddNumberToObject(v, "intermediate_size", m->vision_intermediate);
        cJSON_AddStringToObject(v, "model_type", "qwen3_vl");
        cJSON_AddNumberToObject(v, "num_heads", m->vision_heads);
        cJSON_AddNumberToObject(v, "num_position_embeddings", m->num_position_embeddings);
        cJSON_AddNumberToObject(v, "out_hidden_size", m->out_hidden_size);
        cJSON_AddNumberToObject(v, "patch_size", m->patch_size);
        cJSON_AddNumberToObject(v, "spatial_merge_size", m->spatial_merge_size);
        cJSON_AddNumberToObject(v, "temporal_patch_size", m->temporal_patch_size);
    }
    cJSON_AddNumberToObject(root, "vision_end_token_id", m->vision_end_token_id);
    cJSON_AddNumberToObject(root, "vision_start_token_id", m->vision_start_token_id);
    char *s = print_pretty(root);
    cJSON_Delete(root);
    return s;
}

static char *gen_config_json(const vg_model_info *m)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON_AddNumberToObject(root, "bos_token_id", m->endoftext_id);
    cJSON_AddBoolToObject(root, "do_sample", 1);
    int eos[2] = {m->im_end_id, m->endoftext_id};
    cJSON_AddItemToObject(root, "eos_token_id", int_array(eos, 2));
    cJSON_AddNumberToObject(root, "pad_token_id", m->endoftext_id);
    cJSON_AddNumberToObject(root, "repetition_penalty", 1.0);
    cJSON_AddNumberToObject(root, "temperature", 0.7);
    cJSON_AddNumberToObject(root, "top_k", 20);
    cJSON_AddNumberToObject(root, "top_p", 0.8);
    cJSON_AddStringToObject(root, "transformers_version", "4.57.0.dev0");
    char *s = print_pretty(root);
    cJSON_Delete(root);
    return s;
}

static char *preproc_json(const vg_model_info *m)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON *size = cJSON_AddObjectToObject(root, "size");
    cJSON_AddNumberToObject(size, "longest_edge", 25165824);
    cJSON_AddNumberToObject(size, "shortest_edge", 4096);
    cJSON_AddNumberToObject(root, "patch_size", m->patch_size);
    cJSON_AddNumberToObject(root, "temporal_patch_size", m->temporal_patch_size);
    cJSON_AddNumberToObject(root, "merge_size", m->spatial_merge_size);
    cJSON_AddNumberToObject(root, "fps", 2);
    cJSON_AddNumberToObject(root, "min_frames", 4);
    cJSON_AddNumberToObject(root, "max_frames", 768);
    cJSON_AddBoolToObject(root, "do_sample_frames", 1);
    double half[3] = {0.5, 0.5, 0.5};
    cJSON_AddItemToObject(root, "image_mean", cJSON_CreateDoubleArray(half, 3));
    cJSON_AddItemToObject(root, "image_std", cJSON_CreateDoubleArray(half, 3));
    cJSON_AddStringToObject(root, "processor_class", "Qwen3VLProcessor");
    cJSON_AddStringToObject(root, "video_processor_type", "Qwen3VLVideoProcessor");
    char *s = print_pretty(root);
    cJSON_Delete(root);
    return s;
}

/* ---------------------------------------------------------------------------------------------------
 * tokenizer.json.
 */
/* GPT-2 bytes_to_unicode: byte b -> code point; order[] lists the bytes in vocabulary-id order. */
static void byte_map(unsigned cp[256], unsigned char order[256])
{
    int n = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
            cp[b] = (unsigned)b;
            order[n++] = (unsigned char)b;
        }
    }
    for (int b = 0; b < 256; b++) {
        if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
            cp[b] = 256u + (unsigned)extra++;
            order[n++] = (unsigned char)b;
        }
    }
}

static size_t put_utf8(char *dst, unsigned cp)
{
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    dst[0] = (char)(0xc0 | (cp >> 6)); /* all byte-map code points are below 0x800 */
    dst[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

typedef struct tok_vocab {
    char **tokens; /* id order */
    size_t n, cap;
    char (*merges)[2][64];
    size_t n_merges, cap_merges;
} tok_vocab;

static int vocab_find(const tok_vocab *v, const char *s)
{
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->tokens[i], s) == 0)
            return (int)i;
    return -1;
}

static int vocab_add(tok_vocab *v, const char *s)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 512;
        char **t = realloc(v->tokens, nc * sizeof *t);
        if (!t)
            return VG_ENOMEM;
        v->tokens = t;
        v->cap = nc;
    }
    if (!(v->tokens[v->n] = strdup(s)))
        return VG_ENOMEM;
    v->n++;
    return 0;
}

static void vocab_free(tok_vocab *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->tokens[i]);
    free(v->tokens);
    free(v->merges);
}

/* Builds the byte tokens and the merge chains of merge_words. */
static int build_vocab(tok_vocab *v)
{
    unsigned cp[256];
    unsigned char order[256];
    byte_map(cp, order);
    char sym[4];
    for (int i = 0; i < 256; i++) {
        size_t k = put_utf8(sym, cp[order[i]]);
        sym[k] = '\0';
        if (vocab_add(v, sym) != 0)
            return VG_ENOMEM;
    }
    for (size_t w = 0; w < VG_ARRAY_LEN(merge_words); w++) {
        char cur[64] = "", next[8];
        size_t cl = 0;
        for (const unsigned char *c = (const unsigned char *)merge_words[w]; *c; c++) {
            size_t k = put_utf8(next, cp[*c]);
            next[k] = '\0';
            if (cl == 0) {
                memcpy(cur, next, k + 1);
                cl = k;
                continue;
            }
            char joined[64];
            if (cl + k >= sizeof joined)
                break; /* words are short; never taken */
            memcpy(joined, cur, cl);
            memcpy(joined + cl, next, k + 1);
            if (vocab_find(v, joined) < 0) {
                if (v->n_merges == v->cap_merges) {
                    size_t nc = v->cap_merges ? v->cap_merges * 2 : 128;
                    void *m = realloc(v->merges, nc * sizeof *v->merges);
                    if (!m)
                        return VG_ENOMEM;
                    v->merges = m;
                    v->cap_merges = nc;
                }
                snprintf(v->merges[v->n_merges][0], 64, "%s", cur);
                snprintf(v->merges[v->n_merges][1], 64, "%s", next);
                v->n_merges++;
                if (vocab_add(v, joined) != 0)
                    return VG_ENOMEM;
            }
            memcpy(cur, joined, strlen(joined) + 1);
            cl = strlen(cur);
        }
    }
    return 0;
}

static cJSON *bytelevel(const char *type)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddBoolToObject(o, "add_prefix_space", 0);
    cJSON_AddBoolToObject(o, "trim_offsets", 0);
    cJSON_AddBoolToObject(o, "use_regex", 0);
    return o;
}

/* The generated tokenizer.json with the added tokens from id base on. */
static char *tokenizer_json(const tok_vocab *v, int base)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < N_ADDED; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", base + i);
        cJSON_AddStringToObject(a, "content", added_tokens[i].content);
        cJSON_AddBoolToObject(a, "single_word", 0);
        cJSON_AddBoolToObject(a, "lstrip", 0);
        cJSON_AddBoolToObject(a, "rstrip", 0);
        cJSON_AddBoolToObject(a, "normalized", 0);
        cJSON_AddBoolToObject(a, "special", added_tokens[i].special);
        cJSON_AddItemToArray(added, a);
    }
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "NFC");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *seq = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON *pat = cJSON_AddObjectToObject(split, "pattern");
    cJSON_AddStringToObject(pat, "Regex", pretok_regex);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddBoolToObject(split, "invert", 0);
    cJSON_AddItemToArray(seq, split);
    cJSON_AddItemToArray(seq, bytelevel("ByteLevel"));
    cJSON_AddItemToObject(root, "post_processor", bytelevel("ByteLevel"));
    cJSON_AddItemToObject(root, "decoder", bytelevel("ByteLevel"));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddStringToObject(model, "continuing_subword_prefix", "");
    cJSON_AddStringToObject(model, "end_of_word_suffix", "");
    cJSON_AddBoolToObject(model, "fuse_unk", 0);
    cJSON_AddBoolToObject(model, "byte_fallback", 0);
    cJSON_AddBoolToObject(model, "ignore_merges", 0);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (size_t i = 0; i < v->n; i++)
        cJSON_AddNumberToObject(vocab, v->tokens[i], (double)i);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (size_t i = 0; i < v->n_merges; i++) {
        const char *pair[2] = {v->merges[i][0], v->merges[i][1]};
        cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* Reads the ids of the special tokens from a tokenizer.json (added_tokens first, then the vocab)
 * and its largest id. */
static int scan_tokenizer(const char *path, const char *text, size_t len, int32_t ids[N_ADDED],
                          long *max_id, char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return vg_fail(err, errlen, VG_EFORMAT, "%s: not a JSON object", path);
    }
    for (int i = 0; i < N_ADDED; i++)
        ids[i] = -1;
    *max_id = -1;
    const cJSON *e;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    cJSON_ArrayForEach(e, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(c) || id->valuedouble < 0 ||
            id->valuedouble > VG_CFG_MAX_TOKEN_ID)
            continue;
        long v = (long)id->valuedouble;
        *max_id = VG_MAX(*max_id, v);
        for (int i = 0; i < N_ADDED; i++)
            if (strcmp(c->valuestring, added_tokens[i].content) == 0)
                ids[i] = (int32_t)v;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    cJSON_ArrayForEach(e, vocab)
    {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > VG_CFG_MAX_TOKEN_ID)
            continue;
        long v = (long)e->valuedouble;
        *max_id = VG_MAX(*max_id, v);
        for (int i = 0; i < N_ADDED; i++)
            if (ids[i] < 0 && e->string && strcmp(e->string, added_tokens[i].content) == 0)
                ids[i] = (int32_t)v;
    }
    cJSON_Delete(root);
    static const int needed[] = {TOK_ENDOFTEXT,  TOK_IM_START,  TOK_IM_END,   TOK_VISION_START,
                                 TOK_VISION_END, TOK_IMAGE_PAD, TOK_VIDEO_PAD};
    for (size_t i = 0; i < VG_ARRAY_LEN(needed); i++)
        if (ids[needed[i]] < 0)
            return vg_fail(err, errlen, VG_EMODEL, "%s: has no token %s", path,
                           added_tokens[needed[i]].content);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Files.
 */
static int write_text(const char *dir, const char *name, const char *text, size_t len, char *err,
                      size_t errlen)
{
    char path[4096], tmp[4100];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return vg_fail(err, errlen, VG_EINVAL, "%s: path too long", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return vg_fail(err, errlen, -errno, "%s: %s", tmp, strerror(errno));
    const char *p = text;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = -errno;
            close(fd);
            unlink(tmp);
            return vg_fail(err, errlen, e, "%s: write: %s", tmp, vg_strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = -errno;
        unlink(tmp);
        return vg_fail(err, errlen, e, "%s: %s", tmp, vg_strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = -errno;
        unlink(tmp);
        return vg_fail(err, errlen, e, "%s: rename: %s", path, vg_strerror(e));
    }
    return 0;
}

static int write_json(const char *dir, const char *name, char *json, char *err, size_t errlen)
{
    if (!json)
        return vg_fail(err, errlen, VG_ENOMEM, "%s/%s: out of memory", dir, name);
    size_t n = strlen(json);
    char *t = realloc(json, n + 2); /* end with a newline like the HF writers */
    if (!t) {
        free(json);
        return vg_fail(err, errlen, VG_ENOMEM, "%s/%s: out of memory", dir, name);
    }
    t[n] = '\n';
    t[n + 1] = '\0';
    int rc = write_text(dir, name, t, n + 1, err, errlen);
    free(t);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------
 * Weights.
 */
typedef enum { INIT_NORMAL, INIT_BIAS, INIT_ONE } init_kind;

typedef struct rt {
    char name[96];
    int ndim;
    int64_t shape[VG_MAX_DIMS];
    init_kind init;
} rt;

typedef struct rt_list {
    rt *t;
    size_t n, cap;
    int oom;
} rt_list;

static void add_t(rt_list *l, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add_t(rt_list *l, int ndim, const int64_t *shape, const char *fmt, ...)
{
    if (l->oom)
        return;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 256;
        rt *t = realloc(l->t, nc * sizeof *t);
        if (!t) {
            l->oom = 1;
            return;
        }
        l->t = t;
        l->cap = nc;
    }
    rt *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    size_t len = strlen(t->name);
    if (len > 5 && strcmp(t->name + len - 5, ".bias") == 0)
        t->init = INIT_BIAS;
    else if (strstr(t->name, "norm") && len > 7 && strcmp(t->name + len - 7, ".weight") == 0)
        t->init = INIT_ONE;
    else
        t->init = INIT_NORMAL;
}

#define S1(a)             ((const int64_t[]){(a)})
#define S2(a, b)          ((const int64_t[]){(a), (b)})
#define S5(a, b, c, d, e) ((const int64_t[]){(a), (b), (c), (d), (e)})

/* Every tensor of docs/qwen3vl.md §3/§4 for info. */
static void list_tensors(const vg_model_info *m, rt_list *l)
{
    const int64_t D = m->vision_hidden, I = m->vision_intermediate, O = m->out_hidden_size;
    const int64_t M4 = D * m->spatial_merge_size * m->spatial_merge_size;
    if (m->has_vision) {
        add_t(l, 5, S5(D, m->in_channels, m->temporal_patch_size, m->patch_size, m->patch_size),
              "model.visual.patch_embed.proj.weight");
        add_t(l, 1, S1(D), "model.visual.patch_embed.proj.bias");
        add_t(l, 2, S2(m->num_position_embeddings, D), "model.visual.pos_embed.weight");
        for (int i = 0; i < m->vision_depth; i++) {
            const char *p = "model.visual.blocks";
            add_t(l, 1, S1(D), "%s.%d.norm1.weight", p, i);
            add_t(l, 1, S1(D), "%s.%d.norm1.bias", p, i);
            add_t(l, 1, S1(D), "%s.%d.norm2.weight", p, i);
            add_t(l, 1, S1(D), "%s.%d.norm2.bias", p, i);
            add_t(l, 2, S2(3 * D, D), "%s.%d.attn.qkv.weight", p, i);
            add_t(l, 1, S1(3 * D), "%s.%d.attn.qkv.bias", p, i);
            add_t(l, 2, S2(D, D), "%s.%d.attn.proj.weight", p, i);
            add_t(l, 1, S1(D), "%s.%d.attn.proj.bias", p, i);
            add_t(l, 2, S2(I, D), "%s.%d.mlp.linear_fc1.weight", p, i);
            add_t(l, 1, S1(I), "%s.%d.mlp.linear_fc1.bias", p, i);
            add_t(l, 2, S2(D, I), "%s.%d.mlp.linear_fc2.weight", p, i);
            add_t(l, 1, S1(D), "%s.%d.mlp.linear_fc2.bias", p, i);
        }
        for (int k = -1; k < m->n_deepstack; k++) {
            char p[64];
            if (k < 0)
                snprintf(p, sizeof p, "model.visual.merger");
            else
                snprintf(p, sizeof p, "model.visual.deepstack_merger_list.%d", k);
            int64_t nd = k < 0 ? D : M4; /* main merger: LN before the shuffle */
            add_t(l, 1, S1(nd), "%s.norm.weight", p);
            add_t(l, 1, S1(nd), "%s.norm.bias", p);
            add_t(l, 2, S2(M4, M4), "%s.linear_fc1.weight", p);
            add_t(l, 1, S1(M4), "%s.linear_fc1.bias", p);
            add_t(l, 2, S2(O, M4), "%s.linear_fc2.weight", p);
            add_t(l, 1, S1(O), "%s.linear_fc2.bias", p);
        }
    }
    const int64_t H = m->hidden_size, V = m->vocab_size, hd = m->head_dim,
                  FF = m->intermediate_size;
    const int64_t q = (int64_t)m->n_heads * hd, kv = (int64_t)m->n_kv_heads * hd;
    const char *p = "model.language_model";
    add_t(l, 2, S2(V, H), "%s.embed_tokens.weight", p);
    for (int i = 0; i < m->n_layers; i++) {
        add_t(l, 1, S1(H), "%s.layers.%d.input_layernorm.weight", p, i);
        add_t(l, 1, S1(H), "%s.layers.%d.post_attention_layernorm.weight", p, i);
        add_t(l, 2, S2(q, H), "%s.layers.%d.self_attn.q_proj.weight", p, i);
        add_t(l, 2, S2(kv, H), "%s.layers.%d.self_attn.k_proj.weight", p, i);
        add_t(l, 2, S2(kv, H), "%s.layers.%d.self_attn.v_proj.weight", p, i);
        add_t(l, 2, S2(H, q), "%s.layers.%d.self_attn.o_proj.weight", p, i);
        add_t(l, 1, S1(hd), "%s.layers.%d.self_attn.q_norm.weight", p, i);
        add_t(l, 1, S1(hd), "%s.layers.%d.self_attn.k_norm.weight", p, i);
        add_t(l, 2, S2(FF, H), "%s.layers.%d.mlp.gate_proj.weight", p, i);
        add_t(l, 2, S2(FF, H), "%s.layers.%d.mlp.up_proj.weight", p, i);
        add_t(l, 2, S2(H, FF), "%s.layers.%d.mlp.down_proj.weight", p, i);
    }
    add_t(l, 1, S1(H), "%s.norm.weight", p);
    if (!m->tie_word_embeddings)
        add_t(l, 2, S2(V, H), "lm_head.weight");
}

static int cmp_rt(const void *a, const void *b)
{
    return strcmp(((const rt *)a)->name, ((const rt *)b)->name);
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    uint64_t s = seed ^ h;
    return splitmix64(&s);
}

/* Fills out[n] with BF16 values of one tensor's stream. */
static void fill_bf16(uint16_t *out, size_t n, init_kind kind, float std, uint64_t *state)
{
    if (kind == INIT_ONE) {
        for (size_t i = 0; i < n; i++)
            out[i] = 0x3f80; /* 1.0 */
        return;
    }
    /* Sum of four uniform 16-bit integers: mean 131070, sd 37837.23 (Irwin-Hall). */
    const float scale = (kind == INIT_BIAS ? 0.5f * std : std) / 37837.23f;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = splitmix64(state);
        int32_t s = (int32_t)(r & 0xffff) + (int32_t)((r >> 16) & 0xffff) +
                    (int32_t)((r >> 32) & 0xffff) + (int32_t)(r >> 48) - 131070;
        out[i] = vg_f32_to_bf16((float)s * scale);
    }
}

static int write_weights(const char *path, const vg_model_info *m, uint64_t seed, float std,
                         char *err, size_t errlen)
{
    rt_list l = {0};
    list_tensors(m, &l);
    if (l.oom) {
        free(l.t);
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
    }
    qsort(l.t, l.n, sizeof *l.t, cmp_rt);
    vg_st_write_tensor *wt = calloc(l.n, sizeof *wt);
    const size_t chunk = (size_t)1 << 20;
    uint16_t *buf = malloc(chunk * sizeof *buf);
    int rc = 0;
    vg_st_writer *w = NULL;
    if (!wt || !buf) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < l.n; i++) {
        wt[i].name = l.t[i].name;
        wt[i].dtype = VG_DT_BF16;
        wt[i].ndim = l.t[i].ndim;
        memcpy(wt[i].shape, l.t[i].shape, sizeof wt[i].shape);
    }
    if ((rc = vg_st_writer_open(path, wt, l.n, &w, err, errlen)) != 0)
        goto out;
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        size_t numel = 1;
        for (int d = 0; d < l.t[i].ndim; d++)
            numel *= (size_t)l.t[i].shape[d]; /* bounded by the config limits */
        uint64_t state = name_seed(seed, l.t[i].name);
        for (size_t done = 0; done < numel && rc == 0;) {
            size_t k = VG_MIN(chunk, numel - done);
            fill_bf16(buf, k, l.t[i].init, std, &state);
            rc = vg_st_writer_write(w, buf, k * sizeof *buf, err, errlen);
            done += k;
        }
    }
    if (rc == 0)
        rc = vg_st_writer_finish(w, err, errlen);
    else
        vg_st_writer_abort(w);
out:
    free(buf);
    free(wt);
    free(l.t);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------
 * Entry point.
 */
static void set_token_ids(vg_model_info *m, const int32_t ids[N_ADDED])
{
    m->endoftext_id = ids[TOK_ENDOFTEXT];
    m->im_start_id = ids[TOK_IM_START];
    m->im_end_id = ids[TOK_IM_END];
    m->vision_start_token_id = ids[TOK_VISION_START];
    m->vision_end_token_id = ids[TOK_VISION_END];
    m->image_token_id = ids[TOK_IMAGE_PAD];
    m->video_token_id = ids[TOK_VIDEO_PAD];
}

int vg_model_write_random(const vg_random_spec *spec, const char *out_dir, char *err, size_t errlen)
{
    if (!spec || !out_dir || !*out_dir)
        return vg_fail(err, errlen, VG_EINVAL, "vg_model_write_random: NULL argument");
    if ((spec->preset != NULL) == (spec->config_path != NULL))
        return vg_fail(err, errlen, VG_EINVAL, "give exactly one of a preset and a config file");
    float std = spec->std == 0.0f ? 0.02f : spec->std;
    if (!(std > 0.0f && std <= 10.0f))
        return vg_fail(err, errlen, VG_EINVAL, "std %g must be in (0, 10]", (double)spec->std);

    vg_model_info m;
    int rc;
    if (spec->preset) {
        rc = vg_random_preset(spec->preset, &m, err, errlen);
    } else {
        char *text = NULL;
        size_t len = 0;
        rc = vg_read_file(spec->config_path, (size_t)16 << 20, &text, &len, err, errlen);
        if (rc == 0) {
            char sub[200];
            rc = vg_model_config_parse(text, len, &m, sub, sizeof sub);
            if (rc != 0)
                vg_fail(err, errlen, rc, "%s: %s", spec->config_path, sub);
            free(text);
        }
    }
    if (rc != 0)
        return rc;
    if (!m.has_vision)
        return vg_fail(err, errlen, VG_EINVAL, "the config has no vision_config");

    /* The tokenizer decides the special ids; config.json is written to match it. */
    char *tok_text = NULL;
    size_t tok_len = 0;
    int32_t ids[N_ADDED];
    tok_vocab tv = {0};
    if (spec->tokenizer_src) {
        long max_id = -1;
        rc = vg_read_file(spec->tokenizer_src, (size_t)256 << 20, &tok_text, &tok_len, err, errlen);
        if (rc == 0)
            rc = scan_tokenizer(spec->tokenizer_src, tok_text, tok_len, ids, &max_id, err, errlen);
        if (rc == 0 && max_id >= m.vocab_size) {
            if (spec->preset) /* grow the embedding to the tokenizer, in rows of 128 */
                m.vocab_size = (int)((max_id + 1 + 127) / 128 * 128);
            else
                rc = vg_fail(err, errlen, VG_EMODEL,
                             "%s: token id %ld is not below the config's vocab_size %d",
                             spec->tokenizer_src, max_id, m.vocab_size);
        }
    } else {
        rc = build_vocab(&tv);
        if (rc != 0) {
            vg_fail(err, errlen, rc, "out of memory building the tokenizer");
        } else {
            long base =
                m.vocab_size >= FULL_SPECIAL_BASE + N_ADDED ? FULL_SPECIAL_BASE : (long)tv.n;
            if (base + N_ADDED > m.vocab_size) {
                rc = vg_fail(err, errlen, VG_EMODEL,
                             "vocab_size %d is too small for the generated tokenizer (%ld ids)",
                             m.vocab_size, base + N_ADDED);
            } else {
                for (int i = 0; i < N_ADDED; i++)
                    ids[i] = (int32_t)(base + i);
                tok_text = tokenizer_json(&tv, (int)base);
                if (!tok_text)
                    rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory writing tokenizer.json");
                else
                    tok_len = strlen(tok_text);
            }
        }
        vocab_free(&tv);
    }
    if (rc != 0) {
        free(tok_text);
        return rc;
    }
    set_token_ids(&m, ids);

    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        rc = vg_fail(err, errlen, -errno, "%s: %s", out_dir, strerror(errno));
        free(tok_text);
        return rc;
    }
    /* A stale shard index would make loaders ignore the new model.safetensors. */
    char index_path[4096];
    if ((size_t)snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json",
                         out_dir) < sizeof index_path)
        unlink(index_path);
    rc = write_text(out_dir, "tokenizer.json", tok_text, tok_len, err, errlen);
    free(tok_text);
    if (rc == 0)
        rc = write_json(out_dir, "config.json", vg_random_config_json(&m), err, errlen);
    if (rc == 0)
        rc = write_json(out_dir, "generation_config.json", gen_config_json(&m), err, errlen);
    if (rc == 0)
        rc = write_json(out_dir, "video_preprocessor_config.json", preproc_json(&m), err, errlen);
    if (rc == 0) {
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/model.safetensors", out_dir) >= sizeof path)
            return vg_fail(err, errlen, VG_EINVAL, "%s: path too long", out_dir);
        rc = write_weights(path, &m, spec->seed, std, err, errlen);
    }
    return rc;
}
