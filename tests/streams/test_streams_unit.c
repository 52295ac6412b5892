/*
 * test_streams_unit.c: the pure parts of live streams.
 *  - vg_stream_track_check / _update: answers' ranges checked against their window, and the
 *    voting tracker's started/update/ended transitions and their times from simulated answers
 *    over a sliding window (the random test model's answers are noise, so the logic is proven
 *    here); labels and answers rewritten in stream time.
 *  - vg_seq_remove (model/window.c): on a random tiny model, the rows after a removed range land
 *    exactly where the rows of the kept tokens belong, the head is untouched, and a removal at the
 *    end followed by more tokens gives the same logits as never having had the removed tokens.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "engine.h"
#include "model.h"
#include "streams.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static vg_event ev(double s, double e, const char *label)
{
    vg_event x;
    memset(&x, 0, sizeof x);
    x.start = s;
    x.end = e;
    snprintf(x.label, sizeof x.label, "%s", label);
    return x;
}

/* Answers of a simulated model over a sliding window: each answer states the parts of truth[nt]
 * inside [ws, we] (an exact model), except where lie (optional) replaces it. Feeds every answer
 * to t and collects the transitions in out (returns how many). */
typedef struct sim_lie {
    double at_we; /* the answer of the window ending here ... */
    double s, e;  /* ... states this instead (e < s: states nothing) */
} sim_lie;

static int simulate(vg_stream_track *t, const double (*truth)[2], int nt, double until, double win,
                    double step, const sim_lie *lies, int nl, vg_stream_transition *out, int cap)
{
    int k = 0;
    for (double we = step; we <= until + 1e-9; we += step) {
        double ws = VG_MAX(0.0, we - win);
        vg_event e[8];
        size_t n = 0;
        int lied = 0;
        for (int i = 0; i < nl; i++)
            if (fabs(lies[i].at_we - we) < 1e-6) {
                lied = 1;
                if (lies[i].e >= lies[i].s)
                    e[n++] = ev(lies[i].s, lies[i].e, "lie");
            }
        for (int i = 0; i < nt && !lied; i++)
            if (truth[i][1] > ws && truth[i][0] < we)
                e[n++] = ev(VG_MAX(truth[i][0], ws), VG_MIN(truth[i][1], we), "box");
        vg_stream_transition tr[VG_TRACK_MAX_OUT];
        int r = vg_stream_track_update(t, e, n, ws, we, -0.25, "text", tr);
        assert_true(r >= 0);
        for (int i = 0; i < r && k < cap; i++)
            out[k++] = tr[i];
    }
    return k;
}

static int count_kind(const vg_stream_transition *tr, int n, int kind)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += tr[i].kind == kind;
    return c;
}

static const vg_stream_transition *nth_kind(const vg_stream_transition *tr, int n, int kind, int k)
{
    for (int i = 0; i < n; i++)
        if (tr[i].kind == kind && k-- == 0)
            return &tr[i];
    return NULL;
}

/* Reversed, out-of-window and contradicted ranges are rejected and counted; an overshoot of less
 * than a pair is clamped. */
static void test_track_check(void **state)
{
    (void)state;
    vg_event in[6] = {ev(12, 21, "r"), ev(6.2, 30.2, "wide"), ev(4.5, 21.9, "over"),
                      ev(8, 9, "ok"),  ev(NAN, 3, "nan"),     ev(10, 12, "c")};
    in[0].flags = VG_EVENT_REVERSED;
    in[5].flags = VG_EVENT_CONTRADICTED;
    vg_event out[6];
    vg_track_checks c = {0};
    assert_int_equal(vg_stream_track_check(in, 6, 5.0, 21.5, 1.0, out, &c), 2);
    assert_int_equal(c.reversed, 1);
    assert_int_equal(c.out_of_window, 2);
    assert_int_equal(c.contradictory, 1);
    assert_int_equal(c.clamped, 1);
    assert_string_equal(out[0].label, "over");
    assert_true(fabs(out[0].start - 5.0) < 1e-9 && fabs(out[0].end - 21.5) < 1e-9);
    assert_string_equal(out[1].label, "ok");
    /* In place, and bad arguments. */
    assert_int_equal(vg_stream_track_check(in, 6, 5.0, 21.5, 1.0, in, NULL), 2);
    assert_int_equal(vg_stream_track_check(NULL, 1, 0, 1, 1, out, NULL), VG_EINVAL);
    assert_int_equal(vg_stream_track_check(in, 1, 2, 1, 1, out, NULL), VG_EINVAL);
}

