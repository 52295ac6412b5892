/*
 * config.c: a checkpoint's JSON configuration into vg_model_info and vg_gen_params.
 *
 *  - config.json must describe Qwen3-VL (architectures contains "Qwen3VLForConditionalGeneration"
 *    or model_type is "qwen3_vl"). Sizes come from text_config / vision_config; every integer is
 *    range-checked against limits (VG_CFG_*) chosen so that later size arithmetic (weights, KV
 *    cache, activations) cannot overflow a 64-bit size_t, and structural relations are checked
 *    (heads divide hidden, kv heads divide heads, head_dim even, mrope sections sum to head_dim/2,
 *    DeepStack indexes < depth, out_hidden_size == text hidden_size, square position grid).
 *    Missing optional fields take the Hugging Face class defaults; the sizes that those defaults
 *    get wrong for every released checkpoint are required.
 *  - generation_config.json (optional) overlays the Qwen3-VL Instruct defaults (docs/qwen3vl.md
 * docs/qwen3vl.md §6); eos_token_id (an int or a list) becomes the stop ids.
 *  - video_preprocessor_config.json (optional): image_mean, image_std, fps, min_frames,
 *    max_frames; size.shortest_edge -> video_min_pixels and size.longest_edge -> video_max_pixels
 *    (the HF Qwen3-VL processor treats longest_edge as a T*H*W budget; we pass the numbers on
 *    unchanged), or top-level min_pixels / max_pixels when present (they win). 0 when absent.
 *
 * Pure functions of their input; any thread.
 */
#include "internal.h"

#include "common.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VG_CFG_MAX_FILE    ((size_t)16 * 1024 * 1024)
#define VG_CFG_MAX_LAYERS  1000
#define VG_CFG_MAX_HIDDEN  65536
#define VG_CFG_MAX_HEADS   1024
#define VG_CFG_MAX_HEADDIM 1024
#define VG_CFG_MAX_INTER   (1 << 20)
#define VG_CFG_MAX_VOCAB   10000000
#define VG_CFG_MAX_POS     (1 << 24)
/* No prompt vigil builds (chat template, timestamps, two frames' video tokens, a question, room to
 * answer) fits in fewer positions: a smaller context would fail every job, so it fails the load. */
#define VG_CFG_MIN_POS 256

/* Looks up a possibly nested field; NULL when absent or a parent is not an object. */
static const cJSON *field(const cJSON *obj, const char *key)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

/* Reads an integer field: absent -> def (or an error when required); present -> must be an
 * integral number in [lo, hi]. */
static int get_int(const cJSON *obj, const char *sect, const char *key, int required, long def,
                   long lo, long hi, long *out, const char *file, char *err, size_t errlen)
{
    const cJSON *j = field(obj, key);
    const char *dot = sect && *sect ? "." : "";
    if (!j || cJSON_IsNull(j)) {
        if (required)
            return vg_fail(err, errlen, VG_EMODEL, "%s: %s%s%s is missing", file, sect, dot, key);
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (!(d == floor(d)) || d < (double)lo || d > (double)hi)
        return vg_fail(err, errlen, VG_EMODEL, "%s: %s%s%s must be an integer in [%ld, %ld]", file,
                       sect, dot, key, lo, hi);
    *out = (long)d;
    return 0;
}

static int get_num(const cJSON *obj, const char *sect, const char *key, double def, double lo,
                   double hi, int lo_open, double *out, const char *file, char *err, size_t errlen)
{
    const cJSON *j = field(obj, key);
    const char *dot = sect && *sect ? "." : "";
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return 0;
    }
    double d = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (!isfinite(d) || d > hi || (lo_open ? d <= lo : d < lo))
        return vg_fail(err, errlen, VG_EMODEL, "%s: %s%s%s must be a number in %s%g, %g]", file,
                       sect, dot, key, lo_open ? "(" : "[", lo, hi);
    *out = d;
    return 0;
}

