/*
 * text.c: the Qwen3 language model of Qwen3-VL (docs/qwen3vl.md §4-§5) over a per-sequence KV
 * cache.
 *
 * A vg_seq owns its KV cache ([layer][kv head][position][head_dim] for K and for V, so each head's
 * rows are contiguous; allocated once at creation, zero-filled, with room for the sequence rounded
 * up to 64 rows so that oneDNN's padded tiles read inside it) in float32 with float32 weights and
 * in bf16 with the lossy types (vg_model_info.kv_bytes), and its scratch buffers, which grow
 * to the largest chunk seen and are then reused (never returned between calls: glibc handing big
 * temporaries back to the kernel made other engines 2-5x slower here).
 *
 * Prefill runs the new tokens in chunks of up to VG_CHUNK rows (1024: with bf16/q8_0 weights every
 * chunk unpacks each text matrix for oneDNN once, so a 1k prompt pays that once): every projection
 * is one product over the chunk; attention is per head, Q_h K^T and P V as sgemms over the chunk's
 * rows and the cached context (query rows split into blocks so the score matrix stays within
 * VG_SCORE_BUDGET floats), causal mask, float32 softmax. With a bf16 cache, prefills of at least
 * VG_DNNL_ATTN_MIN_KV16 rows read it in place through oneDNN, and shorter ones run the flash
 * kernel, which widens each tile of keys and values exactly (so that a short prefill and decode see
 * the same values). Decode (one token) uses sgemv for the projections and, per KV head, a
 * streaming kernel for the query heads that share it (K and V are read once, widened from bf16 in
 * registers). DeepStack features are added after layers 0..n_deepstack-1 at the rows whose id is a
 * vision pad token, in order.
 *
 * On any error (bad input, cancellation) the sequence keeps exactly the tokens it had before the
 * call. A vg_seq is used by one thread at a time; the model it reads is shared read-only.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, madvise, MADV_HUGEPAGE */
#include "engine.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define VG_CHUNK 1024
/* query rows per oneDNN attention call over a bf16 cache at most (a longer prefill chunk is cut in
 * even blocks, each reading only the keys its rows can see) */
#define VG_ATTN_QBLOCK 256
#ifndef VG_SCORE_BUDGET
#define VG_SCORE_BUDGET ((size_t)8 << 20) /* floats of the attention score block */
#endif

struct vg_seq {
    vg_model *m;
    size_t max_tokens, len;
    size_t cap;    /* cache rows per head: max_tokens rounded up to 64 */
    size_t es;     /* bytes per cached element: 4 float32, 2 bf16 */
    void *kc, *vc; /* [n_layers][n_kv_heads][cap][head_dim]: a head's rows contiguous */
    void *kv_map;  /* the anonymous mapping holding kc and vc (kv_alloc), kv_map_len bytes */
    size_t kv_map_len;
    size_t rows; /* scratch capacity in rows */
    float *x, *a, *q, *o, *g, *u, *cos_t, *sin_t, *kt, *vt;
    uint16_t *ab; /* a product's input rows in bf16 ([rows][max(D, QD, FF)]), written by what
                   * makes them: norms, attention, SwiGLU (vg_matmul_b16) */
    float *sc;
    size_t sc_cap;
    float *ws; /* vg_matmul workspace, ws_cap floats */
    size_t ws_cap;
};

