/*
 * test_daemon_unit.c: vigild's pure parts: config parsing, request validation, the media access
 * policy, the journal (checksums, torn lines, rewrite) and sd_notify over a real datagram socket.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "daemon.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char tmpdir[256];

static int make_tmp(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vg-dunit-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int rm_tmp(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* ---------------------------------------------------------------------------------------------- */

static void test_text_piece(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(vg_utf8_sanitize("ab", 2, out, sizeof out), 2);
    assert_string_equal(out, "ab");
    assert_int_equal(vg_utf8_sanitize("a\0b", 3, out, sizeof out), 5);
    assert_memory_equal(out,
                        "a\xEF\xBF\xBD"
                        "b",
                        6);
    assert_int_equal(vg_utf8_sanitize("\0\0\0\0\0", 5, out, sizeof out), 15);
    assert_int_equal(strlen(out), 15);
    assert_int_equal(vg_utf8_sanitize("\0\0\0\0\0\0", 6, out, sizeof out), 0); /* too small */
    assert_string_equal(out, "");
}

static void test_config_parse(void **state)
{
    vg_daemon_config c;
    vg_daemon_config_defaults(&c);
    assert_string_equal(c.runtime_dir, "/run/vigil");
    assert_string_equal(c.state_dir, "/var/lib/vigil");
    char err[256];
    const char *text = "# comment\n"
                       "\n"
                       "  model_dir = /models/x  \n"
                       "runtime_dir=\"/tmp/rt\"\n"
                       "max_queued_jobs = 3\n"
                       "max_message_size = 64K\n"
                       "job_deadline_s = 2.5\n"
                       "allow_remote = yes\n"
                       "socket_mode = 0600\n"
                       "log_level = debug\n"
                       "allowed_protocols = https\n";
    assert_int_equal(vg_daemon_config_parse(&c, text, strlen(text), err, sizeof err), 0);
    assert_string_equal(c.model_dir, "/models/x");
    assert_string_equal(c.runtime_dir, "/tmp/rt");
    assert_int_equal(c.max_queued_jobs, 3);
    assert_int_equal(c.max_message_size, 65536);
    assert_true(c.job_deadline_s == 2.5);
    assert_int_equal(c.allow_remote, 1);
    assert_int_equal(c.socket_mode, 0600);
    assert_int_equal(c.log_level, VG_LOG_DEBUG);
    assert_int_equal(c.stream_log_max_records, 100000); /* the default */
    assert_int_equal(vg_daemon_config_set(&c, "stream_log_max_records", "100", err, sizeof err), 0);
    assert_int_equal(c.stream_log_max_records, 100);
    assert_int_equal(vg_daemon_config_set(&c, "stream_log_max_records", "1G", err, sizeof err), 0);
    assert_int_equal(c.stream_log_max_records, 1 << 30);
    assert_int_equal(vg_daemon_config_finish(&c, err, sizeof err), 0);
    assert_string_equal(c.cmd_url, "ipc:///tmp/rt/vigil.cmd");
    assert_string_equal(c.events_url, "ipc:///tmp/rt/vigil.events");
}

static void test_config_errors(void **state)
{
    vg_daemon_config c;
    vg_daemon_config_defaults(&c);
    char err[256];
    const char *bad[] = {
        "nokey\n",
        "unknown_key = 1\n",
        "max_queued_jobs = 0\n",
        "max_queued_jobs = 12abc\n",
        "max_queued_jobs = 99999999999999999999\n",
        "allow_remote = maybe\n",
        "socket_mode = 999\n",
        "log_level = loud\n",
        "media_roots = relative/path\n",
        "job_deadline_s = -1\n",
        "max_message_size = 1\n",
        "stream_log_max_records = 99\n",
        "stream_log_max_records = 1073741825\n",
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        err[0] = 0;
        int rc = vg_daemon_config_parse(&c, bad[i], strlen(bad[i]), err, sizeof err);
        assert_true(rc < 0);
        assert_non_null(strstr(err, "line 1"));
    }
    /* The error names the line. */
    const char *two = "max_queued_jobs = 4\nbogus = 1\n";
    assert_true(vg_daemon_config_parse(&c, two, strlen(two), err, sizeof err) < 0);
    assert_non_null(strstr(err, "line 2"));
    assert_non_null(strstr(err, "bogus"));
    /* A line too long, a NUL byte. */
    char longline[5000];
    memset(longline, 'a', sizeof longline);
    assert_true(vg_daemon_config_parse(&c, longline, sizeof longline, err, sizeof err) < 0);
    assert_true(vg_daemon_config_parse(&c, "a\0= b\n", 6, err, sizeof err) < 0);
    assert_int_equal(vg_daemon_config_key_is_live("log_level"), 1);
    assert_int_equal(vg_daemon_config_key_is_live("model_dir"), 0);
    assert_int_equal(vg_daemon_config_key_is_live("stream_log_max_records"), 1);
}

