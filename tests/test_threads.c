/* The threaded paths, each with 1, 2, 3 and 7 threads (more than the
 * machine's cores) and with 2 again once the pool has grown: the tiled
 * forward, the row-major decode that splits its keys into chunks, the
 * one-pass backward with its dQ turn counters, the blocked GEMM and its
 * few-rows path. Every count must give the bits one thread gives, and one
 * thread must agree with the reference; all of these run on one context,
 * whose pool grows and is reused. Then three application threads call at
 * once, first on one shared context (two of them find its pool busy and
 * start threads of their own), then each on a context of its own (three
 * pools at work side by side). Sized to run in seconds under ThreadSanitizer, which is
 * where this program matters most (make test-tsan). */
#include "test.h"
#include "util.h"

#include "qkv.h"

#include <pthread.h>
#include <string.h>

static const int counts[] = {1, 2, 3, 7, 2};
#define NCOUNTS (sizeof counts / sizeof counts[0])

/* Same bytes, or the first differing element and how many differ. */
static int same_bits(const char *what, const float *got, const float *want, int64_t n)
{
    if (memcmp(got, want, (size_t)n * sizeof *got) == 0) return 1;
    int64_t first = -1, bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof *got) != 0) {
            if (first < 0) first = i;
            bad++;
        }
    fprintf(stderr, "  %s: %lld of %lld elements differ, first [%lld] %.9g vs %.9g\n", what,
            (long long)bad, (long long)n, (long long)first, (double)got[first],
            (double)want[first]);
    return 0;
}

static int close_to(const char *what, const float *got, const float *want, int64_t n, double tol)
{
    const double rel = test_rel_l2(got, want, n);
    if (rel <= tol) return 1;
    fprintf(stderr, "  %s: relative L2 error %.3g against the reference, over %g\n", what, rel,
            tol);
    return 0;
}

/* The one context the checks run on, one after another, so that its
 * pool grows and is reused; with() sets how it runs for the next call. */
static qkv_context *main_ctx;

static qkv_context *with(qkv_impl impl, int threads)
{
    CHECK(qkv_context_set_impl(main_ctx, impl) == QKV_OK &&
          qkv_context_set_threads(main_ctx, threads) == QKV_OK);
    return main_ctx;
}

/* ------------------------------------------------------------ forward */

typedef struct fwd_case {
    const char *name;
    test_shape s;
    int causal;
    float *q, *k, *v;
    float *o, *w, *l;    /* one thread's results */
    float *o2, *w2, *l2; /* another call's */
} fwd_case;

static void fwd_setup(fwd_case *c, uint64_t seed)
{
    test_rng r = test_rng_seed(seed);
    const test_shape *s = &c->s;
    c->q = test_rand_f32(&r, n_q(s), -1, 1);
    c->k = test_rand_f32(&r, n_k(s), -1, 1);
    c->v = test_rand_f32(&r, n_v(s), -1, 1);
    c->o = test_malloc((size_t)n_o(s) * sizeof(float));
    c->w = test_malloc((size_t)n_p(s) * sizeof(float));
    c->l = test_malloc((size_t)n_l(s) * sizeof(float));
    c->o2 = test_malloc((size_t)n_o(s) * sizeof(float));
    c->w2 = test_malloc((size_t)n_p(s) * sizeof(float));
    c->l2 = test_malloc((size_t)n_l(s) * sizeof(float));
}

static void fwd_free(fwd_case *c)
{
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->o);
    free(c->w);
    free(c->l);
    free(c->o2);
    free(c->w2);
    free(c->l2);
}

