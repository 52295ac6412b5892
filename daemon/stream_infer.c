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
 * The KV window of a stream: [head "<|im_start|>user\n"] [pair 1] ... [pair k], each pair
 * "<t seconds><|vision_start|>pads<|vision_end|>". A new pair is encoded once (its vision output
 * kept in a ring of the last window_s seconds) and prefilled alone, positions continuing; the
 * oldest pair leaves with vg_seq_remove (RoPE is relative: the gap in positions is harmless; the
 * head stays). A question prefills "question<|im_end|>\n<|im_start|>assistant\n", generates, then
 * vg_seq_truncate drops the suffix and answer again. So the work per second of video and per
 * update does not grow with the window's age.
 *
 * Timestamps: the pairs' "<t seconds>" are printed relative to the window base (the oldest pair's
 * first frame at the last rebase), keeping them inside the range the model saw in training (clips
 * of 0-40 s): answers are mapped back to stream time by adding the base. When the newest pair's
 * relative time would pass max(40, 2 * window_s) or its positions would pass half of
 * max_position_embeddings, the window is rebased: the KV cache is cut back to the head and every
 * pair in the ring is prefilled again from its cached vision output with a new base and fresh
 * positions (one full window prefill, amortized over tens of seconds).
 *
 * Events: each answer is parsed (vg_answer_parse) and fed to the question's track
 * (vg_stream_track_update, stream_track.c): `started` and `ended` transitions, in stream seconds
 * and UTC wall-clock (the wall time at which the pair holding that stream time was received).
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
#define TS_TOKENS_MAX  48
#define TS_HORIZON_MIN 40.0

static void iso_utc(double t, char *out, size_t cap)
{
    time_t s = (time_t)floor(t);
    struct tm tm;
    gmtime_r(&s, &tm);
    int ms = (int)((t - floor(t)) * 1000.0);
    if (ms > 999)
        ms = 999;
    char b[32];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%.24s.%03uZ", b, (unsigned)ms % 1000u);
}

/* ===================================================================================================
 * Inference thread: the KV window.
 */
static int tokenize(const vg_streams *ss, const char *text, int32_t **ids, size_t *n)
{
    return vg_tokenizer_encode(vg_model_tokenizer(ss->model), text, strlen(text), 0, ids, n);
}

/* Appends src[n] to *dst[*len] (grown). */
static int append_ids(int32_t **dst, size_t *len, const int32_t *src, size_t n)
{
    int32_t *p = realloc(*dst, (*len + n + 1) * sizeof *p);
    if (!p)
        return VG_ENOMEM;
    memcpy(p + *len, src, n * sizeof *p);
    *dst = p;
    *len += n;
    return 0;
}

static int append_text(const vg_streams *ss, int32_t **dst, size_t *len, const char *text)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tokenize(ss, text, &ids, &n);
    if (rc == 0)
        rc = append_ids(dst, len, ids, n);
    free(ids);
    return rc;
}

