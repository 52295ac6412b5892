/*
 * proto.c: the wire protocol's request parser and validator, error replies, and the media access
 * policy (which paths and URLs a request may name).
 *
 * Media access (docs/security.md, items 1 and 4): a path is resolved with realpath() to find the
 * root it lies under, and then opened beneath that root's directory without following anything out
 * of it (openat2 with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS; component by component with
 * O_NOFOLLOW where the kernel lacks openat2). The descriptor is what the job or stream decodes (it
 * travels in the vg_media_policy to the pipeline's params.open_file), so a link swapped in after
 * the check cannot send the decoder outside the roots. A link inside a root that points inside it
 * works (realpath follows it; so does RESOLVE_BENEATH); one that leads out is refused like any path
 * outside the roots, with the one answer of item 4.
 *
 * Thread: the loop thread (pure functions plus a few stat() and open calls in the policy check; the
 * policy's open also runs on decode and stream threads). Every
 * field of a request is checked for presence, type, range and length before use; anything else is
 * an error with a sentence that names the field. Unknown fields are errors too, so a typo in a
 * knob is reported instead of silently ignored.
 *
 * Text hygiene (docs/security.md): before cJSON sees a request, one linear scan refuses invalid
 * UTF-8, raw control characters inside strings and the escape \u0000 (which would cut a C string
 * short), all with bad_request; a key given twice in one object is refused too (cJSON would keep
 * the first silently). Error sentences that quote the request cut at a character boundary, and
 * every error reply is repaired to valid UTF-8, so no reply built here carries a byte that is not
 * JSON.
 */
#define _GNU_SOURCE /* realpath, O_PATH, syscall */
#include "daemon.h"

#include "common.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int id_char(char c, int allow_colon)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || (allow_colon && c == ':');
}

static int valid_id(const char *id, int allow_colon)
{
    size_t n = strlen(id);
    if (n == 0 || n > VG_ID_MAX || id[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!id_char(id[i], allow_colon))
            return 0;
    return 1;
}

int vg_proto_valid_job_id(const char *id)
{
    return id && valid_id(id, 0);
}

void vg_request_clear(vg_request *r)
{
    if (!r)
        return;
    free(r->video);
    free(r->question);
    free(r->system);
    r->video = r->question = r->system = NULL;
    for (int i = 0; i < r->n_questions; i++) {
        free(r->questions[i]);
        r->questions[i] = NULL;
    }
    r->n_questions = 0;
}

/* Refuses what cJSON would accept but the protocol does not: invalid UTF-8 anywhere, raw control
 * characters (U+0000-U+001F) inside strings, and the escape \u0000. Returns 0, or VG_EINVAL with
 * the byte offset in err. One pass over data[len]; a trailing NUL terminator is allowed. */
static int scan_text(const char *data, size_t len, char *err, size_t errlen)
{
    if (len > 0 && data[len - 1] == '\0')
        len--;
    size_t bad_at = vg_utf8_check(data, len);
    if (bad_at < len)
        return vg_fail(err, errlen, VG_EINVAL, "the request is not valid UTF-8 (byte %zu)", bad_at);
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)data[i];
        if (!in_str) {
            if (ch == '"')
                in_str = 1;
            continue;
        }
        if (ch == '"') {
            in_str = 0;
        } else if (ch < 0x20) {
            return vg_fail(err, errlen, VG_EINVAL,
                           "a raw control character (0x%02x) inside a string at byte %zu; escape "
                           "it",
                           ch, i);
        } else if (ch == '\\' && i + 1 < len) {
            if (data[i + 1] == 'u' && i + 5 < len && !strncmp(data + i + 2, "0000", 4))
                return vg_fail(err, errlen, VG_EINVAL,
                               "\\u0000 at byte %zu: strings must not contain NUL", i);
            i++; /* the escaped character */
        }
    }
    return 0;
}

/* Copies at most 64 bytes of s into buf, cut back to a character boundary (s is valid UTF-8:
 * scan_text checked the whole request), for quoting request text in an error sentence. */
