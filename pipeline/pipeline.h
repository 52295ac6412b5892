/*
 * pipeline.h: from a video file or a live stream to Qwen3-VL's video input, and from the model's
 * text back to events (the only public header of pipeline/). No FFmpeg type appears here.
 *
 * Stages, following the official Qwen3-VL path (qwen-vl-utils "Path A"):
 *   open (libavformat, protocol whitelist, timeouts, interrupt callback) -> plan (frame count,
 * frame indices with torch's float32 linspace, smart_resize) -> decode only the sampled frames,
 * timestamps from their presentation times -> RGB at full size -> antialiased bicubic resize ->
 * normalize and patchify -> prompt with "<t.t seconds>" before each temporal pair, MRoPE positions
 * and rope delta.
 *
 * Threading: every function may be called from any thread; one vg_media belongs to one thread at a
 * time, except its stop flag, which any thread may set. Decoding never runs on the libuv loop
 * thread. Ownership: *_free(NULL) is a no-op; out-pointers are set only on success.
 */
#ifndef VG_PIPELINE_H
#define VG_PIPELINE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Routes FFmpeg's log callback into vg_log (module "ffmpeg"). Call once at start-up. */
void vg_pipe_log_init(void);

/* ===================================================================================================
 * Time: the one model of a frame's time, from its presentation time to the prompt's timestamp
 * token.
 *
 * Origin: a frame's time is in seconds from the input's origin, the presentation time of its first
 * frame as the video stream declares it (vg_media_info.start_time is that origin, in the stream's
 * own clock; when the stream declares none, the first timestamp decoded since the open). Both
 * vg_media_read_video's timeline and vg_media_next_frame use it. Clip jobs print these times; live
 * streams print them relative to their window base.
 */
typedef struct vg_timeline {
    int n;             /* frames */
    int64_t *index;    /* [n] each frame's index in presentation order (the plan's indices) */
    double *seconds;   /* [n] each frame's time in seconds from the origin */
    int constant_rate; /* 1: the input is constant-frame-rate and seconds[i] == index[i] / fps
                          exactly (the reference's value); 0: seconds are presentation times */
} vg_timeline;

/* The time of a temporal pair: the mean of its first and last frame (the reference's rule). */
double vg_pair_time(double first, double last);

/* The time of every temporal pair of a timeline (groups of temporal_patch frames) into
 * out[n_pairs]. Returns 0 or VG_EINVAL when n_pairs groups do not cover the timeline. */
int vg_timeline_pair_times(const vg_timeline *tl, int temporal_patch, double *out, int n_pairs);

/* The timestamp token text of a time: "<t.t seconds>" with one decimal, rounded as C's and
 * Python's "%.1f" round (the binary value, half to even). The only place the format is written.
 * Returns the length written (NUL-terminated), or VG_ERANGE when cap is too small or seconds is
 * not finite. VG_TIME_TOKEN_MAX always suffices for |seconds| < 1e30. */
#define VG_TIME_TOKEN_MAX 48
int vg_time_token(double seconds, char *buf, size_t cap);

/* ===================================================================================================
 * Sampling plan (pure arithmetic, docs/qwen3vl.md §1.1-§1.4, §1.7).
 */
typedef struct vg_sample_params {
    double fps;          /* target sampling rate; default 2.0 */
    int nframes;         /* explicit frame count (rounded to even, half-to-even); 0 = from fps */
    int min_frames;      /* default 4 */
    int max_frames;      /* default 768 */
    long min_pixels;     /* per frame; default 128*32*32; 0 = the default */
    long max_pixels;     /* qwen-vl-utils' per-video max_pixels: the per-frame budget is
                            min(this, max(min(768*32*32, total_pixels/nframes*2), min_pixels*1.05));
                            0 = no extra limit; default 768*32*32 (same effect) */
    double total_pixels; /* whole-video budget; 0 = default 128000*32*32*0.9 */
    int resized_height;  /* both set: resize to these (rounded to the factor) instead of budgets */
    int resized_width;
    double video_start; /* seconds; < 0 = unset */
    double video_end;   /* seconds; < 0 = unset */
    int factor;         /* patch * merge; default 32 */
    int temporal_patch; /* default 2 */
} vg_sample_params;

/* The Qwen3-VL defaults above. */
vg_sample_params vg_sample_default_params(void);

