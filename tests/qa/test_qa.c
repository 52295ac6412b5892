/*
 * test_qa.c: the video-QA layer (qa/qa.h) and the prompt builder it stands on, on the bundled demo
 * model (models/demo: the real Qwen tokenizer, a 2-layer Qwen3-VL).
 *
 *  - The builder taken piece by piece (head, each pair, the question) gives exactly the ids and
 *    positions of the whole prompt (vg_prompt_build), so a live window and a clip job see the same
 *    template.
 *  - vg_qa_run equals the fine-grained calls (vg_prompt_build, one prefill, vg_generate).
 *  - A session that prefills each pair as it arrives answers as one that prefills them with the
 *    question; evicting the oldest pair and rebasing answers as a fresh session of the remaining
 *    pairs at that base.
 *  - The time token, the timeline's pair times, the event JSON and the sampling defaults.
 */
#include "common.h"
#include "qa.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static vg_model *model;
static const vg_model_info *mi;

#define GH 4 /* patches per slice: 4 x 6, merged 2 x 3 */
#define GW 6

static int model_setup(void **state)
{
    (void)state;
    char err[256];
    vg_model_params p = vg_model_default_params();
    p.n_threads = 1;
    if (vg_model_load(VG_SOURCE_DIR "/models/demo", &p, &model, err, sizeof err) < 0) {
        fprintf(stderr, "cannot load models/demo: %s\n", err);
        return -1;
    }
    mi = vg_model_get_info(model);
    return 0;
}

static int model_teardown(void **state)
{
    (void)state;
    vg_model_free(model);
    return 0;
}

static int tokenize(void *opaque, const char *text, size_t len, int32_t **ids, size_t *n)
{
    return vg_tokenizer_encode(opaque, text, len, 0, ids, n);
}

static vg_prompt_ids special_ids(void)
{
    vg_prompt_ids ids = {mi->im_start_id, mi->im_end_id, mi->vision_start_token_id,
                         mi->vision_end_token_id, mi->video_token_id};
    return ids;
}

