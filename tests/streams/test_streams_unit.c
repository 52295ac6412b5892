/*
 * test_streams_unit.c: the pure parts of live streams.
 *  - vg_stream_track_update: started/ended transitions and their times from sequences of parsed
 *    answers (the random test model's answers are noise, so the logic is proven here).
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

static void test_track_start_continue_end(void **state)
{
    (void)state;
    vg_stream_track t;
    memset(&t, 0, sizeof t);
    vg_stream_transition tr[2];
    /* Nothing yet. */
    assert_int_equal(vg_stream_track_update(&t, NULL, 0, 10, 10, 15, 1, tr), 0);
    assert_false(t.active);
    /* A box from 2 s (relative to base 10) to the window's end: started at 12. */
    vg_event e1 = ev(2, 5, "red box");
    assert_int_equal(vg_stream_track_update(&t, &e1, 1, 10, 10, 15, 1, tr), 1);
    assert_int_equal(tr[0].kind, VG_TRANSITION_STARTED);
    assert_true(fabs(tr[0].start - 12) < 1e-9);
    assert_string_equal(tr[0].label, "red box");
    assert_true(t.active);
    /* Still there, the window moved: no transition, the end advances. */
    vg_event e2 = ev(2, 7, "red box");
    assert_int_equal(vg_stream_track_update(&t, &e2, 1, 10, 12, 17, 1, tr), 0);
    assert_true(fabs(t.end - 17) < 1e-9);
    /* The answer now says it ended at 18 while the window reaches 20: ended 12-18. */
    vg_event e3 = ev(2, 8, "red box");
    assert_int_equal(vg_stream_track_update(&t, &e3, 1, 10, 14, 20, 1, tr), 1);
    assert_int_equal(tr[0].kind, VG_TRANSITION_ENDED);
    assert_true(fabs(tr[0].start - 12) < 1e-9);
    assert_true(fabs(tr[0].end - 18) < 1e-9);
    assert_false(t.active);
    /* Gone entirely: nothing more. */
    assert_int_equal(vg_stream_track_update(&t, NULL, 0, 10, 16, 22, 1, tr), 0);
}

static void test_track_absent_and_reoccur(void **state)
{
    (void)state;
    vg_stream_track t;
    memset(&t, 0, sizeof t);
    vg_stream_transition tr[2];
    vg_event a = ev(0, 4, "person");
    assert_int_equal(vg_stream_track_update(&t, &a, 1, 100, 100, 104, 1, tr), 1);
    assert_true(fabs(tr[0].start - 100) < 1e-9);
    /* The answer no longer mentions it: ended at the last end seen (104). */
    assert_int_equal(vg_stream_track_update(&t, NULL, 0, 100, 101, 106, 1, tr), 1);
    assert_int_equal(tr[0].kind, VG_TRANSITION_ENDED);
    assert_true(fabs(tr[0].end - 104) < 1e-9);
    /* It comes back: started again. */
    vg_event b = ev(7, 9, "person");
    assert_int_equal(vg_stream_track_update(&t, &b, 1, 100, 102, 109, 1, tr), 1);
    assert_int_equal(tr[0].kind, VG_TRANSITION_STARTED);
    assert_true(fabs(tr[0].start - 107) < 1e-9);
    /* A separate occurrence starting well after the tracked end: ended, then started. */
    vg_event c = ev(14, 16, "person");
    assert_int_equal(vg_stream_track_update(&t, &c, 1, 100, 108, 116, 1, tr), 2);
    assert_int_equal(tr[0].kind, VG_TRANSITION_ENDED);
    assert_true(fabs(tr[0].start - 107) < 1e-9 && fabs(tr[0].end - 109) < 1e-9);
    assert_int_equal(tr[1].kind, VG_TRANSITION_STARTED);
    assert_true(fabs(tr[1].start - 114) < 1e-9);
}

static void test_track_edges(void **state)
{
    (void)state;
    vg_stream_track t;
    memset(&t, 0, sizeof t);
    vg_stream_transition tr[2];
    /* Times outside the window, non-finite times and events that end early are not "present". */
    vg_event bad[4] = {ev(50, 60, "x"), ev(NAN, 3, "y"), ev(0, 1, "z"), ev(-20, -10, "w")};
    assert_int_equal(vg_stream_track_update(&t, bad, 4, 0, 0, 10, 1, tr), 0);
    assert_false(t.active);
    /* Reversed times are swapped; a start before the window is clipped to it. */
    vg_event r = ev(10, -5, "box");
    assert_int_equal(vg_stream_track_update(&t, &r, 1, 0, 0, 10, 1, tr), 1);
    assert_true(fabs(tr[0].start - 0) < 1e-9);
    /* Of several present events, the one that ends last; gap decides "present". */
    memset(&t, 0, sizeof t);
    vg_event two[2] = {ev(1, 8.5, "a"), ev(3, 9.6, "b")};
    assert_int_equal(vg_stream_track_update(&t, two, 2, 0, 0, 10, 0.5, tr), 1);
    assert_string_equal(tr[0].label, "b");
    assert_true(fabs(tr[0].start - 3) < 1e-9);
    /* Bad arguments. */
    assert_int_equal(vg_stream_track_update(NULL, NULL, 0, 0, 0, 1, 1, tr), VG_EINVAL);
    assert_int_equal(vg_stream_track_update(&t, NULL, 2, 0, 0, 1, 1, tr), VG_EINVAL);
    assert_int_equal(vg_stream_track_update(&t, NULL, 0, 0, 5, 1, 1, tr), VG_EINVAL);
    assert_int_equal(vg_stream_track_update(&t, NULL, 0, 0, 0, 1, NAN, tr), VG_EINVAL);
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
    size_t rowb = hd * sizeof(float);
    float *keepk = malloc(heads * 8 * rowb), *keepv = malloc(heads * 8 * rowb);
    assert_non_null(keepk);
    assert_non_null(keepv);
    /* The rows of A (0..4) and C (9..11) per layer and head. */
    for (size_t h = 0; h < heads; h++) {
        const float *K = kv.kc + h * kv.max_tokens * hd, *V = kv.vc + h * kv.max_tokens * hd;
        memcpy(keepk + h * 8 * hd, K, 5 * rowb);
        memcpy(keepk + h * 8 * hd + 5 * hd, K + 9 * hd, 3 * rowb);
        memcpy(keepv + h * 8 * hd, V, 5 * rowb);
        memcpy(keepv + h * 8 * hd + 5 * hd, V + 9 * hd, 3 * rowb);
    }
    assert_int_equal(vg_seq_remove(s, 5, 4), 0);
    assert_int_equal(vg_seq_len(s), 8);
    for (size_t h = 0; h < heads; h++) {
        const float *K = kv.kc + h * kv.max_tokens * hd, *V = kv.vc + h * kv.max_tokens * hd;
        assert_memory_equal(K, keepk + h * 8 * hd, 8 * rowb);
        assert_memory_equal(V, keepv + h * 8 * hd, 8 * rowb);
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
        cmocka_unit_test(test_track_start_continue_end),
        cmocka_unit_test(test_track_absent_and_reoccur),
        cmocka_unit_test(test_track_edges),
        cmocka_unit_test(test_gate_fifo),
    };
    const struct CMUnitTest kv[] = {
        cmocka_unit_test(test_seq_remove_moves_rows),
        cmocka_unit_test(test_seq_remove_then_continue),
    };
    int rc = cmocka_run_group_tests_name("track", pure, NULL, NULL);
    rc |= cmocka_run_group_tests_name("window", kv, model_setup, model_teardown);
    return rc;
}
