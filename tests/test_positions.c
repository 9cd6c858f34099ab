/* Per-batch positions (q_offsets, k_offsets): the causal diagonal and the
 * window placed anywhere. Checked against a bool mask built by hand from
 * the positions (DESIGN.md's rule: key at position pk is open to a query
 * at position pq when pk <= pq, and pq - left <= pk <= pq + right for a
 * window), against bottom-right alignment (which is q_offsets = Lk - Lq),
 * forward and backward, on the fast path and the reference; and the
 * errors of positions out of range. */
#include "test.h"
#include "util.h"

#include <string.h>

typedef struct pcase {
    const char *name;
    test_shape s;
    int causal, window;
    int64_t left, right;
    int64_t q_pos[3], k_pos[3];
} pcase;

/* The bool mask (B, 1, Lq, Lk) the positions of c mean. */
static unsigned char *mask_of(const pcase *c)
{
    const test_shape *s = &c->s;
    unsigned char *m = test_malloc((size_t)(s->B * s->Lq * s->Lk));
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t i = 0; i < s->Lq; i++)
            for (int64_t j = 0; j < s->Lk; j++) {
                const int64_t pq = c->q_pos[b] + i, pk = c->k_pos[b] + j;
                int open = 1;
                if (c->causal && pk > pq) open = 0;
                if (c->window && c->left >= 0 && pk < pq - c->left) open = 0;
                if (c->window && c->right >= 0 && pk > pq + c->right) open = 0;
                m[(b * s->Lq + i) * s->Lk + j] = (unsigned char)open;
            }
    return m;
}

typedef struct outs {
    float *o, *l, *dq, *dk, *dv;
} outs;

