/* Every option of qkv_attention_forward against a naive implementation
 * written here straight from DESIGN.md §1 (dense rows of scores in double),
 * alone and combined, for both implementations; edge shapes, fully masked
 * rows, NaN confinement, and strided / unaligned / embedded tensor layouts. */
#include "test.h"
#include "util.h"

#include "qkv.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef test_shape shape; /* tests/util.h */

enum { MASK_NONE, MASK_F32, MASK_BOOL };

/* One configuration: the options, with the mask as its own dense array of
 * shape ms (each dim 1 or full). */
typedef struct cfg {
    double scale, softcap;
    int causal, bottom_right, use_window;
    int64_t wl, wr;
    const int64_t *kv_lens;
    int mask_kind;
    int64_t ms[4];
    const float *mf;
    const unsigned char *mb;
} cfg;

typedef struct out {
    float *o, *p, *l;
} out;

static out out_alloc(const shape *s)
{
    out r;
    r.o = test_malloc((size_t)n_o(s) * sizeof(float));
    r.p = test_malloc((size_t)n_p(s) * sizeof(float));
    r.l = test_malloc((size_t)n_l(s) * sizeof(float));
    return r;
}

static void out_free(out *r)
{
    free(r->o);
    free(r->p);
    free(r->l);
}

/* ------------------------------------------------------- the naive oracle */

static int64_t mask_index(const cfg *c, int64_t b, int64_t h, int64_t i, int64_t j)
{
    int64_t ib = c->ms[0] == 1 ? 0 : b, ih = c->ms[1] == 1 ? 0 : h;
    int64_t ii = c->ms[2] == 1 ? 0 : i, ij = c->ms[3] == 1 ? 0 : j;
    return ((ib * c->ms[1] + ih) * c->ms[2] + ii) * c->ms[3] + ij;
}

/* DESIGN.md §1 for one (b, h, i): dense scores in double, then softmax. */
static void naive(const shape *s, const float *q, const float *k, const float *v, const cfg *c,
                  out *r)
{
    double *sc = test_malloc((size_t)(s->Lk ? s->Lk : 1) * sizeof(double));
    double scale = c->scale != 0 ? c->scale : 1.0 / sqrt((double)s->E);
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t h = 0; h < s->H; h++)
            for (int64_t i = 0; i < s->Lq; i++) {
                int64_t hk = h / (s->H / s->Hkv), row = (b * s->H + h) * s->Lq + i;
                int64_t d = c->bottom_right ? i + s->Lk - s->Lq : i;
                double m = -INFINITY;
                for (int64_t j = 0; j < s->Lk; j++) {
                    double x = 0;
                    for (int64_t e = 0; e < s->E; e++)
                        x += (double)q[row * s->E + e] *
                             (double)k[((b * s->Hkv + hk) * s->Lk + j) * s->E + e];
                    x *= scale;                                     /* 1 */
                    if (c->softcap > 0) x = c->softcap * tanh(x / c->softcap); /* 2 */
                    if (c->mask_kind == MASK_F32) x += c->mf[mask_index(c, b, h, i, j)]; /* 3 */
                    int ok = 1;                                     /* 4 */
                    if (c->mask_kind == MASK_BOOL && !c->mb[mask_index(c, b, h, i, j)]) ok = 0;
                    if (c->causal && j > d) ok = 0;
                    if (c->use_window && c->wl >= 0 && d - j > c->wl) ok = 0;
                    if (c->use_window && c->wr >= 0 && j - d > c->wr) ok = 0;
                    if (c->kv_lens && j >= c->kv_lens[b]) ok = 0;
                    sc[j] = ok ? x : -INFINITY;
                    if (sc[j] > m) m = sc[j];
                }
                if (m == -INFINITY) { /* nothing allowed */
                    for (int64_t e = 0; e < s->Ev; e++) r->o[row * s->Ev + e] = 0.0f;
                    for (int64_t j = 0; j < s->Lk; j++) r->p[row * s->Lk + j] = 0.0f;
                    r->l[row] = -INFINITY;
                    continue;
                }
                double sum = 0;
                for (int64_t j = 0; j < s->Lk; j++) sum += exp(sc[j] - m); /* 5 */
                for (int64_t j = 0; j < s->Lk; j++)
                    r->p[row * s->Lk + j] = (float)(exp(sc[j] - m) / sum);
                r->l[row] = (float)(m + log(sum));
                for (int64_t e = 0; e < s->Ev; e++) { /* 6 */
                    double acc = 0;
                    for (int64_t j = 0; j < s->Lk; j++)
                        acc += exp(sc[j] - m) / sum *
                               (double)v[((b * s->Hkv + hk) * s->Lk + j) * s->Ev + e];
                    r->o[row * s->Ev + e] = (float)acc;
                }
            }
    free(sc);
}

/* ------------------------------------------------------------ the library */

static qkv_attention_options cfg_opts(const cfg *c)
{
    qkv_attention_options o = {0};
    o.scale = c->scale;
    o.softcap = c->softcap;
    o.causal = c->causal;
    o.align = c->bottom_right ? QKV_ALIGN_BOTTOM_RIGHT : QKV_ALIGN_TOP_LEFT;
    o.use_window = c->use_window;
    o.window_left = c->wl;
    o.window_right = c->wr;
    o.kv_lens = c->kv_lens;
    if (c->mask_kind == MASK_F32)
        o.mask = qkv_tensor_contiguous((void *)c->mf, QKV_DTYPE_F32, c->ms[0], c->ms[1],
                                       c->ms[2], c->ms[3]);
    else if (c->mask_kind == MASK_BOOL)
        o.mask = qkv_tensor_contiguous((void *)c->mb, QKV_DTYPE_BOOL, c->ms[0], c->ms[1],
                                       c->ms[2], c->ms[3]);
    return o;
}

