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
 * float32. Each primitive is created for a fixed block of VG_DNNL_M rows; a call runs its rows in
 * such blocks, the last one padded through the workspace. The scratchpad is user-managed (part of
 * the caller's workspace), so concurrent calls on a shared model never share memory. oneDNN's
 * OpenMP threads are set to the model's n_threads before every call.
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

struct vg_dnnl {
    dnnl_engine_t eng;
    vg_dnnl_mat **mats; /* every matrix packed with this engine, freed with it */
    size_t n_mats, cap_mats;
};

struct vg_dnnl_mat {
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

size_t vg_dnnl_ws_floats(const vg_dnnl_mat *dm, size_t rows, size_t cols)
{
    /* bf16 source block, padded destination block, scratchpad (+ alignment slack) */
    return (VG_DNNL_M * cols + 1) / 2 + VG_DNNL_M * rows + (dm->scratch_bytes + 63) / 4 + 32;
}

int vg_dnnl_matmul(vg_model *m, const float *x, size_t n, const vg_mat *w, float *y, float *ws)
{
    const vg_dnnl_mat *dm = w->dnnl;
    const size_t K = w->cols, N = w->rows;
    uintptr_t base = ((uintptr_t)ws + 63) & ~(uintptr_t)63;
    uint16_t *xb = (uint16_t *)base;
    float *tmp = (float *)(void *)(xb + ((VG_DNNL_M * K + 31) & ~(size_t)31));
    void *scr = (void *)(((uintptr_t)(tmp + VG_DNNL_M * N) + 63) & ~(uintptr_t)63);
    dnnl_stream_t st = NULL;
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL, mscr = NULL;
    int ok = dnnl_stream_create(&st, m->dnnl->eng, dnnl_stream_default_flags) == dnnl_success &&
             dnnl_memory_create(&ms, &dm->src_md, m->dnnl->eng, xb) == dnnl_success &&
             dnnl_memory_create(&mw, &dm->wei_md, m->dnnl->eng, dm->wei) == dnnl_success &&
             dnnl_memory_create(&md, &dm->dst_md, m->dnnl->eng, tmp) == dnnl_success &&
             dnnl_memory_create(&mscr, &dm->scr_md, m->dnnl->eng, scr) == dnnl_success;
    omp_set_num_threads(m->n_threads);
    for (size_t i0 = 0; ok && i0 < n; i0 += VG_DNNL_M) {
        size_t r = VG_MIN((size_t)VG_DNNL_M, n - i0);
        to_bf16(x + i0 * K, r * K, xb);
        if (r < VG_DNNL_M)
            memset(xb + r * K, 0, (VG_DNNL_M - r) * K * sizeof(uint16_t));
        float *dst = r == VG_DNNL_M ? y + i0 * N : tmp;
        ok = dnnl_memory_set_data_handle(md, dst) == dnnl_success;
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms},
                                   {DNNL_ARG_WEIGHTS, mw},
                                   {DNNL_ARG_DST, md},
                                   {DNNL_ARG_SCRATCHPAD, mscr}};
        ok = ok && dnnl_primitive_execute(dm->prim, st, 4, args) == dnnl_success &&
             dnnl_stream_wait(st) == dnnl_success;
        if (ok && dst == tmp)
            memcpy(y + i0 * N, tmp, r * N * sizeof(float));
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
    return ok ? 0 : VG_EIO;
}

#else /* no oneDNN in this build */

int vg_dnnl_create(vg_model *m)
{
    (void)m;
    return 0;
}

void vg_dnnl_destroy(vg_dnnl *d)
{
    (void)d;
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
