/*
 * qa.h: video question answering over a Qwen3-VL model, the layer every caller shares (the only
 * public header of qa/). It sits between the engine (model/) and the pipeline's prompt builder and
 * answer parser (pipeline/): encoded temporal pairs go in with their times, answers come out as
 * text and events. Clip jobs, live streams, `vigil-model golden`, the benchmarks and the demo
 * exporter all use it; none of them lays out the chat template or the MRoPE positions itself.
 *
 * Two levels, as whisper.cpp has whisper_full beside its fine-grained calls:
 *  - vg_qa_run(): one video, one question, one answer (a clip job).
 *  - A session (vg_qa): the KV window of a live stream, pair by pair:
 *      vg_qa_create                 head "<|im_start|>user\n" (after an optional system turn)
 *      vg_qa_append_pair   (each)   "<t seconds><|vision_start|>pads<|vision_end|>", staged
 *      vg_qa_sync                   prefills what is staged (vg_qa_ask does it too)
 *      vg_qa_evict_oldest           drops the oldest pair from the cache (positions continue)
 *      vg_qa_rebase                 prints every held pair's time again relative to a new base
 *      vg_qa_ask           (each)   "question<|im_end|>\n<|im_start|>assistant\n", generate, parse,
 *                                   then roll the question and answer back out of the cache
 *
 * Times: a pair's time (seconds, the caller's origin: a clip's start, or a stream's time) is
 * printed relative to the session's base (vg_qa_rebase; 0 at creation), and the times an answer
 * states are mapped back by adding the base, so events are in the caller's seconds.
 *
 * Threading: a session belongs to one thread at a time (the inference thread); the model may be
 * shared with other sessions on other threads (model.h's contract). Callbacks run on the calling
 * thread. Cancellation: a non-zero *cancel makes the current call return VG_ECANCELED soon after.
 *
 * Ownership: *_free(NULL) is a no-op; out-pointers are set only on success. vg_qa_append_pair takes
 * the vision output on success and on failure (it is freed with the pair). Errors: negative VG_E*
 * codes with a sentence in err[errlen].
 */
#ifndef VG_QA_H
#define VG_QA_H

#include "model.h"
#include "pipeline.h"

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ===================================================================================================
 * Answers.
 */
/* Per-token callback: the text the token completed (may be empty) (a generated U+0000 already
 * turned into U+FFFD, so answers are C strings). Return non-zero to stop generating. */
typedef int (*vg_qa_piece_fn)(const char *text, size_t len, void *opaque);
/* Stage callback: "prefill" and "generate", as each begins. */
typedef void (*vg_qa_stage_fn)(const char *stage, void *opaque);

typedef struct vg_qa_ask_params {
    vg_gen_params gen;        /* vg_model_default_gen_params() with the caller's knobs */
    vg_qa_piece_fn on_piece;  /* optional */
    vg_qa_stage_fn on_stage;  /* optional */
    void *opaque;             /* for on_piece and on_stage */
    const atomic_int *cancel; /* optional */
    size_t answer_max;        /* bytes of text kept (whole UTF-8 sequences); 0 = no limit */
} vg_qa_ask_params;

typedef struct vg_qa_answer {
    char *text; /* NUL-terminated; malloc'd, freed by vg_qa_answer_clear */
    size_t len;
    vg_event *events; /* [n_events] in the caller's seconds (the base added back); malloc'd */
    size_t n_events;
    int n_tokens; /* generated ids (the stop id included) */
    /* The model's confidence in the answer: the mean natural-log probability (<= 0; 0 = certain)
     * of the answer's tokens that state presence and times: every token before the first digit
     * (the statement of presence or absence) and every token holding a digit (the times), under
     * the model's raw distribution (before penalties and temperature). exp(score) is their
     * geometric-mean probability. 0 with score_tokens 0 for an empty answer. */
    double score;
    int score_tokens;
    size_t prompt_tokens; /* tokens in the cache when generation began */
    double prefill_ms, generate_ms;
} vg_qa_answer;