typedef struct vg_plan {
    int nframes;            /* sampled frames (even) */
    int64_t *frame_indices; /* [nframes] absolute indices into the decoded stream */
    double *frame_times;    /* [nframes] planned seconds of each sampled frame: index / fps (what
                               `vigil plan` prints; decoded times are in vg_video.timeline) */
    int n_pairs;            /* temporal pairs = grid_t */
    double *pair_times;     /* [n_pairs] mean of the pair's two planned frame times
                               (vg_timeline_pair_times; printed with vg_time_token) */
    int resized_height, resized_width;
    int grid_t, grid_h, grid_w; /* in patches */
    long video_tokens;          /* grid_t * grid_h * grid_w / merge^2 */
    long tokens_per_pair;
    double sample_fps;
} vg_plan;

/* Computes the plan for a video of total_frames at native fps and width x height. Errors (VG_EINVAL
 * / VG_ERANGE / VG_ELIMIT, with a sentence in err) for impossible inputs: fewer than 2 frames to
 * sample, an empty or reversed start/end range, aspect ratio over 200, zero or negative sizes, a
 * budget that would shrink a side to 0, max_pixels below min_pixels, non-finite fps. p NULL = the
 * defaults. With video_start/video_end the indices stay absolute (so do the times). Caller frees
 * with vg_plan_free(). Pure; any thread. */
int vg_plan_compute(int64_t total_frames, double fps, int width, int height,
                    const vg_sample_params *p, vg_plan **out, char *err, size_t errlen);
void vg_plan_free(vg_plan *plan);

/* qwen-vl-utils smart_resize with Python's half-to-even rounding (double precision). A result
 * with a 0 side (the downscale branch has no clamp), an aspect ratio over 200, a size <= 0 or
 * max_pixels < min_pixels is an error (VG_EINVAL / VG_ERANGE) with a sentence in err. */
int vg_smart_resize(int height, int width, int factor, long min_pixels, long max_pixels, int *out_h,
                    int *out_w, char *err, size_t errlen);

/* torch.linspace(start, end, n) in float32 as the reference CPU kernel computes it, then rint(). */
void vg_linspace_round_f32(double start, double end, int n, int64_t *out);

/* ===================================================================================================
 * Image operations.
 */
/* Antialiased bicubic (a = -0.5, Pillow-style support) resize of interleaved RGB uint8, equal to
 * the reference's torchvision resize(antialias=True) then round-half-even and clamp. src_stride 0
 * = sw*3. dst is dh rows of dw*3 bytes. Returns 0, VG_EINVAL (bad sizes or pointers), VG_ERANGE
 * (a side over 65536) or VG_ENOMEM. Allocates its own scratch; any thread. */
int vg_resize_rgb(const uint8_t *src, int sw, int sh, size_t src_stride, uint8_t *dst, int dw,
                  int dh);

/* Normalizes and patchifies T frames (interleaved RGB uint8, [T][H][W][3], H and W multiples of
 * factor) into pixel_values_videos rows [grid_t*grid_h*grid_w][3*tp*p*p] in the docs/qwen3vl.md
 * §1.6 order. An odd T repeats the last frame. *out is malloc'd; the caller free()s it. */
int vg_patchify(const uint8_t *frames, int T, int H, int W, int patch, int temporal_patch,
                int merge, const float mean[3], const float std[3], float **out, size_t *rows,
                size_t *cols);

/* ===================================================================================================
 * Media: files and network streams.
 */
typedef struct vg_media vg_media;

