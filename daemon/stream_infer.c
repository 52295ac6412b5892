/*
 * stream_infer.c: the stream inference thread and the KV window of each stream.
 *
 * One stream inference thread serves every stream, round-robin, one unit of work per stream per
 * turn (encode and append one pair, or answer the standing questions once), so no stream starves
 * another. Clip jobs have their own inference thread (jobs.c); the two take turns through the
 * inference gate (infer_gate.c), held by the streams for one step and by the jobs for one job, so
 * the model's heavy calls never run twice at once and neither side waits longer than one unit of
 * the other. While a long clip job runs, a stream's pair queue fills and new pairs are dropped
 * (counted in dropped_pairs).
 *
 * The KV window of a stream is a video-QA session (qa.h), which lays it out with the one prompt
 * builder: [head "<|im_start|>user\n"] [pair 1] ... [pair k], each pair "<t seconds>
 * <|vision_start|>pads<|vision_end|>". A new pair is encoded once (the session keeps its vision
 * output while the pair is in the window) and prefilled alone, positions continuing; the oldest
 * pair leaves with vg_qa_evict_oldest (RoPE is relative: the gap in positions is harmless; the
 * head stays). A question is vg_qa_ask, which prefills "question<|im_end|>\n<|im_start|>assistant
 * \n", generates and rolls both back. So the work per second of video and per update does not
 * grow with the window's age. This file keeps the policy (which pairs the window holds, when to
 * rebase) and each pair's stream and wall-clock times (ring_w).
 *
 * Timestamps: the pairs' "<t seconds>" are printed relative to the window base (the oldest pair's
 * first frame at the last rebase), keeping them inside the range the model saw in training (clips
 * of 0-40 s): the session maps answers back to stream time by adding the base. When the newest
 * pair's relative time would pass max(40, 2 * window_s) or its positions would pass half of
 * max_position_embeddings, the window is rebased (vg_qa_rebase): the KV cache is cut back to the
 * head and every pair is prefilled again from its cached vision output with a new base and fresh
 * positions (one full window prefill, amortized over tens of seconds).
 *
 * Events: each answer is parsed (vg_answer_parse), its ranges checked against the window asked
 * about (vg_stream_track_check: rejected ones counted in the stream's stats and logged) and fed to
 * the question's track (vg_stream_track_update, stream_track.c): `started`, `update` and `ended`
 * records, in stream seconds and UTC wall-clock (the wall time at which the pair holding that
 * stream time was received), with the question's short label, the answer text in stream time and
 * the answers' score.
 *
 * The thread owns the inference-thread zone of each stream on its list; it reads the streams'
 * immutable fields, writes their counters and reports through post_publish and post_simple. A
 * stopped stream leaves the list (only this thread removes from it), its window is released and
 * M_INFER_DONE is its last message about it.
 */
#define _XOPEN_SOURCE 700
#include "streams_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define MOD            "streams"
#define TS_HORIZON_MIN 40.0

static int infer_init(stream *s, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    const vg_model_info *mi = ss->mi;
    int rc;
    size_t max_suffix = 0;
    for (int i = 0; i < s->nq; i++) {
        size_t n = 0;
        s->q[i].text = s->qtext[i];
        vg_stream_label(s->qtext[i], NULL, s->q[i].label, sizeof s->q[i].label);
        vg_track_params tp = s->track;
        tp.horizon = s->window_s + 8.0;
        if ((rc = vg_stream_track_init(&s->q[i].track, &tp)) < 0)
            return vg_fail(err, errlen, rc, "out of memory");
        if ((rc = vg_qa_question_tokens(ss->model, s->qtext[i], &n, err, errlen)) < 0)
            return rc;
        max_suffix = VG_MAX(max_suffix, n);
    }
    int factor = mi->patch_size * mi->spatial_merge_size;
    size_t tok_pair = (size_t)(s->max_pixels / ((long)factor * factor)) + 1;
    s->w_cap = (size_t)ceil(s->window_s * s->fps / 2.0) + 2;
    size_t cap = 8 + s->w_cap * vg_qa_pair_tokens((int)tok_pair, 1) + max_suffix +
                 (size_t)s->max_new_tokens + 8;
    if (cap > (size_t)mi->max_position_embeddings)
        return vg_fail(err, errlen, VG_ELIMIT,
                       "a window of %g s at %g fps and %ld pixels needs %zu tokens; the model "
                       "allows %d",
                       s->window_s, s->fps, s->max_pixels, cap, mi->max_position_embeddings);
    s->cap_tokens = cap;
    s->max_suffix = max_suffix;
    s->ring_w = calloc(s->w_cap, sizeof *s->ring_w);
    if (!s->ring_w)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    vg_qa_params qp = {cap, NULL};
    if ((rc = vg_qa_create(ss->model, &qp, &s->qa, err, errlen)) < 0 ||
        (rc = vg_qa_sync(s->qa, &s->stop, err, errlen)) < 0)
        return rc;
    s->max_suffix = max_suffix;
    s->i_ready = 1;
    return 0;
}

