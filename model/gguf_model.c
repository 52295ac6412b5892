/*
 * gguf_model.c: a Qwen3-VL model from a GGUF pair -- the `qwen3vl` text file and its `mmproj`
 * (clip, projector qwen3vl_merger) -- as llama.cpp's converter writes them.
 *
 * What it does: opens both files (gguf.c validates them), turns their metadata into the engine's
 * description by writing the config.json that says the same thing and running it through
 * config.c's checks (so every size, head count, rope section, DeepStack index and epsilon is
 * range-checked exactly as for a Hugging Face checkpoint), builds the tokenizer from
 * tokenizer.ggml.* (tokens, token types, merges) through tokenizer.c, and presents the tensors to
 * the engine under their Hugging Face names and shapes (vg_st_wrap), so the engine's loaders
 * (text.c, vision.c) check every shape against the description as they do for safetensors. A
 * tensor whose name is not one of the architecture's is refused, as is a ggml type the engine
 * cannot compute with.
 *
 * Layout differences handled here:
 *  - GGUF sizes are innermost first: a tensor ne = {K, N} is the PyTorch [N][K];
 *  - the Conv3D patch embedding is split by the converter into two Conv2D halves (v.patch_embd.
 *    weight and .weight.1, temporal index 0 and 1): they are interleaved back into one float32
 *    [hidden][C][2][p][p] tensor, owned by the keeper below;
 *  - DeepStack mergers are stored under the vision block index they tap (v.deepstack.8.*), the
 *    Hugging Face list under its position (deepstack_merger_list.0.*);
 *  - the main merger is mm.0 / mm.2 with v.post_ln as its norm.
 * Everything else is data in the mapping, used in place.
 *
 * Threads: runs on the loading thread; the result is immutable.
 */
#include "common.h"
#include "gguf.h"
#include "gguf_model.h"
#include "internal.h"
#include "quant.h"

#include <cjson/cJSON.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What the wrapped vg_st keeps alive: both files, the rebuilt patch embedding, the names. */
typedef struct keeper {
    vg_gguf *text, *mm;
    float *patch;
    vg_arena *names;
} keeper;

static int keeper_locate(void *arg, const void *data, size_t n, int *fd, uint64_t *off)
{
    const keeper *k = arg;
    return vg_gguf_locate(k->text, data, n, fd, off) == 0 ? 0
                                                          : vg_gguf_locate(k->mm, data, n, fd, off);
}

static void keeper_free(void *arg)
{
    keeper *k = arg;
    if (!k)
        return;
    vg_gguf_close(k->text);
    vg_gguf_close(k->mm);
    free(k->patch);
    vg_arena_destroy(k->names);
    free(k);
}

/* ---------------------------------------------------------------------------------------------------
 * Finding the pair.
 */
static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* general.architecture of a GGUF file, copied into arch (empty when absent). */
static int read_arch(const char *path, char *arch, size_t cap, char *err, size_t errlen)
{
    vg_gguf *g;
    int rc = vg_gguf_open(path, &g, err, errlen);
    if (rc < 0)
        return rc;
    const char *s;
    size_t len;
    arch[0] = '\0';
    if (vg_gguf_get_str(g, "general.architecture", &s, &len, NULL, 0) == 0)
        snprintf(arch, cap, "%.*s", (int)VG_MIN(len, cap - 1), s);
    vg_gguf_close(g);
    return 0;
}

int vg_gguf_model_find(const char *path, char *text, size_t text_cap, char *mmproj, size_t mm_cap,
                       char *err, size_t errlen)
{
    struct stat sb;
    text[0] = mmproj[0] = '\0';
    if (stat(path, &sb) != 0)
        return 0;
    if (S_ISREG(sb.st_mode)) {
        if (!ends_with(path, ".gguf"))
            return 0;
        snprintf(text, text_cap, "%s", path);
        return 1;
    }
    if (!S_ISDIR(sb.st_mode))
        return 0;
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", path);
    if (access(p, F_OK) == 0)
        return 0; /* a Hugging Face checkpoint */
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int rc = 0, n = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".gguf"))
            continue;
        if ((size_t)snprintf(p, sizeof p, "%s/%s", path, e->d_name) >= sizeof p)
            continue;
        n++;
        char arch[64];
        if ((rc = read_arch(p, arch, sizeof arch, err, errlen)) < 0)
            break;
        char *dst = strcmp(arch, "clip") == 0 ? mmproj : strcmp(arch, "qwen3vl") == 0 ? text : NULL;
        size_t cap = dst == mmproj ? mm_cap : text_cap;
        if (!dst) {
            rc = vg_fail(err, errlen, VG_EMODEL,
                         "%s: architecture '%s' is neither a qwen3vl text model nor its clip "
                         "mmproj",
                         p, arch);
        } else if (dst[0]) {
            rc = vg_fail(err, errlen, VG_EMODEL,
                         "%s: two %s GGUF files (%s and %s): keep one pair per directory", path,
                         dst == mmproj ? "mmproj" : "qwen3vl text", dst, p);
        } else {
            snprintf(dst, cap, "%s", p);
        }
    }
    closedir(d);
    if (rc < 0)
        return rc;
    if (n == 0)
        return 0;
    if (!text[0])
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: GGUF files but no qwen3vl text model among them", path);
    return 1;
}

