/*
 * stream_track.c: the events of one standing question (pure; part of vg_daemon_core).
 *
 * Each answer of a live stream is parsed into events (vg_answer_parse), checked against the window
 * the model was asked about (vg_stream_track_check) and fed here (vg_stream_track_update). A single
 * answer is never trusted on its own: the accepted ranges vote on a timeline of VG_TRACK_BIN
 * bins, every answer voting on every bin of its window, and an event is a run of bins that enough
 * answers (confirm) and at least half of those that saw them stated present, runs closer than
 * merge_gap being one event. This is the hysteresis alerting systems use against flapping, applied
 * to the times the model stated rather than to the times of the answers: the published start and
 * end are the model's boundaries (refined while later windows still see them), and the answers'
 * own confidence (vg_qa_answer.score) is averaged over the bins of the event.
 *
 * Invariants: bins [lo, hi) are held in a ring of cap bins (absolute bin b at b % cap); bins before
 * lo are forgotten (the horizon is longer than a window, so no answer can vote on them any more);
 * runs ending before scan_from are done with. The state is the caller's vg_stream_track; any
 * thread.
 */
#include "daemon.h"

#include "common.h"
#include "pipeline.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BIN          VG_TRACK_BIN
#define MAX_RUNS     64
#define MIN_GAP_BINS 10  /* a gap of 1 s inside a run separates its blocks (refine) */
#define REFINE_MIN   0.5 /* s: a start that moves this much is published again (UPDATE) */

vg_track_params vg_track_default_params(double window_s, double fps)
{
    vg_track_params p;
    p.confirm = 2;
    p.min_duration = 1.0;
    p.hold = 2.0;
    p.merge_gap = 3.0;
    p.tolerance = fps > 0 ? 2.0 / fps : 1.0;
    p.horizon = (window_s > 0 ? window_s : 16.0) + 8.0;
    return p;
}

int vg_stream_track_check(const vg_event *ev, size_t n, double win_start, double win_end,
                          double tolerance, vg_event *out, vg_track_checks *c)
{
    if ((n > 0 && (!ev || !out)) || !(win_end >= win_start) || !(tolerance >= 0))
        return VG_EINVAL;
    vg_track_checks dummy = {0};
    if (!c)
        c = &dummy;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        vg_event e = ev[i];
        if (e.flags & VG_EVENT_CONTRADICTED) {
            c->contradictory++;
            continue;
        }
        if (e.flags & VG_EVENT_REVERSED) {
            c->reversed++;
            continue;
        }
        if (!isfinite(e.start) || !isfinite(e.end) || e.end < e.start ||
            e.start <= win_start - tolerance || e.end >= win_end + tolerance) {
            c->out_of_window++;
            continue;
        }
        if (e.start < win_start || e.end > win_end) {
            c->clamped++;
            e.start = VG_MAX(e.start, win_start);
            e.end = VG_MIN(e.end, win_end);
            if (e.end < e.start) /* an instant just past one edge */
                e.start = e.end = e.start > win_end ? win_end : win_start;
        }
        out[k++] = e;
    }
    return (int)k;
}

int vg_stream_track_init(vg_stream_track *t, const vg_track_params *p)
{
    if (!t || !p)
        return VG_EINVAL;
    vg_track_params d = vg_track_default_params(16.0, 2.0);
    memset(t, 0, sizeof *t);
    t->p = *p;
    if (t->p.confirm < 1 || t->p.confirm > 1000)
        t->p.confirm = d.confirm;
    if (!(t->p.min_duration >= 0) || t->p.min_duration > 3600)
        t->p.min_duration = d.min_duration;
    if (!(t->p.hold >= 0) || t->p.hold > 3600)
        t->p.hold = d.hold;
    if (!(t->p.merge_gap >= 0) || t->p.merge_gap > 3600)
        t->p.merge_gap = d.merge_gap;
    if (!(t->p.tolerance >= 0) || t->p.tolerance > 3600)
        t->p.tolerance = d.tolerance;
    if (!(t->p.horizon > 0) || t->p.horizon > 7200)
        t->p.horizon = d.horizon;
    /* Votes are needed as far back as a window reaches, plus the time an end waits. */
    double span = t->p.horizon + VG_MAX(t->p.hold, t->p.merge_gap) + t->p.min_duration + 2.0;
    t->cap = (size_t)ceil(span / BIN) + 2;
    t->yes = calloc(t->cap, sizeof *t->yes);
    t->seen = calloc(t->cap, sizeof *t->seen);
    t->score = calloc(t->cap, sizeof *t->score);
    t->obs = calloc(VG_TRACK_OBS, sizeof *t->obs);
    if (!t->yes || !t->seen || !t->score || !t->obs) {
        vg_stream_track_free(t);
        return VG_ENOMEM;
    }
    t->lo = t->hi = LONG_MIN;
    t->scan_from = -INFINITY;
    return 0;
}