static void infer_release(stream *s)
{
    for (int i = 0; i < s->nq; i++)
        vg_stream_track_free(&s->q[i].track);
    free(s->ring_w);
    s->ring_w = NULL;
    s->w_n = 0;
    vg_qa_free(s->qa);
    s->qa = NULL;
}

/* The times of the i-th pair the window holds (0 = oldest). */
static win_entry *win_at(stream *s, size_t i)
{
    return &s->ring_w[(s->w_head + i) % s->w_cap];
}

static void evict_oldest(stream *s)
{
    vg_qa_evict_oldest(s->qa);
    s->w_head = (s->w_head + 1) % s->w_cap;
    s->w_n--;
}

/* Empties the window after a failure: the session keeps only its head. */
static void reset_window(stream *s)
{
    while (s->w_n > 0)
        evict_oldest(s);
}

/* Rebases the window on its oldest pair, measuring what a rebase costs per pair held (the least
 * seen: the model's cost, not the machine's load). */
static int rebase(stream *s, char *err, size_t errlen)
{
    atomic_fetch_add(&s->rebases, 1);
    double t0 = vg_now_ms();
    int rc = vg_qa_rebase(s->qa, win_at(s, 0)->t0, &s->stop, err, errlen);
    if (rc < 0) {
        s->w_n = 0; /* the session dropped every pair */
        return rc;
    }
    /* The cheapest so far: a rebase that other processes delayed says nothing about the model. */
    double per = (vg_now_ms() - t0) / (double)VG_MAX(s->w_n, (size_t)1);
    if (!(s->rebase_ms_pair > 0) || per < s->rebase_ms_pair)
        s->rebase_ms_pair = per;
    return 0;
}

/* Before a question: when a rebase of the whole window costs less than a tenth of the time
 * between answers (a small model), the window is rebased on its oldest pair, so the printed times
 * start at 0 as in the clips the model was trained on (the bundled demo model places boxes much
 * better so: docs/eval.md, "Live streams"). A model for which that is too dear keeps its base for
 * up to max(40, 2 * window_s) seconds (add_pair). */
static int align_base(stream *s, char *err, size_t errlen)
{
    if (s->w_n < 2 || win_at(s, 0)->t0 - vg_qa_base(s->qa) < 1e-6 || !(s->rebase_ms_pair > 0))
        return 0;
    double budget_ms = 0.1 * s->update_s * 1000.0 / VG_MAX(s->speed, 1.0);
    if (s->rebase_ms_pair * (double)s->w_n > budget_ms)
        return 0;
    return rebase(s, err, errlen);
}

