/*
 * test_golden.c: runs `vigil-model golden` (vg_cmd_golden, the same code as the tool) on every case
 * directory under ../shared/golden and requires exit status 0, i.e. every reference tensor within
 * the manifest's tolerance and the greedy ids identical. Skipped when ../shared is absent.
 */
#include "cmds.h"

#include <dirent.h>
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

static const char *shared_dir(void)
{
    const char *env = getenv("VG_SHARED_DIR");
    const char *cand[2] = {env, VG_SHARED_DIR};
    static char buf[4096];
    for (int i = 0; i < 2; i++) {
        if (!cand[i] || !cand[i][0])
            continue;
        snprintf(buf, sizeof(buf), "%s/golden", cand[i]);
        struct stat st;
        if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode))
            return buf;
    }
    return NULL;
}

static void test_tiny1(void **state)
{
    (void)state;
    const char *g = shared_dir();
    if (!g)
        skip();
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/tiny1", g);
    struct stat st;
    if (stat(dir, &st) != 0)
        skip();
    char *argv[] = {"golden", "--threads", "1", dir, NULL};
    assert_int_equal(vg_cmd_golden(4, argv), 0);
}

/* The same case with bf16 and with q8_0 weights, each held to its type's tolerance (cmd_golden.c:
 * 1e-2 and 5e-2 relative to max(1, |ref|)) and identical greedy ids, on two threads so the pool's
 * row split runs too. */
static void run_weights(const char *type)
{
    const char *g = shared_dir();
    if (!g)
        skip();
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/tiny1", g);
    struct stat st;
    if (stat(dir, &st) != 0)
        skip();
    char wt[16];
    snprintf(wt, sizeof(wt), "%s", type);
    char *argv[] = {"golden", "--threads", "2", "--weights", wt, dir, NULL};
    assert_int_equal(vg_cmd_golden(6, argv), 0);
}

static void test_tiny1_bf16(void **state)
{
    (void)state;
    run_weights("bf16");
}

static void test_tiny1_q8_0(void **state)
{
    (void)state;
    run_weights("q8_0");
}

/* Every other case directory of the same layout must pass too. */
static void test_other_cases(void **state)
{
    (void)state;
    const char *g = shared_dir();
    if (!g)
        skip();
    DIR *d = opendir(g);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "tiny1") == 0)
            continue;
        char man[4400];
        snprintf(man, sizeof(man), "%s/%s/manifest.json", g, e->d_name);
        struct stat st;
        if (stat(man, &st) != 0)
            continue;
        char dir[4400];
        snprintf(dir, sizeof(dir), "%s/%s", g, e->d_name);
        char *argv[] = {"golden", dir, NULL};
        assert_int_equal(vg_cmd_golden(2, argv), 0);
        n++;
    }
    closedir(d);
    if (n == 0)
        skip();
}

/* Usage errors and an unusable directory give non-zero statuses, never a crash. */
static void test_bad_args(void **state)
{
    (void)state;
    char *a1[] = {"golden", NULL};
    assert_int_equal(vg_cmd_golden(1, a1), 2);
    char *a2[] = {"golden", "/nonexistent/case", NULL};
    assert_int_equal(vg_cmd_golden(2, a2), 1);
}

/* A case whose files disagree with its manifest fails cleanly (exit 1, no crash): a truncated
 * input_ids.bin, then a manifest whose shape for pixel_values_videos is wrong. */
static void link_case(const char *src, const char *dst, const char *skip1, const char *skip2)
{
    DIR *d = opendir(src);
    assert_non_null(d);
    struct dirent *e;
    char a[4400], b[4400];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, skip1) == 0 || strcmp(e->d_name, skip2) == 0)
            continue;
        snprintf(a, sizeof(a), "%s/%s", src, e->d_name);
        snprintf(b, sizeof(b), "%s/%s", dst, e->d_name);
        assert_int_equal(symlink(a, b), 0);
    }
    closedir(d);
}

static void write_bytes(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *d = malloc((size_t)len + 1);
    assert_int_equal(fread(d, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    d[len] = '\0';
    *n = (size_t)len;
    return d;
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[4400];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void test_corrupt_case(void **state)
{
    (void)state;
    const char *g = shared_dir();
    if (!g)
        skip();
    char src[4200];
    snprintf(src, sizeof(src), "%s/tiny1", g);
    struct stat st;
    if (stat(src, &st) != 0)
        skip();

    char d1[] = "/tmp/vg-golden-bad-XXXXXX";
    assert_non_null(mkdtemp(d1));
    link_case(src, d1, "input_ids.bin", "");
    char p[4400];
    snprintf(p, sizeof(p), "%s/input_ids.bin", src);
    size_t n = 0;
    char *ids = slurp(p, &n);
    snprintf(p, sizeof(p), "%s/input_ids.bin", d1);
    write_bytes(p, ids, n - 8); /* one id short */
    free(ids);
    char *a1[] = {"golden", "--threads", "1", d1, NULL};
    assert_int_equal(vg_cmd_golden(4, a1), 1);
    rm_dir(d1);

    char d2[] = "/tmp/vg-golden-bad-XXXXXX";
    assert_non_null(mkdtemp(d2));
    link_case(src, d2, "manifest.json", "");
    snprintf(p, sizeof(p), "%s/manifest.json", src);
    char *man = slurp(p, &n);
    char *at = strstr(man, "\"pixel_values_videos.bin\"");
    assert_non_null(at);
    at = strstr(at, "96");
    assert_non_null(at);
    at[1] = '5'; /* 96 patch rows -> 95: the file no longer matches its shape */
    snprintf(p, sizeof(p), "%s/manifest.json", d2);
    write_bytes(p, man, n);
    free(man);
    char *a2[] = {"golden", "--threads", "1", d2, NULL};
    assert_int_equal(vg_cmd_golden(4, a2), 1);
    rm_dir(d2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),    cmocka_unit_test(test_tiny1),
        cmocka_unit_test(test_tiny1_bf16),  cmocka_unit_test(test_tiny1_q8_0),
        cmocka_unit_test(test_other_cases), cmocka_unit_test(test_corrupt_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