/* ---------------------------------------------------------------------------------------------------
 * Metadata -> config.json.
 */
#define CK(x)                                                                                      \
    do {                                                                                           \
        if ((rc = (x)) < 0)                                                                        \
            goto out;                                                                              \
    } while (0)

static int str_is(const vg_gguf *g, const char *key, const char *want)
{
    const char *s;
    size_t len;
    return vg_gguf_get_str(g, key, &s, &len, NULL, 0) == 0 && len == strlen(want) &&
           memcmp(s, want, len) == 0;
}

static int get_i(const vg_gguf *g, const char *key, int64_t *v, char *err, size_t errlen)
{
    return vg_gguf_get_int(g, key, 1, INT32_MAX, v, err, errlen);
}

static int text_config(const vg_gguf *g, cJSON *tc, int *n_deepstack, char *err, size_t errlen)
{
    int64_t v, kl, vl;
    double f;
    int rc = 0;
    const char *F = vg_gguf_base(g);
    static const struct {
        const char *key, *hf;
    } ints[] = {
        {"qwen3vl.embedding_length", "hidden_size"},
        {"qwen3vl.block_count", "num_hidden_layers"},
        {"qwen3vl.attention.head_count", "num_attention_heads"},
        {"qwen3vl.attention.head_count_kv", "num_key_value_heads"},
        {"qwen3vl.feed_forward_length", "intermediate_size"},
        {"qwen3vl.context_length", "max_position_embeddings"},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(ints); i++) {
        CK(get_i(g, ints[i].key, &v, err, errlen));
        cJSON_AddNumberToObject(tc, ints[i].hf, (double)v);
    }
    CK(get_i(g, "qwen3vl.attention.key_length", &kl, err, errlen));
    CK(get_i(g, "qwen3vl.attention.value_length", &vl, err, errlen));
    if (kl != vl)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: attention.key_length %lld differs from value_length %lld", F,
                       (long long)kl, (long long)vl);
    cJSON_AddNumberToObject(tc, "head_dim", (double)kl);
    CK(vg_gguf_get_float(g, "qwen3vl.attention.layer_norm_rms_epsilon", &f, err, errlen));
    cJSON_AddNumberToObject(tc, "rms_norm_eps", f);
    CK(vg_gguf_get_float(g, "qwen3vl.rope.freq_base", &f, err, errlen));
    cJSON_AddNumberToObject(tc, "rope_theta", f);
    const vg_gguf_kv *sec;
    CK(vg_gguf_get_arr(g, "qwen3vl.rope.dimension_sections", &sec, err, errlen));
    int64_t s[4] = {0, 0, 0, 0};
    for (uint64_t i = 0; i < sec->n && i < 4; i++)
        if (vg_gguf_arr_int(sec, i, &s[i]) < 0 || s[i] < 0 || s[i] > 4096)
            return vg_fail(err, errlen, VG_EMODEL,
                           "%s: qwen3vl.rope.dimension_sections[%llu] is not a small integer", F,
                           (unsigned long long)i);
    if (sec->n < 3 || sec->n > 4 || s[3] != 0)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: qwen3vl.rope.dimension_sections must be 3 sections (t, h, w) and a "
                       "zero, not %llu values",
                       F, (unsigned long long)sec->n);
    cJSON *rs = cJSON_AddObjectToObject(tc, "rope_scaling");
    cJSON *ms = cJSON_AddArrayToObject(rs, "mrope_section");
    for (int i = 0; i < 3; i++)
        cJSON_AddItemToArray(ms, cJSON_CreateNumber((double)s[i]));
    cJSON_AddBoolToObject(rs, "mrope_interleaved", 1);
    CK(vg_gguf_get_int(g, "qwen3vl.n_deepstack_layers", 0, 16, &v, err, errlen));
    *n_deepstack = (int)v;
    const vg_gguf_tensor *emb = vg_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->ndim != 2)
        return vg_fail(err, errlen, VG_EMODEL, "%s: tensor 'token_embd.weight' is missing", F);
    cJSON_AddNumberToObject(tc, "vocab_size", (double)emb->ne[1]);
    cJSON_AddBoolToObject(tc, "tie_word_embeddings", !vg_gguf_find_tensor(g, "output.weight"));
