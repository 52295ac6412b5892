/*
 * gguf_convert.c: vg_model_quantize() -- a Hugging Face Qwen3-VL checkpoint written as the GGUF
 * pair llama.cpp's tools make: the `qwen3vl` text model (what convert_hf_to_gguf.py writes,
 * quantized the way llama-quantize quantizes it without an importance matrix) and the `mmproj`
 * vision file (F16, or BF16 for the bf16 type), plus the JSON files vigil reads beside them.
 *
 * Types (llama.cpp's names): f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k. Each 2-D text weight gets
 * the type's base type, with llama-quantize's rules (llama-quant.cpp) for these types: the output
 * matrix (the embedding when tied) Q6_K unless the type is q8_0; attn_v and ffn_down Q6_K in the
 * layers use_more_bits() picks for q4_k_m and q5_k_m; a row that is not a whole number of blocks
 * falls back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16). Norms stay F32. The quantizers
 * are llama.cpp's reference ones (quant.c), so the tensors are byte for byte llama-quantize's.
 *
 * Threads and memory: a tensor's rows are quantized in chunks of up to 8 MiB of output, each chunk
 * split across a pool of one thread per online CPU (the rows are independent, so the bytes do not
 * depend on the thread count), then written in order. One float32 row of scratch per range, one
 * chunk of output; the checkpoint is read through its mapping and each tensor's pages are dropped
 * after use.
 */
#include "common.h"
#include "engine.h"
#include "gguf.h"
#include "pool.h"
#include "quant.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct qtype {
    const char *name; /* llama.cpp's */
    const char *file; /* in the file name */
    uint32_t base;    /* ggml type of the weights */
    uint32_t ftype;   /* general.file_type (llama_ftype) */
    int k_m;          /* the _M mixes */
} qtype;

static const qtype TYPES[] = {
    {"f16", "F16", VG_GGML_F16, 1, 0},         {"bf16", "BF16", VG_GGML_BF16, 32, 0},
    {"q8_0", "Q8_0", VG_GGML_Q8_0, 7, 0},      {"q4_0", "Q4_0", VG_GGML_Q4_0, 2, 0},
    {"q4_k_m", "Q4_K_M", VG_GGML_Q4_K, 15, 1}, {"q5_k_m", "Q5_K_M", VG_GGML_Q5_K, 17, 1},
    {"q6_k", "Q6_K", VG_GGML_Q6_K, 18, 0},
};

static int quantized(uint32_t t)
{
    return t != VG_GGML_F32 && t != VG_GGML_F16 && t != VG_GGML_BF16;
}

static int use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static uint32_t fallback(uint32_t t, int64_t ncols)
{
    size_t be;
    vg_ggml_type_block(t, &be, NULL);
    if (ncols % (int64_t)be == 0)
        return t;
    uint32_t f = t == VG_GGML_Q4_K   ? VG_GGML_Q5_0
                 : t == VG_GGML_Q5_K ? VG_GGML_Q5_1
                 : t == VG_GGML_Q6_K ? VG_GGML_Q8_0
                                     : VG_GGML_F16;
    vg_ggml_type_block(f, &be, NULL);
    return ncols % (int64_t)be == 0 ? f : VG_GGML_F16;
}

/* The type of text tensor `role` (0 other, 1 output/tied embedding, 2 attn_v, 3 ffn_down) of layer
 * i. */
static uint32_t text_type(const qtype *q, int ndim, int64_t ncols, int role, int i, int n)
{
    if (ndim < 2)
        return VG_GGML_F32;
    uint32_t t = q->base;
    if (!quantized(t))
        return t;
    if (role == 1) {
        size_t be;
        vg_ggml_type_block(t, &be, NULL);
        if (ncols % (int64_t)be != 0)
            t = VG_GGML_Q8_0;
        else if (t != VG_GGML_Q8_0)
            t = VG_GGML_Q6_K;
    } else if ((role == 2 || role == 3) && q->k_m && use_more_bits(i, n)) {
        t = VG_GGML_Q6_K;
    }
    return fallback(t, ncols);
}

/* One tensor to write: the source, the GGUF name and type, and (patch embedding) which temporal
 * half of a 5-D tensor. */
typedef struct job {
    const vg_tensor *src;
    char name[96];
    uint32_t type;
    int half; /* -1: whole tensor; 0/1: patch_embed.proj.weight[:, :, half] */
} job;

