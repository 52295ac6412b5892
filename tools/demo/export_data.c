/*
 * export_data.c: vigil-demo-export, the demo model's training-data exporter. It runs vigil's own
 * pipeline on every clip of a ground-truth file written by tools/demo/gen_clips.py, so the
 * training data are exactly what inference sees: FFmpeg decode, Path A frame sampling, timestamps
 * from the decoded presentation times, antialiased bicubic resize, prompt with the "<t.t seconds>"
 * pair strings tokenized by model/'s tokenizer, MRoPE positions and rope delta.
 *
 *   vigil-demo-export --gt CLIPS.json --tokenizer TOKENIZER.json --out DIR
 *                     [--min-pixels N] [--max-pixels N] [--fps F] [--first I] [--count N]
 *                     [--patches]
 *
 * Output: DIR/NNNNN.vgd per clip and DIR/index.json (the sample parameters and the list of clips).
 * A .vgd file is
 *   8 bytes  magic "VGDEMO01"
 *   u32 LE   length J of the JSON header (padded with spaces to a multiple of 8)
 *   u32 LE   0
 *   J bytes  JSON header: source clip (path, index, fps, total_frames, width, height), the plan
 *            (frame_indices, the decoded frame_times, pair_times, pair_strings, resized size,
 * grid), the blob offsets and, per question, its text, token count, rope delta and blob offsets
 *   data     (offsets in the header count from here): frames uint8 [T][H][W][3] (the resized
 *            frames; patchify and normalization are exact functions of them), for each question
 *            ids int32 [n] then pos int32 [3][n]; with --patches also pixel_values_videos float32
 *            [grid_t*grid_h*grid_w][C*tp*p*p] from vg_patchify for parity checks.
 * All integers little-endian (the host order on every machine vigil supports; checked at start).
 *
 * Single-threaded; exit status 0 when every clip was exported, 1 when any failed, 2 on usage.
 */
#include "common.h"
#include "model.h"
#include "pipeline.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct options {
    const char *gt, *tokenizer, *out;
    long min_pixels, max_pixels;
    double fps;
    int first, count, patches;
} options;

static void usage(FILE *f)
{
    fprintf(f, "usage: vigil-demo-export --gt CLIPS.json --tokenizer TOKENIZER.json --out DIR\n"
               "                         [--min-pixels N] [--max-pixels N] [--fps F]\n"
               "                         [--first I] [--count N] [--patches]\n"
               "\n"
               "Runs vigil's pipeline on each clip of CLIPS.json (tools/demo/gen_clips.py) and\n"
               "writes DIR/NNNNN.vgd (resized frames, plan, tokenized prompts with positions per\n"
               "question) plus DIR/index.json for tools/demo/train.py.\n"
               "  --min-pixels N   per-frame pixel floor (default 4096)\n"
               "  --max-pixels N   per-frame pixel cap (default 9216, about 96x96)\n"
               "  --fps F          sampling rate (default 2)\n"
               "  --patches        also store pixel_values_videos (float32) for parity checks\n");
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
            if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
            } else {
                buf[n] = '\0';
                *len = (size_t)n;
            }
        }
    }
    fclose(f);
    return buf;
}

static int tokenize_cb(void *opaque, const char *text, size_t len, int32_t **ids, size_t *n_ids)
{
    return vg_tokenizer_encode(opaque, text, len, 0, ids, n_ids);
}

static int write_all(FILE *f, const void *p, size_t n)
{
    return fwrite(p, 1, n, f) == n ? 0 : VG_EIO;
}

static void put_u32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static cJSON *int_array(const int64_t *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
    return a;
}

