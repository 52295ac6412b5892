/*
 * test_gguf_model.c: Qwen3-VL from GGUF files made by llama.cpp's own converter and quantizer
 * (tests/gguf/fixtures/demo, written by make_fixtures.sh from models/demo):
 *  - every tensor of every fixture dequantized by model/quant.c hashes to the same FNV-1a 64 as
 *    gguf-py's reference dequantization (the .deq files): bit-identical;
 *  - the F32 pair loads into the same model as the Hugging Face checkpoint: identical logits for a
 *    prompt and identical vision output for a slice; per type, the logits error against it and the
 *    greedy agreement over 16 steps are printed (and bounded for the 8-bit types);
 *  - the tokenizer built from tokenizer.ggml.* gives tokenizer.json's ids on
 *    tests/tokenizer/corpus.jsonl (and on the full Qwen vocabulary of ../shared/golden/tiny1 when
 *    make_fixtures.sh has converted it into build/gguf-tiny1);
 *  - broken pairs (a tensor the architecture lacks, missing metadata, a wrong shape, two text
 *    models in one directory) fail with a named error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common.h"
#include "gguf.h"
#include "gguf_model.h"
#include "model.h"
#include "quant.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIX  VG_SOURCE_DIR "/tests/gguf/fixtures/demo"
#define DEMO VG_SOURCE_DIR "/models/demo"

static char tmpdir[256];
static char err[1024];

static uint64_t fnv1a64(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static const char *const FILES[] = {
    "demo-f32",    "demo-f16",    "demo-bf16", "demo-q8_0", "demo-q4_0",
    "demo-q4_k_m", "demo-q5_k_m", "demo-q6_k", NULL,
};

static void test_dequant_matches_gguf_py(void **state)
{
    (void)state;
    const char *all[] = {"demo-f32",        "demo-f16",       "demo-bf16",   "demo-q8_0",
                         "demo-q4_0",       "demo-q4_k_m",    "demo-q5_k_m", "demo-q6_k",
                         "mmproj-demo-f32", "mmproj-demo-f16"};
    size_t checked = 0;
    for (size_t f = 0; f < VG_ARRAY_LEN(all); f++) {
        char path[512], deq[512];
        snprintf(path, sizeof path, "%s/%s.gguf", FIX, all[f]);
        snprintf(deq, sizeof deq, "%s/%s.deq", FIX, all[f]);
        vg_gguf *g = NULL;
        if (vg_gguf_open(path, &g, err, sizeof err) != 0)
            fail_msg("%s", err);
        FILE *df = fopen(deq, "r");
        assert_non_null(df);
        char name[256], type[32];
        size_t n;
        unsigned long long want;
        size_t lines = 0;
        while (fscanf(df, "%255s %31s %zu %llx", name, type, &n, &want) == 4) {
            const vg_gguf_tensor *t = vg_gguf_find_tensor(g, name);
            assert_non_null(t);
            assert_string_equal(vg_ggml_type_name(t->type), type);
            assert_int_equal(t->numel, n);
            float *v = malloc(n * sizeof *v + 1);
            assert_non_null(v);
            assert_int_equal(vg_quant_dequant(t->type, t->data, n, v), 0);
            if (fnv1a64(v, n * sizeof *v) != want)
                fail_msg("%s: tensor %s (%s) differs from gguf-py's dequantization", all[f], name,
                         type);
            free(v);
            lines++;
        }
        fclose(df);
        assert_int_equal(lines, vg_gguf_n_tensors(g));
        checked += lines;
        vg_gguf_close(g);
    }
    printf("dequantization identical to gguf-py for %zu tensors in %zu files\n", checked,
           VG_ARRAY_LEN(all));
}

/* vg_quant_quantize on demo-f32's values gives the very bytes llama-quantize (and, for q8_0,
 * gguf-py's quantizer in the converter) wrote, tensor by tensor and type by type. */
