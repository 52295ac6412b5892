/*
 * eval.h: `vigil eval`, the temporal-grounding benchmark of whatever model vigild serves, and the
 * scoring functions it is built from (exposed for tests/eval/).
 *
 * A benchmark file is JSON Lines in the Charades-STA style: one object per line with "video" (a
 * path, relative to the file's directory, or a URL), "query" and, for a positive, "start" and
 * "end" in seconds; a line without start/end expects no event (a negative). Other keys are allowed;
 * "duration" (seconds) is used by the video-blind baseline when present.
 *
 * Everything here is single-threaded and allocates with malloc; *_free(NULL) is a no-op. Errors
 * are negative VG_E* codes with a sentence in err[errlen].
 */
#ifndef VG_TOOLS_EVAL_H
#define VG_TOOLS_EVAL_H

#include <stddef.h>

/* Options `vigil` has parsed before the command name. */
typedef struct vg_eval_conn {
    const char *cmd_url;    /* the daemon's command socket */
    int reply_timeout_ms;   /* bound on each request/reply */
    int json;               /* --json given before the command */
    const char *events_url; /* the daemon's event socket (eval --live) */
} vg_eval_conn;

/* vigil eval FILE.jsonl [OPTIONS]: argv[0] is "eval". Returns the exit status: 0 when every line
 * was scored, 1 when some lines failed (the results are still printed) or the daemon was lost, 2
 * on a usage error. */
int vg_cmd_eval(int argc, char **argv, const vg_eval_conn *conn);

/* vigil eval --live FILE.jsonl [OPTIONS] (eval_live.c; vg_cmd_eval hands argv over when --live is
 * among the arguments): every video is watched as a live stream replayed at --speed, its published
 * events scored at event level (docs/eval.md, "Live streams"). Same exit statuses. */
int vg_cmd_eval_live(int argc, char **argv, const vg_eval_conn *conn);

/* ---------------------------------------------------------------------------------------------------
 * Scoring.
 */
/* Temporal IoU of the predicted [ps, pe] and the true [ts, te] (each reordered if reversed):
 * intersection over the span from the earliest start to the latest end, as Charades-STA computes
 * it. Two identical instants score 1; a non-finite bound scores 0. Result in [0, 1]. */
double vg_eval_tiou(double ps, double pe, double ts, double te);

/* Running sums of one model's (or baseline's) results. Zero-initialise. */
typedef struct vg_eval_acc {
    size_t n_positive, n_negative, n_errors;
    size_t hit03, hit05, hit07; /* positives with tIoU >= 0.3, 0.5, 0.7 */
    size_t negative_correct;    /* negatives with no predicted event */
    double sum_tiou;            /* over positives */
} vg_eval_acc;

void vg_eval_acc_positive(vg_eval_acc *a, double tiou);
void vg_eval_acc_negative(vg_eval_acc *a, int correct);
void vg_eval_acc_error(vg_eval_acc *a);

typedef struct vg_eval_metrics {
    size_t n_positive, n_negative, n_errors;
    double mean_tiou;     /* over positives; NAN when there are none */
    double r03, r05, r07; /* fraction of positives with tIoU >= 0.3 / 0.5 / 0.7; NAN when none */
    double negative_accuracy; /* fraction of negatives without a predicted event; NAN when none */
    double mean_tiou_all;     /* over positives and negatives, a negative scoring 1 when no event
                                 is predicted and 0 otherwise; NAN when both are empty */
} vg_eval_metrics;

void vg_eval_metrics_get(const vg_eval_acc *a, vg_eval_metrics *out);

/* The best video-blind baseline: the fractions 0 <= a < b <= 1 (steps of 0.01) whose interval
 * [a*duration, b*duration] maximises the mean tIoU with the n true intervals [start[i], end[i]] of
 * clips lasting duration[i] seconds. Ties keep the smallest a, then the smallest b. Writes the
 * fractions and their mean tIoU. Returns 0, or VG_EINVAL when n is 0. */
int vg_eval_fit_blind(const double *duration, const double *start, const double *end, size_t n,
                      double *a, double *b, double *mean_tiou);

/* ---------------------------------------------------------------------------------------------------
 * Benchmark files.
 */
typedef struct vg_eval_item {
    int line;          /* 1-based line number in the file */
    char *video;       /* absolute path or URL */
    char *query;       /* the question */
    int positive;      /* 1: start/end given */
    double start, end; /* the true interval in seconds (positives) */
    double duration;   /* seconds from the line's "duration" key; 0 = not given */
    char *error;       /* a malformed line: why (the fields above are then NULL/0) */
} vg_eval_item;

/* Parses one line (text[len], need not be NUL-terminated). A relative video path is joined to
 * base_dir (NULL: kept as is); a path starting with '/', a "file:" URL or any "scheme://" URL is
 * kept. Accepts "question" as a synonym of "query". Fills *out (the caller frees with
 * vg_eval_item_clear) and returns 0, or VG_EFORMAT / VG_ENOMEM with the reason in err. */
int vg_eval_parse_line(const char *text, size_t len, const char *base_dir, vg_eval_item *out,
                       char *err, size_t errlen);
void vg_eval_item_clear(vg_eval_item *it);

typedef struct vg_eval_set {
    vg_eval_item *items; /* blank lines are skipped; malformed lines are items with error set */
    size_t n;
} vg_eval_set;

/* Reads a benchmark file: at most max_items items (0 = all). Relative videos resolve against the
 * directory of the file (made absolute). Returns 0, VG_ENOENT / VG_EIO (the file cannot be read)
 * or VG_ENOMEM. The caller frees *out with vg_eval_set_free. */
int vg_eval_load(const char *path, size_t max_items, vg_eval_set **out, char *err, size_t errlen);
void vg_eval_set_free(vg_eval_set *s);

/* The prediction in a `job` object (JSON text, as the daemon returns it): the number of events and
 * the first one (the top-1 moment; a reversed one is reordered). Events whose start or end is not a
 * finite number are ignored. When the object has no "events" array, the events come from its
 * "text" through vg_answer_parse (so any answer format the pipeline understands works). Returns 0,
 * or VG_EFORMAT (not an object, neither events nor text) with the reason in err. */
int vg_eval_job_prediction(const char *job_json, size_t len, size_t *n_events, double *start,
                           double *end, char *err, size_t errlen);

#endif
