/*
 * utf8.c: strict UTF-8 validation (RFC 3629) and repair, for everything that crosses the wire.
 *
 * Used by the request parser (invalid UTF-8 is refused) and by the reply path (a last line of
 * defence: a reply or event with an invalid sequence, e.g. from a model that emits half a
 * character, leaves with U+FFFD in its place, so no client ever receives bytes that are not JSON).
 * Pure functions, any thread.
 */
#include "common.h"

#include <string.h>

/* Length of the valid sequence at s[0..n), or 0 when it is not one. */
static size_t seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xC2 || c > 0xF4)
        return 0; /* continuation byte, overlong 2-byte lead, or above U+10FFFF */
    size_t need = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (n < need)
        return 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c == 0xE0)
        lo = 0xA0; /* overlong */
    else if (c == 0xED)
        hi = 0x9F; /* surrogates */
    else if (c == 0xF0)
        lo = 0x90; /* overlong */
    else if (c == 0xF4)
        hi = 0x8F; /* above U+10FFFF */
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return need;
}

size_t vg_utf8_check(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = seq_len(u + i, len - i);
        if (!k)
            return i;
        i += k;
    }
    return len;
}

size_t vg_utf8_sanitize(const char *s, size_t len, char *out, size_t cap)
{
    if (cap == 0)
        return 0;
    out[0] = '\0';
    if (len > (cap - 1) / 3)
        return 0;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        size_t k = u[i] == 0 ? 0 : u[i] < 0x80 ? 1 : seq_len(u + i, len - i);
        if (k) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    return o;
}
