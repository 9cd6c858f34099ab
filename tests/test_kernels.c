/* The fast path against the reference, for every instruction set this CPU
 * runs, forced in turn: the vectorised exp and softcap against libm, a
 * seeded random sweep of shapes and options (head dims 1 to 512, sizes
 * that are multiples of no vector or block width, GQA, every mask, weights
 * and lse), bitwise determinism over thread counts, large logits, fully
 * masked blocks and rows, the decode split, the memory the fast path
 * takes for a long sequence, the backward's grad_row against its scalar
 * steps, and the f16 / bf16 widening and narrowing against half.h's
 * scalar conversions. */
#define _XOPEN_SOURCE 700 /* getrusage, fork */
#include "test.h"
#include "util.h"

#include "cpu/kernels/kernels.h"
#include "half.h"
#include "qkv.h"
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_UNDER_ASAN 1
#endif
#endif

static const qkv_isa isas[] = {QKV_ISA_GENERIC, QKV_ISA_AVX2, QKV_ISA_AVX512,
                               QKV_ISA_AVX512_BF16};

static const qkv_cpu_kernels *kernels_of(qkv_isa isa)
{
    switch (isa) {
#ifdef QKV_HAVE_X86_KERNELS
    case QKV_ISA_AVX2: return &qkv_kernels_avx2;
    case QKV_ISA_AVX512: return &qkv_kernels_avx512;
    case QKV_ISA_AVX512_BF16: return &qkv_kernels_avx512bf16;
#endif
    case QKV_ISA_GENERIC: return &qkv_kernels_generic;
    default: return NULL;
    }
}

/* exp against libm's double exp over [-87, 0] and its edges; softcap
 * against tanh. */
static void check_exp_softcap(qkv_isa isa)
{
    const qkv_cpu_kernels *k = kernels_of(isa);
    if (!k) return;
    enum { N = 200003 };
    float *x = test_malloc(N * sizeof *x);
    for (int i = 0; i < N; i++) x[i] = -87.0f * (float)i / (float)(N - 1);
    float *y = test_malloc(N * sizeof *y);
    memcpy(y, x, N * sizeof *y);
    k->exp_inplace(y, N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double want = exp((double)x[i]);
        double rel = fabs((double)y[i] - want) / want;
        if (rel > worst) worst = rel;
    }
    printf("  %s exp: max relative error %.3g over [-87, 0]\n", k->name, worst);
    CHECK(worst < 3e-7);
    float edge[5] = {-INFINITY, NAN, 0.0f, -100.0f, -1e30f};
    k->exp_inplace(edge, 5);
    CHECK(edge[0] == 0.0f && !signbit(edge[0]));
    CHECK(isnan(edge[1]));
    CHECK(edge[2] == 1.0f);
    CHECK(edge[3] == 0.0f && edge[4] == 0.0f);

    for (int i = 0; i < N; i++) x[i] = -60.0f + 120.0f * (float)i / (float)(N - 1);
    memcpy(y, x, N * sizeof *y);
    const float c = 7.5f;
    k->softcap(y, N, c);
    worst = 0;
    for (int i = 0; i < N; i++) {
        double err = fabs((double)y[i] - c * tanh((double)x[i] / c));
        if (err > worst) worst = err;
    }
    printf("  %s softcap: max absolute error %.3g x c\n", k->name, worst / c);
    CHECK(worst < 3e-7 * c);
    free(x);
    free(y);
}

/* grad_row against its contract written out in scalar steps (the set's own
 * exp_inplace for the exp, so the bits must agree), for lengths that are
 * and are not multiples of the vector, intervals that start before 0, end
 * past n or are empty, with and without the softcap factor, and a NaN
 * score inside the interval and one outside it. */
static void check_grad_row(qkv_isa isa)
{
    const qkv_cpu_kernels *k = kernels_of(isa);
    if (!k) return;
    static const int64_t lens[] = {1, 5, 8, 16, 17, 64, 70};
    static const int64_t ivals[][2] = {{0, 1000}, {-5, 3}, {2, 4}, {3, 2}, {-1, -1}, {4, 69}};
    enum { MAXN = 70 };
    test_rng rng = test_rng_seed(7);
    int mismatches = 0, cases = 0;
    for (size_t a = 0; a < sizeof lens / sizeof lens[0]; a++)
        for (size_t b = 0; b < sizeof ivals / sizeof ivals[0]; b++)
            for (int withc = 0; withc < 2; withc++) {
                const int64_t n = lens[a], lo = ivals[b][0], hi = ivals[b][1];
                float s[MAXN], g[MAXN], c[MAXN], ws[MAXN], wg[MAXN];
                for (int64_t x = 0; x < n; x++) {
                    s[x] = (float)(8.0 * test_rand(&rng) - 4.0);
                    g[x] = (float)(2.0 * test_rand(&rng) - 1.0);
                    c[x] = (float)(0.5 + 0.5 * test_rand(&rng));
                }
                if (n > 4) s[3] = NAN, s[n - 1] = NAN;
                const float lse = 3.25f, d = 0.125f, scale = 0.375f;
                for (int64_t x = 0; x < n; x++) ws[x] = x >= lo && x <= hi ? s[x] - lse : -INFINITY;
                k->exp_inplace(ws, n);
                for (int64_t x = 0; x < n; x++) {
                    float r = ws[x] * (g[x] - d);
                    if (withc) r = r * c[x];
                    r = r * scale;
                    wg[x] = ws[x] == 0.0f ? 0.0f : r;
                }
                k->grad_row(s, g, withc ? c : NULL, lse, d, scale, lo, hi, n);
                cases++;
                for (int64_t x = 0; x < n; x++) {
                    const int same_s = isnan(ws[x]) ? isnan(s[x]) : memcmp(&ws[x], &s[x], 4) == 0;
                    const int same_g = isnan(wg[x]) ? isnan(g[x]) : memcmp(&wg[x], &g[x], 4) == 0;
                    if (!same_s || !same_g) mismatches++;
                }
            }
    printf("  %s grad_row: %d rows, %d elements differ from the scalar steps\n", k->name, cases,
           mismatches);
    CHECK(mismatches == 0);
}