/* One encoded slice of pseudo-random pixels (seeded: the same seed gives the same output). */
static vg_vision_out *encode(uint64_t seed)
{
    size_t cols =
        (size_t)mi->in_channels * mi->temporal_patch_size * mi->patch_size * mi->patch_size;
    float *px = malloc((size_t)GH * GW * cols * sizeof *px);
    assert_non_null(px);
    uint64_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < (size_t)GH * GW * cols; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        px[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    vg_vision_out *vo = NULL;
    char err[256];
    assert_int_equal(vg_model_encode_slice(model, px, GH, GW, NULL, &vo, err, sizeof err), 0);
    free(px);
    return vo;
}

static vg_qa_ask_params greedy(int tokens)
{
    vg_qa_ask_params p = {vg_model_default_gen_params(model), NULL, NULL, NULL, NULL, 0};
    p.gen.do_sample = 0;
    p.gen.max_new_tokens = tokens;
    p.gen.n_stop_ids = 0; /* every answer runs its full length */
    return p;
}

static const char *const question = "When is the red box visible?";
static const double times[3] = {0.25, 1.35, 2.45};

static void test_time_token(void **state)
{
    (void)state;
    char b[VG_TIME_TOKEN_MAX];
    assert_int_equal(vg_time_token(0.2916666666666667, b, sizeof b), 13);
    assert_string_equal(b, "<0.3 seconds>");
    assert_true(vg_time_token(0.25, b, sizeof b) > 0); /* exactly 0.25: half to even */
    assert_string_equal(b, "<0.2 seconds>");
    assert_true(vg_time_token(1.35, b, sizeof b) > 0); /* 1.35000000000000008882 */
    assert_string_equal(b, "<1.4 seconds>");
    assert_true(vg_time_token(3600.04, b, sizeof b) > 0);
    assert_string_equal(b, "<3600.0 seconds>");
    assert_int_equal(vg_time_token(NAN, b, sizeof b), VG_ERANGE);
    assert_int_equal(vg_time_token(INFINITY, b, sizeof b), VG_ERANGE);
    assert_int_equal(vg_time_token(1.0, b, 5), VG_ERANGE);
    assert_true(vg_pair_time(1.0, 2.0) == 1.5);

    int64_t idx[5] = {0, 14, 27, 41, 54};
    double sec[5] = {0.0, 14 / 24.0, 27 / 24.0, 41 / 24.0, 54 / 24.0};
    vg_timeline tl = {5, idx, sec, 1};
    double pt[3];
    assert_int_equal(vg_timeline_pair_times(&tl, 2, pt, 3), 0);
    assert_true(pt[0] == (0.0 + 14 / 24.0) / 2.0);
    assert_true(pt[2] == 54 / 24.0); /* an odd tail repeats the last frame */
    assert_int_equal(vg_timeline_pair_times(&tl, 2, pt, 2), VG_EINVAL);
}

/* The builder taken in pieces gives the whole prompt's ids and positions. */
static void test_builder_pieces_equal_whole(void **state)
{
    (void)state;
    vg_prompt_ids sp = special_ids();
    void *tok = (void *)vg_model_tokenizer(model);
    char err[256];
    vg_chat chat = {NULL, NULL, question};
    vg_prompt_video v = {times, 3, GH, GW, 2};
    vg_prompt *whole = NULL;
    assert_int_equal(vg_prompt_build(&chat, &v, &sp, tokenize, tok, &whole, err, sizeof err), 0);

    vg_prompt_builder *b = NULL;
    assert_int_equal(vg_prompt_builder_create(&sp, tokenize, tok, &b), 0);
    vg_prompt *pieces[5] = {0};
    assert_int_equal(vg_prompt_add_head(b, &chat, err, sizeof err), 0);
    assert_int_equal(vg_prompt_builder_take(b, &pieces[0], err, sizeof err), 0);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(vg_prompt_add_pair(b, times[k], GH / 2, GW / 2, err, sizeof err), 0);
        assert_int_equal(vg_prompt_builder_take(b, &pieces[1 + k], err, sizeof err), 0);
    }
    assert_int_equal(vg_prompt_add_tail(b, question, err, sizeof err), 0);
    assert_int_equal(vg_prompt_builder_take(b, &pieces[4], err, sizeof err), 0);
    size_t at = 0;
    for (int c = 0; c < 5; c++) {
        const vg_prompt *p = pieces[c];
        for (size_t i = 0; i < p->n; i++, at++) {
            assert_true(at < whole->n);
            assert_int_equal(p->ids[i], whole->ids[at]);
            for (int r = 0; r < 3; r++)
                assert_int_equal(p->pos[(size_t)r * p->n + i], whole->pos[r * whole->n + at]);
        }
    }
    assert_int_equal(at, whole->n);
    assert_int_equal(pieces[4]->rope_delta, whole->rope_delta);
    assert_int_equal(pieces[1]->n_video_tokens, (GH / 2) * (GW / 2));
    printf("%zu tokens in 5 pieces = the whole prompt (ids and positions), rope_delta %d\n", at,
           whole->rope_delta);
    for (int c = 0; c < 5; c++)
        vg_prompt_free(pieces[c]);
    vg_prompt_free(whole);
    vg_prompt_builder_free(b);
}

/* vg_qa_run against the engine's own calls on the same prompt. */
typedef struct lp_seen {
    int n;
    int32_t first_id;
    float first_lp;
} lp_seen;

static int on_lp(int32_t id, const char *text, size_t len, float logprob, void *opaque)
{
    (void)text;
    (void)len;
    lp_seen *l = opaque;
    if (l->n++ == 0) {
        l->first_id = id;
        l->first_lp = logprob;
    }
    return 0;
}

