/*
 * test_loader.c: unit tests of model/safetensors.c, model/config.c and model/random.c: dtype
 * conversions, the golden tiny1 checkpoint (skipped when ../shared is absent), write/read round
 * trips, random checkpoints, sharded indexes, and one test per hostile checkpoint or config that
 * asserts both the error code and that the message names the file and tensor/field at fault.
 * Everything runs in a private temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cmds.h"
#include "common.h"
#include "internal.h"

#include <cjson/cJSON.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];
static char err[1024];

static const char *shared_dir(void)
{
    const char *s = getenv("VG_SHARED_DIR");
    return s && *s ? s : VG_SHARED_DIR;
}

static int golden_dir(char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/golden/tiny1", shared_dir());
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", buf);
    return access(p, R_OK) == 0;
}

static void path_in(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmpdir, name);
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            rm_rf(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vg_test_loader.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rm_rf(tmpdir);
    return 0;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    unlink(path); /* a fresh file: truncating one with data makes ext4 flush it on close */
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n)
        assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void write_str(const char *path, const char *s)
{
    write_bytes(path, s, strlen(s));
}

/* A safetensors file with the given header text (length prefix = actual length unless hlen_override
 * != 0) followed by data_len bytes of data. */
static void write_st_raw(const char *path, const char *header, uint64_t hlen_override,
                         size_t data_len)
{
    size_t hl = strlen(header);
    size_t n = 8 + hl + data_len;
    unsigned char *buf = calloc(1, n);
    assert_non_null(buf);
    uint64_t v = hlen_override ? hlen_override : hl;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(v >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + hl + i] = (unsigned char)i;
    write_bytes(path, buf, n);
    free(buf);
}

/* Opens a hostile file and checks the code and that err mentions every needle. */
static void expect_open_fail(const char *path, int code, const char *n1, const char *n2)
{
    vg_st *st = NULL;
    err[0] = '\0';
    int rc = vg_st_open_file(path, &st, err, sizeof err);
    if (rc != code)
        fprintf(stderr, "rc %d (%s), err: %s\n", rc, vg_strerror(rc), err);
    assert_int_equal(rc, code);
    assert_null(st);
    assert_non_null(strstr(err, path));
    if (n1 && !strstr(err, n1))
        fail_msg("'%s' not in '%s'", n1, err);
    if (n2 && !strstr(err, n2))
        fail_msg("'%s' not in '%s'", n2, err);
}