static const char *clip(const char *s, char buf[72])
{
    size_t n = strlen(s);
    if (n > 64) {
        n = 64;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

/* Whether member it of object o repeats the key of an earlier member. Callers check each member as
 * they walk o and refuse unknown keys on the way, so the walk stops within a few members of the
 * known-field list's length and the quadratic scan stays bounded. */
static int dup_before(const cJSON *o, const cJSON *it)
{
    for (const cJSON *b = o->child; b && b != it; b = b->next)
        if (b->string && it->string && !strcmp(b->string, it->string))
            return 1;
    return 0;
}

struct ctx {
    const char **wire;
    char *err;
    size_t errlen;
};

static int bad(struct ctx *c, const char *wire, const char *fmt, const char *field)
{
    *c->wire = wire;
    return vg_fail(c->err, c->errlen, VG_EINVAL, fmt, field);
}

static int dup_error(struct ctx *c, const char *where, const char *k)
{
    char q[72];
    *c->wire = VG_WIRE_BAD_REQUEST;
    return vg_fail(c->err, c->errlen, VG_EINVAL, "%s'%s' is given twice; give each field once",
                   where, clip(k, q));
}

static int get_int(struct ctx *c, const cJSON *it, const char *name, long lo, long hi, long *out)
{
    if (!cJSON_IsNumber(it))
        return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must be a number", name);
    double d = it->valuedouble;
    if (!(d == floor(d)) || d < (double)lo || d > (double)hi) {
        *c->wire = VG_WIRE_BAD_REQUEST;
        return vg_fail(c->err, c->errlen, VG_EINVAL, "'%s' must be an integer in [%ld, %ld]", name,
                       lo, hi);
    }
    *out = (long)d;
    return 0;
}

static int get_num(struct ctx *c, const cJSON *it, const char *name, double lo, double hi,
                   double *out)
{
    if (!cJSON_IsNumber(it))
        return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must be a number", name);
    double d = it->valuedouble;
    if (!isfinite(d) || d < lo || d > hi) {
        *c->wire = VG_WIRE_BAD_REQUEST;
        return vg_fail(c->err, c->errlen, VG_EINVAL, "'%s' must be in [%g, %g]", name, lo, hi);
    }
    *out = d;
    return 0;
}

static int get_str(struct ctx *c, const cJSON *it, const char *name, size_t maxlen, char **out)
{
    if (!cJSON_IsString(it) || !it->valuestring)
        return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must be a string", name);
    size_t n = strlen(it->valuestring);
    if (n == 0)
        return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must not be empty", name);
    if (n > maxlen) {
        *c->wire = VG_WIRE_TOO_LARGE;
        return vg_fail(c->err, c->errlen, VG_EMSGSIZE, "'%s' is longer than %zu bytes", name,
                       maxlen);
    }
    *out = strdup(it->valuestring);
    if (!*out) {
        *c->wire = VG_WIRE_INTERNAL;
        return VG_ENOMEM;
    }
    return 0;
}

static int get_job_id(struct ctx *c, const cJSON *it, char *out)
{
    if (!cJSON_IsString(it) || !vg_proto_valid_job_id(it->valuestring))
        return bad(c, VG_WIRE_BAD_REQUEST,
                   "'%s' must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with '.')",
                   "job");
    snprintf(out, VG_ID_MAX + 1, "%s", it->valuestring);
    return 0;
}

static int parse_sampling(struct ctx *c, const cJSON *o, const vg_proto_limits *lim,
                          vg_req_sampling *s)
{
    if (!cJSON_IsObject(o))
        return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must be an object", "sampling");
    long l;
    double d;
    int rc;
    for (const cJSON *it = o->child; it; it = it->next) {
        const char *k = it->string;
        if (dup_before(o, it))
            return dup_error(c, "sampling: ", k);
        if (!strcmp(k, "fps")) {
            if ((rc = get_num(c, it, "sampling.fps", 0.01, 240, &d)) < 0)
                return rc;
            s->fps = d;
        } else if (!strcmp(k, "nframes") || !strcmp(k, "min_frames") || !strcmp(k, "max_frames")) {
            if ((rc = get_int(c, it, k, 2, lim->max_frames, &l)) < 0)
                return rc;
            if (!strcmp(k, "nframes")) {
                /* Frames pair up into temporal patches (docs/protocol.md): an odd count would
                 * silently become the next even one. */
                if (l % 2)
                    return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must be even (frames pair up)",
                               "nframes");
                s->nframes = (int)l;
            } else if (!strcmp(k, "min_frames"))
                s->min_frames = (int)l;
            else
                s->max_frames = (int)l;
        } else if (!strcmp(k, "min_pixels") || !strcmp(k, "max_pixels")) {
            if ((rc = get_int(c, it, k, 1024, lim->max_pixels, &l)) < 0)
                return rc;
            if (!strcmp(k, "min_pixels"))
                s->min_pixels = l;
            else
                s->max_pixels = l;
        } else if (!strcmp(k, "total_pixels")) {
            if ((rc = get_num(c, it, k, 1024, (double)lim->max_pixels * lim->max_frames, &d)) < 0)
                return rc;
            s->total_pixels = d;
        } else if (!strcmp(k, "resized_height") || !strcmp(k, "resized_width")) {
            if ((rc = get_int(c, it, k, 32, 16384, &l)) < 0)
                return rc;
            if (!strcmp(k, "resized_height"))
                s->resized_height = (int)l;
            else
                s->resized_width = (int)l;
        } else if (!strcmp(k, "start") || !strcmp(k, "end")) {
            if ((rc = get_num(c, it, k, 0, 1e7, &d)) < 0)
                return rc;
            if (!strcmp(k, "start"))
                s->start = d;
            else
                s->end = d;
        } else {
            *c->wire = VG_WIRE_BAD_REQUEST;
            char q[72];
            return vg_fail(c->err, c->errlen, VG_EINVAL, "unknown sampling field '%s'", clip(k, q));
        }
    }
    if ((s->resized_height > 0) != (s->resized_width > 0))
        return bad(c, VG_WIRE_BAD_REQUEST, "%s: give both resized_height and resized_width",
                   "sampling");
    if (s->resized_height > 0 && (long)s->resized_height * s->resized_width > lim->max_pixels)
        return bad(c, VG_WIRE_LIMIT, "%s: resized size over max_pixels_limit", "sampling");
    if (s->min_frames && s->max_frames && s->min_frames > s->max_frames)
        return bad(c, VG_WIRE_BAD_REQUEST, "%s: min_frames > max_frames", "sampling");
    if (s->min_pixels && s->max_pixels && s->min_pixels > s->max_pixels)
        return bad(c, VG_WIRE_BAD_REQUEST, "%s: min_pixels > max_pixels", "sampling");
    if (s->start >= 0 && s->end >= 0 && s->end <= s->start)
        return bad(c, VG_WIRE_BAD_REQUEST, "%s: end must be after start", "sampling");
    return 0;
}

static int parse_generation(struct ctx *c, const cJSON *o, const vg_proto_limits *lim,
                            vg_req_generation *g)
{
    if (!cJSON_IsObject(o))
        return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must be an object", "generation");
    long l;
    double d;
    int rc;
    for (const cJSON *it = o->child; it; it = it->next) {
        const char *k = it->string;
        if (dup_before(o, it))
            return dup_error(c, "generation: ", k);
        if (!strcmp(k, "max_new_tokens")) {
            if ((rc = get_int(c, it, k, 1, 1L << 30, &l)) < 0)
                return rc;
            if (l > lim->max_new_tokens) {
                *c->wire = VG_WIRE_LIMIT;
                return vg_fail(c->err, c->errlen, VG_ELIMIT,
                               "max_new_tokens %ld is over this daemon's limit of %d", l,
                               lim->max_new_tokens);
            }
            g->has_max_new_tokens = 1, g->max_new_tokens = (int)l;
        } else if (!strcmp(k, "temperature")) {
            if ((rc = get_num(c, it, k, 1e-4, 100, &d)) < 0)
                return rc;
            g->has_temperature = 1, g->temperature = d;
        } else if (!strcmp(k, "top_k")) {
            if ((rc = get_int(c, it, k, 0, 1 << 24, &l)) < 0)
                return rc;
            g->has_top_k = 1, g->top_k = (int)l;
        } else if (!strcmp(k, "top_p")) {
            if ((rc = get_num(c, it, k, 1e-6, 1, &d)) < 0)
                return rc;
            g->has_top_p = 1, g->top_p = d;
        } else if (!strcmp(k, "seed")) {
            if ((rc = get_int(c, it, k, 0, 9007199254740991L, &l)) < 0)
                return rc;
            g->has_seed = 1, g->seed = (uint64_t)l;
        } else if (!strcmp(k, "greedy")) {
            if (!cJSON_IsBool(it))
                return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must be true or false", k);
            g->has_greedy = 1, g->greedy = cJSON_IsTrue(it);
        } else if (!strcmp(k, "repetition_penalty")) {
            if ((rc = get_num(c, it, k, 0.01, 100, &d)) < 0)
                return rc;
            g->has_repetition_penalty = 1, g->repetition_penalty = d;
        } else if (!strcmp(k, "presence_penalty")) {
            if ((rc = get_num(c, it, k, -100, 100, &d)) < 0)
                return rc;
            g->has_presence_penalty = 1, g->presence_penalty = d;
        } else {
            *c->wire = VG_WIRE_BAD_REQUEST;
            char q[72];
            return vg_fail(c->err, c->errlen, VG_EINVAL, "unknown generation field '%s'",
                           clip(k, q));
        }
    }
    return 0;
}

static const struct {
    const char *name;
    enum vg_op op;
    const char *fields; /* allowed top-level fields besides v, op, id */
} ops[] = {
    {"ask", VG_OP_ASK, ",video,question,system,job,sampling,generation,deadline_s,"},
    {"info", VG_OP_INFO, ","},
    {"job", VG_OP_JOB, ",job,"},
    {"jobs", VG_OP_JOBS, ",limit,"},
    {"cancel", VG_OP_CANCEL, ",job,"},
    {"sync", VG_OP_SYNC, ",job,"},
    {"watch", VG_OP_WATCH,
     ",url,name,question,questions,fps,window_s,update_s,min_window_s,max_pixels,speed,"
     "rtsp_transport,confirm,min_duration_s,hold_s,merge_gap_s,"},
    {"unwatch", VG_OP_UNWATCH, ",name,"},
    {"streams", VG_OP_STREAMS, ","},
    {"events", VG_OP_EVENTS, ",name,since,limit,"},
};

static int field_allowed(const char *list, const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 32)
        return 0;
    char pat[40];
    snprintf(pat, sizeof pat, ",%s,", k);
    return strstr(list, pat) != NULL;
}

