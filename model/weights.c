/*
 * weights.c: the engine's matrices (vg_mat) in the weight type chosen at load, and the products
 * with them.
 *
 * Loading (vg_model_mat): a 2-D Linear weight W[rows][cols] is kept
 *  - as float32 (VG_WEIGHTS_F32, or a matrix whose cols is not a multiple of 32), through
 *    vg_model_weight (converted, or used in place from the mapping with use_mmap);
 *  - else packed (kernels.h layouts: groups of VG_PACK_ROWS rows interleaved in 32-column chunks)
 *    in BF16 or Q8_0. The packed buffer is allocated once per tensor, in huge-page-advised memory
 *    (MADV_HUGEPAGE before it is first written) when large, and filled row by row from the mapping
 *    through one float32 row of scratch; the tensor's source pages are then dropped from the
 *    resident set. So loading never holds two full copies of the weights.
 *
 * Products (vg_matmul): y[n][rows] = x[n][cols] W^T (+ b).
 *  - float32: OpenBLAS (sgemv for one row, sgemm for several), as before;
 *  - one row (decode) in BF16 / Q8_0: the level's GEMV kernel (kernels.h), the groups split into
 *    contiguous ranges across the pool, so each thread streams one sequential run of memory;
 *    Q8_0 quantizes the activation to Q8_0 blocks first (llama.cpp's q8_0 x q8_0 product);
 *  - a few rows (up to SMALL_ROWS_*: a live stream's questions, short prompts) in BF16 / Q8_0:
 *    the level's several-rows kernels, split the same way: each group is read once and applied
 *    to every row (BF16: x rounded to bf16, VDPBF16PS; Q8_0: each row quantized as for decode,
 *    bit for bit the GEMV's result row by row);
 *  - more rows (long prefills, vision) in BF16 / Q8_0: oneDNN when the matrix has a primitive for
 *    it (below), else tiles of rows widened to float32 in the caller's workspace and multiplied
 *    with OpenBLAS sgemm;
 *  - on a CPU with AMX, BF16 text matrices are written at load straight into oneDNN's blocked
 *    layout (VG_MAT_BLK, vg_model_mat_text): up to SMALL_ROWS_BLK rows through AMX tiles (amx.c),
 * more through oneDNN reading them in place;
 *  - the vision tower's matrices in BF16 when oneDNN is usable (vg_model_mat_dense): oneDNN's
 *    bf16 matmul on weights packed for it at load (dnnl.c), about twice sgemm's speed; with Q8_0
 *    this holds only the matrices whose cols is not a multiple of 32 (else they would be float32).
 * The workspace (vg_mat_ws_floats) belongs to the caller (a sequence's or a vision call's scratch),
 * so concurrent calls on a shared model never share memory. Any thread.
 */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#include "engine.h"
#include "gguf.h"
#include "quant.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#define TILE_FLOATS ((size_t)1 << 20) /* float32 panel of the several-rows path (4 MiB) */
#define HUGE_MIN    ((size_t)4 << 20) /* buffers from this size are huge-page aligned */

int vg_weight_type_parse(const char *name, int *out)
{
    static const struct {
        const char *s;
        int t;
    } names[] = {{"auto", VG_WEIGHTS_AUTO}, {"f32", VG_WEIGHTS_F32},   {"float32", VG_WEIGHTS_F32},
                 {"bf16", VG_WEIGHTS_BF16}, {"q8_0", VG_WEIGHTS_Q8_0}, {"q8", VG_WEIGHTS_Q8_0}};
    if (!name || !out)
        return VG_EINVAL;
    for (size_t i = 0; i < VG_ARRAY_LEN(names); i++)
        if (strcasecmp(name, names[i].s) == 0) {
            *out = names[i].t;
            return 0;
        }
    return VG_EINVAL;
}

const char *vg_weight_type_name(int type)
{
    switch (type) {
    case VG_WEIGHTS_AUTO:
        return "auto";
    case VG_WEIGHTS_F32:
        return "f32";
    case VG_WEIGHTS_BF16:
        return "bf16";
    case VG_WEIGHTS_Q8_0:
        return "q8_0";
    default:
        return "?";
    }
}

