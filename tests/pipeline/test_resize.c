#include "tests.h"
void test_resize_fixture(void **state)
{
    (void)state;
    skip();
}
void test_resize_basic(void **state)
{
    (void)state;
    skip();
}
void test_patchify_golden(void **state)
{
    (void)state;
    skip();
}
void test_patchify_odd(void **state)
{
    (void)state;
    skip();
}
