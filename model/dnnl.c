/*
 * dnnl.c: bf16 matrix products through oneDNN (Debian libdnnl-dev 2.6) for the vision tower, with
 * the weights packed once at load into the layout oneDNN's brgemm kernels want.
 *
 * Used when vigil is built with oneDNN (VG_HAVE_DNNL), the weights are bf16, the kernel level is
 * AVX-512 (VG_ISA can lower it) and oneDNN picks a brgemm implementation for the shape (on a CPU
 * without AVX512-BF16 it would fall back to slow reference code, so the matrix then keeps the
 * engine's own packed layout instead). Only the vision tower's matrices go this way: they are
 * never used one row at a time, so the oneDNN layout is their only copy; the text model keeps the
 * row-group layout its decode GEMV streams (two copies would double the memory).
 *
 * Arithmetic: the activations are rounded to bf16 (as PyTorch's bf16 path does), products are
 * accumulated in float32 by oneDNN and written as float32. The vision tower's matrices (packed at
 * load) have primitives that add the float32 bias in their epilogue and, for fc1, apply the GELU
 * (tanh form in the blocks, erf in the mergers) as an eltwise post-op (vg_mat.act tells the
 * caller); text matrices have no bias, and any bias passed for them is added by the task that
 * computed each block, while it is in cache. Each primitive is created for a fixed block of
 * VG_DNNL_M rows (others of 4k rows up to VG_DNNL_MAX_M made on first use); a call splits its
 * blocks across the engine's pool (each participant runs oneDNN with one OpenMP thread, so no
 * OpenMP team is left spinning between calls), the last block padded through the workspace. Every
 * participant has its own block buffers and user-managed scratchpad in the caller's workspace, so
 * concurrent calls on a shared model never share memory. Text matrices (dnnl_plain, and q8_0 vision
 * ones) are first unpacked in the workspace, split across the pool by column blocks: straight into
 * oneDNN's blocked weight layout when it is the AMX/AVX512-BF16 one (BA16a<nb>b2a, checked at
 * load), so that oneDNN does not copy the whole matrix again inside every block's call; else to
 * plain bf16. A GGUF K-quant matrix is first widened to BF16 groups. A matrix whose bf16 copy
 * exceeds VG_DNNL_SLAB_BYTES (the 8B MLP) goes a slab of rows at a time: unpack the slab, multiply
 * every block of x by it (x converted to bf16 once for all slabs; a slab's output block is dense
 * in the block buffer, then copied into its columns), next slab; so the workspace holds one slab,
 * not the whole matrix widened (twice for GGUF).
 *
 * A text matrix wider than VG_DNNL_KPART columns goes as products over parts of its K (each part
 * unpacked on its own, x in bf16 part-major, the parts after the first added to y): oneDNN's
 * brgemm slows down for large K. Primitives are created for a fixed OpenMP thread count
 * (VG_DNNL_NTHR_*), which sets oneDNN's blocking.
 *
 * Where the weights are in the blocked layout (packed, or a plain slab unpacked blocked), a call
 * of many rows can instead run as panels of VG_DNNL_PANEL output columns (panel_task, chosen by
 * use_panels): a panel's weights stay in L2 across every row, its dense result is copied or added
 * (acc) into y's columns; the participants split the panels, not the rows.
 *
 * Attention (vg_dnnl_attn): per head S = Q K^T and O = P V as bf16 oneDNN products (AMX here)
 * with an AVX-512 softmax between them (P = bf16(e^(s - max)) unnormalized; each output row is
 * scaled by 1 / sum after PV), the heads split across the pool; primitives per shape made on
 * first use (causal shapes rounded up so that a few serve every prefill). Full attention (vision)
 * runs in query blocks of at most VG_DNNL_ATTN_QBLOCK rows, so that a block's scores stay in L2;
 * causal prefills come in such blocks from text.c. Where the CPU has AMX, full attention of head
 * size 32 or 64 (the vision tower's) instead runs fused in AMX tiles (amx_attn: the same bf16
 * operands and softmax, keys and values put into the tiles' layouts once per head, the tiles'
 * products overlapped with the vector units' softmax).
 *
 * Threads: vg_dnnl_pack at load (one thread); vg_dnnl_matmul from any thread.
 */
#include "engine.h"
#include "quant.h"
#include "simd_x86.h"

#include <stdlib.h>
#include <string.h>

#ifdef VG_HAVE_DNNL
#include <dnnl.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define VG_DNNL_SLOTS                                                                              \
    64 /* block buffers per call: the most participants that use oneDNN at once                    \
        */

#define VG_DNNL_ATTN 32 /* attention shapes (rows, keys, head size) kept; others use attn.c */
/* query rows per product when every row sees every key: a 196-row block of 784 keys has 0.6 MB of
 * float scores, which stay in L2 for the softmax and the second product */
#define VG_DNNL_ATTN_QBLOCK 256

/* The two products of one attention shape: S = Q K^T and O = P V, per head. */
typedef struct attn_prim {
    size_t n, ctx, dh;
    dnnl_primitive_desc_t qk_pd, pv_pd;
    dnnl_primitive_t qk, pv;
    dnnl_memory_desc_t q_md, k_md, s_md, p_md, v_md, o_md, qk_scr_md, pv_scr_md;
    size_t scr_bytes; /* the larger scratchpad of the two */
} attn_prim;

struct vg_dnnl {
    dnnl_engine_t eng;
    int threads;        /* the model's n_threads: pool participants that run blocks at once */
    size_t llc;         /* bytes of the last-level cache (0: unknown) */
    vg_dnnl_mat **mats; /* every matrix packed with this engine, freed with it */
    size_t n_mats, cap_mats;
    pthread_mutex_t mu; /* guards attn and n_attn (primitives made on first use) */
    attn_prim *attn[VG_DNNL_ATTN];
    size_t n_attn;
};

#define VG_DNNL_MAX_M                                                                              \
    256 /* rows per block at most (larger blocks reread the weights less often)                    \
         */
/* The same for the vision tower's matrices (packed at load, or q8_0 ones unpacked per call): a
 * 448x448 pair's 784 rows in one block on one thread (bf16 0.92-0.93 -> 0.87-0.88 s per pair at 1
 * thread, q8_0 1.04-1.09 -> 0.98-1.00 s, 0.57-0.60 -> 0.54-0.55 s at 2, on the Xeon of
 * 2026-12-07); text matrices keep 256 (a 1k prefill 8 % slower with 1024 blocks). */
#define VG_DNNL_MAX_M_PACKED 1024
#define VG_DNNL_BIG          6 /* primitives kept per shape for blocks above VG_DNNL_MAX_M rows */
/* Output columns per product when a call goes by panels (panel_task): oneDNN 2.6's brgemm walks
 * all of N for every chunk of rows, so a matrix larger than L2 is read from memory once per chunk;
 * a panel's weights (K x 128 bf16: 256 KiB at K = 1024, 1 MiB at 4096) stay in L2 across every
 * row. 1 thread, weights from memory (as in a forward pass), on the Xeon of 2026-12-07: 784 x 4096
 * -> 1024 8.2 -> 6.7 ms, 196 x 4096 -> 4096 12.0 -> 8.6 ms; 64 and 128 alike, 256 and wider
 * lose most of it. */
#define VG_DNNL_PANEL 128
/* Rows from which a call goes by panels (below, oneDNN reads the weights about once anyway). */
#define VG_DNNL_PANEL_MIN_ROWS 64
/* Columns (K) per product at most for a text matrix: a wider one (the MLP's down projection, K =
 * 6144 at the 2B shape) goes as products over parts of its K, each written over or added to y.
 * oneDNN 2.6's brgemm slows down past K = 3072 (its blocks of K no longer fit L2 beside the
 * weights'): 1 thread, 256 x 6144 -> 2048 at 735 GFLOP/s whole, 870-900 in 2 parts, 985 in 3;
 * 1024 rows 745 whole, 970 in 2 (on the Xeon of 2026-12-07); in the engine, 1k prefill 267-273 ->
 * 281-285 tok/s at 1 thread, 543-547 -> 559-560 at 2. Splitting K = 2048 loses (1536: 250 tok/s at
 * 1 thread). The environment variable VG_DNNL_KPART sets another limit (0: no parts; tests force
 * parts on small models with it). */
#define VG_DNNL_KPART 2048

/* Threads oneDNN is told about while a primitive is created. Its brgemm matmul picks its blocking
 * for the thread count current at creation (omp_get_max_threads) and keeps it whatever the count
 * at execution, where the pool gives each call one thread. Text products (dnnl_plain) in blocks of
 * at least VG_DNNL_NTHR_TEXT_MIN_M rows (a long prompt's) run faster created for 2: a 1-thread
 * 1024 x 2048 -> 6144 product at 930 GFLOP/s created for 1 thread, 1130 created for 2 (K = 6144
 * alike either way; 1k prefill 267-270 -> 278-281 tok/s); smaller blocks (a live stream's pair
 * and question prefills, 72 rows by panels or blocks of VG_DNNL_M) the other way round (a pair's
 * prefill in bench_stream, q8_0, 2 threads, alternating: 349-351 ms created for 2, 315-317 for 1);
 * so do the vision tower's products (a 1-thread bf16 pair 0.74 s created for 2, 0.72 for 1; for
 * 4, 0.77-0.79); the attention's either way. On the Xeon of 2026-12-07. Without this the count
 * came from whichever thread created the primitive: the process's default (the CPU count, or
 * OMP_NUM_THREADS) at load, 1 on a thread that had run pool tasks. */
#define VG_DNNL_NTHR_TEXT       2 /* text blocks of VG_DNNL_NTHR_TEXT_MIN_M rows or more */
#define VG_DNNL_NTHR_TEXT_MIN_M 128
#define VG_DNNL_NTHR_SMALL      1 /* smaller text blocks */
#define VG_DNNL_NTHR_VISION     1
#define VG_DNNL_NTHR_ATTN       1

/* dnnl_primitive_desc_create and dnnl_primitive_create with oneDNN's thread count at nthr for
 * the call (the caller's own count restored after). Both at the same count: a primitive created at
 * another count than its descriptor can fail inside oneDNN (a 128 x 64 product threw
 * bad_array_new_length from brgemm_kernel_create). */
static dnnl_status_t pd_create(dnnl_primitive_desc_t *pd, const void *desc,
                               const_dnnl_primitive_attr_t attr, dnnl_engine_t eng, int nthr)
{
    const int saved = omp_get_max_threads();
    omp_set_num_threads(nthr);
    const dnnl_status_t st = dnnl_primitive_desc_create(pd, desc, attr, eng, NULL);
    omp_set_num_threads(saved);
    return st;
}

static dnnl_status_t prim_create(dnnl_primitive_t *prim, const_dnnl_primitive_desc_t pd, int nthr)
{
    const int saved = omp_get_max_threads();
    omp_set_num_threads(nthr);
    const dnnl_status_t st = dnnl_primitive_create(prim, pd);
    omp_set_num_threads(saved);
    return st;
}

/* A primitive for blocks of M rows (one of the sizes a call picks, made on first use). */
typedef struct dnnl_var {
    int state; /* 0 not tried, 1 usable, -1 refused */
    size_t M;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src_md, dst_md, scr_md;
    dnnl_memory_desc_t wei_md, bias_md; /* panels: {cols, VG_DNNL_PANEL}, {1, VG_DNNL_PANEL} */
} dnnl_var;

struct vg_dnnl_mat {
    int plain; /* weights supplied per call: plain bf16 [rows][cols], or in oneDNN's blocked
                * layout when nblk is set */
    int nblk;  /* blocked: 16@K, nblk@N, 2@K (K pairs of nblk columns, 16 of them per block) */
    int pnb;   /* the weights (packed, or plain blocked) are BA16a<pnb>b2a, so that the columns of
                * panel p are the contiguous K x VG_DNNL_PANEL block at element p * PANEL * cols;
                * 0: no panels */
    size_t wbytes; /* bytes of the weights a call supplies */
    int threads;   /* participants of a call (each needs its own block buffers), <= VG_DNNL_SLOTS */
    size_t rows, cols;
    size_t max_m; /* rows per block at most (the workspace holds blocks this large) */
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src_md, dst_md, wei_md, scr_md;
    /* packed at load (!plain: the vision tower's matrices, all with biases): the primitives add a
     * bias {1, rows} in their epilogue, zero_bias[rows] (owned) when a call has none */
    int act;     /* VG_ACT_*: an eltwise post-op after the bias */
    int out_b16; /* packed: the primitives write bf16 (the next product's input), not float32 */
    dnnl_memory_desc_t bias_md;
    float *zero_bias;
    void *wei;            /* packed weights, owned by the model */
    size_t scratch_bytes; /* the largest scratchpad of prim and var[] (the workspace's) */
    /* [0]: whole products, [1]: panels of VG_DNNL_PANEL columns; under vg_dnnl.mu */
    dnnl_var var[2][VG_DNNL_MAX_M / 4]; /* M = 4 (i + 1) */
    dnnl_var big[2][VG_DNNL_BIG];       /* larger M, first come */
    struct vg_dnnl_mat *shape; /* the first packed matrix of this shape and layout: its var[] serve
                                * every matrix like it (NULL: this one's own) */
};

/* 1 and *v = the environment variable name's value when it is set to a decimal number of bytes;
 * else 0 (*v untouched). Tests set such variables to force paths. */
static int env_bytes(const char *name, size_t *v)
{
    const char *e = getenv(name);
    char *end = NULL;
    unsigned long long x = e ? strtoull(e, &end, 10) : 0;
    if (!e || end == e || *end != '\0')
        return 0;
    *v = (size_t)x;
    return 1;
}

int vg_dnnl_create(vg_model *m)
{
    if (vg_isa_level() < VG_ISA_AVX512)
        return 0;
    vg_dnnl *d = calloc(1, sizeof(*d));
    if (!d)
        return VG_ENOMEM;
    if (dnnl_engine_create(&d->eng, dnnl_cpu, 0) != dnnl_success) {
        free(d);
        return 0; /* no oneDNN: the engine's own path */
    }
    d->threads = VG_MAX(1, VG_MIN(m->n_threads, VG_DNNL_SLOTS));
    /* the last-level cache's size: the environment variable VG_DNNL_LLC_BYTES overrides it
     * (tests force the streaming unpack with 1) */
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (!env_bytes("VG_DNNL_LLC_BYTES", &d->llc))
        d->llc = l3 > 0 ? (size_t)l3 : 0;
    pthread_mutex_init(&d->mu, NULL);
    m->dnnl = d;
    return 0;
}

