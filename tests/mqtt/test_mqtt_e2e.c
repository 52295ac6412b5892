/*
 * test_mqtt_e2e.c: vigild's MQTT bridge against a real broker (Debian mosquitto on a loopback port,
 * started and killed by the test) with real clients: a Python paho-mqtt subscriber with a
 * persistent session records every message (tests/mqtt/mqtt_capture.py), commands go over MQTT 5
 * with a response topic from paho (tests/mqtt/mqtt_cmd.py), mosquitto_pub and mosquitto_sub do the
 * rest. The model is the trained demo model (models/demo); the live stream is ffmpeg on loopback.
 *
 * Covers, in one daemon run (mqtt_queue_max = 1, so the queue drops and the log replay runs):
 *  - `watch` as an MQTT 5 command: the reply on the response topic with the correlation data;
 *  - a red box visible twice: retained vigil/demo/<q>/active ON then OFF, vigil/events new -> end
 *    with the id tied to the stream's sequence number, Home Assistant discovery configs that parse
 *    and point at the bridge's topics, vigil/demo/state retained;
 *  - the broker killed (SIGKILL) after the second occurrence started and restarted after it ended:
 *    every `started`/`ended` record of the stream's log (`events demo`) arrives as a message, and
 *    no message id/type arrives twice with different content;
 *  - a Frigate-shaped review on frigate/reviews: a clip job on the clip a local HTTP server
 *    serves, its answer on vigil/events with the review id;
 *  - bad input: payloads that are not JSON, a wrong op, an unknown stream, an oversized message, a
 *    malformed review: clear replies on vigil/reply and log lines, the daemon keeps serving;
 *  - a second vigild whose broker refuses its credentials: a clear logged error, the daemon keeps
 *    serving, the password never in its log;
 *  - SIGTERM: exit 0 with vigil/available offline; no sanitizer report in either log.
 */
#define _XOPEN_SOURCE 700
#include "common.h"
#include "../support/vg_testd.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define PY       "/usr/bin/python3"
#define MQTT_DIR VG_SOURCE_DIR "/tests/mqtt"
#define QUESTION "When is the red box visible?"
#define SLUG     "when_is_the_red_box_visible"

static char dir[256], model[320], media[320], rt[320], st[320], conf[320], cmd_url[400];
static char capfile[400], brokerconf[400], authconf[400], clipdir[400];
static int port, auth_port, http_port, src_port, tls_port;
static pid_t daemon_pid = -1, broker = -1, auth_broker = -1, tls_broker = -1, capture = -1,
             httpd = -1;
#define MAX_CHILDREN 4
static pid_t children[MAX_CHILDREN];

static cJSON *call(const char *req)
{
    return vg_testd_call(cmd_url, req, strlen(req), 10000);
}

/* ---- processes ---------------------------------------------------------------------------- */

static void kill_wait(pid_t *pid, int sig)
{
    if (*pid > 0) {
        kill(*pid, sig);
        waitpid(*pid, NULL, 0);
    }
    *pid = -1;
}

static pid_t start_broker(const char *cfgpath)
{
    char log[400], *argv[] = {"mosquitto", "-c", (char *)cfgpath, NULL};
    snprintf(log, sizeof log, "%s/mosquitto.log", dir);
    return vg_testd_spawn(log, argv);
}

/* ---- the capture file --------------------------------------------------------------------- */

/* Every message the paho subscriber recorded so far, as a JSON array (the caller deletes it). */
static cJSON *captured(void)
{
    cJSON *arr = cJSON_CreateArray();
    FILE *f = fopen(capfile, "r");
    if (!f)
        return arr;
    static char line[1 << 21];
    while (fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line);
        if (o)
            cJSON_AddItemToArray(arr, o);
    }
    fclose(f);
    return arr;
}

/* Counts captured messages on topic whose payload contains needle (NULL: any). */
static int count_msgs(const cJSON *arr, const char *topic, const char *needle)
{
    int n = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, arr)
    {
        if (strcmp(vg_testd_jstr(m, "t"), topic) != 0)
            continue;
        if (!needle || strstr(vg_testd_jstr(m, "p"), needle))
            n++;
    }
    return n;
}

/* Waits up to ms for at least n messages on topic containing needle. Returns 0 or -1. */
static int wait_msgs(const char *topic, const char *needle, int n, int ms)
{
    double until = vg_now_ms() + ms;
    do {
        cJSON *arr = captured();
        int k = count_msgs(arr, topic, needle);
        cJSON_Delete(arr);
        if (k >= n)
            return 0;
        vg_testd_sleep_ms(100);
    } while (vg_now_ms() < until);
    fprintf(stderr, "timed out waiting for %d message(s) on %s with '%s'\n", n, topic,
            needle ? needle : "");
    return -1;
}

