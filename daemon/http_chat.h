/*
 * http_chat.h: the transport-free half of vigild's OpenAI-compatible door (private to daemon/;
 * docs/http.md): a parsed POST /v1/chat/completions body translated into the native ask that the
 * one request path runs, and the pure helpers of its inline video upload. http.c owns the
 * connection, the spooling and the response; everything here is a function of its arguments, so
 * that tests/fuzz/fuzz_http_chat.c can drive it with arbitrary bodies.
 *
 * Threads: any; nothing is shared.
 */
#ifndef VG_DAEMON_HTTP_CHAT_H
#define VG_DAEMON_HTTP_CHAT_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* A base64 image frame inside the parsed request (borrowed: valid while the request lives). */
typedef struct vg_chat_frame {
    const char *p;
    size_t len;
} vg_chat_frame;

/* A translated chat request. Strings and frames point into the parsed request, which must outlive
 * this (url, b64, frames[i].p); ask and the frames array are owned (vg_chat_free). */
typedef struct vg_chat_req {
    cJSON *ask;      /* the native ask ({"v", "op": "ask", question, ...}) without its video */
    const char *url; /* the video as a URL or path, or NULL */
    const char *b64; /* or inline video as base64 (b64_len bytes) of type mime, or NULL */
    size_t b64_len;
    char mime[64];
    vg_chat_frame *frames; /* or image frames (n_frames of them), played at frames_fps */
    int n_frames;
    double frames_fps;
    int max_tokens;    /* the completion's token limit (the request's, else the default) */
    int stream;        /* "stream": true (SSE chunks) */
    int include_usage; /* "stream_options": {"include_usage": true} */
    char model[128];   /* the request's "model", "" when it names none */
} vg_chat_req;

/* Translates req (a parsed JSON value) into *out. max_frames_limit: the most image frames a
 * request may carry; default_max_new_tokens: the token limit when the request gives none.
 * Returns 0 with *out filled (free it with vg_chat_free), or the HTTP status of the refusal (400,
 * or 500 when out of memory) with *code (a static wire code) and a sentence in err; *out is then
 * empty. Never reads past what cJSON parsed. */
int vg_chat_translate(const cJSON *req, int max_frames_limit, int default_max_new_tokens,
                      vg_chat_req *out, const char **code, char *err, size_t errlen);

/* Frees what *c owns (ask, the frames array) and empties it. NULL is a no-op. */
void vg_chat_free(vg_chat_req *c);

/* Decodes base64 (standard or URL alphabet, padding optional, whitespace skipped) into out, whose
 * capacity must be at least len / 4 * 3 + 3. Returns the bytes written, or -1 on a character
 * outside base64. */
long vg_b64_decode(const char *s, size_t len, unsigned char *out);

/* Whether the first n bytes of d look like a container libavformat reads as video: ISO BMFF
 * (ftyp), Matroska/WebM (EBML), AVI/RIFF, MPEG-TS (0x47 sync), MPEG-PS, Ogg, FLV, QuickTime. */
int vg_looks_like_video(const unsigned char *d, size_t n);

/* The spool file's extension for c's inline video or frames ("mkv" for frames; from the data URL's
 * video/<type>, letters and digits only, else "mp4"): at most extlen - 1 bytes, NUL-terminated. */
void vg_chat_spool_ext(const vg_chat_req *c, char *ext, size_t extlen);

#endif