int vg_text_load(vg_model *m, char *err, size_t errlen)
{
    vg_model_info *in = &m->info;
    int64_t D = in->hidden_size, V = in->vocab_size, FF = in->intermediate_size;
    int64_t hd = in->head_dim, QD = (int64_t)in->n_heads * hd, KD = (int64_t)in->n_kv_heads * hd;
    int rc;
    if (in->n_heads <= 0 || in->n_kv_heads <= 0 || in->n_heads % in->n_kv_heads != 0 || hd <= 0 ||
        hd % 2 != 0 || hd > 1024)
        return vg_fail(err, errlen, VG_EMODEL,
                       "config.json: %d attention heads, %d kv heads and head_dim %lld are not "
                       "usable",
                       in->n_heads, in->n_kv_heads, (long long)hd);
    m->text_inv_freq = malloc((size_t)hd / 2 * sizeof(float));
    m->mrope_axis = malloc((size_t)hd / 2);
    if (!m->text_inv_freq || !m->mrope_axis)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    vg_rope_text_inv_freq(in->rope_theta, (int)hd, m->text_inv_freq);
    if (vg_mrope_axes(in->mrope_section, (int)hd / 2, m->mrope_axis) < 0)
        return vg_fail(err, errlen, VG_EMODEL,
                       "config.json: mrope_section [%d,%d,%d] does not fit head_dim %lld",
                       in->mrope_section[0], in->mrope_section[1], in->mrope_section[2],
                       (long long)hd);
    int64_t s_d[] = {D}, s_hd[] = {hd};
    /* An untied input embedding is only ever read a row at a time: its rows stay in the file
     * (read with pread, VG_MAT_FILE) unless VG_EMBED_RESIDENT=1 asks for it in memory. */
    const char *resident = getenv("VG_EMBED_RESIDENT");
    rc = 1;
    if (!in->tie_word_embeddings && !(resident && strcmp(resident, "1") == 0) &&
        (rc = vg_model_mat_file(m, "model.language_model.embed_tokens.weight", V, D, &m->embed, err,
                                errlen)) < 0)
        return rc;
    /* tied: the embedding is lm_head too, blocked for AMX tiles where they are available */
    if (rc == 1 && (rc = in->tie_word_embeddings
                             ? vg_model_mat_text(m, "model.language_model.embed_tokens.weight", V,
                                                 D, 0, &m->embed, err, errlen)
                             : vg_model_mat(m, "model.language_model.embed_tokens.weight", V, D,
                                            &m->embed, err, errlen)) < 0)
        return rc;
    if ((rc = vg_model_weight(m, "model.language_model.norm.weight", 1, s_d, &m->final_norm, err,
                              errlen)) < 0)
        return rc;
    if (in->tie_word_embeddings) {
        m->lm_head = m->embed;
    } else if ((rc = vg_model_mat_text(m, "lm_head.weight", V, D, 0, &m->lm_head, err, errlen)) <
               0) {
        return rc;
    }
    m->layers = calloc((size_t)in->n_layers, sizeof(*m->layers));
    if (!m->layers)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    char name[256];
    for (int i = 0; i < in->n_layers; i++) {
        vg_text_layer *L = &m->layers[i];
#define W(field, suffix, nd_, shp)                                                                 \
    do {                                                                                           \
        snprintf(name, sizeof(name), "model.language_model.layers.%d.%s", i, suffix);              \
        if ((rc = vg_model_weight(m, name, nd_, shp, &L->field, err, errlen)) < 0)                 \
            return rc;                                                                             \
    } while (0)
#define M(field, suffix, rows, cols)                                                               \
    do {                                                                                           \
        snprintf(name, sizeof(name), "model.language_model.layers.%d.%s", i, suffix);              \
        if ((rc = vg_model_mat_text(m, name, rows, cols, 1, &L->field, err, errlen)) < 0)          \
            return rc;                                                                             \
    } while (0)
        W(in_norm, "input_layernorm.weight", 1, s_d);
        W(post_norm, "post_attention_layernorm.weight", 1, s_d);
        M(wq, "self_attn.q_proj.weight", QD, D);
        M(wk, "self_attn.k_proj.weight", KD, D);
        M(wv, "self_attn.v_proj.weight", KD, D);
        M(wo, "self_attn.o_proj.weight", D, QD);
        W(q_norm, "self_attn.q_norm.weight", 1, s_hd);
        W(k_norm, "self_attn.k_norm.weight", 1, s_hd);
        M(w_gate, "mlp.gate_proj.weight", FF, D);
        M(w_up, "mlp.up_proj.weight", FF, D);
        M(w_down, "mlp.down_proj.weight", D, FF);
#undef M
#undef W
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 */

#define KV_HUGE ((size_t)2 << 20)

/* s->kc and s->vc, bytes each, in one anonymous mapping: zero pages until first written (a long
 * cache costs memory as it fills), 2 MiB-aligned and advised for huge pages. Every decode step
 * streams the whole cache; in 4 KiB pages each page restarts the hardware prefetcher and costs a
 * TLB miss. Caches under 4 MiB are not advised. 0 or VG_ENOMEM (nothing mapped). */
static int kv_alloc(vg_seq *s, size_t bytes)
{
    const size_t half = (bytes + KV_HUGE - 1) & ~(KV_HUGE - 1);
    if (half == 0 || half > (SIZE_MAX - KV_HUGE) / 2)
        return VG_ENOMEM;
    const size_t len = 2 * half + KV_HUGE; /* room to align the start */
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return VG_ENOMEM;
    unsigned char *a = (unsigned char *)(((uintptr_t)p + KV_HUGE - 1) & ~(uintptr_t)(KV_HUGE - 1));
#ifdef MADV_HUGEPAGE
    if (bytes >= 2 * KV_HUGE) /* a small cache (the tiny models) would round up to 2 MiB */
        madvise(a, 2 * half, MADV_HUGEPAGE); /* advice only: 4 KiB pages where refused */
#endif
    s->kv_map = p;
    s->kv_map_len = len;
    s->kc = a;
    s->vc = a + half;
    return 0;
}

int vg_seq_create(vg_model *m, size_t max_tokens, vg_seq **out, char *err, size_t errlen)
{
    if (!m || !out || max_tokens == 0)
        return vg_fail(err, errlen, VG_EINVAL, "vg_seq_create: bad argument");
    const vg_model_info *in = &m->info;
    if (max_tokens > (size_t)in->max_position_embeddings)
        return vg_fail(err, errlen, VG_ELIMIT,
                       "a sequence of %zu tokens exceeds max_position_embeddings %d", max_tokens,
                       in->max_position_embeddings);
    size_t kvd = (size_t)in->n_kv_heads * (size_t)in->head_dim, n;
    const size_t cap = (max_tokens + 63) & ~(size_t)63;
    const size_t es = in->kv_bytes == 2 ? 2 : 4;
    size_t kv_bytes;
    if (vg_mul_size(kvd, cap, &n) < 0 || vg_mul_size(n, (size_t)in->n_layers, &n) < 0 ||
        vg_mul_size(n, es, &kv_bytes) < 0)
        return vg_fail(err, errlen, VG_ELIMIT, "KV cache for %zu tokens is too large", max_tokens);
    vg_seq *s = calloc(1, sizeof(*s));
    if (!s)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    s->m = m;
    s->max_tokens = max_tokens;
    s->cap = cap;
    s->es = es;
    /* zero-filled (pages untouched until used): the padding rows oneDNN may read are finite */
    if (kv_alloc(s, kv_bytes) < 0) {
        vg_seq_free(s);
        return vg_fail(err, errlen, VG_ENOMEM,
                       "out of memory for a KV cache of %zu tokens (%zu MiB)", max_tokens,
                       2 * n * es / 1048576);
    }
    *out = s;
    return 0;
}

void vg_seq_free(vg_seq *s)
{
    if (!s)
        return;
    if (s->kv_map)
        munmap(s->kv_map, s->kv_map_len);
    free(s->x);
    free(s->a);
    free(s->q);
    free(s->o);
    free(s->g);
    free(s->u);
    free(s->cos_t);
    free(s->sin_t);
    free(s->kt);
    free(s->vt);
    free(s->ab);
    free(s->sc);
    free(s->ws);
    free(s);
}

vg_model *vg_seq_model(const vg_seq *s)
{
    return s->m;
}

void vg_seq_kv_view(vg_seq *s, vg_seq_kv *out)
{
    out->kc = s->kc;
    out->vc = s->vc;
    out->cap = s->cap;
    out->es = s->es;
    out->len = &s->len;
}

/* Element index of cache row t of KV head j in layer l (K and V alike). */
static inline size_t kv_at(const vg_seq *s, int l, size_t j, size_t t)
{
    const vg_model_info *in = &s->m->info;
    return (((size_t)l * (size_t)in->n_kv_heads + j) * s->cap + t) * (size_t)in->head_dim;
}

int vg_seq_fill_random(vg_seq *s, size_t n, uint64_t seed)
{
    if (!s || n > s->max_tokens)
        return VG_ELIMIT;
    const vg_model_info *in = &s->m->info;
    const size_t kvd = (size_t)in->n_kv_heads * (size_t)in->head_dim;
    uint64_t x = seed | 1;
    for (int l = 0; l < in->n_layers; l++) {
        for (size_t i = 0; i < n * kvd; i++) {
            size_t j = i / (n * (size_t)in->head_dim), r = i % (n * (size_t)in->head_dim);
            const size_t at = kv_at(s, l, j, 0) + r;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            float k = (float)((int64_t)(x >> 40) - (1 << 23)) / (float)(1 << 23);
            float v = (float)((int64_t)(x & 0xffffff) - (1 << 23)) / (float)(1 << 23);
            if (s->es == 2) {
                ((uint16_t *)s->kc)[at] = vg_f32_to_bf16(k);
                ((uint16_t *)s->vc)[at] = vg_f32_to_bf16(v);
            } else {
                ((float *)s->kc)[at] = k;
                ((float *)s->vc)[at] = v;
            }
        }
    }
    s->len = n;
    return 0;
}

size_t vg_seq_len(const vg_seq *s)
{
    return s ? s->len : 0;
}

int vg_seq_truncate(vg_seq *s, size_t n_keep)
{
    if (!s || n_keep > s->len)
        return VG_EINVAL;
    s->len = n_keep;
    return 0;
}

static int ensure_rows(vg_seq *s, size_t rows)
{
    if (rows <= s->rows)
        return 0;
    const vg_model_info *in = &s->m->info;
    size_t D = (size_t)in->hidden_size, QD = (size_t)in->n_heads * (size_t)in->head_dim;
    size_t FF = (size_t)in->intermediate_size, hd = (size_t)in->head_dim;
    size_t kvd = (size_t)in->n_kv_heads * hd;
    float *p[10];
    size_t sz[10] = {
        rows * D,  rows * VG_MAX(D, QD), rows * QD, rows * QD, rows * FF, rows * FF, rows * hd,
        rows * hd, rows * kvd,           rows * kvd};
    float **dst[10] = {&s->x, &s->a,     &s->q,     &s->o,  &s->g,
                       &s->u, &s->cos_t, &s->sin_t, &s->kt, &s->vt};
    for (int i = 0; i < 10; i++) {
        p[i] = aligned_alloc(64, (sz[i] * sizeof(float) + 63) & ~(size_t)63);
        if (!p[i]) {
            for (int j = 0; j < i; j++)
                free(p[j]);
            return VG_ENOMEM;
        }
    }
    /* 64-byte aligned: oneDNN reads its rows in place (a misaligned source cost 12 % of a
     * prefill) */
    const size_t abw = VG_MAX(VG_MAX(D, QD), FF);
    uint16_t *ab = aligned_alloc(64, (rows * abw * sizeof(uint16_t) + 63) & ~(size_t)63);
    if (!ab) {
        for (int j = 0; j < 10; j++)
            free(p[j]);
        return VG_ENOMEM;
    }
    for (int i = 0; i < 10; i++) {
        free(*dst[i]);
        *dst[i] = p[i];
    }
    free(s->ab);
    s->ab = ab;
    s->rows = rows;
    /* the matmul workspace for this many rows with every matrix of the model */
    const vg_model *m = s->m;
    size_t ws = VG_MAX(vg_mat_ws_floats(&m->lm_head, rows), vg_mat_ws_floats(&m->lm_head, 1));
    for (int l = 0; l < in->n_layers; l++) {
        const vg_text_layer *L = &m->layers[l];
        const vg_mat *ms[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t k = 0; k < VG_ARRAY_LEN(ms); k++)
            ws = VG_MAX(ws, VG_MAX(vg_mat_ws_floats(ms[k], rows), vg_mat_ws_floats(ms[k], 1)));
    }
    if (ws > s->ws_cap) {
        float *w = malloc(ws * sizeof(float));
        if (!w)
            return VG_ENOMEM;
        free(s->ws);
        s->ws = w;
        s->ws_cap = ws;
    }
    return 0;
}

static int ensure_scores(vg_seq *s, size_t n)
{
    if (n <= s->sc_cap)
        return 0;
    float *p = malloc(n * sizeof(float));
    if (!p)
        return VG_ENOMEM;
    free(s->sc);
    s->sc = p;
    s->sc_cap = n;
    return 0;
}

static void trace(const vg_model *m, const char *name, int index, const float *d, size_t rows,
                  size_t cols)
{
    if (m->trace)
        m->trace(name, index, d, rows, cols, m->trace_opaque);
}

static int is_vis(const vg_model_info *in, int32_t id)
{
    return id == in->video_token_id || id == in->image_token_id;
}

typedef struct decode_attn_job {
    vg_seq *s;
    int l;
    size_t ctx;
    float scale;
} decode_attn_job;

/* Decode attention of the query heads sharing KV head j (their own rows of the score buffer). */
static void decode_attn_task(void *arg, size_t j)
{
    const decode_attn_job *a = arg;
    vg_seq *s = a->s;
    const vg_model_info *in = &s->m->info;
    const size_t hd = (size_t)in->head_dim, Hkv = (size_t)in->n_kv_heads;
    const size_t grp = (size_t)in->n_heads / Hkv, ctx = a->ctx;
    const size_t at = kv_at(s, a->l, j, 0);
    float *sc = s->sc + j * grp * ctx;
    if (s->es == 2)
        vg_attn_scores_bf16(s->q + j * grp * hd, grp, (const uint16_t *)s->kc + at, ctx, hd,
                            a->scale, sc);
    else
        vg_attn_scores(s->q + j * grp * hd, grp, (const float *)s->kc + at, ctx, hd, a->scale, sc);
    for (size_t i = 0; i < grp; i++)
        vg_softmax(sc + i * ctx, ctx);
    if (s->es == 2)
        vg_attn_mix_bf16(sc, grp, (const uint16_t *)s->vc + at, ctx, hd, s->o + j * grp * hd);
    else
        vg_attn_mix(sc, grp, (const float *)s->vc + at, ctx, hd, s->o + j * grp * hd);
}

typedef struct prefill_attn_job {
    vg_seq *s;
    int l;
    size_t p0, n;
    float scale;
} prefill_attn_job;

/* Causal flash attention of query head h for the n new rows (cache positions p0..) over the
 * ctx = p0 + n cached rows of its KV head, float32 or bf16 (widened a tile at a time). */
static void prefill_attn_task(void *arg, size_t h)
{
    const prefill_attn_job *a = arg;
    vg_seq *s = a->s;
    const vg_model_info *in = &s->m->info;
    const size_t hd = (size_t)in->head_dim, QD = (size_t)in->n_heads * hd;
    const size_t at = kv_at(s, a->l, h / (size_t)(in->n_heads / in->n_kv_heads), 0);
    float *scr = s->sc + h * vg_flash_scratch_floats(a->n, hd);
    if (s->es == 2)
        vg_flash_attn_bf16(-1, s->q + h * hd, QD, (const uint16_t *)s->kc + at, hd,
                           (const uint16_t *)s->vc + at, hd, a->n, a->p0 + a->n, hd, a->scale,
                           (long)a->p0, s->o + h * hd, QD, scr);
    else
        vg_flash_attn(-1, s->q + h * hd, QD, (const float *)s->kc + at, hd,
                      (const float *)s->vc + at, hd, a->n, a->p0 + a->n, hd, a->scale, (long)a->p0,
                      s->o + h * hd, QD, scr);
}

/* Attention of n new rows at cache positions p0.. for layer l: q [n][QD] -> o [n][QD]. One token
 * (decode) runs the query heads sharing a KV head together, so the cached K and V are streamed
 * once; several rows run per query head over blocks of rows. With want16, the oneDNN path writes
 * the rows in bf16 to s->ab instead (the output projection's input). 1: the output is in s->ab,
 * 0: in s->o; VG_ENOMEM. */
static int attention(vg_seq *s, int l, size_t p0, size_t n, int want16)
{
    const vg_model_info *in = &s->m->info;
    const size_t hd = (size_t)in->head_dim, Hq = (size_t)in->n_heads, Hkv = (size_t)in->n_kv_heads;
    const size_t QD = Hq * hd, grp = Hq / Hkv;
    const float scale = 1.0f / sqrtf((float)hd);
    const int b16 = s->es == 2;
    size_t ctx_max = p0 + n;
    size_t rb = VG_SCORE_BUDGET / ctx_max;
    if (rb < 1)
        rb = 1;
    if (rb > n)
        rb = n;
    if (ensure_scores(s, VG_MAX(VG_MAX(rb, Hq) * ctx_max, Hq * vg_flash_scratch_floats(n, hd))) < 0)
        return VG_ENOMEM;
    if (n == 1) { /* decode: the KV heads split across the pool */
        decode_attn_job job = {.s = s, .l = l, .ctx = p0 + 1, .scale = scale};
        /* a short cache is not worth waking a worker */
        vg_pool_run(job.ctx * QD >= ((size_t)1 << 16) ? s->m->tpool : NULL, Hkv, decode_attn_task,
                    &job);
        return 0;
    }
    /* bf16 products through oneDNN (lossy weight types); over a bf16 cache from fewer rows, as
     * no copy of K and V is made then */
    if (n >= (b16 ? VG_DNNL_ATTN_MIN_KV16 : VG_DNNL_ATTN_MIN)) {
        const size_t kv0 = kv_at(s, l, 0, 0);
        /* over the bf16 cache in place, a long chunk in blocks of query rows, each with only the
         * keys it can see: at p0 = 0, 1,024 rows in 4 blocks compute 5/8 of the causal square
         * (a float32 cache would be converted again per block, so it goes whole) */
        const size_t nblk = b16 ? (n + VG_ATTN_QBLOCK - 1) / VG_ATTN_QBLOCK : 1;
        const size_t per = (n + nblk - 1) / nblk;
        int rc = 0;
        for (size_t i0 = 0; i0 < n && rc == 0; i0 += per) {
            const size_t r = VG_MIN(per, n - i0);
            vg_attn_args aa = {.q = s->q + i0 * QD,
                               .k = b16 ? NULL : (const float *)s->kc + kv0,
                               .v = b16 ? NULL : (const float *)s->vc + kv0,
                               .kb = b16 ? (const uint16_t *)s->kc + kv0 : NULL,
                               .vb = b16 ? (const uint16_t *)s->vc + kv0 : NULL,
                               .ldq = QD,
                               .ldk = hd,
                               .ldv = hd,
                               .q_hs = hd,
                               .k_hs = s->cap * hd,
                               .v_hs = s->cap * hd,
                               .n = r,
                               .ctx = p0 + i0 + r,
                               .heads = Hq,
                               .kv_heads = Hkv,
                               .dh = hd,
                               .scale = scale,
                               .p0 = (long)(p0 + i0),
                               .o = s->o + i0 * QD,
                               .ob = want16 ? s->ab + i0 * QD : NULL,
                               .ldo = QD,
                               .o_hs = hd};
            rc = vg_dnnl_attn(s->m, &aa);
        }
        if (rc == 0)
            return want16 ? 1 : 0;
    }
    /* fused causal attention, the query heads split across the pool (a bf16 cache at any level:
     * the portable flash kernel where no vector one runs) */
    if (vg_flash_ok(hd) || b16) {
        prefill_attn_job job = {.s = s, .l = l, .p0 = p0, .n = n, .scale = scale};
        vg_pool_run(s->m->tpool, Hq, prefill_attn_task, &job);
        return 0;
    }
    for (size_t j = 0; j < Hkv; j++) {
        const size_t at = kv_at(s, l, j, 0);
        const float *Kh = (const float *)s->kc + at, *Vh = (const float *)s->vc + at;
        for (size_t h = j * grp; h < (j + 1) * grp; h++) {
            for (size_t i0 = 0; i0 < n; i0 += rb) {
                size_t r = VG_MIN(rb, n - i0), ctx = p0 + i0 + r;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)ctx, (int)hd,
                            scale, s->q + i0 * QD + h * hd, (int)QD, Kh, (int)hd, 0.0f, s->sc,
                            (int)ctx);
                for (size_t i = 0; i < r; i++) {
                    float *row = s->sc + i * ctx;
                    size_t vis = p0 + i0 + i + 1; /* causal: positions 0..p0+i0+i */
                    vg_softmax(row, vis);
                    memset(row + vis, 0, (ctx - vis) * sizeof(float));
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, (int)hd, (int)ctx,
                            1.0f, s->sc, (int)ctx, Vh, (int)hd, 0.0f, s->o + i0 * QD + h * hd,
                            (int)QD);
            }
        }
    }
    return 0;
}

