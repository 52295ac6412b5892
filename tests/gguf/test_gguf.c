/*
 * test_gguf.c: unit tests of model/gguf.c (the GGUF v3 reader). A small byte-level builder makes
 * the files in a private temporary directory: a well-formed file with every metadata type, arrays
 * and tensors is read back value by value; then every prefix of it (truncation at each byte) and
 * one hostile variant per check (absurd counts, long strings, unknown types, misaligned and
 * overlapping offsets, duplicates, bad alignment, wrong version) must give VG_EFORMAT with a
 * sentence naming what is wrong, never a crash (the suite also runs under ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common.h"
#include "gguf.h"
#include "internal.h"
#include "kernels.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256];
static char err[1024];

/* ---- builder ---- */
typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void u32(buf *b, uint32_t v)
{
    put(b, &v, 4);
}
static void u64(buf *b, uint64_t v)
{
    put(b, &v, 8);
}
static void str(buf *b, const char *s)
{
    u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad(buf *b, size_t align)
{
    while (b->n % align)
        put(b, "", 1);
}

/* Options for one variant of the reference file. */
typedef struct variant {
    uint32_t version;
    uint64_t n_kv_delta; /* added to the true count */
    uint64_t n_t_delta;
    uint32_t align; /* general.alignment written; 0 = key absent (32) */
    uint32_t t1_type;
    uint64_t t1_off_delta;
    uint32_t t0_ndim;
    uint64_t str_len_delta;
    int dup_key, dup_tensor, nested;
} variant;

static variant base_variant(void)
{
    variant v = {.version = 3, .align = 64, .t1_type = VG_GGML_Q8_0, .t0_ndim = 2};
    return v;
}

/* The reference file: 9 metadata keys of every type, an F32 tensor [3][2] and a Q8_0 [2][64]. */
static buf build(const variant *v)
{
    buf b = {0};
    put(&b, "GGUF", 4);
    u32(&b, v->version);
    u64(&b, 2 + v->n_t_delta);
    u64(&b, 9 + (v->align ? 1 : 0) + (v->dup_key ? 1 : 0) + v->n_kv_delta);
    str(&b, "general.architecture");
    u32(&b, VG_GGUF_STRING);
    u64(&b, 7 + v->str_len_delta);
    put(&b, "qwen3vl", 7);
    str(&b, "t.u8");
    u32(&b, VG_GGUF_UINT8);
    put(&b, "\xff", 1);
    str(&b, "t.i16");
    u32(&b, VG_GGUF_INT16);
    int16_t i16 = -300;
    put(&b, &i16, 2);
    str(&b, "t.u32");
    u32(&b, VG_GGUF_UINT32);
    u32(&b, 151643);
    str(&b, "t.f32");
    u32(&b, VG_GGUF_FLOAT32);
    float f = 1e-6f;
    put(&b, &f, 4);
    str(&b, "t.bool");
    u32(&b, VG_GGUF_BOOL);
    put(&b, "\x01", 1);
    str(&b, "t.i64");
    u32(&b, VG_GGUF_INT64);
    u64(&b, (uint64_t)-5);
    str(&b, "t.arr_i32");
    u32(&b, VG_GGUF_ARRAY);
    u32(&b, v->nested ? VG_GGUF_ARRAY : VG_GGUF_INT32);
    u64(&b, 4);
    int32_t sec[4] = {24, 20, 20, 0};
    put(&b, sec, sizeof sec);
    str(&b, "t.arr_str");
    u32(&b, VG_GGUF_ARRAY);
    u32(&b, VG_GGUF_STRING);
    u64(&b, 3);
    str(&b, "a");
    str(&b, "");
    str(&b, "Ġhello");
    if (v->dup_key) {
        str(&b, "t.u8");
        u32(&b, VG_GGUF_UINT8);
        put(&b, "\x01", 1);
    }
    if (v->align) {
        str(&b, "general.alignment");
        u32(&b, VG_GGUF_UINT32);
        u32(&b, v->align);
    }
    size_t align = v->align && !(v->align & (v->align - 1)) ? v->align : 32;
    /* tensor 0: F32 ne = {2, 3} at offset 0 (24 bytes) */
    str(&b, "w0");
    u32(&b, v->t0_ndim);
    u64(&b, 2);
    u64(&b, 3);
    for (uint32_t d = 2; d < v->t0_ndim && d < 8; d++)
        u64(&b, 1);
    u32(&b, VG_GGML_F32);
    u64(&b, 0);
    /* tensor 1: ne = {64, 2}, Q8_0 (136 bytes) at the next aligned offset */
    str(&b, v->dup_tensor ? "w0" : "w1");
    u32(&b, 2);
    u64(&b, 64);
    u64(&b, 2);
    u32(&b, v->t1_type);
    u64(&b, align + v->t1_off_delta);
    pad(&b, align);
    for (int i = 0; i < 6; i++) {
        float x = (float)i + 0.5f;
        put(&b, &x, 4);
    }
    pad(&b, align);
    for (int i = 0; i < 136; i++) {
        unsigned char c = (unsigned char)i;
        put(&b, &c, 1);
    }
    return b;
}

static const char *write_file(const buf *b, const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b->p, 1, b->n, f), b->n);
    fclose(f);
    return path;
}

