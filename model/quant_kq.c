/*
 * quant_kq.c: the interleaved block layout (quant.h): packing GGUF Q4_K / Q5_K / Q6_K and Q4_0 /
 * Q4_1 / Q5_0 / Q5_1 rows into row groups, unpacking (bit-identical to vg_quant_dequant), the Q8_K
 * activation and the scalar reference GEMV; quant_x86.c has the AVX2 and AVX-512 VNNI kernels.
 *
 * Compiled with -ffp-contract=off (model/CMakeLists.txt) like quant.c: the unpacked values are
 * gguf-py's float32 operations in gguf-py's order. Pure functions, any thread.
 */
#include "quant.h"

#include "gguf.h"
#include "internal.h"
#include "kernels.h"

#include <math.h>
#include <string.h>

#define KQ_R 4 /* rows per group: VG_PACK_ROWS */

int vg_kq_supported(uint32_t t)
{
    return vg_kq_rec_bytes(t) != 0;
}

size_t vg_kq_group_bytes(uint32_t t, size_t K)
{
    return (K / 256) * vg_kq_rec_bytes(t);
}

static float f16(const unsigned char *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return vg_f16_to_f32_k(h);
}

/* One GGUF superblock decoded: q[256] unsigned (4, 5 or 6 bits), the fp16 d (and dmin), the
 * sub-block scales (8 unsigned, or 16 signed for Q6_K) and mins. */
typedef struct sb {
    uint8_t q[256];
    uint16_t dh, dminh; /* the fp16 d and dmin */
    int8_t sc6[16];
    uint8_t sc[8], m[8];
    uint16_t d8[8], m8[8]; /* the 32-value types: each block's fp16 d (and m) */
} sb;

/* The 8 consecutive 32-value blocks of b (Q4_0 d qs[16]; Q4_1 d m qs; Q5_0 d qh qs; Q5_1 d m qh
 * qs: ggml-common.h) into o. */
static void decode_b32(uint32_t t, const unsigned char *b, sb *o)
{
    size_t be, bb;
    vg_ggml_type_block(t, &be, &bb);
    const size_t qs_at = bb - 16;
    for (int k = 0; k < 8; k++) {
        const unsigned char *blk = b + (size_t)k * bb;
        memcpy(&o->d8[k], blk, 2);
        o->m8[k] = 0;
        if (vg_kq_has_min(t))
            memcpy(&o->m8[k], blk + 2, 2);
        uint32_t qh = 0;
        if (vg_kq_five_bits(t))
            memcpy(&qh, blk + qs_at - 4, 4);
        for (int j = 0; j < 16; j++) {
            const unsigned char q = blk[qs_at + (size_t)j];
            o->q[32 * k + j] = (uint8_t)((q & 15) | (((qh >> j) & 1) << 4));
            o->q[32 * k + 16 + j] = (uint8_t)((q >> 4) | (((qh >> (j + 16)) & 1) << 4));
        }
    }
}

static void decode_block(uint32_t t, const unsigned char *b, sb *o)
{
    if (vg_kq_b32(t)) {
        decode_b32(t, b, o);
        return;
    }
    if (t == VG_GGML_Q6_K) {
        const unsigned char *ql = b, *qh = b + 128;
        for (int i = 0; i < 256; i++) {
            int h = i / 128, r = i % 128;
            int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 15;
            int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
            o->q[i] = (uint8_t)(lo | (hi << 4));
        }
        memcpy(o->sc6, b + 192, 16);
        memcpy(&o->dh, b + 208, 2);
        o->dminh = 0;
        return;
    }
    memcpy(&o->dh, b, 2);
    memcpy(&o->dminh, b + 2, 2);
    const unsigned char *s = b + 4;
    for (int j = 0; j < 4; j++) {
        o->sc[j] = s[j] & 63;
        o->m[j] = s[j + 4] & 63;
        o->sc[j + 4] = (uint8_t)((s[j + 8] & 15) | ((s[j] >> 2) & 0x30));
        o->m[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30));
    }
    const unsigned char *qh = b + 16, *qs = t == VG_GGML_Q5_K ? b + 48 : b + 16;
    for (int sbk = 0; sbk < 8; sbk++) {
        const unsigned char *q = qs + 32 * (sbk / 2);
        int shift = 4 * (sbk & 1);
        for (int j = 0; j < 32; j++) {
            int v = (q[j] >> shift) & 15;
            if (t == VG_GGML_Q5_K)
                v |= ((qh[j] >> sbk) & 1) << 4;
            o->q[32 * sbk + j] = (uint8_t)v;
        }
    }
}