/* Row-parallel element-wise work of a layer on the pool: each range is the serial op on its rows
 * (the same arithmetic per row, so results do not depend on the thread count). */
#define ROWS_GRAIN 16 /* rows per range at least: a pool region costs a few microseconds */

typedef struct text_rows {
    vg_seq *s;
    const vg_text_layer *L;
    float eps;
    int b16; /* also write the output rows in bf16 to s->ab (for vg_matmul_b16) */
    int pm;  /* silu_range: g and u are panel-major (vg_dnnl_matmul_panels) over n rows */
    size_t n;
    int l;     /* qk_range: the layer, and */
    size_t p0; /* the cache position of row 0 */
} text_rows;

static void in_norm_range(void *c, size_t r0, size_t r1)
{
    const text_rows *t = c;
    const size_t D = (size_t)t->s->m->info.hidden_size;
    vg_rmsnorm(t->s->x + r0 * D, t->s->a + r0 * D, r1 - r0, D, t->L->in_norm, t->eps);
    if (t->b16)
        vg_to_bf16(t->s->a + r0 * D, (r1 - r0) * D, t->s->ab + r0 * D);
}

/* q/k per-head RMSNorm and rotary embedding of rows r0..r1-1. */
static void qk_range(void *c, size_t r0, size_t r1)
{
    const text_rows *t = c;
    vg_seq *s = t->s;
    const vg_model_info *in = &s->m->info;
    const size_t hd = (size_t)in->head_dim, Hq = (size_t)in->n_heads;
    const size_t Hkv = (size_t)in->n_kv_heads, QD = Hq * hd, kvd = Hkv * hd, n = r1 - r0;
    vg_rmsnorm(s->q + r0 * QD, s->q + r0 * QD, n * Hq, hd, t->L->q_norm, t->eps);
    vg_rmsnorm(s->kt + r0 * kvd, s->kt + r0 * kvd, n * Hkv, hd, t->L->k_norm, t->eps);
    vg_rope_apply(s->q + r0 * QD, n, (int)Hq, (int)hd, QD, s->cos_t + r0 * hd, s->sin_t + r0 * hd);
    vg_rope_apply(s->kt + r0 * kvd, n, (int)Hkv, (int)hd, kvd, s->cos_t + r0 * hd,
                  s->sin_t + r0 * hd);
    /* the rows' keys and values into the cache while in cache */
    for (size_t j = 0; j < Hkv; j++) {
        const size_t off = kv_at(s, t->l, j, t->p0);
        for (size_t i = r0; i < r1; i++) {
            const float *kr = s->kt + i * kvd + j * hd, *vr = s->vt + i * kvd + j * hd;
            if (s->es == 2) {
                vg_to_bf16(kr, hd, (uint16_t *)s->kc + off + i * hd);
                vg_to_bf16(vr, hd, (uint16_t *)s->vc + off + i * hd);
            } else {
                memcpy((float *)s->kc + off + i * hd, kr, hd * sizeof(float));
                memcpy((float *)s->vc + off + i * hd, vr, hd * sizeof(float));
            }
        }
    }
}