static cJSON *double_array(const double *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

typedef struct question {
    const char *text;
    vg_prompt *prompt;
} question;

/* Exports one clip; fills err on failure. */
static int export_clip(const options *o, const vg_tokenizer *tok, const vg_prompt_ids *pids,
                       const char *gt_dir, const cJSON *clip, int index, const char *out_path,
                       char *err, size_t errlen)
{
    const cJSON *jpath = cJSON_GetObjectItemCaseSensitive(clip, "path");
    const cJSON *jqa = cJSON_GetObjectItemCaseSensitive(clip, "qa");
    if (!cJSON_IsString(jpath) || !cJSON_IsArray(jqa))
        return vg_fail(err, errlen, VG_EFORMAT, "clip %d: no \"path\" string or \"qa\" array",
                       index);
    char path[4096];
    int plen = jpath->valuestring[0] == '/'
                   ? snprintf(path, sizeof path, "%s", jpath->valuestring)
                   : snprintf(path, sizeof path, "%s/%s", gt_dir, jpath->valuestring);
    if (plen < 0 || (size_t)plen >= sizeof path)
        return vg_fail(err, errlen, VG_ERANGE, "clip %d: path too long", index);

    vg_media_params mp = vg_media_default_params();
    mp.decode_threads = 1;
    vg_media *media = NULL;
    vg_video *video = NULL;
    int nq = cJSON_GetArraySize(jqa);
    question *qs = calloc((size_t)(nq > 0 ? nq : 1), sizeof *qs);
    float *patches = NULL;
    cJSON *hdr = NULL;
    char *json = NULL;
    FILE *f = NULL;
    int rc = qs ? 0 : VG_ENOMEM;
    if (rc == 0)
        rc = vg_media_open(path, &mp, &media, err, errlen);
    vg_sample_params sp = vg_sample_default_params();
    sp.min_pixels = o->min_pixels;
    sp.max_pixels = o->max_pixels;
    sp.fps = o->fps;
    if (rc == 0)
        rc = vg_media_read_video(media, &sp, NULL, NULL, &video, err, errlen);
    double *pair_times = NULL;
    if (rc == 0 && !(pair_times = malloc((size_t)video->plan->n_pairs * sizeof *pair_times)))
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    if (rc == 0 && vg_timeline_pair_times(&video->timeline, 2, pair_times, video->plan->n_pairs))
        rc = vg_fail(err, errlen, VG_EINVAL, "clip %d: the timeline does not cover its pairs",
                     index);
    for (int q = 0; rc == 0 && q < nq; q++) {
        const cJSON *jq = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(jqa, q), "question");
        if (!cJSON_IsString(jq)) {
            rc = vg_fail(err, errlen, VG_EFORMAT, "clip %d: qa[%d] has no question", index, q);
            break;
        }
        qs[q].text = jq->valuestring;
        vg_chat chat = {.system = NULL, .text_before = NULL, .text_after = jq->valuestring};
        vg_prompt_video pv = {pair_times, video->plan->n_pairs, video->plan->grid_h,
                              video->plan->grid_w, 2};
        rc =
            vg_prompt_build(&chat, &pv, pids, tokenize_cb, (void *)tok, &qs[q].prompt, err, errlen);
    }
    size_t rows = 0, cols = 0;
    if (rc == 0 && o->patches) {
        static const float mean[3] = {0.5f, 0.5f, 0.5f}, stdv[3] = {0.5f, 0.5f, 0.5f};
        rc = vg_patchify(video->rgb, video->T, video->H, video->W, 16, 2, 2, mean, stdv, &patches,
                         &rows, &cols);
    }
    if (rc != 0)
        goto done;

    /* Header and blob layout. */
    const vg_plan *pl = video->plan;
    const vg_media_info *mi = vg_media_get_info(media);
    size_t frames_bytes = (size_t)video->T * (size_t)video->H * (size_t)video->W * 3;
    size_t off = frames_bytes;
    hdr = cJSON_CreateObject();
    cJSON *jqs = cJSON_CreateArray();
    cJSON *jstr = cJSON_CreateArray();
    if (!hdr || !jqs || !jstr) {
        cJSON_Delete(jqs);
        cJSON_Delete(jstr);
        rc = VG_ENOMEM;
        goto done;
    }
    cJSON_AddStringToObject(hdr, "format", "VGDEMO01");
    cJSON_AddStringToObject(hdr, "clip", jpath->valuestring);
    cJSON_AddNumberToObject(hdr, "index", index);
    cJSON_AddNumberToObject(hdr, "fps", mi->fps);
    cJSON_AddNumberToObject(hdr, "total_frames", (double)mi->total_frames);
    cJSON_AddNumberToObject(hdr, "duration", mi->duration);
    cJSON_AddNumberToObject(hdr, "width", mi->width);
    cJSON_AddNumberToObject(hdr, "height", mi->height);
    cJSON_AddNumberToObject(hdr, "T", video->T);
    cJSON_AddNumberToObject(hdr, "H", video->H);
    cJSON_AddNumberToObject(hdr, "W", video->W);
    int64_t grid[3] = {pl->grid_t, pl->grid_h, pl->grid_w};
    cJSON_AddItemToObject(hdr, "grid", int_array(grid, 3));
    cJSON_AddItemToObject(hdr, "frame_indices", int_array(pl->frame_indices, pl->nframes));
    cJSON_AddItemToObject(hdr, "frame_times",
                          double_array(video->timeline.seconds, video->timeline.n));
    cJSON_AddItemToObject(hdr, "pair_times", double_array(pair_times, pl->n_pairs));
    for (int i = 0; i < pl->n_pairs; i++) {
        char ts[VG_TIME_TOKEN_MAX];
        vg_time_token(pair_times[i], ts, sizeof ts);
        cJSON_AddItemToArray(jstr, cJSON_CreateString(ts));
    }
    cJSON_AddItemToObject(hdr, "pair_strings", jstr);
    cJSON_AddNumberToObject(hdr, "frames_offset", 0);
    cJSON_AddNumberToObject(hdr, "frames_bytes", (double)frames_bytes);
    for (int q = 0; q < nq; q++) {
        const vg_prompt *p = qs[q].prompt;
        cJSON *jq = cJSON_CreateObject();
        if (!jq) {
            cJSON_Delete(jqs);
            rc = VG_ENOMEM;
            goto done;
        }
        cJSON_AddStringToObject(jq, "question", qs[q].text);
        cJSON_AddNumberToObject(jq, "n", (double)p->n);
        cJSON_AddNumberToObject(jq, "rope_delta", p->rope_delta);
        cJSON_AddNumberToObject(jq, "n_video_tokens", (double)p->n_video_tokens);
        cJSON_AddNumberToObject(jq, "ids_offset", (double)off);
        off += p->n * sizeof(int32_t);
        cJSON_AddNumberToObject(jq, "pos_offset", (double)off);
        off += 3 * p->n * sizeof(int32_t);
        cJSON_AddItemToArray(jqs, jq);
    }
    cJSON_AddItemToObject(hdr, "questions", jqs);
    if (patches) {
        cJSON_AddNumberToObject(hdr, "patches_offset", (double)off);
        cJSON_AddNumberToObject(hdr, "patches_rows", (double)rows);
        cJSON_AddNumberToObject(hdr, "patches_cols", (double)cols);
    }
    json = cJSON_PrintUnformatted(hdr);
    if (!json) {
        rc = VG_ENOMEM;
        goto done;
    }
    size_t jlen = strlen(json), padded = (jlen + 7) / 8 * 8;
    unsigned char fixed[16];
    memcpy(fixed, "VGDEMO01", 8);
    put_u32(fixed + 8, (uint32_t)padded);
    put_u32(fixed + 12, 0);
    f = fopen(out_path, "wb");
    if (!f) {
        rc = vg_fail(err, errlen, VG_EIO, "%s: %s", out_path, strerror(errno));
        goto done;
    }
    static const char spaces[8] = "        ";
    rc = write_all(f, fixed, sizeof fixed);
    if (rc == 0)
        rc = write_all(f, json, jlen);
    if (rc == 0)
        rc = write_all(f, spaces, padded - jlen);
    if (rc == 0)
        rc = write_all(f, video->rgb, frames_bytes);
    for (int q = 0; rc == 0 && q < nq; q++) {
        rc = write_all(f, qs[q].prompt->ids, qs[q].prompt->n * sizeof(int32_t));
        if (rc == 0)
            rc = write_all(f, qs[q].prompt->pos, 3 * qs[q].prompt->n * sizeof(int32_t));
    }
    if (rc == 0 && patches)
        rc = write_all(f, patches, rows * cols * sizeof(float));
    if (fclose(f) != 0 && rc == 0)
        rc = VG_EIO;
    f = NULL;
    if (rc != 0)
        vg_fail(err, errlen, rc, "%s: write failed", out_path);

done:
    if (f)
        fclose(f);
    free(json);
    cJSON_Delete(hdr);
    free(patches);
    free(pair_times);
    for (int q = 0; qs && q < nq; q++)
        vg_prompt_free(qs[q].prompt);
    free(qs);
    vg_video_free(video);
    vg_media_close(media);
    return rc;
}

