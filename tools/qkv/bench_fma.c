/* The FMA peak, the bench's third ceiling: each thread runs independent
 * chains of vector FMAs, as many as hide the latency; 2 FLOPs per lane
 * per FMA. The one instruction-set code outside the library's kernels;
 * which loop runs is asked of the library's cpuid (qkv_cpu_runs). Only
 * where the compiler can target AVX-512 or AVX2 functions on x86; 0
 * elsewhere. */
#include "bench.h"
#include "cpu/cpuid.h"

#include <pthread.h>
#include <stdlib.h>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
/* Each thread runs chunks of FMA_CHUNK iterations until FMA_SECONDS have
 * passed, so that the measurement takes the same time in a build without
 * optimisation (a sanitizer build) as in a release build. */
#define FMA_CHUNK 1000000
#define FMA_SECONDS 0.2
#define FMA_CHAINS 12
typedef struct fma_run {
    float out;   /* keeps the loop alive */
    long iters;  /* iterations done */
    double secs; /* in this long */
} fma_run;
/* Twelve chains in named variables (an array may live in memory at -O2). */
#define FMA_BODY(T, SET1, FMA, SUM)                                                           \
    T b = SET1(0.999999f), c = SET1(1e-6f);                                                  \
    T a0 = SET1(0), a1 = SET1(1), a2 = SET1(2), a3 = SET1(3), a4 = SET1(4), a5 = SET1(5);   \
    T a6 = SET1(6), a7 = SET1(7), a8 = SET1(8), a9 = SET1(9), a10 = SET1(10), a11 = SET1(11); \
    fma_run *run = arg;                                                                       \
    const double t0 = bench_now();                                                            \
    run->iters = 0;                                                                           \
    do {                                                                                      \
    for (long it = 0; it < FMA_CHUNK; it++) {                                                 \
        a0 = FMA(a0, b, c); a1 = FMA(a1, b, c); a2 = FMA(a2, b, c); a3 = FMA(a3, b, c);       \
        a4 = FMA(a4, b, c); a5 = FMA(a5, b, c); a6 = FMA(a6, b, c); a7 = FMA(a7, b, c);       \
        a8 = FMA(a8, b, c); a9 = FMA(a9, b, c); a10 = FMA(a10, b, c); a11 = FMA(a11, b, c);   \
    }                                                                                         \
    run->iters += FMA_CHUNK;                                                                  \
    } while (bench_now() - t0 < FMA_SECONDS);                                                 \
    run->secs = bench_now() - t0;                                                             \
    T t = a0;                                                                                 \
    t = SUM(t, a1); t = SUM(t, a2); t = SUM(t, a3); t = SUM(t, a4); t = SUM(t, a5);          \
    t = SUM(t, a6); t = SUM(t, a7); t = SUM(t, a8); t = SUM(t, a9); t = SUM(t, a10);         \
    t = SUM(t, a11);

__attribute__((target("avx512f"))) static void *fma_loop_avx512(void *arg)
{
    FMA_BODY(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps)
    run->out = _mm512_reduce_add_ps(t);
    return NULL;
}
__attribute__((target("avx2,fma"))) static void *fma_loop_avx2(void *arg)
{
    FMA_BODY(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps)
    float lanes[8];
    _mm256_storeu_ps(lanes, t);
    run->out = lanes[0];
    return NULL;
}

/* GFLOP/s of `threads` threads running the loop of the widest FMA the CPU
 * has; 0 when it has none. */
double fma_peak(int threads)
{
    void *(*loop)(void *) = NULL;
    int lanes = 0;
    if (qkv_cpu_runs(QKV_ISA_AVX512)) {
        loop = fma_loop_avx512;
        lanes = 16;
    } else if (qkv_cpu_runs(QKV_ISA_AVX2)) { /* AVX2 and FMA */
        loop = fma_loop_avx2;
        lanes = 8;
    }
    if (!loop || threads < 1 || threads > 1024) return 0;
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    fma_run *runs = calloc((size_t)threads, sizeof *runs);
    int *started = calloc((size_t)threads, sizeof *started);
    double gf = 0;
    if (t && runs && started) {
        for (int i = 1; i < threads; i++)
            started[i] = pthread_create(&t[i], NULL, loop, &runs[i]) == 0;
        loop(&runs[0]);
        started[0] = 1;
        for (int i = 1; i < threads; i++)
            if (started[i]) pthread_join(t[i], NULL);
        /* The threads ran side by side: their rates add up. */
        for (int i = 0; i < threads; i++)
            if (started[i] && runs[i].secs > 0)
                gf += 2.0 * lanes * FMA_CHAINS * (double)runs[i].iters / runs[i].secs / 1e9;
    }
    free(t);
    free(runs);
    free(started);
    return gf;
}
#else
double fma_peak(int threads)
{
    (void)threads;
    return 0;
}
#endif