void vg_stream_track_free(vg_stream_track *t)
{
    if (!t)
        return;
    free(t->yes);
    free(t->seen);
    free(t->score);
    free(t->obs);
    t->yes = t->seen = NULL;
    t->score = NULL;
    t->obs = NULL;
}

static size_t slot(const vg_stream_track *t, long b)
{
    long m = b % (long)t->cap;
    return (size_t)(m < 0 ? m + (long)t->cap : m);
}

static int bin_on(const vg_stream_track *t, long b)
{
    if (b < t->lo || b >= t->hi)
        return 0;
    size_t i = slot(t, b);
    return t->yes[i] >= t->p.confirm && 2 * (int)t->yes[i] >= (int)t->seen[i];
}

/* Every bin of [from, to) (seconds) has been seen by confirm answers and none is on. A bin not
 * voted on yet is undecided. */
static int decided_off(const vg_stream_track *t, double from, double to)
{
    long b0 = (long)floor(from / BIN + 1e-9), b1 = (long)ceil(to / BIN - 1e-9);
    if (b1 > t->hi)
        return 0;
    for (long b = VG_MAX(b0, t->lo); b < b1; b++)
        if (bin_on(t, b) || t->seen[slot(t, b)] < t->p.confirm)
            return 0;
    return 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The boundaries of the run [s, e] as the answers state them: the medians of the starts and the
 * ends of the ranges that overlap it, a start counted where it lies between merge_gap before the
 * run and the end of its first block of on bins (first_end), and inside its window by more than
 * the tolerance (a range starting at its window's start may have begun before); an end likewise
 * between the start of the run's last block (last_start) and merge_gap after it (a range ending
 * at its window's end goes on). A boundary without such a statement keeps the run's. */
static void refine(const vg_stream_track *t, double first_end, double last_start, double *s,
                   double *e)
{
    double st[VG_TRACK_OBS], en[VG_TRACK_OBS];
    size_t ns = 0, ne = 0;
    double lo = *s - t->p.merge_gap, hi = *e + t->p.merge_gap, tol = t->p.tolerance;
    for (size_t i = 0; i < t->obs_n; i++) {
        const double *o = t->obs[i];
        if (o[1] < lo || o[0] > hi)
            continue;
        if (o[0] > o[2] + tol && o[0] >= lo && o[0] <= first_end)
            st[ns++] = o[0];
        if (o[1] < o[3] - tol && o[1] <= hi && o[1] >= last_start)
            en[ne++] = o[1];
    }
    /* Of two middle values, the one that makes the event shorter: an event is claimed where the
     * statements agree most (and the models seen state ends late rather than early). */
    if (ns > 0) {
        qsort(st, ns, sizeof *st, cmp_double);
        *s = st[ns / 2];
    }
    if (ne > 0) {
        qsort(en, ne, sizeof *en, cmp_double);
        *e = en[(ne - 1) / 2];
    }
    if (*e < *s)
        *e = *s;
}

typedef struct run {
    long b0, b1;   /* on bins [b0, b1), gaps shorter than merge_gap inside */
    long first_b1; /* the end of its first block of on bins */
    long last_b0;  /* the start of its last block */
    double s, e;   /* the bins' times (the transitions' logic) */
    double rs, re; /* the boundaries the answers state (refine; what is published) */
    double score;
} run;

/* The runs of on bins from scan_from on, merged across gaps shorter than merge_gap. */
static size_t find_runs(const vg_stream_track *t, run *r, size_t cap)
{
    long b = VG_MAX(t->lo, isfinite(t->scan_from) ? (long)ceil(t->scan_from / BIN - 1e-9) : t->lo);
    size_t n = 0;
    long gap_bins = (long)floor(t->p.merge_gap / BIN + 1e-9);
    for (; b < t->hi; b++) {
        if (!bin_on(t, b))
            continue;
        if (n > 0 && b - r[n - 1].b1 < gap_bins) {
            if (b - r[n - 1].b1 >= MIN_GAP_BINS)
                r[n - 1].last_b0 = b; /* a gap inside the run */
            else if (r[n - 1].last_b0 == r[n - 1].b0)
                r[n - 1].first_b1 = b + 1;
            r[n - 1].b1 = b + 1;
            continue;
        }
        if (n == cap)
            break;
        r[n].b0 = r[n].last_b0 = b;
        r[n].b1 = r[n].first_b1 = b + 1;
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        double ss = 0, ny = 0;
        for (long k = r[i].b0; k < r[i].b1; k++) {
            size_t j = slot(t, k);
            if (bin_on(t, k)) {
                ss += t->score[j];
                ny += t->yes[j];
            }
        }
        r[i].rs = r[i].s = r[i].b0 * BIN;
        r[i].re = r[i].e = r[i].b1 * BIN;
        refine(t, r[i].first_b1 * BIN, r[i].last_b0 * BIN, &r[i].rs, &r[i].re);
        r[i].score = ny > 0 ? ss / ny : 0.0;
    }
    return n;
}

static void emit(vg_stream_track *t, vg_stream_transition *out, int *k, int kind, double score)
{
    vg_stream_transition *o = &out[(*k)++];
    o->kind = kind;
    o->start = t->start;
    o->end = t->end;
    o->score = score;
    snprintf(o->text, sizeof o->text, "%s", t->text);
}

int vg_stream_track_update(vg_stream_track *t, const vg_event *ev, size_t n, double win_start,
                           double win_end, double score, const char *text,
                           vg_stream_transition *out)
{
    if (!t || !t->yes || !out || (n > 0 && !ev) || !isfinite(win_start) || !isfinite(win_end) ||
        !(win_end >= win_start) || win_end / BIN > 1e15 || win_start < 0)
        return VG_EINVAL;
    if (!isfinite(score))
        score = 0;
    long b0 = (long)floor(win_start / BIN + 1e-9), b1 = (long)ceil(win_end / BIN - 1e-9);
    if (b1 <= b0)
        b1 = b0 + 1;
    /* Advance the ring to the window's newest bin (clearing the slots it reuses). */
    if (t->hi == LONG_MIN)
        t->lo = t->hi = b0;
    if (b1 > t->hi) {
        for (long b = VG_MAX(t->hi, b1 - (long)t->cap); b < b1; b++) {
            size_t j = slot(t, b);
            t->yes[j] = t->seen[j] = 0;
            t->score[j] = 0;
        }
        t->hi = b1;
        t->lo = VG_MAX(t->lo, t->hi - (long)t->cap);
    }
    /* Votes. */
    int any = 0;
    for (long b = VG_MAX(b0, t->lo); b < b1; b++) {
        size_t j = slot(t, b);
        double c = (b + 0.5) * BIN;
        int yes = 0;
        for (size_t i = 0; i < n && !yes; i++) {
            double s = ev[i].start, e = ev[i].end;
            if (!isfinite(s) || !isfinite(e) || e < s)
                continue;
            if (e - s < BIN)
                yes = b == (long)floor(s / BIN + 1e-9);
            else
                yes = c > s - BIN / 2 + 1e-9 && c < e + BIN / 2 - 1e-9;
        }
        if (t->seen[j] < 65535)
            t->seen[j]++;
        if (yes && t->yes[j] < 65535) {
            t->yes[j]++;
            t->score[j] += (float)score;
            any = 1;
        }
    }
    if (any && text)
        snprintf(t->text, sizeof t->text, "%s", text);
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(ev[i].start) || !isfinite(ev[i].end) || ev[i].end < ev[i].start)
            continue;
        double *o = t->obs[t->obs_head];
        o[0] = ev[i].start;
        o[1] = ev[i].end;
        o[2] = win_start;
        o[3] = win_end;
        t->obs_head = (t->obs_head + 1) % VG_TRACK_OBS;
        t->obs_n = VG_MIN(t->obs_n + 1, (size_t)VG_TRACK_OBS);
    }

    /* Transitions. */
    run r[MAX_RUNS];
    size_t nr = find_runs(t, r, MAX_RUNS);
    int k = 0;
    size_t i = 0;
    double wait = VG_MAX(t->p.hold, t->p.merge_gap);
    if (t->active) {
        if (nr > 0 && r[0].s <= t->run_end + t->p.merge_gap) {
            /* The active event, as the votes see it now. Its start is kept when the run reaches
             * back to the oldest bin held (the votes before it are forgotten). */
            if (r[0].b0 > t->lo)
                t->start = r[0].rs;
            t->end = VG_MAX(r[0].re, t->start);
            t->run_end = r[0].e;
            if (fabs(t->start - t->pub_start) >= REFINE_MIN) {
                t->pub_start = t->start;
                emit(t, out, &k, VG_TRANSITION_UPDATE, r[0].score);
            }
            t->score_sum = r[0].score;
            t->score_n = 1;
            i = 1;
        }
        if (i < nr || decided_off(t, t->run_end, t->run_end + wait)) {
            emit(t, out, &k, VG_TRANSITION_ENDED, t->score_n ? t->score_sum / t->score_n : 0);
            t->active = 0;
            t->scan_from = t->run_end + wait;
            if (i < nr && r[i].s < t->scan_from)
                t->scan_from = r[i].s; /* the next run is already there */
        } else {
            return k;
        }
    }
    for (; i < nr && k + 2 <= VG_TRACK_MAX_OUT; i++) {
        if (r[i].s < t->scan_from)
            continue;
        int complete = i + 1 < nr || decided_off(t, r[i].e, r[i].e + wait);
        if (r[i].e - r[i].s < t->p.min_duration - 1e-9) {
            if (!complete)
                break;
            t->suppressed++;
            t->scan_from = r[i].e;
            continue;
        }
        t->active = 1;
        t->start = t->pub_start = r[i].rs;
        t->end = r[i].re;
        t->run_end = r[i].e;
        t->score_sum = r[i].score;
        t->score_n = 1;
        emit(t, out, &k, VG_TRANSITION_STARTED, r[i].score);
        if (!complete)
            break;
        emit(t, out, &k, VG_TRANSITION_ENDED, r[i].score);
        t->active = 0;
        t->scan_from = t->run_end + wait;
        if (i + 1 < nr && r[i + 1].s < t->scan_from)
            t->scan_from = r[i + 1].s;
    }
    return k;
}

