/*
 * test_eval_score.c: the scoring functions of `vigil eval` (tools/client/eval.c): tIoU, recall
 * thresholds, negatives, the blind fit on sets whose optimum is known, benchmark-line parsing
 * (including hostile lines) and reading predictions out of untrusted job objects.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "eval.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static void test_tiou(void **state)
{
    (void)state;
    assert_float_equal(vg_eval_tiou(1, 3, 1, 3), 1.0, 1e-12);
    assert_float_equal(vg_eval_tiou(0, 2, 1, 3), 1.0 / 3.0, 1e-12);
    assert_float_equal(vg_eval_tiou(1, 2, 0, 4), 0.25, 1e-12);
    assert_float_equal(vg_eval_tiou(0, 4, 1, 2), 0.25, 1e-12);
    assert_float_equal(vg_eval_tiou(2, 0, 3, 1), 1.0 / 3.0, 1e-12); /* reversed bounds */
    assert_float_equal(vg_eval_tiou(0, 1, 2, 3), 0.0, 0);           /* disjoint */
    assert_float_equal(vg_eval_tiou(0, 1, 1, 2), 0.0, 0);           /* touching */
    assert_float_equal(vg_eval_tiou(1.5, 1.5, 1, 2), 0.0, 0);       /* an instant inside */
    assert_float_equal(vg_eval_tiou(1.5, 1.5, 1.5, 1.5), 1.0, 0);   /* identical instants */
    assert_float_equal(vg_eval_tiou(NAN, 1, 0, 1), 0.0, 0);
    assert_float_equal(vg_eval_tiou(0, INFINITY, 0, 1), 0.0, 0);
    assert_float_equal(vg_eval_tiou(0, 1, -INFINITY, 1), 0.0, 0);
    assert_float_equal(vg_eval_tiou(-1e308, 1e308, 0, 1), 0.0, 1e-300);
}

static void test_metrics(void **state)
{
    (void)state;
    vg_eval_acc a;
    memset(&a, 0, sizeof a);
    vg_eval_metrics m;
    vg_eval_metrics_get(&a, &m);
    assert_true(isnan(m.mean_tiou) && isnan(m.r05) && isnan(m.negative_accuracy));
    assert_true(isnan(m.mean_tiou_all));
    const double t[] = {0.29, 0.3, 0.5, 0.69, 0.7, 1.0, 0.0};
    double sum = 0;
    for (size_t i = 0; i < VG_ARRAY_LEN(t); i++) {
        vg_eval_acc_positive(&a, t[i]);
        sum += t[i];
    }
    vg_eval_metrics_get(&a, &m);
    assert_int_equal(m.n_positive, 7);
    assert_float_equal(m.mean_tiou, sum / 7, 1e-12);
    assert_float_equal(m.r03, 5.0 / 7, 1e-12); /* the threshold itself counts */
    assert_float_equal(m.r05, 4.0 / 7, 1e-12);
    assert_float_equal(m.r07, 2.0 / 7, 1e-12);
    assert_true(isnan(m.negative_accuracy));
    vg_eval_acc_negative(&a, 1);
    vg_eval_acc_negative(&a, 0);
    vg_eval_acc_negative(&a, 7); /* any non-zero is correct */
    vg_eval_acc_error(&a);
    vg_eval_metrics_get(&a, &m);
    assert_int_equal(m.n_negative, 3);
    assert_int_equal(m.n_errors, 1);
    assert_float_equal(m.negative_accuracy, 2.0 / 3, 1e-12);
    assert_float_equal(m.mean_tiou_all, (sum + 2) / 10, 1e-12);
    assert_float_equal(m.mean_tiou, sum / 7, 1e-12); /* negatives do not change it */
}