static void test_config_roots(void **state)
{
    vg_daemon_config c;
    vg_daemon_config_defaults(&c);
    char err[256], v[600];
    snprintf(v, sizeof v, "%s, /", tmpdir);
    assert_int_equal(vg_daemon_config_set(&c, "media_roots", v, err, sizeof err), 0);
    assert_int_equal(c.n_media_roots, 2);
    assert_int_equal(vg_daemon_config_finish(&c, err, sizeof err), 0);
    assert_string_equal(c.media_roots[1], "/");
    assert_int_equal(
        vg_daemon_config_set(&c, "media_roots", "/nonexistent/vigil/x", err, sizeof err), 0);
    assert_int_equal(vg_daemon_config_finish(&c, err, sizeof err), VG_ENOENT);
    /* A missing config file is VG_ENOENT; the daemon decides. */
    vg_daemon_config_defaults(&c);
    assert_int_equal(vg_daemon_config_load(&c, "/nonexistent/vigild.conf", err, sizeof err),
                     VG_ENOENT);
}

/* The values documented in systemd/vigild.conf all parse (test_config.c checks that every key is
 * documented there). */
static void test_config_example(void **state)
{
    char *data;
    size_t len;
    char err[256];
    assert_int_equal(
        vg_read_file(VG_SOURCE_DIR "/systemd/vigild.conf", 1 << 20, &data, &len, err, sizeof err),
        0);
    /* Uncomment every "#key = value" line and parse the result. */
    char *text = malloc(len + 1);
    size_t n = 0;
    int settings = 0;
    for (char *line = data; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t l = nl ? (size_t)(nl - line) : strlen(line);
        if (l > 1 && line[0] == '#' && line[1] != ' ' && line[1] != '-' && memchr(line, '=', l)) {
            memcpy(text + n, line + 1, l - 1);
            n += l - 1;
            text[n++] = '\n';
            settings++;
        }
        line = nl ? nl + 1 : NULL;
    }
    text[n] = 0;
    vg_daemon_config c;
    vg_daemon_config_defaults(&c);
    if (vg_daemon_config_parse(&c, text, n, err, sizeof err) < 0)
        fail_msg("the example config does not parse: %s", err);
    assert_true(settings >= 22);
    free(text);
    free(data);
}

/* ---------------------------------------------------------------------------------------------- */

static const vg_proto_limits lim = {4096, 512, 60, 64, 1 << 20};

static int parse(const char *s, vg_request *r, const char **wire, char *err, size_t errlen)
{
    return vg_proto_parse(s, strlen(s), &lim, r, wire, err, errlen);
}

static void test_proto_valid(void **state)
{
    vg_request r;
    const char *wire;
    char err[256];
    assert_int_equal(parse("{\"v\":1,\"op\":\"info\",\"id\":7}", &r, &wire, err, sizeof err), 0);
    assert_int_equal(r.op, VG_OP_INFO);
    assert_string_equal(r.id_json, "7");
    vg_request_clear(&r);
    const char *ask = "{\"v\":1,\"op\":\"ask\",\"id\":\"r-1\",\"video\":\"/a.mp4\",\"question\":"
                      "\"what?\",\"system\":\"be brief\",\"job\":\"my-job.1\",\"sampling\":{"
                      "\"fps\":1,\"nframes\":8,\"max_pixels\":65536,\"start\":1,\"end\":2},"
                      "\"generation\":{\"max_new_tokens\":32,\"temperature\":0.5,\"top_k\":5,"
                      "\"top_p\":0.9,\"seed\":3,\"greedy\":true},\"deadline_s\":10}";
    assert_int_equal(parse(ask, &r, &wire, err, sizeof err), 0);
    assert_int_equal(r.op, VG_OP_ASK);
    assert_string_equal(r.id, "r-1");
    assert_string_equal(r.id_json, "\"r-1\"");
    assert_string_equal(r.video, "/a.mp4");
    assert_string_equal(r.question, "what?");
    assert_string_equal(r.system, "be brief");
    assert_string_equal(r.job, "my-job.1");
    assert_int_equal(r.sampling.nframes, 8);
    assert_true(r.sampling.start == 1 && r.sampling.end == 2);
    assert_int_equal(r.gen.max_new_tokens, 32);
    assert_int_equal(r.gen.greedy, 1);
    assert_int_equal(r.gen.seed, 3);
    assert_true(r.deadline_s == 10);
    vg_request_clear(&r);
    /* Trailing whitespace and a terminating NUL are fine. */
    const char z[] = "{\"v\":1,\"op\":\"jobs\"}\n";
    assert_int_equal(vg_proto_parse(z, sizeof z, &lim, &r, &wire, err, sizeof err), 0);
    assert_int_equal(r.limit, 100);
}

