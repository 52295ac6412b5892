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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_tiny1),
        cmocka_unit_test(test_other_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