typedef struct vg_media_params {
    int open_timeout_ms; /* default 10000 */
    int read_timeout_ms; /* a read that stalls longer fails with VG_ETIMEDOUT; default 10000 */
    const char
        *protocol_whitelist; /* default "file,http,https,tcp,tls,rtsp,rtp,udp,hls,crypto,data" */
    int decode_threads;      /* 0 = auto */
    const atomic_int *stop;  /* optional: non-zero aborts any blocking call with VG_ECANCELED */
    /* Optional: asked for every local path or file: URL libavformat opens for this input through
     * its I/O layer: the input itself and what it refers to (an HLS playlist's variant playlists,
     * segments and keys). Return < 0 with a sentence in err to refuse. With allow_url set, the
     * other URLs it opens must also pass protocol_whitelist, checked as the input's own URL is; any
     * refusal fails the open or read with VG_EPATH and that sentence (where HLS alone would skip
     * the segment). Called on the thread calling vg_media_open / vg_media_read_video, with
     * allow_opaque, which must outlive the vg_media. */
    int (*allow_url)(void *opaque, const char *url, char *err, size_t errlen);
    /* Optional: opens every local path or file: URL this input reads (the input itself and what
     * it refers to: an HLS playlist's variant playlists, segments and keys) in place of opening it
     * by name, so that the file decoded is the file a policy checked (docs/security.md, item 1).
     * Returns 0 with a descriptor open for reading in *fd, which the media then owns (reads with
     * pread(), never moving its offset, and closes), or < 0 with a sentence in err to refuse
     * (VG_EPATH for the whole input, as allow_url). The input's own descriptor is asked for once,
     * at vg_media_open, and serves every reopen (a rewind) of this vg_media; it must be a regular
     * file. With open_file set, allow_url is not asked about local files (open_file decides).
     * Called with allow_opaque on the thread calling vg_media_open / vg_media_read_video. */
    int (*open_file)(void *opaque, const char *url, int *fd, char *err, size_t errlen);
    void *allow_opaque;
    /* RTSP only: the lower transport, "tcp" (RTP interleaved in the RTSP connection) or "udp"
     * (RTP/RTCP on UDP ports; the protocol whitelist must hold rtp and udp); NULL: FFmpeg's
     * default (UDP, then TCP when the server refuses UDP). Read during vg_media_open. */
    const char *rtsp_transport;
    /* Largest frame (width x height) the input may have, checked from the container's header
     * before any frame is probed or decoded, and again by the decoder for every frame (a size
     * change mid-stream); 0 = VG_MEDIA's absolute cap (8192 x 8192). A larger input fails with
     * VG_EMEDIA. The decoder's and converters' threads are also bounded by the frame size so that
     * one input's frame buffers stay within about 512 MiB (docs/security.md, item 11). */
    long max_frame_pixels;
} vg_media_params;

vg_media_params vg_media_default_params(void);

typedef struct vg_media_info {
    int width, height;
    int64_t total_frames; /* counted or estimated for files; 0 for live streams */
    double fps;           /* average frame rate */
    double duration;      /* seconds; 0 if unknown */
    double start_time;    /* seconds of the first frame's presentation time */
    int is_live; /* a network input without seeking or a known length (RTSP, RTP/UDP, live HLS,
                    HTTP without byte ranges), or a session a local file describes (SDP); a local
                    file of unknown length is not live (its frames are counted) */
    char codec[32];
    char format[64];
} vg_media_info;

/* One still image in memory (borrowed). */
typedef struct vg_image_blob {
    const void *data;
    size_t len;
} vg_image_blob;

/* Writes frames[0..n) (JPEG images, all the same size) to path as a Matroska video without
 * re-encoding them: frame i is shown at i / fps seconds, so a sequence of stills goes through the
 * same decode, sampling and timestamps as a clip (frames.c). Each image is decoded once first:
 * VG_EINVAL (not a JPEG, sizes differ, bad arguments) or VG_EMEDIA (undecodable) before anything is
 * written; VG_EIO/VG_ENOMEM while writing (the partial file is removed). Any thread. */
int vg_frames_to_video(const vg_image_blob *frames, int n, double fps, const char *path, char *err,
                       size_t errlen);

/* Encodes rgb (width x height, RGB24, rows of width * 3 bytes) as a baseline JPEG with libavcodec's
 * MJPEG encoder (quality: the encoder's qscale, 2 best to 31 worst). *out is malloc'd (the caller
 * frees it). An odd last row or column is dropped (4:2:0). Returns 0, VG_EINVAL, VG_ENOMEM or
 * VG_EMEDIA. Any thread (snapshot.c). */
int vg_jpeg_encode_rgb(const uint8_t *rgb, int width, int height, int quality, uint8_t **out,
                       size_t *out_len, char *err, size_t errlen);

/* Opens url (a path or a whitelisted URL). A local regular file is opened once (by
 * params.open_file when set, else by name) and every read of this input, a rewind included, goes
 * through that descriptor. Frame sizes over params.max_frame_pixels fail with VG_EMEDIA before any
 * frame is decoded. Caller closes with vg_media_close(). */
int vg_media_open(const char *url, const vg_media_params *p, vg_media **out, char *err,
                  size_t errlen);
void vg_media_close(vg_media *m);
const vg_media_info *vg_media_get_info(const vg_media *m);

/* Progress: stage ("decode"), fraction 0..1. Return non-zero to cancel. */
typedef int (*vg_progress_fn)(const char *stage, double fraction, void *opaque);

