/* `qkv bench`: the speed of forward attention as a ratio to a ceiling
 * measured in the same process. Compute-bound cases are compared with an
 * SGEMM from the system BLAS (found at run time with dlopen, so the tool
 * never depends on one) and with the FMA peak of the threads used;
 * decode-shaped cases, bound by reading K and V once, with the bandwidth
 * of a large memory copy. Method: one warm-up call, then repeated calls
 * until both 3 runs and 0.5 s are reached; the median time counts for
 * attention, the fastest run for a ceiling (the best the machine did).
 * The GEMM and layer cases time ours and the ceiling (the system BLAS's
 * same product, an SGEMM of the projections' size, or the copy) called in
 * turn, and count each one's fastest run: the same statistic on both
 * sides, measured in the same moments of a noisy machine. */
#define _XOPEN_SOURCE 700 /* clock_gettime, strdup */
#include "cli.h"
#include "commands.h"

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char bench_usage[] =
    "usage: qkv bench [options]\n"
    "\n"
    "Times forward attention and prints, for each case, the time, GFLOP/s and\n"
    "the ratio to a ceiling measured in the same run: an SGEMM of the system\n"
    "BLAS (M = N = min(L, 2048), K = E; none without a BLAS) for compute-bound\n"
    "cases, also shown as a fraction of the FMA peak of the threads used, and\n"
    "a large memory copy on as many threads for decode (Lq = 1). FLOPs are\n"
    "4*B*H*Lq*Lk*E, halved for causal self-attention; decode moves K and V once.\n"
    "Every buffer, timed or ceiling, comes from qkv_alloc: 2 MiB huge pages\n"
    "where Linux grants them (the header says the THP policy).\n"
    "\n"
    "The fixed suite: H=16, L=Lq=Lk in {1024, 4096}, E=Ev in {64, 128}, causal\n"
    "and not; decode Lq=1, Lk in {4096, 65536}, H=32, Hkv=8, E=128; then qkv's\n"
    "own SGEMM against the system BLAS's on the layer projection shape\n"
    "(4096 x 1024) x (1024 x 1024): NT (y = x W^T), NN and TN (dW = dY^T X),\n"
    "FLOPs 2*M*N*K, each side's fastest run counted, the two called in turn;\n"
    "then the multi-head attention layer: a decode step with the KV cache\n"
    "(B=1, H=32, Hkv=8, E=128, D=4096, context 4096 and 32768; the bytes of\n"
    "the four projection weights and the cached K and V read once, against\n"
    "the copy, and tokens per second) and a causal layer forward (L=D=2048,\n"
    "H=16; projections and attention FLOPs against an SGEMM of L x D x D).\n"
    "\n"
    "options:\n"
    "  --shape B,H,Hkv,Lq,Lk,E[,causal]   time this shape instead (repeatable);\n"
    "                     the last item is 0, 1 or the word causal\n"
    "  --gemm             the SGEMM cases only\n"
    "  --layer            the layer cases only\n"
    "  --layer-shape KIND,D,H,Hkv,E,LEN   time this layer case instead\n"
    "                     (repeatable): KIND decode (LEN = the context) or\n"
    "                     forward (LEN = the sequence, causal)\n"
    "  --gemm-shape M,N,K[,OPS]   time this SGEMM instead (repeatable); OPS is\n"
    "                     NN, NT (the default), TN or TT: whether A and B are\n"
    "                     transposed\n"
    "  --quick            the suite at L = 1024 and Lk = 4096 only, SGEMM NT only,\n"
    "                     the layer at context 4096 and L = D = 1024\n"
    "  --threads N        worker threads (default: all CPUs)\n"
    "  --isa NAME         generic, avx2 or avx512 (default: the best here)\n"
    "  --backward         time the forward and the backward together (FLOPs:\n"
    "                     3.5 times the forward's)\n"
    "  --reference        time the reference kernel instead\n"
    "  --json             one JSON object per case and line, nothing else\n"
    "  -h, --help         show this help\n";

typedef struct bcase {
    char name[64];
    int64_t B, H, Hkv, Lq, Lk, E;
    int causal;
} bcase;

static double now(void)
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

/* Repeats fn until 3 runs and 0.5 s, after one warm-up: the median (for
 * what is measured) and, through *best, the fastest run (for a ceiling:
 * the best the machine did). */
static double time_runs(int (*fn)(void *), void *ctx, double *best)
{
    if (!fn(ctx)) return -1;
    double t[64];
    int n = 0;
    double start = now();
    while (n < 64 && (n < 3 || now() - start < 0.5)) {
        double t0 = now();
        if (!fn(ctx)) return -1;
        t[n++] = now() - t0;
    }
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    if (best) *best = t[0];
    return t[n / 2];
}

static double time_median(int (*fn)(void *), void *ctx) { return time_runs(fn, ctx, NULL); }

static double time_best(int (*fn)(void *), void *ctx)
{
    double best = -1;
    return time_runs(fn, ctx, &best) < 0 ? -1 : best;
}

/* ------------------------------------------------------------ ceilings */

typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);

typedef struct blas {
    void *lib;
    sgemm_fn sgemm;
    char name[128];
} blas;

/* The system BLAS if one can be opened: OpenBLAS first, then whatever
 * libblas.so.3 is (Debian's alternatives may make it the slow reference
 * BLAS; the name says so). */
static void blas_open(blas *b, int threads)
{
    static const char *libs[] = {"libopenblas.so.0", "libopenblas.so", "libblas.so.3"};
    memset(b, 0, sizeof *b);
    for (size_t i = 0; i < sizeof libs / sizeof libs[0] && !b->sgemm; i++) {
        void *h = dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        sgemm_fn f;
        *(void **)&f = dlsym(h, "cblas_sgemm");
        if (!f) {
            dlclose(h);
            continue;
        }
        void (*set_threads)(int);
        *(void **)&set_threads = dlsym(h, "openblas_set_num_threads");
        if (set_threads) set_threads(threads);
        char *(*config)(void);
        *(void **)&config = dlsym(h, "openblas_get_config");
        snprintf(b->name, sizeof b->name, "%s%s%s", libs[i], config ? " " : "",
                 config ? config() : "");
        b->lib = h;
        b->sgemm = f;
    }
}

