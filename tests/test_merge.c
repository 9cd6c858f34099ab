/* qkv_attention_merge: partial results over disjoint key sets combine into
 * the result over their union. Checked against one call over all keys
 * (any split, with causal positions placed by k_offsets, fully masked
 * parts included), against hand-computed rows, and for its properties:
 * symmetric, bitwise reproducible in a fixed order, NaN kept to its row,
 * masked parts ignored whatever their O holds; and its argument errors. */
#include "test.h"
#include "util.h"

#include <string.h>

typedef struct part {
    float *o, *l;
    qkv_tensor to, tl;
} part;

static part part_make(int64_t B, int64_t H, int64_t Lq, int64_t Ev)
{
    part p;
    p.o = test_malloc((size_t)(B * H * Lq * Ev) * sizeof(float));
    p.l = test_malloc((size_t)(B * H * Lq) * sizeof(float));
    p.to = qkv_tensor_contiguous(p.o, QKV_DTYPE_F32, B, H, Lq, Ev);
    p.tl = qkv_tensor_contiguous(p.l, QKV_DTYPE_F32, B, H, Lq, 1);
    return p;
}

static void part_free(part *p)
{
    free(p->o);
    free(p->l);
}

/* Attention of q over keys [j0, j1) of k and v, with the keys' positions
 * starting at j0 and the queries' at q_pos[b]. */
