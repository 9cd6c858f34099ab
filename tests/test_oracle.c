/* The second oracle: cases whose answers PyTorch 2.11 computed
 * (scaled_dot_product_attention, math backend, float64; tests/data/oracle,
 * copied from shared/oracle). Each runs through both implementations and
 * must land within a relative L2 error of 1e-5 on O, the weights and the
 * log-sum-exp. The options come from each case's meta.json. */
#include "test.h"
#include "util.h"

#include "qkv.h"

#include <math.h>
#include <string.h>

typedef struct oracle_case {
    const char *name;
    int causal;      /* 0 none, 1 top-left, 2 lower-right */
    int has_mask;
    int has_weights; /* weights.npy and lse.npy present */
} oracle_case;

static const oracle_case cases[] = {
    {"bool_mask_broadcast_heads", 0, 1, 1},
    {"causal_lower_right_rect", 2, 0, 0},
    {"causal_top_left_rect", 1, 0, 1},
    {"cross_rank3", 0, 0, 1},
    {"float_mask_2d", 0, 1, 0},
    {"gqa_6_3", 0, 0, 0},
    {"grad_small_causal", 1, 0, 0},
    {"grad_small_gqa_mask", 0, 1, 0},
    {"large_logits_small", 0, 0, 1},
    {"seed_example_like", 0, 0, 1},
};


static void run_case(const oracle_case *c, qkv_impl impl, int threads)
{
    qkv_array q, k, v, want_o, mask = {0}, want_p = {0}, want_l = {0};
    if (!test_load_oracle(c->name, "q", &q) || !test_load_oracle(c->name, "k", &k) ||
        !test_load_oracle(c->name, "v", &v) || !test_load_oracle(c->name, "out", &want_o)) {
        CHECK(!"oracle files readable");
        return;
    }
    if (c->has_mask) CHECK(test_load_oracle(c->name, "mask", &mask));
    if (c->has_weights) {
        CHECK(test_load_oracle(c->name, "weights", &want_p));
        CHECK(test_load_oracle(c->name, "lse", &want_l));
    }
    qkv_tensor tq = test_as_tensor(&q), tk = test_as_tensor(&k), tv = test_as_tensor(&v);
    int64_t B = tq.shape[0], H = tq.shape[1], Lq = tq.shape[2], Lk = tk.shape[2],
            Ev = tv.shape[3];
    float *o = test_malloc((size_t)(B * H * Lq * Ev) * sizeof(float));
    float *p = test_malloc((size_t)(B * H * Lq * Lk) * sizeof(float));
    float *l = test_malloc((size_t)(B * H * Lq) * sizeof(float));
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, B, H, Lq, Ev);
    qkv_tensor tp = qkv_tensor_contiguous(p, QKV_DTYPE_F32, B, H, Lq, Lk);
    qkv_tensor tl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, B, H, Lq, 1);
    qkv_attention_options opt = {0};
    opt.causal = c->causal != 0;
    opt.align = c->causal == 2 ? QKV_ALIGN_BOTTOM_RIGHT : QKV_ALIGN_TOP_LEFT;
    if (c->has_mask) opt.mask = test_as_tensor(&mask);

    qkv_context *ctx = test_context(impl, QKV_ISA_AUTO, threads);
    qkv_status st = qkv_attention_forward(ctx, &to, &tp, &tl, &tq, &tk, &tv, &opt);
    qkv_context_free(ctx);
    CHECK(st == QKV_OK);
    if (st != QKV_OK) fprintf(stderr, "%s: %s\n", c->name, qkv_error_detail());
    CHECK_TENSOR(o, want_o.data, qkv_array_numel(&want_o), 1e-5, "%s: O", c->name);
    if (c->has_weights) {
        CHECK_TENSOR(p, want_p.data, qkv_array_numel(&want_p), 1e-5, "%s: weights", c->name);
        CHECK_TENSOR(l, want_l.data, qkv_array_numel(&want_l), 1e-5, "%s: lse", c->name);
    }
    free(o);
    free(p);
    free(l);
    qkv_array *all[] = {&q, &k, &v, &want_o, &mask, &want_p, &want_l};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qkv_array_free(all[i]);
}

/* The fully masked row of bool_mask_broadcast_heads (row 2 of batch 1)
 * must be exactly 0 with lse -inf, as PyTorch >= 2.5 gives. */
static void check_fully_masked_row(void)
{
    qkv_array q, k, v, mask;
    if (!test_load_oracle("bool_mask_broadcast_heads", "q", &q) ||
        !test_load_oracle("bool_mask_broadcast_heads", "k", &k) ||
        !test_load_oracle("bool_mask_broadcast_heads", "v", &v) ||
        !test_load_oracle("bool_mask_broadcast_heads", "mask", &mask)) {
        CHECK(!"oracle files readable");
        return;
    }
    float o[2 * 3 * 5 * 8], p[2 * 3 * 5 * 9], l[2 * 3 * 5];
    qkv_tensor tq = test_as_tensor(&q), tk = test_as_tensor(&k), tv = test_as_tensor(&v);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, 2, 3, 5, 8);
    qkv_tensor tp = qkv_tensor_contiguous(p, QKV_DTYPE_F32, 2, 3, 5, 9);
    qkv_tensor tl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, 2, 3, 5, 1);
    qkv_attention_options opt = {0};
    opt.mask = test_as_tensor(&mask);
    CHECK(qkv_attention_forward(NULL, &to, &tp, &tl, &tq, &tk, &tv, &opt) == QKV_OK);
    for (int h = 0; h < 3; h++) {
        int row = (1 * 3 + h) * 5 + 2;
        for (int e = 0; e < 8; e++) CHECK(o[row * 8 + e] == 0.0f);
        for (int j = 0; j < 9; j++) CHECK(p[row * 9 + j] == 0.0f);
        CHECK(isinf(l[row]) && l[row] < 0);
    }
    qkv_array_free(&q);
    qkv_array_free(&k);
    qkv_array_free(&v);
    qkv_array_free(&mask);
}

int main(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i], QKV_IMPL_REFERENCE, 1);
        run_case(&cases[i], QKV_IMPL_AUTO, 2);
    }
    check_fully_masked_row();
    return test_finish("test_oracle");
}