/* ---- conversions ---- */
static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_conversions(void **state)
{
    (void)state;
    assert_int_equal(vg_f32_to_bf16(1.0f), 0x3f80);
    assert_true(vg_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(vg_bf16_to_f32(0xc040) == -3.0f);
    /* Round to nearest even: halfway cases go to the even mantissa. */
    assert_int_equal(vg_f32_to_bf16(from_bits(0x3f808000)), 0x3f80); /* tie, even below */
    assert_int_equal(vg_f32_to_bf16(from_bits(0x3f818000)), 0x3f82); /* tie, even above */
    assert_int_equal(vg_f32_to_bf16(from_bits(0x3f808001)), 0x3f81); /* above the tie */
    assert_int_equal(vg_f32_to_bf16(from_bits(0x3f807fff)), 0x3f80);
    /* Overflow rounds to infinity; infinities and NaN survive. */
    assert_int_equal(vg_f32_to_bf16(from_bits(0x7f7fffff)), 0x7f80);
    assert_int_equal(vg_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(vg_f32_to_bf16(-INFINITY), 0xff80);
    uint16_t n = vg_f32_to_bf16(from_bits(0x7f800001)); /* signalling NaN with low bits only */
    assert_true(isnan(vg_bf16_to_f32(n)));
    assert_true(isnan(vg_bf16_to_f32(vg_f32_to_bf16(NAN))));
    assert_true(isnan(vg_bf16_to_f32(vg_f32_to_bf16(-NAN))));
    /* Every bf16 value survives f32 and back. */
    for (uint32_t v = 0; v < 0x10000; v++) {
        float f = vg_bf16_to_f32((uint16_t)v);
        if (!isnan(f))
            assert_int_equal(vg_f32_to_bf16(f), v);
        assert_int_equal(bits(f), v << 16);
    }
    /* f16. */
    assert_true(vg_f16_to_f32(0x3c00) == 1.0f);
    assert_true(vg_f16_to_f32(0xc000) == -2.0f);
    assert_true(vg_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(vg_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(vg_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    assert_true(vg_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    assert_true(vg_f16_to_f32(0x8001) == -ldexpf(1.0f, -24));
    assert_int_equal(bits(vg_f16_to_f32(0x8000)), 0x80000000u);
    assert_true(isinf(vg_f16_to_f32(0x7c00)) && vg_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(vg_f16_to_f32(0xfc00)) && vg_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(vg_f16_to_f32(0x7e00)));
    assert_true(isnan(vg_f16_to_f32(0x7c01)));
    assert_true(vg_f16_to_f32(0x3555) == 0x155 / 1024.0f * 0.25f + 0.25f);
}

/* ---- golden tiny1 ---- */
static void test_golden_checkpoint(void **state)
{
    (void)state;
    char dir[512];
    if (!golden_dir(dir, sizeof dir))
        skip();
    vg_st *st = NULL;
    assert_int_equal(vg_st_open_dir(dir, &st, err, sizeof err), 0);
    assert_int_equal(vg_st_count(st), 121);
    const vg_tensor *t;
    int64_t emb[2] = {151936, 128};
    assert_int_equal(
        vg_st_expect(st, "model.language_model.embed_tokens.weight", 2, emb, &t, err, sizeof err),
        0);
    assert_int_equal(t->dtype, VG_DT_BF16);
    assert_int_equal(t->numel, 151936 * 128);
    assert_int_equal(t->nbytes, 151936 * 128 * 2);
    float *e = NULL;
    assert_int_equal(vg_st_get_f32(st, t->name, 2, emb, &e, err, sizeof err), 0);
    /* Values read independently (Python struct) from the file. */
    assert_true(e[0] == -0.15234375f && e[1] == -0.0751953125f && e[2] == -0.0654296875f &&
                e[3] == -0.1611328125f);
    const float *last = e + (size_t)151935 * 128;
    assert_true(last[0] == 0.0245361328125f && last[1] == 0.07958984375f &&
                last[2] == 0.1513671875f && last[3] == 0.03759765625f);
    free(e);
    int64_t pe[5] = {64, 3, 2, 16, 16};
    float *w = NULL;
    assert_int_equal(
        vg_st_get_f32(st, "model.visual.patch_embed.proj.weight", 5, pe, &w, err, sizeof err), 0);
    assert_true(w[0] == 0.02197265625f && w[1] == 0.052001953125f && w[2] == -0.0166015625f &&
                w[3] == 0.005859375f);
    free(w);
    int64_t h[1] = {128};
    assert_int_equal(
        vg_st_get_f32(st, "model.language_model.norm.weight", 1, h, &w, err, sizeof err), 0);
    assert_true(w[0] == 1.0390625f && w[3] == 1.1171875f);
    free(w);
    assert_null(vg_st_find(st, "lm_head.weight"));
    assert_null(vg_st_find(st, "__metadata__"));
    /* vg_st_at walks the tensors in name order; vg_st_bytes sums them. */
    size_t sum = 0;
    for (size_t i = 0; i < vg_st_count(st); i++) {
        if (i)
            assert_true(strcmp(vg_st_at(st, i - 1)->name, vg_st_at(st, i)->name) < 0);
        sum += vg_st_at(st, i)->nbytes;
        assert_non_null(strstr(vg_st_at(st, i)->file, "model.safetensors"));
    }
    assert_int_equal(sum, vg_st_bytes(st));
    assert_null(vg_st_at(st, vg_st_count(st)));
    /* Wrong shape and missing tensor name the file and the tensor. */
    int64_t bad[2] = {128, 151936};
    assert_int_equal(
        vg_st_expect(st, "model.language_model.embed_tokens.weight", 2, bad, NULL, err, sizeof err),
        VG_EMODEL);
    assert_string_equal(err, "model.safetensors: tensor 'model.language_model.embed_tokens.weight'"
                             ": shape [151936,128], expected [128,151936]");
    assert_int_equal(
        vg_st_expect(st, "model.language_model.embed_tokens.weight", 1, emb, NULL, err, sizeof err),
        VG_EMODEL);
    assert_int_equal(vg_st_expect(st, "lm_head.weight", 2, emb, NULL, err, sizeof err), VG_EMODEL);
    assert_non_null(strstr(err, "lm_head.weight"));
    assert_non_null(strstr(err, "model.safetensors"));
    assert_non_null(strstr(err, "missing"));
    vg_st_close(st);
    vg_st_close(NULL);
}

static void test_golden_config(void **state)
{
    (void)state;
    char dir[512];
    if (!golden_dir(dir, sizeof dir))
        skip();
    vg_model_info m;
    vg_gen_params g;
    assert_int_equal(vg_model_config_load(dir, &m, &g, err, sizeof err), 0);
    assert_string_equal(m.name, "tiny1");
    assert_int_equal(m.hidden_size, 128);
    assert_int_equal(m.n_layers, 4);
    assert_int_equal(m.n_heads, 4);
    assert_int_equal(m.n_kv_heads, 2);
    assert_int_equal(m.head_dim, 32);
    assert_int_equal(m.intermediate_size, 256);
    assert_int_equal(m.vocab_size, 151936);
    assert_true(m.rms_norm_eps == 1e-6f);
    assert_true(m.rope_theta == 5000000.0f);
    assert_int_equal(m.mrope_section[0], 6);
    assert_int_equal(m.mrope_section[1], 5);
    assert_int_equal(m.mrope_section[2], 5);
    assert_int_equal(m.mrope_interleaved, 1);
    assert_int_equal(m.tie_word_embeddings, 1);
    assert_int_equal(m.max_position_embeddings, 262144);
    assert_int_equal(m.has_vision, 1);
    assert_int_equal(m.vision_depth, 4);
    assert_int_equal(m.vision_hidden, 64);
    assert_int_equal(m.vision_heads, 4);
    assert_int_equal(m.vision_intermediate, 128);
    assert_int_equal(m.out_hidden_size, 128);
    assert_int_equal(m.patch_size, 16);
    assert_int_equal(m.temporal_patch_size, 2);
    assert_int_equal(m.spatial_merge_size, 2);
    assert_int_equal(m.in_channels, 3);
    assert_int_equal(m.num_position_embeddings, 64);
    assert_int_equal(m.n_deepstack, 3);
    assert_int_equal(m.deepstack_indexes[0], 1);
    assert_int_equal(m.deepstack_indexes[2], 3);
    assert_int_equal(m.video_token_id, 151656);
    assert_int_equal(m.image_token_id, 151655);
    assert_int_equal(m.vision_start_token_id, 151652);
    assert_int_equal(m.vision_end_token_id, 151653);
    assert_int_equal(m.im_start_id, 151644);
    assert_int_equal(m.im_end_id, 151645);
    assert_int_equal(m.endoftext_id, 151643);
    assert_true(m.image_mean[0] == 0.5f && m.image_std[2] == 0.5f);
    assert_int_equal(m.video_min_pixels, 4096);
    assert_int_equal(m.video_max_pixels, 25165824);
    assert_true(m.video_fps == 2.0);
    /* generation_config.json has eos 151645 only and no sampling fields. */
    assert_int_equal(g.n_stop_ids, 1);
    assert_int_equal(g.stop_ids[0], 151645);
    assert_int_equal(g.do_sample, 1);
    assert_true(g.top_p == 0.8f && g.top_k == 20 && g.temperature == 0.7f);
    assert_true(g.presence_penalty == 1.5f && g.repetition_penalty == 1.0f);
    assert_int_equal(g.seed, 3407);
    assert_int_equal(g.max_new_tokens, 32768);
}

/* ---- write / read ---- */
static void test_roundtrip(void **state)
{
    (void)state;
    char path[512];
    path_in(path, sizeof path, "rt.safetensors");
    float f32[6] = {1.5f, -2.25f, 0.0f, 3e-20f, 65504.0f, -0.125f};
    uint16_t bf[4] = {0x3f80, 0xbf80, 0x4000, 0x0001};
    uint16_t f16[3] = {0x3c00, 0x0001, 0xfc00};
    float scalar = 42.0f;
    vg_st_write_tensor ts[5] = {
        {.name = "z.f32", .dtype = VG_DT_F32, .ndim = 2, .shape = {2, 3}, .data = f32},
        {.name = "a.bf16", .dtype = VG_DT_BF16, .ndim = 1, .shape = {4}, .data = bf},
        {.name = "m.f16", .dtype = VG_DT_F16, .ndim = 3, .shape = {3, 1, 1}, .data = f16},
        {.name = "scalar", .dtype = VG_DT_F32, .ndim = 0, .data = &scalar},
        {.name = "empty \"q\"", .dtype = VG_DT_BF16, .ndim = 2, .shape = {0, 7}, .data = NULL},
    };
    assert_int_equal(vg_st_write(path, ts, 5, err, sizeof err), 0);
    char tmp[520];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);

    /* The header is 8-byte aligned, padded with spaces, keys sorted with metadata first. */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char len8[8];
    assert_int_equal(fread(len8, 1, 8, f), 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | len8[i];
    assert_int_equal(hl % 8, 0);
    char *hdr = calloc(1, hl + 1);
    assert_int_equal(fread(hdr, 1, hl, f), hl);
    fclose(f);
    assert_memory_equal(hdr, "{\"__metadata__\":{\"format\":\"pt\"}", 31);
    const char *pa = strstr(hdr, "\"a.bf16\""), *pe = strstr(hdr, "\"empty \\\"q\\\"\""),
               *pm = strstr(hdr, "\"m.f16\""), *pz = strstr(hdr, "\"z.f32\"");
    assert_true(pa && pe && pm && pz && pa < pe && pe < pm && pm < pz);
    size_t end = strlen(hdr);
    while (end && hdr[end - 1] == ' ')
        end--;
    assert_int_equal(hdr[end - 1], '}');
    free(hdr);

    vg_st *st = NULL;
    assert_int_equal(vg_st_open_file(path, &st, err, sizeof err), 0);
    assert_int_equal(vg_st_count(st), 5);
    const vg_tensor *t = vg_st_find(st, "z.f32");
    assert_non_null(t);
    assert_int_equal(t->dtype, VG_DT_F32);
    assert_int_equal(t->ndim, 2);
    assert_memory_equal(t->data, f32, sizeof f32);
    float out[6];
    vg_tensor_to_f32(t, out);
    assert_memory_equal(out, f32, sizeof f32);
    t = vg_st_find(st, "a.bf16");
    vg_tensor_to_f32(t, out);
    assert_true(out[0] == 1.0f && out[1] == -1.0f && out[2] == 2.0f && out[3] == vg_bf16_to_f32(1));
    t = vg_st_find(st, "m.f16");
    assert_int_equal(t->shape[0], 3);
    vg_tensor_to_f32(t, out);
    assert_true(out[0] == 1.0f && out[1] == ldexpf(1.0f, -24) && isinf(out[2]) && out[2] < 0);
    t = vg_st_find(st, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->numel, 1);
    vg_tensor_to_f32(t, out);
    assert_true(out[0] == 42.0f);
    t = vg_st_find(st, "empty \"q\"");
    assert_non_null(t);
    assert_int_equal(t->numel, 0);
    assert_int_equal(vg_st_bytes(st), 24 + 8 + 6 + 4);
    vg_st_close(st);

    /* Duplicate names are refused by the writer, and nothing is left behind. */
    vg_st_write_tensor dup[2] = {ts[0], ts[0]};
    char p2[512];
    path_in(p2, sizeof p2, "dup.safetensors");
    assert_int_equal(vg_st_write(p2, dup, 2, err, sizeof err), VG_EINVAL);
    assert_non_null(strstr(err, "z.f32"));
    assert_int_not_equal(access(p2, F_OK), 0);
    snprintf(tmp, sizeof tmp, "%s.tmp", p2);
    assert_int_not_equal(access(tmp, F_OK), 0);

    /* The streaming writer checks the byte count. */
    vg_st_writer *w = NULL;
    assert_int_equal(vg_st_writer_open(p2, ts, 1, &w, err, sizeof err), 0);
    assert_int_equal(vg_st_writer_write(w, f32, 8, err, sizeof err), 0);
    assert_int_equal(vg_st_writer_finish(w, err, sizeof err), VG_EINVAL);
    assert_int_not_equal(access(p2, F_OK), 0);
    assert_int_equal(vg_st_writer_open(p2, ts, 1, &w, err, sizeof err), 0);
    assert_int_equal(vg_st_writer_write(w, f32, 28, err, sizeof err), VG_EINVAL);
    vg_st_writer_abort(w);
    assert_int_not_equal(access(tmp, F_OK), 0);
}

/* ---- hostile safetensors files ---- */
static void test_hostile_files(void **state)
{
    (void)state;
    char p[512];

    path_in(p, sizeof p, "trunc.safetensors");
    write_bytes(p, "\x10\0\0\0\0", 5);
    expect_open_fail(p, VG_EFORMAT, "truncated", NULL);

    path_in(p, sizeof p, "empty.safetensors");
    write_bytes(p, "", 0);
    expect_open_fail(p, VG_EFORMAT, "truncated", NULL);

    path_in(p, sizeof p, "hlen.safetensors");
    write_st_raw(p, "{}", 1000, 0);
    expect_open_fail(p, VG_EFORMAT, "header length 1000", "past the end");
    write_st_raw(p, "{}", UINT64_MAX, 0);
    expect_open_fail(p, VG_EFORMAT, "past the end", NULL);

    path_in(p, sizeof p, "notjson.safetensors");
    write_st_raw(p, "{\"a\": {\"dtype\": \"F32\",", 0, 16);
    expect_open_fail(p, VG_EFORMAT, "not valid JSON", NULL);
    write_st_raw(p, "[1, 2, 3]", 0, 0);
    expect_open_fail(p, VG_EFORMAT, "not a JSON object", NULL);
    write_st_raw(p, "{\"a\": 5}", 0, 0);
    expect_open_fail(p, VG_EFORMAT, "'a'", "not an object");

    path_in(p, sizeof p, "overlap.safetensors");
    write_st_raw(p,
                 "{\"first\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"second\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                 0, 16);
    expect_open_fail(p, VG_EFORMAT, "'first' and 'second' overlap", NULL);
    /* Touching but not overlapping is fine; zero-size tensors overlap nothing. */
    write_st_raw(p,
                 "{\"first\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"none\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                 "\"second\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}",
                 0, 16);
    vg_st *st = NULL;
    assert_int_equal(vg_st_open_file(p, &st, err, sizeof err), 0);
    assert_int_equal(vg_st_count(st), 3);
    vg_st_close(st);

    path_in(p, sizeof p, "range.safetensors");
    write_st_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 0, 16);
    expect_open_fail(p, VG_EFORMAT, "tensor 'w'", "outside the 16-byte data section");
    write_st_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 0, 16);
    expect_open_fail(p, VG_EFORMAT, "tensor 'w'", "data_offsets");
    write_st_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 0, 16);
    expect_open_fail(p, VG_EFORMAT, "tensor 'w'", "data_offsets");
    write_st_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 0, 16);
    expect_open_fail(p, VG_EFORMAT, "tensor 'w'", "data_offsets");
    write_st_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4.5]}}", 0, 16);
    expect_open_fail(p, VG_EFORMAT, "tensor 'w'", "data_offsets");

    path_in(p, sizeof p, "numel.safetensors");
    write_st_raw(p, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[3,2],\"data_offsets\":[0,16]}}", 0, 16);
    expect_open_fail(p, VG_EFORMAT, "tensor 'w'", "shape [3,2] of BF16 needs 12 bytes");
    write_st_raw(p,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                 "\"data_offsets\":[0,16]}}",
                 0, 16);
    expect_open_fail(p, VG_EFORMAT, "tensor 'w'", "overflows");
    write_st_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, 16);
    expect_open_fail(p, VG_EFORMAT, "tensor 'w'", "shape[0]");
    write_st_raw(p,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                 "\"data_offsets\":[0,4]}}",
                 0, 16);
    expect_open_fail(p, VG_EFORMAT, "tensor 'w'", "9 dimensions");
    write_st_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,16]}}", 0, 16);
    expect_open_fail(p, VG_EFORMAT, "tensor 'w'", NULL);

    path_in(p, sizeof p, "dtype.safetensors");
    write_st_raw(p, "{\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 0, 16);
    expect_open_fail(p, VG_EMODEL, "tensor 'ids'", "dtype 'I64'");

    path_in(p, sizeof p, "dup.safetensors");
    write_st_raw(p,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                 0, 16);
    expect_open_fail(p, VG_EFORMAT, "duplicate tensor 'w'", NULL);

    path_in(p, sizeof p, "meta.safetensors");
    write_st_raw(p, "{\"__metadata__\":[1]}", 0, 0);
    expect_open_fail(p, VG_EFORMAT, "__metadata__", NULL);

    /* Misaligned data (header length not a multiple of 4) still reads correctly via memcpy. */
    path_in(p, sizeof p, "misaligned.safetensors");
    /* Header of 168 bytes: F32 at data offset 1, BF16 and F16 at offset 9 (all misaligned). */
    const char *h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]},"
                    "\"v\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[9,13]},"
                    "\"u\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[13,15]}}    ";
    size_t hl = strlen(h);
    assert_int_equal(hl % 8, 0);
    unsigned char buf[512] = {0};
    buf[0] = (unsigned char)hl;
    memcpy(buf + 8, h, hl);
    float vals[2] = {3.5f, -7.0f};
    memcpy(buf + 8 + hl + 1, vals, 8);
    uint16_t bv[2] = {0x3f80, 0xc000}, hv = 0x3c00;
    memcpy(buf + 8 + hl + 9, bv, 4);
    memcpy(buf + 8 + hl + 13, &hv, 2);
    write_bytes(p, buf, 8 + hl + 15);
    assert_int_equal(vg_st_open_file(p, &st, err, sizeof err), 0);
    const vg_tensor *t = vg_st_find(st, "w");
    assert_true(((uintptr_t)t->data & 3) != 0);
    float out[2];
    vg_tensor_to_f32(t, out);
    assert_true(out[0] == 3.5f && out[1] == -7.0f);
    t = vg_st_find(st, "v");
    assert_true(((uintptr_t)t->data & 1) != 0);
    vg_tensor_to_f32(t, out);
    assert_true(out[0] == 1.0f && out[1] == -2.0f);
    t = vg_st_find(st, "u");
    assert_true(((uintptr_t)t->data & 1) != 0);
    vg_tensor_to_f32(t, out);
    assert_true(out[0] == 1.0f);
    vg_st_close(st);

    /* Missing file and missing checkpoint. */
    path_in(p, sizeof p, "nope.safetensors");
    expect_open_fail(p, VG_ENOENT, NULL, NULL);
    char d[512];
    path_in(d, sizeof d, "emptydir");
    mkdir(d, 0755);
    assert_int_equal(vg_st_open_dir(d, &st, err, sizeof err), VG_ENOENT);
    assert_non_null(strstr(err, d));
}

