/* Fork-join parallel loops on persistent pools of POSIX threads; see
 * threads.h. A pool starts empty and grows to the largest count a call
 * asks of it; its workers sleep on a condition variable between calls, so
 * a decode step that takes a millisecond does not pay for thread creation.
 * Each execution context owns a pool (the default context's is a static
 * one), so that calls on different contexts from different threads run
 * side by side on their own workers. One call uses a pool at a time: a
 * second caller that finds it busy (one context shared by several
 * threads) starts its own threads for that call instead of waiting. After
 * fork() a child finds every pool empty (its workers did not survive the
 * fork): the first call there starts the pool over. */
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

/* A worker's place in its pool, and the job generation when it was
 * started: a job posted while it was starting (its creator holds the lock
 * and posts right after) is one it must still run. */
typedef struct worker {
    qkv_pool *pool;
    int w; /* runs slice w + 1 */
    uint64_t gen;
    pthread_t thread;
} worker;

struct qkv_pool {
    pthread_mutex_t busy; /* held for a call */
    pthread_mutex_t lock; /* guards the rest */
    pthread_cond_t wake, done;
    int size;     /* workers started */
    int quit;     /* set by qkv_pool_free: workers return */
    uint64_t gen; /* bumped for every job */
    job job;
    int pending;    /* slices of the current job not yet finished */
    unsigned epoch; /* the fork epoch its workers and locks belong to */
    worker workers[MAX_WORKERS];
};

/* Bumped in every forked child, under epoch_lock (which the child handler
 * starts over too): a pool whose epoch is older has neither workers nor
 * trustworthy locks. */
static unsigned fork_epoch;
static pthread_mutex_t epoch_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void after_fork_child(void)
{
    pthread_mutex_init(&epoch_lock, NULL);
    fork_epoch++;
}

static void fork_init(void) { pthread_atfork(NULL, NULL, after_fork_child); }

static void pool_start_over(qkv_pool *p)
{
    pthread_mutex_init(&p->busy, NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->size = 0;
    p->quit = 0;
    p->pending = 0;
}

static qkv_pool default_pool = {
    .busy = PTHREAD_MUTEX_INITIALIZER,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
};

/* pool, or the default pool for NULL, made current after a fork. */
static qkv_pool *pool_get(qkv_pool *pool)
{
    qkv_pool *p = pool ? pool : &default_pool;
    pthread_once(&fork_once, fork_init);
    pthread_mutex_lock(&epoch_lock);
    if (p->epoch != fork_epoch) {
        pool_start_over(p);
        p->epoch = fork_epoch;
    }
    pthread_mutex_unlock(&epoch_lock);
    return p;
}

qkv_pool *qkv_pool_create(void)
{
    qkv_pool *p = malloc(sizeof *p);
    if (!p) return NULL;
    pool_start_over(p);
    p->gen = 0;
    pthread_once(&fork_once, fork_init);
    pthread_mutex_lock(&epoch_lock);
    p->epoch = fork_epoch;
    pthread_mutex_unlock(&epoch_lock);
    return p;
}

static void *pool_worker(void *arg)
{
    const worker *me = arg;
    qkv_pool *p = me->pool;
    uint64_t seen = me->gen;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->gen == seen && !p->quit) pthread_cond_wait(&p->wake, &p->lock);
        if (p->quit) break;
        seen = p->gen;
        if (me->w + 1 >= p->job.nt) continue; /* this job needs fewer workers */
        job j = p->job;
        pthread_mutex_unlock(&p->lock);
        run_slice(&j, me->w + 1);
        pthread_mutex_lock(&p->lock);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

void qkv_pool_free(qkv_pool *pool)
{
    if (!pool) return;
    pthread_mutex_lock(&epoch_lock);
    const int ours = pool->epoch == fork_epoch; /* else its workers are gone */
    pthread_mutex_unlock(&epoch_lock);
    if (ours) {
        pthread_mutex_lock(&pool->lock);
        pool->quit = 1;
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
        for (int w = 0; w < pool->size; w++) pthread_join(pool->workers[w].thread, NULL);
        pthread_cond_destroy(&pool->wake);
        pthread_cond_destroy(&pool->done);
        pthread_mutex_destroy(&pool->lock);
        pthread_mutex_destroy(&pool->busy);
    }
    free(pool);
}

/* Grows the pool to `want` workers (as many as can be started); called
 * with its lock held. */
static void pool_grow(qkv_pool *p, int want)
{
    while (p->size < want) {
        worker *wk = &p->workers[p->size];
        wk->pool = p;
        wk->w = p->size;
        wk->gen = p->gen;
        if (pthread_create(&wk->thread, NULL, pool_worker, wk) != 0) break;
        p->size++;
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

qkv_status qkv_parallel_for(qkv_pool *pool, int64_t n, int nthreads, qkv_range_fn fn, void *ctx)
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
    qkv_pool *p = pool_get(pool);
    if (pthread_mutex_trylock(&p->busy) != 0) return run_spawned(&j);

    pthread_mutex_lock(&p->lock);
    pool_grow(p, (int)nt - 1);
    /* Slices beyond the workers that exist run here, after slice 0. */
    const int workers = p->size < nt - 1 ? p->size : (int)nt - 1;
    p->job = j;
    p->pending = workers;
    p->gen++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    run_slice(&j, 0);
    for (int t = workers + 1; t < nt; t++) run_slice(&j, t);

    pthread_mutex_lock(&p->lock);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->busy);
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

qkv_status qkv_parallel_items(qkv_pool *pool, int64_t items, int nthreads, qkv_item_fn fn,
                              void *ctx)
{
    if (items <= 0) return QKV_OK;
    int nt = nthreads < 1 ? 1 : nthreads;
    if (nt > items) nt = (int)items;
    items_job j;
    atomic_init(&j.next, 0);
    j.items = items;
    j.fn = fn;
    j.ctx = ctx;
    return qkv_parallel_for(pool, nt, nt, items_worker, &j);
}