static int add_job(job *jobs, size_t *n, size_t cap, const vg_st *st, const char *hf,
                   const char *gg, uint32_t type, int half, char *err, size_t errlen)
{
    const vg_tensor *t = vg_st_find(st, hf);
    if (!t)
        return vg_fail(err, errlen, VG_EMODEL, "tensor '%s' is missing from the checkpoint", hf);
    if (*n == cap)
        return vg_fail(err, errlen, VG_EMODEL, "too many tensors");
    job *j = &jobs[(*n)++];
    j->src = t;
    snprintf(j->name, sizeof j->name, "%s", gg);
    j->type = type;
    j->half = half;
    return 0;
}

/* ggml sizes (innermost first) of a job's output. */
static int job_ne(const job *j, int64_t *ne)
{
    const vg_tensor *t = j->src;
    if (j->half >= 0) { /* [hid][C][T][p][p] -> one [hid][C][p][p] half */
        ne[0] = t->shape[4];
        ne[1] = t->shape[3];
        ne[2] = t->shape[1];
        ne[3] = t->shape[0];
        return 4;
    }
    for (int d = 0; d < t->ndim; d++)
        ne[d] = t->shape[t->ndim - 1 - d];
    return t->ndim ? t->ndim : 1;
}

/* One chunk of a tensor's rows quantized on the pool: rows r0.. of the source into out. */
typedef struct qchunk {
    const job *j;
    const float *all; /* the widened patch embedding (j->half >= 0), else NULL */
    size_t K, T, pp, r0, row_bytes;
    unsigned char *out;
    int failed; /* set (relaxed) by any range that could not allocate or quantize */
} qchunk;