out:
    return rc;
}

static int vision_config(const vg_gguf *g, cJSON *vc, int n_deepstack, char *err, size_t errlen)
{
    int64_t v;
    int rc = 0;
    const char *F = vg_gguf_base(g);
    if (!str_is(g, "clip.projector_type", "qwen3vl_merger") &&
        !str_is(g, "clip.vision.projector_type", "qwen3vl_merger"))
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: clip.projector_type is not qwen3vl_merger (not a Qwen3-VL mmproj)", F);
    static const struct {
        const char *key, *hf;
    } ints[] = {
        {"clip.vision.block_count", "depth"},
        {"clip.vision.embedding_length", "hidden_size"},
        {"clip.vision.attention.head_count", "num_heads"},
        {"clip.vision.feed_forward_length", "intermediate_size"},
        {"clip.vision.projection_dim", "out_hidden_size"},
        {"clip.vision.patch_size", "patch_size"},
        {"clip.vision.spatial_merge_size", "spatial_merge_size"},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(ints); i++) {
        CK(get_i(g, ints[i].key, &v, err, errlen));
        cJSON_AddNumberToObject(vc, ints[i].hf, (double)v);
    }
    double eps;
    CK(vg_gguf_get_float(g, "clip.vision.attention.layer_norm_epsilon", &eps, err, errlen));
    if (eps < 0.99e-6 || eps > 1.01e-6)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: clip.vision.attention.layer_norm_epsilon %g: Qwen3-VL's vision "
                       "LayerNorms use 1e-6",
                       F, eps);
    const vg_gguf_tensor *pe = vg_gguf_find_tensor(g, "v.patch_embd.weight");
    const vg_gguf_tensor *pos = vg_gguf_find_tensor(g, "v.position_embd.weight");
    if (!pe || pe->ndim != 4)
        return vg_fail(err, errlen, VG_EMODEL, "%s: tensor 'v.patch_embd.weight' is missing", F);
    if (!pos || pos->ndim != 2)
        return vg_fail(err, errlen, VG_EMODEL, "%s: tensor 'v.position_embd.weight' is missing", F);
    cJSON_AddNumberToObject(vc, "in_channels", (double)pe->ne[2]);
    cJSON_AddNumberToObject(vc, "temporal_patch_size",
                            vg_gguf_find_tensor(g, "v.patch_embd.weight.1") ? 2 : 1);
    cJSON_AddNumberToObject(vc, "num_position_embeddings", (double)pos->ne[1]);
    const vg_gguf_kv *ds;
    CK(vg_gguf_get_arr(g, "clip.vision.is_deepstack_layers", &ds, err, errlen));
    cJSON *arr = cJSON_AddArrayToObject(vc, "deepstack_visual_indexes");
    int n = 0;
    for (uint64_t i = 0; i < ds->n; i++) {
        int64_t b;
        if (vg_gguf_arr_int(ds, i, &b) < 0)
            return vg_fail(err, errlen, VG_EMODEL,
                           "%s: clip.vision.is_deepstack_layers is not an array of booleans", F);
        if (b) {
            if (++n > 16)
                return vg_fail(err, errlen, VG_EMODEL, "%s: more than 16 DeepStack layers", F);
            cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)i));
        }
    }
    int64_t depth = 0;
    vg_gguf_get_int(g, "clip.vision.block_count", 1, INT32_MAX, &depth, NULL, 0);
    if ((int64_t)ds->n != depth)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: clip.vision.is_deepstack_layers has %llu entries for %lld blocks", F,
                       (unsigned long long)ds->n, (long long)depth);
    if (n != n_deepstack)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s marks %d DeepStack layers but the text model's n_deepstack_layers is %d",
                       F, n, n_deepstack);
