/*
 * cmd_bench.c: `vigil-model bench MODEL_DIR`, the engine's speed against this machine's ceilings.
 *
 * In one run it measures
 *  - the ceilings: OpenBLAS sgemm GFLOP/s at the shapes the engine uses (the vision MLP's fc1 and
 *    the text MLP's gate projection) and memory bandwidth (sgemv over a 512 MiB matrix and a plain
 *    streaming read);
 *  - vision: one 448x448 frame pair (28x28 = 784 patches) through vg_model_encode_slice;
 *  - prefill: 1k and 4k text tokens through vg_seq_prefill (tok/s and GFLOP/s of useful work);
 *  - decode: tokens per second after 1k and 8k cached tokens (the cache is filled with
 *    pseudo-random K/V by a private hook; decode cost does not depend on the values), with the
 *    weights read into memory and, when --mmap-dir is given, from the mapping of an F32 copy of
 *    the checkpoint (written there first when absent);
 *  - the peak resident set size;
 * and prints one table: each row's achieved rate, the matching ceiling, achieved/ceiling, and the
 * peers' numbers from ../shared/notes/cpu-performance.md (1 thread, measured on this machine).
 * Single-threaded front end; --threads sets the BLAS threads (default 1, like the peers' table).
 */
#define _DEFAULT_SOURCE /* madvise */
#include "cmds.h"

#include "common.h"
#include "engine.h"
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct bench_opts {
    const char *dir, *mmap_dir;
    int threads, quick, skip_vision, skip_prefill, skip_decode;
    int weight_type;
} bench_opts;

static void fill(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed * 2862933555777941757ull + 3037000493ull;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 40) / (double)(1 << 24) - 0.5);
    }
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

/* best-of-reps sgemm GFLOP/s for C[m,n] = A[m,k] B[n,k]^T on `threads` threads, the better of
 * OpenBLAS's own threading and the engine's split (vg_linear_pool: one single-threaded OpenBLAS
 * call per pool participant, as the engine runs its float32 products). OpenBLAS goes back to one
 * thread afterwards, as vg_model_load() leaves it, and its workers are given the 120 ms or so they
 * poll for the next call (measured here) before anything else is timed. */
static double sgemm_gflops(vg_pool *pool, int threads, int m, int n, int k, int reps)
{
    float *a = malloc((size_t)m * k * sizeof(float)), *b = malloc((size_t)n * k * sizeof(float));
    float *c = malloc((size_t)m * n * sizeof(float));
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return 0;
    }
    fill(a, (size_t)m * k, 1);
    fill(b, (size_t)n * k, 2);
    double best = 1e30;
    /* how 0: split over the pool; how 1: one call on OpenBLAS's own threads */
    for (int how = 0; how < (threads > 1 ? 2 : 1); how++) {
        if (how == 1)
            openblas_set_num_threads(threads);
        for (int r = 0; r < reps + 1; r++) {
            double t0 = vg_now_ms();
            vg_linear_pool(how == 0 ? pool : NULL, a, (size_t)m, (size_t)k, b, NULL, (size_t)n, c,
                           (size_t)n);
            double t = vg_now_ms() - t0;
            if (r > 0 && t < best) /* the first run warms up */
                best = t;
        }
    }
    if (threads > 1) {
        openblas_set_num_threads(1);
        usleep(250 * 1000);
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * m * n * (double)k / (best * 1e6);
}

/* GB/s streaming a 512 MiB matrix through sgemv, and through a plain summing loop */
static void bandwidth(int reps, double *gemv_gbs, double *read_gbs)
{
    const int rows = 8192, cols = 16384; /* 512 MiB */
    size_t n = (size_t)rows * cols;
    float *a = malloc(n * sizeof(float)), *x = malloc(cols * sizeof(float)),
          *y = malloc(rows * sizeof(float));
    *gemv_gbs = *read_gbs = 0;
    if (!a || !x || !y) {
        free(a);
        free(x);
        free(y);
        return;
    }
    fill(a, n, 3);
    fill(x, cols, 4);
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = vg_now_ms();
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, a, cols, x, 1, 0.0f, y, 1);
        double t = vg_now_ms() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    *gemv_gbs = (double)n * sizeof(float) / (best * 1e6);
    best = 1e30;
    volatile float sink = 0;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = vg_now_ms();
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        for (size_t i = 0; i + 8 <= n; i += 8) {
            s0 += a[i];
            s1 += a[i + 1];
            s2 += a[i + 2];
            s3 += a[i + 3];
            s4 += a[i + 4];
            s5 += a[i + 5];
            s6 += a[i + 6];
            s7 += a[i + 7];
        }
        sink = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
        double t = vg_now_ms() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    (void)sink;
    *read_gbs = (double)n * sizeof(float) / (best * 1e6);
    free(a);
    free(x);
    free(y);
}