static void qchunk_range(void *ctx, size_t a, size_t b)
{
    qchunk *c = ctx;
    const job *j = c->j;
    const vg_tensor *t = j->src;
    float *row = malloc(c->K * sizeof *row + 1); /* this range's scratch, freed below */
    if (!row) {
        __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (size_t i = a; i < b; i++) {
        size_t r = c->r0 + i;
        if (j->half >= 0) { /* row r of half h: (o, c, y) = r / p / C ... */
            size_t y = r % (c->pp / c->K), oc = r / (c->pp / c->K);
            memcpy(row, c->all + (oc * c->T + (size_t)j->half) * c->pp + y * c->K,
                   c->K * sizeof *row);
        } else {
            vg_tensor_rows_f32(t, r, r + 1, row);
        }
        if (vg_quant_quantize(j->type, row, c->K, c->out + i * c->row_bytes) != 0) {
            __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    free(row);
}

#define CHUNK_BYTES ((size_t)8 << 20) /* quantized bytes per chunk written at once */

static int write_jobs(vg_gguf_writer *w, const job *jobs, size_t n, const char *path, vg_pool *pool,
                      char *err, size_t errlen)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int64_t ne[4] = {1, 1, 1, 1};
        int nd = job_ne(&jobs[i], ne);
        if ((rc = vg_gguf_w_tensor(w, jobs[i].name, jobs[i].type, nd, ne)) < 0)
            return vg_fail(err, errlen, rc, "%s: tensor '%s' cannot be %s", path, jobs[i].name,
                           vg_ggml_type_name(jobs[i].type));
    }
    if ((rc = vg_gguf_w_begin(w, path, err, errlen)) < 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const job *j = &jobs[i];
        const vg_tensor *t = j->src;
        int64_t ne[4] = {1, 1, 1, 1};
        job_ne(j, ne);
        size_t K = (size_t)ne[0], rows = t->numel / (K ? K : 1), be, bb;
        vg_ggml_type_block(j->type, &be, &bb);
        qchunk c = {.j = j, .K = K, .T = 1, .pp = K * (size_t)ne[1], .row_bytes = K / be * bb};
        size_t per = c.row_bytes ? VG_MAX(CHUNK_BYTES / c.row_bytes, (size_t)1) : 1;
        per = VG_MIN(per, rows ? rows : 1);
        float *all = NULL;
        if (j->half >= 0) { /* the 5-D patch embedding is small: widen it whole */
            all = malloc(t->numel * sizeof *all + 1);
            if (all)
                vg_tensor_dequant_all(t, all);
            rows /= (size_t)t->shape[2];
            c.T = (size_t)t->shape[2];
        }
        c.all = all;
        c.out = malloc(per * c.row_bytes + 1);
        if (!c.out || (j->half >= 0 && !all))
            rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory writing '%s'", j->name);
        for (size_t r0 = 0; r0 < rows && rc == 0; r0 += per) {
            size_t nr = VG_MIN(per, rows - r0);
            c.r0 = r0;
            vg_pool_for(pool, nr, 1, qchunk_range, &c);
            if (c.failed)
                rc = vg_fail(err, errlen, VG_EINVAL, "cannot quantize '%s' to %s", j->name,
                             vg_ggml_type_name(j->type));
            else
                rc = vg_gguf_w_data(w, c.out, nr * c.row_bytes, err, errlen);
        }
        free(c.out);
        free(all);
        if (rc == 0)
            rc = vg_gguf_w_end_tensor(w, err, errlen);
        vg_model_drop_pages(t->data, t->nbytes);
    }
    return rc ? rc : vg_gguf_w_finish(w, err, errlen);
}

/* ---- tokenizer.json -> tokenizer.ggml.* ---- */
static int write_vocab(vg_gguf_writer *w, const char *dir, int vocab_size, int32_t *eos,
                       int32_t *bos, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *text = NULL;
    size_t len = 0;
    int rc = vg_read_file(path, (size_t)512 << 20, &text, &len, err, errlen);
    if (rc < 0)
        return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const char **tok = calloc((size_t)vocab_size, sizeof *tok);
    size_t *tlen = calloc((size_t)vocab_size, sizeof *tlen);
    int32_t *type = calloc((size_t)vocab_size, sizeof *type);
    char *pads = malloc((size_t)vocab_size * 16);
    size_t n_merges = (size_t)cJSON_GetArraySize(merges);
    char **mg = calloc(n_merges + 1, sizeof *mg);
    size_t *mlen = calloc(n_merges + 1, sizeof *mlen);
    if (!root || !cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: not a BPE tokenizer.json", path);
        goto out;
    }
    if (!tok || !tlen || !type || !pads || !mg || !mlen) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory for the vocabulary");
        goto out;
    }
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int id = cJSON_IsNumber(e) ? e->valueint : -1;
        if (id < 0 || id >= vocab_size || tok[id]) {
            rc = vg_fail(err, errlen, VG_EFORMAT, "%s: token '%.40s' has id %d (vocab_size %d)",
                         path, e->string, id, vocab_size);
            goto out;
        }
        tok[id] = e->string;
        type[id] = 1; /* NORMAL */
    }
    for (const cJSON *e = cJSON_IsArray(added) ? added->child : NULL; e; e = e->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        int i = cJSON_IsNumber(id) ? id->valueint : -1;
        if (i < 0 || i >= vocab_size || !cJSON_IsString(c)) {
            rc = vg_fail(err, errlen, VG_EFORMAT, "%s: added token with a bad id", path);
            goto out;
        }
        tok[i] = c->valuestring;
        type[i] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) ? 3 : 4;
        if (strcmp(c->valuestring, "<|im_end|>") == 0)
            *eos = i;
        if (strcmp(c->valuestring, "<|endoftext|>") == 0)
            *bos = i;
    }
    for (int i = 0; i < vocab_size; i++) {
        if (!tok[i]) { /* ids the tokenizer does not use: the converter's padding names */
            snprintf(pads + (size_t)i * 16, 16, "[PAD%d]", i);
            tok[i] = pads + (size_t)i * 16;
            type[i] = 5; /* UNUSED */
        }
        tlen[i] = strlen(tok[i]);
    }
    size_t m = 0;
    for (const cJSON *e = merges->child; e; e = e->next, m++) {
        if (cJSON_IsString(e)) {
            mg[m] = strdup(e->valuestring);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            size_t a = strlen(e->child->valuestring), b = strlen(e->child->next->valuestring);
            mg[m] = malloc(a + b + 2);
            if (mg[m])
                snprintf(mg[m], a + b + 2, "%s %s", e->child->valuestring,
                         e->child->next->valuestring);
        } else {
            rc = vg_fail(err, errlen, VG_EFORMAT, "%s: merge %zu is malformed", path, m);
            goto out;
        }
        if (!mg[m]) {
            rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory for the merges");
            goto out;
        }
        mlen[m] = strlen(mg[m]);
    }
    if ((rc = vg_gguf_w_str(w, "tokenizer.ggml.model", "gpt2")) < 0 ||
        (rc = vg_gguf_w_str(w, "tokenizer.ggml.pre", "qwen2")) < 0 ||
        (rc = vg_gguf_w_arr_str(w, "tokenizer.ggml.tokens", tok, tlen, (size_t)vocab_size)) < 0 ||
        (rc = vg_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, (size_t)vocab_size)) < 0 ||
        (rc = vg_gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)mg, mlen, m)) < 0)
        rc = vg_fail(err, errlen, rc, "out of memory for the vocabulary");
