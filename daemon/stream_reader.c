/*
 * stream_reader.c: the reader thread of one live stream (one thread per stream).
 *
 * At start it loads the stream's log (its last sequence number and recent records, cut back to
 * log_max records) and opens it for appending, handing both to the loop (M_LOADED). Then it opens
 * the URL (stop flag, stall timeout), reads frames with vg_media_next_frame resized to the
 * stream's smart_resize size, samples at the stream's fps by presentation time (the first frame at
 * or after each 1/fps tick), patchifies each pair of sampled frames (one temporal slice) and hands
 * it to the stream inference thread through a small bounded queue (when the model falls behind,
 * the newest pair is dropped and counted: memory stays bounded). A drop or a stall (no frame for
 * stream_stall_timeout_s) publishes `stalled`, then `reconnecting` with exponential backoff (0.5 s
 * doubling to 30 s); a file that ends is `ended`. A live stream joined between keyframes has no
 * frame size until its next keyframe: the session reads on until then (vg_media_wait_size: data
 * arriving is progress, silence for the stall timeout is a stall) instead of reconnecting. Details
 * published with a state never carry the URL's credentials (post_state_clean).
 *
 * Stream time is the first session's presentation time minus its first frame's; after a reconnect
 * it continues from the last frame plus the wall-clock gap, so it never goes back. The same rebase
 * happens within a session when the stream's own clock jumps (PTS_BACK_S back, or PTS_JUMP_S
 * further ahead than the wall clock moved): MPEG-TS's 33-bit PTS wraps every 26.5 hours and
 * FFmpeg unwraps only the first wrap of a session (it shifts later timestamps by 2^33 ticks, a
 * 26.5-hour leap), cameras restart their clocks, and concatenated recordings start again; without
 * the rebase a live stream would drop every frame as "earlier than the last" for a day, or leap
 * a day ahead. Counted in `discontinuities`. Files (not live) are paced at their native rate
 * times the stream's speed knob (replays, soak tests).
 *
 * The thread reads only the stream's immutable fields (its copy of the configuration taken at
 * watch time, log path included), writes its counters, and reports through post_state,
 * post_simple and the M_LOADED message. Its last message is M_READER_DONE.
 */
#define _XOPEN_SOURCE 700
#include "streams_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define MOD           "streams"
#define BACKOFF_MIN_S 0.5
#define BACKOFF_MAX_S 30.0
/* A discontinuity of the stream's clock: a frame this much earlier than the previous one (decoders
 * return frames in presentation order, so only a reset goes back), or this much later than the
 * previous one plus the wall-clock time between them (a paced file's wall clock barely moves
 * between frames, so a gap of more than PTS_JUMP_S in a replayed file's timestamps is closed) */
#define PTS_BACK_S 1.0
#define PTS_JUMP_S 30.0

/* post_state with a detail that may quote the URL (FFmpeg's and the media layer's sentences do):
 * its credentials never reach the event log, subscribers or `streams` (vg_url_redact). */
static void post_state_clean(stream *s, enum stream_state st, const char *detail)
{
    char clean[600];
    vg_url_redact(detail, clean, sizeof clean);
    post_state(s, st, clean);
}

/* Sleeps up to seconds, returning early (1) when the stream is stopped. */
static int nap(stream *s, double seconds)
{
    double until = vg_now_ms() + seconds * 1000.0;
    while (!atomic_load(&s->stop)) {
        double left = until - vg_now_ms();
        if (left <= 0)
            return 0;
        uv_sleep((unsigned)VG_MIN(left, 50.0) + 1);
    }
    return 1;
}

/* ===================================================================================================
 * Reader thread.
 */
typedef struct load_ctx {
    char **lines;
    unsigned long long *seq;
    size_t n, head;
    unsigned long long last;
} load_ctx;

