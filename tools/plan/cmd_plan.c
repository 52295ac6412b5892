/*
 * cmd_plan.c: `vigil plan`, the sampling plan of a video (docs/qwen3vl.md §1): how many frames,
 * which ones, their timestamps, the resized size, the grid and the token counts, exactly as the
 * daemon would compute them, from a real file or from numbers alone.
 *
 *   vigil plan VIDEO [knobs] [--json]
 *   vigil plan --frames N --fps F --width W --height H [knobs] [--json]
 *
 * Runs on the calling thread; prints to stdout, errors to stderr. Exit status 0 on success, 1 when
 * the input is impossible (or the file unusable), 2 on a usage error.
 */
#include "cmds.h"

#include "common.h"
#include "pipeline.h"
#include "qa.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vigil plan VIDEO [options]\n"
            "       vigil plan --frames N --fps F --width W --height H [options]\n"
            "\n"
            "Prints the Qwen3-VL sampling plan of a video (qwen-vl-utils rules): the number of\n"
            "sampled frames, their indices and timestamps, the resized frame size, the patch grid\n"
            "and the token counts.\n"
            "\n"
            "Source (instead of VIDEO):\n"
            "  --model DIR         take the defaults below from this model's preprocessing\n"
            "                      config, as vigild does when it serves the model\n"
            "  --frames N          total decoded frames of the video\n"
            "  --fps F             its average frame rate\n"
            "  --width W           frame width in pixels\n"
            "  --height H          frame height in pixels\n"
            "\n"
            "Knobs (defaults are Qwen3-VL's):\n"
            "  --sample-fps F      frames sampled per second (default 2)\n"
            "  --nframes N         sample exactly N frames (rounded to even)\n"
            "  --min-frames N      fewest frames when sampling by fps (default 4)\n"
            "  --max-frames N      most frames when sampling by fps (default 768)\n"
            "  --min-pixels N      smallest frame area after resizing (default 131072)\n"
            "  --max-pixels N      largest frame area after resizing (default 786432)\n"
            "  --total-pixels N    pixel budget of the whole video (default 117964800)\n"
            "  --resized-height H  resize to H (rounded to 32); needs --resized-width\n"
            "  --resized-width W   resize to W (rounded to 32); needs --resized-height\n"
            "  --start S           first second of the clip to use\n"
            "  --end S             last second of the clip to use\n"
            "\n"
            "Output:\n"
            "  --json              one JSON object: nframes, frame_indices, timestamps,\n"
            "                      timestamp_strings, resized_height, resized_width, grid_thw,\n"
            "                      video_tokens, tokens_per_pair, sample_fps,\n"
            "                      total_prompt_tokens_estimate, source\n"
            "  -h, --help          this text\n");
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "vigil plan: %s needs an integer between %ld and %ld, got '%s'.\n", opt, lo,
                hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_double(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "vigil plan: %s needs a number between %g and %g, got '%s'.\n", opt, lo, hi,
                s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Prompt size without the question text: the chat frame (<|im_start|> user \n ... <|im_end|> \n
 * <|im_start|> assistant \n = 8 tokens) plus per pair the vision start/end, the pads and the
 * timestamp text, which the Qwen tokenizer splits into '<', one token per digit, '.', ' seconds'
 * and '>'. */
static long prompt_tokens_estimate(const vg_plan *plan)
{
    long n = 8;
    for (int k = 0; k < plan->n_pairs; k++) {
        long digits = 0;
        char ts[VG_TIME_TOKEN_MAX] = "";
        vg_time_token(plan->pair_times[k], ts, sizeof ts);
        for (const char *c = ts; *c; c++)
            digits += (*c >= '0' && *c <= '9');
        n += 2 + plan->tokens_per_pair + digits + 4;
    }
    return n;
}

/* Prints the shortest decimal that reads back as the same double (like Python's repr). */
static void print_double(double v)
{
    char buf[40];
    if (v == floor(v) && fabs(v) < 1e15) {
        printf("%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    fputs(buf, stdout);
}

static void print_json(const vg_plan *plan, int64_t frames, double fps, int width, int height,
                       const char *file)
{
    printf("{\"nframes\": %d, \"frame_indices\": [", plan->nframes);
    for (int i = 0; i < plan->nframes; i++)
        printf("%s%lld", i ? ", " : "", (long long)plan->frame_indices[i]);
    printf("], \"frame_times\": [");
    for (int i = 0; i < plan->nframes; i++) {
        fputs(i ? ", " : "", stdout);
        print_double(plan->frame_times[i]);
    }
    printf("], \"timestamps\": [");
    for (int k = 0; k < plan->n_pairs; k++) {
        fputs(k ? ", " : "", stdout);
        print_double(plan->pair_times[k]);
    }
    printf("], \"timestamp_strings\": [");
    for (int k = 0; k < plan->n_pairs; k++) {
        char ts[VG_TIME_TOKEN_MAX] = "";
        vg_time_token(plan->pair_times[k], ts, sizeof ts);
        printf("%s\"%s\"", k ? ", " : "", ts);
    }
    printf("], \"resized_height\": %d, \"resized_width\": %d, \"grid_thw\": [%d, %d, %d], "
           "\"video_tokens\": %ld, \"tokens_per_pair\": %ld, \"sample_fps\": ",
           plan->resized_height, plan->resized_width, plan->grid_t, plan->grid_h, plan->grid_w,
           plan->video_tokens, plan->tokens_per_pair);
    print_double(plan->sample_fps);
    printf(", \"total_prompt_tokens_estimate\": %ld, \"source\": {\"total_frames\": %lld, "
           "\"fps\": ",
           prompt_tokens_estimate(plan), (long long)frames);
    print_double(fps);
    printf(", \"width\": %d, \"height\": %d", width, height);
    if (file) {
        printf(", \"file\": \"");
        for (const unsigned char *c = (const unsigned char *)file; *c; c++) {
            if (*c == '"' || *c == '\\')
                printf("\\%c", *c);
            else if (*c < 0x20)
                printf("\\u%04x", *c);
            else
                putchar(*c);
        }
        printf("\"");
    }
    printf("}}\n");
}

static void print_text(const vg_plan *plan, int64_t frames, double fps, int width, int height,
                       const char *file)
{
    if (file)
        printf("file:           %s\n", file);
    printf("source:         %lld frames at %g fps (%.3f s), %dx%d\n", (long long)frames, fps,
           (double)frames / fps, width, height);
    printf("sampled frames: %d (%.4g per second)\n", plan->nframes, plan->sample_fps);
    printf("frame indices: ");
    for (int i = 0; i < plan->nframes; i++)
        printf(" %lld", (long long)plan->frame_indices[i]);
    printf("\ntimestamps:    ");
    for (int k = 0; k < plan->n_pairs; k++) {
        char ts[VG_TIME_TOKEN_MAX] = "";
        vg_time_token(plan->pair_times[k], ts, sizeof ts);
        printf(" %s", ts);
    }
    printf("\nresized:        %dx%d -> %dx%d (width x height)\n", width, height,
           plan->resized_width, plan->resized_height);
    printf("grid (t,h,w):   %d x %d x %d patches\n", plan->grid_t, plan->grid_h, plan->grid_w);
    printf("video tokens:   %ld (%ld per pair of frames)\n", plan->video_tokens,
           plan->tokens_per_pair);
    printf("prompt tokens:  about %ld without the question text\n", prompt_tokens_estimate(plan));
}

/* The sampling defaults: the model's (its preprocessing config, as vigild uses it) when
 * --model DIR is given, else Qwen's. Returns 0, or 2 after a message. */
static int model_defaults(int argc, char **argv, vg_sample_params *p, const char **model)
{
    *p = vg_sample_default_params();
    *model = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "--model=", 8))
            *model = a + 8;
        else if (!strcmp(a, "--model") && i + 1 < argc)
            *model = argv[++i];
    }
    if (!*model)
        return 0;
    vg_model_info info;
    char err[512] = "";
    int rc = vg_model_read_info(*model, &info, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "vigil plan: cannot read the model in %s: %s\n", *model,
                err[0] ? err : vg_strerror(rc));
        return 2;
    }
    *p = vg_qa_sample_params(&info);
    return 0;
}