static int infer_init(stream *s, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    const vg_model_info *mi = ss->mi;
    int rc;
    int32_t sp[1];
    size_t max_suffix = 0;
    for (int i = 0; i < s->nq; i++) {
        question *q = &s->q[i];
        q->text = s->qtext[i];
        if ((rc = append_text(ss, &q->suffix, &q->n_suffix, q->text)) < 0)
            return vg_fail(err, errlen, rc, "cannot tokenize question %d", i);
        sp[0] = mi->im_end_id;
        if ((rc = append_ids(&q->suffix, &q->n_suffix, sp, 1)) < 0 ||
            (rc = append_text(ss, &q->suffix, &q->n_suffix, "\n")) < 0)
            return rc;
        sp[0] = mi->im_start_id;
        if ((rc = append_ids(&q->suffix, &q->n_suffix, sp, 1)) < 0 ||
            (rc = append_text(ss, &q->suffix, &q->n_suffix, "assistant\n")) < 0)
            return rc;
        max_suffix = VG_MAX(max_suffix, q->n_suffix);
    }
    int factor = mi->patch_size * mi->spatial_merge_size;
    size_t tok_pair = (size_t)(s->max_pixels / ((long)factor * factor)) + 1;
    s->w_cap = (size_t)ceil(s->window_s * s->fps / 2.0) + 2;
    s->head_len = 8; /* bound; the real length is set below */
    size_t cap = s->head_len + s->w_cap * (tok_pair + TS_TOKENS_MAX + 2) + max_suffix +
                 (size_t)s->max_new_tokens + 8;
    if (cap > (size_t)mi->max_position_embeddings)
        return vg_fail(err, errlen, VG_ELIMIT,
                       "a window of %g s at %g fps and %ld pixels needs %zu tokens; the model "
                       "allows %d",
                       s->window_s, s->fps, s->max_pixels, cap, mi->max_position_embeddings);
    s->cap_tokens = cap;
    s->max_suffix = max_suffix;
    s->ring_w = calloc(s->w_cap, sizeof *s->ring_w);
    s->logits = malloc((size_t)mi->vocab_size * sizeof(float));
    if (!s->ring_w || !s->logits)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    if ((rc = vg_seq_create(ss->model, cap, &s->seq, err, errlen)) < 0)
        return rc;
    int32_t *head = NULL;
    size_t nh = 0;
    sp[0] = mi->im_start_id;
    if ((rc = append_ids(&head, &nh, sp, 1)) < 0 ||
        (rc = append_text(ss, &head, &nh, "user\n")) < 0) {
        free(head);
        return rc;
    }
    int32_t *pos = malloc(3 * nh * sizeof *pos);
    if (!pos) {
        free(head);
        return VG_ENOMEM;
    }
    for (size_t i = 0; i < nh; i++)
        pos[i] = pos[nh + i] = pos[2 * nh + i] = (int32_t)i;
    vg_prefill_input in = {head, nh, pos, NULL, NULL, 0};
    rc = vg_seq_prefill(s->seq, &in, NULL, 0, &s->stop, err, errlen);
    free(head);
    free(pos);
    if (rc < 0)
        return rc;
    s->head_len = nh;
    s->next_pos = (int32_t)nh;
    s->i_ready = 1;
    return 0;
}

static void infer_release(stream *s)
{
    for (size_t i = 0; i < s->w_n; i++)
        vg_vision_out_free(s->ring_w[(s->w_head + i) % s->w_cap].vo);
    free(s->ring_w);
    s->ring_w = NULL;
    s->w_n = 0;
    vg_seq_free(s->seq);
    s->seq = NULL;
    free(s->logits);
    s->logits = NULL;
    for (int i = 0; i < s->nq; i++) {
        free(s->q[i].suffix);
        s->q[i].suffix = NULL;
    }
}

/* Prefills one pair (timestamp relative to the base) at the end of the cache. */
static int prefill_pair(stream *s, win_entry *e, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    const vg_model_info *mi = ss->mi;
    char ts[48];
    snprintf(ts, sizeof ts, "<%.1f seconds>", (e->t0 + e->t1) / 2.0 - s->base);
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = append_text(ss, &ids, &n, ts);
    if (rc < 0 || n > TS_TOKENS_MAX) {
        free(ids);
        return vg_fail(err, errlen, rc < 0 ? rc : VG_ELIMIT, "cannot tokenize the timestamp %s",
                       ts);
    }
    size_t n_ts = n, n_vis = (size_t)e->mh * e->mw;
    size_t total = n_ts + 2 + n_vis;
    int32_t *all = realloc(ids, total * sizeof *all);
    int32_t *pos = malloc(3 * total * sizeof *pos);
    if (!all || !pos) {
        free(all ? all : ids);
        free(pos);
        return VG_ENOMEM;
    }
    ids = all;
    int32_t p = s->next_pos;
    for (size_t i = 0; i < n_ts; i++, p++)
        pos[i] = pos[total + i] = pos[2 * total + i] = p;
    ids[n_ts] = mi->vision_start_token_id;
    pos[n_ts] = pos[total + n_ts] = pos[2 * total + n_ts] = p++;
    for (size_t j = 0; j < n_vis; j++) {
        size_t k = n_ts + 1 + j;
        ids[k] = mi->video_token_id;
        pos[k] = p;
        pos[total + k] = p + (int32_t)(j / (size_t)e->mw);
        pos[2 * total + k] = p + (int32_t)(j % (size_t)e->mw);
    }
    p += VG_MAX(e->mh, e->mw);
    ids[total - 1] = mi->vision_end_token_id;
    pos[total - 1] = pos[2 * total - 1] = pos[3 * total - 1] = p++;
    vg_prefill_input in = {ids, total, pos, e->vo->embeds, e->vo->deepstack, n_vis};
    rc = vg_seq_prefill(s->seq, &in, NULL, 0, &s->stop, err, errlen);
    free(ids);
    free(pos);
    if (rc < 0)
        return rc;
    e->n_kv = total;
    s->next_pos = p;
    return 0;
}