/* C = op(A) op(B), row-major and contiguous: op(A) is m x k, op(B) k x n,
 * each stored transposed when its flag is set. */
typedef struct gemm_ctx {
    const blas *b;
    int m, n, k;
    int ta, tb;
    float *a, *bm, *c;
    qkv_gemm_options opt; /* for qkv_sgemm */
} gemm_ctx;

static int run_gemm(void *vctx)
{
    gemm_ctx *g = vctx;
    /* CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112. */
    g->b->sgemm(101, g->ta ? 112 : 111, g->tb ? 112 : 111, g->m, g->n, g->k, 1.0f, g->a,
                g->ta ? g->m : g->k, g->bm, g->tb ? g->k : g->n, 0.0f, g->c, g->n);
    return 1;
}

static int run_qkv_gemm(void *vctx)
{
    gemm_ctx *g = vctx;
    return qkv_sgemm(g->ta ? QKV_TRANS : QKV_NO_TRANS, g->tb ? QKV_TRANS : QKV_NO_TRANS, g->m,
                     g->n, g->k, 1.0f, g->a, g->ta ? g->m : g->k, g->bm, g->tb ? g->k : g->n,
                     0.0f, g->c, g->n, &g->opt) == QKV_OK;
}

/* The operands of g, filled with small repeating values; 0 when out of
 * memory. */
static int gemm_alloc(gemm_ctx *g)
{
    const size_t m = (size_t)g->m, n = (size_t)g->n, k = (size_t)g->k;
    g->a = qkv_alloc(m * k * sizeof(float));
    g->bm = qkv_alloc(n * k * sizeof(float));
    g->c = qkv_alloc(m * n * sizeof(float));
    if (!g->a || !g->bm || !g->c) return 0;
    for (size_t i = 0; i < m * k; i++) g->a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < n * k; i++) g->bm[i] = (float)(i % 5) * 0.1f;
    return 1;
}

static void gemm_free(gemm_ctx *g)
{
    qkv_free(g->a);
    qkv_free(g->bm);
    qkv_free(g->c);
}

/* GFLOP/s of an (m x k) (n x k)^T SGEMM; 0 without a BLAS. */
static double sgemm_ceiling(const blas *b, int m, int n, int k)
{
    if (!b->sgemm) return 0;
    gemm_ctx g = {b, m, n, k, 0, 1, NULL, NULL, NULL, {QKV_ISA_AUTO, 0}};
    double gf = 0;
    if (gemm_alloc(&g)) {
        double t = time_best(run_gemm, &g);
        if (t > 0) gf = 2.0 * m * n * k / t / 1e9;
    }
    gemm_free(&g);
    return gf;
}

/* The kernel's transparent huge page policy, the bracketed word of
 * /sys/kernel/mm/transparent_hugepage/enabled ("always", "madvise" or
 * "never": qkv_alloc's advice counts for the first two), or "unknown". */
static const char *thp_policy(char *buf, size_t size)
{
    char line[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        if (!fgets(line, sizeof line, f)) line[0] = '\0';
        fclose(f);
    }
    const char *open = strchr(line, '['), *close = open ? strchr(open, ']') : NULL;
    if (!close || (size_t)(close - open - 1) >= size) return "unknown";
    memcpy(buf, open + 1, (size_t)(close - open - 1));
    buf[close - open - 1] = '\0';
    return buf;
}

typedef struct copy_ctx {
    char *src, *dst;
    size_t n;
    int threads;
} copy_ctx;

typedef struct copy_slice {
    const copy_ctx *c;
    int t;
} copy_slice;

static void *copy_one(void *arg)
{
    const copy_slice *s = arg;
    const size_t from = s->c->n / (size_t)s->c->threads * (size_t)s->t;
    const size_t to = s->t + 1 == s->c->threads ? s->c->n : from + s->c->n / (size_t)s->c->threads;
    memcpy(s->c->dst + from, s->c->src + from, to - from);
    return NULL;
}

/* Each thread copies its share of the buffer, as attention's threads each
 * read their share of K and V. */
static int run_copy(void *vctx)
{
    copy_ctx *c = vctx;
    pthread_t th[1024];
    copy_slice sl[1024];
    int started[1024] = {0};
    for (int t = 0; t < c->threads; t++) sl[t] = (copy_slice){c, t};
    for (int t = 1; t < c->threads; t++)
        started[t] = pthread_create(&th[t], NULL, copy_one, &sl[t]) == 0;
    copy_one(&sl[0]);
    for (int t = 1; t < c->threads; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            copy_one(&sl[t]);
    }
    return 1;
}

/* A 256 MiB copy on `threads` threads; 0 when out of memory. */
static int copy_alloc(copy_ctx *c, int threads)
{
    *c = (copy_ctx){NULL, NULL, (size_t)256 << 20,
                    threads < 1 ? 1 : threads > 1024 ? 1024 : threads};
    c->src = qkv_alloc(c->n);
    c->dst = qkv_alloc(c->n);
    if (!c->src || !c->dst) return 0;
    memset(c->src, 1, c->n);
    memset(c->dst, 2, c->n);
    return 1;
}

static void copy_free(copy_ctx *c)
{
    qkv_free(c->src);
    qkv_free(c->dst);
}

/* GB/s of the copy taking t seconds, counting the bytes read and written. */
static double copy_gbps_of(const copy_ctx *c, double t) { return 2.0 * (double)c->n / t / 1e9; }

/* GB/s of a 256 MiB memcpy on `threads` threads at its fastest. */
static double copy_ceiling(int threads)
{
    copy_ctx c;
    double gbps = 0;
    if (copy_alloc(&c, threads)) {
        double t = time_best(run_copy, &c);
        if (t > 0) gbps = copy_gbps_of(&c, t);
    }
    copy_free(&c);
    return gbps;
}

