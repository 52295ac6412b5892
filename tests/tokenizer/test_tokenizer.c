/*
 * test_tokenizer.c: unit tests of model/tokenizer.c on small byte-level tokenizer.json files built
 * at test time (tiny_json.h): the byte map, merge ranks in both merge formats, added tokens inside
 * text, NFC, pre-tokenizer choice, streaming detokenization (a 4-byte emoji split across tokens,
 * invalid UTF-8, small buffers), invalid input, and hostile tokenizer.json files. When ../shared is
 * present, a few fixed ids of the real Qwen3 tokenizer too; when vigil-model is built, its
 * `tokenize` command. Single-threaded except the thread-safety test.
 */
#include "common.h"
#include "model.h"

#include "tiny_json.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <utf8proc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vg_tok_test_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Writes json to a fresh file under tmpdir and loads it. Returns the load's result. */
static int load_text(const char *json, size_t n, vg_tokenizer **tok, char *err, size_t errlen)
{
    static int seq;
    char path[400];
    snprintf(path, sizeof path, "%s/tok%d.json", tmpdir, seq++);
    write_file(path, json, n);
    int rc = vg_tokenizer_load(path, tok, err, errlen);
    unlink(path);
    return rc;
}

static vg_tokenizer *load_tiny(const tiny_opts *o)
{
    char *json = tiny_json(o);
    vg_tokenizer *tok = NULL;
    char err[512] = "";
    int rc = load_text(json, strlen(json), &tok, err, sizeof err);
    free(json);
    if (rc)
        fail_msg("tiny tokenizer did not load: %s", err);
    return tok;
}

