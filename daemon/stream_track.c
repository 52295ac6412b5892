/*
 * stream_track.c: the event transitions of one standing question (pure; part of vg_daemon_core).
 *
 * Each answer of a live stream is parsed into events (vg_answer_parse) and fed here with the
 * window the model saw: an event present at the window's newest edge starts (or continues) the
 * question's track; a track whose event is gone ends. The result is `started` and `ended`
 * transitions in stream seconds; the inference thread (stream_infer.c) adds the wall-clock times
 * and publishes them. No state outside the vg_stream_track the caller owns; any thread.
 */
#include "daemon.h"

#include "common.h"
#include "pipeline.h"

#include <math.h>
#include <stdio.h>

int vg_stream_track_update(vg_stream_track *t, const vg_event *ev, size_t n, double base,
                           double win_start, double win_end, double gap,
                           vg_stream_transition out[2])
{
    if (!t || !out || (n > 0 && !ev) || !(win_end >= win_start) || !(gap >= 0))
        return VG_EINVAL;
    int present = 0, overlap = 0;
    double ps = 0, pe = 0, oe = 0;
    const char *plabel = "";
    for (size_t i = 0; i < n; i++) {
        double s = base + ev[i].start, e = base + ev[i].end;
        if (!isfinite(s) || !isfinite(e))
            continue;
        if (e < s) {
            double x = s;
            s = e;
            e = x;
        }
        if (e < win_start || s > win_end)
            continue; /* outside what the model saw */
        s = VG_MAX(s, win_start);
        e = VG_MIN(e, win_end);
        if (e >= win_end - gap && (!present || e > pe)) {
            present = 1;
            ps = s;
            pe = e;
            plabel = ev[i].label;
        } else if (t->active && s <= t->end + gap && e >= t->start && (!overlap || e > oe)) {
            overlap = 1;
            oe = e;
        }
    }
    int k = 0;
    if (t->active && present && ps > t->end + gap) {
        out[k].kind = VG_TRANSITION_ENDED;
        out[k].start = t->start;
        out[k].end = t->end;
        snprintf(out[k].label, sizeof out[k].label, "%s", t->label);
        k++;
        t->active = 0;
    }
    if (!t->active && present) {
        t->active = 1;
        t->start = ps;
        t->end = pe;
        snprintf(t->label, sizeof t->label, "%s", plabel);
        out[k].kind = VG_TRANSITION_STARTED;
        out[k].start = ps;
        out[k].end = pe;
        snprintf(out[k].label, sizeof out[k].label, "%s", plabel);
        return k + 1;
    }
    if (t->active && present) {
        t->end = VG_MAX(t->end, pe);
        return k;
    }
    if (t->active) {
        out[k].kind = VG_TRANSITION_ENDED;
        out[k].start = t->start;
        out[k].end = overlap ? VG_MAX(oe, t->start) : t->end;
        snprintf(out[k].label, sizeof out[k].label, "%s", t->label);
        t->active = 0;
        k++;
    }
    return k;
}