static int open_buf(const buf *b, vg_gguf **g)
{
    err[0] = '\0';
    return vg_gguf_open(write_file(b, "t.gguf"), g, err, sizeof err);
}

/* The variant must fail with VG_EFORMAT and a message containing want. */
static void expect_bad(const variant *v, const char *want)
{
    buf b = build(v);
    vg_gguf *g = NULL;
    int rc = open_buf(&b, &g);
    if (rc != VG_EFORMAT || !strstr(err, want))
        fail_msg("expected VG_EFORMAT with '%s', got %d: %s", want, rc, err);
    assert_null(g);
    free(b.p);
}

/* ---- tests ---- */
static void test_read_ok(void **state)
{
    (void)state;
    variant v = base_variant();
    buf b = build(&v);
    vg_gguf *g = NULL;
    assert_int_equal(open_buf(&b, &g), 0);
    assert_int_equal(vg_gguf_alignment(g), 64);
    assert_int_equal(vg_gguf_n_kv(g), 10);
    const char *s;
    size_t len;
    assert_int_equal(vg_gguf_get_str(g, "general.architecture", &s, &len, err, sizeof err), 0);
    assert_int_equal(len, 7);
    assert_memory_equal(s, "qwen3vl", 7);
    int64_t x;
    assert_int_equal(vg_gguf_get_int(g, "t.u8", 0, 1000, &x, err, sizeof err), 0);
    assert_int_equal(x, 255);
    assert_int_equal(vg_gguf_get_int(g, "t.i16", -1000, 1000, &x, err, sizeof err), 0);
    assert_int_equal(x, -300);
    assert_int_equal(vg_gguf_get_int(g, "t.u32", 0, INT32_MAX, &x, err, sizeof err), 0);
    assert_int_equal(x, 151643);
    assert_int_equal(vg_gguf_get_int(g, "t.i64", INT64_MIN, 0, &x, err, sizeof err), 0);
    assert_int_equal(x, -5);
    assert_int_equal(vg_gguf_get_int(g, "t.bool", 0, 1, &x, err, sizeof err), 0);
    assert_int_equal(x, 1);
    double d;
    assert_int_equal(vg_gguf_get_float(g, "t.f32", &d, err, sizeof err), 0);
    assert_true(d == (double)1e-6f);
    /* errors name the file and the key */
    assert_int_equal(vg_gguf_get_int(g, "t.u32", 0, 100, &x, err, sizeof err), VG_EMODEL);
    assert_non_null(strstr(err, "t.gguf: metadata 't.u32' = 151643 is outside"));
    assert_int_equal(vg_gguf_get_int(g, "nope", 0, 100, &x, err, sizeof err), VG_EMODEL);
    assert_non_null(strstr(err, "metadata key 'nope' is missing"));
    assert_int_equal(vg_gguf_get_int(g, "t.f32", 0, 100, &x, err, sizeof err), VG_EMODEL);
    assert_non_null(strstr(err, "is FLOAT32, expected an integer"));
    assert_int_equal(vg_gguf_get_str(g, "t.u8", &s, &len, err, sizeof err), VG_EMODEL);
    const vg_gguf_kv *kv;
    assert_int_equal(vg_gguf_get_arr(g, "t.arr_i32", &kv, err, sizeof err), 0);
    assert_int_equal(kv->n, 4);
    assert_int_equal(vg_gguf_arr_int(kv, 1, &x), 0);
    assert_int_equal(x, 20);
    assert_int_equal(vg_gguf_arr_int(kv, 4, &x), VG_EMODEL); /* out of range */
    assert_int_equal(vg_gguf_get_arr(g, "t.arr_str", &kv, err, sizeof err), 0);
    vg_gguf_str_iter it = {0};
    const char *want[] = {"a", "", "Ġhello"};
    int n = 0;
    while (vg_gguf_arr_str_next(kv, &it, &s, &len)) {
        assert_true(n < 3);
        assert_int_equal(len, strlen(want[n]));
        assert_memory_equal(s, want[n], len);
        n++;
    }
    assert_int_equal(n, 3);
    /* tensors */
    assert_int_equal(vg_gguf_n_tensors(g), 2);
    const vg_gguf_tensor *t0 = vg_gguf_find_tensor(g, "w0"), *t1 = vg_gguf_find_tensor(g, "w1");
    assert_non_null(t0);
    assert_non_null(t1);
    assert_null(vg_gguf_find_tensor(g, "w2"));
    assert_int_equal(t0->ndim, 2);
    assert_int_equal(t0->ne[0], 2);
    assert_int_equal(t0->ne[1], 3);
    assert_int_equal(t0->numel, 6);
    assert_int_equal(t0->nbytes, 24);
    float f5;
    memcpy(&f5, (const unsigned char *)t0->data + 20, 4);
    assert_true(f5 == 5.5f);
    assert_int_equal(t1->type, VG_GGML_Q8_0);
    assert_int_equal(t1->nbytes, 136);
    assert_int_equal(((const unsigned char *)t1->data)[135], 135);
    assert_int_equal((uintptr_t)t1->data % 64, 0);
    vg_gguf_close(g);
    vg_gguf_close(NULL);
    free(b.p);
}