/* Encodes text (NUL-terminated) and compares with the expected ids (-2 terminates the list). */
static void expect_ids(const vg_tokenizer *tok, const char *text, int parse_special, ...)
{
    int32_t want[64];
    size_t nw = 0;
    va_list ap;
    va_start(ap, parse_special);
    for (int v; (v = va_arg(ap, int)) != -2;)
        want[nw++] = v;
    va_end(ap);
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = vg_tokenizer_encode(tok, text, strlen(text), parse_special, &ids, &n);
    assert_int_equal(rc, 0);
    int same = n == nw;
    for (size_t i = 0; same && i < n; i++)
        same = ids[i] == want[i];
    if (!same) {
        char got[512] = "", exp[512] = "";
        for (size_t i = 0; i < n && strlen(got) < 480; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", (int)ids[i]);
        for (size_t i = 0; i < nw; i++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%d ", (int)want[i]);
        free(ids);
        fail_msg("'%s': got [%s], expected [%s]", text, got, exp);
    }
    free(ids);
}

#define END (-2)

static const char *const MERGES_AB_FIRST[] = {"a", "b", "b", "c", "ab", "c", "a", "a"};
static const char *const MERGES_BC_FIRST[] = {"b", "c", "a", "b", "ab", "c", "a", "a"};

/* ------------------------------------------------------------------------------------------------
 */
static void test_byte_map(void **state)
{
    (void)state;
    tiny_opts o = {0};
    vg_tokenizer *tok = load_tiny(&o);
    /* The real special ids are sparse: the id space is the largest id + 1. */
    assert_int_equal(vg_tokenizer_vocab_size(tok), 151669);
    for (int b = 0; b < 256; b++) {
        char buf[8];
        assert_int_equal(vg_tokenizer_token_bytes(tok, b, buf, sizeof buf), 1);
        assert_int_equal((unsigned char)buf[0], b);
        char sym[3];
        gpt2_byte_char(b, sym);
        assert_int_equal(vg_tokenizer_token_id(tok, sym), b);
    }
    /* Well-known points of GPT-2's table. */
    assert_int_equal(vg_tokenizer_token_id(tok, "\xC4\xA0"), ' ');  /* U+0120 'Ġ' */
    assert_int_equal(vg_tokenizer_token_id(tok, "\xC4\x8A"), '\n'); /* U+010A 'Ċ' */
    assert_int_equal(vg_tokenizer_token_id(tok, "\xC5\x83"), 173);  /* U+0143 'Ń' */
    assert_int_equal(vg_tokenizer_token_id(tok, "\xC4\x80"), 0);    /* U+0100 'Ā' */
    assert_int_equal(vg_tokenizer_token_id(tok, "\xC2\xA1"), 161);  /* '¡' maps to itself */
    /* Every byte is its own id when encoded on its own; bytes >= 0x80 come from valid text. */
    expect_ids(tok, "\x01 ~", 1, 1, 32, 126, END);
    expect_ids(tok, "\xC3\xA9", 1, 0xC3, 0xA9, END);
    expect_ids(tok, "\xF0\x9F\x98\x80", 1, 0xF0, 0x9F, 0x98, 0x80, END);
    /* Holes and out-of-range ids are errors, not crashes. */
    char buf[64];
    assert_int_equal(vg_tokenizer_token_bytes(tok, 1000, buf, sizeof buf), VG_EINVAL);
    assert_int_equal(vg_tokenizer_token_bytes(tok, -1, buf, sizeof buf), VG_EINVAL);
    assert_int_equal(vg_tokenizer_token_bytes(tok, 151669, buf, sizeof buf), VG_EINVAL);
    assert_int_equal(vg_tokenizer_token_id(tok, "not a token"), -1);
    vg_tokenizer_free(tok);
    vg_tokenizer_free(NULL);
}

static void test_merge_ranks(void **state)
{
    (void)state;
    for (int fmt = 0; fmt < 2; fmt++) {
        tiny_opts o = {MERGES_AB_FIRST, 4, fmt, NULL, NULL};
        vg_tokenizer *tok = load_tiny(&o);
        /* a+b (rank 0) before b+c (rank 1), then ab+c (rank 2). */
        expect_ids(tok, "abc", 1, 258, END);
        expect_ids(tok, "bc", 1, 257, END);
        expect_ids(tok, "abab", 1, 256, 256, END);
        /* Leftmost first among equal ranks: aaa -> aa a. */
        expect_ids(tok, "aaa", 1, 259, 'a', END);
        expect_ids(tok, "aaaa", 1, 259, 259, END);
        vg_tokenizer_free(tok);

        tiny_opts o2 = {MERGES_BC_FIRST, 4, fmt, NULL, NULL};
        tok = load_tiny(&o2);
        /* b+c now has rank 0: a bc, and "a bc" is no merge. */
        expect_ids(tok, "abc", 1, 'a', 256, END);
        expect_ids(tok, "abcab", 1, 'a', 256, 257, END);
        vg_tokenizer_free(tok);
    }
}

static void test_added_tokens(void **state)
{
    (void)state;
    tiny_opts o = {MERGES_AB_FIRST, 4, 0, NULL, NULL};
    vg_tokenizer *tok = load_tiny(&o);
    expect_ids(tok, "x<|im_start|>ab<|im_end|>", 1, 'x', 151644, 256, 151645, END);
    expect_ids(tok, "<|im_start|><|im_start|>", 1, 151644, 151644, END);
    expect_ids(tok, "<|endoftext|>", 1, 151643, END);
    /* Longest match wins; a non-special added token is matched too. */
    expect_ids(tok, "<think>>", 1, 151668, END);
    expect_ids(tok, "<think>", 1, 151667, END);
    expect_ids(tok, "<think>x", 1, 151667, 'x', END);
    /* A partial special is plain text. */
    expect_ids(tok, "<|im_end", 1, '<', '|', 'i', 'm', '_', 'e', 'n', 'd', END);
    /* Text around a special is pre-tokenized on its own: " ab" keeps its space. */
    expect_ids(tok, "<|im_end|> ab", 1, 151645, ' ', 256, END);
    /* parse_special = 0: the text is plain. */
    int32_t *ids;
    size_t n;
    assert_int_equal(vg_tokenizer_encode(tok, "<|im_start|>", 12, 0, &ids, &n), 0);
    assert_int_equal(n, 12);
    for (size_t i = 0; i < n; i++)
        assert_true(ids[i] < 256);
    free(ids);
    assert_int_equal(vg_tokenizer_token_id(tok, "<|im_start|>"), 151644);
    assert_int_equal(vg_tokenizer_token_id(tok, "<think>"), 151667);
    assert_true(vg_tokenizer_is_special(tok, 151644));
    assert_false(vg_tokenizer_is_special(tok, 151667));
    assert_false(vg_tokenizer_is_special(tok, 'a'));
    assert_false(vg_tokenizer_is_special(tok, -5));
    char buf[64];
    assert_int_equal(vg_tokenizer_token_bytes(tok, 151644, buf, sizeof buf), 12);
    assert_memory_equal(buf, "<|im_start|>", 12);
    /* Too small a buffer is an error, never a truncation. */
    assert_int_equal(vg_tokenizer_token_bytes(tok, 151644, buf, 5), VG_ERANGE);
    assert_int_equal(vg_tokenizer_max_token_bytes(tok), strlen("<|endoftext|>"));
    vg_tokenizer_free(tok);
}

static void test_nfc(void **state)
{
    (void)state;
    static const char *const m[] = {"\xC3", "\xA9"}; /* é = C3 A9 */
    tiny_opts o = {m, 1, 1, "{\"type\":\"NFC\"}", NULL};
    vg_tokenizer *tok = load_tiny(&o);
    expect_ids(tok, "e\xCC\x81", 1, 256, END);           /* e + U+0301 composes to é */
    expect_ids(tok, "\xC3\xA9", 1, 256, END);            /* already NFC */
    expect_ids(tok, "\xE2\x84\xAB", 1, 0xC3, 0x85, END); /* U+212B ANGSTROM SIGN -> U+00C5 */
    /* Specials are never normalized, and text on both sides still is. */
    expect_ids(tok, "e\xCC\x81<|im_end|>e\xCC\x81", 1, 256, 151645, 256, END);
    vg_tokenizer_free(tok);

    tiny_opts raw = {m, 1, 1, "null", NULL};
    tok = load_tiny(&raw);
    expect_ids(tok, "e\xCC\x81", 1, 'e', 0xCC, 0x81, END);
    vg_tokenizer_free(tok);

    /* No normalizer key at all: Qwen's NFC. */
    tiny_opts dflt = {m, 1, 1, NULL, NULL};
    tok = load_tiny(&dflt);
    expect_ids(tok, "e\xCC\x81", 1, 256, END);
    vg_tokenizer_free(tok);
}

/* Without merges, ids are the bytes of the normalized text: compare them with utf8proc's NFC of
 * the whole string, over random mixes of starters, combining marks (in and out of canonical
 * order), Hangul jamo and syllables, singletons (U+212B) and text below U+0300. */
static void test_nfc_runs(void **state)
{
    (void)state;
    static const char *const atoms[] = {
        "a",
        "e",
        " ",
        "\n",
        "\xC3\xA9",
        "\xC3\x85",
        "\xCC\x81",
        "\xCC\x8A",
        "\xCC\xA3",
        "\xCD\x85",
        "\xE2\x84\xAB",
        "\xE1\x84\x80",
        "\xE1\x85\xA1",
        "\xE1\x86\xA8",
        "\xEA\xB0\x80",
        "\xE4\xB8\xAD",
        "\xF0\x9F\x98\x80",
        "\xE2\x80\x8D",
        "\xC2\xA0",
        "\xCB\x86",
        "\xCD\x80",
        "\xE0\xA4\x95\xE0\xA4\xBC",
        "\xE0\xA5\x98",
        "1",
    };
    tiny_opts o = {NULL, 0, 0, "{\"type\":\"NFC\"}", NULL};
    vg_tokenizer *tok = load_tiny(&o);
    uint64_t x = 88172645463325252ull;
    char *buf = malloc(8192);
    assert_non_null(buf);
    for (int round = 0; round < 400; round++) {
        size_t n = 0, pieces = 1 + (round % 40 == 0 ? 1500 : (size_t)(x % 30));
        for (size_t k = 0; k < pieces; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            const char *a = atoms[x % VG_ARRAY_LEN(atoms)];
            memcpy(buf + n, a, strlen(a));
            n += strlen(a);
        }
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)buf, (utf8proc_ssize_t)n, &nfc,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        assert_true(m >= 0);
        int32_t *ids;
        size_t ni;
        assert_int_equal(vg_tokenizer_encode(tok, buf, n, 1, &ids, &ni), 0);
        int same = ni == (size_t)m;
        for (size_t k = 0; same && k < ni; k++)
            same = ids[k] == nfc[k];
        if (!same)
            fail_msg("round %d: NFC differs from utf8proc's (%zu ids, %zd bytes)", round, ni, m);
        free(ids);
        free(nfc);
    }
    free(buf);
    vg_tokenizer_free(tok);
}

static void test_pre_tokenizer(void **state)
{
    (void)state;
    static const char *const m[] = {"1", "2", " ", "a", "\n", "\n"};
    /* No pre_tokenizer: the Qwen2 pattern, one digit per pre-token. */
    tiny_opts q = {m, 3, 0, NULL, NULL};
    vg_tokenizer *tok = load_tiny(&q);
    expect_ids(tok, "123", 1, '1', '2', '3', END);
    expect_ids(tok, " a", 1, 257, END);
    expect_ids(tok, "  a", 1, ' ', 257, END); /* \s+(?!\S) leaves the last space to " a" */
    expect_ids(tok, "x\n\ny", 1, 'x', 258, 'y', END);
    vg_tokenizer_free(tok);
    /* A lone ByteLevel with use_regex: GPT-2's pattern keeps digit runs together. */
    tiny_opts g = {m, 3, 0, NULL, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false}"};
    tok = load_tiny(&g);
    expect_ids(tok, "123", 1, 256, '3', END);
    vg_tokenizer_free(tok);
    /* The Split regex from the file is used: here, split at every character. */
    tiny_opts s = {m, 3, 0, NULL,
                   "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                   "{\"Regex\":\".\"},\"behavior\":\"Isolated\",\"invert\":false},"
                   "{\"type\":\"ByteLevel\",\"use_regex\":false}]}"};
    tok = load_tiny(&s);
    expect_ids(tok, " a", 1, ' ', 'a', END);
    vg_tokenizer_free(tok);
}

static void test_long_and_empty(void **state)
{
    (void)state;
    tiny_opts o = {MERGES_AB_FIRST, 4, 0, NULL, NULL};
    vg_tokenizer *tok = load_tiny(&o);
    int32_t *ids = NULL;
    size_t n = 99;
    assert_int_equal(vg_tokenizer_encode(tok, "", 0, 1, &ids, &n), 0);
    assert_int_equal(n, 0);
    assert_non_null(ids);
    free(ids);
    /* 200000 spaces then a letter: linear time, no regex stack trouble. */
    size_t len = 200001;
    char *s = malloc(len);
    assert_non_null(s);
    memset(s, ' ', len - 1);
    s[len - 1] = 'x';
    double t0 = vg_now_ms();
    assert_int_equal(vg_tokenizer_encode(tok, s, len, 1, &ids, &n), 0);
    assert_int_equal(n, len);
    assert_int_equal(ids[n - 1], 'x');
    free(ids);
    /* 100000 x "ab": one long letter run through BPE (heap merge loop). */
    for (size_t i = 0; i < len - 1; i++)
        s[i] = "ab"[i & 1];
    assert_int_equal(vg_tokenizer_encode(tok, s, len - 1, 1, &ids, &n), 0);
    assert_int_equal(n, (len - 1) / 2);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ids[i], 256);
    free(ids);
    assert_true(vg_now_ms() - t0 < 5000);
    free(s);
    /* Text with a NUL byte is valid UTF-8 and is tokenized like any control character. */
    assert_int_equal(vg_tokenizer_encode(tok, "a\0b", 3, 1, &ids, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 0);
    free(ids);
    vg_tokenizer_free(tok);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    tiny_opts o = {0};
    vg_tokenizer *tok = load_tiny(&o);
    static const char *const bad[] = {
        "\xFF",         "\xC3",         "a\xC3",        "\xC0\xAF",         "\xE0\x80\xAF",
        "\xED\xA0\x80", "\xF4\x90\x80", "\x80",         "\xF0\x9F\x98",     "\xF5\x80\x80\x80",
        "ok\xE2\x82",   "\xC3\x28",     "\xE2\x28\xA1", "\xF0\x28\x8C\xBC",
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        int32_t *ids = (int32_t *)0x1;
        size_t n = 77;
        assert_int_equal(vg_tokenizer_encode(tok, bad[i], strlen(bad[i]), 1, &ids, &n), VG_EINVAL);
        assert_ptr_equal(ids, (int32_t *)0x1); /* untouched on failure */
        assert_int_equal(n, 77);
    }
    int32_t *ids;
    size_t n;
    assert_int_equal(vg_tokenizer_encode(NULL, "a", 1, 1, &ids, &n), VG_EINVAL);
    assert_int_equal(vg_tokenizer_encode(tok, NULL, 1, 1, &ids, &n), VG_EINVAL);
    vg_tokenizer_free(tok);
}

/* 1 if s[0..n) does not end inside a multi-byte character (U+FFFD counts as whole). */
static int whole_utf8(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        if (k == 0 || i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80)
                return 0;
        i += k;
    }
    return 1;
}

/* Pushes ids and concatenates what comes out; checks each push's chunk is whole UTF-8. */
static void detok_run(vg_detok *d, const int32_t *ids, size_t n, size_t cap, char *all,
                      size_t allcap, size_t *chunks_nonempty)
{
    char out[512];
    size_t o = 0, ne = 0;
    assert_true(cap <= sizeof out);
    for (size_t i = 0; i < n; i++) {
        size_t len = 99;
        assert_int_equal(vg_detok_push(d, ids[i], out, cap, &len), 0);
        assert_true(len < cap);
        assert_int_equal(out[len], 0);
        assert_true(whole_utf8(out, len));
        assert_true(o + len < allcap);
        memcpy(all + o, out, len);
        o += len;
        ne += len > 0;
    }
    for (;;) {
        size_t len;
        int rc = vg_detok_flush(d, out, cap, &len);
        memcpy(all + o, out, len);
        o += len;
        if (rc == 0)
            break;
        assert_int_equal(rc, VG_EMSGSIZE);
    }
    all[o] = 0;
    if (chunks_nonempty)
        *chunks_nonempty = ne;
}

static void test_detok_streaming(void **state)
{
    (void)state;
    static const char *const m[] = {"\xF0", "\x9F", "\x98", "\x80"}; /* F0+9F, 98+80 */
    tiny_opts o = {m, 2, 0, NULL, NULL};
    vg_tokenizer *tok = load_tiny(&o);
    vg_detok *d;
    assert_int_equal(vg_detok_create(tok, 1, &d), 0);
    char out[64];
    size_t len = 99;
    /* Flushing an empty stream gives nothing. */
    assert_int_equal(vg_detok_flush(d, out, sizeof out, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(out, "");
    /* 😀 = F0 9F 98 80 split as [F0 9F][98][80]: nothing until the last byte. */
    assert_int_equal(vg_detok_push(d, 'a', out, sizeof out, &len), 0);
    assert_string_equal(out, "a");
    assert_int_equal(vg_detok_push(d, 256, out, sizeof out, &len), 0);
    assert_int_equal(len, 0);
    assert_int_equal(vg_detok_push(d, 0x98, out, sizeof out, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(out, "");
    assert_int_equal(vg_detok_push(d, 0x80, out, sizeof out, &len), 0);
    assert_string_equal(out, "\xF0\x9F\x98\x80");
    /* Specials: skipped here. */
    assert_int_equal(vg_detok_push(d, 151645, out, sizeof out, &len), 0);
    assert_int_equal(len, 0);
    /* Non-special added tokens are text. */
    assert_int_equal(vg_detok_push(d, 151667, out, sizeof out, &len), 0);
    assert_string_equal(out, "<think>");
    assert_int_equal(vg_detok_flush(d, out, sizeof out, &len), 0);
    assert_int_equal(len, 0);
    /* Ids the vocabulary does not define (embedding padding rows) give no text; negative ids are
     * errors. A pending partial character survives such an id. */
    assert_int_equal(vg_detok_push(d, 0xF0, out, sizeof out, &len), 0);
    assert_int_equal(len, 0);
    assert_int_equal(vg_detok_push(d, 5000, out, sizeof out, &len), 0);
    assert_int_equal(len, 0);
    assert_string_equal(out, "");
    assert_int_equal(vg_detok_push(d, 151935, out, sizeof out, &len), 0);
    assert_int_equal(len, 0);
    assert_int_equal(vg_detok_push(d, -1, out, sizeof out, &len), VG_EINVAL);
    assert_int_equal(vg_detok_flush(d, out, sizeof out, &len), 0);
    assert_string_equal(out, "\xEF\xBF\xBD"); /* the lone lead byte becomes U+FFFD */
    vg_detok_free(d);
    vg_detok_free(NULL);

    /* skip_special = 0: specials give their text. Whole-stream check on [F0 9F][98 80]. */
    assert_int_equal(vg_detok_create(tok, 0, &d), 0);
    int32_t ids[] = {151644, 256, 257, 'z'};
    char all[256];
    size_t ne;
    detok_run(d, ids, 4, sizeof out, all, sizeof all, &ne);
    assert_string_equal(all, "<|im_start|>\xF0\x9F\x98\x80z");
    assert_int_equal(ne, 3); /* the half emoji emitted nothing */
    vg_detok_free(d);
    vg_tokenizer_free(tok);
}

static void test_detok_invalid(void **state)
{
    (void)state;
    tiny_opts o = {0};
    vg_tokenizer *tok = load_tiny(&o);
    static const struct {
        int32_t ids[6];
        size_t n;
        const char *want;
    } cases[] = {
        /* a stray continuation byte: one U+FFFD at once */
        {{'a', 0x80, 'b'},
         3,
         "a\xEF\xBF\xBD"
         "b"},
        /* a lead byte followed by ASCII: U+FFFD then the ASCII */
        {{0xC3, 'a'},
         2,
         "\xEF\xBF\xBD"
         "a"},
        /* an incomplete character at the end of the stream: one U+FFFD at flush */
        {{'x', 0xF0, 0x9F, 0x98}, 4, "x\xEF\xBF\xBD"},
        /* a surrogate encoding: E0-EF ranges checked, each byte of ED A0 80 is a subpart */
        {{0xED, 0xA0, 0x80}, 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        /* overlong and out of range leads */
        {{0xC0, 0xAF, 0xF5}, 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        /* a valid character after a broken one */
        {{0xE2, 0x82, 0xC3, 0xA9}, 4, "\xEF\xBF\xBD\xC3\xA9"},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++) {
        vg_detok *d;
        assert_int_equal(vg_detok_create(tok, 0, &d), 0);
        char all[128];
        detok_run(d, cases[i].ids, cases[i].n, 64, all, sizeof all, NULL);
        if (strcmp(all, cases[i].want) != 0)
            fail_msg("detok case %zu: wrong output", i);
        vg_detok_free(d);
    }
    /* A stray byte is replaced at once, not at flush. */
    vg_detok *d;
    assert_int_equal(vg_detok_create(tok, 0, &d), 0);
    char out[16];
    size_t len;
    assert_int_equal(vg_detok_push(d, 0xFF, out, sizeof out, &len), 0);
    assert_string_equal(out, "\xEF\xBF\xBD");
    assert_int_equal(vg_detok_push(d, 'a', out, 0, &len), VG_EINVAL);
    vg_detok_free(d);
    vg_tokenizer_free(tok);
}

static void test_detok_small_buffer(void **state)
{
    (void)state;
    tiny_opts o = {0};
    vg_tokenizer *tok = load_tiny(&o);
    vg_detok *d;
    assert_int_equal(vg_detok_create(tok, 0, &d), 0);
    /* "<|endoftext|>" (13 bytes) and an emoji through a 6-byte buffer: nothing is lost and no
     * character is cut. */
    int32_t ids[] = {151643, 0xF0, 0x9F, 0x98, 0x80, 'q', 151643};
    char all[128];
    detok_run(d, ids, VG_ARRAY_LEN(ids), 6, all, sizeof all, NULL);
    assert_string_equal(all, "<|endoftext|>\xF0\x9F\x98\x80q<|endoftext|>");
    vg_detok_free(d);
    vg_tokenizer_free(tok);
}

/* ------------------------------------------------------------------------------------------------
 * Hostile files.
 */
static void expect_load_error(const char *json, const char *needle)
{
    vg_tokenizer *tok = (vg_tokenizer *)0x1;
    char err[512] = "";
    int rc = load_text(json, strlen(json), &tok, err, sizeof err);
    if (rc >= 0)
        fail_msg("loaded a bad tokenizer.json: %.120s", json);
    assert_ptr_equal(tok, (vg_tokenizer *)0x1);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not mention '%s'", err, needle);
}

#define V3 "\"a\":0,\"b\":1,\"ab\":2"

static void test_hostile_json(void **state)
{
    (void)state;
    expect_load_error("", "not valid JSON");
    expect_load_error("not json at all", "not valid JSON");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]", "JSON");
    expect_load_error("[1,2,3]", "not a JSON object");
    expect_load_error("{}", "\"model\" is missing");
    expect_load_error("{\"model\":7}", "\"model\" is a number");
    expect_load_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{},\"merges\":[]}}", "not BPE");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", "model.vocab is missing");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}",
                      "model.vocab is an array");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{" V3 "}}}",
                      "model.merges is missing");
    expect_load_error("{\"model\":{\"vocab\":{\"a\":-1},\"merges\":[]}}", "not an id");
    expect_load_error("{\"model\":{\"vocab\":{\"a\":1.5},\"merges\":[]}}", "not an id");
    expect_load_error("{\"model\":{\"vocab\":{\"a\":1e12},\"merges\":[]}}", "not an id");
    expect_load_error("{\"model\":{\"vocab\":{\"a\":\"0\"},\"merges\":[]}}", "not an id");
    expect_load_error("{\"model\":{\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}}", "twice");
    expect_load_error("{\"model\":{\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", "two tokens");
    expect_load_error("{\"model\":{\"vocab\":{" V3 "},\"merges\":[\"a c\"]}}",
                      "missing from model.vocab");
    expect_load_error("{\"model\":{\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}",
                      "merged token is not in model.vocab");
    expect_load_error("{\"model\":{\"vocab\":{" V3 "},\"merges\":[\"ab\"]}}", "one space");
    expect_load_error("{\"model\":{\"vocab\":{" V3 "},\"merges\":[\"a b c\"]}}", "one space");
    expect_load_error("{\"model\":{\"vocab\":{" V3 "},\"merges\":[\" a\"]}}", "one space");
    expect_load_error("{\"model\":{\"vocab\":{" V3 "},\"merges\":[[\"a\"]]}}", "merge 0");
    expect_load_error("{\"model\":{\"vocab\":{" V3 "},\"merges\":[[\"a\",1]]}}", "merge 0");
    expect_load_error("{\"model\":{\"vocab\":{" V3 "},\"merges\":[\"a b\",7]}}",
                      "merge 1 is a number");
    expect_load_error("{\"model\":{\"vocab\":{}, \"merges\":[]}}", "empty");
    expect_load_error("{\"added_tokens\":{},\"model\":{\"vocab\":{" V3 "},\"merges\":[]}}",
                      "added_tokens is an object");
    expect_load_error("{\"added_tokens\":[{\"id\":-3,\"content\":\"x\"}],"
                      "\"model\":{\"vocab\":{" V3 "},\"merges\":[]}}",
                      "added_tokens[0]");
    expect_load_error("{\"added_tokens\":[{\"id\":3}],\"model\":{\"vocab\":{" V3
                      "},\"merges\":[]}}",
                      "added_tokens[0]");
    expect_load_error("{\"normalizer\":{\"type\":\"Lowercase\"},"
                      "\"model\":{\"vocab\":{" V3 "},\"merges\":[]}}",
                      "Lowercase");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"}},"
                      "\"model\":{\"vocab\":{" V3 "},\"merges\":[]}}",
                      "does not compile");
    expect_load_error("{\"pre_tokenizer\":{\"type\":\"Whitespace\"},"
                      "\"model\":{\"vocab\":{" V3 "},\"merges\":[]}}",
                      "Whitespace");

    /* Missing file, directory instead of file. */
    vg_tokenizer *tok;
    char err[512];
    assert_int_equal(vg_tokenizer_load("/nonexistent/tokenizer.json", &tok, err, sizeof err),
                     VG_ENOENT);
    assert_true(vg_tokenizer_load(tmpdir, &tok, err, sizeof err) < 0);
    assert_true(vg_tokenizer_load(NULL, &tok, err, sizeof err) < 0);
}