typedef struct vg_video {
    vg_plan *plan;        /* owned; as vg_plan_compute made it (planned times, never changed) */
    vg_timeline timeline; /* owned (freed by vg_video_free): the decoded frames' indices (the
                             plan's) and times, and whether the input is constant-frame-rate */
    int T, H, W;          /* sampled frames, resized height and width */
    uint8_t *rgb;         /* [T][H][W][3] resized frames */
} vg_video;

/* Plans, decodes only the sampled frames of a file, converts and resizes them, and returns their
 * times in (*out)->timeline. A network input without seeking or a known length (HTTP without byte
 * ranges) is read sequentially from its start, its frames counted first when its length is
 * unknown (a fresh request per pass), with the indices and times a seekable copy would give; a
 * live stream by nature (RTSP, RTP, UDP, an SDP session, an open HLS playlist) is VG_EMEDIA, as is
 * a sampling the video cannot give (too few frames, a start past its end). Caller frees with
 * vg_video_free(). Runs on the calling thread and starts up to 8 conversion threads, which it
 * joins before returning. */
int vg_media_read_video(vg_media *m, const vg_sample_params *p, vg_progress_fn progress,
                        void *opaque, vg_video **out, char *err, size_t errlen);
void vg_video_free(vg_video *v);

/* Live reading: the next decoded frame as RGB at width x height (resized), with its presentation
 * time in seconds from the input's origin (see Time above: the same origin as vg_media_read_video's
 * timeline, so only differences of these times carry meaning for a live stream). Returns 0,
 * VG_EPIPE at end of stream, VG_ETIMEDOUT on a stall. *rgb is written into a caller buffer of
 * width*height*3 bytes. */
int vg_media_next_frame(vg_media *m, int width, int height, uint8_t *rgb, double *pts_seconds,
                        char *err, size_t errlen);

/* Live reading: makes sure the input's frame size (vg_media_get_info's width and height) is known.
 * A live stream joined between keyframes (H.264 or HEVC in MPEG-TS without repeated parameter
 * sets in the container) has none until its next keyframe: its packets are read and dropped up to
 * the first keyframe, which is decoded and kept for the next vg_media_next_frame. Data arriving is
 * progress: each read must arrive within read_timeout_ms (else VG_ETIMEDOUT), and the wait ends
 * after VG_MEDIA_KEY_WAIT_S seconds without a keyframe (VG_EMEDIA). A no-op when the size is known.
 * Returns 0, VG_EPIPE (the stream ended), VG_ETIMEDOUT, VG_ECANCELED, VG_EMEDIA / VG_ELIMIT (no
 * keyframe, or a size out of bounds), or a read or decode error, each with a sentence in err. */
#define VG_MEDIA_KEY_WAIT_S 120
int vg_media_wait_size(vg_media *m, char *err, size_t errlen);

/* ===================================================================================================
 * Prompt: the Qwen3-VL Instruct chat layout with per-pair timestamps, tokens and MRoPE positions.
 */
typedef int (*vg_tokenize_fn)(void *opaque, const char *text, size_t len, int32_t **ids,
                              size_t *n_ids); /* ids malloc'd, caller free()s; no special parsing */

typedef struct vg_prompt_ids {
    int32_t im_start, im_end, vision_start, vision_end, video_pad;
} vg_prompt_ids;

typedef struct vg_chat {
    const char *system;      /* NULL = no system turn (the Qwen3-VL default) */
    const char *text_before; /* user text before the video, or NULL */
    const char *text_after;  /* user text after the video (the question), or NULL */
} vg_chat;

typedef struct vg_prompt {
    int32_t *ids; /* [n] */
    size_t n;
    int32_t *pos; /* [3][n] */
    int32_t rope_delta;
    size_t n_video_tokens;
    char *text; /* the expanded prompt as text, for display and checks */
} vg_prompt;

/* One video in a prompt: the time printed before each temporal pair (seconds, see vg_time_token)
 * and the grid of a slice in patches, merged merge x merge into tokens. */
typedef struct vg_prompt_video {
    const double *pair_times; /* [n_pairs] */
    int n_pairs;
    int grid_h, grid_w; /* patches per slice */
    int merge;          /* spatial merge size */
} vg_prompt_video;

