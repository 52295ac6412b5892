/*
 * http_chat.c: a POST /v1/chat/completions body as the native ask (http_chat.h). The messages'
 * system text, the last user message's text (the question), the first video (a URL or path, an
 * inline data URL, an input_video part) or the last user message's image frames, and the knobs
 * (max_tokens, temperature, top_p, ..., vLLM's mm_processor_kwargs, the vigil extension) become a
 * native ask; what cannot become a job is refused with a status, a wire code and a sentence.
 */
#include "http_chat.h"
#include "jsonget.h"
#include "strbuf.h"

#include "common.h"
#include "daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Text of a content value, appended to out (a newline between pieces): a string, or the text
 * parts of an array. 0, or VG_ENOMEM. */
static int content_text(const cJSON *content, vg_buf *out)
{
    if (cJSON_IsString(content)) {
        if (out->len && vg_buf_add(out, "\n", 1) < 0)
            return VG_ENOMEM;
        return vg_buf_add(out, content->valuestring, strlen(content->valuestring));
    }
    if (!cJSON_IsArray(content))
        return 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const char *type = vg_jstr(part, "type");
        const char *t = vg_jstr(part, "text");
        if (type && !strcmp(type, "text") && t &&
            ((out->len && vg_buf_add(out, "\n", 1) < 0) || vg_buf_add(out, t, strlen(t)) < 0))
            return VG_ENOMEM;
    }
    return 0;
}

/* The video of a content part: *url (borrowed) for a URL or path, or *b64 (borrowed) with its mime
 * type for inline data. Returns 1 when the part carries a video, 0 when not, -1 when it is an
 * image (frames). */
static int part_video(const cJSON *part, const char **url, const char **b64, size_t *b64_len,
                      char *mime, size_t mimelen)
{
    const char *type = vg_jstr(part, "type");
    if (!type)
        return 0;
    const char *u = NULL;
    if (!strcmp(type, "video_url") || !strcmp(type, "video")) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(part, type);
        u = cJSON_IsString(v) ? v->valuestring : vg_jstr(v, "url");
    } else if (!strcmp(type, "input_video")) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(part, "input_video");
        const char *data = vg_jstr(v, "data");
        if (data) {
            *b64 = data;
            *b64_len = strlen(data);
            const char *fmt = vg_jstr(v, "format");
            snprintf(mime, mimelen, "video/%.40s", fmt ? fmt : "mp4");
            return 1;
        }
        u = vg_jstr(v, "url");
    } else if (!strcmp(type, "image_url")) {
        return -1;
    } else {
        return 0;
    }
    if (!u)
        return 0;
    if (!strncmp(u, "data:", 5)) {
        const char *comma = strchr(u, ',');
        const char *semi = strstr(u, ";base64,");
        if (!comma || !semi || semi + 7 != comma) {
            snprintf(mime, mimelen, "!");
            return 1;
        }
        snprintf(mime, mimelen, "%.*s", (int)VG_MIN((size_t)(semi - u - 5), mimelen - 1), u + 5);
        *b64 = comma + 1;
        *b64_len = strlen(comma + 1);
        return 1;
    }
    *url = u;
    return 1;
}

/* Copies the numeric knob `from` of src into dst as `to` (unless dst has it already). */
static void copy_num(cJSON *dst, const cJSON *src, const char *from, const char *to)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(src, from);
    if (cJSON_IsNumber(v) && !cJSON_GetObjectItemCaseSensitive(dst, to))
        cJSON_AddNumberToObject(dst, to, v->valuedouble);
}

/* What a chat request's messages hold for vigil. */
typedef struct chat_in {
    vg_buf system, question;
    int bad_image, oom, frames_seen; /* frames_seen: image frames counted, kept or not */
} chat_in;

static void add_frame(vg_chat_req *c, chat_in *in, const char *p, size_t len)
{
    vg_chat_frame *nf = realloc(c->frames, (size_t)(c->n_frames + 1) * sizeof *c->frames);
    if (!nf) {
        in->oom = 1;
        return;
    }
    c->frames = nf;
    c->frames[c->n_frames++] = (vg_chat_frame){p, len};
}