static void on_log_record(const char *json, size_t len, void *opaque)
{
    load_ctx *lc = opaque;
    cJSON *o = cJSON_ParseWithLength(json, len);
    const cJSON *sq = cJSON_GetObjectItemCaseSensitive(o, "seq");
    if (cJSON_IsNumber(sq) && sq->valuedouble >= 1 && sq->valuedouble < 9e15) {
        unsigned long long v = (unsigned long long)sq->valuedouble;
        char *copy = strdup(json);
        if (copy) {
            size_t at = (lc->head + lc->n) % EV_RING_CAP;
            if (lc->n == EV_RING_CAP) {
                free(lc->lines[lc->head]);
                at = lc->head;
                lc->head = (lc->head + 1) % EV_RING_CAP;
            } else {
                lc->n++;
            }
            lc->lines[at] = copy;
            lc->seq[at] = v;
        }
        if (v > lc->last)
            lc->last = v;
    }
    cJSON_Delete(o);
}

static void mkdir_p(const char *path)
{
    char tmp[VG_CFG_STR + 16];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        mkdir(tmp, 0755);
        *p = '/';
    }
    mkdir(tmp, 0750);
}

/* Loads the stream's log (recent records, last sequence number), opens it for appending and hands
 * both to the loop. */
static void load_log(stream *s)
{
    vg_streams *ss = s->ss;
    const char *path = s->log_path;
    char err[512] = "";
    mkdir_p(s->log_dir);
    smsg *m = calloc(1, sizeof *m);
    load_ctx lc = {calloc(EV_RING_CAP, sizeof(char *)),
                   calloc(EV_RING_CAP, sizeof(unsigned long long)), 0, 0, 0};
    if (!m || !lc.lines || !lc.seq) {
        free(m);
        free(lc.lines);
        free(lc.seq);
        post_simple(s, M_LOADED);
        return;
    }
    vg_journal_stats st = {0};
    if (vg_journal_load(path, on_log_record, &lc, &st, err, sizeof err) < 0)
        vg_log(VG_LOG_WARNING, MOD, "stream %s: cannot read its log: %s", s->name, err);
    /* Newest log_max records on disk; the writer thread cuts again after log_max / 2 appends. */
    vg_journal_compaction cp = {.every = s->log_max ? VG_MAX(s->log_max / 2, (size_t)1) : 0,
                                .keep_last = s->log_max};
    size_t kept = 0;
    if (s->log_max && st.good > s->log_max) {
        if (vg_journal_compact(path, &cp, &kept, err, sizeof err) < 0)
            vg_log(VG_LOG_WARNING, MOD, "stream %s: cannot compact its log: %s", s->name, err);
        else
            vg_log(VG_LOG_INFO, MOD, "stream %s: log cut to its newest %zu of %zu records", s->name,
                   kept, st.good);
    }
    m->type = M_LOADED;
    m->s = s;
    m->last_seq = lc.last;
    /* Oldest first. */
    m->lines = calloc(EV_RING_CAP, sizeof(char *));
    m->line_seq = calloc(EV_RING_CAP, sizeof(unsigned long long));
    if (m->lines && m->line_seq)
        for (size_t i = 0; i < lc.n; i++) {
            size_t at = (lc.head + i) % EV_RING_CAP;
            m->lines[i] = lc.lines[at];
            m->line_seq[i] = lc.seq[at];
            lc.lines[at] = NULL;
        }
    m->n_lines = m->lines && m->line_seq ? lc.n : 0;
    for (size_t i = 0; i < EV_RING_CAP; i++)
        free(lc.lines[i]);
    free(lc.lines);
    free(lc.seq);
    if (vg_journal_open(path, &cp, &m->log, err, sizeof err) < 0) {
        vg_log(VG_LOG_WARNING, MOD, "stream %s: events will not be logged: %s", s->name, err);
        m->log = NULL;
    }
    vg_mailbox_post(ss->mb, m);
}

typedef struct session {
    vg_media *m;
    int W, H, gh, gw;
    uint8_t *frame[2];
    double ft[2];
    int nf;
} session;

