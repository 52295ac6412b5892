/*
 * engine.h: private declarations shared by the engine's files (model.c, vision.c, text.c, rope.c,
 * sampling.c, generate.c, ops.c). Never included outside model/.
 *
 * Layout of the weights: the Linear weights, the embedding and lm_head are vg_mat matrices
 * [out][in] as in the checkpoint (a PyTorch Linear), held in the weight type chosen at load
 * (weights.c): float32 row-major (y = x W^T + b is one cblas_sgemm with the second operand
 * transposed), or BF16 / Q8_0 packed in row groups for the engine's own kernels (kernels.h; BF16
 * text matrices in oneDNN's blocked layout instead on a CPU with AMX: VG_MAT_BLK). Norms,
 * biases, the patch embedding and the position table are float32 views. Float32 weights either
 * live in malloc'd memory owned by the model (use_mmap = 0, or a dtype that needs conversion) or
 * point into the read-only safetensors mapping (use_mmap = 1 and F32 data).
 */
#ifndef VG_MODEL_ENGINE_H
#define VG_MODEL_ENGINE_H

#include "common.h"
#include "internal.h"
#include "kernels.h"
#include "model.h"
#include "pool.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define VG_MAX_DEEPSTACK 16
#define VG_SCRATCH_POOL  4

typedef struct vg_dnnl vg_dnnl;         /* a model's oneDNN engine (dnnl.c) */
typedef struct vg_dnnl_mat vg_dnnl_mat; /* a matrix packed for oneDNN */
#define VG_DNNL_M 56 /* rows per oneDNN product block (784 = 14 x 56: even split on 2 threads) */

/* A weight matrix [rows][cols] in its load-time type (weights.c). */
typedef struct vg_mat {
    int type;                      /* VG_WEIGHTS_F32, _BF16 or _Q8_0 */
    size_t rows, cols;             /* out, in */
    const float *f;                /* F32: row-major data */
    const void *p;                 /* BF16 / Q8_0: packed groups (kernels.h) */
    size_t group_bytes;            /* bytes of one packed group */
    const vg_dnnl_mat *dnnl;       /* BF16 packed for oneDNN instead (vision only; p is NULL) */
    const vg_dnnl_mat *dnnl_plain; /* text: oneDNN primitive for many rows on unpacked p */
    uint32_t gtype;                /* VG_MAT_GGUF: the ggml block type of p's groups (quant.h) */
    int fd;                        /* VG_MAT_FILE: the checkpoint file (owned by the model) */
    uint64_t off;                  /* VG_MAT_FILE: file offset of row 0 */
    size_t row_bytes;              /* VG_MAT_FILE: bytes of one row in the file */
    int sdtype;                    /* VG_MAT_FILE: the rows' vg_dtype in the file */
    int act;     /* VG_ACT_*: the activation every product with this matrix applies to its output
                  * (a vision fc1 packed for oneDNN: the primitive's epilogue); 0 none */
    int out_b16; /* packed for oneDNN with bf16 output (a vision fc1, whose output only feeds the
                  * next product): vg_matmul_to_b16 writes it; vg_matmul widens it */
    size_t slab_rows; /* VG_MAT_BLK: rows per slab (all of them, or a divisor that is a multiple of
                       * VG_BLK_N) */
    size_t part_cols; /* VG_MAT_BLK: columns per part of K (all of them, or a divisor) */
} vg_mat;
/* Activations a product can apply (vg_mat.act). */
enum { VG_ACT_NONE = 0, VG_ACT_GELU_TANH = 1, VG_ACT_GELU_ERF = 2 };
/* vg_mat.type of a matrix kept at its GGUF K-quant precision (Q4_K, Q5_K, Q6_K): p holds groups
 * of VG_PACK_ROWS rows repacked at load (quant.h, vg_kq_pack_group), group_bytes bytes each. */
#define VG_MAT_GGUF 100
/* vg_mat.type of a matrix only ever read one row at a time (the input embedding of a model whose
 * lm_head is separate): its rows stay in the checkpoint file and vg_mat_row reads them with
 * pread() from the descriptor of the file that was checked at load (vg_model_mat_file). */