/* One row of a tensor as float32. */
static void tensor_row_f32(const vg_tensor *t, size_t row, size_t cols, float *dst)
{
    if (t->dtype >= VG_DT_Q8_0) { /* GGUF block types */
        vg_tensor_rows_f32(t, row, row + 1, dst);
        return;
    }
    const unsigned char *src =
        (const unsigned char *)t->data + row * cols * vg_dtype_size(t->dtype);
    if (t->dtype == VG_DT_F16) {
        vg_kernels_get(-1)->widen_f16(src, cols, dst);
        return;
    }
    for (size_t j = 0; j < cols; j++) {
        if (t->dtype == VG_DT_F32) {
            memcpy(&dst[j], src + 4 * j, 4);
        } else {
            uint16_t v;
            memcpy(&v, src + 2 * j, 2);
            dst[j] = t->dtype == VG_DT_BF16 ? vg_bf16_to_f32(v) : vg_f16_to_f32(v);
        }
    }
}

/* Packing a tensor's rows into groups, a range of groups per pool task (the first touch of the
 * new pages, which the kernel zeroes, and the conversion both split over the threads). */
typedef struct pack_job {
    const vg_tensor *t;
    size_t K, R, gb;
    unsigned char *p;
    int wtype;      /* pack_rows_range: VG_WEIGHTS_BF16 or VG_WEIGHTS_Q8_0 */
    uint32_t gt;    /* pack_kq_range: the GGUF block type kept */
    atomic_int oom; /* pack_rows_range: a row buffer could not be allocated */
} pack_job;

#define PACK_GRAIN 16 /* groups per range at least */

/* GGUF K-quant / legacy blocks kept at their precision (vg_kq_pack_group). */
static void pack_kq_range(void *ctx, size_t g0, size_t g1)
{
    const pack_job *j = ctx;
    const size_t row_bytes = j->t->nbytes / j->R;
    for (size_t g = g0; g < g1; g++)
        vg_kq_pack_group(j->gt, (const unsigned char *)j->t->data + g * VG_PACK_ROWS * row_bytes,
                         row_bytes, VG_MIN(VG_PACK_ROWS, j->R - g * VG_PACK_ROWS), j->K,
                         j->p + g * j->gb);
}

/* Rows into BF16 or Q8_0 groups. */
static void pack_rows_range(void *ctx, size_t g0, size_t g1)
{
    pack_job *j = ctx;
    const vg_tensor *t = j->t;
    const size_t K = j->K, R = j->R;
    /* a GGUF Q8_0 tensor loaded as Q8_0: its blocks are copied unchanged (no requantization); a
     * BF16 tensor loaded as bf16: its rows copied (what widening and rounding back gives for the
     * finite values vg_tensor_check_finite let through) */
    const int raw_q8 = t->dtype == VG_DT_Q8_0 && j->wtype == VG_WEIGHTS_Q8_0;
    const int raw_bf16 = t->dtype == VG_DT_BF16 && j->wtype == VG_WEIGHTS_BF16;
    float *row = NULL; /* one row widened to float32, where a row is converted */
    for (size_t r = g0 * VG_PACK_ROWS; r < g1 * VG_PACK_ROWS; r++) {
        unsigned char *grp = j->p + (r / VG_PACK_ROWS) * j->gb;
        const int rr = (int)(r % VG_PACK_ROWS);
        if (raw_q8 && r < R) {
            vg_pack_row_q8_raw((const unsigned char *)t->data + r * (K / VG_QK) * 34, K, rr,
                               (int8_t *)grp);
            continue;
        }
        if (raw_bf16 && r < R) {
            vg_pack_row_bf16_raw((const unsigned char *)t->data + r * K * 2, K, rr,
                                 (uint16_t *)(void *)grp);
            continue;
        }
        if (!row && !(row = malloc(K * sizeof(float)))) {
            atomic_store(&j->oom, 1);
            return;
        }
        if (r < R)
            tensor_row_f32(t, r, K, row);
        else
            memset(row, 0, K * sizeof(float)); /* padding rows of the last group */
        if (j->wtype == VG_WEIGHTS_BF16)
            vg_pack_row_bf16(row, K, rr, (uint16_t *)(void *)grp);
        else
            vg_pack_row_q8(row, K, rr, (int8_t *)grp);
    }
    free(row);
}

