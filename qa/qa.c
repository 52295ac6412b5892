/*
 * qa.c: the video-QA session: a KV cache laid out by the pipeline's prompt builder, the temporal
 * pairs it holds, questions asked about them, answers parsed into events (qa.h).
 *
 * Layout of the cache: [head] [pair 1] ... [pair k], a question and its answer appended while it is
 * asked and cut off afterwards. Each piece is taken from the one prompt builder (pipeline/prompt.c)
 * as a chunk with its ids and MRoPE positions; chunks wait in `staged` until a sync or an ask
 * prefills all of them in one vg_seq_prefill call (so a clip job prefills its whole prompt at once,
 * exactly as a single prompt would be, and a live stream prefills each pair as it arrives).
 *
 * Invariants: the builder has handed out exactly the tokens in the cache plus the staged ones
 * (after an eviction it is told the cache's new length); pairs[] holds the pairs in cache order,
 * the staged ones last; a pair's n_kv is its exact token count (its chunk). A failed prefill leaves
 * the cache as it was before that call and drops the staged pairs.
 *
 * Runs on the calling thread (the session's owner); nothing here is shared.
 */
#include "qa.h"

#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct qa_pair {
    vg_vision_out *vo;
    double seconds; /* the caller's time of the pair */
    int mh, mw;
    size_t n_kv;   /* tokens of its chunk */
    vg_prompt *ch; /* its chunk while staged, else NULL */
} qa_pair;

struct vg_qa {
    vg_model *model;
    const vg_model_info *mi;
    vg_seq *seq;
    vg_prompt_builder *pb;
    float *logits;
    vg_prompt *head; /* staged head chunk, until the first prefill */
    size_t head_len;
    int32_t head_next_pos;
    qa_pair *pairs;
    size_t n_pairs, cap_pairs, n_staged;
    size_t max_tokens;
    double base;
};

static int tokenize_cb(void *opaque, const char *text, size_t len, int32_t **ids, size_t *n)
{
    return vg_tokenizer_encode(opaque, text, len, 0, ids, n);
}

/* The special tokens of the chat template, as the model's config names them. */
static vg_prompt_ids prompt_ids(const vg_model_info *mi)
{
    vg_prompt_ids ids = {mi->im_start_id, mi->im_end_id, mi->vision_start_token_id,
                         mi->vision_end_token_id, mi->video_token_id};
    return ids;
}

void vg_qa_answer_clear(vg_qa_answer *a)
{
    if (!a)
        return;
    free(a->text);
    free(a->events);
    memset(a, 0, sizeof *a);
}

static void pair_release(qa_pair *p)
{
    vg_vision_out_free(p->vo);
    vg_prompt_free(p->ch);
    memset(p, 0, sizeof *p);
}

void vg_qa_free(vg_qa *q)
{
    if (!q)
        return;
    for (size_t i = 0; i < q->n_pairs; i++)
        pair_release(&q->pairs[i]);
    free(q->pairs);
    vg_prompt_free(q->head);
    vg_prompt_builder_free(q->pb);
    vg_seq_free(q->seq);
    free(q->logits);
    free(q);
}