out:
    return rc;
}

/* ---------------------------------------------------------------------------------------------------
 * tokenizer.ggml.* -> tokenizer.json.
 */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

static int build_tokenizer(const vg_gguf *g, vg_tokenizer **out, char *err, size_t errlen)
{
    const char *F = vg_gguf_base(g);
    if (!str_is(g, "tokenizer.ggml.model", "gpt2"))
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: tokenizer.ggml.model is not gpt2 (byte-level BPE, as Qwen3-VL's)", F);
    const char *pre;
    size_t plen;
    if (vg_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &plen, NULL, 0) == 0 &&
        !(plen == 5 && memcmp(pre, "qwen2", 5) == 0))
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: tokenizer.ggml.pre '%.*s' is not qwen2 (the pre-tokenizer vigil runs)",
                       F, (int)VG_MIN(plen, 64), pre);
    const vg_gguf_kv *toks, *types, *merges;
    int rc;
    if ((rc = vg_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks, err, errlen)) < 0 ||
        (rc = vg_gguf_get_arr(g, "tokenizer.ggml.token_type", &types, err, errlen)) < 0 ||
        (rc = vg_gguf_get_arr(g, "tokenizer.ggml.merges", &merges, err, errlen)) < 0)
        return rc;
    if (toks->arr_type != VG_GGUF_STRING || merges->arr_type != VG_GGUF_STRING ||
        types->n != toks->n || toks->n > (1u << 22))
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: tokenizer.ggml.tokens / token_type / merges are not string, integer "
                       "and string arrays of matching length (at most 4194304 tokens)",
                       F);
    cJSON *root = cJSON_CreateObject();
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON *mj = cJSON_AddArrayToObject(model, "merges");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "NFC");
    rc = 0;
    char *buf = malloc(65537);
    if (!root || !model || !vocab || !mj || !added || !norm || !buf) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "%s: out of memory for the tokenizer", F);
        goto out;
    }
    vg_gguf_str_iter it = {0};
    const char *s;
    size_t len;
    for (uint64_t id = 0; vg_gguf_arr_str_next(toks, &it, &s, &len); id++) {
        int64_t tt;
        if (vg_gguf_arr_int(types, id, &tt) < 0) {
            rc =
                vg_fail(err, errlen, VG_EMODEL, "%s: tokenizer.ggml.token_type is not integers", F);
            goto out;
        }
        if (tt == TT_UNUSED)
            continue; /* padding ids the converter invents for holes */
        if (len == 0 || len > 65536 || memchr(s, 0, len)) {
            rc = vg_fail(err, errlen, VG_EMODEL,
                         "%s: token %llu is empty, longer than 65536 bytes or holds a NUL", F,
                         (unsigned long long)id);
            goto out;
        }
        memcpy(buf, s, len);
        buf[len] = '\0';
        if (tt == TT_CONTROL || tt == TT_USER) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddItemToArray(added, a);
            cJSON_AddNumberToObject(a, "id", (double)id);
            cJSON_AddStringToObject(a, "content", buf);
            cJSON_AddBoolToObject(a, "special", tt == TT_CONTROL);
        } else if (tt == TT_NORMAL) {
            cJSON_AddNumberToObject(vocab, buf, (double)id);
        } else {
            rc = vg_fail(err, errlen, VG_EMODEL,
                         "%s: token %llu has type %lld (byte-level BPE has normal, control and "
                         "user-defined tokens)",
                         F, (unsigned long long)id, (long long)tt);
            goto out;
        }
    }
    /* merges: "a b" -> ["a", "b"] (tokenizers' newer array form, so spaces inside stay) */
    it.p = NULL;
    for (uint64_t i = 0; vg_gguf_arr_str_next(merges, &it, &s, &len); i++) {
        const char *sp = len <= 65536 ? memchr(s, ' ', len) : NULL;
        if (!sp || sp == s || sp == s + len - 1 || memchr(s, 0, len)) {
            rc = vg_fail(err, errlen, VG_EMODEL, "%s: merge %llu is not two tokens and a space", F,
                         (unsigned long long)i);
            goto out;
        }
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(mj, pair);
        memcpy(buf, s, (size_t)(sp - s));
        buf[sp - s] = '\0';
        cJSON_AddItemToArray(pair, cJSON_CreateString(buf));
        size_t rl = len - (size_t)(sp - s) - 1;
        memcpy(buf, sp + 1, rl);
        buf[rl] = '\0';
        cJSON_AddItemToArray(pair, cJSON_CreateString(buf));
    }
    rc = vg_tokenizer_from_cjson(root, F, out, err, errlen);
