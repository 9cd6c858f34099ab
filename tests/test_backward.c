/* qkv_attention_backward against two oracles: PyTorch's autograd (the grad_*
 * oracle cases) and central finite differences of a forward written here
 * in double, for every option (both causal alignments, windows, padding
 * with fully masked rows, bool and float masks with the mask's own
 * gradient, softcap, scale, GQA, Ev != E); bitwise determinism over thread
 * counts; and the argument checks. */
#include "test.h"
#include "util.h"

#include "qkv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ PyTorch */


static void check_oracle(const char *cas, int causal, int has_mask)
{
    qkv_array q, k, v, dout, want_dq, want_dk, want_dv, mask = {0};
    if (!test_load_oracle(cas, "q", &q) || !test_load_oracle(cas, "k", &k) ||
        !test_load_oracle(cas, "v", &v) || !test_load_oracle(cas, "dout", &dout) ||
        !test_load_oracle(cas, "dq", &want_dq) || !test_load_oracle(cas, "dk", &want_dk) ||
        !test_load_oracle(cas, "dv", &want_dv) || (has_mask && !test_load_oracle(cas, "mask", &mask))) {
        CHECK(!"oracle files readable");
        return;
    }
    qkv_tensor tq = test_as_tensor(&q), tk = test_as_tensor(&k), tv = test_as_tensor(&v), tdo = test_as_tensor(&dout);
    const int64_t B = tq.shape[0], H = tq.shape[1], Lq = tq.shape[2], E = tq.shape[3];
    const int64_t Hkv = tk.shape[1], Lk = tk.shape[2], Ev = tv.shape[3];
    float *o = test_malloc((size_t)(B * H * Lq * Ev) * 4), *l = test_malloc((size_t)(B * H * Lq) * 4);
    float *dq = test_malloc((size_t)(B * H * Lq * E) * 4), *dk = test_malloc((size_t)(B * Hkv * Lk * E) * 4);
    float *dv = test_malloc((size_t)(B * Hkv * Lk * Ev) * 4);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, B, H, Lq, Ev);
    qkv_tensor tl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, B, H, Lq, 1);
    qkv_tensor tdq = qkv_tensor_contiguous(dq, QKV_DTYPE_F32, B, H, Lq, E);
    qkv_tensor tdk = qkv_tensor_contiguous(dk, QKV_DTYPE_F32, B, Hkv, Lk, E);
    qkv_tensor tdv = qkv_tensor_contiguous(dv, QKV_DTYPE_F32, B, Hkv, Lk, Ev);
    qkv_attention_options opt = {0};
    opt.causal = causal;
    if (has_mask) opt.mask = test_as_tensor(&mask);
    CHECK(qkv_attention_forward(NULL, &to, NULL, &tl, &tq, &tk, &tv, &opt) == QKV_OK);
    CHECK(qkv_attention_backward(NULL, &tdq, &tdk, &tdv, NULL, &tdo, &tq, &tk, &tv, &to, &tl,
                                 &opt) == QKV_OK);
    CHECK_TENSOR(dq, want_dq.data, B * H * Lq * E, 1e-4, "%s vs PyTorch autograd: dQ", cas);
    CHECK_TENSOR(dk, want_dk.data, B * Hkv * Lk * E, 1e-4, "%s vs PyTorch autograd: dK", cas);
    CHECK_TENSOR(dv, want_dv.data, B * Hkv * Lk * Ev, 1e-4, "%s vs PyTorch autograd: dV", cas);
    free(o);
    free(l);
    free(dq);
    free(dk);
    free(dv);
    qkv_array *all[] = {&q, &k, &v, &dout, &want_dq, &want_dk, &want_dv, &mask};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qkv_array_free(all[i]);
}

/* ------------------------------------------------------------ finite differences */

typedef struct prob {
    int64_t B, H, Hkv, Lq, Lk, E, Ev;
    double *q, *k, *v, *dout, *fmask; /* fmask (Lq, Lk), broadcast over B and H */
    unsigned char *bmask;             /* (Lq, Lk) */
    int64_t *lens;
    qkv_attention_options opt; /* the options, without the masks' data */
} prob;

