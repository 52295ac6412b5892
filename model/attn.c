/*
 * attn.c: fused ("flash") attention for one head: out = softmax(scale * Q K^T [+ causal mask]) V
 * without a score matrix. Keys are taken in tiles of VG_FLASH_BC; for each tile every query row
 * gets its scores, and a running maximum m, a running sum l and its output row are rescaled
 * (online softmax): O = O * e^(m_old - m_new) + sum_j e^(s_j - m_new) v_j, l likewise; at the end
 * O / l. The tile of K is transposed once into scratch ([hd][BC]) so that a query row's scores are
 * hd broadcast-FMAs over BC-wide vectors; V rows are read in place.
 *
 * Three implementations of the same function: a portable one (the reference the tests compare
 * with, expf), an AVX-512 one (16-lane polynomial exp, 2^n by VSCALEFPS) and an AVX2+FMA one
 * (8-lane, the same polynomial, 2^n through the exponent field); the engine calls vg_flash_attn
 * only where vg_flash_ok() says a vectorized one runs (else it keeps its sgemm path). Pure
 * functions on caller memory; any thread.
 */
#include "engine.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#include "simd_x86.h"
#endif

size_t vg_flash_scratch_floats(size_t n, size_t hd)
{
    /* K tile, V tile (bf16 keys and values widened; the portable kernel's K tile), m, l, p */
    return 2 * hd * VG_FLASH_BC + 2 * n + 4 * VG_FLASH_BC + 16;
}

/* Keys and values of one call: float32 rows, or bf16 rows (a bf16 KV cache) that each tile widens
 * exactly into scratch before use, so both give the same arithmetic on the same values. */
typedef struct flash_kv {
    const float *k, *v;
    const uint16_t *kb, *vb;
    size_t ldk, ldv;
} flash_kv;

/* Rows kb..kb+bc-1 of keys or values as float32: the float32 rows f in place (*ld = ld), or the
 * bf16 rows b widened into buf (*ld = hd). */
static const float *flash_kv_rows(const float *f, const uint16_t *b, size_t ld, size_t kb,
                                  size_t bc, size_t hd, float *buf, size_t *ldout)
{
    if (!b) {
        *ldout = ld;
        return f + kb * ld;
    }
    for (size_t j = 0; j < bc; j++)
        vg_from_bf16(b + (kb + j) * ld, hd, buf + j * hd);
    *ldout = hd;
    return buf;
}

/* The tile's values (every kernel reads V rows in place or from the widened tile). */
static const float *flash_v_tile(const flash_kv *kv, size_t kb, size_t bc, size_t hd, float *vt,
                                 size_t *ld)
{
    return flash_kv_rows(kv->v, kv->vb, kv->ldv, kb, bc, hd, vt, ld);
}

/* The keys query row i may see: all, or 0..p0+i with a causal mask. */
static inline size_t visible(long p0, size_t i, size_t ctx)
{
    if (p0 < 0)
        return ctx;
    size_t v = (size_t)p0 + i + 1;
    return v < ctx ? v : ctx;
}

