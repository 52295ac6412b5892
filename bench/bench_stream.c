/*
 * bench_stream.c: the steady-state cost of a live stream (daemon/streams.c) on one model, per
 * second of video and per update, at several window lengths and frame sizes. Not a test.
 *
 * It makes the calls a stream makes once its window is full, through the same video-QA session
 * (qa.h) as daemon/streams.c: per new pair, vg_model_encode_slice on one temporal slice of random
 * normalized pixels, vg_qa_append_pair + vg_qa_sync (that pair's prefill at the end of the window)
 * and vg_qa_evict_oldest; per update and question, vg_qa_ask with greedy generation of a fixed
 * number of tokens (stop ids off, so every answer costs the same). The window's earlier pairs are
 * pseudo-random K/V (vg_qa_bench_fill): the cost depends on the cache length, not on its values,
 * and filling a 128 s window of a 2B model by prefill would take many minutes on a CPU.
 *
 * Output per (frame size, window): encode, pair prefill, eviction and answer latency, and the
 * questions' prefill within the answer (medians),
 * compute seconds per second of video at the given fps and update interval (the real-time factor:
 * below 1 keeps up), and the highest fps that keeps up at that frame size (answers included).
 *
 * usage: bench_stream [--model DIR] [--windows 8,32,128] [--sizes 256x256,...] [--fps 2]
 *                     [--update 2] [--questions 1] [--tokens 16] [--iters 3] [--threads N]
 *                     [--weights auto|f32|bf16|q8_0]
 * Single-threaded apart from the engine's BLAS threads.
 */
#define _POSIX_C_SOURCE 200809L
#include "common.h"
#include "model.h"
#include "qa.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LIST 8

typedef struct opts {
    const char *model;
    int windows[MAX_LIST], n_windows;
    int sizes[MAX_LIST][2], n_sizes; /* width, height */
    double fps, update_s;
    int questions, tokens, iters, threads;
    int weight_type; /* VG_WEIGHTS_* (vg_weight_type_parse) */
} opts;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct result {
    double enc_ms, pre_ms, evict_ms, ans_ms, ask_pre_ms;
    size_t window_tokens;
} result;