out:
    free(buf);
    cJSON_Delete(root);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------
 * Tensors.
 */
/* The Hugging Face name of a text-file tensor, or 0 when it is not one of the architecture's. */
static int text_name(const char *g, char *hf, size_t cap)
{
    static const struct {
        const char *gg, *hf;
    } glob[] =
        {
            {"token_embd.weight", "model.language_model.embed_tokens.weight"},
            {"output_norm.weight", "model.language_model.norm.weight"},
            {"output.weight", "lm_head.weight"},
        },
      blk[] = {
          {"attn_norm.weight", "input_layernorm.weight"},
          {"ffn_norm.weight", "post_attention_layernorm.weight"},
          {"attn_q.weight", "self_attn.q_proj.weight"},
          {"attn_k.weight", "self_attn.k_proj.weight"},
          {"attn_v.weight", "self_attn.v_proj.weight"},
          {"attn_output.weight", "self_attn.o_proj.weight"},
          {"attn_q_norm.weight", "self_attn.q_norm.weight"},
          {"attn_k_norm.weight", "self_attn.k_norm.weight"},
          {"ffn_gate.weight", "mlp.gate_proj.weight"},
          {"ffn_up.weight", "mlp.up_proj.weight"},
          {"ffn_down.weight", "mlp.down_proj.weight"},
      };
    for (size_t i = 0; i < VG_ARRAY_LEN(glob); i++)
        if (strcmp(g, glob[i].gg) == 0)
            return snprintf(hf, cap, "%s", glob[i].hf), 1;
    unsigned b;
    int n = 0;
    if (sscanf(g, "blk.%u.%n", &b, &n) != 1 || n == 0 || b > 100000)
        return 0;
    for (size_t i = 0; i < VG_ARRAY_LEN(blk); i++)
        if (strcmp(g + n, blk[i].gg) == 0)
            return snprintf(hf, cap, "model.language_model.layers.%u.%s", b, blk[i].hf), 1;
    return 0;
}

/* The Hugging Face name of an mmproj tensor (ds[] maps a tapped block to its DeepStack merger). */
static int vision_name(const char *g, const vg_model_info *info, char *hf, size_t cap)
{
    static const struct {
        const char *gg, *hf;
    } glob[] =
        {
            {"v.patch_embd.bias", "model.visual.patch_embed.proj.bias"},
            {"v.position_embd.weight", "model.visual.pos_embed.weight"},
            {"v.post_ln.weight", "model.visual.merger.norm.weight"},
            {"v.post_ln.bias", "model.visual.merger.norm.bias"},
            {"mm.0.weight", "model.visual.merger.linear_fc1.weight"},
            {"mm.0.bias", "model.visual.merger.linear_fc1.bias"},
            {"mm.2.weight", "model.visual.merger.linear_fc2.weight"},
            {"mm.2.bias", "model.visual.merger.linear_fc2.bias"},
        },
      blk[] =
          {
              {"ln1", "norm1"},
              {"ln2", "norm2"},
              {"attn_qkv", "attn.qkv"},
              {"attn_out", "attn.proj"},
              {"ffn_up", "mlp.linear_fc1"},
              {"ffn_down", "mlp.linear_fc2"},
          },
      ds[] = {{"norm", "norm"}, {"fc1", "linear_fc1"}, {"fc2", "linear_fc2"}};
    for (size_t i = 0; i < VG_ARRAY_LEN(glob); i++)
        if (strcmp(g, glob[i].gg) == 0)
            return snprintf(hf, cap, "%s", glob[i].hf), 1;
    unsigned b;
    int n = 0;
    char part[32], wb[8];
    if (sscanf(g, "v.blk.%u.%n", &b, &n) == 1 && n > 0 && b < 100000) {
        if (sscanf(g + n, "%31[a-z_0-9].%7[a-z]", part, wb) != 2 ||
            (strcmp(wb, "weight") && strcmp(wb, "bias")))
            return 0;
        char chk[64];
        snprintf(chk, sizeof chk, "%s.%s", part, wb);
        if (strcmp(chk, g + n) != 0)
            return 0;
        for (size_t i = 0; i < VG_ARRAY_LEN(blk); i++)
            if (strcmp(part, blk[i].gg) == 0)
                return snprintf(hf, cap, "model.visual.blocks.%u.%s.%s", b, blk[i].hf, wb), 1;
        return 0;
    }
    n = 0;
    if (sscanf(g, "v.deepstack.%u.%n", &b, &n) == 1 && n > 0) {
        int k = -1;
        for (int i = 0; i < info->n_deepstack; i++)
            if ((unsigned)info->deepstack_indexes[i] == b)
                k = i;
        if (k < 0 || sscanf(g + n, "%31[a-z_0-9].%7[a-z]", part, wb) != 2)
            return 0;
        char chk[64];
        snprintf(chk, sizeof chk, "%s.%s", part, wb);
        if (strcmp(chk, g + n) != 0 || (strcmp(wb, "weight") && strcmp(wb, "bias")))
            return 0;
        for (size_t i = 0; i < VG_ARRAY_LEN(ds); i++)
            if (strcmp(part, ds[i].gg) == 0)
                return snprintf(hf, cap, "model.visual.deepstack_merger_list.%d.%s.%s", k, ds[i].hf,
                                wb),
                       1;
    }
    return 0;
}