/* ---- mutation sweep: every truncation and many random byte flips never crash ---- */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_mutations(void **state)
{
    (void)state;
    char path[512], mut[512];
    path_in(path, sizeof path, "good.safetensors");
    path_in(mut, sizeof mut, "mut.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[5] = {1, 2, 3, 4, 5};
    vg_st_write_tensor ts[2] = {
        {.name = "a", .dtype = VG_DT_F32, .ndim = 2, .shape = {2, 3}, .data = a},
        {.name = "b", .dtype = VG_DT_BF16, .ndim = 1, .shape = {5}, .data = b},
    };
    assert_int_equal(vg_st_write(path, ts, 2, err, sizeof err), 0);
    char *good;
    size_t len;
    assert_int_equal(vg_read_file(path, 1 << 20, &good, &len, err, sizeof err), 0);
    vg_st *st = NULL;
    /* Every proper prefix is refused (the tensors' bytes run to the end of the file). */
    for (size_t n = 0; n < len; n++) {
        write_bytes(mut, good, n);
        int rc = vg_st_open_file(mut, &st, err, sizeof err);
        if (rc == 0)
            fail_msg("prefix of %zu bytes opened", n);
        assert_true(rc < 0 && strstr(err, mut));
    }
    /* Random flips: either a clean error or tensors that lie inside the file. */
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int opened = 0;
    char *buf = malloc(len);
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, good, len);
        int flips = 1 + (int)(rng_next(&seed) % 3);
        for (int k = 0; k < flips; k++) {
            size_t at = rng_next(&seed) % VG_MIN(len, (size_t)120);
            buf[at] = (char)rng_next(&seed);
        }
        write_bytes(mut, buf, len);
        err[0] = '\0';
        int rc = vg_st_open_file(mut, &st, err, sizeof err);
        if (rc == 0) {
            opened++;
            for (size_t i = 0; i < vg_st_count(st); i++) {
                const vg_tensor *t = vg_st_at(st, i);
                float *v = NULL;
                assert_int_equal(vg_st_get_f32(st, t->name, t->ndim, t->shape, &v, err, sizeof err),
                                 0);
                free(v);
            }
            vg_st_close(st);
        } else {
            assert_true(rc < 0);
            assert_non_null(strstr(err, mut));
        }
    }
    assert_true(opened > 0); /* flips in numbers' digits or the padding can keep it valid */
    free(buf);
    free(good);

    /* The same for config.json text. */
    vg_model_info p, q;
    assert_int_equal(vg_random_preset("tiny", &p, err, sizeof err), 0);
    p.video_token_id = p.image_token_id = p.vision_start_token_id = p.vision_end_token_id = 300;
    char *cfg = vg_random_config_json(&p);
    size_t cl = strlen(cfg);
    char *c2 = malloc(cl + 1);
    for (int it = 0; it < 3000; it++) {
        memcpy(c2, cfg, cl + 1);
        size_t at = rng_next(&seed) % cl;
        c2[at] = (char)("0123456789-.e[]{}\",: x"[rng_next(&seed) % 22]);
        size_t n = it % 7 == 0 ? rng_next(&seed) % cl : cl;
        int rc = vg_model_config_parse(c2, n, &q, err, sizeof err);
        if (rc != 0) {
            assert_true(rc == VG_EMODEL || rc == VG_EFORMAT);
            assert_non_null(strstr(err, "config.json"));
        } else {
            assert_true(q.hidden_size > 0 && q.n_layers > 0 && q.head_dim % 2 == 0);
        }
    }
    free(c2);
    free(cfg);
}