static void test_run_equals_fine_grained(void **state)
{
    (void)state;
    char err[256];
    vg_qa_ask_params ap = greedy(12);
    vg_vision_out *vo[3] = {encode(1), encode(2), encode(3)};
    /* Fine-grained: the whole prompt, one prefill with the three slices laid end to end. */
    vg_prompt_ids sp = special_ids();
    vg_chat chat = {NULL, NULL, question};
    vg_prompt_video v = {times, 3, GH, GW, 2};
    vg_prompt *pr = NULL;
    assert_int_equal(vg_prompt_build(&chat, &v, &sp, tokenize, (void *)vg_model_tokenizer(model),
                                     &pr, err, sizeof err),
                     0);
    size_t nt = (size_t)vo[0]->n_tokens, dim = (size_t)vo[0]->dim, nds = (size_t)vo[0]->n_deepstack;
    float *emb = malloc(3 * nt * dim * sizeof *emb), *ds = malloc(nds * 3 * nt * dim * sizeof *ds);
    assert_non_null(emb);
    assert_non_null(ds);
    for (size_t t = 0; t < 3; t++) {
        memcpy(emb + t * nt * dim, vo[t]->embeds, nt * dim * sizeof *emb);
        for (size_t k = 0; k < nds; k++)
            memcpy(ds + (k * 3 + t) * nt * dim, vo[t]->deepstack + k * nt * dim,
                   nt * dim * sizeof *ds);
    }
    vg_seq *s = NULL;
    assert_int_equal(vg_seq_create(model, pr->n + 16, &s, err, sizeof err), 0);
    float *logits = malloc((size_t)mi->vocab_size * sizeof *logits);
    assert_non_null(logits);
    vg_prefill_input in = {pr->ids, pr->n, pr->pos, emb, ds, 3 * nt};
    assert_int_equal(vg_seq_prefill(s, &in, logits, 0, NULL, err, sizeof err), 0);
    /* The first token's log-probability (vg_generate_lp) is the log-softmax of the prefill's
     * logits at the id greedy decoding picks. */
    size_t V = (size_t)mi->vocab_size;
    float *copy = malloc(V * sizeof *copy);
    assert_non_null(copy);
    memcpy(copy, logits, V * sizeof *copy);
    int32_t argmax = 0;
    double mx = copy[0], sum = 0;
    for (size_t i = 1; i < V; i++)
        if (copy[i] > copy[argmax])
            argmax = (int32_t)i;
    mx = copy[argmax];
    for (size_t i = 0; i < V; i++)
        sum += exp((double)copy[i] - mx);
    lp_seen one = {0, 0, 0};
    vg_gen_params g1 = ap.gen;
    g1.max_new_tokens = 1;
    vg_seq *s1 = NULL;
    assert_int_equal(vg_seq_create(model, pr->n + 16, &s1, err, sizeof err), 0);
    assert_int_equal(vg_seq_prefill(s1, &in, copy, 0, NULL, err, sizeof err), 0);
    assert_int_equal(vg_generate_lp(s1, &g1, copy, pr->rope_delta, on_lp, &one, NULL, NULL, NULL,
                                    err, sizeof err),
                     0);
    assert_int_equal(one.n, 1);
    assert_int_equal(one.first_id, argmax);
    assert_true(fabs(one.first_lp - (-log(sum))) < 1e-4);
    vg_seq_free(s1);
    free(copy);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    assert_int_equal(vg_generate(s, &ap.gen, logits, pr->rope_delta, NULL, NULL, NULL, &ids, &n_ids,
                                 err, sizeof err),
                     0);
    char text[4096] = "";
    size_t len = 0;
    vg_detok *dt = NULL;
    assert_int_equal(vg_detok_create(vg_model_tokenizer(model), 1, &dt), 0);
    for (size_t i = 0; i < n_ids; i++) {
        size_t l = 0;
        assert_int_equal(vg_detok_push(dt, ids[i], text + len, sizeof text - len, &l), 0);
        len += l;
    }
    size_t l = 0;
    assert_int_equal(vg_detok_flush(dt, text + len, sizeof text - len, &l), 0);
    len += l;
    text[len] = 0;

    /* The same through the QA layer (it takes the vision outputs). */
    vg_qa_answer a = {0};
    assert_int_equal(
        vg_qa_run(model, NULL, vo, times, 3, GH / 2, GW / 2, question, &ap, &a, err, sizeof err),
        0);
    printf("fine-grained: \"%s\" (%zu ids)\nvg_qa_run:    \"%s\" (%d ids, %zu prompt tokens)\n",
           text, n_ids, a.text, a.n_tokens, a.prompt_tokens);
    assert_string_equal(a.text, text);
    assert_int_equal(a.n_tokens, (int)n_ids);
    assert_int_equal(a.prompt_tokens, pr->n);
    /* The answer's score is a mean log-probability: <= 0, and 0 only without scored tokens. */
    assert_true(a.score <= 0);
    assert_true(a.score_tokens > 0 || a.score == 0);
    assert_true(a.score_tokens <= a.n_tokens);
    vg_qa_answer_clear(&a);
    vg_detok_free(dt);
    free(ids);
    free(logits);
    vg_seq_free(s);
    free(emb);
    free(ds);
    vg_prompt_free(pr);
}