static void expect_err(const char *req, const char *want_wire, const char *want_text)
{
    vg_request r;
    const char *wire = NULL;
    char err[256] = "";
    int rc = parse(req, &r, &wire, err, sizeof err);
    if (rc == 0 || !wire || strcmp(wire, want_wire) != 0 || !strstr(err, want_text))
        fail_msg("request %s: rc %d wire %s err '%s' (want %s / '%s')", req, rc, wire ? wire : "-",
                 err, want_wire, want_text);
}

static void test_proto_errors(void **state)
{
    expect_err("", VG_WIRE_BAD_JSON, "empty");
    expect_err("{", VG_WIRE_BAD_JSON, "invalid JSON");
    expect_err("{\"v\":1,\"op\":\"info\"} x", VG_WIRE_BAD_JSON, "trailing");
    expect_err("[1,2]", VG_WIRE_BAD_REQUEST, "object");
    expect_err("{\"op\":\"info\"}", VG_WIRE_BAD_VERSION, "missing 'v'");
    expect_err("{\"v\":2,\"op\":\"info\"}", VG_WIRE_BAD_VERSION, "version");
    expect_err("{\"v\":1,\"op\":\"fly\"}", VG_WIRE_UNKNOWN_OP, "unknown op 'fly'");
    expect_err("{\"v\":1,\"op\":7}", VG_WIRE_BAD_REQUEST, "'op' must be a string");
    expect_err("{\"v\":1,\"op\":\"info\",\"x\":1}", VG_WIRE_BAD_REQUEST, "unknown field 'x'");
    expect_err("{\"v\":1,\"op\":\"info\",\"id\":{}}", VG_WIRE_BAD_REQUEST, "'id'");
    expect_err("{\"v\":1,\"op\":\"info\",\"id\":\"a b\"}", VG_WIRE_BAD_REQUEST, "'id'");
    expect_err("{\"v\":1,\"op\":\"job\"}", VG_WIRE_BAD_REQUEST, "missing 'job'");
    expect_err("{\"v\":1,\"op\":\"job\",\"job\":\"../x\"}", VG_WIRE_BAD_REQUEST, "'job'");
    expect_err("{\"v\":1,\"op\":\"job\",\"job\":\"a/b\"}", VG_WIRE_BAD_REQUEST, "'job'");
    expect_err("{\"v\":1,\"op\":\"job\",\"job\":5}", VG_WIRE_BAD_REQUEST, "'job'");
    expect_err("{\"v\":1,\"op\":\"jobs\",\"limit\":0}", VG_WIRE_BAD_REQUEST, "'limit'");
    expect_err("{\"v\":1,\"op\":\"ask\",\"question\":\"q\"}", VG_WIRE_BAD_REQUEST, "'video'");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\"}", VG_WIRE_BAD_REQUEST, "'question'");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":1,\"question\":\"q\"}", VG_WIRE_BAD_REQUEST,
               "'video' must be a string");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"\",\"question\":\"q\"}", VG_WIRE_BAD_REQUEST,
               "empty");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{"
               "\"fps\":\"x\"}}",
               VG_WIRE_BAD_REQUEST, "'sampling.fps' must be a number");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{"
               "\"nframes\":1000}}",
               VG_WIRE_BAD_REQUEST, "nframes");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{"
               "\"nframes\":2.5}}",
               VG_WIRE_BAD_REQUEST, "integer");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{"
               "\"bogus\":1}}",
               VG_WIRE_BAD_REQUEST, "unknown sampling field");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{"
               "\"resized_height\":64}}",
               VG_WIRE_BAD_REQUEST, "both");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"sampling\":{"
               "\"start\":5,\"end\":2}}",
               VG_WIRE_BAD_REQUEST, "end must be after start");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"generation\":{"
               "\"max_new_tokens\":100000}}",
               VG_WIRE_LIMIT, "limit of 512");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"generation\":{"
               "\"greedy\":1}}",
               VG_WIRE_BAD_REQUEST, "true or false");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"generation\":{"
               "\"top_p\":2}}",
               VG_WIRE_BAD_REQUEST, "top_p");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"deadline_s\":"
               "1000}",
               VG_WIRE_LIMIT, "deadline_s");
    expect_err("{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"q\",\"generation\":[]}",
               VG_WIRE_BAD_REQUEST, "object");
    /* Oversized fields and messages. */
    char big[VG_TEXT_MAX + 200];
    int n = snprintf(big, sizeof big, "{\"v\":1,\"op\":\"ask\",\"video\":\"/a\",\"question\":\"");
    memset(big + n, 'q', VG_TEXT_MAX + 1);
    snprintf(big + n + VG_TEXT_MAX + 1, 10, "\"}");
    vg_request r;
    const char *wire = NULL;
    char err[256];
    vg_proto_limits big_lim = lim;
    big_lim.max_message_size = 1 << 20;
    assert_true(vg_proto_parse(big, strlen(big), &big_lim, &r, &wire, err, sizeof err) < 0);
    assert_string_equal(wire, VG_WIRE_TOO_LARGE);
    assert_true(parse(big, &r, &wire, err, sizeof err) < 0); /* over the 4096-byte message limit */
    assert_string_equal(wire, VG_WIRE_TOO_LARGE);
    /* The request id is echoed in errors when it could be read. */
    assert_true(parse("{\"v\":1,\"op\":\"nope\",\"id\":\"abc\"}", &r, &wire, err, sizeof err) < 0);
    assert_string_equal(r.id_json, "\"abc\"");
    size_t len;
    char *rep = vg_proto_error_reply(r.id_json, wire, err, &len);
    assert_non_null(rep);
    assert_non_null(strstr(rep, "\"id\":\"abc\""));
    assert_non_null(strstr(rep, "\"ok\":false"));
    assert_non_null(strstr(rep, "\"code\":\"unknown_op\""));
    free(rep);
    rep = vg_proto_error_reply(NULL, "bad_json", "x\"y", &len);
    assert_non_null(strstr(rep, "\"id\":null"));
    assert_non_null(strstr(rep, "x\\\"y"));
    free(rep);
}