/* Every proper prefix of a good file is refused with a named error. */
static void test_truncated_everywhere(void **state)
{
    (void)state;
    variant v = base_variant();
    buf b = build(&v);
    size_t full = b.n;
    for (size_t n = 0; n < full; n++) {
        buf p = {b.p, n, n};
        vg_gguf *g = NULL;
        int rc = open_buf(&p, &g);
        if (rc != VG_EFORMAT)
            fail_msg("prefix of %zu bytes: rc %d (%s)", n, rc, err);
        assert_true(strstr(err, "truncated") != NULL || strstr(err, "absurd") != NULL ||
                    strstr(err, "bytes long") != NULL || strstr(err, "more than the") != NULL);
    }
    free(b.p);
}

static void test_hostile(void **state)
{
    (void)state;
    variant v;
    v = base_variant(), v.version = 2;
    expect_bad(&v, "GGUF version 2 is not supported");
    v = base_variant(), v.n_kv_delta = (uint64_t)1 << 40;
    expect_bad(&v, "absurd metadata count");
    v = base_variant(), v.n_t_delta = (uint64_t)-3;
    expect_bad(&v, "absurd tensor count");
    v = base_variant(), v.str_len_delta = (uint64_t)1 << 62;
    expect_bad(&v, "general.architecture is 4611686018427387911 bytes long");
    v = base_variant(), v.str_len_delta = 4000;
    expect_bad(&v, "truncated GGUF file: general.architecture needs 4007 bytes");
    v = base_variant(), v.t1_type = 4; /* removed Q4_2 */
    expect_bad(&v, "tensor 'w1' has an unknown type 4");
    v = base_variant(), v.t1_type = VG_GGML_Q4_K; /* 64 elements: not a whole 256-block */
    expect_bad(&v, "not a whole number of Q4_K blocks");
    v = base_variant(), v.t1_off_delta = 1;
    expect_bad(&v, "tensor 'w1': data offset 65 is not a multiple of the alignment 64");
    v = base_variant(), v.t1_off_delta = (uint64_t)-64; /* offset 0: on top of w0 */
    expect_bad(&v, "tensors 'w0' and 'w1' overlap");
    v = base_variant(), v.t1_off_delta = 64 * 4;
    expect_bad(&v, "tensor 'w1' (136 bytes at data offset 320) runs past the end");
    v = base_variant(), v.t1_off_delta = (uint64_t)-128; /* wraps around */
    expect_bad(&v, "runs past the end");
    v = base_variant(), v.t0_ndim = 5;
    expect_bad(&v, "tensor 'w0' has 5 dimensions");
    v = base_variant(), v.t0_ndim = 0;
    expect_bad(&v, "tensor 'w0' has 0 dimensions");
    v = base_variant(), v.align = 48;
    expect_bad(&v, "general.alignment 48 is not a power of two");
    v = base_variant(), v.dup_key = 1;
    expect_bad(&v, "duplicate metadata key 't.u8'");
    v = base_variant(), v.dup_tensor = 1;
    expect_bad(&v, "duplicate tensor 'w0'");
    v = base_variant(), v.nested = 1;
    expect_bad(&v, "array of arrays");

    /* hand-made: bad magic, unknown value type, an array count beyond the file, a huge key */
    buf b = {0};
    put(&b, "GGUE", 4);
    u32(&b, 3);
    u64(&b, 0);
    u64(&b, 0);
    vg_gguf *g = NULL;
    assert_int_equal(open_buf(&b, &g), VG_EFORMAT);
    assert_non_null(strstr(err, "bad magic"));
    b.n = 0;
    put(&b, "GGUF", 4);
    u32(&b, 3);
    u64(&b, 0);
    u64(&b, 1);
    str(&b, "k");
    u32(&b, 13);
    u64(&b, 0);
    assert_int_equal(open_buf(&b, &g), VG_EFORMAT);
    assert_non_null(strstr(err, "key 'k' has an unknown value type 13"));
    b.n = 24;
    str(&b, "k");
    u32(&b, VG_GGUF_ARRAY);
    u32(&b, VG_GGUF_UINT64);
    u64(&b, (uint64_t)1 << 61);
    u64(&b, 0);
    assert_int_equal(open_buf(&b, &g), VG_EFORMAT);
    assert_non_null(strstr(err, "claims 2305843009213693952 array elements"));
    b.n = 24;
    u64(&b, 70000);
    for (int i = 0; i < 70000; i++)
        put(&b, "k", 1);
    assert_int_equal(open_buf(&b, &g), VG_EFORMAT);
    assert_non_null(strstr(err, "metadata key is 70000 bytes long"));
    /* an empty file, a directory */
    b.n = 0;
    assert_int_equal(open_buf(&b, &g), VG_EFORMAT);
    assert_non_null(strstr(err, "truncated GGUF file (0 bytes"));
    assert_int_equal(vg_gguf_open(tmpdir, &g, err, sizeof err), VG_EFORMAT);
    assert_non_null(strstr(err, "not a regular file"));
    assert_true(vg_gguf_open("/nonexistent/x.gguf", &g, err, sizeof err) < 0);
    free(b.p);
}

