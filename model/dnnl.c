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
 * accumulated in float32 by oneDNN and written as float32; the bias is added afterwards in
 * float32. Each primitive is created for a fixed block of VG_DNNL_M rows; a call splits its blocks
 * across the engine's pool (each participant runs oneDNN with one OpenMP thread, so no OpenMP team
 * is left spinning between calls), the last block padded through the workspace. Every participant
 * has its own block buffers and user-managed scratchpad in the caller's workspace, so concurrent
 * calls on a shared model never share memory. Text matrices (dnnl_plain) are first unpacked to
 * plain bf16 in the workspace, also split across the pool.
 *
 * Threads: vg_dnnl_pack at load (one thread); vg_dnnl_matmul from any thread.
 */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

#ifdef VG_HAVE_DNNL
#include <dnnl.h>
#include <immintrin.h>
#include <omp.h>
#include <stdatomic.h>

#define VG_DNNL_SLOTS                                                                              \
    64 /* block buffers per call: the most participants that use oneDNN at once                    \
        */

struct vg_dnnl {
    dnnl_engine_t eng;
    int threads;        /* the model's n_threads: pool participants that run blocks at once */
    vg_dnnl_mat **mats; /* every matrix packed with this engine, freed with it */
    size_t n_mats, cap_mats;
};

struct vg_dnnl_mat {
    int plain;   /* weights in plain bf16 [rows][cols], supplied per call */
    int threads; /* participants of a call (each needs its own block buffers), <= VG_DNNL_SLOTS */
    size_t rows, cols;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src_md, dst_md, wei_md, scr_md;
    void *wei; /* packed weights, owned by the model */
    size_t scratch_bytes;
};

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
    m->dnnl = d;
    return 0;
}

static void mat_free(vg_dnnl_mat *dm)
{
    if (!dm)
        return;
    if (dm->prim)
        dnnl_primitive_destroy(dm->prim);
    if (dm->pd)
        dnnl_primitive_desc_destroy(dm->pd);
    free(dm);
}

void vg_dnnl_destroy(vg_dnnl *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_mats; i++)
        mat_free(d->mats[i]);
    free(d->mats);
    dnnl_engine_destroy(d->eng);
    free(d);
}

/* Round to nearest even, 32 values per step with AVX512-BF16 (the level oneDNN runs at). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void
to_bf16(const float *x, size_t n, uint16_t *out)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512((void *)(out + i), (__m512i)v);
    }
    for (; i < n; i++)
        out[i] = vg_f32_to_bf16(x[i]);
}

int vg_dnnl_pack(vg_model *m, const float *w, size_t rows, size_t cols, vg_mat *out)
{
    vg_dnnl *d = m->dnnl;
    if (!d)
        return 1;
    vg_dnnl_mat *dm = calloc(1, sizeof(*dm));
    if (!dm)
        return VG_ENOMEM;
    dnnl_dims_t sd = {VG_DNNL_M, (dnnl_dim_t)cols}, wd = {(dnnl_dim_t)cols, (dnnl_dim_t)rows};
    dnnl_dims_t dd = {VG_DNNL_M, (dnnl_dim_t)rows};
    dnnl_memory_desc_t wany;
    dnnl_matmul_desc_t desc;
    int ok = dnnl_memory_desc_init_by_tag(&dm->src_md, 2, sd, dnnl_bf16, dnnl_ab) == dnnl_success &&
             dnnl_memory_desc_init_by_tag(&wany, 2, wd, dnnl_bf16, dnnl_format_tag_any) ==
                 dnnl_success &&
             dnnl_memory_desc_init_by_tag(&dm->dst_md, 2, dd, dnnl_f32, dnnl_ab) == dnnl_success &&
             dnnl_matmul_desc_init(&desc, &dm->src_md, &wany, NULL, &dm->dst_md) == dnnl_success;
    dnnl_primitive_attr_t attr = NULL;
    if (ok)
        ok = dnnl_primitive_attr_create(&attr) == dnnl_success &&
             dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) ==
                 dnnl_success &&
             dnnl_primitive_desc_create(&dm->pd, &desc, attr, d->eng, NULL) == dnnl_success;
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
    dm->wei_md = *dnnl_primitive_desc_query_md(dm->pd, dnnl_query_weights_md, 0);
    dm->scr_md = *dnnl_primitive_desc_query_md(dm->pd, dnnl_query_scratchpad_md, 0);
    dm->scratch_bytes = dnnl_memory_desc_get_size(&dm->scr_md);
    size_t wbytes = dnnl_memory_desc_get_size(&dm->wei_md);
    void *wp = NULL;
    if (posix_memalign(&wp, 64, wbytes ? wbytes : 64) != 0 || vg_model_own(m, wp) < 0) {
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
        ok = dnnl_primitive_create(&dm->prim, dm->pd) == dnnl_success;
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
    m->info.weight_bytes += wbytes;
    return 0;
}

/* A primitive for M = VG_DNNL_M rows of x times plain bf16 weights [rows][cols] given per call
 * (shared by every matrix of that shape). NULL when oneDNN has no brgemm kernel for it. */
