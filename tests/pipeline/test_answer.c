/*
 * test_answer.c: vg_answer_parse on a table of answers (formats that must give events, with their
 * times and labels, and answers that must give none), then random and mutated input that must
 * never crash or produce an invalid event.
 */
#include "tests.h"

#include "common.h"
#include "pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ev_exp {
    double s, e;
    const char *label; /* exact label, or NULL: not checked */
} ev_exp;

typedef struct answer_case {
    const char *text;
    int n;
    ev_exp ev[3];
} answer_case;

static const answer_case k_cases[] = {
    /* The demo model's answer. */
    {"The red box is visible from 1.0 to 3.0 seconds.",
     1,
     {{1.0, 3.0, "The red box is visible from 1.0 to 3.0 seconds"}}},
    {"12.5 - 15.0 seconds: a man opens the door.", 1, {{12.5, 15.0, "a man opens the door"}}},
    {"A car passes from 12.5 to 15.0 seconds.", 1, {{12.5, 15.0, NULL}}},
    {"The dog barks between 3 and 5 s.", 1, {{3, 5, "The dog barks between 3 and 5 s"}}},
    {"00:12.50 - 00:15.00 a bird lands", 1, {{12.5, 15.0, "a bird lands"}}},
    {"01:02:03 - 01:02:10: fireworks", 1, {{3723, 3730, "fireworks"}}},
    {"12.5s-15s: door opens", 1, {{12.5, 15, "door opens"}}},
    {"- 1:05 \xe2\x80\x93 1:10 goal scored", 1, {{65, 70, "goal scored"}}},
    {"<12.5 seconds> a car appears", 1, {{12.5, 12.5, "a car appears"}}},
    {"<1.4 seconds>-<2.5 seconds>: a person waves", 1, {{1.4, 2.5, "a person waves"}}},
    {"The ball bounces at 12.5 seconds.", 1, {{12.5, 12.5, "The ball bounces at 12.5 seconds"}}},
    {"A car enters at 3 s and leaves at around 7.5 s.", 1, {{3, 7.5, NULL}}},
    {"The blue box appears at 0:07 and disappears at 0:12.", 1, {{7, 12, NULL}}},
    {"The car is at 3 s and the bus at 5 s.", 2, {{3, 3, NULL}, {5, 5, NULL}}},
    {"It happens at about 1 minute 30 seconds.", 1, {{90, 90, NULL}}},
    {"from 1 hour 2 minutes 3 seconds to 1 hour 3 minutes", 1, {{3723, 3780, NULL}}},
    {"Visible during [1.0, 3.0] seconds.", 1, {{1, 3, NULL}}},
    {"The red box is visible from the 1.0 second mark to the 3.0 second mark.", 1, {{1, 3, NULL}}},
    {"It flashes at the 5-second mark.", 1, {{5, 5, NULL}}},
    {"The red box, with no border, is visible from 1 to 3 seconds.", 1, {{1, 3, NULL}}},
    {"1. 0.0-2.0 s: intro\n2. 2.0-5.0 s: car\n3. 5.0-7.5 s: outro",
     3,
     {{0, 2, "intro"}, {2, 5, "car"}, {5, 7.5, "outro"}}},
    {"First the door opens from 1 to 2 seconds. Then a cat walks in from 4.5 to 6 seconds.",
     2,
     {{1, 2, "First the door opens from 1 to 2 seconds"},
      {4.5, 6, "Then a cat walks in from 4.5 to 6 seconds"}}},
    {"The red box is visible from 0.5 to 2.5 seconds, and the blue box from 3.0 to 4.5 seconds.",
     2,
     {{0.5, 2.5, NULL}, {3.0, 4.5, NULL}}},
    {"A person runs from 2 to 3 minutes.", 1, {{120, 180, NULL}}},
    {"00:05 a dog barks\n00:09 it stops", 2, {{5, 5, "a dog barks"}, {9, 9, "it stops"}}},
    /* JSON. */
    {"```json\n{\"00:01-00:03\": \"a car\", \"00:05-00:07\": \"a dog\"}\n```",
     2,
     {{1, 3, "a car"}, {5, 7, "a dog"}}},
    {"[{\"start\": 1, \"end\": 3, \"label\": \"x\"}, {\"start\": \"00:04\", \"end\": \"00:06.5\", "
     "\"event\": \"y\"}]",
     2,
     {{1, 3, "x"}, {4, 6.5, "y"}}},
    {"Here you go:\n```json\n[{\"timestamp\": [2.5, 4], \"caption\": \"jump\"}]\n```\nDone.",
     1,
     {{2.5, 4, "jump"}}},
    {"{\"events\": [{\"time\": \"3 - 5 seconds\", \"description\": \"a ball\"}]}",
     1,
     {{3, 5, "a ball"}}},
    {"{\"12.5s-15s\": \"caf\\u00e9 opens\"}", 1, {{12.5, 15, "caf\xc3\xa9 opens"}}},
    {"[{\"start_time\": 7, \"end_time\": 9, \"action\": \"wave\", \"confidence\": \"high\"}]",
     1,
     {{7, 9, "wave"}}},
    /* Nothing stated: no event. */
    {"There is no red box in the video.", 0, {{0, 0, NULL}}},
    {"No, I cannot see any red box.", 0, {{0, 0, NULL}}},
    {"The red box does not appear between 1 and 3 seconds.", 0, {{0, 0, NULL}}},
    {"The video is 30 seconds long.", 0, {{0, 0, NULL}}},
    {"It lasts for 2 to 3 seconds.", 0, {{0, 0, NULL}}},
    {"There are 3-5 people in the room.", 0, {{0, 0, NULL}}},
    {"Between 3 and 5 cars pass by.", 0, {{0, 0, NULL}}},
    {"The answer is 42. Version 3.5 of the model.", 0, {{0, 0, NULL}}},
    {"The clock shows 12:345.", 0, {{0, 0, NULL}}},
    {"{\"1\": \"first\", \"2\": \"second\"}", 0, {{0, 0, NULL}}},
    {"[1, 2, 3]", 0, {{0, 0, NULL}}},
    {"Scores: 3 - 5", 0, {{0, 0, NULL}}},
    {"The box isn't visible until 5 seconds.", 0, {{0, 0, NULL}}},
    {"No, it doesn't appear from 1 to 3 seconds.", 0, {{0, 0, NULL}}},
    {"A 5-second clip.", 0, {{0, 0, NULL}}},
    {"Between 1, 2 and 3 people (4, 5) are there.", 0, {{0, 0, NULL}}},
    {"The file is video_2024.mp4, encoded with x264 at 30 fps.", 0, {{0, 0, NULL}}},
    {"", 0, {{0, 0, NULL}}},
};