/* The `events` records of the demo stream (the source of truth), as an array. */
static cJSON *log_records(void)
{
    cJSON *all = cJSON_CreateArray();
    unsigned long long since = 0;
    for (int more = 1; more;) {
        char req[160];
        snprintf(req, sizeof req,
                 "{\"v\":1,\"op\":\"events\",\"name\":\"demo\",\"since\":%llu,\"limit\":1000}",
                 since);
        cJSON *r = call(req);
        assert_true(vg_testd_is_ok(r));
        cJSON *evs = cJSON_GetObjectItemCaseSensitive(r, "events"), *e;
        more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "more"));
        cJSON_ArrayForEach(e, evs)
        {
            since = (unsigned long long)vg_testd_jnum(e, "seq");
            cJSON_AddItemToArray(all, cJSON_Duplicate(e, 1));
        }
        if (cJSON_GetArraySize(evs) == 0)
            more = 0;
        cJSON_Delete(r);
    }
    return all;
}

static int count_log_events(const char *what)
{
    cJSON *recs = log_records();
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, recs)
    {
        if (!strcmp(vg_testd_jstr(e, "kind"), "event") && !strcmp(vg_testd_jstr(e, "event"), what))
            n++;
    }
    cJSON_Delete(recs);
    return n;
}

/* ---- fixture ------------------------------------------------------------------------------ */

static int setup(void **state)
{
    (void)state;
    if (vg_testd_need_tools() < 0 || access(VG_SOURCE_DIR "/models/demo/config.json", R_OK) != 0 ||
        vg_testd_sh(NULL, 0,
                    "command -v mosquitto && command -v mosquitto_pub && command -v "
                    "mosquitto_sub && " PY " -c 'import paho.mqtt.client' && command -v "
                    "mosquitto_passwd") != 0) {
        fprintf(stderr, "missing: vigild/vigil/ffmpeg, the demo model, mosquitto, "
                        "mosquitto-clients or python3-paho-mqtt (scripts/install-deps.sh)\n");
        return -1;
    }
    if (vg_testd_tmpdir("/tmp/vg-mqtt-XXXXXX", dir, model, media, rt, st, cmd_url) < 0)
        return -1;
    port = 21000 + (int)(getpid() % 3000) * 5;
    auth_port = port + 1;
    http_port = port + 2;
    src_port = port + 3;
    tls_port = port + 4;
    snprintf(conf, sizeof conf, "%s/vigild.conf", dir);
    vg_testd_write_file(conf, "");
    snprintf(capfile, sizeof capfile, "%s/capture.jsonl", dir);
    snprintf(brokerconf, sizeof brokerconf, "%s/mosquitto.conf", dir);
    snprintf(authconf, sizeof authconf, "%s/mosquitto-auth.conf", dir);
    snprintf(clipdir, sizeof clipdir, "%s/frigate", dir);
    char text[2048];
    /* Persistence saved at every change: the capture's session survives a SIGKILL. */
    snprintf(text, sizeof text,
             "listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n"
             "persistence_location %s/\nautosave_interval 1\nautosave_on_changes true\n%s",
             port, dir, geteuid() == 0 ? "user root\n" : "");
    vg_testd_write_file(brokerconf, text);
    vg_testd_sh(NULL, 0, "mosquitto_passwd -b -c %s/passwd vigil right-password >/dev/null 2>&1",
                dir);
    snprintf(text, sizeof text,
             "listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s/passwd\n%s", auth_port,
             dir, geteuid() == 0 ? "user root\n" : "");
    vg_testd_write_file(authconf, text);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vg_testd_kill_all(children, MAX_CHILDREN, &daemon_pid);
    kill_wait(&capture, SIGKILL);
    kill_wait(&httpd, SIGKILL);
    kill_wait(&broker, SIGKILL);
    kill_wait(&auth_broker, SIGKILL);
    kill_wait(&tls_broker, SIGKILL);
    if (getenv("VG_KEEP_TMP") == NULL && dir[0])
        vg_testd_sh(NULL, 0, "rm -rf %s", dir);
    return 0;
}

/* ---- the test ----------------------------------------------------------------------------- */

static void start_daemon(void)
{
    char log[400], url[128], frig[160], pw[400];
    snprintf(log, sizeof log, "%s/vigild.log", dir);
    snprintf(url, sizeof url, "mqtt_url=mqtt://127.0.0.1:%d", port);
    snprintf(frig, sizeof frig, "mqtt_frigate_url=http://127.0.0.1:%d", http_port);
    snprintf(pw, sizeof pw, "mqtt_client_id=vg-test-vigild-%d", port);
    const char *sets[] = {url,
                          pw,
                          frig,
                          "mqtt_frigate_questions=" QUESTION,
                          "mqtt_queue_max=1",
                          "allowed_protocols=udp,http",
                          "stream_stall_timeout_s=1.5",
                          "stream_max_new_tokens=32",
                          NULL};
    vg_testd_spec spec = {.log = log,
                          .conf = conf,
                          .model = VG_SOURCE_DIR "/models/demo",
                          .rt = rt,
                          .st = st,
                          .media = media,
                          .cmd_url = cmd_url,
                          .log_level = "info",
                          .sets = sets,
                          .call_timeout_ms = 10000};
    assert_int_equal(vg_testd_start(&spec, &daemon_pid), 0);
}