/* An exact model over a 16 s window answering every 2 s: one started (at the stated start, not
 * before a second answer confirmed it) and one ended (at the stated end) per true interval. */
static void test_track_exact_model(void **state)
{
    (void)state;
    vg_track_params p = vg_track_default_params(16, 2);
    vg_stream_track t;
    assert_int_equal(vg_stream_track_init(&t, &p), 0);
    static const double truth[3][2] = {{12, 26}, {40, 49}, {101, 108}};
    vg_stream_transition tr[64];
    int n = simulate(&t, truth, 3, 140, 16, 2, NULL, 0, tr, 64);
    assert_int_equal(count_kind(tr, n, VG_TRANSITION_STARTED), 3);
    assert_int_equal(count_kind(tr, n, VG_TRANSITION_ENDED), 3);
    for (int i = 0; i < 3; i++) {
        const vg_stream_transition *s = nth_kind(tr, n, VG_TRANSITION_STARTED, i);
        const vg_stream_transition *e = nth_kind(tr, n, VG_TRANSITION_ENDED, i);
        assert_true(fabs(s->start - truth[i][0]) < 0.11);
        assert_true(fabs(e->start - truth[i][0]) < 0.11);
        assert_true(fabs(e->end - truth[i][1]) < 0.11);
        assert_true(fabs(e->score + 0.25) < 1e-6);
        assert_string_equal(e->text, "text");
    }
    assert_false(t.active);
    /* A stream that ends during an event: finish ends it where the answers last saw it. */
    vg_stream_track_free(&t);
    assert_int_equal(vg_stream_track_init(&t, &p), 0);
    static const double open_end[1][2] = {{20, 100}};
    n = simulate(&t, open_end, 1, 40, 16, 2, NULL, 0, tr, 64);
    assert_int_equal(count_kind(tr, n, VG_TRANSITION_STARTED), 1);
    assert_int_equal(count_kind(tr, n, VG_TRANSITION_ENDED), 0);
    assert_int_equal(vg_stream_track_finish(&t, tr), 1);
    assert_int_equal(tr[0].kind, VG_TRANSITION_ENDED);
    /* The newest 2 s were stated by one answer only: the last confirmed moment is 38. */
    assert_true(fabs(tr[0].start - 20) < 0.11 && tr[0].end > 37.9 && tr[0].end < 40.1);
    assert_int_equal(vg_stream_track_finish(&t, tr), 0);
    assert_int_equal(vg_stream_track_finish(NULL, tr), VG_EINVAL);
    /* One answer is not enough: a track fed a single answer stating the box starts nothing. */
    vg_stream_track_free(&t);
    assert_int_equal(vg_stream_track_init(&t, &p), 0);
    vg_event one = ev(5, 10, "box");
    assert_int_equal(vg_stream_track_update(&t, &one, 1, 0, 10, 0, NULL, tr), 0);
    /* A second answer confirms it. */
    assert_int_equal(vg_stream_track_update(&t, &one, 1, 0, 12, 0, NULL, tr), 1);
    assert_int_equal(tr[0].kind, VG_TRANSITION_STARTED);
    vg_stream_track_free(&t);
}

/* Answers that flap: one window bridging two intervals, one claiming a box in a gap, one missing
 * the box inside an interval: the votes of the other windows win (no spurious event, no split). */
static void test_track_flapping(void **state)
{
    (void)state;
    vg_track_params p = vg_track_default_params(16, 2);
    vg_stream_track t;
    assert_int_equal(vg_stream_track_init(&t, &p), 0);
    static const double truth[2][2] = {{40, 49}, {63, 85}};
    sim_lie lies[3] = {{64, 48, 63.2}, {100, 90, 98}, {76, 1, 0}};
    vg_stream_transition tr[64];
    int n = simulate(&t, truth, 2, 120, 16, 2, lies, 3, tr, 64);
    assert_int_equal(count_kind(tr, n, VG_TRANSITION_STARTED), 2);
    assert_int_equal(count_kind(tr, n, VG_TRANSITION_ENDED), 2);
    assert_true(fabs(nth_kind(tr, n, VG_TRANSITION_ENDED, 0)->end - 49) < 0.11);
    assert_true(fabs(nth_kind(tr, n, VG_TRANSITION_STARTED, 1)->start - 63) < 0.11);
    assert_true(fabs(nth_kind(tr, n, VG_TRANSITION_ENDED, 1)->end - 85) < 0.11);
    vg_stream_track_free(&t);
}