#define VG_MAT_FILE 101
/* vg_mat.type of a BF16 text matrix kept in oneDNN's blocked layout (kernels.h, "the blocked
 * layout") on a CPU with AMX (vg_dnnl_mat_blocked): p holds, for each slab of slab_rows rows and
 * each part of part_cols columns (slab-major), that slab's part as a blocked matrix of slab_rows
 * rows (padded to whole blocks of VG_BLK_N) by part_cols columns, vg_blk_bytes(w) bytes each.
 * oneDNN reads each as it is (no unpacking per call); one to a few rows go through AMX tiles. */
#define VG_MAT_BLK 102
static inline size_t vg_blk_bytes(const vg_mat *w)
{
    return (w->slab_rows + VG_BLK_N - 1) / VG_BLK_N * VG_BLK_N * w->part_cols * 2;
}
/* The blocked matrix of slab sl's part c of a VG_MAT_BLK matrix. */
static inline const uint16_t *vg_blk_part(const vg_mat *w, size_t sl, size_t c)
{
    return (const uint16_t *)w->p + (sl * (w->cols / w->part_cols) + c) * (vg_blk_bytes(w) / 2);
}

typedef struct vg_vis_block {
    const float *n1_w, *n1_b, *qkv_b, *proj_b;
    const float *n2_w, *n2_b, *fc1_b, *fc2_b;
    vg_mat qkv_w, proj_w, fc1_w, fc2_w;
} vg_vis_block;

typedef struct vg_merger {
    const float *n_w, *n_b; /* LayerNorm over D (main merger) or 4D (DeepStack, post-shuffle) */
    const float *fc1_b, *fc2_b;
    vg_mat fc1_w, fc2_w;
    int postshuffle;
} vg_merger;

typedef struct vg_text_layer {
    const float *in_norm, *post_norm, *q_norm, *k_norm;
    vg_mat wq, wk, wv, wo, w_gate, w_up, w_down;
} vg_text_layer;

struct vg_model {
    vg_model_info info;
    vg_gen_params gen;
    vg_tokenizer *tok;
    vg_st *st; /* kept open only while some weight points into it */
    int n_threads;
    int use_mmap;
    int wtype;      /* VG_WEIGHTS_F32, _BF16 or _Q8_0 (auto resolved at load) */
    vg_pool *tpool; /* the engine's threads (n_threads participants) */
    vg_dnnl *dnnl;  /* oneDNN engine when built with it and the CPU has AVX512-BF16, else NULL */
    int n_blk;      /* text matrices kept blocked (VG_MAT_BLK: AMX tiles, oneDNN in place) */

    /* vision */
    const float *patch_w, *patch_b, *pos_embed;
    /* the patch embedding packed for oneDNN (bf16) when the weights are bf16 or q8_0 and oneDNN is
     * in use (patch_mat.dnnl set), else unused: patch_w through OpenBLAS */
    vg_mat patch_mat;
    vg_vis_block *blocks;
    vg_merger merger;
    vg_merger ds[VG_MAX_DEEPSTACK];

    /* text */
    vg_mat embed, lm_head; /* lm_head is a copy of embed's view when the embeddings are tied */
    const float *final_norm;
    vg_text_layer *layers;
    float *text_inv_freq;      /* [head_dim/2] */
    unsigned char *mrope_axis; /* [head_dim/2]: 0 = T, 1 = H, 2 = W */

    /* scratch blocks kept for reuse by vision calls (vg_scratch_take/give), under pool_mu */
    pthread_mutex_t pool_mu;
    void *pool[VG_SCRATCH_POOL];
    size_t pool_size[VG_SCRATCH_POOL];

    /* allocations owned by the model */
    void **owned;
    size_t n_owned, cap_owned;

    vg_trace_fn trace;
    void *trace_opaque;
};

/* ---- weights.c: matrices in the load-time weight type ---- */
/* Loads the 2-D tensor name [rows][cols] into *out in m->wtype (float32 when cols is not a multiple
 * of 32), tensor by tensor. Errors as vg_model_weight. */
int vg_model_mat(vg_model *m, const char *name, int64_t rows, int64_t cols, vg_mat *out, char *err,
                 size_t errlen);
/* A text matrix (prim: a layer's, given a oneDNN primitive for long prefills; 0: lm_head or the
 * tied embedding): on a CPU with AMX in bf16, straight into oneDNN's blocked layout (VG_MAT_BLK,
 * vg_dnnl_mat_blocked), else vg_model_mat (then vg_dnnl_attach_plain when prim). Errors as
 * vg_model_weight. */