int vg_stream_track_finish(vg_stream_track *t, vg_stream_transition *out)
{
    if (!t || !out)
        return VG_EINVAL;
    if (!t->active)
        return 0;
    int k = 0;
    emit(t, out, &k, VG_TRANSITION_ENDED, t->score_n ? t->score_sum / t->score_n : 0);
    t->active = 0;
    t->scan_from = t->run_end + VG_MAX(t->p.hold, t->p.merge_gap);
    return 1;
}

/* ------------------------------------------------------------------------------------------------
 * Labels.
 */

static int word_in(const char *w, size_t n, const char *const *list)
{
    for (; *list; list++)
        if (strlen(*list) == n && !strncasecmp(w, *list, n))
            return 1;
    return 0;
}

/* Copies the words of s[len] from the first that is not in skip up to the first in stop (or
 * punctuation) into out; returns the length. */
static size_t phrase(const char *s, size_t len, const char *const *skip, const char *const *stop,
                     char *out, size_t cap)
{
    size_t i = 0, b = 0, e = 0;
    int started = 0;
    while (i < len) {
        while (i < len && isspace((unsigned char)s[i]))
            i++;
        size_t ws = i;
        while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '\'' ||
                           ((unsigned char)s[i] & 0x80)))
            i++;
        size_t wn = i - ws;
        if (wn == 0) /* punctuation ends the phrase */
            break;
        if (!started) {
            if (word_in(s + ws, wn, skip))
                continue;
            started = 1;
            b = ws;
        }
        if (word_in(s + ws, wn, stop))
            break;
        e = i;
    }
    size_t n = started && e > b ? e - b : 0;
    if (n >= cap)
        n = cap - 1;
    while (n > 0 && ((unsigned char)s[b + n] & 0xC0) == 0x80) /* keep UTF-8 whole */
        n--;
    memcpy(out, s + b, n);
    out[n] = 0;
    return n;
}

