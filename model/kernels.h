/*
 * kernels.h: the engine's own compute kernels for packed weights, their instruction-set levels and
 * the run-time dispatch (model/ only; never included outside model/ and its tests).
 *
 * Packed layouts (built once at load by weights.c). A matrix W[rows][K] (K a multiple of 32) is cut
 * into groups of VG_PACK_ROWS consecutive rows (the last group padded with zero rows), and each
 * group is stored as one contiguous, purely sequential stream, chunk by chunk along K:
 *  - BF16: for chunk c (32 columns), the 32 bf16 values of row 0, then row 1, ... of the group
 *    ([K/32][R][32] uint16). A group is R*K*2 bytes.
 *  - Q8_0: the int8 values as for BF16 ([K/32][R][32] int8, R*K bytes), followed by the fp16
 *    scales of the group ([K/32][R]); value = scale * q, q in -127..127 (llama.cpp's Q8_0 block:
 *    32 int8 with one fp16 scale). A group is R*K + R*K/16 bytes.
 * A matrix-vector product over a range of groups therefore reads one sequential stream per thread,
 * which is what lets a single thread reach the memory bandwidth (docs/weights.md).
 *
 * Kernel contract (every level computes the same function; only the float summation order
 * differs): groups g0..g1-1, rows beyond `rows` (padding) are not written.
 *  - bf16: y[r] = sum_k bf16_to_f32(W[r][k]) * x[k], x float32 (exact float32 products).
 *    The caller first calls bf16_prep(x, K, xp), which lays x out in the order the level wants.
 *  - q8_0: the activation x is quantized per block of 32 with vg_q8_quantize (xq int8, xd float
 *    scale per block), and y[r] = sum_b wscale[r][b] * xd[b] * sum_j W[r][b*32+j] * xq[b*32+j], the
 *    integer dot exact in int32 (the llama.cpp q8_0 x q8_0 product).
 * Several activation rows at once (short prefills, e.g. a live stream's questions; weights.c
 * picks them up to a measured row count): the kernels read each packed group once and apply it to
 * every row of x, VG_GEMM_MR rows per pass over the group (the group stays in L1/L2 between
 * passes), so the weights cost one sequential read per call whatever the number of rows. Output
 * y[i * ldy + r] for x row i < n:
 *  - bf16_gemm: y = sum_k bf16(W[r][k]) * bf16(x[i][k]) summed in float32: the activation is
 *    rounded to bf16 first (by bf16_prep_n, as oneDNN's and PyTorch's bf16 products do), so that
 *    the AVX-512 level can use VDPBF16PS; the products are exact, every level computes the same
 *    function up to the order of float additions (scalar: the 1-row kernel's order).
 *  - q8_gemm: each row quantized by q8_prep_n exactly as vg_q8_quantize does for one row, and
 *    every level returns, bit for bit, what its own q8_gemv returns for that row alone (the same
 *    integer block dots and the same float operations in the same order).
 * All kernels are pure and thread-safe.
 */
#ifndef VG_MODEL_KERNELS_H
#define VG_MODEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define VG_PACK_ROWS 4  /* rows interleaved per group */
#define VG_QK        32 /* values per Q8_0 block and per packed chunk */
#define VG_GEMM_MR   4  /* activation rows per pass over a group (bf16_gemm, q8_gemm) */

enum { VG_ISA_SCALAR = 0, VG_ISA_AVX2 = 1, VG_ISA_AVX512 = 2 };

/* ---- cpu.c ---- */
/* The best level this CPU and OS support (cpuid + XGETBV). Pure, any thread. */
int vg_isa_detect(void);
/* The level in use: vg_isa_detect() lowered by the environment variable VG_ISA (scalar, avx2,
 * avx512), decided on first call. Any thread. */
int vg_isa_level(void);
/* Tests only: use level from now on. 0, or VG_ENOTSUP when the CPU lacks it. Not concurrently with
 * running kernels. */
int vg_isa_force(int level);
/* "scalar" / "avx2" / "avx512" and back (-1 for an unknown name). */
const char *vg_isa_name(int level);
int vg_isa_parse(const char *name);

