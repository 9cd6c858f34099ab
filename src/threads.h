/* Fork-join parallel loops on POSIX threads: over [0, n) in one contiguous
 * slice per worker, or over items that the workers take one at a time.
 * Either way which thread computes an index never changes the arithmetic
 * done for it: results are the same for every thread count. */
#ifndef QKV_THREADS_H
#define QKV_THREADS_H

#include "qkv.h"

/* A pool of worker threads, owned by an execution context; NULL stands
 * for the process's default pool (the default context's). */
typedef struct qkv_pool qkv_pool;

/* An empty pool (its workers start on first use), or NULL when out of
 * memory. */
qkv_pool *qkv_pool_create(void);

/* Stops and joins pool's workers and frees it; NULL does nothing. No call
 * may be running on it. */
void qkv_pool_free(qkv_pool *pool);

/* Called once per worker with its slice [begin, end) and its index tid in
 * 0..nthreads-1. It cannot fail: whatever may fail (allocating scratch) is
 * done by the caller before the loop, indexed by tid. */
typedef void (*qkv_range_fn)(void *ctx, int tid, int64_t begin, int64_t end);

/* Runs fn over [0, n) on min(nthreads, n) workers of pool, the calling
 * thread being one of them. A worker whose thread cannot be started runs on the calling
 * thread afterwards, so the loop always completes; returns QKV_OK, or
 * QKV_ERR_OUT_OF_MEMORY when even the worker table cannot be allocated
 * (nothing has run then). */
qkv_status qkv_parallel_for(qkv_pool *pool, int64_t n, int nthreads, qkv_range_fn fn, void *ctx);

/* Called for one item with the index tid (0..nthreads-1) of the worker
 * that took it; like qkv_range_fn it cannot fail. */
typedef void (*qkv_item_fn)(void *ctx, int tid, int64_t item);

/* Runs fn on items 0..items-1 with min(nthreads, items) workers, each
 * taking the next item from a shared counter when it has finished its
 * last, so that items of uneven cost balance. Items are taken in
 * ascending order and each runs to its end on the worker that took it:
 * an item may wait for one with a smaller index, which is then running
 * or done. Worker 0 is the calling thread (a caller that reports progress
 * does it from there). Returns as qkv_parallel_for. */
qkv_status qkv_parallel_items(qkv_pool *pool, int64_t items, int nthreads, qkv_item_fn fn,
                              void *ctx);

/* The CPUs this process may run on (its affinity mask on Linux, else the
 * online CPUs), from 1 to QKV_MAX_THREADS. */
int qkv_cpu_count(void);

#endif