static void var_free(dnnl_var *v)
{
    if (v->prim)
        dnnl_primitive_destroy(v->prim);
    if (v->pd)
        dnnl_primitive_desc_destroy(v->pd);
}

static void mat_free(vg_dnnl_mat *dm)
{
    if (!dm)
        return;
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < VG_ARRAY_LEN(dm->var[k]); i++)
            var_free(&dm->var[k][i]);
        for (size_t i = 0; i < VG_DNNL_BIG; i++)
            var_free(&dm->big[k][i]);
    }
    if (dm->prim)
        dnnl_primitive_destroy(dm->prim);
    if (dm->pd)
        dnnl_primitive_desc_destroy(dm->pd);
    free(dm->zero_bias);
    free(dm);
}

static void attn_free(attn_prim *ap)
{
    if (!ap)
        return;
    if (ap->qk)
        dnnl_primitive_destroy(ap->qk);
    if (ap->pv)
        dnnl_primitive_destroy(ap->pv);
    if (ap->qk_pd)
        dnnl_primitive_desc_destroy(ap->qk_pd);
    if (ap->pv_pd)
        dnnl_primitive_desc_destroy(ap->pv_pd);
    free(ap);
}

void vg_dnnl_destroy(vg_dnnl *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_attn; i++)
        attn_free(d->attn[i]);
    pthread_mutex_destroy(&d->mu);
    for (size_t i = 0; i < d->n_mats; i++)
        mat_free(d->mats[i]);
    free(d->mats);
    dnnl_engine_destroy(d->eng);
    free(d);
}

/* Adds the post-op of act (VG_ACT_*) to attr: 1, or 0 when oneDNN refuses it. */
static int set_act(dnnl_primitive_attr_t attr, int act)
{
    if (act == VG_ACT_NONE)
        return 1;
    dnnl_post_ops_t po = NULL;
    int ok = dnnl_post_ops_create(&po) == dnnl_success &&
             dnnl_post_ops_append_eltwise(
                 po, 1.0f, act == VG_ACT_GELU_TANH ? dnnl_eltwise_gelu_tanh : dnnl_eltwise_gelu_erf,
                 0.0f, 0.0f) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    if (po)
        dnnl_post_ops_destroy(po);
    return ok;
}

static int blocked_nb(const dnnl_memory_desc_t *md, size_t K, size_t N);

/* The primitive of dm for blocks of M rows (M a multiple of 4, <= dm->max_m), made on first
 * use; panel: for VG_DNNL_PANEL of its columns (dm->pnb set), weights in the same layout as the
 * whole matrix's. NULL when oneDNN has no brgemm kernel for it (or, for a panel, another weight
 * layout), it would need more scratchpad than the workspace has (budget: 0 at load, where it sets
 * dm->scratch_bytes instead) or, above VG_DNNL_MAX_M rows, VG_DNNL_BIG other sizes are in use.
 * Under d->mu. */
static const dnnl_var *var_get(vg_dnnl *d, vg_dnnl_mat *dm, size_t M, int at_load, int panel)
{
    if (dm->shape)
        dm = dm->shape;
    dnnl_var *v = NULL;
    if (M <= VG_DNNL_MAX_M) {
        v = &dm->var[panel][M / 4 - 1];
    } else {
        dnnl_var *big = dm->big[panel];
        for (size_t i = 0; i < VG_DNNL_BIG && !v; i++)
            if (big[i].state != 0 && big[i].M == M)
                v = &big[i];
        for (size_t i = 0; i < VG_DNNL_BIG && !v; i++)
            if (big[i].state == 0)
                v = &big[i];
        if (!v)
            return NULL;
    }
    if (v->state != 0)
        return v->state > 0 ? v : NULL;
    v->state = -1;
    v->M = M;
    const size_t N = panel ? VG_DNNL_PANEL : dm->rows;
    const int nthr = !dm->plain                     ? VG_DNNL_NTHR_VISION
                     : M >= VG_DNNL_NTHR_TEXT_MIN_M ? VG_DNNL_NTHR_TEXT
                                                    : VG_DNNL_NTHR_SMALL;
    dnnl_dims_t sd = {(dnnl_dim_t)M, (dnnl_dim_t)dm->cols}, dd = {(dnnl_dim_t)M, (dnnl_dim_t)N};
    dnnl_dims_t wd = {(dnnl_dim_t)dm->cols, (dnnl_dim_t)N}, bd = {1, (dnnl_dim_t)N};
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    const char *impl = NULL;
    if (panel &&
        (!dm->pnb ||
         dnnl_memory_desc_init_by_tag(&v->wei_md, 2, wd, dnnl_bf16, dnnl_format_tag_any) !=
             dnnl_success ||
         dnnl_memory_desc_init_by_tag(&v->bias_md, 2, bd, dnnl_f32, dnnl_ab) != dnnl_success))
        return NULL;
    int ok =
        dnnl_memory_desc_init_by_tag(&v->src_md, 2, sd, dnnl_bf16, dnnl_ab) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&v->dst_md, 2, dd, dm->out_b16 ? dnnl_bf16 : dnnl_f32,
                                     dnnl_ab) == dnnl_success &&
        dnnl_matmul_desc_init(&desc, &v->src_md, panel ? &v->wei_md : &dm->wei_md,
                              dm->plain ? NULL
                              : panel   ? &v->bias_md
                                        : &dm->bias_md,
                              &v->dst_md) == dnnl_success &&
        dnnl_primitive_attr_create(&attr) == dnnl_success &&
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success &&
        set_act(attr, dm->act) && pd_create(&v->pd, &desc, attr, d->eng, nthr) == dnnl_success &&
        dnnl_primitive_desc_query(v->pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
        impl && strncmp(impl, "brg", 3) == 0;
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (ok && panel) { /* the panel's weights must be a slice of the whole matrix's */
        v->wei_md = *dnnl_primitive_desc_query_md(v->pd, dnnl_query_weights_md, 0);
        ok = blocked_nb(&v->wei_md, dm->cols, N) == dm->pnb;
    }
    if (ok) {
        v->scr_md = *dnnl_primitive_desc_query_md(v->pd, dnnl_query_scratchpad_md, 0);
        size_t sb = dnnl_memory_desc_get_size(&v->scr_md);
        if (at_load)
            dm->scratch_bytes = VG_MAX(dm->scratch_bytes, sb);
        ok = sb <= dm->scratch_bytes && prim_create(&v->prim, v->pd, nthr) == dnnl_success;
    }
    if (!ok)
        return NULL;
    v->state = 1;
    return v;
}

/* Panels for dm (dm->pnb) when its weights are BA16a<nb>b2a (nb: blocked_nb's, 0 none) and its
 * rows are two or more whole panels of whole blocks; then sizes the workspace for the largest
 * panel blocks (a matrix sharing its shape's primitives finds them made). Load time. */
static void panels_init(vg_dnnl *d, vg_dnnl_mat *dm, int nb)
{
    if (!nb || VG_DNNL_PANEL % nb != 0 || dm->rows % VG_DNNL_PANEL != 0 ||
        dm->rows <= VG_DNNL_PANEL)
        return;
    dm->pnb = nb;
    var_get(d, dm, dm->max_m, 1, 1);
}

int vg_dnnl_pack(vg_model *m, const float *w, size_t rows, size_t cols, int act, int out_b16,
                 vg_mat *out)
{
    vg_dnnl *d = m->dnnl;
    if (!d)
        return 1;
    vg_dnnl_mat *dm = calloc(1, sizeof(*dm));
    if (!dm)
        return VG_ENOMEM;
    dnnl_dims_t sd = {VG_DNNL_M, (dnnl_dim_t)cols}, wd = {(dnnl_dim_t)cols, (dnnl_dim_t)rows};
    dnnl_dims_t dd = {VG_DNNL_M, (dnnl_dim_t)rows}, bd = {1, (dnnl_dim_t)rows};
    dnnl_memory_desc_t wany;
    dnnl_matmul_desc_t desc;
    dm->act = act;
    dm->out_b16 = out_b16 != 0;
    dm->max_m = VG_DNNL_MAX_M_PACKED;
    dm->zero_bias = calloc(rows ? rows : 1, sizeof(float));
    int ok =
        dm->zero_bias &&
        dnnl_memory_desc_init_by_tag(&dm->src_md, 2, sd, dnnl_bf16, dnnl_ab) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&wany, 2, wd, dnnl_bf16, dnnl_format_tag_any) ==
            dnnl_success &&
        dnnl_memory_desc_init_by_tag(&dm->dst_md, 2, dd, dm->out_b16 ? dnnl_bf16 : dnnl_f32,
                                     dnnl_ab) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&dm->bias_md, 2, bd, dnnl_f32, dnnl_ab) == dnnl_success &&
        dnnl_matmul_desc_init(&desc, &dm->src_md, &wany, &dm->bias_md, &dm->dst_md) == dnnl_success;
    dnnl_primitive_attr_t attr = NULL;
    if (ok)
        ok = dnnl_primitive_attr_create(&attr) == dnnl_success &&
             dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) ==
                 dnnl_success &&
             set_act(attr, act) &&
             pd_create(&dm->pd, &desc, attr, d->eng, VG_DNNL_NTHR_VISION) == dnnl_success;
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    const char *impl = NULL;
    if (ok)
        ok =
            dnnl_primitive_desc_query(dm->pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
            impl && strncmp(impl, "brg", 3) == 0;
    if (!ok) {
        mat_free(dm);
        return 1; /* not a fast path here: the caller packs its own way */
    }
    dm->threads = d->threads;
    dm->rows = rows;
    dm->cols = cols;
    dm->wei_md = *dnnl_primitive_desc_query_md(dm->pd, dnnl_query_weights_md, 0);
    dm->scr_md = *dnnl_primitive_desc_query_md(dm->pd, dnnl_query_scratchpad_md, 0);
    dm->scratch_bytes = dnnl_memory_desc_get_size(&dm->scr_md);
    for (size_t i = 0; i < d->n_mats && !dm->shape; i++) /* share the block-size primitives */
        if (!d->mats[i]->plain && !d->mats[i]->shape && d->mats[i]->rows == rows &&
            d->mats[i]->cols == cols && d->mats[i]->act == act &&
            d->mats[i]->out_b16 == dm->out_b16 &&
            dnnl_memory_desc_equal(&d->mats[i]->wei_md, &dm->wei_md))
            dm->shape = d->mats[i];
    if (dm->shape)
        dm->scratch_bytes = VG_MAX(dm->scratch_bytes, dm->shape->scratch_bytes);
    else
        var_get(d, dm, dm->max_m, 1, 0); /* sizes the workspace for the largest blocks */
    panels_init(d, dm, blocked_nb(&dm->wei_md, cols, rows));
    size_t wbytes = dnnl_memory_desc_get_size(&dm->wei_md);
    void *wp = vg_model_alloc_weights(m, wbytes);
    if (!wp) {
        mat_free(dm);
        return VG_ENOMEM;
    }
    dm->wei = wp;
    /* reorder the float32 [rows][cols] matrix (weights {cols, rows} in tag ba) into the packed
     * bf16 layout */
    dnnl_memory_desc_t src_w;
    dnnl_memory_t msrc = NULL, mdst = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t rp = NULL;
    dnnl_stream_t st = NULL;
    ok = dnnl_memory_desc_init_by_tag(&src_w, 2, wd, dnnl_f32, dnnl_ba) == dnnl_success &&
         dnnl_memory_create(&msrc, &src_w, d->eng, (void *)w) == dnnl_success &&
         dnnl_memory_create(&mdst, &dm->wei_md, d->eng, wp) == dnnl_success &&
         dnnl_reorder_primitive_desc_create(&rpd, &src_w, d->eng, &dm->wei_md, d->eng, NULL) ==
             dnnl_success &&
         dnnl_primitive_create(&rp, rpd) == dnnl_success &&
         dnnl_stream_create(&st, d->eng, dnnl_stream_default_flags) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, msrc}, {DNNL_ARG_TO, mdst}};
        ok = dnnl_primitive_execute(rp, st, 2, args) == dnnl_success &&
             dnnl_stream_wait(st) == dnnl_success;
    }
    if (st)
        dnnl_stream_destroy(st);
    if (rp)
        dnnl_primitive_destroy(rp);
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    if (msrc)
        dnnl_memory_destroy(msrc);
    if (mdst)
        dnnl_memory_destroy(mdst);
    if (ok)
        ok = prim_create(&dm->prim, dm->pd, VG_DNNL_NTHR_VISION) == dnnl_success;
    if (!ok) {
        mat_free(dm);
        return 1;
    }
    if (d->n_mats == d->cap_mats) {
        size_t nc = d->cap_mats ? 2 * d->cap_mats : 64;
        vg_dnnl_mat **nm = realloc(d->mats, nc * sizeof(*nm));
        if (!nm) {
            mat_free(dm);
            return VG_ENOMEM;
        }
        d->mats = nm;
        d->cap_mats = nc;
    }
    d->mats[d->n_mats++] = dm;
    memset(out, 0, sizeof(*out));
    out->type = VG_WEIGHTS_BF16;
    out->rows = rows;
    out->cols = cols;
    out->dnnl = dm;
    out->act = act;
    out->out_b16 = dm->out_b16;
    m->info.weight_bytes += wbytes;
    return 0;
}

/* The inner block of N columns when md is oneDNN's AMX/AVX512-BF16 weight layout for {K, N}
 * (tag BA16a<nb>b2a: blocks of 32 K x nb N, [N / nb][K / 32][16][nb][2], dense): nb; else 0. */
static int blocked_nb(const dnnl_memory_desc_t *md, size_t K, size_t N)
{
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    if (md->format_kind != dnnl_blocked || md->ndims != 2 || md->offset0 != 0 ||
        md->extra.flags != 0 || b->inner_nblks != 3 || b->inner_blks[0] != 16 ||
        b->inner_idxs[0] != 0 || b->inner_idxs[1] != 1 || b->inner_blks[2] != 2 ||
        b->inner_idxs[2] != 0 || K % 32 != 0 || md->padded_dims[0] != (dnnl_dim_t)K)
        return 0;
    const dnnl_dim_t nb = b->inner_blks[1];
    if ((nb != 16 && nb != 32 && nb != 64) ||
        md->padded_dims[1] != (dnnl_dim_t)((N + (size_t)nb - 1) / (size_t)nb * (size_t)nb) ||
        b->strides[0] != 32 * nb || b->strides[1] != (dnnl_dim_t)K * nb)
        return 0;
    return (int)nb;
}

/* A primitive for M = VG_DNNL_M rows of x times bf16 weights [rows][cols] supplied per call
 * (shared by every matrix of that shape): in oneDNN's own blocked layout when it is one that
 * unpack_task writes (no copy of the weights inside every oneDNN call), else plain. NULL when
 * oneDNN has no brgemm kernel for it. */