enum { GEMV_BF16, GEMV_Q8, GEMV_BLK };

typedef struct gemv_bench_job {
    const void *w;
    size_t K, rows, groups, parts;
    int kind; /* GEMV_BF16, GEMV_Q8 (row groups) or GEMV_BLK (blocked: vg_blk_gemm, AMX tiles) */
    const float *xp, *xd;
    const int8_t *xq;
    const uint16_t *xb;
    float *y;
} gemv_bench_job;

static void gemv_bench_task(void *arg, size_t i)
{
    const gemv_bench_job *j = arg;
    size_t g0 = j->groups * i / j->parts, g1 = j->groups * (i + 1) / j->parts;
    const vg_kernels *k = vg_kernels_get(-1);
    if (j->kind == GEMV_BLK)
        vg_blk_gemm(j->w, j->K, j->rows, g0, g1, j->xb, 1, j->K, j->y, j->rows, 0);
    else if (j->kind == GEMV_Q8)
        k->q8_gemv(j->w, j->K, j->rows, g0, g1, j->xq, j->xd, j->y);
    else
        k->bf16_gemv(j->w, j->K, j->rows, g0, g1, j->xp, j->y);
}

/* GB/s of the engine's own GEMV kernel (kind: GEMV_BF16 or GEMV_Q8, the level in use; GEMV_BLK,
 * bf16 in the blocked layout, AMX tiles) over 512 MiB of packed weights of K = k columns (a stack
 * of decode matrices: streamed from memory, not cache), on the pool's threads. */
static double gemv_gbs(vg_pool *pool, int kind, size_t K, int reps)
{
    const size_t gb = kind == GEMV_BLK  ? (size_t)VG_BLK_N * K * 2
                      : kind == GEMV_Q8 ? vg_pack_group_bytes_q8(K)
                                        : vg_pack_group_bytes_bf16(K);
    const size_t groups = ((size_t)512 << 20) / gb;
    const size_t rows = groups * (kind == GEMV_BLK ? VG_BLK_N : VG_PACK_ROWS);
    unsigned char *w = NULL;
    if (posix_memalign((void **)&w, (size_t)2 << 20, groups * gb) != 0)
        return 0;
#ifdef MADV_HUGEPAGE
    madvise(w, groups * gb, MADV_HUGEPAGE);
#endif
    float *row = malloc(K * sizeof(float)), *x = malloc(K * sizeof(float));
    float *xp = malloc(K * sizeof(float)), *xd = malloc(K / VG_QK * sizeof(float));
    int8_t *xq = malloc(K);
    uint16_t *xb = malloc(K * sizeof(uint16_t));
    float *y = malloc(rows * sizeof(float));
    double best = 1e30;
    if (row && x && xp && xd && xq && xb && y) {
        fill(x, K, 9);
        vg_to_bf16(x, K, xb);
        for (int r = 0; r < (kind == GEMV_BLK ? VG_BLK_N : VG_PACK_ROWS);
             r++) { /* one real group, copied
                     * everywhere */
            fill(row, K, 10 + (uint64_t)r);
            if (kind == GEMV_BLK)
                for (size_t k = 0; k < K; k++)
                    ((uint16_t *)(void *)w)[vg_blk_index(k, (size_t)r)] = vg_f32_to_bf16(row[k]);
            else if (kind == GEMV_Q8)
                vg_pack_row_q8(row, K, r, (int8_t *)w);
            else
                vg_pack_row_bf16(row, K, r, (uint16_t *)(void *)w);
        }
        for (size_t g = 1; g < groups; g++)
            memcpy(w + g * gb, w, gb);
        vg_kernels_get(-1)->bf16_prep(x, K, xp);
        vg_q8_quantize(x, K, xq, xd);
        gemv_bench_job j = {.w = w,
                            .K = K,
                            .rows = rows,
                            .groups = groups,
                            .parts = (size_t)vg_pool_threads(pool),
                            .kind = kind,
                            .xp = xp,
                            .xd = xd,
                            .xq = xq,
                            .xb = xb,
                            .y = y};
        for (int r = 0; r < reps + 1; r++) {
            double t0 = vg_now_ms();
            vg_pool_run(pool, j.parts, gemv_bench_task, &j);
            double t = vg_now_ms() - t0;
            if (r > 0 && t < best)
                best = t;
        }
    }
    free(row);
    free(x);
    free(xp);
    free(xd);
    free(xq);
    free(xb);
    free(y);
    free(w);
    return best < 1e30 ? (double)(groups * gb) / (best * 1e6) : 0;
}