typedef struct problem {
    int64_t B, H, Hkv, Lq, Lk, E, Ev;
    float *q, *k, *v, *fmask;
    unsigned char *bmask;
    int64_t *lens;
    qkv_attention_options opt;
} problem;

typedef struct result {
    float *o, *w, *l;
} result;

static void run(const problem *p, qkv_impl impl, qkv_isa isa, int threads, result *r)
{
    const int64_t no = p->B * p->H * p->Lq * p->Ev, nw = p->B * p->H * p->Lq * p->Lk;
    r->o = test_malloc((size_t)no * sizeof(float));
    r->w = test_malloc((size_t)nw * sizeof(float));
    r->l = test_malloc((size_t)(p->B * p->H * p->Lq) * sizeof(float));
    qkv_tensor tq = qkv_tensor_contiguous(p->q, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->E);
    qkv_tensor tk = qkv_tensor_contiguous(p->k, QKV_DTYPE_F32, p->B, p->Hkv, p->Lk, p->E);
    qkv_tensor tv = qkv_tensor_contiguous(p->v, QKV_DTYPE_F32, p->B, p->Hkv, p->Lk, p->Ev);
    qkv_tensor to = qkv_tensor_contiguous(r->o, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->Ev);
    qkv_tensor tw = qkv_tensor_contiguous(r->w, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->Lk);
    qkv_tensor tl = qkv_tensor_contiguous(r->l, QKV_DTYPE_F32, p->B, p->H, p->Lq, 1);
    qkv_context *ctx = test_context(impl, isa, threads);
    qkv_status st = qkv_attention_forward(ctx, &to, &tw, &tl, &tq, &tk, &tv, &p->opt);
    qkv_context_free(ctx);
    CHECK(st == QKV_OK);
    if (st != QKV_OK) fprintf(stderr, "  forward: %s\n", qkv_error_detail());
}

static void result_free(result *r)
{
    free(r->o);
    free(r->w);
    free(r->l);
}

static int same_bytes(const result *a, const result *b, const problem *p)
{
    const size_t no = (size_t)(p->B * p->H * p->Lq * p->Ev), nw = (size_t)(p->B * p->H * p->Lq * p->Lk);
    return memcmp(a->o, b->o, no * 4) == 0 && memcmp(a->w, b->w, nw * 4) == 0 &&
           memcmp(a->l, b->l, (size_t)(p->B * p->H * p->Lq) * 4) == 0;
}

/* One random problem; options drawn from the seed. */
static problem make_problem(test_rng *r, int64_t E, float amp, int64_t max_lq)
{
    problem p;
    memset(&p, 0, sizeof p);
    static const int64_t groups[] = {1, 1, 2, 3, 4};
    p.B = 1 + (int64_t)(test_rand(r) * 2);
    p.Hkv = 1 + (int64_t)(test_rand(r) * 2);
    p.H = p.Hkv * groups[(int)(test_rand(r) * 5)];
    p.Lq = 1 + (int64_t)(test_rand(r) * (double)max_lq);
    p.Lk = 1 + (int64_t)(test_rand(r) * 300);
    p.E = E;
    p.Ev = test_rand(r) < 0.5 ? E : 1 + (int64_t)(test_rand(r) * 70);
    p.q = test_rand_f32(r, p.B * p.H * p.Lq * p.E, -amp, amp);
    p.k = test_rand_f32(r, p.B * p.Hkv * p.Lk * p.E, -amp, amp);
    p.v = test_rand_f32(r, p.B * p.Hkv * p.Lk * p.Ev, -1, 1);
    double u = test_rand(r);
    p.opt.causal = u < 0.4;
    p.opt.align = test_rand(r) < 0.5 ? QKV_ALIGN_TOP_LEFT : QKV_ALIGN_BOTTOM_RIGHT;
    if (test_rand(r) < 0.3) {
        p.opt.use_window = 1;
        p.opt.window_left = (int64_t)(test_rand(r) * 40) - 5;
        p.opt.window_right = (int64_t)(test_rand(r) * 40) - 5;
    }
    if (test_rand(r) < 0.3) p.opt.softcap = 1.0 + 20.0 * test_rand(r);
    if (test_rand(r) < 0.3) {
        p.lens = test_malloc((size_t)p.B * sizeof *p.lens);
        for (int64_t b = 0; b < p.B; b++) p.lens[b] = (int64_t)(test_rand(r) * (double)(p.Lk + 1));
        p.opt.kv_lens = p.lens;
    }
    u = test_rand(r);
    if (u < 0.2) { /* float mask (Lq, Lk) with some -inf */
        p.fmask = test_rand_f32(r, p.Lq * p.Lk, -2, 2);
        for (int64_t x = 0; x < p.Lq * p.Lk; x++)
            if (test_rand(r) < 0.1) p.fmask[x] = -INFINITY;
        p.opt.mask = qkv_tensor_contiguous(p.fmask, QKV_DTYPE_F32, 1, 1, p.Lq, p.Lk);
    } else if (u < 0.4) { /* bool mask (B, 1, Lq, Lk) */
        p.bmask = test_malloc((size_t)(p.B * p.Lq * p.Lk));
        for (int64_t x = 0; x < p.B * p.Lq * p.Lk; x++) p.bmask[x] = test_rand(r) < 0.8;
        p.opt.mask = qkv_tensor_contiguous(p.bmask, QKV_DTYPE_BOOL, p.B, 1, p.Lq, p.Lk);
    }
    if (test_rand(r) < 0.2) p.opt.scale = 0.05 + test_rand(r);
    return p;
}

static void free_problem(problem *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->fmask);
    free(p->bmask);
    free(p->lens);
}

