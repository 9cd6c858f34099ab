/* The execution context: its setters check their values, NULL is the
 * default context, each setting reaches the call (threads do not change
 * the bits, impl picks the reference, progress is reported), and the
 * options' struct_size lets a struct of another size through exactly when
 * it means the same. Each context's pool of workers survives its calls
 * and a fork: the child computes the same bits on the parent's contexts
 * (their workers gone, the pools start over) and frees them without
 * waiting for workers that do not exist. */
#include "test.h"
#include "util.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

static void check_setters(void)
{
    qkv_context *ctx = NULL;
    CHECK(qkv_context_create(NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_context_create(&ctx) == QKV_OK && ctx != NULL);
    CHECK(qkv_context_threads(ctx) == qkv_default_num_threads());
    CHECK(qkv_context_threads(NULL) == qkv_default_num_threads());
    CHECK(qkv_context_set_threads(ctx, 3) == QKV_OK && qkv_context_threads(ctx) == 3);
    CHECK(qkv_context_set_threads(ctx, QKV_MAX_THREADS + 5) == QKV_OK);
    CHECK(qkv_context_threads(ctx) == QKV_MAX_THREADS);
    CHECK(qkv_context_set_threads(ctx, -1) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "num_threads: -1"));
    CHECK(qkv_context_threads(ctx) == QKV_MAX_THREADS); /* unchanged by the refusal */
    CHECK(qkv_context_set_isa(ctx, (qkv_isa)9) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "isa: 9"));
    CHECK(qkv_context_set_isa(ctx, (qkv_isa)-1) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(qkv_context_set_isa(ctx, QKV_ISA_GENERIC) == QKV_OK);
    CHECK(qkv_context_set_impl(ctx, (qkv_impl)2) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "impl: 2"));
    CHECK(qkv_context_set_impl(ctx, QKV_IMPL_REFERENCE) == QKV_OK);
    CHECK(strcmp(qkv_error_detail(), "") == 0);
    CHECK(qkv_context_set_progress(ctx, NULL, NULL) == QKV_OK);
    CHECK(qkv_context_set_threads(NULL, 1) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_context_set_isa(NULL, QKV_ISA_AUTO) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_context_set_impl(NULL, QKV_IMPL_AUTO) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_context_set_progress(NULL, NULL, NULL) == QKV_ERR_NULL_ARGUMENT);
    qkv_context_free(ctx);
    qkv_context_free(NULL);
}

typedef struct bufs {
    test_shape s;
    float *q, *k, *v, *o;
    qkv_tensor tq, tk, tv, to;
} bufs;