static void test_quantize_matches_llama(void **state)
{
    (void)state;
    vg_gguf *ref = NULL;
    assert_int_equal(vg_gguf_open(FIX "/demo-f32.gguf", &ref, err, sizeof err), 0);
    const char *files[] = {"demo-q8_0", "demo-q4_0", "demo-q4_k_m", "demo-q5_k_m",
                           "demo-q6_k", "demo-f16",  "demo-bf16"};
    int seen[64] = {0};
    for (size_t f = 0; f < VG_ARRAY_LEN(files); f++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.gguf", FIX, files[f]);
        vg_gguf *g = NULL;
        assert_int_equal(vg_gguf_open(path, &g, err, sizeof err), 0);
        for (size_t i = 0; i < vg_gguf_n_tensors(g); i++) {
            const vg_gguf_tensor *t = vg_gguf_tensor_at(g, i),
                                 *r = vg_gguf_find_tensor(ref, t->name);
            assert_non_null(r);
            assert_int_equal(r->type, VG_GGML_F32);
            unsigned char *q = malloc(t->nbytes + 1);
            assert_non_null(q);
            if (vg_quant_quantize(t->type, r->data, r->numel, q) != 0)
                fail_msg("%s: %s: cannot quantize to %s", files[f], t->name,
                         vg_ggml_type_name(t->type));
            if (memcmp(q, t->data, t->nbytes) != 0)
                fail_msg("%s: tensor %s (%s) differs from llama.cpp's bytes", files[f], t->name,
                         vg_ggml_type_name(t->type));
            seen[t->type < 64 ? t->type : 0] = 1;
            free(q);
        }
        vg_gguf_close(g);
    }
    vg_gguf_close(ref);
    const uint32_t want[] = {VG_GGML_Q8_0, VG_GGML_Q4_0, VG_GGML_Q5_0, VG_GGML_Q5_1, VG_GGML_Q4_K,
                             VG_GGML_Q5_K, VG_GGML_Q6_K, VG_GGML_F16,  VG_GGML_BF16};
    for (size_t i = 0; i < VG_ARRAY_LEN(want); i++)
        if (!seen[want[i]])
            fail_msg("no %s tensor among the fixtures", vg_ggml_type_name(want[i]));
}

/* A directory in tmpdir holding links to the text GGUF `text` and mmproj `mm`. */
static void pair_dir(char *dir, size_t cap, const char *text, const char *mm)
{
    snprintf(dir, cap, "%s/%s+%s", tmpdir, text, mm ? mm : "none");
    mkdir(dir, 0755);
    char src[512], dst[700];
    snprintf(src, sizeof src, "%s/%s.gguf", FIX, text);
    snprintf(dst, sizeof dst, "%s/%s.gguf", dir, text);
    unlink(dst);
    assert_int_equal(symlink(src, dst), 0);
    if (mm) {
        snprintf(src, sizeof src, "%s/%s.gguf", FIX, mm);
        snprintf(dst, sizeof dst, "%s/%s.gguf", dir, mm);
        unlink(dst);
        assert_int_equal(symlink(src, dst), 0);
    }
}

static vg_model *load(const char *dir, int wtype)
{
    vg_model_params p = vg_model_default_params();
    p.n_threads = 1;
    p.weight_type = wtype;
    vg_model *m = NULL;
    if (vg_model_load(dir, &p, &m, err, sizeof err) != 0)
        fail_msg("loading %s: %s", dir, err);
    return m;
}

#define NPROMPT 12
#define NGEN    16