/* One content part of the last user message that is an image: a data:image/...;base64 frame. */
static void add_image_part(const cJSON *part, int limit, vg_chat_req *c, chat_in *in)
{
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(part, "image_url");
    const char *u = cJSON_IsString(iu) ? iu->valuestring : vg_jstr(iu, "url");
    const char *comma = u ? strchr(u, ',') : NULL;
    if (!u || strncmp(u, "data:image/", 11) || !comma || comma - u < 8 ||
        strncmp(comma - 7, ";base64", 7))
        in->bad_image = 1;
    else if (in->frames_seen++ < limit) /* counted for the error when past the limit */
        add_frame(c, in, comma + 1, strlen(comma + 1));
}

/* Collects the system text, the question (the last user message's text), the first video and the
 * last user message's image frames. */
static void chat_collect(const cJSON *msgs, int limit, vg_chat_req *c, chat_in *in)
{
    const cJSON *m, *last_user = NULL;
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = vg_jstr(m, "role");
        if (role && !strcmp(role, "user"))
            last_user = m;
    }
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = vg_jstr(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content"), *part;
        if (role && (!strcmp(role, "system") || !strcmp(role, "developer")) &&
            content_text(content, &in->system) < 0)
            in->oom = 1;
        if (!role || strcmp(role, "user"))
            continue;
        if (m == last_user && content_text(content, &in->question) < 0)
            in->oom = 1;
        if (!cJSON_IsArray(content))
            continue;
        cJSON_ArrayForEach(part, content)
        {
            const char *u = NULL, *b = NULL;
            size_t l = 0;
            char mi[64] = "";
            int v = part_video(part, &u, &b, &l, mi, sizeof mi);
            if (v < 0 && m == last_user) {
                add_image_part(part, limit, c, in);
            } else if (v > 0 && !c->url && !c->b64) {
                c->url = u;
                c->b64 = b;
                c->b64_len = l;
                snprintf(c->mime, sizeof c->mime, "%s", mi);
            }
        }
    }
    /* Qwen's client-side form: data:video/jpeg;base64,<frame>,<frame>,... */
    if (c->b64 && !strcmp(c->mime, "video/jpeg") && !in->frames_seen) {
        const char *q = c->b64, *e = c->b64 + c->b64_len;
        while (q < e && !in->oom) {
            const char *k = memchr(q, ',', (size_t)(e - q));
            size_t l = k ? (size_t)(k - q) : (size_t)(e - q);
            if (in->frames_seen++ < limit)
                add_frame(c, in, q, l);
            q += l + 1;
        }
        c->b64 = NULL;
        c->b64_len = 0;
    }
}

/* Refuses what cannot become a job: its status, with *code and err; 0 when usable. */
static int chat_check(const vg_chat_req *c, const chat_in *in, int limit, const char **code,
                      char *err, size_t errlen)
{
    const int video = c->url || c->b64;
    if (in->oom) {
        *code = VG_WIRE_INTERNAL;
        snprintf(err, errlen, "out of memory");
        return 500;
    }
    *code = VG_WIRE_BAD_REQUEST;
    if (!video && in->frames_seen && in->bad_image) {
        *code = "bad_image";
        snprintf(err, errlen,
                 "frames must be data:image/jpeg;base64, URLs (image URLs are not fetched)");
    } else if (!video && in->frames_seen > limit) {
        *code = VG_WIRE_LIMIT;
        snprintf(err, errlen, "%d frames; the limit is max_frames_limit = %d", in->frames_seen,
                 limit);
    } else if (!video && !in->frames_seen) {
        snprintf(err, errlen, "the request has no video (a video_url or input_video content part)");
    } else if (c->b64 && strncmp(c->mime, "video/", 6) &&
               strcmp(c->mime, "application/octet-stream")) {
        /* echoed printable ASCII only: the type is cut at 63 bytes, maybe inside a character */
        char shown[sizeof c->mime];
        size_t k = 0;
        for (; c->mime[k]; k++)
            shown[k] = c->mime[k] >= 0x20 && c->mime[k] < 0x7f ? c->mime[k] : '?';
        shown[k] = 0;
        *code = "bad_video";
        snprintf(err, errlen, "inline data must be a data:video/...;base64, URL (got '%s')", shown);
    } else if (!in->question.len) {
        snprintf(err, errlen, "the last user message has no text");
    } else {
        return 0;
    }
    return 400;
}