/* Every started/ended record of the log has its message on vigil/events; no id+type twice with
 * different content. */
static void check_events_against_log(void)
{
    cJSON *recs = log_records(), *arr = captured();
    const cJSON *e, *m;
    int n_started = 0, n_ended = 0;
    cJSON_ArrayForEach(e, recs)
    {
        if (strcmp(vg_testd_jstr(e, "kind"), "event") != 0)
            continue;
        int seq = (int)vg_testd_jnum(e, "seq");
        int started = !strcmp(vg_testd_jstr(e, "event"), "started");
        n_started += started;
        n_ended += !started;
        int found = 0;
        cJSON_ArrayForEach(m, arr)
        {
            if (strcmp(vg_testd_jstr(m, "t"), "vigil/events") != 0)
                continue;
            cJSON *p = cJSON_Parse(vg_testd_jstr(m, "p"));
            const cJSON *after = cJSON_GetObjectItemCaseSensitive(p, "after");
            char id[64];
            snprintf(id, sizeof id, "demo-%d", seq);
            if (started && !strcmp(vg_testd_jstr(p, "type"), "new") &&
                !strcmp(vg_testd_jstr(after, "id"), id))
                found = 1;
            if (!started && !strcmp(vg_testd_jstr(p, "type"), "end") &&
                (int)vg_testd_jnum(after, "end_seq") == seq)
                found = 1;
            cJSON_Delete(p);
        }
        if (!found)
            printf("record seq %d (%s) has no message on vigil/events\n", seq,
                   vg_testd_jstr(e, "event"));
        assert_true(found);
    }
    printf("log: %d started, %d ended; every one arrived on vigil/events\n", n_started, n_ended);
    assert_true(n_started >= 2 && n_ended >= 2);
    /* The same id and type never with different content. */
    int n = cJSON_GetArraySize(arr), dups = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *a = cJSON_GetArrayItem(arr, i);
        if (strcmp(vg_testd_jstr(a, "t"), "vigil/events") != 0)
            continue;
        cJSON *pa = cJSON_Parse(vg_testd_jstr(a, "p"));
        for (int j = i + 1; j < n; j++) {
            const cJSON *b = cJSON_GetArrayItem(arr, j);
            if (strcmp(vg_testd_jstr(b, "t"), "vigil/events") != 0)
                continue;
            cJSON *pb = cJSON_Parse(vg_testd_jstr(b, "p"));
            const cJSON *aa = cJSON_GetObjectItemCaseSensitive(pa, "after"),
                        *ab = cJSON_GetObjectItemCaseSensitive(pb, "after");
            if (!strcmp(vg_testd_jstr(pa, "type"), vg_testd_jstr(pb, "type")) &&
                !strcmp(vg_testd_jstr(aa, "id"), vg_testd_jstr(ab, "id"))) {
                dups++;
                assert_string_equal(vg_testd_jstr(a, "p"), vg_testd_jstr(b, "p"));
            }
            cJSON_Delete(pb);
        }
        cJSON_Delete(pa);
    }
    printf("%d message(s) arrived twice (at least once), each with the same content\n", dups);
    cJSON_Delete(recs);
    cJSON_Delete(arr);
}