/* Merging across a short gap, the minimum duration, the refined start (UPDATE) and the knobs. */
static void test_track_merge_min_refine(void **state)
{
    (void)state;
    vg_track_params p = vg_track_default_params(16, 2);
    vg_stream_track t;
    /* Two intervals 1 s apart are one event (merge_gap 3); with merge_gap 0.5 they are two. */
    static const double close[2][2] = {{10, 15}, {16, 20}};
    vg_stream_transition tr[64];
    assert_int_equal(vg_stream_track_init(&t, &p), 0);
    int n = simulate(&t, close, 2, 40, 16, 2, NULL, 0, tr, 64);
    assert_int_equal(count_kind(tr, n, VG_TRANSITION_STARTED), 1);
    assert_true(fabs(nth_kind(tr, n, VG_TRANSITION_ENDED, 0)->end - 20) < 0.11);
    vg_stream_track_free(&t);
    p.merge_gap = 0.5;
    assert_int_equal(vg_stream_track_init(&t, &p), 0);
    n = simulate(&t, close, 2, 40, 16, 2, NULL, 0, tr, 64);
    assert_int_equal(count_kind(tr, n, VG_TRANSITION_STARTED), 2);
    vg_stream_track_free(&t);
    /* A 0.5 s blip is suppressed by min_duration 1; published with min_duration 0.2. */
    static const double blip[1][2] = {{10, 10.5}};
    p = vg_track_default_params(16, 2);
    assert_int_equal(vg_stream_track_init(&t, &p), 0);
    n = simulate(&t, blip, 1, 40, 16, 2, NULL, 0, tr, 64);
    assert_int_equal(n, 0);
    assert_int_equal(t.suppressed, 1);
    vg_stream_track_free(&t);
    p.min_duration = 0.2;
    assert_int_equal(vg_stream_track_init(&t, &p), 0);
    n = simulate(&t, blip, 1, 40, 16, 2, NULL, 0, tr, 64);
    assert_int_equal(count_kind(tr, n, VG_TRANSITION_STARTED), 1);
    vg_stream_track_free(&t);
    /* The first two answers state a late start (13); later windows state 11: an UPDATE moves the
     * start, and ENDED carries the refined start. */
    p = vg_track_default_params(16, 2);
    assert_int_equal(vg_stream_track_init(&t, &p), 0);
    static const double late[1][2] = {{11, 30}};
    sim_lie lies[2] = {{14, 13, 14}, {16, 13, 16}};
    n = simulate(&t, late, 1, 60, 16, 2, lies, 2, tr, 64);
    assert_int_equal(count_kind(tr, n, VG_TRANSITION_STARTED), 1);
    assert_true(fabs(nth_kind(tr, n, VG_TRANSITION_STARTED, 0)->start - 13) < 0.11);
    assert_true(count_kind(tr, n, VG_TRANSITION_UPDATE) >= 1);
    assert_true(fabs(nth_kind(tr, n, VG_TRANSITION_ENDED, 0)->start - 11) < 0.11);
    /* Bad arguments. */
    assert_int_equal(vg_stream_track_update(NULL, NULL, 0, 0, 1, 0, NULL, tr), VG_EINVAL);
    assert_int_equal(vg_stream_track_update(&t, NULL, 2, 0, 1, 0, NULL, tr), VG_EINVAL);
    assert_int_equal(vg_stream_track_update(&t, NULL, 0, 5, 1, 0, NULL, tr), VG_EINVAL);
    assert_int_equal(vg_stream_track_update(&t, NULL, 0, NAN, 1, 0, NULL, tr), VG_EINVAL);
    vg_stream_track_free(&t);
    vg_stream_track_free(&t); /* twice is harmless */
}

/* Labels from the question (or the answer), and answers rewritten in stream time. */
static void test_track_labels(void **state)
{
    (void)state;
    char out[128];
    vg_stream_label("When is the red box visible?", NULL, out, sizeof out);
    assert_string_equal(out, "red box");
    vg_stream_label("When does a person enter the room?", NULL, out, sizeof out);
    assert_string_equal(out, "person");
    vg_stream_label("When?", "The blue box is visible from 1 to 2 seconds.", out, sizeof out);
    assert_string_equal(out, "blue box");
    vg_stream_label("?", NULL, out, sizeof out);
    assert_string_equal(out, "?");
    vg_event e = ev(38.2, 45.2, "");
    vg_stream_text("The red box is visible from 13.2 to 20.2 seconds, 3 of 12 frames.", &e, 1, 25.0,
                   out, sizeof out);
    assert_string_equal(out, "The red box is visible from 38.2 to 45.2 seconds, 3 of 12 frames.");
    vg_stream_text("from 13 to 20.25 s", (vg_event[]){ev(38, 45.25, "")}, 1, 25, out, 12);
    assert_string_equal(out, "from 38.0 t");
}