/* FLOPs of one vision slice of N patches */
static double vision_flops(const vg_model_info *in, double N)
{
    double D = in->vision_hidden, FF = in->vision_intermediate, O = in->out_hidden_size;
    double K = (double)in->in_channels * in->temporal_patch_size * in->patch_size * in->patch_size;
    double mm = (double)in->spatial_merge_size * in->spatial_merge_size, MD = D * mm;
    double f = 2 * N * K * D;
    f += in->vision_depth * (2 * N * D * 3 * D + 4 * N * N * D + 2 * N * D * D + 4 * N * D * FF);
    f += (1 + in->n_deepstack) * 2 * (N / mm) * (MD * MD + MD * O);
    return f;
}

/* useful FLOPs of prefilling n tokens after p0 cached ones (last-token logits only) */
static double prefill_flops(const vg_model_info *in, double p0, double n)
{
    double D = in->hidden_size, hd = in->head_dim, QD = in->n_heads * hd, KD = in->n_kv_heads * hd,
           FF = in->intermediate_size;
    double lin = 2 * (D * QD + 2 * D * KD + QD * D + 3 * D * FF);
    double att = 4 * QD * (n * p0 + n * (n + 1) / 2);
    return in->n_layers * (n * lin + att) + 2 * D * in->vocab_size;
}

/* bytes one decode step reads: every text weight (in the loaded weight type; norms float32) plus
 * the KV cache of ctx tokens (float32 or bf16, as loaded) */
static double decode_bytes(const vg_model_info *in, double ctx)
{
    const double wb = in->weight_type == VG_WEIGHTS_BF16   ? 2.0
                      : in->weight_type == VG_WEIGHTS_Q8_0 ? 34.0 / 32.0
                                                           : 4.0;
    double D = in->hidden_size, hd = in->head_dim, QD = in->n_heads * hd, KD = in->n_kv_heads * hd,
           FF = in->intermediate_size;
    double per_layer = wb * (D * QD + 2 * D * KD + QD * D + 3 * D * FF) + 4 * (2 * D + 2 * hd);
    double w = in->n_layers * per_layer + wb * D * in->vocab_size + 4 * D;
    if (in->text_weight_bytes > 0) /* what was loaded (K-quant layouts, an embedding in the file) */
        w = (double)in->text_weight_bytes + in->n_layers * 4 * (2 * D + 2 * hd) + 4 * D;
    double kv = in->n_layers * 2 * ctx * KD;
    return w + (in->kv_bytes > 0 ? in->kv_bytes : 4) * kv;
}

typedef struct row {
    char what[48];
    double value;
    char unit[12];
    double ceiling;    /* same unit; 0 = none */
    int ceil_kind;     /* 0 none, 1 vision sgemm, 2 text sgemm, 3 bandwidth roofline */
    double ceil_scale; /* ceiling = scale * current best of that kind */
    char ceil_name[24];
    char peers[64];
} row;

typedef struct table {
    row rows[32];
    int n_rows;
    /* ceilings: the best seen in the run, re-measured around every engine measurement because
     * other processes share the cores (a single early measurement can be far off) */
    double g_vis, g_txt, bw;
    double d_vis, d_txt, i_vis, i_txt; /* oneDNN bf16 and int8 matmul GFLOP/s, same shapes */
    double rd;                         /* vectorized streaming read on the engine's threads */
    int vis_m, vis_k, txt_n, txt_k, reps, threads;
    vg_pool *pool;
} table;

typedef struct read_job {
    const uint64_t *p;
    size_t n, parts;
    uint64_t out[64];
} read_job;