static void check_discovery_and_active(void)
{
    cJSON *arr = captured();
    const cJSON *m;
    int configs = 0, on = -1, off_after_on = -1, i = 0;
    cJSON_ArrayForEach(m, arr)
    {
        const char *t = vg_testd_jstr(m, "t");
        if (!strncmp(t, "homeassistant/", 14) && strstr(t, "/vigil_demo/" SLUG "/config")) {
            cJSON *c = cJSON_Parse(vg_testd_jstr(m, "p"));
            assert_non_null(c);
            assert_string_equal(vg_testd_jstr(c, "availability_topic"), "vigil/available");
            assert_string_equal(vg_testd_jstr(c, "name"), QUESTION);
            const char *stt = vg_testd_jstr(c, "state_topic");
            if (strstr(t, "/binary_sensor/"))
                assert_string_equal(stt, "vigil/demo/" SLUG "/active");
            else if (strstr(t, "/image/"))
                assert_string_equal(vg_testd_jstr(c, "image_topic"),
                                    "vigil/demo/" SLUG "/snapshot");
            else
                assert_string_equal(stt, "vigil/demo/" SLUG "/event");
            assert_non_null(cJSON_GetObjectItemCaseSensitive(c, "device"));
            configs++;
            cJSON_Delete(c);
        }
        if (!strcmp(t, "vigil/demo/" SLUG "/active")) {
            if (!strcmp(vg_testd_jstr(m, "p"), "ON") && on < 0)
                on = i;
            if (!strcmp(vg_testd_jstr(m, "p"), "OFF") && on >= 0 && off_after_on < 0)
                off_after_on = i;
        }
        i++;
    }
    printf("discovery configs: %d; active ON at message %d, OFF at %d\n", configs, on,
           off_after_on);
    assert_true(configs >= 3);
    assert_true(on >= 0 && off_after_on > on);
    cJSON_Delete(arr);
    /* Retained (a live subscriber sees retain 0; a new one gets the stored value at once): the
     * discovery configs, the active state and the stream state, read with mosquitto_sub. */
    char out[4096] = "";
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "mosquitto_sub -p %d -t 'homeassistant/+/vigil_demo/" SLUG
                                 "/config' -C 3 -W 10 -F '%%t %%r' | sort",
                                 port),
                     0);
    assert_string_equal(out, "homeassistant/binary_sensor/vigil_demo/" SLUG "/config 1\n"
                             "homeassistant/event/vigil_demo/" SLUG "/config 1\n"
                             "homeassistant/image/vigil_demo/" SLUG "/config 1\n");
    /* The snapshot where the last event started: a retained JPEG that decodes (ffprobe). */
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "mosquitto_sub -p %d -t 'vigil/demo/" SLUG
                                 "/snapshot' -C 1 -W 10 -N > %s/snap.jpg",
                                 port, dir),
                     0);
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "ffprobe -v error -show_entries stream=codec_name,width,height "
                                 "-of csv=p=0 %s/snap.jpg",
                                 dir),
                     0);
    printf("snapshot: %s", out);
    assert_non_null(strstr(out, "mjpeg,"));
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "mosquitto_sub -p %d -t 'vigil/demo/" SLUG "/active' -C 1 -W 10",
                                 port),
                     0);
    assert_string_equal(out, "OFF\n");
    assert_int_equal(
        vg_testd_sh(out, sizeof out, "mosquitto_sub -p %d -t vigil/demo/state -C 1 -W 10", port),
        0);
    cJSON *s = cJSON_Parse(out);
    assert_string_equal(vg_testd_jstr(s, "stream"), "demo");
    cJSON_Delete(s);
}

static void test_live_stream_and_broker_restart(void **state)
{
    (void)state;
    broker = start_broker(brokerconf);
    char log[400];
    snprintf(log, sizeof log, "%s/capture.log", dir);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    char *cap_argv[] = {PY, MQTT_DIR "/mqtt_capture.py", ps, capfile, NULL};
    vg_testd_sleep_ms(300);
    capture = vg_testd_spawn(log, cap_argv);
    assert_int_equal(wait_msgs("test/capture-ready", NULL, 1, 20000), 0);
    start_daemon();
    assert_int_equal(wait_msgs("vigil/available", "online", 1, 20000), 0);

    /* watch as an MQTT 5 command, answered on the response topic with the correlation data. */
    char out[8192] = "";
    assert_int_equal(
        vg_testd_sh(out, sizeof out,
                    PY " " MQTT_DIR "/mqtt_cmd.py %d vigil/watch/set "
                       "'{\"name\":\"demo\",\"url\":\"udp://127.0.0.1:%d\",\"question\":\"" QUESTION
                       "\",\"fps\":2,\"window_s\":8,\"update_s\":1,\"max_pixels\":9216}'",
                    port, src_port),
        0);
    cJSON *r = cJSON_Parse(out);
    assert_string_equal(vg_testd_jstr(r, "corr"), "corr-42");
    assert_true(vg_testd_is_ok(cJSON_GetObjectItemCaseSensitive(r, "reply")));
    cJSON_Delete(r);
    vg_testd_sleep_ms(1000); /* the reader has opened its UDP socket */

    /* A red box from 4 s to 9 s and from 20 s to 26 s of the source. */
    int src = vg_testd_start_source(children, MAX_CHILDREN, src_port,
                                    "color=c=0x6a6a5a:size=160x120:rate=10,drawbox=x=50:y=40:w=26:"
                                    "h=24:color=0xE12323:t=fill:enable='between(t,4,9)+between(t,"
                                    "20,26)'");
    assert_true(src >= 0);
    assert_int_equal(wait_msgs("vigil/events", "\"type\":\"new\"", 1, 40000), 0);
    /* The stream kept a snapshot of the start (stream_snapshots_max, on by default). */
    assert_int_equal(wait_msgs("vigil/events", "\"has_snapshot\":true", 1, 5000), 0);
    assert_int_equal(wait_msgs("vigil/events", "\"type\":\"end\"", 1, 40000), 0);
    assert_int_equal(wait_msgs("vigil/demo/" SLUG "/active", "OFF", 2, 10000), 0);

    /* The second occurrence starts: the broker dies; it ends while the broker is away. */
    assert_int_equal(wait_msgs("vigil/events", "\"type\":\"new\"", 2, 60000), 0);
    int ended_before = count_log_events("ended");
    kill_wait(&broker, SIGKILL);
    printf("broker killed after the second `new`\n");
    double until = vg_now_ms() + 60000;
    while (count_log_events("ended") <= ended_before && vg_now_ms() < until)
        vg_testd_sleep_ms(200);
    assert_true(count_log_events("ended") > ended_before);
    printf("the stream's log has the second `ended`; restarting the broker\n");
    cJSON *info = call("{\"v\":1,\"op\":\"info\"}");
    const cJSON *mq = cJSON_GetObjectItemCaseSensitive(info, "mqtt");
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(mq, "connected")));
    printf("while away: queued %.0f, dropped %.0f\n", vg_testd_jnum(mq, "queued"),
           vg_testd_jnum(mq, "dropped"));
    cJSON_Delete(info);
    broker = start_broker(brokerconf);
    /* Each started/ended record of the log arrives (replayed from the log or resent from the
     * queue), whatever else arrives first. */
    cJSON *recs = log_records();
    const cJSON *e;
    cJSON_ArrayForEach(e, recs)
    {
        if (strcmp(vg_testd_jstr(e, "kind"), "event") != 0)
            continue;
        char needle[160];
        int seq = (int)vg_testd_jnum(e, "seq");
        if (!strcmp(vg_testd_jstr(e, "event"), "started"))
            snprintf(needle, sizeof needle,
                     "\"type\":\"new\",\"before\":null,\"after\":{\"id\":\"demo-%d\"", seq);
        else
            snprintf(needle, sizeof needle, "\"end_seq\":%d}}", seq);
        assert_int_equal(wait_msgs("vigil/events", needle, 1, 60000), 0);
    }
    cJSON_Delete(recs);
    vg_testd_kill_source(children, src);

    check_events_against_log();
    check_discovery_and_active();
    info = call("{\"v\":1,\"op\":\"info\"}");
    mq = cJSON_GetObjectItemCaseSensitive(info, "mqtt");
    printf("info.mqtt: connected %d, published %.0f, dropped %.0f, replayed %.0f, lost %.0f, "
           "reconnects %.0f\n",
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(mq, "connected")),
           vg_testd_jnum(mq, "published"), vg_testd_jnum(mq, "dropped"),
           vg_testd_jnum(mq, "replayed"), vg_testd_jnum(mq, "lost"),
           vg_testd_jnum(mq, "reconnects"));
    assert_true(vg_testd_jnum(mq, "dropped") > 0);
    assert_true(vg_testd_jnum(mq, "replayed") > 0);
    assert_true(vg_testd_jnum(mq, "reconnects") > 0);
    cJSON_Delete(info);
}