/* Prefill a fixed prompt, then NGEN greedy steps: the first logits and the ids. */
static void run(vg_model *m, float *logits, int32_t *gen)
{
    const vg_model_info *in = vg_model_get_info(m);
    int32_t ids[NPROMPT], pos[3 * NPROMPT];
    for (int i = 0; i < NPROMPT; i++) {
        ids[i] = (int32_t)((i * 37 + 5) % (in->vocab_size - 40));
        pos[i] = pos[NPROMPT + i] = pos[2 * NPROMPT + i] = i;
    }
    vg_seq *s = NULL;
    assert_int_equal(vg_seq_create(m, 64, &s, err, sizeof err), 0);
    vg_prefill_input pi = {.ids = ids, .n = NPROMPT, .pos = pos};
    assert_int_equal(vg_seq_prefill(s, &pi, logits, 0, NULL, err, sizeof err), 0);
    float *l = malloc((size_t)in->vocab_size * sizeof *l);
    memcpy(l, logits, (size_t)in->vocab_size * sizeof *l);
    for (int t = 0; t < NGEN; t++) {
        int32_t best = 0;
        for (int v = 1; v < in->vocab_size; v++)
            if (l[v] > l[best])
                best = v;
        gen[t] = best;
        assert_int_equal(vg_seq_decode(s, best, NPROMPT + t, l, err, sizeof err), 0);
    }
    free(l);
    vg_seq_free(s);
}

static void test_f32_pair_equals_safetensors(void **state)
{
    (void)state;
    vg_model *hf = load(DEMO, VG_WEIGHTS_F32);
    char dir[512];
    pair_dir(dir, sizeof dir, "demo-f32", "mmproj-demo-f32");
    vg_model *gg = load(dir, VG_WEIGHTS_F32);
    const vg_model_info *a = vg_model_get_info(hf), *b = vg_model_get_info(gg);
    /* the description from the metadata equals config.json's */
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_memory_equal(a->mrope_section, b->mrope_section, sizeof a->mrope_section);
    assert_true(a->rms_norm_eps == b->rms_norm_eps && a->rope_theta == b->rope_theta);
    assert_int_equal(a->n_deepstack, b->n_deepstack);
    assert_memory_equal(a->deepstack_indexes, b->deepstack_indexes, sizeof a->deepstack_indexes);
    assert_int_equal(a->vision_depth, b->vision_depth);
    assert_int_equal(a->temporal_patch_size, b->temporal_patch_size);
    assert_int_equal(a->num_position_embeddings, b->num_position_embeddings);
    assert_int_equal(a->video_token_id, b->video_token_id);
    assert_int_equal(a->vision_start_token_id, b->vision_start_token_id);
    assert_int_equal(a->im_end_id, b->im_end_id);
    for (int c = 0; c < 3; c++)
        assert_true(fabsf(a->image_mean[c] - b->image_mean[c]) < 1e-6f &&
                    fabsf(a->image_std[c] - b->image_std[c]) < 1e-6f);
    assert_int_equal(a->n_params, b->n_params);
    /* text: identical logits and ids */
    size_t V = (size_t)a->vocab_size;
    float *la = malloc(V * sizeof *la), *lb = malloc(V * sizeof *lb);
    int32_t ga[NGEN], gb[NGEN];
    run(hf, la, ga);
    run(gg, lb, gb);
    assert_memory_equal(la, lb, V * sizeof *la);
    assert_memory_equal(ga, gb, sizeof ga);
    /* vision: one 4x4-patch slice */
    const int gh = 4, gw = 4,
              K = a->in_channels * a->temporal_patch_size * a->patch_size * a->patch_size;
    float *pix = malloc((size_t)gh * gw * K * sizeof *pix);
    for (int i = 0; i < gh * gw * K; i++)
        pix[i] = sinf((float)i * 0.37f);
    vg_vision_out *va = NULL, *vb = NULL;
    assert_int_equal(vg_model_encode_slice(hf, pix, gh, gw, NULL, &va, err, sizeof err), 0);
    assert_int_equal(vg_model_encode_slice(gg, pix, gh, gw, NULL, &vb, err, sizeof err), 0);
    assert_int_equal(va->n_tokens, vb->n_tokens);
    assert_memory_equal(va->embeds, vb->embeds, (size_t)va->n_tokens * va->dim * sizeof(float));
    assert_memory_equal(va->deepstack, vb->deepstack,
                        (size_t)va->n_deepstack * va->n_tokens * va->dim * sizeof(float));
    vg_vision_out_free(va);
    vg_vision_out_free(vb);
    free(pix);
    free(la);
    free(lb);
    vg_model_free(hf);
    vg_model_free(gg);
}

