/*
 * test_kernels_dnnl.c: the attention of dnnl.c (bf16 products through oneDNN, AMX where the CPU
 * has it) against the float32 reference kernel (vg_flash_attn at the scalar level), on the tiny1
 * checkpoint loaded with bf16 weights and 2 threads (the pool splits the heads). Shapes: the
 * vision tower's full attention over interleaved q/k/v rows, and causal prefill chunks after a
 * cached prefix with grouped KV heads in the KV cache's layout (rows and keys not multiples of the
 * padding), and over a bf16 KV cache read in place (bit for bit the float32 path on the same
 * values); vision rows given in bf16, bit for bit the float rows they widen to. Skipped without
 * ../shared, without oneDNN or below the AVX-512 level.
 */
#include "engine.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

/* The tiny1 checkpoint in bf16 on 2 threads; skips the test without ../shared, without oneDNN or
 * below the AVX-512 level. */
static vg_model *load_bf16(void)
{
    const char *env = getenv("VG_SHARED_DIR");
    const char *cand[2] = {env, VG_SHARED_DIR};
    char dir[4096];
    for (int i = 0; i < 2; i++) {
        if (!cand[i] || !cand[i][0])
            continue;
        snprintf(dir, sizeof(dir), "%s/golden/tiny1/config.json", cand[i]);
        struct stat st;
        if (stat(dir, &st) != 0)
            continue;
        *strrchr(dir, '/') = '\0';
        vg_model_params mp = vg_model_default_params();
        mp.n_threads = 2;
        mp.load_vision = 0;
        mp.weight_type = VG_WEIGHTS_BF16;
        vg_model *m = NULL;
        char err[256];
        if (vg_model_load(dir, &mp, &m, err, sizeof(err)) < 0)
            fail_msg("load: %s", err);
        if (!m->dnnl || vg_isa_level() < VG_ISA_AVX512) {
            vg_model_free(m);
            skip();
        }
        return m;
    }
    skip();
    return NULL;
}

static void fill(float *x, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int64_t)(seed >> 40) - (1 << 23)) / (float)(1 << 23);
    }
}

/* heads query heads over kv KV heads of size dh; n rows after p0 cached keys (p0 < 0: full
 * attention over ctx = n keys, q/k/v interleaved in rows as in the vision tower). */
