/*
 * fuzz_media.c: libFuzzer harness for media open + decode (pipeline/): the input is a video file
 * that vg_media_open reads as vigild reads a file under its media roots (protocol whitelist
 * "file", one decode thread, short timeouts, params.open_file handing over the descriptor, nested
 * opens refused), and vg_media_read_video samples and resizes two small frames from.
 *
 * The bytes sit in a memfd (nothing on disk); params.open_file gives the pipeline a new descriptor
 * of it, which libavformat reads through the pipeline's own AVIOContext (media_fdio.c), exactly as
 * a job reads the descriptor its check opened.
 */
#define _GNU_SOURCE
#include "common.h"
#include "fuzz_util.h"
#include "pipeline.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    vg_pipe_log_init();
    fuzz_quiet(); /* FFmpeg's complaints about broken input are expected */
    return 0;
}

/* params.open_file as vigild's policy answers it: the input itself gets a new descriptor of the
 * memfd; anything else a playlist names is refused (no other file is in the "roots"). */
static int open_input(void *opaque, const char *url, int *fd, char *err, size_t errlen)
{
    const char *path = opaque;
    if (strcmp(url, path) != 0)
        return vg_fail(err, errlen, VG_EPATH, "'%.200s' is outside the fuzzer's roots", url);
    int d = fcntl(atoi(path + strlen("/proc/self/fd/")), F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return vg_fail(err, errlen, VG_EIO, "cannot duplicate the input's descriptor");
    *fd = d;
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
    const char *path = fuzz_as_file(data, size);
    mp.open_file = open_input;
    mp.allow_opaque = (void *)path;
    vg_media *m = NULL;
    char err[512];
    if (vg_media_open(path, &mp, &m, err, sizeof err) != 0)
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
