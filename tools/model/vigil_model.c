/*
 * vigil_model.c: `vigil-model`, the engine's command-line tools. Dispatches to the subcommands of
 * tools/cmds.h. Single-threaded front end; the engine uses its own BLAS threads.
 */
#include "cmds.h"

#include "common.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"golden", vg_cmd_golden, "CASE_DIR   run the engine on a golden case, compare every tensor"},
    {"tokenize", vg_cmd_tokenize,
     "MODEL_DIR  one JSON string per stdin line -> one id array per line"},
    {"random", vg_cmd_random,
     "--preset 2b|4b|8b|tiny | --config FILE  --out DIR   write a random-weight checkpoint"},
    {"quantize", vg_cmd_quantize,
     "MODEL_DIR --type TYPE --out DIR   HF checkpoint -> GGUF pair (f16 .. q4_k_m)"},
    {"bench", vg_cmd_bench, "MODEL_DIR  benchmark the engine against this machine's ceilings"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: vigil-model COMMAND [ARGS]\n\n"
               "The Qwen3-VL engine's tools.\n\ncommands:\n");
    for (size_t i = 0; i < VG_ARRAY_LEN(cmds); i++)
        fprintf(f, "  %-9s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\nRun 'vigil-model COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("vigil-model %s\n", VG_VERSION);
        return 0;
    }
    for (size_t i = 0; i < VG_ARRAY_LEN(cmds); i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "vigil-model: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