static void compare(const char *what, const problem *p, const result *got, const result *want,
                    qkv_isa isa, int seed)
{
    const int64_t no = p->B * p->H * p->Lq * p->Ev, nw = p->B * p->H * p->Lq * p->Lk;
    double eo = test_rel_l2(got->o, want->o, no), ew = test_rel_l2(got->w, want->w, nw),
           el = test_rel_l2(got->l, want->l, p->B * p->H * p->Lq);
    int ok = eo <= 1e-5 && ew <= 1e-5 && el <= 1e-5;
    CHECK(ok);
    if (!ok)
        fprintf(stderr,
                "  %s %s seed %d: B=%lld H=%lld Hkv=%lld Lq=%lld Lk=%lld E=%lld Ev=%lld causal=%d "
                "align=%d window=%d(%lld,%lld) softcap=%g lens=%d mask=%s: rel L2 O %.3g W %.3g "
                "lse %.3g\n",
                what, qkv_isa_name(isa), seed, (long long)p->B, (long long)p->H,
                (long long)p->Hkv, (long long)p->Lq, (long long)p->Lk, (long long)p->E,
                (long long)p->Ev, p->opt.causal, (int)p->opt.align, p->opt.use_window,
                (long long)p->opt.window_left, (long long)p->opt.window_right, p->opt.softcap,
                p->lens != NULL, p->fmask ? "float" : p->bmask ? "bool" : "none", eo, ew, el);
}

/* Random problems with Lq up to max_lq; a sweep with max_lq at most 4
 * exercises the row-major path decode-shaped calls take. */
static void check_sweep(const char *name, int64_t max_lq, int seed0)
{
    static const int64_t dims[] = {1, 3, 8, 17, 64, 80, 128, 256, 512};
    int cases = 0;
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        for (int rep = 0; rep < (dims[d] >= 256 ? 2 : 5); rep++) {
            int seed = seed0 + (int)(d * 100 + (size_t)rep);
            test_rng r = test_rng_seed((uint64_t)seed);
            problem p = make_problem(&r, dims[d], 1.0f, max_lq);
            result want;
            run(&p, QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 2, &want);
            for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
                if (!qkv_isa_supported(isas[i])) continue;
                result got, got1;
                run(&p, QKV_IMPL_AUTO, isas[i], 2, &got);
                compare(name, &p, &got, &want, isas[i], seed);
                run(&p, QKV_IMPL_AUTO, isas[i], 1, &got1);
                CHECK(same_bytes(&got, &got1, &p)); /* any thread count, same bits */
                result_free(&got);
                result_free(&got1);
                cases++;
            }
            result_free(&want);
            free_problem(&p);
        }
    }
    printf("  %s: %d problem x instruction-set runs\n", name, cases);
}

/* Scores in the thousands: the running max keeps everything finite. */
static void check_large_logits(void)
{
    test_rng r = test_rng_seed(77);
    problem p = make_problem(&r, 64, 12.0f, 150);
    result want;
    run(&p, QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 2, &want);
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (!qkv_isa_supported(isas[i])) continue;
        result got;
        run(&p, QKV_IMPL_AUTO, isas[i], 2, &got);
        compare("large logits", &p, &got, &want, isas[i], 77);
        result_free(&got);
    }
    result_free(&want);
    free_problem(&p);
}

/* Long keys with few queries take the split-and-merge path (decode);
 * masks that empty whole blocks and rows. */
static void check_decode_and_empty_blocks(void)
{
    for (int c = 0; c < 4; c++) {
        test_rng r = test_rng_seed(500 + (uint64_t)c);
        problem p = make_problem(&r, c == 3 ? 128 : 40, 1.0f, 150);
        free(p.q);
        free(p.k);
        free(p.v);
        p.B = 1;
        p.H = 8;
        p.Hkv = 2;
        p.Lq = c == 0 ? 1 : 3;
        p.Lk = 3000 + c * 1111;
        p.Ev = p.E;
        p.q = test_rand_f32(&r, p.B * p.H * p.Lq * p.E, -1, 1);
        p.k = test_rand_f32(&r, p.B * p.Hkv * p.Lk * p.E, -1, 1);
        p.v = test_rand_f32(&r, p.B * p.Hkv * p.Lk * p.Ev, -1, 1);
        free(p.fmask);
        free(p.bmask);
        free(p.lens);
        p.fmask = NULL;
        p.bmask = NULL;
        p.lens = NULL;
        memset(&p.opt, 0, sizeof p.opt);
        if (c == 1) { /* a window far from the start: most blocks empty */
            p.opt.use_window = 1;
            p.opt.window_left = 300;
            p.opt.window_right = 0;
            p.opt.align = QKV_ALIGN_BOTTOM_RIGHT;
        }
        if (c == 2) { /* causal top-left with Lq << Lk: rows see only the first keys */
            p.opt.causal = 1;
        }
        result want;
        run(&p, QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 2, &want);
        for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
            if (!qkv_isa_supported(isas[i])) continue;
            result got, got3;
            run(&p, QKV_IMPL_AUTO, isas[i], 2, &got);
            run(&p, QKV_IMPL_AUTO, isas[i], 3, &got3);
            compare("decode", &p, &got, &want, isas[i], 500 + c);
            CHECK(same_bytes(&got, &got3, &p));
            result_free(&got);
            result_free(&got3);
        }
        result_free(&want);
        free_problem(&p);
    }
}

/* Ev = 0 with no value or output data at all (an empty view may have a
 * NULL pointer): only the log-sum-exp is computed, and it matches the
 * reference. */
static void check_empty_values(void)
{
    test_rng r = test_rng_seed(9);
    float *q = test_rand_f32(&r, 2 * 5 * 4, -1, 1), *k = test_rand_f32(&r, 2 * 3 * 4, -1, 1);
    qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, 1, 2, 5, 4);
    qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, 1, 2, 3, 4);
    qkv_tensor tv = qkv_tensor_contiguous(NULL, QKV_DTYPE_F32, 1, 2, 3, 0);
    qkv_tensor to = qkv_tensor_contiguous(NULL, QKV_DTYPE_F32, 1, 2, 5, 0);
    to.stride[2] = 7; /* a nonzero stride over no elements */
    float want[10], got[10];
    qkv_tensor tl = qkv_tensor_contiguous(want, QKV_DTYPE_F32, 1, 2, 5, 1);
    qkv_attention_options opt = {0};
    qkv_context *ref = test_context(QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 0);
    CHECK(qkv_attention_forward(ref, &to, NULL, &tl, &tq, &tk, &tv, &opt) == QKV_OK);
    qkv_context_free(ref);
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (!qkv_isa_supported(isas[i])) continue;
        qkv_context *f = test_context(QKV_IMPL_AUTO, isas[i], 0);
        tl.data = got;
        CHECK(qkv_attention_forward(f, &to, NULL, &tl, &tq, &tk, &tv, &opt) == QKV_OK);
        qkv_context_free(f);
        CHECK(test_rel_l2(got, want, 10) <= 1e-6);
        tl.data = want;
    }
    free(q);
    free(k);
}