static int get_bool(const cJSON *obj, const char *sect, const char *key, int def, int *out,
                    const char *file, char *err, size_t errlen)
{
    const cJSON *j = field(obj, key);
    if (!j || cJSON_IsNull(j)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(j))
        return vg_fail(err, errlen, VG_EMODEL, "%s: %s%s%s must be true or false", file, sect,
                       sect && *sect ? "." : "", key);
    *out = cJSON_IsTrue(j);
    return 0;
}

#define CK(expr)                                                                                   \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != 0)                                                                              \
            return rc_;                                                                            \
    } while (0)

static int is_qwen3vl(const cJSON *root, const char **model_type)
{
    const cJSON *arch = field(root, "architectures");
    const cJSON *a;
    cJSON_ArrayForEach(a, arch)
    {
        if (cJSON_IsString(a) && strcmp(a->valuestring, "Qwen3VLForConditionalGeneration") == 0)
            return 1;
    }
    const cJSON *mt = field(root, "model_type");
    *model_type = cJSON_IsString(mt) ? mt->valuestring : "(none)";
    return cJSON_IsString(mt) && strcmp(mt->valuestring, "qwen3_vl") == 0;
}

static int parse_text(const cJSON *root, const cJSON *tc, vg_model_info *info, const char *F,
                      char *err, size_t errlen)
{
    const char *S = "text_config";
    long hidden, heads, kv, hd, layers, inter, vocab, maxpos;
    CK(get_int(tc, S, "hidden_size", 1, 0, 1, VG_CFG_MAX_HIDDEN, &hidden, F, err, errlen));
    CK(get_int(tc, S, "num_hidden_layers", 1, 0, 1, VG_CFG_MAX_LAYERS, &layers, F, err, errlen));
    CK(get_int(tc, S, "num_attention_heads", 1, 0, 1, VG_CFG_MAX_HEADS, &heads, F, err, errlen));
    CK(get_int(tc, S, "num_key_value_heads", 0, heads, 1, VG_CFG_MAX_HEADS, &kv, F, err, errlen));
    if (heads % kv != 0)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: text_config.num_key_value_heads (%ld) does not divide "
                       "num_attention_heads (%ld)",
                       F, kv, heads);
    const cJSON *jhd = field(tc, "head_dim");
    if ((!jhd || cJSON_IsNull(jhd)) && hidden % heads != 0)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: text_config.num_attention_heads (%ld) does not divide hidden_size "
                       "(%ld) and head_dim is not given",
                       F, heads, hidden);
    CK(get_int(tc, S, "head_dim", 0, hidden / heads, 1, VG_CFG_MAX_HEADDIM, &hd, F, err, errlen));
    if (hd % 2 != 0)
        return vg_fail(err, errlen, VG_EMODEL, "%s: text_config.head_dim (%ld) must be even", F,
                       hd);
    if (heads * hd > VG_CFG_MAX_HIDDEN * 4)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: text_config num_attention_heads * head_dim (%ld) is too large", F,
                       heads * hd);
    CK(get_int(tc, S, "intermediate_size", 1, 0, 1, VG_CFG_MAX_INTER, &inter, F, err, errlen));
    CK(get_int(tc, S, "vocab_size", 1, 0, 1, VG_CFG_MAX_VOCAB, &vocab, F, err, errlen));
    CK(get_int(tc, S, "max_position_embeddings", 0, 262144, VG_CFG_MIN_POS, VG_CFG_MAX_POS, &maxpos,
               F, err, errlen));
    double eps, theta;
    CK(get_num(tc, S, "rms_norm_eps", 1e-6, 0.0, 1.0, 1, &eps, F, err, errlen));

    /* rope: rope_theta in text_config (v4.57) or rope_parameters.rope_theta (v5); mrope_section
     * and mrope_interleaved in rope_scaling or rope_parameters. */
    const cJSON *rp = field(tc, "rope_parameters");
    const cJSON *rs = field(tc, "rope_scaling");
    if (!cJSON_IsObject(rs))
        rs = rp;
    const cJSON *jth = field(tc, "rope_theta");
    if (jth && !cJSON_IsNull(jth))
        CK(get_num(tc, S, "rope_theta", 500000.0, 0.0, 1e12, 1, &theta, F, err, errlen));
    else
        CK(get_num(rp, "text_config.rope_parameters", "rope_theta", 500000.0, 0.0, 1e12, 1, &theta,
                   F, err, errlen));
    int sec[3] = {24, 20, 20};
    const cJSON *ms = field(rs, "mrope_section");
    if (ms && !cJSON_IsNull(ms)) {
        if (!cJSON_IsArray(ms) || cJSON_GetArraySize(ms) != 3)
            return vg_fail(err, errlen, VG_EMODEL,
                           "%s: text_config rope mrope_section must be an array of 3 integers", F);
        int i = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, ms)
        {
            double d = cJSON_IsNumber(s) ? s->valuedouble : NAN;
            if (!(d == floor(d)) || d < 0 || d > VG_CFG_MAX_HEADDIM)
                return vg_fail(err, errlen, VG_EMODEL,
                               "%s: text_config rope mrope_section[%d] is not a valid integer", F,
                               i);
            sec[i++] = (int)d;
        }
    }
    if ((long)sec[0] + sec[1] + sec[2] != hd / 2)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: text_config rope mrope_section [%d,%d,%d] sums to %d, expected "
                       "head_dim/2 = %ld",
                       F, sec[0], sec[1], sec[2], sec[0] + sec[1] + sec[2], hd / 2);
    int inter_flag;
    CK(get_bool(rs, "text_config.rope_scaling", "mrope_interleaved", 1, &inter_flag, F, err,
                errlen));
    int tie_top, tie;
    CK(get_bool(root, "", "tie_word_embeddings", -1, &tie_top, F, err, errlen));
    CK(get_bool(tc, S, "tie_word_embeddings", tie_top >= 0 ? tie_top : 0, &tie, F, err, errlen));
    if (tie_top >= 0)
        tie = tie_top; /* the top-level flag is the one HF's PreTrainedModel reads */

    info->hidden_size = (int)hidden;
    info->n_layers = (int)layers;
    info->n_heads = (int)heads;
    info->n_kv_heads = (int)kv;
    info->head_dim = (int)hd;
    info->intermediate_size = (int)inter;
    info->vocab_size = (int)vocab;
    info->max_position_embeddings = (int)maxpos;
    info->rms_norm_eps = (float)eps;
    info->rope_theta = (float)theta;
    memcpy(info->mrope_section, sec, sizeof sec);
    info->mrope_interleaved = inter_flag;
    info->tie_word_embeddings = tie;
    return 0;
}