static void test_fit_blind(void **state)
{
    (void)state;
    double d[64] = {0}, s[64] = {0}, e[64] = {0}, a = -1, b = -1, mt = -1;
    assert_int_equal(vg_eval_fit_blind(d, s, e, 0, &a, &b, &mt), VG_EINVAL);
    /* Every truth at 0.2..0.8 of its clip: that is the optimum, with tIoU 1. */
    for (int i = 0; i < 64; i++) {
        d[i] = 4 + 0.57 * i;
        s[i] = 0.2 * d[i];
        e[i] = 0.8 * d[i];
    }
    assert_int_equal(vg_eval_fit_blind(d, s, e, 64, &a, &b, &mt), 0);
    assert_float_equal(a, 0.2, 1e-12);
    assert_float_equal(b, 0.8, 1e-12);
    assert_float_equal(mt, 1.0, 1e-9);
    /* Half the truths on the first half, half on the second: (0, 0.5), (0.5, 1) and (0, 1) all
     * score 0.5 and nothing scores more; the tie goes to the smallest a, then the smallest b. */
    for (int i = 0; i < 10; i++) {
        d[i] = 10;
        s[i] = i % 2 ? 5 : 0;
        e[i] = i % 2 ? 10 : 5;
    }
    assert_int_equal(vg_eval_fit_blind(d, s, e, 10, &a, &b, &mt), 0);
    assert_float_equal(a, 0.0, 0);
    assert_float_equal(b, 0.5, 0);
    assert_float_equal(mt, 0.5, 1e-12);
    /* A skewed mixture: the fit is the maximum over the whole grid (checked by brute force). */
    unsigned r = 7;
    for (int i = 0; i < 64; i++) {
        r = r * 1103515245u + 12345u;
        d[i] = 4 + (r >> 16) % 37;
        r = r * 1103515245u + 12345u;
        double f0 = (double)((r >> 16) % 60) / 100;
        r = r * 1103515245u + 12345u;
        double len = 0.05 + (double)((r >> 16) % 40) / 100;
        s[i] = f0 * d[i];
        e[i] = fmin(d[i], s[i] + len * d[i]);
    }
    assert_int_equal(vg_eval_fit_blind(d, s, e, 64, &a, &b, &mt), 0);
    assert_true(a >= 0 && a < b && b <= 1);
    double check = 0;
    for (int k = 0; k < 64; k++)
        check += vg_eval_tiou(a * d[k], b * d[k], s[k], e[k]);
    assert_float_equal(check / 64, mt, 1e-12);
    for (int i = 0; i <= 100; i++)
        for (int j = i + 1; j <= 100; j++) {
            double sum = 0;
            for (int k = 0; k < 64; k++)
                sum += vg_eval_tiou(i / 100.0 * d[k], j / 100.0 * d[k], s[k], e[k]);
            assert_true(sum / 64 <= mt + 1e-12);
        }
}

static int parse(const char *line, const char *base, vg_eval_item *it, char *err)
{
    memset(it, 0, sizeof *it);
    return vg_eval_parse_line(line, strlen(line), base, it, err, 256);
}