static void flash_ref(const float *q, size_t ldq, const flash_kv *kv, size_t n, size_t ctx,
                      size_t hd, float scale, long p0, float *o, size_t ldo, float *scratch)
{
    float *kt = scratch, *vt = kt + hd * VG_FLASH_BC, *m = vt + hd * VG_FLASH_BC, *l = m + n;
    float *s = l + n;
    for (size_t i = 0; i < n; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
        memset(o + i * ldo, 0, hd * sizeof(float));
    }
    for (size_t kb = 0; kb < ctx; kb += VG_FLASH_BC) {
        size_t bc = ctx - kb < VG_FLASH_BC ? ctx - kb : VG_FLASH_BC;
        size_t ldk, ldv; /* the portable kernel reads key rows untransposed */
        const float *k = flash_kv_rows(kv->k, kv->kb, kv->ldk, kb, bc, hd, kt, &ldk);
        const float *v = flash_v_tile(kv, kb, bc, hd, vt, &ldv);
        for (size_t i = 0; i < n; i++) {
            size_t vis = visible(p0, i, ctx);
            if (vis <= kb)
                continue;
            size_t nb = vis - kb < bc ? vis - kb : bc;
            const float *qr = q + i * ldq;
            float mx = m[i];
            for (size_t j = 0; j < nb; j++) {
                const float *kr = k + j * ldk;
                float a = 0.0f;
                for (size_t d = 0; d < hd; d++)
                    a += qr[d] * kr[d];
                s[j] = a * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            float corr = expf(m[i] - mx), sum = 0.0f;
            float *orow = o + i * ldo;
            for (size_t d = 0; d < hd; d++)
                orow[d] *= corr;
            for (size_t j = 0; j < nb; j++) {
                float p = expf(s[j] - mx);
                sum += p;
                const float *vr = v + j * ldv;
                for (size_t d = 0; d < hd; d++)
                    orow[d] += p * vr[d];
            }
            l[i] = l[i] * corr + sum;
            m[i] = mx;
        }
    }
    for (size_t i = 0; i < n; i++) {
        float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        for (size_t d = 0; d < hd; d++)
            o[i * ldo + d] *= inv;
    }
}

/* The parts of the vectorized flash kernels that are plain C, shared by both. */

/* Before the first tile: running maxima -inf, sums 0, output rows 0. */
static void flash_start(size_t n, size_t hd, float *m, float *l, float *o, size_t ldo)
{
    for (size_t i = 0; i < n; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
        memset(o + i * ldo, 0, hd * sizeof(float));
    }
}

/* The K tile at key kb transposed and scaled: kt[d][j] = scale * K[kb + j][d], zero past bc. */
static void flash_k_tile(const flash_kv *kv, size_t kb, size_t bc, size_t hd, float scale,
                         float *kt)
{
    const size_t ldk = kv->ldk;
    for (size_t d = 0; d < hd; d++)
        for (size_t j = 0; j < VG_FLASH_BC; j++)
            kt[d * VG_FLASH_BC + j] = j >= bc  ? 0.0f
                                      : kv->kb ? scale * vg_bf16_to_f32(kv->kb[(kb + j) * ldk + d])
                                               : scale * kv->k[(kb + j) * ldk + d];
}

/* Query rows i0..i0+3 (a missing row repeats the last real one and is not written) in rr, the
 * keys of the tile at kb (bc of them) each may see in nb; returns the most of those. */
static size_t flash_rows(size_t i0, size_t n, long p0, size_t ctx, size_t kb, size_t bc,
                         size_t rr[4], size_t nb[4])
{
    size_t nbmax = 0;
    for (int r = 0; r < 4; r++) {
        rr[r] = i0 + (size_t)r < n ? i0 + (size_t)r : n - 1;
        size_t vis = visible(p0, rr[r], ctx);
        nb[r] = vis <= kb ? 0 : (vis - kb < bc ? vis - kb : bc);
        nbmax = nb[r] > nbmax ? nb[r] : nbmax;
    }
    return nbmax;
}

#if defined(__x86_64__)
#define T_FLASH __attribute__((target("avx2,fma,avx512f,avx512dq,avx512bw,avx512vl")))

/* The scores of one query row against the transposed tile, masked past nb, turned into
 * probabilities against the row's new running maximum: p[0..64) stored, the row's m and l updated,
 * the factor its output must be rescaled by returned. */
T_FLASH static inline float row_probs(__m512 s0, __m512 s1, __m512 s2, __m512 s3, size_t nb,
                                      float *m, float *l, float *p)
{
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i nbv = _mm512_set1_epi32((int)nb);
    const __m512i c16 = _mm512_set1_epi32(16);
    __m512i l1 = _mm512_add_epi32(lane, c16), l2 = _mm512_add_epi32(l1, c16);
    __m512i l3 = _mm512_add_epi32(l2, c16);
    s0 = _mm512_mask_mov_ps(ninf, _mm512_cmplt_epi32_mask(lane, nbv), s0);
    s1 = _mm512_mask_mov_ps(ninf, _mm512_cmplt_epi32_mask(l1, nbv), s1);
    s2 = _mm512_mask_mov_ps(ninf, _mm512_cmplt_epi32_mask(l2, nbv), s2);
    s3 = _mm512_mask_mov_ps(ninf, _mm512_cmplt_epi32_mask(l3, nbv), s3);
    float mx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(s0, s1), _mm512_max_ps(s2, s3)));
    mx = mx > *m ? mx : *m;
    const __m512 mv = _mm512_set1_ps(mx);
    s0 = vg_exp16(_mm512_sub_ps(s0, mv));
    s1 = vg_exp16(_mm512_sub_ps(s1, mv));
    s2 = vg_exp16(_mm512_sub_ps(s2, mv));
    s3 = vg_exp16(_mm512_sub_ps(s3, mv));
    const float sum =
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    _mm512_storeu_ps(p, s0);
    _mm512_storeu_ps(p + 16, s1);
    _mm512_storeu_ps(p + 32, s2);
    _mm512_storeu_ps(p + 48, s3);
    const float corr = *m == -INFINITY ? 0.0f : expf(*m - mx);
    *l = *l * corr + sum;
    *m = mx;
    return corr;
}

