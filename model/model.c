/*
 * model.c: loading and freeing a vg_model. Reads config.json (config.c), opens the safetensors
 * (safetensors.c), loads the tokenizer, and builds float32 views of every weight: with use_mmap = 0
 * each tensor is converted into malloc'd memory and the mapping is closed after loading; with
 * use_mmap = 1, F32 tensors (4-byte aligned) are used in place from the read-only mapping, which
 * then stays open for the model's lifetime, and other dtypes are still converted. Every tensor's
 * shape is checked against the config (vg_st_expect names the tensor on mismatch).
 *
 * Threads: vg_model_load runs on one thread; the loaded model is read-only afterwards (the trace
 * hook excepted). OpenBLAS's thread count is process-wide: vg_model_load sets it to
 * params.n_threads, so the last model loaded decides it.
 */
#define _DEFAULT_SOURCE /* madvise */
#include "engine.h"
#include "gguf_model.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int vg_model_own(vg_model *m, void *p)
{
    if (m->n_owned == m->cap_owned) {
        size_t nc = m->cap_owned ? m->cap_owned * 2 : 64;
        void **no = realloc(m->owned, nc * sizeof(*no));
        if (!no) {
            free(p);
            return VG_ENOMEM;
        }
        m->owned = no;
        m->cap_owned = nc;
    }
    m->owned[m->n_owned++] = p;
    return 0;
}

/* The converted tensor's source pages are no longer needed: drop them from this process's resident
 * set (the file stays in the page cache), so that loading does not briefly hold both the mapping
 * and the float32 copy (the peak RSS would be 1.5x the model). */
void vg_model_drop_pages(const void *p, size_t n)
{
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || n == 0)
        return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~((uintptr_t)pg - 1);
    if (e > a)
        madvise((void *)a, e - a, MADV_DONTNEED);
}

int vg_model_weight(vg_model *m, const char *name, int ndim, const int64_t *shape,
                    const float **out, char *err, size_t errlen)
{
    const vg_tensor *t = NULL;
    int rc = vg_st_expect(m->st, name, ndim, shape, &t, err, errlen);
    if (rc < 0)
        return rc;
    if ((rc = vg_tensor_check_finite(t, err, errlen)) < 0)
        return rc;
    m->info.n_params += t->numel;
    if (m->use_mmap && t->dtype == VG_DT_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = (const float *)t->data;
        return 0;
    }
    size_t bytes;
    if (vg_mul_size(t->numel, sizeof(float), &bytes) < 0)
        return vg_fail(err, errlen, VG_EMODEL, "%s: tensor '%s' is too large", t->file, name);
    float *p = malloc(bytes ? bytes : 1);
    if (!p)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory loading tensor '%s' (%zu bytes)",
                       name, bytes);
    vg_tensor_to_f32(t, p);
    vg_model_drop_pages(t->data, t->nbytes);
    if (vg_model_own(m, p) < 0)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory loading tensor '%s'", name);
    m->info.weight_bytes += bytes;
    *out = p;
    return 0;
}

void *vg_scratch_take(vg_model *m, size_t bytes)
{
    void *p = NULL;
    pthread_mutex_lock(&m->pool_mu);
    for (int i = 0; i < VG_SCRATCH_POOL; i++)
        if (m->pool[i] && m->pool_size[i] >= bytes) {
            p = m->pool[i];
            m->pool[i] = NULL;
            break;
        }
    pthread_mutex_unlock(&m->pool_mu);
    /* 64-byte aligned: oneDNN reads and writes these rows in place (misaligned rows cost a
     * prefill 5 %) */
    return p ? p : aligned_alloc(64, bytes ? (bytes + 63) & ~(size_t)63 : 64);
}

void vg_scratch_give(vg_model *m, void *p, size_t bytes)
{
    if (!p)
        return;
    pthread_mutex_lock(&m->pool_mu);
    int slot = -1;
    for (int i = 0; i < VG_SCRATCH_POOL && slot < 0; i++)
        if (!m->pool[i])
            slot = i;
    for (int i = 0; i < VG_SCRATCH_POOL && slot < 0; i++) /* else replace a smaller block */
        if (m->pool_size[i] < bytes)
            slot = i;
    void *drop = p;
    if (slot >= 0) {
        drop = m->pool[slot];
        m->pool[slot] = p;
        m->pool_size[slot] = bytes;
    }
    pthread_mutex_unlock(&m->pool_mu);
    free(drop);
}

