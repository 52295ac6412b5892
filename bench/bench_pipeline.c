/*
 * bench_pipeline.c: decode + sample + resize throughput of vg_media_read_video on one clip, next to
 * the ffmpeg CLI doing the same work in the same run: decode every frame up to the last sampled
 * one, keep the plan's frames (select filter with the plan's exact indices), scale them to the
 * planned size (bicubic) as RGB24, discard the output. Prints one markdown table row per run and
 * the ratios ffmpeg / vigil of wall and CPU time (> 1: vigil is faster). Single-threaded driver;
 * the decoders use their own threads. Not part of ctest; bench/pipeline.sh runs it.
 *
 * usage: bench_pipeline --clip PATH [--resized-height H --resized-width W] [--threads N]
 *                       [--repeat N] [--ffmpeg PATH | --no-ffmpeg] [--header]
 */
#include "common.h"
#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_pipeline --clip PATH [--resized-height H --resized-width W] "
            "[--nframes N] [--threads N] [--repeat N] [--ffmpeg PATH | --no-ffmpeg] [--header]\n");
}

static double cpu_seconds(int who)
{
    struct rusage ru;
    if (getrusage(who, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Runs argv, returns its exit status (or -1), waiting for it. */
static int run(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Writes the ffmpeg filter for the plan: select the exact indices, scale to the planned size.
 * libavutil's expression parser refuses sums deeper than about 100 terms, so the eq() terms are
 * summed in parenthesised groups of 32 (768 frames: 24 groups). */
static int write_filter(const char *path, const vg_plan *plan)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "select='(");
    int in_group = 0;
    for (int k = 0; k < plan->nframes; k++) {
        if (k > 0 && plan->frame_indices[k] == plan->frame_indices[k - 1])
            continue;
        if (in_group == 32) {
            fprintf(f, ")+(");
            in_group = 0;
        }
        fprintf(f, "%seq(n,%lld)", in_group ? "+" : "", (long long)plan->frame_indices[k]);
        in_group++;
    }
    fprintf(f, ")',scale=%d:%d:flags=bicubic", plan->resized_width, plan->resized_height);
    return fclose(f) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *clip = NULL, *ffmpeg = "ffmpeg";
    int rh = 0, rw = 0, nframes = 0, threads = 0, repeat = 1, header = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--clip") && v)
            clip = argv[++i];
        else if (!strcmp(a, "--resized-height") && v)
            rh = atoi(argv[++i]);
        else if (!strcmp(a, "--resized-width") && v)
            rw = atoi(argv[++i]);
        else if (!strcmp(a, "--nframes") && v)
            nframes = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v)
            threads = atoi(argv[++i]);
        else if (!strcmp(a, "--repeat") && v)
            repeat = atoi(argv[++i]);
        else if (!strcmp(a, "--ffmpeg") && v)
            ffmpeg = argv[++i];
        else if (!strcmp(a, "--no-ffmpeg"))
            ffmpeg = NULL;
        else if (!strcmp(a, "--header"))
            header = 1;
        else {
            usage();
            return 2;
        }
    }
    if (!clip || repeat < 1) {
        usage();
        return 2;
    }
    vg_pipe_log_init();

    vg_media_params mp = vg_media_default_params();
    mp.decode_threads = threads;
    vg_sample_params sp = vg_sample_default_params();
    sp.resized_height = rh;
    sp.resized_width = rw;
    sp.nframes = nframes;
    char err[512];

    /* The filter needs the plan: one vigil run first, then vigil and ffmpeg alternate so that
     * load from other processes hits both alike; the best of each is kept. */
    double best_open = 1e30, best_read = 1e30, best_ff = 1e30, cpu_vigil = 1e30, cpu_ff = 1e30;
    vg_plan *keep = NULL;
    vg_media_info info;
    char filter[] = "/tmp/vg-bench-filter-XXXXXX";
    int have_filter = 0;
    for (int rep = 0; rep < repeat; rep++) {
        double c0 = cpu_seconds(RUSAGE_SELF);
        vg_media *m = NULL;
        double t0 = vg_now_ms();
        int r = vg_media_open(clip, &mp, &m, err, sizeof err);
        double t1 = vg_now_ms();
        if (r) {
            fprintf(stderr, "open: %s\n", err);
            return 1;
        }
        info = *vg_media_get_info(m);
        vg_video *v = NULL;
        r = vg_media_read_video(m, &sp, NULL, NULL, &v, err, sizeof err);
        double t2 = vg_now_ms();
        if (r) {
            fprintf(stderr, "read_video: %s\n", err);
            vg_media_close(m);
            return 1;
        }
        vg_media_close(m);
        cpu_vigil = VG_MIN(cpu_vigil, cpu_seconds(RUSAGE_SELF) - c0);
        best_open = VG_MIN(best_open, t1 - t0);
        best_read = VG_MIN(best_read, t2 - t1);
        if (!keep) {
            keep = v->plan;
            v->plan = NULL;
        }
        vg_video_free(v);

        if (!ffmpeg)
            continue;
        if (!have_filter) {
            int fd = mkstemp(filter);
            if (fd < 0 || write_filter(filter, keep) != 0) {
                fprintf(stderr, "cannot write the filter script\n");
                return 1;
            }
            close(fd);
            have_filter = 1;
        }
        char thr[16];
        snprintf(thr, sizeof thr, "%d", threads);
        char *args[] = {(char *)ffmpeg, "-nostdin",         "-v",
                        "error",        "-threads",         threads > 0 ? thr : "0",
                        "-i",           (char *)clip,       "-map",
                        "0:v:0",        "-filter_script:v", filter,
                        "-vsync",       "passthrough",      "-f",
                        "rawvideo",     "-pix_fmt",         "rgb24",
                        "-y",           "/dev/null",        NULL};
        double cc0 = cpu_seconds(RUSAGE_CHILDREN);
        t0 = vg_now_ms();
        r = run(args);
        double t = vg_now_ms() - t0;
        if (r != 0) {
            fprintf(stderr, "ffmpeg failed (%d)\n", r);
            unlink(filter);
            return 1;
        }
        best_ff = VG_MIN(best_ff, t);
        cpu_ff = VG_MIN(cpu_ff, cpu_seconds(RUSAGE_CHILDREN) - cc0);
    }
    if (have_filter)
        unlink(filter);

    int64_t last = 0;
    for (int k = 0; k < keep->nframes; k++)
        last = keep->frame_indices[k] > last ? keep->frame_indices[k] : last;
    double vigil_s = (best_open + best_read) / 1000.0;

    if (header) {
        printf("| clip | sampled | size | frames up to the last sample | vigil open s | vigil "
               "decode+sample+resize "
               "s | vigil wall s | vigil fps | vigil CPU s | ffmpeg CLI wall s | ffmpeg CPU s | "
               "wall ffmpeg/vigil | CPU ffmpeg/vigil |\n");
        printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    }
    char ffw[32] = "-", ffc[32] = "-", rw_s[32] = "-", rc_s[32] = "-";
    if (ffmpeg) {
        snprintf(ffw, sizeof ffw, "%.2f", best_ff / 1000.0);
        snprintf(ffc, sizeof ffc, "%.2f", cpu_ff);
        snprintf(rw_s, sizeof rw_s, "%.2fx", best_ff / 1000.0 / vigil_s);
        snprintf(rc_s, sizeof rc_s, "%.2fx", cpu_ff / cpu_vigil);
    }
    printf(
        "| %dx%d %.0f fps %.0f s | %d | %dx%d | %lld | %.2f | %.2f | %.2f | %.0f | %.2f | %s | %s "
        "| %s | %s |\n",
        info.width, info.height, info.fps, info.duration, keep->nframes, keep->resized_width,
        keep->resized_height, (long long)(last + 1), best_open / 1000.0, best_read / 1000.0,
        vigil_s, (double)(last + 1) / vigil_s, cpu_vigil, ffw, ffc, rw_s, rc_s);
    vg_plan_free(keep);
    return 0;
}
