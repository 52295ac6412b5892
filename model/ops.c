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
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
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
    float mx = x[0];
    for (size_t i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    float inv = (float)(1.0 / s);
    for (size_t i = 0; i < n; i++)
        x[i] *= inv;
}
