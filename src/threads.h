/* A fork-join parallel loop over [0, n) on POSIX threads. Each worker gets
 * one contiguous slice, so which thread computes an index never changes the
 * arithmetic done for it: results are the same for every thread count. */
#ifndef QKV_THREADS_H
#define QKV_THREADS_H

#include "qkv.h"

/* Called once per worker with its slice [begin, end) and its index tid in
 * 0..nthreads-1. It cannot fail: whatever may fail (allocating scratch) is
 * done by the caller before the loop, indexed by tid. */
typedef void (*qkv_range_fn)(void *ctx, int tid, int64_t begin, int64_t end);

/* Runs fn over [0, n) on min(nthreads, n) workers, the calling thread being
 * one of them. A worker whose thread cannot be started runs on the calling
 * thread afterwards, so the loop always completes; returns QKV_OK, or
 * QKV_ERR_OUT_OF_MEMORY when even the worker table cannot be allocated
 * (nothing has run then). */
qkv_status qkv_parallel_for(int64_t n, int nthreads, qkv_range_fn fn, void *ctx);

/* The CPUs this process may run on (its affinity mask on Linux, else the
 * online CPUs), from 1 to QKV_MAX_THREADS. */
int qkv_cpu_count(void);

#endif
