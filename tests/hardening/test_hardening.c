/*
 * test_hardening.c: the request parser and media policy against the inputs of issue #13 (items 3, 4
 * and 10): invalid UTF-8, raw control characters and \u0000 are refused with bad_request; a key
 * given twice and an odd nframes are refused; every error reply is valid UTF-8; a path outside the
 * media roots gets the same answer whether it exists or not.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "daemon.h"

#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static const vg_proto_limits lim = {1 << 20, 4096, 600, 768, 1 << 24};

/* Parses len bytes of req; expects a refusal with wire code `code` and a sentence containing
 * `needle`; the error reply built from it must be valid UTF-8 without raw control bytes. */
static void expect_refused(const char *req, size_t len, const char *code, const char *needle)
{
    vg_request r;
    const char *wire = NULL;
    char err[768];
    int rc = vg_proto_parse(req, len, &lim, &r, &wire, err, sizeof err);
    if (rc == 0) {
        vg_request_clear(&r);
        fail_msg("accepted: %.*s", (int)len, req);
    }
    assert_non_null(wire);
    if (strcmp(wire, code) != 0)
        fail_msg("%.*s: code %s (%s), expected %s", (int)len, req, wire, err, code);
    if (needle && !strstr(err, needle))
        fail_msg("%.*s: '%s' lacks '%s'", (int)len, req, err, needle);
    size_t rl = 0;
    char *rep = vg_proto_error_reply(r.id_json, wire, err, &rl);
    assert_non_null(rep);
    assert_int_equal(vg_utf8_check(rep, rl), rl);
    for (size_t i = 0; i < rl; i++)
        assert_true((unsigned char)rep[i] >= 0x20);
    free(rep);
}

static void expect_ok(const char *req)
{
    vg_request r;
    const char *wire = NULL;
    char err[768];
    int rc = vg_proto_parse(req, strlen(req), &lim, &r, &wire, err, sizeof err);
    if (rc != 0)
        fail_msg("%s: refused: %s", req, err);
    vg_request_clear(&r);
}

#define REFUSED(lit, code, needle) expect_refused(lit, sizeof(lit) - 1, code, needle)
#define ASK(q)                     "{\"v\":1,\"op\":\"ask\",\"video\":\"/a.mp4\",\"question\":\"" q "\"}"