static vg_dnnl_mat *plain_prim(vg_dnnl *d, size_t rows, size_t cols, size_t max_m)
{
    for (size_t i = 0; i < d->n_mats; i++)
        if (d->mats[i]->plain && d->mats[i]->rows == rows && d->mats[i]->cols == cols &&
            d->mats[i]->max_m == max_m)
            return d->mats[i];
    vg_dnnl_mat *dm = calloc(1, sizeof(*dm));
    if (!dm)
        return NULL;
    dm->plain = 1;
    dm->rows = rows;
    dm->cols = cols;
    dm->max_m = max_m;
    dnnl_dims_t sd = {VG_DNNL_M, (dnnl_dim_t)cols}, wd = {(dnnl_dim_t)cols, (dnnl_dim_t)rows};
    dnnl_dims_t dd = {VG_DNNL_M, (dnnl_dim_t)rows};
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    const char *impl = NULL;
    int ok = 0;
    for (int blocked = 1; blocked >= 0 && !ok; blocked--) {
        if (dm->pd)
            dnnl_primitive_desc_destroy(dm->pd);
        dm->pd = NULL;
        ok =
            dnnl_memory_desc_init_by_tag(&dm->src_md, 2, sd, dnnl_bf16, dnnl_ab) == dnnl_success &&
            dnnl_memory_desc_init_by_tag(&dm->wei_md, 2, wd, dnnl_bf16,
                                         blocked ? dnnl_format_tag_any : dnnl_ba) == dnnl_success &&
            dnnl_memory_desc_init_by_tag(&dm->dst_md, 2, dd, dnnl_f32, dnnl_ab) == dnnl_success &&
            dnnl_matmul_desc_init(&desc, &dm->src_md, &dm->wei_md, NULL, &dm->dst_md) ==
                dnnl_success &&
            (attr || dnnl_primitive_attr_create(&attr) == dnnl_success) &&
            dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) ==
                dnnl_success &&
            pd_create(&dm->pd, &desc, attr, d->eng, VG_DNNL_NTHR_SMALL) == dnnl_success &&
            dnnl_primitive_desc_query(dm->pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
            impl && strncmp(impl, "brg", 3) == 0;
        if (ok && blocked) {
            dm->wei_md = *dnnl_primitive_desc_query_md(dm->pd, dnnl_query_weights_md, 0);
            dm->nblk = blocked_nb(&dm->wei_md, cols, rows);
            ok = dm->nblk != 0;
        }
    }
    ok = ok && prim_create(&dm->prim, dm->pd, VG_DNNL_NTHR_SMALL) == dnnl_success;
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (ok && d->n_mats == d->cap_mats) {
        size_t nc = d->cap_mats ? 2 * d->cap_mats : 64;
        vg_dnnl_mat **nm = realloc(d->mats, nc * sizeof(*nm));
        if (!nm)
            ok = 0;
        else {
            d->mats = nm;
            d->cap_mats = nc;
        }
    }
    if (!ok) {
        mat_free(dm);
        return NULL;
    }
    dm->threads = d->threads;
    dm->wbytes = dm->nblk ? dnnl_memory_desc_get_size(&dm->wei_md) : rows * cols * 2;
    dm->scr_md = *dnnl_primitive_desc_query_md(dm->pd, dnnl_query_scratchpad_md, 0);
    dm->scratch_bytes = dnnl_memory_desc_get_size(&dm->scr_md);
    var_get(d, dm, dm->max_m, 1, 0); /* sizes the workspace for the largest blocks */
    panels_init(d, dm, dm->nblk);
    d->mats[d->n_mats++] = dm;
    return dm;
}

/* Bytes of one unpacked slab at most: VG_DNNL_SLAB_BYTES, or the environment variable of that
 * name (tests force small slabs with it). */
static size_t slab_budget(void)
{
    size_t v;
    return env_bytes("VG_DNNL_SLAB_BYTES", &v) && v > 0 ? v : (size_t)VG_DNNL_SLAB_BYTES;
}

/* Columns (K) of one part of a text matrix's product, where K is larger than VG_DNNL_KPART (or
 * the environment's VG_DNNL_KPART):
 * the largest divisor of K that is a multiple of 32 and at most VG_DNNL_KPART (K itself
 * otherwise). */
static size_t k_part(size_t K)
{
    size_t lim = VG_DNNL_KPART;
    env_bytes("VG_DNNL_KPART", &lim);
    if (lim == 0 || K <= lim)
        return K;
    for (size_t c = lim / VG_QK * VG_QK; c >= VG_QK; c -= VG_QK)
        if (K % c == 0)
            return c;
    return K;
}

/* The plain primitive a matrix of rows x cols gets (vg_dnnl_attach_plain), or NULL. */
static vg_dnnl_mat *choose_plain(vg_model *m, size_t rows, size_t cols, int vision)
{
    const size_t max_m = vision ? VG_DNNL_MAX_M_PACKED : VG_DNNL_MAX_M;
    const size_t Kc = vision ? cols : k_part(cols);
    /* the rows of a slab: all of them, or the largest multiple of 64 that divides them and whose
     * bf16 copy fits the slab budget (so that a wide model's prefill does not hold a whole matrix
     * widened: 96 MiB for the 8B MLP) */
    const size_t budget = slab_budget();
    size_t S = rows;
    if (rows * Kc * 2 > budget && rows % 64 == 0) {
        size_t best = 0;
        for (size_t c = 64; c < rows && c * Kc * 2 <= budget; c += 64)
            if (rows % c == 0)
                best = c;
        if (best)
            S = best;
    }
    vg_dnnl_mat *dm = S < rows ? plain_prim(m->dnnl, S, Kc, max_m) : NULL;
    if (!dm) /* no slabs, or oneDNN has no kernel for the slab's shape */
        dm = plain_prim(m->dnnl, rows, Kc, max_m);
    if (!dm && Kc < cols) /* nor for the parts: whole products */
        dm = plain_prim(m->dnnl, rows, cols, max_m);
    return dm;
}

void vg_dnnl_attach_plain(vg_model *m, vg_mat *w, int vision)
{
    if (m->dnnl && w->p && w->cols % VG_QK == 0)
        w->dnnl_plain = choose_plain(m, w->rows, w->cols, vision);
}

/* Bytes of one participant's block buffers: bf16 source block, float32 destination block,
 * scratchpad, each 64-byte aligned. */
static size_t per_thread_bytes(const vg_dnnl_mat *dm)
{
    return ((dm->max_m * dm->cols * 2 + 63) & ~(size_t)63) +
           ((dm->max_m * dm->rows * 4 + 63) & ~(size_t)63) +
           ((dm->scratch_bytes + 63) & ~(size_t)63);
}

#define ALIGN64(b) (((b) + 63) & ~(size_t)63)

/* Rows per block for n rows: blocks of at most max_m rows, as many per participant (slots), the
 * rows split evenly and rounded up to a multiple of 4 (so that few primitives serve every row
 * count). */
static size_t block_rows(size_t n, size_t max_m, size_t slots)
{
    size_t nb = (n + max_m - 1) / max_m;
    nb = (nb + slots - 1) / slots * slots;
    return ((n + nb - 1) / nb + 3) & ~(size_t)3;
}

/* Bytes of a GGUF matrix's slab (all of w's columns) widened to kernels.h BF16 groups. */
static size_t slab_groups_bytes(const vg_dnnl_mat *dm, const vg_mat *w)
{
    return (dm->rows + VG_PACK_ROWS - 1) / VG_PACK_ROWS * vg_pack_group_bytes_bf16(w->cols);
}

size_t vg_dnnl_ws_floats(const vg_mat *w, size_t n)
{
    const vg_dnnl_mat *dm = w->dnnl ? w->dnnl : w->dnnl_plain;
    size_t bytes = 64 + (size_t)dm->threads * per_thread_bytes(dm);
    if (dm->plain && w->type != VG_MAT_BLK) {
        bytes += ALIGN64(dm->wbytes); /* one slab unpacked */
        if (w->type == VG_MAT_GGUF)
            bytes += ALIGN64(slab_groups_bytes(dm, w));
    }
    if ((dm->plain && (dm->rows < w->rows || dm->cols < w->cols)) ||
        dm->pnb) { /* x in bf16 once (all of K, by parts), blocks padded */
        /* whole blocks of n' <= n rows: of VG_DNNL_M rows (at most VG_DNNL_M - 1 added), or of
         * block_rows(n', max_m, slots), each of at most n' / max_m + slots blocks 3 rows larger;
         * so never less for more rows, as vg_mat_ws_floats promises */
        const size_t rows = n + VG_DNNL_M + 4 * (n / dm->max_m + 1 + (size_t)dm->threads);
        bytes += ALIGN64(rows * w->cols * 2);
    }
    return bytes / 4 + 16;
}

/* Column blocks [kb0, kb0 + nkb) of row rr of a packed Q8_0 group of K columns as bf16 (scale * q
 * rounded to bf16), 32 values per step. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,f16c"))) static void
q8_row_to_bf16(const int8_t *g, size_t K, int rr, size_t kb0, size_t nkb, uint16_t *out)
{
    const uint16_t *sc = (const uint16_t *)(const void *)(g + (size_t)VG_PACK_ROWS * K);
    for (size_t b = kb0; b < kb0 + nkb; b++) {
        const int8_t *q = g + (b * VG_PACK_ROWS + (size_t)rr) * VG_QK;
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(sc[b * VG_PACK_ROWS + (size_t)rr]));
        __m512 lo = _mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)q)));
        __m512 hi = _mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(q + 16))));
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_mul_ps(hi, d), _mm512_mul_ps(lo, d));
        _mm512_storeu_si512((void *)(out + (b - kb0) * VG_QK), (__m512i)v);
    }
}

typedef struct dnnl_job {
    vg_model *m;
    const vg_mat *w;
    const vg_dnnl_mat *dm;
    const float *x;
    const uint16_t *xb; /* x in bf16 (n rows; slabs: padded with zeros to whole blocks), or NULL */
    void *y;            /* the slab's first output column: float32, or bf16 (dm->out_b16) */
    const float *b;     /* the slab's first bias value, or NULL: no bias */
    size_t ldy;         /* y's row stride: the whole matrix's rows (a slab's output is dense
                         * [M][slab rows] in the block buffer, then copied) */
    void *wei;
    /* the slab being unpacked: its dm->rows rows are rows 0.. of the groups at src (group_bytes
     * bytes each, type BF16 or Q8_0) */
    const unsigned char *src;
    size_t src_gb;
    int src_type;
    size_t src_k; /* columns of the source groups (the matrix's K) */
    size_t kb0;   /* the part being unpacked: its dm->cols columns start at column block kb0 */
    const vg_tensor *tsrc; /* instead of groups: the checkpoint tensor, its rows from row r0 on
                            * (vg_dnnl_mat_blocked at load) */
    size_t r0;
    int stream; /* unpack with streaming stores: the slab would not stay in the last-level cache */
    unsigned char *area; /* per running task: per_thread_bytes each, claimed through busy[] */
    size_t n, blocks, parts, per, slots;
    size_t M; /* rows per block */
    dnnl_primitive_t prim;
    const dnnl_memory_desc_t *src_md, *dst_md, *scr_md;
    const dnnl_var *pv; /* by panels (panel_task): the panel primitive; units = blocks x panels */
    size_t units;
    int acc; /* y += the product (float32 y) instead of y = */
    int pm;  /* panels written panel-major: panel p's rows dense at y + p * n * PANEL */
    atomic_int busy[VG_DNNL_SLOTS];
    atomic_int failed;
} dnnl_job;

/* The end of a task that ran oneDNN: its memory objects (NULL ones skipped) and stream destroyed,
 * the call marked failed unless ok, and its slot of block buffers given back. */
static void task_end(dnnl_memory_t *mems, int n, dnnl_stream_t st, int ok, atomic_int *failed,
                     atomic_int *slot)
{
    for (int i = 0; i < n; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    if (st)
        dnnl_stream_destroy(st);
    if (!ok)
        atomic_store(failed, 1);
    atomic_store(slot, 0);
}

/* Runs a product primitive on st and waits: 1 done, 0 failed. mb: the bias, or NULL (none). */
static int exec_product(dnnl_primitive_t prim, dnnl_stream_t st, dnnl_memory_t ms, dnnl_memory_t mw,
                        dnnl_memory_t md, dnnl_memory_t mscr, dnnl_memory_t mb)
{
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, ms},
                               {DNNL_ARG_WEIGHTS, mw},
                               {DNNL_ARG_DST, md},
                               {DNNL_ARG_SCRATCHPAD, mscr},
                               {DNNL_ARG_BIAS, mb}};
    return dnnl_primitive_execute(prim, st, mb ? 5 : 4, args) == dnnl_success &&
           dnnl_stream_wait(st) == dnnl_success;
}

/* Claims a free one of a call's `slots` buffer slots (at most that many tasks run at once, one per
 * pool participant, so one is always free); task_end gives it back. */
static size_t claim_slot(atomic_int *busy, size_t slots)
{
    for (size_t slot = 0;; slot = (slot + 1) % slots) {
        int expect = 0;
        if (atomic_compare_exchange_strong(&busy[slot], &expect, 1))
            return slot;
    }
}

/* Rows [0, r) of the dense block t[r][N] (float32, or bf16 when es is 2) into y at row stride ld:
 * copied, or added (acc, float32). */
static void copy_out(unsigned char *y, size_t ld, const unsigned char *t, size_t r, size_t N,
                     size_t es, int acc)
{
    for (size_t i = 0; i < r; i++)
        if (acc)
            vg_add((float *)(void *)(y + i * ld * es),
                   (const float *)(const void *)(t + i * N * es), N);
        else
            memcpy(y + i * ld * es, t + i * N * es, N * es);
}

/* Unpacks rows [N * i / parts, N * (i + 1) / parts) of the slab to plain bf16. */
static void unpack_task(void *arg, size_t i)
{
    const dnnl_job *j = arg;
    const size_t K = j->dm->cols, N = j->dm->rows;
    /* whole groups per part, so that parts never share a group */
    const size_t groups = (N + VG_PACK_ROWS - 1) / VG_PACK_ROWS;
    const size_t g0 = groups * i / j->parts, g1 = groups * (i + 1) / j->parts;
    uint16_t *out = j->wei;
    for (size_t r = g0 * VG_PACK_ROWS; r < g1 * VG_PACK_ROWS && r < N; r++) {
        const unsigned char *g = j->src + (r / VG_PACK_ROWS) * j->src_gb;
        const int rr = (int)(r % VG_PACK_ROWS);
        if (j->src_type == VG_WEIGHTS_BF16) {
            for (size_t c = 0; c < K / VG_QK; c++)
                memcpy(out + r * K + c * VG_QK,
                       (const uint16_t *)(const void *)g +
                           ((j->kb0 + c) * VG_PACK_ROWS + (size_t)rr) * VG_QK,
                       VG_QK * sizeof(uint16_t));
        } else {
            q8_row_to_bf16((const int8_t *)g, j->src_k, rr, j->kb0, K / VG_QK, out + r * K);
        }
    }
}

