/*
 * cmd_golden.c: `vigil-model golden CASE_DIR`, the engine's parity check against a golden case
 * produced by Hugging Face transformers (../shared/golden/<case>/, described by manifest.json).
 *
 * CASE_DIR is loaded as a checkpoint. The inputs (input_ids, pixel_values_videos, video_grid_thw,
 * position_ids, rope_deltas) are read with their sizes checked against the manifest's shapes; the
 * vision tower runs slice by slice (grid_t slices per video), the text model prefills the whole
 * prompt with every position's logits, and greedy generation runs for as many tokens as gen_ids
 * holds. Every reference tensor present in the manifest is compared (missing optional files are
 * skipped) and reported on one line: max |diff|, max |ref|, rel = max|diff| / max|ref|, the
 * tolerance and OK/FAIL. A tensor passes when max|diff| <= tol * max(1, max|ref|) with tol taken
 * from the manifest's suggested_tolerances (vision/hidden states, logits; ids and positions
 * exact). Nothing here is specific to one case: sizes come from the manifest and config.json.
 * Exit status 0 when everything is within tolerance, 1 otherwise, 2 on usage errors.
 *
 * Single-threaded front end (the engine uses its BLAS threads); the trace hook collects
 * intermediates while the model computes them.
 */
#include "cmds.h"

#include "common.h"
#include "model.h"
#include "pipeline.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- manifest and .bin files ---- */

typedef struct gfile {
    const char *name, *file, *dtype;
    int ndim;
    int64_t shape[8];
    size_t numel;
} gfile;

typedef struct gcase {
    const char *dir;
    cJSON *man;
    gfile *files;
    size_t n_files;
    double tol_hidden, tol_logits, tol_pixels;
    int failures;
    int lossy;         /* q8_0 weights: tolerances of the type, near ties scaled with the logit */
    double logits_err; /* logits_last max_abs, for the weight-type summary */
    int ids_agree;     /* -1 not compared, 0/1 */
} gcase;

static const gfile *find_file(const gcase *c, const char *name)
{
    for (size_t i = 0; i < c->n_files; i++)
        if (strcmp(c->files[i].name, name) == 0)
            return &c->files[i];
    return NULL;
}

static size_t dtype_size(const char *dt)
{
    if (strcmp(dt, "float32") == 0 || strcmp(dt, "int32") == 0)
        return 4;
    if (strcmp(dt, "int64") == 0 || strcmp(dt, "float64") == 0)
        return 8;
    if (strcmp(dt, "uint8") == 0)
        return 1;
    return 0;
}

/* Reads name's file; *out receives a malloc'd buffer of numel elements converted to float (for
 * float32) or int64 (for int64/int32/uint8). Returns 1 when loaded, 0 when the manifest has no
 * such entry or the file is absent, -1 on a malformed file (reported). */
static int load_bin(gcase *c, const char *name, int want_float, void **out, const gfile **fout)
{
    const gfile *f = find_file(c, name);
    if (!f)
        return 0;
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s/%s", c->dir, f->file);
    size_t es = dtype_size(f->dtype);
    if (es == 0) {
        fprintf(stderr, "golden: %s: unsupported dtype '%s'\n", name, f->dtype);
        return -1;
    }
    char *data = NULL;
    size_t len = 0;
    int rc = vg_read_file(path, (size_t)1 << 34, &data, &len, err, sizeof(err));
    if (rc == VG_ENOENT)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "golden: %s\n", err);
        return -1;
    }
    size_t want;
    if (vg_mul_size(f->numel, es, &want) < 0 || want != len) {
        fprintf(stderr, "golden: %s: %zu bytes, but the manifest's shape and dtype need %zu\n",
                path, len, f->numel * es);
        free(data);
        return -1;
    }
    void *res;
    if (want_float) {
        if (strcmp(f->dtype, "float32") != 0) {
            fprintf(stderr, "golden: %s: expected float32, manifest says %s\n", name, f->dtype);
            free(data);
            return -1;
        }
        res = malloc(f->numel * sizeof(float) + 1);
        if (res)
            memcpy(res, data, f->numel * sizeof(float));
    } else {
        int64_t *v = malloc(f->numel * sizeof(int64_t) + 1);
        res = v;
        for (size_t i = 0; v && i < f->numel; i++) {
            if (es == 8) {
                memcpy(&v[i], data + 8 * i, 8);
            } else if (es == 4) {
                int32_t t;
                memcpy(&t, data + 4 * i, 4);
                v[i] = t;
            } else {
                v[i] = (unsigned char)data[i];
            }
        }
        if (strcmp(f->dtype, "float32") == 0 || strcmp(f->dtype, "float64") == 0) {
            fprintf(stderr, "golden: %s: expected integers, manifest says %s\n", name, f->dtype);
            free(res);
            free(data);
            return -1;
        }
    }
    free(data);
    if (!res) {
        fprintf(stderr, "golden: out of memory reading %s\n", name);
        return -1;
    }
    *out = res;
    if (fout)
        *fout = f;
    return 1;
}

static double parse_tol(const cJSON *tols, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(tols, key);
    if (cJSON_IsNumber(v))
        return v->valuedouble;
    if (!cJSON_IsString(v))
        return def;
    const char *s = strstr(v->valuestring, "<=");
    if (s) {
        char *end;
        double d = strtod(s + 2, &end);
        if (end != s + 2 && d > 0)
            return d;
    }
    s = strstr(v->valuestring, "up to");
    if (s) {
        char *end;
        double d = strtod(s + 5, &end);
        if (end != s + 5 && d > 0)
            return d;
    }
    return def;
}

