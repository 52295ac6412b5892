/*
 * test_media_e2e.c: decode -> sample -> resize -> patchify through vg_media_read_video, compared
 * with the reference path on the same files: every frame decoded by the ffmpeg CLI to raw RGB24
 * (-vsync passthrough, so no frame is dropped or duplicated), the plan's indices picked from
 * those, then vg_resize_rgb + vg_patchify. Frames must match exactly (the max difference is
 * printed); the frame count must equal the number of frames the CLI decodes; timestamps must be
 * exactly index / fps for constant-frame-rate files (also when the stream does not start at 0) and
 * the PTS ffprobe reports (relative to the stream start) for a variable-frame-rate file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common.h"
#include "pipeline.h"

#include "media_testutil.h"

#include <math.h>

typedef struct e2e_case {
    const char *name;    /* file name in the temporary directory */
    const char *ffmpeg;  /* arguments that make it */
    int vfr;             /* expect presentation times instead of index / fps */
    int resized;         /* > 0: resized_height = resized_width = this */
    double start;        /* expected stream start (seconds), < 0 = don't check */
    int64_t frames;      /* expected frame count */
    double vstart, vend; /* video_start / video_end, 0 = unset */
    const char *path;    /* the decoding path expected: "fast", "sequential" or "all frames" */
} e2e_case;

#define SRC   "-f lavfi -i testsrc2=size=320x240:rate=30:duration=4 "
#define SRC10 "-f lavfi -i testsrc2=size=320x240:rate=30:duration=10 "

static const e2e_case cases[] = {
    {"cfr.mp4", SRC "-c:v libx264 -pix_fmt yuv420p cfr.mp4", 0, 0, 0.0, 120, 0, 0, "fast"},
    {"cfr.mkv", SRC "-c:v mpeg4 -q:v 3 cfr.mkv", 0, 0, 0.0, 120, 0, 0, "fast"},
    {"clip.mkv", SRC "-c:v mpeg4 -q:v 3 clip.mkv", 0, 0, 0.0, 120, 1.0, 3.0, "fast"},
    {"cfr448.mkv", SRC "-c:v mpeg4 -q:v 3 cfr448.mkv", 0, 448, 0.0, 120, 0, 0, "fast"},
    {"offset.mp4", SRC "-c:v libx264 -pix_fmt yuv420p -output_ts_offset 5 offset.mp4", 0, 0, 5.0,
     120, 0, 0, "fast"},
    {"cfr.ts", SRC "-c:v libx264 -pix_fmt yuv420p -f mpegts cfr.ts", 0, 0, -1, 120, 0, 0, "fast"},
    {"cfr.webm", SRC "-c:v libvpx -b:v 1M -deadline realtime -cpu-used 8 cfr.webm", 0, 0, 0.0, 120,
     0, 0, "all frames"},
    {"cfr.avi", SRC "-c:v mpeg4 -q:v 3 -bf 2 cfr.avi", 0, 0, 0.0, 120, 0, 0, "all frames"},
    {"cfr.mov",
     "-f lavfi -i testsrc2=size=352x288:rate=25:duration=3 -c:v libx264 -pix_fmt "
     "yuv420p -color_range pc -colorspace bt709 cfr.mov",
     0, 0, 0.0, 75, 0, 0, "fast"},
    {"odd444.mkv",
     "-f lavfi -i testsrc2=size=320x240:rate=24:duration=2 -vf scale=321:241 -c:v libx264 -pix_fmt "
     "yuv444p odd444.mkv",
     0, 0, 0.0, 48, 0, 0, "fast"},
    /* B-frames that are not references, most of them unsampled (20 of 300 frames sampled). */
    {"bframes.mkv", SRC10 "-c:v mpeg4 -q:v 3 -bf 2 bframes.mkv", 0, 0, 0.0, 300, 0, 0, "fast"},
    {"bframes.mp4", SRC10 "-c:v libx264 -bf 3 -b_strategy 0 -pix_fmt yuv420p bframes.mp4", 0, 0,
     0.0, 300, 0, 0, "fast"},
    {"mpeg2.ts", SRC10 "-c:v mpeg2video -q:v 3 -bf 2 -f mpegts mpeg2.ts", 0, 0, -1, 300, 0, 0,
     "fast"},
    /* Frame 200 of 300 dropped, timestamps kept: the fast path must notice the gap (late in the
     * file) and decode sequentially; indices then count decoded frames, times are the PTS. */
    {"gap.mkv",
     SRC10 "-vf select='not(eq(n\\,200))' -vsync passthrough -c:v mpeg4 -q:v 3 -bf 2 gap.mkv", 1, 0,
     0.0, 299, 0, 0, "sequential"},
    {"cfr.m3u8", SRC "-c:v libx264 -pix_fmt yuv420p -f hls -hls_time 1 -hls_list_size 0 cfr.m3u8",
     0, 0, -1, 120, 0, 0, "fast"},
    /* Frames 0,1,2,3 at 0..3/30 s, then a gap of one frame period after every fourth frame. */
    {"vfr.mp4",
     SRC "-vf setpts='(N+floor(N/4))/30/TB' -vsync vfr -c:v libx264 -pix_fmt yuv420p "
         "vfr.mp4",
     1, 0, 0.0, 120, 0, 0, "sequential"},
};