/* The fast backward against the reference backward on random problems,
 * every instruction set, and the same bits for 1 and 3 threads. */
static void check_backward_sweep(void)
{
    int cases = 0;
    for (int seed = 0; seed < 12; seed++) {
        test_rng r = test_rng_seed(900 + (uint64_t)seed);
        static const int64_t dims[] = {1, 7, 16, 33, 64, 80, 128};
        problem p = make_problem(&r, dims[seed % 7], 1.0f, 150);
        const int64_t no = p.B * p.H * p.Lq * p.Ev, nq = p.B * p.H * p.Lq * p.E,
                      nk = p.B * p.Hkv * p.Lk * p.E, nv = p.B * p.Hkv * p.Lk * p.Ev;
        result fwd;
        run(&p, QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 2, &fwd);
        float *dout = test_rand_f32(&r, no, -1, 1);
        qkv_tensor tq = qkv_tensor_contiguous(p.q, QKV_DTYPE_F32, p.B, p.H, p.Lq, p.E);
        qkv_tensor tk = qkv_tensor_contiguous(p.k, QKV_DTYPE_F32, p.B, p.Hkv, p.Lk, p.E);
        qkv_tensor tv = qkv_tensor_contiguous(p.v, QKV_DTYPE_F32, p.B, p.Hkv, p.Lk, p.Ev);
        qkv_tensor to = qkv_tensor_contiguous(fwd.o, QKV_DTYPE_F32, p.B, p.H, p.Lq, p.Ev);
        qkv_tensor tl = qkv_tensor_contiguous(fwd.l, QKV_DTYPE_F32, p.B, p.H, p.Lq, 1);
        qkv_tensor tdo = qkv_tensor_contiguous(dout, QKV_DTYPE_F32, p.B, p.H, p.Lq, p.Ev);
        float *g[3][3];
        for (int x = 0; x < 3; x++) {
            g[x][0] = test_malloc((size_t)nq * 4);
            g[x][1] = test_malloc((size_t)nk * 4);
            g[x][2] = test_malloc((size_t)nv * 4);
        }
        for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
            if (!qkv_isa_supported(isas[i])) continue;
            for (int x = 0; x < 3; x++) { /* 0: reference, 1: fast 1 thread, 2: fast 3 threads */
                qkv_tensor tdq = qkv_tensor_contiguous(g[x][0], QKV_DTYPE_F32, p.B, p.H, p.Lq, p.E);
                qkv_tensor tdk = qkv_tensor_contiguous(g[x][1], QKV_DTYPE_F32, p.B, p.Hkv, p.Lk, p.E);
                qkv_tensor tdv = qkv_tensor_contiguous(g[x][2], QKV_DTYPE_F32, p.B, p.Hkv, p.Lk, p.Ev);
                qkv_context *ctx = test_context(x == 0 ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO,
                                                isas[i], x == 2 ? 3 : 1);
                CHECK(qkv_attention_backward(ctx, &tdq, &tdk, &tdv, NULL, &tdo, &tq, &tk, &tv, &to,
                                             &tl, &p.opt) == QKV_OK);
                qkv_context_free(ctx);
            }
            double e0 = test_rel_l2(g[1][0], g[0][0], nq), e1 = test_rel_l2(g[1][1], g[0][1], nk),
                   e2 = test_rel_l2(g[1][2], g[0][2], nv);
            int ok = e0 <= 1e-5 && e1 <= 1e-5 && e2 <= 1e-5;
            CHECK(ok);
            if (!ok)
                fprintf(stderr, "  backward %s seed %d (E %lld Lq %lld Lk %lld): dQ %.3g dK %.3g "
                        "dV %.3g\n", qkv_isa_name(isas[i]), seed, (long long)p.E, (long long)p.Lq,
                        (long long)p.Lk, e0, e1, e2);
            CHECK(memcmp(g[1][0], g[2][0], (size_t)nq * 4) == 0 &&
                  memcmp(g[1][1], g[2][1], (size_t)nk * 4) == 0 &&
                  memcmp(g[1][2], g[2][2], (size_t)nv * 4) == 0);
            cases++;
        }
        for (int x = 0; x < 3; x++)
            for (int y = 0; y < 3; y++) free(g[x][y]);
        free(dout);
        result_free(&fwd);
        free_problem(&p);
    }
    printf("  backward sweep: %d problem x instruction-set runs\n", cases);
}

/* The one-pass backward adds every key tile's share of dQ in key order,
 * tiles waiting for each other: many tiles per kv head, more threads than
 * CPUs, causal with a window (blocks skipped but passed through in turn),
 * and a dQ with strided rows (accumulated aside, then copied) all give the
 * same bits as one thread, and the reference's values. */