void *vg_model_alloc_weights(vg_model *m, size_t bytes)
{
    void *p = NULL;
    size_t align = bytes >= HUGE_MIN ? ((size_t)2 << 20) : 64;
    if (posix_memalign(&p, align, bytes ? bytes : 1) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (bytes >= HUGE_MIN)
        madvise(p, bytes & ~(((size_t)2 << 20) - 1), MADV_HUGEPAGE);
#endif
    if (vg_model_own(m, p) < 0)
        return NULL;
    return p;
}

/* The 2-D tensor name [rows][cols] of the checkpoint in *t, its values checked finite. 0, or an
 * error as vg_model_weight. */
static int checked_tensor(vg_model *m, const char *name, int64_t rows, int64_t cols,
                          const vg_tensor **t, char *err, size_t errlen)
{
    int64_t shape[2] = {rows, cols};
    int rc = vg_st_expect(m->st, name, 2, shape, t, err, errlen);
    if (rc < 0 || (rc = vg_tensor_check_finite(*t, err, errlen)) < 0)
        return rc;
    return 0;
}

/* Tensor t is now held converted by the model: its source pages dropped, its values counted. */
static void tensor_taken(vg_model *m, const vg_tensor *t)
{
    vg_model_drop_pages(t->data, t->nbytes);
    m->info.n_params += t->numel;
}

/* The checked tensor t [R][K] (K a multiple of 32) packed in m->wtype's row groups (or kept in
 * its GGUF blocks) into *out. Errors as vg_model_weight. */
static int pack_tensor(vg_model *m, const char *name, const vg_tensor *t, vg_mat *out, char *err,
                       size_t errlen)
{
    const size_t K = (size_t)t->shape[1], R = (size_t)t->shape[0];
    memset(out, 0, sizeof(*out));
    out->rows = R;
    out->cols = K;
    const char *blocks = getenv("VG_GGUF_BLOCKS");
    const uint32_t gt = vg_dtype_ggml(t->dtype);
    if (m->wtype == VG_WEIGHTS_Q8_0 && vg_kq_supported(gt) && K % 256 == 0 &&
        !(blocks && strcmp(blocks, "0") == 0)) {
        /* GGUF Q4_K / Q5_K / Q6_K and Q4_0 / Q4_1 / Q5_0 / Q5_1 kept at their precision,
         * repacked into interleaved row groups of 256-column records (quant.h) for the block GEMV
         * kernels; VG_GGUF_BLOCKS=0 requantizes to Q8_0 instead */
        const size_t groups = (R + VG_PACK_ROWS - 1) / VG_PACK_ROWS;
        const size_t gb = vg_kq_group_bytes(gt, K);
        size_t bytes;
        if (vg_mul_size(groups, gb, &bytes) < 0)
            return vg_fail(err, errlen, VG_EMODEL, "%s: tensor '%s' is too large", t->file, name);
        unsigned char *p = vg_model_alloc_weights(m, bytes);
        if (!p)
            return vg_fail(err, errlen, VG_ENOMEM, "out of memory for tensor '%s' (%zu bytes)",
                           name, bytes);
        pack_job pj = {.t = t, .K = K, .R = R, .gb = gb, .p = p, .gt = gt};
        vg_pool_for(m->tpool, groups, PACK_GRAIN, pack_kq_range, &pj);
        tensor_taken(m, t);
        m->info.weight_bytes += bytes;
        out->type = VG_MAT_GGUF;
        out->gtype = gt;
        out->p = p;
        out->group_bytes = gb;
        return 0;
    }
    const size_t groups = (R + VG_PACK_ROWS - 1) / VG_PACK_ROWS;
    const size_t gb =
        m->wtype == VG_WEIGHTS_BF16 ? vg_pack_group_bytes_bf16(K) : vg_pack_group_bytes_q8(K);
    size_t bytes;
    if (vg_mul_size(groups, gb, &bytes) < 0)
        return vg_fail(err, errlen, VG_EMODEL, "%s: tensor '%s' is too large", t->file, name);
    unsigned char *p = vg_model_alloc_weights(m, bytes);
    if (!p)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory packing tensor '%s' (%zu bytes)",
                       name, bytes);
    pack_job pj = {.t = t, .K = K, .R = R, .gb = gb, .p = p, .wtype = m->wtype};
    atomic_init(&pj.oom, 0);
    vg_pool_for(m->tpool, groups, PACK_GRAIN, pack_rows_range, &pj);
    if (atomic_load(&pj.oom))
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory packing tensor '%s'", name);
    tensor_taken(m, t);
    m->info.weight_bytes += bytes;
    out->type = m->wtype;
    out->p = p;
    out->group_bytes = gb;
    return 0;
}

int vg_model_mat(vg_model *m, const char *name, int64_t rows, int64_t cols, vg_mat *out, char *err,
                 size_t errlen)
{
    if (m->wtype == VG_WEIGHTS_F32 || cols % VG_QK != 0 || rows <= 0) {
        int64_t shape[2] = {rows, cols};
        memset(out, 0, sizeof(*out));
        out->rows = (size_t)rows;
        out->cols = (size_t)cols;
        out->type = VG_WEIGHTS_F32;
        return vg_model_weight(m, name, 2, shape, &out->f, err, errlen);
    }
    const vg_tensor *t = NULL;
    int rc = checked_tensor(m, name, rows, cols, &t, err, errlen);
    return rc < 0 ? rc : pack_tensor(m, name, t, out, err, errlen);
}