static int have_media;

/* Which decoding path vg_media_read_video took, from its debug log. */
static char last_path[32];
static long long fast_decoded, fast_total;
static void sink(int level, const char *module, const char *msg, void *opaque)
{
    (void)level;
    (void)opaque;
    if (strcmp(module, "media") != 0)
        return;
    const char *f = strstr(msg, "fast path: ");
    if (f && sscanf(f, "fast path: %lld of %lld", &fast_decoded, &fast_total) == 2)
        snprintf(last_path, sizeof last_path, "fast");
    else if (strstr(msg, "sequential path"))
        snprintf(last_path, sizeof last_path, "sequential");
}

static int setup(void **state)
{
    (void)state;
    if (!mt_have_ffmpeg() || mt_make_dir("media-e2e") != 0)
        return 0;
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++)
        if (mt_ffmpeg(cases[i].ffmpeg) != 0)
            return -1; /* ffmpeg is there but could not make the media: a failure, not a skip */
    have_media = 1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    mt_remove_dir();
    return 0;
}

/* Presentation times (best_effort_timestamp_time) of every video frame as ffprobe reports them,
 * and the stream's start_time. */
static double *probe_times(const char *path, size_t *n, double *start)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "ffprobe -v error -select_streams v:0 -show_entries stream=start_time -of csv=p=0 "
             "'%s'",
             path);
    FILE *f = popen(cmd, "r");
    if (!f)
        return NULL;
    if (fscanf(f, "%lf", start) != 1)
        *start = 0;
    pclose(f);
    snprintf(cmd, sizeof cmd,
             "ffprobe -v error -select_streams v:0 -show_entries frame=best_effort_timestamp_time "
             "-of csv=p=0 '%s'",
             path);
    f = popen(cmd, "r");
    if (!f)
        return NULL;
    size_t cap = 1024, k = 0;
    double *t = malloc(cap * sizeof *t);
    char line[256];
    while (t && k < cap && fgets(line, sizeof line, f)) {
        char *end = NULL;
        double x = strtod(line, &end);
        if (end != line) /* side data adds empty lines and trailing commas */
            t[k++] = x;
    }
    pclose(f);
    *n = k;
    return t;
}