static void check(vg_model *m, size_t n, long p0, size_t heads, size_t kv, size_t dh)
{
    const int full = p0 < 0;
    const size_t ctx = full ? n : (size_t)p0 + n, QD = heads * dh;
    const size_t ld = full ? 3 * QD : QD, cap = ctx + 5; /* cache rows per KV head */
    float *qkv = malloc(n * 3 * QD * sizeof(float));
    float *kc = malloc(kv * cap * dh * sizeof(float)), *vc = malloc(kv * cap * dh * sizeof(float));
    float *o = malloc(n * QD * sizeof(float)), *ref = malloc(n * QD * sizeof(float));
    float *scr = malloc(vg_flash_scratch_floats(n, dh) * sizeof(float));
    assert_non_null(qkv && kc && vc && o && ref && scr);
    fill(qkv, n * 3 * QD, 7 + n);
    fill(kc, kv * cap * dh, 11 + n);
    fill(vc, kv * cap * dh, 13 + n);
    vg_attn_args a = {.q = qkv,
                      .k = full ? qkv + QD : kc,
                      .v = full ? qkv + 2 * QD : vc,
                      .ldq = ld,
                      .ldk = full ? ld : dh,
                      .ldv = full ? ld : dh,
                      .q_hs = dh,
                      .k_hs = full ? dh : cap * dh,
                      .v_hs = full ? dh : cap * dh,
                      .n = n,
                      .ctx = ctx,
                      .heads = heads,
                      .kv_heads = kv,
                      .dh = dh,
                      .scale = 1.0f / sqrtf((float)dh),
                      .p0 = p0,
                      .o = o,
                      .ldo = QD,
                      .o_hs = dh};
    memset(o, 0xff, n * QD * sizeof(float)); /* NaN: every output must be written */
    assert_int_equal(vg_dnnl_attn(m, &a), 0);
    for (size_t h = 0; h < heads; h++) {
        size_t j = h / (heads / kv);
        vg_flash_attn(VG_ISA_SCALAR, a.q + h * dh, ld, a.k + j * a.k_hs, a.ldk, a.v + j * a.v_hs,
                      a.ldv, n, ctx, dh, a.scale, p0, ref + h * dh, QD, scr);
    }
    double worst = 0, sum = 0;
    for (size_t i = 0; i < n * QD; i++) {
        double d = fabs((double)o[i] - ref[i]);
        if (!(d <= worst)) /* NaN counts as the worst */
            worst = isnan(d) ? INFINITY : d;
        sum += isnan(d) ? INFINITY : d;
    }
    /* bf16 rounds q, k, v and the probabilities (relative 2^-9 each); outputs are averages of
     * values in [-1, 1] (measured: max 4e-4, mean 8e-5) */
    if (worst > 5e-3 || sum / (double)(n * QD) > 5e-4)
        fail_msg("attention n %zu p0 %ld heads %zu/%zu dh %zu: max %g, mean %g", n, p0, heads, kv,
                 dh, worst, sum / (double)(n * QD));
    if (full) {
        /* full attention of head size 32 or 64 runs in the fused AMX kernel where the CPU has
         * AMX, else (and with VG_AMX_ATTN=0) through oneDNN's two products: the same bf16
         * operands and softmax, so the two agree up to the order of the float32 sums (a rounding
         * of a probability to bf16 may differ by one unit) */
        float *o2 = malloc(n * QD * sizeof(float));
        assert_non_null(o2);
        memset(o2, 0xff, n * QD * sizeof(float));
        vg_attn_args a2 = a;
        a2.o = o2;
        setenv("VG_AMX_ATTN", "0", 1);
        assert_int_equal(vg_dnnl_attn(m, &a2), 0);
        unsetenv("VG_AMX_ATTN");
        double dw = 0;
        for (size_t i = 0; i < n * QD; i++)
            dw = fmax(dw, isnan(o[i]) || isnan(o2[i]) ? INFINITY : fabs((double)o[i] - o2[i]));
        if (dw > 1e-3)
            fail_msg("attention n %zu dh %zu: fused and oneDNN paths differ by %g", n, dh, dw);
        free(o2);
    }
    if (full && dh % 32 == 0) {
        /* the rotary embedding on the way to bf16 (vg_attn_args.rope_cs): bit for bit the
         * attention of rows rotated in place by vg_rope_apply beforehand, qkv itself untouched */
        float *cs = malloc(n * dh * sizeof(float)), *sn = malloc(n * dh * sizeof(float));
        float *rot = malloc(n * 3 * QD * sizeof(float)), *keep = malloc(n * 3 * QD * sizeof(float));
        float *o2 = malloc(n * QD * sizeof(float));
        assert_non_null(cs && sn && rot && keep && o2);
        for (size_t i = 0; i < n * dh; i++) {
            cs[i] = cosf(0.37f * (float)i);
            sn[i] = sinf(0.37f * (float)i);
        }
        memcpy(rot, qkv, n * 3 * QD * sizeof(float));
        memcpy(keep, qkv, n * 3 * QD * sizeof(float));
        vg_rope_apply(rot, n, (int)heads, (int)dh, ld, cs, sn);      /* queries */
        vg_rope_apply(rot + QD, n, (int)heads, (int)dh, ld, cs, sn); /* keys */
        vg_attn_args ar = a, aw = a;
        ar.q = rot;
        ar.k = rot + QD;
        ar.v = rot + 2 * QD;
        ar.o = ref; /* the float32 reference is checked; o is the next check's */
        assert_int_equal(vg_dnnl_attn(m, &ar), 0);
        aw.o = o2;
        aw.rope_cs = cs;
        aw.rope_sn = sn;
        memset(o2, 0xff, n * QD * sizeof(float));
        assert_int_equal(vg_dnnl_attn(m, &aw), 0);
        assert_memory_equal(o2, ref, n * QD * sizeof(float));
        assert_memory_equal(qkv, keep, n * 3 * QD * sizeof(float));
        /* the rows given in bf16 (vg_attn_args.q16: the vision tower's qkv product written in
         * bf16): bit for bit the float rows they widen to */
        uint16_t *q16 = malloc(n * 3 * QD * sizeof(uint16_t));
        assert_non_null(q16);
        vg_to_bf16(qkv, n * 3 * QD, q16);
        vg_from_bf16(q16, n * 3 * QD, rot);
        vg_attn_args af = aw, ah = aw;
        af.q = rot;
        af.k = rot + QD;
        af.v = rot + 2 * QD;
        af.o = ref;
        assert_int_equal(vg_dnnl_attn(m, &af), 0);
        ah.q = ah.k = ah.v = NULL;
        ah.q16 = q16;
        ah.k16 = q16 + QD;
        ah.v16 = q16 + 2 * QD;
        memset(o2, 0xff, n * QD * sizeof(float));
        assert_int_equal(vg_dnnl_attn(m, &ah), 0);
        assert_memory_equal(o2, ref, n * QD * sizeof(float));
        free(q16);
        free(cs);
        free(sn);
        free(rot);
        free(keep);
        free(o2);
    }
    {
        /* bf16 output rows (vg_attn_args.ob, the vision tower's input to proj): vg_to_bf16 of the
         * float32 ones, and o left alone */
        uint16_t *ob = malloc(n * QD * sizeof(uint16_t)), *want = malloc(n * QD * sizeof(uint16_t));
        float *keep = malloc(n * QD * sizeof(float));
        assert_non_null(ob && want && keep);
        vg_to_bf16(o, n * QD, want);
        memcpy(keep, o, n * QD * sizeof(float));
        vg_attn_args a16 = a;
        a16.ob = ob;
        assert_int_equal(vg_dnnl_attn(m, &a16), 0);
        assert_memory_equal(ob, want, n * QD * sizeof(uint16_t));
        assert_memory_equal(o, keep, n * QD * sizeof(float));
        free(ob);
        free(want);
        free(keep);
    }
    if (!full) {
        /* a bf16 KV cache read in place (rows past ctx up to the 64-row padding zero): exactly the
         * float32 path given the same (widened) keys and values, which it rounds to bf16 itself */
        const size_t cap64 = (ctx + 63) & ~(size_t)63;
        uint16_t *kb = calloc(kv * cap64 * dh, 2), *vb = calloc(kv * cap64 * dh, 2);
        float *kw = calloc(kv * cap64 * dh, sizeof(float)), *vw = calloc(kv * cap64 * dh, 4);
        float *o2 = malloc(n * QD * sizeof(float));
        assert_non_null(kb && vb && kw && vw && o2);
        for (size_t h = 0; h < kv; h++) {
            vg_to_bf16(kc + h * cap * dh, ctx * dh, kb + h * cap64 * dh);
            vg_to_bf16(vc + h * cap * dh, ctx * dh, vb + h * cap64 * dh);
        }
        vg_from_bf16(kb, kv * cap64 * dh, kw);
        vg_from_bf16(vb, kv * cap64 * dh, vw);
        vg_attn_args b = a;
        b.k = kw;
        b.v = vw;
        b.k_hs = b.v_hs = cap64 * dh;
        assert_int_equal(vg_dnnl_attn(m, &b), 0);
        b.k = b.v = NULL;
        b.kb = kb;
        b.vb = vb;
        b.o = o2;
        memset(o2, 0xff, n * QD * sizeof(float));
        assert_int_equal(vg_dnnl_attn(m, &b), 0);
        assert_memory_equal(o, o2, n * QD * sizeof(float));
        /* the query rows in blocks, each over only the keys it can see (text.c's long prefill
         * chunks): the same values as the whole */
        float *o3 = malloc(n * QD * sizeof(float));
        assert_non_null(o3);
        memset(o3, 0xff, n * QD * sizeof(float));
        const size_t per = (n + 2) / 3;
        for (size_t i0 = 0; i0 < n; i0 += per) {
            vg_attn_args c = b;
            c.q = b.q + i0 * ld;
            c.n = VG_MIN(per, n - i0);
            c.ctx = (size_t)p0 + i0 + c.n;
            c.p0 = p0 + (long)i0;
            c.o = o3 + i0 * QD;
            assert_int_equal(vg_dnnl_attn(m, &c), 0);
        }
        double bw = 0;
        for (size_t i = 0; i < n * QD; i++)
            bw = fmax(bw, isnan(o3[i]) ? INFINITY : fabs((double)o3[i] - o2[i]));
        if (bw > 0)
            fail_msg("attention n %zu p0 %ld in blocks of %zu rows: max difference %g", n, p0, per,
                     bw);
        free(o3);
        free(kb);
        free(vb);
        free(kw);
        free(vw);
        free(o2);
    }
    free(qkv);
    free(kc);
    free(vc);
    free(o);
    free(ref);
    free(scr);
}