/* Every truncation and a set of byte flips of a valid file either load or fail cleanly. */
static void test_hostile_truncations(void **state)
{
    (void)state;
    static const char *const m[] = {"a", "b", "ab", "c"};
    tiny_opts o = {m, 2, 1, "{\"type\":\"NFC\"}", NULL};
    char *json = tiny_json(&o);
    size_t n = strlen(json);
    int loaded = 0;
    for (size_t cut = 0; cut < n; cut += 7) {
        vg_tokenizer *tok = NULL;
        char err[256];
        if (load_text(json, cut, &tok, err, sizeof err) == 0) {
            loaded++;
            vg_tokenizer_free(tok);
        } else {
            assert_true(err[0] != 0);
        }
    }
    assert_int_equal(loaded, 0);
    uint32_t x = 12345;
    for (int k = 0; k < 300; k++) {
        char *c = malloc(n);
        assert_non_null(c);
        memcpy(c, json, n);
        for (int f = 0; f < 3; f++) {
            x = x * 1103515245u + 12345u;
            c[(x >> 8) % n] = (char)(x >> 24);
        }
        vg_tokenizer *tok = NULL;
        char err[256];
        if (load_text(c, n, &tok, err, sizeof err) == 0) {
            int32_t *ids;
            size_t ni;
            if (vg_tokenizer_encode(tok, "abc <|im_end|> e\xCC\x81", 18, 1, &ids, &ni) == 0)
                free(ids);
            vg_tokenizer_free(tok);
        }
        free(c);
    }
    free(json);
}