static int read_manifest(gcase *c)
{
    char path[4096], err[256];
    snprintf(path, sizeof(path), "%s/manifest.json", c->dir);
    char *txt = NULL;
    size_t len = 0;
    if (vg_read_file(path, (size_t)64 << 20, &txt, &len, err, sizeof(err)) < 0) {
        fprintf(stderr, "golden: %s\n", err);
        return -1;
    }
    c->man = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!c->man) {
        fprintf(stderr, "golden: %s: not valid JSON\n", path);
        return -1;
    }
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(c->man, "files");
    int n = cJSON_GetArraySize(files);
    c->files = calloc((size_t)(n > 0 ? n : 1), sizeof(*c->files));
    if (!c->files)
        return -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, files)
    {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
        const cJSON *fl = cJSON_GetObjectItemCaseSensitive(it, "file");
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        if (!cJSON_IsString(nm) || !cJSON_IsString(fl) || !cJSON_IsString(dt) ||
            !cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > 8 || strchr(fl->valuestring, '/')) {
            fprintf(stderr, "golden: %s: a files[] entry lacks name/file/dtype/shape\n", path);
            return -1;
        }
        gfile *g = &c->files[c->n_files++];
        g->name = nm->valuestring;
        g->file = fl->valuestring;
        g->dtype = dt->valuestring;
        g->numel = 1;
        const cJSON *d;
        cJSON_ArrayForEach(d, sh)
        {
            if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 1e12) {
                fprintf(stderr, "golden: %s: bad shape for %s\n", path, g->name);
                return -1;
            }
            g->shape[g->ndim++] = (int64_t)d->valuedouble;
            if (vg_mul_size(g->numel, (size_t)d->valuedouble, &g->numel) < 0) {
                fprintf(stderr, "golden: %s: shape of %s overflows\n", path, g->name);
                return -1;
            }
        }
    }
    const cJSON *tols = cJSON_GetObjectItemCaseSensitive(c->man, "suggested_tolerances");
    c->tol_hidden = parse_tol(tols, "vision_and_hidden_states", 1e-4);
    c->tol_logits = parse_tol(tols, "logits", 1e-3);
    c->tol_pixels = parse_tol(tols, "pixel_values_videos", 1e-6);
    return 0;
}

/* The tolerances (relative to max(1, |reference|)) that bf16 and Q8_0 weights are held to on
 * hidden states and logits. bf16: the weights of a bf16 checkpoint widen exactly, but the vision
 * products through oneDNN round the activations to bf16 (measured ~4e-3 on tiny1). Q8_0: 8-bit
 * weights and activations in decode (measured ~3e-2). */
#define VG_GOLDEN_TOL_BF16 1e-2
#define VG_GOLDEN_TOL_Q8_0 5e-2

/* ---- comparisons ---- */

static void report(gcase *c, const char *name, double maxdiff, double maxref, double tol,
                   const char *note)
{
    double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
    int ok = maxdiff <= tol * (maxref > 1.0 ? maxref : 1.0);
    if (strcmp(name, "logits_last") == 0)
        c->logits_err = maxdiff;
    if (!ok)
        c->failures++;
    printf("%-24s max_abs=%.3e  max_ref=%.3e  rel=%.3e  tol=%.0e  %s%s%s\n", name, maxdiff, maxref,
           rel, tol, ok ? "OK" : "FAIL", note ? "  " : "", note ? note : "");
}

static void cmp_f32(gcase *c, const char *name, const float *got, size_t n_got, double tol)
{
    float *ref = NULL;
    const gfile *f = NULL;
    int rc = load_bin(c, name, 1, (void **)&ref, &f);
    if (rc == 0)
        return;
    if (rc < 0) {
        c->failures++;
        return;
    }
    if (!got || n_got != f->numel) {
        printf("%-24s FAIL  the engine produced %zu values, the reference has %zu\n", name, n_got,
               f->numel);
        c->failures++;
        free(ref);
        return;
    }
    double md = 0, mr = 0;
    for (size_t i = 0; i < n_got; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= md)) /* NaN counts as infinite */
            md = isnan(d) ? INFINITY : d;
        if (fabs(ref[i]) > mr)
            mr = fabs(ref[i]);
    }
    report(c, name, md, mr, tol, NULL);
    free(ref);
}

static void cmp_exact(gcase *c, const char *name, const int64_t *got, size_t n_got)
{
    int64_t *ref = NULL;
    const gfile *f = NULL;
    int rc = load_bin(c, name, 0, (void **)&ref, &f);
    if (rc == 0)
        return;
    if (rc < 0) {
        c->failures++;
        return;
    }
    size_t bad = 0, first = 0;
    if (n_got != f->numel) {
        printf("%-24s FAIL  %zu values, the reference has %zu\n", name, n_got, f->numel);
        c->failures++;
        free(ref);
        return;
    }
    for (size_t i = 0; i < n_got; i++)
        if (got[i] != ref[i] && bad++ == 0)
            first = i;
    if (strcmp(name, "gen_ids") == 0)
        c->ids_agree = bad == 0;
    if (bad) {
        printf("%-24s mismatches=%zu (first at %zu: %lld vs %lld)  exact  FAIL\n", name, bad, first,
               (long long)got[first], (long long)ref[first]);
        c->failures++;
    } else {
        printf("%-24s %zu values identical  exact  OK\n", name, n_got);
    }
    free(ref);
}