/* ---- kernels.c: one table per level ---- */
typedef struct vg_kernels {
    /* xp[K]: x reordered for bf16_gemv. */
    void (*bf16_prep)(const float *x, size_t K, float *xp);
    void (*bf16_gemv)(const uint16_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                      const float *xp, float *y);
    void (*q8_gemv)(const int8_t *w, size_t K, size_t rows, size_t g0, size_t g1, const int8_t *xq,
                    const float *xd, float *y);
    /* Several rows. bf16_prep_n: x[n][K] into xp[n][K] floats of space, in this level's form
     * (rounded to bf16). q8_prep_n: x[n][K] into xq[n][K] bytes and xd[n][K/32] block scales
     * (vg_q8_quantize per row, then in this level's form). The products then cover groups
     * g0..g1 for all n rows (y[i * ldy + r]; padding rows are not written). */
    void (*bf16_prep_n)(const float *x, size_t n, size_t K, float *xp);
    void (*bf16_gemm)(const uint16_t *w, size_t K, size_t rows, size_t g0, size_t g1,
                      const float *xp, size_t n, float *y, size_t ldy);
    void (*q8_prep_n)(const float *x, size_t n, size_t K, int8_t *xq, float *xd);
    void (*q8_gemm)(const int8_t *w, size_t K, size_t rows, size_t g0, size_t g1, const int8_t *xq,
                    const float *xd, size_t n, float *y, size_t ldy);
    /* XOR of every 64-bit word of p[n words] (the streaming-read ceiling of vigil-model bench). */
    uint64_t (*read_xor)(const uint64_t *p, size_t n);
    /* vg_pack_row_q8 at this level: every level writes the same bytes (vg_pack_row_q8_scalar's). */
    void (*pack_row_q8)(const float *src, size_t K, int r, int8_t *group);
    /* vg_pack_row_bf16 at this level: the same bytes as vg_pack_row_bf16_scalar. */
    void (*pack_row_bf16)(const float *src, size_t K, int r, uint16_t *group);
    /* dst[i] = the fp16 value src[i] as float32 (exact), i < n; src any alignment. Every level
     * gives vg_f16_to_f32_k's bits, except that a signalling NaN may come back quiet. */
    void (*widen_f16)(const void *src, size_t n, float *dst);
    /* vg_q8_quantize at this level: every level writes vg_q8_quantize_scalar's bytes and scales. */
    void (*q8_quantize)(const float *x, size_t K, int8_t *xq, float *xd);
} vg_kernels;

/* The table of a level (VG_ISA_*), or of vg_isa_level() for -1. */
const vg_kernels *vg_kernels_get(int level);

/* Bytes of one packed group of K columns. */
static inline size_t vg_pack_group_bytes_bf16(size_t K)
{
    return (size_t)VG_PACK_ROWS * K * 2;
}
static inline size_t vg_pack_group_bytes_q8(size_t K)
{
    return (size_t)VG_PACK_ROWS * K + (size_t)VG_PACK_ROWS * (K / VG_QK) * 2;
}

/* Quantizes x[K] to Q8_0 blocks: xd[b] = max|x| / 127 over block b (float32, NaN values ignored),
 * xq = round-to-nearest-even(x * (1 / xd)) within -127..127, 0 for a NaN (and for every value of a
 * block whose max is infinite or zero). Through the level in use (the per-token decode path); every
 * level gives _scalar's bytes and scales, so all levels see the same integers. */
void vg_q8_quantize(const float *x, size_t K, int8_t *xq, float *xd);
void vg_q8_quantize_scalar(const float *x, size_t K, int8_t *xq, float *xd);

/* out[i] = x[i] rounded to bf16 (nearest even) and widened back to float32, i < n. */
void vg_bf16_round(const float *x, size_t n, float *out);

/* Packing (used by weights.c and the tests). src is one row of K float32 values; r is the row's
 * index within its group. */
/* vg_pack_row_bf16: round to nearest even (a NaN stays a quiet NaN, subnormals kept), through the
 * level in use; _scalar is the reference. */
void vg_pack_row_bf16(const float *src, size_t K, int r, uint16_t *group);
void vg_pack_row_bf16_scalar(const float *src, size_t K, int r, uint16_t *group);
/* The same from a row already in bf16 (K values at src, any alignment), copied as they are: what
 * vg_pack_row_bf16 writes for their float32 widening, NaN payloads aside. */