int vg_model_mat_text(vg_model *m, const char *name, int64_t rows, int64_t cols, int prim,
                      vg_mat *out, char *err, size_t errlen);
/* Loads the 2-D tensor name [rows][cols] as a VG_MAT_FILE matrix: checked (shape, finite values)
 * and its pages dropped, its rows left in the file (weight_bytes unchanged). 0; 1 when the tensor
 * is not in a file (the caller loads it with vg_model_mat); < 0 an error as vg_model_weight. The
 * descriptor belongs to *out's owner, who closes out->fd. */
int vg_model_mat_file(vg_model *m, const char *name, int64_t rows, int64_t cols, vg_mat *out,
                      char *err, size_t errlen);
/* Row r of w as float32 (dst[cols]); the embedding lookup. 0, or VG_EIO when a VG_MAT_FILE row
 * cannot be read (the file shrank or the disk failed). Any thread. */
int vg_mat_row(const vg_mat *w, size_t r, float *dst);
/* Floats of workspace vg_matmul needs for n rows of x with w (0 for float32). */
size_t vg_mat_ws_floats(const vg_mat *w, size_t n);
/* y[n][rows] = x[n][cols] W^T (+ b[rows] when b != NULL). ws: vg_mat_ws_floats(w, n) floats owned
 * by the caller. One row runs on m's pool; several rows through OpenBLAS. Any thread. */
void vg_matmul(vg_model *m, const float *x, size_t n, const vg_mat *w, const float *b, float *y,
               float *ws);
/* 1 when vg_matmul(m, x, n, w, ...) multiplies bf16(x) through oneDNN: then vg_matmul_b16 can take
 * the rows already rounded (a producer that writes them while they are in cache saves the product
 * a pass over x). Any thread. */
int vg_matmul_b16_ok(const vg_mat *w, size_t n);
/* vg_matmul with x given as xb[n][w->cols], vg_to_bf16 of x: bit for bit what vg_matmul returns for
 * x. Only where vg_matmul_b16_ok(w, n). */
void vg_matmul_b16(vg_model *m, const uint16_t *xb, size_t n, const vg_mat *w, const float *b,
                   float *y, float *ws);
/* y[n][rows] += what vg_matmul_b16 writes (a residual added while each block is in cache: the
 * same float32 sums as the product into a buffer and vg_add). Only where vg_matmul_b16_ok(w, n)
 * and w->out_b16 is 0. */
void vg_matmul_b16_acc(vg_model *m, const uint16_t *xb, size_t n, const vg_mat *w, const float *b,
                       float *y, float *ws);
/* vg_matmul_b16 without bias, y written panel-major as vg_dnnl_matmul_panels describes (the same
 * values in another order); all NaN when oneDNN failed. Only where vg_dnnl_panels_ok(m, w, n). */
void vg_matmul_panels(vg_model *m, const uint16_t *xb, size_t n, const vg_mat *w, float *y,
                      float *ws);
/* A product with a matrix packed with bf16 output (w->out_b16): yb[n][rows] = the float32 result
 * rounded to bf16 (as vg_to_bf16 rounds it), from float rows x or, x NULL, bf16 rows xb. */
void vg_matmul_to_b16(vg_model *m, const float *x, const uint16_t *xb, size_t n, const vg_mat *w,
                      const float *b, uint16_t *yb, float *ws);
/* y[i] = x W[i]^T for count (<= 4) matrices sharing x (no bias); with one row and packed matrices
 * of one type and cols, a single pool region covers them all (fewer wake-ups per token). */
void vg_matmul_multi(vg_model *m, const float *x, size_t n, const vg_mat *const *w, float *const *y,
                     size_t count, float *ws);

/* Like vg_model_mat, for a matrix only ever multiplied with many rows (the vision tower): with
 * bf16 weights and oneDNN available it is packed for oneDNN's bf16 matmul instead, and then the
 * products also apply act (VG_ACT_*) to their output, which out->act records (0 when they do
 * not: the caller applies it). */
int vg_model_mat_dense(vg_model *m, const char *name, int64_t rows, int64_t cols, int act,
                       int out_b16, vg_mat *out, char *err, size_t errlen);

