/*
 * prompt.c: the Qwen3-VL Instruct prompt for one video question (docs/qwen3vl.md §2) and its MRoPE
 * positions (docs/qwen3vl.md §5.1).
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
 *
 * The builder (vg_prompt_builder) is the one place that lays out the template: vg_prompt_build is
 * head + pairs + tail taken at once; the video-QA layer (qa/) takes the same pieces one at a time
 * (the head, then each pair as it arrives, then each question), and positions continue across
 * takes. Positions are assigned as tokens are appended: a text run gets its positions when it is
 * tokenized (before the next special token), so they are always contiguous. A take tokenizes the
 * pending text run; every piece ends in a special token or in "\n", where the reference's
 * pre-tokenizer splits anyway, so taking piece by piece gives the ids of one whole prompt.
 */
#include "pipeline.h"

#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vg_prompt_builder {
    int32_t *ids; /* tokens appended since the last take */
    int32_t *pos; /* [cap][3]: (t, h, w) of each, interleaved while building */
    size_t n, cap, pcap;
    char *text;
    size_t tlen, tcap;
    char *run; /* pending plain text since the last special token */
    size_t rlen, rcap;
    int32_t next_pos; /* position of the next token */
    size_t n_taken;   /* tokens handed out by earlier takes */
    size_t n_video;   /* pads appended since the last take */
    vg_prompt_ids sp;
    vg_tokenize_fn tokenize;
    void *opaque;
};
typedef struct vg_prompt_builder builder;

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

/* Room for need tokens and their positions. */
static int reserve(builder *b, size_t need)
{
    size_t pc = b->pcap;
    if (grow((void **)&b->ids, &b->cap, need, sizeof *b->ids) ||
        grow((void **)&b->pos, &pc, need, 3 * sizeof *b->pos))
        return VG_ENOMEM;
    b->pcap = pc;
    return 0;
}

/* Appends one token at (t, h, w). */
static void put(builder *b, int32_t id, int32_t t, int32_t h, int32_t w)
{
    b->ids[b->n] = id;
    b->pos[3 * b->n] = t;
    b->pos[3 * b->n + 1] = h;
    b->pos[3 * b->n + 2] = w;
    b->n++;
}

/* A text or special token: (p, p, p), p running. */
static int push_id(builder *b, int32_t id)
{
    if (reserve(b, b->n + 1))
        return VG_ENOMEM;
    put(b, id, b->next_pos, b->next_pos, b->next_pos);
    b->next_pos++;
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
    if (reserve(b, b->n + n)) {
        free(ids);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for the prompt.");
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == b->sp.video_pad) {
            free(ids);
            return vg_fail(
                err, errlen, VG_EINVAL,
                "the tokenized text contains the video pad id; the prompt is ambiguous.");
        }
        put(b, ids[i], b->next_pos, b->next_pos, b->next_pos);
        b->next_pos++;
    }
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

int vg_prompt_builder_create(const vg_prompt_ids *ids, vg_tokenize_fn tokenize, void *opaque,
                             vg_prompt_builder **out)
{
    if (!ids || !tokenize || !out)
        return VG_EINVAL;
    builder *b = calloc(1, sizeof *b);
    if (!b)
        return VG_ENOMEM;
    b->sp = *ids;
    b->tokenize = tokenize;
    b->opaque = opaque;
    *out = b;
    return 0;
}

void vg_prompt_builder_free(vg_prompt_builder *b)
{
    if (!b)
        return;
    free(b->ids);
    free(b->pos);
    free(b->text);
    free(b->run);
    free(b);
}

int32_t vg_prompt_builder_next_pos(const vg_prompt_builder *b)
{
    return b->next_pos;
}

void vg_prompt_builder_rewind(vg_prompt_builder *b, int32_t next_pos, size_t n_taken)
{
    b->n = 0;
    b->tlen = 0;
    if (b->text)
        b->text[0] = 0;
    b->rlen = 0;
    b->n_video = 0;
    b->next_pos = next_pos;
    b->n_taken = n_taken;
}

static int oom(char *err, size_t errlen)
{
    return vg_fail(err, errlen, VG_ENOMEM, "out of memory for the prompt.");
}

int vg_prompt_add_head(vg_prompt_builder *b, const vg_chat *chat, char *err, size_t errlen)
{
    const vg_chat empty = {0};
    if (!chat)
        chat = &empty;
    int rc;
    if (chat->system) {
        if ((rc = add_special(b, b->sp.im_start, "<|im_start|>", err, errlen)) < 0)
            return rc;
        if (add_text(b, "system\n") || add_text(b, chat->system))
            return oom(err, errlen);
        if ((rc = add_special(b, b->sp.im_end, "<|im_end|>", err, errlen)) < 0)
            return rc;
        if (add_text(b, "\n"))
            return oom(err, errlen);
    }
    if ((rc = add_special(b, b->sp.im_start, "<|im_start|>", err, errlen)) < 0)
        return rc;
    if (add_text(b, "user\n") || (chat->text_before && add_text(b, chat->text_before)))
        return oom(err, errlen);
    return 0;
}