void vg_model_free(vg_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < VG_SCRATCH_POOL; i++)
        free(m->pool[i]);
    pthread_mutex_destroy(&m->pool_mu);
    for (size_t i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->blocks);
    free(m->layers);
    free(m->text_inv_freq);
    free(m->mrope_axis);
    vg_tokenizer_free(m->tok);
    if (m->embed.type == VG_MAT_FILE && m->embed.fd >= 0)
        close(m->embed.fd);
    vg_st_close(m->st);
    vg_pool_destroy(m->tpool);
    vg_dnnl_destroy(m->dnnl);
    free(m);
}

/* The chat template needs <|im_start|> and <|im_end|>; a model with vision also the video
 * markers, at the ids config.json gives. A tokenizer without them would load and then fail (or
 * answer garbage) on every job, so the load fails instead, naming the token. */
static int check_special_tokens(const vg_model *m, char *err, size_t errlen)
{
    const struct {
        const char *tok;
        int32_t want; /* the config's id; -1: any */
        int vision;
    } req[] = {
        {"<|im_start|>", -1, 0},
        {"<|im_end|>", -1, 0},
        {"<|vision_start|>", m->info.vision_start_token_id, 1},
        {"<|vision_end|>", m->info.vision_end_token_id, 1},
        {"<|video_pad|>", m->info.video_token_id, 1},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(req); i++) {
        if (req[i].vision && !m->info.has_vision)
            continue;
        int32_t id = vg_tokenizer_token_id(m->tok, req[i].tok);
        if (id < 0)
            return vg_fail(err, errlen, VG_EMODEL,
                           "tokenizer.json has no %s token, which the Qwen3-VL chat template needs",
                           req[i].tok);
        if (req[i].want >= 0 && id != req[i].want)
            return vg_fail(err, errlen, VG_EMODEL,
                           "tokenizer.json gives %s the id %d but config.json says %d", req[i].tok,
                           id, req[i].want);
    }
    return 0;
}

int vg_model_load(const char *dir, const vg_model_params *params, vg_model **out, char *err,
                  size_t errlen)
{
    if (!dir || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_model_load: NULL argument");
    vg_model_params p = params ? *params : vg_model_default_params();
    vg_model *m = calloc(1, sizeof(*m));
    if (!m)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    pthread_mutex_init(&m->pool_mu, NULL);
    /* a GGUF pair (a .gguf file, or a directory of them without config.json), else Hugging Face */
    char gtext[4096], gmm[4096];
    int rc = vg_gguf_model_find(dir, gtext, sizeof gtext, gmm, sizeof gmm, err, errlen);
    if (rc < 0)
        goto fail;
    const int gguf = rc == 1;
    if (gguf) {
        const char *mm = p.mmproj_path && *p.mmproj_path ? p.mmproj_path : gmm[0] ? gmm : NULL;
        struct stat sb;
        const char *gdir = stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) ? dir : NULL;
        rc = vg_gguf_model_open(gtext, mm, gdir, &m->info, &m->gen, &m->st, &m->tok, err, errlen);
    } else {
        rc = vg_model_config_load(dir, &m->info, &m->gen, err, errlen);
    }
    if (rc < 0)
        goto fail;
    m->info.n_params = 0;
    m->info.weight_bytes = 0;
    {
        char tmp[sizeof(m->info.name)];
        snprintf(tmp, sizeof(tmp), "%s", dir);
        size_t l = strlen(tmp);
        while (l > 1 && tmp[l - 1] == '/')
            tmp[--l] = '\0';
        const char *b = strrchr(tmp, '/');
        snprintf(m->info.name, sizeof(m->info.name), "%s", b && b[1] ? b + 1 : tmp);
    }
    if (p.n_threads <= 0)
        p.n_threads = vg_model_default_params().n_threads;
    m->n_threads = p.n_threads;
    if (vg_pool_create(p.n_threads, &m->tpool) < 0) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory for the thread pool");
        goto fail;
    }
    if (p.weight_type < VG_WEIGHTS_AUTO || p.weight_type > VG_WEIGHTS_Q8_0) {
        rc = vg_fail(err, errlen, VG_EINVAL, "unknown weight type %d", p.weight_type);
        goto fail;
    }

    char path[4096];
    if (snprintf(path, sizeof(path), "%s/tokenizer.json", dir) >= (int)sizeof(path)) {
        rc = vg_fail(err, errlen, VG_EINVAL, "model directory path too long");
        goto fail;
    }
    if (!gguf && (rc = vg_tokenizer_load(path, &m->tok, err, errlen)) < 0)
        goto fail;
    {
        int32_t id;
        if ((id = vg_tokenizer_token_id(m->tok, "<|im_start|>")) >= 0)
            m->info.im_start_id = id;
        if ((id = vg_tokenizer_token_id(m->tok, "<|im_end|>")) >= 0)
            m->info.im_end_id = id;
        if ((id = vg_tokenizer_token_id(m->tok, "<|endoftext|>")) >= 0)
            m->info.endoftext_id = id;
    }

    rc = check_special_tokens(m, err, errlen);
    if (rc < 0)
        goto fail;

    if (!gguf && (rc = vg_st_open_dir(dir, &m->st, err, errlen)) < 0)
        goto fail;
    m->use_mmap = p.use_mmap ? 1 : 0;
    m->wtype = p.weight_type;
    if (m->wtype == VG_WEIGHTS_AUTO) {
        const vg_tensor *e = vg_st_find(m->st, "model.language_model.embed_tokens.weight");
        m->wtype = e && (e->dtype == VG_DT_BF16 || e->dtype == VG_DT_F16) ? VG_WEIGHTS_BF16
                   : e && e->dtype >= VG_DT_Q8_0 ? VG_WEIGHTS_Q8_0 /* GGUF block types */
                                                 : VG_WEIGHTS_F32;
    }
    m->info.weight_type = m->wtype;
    {
        /* bf16 keys and values with the lossy weight types: half the cache memory and the bytes a
         * decode step reads; their prefill attention through oneDNN rounds K and V to bf16 anyway
         */
        const char *kv = getenv("VG_KV_TYPE");
        m->info.kv_bytes = m->wtype != VG_WEIGHTS_F32 && !(kv && strcmp(kv, "f32") == 0) ? 2 : 4;
    }
    if (m->wtype != VG_WEIGHTS_F32 && vg_dnnl_create(m) < 0) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
        goto fail;
    }
    /* The products run on the engine's pool: oneDNN single-threaded per participant, float32
     * ones as one single-threaded OpenBLAS call per participant (vg_linear_pool). One OpenBLAS
     * thread, so that no idle OpenBLAS worker spins (sched_yield) beside the pool between
     * products: with OpenBLAS threaded, its worker took 10-20 % of a core from the pool's during
     * a 2-thread float32 vision pair's attention and element-wise work. */
    openblas_set_num_threads(1);
    snprintf(m->info.isa, sizeof(m->info.isa), "%s", vg_isa_name(vg_isa_level()));
    rc = vg_text_load(m, err, errlen);
    if (rc < 0)
        goto fail;
    m->info.text_weight_bytes = m->info.weight_bytes;
    if (p.load_vision && m->info.has_vision) {
        rc = vg_vision_load(m, err, errlen);
        if (rc < 0)
            goto fail;
    } else {
        m->info.has_vision = 0;
    }
    if (!p.use_mmap) {
        vg_st_close(m->st);
        m->st = NULL;
    }
    vg_log(VG_LOG_INFO, "model",
           "loaded %s: %zu parameters, %.1f MiB in memory, %s weights, %s kernels%s, %d "
           "thread%s%s",
           m->info.name, m->info.n_params, (double)m->info.weight_bytes / 1048576.0,
           vg_weight_type_name(m->wtype), m->info.isa, m->n_blk ? " (AMX tiles)" : "", m->n_threads,
           m->n_threads == 1 ? "" : "s", p.use_mmap ? " (F32 tensors mapped)" : "");
    *out = m;
    return 0;
