/*
 * test_pipeline.c: the pipeline test executable: shared helpers and the list of groups.
 */
#include "tests.h"

#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *shared_dir(void)
{
    static char dir[4096];
    const char *env = getenv("VG_SHARED_DIR");
    const char *cand[2] = {env, VG_SHARED_DIR};
    for (int i = 0; i < 2; i++) {
        struct stat st;
        if (cand[i] && cand[i][0] && stat(cand[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            snprintf(dir, sizeof dir, "%s", cand[i]);
            return dir;
        }
    }
    return NULL;
}

char *shared_read(const char *rel, size_t *len)
{
    const char *dir = shared_dir();
    if (!dir) {
        printf("skipped: the shared reference directory (../shared) is absent\n");
        skip();
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    char *data = NULL;
    size_t n = 0;
    char err[256];
    if (vg_read_file(path, (size_t)1 << 30, &data, &n, err, sizeof err)) {
        printf("skipped: %s is absent (%s)\n", path, err);
        skip();
    }
    if (len)
        *len = n;
    return data;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_linspace),       cmocka_unit_test(test_plan_linspace_torch),
        cmocka_unit_test(test_plan_smart_resize),   cmocka_unit_test(test_plan_errors),
        cmocka_unit_test(test_plan_clip),           cmocka_unit_test(test_plan_cmd_usage),
        cmocka_unit_test(test_plan_cmd_file),       cmocka_unit_test(test_plan_vectors),
        cmocka_unit_test(test_resize_basic),        cmocka_unit_test(test_resize_fixture),
        cmocka_unit_test(test_patchify_golden),     cmocka_unit_test(test_patchify_odd),
        cmocka_unit_test(test_prompt_mrope_vector), cmocka_unit_test(test_prompt_layout),
        cmocka_unit_test(test_prompt_golden),       cmocka_unit_test(test_answer_table),
        cmocka_unit_test(test_answer_fuzz),
    };
    /* VG_TEST_FILTER="test_plan_*" runs a subset (ctest runs the plan tests again through the
     * real `vigil` executable that way). */
    const char *filter = getenv("VG_TEST_FILTER");
    if (filter && filter[0])
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