static int parse_vision(const cJSON *vc, vg_model_info *info, const char *F, char *err,
                        size_t errlen)
{
    const char *S = "vision_config";
    long depth, hid, heads, inter, out, patch, tpatch, merge, inch, npos;
    CK(get_int(vc, S, "depth", 1, 0, 1, VG_CFG_MAX_LAYERS, &depth, F, err, errlen));
    CK(get_int(vc, S, "hidden_size", 1, 0, 1, VG_CFG_MAX_HIDDEN / 4, &hid, F, err, errlen));
    CK(get_int(vc, S, "num_heads", 1, 0, 1, VG_CFG_MAX_HEADS, &heads, F, err, errlen));
    CK(get_int(vc, S, "intermediate_size", 1, 0, 1, VG_CFG_MAX_INTER, &inter, F, err, errlen));
    CK(get_int(vc, S, "out_hidden_size", 1, 0, 1, VG_CFG_MAX_HIDDEN, &out, F, err, errlen));
    CK(get_int(vc, S, "patch_size", 0, 16, 1, 64, &patch, F, err, errlen));
    CK(get_int(vc, S, "temporal_patch_size", 0, 2, 1, 16, &tpatch, F, err, errlen));
    CK(get_int(vc, S, "spatial_merge_size", 0, 2, 1, 8, &merge, F, err, errlen));
    CK(get_int(vc, S, "in_channels", 0, 3, 1, 4, &inch, F, err, errlen));
    CK(get_int(vc, S, "num_position_embeddings", 0, 2304, 1, 1 << 20, &npos, F, err, errlen));
    if (hid % heads != 0 || (hid / heads) % 4 != 0)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: vision_config.hidden_size (%ld) / num_heads (%ld) must be a whole "
                       "head size divisible by 4",
                       F, hid, heads);
    long side = (long)sqrt((double)npos);
    while (side * side > npos)
        side--;
    while ((side + 1) * (side + 1) <= npos)
        side++;
    if (side * side != npos)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: vision_config.num_position_embeddings (%ld) is not a perfect square", F,
                       npos);
    if (out != info->hidden_size)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: vision_config.out_hidden_size (%ld) differs from text hidden_size (%d)",
                       F, out, info->hidden_size);
    int n_ds = 0;
    int ds[16];
    const cJSON *jd = field(vc, "deepstack_visual_indexes");
    if (!jd || cJSON_IsNull(jd)) {
        static const int def[3] = {8, 16, 24}; /* Qwen3VLVisionConfig's default */
        n_ds = 3;
        memcpy(ds, def, sizeof def);
    } else {
        if (!cJSON_IsArray(jd) || cJSON_GetArraySize(jd) > 16)
            return vg_fail(err, errlen, VG_EMODEL,
                           "%s: vision_config.deepstack_visual_indexes must be an array of at "
                           "most 16 integers",
                           F);
        const cJSON *e;
        cJSON_ArrayForEach(e, jd)
        {
            double d = cJSON_IsNumber(e) ? e->valuedouble : NAN;
            if (!(d == floor(d)) || d < 0 || d > VG_CFG_MAX_LAYERS)
                return vg_fail(err, errlen, VG_EMODEL,
                               "%s: vision_config.deepstack_visual_indexes[%d] is not a "
                               "non-negative integer",
                               F, n_ds);
            ds[n_ds++] = (int)d;
        }
    }
    for (int i = 0; i < n_ds; i++)
        if (ds[i] >= depth)
            return vg_fail(err, errlen, VG_EMODEL,
                           "%s: vision_config.deepstack_visual_indexes[%d] = %d is not below "
                           "depth %ld",
                           F, i, ds[i], depth);
    if (n_ds > info->n_layers)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: %d DeepStack taps but only %d text layers to add them after", F, n_ds,
                       info->n_layers);
    info->has_vision = 1;
    info->vision_depth = (int)depth;
    info->vision_hidden = (int)hid;
    info->vision_heads = (int)heads;
    info->vision_intermediate = (int)inter;
    info->out_hidden_size = (int)out;
    info->patch_size = (int)patch;
    info->temporal_patch_size = (int)tpatch;
    info->spatial_merge_size = (int)merge;
    info->in_channels = (int)inch;
    info->num_position_embeddings = (int)npos;
    info->n_deepstack = n_ds;
    memset(info->deepstack_indexes, 0, sizeof info->deepstack_indexes);
    memcpy(info->deepstack_indexes, ds, (size_t)n_ds * sizeof *ds);
    return 0;
}

