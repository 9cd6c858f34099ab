/* Fork-join parallel loop on a persistent pool of POSIX threads; see
 * threads.h. The pool starts empty and grows to the largest count a call
 * asks for; its workers sleep on a condition variable between calls, so a
 * decode step that takes a millisecond does not pay for thread creation.
 * One call uses the pool at a time: a second caller that finds it busy
 * (the library is called from several threads) starts its own threads for
 * that call instead of waiting. After fork() the child starts with no pool
 * (its workers did not survive the fork). */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_getaffinity: the CPUs this process may run on */
#include <sched.h>
#endif
#include "threads.h"

#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_WORKERS (QKV_MAX_THREADS - 1) /* the caller is one more */

typedef struct job {
    qkv_range_fn fn;
    void *ctx;
    int64_t n;
    int nt;
} job;

static void run_slice(const job *j, int t)
{
    j->fn(j->ctx, t, j->n * t / j->nt, j->n * (t + 1) / j->nt);
}

/* ------------------------------------------------------------ the pool */

static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER; /* held for a call */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER; /* guards the rest */
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;
static int pool_size;         /* workers started; worker w runs slice w + 1 */
static uint64_t pool_gen;     /* bumped for every job */
static job pool_job;
static int pool_pending;      /* slices of the current job not yet finished */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* A worker's index and the job generation when it was started: a job
 * posted while it was starting (its creator holds pool_lock and posts
 * right after) is one it must still run. */
typedef struct worker_start {
    int w;
    uint64_t gen;
} worker_start;

static void *pool_worker(void *arg)
{
    const worker_start ws = *(worker_start *)arg;
    free(arg);
    const int w = ws.w;
    uint64_t seen = ws.gen;
    pthread_mutex_lock(&pool_lock);
    for (;;) {
        while (pool_gen == seen) pthread_cond_wait(&pool_wake, &pool_lock);
        seen = pool_gen;
        if (w + 1 >= pool_job.nt) continue; /* this job needs fewer workers */
        job j = pool_job;
        pthread_mutex_unlock(&pool_lock);
        run_slice(&j, w + 1);
        pthread_mutex_lock(&pool_lock);
        if (--pool_pending == 0) pthread_cond_signal(&pool_done);
    }
    return NULL;
}

/* In a forked child the workers are gone and the locks may be held by
 * threads that no longer exist: start over. */
static void pool_after_fork_child(void)
{
    pthread_mutex_init(&pool_busy, NULL);
    pthread_mutex_init(&pool_lock, NULL);
    pthread_cond_init(&pool_wake, NULL);
    pthread_cond_init(&pool_done, NULL);
    pool_size = 0;
    pool_pending = 0;
}

static void pool_init(void) { pthread_atfork(NULL, NULL, pool_after_fork_child); }

/* Grows the pool to `want` workers (as many as can be started). */
static void pool_grow(int want)
{
    while (pool_size < want) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        worker_start *ws = malloc(sizeof *ws);
        int ok = ws != NULL;
        if (ok) {
            ws->w = pool_size;
            ws->gen = pool_gen;
            ok = pthread_create(&t, &attr, pool_worker, ws) == 0;
            if (!ok) free(ws);
        }
        pthread_attr_destroy(&attr);
        if (!ok) break;
        pool_size++;
    }
}

/* ------------------------------------------------------------ fallback */

typedef struct spawned {
    pthread_t thread;
    const job *j;
    int t;
} spawned;

static void *spawned_main(void *arg)
{
    spawned *s = arg;
    run_slice(s->j, s->t);
    return NULL;
}

/* The pool is busy: threads of our own for this call. A slice whose
 * thread cannot start runs on the calling thread, so the loop completes. */
static qkv_status run_spawned(const job *j)
{
    spawned *ws = calloc((size_t)j->nt, sizeof *ws);
    if (!ws) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "threads: cannot allocate %d workers", j->nt);
    int *started = calloc((size_t)j->nt, sizeof *started);
    if (!started) {
        free(ws);
        return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "threads: cannot allocate %d workers", j->nt);
    }
    for (int t = 1; t < j->nt; t++) {
        ws[t].j = j;
        ws[t].t = t;
        started[t] = pthread_create(&ws[t].thread, NULL, spawned_main, &ws[t]) == 0;
    }
    run_slice(j, 0);
    for (int t = 1; t < j->nt; t++) {
        if (started[t])
            pthread_join(ws[t].thread, NULL);
        else
            run_slice(j, t);
    }
    free(started);
    free(ws);
    return QKV_OK;
}

/* ------------------------------------------------------------ the loop */

int qkv_cpu_count(void)
{
#if defined(__linux__)
    /* taskset and container CPU sets shrink this below the online count. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n >= 1) return n > MAX_WORKERS + 1 ? MAX_WORKERS + 1 : n;
    }
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    if (n > MAX_WORKERS + 1) return MAX_WORKERS + 1;
    return (int)n;
}

int qkv_default_num_threads(void) { return qkv_cpu_count(); }

qkv_status qkv_parallel_for(int64_t n, int nthreads, qkv_range_fn fn, void *ctx)
{
    if (n <= 0) return QKV_OK;
    int64_t nt = nthreads < 1 ? 1 : nthreads;
    if (nt > n) nt = n;
    if (nt > MAX_WORKERS + 1) nt = MAX_WORKERS + 1;
    job j = {fn, ctx, n, (int)nt};
    if (nt == 1) {
        run_slice(&j, 0);
        return QKV_OK;
    }
    pthread_once(&pool_once, pool_init);
    if (pthread_mutex_trylock(&pool_busy) != 0) return run_spawned(&j);

    pthread_mutex_lock(&pool_lock);
    pool_grow((int)nt - 1);
    /* Slices beyond the workers that exist run here, after slice 0. */
    const int workers = pool_size < nt - 1 ? pool_size : (int)nt - 1;
    pool_job = j;
    pool_pending = workers;
    pool_gen++;
    pthread_cond_broadcast(&pool_wake);
    pthread_mutex_unlock(&pool_lock);

    run_slice(&j, 0);
    for (int t = workers + 1; t < nt; t++) run_slice(&j, t);

    pthread_mutex_lock(&pool_lock);
    while (pool_pending > 0) pthread_cond_wait(&pool_done, &pool_lock);
    pthread_mutex_unlock(&pool_lock);
    pthread_mutex_unlock(&pool_busy);
    return QKV_OK;
}

/* ------------------------------------------------------------ items */

typedef struct items_job {
    _Atomic int64_t next; /* the next item to take */
    int64_t items;
    qkv_item_fn fn;
    void *ctx;
} items_job;

/* One slice per worker: the slice is ignored, the worker takes items from
 * the counter until none is left. */
static void items_worker(void *vctx, int tid, int64_t begin, int64_t end)
{
    (void)begin;
    (void)end;
    items_job *j = vctx;
    for (;;) {
        const int64_t it = atomic_fetch_add(&j->next, 1);
        if (it >= j->items) break;
        j->fn(j->ctx, tid, it);
    }
}

qkv_status qkv_parallel_items(int64_t items, int nthreads, qkv_item_fn fn, void *ctx)
{
    if (items <= 0) return QKV_OK;
    int nt = nthreads < 1 ? 1 : nthreads;
    if (nt > items) nt = (int)items;
    items_job j;
    atomic_init(&j.next, 0);
    j.items = items;
    j.fn = fn;
    j.ctx = ctx;
    return qkv_parallel_for(nt, nt, items_worker, &j);
}
