/*
 * test_loader_hardening.c: checkpoints that used to pass start-up and then fail every job (issue
 * #13 item 9) are refused by vg_model_load with a sentence: a FIFO in place of model.safetensors,
 * config.json or tokenizer.json (the open used to block forever), a tokenizer without the chat
 * template's special tokens, max_position_embeddings = 1, and all-NaN or infinite weights. Each
 * case edits a copy of a random tiny checkpoint made by `vigil-model random`; the copy unedited
 * loads. An alarm bounds every load, so a hang fails the test instead of stalling it.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "model.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char base[256], ckpt[320], work[320];

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static int group_setup(void **state)
{
    snprintf(base, sizeof base, "/tmp/vg-loadh-XXXXXX");
    if (!mkdtemp(base))
        return -1;
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", base);
    snprintf(work, sizeof work, "%s/work", base);
    if (sh("'%s/tools/vigil-model' random --preset tiny --out '%s' >/dev/null 2>&1", VG_BINARY_DIR,
           ckpt) != 0) {
        fprintf(stderr, "vigil-model random failed\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    return sh("rm -rf '%s'", base) == 0 ? 0 : -1;
}

/* A fresh copy of the checkpoint in work/. */
static void fresh_copy(void)
{
    assert_int_equal(sh("rm -rf '%s' && cp -r '%s' '%s'", work, ckpt, work), 0);
}

/* Loads work/ under a 30 s alarm; returns the result and the sentence in err. */
static int load(char *err, size_t errlen)
{
    vg_model *m = NULL;
    vg_model_params p = vg_model_default_params();
    p.n_threads = 1;
    err[0] = 0;
    alarm(30);
    int rc = vg_model_load(work, &p, &m, err, errlen);
    alarm(0);
    vg_model_free(m);
    return rc;
}

static void expect_refused(const char *needle)
{
    char err[512];
    int rc = load(err, sizeof err);
    if (rc >= 0)
        fail_msg("loaded; expected a refusal mentioning '%s'", needle);
    if (!strstr(err, needle))
        fail_msg("refused with '%s'; expected it to mention '%s'", err, needle);
}

static void test_unedited_loads(void **state)
{
    fresh_copy();
    char err[512];
    if (load(err, sizeof err) != 0)
        fail_msg("%s", err);
}

static void test_fifo_files(void **state)
{
    const char *names[] = {"model.safetensors", "config.json", "tokenizer.json"};
    for (size_t i = 0; i < VG_ARRAY_LEN(names); i++) {
        fresh_copy();
        char path[400];
        snprintf(path, sizeof path, "%s/%s", work, names[i]);
        assert_int_equal(unlink(path), 0);
        assert_int_equal(mkfifo(path, 0600), 0);
        double t0 = vg_now_ms();
        expect_refused("not a regular file");
        assert_true(vg_now_ms() - t0 < 5000);
    }
}

/* Rewrites work/name with every occurrence of from replaced by to (same length). */
static void replace_in(const char *name, const char *from, const char *to)
{
    char path[400], err[256];
    snprintf(path, sizeof path, "%s/%s", work, name);
    char *data;
    size_t len;
    assert_int_equal(vg_read_file(path, (size_t)1 << 28, &data, &len, err, sizeof err), 0);
    size_t fl = strlen(from);
    assert_int_equal(fl, strlen(to));
    int n = 0;
    for (char *p = data; (p = strstr(p, from)) != NULL; p += fl, n++)
        memcpy(p, to, fl);
    assert_true(n > 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    free(data);
}

static void test_tokenizer_without_special_tokens(void **state)
{
    const char *toks[] = {"<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                          "<|video_pad|>"};
    for (size_t i = 0; i < VG_ARRAY_LEN(toks); i++) {
        fresh_copy();
        char other[64];
        snprintf(other, sizeof other, "%s", toks[i]);
        other[2] = other[2] == 'x' ? 'y' : 'x'; /* "<|xm_start|>" */
        replace_in("tokenizer.json", toks[i], other);
        expect_refused(toks[i]);
    }
}

/* Sets text_config.key (or the top level's) in work/config.json to v. */
static void set_config_number(const char *key, double v)
{
    char path[400], err[256];
    snprintf(path, sizeof path, "%s/config.json", work);
    char *data;
    size_t len;
    assert_int_equal(vg_read_file(path, 1 << 20, &data, &len, err, sizeof err), 0);
    cJSON *c = cJSON_ParseWithLength(data, len);
    free(data);
    assert_non_null(c);
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(c, "text_config");
    cJSON *o = tc ? tc : c;
    if (cJSON_GetObjectItemCaseSensitive(o, key))
        cJSON_ReplaceItemInObjectCaseSensitive(o, key, cJSON_CreateNumber(v));
    else
        cJSON_AddNumberToObject(o, key, v);
    char *s = cJSON_Print(c);
    cJSON_Delete(c);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
    free(s);
}

static void test_tiny_context(void **state)
{
    const double bad[] = {1, 16, 255};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        fresh_copy();
        set_config_number("max_position_embeddings", bad[i]);
        expect_refused("max_position_embeddings");
    }
    fresh_copy();
    set_config_number("max_position_embeddings", 4096);
    char err[512];
    if (load(err, sizeof err) != 0)
        fail_msg("max_position_embeddings 4096: %s", err);
}

/* Writes pattern[plen] over the start of work/model.safetensors' data section (the first tensor's
 * first elements), repeated over the whole section when all is set. */
static void poison_weights(const unsigned char *pattern, size_t plen, int all)
{
    char path[400];
    snprintf(path, sizeof path, "%s/model.safetensors", work);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char h[8];
    assert_int_equal(pread(fd, h, 8, 0), 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | h[i];
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    size_t off = 8 + (size_t)hl, n = all ? (size_t)st.st_size - off : plen;
    unsigned char *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = pattern[i % plen];
    assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
    free(buf);
    close(fd);
}

static void test_non_finite_weights(void **state)
{
    /* All NaN: bytes FF are a NaN in F32, BF16 and F16 alike. */
    const unsigned char nan[4] = {0xFF, 0xFF, 0xFF, 0xFF};
    fresh_copy();
    poison_weights(nan, 4, 1);
    expect_refused("non-finite");
    /* One NaN at the very start of one tensor. */
    fresh_copy();
    poison_weights(nan, 4, 0);
    expect_refused("NaN");
    /* Infinity: bytes 00 00 80 7F are +inf as an F32, and +0 then +inf as two BF16. */
    const unsigned char inf[4] = {0x00, 0x00, 0x80, 0x7F};
    fresh_copy();
    poison_weights(inf, 4, 0);
    expect_refused("infinity");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unedited_loads),
        cmocka_unit_test(test_fifo_files),
        cmocka_unit_test(test_tokenizer_without_special_tokens),
        cmocka_unit_test(test_tiny_context),
        cmocka_unit_test(test_non_finite_weights),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