/* Value (row r, column 32 s + c) of a record's chunk as its position p = 16 r + (c % 16) in the
 * 64-byte nibble block, in the low (c < 16) or high nibble. */
void vg_kq_pack_group(uint32_t t, const unsigned char *rows, size_t row_bytes, size_t nrows,
                      size_t K, unsigned char *group)
{
    const size_t nb = K / 256, rb = vg_kq_rec_bytes(t), hdr = vg_kq_hdr_bytes(t),
                 cb = vg_kq_chunk_bytes(t);
    size_t be, bb;
    vg_ggml_type_block(t, &be, &bb);
    const size_t sb_bytes = bb * (256 / be); /* one superblock of a GGUF row */
    memset(group, 0, nb * rb);
    sb blk[KQ_R];
    for (size_t b = 0; b < nb; b++) {
        unsigned char *rec = group + b * rb;
        memset(blk, 0, sizeof blk); /* padding rows: all zero (d = 0) */
        for (size_t r = 0; r < nrows && r < KQ_R; r++)
            decode_block(t, rows + r * row_bytes + b * sb_bytes, &blk[r]);
        for (int r = 0; r < KQ_R; r++) {
            if (vg_kq_b32(t)) { /* d[s][r], then m[s][r] */
                for (int s = 0; s < 8; s++) {
                    memcpy(rec + 2 * (4 * s + r), &blk[r].d8[s], 2);
                    if (vg_kq_has_min(t))
                        memcpy(rec + 64 + 2 * (4 * s + r), &blk[r].m8[s], 2);
                }
            } else if (t == VG_GGML_Q6_K) {
                memcpy(rec + 2 * r, &blk[r].dh, 2);
                memcpy(rec + 8 + 16 * r, blk[r].sc6, 16);
            } else {
                memcpy(rec + 2 * r, &blk[r].dh, 2);
                memcpy(rec + 8 + 2 * r, &blk[r].dminh, 2);
                memcpy(rec + 16 + 8 * r, blk[r].sc, 8);
                memcpy(rec + 48 + 8 * r, blk[r].m, 8);
            }
        }
        for (int s = 0; s < 8; s++) {
            unsigned char *c = rec + hdr + (size_t)s * cb;
            uint64_t hl = 0, hh = 0;
            for (int p = 0; p < 64; p++) {
                const int r = p / 16, j = p % 16;
                const uint8_t lo = blk[r].q[32 * s + j], hi = blk[r].q[32 * s + 16 + j];
                c[p] = (uint8_t)((lo & 15) | ((hi & 15) << 4));
                if (vg_kq_five_bits(t)) {
                    hl |= (uint64_t)((lo >> 4) & 1) << p;
                    hh |= (uint64_t)((hi >> 4) & 1) << p;
                } else if (t == VG_GGML_Q6_K) {
                    const int k = p % 32, sh = p < 32 ? 0 : 4;
                    c[64 + k] |= (uint8_t)((((lo >> 4) & 3) | (((hi >> 4) & 3) << 2)) << sh);
                }
            }
            if (vg_kq_five_bits(t)) {
                for (int i = 0; i < 8; i++) {
                    c[64 + i] = (uint8_t)(hl >> (8 * i));
                    c[72 + i] = (uint8_t)(hh >> (8 * i));
                }
            }
        }
    }
}

/* Row r of superblock record rec back to its 256 unsigned quants. */
static void record_quants(uint32_t t, const unsigned char *rec, int r, uint8_t q[256])
{
    const size_t hdr = vg_kq_hdr_bytes(t), cb = vg_kq_chunk_bytes(t);
    for (int s = 0; s < 8; s++) {
        const unsigned char *c = rec + hdr + (size_t)s * cb;
        for (int j = 0; j < 16; j++) {
            const int p = 16 * r + j;
            int lo = c[p] & 15, hi = c[p] >> 4;
            if (vg_kq_five_bits(t)) {
                lo |= ((c[64 + p / 8] >> (p % 8)) & 1) << 4;
                hi |= ((c[72 + p / 8] >> (p % 8)) & 1) << 4;
            } else if (t == VG_GGML_Q6_K) {
                const int h = c[64 + p % 32] >> (p < 32 ? 0 : 4);
                lo |= (h & 3) << 4;
                hi |= ((h >> 2) & 3) << 4;
            }
            q[32 * s + j] = (uint8_t)lo;
            q[32 * s + 16 + j] = (uint8_t)hi;
        }
    }
}