/* x += attention output, then a = RMSNorm(x) (post-attention norm). */
static void add_norm_range(void *c, size_t r0, size_t r1)
{
    const text_rows *t = c;
    const size_t D = (size_t)t->s->m->info.hidden_size;
    vg_add(t->s->x + r0 * D, t->s->a + r0 * D, (r1 - r0) * D);
    vg_rmsnorm(t->s->x + r0 * D, t->s->a + r0 * D, r1 - r0, D, t->L->post_norm, t->eps);
    if (t->b16)
        vg_to_bf16(t->s->a + r0 * D, (r1 - r0) * D, t->s->ab + r0 * D);
}

static void silu_range(void *c, size_t r0, size_t r1)
{
    const text_rows *t = c;
    const size_t FF = (size_t)t->s->m->info.intermediate_size;
    if (!t->b16) {
        vg_silu_mul(t->s->g + r0 * FF, t->s->u + r0 * FF, (r1 - r0) * FF);
        return;
    }
    if (t->pm) { /* panel p of row i at (p n + i) VG_PANEL_COLS */
        for (size_t p = 0; p < FF / VG_PANEL_COLS; p++) {
            const size_t o = (p * t->n + r0) * VG_PANEL_COLS;
            for (size_t i = r0; i < r1; i++)
                vg_silu_mul_b16(t->s->g + o + (i - r0) * VG_PANEL_COLS,
                                t->s->u + o + (i - r0) * VG_PANEL_COLS, VG_PANEL_COLS,
                                t->s->ab + i * FF + p * VG_PANEL_COLS);
        }
        return;
    }
    /* only the bf16 rows are needed (g itself left alone) */
    vg_silu_mul_b16(t->s->g + r0 * FF, t->s->u + r0 * FF, (r1 - r0) * FF, t->s->ab + r0 * FF);
}