static char *ask(vg_qa *q)
{
    char err[256];
    vg_qa_ask_params ap = greedy(12);
    vg_qa_answer a = {0};
    int rc = vg_qa_ask(q, question, &ap, &a, err, sizeof err);
    if (rc)
        printf("vg_qa_ask: %s\n", err);
    assert_int_equal(rc, 0);
    char *t = strdup(a.text);
    vg_qa_answer_clear(&a);
    return t;
}

/* Pair by pair (a live window) or all at once with the question (a clip): the same answer, and the
 * window survives a question (asking twice gives the same answer). */
static void test_session_sync_vs_staged(void **state)
{
    (void)state;
    char err[256];
    vg_qa_params qp = {2048, NULL};
    vg_qa *live = NULL, *clip = NULL;
    assert_int_equal(vg_qa_create(model, &qp, &live, err, sizeof err), 0);
    assert_int_equal(vg_qa_create(model, &qp, &clip, err, sizeof err), 0);
    assert_int_equal(vg_qa_sync(live, NULL, err, sizeof err), 0);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(vg_qa_append_pair(live, encode(10 + (uint64_t)k), GH / 2, GW / 2, times[k],
                                           err, sizeof err),
                         0);
        assert_int_equal(vg_qa_sync(live, NULL, err, sizeof err), 0);
        assert_int_equal(vg_qa_append_pair(clip, encode(10 + (uint64_t)k), GH / 2, GW / 2, times[k],
                                           err, sizeof err),
                         0);
    }
    size_t cached = vg_qa_cached_tokens(live);
    char *a = ask(live), *b = ask(clip), *c = ask(live);
    printf("pair by pair: \"%s\"\nall at once:  \"%s\"\n", a, b);
    assert_string_equal(a, b);
    assert_string_equal(a, c);
    assert_int_equal(vg_qa_cached_tokens(live), cached); /* the question was rolled back */
    assert_int_equal(vg_qa_cached_tokens(clip), cached);
    assert_int_equal(vg_qa_n_pairs(live), 3);
    /* Staged pairs cannot be evicted; held ones can. */
    assert_int_equal(vg_qa_append_pair(clip, encode(13), GH / 2, GW / 2, 3.5, err, sizeof err), 0);
    assert_int_equal(vg_qa_evict_oldest(clip), VG_EINVAL);
    free(a);
    free(b);
    free(c);
    vg_qa_free(live);
    vg_qa_free(clip);
}

/* Evicting the oldest pair and rebasing equals a fresh window of the remaining pairs at that base;
 * the answer's events come back in the caller's seconds. */
