/*
 * watch.h: the live-stream commands of `vigil` (watch.c): watch, unwatch, streams, events.
 */
#ifndef VG_TOOLS_WATCH_H
#define VG_TOOLS_WATCH_H

typedef struct vg_watch_conn {
    const char *cmd_url, *events_url;
    int timeout_ms;
    int json; /* print raw JSON records */
} vg_watch_conn;

/* Runs `cmd` (argv[0]) when it is one of watch, unwatch, streams, events and returns its exit
 * status (0, 1 failure, 2 usage); returns -1 for any other command. */
int vg_cmd_stream(int argc, char **argv, const vg_watch_conn *c);

#endif