/* ---- sharded checkpoints ---- */
static void test_sharded(void **state)
{
    (void)state;
    /* Source: a random tiny checkpoint, split into two shards in name order. */
    char src[512], dir[512];
    path_in(src, sizeof src, "shard_src");
    vg_random_spec spec = {.preset = "tiny", .seed = 5};
    assert_int_equal(vg_model_write_random(&spec, src, err, sizeof err), 0);
    vg_st *st = NULL;
    assert_int_equal(vg_st_open_dir(src, &st, err, sizeof err), 0);
    size_t n = vg_st_count(st), half = n / 2;
    vg_st_write_tensor *w = calloc(n, sizeof *w);
    for (size_t i = 0; i < n; i++) {
        const vg_tensor *t = vg_st_at(st, i);
        w[i].name = t->name;
        w[i].dtype = t->dtype;
        w[i].ndim = t->ndim;
        memcpy(w[i].shape, t->shape, sizeof w[i].shape);
        w[i].data = t->data;
    }
    path_in(dir, sizeof dir, "sharded");
    mkdir(dir, 0755);
    char p[600];
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    assert_int_equal(vg_st_write(p, w, half, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    assert_int_equal(vg_st_write(p, w + half, n - half, err, sizeof err), 0);
    cJSON *idx = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(idx, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)vg_st_bytes(st));
    cJSON *wm = cJSON_AddObjectToObject(idx, "weight_map");
    for (size_t i = 0; i < n; i++)
        cJSON_AddStringToObject(wm, w[i].name,
                                i < half ? "model-00001-of-00002.safetensors"
                                         : "model-00002-of-00002.safetensors");
    char *text = cJSON_Print(idx);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_str(p, text);
    free(text);

    vg_st *sh = NULL;
    assert_int_equal(vg_st_open_dir(dir, &sh, err, sizeof err), 0);
    assert_int_equal(vg_st_count(sh), n);
    assert_int_equal(vg_st_bytes(sh), vg_st_bytes(st));
    for (size_t i = 0; i < n; i++) {
        const vg_tensor *a = vg_st_at(st, i), *b = vg_st_find(sh, a->name);
        assert_non_null(b);
        assert_int_equal(a->nbytes, b->nbytes);
        assert_memory_equal(a->data, b->data, a->nbytes);
        assert_non_null(strstr(b->file, i < half ? "00001" : "00002"));
    }
    int64_t bad[1] = {3};
    assert_int_equal(vg_st_expect(sh, w[0].name, 1, bad, NULL, err, sizeof err), VG_EMODEL);
    assert_non_null(strstr(err, "model-00001-of-00002.safetensors"));
    assert_non_null(strstr(err, w[0].name));
    assert_int_equal(vg_st_expect(sh, "model.nope", 1, bad, NULL, err, sizeof err), VG_EMODEL);
    assert_non_null(strstr(err, "model.nope"));
    vg_st_close(sh);

    /* An index naming a tensor its shard lacks. */
    cJSON_AddStringToObject(wm, "model.ghost.weight", "model-00001-of-00002.safetensors");
    text = cJSON_Print(idx);
    write_str(p, text);
    free(text);
    assert_int_equal(vg_st_open_dir(dir, &sh, err, sizeof err), VG_EMODEL);
    assert_non_null(strstr(err, "model.ghost.weight"));
    assert_non_null(strstr(err, "model.safetensors.index.json"));
    cJSON_DeleteItemFromObject(wm, "model.ghost.weight");

    /* Shard names that leave the directory. */
    const char *evil[] = {"../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors",
                          "..", ""};
    for (size_t k = 0; k < VG_ARRAY_LEN(evil); k++) {
        cJSON_ReplaceItemInObject(wm, w[0].name, cJSON_CreateString(evil[k]));
        text = cJSON_Print(idx);
        write_str(p, text);
        free(text);
        assert_int_equal(vg_st_open_dir(dir, &sh, err, sizeof err), VG_EFORMAT);
        assert_non_null(strstr(err, "model.safetensors.index.json"));
        assert_non_null(strstr(err, w[0].name));
        assert_non_null(strstr(err, "plain file name"));
    }
    /* A shard that is missing, a tensor in two shards, a malformed index. */
    cJSON_ReplaceItemInObject(wm, w[0].name, cJSON_CreateString("model-00003.safetensors"));
    text = cJSON_Print(idx);
    write_str(p, text);
    free(text);
    assert_int_equal(vg_st_open_dir(dir, &sh, err, sizeof err), VG_ENOENT);
    assert_non_null(strstr(err, "model-00003.safetensors"));
    char p3[700];
    snprintf(p3, sizeof p3, "%s/model-00003.safetensors", dir);
    assert_int_equal(vg_st_write(p3, w, 1, err, sizeof err), 0);
    assert_int_equal(vg_st_open_dir(dir, &sh, err, sizeof err), VG_EFORMAT);
    assert_non_null(strstr(err, "duplicate tensor"));
    assert_non_null(strstr(err, w[0].name));
    write_str(p, "{\"weight_map\": [1]}");
    assert_int_equal(vg_st_open_dir(dir, &sh, err, sizeof err), VG_EFORMAT);
    assert_non_null(strstr(err, "weight_map"));
    write_str(p, "{\"weight_map\": ");
    assert_int_equal(vg_st_open_dir(dir, &sh, err, sizeof err), VG_EFORMAT);
    assert_non_null(strstr(err, "model.safetensors.index.json"));
    /* Writing a random checkpoint over the directory drops the stale index. */
    assert_int_equal(vg_model_write_random(&spec, dir, err, sizeof err), 0);
    assert_int_not_equal(access(p, F_OK), 0);
    assert_int_equal(vg_st_open_dir(dir, &sh, err, sizeof err), 0);
    assert_int_equal(vg_st_count(sh), n);
    assert_null(strstr(vg_st_at(sh, 0)->file, "-of-"));
    vg_st_close(sh);
    cJSON_Delete(idx);
    free(w);
    vg_st_close(st);
}

/* ---- random checkpoints ---- */
static int32_t tok_id(const char *tokenizer_path, const char *content)
{
    char *text;
    size_t len;
    assert_int_equal(vg_read_file(tokenizer_path, 1 << 26, &text, &len, err, sizeof err), 0);
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    assert_non_null(root);
    int32_t id = -1;
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(root, "added_tokens"))
    {
        if (strcmp(cJSON_GetObjectItem(a, "content")->valuestring, content) == 0)
            id = (int32_t)cJSON_GetObjectItem(a, "id")->valuedouble;
    }
    const cJSON *vocab = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "vocab");
    if (id < 0 && cJSON_GetObjectItem(vocab, content))
        id = (int32_t)cJSON_GetObjectItem(vocab, content)->valuedouble;
    cJSON_Delete(root);
    return id;
}