/* The native ask of a chat request (without its video), and c's response settings. NULL when
 * out of memory. */
static cJSON *chat_ask(const cJSON *req, const chat_in *in, int default_max_new_tokens,
                       vg_chat_req *c)
{
    cJSON *ask = cJSON_CreateObject();
    if (!ask)
        return NULL;
    cJSON_AddNumberToObject(ask, "v", VG_PROTO_VERSION);
    cJSON_AddStringToObject(ask, "op", "ask");
    cJSON_AddStringToObject(ask, "question", in->question.p);
    if (in->system.len)
        cJSON_AddStringToObject(ask, "system", in->system.p);
    cJSON *gen = cJSON_AddObjectToObject(ask, "generation");
    cJSON *smp = cJSON_AddObjectToObject(ask, "sampling");
    if (!gen || !smp) {
        cJSON_Delete(ask);
        return NULL;
    }
    copy_num(gen, req, "max_completion_tokens", "max_new_tokens");
    copy_num(gen, req, "max_tokens", "max_new_tokens");
    const cJSON *temp = cJSON_GetObjectItemCaseSensitive(req, "temperature");
    if (cJSON_IsNumber(temp) && temp->valuedouble <= 0)
        cJSON_AddTrueToObject(gen, "greedy");
    else
        copy_num(gen, req, "temperature", "temperature");
    static const char *const gknobs[] = {"top_p", "top_k", "seed", "repetition_penalty",
                                         "presence_penalty"};
    for (size_t i = 0; i < VG_ARRAY_LEN(gknobs); i++)
        copy_num(gen, req, gknobs[i], gknobs[i]);
    /* vLLM's mm_processor_kwargs, then the vigil extension's sampling, deadline and job id. */
    const cJSON *mm = cJSON_GetObjectItemCaseSensitive(req, "mm_processor_kwargs");
    const cJSON *vx = cJSON_GetObjectItemCaseSensitive(req, "vigil");
    const cJSON *vs = cJSON_GetObjectItemCaseSensitive(vx, "sampling");
    static const char *const knobs[] = {
        "fps",          "nframes", "min_frames", "max_frames",     "min_pixels",   "max_pixels",
        "total_pixels", "start",   "end",        "resized_height", "resized_width"};
    for (size_t i = 0; i < VG_ARRAY_LEN(knobs); i++) {
        copy_num(smp, mm, knobs[i], knobs[i]);
        copy_num(smp, vs, knobs[i], knobs[i]);
    }
    copy_num(ask, vx, "deadline_s", "deadline_s");
    if (vg_jstr(vx, "job"))
        cJSON_AddStringToObject(ask, "job", vg_jstr(vx, "job"));
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(gen, "max_new_tokens");
    c->max_tokens = cJSON_IsNumber(mt) ? mt->valueint : default_max_new_tokens;
    c->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "stream"));
    c->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(req, "stream_options"), "include_usage"));
    const char *model = vg_jstr(req, "model");
    snprintf(c->model, sizeof c->model, "%s", model ? model : "");
    if (!c->url && !c->b64) {
        /* Frames: one per 1/fps seconds (vigil.frames_fps, else mm_processor_kwargs.fps, else
         * 1), every frame sampled. */
        c->frames_fps = vg_jnum(vx, "frames_fps", vg_jnum(mm, "fps", 1.0));
        cJSON_DeleteItemFromObjectCaseSensitive(smp, "fps");
        cJSON_AddNumberToObject(smp, "fps", c->frames_fps);
    }
    return ask;
}

