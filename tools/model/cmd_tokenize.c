/*
 * cmd_tokenize.c: `vigil-model tokenize MODEL_DIR`, the tokenizer as a filter.
 *
 * Reads one JSON string per stdin line and writes, per line, the JSON array of its token ids (no
 * special tokens added; special-token text inside the string is parsed as the special token, as in
 * Hugging Face's tokenizer(text)). stdout is flushed after every line so a parent process can use
 * the command as a co-process. A line that is not one JSON string, or whose text is not valid
 * UTF-8, prints `null` (so output lines stay aligned with input lines), a message on stderr, and
 * makes the exit status 1 at the end. The JSON string is decoded here (not by cJSON) so that
 * "\u0000" keeps its byte. Single-threaded.
 */
#include "cmds.h"

#include "common.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: vigil-model tokenize [--no-special] MODEL_DIR|TOKENIZER_JSON\n\n"
        "Loads MODEL_DIR/tokenizer.json, reads one JSON string per line on stdin and prints one\n"
        "JSON array of token ids per line. No special tokens are added; special-token text in\n"
        "the string (\"<|im_start|>\") becomes its id unless --no-special is given. A bad line\n"
        "prints null and an error on stderr, and the exit status is then 1.\n");
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex4(const char *s, size_t n, size_t i, unsigned *v)
{
    if (n - i < 4)
        return -1;
    unsigned x = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval((unsigned char)s[i + k]);
        if (h < 0)
            return -1;
        x = x << 4 | (unsigned)h;
    }
    *v = x;
    return 0;
}

/* Decodes the JSON string that is the whole of line[0..n) (surrounding JSON whitespace allowed)
 * into out (capacity >= n), setting *m. Returns NULL or a static reason. */
static const char *json_string(const char *s, size_t n, char *out, size_t *m)
{
    size_t i = 0, o = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    while (n > i && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    if (i == n)
        return "empty line (expected a JSON string)";
    if (s[i] != '"')
        return "not a JSON string";
    i++;
    for (;;) {
        if (i >= n)
            return "unterminated JSON string";
        unsigned char c = (unsigned char)s[i++];
        if (c == '"')
            break;
        if (c < 0x20)
            return "unescaped control character in JSON string";
        if (c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        if (i >= n)
            return "unterminated escape";
        c = (unsigned char)s[i++];
        unsigned cp;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            out[o++] = (char)c;
            continue;
        case 'b':
            out[o++] = '\b';
            continue;
        case 'f':
            out[o++] = '\f';
            continue;
        case 'n':
            out[o++] = '\n';
            continue;
        case 'r':
            out[o++] = '\r';
            continue;
        case 't':
            out[o++] = '\t';
            continue;
        case 'u':
            if (hex4(s, n, i, &cp))
                return "bad \\u escape";
            i += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return "lone low surrogate in \\u escape";
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (n - i < 6 || s[i] != '\\' || s[i + 1] != 'u' || hex4(s, n, i + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return "lone high surrogate in \\u escape";
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            /* A \uXXXX escape is 6 input bytes and at most 4 output bytes (12 -> 4 for a pair). */
            if (cp < 0x80) {
                out[o++] = (char)cp;
            } else if (cp < 0x800) {
                out[o++] = (char)(0xC0 | cp >> 6);
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[o++] = (char)(0xE0 | cp >> 12);
                out[o++] = (char)(0x80 | (cp >> 6 & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[o++] = (char)(0xF0 | cp >> 18);
                out[o++] = (char)(0x80 | (cp >> 12 & 0x3F));
                out[o++] = (char)(0x80 | (cp >> 6 & 0x3F));
                out[o++] = (char)(0x80 | (cp & 0x3F));
            }
            continue;
        default:
            return "bad escape in JSON string";
        }
    }
    if (i != n)
        return "text after the JSON string";
    *m = o;
    return NULL;
}

int vg_cmd_tokenize(int argc, char **argv)
{
    int parse_special = 1;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--no-special") == 0) {
            parse_special = 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "vigil-model tokenize: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!dir) {
            dir = argv[i];
        } else {
            fprintf(stderr, "vigil-model tokenize: more than one MODEL_DIR\n");
            usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    char path[4096];
    struct stat st;
    if (stat(dir, &st) == 0 && S_ISREG(st.st_mode))
        snprintf(path, sizeof path, "%s", dir);
    else if ((size_t)snprintf(path, sizeof path, "%s/tokenizer.json", dir) >= sizeof path) {
        fprintf(stderr, "vigil-model tokenize: path too long\n");
        return 1;
    }
    char err[512] = "";
    vg_tokenizer *tok;
    int rc = vg_tokenizer_load(path, &tok, err, sizeof err);
    if (rc) {
        fprintf(stderr, "vigil-model tokenize: %s\n", err);
        return 1;
    }
    char *line = NULL, *text = NULL, *obuf = NULL;
    size_t line_cap = 0, text_cap = 0, obuf_cap = 0;
    ssize_t got;
    long lineno = 0;
    int status = 0;
    while ((got = getline(&line, &line_cap, stdin)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        if (n + 1 > text_cap) {
            char *p = realloc(text, n + 1);
            if (!p) {
                fprintf(stderr, "vigil-model tokenize: out of memory\n");
                status = 1;
                break;
            }
            text = p;
            text_cap = n + 1;
        }
        size_t m = 0;
        const char *why = json_string(line, n, text, &m);
        int32_t *ids = NULL;
        size_t n_ids = 0;
        if (!why && (rc = vg_tokenizer_encode(tok, text, m, parse_special, &ids, &n_ids)) != 0)
            why = rc == VG_EINVAL ? "the text is not valid UTF-8" : vg_strerror(rc);
        if (why) {
            fprintf(stderr, "vigil-model tokenize: line %ld: %s\n", lineno, why);
            fputs("null\n", stdout);
            fflush(stdout);
            status = 1;
            continue;
        }
        /* "[" + up to 11 chars and a comma per id + "]\n" */
        size_t need = n_ids * 12 + 4;
        if (need > obuf_cap) {
            char *p = realloc(obuf, need);
            if (!p) {
                free(ids);
                fprintf(stderr, "vigil-model tokenize: out of memory\n");
                status = 1;
                break;
            }
            obuf = p;
            obuf_cap = need;
        }
        size_t o = 0;
        obuf[o++] = '[';
        for (size_t k = 0; k < n_ids; k++)
            o += (size_t)snprintf(obuf + o, obuf_cap - o, k ? ",%d" : "%d", (int)ids[k]);
        obuf[o++] = ']';
        obuf[o++] = '\n';
        fwrite(obuf, 1, o, stdout);
        fflush(stdout);
        free(ids);
    }
    free(line);
    free(text);
    free(obuf);
    vg_tokenizer_free(tok);
    if (ferror(stdout)) {
        fprintf(stderr, "vigil-model tokenize: write error\n");
        status = 1;
    }
    return status;
}