/* Frees what an answer holds and zeroes it. */
void vg_qa_answer_clear(vg_qa_answer *a);

/* ===================================================================================================
 * The session.
 */
typedef struct vg_qa vg_qa;

typedef struct vg_qa_params {
    size_t max_tokens;  /* KV capacity: prompt, question and answer; required */
    const char *system; /* a system turn, or NULL (the Qwen3-VL default: none) */
} vg_qa_params;

/* Creates a session on model m (borrowed; it must outlive the session) and stages its head. Errors:
 * VG_EINVAL (no max_tokens), VG_ELIMIT (over max_position_embeddings), VG_ENOMEM, tokenizer
 * errors. Caller frees with vg_qa_free(). */
int vg_qa_create(vg_model *m, const vg_qa_params *p, vg_qa **out, char *err, size_t errlen);
void vg_qa_free(vg_qa *q);

/* Appends one temporal pair: its vision output (taken: freed with the pair, also on failure) and
 * its time in the caller's seconds. The pair is staged; the next vg_qa_sync or vg_qa_ask prefills
 * it. Errors: VG_EINVAL (a vision output that is not one merged slice of the model's width),
 * VG_ELIMIT (no room left in the cache: evict first), VG_ERANGE, VG_ENOMEM. */
int vg_qa_append_pair(vg_qa *q, vg_vision_out *vo, int merged_h, int merged_w, double seconds,
                      char *err, size_t errlen);
/* Prefills everything staged, in one call. On failure the staged pairs are dropped and the cache
 * is as before the call. */
int vg_qa_sync(vg_qa *q, const atomic_int *cancel, char *err, size_t errlen);
/* Drops the oldest pair held from the cache (the head stays). The later tokens keep their positions
 * (RoPE is relative; the gap is harmless). Nothing may be staged (VG_EINVAL). */
int vg_qa_evict_oldest(vg_qa *q);
/* Cuts the cache back to the head and prefills every held pair again with its time printed
 * relative to base and fresh positions (one window prefill). On failure every pair is dropped. */
int vg_qa_rebase(vg_qa *q, double base, const atomic_int *cancel, char *err, size_t errlen);
/* Asks question about what the session holds (staged pairs are prefilled with it, in the same
 * call), generates with p, parses the answer into events and rolls the question and the answer
 * back out of the cache. *out is filled on success; free with vg_qa_answer_clear(). A callback
 * that stops early is not an error; *cancel is (VG_ECANCELED). */
int vg_qa_ask(vg_qa *q, const char *question, const vg_qa_ask_params *p, vg_qa_answer *out,
              char *err, size_t errlen);

/* Benchmarks only (bench_stream): fills the window with n_pairs pairs of merged_h x merged_w
 * tokens at times t0, t0 + dt, ... whose cached keys and values are pseudo-random instead of
 * computed (the cost of later calls depends on the cache's length, not its values). The session
 * must hold nothing yet; such pairs can be evicted but not rebased (VG_ENOTSUP). */
int vg_qa_bench_fill(vg_qa *q, size_t n_pairs, int merged_h, int merged_w, double t0, double dt,
                     uint64_t seed, char *err, size_t errlen);

/* What the session holds. */
size_t vg_qa_n_pairs(const vg_qa *q);
double vg_qa_pair_seconds(const vg_qa *q, size_t i); /* i = 0 is the oldest */
double vg_qa_base(const vg_qa *q);
size_t vg_qa_cached_tokens(const vg_qa *q);
/* Tokens the next pair of merged_h x merged_w needs, with its timestamp (an upper bound). */
size_t vg_qa_pair_tokens(int merged_h, int merged_w);
/* Tokens a question's suffix needs on model m (exact); any thread. */
int vg_qa_question_tokens(vg_model *m, const char *question, size_t *n, char *err, size_t errlen);
/* Room for more tokens in the cache. */
size_t vg_qa_free_tokens(const vg_qa *q);
/* The next position (for position-limit policies). */
int32_t vg_qa_next_pos(const vg_qa *q);

