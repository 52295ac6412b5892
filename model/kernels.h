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
 * All kernels are pure and thread-safe.
 */
#ifndef VG_MODEL_KERNELS_H
#define VG_MODEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define VG_PACK_ROWS 4  /* rows interleaved per group */
#define VG_QK        32 /* values per Q8_0 block and per packed chunk */

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
    /* XOR of every 64-bit word of p[n words] (the streaming-read ceiling of vigil-model bench). */
    uint64_t (*read_xor)(const uint64_t *p, size_t n);
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

/* Quantizes x[K] to Q8_0 blocks: xd[b] = max|x| / 127 over block b (float32), xq = round(x / xd).
 * Shared by every level, so all levels see the same integers. */
void vg_q8_quantize(const float *x, size_t K, int8_t *xq, float *xd);

/* Packing (used by weights.c and the tests). src is one row of K float32 values; r is the row's
 * index within its group. */
void vg_pack_row_bf16(const float *src, size_t K, int r, uint16_t *group);
void vg_pack_row_q8(const float *src, size_t K, int r, int8_t *group);
/* Unpacks row r of a group back to K float32 values. */
void vg_unpack_row_bf16(const uint16_t *group, size_t K, int r, float *dst);
void vg_unpack_row_q8(const int8_t *group, size_t K, int r, float *dst);

/* fp16 <-> float32 (round to nearest even; used for the Q8_0 scales). */
uint16_t vg_f32_to_f16(float f);
float vg_f16_to_f32_k(uint16_t h);

#endif