#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,f16c")))

/* r[p] = (r[0][p], ..., r[15][p]): a 16 x 16 transpose of 32-bit lanes. */
AVX512BF16 static inline void transpose16(__m512i r[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int i = 0; i < 2; i++)
        for (int c = 0; c < 4; c++) {
            t[8 * i + c] = _mm512_shuffle_i32x4(u[8 * i + c], u[8 * i + 4 + c], 0x88);
            t[8 * i + 4 + c] = _mm512_shuffle_i32x4(u[8 * i + c], u[8 * i + 4 + c], 0xdd);
        }
    for (int c = 0; c < 8; c++) {
        r[c] = _mm512_shuffle_i32x4(t[c], t[c + 8], 0x88);
        r[c + 8] = _mm512_shuffle_i32x4(t[c], t[c + 8], 0xdd);
    }
}

/* Unpacks the column blocks [NB * i / parts, NB * (i + 1) / parts) of a packed text matrix
 * straight into oneDNN's blocked layout (blocked_nb): for each block of 32 K x nb N, 16 rows at a
 * time are widened to bf16 (Q8_0: scale * q rounded, as q8_row_to_bf16) and transposed so that
 * each K pair of 16 rows is one 64-byte store. Rows beyond N are zero. */
AVX512BF16 static void unpack_blocked_task(void *arg, size_t i)
{
    const dnnl_job *j = arg;
    const size_t nb = (size_t)j->dm->nblk, K = j->dm->cols, Kb = K / VG_QK, N = j->dm->rows;
    const size_t NB = (N + nb - 1) / nb, b0 = NB * i / j->parts, b1 = NB * (i + 1) / j->parts;
    uint32_t *out = j->wei;
    __m512i r[16];
    /* a tensor source: a block's rows in bf16, straight from a BF16 tensor or converted into rows
     * (nb rows of the tensor's K values, float32 scratch then bf16) */
    const size_t TK = j->src_k;
    const int raw = j->tsrc && j->tsrc->dtype == VG_DT_BF16;
    float *fbuf = NULL;
    uint16_t *rows16 = NULL;
    if (j->tsrc && !raw) {
        fbuf = malloc(nb * TK * sizeof(float));
        rows16 = malloc(nb * TK * sizeof(uint16_t));
        if (!fbuf || !rows16) {
            free(fbuf);
            free(rows16);
            atomic_store(&((dnnl_job *)arg)->failed, 1);
            return;
        }
    }
    for (size_t bn = b0; bn < b1; bn++) {
        const uint16_t *trows = NULL; /* tensor source: row bn * nb of this slab, K values each */
        if (raw)
            trows = (const uint16_t *)j->tsrc->data + (j->r0 + bn * nb) * TK;
        else if (j->tsrc) {
            const size_t r1 = VG_MIN(N, (bn + 1) * nb);
            vg_tensor_rows_f32(j->tsrc, j->r0 + bn * nb, j->r0 + r1, fbuf);
            vg_to_bf16(fbuf, (r1 - bn * nb) * TK, rows16);
            trows = rows16;
        }
        for (size_t kb = 0; kb < Kb; kb++) {
            uint32_t *blk = out + (bn * Kb + kb) * 16 * nb;
            for (size_t n0 = 0; n0 < nb; n0 += 16) {
                for (size_t t = 0; t < 16; t++) {
                    const size_t row = bn * nb + n0 + t, rr = row % VG_PACK_ROWS;
                    if (row >= N) {
                        r[t] = _mm512_setzero_si512();
                        continue;
                    }
                    if (trows) {
                        r[t] = _mm512_loadu_si512(
                            (const void *)(trows + (n0 + t) * TK + (j->kb0 + kb) * VG_QK));
                        continue;
                    }
                    const unsigned char *g = j->src + (row / VG_PACK_ROWS) * j->src_gb;
                    const size_t at = (j->kb0 + kb) * VG_PACK_ROWS + rr;
                    if (j->src_type == VG_WEIGHTS_BF16) {
                        r[t] = _mm512_loadu_si512((const void *)(g + at * VG_QK * 2));
                        continue;
                    }
                    const int8_t *q = (const int8_t *)g + at * VG_QK;
                    const uint16_t *sc =
                        (const uint16_t *)(const void *)(g + VG_PACK_ROWS * j->src_k);
                    const __m512 d = _mm512_set1_ps(_cvtsh_ss(sc[at]));
                    __m512 lo = _mm512_cvtepi32_ps(
                        _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)q)));
                    __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                        _mm_loadu_si128((const __m128i *)(const void *)(q + 16))));
                    r[t] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(hi, d), _mm512_mul_ps(lo, d));
                }
                transpose16(r);
                if (j->stream) /* 64-byte aligned; read back from memory */
                    for (size_t p = 0; p < 16; p++)
                        _mm512_stream_si512((void *)(blk + p * nb + n0), r[p]);
                else /* read back from the cache */
                    for (size_t p = 0; p < 16; p++)
                        _mm512_store_si512((void *)(blk + p * nb + n0), r[p]);
            }
        }
    }
    free(fbuf);
    free(rows16);
    _mm_sfence(); /* streamed stores are visible before the pool's region ends */
}

int vg_dnnl_mat_blocked(vg_model *m, const vg_tensor *t, size_t rows, size_t cols, int prim,
                        vg_mat *out)
{
    if (!m->dnnl || !vg_amx_ok() || cols % VG_QK != 0 || rows == 0)
        return 1;
    /* without a primitive (lm_head, only ever multiplied by a row or a few): one slab, one part */
    vg_dnnl_mat whole = {.rows = rows, .cols = cols, .nblk = VG_BLK_N, .plain = 1};
    whole.wbytes = (rows + VG_BLK_N - 1) / VG_BLK_N * VG_BLK_N * cols * 2;
    const vg_dnnl_mat *dm = prim ? choose_plain(m, rows, cols, 0) : &whole;
    if (!dm || dm->nblk != VG_BLK_N || rows % dm->rows != 0 || cols % dm->cols != 0)
        return 1; /* not the layout the tiles read: row groups */
    const size_t slabs = rows / dm->rows, kparts = cols / dm->cols;
    vg_mat b = {.type = VG_MAT_BLK,
                .rows = rows,
                .cols = cols,
                .slab_rows = dm->rows,
                .part_cols = dm->cols,
                .dnnl_plain = prim ? dm : NULL};
    const size_t each = vg_blk_bytes(&b);
    if (each != dm->wbytes)
        return 1;
    unsigned char *p = vg_model_alloc_weights(m, slabs * kparts * each);
    if (!p)
        return VG_ENOMEM;
    dnnl_job j = {.m = m, .dm = dm, .tsrc = t, .src_k = cols, .stream = 1};
    atomic_init(&j.failed, 0);
    j.parts = (size_t)VG_POOL_SPLIT * (size_t)vg_pool_threads(m->tpool);
    for (size_t sl = 0; sl < slabs; sl++)
        for (size_t c = 0; c < kparts; c++) {
            j.r0 = sl * dm->rows;
            j.kb0 = c * dm->cols / VG_QK;
            j.wei = p + (sl * kparts + c) * each;
            vg_pool_run(m->tpool, j.parts, unpack_blocked_task, &j);
        }
    if (atomic_load(&j.failed)) /* p stays the model's: the load fails, and frees it */
        return VG_ENOMEM;
    m->info.weight_bytes += slabs * kparts * each;
    b.p = p;
    *out = b;
    m->n_blk++;
    return 0;
}

/* Task i runs its share of the VG_DNNL_M-row blocks, oneDNN on this thread only, in a buffer slot
 * it claims (at most `slots` tasks run at once, one per pool participant, so one is always free).
 */
static void block_task(void *arg, size_t i)
{
    dnnl_job *j = arg;
    const vg_dnnl_mat *dm = j->dm;
    const size_t K = dm->cols, S = dm->rows, ld = j->ldy;
    const size_t es = dm->out_b16 ? 2 : 4; /* bytes per output element */
    const size_t b0 = j->blocks * i / j->parts, b1 = j->blocks * (i + 1) / j->parts;
    if (b0 == b1)
        return;
    const size_t slot = claim_slot(j->busy, j->slots);
    unsigned char *a = j->area + slot * j->per;
    uint16_t *xb = (uint16_t *)(void *)a;
    float *tmp = (float *)(void *)(a + ((dm->max_m * K * 2 + 63) & ~(size_t)63));
    void *scr = (unsigned char *)tmp + ((dm->max_m * S * 4 + 63) & ~(size_t)63);
    const size_t M = j->M;
    dnnl_engine_t eng = j->m->dnnl->eng;
    dnnl_stream_t st = NULL;
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL, mscr = NULL, mb = NULL;
    omp_set_num_threads(1); /* the pool provides the parallelism: no OpenMP team to spin */
    int ok = dnnl_stream_create(&st, eng, dnnl_stream_default_flags) == dnnl_success &&
             dnnl_memory_create(&ms, j->src_md, eng, xb) == dnnl_success &&
             dnnl_memory_create(&mw, &dm->wei_md, eng, j->wei) == dnnl_success &&
             dnnl_memory_create(&md, j->dst_md, eng, tmp) == dnnl_success &&
             dnnl_memory_create(&mscr, j->scr_md, eng, scr) == dnnl_success &&
             (dm->plain ||
              dnnl_memory_create(&mb, &dm->bias_md, eng,
                                 (void *)(uintptr_t)(j->b ? j->b : dm->zero_bias)) == dnnl_success);
    for (size_t b = b0; ok && b < b1; b++) {
        const size_t i0 = b * M, r = VG_MIN(M, j->n - i0);
        if (j->xb && r == M) {
            ok = dnnl_memory_set_data_handle(ms, (void *)(uintptr_t)(j->xb + i0 * K)) ==
                 dnnl_success;
        } else if (j->xb) { /* the last block, padded in the slot's buffer */
            memcpy(xb, j->xb + i0 * K, r * K * sizeof(uint16_t));
            memset(xb + r * K, 0, (M - r) * K * sizeof(uint16_t));
            ok = dnnl_memory_set_data_handle(ms, xb) == dnnl_success;
        } else {
            vg_to_bf16(j->x + i0 * K, r * K, xb);
            if (r < M)
                memset(xb + r * K, 0, (M - r) * K * sizeof(uint16_t));
        }
        unsigned char *yr = (unsigned char *)j->y + i0 * ld * es;
        void *dst = r == M && ld == S && !j->acc ? (void *)yr : (void *)tmp;
        ok = ok && dnnl_memory_set_data_handle(md, dst) == dnnl_success;
        ok = ok && exec_product(j->prim, st, ms, mw, md, mscr, mb);
        /* no bias in the primitive (text matrices, never bf16 output): added while the block's
         * rows are in cache */
        if (ok && !mb && dst == (void *)tmp)
            vg_add_rows(tmp, r, S, S, j->b);
        if (ok && dst == (void *)tmp)
            copy_out(yr, ld, (const unsigned char *)tmp, r, S, es, j->acc);
        else if (ok && !mb)
            vg_add_rows((float *)(void *)yr, r, ld, S, j->b);
    }
    dnnl_memory_t mems[5] = {mb, mscr, md, mw, ms};
    task_end(mems, 5, st, ok, &j->failed, &j->busy[slot]);
}

/* Task i runs its share of the job's units: unit u is panel u % panels (VG_DNNL_PANEL columns)
 * of row block u / panels, through the panel primitive into the slot's block buffer, then copied
 * (or added) into its columns of y while in cache. x is j->xb, padded to whole blocks. */
static void panel_task(void *arg, size_t i)
{
    dnnl_job *j = arg;
    const vg_dnnl_mat *dm = j->dm;
    const dnnl_var *v = j->pv;
    const size_t K = dm->cols, P = VG_DNNL_PANEL, np = dm->rows / P, ld = j->ldy, M = j->M;
    const size_t es = dm->out_b16 ? 2 : 4;
    const size_t u0 = j->units * i / j->parts, u1 = j->units * (i + 1) / j->parts;
    if (u0 == u1)
        return;
    const size_t slot = claim_slot(j->busy, j->slots);
    unsigned char *a = j->area + slot * j->per;
    float *tmp = (float *)(void *)(a + ((dm->max_m * K * 2 + 63) & ~(size_t)63));
    void *scr = (unsigned char *)tmp + ((dm->max_m * dm->rows * 4 + 63) & ~(size_t)63);
    const uint16_t *wei = j->wei;
    const float *bias = j->b ? j->b : dm->zero_bias;
    dnnl_engine_t eng = j->m->dnnl->eng;
    dnnl_stream_t st = NULL;
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL, mscr = NULL, mb = NULL;
    omp_set_num_threads(1); /* the pool provides the parallelism: no OpenMP team to spin */
    int ok = dnnl_stream_create(&st, eng, dnnl_stream_default_flags) == dnnl_success &&
             dnnl_memory_create(&ms, &v->src_md, eng, (void *)(uintptr_t)j->xb) == dnnl_success &&
             dnnl_memory_create(&mw, &v->wei_md, eng, (void *)(uintptr_t)wei) == dnnl_success &&
             dnnl_memory_create(&md, &v->dst_md, eng, tmp) == dnnl_success &&
             dnnl_memory_create(&mscr, &v->scr_md, eng, scr) == dnnl_success &&
             (dm->plain ||
              dnnl_memory_create(&mb, &v->bias_md, eng, (void *)(uintptr_t)bias) == dnnl_success);
    for (size_t u = u0; ok && u < u1; u++) {
        const size_t b = u / np, p = u % np, i0 = b * M, r = VG_MIN(M, j->n - i0);
        /* panel-major whole blocks straight into place (a panel's rows are dense there) */
        unsigned char *pmd = j->pm ? (unsigned char *)j->y + (p * j->n + i0) * P * es : NULL;
        void *dst = pmd && r == M && !(dm->plain && j->b) ? (void *)pmd : (void *)tmp;
        ok =
            dnnl_memory_set_data_handle(md, dst) == dnnl_success &&
            dnnl_memory_set_data_handle(ms, (void *)(uintptr_t)(j->xb + i0 * K)) == dnnl_success &&
            dnnl_memory_set_data_handle(mw, (void *)(uintptr_t)(wei + p * P * K)) == dnnl_success &&
            (!mb ||
             dnnl_memory_set_data_handle(mb, (void *)(uintptr_t)(bias + p * P)) == dnnl_success);
        ok = ok && exec_product(v->prim, st, ms, mw, md, mscr, mb);
        if (ok && dst == (void *)tmp && !mb && j->b) /* plain: the bias, while in cache */
            vg_add_rows(tmp, r, P, P, j->b + p * P);
        if (ok && pmd && dst == (void *)tmp)
            copy_out(pmd, P, (const unsigned char *)tmp, r, P, es, 0);
        else if (ok && !pmd)
            copy_out((unsigned char *)j->y + (i0 * ld + p * P) * es, ld, (const unsigned char *)tmp,
                     r, P, es, j->acc);
    }
    dnnl_memory_t mems[5] = {mb, mscr, md, mw, ms};
    task_end(mems, 5, st, ok, &j->failed, &j->busy[slot]);
}

