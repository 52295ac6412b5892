/*
 * vision.c: the Qwen3-VL vision tower (docs/qwen3vl.md §3) for one temporal slice at a time.
 *
 * Per slice of N = grid_h*grid_w patches: patch embedding (Conv3d as one GEMM [N,C*tp*p*p] x W^T +
 * b), plus the bilinearly interpolated learned position embedding, then `depth` pre-norm blocks
 * (LayerNorm, qkv, 2-D rotary, bidirectional attention over the slice, proj; LayerNorm, fc1,
 * tanh-GELU, fc2), the final merger (LayerNorm over D, 2x2 shuffle, fc1, erf-GELU, fc2) and one
 * DeepStack merger per tap (shuffle, LayerNorm over 4D, fc1, erf-GELU, fc2), run on the tapped
 * block's output right after that block.
 *
 * Position embedding (docs/qwen3vl.md §3.2): float32 linspace, float32 corner weights cast to the
 * table's dtype before the products, summed in corner order. The engine's table is float32 (every
 * weight is widened at load), so the cast is the identity, exactly as in the float32 reference run
 * of the golden cases (vision_pos_embed matches bit for bit); a bf16 inference would round the
 * weights.
 *
 * Every sgemm runs over the whole slice; attention is one sgemm pair per head (in blocks of rows
 * for large slices). All scratch of a call is one block taken from the model's small scratch pool
 * (vg_scratch_take) and given back at the end, so successive slices reuse the same memory and
 * concurrent calls on a shared model never share it (the model is read-only here; the trace hook is
 * the exception and is documented as single-threaded).
 */
#include "engine.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VIS_EPS 1e-6f
#ifndef VIS_SCORE_BUDGET
#define VIS_SCORE_BUDGET ((size_t)16 << 20) /* floats of one attention score block */
#endif

static int load_merger(vg_model *m, const char *prefix, int postshuffle, vg_merger *mg, char *err,
                       size_t errlen)
{
    const vg_model_info *in = &m->info;
    int64_t D = in->vision_hidden, MD = D * in->spatial_merge_size * in->spatial_merge_size;
    int64_t O = in->out_hidden_size;
    int64_t nd = postshuffle ? MD : D;
    char name[256];
    int rc;
    mg->postshuffle = postshuffle;
#define W(field, suffix, nd_, ...)                                                                 \
    do {                                                                                           \
        int64_t shp[] = {__VA_ARGS__};                                                             \
        snprintf(name, sizeof(name), "%s.%s", prefix, suffix);                                     \
        if ((rc = vg_model_weight(m, name, nd_, shp, &mg->field, err, errlen)) < 0)                \
            return rc;                                                                             \
    } while (0)
    W(n_w, "norm.weight", 1, nd);
    W(n_b, "norm.bias", 1, nd);
    W(fc1_b, "linear_fc1.bias", 1, MD);
    W(fc2_b, "linear_fc2.bias", 1, O);
#undef W
    snprintf(name, sizeof(name), "%s.linear_fc1.weight", prefix);
    if ((rc = vg_model_mat_dense(m, name, MD, MD, VG_ACT_GELU_ERF, 1, &mg->fc1_w, err, errlen)) < 0)
        return rc;
    snprintf(name, sizeof(name), "%s.linear_fc2.weight", prefix);
    if ((rc = vg_model_mat_dense(m, name, O, MD, VG_ACT_NONE, 0, &mg->fc2_w, err, errlen)) < 0)
        return rc;
    return 0;
}

