/* Fork-join parallel loop; see threads.h. */
#include "threads.h"

#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct worker {
    pthread_t thread;
    qkv_range_fn fn;
    void *ctx;
    int tid;
    int64_t begin, end;
    int started;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    w->fn(w->ctx, w->tid, w->begin, w->end);
    return NULL;
}

int qkv_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    if (n > 1024) return 1024;
    return (int)n;
}

qkv_status qkv_parallel_for(int64_t n, int nthreads, qkv_range_fn fn, void *ctx)
{
    if (n <= 0) return QKV_OK;
    int64_t nt = nthreads < 1 ? 1 : nthreads;
    if (nt > n) nt = n;
    if (nt == 1) {
        fn(ctx, 0, 0, n);
        return QKV_OK;
    }

    worker *ws = calloc((size_t)nt, sizeof *ws);
    if (!ws) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "threads: cannot allocate %lld workers",
                             (long long)nt);
    for (int64_t t = 0; t < nt; t++) {
        ws[t].fn = fn;
        ws[t].ctx = ctx;
        ws[t].tid = (int)t;
        ws[t].begin = n * t / nt;
        ws[t].end = n * (t + 1) / nt;
    }
    /* Worker 0 runs on the calling thread after the others start. A worker
     * that fails to start is run here too, so the loop always completes. */
    for (int64_t t = 1; t < nt; t++)
        ws[t].started = pthread_create(&ws[t].thread, NULL, worker_main, &ws[t]) == 0;
    fn(ctx, 0, ws[0].begin, ws[0].end);
    for (int64_t t = 1; t < nt; t++) {
        if (ws[t].started)
            pthread_join(ws[t].thread, NULL);
        else
            fn(ctx, ws[t].tid, ws[t].begin, ws[t].end);
    }
    free(ws);
    return QKV_OK;
}
