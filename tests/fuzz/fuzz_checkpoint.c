/*
 * fuzz_checkpoint.c: libFuzzer harness for the checkpoint loader's parsers (model/): the first byte
 * selects the target, the rest is the file.
 *  - even: a model.safetensors file (vg_st_open_file: header JSON, dtypes, shapes, offsets), then
 *    every tensor found is checked for non-finite values and converted to float32 (at most 1 MiB
 *    of elements each), which touches every byte the header claims;
 *  - odd: a config.json text (vg_model_config_parse).
 */
#define _GNU_SOURCE
#include "common.h"
#include "fuzz_util.h"
#include "internal.h"

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
    if (size < 1)
        return 0;
    char err[512];
    if (data[0] & 1) {
        vg_model_info info;
        vg_model_config_parse((const char *)data + 1, size - 1, &info, err, sizeof err);
        return 0;
    }
    vg_st *st = NULL;
    if (vg_st_open_file(fuzz_as_file(data + 1, size - 1), &st, err, sizeof err) != 0)
        return 0;
    for (size_t i = 0; i < vg_st_count(st); i++) {
        const vg_tensor *t = vg_st_at(st, i);
        FUZZ_CHECK(t && vg_st_find(st, t->name) != NULL, "a listed tensor cannot be found");
        vg_tensor_check_finite(t, err, sizeof err);
        if (t->numel <= ((size_t)1 << 18)) {
            float *f = malloc(t->numel ? t->numel * sizeof *f : 1);
            FUZZ_CHECK(f != NULL, "out of memory");
            vg_tensor_to_f32(t, f);
            free(f);
        }
    }
    vg_st_close(st);
    return 0;
}
