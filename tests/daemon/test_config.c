/*
 * test_config.c: vigild's configuration table (daemon/config.c), driven by the table itself: every
 * key's default parses and stays what it was, every bound is enforced with a sentence naming the
 * key, a reload copies exactly the live keys and reports the restart-only ones, and
 * systemd/vigild.conf documents every key (and only keys that exist) with the right [live] mark.
 */
#include "common.h"
#include "daemon.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The keys as the table describes them, copied out of vg_daemon_config_foreach. */
typedef struct key_copy {
    const char *name;
    vg_daemon_config_type type;
    double min, max;
    const char *const *choices;
    const char *default_value;
    int live;
    char value[VG_CFG_STR + 64]; /* the value in the config walked (paths: at most 16 short ones) */
} key_copy;

typedef struct key_list {
    key_copy k[128];
    int n;
} key_list;

static void collect(const vg_daemon_config_key *k, void *opaque)
{
    key_list *l = opaque;
    assert_true(l->n < (int)VG_ARRAY_LEN(l->k));
    key_copy *c = &l->k[l->n++];
    c->name = k->name;
    c->type = k->type;
    c->min = k->min;
    c->max = k->max;
    c->choices = k->choices;
    c->default_value = k->default_value;
    c->live = k->live;
    snprintf(c->value, sizeof c->value, "%s", k->value ? k->value : "");
    assert_non_null(k->description);
    assert_true(strlen(k->description) > 10);
    assert_non_null(k->expect);
    assert_non_null(k->type_name);
}

static void list_keys(const vg_daemon_config *c, key_list *l)
{
    l->n = 0;
    vg_daemon_config_foreach(c, collect, l);
    assert_true(l->n > 20);
}

/* c's value of one key, as --check-config prints it. The result stays valid for the next three
 * calls, so that two can be compared in one expression. */