int vg_qa_create(vg_model *m, const vg_qa_params *p, vg_qa **out, char *err, size_t errlen)
{
    if (!m || !p || !out || p->max_tokens == 0)
        return vg_fail(err, errlen, VG_EINVAL, "vg_qa_create needs a model and max_tokens.");
    vg_qa *q = calloc(1, sizeof *q);
    if (!q)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for a session.");
    q->model = m;
    q->mi = vg_model_get_info(m);
    q->max_tokens = p->max_tokens;
    const vg_model_info *mi = q->mi;
    vg_prompt_ids ids = prompt_ids(mi);
    int rc = vg_prompt_builder_create(&ids, tokenize_cb, (void *)vg_model_tokenizer(m), &q->pb);
    q->logits = malloc((size_t)mi->vocab_size * sizeof(float));
    if (rc < 0 || !q->logits) {
        vg_qa_free(q);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for a session.");
    }
    if ((rc = vg_seq_create(m, p->max_tokens, &q->seq, err, errlen)) < 0) {
        vg_qa_free(q);
        return rc;
    }
    /* The head ends in "user\n": a pre-tokenizer boundary, so taking it alone gives the same ids
     * as the reference's whole prompt. */
    vg_chat chat = {p->system, NULL, NULL};
    if ((rc = vg_prompt_add_head(q->pb, &chat, err, errlen)) < 0 ||
        (rc = vg_prompt_builder_take(q->pb, &q->head, err, errlen)) < 0) {
        vg_qa_free(q);
        return rc;
    }
    q->head_len = q->head->n;
    q->head_next_pos = vg_prompt_builder_next_pos(q->pb);
    *out = q;
    return 0;
}

size_t vg_qa_n_pairs(const vg_qa *q)
{
    return q->n_pairs;
}

double vg_qa_pair_seconds(const vg_qa *q, size_t i)
{
    return i < q->n_pairs ? q->pairs[i].seconds : NAN;
}

double vg_qa_base(const vg_qa *q)
{
    return q->base;
}

size_t vg_qa_cached_tokens(const vg_qa *q)
{
    return vg_seq_len(q->seq);
}

int32_t vg_qa_next_pos(const vg_qa *q)
{
    return vg_prompt_builder_next_pos(q->pb);
}

/* Tokens staged but not yet prefilled. */
static size_t staged_tokens(const vg_qa *q)
{
    size_t n = q->head ? q->head->n : 0;
    for (size_t i = q->n_pairs - q->n_staged; i < q->n_pairs; i++)
        n += q->pairs[i].ch->n;
    return n;
}

size_t vg_qa_free_tokens(const vg_qa *q)
{
    size_t used = vg_seq_len(q->seq) + staged_tokens(q);
    return used < q->max_tokens ? q->max_tokens - used : 0;
}

/* A timestamp's text is a few tokens: "<", digits, ".", a digit, " seconds", ">". */
#define TS_TOKENS_MAX 48

size_t vg_qa_pair_tokens(int merged_h, int merged_w)
{
    return (size_t)merged_h * (size_t)merged_w + 2 + TS_TOKENS_MAX;
}

int vg_qa_question_tokens(vg_model *m, const char *question, size_t *n, char *err, size_t errlen)
{
    /* A scratch builder: a session's own must not move. */
    const vg_model_info *mi = vg_model_get_info(m);
    vg_prompt_ids ids = prompt_ids(mi);
    vg_prompt_builder *b = NULL;
    vg_prompt *pr = NULL;
    int rc = vg_prompt_builder_create(&ids, tokenize_cb, (void *)vg_model_tokenizer(m), &b);
    if (rc < 0)
        return vg_fail(err, errlen, rc, "out of memory.");
    if ((rc = vg_prompt_add_tail(b, question, err, errlen)) == 0 &&
        (rc = vg_prompt_builder_take(b, &pr, err, errlen)) == 0)
        *n = pr->n;
    vg_prompt_free(pr);
    vg_prompt_builder_free(b);
    return rc;
}

/* Room for one more pair. */
static int grow_pairs(vg_qa *q)
{
    if (q->n_pairs < q->cap_pairs)
        return 0;
    size_t nc = q->cap_pairs ? 2 * q->cap_pairs : 16;
    qa_pair *np = realloc(q->pairs, nc * sizeof *np);
    if (!np)
        return VG_ENOMEM;
    q->pairs = np;
    q->cap_pairs = nc;
    return 0;
}

