/*
 * test_streams_keyframe.c: joining a live H.264 MPEG-TS stream between keyframes (issue 13, item
 * 13). An ffmpeg started by the test sends x264 with a keyframe every 250 frames at 10 fps (every
 * 25 s, x264's default GOP; scene cuts off so the keyframes come exactly then) over UDP on
 * loopback; vigild watches it 2 s later, so it joins mid-GOP and the container gives no frame
 * size until the keyframe at 25 s. The stream must go `live` on that keyframe without a stall or a
 * reconnect (the old reader stalled on "invalid frame size 0x0" and reconnected with backoff,
 * joining between keyframes each time), and the events of the demo model must carry stream times
 * from the stream's own PTS: stream time 0 is the first decoded frame, the keyframe at source time
 * 25 s, so the red box drawn from source time 28 s to 34 s is the event from 3 s to 9 s (within
 * 2 s, as test_streams_e2e's camera test). FFmpeg's complaints about the packets before the
 * keyframe stay a few lines in vigild's log (pipeline/avlog.c's rate limit). The wait is bounded
 * by the stall timeout with data as progress: 10 s into it the stream is still `connecting`
 * (the stall timeout is 1.5 s), and when the source goes silent it stalls with a sentence.
 */
#define _XOPEN_SOURCE 700
#include "stream_watch.h"

#include "../support/vg_testd.h"
#include "common.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static int group_setup(void **state)
{
    (void)state;
    static const char *const sets[] = {"allowed_protocols=udp", "stream_stall_timeout_s=1.5",
                                       "stream_max_new_tokens=32", NULL};
    return sw_setup("/tmp/vg-stream-key-XXXXXX", sets, "info");
}

static int group_teardown(void **state)
{
    (void)state;
    return sw_teardown();
}

/* Starts ffmpeg sending x264 with a keyframe every 25 s (lavfi: the picture) to UDP port. */
static pid_t start_long_gop(int port, const char *lavfi)
{
    char out[128];
    snprintf(out, sizeof out, "udp://127.0.0.1:%d?pkt_size=1316", port);
    char *argv[] = {"ffmpeg",       "-nostdin",   "-loglevel",   "error",       "-re",
                    "-f",           "lavfi",      "-i",          (char *)lavfi, "-c:v",
                    "libx264",      "-tune",      "zerolatency", "-g",          "250",
                    "-x264-params", "scenecut=0", "-pix_fmt",    "yuv420p",     "-f",
                    "mpegts",       out,          NULL};
    return sw_spawn("ffmpeg.log", argv);
}