static int add_tensor(keeper *k, const vg_gguf *g, const vg_gguf_tensor *gt, const char *hf,
                      vg_tensor *dst, char *err, size_t errlen)
{
    vg_tensor t = {0};
    if (vg_dtype_from_ggml(gt->type, &t.dtype) != 0)
        return vg_fail(err, errlen, VG_EMODEL,
                       "%s: tensor '%s' has type %s, which vigil does not compute with (F32, F16, "
                       "BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K)",
                       vg_gguf_base(g), gt->name, vg_ggml_type_name(gt->type));
    t.name = vg_arena_strdup(k->names, hf);
    if (!t.name)
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory");
    t.ndim = gt->ndim;
    for (int d = 0; d < gt->ndim; d++)
        t.shape[d] = gt->ne[gt->ndim - 1 - d];
    t.numel = gt->numel;
    t.nbytes = gt->nbytes;
    t.data = gt->data;
    t.file = vg_gguf_path(g);
    *dst = t;
    return 0;
}

/* v.patch_embd.weight (+ .weight.1) -> one float32 [hid][C][T][p][p] tensor owned by k. */
static int add_patch(keeper *k, const vg_gguf *g, vg_tensor *dst, char *err, size_t errlen)
{
    const vg_gguf_tensor *h[2] = {vg_gguf_find_tensor(g, "v.patch_embd.weight"),
                                  vg_gguf_find_tensor(g, "v.patch_embd.weight.1")};
    int T = h[1] ? 2 : 1;
    const vg_gguf_tensor *a = h[0];
    for (int i = 0; i < T; i++)
        if (h[i]->ndim != 4 || !vg_quant_supported(h[i]->type) || h[i]->ne[0] != a->ne[0] ||
            h[i]->ne[1] != a->ne[1] || h[i]->ne[2] != a->ne[2] || h[i]->ne[3] != a->ne[3])
            return vg_fail(err, errlen, VG_EMODEL,
                           "%s: v.patch_embd.weight halves differ in shape or have an "
                           "unsupported type",
                           vg_gguf_base(g));
    size_t pp = (size_t)a->ne[0] * (size_t)a->ne[1], C = (size_t)a->ne[2], hid = (size_t)a->ne[3];
    size_t n = a->numel * (size_t)T;
    k->patch = malloc(n * sizeof(float));
    float *half = malloc(a->numel * sizeof(float) + 1);
    if (!k->patch || !half) {
        free(half);
        return vg_fail(err, errlen, VG_ENOMEM, "out of memory for the patch embedding");
    }
    for (int t = 0; t < T; t++) {
        vg_quant_dequant(h[t]->type, h[t]->data, a->numel, half);
        for (size_t o = 0; o < hid; o++)
            for (size_t c = 0; c < C; c++)
                memcpy(k->patch + ((o * C + c) * (size_t)T + (size_t)t) * pp,
                       half + (o * C + c) * pp, pp * sizeof(float));
    }
    free(half);
    vg_tensor t = {.dtype = VG_DT_F32, .ndim = 5, .numel = n, .nbytes = n * sizeof(float)};
    t.shape[0] = (int64_t)hid;
    t.shape[1] = (int64_t)C;
    t.shape[2] = T;
    t.shape[3] = a->ne[1];
    t.shape[4] = a->ne[0];
    t.data = k->patch;
    t.file = vg_gguf_path(g);
    t.name = "model.visual.patch_embed.proj.weight";
    *dst = t;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Opening.
 */
int vg_gguf_model_open(const char *text_path, const char *mmproj_path, const char *dir,
                       vg_model_info *info, vg_gen_params *gen, vg_st **st, vg_tokenizer **tok,
                       char *err, size_t errlen)
{
    keeper *k = calloc(1, sizeof *k);
    vg_tensor *ts = NULL;
    cJSON *root = NULL;
    char *json = NULL;
    vg_tokenizer *tk = NULL;
    vg_model_info in;
    vg_gen_params gp;
    int rc = 0;
    if (!k || !(k->names = vg_arena_create(0))) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = vg_gguf_open(text_path, &k->text, err, errlen)) < 0)
        goto fail;
    if (!str_is(k->text, "general.architecture", "qwen3vl")) {
        rc = vg_fail(err, errlen, VG_EMODEL,
                     "%s: general.architecture is not qwen3vl (a Qwen3-VL text model)",
                     vg_gguf_base(k->text));
        goto fail;
    }
    if (mmproj_path && (rc = vg_gguf_open(mmproj_path, &k->mm, err, errlen)) < 0)
        goto fail;
    if (k->mm && !str_is(k->mm, "general.architecture", "clip")) {
        rc = vg_fail(err, errlen, VG_EMODEL, "%s: general.architecture is not clip (an mmproj)",
                     vg_gguf_base(k->mm));
        goto fail;
    }

    /* the description, through config.c's checks */
    if ((rc = build_tokenizer(k->text, &tk, err, errlen)) < 0)
        goto fail;
    root = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("Qwen3VLForConditionalGeneration"));
    cJSON_AddStringToObject(root, "model_type", "qwen3_vl");
    cJSON *tc = cJSON_AddObjectToObject(root, "text_config");
    int n_ds = 0;
    if ((rc = text_config(k->text, tc, &n_ds, err, errlen)) < 0)
        goto fail;
    cJSON_AddBoolToObject(root, "tie_word_embeddings",
                          !vg_gguf_find_tensor(k->text, "output.weight"));
    if (k->mm) {
        cJSON *vc = cJSON_AddObjectToObject(root, "vision_config");
        if ((rc = vision_config(k->mm, vc, n_ds, err, errlen)) < 0)
            goto fail;
        static const struct {
            const char *tok, *key;
        } vt[] = {{"<|video_pad|>", "video_token_id"},
                  {"<|image_pad|>", "image_token_id"},
                  {"<|vision_start|>", "vision_start_token_id"},
                  {"<|vision_end|>", "vision_end_token_id"}};
        for (size_t i = 0; i < VG_ARRAY_LEN(vt); i++) {
            int32_t id = vg_tokenizer_token_id(tk, vt[i].tok);
            if (id < 0) {
                rc = vg_fail(err, errlen, VG_EMODEL,
                             "%s: the vocabulary has no %s token, which video input needs",
                             vg_gguf_base(k->text), vt[i].tok);
                goto fail;
            }
            cJSON_AddNumberToObject(root, vt[i].key, id);
        }
    }
    json = cJSON_PrintUnformatted(root);
    if (!json) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
        goto fail;
    }
    char sub[768];
    rc = vg_model_config_load_text(dir, text_path, json, strlen(json), &in, &gp, sub, sizeof sub);
    if (rc < 0) {
        vg_fail(err, errlen, rc, "%s (the GGUF metadata, read as config.json): %s",
                vg_gguf_base(k->text), sub);
        goto fail;
    }
    /* the mmproj's normalization, unless a video_preprocessor_config.json beside it decides */
    char pp[4096];
    if (k->mm && (!dir || (snprintf(pp, sizeof pp, "%s/video_preprocessor_config.json", dir),
                           access(pp, F_OK) != 0))) {
        const vg_gguf_kv *mean = vg_gguf_find_kv(k->mm, "clip.vision.image_mean");
        const vg_gguf_kv *std = vg_gguf_find_kv(k->mm, "clip.vision.image_std");
        for (int c = 0; c < 3 && mean && std; c++) {
            double m, s;
            if (vg_gguf_arr_float(mean, (uint64_t)c, &m) < 0 ||
                vg_gguf_arr_float(std, (uint64_t)c, &s) < 0 || !(s > 0) || m < -10 || m > 10) {
                rc = vg_fail(err, errlen, VG_EMODEL,
                             "%s: clip.vision.image_mean / image_std are not 3 floats (std > 0)",
                             vg_gguf_base(k->mm));
                goto fail;
            }
            in.image_mean[c] = (float)m;
            in.image_std[c] = (float)s;
        }
    }
    /* token ids the metadata gives */
    int64_t eos;
    if (vg_gguf_get_int(k->text, "tokenizer.ggml.eos_token_id", 0, INT32_MAX, &eos, NULL, 0) == 0) {
        if (eos >= (int64_t)vg_tokenizer_vocab_size(tk)) {
            rc = vg_fail(err, errlen, VG_EMODEL,
                         "%s: tokenizer.ggml.eos_token_id %lld is not a token id",
                         vg_gguf_base(k->text), (long long)eos);
            goto fail;
        }
        if (!dir ||
            (snprintf(pp, sizeof pp, "%s/generation_config.json", dir), access(pp, F_OK) != 0)) {
            int32_t eot = vg_tokenizer_token_id(tk, "<|endoftext|>");
            gp.n_stop_ids = 0;
            gp.stop_ids[gp.n_stop_ids++] = (int32_t)eos;
            if (eot >= 0 && eot != eos)
                gp.stop_ids[gp.n_stop_ids++] = eot;
        }
    }

    /* tensors, under their Hugging Face names */
    size_t nt = vg_gguf_n_tensors(k->text) + vg_gguf_n_tensors(k->mm);
    ts = calloc(nt ? nt : 1, sizeof *ts);
    if (!ts) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
        goto fail;
    }
    size_t n = 0;
    char hf[256];
    for (size_t i = 0; i < vg_gguf_n_tensors(k->text); i++) {
        const vg_gguf_tensor *gt = vg_gguf_tensor_at(k->text, i);
        if (!text_name(gt->name, hf, sizeof hf)) {
            rc = vg_fail(err, errlen, VG_EMODEL,
                         "%s: tensor '%s' is not part of the qwen3vl architecture",
                         vg_gguf_base(k->text), gt->name);
            goto fail;
        }
        if ((rc = add_tensor(k, k->text, gt, hf, &ts[n++], err, errlen)) < 0)
            goto fail;
    }
    int have_patch = 0;
    for (size_t i = 0; i < vg_gguf_n_tensors(k->mm); i++) {
        const vg_gguf_tensor *gt = vg_gguf_tensor_at(k->mm, i);
        if (strcmp(gt->name, "v.patch_embd.weight") == 0) {
            if ((rc = add_patch(k, k->mm, &ts[n++], err, errlen)) < 0)
                goto fail;
            have_patch = 1;
            continue;
        }
        if (strcmp(gt->name, "v.patch_embd.weight.1") == 0)
            continue;
        if (!vision_name(gt->name, &in, hf, sizeof hf)) {
            rc = vg_fail(err, errlen, VG_EMODEL,
                         "%s: tensor '%s' is not part of the Qwen3-VL vision tower",
                         vg_gguf_base(k->mm), gt->name);
            goto fail;
        }
        if ((rc = add_tensor(k, k->mm, gt, hf, &ts[n++], err, errlen)) < 0)
            goto fail;
    }
    if (k->mm && !have_patch) {
        rc = vg_fail(err, errlen, VG_EMODEL, "%s: tensor 'v.patch_embd.weight' is missing",
                     vg_gguf_base(k->mm));
        goto fail;
    }
    cJSON_Delete(root);
    free(json);
    rc = vg_st_wrap(ts, n, keeper_free, k, st, err, errlen); /* owns ts and k from here */
    if (rc < 0) {
        vg_tokenizer_free(tk);
        return rc;
    }
    vg_st_set_locate(*st, keeper_locate);
    *info = in;
    if (gen)
        *gen = gp;
    *tok = tk;
    return 0;
fail:
    cJSON_Delete(root);
    free(json);
    free(ts);
    vg_tokenizer_free(tk);
    keeper_free(k);
    return rc;
}