static void test_parse_line(void **state)
{
    (void)state;
    vg_eval_item it;
    char err[256];
    assert_int_equal(parse("{\"video\":\"a/b.mp4\",\"query\":\"When?\",\"start\":1.5,\"end\":4,"
                           "\"duration\":12.5,\"extra\":[1,{\"x\":2}]}",
                           "/data/set", &it, err),
                     0);
    assert_string_equal(it.video, "/data/set/a/b.mp4");
    assert_string_equal(it.query, "When?");
    assert_true(it.positive);
    assert_float_equal(it.start, 1.5, 0);
    assert_float_equal(it.end, 4, 0);
    assert_float_equal(it.duration, 12.5, 0);
    assert_null(it.error);
    vg_eval_item_clear(&it);
    assert_null(it.video);
    /* A negative; "question" as a synonym; absolute paths and URLs kept; null bounds. */
    assert_int_equal(parse("{\"video\":\"/abs/c.mkv\",\"question\":\"Q\"}", "/d", &it, err), 0);
    assert_string_equal(it.video, "/abs/c.mkv");
    assert_false(it.positive);
    assert_float_equal(it.duration, 0, 0);
    vg_eval_item_clear(&it);
    assert_int_equal(parse("{\"video\":\"https://h/x.mp4\",\"query\":\"Q\",\"start\":null,"
                           "\"end\":null}",
                           "/d", &it, err),
                     0);
    assert_string_equal(it.video, "https://h/x.mp4");
    assert_false(it.positive);
    vg_eval_item_clear(&it);
    assert_int_equal(parse("{\"video\":\"file:///x.mp4\",\"query\":\"Q\"}", "/d", &it, err), 0);
    assert_string_equal(it.video, "file:///x.mp4");
    vg_eval_item_clear(&it);
    assert_int_equal(parse("{\"video\":\"x.mp4\",\"query\":\"Q\"}", NULL, &it, err), 0);
    assert_string_equal(it.video, "x.mp4");
    vg_eval_item_clear(&it);
    /* Malformed lines: a reason, nothing allocated. */
    static const char *const bad[] = {
        "",
        "not json",
        "[1,2]",
        "{\"video\":\"a.mp4\"}",
        "{\"query\":\"Q\"}",
        "{\"video\":\"\",\"query\":\"Q\"}",
        "{\"video\":7,\"query\":\"Q\"}",
        "{\"video\":\"a.mp4\",\"query\":\"\"}",
        "{\"video\":\"a.mp4\",\"query\":\"Q\",\"start\":1}",
        "{\"video\":\"a.mp4\",\"query\":\"Q\",\"end\":1}",
        "{\"video\":\"a.mp4\",\"query\":\"Q\",\"start\":3,\"end\":1}",
        "{\"video\":\"a.mp4\",\"query\":\"Q\",\"start\":-1,\"end\":1}",
        "{\"video\":\"a.mp4\",\"query\":\"Q\",\"start\":\"1\",\"end\":2}",
        "{\"video\":\"a.mp4\",\"query\":\"Q\",\"start\":0,\"end\":1e999}",
        "{\"video\":\"a.mp4\",\"query\":\"Q\",\"duration\":0}",
        "{\"video\":\"a.mp4\",\"query\":\"Q\",\"duration\":\"long\"}",
        "{\"video\":\"a.mp4\",\"query\":\"Q\"} trailing",
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        err[0] = 0;
        int rc = parse(bad[i], "/d", &it, err);
        if (rc != VG_EFORMAT)
            fail_msg("accepted: %s", bad[i]);
        assert_true(err[0] != 0);
        assert_null(it.video);
    }
    /* Not NUL-terminated: only len bytes are read. */
    const char buf[] = "{\"video\":\"v.mp4\",\"query\":\"Q\"}XXXX";
    memset(&it, 0, sizeof it);
    assert_int_equal(vg_eval_parse_line(buf, sizeof buf - 5, "/d", &it, err, sizeof err), 0);
    vg_eval_item_clear(&it);
    /* An over-long video path. */
    size_t n = 5000;
    char *big = malloc(n + 64);
    assert_non_null(big);
    strcpy(big, "{\"video\":\"");
    memset(big + 10, 'a', n);
    strcpy(big + 10 + n, "\",\"query\":\"Q\"}");
    assert_int_equal(parse(big, "/d", &it, err), VG_EFORMAT);
    free(big);
}

static void test_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/vg-evscore-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], real[4096];
    snprintf(path, sizeof path, "%s/set.jsonl", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"video\":\"clips/a.mp4\",\"query\":\"Q1\",\"start\":0,\"end\":2}\n"
          "\n   \n"
          "{\"video\":\"b.mp4\",\"query\":\"Q2\"}\r\n"
          "garbage\n"
          "{\"video\":\"/x/c.mp4\",\"query\":\"Q3\",\"start\":1,\"end\":2}",
          f);
    fclose(f);
    assert_non_null(realpath(dir, real));
    vg_eval_set *s = NULL;
    char err[256];
    assert_int_equal(vg_eval_load(path, 0, &s, err, sizeof err), 0);
    assert_int_equal(s->n, 4);
    char want[4200];
    snprintf(want, sizeof want, "%s/clips/a.mp4", real);
    assert_string_equal(s->items[0].video, want);
    assert_int_equal(s->items[0].line, 1);
    assert_true(s->items[0].positive);
    assert_int_equal(s->items[1].line, 4);
    assert_false(s->items[1].positive);
    assert_null(s->items[1].error);
    assert_int_equal(s->items[2].line, 5);
    assert_non_null(s->items[2].error);
    assert_null(s->items[2].video);
    assert_int_equal(s->items[3].line, 6);
    assert_string_equal(s->items[3].video, "/x/c.mp4");
    vg_eval_set_free(s);
    /* --max counts items, not blank lines. */
    assert_int_equal(vg_eval_load(path, 2, &s, err, sizeof err), 0);
    assert_int_equal(s->n, 2);
    vg_eval_set_free(s);
    vg_eval_set_free(NULL);
    snprintf(path, sizeof path, "%s/none.jsonl", dir);
    assert_int_equal(vg_eval_load(path, 0, &s, err, sizeof err), VG_ENOENT);
    assert_non_null(strstr(err, "none.jsonl"));
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
}

static int pred(const char *json, size_t *n, double *s, double *e)
{
    char err[256];
    return vg_eval_job_prediction(json, strlen(json), n, s, e, err, sizeof err);
}

