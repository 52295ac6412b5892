/*
 * test_plan.c: the sampling plan. Every qwen_vl_utils case of vectors/sampling.json is run through
 * the real `vigil plan --json` command (vigil-plan-test, or $VG_PLAN_CMD) and compared field by
 * field: frame count, every torch-float32 frame index (long lists as first 8 / last 8 / count),
 * resized size, grid, token counts, timestamps and their strings; error cases must fail with the
 * reference's message. Unit tests cover linspace, smart_resize, clipping and input errors.
 */
#include "tests.h"

#include "common.h"
#include "pipeline.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *plan_cmd(void)
{
    const char *env = getenv("VG_PLAN_CMD");
    return env && env[0] ? env : VG_PLAN_CMD;
}

/* Runs "<plan_cmd> plan <args>" with stderr merged; returns the exit status and the output. */
static int run_plan(const char *args, char **out)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' plan %s 2>&1", plan_cmd(), args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t r;
    while ((r = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (cap - len < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[len] = 0;
    int st = pclose(f);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int check_int_list(const char *what, const cJSON *exp, const cJSON *got, int idx)
{
    /* exp is {"all": [...]} or {"first": [...], "last": [...], "count": n}. */
    int n = cJSON_GetArraySize(got);
    const cJSON *all = cJSON_GetObjectItem(exp, "all");
    int bad = 0;
    if (all) {
        if (cJSON_GetArraySize(all) != n) {
            printf("case %d: %s has %d entries, expected %d\n", idx, what, n,
                   cJSON_GetArraySize(all));
            return 1;
        }
        for (int i = 0; i < n; i++)
            if (cJSON_GetArrayItem(all, i)->valuedouble !=
                cJSON_GetArrayItem(got, i)->valuedouble) {
                printf("case %d: %s[%d] = %.17g, expected %.17g\n", idx, what, i,
                       cJSON_GetArrayItem(got, i)->valuedouble,
                       cJSON_GetArrayItem(all, i)->valuedouble);
                bad = 1;
            }
        return bad;
    }
    const cJSON *first = cJSON_GetObjectItem(exp, "first"),
                *last = cJSON_GetObjectItem(exp, "last");
    int count = cJSON_GetObjectItem(exp, "count")->valueint;
    if (count != n) {
        printf("case %d: %s has %d entries, expected %d\n", idx, what, n, count);
        return 1;
    }
    int nf = cJSON_GetArraySize(first), nl = cJSON_GetArraySize(last);
    for (int i = 0; i < nf; i++)
        if (cJSON_GetArrayItem(first, i)->valuedouble != cJSON_GetArrayItem(got, i)->valuedouble) {
            printf("case %d: %s[%d] = %.17g, expected %.17g\n", idx, what, i,
                   cJSON_GetArrayItem(got, i)->valuedouble,
                   cJSON_GetArrayItem(first, i)->valuedouble);
            bad = 1;
        }
    for (int i = 0; i < nl; i++)
        if (cJSON_GetArrayItem(last, i)->valuedouble !=
            cJSON_GetArrayItem(got, n - nl + i)->valuedouble) {
            printf("case %d: %s[%d] = %.17g, expected %.17g\n", idx, what, n - nl + i,
                   cJSON_GetArrayItem(got, n - nl + i)->valuedouble,
                   cJSON_GetArrayItem(last, i)->valuedouble);
            bad = 1;
        }
    return bad;
}

/* Timestamps are stored rounded to 6 decimals. */
static int check_times(const cJSON *exp, const cJSON *got, int idx)
{
    int n = cJSON_GetArraySize(got), bad = 0;
    const cJSON *all = cJSON_GetObjectItem(exp, "all");
    const cJSON *first = all ? all : cJSON_GetObjectItem(exp, "first");
    const cJSON *last = all ? NULL : cJSON_GetObjectItem(exp, "last");
    int count = all ? cJSON_GetArraySize(all) : cJSON_GetObjectItem(exp, "count")->valueint;
    if (count != n) {
        printf("case %d: %d timestamps, expected %d\n", idx, n, count);
        return 1;
    }
    for (int i = 0; i < cJSON_GetArraySize(first); i++)
        if (fabs(cJSON_GetArrayItem(first, i)->valuedouble -
                 cJSON_GetArrayItem(got, i)->valuedouble) > 6e-7) {
            printf("case %d: timestamp %d = %.9f, expected %.6f\n", idx, i,
                   cJSON_GetArrayItem(got, i)->valuedouble,
                   cJSON_GetArrayItem(first, i)->valuedouble);
            bad = 1;
        }
    if (last) {
        int nl = cJSON_GetArraySize(last);
        for (int i = 0; i < nl; i++)
            if (fabs(cJSON_GetArrayItem(last, i)->valuedouble -
                     cJSON_GetArrayItem(got, n - nl + i)->valuedouble) > 6e-7) {
                printf("case %d: timestamp %d = %.9f, expected %.6f\n", idx, n - nl + i,
                       cJSON_GetArrayItem(got, n - nl + i)->valuedouble,
                       cJSON_GetArrayItem(last, i)->valuedouble);
                bad = 1;
            }
    }
    return bad;
}

static int check_strings(const cJSON *exp, const cJSON *got, int idx)
{
    int n = cJSON_GetArraySize(got), bad = 0;
    const cJSON *all = cJSON_GetObjectItem(exp, "all");
    const cJSON *first = all ? all : cJSON_GetObjectItem(exp, "first");
    const cJSON *last = all ? NULL : cJSON_GetObjectItem(exp, "last");
    int count = all ? cJSON_GetArraySize(all) : cJSON_GetObjectItem(exp, "count")->valueint;
    if (count != n) {
        printf("case %d: %d timestamp strings, expected %d\n", idx, n, count);
        return 1;
    }
    for (int i = 0; i < cJSON_GetArraySize(first); i++)
        if (strcmp(cJSON_GetArrayItem(first, i)->valuestring,
                   cJSON_GetArrayItem(got, i)->valuestring)) {
            printf("case %d: string %d = %s, expected %s\n", idx, i,
                   cJSON_GetArrayItem(got, i)->valuestring,
                   cJSON_GetArrayItem(first, i)->valuestring);
            bad = 1;
        }
    if (last) {
        int nl = cJSON_GetArraySize(last);
        for (int i = 0; i < nl; i++)
            if (strcmp(cJSON_GetArrayItem(last, i)->valuestring,
                       cJSON_GetArrayItem(got, n - nl + i)->valuestring)) {
                printf("case %d: string %d = %s, expected %s\n", idx, n - nl + i,
                       cJSON_GetArrayItem(got, n - nl + i)->valuestring,
                       cJSON_GetArrayItem(last, i)->valuestring);
                bad = 1;
            }
    }
    return bad;
}

/* The float32 emulation differs from exact arithmetic exactly where the reference's torch did: the
 * positions where round(i*(total-1)/(n-1)) (exact, half to even) differs from the command's index
 * must be the case's indices_differ_positions. This checks the middle of long lists too. */
static int check_differ(const cJSON *positions, const cJSON *got, int total, int idx)
{
    int n = cJSON_GetArraySize(got), np = cJSON_GetArraySize(positions), k = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        int64_t num = (int64_t)(total - 1) * i, den = n - 1;
        int64_t q = num / den, r = num % den;
        if (2 * r > den || (2 * r == den && (q & 1)))
            q++;
        int64_t g = (int64_t)cJSON_GetArrayItem(got, i)->valuedouble;
        if (g == q)
            continue;
        if (g != q - 1 && g != q + 1) {
            printf("case %d: index %d = %lld, exact %lld\n", idx, i, (long long)g, (long long)q);
            bad = 1;
        }
        if (k < np && cJSON_GetArrayItem(positions, k)->valueint == i)
            k++;
        else {
            printf("case %d: index %d = %lld differs from exact %lld but torch's does not\n", idx,
                   i, (long long)g, (long long)q);
            bad = 1;
        }
    }
    if (k != np) {
        printf("case %d: %d of %d positions where torch differs from exact arithmetic matched\n",
               idx, k, np);
        bad = 1;
    }
    return bad;
}

static int num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return v ? v->valueint : -999999;
}

void test_plan_vectors(void **state)
{
    (void)state;
    char *text = shared_read("vectors/sampling.json", NULL);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    int ncases = cJSON_GetArraySize(cases), matched = 0, errors = 0, indices = 0;
    assert_true(ncases >= 37);
    for (int c = 0; c < ncases; c++) {
        const cJSON *cs = cJSON_GetArrayItem(cases, c);
        const cJSON *in = cJSON_GetObjectItem(cs, "input");
        const cJSON *q = cJSON_GetObjectItem(cs, "qwen_vl_utils");
        char args[512];
        snprintf(args, sizeof args, "--frames %d --fps %.17g --width %d --height %d --json",
                 num(in, "total_frames"), cJSON_GetObjectItem(in, "native_fps")->valuedouble,
                 num(in, "width"), num(in, "height"));
        char *out = NULL;
        int st = run_plan(args, &out);
        const cJSON *experr = cJSON_GetObjectItem(q, "error");
        if (experr) {
            /* The reference raised: the command must fail with the same reason. */
            int ok = st == 1 && strstr(out, experr->valuestring) != NULL;
            if (!ok)
                printf("case %d (%s): expected failure '%s', got status %d: %s\n", c, args,
                       experr->valuestring, st, out);
            matched += ok;
            errors += ok;
            free(out);
            continue;
        }
        cJSON *got = st == 0 ? cJSON_Parse(out) : NULL;
        if (!got) {
            printf("case %d (%s): status %d, output %s\n", c, args, st, out);
            free(out);
            continue;
        }
        int bad = 0;
        if (num(got, "nframes") != num(q, "nframes")) {
            printf("case %d: nframes %d, expected %d\n", c, num(got, "nframes"), num(q, "nframes"));
            bad = 1;
        }
        const cJSON *gi = cJSON_GetObjectItem(got, "frame_indices");
        bad |= check_int_list("frame_indices", cJSON_GetObjectItem(q, "frame_indices_torch_f32"),
                              gi, c);
        indices += cJSON_GetArraySize(gi);
        bad |= check_differ(cJSON_GetObjectItem(q, "indices_differ_positions"), gi,
                            num(in, "total_frames"), c);
        if (num(got, "resized_height") != num(q, "resized_height") ||
            num(got, "resized_width") != num(q, "resized_width")) {
            printf("case %d: resized %dx%d, expected %dx%d\n", c, num(got, "resized_width"),
                   num(got, "resized_height"), num(q, "resized_width"), num(q, "resized_height"));
            bad = 1;
        }
        const cJSON *eg = cJSON_GetObjectItem(q, "grid_thw"),
                    *gg = cJSON_GetObjectItem(got, "grid_thw");
        for (int k = 0; k < 3; k++)
            if (cJSON_GetArrayItem(eg, k)->valueint != cJSON_GetArrayItem(gg, k)->valueint) {
                printf("case %d: grid[%d] %d, expected %d\n", c, k,
                       cJSON_GetArrayItem(gg, k)->valueint, cJSON_GetArrayItem(eg, k)->valueint);
                bad = 1;
            }
        if (num(got, "video_tokens") != num(q, "video_tokens_total") ||
            num(got, "tokens_per_pair") != num(q, "video_tokens_per_temporal_slice")) {
            printf("case %d: tokens %d (%d per pair), expected %d (%d)\n", c,
                   num(got, "video_tokens"), num(got, "tokens_per_pair"),
                   num(q, "video_tokens_total"), num(q, "video_tokens_per_temporal_slice"));
            bad = 1;
        }
        double sf = cJSON_GetObjectItem(got, "sample_fps")->valuedouble;
        double esf = cJSON_GetObjectItem(q, "sample_fps")->valuedouble;
        if (fabs(sf - esf) > 1e-12 * fabs(esf)) {
            printf("case %d: sample_fps %.17g, expected %.17g\n", c, sf, esf);
            bad = 1;
        }
        bad |= check_times(cJSON_GetObjectItem(q, "timestamps_s"),
                           cJSON_GetObjectItem(got, "timestamps"), c);
        bad |= check_strings(cJSON_GetObjectItem(q, "timestamp_strings"),
                             cJSON_GetObjectItem(got, "timestamp_strings"), c);
        if (bad)
            printf("case %d (%s) differs\n", c, args);
        matched += !bad;
        cJSON_Delete(got);
        free(out);
    }
    printf("sampling.json qwen_vl_utils: %d/%d cases matched through `vigil plan --json` (%d "
           "error cases, %d frame indices compared)\n",
           matched, ncases, errors, indices);
    cJSON_Delete(root);
    free(text);
    assert_int_equal(matched, ncases);
}

void test_plan_linspace(void **state)
{
    (void)state;
    int64_t a[8];
    vg_linspace_round_f32(0, 119, 8, a);
    const int64_t e[8] = {0, 17, 34, 51, 68, 85, 102, 119};
    for (int i = 0; i < 8; i++)
        assert_int_equal(a[i], e[i]);
    /* Half to even: linspace(0, 5, 3) = 0, 2.5, 5 -> 0, 2, 5. */
    int64_t b[3];
    vg_linspace_round_f32(0, 5, 3, b);
    assert_int_equal(b[1], 2);
    /* A long list: strictly inside [start, end], ends exact, non-decreasing. */
    int64_t *c = malloc(768 * sizeof *c);
    assert_non_null(c);
    vg_linspace_round_f32(1000, 648999, 768, c);
    assert_int_equal(c[0], 1000);
    assert_int_equal(c[767], 648999);
    for (int i = 1; i < 768; i++)
        assert_true(c[i] > c[i - 1]);
    free(c);
    int64_t one;
    vg_linspace_round_f32(7, 9, 1, &one);
    assert_int_equal(one, 7);
}

/* 600 random frame ranges (up to 2 million frames) whose float32 torch.linspace indices were
 * recorded by make_linspace_fixture.py; the emulation must give the same index lists. */
void test_plan_linspace_torch(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/linspace_fixture.txt", VG_TEST_DIR);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[256];
    int cases = 0, ok = 0;
    int64_t *idx = malloc(768 * sizeof *idx);
    assert_non_null(idx);
    while (fgets(line, sizeof line, f)) {
        long long s, e, first, last;
        unsigned long long h;
        int n;
        if (line[0] == '#' ||
            sscanf(line, "%lld %lld %d %llu %lld %lld", &s, &e, &n, &h, &first, &last) != 6)
            continue;
        assert_true(n >= 2 && n <= 768);
        vg_linspace_round_f32((double)s, (double)e, n, idx);
        unsigned long long g = 1469598103934665603ULL;
        for (int i = 0; i < n; i++) {
            g ^= (unsigned long long)idx[i];
            g *= 1099511628211ULL;
        }
        cases++;
        if (g == h && idx[0] == first && idx[n - 1] == last)
            ok++;
        else
            printf("linspace(%lld, %lld, %d) differs from torch's\n", s, e, n);
    }
    fclose(f);
    free(idx);
    printf("float32 linspace emulation: %d/%d torch cases\n", ok, cases);
    assert_true(cases >= 500);
    assert_int_equal(ok, cases);
}

void test_plan_smart_resize(void **state)
{
    (void)state;
    int h = 0, w = 0;
    char err[256];
    /* docs/qwen3vl.md §1.7 example: 1280x720 under the 786432 cap -> 640x1152 (720/32 = 22.5 rounds
     * to 22). */
    assert_int_equal(vg_smart_resize(720, 1280, 32, 131072, 786432, &h, &w, err, sizeof err), 0);
    assert_int_equal(h, 640);
    assert_int_equal(w, 1152);
    /* Half to even: 80/32 = 2.5 -> 2, 144/32 = 4.5 -> 4. */
    assert_int_equal(vg_smart_resize(80, 144, 32, 0, 1L << 30, &h, &w, err, sizeof err), 0);
    assert_int_equal(h, 64);
    assert_int_equal(w, 128);
    /* Upscale branch. */
    assert_int_equal(vg_smart_resize(64, 64, 32, 131072, 786432, &h, &w, err, sizeof err), 0);
    assert_int_equal(h, 384);
    assert_int_equal(w, 384);
    /* The unclamped downscale branch would give 0: an error with a sentence, not a crash. */
    err[0] = 0;
    assert_true(vg_smart_resize(1, 150, 32, 0, 1024, &h, &w, err, sizeof err) < 0);
    assert_true(strlen(err) > 10);
    /* Aspect ratio over 200. */
    assert_int_equal(vg_smart_resize(10, 2001, 32, 0, 1L << 30, &h, &w, err, sizeof err),
                     VG_ERANGE);
    assert_non_null(strstr(err, "aspect ratio"));
    /* Zero and negative sizes, max < min. */
    assert_true(vg_smart_resize(0, 100, 32, 0, 1L << 30, &h, &w, err, sizeof err) < 0);
    assert_true(vg_smart_resize(100, -5, 32, 0, 1L << 30, &h, &w, err, sizeof err) < 0);
    assert_true(vg_smart_resize(100, 100, 32, 5000, 4000, &h, &w, err, sizeof err) < 0);
    assert_true(vg_smart_resize(100, 100, 0, 0, 4000, &h, &w, err, sizeof err) < 0);
}

void test_plan_errors(void **state)
{
    (void)state;
    vg_sample_params p = vg_sample_default_params();
    vg_plan *plan = NULL;
    char err[256];
    assert_true(vg_plan_compute(1, 30, 640, 360, &p, &plan, err, sizeof err) < 0);
    assert_non_null(strstr(err, "nframes should in interval [2, 1]"));
    assert_true(vg_plan_compute(0, 30, 640, 360, &p, &plan, err, sizeof err) < 0);
    assert_true(vg_plan_compute(100, 0, 640, 360, &p, &plan, err, sizeof err) < 0);
    assert_true(vg_plan_compute(100, NAN, 640, 360, &p, &plan, err, sizeof err) < 0);
    assert_true(vg_plan_compute(100, INFINITY, 640, 360, &p, &plan, err, sizeof err) < 0);
    assert_true(vg_plan_compute(100, 30, 0, 360, &p, &plan, err, sizeof err) < 0);
    assert_true(vg_plan_compute(100, 30, 640, -1, &p, &plan, err, sizeof err) < 0);
    assert_true(vg_plan_compute(100, 30, 40000, 100, &p, &plan, err, sizeof err) < 0);
    assert_null(plan);
    /* Explicit nframes larger than the video. */
    p.nframes = 200;
    assert_true(vg_plan_compute(100, 30, 640, 360, &p, &plan, err, sizeof err) < 0);
    /* max_pixels below min_pixels. */
    p = vg_sample_default_params();
    p.max_pixels = 1000;
    assert_true(vg_plan_compute(100, 30, 640, 360, &p, &plan, err, sizeof err) < 0);
    assert_null(plan);
    /* Implausible budgets and knobs fail instead of overflowing. */
    p = vg_sample_default_params();
    p.min_pixels = 1L << 60;
    assert_true(vg_plan_compute(100, 30, 640, 360, &p, &plan, err, sizeof err) < 0);
    p = vg_sample_default_params();
    p.total_pixels = INFINITY;
    assert_true(vg_plan_compute(100, 30, 640, 360, &p, &plan, err, sizeof err) < 0);
    p = vg_sample_default_params();
    p.fps = NAN;
    assert_true(vg_plan_compute(100, 30, 640, 360, &p, &plan, err, sizeof err) < 0);
    p = vg_sample_default_params();
    p.nframes = 2147483647;
    assert_true(vg_plan_compute(100, 30, 640, 360, &p, &plan, err, sizeof err) < 0);
    p = vg_sample_default_params();
    p.video_start = 1e300;
    assert_true(vg_plan_compute(100, 30, 640, 360, &p, &plan, err, sizeof err) < 0);
    assert_null(plan);
    int64_t big[3];
    vg_linspace_round_f32(0, 1e30, 3, big);
    assert_int_equal(big[2], INT64_MAX);
    vg_linspace_round_f32(NAN, 5, 3, big);
    vg_plan_free(NULL);
}

void test_plan_clip(void **state)
{
    (void)state;
    vg_sample_params p = vg_sample_default_params();
    vg_plan *plan = NULL;
    char err[256];
    /* 10 s at 30 fps, clip [2 s, 6 s]: frames 60..180 (121), 8 sampled, absolute indices
     * (torch.linspace(60, 180, 8).round() = 60 77 94 111 129 146 163 180). */
    p.video_start = 2.0;
    p.video_end = 6.0;
    assert_int_equal(vg_plan_compute(300, 30, 1280, 720, &p, &plan, err, sizeof err), 0);
    const int64_t e[8] = {60, 77, 94, 111, 129, 146, 163, 180};
    assert_int_equal(plan->nframes, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(plan->frame_indices[i], e[i]);
    char ts[VG_TIME_TOKEN_MAX];
    vg_time_token(plan->pair_times[0], ts, sizeof ts);
    assert_string_equal(ts, "<2.3 seconds>");
    vg_time_token(plan->pair_times[3], ts, sizeof ts);
    assert_string_equal(ts, "<5.7 seconds>"); /* (163+180)/2/30 */
    /* Real presentation times (a decoded timeline) give the pairs' times. */
    double t[8] = {0, 1, 2, 3, 4, 5, 6, 7.5}, pt[4];
    vg_timeline tl = {8, plan->frame_indices, t, 0};
    assert_int_equal(vg_timeline_pair_times(&tl, 2, pt, 4), 0);
    vg_time_token(pt[3], ts, sizeof ts);
    assert_string_equal(ts, "<6.8 seconds>");
    assert_true(pt[0] == 0.5);
    vg_plan_free(plan);
    plan = NULL;
    /* Start after end. */
    p.video_start = 7.0;
    p.video_end = 3.0;
    assert_true(vg_plan_compute(300, 30, 1280, 720, &p, &plan, err, sizeof err) < 0);
    assert_non_null(strstr(err, "invalid time range"));
    /* Explicit nframes rounds half to even: 5 -> 4, 7 -> 8. */
    p = vg_sample_default_params();
    p.nframes = 5;
    assert_int_equal(vg_plan_compute(300, 30, 1280, 720, &p, &plan, err, sizeof err), 0);
    assert_int_equal(plan->nframes, 4);
    vg_plan_free(plan);
    p.nframes = 7;
    assert_int_equal(vg_plan_compute(300, 30, 1280, 720, &p, &plan, err, sizeof err), 0);
    assert_int_equal(plan->nframes, 8);
    vg_plan_free(plan);
    /* Resized size override, rounded to the factor with the image budgets. */
    p = vg_sample_default_params();
    p.resized_height = 100;
    p.resized_width = 200;
    assert_int_equal(vg_plan_compute(300, 30, 1280, 720, &p, &plan, err, sizeof err), 0);
    assert_int_equal(plan->resized_height, 96);
    assert_int_equal(plan->resized_width, 192);
    assert_int_equal(plan->grid_h, 6);
    assert_int_equal(plan->grid_w, 12);
    assert_int_equal(plan->tokens_per_pair, 18);
    vg_plan_free(plan);
}

void test_plan_cmd_usage(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(run_plan("--help", &out), 0);
    assert_non_null(strstr(out, "usage: vigil plan"));
    assert_non_null(strstr(out, "--total-pixels"));
    free(out);
    assert_int_equal(run_plan("--frames 10", &out), 2);
    free(out);
    assert_int_equal(run_plan("--frames ten --fps 30 --width 64 --height 64", &out), 2);
    free(out);
    assert_int_equal(run_plan("--frames 10 --fps 30 --width 64 --height 64 --bogus 1", &out), 2);
    free(out);
    /* Impossible input: an error sentence and status 1. */
    assert_int_equal(
        run_plan("--frames 300 --fps 30 --width 64 --height 64 --start 9 --end 2", &out), 1);
    assert_non_null(strstr(out, "invalid time range"));
    free(out);
    /* Human output. */
    assert_int_equal(run_plan("--frames 120 --fps 30 --width 1280 --height 720", &out), 0);
    assert_non_null(strstr(out, "<0.3 seconds> <1.4 seconds> <2.5 seconds> <3.7 seconds>"));
    assert_non_null(strstr(out, "640"));
    free(out);
    /* Knobs reach the plan: --nframes, --max-pixels, --end. */
    assert_int_equal(run_plan("--frames 300 --fps 30 --width 1280 --height 720 --nframes 6 "
                              "--max-pixels 200000 --end 5 --json",
                              &out),
                     0);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_int_equal(num(j, "nframes"), 6);
    assert_true(num(j, "resized_height") * num(j, "resized_width") <= 200000);
    const cJSON *fi = cJSON_GetObjectItem(j, "frame_indices");
    assert_int_equal(cJSON_GetArrayItem(fi, 5)->valueint, 150);
    cJSON_Delete(j);
    free(out);
}

/* `vigil plan VIDEO` reads the frame count, fps and size from the file and then plans exactly as
 * the numbers-only form does. The clip is made with ffmpeg -f lavfi at test time. */
void test_plan_cmd_file(void **state)
{
    (void)state;
    if (system("ffmpeg -version >/dev/null 2>&1") != 0) {
        printf("skipped: ffmpeg is not installed\n");
        skip();
    }
    char dir[] = "/tmp/vg-plan-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[512], path[256];
    snprintf(path, sizeof path, "%s/clip.mp4", dir);
    snprintf(
        cmd, sizeof cmd,
        "ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=320x180:rate=25:duration=4.4 "
        "-pix_fmt yuv420p '%s'",
        path);
    assert_int_equal(system(cmd), 0);
    char args[512], *a = NULL, *b = NULL;
    snprintf(args, sizeof args, "'%s' --start 1 --end 3 --json", path);
    assert_int_equal(run_plan(args, &a), 0);
    assert_int_equal(
        run_plan("--frames 110 --fps 25 --width 320 --height 180 --start 1 --end 3 --json", &b), 0);
    cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b);
    assert_non_null(ja);
    assert_non_null(jb);
    cJSON *src = cJSON_GetObjectItem(ja, "source");
    assert_string_equal(cJSON_GetObjectItem(src, "file")->valuestring, path);
    cJSON_DeleteItemFromObject(src, "file");
    assert_true(cJSON_Compare(ja, jb, 1));
    assert_int_equal(num(ja, "nframes"), 4);
    assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(ja, "frame_indices"), 0)->valueint, 25);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    free(a);
    free(b);
    /* A file that does not exist, and one that is not a video. */
    snprintf(args, sizeof args, "'%s/missing.mp4'", dir);
    assert_int_equal(run_plan(args, &a), 1);
    free(a);
    snprintf(path, sizeof path, "%s/text.mp4", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("not a video\n", f);
    fclose(f);
    snprintf(args, sizeof args, "'%s'", path);
    assert_int_equal(run_plan(args, &a), 1);
    free(a);
    /* VIDEO and numbers together is a usage error. */
    snprintf(args, sizeof args, "'%s' --frames 10", path);
    assert_int_equal(run_plan(args, &a), 2);
    free(a);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}