int vg_prompt_add_pair(vg_prompt_builder *b, double seconds, int merged_h, int merged_w, char *err,
                       size_t errlen)
{
    if (merged_h <= 0 || merged_w <= 0 || merged_h > (1 << 12) || merged_w > (1 << 12))
        return vg_fail(err, errlen, VG_EINVAL, "a merged grid of %dx%d is not a video slice.",
                       merged_h, merged_w);
    size_t per = (size_t)merged_h * (size_t)merged_w;
    if (per > (1u << 20) || b->n_video + per > ((size_t)1 << 28))
        return vg_fail(err, errlen, VG_ELIMIT, "too many video tokens for one prompt.");
    char ts[VG_TIME_TOKEN_MAX];
    if (vg_time_token(seconds, ts, sizeof ts) < 0)
        return vg_fail(err, errlen, VG_ERANGE, "a pair's time (%g s) cannot be printed.", seconds);
    int rc;
    if (add_text(b, ts))
        return oom(err, errlen);
    if ((rc = add_special(b, b->sp.vision_start, "<|vision_start|>", err, errlen)) < 0)
        return rc;
    if (reserve(b, b->n + per))
        return oom(err, errlen);
    int32_t p = b->next_pos;
    for (size_t j = 0; j < per; j++) {
        put(b, b->sp.video_pad, p, p + (int32_t)(j / (size_t)merged_w),
            p + (int32_t)(j % (size_t)merged_w));
        if (push_display(b, "<|video_pad|>", 13))
            return oom(err, errlen);
    }
    b->next_pos = p + (merged_h > merged_w ? merged_h : merged_w);
    b->n_video += per;
    return add_special(b, b->sp.vision_end, "<|vision_end|>", err, errlen);
}

int vg_prompt_add_tail(vg_prompt_builder *b, const char *text_after, char *err, size_t errlen)
{
    int rc;
    if (text_after && add_text(b, text_after))
        return oom(err, errlen);
    if ((rc = add_special(b, b->sp.im_end, "<|im_end|>", err, errlen)) < 0)
        return rc;
    if (add_text(b, "\n"))
        return oom(err, errlen);
    if ((rc = add_special(b, b->sp.im_start, "<|im_start|>", err, errlen)) < 0)
        return rc;
    if (add_text(b, "assistant\n"))
        return oom(err, errlen);
    return 0;
}

int vg_prompt_builder_take(vg_prompt_builder *b, vg_prompt **out, char *err, size_t errlen)
{
    int rc = flush_run(b, err, errlen);
    if (rc < 0)
        return rc;
    vg_prompt *p = calloc(1, sizeof *p);
    size_t n = b->n;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    int32_t *pos = malloc(3 * (n ? n : 1) * sizeof *pos);
    char *text = malloc(b->tlen + 1);
    if (!p || !ids || !pos || !text) {
        free(p);
        free(ids);
        free(pos);
        free(text);
        return oom(err, errlen);
    }
    /* Rows: t for every token, then h, then w (the engine's [3][n] layout). */
    for (size_t i = 0; i < n; i++) {
        ids[i] = b->ids[i];
        pos[i] = b->pos[3 * i];
        pos[n + i] = b->pos[3 * i + 1];
        pos[2 * n + i] = b->pos[3 * i + 2];
    }
    memcpy(text, b->text ? b->text : "", b->tlen);
    text[b->tlen] = 0;
    p->ids = ids;
    p->n = n;
    p->pos = pos;
    p->n_video_tokens = b->n_video;
    p->text = text;
    b->n_taken += n;
    p->rope_delta = (int32_t)((int64_t)b->next_pos - (int64_t)b->n_taken);
    b->n = 0;
    b->tlen = 0;
    b->n_video = 0;
    *out = p;
    return 0;
}

int vg_prompt_build(const vg_chat *chat, const vg_prompt_video *video, const vg_prompt_ids *sp,
                    vg_tokenize_fn tokenize, void *opaque, vg_prompt **out, char *err,
                    size_t errlen)
{
    if (!video || !sp || !tokenize || !out)
        return vg_fail(
            err, errlen, VG_EINVAL,
            "vg_prompt_build needs a video, the special ids, a tokenizer and an output.");
    int merge = video->merge;
    if (merge <= 0 || video->n_pairs <= 0 || video->grid_h <= 0 || video->grid_w <= 0 ||
        video->grid_h % merge || video->grid_w % merge || !video->pair_times)
        return vg_fail(err, errlen, VG_EINVAL,
                       "the video's grid %dx%d (%d pairs) cannot be merged %dx%d.", video->grid_h,
                       video->grid_w, video->n_pairs, merge, merge);
    int mh = video->grid_h / merge, mw = video->grid_w / merge;
    size_t per = (size_t)mh * (size_t)mw;
    if (per > (1u << 20) || (size_t)video->n_pairs * per > ((size_t)1 << 28))
        return vg_fail(err, errlen, VG_ELIMIT, "%d pairs of %zu video tokens are too many.",
                       video->n_pairs, per);
    builder *b = NULL;
    int rc = vg_prompt_builder_create(sp, tokenize, opaque, &b);
    if (rc < 0)
        return vg_fail(err, errlen, rc, "out of memory for the prompt.");
    rc = vg_prompt_add_head(b, chat, err, errlen);
    for (int k = 0; rc == 0 && k < video->n_pairs; k++)
        rc = vg_prompt_add_pair(b, video->pair_times[k], mh, mw, err, errlen);
    if (rc == 0)
        rc = vg_prompt_add_tail(b, chat ? chat->text_after : NULL, err, errlen);
    if (rc == 0)
        rc = vg_prompt_builder_take(b, out, err, errlen);
    vg_prompt_builder_free(b);
    return rc;
}