/* ------------------------------------------------------------------------------------------------
 * Thread safety: several threads encode with one tokenizer.
 */
#define THR_TEXT "abc aaa <|im_start|>e\xCC\x81 123"

typedef struct thr_arg {
    const vg_tokenizer *tok;
    int ok;
} thr_arg;

static void *thr_main(void *p)
{
    thr_arg *a = p;
    a->ok = 1;
    for (int i = 0; i < 2000 && a->ok; i++) {
        int32_t *ids;
        size_t n;
        if (vg_tokenizer_encode(a->tok, THR_TEXT, strlen(THR_TEXT), 1, &ids, &n) || n != 12 ||
            ids[0] != 258 || ids[3] != 'a' || ids[5] != 151644)
            a->ok = 0;
        else
            free(ids);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    tiny_opts o = {MERGES_AB_FIRST, 4, 0, NULL, NULL};
    vg_tokenizer *tok = load_tiny(&o);
    expect_ids(tok, THR_TEXT, 1, 258, ' ', 259, 'a', ' ', 151644, 0xC3, 0xA9, ' ', '1', '2', '3',
               END);
    pthread_t th[4];
    thr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i].tok = tok;
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(a[i].ok);
    }
    vg_tokenizer_free(tok);
}

/* ------------------------------------------------------------------------------------------------
 * The real Qwen3 tokenizer (../shared), when present.
 */
