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
    for (qkv_isa isa = QKV_ISA_AVX2; isa <= QKV_ISA_AVX512; isa++) {
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
    check_fork();
    return test_finish("test_context");
}