static qkv_status attend(part *out, const test_shape *s, const float *q, const float *k,
                         const float *v, int64_t j0, int64_t j1, int causal,
                         const int64_t *q_pos, qkv_impl impl)
{
    int64_t k_pos[4];
    for (int64_t b = 0; b < s->B; b++) k_pos[b] = j0;
    qkv_tensor tq = qkv_tensor_contiguous((float *)q, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    /* The key range as a strided view of the whole K and V. */
    qkv_tensor tk = {(float *)k + j0 * s->E, QKV_DTYPE_F32, {s->B, s->Hkv, j1 - j0, s->E},
                     {s->Hkv * s->Lk * s->E, s->Lk * s->E, s->E, 1}};
    qkv_tensor tv = {(float *)v + j0 * s->Ev, QKV_DTYPE_F32, {s->B, s->Hkv, j1 - j0, s->Ev},
                     {s->Hkv * s->Lk * s->Ev, s->Lk * s->Ev, s->Ev, 1}};
    qkv_attention_options o = {0};
    o.causal = causal;
    o.q_offsets = q_pos;
    o.k_offsets = k_pos;
    qkv_context *ctx = test_context(impl, QKV_ISA_AUTO, 0);
    const qkv_status st = qkv_attention_forward(ctx, &out->to, NULL, &out->tl, &tq, &tk, &tv, &o);
    qkv_context_free(ctx);
    return st;
}

/* Every split point of the keys, two parts merged, against one call. */
static void check_splits(int causal, qkv_impl impl)
{
    const test_shape s = {2, 4, 2, 7, 37, 16, 8};
    test_rng r = test_rng_seed(causal * 10 + impl + 1);
    float *q = test_rand_f32(&r, n_q(&s), -1, 1);
    float *k = test_rand_f32(&r, n_k(&s), -1, 1);
    float *v = test_rand_f32(&r, n_v(&s), -1, 1);
    /* Queries are the last Lq positions of batch 0's sequence and start
     * at 3 in batch 1's: causal leaves the later parts of some rows
     * empty. */
    const int64_t q_pos[2] = {s.Lk - s.Lq, 3};
    part full = part_make(s.B, s.H, s.Lq, s.Ev), a = part_make(s.B, s.H, s.Lq, s.Ev),
         b = part_make(s.B, s.H, s.Lq, s.Ev), m = part_make(s.B, s.H, s.Lq, s.Ev);
    CHECK(attend(&full, &s, q, k, v, 0, s.Lk, causal, q_pos, impl) == QKV_OK);
    double worst = 0;
    int empty_rows = 0;
    for (int64_t cut = 0; cut <= s.Lk; cut++) {
        CHECK(attend(&a, &s, q, k, v, 0, cut, causal, q_pos, impl) == QKV_OK);
        CHECK(attend(&b, &s, q, k, v, cut, s.Lk, causal, q_pos, impl) == QKV_OK);
        for (int64_t x = 0; x < n_l(&s); x++) empty_rows += b.l[x] == -INFINITY;
        CHECK(qkv_attention_merge(&m.to, &m.tl, &a.to, &a.tl, &b.to, &b.tl) == QKV_OK);
        const double eo = test_rel_l2(m.o, full.o, n_o(&s));
        const double el = test_rel_l2(m.l, full.l, n_l(&s));
        if (eo > worst) worst = eo;
        if (!(eo <= 1e-6 && el <= 1e-6))
            fprintf(stderr, "  split at %lld (causal %d, impl %d): O %.3g, lse %.3g\n",
                    (long long)cut, causal, (int)impl, eo, el);
        CHECK(eo <= 1e-6 && el <= 1e-6);
    }
    /* The causal splits must have exercised parts whose rows see nothing. */
    if (causal) CHECK(empty_rows > 0);
    printf("  %s, %s: %lld splits, worst relative L2 of O %.3g\n",
           causal ? "causal" : "full", impl == QKV_IMPL_REFERENCE ? "reference" : "fast",
           (long long)s.Lk + 1, worst);
    part_free(&full), part_free(&a), part_free(&b), part_free(&m);
    free(q), free(k), free(v);
}

/* Five parts merged one by one into an accumulator (o = o1 in place):
 * the same bits twice, and the one call's result to rounding; the
 * symmetric merge gives the same bits in either order. */
static void check_accumulate(void)
{
    const test_shape s = {1, 3, 3, 5, 60, 8, 12};
    test_rng r = test_rng_seed(77);
    float *q = test_rand_f32(&r, n_q(&s), -2, 2);
    float *k = test_rand_f32(&r, n_k(&s), -2, 2);
    float *v = test_rand_f32(&r, n_v(&s), -2, 2);
    const int64_t cuts[6] = {0, 7, 8, 30, 44, 60}, q_pos[1] = {55};
    part full = part_make(1, 3, 5, 12), acc[2] = {part_make(1, 3, 5, 12), part_make(1, 3, 5, 12)},
         p = part_make(1, 3, 5, 12);
    CHECK(attend(&full, &s, q, k, v, 0, s.Lk, 1, q_pos, QKV_IMPL_AUTO) == QKV_OK);
    for (int t = 0; t < 2; t++) {
        CHECK(attend(&acc[t], &s, q, k, v, cuts[0], cuts[1], 1, q_pos, QKV_IMPL_AUTO) == QKV_OK);
        for (int c = 1; c < 5; c++) {
            CHECK(attend(&p, &s, q, k, v, cuts[c], cuts[c + 1], 1, q_pos, QKV_IMPL_AUTO) ==
                  QKV_OK);
            CHECK(qkv_attention_merge(&acc[t].to, &acc[t].tl, &acc[t].to, &acc[t].tl, &p.to,
                                      &p.tl) == QKV_OK);
        }
    }
    CHECK(memcmp(acc[0].o, acc[1].o, (size_t)n_o(&s) * sizeof(float)) == 0);
    CHECK(memcmp(acc[0].l, acc[1].l, (size_t)n_l(&s) * sizeof(float)) == 0);
    CHECK(test_rel_l2(acc[0].o, full.o, n_o(&s)) <= 1e-6);
    CHECK(test_rel_l2(acc[0].l, full.l, n_l(&s)) <= 1e-6);

    /* merge(a, b) and merge(b, a): the same bits. */
    part x = part_make(1, 3, 5, 12), y = part_make(1, 3, 5, 12);
    CHECK(attend(&p, &s, q, k, v, 0, 31, 1, q_pos, QKV_IMPL_AUTO) == QKV_OK);
    CHECK(attend(&full, &s, q, k, v, 31, 60, 1, q_pos, QKV_IMPL_AUTO) == QKV_OK);
    CHECK(qkv_attention_merge(&x.to, &x.tl, &p.to, &p.tl, &full.to, &full.tl) == QKV_OK);
    CHECK(qkv_attention_merge(&y.to, &y.tl, &full.to, &full.tl, &p.to, &p.tl) == QKV_OK);
    CHECK(memcmp(x.o, y.o, (size_t)n_o(&s) * sizeof(float)) == 0);
    CHECK(memcmp(x.l, y.l, (size_t)n_l(&s) * sizeof(float)) == 0);
    part_free(&full), part_free(&acc[0]), part_free(&acc[1]), part_free(&p);
    part_free(&x), part_free(&y);
    free(q), free(k), free(v);
}

/* Rows by hand. Row 0: lse 0 and log 3 weigh 1/4 and 3/4: o = (2.5, 3.5),
 * lse = log 4. Row 1: the first part masked (-inf) with NaN in its O: the
 * second part as it is. Row 2: both masked: 0 and -inf. Row 3: NaN in the
 * second lse: NaN there only. Row 4: +inf (scores past float) takes it. */
static void check_by_hand(void)
{
    float o1[10] = {1, 2, NAN, NAN, 5, 6, 1, 1, 1, 1};
    float o2[10] = {3, 4, 7, 8, NAN, NAN, 2, 2, 2, 2};
    float l1[5] = {0, -INFINITY, -INFINITY, 1, INFINITY};
    float l2[5] = {(float)log(3.0), 2, -INFINITY, NAN, 0};
    float o[10], l[5];
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, 1, 1, 5, 2);
    qkv_tensor tl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, 1, 1, 5, 1);
    qkv_tensor t1 = qkv_tensor_contiguous(o1, QKV_DTYPE_F32, 1, 1, 5, 2);
    qkv_tensor u1 = qkv_tensor_contiguous(l1, QKV_DTYPE_F32, 1, 1, 5, 1);
    qkv_tensor t2 = qkv_tensor_contiguous(o2, QKV_DTYPE_F32, 1, 1, 5, 2);
    qkv_tensor u2 = qkv_tensor_contiguous(l2, QKV_DTYPE_F32, 1, 1, 5, 1);
    CHECK(qkv_attention_merge(&to, &tl, &t1, &u1, &t2, &u2) == QKV_OK);
    CHECK_NEAR(o[0], 2.5, 1e-6);
    CHECK_NEAR(o[1], 3.5, 1e-6);
    CHECK_NEAR(l[0], log(4.0), 1e-6);
    CHECK(o[2] == 7 && o[3] == 8 && l[1] == 2);
    CHECK(o[4] == 0 && o[5] == 0 && l[2] == -INFINITY);
    CHECK(isnan(o[6]) && isnan(o[7]) && isnan(l[3]));
    CHECK(o[8] == 1 && o[9] == 1 && l[4] == INFINITY);

    /* Strided views: O's rows two floats apart, read from the middle of
     * wider buffers. */
    float wide[20], wl[10];
    qkv_tensor so = {wide, QKV_DTYPE_F32, {1, 1, 5, 2}, {0, 0, 4, 2}};
    qkv_tensor sl = {wl, QKV_DTYPE_F32, {1, 1, 5, 1}, {0, 0, 2, 1}};
    CHECK(qkv_attention_merge(&so, &sl, &t1, &u1, &t2, &u2) == QKV_OK);
    CHECK(wide[0] == o[0] && wide[2] == o[1] && wide[8] == o[4] && wl[0] == l[0] && wl[8] == l[4]);
}