static int get_stream_name(struct ctx *c, const cJSON *it, char *out)
{
    if (!cJSON_IsString(it) || !vg_proto_valid_job_id(it->valuestring))
        return bad(c, VG_WIRE_BAD_REQUEST,
                   "'%s' must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with '.')",
                   "name");
    snprintf(out, VG_ID_MAX + 1, "%s", it->valuestring);
    return 0;
}

/* watch, unwatch and events (docs/protocol.md, "Live streams"). */
static int parse_stream_op(struct ctx *c, const cJSON *root, const vg_proto_limits *lim,
                           vg_request *r)
{
    int rc;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (name && (rc = get_stream_name(c, name, r->name)) < 0)
        return rc;
    if (r->op == VG_OP_UNWATCH || r->op == VG_OP_EVENTS) {
        if (!name)
            return bad(c, VG_WIRE_BAD_REQUEST, "missing '%s'", "name");
        if (r->op == VG_OP_UNWATCH)
            return 0;
        const cJSON *since = cJSON_GetObjectItemCaseSensitive(root, "since");
        if (since && (rc = get_num(c, since, "since", 0, 9007199254740991.0, &r->since)) < 0)
            return rc;
        r->since = floor(r->since);
        const cJSON *lm = cJSON_GetObjectItemCaseSensitive(root, "limit");
        long l = 1000;
        if (lm && (rc = get_int(c, lm, "limit", 1, 10000, &l)) < 0)
            return rc;
        r->limit = (int)l;
        return 0;
    }
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(root, "url");
    if (!url)
        return bad(c, VG_WIRE_BAD_REQUEST, "missing '%s' (a stream URL or a file path)", "url");
    if ((rc = get_str(c, url, "url", VG_VIDEO_MAX, &r->video)) < 0)
        return rc;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "question");
    const cJSON *qs = cJSON_GetObjectItemCaseSensitive(root, "questions");
    if (q && (rc = get_str(c, q, "question", VG_TEXT_MAX, &r->questions[r->n_questions++])) < 0)
        return rc;
    if (qs) {
        if (!cJSON_IsArray(qs))
            return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must be an array of strings", "questions");
        const cJSON *it;
        cJSON_ArrayForEach(it, qs)
        {
            if (r->n_questions >= VG_STREAM_MAX_QUESTIONS) {
                *c->wire = VG_WIRE_LIMIT;
                return vg_fail(c->err, c->errlen, VG_ELIMIT,
                               "a stream has at most %d standing questions",
                               VG_STREAM_MAX_QUESTIONS);
            }
            if ((rc = get_str(c, it, "questions[]", VG_TEXT_MAX, &r->questions[r->n_questions++])) <
                0)
                return rc;
        }
    }
    if (r->n_questions == 0)
        return bad(c, VG_WIRE_BAD_REQUEST, "missing '%s' (one or more standing questions)",
                   "question");
    const cJSON *it;
    if ((it = cJSON_GetObjectItemCaseSensitive(root, "fps")) &&
        (rc = get_num(c, it, "fps", 0.1, 30, &r->stream_fps)) < 0)
        return rc;
    if ((it = cJSON_GetObjectItemCaseSensitive(root, "window_s")) &&
        (rc = get_num(c, it, "window_s", 1, 3600, &r->window_s)) < 0)
        return rc;
    if ((it = cJSON_GetObjectItemCaseSensitive(root, "min_window_s")) &&
        (rc = get_num(c, it, "min_window_s", 0.01, 3600, &r->min_window_s)) < 0)
        return rc;
    if ((it = cJSON_GetObjectItemCaseSensitive(root, "update_s")) &&
        (rc = get_num(c, it, "update_s", 0.1, 3600, &r->update_s)) < 0)
        return rc;
    if ((it = cJSON_GetObjectItemCaseSensitive(root, "speed")) &&
        (rc = get_num(c, it, "speed", 0.1, 1000, &r->speed)) < 0)
        return rc;
    if ((it = cJSON_GetObjectItemCaseSensitive(root, "rtsp_transport"))) {
        if (!cJSON_IsString(it) ||
            (strcmp(it->valuestring, "tcp") && strcmp(it->valuestring, "udp") &&
             strcmp(it->valuestring, "auto")))
            return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must be \"tcp\", \"udp\" or \"auto\"",
                       "rtsp_transport");
        snprintf(r->rtsp_transport, sizeof r->rtsp_transport, "%s", it->valuestring);
    }
    /* The event tracker (docs/protocol.md, "Events"). */
    static const char *const tk[] = {"min_duration_s", "hold_s", "merge_gap_s"};
    double *tv[] = {&r->min_duration_s, &r->hold_s, &r->merge_gap_s};
    if ((it = cJSON_GetObjectItemCaseSensitive(root, "confirm"))) {
        if ((rc = get_int(c, it, "confirm", 1, 100, &r->confirm)) < 0)
            return rc;
        r->track_set |= 1u;
    }
    for (int k = 0; k < 3; k++)
        if ((it = cJSON_GetObjectItemCaseSensitive(root, tk[k]))) {
            if ((rc = get_num(c, it, tk[k], 0, 3600, tv[k])) < 0)
                return rc;
            r->track_set |= 2u << k;
        }
    if ((it = cJSON_GetObjectItemCaseSensitive(root, "max_pixels"))) {
        if ((rc = get_int(c, it, "max_pixels", 1024, 1L << 34, &r->stream_max_pixels)) < 0)
            return rc;
        if (r->stream_max_pixels > lim->max_pixels) {
            *c->wire = VG_WIRE_LIMIT;
            return vg_fail(c->err, c->errlen, VG_ELIMIT,
                           "max_pixels %ld is over this daemon's limit of %ld",
                           r->stream_max_pixels, lim->max_pixels);
        }
    }
    return 0;
}