static void check_random_dir(const char *dir, int expect_tied)
{
    vg_model_info m;
    vg_gen_params g;
    assert_int_equal(vg_model_config_load(dir, &m, &g, err, sizeof err), 0);
    char tp[600];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", dir);
    assert_int_equal(m.video_token_id, tok_id(tp, "<|video_pad|>"));
    assert_int_equal(m.image_token_id, tok_id(tp, "<|image_pad|>"));
    assert_int_equal(m.vision_start_token_id, tok_id(tp, "<|vision_start|>"));
    assert_int_equal(m.vision_end_token_id, tok_id(tp, "<|vision_end|>"));
    assert_int_equal(g.n_stop_ids, 2);
    assert_int_equal(g.stop_ids[0], tok_id(tp, "<|im_end|>"));
    assert_int_equal(g.stop_ids[1], tok_id(tp, "<|endoftext|>"));
    assert_int_equal(m.tie_word_embeddings, expect_tied);

    vg_st *st = NULL;
    assert_int_equal(vg_st_open_dir(dir, &st, err, sizeof err), 0);
    size_t expect = 3 + 12 * (size_t)m.vision_depth + 6 * (1 + (size_t)m.n_deepstack) + 1 +
                    11 * (size_t)m.n_layers + 1 + (expect_tied ? 0 : 1);
    assert_int_equal(vg_st_count(st), expect);
    /* Every tensor reloads; shapes as the engine will expect them. */
    const int64_t D = m.vision_hidden, H = m.hidden_size, M4 = D * 4;
    int64_t s2[2] = {3 * D, D};
    assert_int_equal(
        vg_st_expect(st, "model.visual.blocks.0.attn.qkv.weight", 2, s2, NULL, err, sizeof err), 0);
    int64_t s5[5] = {D, 3, 2, 16, 16};
    assert_int_equal(
        vg_st_expect(st, "model.visual.patch_embed.proj.weight", 5, s5, NULL, err, sizeof err), 0);
    int64_t s1[1] = {M4};
    assert_int_equal(vg_st_expect(st, "model.visual.deepstack_merger_list.0.norm.weight", 1, s1,
                                  NULL, err, sizeof err),
                     0);
    s1[0] = D;
    assert_int_equal(
        vg_st_expect(st, "model.visual.merger.norm.bias", 1, s1, NULL, err, sizeof err), 0);
    int64_t kv[2] = {(int64_t)m.n_kv_heads * m.head_dim, H};
    assert_int_equal(vg_st_expect(st, "model.language_model.layers.1.self_attn.k_proj.weight", 2,
                                  kv, NULL, err, sizeof err),
                     0);
    int64_t emb[2] = {m.vocab_size, H};
    assert_int_equal(
        vg_st_expect(st, "model.language_model.embed_tokens.weight", 2, emb, NULL, err, sizeof err),
        0);
    assert_int_equal(vg_st_find(st, "lm_head.weight") != NULL, !expect_tied);
    for (size_t i = 0; i < vg_st_count(st); i++) {
        const vg_tensor *t = vg_st_at(st, i);
        assert_int_equal(t->dtype, VG_DT_BF16);
        float *v = NULL;
        assert_int_equal(vg_st_get_f32(st, t->name, t->ndim, t->shape, &v, err, sizeof err), 0);
        double sum = 0, sq = 0;
        for (size_t k = 0; k < t->numel; k++) {
            assert_true(isfinite(v[k]));
            sum += v[k];
            sq += (double)v[k] * v[k];
        }
        size_t len = strlen(t->name);
        int is_norm = strstr(t->name, "norm") && strcmp(t->name + len - 7, ".weight") == 0;
        if (is_norm) {
            assert_true(sum == (double)t->numel && sq == (double)t->numel);
        } else if (t->numel >= 4096) {
            double mean = sum / t->numel, sd = sqrt(sq / t->numel - mean * mean);
            int bias = strcmp(t->name + len - 5, ".bias") == 0;
            double want = bias ? 0.01 : 0.02;
            if (fabs(mean) > 0.002 || fabs(sd - want) > 0.1 * want)
                fail_msg("%s: mean %g sd %g", t->name, mean, sd);
        }
        free(v);
    }
    vg_st_close(st);
}