static void add_range(void *c, size_t r0, size_t r1)
{
    const text_rows *t = c;
    const size_t D = (size_t)t->s->m->info.hidden_size;
    vg_add(t->s->x + r0 * D, t->s->a + r0 * D, (r1 - r0) * D);
}

/* Runs n rows (embeddings already in s->x) at cache positions s->len.. with MRoPE positions pos
 * (row stride pos_stride), appending their K/V. ds (or NULL): DeepStack features
 * [n_deepstack][n_vis] [D] of the whole prefill, of which this chunk's vision pad rows take those
 * from vis_base on. Writes the final-normed rows needed and the logits (every row with all_logits,
 * else the last row of the last chunk). Does not advance s->len. */
static int forward(vg_seq *s, size_t n, const int32_t *pos, size_t pos_stride, const int32_t *ids,
                   const float *ds, size_t n_vis, size_t vis_base, float *logits, int all_logits,
                   int last_chunk, const atomic_int *cancel, char *err, size_t errlen)
{
    vg_model *m = s->m;
    const vg_model_info *in = &m->info;
    const size_t D = (size_t)in->hidden_size, hd = (size_t)in->head_dim;
    const float eps = in->rms_norm_eps;
    const size_t p0 = s->len;

    vg_rope_text_table(m->text_inv_freq, m->mrope_axis, (int)hd, pos, pos_stride, n, s->cos_t,
                       s->sin_t);
    trace(m, "text.rope_cos", 0, s->cos_t, n, hd);
    trace(m, "text.rope_sin", 0, s->sin_t, n, hd);

    for (int l = 0; l < in->n_layers; l++) {
        if (cancel && atomic_load(cancel))
            return vg_fail(err, errlen, VG_ECANCELED, "prefill canceled");
        const vg_text_layer *L = &m->layers[l];
        trace(m, "text.hidden_in", l, s->x, n, D);
        /* the products' inputs in bf16, written by the norms and SwiGLU while in cache, where
         * the products go through oneDNN (q/k/v, gate/up and down alike) */
        const int b16 = vg_matmul_b16_ok(&L->wq, n) && vg_matmul_b16_ok(&L->wk, n) &&
                        vg_matmul_b16_ok(&L->wv, n) && vg_matmul_b16_ok(&L->w_gate, n) &&
                        vg_matmul_b16_ok(&L->w_up, n) && vg_matmul_b16_ok(&L->w_down, n);
        text_rows tr = {.s = s, .L = L, .eps = eps, .b16 = b16, .l = l, .p0 = p0};
        vg_pool_for(m->tpool, n, ROWS_GRAIN, in_norm_range, &tr);
        {
            const vg_mat *w3[3] = {&L->wq, &L->wk, &L->wv};
            float *y3[3] = {s->q, s->kt, s->vt};
            if (b16)
                for (int k = 0; k < 3; k++)
                    vg_matmul_b16(m, s->ab, n, w3[k], NULL, y3[k], s->ws);
            else
                vg_matmul_multi(m, s->a, n, w3, y3, 3, s->ws);
        }
        vg_pool_for(m->tpool, n, ROWS_GRAIN, qk_range, &tr); /* also fills the cache */
        const int o16 = attention(s, l, p0, n, b16 && vg_matmul_b16_ok(&L->wo, n));
        if (o16 < 0)
            return vg_fail(err, errlen, VG_ENOMEM, "out of memory for attention scores");
        if (o16)
            vg_matmul_b16(m, s->ab, n, &L->wo, NULL, s->a, s->ws);
        else
            vg_matmul(m, s->o, n, &L->wo, NULL, s->a, s->ws);
        vg_pool_for(m->tpool, n, ROWS_GRAIN, add_norm_range, &tr);
        {
            const vg_mat *w2[2] = {&L->w_gate, &L->w_up};
            float *y2[2] = {s->g, s->u};
            /* gate and up by panels of output columns, left panel-major for SwiGLU (no copy
             * out of the panels), where oneDNN can */
            tr.pm = b16 && vg_dnnl_panels_ok(m, w2[0], n) && vg_dnnl_panels_ok(m, w2[1], n);
            tr.n = n;
            if (tr.pm)
                for (int k = 0; k < 2; k++)
                    vg_matmul_panels(m, s->ab, n, w2[k], y2[k], s->ws);
            else if (b16)
                for (int k = 0; k < 2; k++)
                    vg_matmul_b16(m, s->ab, n, w2[k], NULL, y2[k], s->ws);
            else
                vg_matmul_multi(m, s->a, n, w2, y2, 2, s->ws);
        }
        vg_pool_for(m->tpool, n, ROWS_GRAIN, silu_range, &tr);
        if (b16)
            vg_matmul_b16(m, s->ab, n, &L->w_down, NULL, s->a, s->ws);
        else
            vg_matmul(m, s->g, n, &L->w_down, NULL, s->a, s->ws);
        vg_pool_for(m->tpool, n, ROWS_GRAIN, add_range, &tr);
        trace(m, "text.layer_out", l, s->x, n, D);
        if (ds && l < in->n_deepstack) {
            size_t vi = vis_base;
            for (size_t i = 0; i < n; i++) {
                if (!is_vis(in, ids[i]))
                    continue;
                const float *f = ds + ((size_t)l * n_vis + vi) * D;
                float *xr = s->x + i * D;
                for (size_t j = 0; j < D; j++)
                    xr[j] += f[j];
                vi++;
            }
        }
    }
    trace(m, "text.hidden_in", in->n_layers, s->x, n, D);
    /* final norm: every row when all logits or a trace want them, else the last */
    size_t r0 = (all_logits || m->trace) ? 0 : n - 1;
    vg_rmsnorm(s->x + r0 * D, s->a + r0 * D, n - r0, D, m->final_norm, eps);
    if (m->trace)
        trace(m, "text.final_hidden", 0, s->a, n, D);
    if (logits) {
        if (all_logits)
            vg_matmul(m, s->a, n, &m->lm_head, NULL, logits, s->ws);
        else if (last_chunk)
            vg_matmul(m, s->a + (n - 1) * D, 1, &m->lm_head, NULL, logits, s->ws);
    }
    return 0;
}