/* ---- dnnl.c: oneDNN bf16 products (stubs without VG_HAVE_DNNL) ---- */
/* Sets m->dnnl when oneDNN is usable (AVX-512 level); 0 or VG_ENOMEM. */
int vg_dnnl_create(vg_model *m);
/* Frees the engine and every matrix packed with it; NULL does nothing. */
void vg_dnnl_destroy(vg_dnnl *d);
/* Packs float32 w[rows][cols] into *out (type BF16, out->dnnl set); its products add a bias
 * (vg_dnnl_matmul's b) and then apply act (VG_ACT_*; out->act = act), and write bf16 when out_b16
 * (out->out_b16). 0; 1 when oneDNN has no fast kernel for it here (out untouched: pack another
 * way); VG_ENOMEM. */
int vg_dnnl_pack(vg_model *m, const float *w, size_t rows, size_t cols, int act, int out_b16,
                 vg_mat *out);
/* Gives a packed (BF16 / Q8_0) text matrix a oneDNN bf16 primitive for products with many rows
 * (prefill): its weights are unpacked to plain bf16 in the caller's workspace per call (no second
 * copy is kept). vision: a vision tower's matrix (blocks of up to VG_DNNL_MAX_M_PACKED rows, not
 * 256). Does nothing without oneDNN or a fast kernel. */
void vg_dnnl_attach_plain(vg_model *m, vg_mat *w, int vision);
/* The 2-D tensor t [rows][cols] (checked by the caller) as a VG_MAT_BLK matrix in *out, converted
 * straight from the checkpoint into oneDNN's blocked layout, where AMX tiles can multiply it
 * (vg_amx_ok) and oneDNN's primitive for it reads that layout (prim: a text layer's matrix, which
 * gets the primitive vg_dnnl_attach_plain would give it; 0: lm_head, no primitive). 0; 1 when not
 * here (*out untouched: pack row groups); VG_ENOMEM (the model's load fails). Load time. */
int vg_dnnl_mat_blocked(vg_model *m, const vg_tensor *t, size_t rows, size_t cols, int prim,
                        vg_mat *out);
/* Workspace floats of vg_dnnl_matmul for w (w->dnnl or w->dnnl_plain set) and n rows of x. */
size_t vg_dnnl_ws_floats(const vg_mat *w, size_t n);
/* Bytes of one slab of a text matrix unpacked for oneDNN at most: wider matrices (rows * cols * 2
 * above it) are unpacked and multiplied a slab of rows at a time. 32 MiB: no 2B matrix is split,
 * the 8B MLP in 3 and 4 slabs. */
#define VG_DNNL_SLAB_BYTES ((size_t)32 << 20)
/* y[n][rows] = bf16(x) W^T (+ b[rows] when b is not NULL, added to each block of rows while it is
 * in cache, by the task that computed it), through w->dnnl or w->dnnl_plain (BF16, Q8_0 or a GGUF
 * K-quant matrix, widened per slab). x is float32 rows, or NULL and xb the rows already in bf16
 * (vg_to_bf16). y: float32 rows, bf16 ones (uint16) for a matrix packed with out_b16. acc: y +=
 * that result instead (float32 y only: a residual added while the block is in cache). 0, VG_EIO,
 * or VG_EINVAL (acc with bf16 output). */
int vg_dnnl_matmul(vg_model *m, const float *x, const uint16_t *xb, size_t n, const vg_mat *w,
                   const float *b, void *y, int acc, float *ws);
/* Output columns per panel of a product written panel-major (vg_dnnl_matmul_panels). */
#define VG_PANEL_COLS 128
/* 1 when vg_dnnl_matmul_panels takes w (plain, no bias) with n rows here. */
int vg_dnnl_panels_ok(vg_model *m, const vg_mat *w, size_t n);
/* y = bf16 rows xb[n][cols] W^T written panel-major: panel p (columns p * VG_PANEL_COLS ..) is the
 * dense float32 block y + p * n * VG_PANEL_COLS of n rows, so no panel is copied out (the consumer
 * reads it in that layout: the text MLP's SwiGLU). Only where vg_dnnl_panels_ok(m, w, n). 0, or
 * VG_EIO. */
int vg_dnnl_matmul_panels(vg_model *m, const uint16_t *xb, size_t n, const vg_mat *w, float *y,
                          float *ws);

