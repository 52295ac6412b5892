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
 * Products on the blocks themselves (Q4_K and Q6_K, the bulk of a Q4_K_M file), as llama.cpp
 * computes them: the activation is quantized once per call to Q8_K (per 256 values: a float
 * scale, 256 int8 and 16 sums of 16), and each row's dot product is exact integer arithmetic per
 * block, scaled in float32. Rows are the GGUF rows unchanged (row r at r * row_bytes), copied to
 * memory at load (weights.c). Levels: scalar (quant.c, the reference) and AVX2 (quant_x86.c, also
 * used at the AVX-512 level); each vectorized kernel computes the scalar kernel's function with
 * the same integer sums, so results agree to float rounding of the per-block accumulation.
 */
typedef struct vg_q8k {
    float *d;       /* [K / 256] */
    int8_t *q;      /* [K] */
    int16_t *bsums; /* [K / 16] */
} vg_q8k;
/* Bytes vg_q8k_quantize needs for K values (K a multiple of 256), laid out by vg_q8k_view. */
size_t vg_q8k_bytes(size_t K);
vg_q8k vg_q8k_view(void *buf, size_t K);
/* x[K] -> Q8_K: d = max|x| / 127 per 256 (1 when all zero), q = round(x / d). */
void vg_q8k_quantize(const float *x, size_t K, vg_q8k *out);
/* 1 when vg_quant_gemv handles the type (Q4_K, Q6_K). */
int vg_quant_gemv_supported(uint32_t ggml_type);
/* y[r] = row r . x for rows r0..r1-1 of W (ggml_type blocks, row_bytes per row, K values per row),
 * x given as Q8_K. level: VG_ISA_* (kernels.h). */
void vg_quant_gemv(int level, uint32_t ggml_type, const unsigned char *w, size_t row_bytes,
                   size_t K, size_t r0, size_t r1, const vg_q8k *x, float *y);
/* quant_x86.c: the AVX2 kernels; 1 when the type was handled, 0 otherwise (or not x86). */
int vg_quant_gemv_avx2(uint32_t ggml_type, const unsigned char *w, size_t row_bytes, size_t K,
                       size_t r0, size_t r1, const vg_q8k *x, float *y);

#endif
