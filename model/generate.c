/*
 * generate.c: the token loop after a prefill. Each step samples from the current logits (the
 * penalties see the ids generated so far), reports the id and its newly completed UTF-8 text
 * through the callback (special tokens and stop ids give no text), then decodes the id at MRoPE
 * position (cache position + rope_delta) on all three axes to get the next logits. Runs on the
 * calling thread, which owns the sequence for the duration. vg_generate_lp also reports each
 * token's log-probability, taken from a copy of the logits before the sampler's penalties and
 * temperature touch them (so the sampled ids are the same as vg_generate's).
 */
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The log-probability of logits[id] under softmax(logits), before any penalty or temperature. */
static float log_softmax_at(const float *logits, size_t n, int32_t id)
{
    float mx = logits[0];
    for (size_t i = 1; i < n; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += exp((double)(logits[i] - mx));
    return (float)((double)(logits[id] - mx) - log(sum));
}

typedef struct plain_cb {
    vg_token_cb cb;
    void *opaque;
} plain_cb;

static int call_plain(int32_t id, const char *text, size_t len, float logprob, void *opaque)
{
    (void)logprob;
    const plain_cb *p = opaque;
    return p->cb(id, text, len, p->opaque);
}

static int generate(vg_seq *s, const vg_gen_params *params, float *first_logits, int32_t rope_delta,
                    vg_token_lp_cb cb, int want_lp, void *opaque, const atomic_int *cancel,
                    int32_t **out_ids, size_t *n_out, char *err, size_t errlen);

int vg_generate(vg_seq *s, const vg_gen_params *params, float *first_logits, int32_t rope_delta,
                vg_token_cb cb, void *opaque, const atomic_int *cancel, int32_t **out_ids,
                size_t *n_out, char *err, size_t errlen)
{
    plain_cb p = {cb, opaque};
    return generate(s, params, first_logits, rope_delta, cb ? call_plain : NULL, 0, &p, cancel,
                    out_ids, n_out, err, errlen);
}

int vg_generate_lp(vg_seq *s, const vg_gen_params *params, float *first_logits, int32_t rope_delta,
                   vg_token_lp_cb cb, void *opaque, const atomic_int *cancel, int32_t **out_ids,
                   size_t *n_out, char *err, size_t errlen)
{
    return generate(s, params, first_logits, rope_delta, cb, cb != NULL, opaque, cancel, out_ids,
                    n_out, err, errlen);
}

static int generate(vg_seq *s, const vg_gen_params *params, float *first_logits, int32_t rope_delta,
                    vg_token_lp_cb cb, int want_lp, void *opaque, const atomic_int *cancel,
                    int32_t **out_ids, size_t *n_out, char *err, size_t errlen)
{
    if (!s || !params || !first_logits)
        return vg_fail(err, errlen, VG_EINVAL, "vg_generate: NULL argument");
    if (params->max_new_tokens < 0 || params->n_stop_ids < 0 ||
        params->n_stop_ids > VG_MAX_STOP_IDS)
        return vg_fail(err, errlen, VG_EINVAL, "vg_generate: bad max_new_tokens or stop ids");
    vg_model *m = vg_seq_model(s);
    const vg_model_info *in = &m->info;
    const size_t V = (size_t)in->vocab_size;
    const size_t cap = (size_t)params->max_new_tokens;
    vg_sampler *smp = NULL;
    vg_detok *dt = NULL;
    int32_t *ids = malloc((cap ? cap : 1) * sizeof(*ids));
    float *logits = malloc(V * sizeof(float));
    float *raw = want_lp ? malloc(V * sizeof(float)) : NULL; /* the logits before sampling */
    int rc = vg_sampler_create(params, V, &smp);
    if (rc < 0) {
        rc = vg_fail(err, errlen, rc, "bad sampling parameters");
        goto done;
    }
    if (!ids || !logits || (want_lp && !raw)) {
        rc = vg_fail(err, errlen, VG_ENOMEM, "out of memory");
        goto done;
    }
    if (cb && (rc = vg_detok_create(m->tok, 1, &dt)) < 0) {
        rc = vg_fail(err, errlen, rc, "cannot create a detokenizer");
        goto done;
    }
    size_t n = 0;
    float *work = first_logits;
    while (n < cap) {
        if (cancel && atomic_load(cancel)) {
            rc = vg_fail(err, errlen, VG_ECANCELED, "generation canceled");
            goto done;
        }
        if (raw)
            memcpy(raw, work, V * sizeof(float));
        int32_t id = vg_sampler_sample(smp, work, ids, n);
        float lp = raw && id >= 0 && (size_t)id < V ? log_softmax_at(raw, V, id) : 0.0f;
        ids[n++] = id;
        int stop = 0;
        for (int i = 0; i < params->n_stop_ids; i++)
            if (params->stop_ids[i] == id)
                stop = 1;
        if (cb) {
            char text[512];
            size_t len = 0;
            text[0] = '\0';
            if (!stop && (rc = vg_detok_push(dt, id, text, sizeof(text), &len)) < 0) {
                rc = vg_fail(err, errlen, rc, "cannot detokenize id %d", (int)id);
                goto done;
            }
            if (stop || n == cap) {
                /* The last callback also carries what the detokenizer still holds (an incomplete
                 * character becomes U+FFFD), so the streamed text is the whole text. */
                size_t more = 0;
                if (vg_detok_flush(dt, text + len, sizeof(text) - len, &more) == 0)
                    len += more;
            }
            if (cb(id, text, len, lp, opaque))
                break;
        }
        if (stop || n == cap)
            break;
        int64_t pos = (int64_t)vg_seq_len(s) + rope_delta;
        if (pos < INT32_MIN || pos > INT32_MAX) {
            rc = vg_fail(err, errlen, VG_ERANGE, "decode position out of range");
            goto done;
        }
        rc = vg_seq_decode(s, id, (int32_t)pos, logits, err, errlen);
        if (rc < 0)
            goto done;
        work = logits;
    }
    rc = 0;
    if (out_ids) {
        *out_ids = ids;
        ids = NULL;
    }
    if (n_out)
        *n_out = n;
done:
    vg_detok_free(dt);
    vg_sampler_free(smp);
    free(ids);
    free(logits);
    free(raw);
    return rc;
}
