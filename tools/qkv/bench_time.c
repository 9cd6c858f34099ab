/* The bench's clock and its two statistics: the median of repeated runs
 * for what is measured, the fastest run for a ceiling, and the pair of
 * both called in turn. */
#define _XOPEN_SOURCE 700 /* clock_gettime */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Repeats fn until 3 runs and 0.5 s, after one warm-up: the median and,
 * through *best, the fastest run. */
static double time_runs(int (*fn)(void *), void *ctx, double *best)
{
    if (!fn(ctx)) return -1;
    double t[64];
    int n = 0;
    double start = bench_now();
    while (n < 64 && (n < 3 || bench_now() - start < 0.5)) {
        double t0 = bench_now();
        if (!fn(ctx)) return -1;
        t[n++] = bench_now() - t0;
    }
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    if (best) *best = t[0];
    return t[n / 2];
}

double bench_time_median(int (*fn)(void *), void *ctx) { return time_runs(fn, ctx, NULL); }

double bench_time_best(int (*fn)(void *), void *ctx)
{
    double best = -1;
    return time_runs(fn, ctx, &best) < 0 ? -1 : best;
}

int bench_time_pair(int (*ours)(void *), void *octx, int (*theirs)(void *), void *tctx,
                    double *t_ours, double *t_theirs)
{
    if (!ours(octx)) return 0;
    if (theirs) theirs(tctx);
    *t_ours = INFINITY;
    *t_theirs = theirs ? INFINITY : 0;
    const double start = bench_now();
    for (int n = 0; n < 64 && (n < 5 || bench_now() - start < 1.0); n++) {
        double t0 = bench_now();
        if (!ours(octx)) return 0;
        double t1 = bench_now();
        if (t1 - t0 < *t_ours) *t_ours = t1 - t0;
        if (theirs) {
            theirs(tctx);
            double t2 = bench_now();
            if (t2 - t1 < *t_theirs) *t_theirs = t2 - t1;
        }
    }
    return 1;
}