static void test_random_tiny(void **state)
{
    (void)state;
    char a[512], b[512], c[512];
    path_in(a, sizeof a, "tiny_a");
    path_in(b, sizeof b, "tiny_b");
    path_in(c, sizeof c, "tiny_c");
    vg_random_spec spec = {.preset = "tiny", .seed = 7};
    assert_int_equal(vg_model_write_random(&spec, a, err, sizeof err), 0);
    check_random_dir(a, 1);
    vg_model_info m;
    assert_int_equal(vg_model_config_load(a, &m, NULL, err, sizeof err), 0);
    assert_string_equal(m.name, "tiny_a");
    assert_int_equal(m.vocab_size, 512);
    assert_true(m.video_token_id < 512 && m.video_token_id > 256);
    char tp[600];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", a);
    assert_true(tok_id(tp, "\xc4\xa0seconds") > 255); /* "Ġseconds" is one merged token */
    assert_int_equal(tok_id(tp, "0"), 15);            /* byte tokens in GPT-2 order */
    assert_int_equal(tok_id(tp, "!"), 0);
    assert_int_equal(tok_id(tp, "\xc4\x80"), 188); /* 'Ā' = byte 0 */
    assert_int_equal(tok_id(tp, "12"), -1);        /* digits never merge */

    /* Same seed: identical bytes; another seed: different weights. */
    assert_int_equal(vg_model_write_random(&spec, b, err, sizeof err), 0);
    spec.seed = 8;
    assert_int_equal(vg_model_write_random(&spec, c, err, sizeof err), 0);
    char pa[600], pb[600], pc[600];
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    snprintf(pc, sizeof pc, "%s/model.safetensors", c);
    char *da, *db, *dc;
    size_t la, lb, lc;
    assert_int_equal(vg_read_file(pa, 1 << 28, &da, &la, err, sizeof err), 0);
    assert_int_equal(vg_read_file(pb, 1 << 28, &db, &lb, err, sizeof err), 0);
    assert_int_equal(vg_read_file(pc, 1 << 28, &dc, &lc, err, sizeof err), 0);
    assert_int_equal(la, lb);
    assert_int_equal(la, lc);
    assert_memory_equal(da, db, la);
    assert_true(memcmp(da, dc, la) != 0);
    free(da);
    free(db);
    free(dc);

    /* --config with an untied variant of the tiny config; a real tokenizer when available. */
    vg_model_info t;
    assert_int_equal(vg_random_preset("tiny", &t, err, sizeof err), 0);
    t.tie_word_embeddings = 0;
    t.n_layers = 3;
    t.video_token_id = 300;
    t.image_token_id = 301;
    t.vision_start_token_id = 302;
    t.vision_end_token_id = 303;
    char *cfg = vg_random_config_json(&t);
    char cp[512];
    path_in(cp, sizeof cp, "untied_config.json");
    write_str(cp, cfg);
    free(cfg);
    char u[512];
    path_in(u, sizeof u, "tiny_untied");
    vg_random_spec s2 = {.config_path = cp, .seed = 1, .std = 0.02f};
    assert_int_equal(vg_model_write_random(&s2, u, err, sizeof err), 0);
    check_random_dir(u, 0);

    char gd[512];
    if (golden_dir(gd, sizeof gd)) {
        char tok[700];
        snprintf(tok, sizeof tok, "%s/tokenizer.json", gd);
        char r[512];
        path_in(r, sizeof r, "tiny_realtok");
        vg_random_spec s3 = {.preset = "tiny", .tokenizer_src = tok};
        assert_int_equal(vg_model_write_random(&s3, r, err, sizeof err), 0);
        assert_int_equal(vg_model_config_load(r, &m, NULL, err, sizeof err), 0);
        assert_int_equal(m.video_token_id, 151656);
        assert_int_equal(m.vision_start_token_id, 151652);
        assert_true(m.vocab_size >= 151669);
        /* --config with the golden config: exactly the golden checkpoint's names and shapes. */
        char gc[700], rg[512];
        snprintf(gc, sizeof gc, "%s/config.json", gd);
        path_in(rg, sizeof rg, "golden_layout");
        vg_random_spec s5 = {.config_path = gc, .tokenizer_src = tok, .seed = 2};
        assert_int_equal(vg_model_write_random(&s5, rg, err, sizeof err), 0);
        vg_st *gs = NULL, *rs = NULL;
        assert_int_equal(vg_st_open_dir(gd, &gs, err, sizeof err), 0);
        assert_int_equal(vg_st_open_dir(rg, &rs, err, sizeof err), 0);
        assert_int_equal(vg_st_count(gs), vg_st_count(rs));
        for (size_t i = 0; i < vg_st_count(gs); i++) {
            const vg_tensor *ga = vg_st_at(gs, i), *ra = vg_st_at(rs, i);
            assert_string_equal(ga->name, ra->name);
            assert_int_equal(ga->dtype, ra->dtype);
            assert_int_equal(ga->ndim, ra->ndim);
            assert_memory_equal(ga->shape, ra->shape, sizeof ga->shape);
        }
        vg_st_close(gs);
        vg_st_close(rs);
        vg_model_info gi, ri;
        assert_int_equal(vg_model_config_load(gd, &gi, NULL, err, sizeof err), 0);
        assert_int_equal(vg_model_config_load(rg, &ri, NULL, err, sizeof err), 0);
        char *gj = vg_random_config_json(&gi), *rj = vg_random_config_json(&ri);
        assert_string_equal(gj, rj); /* every config.json field the engine reads */
        free(gj);
        free(rj);
        assert_int_equal(gi.im_start_id, ri.im_start_id);
        assert_int_equal(gi.endoftext_id, ri.endoftext_id);

        /* With --config the vocabulary cannot grow: a clear error. */
        vg_random_spec s4 = {.config_path = cp, .tokenizer_src = tok};
        assert_int_equal(vg_model_write_random(&s4, r, err, sizeof err), VG_EMODEL);
        assert_non_null(strstr(err, "vocab_size"));
    }

    /* Bad specs. */
    vg_random_spec bad = {.preset = "13b"};
    assert_int_equal(vg_model_write_random(&bad, a, err, sizeof err), VG_EINVAL);
    assert_non_null(strstr(err, "13b"));
    bad.preset = NULL;
    assert_int_equal(vg_model_write_random(&bad, a, err, sizeof err), VG_EINVAL);
    bad.preset = "tiny";
    bad.std = -1.0f;
    assert_int_equal(vg_model_write_random(&bad, a, err, sizeof err), VG_EINVAL);
}

static void test_presets_config(void **state)
{
    (void)state;
    const char *names[] = {"2b", "4b", "8b", "tiny"};
    const int hidden[] = {2048, 2560, 4096, 128}, layers[] = {28, 36, 36, 2},
              vdepth[] = {24, 24, 27, 2}, tied[] = {1, 1, 0, 1}, ds0[] = {5, 5, 8, 0};
    for (int i = 0; i < 4; i++) {
        vg_model_info p, q;
        assert_int_equal(vg_random_preset(names[i], &p, err, sizeof err), 0);
        p.video_token_id = 151656;
        p.image_token_id = 151655;
        p.vision_start_token_id = 151652;
        p.vision_end_token_id = 151653;
        if (p.vocab_size < 151936) {
            p.video_token_id = 300;
            p.image_token_id = 301;
            p.vision_start_token_id = 302;
            p.vision_end_token_id = 303;
        }
        char *json = vg_random_config_json(&p);
        assert_non_null(json);
        assert_int_equal(vg_model_config_parse(json, strlen(json), &q, err, sizeof err), 0);
        free(json);
        assert_int_equal(q.hidden_size, hidden[i]);
        assert_int_equal(q.n_layers, layers[i]);
        assert_int_equal(q.vision_depth, vdepth[i]);
        assert_int_equal(q.tie_word_embeddings, tied[i]);
        assert_int_equal(q.deepstack_indexes[0], ds0[i]);
        assert_int_equal(q.head_dim, p.head_dim);
        assert_int_equal(q.n_kv_heads, p.n_kv_heads);
        assert_int_equal(q.intermediate_size, p.intermediate_size);
        assert_int_equal(q.vision_intermediate, p.vision_intermediate);
        assert_int_equal(q.out_hidden_size, p.hidden_size);
        assert_int_equal(q.n_deepstack, p.n_deepstack);
        assert_int_equal(q.video_token_id, p.video_token_id);
        assert_memory_equal(q.mrope_section, p.mrope_section, sizeof p.mrope_section);
        assert_true(q.rope_theta == 5000000.0f && q.rms_norm_eps == 1e-6f);
    }
    assert_int_equal(vg_random_preset("3b", NULL, err, sizeof err), VG_EINVAL);
}

/* ---- hostile configs ---- */
/* The tiny preset's config.json with one field replaced (value given as JSON text, or NULL to
 * delete it); section "" is the top level. Returns the parse result. */
static int parse_mutated(const char *section, const char *key, const char *value)
{
    vg_model_info p, q;
    assert_int_equal(vg_random_preset("tiny", &p, err, sizeof err), 0);
    p.video_token_id = 300;
    p.image_token_id = 301;
    p.vision_start_token_id = 302;
    p.vision_end_token_id = 303;
    char *json = vg_random_config_json(&p);
    cJSON *root = cJSON_Parse(json);
    free(json);
    cJSON *obj = *section ? cJSON_GetObjectItem(root, section) : root;
    if (strchr(key, '/')) { /* "rope_scaling/mrope_section" */
        char k1[64];
        snprintf(k1, sizeof k1, "%.*s", (int)(strchr(key, '/') - key), key);
        obj = cJSON_GetObjectItem(obj, k1);
        key = strchr(key, '/') + 1;
    }
    assert_non_null(obj);
    cJSON_DeleteItemFromObject(obj, key);
    if (value) {
        cJSON *v = cJSON_Parse(value);
        assert_non_null(v);
        cJSON_AddItemToObject(obj, key, v);
    }
    json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    err[0] = '\0';
    int rc = vg_model_config_parse(json, strlen(json), &q, err, sizeof err);
    free(json);
    return rc;
}

static void expect_cfg(const char *section, const char *key, const char *value, int code,
                       const char *needle)
{
    int rc = parse_mutated(section, key, value);
    if (rc != code || !strstr(err, "config.json") || (needle && !strstr(err, needle)))
        fail_msg("%s.%s=%s: rc %d, err '%s' (want %d, '%s')", section, key,
                 value ? value : "(deleted)", rc, err, code, needle ? needle : "");
}