int vg_vision_load(vg_model *m, char *err, size_t errlen)
{
    const vg_model_info *in = &m->info;
    int64_t D = in->vision_hidden, FF = in->vision_intermediate;
    int64_t C = in->in_channels, tp = in->temporal_patch_size, p = in->patch_size;
    int rc;
    if (in->vision_heads <= 0 || D % in->vision_heads != 0 || (D / in->vision_heads) % 4 != 0 ||
        D / in->vision_heads > 1024)
        return vg_fail(err, errlen, VG_EMODEL,
                       "config.json: vision hidden_size %lld / num_heads %d must give a head size "
                       "divisible by 4",
                       (long long)D, in->vision_heads);
    if (in->n_deepstack < 0 || in->n_deepstack > VG_MAX_DEEPSTACK)
        return vg_fail(err, errlen, VG_EMODEL, "config.json: %d deepstack taps (at most %d)",
                       in->n_deepstack, VG_MAX_DEEPSTACK);
    int side = 0;
    while ((side + 1) * (side + 1) <= in->num_position_embeddings)
        side++;
    if (side < 1 || side * side != in->num_position_embeddings)
        return vg_fail(err, errlen, VG_EMODEL,
                       "config.json: num_position_embeddings %d is not a square grid",
                       in->num_position_embeddings);
    {
        int64_t s[] = {D, C, tp, p, p};
        if ((rc = vg_model_weight(m, "model.visual.patch_embed.proj.weight", 5, s, &m->patch_w, err,
                                  errlen)) < 0)
            return rc;
        int64_t sb[] = {D};
        if ((rc = vg_model_weight(m, "model.visual.patch_embed.proj.bias", 1, sb, &m->patch_b, err,
                                  errlen)) < 0)
            return rc;
        int64_t sp[] = {in->num_position_embeddings, D};
        if ((rc = vg_model_weight(m, "model.visual.pos_embed.weight", 2, sp, &m->pos_embed, err,
                                  errlen)) < 0)
            return rc;
        /* with bf16 and q8_0 weights the patch embedding is a bf16 product too (the released
         * checkpoints store it in bf16; llama.cpp keeps it in f16 beside 8-bit towers): a
         * 448x448 pair's 2.5 GFLOP take 14 ms through OpenBLAS sgemm, 2-3 through oneDNN */
        if (m->wtype != VG_WEIGHTS_F32 &&
            (rc = vg_dnnl_pack(m, m->patch_w, (size_t)D, (size_t)(C * tp * p * p), VG_ACT_NONE, 0,
                               &m->patch_mat)) < 0)
            return vg_fail(err, errlen, rc, "out of memory packing the patch embedding");
    }
    m->blocks = calloc((size_t)in->vision_depth, sizeof(*m->blocks));
    if (!m->blocks)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    char name[256];
    for (int i = 0; i < in->vision_depth; i++) {
        vg_vis_block *b = &m->blocks[i];
#define W(field, suffix, nd_, ...)                                                                 \
    do {                                                                                           \
        int64_t shp[] = {__VA_ARGS__};                                                             \
        snprintf(name, sizeof(name), "model.visual.blocks.%d.%s", i, suffix);                      \
        if ((rc = vg_model_weight(m, name, nd_, shp, &b->field, err, errlen)) < 0)                 \
            return rc;                                                                             \
    } while (0)
        W(n1_w, "norm1.weight", 1, D);
        W(n1_b, "norm1.bias", 1, D);
        W(n2_w, "norm2.weight", 1, D);
        W(n2_b, "norm2.bias", 1, D);
        W(qkv_b, "attn.qkv.bias", 1, 3 * D);
        W(proj_b, "attn.proj.bias", 1, D);
        W(fc1_b, "mlp.linear_fc1.bias", 1, FF);
        W(fc2_b, "mlp.linear_fc2.bias", 1, D);
#undef W
#define M(field, suffix, rows, cols, act, out_b16)                                                 \
    do {                                                                                           \
        snprintf(name, sizeof(name), "model.visual.blocks.%d.%s", i, suffix);                      \
        if ((rc = vg_model_mat_dense(m, name, rows, cols, act, out_b16, &b->field, err, errlen)) < \
            0)                                                                                     \
            return rc;                                                                             \
    } while (0)
        /* fc1's output only feeds fc2: bf16 straight from oneDNN where it carries the products */
        /* qkv's output only feeds the attention: in bf16 where oneDNN's attention takes it (as
         * PyTorch's bf16 path rounds it before the rotary embedding) */
        M(qkv_w, "attn.qkv.weight", 3 * D, D, VG_ACT_NONE,
          vg_dnnl_attn_rope16_ok(m, (size_t)(D / in->vision_heads)));
        M(proj_w, "attn.proj.weight", D, D, VG_ACT_NONE, 0);
        M(fc1_w, "mlp.linear_fc1.weight", FF, D, VG_ACT_GELU_TANH, 1);
        M(fc2_w, "mlp.linear_fc2.weight", D, FF, VG_ACT_NONE, 0);
#undef M
    }
    if ((rc = load_merger(m, "model.visual.merger", 0, &m->merger, err, errlen)) < 0)
        return rc;
    for (int k = 0; k < in->n_deepstack; k++) {
        char prefix[128];
        snprintf(prefix, sizeof(prefix), "model.visual.deepstack_merger_list.%d", k);
        if ((rc = load_merger(m, prefix, 1, &m->ds[k], err, errlen)) < 0)
            return rc;
        if (in->deepstack_indexes[k] < 0 || in->deepstack_indexes[k] >= in->vision_depth)
            return vg_fail(err, errlen, VG_EMODEL,
                           "config.json: deepstack_visual_indexes[%d] = %d outside 0..%d", k,
                           in->deepstack_indexes[k], in->vision_depth - 1);
    }
    return 0;
}