static vg_dnnl_mat *plain_prim(vg_dnnl *d, size_t rows, size_t cols)
{
    for (size_t i = 0; i < d->n_mats; i++)
        if (d->mats[i]->plain && d->mats[i]->rows == rows && d->mats[i]->cols == cols)
            return d->mats[i];
    vg_dnnl_mat *dm = calloc(1, sizeof(*dm));
    if (!dm)
        return NULL;
    dm->plain = 1;
    dm->rows = rows;
    dm->cols = cols;
    dnnl_dims_t sd = {VG_DNNL_M, (dnnl_dim_t)cols}, wd = {(dnnl_dim_t)cols, (dnnl_dim_t)rows};
    dnnl_dims_t dd = {VG_DNNL_M, (dnnl_dim_t)rows};
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    const char *impl = NULL;
    int ok =
        dnnl_memory_desc_init_by_tag(&dm->src_md, 2, sd, dnnl_bf16, dnnl_ab) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&dm->wei_md, 2, wd, dnnl_bf16, dnnl_ba) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&dm->dst_md, 2, dd, dnnl_f32, dnnl_ab) == dnnl_success &&
        dnnl_matmul_desc_init(&desc, &dm->src_md, &dm->wei_md, NULL, &dm->dst_md) == dnnl_success &&
        dnnl_primitive_attr_create(&attr) == dnnl_success &&
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success &&
        dnnl_primitive_desc_create(&dm->pd, &desc, attr, d->eng, NULL) == dnnl_success &&
        dnnl_primitive_desc_query(dm->pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
        impl && strncmp(impl, "brg", 3) == 0 &&
        dnnl_primitive_create(&dm->prim, dm->pd) == dnnl_success;
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
    dm->scr_md = *dnnl_primitive_desc_query_md(dm->pd, dnnl_query_scratchpad_md, 0);
    dm->scratch_bytes = dnnl_memory_desc_get_size(&dm->scr_md);
    d->mats[d->n_mats++] = dm;
    return dm;
}

void vg_dnnl_attach_plain(vg_model *m, vg_mat *w)
{
    if (m->dnnl && w->p && w->cols % VG_QK == 0)
        w->dnnl_plain = plain_prim(m->dnnl, w->rows, w->cols);
}

/* Bytes of one participant's block buffers: bf16 source block, float32 destination block,
 * scratchpad, each 64-byte aligned. */
static size_t per_thread_bytes(const vg_dnnl_mat *dm, size_t rows, size_t cols)
{
    return ((VG_DNNL_M * cols * 2 + 63) & ~(size_t)63) +
           ((VG_DNNL_M * rows * 4 + 63) & ~(size_t)63) + ((dm->scratch_bytes + 63) & ~(size_t)63);
}

size_t vg_dnnl_ws_floats(const vg_dnnl_mat *dm, size_t rows, size_t cols)
{
    size_t plain = dm->plain ? (rows * cols * 2 + 63) & ~(size_t)63 : 0; /* unpacked weights */
    size_t bytes = 64 + plain + (size_t)dm->threads * per_thread_bytes(dm, rows, cols);
    return bytes / 4 + 16;
}

