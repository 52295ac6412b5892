/*
 * test_media_limits.c: issue #13 items 8 and 11 at the pipeline (docs/security.md).
 *  - item 8: inputs read sequentially as clips. A raw H.264 file (no duration in any header) and
 *    HTTP sources without byte ranges (a loopback server started here that ignores Range: an mp4
 *    with its index first, an MPEG-TS without Content-Length) give the same frames, indices and
 *    times as the seekable local mp4 they were remuxed from. An mp4 with its index at the end over
 *    that server, a redirect loop and a 1-frame clip are VG_EMEDIA with a sentence.
 *  - item 11: a 4-frame 8192x8192 clip (about 200 KB) is refused from its header with VG_EMEDIA
 *    when params.max_frame_pixels is below its size, and decoded within the frame budget at the
 *    absolute cap; both in a child process whose peak RSS growth (VmHWM) is measured.
 */
#define _GNU_SOURCE
#include "common.h"
#include "pipeline.h"
#include "media_testutil.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>

#include <cmocka.h>

static int have_media;
static char p_ref[300], p_raw[300], p_ts[300], p_tail[300], p_one[300], p_big[300];

static int setup(void **state)
{
    (void)state;
    if (!mt_have_ffmpeg() || mt_make_dir("limits") != 0)
        return 0; /* tests skip */
    int bad = 0;
    bad |= mt_ffmpeg("-f lavfi -i testsrc2=size=96x64:rate=10 -t 3 -c:v libx264 -pix_fmt yuv420p "
                     "-movflags +faststart ref.mp4");
    bad |= mt_ffmpeg("-i ref.mp4 -c copy -bsf:v h264_mp4toannexb -f h264 raw.h264");
    bad |= mt_ffmpeg("-i ref.mp4 -c copy -f mpegts ref.ts");
    bad |= mt_ffmpeg("-i ref.mp4 -c copy tail.mp4"); /* index after the data */
    bad |= mt_ffmpeg("-f lavfi -i testsrc2=size=96x64:rate=10 -frames:v 1 -c:v libx264 one.mp4");
    bad |= mt_ffmpeg("-f lavfi -i color=c=gray:s=8192x8192:r=2 -frames:v 4 -c:v libx264 "
                     "-preset ultrafast big.mp4");
    mt_path(p_ref, sizeof p_ref, "ref.mp4");
    mt_path(p_raw, sizeof p_raw, "raw.h264");
    mt_path(p_ts, sizeof p_ts, "ref.ts");
    mt_path(p_tail, sizeof p_tail, "tail.mp4");
    mt_path(p_one, sizeof p_one, "one.mp4");
    mt_path(p_big, sizeof p_big, "big.mp4");
    have_media = !bad;
    return bad ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    mt_remove_dir();
    return 0;
}

#define NEED_MEDIA()                                                                               \
    do {                                                                                           \
        if (!have_media)                                                                           \
            skip();                                                                                \
    } while (0)

static vg_sample_params small_params(void)
{
    vg_sample_params sp = vg_sample_default_params();
    sp.nframes = 4;
    sp.min_pixels = 1024;
    sp.max_pixels = 64 * 64;
    sp.total_pixels = 4 * 64 * 64;
    return sp;
}

/* Opens and reads url as a clip; returns the code, *out on success. */
static int read_clip(const char *url, vg_video **out, char *err, size_t errlen)
{
    vg_media_params p = vg_media_default_params();
    p.open_timeout_ms = 5000;
    p.read_timeout_ms = 5000;
    vg_media *m = NULL;
    int r = vg_media_open(url, &p, &m, err, errlen);
    if (r == 0) {
        vg_sample_params sp = small_params();
        r = vg_media_read_video(m, &sp, NULL, NULL, out, err, errlen);
        vg_media_close(m);
    }
    printf("  %s -> %d (%s)%s%s\n", url, r, vg_strerror(r), r ? ": " : "", r ? err : "");
    return r;
}

/* The same frames, indices, times and pixels as the reference. */
static void assert_same_video(const vg_video *a, const vg_video *b)
{
    assert_int_equal(a->T, b->T);
    assert_int_equal(a->H, b->H);
    assert_int_equal(a->W, b->W);
    for (int i = 0; i < a->T; i++) {
        assert_int_equal(a->timeline.index[i], b->timeline.index[i]);
        assert_true(a->timeline.seconds[i] == b->timeline.seconds[i]);
    }
    assert_int_equal(a->timeline.constant_rate, b->timeline.constant_rate);
    assert_memory_equal(a->rgb, b->rgb, (size_t)a->T * a->H * a->W * 3);
}

/* Item 8: a local file without a known duration is a clip like any file. */
static void test_raw_h264(void **state)
{
    (void)state;
    NEED_MEDIA();
    char err[512] = "";
    vg_media *m = NULL;
    assert_int_equal(vg_media_open(p_raw, NULL, &m, err, sizeof err), 0);
    const vg_media_info *in = vg_media_get_info(m);
    printf("  raw H.264: live %d, %lld frames at %.3f fps, %.3f s\n", in->is_live,
           (long long)in->total_frames, in->fps, in->duration);
    assert_false(in->is_live);
    assert_int_equal(in->total_frames, 30);
    vg_media_close(m);
    vg_video *ref = NULL, *raw = NULL;
    assert_int_equal(read_clip(p_ref, &ref, err, sizeof err), 0);
    assert_int_equal(read_clip(p_raw, &raw, err, sizeof err), 0);
    assert_same_video(ref, raw);
    vg_video_free(ref);
    vg_video_free(raw);
}