static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){.min_pixels = 4096, .max_pixels = 9216, .fps = 2.0, .count = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--patches")) {
            o->patches = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!v)
            return -1;
        i++;
        char *end = NULL;
        if (!strcmp(a, "--gt"))
            o->gt = v;
        else if (!strcmp(a, "--tokenizer"))
            o->tokenizer = v;
        else if (!strcmp(a, "--out"))
            o->out = v;
        else if (!strcmp(a, "--min-pixels"))
            o->min_pixels = strtol(v, &end, 10);
        else if (!strcmp(a, "--max-pixels"))
            o->max_pixels = strtol(v, &end, 10);
        else if (!strcmp(a, "--fps"))
            o->fps = strtod(v, &end);
        else if (!strcmp(a, "--first"))
            o->first = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--count"))
            o->count = (int)strtol(v, &end, 10);
        else
            return -1;
        if (end && *end)
            return -1;
    }
    if (!o->gt || !o->tokenizer || !o->out || o->min_pixels <= 0 || o->max_pixels < o->min_pixels ||
        o->fps <= 0 || o->first < 0)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    const uint16_t probe = 1;
    if (*(const unsigned char *)&probe != 1) {
        fprintf(stderr, "vigil-demo-export: the .vgd format is little-endian only\n");
        return 1;
    }
    vg_log_set_level(VG_LOG_WARNING);
    vg_pipe_log_init();
    char err[512] = "";
    vg_tokenizer *tok = NULL;
    int rc = vg_tokenizer_load(o.tokenizer, &tok, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "vigil-demo-export: %s\n", err);
        return 1;
    }
    vg_prompt_ids pids = {
        .im_start = vg_tokenizer_token_id(tok, "<|im_start|>"),
        .im_end = vg_tokenizer_token_id(tok, "<|im_end|>"),
        .vision_start = vg_tokenizer_token_id(tok, "<|vision_start|>"),
        .vision_end = vg_tokenizer_token_id(tok, "<|vision_end|>"),
        .video_pad = vg_tokenizer_token_id(tok, "<|video_pad|>"),
    };
    if (pids.im_start < 0 || pids.im_end < 0 || pids.vision_start < 0 || pids.vision_end < 0 ||
        pids.video_pad < 0) {
        fprintf(stderr, "vigil-demo-export: %s lacks a Qwen special token\n", o.tokenizer);
        vg_tokenizer_free(tok);
        return 1;
    }
    size_t len = 0;
    char *text = read_file(o.gt, &len);
    cJSON *gt = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    const cJSON *clips = cJSON_GetObjectItemCaseSensitive(gt, "clips");
    if (!cJSON_IsArray(clips)) {
        fprintf(stderr, "vigil-demo-export: %s: not a gen_clips.py ground-truth file\n", o.gt);
        cJSON_Delete(gt);
        vg_tokenizer_free(tok);
        return 1;
    }
    char gt_dir[4096];
    int glen = snprintf(gt_dir, sizeof gt_dir, "%s", o.gt);
    if (glen < 0 || (size_t)glen >= sizeof gt_dir) {
        fprintf(stderr, "vigil-demo-export: %s: path too long\n", o.gt);
        cJSON_Delete(gt);
        vg_tokenizer_free(tok);
        return 1;
    }
    char *slash = strrchr(gt_dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(gt_dir, sizeof gt_dir, ".");
    if (mkdir(o.out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "vigil-demo-export: %s: %s\n", o.out, strerror(errno));
        cJSON_Delete(gt);
        vg_tokenizer_free(tok);
        return 1;
    }

    int n = cJSON_GetArraySize(clips);
    int last = o.count < 0 ? n : (o.first + o.count < n ? o.first + o.count : n);
    cJSON *index = cJSON_CreateObject();
    cJSON *files = cJSON_CreateArray();
    cJSON_AddStringToObject(index, "format", "VGDEMO01");
    char gt_abs[8200], cwd[4096];
    if (o.gt[0] != '/' && getcwd(cwd, sizeof cwd))
        snprintf(gt_abs, sizeof gt_abs, "%s/%s", cwd, o.gt);
    else
        snprintf(gt_abs, sizeof gt_abs, "%s", o.gt);
    cJSON_AddStringToObject(index, "gt", gt_abs);
    cJSON_AddNumberToObject(index, "min_pixels", (double)o.min_pixels);
    cJSON_AddNumberToObject(index, "max_pixels", (double)o.max_pixels);
    cJSON_AddNumberToObject(index, "fps", o.fps);
    cJSON_AddItemToObject(index, "files", files);
    int failures = 0;
    for (int i = o.first; i < last; i++) {
        const cJSON *clip = cJSON_GetArrayItem(clips, i);
        const cJSON *jidx = cJSON_GetObjectItemCaseSensitive(clip, "index");
        int idx = cJSON_IsNumber(jidx) ? jidx->valueint : i;
        char name[64], out_path[4200];
        snprintf(name, sizeof name, "%05d.vgd", idx);
        int olen = snprintf(out_path, sizeof out_path, "%s/%s", o.out, name);
        if (olen < 0 || (size_t)olen >= sizeof out_path) {
            fprintf(stderr, "vigil-demo-export: output path too long\n");
            failures++;
            break;
        }
        err[0] = '\0';
        rc = export_clip(&o, tok, &pids, gt_dir, clip, idx, out_path, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "vigil-demo-export: clip %d: %s (%s)\n", idx, err, vg_strerror(rc));
            failures++;
            continue;
        }
        cJSON_AddItemToArray(files, cJSON_CreateString(name));
    }
    char *js = cJSON_Print(index);
    char index_path[4200];
    int ilen = snprintf(index_path, sizeof index_path, "%s/index.json", o.out);
    FILE *f = js && ilen > 0 && (size_t)ilen < sizeof index_path ? fopen(index_path, "w") : NULL;
    if (!f || fputs(js, f) < 0 || fputc('\n', f) == EOF) {
        fprintf(stderr, "vigil-demo-export: cannot write %s\n", index_path);
        failures++;
    }
    if (f && fclose(f) != 0)
        failures++;
    free(js);
    cJSON_Delete(index);
    cJSON_Delete(gt);
    vg_tokenizer_free(tok);
    fprintf(stderr, "vigil-demo-export: %d clip(s) exported, %d failed\n",
            last - o.first - failures, failures);
    return failures ? 1 : 0;
}