static void test_join_between_keyframes(void **state)
{
    (void)state;
    int port = 22001 + (int)(getpid() % 19000) * 2;
    pid_t src = start_long_gop(port, "color=c=0x6a6a5a:size=160x120:rate=10,drawbox=x=50:y=40:w=26:"
                                     "h=24:color=0xE12323:t=fill:enable='between(t,28,34)'");
    assert_true(src > 0);
    vg_testd_sleep_ms(2000); /* past the first keyframe: the watch joins mid-GOP */

    int from = cJSON_GetArraySize(sw_seen);
    char req[512];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"watch\",\"name\":\"gop\",\"url\":\"udp://127.0.0.1:%d\","
             "\"question\":\"When is the red box visible?\",\"fps\":2,\"window_s\":8,"
             "\"update_s\":1,\"max_pixels\":9216}",
             port);
    double t_watch = vg_now_ms();
    cJSON *r = sw_call(req);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);

    int live = sw_wait(from, "gop", "state", "live", 40000);
    double waited = (vg_now_ms() - t_watch) / 1000.0;
    if (live < 0)
        sw_dump(from, "gop");
    assert_true(live >= 0);
    printf("live %.1f s after the watch (the next keyframe was due about 23 s after it)\n", waited);
    /* The scenario held: the stream could only start at the keyframe 25 s into the source. */
    assert_true(waited > 15.0);
    /* No stall and no reconnect on the way. */
    if (sw_find(from, "gop", "state", "stalled") >= 0 ||
        sw_find(from, "gop", "state", "reconnecting") >= 0)
        sw_dump(from, "gop");
    assert_int_equal(sw_find(from, "gop", "state", "stalled"), -1);
    assert_int_equal(sw_find(from, "gop", "state", "reconnecting"), -1);

    /* The box's event, in stream time from the PTS of the first decoded frame (source 25 s). */
    int started = -1, ended = -1;
    double until = vg_now_ms() + 40000;
    while ((started < 0 || ended < 0) && vg_now_ms() < until) {
        sw_pump(100);
        for (int i = live; i < cJSON_GetArraySize(sw_seen); i++) {
            const cJSON *e = cJSON_GetArrayItem(sw_seen, i);
            if (strcmp(vg_testd_jstr(e, "stream"), "gop") ||
                strcmp(vg_testd_jstr(e, "kind"), "event"))
                continue;
            if (started < 0 && !strcmp(vg_testd_jstr(e, "event"), "started"))
                started = i;
            if (ended < 0 && !strcmp(vg_testd_jstr(e, "event"), "ended"))
                ended = i;
        }
    }
    if (started < 0 || ended < 0)
        sw_dump(from, "gop");
    assert_true(started >= 0 && ended >= 0);
    const cJSON *es = cJSON_GetArrayItem(sw_seen, started),
                *ee = cJSON_GetArrayItem(sw_seen, ended);
    printf("started %.1f s (truth 3.0), ended %.1f s (truth 9.0), stream seconds\n",
           vg_testd_jnum(es, "start"), vg_testd_jnum(ee, "end"));
    assert_true(fabs(vg_testd_jnum(es, "start") - 3.0) <= 2.0);
    assert_true(fabs(vg_testd_jnum(ee, "end") - 9.0) <= 2.0);

    /* The packets before the keyframe make FFmpeg complain about each one (the parser, the probing
     * decoder): vigild's log keeps a few lines of each kind, not hundreds (594 lines before). */
    char cnt[64] = "";
    vg_testd_sh(cnt, sizeof cnt, "grep -c '^<[34]>ffmpeg' '%s/vigild.log'", sw_dir);
    printf("%ld FFmpeg error and warning lines in vigild's log\n", strtol(cnt, NULL, 10));
    assert_true(strtol(cnt, NULL, 10) < 50);

    cJSON *si = sw_stream("gop");
    assert_non_null(si);
    assert_true(vg_testd_jnum(si, "reconnects") == 0);
    assert_true(vg_testd_jnum(si, "pairs") >= 4);
    cJSON_Delete(si);
    cJSON_Delete(sw_call("{\"v\":1,\"op\":\"unwatch\",\"name\":\"gop\"}"));
    assert_true(sw_wait(live, "gop", "state", "ended", 10000) >= 0);
    sw_kill(src);
}

/* Waiting for the keyframe is bounded by the stall timeout, with data as progress: 10 s without a
 * frame (the stall timeout is 1.5 s) is no stall while the source sends, and silence is one. */
static void test_silence_while_waiting(void **state)
{
    (void)state;
    int port = 22001 + (int)(getpid() % 19000) * 2 + 1;
    pid_t src = start_long_gop(port, "testsrc2=size=160x120:rate=10");
    assert_true(src > 0);
    vg_testd_sleep_ms(2000);
    int from = cJSON_GetArraySize(sw_seen);
    char req[512];
    snprintf(req, sizeof req,
             "{\"v\":1,\"op\":\"watch\",\"name\":\"quiet\",\"url\":\"udp://127.0.0.1:%d\","
             "\"question\":\"What moves?\",\"fps\":2,\"max_pixels\":9216}",
             port);
    cJSON *r = sw_call(req);
    assert_true(vg_testd_is_ok(r));
    cJSON_Delete(r);
    sw_pump(10000);
    cJSON *si = sw_stream("quiet");
    assert_string_equal(vg_testd_jstr(si, "state"), "connecting");
    assert_true(vg_testd_jnum(si, "frames") == 0);
    cJSON_Delete(si);
    assert_int_equal(sw_find(from, "quiet", "state", "stalled"), -1);
    sw_kill(src);
    int st = sw_wait(from, "quiet", "state", "stalled", 10000);
    if (st < 0)
        sw_dump(from, "quiet");
    assert_true(st >= 0);
    const char *detail = vg_testd_jstr(cJSON_GetArrayItem(sw_seen, st), "detail");
    printf("silence while waiting for the keyframe: %s\n", detail);
    assert_non_null(strstr(detail, "keyframe"));
    assert_int_equal(sw_find(from, "quiet", "state", "live"), -1);
    cJSON_Delete(sw_call("{\"v\":1,\"op\":\"unwatch\",\"name\":\"quiet\"}"));
    assert_true(sw_wait(from, "quiet", "state", "ended", 10000) >= 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_between_keyframes),
        cmocka_unit_test(test_silence_while_waiting),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