static int add_pair(stream *s, pair_item *p, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    const vg_model_info *mi = ss->mi;
    int merge = mi->spatial_merge_size, mh = p->gh / merge, mw = p->gw / merge;
    vg_vision_out *vo = NULL;
    int rc = vg_model_encode_slice(ss->model, p->patches, p->gh, p->gw, &s->stop, &vo, err, errlen);
    if (rc < 0)
        return rc;
    while (s->w_n > 0 && (s->w_n >= s->w_cap - 1 || p->t1 - win_at(s, 0)->t0 > s->window_s + 1e-6))
        evict_oldest(s);
    size_t budget = vg_qa_pair_tokens(mh, mw) + s->max_suffix + (size_t)s->max_new_tokens + 8;
    while (s->w_n > 0 && vg_qa_free_tokens(s->qa) < budget)
        evict_oldest(s);
    double t = vg_pair_time(p->t0, p->t1);
    if ((rc = vg_qa_append_pair(s->qa, vo, mh, mw, t, err, errlen)) < 0)
        return rc; /* the session took vo */
    win_entry *e = win_at(s, s->w_n);
    e->t0 = p->t0;
    e->t1 = p->t1;
    e->wall = p->wall;
    e->paced = p->paced;
    s->w_n++;
    /* Rebase when the timestamps would leave the trained range or the positions would pass the
     * limit (half of max_position_embeddings, or twice the window's tokens when that is larger,
     * so a rebase is never needed again at once). */
    double horizon = VG_MAX(TS_HORIZON_MIN, 2.0 * s->window_s);
    size_t maxpos = (size_t)mi->max_position_embeddings;
    size_t pos_limit = VG_MAX(maxpos / 2, VG_MIN(maxpos, 2 * s->cap_tokens));
    if (s->w_n == 1 || t - vg_qa_base(s->qa) > horizon ||
        (size_t)vg_qa_next_pos(s->qa) + budget > pos_limit) {
        rc = rebase(s, err, errlen);
    } else {
        /* Prefilling one pair costs what a rebase costs per pair: the cheapest seen is the
         * model's cost (align_base), whatever the load at any one time. */
        double t0 = vg_now_ms();
        rc = vg_qa_sync(s->qa, &s->stop, err, errlen);
        double per = vg_now_ms() - t0;
        if (rc == 0 && (!(s->rebase_ms_pair > 0) || per < s->rebase_ms_pair))
            s->rebase_ms_pair = per;
        if (rc < 0) {
            s->w_n--; /* the session dropped the new pair; start again from the head */
            reset_window(s);
        }
    }
    if (rc < 0)
        return rc;
    atomic_store(&s->win_start, win_at(s, 0)->t0);
    atomic_store(&s->win_end, e->t1);
    s->fresh++;
    return 0;
}

/* Seconds of video in the window: from the oldest pair's first frame to one sampling interval
 * after the newest pair's last frame (a full window of k pairs at fps spans 2k / fps). */
static double window_span(stream *s)
{
    if (s->w_n == 0)
        return 0.0;
    return win_at(s, s->w_n - 1)->t1 - win_at(s, 0)->t0 + 1.0 / s->fps + 1e-6;
}

/* The wall-clock time of stream time t. Live input: from the newest pair, whose offset is the best
 * estimate so far (reader_main); the stream time of a live input runs with the wall clock, also
 * across reconnects. A paced file (any speed): from the pair nearest to t. */
static double wall_of(stream *s, double t)
{
    if (s->w_n > 0) {
        const win_entry *n = win_at(s, s->w_n - 1);
        if (!n->paced)
            return n->wall + (t - n->t1);
    }
    double best = 1e300, wall = unix_now();
    for (size_t i = 0; i < s->w_n; i++) {
        const win_entry *e = win_at(s, i);
        double d = fabs(e->t1 - t);
        if (d < best) {
            best = d;
            wall = e->wall + (t - e->t1);
        }
    }
    return wall;
}

static void add_time(cJSON *o, const char *key, const char *wkey, double t, double wall)
{
    char iso[64];
    cJSON_AddNumberToObject(o, key, vg_qa_round_ms(t));
    vg_qa_iso_utc(wall, iso, sizeof iso);
    cJSON_AddStringToObject(o, wkey, iso);
}

static void publish_transitions(stream *s, int qi, const vg_stream_transition *tr, int k,
                                double now);