static int parse_tree(struct ctx *c, const cJSON *root, const vg_proto_limits *lim, vg_request *r)
{
    if (!cJSON_IsObject(root))
        return bad(c, VG_WIRE_BAD_REQUEST, "the request must be a JSON %s", "object");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (id && !cJSON_IsNull(id)) {
        if (cJSON_IsString(id) && valid_id(id->valuestring, 1)) {
            snprintf(r->id, sizeof r->id, "%s", id->valuestring);
            snprintf(r->id_json, sizeof r->id_json, "\"%s\"", id->valuestring);
        } else if (cJSON_IsNumber(id) && id->valuedouble == floor(id->valuedouble) &&
                   fabs(id->valuedouble) <= 9007199254740991.0) {
            snprintf(r->id, sizeof r->id, "%.0f", id->valuedouble);
            snprintf(r->id_json, sizeof r->id_json, "%.0f", id->valuedouble);
        } else {
            return bad(c, VG_WIRE_BAD_REQUEST,
                       "'%s' must be an integer or 1-64 characters of A-Z a-z 0-9 . _ - :", "id");
        }
        r->has_id = 1;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "v");
    if (!v)
        return bad(c, VG_WIRE_BAD_VERSION, "missing '%s' (the protocol version, 1)", "v");
    if (!cJSON_IsNumber(v) || v->valuedouble != VG_PROTO_VERSION)
        return bad(c, VG_WIRE_BAD_VERSION, "unsupported protocol version ('%s' must be 1)", "v");
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(root, "op");
    if (!cJSON_IsString(op))
        return bad(c, VG_WIRE_BAD_REQUEST, "'%s' must be a string", "op");
    int which = -1;
    for (size_t i = 0; i < VG_ARRAY_LEN(ops); i++)
        if (!strcmp(op->valuestring, ops[i].name))
            which = (int)i;
    if (which < 0) {
        char q[72];
        *c->wire = VG_WIRE_UNKNOWN_OP;
        return vg_fail(c->err, c->errlen, VG_EINVAL,
                       "unknown op '%s' (ask, info, job, jobs, cancel, sync, watch, unwatch, "
                       "streams, events)",
                       clip(op->valuestring, q));
    }
    r->op = ops[which].op;
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *k = it->string ? it->string : "";
        if (dup_before(root, it))
            return dup_error(c, "", k);
        if (!strcmp(k, "v") || !strcmp(k, "op") || !strcmp(k, "id"))
            continue;
        if (!field_allowed(ops[which].fields, k)) {
            char q[72];
            *c->wire = VG_WIRE_BAD_REQUEST;
            return vg_fail(c->err, c->errlen, VG_EINVAL, "unknown field '%s' for op '%s'",
                           clip(k, q), ops[which].name);
        }
    }
    int rc;
    const cJSON *job = cJSON_GetObjectItemCaseSensitive(root, "job");
    if (job && (rc = get_job_id(c, job, r->job)) < 0)
        return rc;
    switch (r->op) {
    case VG_OP_JOB:
    case VG_OP_CANCEL:
    case VG_OP_SYNC:
        if (!job)
            return bad(c, VG_WIRE_BAD_REQUEST, "missing '%s'", "job");
        return 0;
    case VG_OP_JOBS: {
        const cJSON *lm = cJSON_GetObjectItemCaseSensitive(root, "limit");
        long l = 100;
        if (lm && (rc = get_int(c, lm, "limit", 1, 1000, &l)) < 0)
            return rc;
        r->limit = (int)l;
        return 0;
    }
    case VG_OP_INFO:
    case VG_OP_STREAMS:
        return 0;
    case VG_OP_WATCH:
    case VG_OP_UNWATCH:
    case VG_OP_EVENTS:
        return parse_stream_op(c, root, lim, r);
    case VG_OP_ASK:
        break;
    }
    r->sampling.start = r->sampling.end = -1;
    const cJSON *video = cJSON_GetObjectItemCaseSensitive(root, "video");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "question");
    if (!video)
        return bad(c, VG_WIRE_BAD_REQUEST, "missing '%s' (a path or URL)", "video");
    if (!q)
        return bad(c, VG_WIRE_BAD_REQUEST, "missing '%s'", "question");
    if ((rc = get_str(c, video, "video", VG_VIDEO_MAX, &r->video)) < 0)
        return rc;
    if ((rc = get_str(c, q, "question", VG_TEXT_MAX, &r->question)) < 0)
        return rc;
    const cJSON *sys = cJSON_GetObjectItemCaseSensitive(root, "system");
    if (sys && !cJSON_IsNull(sys) && (rc = get_str(c, sys, "system", VG_TEXT_MAX, &r->system)) < 0)
        return rc;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "sampling");
    if (s && (rc = parse_sampling(c, s, lim, &r->sampling)) < 0)
        return rc;
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "generation");
    if (g && (rc = parse_generation(c, g, lim, &r->gen)) < 0)
        return rc;
    const cJSON *dl = cJSON_GetObjectItemCaseSensitive(root, "deadline_s");
    if (dl) {
        double d;
        if ((rc = get_num(c, dl, "deadline_s", 0.001, 1e9, &d)) < 0)
            return rc;
        if (d > lim->deadline_s) {
            *c->wire = VG_WIRE_LIMIT;
            return vg_fail(c->err, c->errlen, VG_ELIMIT,
                           "deadline_s %g is over this daemon's limit of %g s", d, lim->deadline_s);
        }
        r->deadline_s = d;
    }
    return 0;
}