static void check_backward_many_tiles(void)
{
    test_rng r = test_rng_seed(4242);
    const int64_t B = 2, H = 4, Hkv = 2, Lq = 300, Lk = 1000, E = 40, Ev = 24;
    const int64_t nq = B * H * Lq * E, nk = B * Hkv * Lk * E, nv = B * Hkv * Lk * Ev,
                  no = B * H * Lq * Ev, nl = B * H * Lq;
    float *q = test_rand_f32(&r, nq, -1, 1), *k = test_rand_f32(&r, nk, -1, 1);
    float *v = test_rand_f32(&r, nv, -1, 1), *dout = test_rand_f32(&r, no, -1, 1);
    float *o = test_malloc((size_t)no * 4), *l = test_malloc((size_t)nl * 4);
    qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, B, H, Lq, E);
    qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, B, Hkv, Lk, E);
    qkv_tensor tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, B, Hkv, Lk, Ev);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, B, H, Lq, Ev);
    qkv_tensor tl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, B, H, Lq, 1);
    qkv_tensor tdo = qkv_tensor_contiguous(dout, QKV_DTYPE_F32, B, H, Lq, Ev);
    qkv_attention_options opt = {0};
    opt.causal = 1;
    opt.align = QKV_ALIGN_BOTTOM_RIGHT;
    opt.use_window = 1;
    opt.window_left = 333;
    opt.window_right = -1;
    CHECK(qkv_attention_forward(NULL, &to, NULL, &tl, &tq, &tk, &tv, &opt) == QKV_OK);
    float *g[4][3];
    static const int threads[4] = {0, 1, 2, 5}; /* 0: the reference */
    for (int x = 0; x < 4; x++) {
        g[x][0] = test_malloc((size_t)nq * 4 * 2); /* room for strided rows */
        g[x][1] = test_malloc((size_t)nk * 4);
        g[x][2] = test_malloc((size_t)nv * 4);
        qkv_tensor tdq = qkv_tensor_contiguous(g[x][0], QKV_DTYPE_F32, B, H, Lq, E);
        if (x == 3) { /* every other float: dQ's rows are strided */
            for (int d = 0; d < 4; d++) tdq.stride[d] *= 2;
        }
        qkv_tensor tdk = qkv_tensor_contiguous(g[x][1], QKV_DTYPE_F32, B, Hkv, Lk, E);
        qkv_tensor tdv = qkv_tensor_contiguous(g[x][2], QKV_DTYPE_F32, B, Hkv, Lk, Ev);
        qkv_context *ctx = test_context(x == 0 ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO, QKV_ISA_AUTO,
                                        x == 0 ? 2 : threads[x]);
        CHECK(qkv_attention_backward(ctx, &tdq, &tdk, &tdv, NULL, &tdo, &tq, &tk, &tv, &to, &tl,
                                     &opt) == QKV_OK);
        qkv_context_free(ctx);
        if (x == 3) /* gather the strided rows back */
            for (int64_t e = 0; e < nq; e++) g[x][0][e] = g[x][0][2 * e];
    }
    CHECK(test_rel_l2(g[1][0], g[0][0], nq) <= 1e-5);
    CHECK(test_rel_l2(g[1][1], g[0][1], nk) <= 1e-5);
    CHECK(test_rel_l2(g[1][2], g[0][2], nv) <= 1e-5);
    for (int x = 2; x < 4; x++)
        for (int y = 0; y < 3; y++)
            CHECK(memcmp(g[1][y], g[x][y], (size_t)(y == 0 ? nq : y == 1 ? nk : nv) * 4) == 0);
    for (int x = 0; x < 4; x++)
        for (int y = 0; y < 3; y++) free(g[x][y]);
    free(q);
    free(k);
    free(v);
    free(dout);
    free(o);
    free(l);
}

/* No queries (Lq = 0, or H = 0): the fast backward, like the reference,
 * succeeds and writes zero dK and dV; the empty tensors may have no data. */
static void check_backward_empty(void)
{
    const int64_t Lk = 70, E = 8, Ev = 5;
    for (int c = 0; c < 2; c++) {
        const int64_t H = c == 0 ? 2 : 0, Hkv = c == 0 ? 1 : 1, Lq = c == 0 ? 0 : 3;
        test_rng r = test_rng_seed(31 + (uint64_t)c);
        float *k = test_rand_f32(&r, Hkv * Lk * E, -1, 1), *v = test_rand_f32(&r, Hkv * Lk * Ev, -1, 1);
        float *dk = test_rand_f32(&r, Hkv * Lk * E, -1, 1), *dv = test_rand_f32(&r, Hkv * Lk * Ev, -1, 1);
        qkv_tensor tq = qkv_tensor_contiguous(NULL, QKV_DTYPE_F32, 1, H, Lq, E);
        qkv_tensor to = qkv_tensor_contiguous(NULL, QKV_DTYPE_F32, 1, H, Lq, Ev);
        qkv_tensor tl = qkv_tensor_contiguous(NULL, QKV_DTYPE_F32, 1, H, Lq, 1);
        qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, 1, Hkv, Lk, E);
        qkv_tensor tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, 1, Hkv, Lk, Ev);
        qkv_tensor tdk = qkv_tensor_contiguous(dk, QKV_DTYPE_F32, 1, Hkv, Lk, E);
        qkv_tensor tdv = qkv_tensor_contiguous(dv, QKV_DTYPE_F32, 1, Hkv, Lk, Ev);
        for (int impl = 0; impl < 2; impl++) {
            qkv_attention_options opt = {0};
            qkv_context *ctx = test_context(impl ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO,
                                            QKV_ISA_AUTO, 0);
            qkv_status st = qkv_attention_backward(ctx, &tq, &tdk, &tdv, NULL, &to, &tq, &tk, &tv,
                                                   &to, &tl, &opt);
            qkv_context_free(ctx);
            CHECK(st == QKV_OK);
            if (st) fprintf(stderr, "  empty backward %d/%d: %s\n", c, impl, qkv_error_detail());
            int zero = 1;
            for (int64_t x = 0; x < Hkv * Lk * E; x++) zero &= dk[x] == 0.0f;
            for (int64_t x = 0; x < Hkv * Lk * Ev; x++) zero &= dv[x] == 0.0f;
            CHECK(zero);
        }
        free(k);
        free(v);
        free(dk);
        free(dv);
    }
}

/* A forced set the CPU lacks fails cleanly. */
static void check_unsupported(void)
{
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (qkv_isa_supported(isas[i])) continue;
        float x = 1, y = 0;
        qkv_tensor t = qkv_tensor_contiguous(&x, QKV_DTYPE_F32, 1, 1, 1, 1);
        qkv_tensor o = qkv_tensor_contiguous(&y, QKV_DTYPE_F32, 1, 1, 1, 1);
        qkv_attention_options opt = {0};
        qkv_context *ctx = test_context(QKV_IMPL_AUTO, isas[i], 0);
        CHECK(qkv_attention_forward(ctx, &o, NULL, NULL, &t, &t, &t, &opt) == QKV_ERR_UNSUPPORTED);
        CHECK(strstr(qkv_error_detail(), "isa") != NULL);
        qkv_context_free(ctx);
    }
    CHECK(qkv_isa_supported(QKV_ISA_GENERIC));
    CHECK(qkv_isa_auto() != QKV_ISA_AUTO || getenv("QKV_ISA") != NULL);
}