int vg_chat_translate(const cJSON *req, int max_frames_limit, int default_max_new_tokens,
                      vg_chat_req *out, const char **code, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(req)) {
        *code = VG_WIRE_BAD_JSON;
        snprintf(err, errlen, "the body is not one JSON object");
        return 400;
    }
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
        *code = VG_WIRE_BAD_REQUEST;
        snprintf(err, errlen, "`messages` must be a non-empty array");
        return 400;
    }
    chat_in in;
    memset(&in, 0, sizeof in);
    chat_collect(msgs, max_frames_limit, out, &in);
    if (out->url || out->b64) { /* a video part wins over image frames beside it */
        free(out->frames);
        out->frames = NULL;
        out->n_frames = 0;
    }
    int st = chat_check(out, &in, max_frames_limit, code, err, errlen);
    if (!st && !(out->ask = chat_ask(req, &in, default_max_new_tokens, out))) {
        *code = VG_WIRE_INTERNAL;
        snprintf(err, errlen, "out of memory");
        st = 500;
    }
    if (!st && !out->url && !out->b64 && !(out->frames_fps >= 0.01 && out->frames_fps <= 240)) {
        *code = VG_WIRE_BAD_REQUEST;
        snprintf(err, errlen, "frames_fps must be 0.01-240");
        st = 400;
    }
    vg_buf_free(&in.system);
    vg_buf_free(&in.question);
    if (st)
        vg_chat_free(out);
    return st;
}

void vg_chat_free(vg_chat_req *c)
{
    if (!c)
        return;
    cJSON_Delete(c->ask);
    free(c->frames);
    memset(c, 0, sizeof *c);
}

static int b64_val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || ch == '-')
        return 62;
    if (ch == '/' || ch == '_')
        return 63;
    return -1;
}

long vg_b64_decode(const char *s, size_t len, unsigned char *out)
{
    unsigned acc = 0;
    int bits = 0;
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '=')
            break;
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
            continue;
        int v = b64_val(ch);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

int vg_looks_like_video(const unsigned char *d, size_t n)
{
    if (n >= 12 && !memcmp(d + 4, "ftyp", 4))
        return 1;
    if (n >= 8 && (!memcmp(d + 4, "moov", 4) || !memcmp(d + 4, "mdat", 4) ||
                   !memcmp(d + 4, "free", 4) || !memcmp(d + 4, "wide", 4)))
        return 1;
    if (n >= 4 && !memcmp(d, "\x1a\x45\xdf\xa3", 4))
        return 1;
    if (n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "AVI ", 4))
        return 1;
    if (n >= 189 && d[0] == 0x47 && d[188] == 0x47)
        return 1;
    if (n >= 4 && !memcmp(d, "\x00\x00\x01\xba", 4))
        return 1;
    if (n >= 4 && (!memcmp(d, "OggS", 4) || !memcmp(d, "FLV\x01", 4)))
        return 1;
    return 0;
}

void vg_chat_spool_ext(const vg_chat_req *c, char *ext, size_t extlen)
{
    if (extlen == 0)
        return;
    snprintf(ext, extlen, "%s", c->frames ? "mkv" : "mp4");
    if (c->frames || strncmp(c->mime, "video/", 6) || !c->mime[6])
        return;
    const char *sub = c->mime + 6;
    size_t k = 0;
    for (; sub[k] && k < extlen - 1 &&
           ((sub[k] >= 'a' && sub[k] <= 'z') || (sub[k] >= '0' && sub[k] <= '9'));
         k++)
        ext[k] = sub[k];
    ext[k] = 0;
    if (!strcmp(ext, "quicktime"))
        snprintf(ext, extlen, "mov");
    else if (!strcmp(ext, "x") || !ext[0])
        snprintf(ext, extlen, "mp4");
}