static void test_hostile_config(void **state)
{
    (void)state;
    assert_int_equal(parse_mutated("", "dtype", "\"float32\""), 0); /* unrelated: fine */
    /* Not Qwen3-VL. */
    int rc = parse_mutated("", "architectures", "[\"Qwen2_5_VLForConditionalGeneration\"]");
    assert_int_equal(rc, 0); /* model_type still says qwen3_vl */
    const char *q25 = "{\"architectures\":[\"Qwen2_5_VLForConditionalGeneration\"],"
                      "\"model_type\":\"qwen2_5_vl\",\"hidden_size\":2048}";
    vg_model_info m;
    assert_int_equal(vg_model_config_parse(q25, strlen(q25), &m, err, sizeof err), VG_EMODEL);
    assert_string_equal(err, "config.json: model_type 'qwen2_5_vl' is not Qwen3-VL");
    assert_int_equal(vg_model_config_parse("{}", 2, &m, err, sizeof err), VG_EMODEL);
    assert_int_equal(vg_model_config_parse("{\"a\":", 5, &m, err, sizeof err), VG_EFORMAT);
    assert_non_null(strstr(err, "config.json"));
    assert_int_equal(vg_model_config_parse("[]", 2, &m, err, sizeof err), VG_EFORMAT);

    expect_cfg("text_config", "hidden_size", "-128", VG_EMODEL, "text_config.hidden_size");
    expect_cfg("text_config", "hidden_size", "0", VG_EMODEL, "text_config.hidden_size");
    expect_cfg("text_config", "hidden_size", "65537", VG_EMODEL, "text_config.hidden_size");
    expect_cfg("text_config", "hidden_size", "\"128\"", VG_EMODEL, "text_config.hidden_size");
    expect_cfg("text_config", "hidden_size", "128.5", VG_EMODEL, "text_config.hidden_size");
    expect_cfg("text_config", "hidden_size", "1e300", VG_EMODEL, "text_config.hidden_size");
    expect_cfg("text_config", "hidden_size", NULL, VG_EMODEL, "text_config.hidden_size is missing");
    expect_cfg("text_config", "num_hidden_layers", "1001", VG_EMODEL, "num_hidden_layers");
    expect_cfg("text_config", "vocab_size", "10000001", VG_EMODEL, "vocab_size");
    expect_cfg("text_config", "num_key_value_heads", "3", VG_EMODEL, "num_key_value_heads");
    expect_cfg("text_config", "head_dim", "31", VG_EMODEL, "head_dim");
    expect_cfg("text_config", "rms_norm_eps", "0", VG_EMODEL, "rms_norm_eps");
    expect_cfg("text_config", "rope_theta", "-1", VG_EMODEL, "rope_theta");
    expect_cfg("text_config", "intermediate_size", "0", VG_EMODEL, "intermediate_size");
    expect_cfg("text_config", "rope_scaling/mrope_section", "[6,5,6]", VG_EMODEL, "mrope_section");
    expect_cfg("text_config", "rope_scaling/mrope_section", "[16,0]", VG_EMODEL, "mrope_section");
    expect_cfg("text_config", "max_position_embeddings", "-5", VG_EMODEL,
               "max_position_embeddings");
    expect_cfg("text_config", "num_attention_heads", "3", VG_EMODEL,
               "num_key_value_heads (2) does not divide num_attention_heads (3)");
    /* Heads not dividing hidden matter only without head_dim. */
    vg_model_info p;
    assert_int_equal(vg_random_preset("tiny", &p, err, sizeof err), 0);
    p.n_heads = 3;
    p.n_kv_heads = 3;
    p.video_token_id = p.image_token_id = p.vision_start_token_id = p.vision_end_token_id = 300;
    char *json = vg_random_config_json(&p);
    assert_int_equal(vg_model_config_parse(json, strlen(json), &m, err, sizeof err), 0);
    assert_int_equal(m.head_dim, 32);
    cJSON *root = cJSON_Parse(json);
    free(json);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(root, "text_config"), "head_dim");
    json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    assert_int_equal(vg_model_config_parse(json, strlen(json), &m, err, sizeof err), VG_EMODEL);
    assert_non_null(strstr(err, "does not divide hidden_size"));
    free(json);

    expect_cfg("vision_config", "depth", "0", VG_EMODEL, "vision_config.depth");
    expect_cfg("vision_config", "num_heads", "3", VG_EMODEL, "vision_config.hidden_size");
    expect_cfg("vision_config", "num_position_embeddings", "65", VG_EMODEL, "perfect square");
    expect_cfg("vision_config", "deepstack_visual_indexes", "[2]", VG_EMODEL,
               "deepstack_visual_indexes[0] = 2");
    expect_cfg("vision_config", "deepstack_visual_indexes", "[-1]", VG_EMODEL,
               "deepstack_visual_indexes");
    expect_cfg("vision_config", "deepstack_visual_indexes", "[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]",
               VG_EMODEL, "deepstack_visual_indexes");
    expect_cfg("vision_config", "out_hidden_size", "64", VG_EMODEL, "out_hidden_size");
    expect_cfg("vision_config", "patch_size", "1000", VG_EMODEL, "patch_size");
    expect_cfg("", "video_token_id", "512", VG_EMODEL, "video_token_id");
    expect_cfg("", "image_token_id", "-1", VG_EMODEL, "image_token_id");
    expect_cfg("", "tie_word_embeddings", "\"yes\"", VG_EMODEL, "tie_word_embeddings");
    /* Empty DeepStack list is allowed; rope_parameters (newer layout) is read. */
    assert_int_equal(parse_mutated("vision_config", "deepstack_visual_indexes", "[]"), 0);
    assert_int_equal(parse_mutated("text_config", "rope_theta", NULL), 0);
    /* rope_scaling and text_config.rope_theta win over rope_parameters when both exist. */
    assert_int_equal(parse_mutated("text_config", "rope_parameters",
                                   "{\"rope_theta\": 1000000, \"mrope_section\": [8,4,4], "
                                   "\"mrope_interleaved\": false}"),
                     0);
}

static void test_rope_parameters(void **state)
{
    (void)state;
    const char *cfg = "{\"model_type\":\"qwen3_vl\",\"text_config\":{\"hidden_size\":64,"
                      "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":"
                      "128,\"vocab_size\":1000,\"rope_parameters\":{\"rope_theta\":1000000,"
                      "\"mrope_section\":[8,4,4],\"mrope_interleaved\":false,\"rope_type\":"
                      "\"default\"}},\"tie_word_embeddings\":false}";
    vg_model_info m;
    assert_int_equal(vg_model_config_parse(cfg, strlen(cfg), &m, err, sizeof err), 0);
    assert_int_equal(m.head_dim, 32);
    assert_int_equal(m.n_kv_heads, 2);
    assert_true(m.rope_theta == 1000000.0f);
    assert_int_equal(m.mrope_section[0], 8);
    assert_int_equal(m.mrope_interleaved, 0);
    assert_int_equal(m.tie_word_embeddings, 0);
    assert_int_equal(m.has_vision, 0);
    assert_int_equal(m.video_token_id, 151656);
}

