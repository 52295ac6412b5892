/*
 * window.c: KV-cache window operations for live streams (vg_seq_remove).
 *
 * The cache of a sequence is [layer][kv head][position][head_dim] for K and for V (text.c; float32
 * or bf16 elements), so one head's rows are contiguous: removing a range of cached tokens is one
 * memmove per layer, KV head and tensor of the rows after the range. Keys are cached after the
 * rotary embedding, so every token keeps the position it was prefilled at; only the cache indices
 * change.
 *
 * Thread: the caller's (a vg_seq belongs to one thread at a time). No allocation.
 */
#include "engine.h"

#include <string.h>

int vg_seq_remove(vg_seq *s, size_t start, size_t count)
{
    if (!s)
        return VG_EINVAL;
    vg_seq_kv kv;
    vg_seq_kv_view(s, &kv);
    size_t len = *kv.len;
    if (start > len || count > len - start)
        return VG_EINVAL;
    if (count == 0)
        return 0;
    const vg_model_info *in = vg_model_get_info(vg_seq_model(s));
    size_t hd = (size_t)in->head_dim, tail = len - start - count;
    size_t heads = (size_t)in->n_layers * (size_t)in->n_kv_heads;
    const size_t row = hd * kv.es; /* bytes of one cached row */
    if (tail > 0)
        for (size_t h = 0; h < heads; h++) {
            unsigned char *k = (unsigned char *)kv.kc + h * kv.cap * row;
            unsigned char *v = (unsigned char *)kv.vc + h * kv.cap * row;
            memmove(k + start * row, k + (start + count) * row, tail * row);
            memmove(v + start * row, v + (start + count) * row, tail * row);
        }
    *kv.len = len - count;
    return 0;
}
