/*
 * sampling.c: choosing the next token from a logits row.
 *
 * Greedy (do_sample = 0): the first index of the maximum, as torch.argmax. Sampling applies, in
 * this order and with these semantics:
 *   1. repetition penalty (HF): for each distinct previously generated id, a positive logit is
 *      divided by the penalty and a negative one multiplied;
 *   2. presence penalty (vLLM): subtracted once from each distinct previously generated id;
 *   3. temperature: logits divided by it;
 *   4. top-k (HF): tokens below the k-th largest logit are removed (ties with it are kept);
 *   5. top-p (HF): in ascending order of probability, tokens whose cumulative probability is
 *      <= 1 - top_p are removed; the most likely token always stays;
 *   6. a draw from the softmax of what remains, with a xoshiro256** generator seeded through
 *      splitmix64 from params.seed (so a seed gives the same tokens on every run and machine).
 * A sampler owns its scratch (vocab-sized) and is used by one thread at a time.
 */
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct vg_cand {
    float v;
    int32_t id;
} vg_cand;

struct vg_sampler {
    vg_gen_params p;
    size_t vocab;
    uint64_t st[4];
    vg_cand *cand;       /* [vocab] candidates */
    unsigned char *seen; /* [vocab] */
    float *prob;         /* [vocab] probabilities of cand, then the top-k heap */
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

int32_t vg_argmax(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

int vg_sampler_create(const vg_gen_params *params, size_t vocab, vg_sampler **out)
{
    if (!params || !out || vocab == 0 || vocab > INT32_MAX)
        return VG_EINVAL;
    if (params->do_sample &&
        (!(params->temperature > 0.0f) || params->top_k < 0 || !(params->top_p > 0.0f) ||
         params->top_p > 1.0f || !(params->repetition_penalty > 0.0f) ||
         !isfinite(params->presence_penalty)))
        return VG_EINVAL;
    vg_sampler *s = calloc(1, sizeof(*s));
    if (!s)
        return VG_ENOMEM;
    s->p = *params;
    s->vocab = vocab;
    s->cand = malloc(vocab * sizeof(*s->cand));
    s->seen = malloc(vocab);
    s->prob = malloc(vocab * sizeof(*s->prob));
    if (!s->cand || !s->seen || !s->prob) {
        vg_sampler_free(s);
        return VG_ENOMEM;
    }
    uint64_t x = params->seed;
    for (int i = 0; i < 4; i++)
        s->st[i] = splitmix64(&x);
    *out = s;
    return 0;
}

void vg_sampler_free(vg_sampler *s)
{
    if (!s)
        return;
    free(s->cand);
    free(s->seen);
    free(s->prob);
    free(s);
}

/* Descending by logit, ascending id on ties (deterministic). */
static int cmp_desc(const void *a, const void *b)
{
    const vg_cand *x = a, *y = b;
    if (x->v > y->v)
        return -1;
    if (x->v < y->v)
        return 1;
    return (x->id > y->id) - (x->id < y->id);
}

static void heap_down(float *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l] < h[m])
            m = l;
        if (r < n && h[r] < h[m])
            m = r;
        if (m == i)
            return;
        float t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* The k-th largest of x[0..n) (1 <= k <= n) with a min-heap of k values in heap[k]. */
static float kth_largest(const float *x, size_t n, size_t k, float *heap)
{
    for (size_t i = 0; i < k; i++)
        heap[i] = x[i];
    for (size_t i = k / 2; i-- > 0;)
        heap_down(heap, k, i);
    for (size_t i = k; i < n; i++)
        if (x[i] > heap[0]) {
            heap[0] = x[i];
            heap_down(heap, k, 0);
        }
    return heap[0];
}

int32_t vg_sampler_sample(vg_sampler *s, float *logits, const int32_t *prev, size_t n_prev)
{
    if (!s || !logits)
        return -1;
    const size_t V = s->vocab;
    if (!s->p.do_sample)
        return vg_argmax(logits, V);
    if (prev && n_prev && (s->p.repetition_penalty != 1.0f || s->p.presence_penalty != 0.0f)) {
        memset(s->seen, 0, V);
        for (size_t i = 0; i < n_prev; i++) {
            int32_t id = prev[i];
            if (id < 0 || (size_t)id >= V || s->seen[id])
                continue;
            s->seen[id] = 1;
            float v = logits[id];
            if (s->p.repetition_penalty != 1.0f)
                v = v > 0.0f ? v / s->p.repetition_penalty : v * s->p.repetition_penalty;
            v -= s->p.presence_penalty;
            logits[id] = v;
        }
    }
    const float invt = 1.0f / s->p.temperature;
    for (size_t i = 0; i < V; i++)
        logits[i] *= invt;
    size_t n = 0;
    if (s->p.top_k > 0 && (size_t)s->p.top_k < V) {
        float thr = kth_largest(logits, V, (size_t)s->p.top_k, s->prob);
        for (size_t i = 0; i < V; i++)
            if (logits[i] >= thr)
                s->cand[n++] = (vg_cand){logits[i], (int32_t)i};
    } else {
        for (size_t i = 0; i < V; i++)
            s->cand[n++] = (vg_cand){logits[i], (int32_t)i};
    }
    qsort(s->cand, n, sizeof(*s->cand), cmp_desc);
    /* softmax over the candidates (the removed tokens have probability 0) */
    float mx = s->cand[0].v;
    double tot = 0.0;
    for (size_t i = 0; i < n; i++) {
        s->prob[i] = expf(s->cand[i].v - mx);
        tot += s->prob[i];
    }
    for (size_t i = 0; i < n; i++)
        s->prob[i] = (float)(s->prob[i] / tot);
    if (s->p.top_p < 1.0f) {
        /* ascending cumulative sum: token at descending rank i has cum = sum of prob[i..n) */
        float cum = 0.0f;
        size_t keep = n;
        for (size_t i = n; i-- > 1;) {
            cum += s->prob[i];
            if (cum <= 1.0f - s->p.top_p)
                keep = i;
            else
                break;
        }
        n = keep;
    }
    double mass = 0.0;
    for (size_t i = 0; i < n; i++)
        mass += s->prob[i];
    double r = (double)(xoshiro(s->st) >> 11) * (1.0 / 9007199254740992.0) * mass;
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        acc += s->prob[i];
        if (r < acc)
            return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}
