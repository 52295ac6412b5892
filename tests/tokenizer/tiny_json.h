/*
 * tiny_json.h: builds small byte-level tokenizer.json files for the tokenizer tests.
 *
 * The vocabulary holds the 256 byte symbols of GPT-2's bytes_to_unicode (computed here
 * independently of the library: byte b has id b), the tokens made by the given merges (ids 256 on),
 * and added tokens at the real, sparse Qwen ids. Test-only, single-threaded.
 */
#ifndef VG_TESTS_TINY_JSON_H
#define VG_TESTS_TINY_JSON_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_putn(b, tmp, (size_t)n);
}

/* GPT-2 bytes_to_unicode, as UTF-8 (1 or 2 bytes + NUL). */
static void gpt2_byte_char(int b, char out[3])
{
    int cp, n = 0;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
        cp = b;
    else {
        cp = 256;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255)))
                cp++;
    }
    if (cp < 0x80)
        out[n++] = (char)cp;
    else {
        out[n++] = (char)(0xC0 | (cp >> 6));
        out[n++] = (char)(0x80 | (cp & 0x3F));
    }
    out[n] = 0;
}

/* A byte string written in byte-level symbols, JSON-escaped, into b. */
static void sb_symbols(sbuf *b, const char *bytes)
{
    for (const unsigned char *s = (const unsigned char *)bytes; *s; s++) {
        char c[3];
        gpt2_byte_char(*s, c);
        if (c[0] == '"' || c[0] == '\\')
            sb_putn(b, "\\", 1);
        sb_putn(b, c, strlen(c));
    }
}

typedef struct tiny_opts {
    const char *const *merges; /* pairs of raw byte strings: left, right, left, right, ... */
    int n_merges;
    int array_merges;          /* 1: ["a","b"], 0: "a b" */
    const char *normalizer;    /* JSON text, or NULL to leave the key out */
    const char *pre_tokenizer; /* JSON text, or NULL to leave the key out */
} tiny_opts;

/* Returns a malloc'd tokenizer.json text. */
static char *tiny_json(const tiny_opts *o)
{
    sbuf b = {0};
    sb_printf(&b, "{\"version\":\"1.0\",\"added_tokens\":["
                  "{\"id\":151643,\"content\":\"<|endoftext|>\",\"special\":true},"
                  "{\"id\":151644,\"content\":\"<|im_start|>\",\"special\":true},"
                  "{\"id\":151645,\"content\":\"<|im_end|>\",\"special\":true},"
                  "{\"id\":151667,\"content\":\"<think>\",\"special\":false},"
                  "{\"id\":151668,\"content\":\"<think>>\",\"special\":false}],");
    if (o->normalizer)
        sb_printf(&b, "\"normalizer\":%s,", o->normalizer);
    if (o->pre_tokenizer)
        sb_printf(&b, "\"pre_tokenizer\":%s,", o->pre_tokenizer);
    sb_printf(&b, "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (int i = 0; i < 256; i++) {
        sb_putn(&b, i ? ",\"" : "\"", i ? 2 : 1);
        char one[2] = {(char)i, 0};
        if (i == 0) {
            char c[3];
            gpt2_byte_char(0, c);
            sb_putn(&b, c, strlen(c));
        } else
            sb_symbols(&b, one);
        sb_printf(&b, "\":%d", i);
    }
    for (int k = 0; k < o->n_merges; k++) {
        char joined[256];
        snprintf(joined, sizeof joined, "%s%s", o->merges[2 * k], o->merges[2 * k + 1]);
        int dup = 0; /* a merged token made by an earlier merge is not listed twice */
        for (int j = 0; j < k; j++) {
            char prev[256];
            snprintf(prev, sizeof prev, "%s%s", o->merges[2 * j], o->merges[2 * j + 1]);
            dup |= strcmp(prev, joined) == 0;
        }
        if (dup)
            continue;
        sb_putn(&b, ",\"", 2);
        sb_symbols(&b, joined);
        sb_printf(&b, "\":%d", 256 + k);
    }
    sb_printf(&b, "},\"merges\":[");
    for (int k = 0; k < o->n_merges; k++) {
        if (k)
            sb_putn(&b, ",", 1);
        sb_putn(&b, o->array_merges ? "[\"" : "\"", o->array_merges ? 2 : 1);
        sb_symbols(&b, o->merges[2 * k]);
        sb_putn(&b, o->array_merges ? "\",\"" : " ", o->array_merges ? 3 : 1);
        sb_symbols(&b, o->merges[2 * k + 1]);
        sb_putn(&b, o->array_merges ? "\"]" : "\"", o->array_merges ? 2 : 1);
    }
    sb_printf(&b, "]}}");
    return b.p;
}

#endif