typedef struct widen_job {
    const vg_mat *w;
    size_t g_first, groups, parts;
    unsigned char *out;
} widen_job;

/* GGUF: groups [groups * i / parts, ...) of the slab widened to kernels.h BF16 groups. */
static void widen_task(void *arg, size_t i)
{
    const widen_job *j = arg;
    const size_t gb = vg_pack_group_bytes_bf16(j->w->cols);
    for (size_t g = j->groups * i / j->parts; g < j->groups * (i + 1) / j->parts; g++)
        vg_kq_group_to_bf16_level(vg_isa_level(), j->w->gtype,
                                  (const unsigned char *)j->w->p +
                                      (j->g_first + g) * j->w->group_bytes,
                                  j->w->cols, (uint16_t *)(void *)(j->out + g * gb));
}

/* x converted to bf16 once for every slab (and part): rows [r0, r1) of xb, zero past x's n rows
 * (the last block's padding). By parts of Kc columns: part c of row r at xb + (c * rows + r) * Kc,
 * each part a dense rows x Kc matrix (oneDNN's brgemm takes no strided source). */
typedef struct xcvt_job {
    const float *x;
    const uint16_t *xb_in; /* instead of x: rows already in bf16, copied */
    uint16_t *xb;
    size_t K, n;
    size_t Kc, rows; /* columns per part (K: one part), rows of xb (whole blocks) */
} xcvt_job;

static void xcvt_range(void *c, size_t r0, size_t r1)
{
    const xcvt_job *j = c;
    for (size_t r = r0; r < r1; r++)
        for (size_t k0 = 0; k0 < j->K; k0 += j->Kc) {
            uint16_t *d = j->xb + ((k0 / j->Kc) * j->rows + r) * j->Kc;
            if (r < j->n && j->xb_in)
                memcpy(d, j->xb_in + r * j->K + k0, j->Kc * sizeof(uint16_t));
            else if (r < j->n)
                vg_to_bf16(j->x + r * j->K + k0, j->Kc, d);
            else
                memset(d, 0, j->Kc * sizeof(uint16_t));
        }
}

/* 1 when a call of n rows goes by panels: where the weights allow (dm->pnb) and, from
 * VG_DNNL_PANEL_MIN_ROWS rows, when the panels' outputs (copied out of the block buffers: n x rows
 * x es bytes) are at most a quarter of the weights' bytes or added to y anyway (acc). Measured on
 * the Xeon of 2026-12-07 (1 thread, weights from memory): a 784-row product with K = 1024 gains
 * 10-12 % from panels but loses it to the copy of its output; with K = 4096, or 196 rows, the
 * gain is 20-40 %. The environment variable VG_DNNL_PANELS=0 or 1 turns panels off, or on wherever
 * the weights allow (tests force both paths with it). */
static int use_panels(const vg_dnnl_mat *dm, size_t n, int acc)
{
    if (!dm->pnb)
        return 0;
    size_t force;
    if (env_bytes("VG_DNNL_PANELS", &force))
        return force != 0;
    const size_t es = dm->out_b16 ? 2 : 4;
    return n >= VG_DNNL_PANEL_MIN_ROWS && (acc || n * es * 4 <= dm->cols * 2);
}

/* vg_dnnl_matmul, vg_dnnl_matmul_panels: pm writes y panel-major (panels required: 1 when the
 * call cannot go by panels, nothing written). */
static int matmul_call(vg_model *m, const float *x, const uint16_t *xb, size_t n, const vg_mat *w,
                       const float *b, void *y, int acc, int pm, float *ws)
{
    const vg_dnnl_mat *dm = w->dnnl ? w->dnnl : w->dnnl_plain;
    if (acc && dm->out_b16)
        return VG_EINVAL;
    unsigned char *base = (unsigned char *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    dnnl_job j = {.m = m,
                  .w = w,
                  .dm = dm,
                  .x = x,
                  .y = y,
                  .b = b,
                  .ldy = w->rows,
                  .n = n,
                  .wei = dm->wei,
                  .acc = acc,
                  .pm = pm};
    j.slots = (size_t)VG_MIN(VG_MIN(dm->threads, vg_pool_threads(m->tpool)), VG_DNNL_SLOTS);
    j.parts = j.slots > 1 ? VG_POOL_SPLIT * j.slots : 1;
    vg_pool *pool = j.slots > 1 ? m->tpool : NULL;
    const size_t n_parts = j.parts;
    unsigned char *groups = NULL;          /* GGUF: one slab widened to BF16 groups */
    const int blk = w->type == VG_MAT_BLK; /* kept blocked: read in place, nothing unpacked */
    if (dm->plain && !blk) {
        j.wei = base;
        base += ALIGN64(dm->wbytes);
        if (w->type == VG_MAT_GGUF) {
            groups = base;
            base += ALIGN64(slab_groups_bytes(dm, w));
        }
    }
    j.area = base;
    j.per = per_thread_bytes(dm);
    /* blocks as large as VG_DNNL_MAX_M (oneDNN streams the weights once per block), as many per
     * participant, the rows split evenly (M a multiple of 4, so that few primitives serve every
     * row count, and a 448x448 pair's 784 rows are 4 x 196 with no partial block to copy out);
     * below VG_DNNL_M rows a block the load-time primitive */
    j.M = VG_DNNL_M;
    j.prim = dm->prim;
    j.src_md = &dm->src_md;
    j.dst_md = &dm->dst_md;
    j.scr_md = &dm->scr_md;
    if (pm ||
        use_panels(dm, n, acc)) { /* one block per max_m rows: the panels split across the pool */
        const size_t PM = block_rows(n, dm->max_m, 1);
        pthread_mutex_lock(&m->dnnl->mu);
        j.pv = var_get(m->dnnl, (vg_dnnl_mat *)(uintptr_t)dm, PM, 0, 1);
        pthread_mutex_unlock(&m->dnnl->mu);
        if (j.pv)
            j.M = PM;
    }
    const size_t Kc = dm->cols, kparts = w->cols / Kc;     /* parts of K (text matrices) */
    if (pm && (!j.pv || dm->rows < w->rows || kparts > 1)) /* panel-major: by panels, one slab */
        return 1;
    size_t M = block_rows(n, dm->max_m, j.slots);
    if (!j.pv && M > VG_DNNL_M) { /* whole products: the primitive for blocks of M rows */
        pthread_mutex_lock(&m->dnnl->mu);
        /* dm is the engine's (vg_dnnl.mats), shared read-only by calls except for var[] */
        const dnnl_var *v = var_get(m->dnnl, (vg_dnnl_mat *)(uintptr_t)dm, M, 0, 0);
        if (!v && M > VG_DNNL_MAX_M) /* every large size taken: blocks of at most 256 rows */
            v = var_get(m->dnnl, (vg_dnnl_mat *)(uintptr_t)dm,
                        M = block_rows(n, VG_DNNL_MAX_M, j.slots), 0, 0);
        pthread_mutex_unlock(&m->dnnl->mu);
        if (v) {
            j.M = M;
            j.prim = v->prim;
            j.src_md = &v->src_md;
            j.dst_md = &v->dst_md;
            j.scr_md = &v->scr_md;
        }
    }
    j.blocks = (n + j.M - 1) / j.M;
    j.units = j.pv ? j.blocks * (dm->rows / VG_DNNL_PANEL) : 0;
    const size_t slabs = dm->plain ? w->rows / dm->rows : 1;
    /* an unpacked slab stays in the cache for the products that read it right after, where it
     * fits in half of it (on the Xeon of 2026-12-07, 504 MiB of L3: 1-thread prefill 235-239 ->
     * 249-256 tok/s bf16, 248 -> 266 q8_0); else streaming stores keep it from evicting the
     * activations */
    j.stream = !(m->dnnl->llc && dm->wbytes <= m->dnnl->llc / 2);
    j.xb = xb;
    /* x in bf16 once for every slab, part or panel (padded to whole blocks), after the blocks'
     * buffers */
    const size_t xrows = j.blocks * j.M;
    if ((slabs > 1 && !xb) || kparts > 1 || (j.pv && (!xb || n % j.M != 0))) {
        uint16_t *once = (uint16_t *)(void *)(j.area + j.slots * j.per);
        xcvt_job xc = {
            .x = x, .xb_in = xb, .xb = once, .K = w->cols, .n = n, .Kc = Kc, .rows = xrows};
        vg_pool_for(pool, xrows, 16, xcvt_range, &xc);
        j.xb = once;
    }
    const uint16_t *xparts = j.xb;
    atomic_init(&j.failed, 0);
    for (size_t sl = 0; sl < slabs && !atomic_load(&j.failed); sl++) {
        const size_t r0 = sl * dm->rows;
        if (dm->plain && !blk) { /* this slab's rows */
            j.src = (const unsigned char *)w->p + r0 / VG_PACK_ROWS * w->group_bytes;
            j.src_gb = w->group_bytes;
            j.src_type = w->type;
            j.src_k = w->cols;
            if (groups) {
                widen_job wj = {.w = w,
                                .g_first = r0 / VG_PACK_ROWS,
                                .groups = (dm->rows + VG_PACK_ROWS - 1) / VG_PACK_ROWS,
                                .parts = n_parts,
                                .out = groups};
                vg_pool_run(pool, wj.parts, widen_task, &wj);
                j.src = groups;
                j.src_gb = vg_pack_group_bytes_bf16(w->cols);
                j.src_type = VG_WEIGHTS_BF16;
            }
        }
        /* by parts of K (text matrices wider than VG_DNNL_KPART): the first part's product
         * written (or added, acc) into y, the others added */
        for (size_t c = 0; c < kparts && !atomic_load(&j.failed); c++) {
            for (int k = 0; k < VG_DNNL_SLOTS; k++)
                atomic_init(&j.busy[k], 0);
            if (blk) { /* this slab's part, in place */
                j.wei = (void *)(uintptr_t)vg_blk_part(w, sl, c);
            } else if (dm->plain) { /* this slab's rows, this part's columns, unpacked */
                j.kb0 = c * Kc / VG_QK;
                j.parts = n_parts;
                vg_pool_run(pool, j.parts, dm->nblk ? unpack_blocked_task : unpack_task, &j);
            }
            if (dm->plain) {
                j.y = (float *)y + r0; /* plain: float32 output */
                j.b = b && c == 0 ? b + r0 : NULL;
                j.acc = c == 0 ? acc : 1;
                j.xb = xparts + c * xrows * Kc; /* part c of x (one part: x itself) */
            }
            j.parts = VG_MIN(n_parts, j.pv ? j.units : j.blocks);
            vg_pool_run(pool, j.parts, j.pv ? panel_task : block_task, &j);
        }
    }
    return atomic_load(&j.failed) ? VG_EIO : 0;
}

int vg_dnnl_matmul(vg_model *m, const float *x, const uint16_t *xb, size_t n, const vg_mat *w,
                   const float *b, void *y, int acc, float *ws)
{
    return matmul_call(m, x, xb, n, w, b, y, acc, 0, ws);
}

int vg_dnnl_panels_ok(vg_model *m, const vg_mat *w, size_t n)
{
    const vg_dnnl_mat *dm = w->dnnl_plain;
    if (!m->dnnl || !dm || w->dnnl || !dm->pnb || dm->rows < w->rows || dm->cols < w->cols ||
        n == 0 || vg_isa_level() < VG_ISA_AVX512)
        return 0;
    pthread_mutex_lock(&m->dnnl->mu);
    const dnnl_var *v =
        var_get(m->dnnl, (vg_dnnl_mat *)(uintptr_t)dm, block_rows(n, dm->max_m, 1), 0, 1);
    pthread_mutex_unlock(&m->dnnl->mu);
    return v != NULL;
}

int vg_dnnl_matmul_panels(vg_model *m, const uint16_t *xb, size_t n, const vg_mat *w, float *y,
                          float *ws)
{
    const int rc = matmul_call(m, NULL, xb, n, w, NULL, y, 0, 1, ws);
    return rc == 1 ? VG_EIO : rc; /* vg_dnnl_panels_ok said it would go */
}

/* ---- attention through oneDNN: S = Q K^T and O = P V per head in bf16 (AMX where present) ---- */

static int make_mm(vg_dnnl *d, const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b,
                   const dnnl_memory_desc_t *c, dnnl_primitive_desc_t *pd, dnnl_primitive_t *prim,
                   dnnl_memory_desc_t *scr)
{
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    const char *impl = NULL;
    int ok =
        dnnl_matmul_desc_init(&desc, a, b, NULL, c) == dnnl_success &&
        dnnl_primitive_attr_create(&attr) == dnnl_success &&
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success &&
        pd_create(pd, &desc, attr, d->eng, VG_DNNL_NTHR_ATTN) == dnnl_success &&
        dnnl_primitive_desc_query(*pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
        impl && strncmp(impl, "brg", 3) == 0 &&
        prim_create(prim, *pd, VG_DNNL_NTHR_ATTN) == dnnl_success;
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (ok)
        *scr = *dnnl_primitive_desc_query_md(*pd, dnnl_query_scratchpad_md, 0);
    return ok;
}

/* The primitives of shape (n rows, ctx keys, head size dh), made on first use; NULL when oneDNN
 * has no brgemm kernel for it or VG_DNNL_ATTN shapes are taken. Any thread. */
static const attn_prim *attn_prim_get(vg_dnnl *d, size_t n, size_t ctx, size_t dh)
{
    attn_prim *ap = NULL;
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->n_attn && !ap; i++)
        if (d->attn[i]->n == n && d->attn[i]->ctx == ctx && d->attn[i]->dh == dh)
            ap = d->attn[i];
    if (!ap && d->n_attn < VG_DNNL_ATTN && (ap = calloc(1, sizeof(*ap))) != NULL) {
        ap->n = n;
        ap->ctx = ctx;
        ap->dh = dh;
        dnnl_dims_t qd = {(dnnl_dim_t)n, (dnnl_dim_t)dh}, kd = {(dnnl_dim_t)dh, (dnnl_dim_t)ctx};
        dnnl_dims_t sd = {(dnnl_dim_t)n, (dnnl_dim_t)ctx}, vd = {(dnnl_dim_t)ctx, (dnnl_dim_t)dh};
        int ok =
            dnnl_memory_desc_init_by_tag(&ap->q_md, 2, qd, dnnl_bf16, dnnl_ab) == dnnl_success &&
            /* K^T {dh, ctx} from K stored [ctx][dh] */
            dnnl_memory_desc_init_by_tag(&ap->k_md, 2, kd, dnnl_bf16, dnnl_ba) == dnnl_success &&
            dnnl_memory_desc_init_by_tag(&ap->s_md, 2, sd, dnnl_f32, dnnl_ab) == dnnl_success &&
            dnnl_memory_desc_init_by_tag(&ap->p_md, 2, sd, dnnl_bf16, dnnl_ab) == dnnl_success &&
            dnnl_memory_desc_init_by_tag(&ap->v_md, 2, vd, dnnl_bf16, dnnl_ab) == dnnl_success &&
            dnnl_memory_desc_init_by_tag(&ap->o_md, 2, qd, dnnl_f32, dnnl_ab) == dnnl_success &&
            make_mm(d, &ap->q_md, &ap->k_md, &ap->s_md, &ap->qk_pd, &ap->qk, &ap->qk_scr_md) &&
            make_mm(d, &ap->p_md, &ap->v_md, &ap->o_md, &ap->pv_pd, &ap->pv, &ap->pv_scr_md);
        if (ok) {
            ap->scr_bytes = VG_MAX(dnnl_memory_desc_get_size(&ap->qk_scr_md),
                                   dnnl_memory_desc_get_size(&ap->pv_scr_md));
            d->attn[d->n_attn++] = ap;
        } else {
            attn_free(ap);
            ap = NULL;
        }
    }
    pthread_mutex_unlock(&d->mu);
    return ap;
}

/* 2^t for t <= 0 (up to rounding), to 2.7e-6 relative: t clamped to -126 (below, 2^t is under
 * float's normal range and counts as 2^-126), f = t - floor(t) in [0, 1) in one VREDUCEPS, 2^f by a
 * degree-4 minimax polynomial (the one of 2^g on [-1/2, 1/2] shifted by 1/2 and scaled by the
 * square root of 2), then VSCALEFPS multiplies by 2^floor(t) itself. The probabilities are rounded
 * to bf16 (2^-9 relative). 7 vector operations per 16 values where rounding to the nearest integer,
 * subtracting it and masking the underflow took 9 (and e^x to float32 accuracy 11). Degree 3
 * (7.5e-5) was tried: it moved the golden bf16 logits' error 2.80e-2 -> 3.06e-2. */
__attribute__((target("avx512f,avx512dq"))) static inline __m512 exp2_16_le0(__m512 t)
{
    t = _mm512_max_ps(t, _mm512_set1_ps(-126.0f));
    const __m512 f = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 p = _mm512_fmadd_ps(f, _mm512_set1_ps(0.013534165918827057f),
                               _mm512_set1_ps(0.05201146751642227f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.2414427399635315f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6930038332939148f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000026226043701f));
    return _mm512_scalef_ps(p, t);
}

/* p[0..vis) = bf16(e^(scale * s - max)), zero from vis on; returns 1 / the sum of those bf16
 * values (the caller scales the row's output PV by it: the normalization costs dh multiplies
 * instead of a third pass over the row, and the weights PV applied then sum to 1 up to float
 * rounding). The exponent is taken in base 2: scale * log2(e) * s - scale * log2(e) * max in one
 * fused multiply-subtract. 32 values per step: one conversion of two vectors to bf16, and the sum
 * as their dot product with ones (VDPBF16PS: exact products, float32 sums). */
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16"))) static float
softmax_bf16(const float *s, size_t vis, size_t ctx, float scale, uint16_t *p)
{
    __m512 mx = _mm512_set1_ps(-INFINITY), m1 = mx, m2 = mx, m3 = mx;
    size_t i = 0;
    for (; i + 64 <= vis; i += 64) { /* four chains: the max's latency, not the loads, bound one */
        mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + i));
        m1 = _mm512_max_ps(m1, _mm512_loadu_ps(s + i + 16));
        m2 = _mm512_max_ps(m2, _mm512_loadu_ps(s + i + 32));
        m3 = _mm512_max_ps(m3, _mm512_loadu_ps(s + i + 48));
    }
    mx = _mm512_max_ps(_mm512_max_ps(mx, m1), _mm512_max_ps(m2, m3));
    for (; i + 16 <= vis; i += 16)
        mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + i));
    const __mmask16 tail = (__mmask16)((1u << (vis - i)) - 1u);
    if (tail)
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail, s + i));
    const float k = scale * 1.44269504088896341f;
    const __m512 sc = _mm512_set1_ps(k);
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx) * k);
    const __m512bh one = (__m512bh)_mm512_set1_epi16(0x3f80); /* bf16 1.0 */
    __m512 sum = _mm512_setzero_ps(), sum1 = sum;
    for (i = 0; i + 64 <= vis; i += 64) { /* two sums: VDPBF16PS's latency */
        __m512bh e0 =
            _mm512_cvtne2ps_pbh(exp2_16_le0(_mm512_fmsub_ps(_mm512_loadu_ps(s + i + 16), sc, m)),
                                exp2_16_le0(_mm512_fmsub_ps(_mm512_loadu_ps(s + i), sc, m)));
        __m512bh e1 =
            _mm512_cvtne2ps_pbh(exp2_16_le0(_mm512_fmsub_ps(_mm512_loadu_ps(s + i + 48), sc, m)),
                                exp2_16_le0(_mm512_fmsub_ps(_mm512_loadu_ps(s + i + 32), sc, m)));
        _mm512_storeu_si512((void *)(p + i), (__m512i)e0);
        _mm512_storeu_si512((void *)(p + i + 32), (__m512i)e1);
        sum = _mm512_dpbf16_ps(sum, e0, one);
        sum1 = _mm512_dpbf16_ps(sum1, e1, one);
    }
    for (; i + 16 <= vis; i += 16) {
        __m256bh e =
            _mm512_cvtneps_pbh(exp2_16_le0(_mm512_fmsub_ps(_mm512_loadu_ps(s + i), sc, m)));
        _mm256_storeu_si256((__m256i *)(void *)(p + i), (__m256i)e);
        sum = _mm512_add_ps(sum, vg_bf16x16_ps((__m256i)e));
    }
    if (tail) {
        __m256bh e = _mm512_cvtneps_pbh(
            exp2_16_le0(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(tail, s + i), sc, m)));
        _mm256_mask_storeu_epi16(p + i, tail, (__m256i)e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(tail, vg_bf16x16_ps((__m256i)e)));
    }
    if (ctx > vis)
        memset(p + vis, 0, (ctx - vis) * sizeof(uint16_t));
    return 1.0f / _mm512_reduce_add_ps(_mm512_add_ps(sum, sum1));
}