static void check_errors(void)
{
    float buf[64] = {0};
    qkv_tensor o = qkv_tensor_contiguous(buf, QKV_DTYPE_F32, 1, 2, 3, 2);
    qkv_tensor l = qkv_tensor_contiguous(buf + 12, QKV_DTYPE_F32, 1, 2, 3, 1);
    qkv_tensor o1 = qkv_tensor_contiguous(buf + 18, QKV_DTYPE_F32, 1, 2, 3, 2);
    qkv_tensor l1 = qkv_tensor_contiguous(buf + 30, QKV_DTYPE_F32, 1, 2, 3, 1);
    qkv_tensor o2 = qkv_tensor_contiguous(buf + 36, QKV_DTYPE_F32, 1, 2, 3, 2);
    qkv_tensor l2 = qkv_tensor_contiguous(buf + 48, QKV_DTYPE_F32, 1, 2, 3, 1);
    CHECK(qkv_attention_merge(&o, &l, &o1, &l1, &o2, &l2) == QKV_OK);
    CHECK(qkv_attention_merge(NULL, &l, &o1, &l1, &o2, &l2) == QKV_ERR_NULL_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "O:"));
    CHECK(qkv_attention_merge(&o, &l, &o1, &l1, NULL, &l2) == QKV_ERR_NULL_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "o2:"));
    qkv_tensor bad = o2;
    bad.shape[3] = 1;
    CHECK(qkv_attention_merge(&o, &l, &o1, &l1, &bad, &l2) == QKV_ERR_SHAPE);
    CHECK(test_starts_with(qkv_error_detail(), "o2:"));
    bad = l1;
    bad.shape[2] = 2;
    CHECK(qkv_attention_merge(&o, &l, &o1, &l1, &o2, &bad) == QKV_ERR_SHAPE);
    CHECK(test_starts_with(qkv_error_detail(), "lse2:"));
    bad = o;
    bad.dtype = QKV_DTYPE_F64;
    CHECK(qkv_attention_merge(&bad, &l, &o1, &l1, &o2, &l2) == QKV_ERR_DTYPE);
    /* O over o2: refused; O exactly o1 (an accumulator): taken; O one
     * float past o1: refused. */
    CHECK(qkv_attention_merge(&o2, &l, &o1, &l1, &o2, &l2) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(strstr(qkv_error_detail(), "overlap") != NULL);
    CHECK(qkv_attention_merge(&o1, &l1, &o1, &l1, &o2, &l2) == QKV_OK);
    bad = o1;
    bad.data = buf + 19;
    CHECK(qkv_attention_merge(&bad, &l, &o1, &l1, &o2, &l2) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(qkv_attention_merge(&o, &o, &o1, &l1, &o2, &l2) != QKV_OK);
    /* Nothing to merge: any dim 0. */
    qkv_tensor e = qkv_tensor_contiguous(NULL, QKV_DTYPE_F32, 1, 0, 3, 2);
    qkv_tensor el = qkv_tensor_contiguous(NULL, QKV_DTYPE_F32, 1, 0, 3, 1);
    CHECK(qkv_attention_merge(&e, &el, &e, &el, &e, &el) == QKV_OK);
}

int main(void)
{
    check_by_hand();
    check_splits(0, QKV_IMPL_AUTO);
    check_splits(1, QKV_IMPL_AUTO);
    check_splits(1, QKV_IMPL_REFERENCE);
    check_accumulate();
    check_errors();
    return test_finish("test_merge");
}