static void test_types_against_f32(void **state)
{
    (void)state;
    vg_model *ref = load(DEMO, VG_WEIGHTS_F32);
    size_t V = (size_t)vg_model_get_info(ref)->vocab_size;
    float *lr = malloc(V * sizeof *lr), *l = malloc(V * sizeof *l);
    int32_t gr[NGEN], g[NGEN];
    run(ref, lr, gr);
    printf("%-12s %-7s %-6s %12s %10s\n", "file", "loaded", "isa", "logits err", "greedy");
    for (int f = 0; FILES[f]; f++) {
        char dir[512];
        pair_dir(dir, sizeof dir, FILES[f], "mmproj-demo-f16");
        vg_model *m = load(dir, VG_WEIGHTS_AUTO);
        const vg_model_info *in = vg_model_get_info(m);
        run(m, l, g);
        double e = 0, mx = 0;
        for (size_t v = 0; v < V; v++) {
            e = fmax(e, fabs((double)l[v] - lr[v]));
            mx = fmax(mx, fabs((double)lr[v]));
        }
        int agree = 0;
        while (agree < NGEN && g[agree] == gr[agree])
            agree++;
        printf("%-12s %-7s %-6s %12.3e %7d/%d\n", FILES[f], vg_weight_type_name(in->weight_type),
               in->isa, e, agree, NGEN);
        /* 16-bit and 8-bit files stay close to float32 (max |logit| ~ %.1f) */
        if (strstr(FILES[f], "f16") || strstr(FILES[f], "q8_0"))
            assert_true(e < 0.05 * fmax(1.0, mx));
        vg_model_free(m);
        /* oneDNN prefill a slab of rows at a time (as the 8B MLP is): the same logits and ids
         * (VG_DNNL_SLAB_BYTES small enough to split gate/up and down in two; the K-quant down
         * projection goes through oneDNN at this prompt length, widened slab by slab), the
         * slabs unpacked with streaming stores as on a host with a small last-level cache
         * (VG_DNNL_LLC_BYTES; the run above kept them in this host's cache where it could) */
        setenv("VG_DNNL_SLAB_BYTES", "32768", 1);
        setenv("VG_DNNL_LLC_BYTES", "1", 1);
        m = load(dir, VG_WEIGHTS_AUTO);
        unsetenv("VG_DNNL_SLAB_BYTES");
        unsetenv("VG_DNNL_LLC_BYTES");
        float *ls = malloc(V * sizeof *ls);
        int32_t gs[NGEN];
        run(m, ls, gs);
        assert_memory_equal(ls, l, V * sizeof *ls);
        assert_memory_equal(gs, g, sizeof gs);
        free(ls);
        vg_model_free(m);
        if (strstr(FILES[f], "_k") || strstr(FILES[f], "q4_0")) { /* again requantized to Q8_0
                                                                      (VG_GGUF_BLOCKS=0) */
            setenv("VG_GGUF_BLOCKS", "0", 1);
            m = load(dir, VG_WEIGHTS_AUTO);
            unsetenv("VG_GGUF_BLOCKS");
            run(m, l, g);
            double eq = 0;
            for (size_t v = 0; v < V; v++)
                eq = fmax(eq, fabs((double)l[v] - lr[v]));
            agree = 0;
            while (agree < NGEN && g[agree] == gr[agree])
                agree++;
            printf("%-12s %-7s %-6s %12.3e %7d/%d  (blocks requantized to Q8_0)\n", FILES[f],
                   "q8_0", vg_model_get_info(m)->isa, eq, agree, NGEN);
            /* the blocks kept (the default) are no worse than requantizing, within noise */
            assert_true(e < 2.0 * eq + 0.05);
            vg_model_free(m);
        }
    }
    free(lr);
    free(l);
    vg_model_free(ref);
}