/* ---- trace collection ---- */

typedef struct tbuf {
    char name[48];
    int index;
    float *data;
    size_t rows, cols, cap;
} tbuf;

typedef struct tracer {
    tbuf *b;
    size_t n, cap;
    int oom;
} tracer;

static void on_trace(const char *name, int index, const float *data, size_t rows, size_t cols,
                     void *opaque)
{
    tracer *t = opaque;
    tbuf *b = NULL;
    for (size_t i = 0; i < t->n; i++)
        if (t->b[i].index == index && strcmp(t->b[i].name, name) == 0)
            b = &t->b[i];
    if (!b) {
        if (t->n == t->cap) {
            size_t nc = t->cap ? 2 * t->cap : 32;
            tbuf *nb = realloc(t->b, nc * sizeof(*nb));
            if (!nb) {
                t->oom = 1;
                return;
            }
            t->b = nb;
            t->cap = nc;
        }
        b = &t->b[t->n++];
        memset(b, 0, sizeof(*b));
        snprintf(b->name, sizeof(b->name), "%s", name);
        b->index = index;
        b->cols = cols;
    }
    if (b->cols != cols) {
        t->oom = 1;
        return;
    }
    size_t need = (b->rows + rows) * cols;
    if (need > b->cap) {
        size_t nc = need * 2;
        float *nd = realloc(b->data, nc * sizeof(float));
        if (!nd) {
            t->oom = 1;
            return;
        }
        b->data = nd;
        b->cap = nc;
    }
    memcpy(b->data + b->rows * cols, data, rows * cols * sizeof(float));
    b->rows += rows;
}

/* Concatenation of name's traces with index lo..hi-1 (index-major); malloc'd, or NULL when any is
 * missing. */
static float *gather(const tracer *t, const char *name, int lo, int hi, size_t *n)
{
    size_t tot = 0;
    const tbuf *parts[1024];
    if (hi - lo > 1024 || hi <= lo)
        return NULL;
    for (int i = lo; i < hi; i++) {
        parts[i - lo] = NULL;
        for (size_t k = 0; k < t->n; k++)
            if (t->b[k].index == i && strcmp(t->b[k].name, name) == 0)
                parts[i - lo] = &t->b[k];
        if (!parts[i - lo])
            return NULL;
        tot += parts[i - lo]->rows * parts[i - lo]->cols;
    }
    float *out = malloc(tot * sizeof(float) + 1);
    if (!out)
        return NULL;
    size_t off = 0;
    for (int i = lo; i < hi; i++) {
        size_t k = parts[i - lo]->rows * parts[i - lo]->cols;
        memcpy(out + off, parts[i - lo]->data, k * sizeof(float));
        off += k;
    }
    *n = tot;
    return out;
}

static void cmp_trace(gcase *c, tracer *t, const char *ref_name, const char *trace_name, int lo,
                      int hi, double tol)
{
    if (!find_file(c, ref_name))
        return;
    size_t n = 0;
    float *g = gather(t, trace_name, lo, hi, &n);
    cmp_f32(c, ref_name, g, g ? n : 0, tol);
    free(g);
}

/* ---- logits statistics ---- */