/* gguf-py's arithmetic (quant.c's deq_q4_0 .. deq_q6_k) on the record's fields. */
static void unpack_sb(uint32_t t, const unsigned char *rec, int r, float *y)
{
    uint8_t q[256];
    record_quants(t, rec, r, q);
    if (vg_kq_b32(t)) {
        const int off = vg_kq_offset(t);
        for (int s = 0; s < 8; s++) {
            const float d = f16(rec + 2 * (4 * s + r));
            if (vg_kq_has_min(t)) {
                const float m = f16(rec + 64 + 2 * (4 * s + r));
                for (int j = 0; j < 32; j++) {
                    float p = d * (float)q[32 * s + j];
                    y[32 * s + j] = p + m;
                }
            } else {
                for (int j = 0; j < 32; j++)
                    y[32 * s + j] = d * (float)((int)q[32 * s + j] - off);
            }
        }
        return;
    }
    const float d = f16(rec + 2 * r);
    if (t == VG_GGML_Q6_K) {
        const int8_t *sc = (const int8_t *)(rec + 8 + 16 * r);
        for (int i = 0; i < 256; i++) {
            float ds = d * (float)sc[i / 16];
            y[i] = ds * (float)((int)q[i] - 32);
        }
        return;
    }
    const float dmin = f16(rec + 8 + 2 * r);
    const uint8_t *sc = rec + 16 + 8 * r, *m = rec + 48 + 8 * r;
    for (int s = 0; s < 8; s++) {
        float dl = d * (float)sc[s], ml = dmin * (float)m[s];
        for (int j = 0; j < 32; j++) {
            float p = dl * (float)q[32 * s + j];
            y[32 * s + j] = p - ml;
        }
    }
}

void vg_kq_unpack_row(uint32_t t, const unsigned char *group, size_t K, int r, float *dst)
{
    const size_t rb = vg_kq_rec_bytes(t);
    for (size_t b = 0; b < K / 256; b++)
        unpack_sb(t, group + b * rb, r, dst + 256 * b);
}

void vg_kq_group_to_bf16(uint32_t t, const unsigned char *group, size_t K, uint16_t *dst)
{
    const size_t rb = vg_kq_rec_bytes(t);
    float y[256];
    for (size_t b = 0; b < K / 256; b++)
        for (int r = 0; r < KQ_R; r++) {
            unpack_sb(t, group + b * rb, r, y);
            for (int c = 0; c < 8; c++) /* kernels.h BF16 group: [K / 32][R][32] */
                for (int j = 0; j < 32; j++)
                    dst[((8 * b + (size_t)c) * KQ_R + (size_t)r) * 32 + (size_t)j] =
                        vg_f32_to_bf16(y[32 * c + j]);
        }
}

void vg_kq_group_to_bf16_level(int level, uint32_t t, const unsigned char *group, size_t K,
                               uint16_t *dst)
{
    if (!vg_kq_group_to_bf16_x86(level, t, group, K, dst))
        vg_kq_group_to_bf16(t, group, K, dst);
}

void vg_kq_group_to_f32_level(int level, uint32_t t, const unsigned char *group, size_t K,
                              float *dst)
{
    if (!vg_kq_group_to_f32_x86(level, t, group, K, dst))
        for (int r = 0; r < KQ_R; r++)
            vg_kq_unpack_row(t, group, K, r, dst + (size_t)r * K);
}

/* ---- the activation ---- */

size_t vg_kq_act_bytes(size_t K)
{
    return K + (K / 256) * sizeof(float) + (K / 16 + K / 32) * sizeof(int16_t) + 64;
}

vg_kq_act vg_kq_act_view(void *buf, size_t K)
{
    uintptr_t p = ((uintptr_t)buf + 63) & ~(uintptr_t)63;
    vg_kq_act a;
    a.q = (int8_t *)p;
    a.d = (float *)(void *)(p + K);
    a.bs16 = (int16_t *)(void *)(p + K + (K / 256) * sizeof(float));
    a.bs32 = a.bs16 + K / 16;
    return a;
}