void vg_vision_out_free(vg_vision_out *v)
{
    if (!v)
        return;
    free(v->embeds);
    free(v->deepstack);
    free(v);
}

static void trace(const vg_model *m, const char *name, int index, const float *d, size_t rows,
                  size_t cols)
{
    if (m->trace)
        m->trace(name, index, d, rows, cols, m->trace_opaque);
}

/* Row-parallel element-wise work of a block (the pool splits rows; each range is the serial op). */
typedef struct rows_ctx {
    const float *x, *w, *b, *cs, *sn;
    float *y;
    uint16_t *yb; /* ln_range: the rows in bf16 here (the next product's input) instead of y */
    size_t d, ld;
    int heads, dh;
} rows_ctx;

#define LN_ROW_MAX 2048 /* widest row normalized through a stack buffer (vision hidden sizes) */

static void ln_range(void *c, size_t r0, size_t r1)
{
    const rows_ctx *a = c;
    if (a->yb && a->d <= LN_ROW_MAX) { /* only the bf16 rows are read: the float ones stay in L1 */
        float row[LN_ROW_MAX] __attribute__((aligned(64)));
        for (size_t r = r0; r < r1; r++) {
            vg_layernorm(a->x + r * a->d, row, 1, a->d, a->w, a->b, VIS_EPS);
            vg_to_bf16(row, a->d, a->yb + r * a->d);
        }
        return;
    }
    vg_layernorm(a->x + r0 * a->d, a->y + r0 * a->d, r1 - r0, a->d, a->w, a->b, VIS_EPS);
    if (a->yb)
        vg_to_bf16(a->y + r0 * a->d, (r1 - r0) * a->d, a->yb + r0 * a->d);
}

static void gelu_range(void *c, size_t r0, size_t r1)
{
    const rows_ctx *a = c;
    vg_gelu_tanh(a->y + r0 * a->d, (r1 - r0) * a->d);
}

static void gelu_erf_range(void *c, size_t r0, size_t r1)
{
    const rows_ctx *a = c;
    vg_gelu_erf(a->y + r0 * a->d, (r1 - r0) * a->d);
}

static void add_range(void *c, size_t r0, size_t r1)
{
    const rows_ctx *a = c;
    vg_add(a->y + r0 * a->d, a->x + r0 * a->d, (r1 - r0) * a->d);
}

static void rope_range(void *c, size_t r0, size_t r1)
{
    const rows_ctx *a = c;
    vg_rope_apply(a->y + r0 * a->ld, r1 - r0, a->heads, a->dh, a->ld, a->cs + r0 * (size_t)a->dh,
                  a->sn + r0 * (size_t)a->dh);
}