static void test_frigate_review(void **state)
{
    (void)state;
    assert_true(daemon_pid > 0);
    /* Frigate's recording route, served by a local HTTP server. */
    const double t0 = 1700000000.0, t1 = 1700000008.0;
    char path[600];
    snprintf(path, sizeof path, "%s/api/front/start/%.3f/end/%.3f", clipdir, t0, t1);
    assert_int_equal(vg_testd_sh(NULL, 0, "mkdir -p %s", path), 0);
    assert_int_equal(
        vg_testd_sh(NULL, 0,
                    "ffmpeg -nostdin -loglevel error -y -f lavfi -i "
                    "\"color=c=0x6a6a5a:size=160x120:rate=10,drawbox=x=50:y=40:w=26:h=24:color="
                    "0xE12323:t=fill:enable='between(t,2,5)'\" -t 8 -pix_fmt yuv420p %s/clip.mp4",
                    path),
        0);
    char log[400], ps[16];
    snprintf(log, sizeof log, "%s/httpd.log", dir);
    snprintf(ps, sizeof ps, "%d", http_port);
    char *argv[] = {PY, MQTT_DIR "/range_http.py", ps, clipdir, NULL};
    httpd = vg_testd_spawn(log, argv);
    /* Serving before the review goes out (python starts slowly under load). */
    double until = vg_now_ms() + 30000;
    while (vg_testd_sh(NULL, 0, "curl -sf -o /dev/null -r 0-99 http://127.0.0.1:%d%s/clip.mp4",
                       http_port, path + strlen(clipdir)) != 0 &&
           vg_now_ms() < until)
        vg_testd_sleep_ms(200);
    /* A `new` review is not acted on; the `end` one is. */
    const char *review_new =
        "{\"type\":\"new\",\"before\":null,\"after\":{\"id\":\"1700000000.0-abc123\","
        "\"camera\":\"front\",\"start_time\":1700000000.0,\"end_time\":null,"
        "\"severity\":\"alert\",\"data\":{\"detections\":[\"1700000000.0-x\"],\"objects\":"
        "[\"person\"]}}}";
    const char *review_end =
        "{\"type\":\"end\",\"before\":{},\"after\":{\"id\":\"1700000000.0-abc123\","
        "\"camera\":\"front\",\"start_time\":1700000000.0,\"end_time\":1700000008.0,"
        "\"severity\":\"alert\",\"data\":{\"detections\":[\"1700000000.0-x\"],\"objects\":"
        "[\"person\"]}}}";
    assert_int_equal(vg_testd_sh(NULL, 0, "mosquitto_pub -p %d -q 1 -t frigate/reviews -m '%s'",
                                 port, review_new),
                     0);
    assert_int_equal(vg_testd_sh(NULL, 0, "mosquitto_pub -p %d -q 1 -t frigate/reviews -m '%s'",
                                 port, review_end),
                     0);
    assert_int_equal(
        wait_msgs("vigil/events", "\"frigate_review_id\":\"1700000000.0-abc123\"", 1, 120000), 0);
    cJSON *arr = captured();
    const cJSON *m;
    int n = 0;
    cJSON_ArrayForEach(m, arr)
    {
        if (strcmp(vg_testd_jstr(m, "t"), "vigil/events") != 0 ||
            !strstr(vg_testd_jstr(m, "p"), "frigate_review_id"))
            continue;
        cJSON *p = cJSON_Parse(vg_testd_jstr(m, "p"));
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(p, "after");
        printf("frigate answer: %s\n", vg_testd_jstr(a, "text"));
        assert_string_equal(vg_testd_jstr(a, "stream"), "front");
        assert_string_equal(vg_testd_jstr(a, "state"), "completed");
        assert_string_equal(vg_testd_jstr(a, "job"), "frigate-1700000000.0-abc123-q0");
        assert_true(strlen(vg_testd_jstr(a, "text")) > 0);
        assert_true(vg_testd_jnum(a, "start_time") >= t0);
        n++;
        cJSON_Delete(p);
    }
    assert_int_equal(n, 1);
    /* The native job payloads went to vigil/jobs/<id>/. */
    assert_true(count_msgs(arr, "vigil/jobs/frigate-1700000000.0-abc123-q0/done", NULL) >= 1);
    cJSON_Delete(arr);
}