/* dst[0..n) = src[0..n) * k, n a multiple of 16. */
__attribute__((target("avx512f"))) static void scale_row(float *dst, const float *src, size_t n,
                                                         float k)
{
    const __m512 kv = _mm512_set1_ps(k);
    for (size_t i = 0; i < n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_loadu_ps(src + i), kv));
}

/* scale_row rounded to bf16 (nearest even, as vg_to_bf16). */
__attribute__((target("avx512f,avx512bf16,avx512vl"))) static void
scale_row_b16(uint16_t *dst, const float *src, size_t n, float k)
{
    const __m512 kv = _mm512_set1_ps(k);
    for (size_t i = 0; i < n; i += 16)
        _mm256_storeu_si256((__m256i *)(void *)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(
                                                              _mm512_loadu_ps(src + i), kv)));
}

typedef struct attn_job {
    const vg_attn_args *a;
    const attn_prim *ap;
    dnnl_engine_t eng;
    size_t n, ctx;          /* padded rows per head and keys (zero rows beyond a->n, a->ctx) */
    size_t qr, nb;          /* the primitives' rows: each head's n rows are nb blocks of qr */
    uint16_t *qb, *kb, *vb; /* bf16 [heads][n][dh], [kv_heads][ctx][dh] twice */
    uint16_t *kp, *vp;      /* the fused AMX kernel's: kb and vb in its tiles' layouts */
    unsigned char *area;    /* per running task: per bytes each, claimed through busy[] */
    size_t per, slots;
    atomic_int busy[VG_DNNL_SLOTS];
    atomic_int failed;
} attn_job;

/* out[0, dh) = bf16 of the row (float f, or bf16 b when set) rotated by table rows c, s with
 * vg_rope_apply's products and sums (no fused multiply-add, so bit for bit its result), rounded as
 * vg_to_bf16; dh a multiple of 32. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void
rope_row_b16(const float *f, const uint16_t *b, const float *c, const float *s, size_t dh,
             uint16_t *out)
{
    const size_t half = dh / 2;
    for (size_t j = 0; j < half; j += 16) {
        const __m512 x0 = b ? vg_load_bf16x16(b + j) : _mm512_loadu_ps(f + j);
        const __m512 x1 = b ? vg_load_bf16x16(b + half + j) : _mm512_loadu_ps(f + half + j);
        const __m512 lo = _mm512_sub_ps(_mm512_mul_ps(x0, _mm512_loadu_ps(c + j)),
                                        _mm512_mul_ps(x1, _mm512_loadu_ps(s + j)));
        const __m512 hi = _mm512_add_ps(_mm512_mul_ps(x1, _mm512_loadu_ps(c + half + j)),
                                        _mm512_mul_ps(x0, _mm512_loadu_ps(s + half + j)));
        _mm256_storeu_si256((__m256i *)(void *)(out + j), (__m256i)_mm512_cvtneps_pbh(lo));
        _mm256_storeu_si256((__m256i *)(void *)(out + half + j), (__m256i)_mm512_cvtneps_pbh(hi));
    }
}

/* out[0, dh) = bf16 of float row f (vg_to_bf16's rounding); dh a multiple of 16. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void
row_b16(const float *f, size_t dh, uint16_t *out)
{
    for (size_t j = 0; j < dh; j += 16)
        _mm256_storeu_si256((__m256i *)(void *)(out + j),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(f + j)));
}

/* Rows [r0, r1) of the bf16 copies: the query rows of every head, then the keys, then the values
 * (padding rows zero); queries and keys rotated first when a->rope_cs is set. Each section is
 * walked head by head, row by row (one division where the range starts). */
static void attn_cvt_range(void *c, size_t r0, size_t r1)
{
    const attn_job *j = c;
    const vg_attn_args *a = j->a;
    const size_t dh = a->dh, nq = a->heads * j->n, nk = a->kb ? 0 : a->kv_heads * j->ctx;
    for (size_t u = r0; u < r1;) {
        /* the section u is in: 0 queries, 1 keys, 2 values */
        const int sec = u < nq ? 0 : u < nq + nk ? 1 : 2;
        const size_t first = sec == 0 ? 0 : sec == 1 ? nq : nq + nk;
        const size_t per = sec == 0 ? j->n : j->ctx, lim = sec == 0 ? a->n : a->ctx;
        const size_t end = VG_MIN(r1, sec == 0 ? nq : sec == 1 ? nq + nk : nq + 2 * nk);
        const size_t hs = sec == 0 ? a->q_hs : sec == 1 ? a->k_hs : a->v_hs;
        const size_t ld = sec == 0 ? a->ldq : sec == 1 ? a->ldk : a->ldv;
        const float *src = sec == 0 ? a->q : sec == 1 ? a->k : a->v;
        const uint16_t *src16 = sec == 0 ? a->q16 : sec == 1 ? a->k16 : a->v16;
        uint16_t *dst = (sec == 0 ? j->qb : sec == 1 ? j->kb : j->vb) + (u - first) * dh;
        const int rot = a->rope_cs && sec < 2;
        size_t h = (u - first) / per, i = (u - first) % per;
        for (; u < end; u++, dst += dh) {
            const size_t off = h * hs + i * ld; /* of the source row, in elements of its type */
            if (i >= lim)
                memset(dst, 0, dh * sizeof(uint16_t));
            else if (rot)
                rope_row_b16(a->q16 ? NULL : src + off, a->q16 ? src16 + off : NULL,
                             a->rope_cs + i * dh, a->rope_sn + i * dh, dh, dst);
            else if (a->q16)
                memcpy(dst, src16 + off, dh * sizeof(uint16_t));
            else
                row_b16(src + off, dh, dst);
            if (++i == per) {
                i = 0;
                h++;
            }
        }
    }
}

/* The bf16 keys (v = 0) or values (v = 1) of KV head kvh: the caller's bf16 cache in place, or
 * the job's copies. */
static const uint16_t *kv_rows(const attn_job *j, int v, size_t kvh)
{
    const vg_attn_args *a = j->a;
    if (a->kb)
        return v ? a->vb + kvh * a->v_hs : a->kb + kvh * a->k_hs;
    return (v ? j->vb : j->kb) + kvh * j->ctx * a->dh;
}

/* Task t: head h = t / nb, query block qb = t % nb: S = Q K_j^T over the block's qr rows, P =
 * softmax rows (causal limit), O = P V_j into a->o. */