/* O, the weights and lse into o, w, l. */
static qkv_status fwd_run(const fwd_case *c, float *o, float *w, float *l, qkv_context *ctx)
{
    const test_shape *s = &c->s;
    qkv_tensor tq = qkv_tensor_contiguous(c->q, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    qkv_tensor tk = qkv_tensor_contiguous(c->k, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tv = qkv_tensor_contiguous(c->v, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor tw = qkv_tensor_contiguous(w, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Lk);
    qkv_tensor tl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
    qkv_attention_options opt = {0};
    opt.causal = c->causal;
    opt.align = QKV_ALIGN_BOTTOM_RIGHT;
    return qkv_attention_forward(ctx, &to, &tw, &tl, &tq, &tk, &tv, &opt);
}

static int fwd_same(const fwd_case *c, const char *ctx)
{
    char what[160];
    int ok = 1;
    snprintf(what, sizeof what, "%s O, %s", c->name, ctx);
    ok &= same_bits(what, c->o2, c->o, n_o(&c->s));
    snprintf(what, sizeof what, "%s weights, %s", c->name, ctx);
    ok &= same_bits(what, c->w2, c->w, n_p(&c->s));
    snprintf(what, sizeof what, "%s lse, %s", c->name, ctx);
    ok &= same_bits(what, c->l2, c->l, n_l(&c->s));
    return ok;
}

static void check_forward(fwd_case *c)
{
    CHECK(fwd_run(c, c->o, c->w, c->l, with(QKV_IMPL_AUTO, 1)) == QKV_OK);
    CHECK(fwd_run(c, c->o2, c->w2, c->l2, with(QKV_IMPL_REFERENCE, 1)) == QKV_OK);
    CHECK(close_to(c->name, c->o, c->o2, n_o(&c->s), 1e-5));
    for (size_t t = 0; t < NCOUNTS; t++) {
        char ctx[64];
        snprintf(ctx, sizeof ctx, "num_threads %d vs 1", counts[t]);
        memset(c->o2, 0xff, (size_t)n_o(&c->s) * sizeof(float));
        CHECK(fwd_run(c, c->o2, c->w2, c->l2, with(QKV_IMPL_AUTO, counts[t])) == QKV_OK);
        CHECK(fwd_same(c, ctx));
    }
}

/* ------------------------------------------------------------ backward */

typedef struct bwd_case {
    fwd_case f; /* its inputs, and O and lse from one thread */
    float *dout;
    float *dq, *dk, *dv, *dq2, *dk2, *dv2;
} bwd_case;

static void bwd_setup(bwd_case *c, uint64_t seed)
{
    fwd_setup(&c->f, seed);
    const test_shape *s = &c->f.s;
    test_rng r = test_rng_seed(seed + 1);
    c->dout = test_rand_f32(&r, n_o(s), -1, 1);
    c->dq = test_malloc((size_t)n_q(s) * sizeof(float));
    c->dk = test_malloc((size_t)n_k(s) * sizeof(float));
    c->dv = test_malloc((size_t)n_v(s) * sizeof(float));
    c->dq2 = test_malloc((size_t)n_q(s) * sizeof(float));
    c->dk2 = test_malloc((size_t)n_k(s) * sizeof(float));
    c->dv2 = test_malloc((size_t)n_v(s) * sizeof(float));
    CHECK(fwd_run(&c->f, c->f.o, c->f.w, c->f.l, with(QKV_IMPL_AUTO, 1)) == QKV_OK);
}

static void bwd_free(bwd_case *c)
{
    fwd_free(&c->f);
    free(c->dout);
    free(c->dq);
    free(c->dk);
    free(c->dv);
    free(c->dq2);
    free(c->dk2);
    free(c->dv2);
}

static qkv_status bwd_run(const bwd_case *c, float *dq, float *dk, float *dv, qkv_context *ctx)
{
    const fwd_case *f = &c->f;
    const test_shape *s = &f->s;
    qkv_tensor tq = qkv_tensor_contiguous(f->q, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    qkv_tensor tk = qkv_tensor_contiguous(f->k, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tv = qkv_tensor_contiguous(f->v, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    qkv_tensor to = qkv_tensor_contiguous(f->o, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor tl = qkv_tensor_contiguous(f->l, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
    qkv_tensor tdo = qkv_tensor_contiguous(c->dout, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor tdq = qkv_tensor_contiguous(dq, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    qkv_tensor tdk = qkv_tensor_contiguous(dk, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tdv = qkv_tensor_contiguous(dv, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    qkv_attention_options opt = {0};
    opt.causal = f->causal;
    opt.align = QKV_ALIGN_BOTTOM_RIGHT;
    return qkv_attention_backward(ctx, &tdq, &tdk, &tdv, NULL, &tdo, &tq, &tk, &tv, &to, &tl,
                                  &opt);
}

static int bwd_same(const bwd_case *c, const char *ctx)
{
    const test_shape *s = &c->f.s;
    char what[160];
    int ok = 1;
    snprintf(what, sizeof what, "backward dQ, %s", ctx);
    ok &= same_bits(what, c->dq2, c->dq, n_q(s));
    snprintf(what, sizeof what, "backward dK, %s", ctx);
    ok &= same_bits(what, c->dk2, c->dk, n_k(s));
    snprintf(what, sizeof what, "backward dV, %s", ctx);
    ok &= same_bits(what, c->dv2, c->dv, n_v(s));
    return ok;
}

static void check_backward(bwd_case *c)
{
    const test_shape *s = &c->f.s;
    CHECK(bwd_run(c, c->dq, c->dk, c->dv, with(QKV_IMPL_AUTO, 1)) == QKV_OK);
    CHECK(bwd_run(c, c->dq2, c->dk2, c->dv2, with(QKV_IMPL_REFERENCE, 1)) == QKV_OK);
    CHECK(close_to("backward dQ", c->dq, c->dq2, n_q(s), 1e-5));
    CHECK(close_to("backward dK", c->dk, c->dk2, n_k(s), 1e-5));
    CHECK(close_to("backward dV", c->dv, c->dv2, n_v(s), 1e-5));
    for (size_t t = 0; t < NCOUNTS; t++) {
        char ctx[64];
        snprintf(ctx, sizeof ctx, "num_threads %d vs 1", counts[t]);
        CHECK(bwd_run(c, c->dq2, c->dk2, c->dv2, with(QKV_IMPL_AUTO, counts[t])) == QKV_OK);
        CHECK(bwd_same(c, ctx));
    }
}

/* ------------------------------------------------------------ GEMM */

typedef struct gemm_case {
    const char *name;
    qkv_gemm_transpose ta, tb;
    int64_t m, n, k;
    float *a, *b, *c0; /* C before the call */
    float *c, *c2;     /* one thread's result, another call's */
} gemm_case;

static void gemm_setup(gemm_case *g, uint64_t seed)
{
    test_rng r = test_rng_seed(seed);
    g->a = test_rand_f32(&r, g->m * g->k, -1, 1);
    g->b = test_rand_f32(&r, g->k * g->n, -1, 1);
    g->c0 = test_rand_f32(&r, g->m * g->n, -1, 1);
    g->c = test_malloc((size_t)(g->m * g->n) * sizeof(float));
    g->c2 = test_malloc((size_t)(g->m * g->n) * sizeof(float));
}

static void gemm_free(gemm_case *g)
{
    free(g->a);
    free(g->b);
    free(g->c0);
    free(g->c);
    free(g->c2);
}

/* C = 1.5 op(A) op(B) - 0.5 C0 into c. */
static qkv_status gemm_run(const gemm_case *g, float *c, qkv_context *ctx)
{
    memcpy(c, g->c0, (size_t)(g->m * g->n) * sizeof *c);
    return qkv_sgemm(ctx, g->ta, g->tb, g->m, g->n, g->k, 1.5f, g->a, g->ta ? g->m : g->k, g->b,
                     g->tb ? g->k : g->n, -0.5f, c, g->n);
}

static void check_gemm(gemm_case *g)
{
    CHECK(gemm_run(g, g->c, with(QKV_IMPL_AUTO, 1)) == QKV_OK);
    /* The definition, in double. */
    for (int64_t i = 0; i < g->m; i++)
        for (int64_t j = 0; j < g->n; j++) {
            double acc = 0;
            for (int64_t p = 0; p < g->k; p++) {
                const float x = g->ta ? g->a[p * g->m + i] : g->a[i * g->k + p];
                const float y = g->tb ? g->b[j * g->k + p] : g->b[p * g->n + j];
                acc += (double)x * (double)y;
            }
            g->c2[i * g->n + j] = (float)(1.5 * acc - 0.5 * (double)g->c0[i * g->n + j]);
        }
    CHECK(close_to(g->name, g->c, g->c2, g->m * g->n, 1e-5));
    for (size_t t = 0; t < NCOUNTS; t++) {
        char what[160];
        snprintf(what, sizeof what, "%s, num_threads %d vs 1", g->name, counts[t]);
        CHECK(gemm_run(g, g->c2, with(QKV_IMPL_AUTO, counts[t])) == QKV_OK);
        CHECK(same_bits(what, g->c2, g->c, g->m * g->n));
    }
}

/* ------------------------------------------------------------ callers at once */

typedef struct caller {
    pthread_barrier_t *start;
    int kind; /* 0 forward, 1 backward, 2 GEMM */
    fwd_case *f;
    bwd_case *b;
    gemm_case *g;
    qkv_context *shared; /* the first round's, one for all callers */
    qkv_context *own;    /* the second round's, this caller's alone */
    int ok;
} caller;

static void *caller_main(void *arg)
{
    caller *c = arg;
    pthread_barrier_wait(c->start);
    for (int round = 0; round < 2; round++) {
        qkv_context *cx = round ? c->own : c->shared;
        char ctx[80];
        snprintf(ctx, sizeof ctx, "three callers at once, %s context, num_threads %d",
                 round ? "each its own" : "one shared", qkv_context_threads(cx));
        if (c->kind == 0)
            c->ok &= fwd_run(c->f, c->f->o2, c->f->w2, c->f->l2, cx) == QKV_OK &&
                     fwd_same(c->f, ctx);
        else if (c->kind == 1)
            c->ok &= bwd_run(c->b, c->b->dq2, c->b->dk2, c->b->dv2, cx) == QKV_OK &&
                     bwd_same(c->b, ctx);
        else
            c->ok &= gemm_run(c->g, c->g->c2, cx) == QKV_OK &&
                     same_bits(c->g->name, c->g->c2, c->g->c, c->g->m * c->g->n);
    }
    return NULL;
}

/* First the three share one context: its pool serves one call at a time,
 * the others run on threads of their own. Then each has its own context,
 * whose pool runs its calls beside the others'. Every result must still
 * be the one-thread result. */
static void check_callers_at_once(fwd_case *f, bwd_case *b, gemm_case *g)
{
    enum { N = 3 };
    pthread_barrier_t start;
    CHECK(pthread_barrier_init(&start, NULL, N) == 0);
    caller cs[N];
    pthread_t th[N];
    int started[N];
    qkv_context *shared = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 3);
    for (int i = 0; i < N; i++) {
        cs[i] = (caller){&start, i, f, b, g, shared, test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 7),
                         1};
        started[i] = pthread_create(&th[i], NULL, caller_main, &cs[i]) == 0;
        CHECK(started[i]);
    }
    for (int i = 0; i < N; i++)
        if (started[i]) {
            pthread_join(th[i], NULL);
            CHECK(cs[i].ok);
        }
    for (int i = 0; i < N; i++) qkv_context_free(cs[i].own);
    qkv_context_free(shared);
    pthread_barrier_destroy(&start);
}

int main(void)
{
    /* G = 2: 32 queries x 2 heads a unit, 7 query tiles, 28 units. */
    fwd_case tiled = {"tiled forward", {2, 4, 2, 200, 190, 40, 24}, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    /* 8 query rows and 4100 keys: 5 chunks of 1024 keys per unit, 10 work
     * items, merged in order; Lq = 1 takes the row-major path. */
    fwd_case decode = {"decode forward", {1, 8, 2, 1, 4100, 64, 64}, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    /* 6 key tiles per kv head, 3 blocks of dQ per head; causal from the
     * bottom right keeps some tiles from some blocks (passed through the
     * counters). */
    bwd_case back;
    memset(&back, 0, sizeof back);
    back.f.name = "backward";
    back.f.s = (test_shape){1, 4, 2, 150, 330, 32, 16};
    back.f.causal = 1;
    /* Enough flops for 8 threads (4 Mflop each): 2 x 200 x 200 x 400. */
    gemm_case blocked = {
        "blocked GEMM", QKV_GEMM_TRANS, QKV_GEMM_NO_TRANS, 200, 200, 400, 0, 0, 0, 0, 0};
    /* m <= 4: 32 column slices of B read in place. */
    gemm_case few = {
        "few-rows GEMM", QKV_GEMM_NO_TRANS, QKV_GEMM_TRANS, 4, 2000, 2000, 0, 0, 0, 0, 0};

    main_ctx = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 1);
    fwd_setup(&tiled, 1);
    fwd_setup(&decode, 2);
    bwd_setup(&back, 3);
    gemm_setup(&blocked, 5);
    gemm_setup(&few, 6);

    check_forward(&tiled);
    check_forward(&decode);
    check_backward(&back);
    check_gemm(&blocked);
    check_gemm(&few);
    check_callers_at_once(&decode, &back, &blocked);

    fwd_free(&tiled);
    fwd_free(&decode);
    bwd_free(&back);
    gemm_free(&blocked);
    gemm_free(&few);
    qkv_context_free(main_ctx);
    return test_finish("test_threads");
}