static void test_utf8_helpers(void **state)
{
    /* Valid: ASCII, 2-, 3- and 4-byte forms, the largest code point. */
    const char ok[] = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF";
    assert_int_equal(vg_utf8_check(ok, sizeof ok - 1), sizeof ok - 1);
    /* Invalid: a lone continuation, an overlong '/', a surrogate, above U+10FFFF, a cut sequence.
     */
    const char *bad[] = {"\x80",     "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                         "\xE2\x82", "\xFF"};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++)
        assert_int_equal(vg_utf8_check(bad[i], strlen(bad[i])), 0);
    assert_int_equal(vg_utf8_check("ab\xFF", 3), 2);
    char out[64];
    size_t n = vg_utf8_sanitize("a\xFF"
                                "b\xE2\x82",
                                5, out, sizeof out);
    assert_string_equal(out, "a\xEF\xBF\xBD"
                             "b\xEF\xBF\xBD\xEF\xBF\xBD");
    assert_int_equal(n, strlen(out));
    assert_int_equal(vg_utf8_sanitize("abc", 3, out, 5), 0); /* cap < 3 * len + 1 */
}

/* Item 3: invalid UTF-8, raw control characters and \u0000 are bad_request. */
static void test_text_refused(void **state)
{
    REFUSED(ASK("caf\xC3"), VG_WIRE_BAD_REQUEST, "UTF-8");
    REFUSED(ASK("\xFF\xFE"), VG_WIRE_BAD_REQUEST, "UTF-8");
    REFUSED(ASK("\xED\xA0\x80"), VG_WIRE_BAD_REQUEST, "UTF-8"); /* a surrogate */
    REFUSED(ASK("\xC0\xAF"), VG_WIRE_BAD_REQUEST, "UTF-8");     /* overlong */
    REFUSED(ASK("a\x01"
                "b"),
            VG_WIRE_BAD_REQUEST, "control"); /* raw control character */
    REFUSED(ASK("a\nb"), VG_WIRE_BAD_REQUEST, "control");
    REFUSED(ASK("a\tb"), VG_WIRE_BAD_REQUEST, "control");
    REFUSED(ASK("what\\u0000 is hidden"), VG_WIRE_BAD_REQUEST, "u0000");
    REFUSED("{\"v\":1,\"op\":\"ask\",\"video\":\"/a.mp4\\u0000.txt\",\"question\":\"q\"}",
            VG_WIRE_BAD_REQUEST, "u0000");
    /* A raw NUL inside a string (not the terminator). */
    REFUSED("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"a\0b\"}", VG_WIRE_BAD_REQUEST,
            "control");
    /* In keys and in the op as well. */
    REFUSED("{\"v\":1,\"op\":\"info\",\"\xFF\":1}", VG_WIRE_BAD_REQUEST, "UTF-8");
    REFUSED("{\"v\":1,\"op\":\"in\x7F\x01"
            "fo\"}",
            VG_WIRE_BAD_REQUEST, "control");
    REFUSED("{\"v\":1,\"op\":\"watch\",\"url\":\"udp://x:1\",\"questions\":[\"ok\",\"b\\u0000\"]}",
            VG_WIRE_BAD_REQUEST, "u0000");
    /* Escapes that are fine: \n, \t, \\u0000 as text (an escaped backslash), other characters. */
    expect_ok(ASK("line\\nnext\\ttab \\\\u0000 \\u00e9 \xC3\xA9 \xF0\x9F\x98\x80"));
    /* A terminating NUL after the object is allowed, as before. */
    vg_request r;
    const char *wire;
    char err[256];
    const char term[] = "{\"v\":1,\"op\":\"info\"}";
    assert_int_equal(vg_proto_parse(term, sizeof term, &lim, &r, &wire, err, sizeof err), 0);
    vg_request_clear(&r);
}

/* Sentences that quote a long key or op stop at a character boundary, so the reply is UTF-8. */
static void test_quotes_cut_at_characters(void **state)
{
    char req[512], key[200];
    /* 21 x 3-byte characters = 63 bytes, then one more: a byte cut at 64 would split it. */
    size_t k = 0;
    for (int i = 0; i < 30; i++)
        k += (size_t)snprintf(key + k, sizeof key - k, "\xE2\x82\xAC");
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"info\",\"a%s\":1}", key);
    expect_refused(req, strlen(req), VG_WIRE_BAD_REQUEST, "unknown field");
    snprintf(req, sizeof req, "{\"v\":1,\"op\":\"a%s\"}", key);
    expect_refused(req, strlen(req), VG_WIRE_UNKNOWN_OP, "unknown op");
    snprintf(
        req, sizeof req,
        "{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{\"a%s\":1}}",
        key);
    expect_refused(req, strlen(req), VG_WIRE_BAD_REQUEST, "unknown sampling field");
    /* An error sentence with invalid UTF-8 (e.g. a path cut by its buffer) is repaired. */
    size_t rl;
    char *rep = vg_proto_error_reply("7", "internal", "cut \xE2\x82", &rl);
    assert_non_null(rep);
    assert_int_equal(vg_utf8_check(rep, rl), rl);
    assert_non_null(strstr(rep, "cut \xEF\xBF\xBD"));
    free(rep);
}

/* Item 10: duplicate keys and an odd nframes are refused. */
static void test_duplicates_and_nframes(void **state)
{
    REFUSED("{\"v\":1,\"op\":\"info\",\"op\":\"jobs\"}", VG_WIRE_BAD_REQUEST, "twice");
    REFUSED("{\"v\":1,\"v\":1,\"op\":\"info\"}", VG_WIRE_BAD_REQUEST, "'v' is given twice");
    REFUSED("{\"v\":1,\"op\":\"jobs\",\"limit\":5,\"limit\":900}", VG_WIRE_BAD_REQUEST, "'limit'");
    REFUSED("{\"v\":1,\"id\":1,\"id\":2,\"op\":\"info\"}", VG_WIRE_BAD_REQUEST, "'id'");
    REFUSED("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"question\":\"r\"}",
            VG_WIRE_BAD_REQUEST, "'question' is given twice");
    REFUSED("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{"
            "\"fps\":1,\"fps\":2}}",
            VG_WIRE_BAD_REQUEST, "sampling: 'fps' is given twice");
    REFUSED("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"generation\":{"
            "\"seed\":1,\"top_k\":3,\"seed\":2}}",
            VG_WIRE_BAD_REQUEST, "generation: 'seed' is given twice");
    REFUSED("{\"v\":1,\"op\":\"watch\",\"url\":\"udp://x:1\",\"question\":\"q\",\"fps\":1,"
            "\"fps\":2}",
            VG_WIRE_BAD_REQUEST, "'fps' is given twice");
    /* Many repeated keys: refused at the second, quickly. */
    size_t cap = 1 << 20;
    char *big = malloc(cap);
    assert_non_null(big);
    size_t n = (size_t)snprintf(big, cap, "{\"v\":1,\"op\":\"info\"");
    while (n + 16 < cap)
        n += (size_t)snprintf(big + n, cap - n, ",\"op\":\"info\"");
    big[n++] = '}';
    double t0 = vg_now_ms();
    expect_refused(big, n, VG_WIRE_BAD_REQUEST, "twice");
    assert_true(vg_now_ms() - t0 < 2000);
    free(big);
    /* The same key in different objects is fine. */
    expect_ok("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{"
              "\"start\":1,\"end\":2},\"generation\":{\"seed\":1}}");
    /* nframes must be even (docs/protocol.md). */
    REFUSED("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{"
            "\"nframes\":3}}",
            VG_WIRE_BAD_REQUEST, "even");
    expect_ok("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{"
              "\"nframes\":4}}");
}

