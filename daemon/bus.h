/*
 * bus.h: vigild's publication fan-out (private to daemon/). Every job and stream record is
 * published once, to the bus, which hands it to each registered sink: the nanomsg PUB socket
 * (main.c), the HTTP door's SSE subscribers (http.c), and whatever door comes later. A door never
 * has a second copy of the publishing code.
 *
 * Threads: loop thread only (publishers post from workers through their mailboxes first). A sink is
 * called synchronously and must not block; it must not add or remove sinks from inside the call.
 */
#ifndef VG_DAEMON_BUS_H
#define VG_DAEMON_BUS_H

#include <stddef.h>

typedef struct vg_bus vg_bus;

/* topic: "job/<id>/<kind>" or "stream/<name>/<kind>" (no space); payload[len]: one JSON object,
 * valid UTF-8 (the bus repairs it before any sink sees it), not NUL-terminated for the sink's
 * purposes (it happens to be). Both borrowed for the call. */
typedef void (*vg_bus_sink_fn)(const char *topic, const char *payload, size_t len, void *opaque);

#define VG_BUS_MAX_SINKS 8

/* Creates an empty bus (*out owned by the caller: vg_bus_destroy). VG_ENOMEM. */
int vg_bus_create(vg_bus **out);
void vg_bus_destroy(vg_bus *b);

/* Registers fn(opaque). Returns a sink id >= 0, VG_EBUSY when VG_BUS_MAX_SINKS are registered. */
int vg_bus_add_sink(vg_bus *b, vg_bus_sink_fn fn, void *opaque);
/* Removes sink id (from vg_bus_add_sink); unknown ids are ignored. */
void vg_bus_remove_sink(vg_bus *b, int id);

/* Delivers (topic, payload) to every sink, in registration order. A NULL bus is a no-op (jobs and
 * streams before the doors open). Returns 0, VG_EINVAL (a space in topic) or VG_ENOMEM. */
int vg_bus_publish(vg_bus *b, const char *topic, const char *payload, size_t len);

/* Records published so far (for /metrics). */
unsigned long long vg_bus_published(const vg_bus *b);

#endif
