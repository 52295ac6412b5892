/*
 * pool.h: the engine's thread pool (pool.c). model/ only.
 */
#ifndef VG_MODEL_POOL_H
#define VG_MODEL_POOL_H

#include <stddef.h>

#define VG_POOL_ENOMEM (-12)

typedef struct vg_pool vg_pool;
/* Runs task index i (0 <= i < n_tasks) of a region; called on any pool thread. */
typedef void (*vg_pool_fn)(void *arg, size_t i);

/* A pool of n_threads participants (n_threads - 1 workers plus the caller of each region; a worker
 * polls for 50 microseconds after a region, then sleeps until the next). n_threads <= 1 makes a
 * pool that runs everything on the caller. 0 or VG_POOL_ENOMEM; the caller frees *out with
 * vg_pool_destroy(). Fewer workers than asked start when thread creation fails (the pool still
 * works). */
int vg_pool_create(int n_threads, vg_pool **out);
/* Stops and joins the workers; NULL does nothing. No region may be running. */
void vg_pool_destroy(vg_pool *p);
/* Participants of a region (workers + 1). */
int vg_pool_threads(const vg_pool *p);
/* Runs fn(arg, i) for every i < n_tasks on the pool and the calling thread, and returns when all
 * have finished. Any thread; a caller that finds the pool running another thread's region (or a
 * NULL pool) runs every task itself. fn must not call vg_pool_run on the same pool. */
void vg_pool_run(vg_pool *p, size_t n_tasks, vg_pool_fn fn, void *arg);

/* Tasks per participant that the engine's regions are cut into: with several per thread, a
 * participant that the OS deschedules (a busy shared machine) leaves its share to the others. */
#define VG_POOL_SPLIT 4

/* Work on items [r0, r1) of a range. */
typedef void (*vg_range_fn)(void *ctx, size_t r0, size_t r1);
/* Splits items 0..n-1 into contiguous ranges, VG_POOL_SPLIT per participant (fewer when n / grain
 * is smaller: ranges of at least grain items; one without workers), and runs fn on them through
 * vg_pool_run. */
void vg_pool_for(vg_pool *p, size_t n, size_t grain, vg_range_fn fn, void *ctx);

#endif