static int session_open(stream *s, session *se, char *err, size_t errlen)
{
    vg_streams *ss = s->ss;
    const vg_model_info *mi = ss->mi;
    vg_media_params mp = vg_media_default_params();
    mp.protocol_whitelist = vg_media_policy_whitelist(s->policy);
    mp.allow_url = vg_media_policy_allow;
    mp.open_file = vg_media_policy_open; /* the checked descriptor, never the path again */
    mp.allow_opaque = s->policy;
    mp.stop = &s->stop;
    mp.rtsp_transport = strcmp(s->rtsp_transport, "auto") ? s->rtsp_transport : NULL;
    int stall_ms = s->stall_ms;
    mp.read_timeout_ms = stall_ms;
    /* Probing a live MPEG-TS stream reads up to several seconds of it; a deadline that cuts it
     * short leaves an error in the I/O context that ends the session after the first frame. */
    mp.open_timeout_ms = VG_MAX(stall_ms, 10000);
    int rc = vg_media_open(s->resolved, &mp, &se->m, err, errlen);
    if (rc < 0)
        return rc;
    /* Joined between keyframes (H.264 in MPEG-TS): no frame size yet. Read on to the next
     * keyframe rather than reconnect, which would join between keyframes again. */
    rc = vg_media_wait_size(se->m, err, errlen);
    if (rc < 0)
        return rc;
    const vg_media_info *in = vg_media_get_info(se->m);
    int factor = mi->patch_size * mi->spatial_merge_size;
    rc = vg_smart_resize(in->height, in->width, factor, s->min_pixels, s->max_pixels, &se->H,
                         &se->W, err, errlen);
    if (rc < 0)
        return rc;
    se->gh = se->H / mi->patch_size;
    se->gw = se->W / mi->patch_size;
    size_t bytes = (size_t)se->W * (size_t)se->H * 3;
    se->frame[0] = malloc(bytes);
    se->frame[1] = malloc(bytes);
    if (!se->frame[0] || !se->frame[1])
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for %dx%d frames", se->W, se->H);
    return 0;
}

static void session_close(session *se)
{
    vg_media_close(se->m);
    free(se->frame[0]);
    free(se->frame[1]);
    memset(se, 0, sizeof *se);
}

/* Patchifies the session's two frames and queues them for the inference thread. */
static void emit_pair(stream *s, session *se, double wall, int paced)
{
    const vg_model_info *mi = s->ss->mi;
    uint8_t *both = malloc((size_t)se->W * se->H * 3 * 2);
    pair_item *p = calloc(1, sizeof *p);
    if (!both || !p) {
        free(both);
        free(p);
        atomic_fetch_add(&s->dropped, 1);
        return;
    }
    size_t fb = (size_t)se->W * se->H * 3;
    snap_keep_frame(s, se->ft[0], se->frame[0], se->W, se->H);
    snap_keep_frame(s, se->ft[1], se->frame[1], se->W, se->H);
    memcpy(both, se->frame[0], fb);
    memcpy(both + fb, se->frame[1], fb);
    int rc = vg_patchify(both, 2, se->H, se->W, mi->patch_size, mi->temporal_patch_size,
                         mi->spatial_merge_size, mi->image_mean, mi->image_std, &p->patches,
                         &p->rows, &p->cols);
    free(both);
    if (rc < 0) {
        free(p);
        atomic_fetch_add(&s->dropped, 1);
        return;
    }
    p->gh = se->gh;
    p->gw = se->gw;
    p->t0 = se->ft[0];
    p->t1 = se->ft[1];
    p->wall = wall;
    p->paced = paced;
    if (vg_queue_push(s->pairs, p, 0) < 0) {
        pair_free(p);
        atomic_fetch_add(&s->dropped, 1);
        return;
    }
    atomic_fetch_add(&s->n_pairs, 1);
    vg_streams *ss = s->ss;
    pthread_mutex_lock(&ss->mu);
    ss->work = 1;
    pthread_cond_signal(&ss->cond);
    pthread_mutex_unlock(&ss->mu);
}