static void attn_head_task(void *arg, size_t t)
{
    attn_job *j = arg;
    const vg_attn_args *a = j->a;
    const attn_prim *ap = j->ap;
    const size_t h = t / j->nb, r0 = t % j->nb * j->qr;
    const size_t n = j->qr, ctx = j->ctx, dh = a->dh, kvh = h / (a->heads / a->kv_heads);
    const size_t slot = claim_slot(j->busy, j->slots);
    unsigned char *ar = j->area + slot * j->per;
    float *s = (float *)(void *)ar;
    uint16_t *p = (uint16_t *)(void *)(ar + ((n * ctx * 4 + 63) & ~(size_t)63));
    float *o = (float *)(void *)((unsigned char *)p + ((n * ctx * 2 + 63) & ~(size_t)63));
    float *inv = (float *)(void *)((unsigned char *)o + ((n * dh * 4 + 63) & ~(size_t)63));
    void *scr = (unsigned char *)inv + ((n * 4 + 63) & ~(size_t)63);
    dnnl_stream_t st = NULL;
    dnnl_memory_t mq = NULL, mk = NULL, ms = NULL, mp = NULL, mv = NULL, mo = NULL, mscr = NULL,
                  mscr2 = NULL;
    omp_set_num_threads(1); /* the pool provides the parallelism */
    int ok =
        dnnl_stream_create(&st, j->eng, dnnl_stream_default_flags) == dnnl_success &&
        dnnl_memory_create(&mq, &ap->q_md, j->eng, j->qb + (h * j->n + r0) * dh) == dnnl_success &&
        dnnl_memory_create(&mk, &ap->k_md, j->eng, (void *)(uintptr_t)kv_rows(j, 0, kvh)) ==
            dnnl_success &&
        dnnl_memory_create(&ms, &ap->s_md, j->eng, s) == dnnl_success &&
        dnnl_memory_create(&mp, &ap->p_md, j->eng, p) == dnnl_success &&
        dnnl_memory_create(&mv, &ap->v_md, j->eng, (void *)(uintptr_t)kv_rows(j, 1, kvh)) ==
            dnnl_success &&
        dnnl_memory_create(&mo, &ap->o_md, j->eng, o) == dnnl_success &&
        dnnl_memory_create(&mscr, &ap->qk_scr_md, j->eng, scr) == dnnl_success &&
        dnnl_memory_create(&mscr2, &ap->pv_scr_md, j->eng, scr) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t qa[4] = {{DNNL_ARG_SRC, mq},
                                 {DNNL_ARG_WEIGHTS, mk},
                                 {DNNL_ARG_DST, ms},
                                 {DNNL_ARG_SCRATCHPAD, mscr}};
        ok = dnnl_primitive_execute(ap->qk, st, 4, qa) == dnnl_success &&
             dnnl_stream_wait(st) == dnnl_success;
    }
    for (size_t i = 0; ok && i < n; i++) {
        const size_t gi = r0 + i;
        size_t vis = gi >= a->n ? 1 : a->p0 < 0 ? a->ctx : (size_t)a->p0 + gi + 1;
        inv[i] = softmax_bf16(s + i * ctx, vis, ctx, a->scale, p + i * ctx);
    }
    if (ok) {
        dnnl_exec_arg_t pa[4] = {{DNNL_ARG_SRC, mp},
                                 {DNNL_ARG_WEIGHTS, mv},
                                 {DNNL_ARG_DST, mo},
                                 {DNNL_ARG_SCRATCHPAD, mscr2}};
        ok = dnnl_primitive_execute(ap->pv, st, 4, pa) == dnnl_success &&
             dnnl_stream_wait(st) == dnnl_success;
    }
    for (size_t i = 0; ok && i < n && r0 + i < a->n; i++)
        if (a->ob)
            scale_row_b16(a->ob + (r0 + i) * a->ldo + h * a->o_hs, o + i * dh, dh, inv[i]);
        else
            scale_row(a->o + (r0 + i) * a->ldo + h * a->o_hs, o + i * dh, dh, inv[i]);
    dnnl_memory_t mems[8] = {mq, mk, ms, mp, mv, mo, mscr, mscr2};
    task_end(mems, 8, st, ok, &j->failed, &j->busy[slot]);
}

/* ---- the same attention fused in AMX tiles (full attention: every query row sees every key) ----
 *
 * oneDNN's two products per (head, query block) each repack their right-hand side (K^T, V) and
 * write or read the whole block's scores through L2; a bf16 1-thread vision pair spent 147 ms of
 * 720 in the attention, its products at 650 (QK^T, K = dh = 64) and 900 GFLOP/s (PV). Here the
 * keys and values of each KV head are put into the tiles' layouts once (amx_pack_range), and each
 * 32-row query block runs S = Q K^T into a score buffer, the same softmax_bf16, and O = P V in
 * accumulator tiles, the rows then scaled by 1 / sum as before: the same bf16 operands, float32
 * sums and softmax, so the same numbers up to the order of the sums inside the tiles. The blocks
 * are software-pipelined (amx_attn_task). Head sizes 32 and 64 (at most four 16-column output
 * tiles beside the operand tiles). */

#define AMX_ATTN_QB 8 /* 32-row query blocks per task at most */

/* 1 when vg_dnnl_attn runs a's attention in the fused AMX kernel. VG_AMX_ATTN=0 turns it off
 * (oneDNN's products then), as VG_AMX=0 turns off every AMX kernel. */
static int amx_attn_ok(const vg_attn_args *a)
{
    const char *e = getenv("VG_AMX_ATTN");
    return a->p0 < 0 && !a->kb && (a->dh == 32 || a->dh == 64) && a->heads == a->kv_heads &&
           vg_amx_ok() && !(e && strcmp(e, "0") == 0);
}

/* Units [u0, u1) of the packing: unit u is keys [32 c, 32 c + 32) of KV head h = u / (ctx / 32),
 * c = u % (ctx / 32). Keys: for each 16-key block, [dh / 2 pairs of dims][16 keys][2] (a tile's
 * rows are pairs of dims, its 64 bytes 16 keys: the right-hand side of Q K^T for 32 dims). Values:
 * for each 16-dim group, [16 pairs of keys][16 dims][2] (the right-hand side of P V for 32 keys).
 */
__attribute__((target("avx512f,avx512bw"))) static void amx_pack_range(void *c, size_t u0,
                                                                       size_t u1)
{
    const attn_job *j = c;
    const size_t dh = j->a->dh, chunks = j->ctx / 32, half = dh / 2;
    const __m512i rows =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)half));
    /* 16-bit lanes a0 b0 a1 b1 ... of a (lanes 0-15) and b (16-31) */
    const __m512i inter =
        _mm512_setr_epi32(0x00100000, 0x00110001, 0x00120002, 0x00130003, 0x00140004, 0x00150005,
                          0x00160006, 0x00170007, 0x00180008, 0x00190009, 0x001a000a, 0x001b000b,
                          0x001c000c, 0x001d000d, 0x001e000e, 0x001f000f);
    for (size_t u = u0; u < u1; u++) {
        const size_t h = u / chunks, ch = u % chunks, off = h * j->ctx * dh;
        for (size_t kb = 2 * ch; kb < 2 * ch + 2; kb++) { /* keys: 16 at a time, pair by pair */
            const int *src = (const int *)(const void *)(j->kb + off + kb * 16 * dh);
            int *dst = (int *)(void *)(j->kp + off + kb * 16 * dh);
            for (size_t t = 0; t < half; t++)
                _mm512_storeu_si512(dst + t * 16, _mm512_i32gather_epi32(rows, src + t, 4));
        }
        const uint16_t *v = j->vb + off + ch * 32 * dh;
        uint16_t *vd = j->vp + off + ch * 32 * dh;
        for (size_t pr = 0; pr < 16; pr++) /* values: two keys' rows interleaved */
            for (size_t g = 0; g < dh / 16; g++) {
                const __m256i lo =
                    _mm256_loadu_si256((const __m256i *)(const void *)(v + 2 * pr * dh + g * 16));
                const __m256i hi = _mm256_loadu_si256(
                    (const __m256i *)(const void *)(v + (2 * pr + 1) * dh + g * 16));
                const __m512i ab = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                _mm512_storeu_si512((void *)(vd + (g * 16 + pr) * 32),
                                    _mm512_permutexvar_epi16(inter, ab));
            }
    }
}

/* Q K^T for key blocks [k0, k1) (16 keys each) of the 32 query rows in tiles 0-3 (16 rows x 32
 * dims each) into scores s [32][ctx]: keys in tiles 4 and 7, scores in 5 and 6. */
__attribute__((target("amx-tile,amx-bf16"))) static inline void
amx_qk(const uint16_t *kp, size_t dh, size_t k0, size_t k1, float *s, size_t ctx)
{
    const long ss = (long)(ctx * 4);
    for (size_t kb = k0; kb < k1; kb++) {
        const uint16_t *k = kp + kb * 16 * dh;
        _tile_zero(5);
        _tile_zero(6);
        _tile_loadd(4, k, 64);
        _tile_dpbf16ps(5, 0, 4);
        _tile_dpbf16ps(6, 2, 4);
        if (dh == 64) {
            _tile_loadd(7, k + 512, 64);
            _tile_dpbf16ps(5, 1, 7);
            _tile_dpbf16ps(6, 3, 7);
        }
        _tile_stored(5, s + kb * 16, ss);
        _tile_stored(6, s + 16 * ctx + kb * 16, ss);
    }
}

/* The 32 query rows at q ([32][dh] bf16) into tiles 0-3. */
__attribute__((target("amx-tile,amx-bf16"))) static inline void amx_q(const uint16_t *q, size_t dh)
{
    const long sq = (long)(dh * 2);
    _tile_loadd(0, q, sq);
    _tile_loadd(2, q + 16 * dh, sq);
    if (dh == 64) {
        _tile_loadd(1, q + 32, sq);
        _tile_loadd(3, q + 16 * dh + 32, sq);
    }
}

/* Units [u0, u1) of P V for 32 query rows: unit u is keys [32 kc, 32 kc + 32) (kc = u % (ctx /
 * 32)) of output dims [32 d, 32 d + 32) (d = u / (ctx / 32)); P [32][ctx] bf16 in tiles 0-1,
 * values in 2-3, O in 4-7 (zeroed where a pass over the keys starts, stored into o [32][dh] where
 * it ends). */
__attribute__((target("amx-tile,amx-bf16"))) static inline void
amx_pv(const uint16_t *p, const uint16_t *vp, size_t dh, size_t ctx, size_t u0, size_t u1, float *o)
{
    const size_t nkc = ctx / 32;
    const long sp = (long)(ctx * 2), so = (long)(dh * 4);
    for (size_t u = u0; u < u1; u++) {
        const size_t d = u / nkc * 32, kc = u % nkc;
        if (kc == 0) {
            _tile_zero(4);
            _tile_zero(5);
            _tile_zero(6);
            _tile_zero(7);
        }
        const uint16_t *v = vp + (kc * 32 * dh + d * 32);
        _tile_loadd(0, p + kc * 32, sp);
        _tile_loadd(1, p + 16 * ctx + kc * 32, sp);
        _tile_loadd(2, v, 64);
        _tile_dpbf16ps(4, 0, 2);
        _tile_dpbf16ps(6, 1, 2);
        _tile_loadd(3, v + 512, 64);
        _tile_dpbf16ps(5, 0, 3);
        _tile_dpbf16ps(7, 1, 3);
        if (kc == nkc - 1) {
            _tile_stored(4, o + d, so);
            _tile_stored(5, o + d + 16, so);
            _tile_stored(6, o + 16 * dh + d, so);
            _tile_stored(7, o + 16 * dh + d + 16, so);
        }
    }
}

/* Rows [r0, r0 + 32) of head h's output from o [32][dh] scaled by inv (those below a->n). */
static void amx_out(const vg_attn_args *a, size_t h, size_t r0, const float *o, const float *inv)
{
    const size_t dh = a->dh;
    for (size_t i = 0; i < 32 && r0 + i < a->n; i++)
        if (a->ob)
            scale_row_b16(a->ob + (r0 + i) * a->ldo + h * a->o_hs, o + i * dh, dh, inv[i]);
        else
            scale_row(a->o + (r0 + i) * a->ldo + h * a->o_hs, o + i * dh, dh, inv[i]);
}

/* Task t: head h = t / per_h, part t % per_h of its query rows in 32-row blocks (each tile of
 * keys or values loaded once for two 16-row tiles of queries). Software-pipelined so that the
 * vector units and the tiles overlap: while the vector units run block b's softmax row by row,
 * the tiles compute, a share after each row, block b - 1's P V (first 16 rows) and block b + 1's
 * scores (last 16), each block's scores and probabilities in buffers of their own (two each). */
__attribute__((
    target("amx-tile,amx-bf16,avx512f,avx512dq,avx512bw,avx512vl,avx512bf16"))) static void
amx_attn_task(void *arg, size_t t)
{
    attn_job *j = arg;
    const vg_attn_args *a = j->a;
    const size_t dh = a->dh, ctx = j->ctx, nkb = ctx / 16, npv = ctx / 32 * (dh / 32);
    const size_t blocks = j->n / 32;
    const size_t per_h = (blocks + AMX_ATTN_QB - 1) / AMX_ATTN_QB, h = t / per_h, q = t % per_h;
    const size_t b0 = blocks * q / per_h, b1 = blocks * (q + 1) / per_h;
    if (b0 == b1)
        return;
    const size_t slot = claim_slot(j->busy, j->slots);
    unsigned char *ar = j->area + slot * j->per;
    float *sb[2] = {(float *)(void *)ar, (float *)(void *)(ar + 32 * ctx * 4)}; /* [32][ctx] */
    uint16_t *pb[2] = {(uint16_t *)(void *)(ar + 64 * ctx * 4),
                       (uint16_t *)(void *)(ar + 64 * ctx * 4 + 32 * ctx * 2)}; /* [32][ctx] */
    float *o = (float *)(void *)(ar + 64 * ctx * 4 + 64 * ctx * 2);             /* [32][dh] */
    float inv[2][32];
    static const uint8_t rows[8] = {16, 16, 16, 16, 16, 16, 16, 16};
    vg_tiles_config(rows);
    const uint16_t *kp = j->kp + h * ctx * dh, *vp = j->vp + h * ctx * dh;
    const uint16_t *qh = j->qb + h * j->n * dh;
    amx_q(qh + b0 * 32 * dh, dh);
    amx_qk(kp, dh, 0, nkb, sb[b0 & 1], ctx);
    for (size_t b = b0; b < b1; b++) {
        const size_t r0 = b * 32, c = b & 1;
        const int prev = b > b0, next = b + 1 < b1;
        size_t u = 0, kb = 0;
        for (size_t i = 0; i < 32; i++) { /* padding rows (past a->n) see one key: unused */
            inv[c][i] = softmax_bf16(sb[c] + i * ctx, r0 + i < a->n ? a->ctx : 1, ctx, a->scale,
                                     pb[c] + i * ctx);
            if (i < 16 && prev) {
                const size_t u1 = npv * (i + 1) / 16;
                amx_pv(pb[c ^ 1], vp, dh, ctx, u, u1, o);
                u = u1;
            } else if (i >= 16 && next) {
                if (i == 16)
                    amx_q(qh + (b + 1) * 32 * dh, dh);
                const size_t k1 = nkb * (i - 15) / 16;
                amx_qk(kp, dh, kb, k1, sb[c ^ 1], ctx);
                kb = k1;
            }
        }
        if (prev)
            amx_out(a, h, r0 - 32, o, inv[c ^ 1]);
    }
    amx_pv(pb[(b1 - 1) & 1], vp, dh, ctx, 0, npv, o); /* the last block's */
    amx_out(a, h, (b1 - 1) * 32, o, inv[(b1 - 1) & 1]);
    _tile_release();
    atomic_store(&j->busy[slot], 0);
}