/* Row rr of a packed Q8_0 group as bf16 (scale * q rounded to bf16), 32 values per step. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,f16c"))) static void
q8_row_to_bf16(const int8_t *g, size_t K, int rr, uint16_t *out)
{
    const uint16_t *sc = (const uint16_t *)(const void *)(g + (size_t)VG_PACK_ROWS * K);
    for (size_t b = 0; b < K / VG_QK; b++) {
        const int8_t *q = g + (b * VG_PACK_ROWS + (size_t)rr) * VG_QK;
        const __m512 d = _mm512_set1_ps(vg_f16_to_f32_k(sc[b * VG_PACK_ROWS + (size_t)rr]));
        __m512 lo = _mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)q)));
        __m512 hi = _mm512_cvtepi32_ps(
            _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(q + 16))));
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_mul_ps(hi, d), _mm512_mul_ps(lo, d));
        _mm512_storeu_si512((void *)(out + b * VG_QK), (__m512i)v);
    }
}

typedef struct dnnl_job {
    vg_model *m;
    const vg_mat *w;
    const vg_dnnl_mat *dm;
    const float *x;
    float *y;
    void *wei;
    unsigned char *area; /* per running task: per_thread_bytes each, claimed through busy[] */
    size_t n, blocks, parts, per, slots;
    atomic_int busy[VG_DNNL_SLOTS];
    atomic_int failed;
} dnnl_job;

/* Unpacks rows [N * i / parts, N * (i + 1) / parts) of a packed text matrix to plain bf16. */
static void unpack_task(void *arg, size_t i)
{
    const dnnl_job *j = arg;
    const vg_mat *w = j->w;
    const size_t K = w->cols;
    /* whole groups per part, so that parts never share a group */
    const size_t groups = (w->rows + VG_PACK_ROWS - 1) / VG_PACK_ROWS;
    const size_t g0 = groups * i / j->parts, g1 = groups * (i + 1) / j->parts;
    uint16_t *out = j->wei;
    for (size_t r = g0 * VG_PACK_ROWS; r < g1 * VG_PACK_ROWS && r < w->rows; r++) {
        const unsigned char *g = (const unsigned char *)w->p + (r / VG_PACK_ROWS) * w->group_bytes;
        const int rr = (int)(r % VG_PACK_ROWS);
        if (w->type == VG_WEIGHTS_BF16) {
            for (size_t c = 0; c < K / VG_QK; c++)
                memcpy(out + r * K + c * VG_QK,
                       (const uint16_t *)(const void *)g + (c * VG_PACK_ROWS + (size_t)rr) * VG_QK,
                       VG_QK * sizeof(uint16_t));
        } else {
            q8_row_to_bf16((const int8_t *)g, K, rr, out + r * K);
        }
    }
}

/* Task i runs its share of the VG_DNNL_M-row blocks, oneDNN on this thread only, in a buffer slot
 * it claims (at most `slots` tasks run at once, one per pool participant, so one is always free).
 */
static void block_task(void *arg, size_t i)
{
    dnnl_job *j = arg;
    const vg_dnnl_mat *dm = j->dm;
    const size_t K = j->w->cols, N = j->w->rows;
    const size_t b0 = j->blocks * i / j->parts, b1 = j->blocks * (i + 1) / j->parts;
    if (b0 == b1)
        return;
    size_t slot = 0;
    for (;; slot = (slot + 1) % j->slots) {
        int expect = 0;
        if (atomic_compare_exchange_strong(&j->busy[slot], &expect, 1))
            break;
    }
    unsigned char *a = j->area + slot * j->per;
    uint16_t *xb = (uint16_t *)(void *)a;
    float *tmp = (float *)(void *)(a + ((VG_DNNL_M * K * 2 + 63) & ~(size_t)63));
    void *scr = (unsigned char *)tmp + ((VG_DNNL_M * N * 4 + 63) & ~(size_t)63);
    dnnl_engine_t eng = j->m->dnnl->eng;
    dnnl_stream_t st = NULL;
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL, mscr = NULL;
    omp_set_num_threads(1); /* the pool provides the parallelism: no OpenMP team to spin */
    int ok = dnnl_stream_create(&st, eng, dnnl_stream_default_flags) == dnnl_success &&
             dnnl_memory_create(&ms, &dm->src_md, eng, xb) == dnnl_success &&
             dnnl_memory_create(&mw, &dm->wei_md, eng, j->wei) == dnnl_success &&
             dnnl_memory_create(&md, &dm->dst_md, eng, tmp) == dnnl_success &&
             dnnl_memory_create(&mscr, &dm->scr_md, eng, scr) == dnnl_success;
    for (size_t b = b0; ok && b < b1; b++) {
        const size_t i0 = b * VG_DNNL_M, r = VG_MIN((size_t)VG_DNNL_M, j->n - i0);
        to_bf16(j->x + i0 * K, r * K, xb);
        if (r < VG_DNNL_M)
            memset(xb + r * K, 0, (VG_DNNL_M - r) * K * sizeof(uint16_t));
        float *dst = r == VG_DNNL_M ? j->y + i0 * N : tmp;
        ok = dnnl_memory_set_data_handle(md, dst) == dnnl_success;
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms},
                                   {DNNL_ARG_WEIGHTS, mw},
                                   {DNNL_ARG_DST, md},
                                   {DNNL_ARG_SCRATCHPAD, mscr}};
        ok = ok && dnnl_primitive_execute(dm->prim, st, 4, args) == dnnl_success &&
             dnnl_stream_wait(st) == dnnl_success;
        if (ok && dst == tmp)
            memcpy(j->y + i0 * N, tmp, r * N * sizeof(float));
    }
    if (mscr)
        dnnl_memory_destroy(mscr);
    if (md)
        dnnl_memory_destroy(md);
    if (mw)
        dnnl_memory_destroy(mw);
    if (ms)
        dnnl_memory_destroy(ms);
    if (st)
        dnnl_stream_destroy(st);
    if (!ok)
        atomic_store(&j->failed, 1);
    atomic_store(&j->busy[slot], 0);
}