static void run(const pcase *c, const float *q, const float *k, const float *v, const float *dout,
                qkv_context *ctx, const qkv_attention_options *opt, outs *r)
{
    const test_shape *s = &c->s;
    r->o = test_malloc((size_t)n_o(s) * sizeof(float));
    r->l = test_malloc((size_t)n_l(s) * sizeof(float));
    r->dq = test_malloc((size_t)n_q(s) * sizeof(float));
    r->dk = test_malloc((size_t)n_k(s) * sizeof(float));
    r->dv = test_malloc((size_t)n_v(s) * sizeof(float));
    qkv_tensor tq = qkv_tensor_contiguous((float *)q, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    qkv_tensor tk = qkv_tensor_contiguous((float *)k, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tv = qkv_tensor_contiguous((float *)v, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    qkv_tensor to = qkv_tensor_contiguous(r->o, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor tl = qkv_tensor_contiguous(r->l, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
    qkv_tensor td = qkv_tensor_contiguous((float *)dout, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor tdq = qkv_tensor_contiguous(r->dq, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    qkv_tensor tdk = qkv_tensor_contiguous(r->dk, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor tdv = qkv_tensor_contiguous(r->dv, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    CHECK(qkv_attention_forward(ctx, &to, NULL, &tl, &tq, &tk, &tv, opt) == QKV_OK);
    CHECK(qkv_attention_backward(ctx, &tdq, &tdk, &tdv, NULL, &td, &tq, &tk, &tv, &to, &tl, opt) ==
          QKV_OK);
}

static void outs_free(outs *r) { free(r->o), free(r->l), free(r->dq), free(r->dk), free(r->dv); }

/* got and want agree to tol (relative L2) in every output; lse compared
 * where finite (rows the positions leave empty are -inf in both). */
static void compare(const char *what, const pcase *c, const outs *got, const outs *want,
                    double tol)
{
    const test_shape *s = &c->s;
    const double e[5] = {test_rel_l2(got->o, want->o, n_o(s)), test_rel_l2(got->l, want->l, n_l(s)),
                         test_rel_l2(got->dq, want->dq, n_q(s)),
                         test_rel_l2(got->dk, want->dk, n_k(s)),
                         test_rel_l2(got->dv, want->dv, n_v(s))};
    int ok = 1;
    for (int x = 0; x < 5; x++) ok &= e[x] <= tol;
    if (!ok)
        fprintf(stderr, "  %s, %s: O %.3g lse %.3g dQ %.3g dK %.3g dV %.3g (tol %g)\n", c->name,
                what, e[0], e[1], e[2], e[3], e[4], tol);
    CHECK(ok);
}

static void check_case(const pcase *c, uint64_t seed)
{
    const test_shape *s = &c->s;
    test_rng r = test_rng_seed(seed);
    float *q = test_rand_f32(&r, n_q(s), -1, 1), *k = test_rand_f32(&r, n_k(s), -1, 1),
          *v = test_rand_f32(&r, n_v(s), -1, 1), *dout = test_rand_f32(&r, n_o(s), -1, 1);
    unsigned char *mask = mask_of(c);
    for (int impl = 0; impl < 2; impl++) {
        qkv_context *ctx = test_context((qkv_impl)impl, QKV_ISA_AUTO, 0);
        qkv_attention_options po = {0};
        po.causal = c->causal;
        po.use_window = c->window;
        po.window_left = c->left;
        po.window_right = c->right;
        po.q_offsets = c->q_pos;
        po.k_offsets = c->k_pos;
        qkv_attention_options mo = {0};
        mo.mask = qkv_tensor_contiguous(mask, QKV_DTYPE_BOOL, s->B, 1, s->Lq, s->Lk);
        outs a, b;
        run(c, q, k, v, dout, ctx, &po, &a);
        run(c, q, k, v, dout, ctx, &mo, &b);
        qkv_context_free(ctx);
        compare(impl ? "positions vs mask, reference" : "positions vs mask, fast", c, &a, &b,
                impl ? 1e-12 : 1e-6);
        outs_free(&a);
        outs_free(&b);
    }
    printf("  %s: positions agree with their mask\n", c->name);
    free(q), free(k), free(v), free(dout), free(mask);
}

/* q_offsets = Lk - Lq with top-left alignment is bottom-right alignment:
 * the same diagonal, so the same bits. */
static void check_bottom_right(void)
{
    const pcase c = {.name = "bottom-right", .s = {3, 2, 1, 6, 20, 8, 8}, .causal = 1};
    const test_shape *s = &c.s;
    test_rng r = test_rng_seed(5);
    float *q = test_rand_f32(&r, n_q(s), -1, 1), *k = test_rand_f32(&r, n_k(s), -1, 1),
          *v = test_rand_f32(&r, n_v(s), -1, 1), *dout = test_rand_f32(&r, n_o(s), -1, 1);
    const int64_t shift[3] = {14, 14, 14};
    for (int impl = 0; impl < 2; impl++) {
        qkv_context *ctx = test_context((qkv_impl)impl, QKV_ISA_AUTO, 0);
        qkv_attention_options a = {0}, b = {0};
        a.causal = b.causal = 1;
        a.q_offsets = shift;
        b.align = QKV_ALIGN_BOTTOM_RIGHT;
        outs x, y;
        run(&c, q, k, v, dout, ctx, &a, &x);
        run(&c, q, k, v, dout, ctx, &b, &y);
        qkv_context_free(ctx);
        CHECK(memcmp(x.o, y.o, (size_t)n_o(s) * sizeof(float)) == 0);
        CHECK(memcmp(x.dq, y.dq, (size_t)n_q(s) * sizeof(float)) == 0);
        CHECK(memcmp(x.dk, y.dk, (size_t)n_k(s) * sizeof(float)) == 0);
        outs_free(&x);
        outs_free(&y);
    }
    free(q), free(k), free(v), free(dout);
}

static void check_errors(void)
{
    float x[16] = {0};
    qkv_tensor q = qkv_tensor_contiguous(x, QKV_DTYPE_F32, 2, 1, 1, 2);
    qkv_tensor o = qkv_tensor_contiguous(x + 8, QKV_DTYPE_F32, 2, 1, 1, 2);
    const int64_t neg[2] = {0, -1}, big[2] = {(INT64_C(1) << 60) + 1, 0},
                  edge[2] = {INT64_C(1) << 60, 0};
    qkv_attention_options opt = {0};
    opt.causal = 1;
    opt.q_offsets = neg;
    CHECK(qkv_attention_forward(NULL, &o, NULL, NULL, &q, &q, &q, &opt) ==
          QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "q_offsets[1]: -1"));
    opt.q_offsets = NULL;
    opt.k_offsets = big;
    CHECK(qkv_attention_forward(NULL, &o, NULL, NULL, &q, &q, &q, &opt) ==
          QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "k_offsets[0]:"));
    /* The largest positions are taken, whatever their difference. */
    opt.k_offsets = edge;
    CHECK(qkv_attention_forward(NULL, &o, NULL, NULL, &q, &q, &q, &opt) == QKV_OK);
    opt.k_offsets = NULL;
    opt.q_offsets = edge;
    opt.use_window = 1;
    opt.window_left = INT64_MAX;
    opt.window_right = INT64_MAX;
    CHECK(qkv_attention_forward(NULL, &o, NULL, NULL, &q, &q, &q, &opt) == QKV_OK);
    /* Misaligned. */
    unsigned char raw[32];
    memset(raw, 0, sizeof raw);
    opt.q_offsets = (const int64_t *)(void *)(raw + 1);
    CHECK(qkv_attention_forward(NULL, &o, NULL, NULL, &q, &q, &q, &opt) ==
          QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "q_offsets"));
    /* An output over the positions. */
    int64_t pos[4] = {0, 0, 0, 0};
    qkv_tensor over = qkv_tensor_contiguous(pos, QKV_DTYPE_F32, 2, 1, 1, 2);
    opt.q_offsets = pos;
    opt.use_window = 0;
    CHECK(qkv_attention_forward(NULL, &over, NULL, NULL, &q, &q, &q, &opt) ==
          QKV_ERR_INVALID_ARGUMENT);
    CHECK(strstr(qkv_error_detail(), "q_offsets") != NULL);
}

int main(void)
{
    static const pcase cases[] = {
        {.name = "causal, queries ahead", .s = {3, 4, 2, 5, 23, 16, 8}, .causal = 1,
         .q_pos = {18, 0, 7}, .k_pos = {0, 0, 0}},
        {.name = "causal, keys placed", .s = {2, 2, 2, 9, 30, 8, 16}, .causal = 1,
         .q_pos = {40, 3}, .k_pos = {20, 10}},
        {.name = "window both sides", .s = {2, 3, 1, 8, 19, 8, 8}, .window = 1, .left = 3,
         .right = 2, .q_pos = {5, 100}, .k_pos = {0, 95}},
        {.name = "causal window", .s = {3, 2, 2, 7, 17, 8, 8}, .causal = 1, .window = 1,
         .left = 4, .right = -1, .q_pos = {10, 0, 3}, .k_pos = {0, 0, 6}},
        {.name = "long keys, one query", .s = {2, 2, 2, 1, 5000, 16, 16}, .causal = 1,
         .q_pos = {2500, 4999}, .k_pos = {0, 0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], 40 + i);
    check_bottom_right();
    check_errors();
    return test_finish("test_positions");
}