void vg_pack_row_bf16_raw(const void *src, size_t K, int r, uint16_t *group);
/* Q8_0 as llama.cpp quantizes it (quantize_row_q8_0_ref): per block of 32, the scale max|x| / 127
 * rounded to fp16, q = round-to-nearest-even(x / that scale) within -127..127 (a NaN value becomes
 * 0; the loader refuses non-finite weights before this). Through the level in use (the loader's
 * hot loop: the AVX-512 form is several times faster); _scalar is the reference every level
 * matches byte for byte. */
void vg_pack_row_q8(const float *src, size_t K, int r, int8_t *group);
void vg_pack_row_q8_scalar(const float *src, size_t K, int r, int8_t *group);
/* Unpacks row r of a group back to K float32 values. */
void vg_unpack_row_bf16(const uint16_t *group, size_t K, int r, float *dst);
void vg_unpack_row_q8(const int8_t *group, size_t K, int r, float *dst);

/* The stride of the kernels' software-prefetch loops: one cache line (64), read at run time so
 * that the compiler keeps each loop a loop over a stride it cannot see. With a constant stride GCC
 * 12 emits a chunk's prefetches back to back (unrolled, or as a tight loop), and on the Xeon of
 * 2026-12-07 that cost single-thread streaming: one thread over 512 MiB, alternating in one
 * session, the AMX GEMV 81-85 % -> 92-96 % of the read ceiling, the AVX-512 bf16 GEMV 16.9-17.7
 * -> 18.3-19.0 GB/s, the plain read 19.0-20.3 -> 21.0-21.9 GB/s (the same distances, hints and
 * counts either way). One per file that includes this header; never written. */
static volatile size_t vg_pf_stride __attribute__((unused)) = 64;

/* ---- amx.c: the blocked layout (oneDNN's BA16a64b2a) ----
 * A bf16 matrix W[N][K] (K a multiple of 32) as blocks of VG_BLK_N output rows (the last padded
 * with zero rows), block b at element b * VG_BLK_N * K; within a block, for each 32 columns of K
 * (4 KiB), the 16 column pairs in turn, each holding the 64 rows' two values: element
 * vg_blk_index(k, r) is W[b * VG_BLK_N + r][k]. This is the weight layout oneDNN's bf16 matmul
 * uses on AMX/AVX512-BF16 CPUs (weights {K, N}, tag BA16a64b2a), and the B-tile layout of AMX's
 * TDPBF16PS (a 32 x 16 tile is 16 rows of 64 bytes at a stride of 256 bytes). */
#define VG_BLK_N 64
static inline size_t vg_blk_index(size_t k, size_t r)
{
    return (k / 32) * (32 * VG_BLK_N) + (k % 32) / 2 * (2 * VG_BLK_N) + r * 2 + (k & 1);
}
/* (cpu.c) 1 when the AMX tiles can run vg_blk_gemm here: the CPU has AMX-BF16 and AMX-TILE, the
 * OS saves the tile state and granted this process the tile data (asked once), the kernel level in
 * use is avx512 and the environment variable VG_AMX is not 0. Any thread. */
int vg_amx_ok(void);
/* y[i * ldy + r] = (or += with acc) sum_k bf16(W[r][k]) * bf16(x[i * ldx + k]) for the rows r of
 * blocks [b0, b1) below N and i < n, summed in float32 (x already bf16: n rows of K values at a
 * stride of ldx). Through AMX tiles when vg_amx_ok(), else the scalar loop (_scalar, the
 * reference: the same function up to the order of float additions). */
void vg_blk_gemm(const uint16_t *w, size_t K, size_t N, size_t b0, size_t b1, const uint16_t *x,
                 size_t n, size_t ldx, float *y, size_t ldy, int acc);
void vg_blk_gemm_scalar(const uint16_t *w, size_t K, size_t N, size_t b0, size_t b1,
                        const uint16_t *x, size_t n, size_t ldx, float *y, size_t ldy, int acc);

/* The portable widen_f16 (every level's reference). */
void vg_widen_f16_scalar(const void *src, size_t n, float *dst);

/* fp16 <-> float32 (round to nearest even; used for the Q8_0 scales). */
uint16_t vg_f32_to_f16(float f);
float vg_f16_to_f32_k(uint16_t h);

#endif