/* Peak memory of a long self-attention run in a child process: at most
 * 8 MiB beyond the inputs and outputs (the bound is 32 MiB at
 * L = 65536; the tiles take well under 1 MiB), never anything of size
 * Lq x Lk (1 GiB here). Skipped under AddressSanitizer, whose shadow
 * memory counts in the resident size. */
static void check_memory_bound(void)
{
#ifdef TEST_UNDER_ASAN
    printf("  memory bound: skipped under AddressSanitizer\n");
    return;
#endif
    const int64_t L = 16384, E = 32;
    fflush(stdout); /* the child must not repeat what the parent buffered */
    pid_t pid = fork();
    if (pid == 0) {
        float *q = calloc((size_t)(L * E), sizeof(float)), *o = calloc((size_t)(L * E), sizeof(float));
        if (!q || !o) _exit(3);
        /* Touch every page of the inputs and the output first, so that the
         * peak below grows only by what the call itself allocates. */
        for (int64_t i = 0; i < L * E; i++) {
            q[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
            o[i] = 1.0f;
        }
        struct rusage before;
        getrusage(RUSAGE_SELF, &before);
        qkv_tensor t = qkv_tensor_contiguous(q, QKV_DTYPE_F32, 1, 1, L, E);
        qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, 1, 1, L, E);
        qkv_attention_options opt = {0};
        opt.causal = 1;
        if (qkv_attention_forward(NULL, &to, NULL, NULL, &t, &t, &t, &opt) != QKV_OK) _exit(4);
        struct rusage after;
        getrusage(RUSAGE_SELF, &after);
        long grew_kib = after.ru_maxrss - before.ru_maxrss;
        printf("  memory bound: L = %lld self-attention grew the peak by %ld KiB\n",
               (long long)L, grew_kib);
        fflush(stdout);
        _exit(grew_kib <= 8 * 1024 ? 0 : 5);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Widening: every one of the 65536 patterns, at odd offsets and lengths
 * (vector bodies and scalar tails), equals half.h's; narrowing: the
 * floats around every rounding boundary of both formats (each 16-bit
 * value, the midpoints to its neighbours and one float-ulp either side),
 * overflow, subnormals, infinities and NaNs, bit for bit. */
static void check_widen_narrow(qkv_isa isa)
{
    const qkv_cpu_kernels *k = kernels_of(isa);
    if (!k) return;
    enum { N = 65536 };
    uint16_t *h = test_malloc((N + 1) * sizeof *h);
    float *f = test_malloc((N + 1) * sizeof *f);
    for (int fmt = 0; fmt < 2; fmt++) {
        int64_t bad = 0;
        for (int i = 0; i < N; i++) h[i + 1] = (uint16_t)i;
        (fmt ? k->widen_bf16 : k->widen_f16)(f + 1, h + 1, N); /* misaligned on purpose */
        for (int i = 0; i < N; i++) {
            const float want = fmt ? qkv_bf16_to_f32((uint16_t)i) : qkv_f16_to_f32((uint16_t)i);
            if (memcmp(&f[i + 1], &want, sizeof want) != 0 && !(isnan(want) && isnan(f[i + 1])))
                bad++;
        }
        CHECK(bad == 0);
        if (bad) fprintf(stderr, "  %s widen %s: %lld patterns differ\n", qkv_isa_name(isa),
                         fmt ? "bf16" : "f16", (long long)bad);
    }
    enum { M = 6 * 65536 + 16 };
    float *x = test_malloc(M * sizeof *x);
    uint16_t *got = test_malloc((M + 1) * sizeof *got);
    for (int fmt = 0; fmt < 2; fmt++) {
        int64_t n = 0;
        for (int i = 0; i < 65536; i++) {
            const float v = fmt ? qkv_bf16_to_f32((uint16_t)i) : qkv_f16_to_f32((uint16_t)i);
            const float next =
                fmt ? qkv_bf16_to_f32((uint16_t)(i + 1)) : qkv_f16_to_f32((uint16_t)(i + 1));
            if (!isfinite(v)) {
                x[n++] = v;
                continue;
            }
            const float mid = isfinite(next) && (i & 0x7fff) != 0x7fff ? v + (next - v) / 2 : v;
            x[n++] = v;
            x[n++] = mid;
            x[n++] = nextafterf(mid, INFINITY);
            x[n++] = nextafterf(mid, -INFINITY);
        }
        const float extra[] = {1e30f, -1e30f, 65504.0f, 65520.0f, 65519.99f, 3.4e38f, 1e-30f,
                               -1e-30f, 1e-40f, 0x1p-25f, 0x1p-24f, 0x1.8p-25f, INFINITY,
                               -INFINITY, NAN, -NAN};
        for (size_t e = 0; e < sizeof extra / sizeof extra[0]; e++) x[n++] = extra[e];
        (fmt ? k->narrow_bf16 : k->narrow_f16)(got + 1, x, n);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            const uint16_t want = fmt ? qkv_f32_to_bf16(x[i]) : qkv_f32_to_f16(x[i]);
            if (got[i + 1] != want) bad++;
        }
        CHECK(bad == 0);
        if (bad) fprintf(stderr, "  %s narrow %s: %lld of %lld values differ\n",
                         qkv_isa_name(isa), fmt ? "bf16" : "f16", (long long)bad, (long long)n);
    }
    free(h), free(f), free(x), free(got);
}

/* The block formats' dequantization: every set's kernels give quant.c's
 * bits, for random blocks of every scale at odd addresses (NaN blocks
 * included). */
static void check_dequant(qkv_isa isa)
{
    const qkv_cpu_kernels *k = kernels_of(isa);
    if (!k) return;
    enum { BLOCKS = 300 };
    test_rng r = test_rng_seed(9);
    float *x = test_malloc(BLOCKS * 32 * sizeof *x);
    for (int i = 0; i < BLOCKS; i++)
        for (int j = 0; j < 32; j++)
            x[i * 32 + j] = i == 7 && j == 3 ? NAN : ldexpf((float)(2 * test_rand(&r) - 1), i % 30 - 15);
    unsigned char *b = test_malloc(BLOCKS * QKV_Q8_0_BYTES + 1);
    float *want = test_malloc(BLOCKS * 32 * sizeof *want), *got = test_malloc((BLOCKS * 32 + 1) * sizeof *got);
    for (int fmt = 0; fmt < 2; fmt++) {
        (fmt ? qkv_q4_0_quantize : qkv_q8_0_quantize)(b + 1, x, BLOCKS);
        (fmt ? qkv_q4_0_dequantize : qkv_q8_0_dequantize)(want, b + 1, BLOCKS);
        (fmt ? k->dequant_q4_0 : k->dequant_q8_0)(got + 1, b + 1, BLOCKS);
        int64_t bad = 0;
        for (int i = 0; i < BLOCKS * 32; i++)
            bad += memcmp(&want[i], &got[i + 1], sizeof(float)) != 0 && !(isnan(want[i]) && isnan(got[i + 1]));
        CHECK(bad == 0);
        if (bad) fprintf(stderr, "  %s dequant %s: %lld values differ\n", qkv_isa_name(isa),
                         fmt ? "q4_0" : "q8_0", (long long)bad);
    }
    free(x), free(b), free(want), free(got);
}

/* ------------------------------------------------------------ bf16 pairs */

static uint16_t bf(float x) { return qkv_f32_to_bf16(x); }
static double wide(uint32_t pair, int hi) { return qkv_bf16_to_f32((uint16_t)(hi ? pair >> 16 : pair)); }
/* 64-byte aligned, as the driver's buffers are (a multiple of 64 bytes,
 * as aligned_alloc wants). */
static void *aligned(size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (!p) abort();
    return p;
}

/* qk_pairs on one tile of 16 rows, one key and e = 2 * np, every row the
 * same: the queries' pairs q, the key's patterns kr. */
static float qk_one(const qkv_cpu_kernels *k, const uint32_t *q, const uint16_t *kr, int np)
{
    uint32_t *qp = aligned((size_t)np * 16 * sizeof *qp);
    float *st = aligned(16 * sizeof *st);
    for (int x = 0; x < np; x++)
        for (int i = 0; i < 16; i++) qp[x * 16 + i] = q[x];
    k->qk_pairs(qp, 16, kr, 2 * np, st, 16, 16, 1, 2 * np, 1.0f);
    const float r = st[5];
    free(qp), free(st);
    return r;
}

/* The pair kernels of k (a set that has them). VDPBF16PS by hand, as
 * Intel's manual gives it: the high products first, each step rounded
 * (1 + 2^-24 + 2^-23 gives 1 + 2^-23 in that order, 1 + 2^-22 in the
 * other or summed exactly), and a denormal input read as zero. The
 * emulation (spec) is held to both; a real set (spec 0) is reported if it
 * differs, not failed: the manual, not this test, is its authority, and
 * the random tiles below hold it to the exact sums. Then random tiles of
 * every kernel against sums in double: qk_pairs and pv_pairs within the
 * rounding of an f32 sum of their terms, pack_pairs and pair_rows bit for
 * bit (pack_pairs as half.h rounds, the lone key of an odd n paired with
 * 0); a real set is also compared with the emulation, bit for bit, and a
 * difference reported. */
static void check_pairs(const qkv_cpu_kernels *k, int spec)
{
    const uint32_t one = bf(1.0f), tiny = bf(0x1p-12f);
    const uint32_t q_order[2] = {one, tiny | tiny << 16};
    const uint16_t k_order[4] = {bf(1.0f), 0, bf(0x1p-11f), bf(0x1p-12f)};
    const float order = qk_one(k, q_order, k_order, 2);
    const uint32_t q_daz[1] = {0x0001u}; /* 2^-133, a denormal */
    const uint16_t k_daz[2] = {bf(0x1p100f), 0};
    const float daz = qk_one(k, q_daz, k_daz, 1);
    const int order_ok = order == 1.0f + 0x1p-23f, daz_ok = daz == 0.0f;
    if (spec) {
        CHECK(order_ok);
        CHECK(daz_ok);
    }
    if (!order_ok || !daz_ok)
        fprintf(stderr, "  %s pairs: %s (1 + 2^-24 + 2^-23 gave 1 + %a; 2^-133 * 2^100 gave %a)\n",
                k->name, spec ? "differ from the manual" : "note: the CPU differs from the manual",
                (double)order - 1.0, (double)daz);

    test_rng r = test_rng_seed(77);
    const qkv_cpu_kernels *emu = &qkv_kernels_generic_pairs;
    static const int64_t ms[] = {16, 48, 64, 80}, ns[] = {1, 2, 3, 5, 6, 7, 12, 13, 127, 128},
                         es[] = {1, 2, 3, 17, 64, 80};
    int64_t differ = 0, worst_qk = 0, worst_pv = 0;
    for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
        for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
            for (size_t c = 0; c < sizeof es / sizeof es[0]; c++) {
                const int64_t m = ms[a], n = ns[b], e = es[c], ev = e, np = (e + 1) / 2,
                              nk = (n + 1) / 2;
                uint32_t *qp = aligned((size_t)(np * m) * 4);
                uint16_t *kh = test_malloc((size_t)(n * e) * 2);
                float *st = aligned((size_t)(n * m) * 4), *st2 = aligned((size_t)(n * m) * 4);
                for (int64_t x = 0; x < np; x++)
                    for (int64_t i = 0; i < m; i++) {
                        const uint32_t lo = bf((float)test_rand(&r) * 2 - 1);
                        const uint32_t hi = 2 * x + 1 < e ? bf((float)test_rand(&r) * 2 - 1) : 0;
                        qp[x * m + i] = lo | hi << 16;
                    }
                for (int64_t x = 0; x < n * e; x++) kh[x] = bf((float)test_rand(&r) * 2 - 1);
                k->qk_pairs(qp, m, kh, e, st, m, m, n, e, 0.37f);
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = 0; i < m; i++) {
                        double want = 0, mag = 0;
                        for (int64_t d = 0; d < e; d++) {
                            const double t = wide(qp[d / 2 * m + i], d % 2) *
                                             qkv_bf16_to_f32(kh[j * e + d]);
                            want += t;
                            mag += fabs(t);
                        }
                        want *= 0.37f;
                        if (fabs(st[j * m + i] - want) > (2.0 * (double)e + 2) * 0x1p-24 * mag * 0.37f + 1e-30)
                            worst_qk++;
                    }
                if (!spec) {
                    emu->qk_pairs(qp, m, kh, e, st2, m, m, n, e, 0.37f);
                    differ += memcmp(st, st2, (size_t)(n * m) * 4) != 0;
                }
                /* The weights: values in [0, 1] as a softmax leaves them. */
                for (int64_t x = 0; x < n * m; x++) st[x] = (float)test_rand(&r);
                uint32_t *pp = aligned((size_t)(nk * m) * 4);
                k->pack_pairs(pp, m, st, m, m, n);
                int64_t bad_pack = 0;
                for (int64_t x = 0; x < nk; x++)
                    for (int64_t i = 0; i < m; i++) {
                        const uint32_t want = bf(st[2 * x * m + i]) |
                                              (2 * x + 1 < n ? (uint32_t)bf(st[(2 * x + 1) * m + i]) << 16 : 0u);
                        bad_pack += pp[x * m + i] != want;
                    }
                CHECK(bad_pack == 0);
                /* V as pairs of keys, by pair_rows (the lone key by hand). */
                uint16_t *vh = test_malloc((size_t)(n * ev) * 2);
                for (int64_t x = 0; x < n * ev; x++) vh[x] = bf((float)test_rand(&r) * 2 - 1);
                uint32_t *vp = test_malloc((size_t)(nk * ev) * 4);
                int64_t bad_rows = 0;
                for (int64_t x = 0; x < nk; x++) {
                    if (2 * x + 1 < n) {
                        k->pair_rows(vp + x * ev, vh + 2 * x * ev, vh + (2 * x + 1) * ev, ev);
                        for (int64_t cc = 0; cc < ev; cc++)
                            bad_rows += vp[x * ev + cc] !=
                                        ((uint32_t)vh[2 * x * ev + cc] | (uint32_t)vh[(2 * x + 1) * ev + cc] << 16);
                    } else {
                        for (int64_t cc = 0; cc < ev; cc++) vp[x * ev + cc] = vh[2 * x * ev + cc];
                    }
                }
                CHECK(bad_rows == 0);
                float *ot = aligned((size_t)(ev * m) * 4), *ot0 = test_malloc((size_t)(ev * m) * 4);
                float *ot2 = aligned((size_t)(ev * m) * 4), *al = aligned((size_t)m * 4);
                for (int64_t x = 0; x < ev * m; x++) ot0[x] = ot[x] = ot2[x] = (float)test_rand(&r) * 4 - 2;
                for (int64_t i = 0; i < m; i++) al[i] = (float)test_rand(&r);
                k->pv_pairs(pp, m, vp, ev, ot, m, al, m, n, ev);
                for (int64_t cc = 0; cc < ev; cc++)
                    for (int64_t i = 0; i < m; i++) {
                        double want = (double)(ot0[cc * m + i] * al[i]), mag = fabs(want);
                        for (int64_t j = 0; j < n; j++) {
                            const double t = wide(pp[j / 2 * m + i], j % 2) * wide(vp[j / 2 * ev + cc], j % 2);
                            want += t;
                            mag += fabs(t);
                        }
                        if (fabs(ot[cc * m + i] - want) > (2.0 * (double)n + 4) * 0x1p-24 * mag + 1e-30)
                            worst_pv++;
                    }
                if (!spec) {
                    emu->pv_pairs(pp, m, vp, ev, ot2, m, al, m, n, ev);
                    differ += memcmp(ot, ot2, (size_t)(ev * m) * 4) != 0;
                }
                free(qp), free(kh), free(st), free(st2), free(pp), free(vh), free(vp);
                free(ot), free(ot0), free(ot2), free(al);
            }
    CHECK(worst_qk == 0);
    CHECK(worst_pv == 0);
    if (worst_qk || worst_pv)
        fprintf(stderr, "  %s pairs: %lld scores and %lld outputs off their exact sums\n", k->name,
                (long long)worst_qk, (long long)worst_pv);
    if (differ)
        fprintf(stderr, "  %s pairs: note: %lld tiles differ from the emulation's bits\n", k->name,
                (long long)differ);
    /* pair_rows at odd addresses and lengths (vector bodies, scalar tails). */
    uint16_t a[80], b2[80];
    uint32_t d[80];
    for (int i = 0; i < 80; i++) a[i] = (uint16_t)(i * 977u), b2[i] = (uint16_t)(i * 31u + 7u);
    int64_t bad = 0;
    for (int len = 0; len < 70; len++) {
        k->pair_rows(d + 1, a + 1, b2 + 3, len);
        for (int i = 0; i < len; i++) bad += d[1 + i] != ((uint32_t)a[1 + i] | (uint32_t)b2[3 + i] << 16);
    }
    CHECK(bad == 0);
    printf("  %s: bf16 pair kernels checked\n", k->name);
}

int main(void)
{
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (qkv_isa_supported(isas[i])) {
            check_widen_narrow(isas[i]);
            check_dequant(isas[i]);
        }
        if (qkv_isa_supported(isas[i])) {
            check_exp_softcap(isas[i]);
            check_grad_row(isas[i]);
        } else
            printf("  %s: not in this build or CPU, skipped\n", qkv_isa_name(isas[i]));
    }
    check_pairs(&qkv_kernels_generic_pairs, 1);
#ifdef QKV_HAVE_X86_KERNELS
    if (qkv_isa_supported(QKV_ISA_AVX512_BF16)) check_pairs(&qkv_kernels_avx512bf16, 0);
#endif
    check_sweep("sweep", 150, 0);
    check_sweep("decode sweep", 4, 5000);
    check_large_logits();
    check_decode_and_empty_blocks();
    check_empty_values();
    check_backward_sweep();
    check_backward_many_tiles();
    check_backward_empty();
    check_unsupported();
    check_memory_bound();
    return test_finish("test_kernels");
}