void vg_stream_label(const char *question, const char *answer, char *out, size_t cap)
{
    static const char *const skip[] = {
        "when", "where", "at",   "what", "which", "time", "times", "moment", "moments", "is",
        "are",  "was",   "were", "does", "do",    "did",  "can",   "the",    "a",       "an",
        "any",  "there", "in",   "this", "video", "tell", "me",    "show",   NULL};
    static const char *const stop[] = {
        "is",     "are",     "was",     "were",   "visible", "appear", "appears", "appeared",
        "seen",   "present", "shown",   "show",   "shows",   "enter",  "enters",  "leave",
        "leaves", "happen",  "happens", "occur",  "occurs",  "start",  "starts",  "begin",
        "begins", "in",      "on",      "during", "from",    "at",     "between", "move",
        "moves",  "moving",  "there",   "can",    "be",      "do",     "does",    NULL};
    if (!out || cap == 0)
        return;
    out[0] = 0;
    size_t n = 0;
    if (question)
        n = phrase(question, strlen(question), skip, stop, out, VG_MIN(cap, (size_t)48));
    if (n == 0 && answer)
        n = phrase(answer, strlen(answer), skip, stop, out, VG_MIN(cap, (size_t)48));
    if (n == 0 && question)
        snprintf(out, cap, "%.47s", question);
}