static void test_evict_rebase(void **state)
{
    (void)state;
    char err[256];
    vg_qa_params qp = {2048, NULL};
    vg_qa *w = NULL, *fresh = NULL;
    double base = 100.0, t[4] = {101.25, 102.35, 103.45, 104.55};
    assert_int_equal(vg_qa_create(model, &qp, &w, err, sizeof err), 0);
    assert_int_equal(vg_qa_rebase(w, base, NULL, err, sizeof err), 0);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(
            vg_qa_append_pair(w, encode(20 + (uint64_t)k), GH / 2, GW / 2, t[k], err, sizeof err),
            0);
        assert_int_equal(vg_qa_sync(w, NULL, err, sizeof err), 0);
    }
    assert_int_equal(vg_qa_evict_oldest(w), 0);
    assert_int_equal(vg_qa_n_pairs(w), 3);
    assert_true(vg_qa_pair_seconds(w, 0) == t[1]);
    assert_int_equal(vg_qa_rebase(w, 102.0, NULL, err, sizeof err), 0);

    assert_int_equal(vg_qa_create(model, &qp, &fresh, err, sizeof err), 0);
    assert_int_equal(vg_qa_rebase(fresh, 102.0, NULL, err, sizeof err), 0);
    for (int k = 1; k < 4; k++)
        assert_int_equal(vg_qa_append_pair(fresh, encode(20 + (uint64_t)k), GH / 2, GW / 2, t[k],
                                           err, sizeof err),
                         0);
    assert_int_equal(vg_qa_sync(fresh, NULL, err, sizeof err), 0);
    assert_int_equal(vg_qa_cached_tokens(w), vg_qa_cached_tokens(fresh));
    assert_int_equal(vg_qa_next_pos(w), vg_qa_next_pos(fresh));
    char *a = ask(w), *b = ask(fresh);
    printf("evicted + rebased: \"%s\"\nfresh window:      \"%s\"\n", a, b);
    assert_string_equal(a, b);
    free(a);
    free(b);
    /* An answer's times come back with the base added. */
    vg_qa_ask_params ap = greedy(40);
    vg_qa_answer ans = {0};
    assert_int_equal(vg_qa_ask(fresh, question, &ap, &ans, err, sizeof err), 0);
    vg_event *ev = NULL;
    size_t n = 0;
    assert_int_equal(vg_answer_parse(ans.text, &ev, &n), 0);
    assert_int_equal(n, ans.n_events);
    for (size_t i = 0; i < n; i++) {
        assert_true(fabs(ans.events[i].start - (ev[i].start + 102.0)) < 1e-9);
        assert_true(fabs(ans.events[i].end - (ev[i].end + 102.0)) < 1e-9);
    }
    free(ev);
    vg_qa_answer_clear(&ans);
    vg_qa_free(w);
    vg_qa_free(fresh);
}

/* A window that does not fit is refused with VG_ELIMIT and the session stays usable. */
static void test_limits(void **state)
{
    (void)state;
    char err[256];
    vg_qa_params qp = {24, NULL};
    vg_qa *q = NULL;
    assert_int_equal(vg_qa_create(model, &qp, &q, err, sizeof err), 0);
    assert_int_equal(vg_qa_append_pair(q, encode(30), GH / 2, GW / 2, 0.5, err, sizeof err), 0);
    assert_int_equal(vg_qa_append_pair(q, encode(31), GH / 2, GW / 2, 1.5, err, sizeof err),
                     VG_ELIMIT);
    printf("refused: %s\n", err);
    assert_int_equal(vg_qa_n_pairs(q), 1);
    vg_qa_ask_params ap = greedy(64);
    vg_qa_answer a = {0};
    assert_int_equal(vg_qa_ask(q, question, &ap, &a, err, sizeof err), VG_ELIMIT);
    assert_int_equal(vg_qa_sync(q, NULL, err, sizeof err), 0);
    assert_int_equal(vg_qa_n_pairs(q), 1);
    /* A vision output of the wrong size is refused (and freed). */
    assert_int_equal(vg_qa_append_pair(q, encode(32), 3, 3, 2.5, err, sizeof err), VG_EINVAL);
    vg_qa_free(q);
}

