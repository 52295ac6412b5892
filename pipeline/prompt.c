/*
 * prompt.c: the Qwen3-VL Instruct prompt for one video question (spec §2) and its MRoPE positions
 * (spec §5.1).
 *
 * Layout: [<|im_start|>system\n{system}<|im_end|>\n] <|im_start|>user\n{text_before} then for each
 * temporal pair "<t.t seconds>" <|vision_start|> {tokens_per_pair x <|video_pad|>} <|vision_end|>,
 * then {text_after}<|im_end|>\n<|im_start|>assistant\n.
 *
 * Tokenization follows Hugging Face's: special tokens are matched first, and every maximal run of
 * plain text between two of them (e.g. "user\nWhat...<0.3 seconds>") is handed to the tokenizer
 * callback as one string with no special-token parsing, so user text can never smuggle in a control
 * token. The special tokens themselves come from the caller's id table.
 *
 * Positions: text tokens get (p, p, p) with p running; each slice of pads is its own segment whose
 * pads get (base, base + row, base + col) over the merged grid, after which p = base + max(gh',
 * gw'). rope_delta = max position + 1 - length. Pure functions: any thread may call them.
 */
#include "pipeline.h"

#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct builder {
    int32_t *ids;
    size_t n, cap;
    char *text;
    size_t tlen, tcap;
    char *run; /* pending plain text since the last special token */
    size_t rlen, rcap;
    vg_tokenize_fn tokenize;
    void *opaque;
    int failed;
} builder;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem)
            return VG_ENOMEM;
        nc *= 2;
    }
    void *q = realloc(*p, nc * elem);
    if (!q)
        return VG_ENOMEM;
    *p = q;
    *cap = nc;
    return 0;
}

static int push_id(builder *b, int32_t id)
{
    if (grow((void **)&b->ids, &b->cap, b->n + 1, sizeof *b->ids))
        return VG_ENOMEM;
    b->ids[b->n++] = id;
    return 0;
}

static int push_display(builder *b, const char *s, size_t len)
{
    if (grow((void **)&b->text, &b->tcap, b->tlen + len + 1, 1))
        return VG_ENOMEM;
    memcpy(b->text + b->tlen, s, len);
    b->tlen += len;
    b->text[b->tlen] = 0;
    return 0;
}

/* Plain text: joins the pending run and the display text. */
static int add_text(builder *b, const char *s)
{
    size_t len = strlen(s);
    if (grow((void **)&b->run, &b->rcap, b->rlen + len + 1, 1))
        return VG_ENOMEM;
    memcpy(b->run + b->rlen, s, len);
    b->rlen += len;
    b->run[b->rlen] = 0;
    return push_display(b, s, len);
}

/* Tokenizes the pending run as one string. */
static int flush_run(builder *b, char *err, size_t errlen)
{
    if (b->rlen == 0)
        return 0;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = b->tokenize(b->opaque, b->run, b->rlen, &ids, &n);
    if (rc) {
        free(ids);
        return vg_fail(err, errlen, rc < 0 ? rc : VG_EINVAL,
                       "the tokenizer rejected a %zu-byte text segment of the prompt (%s).",
                       b->rlen, vg_strerror(rc < 0 ? rc : VG_EINVAL));
    }
    if (n && !ids)
        return vg_fail(err, errlen, VG_EINVAL, "the tokenizer returned no ids.");
    if (grow((void **)&b->ids, &b->cap, b->n + n, sizeof *b->ids)) {
        free(ids);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for the prompt.");
    }
    if (n)
        memcpy(b->ids + b->n, ids, n * sizeof *ids);
    b->n += n;
    free(ids);
    b->rlen = 0;
    return 0;
}

static int add_special(builder *b, int32_t id, const char *literal, char *err, size_t errlen)
{
    int rc = flush_run(b, err, errlen);
    if (rc)
        return rc;
    if (push_id(b, id) || push_display(b, literal, strlen(literal)))
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for the prompt.");
    return 0;
}

int vg_prompt_positions(const int32_t *ids, size_t n, int32_t video_pad, int merged_h, int merged_w,
                        int32_t *pos, int32_t *rope_delta, char *err, size_t errlen)
{
    if (!ids || !pos || !rope_delta || merged_h <= 0 || merged_w <= 0)
        return vg_fail(err, errlen, VG_EINVAL, "vg_prompt_positions: invalid arguments.");
    if (n > (size_t)INT32_MAX / 2)
        return vg_fail(err, errlen, VG_ERANGE, "a prompt of %zu tokens is too long.", n);
    size_t per = (size_t)merged_h * (size_t)merged_w;
    int64_t next = 0, maxp = -1;
    int32_t *pt = pos, *ph = pos + n, *pw = pos + 2 * n;
    size_t i = 0;
    while (i < n) {
        if (ids[i] != video_pad) {
            pt[i] = ph[i] = pw[i] = (int32_t)next;
            if (next > maxp)
                maxp = next;
            next++;
            i++;
            continue;
        }
        size_t run = 0;
        while (i + run < n && ids[i + run] == video_pad)
            run++;
        if (run != per)
            return vg_fail(err, errlen, VG_EINVAL,
                           "a run of %zu video pads at token %zu does not match the %dx%d merged "
                           "grid of a slice (%zu pads).",
                           run, i, merged_h, merged_w, per);
        for (size_t j = 0; j < per; j++) {
            int64_t row = (int64_t)(j / (size_t)merged_w), col = (int64_t)(j % (size_t)merged_w);
            pt[i + j] = (int32_t)next;
            ph[i + j] = (int32_t)(next + row);
            pw[i + j] = (int32_t)(next + col);
        }
        int64_t span = merged_h > merged_w ? merged_h : merged_w;
        if (next + span - 1 > maxp)
            maxp = next + span - 1;
        next += span;
        i += run;
    }
    *rope_delta = (int32_t)(maxp + 1 - (int64_t)n);
    return 0;
}