/* ------------------------------------------------------------------------------------------------
 * The inference gate: mutual exclusion, and waiters served in arrival order.
 */
typedef struct gate_ctx {
    vg_infer_gate *g;
    atomic_int inside, overlap, order_n;
    int order[4];
    int id;
} gate_ctx;

typedef struct gate_arg {
    gate_ctx *c;
    int id;
} gate_arg;

static void *gate_worker(void *p)
{
    gate_arg *a = p;
    gate_ctx *c = a->c;
    vg_infer_gate_enter(c->g);
    if (atomic_fetch_add(&c->inside, 1) != 0)
        atomic_store(&c->overlap, 1);
    c->order[atomic_fetch_add(&c->order_n, 1) & 3] = a->id;
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    atomic_fetch_sub(&c->inside, 1);
    vg_infer_gate_leave(c->g);
    return NULL;
}

static void test_gate_fifo(void **state)
{
    (void)state;
    gate_ctx c;
    memset(&c, 0, sizeof c);
    assert_int_equal(vg_infer_gate_create(&c.g), 0);
    vg_infer_gate_enter(c.g); /* held: the workers queue up in the order they arrive */
    pthread_t th[3];
    gate_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i].c = &c;
        args[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, gate_worker, &args[i]), 0);
        struct timespec ts = {0, 30000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(atomic_load(&c.order_n), 0);
    vg_infer_gate_leave(c.g);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&c.order_n), 3);
    assert_int_equal(atomic_load(&c.overlap), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c.order[i], i);
    vg_infer_gate_enter(NULL); /* no-ops */
    vg_infer_gate_leave(NULL);
    vg_infer_gate_destroy(c.g);
    vg_infer_gate_destroy(NULL);
}

/* ------------------------------------------------------------------------------------------------
 * vg_seq_remove on a random tiny model.
 */
static char dir[256];
static vg_model *model;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int model_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/vg-stu-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    if (sh("'%s/tools/vigil-model' random --preset tiny --out '%s/m' >/dev/null 2>&1",
           VG_BINARY_DIR, dir))
        return -1;
    char path[400], err[256];
    snprintf(path, sizeof path, "%s/m", dir);
    vg_model_params p = vg_model_default_params();
    p.n_threads = 1;
    return vg_model_load(path, &p, &model, err, sizeof err) < 0 ? -1 : 0;
}

static int model_teardown(void **state)
{
    (void)state;
    vg_model_free(model);
    sh("rm -rf '%s'", dir);
    return 0;
}

static int prefill(vg_seq *s, const int32_t *ids, size_t n, int32_t p0, float *logits)
{
    int32_t pos[3 * 16];
    for (size_t i = 0; i < n; i++)
        pos[i] = pos[n + i] = pos[2 * n + i] = p0 + (int32_t)i;
    vg_prefill_input in = {ids, n, pos, NULL, NULL, 0};
    char err[256];
    return vg_seq_prefill(s, &in, logits, 0, NULL, err, sizeof err);
}