/* Appends s[n] to out[cap] at *len (truncating at a UTF-8 boundary). */
static void put(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    if (*len + 1 >= cap)
        return;
    if (*len + n + 1 > cap) {
        n = cap - 1 - *len;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = 0;
}

void vg_stream_text(const char *answer, const vg_event *ev, size_t n, double base, char *out,
                    size_t cap)
{
    if (!out || cap == 0)
        return;
    out[0] = 0;
    if (!answer)
        return;
    size_t len = 0, i = 0, alen = strlen(answer);
    while (i < alen) {
        const char *p = answer + i;
        int prev_ok = i == 0 || !(isalnum((unsigned char)p[-1]) || p[-1] == '.' || p[-1] == ':');
        if (!isdigit((unsigned char)*p) || !prev_ok) {
            put(out, cap, &len, p, 1);
            i++;
            continue;
        }
        size_t j = 0, dec = 0;
        while (isdigit((unsigned char)p[j]))
            j++;
        if (p[j] == '.' && isdigit((unsigned char)p[j + 1])) {
            j++;
            while (isdigit((unsigned char)p[j])) {
                j++;
                dec++;
            }
        }
        int next_ok = !(isalnum((unsigned char)p[j]) || p[j] == ':' ||
                        (p[j] == '.' && isdigit((unsigned char)p[j + 1])));
        double v = strtod(p, NULL);
        int hit = 0;
        for (size_t k = 0; k < n && next_ok && !hit; k++)
            hit = fabs(ev[k].start - base - v) < 5e-4 || fabs(ev[k].end - base - v) < 5e-4;
        if (hit && j < 32) {
            char num[64];
            int w = snprintf(num, sizeof num, "%.*f", (int)VG_MAX(dec, (size_t)1), v + base);
            put(out, cap, &len, num, (size_t)VG_MAX(w, 0));
        } else {
            put(out, cap, &len, p, j);
        }
        i += j;
    }
}
