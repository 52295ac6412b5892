/*
 * fuzz_media.c: libFuzzer harness for media open + decode (pipeline/): the input is a video file
 * that vg_media_open opens by path, as vigild opens a file under its media roots (protocol
 * whitelist "file", one decode thread, short timeouts), and vg_media_read_video samples and
 * resizes two small frames from.
 *
 * pipeline.h has no memory input (no custom AVIOContext entry point), so the bytes reach FFmpeg
 * through a memfd named /proc/self/fd/N: the same code path as a real file, nothing on disk.
 */
#define _GNU_SOURCE
#include "common.h"
#include "fuzz_util.h"
#include "pipeline.h"

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    vg_pipe_log_init();
    fuzz_quiet(); /* FFmpeg's complaints about broken input are expected */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vg_media_params mp = vg_media_default_params();
    mp.protocol_whitelist = "file";
    mp.decode_threads = 1;
    mp.open_timeout_ms = 2000;
    mp.read_timeout_ms = 2000;
    vg_media *m = NULL;
    char err[512];
    if (vg_media_open(fuzz_as_file(data, size), &mp, &m, err, sizeof err) != 0)
        return 0;
    const vg_media_info *info = vg_media_get_info(m);
    FUZZ_CHECK(info != NULL, "no media info");
    if (!info->is_live) {
        vg_sample_params sp = vg_sample_default_params();
        sp.nframes = 2;
        sp.min_pixels = 1024;
        sp.max_pixels = 64 * 64;
        sp.total_pixels = 2 * 64 * 64;
        vg_video *v = NULL;
        if (vg_media_read_video(m, &sp, NULL, NULL, &v, err, sizeof err) == 0) {
            FUZZ_CHECK(v->T == 2 && v->H > 0 && v->W > 0, "a video of the wrong shape");
            vg_video_free(v);
        }
    }
    vg_media_close(m);
    return 0;
}