static qkv_status lib(qkv_context *ctx, const shape *s, const float *q, const float *k,
                      const float *v, const qkv_attention_options *opt, out *r)
{
    qkv_tensor tq = qkv_tensor_contiguous((void *)q, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    qkv_tensor tk = qkv_tensor_contiguous((void *)k, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tv = qkv_tensor_contiguous((void *)v, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    qkv_tensor to = qkv_tensor_contiguous(r->o, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor tp = qkv_tensor_contiguous(r->p, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Lk);
    qkv_tensor tl = qkv_tensor_contiguous(r->l, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
    qkv_status st = qkv_attention_forward(ctx, &to, &tp, &tl, &tq, &tk, &tv, opt);
    if (st != QKV_OK)
        fprintf(stderr, "  qkv_attention_forward: %s: %s\n", qkv_status_string(st),
                qkv_error_detail());
    return st;
}

/* The reference is held to 1e-6 of the naive oracle; the fast path, in
 * float32, to DESIGN.md's 1e-5 (ctx says which impl ran). */
static double tol_for(const char *ctx) { return strstr(ctx, "impl 0") ? 1e-5 : 1e-6; }
#define CHECK_RUN(ctx, what, got, want, n) \
    CHECK_TENSOR(got, want, n, tol_for(ctx), "[%s] %s", ctx, what)

/* Random data for shape s, the naive answer, and the library under
 * QKV_IMPL_AUTO (threads 0 and 2) and QKV_IMPL_REFERENCE (threads 1 and 3). */
static void run_case(const char *name, const shape *s, const cfg *c, uint64_t seed)
{
    test_rng r = test_rng_seed(seed);
    float *q = test_rand_f32(&r, n_q(s), -1.5f, 1.5f);
    float *k = test_rand_f32(&r, n_k(s), -1.5f, 1.5f);
    float *v = test_rand_f32(&r, n_v(s), -1.0f, 1.0f);
    out want = out_alloc(s);
    naive(s, q, k, v, c, &want);
    const struct {
        qkv_impl impl;
        int threads;
    } runs[] = {{QKV_IMPL_AUTO, 0}, {QKV_IMPL_AUTO, 2}, {QKV_IMPL_REFERENCE, 1},
                {QKV_IMPL_REFERENCE, 3}};
    for (size_t x = 0; x < sizeof runs / sizeof runs[0]; x++) {
        char ctx[512];
        snprintf(ctx, sizeof ctx,
                 "%s: B=%lld H=%lld Hkv=%lld Lq=%lld Lk=%lld E=%lld Ev=%lld, impl %d threads %d",
                 name, (long long)s->B, (long long)s->H, (long long)s->Hkv, (long long)s->Lq,
                 (long long)s->Lk, (long long)s->E, (long long)s->Ev, (int)runs[x].impl,
                 runs[x].threads);
        out got = out_alloc(s);
        qkv_attention_options opt = cfg_opts(c);
        qkv_context *run_ctx = test_context(runs[x].impl, QKV_ISA_AUTO, runs[x].threads);
        qkv_status st = lib(run_ctx, s, q, k, v, &opt, &got);
        qkv_context_free(run_ctx);
        if (st != QKV_OK) fprintf(stderr, "  [%s] failed\n", ctx);
        CHECK(st == QKV_OK);
        if (st == QKV_OK) {
            CHECK_RUN(ctx, "O", got.o, want.o, n_o(s));
            CHECK_RUN(ctx, "weights", got.p, want.p, n_p(s));
            CHECK_RUN(ctx, "lse", got.l, want.l, n_l(s));
            int nan = 0;
            for (int64_t y = 0; y < n_o(s); y++) nan += isnan(got.o[y]);
            for (int64_t y = 0; y < n_p(s); y++) nan += isnan(got.p[y]);
            for (int64_t y = 0; y < n_l(s); y++) nan += isnan(got.l[y]);
            if (nan) fprintf(stderr, "  [%s] %d NaN outputs from finite inputs\n", ctx, nan);
            CHECK(nan == 0);
        }
        out_free(&got);
    }
    out_free(&want);
    free(q);
    free(k);
    free(v);
}

/* Mask data of shape ms: float in [-2, 2] with ~15% -inf, or bool with ~30%
 * false and random nonzero bytes for true. */
static void make_mask(cfg *c, int kind, const int64_t ms[4], uint64_t seed, float **mf,
                      unsigned char **mb)
{
    test_rng r = test_rng_seed(seed);
    int64_t n = ms[0] * ms[1] * ms[2] * ms[3];
    c->mask_kind = kind;
    memcpy(c->ms, ms, sizeof c->ms);
    *mf = test_malloc((size_t)n * sizeof(float));
    *mb = test_malloc((size_t)n);
    for (int64_t x = 0; x < n; x++) {
        double u = test_rand(&r);
        (*mf)[x] = u < 0.15 ? -INFINITY : (float)(4.0 * test_rand(&r) - 2.0);
        (*mb)[x] = u < 0.3 ? 0 : (unsigned char)(1 + (int)(test_rand(&r) * 255));
    }
    c->mf = *mf;
    c->mb = *mb;
}

/* ------------------------------------------------------------- the cases */

static void check_single_options(void)
{
    const shape s = {2, 4, 2, 5, 7, 12, 10};
    cfg c;
    memset(&c, 0, sizeof c);
    run_case("no options", &s, &c, 1);
    c.scale = 0.3;
    run_case("scale 0.3", &s, &c, 2);
    c.scale = -0.7;
    run_case("scale -0.7", &s, &c, 3);
    c.scale = 1.0;
    c.softcap = 1.5;
    run_case("softcap 1.5, scale 1", &s, &c, 4);
    c.scale = 0;
    c.softcap = 0.25;
    run_case("softcap 0.25", &s, &c, 5);
    memset(&c, 0, sizeof c);

    /* Float and bool masks, full and broadcast shapes. */
    const int64_t mshapes[][4] = {{2, 4, 5, 7}, {1, 1, 5, 7}, {2, 1, 5, 7}, {1, 4, 1, 7},
                                  {1, 1, 1, 1}, {2, 4, 1, 1}, {1, 1, 5, 1}};
    for (size_t m = 0; m < sizeof mshapes / sizeof mshapes[0]; m++)
        for (int kind = MASK_F32; kind <= MASK_BOOL; kind++) {
            float *mf;
            unsigned char *mb;
            cfg cm;
            memset(&cm, 0, sizeof cm);
            make_mask(&cm, kind, mshapes[m], 100 + m, &mf, &mb);
            char name[128];
            snprintf(name, sizeof name, "%s mask (%lld,%lld,%lld,%lld)",
                     kind == MASK_F32 ? "float" : "bool", (long long)mshapes[m][0],
                     (long long)mshapes[m][1], (long long)mshapes[m][2],
                     (long long)mshapes[m][3]);
            run_case(name, &s, &cm, 10 + m);
            free(mf);
            free(mb);
        }

    /* kv_lens with 0 and Lk. */
    const int64_t lens2[2] = {0, 7};
    c.kv_lens = lens2;
    run_case("kv_lens {0, Lk}", &s, &c, 30);
    const shape s3 = {3, 2, 1, 4, 6, 5, 3};
    const int64_t lens3[3] = {3, 6, 1};
    c.kv_lens = lens3;
    run_case("kv_lens {3, Lk, 1}", &s3, &c, 31);
    c.kv_lens = NULL;

    /* E = 1, Ev = 1. */
    const shape s1 = {1, 3, 3, 4, 5, 1, 1};
    run_case("E = 1", &s1, &c, 32);
    c.causal = 1;
    run_case("E = 1 causal", &s1, &c, 33);
}

/* Causal and windows with both alignments, Lq < Lk, Lq > Lk and Lq == Lk;
 * under bottom-right alignment with Lq > Lk the first rows see nothing. */
static void check_diagonals(void)
{
    const shape shapes[] = {
        {1, 2, 1, 4, 9, 8, 6},  /* Lq < Lk */
        {2, 2, 2, 9, 4, 8, 6},  /* Lq > Lk */
        {1, 3, 1, 6, 6, 7, 5},  /* Lq == Lk */
        {1, 1, 1, 1, 10, 4, 4}, /* decode */
    };
    const int64_t windows[][2] = {{0, 0}, {2, -1}, {-1, 3}, {1, 1}, {-1, -1}, {0, 5}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int br = 0; br < 2; br++) {
            const shape *s = &shapes[si];
            cfg c;
            memset(&c, 0, sizeof c);
            c.bottom_right = br;
            c.causal = 1;
            char name[160];
            snprintf(name, sizeof name, "causal %s", br ? "bottom-right" : "top-left");
            run_case(name, s, &c, 40 + si);
            for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++)
                for (int causal = 0; causal < 2; causal++) {
                    c.causal = causal;
                    c.use_window = 1;
                    c.wl = windows[w][0];
                    c.wr = windows[w][1];
                    snprintf(name, sizeof name, "window (%lld,%lld)%s %s",
                             (long long)c.wl, (long long)c.wr, causal ? " + causal" : "",
                             br ? "bottom-right" : "top-left");
                    run_case(name, s, &c, 50 + si * 100 + w * 2 + (uint64_t)causal);
                }
            /* A window given but not enabled does nothing. */
            c.causal = 0;
            c.use_window = 0;
            c.wl = 0;
            c.wr = 0;
            run_case("window (0,0) but use_window = 0", s, &c, 45);
        }
}

/* Everything at once, with each broadcast float mask shape. */
static void check_combinations(void)
{
    const shape shapes[] = {{2, 4, 2, 9, 6, 10, 7}, {2, 3, 1, 5, 11, 9, 4}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *s = &shapes[si];
        const int64_t lens[2] = {s->Lk, s->Lk - 2};
        const int64_t ms[][4] = {{1, 1, s->Lq, s->Lk}, {s->B, 1, s->Lq, s->Lk},
                                 {1, s->H, 1, s->Lk}, {1, 1, 1, 1}, {s->B, s->H, s->Lq, s->Lk}};
        for (size_t m = 0; m < sizeof ms / sizeof ms[0]; m++)
            for (int kind = MASK_F32; kind <= MASK_BOOL; kind++)
                for (int br = 0; br < 2; br++) {
                    float *mf;
                    unsigned char *mb;
                    cfg c;
                    memset(&c, 0, sizeof c);
                    make_mask(&c, kind, ms[m], 200 + m * 4 + (uint64_t)kind, &mf, &mb);
                    c.causal = 1;
                    c.bottom_right = br;
                    c.use_window = 1;
                    c.wl = 3;
                    c.wr = -1;
                    c.kv_lens = lens;
                    c.softcap = 2.0;
                    c.scale = 0.9;
                    char name[200];
                    snprintf(name, sizeof name,
                             "causal %s + window(3,-1) + kv_lens + softcap + %s mask "
                             "(%lld,%lld,%lld,%lld)",
                             br ? "bottom-right" : "top-left", kind == MASK_F32 ? "float" : "bool",
                             (long long)ms[m][0], (long long)ms[m][1], (long long)ms[m][2],
                             (long long)ms[m][3]);
                    run_case(name, s, &c, 300 + m * 4 + (uint64_t)kind * 2 + (uint64_t)br);
                    free(mf);
                    free(mb);
                }
    }
}

/* Lk == 0: every row has nothing to attend: o = 0, lse = -inf; the weights
 * view is empty and untouched. */
static void check_empty_keys(void)
{
    const shape s = {2, 2, 1, 3, 0, 4, 5};
    float q[2 * 2 * 3 * 4], o[2 * 2 * 3 * 5], l[2 * 2 * 3], wsent = 123.0f;
    test_rng r = test_rng_seed(7);
    for (size_t x = 0; x < sizeof q / sizeof q[0]; x++) q[x] = (float)test_rand(&r);
    for (size_t x = 0; x < sizeof o / sizeof o[0]; x++) o[x] = 99.0f;
    for (size_t x = 0; x < sizeof l / sizeof l[0]; x++) l[x] = 99.0f;
    float kdummy = 5.0f, vdummy = 6.0f;
    for (int variant = 0; variant < 3; variant++) {
        qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.E);
        /* K and V are empty: their data may be NULL or anything. */
        qkv_tensor tk = qkv_tensor_contiguous(variant == 0 ? NULL : &kdummy, QKV_DTYPE_F32, s.B,
                                              s.Hkv, 0, s.E);
        qkv_tensor tv = qkv_tensor_contiguous(variant == 0 ? NULL : &vdummy, QKV_DTYPE_F32, s.B,
                                              s.Hkv, 0, s.Ev);
        qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.Ev);
        qkv_tensor tp = qkv_tensor_contiguous(&wsent, QKV_DTYPE_F32, s.B, s.H, s.Lq, 0);
        qkv_tensor tl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, s.B, s.H, s.Lq, 1);
        qkv_attention_options opt = {0};
        opt.causal = variant == 2;
        opt.align = QKV_ALIGN_BOTTOM_RIGHT;
        qkv_status st = qkv_attention_forward(NULL, &to, &tp, &tl, &tq, &tk, &tv, &opt);
        if (st != QKV_OK) fprintf(stderr, "  Lk == 0: %s\n", qkv_error_detail());
        CHECK(st == QKV_OK);
        int bad = 0;
        for (size_t x = 0; x < sizeof o / sizeof o[0]; x++) bad += o[x] != 0.0f || signbit(o[x]);
        for (size_t x = 0; x < sizeof l / sizeof l[0]; x++) bad += !(isinf(l[x]) && l[x] < 0);
        if (bad) fprintf(stderr, "  Lk == 0 (variant %d): %d outputs not 0 / -inf\n", variant, bad);
        CHECK(bad == 0);
        CHECK(wsent == 123.0f);
        CHECK(kdummy == 5.0f && vdummy == 6.0f);
    }
    /* And through the naive comparison, both implementations. */
    cfg c;
    memset(&c, 0, sizeof c);
    run_case("Lk == 0", &s, &c, 8);
}

/* B, H or Lq == 0: QKV_OK and nothing written (a sentinel in a 1-element
 * buffer behind each empty view stays as it was). Ev == 0: O is empty but
 * the weights and lse are still computed. */
static void check_empty_problems(void)
{
    const shape shapes[] = {{0, 2, 1, 3, 4, 5, 6}, {2, 0, 1, 3, 4, 5, 6}, {2, 2, 1, 0, 4, 5, 6},
                            {0, 0, 0, 0, 0, 1, 0}, {2, 0, 0, 3, 4, 5, 6}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *s = &shapes[si];
        float so = 11.0f, sp = 22.0f, sl = 33.0f, sq = 1.0f, sk = 2.0f, sv = 3.0f;
        /* Q, K, V get real pointers or NULL wherever they are empty. */
        for (int nulls = 0; nulls < 2; nulls++) {
            qkv_tensor tq = qkv_tensor_contiguous(nulls && n_q(s) == 0 ? NULL : &sq,
                                                  QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
            float *kbuf = test_rand_f32(&(test_rng){5}, n_k(s), -1, 1);
            float *vbuf = test_rand_f32(&(test_rng){6}, n_v(s), -1, 1);
            qkv_tensor tk = qkv_tensor_contiguous(n_k(s) ? kbuf : nulls ? NULL : &sk,
                                                  QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
            qkv_tensor tv = qkv_tensor_contiguous(n_v(s) ? vbuf : nulls ? NULL : &sv,
                                                  QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
            qkv_tensor to = qkv_tensor_contiguous(&so, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
            qkv_tensor tp = qkv_tensor_contiguous(&sp, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Lk);
            qkv_tensor tl = qkv_tensor_contiguous(&sl, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
            qkv_attention_options opt = {0};
            opt.causal = 1;
            qkv_context *ctx = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 3);
            qkv_status st = qkv_attention_forward(ctx, &to, &tp, &tl, &tq, &tk, &tv, &opt);
            qkv_context_free(ctx);
            if (st != QKV_OK)
                fprintf(stderr, "  empty problem %zu: %s: %s\n", si, qkv_status_string(st),
                        qkv_error_detail());
            CHECK(st == QKV_OK);
            CHECK(so == 11.0f && sp == 22.0f && sl == 33.0f);
            CHECK(sq == 1.0f && sk == 2.0f && sv == 3.0f);
            free(kbuf);
            free(vbuf);
        }
    }

    /* Ev == 0. */
    const shape s = {2, 2, 1, 4, 5, 6, 0};
    test_rng r = test_rng_seed(77);
    float *q = test_rand_f32(&r, n_q(&s), -1, 1), *k = test_rand_f32(&r, n_k(&s), -1, 1);
    float so = 11.0f, vs = 4.0f;
    out want = out_alloc(&s), got = out_alloc(&s);
    cfg c;
    memset(&c, 0, sizeof c);
    c.causal = 1;
    naive(&s, q, k, &vs, &c, &want);
    qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, 2, 2, 4, 6);
    qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, 2, 1, 5, 6);
    qkv_tensor tv = qkv_tensor_contiguous(&vs, QKV_DTYPE_F32, 2, 1, 5, 0);
    qkv_tensor to = qkv_tensor_contiguous(&so, QKV_DTYPE_F32, 2, 2, 4, 0);
    qkv_tensor tp = qkv_tensor_contiguous(got.p, QKV_DTYPE_F32, 2, 2, 4, 5);
    qkv_tensor tl = qkv_tensor_contiguous(got.l, QKV_DTYPE_F32, 2, 2, 4, 1);
    qkv_attention_options opt = cfg_opts(&c);
    qkv_context *ctx = test_context(QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 2);
    qkv_status st = qkv_attention_forward(ctx, &to, &tp, &tl, &tq, &tk, &tv, &opt);
    qkv_context_free(ctx);
    if (st != QKV_OK)
        fprintf(stderr, "  Ev == 0: %s: %s\n", qkv_status_string(st), qkv_error_detail());
    CHECK(st == QKV_OK);
    CHECK(so == 11.0f && vs == 4.0f);
    if (st == QKV_OK) {
        CHECK_RUN("Ev == 0", "weights", got.p, want.p, n_p(&s));
        CHECK_RUN("Ev == 0", "lse", got.l, want.l, n_l(&s));
    }
    out_free(&want);
    out_free(&got);
    free(q);
    free(k);
}

/* Fully masked rows from a float mask of -inf: o = 0, p = 0, lse = -inf. */
static void check_float_fully_masked(void)
{
    const shape s = {2, 2, 2, 4, 6, 5, 3};
    int64_t ms[4] = {2, 2, 4, 6};
    float *mf;
    unsigned char *mb;
    cfg c;
    memset(&c, 0, sizeof c);
    make_mask(&c, MASK_F32, ms, 400, &mf, &mb);
    for (int64_t j = 0; j < 6; j++) {
        mf[(0 * 4 + 1) * 6 + j] = -INFINITY;     /* b 0, h 0, row 1 */
        mf[((1 * 2 + 1) * 4 + 3) * 6 + j] = -INFINITY; /* b 1, h 1, row 3 */
    }
    run_case("float mask rows of -inf", &s, &c, 401);

    /* The explicit check, in case the oracle and the library agree on NaN. */
    test_rng r = test_rng_seed(402);
    float *q = test_rand_f32(&r, n_q(&s), -1, 1), *k = test_rand_f32(&r, n_k(&s), -1, 1);
    float *v = test_rand_f32(&r, n_v(&s), -1, 1);
    out got = out_alloc(&s);
    float minf = -INFINITY;
    for (int variant = 0; variant < 2; variant++) {
        qkv_attention_options opt = cfg_opts(&c);
        if (variant) opt.mask = qkv_tensor_contiguous(&minf, QKV_DTYPE_F32, 1, 1, 1, 1);
        CHECK(lib(NULL, &s, q, k, v, &opt, &got) == QKV_OK);
        for (int64_t b = 0; b < 2; b++)
            for (int64_t h = 0; h < 2; h++)
                for (int64_t i = 0; i < 4; i++) {
                    int64_t row = (b * 2 + h) * 4 + i;
                    int masked = variant || (b == 0 && h == 0 && i == 1) ||
                                 (b == 1 && h == 1 && i == 3);
                    if (!masked) continue;
                    int ok = isinf(got.l[row]) && got.l[row] < 0;
                    for (int64_t e = 0; e < 3; e++) ok = ok && got.o[row * 3 + e] == 0.0f;
                    for (int64_t j = 0; j < 6; j++) ok = ok && got.p[row * 6 + j] == 0.0f;
                    if (!ok)
                        fprintf(stderr, "  float -inf mask row %lld (variant %d): o %g, p %g, "
                                "lse %g; want 0, 0, -inf\n", (long long)row, variant,
                                got.o[row * 3], got.p[row * 6], got.l[row]);
                    CHECK(ok);
                }
    }
    out_free(&got);
    free(q);
    free(k);
    free(v);
    free(mf);
    free(mb);
}

/* ---------------------------------------------------------- NaN confinement */

static int row_has_nan(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (isnan(x[i])) return 1;
    return 0;
}

static int row_all_nan(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isnan(x[i])) return 0;
    return 1;
}

static int row_same_bits(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static void check_nan_confinement(void)
{
    const shape s = {2, 4, 2, 6, 6, 5, 4};
    test_rng r = test_rng_seed(500);
    float *q = test_rand_f32(&r, n_q(&s), -1, 1), *k = test_rand_f32(&r, n_k(&s), -1, 1);
    float *v = test_rand_f32(&r, n_v(&s), -1, 1);
    out clean = out_alloc(&s), got = out_alloc(&s);
    qkv_attention_options causal = {0};
    causal.causal = 1;
    const int64_t lens[2] = {6, 3};
    qkv_attention_options padded = {0};
    padded.kv_lens = lens;

    /* NaN in Q row (b 1, h 2, i 3): that row only. */
    CHECK(lib(NULL, &s, q, k, v, &causal, &clean) == QKV_OK);
    const int64_t qrow = (1 * 4 + 2) * 6 + 3;
    float saved = q[qrow * 5 + 2];
    q[qrow * 5 + 2] = NAN;
    CHECK(lib(NULL, &s, q, k, v, &causal, &got) == QKV_OK);
    q[qrow * 5 + 2] = saved;
    for (int64_t row = 0; row < n_l(&s); row++) {
        if (row == qrow) {
            CHECK(row_all_nan(got.o + row * 4, 4));
            CHECK(isnan(got.l[row]));
            CHECK(row_has_nan(got.p + row * 6, 6));
        } else {
            int ok = row_same_bits(got.o + row * 4, clean.o + row * 4, 4) &&
                     row_same_bits(got.p + row * 6, clean.p + row * 6, 6) &&
                     got.l[row] == clean.l[row];
            if (!ok) fprintf(stderr, "  NaN in Q row %lld changed row %lld\n", (long long)qrow,
                             (long long)row);
            CHECK(ok);
        }
    }

    /* NaN in K (b 0, kv head 1, key 2), causal top-left: rows i >= 2 of query
     * heads 2 and 3 in batch 0 read it; rows i < 2 and everything else stay
     * exactly as without it. */
    const int64_t kj = 2, kidx = ((0 * 2 + 1) * 6 + kj) * 5 + 1;
    saved = k[kidx];
    k[kidx] = NAN;
    CHECK(lib(NULL, &s, q, k, v, &causal, &got) == QKV_OK);
    k[kidx] = saved;
    int bad = 0;
    for (int64_t b = 0; b < 2; b++)
        for (int64_t h = 0; h < 4; h++)
            for (int64_t i = 0; i < 6; i++) {
                int64_t row = (b * 4 + h) * 6 + i;
                int reads = b == 0 && h / 2 == 1 && i >= kj;
                if (reads) {
                    if (!(row_all_nan(got.o + row * 4, 4) && isnan(got.l[row]))) {
                        fprintf(stderr, "  NaN in K: row %lld reads it but is not NaN\n",
                                (long long)row);
                        bad++;
                    }
                } else if (!(row_same_bits(got.o + row * 4, clean.o + row * 4, 4) &&
                             row_same_bits(got.p + row * 6, clean.p + row * 6, 6) &&
                             got.l[row] == clean.l[row])) {
                    fprintf(stderr, "  NaN in K key %lld changed row %lld (b %lld h %lld i %lld) "
                            "which cannot attend it\n", (long long)kj, (long long)row,
                            (long long)b, (long long)h, (long long)i);
                    bad++;
                }
            }
    CHECK(bad == 0);

    /* NaN in V of a padding key (b 1, key 4 >= kv_lens[1] = 3): nothing
     * changes anywhere. */
    CHECK(lib(NULL, &s, q, k, v, &padded, &clean) == QKV_OK);
    const int64_t vidx = ((1 * 2 + 0) * 6 + 4) * 4 + 0;
    saved = v[vidx];
    v[vidx] = NAN;
    CHECK(lib(NULL, &s, q, k, v, &padded, &got) == QKV_OK);
    int nan_out = row_has_nan(got.o, n_o(&s)) || row_has_nan(got.p, n_p(&s)) ||
                  row_has_nan(got.l, n_l(&s));
    if (nan_out) fprintf(stderr, "  NaN in an unattended (padding) V row reached the output\n");
    CHECK(!nan_out);
    CHECK(row_same_bits(got.o, clean.o, n_o(&s)));
    /* The same NaN in an attended V row (b 1, key 1): column 0 of every row
     * of batch 1, query heads 0 and 1, becomes NaN; the weights, lse and the
     * other columns do not change. */
    v[vidx] = saved;
    const int64_t vidx2 = ((1 * 2 + 0) * 6 + 1) * 4 + 0;
    v[vidx2] = NAN;
    CHECK(lib(NULL, &s, q, k, v, &padded, &got) == QKV_OK);
    v[vidx2] = saved;
    CHECK(row_same_bits(got.p, clean.p, n_p(&s)));
    CHECK(row_same_bits(got.l, clean.l, n_l(&s)));
    bad = 0;
    for (int64_t row = 0; row < n_l(&s); row++) {
        int64_t b = row / 24, h = row / 6 % 4;
        for (int64_t e = 0; e < 4; e++) {
            int want_nan = b == 1 && h / 2 == 0 && e == 0;
            float x = got.o[row * 4 + e];
            if (want_nan ? !isnan(x) : memcmp(&x, &clean.o[row * 4 + e], sizeof x) != 0) bad++;
        }
    }
    if (bad) fprintf(stderr, "  NaN in an attended V element: %d wrong O elements\n", bad);
    CHECK(bad == 0);

    /* NaN in a float mask element (b 0, h 1, i 4, j 0) with no causal mask:
     * only that row. Broadcast (1, 1, Lq, Lk): row 4 of every (b, h). */
    float *m = test_rand_f32(&r, n_p(&s), -1, 1);
    for (int bcast = 0; bcast < 2; bcast++) {
        qkv_attention_options om = {0};
        om.mask = bcast ? qkv_tensor_contiguous(m, QKV_DTYPE_F32, 1, 1, 6, 6)
                        : qkv_tensor_contiguous(m, QKV_DTYPE_F32, 2, 4, 6, 6);
        CHECK(lib(NULL, &s, q, k, v, &om, &clean) == QKV_OK);
        int64_t midx = bcast ? 4 * 6 : ((0 * 4 + 1) * 6 + 4) * 6;
        saved = m[midx];
        m[midx] = NAN;
        CHECK(lib(NULL, &s, q, k, v, &om, &got) == QKV_OK);
        m[midx] = saved;
        bad = 0;
        for (int64_t row = 0; row < n_l(&s); row++) {
            int want_nan = bcast ? row % 6 == 4 : row == (0 * 4 + 1) * 6 + 4;
            if (want_nan ? !(row_all_nan(got.o + row * 4, 4) && isnan(got.l[row]))
                         : !(row_same_bits(got.o + row * 4, clean.o + row * 4, 4) &&
                             got.l[row] == clean.l[row]))
                bad++;
        }
        if (bad) fprintf(stderr, "  NaN in the float mask (broadcast %d): %d wrong rows\n", bcast,
                         bad);
        CHECK(bad == 0);
    }
    free(m);
    out_free(&clean);
    out_free(&got);
    free(q);
    free(k);
    free(v);
}

/* ----------------------------------------------------------------- layouts */

/* Contiguous (B, H, L, D) data copied to (B, L, H, D) memory and the view of
 * it as (B, H, L, D). */
static qkv_tensor to_bshd(const float *src, float *dst, int64_t B, int64_t H, int64_t L,
                          int64_t D)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < L; i++)
                for (int64_t d = 0; d < D; d++)
                    dst[((b * L + i) * H + h) * D + d] = src[((b * H + h) * L + i) * D + d];
    qkv_tensor t = qkv_tensor_contiguous(dst, QKV_DTYPE_F32, B, H, L, D);
    t.stride[0] = L * H * D;
    t.stride[1] = D;
    t.stride[2] = H * D;
    t.stride[3] = 1;
    return t;
}

/* Gathers a strided f32 view into contiguous (n0, n1, n2, n3). */
static void gather(const qkv_tensor *t, float *dst)
{
    int64_t x = 0;
    for (int64_t a = 0; a < t->shape[0]; a++)
        for (int64_t b = 0; b < t->shape[1]; b++)
            for (int64_t c = 0; c < t->shape[2]; c++)
                for (int64_t d = 0; d < t->shape[3]; d++)
                    dst[x++] = ((const float *)t->data)[a * t->stride[0] + b * t->stride[1] +
                                                        c * t->stride[2] + d * t->stride[3]];
}

/* A copy of contiguous src (shape n) laid out in memory with the dims in
 * `order` (outermost first), and the (n0, n1, n2, n3) view of it. */
static qkv_tensor permuted(const float *src, const int64_t n[4], const int order[4], float *dst)
{
    qkv_tensor t = qkv_tensor_contiguous(dst, QKV_DTYPE_F32, n[0], n[1], n[2], n[3]);
    int64_t st = 1;
    for (int x = 3; x >= 0; x--) {
        t.stride[order[x]] = st;
        st *= n[order[x]];
    }
    int64_t y = 0;
    for (int64_t a = 0; a < n[0]; a++)
        for (int64_t b = 0; b < n[1]; b++)
            for (int64_t c = 0; c < n[2]; c++)
                for (int64_t d = 0; d < n[3]; d++)
                    dst[a * t.stride[0] + b * t.stride[1] + c * t.stride[2] + d * t.stride[3]] =
                        src[y++];
    return t;
}

static void check_layouts(void)
{
    const shape s = {2, 6, 3, 7, 9, 11, 5};
    test_rng r = test_rng_seed(600);
    float *q = test_rand_f32(&r, n_q(&s), -1, 1), *k = test_rand_f32(&r, n_k(&s), -1, 1);
    float *v = test_rand_f32(&r, n_v(&s), -1, 1);
    const int64_t lens[2] = {9, 5};
    qkv_attention_options opt = {0};
    opt.causal = 1;
    opt.align = QKV_ALIGN_BOTTOM_RIGHT;
    opt.kv_lens = lens;
    opt.softcap = 3.0;
    out base = out_alloc(&s), got = out_alloc(&s);
    CHECK(lib(NULL, &s, q, k, v, &opt, &base) == QKV_OK);
    /* The test itself must not be trivial: the naive answer agrees. */
    {
        cfg c;
        memset(&c, 0, sizeof c);
        c.causal = 1;
        c.bottom_right = 1;
        c.kv_lens = lens;
        c.softcap = 3.0;
        out want = out_alloc(&s);
        naive(&s, q, k, v, &c, &want);
        CHECK_RUN("layout baseline", "O", base.o, want.o, n_o(&s));
        out_free(&want);
    }

    /* BSHD views for Q, K, V, O, weights (B, Lq, H, Lk) and lse (B, Lq, H). */
    {
        float *qb = test_malloc((size_t)n_q(&s) * sizeof(float));
        float *kb = test_malloc((size_t)n_k(&s) * sizeof(float));
        float *vb = test_malloc((size_t)n_v(&s) * sizeof(float));
        float *ob = test_malloc((size_t)n_o(&s) * sizeof(float));
        float *pb = test_malloc((size_t)n_p(&s) * sizeof(float));
        float *lb = test_malloc((size_t)n_l(&s) * sizeof(float));
        qkv_tensor tq = to_bshd(q, qb, s.B, s.H, s.Lq, s.E);
        qkv_tensor tk = to_bshd(k, kb, s.B, s.Hkv, s.Lk, s.E);
        qkv_tensor tv = to_bshd(v, vb, s.B, s.Hkv, s.Lk, s.Ev);
        qkv_tensor to = to_bshd(base.o, ob, s.B, s.H, s.Lq, s.Ev); /* shape and strides */
        qkv_tensor tp = to_bshd(base.p, pb, s.B, s.H, s.Lq, s.Lk);
        qkv_tensor tl = to_bshd(base.l, lb, s.B, s.H, s.Lq, 1);
        tl.stride[3] = 1000; /* any stride for a dim of 1 */
        memset(ob, 0xff, (size_t)n_o(&s) * sizeof(float));
        memset(pb, 0xff, (size_t)n_p(&s) * sizeof(float));
        memset(lb, 0xff, (size_t)n_l(&s) * sizeof(float));
        qkv_status st = qkv_attention_forward(NULL, &to, &tp, &tl, &tq, &tk, &tv, &opt);
        if (st != QKV_OK) fprintf(stderr, "  BSHD: %s\n", qkv_error_detail());
        CHECK(st == QKV_OK);
        gather(&to, got.o);
        gather(&tp, got.p);
        gather(&tl, got.l);
        CHECK(row_same_bits(got.o, base.o, n_o(&s)));
        CHECK(row_same_bits(got.p, base.p, n_p(&s)));
        CHECK(row_same_bits(got.l, base.l, n_l(&s)));
        free(qb);
        free(kb);
        free(vb);
        free(ob);
        free(pb);
        free(lb);
    }

    /* Transposed and reversed inputs: Q with Lq reversed (negative stride),
     * K stored as (B, Hkv, E, Lk), V with Ev reversed, K broadcast over a
     * batch of identical copies through stride 0. */
    {
        float *qr = test_malloc((size_t)n_q(&s) * sizeof(float));
        float *kt = test_malloc((size_t)n_k(&s) * sizeof(float));
        float *vr = test_malloc((size_t)n_v(&s) * sizeof(float));
        for (int64_t bh = 0; bh < s.B * s.H; bh++)
            for (int64_t i = 0; i < s.Lq; i++)
                memcpy(qr + (bh * s.Lq + (s.Lq - 1 - i)) * s.E, q + (bh * s.Lq + i) * s.E,
                       (size_t)s.E * sizeof(float));
        for (int64_t bh = 0; bh < s.B * s.Hkv; bh++)
            for (int64_t j = 0; j < s.Lk; j++)
                for (int64_t e = 0; e < s.E; e++)
                    kt[(bh * s.E + e) * s.Lk + j] = k[(bh * s.Lk + j) * s.E + e];
        for (int64_t x = 0; x < s.B * s.Hkv * s.Lk; x++)
            for (int64_t e = 0; e < s.Ev; e++) vr[x * s.Ev + (s.Ev - 1 - e)] = v[x * s.Ev + e];
        qkv_tensor tq = qkv_tensor_contiguous(qr + (s.Lq - 1) * s.E, QKV_DTYPE_F32, s.B, s.H,
                                              s.Lq, s.E);
        tq.stride[2] = -s.E;
        qkv_tensor tk = qkv_tensor_contiguous(kt, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.E);
        tk.stride[2] = 1;
        tk.stride[3] = s.Lk;
        qkv_tensor tv = qkv_tensor_contiguous(vr + s.Ev - 1, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk,
                                              s.Ev);
        tv.stride[3] = -1;
        qkv_tensor to = qkv_tensor_contiguous(got.o, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.Ev);
        qkv_tensor tp = qkv_tensor_contiguous(got.p, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.Lk);
        qkv_tensor tl = qkv_tensor_contiguous(got.l, QKV_DTYPE_F32, s.B, s.H, s.Lq, 1);
        qkv_status st = qkv_attention_forward(NULL, &to, &tp, &tl, &tq, &tk, &tv, &opt);
        if (st != QKV_OK) fprintf(stderr, "  transposed: %s\n", qkv_error_detail());
        CHECK(st == QKV_OK);
        CHECK_RUN("transposed / reversed views", "O", got.o, base.o, n_o(&s));
        CHECK_RUN("transposed / reversed views", "weights", got.p, base.p, n_p(&s));
        CHECK_RUN("transposed / reversed views", "lse", got.l, base.l, n_l(&s));

        /* Inner strides other than 1 everywhere: Q as (B, H, E, Lq), O as
         * (B, H, Ev, Lq), weights as (B, H, Lk, Lq), lse as (Lq, B, H), a full
         * float mask as (Lk, Lq, B, H); and a (1, 1, Lq, Lk) mask whose
         * broadcast dims carry junk strides that must be ignored. */
        float *mfull = test_rand_f32(&r, n_p(&s), -1, 1);
        for (int64_t x = 0; x < n_p(&s); x += 5) mfull[x] = -INFINITY;
        for (int64_t j = 0; j < s.Lk; j++) mfull[2 * s.Lk + j] = -INFINITY; /* a masked row */
        for (int bcast = 0; bcast < 2; bcast++) {
            qkv_attention_options om = opt;
            const int64_t nm[4] = {bcast ? 1 : s.B, bcast ? 1 : s.H, s.Lq, s.Lk};
            om.mask = qkv_tensor_contiguous(mfull, QKV_DTYPE_F32, nm[0], nm[1], nm[2], nm[3]);
            out want = out_alloc(&s);
            CHECK(lib(NULL, &s, q, k, v, &om, &want) == QKV_OK);
            const int64_t nq4[4] = {s.B, s.H, s.Lq, s.E}, no4[4] = {s.B, s.H, s.Lq, s.Ev},
                          np4[4] = {s.B, s.H, s.Lq, s.Lk}, nl4[4] = {s.B, s.H, s.Lq, 1};
            const int inner_first[4] = {0, 1, 3, 2}, lse_order[4] = {2, 0, 1, 3},
                      mask_order[4] = {3, 2, 0, 1};
            float *qt = test_malloc((size_t)n_q(&s) * sizeof(float));
            float *ot = test_malloc((size_t)n_o(&s) * sizeof(float));
            float *pt = test_malloc((size_t)n_p(&s) * sizeof(float));
            float *lt = test_malloc((size_t)n_l(&s) * sizeof(float));
            float *mt = test_malloc((size_t)n_p(&s) * sizeof(float));
            qkv_tensor tq2 = permuted(q, nq4, inner_first, qt);
            qkv_tensor to2 = permuted(want.o, no4, inner_first, ot);
            qkv_tensor tp2 = permuted(want.p, np4, inner_first, pt);
            qkv_tensor tl2 = permuted(want.l, nl4, lse_order, lt);
            memset(ot, 0, (size_t)n_o(&s) * sizeof(float));
            memset(pt, 0, (size_t)n_p(&s) * sizeof(float));
            memset(lt, 0, (size_t)n_l(&s) * sizeof(float));
            if (bcast) {
                om.mask.stride[0] = 123456789; /* a dim of 1 broadcast over B */
                om.mask.stride[1] = -987654321;
            } else {
                om.mask = permuted(mfull, nm, mask_order, mt);
            }
            tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.E);
            tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.Ev);
            st = qkv_attention_forward(NULL, &to2, &tp2, &tl2, &tq2, &tk, &tv, &om);
            if (st != QKV_OK) fprintf(stderr, "  inner strides: %s\n", qkv_error_detail());
            CHECK(st == QKV_OK);
            gather(&to2, got.o);
            gather(&tp2, got.p);
            gather(&tl2, got.l);
            const char *ctx = bcast ? "inner strides != 1, broadcast mask with junk strides"
                                    : "inner strides != 1, transposed full mask";
            CHECK_RUN(ctx, "O", got.o, want.o, n_o(&s));
            CHECK_RUN(ctx, "weights", got.p, want.p, n_p(&s));
            CHECK_RUN(ctx, "lse", got.l, want.l, n_l(&s));
            free(qt);
            free(ot);
            free(pt);
            free(lt);
            free(mt);
            out_free(&want);
        }
        free(mfull);

        /* Stride-0 batch of K and V: batch 1 reads batch 0's keys. */
        float *k2 = test_malloc((size_t)n_k(&s) * sizeof(float));
        float *v2 = test_malloc((size_t)n_v(&s) * sizeof(float));
        int64_t kb = s.Hkv * s.Lk * s.E, vb = s.Hkv * s.Lk * s.Ev;
        memcpy(k2, k, (size_t)kb * sizeof(float));
        memcpy(k2 + kb, k, (size_t)kb * sizeof(float));
        memcpy(v2, v, (size_t)vb * sizeof(float));
        memcpy(v2 + vb, v, (size_t)vb * sizeof(float));
        out want = out_alloc(&s);
        CHECK(lib(NULL, &s, q, k2, v2, &opt, &want) == QKV_OK);
        tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.E);
        tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.E);
        tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.Ev);
        tk.stride[0] = 0;
        tv.stride[0] = 0;
        st = qkv_attention_forward(NULL, &to, &tp, &tl, &tq, &tk, &tv, &opt);
        CHECK(st == QKV_OK);
        CHECK_RUN("K, V batch stride 0", "O", got.o, want.o, n_o(&s));
        CHECK_RUN("K, V batch stride 0", "weights", got.p, want.p, n_p(&s));
        CHECK_RUN("K, V batch stride 0", "lse", got.l, want.l, n_l(&s));
        out_free(&want);
        free(k2);
        free(v2);
        free(qr);
        free(kt);
        free(vr);
    }

    /* Pointers 4 bytes past a 64-byte boundary (float-aligned, not vector
     * aligned), filled with memcpy into a char buffer. */
    for (int off = 4; off <= 12; off += 8) {
        size_t bytes[6] = {(size_t)n_q(&s) * 4, (size_t)n_k(&s) * 4, (size_t)n_v(&s) * 4,
                           (size_t)n_o(&s) * 4, (size_t)n_p(&s) * 4, (size_t)n_l(&s) * 4};
        char *buf[6];
        for (int x = 0; x < 6; x++) {
            buf[x] = aligned_alloc(64, (bytes[x] + 64 + 63) / 64 * 64);
            if (!buf[x]) exit(2);
        }
        memcpy(buf[0] + off, q, bytes[0]);
        memcpy(buf[1] + off, k, bytes[1]);
        memcpy(buf[2] + off, v, bytes[2]);
        qkv_tensor tq = qkv_tensor_contiguous(buf[0] + off, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.E);
        qkv_tensor tk = qkv_tensor_contiguous(buf[1] + off, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.E);
        qkv_tensor tv = qkv_tensor_contiguous(buf[2] + off, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk,
                                              s.Ev);
        qkv_tensor to = qkv_tensor_contiguous(buf[3] + off, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.Ev);
        qkv_tensor tp = qkv_tensor_contiguous(buf[4] + off, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.Lk);
        qkv_tensor tl = qkv_tensor_contiguous(buf[5] + off, QKV_DTYPE_F32, s.B, s.H, s.Lq, 1);
        qkv_status st = qkv_attention_forward(NULL, &to, &tp, &tl, &tq, &tk, &tv, &opt);
        CHECK(st == QKV_OK);
        memcpy(got.o, buf[3] + off, bytes[3]);
        memcpy(got.p, buf[4] + off, bytes[4]);
        memcpy(got.l, buf[5] + off, bytes[5]);
        if (!row_same_bits(got.o, base.o, n_o(&s)))
            fprintf(stderr, "  unaligned (offset %d): O differs\n", off);
        CHECK(row_same_bits(got.o, base.o, n_o(&s)));
        CHECK(row_same_bits(got.p, base.p, n_p(&s)));
        CHECK(row_same_bits(got.l, base.l, n_l(&s)));
        for (int x = 0; x < 6; x++) free(buf[x]);
    }

    /* Output views inside larger buffers: O at (b, h, i + 1, e + 2) of a
     * (B, H + 1, Lq + 2, Ev + 3) buffer, the weights with a padded row pitch,
     * lse every third element from element 1. Everything else keeps its
     * guard value. */
    {
        const float guard = -7777.25f;
        int64_t oB = s.H + 1, oL = s.Lq + 2, oE = s.Ev + 3;
        int64_t no = s.B * oB * oL * oE, np = s.B * s.H * s.Lq * (s.Lk + 4) + 5,
                nl = 3 * n_l(&s) + 4;
        float *ob = test_malloc((size_t)no * sizeof(float));
        float *pb = test_malloc((size_t)np * sizeof(float));
        float *lb = test_malloc((size_t)nl * sizeof(float));
        for (int64_t x = 0; x < no; x++) ob[x] = guard;
        for (int64_t x = 0; x < np; x++) pb[x] = guard;
        for (int64_t x = 0; x < nl; x++) lb[x] = guard;
        qkv_tensor to = qkv_tensor_contiguous(ob + oL * oE + 1 * oE + 2, QKV_DTYPE_F32, s.B, s.H,
                                              s.Lq, s.Ev);
        to.stride[0] = oB * oL * oE;
        to.stride[1] = oL * oE;
        to.stride[2] = oE;
        qkv_tensor tp = qkv_tensor_contiguous(pb + 3, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.Lk);
        tp.stride[2] = s.Lk + 4;
        tp.stride[1] = s.Lq * (s.Lk + 4);
        tp.stride[0] = s.H * s.Lq * (s.Lk + 4);
        qkv_tensor tl = qkv_tensor_contiguous(lb + 1, QKV_DTYPE_F32, s.B, s.H, s.Lq, 1);
        tl.stride[2] = 3;
        tl.stride[1] = 3 * s.Lq;
        tl.stride[0] = 3 * s.Lq * s.H;
        tl.stride[3] = 0; /* a dim of 1 may have any stride, even 0 */
        qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.E);
        qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.E);
        qkv_tensor tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.Ev);
        qkv_status st = qkv_attention_forward(NULL, &to, &tp, &tl, &tq, &tk, &tv, &opt);
        if (st != QKV_OK) fprintf(stderr, "  embedded outputs: %s\n", qkv_error_detail());
        CHECK(st == QKV_OK);
        gather(&to, got.o);
        gather(&tp, got.p);
        gather(&tl, got.l);
        CHECK(row_same_bits(got.o, base.o, n_o(&s)));
        CHECK(row_same_bits(got.p, base.p, n_p(&s)));
        CHECK(row_same_bits(got.l, base.l, n_l(&s)));
        /* Count guards: everything outside the views. */
        int64_t go = 0, gp = 0, gl = 0;
        for (int64_t x = 0; x < no; x++) go += ob[x] == guard;
        for (int64_t x = 0; x < np; x++) gp += pb[x] == guard;
        for (int64_t x = 0; x < nl; x++) gl += lb[x] == guard;
        if (go != no - n_o(&s) || gp != np - n_p(&s) || gl != nl - n_l(&s))
            fprintf(stderr, "  embedded outputs: guards left %lld/%lld, %lld/%lld, %lld/%lld\n",
                    (long long)go, (long long)(no - n_o(&s)), (long long)gp,
                    (long long)(np - n_p(&s)), (long long)gl, (long long)(nl - n_l(&s)));
        CHECK(go == no - n_o(&s));
        CHECK(gp == np - n_p(&s));
        CHECK(gl == nl - n_l(&s));
        free(ob);
        free(pb);
        free(lb);
    }
    out_free(&base);
    out_free(&got);
    free(q);
    free(k);
    free(v);
}