/* One (size, window) point. */
static int run_point(vg_model *m, const opts *o, int fw, int fh, int window_s, result *res)
{
    const vg_model_info *mi = vg_model_get_info(m);
    char err[512] = "";
    int factor = mi->patch_size * mi->spatial_merge_size;
    int gh = fh / mi->patch_size, gw = fw / mi->patch_size;
    int mh = gh / mi->spatial_merge_size, mw = gw / mi->spatial_merge_size;
    if (fh % factor || fw % factor) {
        fprintf(stderr, "bench_stream: %dx%d is not a multiple of %d\n", fw, fh, factor);
        return VG_EINVAL;
    }
    size_t cols =
        (size_t)mi->in_channels * mi->temporal_patch_size * mi->patch_size * mi->patch_size;
    size_t rows = (size_t)gh * gw;
    float *patches = malloc(rows * cols * sizeof(float));
    vg_qa *qa = NULL;
    int rc = 0;
    if (!patches) {
        rc = VG_ENOMEM;
        goto out;
    }
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < rows * cols; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        patches[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 4.0 - 2.0);
    }
    const char *question = "Is there a red box? When?";
    size_t n_q = 0;
    if ((rc = vg_qa_question_tokens(m, question, &n_q, err, sizeof err)) < 0)
        goto out;
    size_t pairs = (size_t)ceil(window_s * o->fps / 2.0);
    double dt = 2.0 / o->fps;
    size_t pair = vg_qa_pair_tokens(mh, mw);
    size_t cap = 16 + (pairs + 1) * pair + n_q + (size_t)o->tokens + 8;
    vg_qa_params qp = {cap, NULL};
    if ((rc = vg_qa_create(m, &qp, &qa, err, sizeof err)) < 0 ||
        (rc = vg_qa_bench_fill(qa, pairs, mh, mw, 0.0, dt, 7, err, sizeof err)) < 0)
        goto out;
    res->window_tokens = vg_qa_cached_tokens(qa);
    double enc[32], pre[32], ev[32], ans[32], askp[32];
    int iters = VG_MIN(o->iters, 32);
    vg_qa_ask_params ap = {vg_model_default_gen_params(m), NULL, NULL, NULL, NULL, 0};
    ap.gen.do_sample = 0;
    ap.gen.max_new_tokens = o->tokens;
    ap.gen.n_stop_ids = 0;
    for (int it = 0; it < iters; it++) {
        double t0 = vg_now_ms();
        vg_vision_out *vo = NULL;
        if ((rc = vg_model_encode_slice(m, patches, gh, gw, NULL, &vo, err, sizeof err)) < 0)
            goto out;
        enc[it] = vg_now_ms() - t0;
        t0 = vg_now_ms();
        double t = (double)(pairs + (size_t)it) * dt;
        if ((rc = vg_qa_append_pair(qa, vo, mh, mw, t, err, sizeof err)) < 0 ||
            (rc = vg_qa_sync(qa, NULL, err, sizeof err)) < 0)
            goto out;
        pre[it] = vg_now_ms() - t0;
        t0 = vg_now_ms();
        if ((rc = vg_qa_evict_oldest(qa)) < 0)
            goto out;
        ev[it] = vg_now_ms() - t0;
        /* One update: every question over the window. */
        t0 = vg_now_ms();
        askp[it] = 0;
        for (int qi = 0; qi < o->questions; qi++) {
            vg_qa_answer a = {0};
            rc = vg_qa_ask(qa, question, &ap, &a, err, sizeof err);
            askp[it] += a.prefill_ms;
            vg_qa_answer_clear(&a);
            if (rc < 0)
                goto out;
        }
        ans[it] = vg_now_ms() - t0;
    }
    res->enc_ms = median(enc, iters);
    res->pre_ms = median(pre, iters);
    res->evict_ms = median(ev, iters);
    res->ans_ms = median(ans, iters);
    res->ask_pre_ms = median(askp, iters);
out:
    if (rc < 0)
        fprintf(stderr, "bench_stream: %s\n", err[0] ? err : vg_strerror(rc));
    vg_qa_free(qa);
    free(patches);
    return rc;
}

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0)
            return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kib = atol(line + 6);
    fclose(f);
    return kib;
}