/* BC = 64 keys: four 16-lane score vectors per query row; query rows in fours, so that every load
 * of the transposed K tile and of a V row feeds four rows' FMAs. hd a multiple of 16, <= 256. */
T_FLASH static void flash_avx512(const float *q, size_t ldq, const flash_kv *kv, size_t n,
                                 size_t ctx, size_t hd, float scale, long p0, float *o, size_t ldo,
                                 float *scratch)
{
    float *kt = scratch, *vt = kt + hd * VG_FLASH_BC, *m = vt + hd * VG_FLASH_BC, *l = m + n;
    float *pbuf = l + n; /* [4][64] */
    const size_t nv = hd / 16;
    flash_start(n, hd, m, l, o, ldo);
    for (size_t kb = 0; kb < ctx; kb += VG_FLASH_BC) {
        const size_t bc = ctx - kb < VG_FLASH_BC ? ctx - kb : VG_FLASH_BC;
        flash_k_tile(kv, kb, bc, hd, scale, kt);
        size_t ldv;
        const float *v = flash_v_tile(kv, kb, bc, hd, vt, &ldv);
        for (size_t i0 = 0; i0 < n; i0 += 4) {
            size_t rr[4], nb[4];
            const size_t nbmax = flash_rows(i0, n, p0, ctx, kb, bc, rr, nb);
            if (nbmax == 0)
                continue;
            const float *q0 = q + rr[0] * ldq, *q1 = q + rr[1] * ldq;
            const float *q2 = q + rr[2] * ldq, *q3 = q + rr[3] * ldq;
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
            __m512 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
            __m512 a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            for (size_t d = 0; d < hd; d++) {
                const float *kd = kt + d * VG_FLASH_BC;
                const __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16);
                const __m512 k2 = _mm512_loadu_ps(kd + 32), k3 = _mm512_loadu_ps(kd + 48);
                __m512 b = _mm512_set1_ps(q0[d]);
                a00 = _mm512_fmadd_ps(b, k0, a00);
                a01 = _mm512_fmadd_ps(b, k1, a01);
                a02 = _mm512_fmadd_ps(b, k2, a02);
                a03 = _mm512_fmadd_ps(b, k3, a03);
                b = _mm512_set1_ps(q1[d]);
                a10 = _mm512_fmadd_ps(b, k0, a10);
                a11 = _mm512_fmadd_ps(b, k1, a11);
                a12 = _mm512_fmadd_ps(b, k2, a12);
                a13 = _mm512_fmadd_ps(b, k3, a13);
                b = _mm512_set1_ps(q2[d]);
                a20 = _mm512_fmadd_ps(b, k0, a20);
                a21 = _mm512_fmadd_ps(b, k1, a21);
                a22 = _mm512_fmadd_ps(b, k2, a22);
                a23 = _mm512_fmadd_ps(b, k3, a23);
                b = _mm512_set1_ps(q3[d]);
                a30 = _mm512_fmadd_ps(b, k0, a30);
                a31 = _mm512_fmadd_ps(b, k1, a31);
                a32 = _mm512_fmadd_ps(b, k2, a32);
                a33 = _mm512_fmadd_ps(b, k3, a33);
            }
            float mt[4] = {m[rr[0]], m[rr[1]], m[rr[2]], m[rr[3]]};
            float lt[4] = {l[rr[0]], l[rr[1]], l[rr[2]], l[rr[3]]};
            float cr[4];
            cr[0] = nb[0] ? row_probs(a00, a01, a02, a03, nb[0], &mt[0], &lt[0], pbuf) : 1.0f;
            cr[1] = nb[1] ? row_probs(a10, a11, a12, a13, nb[1], &mt[1], &lt[1], pbuf + 64) : 1.0f;
            cr[2] = nb[2] ? row_probs(a20, a21, a22, a23, nb[2], &mt[2], &lt[2], pbuf + 128) : 1.0f;
            cr[3] = nb[3] ? row_probs(a30, a31, a32, a33, nb[3], &mt[3], &lt[3], pbuf + 192) : 1.0f;
            for (int r = 0; r < 4; r++) /* rows with nothing visible here add nothing */
                if (!nb[r])
                    memset(pbuf + 64 * r, 0, 64 * sizeof(float));
                else if (nb[r] < nbmax)
                    memset(pbuf + 64 * r + nb[r], 0, (nbmax - nb[r]) * sizeof(float));
            int real[4];
            for (int r = 0; r < 4; r++) {
                real[r] = i0 + (size_t)r < n;
                if (real[r]) {
                    m[rr[r]] = mt[r];
                    l[rr[r]] = lt[r];
                }
            }
            float *o0 = o + rr[0] * ldo, *o1 = o + rr[1] * ldo;
            float *o2 = o + rr[2] * ldo, *o3 = o + rr[3] * ldo;
            for (size_t c = 0; c < nv; c++) { /* one 16-column slice of the four output rows */
                __m512 x0 = _mm512_mul_ps(_mm512_set1_ps(cr[0]), _mm512_loadu_ps(o0 + 16 * c));
                __m512 x1 = _mm512_mul_ps(_mm512_set1_ps(cr[1]), _mm512_loadu_ps(o1 + 16 * c));
                __m512 x2 = _mm512_mul_ps(_mm512_set1_ps(cr[2]), _mm512_loadu_ps(o2 + 16 * c));
                __m512 x3 = _mm512_mul_ps(_mm512_set1_ps(cr[3]), _mm512_loadu_ps(o3 + 16 * c));
                const float *vc = v + 16 * c;
                for (size_t j = 0; j < nbmax; j++) {
                    const __m512 vj = _mm512_loadu_ps(vc + j * ldv);
                    x0 = _mm512_fmadd_ps(_mm512_set1_ps(pbuf[j]), vj, x0);
                    x1 = _mm512_fmadd_ps(_mm512_set1_ps(pbuf[64 + j]), vj, x1);
                    x2 = _mm512_fmadd_ps(_mm512_set1_ps(pbuf[128 + j]), vj, x2);
                    x3 = _mm512_fmadd_ps(_mm512_set1_ps(pbuf[192 + j]), vj, x3);
                }
                if (real[0])
                    _mm512_storeu_ps(o0 + 16 * c, x0);
                if (real[1])
                    _mm512_storeu_ps(o1 + 16 * c, x1);
                if (real[2])
                    _mm512_storeu_ps(o2 + 16 * c, x2);
                if (real[3])
                    _mm512_storeu_ps(o3 + 16 * c, x3);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        const __m512 inv = _mm512_set1_ps(l[i] > 0.0f ? 1.0f / l[i] : 0.0f);
        for (size_t c = 0; c < nv; c++)
            _mm512_storeu_ps(o + i * ldo + 16 * c,
                             _mm512_mul_ps(inv, _mm512_loadu_ps(o + i * ldo + 16 * c)));
    }
}
#define T_FLASH2 __attribute__((target("avx2,fma")))

/* e^x, 8 lanes, the same polynomial as exp16; 2^n built in the exponent field (n >= -126 after
 * the clamp); lanes below -87 give 0. */
T_FLASH2 static inline __m256 exp8(__m256 x)
{
    const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 nn = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(nn, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(nn, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* p * 2^n in two steps (2^(n/2) twice) so that n = -126 .. 127 never leaves the normal range
     * of the factor */
    const __m256i n = _mm256_cvtps_epi32(nn);
    const __m256i h = _mm256_srai_epi32(n, 1);
    const __m256 f1 =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    const __m256 f2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(n, h), _mm256_set1_epi32(127)), 23));
    return _mm256_and_ps(keep, _mm256_mul_ps(_mm256_mul_ps(p, f1), f2));
}