/* Item 4: one answer for anything outside the roots, existing or not. */
static void test_outside_roots_one_answer(void **state)
{
    char tmpl[] = "/tmp/vg-harden-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char base[PATH_MAX];
    assert_non_null(realpath(tmpl, base));
    char roots[1][VG_CFG_STR];
    snprintf(roots[0], VG_CFG_STR, "%s/media", base);
    assert_int_equal(mkdir(roots[0], 0700), 0);
    char secret[PATH_MAX], missing[PATH_MAX], dangling[PATH_MAX], to_missing[PATH_MAX];
    snprintf(secret, sizeof secret, "%s/secret.mp4", base);
    int fd = open(secret, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    snprintf(missing, sizeof missing, "%s/missing.mp4", base);
    snprintf(dangling, sizeof dangling, "%s/media/dangling.mp4", base);
    assert_int_equal(symlink(missing, dangling), 0);
    snprintf(to_missing, sizeof to_missing, "%s/media/../missing.mp4", base);
    const char(*r)[VG_CFG_STR] = (const char(*)[VG_CFG_STR])roots;
    /* Existing and missing outside the roots; a link from the root to an existing and to a missing
     * file outside; a dotted path out of the root; an unreadable directory's child. */
    char link_existing[PATH_MAX];
    snprintf(link_existing, sizeof link_existing, "%s/media/existing.mp4", base);
    assert_int_equal(symlink(secret, link_existing), 0);
    char nodir[PATH_MAX], nodir_existing[PATH_MAX];
    snprintf(nodir, sizeof nodir, "%s/nodir/x.mp4", base);
    snprintf(nodir_existing, sizeof nodir_existing, "%s/secret.mp4/x", base);
    const char *probes[] = {secret,
                            missing,
                            link_existing,
                            dangling,
                            to_missing,
                            nodir,
                            nodir_existing,
                            "/etc/passwd",
                            "/etc/no-such-file-here",
                            "/root/.ssh/id_rsa"};
    char first[512] = "";
    for (size_t i = 0; i < VG_ARRAY_LEN(probes); i++) {
        char res[PATH_MAX], err[512];
        int is_url = 0;
        int rc =
            vg_daemon_media_check(probes[i], r, 1, "", res, sizeof res, &is_url, err, sizeof err);
        if (rc != VG_EPATH)
            fail_msg("%s: %d (%s), expected VG_EPATH", probes[i], rc, err);
        /* The sentence differs only by the path quoted. */
        const char *tail = strstr(err, probes[i]);
        assert_non_null(tail);
        tail += strlen(probes[i]);
        if (!first[0])
            snprintf(first, sizeof first, "%s", tail);
        assert_string_equal(tail, first);
        /* The checked open (item 1) gives the same answer and no descriptor. */
        char err2[512];
        int fd2 = -7;
        assert_int_equal(vg_daemon_media_open(probes[i], r, 1, "", res, sizeof res, &is_url, &fd2,
                                              err2, sizeof err2),
                         VG_EPATH);
        assert_string_equal(err2, err);
        assert_int_equal(fd2, -7);
    }
    /* An absent name inside a root is still "not found". */
    char inside[PATH_MAX], res[PATH_MAX], err[512];
    int is_url = 0;
    snprintf(inside, sizeof inside, "%s/media/nope.mp4", base);
    assert_int_equal(
        vg_daemon_media_check(inside, r, 1, "", res, sizeof res, &is_url, err, sizeof err),
        VG_ENOENT);
    char cmd[PATH_MAX + 20];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_helpers),
        cmocka_unit_test(test_text_refused),
        cmocka_unit_test(test_quotes_cut_at_characters),
        cmocka_unit_test(test_duplicates_and_nframes),
        cmocka_unit_test(test_outside_roots_one_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
