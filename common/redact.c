/*
 * redact.c: vg_url_redact, the one place where the credentials of a URL (its userinfo,
 * "user:password@") are taken out of text that leaves the daemon: log lines, replies, events and
 * error sentences (which quote URLs as FFmpeg and the media policy report them).
 *
 * The userinfo is found as libavformat finds it (av_url_split): after "scheme://", the authority
 * runs to the first '/', '?' or '#' (or white space, since the URL sits in a sentence), and the
 * userinfo is everything before its last '@'. So whatever FFmpeg would send as credentials is
 * replaced by "***", wherever the URL appears in the text and however many URLs it holds. The
 * value of an "Authorization:" header is replaced too: FFmpeg's RTSP and HTTP debug output shows
 * the requests it sends, and a Basic authorization is the password in base64. A header value ends
 * at a line break or at two spaces (vg_log turns each CR and LF into a space).
 *
 * Pure; any thread.
 */
#include "common.h"

#include <string.h>

static int scheme_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '-' || c == '.';
}

/* Appends n bytes of s to out[*o] within cap - 1 bytes (the rest is dropped). */
static void put(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    size_t room = cap - 1 - *o;
    if (n > room)
        n = room;
    memcpy(out + *o, s, n);
    *o += n;
}

size_t vg_url_redact(const char *text, char *out, size_t cap)
{
    if (!out || cap == 0)
        return 0;
    size_t o = 0;
    const char *p = text ? text : "";
    static const char auth_hdr[] = "Authorization:";
    while (*p) {
        const char *sep = strstr(p, "://");
        const char *hdr = strstr(p, auth_hdr);
        if (hdr && (!sep || hdr < sep)) {
            const char *v = hdr + sizeof auth_hdr - 1;
            const char *end = v;
            while (*end && *end != '\r' && *end != '\n' &&
                   !(end[0] == ' ' && end[1] == ' ' && end > v + 1))
                end++;
            put(out, cap, &o, p, (size_t)(v - p));
            put(out, cap, &o, " ***", 4);
            p = end;
            continue;
        }
        if (!sep) {
            put(out, cap, &o, p, strlen(p));
            break;
        }
        const char *auth = sep + 3;
        size_t alen = strcspn(auth, "/?#\t\n\r\f\v ");
        const char *at = NULL;
        for (size_t i = 0; i < alen; i++)
            if (auth[i] == '@')
                at = auth + i;
        put(out, cap, &o, p, (size_t)(auth - p));
        if (at && sep > (text ? text : "") && scheme_char(sep[-1])) {
            put(out, cap, &o, "***", 3);
            p = at; /* the '@' and the host follow */
        } else {
            p = auth;
        }
    }
    out[o] = '\0';
    return o;
}
