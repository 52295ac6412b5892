/*
 * amx.c: products with bf16 text matrices held in oneDNN's blocked layout (kernels.h, "Blocked
 * layout"), by AMX tiles where the CPU and the OS allow them, else by a portable scalar loop.
 *
 * The blocked layout is the one oneDNN's bf16 matmul reads on AMX/AVX512-BF16 CPUs, so a matrix
 * kept in it (weights.c, dnnl.c: vg_model_mat_text, vg_dnnl_mat_blocked) serves a long prefill
 * through oneDNN with no unpacking per call, and decode and short prefills through the tiles here:
 * one TILELOADD brings 1 KiB of weights (32 K x 16 outputs) and one TDPBF16PS applies it to up to
 * 16 rows of x. On the Xeon of 2026-12-07 (one thread, 512 MiB of weights from memory) that streams
 * the weights at 85-90 % of the machine's streaming-read ceiling where the AVX-512 GEMV on the row
 * groups reaches 80-83 %: the GEMV's two widening operations and two FMAs per 64 bytes of weights
 * leave fewer bytes in flight than the loads alone would (docs/weights.md, "AMX tiles for decode").
 *
 * Whether the tiles can run here is vg_amx_ok's (cpu.c, beside the other run-time checks).
 *
 * Threads: every function is thread-safe; vg_blk_gemm configures the calling thread's tiles and
 * releases them before it returns.
 */
#include "common.h"
#include "internal.h"
#include "kernels.h"
#include "simd_x86.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Stores rows [0, n) x columns [0, cols) of the block's results t[n][64] into y (or adds). */
static void put_block(float *y, size_t ldy, const float *t, size_t n, size_t cols, int acc)
{
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < cols; c++)
            y[i * ldy + c] = acc ? y[i * ldy + c] + t[i * VG_BLK_N + c] : t[i * VG_BLK_N + c];
}

void vg_blk_gemm_scalar(const uint16_t *w, size_t K, size_t N, size_t b0, size_t b1,
                        const uint16_t *x, size_t n, size_t ldx, float *y, size_t ldy, int acc)
{
    float t[VG_BLK_N];
    for (size_t b = b0; b < b1; b++) {
        const uint16_t *blk = w + b * VG_BLK_N * K;
        const size_t cols = VG_MIN(VG_BLK_N, N - b * VG_BLK_N);
        for (size_t i = 0; i < n; i++) {
            for (size_t c = 0; c < cols; c++) {
                float s = 0.0f;
                for (size_t k = 0; k < K; k++)
                    s += vg_bf16_to_f32(blk[vg_blk_index(k, c)]) * vg_bf16_to_f32(x[i * ldx + k]);
                t[c] = s;
            }
            put_block(y + i * ldy + b * VG_BLK_N, ldy, t, 1, cols, acc);
        }
    }
}

#if defined(__x86_64__)
/* Prefetch distance in bytes along the block stream: 2048 and 4096 alike, 512-1024 a little
 * slower, none 83 % of the read ceiling instead of 86-90 % (the Xeon of 2026-12-07). */
#define AMX_PF 2048

#define T_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw")))

/* Rows [0, r) (r <= 16) of x against blocks [b0, b1): tiles 0-3 the 16-column groups' results,
 * 4 the rows of x, 5-7 the weights (rotating). */
T_AMX static void blk_pass(const uint16_t *w, size_t K, size_t N, size_t b0, size_t b1,
                           const uint16_t *x, size_t r, size_t ldx, float *y, size_t ldy, int acc)
{
    const uint8_t rows[8] = {(uint8_t)r, (uint8_t)r, (uint8_t)r, (uint8_t)r,
                             (uint8_t)r, 16,         16,         16};
    vg_tiles_config(rows);
    float t[16 * VG_BLK_N] __attribute__((aligned(64)));
    const size_t sx = ldx * sizeof(uint16_t);
    const size_t line = vg_pf_stride; /* kernels.h */
    for (size_t b = b0; b < b1; b++) {
        const unsigned char *blk = (const unsigned char *)(w + b * VG_BLK_N * K);
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (size_t k = 0; k < K; k += 32) {
            const unsigned char *s = blk + k * VG_BLK_N * 2; /* 32 K x 64 N: 4 KiB */
            for (size_t o = 0; o < 4096; o += line)
                _mm_prefetch((const char *)s + AMX_PF + o, _MM_HINT_T0);
            _tile_loadd(4, x + k, sx);
            _tile_loadd(5, s, 256);
            _tile_dpbf16ps(0, 4, 5);
            _tile_loadd(6, s + 64, 256);
            _tile_dpbf16ps(1, 4, 6);
            _tile_loadd(7, s + 128, 256);
            _tile_dpbf16ps(2, 4, 7);
            _tile_loadd(5, s + 192, 256);
            _tile_dpbf16ps(3, 4, 5);
        }
        _tile_stored(0, t, VG_BLK_N * 4);
        _tile_stored(1, t + 16, VG_BLK_N * 4);
        _tile_stored(2, t + 32, VG_BLK_N * 4);
        _tile_stored(3, t + 48, VG_BLK_N * 4);
        put_block(y + b * VG_BLK_N, ldy, t, r, VG_MIN(VG_BLK_N, N - b * VG_BLK_N), acc);
    }
    _tile_release();
}

void vg_blk_gemm(const uint16_t *w, size_t K, size_t N, size_t b0, size_t b1, const uint16_t *x,
                 size_t n, size_t ldx, float *y, size_t ldy, int acc)
{
    if (!vg_amx_ok()) {
        vg_blk_gemm_scalar(w, K, N, b0, b1, x, n, ldx, y, ldy, acc);
        return;
    }
    for (size_t i0 = 0; i0 < n; i0 += 16)
        blk_pass(w, K, N, b0, b1, x + i0 * ldx, VG_MIN(16, n - i0), ldx, y + i0 * ldy, ldy, acc);
}
#else
void vg_blk_gemm(const uint16_t *w, size_t K, size_t N, size_t b0, size_t b1, const uint16_t *x,
                 size_t n, size_t ldx, float *y, size_t ldy, int acc)
{
    vg_blk_gemm_scalar(w, K, N, b0, b1, x, n, ldx, y, ldy, acc);
}
#endif
