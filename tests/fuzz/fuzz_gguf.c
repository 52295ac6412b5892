/*
 * fuzz_gguf.c: libFuzzer harness for the GGUF reader (model/gguf.c) and what reads a GGUF's
 * contents: the input is the file. When it opens, every metadata value is read through the typed
 * accessors (every array element, every string of a string array), and every tensor is found by
 * name again and (at most 64 Ki elements of it) dequantized to float32 when the engine knows its
 * type, which touches every byte the header claims. Then the same file goes through the qwen3vl
 * model mapping (gguf_model.c: metadata checked as config.json, the tokenizer built from
 * tokenizer.ggml.*, tensor names and types), as vg_model_load would take it.
 */
#define _GNU_SOURCE
#include "common.h"
#include "fuzz_util.h"
#include "gguf.h"
#include "gguf_model.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    vg_gguf *g = NULL;
    if (vg_gguf_open(fuzz_as_file(data, size), &g, err, sizeof err) != 0)
        return 0;
    for (size_t i = 0; i < vg_gguf_n_kv(g); i++) {
        const vg_gguf_kv *kv = vg_gguf_kv_at(g, i);
        FUZZ_CHECK(kv && vg_gguf_find_kv(g, kv->key) != NULL, "a listed key cannot be found");
        int64_t v;
        double d;
        const char *s;
        size_t len;
        const vg_gguf_kv *arr;
        vg_gguf_get_int(g, kv->key, INT64_MIN, INT64_MAX, &v, err, sizeof err);
        vg_gguf_get_float(g, kv->key, &d, err, sizeof err);
        if (vg_gguf_get_str(g, kv->key, &s, &len, err, sizeof err) == 0 && len)
            FUZZ_CHECK(s[len - 1] == s[len - 1], "string unreadable"); /* ASan checks the read */
        if (vg_gguf_get_arr(g, kv->key, &arr, err, sizeof err) == 0) {
            for (uint64_t j = 0; j < arr->n && j < 4096; j++) {
                vg_gguf_arr_int(arr, j, &v);
                vg_gguf_arr_float(arr, j, &d);
            }
            vg_gguf_str_iter it = {0};
            size_t total = 0;
            while (vg_gguf_arr_str_next(arr, &it, &s, &len)) {
                if (len)
                    total += (unsigned char)s[len - 1]; /* touch the last byte */
            }
            (void)total;
        }
    }
    float *buf = malloc(((size_t)1 << 16) * sizeof *buf);
    FUZZ_CHECK(buf != NULL, "out of memory");
    for (size_t i = 0; i < vg_gguf_n_tensors(g); i++) {
        const vg_gguf_tensor *t = vg_gguf_tensor_at(g, i);
        FUZZ_CHECK(vg_gguf_find_tensor(g, t->name) == t, "a listed tensor cannot be found");
        size_t be, bb;
        FUZZ_CHECK(vg_ggml_type_block(t->type, &be, &bb) == 0, "unknown type accepted");
        size_t n = t->numel < ((size_t)1 << 16) ? t->numel : ((size_t)1 << 16);
        n -= n % be;
        vg_quant_dequant(t->type, t->data, n, buf);
    }
    free(buf);
    vg_gguf_close(g);
    /* the file as a qwen3vl text model: metadata -> description, tokenizer.ggml.* -> tokenizer,
     * tensor names -> the engine's */
    vg_model_info info;
    vg_gen_params gen;
    vg_st *st = NULL;
    vg_tokenizer *tok = NULL;
    if (vg_gguf_model_open(fuzz_as_file(data, size), NULL, NULL, &info, &gen, &st, &tok, err,
                           sizeof err) == 0) {
        FUZZ_CHECK(st && tok && info.vocab_size > 0, "a model opened without its parts");
        vg_st_close(st);
        vg_tokenizer_free(tok);
    }
    return 0;
}