static void test_seq_remove_moves_rows(void **state)
{
    (void)state;
    const vg_model_info *mi = vg_model_get_info(model);
    char err[256];
    vg_seq *s;
    assert_int_equal(vg_seq_create(model, 64, &s, err, sizeof err), 0);
    int32_t a[5] = {10, 11, 12, 13, 14}, b[4] = {20, 21, 22, 23}, c[3] = {30, 31, 32};
    assert_int_equal(prefill(s, a, 5, 0, NULL), 0);
    assert_int_equal(prefill(s, b, 4, 5, NULL), 0);
    assert_int_equal(prefill(s, c, 3, 9, NULL), 0);
    assert_int_equal(vg_seq_len(s), 12);
    vg_seq_kv kv;
    vg_seq_kv_view(s, &kv);
    size_t hd = (size_t)mi->head_dim, heads = (size_t)mi->n_layers * mi->n_kv_heads;
    size_t rowb = hd * kv.es; /* float32 or bf16 rows */
    unsigned char *keepk = malloc(heads * 8 * rowb), *keepv = malloc(heads * 8 * rowb);
    assert_non_null(keepk);
    assert_non_null(keepv);
    /* The rows of A (0..4) and C (9..11) per layer and head. */
    for (size_t h = 0; h < heads; h++) {
        const unsigned char *K = (const unsigned char *)kv.kc + h * kv.cap * rowb;
        const unsigned char *V = (const unsigned char *)kv.vc + h * kv.cap * rowb;
        memcpy(keepk + h * 8 * rowb, K, 5 * rowb);
        memcpy(keepk + h * 8 * rowb + 5 * rowb, K + 9 * rowb, 3 * rowb);
        memcpy(keepv + h * 8 * rowb, V, 5 * rowb);
        memcpy(keepv + h * 8 * rowb + 5 * rowb, V + 9 * rowb, 3 * rowb);
    }
    assert_int_equal(vg_seq_remove(s, 5, 4), 0);
    assert_int_equal(vg_seq_len(s), 8);
    for (size_t h = 0; h < heads; h++) {
        const unsigned char *K = (const unsigned char *)kv.kc + h * kv.cap * rowb;
        const unsigned char *V = (const unsigned char *)kv.vc + h * kv.cap * rowb;
        assert_memory_equal(K, keepk + h * 8 * rowb, 8 * rowb);
        assert_memory_equal(V, keepv + h * 8 * rowb, 8 * rowb);
    }
    /* Bad ranges change nothing. */
    assert_int_equal(vg_seq_remove(s, 9, 0), VG_EINVAL);
    assert_int_equal(vg_seq_remove(s, 7, 2), VG_EINVAL);
    assert_int_equal(vg_seq_remove(NULL, 0, 0), VG_EINVAL);
    assert_int_equal(vg_seq_remove(s, 8, 0), 0);
    assert_int_equal(vg_seq_len(s), 8);
    free(keepk);
    free(keepv);
    vg_seq_free(s);
}

static void test_seq_remove_then_continue(void **state)
{
    (void)state;
    const vg_model_info *mi = vg_model_get_info(model);
    size_t V = (size_t)mi->vocab_size;
    char err[256];
    vg_seq *s1, *s2;
    assert_int_equal(vg_seq_create(model, 64, &s1, err, sizeof err), 0);
    assert_int_equal(vg_seq_create(model, 64, &s2, err, sizeof err), 0);
    float *l1 = malloc(V * sizeof(float)), *l2 = malloc(V * sizeof(float));
    assert_non_null(l1);
    assert_non_null(l2);
    int32_t a[5] = {10, 11, 12, 13, 14}, b[4] = {20, 21, 22, 23}, c[3] = {30, 31, 32};
    /* s1: A, B, then B removed; C continues at the positions after B. s2: A, then C there. */
    assert_int_equal(prefill(s1, a, 5, 0, NULL), 0);
    assert_int_equal(prefill(s1, b, 4, 5, NULL), 0);
    assert_int_equal(vg_seq_remove(s1, 5, 4), 0);
    assert_int_equal(prefill(s1, c, 3, 9, l1), 0);
    assert_int_equal(prefill(s2, a, 5, 0, NULL), 0);
    assert_int_equal(prefill(s2, c, 3, 9, l2), 0);
    double maxd = 0, maxa = 0;
    for (size_t i = 0; i < V; i++) {
        maxd = fmax(maxd, fabs(l1[i] - l2[i]));
        maxa = fmax(maxa, fabs(l2[i]));
    }
    assert_true(maxd <= 1e-5 * fmax(1.0, maxa));
    /* A decode step at the next position (12) agrees too. */
    assert_int_equal(vg_seq_decode(s1, 40, 12, l1, err, sizeof err), 0);
    assert_int_equal(vg_seq_decode(s2, 40, 12, l2, err, sizeof err), 0);
    maxd = 0;
    for (size_t i = 0; i < V; i++)
        maxd = fmax(maxd, fabs(l1[i] - l2[i]));
    assert_true(maxd <= 1e-5 * fmax(1.0, maxa));
    free(l1);
    free(l2);
    vg_seq_free(s1);
    vg_seq_free(s2);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_track_check),    cmocka_unit_test(test_track_exact_model),
        cmocka_unit_test(test_track_flapping), cmocka_unit_test(test_track_merge_min_refine),
        cmocka_unit_test(test_track_labels),   cmocka_unit_test(test_gate_fifo),
    };
    const struct CMUnitTest kv[] = {
        cmocka_unit_test(test_seq_remove_moves_rows),
        cmocka_unit_test(test_seq_remove_then_continue),
    };
    int rc = cmocka_run_group_tests_name("track", pure, NULL, NULL);
    rc |= cmocka_run_group_tests_name("window", kv, model_setup, model_teardown);
    return rc;
}