static void set_preproc_defaults(vg_model_info *info)
{
    for (int i = 0; i < 3; i++) {
        info->image_mean[i] = 0.5f;
        info->image_std[i] = 0.5f;
    }
    info->video_fps = 2.0;
    info->video_min_frames = 4;
    info->video_max_frames = 768;
    info->video_min_pixels = 0;
    info->video_max_pixels = 0;
}

int vg_model_config_parse(const char *json, size_t len, vg_model_info *info, char *err,
                          size_t errlen)
{
    const char *F = "config.json";
    if (!json || !info)
        return vg_fail(err, errlen, VG_EINVAL, "vg_model_config_parse: NULL argument");
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root)
        return vg_fail(err, errlen, VG_EFORMAT, "%s: not valid JSON", F);
    vg_model_info in;
    memset(&in, 0, sizeof in);
    int rc = 0;
    const char *mt = NULL;
    if (!cJSON_IsObject(root)) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: not a JSON object", F);
        goto out;
    }
    if (!is_qwen3vl(root, &mt)) {
        rc = vg_fail(err, errlen, VG_EMODEL, "%s: model_type '%.64s' is not Qwen3-VL", F, mt);
        goto out;
    }
    const cJSON *tc = field(root, "text_config");
    if (!cJSON_IsObject(tc)) {
        rc = vg_fail(err, errlen, VG_EMODEL, "%s: text_config is missing", F);
        goto out;
    }
    if ((rc = parse_text(root, tc, &in, F, err, errlen)) != 0)
        goto out;
    const cJSON *vc = field(root, "vision_config");
    if (vc && !cJSON_IsNull(vc)) {
        if (!cJSON_IsObject(vc)) {
            rc = vg_fail(err, errlen, VG_EMODEL, "%s: vision_config is not an object", F);
            goto out;
        }
        if ((rc = parse_vision(vc, &in, F, err, errlen)) != 0)
            goto out;
    }
    /* Token ids: top level (HF layout), else text_config, else the Qwen defaults. */
    static const struct {
        const char *key;
        long def;
        size_t off;
    } ids[] = {
        {"video_token_id", 151656, offsetof(vg_model_info, video_token_id)},
        {"image_token_id", 151655, offsetof(vg_model_info, image_token_id)},
        {"vision_start_token_id", 151652, offsetof(vg_model_info, vision_start_token_id)},
        {"vision_end_token_id", 151653, offsetof(vg_model_info, vision_end_token_id)},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(ids); i++) {
        long v;
        const cJSON *src = field(root, ids[i].key) ? root : tc;
        rc = get_int(src, src == root ? "" : "text_config", ids[i].key, 0, ids[i].def, 0, INT32_MAX,
                     &v, F, err, errlen);
        if (rc != 0)
            goto out;
        if (in.has_vision && v >= in.vocab_size) {
            rc = vg_fail(err, errlen, VG_EMODEL, "%s: %s %ld is not below vocab_size %d", F,
                         ids[i].key, v, in.vocab_size);
            goto out;
        }
        int32_t v32 = (int32_t)v;
        memcpy((char *)&in + ids[i].off, &v32, sizeof v32);
    }
    in.im_start_id = 151644;
    in.im_end_id = 151645;
    in.endoftext_id = 151643;
    set_preproc_defaults(&in);
    *info = in;
