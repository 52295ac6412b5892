/*
 * fuzz_answer.c: libFuzzer harness for the answer parser (vg_answer_parse in pipeline/answer.c):
 * model text to events. Invariants: events have finite times with start <= end and a
 * NUL-terminated label.
 */
#define _GNU_SOURCE
#include "common.h"
#include "fuzz_util.h"
#include "pipeline.h"

#include <math.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL, "out of memory");
    memcpy(text, data, size);
    text[size] = 0;
    vg_event *ev = NULL;
    size_t n = 0;
    if (vg_answer_parse(text, &ev, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK(isfinite(ev[i].start) && isfinite(ev[i].end), "a non-finite event time");
            FUZZ_CHECK(ev[i].start <= ev[i].end, "an event that ends before it starts");
            FUZZ_CHECK(memchr(ev[i].label, 0, sizeof ev[i].label) != NULL, "an unterminated label");
        }
    }
    free(ev);
    free(text);
    return 0;
}