int vg_seq_prefill(vg_seq *s, const vg_prefill_input *inp, float *logits, int all_logits,
                   const atomic_int *cancel, char *err, size_t errlen)
{
    if (!s || !inp || !inp->ids || !inp->pos || inp->n == 0)
        return vg_fail(err, errlen, VG_EINVAL, "vg_seq_prefill: empty or NULL input");
    vg_model *m = s->m;
    const vg_model_info *in = &m->info;
    const size_t D = (size_t)in->hidden_size, V = (size_t)in->vocab_size, n = inp->n;
    if (n > s->max_tokens - s->len)
        return vg_fail(err, errlen, VG_ELIMIT,
                       "%zu new tokens do not fit: the sequence holds %zu of %zu", n, s->len,
                       s->max_tokens);
    size_t n_vis = 0;
    for (size_t i = 0; i < n; i++) {
        if (inp->ids[i] < 0 || inp->ids[i] >= in->vocab_size)
            return vg_fail(err, errlen, VG_EINVAL, "token %zu: id %d outside the vocabulary (%d)",
                           i, (int)inp->ids[i], in->vocab_size);
        n_vis += is_vis(in, inp->ids[i]) ? 1 : 0;
    }
    if (n_vis != inp->n_vis)
        return vg_fail(err, errlen, VG_EINVAL,
                       "the prompt has %zu vision pad tokens but %zu visual rows were given", n_vis,
                       inp->n_vis);
    if (n_vis > 0) {
        if (!inp->vis_embeds)
            return vg_fail(err, errlen, VG_EINVAL, "vision pad tokens without visual features");
        if (in->out_hidden_size != in->hidden_size)
            return vg_fail(err, errlen, VG_EMODEL,
                           "vision out_hidden_size %d differs from the text hidden_size %d",
                           in->out_hidden_size, in->hidden_size);
        if (in->n_deepstack > 0 && !inp->vis_deepstack)
            return vg_fail(err, errlen, VG_EINVAL,
                           "the model has %d DeepStack taps but no DeepStack features were given",
                           in->n_deepstack);
    }
    size_t chunk = VG_MIN(n, (size_t)VG_CHUNK);
    if (ensure_rows(s, chunk) < 0)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for prefill scratch");
    const size_t start = s->len;
    size_t vis_base = 0;
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
        size_t r = VG_MIN(chunk, n - c0);
        const int32_t *ids = inp->ids + c0;
        size_t vb = vis_base;
        for (size_t i = 0; i < r; i++) {
            float *xr = s->x + i * D;
            if (is_vis(in, ids[i])) {
                memcpy(xr, inp->vis_embeds + vb * D, D * sizeof(float));
                vb++;
            } else if (vg_mat_row(&m->embed, (size_t)ids[i], xr) < 0) {
                s->len = start;
                return vg_fail(err, errlen, VG_EIO,
                               "cannot read the embedding of token %d from the model file",
                               (int)ids[i]);
            }
        }
        float *lg = NULL;
        if (logits)
            lg = all_logits ? logits + c0 * V : logits;
        int rc = forward(s, r, inp->pos + c0, n, ids, n_vis ? inp->vis_deepstack : NULL, n_vis,
                         vis_base, lg, all_logits, c0 + r == n, cancel, err, errlen);
        if (rc < 0) {
            s->len = start;
            return rc;
        }
        s->len += r;
        vis_base = vb;
    }
    return 0;
}