out:
    cJSON_Delete(root);
    return rc;
}

static void set_gen_defaults(vg_gen_params *g)
{
    memset(g, 0, sizeof *g);
    g->do_sample = 1;
    g->temperature = 0.7f;
    g->top_k = 20;
    g->top_p = 0.8f;
    g->repetition_penalty = 1.0f;
    g->presence_penalty = 1.5f;
    g->seed = 3407;
    g->max_new_tokens = 32768;
    g->stop_ids[0] = 151645;
    g->stop_ids[1] = 151643;
    g->n_stop_ids = 2;
}

static int parse_gen(const char *text, size_t len, const vg_model_info *info, vg_gen_params *g,
                     char *err, size_t errlen)
{
    const char *F = "generation_config.json";
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root)
        return vg_fail(err, errlen, VG_EFORMAT, "%s: not valid JSON", F);
    int rc = 0;
    double d;
    long v;
    if (!cJSON_IsObject(root)) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: not a JSON object", F);
        goto out;
    }
#define G(expr)                                                                                    \
    do {                                                                                           \
        if ((rc = (expr)) != 0)                                                                    \
            goto out;                                                                              \
    } while (0)
    G(get_bool(root, "", "do_sample", g->do_sample, &g->do_sample, F, err, errlen));
    G(get_num(root, "", "temperature", g->temperature, 0.0, 1e6, 0, &d, F, err, errlen));
    g->temperature = (float)d;
    if (g->temperature == 0.0f) { /* HF treats temperature 0 as greedy */
        g->do_sample = 0;
        g->temperature = 1.0f;
    }
    G(get_int(root, "", "top_k", 0, g->top_k, 0, INT32_MAX, &v, F, err, errlen));
    g->top_k = (int)v;
    G(get_num(root, "", "top_p", g->top_p, 0.0, 1.0, 1, &d, F, err, errlen));
    g->top_p = (float)d;
    G(get_num(root, "", "repetition_penalty", g->repetition_penalty, 0.0, 1e6, 1, &d, F, err,
              errlen));
    g->repetition_penalty = (float)d;
    G(get_num(root, "", "presence_penalty", g->presence_penalty, -1e6, 1e6, 0, &d, F, err, errlen));
    g->presence_penalty = (float)d;
    /* The 1.5 presence penalty is Qwen's recommendation for sampling. A checkpoint that asks for
     * greedy decoding and names no penalty gets plain greedy decoding, as Hugging Face's generate()
     * (which has no presence penalty) would give it. */
    if (!g->do_sample && !field(root, "presence_penalty"))
        g->presence_penalty = 0.0f;
    G(get_int(root, "", "max_new_tokens", 0, g->max_new_tokens, 1, INT32_MAX, &v, F, err, errlen));
    g->max_new_tokens = (int)v;
    const cJSON *eos = field(root, "eos_token_id");
    if (eos && !cJSON_IsNull(eos)) {
        int32_t ids[VG_MAX_STOP_IDS];
        int n = 0;
        int count = cJSON_IsArray(eos) ? cJSON_GetArraySize(eos) : 1;
        if (count < 1 || count > VG_MAX_STOP_IDS) {
            rc = vg_fail(err, errlen, VG_EMODEL, "%s: eos_token_id must list 1 to %d ids", F,
                         VG_MAX_STOP_IDS);
            goto out;
        }
        const cJSON *e = cJSON_IsArray(eos) ? eos->child : eos;
        for (; e && n < count; e = cJSON_IsArray(eos) ? e->next : NULL) {
            double x = cJSON_IsNumber(e) ? e->valuedouble : NAN;
            if (!(x == floor(x)) || x < 0 || x >= (double)info->vocab_size) {
                rc = vg_fail(err, errlen, VG_EMODEL,
                             "%s: eos_token_id entry is not an id below vocab_size %d", F,
                             info->vocab_size);
                goto out;
            }
            ids[n++] = (int32_t)x;
        }
        memcpy(g->stop_ids, ids, (size_t)n * sizeof *ids);
        g->n_stop_ids = n;
    }