int vg_proto_parse(const char *data, size_t len, const vg_proto_limits *lim, vg_request *out,
                   const char **wire_code, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *dummy;
    if (!wire_code)
        wire_code = &dummy;
    *wire_code = NULL;
    if (lim->max_message_size && len > lim->max_message_size) {
        *wire_code = VG_WIRE_TOO_LARGE;
        return vg_fail(err, errlen, VG_EMSGSIZE, "the request is %zu bytes; the limit is %zu", len,
                       lim->max_message_size);
    }
    if (len == 0 || !data) {
        *wire_code = VG_WIRE_BAD_JSON;
        return vg_fail(err, errlen, VG_EFORMAT, "empty request");
    }
    if (scan_text(data, len, err, errlen) < 0) {
        *wire_code = VG_WIRE_BAD_REQUEST;
        return VG_EINVAL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!root) {
        *wire_code = VG_WIRE_BAD_JSON;
        size_t at = end && end >= data && end <= data + len ? (size_t)(end - data) : 0;
        return vg_fail(err, errlen, VG_EFORMAT, "invalid JSON near byte %zu", at);
    }
    /* Only whitespace (or a terminating NUL) may follow the object. */
    for (const char *p = end; p && p < data + len; p++) {
        if (*p == 0 && p == data + len - 1)
            break;
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            cJSON_Delete(root);
            *wire_code = VG_WIRE_BAD_JSON;
            return vg_fail(err, errlen, VG_EFORMAT,
                           "trailing data after the JSON object at byte %zu", (size_t)(p - data));
        }
    }
    struct ctx c = {wire_code, err, errlen};
    int rc = parse_tree(&c, root, lim, out);
    cJSON_Delete(root);
    if (rc < 0) {
        char keep[sizeof out->id_json];
        memcpy(keep, out->id_json, sizeof keep);
        vg_request_clear(out);
        memset(out, 0, sizeof *out);
        memcpy(out->id_json, keep, sizeof keep);
        if (!*wire_code)
            *wire_code = VG_WIRE_BAD_REQUEST;
        return rc;
    }
    return 0;
}