static double logsumexp(const float *x, size_t n)
{
    double mx = -INFINITY, s = 0;
    for (size_t i = 0; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    for (size_t i = 0; i < n; i++)
        s += exp((double)x[i] - mx);
    return mx + log(s);
}

static int64_t argmax(const float *x, size_t n)
{
    size_t b = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return (int64_t)b;
}

/* The K largest of row[V], descending (insertion into a sorted list). */
static void topk(const float *row, size_t V, size_t K, int32_t *out)
{
    size_t n = 0;
    for (size_t v = 0; v < V; v++) {
        if (n == K && !(row[v] > row[out[K - 1]]))
            continue;
        size_t i = n < K ? n++ : K - 1;
        while (i > 0 && row[out[i - 1]] < row[v]) {
            out[i] = out[i - 1];
            i--;
        }
        out[i] = (int32_t)v;
    }
}

/* Compares logits rows [rows][V] against the subset / top-k / logsumexp files with prefix
 * ("logits" or "gen_step"). */
static void cmp_logit_stats(gcase *c, const char *prefix, const float *lg, size_t rows, size_t V)
{
    char nm[96], nm2[96];
    int64_t *sub_ids = NULL;
    const gfile *fs = NULL;
    if (load_bin(c, "logits_subset_ids", 0, (void **)&sub_ids, &fs) == 1) {
        size_t K = fs->numel, ok = 1;
        for (size_t k = 0; k < K; k++)
            if (sub_ids[k] < 0 || (size_t)sub_ids[k] >= V)
                ok = 0;
        snprintf(nm, sizeof(nm), "%s_subset",
                 strcmp(prefix, "logits") == 0 ? "logits" : "gen_step_logits");
        if (ok) {
            float *g = malloc(rows * K * sizeof(float) + 1);
            for (size_t r = 0; g && r < rows; r++)
                for (size_t k = 0; k < K; k++)
                    g[r * K + k] = lg[r * V + (size_t)sub_ids[k]];
            cmp_f32(c, nm, g, g ? rows * K : 0, c->tol_logits);
            free(g);
        } else {
            printf("%-24s FAIL  logits_subset_ids outside the vocabulary\n", nm);
            c->failures++;
        }
        free(sub_ids);
    }
    float *lse = malloc(rows * sizeof(float) + 1);
    for (size_t r = 0; lse && r < rows; r++)
        lse[r] = (float)logsumexp(lg + r * V, V);
    snprintf(nm, sizeof(nm), "%s_logsumexp", prefix);
    cmp_f32(c, nm, lse, lse ? rows : 0, c->tol_logits);
    free(lse);

    /* top-k: the reference ids' logits must match the reference values, and where our ranking
     * differs the two candidates must be within tolerance of each other (a near tie). */
    int64_t *tid = NULL;
    float *tval = NULL;
    const gfile *ft = NULL;
    snprintf(nm, sizeof(nm), "%s_topk_ids", prefix);
    snprintf(nm2, sizeof(nm2), "%s_topk_vals", prefix);
    if (load_bin(c, nm, 0, (void **)&tid, &ft) == 1) {
        size_t K = ft->ndim >= 2 ? (size_t)ft->shape[ft->ndim - 1] : ft->numel;
        if (K == 0 || ft->numel != rows * K) {
            printf("%-24s FAIL  shape does not match %zu rows\n", nm, rows);
            c->failures++;
        } else {
            size_t swaps = 0, bad = 0;
            double md = 0, mr = 0;
            int32_t *mine = malloc(K * sizeof(int32_t));
            for (size_t r = 0; mine && r < rows; r++) {
                const float *row = lg + r * V;
                topk(row, V, K, mine);
                for (size_t k = 0; k < K; k++) {
                    int64_t rid = tid[r * K + k];
                    if (rid < 0 || (size_t)rid >= V) {
                        bad++;
                        continue;
                    }
                    if (rid != mine[k]) {
                        double tie = 2 * c->tol_logits;
                        if (c->lossy && fabs((double)row[rid]) > 1.0)
                            tie *= fabs((double)row[rid]);
                        if (fabs((double)row[rid] - row[mine[k]]) <= tie)
                            swaps++;
                        else
                            bad++;
                    }
                }
            }
            free(mine);
            if (bad) {
                printf("%-24s rank mismatches=%zu (near-tie swaps %zu)  FAIL\n", nm, bad, swaps);
                c->failures++;
            } else {
                printf("%-24s %zu rows x %zu ranks agree (near-tie swaps %zu)  OK\n", nm, rows, K,
                       swaps);
            }
            if (load_bin(c, nm2, 1, (void **)&tval, NULL) == 1) {
                for (size_t r = 0; r < rows; r++)
                    for (size_t k = 0; k < K; k++) {
                        int64_t rid = tid[r * K + k];
                        if (rid < 0 || (size_t)rid >= V)
                            continue;
                        double d = fabs((double)lg[r * V + (size_t)rid] - tval[r * K + k]);
                        if (!(d <= md))
                            md = isnan(d) ? INFINITY : d;
                        if (fabs(tval[r * K + k]) > mr)
                            mr = fabs(tval[r * K + k]);
                    }
                report(c, nm2, md, mr, c->tol_logits, NULL);
                free(tval);
            }
        }
        free(tid);
    }
}

/* ---- the pipeline's half: pixels from frames, prompt ids and positions from the messages ---- */

static int tokenize_cb(void *opaque, const char *text, size_t len, int32_t **ids, size_t *n)
{
    return vg_tokenizer_encode(opaque, text, len, 0, ids, n);
}

/* Appends the text items of a message content (a string or a list of {type, text}); with
 * split_at_video, items after the first video go to *after instead. Returns 1 when a video item
 * was seen. */
static int content_text(const cJSON *content, char *before, char *after, size_t cap)
{
    int seen = 0;
    if (cJSON_IsString(content)) {
        strncat(before, content->valuestring, cap - strlen(before) - 1);
        return 0;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, content)
    {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(it, "type");
        const cJSON *tx = cJSON_GetObjectItemCaseSensitive(it, "text");
        if (cJSON_IsString(ty) && strcmp(ty->valuestring, "video") == 0) {
            seen++;
        } else if (cJSON_IsString(tx)) {
            char *dst = seen ? after : before;
            strncat(dst, tx->valuestring, cap - strlen(dst) - 1);
        }
    }
    return seen;
}

static void check_pipeline(gcase *c, vg_model *m, const int64_t *grid, size_t n_grid)
{
    const vg_model_info *in = vg_model_get_info(m);
    /* pixels */
    int64_t *fr = NULL;
    const gfile *ff = NULL;
    if (load_bin(c, "frames_u8", 0, (void **)&fr, &ff) == 1 && ff->ndim == 4 && ff->shape[3] == 3) {
        size_t n = ff->numel;
        uint8_t *u8 = malloc(n ? n : 1);
        float *pv = NULL;
        size_t rows = 0, cols = 0;
        for (size_t i = 0; u8 && i < n; i++)
            u8[i] = (uint8_t)fr[i];
        int rc = u8 ? vg_patchify(u8, (int)ff->shape[0], (int)ff->shape[1], (int)ff->shape[2],
                                  in->patch_size, in->temporal_patch_size, in->spatial_merge_size,
                                  in->image_mean, in->image_std, &pv, &rows, &cols)
                    : VG_ENOMEM;
        if (rc < 0) {
            printf("%-24s FAIL  vg_patchify: %s\n", "pipeline_pixels", vg_strerror(rc));
            c->failures++;
        } else {
            printf("pipeline: vg_patchify(frames_u8) -> pixel_values_videos\n");
            cmp_f32(c, "pixel_values_videos", pv, rows * cols, c->tol_pixels);
        }
        free(pv);
        free(u8);
    }
    free(fr);

    /* prompt: one video, optional system turn, user text before/after it */
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(c->man, "messages");
    const cJSON *video = cJSON_GetObjectItemCaseSensitive(c->man, "video");
    /* the reference's pair times (numbers; their strings are checked against vg_time_token) */
    const cJSON *tss = cJSON_GetObjectItemCaseSensitive(video, "timestamp_strings");
    if (!cJSON_IsArray(tss) || cJSON_GetArraySize(tss) != (int)grid[0])
        tss = cJSON_GetObjectItemCaseSensitive(video, "timestamps");
    if (!cJSON_IsArray(msgs) || n_grid != 1 || !cJSON_IsArray(tss) ||
        cJSON_GetArraySize(tss) != (int)grid[0]) {
        printf("pipeline: prompt check skipped (needs messages, one video and its timestamps)\n");
        return;
    }
    enum { CAP = 65536 };
    char *tb = calloc(4, CAP);
    if (!tb)
        return;
    char *sys = tb, *before = tb + CAP, *after = tb + 2 * CAP, *junk = tb + 3 * CAP;
    int has_sys = 0, users = 0, videos = 0, other = 0;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        if (!cJSON_IsString(role))
            other++;
        else if (strcmp(role->valuestring, "system") == 0) {
            has_sys = 1;
            junk[0] = '\0';
            content_text(content, sys, junk, CAP);
        } else if (strcmp(role->valuestring, "user") == 0) {
            users++;
            videos += content_text(content, before, after, CAP);
        } else {
            other++;
        }
    }
    if (users != 1 || videos != 1 || other) {
        printf("pipeline: prompt check skipped (only one user turn with one video is handled)\n");
        free(tb);
        return;
    }
    /* The pair times: the case's numbers, printed by vg_time_token; where it also has the strings,
     * they must be what vg_time_token prints. */
    const cJSON *nums = cJSON_GetObjectItemCaseSensitive(video, "timestamps");
    const cJSON *strs = cJSON_GetObjectItemCaseSensitive(video, "timestamp_strings");
    if (!cJSON_IsArray(nums) || cJSON_GetArraySize(nums) != (int)grid[0]) {
        printf("pipeline: prompt check skipped (needs the numeric timestamps)\n");
        free(tb);
        return;
    }
    double *times = calloc((size_t)grid[0], sizeof *times);
    if (!times) {
        free(tb);
        return;
    }
    int k = 0, bad_ts = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, nums)
    {
        times[k] = cJSON_IsNumber(t) ? t->valuedouble : 0.0;
        const cJSON *st = cJSON_IsArray(strs) ? cJSON_GetArrayItem(strs, k) : NULL;
        char ts[VG_TIME_TOKEN_MAX];
        if (cJSON_IsString(st) &&
            (vg_time_token(times[k], ts, sizeof ts) < 0 || strcmp(ts, st->valuestring) != 0))
            bad_ts++;
        k++;
    }
    printf("%-24s %s\n", "timestamp_strings",
           bad_ts ? "FAIL  vg_time_token differs from the reference" : "identical  OK");
    c->failures += bad_ts ? 1 : 0;
    vg_prompt_video pv = {times, (int)grid[0], (int)grid[1], (int)grid[2], in->spatial_merge_size};
    vg_prompt_ids pid = {.im_start = in->im_start_id,
                         .im_end = in->im_end_id,
                         .vision_start = in->vision_start_token_id,
                         .vision_end = in->vision_end_token_id,
                         .video_pad = in->video_token_id};
    vg_chat chat = {.system = has_sys ? sys : NULL,
                    .text_before = before[0] ? before : NULL,
                    .text_after = after[0] ? after : NULL};
    vg_prompt *pr = NULL;
    char err[256];
    if (vg_prompt_build(&chat, &pv, &pid, tokenize_cb, (void *)vg_model_tokenizer(m), &pr, err,
                        sizeof(err)) < 0) {
        printf("%-24s FAIL  vg_prompt_build: %s\n", "pipeline_prompt", err);
        c->failures++;
        free(times);
        free(tb);
        return;
    }
    printf("pipeline: vg_prompt_build(messages, timestamps) -> input_ids, position_ids\n");
    int64_t *v = malloc((3 * pr->n + 1) * sizeof(int64_t));
    if (v) {
        for (size_t i = 0; i < pr->n; i++)
            v[i] = pr->ids[i];
        cmp_exact(c, "input_ids", v, pr->n);
        for (size_t i = 0; i < 3 * pr->n; i++)
            v[i] = pr->pos[i];
        cmp_exact(c, "position_ids", v, 3 * pr->n);
        v[0] = pr->rope_delta;
        cmp_exact(c, "rope_deltas", v, 1);
    }
    free(v);
    vg_prompt_free(pr);
    free(times);
    free(tb);
}