#undef G
out:
    cJSON_Delete(root);
    return rc;
}

static int get_triple(const cJSON *root, const char *key, float *dst, const char *F, char *err,
                      size_t errlen)
{
    const cJSON *a = field(root, key);
    if (!a || cJSON_IsNull(a))
        return 0;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 3)
        return vg_fail(err, errlen, VG_EMODEL, "%s: %s must be an array of 3 numbers", F, key);
    float tmp[3];
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a)
    {
        double d = cJSON_IsNumber(e) ? e->valuedouble : NAN;
        if (!isfinite(d) || fabs(d) > 1e6 || (strcmp(key, "image_std") == 0 && !(d > 0)))
            return vg_fail(err, errlen, VG_EMODEL, "%s: %s[%d] is out of range", F, key, i);
        tmp[i++] = (float)d;
    }
    memcpy(dst, tmp, sizeof tmp);
    return 0;
}

static int parse_preproc(const char *text, size_t len, vg_model_info *info, char *err,
                         size_t errlen)
{
    const char *F = "video_preprocessor_config.json";
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root)
        return vg_fail(err, errlen, VG_EFORMAT, "%s: not valid JSON", F);
    int rc = 0;
    long v;
    double d;
    const cJSON *size = field(root, "size");
#define G(expr)                                                                                    \
    do {                                                                                           \
        if ((rc = (expr)) != 0)                                                                    \
            goto out;                                                                              \
    } while (0)
    if (!cJSON_IsObject(root)) {
        rc = vg_fail(err, errlen, VG_EFORMAT, "%s: not a JSON object", F);
        goto out;
    }
    G(get_triple(root, "image_mean", info->image_mean, F, err, errlen));
    G(get_triple(root, "image_std", info->image_std, F, err, errlen));
    G(get_num(root, "", "fps", info->video_fps, 0.0, 1000.0, 1, &d, F, err, errlen));
    info->video_fps = d;
    G(get_int(root, "", "min_frames", 0, info->video_min_frames, 1, 1 << 20, &v, F, err, errlen));
    info->video_min_frames = (int)v;
    G(get_int(root, "", "max_frames", 0, info->video_max_frames, 1, 1 << 20, &v, F, err, errlen));
    info->video_max_frames = (int)v;
    if (info->video_min_frames > info->video_max_frames) {
        rc = vg_fail(err, errlen, VG_EMODEL, "%s: min_frames %d exceeds max_frames %d", F,
                     info->video_min_frames, info->video_max_frames);
        goto out;
    }
    const long pmax = 1L << 40;
    G(get_int(size, "size", "shortest_edge", 0, 0, 0, pmax, &v, F, err, errlen));
    info->video_min_pixels = v;
    G(get_int(size, "size", "longest_edge", 0, 0, 0, pmax, &v, F, err, errlen));
    info->video_max_pixels = v;
    G(get_int(root, "", "min_pixels", 0, info->video_min_pixels, 0, pmax, &v, F, err, errlen));
    info->video_min_pixels = v;
    G(get_int(root, "", "max_pixels", 0, info->video_max_pixels, 0, pmax, &v, F, err, errlen));
    info->video_max_pixels = v;
    if (info->video_max_pixels && info->video_min_pixels > info->video_max_pixels) {
        rc = vg_fail(err, errlen, VG_EMODEL, "%s: minimum pixels %ld exceed maximum %ld", F,
                     info->video_min_pixels, info->video_max_pixels);
        goto out;
    }