static void read_task(void *arg, size_t i)
{
    read_job *j = arg;
    size_t a = j->n * i / j->parts, b = j->n * (i + 1) / j->parts;
    j->out[i] = vg_kernels_get(-1)->read_xor(j->p + a, b - a);
}

/* GB/s reading 512 MiB of huge-page-advised memory with the level's widest loads, split over the
 * pool's threads (the ceiling for decode, which streams every weight once per token). */
static double stream_read_gbs(vg_pool *pool, int reps)
{
    const size_t bytes = (size_t)512 << 20;
    void *p = NULL;
    if (posix_memalign(&p, (size_t)2 << 20, bytes) != 0)
        return 0;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    memset(p, 0x5a, bytes);
    read_job j = {.p = p, .n = bytes / 8, .parts = (size_t)vg_pool_threads(pool)};
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = vg_now_ms();
        vg_pool_run(pool, j.parts, read_task, &j);
        double t = vg_now_ms() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    free(p);
    return (double)bytes / (best * 1e6);
}

static void remeasure(table *tb)
{
    double g, a, b;
    if (tb->vis_m > 0 &&
        (g = vg_dnnl_ceiling(0, 784, tb->vis_k, tb->vis_m, tb->threads, 1)) > tb->d_vis)
        tb->d_vis = g;
    if ((g = vg_dnnl_ceiling(0, 1024, tb->txt_k, tb->txt_n, tb->threads, 1)) > tb->d_txt)
        tb->d_txt = g;
    if ((g = stream_read_gbs(tb->pool, 1)) > tb->rd)
        tb->rd = g;
    if (tb->vis_m > 0 &&
        (g = sgemm_gflops(tb->pool, tb->threads, 784, tb->vis_m, tb->vis_k, 1)) > tb->g_vis)
        tb->g_vis = g;
    if ((g = sgemm_gflops(tb->pool, tb->threads, 1024, tb->txt_n, tb->txt_k, 1)) > tb->g_txt)
        tb->g_txt = g;
    bandwidth(1, &a, &b);
    if (VG_MAX(VG_MAX(a, b), tb->rd) > tb->bw)
        tb->bw = VG_MAX(VG_MAX(a, b), tb->rd);
}

static double best_ceiling(const table *tb, int kind)
{
    switch (kind) {
    case 1:
        return tb->g_vis;
    case 2:
        return tb->g_txt;
    case 3:
        return tb->bw;
    case 4:
        return tb->d_vis;
    case 5:
        return tb->d_txt;
    default:
        return 0.0;
    }
}

/* kind: 0 no ceiling; 1/2 sgemm GFLOP/s (vision/text shape); 3 bandwidth, scaled by scale (the
 * roofline in tok/s is bandwidth / bytes per token); 4/5 oneDNN bf16 matmul GFLOP/s (vision/text
 * shape). */
static void add_row(table *tb, const char *what, double value, const char *unit, int kind,
                    double scale, const char *peers)
{
    if (tb->n_rows >= (int)VG_ARRAY_LEN(tb->rows))
        return;
    row *r = &tb->rows[tb->n_rows++];
    snprintf(r->what, sizeof(r->what), "%s", what);
    r->value = value;
    snprintf(r->unit, sizeof(r->unit), "%s", unit);
    r->ceil_kind = kind;
    r->ceil_scale = scale;
    snprintf(r->ceil_name, sizeof(r->ceil_name), "%s",
             kind == 3   ? "bandwidth"
             : kind >= 4 ? "oneDNN bf16"
             : kind      ? "sgemm"
                         : "");
    snprintf(r->peers, sizeof(r->peers), "%s", peers);
    printf("  %-38s %10.2f %-7s", what, value, unit);
    double c = scale * best_ceiling(tb, kind);
    if (c > 0)
        printf("  (ceiling so far %.2f, %.0f%%)", c, 100.0 * value / c);
    printf("\n");
    fflush(stdout);
}