static const char *value_of(const vg_daemon_config *c, const char *key)
{
    static key_list l;
    static char out[4][VG_CFG_STR + 64];
    static int next;
    list_keys(c, &l);
    for (int i = 0; i < l.n; i++)
        if (!strcmp(l.k[i].name, key)) {
            char *o = out[next++ % 4];
            snprintf(o, sizeof out[0], "%s", l.k[i].value);
            return o;
        }
    fail_msg("no key %s", key);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------- */

/* The built-in defaults are the ones vigild had before the table, and each row's own default
 * string parses to the value vg_daemon_config_defaults stores. */
static void test_defaults(void **state)
{
    (void)state;
    static const char *const want[][2] = {
        {"weight_type", "auto"},
        {"runtime_dir", "/run/vigil"},
        {"state_dir", "/var/lib/vigil"},
        {"cmd_url", ""}, /* derived from runtime_dir by vg_daemon_config_finish */
        {"events_url", ""},
        {"tcp_cmd_url", ""},
        {"tcp_events_url", ""},
        {"allow_remote", "no"},
        {"socket_mode", "0660"},
        {"log_level", "6"},
        {"max_message_size", "1048576"},
        {"max_queued_jobs", "16"},
        {"max_concurrent_decodes", "2"},
        {"inference_threads", "0"},
        {"max_new_tokens_limit", "4096"},
        {"default_max_new_tokens", "1024"},
        {"job_deadline_s", "600"},
        {"result_ttl_s", "86400"},
        {"max_frames_limit", "768"},
        {"max_pixels_limit", "16777216"},
        {"allowed_protocols", "http,https"},
        {"max_streams", "8"},
        {"stream_stall_timeout_s", "5"},
        {"stream_max_new_tokens", "64"},
        {"stream_log_max_records", "100000"},
        {"media_roots", ""},
    };
    vg_daemon_config c;
    vg_daemon_config_defaults(&c);
    for (size_t i = 0; i < VG_ARRAY_LEN(want); i++)
        if (strcmp(value_of(&c, want[i][0]), want[i][1]))
            fail_msg("default of %s is '%s', want '%s'", want[i][0], value_of(&c, want[i][0]),
                     want[i][1]);
    assert_true(c.model_dir[0] != 0);
    assert_string_equal(c.weight_type, "auto");
    assert_int_equal(c.log_level, VG_LOG_INFO);
    assert_int_equal(c.n_media_roots, 0);

    key_list l;
    list_keys(&c, &l);
    for (int i = 0; i < l.n; i++) {
        vg_daemon_config d;
        memset(&d, 0, sizeof d);
        char err[256];
        if (vg_daemon_config_set(&d, l.k[i].name, l.k[i].default_value, err, sizeof err) != 0)
            fail_msg("the default of %s does not parse: %s", l.k[i].name, err);
        if (strcmp(value_of(&d, l.k[i].name), l.k[i].value))
            fail_msg("%s: default '%s' parses to '%s', defaults() stores '%s'", l.k[i].name,
                     l.k[i].default_value, value_of(&d, l.k[i].name), l.k[i].value);
        assert_int_equal(vg_daemon_config_key_is_live(l.k[i].name), l.k[i].live);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(l.k[i].name, l.k[j].name);
    }
    assert_int_equal(vg_daemon_config_key_is_live("no_such_key"), VG_ENOENT);
}

/* set(value) must fail with VG_EINVAL, name the key and the value, and leave c as it was. */
static void expect_rejected(vg_daemon_config *c, const char *key, const char *value)
{
    vg_daemon_config before;
    memcpy(&before, c, sizeof before);
    char err[4096] = "";
    int rc = vg_daemon_config_set(c, key, value, err, sizeof err);
    if (rc != VG_EINVAL)
        fail_msg("%s = '%s' was accepted (rc %d)", key, value, rc);
    if (!strstr(err, key) || !strstr(err, value) || !strstr(err, "expected"))
        fail_msg("%s = '%s': the error '%s' does not name the key, the value and the bounds", key,
                 value, err);
    if (memcmp(&before, c, sizeof before))
        fail_msg("%s = '%s' was refused but changed the config", key, value);
}

static void expect_accepted(vg_daemon_config *c, const char *key, const char *value,
                            const char *printed)
{
    char err[512] = "";
    if (vg_daemon_config_set(c, key, value, err, sizeof err) != 0)
        fail_msg("%s = '%s' was refused: %s", key, value, err);
    if (printed && strcmp(value_of(c, key), printed))
        fail_msg("%s = '%s' reads back as '%s', want '%s'", key, value, value_of(c, key), printed);
}

/* Each key's bounds, from the table: the ends are accepted, one step outside is refused. */
static void test_bounds(void **state)
{
    (void)state;
    vg_daemon_config c;
    vg_daemon_config_defaults(&c);
    key_list l;
    list_keys(NULL, &l);
    char lo[64], hi[64], below[64], above[64];
    for (int i = 0; i < l.n; i++) {
        const key_copy *k = &l.k[i];
        switch (k->type) {
        case VG_CFG_TYPE_INT:
        case VG_CFG_TYPE_LONG:
        case VG_CFG_TYPE_SIZE:
            snprintf(lo, sizeof lo, "%ld", (long)k->min);
            snprintf(hi, sizeof hi, "%ld", (long)k->max);
            snprintf(below, sizeof below, "%ld", (long)k->min - 1);
            snprintf(above, sizeof above, "%ld", (long)k->max + 1);
            expect_accepted(&c, k->name, lo, lo);
            expect_accepted(&c, k->name, hi, hi);
            expect_rejected(&c, k->name, below);
            expect_rejected(&c, k->name, above);
            expect_rejected(&c, k->name, "12abc");
            expect_rejected(&c, k->name, "");
            break;
        case VG_CFG_TYPE_DOUBLE:
            snprintf(lo, sizeof lo, "%.17g", k->min);
            snprintf(hi, sizeof hi, "%.17g", k->max);
            snprintf(below, sizeof below, "%.17g", k->min - 0.001);
            snprintf(above, sizeof above, "%.17g", k->max * 1.001 + 1);
            expect_accepted(&c, k->name, lo, NULL);
            expect_accepted(&c, k->name, hi, NULL);
            expect_rejected(&c, k->name, below);
            expect_rejected(&c, k->name, above);
            expect_rejected(&c, k->name, "nan");
            expect_rejected(&c, k->name, "1s");
            break;
        case VG_CFG_TYPE_MODE:
            snprintf(lo, sizeof lo, "%04lo", (long)k->min);
            snprintf(hi, sizeof hi, "%04lo", (long)k->max);
            snprintf(above, sizeof above, "%lo", (long)k->max + 1);
            expect_accepted(&c, k->name, lo, lo);
            expect_accepted(&c, k->name, hi, hi);
            expect_rejected(&c, k->name, "-1");
            expect_rejected(&c, k->name, above);
            expect_rejected(&c, k->name, "0668"); /* 8 is not an octal digit */
            break;
        case VG_CFG_TYPE_LOG_LEVEL:
            snprintf(below, sizeof below, "%ld", (long)k->min - 1);
            snprintf(above, sizeof above, "%ld", (long)k->max + 1);
            expect_accepted(&c, k->name, "debug", "7");
            expect_accepted(&c, k->name, "err", "3");
            expect_accepted(&c, k->name, "5", "5");
            expect_rejected(&c, k->name, below);
            expect_rejected(&c, k->name, above);
            expect_rejected(&c, k->name, "loud");
            break;
        case VG_CFG_TYPE_BOOL:
            expect_accepted(&c, k->name, "yes", "yes");
            expect_accepted(&c, k->name, "off", "no");
            expect_accepted(&c, k->name, "1", "yes");
            expect_rejected(&c, k->name, "maybe");
            break;
        case VG_CFG_TYPE_ENUM:
            assert_non_null(k->choices);
            for (const char *const *ch = k->choices; *ch; ch++)
                expect_accepted(&c, k->name, *ch, *ch);
            expect_rejected(&c, k->name, "f16");
            expect_rejected(&c, k->name, "");
            expect_rejected(&c, k->name, "AUTO");
            break;
        case VG_CFG_TYPE_STRING: {
            size_t n = (size_t)k->max;
            char *s = malloc(n + 2);
            memset(s, 'a', n + 1);
            s[n] = 0;
            expect_accepted(&c, k->name, s, s);
            s[n] = 'a';
            s[n + 1] = 0;
            expect_rejected(&c, k->name, s);
            free(s);
            expect_accepted(&c, k->name, "", "");
            break;
        }
        case VG_CFG_TYPE_PATHS: {
            char list[1024] = "";
            size_t n = 0;
            for (int j = 0; j < (int)k->max; j++)
                n += (size_t)snprintf(list + n, sizeof list - n, "%s/p%d", j ? "," : "", j);
            expect_accepted(&c, k->name, list, list);
            snprintf(list + n, sizeof list - n, ",/one-too-many");
            expect_rejected(&c, k->name, list);
            expect_rejected(&c, k->name, "relative/path");
            expect_rejected(&c, k->name, "/ok, relative");
            expect_accepted(&c, k->name, " /a , /b ", "/a,/b");
            expect_accepted(&c, k->name, "", "");
            break;
        }
        }
    }
    char err[256] = "";
    assert_int_equal(vg_daemon_config_set(&c, "no_such_key", "1", err, sizeof err), VG_ENOENT);
    assert_non_null(strstr(err, "no_such_key"));
}

/* ---------------------------------------------------------------------------------------------- */

typedef struct change_log {
    int calls;
    const char *key;
    int live;
    char value[256];
    int result; /* what the callback returns for live keys */
} change_log;

static int on_change(const vg_daemon_config_key *k, const vg_daemon_config *next, void *opaque)
{
    change_log *log = opaque;
    log->calls++;
    log->key = k->name;
    log->live = k->live;
    snprintf(log->value, sizeof log->value, "%s", k->value);
    assert_string_equal(k->value, value_of(next, k->name));
    return log->live ? log->result : -1; /* ignored for restart-only keys */
}

/* A valid value of key k that differs from its default. */
static void other_value(const key_copy *k, char *buf, size_t cap)
{
    switch (k->type) {
    case VG_CFG_TYPE_INT:
    case VG_CFG_TYPE_LONG:
    case VG_CFG_TYPE_SIZE:
        snprintf(buf, cap, "%ld", (long)k->min);
        if (!strcmp(buf, k->value))
            snprintf(buf, cap, "%ld", (long)k->min + 1);
        return;
    case VG_CFG_TYPE_DOUBLE:
        snprintf(buf, cap, "%g", k->max);
        return;
    case VG_CFG_TYPE_MODE:
        snprintf(buf, cap, "0601");
        return;
    case VG_CFG_TYPE_LOG_LEVEL:
        snprintf(buf, cap, "3");
        return;
    case VG_CFG_TYPE_BOOL:
        snprintf(buf, cap, "%s", strcmp(k->value, "yes") ? "yes" : "no");
        return;
    case VG_CFG_TYPE_ENUM:
        snprintf(buf, cap, "%s", strcmp(k->value, k->choices[0]) ? k->choices[0] : k->choices[1]);
        return;
    case VG_CFG_TYPE_STRING:
        snprintf(buf, cap, "/tmp/vg-config-other");
        return;
    case VG_CFG_TYPE_PATHS:
        snprintf(buf, cap, "/,/tmp");
        return;
    }
}

/* For each key alone: a reload copies it when it is live and reports it either way; every other
 * key is left alone. */
static void test_apply_live(void **state)
{
    (void)state;
    vg_daemon_config def;
    vg_daemon_config_defaults(&def);
    key_list l;
    list_keys(&def, &l);
    int n_live = 0, n_restart = 0;
    for (int i = 0; i < l.n; i++) {
        const key_copy *k = &l.k[i];
        vg_daemon_config cur = def, next = def;
        char v[256], err[256];
        other_value(k, v, sizeof v);
        if (vg_daemon_config_set(&next, k->name, v, err, sizeof err) != 0)
            fail_msg("%s: %s", k->name, err);
        assert_string_not_equal(value_of(&next, k->name), k->value);

        change_log log = {.result = 0};
        int restart = vg_daemon_config_apply_live(&cur, &next, on_change, &log);
        assert_int_equal(log.calls, 1);
        assert_string_equal(log.key, k->name);
        assert_int_equal(log.live, k->live);
        assert_string_equal(log.value, value_of(&next, k->name));
        assert_int_equal(restart, k->live ? 0 : 1);
        if (strcmp(value_of(&cur, k->name), k->live ? value_of(&next, k->name) : k->value))
            fail_msg("%s (%s): after the reload it is '%s'", k->name,
                     k->live ? "live" : "restart-only", value_of(&cur, k->name));
        for (int j = 0; j < l.n; j++)
            if (j != i && strcmp(value_of(&cur, l.k[j].name), l.k[j].value))
                fail_msg("reloading %s changed %s", k->name, l.k[j].name);
        /* Applied once, a second reload of the same file changes nothing live. */
        change_log again = {.result = 0};
        assert_int_equal(vg_daemon_config_apply_live(&cur, &next, on_change, &again),
                         k->live ? 0 : 1);
        assert_int_equal(again.calls, k->live ? 0 : 1);

        /* A live key whose side effect fails keeps its old value. */
        if (k->live) {
            vg_daemon_config cur2 = def;
            change_log refuse = {.result = VG_EBUSY};
            assert_int_equal(vg_daemon_config_apply_live(&cur2, &next, on_change, &refuse), 0);
            assert_int_equal(refuse.calls, 1);
            assert_string_equal(value_of(&cur2, k->name), k->value);
            n_live++;
        } else {
            n_restart++;
        }
    }
    /* Both kinds exist, and the ones this daemon has always had keep their kind. */
    assert_true(n_live > 0 && n_restart > 0);
    assert_int_equal(vg_daemon_config_key_is_live("log_level"), 1);
    assert_int_equal(vg_daemon_config_key_is_live("media_roots"), 1);
    assert_int_equal(vg_daemon_config_key_is_live("model_dir"), 0);
    assert_int_equal(vg_daemon_config_key_is_live("weight_type"), 0);
    assert_int_equal(vg_daemon_config_key_is_live("max_concurrent_decodes"), 0);

    /* Identical configs: nothing reported; a NULL callback copies the live keys. */
    vg_daemon_config cur = def, next = def;
    change_log log = {.result = 0};
    assert_int_equal(vg_daemon_config_apply_live(&cur, &next, on_change, &log), 0);
    assert_int_equal(log.calls, 0);
    char err[256];
    assert_int_equal(vg_daemon_config_set(&next, "max_queued_jobs", "3", err, sizeof err), 0);
    assert_int_equal(vg_daemon_config_set(&next, "runtime_dir", "/tmp/x", err, sizeof err), 0);
    assert_int_equal(vg_daemon_config_apply_live(&cur, &next, NULL, NULL), 1);
    assert_int_equal(cur.max_queued_jobs, 3);
    assert_string_equal(cur.runtime_dir, "/run/vigil");
}

/* ---------------------------------------------------------------------------------------------- */

/* systemd/vigild.conf documents each key exactly once as `#key = value` (or `key = value`), names
 * no key the table lacks, and marks a key [live] in the comment above it exactly when it is live.
 */
static void test_conf_documents_every_key(void **state)
{
    (void)state;
    char *data;
    size_t len;
    char err[256];
    assert_int_equal(
        vg_read_file(VG_SOURCE_DIR "/systemd/vigild.conf", 1 << 20, &data, &len, err, sizeof err),
        0);
    key_list l;
    list_keys(NULL, &l);
    int seen[VG_ARRAY_LEN(l.k)];
    memset(seen, 0, sizeof seen);
    char block[4096] = ""; /* the comment paragraph above the current key lines */
    int after_key = 0, lineno = 0;
    for (char *line = data; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        lineno++;
        const char *p = line[0] == '#' ? line + 1 : line;
        size_t klen = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789_");
        const char *q = p + klen;
        while (*q == ' ')
            q++;
        if (klen > 0 && *q == '=') {
            char key[128];
            assert_true(klen < sizeof key);
            memcpy(key, p, klen);
            key[klen] = 0;
            int found = -1;
            for (int i = 0; i < l.n; i++)
                if (!strcmp(l.k[i].name, key))
                    found = i;
            if (found < 0)
                fail_msg("vigild.conf line %d documents '%s', which is not a key", lineno, key);
            if (seen[found]++)
                fail_msg("vigild.conf documents %s twice", key);
            if ((strstr(block, "[live]") != NULL) != l.k[found].live)
                fail_msg("vigild.conf line %d: %s is %s but its comment %s [live]", lineno, key,
                         l.k[found].live ? "live" : "restart-only",
                         l.k[found].live ? "lacks" : "says");
            after_key = 1;
        } else if (line[0] == '#') {
            if (after_key)
                block[0] = 0;
            after_key = 0;
            size_t b = strlen(block);
            snprintf(block + b, sizeof block - b, "%s\n", line);
        } else {
            block[0] = 0; /* a blank line ends a paragraph */
            after_key = 0;
        }
        line = nl ? nl + 1 : NULL;
    }
    for (int i = 0; i < l.n; i++)
        if (!seen[i])
            fail_msg("key %s is not documented in systemd/vigild.conf", l.k[i].name);
    free(data);
}

/* docs/design.md lists every key in its configuration section, under live or restart-only as the
 * table says. */
static void test_design_names_every_key(void **state)
{
    (void)state;
    char *data;
    size_t len;
    char err[256];
    assert_int_equal(
        vg_read_file(VG_SOURCE_DIR "/docs/design.md", 1 << 22, &data, &len, err, sizeof err), 0);
    char *live = strstr(data, "\n- Live keys:");
    assert_non_null(live);
    char *restart = strstr(live, "\n- Restart-only keys:");
    assert_non_null(restart);
    char *end = strstr(restart, "\n\n");
    assert_non_null(end);
    *restart++ = 0; /* live: the live list; restart: the restart-only list */
    *end = 0;
    key_list l;
    list_keys(NULL, &l);
    for (int i = 0; i < l.n; i++) {
        char pat[128];
        snprintf(pat, sizeof pat, "`%s`", l.k[i].name);
        if (!strstr(l.k[i].live ? live : restart, pat) || strstr(l.k[i].live ? restart : live, pat))
            fail_msg("docs/design.md does not list %s with the %s keys", l.k[i].name,
                     l.k[i].live ? "live" : "restart-only");
    }
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_apply_live),
        cmocka_unit_test(test_conf_documents_every_key),
        cmocka_unit_test(test_design_names_every_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