#undef G
out:
    cJSON_Delete(root);
    return rc;
}

/* Reads dir/name when it exists: 1 with the text, 0 when absent, or a negative error. */
static int read_optional(const char *dir, const char *name, char **text, size_t *len, char *err,
                         size_t errlen)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return vg_fail(err, errlen, VG_EINVAL, "%s: path too long", dir);
    int rc = vg_read_file(path, VG_CFG_MAX_FILE, text, len, err, errlen);
    if (rc == VG_ENOENT)
        return 0;
    return rc == 0 ? 1 : rc;
}

int vg_model_config_load(const char *dir, vg_model_info *info, vg_gen_params *gen, char *err,
                         size_t errlen)
{
    if (!dir || !info)
        return vg_fail(err, errlen, VG_EINVAL, "vg_model_config_load: NULL argument");
    char *text = NULL;
    size_t len = 0;
    int rc = read_optional(dir, "config.json", &text, &len, err, errlen);
    if (rc == 0)
        return vg_fail(err, errlen, VG_ENOENT, "%s: config.json not found", dir);
    if (rc < 0)
        return rc;
    rc = vg_model_config_load_text(dir, NULL, text, len, info, gen, err, errlen);
    free(text);
    return rc;
}

int vg_model_config_load_text(const char *dir, const char *name_path, const char *json, size_t len,
                              vg_model_info *info, vg_gen_params *gen, char *err, size_t errlen)
{
    char *text = NULL;
    vg_model_info in;
    vg_gen_params g;
    int rc = vg_model_config_parse(json, len, &in, err, errlen);
    if (rc != 0)
        return rc;

    set_gen_defaults(&g);
    rc = dir ? read_optional(dir, "generation_config.json", &text, &len, err, errlen) : 0;
    if (rc < 0)
        return rc;
    if (rc == 1) {
        rc = parse_gen(text, len, &in, &g, err, errlen);
        free(text);
        if (rc != 0)
            return rc;
    }
    rc = dir ? read_optional(dir, "video_preprocessor_config.json", &text, &len, err, errlen) : 0;
    if (rc < 0)
        return rc;
    if (rc == 1) {
        rc = parse_preproc(text, len, &in, err, errlen);
        free(text);
        if (rc != 0)
            return rc;
    }

    /* name = the directory's base name (trailing slashes ignored). */
    const char *np = name_path ? name_path : dir ? dir : "model";
    size_t n = strlen(np);
    while (n > 1 && np[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && np[b - 1] != '/')
        b--;
    size_t nl = VG_MIN(n - b, sizeof in.name - 1);
    memcpy(in.name, np + b, nl);
    in.name[nl] = '\0';

    *info = in;
    if (gen)
        *gen = g;
    return 0;
}