int vg_cmd_plan(int argc, char **argv)
{
    vg_sample_params p;
    long frames = -1, width = -1, height = -1, v;
    double fps = -1, d;
    int json = 0, have_fps_knob = 0;
    const char *file = NULL, *model = NULL;
    if (model_defaults(argc, argv, &p, &model))
        return 2;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (strncmp(a, "--", 2)) {
            if (file) {
                fprintf(stderr, "vigil plan: only one VIDEO may be given ('%s', '%s').\n", file, a);
                return 2;
            }
            file = a;
            continue;
        }
        /* --name value or --name=value */
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name) {
            fprintf(stderr, "vigil plan: unknown option '%s' (see --help).\n", a);
            return 2;
        }
        memcpy(name, a, nl);
        name[nl] = 0;
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            fprintf(stderr, "vigil plan: %s needs a value.\n", name);
            return 2;
        }
        int bad = 0;
        if (!strcmp(name, "--model"))
            continue; /* read first (model_defaults) */
        if (!strcmp(name, "--frames"))
            bad = parse_long(name, val, 0, 1L << 40, &frames);
        else if (!strcmp(name, "--fps"))
            bad = parse_double(name, val, 0, 1e6, &fps);
        else if (!strcmp(name, "--width"))
            bad = parse_long(name, val, 0, 1 << 30, &width);
        else if (!strcmp(name, "--height"))
            bad = parse_long(name, val, 0, 1 << 30, &height);
        else if (!strcmp(name, "--sample-fps")) {
            bad = parse_double(name, val, 1e-9, 1e6, &p.fps);
            have_fps_knob = 1;
        } else if (!strcmp(name, "--nframes")) {
            bad = parse_long(name, val, 1, 1 << 24, &v);
            p.nframes = (int)v;
        } else if (!strcmp(name, "--min-frames")) {
            bad = parse_long(name, val, 0, 1 << 24, &v);
            p.min_frames = (int)v;
        } else if (!strcmp(name, "--max-frames")) {
            bad = parse_long(name, val, 1, 1 << 24, &v);
            p.max_frames = (int)v;
        } else if (!strcmp(name, "--min-pixels")) {
            bad = parse_long(name, val, 0, 1L << 40, &v);
            p.min_pixels = v;
        } else if (!strcmp(name, "--max-pixels")) {
            bad = parse_long(name, val, 1, 1L << 40, &v);
            p.max_pixels = v;
        } else if (!strcmp(name, "--total-pixels")) {
            bad = parse_double(name, val, 1, 1e15, &d);
            p.total_pixels = d;
        } else if (!strcmp(name, "--resized-height")) {
            bad = parse_long(name, val, 1, 1 << 20, &v);
            p.resized_height = (int)v;
        } else if (!strcmp(name, "--resized-width")) {
            bad = parse_long(name, val, 1, 1 << 20, &v);
            p.resized_width = (int)v;
        } else if (!strcmp(name, "--start")) {
            bad = parse_double(name, val, 0, 1e9, &p.video_start);
        } else if (!strcmp(name, "--end")) {
            bad = parse_double(name, val, 0, 1e9, &p.video_end);
        } else {
            fprintf(stderr, "vigil plan: unknown option '%s' (see --help).\n", name);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (have_fps_knob && p.nframes) {
        fprintf(stderr, "vigil plan: give either --sample-fps or --nframes, not both.\n");
        return 2;
    }
    if ((p.resized_height > 0) != (p.resized_width > 0)) {
        fprintf(stderr, "vigil plan: --resized-height and --resized-width go together.\n");
        return 2;
    }

    if (file) {
        if (frames >= 0 || fps >= 0 || width >= 0 || height >= 0) {
            fprintf(stderr, "vigil plan: give either VIDEO or --frames/--fps/--width/--height, "
                            "not both.\n");
            return 2;
        }
        /* The decoder's numbers: frame count (counted for files), average fps, frame size. */
        vg_media_params mp = vg_media_default_params();
        vg_media *m = NULL;
        char merr[512] = "";
        int mrc = vg_media_open(file, &mp, &m, merr, sizeof merr);
        if (mrc) {
            fprintf(stderr, "vigil plan: cannot open %s: %s\n", file,
                    merr[0] ? merr : vg_strerror(mrc));
            return 1;
        }
        const vg_media_info *info = vg_media_get_info(m);
        frames = (long)info->total_frames;
        fps = info->fps;
        width = info->width;
        height = info->height;
        int live = info->is_live;
        vg_media_close(m);
        if (live || frames <= 0) {
            fprintf(stderr,
                    "vigil plan: %s is a live stream or has no frame count; a plan needs a file "
                    "(or give --frames, --fps, --width and --height).\n",
                    file);
            return 1;
        }
    }
    if (!file && (frames < 0 || fps < 0 || width < 0 || height < 0)) {
        fprintf(stderr, "vigil plan: give a VIDEO or all of --frames, --fps, --width and "
                        "--height (see --help).\n");
        return 2;
    }

    char err[512] = "";
    vg_plan *plan = NULL;
    int rc = vg_plan_compute(frames, fps, (int)width, (int)height, &p, &plan, err, sizeof err);
    if (rc) {
        fprintf(stderr, "vigil plan: %s\n", err[0] ? err : vg_strerror(rc));
        return 1;
    }
    if (json)
        print_json(plan, frames, fps, (int)width, (int)height, file);
    else
        print_text(plan, frames, fps, (int)width, (int)height, file);
    vg_plan_free(plan);
    return 0;
}