static void compare_tokenizers(const vg_tokenizer *a, const vg_tokenizer *b, const char *what)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tests/tokenizer/corpus.jsonl", VG_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[65536];
    size_t n = 0;
    assert_int_equal(vg_tokenizer_vocab_size(a), vg_tokenizer_vocab_size(b));
    while (fgets(line, sizeof line, f)) {
        cJSON *j = cJSON_Parse(line);
        if (!cJSON_IsString(j)) {
            cJSON_Delete(j);
            continue;
        }
        const char *s = j->valuestring;
        int32_t *ia = NULL, *ib = NULL;
        size_t na = 0, nb = 0;
        int ra = vg_tokenizer_encode(a, s, strlen(s), 1, &ia, &na);
        int rb = vg_tokenizer_encode(b, s, strlen(s), 1, &ib, &nb);
        assert_int_equal(ra, rb);
        if (ra == 0 && (na != nb || memcmp(ia, ib, na * sizeof *ia) != 0))
            fail_msg("%s: line %zu ('%.60s') tokenizes differently", what, n, s);
        free(ia);
        free(ib);
        cJSON_Delete(j);
        n++;
    }
    fclose(f);
    printf("%s: %zu corpus lines give identical ids\n", what, n);
}

static void test_tokenizer(void **state)
{
    (void)state;
    vg_tokenizer *hf = NULL;
    assert_int_equal(vg_tokenizer_load(DEMO "/tokenizer.json", &hf, err, sizeof err), 0);
    char dir[512];
    pair_dir(dir, sizeof dir, "demo-q8_0", NULL);
    vg_model_params p = vg_model_default_params();
    p.n_threads = 1;
    vg_model *m = NULL;
    assert_int_equal(vg_model_load(dir, &p, &m, err, sizeof err), 0);
    assert_int_equal(vg_model_get_info(m)->has_vision, 0); /* no mmproj: text only */
    compare_tokenizers(hf, vg_model_tokenizer(m), "demo");
    vg_model_free(m);
    vg_tokenizer_free(hf);

    /* the full Qwen vocabulary, when make_fixtures.sh has converted tiny1 */
    char tiny[600], ref[600];
    snprintf(tiny, sizeof tiny, "%s/gguf-tiny1/tiny1-q8_0.gguf", VG_BINARY_DIR);
    const char *sh = getenv("VG_SHARED_DIR");
    snprintf(ref, sizeof ref, "%s/golden/tiny1/tokenizer.json", sh && *sh ? sh : VG_SHARED_DIR);
    if (access(tiny, R_OK) != 0 || access(ref, R_OK) != 0) {
        printf("tiny1 GGUF not generated (tests/gguf/make_fixtures.sh): full-vocabulary check "
               "skipped\n");
        return;
    }
    vg_model_info info;
    vg_gen_params gen;
    vg_st *st = NULL;
    vg_tokenizer *tg = NULL;
    assert_int_equal(vg_gguf_model_open(tiny, NULL, NULL, &info, &gen, &st, &tg, err, sizeof err),
                     0);
    assert_int_equal(vg_tokenizer_load(ref, &hf, err, sizeof err), 0);
    compare_tokenizers(hf, tg, "tiny1 (Qwen3-VL vocabulary)");
    assert_int_equal(gen.stop_ids[0], 151645); /* tokenizer.ggml.eos_token_id: <|im_end|> */
    vg_tokenizer_free(hf);
    vg_tokenizer_free(tg);
    vg_st_close(st);
}