static void test_attention(void **state)
{
    (void)state;
    vg_model *m = load_bf16();
    check(m, 200, -1, 4, 4, 64);  /* vision: full attention, q/k/v interleaved */
    check(m, 96, -1, 3, 3, 16);   /* small head size */
    check(m, 150, -1, 3, 3, 32);  /* head size 32 (the fused AMX kernel's other size) */
    check(m, 784, -1, 2, 2, 64);  /* a 448x448 pair: 4 query blocks of 196 rows */
    check(m, 521, -1, 2, 2, 64);  /* 3 blocks of 174 rows, the last one padded */
    check(m, 130, 70, 4, 2, 128); /* causal after a cached prefix, grouped KV heads */
    check(m, 64, 0, 2, 1, 128);   /* causal from the start */
    check(m, 600, 0, 2, 1, 128);  /* a long prefill chunk (text.c: in query blocks) */
    check(m, 1, 40, 2, 2, 32);    /* one row */
    check(m, 40, 1000, 4, 2,
          128); /* a stream's pair after a long cache (bf16 cache from 32 rows) */
    vg_model_free(m);
}

/* A matrix packed for bf16 output (a vision fc1: bias and GELU in the epilogue) gives, bit for bit,
 * the float32-output packing's result rounded by vg_to_bf16, from float or bf16 input rows, for
 * row counts with whole and partial blocks; vg_matmul on it returns those values widened. Its 256
 * rows are two panels: with panels off and forced on (VG_DNNL_PANELS). */
