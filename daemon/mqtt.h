/*
 * mqtt.h: vigild's MQTT bridge (private to daemon/; docs/mqtt.md). A client of an MQTT broker
 * (libmosquitto, MQTT 3.1.1 or 5, TLS, username/password or client certificates) driven from the
 * daemon's own libuv loop: its socket in a uv_poll, mosquitto_loop_read/write/misc called on the
 * loop, never libmosquitto's own thread. It is one more door and one more sink:
 *
 *  - a sink of the publication fan-out (bus.h): stream records become the retained topics
 *    <prefix><stream>/state, <prefix><stream>/<question>/active and .../snapshot (the JPEG the
 *    stream kept where the event started, vg_streams_snapshot), the change feed <prefix>events
 *    and Home Assistant discovery; job records go to <prefix>jobs/<id>/<kind> as they are;
 *  - a door of the one request path (dispatch.h): JSON commands on <prefix>watch/set,
 *    <prefix>unwatch/set and <prefix>ask/set become native requests, answered on the MQTT 5
 *    response topic (or <prefix>reply);
 *  - a Frigate consumer (mqtt_frigate_questions): a review that ends on frigate/reviews becomes
 *    clip jobs on Frigate's recording of it, whose answers go to <prefix>events.
 *
 * Change-feed messages are QoS 1 and kept in a bounded queue until the broker acknowledges them
 * (across reconnects); when the bound drops the oldest, the stream's event log (the `events`
 * operation) is replayed on the next connection, so every event still arrives, with the same
 * content.
 *
 * Threads: every function runs on the loop thread; only the blocking part of connecting (name
 * resolution, TCP connect start, TLS set-up) runs on libuv's thread pool.
 */
#ifndef VG_DAEMON_MQTT_H
#define VG_DAEMON_MQTT_H

#include "bus.h"
#include "daemon.h"
#include "dispatch.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <uv.h>

typedef struct vg_mqtt vg_mqtt;

typedef struct vg_mqtt_params {
    uv_loop_t *loop;
    const vg_daemon_config *cfg; /* borrowed; the mqtt_* keys and the request limits */
    const vg_dispatch *dispatch; /* borrowed; outlives the bridge */
    vg_bus *bus;                 /* borrowed; the bridge registers a sink */
    const char *model_name;      /* borrowed for the call: the device model in discovery */
} vg_mqtt_params;

/* Checks cfg's mqtt_* keys (URL form, TLS files, the password file, the prefixes, the Frigate
 * keys) without connecting. Returns 0, or VG_EINVAL / VG_ENOENT with a sentence. An empty mqtt_url
 * is valid (the bridge stays off). */
int vg_mqtt_check_config(const vg_daemon_config *cfg, char *err, size_t errlen);

/* Slug of a standing question, as used in topics and entity ids: ASCII letters and digits
 * lower-cased, every run of other bytes one '_', no '_' at either end, at most 48 bytes; an empty
 * result is "q<index>". Writes into out (at least 49 bytes). */
void vg_mqtt_slug(const char *question, int index, char *out, size_t outlen);

/* Starts the bridge (connects in the background and keeps reconnecting with a backoff of 0.5 s
 * doubling to 30 s). Reads mqtt_password_file now. *out owned by the caller: vg_mqtt_stop on the
 * loop, then vg_mqtt_free after the loop has run dry. */
int vg_mqtt_start(const vg_mqtt_params *p, vg_mqtt **out, char *err, size_t errlen);

/* Publishes `offline`, disconnects and closes the loop's handles (the loop finishes the closing).
 * NULL is a no-op. */
void vg_mqtt_stop(vg_mqtt *m);

/* After uv_run returned. NULL is a no-op. */
void vg_mqtt_free(vg_mqtt *m);

/* Adds "mqtt": {connected, queued, queued_bytes, published, dropped, replayed, lost, reconnects,
 * commands, command_errors, frigate_reviews} to an info reply. NULL adds nothing. */
void vg_mqtt_add_info(const vg_mqtt *m, cJSON *o);

#endif