int vg_model_mat_text(vg_model *m, const char *name, int64_t rows, int64_t cols, int prim,
                      vg_mat *out, char *err, size_t errlen)
{
    int rc;
    if (m->wtype == VG_WEIGHTS_BF16 && m->dnnl && rows > 0 && cols > 0 && cols % VG_QK == 0 &&
        vg_amx_ok()) { /* AMX tiles: oneDNN's blocked layout, straight from the checkpoint */
        const vg_tensor *t = NULL;
        if ((rc = checked_tensor(m, name, rows, cols, &t, err, errlen)) < 0)
            return rc;
        memset(out, 0, sizeof(*out));
        rc = vg_dnnl_mat_blocked(m, t, (size_t)rows, (size_t)cols, prim, out);
        if (rc < 0)
            return vg_fail(err, errlen, rc, "out of memory converting tensor '%s'", name);
        if (rc == 0) {
            tensor_taken(m, t);
            return 0;
        }
        rc = pack_tensor(m, name, t, out, err, errlen); /* not that layout here: row groups */
    } else {
        rc = vg_model_mat(m, name, rows, cols, out, err, errlen);
    }
    if (rc == 0 && prim)
        vg_dnnl_attach_plain(m, out, 0);
    return rc;
}

int vg_model_mat_dense(vg_model *m, const char *name, int64_t rows, int64_t cols, int act,
                       int out_b16, vg_mat *out, char *err, size_t errlen)
{
    /* bf16 for oneDNN: every vision matrix of a bf16 or q8_0 model (a q8_0 matrix would be
     * widened to bf16 for oneDNN on every call anyway: 18 % of a 1-thread q8_0 pair; llama.cpp
     * likewise keeps the vision tower in f16 beside 8-bit text weights): half the memory of
     * float32 and oneDNN's speed */
    if (m->dnnl && rows > 0 && cols > 0 &&
        (m->wtype == VG_WEIGHTS_BF16 || m->wtype == VG_WEIGHTS_Q8_0)) {
        const vg_tensor *t = NULL;
        int rc = checked_tensor(m, name, rows, cols, &t, err, errlen);
        if (rc < 0)
            return rc;
        float *f = malloc(t->numel * sizeof(float)); /* this tensor only, freed below */
        if (!f)
            return vg_fail(err, errlen, VG_ENOMEM, "out of memory packing tensor '%s'", name);
        vg_tensor_to_f32(t, f);
        rc = vg_dnnl_pack(m, f, (size_t)rows, (size_t)cols, act, out_b16, out);
        free(f);
        if (rc < 0)
            return vg_fail(err, errlen, rc, "out of memory packing tensor '%s' for oneDNN", name);
        if (rc == 0) {
            tensor_taken(m, t);
            return 0;
        }
    }
    int rc = vg_model_mat(m, name, rows, cols, out, err, errlen);
    if (rc == 0)
        vg_dnnl_attach_plain(m, out, 1); /* q8_0: oneDNN bf16 on the dequantized weights */
    return rc;
}

int vg_model_mat_file(vg_model *m, const char *name, int64_t rows, int64_t cols, vg_mat *out,
                      char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const vg_tensor *t = NULL;
    int64_t shape[2] = {rows, cols};
    int rc = vg_st_expect(m->st, name, 2, shape, &t, err, errlen);
    if (rc < 0)
        return rc;
    int fd = -1;
    uint64_t off = 0;
    /* not in a file: 1 before the values are scanned, which vg_model_mat then does */
    if (rows <= 0 || t->nbytes % (size_t)rows != 0 || vg_st_locate(m->st, t, &fd, &off) != 0)
        return 1;
    if ((rc = vg_tensor_check_finite(t, err, errlen)) < 0) {
        close(fd);
        return rc;
    }
    tensor_taken(m, t);
    out->type = VG_MAT_FILE;
    out->rows = (size_t)rows;
    out->cols = (size_t)cols;
    out->fd = fd;
    out->off = off;
    out->row_bytes = t->nbytes / (size_t)rows;
    out->sdtype = (int)t->dtype;
    return 0;
}