/* The answer parser flags what live streams must not turn into events. */
static void test_answer_flags(void **state)
{
    (void)state;
    vg_event *ev = NULL;
    size_t n = 0;
    assert_int_equal(vg_answer_parse("The red box is visible from 21.2 to 12.2 seconds.", &ev, &n),
                     0);
    assert_int_equal(n, 1);
    assert_true(ev[0].flags & VG_EVENT_REVERSED);
    assert_true(ev[0].start < ev[0].end);
    free(ev);
    assert_int_equal(
        vg_answer_parse("There is no red box in the video. The red box is visible from "
                        "2.0 to 5.0 seconds.",
                        &ev, &n),
        0);
    assert_int_equal(n, 1);
    assert_true(ev[0].flags & VG_EVENT_CONTRADICTED);
    free(ev);
    /* A negation inside a clause that states the range, or about another time, is no denial. */
    assert_int_equal(
        vg_answer_parse("The box, with no border, is visible from 1 to 3 seconds.", &ev, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ev[0].flags, 0);
    free(ev);
    assert_int_equal(vg_answer_parse("The red box is visible from 2.0 to 5.0 seconds.", &ev, &n),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(ev[0].flags, 0);
    free(ev);
}

static void test_event_json(void **state)
{
    (void)state;
    vg_event ev[2] = {{1.23456, 7.0004, "The red box is visible from 1.2 to 7.0 seconds", 0},
                      {2.0, 2.0, "at 2", 0}};
    cJSON *arr = vg_qa_events_json(ev, 2, "clip");
    assert_non_null(arr);
    char *s = cJSON_PrintUnformatted(arr);
    printf("%s\n", s);
    assert_string_equal(s, "[{\"start\":1.235,\"end\":7,\"label\":\"The red box is visible from "
                           "1.2 to 7.0 seconds\",\"origin\":\"clip\"},{\"start\":2,\"end\":2,"
                           "\"label\":\"at 2\",\"origin\":\"clip\"}]");
    free(s);
    cJSON_Delete(arr);
    cJSON *o = cJSON_CreateObject();
    vg_qa_event_time t = {"stream", 1796500000.25, NAN, 0};
    assert_int_equal(vg_qa_event_json(o, &ev[0], &t), 0);
    s = cJSON_PrintUnformatted(o);
    printf("%s\n", s);
    assert_string_equal(s, "{\"start\":1.235,\"label\":\"The red box is visible from 1.2 to 7.0 "
                           "seconds\",\"origin\":\"stream\",\"start_wall\":\"2026-12-05T19:46:40."
                           "250Z\"}");
    free(s);
    cJSON_Delete(o);
}

static void test_sampling_defaults(void **state)
{
    (void)state;
    /* The demo model's preprocessing config: 4096..9216 pixels per frame, 2 fps. */
    vg_sample_params p = vg_qa_sample_params(mi);
    assert_int_equal(p.max_pixels, 9216);
    assert_int_equal(p.min_pixels, 4096);
    assert_true(p.fps == 2.0);
    assert_int_equal(vg_qa_stream_max_pixels(mi, 0), 9216);
    assert_int_equal(vg_qa_stream_max_pixels(mi, 8192), 8192);
    assert_int_equal(vg_qa_stream_min_pixels(mi, 9216), 4096);
    /* A released checkpoint's T*H*W budget (25165824) leaves the live default. */
    vg_model_info real = *mi;
    real.video_max_pixels = 25165824;
    assert_int_equal(vg_qa_stream_max_pixels(&real, 0), 256L * 32 * 32);
    real.video_max_pixels = 0;
    real.video_min_pixels = 0;
    assert_int_equal(vg_qa_stream_max_pixels(&real, 0), 256L * 32 * 32);
    assert_int_equal(vg_qa_stream_min_pixels(&real, 9216), 9216);
    /* vigil plan --model reads the same description without the weights. */
    vg_model_info info;
    char err[256];
    assert_int_equal(vg_model_read_info(VG_SOURCE_DIR "/models/demo", &info, err, sizeof err), 0);
    assert_int_equal(info.video_max_pixels, 9216);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_token),
        cmocka_unit_test(test_builder_pieces_equal_whole),
        cmocka_unit_test(test_run_equals_fine_grained),
        cmocka_unit_test(test_session_sync_vs_staged),
        cmocka_unit_test(test_evict_rebase),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_answer_flags),
        cmocka_unit_test(test_event_json),
        cmocka_unit_test(test_sampling_defaults),
    };
    return cmocka_run_group_tests(tests, model_setup, model_teardown);
}