/* Every tensor of a and b (same names) has the same type, sizes and bytes. */
static void same_tensors(const char *pa, const char *pb)
{
    vg_gguf *a = NULL, *b = NULL;
    if (vg_gguf_open(pa, &a, err, sizeof err) != 0 || vg_gguf_open(pb, &b, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(vg_gguf_n_tensors(a), vg_gguf_n_tensors(b));
    for (size_t i = 0; i < vg_gguf_n_tensors(a); i++) {
        const vg_gguf_tensor *x = vg_gguf_tensor_at(a, i), *y = vg_gguf_find_tensor(b, x->name);
        if (!y || x->type != y->type || x->ndim != y->ndim ||
            memcmp(x->ne, y->ne, sizeof x->ne) != 0 || x->nbytes != y->nbytes ||
            memcmp(x->data, y->data, x->nbytes) != 0)
            fail_msg("%s: tensor %s (%s) differs from %s's", pa, x->name,
                     vg_ggml_type_name(x->type), pb);
    }
    vg_gguf_close(a);
    vg_gguf_close(b);
}

/* `vigil-model quantize` (vg_model_quantize) on models/demo: the tensors of llama.cpp's converter
 * and llama-quantize, byte for byte, and a directory vg_model_load runs like the fixture pair. */
static void test_quantize_command(void **state)
{
    (void)state;
    static const struct {
        const char *type, *file, *fixture;
    } t[] = {
        {"f16", "F16", "demo-f16"},          {"bf16", "BF16", "demo-bf16"},
        {"q8_0", "Q8_0", "demo-q8_0"},       {"q4_0", "Q4_0", "demo-q4_0"},
        {"q4_k_m", "Q4_K_M", "demo-q4_k_m"}, {"q5_k_m", "Q5_K_M", "demo-q5_k_m"},
        {"q6_k", "Q6_K", "demo-q6_k"},
    };
    for (size_t i = 0; i < VG_ARRAY_LEN(t); i++) {
        char out[512], text[1024], want[1100], mm[1100];
        snprintf(out, sizeof out, "%s/quantized/%s", tmpdir, t[i].type);
        if (vg_model_quantize(DEMO, t[i].type, out, text, sizeof text, err, sizeof err) != 0)
            fail_msg("quantize %s: %s", t[i].type, err);
        snprintf(want, sizeof want, "%s/demo-%s.gguf", out, t[i].file);
        assert_string_equal(text, want);
        snprintf(want, sizeof want, "%s/%s.gguf", FIX, t[i].fixture);
        same_tensors(text, want);
        if (strcmp(t[i].type, "bf16") != 0) {
            snprintf(mm, sizeof mm, "%s/mmproj-demo-F16.gguf", out);
            same_tensors(mm, FIX "/mmproj-demo-f16.gguf");
        }
        snprintf(mm, sizeof mm, "%s/generation_config.json", out);
        assert_int_equal(access(mm, R_OK), 0);
        vg_model *m = load(out, VG_WEIGHTS_AUTO);
        assert_int_equal(vg_model_get_info(m)->has_vision, 1);
        vg_model_free(m);
    }
    assert_int_equal(vg_model_quantize(DEMO, "q3_k_s", tmpdir, NULL, 0, err, sizeof err),
                     VG_EINVAL);
    assert_non_null(strstr(err, "unknown type 'q3_k_s'"));
}

/* A copy of a fixture with the first occurrence of `from` replaced by `to` (same length). */
static void patched(const char *dir, const char *fixture, const char *from, const char *to)
{
    char src[512], dst[700];
    snprintf(src, sizeof src, "%s/%s.gguf", FIX, fixture);
    snprintf(dst, sizeof dst, "%s/%s.gguf", dir, fixture);
    FILE *f = fopen(src, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    assert_int_equal(strlen(from), strlen(to));
    char *hit = memmem(b, (size_t)n, from, strlen(from));
    assert_non_null(hit);
    memcpy(hit, to, strlen(to));
    f = fopen(dst, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    free(b);
}

static void expect_load_error(const char *dir, const char *want)
{
    vg_model_params p = vg_model_default_params();
    p.n_threads = 1;
    vg_model *m = NULL;
    err[0] = '\0';
    int rc = vg_model_load(dir, &p, &m, err, sizeof err);
    if (rc >= 0 || !strstr(err, want))
        fail_msg("%s: expected an error with '%s', got %d: %s", dir, want, rc, err);
    assert_null(m);
}

static void test_broken_pairs(void **state)
{
    (void)state;
    /* the fuzzer's smallest valid text model maps (so fuzz_gguf starts inside gguf_model.c) */
    vg_model_info info;
    vg_gen_params gen;
    vg_st *st = NULL;
    vg_tokenizer *tok = NULL;
    if (vg_gguf_model_open(VG_SOURCE_DIR "/tests/fuzz/corpus/fuzz_gguf/qwen3vl_min", NULL, NULL,
                           &info, &gen, &st, &tok, err, sizeof err) != 0)
        fail_msg("qwen3vl_min: %s", err);
    assert_int_equal(info.vocab_size, 6);
    assert_int_equal(gen.stop_ids[0], 4);
    assert_int_equal(vg_tokenizer_token_id(tok, "ab"), 2);
    assert_non_null(vg_st_find(st, "model.language_model.layers.0.self_attn.q_proj.weight"));
    vg_st_close(st);
    vg_tokenizer_free(tok);

    char dir[600];
    snprintf(dir, sizeof dir, "%s/bad1", tmpdir);
    mkdir(dir, 0755);
    patched(dir, "demo-f32", "blk.1.ffn_up.weight", "blk.1.ffn_xx.weight");
    expect_load_error(dir, "tensor 'blk.1.ffn_xx.weight' is not part of the qwen3vl");
    snprintf(dir, sizeof dir, "%s/bad2", tmpdir);
    mkdir(dir, 0755);
    patched(dir, "demo-f32", "qwen3vl.block_count", "qwen3vl.block_xount");
    expect_load_error(dir, "metadata key 'qwen3vl.block_count' is missing");
    snprintf(dir, sizeof dir, "%s/bad3", tmpdir);
    mkdir(dir, 0755);
    patched(dir, "mmproj-demo-f32", "v.deepstack.", "v.deepstacc.");
    char src[512], dst[700];
    snprintf(src, sizeof src, "%s/demo-f32.gguf", FIX);
    snprintf(dst, sizeof dst, "%s/demo-f32.gguf", dir);
    assert_int_equal(symlink(src, dst), 0);
    expect_load_error(dir, "is not part of the Qwen3-VL vision tower");
    /* metadata that disagrees with the tensors: 3 layers said, 2 stored */
    snprintf(dir, sizeof dir, "%s/bad4", tmpdir);
    mkdir(dir, 0755);
    patched(dir, "demo-f32", "qwen3vl.attention.head_count_kv", "qwen3vl.attention.head_count_kx");
    expect_load_error(dir, "head_count_kv' is missing");
    /* two text models */
    snprintf(dir, sizeof dir, "%s/bad5", tmpdir);
    mkdir(dir, 0755);
    snprintf(dst, sizeof dst, "%s/a.gguf", dir);
    assert_int_equal(symlink(src, dst), 0);
    snprintf(dst, sizeof dst, "%s/b.gguf", dir);
    assert_int_equal(symlink(src, dst), 0);
    expect_load_error(dir, "two qwen3vl text GGUF files");
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vg-test-ggufm-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dequant_matches_gguf_py),
        cmocka_unit_test(test_quantize_matches_llama),
        cmocka_unit_test(test_f32_pair_equals_safetensors),
        cmocka_unit_test(test_types_against_f32),
        cmocka_unit_test(test_tokenizer),
        cmocka_unit_test(test_broken_pairs),
        cmocka_unit_test(test_quantize_command),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