out:
    for (size_t i = 0; mg && i < n_merges; i++)
        free(mg[i]);
    free(mg);
    free(mlen);
    free(tok);
    free(tlen);
    free(type);
    free(pads);
    cJSON_Delete(root);
    return rc;
}

/* tokenizer.chat_template from chat_template.jinja or tokenizer_config.json, when present. */
static int write_template(vg_gguf_writer *w, const char *dir)
{
    char path[4096], *text = NULL;
    size_t len = 0;
    int rc = 0;
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    if (vg_read_file(path, (size_t)1 << 20, &text, &len, NULL, 0) == 0) {
        rc = vg_gguf_w_str(w, "tokenizer.chat_template", text);
        free(text);
        return rc;
    }
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (vg_read_file(path, (size_t)16 << 20, &text, &len, NULL, 0) != 0)
        return 0;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    if (cJSON_IsString(t))
        rc = vg_gguf_w_str(w, "tokenizer.chat_template", t->valuestring);
    cJSON_Delete(j);
    return rc;
}

static int copy_file(const char *src_dir, const char *dst_dir, const char *name, char *err,
                     size_t errlen)
{
    char src[4096], dst[4096], *text = NULL;
    size_t len = 0;
    snprintf(src, sizeof src, "%s/%s", src_dir, name);
    snprintf(dst, sizeof dst, "%s/%s", dst_dir, name);
    int rc = vg_read_file(src, (size_t)64 << 20, &text, &len, NULL, 0);
    if (rc == VG_ENOENT)
        return 0;
    if (rc < 0)
        return vg_fail(err, errlen, rc, "%s: %s", src, vg_strerror(rc));
    FILE *f = fopen(dst, "wb");
    if (!f || fwrite(text, 1, len, f) != len) {
        rc = vg_fail(err, errlen, -errno, "%s: %s", dst, strerror(errno));
    }
    if (f && fclose(f) != 0 && rc == 0)
        rc = vg_fail(err, errlen, -errno, "%s: %s", dst, strerror(errno));
    free(text);
    return rc;
}

/* mkdir -p */
static int mkdir_p(const char *dir)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return -ENAMETOOLONG;
    for (char *c = p + 1; *c; c++)
        if (*c == '/') {
            *c = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return -errno;
            *c = '/';
        }
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

#define CKW(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)) < 0) {                                                                      \
            rc = vg_fail(err, errlen, rc, "out of memory for the metadata");                       \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