/* Window bounds as large as int64_t allows mean "unlimited" as much as a
 * negative bound does; computing d_i - left or d_i + right must not
 * overflow (row 0 under bottom-right alignment with Lq > Lk has d_0 < 0). */
static void check_huge_window(void)
{
    const shape s = {1, 2, 1, 6, 3, 4, 4};
    for (int br = 0; br < 2; br++) {
        cfg c;
        memset(&c, 0, sizeof c);
        c.bottom_right = br;
        c.use_window = 1;
        c.wl = INT64_MAX;
        c.wr = INT64_MAX;
        run_case(br ? "window (INT64_MAX, INT64_MAX) bottom-right"
                    : "window (INT64_MAX, INT64_MAX) top-left",
                 &s, &c, 700 + (uint64_t)br);
        c.causal = 1;
        run_case(br ? "causal + window (INT64_MAX, INT64_MAX) bottom-right"
                    : "causal + window (INT64_MAX, INT64_MAX) top-left",
                 &s, &c, 702 + (uint64_t)br);
    }
}

/* An allowed key whose weight underflows to exactly 0 is still read: a NaN
 * in its value makes the row NaN (0 * NaN, as PyTorch computes), while the
 * same NaN behind a forbidden key (kv_lens) leaves the row finite. Scores
 * 0 and -2000 (q = 1, k = 0 and -2000, scale 1): exp(-2000) is 0 in double. */
