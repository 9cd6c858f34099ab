/* f16 and bf16 attention against the spec. Inputs are drawn in f32 and
 * rounded to the dtype, so the exact answer on them is known: the
 * reference reads the 16-bit views exactly, which the test checks first (its
 * f32 results on them equal, bit for bit, its results on the widened
 * copies). Then every kernel set this machine runs, forced through the CPU
 * backend, is held to the accuracy contract of issue 14 against that
 * answer: relative L2 of O at most 4e-3 for bf16 and 1e-3 for f16 (O
 * stored in the dtype, and in f32), the same for the weights, lse within
 * 1e-5; the results are the same bits for 1 and 3 threads. The sweep
 * covers causal in both alignments, the window, the softcap, float masks
 * in the dtype and in f32, bool masks, padding lengths with a fully masked
 * batch, large logits, GQA, Ev != E, head dims 1, 3, 17 and 80, decode
 * with split keys. The backward is held to the same exactness (the
 * reference) and, on every kernel set, to 2x the forward's bound and the
 * same bits for any thread count. Finally the dtype rules: mixed inputs and outputs outside the
 * table are refused, naming the tensor. */
#include "backend.h"
#include "cpu/dispatch.h"
#include "half.h"
#include "test.h"
#include "util.h"

#include <math.h>
#include <string.h>

typedef struct dcase {
    const char *name;
    test_shape s;
    qkv_attention_options opt;
    int float_mask; /* 1: in the dtype, 2: in f32 */
    int bool_mask;  /* with row 0 of every head fully masked */
    int64_t lens[4];
} dcase;

/* x rounded to dtype and back: the value a 16-bit view holds. */
static float rounded(float x, qkv_dtype dt)
{
    return dt == QKV_DTYPE_F16 ? qkv_f16_to_f32(qkv_f32_to_f16(x))
                               : qkv_bf16_to_f32(qkv_f32_to_bf16(x));
}

/* n values in [lo, hi) rounded to dtype: as 16-bit patterns in *h and
 * widened (exactly) in the returned floats. */
static float *draw(test_rng *r, int64_t n, float lo, float hi, qkv_dtype dt, uint16_t **h)
{
    float *f = test_rand_f32(r, n, lo, hi);
    *h = test_malloc((size_t)(n > 0 ? n : 1) * sizeof **h);
    for (int64_t x = 0; x < n; x++) {
        (*h)[x] = dt == QKV_DTYPE_F16 ? qkv_f32_to_f16(f[x]) : qkv_f32_to_bf16(f[x]);
        f[x] = rounded(f[x], dt);
    }
    return f;
}

static float *widen(const uint16_t *h, int64_t n, qkv_dtype dt)
{
    float *f = test_malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
    for (int64_t x = 0; x < n; x++)
        f[x] = dt == QKV_DTYPE_F16 ? qkv_f16_to_f32(h[x]) : qkv_bf16_to_f32(h[x]);
    return f;
}

typedef struct inputs {
    qkv_dtype dt;
    float *q, *k, *v, *mask, *dout; /* widened */
    uint16_t *qh, *kh, *vh, *maskh, *douth;
    unsigned char *bmask;
} inputs;

static void inputs_make(const dcase *c, qkv_dtype dt, uint64_t seed, inputs *in)
{
    const test_shape *s = &c->s;
    test_rng r = test_rng_seed(seed);
    in->dt = dt;
    in->q = draw(&r, n_q(s), -1, 1, dt, &in->qh);
    in->k = draw(&r, n_k(s), -1, 1, dt, &in->kh);
    in->v = draw(&r, n_v(s), -1, 1, dt, &in->vh);
    in->mask = draw(&r, s->Lq * s->Lk, -2, 2, dt, &in->maskh);
    in->dout = draw(&r, n_o(s), -1, 1, dt, &in->douth);
    in->bmask = test_malloc((size_t)(s->Lq * s->Lk));
    for (int64_t x = 0; x < s->Lq * s->Lk; x++)
        in->bmask[x] = x >= s->Lk && test_rand(&r) < 0.7; /* row 0: nothing allowed */
}

static void inputs_free(inputs *in)
{
    free(in->q), free(in->k), free(in->v), free(in->mask), free(in->dout), free(in->bmask);
    free(in->qh), free(in->kh), free(in->vh), free(in->maskh), free(in->douth);
}