/* Cuts the cache back to the head and prefills every pair again with a new base and positions. */
static int rebase(stream *s, char *err, size_t errlen)
{
    vg_seq_truncate(s->seq, s->head_len);
    s->next_pos = (int32_t)s->head_len;
    s->base = s->w_n ? s->ring_w[s->w_head].t0 : 0;
    atomic_fetch_add(&s->rebases, 1);
    for (size_t i = 0; i < s->w_n; i++) {
        int rc = prefill_pair(s, &s->ring_w[(s->w_head + i) % s->w_cap], err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void evict_oldest(stream *s)
{
    win_entry *e = &s->ring_w[s->w_head];
    vg_seq_remove(s->seq, s->head_len, e->n_kv);
    vg_vision_out_free(e->vo);
    memset(e, 0, sizeof *e);
    s->w_head = (s->w_head + 1) % s->w_cap;
    s->w_n--;
}

static int add_pair(stream *s, pair_item *p, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    const vg_model_info *mi = ss->mi;
    int merge = mi->spatial_merge_size;
    vg_vision_out *vo = NULL;
    int rc = vg_model_encode_slice(ss->model, p->patches, p->gh, p->gw, &s->stop, &vo, err, errlen);
    if (rc < 0)
        return rc;
    while (s->w_n > 0 &&
           (s->w_n >= s->w_cap - 1 || p->t1 - s->ring_w[s->w_head].t0 > s->window_s + 1e-6))
        evict_oldest(s);
    if (vo->n_tokens != (p->gh / merge) * (p->gw / merge)) {
        vg_vision_out_free(vo);
        return vg_fail(err, errlen, VG_EINVAL, "the encoder gave %d tokens for a %dx%d grid",
                       vo->n_tokens, p->gh, p->gw);
    }
    size_t need = (size_t)(p->gh / merge) * (p->gw / merge) + TS_TOKENS_MAX + 2;
    size_t budget = need + s->max_suffix + (size_t)s->max_new_tokens + 8;
    while (s->w_n > 0 && vg_seq_len(s->seq) + budget > s->cap_tokens)
        evict_oldest(s);
    win_entry *e = &s->ring_w[(s->w_head + s->w_n) % s->w_cap];
    memset(e, 0, sizeof *e);
    e->vo = vo;
    e->t0 = p->t0;
    e->t1 = p->t1;
    e->wall = p->wall;
    e->paced = p->paced;
    e->mh = p->gh / merge;
    e->mw = p->gw / merge;
    s->w_n++;
    /* Rebase when the timestamps would leave the trained range or the positions would pass the
     * limit (half of max_position_embeddings, or twice the window's tokens when that is larger,
     * so a rebase is never needed again at once). */
    double horizon = VG_MAX(TS_HORIZON_MIN, 2.0 * s->window_s);
    size_t maxpos = (size_t)mi->max_position_embeddings;
    size_t pos_limit = VG_MAX(maxpos / 2, VG_MIN(maxpos, 2 * s->cap_tokens));
    if (s->w_n == 1 || (e->t0 + e->t1) / 2.0 - s->base > horizon ||
        (size_t)s->next_pos + budget > pos_limit)
        rc = rebase(s, err, errlen);
    else
        rc = prefill_pair(s, e, err, errlen);
    if (rc < 0) {
        /* Keep the cache and the ring consistent: start again from the head. */
        while (s->w_n > 0)
            evict_oldest(s);
        vg_seq_truncate(s->seq, s->head_len);
        s->next_pos = (int32_t)s->head_len;
        return rc;
    }
    atomic_store(&s->win_start, s->ring_w[s->w_head].t0);
    atomic_store(&s->win_end, e->t1);
    s->fresh++;
    return 0;
}

/* Seconds of video in the window: from the oldest pair's first frame to one sampling interval
 * after the newest pair's last frame (a full window of k pairs at fps spans 2k / fps). */
static double window_span(const stream *s)
{
    if (s->w_n == 0)
        return 0.0;
    const win_entry *o = &s->ring_w[s->w_head];
    const win_entry *n = &s->ring_w[(s->w_head + s->w_n - 1) % s->w_cap];
    return n->t1 - o->t0 + 1.0 / s->fps + 1e-6;
}

/* The wall-clock time of stream time t. Live input: from the newest pair, whose offset is the best
 * estimate so far (reader_main); the stream time of a live input runs with the wall clock, also
 * across reconnects. A paced file (any speed): from the pair nearest to t. */
static double wall_of(const stream *s, double t)
{
    if (s->w_n > 0) {
        const win_entry *n = &s->ring_w[(s->w_head + s->w_n - 1) % s->w_cap];
        if (!n->paced)
            return n->wall + (t - n->t1);
    }
    double best = 1e300, wall = unix_now();
    for (size_t i = 0; i < s->w_n; i++) {
        const win_entry *e = &s->ring_w[(s->w_head + i) % s->w_cap];
        double d = fabs(e->t1 - t);
        if (d < best) {
            best = d;
            wall = e->wall + (t - e->t1);
        }
    }
    return wall;
}

static int on_answer_token(int32_t id, const char *text, size_t len, void *opaque)
{
    (void)id;
    stream *s = opaque;
    char buf[3 * 512 + 1]; /* a generated U+0000 becomes U+FFFD (answers are C strings) */
    if (memchr(text, 0, len) && len <= 512) {
        len = vg_proto_text_piece(text, len, buf, sizeof buf);
        text = buf;
    }
    if (s->answer_full)
        return atomic_load(&s->stop) != 0;
    size_t room = ANSWER_MAX - 1 - s->answer_len;
    size_t k = VG_MIN(len, room);
    s->answer_full = k < len;
    /* Clipped at ANSWER_MAX: never keep half of a UTF-8 sequence (k < len: text[k] exists). */
    while (k < len && k > 0 && ((unsigned char)text[k] & 0xC0) == 0x80)
        k--;
    memcpy(s->answer + s->answer_len, text, k);
    s->answer_len += k;
    s->answer[s->answer_len] = 0;
    return atomic_load(&s->stop) != 0;
}

static void add_time(cJSON *o, const char *key, const char *wkey, double t, double wall)
{
    char iso[64];
    cJSON_AddNumberToObject(o, key, round(t * 1000.0) / 1000.0);
    iso_utc(wall, iso, sizeof iso);
    cJSON_AddStringToObject(o, wkey, iso);
}

static int answer_question(stream *s, int qi, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    question *q = &s->q[qi];
    size_t wlen = vg_seq_len(s->seq);
    size_t n = q->n_suffix;
    int32_t *pos = malloc(3 * n * sizeof *pos);
    if (!pos)
        return VG_ENOMEM;
    for (size_t i = 0; i < n; i++)
        pos[i] = pos[n + i] = pos[2 * n + i] = s->next_pos + (int32_t)i;
    double t0 = vg_now_ms();
    vg_prefill_input in = {q->suffix, n, pos, NULL, NULL, 0};
    int rc = vg_seq_prefill(s->seq, &in, s->logits, 0, &s->stop, err, errlen);
    free(pos);
    if (rc < 0)
        return rc;
    double prefill_ms = vg_now_ms() - t0;
    vg_gen_params gp = vg_model_default_gen_params(ss->model);
    gp.do_sample = 0;
    gp.max_new_tokens = s->max_new_tokens;
    s->answer_len = 0;
    s->answer_full = 0;
    s->answer[0] = 0;
    t0 = vg_now_ms();
    int32_t rope_delta = s->next_pos - (int32_t)wlen;
    rc = vg_generate(s->seq, &gp, s->logits, rope_delta, on_answer_token, s, &s->stop, NULL, NULL,
                     err, errlen);
    double gen_ms = vg_now_ms() - t0;
    vg_seq_truncate(s->seq, wlen);
    if (rc < 0)
        return rc;
    if (atomic_load(&s->stop))
        return VG_ECANCELED;
    atomic_fetch_add(&s->answers, 1);

    double ws = s->ring_w[s->w_head].t0;
    double we = s->ring_w[(s->w_head + s->w_n - 1) % s->w_cap].t1;
    vg_event *ev = NULL;
    size_t nev = 0;
    if (vg_answer_parse(s->answer, &ev, &nev) < 0) {
        ev = NULL;
        nev = 0;
    }
    double now = unix_now();
    cJSON *a = cJSON_CreateObject();
    if (a) {
        cJSON_AddNumberToObject(a, "question", qi);
        cJSON_AddStringToObject(a, "text", s->answer);
        cJSON *w = cJSON_AddObjectToObject(a, "window");
        add_time(w, "start", "start_wall", ws, wall_of(s, ws));
        add_time(w, "end", "end_wall", we, wall_of(s, we));
        cJSON_AddNumberToObject(w, "base", round(s->base * 1000.0) / 1000.0);
        cJSON *arr = cJSON_AddArrayToObject(a, "events");
        for (size_t i = 0; i < nev; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "start", round((s->base + ev[i].start) * 1000.0) / 1000.0);
            cJSON_AddNumberToObject(e, "end", round((s->base + ev[i].end) * 1000.0) / 1000.0);
            cJSON_AddStringToObject(e, "label", ev[i].label);
            cJSON_AddItemToArray(arr, e);
        }
        cJSON_AddNumberToObject(a, "prefill_ms", round(prefill_ms * 10) / 10);
        cJSON_AddNumberToObject(a, "generate_ms", round(gen_ms * 10) / 10);
        cJSON_AddNumberToObject(a, "time", now);
        post_publish(s, "answer", a);
    }
    vg_stream_transition tr[2];
    double gap = VG_MAX(1.0, 4.0 / s->fps);
    int k = vg_stream_track_update(&q->track, ev, nev, s->base, ws, we, gap, tr);
    free(ev);
    for (int i = 0; i < k; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e)
            continue;
        cJSON_AddNumberToObject(e, "question", qi);
        cJSON_AddStringToObject(e, "question_text", q->text);
        cJSON_AddStringToObject(e, "event",
                                tr[i].kind == VG_TRANSITION_STARTED ? "started" : "ended");
        cJSON_AddStringToObject(e, "label", tr[i].label);
        if (tr[i].kind == VG_TRANSITION_STARTED) {
            q->start_wall = wall_of(s, tr[i].start);
            add_time(e, "start", "start_wall", tr[i].start, q->start_wall);
        } else {
            add_time(e, "start", "start_wall", tr[i].start, q->start_wall);
            add_time(e, "end", "end_wall", tr[i].end, wall_of(s, tr[i].end));
        }
        cJSON_AddNumberToObject(e, "time", now);
        post_publish(s, "event", e);
    }
    return 0;
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
    double now = vg_now_ms();
    if (s->fresh > 0 && s->w_n > 0 && now >= s->next_update_ms &&
        window_span(s) >= s->min_window_s && !atomic_load(&s->stop)) {
        s->next_update_ms = now + s->update_s * 1000.0;
        s->fresh = 0;
        for (int i = 0; i < s->nq && !atomic_load(&s->stop); i++) {
            err[0] = 0;
            if ((rc = answer_question(s, i, err, sizeof err)) < 0 && rc != VG_ECANCELED)
                vg_log(VG_LOG_WARNING, MOD, "stream %s: question %d: %s", s->name, i,
                       err[0] ? err : vg_strerror(rc));
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