/* ===================================================================================================
 * The whole call: one video, one question (a clip job). pairs: [n_pairs] vision outputs (taken, as
 * vg_qa_append_pair takes them: all freed by the call, whatever it returns) with pair_times
 * [n_pairs] in the clip's seconds. max_new_tokens comes from p->gen; the session is sized exactly
 * for the prompt and the answer.
 */
int vg_qa_run(vg_model *m, const char *system, vg_vision_out **pairs, const double *pair_times,
              int n_pairs, int merged_h, int merged_w, const char *question,
              const vg_qa_ask_params *p, vg_qa_answer *out, char *err, size_t errlen);

/* Encodes every temporal slice of a patchified video (rows [grid_t*grid_h*grid_w][cols]) into
 * vision outputs: *out receives a malloc'd array of grid_t outputs (free each with
 * vg_vision_out_free, then the array). progress (optional) sees the fraction done after each. */
int vg_qa_encode_video(vg_model *m, const float *patches, int grid_t, int grid_h, int grid_w,
                       size_t cols, const atomic_int *cancel,
                       void (*progress)(double fraction, void *opaque), void *opaque,
                       vg_vision_out ***out, char *err, size_t errlen);

/* ===================================================================================================
 * Sampling: one model for clips and live streams. Defaults come from the checkpoint's preprocessing
 * config (video_preprocessor_config.json: fps, frame counts, pixel budgets, patch geometry), then a
 * request's knobs, then the daemon's ceilings; each caller applies the last two the same way.
 */
/* The checkpoint's sampling defaults (vg_sample_default_params() where it says nothing). */
vg_sample_params vg_qa_sample_params(const vg_model_info *mi);
/* A live stream's per-frame pixel budget with no request knob: the checkpoint's max_pixels where it
 * sets one below the live default (256 x 32 x 32, a few hundred tokens per pair), else that
 * default; never above ceiling (the daemon's max_pixels_limit; <= 0 = none). */
long vg_qa_stream_max_pixels(const vg_model_info *mi, long ceiling);
/* A live stream's per-frame pixel floor: the checkpoint's min_pixels (Qwen's default where it sets
 * none), never above max_pixels. */
long vg_qa_stream_min_pixels(const vg_model_info *mi, long max_pixels);

/* ===================================================================================================
 * Events as JSON: the one shape clip jobs and live streams publish (docs/protocol.md, "Events").
 */
typedef struct vg_qa_event_time {
    const char *origin; /* "clip": seconds from the clip's first frame; "stream": stream seconds */
    double start_wall;  /* unix seconds of start, or NAN when not known (clips) */
    double end_wall;    /* unix seconds of end, or NAN */
    int has_end;        /* 0: the end is not known yet (a `started` event) */
} vg_qa_event_time;

/* Adds one event's keys to obj: "start", "end" (when known), "label", "origin", and the wall-clock
 * times "start_wall"/"end_wall" (ISO 8601 UTC, when known). Seconds are rounded to milliseconds.
 * Returns 0 or VG_ENOMEM. */
int vg_qa_event_json(cJSON *obj, const vg_event *ev, const vg_qa_event_time *t);
/* A JSON array of events (each as vg_qa_event_json with the same origin and no wall times), or
 * NULL when out of memory. The caller owns it. */
cJSON *vg_qa_events_json(const vg_event *ev, size_t n, const char *origin);
/* Seconds rounded to the millisecond, as every published time is. */
double vg_qa_round_ms(double seconds);
/* Formats unix seconds as "YYYY-MM-DDTHH:MM:SS.mmmZ". */
void vg_qa_iso_utc(double unix_seconds, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