static void check_out_b16(vg_model *m)
{
    const size_t rows = 256, cols = 128, ns[3] = {56, 300, 784};
    float *w = malloc(rows * cols * sizeof(float)), *b = malloc(rows * sizeof(float));
    assert_non_null(w && b);
    fill(w, rows * cols, 3);
    fill(b, rows, 5);
    vg_mat f32 = {0}, b16 = {0};
    assert_int_equal(vg_dnnl_pack(m, w, rows, cols, VG_ACT_GELU_TANH, 0, &f32), 0);
    assert_int_equal(vg_dnnl_pack(m, w, rows, cols, VG_ACT_GELU_TANH, 1, &b16), 0);
    assert_true(b16.out_b16 && !f32.out_b16);
    for (int k = 0; k < 3; k++) {
        const size_t n = ns[k];
        float *x = malloc(n * cols * sizeof(float)), *y = malloc(n * rows * sizeof(float));
        float *yw = malloc(n * rows * sizeof(float));
        uint16_t *xb = malloc(n * cols * 2), *want = malloc(n * rows * 2),
                 *got = malloc(n * rows * 2);
        float *ws = malloc(vg_mat_ws_floats(&b16, n) * sizeof(float));
        assert_non_null(x && y && yw && xb && want && got && ws);
        fill(x, n * cols, 17 + n);
        vg_to_bf16(x, n * cols, xb);
        vg_matmul(m, x, n, &f32, b, y, ws);
        vg_to_bf16(y, n * rows, want);
        memset(got, 0xff, n * rows * 2);
        vg_matmul_to_b16(m, x, NULL, n, &b16, b, got, ws);
        assert_memory_equal(got, want, n * rows * 2);
        memset(got, 0xff, n * rows * 2);
        vg_matmul_to_b16(m, NULL, xb, n, &b16, b, got, ws);
        assert_memory_equal(got, want, n * rows * 2);
        vg_matmul(m, x, n, &b16, b, yw, ws);
        vg_from_bf16(want, n * rows, y);
        assert_memory_equal(yw, y, n * rows * sizeof(float));
        free(x);
        free(y);
        free(yw);
        free(xb);
        free(want);
        free(got);
        free(ws);
    }
    free(w);
    free(b);
}