void vg_kq_act_quantize(const float *x, size_t K, vg_kq_act *a)
{
    for (size_t b = 0; b < K / 256; b++) {
        const float *xb = x + 256 * b;
        float amax = 0.0f;
        for (int j = 0; j < 256; j++)
            amax = fmaxf(amax, fabsf(xb[j]));
        const float d = amax > 0.0f ? amax / 127.0f : 1.0f, id = 1.0f / d;
        a->d[b] = d;
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) {
                int q = (int)nearbyintf(xb[16 * g + j] * id);
                q = q < -127 ? -127 : q > 127 ? 127 : q;
                a->q[256 * b + 16 * (size_t)g + (size_t)j] = (int8_t)q;
                s += q;
            }
            a->bs16[16 * b + (size_t)g] = (int16_t)s;
        }
        for (int s = 0; s < 8; s++)
            a->bs32[8 * b + (size_t)s] =
                (int16_t)(a->bs16[16 * b + 2 * (size_t)s] + a->bs16[16 * b + 2 * (size_t)s + 1]);
    }
}

/* ---- the scalar reference GEMV ---- */

static void gemv_group_scalar(uint32_t t, const unsigned char *grp, size_t K, const vg_kq_act *x,
                              float out[KQ_R])
{
    const size_t rb = vg_kq_rec_bytes(t);
    float acc[KQ_R] = {0};
    uint8_t q[256];
    for (size_t b = 0; b < K / 256; b++) {
        const unsigned char *rec = grp + b * rb;
        const int8_t *xq = x->q + 256 * b;
        const float dx = x->d[b];
        for (int r = 0; r < KQ_R; r++) {
            record_quants(t, rec, r, q);
            if (vg_kq_b32(t)) { /* a float scale per 32: (dx d) * (q . x - offset * sum x) [+ m dx
                                sum x] */
                for (int s = 0; s < 8; s++) {
                    int32_t si = 0;
                    for (int j = 0; j < 32; j++)
                        si += q[32 * s + j] * xq[32 * s + j];
                    const int32_t bs = x->bs32[8 * b + (size_t)s];
                    const float d = f16(rec + 2 * (4 * s + r));
                    acc[r] += dx * d * (float)(si - vg_kq_offset(t) * bs);
                    if (vg_kq_has_min(t))
                        acc[r] += dx * f16(rec + 64 + 2 * (4 * s + r)) * (float)bs;
                }
                continue;
            }
            const float d = f16(rec + 2 * r);
            if (t == VG_GGML_Q6_K) {
                const int8_t *sc = (const int8_t *)(rec + 8 + 16 * r);
                int32_t sumi = 0, off = 0;
                for (int g = 0; g < 16; g++) {
                    int32_t si = 0;
                    for (int j = 0; j < 16; j++)
                        si += q[16 * g + j] * xq[16 * g + j];
                    sumi += sc[g] * si;
                    off += sc[g] * x->bs16[16 * b + (size_t)g];
                }
                acc[r] += dx * d * (float)(sumi - 32 * off);
            } else {
                const float dmin = f16(rec + 8 + 2 * r);
                const uint8_t *sc = rec + 16 + 8 * r, *m = rec + 48 + 8 * r;
                int32_t sumi = 0, summ = 0;
                for (int s = 0; s < 8; s++) {
                    int32_t si = 0;
                    for (int j = 0; j < 32; j++)
                        si += q[32 * s + j] * xq[32 * s + j];
                    sumi += sc[s] * si;
                    summ += m[s] * x->bs32[8 * b + (size_t)s];
                }
                acc[r] += dx * d * (float)sumi - dx * dmin * (float)summ;
            }
        }
    }
    memcpy(out, acc, sizeof acc);
}

void vg_kq_gemv(int level, uint32_t t, const unsigned char *w, size_t K, size_t rows, size_t g0,
                size_t g1, const vg_kq_act *x, float *y)
{
    if (level >= VG_ISA_AVX2 && vg_kq_gemv_x86(level, t, w, K, rows, g0, g1, x, y))
        return;
    const size_t gb = vg_kq_group_bytes(t, K);
    for (size_t g = g0; g < g1; g++) {
        float out[KQ_R];
        gemv_group_scalar(t, w + g * gb, K, x, out);
        for (int r = 0; r < KQ_R; r++)
            if (g * KQ_R + (size_t)r < rows)
                y[g * KQ_R + (size_t)r] = out[r];
    }
}