/* One attention call over heads: head h's query rows are q + h * q_hs (row stride ldq), its keys
 * and values those of KV head h / (heads / kv_heads) at k + kvh * k_hs and v + kvh * v_hs (row
 * strides ldk, ldv), its output rows o + h * o_hs (row stride ldo). p0 < 0: every row sees all ctx
 * keys; else row i sees keys 0..p0 + i (causal after p0 cached positions). */
typedef struct vg_attn_args {
    const float *q, *k, *v;
    /* vg_dnnl_attn only, instead of q, k and v (when set): the same rows in bf16 at the same
     * strides (q16 + h * q_hs + i * ldq, ...), rotated on the way like float ones; k16 and v16 are
     * required with it (the vision tower's qkv product written in bf16) */
    const uint16_t *q16, *k16, *v16;
    /* instead of k and v (when both set): bf16 keys and values (a bf16 KV cache), used in place;
     * rows past ctx up to ctx rounded up to 64 must be readable and finite */
    const uint16_t *kb, *vb;
    size_t ldq, ldk, ldv, q_hs, k_hs, v_hs;
    size_t n, ctx, heads, kv_heads, dh;
    float scale;
    long p0;
    float *o;
    uint16_t *ob; /* vg_dnnl_attn only: when set, the output rows go here in bf16 (vg_to_bf16's
                   * rounding) instead of o, at the same strides */
    size_t ldo, o_hs;
    /* vg_dnnl_attn only, with float keys: when set, query row i and key row i are rotated by
     * table rows cs + i dh, sn + i dh (vg_rope_apply's arithmetic, bit for bit) on their way to
     * bf16; q and k themselves are left as they are (the vision tower's rotary embedding) */
    const float *rope_cs, *rope_sn;
} vg_attn_args;
/* Attention with bf16 products through oneDNN (AMX on CPUs that have it): Q, K, V and the
 * probabilities rounded to bf16 as in PyTorch's bf16 path, scores, softmax and outputs float32;
 * heads split across m's pool. Only for lossy weight types (bf16, q8_0) at the AVX-512 level with
 * head sizes that are multiples of 16. 0 done; 1 not available here (use vg_flash_attn); VG_ENOMEM
 * or VG_EIO (nothing sensible written). Any thread. */
int vg_dnnl_attn(vg_model *m, const vg_attn_args *a);
/* 1 when vg_dnnl_attn takes the vision tower's rows in bf16, rotated on the way (q16, rope_cs), for
 * head size dh with m's weights on this CPU (it may still decline a shape oneDNN has no kernel
 * for); 0 otherwise. Any thread. */
int vg_dnnl_attn_rope16_ok(const vg_model *m, size_t dh);
/* Query rows from which the engine uses vg_dnnl_attn: below, the fused float32 kernel is as fast
 * (the bf16 tiles are mostly padding) and exact. */
#define VG_DNNL_ATTN_MIN 128
/* The same over a bf16 KV cache, read in place: from 32 rows oneDNN is faster than the flash kernel
 * (bench_stream, 2B q8_0, 2 threads: a 64-row pair's prefill after 2,270 cached tokens 1053 -> 732
 * ms). */
#define VG_DNNL_ATTN_MIN_KV16 32

/* Benchmarks only: GFLOP/s of a oneDNN matmul [M][K] x [K][N] -> float32 with prepacked weights,
 * bf16 (int8 = 0) or u8 x s8 (int8 = 1), on threads OpenMP threads, best of reps after a warm-up,
 * every buffer 64-byte aligned as the engine's are; 0 when oneDNN is absent or refuses the shape.
 */
double vg_dnnl_ceiling(int int8, int M, int K, int N, int threads, int reps);

/* ---- attn.c: fused (flash) attention of one head ---- */
#define VG_FLASH_BC 64 /* keys per tile */
/* Scratch floats vg_flash_attn needs for n query rows of head size hd. */
size_t vg_flash_scratch_floats(size_t n, size_t hd);
/* 1 when vg_flash_attn has a fast (AVX-512) kernel for head size hd at the level in use. */
int vg_flash_ok(size_t hd);
/* o[i] = softmax_j(scale * q[i].k[j]) v[j] over keys j < ctx (all of them when p0 < 0, else the
 * causal j <= p0 + i), rows with strides ldq/ldk/ldv/ldo, without a score matrix. level: VG_ISA_*
 * or -1 for the level in use (the portable reference runs below AVX-512). Any thread. */