static qkv_attention_options options(const dcase *c, const inputs *in, int wide)
{
    qkv_attention_options o = c->opt;
    const int64_t lq = c->s.Lq, lk = c->s.Lk;
    if (c->float_mask == 1 && !wide)
        o.mask = qkv_tensor_contiguous(in->maskh, in->dt, 1, 1, lq, lk);
    else if (c->float_mask)
        o.mask = qkv_tensor_contiguous(in->mask, QKV_DTYPE_F32, 1, 1, lq, lk);
    if (c->bool_mask) o.mask = qkv_tensor_contiguous(in->bmask, QKV_DTYPE_BOOL, 1, 1, lq, lk);
    if (c->lens[0]) o.kv_lens = c->lens;
    return o;
}

/* A forward's results, widened to f32. */
typedef struct fwd {
    float *o, *w, *l;
} fwd;

static void fwd_free(fwd *f) { free(f->o), free(f->w), free(f->l); }

/* The forward of c on backend be ("cpu", "reference") under ctx: inputs
 * as 16-bit views (or, wide, their widened f32 copies), O and the weights
 * in the dtype (out16) or f32. */
static qkv_status run_fwd(const char *be, qkv_context *ctx, const dcase *c, const inputs *in,
                          int wide, int out16, fwd *r)
{
    const test_shape *s = &c->s;
    const qkv_dtype dt = wide ? QKV_DTYPE_F32 : in->dt;
    const qkv_dtype odt = out16 ? in->dt : QKV_DTYPE_F32;
    qkv_tensor tq = qkv_tensor_contiguous(wide ? (void *)in->q : in->qh, dt, s->B, s->H, s->Lq, s->E);
    qkv_tensor tk =
        qkv_tensor_contiguous(wide ? (void *)in->k : in->kh, dt, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tv =
        qkv_tensor_contiguous(wide ? (void *)in->v : in->vh, dt, s->B, s->Hkv, s->Lk, s->Ev);
    const size_t es = qkv_dtype_size(odt);
    void *o = test_malloc((size_t)(n_o(s) > 0 ? n_o(s) : 1) * es);
    void *w = test_malloc((size_t)(n_p(s) > 0 ? n_p(s) : 1) * es);
    r->l = test_malloc((size_t)(n_l(s) > 0 ? n_l(s) : 1) * sizeof(float));
    qkv_tensor to = qkv_tensor_contiguous(o, odt, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor tw = qkv_tensor_contiguous(w, odt, s->B, s->H, s->Lq, s->Lk);
    qkv_tensor tl = qkv_tensor_contiguous(r->l, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
    const qkv_attention_options opt = options(c, in, wide);
    const qkv_status st = qkv_attention_forward_on(be, ctx, &to, &tw, &tl, &tq, &tk, &tv, &opt);
    if (out16) {
        r->o = widen(o, n_o(s), in->dt);
        r->w = widen(w, n_p(s), in->dt);
        free(o), free(w);
    } else {
        r->o = o;
        r->w = w;
    }
    return st;
}

static int same_bits(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

/* The kernel sets the forward is held to: every isa (the ones this
 * machine lacks skipped, main says so), then PAIRS_SET, the generic set
 * with its bf16 pair kernels (VDPBF16PS emulated), forced through
 * cpu/dispatch.h: the pairs layout of every bf16 case on every machine. */
#define PAIRS_SET (QKV_ISA_AVX512_BF16 + 1)
static int set_runs(int set) { return set == PAIRS_SET || qkv_isa_supported((qkv_isa)set); }
static const char *set_name(int set)
{
    return set == PAIRS_SET ? "generic-pairs" : qkv_isa_name((qkv_isa)set);
}
static qkv_isa set_enter(int set)
{
    if (set != PAIRS_SET) return (qkv_isa)set;
    qkv_cpu_kernels_force(&qkv_kernels_generic_pairs);
    return QKV_ISA_GENERIC;
}

static void check_forward(const dcase *c, qkv_dtype dt)
{
    const test_shape *s = &c->s;
    const char *dn = qkv_dtype_name(dt);
    const double tol = dt == QKV_DTYPE_BF16 ? 4e-3 : 1e-3;
    inputs in;
    inputs_make(c, dt, 1234, &in);
    qkv_context *ref = test_context(QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 2);
    fwd want, wide;
    CHECK(run_fwd("reference", ref, c, &in, 0, 0, &want) == QKV_OK);
    CHECK(run_fwd("reference", ref, c, &in, 1, 0, &wide) == QKV_OK);
    /* The reference reads 16-bit views exactly. */
    CHECK(same_bits(want.o, wide.o, n_o(s)) && same_bits(want.w, wide.w, n_p(s)) &&
          same_bits(want.l, wide.l, n_l(s)));
    /* Its 16-bit O is its f32 O rounded (each rounded once from double,
     * so the two differ by at most the 16-bit rounding of the f32). */
    fwd ref16;
    CHECK(run_fwd("reference", ref, c, &in, 0, 1, &ref16) == QKV_OK);
    for (int64_t x = 0; x < n_o(s); x++)
        if (fabsf(ref16.o[x] - rounded(want.o[x], dt)) >
            (dt == QKV_DTYPE_BF16 ? 0x1p-7f : 0x1p-10f) * fabsf(want.o[x]) + 0x1p-24f) {
            CHECK(!"the reference's 16-bit O is its f32 O rounded");
            break;
        }
    for (int set = QKV_ISA_GENERIC; set <= PAIRS_SET; set++) {
        if (!set_runs(set)) continue;
        const qkv_isa isa = set_enter(set);
        for (int out16 = 0; out16 < 2; out16++) {
            qkv_context *one = test_context(QKV_IMPL_AUTO, isa, 1);
            qkv_context *three = test_context(QKV_IMPL_AUTO, isa, 3);
            fwd got, got3;
            CHECK(run_fwd("cpu", one, c, &in, 0, out16, &got) == QKV_OK);
            CHECK(run_fwd("cpu", three, c, &in, 0, out16, &got3) == QKV_OK);
            const char *od = out16 ? dn : "f32";
            CHECK_TENSOR(got.o, want.o, n_o(s), tol, "%s %s %s: O in %s", c->name, dn,
                         set_name(set), od);
            CHECK_TENSOR(got.w, want.w, n_p(s), tol, "%s %s %s: weights in %s", c->name, dn,
                         set_name(set), od);
            CHECK_TENSOR(got.l, want.l, n_l(s), 1e-5, "%s %s %s: lse", c->name, dn,
                         set_name(set));
            CHECK(same_bits(got.o, got3.o, n_o(s)) && same_bits(got.w, got3.w, n_p(s)) &&
                  same_bits(got.l, got3.l, n_l(s)));
            fwd_free(&got), fwd_free(&got3);
            qkv_context_free(one), qkv_context_free(three);
        }
        qkv_cpu_kernels_force(NULL);
    }
    fwd_free(&want), fwd_free(&wide), fwd_free(&ref16);
    qkv_context_free(ref);
    inputs_free(&in);
}

/* The backward of c on backend be under ctx, from the forward f: inputs
 * as 16-bit views (or, wide, their widened copies), the gradients in gdt,
 * returned widened in g[0..2] (dQ, dK, dV). */
static qkv_status run_bwd(const char *be, qkv_context *ctx, const dcase *c, const inputs *in,
                          const fwd *f, int wide, qkv_dtype gdt, float *g[3])
{
    const test_shape *s = &c->s;
    const qkv_dtype idt = wide ? QKV_DTYPE_F32 : in->dt;
    const int64_t n[3] = {n_q(s), n_k(s), n_v(s)};
    void *buf[3];
    for (int x = 0; x < 3; x++)
        buf[x] = test_malloc((size_t)(n[x] > 0 ? n[x] : 1) * qkv_dtype_size(gdt));
    qkv_tensor tq =
        qkv_tensor_contiguous(wide ? (void *)in->q : in->qh, idt, s->B, s->H, s->Lq, s->E);
    qkv_tensor tk =
        qkv_tensor_contiguous(wide ? (void *)in->k : in->kh, idt, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tv =
        qkv_tensor_contiguous(wide ? (void *)in->v : in->vh, idt, s->B, s->Hkv, s->Lk, s->Ev);
    qkv_tensor tdo =
        qkv_tensor_contiguous(wide ? (void *)in->dout : in->douth, idt, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor to = qkv_tensor_contiguous(f->o, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor tl = qkv_tensor_contiguous(f->l, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
    qkv_tensor tdq = qkv_tensor_contiguous(buf[0], gdt, s->B, s->H, s->Lq, s->E);
    qkv_tensor tdk = qkv_tensor_contiguous(buf[1], gdt, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tdv = qkv_tensor_contiguous(buf[2], gdt, s->B, s->Hkv, s->Lk, s->Ev);
    const qkv_attention_options opt = options(c, in, wide);
    const qkv_status st = qkv_attention_backward_on(be, ctx, &tdq, &tdk, &tdv, NULL, &tdo, &tq,
                                                    &tk, &tv, &to, &tl, &opt);
    for (int x = 0; x < 3; x++) {
        g[x] = gdt == QKV_DTYPE_F32 ? buf[x] : widen(buf[x], n[x], gdt);
        if (gdt != QKV_DTYPE_F32) free(buf[x]);
    }
    return st;
}

/* The backward on 16-bit views: the reference's gradients are the same
 * as on the widened copies, bit for bit, when they are stored in f32; the
 * CPU backend's, on every kernel set here, in the dtype and in f32, are
 * within twice the forward's bound of them and the same bits on 1 and 3
 * threads. dO is in the dtype, O and lse the reference forward's in f32. */
static void check_backward(const dcase *c, qkv_dtype dt)
{
    const test_shape *s = &c->s;
    const double tol = 2 * (dt == QKV_DTYPE_BF16 ? 4e-3 : 1e-3);
    const char *names[3] = {"dQ", "dK", "dV"};
    const int64_t n[3] = {n_q(s), n_k(s), n_v(s)};
    inputs in;
    inputs_make(c, dt, 99, &in);
    qkv_context *ref = test_context(QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 2);
    fwd f;
    CHECK(run_fwd("reference", ref, c, &in, 0, 0, &f) == QKV_OK);
    float *want[3], *ref16[3];
    CHECK(run_bwd("reference", ref, c, &in, &f, 1, QKV_DTYPE_F32, want) == QKV_OK);
    CHECK(run_bwd("reference", ref, c, &in, &f, 0, QKV_DTYPE_F32, ref16) == QKV_OK);
    for (int x = 0; x < 3; x++) CHECK(same_bits(want[x], ref16[x], n[x]));
    for (int set = QKV_ISA_GENERIC; set <= PAIRS_SET; set++) {
        if (!set_runs(set)) continue;
        const qkv_isa isa = set_enter(set);
        for (int g16 = 0; g16 < 2; g16++) {
            qkv_context *one = test_context(QKV_IMPL_AUTO, isa, 1);
            qkv_context *three = test_context(QKV_IMPL_AUTO, isa, 3);
            const qkv_dtype gdt = g16 ? dt : QKV_DTYPE_F32;
            float *got[3], *got3[3];
            CHECK(run_bwd("cpu", one, c, &in, &f, 0, gdt, got) == QKV_OK);
            CHECK(run_bwd("cpu", three, c, &in, &f, 0, gdt, got3) == QKV_OK);
            for (int x = 0; x < 3; x++) {
                CHECK_TENSOR(got[x], want[x], n[x], tol, "%s %s %s: %s in %s", c->name,
                             qkv_dtype_name(dt), set_name(set), names[x],
                             qkv_dtype_name(gdt));
                CHECK(same_bits(got[x], got3[x], n[x]));
                free(got[x]), free(got3[x]);
            }
            qkv_context_free(one), qkv_context_free(three);
        }
        qkv_cpu_kernels_force(NULL);
    }
    for (int x = 0; x < 3; x++) free(want[x]), free(ref16[x]);
    fwd_free(&f);
    qkv_context_free(ref);
    inputs_free(&in);
}

/* The pairs layout's other roads, on the sets that take it (the
 * emulation, and AVX512-BF16 where the CPU has it): K and V not
 * contiguous along their last dim (K copied, V paired element by element)
 * against the reference on the same views; and an infinite V row behind
 * the causal mask, which the rows that may not see it never read (the
 * careful product), odd key counts and head dims throughout. */
static void check_pairs_roads(void)
{
    enum { B = 1, H = 2, L = 45, E = 17 };
    test_rng r = test_rng_seed(5);
    uint16_t *qh, *kh, *vh;
    float *q = draw(&r, B * H * L * E, -1, 1, QKV_DTYPE_BF16, &qh);
    float *k = draw(&r, B * H * L * E, -1, 1, QKV_DTYPE_BF16, &kh);
    float *v = draw(&r, B * H * L * E, -1, 1, QKV_DTYPE_BF16, &vh);
    free(q), free(k), free(v);
    /* K and V stored (B, H, E, L): element (b, h, j, d) at d * L + j. */
    qkv_tensor tq = qkv_tensor_contiguous(qh, QKV_DTYPE_BF16, B, H, L, E);
    qkv_tensor tk = qkv_tensor_contiguous(kh, QKV_DTYPE_BF16, B, H, L, E);
    qkv_tensor tv = qkv_tensor_contiguous(vh, QKV_DTYPE_BF16, B, H, L, E);
    tk.stride[2] = tv.stride[2] = 1;
    tk.stride[3] = tv.stride[3] = L;
    float *want = test_malloc(B * H * L * E * sizeof *want), *got = test_malloc(B * H * L * E * sizeof *got);
    qkv_tensor tw = qkv_tensor_contiguous(want, QKV_DTYPE_F32, B, H, L, E);
    qkv_tensor tg = qkv_tensor_contiguous(got, QKV_DTYPE_F32, B, H, L, E);
    qkv_context *ref = test_context(QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 1);
    qkv_attention_options causal = {0};
    causal.causal = 1;
    for (int set = QKV_ISA_AVX512_BF16; set <= PAIRS_SET; set++) {
        if (!set_runs(set)) continue;
        qkv_context *ctx = test_context(QKV_IMPL_AUTO, set_enter(set), 2);
        for (int opt = 0; opt < 2; opt++) {
            const qkv_attention_options *o = opt ? &causal : NULL;
            CHECK(qkv_attention_forward(ref, &tw, NULL, NULL, &tq, &tk, &tv, o) == QKV_OK);
            CHECK(qkv_attention_forward_on("cpu", ctx, &tg, NULL, NULL, &tq, &tk, &tv, o) == QKV_OK);
            CHECK_TENSOR(got, want, B * H * L * E, 4e-3, "%s: strided K and V%s", set_name(set),
                         opt ? ", causal" : "");
        }
        /* The last key's V row infinite: only the last query sees it. */
        for (int64_t d = 0; d < E; d++) vh[d * L + L - 1] = 0x7f80;
        CHECK(qkv_attention_forward(ref, &tw, NULL, NULL, &tq, &tk, &tv, &causal) == QKV_OK);
        CHECK(qkv_attention_forward_on("cpu", ctx, &tg, NULL, NULL, &tq, &tk, &tv, &causal) == QKV_OK);
        int finite = 1;
        for (int64_t h = 0; h < H; h++)
            for (int64_t x = 0; x < (L - 1) * E; x++) finite &= isfinite(got[h * L * E + x]) != 0;
        CHECK(finite);
        CHECK_TENSOR(got, want, (L - 1) * E, 4e-3, "%s: rows before an infinite V row", set_name(set));
        for (int64_t d = 0; d < E; d++) vh[d * L + L - 1] = qkv_f32_to_bf16(0.5f);
        qkv_cpu_kernels_force(NULL);
        qkv_context_free(ctx);
    }
    qkv_context_free(ref);
    free(qh), free(kh), free(vh), free(want), free(got);
}

/* Dtypes outside the table are refused, naming the tensor. */
static void check_rules(void)
{
    uint16_t h[64] = {0};
    float f[64] = {0};
    const qkv_tensor q16 = qkv_tensor_contiguous(h, QKV_DTYPE_BF16, 1, 1, 2, 4);
    const qkv_tensor k16 = qkv_tensor_contiguous(h + 8, QKV_DTYPE_BF16, 1, 1, 2, 4);
    const qkv_tensor v16 = qkv_tensor_contiguous(h + 16, QKV_DTYPE_BF16, 1, 1, 2, 4);
    const qkv_tensor kf = qkv_tensor_contiguous(f, QKV_DTYPE_F32, 1, 1, 2, 4);
    const qkv_tensor vh = qkv_tensor_contiguous(h + 16, QKV_DTYPE_F16, 1, 1, 2, 4);
    qkv_tensor o16 = qkv_tensor_contiguous(h + 24, QKV_DTYPE_BF16, 1, 1, 2, 4);
    qkv_tensor of = qkv_tensor_contiguous(f + 8, QKV_DTYPE_F32, 1, 1, 2, 4);
    qkv_tensor oh = qkv_tensor_contiguous(h + 24, QKV_DTYPE_F16, 1, 1, 2, 4);
    qkv_tensor l16 = qkv_tensor_contiguous(h + 32, QKV_DTYPE_BF16, 1, 1, 2, 1);
    CHECK(qkv_attention_forward(NULL, &o16, NULL, NULL, &q16, &k16, &v16, NULL) == QKV_OK);
    CHECK(qkv_attention_forward(NULL, &of, NULL, NULL, &q16, &k16, &v16, NULL) == QKV_OK);
    CHECK(qkv_attention_forward(NULL, &o16, NULL, NULL, &q16, &kf, &v16, NULL) == QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "K: dtype f32, expected bf16 as Q has"));
    CHECK(qkv_attention_forward(NULL, &o16, NULL, NULL, &q16, &k16, &vh, NULL) == QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "V: dtype f16"));
    CHECK(qkv_attention_forward(NULL, &oh, NULL, NULL, &q16, &k16, &v16, NULL) == QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "O: dtype f16, expected bf16 (the inputs' dtype) or f32"));
    CHECK(qkv_attention_forward(NULL, &o16, NULL, &l16, &q16, &k16, &v16, NULL) == QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "lse: dtype bf16, expected f32"));
    qkv_attention_options opt = {0};
    opt.mask = qkv_tensor_contiguous(h + 40, QKV_DTYPE_F16, 1, 1, 2, 2);
    CHECK(qkv_attention_forward(NULL, &o16, NULL, NULL, &q16, &k16, &v16, &opt) == QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "mask: dtype f16, expected f32 or bf16"));
}

int main(void)
{
    const qkv_attention_options none = {0};
    qkv_attention_options causal = none, causal_br = none, window = none, capped = none,
                          big = none;
    causal.causal = 1;
    causal_br.causal = 1;
    causal_br.align = QKV_ALIGN_BOTTOM_RIGHT;
    window.use_window = 1;
    window.window_left = 9;
    window.window_right = 4;
    capped.softcap = 5;
    big.scale = 12; /* logits of tens: one key takes nearly all the weight */
    const dcase cases[] = {
        {"plain 2x4 heads 70x90 E32", {2, 4, 4, 70, 90, 32, 32}, none, 0, 0, {0}},
        {"GQA 8/2, Ev 24, causal", {1, 8, 2, 65, 65, 40, 24}, causal, 0, 0, {0}},
        {"causal bottom-right 30x80", {1, 2, 2, 30, 80, 16, 16}, causal_br, 0, 0, {0}},
        {"window 9,4", {1, 2, 1, 50, 50, 16, 8}, window, 0, 0, {0}},
        {"softcap 5, float mask in the dtype", {2, 2, 2, 20, 33, 16, 16}, capped, 1, 0, {0}},
        {"float mask in f32", {1, 2, 2, 20, 33, 16, 16}, none, 2, 0, {0}},
        {"bool mask, row 0 closed", {1, 3, 3, 17, 40, 8, 8}, none, 0, 1, {0}},
        {"kv_lens 13 and 0", {2, 2, 2, 9, 30, 8, 8}, none, 0, 0, {13, 0}},
        {"large logits", {1, 2, 2, 40, 40, 16, 16}, big, 0, 0, {0}},
        {"E 1", {1, 2, 2, 20, 20, 1, 1}, none, 0, 0, {0}},
        {"E 3, Ev 5", {1, 2, 1, 20, 20, 3, 5}, causal, 0, 0, {0}},
        {"E 17", {1, 2, 2, 33, 47, 17, 17}, none, 0, 0, {0}},
        {"E 80", {1, 2, 2, 24, 70, 80, 80}, causal, 0, 0, {0}},
        {"decode: 1 query, 2500 keys, GQA 8/2", {1, 8, 2, 1, 2500, 64, 64}, none, 0, 0, {0}},
        {"decode bottom-right, 4 queries", {2, 4, 1, 4, 700, 32, 32}, causal_br, 0, 0, {0}},
    };
    const qkv_dtype dts[2] = {QKV_DTYPE_BF16, QKV_DTYPE_F16};
    for (int isa = QKV_ISA_GENERIC; isa <= QKV_ISA_AVX512_BF16; isa++)
        if (!qkv_isa_supported((qkv_isa)isa))
            fprintf(stderr, "test_dtypes: %s kernels skipped: this build or CPU lacks them\n",
                    qkv_isa_name((qkv_isa)isa));
    for (size_t x = 0; x < sizeof cases / sizeof cases[0]; x++)
        for (int d = 0; d < 2; d++) {
            check_forward(&cases[x], dts[d]);
            check_backward(&cases[x], dts[d]);
        }
    check_pairs_roads();
    check_rules();
    return test_finish("test_dtypes");
}