/* Random mutations of a valid request never crash the parser and always give a code. */
static void test_proto_fuzz(void **state)
{
    const char *base = "{\"v\":1,\"op\":\"ask\",\"id\":\"r\",\"video\":\"/a.mp4\",\"question\":"
                       "\"q\",\"sampling\":{\"fps\":1},\"generation\":{\"seed\":1}}";
    size_t n = strlen(base);
    char buf[512];
    unsigned s = 12345;
    for (int i = 0; i < 20000; i++) {
        memcpy(buf, base, n);
        int k = 1 + (int)((s = s * 1103515245 + 12345) >> 16) % 6;
        for (int m = 0; m < k; m++) {
            s = s * 1103515245 + 12345;
            buf[(s >> 8) % n] = (char)(s >> 20);
        }
        size_t len = (s >> 4) % (n + 1);
        vg_request r;
        const char *wire = NULL;
        char err[256];
        int rc = vg_proto_parse(buf, len, &lim, &r, &wire, err, sizeof err);
        if (rc == 0)
            vg_request_clear(&r);
        else
            assert_non_null(wire);
    }
}

/* ---------------------------------------------------------------------------------------------- */

static void test_media_policy(void **state)
{
    char roots[2][VG_CFG_STR];
    char real[VG_CFG_STR];
    assert_non_null(realpath(tmpdir, real));
    snprintf(roots[0], VG_CFG_STR, "%s/media", real);
    char path[600], outside[600], link[600], res[4096], err[256];
    mkdir(roots[0], 0700);
    snprintf(path, sizeof path, "%s/a.mp4", roots[0]);
    write_file(path, "x", 1);
    snprintf(outside, sizeof outside, "%s/secret.mp4", real);
    write_file(outside, "x", 1);
    snprintf(link, sizeof link, "%s/link.mp4", roots[0]);
    assert_int_equal(symlink(outside, link), 0);
    int is_url = -1;
    const char(*r)[VG_CFG_STR] = (const char(*)[VG_CFG_STR])roots;
    assert_int_equal(
        vg_daemon_media_check(path, r, 1, "https", res, sizeof res, &is_url, err, sizeof err), 0);
    assert_string_equal(res, path);
    assert_int_equal(is_url, 0);
    /* file: URLs are paths. */
    char furl[700];
    snprintf(furl, sizeof furl, "file://%s", path);
    assert_int_equal(
        vg_daemon_media_check(furl, r, 1, "https", res, sizeof res, &is_url, err, sizeof err), 0);
    snprintf(furl, sizeof furl, "file:%s", outside);
    assert_int_equal(
        vg_daemon_media_check(furl, r, 1, "https", res, sizeof res, &is_url, err, sizeof err),
        VG_EPATH);
    /* Traversal and symlinks out of the root. */
    char trav[700];
    snprintf(trav, sizeof trav, "%s/../secret.mp4", roots[0]);
    assert_int_equal(
        vg_daemon_media_check(trav, r, 1, "https", res, sizeof res, &is_url, err, sizeof err),
        VG_EPATH);
    assert_non_null(strstr(err, "outside"));
    assert_int_equal(
        vg_daemon_media_check(link, r, 1, "https", res, sizeof res, &is_url, err, sizeof err),
        VG_EPATH);
    assert_int_equal(
        vg_daemon_media_check(outside, r, 1, "https", res, sizeof res, &is_url, err, sizeof err),
        VG_EPATH);
    /* A root that is a prefix of another directory's name does not cover it. */
    char sib[600];
    snprintf(sib, sizeof sib, "%s/media2", real);
    mkdir(sib, 0700);
    snprintf(sib, sizeof sib, "%s/media2/b.mp4", real);
    write_file(sib, "x", 1);
    assert_int_equal(
        vg_daemon_media_check(sib, r, 1, "https", res, sizeof res, &is_url, err, sizeof err),
        VG_EPATH);
    /* Relative paths, missing files, no roots. */
    assert_int_equal(
        vg_daemon_media_check("a.mp4", r, 1, "https", res, sizeof res, &is_url, err, sizeof err),
        VG_EPATH);
    char missing[700];
    snprintf(missing, sizeof missing, "%s/none.mp4", roots[0]);
    assert_int_equal(
        vg_daemon_media_check(missing, r, 1, "https", res, sizeof res, &is_url, err, sizeof err),
        VG_ENOENT);
    assert_int_equal(
        vg_daemon_media_check(path, r, 0, "https", res, sizeof res, &is_url, err, sizeof err),
        VG_EPATH);
    /* URLs: only whitelisted protocols. */
    assert_int_equal(vg_daemon_media_check("https://example.com/v.mp4", r, 1, "http,https", res,
                                           sizeof res, &is_url, err, sizeof err),
                     0);
    assert_int_equal(is_url, 1);
    const char *bad[] = {"rtsp://cam/1",      "concat:/a|/b", "subfile:/etc/passwd",
                         "data:text/plain,x", "ftp://x/y",    "https:/x"};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++)
        assert_int_equal(vg_daemon_media_check(bad[i], r, 1, "http,https", res, sizeof res, &is_url,
                                               err, sizeof err),
                         VG_EPROTOCOL);
    assert_int_equal(
        vg_daemon_media_check("/a\n", r, 1, "https", res, sizeof res, &is_url, err, sizeof err),
        VG_EINVAL);
}