/* Builds the whole prompt for one video question (head, every pair, tail; see the builder below).
 * Each maximal run of plain text between special tokens (e.g. "user\n<0.3 seconds>") goes to
 * tokenize() as one string, so user text is never parsed for special tokens. chat NULL = no system
 * turn and no text. Errors: VG_EINVAL (bad grid or merge, a tokenizer error, a tokenizer that
 * emits the video pad id), VG_ELIMIT, VG_ERANGE (a time that cannot be printed), VG_ENOMEM; err
 * gets a sentence. Caller frees with vg_prompt_free(). Any thread (the callback runs on it). */
int vg_prompt_build(const vg_chat *chat, const vg_prompt_video *video, const vg_prompt_ids *ids,
                    vg_tokenize_fn tokenize, void *opaque, vg_prompt **out, char *err,
                    size_t errlen);
void vg_prompt_free(vg_prompt *p);

/* The prompt builder: the one place the Qwen3-VL chat layout and its MRoPE positions are made.
 * Pieces are appended in template order and taken in chunks; positions continue across takes, so
 * a caller can prefill a prompt piece by piece (a live window: head once, each pair as it arrives,
 * each question). One thread at a time per builder; tokenize runs on it. */
typedef struct vg_prompt_builder vg_prompt_builder;

/* ids and tokenize are copied/borrowed for the builder's life (opaque too). Caller frees with
 * vg_prompt_builder_free(). Returns 0, VG_EINVAL or VG_ENOMEM. */
int vg_prompt_builder_create(const vg_prompt_ids *ids, vg_tokenize_fn tokenize, void *opaque,
                             vg_prompt_builder **out);
void vg_prompt_builder_free(vg_prompt_builder *b);
/* "[<|im_start|>system\n{system}<|im_end|>\n]<|im_start|>user\n{text_before}". */
int vg_prompt_add_head(vg_prompt_builder *b, const vg_chat *chat, char *err, size_t errlen);
/* "<t.t seconds><|vision_start|>{merged_h x merged_w pads}<|vision_end|>", the time printed by
 * vg_time_token(seconds); the pads get (p, p + row, p + col) and the next token p + max(h, w). */
int vg_prompt_add_pair(vg_prompt_builder *b, double seconds, int merged_h, int merged_w, char *err,
                       size_t errlen);
/* "{text_after}<|im_end|>\n<|im_start|>assistant\n". */
int vg_prompt_add_tail(vg_prompt_builder *b, const char *text_after, char *err, size_t errlen);
/* Tokenizes what is pending and hands out every token appended since the last take as a vg_prompt
 * (pos [3][n] continuing from earlier takes; rope_delta = next position - all tokens taken so far,
 * what generation after this chunk needs). Caller frees *out with vg_prompt_free(). */
int vg_prompt_builder_take(vg_prompt_builder *b, vg_prompt **out, char *err, size_t errlen);
/* The position the next appended token gets. */
int32_t vg_prompt_builder_next_pos(const vg_prompt_builder *b);
/* Drops whatever was appended and not taken, and continues at next_pos with n_taken tokens already
 * taken (a caller that rolled its cache back to that point). */
void vg_prompt_builder_rewind(vg_prompt_builder *b, int32_t next_pos, size_t n_taken);

/* MRoPE position ids (docs/qwen3vl.md §5.1) of a token sequence: every maximal run of video_pad
 * tokens is one temporal slice of merged_h x merged_w tokens (a run of another length is
 * VG_EINVAL). Writes pos[3][n] (t, h, w rows) into the caller's buffer and *rope_delta (max
 * position + 1 - n). Pure; any thread. */
int vg_prompt_positions(const int32_t *ids, size_t n, int32_t video_pad, int merged_h, int merged_w,
                        int32_t *pos, int32_t *rope_delta, char *err, size_t errlen);

/* ===================================================================================================
 * Answer parsing: model text to events in seconds.
 */
typedef struct vg_event {
    double start, end; /* seconds; start == end for an instant */
    char label[256];
    unsigned flags; /* VG_EVENT_*: what the answer says against the event */
} vg_event;

/* vg_event.flags: the range was stated end first (start and end are swapped back); the answer
 * also denies presence in a sentence without times ("There is no red box."). */
enum { VG_EVENT_REVERSED = 1u, VG_EVENT_CONTRADICTED = 2u };

/* Parses the time ranges the text states. A negative answer or text without times gives 0 events.
 * *events is malloc'd (free()); NULL when n is 0. */
int vg_answer_parse(const char *text, vg_event **events, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