void *reader_main(void *arg)
{
    stream *s = arg;
    load_log(s);
    post_state(s, SS_CONNECTING, NULL); /* not the URL: it may carry credentials */
    double backoff = BACKOFF_MIN_S;
    double last_t = 0, last_mono = 0, next_tick = 0;
    int have_last = 0, file_ended = 0, first = 1;
    char err[512];
    while (!atomic_load(&s->stop)) {
        if (!first) {
            char d[64];
            snprintf(d, sizeof d, "in %.1f s", backoff);
            post_state(s, SS_RECONNECTING, d);
            if (nap(s, backoff))
                break;
            backoff = VG_MIN(backoff * 2, BACKOFF_MAX_S);
            atomic_fetch_add(&s->reconnects, 1);
        }
        first = 0;
        session se;
        memset(&se, 0, sizeof se);
        err[0] = 0;
        int rc = session_open(s, &se, err, sizeof err);
        if (rc < 0) {
            session_close(&se);
            if (atomic_load(&s->stop))
                break;
            post_state_clean(s, SS_STALLED, err[0] ? err : vg_strerror(rc));
            continue;
        }
        const vg_media_info *in = vg_media_get_info(se.m);
        int paced = !in->is_live && !s->is_url;
        double sess_first = NAN, sess_offset = 0, sess_mono0 = 0, prev_pts = NAN;
        /* Live input: the wall time of stream time t is t + the smallest (arrival - t) seen this
         * session. Frames are never early, only late (the demuxer's probing buffers the first
         * seconds of a stream and hands them over at once), so the smallest offset is the one of
         * frames delivered on time. Paced files arrive exactly when due. */
        double wall_off = NAN;
        int live = 0;
        while (!atomic_load(&s->stop)) {
            double pts;
            err[0] = 0;
            rc = vg_media_next_frame(se.m, se.W, se.H, se.frame[se.nf], &pts, err, sizeof err);
            if (rc < 0)
                break;
            double mono = vg_now_ms();
            if (isnan(sess_first)) {
                sess_first = pts;
                sess_offset = have_last ? last_t + VG_MAX((mono - last_mono) / 1000.0, 0.001) : 0;
                sess_mono0 = mono;
                if (!have_last)
                    next_tick = 0;
            }
            if (have_last && !isnan(prev_pts)) {
                const double dp = pts - prev_pts, wall = (mono - last_mono) / 1000.0;
                if (dp < -PTS_BACK_S || dp > VG_MAX(wall, 0.0) + PTS_JUMP_S) {
                    /* the stream's clock jumped: continue from the last frame plus the wall-clock
                     * gap, as after a reconnect */
                    sess_first = pts;
                    sess_offset = last_t + VG_MAX(wall, 0.001);
                    sess_mono0 = mono;
                    atomic_fetch_add(&s->discontinuities, 1);
                    vg_log(VG_LOG_WARNING, MOD,
                           "stream %s: its presentation time jumped by %+.1f s; stream time "
                           "continues at %.1f s",
                           s->name, dp, sess_offset);
                }
            }
            prev_pts = pts;
            double t = sess_offset + (pts - sess_first);
            if (have_last && t <= last_t)
                continue; /* a repeated or reordered timestamp */
            if (paced) {
                double due = sess_mono0 + (pts - sess_first) * 1000.0 / s->speed;
                if (due > mono && nap(s, (due - mono) / 1000.0))
                    break;
            }
            last_t = t;
            last_mono = vg_now_ms();
            have_last = 1;
            if (!paced) {
                double off = unix_now() - t;
                if (isnan(wall_off) || off < wall_off)
                    wall_off = off;
            }
            atomic_fetch_add(&s->frames, 1);
            if (!live) {
                live = 1;
                backoff = BACKOFF_MIN_S;
                char d[96];
                snprintf(d, sizeof d, "%dx%d sampled at %g fps", se.W, se.H, s->fps);
                post_state(s, SS_LIVE, d);
            }
            if (t + 1e-6 < next_tick)
                continue;
            double step = 1.0 / s->fps;
            while (next_tick <= t + 1e-6)
                next_tick += step;
            se.ft[se.nf++] = t;
            if (se.nf == 2) {
                emit_pair(s, &se, paced ? unix_now() : se.ft[1] + wall_off, paced);
                se.nf = 0;
            }
        }
        session_close(&se);
        if (atomic_load(&s->stop))
            break;
        if (rc == VG_EPIPE && !s->is_url) {
            file_ended = 1;
            atomic_store(&s->eof, 1); /* stream_infer.c ends the open events */
            break;
        }
        post_state_clean(s, SS_STALLED,
                         rc == VG_ETIMEDOUT ? "no frame within stream_stall_timeout_s"
                         : rc == VG_EPIPE   ? "the stream ended"
                                            : (err[0] ? err : vg_strerror(rc)));
    }
    post_state(s, SS_ENDED, file_ended ? "end of file" : "unwatched");
    post_simple(s, M_READER_DONE);
    return NULL;
}
