/*
 * ops.c: the engine's dense float32 kernels: linear layers through OpenBLAS (sgemm for several
 * rows, sgemv for one), LayerNorm, RMSNorm, the two GELUs and softmax. Norm statistics accumulate
 * in double so that the result is the correctly rounded float32 of the exact value wherever
 * possible (the reference agrees with a float64 forward to ~5e-6). Stateless; any thread.
 */
#include "engine.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));

static inline v4f vsel(v4i m, v4f a, v4f b)
{
    return (v4f)((m & (v4i)a) | (~m & (v4i)b));
}

/* e^x for 4 lanes: 0 below -87, x clamped to 88 above (never inf or a denormal); NaN stays NaN. */
static inline v4f exp4(v4f x)
{
    const v4f lo = {-87.0f, -87.0f, -87.0f, -87.0f}, hi = {88.0f, 88.0f, 88.0f, 88.0f};
    const v4i under = x < lo; /* e^x < 2^-125: flushed to 0 like expf's tiny results */
    x = vsel(under, lo, x);
    x = vsel(x > hi, hi, x);
    v4f n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
    v4f r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    v4f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    v4u e = (v4u)(__builtin_convertvector(n, v4i) + 127) << 23; /* unsigned: no UB for NaN */
    const v4f zero = {0.0f, 0.0f, 0.0f, 0.0f};
    return vsel(under, zero, p * (v4f)e);
}

static inline v4f load4(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void store4(float *p, v4f v)
{
    memcpy(p, &v, sizeof(v));
}

static inline float exp1(float x)
{
    v4f v = {x, 0.0f, 0.0f, 0.0f};
    return exp4(v)[0];
}

void vg_silu_mul(float *g, const float *u, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f x = load4(g + i);
        store4(g + i, x / (1.0f + exp4(-x)) * load4(u + i));
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + exp1(-g[i])) * u[i];
}

void vg_linear(const float *x, size_t n, size_t in, const float *w, const float *b, size_t out,
               float *y)
{
    if (n == 0 || out == 0)
        return;
    if (n == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)out, (int)in, 1.0f, w, (int)in, x, 1, 0.0f, y,
                    1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in, 1.0f, x,
                    (int)in, w, (int)in, 0.0f, y, (int)out);
    }
    if (b) {
        for (size_t i = 0; i < n; i++) {
            float *r = y + i * out;
            for (size_t j = 0; j < out; j++)
                r[j] += b[j];
        }
    }
}

void vg_layernorm(const float *x, float *y, size_t n, size_t d, const float *w, const float *b,
                  float eps)
{
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * d;
        float *o = y + i * d;
        double s = 0.0;
        for (size_t j = 0; j < d; j++)
            s += r[j];
        double mean = s / (double)d;
        double v = 0.0;
        for (size_t j = 0; j < d; j++) {
            double t = r[j] - mean;
            v += t * t;
        }
        double inv = 1.0 / sqrt(v / (double)d + eps);
        for (size_t j = 0; j < d; j++)
            o[j] = (float)((r[j] - mean) * inv) * w[j] + b[j];
    }
}

void vg_rmsnorm(const float *x, float *y, size_t n, size_t d, const float *w, float eps)
{
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * d;
        float *o = y + i * d;
        double s = 0.0;
        for (size_t j = 0; j < d; j++)
            s += (double)r[j] * r[j];
        double inv = 1.0 / sqrt(s / (double)d + eps);
        for (size_t j = 0; j < d; j++)
            o[j] = w[j] * (float)(r[j] * inv);
    }
}

void vg_gelu_tanh(float *x, size_t n)
{
    /* 0.5 x (1 + tanh(u)) == x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3) */
    const float k2 = 2.0f * 0.7978845608028654f;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v = load4(x + i);
        v4f u = (v + 0.044715f * v * v * v) * -k2;
        store4(x + i, v / (1.0f + exp4(u)));
    }
    for (; i < n; i++) {
        float v = x[i];
        x[i] = v / (1.0f + exp1(-k2 * (v + 0.044715f * v * v * v)));
    }
}

void vg_gelu_erf(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

void vg_softmax(float *x, size_t n)
{
    if (n == 0)
        return;
    size_t i = 0;
    float mx = x[0];
    if (n >= 4) {
        v4f m4 = load4(x);
        for (i = 4; i + 4 <= n; i += 4) {
            v4f v = load4(x + i);
            m4 = vsel(v > m4, v, m4);
        }
        for (int k = 0; k < 4; k++)
            mx = m4[k] > mx ? m4[k] : mx;
    }
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    /* float partial sums per lane, combined in double */
    v4f s4 = {0.0f, 0.0f, 0.0f, 0.0f};
    double s = 0.0;
    for (i = 0; i + 4 <= n; i += 4) {
        v4f e = exp4(load4(x + i) - mx);
        store4(x + i, e);
        s4 += e;
        if ((i & 1023) == 1020) { /* flush every 256 vectors to bound the float error */
            s += (double)s4[0] + s4[1] + s4[2] + s4[3];
            s4 = (v4f){0.0f, 0.0f, 0.0f, 0.0f};
        }
    }
    s += (double)s4[0] + s4[1] + s4[2] + s4[3];
    for (; i < n; i++) {
        x[i] = exp1(x[i] - mx);
        s += x[i];
    }
    float inv = (float)(1.0 / s);
    for (i = 0; i + 4 <= n; i += 4)
        store4(x + i, load4(x + i) * inv);
    for (; i < n; i++)
        x[i] *= inv;
}

void vg_attn_scores(const float *q, size_t grp, const float *k, size_t ctx, size_t hd, float scale,
                    float *scores)
{
    for (size_t t = 0; t < ctx; t++) {
        const float *kr = k + t * hd;
        for (size_t g = 0; g < grp; g++) {
            const float *qr = q + g * hd;
            v4f acc = {0.0f, 0.0f, 0.0f, 0.0f};
            size_t j = 0;
            for (; j + 4 <= hd; j += 4)
                acc += load4(qr + j) * load4(kr + j);
            float sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
            for (; j < hd; j++)
                sum += qr[j] * kr[j];
            scores[g * ctx + t] = sum * scale;
        }
    }
}

void vg_attn_mix(const float *p, size_t grp, const float *v, size_t ctx, size_t hd, float *out)
{
    memset(out, 0, grp * hd * sizeof(float));
    for (size_t t = 0; t < ctx; t++) {
        const float *vr = v + t * hd;
        for (size_t g = 0; g < grp; g++) {
            const float w = p[g * ctx + t];
            float *o = out + g * hd;
            size_t j = 0;
            for (; j + 4 <= hd; j += 4)
                store4(o + j, load4(o + j) + w * load4(vr + j));
            for (; j < hd; j++)
                o[j] += w * vr[j];
        }
    }
}
