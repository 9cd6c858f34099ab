/* `qkv bench`'s parts: the clock (bench_time.c), the ceilings it compares
 * with (bench_ceiling.c, and bench_fma.c: the only instruction-set code
 * outside the library's kernels), the cases and how each is timed
 * (bench_cases.c), the suite and the shapes of the command line
 * (bench_shapes.c), and the command (bench.c). The method is in bench.c. */
#ifndef QKV_BENCH_H
#define QKV_BENCH_H

#include "qkv.h"

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ timing */

/* Seconds on the monotonic clock. */
double bench_now(void);

/* Repeats fn (1 on success) until 3 runs and 0.5 s, after one warm-up:
 * the median run, for what is measured; -1 when fn fails. */
double bench_time_median(int (*fn)(void *), void *ctx);

/* The same repeats: the fastest run, for a ceiling (the best the machine
 * did); -1 when fn fails. */
double bench_time_best(int (*fn)(void *), void *ctx);

/* The fastest run of ours and of theirs (a ceiling), called in turn after
 * one warm-up each, until both 5 runs and 1 s are reached: the same
 * statistic on both sides, and both see the machine in the same moments.
 * theirs may be NULL (no ceiling: *t_theirs is left 0). 0 when ours
 * fails. */
int bench_time_pair(int (*ours)(void *), void *octx, int (*theirs)(void *), void *tctx,
                    double *t_ours, double *t_theirs);

/* ------------------------------------------------------------ ceilings */

typedef void (*bench_sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta,
                               float *c, int ldc);

/* The system BLAS, opened at run time: sgemm NULL when there is none. */
typedef struct blas {
    void *lib;
    bench_sgemm_fn sgemm;
    char name[128];
} blas;

/* The system BLAS if one can be opened, its threads set to `threads`
 * where it has the knob (0: its default): OpenBLAS first, then whatever
 * libblas.so.3 is (Debian's alternatives may make it the slow reference
 * BLAS; the name says so). */
void blas_open(blas *b, int threads);
void blas_close(blas *b);

/* C = op(A) op(B), row-major and contiguous: op(A) is m x k, op(B) k x n,
 * each stored transposed when its flag is set. */
typedef struct gemm_ctx {
    const blas *b;
    int m, n, k;
    int ta, tb;
    float *a, *bm, *c;
    qkv_context *ctx; /* for qkv_sgemm; freed by gemm_free */
} gemm_ctx;

/* The operands of g, filled with small repeating values; 0 when out of
 * memory (gemm_free frees what was allocated). */
int gemm_alloc(gemm_ctx *g);
void gemm_free(gemm_ctx *g);

/* One product by the system BLAS (g->b->sgemm set); returns 1. */
int run_blas_gemm(void *g);

/* GFLOP/s of an (m x k) (n x k)^T SGEMM at its fastest; 0 without a BLAS. */
double sgemm_ceiling(const blas *b, int m, int n, int k);

/* A large memory copy, each thread copying its share. */
typedef struct copy_ctx {
    char *src, *dst;
    size_t n;
    int threads;
} copy_ctx;

/* A 256 MiB copy on `threads` threads (clamped to 1..1024); 0 when out of
 * memory (copy_free frees what was allocated). */
int copy_alloc(copy_ctx *c, int threads);
void copy_free(copy_ctx *c);

/* One copy; returns 1. */
int run_copy(void *c);

/* GB/s of the copy taking t seconds, counting the bytes read and written. */
double copy_gbps_of(const copy_ctx *c, double t);

/* GB/s of a 256 MiB copy on `threads` threads at its fastest. */
double copy_ceiling(int threads);

/* GFLOP/s of `threads` threads running chains of the widest vector FMA
 * this CPU runs (qkv_cpu_runs); 0 when it has none, or where the compiler
 * cannot target one. */
double fma_peak(int threads);

/* The kernel's transparent huge page policy, the bracketed word of
 * /sys/kernel/mm/transparent_hugepage/enabled ("always", "madvise" or
 * "never": qkv_alloc's advice counts for the first two), copied into buf,
 * or "unknown". */
const char *thp_policy(char *buf, size_t size);

/* ------------------------------------------------------------ cases */

typedef struct bench_opts {
    int threads, json, reference, backward;
    qkv_isa isa;
    qkv_dtype dtype; /* attention's inputs and outputs: F32, or F16 / BF16 beside an f32 twin */
    qkv_dtype kv;    /* F32, or attention's K and V (the layer's cache) in Q8_0 / Q4_0 */
} bench_opts;

/* The threads a case runs on (bo->threads, or all CPUs) and the
 * instruction set (bo->isa, or the best here). */
int bench_threads(const bench_opts *bo);
qkv_isa bench_isa(const bench_opts *bo);

/* An attention call: Q (B, H, Lq, E), K and V (B, Hkv, Lk, E). */
typedef struct bcase {
    char name[64];
    int64_t B, H, Hkv, Lq, Lk, E;
    int causal;
} bcase;

/* qkv_sgemm against the system BLAS on C (m x n) = op(A) op(B). */
typedef struct gcase {
    char name[64];
    int64_t m, n, k;
    int ta, tb;
} gcase;

/* The multi-head attention layer. */
typedef struct lcase {
    char name[64];
    int decode; /* 1: a decode step with the cache; 0: a forward */
    int64_t D, H, Hkv, E;
    int64_t len; /* the context (decode) or the sequence (forward) */
} lcase;

/* Each times one case and prints its line (or JSON object); 0 after
 * printing an error. copy_gbps: the copy's ceiling for decode shapes;
 * peak: the FMA peak, 0 for none. */
int bench_attention_case(const bcase *c, const bench_opts *bo, const blas *bl, double copy_gbps,
                         double peak);
int bench_gemm_case(const gcase *c, const bench_opts *bo, const blas *bl, double peak);
int bench_layer_case(const lcase *c, const bench_opts *bo, const blas *bl, double peak);

/* ------------------------------------------------------------ shapes */

/* --shape "B,H,Hkv,Lq,Lk,E[,causal]", --gemm-shape "M,N,K[,OPS]" (OPS one
 * of NN, NT, TN, TT; default NT), --layer-shape "decode|forward,D,H,Hkv,
 * E,LEN": the case, named; 0 when s is not one (the caller says why). */
int parse_shape(const char *s, bcase *c);
int parse_gemm_shape(const char *s, gcase *c);
int parse_layer_shape(const char *s, lcase *c);

/* The fixed suite's cases of each kind, appended after the *n there are
 * (each array has room for 32); quick: the smaller suite of --quick. */
void suite_attention_cases(bcase *cases, int *n, int quick);
void suite_gemm_cases(gcase *cases, int *n, int quick);
void suite_layer_cases(lcase *cases, int *n, int quick);

#endif
