/*
 * rope.c: rotary position tables of the vision tower (2-D, docs/qwen3vl.md §3.3), the learned
 * position-embedding interpolation indices (docs/qwen3vl.md §3.2) and the text model's interleaved
 * MRoPE (docs/qwen3vl.md §5.2). Everything is float32 computed the way the reference computes it
 * (single-rounded products of a float32 position and a float32 inverse frequency). Pure functions;
 * any thread.
 */
#include "engine.h"

#include <math.h>
#include <string.h>

static float inv_freq_one(float theta, int j2, int dim)
{
    /* torch: 1.0 / (theta ** (arange(0, dim, 2).float() / dim)), all float32 */
    float e = (float)j2 / (float)dim;
    float p = (float)pow((double)theta, (double)e);
    return 1.0f / p;
}

void vg_rope_text_inv_freq(float theta, int head_dim, float *inv_freq)
{
    for (int j = 0; j < head_dim / 2; j++)
        inv_freq[j] = inv_freq_one(theta, 2 * j, head_dim);
}

int vg_mrope_axes(const int section[3], int half, unsigned char *axis)
{
    if (section[0] < 0 || section[1] < 0 || section[2] < 0 ||
        section[0] + section[1] + section[2] != half || 3 * section[1] - 2 > half ||
        3 * section[2] - 1 > half)
        return VG_EINVAL;
    memset(axis, 0, (size_t)half);
    for (int k = 0; k < section[1]; k++)
        axis[3 * k + 1] = 1;
    for (int k = 0; k < section[2]; k++)
        axis[3 * k + 2] = 2;
    return 0;
}

void vg_rope_text_table(const float *inv_freq, const unsigned char *axis, int head_dim,
                        const int32_t *pos, size_t pos_stride, size_t n, float *cos_out,
                        float *sin_out)
{
    int half = head_dim / 2;
    for (size_t i = 0; i < n; i++) {
        float *c = cos_out + i * (size_t)head_dim;
        float *s = sin_out + i * (size_t)head_dim;
        for (int j = 0; j < half; j++) {
            float p = (float)pos[(size_t)axis[j] * pos_stride + i];
            float a = p * inv_freq[j];
            c[j] = c[j + half] = cosf(a);
            s[j] = s[j + half] = sinf(a);
        }
    }
}

void vg_rope_apply(float *x, size_t n, int n_heads, int head_dim, size_t ld, const float *cos_t,
                   const float *sin_t)
{
    int half = head_dim / 2;
    for (size_t i = 0; i < n; i++) {
        const float *c = cos_t + i * (size_t)head_dim;
        const float *s = sin_t + i * (size_t)head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + i * ld + (size_t)h * (size_t)head_dim;
            for (int j = 0; j < half; j++) {
                float a = v[j], b = v[j + half];
                v[j] = a * c[j] - b * s[j];
                v[j + half] = b * c[j + half] + a * s[j + half];
            }
        }
    }
}

void vg_rope_vision_inv_freq(int head_dim, float *inv_freq)
{
    int dim = head_dim / 2;
    for (int j = 0; j < dim / 2; j++)
        inv_freq[j] = inv_freq_one(10000.0f, 2 * j, dim);
}

void vg_vision_rowcol(int gh, int gw, int merge, int *row, int *col)
{
    size_t r = 0;
    for (int bh = 0; bh < gh / merge; bh++)
        for (int bw = 0; bw < gw / merge; bw++)
            for (int mh = 0; mh < merge; mh++)
                for (int mw = 0; mw < merge; mw++) {
                    row[r] = bh * merge + mh;
                    col[r] = bw * merge + mw;
                    r++;
                }
}

void vg_rope_vision_freqs(const float *inv_freq, int head_dim, const int *row, const int *col,
                          size_t n, float *freqs)
{
    int q = head_dim / 4;
    for (size_t i = 0; i < n; i++) {
        float *f = freqs + i * (size_t)(head_dim / 2);
        for (int j = 0; j < q; j++) {
            f[j] = (float)row[i] * inv_freq[j];
            f[q + j] = (float)col[i] * inv_freq[j];
        }
    }
}

void vg_linspace_f32(float start, float end, int n, float *out)
{
    if (n <= 0)
        return;
    if (n == 1) {
        out[0] = start;
        return;
    }
    float step = (end - start) / (float)(n - 1);
    int half = n / 2;
#define BASE(i)                                                                                    \
    ((i) < half ? fmaf(step, (float)(i), start) : fmaf(-step, (float)(n - 1 - (i)), end))
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int v = 0; v < 2; v++) {
            int c = i + 8 * v;
            float b = BASE(c);
            for (int k = 0; k < 8; k++)
                out[c + k] = b + (float)k * step;
        }
    }
    for (; i < n; i++)
        out[i] = BASE(i);
#undef BASE
}

void vg_pos_interp(int side, int gh, int gw, int merge, int *idx, float *wt)
{
    float hs[1024], ws[1024];
    /* callers limit gh, gw to 1024 (vision.c checks) */
    vg_linspace_f32(0.0f, (float)(side - 1), gh, hs);
    vg_linspace_f32(0.0f, (float)(side - 1), gw, ws);
    size_t r = 0;
    for (int bh = 0; bh < gh / merge; bh++)
        for (int bw = 0; bw < gw / merge; bw++)
            for (int mh = 0; mh < merge; mh++)
                for (int mw = 0; mw < merge; mw++) {
                    int y = bh * merge + mh, x = bw * merge + mw;
                    int fy = (int)hs[y], fx = (int)ws[x];
                    int cy = VG_MIN(fy + 1, side - 1), cx = VG_MIN(fx + 1, side - 1);
                    float dy = hs[y] - (float)fy, dx = ws[x] - (float)fx;
                    idx[4 * r + 0] = fy * side + fx;
                    idx[4 * r + 1] = fy * side + cx;
                    idx[4 * r + 2] = cy * side + fx;
                    idx[4 * r + 3] = cy * side + cx;
                    wt[4 * r + 0] = (1.0f - dy) * (1.0f - dx);
                    wt[4 * r + 1] = (1.0f - dy) * dx;
                    wt[4 * r + 2] = dy * (1.0f - dx);
                    wt[4 * r + 3] = dy * dx;
                    r++;
                }
}