static void test_types(void **state)
{
    (void)state;
    size_t e, by;
    assert_int_equal(vg_ggml_type_block(VG_GGML_Q4_K, &e, &by), 0);
    assert_int_equal(e, 256);
    assert_int_equal(by, 144);
    assert_int_equal(vg_ggml_type_block(VG_GGML_Q6_K, &e, &by), 0);
    assert_int_equal(by, 210);
    assert_int_equal(vg_ggml_type_block(31, &e, &by), -1);
    assert_string_equal(vg_ggml_type_name(VG_GGML_BF16), "BF16");
    assert_string_equal(vg_gguf_type_name(VG_GGUF_FLOAT64), "FLOAT64");
}

/* model/quant.c against gguf-py's reference dequantization (dequant_ref.bin, written by
 * make_dequant_ref.py): bit-identical for every type. */
static void test_dequant_reference(void **state)
{
    (void)state;
    FILE *f = fopen(VG_SOURCE_DIR "/tests/gguf/dequant_ref.bin", "rb");
    assert_non_null(f);
    uint32_t hdr[3];
    int types = 0;
    while (fread(hdr, 4, 3, f) == 3) {
        unsigned char *raw = malloc(hdr[2]);
        float *ref = malloc(hdr[1] * sizeof *ref), *got = malloc(hdr[1] * sizeof *got);
        assert_true(raw && ref && got);
        assert_int_equal(fread(raw, 1, hdr[2], f), hdr[2]);
        assert_int_equal(fread(ref, 4, hdr[1], f), hdr[1]);
        size_t be, bb;
        assert_int_equal(vg_ggml_type_block(hdr[0], &be, &bb), 0);
        assert_int_equal((size_t)hdr[1] / be * bb, hdr[2]);
        assert_true(vg_quant_supported(hdr[0]));
        assert_int_equal(vg_quant_dequant(hdr[0], raw, hdr[1], got), 0);
        for (uint32_t i = 0; i < hdr[1]; i++)
            if (memcmp(&ref[i], &got[i], 4) != 0)
                fail_msg("%s value %u: gguf-py %.9g, vigil %.9g", vg_ggml_type_name(hdr[0]), i,
                         (double)ref[i], (double)got[i]);
        free(raw);
        free(ref);
        free(got);
        types++;
    }
    fclose(f);
    assert_int_equal(types, 11);
    float x[32];
    assert_int_equal(vg_quant_dequant(VG_GGML_Q2_K, "", 0, x), -1);
}

