/*
 * quant.h: GGUF tensor types the engine computes with (model/ only): dequantization of the
 * llama.cpp block formats, bit-identical to gguf-py's reference dequantization (gguf/quants.py),
 * and the conversion of a GGUF tensor's rows to the engine's own packed layouts.
 *
 * Block layouts (ggml-common.h; all little-endian, fp16 scales):
 *  - Q8_0 (32 values, 34 bytes): d, int8 q[32]; x = d * q.
 *  - Q4_0 (32 values, 18 bytes): d, uint8 qs[16]; x[j] = d * ((qs[j] & 15) - 8), x[j + 16] = d *
 *    ((qs[j] >> 4) - 8).
 *  - Q4_1 / Q5_0 / Q5_1 (32 values; llama-quantize's fallbacks for rows that are not whole
 *    K-quant blocks): d [, m] [, uint32 qh], qs[16]; x = d * q (+ m), Q5_0 q - 16, the fifth bit
 *    of value j in bit j of qh.
 *  - Q4_K (256 values, 144 bytes): d, dmin, scales[12] (8 six-bit scales and 8 six-bit mins),
 *    qs[128]; sub-block s (32 values) = (d * sc[s]) * q - (dmin * m[s]), the 4-bit q of sub-block
 *    2i in the low nibbles of qs[32i .. 32i + 31], of 2i + 1 in the high nibbles.
 *  - Q5_K (256 values, 176 bytes): as Q4_K plus qh[32]: bit s of qh[j] is the fifth bit of value j
 *    of sub-block s.
 *  - Q6_K (256 values, 210 bytes): ql[128], qh[64], int8 scales[16], d; value = (d * scales[i /
 * 16])
 *    * (q - 32) with q six bits (low four in ql, high two in qh).
 * Pure functions, any thread.
 */
#ifndef VG_MODEL_QUANT_H
#define VG_MODEL_QUANT_H

#include "gguf.h"

#include <stddef.h>
#include <stdint.h>

/* 1 when vg_quant_dequant handles the ggml type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q4_K, Q5_K, Q6_K). */
int vg_quant_supported(uint32_t ggml_type);
/* Dequantizes n values (a whole number of the type's blocks) from src (any alignment) into dst.
 * 0, or -1 for an unsupported type (dst untouched). */
int vg_quant_dequant(uint32_t ggml_type, const void *src, size_t n, float *dst);

/* Quantizes n values (a whole number of blocks) of x into dst with llama.cpp's reference quantizer
 * of the type (quantize_row_*_ref: what llama-quantize runs without an importance matrix; same
 * bytes): F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K. 0, or -1 for another type. */
int vg_quant_quantize(uint32_t ggml_type, const float *x, size_t n, void *dst);

/* Copies one row of K values (K / 32 Q8_0 blocks, any alignment) into row r of a Q8_0 packed group
 * (kernels.h) unchanged: the int8 values and the fp16 scales, -128 (which llama.cpp's quantizer
 * never writes) clamped to -127 as the kernels require. */
void vg_pack_row_q8_raw(const void *blocks, size_t K, int r, int8_t *group);