char *vg_proto_error_reply(const char *id_json, const char *code, const char *message, size_t *len)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_CreateObject();
    if (!o || !e) {
        cJSON_Delete(o);
        cJSON_Delete(e);
        return NULL;
    }
    cJSON_AddNumberToObject(o, "v", VG_PROTO_VERSION);
    cJSON *id = id_json && *id_json ? cJSON_Parse(id_json) : cJSON_CreateNull();
    cJSON_AddItemToObject(o, "id", id ? id : cJSON_CreateNull());
    cJSON_AddFalseToObject(o, "ok");
    cJSON_AddStringToObject(e, "code", code);
    /* A sentence may quote a path cut short by its buffer, or a file's text: repair it. A URL it
     * quotes loses its credentials (each "user:pass" becomes "***": at most 3 bytes more a URL). */
    size_t mlen = message ? strlen(message) : 0;
    char *clean = malloc(2 * mlen + 4);
    if (clean)
        mlen = vg_url_redact(message, clean, 2 * mlen + 4);
    char stackbuf[1024];
    char *fixed = 3 * mlen + 1 <= sizeof stackbuf ? stackbuf : malloc(3 * mlen + 1);
    if (fixed)
        vg_utf8_sanitize(clean ? clean : "", clean ? mlen : 0, fixed, 3 * mlen + 1);
    free(clean);
    cJSON_AddStringToObject(e, "message", fixed ? fixed : "(out of memory)");
    if (fixed != stackbuf)
        free(fixed);
    cJSON_AddItemToObject(o, "error", e);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (s && len)
        *len = strlen(s);
    return s;
}

static int under_root(const char *path, const char *root)
{
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/')
        return path[0] == '/';
    return strncmp(path, root, n) == 0 && (path[n] == '/' || path[n] == 0);
}

static int in_list(const char *list, const char *word, size_t n)
{
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncmp(p, word, n) == 0)
            return 1;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

#define OUTSIDE_ROOTS "'%s' is outside the configured media roots, or cannot be read there"

/* Whether path's last component is absent (lstat: ENOENT, so not a dangling link) and its
 * directory resolves inside one of roots. */
static int missing_inside(const char *path, const char (*roots)[VG_CFG_STR], int n_roots)
{
    struct stat st;
    if (lstat(path, &st) == 0 || errno != ENOENT)
        return 0;
    char dir[PATH_MAX], real[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof dir)
        return 0;
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash || !slash[1])
        return 0;
    if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    if (!realpath(dir, real) || stat(real, &st) != 0 || !S_ISDIR(st.st_mode))
        return 0;
    for (int i = 0; i < n_roots; i++)
        if (under_root(real, roots[i]))
            return 1;
    return 0;
}

/* Component by component beneath rootfd, following no link at all: every directory with O_PATH |
 * O_DIRECTORY | O_NOFOLLOW, the last component with flags | O_NOFOLLOW ("..", or a link on the way,
 * fails). */
