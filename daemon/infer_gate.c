/*
 * infer_gate.c: the inference gate (part of vg_daemon_core), a FIFO ticket lock that serializes
 * the model's heavy calls between the clip-job inference thread (jobs.c, which holds it for one
 * job) and the stream inference thread (stream_infer.c, which holds it for one step of one
 * stream). Whoever waits first goes first, so neither side waits longer than one unit of the
 * other and the model never runs twice at once (no BLAS oversubscription). Any thread.
 */
#include "daemon.h"

#include "common.h"

#include <pthread.h>
#include <stdlib.h>

struct vg_infer_gate {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    unsigned long long next, serving;
};

int vg_infer_gate_create(vg_infer_gate **out)
{
    vg_infer_gate *g = calloc(1, sizeof *g);
    if (!g)
        return VG_ENOMEM;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cond, NULL);
    *out = g;
    return 0;
}

void vg_infer_gate_destroy(vg_infer_gate *g)
{
    if (!g)
        return;
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cond);
    free(g);
}

void vg_infer_gate_enter(vg_infer_gate *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    unsigned long long ticket = g->next++;
    while (g->serving != ticket)
        pthread_cond_wait(&g->cond, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

void vg_infer_gate_leave(vg_infer_gate *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->serving++;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mu);
}