static void test_out_b16(void **state)
{
    (void)state;
    vg_model *m = load_bf16();
    setenv("VG_DNNL_PANELS", "0", 1);
    check_out_b16(m);
    setenv("VG_DNNL_PANELS", "1", 1);
    check_out_b16(m);
    unsetenv("VG_DNNL_PANELS");
    vg_model_free(m); /* frees every packing (the engine owns them) */
}

static float bf16_round(float v)
{
    uint16_t h;
    vg_to_bf16(&v, 1, &h);
    float r;
    vg_from_bf16(&h, 1, &r);
    return r;
}

/* A matrix packed at load (a vision product: bias and GELU in the epilogue) against a double
 * reference on the bf16-rounded rows and weights, for row counts in one block, in blocks of up to
 * 1024 rows split between the 2 threads, and in more large block sizes than the engine keeps
 * primitives for (the calls after that fall back to blocks of at most 256 rows): every result
 * within 1e-5 of the sum of |products| plus GELU's own error. With panels (VG_DNNL_PANELS: 384
 * rows are 3 panels of 128 columns) off, on and as the engine chooses; in each, the product added
 * to y (vg_matmul_b16_acc) is bit for bit y plus the product. */
static void check_packed_blocks(vg_model *m)
{
    const size_t rows = 384, cols = 64,
                 ns[] = {40, 300, 784, 1100, 2400, 520, 608, 700, 812, 900, 996, 1004, 1020, 784};
    float *w = malloc(rows * cols * sizeof(float)), *b = malloc(rows * sizeof(float));
    float *wr = malloc(rows * cols * sizeof(float));
    assert_non_null(w && b && wr);
    fill(w, rows * cols, 11);
    fill(b, rows, 13);
    for (size_t i = 0; i < rows * cols; i++)
        wr[i] = bf16_round(w[i]);
    vg_mat pk = {0};
    assert_int_equal(vg_dnnl_pack(m, w, rows, cols, VG_ACT_GELU_TANH, 0, &pk), 0);
    for (size_t k = 0; k < VG_ARRAY_LEN(ns); k++) {
        const size_t n = ns[k];
        float *x = malloc(n * cols * sizeof(float)), *y = malloc(n * rows * sizeof(float));
        float *ws = malloc(vg_mat_ws_floats(&pk, n) * sizeof(float));
        assert_non_null(x && y && ws);
        fill(x, n * cols, 29 + n);
        memset(y, 0xff, n * rows * sizeof(float));
        vg_matmul(m, x, n, &pk, b, y, ws);
        double worst = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t o = 0; o < rows; o++) {
                double acc = b[o], mag = fabs(b[o]);
                for (size_t c = 0; c < cols; c++) {
                    double p = (double)bf16_round(x[i * cols + c]) * wr[o * cols + c];
                    acc += p;
                    mag += fabs(p);
                }
                const double g =
                    0.5 * acc * (1 + tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)));
                const double e = fabs(y[i * rows + o] - g) / (mag * 1e-5 + 1e-4);
                worst = e > worst ? e : worst;
            }
        if (!(worst <= 1.0))
            fail_msg("packed product, %zu rows (VG_DNNL_PANELS %s): error %g of the bound", n,
                     getenv("VG_DNNL_PANELS") ? getenv("VG_DNNL_PANELS") : "unset", worst);
        uint16_t *xb = malloc(n * cols * 2);
        float *ya = malloc(n * rows * sizeof(float)), *want = malloc(n * rows * sizeof(float));
        assert_non_null(xb && ya && want);
        vg_to_bf16(x, n * cols, xb);
        fill(ya, n * rows, 31 + n);
        for (size_t i = 0; i < n * rows; i++)
            want[i] = ya[i] + y[i];
        vg_matmul_b16_acc(m, xb, n, &pk, b, ya, ws);
        assert_memory_equal(ya, want, n * rows * sizeof(float));
        free(xb);
        free(ya);
        free(want);
        free(x);
        free(y);
        free(ws);
    }
    free(w);
    free(b);
    free(wr);
}