/* The loss sum(O * dO) by DESIGN.md §1 in double, from scratch. */
static double loss(const prob *p)
{
    const double scale = p->opt.scale != 0 ? p->opt.scale : 1.0 / sqrt((double)p->E);
    const int64_t off = p->opt.align == QKV_ALIGN_BOTTOM_RIGHT ? p->Lk - p->Lq : 0;
    double total = 0;
    double *s = malloc((size_t)p->Lk * sizeof *s);
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t h = 0; h < p->H; h++) {
            const int64_t hk = h / (p->H / p->Hkv);
            for (int64_t i = 0; i < p->Lq; i++) {
                const int64_t d = i + off;
                double m = -INFINITY;
                for (int64_t j = 0; j < p->Lk; j++) {
                    int ok = !(p->lens && j >= p->lens[b]) && !(p->opt.causal && j > d) &&
                             !(p->bmask && !p->bmask[i * p->Lk + j]);
                    if (p->opt.use_window) {
                        if (p->opt.window_left >= 0 && j < d - p->opt.window_left) ok = 0;
                        if (p->opt.window_right >= 0 && j > d + p->opt.window_right) ok = 0;
                    }
                    if (!ok) {
                        s[j] = -INFINITY;
                        continue;
                    }
                    double dot = 0;
                    for (int64_t e = 0; e < p->E; e++)
                        dot += p->q[((b * p->H + h) * p->Lq + i) * p->E + e] *
                               p->k[((b * p->Hkv + hk) * p->Lk + j) * p->E + e];
                    double x = scale * dot;
                    if (p->opt.softcap > 0) x = p->opt.softcap * tanh(x / p->opt.softcap);
                    if (p->fmask) x += p->fmask[i * p->Lk + j];
                    s[j] = x;
                    if (x > m) m = x;
                }
                if (m == -INFINITY) continue; /* O = 0 */
                double sum = 0;
                for (int64_t j = 0; j < p->Lk; j++) sum += s[j] == -INFINITY ? 0 : exp(s[j] - m);
                for (int64_t e = 0; e < p->Ev; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < p->Lk; j++)
                        if (s[j] != -INFINITY)
                            o += exp(s[j] - m) / sum *
                                 p->v[((b * p->Hkv + hk) * p->Lk + j) * p->Ev + e];
                    total += o * p->dout[((b * p->H + h) * p->Lq + i) * p->Ev + e];
                }
            }
        }
    free(s);
    return total;
}

/* dL/dx by central differences for every element of x[0..n). */
static void numeric_grad(prob *p, double *x, int64_t n, double *g)
{
    const double hstep = 1e-5;
    for (int64_t t = 0; t < n; t++) {
        const double keep = x[t];
        x[t] = keep + hstep;
        const double up = loss(p);
        x[t] = keep - hstep;
        const double down = loss(p);
        x[t] = keep;
        g[t] = (up - down) / (2 * hstep);
    }
}

