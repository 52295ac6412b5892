/*
 * cmd_quantize.c: `vigil-model quantize MODEL_DIR --type TYPE --out DIR`, a Hugging Face Qwen3-VL
 * checkpoint written as the GGUF pair llama.cpp and vigild load (vg_model_quantize, model.h).
 * Prints the files written and their sizes. Exit status 0, 1 on failure, 2 on usage errors.
 */
#include "cmds.h"
#include "common.h"
#include "model.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: vigil-model quantize MODEL_DIR --type TYPE --out DIR\n\n"
               "Writes the Hugging Face checkpoint MODEL_DIR as a GGUF pair in DIR (created if\n"
               "missing): NAME-TYPE.gguf, the qwen3vl text model, and mmproj-NAME-F16.gguf, the\n"
               "vision tower, plus generation_config.json and video_preprocessor_config.json.\n"
               "`vigild --model DIR` loads the directory; llama.cpp loads the two files.\n\n"
               "TYPE (llama.cpp's names): f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k.\n");
}

int vg_cmd_quantize(int argc, char **argv)
{
    const char *dir = NULL, *type = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--type") == 0 && i + 1 < argc) {
            type = argv[++i];
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (argv[i][0] == '-' || dir) {
            usage(stderr);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (!dir || !type || !out) {
        usage(stderr);
        return 2;
    }
    char err[1024], text[4096];
    double t0 = vg_now_ms();
    if (vg_model_quantize(dir, type, out, text, sizeof text, err, sizeof err) < 0) {
        fprintf(stderr, "quantize: %s\n", err);
        return 1;
    }
    printf("quantize: %s -> %s (%s) in %.1f s\n", dir, out, type, (vg_now_ms() - t0) / 1000.0);
    DIR *d = opendir(out);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[8192];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", out, e->d_name);
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
            printf("  %-48s %10.2f MiB\n", e->d_name, (double)sb.st_size / 1048576.0);
    }
    if (d)
        closedir(d);
    return 0;
}