static int answer_question(stream *s, int qi, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    question *q = &s->q[qi];
    vg_qa_ask_params ap = {
        vg_model_default_gen_params(ss->model), NULL, NULL, NULL, &s->stop, ANSWER_MAX};
    ap.gen.do_sample = 0;
    ap.gen.max_new_tokens = s->max_new_tokens;
    vg_qa_answer ans = {0};
    int rc = vg_qa_ask(s->qa, q->text, &ap, &ans, err, errlen);
    if (rc < 0)
        return rc;
    atomic_fetch_add(&s->answers, 1);

    double ws = win_at(s, 0)->t0, we = win_at(s, s->w_n - 1)->t1;
    double now = unix_now();
    cJSON *a = cJSON_CreateObject();
    if (a) {
        cJSON_AddNumberToObject(a, "question", qi);
        cJSON_AddStringToObject(a, "text", ans.text);
        cJSON *w = cJSON_AddObjectToObject(a, "window");
        add_time(w, "start", "start_wall", ws, wall_of(s, ws));
        add_time(w, "end", "end_wall", we, wall_of(s, we));
        cJSON_AddNumberToObject(w, "base", vg_qa_round_ms(vg_qa_base(s->qa)));
        cJSON *arr = vg_qa_events_json(ans.events, ans.n_events, "stream");
        if (arr)
            cJSON_AddItemToObject(a, "events", arr);
        cJSON_AddNumberToObject(a, "prefill_ms", round(ans.prefill_ms * 10) / 10);
        cJSON_AddNumberToObject(a, "generate_ms", round(ans.generate_ms * 10) / 10);
        cJSON_AddNumberToObject(a, "time", now);
        post_publish(s, "answer", a);
    }
    /* Check the answer's ranges against the window it was about, then vote (stream_track.c). */
    double base = vg_qa_base(s->qa);
    char *text = malloc(ANSWER_MAX + 64);
    if (text)
        vg_stream_text(ans.text, ans.events, ans.n_events, base, text, ANSWER_MAX + 64);
    vg_track_checks ck = {0};
    int n_ok = vg_stream_track_check(ans.events, ans.n_events, ws, we, s->track.tolerance,
                                     ans.events, &ck);
    if (ck.reversed || ck.out_of_window || ck.contradictory || ck.clamped) {
        atomic_fetch_add(&s->ev_reversed, ck.reversed);
        atomic_fetch_add(&s->ev_out_of_window, ck.out_of_window);
        atomic_fetch_add(&s->ev_contradictory, ck.contradictory);
        atomic_fetch_add(&s->ev_clamped, ck.clamped);
        if (ck.reversed || ck.out_of_window || ck.contradictory)
            vg_log(VG_LOG_INFO, MOD,
                   "stream %s: question %d: %ld reversed, %ld out-of-window and %ld "
                   "contradicted range(s) rejected (window %.1f-%.1f s): %.200s",
                   s->name, qi, ck.reversed, ck.out_of_window, ck.contradictory, ws, we, ans.text);
    }
    vg_stream_transition tr[VG_TRACK_MAX_OUT];
    long supp = q->track.suppressed;
    int k = vg_stream_track_update(&q->track, ans.events, n_ok > 0 ? (size_t)n_ok : 0, ws, we,
                                   ans.score, text ? text : ans.text, tr);
    atomic_fetch_add(&s->ev_suppressed, q->track.suppressed - supp);
    free(text);
    vg_qa_answer_clear(&ans);
    publish_transitions(s, qi, tr, k, now);
    return 0;
}

/* Publishes transitions of question qi as `event` records. */
static void publish_transitions(stream *s, int qi, const vg_stream_transition *tr, int k,
                                double now)
{
    question *q = &s->q[qi];
    for (int i = 0; i < k; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e)
            continue;
        cJSON_AddNumberToObject(e, "question", qi);
        cJSON_AddStringToObject(e, "question_text", q->text);
        const char *kind = tr[i].kind == VG_TRANSITION_STARTED ? "started"
                           : tr[i].kind == VG_TRANSITION_ENDED ? "ended"
                                                               : "update";
        cJSON_AddStringToObject(e, "event", kind);
        if (tr[i].kind != VG_TRANSITION_ENDED)
            q->start_wall = wall_of(s, tr[i].start);
        vg_event ev = {tr[i].start, tr[i].end, "", 0};
        snprintf(ev.label, sizeof ev.label, "%s", q->label);
        vg_qa_event_time et = {"stream", q->start_wall, wall_of(s, tr[i].end), 1};
        vg_qa_event_json(e, &ev, &et);
        cJSON_AddStringToObject(e, "text", tr[i].text);
        cJSON_AddNumberToObject(e, "score", round(tr[i].score * 1000) / 1000);
        cJSON_AddNumberToObject(e, "time", now);
        post_publish(s, "event", e);
    }
}

/* One unit of work for s: encode and append a pair, or answer the questions. Returns 1 if it did
 * something. */