void test_answer_table(void **state)
{
    (void)state;
    int ok = 0, total = (int)VG_ARRAY_LEN(k_cases);
    for (int c = 0; c < total; c++) {
        const answer_case *k = &k_cases[c];
        vg_event *ev = NULL;
        size_t n = 99;
        assert_int_equal(vg_answer_parse(k->text, &ev, &n), 0);
        int good = (int)n == k->n;
        for (size_t i = 0; good && i < n; i++) {
            if (fabs(ev[i].start - k->ev[i].s) > 1e-9 || fabs(ev[i].end - k->ev[i].e) > 1e-9)
                good = 0;
            if (k->ev[i].label && strcmp(ev[i].label, k->ev[i].label))
                good = 0;
        }
        if (!good) {
            printf("answer case %d: '%s' gave %zu events (expected %d):\n", c, k->text, n, k->n);
            for (size_t i = 0; i < n; i++)
                printf("  [%g, %g] '%s'\n", ev[i].start, ev[i].end, ev[i].label);
        }
        ok += good;
        if (n == 0)
            assert_null(ev);
        free(ev);
    }
    printf("answer parsing: %d/%d table cases\n", ok, total);
    assert_int_equal(ok, total);
    vg_event *ev = (vg_event *)&ok;
    size_t n = 5;
    assert_int_equal(vg_answer_parse(NULL, &ev, &n), 0);
    assert_int_equal(n, 0);
    assert_null(ev);
    assert_int_equal(vg_answer_parse("x", NULL, &n), VG_EINVAL);
}

static void check_events(const char *text)
{
    vg_event *ev = NULL;
    size_t n = 0;
    int rc = vg_answer_parse(text, &ev, &n);
    assert_true(rc == 0 || rc == VG_ENOMEM);
    for (size_t i = 0; i < n; i++) {
        assert_true(isfinite(ev[i].start) && isfinite(ev[i].end));
        assert_true(ev[i].start >= 0 && ev[i].start <= ev[i].end);
        assert_true(memchr(ev[i].label, 0, sizeof ev[i].label) != NULL);
    }
    free(ev);
}

void test_answer_fuzz(void **state)
{
    (void)state;
    uint32_t s = 12345;
    char buf[512];
    const char alphabet[] = "0123456789:.-<> s\n{}[]\",\\u```json toandbetweenatno";
    for (int it = 0; it < 20000; it++) {
        size_t len = 0;
        if (it % 2) {
            /* Mutated table case. */
            const char *src = k_cases[(size_t)it % VG_ARRAY_LEN(k_cases)].text;
            len = strlen(src);
            memcpy(buf, src, len);
            for (int m = 0; m < 4 && len; m++) {
                s = s * 1103515245u + 12345u;
                buf[(s >> 8) % len] = alphabet[(s >> 20) % (sizeof alphabet - 1)];
            }
            s = s * 1103515245u + 12345u;
            len = len ? (s >> 8) % (len + 1) : 0; /* truncate anywhere */
        } else {
            s = s * 1103515245u + 12345u;
            len = (s >> 8) % 200;
            for (size_t i = 0; i < len; i++) {
                s = s * 1103515245u + 12345u;
                buf[i] = (it % 4) ? alphabet[(s >> 16) % (sizeof alphabet - 1)]
                                  : (char)(1 + (s >> 16) % 255);
            }
        }
        buf[len] = 0;
        check_events(buf);
    }
    /* Deep nesting, long inputs, unterminated strings and escapes. */
    char *deep = malloc(200001);
    assert_non_null(deep);
    memset(deep, '[', 100000);
    memset(deep + 100000, ']', 100000);
    deep[200000] = 0;
    check_events(deep);
    memset(deep, '{', 200000);
    check_events(deep);
    for (size_t i = 0; i < 200000; i++)
        deep[i] = "from 1 to 2 seconds. "[i % 21];
    vg_event *ev = NULL;
    size_t n = 0;
    assert_int_equal(vg_answer_parse(deep, &ev, &n), 0);
    assert_true(n > 0 && n <= 4096);
    free(ev);
    free(deep);
    check_events("{\"00:01-00:02\": \"abc\\");
    check_events("{\"00:01-00:02\": \"\\ud800\\u0000x\"}");
    check_events("```json\n[{\"start\": 1e308, \"end\": -5}]");
    check_events("at 99999999999999999999999 seconds");
    check_events("<<<<12 seconds>>>> - <");
}
