/*
 * tests.h: the pipeline test groups (one cmocka executable, test_pipeline) and their helpers.
 */
#ifndef VG_TESTS_PIPELINE_H
#define VG_TESTS_PIPELINE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* The shared reference directory (../shared), or NULL when it is absent. */
const char *shared_dir(void);
/* Reads shared/<rel> into a malloc'd buffer; skips the test (cmocka skip) when shared/ or the file
 * is absent. */
char *shared_read(const char *rel, size_t *len);

void test_plan_vectors(void **state);
void test_plan_linspace(void **state);
void test_plan_linspace_torch(void **state);
void test_plan_smart_resize(void **state);
void test_plan_errors(void **state);
void test_plan_clip(void **state);
void test_plan_cmd_usage(void **state);
void test_plan_cmd_file(void **state);
void test_resize_fixture(void **state);
void test_resize_basic(void **state);
void test_patchify_golden(void **state);
void test_patchify_odd(void **state);
void test_prompt_mrope_vector(void **state);
void test_prompt_golden(void **state);
void test_prompt_layout(void **state);
void test_answer_table(void **state);
void test_answer_fuzz(void **state);

#endif