fail:
    vg_model_free(m);
    return rc;
}

int vg_model_read_info(const char *dir, vg_model_info *out, char *err, size_t errlen)
{
    if (!dir || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_model_read_info needs a directory and *out.");
    vg_model_info info;
    vg_gen_params gen;
    memset(&info, 0, sizeof info);
    char gtext[4096], gmm[4096];
    int rc = vg_gguf_model_find(dir, gtext, sizeof gtext, gmm, sizeof gmm, err, errlen);
    if (rc < 0)
        return rc;
    if (rc == 1) { /* a GGUF pair: the description comes with the tensors and the vocabulary */
        vg_st *st = NULL;
        vg_tokenizer *tok = NULL;
        struct stat sb;
        rc = vg_gguf_model_open(gtext, gmm[0] ? gmm : NULL,
                                stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) ? dir : NULL, &info,
                                &gen, &st, &tok, err, errlen);
        vg_st_close(st);
        vg_tokenizer_free(tok);
        if (rc == 0)
            *out = info;
        return rc;
    }
    rc = vg_model_config_load(dir, &info, &gen, err, errlen);
    if (rc == 0)
        *out = info;
    return rc;
}

const vg_model_info *vg_model_get_info(const vg_model *m)
{
    return m ? &m->info : NULL;
}

const vg_tokenizer *vg_model_tokenizer(const vg_model *m)
{
    return m ? m->tok : NULL;
}

vg_gen_params vg_model_default_gen_params(const vg_model *m)
{
    return m->gen;
}

void vg_model_set_trace(vg_model *m, vg_trace_fn fn, void *opaque)
{
    if (!m)
        return;
    m->trace = fn;
    m->trace_opaque = opaque;
}