static void test_prediction(void **state)
{
    (void)state;
    size_t n = 99;
    double s = -1, e = -1;
    /* The first usable event is the top-1 moment; reversed bounds are reordered. */
    assert_int_equal(pred("{\"events\":[{\"start\":\"x\",\"end\":2},{\"start\":5,\"end\":3,"
                          "\"label\":\"a\"},{\"start\":7,\"end\":9}],\"text\":\"ignored\"}",
                          &n, &s, &e),
                     0);
    assert_int_equal(n, 2);
    assert_float_equal(s, 3, 0);
    assert_float_equal(e, 5, 0);
    assert_int_equal(pred("{\"events\":[],\"text\":\"from 1 to 2 seconds\"}", &n, &s, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(pred("{\"events\":[1,null,\"s\",{\"start\":1}]}", &n, &s, &e), 0);
    assert_int_equal(n, 0);
    /* Without events, the text goes through the pipeline's answer parser. */
    assert_int_equal(
        pred("{\"text\":\"The red box is visible from 1.0 to 2.5 seconds.\"}", &n, &s, &e), 0);
    assert_int_equal(n, 1);
    assert_float_equal(s, 1.0, 1e-9);
    assert_float_equal(e, 2.5, 1e-9);
    assert_int_equal(pred("{\"text\":\"There is no red box in the video.\"}", &n, &s, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(pred("{\"text\":7}", &n, &s, &e), VG_EFORMAT);
    assert_int_equal(pred("[]", &n, &s, &e), VG_EFORMAT);
    assert_int_equal(pred("{\"events\":{}}", &n, &s, &e), VG_EFORMAT);
    assert_int_equal(pred("{", &n, &s, &e), VG_EFORMAT);
    assert_int_equal(pred("", &n, &s, &e), VG_EFORMAT);
}

/* Random mutations of valid lines and job objects: never a crash (run under ASan/UBSan), and a
 * line is either accepted with sane fields or rejected with a reason. */
static void test_fuzz(void **state)
{
    (void)state;
    static const char *const seeds[] = {
        "{\"video\":\"a.mp4\",\"query\":\"When?\",\"start\":1.5,\"end\":4,\"duration\":9}",
        "{\"video\":\"/x/b.mkv\",\"question\":\"Q\",\"start\":null,\"end\":null}",
        "{\"events\":[{\"start\":1,\"end\":2,\"label\":\"x\"}],\"text\":\"from 1 to 2 seconds\"}",
        "{\"text\":\"The red box is visible from 00:01 to 00:04.5 seconds. [{\\\"start\\\":3}]\"}",
    };
    static const char alphabet[] = "{}[]\":,.-+eE0123456789 \\nulltruefalse\x01\xff\xc3";
    unsigned r = 99;
    char buf[512];
    for (int iter = 0; iter < 20000; iter++) {
        const char *seed = seeds[iter % VG_ARRAY_LEN(seeds)];
        size_t n = strlen(seed);
        memcpy(buf, seed, n);
        int edits = 1 + iter % 6;
        for (int k = 0; k < edits; k++) {
            r = r * 1103515245u + 12345u;
            size_t pos = (r >> 8) % (n + 1);
            r = r * 1103515245u + 12345u;
            char ch = alphabet[(r >> 8) % (sizeof alphabet - 1)];
            int op = (int)((r >> 20) % 3);
            if (op == 0 && pos < n) {
                buf[pos] = ch;
            } else if (op == 1 && n + 1 < sizeof buf) {
                memmove(buf + pos + 1, buf + pos, n - pos);
                buf[pos] = ch;
                n++;
            } else if (pos < n) {
                memmove(buf + pos, buf + pos + 1, n - pos - 1);
                n--;
            }
        }
        vg_eval_item it;
        memset(&it, 0, sizeof it);
        char err[256];
        int rc = vg_eval_parse_line(buf, n, "/base", &it, err, sizeof err);
        if (rc == 0) {
            assert_non_null(it.video);
            assert_non_null(it.query);
            assert_true(!it.positive || (it.start >= 0 && it.end >= it.start));
            assert_true(it.duration >= 0);
            vg_eval_item_clear(&it);
        } else {
            assert_int_equal(rc, VG_EFORMAT);
            assert_null(it.video);
        }
        size_t ne;
        double s, e;
        if (vg_eval_job_prediction(buf, n, &ne, &s, &e, err, sizeof err) == 0 && ne > 0)
            assert_true(isfinite(s) && isfinite(e) && s <= e);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiou),      cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_fit_blind), cmocka_unit_test(test_parse_line),
        cmocka_unit_test(test_load),      cmocka_unit_test(test_prediction),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