int vg_qa_append_pair(vg_qa *q, vg_vision_out *vo, int merged_h, int merged_w, double seconds,
                      char *err, size_t errlen)
{
    if (!q || !vo) {
        vg_vision_out_free(vo);
        return vg_fail(err, errlen, VG_EINVAL, "vg_qa_append_pair needs a session and a pair.");
    }
    if (merged_h <= 0 || merged_w <= 0 || vo->n_tokens != merged_h * merged_w ||
        vo->dim != q->mi->out_hidden_size) {
        int nt = vo->n_tokens;
        vg_vision_out_free(vo);
        return vg_fail(err, errlen, VG_EINVAL,
                       "the encoder gave %d tokens for a %dx%d merged grid.", nt, merged_h,
                       merged_w);
    }
    if ((size_t)merged_h * merged_w + 2 > vg_qa_free_tokens(q)) {
        vg_vision_out_free(vo);
        return vg_fail(err, errlen, VG_ELIMIT, "the session's %zu tokens are full.", q->max_tokens);
    }
    if (grow_pairs(q) < 0) {
        vg_vision_out_free(vo);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    }
    qa_pair *p = &q->pairs[q->n_pairs];
    memset(p, 0, sizeof *p);
    p->vo = vo;
    p->seconds = seconds;
    p->mh = merged_h;
    p->mw = merged_w;
    int32_t undo = vg_prompt_builder_next_pos(q->pb);
    int rc = vg_prompt_add_pair(q->pb, seconds - q->base, merged_h, merged_w, err, errlen);
    if (rc == 0)
        rc = vg_prompt_builder_take(q->pb, &p->ch, err, errlen);
    if (rc == 0 && p->ch->n > vg_qa_free_tokens(q))
        rc = vg_fail(err, errlen, VG_ELIMIT, "the session's %zu tokens are full.", q->max_tokens);
    if (rc < 0) {
        pair_release(p);
        vg_prompt_builder_rewind(q->pb, undo, vg_seq_len(q->seq) + staged_tokens(q));
        return rc;
    }
    p->n_kv = p->ch->n;
    q->n_pairs++;
    q->n_staged++;
    return 0;
}

/* Drops the staged pairs and tells the builder what the cache holds. */
static void drop_staged(vg_qa *q, int32_t next_pos)
{
    while (q->n_staged > 0) {
        pair_release(&q->pairs[--q->n_pairs]);
        q->n_staged--;
    }
    vg_prompt_builder_rewind(q->pb, next_pos, vg_seq_len(q->seq) + (q->head ? q->head->n : 0));
}

/* Prefills the staged head and pairs, then extra (a question; may be NULL), in one call. logits
 * (optional) gets the last token's. */