static int infer_step(stream *s)
{
    char err[512] = "";
    int rc, did = 0;
    if (!s->i_ready) {
        if (s->i_failed)
            return 0;
        if ((rc = infer_init(s, err, sizeof err)) < 0) {
            s->i_failed = 1;
            vg_log(VG_LOG_ERR, MOD, "stream %s: %s", s->name, err[0] ? err : vg_strerror(rc));
            cJSON *p = cJSON_CreateObject();
            cJSON_AddStringToObject(p, "error", err[0] ? err : vg_strerror(rc));
            post_publish(s, "error", p);
            return 0;
        }
    }
    void *item;
    if (vg_queue_pop(s->pairs, &item, 0) == 0) {
        pair_item *p = item;
        rc = add_pair(s, p, err, sizeof err);
        pair_free(p);
        if (rc < 0 && !atomic_load(&s->stop))
            vg_log(VG_LOG_WARNING, MOD, "stream %s: a pair was lost: %s", s->name,
                   err[0] ? err : vg_strerror(rc));
        did = 1;
    }
    /* update_s counts seconds of stream: wall seconds for a live input, and a file replayed at
     * speed X is answered as often per second of video as a camera would be. */
    double newest = s->w_n > 0 ? win_at(s, s->w_n - 1)->t1 : 0;
    int last = atomic_load(&s->eof) && vg_queue_len(s->pairs) == 0; /* a file's last pairs */
    if (s->fresh > 0 && s->w_n > 0 && (newest >= s->next_update_t - 1e-6 || last) &&
        window_span(s) >= s->min_window_s && !atomic_load(&s->stop)) {
        /* On a fixed grid of stream time from the first answer: an answer that came late (the
         * model was busy) does not shift the later ones, so the windows asked about do not depend
         * on the machine's load. */
        if (!(s->next_update_t > 0))
            s->next_update_t = newest;
        while (s->next_update_t <= newest + 1e-6)
            s->next_update_t += s->update_s;
        s->fresh = 0;
        err[0] = 0;
        if ((rc = align_base(s, err, sizeof err)) < 0) {
            if (rc != VG_ECANCELED)
                vg_log(VG_LOG_WARNING, MOD, "stream %s: the window was lost: %s", s->name,
                       err[0] ? err : vg_strerror(rc));
            return 1;
        }
        for (int i = 0; i < s->nq && !atomic_load(&s->stop); i++) {
            err[0] = 0;
            if ((rc = answer_question(s, i, err, sizeof err)) < 0 && rc != VG_ECANCELED)
                vg_log(VG_LOG_WARNING, MOD, "stream %s: question %d: %s", s->name, i,
                       err[0] ? err : vg_strerror(rc));
        }
        did = 1;
    }
    /* A file that ended: once its last pairs are answered, the events still open end where the
     * answers last saw them. */
    if (atomic_load(&s->eof) && !s->finished && s->fresh == 0 && vg_queue_len(s->pairs) == 0) {
        s->finished = 1;
        for (int i = 0; i < s->nq; i++) {
            vg_stream_transition tr;
            if (vg_stream_track_finish(&s->q[i].track, &tr) == 1)
                publish_transitions(s, i, &tr, 1, unix_now());
        }
        did = 1;
    }
    return did;
}

void *infer_main(void *arg)
{
    vg_streams *ss = arg;
    for (;;) {
        pthread_mutex_lock(&ss->mu);
        if (ss->quit && !ss->i_head) {
            pthread_mutex_unlock(&ss->mu);
            break;
        }
        ss->work = 0;
        stream *list = ss->i_head;
        pthread_mutex_unlock(&ss->mu);
        int did = 0;
        /* Only this thread removes from the list, so walking it unlocked is safe; new streams
         * are pushed at the head and seen on the next pass. */
        for (stream *s = list, *nx; s; s = nx) {
            nx = s->i_next;
            if (atomic_load(&s->stop)) {
                pthread_mutex_lock(&ss->mu);
                stream **pp = &ss->i_head;
                while (*pp && *pp != s)
                    pp = &(*pp)->i_next;
                if (*pp)
                    *pp = s->i_next;
                pthread_mutex_unlock(&ss->mu);
                infer_release(s);
                post_simple(s, M_INFER_DONE);
                did = 1;
                continue;
            }
            vg_infer_gate_enter(ss->gate);
            did |= infer_step(s);
            vg_infer_gate_leave(ss->gate);
        }
        if (!did) {
            pthread_mutex_lock(&ss->mu);
            if (!ss->work && !ss->quit) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 20 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&ss->cond, &ss->mu, &ts);
            }
            pthread_mutex_unlock(&ss->mu);
        }
    }
    return NULL;
}