static void check_underflowed_weight_reads_value(void)
{
    float q = 1, k[2] = {0, -2000}, v[2] = {1, NAN}, o, p[2];
    qkv_tensor tq = qkv_tensor_contiguous(&q, QKV_DTYPE_F32, 1, 1, 1, 1);
    qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, 1, 1, 2, 1);
    qkv_tensor tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, 1, 1, 2, 1);
    qkv_tensor to = qkv_tensor_contiguous(&o, QKV_DTYPE_F32, 1, 1, 1, 1);
    qkv_tensor tp = qkv_tensor_contiguous(p, QKV_DTYPE_F32, 1, 1, 1, 2);
    qkv_attention_options opt;
    memset(&opt, 0, sizeof opt);
    opt.scale = 1.0;
    CHECK(qkv_attention_forward(NULL, &to, &tp, NULL, &tq, &tk, &tv, &opt) == QKV_OK);
    CHECK(isnan(o));
    CHECK(p[0] == 1.0f && p[1] == 0.0f);
    const int64_t lens[1] = {1};
    opt.kv_lens = lens;
    CHECK(qkv_attention_forward(NULL, &to, &tp, NULL, &tq, &tk, &tv, &opt) == QKV_OK);
    CHECK(o == 1.0f);
    CHECK(p[0] == 1.0f && p[1] == 0.0f && !signbit(p[1]));
}

int main(void)
{
    check_underflowed_weight_reads_value();
    check_single_options();
    check_diagonals();
    check_combinations();
    check_empty_keys();
    check_empty_problems();
    check_float_fully_masked();
    check_nan_confinement();
    check_layouts();
    /* Last: under UBSan a signed overflow here aborts the program. */
    check_huge_window();
    return test_finish("test_options");
}