void vg_flash_attn(int level, const float *q, size_t ldq, const float *k, size_t ldk,
                   const float *v, size_t ldv, size_t n, size_t ctx, size_t hd, float scale,
                   long p0, float *o, size_t ldo, float *scratch);
/* The same over bf16 keys and values (a bf16 KV cache), widened exactly a tile at a time: the
 * result is vg_flash_attn's on the widened values, bit for bit. */
void vg_flash_attn_bf16(int level, const float *q, size_t ldq, const uint16_t *k, size_t ldk,
                        const uint16_t *v, size_t ldv, size_t n, size_t ctx, size_t hd, float scale,
                        long p0, float *o, size_t ldo, float *scratch);

/* ---- ops.c: dense kernels (float32). Any thread. ---- */
/* y[n][out] = x[n][in] * W[out][in]^T (+ b[out] when b != NULL). */
void vg_linear(const float *x, size_t n, size_t in, const float *w, const float *b, size_t out,
               float *y);
/* vg_linear into rows of y ldy floats apart, the output columns split across the pool p (or
 * NULL), each part one single-threaded OpenBLAS call: the engine keeps OpenBLAS at one thread
 * (model.c), so that no OpenBLAS worker spins beside the pool between products. Any thread. */
void vg_linear_pool(vg_pool *p, const float *x, size_t n, size_t in, const float *w, const float *b,
                    size_t out, float *y, size_t ldy);
/* LayerNorm over d with weight and bias, rows in place or out of place. */
void vg_layernorm(const float *x, float *y, size_t n, size_t d, const float *w, const float *b,
                  float eps);
/* RMSNorm (Qwen3: y = w * (x / sqrt(mean(x^2) + eps))). */
void vg_rmsnorm(const float *x, float *y, size_t n, size_t d, const float *w, float eps);
void vg_gelu_tanh(float *x, size_t n);
/* g[i] = silu(g[i]) * u[i] (the SwiGLU MLP). */
void vg_silu_mul(float *g, const float *u, size_t n);
/* out[i] = bf16 of what vg_silu_mul would leave in g[i] (vg_to_bf16's rounding), g unchanged: bit
 * for bit vg_silu_mul then vg_to_bf16. */
void vg_silu_mul_b16(const float *g, const float *u, size_t n, uint16_t *out);
void vg_gelu_erf(float *x, size_t n);
/* y[i] += x[i] over n values (element-wise float additions: the same result at every level). */
void vg_add(float *y, const float *x, size_t n);
/* Each of the n rows of y (N values, ld apart) += b[0..N); b NULL adds nothing (a bias). */
void vg_add_rows(float *y, size_t n, size_t ld, size_t N, const float *b);
/* Decode attention of grp query heads (q [grp][hd]) sharing one KV head whose ctx rows of hd
 * floats are contiguous: scores[g][t] = scale * q[g].k[t], then out[g] = sum_t p[g][t] v[t]. Each
 * streams K or V once. */
void vg_attn_scores(const float *q, size_t grp, const float *k, size_t ctx, size_t hd, float scale,
                    float *scores);
void vg_attn_mix(const float *p, size_t grp, const float *v, size_t ctx, size_t hd, float *out);
/* The same over a bf16 KV head (k, v widened exactly; q, p and the sums float32). */
void vg_attn_scores_bf16(const float *q, size_t grp, const uint16_t *k, size_t ctx, size_t hd,
                         float scale, float *scores);
void vg_attn_mix_bf16(const float *p, size_t grp, const uint16_t *v, size_t ctx, size_t hd,
                      float *out);
/* out[i] = x[i] rounded to bf16 (nearest even; float32 subnormals may become zero at the AVX-512
 * level), i < n; vg_from_bf16 widens: out[i] = float32 of x[i]. */
void vg_to_bf16(const float *x, size_t n, uint16_t *out);
void vg_from_bf16(const uint16_t *x, size_t n, float *out);
/* In-place softmax of one row. */
void vg_softmax(float *x, size_t n);

