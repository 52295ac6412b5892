/*
 * bus.c: the publication fan-out (bus.h).
 */
#include "bus.h"

#include "common.h"

#include <stdlib.h>
#include <string.h>

struct vg_bus {
    struct {
        vg_bus_sink_fn fn;
        void *opaque;
    } sinks[VG_BUS_MAX_SINKS];
    unsigned long long published;
};

int vg_bus_create(vg_bus **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : VG_ENOMEM;
}

void vg_bus_destroy(vg_bus *b)
{
    free(b);
}

int vg_bus_add_sink(vg_bus *b, vg_bus_sink_fn fn, void *opaque)
{
    for (int i = 0; i < VG_BUS_MAX_SINKS; i++) {
        if (!b->sinks[i].fn) {
            b->sinks[i].fn = fn;
            b->sinks[i].opaque = opaque;
            return i;
        }
    }
    return VG_EBUSY;
}

void vg_bus_remove_sink(vg_bus *b, int id)
{
    if (b && id >= 0 && id < VG_BUS_MAX_SINKS)
        b->sinks[id].fn = NULL;
}

int vg_bus_publish(vg_bus *b, const char *topic, const char *payload, size_t len)
{
    if (!b)
        return 0;
    if (strchr(topic, ' '))
        return VG_EINVAL;
    char *fixed = NULL;
    if (vg_utf8_check(payload, len) != len || memchr(payload, 0, len)) {
        size_t cap = 3 * len + 1;
        if (!(fixed = malloc(cap)))
            return VG_ENOMEM;
        len = vg_utf8_sanitize(payload, len, fixed, cap);
        payload = fixed;
    }
    b->published++;
    for (int i = 0; i < VG_BUS_MAX_SINKS; i++)
        if (b->sinks[i].fn)
            b->sinks[i].fn(topic, payload, len, b->sinks[i].opaque);
    free(fixed);
    return 0;
}

unsigned long long vg_bus_published(const vg_bus *b)
{
    return b ? b->published : 0;
}