/* ---- the run ---- */

typedef struct gen_cb_state {
    char text[4096];
    size_t len;
} gen_cb_state;

static int on_token(int32_t id, const char *text, size_t len, void *opaque)
{
    gen_cb_state *g = opaque;
    (void)id;
    if (g->len + len < sizeof(g->text)) {
        memcpy(g->text + g->len, text, len);
        g->len += len;
        g->text[g->len] = '\0';
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vigil-model golden [--threads N] [--weights f32|bf16|q8_0|auto] CASE_DIR\n\n"
               "Runs the engine on a golden case (manifest.json + .bin files + checkpoint) and\n"
               "compares every reference tensor; exit status 1 when any is out of tolerance.\n");
}

int vg_cmd_golden(int argc, char **argv)
{
    const char *dir = NULL;
    int threads = 0, wtype = VG_WEIGHTS_F32;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--weights") == 0 && i + 1 < argc) {
            if (vg_weight_type_parse(argv[++i], &wtype) < 0) {
                usage(stderr);
                return 2;
            }
        } else if (argv[i][0] == '-' || dir) {
            usage(stderr);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    gcase c = {.dir = dir, .logits_err = -1, .ids_agree = -1};
    tracer tr = {0};
    vg_model *m = NULL;
    vg_seq *seq = NULL, *seq2 = NULL;
    int64_t *ids64 = NULL, *grid = NULL, *pos64 = NULL, *delta64 = NULL, *gen_ref = NULL;
    float *pix = NULL, *vis = NULL, *ds = NULL, *logits = NULL, *step = NULL, *gen_logits = NULL;
    int32_t *ids = NULL, *pos = NULL, *out_ids = NULL;
    const gfile *f_ids = NULL, *f_pix = NULL, *f_grid = NULL, *f_pos = NULL, *f_gen = NULL;
    char err[512];
    int status = 1;

    if (read_manifest(&c) < 0)
        goto out;
    if (wtype == VG_WEIGHTS_Q8_0 || wtype == VG_WEIGHTS_BF16) {
        /* held to the type's own tolerances (docs/weights.md), not float32's */
        c.tol_hidden = c.tol_logits =
            wtype == VG_WEIGHTS_Q8_0 ? VG_GOLDEN_TOL_Q8_0 : VG_GOLDEN_TOL_BF16;
        c.lossy = 1;
    }
    printf("weights %s: tolerances hidden %.0e, logits %.0e (relative to max(1, |ref|))\n",
           vg_weight_type_name(wtype), c.tol_hidden, c.tol_logits);
    vg_model_params mp = vg_model_default_params();
    if (threads > 0)
        mp.n_threads = threads;
    mp.weight_type = wtype;
    double t0 = vg_now_ms();
    if (vg_model_load(dir, &mp, &m, err, sizeof(err)) < 0) {
        fprintf(stderr, "golden: %s\n", err);
        goto out;
    }
    const vg_model_info *in = vg_model_get_info(m);
    printf("case %s: model loaded in %.0f ms (%zu parameters)\n", dir, vg_now_ms() - t0,
           in->n_params);
    if (load_bin(&c, "input_ids", 0, (void **)&ids64, &f_ids) != 1 ||
        load_bin(&c, "position_ids", 0, (void **)&pos64, &f_pos) != 1) {
        fprintf(stderr, "golden: input_ids and position_ids are required\n");
        goto out;
    }
    const size_t S = f_ids->numel;
    if (S == 0 || f_pos->numel != 3 * S) {
        fprintf(stderr, "golden: position_ids must hold 3 x %zu values\n", S);
        goto out;
    }
    int64_t delta = 0;
    if (load_bin(&c, "rope_deltas", 0, (void **)&delta64, NULL) == 1)
        delta = delta64[0];
    ids = malloc(S * sizeof(int32_t));
    pos = malloc(3 * S * sizeof(int32_t));
    if (!ids || !pos)
        goto out;
    size_t n_vis = 0;
    for (size_t i = 0; i < S; i++) {
        if (ids64[i] < 0 || ids64[i] >= in->vocab_size) {
            fprintf(stderr, "golden: input_ids[%zu] = %lld outside the vocabulary\n", i,
                    (long long)ids64[i]);
            goto out;
        }
        ids[i] = (int32_t)ids64[i];
        n_vis += (ids[i] == in->video_token_id || ids[i] == in->image_token_id);
    }
    for (size_t i = 0; i < 3 * S; i++) {
        if (pos64[i] < INT32_MIN || pos64[i] > INT32_MAX) {
            fprintf(stderr, "golden: position_ids out of range\n");
            goto out;
        }
        pos[i] = (int32_t)pos64[i];
    }

    /* ---- vision ---- */
    vg_model_set_trace(m, on_trace, &tr);
    const size_t O = (size_t)in->out_hidden_size;
    const int nds = in->n_deepstack;
    size_t n_patches = 0;
    if (n_vis > 0) {
        if (!in->has_vision) {
            fprintf(stderr, "golden: the prompt has vision tokens but the model has no vision\n");
            goto out;
        }
        if (load_bin(&c, "pixel_values_videos", 1, (void **)&pix, &f_pix) != 1 ||
            load_bin(&c, "video_grid_thw", 0, (void **)&grid, &f_grid) != 1 || f_pix->ndim != 2 ||
            f_grid->numel % 3 != 0) {
            fprintf(stderr, "golden: pixel_values_videos [N,K] and video_grid_thw [n,3] needed\n");
            goto out;
        }
        const size_t K = (size_t)f_pix->shape[1];
        const size_t want_k = (size_t)in->in_channels * (size_t)in->temporal_patch_size *
                              (size_t)in->patch_size * (size_t)in->patch_size;
        if (K != want_k) {
            fprintf(stderr, "golden: pixel rows have %zu values, the model wants %zu\n", K, want_k);
            goto out;
        }
        vis = malloc(n_vis * O * sizeof(float) + 1);
        ds = malloc((size_t)(nds > 0 ? nds : 1) * n_vis * O * sizeof(float) + 1);
        if (!vis || !ds)
            goto out;
        size_t vrow = 0;
        double tv = vg_now_ms();
        for (size_t v = 0; v < f_grid->numel / 3; v++) {
            int64_t gt = grid[3 * v], gh = grid[3 * v + 1], gw = grid[3 * v + 2];
            if (gt <= 0 || gh <= 0 || gw <= 0 || gh > 4096 || gw > 4096 || gt > 100000) {
                fprintf(stderr, "golden: bad video_grid_thw row %zu\n", v);
                goto out;
            }
            for (int64_t t = 0; t < gt; t++) {
                size_t np = (size_t)(gh * gw);
                if (n_patches + np > (size_t)f_pix->shape[0]) {
                    fprintf(stderr, "golden: video_grid_thw needs more patches than given\n");
                    goto out;
                }
                vg_vision_out *vo = NULL;
                if (vg_model_encode_slice(m, pix + n_patches * K, (int)gh, (int)gw, NULL, &vo, err,
                                          sizeof(err)) < 0) {
                    fprintf(stderr, "golden: %s\n", err);
                    goto out;
                }
                if (vrow + (size_t)vo->n_tokens > n_vis) {
                    fprintf(stderr, "golden: more visual rows than vision pad tokens\n");
                    vg_vision_out_free(vo);
                    goto out;
                }
                memcpy(vis + vrow * O, vo->embeds, (size_t)vo->n_tokens * O * sizeof(float));
                for (int k = 0; k < nds; k++)
                    memcpy(ds + ((size_t)k * n_vis + vrow) * O,
                           vo->deepstack + (size_t)k * (size_t)vo->n_tokens * O,
                           (size_t)vo->n_tokens * O * sizeof(float));
                vrow += (size_t)vo->n_tokens;
                n_patches += np;
                vg_vision_out_free(vo);
            }
        }
        printf("vision: %zu patches -> %zu tokens in %.0f ms\n", n_patches, vrow, vg_now_ms() - tv);
        if (n_patches != (size_t)f_pix->shape[0] || vrow != n_vis) {
            fprintf(stderr,
                    "golden: the grids cover %zu patches / %zu tokens; the case has %lld / %zu\n",
                    n_patches, vrow, (long long)f_pix->shape[0], n_vis);
            goto out;
        }
        cmp_trace(&c, &tr, "vision_patch_embed", "vision.patch_embed", 0, 1, c.tol_hidden);
        cmp_trace(&c, &tr, "vision_pos_embed", "vision.pos_embed", 0, 1, c.tol_hidden);
        cmp_trace(&c, &tr, "vision_rope_freqs", "vision.rope_freqs", 0, 1, c.tol_hidden);
        cmp_trace(&c, &tr, "vision_block_out", "vision.block_out", 0, in->vision_depth,
                  c.tol_hidden);
        cmp_f32(&c, "video_embeds", vis, n_vis * O, c.tol_hidden);
        if (nds > 0)
            cmp_f32(&c, "deepstack_embeds", ds, (size_t)nds * n_vis * O, c.tol_hidden);
    }

    if (n_vis > 0)
        check_pipeline(&c, m, grid, f_grid->numel / 3);

    /* ---- text prefill ---- */
    size_t n_gen = 0;
    if (load_bin(&c, "gen_ids", 0, (void **)&gen_ref, &f_gen) == 1)
        n_gen = f_gen->numel;
    const size_t V = (size_t)in->vocab_size, D = (size_t)in->hidden_size;
    size_t max_tokens = S + n_gen + 1;
    if (max_tokens > (size_t)in->max_position_embeddings)
        max_tokens = (size_t)in->max_position_embeddings;
    logits = malloc(S * V * sizeof(float));
    step = malloc(V * sizeof(float));
    if (!logits || !step)
        goto out;
    if (vg_seq_create(m, max_tokens, &seq, err, sizeof(err)) < 0) {
        fprintf(stderr, "golden: %s\n", err);
        goto out;
    }
    vg_prefill_input pin = {.ids = ids,
                            .n = S,
                            .pos = pos,
                            .vis_embeds = vis,
                            .vis_deepstack = nds > 0 ? ds : NULL,
                            .n_vis = n_vis};
    double tp = vg_now_ms();
    if (vg_seq_prefill(seq, &pin, logits, 1, NULL, err, sizeof(err)) < 0) {
        fprintf(stderr, "golden: %s\n", err);
        goto out;
    }
    printf("text: prefill of %zu tokens in %.0f ms\n", S, vg_now_ms() - tp);
    vg_model_set_trace(m, NULL, NULL);
    if (tr.oom) {
        fprintf(stderr, "golden: out of memory collecting traces\n");
        goto out;
    }
    cmp_trace(&c, &tr, "text_rope_cos", "text.rope_cos", 0, 1, c.tol_hidden);
    cmp_trace(&c, &tr, "text_rope_sin", "text.rope_sin", 0, 1, c.tol_hidden);
    cmp_trace(&c, &tr, "text_hidden_in", "text.hidden_in", 0, in->n_layers + 1, c.tol_hidden);
    cmp_trace(&c, &tr, "text_layer_out", "text.layer_out", 0, in->n_layers, c.tol_hidden);
    cmp_trace(&c, &tr, "final_hidden", "text.final_hidden", 0, 1, c.tol_hidden);
    (void)D;
    cmp_f32(&c, "logits_last", logits + (S - 1) * V, V, c.tol_logits);
    cmp_logit_stats(&c, "logits", logits, S, V);

    /* ---- greedy generation, step by step (decoding the reference ids so that later steps stay
     * comparable even after a mismatch) ---- */
    if (n_gen > 0) {
        gen_logits = malloc(n_gen * V * sizeof(float));
        int64_t *mine = malloc(n_gen * sizeof(int64_t));
        int64_t *gpos = malloc(3 * n_gen * sizeof(int64_t));
        if (!gen_logits || !mine || !gpos) {
            free(mine);
            free(gpos);
            goto out;
        }
        memcpy(step, logits + (S - 1) * V, V * sizeof(float));
        double tg = vg_now_ms();
        int dec_fail = 0;
        for (size_t j = 0; j < n_gen; j++) {
            memcpy(gen_logits + j * V, step, V * sizeof(float));
            mine[j] = argmax(step, V);
            int64_t p = (int64_t)vg_seq_len(seq) + delta;
            gpos[j] = gpos[n_gen + j] = gpos[2 * n_gen + j] = p;
            if (j + 1 < n_gen) {
                int64_t feed = gen_ref[j];
                if (feed < 0 || feed >= (int64_t)V || p < INT32_MIN || p > INT32_MAX ||
                    vg_seq_decode(seq, (int32_t)feed, (int32_t)p, step, err, sizeof(err)) < 0) {
                    fprintf(stderr, "golden: decode step %zu failed: %s\n", j, err);
                    dec_fail = 1;
                    break;
                }
            }
        }
        if (dec_fail) {
            free(mine);
            free(gpos);
            goto out;
        }
        printf("text: %zu decode steps in %.0f ms\n", n_gen - 1, vg_now_ms() - tg);
        cmp_exact(&c, "gen_ids", mine, n_gen);
        cmp_exact(&c, "gen_position_ids", gpos, 3 * n_gen);
        cmp_logit_stats(&c, "gen_step", gen_logits, n_gen, V);
        printf("generated ids:");
        for (size_t j = 0; j < n_gen; j++)
            printf(" %lld", (long long)mine[j]);
        printf("\n");
        free(mine);
        free(gpos);

        /* the same through vg_generate (greedy, no stop ids) on a fresh sequence */
        if (vg_seq_create(m, max_tokens, &seq2, err, sizeof(err)) < 0 ||
            vg_seq_prefill(seq2, &pin, step, 0, NULL, err, sizeof(err)) < 0) {
            fprintf(stderr, "golden: %s\n", err);
            goto out;
        }
        vg_gen_params gp = vg_model_default_gen_params(m);
        gp.do_sample = 0;
        gp.n_stop_ids = 0;
        gp.max_new_tokens = (int)n_gen;
        gen_cb_state gs = {.len = 0};
        size_t n_out = 0;
        if (vg_generate(seq2, &gp, step, (int32_t)delta, on_token, &gs, NULL, &out_ids, &n_out, err,
                        sizeof(err)) < 0) {
            fprintf(stderr, "golden: vg_generate: %s\n", err);
            goto out;
        }
        int64_t *o64 = malloc((n_out ? n_out : 1) * sizeof(int64_t));
        if (!o64)
            goto out;
        for (size_t j = 0; j < n_out; j++)
            o64[j] = out_ids[j];
        printf("vg_generate text: \"%s\"\n", gs.text);
        if (n_out != n_gen) {
            printf("%-24s FAIL  vg_generate made %zu tokens, expected %zu\n", "generate_ids", n_out,
                   n_gen);
            c.failures++;
        } else {
            size_t bad = 0;
            for (size_t j = 0; j < n_out; j++)
                bad += o64[j] != gen_ref[j];
            printf("%-24s %s\n", "vg_generate ids", bad ? "FAIL" : "identical to gen_ids  OK");
            c.failures += bad ? 1 : 0;
        }
        free(o64);
    }
    printf("weights %s: logits max_abs error %.3e against the reference, greedy ids %s\n",
           vg_weight_type_name(mp.weight_type), c.logits_err,
           c.ids_agree < 0 ? "not compared"
           : c.ids_agree   ? "agree"
                           : "DIFFER");
    printf("%s: %d failure%s\n", c.failures ? "FAIL" : "PASS", c.failures,
           c.failures == 1 ? "" : "s");
    status = c.failures ? 1 : 0;
out:
    for (size_t i = 0; i < tr.n; i++)
        free(tr.b[i].data);
    free(tr.b);
    vg_seq_free(seq);
    vg_seq_free(seq2);
    vg_model_free(m);
    cJSON_Delete(c.man);
    free(c.files);
    free(ids64);
    free(grid);
    free(pos64);
    free(delta64);
    free(gen_ref);
    free(pix);
    free(vis);
    free(ds);
    free(logits);
    free(step);
    free(gen_logits);
    free(ids);
    free(pos);
    free(out_ids);
    return status;
}
