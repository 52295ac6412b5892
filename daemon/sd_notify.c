/*
 * sd_notify.c: the systemd notification protocol without libsystemd: one AF_UNIX datagram with
 * "KEY=VALUE" lines to the socket named by NOTIFY_SOCKET (a path, or "@name" for an abstract
 * socket). Thread: the loop thread; the send never blocks (MSG_DONTWAIT).
 */
#include "daemon.h"

#include "common.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int vg_sd_notify(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (!name || !*name)
        return 0;
    if (!state)
        return VG_EINVAL;
    size_t n = strlen(name);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if ((name[0] != '/' && name[0] != '@') || n >= sizeof sa.sun_path)
        return VG_EINVAL;
    memcpy(sa.sun_path, name, n);
    if (name[0] == '@')
        sa.sun_path[0] = 0; /* abstract namespace */
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t w = sendto(fd, state, strlen(state), MSG_DONTWAIT | MSG_NOSIGNAL,
                       (struct sockaddr *)&sa, salen);
    int rc = w < 0 ? -errno : 0;
    close(fd);
    return rc;
}

uint64_t vg_sd_watchdog_usec(void)
{
    const char *us = getenv("WATCHDOG_USEC");
    if (!us || !*us)
        return 0;
    const char *pid = getenv("WATCHDOG_PID");
    if (pid && *pid && strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    char *end;
    unsigned long long v = strtoull(us, &end, 10);
    return *end ? 0 : (uint64_t)v;
}
