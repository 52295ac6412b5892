/*
 * error.c: error texts and small helpers shared by every module (vg_strerror, vg_fail, clocks,
 * vg_read_file). Thread-safe: no mutable state.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *vg_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case VG_EFORMAT:
        return "malformed data";
    case VG_EMODEL:
        return "unusable model checkpoint";
    case VG_EMEDIA:
        return "unusable media";
    case VG_EDECODE:
        return "decoding failed";
    case VG_ELIMIT:
        return "limit exceeded";
    case VG_EPROTOCOL:
        return "protocol not allowed";
    case VG_EPATH:
        return "path outside the allowed roots";
    case VG_ENOMEM:
        return "out of memory";
    case VG_EINVAL:
        return "invalid argument";
    case VG_ENOENT:
        return "no such file or directory";
    case VG_EIO:
        return "input/output error";
    case VG_EACCES:
        return "permission denied";
    case VG_EBUSY:
        return "busy";
    case VG_EAGAIN:
        return "try again";
    case VG_ETIMEDOUT:
        return "timed out";
    case VG_ECANCELED:
        return "cancelled";
    case VG_ENOTSUP:
        return "not supported";
    case VG_ERANGE:
        return "out of range";
    case VG_EPIPE:
        return "closed";
    case VG_EMSGSIZE:
        return "message too long";
    case VG_EPROTO:
        return "protocol error";
    case VG_EEXIST:
        return "already exists";
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        /* glibc's strerror returns static strings for known codes and is thread-safe for them. */
        return strerror(-err);
    }
    return "unknown error";
}

int vg_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

uint64_t vg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double vg_now_ms(void)
{
    return (double)vg_now_ns() / 1e6;
}

int vg_read_file(const char *path, size_t max_bytes, char **data, size_t *len, char *err,
                 size_t errlen)
{
    /* O_NONBLOCK so that a FIFO in place of the file fails the S_ISREG check below instead of
     * blocking the open until a writer appears; cleared again for the reads. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return vg_fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return vg_fail(err, errlen, -e, "%s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        int e = -errno;
        fclose(f);
        return vg_fail(err, errlen, e, "%s: %s", path, vg_strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(f);
        return vg_fail(err, errlen, VG_EINVAL, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > (uint64_t)max_bytes) {
        fclose(f);
        return vg_fail(err, errlen, VG_ELIMIT, "%s: %lld bytes, more than the limit of %zu", path,
                       (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int rerr = ferror(f);
    fclose(f);
    if (got != n || rerr) {
        free(buf);
        return vg_fail(err, errlen, VG_EIO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = '\0';
    *data = buf;
    if (len)
        *len = n;
    return 0;
}

void vg_assert_fail(const char *cond, const char *file, int line)
{
    vg_log_write(VG_LOG_ERR, "assert", "%s:%d: invariant broken: %s", file, line, cond);
    abort();
}
