/*
 * cmd_random.c: `vigil-model random`, writes a random-weight Qwen3-VL checkpoint (see
 * vg_model_write_random in model.h):
 *
 *   vigil-model random --preset 2b|4b|8b|tiny --out DIR [--seed N] [--std X] [--tokenizer FILE]
 *   vigil-model random --config FILE --out DIR [--seed N] [--std X] [--tokenizer FILE]
 *
 * Single-threaded; prints the directory and the time taken.
 */
#include "cmds.h"

#include "common.h"
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: vigil-model random (--preset 2b|4b|8b|tiny | --config FILE) --out DIR\n"
               "                          [--seed N] [--std X] [--tokenizer FILE]\n\n"
               "Writes a random-weight Qwen3-VL checkpoint in the Hugging Face layout:\n"
               "config.json, model.safetensors (BF16), tokenizer.json, generation_config.json,\n"
               "video_preprocessor_config.json.\n\n"
               "  --preset NAME     sizes of Qwen3-VL 2B/4B/8B-Instruct, or a tiny test model\n"
               "  --config FILE     sizes from a config.json instead of a preset\n"
               "  --out DIR         output directory (created if missing)\n"
               "  --seed N          PRNG seed (default 0)\n"
               "  --std X           weight standard deviation (default 0.02)\n"
               "  --tokenizer FILE  tokenizer.json to copy (default: a small generated one)\n");
}

int vg_cmd_random(int argc, char **argv)
{
    vg_random_spec spec = {0};
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "vigil-model random: %s needs a value (or is unknown)\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--preset") == 0) {
            spec.preset = v;
        } else if (strcmp(a, "--config") == 0) {
            spec.config_path = v;
        } else if (strcmp(a, "--out") == 0) {
            out = v;
        } else if (strcmp(a, "--tokenizer") == 0) {
            spec.tokenizer_src = v;
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "vigil-model random: bad --seed '%s'\n", v);
                return 2;
            }
            spec.seed = (uint64_t)s;
        } else if (strcmp(a, "--std") == 0) {
            char *end;
            double d = strtod(v, &end);
            if (end == v || *end || !isfinite(d) || d <= 0.0 || d > 10.0) {
                fprintf(stderr, "vigil-model random: --std must be a number in (0, 10]\n");
                return 2;
            }
            spec.std = (float)d;
        } else {
            fprintf(stderr, "vigil-model random: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!out || (spec.preset != NULL) == (spec.config_path != NULL)) {
        fprintf(stderr, "vigil-model random: give --out and exactly one of --preset, --config\n");
        usage(stderr);
        return 2;
    }
    char err[512];
    double t0 = vg_now_ms();
    int rc = vg_model_write_random(&spec, out, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "vigil-model random: %s\n", err);
        return 1;
    }
    printf("wrote %s (%s) in %.1f s\n", out, spec.preset ? spec.preset : spec.config_path,
           (vg_now_ms() - t0) / 1000.0);
    return 0;
}