static int prefill_staged(vg_qa *q, const vg_prompt *extra, float *logits, const atomic_int *cancel,
                          char *err, size_t errlen)
{
    size_t first = q->n_pairs - q->n_staged;
    const vg_prompt *chunks[1 + 1024];
    size_t nch = 0, n = 0, n_vis = 0;
    if (q->head)
        chunks[nch++] = q->head;
    int one_pair = q->n_staged == 1;
    for (size_t i = first; i < q->n_pairs; i++) {
        if (nch >= VG_ARRAY_LEN(chunks) - 1)
            return vg_fail(err, errlen, VG_ELIMIT, "more than 1,022 pairs staged at once.");
        chunks[nch++] = q->pairs[i].ch;
        n_vis += (size_t)q->pairs[i].vo->n_tokens;
    }
    if (extra)
        chunks[nch++] = extra;
    for (size_t c = 0; c < nch; c++)
        n += chunks[c]->n;
    if (n == 0)
        return 0;
    int32_t *ids = malloc(n * sizeof *ids), *pos = malloc(3 * n * sizeof *pos);
    float *emb = NULL, *deep = NULL;
    int rc = 0;
    if (!ids || !pos) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory for the prompt.");
        goto out;
    }
    size_t at = 0;
    for (size_t c = 0; c < nch; c++) {
        const vg_prompt *ch = chunks[c];
        memcpy(ids + at, ch->ids, ch->n * sizeof *ids);
        for (int r = 0; r < 3; r++)
            memcpy(pos + (size_t)r * n + at, ch->pos + (size_t)r * ch->n, ch->n * sizeof *pos);
        at += ch->n;
    }
    /* Visual rows: one pair's are used in place; several are laid end to end. */
    const float *vis = NULL, *vis_ds = NULL;
    if (n_vis > 0 && one_pair) {
        vis = q->pairs[first].vo->embeds;
        vis_ds = q->pairs[first].vo->deepstack;
    } else if (n_vis > 0) {
        int dim = q->mi->out_hidden_size, n_ds = q->pairs[first].vo->n_deepstack;
        size_t bytes;
        if (vg_mul_size(n_vis * (size_t)dim, sizeof(float), &bytes) < 0) {
            rc = vg_fail(err, errlen, VG_ERANGE, "the video is too large.");
            goto out;
        }
        emb = malloc(bytes);
        deep = n_ds > 0 ? malloc(bytes * (size_t)n_ds) : NULL;
        if (!emb || (n_ds > 0 && !deep)) {
            rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory for the visual features.");
            goto out;
        }
        size_t off = 0;
        for (size_t i = first; i < q->n_pairs; i++) {
            const vg_vision_out *vo = q->pairs[i].vo;
            size_t rows = (size_t)vo->n_tokens * (size_t)dim;
            memcpy(emb + off, vo->embeds, rows * sizeof(float));
            for (int k = 0; k < n_ds && k < vo->n_deepstack; k++)
                memcpy(deep + (size_t)k * n_vis * dim + off, vo->deepstack + (size_t)k * rows,
                       rows * sizeof(float));
            off += rows;
        }
        vis = emb;
        vis_ds = deep;
    }
    size_t before = vg_seq_len(q->seq);
    vg_prefill_input in = {ids, n, pos, vis, vis_ds, n_vis};
    rc = vg_seq_prefill(q->seq, &in, logits, 0, cancel, err, errlen);
    if (rc < 0) {
        vg_seq_truncate(q->seq, before);
        goto out;
    }
    vg_prompt_free(q->head);
    q->head = NULL;
    for (size_t i = first; i < q->n_pairs; i++) {
        vg_prompt_free(q->pairs[i].ch);
        q->pairs[i].ch = NULL;
    }
    q->n_staged = 0;
out:
    free(ids);
    free(pos);
    free(emb);
    free(deep);
    return rc;
}

int vg_qa_sync(vg_qa *q, const atomic_int *cancel, char *err, size_t errlen)
{
    int32_t undo = vg_prompt_builder_next_pos(q->pb);
    if (q->n_staged > 0)
        undo = q->pairs[q->n_pairs - q->n_staged].ch->pos[0];
    int rc = prefill_staged(q, NULL, NULL, cancel, err, errlen);
    if (rc < 0)
        drop_staged(q, undo);
    return rc;
}

int vg_qa_evict_oldest(vg_qa *q)
{
    if (!q || q->n_pairs == 0 || q->n_staged > 0 || q->head)
        return VG_EINVAL;
    int rc = vg_seq_remove(q->seq, q->head_len, q->pairs[0].n_kv);
    if (rc < 0)
        return rc;
    pair_release(&q->pairs[0]);
    memmove(q->pairs, q->pairs + 1, (q->n_pairs - 1) * sizeof *q->pairs);
    q->n_pairs--;
    vg_prompt_builder_rewind(q->pb, vg_prompt_builder_next_pos(q->pb), vg_seq_len(q->seq));
    return 0;
}