static void test_real_qwen3(void **state)
{
    (void)state;
    const char *shared = getenv("VG_SHARED_DIR");
    if (!shared || !*shared)
        shared = VG_SHARED_DIR;
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/tiny1/tokenizer.json", shared);
    if (access(path, R_OK) != 0) {
        printf("skipped: %s is absent\n", path);
        skip();
    }
    vg_tokenizer *tok;
    char err[512];
    double t0 = vg_now_ms();
    assert_int_equal(vg_tokenizer_load(path, &tok, err, sizeof err), 0);
    printf("loaded the Qwen3 tokenizer in %.0f ms\n", vg_now_ms() - t0);
    assert_int_equal(vg_tokenizer_vocab_size(tok), 151669);
    assert_int_equal(vg_tokenizer_max_token_bytes(tok), 128);
    assert_int_equal(vg_tokenizer_token_id(tok, "<|im_start|>"), 151644);
    assert_int_equal(vg_tokenizer_token_id(tok, "<|video_pad|>"), 151656);
    assert_int_equal(vg_tokenizer_token_id(tok, "</think>"), 151668);
    assert_true(vg_tokenizer_is_special(tok, 151643));
    assert_false(vg_tokenizer_is_special(tok, 151667));
    /* Ids checked against Hugging Face tokenizers. */
    expect_ids(tok, "Hello world", 1, 9707, 1879, END);
    expect_ids(tok, "<|im_start|>user\nhi<|im_end|>", 1, 151644, 872, 198, 6023, 151645, END);
    expect_ids(tok, "<12.5 seconds>", 1, 27, 16, 17, 13, 20, 6486, 29, END);
    expect_ids(tok, "e\xCC\x81", 1, 963, END);
    expect_ids(tok, "  \r\n\r\n  x", 1, 72745, 220, 856, END);
    vg_tokenizer_free(tok);
}