static void test_bad_input(void **state)
{
    (void)state;
    assert_true(daemon_pid > 0);
    static const struct {
        const char *topic, *payload, *code;
    } cases[] = {
        {"vigil/watch/set", "not json at all", "bad_json"},
        {"vigil/watch/set", "[1,2]", "bad_json"},
        {"vigil/watch/set", "{\"name\":\"x\"} trailing", "bad_json"},
        {"vigil/watch/set", "{\"op\":\"ask\",\"name\":\"x\"}", "bad_request"},
        {"vigil/watch/set", "{\"name\":\"x\",\"url\":\"/etc/passwd\",\"question\":\"q\"}",
         "forbidden"},
        {"vigil/unwatch/set", "{\"name\":\"no-such-stream\"}", "not_found"},
        {"vigil/ask/set", "{\"video\":\"/nope.mp4\"}", "bad_request"},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++)
        assert_int_equal(vg_testd_sh(NULL, 0, "mosquitto_pub -p %d -q 1 -t %s -m '%s'", port,
                                     cases[i].topic, cases[i].payload),
                         0);
    /* Oversized: 1.5 MiB, over max_message_size (1 MiB). */
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "head -c 1572864 /dev/zero | tr '\\0' x > %s/big && "
                                 "mosquitto_pub -p %d -q 1 -t vigil/ask/set -f %s/big",
                                 dir, port, dir),
                     0);
    /* Frigate reviews that cannot be used. */
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "mosquitto_pub -p %d -q 1 -t frigate/reviews -m "
                                 "'{\"type\":\"end\",\"after\":{\"id\":\"../../x\","
                                 "\"camera\":\"c\",\"start_time\":1,\"end_time\":2}}' && "
                                 "mosquitto_pub -p %d -q 1 -t frigate/reviews -m 'garbage'",
                                 port, port),
                     0);
    for (size_t i = 0; i < VG_ARRAY_LEN(cases); i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "\"code\":\"%s\"", cases[i].code);
        assert_int_equal(wait_msgs("vigil/reply", needle, 1, 20000), 0);
    }
    assert_int_equal(wait_msgs("vigil/reply", "\"code\":\"too_large\"", 1, 20000), 0);
    char out[4096];
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "grep -c 'command on vigil/.*/set refused' %s/vigild.log", dir),
                     0);
    printf("refused commands logged: %s", out);
    assert_true(atoi(out) >= (int)VG_ARRAY_LEN(cases) + 1);
    double until = vg_now_ms() + 20000;
    while (vg_testd_sh(NULL, 0,
                       "grep -q 'Frigate review on frigate/reviews has no usable' %s/vigild.log "
                       "&& grep -q 'is not a Frigate review' %s/vigild.log",
                       dir, dir) != 0 &&
           vg_now_ms() < until)
        vg_testd_sleep_ms(200);
    assert_int_equal(vg_testd_sh(NULL, 0,
                                 "grep -q 'Frigate review on frigate/reviews has no usable' "
                                 "%s/vigild.log && grep -q 'is not a Frigate review' %s/vigild.log",
                                 dir, dir),
                     0);
    /* Still serving, on both doors. */
    cJSON *info = call("{\"v\":1,\"op\":\"info\"}");
    assert_true(vg_testd_is_ok(info));
    const cJSON *mq = cJSON_GetObjectItemCaseSensitive(info, "mqtt");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(mq, "connected")));
    assert_true(vg_testd_jnum(mq, "command_errors") >= (double)VG_ARRAY_LEN(cases) + 1);
    cJSON_Delete(info);
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 PY " " MQTT_DIR "/mqtt_cmd.py %d vigil/unwatch/set "
                                    "'{\"name\":\"demo\"}'",
                                 port),
                     0);
    assert_non_null(strstr(out, "\"ok\": true"));
}