/* Row r of a VG_MAT_FILE matrix: pread() of its bytes, decoded as the tensor's dtype. */
static int file_row(const vg_mat *w, size_t r, float *dst)
{
    unsigned char small[16384];
    unsigned char *buf = w->row_bytes <= sizeof small ? small : malloc(w->row_bytes);
    if (!buf)
        return VG_ENOMEM;
    size_t got = 0;
    const uint64_t at = w->off + (uint64_t)r * w->row_bytes;
    while (got < w->row_bytes) {
        ssize_t n = pread(w->fd, buf + got, w->row_bytes - got, (off_t)(at + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got == w->row_bytes) {
        vg_tensor t = {.name = "embedding row",
                       .dtype = (vg_dtype)w->sdtype,
                       .ndim = 1,
                       .shape = {(int64_t)w->cols},
                       .numel = w->cols,
                       .data = buf,
                       .nbytes = w->row_bytes,
                       .file = ""};
        vg_tensor_rows_f32(&t, 0, 1, dst);
    }
    if (buf != small)
        free(buf);
    return got == w->row_bytes ? 0 : VG_EIO;
}

int vg_mat_row(const vg_mat *w, size_t r, float *dst)
{
    const size_t K = w->cols;
    if (w->type == VG_WEIGHTS_F32) {
        memcpy(dst, w->f + r * K, K * sizeof(float));
        return 0;
    }
    if (w->type == VG_MAT_FILE)
        return file_row(w, r, dst);
    if (w->type == VG_MAT_GGUF) {
        vg_kq_unpack_row(w->gtype,
                         (const unsigned char *)w->p + (r / VG_PACK_ROWS) * w->group_bytes, K,
                         (int)(r % VG_PACK_ROWS), dst);
        return 0;
    }
    if (w->type == VG_MAT_BLK) { /* the row's values in each part of its slab */
        const size_t S = w->slab_rows, Kc = w->part_cols, sl = r / S, rs = r % S;
        for (size_t c = 0; c < K / Kc; c++) {
            const uint16_t *blk = vg_blk_part(w, sl, c) + rs / VG_BLK_N * VG_BLK_N * Kc;
            for (size_t k = 0; k < Kc; k++)
                dst[c * Kc + k] = vg_bf16_to_f32(blk[vg_blk_index(k, rs % VG_BLK_N)]);
        }
        return 0;
    }
    const unsigned char *grp = (const unsigned char *)w->p + (r / VG_PACK_ROWS) * w->group_bytes;
    if (w->type == VG_WEIGHTS_BF16)
        vg_unpack_row_bf16((const uint16_t *)(const void *)grp, K, (int)(r % VG_PACK_ROWS), dst);
    else
        vg_unpack_row_q8((const int8_t *)grp, K, (int)(r % VG_PACK_ROWS), dst);
    return 0;
}

static size_t tile_rows(const vg_mat *w)
{
    size_t t = TILE_FLOATS / w->cols;
    t -= t % VG_PACK_ROWS;
    if (t < VG_PACK_ROWS)
        t = VG_PACK_ROWS;
    size_t rp = (w->rows + VG_PACK_ROWS - 1) / VG_PACK_ROWS * VG_PACK_ROWS;
    return t < rp ? t : rp;
}

/* Rows up to which a packed BF16 / Q8_0 matrix is multiplied by the level's several-rows kernels
 * (kernels.h: each group read once for all rows, split across the pool by groups) instead of
 * oneDNN (which first unpacks the whole matrix, then runs AMX/AVX-512 brgemm on blocks of
 * VG_DNNL_M rows, one block per thread) or widened tiles + sgemm. The crossover with oneDNN was
 * measured on the 2B text shapes with 2 threads (docs/weights.md): the VNNI q8_0 kernel is
 * faster up to 32-56 rows (by the machine's load), the bf16 one (VDPBF16PS, about 0.7x its
 * speed) up to 16-32. */
#define SMALL_ROWS_Q8   40
#define SMALL_ROWS_BF16 24
/* A blocked matrix (VG_MAT_BLK): AMX tiles take 16 rows per pass over the weights; a live stream's
 * 72-row pair prefill runs faster through oneDNN (230-233 ms against 296-299 through 5 passes of
 * tiles, bench_stream bf16, 2 threads, Xeon of 2026-12-07), its questions (up to 16 rows) alike
 * with a limit of 16 or 32. */
#define SMALL_ROWS_BLK 16

static size_t small_limit(const vg_mat *w)
{
    return w->type == VG_WEIGHTS_Q8_0 ? SMALL_ROWS_Q8
           : w->type == VG_MAT_BLK    ? SMALL_ROWS_BLK
                                      : SMALL_ROWS_BF16;
}

static int small_rows(const vg_mat *w, size_t n)
{
    return n >= 1 && w->p &&
           (w->type == VG_WEIGHTS_BF16 || w->type == VG_WEIGHTS_Q8_0 || w->type == VG_MAT_BLK) &&
           n <= small_limit(w);
}

/* Prepared x of n rows: bf16_prep(_n) takes n * K floats, the Q8_0 form n * K / 32 scales, 8
 * floats of gap and n * K bytes (the blocked form's n * K bf16 values, less). */
static size_t small_ws_floats(size_t n, size_t K)
{
    return n * K + n * (K / VG_QK) + 16;
}

/* For a GGUF K-quant matrix the rows of x are not worth a threshold: every several-rows product
 * widens the whole matrix once, and oneDNN's bf16 matmul is the fastest user of the result. */
#define GGUF_DNNL_MIN_ROWS 2

size_t vg_mat_ws_floats(const vg_mat *w, size_t n)
{
    if (w->dnnl)
        return vg_dnnl_ws_floats(w, n);
    if (w->type == VG_WEIGHTS_F32)
        return 0;
    if (w->type == VG_MAT_GGUF) {
        if (n <= 1)
            return vg_kq_act_bytes(w->cols) / sizeof(float) + 16; /* the Q8_K activation */
        size_t ws = tile_rows(w) * w->cols; /* the sgemm path below the avx512 level */
        if (w->dnnl_plain && n >= GGUF_DNNL_MIN_ROWS)
            ws = VG_MAX(ws, vg_dnnl_ws_floats(w, n));
        return ws;
    }
    /* never less for more rows: a caller sizes its workspace for its largest n */
    const size_t lim = small_limit(w);
    size_t ws = small_ws_floats(VG_MIN(n, lim), w->cols);
    if (n > lim) {
        ws = VG_MAX(ws, tile_rows(w) * w->cols);
        if (w->dnnl_plain)
            ws = VG_MAX(ws, vg_dnnl_ws_floats(w, n));
    }
    return ws;
}

#define MAX_MULTI 4

typedef struct gemv_job {
    const vg_mat *w[MAX_MULTI];
    float *y[MAX_MULTI];
    size_t groups[MAX_MULTI];
    size_t n_mats, n_split; /* tasks = n_mats * n_split */
    size_t n;               /* rows of x */
    const vg_kernels *k;
    const float *xp; /* BF16 */
    const int8_t *xq;
    const float *xd;    /* Q8_0 */
    const uint16_t *xb; /* VG_MAT_BLK: x in bf16 */
    vg_kq_act act;      /* VG_MAT_GGUF */
    int level;
} gemv_job;

/* Blocks [u0, u1) of a VG_MAT_BLK matrix (numbered across its slabs), every part of K in turn
 * (the first written, the others added). */
static void blk_range(const gemv_job *j, const vg_mat *w, float *y, size_t u0, size_t u1)
{
    const size_t K = w->cols, S = w->slab_rows, Kc = w->part_cols, kparts = K / Kc;
    const size_t per = (S + VG_BLK_N - 1) / VG_BLK_N; /* blocks per slab */
    while (u0 < u1) {
        const size_t sl = u0 / per, b0 = u0 % per, b1 = VG_MIN(per, b0 + (u1 - u0));
        for (size_t c = 0; c < kparts; c++)
            vg_blk_gemm(vg_blk_part(w, sl, c), Kc, S, b0, b1, j->xb + c * Kc, j->n, K, y + sl * S,
                        w->rows, c > 0);
        u0 += b1 - b0;
    }
}

/* Row groups (blocks of VG_BLK_N rows for VG_MAT_BLK) of a matrix, the units gemv_task splits. */
static size_t gemv_units(const vg_mat *w)
{
    if (w->type == VG_MAT_BLK)
        return w->rows / w->slab_rows * ((w->slab_rows + VG_BLK_N - 1) / VG_BLK_N);
    return (w->rows + VG_PACK_ROWS - 1) / VG_PACK_ROWS;
}

/* Where part `part` of s parts of a matrix's u units starts: the first half of the parts share
 * 3/4 of the units and the second half the last quarter (s even; else evenly), so that the tasks
 * taken last are short: the participant that finds no task left waits for the others' last ones,
 * on average half a task. At 2 threads (8 parts) a region's tail falls from 1/16 to 1/32 of it.
 */
static size_t split_at(size_t u, size_t part, size_t s)
{
    if (s < 2 || s % 2 != 0)
        return u * part / s;
    const size_t h = s / 2, big = u * 3 / 4;
    return part <= h ? big * part / h : big + (u - big) * (part - h) / h;
}

static void gemv_task(void *arg, size_t i)
{
    const gemv_job *j = arg;
    size_t mi = i / j->n_split, part = i % j->n_split;
    const vg_mat *w = j->w[mi];
    size_t g0 = split_at(j->groups[mi], part, j->n_split);
    size_t g1 = split_at(j->groups[mi], part + 1, j->n_split);
    if (g0 == g1)
        return;
    if (w->type == VG_MAT_BLK)
        blk_range(j, w, j->y[mi], g0, g1);
    else if (w->type == VG_MAT_GGUF)
        vg_kq_gemv(j->level, w->gtype, w->p, w->cols, w->rows, g0, g1, &j->act, j->y[mi]);
    else if (w->type == VG_WEIGHTS_BF16 && j->n == 1)
        j->k->bf16_gemv(w->p, w->cols, w->rows, g0, g1, j->xp, j->y[mi]);
    else if (w->type == VG_WEIGHTS_BF16)
        j->k->bf16_gemm(w->p, w->cols, w->rows, g0, g1, j->xp, j->n, j->y[mi], w->rows);
    else if (j->n == 1)
        j->k->q8_gemv(w->p, w->cols, w->rows, g0, g1, j->xq, j->xd, j->y[mi]);
    else
        j->k->q8_gemm(w->p, w->cols, w->rows, g0, g1, j->xq, j->xd, j->n, j->y[mi], w->rows);
}

/* n rows of x (n == 1 for VG_MAT_GGUF) times count packed matrices of the same type and cols: x
 * prepared (or quantized) once, one pool region for all of them, each matrix's groups split
 * into contiguous ranges so that every task streams one run of the packed weights once. */
static void gemv_packed(vg_model *m, const float *x, size_t n, const vg_mat *const *w,
                        float *const *y, size_t count, float *ws)
{
    const size_t K = w[0]->cols;
    gemv_job j = {.k = vg_kernels_get(-1), .n_mats = count, .n = n};
    size_t work = 0;
    for (size_t i = 0; i < count; i++) {
        j.w[i] = w[i];
        j.y[i] = y[i];
        j.groups[i] = gemv_units(w[i]);
        work += w[i]->rows * K * n;
    }
    /* small products are not worth waking a worker (a few microseconds) */
    const size_t nt = (size_t)vg_pool_threads(m->tpool);
    j.n_split = work >= ((size_t)1 << 18) && nt > 1 ? VG_POOL_SPLIT * nt : 1;
    if (w[0]->type == VG_MAT_GGUF) {
        j.level = vg_isa_level();
        j.act = vg_kq_act_view(ws, K);
        vg_kq_act_quantize(x, K, &j.act);
    } else if (w[0]->type == VG_MAT_BLK) {
        vg_to_bf16(x, n * K, (uint16_t *)(void *)ws);
        j.xb = (const uint16_t *)(const void *)ws;
    } else if (w[0]->type == VG_WEIGHTS_BF16) {
        if (n == 1)
            j.k->bf16_prep(x, K, ws);
        else
            j.k->bf16_prep_n(x, n, K, ws);
        j.xp = ws;
    } else {
        float *xd = ws;
        int8_t *xq = (int8_t *)(ws + n * (K / VG_QK) + 8);
        if (n == 1)
            vg_q8_quantize(x, K, xq, xd);
        else
            j.k->q8_prep_n(x, n, K, xq, xd);
        j.xq = xq;
        j.xd = xd;
    }
    vg_pool_run(m->tpool, j.n_mats * j.n_split, gemv_task, &j);
}

void vg_matmul_multi(vg_model *m, const float *x, size_t n, const vg_mat *const *w, float *const *y,
                     size_t count, float *ws)
{
    int same = count <= MAX_MULTI && (w[0]->type == VG_MAT_GGUF ? n == 1 : small_rows(w[0], n));
    for (size_t i = 1; same && i < count; i++)
        same = w[i]->type == w[0]->type && w[i]->cols == w[0]->cols && (w[i]->p != NULL);
    if (!same) {
        for (size_t i = 0; i < count; i++)
            vg_matmul(m, x, n, w[i], NULL, y[i], ws);
        return;
    }
    gemv_packed(m, x, n, w, y, count, ws);
}

int vg_matmul_b16_ok(const vg_mat *w, size_t n)
{
    /* past the several-rows kernels: oneDNN where the matrix has a primitive (a GGUF K-quant
     * matrix widened to bf16 first) */
    if (n == 0 || w->type == VG_WEIGHTS_F32 || small_rows(w, n) ||
        (w->type == VG_MAT_GGUF && n == 1))
        return 0;
    return w->dnnl || (w->dnnl_plain && vg_isa_level() >= VG_ISA_AVX512 &&
                       (w->type != VG_MAT_GGUF || n >= GGUF_DNNL_MIN_ROWS));
}

/* A oneDNN product failed on a primitive it accepted at load (nothing sensible to return): logged
 * (how: "" or what kind of call) and its n x w->rows outputs, in the matrix's output type, all NaN.
 */
static void dnnl_failed(size_t n, const vg_mat *w, void *y, const char *how)
{
    vg_log(VG_LOG_ERR, "model", "oneDNN matmul %zux%zux%zu%s failed", n, w->cols, w->rows, how);
    for (size_t i = 0; i < n * w->rows; i++)
        if (w->out_b16)
            ((uint16_t *)y)[i] = 0x7fc0; /* NaN */
        else
            ((float *)y)[i] = NAN;
}

/* The oneDNN product of x (float) or xb (bf16) into y (or added to y: acc), in the matrix's
 * output type (bf16 when w->out_b16); 0, or -1 with y all NaN (dnnl_failed). */
static int dnnl_call(vg_model *m, const float *x, const uint16_t *xb, size_t n, const vg_mat *w,
                     const float *b, void *y, int acc, float *ws)
{
    if (vg_dnnl_matmul(m, x, xb, n, w, b, y, acc, ws) == 0)
        return 0;
    dnnl_failed(n, w, y, "");
    return -1;
}

/* dnnl_call into float32 y: a bf16 output is widened in place. */
static void dnnl_product(vg_model *m, const float *x, const uint16_t *xb, size_t n, const vg_mat *w,
                         const float *b, float *y, float *ws)
{
    dnnl_call(m, x, xb, n, w, b, y, 0, ws);
    if (w->out_b16) { /* from the end: element i's float covers bf16 elements 2i and 2i + 1 */
        const uint16_t *h = (const uint16_t *)(const void *)y;
        for (size_t i = n * w->rows; i-- > 0;) {
            uint32_t u = (uint32_t)h[i] << 16;
            memcpy(&y[i], &u, sizeof(u));
        }
    }
}

void vg_matmul_to_b16(vg_model *m, const float *x, const uint16_t *xb, size_t n, const vg_mat *w,
                      const float *b, uint16_t *yb, float *ws)
{
    if (n > 0 && w->rows > 0)
        dnnl_call(m, x, xb, n, w, b, yb, 0, ws);
}

void vg_matmul_b16(vg_model *m, const uint16_t *xb, size_t n, const vg_mat *w, const float *b,
                   float *y, float *ws)
{
    if (n > 0 && w->rows > 0)
        dnnl_product(m, NULL, xb, n, w, b, y, ws);
}

void vg_matmul_panels(vg_model *m, const uint16_t *xb, size_t n, const vg_mat *w, float *y,
                      float *ws)
{
    if (n > 0 && w->rows > 0 && vg_dnnl_matmul_panels(m, xb, n, w, y, ws) != 0)
        dnnl_failed(n, w, y, " by panels");
}

void vg_matmul_b16_acc(vg_model *m, const uint16_t *xb, size_t n, const vg_mat *w, const float *b,
                       float *y, float *ws)
{
    if (n > 0 && w->rows > 0)
        dnnl_call(m, NULL, xb, n, w, b, y, 1, ws);
}

void vg_matmul(vg_model *m, const float *x, size_t n, const vg_mat *w, const float *b, float *y,
               float *ws)
{
    const size_t K = w->cols, N = w->rows;
    if (n == 0 || N == 0)
        return;
    if (w->type == VG_WEIGHTS_F32) {
        vg_linear_pool(m->tpool, x, n, K, w->f, b, N, y, N);
        return;
    }
    if (small_rows(w, n) || (w->type == VG_MAT_GGUF && n == 1)) {
        gemv_packed(m, x, n, &w, &y, 1, ws);
        vg_add_rows(y, n, N, N, b);
        return;
    }
    if (vg_matmul_b16_ok(w, n)) {
        dnnl_product(m, x, NULL, n, w, b, y, ws);
        return;
    }
    const size_t T = tile_rows(w);
    for (size_t r0 = 0; r0 < N; r0 += T) {
        size_t t = VG_MIN(T, N - r0);
        if (w->type == VG_MAT_GGUF) /* whole groups: T is a multiple of VG_PACK_ROWS */
            for (size_t r = 0; r < t; r += VG_PACK_ROWS)
                vg_kq_group_to_f32_level(vg_isa_level(), w->gtype,
                                         (const unsigned char *)w->p +
                                             (r0 + r) / VG_PACK_ROWS * w->group_bytes,
                                         K, ws + r * K);
        else
            for (size_t r = 0; r < t; r++)
                (void)vg_mat_row(w, r0 + r, ws + r * K); /* packed in memory: cannot fail */
        vg_linear_pool(m->tpool, x, n, K, ws, NULL, t, y + r0, N);
    }
    vg_add_rows(y, n, N, N, b);
}
