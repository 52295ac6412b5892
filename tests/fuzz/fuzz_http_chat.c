/*
 * fuzz_http_chat.c: libFuzzer harness for the OpenAI-compatible door's request translation
 * (daemon/http_chat.c): an arbitrary POST /v1/chat/completions body, parsed by cJSON as http.c
 * does, through vg_chat_translate, then what http.c does with the result that needs no
 * connection: the ask (with its video URL) through the native request parser, inline base64 and
 * frames through vg_b64_decode and vg_looks_like_video, the spool file's extension.
 * Invariants: a refusal has status 400 or 500, a wire code and a message of printable text or
 * valid UTF-8; an accepted request has an ask, exactly one of a URL, inline data or frames, at
 * most max_frames_limit frames played at 0.01-240 fps, and an extension of [a-z0-9].
 */
#define _GNU_SOURCE
#include "common.h"
#include "daemon.h"
#include "fuzz_util.h"
#include "http_chat.h"

#include <string.h>

#define LIMIT      8
#define B64_MAX    (64u << 10) /* base64 bytes decoded per input at most (speed) */
#define MAX_TOKENS 64

static void decode(const char *p, size_t len)
{
    if (len > B64_MAX)
        len = B64_MAX;
    unsigned char *d = malloc(len / 4 * 3 + 3);
    FUZZ_CHECK(d != NULL, "out of memory");
    long n = vg_b64_decode(p, len, d);
    FUZZ_CHECK(n <= (long)(len / 4 * 3 + 3), "vg_b64_decode wrote past its bound");
    if (n >= 0)
        (void)vg_looks_like_video(d, (size_t)n);
    free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *req = cJSON_ParseWithLength((const char *)data, size);
    vg_chat_req ch;
    const char *code = NULL;
    char err[256];
    int st = vg_chat_translate(req, LIMIT, MAX_TOKENS, &ch, &code, err, sizeof err);
    if (st) {
        FUZZ_CHECK(st == 400 || st == 500, "a refusal with another status");
        FUZZ_CHECK(code != NULL && *code, "a refusal without a wire code");
        FUZZ_CHECK(vg_utf8_check(err, strlen(err)) == strlen(err), "the message is not UTF-8");
        FUZZ_CHECK(ch.ask == NULL && ch.frames == NULL, "a refusal left something owned");
        cJSON_Delete(req);
        return 0;
    }
    FUZZ_CHECK(ch.ask != NULL, "accepted without an ask");
    FUZZ_CHECK((ch.url != NULL) + (ch.b64 != NULL) + (ch.n_frames > 0) == 1,
               "not exactly one video source");
    FUZZ_CHECK(ch.n_frames <= LIMIT, "more frames than the limit kept");
    if (ch.n_frames)
        FUZZ_CHECK(ch.frames_fps >= 0.01 && ch.frames_fps <= 240, "frames_fps out of range");
    FUZZ_CHECK(ch.max_tokens == MAX_TOKENS || cJSON_GetObjectItemCaseSensitive(req, "max_tokens") ||
                   cJSON_GetObjectItemCaseSensitive(req, "max_completion_tokens"),
               "a token limit from nowhere");
    if (ch.url)
        cJSON_AddStringToObject(ch.ask, "video", ch.url);
    char *wire = cJSON_PrintUnformatted(ch.ask);
    FUZZ_CHECK(wire != NULL, "the ask does not print");
    static const vg_proto_limits lim = {1 << 20, 4096, 600, 768, 1 << 24};
    vg_request r;
    const char *wcode = NULL;
    char perr[768];
    if (vg_proto_parse(wire, strlen(wire), &lim, &r, &wcode, perr, sizeof perr) == 0)
        vg_request_clear(&r); /* a refusal needs no clearing */
    else
        FUZZ_CHECK(wcode != NULL, "the native parser refused the ask without a wire code");
    free(wire);
    if (ch.b64)
        decode(ch.b64, ch.b64_len);
    for (int i = 0; i < ch.n_frames; i++)
        decode(ch.frames[i].p, ch.frames[i].len);
    char ext[16];
    vg_chat_spool_ext(&ch, ext, sizeof ext);
    FUZZ_CHECK(ext[0] != 0, "an empty extension");
    for (const char *e = ext; *e; e++)
        FUZZ_CHECK((*e >= 'a' && *e <= 'z') || (*e >= '0' && *e <= '9'), "a bad extension");
    vg_chat_free(&ch);
    cJSON_Delete(req);
    return 0;
}
