#include "tests.h"
void test_prompt_mrope_vector(void **state)
{
    (void)state;
    skip();
}
void test_prompt_golden(void **state)
{
    (void)state;
    skip();
}
void test_prompt_layout(void **state)
{
    (void)state;
    skip();
}