/* Item 8: HTTP without byte ranges, with and without a length, read sequentially as clips. */
static void test_http_no_ranges(void **state)
{
    (void)state;
    NEED_MEDIA();
    mt_http s;
    if (mt_http_start(&s) != 0)
        skip();
    char err[512] = "", url[300];
    vg_video *ref = NULL;
    assert_int_equal(read_clip(p_ref, &ref, err, sizeof err), 0);
    const char *same[] = {"len/ref.mp4", "nolen/ref.mp4", "nolen/ref.ts", "len/ref.ts",
                          "nolen/raw.h264"};
    for (size_t i = 0; i < VG_ARRAY_LEN(same); i++) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d/%s", s.port, same[i]);
        vg_video *v = NULL;
        int before = atomic_load(&s.requests);
        assert_int_equal(read_clip(url, &v, err, sizeof err), 0);
        printf("    %d requests\n", atomic_load(&s.requests) - before);
        assert_same_video(ref, v);
        vg_video_free(v);
    }
    /* An index after the data: libavformat must seek back to the data, which works within its
     * buffer for a file this small; either the same answer or a media error. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/nolen/tail.mp4", s.port);
    vg_video *v = NULL;
    int r = read_clip(url, &v, err, sizeof err);
    if (r == 0)
        assert_same_video(ref, v);
    else
        assert_int_equal(r, VG_EMEDIA);
    vg_video_free(v);
    vg_video_free(ref);
    /* A redirect loop and a missing file: errors with a sentence (vigild's open stage reports
     * them with code `media`). */
    const char *bad[] = {"loop", "len/missing.mp4"};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad); i++) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d/%s", s.port, bad[i]);
        v = NULL;
        r = read_clip(url, &v, err, sizeof err);
        assert_true(r < 0);
        assert_null(v);
        assert_true(strlen(err) > 20);
    }
    mt_http_stop(&s);
}

/* Item 8: a clip too short to sample is a media error with a sentence. */
static void test_too_few_frames(void **state)
{
    (void)state;
    NEED_MEDIA();
    char err[512] = "";
    vg_video *v = NULL;
    assert_int_equal(read_clip(p_one, &v, err, sizeof err), VG_EMEDIA);
    assert_non_null(strstr(err, "too few frames"));
    /* A start past the end. */
    vg_media *m = NULL;
    assert_int_equal(vg_media_open(p_ref, NULL, &m, err, sizeof err), 0);
    vg_sample_params sp = small_params();
    sp.video_start = 100.0;
    int r = vg_media_read_video(m, &sp, NULL, NULL, &v, err, sizeof err);
    printf("  start past the end -> %d: %s\n", r, err);
    assert_int_equal(r, VG_EMEDIA);
    vg_media_close(m);
}

/* Peak RSS (VmHWM) of this process in KiB. */
static long vm_hwm_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* Runs open (+ read when the open succeeds) of the 8192x8192 clip with max_frame_pixels in a
 * child; returns the child's result and its VmHWM growth in MiB through *grow_mib. */
static int big_clip_in_child(long max_frame_pixels, double *grow_mib, char *err, size_t errlen)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]);
        long before = vm_hwm_kib();
        vg_media_params p = vg_media_default_params();
        p.max_frame_pixels = max_frame_pixels;
        vg_media *m = NULL;
        char e[512] = "";
        int r = vg_media_open(p_big, &p, &m, e, sizeof e);
        if (r == 0) {
            vg_sample_params sp = small_params();
            sp.nframes = 2;
            vg_video *v = NULL;
            r = vg_media_read_video(m, &sp, NULL, NULL, &v, e, sizeof e);
            vg_video_free(v);
            vg_media_close(m);
        }
        struct {
            int r;
            long grow_kib;
            char e[512];
        } res;
        memset(&res, 0, sizeof res);
        res.r = r;
        res.grow_kib = vm_hwm_kib() - before;
        snprintf(res.e, sizeof res.e, "%s", e);
        ssize_t w = write(pipefd[1], &res, sizeof res);
        _exit(w == (ssize_t)sizeof res ? 0 : 1);
    }
    close(pipefd[1]);
    struct {
        int r;
        long grow_kib;
        char e[512];
    } res;
    ssize_t n = read(pipefd[0], &res, sizeof res);
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    assert_int_equal(n, (ssize_t)sizeof res);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    *grow_mib = (double)res.grow_kib / 1024.0;
    snprintf(err, errlen, "%s", res.e);
    return res.r;
}

/* Item 11: the decoder's memory is bounded by the pixel limits before decoding. */
static void test_big_frames(void **state)
{
    (void)state;
    NEED_MEDIA();
    char err[512];
    double grow = 0;
    /* vigild's default max_pixels_limit (4096 x 4096): refused from the header. */
    int r = big_clip_in_child(16777216L, &grow, err, sizeof err);
    printf("  8192x8192 clip, limit 4096x4096: %d (%s), peak RSS +%.1f MiB: %s\n", r,
           vg_strerror(r), grow, err);
    assert_int_equal(r, VG_EMEDIA);
    assert_non_null(strstr(err, "8192x8192"));
    assert_true(grow < 32.0);
    /* At the absolute cap it decodes, with one decoder thread and one converter for frames this
     * large (VG_MEDIA_FRAME_BUDGET, 512 MiB), instead of one per CPU. */
    r = big_clip_in_child(0, &grow, err, sizeof err);
    printf("  8192x8192 clip, absolute cap: %d (%s), peak RSS +%.1f MiB %s\n", r, vg_strerror(r),
           grow, err);
    assert_int_equal(r, 0);
    assert_true(grow < 1024.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_h264),
        cmocka_unit_test(test_http_no_ranges),
        cmocka_unit_test(test_too_few_frames),
        cmocka_unit_test(test_big_frames),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