#define ROWS_GRAIN 16 /* rows per range at least (a region costs a few microseconds) */

/* The position embedding of rows [r0, r1): pe = the four corner rows of tab (idx) weighted by
 * wt, summed in corner order; then x += pe. */
typedef struct pos_ctx {
    const float *tab, *wt;
    const int *idx;
    float *pe, *x;
    size_t d;
} pos_ctx;

static void pos_range(void *c, size_t r0, size_t r1)
{
    const pos_ctx *a = c;
    const size_t D = a->d;
    for (size_t r = r0; r < r1; r++) {
        float *pe = a->pe + r * D, *x = a->x + r * D;
        const float *e0 = a->tab + (size_t)a->idx[4 * r + 0] * D;
        const float *e1 = a->tab + (size_t)a->idx[4 * r + 1] * D;
        const float *e2 = a->tab + (size_t)a->idx[4 * r + 2] * D;
        const float *e3 = a->tab + (size_t)a->idx[4 * r + 3] * D;
        const float w0 = a->wt[4 * r + 0], w1 = a->wt[4 * r + 1], w2 = a->wt[4 * r + 2],
                    w3 = a->wt[4 * r + 3];
        for (size_t j = 0; j < D; j++)
            pe[j] = e0[j] * w0 + e1[j] * w1 + e2[j] * w2 + e3[j] * w3;
        for (size_t j = 0; j < D; j++)
            x[j] += pe[j];
    }
}

/* x: [nm][MD] (already LayerNorm'ed when the merger normalizes before the shuffle). */
static void merger_run(vg_model *m, const vg_merger *mg, const float *x, size_t nm, size_t MD,
                       float *ln, float *t1, float *out, float *ws)
{
    const float *in = x;
    if (mg->postshuffle) {
        rows_ctx c = {.x = x, .y = ln, .w = mg->n_w, .b = mg->n_b, .d = MD};
        vg_pool_for(m->tpool, nm, ROWS_GRAIN, ln_range, &c);
        in = ln;
    }
    if (mg->fc1_w.out_b16 && vg_matmul_b16_ok(&mg->fc2_w, nm)) { /* t1 holds fc1's bf16 output */
        vg_matmul_to_b16(m, in, NULL, nm, &mg->fc1_w, mg->fc1_b, (uint16_t *)(void *)t1, ws);
        vg_matmul_b16(m, (const uint16_t *)(const void *)t1, nm, &mg->fc2_w, mg->fc2_b, out, ws);
        return;
    }
    vg_matmul(m, in, nm, &mg->fc1_w, mg->fc1_b, t1, ws);
    if (mg->fc1_w.act != VG_ACT_GELU_ERF) { /* else applied by the product */
        rows_ctx g = {.y = t1, .d = MD};
        vg_pool_for(m->tpool, nm, ROWS_GRAIN, gelu_erf_range, &g);
    }
    vg_matmul(m, t1, nm, &mg->fc2_w, mg->fc2_b, out, ws);
}

/* Floats of matmul workspace a slice of n patches (nm merged tokens) needs. */
static size_t vision_ws(const vg_model *m, size_t n, size_t nm)
{
    size_t ws = m->patch_mat.dnnl ? vg_mat_ws_floats(&m->patch_mat, n) : 1;
    for (int i = 0; i < m->info.vision_depth; i++) {
        const vg_vis_block *b = &m->blocks[i];
        const vg_mat *ms[] = {&b->qkv_w, &b->proj_w, &b->fc1_w, &b->fc2_w};
        for (size_t k = 0; k < VG_ARRAY_LEN(ms); k++)
            ws = VG_MAX(ws, vg_mat_ws_floats(ms[k], n));
    }
    const vg_merger *mg[VG_MAX_DEEPSTACK + 1];
    int nmg = 0;
    mg[nmg++] = &m->merger;
    for (int k = 0; k < m->info.n_deepstack; k++)
        mg[nmg++] = &m->ds[k];
    for (int k = 0; k < nmg; k++)
        ws = VG_MAX(
            ws, VG_MAX(vg_mat_ws_floats(&mg[k]->fc1_w, nm), vg_mat_ws_floats(&mg[k]->fc2_w, nm)));
    return ws;
}