static void test_config_files(void **state)
{
    (void)state;
    char dir[512], p[600];
    path_in(dir, sizeof dir, "cfgdir");
    mkdir(dir, 0755);
    vg_model_info info;
    vg_gen_params g;
    assert_int_equal(vg_model_config_load(dir, &info, &g, err, sizeof err), VG_ENOENT);
    assert_non_null(strstr(err, "config.json"));
    vg_model_info t;
    assert_int_equal(vg_random_preset("tiny", &t, err, sizeof err), 0);
    t.video_token_id = t.image_token_id = t.vision_start_token_id = t.vision_end_token_id = 300;
    char *cfg = vg_random_config_json(&t);
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_str(p, cfg);
    free(cfg);
    /* No optional files: defaults. */
    assert_int_equal(vg_model_config_load(dir, &info, &g, err, sizeof err), 0);
    assert_int_equal(g.n_stop_ids, 2);
    assert_int_equal(g.stop_ids[0], 151645);
    assert_int_equal(info.video_max_frames, 768);
    assert_int_equal(info.video_min_pixels, 0);
    assert_int_equal(info.video_max_pixels, 0);
    /* Trailing slashes do not change the name. */
    char d2[600];
    snprintf(d2, sizeof d2, "%s//", dir);
    assert_int_equal(vg_model_config_load(d2, &info, NULL, err, sizeof err), 0);
    assert_string_equal(info.name, "cfgdir");

    snprintf(p, sizeof p, "%s/generation_config.json", dir);
    write_str(p, "{\"do_sample\": false, \"temperature\": 0.5, \"top_k\": 5, \"top_p\": 0.9,"
                 "\"repetition_penalty\": 1.1, \"eos_token_id\": [7, 8, 9], \"pad_token_id\": 7}");
    assert_int_equal(vg_model_config_load(dir, &info, &g, err, sizeof err), 0);
    assert_int_equal(g.do_sample, 0);
    assert_true(g.temperature == 0.5f && g.top_k == 5 && g.top_p == 0.9f);
    /* Greedy without a named presence penalty: plain greedy, as HF generate() decodes it. */
    assert_true(g.repetition_penalty == 1.1f && g.presence_penalty == 0.0f);
    assert_int_equal(g.n_stop_ids, 3);
    assert_int_equal(g.stop_ids[2], 9);
    write_str(p, "{\"do_sample\": false, \"presence_penalty\": 0.5}");
    assert_int_equal(vg_model_config_load(dir, &info, &g, err, sizeof err), 0);
    assert_true(g.do_sample == 0 && g.presence_penalty == 0.5f);
    write_str(p, "{\"do_sample\": true, \"top_k\": 5}");
    assert_int_equal(vg_model_config_load(dir, &info, &g, err, sizeof err), 0);
    assert_true(g.do_sample == 1 && g.presence_penalty == 1.5f); /* Qwen's sampling default */
    write_str(p, "{\"eos_token_id\": 42}");
    assert_int_equal(vg_model_config_load(dir, &info, &g, err, sizeof err), 0);
    assert_int_equal(g.n_stop_ids, 1);
    assert_int_equal(g.stop_ids[0], 42);
    const char *bad_gen[] = {"{\"top_p\": 0}",
                             "{\"top_p\": 1.5}",
                             "{\"temperature\": -1}",
                             "{\"top_k\": -3}",
                             "{\"eos_token_id\": 512}",
                             "{\"eos_token_id\": [1,2,3,4,5,6,7,8,9]}",
                             "{\"eos_token_id\": []}",
                             "{\"do_sample\": 3}",
                             "{\"top_p\": "};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad_gen); i++) {
        write_str(p, bad_gen[i]);
        int rc = vg_model_config_load(dir, &info, &g, err, sizeof err);
        if ((rc != VG_EMODEL && rc != VG_EFORMAT) || !strstr(err, "generation_config.json"))
            fail_msg("%s: rc %d err '%s'", bad_gen[i], rc, err);
    }
    write_str(p, "{\"temperature\": 0}");
    assert_int_equal(vg_model_config_load(dir, &info, &g, err, sizeof err), 0);
    assert_int_equal(g.do_sample, 0);
    unlink(p);

    snprintf(p, sizeof p, "%s/video_preprocessor_config.json", dir);
    write_str(p, "{\"min_pixels\": 131072, \"max_pixels\": 786432, \"fps\": 1.5,"
                 "\"min_frames\": 2, \"max_frames\": 64, \"image_mean\": [0.4, 0.5, 0.6],"
                 "\"image_std\": [0.2, 0.3, 0.4]}");
    assert_int_equal(vg_model_config_load(dir, &info, &g, err, sizeof err), 0);
    assert_int_equal(info.video_min_pixels, 131072);
    assert_int_equal(info.video_max_pixels, 786432);
    assert_true(info.video_fps == 1.5);
    assert_int_equal(info.video_min_frames, 2);
    assert_int_equal(info.video_max_frames, 64);
    assert_true(info.image_mean[0] == 0.4f && info.image_std[2] == 0.4f);
    const char *bad_pre[] = {"{\"fps\": 0}",
                             "{\"image_std\": [0.5, 0, 0.5]}",
                             "{\"image_mean\": [0.5]}",
                             "{\"min_frames\": 10, \"max_frames\": 5}",
                             "{\"size\": {\"shortest_edge\": -4}}",
                             "[1"};
    for (size_t i = 0; i < VG_ARRAY_LEN(bad_pre); i++) {
        write_str(p, bad_pre[i]);
        int rc = vg_model_config_load(dir, &info, &g, err, sizeof err);
        if ((rc != VG_EMODEL && rc != VG_EFORMAT) || !strstr(err, "video_preprocessor_config.json"))
            fail_msg("%s: rc %d err '%s'", bad_pre[i], rc, err);
    }
}

/* ---- vigil-model random (exact flag names) ---- */
static void test_cmd_random(void **state)
{
    (void)state;
    char out[512], p[600];
    path_in(out, sizeof out, "cli");
    char *ok[] = {"random", "--preset", "tiny", "--out", out, "--seed", "11", "--std", "0.05"};
    assert_int_equal(vg_cmd_random((int)VG_ARRAY_LEN(ok), ok), 0);
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json",
                           "generation_config.json", "video_preprocessor_config.json"};
    for (size_t i = 0; i < VG_ARRAY_LEN(files); i++) {
        snprintf(p, sizeof p, "%s/%s", out, files[i]);
        assert_int_equal(access(p, R_OK), 0);
    }
    /* Same as the library with the same seed and std. */
    char lib[512];
    path_in(lib, sizeof lib, "lib");
    vg_random_spec spec = {.preset = "tiny", .seed = 11, .std = 0.05f};
    assert_int_equal(vg_model_write_random(&spec, lib, err, sizeof err), 0);
    char *a, *b;
    size_t la, lb;
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    assert_int_equal(vg_read_file(p, 1 << 26, &a, &la, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s/model.safetensors", lib);
    assert_int_equal(vg_read_file(p, 1 << 26, &b, &lb, err, sizeof err), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);

    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/config.json", out);
    char out2[512];
    path_in(out2, sizeof out2, "cli2");
    char *from_cfg[] = {"random", "--config", cfg, "--out", out2};
    assert_int_equal(vg_cmd_random((int)VG_ARRAY_LEN(from_cfg), from_cfg), 0);
    char *help[] = {"random", "--help"};
    assert_int_equal(vg_cmd_random(2, help), 0);

    char *usage1[] = {"random", "--preset", "tiny"};
    char *usage2[] = {"random", "--preset", "tiny", "--config", cfg, "--out", out2};
    char *usage3[] = {"random", "--preset", "tiny", "--out", out2, "--seed", "x"};
    char *usage4[] = {"random", "--preset", "tiny", "--out", out2, "--std", "-1"};
    char *usage5[] = {"random", "--preset", "tiny", "--out", out2, "--colour", "red"};
    char *usage6[] = {"random", "--preset", "tiny", "--out"};
    assert_int_equal(vg_cmd_random(3, usage1), 2);
    assert_int_equal(vg_cmd_random(7, usage2), 2);
    assert_int_equal(vg_cmd_random(7, usage3), 2);
    assert_int_equal(vg_cmd_random(7, usage4), 2);
    assert_int_equal(vg_cmd_random(7, usage5), 2);
    assert_int_equal(vg_cmd_random(4, usage6), 2);
    char *fail1[] = {"random", "--preset", "huge", "--out", out2};
    assert_int_equal(vg_cmd_random(5, fail1), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_golden_checkpoint),
        cmocka_unit_test(test_golden_config),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mutations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sharded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_tiny, setup, teardown),
        cmocka_unit_test(test_presets_config),
        cmocka_unit_test(test_hostile_config),
        cmocka_unit_test(test_rope_parameters),
        cmocka_unit_test_setup_teardown(test_config_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cmd_random, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