/* The FMA peak: each thread runs independent chains of vector FMAs, as
 * many as hide the latency; 2 FLOPs per lane per FMA. Only where the
 * compiler can target AVX-512 or AVX2 functions on x86; 0 elsewhere. */
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
    const double t0 = now();                                                                  \
    run->iters = 0;                                                                           \
    do {                                                                                      \
    for (long it = 0; it < FMA_CHUNK; it++) {                                                 \
        a0 = FMA(a0, b, c); a1 = FMA(a1, b, c); a2 = FMA(a2, b, c); a3 = FMA(a3, b, c);       \
        a4 = FMA(a4, b, c); a5 = FMA(a5, b, c); a6 = FMA(a6, b, c); a7 = FMA(a7, b, c);       \
        a8 = FMA(a8, b, c); a9 = FMA(a9, b, c); a10 = FMA(a10, b, c); a11 = FMA(a11, b, c);   \
    }                                                                                         \
    run->iters += FMA_CHUNK;                                                                  \
    } while (now() - t0 < FMA_SECONDS);                                                       \
    run->secs = now() - t0;                                                                   \
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
static double fma_peak(int threads)
{
    __builtin_cpu_init();
    void *(*loop)(void *) = NULL;
    int lanes = 0;
    if (__builtin_cpu_supports("avx512f")) {
        loop = fma_loop_avx512;
        lanes = 16;
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
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
static double fma_peak(int threads)
{
    (void)threads;
    return 0;
}
#endif

/* ------------------------------------------------------------ attention */

typedef struct attn_ctx {
    qkv_tensor q, k, v, o;
    qkv_tensor lse, dout, dq, dk, dv; /* with --backward */
    int backward;
    qkv_attn_options opt;
} attn_ctx;

/* One timed step: the forward, or the forward (with lse) and the backward. */
static int run_attn(void *vctx)
{
    attn_ctx *a = vctx;
    if (!a->backward)
        return qkv_attention_forward(&a->o, NULL, NULL, &a->q, &a->k, &a->v, &a->opt) == QKV_OK;
    return qkv_attention_forward(&a->o, NULL, &a->lse, &a->q, &a->k, &a->v, &a->opt) == QKV_OK &&
           qkv_attention_backward(&a->dq, &a->dk, &a->dv, NULL, &a->dout, &a->q, &a->k, &a->v,
                                  &a->o, &a->lse, &a->opt) == QKV_OK;
}

static float *random_floats(int64_t n, uint64_t seed)
{
    float *x = qkv_alloc((size_t)n * sizeof *x);
    if (!x) return NULL;
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        x[i] = (float)((s * 0x2545F4914F6CDD1Dull) >> 40) / 8388608.0f - 1.0f;
    }
    return x;
}

typedef struct bench_opts {
    int threads, json, reference, backward;
    qkv_isa isa;
} bench_opts;

static int bench_case(const bcase *c, const bench_opts *bo, const blas *bl, double copy_gbps,
                      double peak)
{
    const int64_t nq = c->B * c->H * c->Lq * c->E, nk = c->B * c->Hkv * c->Lk * c->E;
    attn_ctx a;
    memset(&a, 0, sizeof a);
    float *q = random_floats(nq, 1), *k = random_floats(nk, 2), *v = random_floats(nk, 3);
    float *o = qkv_alloc((size_t)nq * sizeof *o);
    float *grads = NULL; /* --backward: lse, dO, dQ, dK, dV in one block */
    const int64_t nl = c->B * c->H * c->Lq;
    int ok = 0;
    if (bo->backward) grads = random_floats(nl + 2 * nq + 2 * nk, 4);
    if (!q || !k || !v || !o || (bo->backward && !grads)) {
        cli_error("bench", "%s: cannot allocate the inputs", c->name);
        goto done;
    }
    if (bo->backward) {
        a.backward = 1;
        a.lse = qkv_tensor_contiguous(grads, QKV_DTYPE_F32, c->B, c->H, c->Lq, 1);
        a.dout = qkv_tensor_contiguous(grads + nl, QKV_DTYPE_F32, c->B, c->H, c->Lq, c->E);
        a.dq = qkv_tensor_contiguous(grads + nl + nq, QKV_DTYPE_F32, c->B, c->H, c->Lq, c->E);
        a.dk = qkv_tensor_contiguous(grads + nl + 2 * nq, QKV_DTYPE_F32, c->B, c->Hkv, c->Lk, c->E);
        a.dv = qkv_tensor_contiguous(grads + nl + 2 * nq + nk, QKV_DTYPE_F32, c->B, c->Hkv, c->Lk,
                                     c->E);
    }
    a.q = qkv_tensor_contiguous(q, QKV_DTYPE_F32, c->B, c->H, c->Lq, c->E);
    a.k = qkv_tensor_contiguous(k, QKV_DTYPE_F32, c->B, c->Hkv, c->Lk, c->E);
    a.v = qkv_tensor_contiguous(v, QKV_DTYPE_F32, c->B, c->Hkv, c->Lk, c->E);
    a.o = qkv_tensor_contiguous(o, QKV_DTYPE_F32, c->B, c->H, c->Lq, c->E);
    a.opt.causal = c->causal;
    a.opt.align = QKV_ALIGN_BOTTOM_RIGHT;
    a.opt.num_threads = bo->threads;
    a.opt.isa = bo->isa;
    a.opt.impl = bo->reference ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO;
    cli_progress prog;
    cli_progress_init(&prog, "bench", c->name);
    a.opt.progress = cli_progress_update;
    a.opt.progress_user = &prog;
    double t = time_median(run_attn, &a);
    cli_progress_done(&prog);
    if (t < 0) {
        cli_error("bench", "%s: %s", c->name, qkv_error_detail());
        goto done;
    }
    const int decode = c->Lq == 1;
    double flops = 4.0 * (double)c->B * (double)c->H * (double)c->Lq * (double)c->Lk * (double)c->E;
    if (c->causal && c->Lq == c->Lk) flops /= 2;
    if (bo->backward) flops *= 3.5; /* the forward, and the backward counted as 2.5 of it */
    const double gflops = flops / t / 1e9;
    const double bytes = 2.0 * (double)nk * sizeof(float); /* K and V, read once */
    const double gbps = bytes / t / 1e9;
    double ceiling, ratio;
    if (decode) {
        ceiling = copy_gbps;
        ratio = ceiling > 0 ? gbps / ceiling : NAN;
    } else {
        int64_t side = c->Lq < 2048 ? c->Lq : 2048;
        ceiling = sgemm_ceiling(bl, (int)side, (int)side, (int)c->E);
        ratio = ceiling > 0 ? gflops / ceiling : NAN;
    }
    const int threads = bo->threads ? bo->threads : qkv_default_num_threads();
    if (bo->json) {
        printf("{\"name\": \"%s\", \"B\": %lld, \"H\": %lld, \"Hkv\": %lld, \"Lq\": %lld, "
               "\"Lk\": %lld, \"E\": %lld, \"causal\": %s, \"backward\": %s, \"threads\": %d, "
               "\"impl\": \"%s\", "
               "\"seconds\": %.6g, \"gflops\": %.4g, ",
               c->name, (long long)c->B, (long long)c->H, (long long)c->Hkv, (long long)c->Lq,
               (long long)c->Lk, (long long)c->E, c->causal ? "true" : "false",
               bo->backward ? "true" : "false", threads,
               bo->reference ? "reference" : qkv_isa_name(bo->isa ? bo->isa : qkv_isa_auto()),
               t, gflops);
        if (peak > 0) printf("\"fma_peak_gflops\": %.4g, \"of_fma_peak\": %.4f, ", peak, gflops / peak);
        if (decode)
            printf("\"gbps\": %.4g, \"ceiling_gbps\": %.4g, \"ceiling\": \"memcpy 256 MiB, read+write\", ",
                   gbps, ceiling);
        else
            printf("\"ceiling_gflops\": %.4g, \"ceiling\": \"%s\", ", ceiling,
                   bl->sgemm ? "sgemm" : "none");
        if (isnan(ratio))
            printf("\"ratio\": null}\n");
        else
            printf("\"ratio\": %.4f}\n", ratio);
    } else {
        printf("%-24s %9.4f s %8.1f GFLOP/s", c->name, t, gflops);
        if (decode)
            printf(" %7.1f GB/s   copy %6.1f GB/s", gbps, ceiling);
        else if (ceiling > 0)
            printf("   sgemm %6.1f GFLOP/s", ceiling);
        else
            printf("   (no BLAS: no ceiling)");
        if (!isnan(ratio)) printf("   ratio %.3f", ratio);
        if (peak > 0 && !decode) printf("   %.2f of FMA peak", gflops / peak);
        printf("\n");
    }
    fflush(stdout);
    ok = 1;
done:
    qkv_free(q);
    qkv_free(k);
    qkv_free(v);
    qkv_free(o);
    qkv_free(grads);
    return ok;
}

/* ------------------------------------------------------------ SGEMM */

typedef struct gcase {
    char name[64];
    int64_t m, n, k;
    int ta, tb;
} gcase;

/* The fastest run of ours and of theirs (a ceiling), called in turn after
 * one warm-up each, until both 5 runs and 1 s are reached: the same
 * statistic on both sides, and both see the machine in the same moments.
 * theirs may be NULL (no ceiling: *t_theirs is left 0). 0 when ours
 * fails. */
static int time_pair(int (*ours)(void *), void *octx, int (*theirs)(void *), void *tctx,
                     double *t_ours, double *t_theirs)
{
    if (!ours(octx)) return 0;
    if (theirs) theirs(tctx);
    *t_ours = INFINITY;
    *t_theirs = theirs ? INFINITY : 0;
    const double start = now();
    for (int n = 0; n < 64 && (n < 5 || now() - start < 1.0); n++) {
        double t0 = now();
        if (!ours(octx)) return 0;
        double t1 = now();
        if (t1 - t0 < *t_ours) *t_ours = t1 - t0;
        if (theirs) {
            theirs(tctx);
            double t2 = now();
            if (t2 - t1 < *t_theirs) *t_theirs = t2 - t1;
        }
    }
    return 1;
}

/* The end of a compute-bound case's JSON object, after its own fields:
 * the FMA peak, the SGEMM ceiling and the ratio. */
static void json_gflops_tail(double gflops, double peak, double ceiling, int have_blas,
                             double ratio)
{
    if (peak > 0) printf("\"fma_peak_gflops\": %.4g, \"of_fma_peak\": %.4f, ", peak, gflops / peak);
    printf("\"ceiling_gflops\": %.4g, \"ceiling\": \"%s\", ", ceiling, have_blas ? "sgemm" : "none");
    if (isnan(ratio))
        printf("\"ratio\": null}\n");
    else
        printf("\"ratio\": %.4f}\n", ratio);
}

/* A compute-bound case's line of text. */
static void text_gflops_line(const char *name, double t, double gflops, double peak,
                             double ceiling, double ratio)
{
    printf("%-24s %9.4f s %8.1f GFLOP/s", name, t, gflops);
    if (ceiling > 0)
        printf("   sgemm %6.1f GFLOP/s   ratio %.3f", ceiling, ratio);
    else
        printf("   (no BLAS: no ceiling)");
    if (peak > 0) printf("   %.2f of FMA peak", gflops / peak);
    printf("\n");
}

static int bench_gemm_case(const gcase *c, const bench_opts *bo, const blas *bl, double peak)
{
    gemm_ctx g = {bl, (int)c->m, (int)c->n, (int)c->k, c->ta, c->tb, NULL, NULL, NULL,
                  {QKV_ISA_AUTO, bo->threads}};
    /* Our kernel even where AUTO would mean the system BLAS (QKV_BLAS=ON). */
    g.opt.isa = bo->isa ? bo->isa : qkv_isa_auto();
    int ok = 0;
    double t, tb;
    if (!gemm_alloc(&g)) {
        cli_error("bench", "%s: cannot allocate the matrices", c->name);
    } else if (!time_pair(run_qkv_gemm, &g, g.b->sgemm ? run_gemm : NULL, &g, &t, &tb)) {
        cli_error("bench", "%s: %s", c->name, qkv_error_detail());
    } else {
        const double flops = 2.0 * (double)c->m * (double)c->n * (double)c->k;
        const double gflops = flops / t / 1e9, ceiling = tb > 0 ? flops / tb / 1e9 : 0;
        const double ratio = ceiling > 0 ? gflops / ceiling : NAN;
        const int threads = bo->threads ? bo->threads : qkv_default_num_threads();
        const char ops[3] = {c->ta ? 'T' : 'N', c->tb ? 'T' : 'N', '\0'};
        if (bo->json) {
            printf("{\"name\": \"%s\", \"kind\": \"gemm\", \"M\": %lld, \"N\": %lld, "
                   "\"K\": %lld, \"ops\": \"%s\", \"threads\": %d, \"impl\": \"%s\", "
                   "\"seconds\": %.6g, \"gflops\": %.4g, ",
                   c->name, (long long)c->m, (long long)c->n, (long long)c->k, ops, threads,
                   qkv_isa_name(g.opt.isa), t, gflops);
            json_gflops_tail(gflops, peak, ceiling, bl->sgemm != NULL, ratio);
        } else {
            text_gflops_line(c->name, t, gflops, peak, ceiling, ratio);
        }
        fflush(stdout);
        ok = 1;
    }
    gemm_free(&g);
    return ok;
}

/* ------------------------------------------------------------ the layer */

typedef struct lcase {
    char name[64];
    int decode;          /* 1: a decode step with the cache; 0: a forward */
    int64_t D, H, Hkv, E;
    int64_t len;         /* the context (decode) or the sequence (forward) */
} lcase;

typedef struct layer_ctx {
    qkv_mha *m;
    qkv_kv_cache *cache;
    float *x, *y;
    int64_t len;
    qkv_attn_options opt;
} layer_ctx;

/* One decode step, then the cache cut back to its context. */
static int run_layer_decode(void *vctx)
{
    layer_ctx *l = vctx;
    return qkv_mha_decode(l->m, l->cache, l->y, NULL, l->x, 1, &l->opt) == QKV_OK &&
           qkv_kv_cache_truncate(l->cache, 0, l->len) == QKV_OK;
}

static int run_layer_forward(void *vctx)
{
    layer_ctx *l = vctx;
    return qkv_mha_forward(l->m, l->y, NULL, l->x, 1, l->len, NULL, l->len, &l->opt) == QKV_OK;
}

/* A layer with random parameters and, for decode, a cache holding `len`
 * tokens of random keys and values (appended in pieces). */
static int layer_setup(const lcase *c, layer_ctx *l)
{
    qkv_mha_config cfg = {.d_model = c->D, .heads = c->H, .kv_heads = c->Hkv, .head_dim = c->E,
                          .rope = QKV_ROPE_HALF};
    if (qkv_mha_create(&l->m, &cfg) != QKV_OK) return 0;
    for (int i = 0; i < QKV_MHA_NUM_PARAMS; i++) {
        int64_t rows, cols;
        float *p = qkv_mha_param_data(l->m, (qkv_mha_param)i, &rows, &cols);
        float *r = p ? random_floats(rows * cols, 10 + (uint64_t)i) : NULL;
        if (p && !r) return 0;
        for (int64_t j = 0; p && j < rows * cols; j++) p[j] = r[j] / sqrtf((float)cols);
        qkv_free(r);
    }
    const int64_t rows = c->decode ? 1 : c->len;
    l->x = random_floats(rows * c->D, 20);
    l->y = qkv_alloc((size_t)(rows * c->D) * sizeof(float));
    if (!l->x || !l->y) return 0;
    if (!c->decode) return 1;
    if (qkv_kv_cache_create(&l->cache, l->m, 1, c->len + 1) != QKV_OK) return 0;
    const int64_t piece = 512;
    float *kv = random_floats(2 * piece * c->Hkv * c->E, 21);
    int ok = kv != NULL;
    for (int64_t t = 0; ok && t < c->len; t += piece) {
        const int64_t n = c->len - t < piece ? c->len - t : piece;
        ok = qkv_kv_cache_append(l->cache, 0, kv, kv + piece * c->Hkv * c->E, n) == QKV_OK;
    }
    qkv_free(kv);
    return ok;
}

/* The layer's fastest run against its ceiling's, called in turn
 * (time_pair): a copy for decode, an SGEMM of the projections' size for
 * the forward. */
static int bench_layer_case(const lcase *c, const bench_opts *bo, const blas *bl, double peak)
{
    layer_ctx l;
    memset(&l, 0, sizeof l);
    copy_ctx cp = {NULL, NULL, 0, 1};
    gemm_ctx g = {bl, (int)c->len, (int)c->D, (int)c->D, 0, 1, NULL, NULL, NULL, {QKV_ISA_AUTO, 0}};
    const int nthreads = bo->threads ? bo->threads : qkv_default_num_threads();
    double tc = 0;
    l.len = c->len;
    l.opt.num_threads = bo->threads;
    l.opt.isa = bo->isa;
    l.opt.causal = 1;
    int ok = 0;
    double t = -1;
    if (!layer_setup(c, &l)) {
        cli_error("bench", "%s: %s", c->name,
                  *qkv_error_detail() ? qkv_error_detail() : "cannot allocate the layer");
        goto done;
    }
    if (c->decode ? !copy_alloc(&cp, nthreads) : bl->sgemm && !gemm_alloc(&g)) {
        cli_error("bench", "%s: cannot allocate the ceiling's buffers", c->name);
        goto done;
    }
    if (!(c->decode ? time_pair(run_layer_decode, &l, run_copy, &cp, &t, &tc)
                    : time_pair(run_layer_forward, &l, bl->sgemm ? run_gemm : NULL, &g, &t, &tc))) {
        cli_error("bench", "%s: %s", c->name, qkv_error_detail());
        goto done;
    }
    const double D = (double)c->D, qw = (double)(c->H * c->E), kw = (double)(c->Hkv * c->E);
    const double weights = D * (2 * qw + 2 * kw); /* Wq, Wk, Wv, Wo */
    const int threads = nthreads;
    if (c->decode) {
        const double copy_gbps = tc > 0 ? copy_gbps_of(&cp, tc) : 0;
        const double bytes = sizeof(float) * (weights + 2.0 * kw * (double)(c->len + 1));
        const double gbps = bytes / t / 1e9, ratio = copy_gbps > 0 ? gbps / copy_gbps : NAN;
        if (bo->json) {
            printf("{\"name\": \"%s\", \"kind\": \"mha_decode\", \"B\": 1, \"D\": %lld, "
                   "\"H\": %lld, \"Hkv\": %lld, \"E\": %lld, \"context\": %lld, \"threads\": %d, "
                   "\"impl\": \"%s\", \"seconds\": %.6g, \"tokens_per_s\": %.4g, \"gbps\": %.4g, "
                   "\"ceiling_gbps\": %.4g, \"ceiling\": \"memcpy 256 MiB, read+write\", ",
                   c->name, (long long)c->D, (long long)c->H, (long long)c->Hkv, (long long)c->E,
                   (long long)c->len, threads, qkv_isa_name(bo->isa ? bo->isa : qkv_isa_auto()),
                   t, 1.0 / t, gbps, copy_gbps);
            if (isnan(ratio))
                printf("\"ratio\": null}\n");
            else
                printf("\"ratio\": %.4f}\n", ratio);
        } else {
            printf("%-24s %9.4f s %8.1f tokens/s %6.1f GB/s   copy %6.1f GB/s", c->name, t,
                   1.0 / t, gbps, copy_gbps);
            if (!isnan(ratio)) printf("   ratio %.3f", ratio);
            printf("\n");
        }
    } else {
        const double L = (double)c->len;
        const double flops = 2.0 * L * weights + 2.0 * (double)c->H * L * L * (double)c->E;
        const double gflops = flops / t / 1e9;
        const double ceiling = tc > 0 ? 2.0 * L * D * D / tc / 1e9 : 0;
        const double ratio = ceiling > 0 ? gflops / ceiling : NAN;
        if (bo->json) {
            printf("{\"name\": \"%s\", \"kind\": \"mha_forward\", \"B\": 1, \"L\": %lld, "
                   "\"D\": %lld, \"H\": %lld, \"Hkv\": %lld, \"E\": %lld, \"causal\": true, "
                   "\"threads\": %d, \"impl\": \"%s\", \"seconds\": %.6g, \"gflops\": %.4g, ",
                   c->name, (long long)c->len, (long long)c->D, (long long)c->H,
                   (long long)c->Hkv, (long long)c->E, threads,
                   qkv_isa_name(bo->isa ? bo->isa : qkv_isa_auto()), t, gflops);
            json_gflops_tail(gflops, peak, ceiling, bl->sgemm != NULL, ratio);
        } else {
            text_gflops_line(c->name, t, gflops, peak, ceiling, ratio);
        }
    }
    fflush(stdout);
    ok = 1;
done:
    copy_free(&cp);
    gemm_free(&g);
    qkv_kv_cache_free(l.cache);
    qkv_mha_free(l.m);
    qkv_free(l.x);
    qkv_free(l.y);
    return ok;
}

static void gemm_name(gcase *c)
{
    snprintf(c->name, sizeof c->name, "gemm %c%c %lldx%lldx%lld", c->ta ? 'T' : 'N',
             c->tb ? 'T' : 'N', (long long)c->m, (long long)c->n, (long long)c->k);
}

/* "M,N,K[,OPS]", OPS one of NN, NT, TN, TT (default NT). */
static int parse_gemm_shape(const char *s, gcase *c)
{
    int64_t x[3] = {0, 0, 0};
    int n = 0, ta = 0, tb = 1;
    char *copy = strdup(s), *save = NULL;
    if (!copy) return 0;
    for (char *t = strtok_r(copy, ",", &save); t && n < 5; t = strtok_r(NULL, ",", &save), n++) {
        if (n == 3 && strlen(t) == 2 && strchr("NT", t[0]) && strchr("NT", t[1])) {
            ta = t[0] == 'T';
            tb = t[1] == 'T';
        } else if (n >= 3 || !cli_parse_int64(t, &x[n])) {
            n = 99;
        }
    }
    free(copy);
    if (n != 3 && n != 4) return 0;
    /* The BLAS takes int sizes; each matrix at most 2^31 floats (8 GiB). */
    for (int i = 0; i < 3; i++)
        if (x[i] < 1 || x[i] > (INT64_C(1) << 24)) return 0;
    if (x[0] * x[2] > (INT64_C(1) << 31) || x[1] * x[2] > (INT64_C(1) << 31) ||
        x[0] * x[1] > (INT64_C(1) << 31))
        return 0;
    *c = (gcase){"", x[0], x[1], x[2], ta, tb};
    gemm_name(c);
    return 1;
}

/* "decode|forward,D,H,Hkv,E,LEN" */
static int parse_layer_shape(const char *s, lcase *c)
{
    int64_t x[5] = {0, 0, 0, 0, 0};
    int n = 0, decode = -1;
    char *copy = strdup(s), *save = NULL;
    if (!copy) return 0;
    for (char *t = strtok_r(copy, ",", &save); t && n < 7; t = strtok_r(NULL, ",", &save), n++) {
        if (n == 0)
            decode = strcmp(t, "decode") == 0 ? 1 : strcmp(t, "forward") == 0 ? 0 : -1;
        else if (n > 5 || !cli_parse_int64(t, &x[n - 1]))
            n = 99;
    }
    free(copy);
    if (n != 6 || decode < 0) return 0;
    for (int i = 0; i < 5; i++)
        if (x[i] < 1 || x[i] > (INT64_C(1) << 20)) return 0;
    if (x[1] % x[2] != 0 || x[3] % 2 != 0) return 0; /* RoPE rotates pairs: E even */
    /* Every weight, the cache and the activations at most 2^31 floats. */
    const int64_t lim = INT64_C(1) << 31;
    if (x[0] * x[1] * x[3] > lim || x[4] * x[0] > lim || x[4] * x[1] * x[3] > lim ||
        2 * x[4] * x[2] * x[3] > lim)
        return 0;
    *c = (lcase){"", decode, x[0], x[1], x[2], x[3], x[4]};
    snprintf(c->name, sizeof c->name, "mha %s D%lld H%lld/%lld E%lld %s%lld",
             decode ? "decode" : "forward", (long long)x[0], (long long)x[1], (long long)x[2],
             (long long)x[3], decode ? "ctx" : "L", (long long)x[4]);
    return 1;
}

/* "B,H,Hkv,Lq,Lk,E[,causal]" */
static int parse_shape(const char *s, bcase *c)
{
    int64_t x[7] = {0, 0, 0, 0, 0, 0, 0};
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    if (!copy) return 0;
    for (char *t = strtok_r(copy, ",", &save); t && n < 8; t = strtok_r(NULL, ",", &save), n++) {
        if (n == 6 && strcmp(t, "causal") == 0)
            x[6] = 1;
        else if (n >= 7 || !cli_parse_int64(t, &x[n]))
            n = 99;
    }
    free(copy);
    if (n != 6 && n != 7) return 0;
    for (int i = 0; i < 6; i++)
        if (x[i] < 1 || x[i] > (INT64_C(1) << 24)) return 0;
    if (x[6] != 0 && x[6] != 1) return 0;
    if (x[1] % x[2] != 0) return 0;
    /* Q (and O) and K (and V) must be sizes a machine can hold: 2^33
     * floats (32 GiB) each at most, products checked for overflow. */
    int64_t nq, nk;
    if (__builtin_mul_overflow(x[0] * x[1], x[3], &nq) || __builtin_mul_overflow(nq, x[5], &nq) ||
        __builtin_mul_overflow(x[0] * x[2], x[4], &nk) || __builtin_mul_overflow(nk, x[5], &nk) ||
        nq > (INT64_C(1) << 33) || nk > (INT64_C(1) << 33))
        return 0;
    c->B = x[0];
    c->H = x[1];
    c->Hkv = x[2];
    c->Lq = x[3];
    c->Lk = x[4];
    c->E = x[5];
    c->causal = (int)x[6];
    snprintf(c->name, sizeof c->name, "%lld,%lld,%lld,%lld,%lld,%lld%s", (long long)c->B,
             (long long)c->H, (long long)c->Hkv, (long long)c->Lq, (long long)c->Lk,
             (long long)c->E, c->causal ? " causal" : "");
    return 1;
}

int cmd_bench(int argc, char **argv)
{
    bench_opts bo = {0, 0, 0, 0, QKV_ISA_AUTO};
    int quick = 0, nshapes = 0, gemm_only = 0, ngemm = 0, layer_only = 0, nlayer = 0;
    lcase lcases[32];
    bcase cases[32];
    gcase gcases[32];
    /* Each option once, the three kinds of shape as often as there is
     * room for them (the suite adds its cases only when none is given). */
    const char *threads = NULL, *isa = NULL;
    const char *shape_args[32], *gemm_args[32], *layer_args[32];
    const cli_opt opts[] = {
        {"--json", NULL, &bo.json, 0},         {"--quick", NULL, &quick, 0},
        {"--gemm", NULL, &gemm_only, 0},       {"--layer", NULL, &layer_only, 0},
        {"--backward", NULL, &bo.backward, 0}, {"--reference", NULL, &bo.reference, 0},
        {"--threads", &threads, NULL, 0},      {"--isa", &isa, NULL, 0},
    };
    const cli_list lists[] = {
        {"--shape", shape_args, 32, &nshapes},
        {"--gemm-shape", gemm_args, 32, &ngemm},
        {"--layer-shape", layer_args, 32, &nlayer},
    };
    int prc = cli_parse_args_lists("bench", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                                   lists, (int)(sizeof lists / sizeof lists[0]), NULL);
    if (prc == -1) {
        fputs(bench_usage, stdout);
        return CLI_OK;
    }
    if (prc != CLI_OK) return prc;
    for (int i = 0; i < nlayer; i++)
        if (!parse_layer_shape(layer_args[i], &lcases[i])) {
            cli_error("bench", "--layer-shape: '%s', expected decode or forward, then "
                               "D,H,Hkv,E,LEN with sizes from 1 to 2^20, Hkv dividing H, "
                               "E even and tensors of at most 2^31 floats",
                      layer_args[i]);
            return CLI_USAGE;
        }
    for (int i = 0; i < ngemm; i++)
        if (!parse_gemm_shape(gemm_args[i], &gcases[i])) {
            cli_error("bench", "--gemm-shape: '%s', expected M,N,K[,OPS] with sizes from 1 "
                               "to 2^24, matrices of at most 2^31 floats and OPS NN, NT, "
                               "TN or TT",
                      gemm_args[i]);
            return CLI_USAGE;
        }
    for (int i = 0; i < nshapes; i++)
        if (!parse_shape(shape_args[i], &cases[i])) {
            cli_error("bench", "--shape: '%s', expected B,H,Hkv,Lq,Lk,E[,causal] with "
                               "sizes >= 1, Hkv dividing H, tensors of at most 2^33 "
                               "floats and causal 0, 1 or 'causal'",
                      shape_args[i]);
            return CLI_USAGE;
        }
    if (threads && !cli_parse_threads("bench", threads, &bo.threads)) return CLI_USAGE;
    if (isa) {
        qkv_isa found = QKV_ISA_AUTO;
        for (qkv_isa x = QKV_ISA_GENERIC; x <= QKV_ISA_AVX512; x++)
            if (strcmp(isa, qkv_isa_name(x)) == 0) found = x;
        if (found == QKV_ISA_AUTO) {
            cli_error("bench", "--isa: '%s', expected generic, avx2 or avx512", isa);
            return CLI_USAGE;
        }
        if (!qkv_isa_supported(found)) {
            cli_error("bench", "--isa: %s is not supported by this build or CPU", isa);
            return CLI_ERROR;
        }
        bo.isa = found;
    }
    const int nlayer_shapes = nlayer;
    if ((nshapes || ngemm || nlayer_shapes) && quick) {
        cli_error("bench", "--quick picks from the fixed suite; it does not combine with %s",
                  nshapes ? "--shape" : ngemm ? "--gemm-shape" : "--layer-shape");
        return CLI_USAGE;
    }
    if (gemm_only && (nshapes || ngemm)) {
        cli_error("bench", "--gemm picks the suite's SGEMM cases; it does not combine with %s",
                  nshapes ? "--shape" : "--gemm-shape");
        return CLI_USAGE;
    }
    if (layer_only && (gemm_only || nshapes || ngemm || nlayer_shapes)) {
        cli_error("bench", "--layer picks the suite's layer cases; it does not combine with %s",
                  gemm_only ? "--gemm" : nshapes ? "--shape" : ngemm ? "--gemm-shape"
                                                                : "--layer-shape");
        return CLI_USAGE;
    }
    if (gemm_only && nlayer_shapes) {
        cli_error("bench", "--gemm picks the suite's SGEMM cases; it does not combine with "
                           "--layer-shape");
        return CLI_USAGE;
    }
    if ((layer_only || nlayer_shapes) && (bo.backward || bo.reference)) {
        cli_error("bench", "--layer times the layer's forward and decode; it does not combine "
                           "with %s",
                  bo.backward ? "--backward" : "--reference");
        return CLI_USAGE;
    }
    if ((gemm_only || ngemm) && (bo.backward || bo.reference)) {
        cli_error("bench", "%s times attention only; it does not combine with %s",
                  bo.backward ? "--backward" : "--reference", gemm_only ? "--gemm" : "--gemm-shape");
        return CLI_USAGE;
    }
    /* The suite: attention, then (unless --backward or --reference, which
     * are about attention) the SGEMM cases; --gemm keeps the latter. */
    const int suite = !nshapes && !ngemm && !nlayer_shapes;
    if (suite && !bo.backward && !bo.reference && !gemm_only) {
        /* Llama-like sizes: 32 query heads over 8 kv heads of 128. */
        static const int64_t ctx[2] = {4096, 32768};
        for (int i = 0; i < (quick ? 1 : 2); i++) {
            lcase *c = &lcases[nlayer++];
            *c = (lcase){"", 1, 4096, 32, 8, 128, ctx[i]};
            snprintf(c->name, sizeof c->name, "mha decode ctx%lld", (long long)ctx[i]);
        }
        const int64_t L = quick ? 1024 : 2048;
        lcase *c = &lcases[nlayer++];
        *c = (lcase){"", 0, L, L / 128, L / 128, 128, L};
        snprintf(c->name, sizeof c->name, "mha forward L%lld D%lld", (long long)L, (long long)L);
    }
    if (suite && !bo.backward && !bo.reference && !layer_only) {
        static const int ops[3][2] = {{0, 1}, {0, 0}, {1, 0}}; /* NT, NN, TN */
        for (int i = 0; i < (quick ? 1 : 3); i++) {
            gcases[ngemm] = (gcase){"", 4096, 1024, 1024, ops[i][0], ops[i][1]};
            gemm_name(&gcases[ngemm++]);
        }
    }
    int n = nshapes;
    if (suite && !gemm_only && !layer_only) {
        static const int64_t Ls[2] = {1024, 4096}, Es[2] = {64, 128};
        for (int li = 0; li < (quick ? 1 : 2); li++)
            for (int ei = 0; ei < 2; ei++)
                for (int causal = 0; causal < 2; causal++) {
                    bcase *c = &cases[n++];
                    *c = (bcase){"", 1, 16, 16, Ls[li], Ls[li], Es[ei], causal};
                    snprintf(c->name, sizeof c->name, "L%lld E%lld%s", (long long)Ls[li],
                             (long long)Es[ei], causal ? " causal" : "");
                }
        static const int64_t Lks[2] = {4096, 65536};
        for (int di = 0; di < (quick ? 1 : 2); di++) {
            bcase *c = &cases[n++];
            *c = (bcase){"", 1, 32, 8, 1, Lks[di], 128, 0};
            snprintf(c->name, sizeof c->name, "decode Lk%lld GQA32/8", (long long)Lks[di]);
        }
    }
    blas bl;
    blas_open(&bl, bo.threads ? bo.threads : 0);
    int any_decode = 0;
    for (int i = 0; i < n; i++) any_decode |= cases[i].Lq == 1;
    const int nthreads = bo.threads ? bo.threads : qkv_default_num_threads();
    double copy_gbps = any_decode ? copy_ceiling(nthreads) : 0;
    double peak = 0;
    for (int r = 0; r < 3 && !bo.reference; r++) { /* the best of three */
        double x = fma_peak(nthreads);
        peak = x > peak ? x : peak;
    }
    if (!bo.json) {
        printf("qkv bench: %s, %d thread%s; ceiling: %s%s\n",
               bo.reference ? "reference kernel" : qkv_isa_name(bo.isa ? bo.isa : qkv_isa_auto()),
               nthreads, nthreads == 1 ? "" : "s",
               bl.sgemm ? bl.name : "no BLAS found (install libopenblas0) for SGEMM",
               any_decode ? "; memcpy for decode" : "");
        char thp[32];
        printf("memory: qkv_alloc; transparent huge pages: %s\n", thp_policy(thp, sizeof thp));
        if (peak > 0) printf("FMA peak of %d thread%s: %.1f GFLOP/s\n", nthreads,
                             nthreads == 1 ? "" : "s", peak);
    }
    int rc = CLI_OK;
    for (int i = 0; i < n; i++)
        if (!bench_case(&cases[i], &bo, &bl, copy_gbps, peak)) rc = CLI_ERROR;
    for (int i = 0; i < ngemm; i++)
        if (!bench_gemm_case(&gcases[i], &bo, &bl, peak)) rc = CLI_ERROR;
    for (int i = 0; i < nlayer; i++)
        if (!bench_layer_case(&lcases[i], &bo, &bl, peak)) rc = CLI_ERROR;
    if (bl.lib) dlclose(bl.lib);
    return rc;
}