static int bench_decode(vg_model *m, size_t ctx, int steps, double *tok_s, char *err, size_t errlen)
{
    const vg_model_info *in = vg_model_get_info(m);
    vg_seq *s = NULL;
    int rc = vg_seq_create(m, ctx + (size_t)steps + 1, &s, err, errlen);
    if (rc < 0)
        return rc;
    float *lg = malloc((size_t)in->vocab_size * sizeof(float));
    if (!lg) {
        vg_seq_free(s);
        return VG_ENOMEM;
    }
    vg_seq_fill_random(s, ctx, 7);
    /* one warm-up step, then the timed ones */
    int32_t id = 1000;
    double t0 = 0;
    for (int i = 0; i <= steps && rc == 0; i++) {
        if (i == 1)
            t0 = vg_now_ms();
        rc = vg_seq_decode(s, id, (int32_t)vg_seq_len(s), lg, err, errlen);
        id = vg_argmax(lg, (size_t)in->vocab_size);
        if (id == in->video_token_id || id == in->image_token_id)
            id = 1000;
    }
    double t = vg_now_ms() - t0;
    *tok_s = steps / (t / 1000.0);
    free(lg);
    vg_seq_free(s);
    return rc;
}

static int bench_prefill(vg_model *m, size_t n, double *secs, char *err, size_t errlen)
{
    const vg_model_info *in = vg_model_get_info(m);
    vg_seq *s = NULL;
    int rc = vg_seq_create(m, n, &s, err, errlen);
    if (rc < 0)
        return rc;
    int32_t *ids = malloc(n * sizeof(int32_t)), *pos = malloc(3 * n * sizeof(int32_t));
    float *lg = malloc((size_t)in->vocab_size * sizeof(float));
    if (!ids || !pos || !lg) {
        rc = VG_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int32_t)(1000 + (i * 7919) % 100000);
        pos[i] = pos[n + i] = pos[2 * n + i] = (int32_t)i;
    }
    vg_prefill_input pin = {.ids = ids, .n = n, .pos = pos};
    double t0 = vg_now_ms();
    rc = vg_seq_prefill(s, &pin, lg, 0, NULL, err, errlen);
    *secs = (vg_now_ms() - t0) / 1000.0;
out:
    free(ids);
    free(pos);
    free(lg);
    vg_seq_free(s);
    return rc;
}

/* Writes dir/model.safetensors as F32 (plus the JSON files) from src's checkpoint. */
static int write_f32_copy(const char *src, const char *dst, char *err, size_t errlen)
{
    vg_st *st = NULL;
    int rc = vg_st_open_dir(src, &st, err, errlen);
    if (rc < 0)
        return rc;
    mkdir(dst, 0755);
    const char *copy[] = {"config.json", "generation_config.json", "tokenizer.json",
                          "tokenizer_config.json", "video_preprocessor_config.json"};
    for (size_t i = 0; i < VG_ARRAY_LEN(copy); i++) {
        char a[4096], b[4096], *data = NULL;
        size_t len = 0;
        snprintf(a, sizeof(a), "%s/%s", src, copy[i]);
        snprintf(b, sizeof(b), "%s/%s", dst, copy[i]);
        if (vg_read_file(a, (size_t)1 << 30, &data, &len, NULL, 0) < 0)
            continue;
        FILE *f = fopen(b, "wb");
        if (f) {
            fwrite(data, 1, len, f);
            fclose(f);
        }
        free(data);
    }
    size_t n = vg_st_count(st);
    vg_st_write_tensor *t = calloc(n, sizeof(*t));
    if (!t) {
        vg_st_close(st);
        return VG_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const vg_tensor *x = vg_st_at(st, i);
        t[i].name = x->name;
        t[i].dtype = VG_DT_F32;
        t[i].ndim = x->ndim;
        memcpy(t[i].shape, x->shape, sizeof(t[i].shape));
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/model.safetensors", dst);
    vg_st_writer *w = NULL;
    rc = vg_st_writer_open(path, t, n, &w, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const vg_tensor *x = vg_st_at(st, i);
        float *buf = malloc(x->numel * sizeof(float) + 1);
        if (!buf) {
            rc = VG_ENOMEM;
            break;
        }
        vg_tensor_to_f32(x, buf);
        rc = vg_st_writer_write(w, buf, x->numel * sizeof(float), err, errlen);
        free(buf);
    }
    if (w)
        rc = rc == 0 ? vg_st_writer_finish(w, err, errlen) : (vg_st_writer_abort(w), rc);
    free(t);
    vg_st_close(st);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vigil-model bench MODEL_DIR [options]\n\n"
               "  --threads N      engine and BLAS threads (default 1, as in the peers' table)\n"
               "  --weights TYPE   f32, bf16, q8_0 or auto (default auto: bf16 for a bf16\n"
               "                   checkpoint)\n"
               "  --quick          fewer repetitions, no 4k prefill, decode at 1k only\n"
               "  --mmap-dir DIR   also decode with the weights mapped from an F32 copy in DIR\n"
               "                   (written there first when DIR/model.safetensors is absent)\n"
               "  --no-vision, --no-prefill, --no-decode   skip a part\n");
}

