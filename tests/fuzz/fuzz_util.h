/*
 * fuzz_util.h: helpers shared by the libFuzzer harnesses: an input as a file that the code under
 * test opens by path (a memfd seen through /proc/self/fd, so nothing touches the disk), and an
 * abort with a message when an invariant breaks (libFuzzer reports it as a crash with the input).
 */
#ifndef VG_FUZZ_UTIL_H
#define VG_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Replaces the content of a per-process memfd with data[size] and returns its path
 * ("/proc/self/fd/N"), valid until the next call. Aborts when the memfd cannot be made. */
static inline const char *fuzz_as_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("vg-fuzz", MFD_CLOEXEC);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
        perror("memfd write");
        abort();
    }
    return path;
}

static inline void fuzz_discard_log(int level, const char *module, const char *msg, void *opaque)
{
    (void)level, (void)module, (void)msg, (void)opaque;
}

/* Drops vg_log output: complaints about broken input are expected and would drown the fuzzer's
 * own output. Needs common.h. */
#define fuzz_quiet() vg_log_set_sink(fuzz_discard_log, NULL)

#define FUZZ_CHECK(cond, what)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant broken: %s (%s:%d)\n", what, __FILE__, __LINE__);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