/* ---------------------------------------------------------------------------------------------- */

typedef struct collected {
    char *items[64];
    int n;
} collected;

static void collect(const char *json, size_t len, void *opaque)
{
    collected *c = opaque;
    if (c->n < 64)
        c->items[c->n++] = strndup(json, len);
}

static void free_collected(collected *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->items[i]);
    c->n = 0;
}

static void test_journal(void **state)
{
    char path[400], err[256];
    snprintf(path, sizeof path, "%s/j.journal", tmpdir);
    assert_int_equal(vg_crc32("123456789", 9), 0xCBF43926u); /* the standard check value */
    collected c = {{0}, 0};
    vg_journal_stats st;
    /* Missing file: no records, no error. */
    assert_int_equal(vg_journal_load(path, collect, &c, &st, err, sizeof err), 0);
    assert_int_equal(c.n, 0);
    vg_journal *j;
    assert_int_equal(vg_journal_open(path, NULL, &j, err, sizeof err), 0);
    assert_int_equal(vg_journal_append(j, "{\"a\":1}", 7), 0);
    assert_int_equal(vg_journal_append(j, "{\"a\":2}", 7), 0);
    assert_int_equal(vg_journal_append(j, "bad\nline", 8), VG_EINVAL);
    vg_journal_close(j);
    assert_int_equal(vg_journal_load(path, collect, &c, &st, err, sizeof err), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.items[1], "{\"a\":2}");
    assert_int_equal(st.good, 2);
    free_collected(&c);

    /* A torn last line (a crash mid-write) and a damaged line are skipped. */
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_int_equal(write(fd, "deadbeef {\"a\":3}\n", 17), 17); /* wrong checksum */
    assert_int_equal(write(fd, "0000", 4), 4);                   /* torn */
    close(fd);
    assert_int_equal(vg_journal_load(path, collect, &c, &st, err, sizeof err), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(st.bad_crc, 1);
    assert_int_equal(st.torn, 1);
    free_collected(&c);
    /* Appending after a torn line starts a fresh line, so the new record is intact. */
    assert_int_equal(vg_journal_open(path, NULL, &j, err, sizeof err), 0);
    assert_int_equal(vg_journal_append(j, "{\"a\":4}", 7), 0);
    vg_journal_close(j);
    assert_int_equal(vg_journal_load(path, collect, &c, &st, err, sizeof err), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.items[2], "{\"a\":4}");
    free_collected(&c);
    /* A flipped byte inside a record is caught by the checksum. */
    char *data;
    size_t len;
    assert_int_equal(vg_read_file(path, 1 << 20, &data, &len, err, sizeof err), 0);
    char *p = strstr(data, "{\"a\":2}");
    assert_non_null(p);
    p[5] = '9';
    write_file(path, data, len);
    free(data);
    assert_int_equal(vg_journal_load(path, collect, &c, &st, err, sizeof err), 0);
    assert_int_equal(c.n, 2);
    free_collected(&c);

    /* Rewrite replaces the file atomically with exactly the given records. */
    char *lines[] = {"{\"x\":1}", "{\"x\":2}", "{\"x\":3}"};
    assert_int_equal(vg_journal_rewrite(path, lines, 3, err, sizeof err), 0);
    assert_int_equal(vg_journal_load(path, collect, &c, &st, err, sizeof err), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(st.bad_crc + st.torn, 0);
    assert_string_equal(c.items[0], "{\"x\":1}");
    free_collected(&c);
    char tmp[450];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);
}

/* Many appends from the loop thread all reach the file (group commit on the writer thread). */
static void test_journal_many(void **state)
{
    char path[400], err[256];
    snprintf(path, sizeof path, "%s/many.journal", tmpdir);
    vg_journal *j;
    assert_int_equal(vg_journal_open(path, NULL, &j, err, sizeof err), 0);
    for (int i = 0; i < 3000; i++) {
        char rec[64];
        int n = snprintf(rec, sizeof rec, "{\"i\":%d}", i);
        assert_int_equal(vg_journal_append(j, rec, (size_t)n), 0);
    }
    vg_journal_close(j);
    vg_journal_stats st;
    collected c = {{0}, 0};
    assert_int_equal(vg_journal_load(path, collect, &c, &st, err, sizeof err), 0);
    assert_int_equal(st.good, 3000);
    free_collected(&c);
}

static void test_journal_compaction(void **state)
{
    char path[400], err[256];
    snprintf(path, sizeof path, "%s/c.journal", tmpdir);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec;
    vg_journal_compaction cp = {.key = "job", .time = "finished", .ttl_s = 100.0};
    char *lines[] = {
        "{\"job\":\"a\",\"state\":\"queued\"}",
        "{\"job\":\"b\",\"state\":\"queued\"}",
        "{\"note\":\"no key\"}",
        NULL, /* a finished long ago: expired */
        "{\"job\":\"c\",\"state\":\"queued\"}",
        NULL, /* b finished now: kept */
    };
    char old_a[128], new_b[128];
    snprintf(old_a, sizeof old_a, "{\"job\":\"a\",\"state\":\"completed\",\"finished\":%.0f}",
             now - 1000);
    snprintf(new_b, sizeof new_b, "{\"job\":\"b\",\"state\":\"completed\",\"finished\":%.0f}", now);
    lines[3] = old_a;
    lines[5] = new_b;
    assert_int_equal(vg_journal_rewrite(path, lines, 6, err, sizeof err), 0);
    size_t kept = 0;
    assert_int_equal(vg_journal_compact(path, &cp, &kept, err, sizeof err), 0);
    assert_int_equal(kept, 3);
    collected c = {{0}, 0};
    vg_journal_stats st;
    assert_int_equal(vg_journal_load(path, collect, &c, &st, err, sizeof err), 0);
    assert_int_equal(c.n, 3);
    /* File order of the survivors: the keyless note, c's record, b's newest record. */
    assert_string_equal(c.items[0], lines[2]);
    assert_string_equal(c.items[1], lines[4]);
    assert_string_equal(c.items[2], new_b);
    free_collected(&c);

    /* The writer thread compacts on its own after `every` appends. */
    snprintf(path, sizeof path, "%s/auto.journal", tmpdir);
    cp.every = 10;
    vg_journal *j;
    assert_int_equal(vg_journal_open(path, &cp, &j, err, sizeof err), 0);
    for (int i = 0; i < 200; i++) {
        char rec[96];
        int n = snprintf(rec, sizeof rec, "{\"job\":\"k%d\",\"seq\":%d}", i % 3, i);
        assert_int_equal(vg_journal_append(j, rec, (size_t)n), 0);
    }
    vg_journal_close(j);
    assert_int_equal(vg_journal_load(path, collect, &c, &st, err, sizeof err), 0);
    assert_true(c.n >= 3 && c.n <= 3 + 10 + 3);
    /* The newest record of each key survives. */
    int seen[3] = {0, 0, 0};
    for (int i = 0; i < c.n; i++)
        for (int k = 0; k < 3; k++) {
            char want[64];
            snprintf(want, sizeof want, "{\"job\":\"k%d\",\"seq\":%d}", k, 199 - (199 - k) % 3);
            seen[k] |= !strcmp(c.items[i], want);
        }
    assert_true(seen[0] && seen[1] && seen[2]);
    free_collected(&c);
}

/* Records {"i":K} of a journal, in file order (any other intact line counts as foreign). */
typedef struct numbered {
    int v[1024];
    size_t n, foreign;
} numbered;

static void collect_numbered(const char *json, size_t len, void *opaque)
{
    numbered *c = opaque;
    int k, used = 0;
    if (sscanf(json, "{\"i\":%d}%n", &k, &used) == 1 && (size_t)used == len && c->n < 1024)
        c->v[c->n++] = k;
    else
        c->foreign++;
}

static void test_journal_keep_last(void **state)
{
    char path[400], err[256];
    enum { N = 40 };
    /* Without a key, compaction cuts the journal to its newest keep_last records, in file order. */
    snprintf(path, sizeof path, "%s/last.journal", tmpdir);
    char *lines[100], buf[100][32];
    for (int i = 0; i < 100; i++) {
        snprintf(buf[i], sizeof buf[i], "{\"i\":%d}", i);
        lines[i] = buf[i];
    }
    assert_int_equal(vg_journal_rewrite(path, lines, 100, err, sizeof err), 0);
    vg_journal_compaction cp = {.keep_last = N};
    size_t kept = 0;
    assert_int_equal(vg_journal_compact(path, &cp, &kept, err, sizeof err), 0);
    assert_int_equal(kept, N);
    numbered c = {{0}, 0, 0};
    vg_journal_stats st;
    assert_int_equal(vg_journal_load(path, collect_numbered, &c, &st, err, sizeof err), 0);
    assert_int_equal(c.n, N);
    assert_int_equal(c.foreign + st.torn + st.bad_crc, 0);
    for (size_t i = 0; i < c.n; i++)
        assert_int_equal(c.v[i], 100 - N + (int)i);
    /* Fewer records than keep_last: all stay. */
    cp.keep_last = 1000;
    assert_int_equal(vg_journal_compact(path, &cp, &kept, err, sizeof err), 0);
    assert_int_equal(kept, N);
    /* keep_last after the key rule: of the newest record per job, the newest 2 stay. */
    char *jobs[] = {"{\"job\":\"a\",\"n\":1}", "{\"job\":\"b\",\"n\":2}", "{\"job\":\"c\",\"n\":3}",
                    "{\"job\":\"a\",\"n\":4}", "{\"job\":\"b\",\"n\":5}"};
    assert_int_equal(vg_journal_rewrite(path, jobs, 5, err, sizeof err), 0);
    vg_journal_compaction kcp = {.key = "job", .time = "finished", .ttl_s = 100.0, .keep_last = 2};
    assert_int_equal(vg_journal_compact(path, &kcp, &kept, err, sizeof err), 0);
    assert_int_equal(kept, 2);
    collected jc = {{0}, 0};
    assert_int_equal(vg_journal_load(path, collect, &jc, &st, err, sizeof err), 0);
    assert_int_equal(jc.n, 2);
    assert_string_equal(jc.items[0], jobs[3]);
    assert_string_equal(jc.items[1], jobs[4]);
    free_collected(&jc);
    /* Rules that name nothing are refused. */
    vg_journal_compaction none = {.every = 10}, time_only = {.time = "t", .keep_last = 5};
    assert_int_equal(vg_journal_compact(path, &none, &kept, err, sizeof err), VG_EINVAL);
    assert_int_equal(vg_journal_compact(path, &time_only, &kept, err, sizeof err), VG_EINVAL);
    assert_int_equal(vg_journal_compact(path, NULL, &kept, err, sizeof err), VG_EINVAL);
    vg_journal *j = NULL;
    assert_int_equal(vg_journal_open(path, &none, &j, err, sizeof err), VG_EINVAL);

    /* The writer thread keeps an open journal between N and 1.5 N records: 3 N appends leave the
     * newest ones, newest last, every line intact. */
    snprintf(path, sizeof path, "%s/ring.journal", tmpdir);
    cp = (vg_journal_compaction){.every = N / 2, .keep_last = N};
    assert_int_equal(vg_journal_open(path, &cp, &j, err, sizeof err), 0);
    for (int i = 0; i < 3 * N; i++) {
        char rec[32];
        int n = snprintf(rec, sizeof rec, "{\"i\":%d}", i);
        assert_int_equal(vg_journal_append(j, rec, (size_t)n), 0);
        if (i % 7 == 0)
            nanosleep(&(struct timespec){0, 2000000}, NULL); /* batches of different sizes */
    }
    vg_journal_close(j);
    c = (numbered){{0}, 0, 0};
    assert_int_equal(vg_journal_load(path, collect_numbered, &c, &st, err, sizeof err), 0);
    assert_int_equal(c.foreign + st.torn + st.bad_crc, 0);
    assert_true(c.n >= N && c.n <= N + N / 2);
    for (size_t i = 0; i < c.n; i++)
        assert_int_equal(c.v[i], 3 * N - (int)c.n + (int)i);
}

/* ---------------------------------------------------------------------------------------------- */

static void test_sd_notify(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(vg_sd_notify("READY=1"), 0); /* not under systemd: nothing to do */
    /* An abstract socket, as systemd may use. */
    char name[64];
    snprintf(name, sizeof name, "@vg-test-notify-%ld", (long)getpid());
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, name, strlen(name));
    sa.sun_path[0] = 0;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name))),
                     0);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(vg_sd_notify("READY=1\nSTATUS=ok"), 0);
    char buf[64] = "";
    assert_int_equal(recv(fd, buf, sizeof buf - 1, 0), 17);
    assert_string_equal(buf, "READY=1\nSTATUS=ok");
    close(fd);
    /* A path socket. */
    char path[400];
    snprintf(path, sizeof path, "%s/notify", tmpdir);
    fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(vg_sd_notify("WATCHDOG=1"), 0);
    memset(buf, 0, sizeof buf);
    assert_int_equal(recv(fd, buf, sizeof buf - 1, 0), 10);
    close(fd);
    setenv("NOTIFY_SOCKET", "relative", 1);
    assert_int_equal(vg_sd_notify("READY=1"), VG_EINVAL);
    unsetenv("NOTIFY_SOCKET");
    setenv("WATCHDOG_USEC", "4000000", 1);
    unsetenv("WATCHDOG_PID");
    assert_int_equal(vg_sd_watchdog_usec(), 4000000);
    setenv("WATCHDOG_PID", "1", 1);
    assert_int_equal(vg_sd_watchdog_usec(), 0); /* meant for another process */
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_piece),        cmocka_unit_test(test_config_parse),
        cmocka_unit_test(test_config_errors),     cmocka_unit_test(test_config_roots),
        cmocka_unit_test(test_config_example),    cmocka_unit_test(test_proto_valid),
        cmocka_unit_test(test_proto_errors),      cmocka_unit_test(test_proto_fuzz),
        cmocka_unit_test(test_media_policy),      cmocka_unit_test(test_journal),
        cmocka_unit_test(test_journal_many),      cmocka_unit_test(test_journal_compaction),
        cmocka_unit_test(test_journal_keep_last), cmocka_unit_test(test_sd_notify),
    };
    return cmocka_run_group_tests(tests, make_tmp, rm_tmp);
}