static void run_case(const e2e_case *c)
{
    char path[400], ref_path[400];
    mt_path(path, sizeof path, c->name);
    char rawname[128];
    snprintf(rawname, sizeof rawname, "%s.rgb", c->name);
    mt_path(ref_path, sizeof ref_path, rawname);
    char args[1024];
    snprintf(args, sizeof args, "-i %s -map 0:v:0 -vsync passthrough -f rawvideo -pix_fmt rgb24 %s",
             c->name, rawname);
    assert_int_equal(mt_ffmpeg(args), 0);

    vg_media *m = NULL;
    char err[512] = "";
    int r = vg_media_open(path, NULL, &m, err, sizeof err);
    if (r)
        printf("%s: %s\n", c->name, err);
    assert_int_equal(r, 0);
    const vg_media_info *in = vg_media_get_info(m);
    vg_sample_params sp = vg_sample_default_params();
    if (c->resized > 0)
        sp.resized_height = sp.resized_width = c->resized;
    if (c->vend > 0) {
        sp.video_start = c->vstart;
        sp.video_end = c->vend;
    }
    vg_video *v = NULL;
    snprintf(last_path, sizeof last_path, "all frames");
    int level = vg_log_get_level();
    vg_log_set_level(VG_LOG_DEBUG);
    vg_log_set_sink(sink, NULL);
    double t0 = vg_now_ms();
    r = vg_media_read_video(m, &sp, NULL, NULL, &v, err, sizeof err);
    double ms = vg_now_ms() - t0;
    vg_log_set_sink(NULL, NULL);
    vg_log_set_level(level);
    if (r)
        printf("%s: %s\n", c->name, err);
    assert_int_equal(r, 0);

    size_t ref_len = 0;
    unsigned char *ref = mt_read(ref_path, &ref_len);
    assert_non_null(ref);
    size_t full = (size_t)in->width * in->height * 3;
    int64_t nref = (int64_t)(ref_len / full);
    printf("%-11s %s/%s %dx%d %.3f fps, %lld frames (CLI decodes %lld), start %.3f, %d sampled "
           "at %dx%d in %.1f ms (%s)\n",
           c->name, in->format, in->codec, in->width, in->height, in->fps,
           (long long)in->total_frames, (long long)nref, in->start_time, v->T, v->W, v->H, ms,
           last_path);
    assert_string_equal(last_path, c->path);
    if (!strcmp(c->path, "fast")) {
        printf("            fast path: %lld of %lld frames decoded\n", fast_decoded, fast_total);
        if (!strncmp(c->name, "bframes", 7) || !strcmp(c->name, "mpeg2.ts"))
            assert_true(fast_decoded < fast_total * 3 / 4); /* B-frames were skipped */
    }
    assert_int_equal(ref_len % full, 0);
    assert_int_equal(in->total_frames, c->frames);
    assert_int_equal(nref, in->total_frames);
    if (c->start >= 0)
        assert_true(fabs(in->start_time - c->start) < 1e-3);

    /* Frames: the reference path is resize(CLI frame[idx]). */
    size_t fsz = (size_t)v->W * v->H * 3;
    uint8_t *exp = malloc(fsz * (size_t)v->T);
    assert_non_null(exp);
    int maxdiff = 0;
    size_t ndiff = 0;
    for (int k = 0; k < v->T; k++) {
        int64_t idx = v->plan->frame_indices[k];
        assert_true(idx >= 0 && idx < nref);
        assert_int_equal(vg_resize_rgb(ref + (size_t)idx * full, in->width, in->height,
                                       (size_t)in->width * 3, exp + (size_t)k * fsz, v->W, v->H),
                         0);
        for (size_t i = 0; i < fsz; i++) {
            int d = abs((int)exp[(size_t)k * fsz + i] - (int)v->rgb[(size_t)k * fsz + i]);
            if (d) {
                ndiff++;
                if (d > maxdiff)
                    maxdiff = d;
            }
        }
    }
    /* Patchified, as the model gets them. */
    const float mean[3] = {0.5f, 0.5f, 0.5f}, stdv[3] = {0.5f, 0.5f, 0.5f};
    float *pa = NULL, *pb = NULL;
    size_t ra, ca, rb, cb;
    assert_int_equal(vg_patchify(v->rgb, v->T, v->H, v->W, 16, 2, 2, mean, stdv, &pa, &ra, &ca), 0);
    assert_int_equal(vg_patchify(exp, v->T, v->H, v->W, 16, 2, 2, mean, stdv, &pb, &rb, &cb), 0);
    assert_int_equal(ra, rb);
    assert_int_equal(ca, cb);
    assert_int_equal(ra, (size_t)v->plan->grid_t * v->plan->grid_h * v->plan->grid_w);
    double pmax = 0;
    for (size_t i = 0; i < ra * ca; i++)
        pmax = fmax(pmax, fabs((double)pa[i] - (double)pb[i]));
    printf("            pixels: max diff %d (%zu values differ); patches [%zu x %zu] max diff %g\n",
           maxdiff, ndiff, ra, ca, pmax);
    assert_int_equal(maxdiff, 0);
    assert_true(pmax == 0.0);

    if (c->vend > 0) { /* absolute indices inside the clipped range */
        for (int k = 0; k < v->T; k++) {
            assert_true(v->plan->frame_indices[k] >= (int64_t)ceil(c->vstart * in->fps));
            assert_true(v->plan->frame_indices[k] <= (int64_t)floor(c->vend * in->fps));
        }
    }
    /* Timestamps: the timeline, for the plan's indices; the plan keeps its planned times. */
    assert_int_equal(v->timeline.n, v->T);
    assert_memory_equal(v->timeline.index, v->plan->frame_indices, (size_t)v->T * sizeof(int64_t));
    assert_int_equal(v->timeline.constant_rate, !c->vfr);
    for (int k = 0; k < v->T; k++)
        assert_true(v->plan->frame_times[k] == (double)v->plan->frame_indices[k] / in->fps);
    if (!c->vfr) {
        for (int k = 0; k < v->T; k++)
            assert_true(v->timeline.seconds[k] == (double)v->plan->frame_indices[k] / in->fps);
    } else {
        size_t nt = 0;
        double start = 0;
        double *pt = probe_times(path, &nt, &start);
        assert_non_null(pt);
        assert_int_equal((int64_t)nt, nref);
        double off_grid = 0;
        for (int k = 0; k < v->T; k++) {
            int64_t idx = v->plan->frame_indices[k];
            double want = pt[idx] - start;
            printf("            frame %lld: %.6f s (ffprobe %.6f, index/fps %.6f)\n",
                   (long long)idx, v->timeline.seconds[k], want, (double)idx / in->fps);
            assert_true(fabs(v->timeline.seconds[k] - want) < 1e-6);
            off_grid = fmax(off_grid, fabs(want - (double)idx / in->fps));
        }
        assert_true(off_grid > 0.01); /* the case really is VFR */
        free(pt);
    }
    for (int k = 0; k < v->plan->n_pairs; k++) {
        int a = 2 * k, b = VG_MIN(2 * k + 1, v->T - 1);
        double pt = (v->timeline.seconds[a] + v->timeline.seconds[b]) / 2.0;
        char want[40], got[VG_TIME_TOKEN_MAX];
        snprintf(want, sizeof want, "<%.1f seconds>", pt);
        double pair = vg_pair_time(v->timeline.seconds[a], v->timeline.seconds[b]);
        assert_true(pair == pt);
        assert_true(vg_time_token(pair, got, sizeof got) > 0);
        assert_string_equal(got, want);
        printf("%s %s", k ? "" : "            pairs:", got);
    }
    printf("\n");
    free(pa);
    free(pb);
    free(exp);
    free(ref);
    vg_video_free(v);
    vg_media_close(m);
}

static void test_e2e(void **state)
{
    (void)state;
    if (!have_media)
        skip();
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++)
        run_case(&cases[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_e2e)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