/* The interleaved block layout (quant.h: the K-quants and the 32-value types) on random blocks
 * (every bit pattern of the quants and scales; the fp16 d / dmin kept finite): every unpacked row
 * bit-identical to vg_quant_dequant of the original row, the BF16 groups their rounding; the scalar
 * GEMV against double arithmetic on the dequantized rows (the activation's 8-bit rounding: 2e-2 of
 * sum |w x|), and every vectorized level against the scalar kernel (same integer sums: 1e-5 of sum
 * |w x|) on a range of groups, the rows outside it and the padding rows untouched. */
static void test_kq_layout(void **state)
{
    (void)state;
    const size_t K = 1024, R = 13, G = (R + 3) / 4;
    const uint32_t types[] = {VG_GGML_Q4_K, VG_GGML_Q5_K, VG_GGML_Q6_K, VG_GGML_Q4_0,
                              VG_GGML_Q4_1, VG_GGML_Q5_0, VG_GGML_Q5_1};
    float *x = malloc(K * sizeof *x), *row = malloc(K * sizeof *row),
          *got = malloc(K * sizeof *got);
    unsigned char *q = malloc(R * K), *xb = malloc(vg_kq_act_bytes(K) + 3);
    uint16_t *bf = malloc(8 * K * sizeof *bf);
    float *f4 = malloc(4 * K * sizeof *f4);
    assert_true(x && row && got && q && xb && bf);
    uint64_t s = 14;
    for (size_t i = 0; i < K; i++)
        x[i] = sinf((float)i * 0.173f) * (i % 50 == 0 ? 5.0f : 1.0f);
    vg_kq_act xq = vg_kq_act_view(xb + 3, K); /* any alignment */
    vg_kq_act_quantize(x, K, &xq);
    for (size_t t = 0; t < VG_ARRAY_LEN(types); t++) {
        size_t be, bb;
        assert_int_equal(vg_ggml_type_block(types[t], &be, &bb), 0);
        assert_true(vg_kq_supported(types[t]));
        const size_t rb = K / be * bb, gb = vg_kq_group_bytes(types[t], K);
        for (size_t i = 0; i < R * rb; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            q[i] = (unsigned char)(s >> 56);
        }
        /* finite scales (d, and dmin / m where the type has one): +-2^-9 .. 2^-8 */
        const int n_sc =
            types[t] == VG_GGML_Q6_K || types[t] == VG_GGML_Q4_0 || types[t] == VG_GGML_Q5_0 ? 1
                                                                                             : 2;
        for (size_t b = 0; b < R * K / be; b++) {
            unsigned char *blk = q + b * bb;
            size_t at = types[t] == VG_GGML_Q6_K ? 208 : 0;
            for (int k = 0; k < n_sc; k++) {
                uint16_t h = (uint16_t)(0x1800 | (blk[at + 2 * k] & 0xff) |
                                        ((blk[at + 2 * k + 1] & 3) << 8) |
                                        ((blk[at + 2 * k + 1] & 0x80) << 8));
                memcpy(blk + at + 2 * k, &h, 2);
            }
        }
        unsigned char *p = malloc(G * gb);
        assert_non_null(p);
        for (size_t g = 0; g < G; g++)
            vg_kq_pack_group(types[t], q + g * 4 * rb, rb, R - 4 * g < 4 ? R - 4 * g : 4, K,
                             p + g * gb);
        for (size_t r = 0; r < R; r++) {
            assert_int_equal(vg_quant_dequant(types[t], q + r * rb, K, row), 0);
            vg_kq_unpack_row(types[t], p + (r / 4) * gb, K, (int)(r % 4), got);
            for (size_t k = 0; k < K; k++)
                if (memcmp(&row[k], &got[k], 4) != 0)
                    fail_msg("%s row %zu value %zu: unpacked %.9g, dequantized %.9g",
                             vg_ggml_type_name(types[t]), r, k, (double)got[k], (double)row[k]);
            if (r % 4 == 0) {
                vg_kq_group_to_bf16(types[t], p + (r / 4) * gb, K, bf);
                for (int lvl = VG_ISA_AVX2; lvl <= vg_isa_detect(); lvl++) {
                    vg_kq_group_to_bf16_level(lvl, types[t], p + (r / 4) * gb, K, bf + K * 4);
                    assert_memory_equal(bf, bf + K * 4, K * 4 * sizeof *bf);
                    vg_kq_group_to_f32_level(lvl, types[t], p + (r / 4) * gb, K, f4);
                    for (size_t rr = 0; rr < 4 && r + rr < R; rr++) { /* vs unpack_row */
                        vg_kq_unpack_row(types[t], p + (r / 4) * gb, K, (int)rr, got);
                        assert_memory_equal(f4 + rr * K, got, K * sizeof *got);
                    }
                }
            }
            for (size_t k = 0; k < K; k++)
                assert_int_equal(bf[(k / 32 * 4 + r % 4) * 32 + k % 32], vg_f32_to_bf16(row[k]));
        }
        float ys[16], yv[16];
        for (int i = 0; i < 16; i++)
            ys[i] = -7.0f;
        vg_kq_gemv(VG_ISA_SCALAR, types[t], p, K, R, 0, G, &xq, ys);
        assert_true(ys[13] == -7.0f && ys[14] == -7.0f && ys[15] == -7.0f);
        double mag[13];
        for (size_t r = 0; r < R; r++) {
            vg_quant_dequant(types[t], q + r * rb, K, row);
            double exact = 0;
            mag[r] = 0;
            for (size_t k = 0; k < K; k++) {
                exact += (double)row[k] * x[k];
                mag[r] += fabs((double)row[k] * x[k]);
            }
            if (fabs(ys[r] - exact) > 2e-2 * mag[r])
                fail_msg("%s row %zu: scalar %g, exact %g", vg_ggml_type_name(types[t]), r,
                         (double)ys[r], exact);
        }
        for (int lvl = VG_ISA_AVX2; lvl <= vg_isa_detect(); lvl++) {
            for (int i = 0; i < 16; i++)
                yv[i] = -7.0f;
            vg_kq_gemv(lvl, types[t], p, K, R, 1, G, &xq, yv); /* groups 1.. only */
            for (size_t r = 0; r < 4; r++)
                assert_true(yv[r] == -7.0f);
            assert_true(yv[13] == -7.0f && yv[14] == -7.0f && yv[15] == -7.0f);
            for (size_t r = 4; r < R; r++)
                if (fabs(yv[r] - ys[r]) > 1e-5 * mag[r])
                    fail_msg("%s row %zu level %s: %g, scalar %g", vg_ggml_type_name(types[t]), r,
                             vg_isa_name(lvl), (double)yv[r], (double)ys[r]);
        }
        free(p);
    }
    assert_false(vg_kq_supported(VG_GGML_Q8_0));
    assert_false(vg_kq_supported(VG_GGML_F16));
    free(x);
    free(row);
    free(got);
    free(q);
    free(xb);
    free(bf);
    free(f4);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vg-test-gguf-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char p[600];
    snprintf(p, sizeof p, "%s/t.gguf", tmpdir);
    unlink(p);
    rmdir(tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_ok),           cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_hostile),           cmocka_unit_test(test_types),
        cmocka_unit_test(test_dequant_reference), cmocka_unit_test(test_kq_layout),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