int main(int argc, char **argv)
{
    opts o = {access("/tmp/vg-2b/config.json", R_OK) == 0 ? "/tmp/vg-2b" : NULL,
              {8, 32, 128},
              3,
              {{256, 256}},
              1,
              2.0,
              2.0,
              1,
              16,
              3,
              0,
              VG_WEIGHTS_AUTO};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_stream: %s needs a value (see the top of bench_stream.c)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model"))
            o.model = v;
        else if (!strcmp(a, "--windows"))
            o.n_windows = parse_list(v, o.windows, MAX_LIST);
        else if (!strcmp(a, "--sizes")) {
            o.n_sizes = 0;
            for (const char *p = v; *p && o.n_sizes < MAX_LIST;) {
                int w, h, used = 0;
                if (sscanf(p, "%dx%d%n", &w, &h, &used) != 2 || w <= 0 || h <= 0)
                    return 2;
                o.sizes[o.n_sizes][0] = w;
                o.sizes[o.n_sizes][1] = h;
                o.n_sizes++;
                p += used;
                if (*p == ',')
                    p++;
            }
        } else if (!strcmp(a, "--fps"))
            o.fps = atof(v);
        else if (!strcmp(a, "--update"))
            o.update_s = atof(v);
        else if (!strcmp(a, "--questions"))
            o.questions = atoi(v);
        else if (!strcmp(a, "--tokens"))
            o.tokens = atoi(v);
        else if (!strcmp(a, "--iters"))
            o.iters = atoi(v);
        else if (!strcmp(a, "--threads"))
            o.threads = atoi(v);
        else if (!strcmp(a, "--weights")) {
            if (vg_weight_type_parse(v, &o.weight_type) < 0) {
                fprintf(stderr, "bench_stream: --weights takes auto, f32, bf16 or q8_0\n");
                return 2;
            }
        } else {
            fprintf(stderr, "bench_stream: unknown option %s\n", a);
            return 2;
        }
    }
    if (!o.model || o.n_windows <= 0 || o.n_sizes <= 0 || !(o.fps > 0) || !(o.update_s > 0) ||
        o.questions < 1 || o.tokens < 1 || o.iters < 1) {
        fprintf(stderr, "bench_stream: bad options (a model: --model DIR, or /tmp/vg-2b)\n");
        return 2;
    }
    vg_model_params mp = vg_model_default_params();
    mp.n_threads = o.threads;
    mp.weight_type = o.weight_type;
    vg_model *m;
    char err[512];
    double t0 = vg_now_ms();
    if (vg_model_load(o.model, &mp, &m, err, sizeof err) < 0) {
        fprintf(stderr, "bench_stream: %s\n", err);
        return 1;
    }
    const vg_model_info *mi = vg_model_get_info(m);
    printf("model %s (%zu parameters, %d layers, %d KV heads x %d, %s weights, %s kernels, %d "
           "threads), loaded in %.1f s; %ld CPUs\n",
           mi->name, mi->n_params, mi->n_layers, mi->n_kv_heads, mi->head_dim,
           vg_weight_type_name(mi->weight_type), mi->isa, o.threads, (vg_now_ms() - t0) / 1000,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("fps %g, update every %g s, %d question(s), %d answer tokens, median of %d\n\n", o.fps,
           o.update_s, o.questions, o.tokens, o.iters);
    printf("%-9s %6s %8s %9s %9s %9s %10s %9s %10s %8s %8s\n", "frame", "window", "tokens",
           "encode_ms", "prefill", "evict_ms", "update_ms", "q_prefill", "s_per_s", "max_fps",
           "rss_MiB");
    int rc = 0;
    for (int si = 0; si < o.n_sizes && rc == 0; si++)
        for (int wi = 0; wi < o.n_windows && rc == 0; wi++) {
            result r;
            memset(&r, 0, sizeof r);
            int fw = o.sizes[si][0], fh = o.sizes[si][1];
            if ((rc = run_point(m, &o, fw, fh, o.windows[wi], &r)) < 0)
                break;
            double per_pair = (r.enc_ms + r.pre_ms + r.evict_ms) / 1000.0;
            double ans_rate = r.ans_ms / 1000.0 / o.update_s; /* seconds per second */
            double sps = o.fps / 2.0 * per_pair + ans_rate;
            double max_fps = ans_rate < 1 ? 2.0 * (1.0 - ans_rate) / per_pair : 0;
            char frame[24];
            snprintf(frame, sizeof frame, "%dx%d", fw, fh);
            printf("%-9s %5ds %8zu %9.1f %9.1f %9.2f %10.1f %9.1f %10.3f %8.2f %8.0f\n", frame,
                   o.windows[wi], r.window_tokens, r.enc_ms, r.pre_ms, r.evict_ms, r.ans_ms,
                   r.ask_pre_ms, sps, max_fps, rss_kib() / 1024.0);
            fflush(stdout);
        }
    printf("\nprefill: a pair's prefill (ms); q_prefill: the questions' prefill within update_ms;\n"
           "s_per_s: compute seconds per second of video (below 1 keeps up in real time);\n"
           "max_fps: the sampling rate at which it would just keep up, answers included.\n");
    vg_model_free(m);
    return rc < 0 ? 1 : 0;
}