typedef struct vis_attn_job {
    const float *qkv;
    float *o, *scratch;
    size_t n, D, dh;
    float scale;
} vis_attn_job;

/* Full attention of head h over the slice (q, k, v interleaved in qkv rows of 3D). */
static void vis_attn_task(void *arg, size_t h)
{
    const vis_attn_job *a = arg;
    const size_t ld = 3 * a->D;
    vg_flash_attn(-1, a->qkv + h * a->dh, ld, a->qkv + a->D + h * a->dh, ld,
                  a->qkv + 2 * a->D + h * a->dh, ld, a->n, a->n, a->dh, a->scale, -1,
                  a->o + h * a->dh, a->D, a->scratch + h * vg_flash_scratch_floats(a->n, a->dh));
}

/* Full attention of every head over the slice's N rows (q, k, v interleaved in qkv rows of 3D,
 * already rotated) into o [N][D], in float32: the fused kernel with the heads split across the
 * pool (flash), else per head through sgemm in blocks of rb query rows (scores in sc). */
static void vis_attn(vg_model *m, const float *qkv, float *o, float *sc, size_t N, size_t D,
                     size_t H, size_t dh, size_t rb, int flash, float scale)
{
    if (flash) {
        vis_attn_job job = {
            .qkv = qkv, .o = o, .scratch = sc, .n = N, .D = D, .dh = dh, .scale = scale};
        vg_pool_run(m->tpool, H, vis_attn_task, &job);
        return;
    }
    for (size_t hd = 0; hd < H; hd++) {
        const float *q = qkv + hd * dh, *k = qkv + D + hd * dh, *v = qkv + 2 * D + hd * dh;
        for (size_t i0 = 0; i0 < N; i0 += rb) {
            size_t r = VG_MIN(rb, N - i0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)N, (int)dh, scale,
                        q + i0 * 3 * D, (int)(3 * D), k, (int)(3 * D), 0.0f, sc, (int)N);
            for (size_t i = 0; i < r; i++)
                vg_softmax(sc + i * N, N);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, (int)dh, (int)N, 1.0f,
                        sc, (int)N, v, (int)(3 * D), 0.0f, o + i0 * D + hd * dh, (int)D);
        }
    }
}

static int cancelled(const atomic_int *c)
{
    return c && atomic_load(c) != 0;
}