int vg_model_quantize(const char *hf_dir, const char *type, const char *out_dir, char *out_text,
                      size_t text_cap, char *err, size_t errlen)
{
    const qtype *q = NULL;
    for (size_t i = 0; type && i < VG_ARRAY_LEN(TYPES); i++)
        if (strcmp(type, TYPES[i].name) == 0)
            q = &TYPES[i];
    if (!hf_dir || !out_dir || !q)
        return vg_fail(err, errlen, VG_EINVAL,
                       "unknown type '%s' (f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k)",
                       type ? type : "(null)");
    vg_model_info in;
    vg_gen_params gen;
    int rc = vg_model_config_load(hf_dir, &in, &gen, err, errlen);
    if (rc < 0)
        return rc;
    vg_st *st = NULL;
    vg_gguf_writer *w = NULL;
    job *jobs = NULL;
    vg_pool *pool = NULL; /* one thread per online CPU; NULL (calling thread only) if it fails */
    if ((rc = vg_st_open_dir(hf_dir, &st, err, errlen)) < 0)
        return rc;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (vg_pool_create(ncpu > 1 ? (int)VG_MIN(ncpu, 256L) : 1, &pool) < 0)
        pool = NULL;
    if ((rc = mkdir_p(out_dir)) < 0) {
        rc = vg_fail(err, errlen, rc, "%s: %s", out_dir, strerror(-rc));
        goto out;
    }
    size_t cap = (size_t)in.n_layers * 11 + (size_t)in.vision_depth * 12 + 64;
    jobs = calloc(cap, sizeof *jobs);
    if (!jobs || vg_gguf_w_create(&w) < 0) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
        goto out;
    }
    char path[4096], hf[160], gg[96];

    /* ---- the text model ---- */
    const char *name = in.name;
    CKW(vg_gguf_w_str(w, "general.architecture", "qwen3vl"));
    CKW(vg_gguf_w_str(w, "general.type", "model"));
    CKW(vg_gguf_w_str(w, "general.name", name));
    CKW(vg_gguf_w_u32(w, "qwen3vl.block_count", (uint32_t)in.n_layers));
    CKW(vg_gguf_w_u32(w, "qwen3vl.context_length", (uint32_t)in.max_position_embeddings));
    CKW(vg_gguf_w_u32(w, "qwen3vl.embedding_length", (uint32_t)in.hidden_size));
    CKW(vg_gguf_w_u32(w, "qwen3vl.feed_forward_length", (uint32_t)in.intermediate_size));
    CKW(vg_gguf_w_u32(w, "qwen3vl.attention.head_count", (uint32_t)in.n_heads));
    CKW(vg_gguf_w_u32(w, "qwen3vl.attention.head_count_kv", (uint32_t)in.n_kv_heads));
    int32_t sec[4] = {in.mrope_section[0], in.mrope_section[1], in.mrope_section[2], 0};
    CKW(vg_gguf_w_arr_i32(w, "qwen3vl.rope.dimension_sections", sec, 4));
    CKW(vg_gguf_w_f32(w, "qwen3vl.rope.freq_base", in.rope_theta));
    CKW(vg_gguf_w_f32(w, "qwen3vl.attention.layer_norm_rms_epsilon", in.rms_norm_eps));
    CKW(vg_gguf_w_u32(w, "qwen3vl.attention.key_length", (uint32_t)in.head_dim));
    CKW(vg_gguf_w_u32(w, "qwen3vl.attention.value_length", (uint32_t)in.head_dim));
    CKW(vg_gguf_w_u32(w, "general.file_type", q->ftype));
    CKW(vg_gguf_w_u32(w, "qwen3vl.n_deepstack_layers", (uint32_t)in.n_deepstack));
    CKW(vg_gguf_w_u32(w, "general.quantization_version", 2));
    int32_t eos = in.im_end_id, bos = in.endoftext_id;
    if ((rc = write_vocab(w, hf_dir, in.vocab_size, &eos, &bos, err, errlen)) < 0)
        goto out;
    CKW(vg_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos));
    CKW(vg_gguf_w_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)bos));
    CKW(vg_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos));
    CKW(vg_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 0));
    CKW(write_template(w, hf_dir));

    size_t n = 0;
    int64_t D = in.hidden_size;
    if ((rc = add_job(jobs, &n, cap, st, "model.language_model.embed_tokens.weight",
                      "token_embd.weight",
                      text_type(q, 2, D, in.tie_word_embeddings ? 1 : 0, 0, in.n_layers), -1, err,
                      errlen)) < 0)
        goto out;
    static const struct {
        const char *hf, *gg;
        int role;
    } layer[] = {
        {"input_layernorm.weight", "attn_norm.weight", 0},
        {"self_attn.q_proj.weight", "attn_q.weight", 0},
        {"self_attn.k_proj.weight", "attn_k.weight", 0},
        {"self_attn.v_proj.weight", "attn_v.weight", 2},
        {"self_attn.o_proj.weight", "attn_output.weight", 0},
        {"self_attn.q_norm.weight", "attn_q_norm.weight", 0},
        {"self_attn.k_norm.weight", "attn_k_norm.weight", 0},
        {"post_attention_layernorm.weight", "ffn_norm.weight", 0},
        {"mlp.gate_proj.weight", "ffn_gate.weight", 0},
        {"mlp.up_proj.weight", "ffn_up.weight", 0},
        {"mlp.down_proj.weight", "ffn_down.weight", 3},
    };
    for (int l = 0; l < in.n_layers; l++)
        for (size_t k = 0; k < VG_ARRAY_LEN(layer); k++) {
            snprintf(hf, sizeof hf, "model.language_model.layers.%d.%s", l, layer[k].hf);
            snprintf(gg, sizeof gg, "blk.%d.%s", l, layer[k].gg);
            const vg_tensor *t = vg_st_find(st, hf);
            int nd = t ? t->ndim : 1;
            int64_t cols = t && nd ? t->shape[nd - 1] : 1;
            if ((rc = add_job(jobs, &n, cap, st, hf, gg,
                              text_type(q, nd, cols, layer[k].role, l, in.n_layers), -1, err,
                              errlen)) < 0)
                goto out;
        }
    if ((rc = add_job(jobs, &n, cap, st, "model.language_model.norm.weight", "output_norm.weight",
                      VG_GGML_F32, -1, err, errlen)) < 0)
        goto out;
    if (!in.tie_word_embeddings &&
        (rc = add_job(jobs, &n, cap, st, "lm_head.weight", "output.weight",
                      text_type(q, 2, D, 1, 0, in.n_layers), -1, err, errlen)) < 0)
        goto out;
    snprintf(path, sizeof path, "%s/%s-%s.gguf", out_dir, name, q->file);
    if ((rc = write_jobs(w, jobs, n, path, pool, err, errlen)) < 0)
        goto out;
    if (out_text)
        snprintf(out_text, text_cap, "%s", path);
    vg_gguf_w_free(w);
    w = NULL;

    /* ---- the mmproj ---- */
    if (in.has_vision) {
        uint32_t vt = q->base == VG_GGML_BF16 ? VG_GGML_BF16 : VG_GGML_F16;
        if (vg_gguf_w_create(&w) < 0) {
            rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
            goto out;
        }
        CKW(vg_gguf_w_str(w, "general.architecture", "clip"));
        CKW(vg_gguf_w_str(w, "general.type", "mmproj"));
        CKW(vg_gguf_w_str(w, "general.name", name));
        CKW(vg_gguf_w_u32(w, "general.file_type", vt == VG_GGML_BF16 ? 32 : 1));
        CKW(vg_gguf_w_bool(w, "clip.has_vision_encoder", 1));
        CKW(vg_gguf_w_u32(w, "clip.vision.projection_dim", (uint32_t)in.out_hidden_size));
        int side = (int)lround(sqrt((double)in.num_position_embeddings));
        CKW(vg_gguf_w_u32(w, "clip.vision.image_size", (uint32_t)(side * in.patch_size)));
        CKW(vg_gguf_w_u32(w, "clip.vision.patch_size", (uint32_t)in.patch_size));
        CKW(vg_gguf_w_u32(w, "clip.vision.embedding_length", (uint32_t)in.vision_hidden));
        CKW(vg_gguf_w_u32(w, "clip.vision.feed_forward_length", (uint32_t)in.vision_intermediate));
        CKW(vg_gguf_w_u32(w, "clip.vision.block_count", (uint32_t)in.vision_depth));
        CKW(vg_gguf_w_u32(w, "clip.vision.attention.head_count", (uint32_t)in.vision_heads));
        CKW(vg_gguf_w_arr_f32(w, "clip.vision.image_mean", in.image_mean, 3));
        CKW(vg_gguf_w_arr_f32(w, "clip.vision.image_std", in.image_std, 3));
        CKW(vg_gguf_w_str(w, "clip.projector_type", "qwen3vl_merger"));
        CKW(vg_gguf_w_bool(w, "clip.use_gelu", 1));
        CKW(vg_gguf_w_u32(w, "clip.vision.spatial_merge_size", (uint32_t)in.spatial_merge_size));
        CKW(vg_gguf_w_f32(w, "clip.vision.attention.layer_norm_epsilon", in.rms_norm_eps));
        uint8_t *ds = calloc((size_t)in.vision_depth, 1);
        if (!ds) {
            rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
            goto out;
        }
        for (int k = 0; k < in.n_deepstack; k++)
            ds[in.deepstack_indexes[k]] = 1;
        rc = vg_gguf_w_arr_bool(w, "clip.vision.is_deepstack_layers", ds, (size_t)in.vision_depth);
        free(ds);
        CKW(rc);
        CKW(vg_gguf_w_u32(w, "general.quantization_version", 2));
        n = 0;
        static const struct {
            const char *hf, *gg;
        } blk[] =
            {
                {"attn.proj.bias", "attn_out.bias"},
                {"attn.proj.weight", "attn_out.weight"},
                {"attn.qkv.bias", "attn_qkv.bias"},
                {"attn.qkv.weight", "attn_qkv.weight"},
                {"mlp.linear_fc1.bias", "ffn_up.bias"},
                {"mlp.linear_fc1.weight", "ffn_up.weight"},
                {"mlp.linear_fc2.bias", "ffn_down.bias"},
                {"mlp.linear_fc2.weight", "ffn_down.weight"},
                {"norm1.bias", "ln1.bias"},
                {"norm1.weight", "ln1.weight"},
                {"norm2.bias", "ln2.bias"},
                {"norm2.weight", "ln2.weight"},
            },
          mg[] = {{"linear_fc1.bias", "fc1.bias"}, {"linear_fc1.weight", "fc1.weight"},
                  {"linear_fc2.bias", "fc2.bias"}, {"linear_fc2.weight", "fc2.weight"},
                  {"norm.bias", "norm.bias"},      {"norm.weight", "norm.weight"}};
#define VJOB(H, G)                                                                                 \
    do {                                                                                           \
        const vg_tensor *t_ = vg_st_find(st, H);                                                   \
        uint32_t ty_ = t_ && t_->ndim >= 2 ? fallback(vt, t_->shape[t_->ndim - 1]) : VG_GGML_F32;  \
        if ((rc = add_job(jobs, &n, cap, st, H, G, ty_, -1, err, errlen)) < 0)                     \
            goto out;                                                                              \
    } while (0)
        for (int b = 0; b < in.vision_depth; b++)
            for (size_t k = 0; k < VG_ARRAY_LEN(blk); k++) {
                snprintf(hf, sizeof hf, "model.visual.blocks.%d.%s", b, blk[k].hf);
                snprintf(gg, sizeof gg, "v.blk.%d.%s", b, blk[k].gg);
                VJOB(hf, gg);
            }
        for (int k = 0; k < in.n_deepstack; k++)
            for (size_t m = 0; m < VG_ARRAY_LEN(mg); m++) {
                snprintf(hf, sizeof hf, "model.visual.deepstack_merger_list.%d.%s", k, mg[m].hf);
                snprintf(gg, sizeof gg, "v.deepstack.%d.%s", in.deepstack_indexes[k], mg[m].gg);
                VJOB(hf, gg);
            }
        VJOB("model.visual.merger.linear_fc1.bias", "mm.0.bias");
        VJOB("model.visual.merger.linear_fc1.weight", "mm.0.weight");
        VJOB("model.visual.merger.linear_fc2.bias", "mm.2.bias");
        VJOB("model.visual.merger.linear_fc2.weight", "mm.2.weight");
        VJOB("model.visual.merger.norm.bias", "v.post_ln.bias");
        VJOB("model.visual.merger.norm.weight", "v.post_ln.weight");
        VJOB("model.visual.patch_embed.proj.bias", "v.patch_embd.bias");
        if (in.temporal_patch_size != 2) {
            rc = vg_fail(err, errlen, VG_ENOTSUP,
                         "temporal_patch_size %d: the mmproj format stores exactly 2 halves",
                         in.temporal_patch_size);
            goto out;
        }
        for (int h = 0; h < 2; h++)
            if ((rc = add_job(jobs, &n, cap, st, "model.visual.patch_embed.proj.weight",
                              h ? "v.patch_embd.weight.1" : "v.patch_embd.weight", vt, h, err,
                              errlen)) < 0)
                goto out;
        if ((rc = add_job(jobs, &n, cap, st, "model.visual.pos_embed.weight",
                          "v.position_embd.weight", VG_GGML_F32, -1, err, errlen)) < 0)
            goto out;
        snprintf(path, sizeof path, "%s/mmproj-%s-%s.gguf", out_dir, name,
                 vt == VG_GGML_BF16 ? "BF16" : "F16");
        if ((rc = write_jobs(w, jobs, n, path, pool, err, errlen)) < 0)
            goto out;
    }
    /* what vigil reads beside the pair */
    if ((rc = copy_file(hf_dir, out_dir, "generation_config.json", err, errlen)) < 0 ||
        (rc = copy_file(hf_dir, out_dir, "video_preprocessor_config.json", err, errlen)) < 0)
        goto out;
out:
    vg_pool_destroy(pool);
    vg_gguf_w_free(w);
    free(jobs);
    vg_st_close(st);
    return rc;
}
