/* Scores past float's range. The fast path computes scale * <q, k> in
 * float; the reference in double. For every finite scale, and for large
 * finite inputs, the fast forward and backward must give the reference's
 * answer (finite where the reference's is), in the library, in `qkv run`
 * and in `qkv grad`. The expected values are the reference kernel's. */
#include "test.h"
#include "util.h"

#include "qkv.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct problem {
    test_shape s;
    float *q, *k, *v;
} problem;

static problem make(test_shape s, uint64_t seed, float qlo, float qhi, float klo, float khi)
{
    test_rng r = test_rng_seed(seed);
    problem p = {s, NULL, NULL, NULL};
    p.q = test_rand_f32(&r, n_q(&s), qlo, qhi);
    p.k = test_rand_f32(&r, n_k(&s), klo, khi);
    p.v = test_rand_f32(&r, n_v(&s), -1.0f, 1.0f);
    return p;
}

static void unmake(problem *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
}

typedef struct result {
    float *o, *w, *l;
    qkv_status st;
} result;

/* The forward on impl with num_threads threads. */
static result forward(const problem *p, qkv_impl impl, int num_threads,
                      const qkv_attention_options *opt)
{
    const test_shape *s = &p->s;
    result r = {test_malloc((size_t)n_o(s) * 4 + 4), test_malloc((size_t)n_p(s) * 4 + 4),
                test_malloc((size_t)n_l(s) * 4 + 4), QKV_OK};
    qkv_tensor tq = qkv_tensor_contiguous(p->q, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    qkv_tensor tk = qkv_tensor_contiguous(p->k, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tv = qkv_tensor_contiguous(p->v, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    qkv_tensor to = qkv_tensor_contiguous(r.o, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor tw = qkv_tensor_contiguous(r.w, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Lk);
    qkv_tensor tl = qkv_tensor_contiguous(r.l, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
    qkv_context *ctx = test_context(impl, QKV_ISA_AUTO, num_threads);
    r.st = qkv_attention_forward(ctx, &to, &tw, &tl, &tq, &tk, &tv, opt);
    qkv_context_free(ctx);
    if (r.st != QKV_OK) fprintf(stderr, "  forward: %s\n", qkv_error_detail());
    return r;
}

static void unresult(result *r)
{
    free(r->o);
    free(r->w);
    free(r->l);
}

static int64_t count_nan(const float *x, int64_t n)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += isnan(x[i]) != 0;
    return c;
}

/* The fast forward against the reference for one problem and scale. */
static void check_forward(const char *what, const problem *p, double scale, int causal,
                          int threads)
{
    qkv_attention_options opt = {0};
    opt.scale = scale;
    opt.causal = causal;
    opt.align = QKV_ALIGN_BOTTOM_RIGHT;
    result fast = forward(p, QKV_IMPL_AUTO, threads, &opt);
    result ref = forward(p, QKV_IMPL_REFERENCE, threads, &opt);
    const test_shape *s = &p->s;
    const double eo = test_rel_l2(fast.o, ref.o, n_o(s));
    const double ew = test_rel_l2(fast.w, ref.w, n_p(s));
    const double el = test_rel_l2(fast.l, ref.l, n_l(s));
    const int64_t nan = count_nan(fast.o, n_o(s));
    CHECK(fast.st == QKV_OK && ref.st == QKV_OK);
    CHECK(count_nan(ref.o, n_o(s)) == 0); /* the reference's answer is finite */
    CHECK(nan == 0);
    CHECK(eo <= 1e-5);
    CHECK(ew <= 1e-5);
    CHECK(el <= 1e-5);
    if (nan || !(eo <= 1e-5) || !(ew <= 1e-5) || !(el <= 1e-5))
        fprintf(stderr, "  %s, scale %g: %lld NaN in O; rel L2 O %.3g, weights %.3g, lse %.3g\n",
                what, scale, (long long)nan, eo, ew, el);
    unresult(&fast);
    unresult(&ref);
}

/* Every finite scale, on the tiled path, the row-major decode path with
 * split keys, and with causal masking (which leaves some rows one key). */
static void check_scales(void)
{
    const double scales[] = {1e38, -1e38, 3e38, 1e39, -1e39, 1e300, 1e-38, 1e-39, 1e-46};
    const test_shape tiled = {2, 4, 2, 37, 150, 16, 8};
    const test_shape decode = {1, 4, 2, 1, 4100, 32, 16};
    problem a = make(tiled, 1, -1.0f, 1.0f, -1.0f, 1.0f);
    problem b = make(decode, 2, -1.0f, 1.0f, -1.0f, 1.0f);
    for (size_t i = 0; i < sizeof scales / sizeof scales[0]; i++) {
        check_forward("tiled", &a, scales[i], 0, 2);
        check_forward("tiled causal", &a, scales[i], 1, 3);
        check_forward("decode, split keys", &b, scales[i], 0, 2);
    }
    unmake(&a);
    unmake(&b);
}

/* Large finite inputs at the default scale: products of 1e20 and 1e20
 * overflow float, and when every score of a row overflows to -inf the row
 * is not "fully masked": the reference still gives its softmax. */
static void check_large_inputs(void)
{
    const test_shape s = {1, 2, 2, 9, 40, 8, 4};
    problem pos = make(s, 3, 1e19f, 1e20f, 1e19f, 1e20f);   /* every score +overflow */
    problem neg = make(s, 4, 1e19f, 1e20f, -1e20f, -1e19f); /* every score -overflow */
    problem mix = make(s, 5, -1e20f, 1e20f, -1e20f, 1e20f);
    check_forward("inputs 1e20, scores +inf in float", &pos, 0.0, 0, 1);
    check_forward("inputs 1e20, scores -inf in float", &neg, 0.0, 0, 2);
    check_forward("inputs +-1e20", &mix, 0.0, 1, 2);
    unmake(&pos);
    unmake(&neg);
    unmake(&mix);
}

/* NaN stays where it was: a NaN key reaches exactly the rows that read it
 * (these are not overflows, so the fast path keeps its own answer). */
static void check_nan_kept(void)
{
    const test_shape s = {1, 1, 1, 6, 6, 4, 4};
    problem p = make(s, 6, -1.0f, 1.0f, -1.0f, 1.0f);
    p.k[3 * 4 + 1] = NAN; /* key 3: causal rows 3..5 read it */
    qkv_attention_options opt = {0};
    opt.causal = 1;
    opt.scale = 1e38;
    result r = forward(&p, QKV_IMPL_AUTO, 0, &opt);
    for (int64_t i = 0; i < 6; i++) {
        const int64_t nan = count_nan(r.o + i * 4, 4);
        CHECK(i < 3 ? nan == 0 : nan == 4);
    }
    unresult(&r);
    unmake(&p);
}

/* The fast backward against the reference backward for one problem and
 * scale, given the forward's own O and lse. */
static void check_backward_case(const char *what, const problem *p, double scale)
{
    const test_shape s = p->s;
    test_rng rng = test_rng_seed(8);
    float *dout = test_rand_f32(&rng, n_o(&s), -1.0f, 1.0f);
    qkv_attention_options opt = {0};
    opt.scale = scale;
    result f = forward(p, QKV_IMPL_AUTO, 2, &opt);
    float *g[2][3];
    for (int impl = 0; impl < 2; impl++) {
        g[impl][0] = test_malloc((size_t)n_q(&s) * 4);
        g[impl][1] = test_malloc((size_t)n_k(&s) * 4);
        g[impl][2] = test_malloc((size_t)n_v(&s) * 4);
        qkv_tensor tq = qkv_tensor_contiguous(p->q, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.E);
        qkv_tensor tk = qkv_tensor_contiguous(p->k, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.E);
        qkv_tensor tv = qkv_tensor_contiguous(p->v, QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.Ev);
        qkv_tensor to = qkv_tensor_contiguous(f.o, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.Ev);
        qkv_tensor tl = qkv_tensor_contiguous(f.l, QKV_DTYPE_F32, s.B, s.H, s.Lq, 1);
        qkv_tensor td = qkv_tensor_contiguous(dout, QKV_DTYPE_F32, s.B, s.H, s.Lq, s.Ev);
        qkv_tensor dq = qkv_tensor_contiguous(g[impl][0], QKV_DTYPE_F32, s.B, s.H, s.Lq, s.E);
        qkv_tensor dk = qkv_tensor_contiguous(g[impl][1], QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.E);
        qkv_tensor dv = qkv_tensor_contiguous(g[impl][2], QKV_DTYPE_F32, s.B, s.Hkv, s.Lk, s.Ev);
        qkv_context *ctx = test_context(impl ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO, QKV_ISA_AUTO, 2);
        qkv_status st =
            qkv_attention_backward(ctx, &dq, &dk, &dv, NULL, &td, &tq, &tk, &tv, &to, &tl, &opt);
        qkv_context_free(ctx);
        if (st != QKV_OK) fprintf(stderr, "  backward: %s\n", qkv_error_detail());
        CHECK(st == QKV_OK);
    }
    const int64_t n[3] = {n_q(&s), n_k(&s), n_v(&s)};
    for (int t = 0; t < 3; t++) {
        const int64_t nan = count_nan(g[0][t], n[t]);
        const double e = test_rel_l2(g[0][t], g[1][t], n[t]);
        const double d = test_max_abs_diff(g[0][t], g[1][t], n[t]);
        CHECK(count_nan(g[1][t], n[t]) == 0);
        CHECK(nan == 0);
        CHECK(e <= 1e-5 || d <= 1e-6); /* dQ, dK may be exactly 0 */
        if (nan || !(e <= 1e-5 || d <= 1e-6))
            fprintf(stderr, "  backward, %s, scale %g, gradient %d: %lld NaN, rel L2 %.3g, "
                    "max diff %.3g\n", what, scale, t, (long long)nan, e, d);
    }
    if (scale == 1e39) /* one-hot weights: dS = 0 */
        for (int64_t i = 0; i < n_q(&s); i++) CHECK(g[1][0][i] == 0.0f);
    for (int impl = 0; impl < 2; impl++)
        for (int t = 0; t < 3; t++) free(g[impl][t]);
    unresult(&f);
    free(dout);
}

/* The backward past float: scales outside float's range, a scale inside
 * it whose scores overflow, and inputs of 1e20 at the default scale, whose
 * lse is finite (the forward redid the rows in double) while the fast
 * backward's float scores overflow again. With scale 1e39 the weights are
 * one-hot, so dQ and dK are 0. */
static void check_backward(void)
{
    const test_shape s = {1, 2, 1, 7, 11, 8, 4};
    problem p = make(s, 7, -1.0f, 1.0f, -1.0f, 1.0f);
    const double scales[] = {1e39, 3e38, 1e37, 1e-40};
    for (size_t x = 0; x < sizeof scales / sizeof scales[0]; x++)
        check_backward_case("unit inputs", &p, scales[x]);
    unmake(&p);
    problem big = make(s, 11, -1e20f, 1e20f, -1e20f, 1e20f);
    check_backward_case("inputs +-1e20", &big, 0.0);
    unmake(&big);
    /* The reviewer's case: one key's float dot is inf - inf, the other is
     * small; the true lse is finite (2e20). */
    const test_shape t = {1, 1, 1, 1, 2, 2, 2};
    float q[2] = {1e20f, 1e20f}, k[4] = {1e20f, -1e20f, 1.0f, 1.0f}, v[4] = {1, 2, 3, 4};
    problem tiny = {t, q, k, v};
    check_backward_case("inf - inf in one dot", &tiny, 1.0);
}

/* Values whose float sum overflows: two equal keys with values 3e38 give
 * O = 3e38 (the reference's double sum is 6e38, halved), not inf. */
static void check_value_sum(void)
{
    const test_shape s = {1, 1, 1, 3, 2, 4, 2};
    problem p = make(s, 12, -1.0f, 1.0f, -1.0f, 1.0f);
    for (int e = 0; e < 4; e++) p.k[4 + e] = p.k[e];
    for (int c = 0; c < 4; c++) p.v[c] = 3e38f;
    check_forward("values of 3e38", &p, 0.0, 0, 1);
    unmake(&p);
}

/* A NaN value at a key some rows may not see (a bool mask), with a scale
 * that overflows: the rows that cannot see it are redone and finite, the
 * rows that can hold NaN (at least where the value has it). */
static void check_nan_masked(void)
{
    const test_shape s = {1, 1, 1, 4, 6, 4, 4};
    problem p = make(s, 13, -1.0f, 1.0f, -1.0f, 1.0f);
    p.v[5 * 4 + 2] = NAN; /* key 5's value */
    unsigned char allow[4 * 6];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 6; j++) allow[i * 6 + j] = !(j == 5 && i < 2); /* rows 0, 1: not key 5 */
    qkv_attention_options opt = {0};
    opt.scale = 1e38;
    opt.mask = qkv_tensor_contiguous(allow, QKV_DTYPE_BOOL, 1, 1, 4, 6);
    result r = forward(&p, QKV_IMPL_AUTO, 0, &opt);
    result ref = forward(&p, QKV_IMPL_REFERENCE, 0, &opt);
    for (int64_t i = 0; i < 4; i++) {
        const int64_t nan = count_nan(r.o + i * 4, 4);
        CHECK(i < 2 ? nan == 0 : nan >= 1); /* reading the NaN, the row is NaN's */
        if (i < 2) CHECK(test_rel_l2(r.o + i * 4, ref.o + i * 4, 4) <= 1e-5);
    }
    unresult(&r);
    unresult(&ref);
    unmake(&p);
}

/* `qkv run` and `qkv grad` with --scale 1e39: the fast path's files equal
 * the reference's (--reference) and hold no NaN. */
static void write_npy(const char *path, float *data, int ndim, const int64_t *shape)
{
    qkv_array a = {0};
    a.data = data;
    a.dtype = QKV_DTYPE_F32;
    a.ndim = ndim;
    for (int d = 0; d < ndim; d++) a.shape[d] = shape[d];
    CHECK(qkv_npy_write(path, &a) == QKV_OK);
}

static void check_cli(void)
{
    char *dir = test_tmpdir();
    const test_shape s = {1, 2, 2, 8, 8, 16, 16};
    problem p = make(s, 9, -1.0f, 1.0f, -1.0f, 1.0f);
    test_rng rng = test_rng_seed(10);
    float *dout = test_rand_f32(&rng, n_o(&s), -1.0f, 1.0f);
    const int64_t shape[3] = {2, 8, 16};
    char f[10][4200];
    const char *names[10] = {"q", "k", "v", "do", "o", "o_ref", "dq", "dk", "dv", "dq_ref"};
    for (int i = 0; i < 10; i++) snprintf(f[i], sizeof f[i], "%s/%s.npy", dir, names[i]);
    write_npy(f[0], p.q, 3, shape);
    write_npy(f[1], p.k, 3, shape);
    write_npy(f[2], p.v, 3, shape);
    write_npy(f[3], dout, 3, shape);
    char out[4096], err[4096];
    for (int ref = 0; ref < 2; ref++) {
        char *run[] = {"qkv", "run", "-q", f[0], "-k", f[1], "-v", f[2], "-o", f[4 + ref],
                       "--scale", "1e39", "--causal", ref ? "--reference" : NULL, NULL};
        int rc = test_run_qkv(run, out, sizeof out, err, sizeof err);
        if (rc != 0) fprintf(stderr, "  qkv run --scale 1e39: exit %d: %s", rc, err);
        CHECK(rc == 0);
        char *grad[] = {"qkv", "grad", "-q", f[0], "-k", f[1], "-v", f[2], "--dout", f[3],
                        "--dq", f[ref ? 9 : 6], "--dk", f[7], "--dv", f[8], "--scale", "1e39",
                        ref ? "--reference" : NULL, NULL};
        rc = test_run_qkv(grad, out, sizeof out, err, sizeof err);
        if (rc != 0) fprintf(stderr, "  qkv grad --scale 1e39: exit %d: %s", rc, err);
        CHECK(rc == 0);
    }
    qkv_array a[4] = {{0}};
    const int which[4] = {4, 5, 6, 9};
    for (int i = 0; i < 4; i++) CHECK(qkv_npy_read(f[which[i]], &a[i]) == QKV_OK);
    if (a[0].data && a[1].data && a[2].data && a[3].data) {
        CHECK(count_nan(a[0].data, n_o(&s)) == 0);
        CHECK(test_rel_l2(a[0].data, a[1].data, n_o(&s)) <= 1e-5);
        CHECK(count_nan(a[2].data, n_q(&s)) == 0);
        CHECK(test_max_abs_diff(a[2].data, a[3].data, n_q(&s)) <= 1e-6);
    }
    for (int i = 0; i < 4; i++) qkv_array_free(&a[i]);
    free(dout);
    unmake(&p);
    test_rmdir(dir);
}

/* float64 to float32 past float's range rounds as IEEE does: to FLT_MAX
 * below the midpoint towards 2^128, to infinity from it (and UBSan sees no
 * undefined conversion). */
static void check_convert(void)
{
    const double in[8] = {1e39, -1e39, 0x1.fffffe8p+127, 0x1.ffffffp+127, -0x1.fffffe8p+127,
                          1e-50, 1e300, NAN};
    const float want[7] = {INFINITY, -INFINITY, FLT_MAX, INFINITY, -FLT_MAX, 0.0f, INFINITY};
    qkv_array src = {0}, dst = {0};
    src.data = (void *)in;
    src.dtype = QKV_DTYPE_F64;
    src.ndim = 1;
    src.shape[0] = 8;
    CHECK(qkv_array_convert(&dst, &src, QKV_DTYPE_F32) == QKV_OK);
    const float *f = dst.data;
    for (int i = 0; f && i < 7; i++) {
        CHECK(f[i] == want[i]);
        if (f[i] != want[i]) fprintf(stderr, "  convert %a: got %a, want %a\n", in[i], f[i], want[i]);
    }
    if (f) CHECK(isnan(f[7]));
    qkv_array_free(&dst);
}

int main(void)
{
    check_convert();
    check_scales();
    check_large_inputs();
    check_nan_kept();
    check_nan_masked();
    check_value_sum();
    check_backward();
    check_cli();
    return test_finish("test_overflow");
}
