/* Mathematical properties of qkv_attention_forward on seeded random problems
 * of varied shapes: weights are a distribution consistent with lse and O,
 * outputs stay in the values' convex hull, and the result is invariant under
 * key permutation, a constant mask shift, q/scale rescaling, GQA expansion,
 * bool vs float masks, alignment of square problems and the thread count.
 * Expected values are recomputed here in double, never taken from qkv. */
#include "test.h"
#include "util.h"

#include "qkv.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef test_shape shape; /* tests/util.h */

/* Varied shapes: 1-element dims, Lq != Lk, E != Ev, E not a multiple of
 * 8 or 16, GQA ratios 1, 2, 3 and MQA. */
static const shape shapes[] = {
    {1, 1, 1, 1, 1, 1, 1},     {2, 3, 3, 5, 7, 3, 5},    {1, 4, 2, 7, 3, 17, 9},
    {2, 6, 2, 4, 9, 13, 6},    {1, 5, 1, 6, 6, 8, 4},    {3, 2, 1, 1, 33, 31, 1},
    {1, 2, 2, 9, 1, 16, 24},   {2, 4, 4, 17, 19, 64, 64}, {1, 3, 1, 11, 11, 33, 7},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

typedef struct prob {
    shape s;
    float *q, *k, *v; /* contiguous (B, H, Lq, E), (B, Hkv, Lk, E), (B, Hkv, Lk, Ev) */
} prob;

typedef struct res {
    float *o, *p, *l; /* (B, H, Lq, Ev), (B, H, Lq, Lk), (B, H, Lq) */
    qkv_status st;
} res;


static void shape_str(const shape *s, char *buf, size_t len)
{
    snprintf(buf, len, "B=%lld H=%lld Hkv=%lld Lq=%lld Lk=%lld E=%lld Ev=%lld",
             (long long)s->B, (long long)s->H, (long long)s->Hkv, (long long)s->Lq,
             (long long)s->Lk, (long long)s->E, (long long)s->Ev);
}

static prob make_prob(const shape *s, uint64_t seed, float lo, float hi)
{
    test_rng r = test_rng_seed(seed);
    prob p;
    p.s = *s;
    p.q = test_rand_f32(&r, n_q(s), lo, hi);
    p.k = test_rand_f32(&r, n_k(s), lo, hi);
    p.v = test_rand_f32(&r, n_v(s), -1.0f, 1.0f);
    return p;
}

static void free_prob(prob *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
}

static void free_res(res *r)
{
    free(r->o);
    free(r->p);
    free(r->l);
}

/* Every property runs twice (main): on the reference, whose tolerance is
 * the numbers written below, and on the fast path, whose float32
 * arithmetic is held to DESIGN.md's 1e-5 (TOL raises a tolerance to it). */
static qkv_impl run_impl = QKV_IMPL_REFERENCE;
static double tol_floor = 0.0;
#define TOL(t) ((t) > tol_floor ? (t) : tol_floor)

/* Runs the library on contiguous buffers, with weights and lse requested,
 * on impl (QKV_IMPL_AUTO: this pass's run_impl; an explicit REFERENCE
 * stays) with num_threads threads. */
static res run_on(const prob *pr, qkv_impl impl, int num_threads,
                  const qkv_attention_options *opt)
{
    const shape *s = &pr->s;
    res r;
    r.o = test_malloc((size_t)n_o(s) * sizeof(float));
    r.p = test_malloc((size_t)n_p(s) * sizeof(float));
    r.l = test_malloc((size_t)n_l(s) * sizeof(float));
    qkv_tensor tq = qkv_tensor_contiguous(pr->q, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    qkv_tensor tk = qkv_tensor_contiguous(pr->k, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tv = qkv_tensor_contiguous(pr->v, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    qkv_tensor to = qkv_tensor_contiguous(r.o, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor tp = qkv_tensor_contiguous(r.p, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Lk);
    qkv_tensor tl = qkv_tensor_contiguous(r.l, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
    qkv_context *ctx =
        test_context(impl == QKV_IMPL_AUTO ? run_impl : impl, QKV_ISA_AUTO, num_threads);
    r.st = qkv_attention_forward(ctx, &to, &tp, &tl, &tq, &tk, &tv, opt);
    qkv_context_free(ctx);
    if (r.st != QKV_OK) {
        char buf[160];
        shape_str(s, buf, sizeof buf);
        fprintf(stderr, "  qkv_attention_forward failed (%s): %s: %s\n", buf,
                qkv_status_string(r.st), qkv_error_detail());
    }
    CHECK(r.st == QKV_OK);
    return r;
}

/* run_on with this pass's impl and every CPU. */
static res run(const prob *pr, const qkv_attention_options *opt)
{
    return run_on(pr, QKV_IMPL_AUTO, 0, opt);
}

/* Bitwise equality of two float arrays, with the first difference printed. */
static int same_bits(const char *what, const char *ctx, const float *a, const float *b,
                     int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            fprintf(stderr, "  %s [%s]: %s differs at element %lld: %.9g vs %.9g\n", "bitwise",
                    ctx, what, (long long)i, a[i], b[i]);
            return 0;
        }
    return 1;
}

static void check_same_res(const char *ctx, const shape *s, const res *a, const res *b)
{
    CHECK(same_bits("O", ctx, a->o, b->o, n_o(s)));
    CHECK(same_bits("weights", ctx, a->p, b->p, n_p(s)));
    CHECK(same_bits("lse", ctx, a->l, b->l, n_l(s)));
}

static void check_rel(const char *what, const char *ctx, const float *got, const float *want,
                      int64_t n, double tol)
{
    double e = test_rel_l2(got, want, n);
    tol = TOL(tol);
    if (!(e <= tol)) fprintf(stderr, "  [%s]: %s relative L2 error %g > %g\n", ctx, what, e, tol);
    CHECK(e <= tol);
}

/* The mask rules this file uses (causal with either alignment, a window,
 * kv_lens), written independently of the library; overflow-safe. */
typedef struct rule {
    int causal, bottom_right, use_window;
    int64_t wl, wr;
    const int64_t *kv_lens;
} rule;

static int rule_allows(const rule *ru, const shape *s, int64_t b, int64_t i, int64_t j)
{
    int64_t d = i + (ru->bottom_right ? s->Lk - s->Lq : 0);
    if (ru->kv_lens && j >= ru->kv_lens[b]) return 0;
    if (ru->causal && j > d) return 0;
    if (ru->use_window) {
        if (ru->wl >= 0 && d - j > ru->wl) return 0;
        if (ru->wr >= 0 && j - d > ru->wr) return 0;
    }
    return 1;
}

static qkv_attention_options rule_opts(const rule *ru)
{
    qkv_attention_options o = {0};
    o.causal = ru->causal;
    o.align = ru->bottom_right ? QKV_ALIGN_BOTTOM_RIGHT : QKV_ALIGN_TOP_LEFT;
    o.use_window = ru->use_window;
    o.window_left = ru->wl;
    o.window_right = ru->wr;
    o.kv_lens = ru->kv_lens;
    return o;
}

static double dot_qk(const prob *pr, int64_t b, int64_t h, int64_t i, int64_t j)
{
    const shape *s = &pr->s;
    int64_t hk = h / (s->H / s->Hkv);
    const float *q = pr->q + ((b * s->H + h) * s->Lq + i) * s->E;
    const float *k = pr->k + ((b * s->Hkv + hk) * s->Lk + j) * s->E;
    double d = 0;
    for (int64_t e = 0; e < s->E; e++) d += (double)q[e] * (double)k[e];
    return d;
}

/* 1. The weights of each row with an allowed key sum to 1, equal
 * exp(s_j - lse) with s_j recomputed here, are 0 where forbidden; O equals
 * weights @ V in double; rows with nothing allowed are 0 / -inf. */
static void check_distribution_one(const prob *pr, const rule *ru, const char *ctx,
                                   double scale)
{
    const shape *s = &pr->s;
    qkv_attention_options opt = rule_opts(ru);
    opt.scale = scale;
    res r = run(pr, &opt);
    if (r.st != QKV_OK) {
        free_res(&r);
        return;
    }
    double sc = scale != 0 ? scale : 1.0 / sqrt((double)s->E);
    float *ow = test_malloc((size_t)n_o(s) * sizeof(float));
    int bad_sum = 0, bad_w = 0, bad_empty = 0;
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t h = 0; h < s->H; h++) {
            int64_t hk = h / (s->H / s->Hkv);
            for (int64_t i = 0; i < s->Lq; i++) {
                int64_t row = (b * s->H + h) * s->Lq + i;
                const float *p = r.p + row * s->Lk;
                const float *o = r.o + row * s->Ev;
                double lse = r.l[row];
                int64_t nallowed = 0;
                double sum = 0;
                for (int64_t j = 0; j < s->Lk; j++) {
                    sum += p[j];
                    if (!rule_allows(ru, s, b, i, j)) {
                        if (p[j] != 0.0f && bad_w++ < 5)
                            fprintf(stderr, "  [%s] row %lld: forbidden key %lld has weight %g\n",
                                    ctx, (long long)row, (long long)j, p[j]);
                        continue;
                    }
                    nallowed++;
                    double sj = sc * dot_qk(pr, b, h, i, j);
                    double want = exp(sj - lse);
                    double tol = 1e-5 * want + 1e-37;
                    if (!(fabs(p[j] - want) <= tol) && bad_w++ < 5)
                        fprintf(stderr,
                                "  [%s] row %lld key %lld: weight %.9g, exp(s - lse) = %.9g\n",
                                ctx, (long long)row, (long long)j, p[j], want);
                }
                for (int64_t e = 0; e < s->Ev; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < s->Lk; j++)
                        acc += (double)p[j] *
                               (double)pr->v[((b * s->Hkv + hk) * s->Lk + j) * s->Ev + e];
                    ow[row * s->Ev + e] = (float)acc;
                }
                if (nallowed > 0) {
                    if (!(fabs(sum - 1.0) <= TOL(1e-6)) && bad_sum++ < 5)
                        fprintf(stderr, "  [%s] row %lld: weights sum to %.12g\n", ctx,
                                (long long)row, sum);
                } else {
                    int ok = sum == 0 && isinf(r.l[row]) && r.l[row] < 0;
                    for (int64_t e = 0; e < s->Ev; e++) ok = ok && o[e] == 0.0f;
                    if (!ok && bad_empty++ < 5)
                        fprintf(stderr,
                                "  [%s] row %lld has no allowed key: weight sum %g, lse %g, "
                                "o[0] %g (want 0, -inf, 0)\n",
                                ctx, (long long)row, sum, r.l[row], s->Ev ? o[0] : 0.0f);
                }
            }
        }
    CHECK(bad_sum == 0);
    CHECK(bad_w == 0);
    CHECK(bad_empty == 0);
    check_rel("O vs weights @ V", ctx, r.o, ow, n_o(s), 1e-6);
    free(ow);
    free_res(&r);
}

static void check_distribution(void)
{
    for (int c = 0; c < NSHAPES; c++) {
        const shape *s = &shapes[c];
        prob pr = make_prob(s, 100 + (uint64_t)c, -1.0f, 1.0f);
        char ctx[256], sh[160];
        shape_str(s, sh, sizeof sh);
        int64_t lens[3] = {s->Lk, 0, s->Lk > 1 ? s->Lk - 1 : s->Lk};
        rule none = {0, 0, 0, 0, 0, NULL};
        rule br = {1, 1, 0, 0, 0, lens}; /* Lq > Lk leaves rows empty */
        rule win = {1, 0, 1, 2, -1, NULL};
        snprintf(ctx, sizeof ctx, "distribution, no mask, %s", sh);
        check_distribution_one(&pr, &none, ctx, 0.0);
        snprintf(ctx, sizeof ctx, "distribution, causal bottom-right + kv_lens, %s", sh);
        check_distribution_one(&pr, &br, ctx, 0.0);
        snprintf(ctx, sizeof ctx, "distribution, causal top-left window(2,-1), scale 0.7, %s", sh);
        check_distribution_one(&pr, &win, ctx, 0.7);
        free_prob(&pr);
    }
}

/* 2. A shared permutation of the keys and values leaves O and lse unchanged
 * (to rounding) and permutes the weights the same way. */
static void check_permutation(void)
{
    for (int c = 0; c < NSHAPES; c++) {
        const shape *s = &shapes[c];
        prob pr = make_prob(s, 200 + (uint64_t)c, -1.0f, 1.0f);
        test_rng rng = test_rng_seed(900 + (uint64_t)c);
        int64_t *perm = test_malloc((size_t)s->Lk * sizeof *perm);
        for (int64_t j = 0; j < s->Lk; j++) perm[j] = j;
        for (int64_t j = s->Lk - 1; j > 0; j--) { /* Fisher-Yates */
            int64_t t = (int64_t)(test_rand(&rng) * (double)(j + 1));
            int64_t x = perm[j];
            perm[j] = perm[t];
            perm[t] = x;
        }
        /* Key j of the permuted problem is key perm[j] of the original. */
        prob pp = pr;
        pp.k = test_malloc((size_t)n_k(s) * sizeof(float));
        pp.v = test_malloc((size_t)n_v(s) * sizeof(float));
        for (int64_t bh = 0; bh < s->B * s->Hkv; bh++)
            for (int64_t j = 0; j < s->Lk; j++) {
                memcpy(pp.k + (bh * s->Lk + j) * s->E, pr.k + (bh * s->Lk + perm[j]) * s->E,
                       (size_t)s->E * sizeof(float));
                memcpy(pp.v + (bh * s->Lk + j) * s->Ev, pr.v + (bh * s->Lk + perm[j]) * s->Ev,
                       (size_t)s->Ev * sizeof(float));
            }
        /* A float mask (1, 1, Lq, Lk) that moves with its keys. */
        float *m = test_rand_f32(&rng, s->Lq * s->Lk, -2.0f, 2.0f);
        float *mp = test_malloc((size_t)(s->Lq * s->Lk) * sizeof(float));
        for (int64_t i = 0; i < s->Lq; i++)
            for (int64_t j = 0; j < s->Lk; j++) mp[i * s->Lk + j] = m[i * s->Lk + perm[j]];
        for (int with_mask = 0; with_mask < 2; with_mask++) {
            char ctx[256], sh[160];
            shape_str(s, sh, sizeof sh);
            snprintf(ctx, sizeof ctx, "permutation%s, %s", with_mask ? " + float mask" : "", sh);
            qkv_attention_options o1 = {0}, o2 = {0};
            if (with_mask) {
                o1.mask = qkv_tensor_contiguous(m, QKV_DTYPE_F32, 1, 1, s->Lq, s->Lk);
                o2.mask = qkv_tensor_contiguous(mp, QKV_DTYPE_F32, 1, 1, s->Lq, s->Lk);
            }
            res a = run(&pr, &o1), b = run(&pp, &o2);
            if (a.st == QKV_OK && b.st == QKV_OK) {
                float *pw = test_malloc((size_t)n_p(s) * sizeof(float));
                for (int64_t row = 0; row < n_l(s); row++)
                    for (int64_t j = 0; j < s->Lk; j++)
                        pw[row * s->Lk + j] = a.p[row * s->Lk + perm[j]];
                check_rel("O", ctx, b.o, a.o, n_o(s), 1e-6);
                check_rel("weights", ctx, b.p, pw, n_p(s), 1e-6);
                check_rel("lse", ctx, b.l, a.l, n_l(s), 1e-6);
                free(pw);
            }
            free_res(&a);
            free_res(&b);
        }
        free(m);
        free(mp);
        free(pp.k);
        free(pp.v);
        free(perm);
        free_prob(&pr);
    }
}

/* 3. A float mask of one constant c shifts every score by c: O and the
 * weights do not change, lse moves by c (forbidden rows stay -inf). */
static void check_shift(void)
{
    const float c = 37.5f;
    for (int cs = 0; cs < NSHAPES; cs++) {
        const shape *s = &shapes[cs];
        prob pr = make_prob(s, 300 + (uint64_t)cs, -1.0f, 1.0f);
        float one = c;
        float *full = test_malloc((size_t)n_p(s) * sizeof(float));
        for (int64_t x = 0; x < n_p(s); x++) full[x] = c;
        for (int variant = 0; variant < 4; variant++) {
            int full_mask = variant & 1, causal = variant >> 1;
            char ctx[256], sh[160];
            shape_str(s, sh, sizeof sh);
            snprintf(ctx, sizeof ctx, "shift by %g (%s mask%s), %s", (double)c,
                     full_mask ? "full" : "(1,1,1,1)", causal ? ", causal bottom-right" : "",
                     sh);
            qkv_attention_options o1 = {0}, o2;
            o1.causal = causal;
            o1.align = QKV_ALIGN_BOTTOM_RIGHT;
            o2 = o1;
            o2.mask = full_mask ? qkv_tensor_contiguous(full, QKV_DTYPE_F32, s->B, s->H, s->Lq,
                                                        s->Lk)
                                : qkv_tensor_contiguous(&one, QKV_DTYPE_F32, 1, 1, 1, 1);
            res a = run(&pr, &o1), b = run(&pr, &o2);
            if (a.st == QKV_OK && b.st == QKV_OK) {
                check_rel("O", ctx, b.o, a.o, n_o(s), 1e-6);
                check_rel("weights", ctx, b.p, a.p, n_p(s), 1e-6);
                int bad = 0;
                for (int64_t row = 0; row < n_l(s); row++) {
                    double want = (double)a.l[row] + c;
                    int ok = isinf(a.l[row]) ? b.l[row] == a.l[row]
                                             : fabs(b.l[row] - want) <= TOL(1e-6) * fabs(want);
                    if (!ok && bad++ < 5)
                        fprintf(stderr, "  [%s] row %lld: lse %.9g, want %.9g + %g\n", ctx,
                                (long long)row, b.l[row], a.l[row], (double)c);
                }
                CHECK(bad == 0);
            }
            free_res(&a);
            free_res(&b);
        }
        free(full);
        free_prob(&pr);
    }
}

/* 4. Each component of o_i lies within [min_j v_j, max_j v_j] over the keys
 * row i may attend. */
static void check_convex_hull(void)
{
    for (int cs = 0; cs < NSHAPES; cs++) {
        const shape *s = &shapes[cs];
        prob pr = make_prob(s, 400 + (uint64_t)cs, -3.0f, 3.0f);
        /* Values in a narrow band away from 0 make the hull a real bound. */
        test_rng rng = test_rng_seed(1400 + (uint64_t)cs);
        for (int64_t x = 0; x < n_v(s); x++) pr.v[x] = 0.5f + (float)test_rand(&rng);
        int64_t lens[3] = {s->Lk > 2 ? s->Lk - 2 : s->Lk, s->Lk, 1};
        rule rules[4] = {{0, 0, 0, 0, 0, NULL},
                         {1, 0, 0, 0, 0, NULL},
                         {0, 0, 1, 1, 1, lens},
                         {1, 1, 1, 3, -1, lens}};
        for (int ri = 0; ri < 4; ri++) {
            char ctx[256], sh[160];
            shape_str(s, sh, sizeof sh);
            snprintf(ctx, sizeof ctx, "convex hull, rule %d, %s", ri, sh);
            qkv_attention_options opt = rule_opts(&rules[ri]);
            res r = run(&pr, &opt);
            int bad = 0;
            for (int64_t b = 0; r.st == QKV_OK && b < s->B; b++)
                for (int64_t h = 0; h < s->H; h++) {
                    int64_t hk = h / (s->H / s->Hkv);
                    for (int64_t i = 0; i < s->Lq; i++) {
                        const float *o = r.o + ((b * s->H + h) * s->Lq + i) * s->Ev;
                        for (int64_t e = 0; e < s->Ev; e++) {
                            double lo = INFINITY, hi = -INFINITY;
                            for (int64_t j = 0; j < s->Lk; j++) {
                                if (!rule_allows(&rules[ri], s, b, i, j)) continue;
                                double x = pr.v[((b * s->Hkv + hk) * s->Lk + j) * s->Ev + e];
                                if (x < lo) lo = x;
                                if (x > hi) hi = x;
                            }
                            if (lo > hi) lo = hi = 0; /* nothing allowed: o = 0 */
                            double tol = TOL(1e-6) * fmax(fabs(lo), fabs(hi));
                            if (!(o[e] >= lo - tol && o[e] <= hi + tol) && bad++ < 5)
                                fprintf(stderr, "  [%s] b %lld h %lld i %lld e %lld: o = %.9g "
                                        "outside [%.9g, %.9g]\n", ctx, (long long)b,
                                        (long long)h, (long long)i, (long long)e, o[e], lo, hi);
                        }
                    }
                }
            CHECK(bad == 0);
            free_res(&r);
        }
        free_prob(&pr);
    }
}

/* 5. A bool mask and the float mask with -inf where it is false and 0 where
 * it is true give the same bits; any nonzero byte means true. */
static void check_bool_vs_float(void)
{
    for (int cs = 0; cs < NSHAPES; cs++) {
        const shape *s = &shapes[cs];
        prob pr = make_prob(s, 500 + (uint64_t)cs, -1.0f, 1.0f);
        test_rng rng = test_rng_seed(1500 + (uint64_t)cs);
        int64_t mshapes[4][4] = {{s->B, s->H, s->Lq, s->Lk},
                                 {1, 1, s->Lq, s->Lk},
                                 {s->B, 1, 1, s->Lk},
                                 {1, s->H, s->Lq, 1}};
        for (int ms = 0; ms < 4; ms++) {
            const int64_t *m4 = mshapes[ms];
            int64_t n = m4[0] * m4[1] * m4[2] * m4[3];
            unsigned char *mb = test_malloc((size_t)n);
            float *mf = test_malloc((size_t)n * sizeof(float));
            for (int64_t x = 0; x < n; x++) {
                int keep = test_rand(&rng) >= 0.3;
                mb[x] = keep ? (unsigned char)(1 + (int)(test_rand(&rng) * 255)) : 0;
                mf[x] = keep ? 0.0f : -INFINITY;
            }
            /* The first mask row is all false: a fully masked row. */
            for (int64_t j = 0; j < m4[3]; j++) {
                mb[j] = 0;
                mf[j] = -INFINITY;
            }
            for (int causal = 0; causal < 2; causal++) {
                char ctx[256], sh[160];
                shape_str(s, sh, sizeof sh);
                snprintf(ctx, sizeof ctx, "bool vs float mask (%lld,%lld,%lld,%lld)%s, %s",
                         (long long)m4[0], (long long)m4[1], (long long)m4[2],
                         (long long)m4[3], causal ? " causal" : "", sh);
                qkv_attention_options ob = {0}, of = {0};
                ob.causal = of.causal = causal;
                ob.mask = qkv_tensor_contiguous(mb, QKV_DTYPE_BOOL, m4[0], m4[1], m4[2], m4[3]);
                of.mask = qkv_tensor_contiguous(mf, QKV_DTYPE_F32, m4[0], m4[1], m4[2], m4[3]);
                res a = run(&pr, &ob), b = run(&pr, &of);
                if (a.st == QKV_OK && b.st == QKV_OK) check_same_res(ctx, s, &a, &b);
                free_res(&a);
                free_res(&b);
            }
            free(mb);
            free(mf);
        }
        free_prob(&pr);
    }
}

/* 6. GQA / MQA equals the same problem with each kv head repeated H/Hkv
 * times, bit for bit. */
static void check_gqa_repeat(void)
{
    /* The shapes, then decode shapes long enough to split their keys
     * into chunks (the choice must not depend on Hkv). */
    static const shape decode[] = {{1, 32, 8, 1, 2500, 16, 16}, {2, 24, 4, 2, 4200, 8, 5}};
    for (int cs = 0; cs < NSHAPES + 2; cs++) {
        const shape *s = cs < NSHAPES ? &shapes[cs] : &decode[cs - NSHAPES];
        if (s->Hkv == s->H) continue;
        prob pr = make_prob(s, 600 + (uint64_t)cs, -1.0f, 1.0f);
        prob pe = pr;
        pe.s.Hkv = s->H;
        pe.k = test_malloc((size_t)n_k(&pe.s) * sizeof(float));
        pe.v = test_malloc((size_t)n_v(&pe.s) * sizeof(float));
        int64_t g = s->H / s->Hkv;
        for (int64_t b = 0; b < s->B; b++)
            for (int64_t h = 0; h < s->H; h++) {
                memcpy(pe.k + (b * s->H + h) * s->Lk * s->E,
                       pr.k + (b * s->Hkv + h / g) * s->Lk * s->E,
                       (size_t)(s->Lk * s->E) * sizeof(float));
                memcpy(pe.v + (b * s->H + h) * s->Lk * s->Ev,
                       pr.v + (b * s->Hkv + h / g) * s->Lk * s->Ev,
                       (size_t)(s->Lk * s->Ev) * sizeof(float));
            }
        for (int causal = 0; causal < 2; causal++) {
            char ctx[256], sh[160];
            shape_str(s, sh, sizeof sh);
            snprintf(ctx, sizeof ctx, "GQA vs repeated heads%s, %s", causal ? " causal" : "", sh);
            qkv_attention_options opt = {0};
            opt.causal = causal;
            res a = run(&pr, &opt), b = run(&pe, &opt);
            if (a.st == QKV_OK && b.st == QKV_OK) check_same_res(ctx, s, &a, &b);
            free_res(&a);
            free_res(&b);
        }
        free(pe.k);
        free(pe.v);
        free_prob(&pr);
    }
}

/* 7. With Lq == Lk both alignments put the diagonal at d_i = i. */
static void check_square_alignment(void)
{
    for (int cs = 0; cs < NSHAPES; cs++) {
        const shape *s = &shapes[cs];
        if (s->Lq != s->Lk) continue;
        prob pr = make_prob(s, 700 + (uint64_t)cs, -1.0f, 1.0f);
        for (int win = 0; win < 2; win++) {
            char ctx[256], sh[160];
            shape_str(s, sh, sizeof sh);
            snprintf(ctx, sizeof ctx, "causal top-left vs bottom-right%s, %s",
                     win ? " + window(2,1)" : "", sh);
            qkv_attention_options tl = {0}, br;
            tl.causal = 1;
            tl.use_window = win;
            tl.window_left = 2;
            tl.window_right = 1;
            br = tl;
            br.align = QKV_ALIGN_BOTTOM_RIGHT;
            res a = run(&pr, &tl), b = run(&pr, &br);
            if (a.st == QKV_OK && b.st == QKV_OK) check_same_res(ctx, s, &a, &b);
            free_res(&a);
            free_res(&b);
        }
        free_prob(&pr);
    }
}

/* 8. num_threads 1, 2, 3, 7 and 0 give the same bits, and so do two runs. */
static void check_determinism(void)
{
    const shape ds[] = {{2, 4, 2, 33, 47, 24, 20}, {1, 2, 1, 1, 13, 5, 3}, {3, 3, 1, 5, 6, 7, 9},
                        {1, 2, 2, 3, 2500, 16, 16}}; /* the last: keys split in chunks */
    for (size_t cs = 0; cs < sizeof ds / sizeof ds[0]; cs++) {
        const shape *s = &ds[cs];
        prob pr = make_prob(s, 800 + cs, -2.0f, 2.0f);
        test_rng rng = test_rng_seed(1800 + cs);
        float *m = test_rand_f32(&rng, s->Lq * s->Lk, -1.0f, 1.0f);
        for (int impl = 0; impl < 2; impl++) {
            qkv_attention_options opt = {0};
            opt.causal = 1;
            opt.align = QKV_ALIGN_BOTTOM_RIGHT;
            opt.softcap = 5.0;
            opt.mask = qkv_tensor_contiguous(m, QKV_DTYPE_F32, 1, 1, s->Lq, s->Lk);
            const qkv_impl im = impl ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO;
            res base = run_on(&pr, im, 1, &opt);
            const int threads[] = {1, 2, 3, 7, 0};
            for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
                char ctx[256], sh[160];
                shape_str(s, sh, sizeof sh);
                snprintf(ctx, sizeof ctx, "%s, num_threads %d vs 1, %s",
                         impl ? "reference" : "fast", threads[t], sh);
                res r = run_on(&pr, im, threads[t], &opt);
                if (base.st == QKV_OK && r.st == QKV_OK) check_same_res(ctx, s, &r, &base);
                /* A second run, same bytes. */
                res r2 = run_on(&pr, im, threads[t], &opt);
                if (r.st == QKV_OK && r2.st == QKV_OK) {
                    CHECK(memcmp(r.o, r2.o, (size_t)n_o(s) * sizeof(float)) == 0);
                    CHECK(memcmp(r.p, r2.p, (size_t)n_p(s) * sizeof(float)) == 0);
                    CHECK(memcmp(r.l, r2.l, (size_t)n_l(s) * sizeof(float)) == 0);
                }
                free_res(&r);
                free_res(&r2);
            }
            free_res(&base);
        }
        free(m);
        free_prob(&pr);
    }
}

static void check_scale_invariance(void)
{
    for (int cs = 0; cs < NSHAPES; cs++) {
        const shape *s = &shapes[cs];
        prob pr = make_prob(s, 900 + (uint64_t)cs, -1.0f, 1.0f);
        prob p2 = pr;
        p2.q = test_malloc((size_t)n_q(s) * sizeof(float));
        /* 3, not 2: scaling by a power of two is exact in binary floating
         * point, so both runs would share every bit whatever the code does. */
        for (int64_t x = 0; x < n_q(s); x++) p2.q[x] = 3.0f * pr.q[x];
        for (int cap = 0; cap < 2; cap++) {
            char ctx[256], sh[160];
            shape_str(s, sh, sizeof sh);
            snprintf(ctx, sizeof ctx, "q*3 with scale/3%s, %s", cap ? " softcap 0.8" : "", sh);
            qkv_attention_options o1 = {0}, o2 = {0};
            o1.softcap = o2.softcap = cap ? 0.8 : 0.0;
            o2.scale = 1.0 / (3.0 * sqrt((double)s->E)); /* o1 uses the default 1/sqrt(E) */
            res a = run(&pr, &o1), b = run(&p2, &o2);
            if (a.st == QKV_OK && b.st == QKV_OK) {
                check_rel("O", ctx, b.o, a.o, n_o(s), 1e-6);
                check_rel("weights", ctx, b.p, a.p, n_p(s), 1e-6);
                check_rel("lse", ctx, b.l, a.l, n_l(s), 1e-6);
            }
            free_res(&a);
            free_res(&b);
        }
        free(p2.q);
        free_prob(&pr);
    }
}

/* 10. Large logits (entries ~30, scores ~1e4): finite outputs, weights sum
 * to 1, lse and O agree with a double recomputation. */
static void check_large_logits(void)
{
    const shape ls[] = {{1, 2, 1, 5, 9, 16, 8}, {2, 3, 3, 4, 4, 17, 5}, {1, 1, 1, 3, 200, 12, 3}};
    for (size_t cs = 0; cs < sizeof ls / sizeof ls[0]; cs++) {
        const shape *s = &ls[cs];
        prob pr = make_prob(s, 1000 + cs, -35.0f, 35.0f);
        test_rng rng = test_rng_seed(2000 + cs);
        for (int64_t x = 0; x < n_q(s); x++) pr.q[x] = 25.0f + 10.0f * (float)test_rand(&rng);
        char ctx[256], sh[160];
        shape_str(s, sh, sizeof sh);
        snprintf(ctx, sizeof ctx, "large logits, %s", sh);
        qkv_attention_options opt = {0};
        opt.scale = 1.0;
        res r = run(&pr, &opt);
        if (r.st != QKV_OK) {
            free_res(&r);
            free_prob(&pr);
            continue;
        }
        int nonfinite = 0, bad_sum = 0, bad_lse = 0;
        double maxs = 0;
        float *ow = test_malloc((size_t)n_o(s) * sizeof(float));
        float *lw = test_malloc((size_t)n_l(s) * sizeof(float));
        for (int64_t x = 0; x < n_o(s); x++) nonfinite += !isfinite(r.o[x]);
        for (int64_t x = 0; x < n_p(s); x++) nonfinite += !isfinite(r.p[x]);
        for (int64_t x = 0; x < n_l(s); x++) nonfinite += !isfinite(r.l[x]);
        for (int64_t b = 0; b < s->B; b++)
            for (int64_t h = 0; h < s->H; h++)
                for (int64_t i = 0; i < s->Lq; i++) {
                    int64_t row = (b * s->H + h) * s->Lq + i, hk = h / (s->H / s->Hkv);
                    double sum = 0, m = -INFINITY, se = 0;
                    for (int64_t j = 0; j < s->Lk; j++) {
                        double sj = dot_qk(&pr, b, h, i, j);
                        if (fabs(sj) > maxs) maxs = fabs(sj);
                        if (sj > m) m = sj;
                        sum += r.p[row * s->Lk + j];
                    }
                    double *pe = test_malloc((size_t)s->Lk * sizeof(double));
                    for (int64_t j = 0; j < s->Lk; j++) {
                        pe[j] = exp(dot_qk(&pr, b, h, i, j) - m);
                        se += pe[j];
                    }
                    lw[row] = (float)(m + log(se));
                    for (int64_t e = 0; e < s->Ev; e++) {
                        double acc = 0;
                        for (int64_t j = 0; j < s->Lk; j++)
                            acc += pe[j] * pr.v[((b * s->Hkv + hk) * s->Lk + j) * s->Ev + e];
                        ow[row * s->Ev + e] = (float)(acc / se);
                    }
                    free(pe);
                    if (!(fabs(sum - 1) <= TOL(1e-6)) && bad_sum++ < 5)
                        fprintf(stderr, "  [%s] row %lld: weights sum to %.12g\n", ctx,
                                (long long)row, sum);
                    if (!(fabs(r.l[row] - lw[row]) <= TOL(1e-6) * fabs(lw[row])) && bad_lse++ < 5)
                        fprintf(stderr, "  [%s] row %lld: lse %.9g, want %.9g\n", ctx,
                                (long long)row, r.l[row], lw[row]);
                }
        if (nonfinite) fprintf(stderr, "  [%s]: %d non-finite outputs\n", ctx, nonfinite);
        CHECK(nonfinite == 0);
        CHECK(bad_sum == 0);
        CHECK(bad_lse == 0);
        CHECK(maxs > 1000); /* the test really has large logits */
        check_rel("O", ctx, r.o, ow, n_o(s), 1e-6);
        free(ow);
        free(lw);
        free_res(&r);
        free_prob(&pr);
    }
}

int main(void)
{
    for (int pass = 0; pass < 2; pass++) {
        run_impl = pass == 0 ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO;
        tol_floor = pass == 0 ? 0.0 : 1e-5;
        check_distribution();
        check_permutation();
        check_shift();
        check_convex_hull();
        check_bool_vs_float();
        check_gqa_repeat();
        check_square_alignment();
        check_determinism();
        check_scale_invariance();
        check_large_logits();
    }
    return test_finish("test_properties");
}