T_FLASH2 static inline float hmax8(__m256 x)
{
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

T_FLASH2 static inline float hsum8(__m256 x)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

/* The AVX2 form of flash_avx512: the same tiles (BC = 64 keys, K tile transposed and scaled into
 * scratch), query rows in fours; with 16 vector registers the scores of a tile are made 16 keys
 * at a time (4 rows x 2 vectors of accumulators) into the row's probability buffer, then turned
 * into probabilities in place. hd a multiple of 8, <= 256. */
T_FLASH2 static void flash_avx2(const float *q, size_t ldq, const flash_kv *kv, size_t n,
                                size_t ctx, size_t hd, float scale, long p0, float *o, size_t ldo,
                                float *scratch)
{
    float *kt = scratch, *vt = kt + hd * VG_FLASH_BC, *m = vt + hd * VG_FLASH_BC, *l = m + n;
    float *pbuf = l + n; /* [4][64] */
    const size_t nv = hd / 8;
    flash_start(n, hd, m, l, o, ldo);
    for (size_t kb = 0; kb < ctx; kb += VG_FLASH_BC) {
        const size_t bc = ctx - kb < VG_FLASH_BC ? ctx - kb : VG_FLASH_BC;
        flash_k_tile(kv, kb, bc, hd, scale, kt);
        size_t ldv;
        const float *v = flash_v_tile(kv, kb, bc, hd, vt, &ldv);
        for (size_t i0 = 0; i0 < n; i0 += 4) {
            size_t rr[4], nb[4];
            const size_t nbmax = flash_rows(i0, n, p0, ctx, kb, bc, rr, nb);
            if (nbmax == 0)
                continue;
            const float *q0 = q + rr[0] * ldq, *q1 = q + rr[1] * ldq;
            const float *q2 = q + rr[2] * ldq, *q3 = q + rr[3] * ldq;
            for (size_t jb = 0; jb < nbmax; jb += 16) {
                __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;
                __m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00;
                for (size_t d = 0; d < hd; d++) {
                    const float *kd = kt + d * VG_FLASH_BC + jb;
                    const __m256 k0 = _mm256_loadu_ps(kd), k1 = _mm256_loadu_ps(kd + 8);
                    __m256 b = _mm256_broadcast_ss(q0 + d);
                    a00 = _mm256_fmadd_ps(b, k0, a00);
                    a01 = _mm256_fmadd_ps(b, k1, a01);
                    b = _mm256_broadcast_ss(q1 + d);
                    a10 = _mm256_fmadd_ps(b, k0, a10);
                    a11 = _mm256_fmadd_ps(b, k1, a11);
                    b = _mm256_broadcast_ss(q2 + d);
                    a20 = _mm256_fmadd_ps(b, k0, a20);
                    a21 = _mm256_fmadd_ps(b, k1, a21);
                    b = _mm256_broadcast_ss(q3 + d);
                    a30 = _mm256_fmadd_ps(b, k0, a30);
                    a31 = _mm256_fmadd_ps(b, k1, a31);
                }
                _mm256_storeu_ps(pbuf + jb, a00);
                _mm256_storeu_ps(pbuf + jb + 8, a01);
                _mm256_storeu_ps(pbuf + 64 + jb, a10);
                _mm256_storeu_ps(pbuf + 64 + jb + 8, a11);
                _mm256_storeu_ps(pbuf + 128 + jb, a20);
                _mm256_storeu_ps(pbuf + 128 + jb + 8, a21);
                _mm256_storeu_ps(pbuf + 192 + jb, a30);
                _mm256_storeu_ps(pbuf + 192 + jb + 8, a31);
            }
            const size_t nbr = (nbmax + 7) & ~(size_t)7; /* score columns written, <= 64 */
            float cr[4];
            for (int r = 0; r < 4; r++) {
                float *pr = pbuf + 64 * r;
                if (!nb[r]) { /* nothing visible in this tile: adds nothing */
                    memset(pr, 0, nbr * sizeof(float));
                    cr[r] = 1.0f;
                    continue;
                }
                for (size_t j = nb[r]; j < nbr; j++)
                    pr[j] = -INFINITY;
                __m256 mx8 = _mm256_set1_ps(-INFINITY);
                for (size_t j = 0; j < nbr; j += 8)
                    mx8 = _mm256_max_ps(mx8, _mm256_loadu_ps(pr + j));
                const float mold = m[rr[r]];
                float mx = hmax8(mx8);
                mx = mx > mold ? mx : mold;
                const __m256 mv = _mm256_set1_ps(mx);
                __m256 s8 = _mm256_setzero_ps();
                for (size_t j = 0; j < nbr; j += 8) {
                    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(pr + j), mv));
                    _mm256_storeu_ps(pr + j, e);
                    s8 = _mm256_add_ps(s8, e);
                }
                cr[r] = mold == -INFINITY ? 0.0f : expf(mold - mx);
                if (i0 + (size_t)r < n) {
                    l[rr[r]] = l[rr[r]] * cr[r] + hsum8(s8);
                    m[rr[r]] = mx;
                }
            }
            int real[4];
            for (int r = 0; r < 4; r++)
                real[r] = i0 + (size_t)r < n;
            float *o0 = o + rr[0] * ldo, *o1 = o + rr[1] * ldo;
            float *o2 = o + rr[2] * ldo, *o3 = o + rr[3] * ldo;
            for (size_t c = 0; c < nv; c++) {
                __m256 x0 = _mm256_mul_ps(_mm256_set1_ps(cr[0]), _mm256_loadu_ps(o0 + 8 * c));
                __m256 x1 = _mm256_mul_ps(_mm256_set1_ps(cr[1]), _mm256_loadu_ps(o1 + 8 * c));
                __m256 x2 = _mm256_mul_ps(_mm256_set1_ps(cr[2]), _mm256_loadu_ps(o2 + 8 * c));
                __m256 x3 = _mm256_mul_ps(_mm256_set1_ps(cr[3]), _mm256_loadu_ps(o3 + 8 * c));
                const float *vc = v + 8 * c;
                for (size_t j = 0; j < nbmax; j++) {
                    const __m256 vj = _mm256_loadu_ps(vc + j * ldv);
                    x0 = _mm256_fmadd_ps(_mm256_broadcast_ss(pbuf + j), vj, x0);
                    x1 = _mm256_fmadd_ps(_mm256_broadcast_ss(pbuf + 64 + j), vj, x1);
                    x2 = _mm256_fmadd_ps(_mm256_broadcast_ss(pbuf + 128 + j), vj, x2);
                    x3 = _mm256_fmadd_ps(_mm256_broadcast_ss(pbuf + 192 + j), vj, x3);
                }
                if (real[0])
                    _mm256_storeu_ps(o0 + 8 * c, x0);
                if (real[1])
                    _mm256_storeu_ps(o1 + 8 * c, x1);
                if (real[2])
                    _mm256_storeu_ps(o2 + 8 * c, x2);
                if (real[3])
                    _mm256_storeu_ps(o3 + 8 * c, x3);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        const __m256 inv = _mm256_set1_ps(l[i] > 0.0f ? 1.0f / l[i] : 0.0f);
        for (size_t c = 0; c < nv; c++)
            _mm256_storeu_ps(o + i * ldo + 8 * c,
                             _mm256_mul_ps(inv, _mm256_loadu_ps(o + i * ldo + 8 * c)));
    }
}
#endif

int vg_flash_ok(size_t hd)
{
#if defined(__x86_64__)
    return vg_isa_level() >= VG_ISA_AVX2 && hd % 8 == 0 && hd > 0 && hd <= 256;
#else
    (void)hd;
    return 0;
#endif
}

static void flash_run(int level, const float *q, size_t ldq, const flash_kv *kv, size_t n,
                      size_t ctx, size_t hd, float scale, long p0, float *o, size_t ldo,
                      float *scratch)
{
#if defined(__x86_64__)
    if (level < 0)
        level = vg_isa_level();
    if (level >= VG_ISA_AVX512 && hd % 16 == 0 && hd > 0 && hd <= 256) {
        flash_avx512(q, ldq, kv, n, ctx, hd, scale, p0, o, ldo, scratch);
        return;
    }
    if (level >= VG_ISA_AVX2 && hd % 8 == 0 && hd > 0 && hd <= 256) {
        flash_avx2(q, ldq, kv, n, ctx, hd, scale, p0, o, ldo, scratch);
        return;
    }
#endif
    (void)level;
    flash_ref(q, ldq, kv, n, ctx, hd, scale, p0, o, ldo, scratch);
}

void vg_flash_attn(int level, const float *q, size_t ldq, const float *k, size_t ldk,
                   const float *v, size_t ldv, size_t n, size_t ctx, size_t hd, float scale,
                   long p0, float *o, size_t ldo, float *scratch)
{
    const flash_kv kv = {.k = k, .v = v, .ldk = ldk, .ldv = ldv};
    flash_run(level, q, ldq, &kv, n, ctx, hd, scale, p0, o, ldo, scratch);
}

void vg_flash_attn_bf16(int level, const float *q, size_t ldq, const uint16_t *k, size_t ldk,
                        const uint16_t *v, size_t ldv, size_t n, size_t ctx, size_t hd, float scale,
                        long p0, float *o, size_t ldo, float *scratch)
{
    const flash_kv kv = {.kb = k, .vb = v, .ldk = ldk, .ldv = ldv};
    flash_run(level, q, ldq, &kv, n, ctx, hd, scale, p0, o, ldo, scratch);
}