/* ---------------------------------------------------------------------------------------------------
 * The interleaved block layout (quant_kq.c, quant_x86.c): GGUF Q4_K, Q5_K and Q6_K matrices
 * kept at their own precision (4.625, 5.625, 6.5625 bits a value), and Q4_0, Q4_1, Q5_0, Q5_1
 * (4.5, 5, 5.5, 6), repacked at load so that a GEMV streams each thread's rows sequentially, as
 * the packed Q8_0 groups of kernels.h do.
 *
 * A matrix W[rows][K] (K a multiple of 256) is cut into groups of VG_PACK_ROWS = 4 rows (the last
 * padded with zero rows); a group is K / 256 superblock records, one per 256 columns, each holding
 * the four rows' GGUF blocks for those columns with the scales unpacked:
 *  - Q4_K / Q5_K: fp16 d[4], fp16 dmin[4] (the blocks' own), uint8 sc[4][8], uint8 m[4][8] (the
 *    six-bit sub-block scales and mins), then per sub-block s (32 columns) a chunk of 64 bytes:
 *    byte p = 16 r + j holds value j of row r's sub-block in its low nibble and value j + 16 in
 *    its high nibble; Q5_K adds 16 bytes: the fifth bits of the low values (bit p of a
 *    little-endian uint64), then of the high values. 592 / 720 bytes a record.
 *  - Q6_K: fp16 d[4], int8 sc[4][16], then per sub-block 64 nibble bytes as above and 32 bytes
 *    of the two high bits: byte k holds, for nibble byte k, the low value's in bits 0-1 and the
 *    high value's in bits 2-3, and for nibble byte k + 32 the same in bits 4-7. 840 bytes.
 *  - Q4_0 / Q5_0: fp16 d[8][4] (sub-block s of row r at 4 s + r: the blocks' own d), then the 8
 *    chunks as Q4_K's (Q5_0: as Q5_K's, with the fifth bits). 576 / 704 bytes.
 *  - Q4_1 / Q5_1: fp16 d[8][4], fp16 m[8][4], then the chunks as Q4_0 / Q5_0. 640 / 768 bytes.
 * Values: Q4_K / Q5_K (d * sc) * q - (dmin * m), Q6_K (d * sc) * (q - 32), Q4_0 d * (q - 8),
 * Q5_0 d * (q - 16), Q4_1 / Q5_1 (d * q) + m, float32 as gguf-py computes them
 * (vg_kq_unpack_row equals vg_quant_dequant of the original rows bit for bit).
 *
 * Products: the activation is quantized once per call to Q8_K (vg_kq_act: per 256 values a float
 * scale, 256 int8 and the sums of every 16 and every 32), and each row's dot product is exact
 * integer arithmetic per superblock (sub-block scale times the int dot of quants and activation,
 * minus the mins -- or Q6_K's 32 offset -- times the activation sums), scaled in float32 once per
 * superblock; the 32-value types scale each sub-block's integer sum (less Q4_0's 8 / Q5_0's 16
 * times the activation's sum) by its own d in float32, and Q4_1 / Q5_1 add m times the
 * activation's sum. Levels: scalar (quant_kq.c, the reference), AVX2 (VPMADDUBSW + VPMADDWD) and
 * AVX-512 VNNI (VPMADDUBSW + VPDPWSSD, the 32-value types VPDPBUSD, on four rows at once); every
 * level computes the same integer sums, so results differ only by the float rounding of the
 * accumulation.
 */
/* The layout's facts per type, shared by the packing (quant_kq.c) and the kernels (quant_x86.c):
 * the 32-value types (Q4_0, Q4_1, Q5_0, Q5_1), those with a min per block (Q4_1, Q5_1: d q + m),
 * those with a fifth bit (80-byte chunks), a record's header bytes (0: not a layout type), a
 * sub-block chunk's bytes, and what the type subtracts from its unsigned quants. */
static inline int vg_kq_b32(uint32_t t)
{
    return t == VG_GGML_Q4_0 || t == VG_GGML_Q4_1 || t == VG_GGML_Q5_0 || t == VG_GGML_Q5_1;
}

static inline int vg_kq_has_min(uint32_t t)
{
    return t == VG_GGML_Q4_1 || t == VG_GGML_Q5_1;
}

static inline int vg_kq_five_bits(uint32_t t)
{
    return t == VG_GGML_Q5_K || t == VG_GGML_Q5_0 || t == VG_GGML_Q5_1;
}

static inline size_t vg_kq_hdr_bytes(uint32_t t)
{
    if (vg_kq_b32(t))
        return vg_kq_has_min(t) ? 128 : 64;
    return t == VG_GGML_Q6_K ? 72 : t == VG_GGML_Q4_K || t == VG_GGML_Q5_K ? 80 : 0;
}