int vg_cmd_bench(int argc, char **argv)
{
    bench_opts o = {.threads = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
            o.threads = atoi(argv[++i]);
        } else if (strcmp(a, "--weights") == 0 && i + 1 < argc) {
            if (vg_weight_type_parse(argv[++i], &o.weight_type) < 0) {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(a, "--mmap-dir") == 0 && i + 1 < argc) {
            o.mmap_dir = argv[++i];
        } else if (strcmp(a, "--quick") == 0) {
            o.quick = 1;
        } else if (strcmp(a, "--no-vision") == 0) {
            o.skip_vision = 1;
        } else if (strcmp(a, "--no-prefill") == 0) {
            o.skip_prefill = 1;
        } else if (strcmp(a, "--no-decode") == 0) {
            o.skip_decode = 1;
        } else if (a[0] == '-' || o.dir) {
            usage(stderr);
            return 2;
        } else {
            o.dir = a;
        }
    }
    if (!o.dir || o.threads <= 0) {
        usage(stderr);
        return 2;
    }
    char err[512];
    table tb;
    memset(&tb, 0, sizeof(tb));
    const int reps = o.quick ? 1 : 3;
    openblas_set_num_threads(o.threads);
    printf("vigil-model bench %s, %d thread%s%s\n", o.dir, o.threads, o.threads == 1 ? "" : "s",
           o.quick ? ", quick" : "");

    vg_model_params mp = vg_model_default_params();
    mp.n_threads = o.threads;
    mp.load_vision = !o.skip_vision;
    mp.weight_type = o.weight_type;
    vg_model *m = NULL;
    double t0 = vg_now_ms();
    if (vg_model_load(o.dir, &mp, &m, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench: %s\n", err);
        return 1;
    }
    const vg_model_info *in = vg_model_get_info(m);
    printf("model %s: %zu parameters, %.2f GiB of %s weights, %s kernels, loaded in %.1f s\n",
           in->name, in->n_params, (double)in->weight_bytes / (1 << 30),
           vg_weight_type_name(in->weight_type), in->isa, (vg_now_ms() - t0) / 1000.0);

    tb.reps = reps;
    if (in->has_vision) {
        tb.vis_m = in->vision_intermediate;
        tb.vis_k = in->vision_hidden;
    }
    tb.txt_n = in->intermediate_size;
    tb.txt_k = in->hidden_size;
    tb.threads = o.threads;
    if (vg_pool_create(o.threads, &tb.pool) < 0) {
        vg_model_free(m);
        return 1;
    }
    double bw_gemv = 0, bw_read = 0;
    if (tb.vis_m > 0) {
        tb.g_vis = sgemm_gflops(tb.pool, o.threads, 784, tb.vis_m, tb.vis_k, reps);
        tb.d_vis = vg_dnnl_ceiling(0, 784, tb.vis_k, tb.vis_m, o.threads, reps);
        tb.i_vis = vg_dnnl_ceiling(1, 784, tb.vis_k, tb.vis_m, o.threads, reps);
    }
    tb.g_txt = sgemm_gflops(tb.pool, o.threads, 1024, tb.txt_n, tb.txt_k, reps);
    tb.d_txt = vg_dnnl_ceiling(0, 1024, tb.txt_k, tb.txt_n, o.threads, reps);
    tb.i_txt = vg_dnnl_ceiling(1, 1024, tb.txt_k, tb.txt_n, o.threads, reps);
    bandwidth(reps, &bw_gemv, &bw_read);
    tb.rd = stream_read_gbs(tb.pool, reps);
    tb.bw = VG_MAX(VG_MAX(bw_gemv, bw_read), tb.rd);
    printf("first ceilings: sgemm %.1f / %.1f, oneDNN bf16 %.1f / %.1f, int8 %.1f / %.1f GFLOP/s; "
           "sgemv %.2f, read %.2f, vector read %.2f GB/s\n",
           tb.g_vis, tb.g_txt, tb.d_vis, tb.d_txt, tb.i_vis, tb.i_txt, bw_gemv, bw_read, tb.rd);

    printf("engine:\n");
    const int lossy = in->weight_type != VG_WEIGHTS_F32;
    if (!o.skip_decode) { /* the decode kernels alone, against the same bandwidth ceiling */
        double g = gemv_gbs(tb.pool, GEMV_BF16, (size_t)tb.txt_k, reps);
        remeasure(&tb);
        add_row(&tb, "own GEMV bf16 K=hidden, 512 MiB, GB/s", g, "GB/s", 3, 1.0, "");
        g = gemv_gbs(tb.pool, GEMV_Q8, (size_t)tb.txt_k, reps);
        remeasure(&tb);
        add_row(&tb, "own GEMV q8_0 K=hidden, 512 MiB, GB/s", g, "GB/s", 3, 1.0, "");
        if (vg_amx_ok()) { /* what bf16 text matrices use on this CPU (VG_MAT_BLK) */
            g = gemv_gbs(tb.pool, GEMV_BLK, (size_t)tb.txt_k, reps);
            remeasure(&tb);
            add_row(&tb, "own GEMV bf16 AMX K=hidden, 512 MiB, GB/s", g, "GB/s", 3, 1.0, "");
        }
    }
    if (!o.skip_vision && in->has_vision) {
        const int gh = 28, gw = 28;
        size_t K =
            (size_t)in->in_channels * in->temporal_patch_size * in->patch_size * in->patch_size;
        float *px = malloc((size_t)gh * gw * K * sizeof(float));
        if (px) {
            fill(px, (size_t)gh * gw * K, 5);
            double best = 1e30;
            /* best of 2 (3): the first call also makes the primitives of this slice's shapes,
             * which every later frame of a stream reuses */
            for (int r = 0; r < (o.quick ? 2 : 3); r++) {
                vg_vision_out *vo = NULL;
                double ts = vg_now_ms();
                if (vg_model_encode_slice(m, px, gh, gw, NULL, &vo, err, sizeof(err)) < 0) {
                    fprintf(stderr, "bench: %s\n", err);
                    break;
                }
                best = fmin(best, (vg_now_ms() - ts) / 1000.0);
                vg_vision_out_free(vo);
            }
            remeasure(&tb);
            double gf = vision_flops(in, gh * gw) / best / 1e9;
            add_row(&tb, "vision 448x448 pair (784 patches), s", best, "s", 0, 0,
                    "tf32 7.8-24.1, bf16 3.2-15.5, llama.cpp f16 5.45");
            add_row(&tb, "  vision GFLOP/s", gf, "GFLOP/s", lossy && tb.d_vis > 0 ? 4 : 1, 1.0, "");
            free(px);
        }
    }
    if (!o.skip_prefill) {
        size_t lens[2] = {1024, 4096};
        for (int k = 0; k < (o.quick ? 1 : 2); k++) {
            double secs = 0;
            if (bench_prefill(m, lens[k], &secs, err, sizeof(err)) < 0) {
                fprintf(stderr, "bench: prefill: %s\n", err);
                break;
            }
            remeasure(&tb);
            char w[64];
            snprintf(w, sizeof(w), "prefill %zu tokens, tok/s", lens[k]);
            add_row(&tb, w, lens[k] / secs, "tok/s", 0, 0,
                    k == 0 ? "tf32 14-28, bf16 20-88, llama.cpp f16 39-44, q8_0 31-35" : "");
            add_row(&tb, "  prefill GFLOP/s", prefill_flops(in, 0, (double)lens[k]) / secs / 1e9,
                    "GFLOP/s", lossy && tb.d_txt > 0 ? 5 : 2, 1.0, "");
        }
    }
    if (!o.skip_decode) {
        size_t ctxs[2] = {1024, 8192};
        for (int k = 0; k < (o.quick ? 1 : 2); k++) {
            double ts = 0;
            if (bench_decode(m, ctxs[k], o.quick ? 16 : 32, &ts, err, sizeof(err)) < 0) {
                fprintf(stderr, "bench: decode: %s\n", err);
                break;
            }
            remeasure(&tb);
            char w[64];
            snprintf(w, sizeof(w), "decode after %zu, tok/s (in memory)", ctxs[k]);
            add_row(&tb, w, ts, "tok/s", 3, 1e9 / decode_bytes(in, (double)ctxs[k]),
                    k == 0 ? "tf32 0.9, bf16 3.0, llama.cpp f16 6.4-7.5, q8_0 9.8-11.4" : "");
        }
    }
    add_row(&tb, "peak RSS (incl. checkpoint mapping at load)", peak_rss_mib(), "MiB", 0, 0, "");
    vg_pool_destroy(tb.pool);
    tb.pool = NULL;
    vg_model_free(m);
    m = NULL;

    if (o.mmap_dir && !o.skip_decode) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof(p), "%s/model.safetensors", o.mmap_dir);
        if (stat(p, &st) != 0) {
            printf("writing an F32 copy of the checkpoint to %s ...\n", o.mmap_dir);
            fflush(stdout);
            if (write_f32_copy(o.dir, o.mmap_dir, err, sizeof(err)) < 0) {
                fprintf(stderr, "bench: %s\n", err);
                return 1;
            }
        }
        mp.use_mmap = 1;
        mp.load_vision = 0;
        t0 = vg_now_ms();
        if (vg_model_load(o.mmap_dir, &mp, &m, err, sizeof(err)) < 0) {
            fprintf(stderr, "bench: %s\n", err);
            return 1;
        }
        in = vg_model_get_info(m);
        printf("mapped F32 model loaded in %.1f s (%.2f GiB copied)\n", (vg_now_ms() - t0) / 1000.0,
               (double)in->weight_bytes / (1 << 30));
        double ts = 0;
        /* one untimed pass pages the weights in */
        if (bench_decode(m, 1024, 1, &ts, err, sizeof(err)) == 0 &&
            bench_decode(m, 1024, o.quick ? 16 : 32, &ts, err, sizeof(err)) == 0) {
            remeasure(&tb);
            add_row(&tb, "decode after 1024, tok/s (mapped F32)", ts, "tok/s", 3,
                    1e9 / decode_bytes(in, 1024), "llama.cpp: mmap 2-4x slower here");
        } else {
            fprintf(stderr, "bench: decode (mapped): %s\n", err);
        }
        vg_model_free(m);
    }

    printf(
        "\nceilings are the best seen in this run (re-measured after every engine measurement)\n");
    printf("| measurement | vigil | unit | ceiling | achieved/ceiling | peers (1 thread) |\n");
    printf("|---|---:|---|---:|---:|---|\n");
    if (tb.vis_m > 0)
        printf("| sgemm 784x%dx%d | %.1f | GFLOP/s | | | notes: ~103 (Haswell kernels) |\n",
               tb.vis_m, tb.vis_k, tb.g_vis);
    printf("| sgemm 1024x%dx%d | %.1f | GFLOP/s | | | notes: ~103 |\n", tb.txt_n, tb.txt_k,
           tb.g_txt);
    if (tb.vis_m > 0)
        printf("| oneDNN bf16 / int8 matmul 784x%dx%d | %.1f / %.1f | GFLOP/s | | | notes (Zen 4): "
               "~228 / ~433 |\n",
               tb.vis_m, tb.vis_k, tb.d_vis, tb.i_vis);
    printf("| oneDNN bf16 / int8 matmul 1024x%dx%d | %.1f / %.1f | GFLOP/s | | | notes (Zen 4): "
           "~208 / ~444 |\n",
           tb.txt_n, tb.txt_k, tb.d_txt, tb.i_txt);
    printf("| memory bandwidth (best of sgemv / scalar read / vector read on %d thread%s, 512 MiB) "
           "| %.2f | GB/s | | | notes: ~26 (sgemv), ~31 (AVX-512 read) |\n",
           o.threads, o.threads == 1 ? "" : "s", tb.bw);
    for (int i = 0; i < tb.n_rows; i++) {
        const row *r = &tb.rows[i];
        double c = r->ceil_scale * best_ceiling(&tb, r->ceil_kind);
        if (c > 0)
            printf("| %s | %.2f | %s | %.2f (%s) | %.0f%% | %s |\n", r->what, r->value, r->unit, c,
                   r->ceil_name, 100.0 * r->value / c, r->peers);
        else
            printf("| %s | %.2f | %s | | | %s |\n", r->what, r->value, r->unit, r->peers);
    }
    return 0;
}
