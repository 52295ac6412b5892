/*
 * media_fdio.c: libavformat reads a local file through a descriptor the caller opened, never by its
 * name (issue #13 item 1: the file decoded must be the file a policy checked).
 *
 * An fdio is a custom AVIOContext whose read and seek callbacks work on a descriptor with pread()
 * at the context's own position, so the descriptor's shared file offset is never used or moved:
 * one descriptor can back several contexts at once (the input, a reopen for a rewind, the format
 * probe) and be reused across opens. The size comes from fstat() when libavformat asks for it
 * (AVSEEK_SIZE), so a file that grows while it is read is seen as it is. A context either borrows
 * the descriptor (the input's, owned by the vg_media) or owns it (a nested file a playlist names,
 * opened by params.open_file and closed with its context).
 *
 * libavformat's default io_close2 would treat the context's opaque as a URLContext; every context
 * made here is closed with media_fdio_close instead (media_open.c's io_close2 hook recognizes them
 * with media_fdio_is_ours). avio_alloc_context leaves av_class NULL, so the AVOption lookups HLS
 * makes on a context (cookies, "location") find nothing instead of reading the opaque.
 *
 * Thread: the vg_media's thread; an fdio has no shared state of its own.
 */
#include "media_internal.h"

#include "common.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define FDIO_BUFFER 65536

typedef struct fdio {
    int fd;
    int owned; /* close fd with the context */
    int64_t pos;
    AVIOInterruptCB icb; /* the input's stop flag and deadline, asked before each read */
} fdio;

static int fdio_read(void *opaque, uint8_t *buf, int size)
{
    fdio *f = opaque;
    if (f->icb.callback && f->icb.callback(f->icb.opaque))
        return AVERROR_EXIT;
    for (;;) {
        ssize_t n = pread(f->fd, buf, (size_t)size, (off_t)f->pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return AVERROR(errno);
        if (n == 0)
            return AVERROR_EOF;
        f->pos += n;
        return (int)n;
    }
}

static int64_t fdio_seek(void *opaque, int64_t offset, int whence)
{
    fdio *f = opaque;
    struct stat st;
    whence &= ~AVSEEK_FORCE;
    if (whence == AVSEEK_SIZE || whence == SEEK_END) {
        if (fstat(f->fd, &st) != 0)
            return AVERROR(errno);
        if (whence == AVSEEK_SIZE)
            return (int64_t)st.st_size;
        offset += (int64_t)st.st_size;
    } else if (whence == SEEK_CUR) {
        offset += f->pos;
    } else if (whence != SEEK_SET) {
        return AVERROR(EINVAL);
    }
    if (offset < 0)
        return AVERROR(EINVAL);
    f->pos = offset;
    return offset;
}

int media_fdio_open(int fd, int owned, const AVIOInterruptCB *icb, AVIOContext **out)
{
    fdio *f = av_mallocz(sizeof *f);
    uint8_t *buf = av_malloc(FDIO_BUFFER);
    AVIOContext *pb =
        f && buf ? avio_alloc_context(buf, FDIO_BUFFER, 0, f, fdio_read, NULL, fdio_seek) : NULL;
    if (!pb) {
        av_free(buf);
        av_free(f);
        return AVERROR(ENOMEM);
    }
    f->fd = fd;
    f->owned = owned;
    if (icb)
        f->icb = *icb;
    *out = pb;
    return 0;
}

int media_fdio_is_ours(const AVIOContext *pb)
{
    return pb && pb->read_packet == fdio_read;
}

void media_fdio_close(AVIOContext **pb)
{
    if (!*pb)
        return;
    fdio *f = (*pb)->opaque;
    if (f && f->owned && f->fd >= 0)
        close(f->fd);
    av_free(f);
    av_freep(&(*pb)->buffer);
    avio_context_free(pb);
}