int vg_qa_bench_fill(vg_qa *q, size_t n_pairs, int merged_h, int merged_w, double t0, double dt,
                     uint64_t seed, char *err, size_t errlen)
{
    if (!q || q->n_pairs > 0 || merged_h <= 0 || merged_w <= 0)
        return vg_fail(err, errlen, VG_EINVAL, "vg_qa_bench_fill needs an empty session.");
    int rc = vg_qa_sync(q, NULL, err, errlen); /* the head, for real */
    for (size_t i = 0; rc == 0 && i < n_pairs; i++) {
        if (grow_pairs(q) < 0)
            return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
        qa_pair *p = &q->pairs[q->n_pairs];
        memset(p, 0, sizeof *p);
        p->seconds = t0 + (double)i * dt;
        p->mh = merged_h;
        p->mw = merged_w;
        vg_prompt *ch = NULL;
        rc = vg_prompt_add_pair(q->pb, p->seconds - q->base, merged_h, merged_w, err, errlen);
        if (rc == 0)
            rc = vg_prompt_builder_take(q->pb, &ch, err, errlen);
        if (rc == 0) {
            p->n_kv = ch->n;
            q->n_pairs++;
        }
        vg_prompt_free(ch);
    }
    size_t n = q->head_len;
    for (size_t i = 0; i < q->n_pairs; i++)
        n += q->pairs[i].n_kv;
    if (rc == 0 && vg_seq_fill_random(q->seq, n, seed) < 0)
        rc = vg_fail(err, errlen, VG_ELIMIT, "%zu tokens do not fit in the session.", n);
    return rc;
}

int vg_qa_rebase(vg_qa *q, double base, const atomic_int *cancel, char *err, size_t errlen)
{
    for (size_t i = 0; i < q->n_pairs; i++)
        if (!q->pairs[i].vo)
            return vg_fail(err, errlen, VG_ENOTSUP, "a benchmark window cannot be rebased.");
    if (q->head) { /* nothing prefilled yet: the head is staged, so are the pairs */
        q->base = base;
    } else {
        vg_seq_truncate(q->seq, q->head_len);
        q->base = base;
    }
    vg_prompt_builder_rewind(q->pb, q->head_next_pos, q->head_len);
    int rc = 0;
    for (size_t i = 0; i < q->n_pairs && rc == 0; i++) {
        qa_pair *p = &q->pairs[i];
        vg_prompt_free(p->ch);
        p->ch = NULL;
        rc = vg_prompt_add_pair(q->pb, p->seconds - base, p->mh, p->mw, err, errlen);
        if (rc == 0)
            rc = vg_prompt_builder_take(q->pb, &p->ch, err, errlen);
        if (rc == 0)
            p->n_kv = p->ch->n;
    }
    q->n_staged = q->n_pairs;
    if (rc == 0)
        rc = prefill_staged(q, NULL, NULL, cancel, err, errlen);
    if (rc < 0) {
        /* Start again from the head: no pair is held. */
        for (size_t i = 0; i < q->n_pairs; i++)
            pair_release(&q->pairs[i]);
        q->n_pairs = q->n_staged = 0;
        vg_prompt_builder_rewind(q->pb, q->head_next_pos, q->head_len);
    }
    return rc;
}

/* ---- asking ---- */

typedef struct ask_ctx {
    const vg_qa_ask_params *p;
    char *text;
    size_t len, cap;
    int full; /* answer_max reached: later pieces are dropped, not spliced in */
    int failed;
    /* The answer's score (vg_qa_answer.score): the tokens before its first digit state presence,
     * the tokens holding a digit state times. */
    int seen_digit;
    double lp_sum;
    int lp_n;
} ask_ctx;

/* Appends a piece, whole UTF-8 sequences only once answer_max is reached. */
static void keep_piece(ask_ctx *a, const char *s, size_t len)
{
    if (a->full || a->failed || len == 0)
        return;
    size_t k = len;
    if (a->p->answer_max) {
        size_t room = a->p->answer_max > a->len + 1 ? a->p->answer_max - 1 - a->len : 0;
        if (k > room) {
            k = room;
            a->full = 1;
            while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
                k--;
        }
    }
    if (a->len + k + 1 > a->cap) {
        size_t nc = VG_MAX(a->len + k + 1, 2 * a->cap + 256);
        char *t = realloc(a->text, nc);
        if (!t) {
            a->failed = 1;
            return;
        }
        a->text = t;
        a->cap = nc;
    }
    memcpy(a->text + a->len, s, k);
    a->len += k;
    a->text[a->len] = 0;
}

