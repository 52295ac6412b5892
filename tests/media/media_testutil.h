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

/* ---- an HTTP server without byte ranges (it ignores Range), one thread per connection ----
 * GET /loop: a redirect to itself. GET /len/NAME and /nolen/NAME: the file NAME of mt_dir, whole,
 * with or without Content-Length, never Accept-Ranges or 206. */
typedef struct mt_http {
    int fd, port;
    atomic_int done;
    atomic_int requests;
    pthread_t th;
} mt_http;

typedef struct mt_http_conn {
    int c;
    mt_http *s;
} mt_http_conn;

static inline void mt_send_all(int c, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(c, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static inline void *mt_http_conn_main(void *arg)
{
    mt_http_conn *hc = arg;
    int c = hc->c;
    char req[4096] = "";
    size_t got = 0;
    while (got < sizeof req - 1 && !strstr(req, "\r\n\r\n")) {
        ssize_t r = recv(c, req + got, sizeof req - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = 0;
    }
    req[got] = 0;
    atomic_fetch_add(&hc->s->requests, 1);
    char path[256] = "";
    sscanf(req, "GET %255s", path);
    char hdr[512];
    if (!strcmp(path, "/loop")) {
        snprintf(hdr, sizeof hdr,
                 "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n"
                 "Connection: close\r\n\r\n");
        mt_send_all(c, hdr, strlen(hdr));
    } else {
        int with_len = !strncmp(path, "/len/", 5);
        const char *name = strchr(path + 1, '/');
        char file[600];
        size_t n = 0;
        unsigned char *body = name ? mt_read(mt_path(file, sizeof file, name + 1), &n) : NULL;
        if (!body) {
            snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            mt_send_all(c, hdr, strlen(hdr));
        } else {
            if (with_len)
                snprintf(hdr, sizeof hdr,
                         "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                         n);
            else
                snprintf(hdr, sizeof hdr,
                         "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         "Connection: close\r\n\r\n");
            mt_send_all(c, hdr, strlen(hdr));
            mt_send_all(c, body, n);
            free(body);
        }
    }
    shutdown(c, SHUT_WR);
    close(c);
    free(hc);
    return NULL;
}

static inline void *mt_http_main(void *arg)
{
    mt_http *s = arg;
    while (!atomic_load(&s->done)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        mt_http_conn *hc = malloc(sizeof *hc);
        pthread_t th;
        if (!hc) {
            close(c);
            continue;
        }
        hc->c = c;
        hc->s = s;
        if (pthread_create(&th, NULL, mt_http_conn_main, hc) != 0) {
            close(c);
            free(hc);
            continue;
        }
        pthread_detach(th);
    }
    return NULL;
}

static inline int mt_http_start(mt_http *s)
{
    memset(s, 0, sizeof *s);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (s->fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(s->fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->fd, 16) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &al) != 0) {
        close(s->fd);
        return -1;
    }
    s->port = ntohs(a.sin_port);
    if (pthread_create(&s->th, NULL, mt_http_main, s) != 0) {
        close(s->fd);
        return -1;
    }
    return 0;
}

static inline void mt_http_stop(mt_http *s)
{
    atomic_store(&s->done, 1);
    pthread_join(s->th, NULL);
    close(s->fd);
}

#endif