void vg_prompt_free(vg_prompt *p)
{
    if (!p)
        return;
    free(p->ids);
    free(p->pos);
    free(p->text);
    free(p);
}

int vg_prompt_build(const vg_chat *chat, const vg_plan *plan, int merge, const vg_prompt_ids *sp,
                    vg_tokenize_fn tokenize, void *opaque, vg_prompt **out, char *err,
                    size_t errlen)
{
    if (!plan || !sp || !tokenize || !out)
        return vg_fail(err, errlen, VG_EINVAL,
                       "vg_prompt_build needs a plan, the special ids, a tokenizer and an output.");
    if (merge <= 0 || plan->n_pairs <= 0 || plan->grid_h <= 0 || plan->grid_w <= 0 ||
        plan->grid_h % merge || plan->grid_w % merge || !plan->pair_strings)
        return vg_fail(err, errlen, VG_EINVAL,
                       "the plan's grid %dx%d (%d pairs) cannot be merged %dx%d.", plan->grid_h,
                       plan->grid_w, plan->n_pairs, merge, merge);
    int mh = plan->grid_h / merge, mw = plan->grid_w / merge;
    size_t per = (size_t)mh * (size_t)mw;
    if (per > (1u << 20) || (size_t)plan->n_pairs * per > ((size_t)1 << 28))
        return vg_fail(err, errlen, VG_ELIMIT, "%d pairs of %zu video tokens are too many.",
                       plan->n_pairs, per);

    builder b;
    memset(&b, 0, sizeof b);
    b.tokenize = tokenize;
    b.opaque = opaque;
    int rc = 0;
    char errbuf[256];
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)) != 0)                                                                       \
            goto fail;                                                                             \
    } while (0)
#define TEXT(s) TRY(add_text(&b, (s)) ? vg_fail(err, errlen, VG_ENOMEM, "out of memory.") : 0)

    const vg_chat empty = {0};
    if (!chat)
        chat = &empty;
    if (chat->system) {
        TRY(add_special(&b, sp->im_start, "<|im_start|>", err, errlen));
        TEXT("system\n");
        TEXT(chat->system);
        TRY(add_special(&b, sp->im_end, "<|im_end|>", err, errlen));
        TEXT("\n");
    }
    TRY(add_special(&b, sp->im_start, "<|im_start|>", err, errlen));
    TEXT("user\n");
    if (chat->text_before)
        TEXT(chat->text_before);
    for (int k = 0; k < plan->n_pairs; k++) {
        char ts[sizeof plan->pair_strings[0] + 1];
        snprintf(ts, sizeof ts, "%.*s", (int)sizeof plan->pair_strings[0], plan->pair_strings[k]);
        TEXT(ts);
        TRY(add_special(&b, sp->vision_start, "<|vision_start|>", err, errlen));
        if (grow((void **)&b.ids, &b.cap, b.n + per, sizeof *b.ids)) {
            rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory for the video tokens.");
            goto fail;
        }
        for (size_t j = 0; j < per; j++) {
            b.ids[b.n++] = sp->video_pad;
            if (push_display(&b, "<|video_pad|>", 13)) {
                rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory.");
                goto fail;
            }
        }
        TRY(add_special(&b, sp->vision_end, "<|vision_end|>", err, errlen));
    }
    if (chat->text_after)
        TEXT(chat->text_after);
    TRY(add_special(&b, sp->im_end, "<|im_end|>", err, errlen));
    TEXT("\n");
    TRY(add_special(&b, sp->im_start, "<|im_start|>", err, errlen));
    TEXT("assistant\n");
    TRY(flush_run(&b, err, errlen));

    /* A tokenizer that returned a pad id for plain text would corrupt the segments. */
    size_t pads = 0;
    for (size_t i = 0; i < b.n; i++)
        pads += b.ids[i] == sp->video_pad;
    if (pads != per * (size_t)plan->n_pairs) {
        rc = vg_fail(err, errlen, VG_EINVAL,
                     "the tokenized text contains the video pad id; the prompt is ambiguous.");
        goto fail;
    }

    vg_prompt *p = calloc(1, sizeof *p);
    int32_t *pos = malloc(3 * (b.n ? b.n : 1) * sizeof *pos);
    if (!p || !pos) {
        free(p);
        free(pos);
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory for the prompt positions.");
        goto fail;
    }
    int32_t delta = 0;
    rc = vg_prompt_positions(b.ids, b.n, sp->video_pad, mh, mw, pos, &delta, errbuf, sizeof errbuf);
    if (rc) {
        free(p);
        free(pos);
        rc = vg_fail(err, errlen, rc, "%s", errbuf);
        goto fail;
    }
    p->ids = b.ids;
    p->n = b.n;
    p->pos = pos;
    p->rope_delta = delta;
    p->n_video_tokens = pads;
    p->text = b.text;
    free(b.run);
    *out = p;
    return 0;

fail:
    free(b.ids);
    free(b.text);
    free(b.run);
    return rc;
#undef TEXT
#undef TRY
}