static int on_token(int32_t id, const char *raw, size_t len, float logprob, void *opaque)
{
    (void)id;
    ask_ctx *a = opaque;
    int digit = 0;
    for (size_t i = 0; i < len && !digit; i++)
        digit = raw[i] >= '0' && raw[i] <= '9';
    if (len > 0 && (digit || !a->seen_digit) && isfinite(logprob)) {
        a->lp_sum += logprob;
        a->lp_n++;
    }
    a->seen_digit |= digit;
    /* Answers are C strings (JSON, journals): a generated U+0000 becomes U+FFFD. Pieces from
     * vg_generate are under 512 bytes, so buf always holds the copy. */
    char buf[3 * 512 + 1];
    const char *text = raw;
    if (memchr(raw, 0, len) && len <= 512) {
        len = vg_utf8_sanitize(raw, len, buf, sizeof buf);
        text = buf;
    }
    keep_piece(a, text, len);
    int stop = a->p->on_piece ? a->p->on_piece(text, len, a->p->opaque) : 0;
    return stop || (a->p->cancel && atomic_load(a->p->cancel) != 0);
}

int vg_qa_ask(vg_qa *q, const char *question, const vg_qa_ask_params *p, vg_qa_answer *out,
              char *err, size_t errlen)
{
    if (!q || !p || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_qa_ask needs a session, params and *out.");
    int32_t undo = q->n_staged > 0 ? q->pairs[q->n_pairs - q->n_staged].ch->pos[0]
                                   : vg_prompt_builder_next_pos(q->pb);
    int32_t window_pos = vg_prompt_builder_next_pos(q->pb); /* after the staged pairs */
    vg_prompt *qs = NULL;
    int rc = vg_prompt_add_tail(q->pb, question, err, errlen);
    if (rc == 0)
        rc = vg_prompt_builder_take(q->pb, &qs, err, errlen);
    if (rc == 0 && qs->n + (size_t)VG_MAX(p->gen.max_new_tokens, 0) > vg_qa_free_tokens(q) + 0)
        rc = vg_fail(err, errlen, VG_ELIMIT,
                     "the question (%zu tokens) and %d answer tokens do not fit in the session's "
                     "%zu free tokens.",
                     qs->n, p->gen.max_new_tokens, vg_qa_free_tokens(q));
    if (rc < 0) {
        vg_prompt_free(qs);
        vg_prompt_builder_rewind(q->pb, window_pos, vg_seq_len(q->seq) + staged_tokens(q));
        return rc;
    }
    size_t window_len = vg_seq_len(q->seq) + staged_tokens(q);
    if (p->on_stage)
        p->on_stage("prefill", p->opaque);
    double t0 = vg_now_ms();
    rc = prefill_staged(q, qs, q->logits, p->cancel, err, errlen);
    double prefill_ms = vg_now_ms() - t0;
    vg_prompt_free(qs);
    if (rc < 0) {
        drop_staged(q, undo);
        return rc;
    }
    ask_ctx a = {p, NULL, 0, 0, 0, 0, 0, 0.0, 0};
    int32_t *gen_ids = NULL;
    size_t n_gen = 0;
    size_t prompt_tokens = vg_seq_len(q->seq);
    int32_t rope_delta = vg_prompt_builder_next_pos(q->pb) - (int32_t)prompt_tokens;
    if (p->on_stage)
        p->on_stage("generate", p->opaque);
    t0 = vg_now_ms();
    rc = vg_generate_lp(q->seq, &p->gen, q->logits, rope_delta, on_token, &a, p->cancel, &gen_ids,
                        &n_gen, err, errlen);
    double generate_ms = vg_now_ms() - t0;
    free(gen_ids);
    /* Roll the question and the answer back: the window stays for the next question. */
    vg_seq_truncate(q->seq, window_len);
    vg_prompt_builder_rewind(q->pb, window_pos, window_len);
    if (rc == 0 && p->cancel && atomic_load(p->cancel))
        rc = vg_fail(err, errlen, VG_ECANCELED, "cancelled.");
    if (rc == 0 && a.failed)
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory for the answer.");
    if (rc < 0) {
        free(a.text);
        return rc;
    }
    if (!a.text && !(a.text = calloc(1, 1)))
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for the answer.");
    memset(out, 0, sizeof *out);
    out->text = a.text;
    out->len = a.len;
    if (vg_answer_parse(a.text, &out->events, &out->n_events) < 0) {
        out->events = NULL;
        out->n_events = 0;
    }
    for (size_t i = 0; i < out->n_events; i++) {
        out->events[i].start += q->base;
        out->events[i].end += q->base;
    }
    out->n_tokens = (int)n_gen;
    out->score = a.lp_n > 0 ? a.lp_sum / a.lp_n : 0.0;
    out->score_tokens = a.lp_n;
    out->prompt_tokens = prompt_tokens;
    out->prefill_ms = prefill_ms;
    out->generate_ms = generate_ms;
    return 0;
}

/* ---- the whole call ---- */

int vg_qa_encode_video(vg_model *m, const float *patches, int grid_t, int grid_h, int grid_w,
                       size_t cols, const atomic_int *cancel,
                       void (*progress)(double fraction, void *opaque), void *opaque,
                       vg_vision_out ***out, char *err, size_t errlen)
{
    if (!m || !patches || grid_t <= 0 || grid_h <= 0 || grid_w <= 0 || !out)
        return vg_fail(err, errlen, VG_EINVAL, "vg_qa_encode_video: invalid arguments.");
    vg_vision_out **vo = calloc((size_t)grid_t, sizeof *vo);
    if (!vo)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
    size_t slice = (size_t)grid_h * (size_t)grid_w * cols;
    for (int t = 0; t < grid_t; t++) {
        int rc = vg_model_encode_slice(m, patches + (size_t)t * slice, grid_h, grid_w, cancel,
                                       &vo[t], err, errlen);
        if (rc < 0) {
            for (int k = 0; k < t; k++)
                vg_vision_out_free(vo[k]);
            free(vo);
            return rc;
        }
        if (progress)
            progress((double)(t + 1) / grid_t, opaque);
    }
    *out = vo;
    return 0;
}

int vg_qa_run(vg_model *m, const char *system, vg_vision_out **pairs, const double *pair_times,
              int n_pairs, int merged_h, int merged_w, const char *question,
              const vg_qa_ask_params *p, vg_qa_answer *out, char *err, size_t errlen)
{
    int rc = 0, k = 0;
    vg_qa *q = NULL;
    if (!m || !pairs || !pair_times || n_pairs <= 0 || !p || !out) {
        rc = vg_fail(err, errlen, VG_EINVAL, "vg_qa_run: invalid arguments.");
        goto out;
    }
    /* Room, exactly: the whole prompt (counted by building it once) and the answer. */
    const vg_model_info *mi = vg_model_get_info(m);
    vg_prompt_ids ids = prompt_ids(mi);
    vg_chat chat = {system, NULL, question};
    vg_prompt_video video = {pair_times, n_pairs, merged_h, merged_w, 1};
    vg_prompt *whole = NULL;
    if ((rc = vg_prompt_build(&chat, &video, &ids, tokenize_cb, (void *)vg_model_tokenizer(m),
                              &whole, err, errlen)) < 0)
        goto out;
    vg_qa_params qp = {whole->n + (size_t)VG_MAX(p->gen.max_new_tokens, 0) + 1, system};
    vg_prompt_free(whole);
    if ((rc = vg_qa_create(m, &qp, &q, err, errlen)) < 0)
        goto out;
    for (; k < n_pairs; k++) {
        vg_vision_out *vo = pairs[k];
        pairs[k] = NULL;
        if ((rc = vg_qa_append_pair(q, vo, merged_h, merged_w, pair_times[k], err, errlen)) < 0)
            goto out;
    }
    rc = vg_qa_ask(q, question, p, out, err, errlen);
out:
    if (pairs)
        for (int i = 0; i < n_pairs; i++) {
            vg_vision_out_free(pairs[i]);
            pairs[i] = NULL;
        }
    vg_qa_free(q);
    return rc;
}

/* ---- sampling ---- */

vg_sample_params vg_qa_sample_params(const vg_model_info *mi)
{
    vg_sample_params p = vg_sample_default_params();
    if (!mi)
        return p;
    if (mi->video_fps > 0)
        p.fps = mi->video_fps;
    if (mi->video_min_frames > 0)
        p.min_frames = mi->video_min_frames;
    if (mi->video_max_frames > 0)
        p.max_frames = mi->video_max_frames;
    if (mi->video_min_pixels > 0)
        p.min_pixels = mi->video_min_pixels;
    if (mi->video_max_pixels > 0)
        p.max_pixels = mi->video_max_pixels;
    if (mi->patch_size > 0 && mi->spatial_merge_size > 0)
        p.factor = mi->patch_size * mi->spatial_merge_size;
    if (mi->temporal_patch_size > 0)
        p.temporal_patch = mi->temporal_patch_size;
    return p;
}

#define STREAM_DEFAULT_PIXELS (256L * 32 * 32)

long vg_qa_stream_max_pixels(const vg_model_info *mi, long ceiling)
{
    vg_sample_params p = vg_qa_sample_params(mi);
    long v = STREAM_DEFAULT_PIXELS;
    if (mi && mi->video_max_pixels > 0 && p.max_pixels < v)
        v = p.max_pixels;
    if (ceiling > 0 && v > ceiling)
        v = ceiling;
    return v;
}

long vg_qa_stream_min_pixels(const vg_model_info *mi, long max_pixels)
{
    long v = vg_qa_sample_params(mi).min_pixels;
    return v > max_pixels ? max_pixels : v;
}

/* ---- events as JSON ---- */

double vg_qa_round_ms(double seconds)
{
    return round(seconds * 1000.0) / 1000.0;
}

void vg_qa_iso_utc(double t, char *out, size_t cap)
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

int vg_qa_event_json(cJSON *o, const vg_event *ev, const vg_qa_event_time *t)
{
    char iso[64];
    int ok = cJSON_AddNumberToObject(o, "start", vg_qa_round_ms(ev->start)) != NULL;
    if (t->has_end)
        ok &= cJSON_AddNumberToObject(o, "end", vg_qa_round_ms(ev->end)) != NULL;
    ok &= cJSON_AddStringToObject(o, "label", ev->label) != NULL;
    ok &= cJSON_AddStringToObject(o, "origin", t->origin) != NULL;
    if (isfinite(t->start_wall)) {
        vg_qa_iso_utc(t->start_wall, iso, sizeof iso);
        ok &= cJSON_AddStringToObject(o, "start_wall", iso) != NULL;
    }
    if (t->has_end && isfinite(t->end_wall)) {
        vg_qa_iso_utc(t->end_wall, iso, sizeof iso);
        ok &= cJSON_AddStringToObject(o, "end_wall", iso) != NULL;
    }
    return ok ? 0 : VG_ENOMEM;
}

cJSON *vg_qa_events_json(const vg_event *ev, size_t n, const char *origin)
{
    cJSON *arr = cJSON_CreateArray();
    vg_qa_event_time t = {origin, NAN, NAN, 1};
    for (size_t i = 0; arr && i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e || vg_qa_event_json(e, &ev[i], &t) < 0 || !cJSON_AddItemToArray(arr, e)) {
            cJSON_Delete(e);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}