int vg_seq_decode(vg_seq *s, int32_t id, int32_t pos, float *logits, char *err, size_t errlen)
{
    if (!s)
        return vg_fail(err, errlen, VG_EINVAL, "vg_seq_decode: NULL sequence");
    const vg_model_info *in = &s->m->info;
    if (id < 0 || id >= in->vocab_size)
        return vg_fail(err, errlen, VG_EINVAL, "id %d outside the vocabulary (%d)", (int)id,
                       in->vocab_size);
    /* A vision pad id generated by the model is embedded like any token (as the reference does
     * when no visual features come with it). */
    if (s->len >= s->max_tokens)
        return vg_fail(err, errlen, VG_ELIMIT, "the sequence is full (%zu tokens)", s->max_tokens);
    if (ensure_rows(s, 1) < 0)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for decode scratch");
    if (vg_mat_row(&s->m->embed, (size_t)id, s->x) < 0)
        return vg_fail(err, errlen, VG_EIO,
                       "cannot read the embedding of token %d from the model file", (int)id);
    int32_t p3[3] = {pos, pos, pos};
    int rc = forward(s, 1, p3, 1, &id, NULL, 0, 0, logits, 0, 1, NULL, err, errlen);
    if (rc < 0)
        return rc;
    s->len++;
    return 0;
}