static float *to_f32(const double *x, int64_t n)
{
    float *f = test_malloc((size_t)n * sizeof *f);
    for (int64_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

static double *rand_doubles(test_rng *r, int64_t n, double lo, double hi)
{
    double *x = test_malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = (double)(float)(lo + (hi - lo) * test_rand(r));
    return x;
}

/* The library's gradients against the numeric ones (inputs are exactly
 * float, so both see the same numbers), and bitwise equal for 1 and 3
 * threads. */
static void check_fd(const char *name, prob *p)
{
    const int64_t nq = p->B * p->H * p->Lq * p->E, nk = p->B * p->Hkv * p->Lk * p->E,
                  nv = p->B * p->Hkv * p->Lk * p->Ev, no = p->B * p->H * p->Lq * p->Ev;
    float *q = to_f32(p->q, nq), *k = to_f32(p->k, nk), *v = to_f32(p->v, nv),
          *dout = to_f32(p->dout, no);
    float *fm = p->fmask ? to_f32(p->fmask, p->Lq * p->Lk) : NULL;
    float *o = test_malloc((size_t)no * 4), *l = test_malloc((size_t)(p->B * p->H * p->Lq) * 4);
    float *dq = test_malloc((size_t)nq * 4), *dk = test_malloc((size_t)nk * 4),
          *dv = test_malloc((size_t)nv * 4), *dm = test_malloc((size_t)(p->Lq * p->Lk) * 4);
    qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->E);
    qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, p->B, p->Hkv, p->Lk, p->E);
    qkv_tensor tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, p->B, p->Hkv, p->Lk, p->Ev);
    qkv_tensor tdo = qkv_tensor_contiguous(dout, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->Ev);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->Ev);
    qkv_tensor tl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, p->B, p->H, p->Lq, 1);
    qkv_tensor tdq = qkv_tensor_contiguous(dq, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->E);
    qkv_tensor tdk = qkv_tensor_contiguous(dk, QKV_DTYPE_F32, p->B, p->Hkv, p->Lk, p->E);
    qkv_tensor tdv = qkv_tensor_contiguous(dv, QKV_DTYPE_F32, p->B, p->Hkv, p->Lk, p->Ev);
    qkv_tensor tdm = qkv_tensor_contiguous(dm, QKV_DTYPE_F32, 1, 1, p->Lq, p->Lk);
    qkv_attention_options opt = p->opt;
    opt.kv_lens = p->lens;
    if (fm) opt.mask = qkv_tensor_contiguous(fm, QKV_DTYPE_F32, 1, 1, p->Lq, p->Lk);
    if (p->bmask) opt.mask = qkv_tensor_contiguous(p->bmask, QKV_DTYPE_BOOL, 1, 1, p->Lq, p->Lk);
    qkv_context *one = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 1);
    CHECK(qkv_attention_forward(one, &to, NULL, &tl, &tq, &tk, &tv, &opt) == QKV_OK);
    qkv_status st = qkv_attention_backward(one, &tdq, &tdk, &tdv, fm ? &tdm : NULL, &tdo, &tq, &tk,
                                           &tv, &to, &tl, &opt);
    qkv_context_free(one);
    CHECK(st == QKV_OK);
    if (st != QKV_OK) fprintf(stderr, "  %s: %s\n", name, qkv_error_detail());

    double *g = test_malloc((size_t)(nq > nk ? (nq > nv ? nq : nv) : (nk > nv ? nk : nv)) * 8 +
                            (size_t)(p->Lq * p->Lk) * 8);
    struct {
        const char *what;
        double *x;
        int64_t n;
        const float *got;
    } parts[] = {{"dQ", p->q, nq, dq}, {"dK", p->k, nk, dk}, {"dV", p->v, nv, dv},
                 {"dmask", p->fmask, p->Lq * p->Lk, dm}};
    for (size_t t = 0; t < sizeof parts / sizeof parts[0]; t++) {
        if (!parts[t].x) continue;
        numeric_grad(p, parts[t].x, parts[t].n, g);
        CHECK_TENSOR_F64(parts[t].got, g, parts[t].n, 1e-4, "%s: %s against finite differences",
                         name, parts[t].what);
    }
    /* Both implementations, any thread count: the same bits for one
     * implementation (without dmask, which only the reference gives), and
     * the fast one within 1e-5 of the reference. */
    float *dq3 = test_malloc((size_t)nq * 4), *dk3 = test_malloc((size_t)nk * 4),
          *dv3 = test_malloc((size_t)nv * 4);
    qkv_tensor tdq3 = qkv_tensor_contiguous(dq3, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->E);
    qkv_tensor tdk3 = qkv_tensor_contiguous(dk3, QKV_DTYPE_F32, p->B, p->Hkv, p->Lk, p->E);
    qkv_tensor tdv3 = qkv_tensor_contiguous(dv3, QKV_DTYPE_F32, p->B, p->Hkv, p->Lk, p->Ev);
    for (int impl = 0; impl < 2; impl++) {
        qkv_context *ctx = test_context(impl ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO, QKV_ISA_AUTO, 1);
        CHECK(qkv_attention_backward(ctx, &tdq, &tdk, &tdv, NULL, &tdo, &tq, &tk, &tv, &to, &tl,
                                     &opt) == QKV_OK);
        CHECK(qkv_context_set_threads(ctx, 3) == QKV_OK);
        CHECK(qkv_attention_backward(ctx, &tdq3, &tdk3, &tdv3, NULL, &tdo, &tq, &tk, &tv, &to, &tl,
                                     &opt) == QKV_OK);
        qkv_context_free(ctx);
        CHECK(memcmp(dq, dq3, (size_t)nq * 4) == 0 && memcmp(dk, dk3, (size_t)nk * 4) == 0 &&
              memcmp(dv, dv3, (size_t)nv * 4) == 0);
    }
    for (int64_t i = 0; i < nq; i++) CHECK(!isnan(dq[i]));
    free(g);
    free(q);
    free(k);
    free(v);
    free(dout);
    free(fm);
    free(o);
    free(l);
    free(dq);
    free(dk);
    free(dv);
    free(dm);
    free(dq3);
    free(dk3);
    free(dv3);
}

static prob make_prob(uint64_t seed, int64_t B, int64_t H, int64_t Hkv, int64_t Lq, int64_t Lk,
                      int64_t E, int64_t Ev)
{
    test_rng r = test_rng_seed(seed);
    prob p;
    memset(&p, 0, sizeof p);
    p.B = B;
    p.H = H;
    p.Hkv = Hkv;
    p.Lq = Lq;
    p.Lk = Lk;
    p.E = E;
    p.Ev = Ev;
    p.q = rand_doubles(&r, B * H * Lq * E, -1, 1);
    p.k = rand_doubles(&r, B * Hkv * Lk * E, -1, 1);
    p.v = rand_doubles(&r, B * Hkv * Lk * Ev, -1, 1);
    p.dout = rand_doubles(&r, B * H * Lq * Ev, -1, 1);
    return p;
}

