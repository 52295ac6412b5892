/*
 * fuzz_tokenizer.c: libFuzzer harness for tokenizer.json loading (vg_tokenizer_load in
 * model/tokenizer.c). A tokenizer that loads then encodes a fixed chat-like text with special
 * tokens, and every id it gives is turned back into bytes, so the tables the load built are
 * exercised too.
 */
#define _GNU_SOURCE
#include "common.h"
#include "fuzz_util.h"
#include "model.h"

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vg_tokenizer *tok = NULL;
    char err[512];
    if (vg_tokenizer_load(fuzz_as_file(data, size), &tok, err, sizeof err) != 0)
        return 0;
    static const char text[] = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What "
                               "happens at 0:03? caf\xC3\xA9 \xF0\x9F\x98\x80 12345<|im_end|>\n";
    int32_t *ids = NULL;
    size_t n = 0;
    if (vg_tokenizer_encode(tok, text, sizeof text - 1, 1, &ids, &n) == 0) {
        size_t cap = vg_tokenizer_max_token_bytes(tok) + 16;
        char *buf = malloc(cap);
        FUZZ_CHECK(buf != NULL, "out of memory");
        for (size_t i = 0; i < n; i++) {
            vg_tokenizer_token_bytes(tok, ids[i], buf, cap);
            vg_tokenizer_is_special(tok, ids[i]);
        }
        free(buf);
        free(ids);
    }
    vg_tokenizer_free(tok);
    return 0;
}