static void test_auth_refused(void **state)
{
    (void)state;
    auth_broker = start_broker(authconf);
    char d2[400], rt2[400], st2[400], log[400], url[128], cmd2[500], pwfile[400];
    snprintf(d2, sizeof d2, "%s/second", dir);
    snprintf(rt2, sizeof rt2, "%s/run", d2);
    snprintf(st2, sizeof st2, "%s/state", d2);
    snprintf(log, sizeof log, "%s/vigild-auth.log", dir);
    snprintf(cmd2, sizeof cmd2, "ipc://%s/vigil.cmd", rt2);
    snprintf(pwfile, sizeof pwfile, "%s/wrong-password", dir);
    vg_testd_sh(NULL, 0, "mkdir -p %s", d2);
    vg_testd_write_file(pwfile, "s3cret-but-wrong\n");
    snprintf(url, sizeof url, "mqtt_url=mqtt://127.0.0.1:%d", auth_port);
    char pwset[500];
    snprintf(pwset, sizeof pwset, "mqtt_password_file=%s", pwfile);
    const char *sets[] = {url, "mqtt_username=vigil", pwset, "mqtt_protocol=3.1.1", NULL};
    vg_testd_spec spec = {.log = log,
                          .conf = conf,
                          .model = VG_SOURCE_DIR "/models/demo",
                          .rt = rt2,
                          .st = st2,
                          .media = media,
                          .cmd_url = cmd2,
                          .log_level = "info",
                          .sets = sets,
                          .call_timeout_ms = 10000};
    pid_t pid = -1;
    assert_int_equal(vg_testd_start(&spec, &pid), 0);
    double until = vg_now_ms() + 20000;
    while (vg_testd_sh(NULL, 0, "grep -q 'refused the connection' %s", log) != 0 &&
           vg_now_ms() < until)
        vg_testd_sleep_ms(200);
    char out[1024] = "";
    vg_testd_sh(out, sizeof out, "grep 'refused the connection' %s | head -1", log);
    printf("%s", out);
    assert_non_null(strstr(out, "refused the connection"));
    cJSON *info = vg_testd_call(cmd2, "{\"v\":1,\"op\":\"info\"}", 20, 10000);
    assert_true(vg_testd_is_ok(info));
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(info, "mqtt"), "connected")));
    cJSON_Delete(info);
    assert_int_equal(vg_testd_stop(&pid, 2000, NULL), 0);
    assert_int_not_equal(vg_testd_sh(NULL, 0, "grep -q s3cret %s", log), 0);
    assert_int_equal(
        vg_testd_sh(NULL, 0, "! grep -q 'ERROR: AddressSanitizer\\|runtime error' %s", log), 0);
    kill_wait(&auth_broker, SIGTERM);
}

/* mqtts:// with a client certificate (mosquitto require_certificate), MQTT 3.1.1 and another
 * prefix: a third vigild connects, its retained availability is read over TLS with mosquitto_sub,
 * and a command gets its reply on <prefix>reply. */