int vg_model_encode_slice(vg_model *m, const float *patches, int grid_h, int grid_w,
                          const atomic_int *cancel, vg_vision_out **out, char *err, size_t errlen)
{
    if (!m || !patches || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_model_encode_slice: NULL argument");
    const vg_model_info *in = &m->info;
    if (!in->has_vision || !m->blocks)
        return vg_fail(err, errlen, VG_EINVAL, "the vision tower is not loaded");
    int merge = in->spatial_merge_size;
    if (grid_h <= 0 || grid_w <= 0 || grid_h % merge || grid_w % merge || grid_h > 1024 ||
        grid_w > 1024)
        return vg_fail(err, errlen, VG_EINVAL,
                       "slice grid %dx%d: both sides must be positive multiples of %d, at most "
                       "1024",
                       grid_h, grid_w, merge);
    const size_t N = (size_t)grid_h * (size_t)grid_w;
    const size_t D = (size_t)in->vision_hidden, FF = (size_t)in->vision_intermediate;
    const size_t H = (size_t)in->vision_heads, dh = D / H;
    const size_t K = (size_t)in->in_channels * (size_t)in->temporal_patch_size *
                     (size_t)in->patch_size * (size_t)in->patch_size;
    const size_t mm = (size_t)merge * (size_t)merge, nm = N / mm, MD = D * mm;
    const size_t O = (size_t)in->out_hidden_size;
    const int nds = in->n_deepstack;
    int side = 0;
    while ((side + 1) * (side + 1) <= in->num_position_embeddings)
        side++;

    /* attention rows run in blocks of rb so that the score block stays within the budget */
    size_t rb = VG_MAX((size_t)1, VG_MIN(N, VIS_SCORE_BUDGET / N));
    /* one scratch block: x, h, o [N*D]; qkv [N*3D]; scores [rb*N]; mlp [N*max(FF, D)];
     * cos, sin [N*dh]; freqs [N*dh/2]; t1 [nm*MD]; ln [nm*MD]; wt [4N]; the matmul workspace;
     * ab [N*D] bf16; each rounded up to 16 floats; then ints: row, col [N], idx [4N] */
    size_t nf = 0, parts[14];
    parts[0] = N * D;     /* x */
    parts[1] = N * D;     /* h */
    parts[2] = N * D;     /* o */
    parts[3] = N * 3 * D; /* qkv */
    const int flash = vg_flash_ok(dh);
    parts[4] = flash ? H * vg_flash_scratch_floats(N, dh) : rb * N; /* scores */
    parts[5] = N * VG_MAX(VG_MAX(FF, D), (3 * D + 1) / 2);          /* mlp; also qkv in bf16 */
    parts[6] = N * dh;                                              /* cos */
    parts[7] = N * dh;                                              /* sin */
    parts[8] = N * dh / 2;                                          /* freqs */
    parts[9] = nm * MD;                                             /* t1 */
    parts[10] = nm * MD;                                            /* ln */
    parts[11] = 4 * N;                                              /* wt */
    parts[12] = vision_ws(m, N, nm);
    parts[13] = (N * D + 1) / 2; /* ab: a product's input rows in bf16 */
    for (int i = 0; i < 14; i++) {
        parts[i] = (parts[i] + 15) & ~(size_t)15; /* every buffer 64-byte aligned */
        nf += parts[i];
    }
    const size_t scratch_bytes = nf * sizeof(float) + 6 * N * sizeof(int);
    float *buf = vg_scratch_take(m, scratch_bytes);
    int *ibuf = buf ? (int *)(buf + nf) : NULL;
    vg_vision_out *vo = calloc(1, sizeof(*vo));
    if (vo) {
        vo->embeds = malloc(nm * O * sizeof(float));
        vo->deepstack = malloc((size_t)(nds > 0 ? nds : 1) * nm * O * sizeof(float));
    }
    if (!buf || !ibuf || !vo || !vo->embeds || !vo->deepstack) {
        vg_scratch_give(m, buf, scratch_bytes);
        vg_vision_out_free(vo);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory encoding a %dx%d slice", grid_h,
                       grid_w);
    }
    vo->n_tokens = (int)nm;
    vo->dim = (int)O;
    vo->n_deepstack = nds;
    float *x = buf, *h = x + parts[0], *o = h + parts[1], *qkv = o + parts[2];
    float *sc = qkv + parts[3], *mlp = sc + parts[4], *cs = mlp + parts[5], *sn = cs + parts[6];
    float *fr = sn + parts[7], *t1 = fr + parts[8], *ln = t1 + parts[9], *wt = ln + parts[10];
    float *ws = wt + parts[11];
    uint16_t *ab = (uint16_t *)(void *)(ws + parts[12]);
    int *row = ibuf, *col = row + N, *idx = col + N;
    int rc = 0;

    /* patch embedding */
    if (m->patch_mat.dnnl)
        vg_matmul(m, patches, N, &m->patch_mat, m->patch_b, x, ws);
    else
        vg_linear_pool(m->tpool, patches, N, K, m->patch_w, m->patch_b, D, x, D);
    trace(m, "vision.patch_embed", 0, x, N, D);

    /* learned position embedding, bilinear from the side x side grid */
    vg_pos_interp(side, grid_h, grid_w, merge, idx, wt);
    {
        pos_ctx pc = {.tab = m->pos_embed, .wt = wt, .idx = idx, .pe = h, .x = x, .d = D};
        vg_pool_for(m->tpool, N, ROWS_GRAIN, pos_range, &pc);
    }
    trace(m, "vision.pos_embed", 0, h, N, D);

    /* 2-D rotary table */
    {
        float inv[256];
        vg_rope_vision_inv_freq((int)dh, inv);
        vg_vision_rowcol(grid_h, grid_w, merge, row, col);
        vg_rope_vision_freqs(inv, (int)dh, row, col, N, fr);
        trace(m, "vision.rope_freqs", 0, fr, N, dh / 2);
        for (size_t r = 0; r < N; r++)
            for (size_t j = 0; j < dh / 2; j++) {
                float a = fr[r * (dh / 2) + j];
                cs[r * dh + j] = cs[r * dh + j + dh / 2] = cosf(a);
                sn[r * dh + j] = sn[r * dh + j + dh / 2] = sinf(a);
            }
    }

    const float scale = 1.0f / sqrtf((float)dh);
    for (int bi = 0; bi < in->vision_depth; bi++) {
        if (cancelled(cancel)) {
            rc = vg_fail(err, errlen, VG_ECANCELED, "vision encoding canceled");
            goto done;
        }
        const vg_vis_block *b = &m->blocks[bi];
        /* where oneDNN carries a product, its input rows are written in bf16 by what makes them
         * (the norms, the attention, fc1's epilogue), while in cache: bit for bit the same */
        const int qkv16 = vg_matmul_b16_ok(&b->qkv_w, N), proj16 = vg_matmul_b16_ok(&b->proj_w, N);
        const int fc1_16 = vg_matmul_b16_ok(&b->fc1_w, N);
        const int mlp16 = b->fc1_w.out_b16 && vg_matmul_b16_ok(&b->fc2_w, N);
        {
            rows_ctx c = {
                .x = x, .y = h, .yb = qkv16 ? ab : NULL, .w = b->n1_w, .b = b->n1_b, .d = D};
            vg_pool_for(m->tpool, N, ROWS_GRAIN, ln_range, &c);
        }
        /* q, k, v in bf16 (in mlp's space) where oneDNN's attention takes them */
        uint16_t *q16 = NULL;
        if (qkv16 && b->qkv_w.out_b16 && N >= VG_DNNL_ATTN_MIN && vg_dnnl_attn_rope16_ok(m, dh)) {
            q16 = (uint16_t *)(void *)mlp;
            vg_matmul_to_b16(m, NULL, ab, N, &b->qkv_w, b->qkv_b, q16, ws);
        } else if (qkv16) {
            vg_matmul_b16(m, ab, N, &b->qkv_w, b->qkv_b, qkv, ws);
        } else {
            vg_matmul(m, h, N, &b->qkv_w, b->qkv_b, qkv, ws);
        }
        vg_attn_args aa = {.q = qkv,
                           .k = qkv + D,
                           .v = qkv + 2 * D,
                           .ldq = 3 * D,
                           .ldk = 3 * D,
                           .ldv = 3 * D,
                           .q_hs = dh,
                           .k_hs = dh,
                           .v_hs = dh,
                           .n = N,
                           .ctx = N,
                           .heads = H,
                           .kv_heads = H,
                           .dh = dh,
                           .scale = scale,
                           .p0 = -1,
                           .o = o,
                           .ob = proj16 ? ab : NULL,
                           .ldo = D,
                           .o_hs = dh,
                           .rope_cs = cs,
                           .rope_sn = sn,
                           .q16 = q16,
                           .k16 = q16 ? q16 + D : NULL,
                           .v16 = q16 ? q16 + 2 * D : NULL};
        int o16 = 0; /* the output in ab (bf16), not o */
        if (N >= VG_DNNL_ATTN_MIN && vg_dnnl_attn(m, &aa) == 0) { /* q, k rotated on the way */
            o16 = proj16; /* bf16 products through oneDNN (lossy weight types) */
        } else {
            if (q16) /* oneDNN declined: the float32 kernels on the widened rows */
                vg_from_bf16(q16, N * 3 * D, qkv);
            /* the rotary embedding in place, for the float32 kernels */
            rows_ctx cq = {
                .y = qkv, .cs = cs, .sn = sn, .ld = 3 * D, .heads = (int)H, .dh = (int)dh};
            rows_ctx ck = cq;
            ck.y = qkv + D;
            vg_pool_for(m->tpool, N, ROWS_GRAIN, rope_range, &cq);
            vg_pool_for(m->tpool, N, ROWS_GRAIN, rope_range, &ck);
            vis_attn(m, qkv, o, sc, N, D, H, dh, rb, flash, scale);
        }
        if (o16) { /* the residual added by the product, block by block */
            vg_matmul_b16_acc(m, ab, N, &b->proj_w, b->proj_b, x, ws);
        } else {
            vg_matmul(m, o, N, &b->proj_w, b->proj_b, h, ws);
            rows_ctx c = {.x = h, .y = x, .d = D};
            vg_pool_for(m->tpool, N, ROWS_GRAIN, add_range, &c);
        }
        {
            rows_ctx l2 = {
                .x = x, .y = h, .yb = fc1_16 ? ab : NULL, .w = b->n2_w, .b = b->n2_b, .d = D};
            vg_pool_for(m->tpool, N, ROWS_GRAIN, ln_range, &l2);
        }
        if (mlp16) { /* fc1 writes bf16 (GELU applied) into mlp's space, fc2 reads it */
            uint16_t *mb = (uint16_t *)(void *)mlp;
            vg_matmul_to_b16(m, fc1_16 ? NULL : h, fc1_16 ? ab : NULL, N, &b->fc1_w, b->fc1_b, mb,
                             ws);
            vg_matmul_b16_acc(m, mb, N, &b->fc2_w, b->fc2_b, x, ws); /* and the residual */
        } else {
            if (fc1_16)
                vg_matmul_b16(m, ab, N, &b->fc1_w, b->fc1_b, mlp, ws);
            else
                vg_matmul(m, h, N, &b->fc1_w, b->fc1_b, mlp, ws);
            if (b->fc1_w.act != VG_ACT_GELU_TANH) { /* else applied by the product */
                rows_ctx c = {.y = mlp, .d = FF};
                vg_pool_for(m->tpool, N, ROWS_GRAIN, gelu_range, &c);
            }
            vg_matmul(m, mlp, N, &b->fc2_w, b->fc2_b, h, ws);
            rows_ctx c = {.x = h, .y = x, .d = D};
            vg_pool_for(m->tpool, N, ROWS_GRAIN, add_range, &c);
        }
        trace(m, "vision.block_out", bi, x, N, D);
        for (int k = 0; k < nds; k++) {
            if (in->deepstack_indexes[k] != bi)
                continue;
            float *dst = vo->deepstack + (size_t)k * nm * O;
            merger_run(m, &m->ds[k], x, nm, MD, ln, t1, dst, ws);
            trace(m, "vision.deepstack", k, dst, nm, O);
        }
    }
    {
        rows_ctx c = {.x = x, .y = h, .w = m->merger.n_w, .b = m->merger.n_b, .d = D};
        vg_pool_for(m->tpool, N, ROWS_GRAIN, ln_range, &c);
    }
    merger_run(m, &m->merger, h, nm, MD, ln, t1, vo->embeds, ws);
    trace(m, "vision.embeds", 0, vo->embeds, nm, O);
done:
    vg_scratch_give(m, buf, scratch_bytes);
    if (rc < 0) {
        vg_vision_out_free(vo);
        return rc;
    }
    *out = vo;
    return 0;
}