static void free_prob(prob *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->dout);
    free(p->fmask);
    free(p->bmask);
    free(p->lens);
}

static void check_all_options(void)
{
    for (int c = 0; c < 9; c++) {
        prob p = make_prob(100 + (uint64_t)c, 2, 4, 2, 5, 7, 6, 3); /* GQA, cross, Ev != E */
        const char *name = "";
        switch (c) {
        case 0: name = "plain"; break;
        case 1: name = "causal top-left"; p.opt.causal = 1; break;
        case 2:
            name = "causal bottom-right";
            p.opt.causal = 1;
            p.opt.align = QKV_ALIGN_BOTTOM_RIGHT;
            break;
        case 3:
            name = "window (1, 2)";
            p.opt.use_window = 1;
            p.opt.window_left = 1;
            p.opt.window_right = 2;
            break;
        case 4: /* batch 1 all padding: its rows are fully masked */
            name = "kv_lens {4, 0}";
            p.lens = test_malloc(2 * sizeof *p.lens);
            p.lens[0] = 4;
            p.lens[1] = 0;
            break;
        case 5: { /* row 2 fully masked */
            name = "bool mask";
            test_rng r = test_rng_seed(7);
            p.bmask = test_malloc((size_t)(p.Lq * p.Lk));
            for (int64_t x = 0; x < p.Lq * p.Lk; x++)
                p.bmask[x] = x / p.Lk != 2 && test_rand(&r) < 0.7;
            break;
        }
        case 6: {
            name = "float mask and its gradient";
            test_rng r = test_rng_seed(8);
            p.fmask = rand_doubles(&r, p.Lq * p.Lk, -1, 1);
            break;
        }
        case 7: name = "softcap 1.5, scale 0.9"; p.opt.softcap = 1.5; p.opt.scale = 0.9; break;
        case 8: name = "MQA"; break;
        }
        if (c == 8) { /* H = 3 query heads on one kv head */
            free_prob(&p);
            p = make_prob(200, 1, 3, 1, 4, 6, 5, 5);
        }
        check_fd(name, &p);
        free_prob(&p);
    }
}

/* ------------------------------------------------------------ arguments */

static void check_arguments(void)
{
    float q[8] = {1, 2, 3, 4, 5, 6, 7, 8}, o[8], l[2], g[8];
    qkv_tensor t = qkv_tensor_contiguous(q, QKV_DTYPE_F32, 1, 1, 2, 4);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, 1, 1, 2, 4);
    qkv_tensor tl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, 1, 1, 2, 1);
    qkv_tensor tg = qkv_tensor_contiguous(g, QKV_DTYPE_F32, 1, 1, 2, 4);
    CHECK(qkv_attention_forward(NULL, &to, NULL, &tl, &t, &t, &t, NULL) == QKV_OK);
    CHECK(qkv_attention_backward(NULL, &tg, &tg, &tg, NULL, NULL, &t, &t, &t, &to, &tl, NULL) ==
          QKV_ERR_NULL_ARGUMENT);
    CHECK(strncmp(qkv_error_detail(), "dO", 2) == 0);
    qkv_tensor bad = qkv_tensor_contiguous(g, QKV_DTYPE_F32, 1, 1, 2, 3);
    CHECK(qkv_attention_backward(NULL, &bad, &tg, &tg, NULL, &t, &t, &t, &t, &to, &tl, NULL) ==
          QKV_ERR_SHAPE);
    CHECK(strncmp(qkv_error_detail(), "dQ", 2) == 0);
    CHECK(qkv_attention_backward(NULL, &tg, &tg, &tg, &tg, &t, &t, &t, &t, &to, &tl, NULL) ==
          QKV_ERR_INVALID_ARGUMENT);
    CHECK(strncmp(qkv_error_detail(), "dmask", 5) == 0);
    qkv_tensor badl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, 1, 1, 1, 1);
    CHECK(qkv_attention_backward(NULL, &tg, &tg, &tg, NULL, &t, &t, &t, &t, &to, &badl, NULL) ==
          QKV_ERR_SHAPE);
    CHECK(strncmp(qkv_error_detail(), "lse", 3) == 0);
}

int main(void)
{
    check_oracle("grad_small_causal", 1, 0);
    check_oracle("grad_small_gqa_mask", 0, 1);
    check_all_options();
    check_arguments();
    return test_finish("test_backward");
}