static int open_beneath_nofollow(int rootfd, const char *rel, int flags)
{
    char buf[PATH_MAX];
    size_t n = strlen(rel);
    if (n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, rel, n + 1);
    int cur = rootfd;
    char *save = NULL;
    char *c = strtok_r(buf, "/", &save);
    while (c && !strcmp(c, "."))
        c = strtok_r(NULL, "/", &save);
    if (!c) {
        errno = EISDIR;
        return -1;
    }
    while (c) {
        char *next = strtok_r(NULL, "/", &save);
        while (next && !strcmp(next, "."))
            next = strtok_r(NULL, "/", &save);
        int fd = -1;
        if (!strcmp(c, ".."))
            errno = EXDEV;
        else if (next)
            fd = openat(cur, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        else
            fd = openat(cur, c, flags | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        if (cur != rootfd)
            close(cur);
        if (fd < 0) {
            errno = e;
            return -1;
        }
        cur = fd;
        c = next;
    }
    return cur;
}

int vg_daemon_open_beneath(int rootfd, const char *rel, int flags, int no_openat2)
{
    if (!no_openat2) {
        struct open_how how;
        memset(&how, 0, sizeof how);
        how.flags = (uint64_t)(flags | O_CLOEXEC);
        how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
        long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
        /* ENOSYS: a kernel before 5.6; EPERM: a seccomp filter that does not know openat2 (the
         * walk below is stricter, so falling back is never weaker). */
        if (fd >= 0 || (errno != ENOSYS && errno != EPERM))
            return (int)fd;
    }
    return open_beneath_nofollow(rootfd, rel, flags);
}

#define OPEN_FAILED "'%s' cannot be opened: %s"

/* Opens real (a realpath() result under root) beneath root: first O_PATH to see what it is without
 * opening it (a FIFO would block, a device might act), then, when fd is wanted, for reading; both
 * must be the same regular file. An escape, a link swapped in, a name gone, an unreadable file: the
 * one answer for outside the roots. */
static int open_under_root(const char *path, const char *real, const char *root, int *fd, char *err,
                           size_t errlen)
{
    size_t n = strlen(root);
    const char *rel = (n == 1 && root[0] == '/') ? real + 1 : real + n;
    while (*rel == '/')
        rel++;
    if (!*rel)
        return vg_fail(err, errlen, VG_EINVAL, "'%s' is not a regular file", path);
    int rootfd = open(root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0) {
        int e = errno;
        if (e == EMFILE || e == ENFILE)
            return vg_fail(err, errlen, VG_EBUSY, OPEN_FAILED, path, strerror(e));
        return vg_fail(err, errlen, VG_EPATH, OUTSIDE_ROOTS, path);
    }
    int rc = 0, pfd = -1, rfd = -1;
    struct stat ps, rs;
    pfd = vg_daemon_open_beneath(rootfd, rel, O_PATH, 0);
    if (pfd < 0 || fstat(pfd, &ps) != 0) {
        int e = errno;
        rc = e == EMFILE || e == ENFILE
                 ? vg_fail(err, errlen, VG_EBUSY, OPEN_FAILED, path, strerror(e))
             : e == ENOMEM ? vg_fail(err, errlen, VG_ENOMEM, OPEN_FAILED, path, strerror(e))
                           : vg_fail(err, errlen, VG_EPATH, OUTSIDE_ROOTS, path);
    } else if (S_ISLNK(ps.st_mode)) { /* a link swapped in, seen by the no-follow walk */
        rc = vg_fail(err, errlen, VG_EPATH, OUTSIDE_ROOTS, path);
    } else if (!S_ISREG(ps.st_mode)) {
        rc = vg_fail(err, errlen, VG_EINVAL, "'%s' is not a regular file", path);
    } else if (fd) {
        rfd = vg_daemon_open_beneath(rootfd, rel, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
        if (rfd < 0) {
            int e = errno;
            rc = e == EMFILE || e == ENFILE
                     ? vg_fail(err, errlen, VG_EBUSY, OPEN_FAILED, path, strerror(e))
                     : vg_fail(err, errlen, VG_EPATH, OUTSIDE_ROOTS, path);
        } else if (fstat(rfd, &rs) != 0 || rs.st_dev != ps.st_dev || rs.st_ino != ps.st_ino) {
            rc = vg_fail(err, errlen, VG_EPATH, OUTSIDE_ROOTS, path); /* swapped in between */
        }
    }
    if (pfd >= 0)
        close(pfd);
    close(rootfd);
    if (rc < 0) {
        if (rfd >= 0)
            close(rfd);
        return rc;
    }
    if (fd)
        *fd = rfd;
    return 0;
}

static int media_check(const char *video, const char (*roots)[VG_CFG_STR], int n_roots,
                       const char *allowed, char *resolved, size_t resolved_len, int *is_url,
                       int *fd, char *err, size_t errlen)
{
    if (!video || !*video)
        return vg_fail(err, errlen, VG_EINVAL, "empty video");
    for (const char *p = video; *p; p++)
        if ((unsigned char)*p < 0x20)
            return vg_fail(err, errlen, VG_EINVAL, "control character in the video name");
    /* A scheme is letters, digits, + - . before "://" or before ':' (file:, data:, concat:, ...).
     */
    const char *colon = strchr(video, ':');
    const char *slash = strchr(video, '/');
    const char *path = video;
    if (colon && (!slash || colon < slash) && colon > video) {
        size_t n = (size_t)(colon - video);
        for (size_t i = 0; i < n; i++) {
            char ch = video[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '+' || ch == '-' || ch == '.'))
                return vg_fail(err, errlen, VG_EPROTOCOL, "'%.*s' is not a URL scheme", (int)n,
                               video);
        }
        if (n == 4 && strncasecmp(video, "file", 4) == 0) {
            path = colon + 1;
            if (strncmp(path, "//", 2) == 0) {
                path += 2; /* file:///abs/path */
                if (*path != '/')
                    return vg_fail(err, errlen, VG_EPATH, "file: URLs must name a local path");
            }
        } else {
            if (!in_list(allowed, video, n))
                return vg_fail(err, errlen, VG_EPROTOCOL,
                               "the protocol '%.*s' is not allowed (allowed: %s)", (int)n, video,
                               *allowed ? allowed : "none");
            if (strncmp(colon, "://", 3) != 0)
                return vg_fail(err, errlen, VG_EPROTOCOL, "'%.*s' URLs need '://'", (int)n, video);
            if (strlen(video) >= resolved_len)
                return vg_fail(err, errlen, VG_EINVAL, "the URL is too long");
            snprintf(resolved, resolved_len, "%s", video);
            *is_url = 1;
            return 0;
        }
    }
    if (path[0] != '/')
        return vg_fail(err, errlen, VG_EPATH, "video paths must be absolute");
    if (n_roots == 0)
        return vg_fail(err, errlen, VG_EPATH,
                       "local files are disabled: no media_roots are configured");
    /* One answer for everything outside the roots, whether it exists or not (the daemon must not
     * be an oracle for files it may not read): only a name whose directory resolves inside a root
     * and that is itself absent (not even a dangling link) gets "not found". */
    char real[PATH_MAX];
    if (!realpath(path, real)) {
        int e = errno;
        if (e == ENOENT && missing_inside(path, roots, n_roots))
            return vg_fail(err, errlen, VG_ENOENT, "'%s': no such file in the media roots", path);
        return vg_fail(err, errlen, VG_EPATH, OUTSIDE_ROOTS, path);
    }
    int root = -1;
    for (int i = 0; i < n_roots && root < 0; i++)
        if (under_root(real, roots[i]))
            root = i;
    if (root < 0)
        return vg_fail(err, errlen, VG_EPATH, OUTSIDE_ROOTS, path);
    if (strlen(real) >= resolved_len)
        return vg_fail(err, errlen, VG_EINVAL, "the path is too long");
    int rc = open_under_root(path, real, roots[root], fd, err, errlen);
    if (rc < 0)
        return rc;
    snprintf(resolved, resolved_len, "%s", real);
    *is_url = 0;
    return 0;
}

int vg_daemon_media_check(const char *video, const char (*roots)[VG_CFG_STR], int n_roots,
                          const char *allowed, char *resolved, size_t resolved_len, int *is_url,
                          char *err, size_t errlen)
{
    return media_check(video, roots, n_roots, allowed, resolved, resolved_len, is_url, NULL, err,
                       errlen);
}

int vg_daemon_media_open(const char *video, const char (*roots)[VG_CFG_STR], int n_roots,
                         const char *allowed, char *resolved, size_t resolved_len, int *is_url,
                         int *fd, char *err, size_t errlen)
{
    int f = -1;
    int rc = media_check(video, roots, n_roots, allowed, resolved, resolved_len, is_url, &f, err,
                         errlen);
    if (rc == 0)
        *fd = *is_url ? -1 : f;
    return rc;
}

struct vg_media_policy {
    char (*roots)[VG_CFG_STR];
    int n_roots;
    char whitelist[VG_CFG_STR + 32];
    char *input;  /* the checked path (NULL for a URL) */
    int input_fd; /* its descriptor from the check, or -1 */
};

int vg_media_policy_create(const vg_daemon_config *cfg, int is_url, const char *input, int input_fd,
                           vg_media_policy **out)
{
    vg_media_policy *p = calloc(1, sizeof *p);
    if (!p) {
        if (input_fd >= 0)
            close(input_fd);
        return VG_ENOMEM;
    }
    p->input_fd = input_fd;
    if (input_fd >= 0 && !(p->input = strdup(input ? input : ""))) {
        vg_media_policy_free(p);
        return VG_ENOMEM;
    }
    if (cfg->n_media_roots > 0) {
        p->roots = malloc((size_t)cfg->n_media_roots * sizeof *p->roots);
        if (!p->roots) {
            vg_media_policy_free(p);
            return VG_ENOMEM;
        }
        memcpy(p->roots, cfg->media_roots, (size_t)cfg->n_media_roots * sizeof *p->roots);
        p->n_roots = cfg->n_media_roots;
    }
    if (is_url) /* RTSP's media may come over RTP/UDP (rtsp_transport "udp" or "auto") */
        snprintf(p->whitelist, sizeof p->whitelist, "%s,tcp,tls,crypto%s", cfg->allowed_protocols,
                 in_list(cfg->allowed_protocols, "rtsp", 4) ? ",rtp,udp" : "");
    else
        snprintf(p->whitelist, sizeof p->whitelist, "file");
    *out = p;
    return 0;
}

void vg_media_policy_free(vg_media_policy *p)
{
    if (!p)
        return;
    if (p->input_fd >= 0)
        close(p->input_fd);
    free(p->input);
    free(p->roots);
    free(p);
}

const char *vg_media_policy_whitelist(const vg_media_policy *p)
{
    return p->whitelist;
}

int vg_media_policy_allow(void *opaque, const char *url, char *err, size_t errlen)
{
    const vg_media_policy *p = opaque;
    char resolved[PATH_MAX];
    int is_url = 0;
    return vg_daemon_media_check(url, (const char(*)[VG_CFG_STR])p->roots, p->n_roots, "", resolved,
                                 sizeof resolved, &is_url, err, errlen);
}

int vg_media_policy_open(void *opaque, const char *url, int *fd, char *err, size_t errlen)
{
    const vg_media_policy *p = opaque;
    const char *path = url;
    if (strncasecmp(path, "file:", 5) == 0) {
        path += 5;
        if (strncmp(path, "//", 2) == 0)
            path += 2;
    }
    if (p->input_fd >= 0 && p->input && !strcmp(path, p->input)) {
        /* The input itself: the descriptor its check opened (a new one on the same open file;
         * the pipeline reads with pread, so the shared offset does not matter). */
        int d = fcntl(p->input_fd, F_DUPFD_CLOEXEC, 0);
        if (d < 0)
            return vg_fail(err, errlen, errno == EMFILE || errno == ENFILE ? VG_EBUSY : VG_EIO,
                           OPEN_FAILED, path, strerror(errno));
        *fd = d;
        return 0;
    }
    char resolved[PATH_MAX];
    int is_url = 0, f = -1;
    int rc = media_check(url, (const char(*)[VG_CFG_STR])p->roots, p->n_roots, "", resolved,
                         sizeof resolved, &is_url, &f, err, errlen);
    if (rc < 0)
        return rc;
    if (is_url || f < 0) /* "" allows no scheme: unreachable, but never return without a file */
        return vg_fail(err, errlen, VG_EPATH, OUTSIDE_ROOTS, url);
    *fd = f;
    return 0;
}
