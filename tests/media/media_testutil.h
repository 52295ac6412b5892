/*
 * media_testutil.h: helpers shared by the media tests: a temporary directory, running the ffmpeg
 * CLI to make test media, reading files, and a tiny TCP server for stalled network streams. Header
 * only (static functions); each test executable includes it once.
 */
#ifndef VG_MEDIA_TESTUTIL_H
#define VG_MEDIA_TESTUTIL_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static char mt_dir[256];

/* Creates the temporary directory; returns 0 or -1. */
static inline int mt_make_dir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(mt_dir, sizeof mt_dir, "%s/vg-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    return mkdtemp(mt_dir) ? 0 : -1;
}

static inline void mt_remove_dir(void)
{
    if (!mt_dir[0])
        return;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", mt_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", mt_dir);
    mt_dir[0] = '\0';
}

static inline const char *mt_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", mt_dir, name);
    return buf;
}

static inline int mt_have_ffmpeg(void)
{
    return system("ffmpeg -version >/dev/null 2>&1") == 0 &&
           system("ffprobe -version >/dev/null 2>&1") == 0;
}

/* Runs "ffmpeg -nostdin -v error -y <args>" in the temporary directory. */
static inline int mt_ffmpeg(const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && ffmpeg -nostdin -v error -y %s", mt_dir, args);
    int r = system(cmd);
    if (r != 0)
        fprintf(stderr, "failed (%d): %s\n", r, cmd);
    return r;
}

/* Reads a whole file into a malloc'd buffer. */
static inline unsigned char *mt_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf)
        *len = (size_t)(n > 0 ? n : 0);
    return buf;
}

static inline int mt_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    fclose(f);
    return w == len ? 0 : -1;
}

/* Copies the first keep bytes of src into dst. */
static inline int mt_truncate_copy(const char *src, const char *dst, double fraction)
{
    size_t n = 0;
    unsigned char *b = mt_read(src, &n);
    if (!b)
        return -1;
    int r = mt_write(dst, b, (size_t)((double)n * fraction));
    free(b);
    return r;
}

/* ---- a TCP server that accepts one connection, optionally sends a prefix, then stalls ---- */
typedef struct mt_server {
    int fd;
    int port;
    const unsigned char *prefix; /* sent after the request was read; NULL = send nothing */
    size_t prefix_len;
    atomic_int done;
    pthread_t thread;
} mt_server;

static inline void *mt_server_main(void *arg)
{
    mt_server *s = arg;
    int conns[8];
    int nconn = 0;
    while (!atomic_load(&s->done)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        if (nconn == 8) {
            close(c);
            continue;
        }
        conns[nconn++] = c;
        if (s->prefix) {
            char req[2048];
            ssize_t got = recv(c, req, sizeof req, 0);
            (void)got;
            size_t off = 0;
            while (off < s->prefix_len) {
                ssize_t w = send(c, s->prefix + off, s->prefix_len - off, MSG_NOSIGNAL);
                if (w <= 0)
                    break;
                off += (size_t)w;
            }
        }
    }
    for (int i = 0; i < nconn; i++)
        close(conns[i]);
    return NULL;
}

static inline int mt_server_start(mt_server *s, const unsigned char *prefix, size_t prefix_len)
{
    memset(s, 0, sizeof *s);
    s->prefix = prefix;
    s->prefix_len = prefix_len;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (s->fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(s->fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->fd, 8) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &al) != 0) {
        close(s->fd);
        return -1;
    }
    s->port = ntohs(a.sin_port);
    atomic_store(&s->done, 0);
    if (pthread_create(&s->thread, NULL, mt_server_main, s) != 0) {
        close(s->fd);
        return -1;
    }
    return 0;
}

static inline void mt_server_stop(mt_server *s)
{
    atomic_store(&s->done, 1);
    pthread_join(s->thread, NULL);
    close(s->fd);
}

#endif