static void test_packed_blocks(void **state)
{
    (void)state;
    vg_model *m = load_bf16();
    const char *modes[3] = {"0", "1", NULL};
    for (int k = 0; k < 3; k++) {
        if (modes[k])
            setenv("VG_DNNL_PANELS", modes[k], 1);
        else
            unsetenv("VG_DNNL_PANELS");
        check_packed_blocks(m);
    }
    unsetenv("VG_DNNL_PANELS");
    vg_model_free(m);
}

/* A text matrix unpacked per call (tiny1's first gate_proj: 256 rows, two panels) written
 * panel-major (vg_matmul_panels, the prefill's gate and up for SwiGLU) holds, bit for bit, the
 * row-major product by the same panels (VG_DNNL_PANELS=1), for row counts in whole and partial
 * blocks. */
static void test_panel_major(void **state)
{
    (void)state;
    vg_model *m = load_bf16();
    const vg_mat *w = &m->layers[0].w_gate;
    const size_t rows = w->rows, cols = w->cols, P = VG_PANEL_COLS, ns[3] = {64, 300, 1024};
    assert_true(rows % P == 0);
    setenv("VG_DNNL_PANELS", "1", 1);
    for (int k = 0; k < 3; k++) {
        const size_t n = ns[k];
        float *x = malloc(n * cols * sizeof(float)), *y = malloc(n * rows * sizeof(float));
        float *pm = malloc(n * rows * sizeof(float));
        uint16_t *xb = malloc(n * cols * 2);
        float *ws = malloc(vg_mat_ws_floats(w, n) * sizeof(float));
        assert_non_null(x && y && pm && xb && ws);
        fill(x, n * cols, 41 + n);
        vg_to_bf16(x, n * cols, xb);
        assert_true(vg_matmul_b16_ok(w, n));
        assert_true(vg_dnnl_panels_ok(m, w, n));
        vg_matmul_b16(m, xb, n, w, NULL, y, ws);
        memset(pm, 0xff, n * rows * sizeof(float));
        vg_matmul_panels(m, xb, n, w, pm, ws);
        for (size_t p = 0; p < rows / P; p++)
            for (size_t i = 0; i < n; i++)
                if (memcmp(pm + (p * n + i) * P, y + i * rows + p * P, P * sizeof(float)) != 0)
                    fail_msg("panel-major product, %zu rows: panel %zu row %zu differs", n, p, i);
        free(x);
        free(y);
        free(pm);
        free(xb);
        free(ws);
    }
    unsetenv("VG_DNNL_PANELS");
    vg_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention), cmocka_unit_test(test_out_b16),
        cmocka_unit_test(test_packed_blocks), cmocka_unit_test(test_panel_major)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