static void test_tls_client_certificate(void **state)
{
    (void)state;
    char tls[400];
    snprintf(tls, sizeof tls, "%s/tls", dir);
    assert_int_equal(
        vg_testd_sh(NULL, 0,
                    "(mkdir -p %s && cd %s && "
                    "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
                    "-subj /CN=vg-test-ca && "
                    "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
                    "-subj /CN=localhost && "
                    "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext && "
                    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                    "-out server.pem -days 2 -extfile san.ext && "
                    "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
                    "-subj /CN=vigild && "
                    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                    "-out client.pem -days 2) >/dev/null 2>&1",
                    tls, tls),
        0);
    char cfg[400], text[2048];
    snprintf(cfg, sizeof cfg, "%s/mosquitto-tls.conf", dir);
    snprintf(text, sizeof text,
             "listener %d 127.0.0.1\ncafile %s/ca.pem\ncertfile %s/server.pem\nkeyfile "
             "%s/server.key\nrequire_certificate true\nuse_identity_as_username true\n"
             "allow_anonymous false\n%s",
             tls_port, tls, tls, tls, geteuid() == 0 ? "user root\n" : "");
    vg_testd_write_file(cfg, text);
    tls_broker = start_broker(cfg);
    char d3[400], rt3[420], st3[420], log[400], cmd3[500];
    snprintf(d3, sizeof d3, "%s/third", dir);
    snprintf(rt3, sizeof rt3, "%s/run", d3);
    snprintf(st3, sizeof st3, "%s/state", d3);
    snprintf(log, sizeof log, "%s/vigild-tls.log", dir);
    snprintf(cmd3, sizeof cmd3, "ipc://%s/vigil.cmd", rt3);
    vg_testd_sh(NULL, 0, "mkdir -p %s", d3);
    char url[128], ca[500], cert[500], key[500];
    snprintf(url, sizeof url, "mqtt_url=mqtts://localhost:%d", tls_port);
    snprintf(ca, sizeof ca, "mqtt_ca_file=%s/ca.pem", tls);
    snprintf(cert, sizeof cert, "mqtt_cert_file=%s/client.pem", tls);
    snprintf(key, sizeof key, "mqtt_key_file=%s/client.key", tls);
    const char *sets[] = {url, ca, cert, key, "mqtt_protocol=3.1.1", "mqtt_prefix=site1/vigil",
                          NULL};
    vg_testd_spec spec = {.log = log,
                          .conf = conf,
                          .model = VG_SOURCE_DIR "/models/demo",
                          .rt = rt3,
                          .st = st3,
                          .media = media,
                          .cmd_url = cmd3,
                          .log_level = "info",
                          .sets = sets,
                          .call_timeout_ms = 10000};
    pid_t pid = -1;
    assert_int_equal(vg_testd_start(&spec, &pid), 0);
    char sub[1200];
    snprintf(sub, sizeof sub,
             "mosquitto_sub -h localhost -p %d --cafile %s/ca.pem --cert %s/client.pem --key "
             "%s/client.key",
             tls_port, tls, tls, tls);
    char out[2048] = "";
    double until = vg_now_ms() + 30000;
    while (vg_now_ms() < until) {
        out[0] = 0;
        vg_testd_sh(out, sizeof out, "%s -t site1/vigil/available -C 1 -W 3", sub);
        if (!strcmp(out, "online\n"))
            break;
        vg_testd_sleep_ms(300);
    }
    assert_string_equal(out, "online\n");
    assert_int_equal(vg_testd_sh(out, sizeof out,
                                 "grep 'connected to localhost:%d (MQTT 3.1.1, TLS)' %s", tls_port,
                                 log),
                     0);
    printf("%s", out);
    /* A 3.1.1 command (no response topic): the reply on <prefix>reply. The subscriber is not
     * confirmed live before the command goes out, so the idempotent command is sent again until
     * a reply is seen. */
    char rfile[420];
    snprintf(rfile, sizeof rfile, "%s/tls-reply.txt", dir);
    for (int tries = 0; tries < 10; tries++) {
        vg_testd_sh(NULL, 0,
                    "%s -t site1/vigil/reply -C 1 -W 8 > %s & sleep 2; "
                    "mosquitto_pub -h localhost -p %d --cafile %s/ca.pem --cert %s/client.pem "
                    "--key %s/client.key -t site1/vigil/unwatch/set -m "
                    "'{\"id\":\"t1\",\"name\":\"nope\"}'; wait",
                    sub, rfile, tls_port, tls, tls, tls);
        if (vg_testd_sh(NULL, 0, "grep -q not_found %s", rfile) == 0)
            break;
    }
    assert_int_equal(vg_testd_sh(out, sizeof out, "cat %s", rfile), 0);
    printf("reply: %s", out);
    assert_non_null(strstr(out, "\"id\":\"t1\""));
    assert_non_null(strstr(out, "not_found"));
    assert_int_equal(vg_testd_stop(&pid, 2000, NULL), 0);
    assert_int_equal(
        vg_testd_sh(NULL, 0, "! grep -q 'ERROR: AddressSanitizer\\|runtime error' %s", log), 0);
    kill_wait(&tls_broker, SIGTERM);
}

static void test_stop(void **state)
{
    (void)state;
    assert_true(daemon_pid > 0);
    int before = 0;
    cJSON *arr = captured();
    before = count_msgs(arr, "vigil/available", "offline");
    cJSON_Delete(arr);
    assert_int_equal(vg_testd_stop(&daemon_pid, 3000, NULL), 0);
    assert_int_equal(wait_msgs("vigil/available", "offline", before + 1, 10000), 0);
    char out[64] = "";
    assert_int_equal(
        vg_testd_sh(out, sizeof out, "mosquitto_sub -p %d -t vigil/available -C 1 -W 10", port), 0);
    assert_string_equal(out, "offline\n");
    assert_int_equal(vg_testd_check_log(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_live_stream_and_broker_restart),
        cmocka_unit_test(test_frigate_review),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_auth_refused),
        cmocka_unit_test(test_tls_client_certificate),
        cmocka_unit_test(test_stop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