int vg_dnnl_matmul(vg_model *m, const float *x, size_t n, const vg_mat *w, float *y, float *ws)
{
    const vg_dnnl_mat *dm = w->dnnl ? w->dnnl : w->dnnl_plain;
    unsigned char *base = (unsigned char *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    dnnl_job j = {.m = m, .w = w, .dm = dm, .x = x, .y = y, .n = n, .wei = dm->wei};
    j.slots = (size_t)VG_MIN(VG_MIN(dm->threads, vg_pool_threads(m->tpool)), VG_DNNL_SLOTS);
    j.parts = j.slots > 1 ? VG_POOL_SPLIT * j.slots : 1;
    atomic_init(&j.failed, 0);
    for (int k = 0; k < VG_DNNL_SLOTS; k++)
        atomic_init(&j.busy[k], 0);
    if (dm->plain) {
        j.wei = base;
        base += (w->rows * w->cols * 2 + 63) & ~(size_t)63;
        vg_pool_run(j.slots > 1 ? m->tpool : NULL, j.parts, unpack_task, &j);
    }
    j.area = base;
    j.per = per_thread_bytes(dm, w->rows, w->cols);
    j.blocks = (n + VG_DNNL_M - 1) / VG_DNNL_M;
    if (j.parts > j.blocks)
        j.parts = j.blocks;
    vg_pool_run(j.slots > 1 ? m->tpool : NULL, j.parts, block_task, &j);
    return atomic_load(&j.failed) ? VG_EIO : 0;
}

double vg_dnnl_ceiling(int int8, int M, int K, int N, int threads, int reps)
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
             dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL) == dnnl_success &&
             dnnl_primitive_create(&prim, pd) == dnnl_success &&
             dnnl_stream_create(&stream, eng, dnnl_stream_default_flags) == dnnl_success;
    const dnnl_memory_desc_t *wmd =
        ok ? dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0) : NULL;
    if (ok) {
        size_t es = int8 ? 1 : 2;
        bs = calloc((size_t)M * (size_t)K, es);
        bwp = calloc((size_t)K * (size_t)N, es);
        bw = calloc(1, dnnl_memory_desc_get_size(wmd) + 64);
        bd = calloc((size_t)M * (size_t)N, sizeof(float));
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

void vg_dnnl_attach_plain(vg_model *m, vg_mat *w)
{
    (void)m;
    (void)w;
}

int vg_dnnl_pack(vg_model *m, const float *w, size_t rows, size_t cols, vg_mat *out)
{
    (void)m;
    (void)w;
    (void)rows;
    (void)cols;
    (void)out;
    return 1;
}

size_t vg_dnnl_ws_floats(const vg_dnnl_mat *dm, size_t rows, size_t cols)
{
    (void)dm;
    (void)rows;
    (void)cols;
    return 0;
}

int vg_dnnl_matmul(vg_model *m, const float *x, size_t n, const vg_mat *w, float *y, float *ws)
{
    (void)m;
    (void)x;
    (void)n;
    (void)w;
    (void)y;
    (void)ws;
    return VG_ENOTSUP;
}
#endif