/* ---- rope.c: rotary tables. Pure functions. ---- */
/* Text inv_freq[j] = 1 / theta^(2j/head_dim), j < head_dim/2, float32 as torch computes it. */
void vg_rope_text_inv_freq(float theta, int head_dim, float *inv_freq);
/* Axis (0 T, 1 H, 2 W) of each of the head_dim/2 frequency slots for interleaved MRoPE with
 * section [t, h, w]: start all T, then slot 3k+1 (k < h) is H and 3k+2 (k < w) is W. Returns
 * VG_EINVAL when the sections do not fit. */
int vg_mrope_axes(const int section[3], int half, unsigned char *axis);
/* cos/sin [n][head_dim] for tokens with positions pos[3][n] (row stride pos_stride). */
void vg_rope_text_table(const float *inv_freq, const unsigned char *axis, int head_dim,
                        const int32_t *pos, size_t pos_stride, size_t n, float *cos_out,
                        float *sin_out);
/* Rotate-half RoPE applied to n rows of n_heads heads of head_dim (row stride ld floats) with
 * per-row cos/sin [n][head_dim]. */
void vg_rope_apply(float *x, size_t n, int n_heads, int head_dim, size_t ld, const float *cos_t,
                   const float *sin_t);
/* Vision: inv_freq[j] = 1/10000^(2j/(head_dim/2)), j < head_dim/4. */
void vg_rope_vision_inv_freq(int head_dim, float *inv_freq);
/* Row/column of each patch of a gh x gw slice in merge-window order (docs/qwen3vl.md §1.6). */
void vg_vision_rowcol(int gh, int gw, int merge, int *row, int *col);
/* Angles [n][head_dim/2] = (row * inv_freq | col * inv_freq). */
void vg_rope_vision_freqs(const float *inv_freq, int head_dim, const int *row, const int *col,
                          size_t n, float *freqs);
/* float32 torch.linspace(start, end, n) (the docs/qwen3vl.md §1.3 rule; exact for small n). */
void vg_linspace_f32(float start, float end, int n, float *out);
/* Bilinear corner indices [4] and float32 weights [4] for every patch of the slice in merge-window
 * order, from a side x side grid. */
void vg_pos_interp(int side, int gh, int gw, int merge, int *idx, float *wt);

/* ---- vision.c ---- */
int vg_vision_load(vg_model *m, char *err, size_t errlen);

/* ---- text.c ---- */
int vg_text_load(vg_model *m, char *err, size_t errlen);

/* The model a sequence was created on. */
vg_model *vg_seq_model(const vg_seq *s);
/* The KV cache of a sequence for window.c (vg_seq_remove): K and V as
 * [n_layers][n_kv_heads][cap][head_dim] elements of es bytes (4 float32, 2 bf16), and a pointer
 * to the cached length. */
typedef struct vg_seq_kv {
    void *kc, *vc;
    size_t cap, es;
    size_t *len;
} vg_seq_kv;
void vg_seq_kv_view(vg_seq *s, vg_seq_kv *out);

/* ---- model.c: loader helpers ---- */
/* A float32 view of tensor name with the given shape, owned by the model (copied/converted, or in
 * the mapping). */
int vg_model_weight(vg_model *m, const char *name, int ndim, const int64_t *shape,
                    const float **out, char *err, size_t errlen);
/* A scratch block of at least bytes from the model's pool (or malloc'd), and its return;
 * thread-safe. Blocks stay allocated for the next call (glibc would otherwise unmap and re-fault
 * them). */
void *vg_scratch_take(vg_model *m, size_t bytes);
void vg_scratch_give(vg_model *m, void *p, size_t bytes);
/* Records a malloc'd block the model frees. 0 or VG_ENOMEM (p is freed then). */
int vg_model_own(vg_model *m, void *p);
/* bytes for weights, owned (and freed) by the model: 64-byte aligned, and from 4 MiB on 2 MiB
 * aligned and advised to huge pages before anything is written (streamed weights then cross no
 * 4 KiB page boundary, where the hardware prefetchers stop, and miss the TLB 512 times less).
 * NULL when out of memory. */
void *vg_model_alloc_weights(vg_model *m, size_t bytes);
/* Drops the whole pages of [p, p + n) of the mapping from the resident set once converted. */
void vg_model_drop_pages(const void *p, size_t n);

/* ---- sampling.c ---- */
/* Argmax (first of equal maxima). */
int32_t vg_argmax(const float *x, size_t n);

#endif
