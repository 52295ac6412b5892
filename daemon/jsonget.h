/*
 * jsonget.h: reading a member of a parsed JSON object (cJSON) with its type checked: the helpers
 * the daemon's doors share (private to daemon/). Pure; any thread. The strings returned are
 * borrowed from the object.
 */
#ifndef VG_DAEMON_JSONGET_H
#define VG_DAEMON_JSONGET_H

#include <cjson/cJSON.h>

/* Member k of o when it is a string (borrowed), else NULL (also for a NULL o). */
static inline const char *vg_jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Member k of o when it is a number, else def. */
static inline double vg_jnum(const cJSON *o, const char *k, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

#endif