static inline size_t vg_kq_chunk_bytes(uint32_t t)
{
    return t == VG_GGML_Q6_K ? 96 : vg_kq_five_bits(t) ? 80 : 64;
}

/* Bytes of one record (4 rows x 256 values): header, then 8 sub-block chunks; 0 for another
 * type. */
static inline size_t vg_kq_rec_bytes(uint32_t t)
{
    return vg_kq_hdr_bytes(t) ? vg_kq_hdr_bytes(t) + 8 * vg_kq_chunk_bytes(t) : 0;
}

static inline int vg_kq_offset(uint32_t t)
{
    return t == VG_GGML_Q4_0 ? 8 : t == VG_GGML_Q5_0 ? 16 : t == VG_GGML_Q6_K ? 32 : 0;
}

/* 1 for Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0 and Q5_1. */
int vg_kq_supported(uint32_t ggml_type);
/* Bytes of one group of 4 rows of K values. */
size_t vg_kq_group_bytes(uint32_t ggml_type, size_t K);
/* Packs nrows (1..4; the rest zero) GGUF rows (row r at rows + r * row_bytes, any alignment) of K
 * values into one group (vg_kq_group_bytes bytes). */
void vg_kq_pack_group(uint32_t ggml_type, const unsigned char *rows, size_t row_bytes, size_t nrows,
                      size_t K, unsigned char *group);
/* Row r (0..3) of a group as K float32 values. */
void vg_kq_unpack_row(uint32_t ggml_type, const unsigned char *group, size_t K, int r, float *dst);
/* The whole group as kernels.h's BF16 group ([K / 32][4][32] uint16, values rounded to bf16). */
void vg_kq_group_to_bf16(uint32_t ggml_type, const unsigned char *group, size_t K, uint16_t *dst);

typedef struct vg_kq_act {
    int8_t *q;     /* [K] */
    float *d;      /* [K / 256] */
    int16_t *bs16; /* [K / 16]: sums of q over each 16 */
    int16_t *bs32; /* [K / 32] */
} vg_kq_act;
/* Bytes vg_kq_act_quantize needs for K values, laid out by vg_kq_act_view (any alignment). */
size_t vg_kq_act_bytes(size_t K);
vg_kq_act vg_kq_act_view(void *buf, size_t K);
/* x[K] -> Q8_K: d = max|x| / 127 per 256 (1 when all zero), q = round(x / d), and the sums. */
void vg_kq_act_quantize(const float *x, size_t K, vg_kq_act *a);
/* y[r] = row r . x for the rows of groups g0..g1-1 of W (padding rows >= rows not written).
 * level: VG_ISA_* (kernels.h). */
void vg_kq_gemv(int level, uint32_t ggml_type, const unsigned char *w, size_t K, size_t rows,
                size_t g0, size_t g1, const vg_kq_act *x, float *y);
/* vg_kq_group_to_bf16 at a level (VG_ISA_*): the AVX-512 widening when level allows, else the
 * scalar one; the same bits either way. */
void vg_kq_group_to_bf16_level(int level, uint32_t ggml_type, const unsigned char *group, size_t K,
                               uint16_t *dst);
/* The whole group as 4 rows of K float32 values (dst[r * K + k]), equal to vg_kq_unpack_row of
 * each row; vectorized from the avx2 level on. */
void vg_kq_group_to_f32_level(int level, uint32_t ggml_type, const unsigned char *group, size_t K,
                              float *dst);
/* quant_x86.c: the AVX2 / AVX-512 kernels; 1 when handled at that level, 0 otherwise. */
int vg_kq_group_to_f32_x86(int level, uint32_t ggml_type, const unsigned char *group, size_t K,
                           float *dst);
int vg_kq_group_to_bf16_x86(int level, uint32_t ggml_type, const unsigned char *group, size_t K,
                            uint16_t *dst);
int vg_kq_gemv_x86(int level, uint32_t ggml_type, const unsigned char *w, size_t K, size_t rows,
                   size_t g0, size_t g1, const vg_kq_act *x, float *y);

#endif