static bufs make(void)
{
    bufs b = {{2, 4, 2, 40, 70, 16, 16}, NULL, NULL, NULL, NULL, {0}, {0}, {0}, {0}};
    test_rng r = test_rng_seed(11);
    const test_shape *s = &b.s;
    b.q = test_rand_f32(&r, n_q(s), -1, 1);
    b.k = test_rand_f32(&r, n_k(s), -1, 1);
    b.v = test_rand_f32(&r, n_v(s), -1, 1);
    b.o = test_malloc((size_t)n_o(s) * sizeof(float));
    b.tq = qkv_tensor_contiguous(b.q, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    b.tk = qkv_tensor_contiguous(b.k, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    b.tv = qkv_tensor_contiguous(b.v, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    b.to = qkv_tensor_contiguous(b.o, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    return b;
}

static void unmake(bufs *b) { free(b->q), free(b->k), free(b->v), free(b->o); }

/* O of b under ctx and opts, copied out; NULL when the call fails. */
static float *run(bufs *b, qkv_context *ctx, const qkv_attention_options *opts)
{
    if (qkv_attention_forward(ctx, &b->to, NULL, NULL, &b->tq, &b->tk, &b->tv, opts) != QKV_OK)
        return NULL;
    float *copy = test_malloc((size_t)n_o(&b->s) * sizeof(float));
    memcpy(copy, b->o, (size_t)n_o(&b->s) * sizeof(float));
    return copy;
}

static int same(const float *a, const float *b, const bufs *x)
{
    return a && b && memcmp(a, b, (size_t)n_o(&x->s) * sizeof(float)) == 0;
}

typedef struct calls {
    int n;
    double last;
} calls;

static void count(void *user, double done)
{
    calls *c = user;
    c->n++;
    c->last = done;
}

static void check_settings_reach_the_call(void)
{
    bufs b = make();
    qkv_attention_options opt = {0};
    opt.causal = 1;
    float *dflt = run(&b, NULL, &opt);
    CHECK(dflt != NULL);
    /* Threads do not change the bits; the reference is the reference. */
    for (int t = 1; t <= 3; t++) {
        qkv_context *ctx = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, t);
        float *o = run(&b, ctx, &opt);
        CHECK(same(o, dflt, &b));
        free(o);
        qkv_context_free(ctx);
    }
    qkv_context *ref = test_context(QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 2);
    qkv_context *ref1 = test_context(QKV_IMPL_REFERENCE, QKV_ISA_GENERIC, 1);
    float *r = run(&b, ref, &opt), *r1 = run(&b, ref1, &opt);
    CHECK(same(r, r1, &b)); /* the reference ignores the isa and the threads */
    CHECK(r && test_rel_l2(dflt, r, n_o(&b.s)) <= 1e-5);
    CHECK(r && !same(r, dflt, &b)); /* a different computation, to rounding */
    /* The generic kernels everywhere; one set, any threads: one answer. */
    qkv_context *gen = test_context(QKV_IMPL_AUTO, QKV_ISA_GENERIC, 1);
    qkv_context *gen3 = test_context(QKV_IMPL_AUTO, QKV_ISA_GENERIC, 3);
    float *g = run(&b, gen, &opt), *g3 = run(&b, gen3, &opt);
    CHECK(same(g, g3, &b));
    /* An isa this CPU or build lacks is refused at the call. */
    for (qkv_isa isa = QKV_ISA_AVX2; isa <= QKV_ISA_AVX512_BF16; isa++) {
        if (qkv_isa_supported(isa)) continue;
        qkv_context *no = test_context(QKV_IMPL_AUTO, isa, 1);
        CHECK(qkv_attention_forward(no, &b.to, NULL, NULL, &b.tq, &b.tk, &b.tv, &opt) ==
              QKV_ERR_UNSUPPORTED);
        CHECK(test_starts_with(qkv_error_detail(), "isa:"));
        qkv_context_free(no);
    }
    /* Progress: reported through the context, last with 1.0. */
    calls c = {0, 0};
    CHECK(qkv_context_set_progress(gen, count, &c) == QKV_OK);
    float *gp = run(&b, gen, &opt);
    CHECK(same(gp, g, &b));
    CHECK(c.n >= 1 && c.n <= 210 && c.last == 1.0);
    free(dflt), free(r), free(r1), free(g), free(g3), free(gp);
    qkv_context_free(ref), qkv_context_free(ref1), qkv_context_free(gen), qkv_context_free(gen3);
    unmake(&b);
}

/* struct_size: 0 and sizeof mean this struct; smaller is refused; larger
 * is taken when the bytes past the struct are zero (a newer caller that
 * set nothing new) and refused when they are not. */
static void check_struct_size(void)
{
    bufs b = make();
    typedef struct newer {
        qkv_attention_options o;
        int64_t later_field;
    } newer;
    newer n;
    memset(&n, 0, sizeof n);
    n.o.causal = 1;
    float *zero = run(&b, NULL, &n.o);
    n.o.struct_size = sizeof n.o;
    float *exact = run(&b, NULL, &n.o);
    CHECK(same(zero, exact, &b));
    n.o.struct_size = sizeof n;
    float *big = run(&b, NULL, &n.o);
    CHECK(same(zero, big, &b));
    n.later_field = 7;
    CHECK(qkv_attention_forward(NULL, &b.to, NULL, NULL, &b.tq, &b.tk, &b.tv, &n.o) ==
          QKV_ERR_UNSUPPORTED);
    CHECK(test_starts_with(qkv_error_detail(), "opts:"));
    n.o.struct_size = sizeof n.o - 8;
    CHECK(qkv_attention_forward(NULL, &b.to, NULL, NULL, &b.tq, &b.tk, &b.tv, &n.o) ==
          QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "opts.struct_size:"));
    free(zero), free(exact), free(big);
    unmake(&b);
}

/* A workspace lent to a context: the call carves its scratch from it
 * (the bytes change), gives the bits it gives without one, fails before
 * writing anything when it is one byte short, and refuses a second call
 * while the first one is using it (the call's last progress report, made
 * before it gives the workspace back, makes the second call). */
typedef struct nested {
    bufs *b;
    qkv_context *ctx;
    qkv_status st;
    char detail[160];
} nested;

static void call_inside(void *user, double done)
{
    nested *n = user;
    if (done != 1.0) return; /* the last report, which every call makes */
    float o2[8];
    qkv_tensor t = qkv_tensor_contiguous(o2, QKV_DTYPE_F32, 1, 1, 1, 8);
    qkv_tensor q = n->b->tq, k = n->b->tk, v = n->b->tv;
    q.shape[0] = q.shape[1] = q.shape[2] = 1;
    k.shape[0] = k.shape[1] = v.shape[0] = v.shape[1] = 1;
    q.shape[3] = k.shape[3] = 8, v.shape[3] = 8;
    n->st = qkv_attention_forward(n->ctx, &t, NULL, NULL, &q, &k, &v, NULL);
    snprintf(n->detail, sizeof n->detail, "%s", qkv_error_detail());
}

/* bytes of lent memory filled with 0x5a; how many of them changed. */
static int64_t touched(const unsigned char *m, size_t bytes)
{
    int64_t n = 0;
    for (size_t i = 0; i < bytes; i++) n += m[i] != 0x5a;
    return n;
}

static void check_workspace(void)
{
    bufs b = make();
    qkv_attention_options opt = {0};
    opt.causal = 1;
    qkv_context *ctx = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 2);
    /* The setter's checks. */
    static _Alignas(64) unsigned char small[128];
    CHECK(qkv_context_set_workspace(NULL, small, 64) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_context_set_workspace(ctx, small, 0) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "workspace:"));
    CHECK(qkv_context_set_workspace(ctx, NULL, 64) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(qkv_context_set_workspace(ctx, small + 4, 64) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(strstr(qkv_error_detail(), "64-byte aligned") != NULL);
    CHECK(qkv_attention_forward_workspace(ctx, &b.to, NULL, NULL, &b.tq, &b.tk, &b.tv, &opt,
                                          NULL) == QKV_ERR_NULL_ARGUMENT);

    float *want = run(&b, ctx, &opt); /* allocating */
    for (int impl = 0; impl < 2; impl++) {
        CHECK(qkv_context_set_impl(ctx, impl ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO) == QKV_OK);
        float *ref = impl ? run(&b, ctx, &opt) : NULL;
        size_t bytes = 0;
        CHECK(qkv_attention_forward_workspace(ctx, &b.to, NULL, NULL, &b.tq, &b.tk, &b.tv, &opt,
                                              &bytes) == QKV_OK);
        CHECK(bytes > 0);
        unsigned char *mem = qkv_alloc(bytes);
        CHECK(mem != NULL);
        if (!mem) continue;
        memset(mem, 0x5a, bytes);
        CHECK(qkv_context_set_workspace(ctx, mem, bytes) == QKV_OK);
        float *got = run(&b, ctx, &opt);
        CHECK(same(got, impl ? ref : want, &b));
        CHECK(touched(mem, bytes) > 0);
        /* One byte short: refused, O untouched. */
        CHECK(qkv_context_set_workspace(ctx, mem, bytes - 1) == QKV_OK);
        memset(b.o, 0x5a, (size_t)n_o(&b.s) * sizeof(float));
        CHECK(qkv_attention_forward(ctx, &b.to, NULL, NULL, &b.tq, &b.tk, &b.tv, &opt) ==
              QKV_ERR_OUT_OF_MEMORY);
        CHECK(test_starts_with(qkv_error_detail(), "workspace: this call needs"));
        CHECK(touched((unsigned char *)b.o, (size_t)n_o(&b.s) * sizeof(float)) == 0);
        /* Taken back: the call allocates again. */
        CHECK(qkv_context_set_workspace(ctx, NULL, 0) == QKV_OK);
        float *again = run(&b, ctx, &opt);
        CHECK(same(again, impl ? ref : want, &b));
        free(got), free(again), free(ref);
        qkv_free(mem);
    }
    CHECK(qkv_context_set_impl(ctx, QKV_IMPL_AUTO) == QKV_OK);

    /* A second call while the first holds the workspace is refused. */
    size_t bytes = 0;
    CHECK(qkv_attention_forward_workspace(ctx, &b.to, NULL, NULL, &b.tq, &b.tk, &b.tv, &opt,
                                          &bytes) == QKV_OK);
    unsigned char *mem = qkv_alloc(bytes);
    nested n = {&b, ctx, QKV_OK, ""};
    CHECK(qkv_context_set_workspace(ctx, mem, bytes) == QKV_OK);
    CHECK(qkv_context_set_progress(ctx, call_inside, &n) == QKV_OK);
    float *outer = run(&b, ctx, &opt);
    CHECK(same(outer, want, &b));
    CHECK(n.st == QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(n.detail, "workspace: another call"));
    CHECK(qkv_context_set_progress(ctx, NULL, NULL) == QKV_OK);
    free(outer);

    /* The backward: the query, then the call in exactly that much. */
    float *lse = test_malloc((size_t)n_l(&b.s) * sizeof(float));
    test_rng rr = test_rng_seed(5);
    float *dout = test_rand_f32(&rr, n_o(&b.s), -0.5f, 0.5f);
    float *g[2][3];
    const int64_t sizes[3] = {n_q(&b.s), n_k(&b.s), n_v(&b.s)};
    qkv_tensor tl = qkv_tensor_contiguous(lse, QKV_DTYPE_F32, b.s.B, b.s.H, b.s.Lq, 1);
    qkv_tensor tdo = qkv_tensor_contiguous(dout, QKV_DTYPE_F32, b.s.B, b.s.H, b.s.Lq, b.s.Ev);
    CHECK(qkv_context_set_workspace(ctx, NULL, 0) == QKV_OK);
    CHECK(qkv_attention_forward(ctx, &b.to, NULL, &tl, &b.tq, &b.tk, &b.tv, &opt) == QKV_OK);
    for (int lent = 0; lent < 2; lent++) {
        for (int j = 0; j < 3; j++) g[lent][j] = test_malloc((size_t)sizes[j] * sizeof(float));
        qkv_tensor tdq = qkv_tensor_contiguous(g[lent][0], QKV_DTYPE_F32, b.s.B, b.s.H, b.s.Lq,
                                               b.s.E);
        qkv_tensor tdk = qkv_tensor_contiguous(g[lent][1], QKV_DTYPE_F32, b.s.B, b.s.Hkv, b.s.Lk,
                                               b.s.E);
        qkv_tensor tdv = qkv_tensor_contiguous(g[lent][2], QKV_DTYPE_F32, b.s.B, b.s.Hkv, b.s.Lk,
                                               b.s.Ev);
        unsigned char *bm = NULL;
        if (lent) {
            size_t bb = 0;
            CHECK(qkv_attention_backward_workspace(ctx, &tdq, &tdk, &tdv, NULL, &tdo, &b.tq,
                                                   &b.tk, &b.tv, &b.to, &tl, &opt,
                                                   &bb) == QKV_OK);
            CHECK(bb > 0);
            bm = qkv_alloc(bb);
            memset(bm, 0x5a, bb);
            CHECK(qkv_context_set_workspace(ctx, bm, bb) == QKV_OK);
            CHECK(qkv_attention_backward(ctx, &tdq, &tdk, &tdv, NULL, &tdo, &b.tq, &b.tk, &b.tv,
                                         &b.to, &tl, &opt) == QKV_OK);
            CHECK(touched(bm, bb) > 0);
            CHECK(qkv_context_set_workspace(ctx, bm, bb - 1) == QKV_OK);
            CHECK(qkv_attention_backward(ctx, &tdq, &tdk, &tdv, NULL, &tdo, &b.tq, &b.tk, &b.tv,
                                         &b.to, &tl, &opt) == QKV_ERR_OUT_OF_MEMORY);
            CHECK(qkv_context_set_workspace(ctx, NULL, 0) == QKV_OK);
        } else {
            CHECK(qkv_attention_backward(ctx, &tdq, &tdk, &tdv, NULL, &tdo, &b.tq, &b.tk, &b.tv,
                                         &b.to, &tl, &opt) == QKV_OK);
        }
        qkv_free(bm);
    }
    for (int j = 0; j < 3; j++) {
        CHECK(memcmp(g[0][j], g[1][j], (size_t)sizes[j] * sizeof(float)) == 0);
        free(g[0][j]), free(g[1][j]);
    }

    /* GEMM, its blocked path and its few-rows path; the generic kernels
     * (QKV_ISA_AUTO may mean the system BLAS, which takes no scratch). */
    CHECK(qkv_context_set_isa(ctx, QKV_ISA_GENERIC) == QKV_OK);
    const int64_t shapes[2][3] = {{96, 80, 70}, {3, 200, 90}};
    for (int c = 0; c < 2; c++) {
        const int64_t m = shapes[c][0], nn = shapes[c][1], k = shapes[c][2];
        test_rng gr = test_rng_seed(20 + (uint64_t)c);
        float *a = test_rand_f32(&gr, m * k, -1, 1), *bb = test_rand_f32(&gr, k * nn, -1, 1);
        float *c0 = test_malloc((size_t)(m * nn) * sizeof(float));
        float *c1 = test_malloc((size_t)(m * nn) * sizeof(float));
        CHECK(qkv_sgemm(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, m, nn, k, 1, a, k, bb, nn, 0, c0,
                        nn) == QKV_OK);
        size_t gb = 0;
        CHECK(qkv_sgemm_workspace(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, m, nn, k, &gb) ==
              QKV_OK);
        CHECK(gb > 0);
        unsigned char *gm = qkv_alloc(gb);
        memset(gm, 0x5a, gb);
        CHECK(qkv_context_set_workspace(ctx, gm, gb) == QKV_OK);
        CHECK(qkv_sgemm(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, m, nn, k, 1, a, k, bb, nn, 0, c1,
                        nn) == QKV_OK);
        CHECK(memcmp(c0, c1, (size_t)(m * nn) * sizeof(float)) == 0);
        CHECK(touched(gm, gb) > 0);
        CHECK(qkv_context_set_workspace(ctx, gm, gb - 1) == QKV_OK);
        CHECK(qkv_sgemm(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, m, nn, k, 1, a, k, bb, nn, 0, c1,
                        nn) == QKV_ERR_OUT_OF_MEMORY);
        CHECK(qkv_context_set_workspace(ctx, NULL, 0) == QKV_OK);
        /* alpha == 0 takes none, and neither does an empty C. */
        CHECK(qkv_sgemm_workspace(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, 0, nn, k, &gb) ==
                  QKV_OK &&
              gb == 0);
        qkv_free(gm);
        free(a), free(bb), free(c0), free(c1);
    }
    CHECK(qkv_sgemm_workspace(ctx, (qkv_gemm_transpose)7, QKV_GEMM_NO_TRANS, 1, 1, 1, &bytes) ==
          QKV_ERR_INVALID_ARGUMENT);
    free(lse), free(dout), free(want);
    qkv_free(mem);
    qkv_context_free(ctx);
    unmake(&b);
}

/* Contexts whose pools have workers, then fork: in the child, the same
 * calls on them give the same bits on fresh workers, and freeing them
 * returns (an alarm fails a child that hangs). */
static void check_fork(void)
{
#ifdef UNDER_TSAN
    /* ThreadSanitizer ends a child of a threaded process that starts
     * threads (die_after_fork), which is what this check does. */
    fprintf(stderr, "test_context: fork check skipped under ThreadSanitizer\n");
#else
    bufs b = make();
    qkv_attention_options opt = {0};
    qkv_context *ctx = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 3);
    qkv_context *ref = test_context(QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 3);
    float *o = run(&b, ctx, &opt), *r = run(&b, ref, &opt), *d = run(&b, NULL, &opt);
    CHECK(o && r && d);
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        alarm(60);
        float *o2 = run(&b, ctx, &opt), *r2 = run(&b, ref, &opt), *d2 = run(&b, NULL, &opt);
        const int ok = same(o2, o, &b) && same(r2, r, &b) && same(d2, d, &b);
        qkv_context_free(ctx);
        qkv_context_free(ref);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (WIFSIGNALED(status))
        fprintf(stderr, "  fork: the child died of signal %d\n", WTERMSIG(status));
    /* The parent's pools are untouched by the child. */
    float *o3 = run(&b, ctx, &opt);
    CHECK(same(o3, o, &b));
    free(o), free(r), free(d), free(o3);
    qkv_context_free(ctx), qkv_context_free(ref);
    unmake(&b);
#endif
}

int main(void)
{
    check_setters();
    check_settings_reach_the_call();
    check_struct_size();
    check_workspace();
    check_fork();
    return test_finish("test_context");
}