/* The attention job's buffers in one scratch block of m: the bf16 queries (heads x j->n rows),
 * `copies` buffers of [kv_heads][j->ctx][dh] bf16 (0: a bf16 cache read in place; 2: kb and vb;
 * 4: also kp and vp), then j->slots areas of j->per bytes; j->failed and the slots cleared.
 * Returns the block, which the caller gives back with vg_scratch_give(m, block, *bytes); NULL
 * when out of memory. */
static void *attn_buffers(vg_model *m, attn_job *j, size_t copies, size_t *bytes)
{
    const vg_attn_args *a = j->a;
    const size_t qbytes = ALIGN64(a->heads * j->n * a->dh * 2);
    const size_t kbytes = ALIGN64(a->kv_heads * j->ctx * a->dh * 2);
    *bytes = 64 + qbytes + copies * kbytes + j->slots * j->per;
    void *buf = vg_scratch_take(m, *bytes);
    if (!buf)
        return NULL;
    unsigned char *base = (unsigned char *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
    uint16_t *cp[4] = {NULL, NULL, NULL, NULL};
    for (size_t c = 0; c < copies && c < 4; c++)
        cp[c] = (uint16_t *)(void *)(base + qbytes + c * kbytes);
    j->qb = (uint16_t *)(void *)base;
    j->kb = cp[0];
    j->vb = cp[1];
    j->kp = cp[2];
    j->vp = cp[3];
    j->area = base + qbytes + copies * kbytes;
    atomic_init(&j->failed, 0);
    for (int k = 0; k < VG_DNNL_SLOTS; k++)
        atomic_init(&j->busy[k], 0);
    return buf;
}

/* vg_dnnl_attn through the fused kernel (amx_attn_ok(a)): 0 done, VG_ENOMEM. */
static int amx_attn(vg_model *m, const vg_attn_args *a)
{
    attn_job j = {.a = a, .n = (a->n + 31) & ~(size_t)31, .ctx = (a->ctx + 31) & ~(size_t)31};
    j.slots = (size_t)VG_MIN(VG_MIN(m->dnnl->threads, vg_pool_threads(m->tpool)), VG_DNNL_SLOTS);
    j.per = ALIGN64(32 * j.ctx * 12 + 32 * a->dh * 4);
    size_t bytes;
    void *buf = attn_buffers(m, &j, 4, &bytes);
    if (!buf)
        return VG_ENOMEM;
    vg_pool *pool = j.slots > 1 ? m->tpool : NULL;
    vg_pool_for(pool, a->heads * j.n + 2 * a->kv_heads * j.ctx, 64, attn_cvt_range, &j);
    vg_pool_for(pool, a->kv_heads * (j.ctx / 32), 4, amx_pack_range, &j);
    vg_pool_run(pool, a->heads * ((j.n / 32 + AMX_ATTN_QB - 1) / AMX_ATTN_QB), amx_attn_task, &j);
    vg_scratch_give(m, buf, bytes);
    return 0;
}

int vg_dnnl_attn_rope16_ok(const vg_model *m, size_t dh)
{
    return m->dnnl && m->wtype != VG_WEIGHTS_F32 && vg_isa_level() >= VG_ISA_AVX512 && dh % 32 == 0;
}

int vg_dnnl_attn(vg_model *m, const vg_attn_args *a)
{
    vg_dnnl *d = m->dnnl;
    if (!d || m->wtype == VG_WEIGHTS_F32 || vg_isa_level() < VG_ISA_AVX512 || a->n == 0 ||
        a->ctx == 0 || a->dh % 16 != 0 || a->kv_heads == 0 || a->heads % a->kv_heads != 0)
        return 1;
    if (a->rope_cs && (a->kb || !a->rope_sn || !vg_dnnl_attn_rope16_ok(m, a->dh)))
        return 1; /* rotation on the way: float keys, whole vectors per half row */
    if (a->q16 && (a->kb || !a->k16 || !a->v16))
        return 1; /* bf16 rows: all three, converted here */
    if (amx_attn_ok(a))
        return amx_attn(m, a);
    /* causal prefills come in many sizes: rows and keys rounded up (zero rows), so that a few
     * shapes serve them */
    size_t n = a->p0 < 0 ? a->n : (a->n + 31) & ~(size_t)31;
    const size_t ctx = a->p0 < 0 ? a->ctx : (a->ctx + 63) & ~(size_t)63;
    /* every row sees every key (vision): the rows in blocks of at most VG_DNNL_ATTN_QBLOCK, so
     * that a block's scores stay in cache between the products and the softmax (causal
     * prefills come in blocks from their caller) */
    size_t nb = 1, qr = n;
    if (a->p0 < 0 && n > VG_DNNL_ATTN_QBLOCK) {
        nb = (n + VG_DNNL_ATTN_QBLOCK - 1) / VG_DNNL_ATTN_QBLOCK;
        qr = (n + nb - 1) / nb;
    }
    const attn_prim *ap = attn_prim_get(d, qr, ctx, a->dh);
    if (!ap && nb > 1) { /* no kernel for the block's shape: all rows at once */
        nb = 1;
        qr = n;
        ap = attn_prim_get(d, qr, ctx, a->dh);
    }
    if (!ap)
        return 1;
    n = nb * qr;
    attn_job j = {.a = a, .ap = ap, .eng = d->eng, .n = n, .ctx = ctx, .qr = qr, .nb = nb};
    j.slots = (size_t)VG_MIN(VG_MIN(d->threads, vg_pool_threads(m->tpool)), VG_DNNL_SLOTS);
    j.per = ((qr * ctx * 4 + 63) & ~(size_t)63) + ((qr * ctx * 2 + 63) & ~(size_t)63) +
            ((qr * a->dh * 4 + 63) & ~(size_t)63) + ((qr * 4 + 63) & ~(size_t)63) +
            ((ap->scr_bytes + 63) & ~(size_t)63);
    if (a->kb && (!a->vb || a->ldk != a->dh || a->ldv != a->dh))
        return 1; /* a bf16 cache is read in place as plain [ctx][dh] rows */
    size_t bytes;
    void *buf = attn_buffers(m, &j, a->kb ? 0 : 2, &bytes);
    if (!buf)
        return VG_ENOMEM;
    vg_pool *pool = j.slots > 1 ? m->tpool : NULL;
    vg_pool_for(pool, a->heads * n + (a->kb ? 0 : 2 * a->kv_heads * ctx), 64, attn_cvt_range, &j);
    vg_pool_run(pool, a->heads * nb, attn_head_task, &j);
    vg_scratch_give(m, buf, bytes);
    return atomic_load(&j.failed) ? VG_EIO : 0;
}

/* Zeroed, 64-byte aligned bytes for the ceiling (free with free). */
static void *ceil_buf(size_t bytes)
{
    bytes = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p)
        memset(p, 0, bytes);
    return p;
}

/* vg_dnnl_ceiling with the primitive created for cnthr threads. */
static double ceiling_at(int int8, int M, int K, int N, int threads, int reps, int cnthr)
{
    dnnl_engine_t eng = NULL;
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success)
        return 0;
    const dnnl_data_type_t st = int8 ? dnnl_u8 : dnnl_bf16, wt = int8 ? dnnl_s8 : dnnl_bf16;
    dnnl_dims_t sd = {M, K}, wd = {K, N}, dd = {M, N};
    dnnl_memory_desc_t smd, wany, dmd, wmd_plain;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t prim = NULL, rp = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL, mwp = NULL;
    void *bs = NULL, *bw = NULL, *bd = NULL, *bwp = NULL;
    double best = 1e30;
    int ok = dnnl_memory_desc_init_by_tag(&smd, 2, sd, st, dnnl_ab) == dnnl_success &&
             dnnl_memory_desc_init_by_tag(&wany, 2, wd, wt, dnnl_format_tag_any) == dnnl_success &&
             dnnl_memory_desc_init_by_tag(&wmd_plain, 2, wd, wt, dnnl_ba) == dnnl_success &&
             dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab) == dnnl_success &&
             dnnl_matmul_desc_init(&desc, &smd, &wany, NULL, &dmd) == dnnl_success &&
             pd_create(&pd, &desc, NULL, eng, cnthr) == dnnl_success &&
             prim_create(&prim, pd, cnthr) == dnnl_success &&
             dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) == dnnl_success;
    const dnnl_memory_desc_t *wmd =
        ok ? dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0) : NULL;
    if (ok) {
        size_t es = int8 ? 1 : 2;
        /* 64-byte aligned, as the engine's are: from calloc (16 bytes past a page for large
         * blocks) the AMX tile loads straddle cache lines and run at half speed */
        bs = ceil_buf((size_t)M * (size_t)K * es);
        bwp = ceil_buf((size_t)K * (size_t)N * es);
        bw = ceil_buf(dnnl_memory_desc_get_size(wmd));
        bd = ceil_buf((size_t)M * (size_t)N * sizeof(float));
        ok = bs && bw && bd && bwp;
        /* small non-zero values, so that no kernel takes a zero shortcut */
        for (size_t i = 0; ok && i < (size_t)M * (size_t)K; i++)
            if (int8)
                ((uint8_t *)bs)[i] = (uint8_t)(i * 7 % 200);
            else
                ((uint16_t *)bs)[i] = 0x3f80u + (uint16_t)(i % 61);
        for (size_t i = 0; ok && i < (size_t)K * (size_t)N; i++)
            if (int8)
                ((int8_t *)bwp)[i] = (int8_t)(i * 13 % 200 - 100);
            else
                ((uint16_t *)bwp)[i] = 0x3c00u + (uint16_t)(i % 67);
        ok = ok && dnnl_memory_create(&ms, &smd, eng, bs) == dnnl_success &&
             dnnl_memory_create(&mw, wmd, eng, bw) == dnnl_success &&
             dnnl_memory_create(&mwp, &wmd_plain, eng, bwp) == dnnl_success &&
             dnnl_memory_create(&md, &dmd, eng, bd) == dnnl_success &&
             dnnl_reorder_primitive_desc_create(&rpd, &wmd_plain, eng, wmd, eng, NULL) ==
                 dnnl_success &&
             dnnl_primitive_create(&rp, rpd) == dnnl_success;
    }
    if (ok) {
        dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, mwp}, {DNNL_ARG_TO, mw}};
        ok = dnnl_primitive_execute(rp, stream, 2, ra) == dnnl_success &&
             dnnl_stream_wait(stream) == dnnl_success;
    }
    omp_set_num_threads(threads);
    for (int r = 0; ok && r <= reps; r++) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
        double t0 = vg_now_ms();
        ok = dnnl_primitive_execute(prim, stream, 3, args) == dnnl_success &&
             dnnl_stream_wait(stream) == dnnl_success;
        double t = vg_now_ms() - t0;
        if (r > 0 && t < best) /* the first run warms up */
            best = t;
    }
    dnnl_memory_t mems[4] = {ms, mw, md, mwp};
    for (int i = 0; i < 4; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    if (rp)
        dnnl_primitive_destroy(rp);
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (stream)
        dnnl_stream_destroy(stream);
    dnnl_engine_destroy(eng);
    free(bs);
    free(bw);
    free(bd);
    free(bwp);
    return ok && best < 1e30 ? 2.0 * M * N * (double)K / (best * 1e6) : 0;
}

double vg_dnnl_ceiling(int int8, int M, int K, int N, int threads, int reps)
{
    /* the better of the primitive created for the threads that run it and for at least
     * VG_DNNL_NTHR_TEXT (the engine creates both kinds: 1-thread text shapes run faster
     * created for 2) */
    double g = ceiling_at(int8, M, K, N, threads, reps, threads);
    if (threads < VG_DNNL_NTHR_TEXT)
        g = VG_MAX(g, ceiling_at(int8, M, K, N, threads, reps, VG_DNNL_NTHR_TEXT));
    return g;
}

#else /* no oneDNN in this build */

double vg_dnnl_ceiling(int int8, int M, int K, int N, int threads, int reps)
{
    (void)int8;
    (void)M;
    (void)K;
    (void)N;
    (void)threads;
    (void)reps;
    return 0;
}

int vg_dnnl_create(vg_model *m)
{
    (void)m;
    return 0;
}

void vg_dnnl_destroy(vg_dnnl *d)
{
    (void)d;
}

void vg_dnnl_attach_plain(vg_model *m, vg_mat *w, int vision)
{
    (void)m;
    (void)w;
    (void)vision;
}

int vg_dnnl_mat_blocked(vg_model *m, const vg_tensor *t, size_t rows, size_t cols, int prim,
                        vg_mat *out)
{
    (void)m;
    (void)t;
    (void)rows;
    (void)cols;
    (void)prim;
    (void)out;
    return 1;
}

int vg_dnnl_pack(vg_model *m, const float *w, size_t rows, size_t cols, int act, int out_b16,
                 vg_mat *out)
{
    (void)out_b16;
    (void)act;
    (void)m;
    (void)w;
    (void)rows;
    (void)cols;
    (void)out;
    return 1;
}

size_t vg_dnnl_ws_floats(const vg_mat *w, size_t n)
{
    (void)w;
    (void)n;
    return 0;
}

int vg_dnnl_attn(vg_model *m, const vg_attn_args *a)
{
    (void)m;
    (void)a;
    return 1;
}

int vg_dnnl_attn_rope16_ok(const vg_model *m, size_t dh)
{
    (void)m;
    (void)dh;
    return 0;
}

int vg_dnnl_panels_ok(vg_model *m, const vg_mat *w, size_t n)
{
    (void)m;
    (void)w;
    (void)n;
    return 0;
}

int vg_dnnl_matmul_panels(vg_model *m, const uint16_t *xb, size_t n, const vg_mat *w, float *y,
                          float *ws)
{
    (void)m;
    (void)xb;
    (void)n;
    (void)w;
    (void)y;
    (void)ws;
    return VG_ENOTSUP;
}

int vg_dnnl_matmul(vg_model *m, const float *x, const uint16_t *xb, size_t n, const vg_mat *w,
                   const float *b, void *y, int acc, float *ws)
{
    (void)acc;
    (void)b;
    (void)m;
    (void)x;
    (void)xb;
    (void)n;
    (void)w;
    (void)y;
    (void)ws;
    return VG_ENOTSUP;
}
#endif