/* ------------------------------------------------------------------------------------------------
 * vigil-model tokenize, when built.
 */
static int run_capture(const char *cmd, const char *input, char *out, size_t cap)
{
    char inpath[400], full[1400];
    snprintf(inpath, sizeof inpath, "%s/cli_in.txt", tmpdir);
    write_file(inpath, input, strlen(input));
    snprintf(full, sizeof full, "%s < '%s' 2>'%s/cli_err.txt'", cmd, inpath, tmpdir);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state)
{
    (void)state;
    const char *bin = getenv("VG_BINARY_DIR");
    char exe[1024];
    snprintf(exe, sizeof exe, "%s/tools/vigil-model", bin && *bin ? bin : VG_BINARY_DIR);
    if (access(exe, X_OK) != 0) {
        printf("skipped: %s is not built\n", exe);
        skip();
    }
    tiny_opts o = {MERGES_AB_FIRST, 4, 1, NULL, NULL};
    char *json = tiny_json(&o);
    char dir[400], path[500];
    snprintf(dir, sizeof dir, "%s/model", tmpdir);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_file(path, json, strlen(json));
    free(json);
    char cmd[2400], out[4096];
    snprintf(cmd, sizeof cmd, "'%s' tokenize '%s'", exe, dir);
    int st = run_capture(cmd,
                         "\"abc\"\n"
                         "\"<|im_start|>ab\\u00e9\\n\"\n"
                         "  \"\"  \n"
                         "\"a\\u0000b\"\n"
                         "\"\\ud83d\\ude00\"\n",
                         out, sizeof out);
    assert_int_equal(st, 0);
    assert_string_equal(out, "[258]\n[151644,256,195,169,10]\n[]\n[97,0,98]\n[240,159,152,128]\n");
    /* Bad lines: null, a message, exit status 1; good lines after them still work. */
    st = run_capture(cmd, "abc\n\"unterminated\n\"\\ud800\"\n\n[1]\n\"ok\"\n", out, sizeof out);
    assert_int_equal(st, 1);
    assert_string_equal(out, "null\nnull\nnull\nnull\nnull\n[111,107]\n");
    /* --no-special, --help, a missing directory. */
    snprintf(cmd, sizeof cmd, "'%s' tokenize --no-special '%s'", exe, dir);
    assert_int_equal(run_capture(cmd, "\"<|im_end|>\"\n", out, sizeof out), 0);
    assert_null(strstr(out, "151645"));
    snprintf(cmd, sizeof cmd, "'%s' tokenize --help", exe);
    assert_int_equal(run_capture(cmd, "", out, sizeof out), 0);
    assert_non_null(strstr(out, "usage: vigil-model tokenize"));
    snprintf(cmd, sizeof cmd, "'%s' tokenize '%s/nonexistent'", exe, tmpdir);
    assert_int_equal(run_capture(cmd, "\"a\"\n", out, sizeof out), 1);
    snprintf(cmd, sizeof cmd, "'%s' tokenize", exe);
    assert_int_equal(run_capture(cmd, "", out, sizeof out), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_map),
        cmocka_unit_test(test_merge_ranks),
        cmocka_unit_test(test_added_tokens),
        cmocka_unit_test(test_nfc),
        cmocka_unit_test(test_nfc_runs),
        cmocka_unit_test(test_pre_tokenizer),
        cmocka_unit_test(test_long_and_empty),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_detok_streaming),
        cmocka_unit_test(test_detok_invalid),
        cmocka_unit_test(test_detok_small_buffer),
        cmocka_unit_test(test_hostile_json),
        cmocka_unit_test(test_hostile_truncations),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_real_qwen3),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
