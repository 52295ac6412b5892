/*
 * pool.c: the engine's thread pool: n - 1 worker threads plus the calling thread run the tasks of
 * one parallel region (GEMV row ranges, attention heads).
 *
 * Idle workers sleep on a condition variable (on a shared 2-core machine a spinning barrier made
 * 2-thread runs slower than 1 thread). Only for a short while after a region (VG_POOL_SPIN_US) does
 * a worker poll for the next one before it goes to sleep, and the caller polls for the last task's
 * end as long before it sleeps: a decode step runs hundreds of regions back to back, a few
 * microseconds apart, and a futex wake-up per region cost more than the polling (measured in
 * docs/benchmarks.md); a pool with no work sleeps. vg_pool_run() publishes a job under the mutex
 * and broadcasts; every participant takes task indexes from an atomic counter until none is left;
 * the caller runs tasks too and then waits until the last task has finished. One region runs at a
 * time: a caller that finds the pool busy (another thread's region) runs all its tasks itself, so
 * concurrent callers never put more threads on the cores than the pool has.
 *
 * Threads: vg_pool_run from any thread; vg_pool_destroy when no region is running.
 */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* how long a participant polls before it sleeps, microseconds */
#define VG_POOL_SPIN_US 50

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Polls until *v differs from old (below: until *v >= old) or VG_POOL_SPIN_US have passed; 1 when
 * it did. */
static int spin_for(_Atomic unsigned long *v, unsigned long old, int below)
{
    int64_t end = 0;
    for (unsigned i = 0;; i++) {
        unsigned long c = atomic_load_explicit(v, memory_order_acquire);
        if (below ? c >= old : c != old)
            return 1;
        if ((i & 63) == 0) {
            int64_t t = now_us();
            if (!end)
                end = t + VG_POOL_SPIN_US;
            else if (t >= end)
                return 0;
        }
        cpu_relax();
    }
}

struct vg_pool {
    int n_workers;
    pthread_t *th;
    pthread_mutex_t mu;        /* guards the job fields; gen and stop change under it */
    pthread_cond_t wake;       /* a new generation or stop */
    pthread_cond_t done;       /* the last task finished */
    pthread_mutex_t busy;      /* held by the thread whose region is running */
    _Atomic unsigned long gen; /* written under mu, polled without it */
    _Atomic int stop;
    vg_pool_fn fn;
    void *arg;
    size_t n_tasks;
    /* (generation << 32) | next task index: a worker that wakes late for a finished region sees
     * another generation and takes nothing */
    _Atomic uint64_t ctl;
    /* tasks finished in the current region; the one that finishes the last signals done under mu
     * (a caller that sleeps checks it under mu first) */
    _Atomic unsigned long finished;
};

static void run_tasks(vg_pool *p, uint32_t gen, vg_pool_fn fn, void *arg, size_t n)
{
    size_t mine = 0;
    uint64_t v = atomic_load(&p->ctl);
    for (;;) {
        if ((uint32_t)(v >> 32) != gen || (v & 0xffffffffu) >= n)
            break;
        if (!atomic_compare_exchange_weak(&p->ctl, &v, v + 1))
            continue;
        fn(arg, (size_t)(v & 0xffffffffu));
        mine++;
        v = atomic_load(&p->ctl);
    }
    if (mine == 0)
        return;
    if (atomic_fetch_add(&p->finished, mine) + mine == n) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

static void *worker(void *opaque)
{
    vg_pool *p = opaque;
    unsigned long seen = 0;
    for (;;) {
        spin_for(&p->gen, seen, 0); /* the next region usually follows within microseconds */
        pthread_mutex_lock(&p->mu);
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        vg_pool_fn fn = p->fn;
        void *arg = p->arg;
        size_t n = p->n_tasks;
        pthread_mutex_unlock(&p->mu);
        run_tasks(p, (uint32_t)seen, fn, arg, n);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int vg_pool_create(int n_threads, vg_pool **out)
{
    vg_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return VG_POOL_ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->busy, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    int nw = n_threads > 1 ? n_threads - 1 : 0;
    if (nw > 0) {
        p->th = calloc((size_t)nw, sizeof(*p->th));
        if (!p->th) {
            vg_pool_destroy(p);
            return VG_POOL_ENOMEM;
        }
    }
    for (int i = 0; i < nw; i++) {
        if (pthread_create(&p->th[i], NULL, worker, p) != 0)
            break;
        p->n_workers++;
    }
    *out = p;
    return 0;
}

void vg_pool_destroy(vg_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    p->gen++; /* ends a worker's polling */
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++)
        pthread_join(p->th[i], NULL);
    free(p->th);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->busy);
    free(p);
}

int vg_pool_threads(const vg_pool *p)
{
    return p ? p->n_workers + 1 : 1;
}

void vg_pool_run(vg_pool *p, size_t n_tasks, vg_pool_fn fn, void *arg)
{
    if (n_tasks == 0)
        return;
    if (!p || p->n_workers == 0 || n_tasks == 1 || pthread_mutex_trylock(&p->busy) != 0) {
        for (size_t i = 0; i < n_tasks; i++)
            fn(arg, i);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store(&p->finished, 0);
    const unsigned long gen = p->gen + 1;
    atomic_store(&p->ctl, (uint64_t)(uint32_t)gen << 32);
    atomic_store_explicit(&p->gen, gen, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, (uint32_t)gen, fn, arg, n_tasks);
    if (!spin_for(&p->finished, n_tasks, 1)) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->finished) < n_tasks)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&p->busy);
}

typedef struct for_job {
    vg_range_fn fn;
    void *ctx;
    size_t n, parts;
} for_job;

static void for_task(void *arg, size_t i)
{
    const for_job *j = arg;
    size_t r0 = j->n * i / j->parts, r1 = j->n * (i + 1) / j->parts;
    if (r1 > r0)
        j->fn(j->ctx, r0, r1);
}

void vg_pool_for(vg_pool *p, size_t n, size_t grain, vg_range_fn fn, void *ctx)
{
    if (n == 0)
        return;
    /* a few ranges per participant: a participant the OS has descheduled (a busy shared machine)
     * leaves its ranges to the others instead of holding up the whole region */
    size_t threads = (size_t)vg_pool_threads(p), most = grain ? n / grain : n;
    size_t parts = threads > 1 ? VG_POOL_SPLIT * threads : 1;
    if (parts > most)
        parts = most ? most : 1;
    for_job j = {.fn = fn, .ctx = ctx, .n = n, .parts = parts};
    vg_pool_run(parts > 1 ? p : NULL, parts, for_task, &j);
}
