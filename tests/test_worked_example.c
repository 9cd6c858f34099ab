/* The worked example, checked against numbers computed by hand: the query
 * "apple" against the keys cat, apple, tree, juice (d_k = 4, so the scores
 * are divided by sqrt(4) = 2), values chat, pomme, arbre, jus.
 *
 *   q       = (1, 1, 0, 0)
 *   k_cat   = (0, 0, 1, 1)    q.k = 0     scaled 0
 *   k_apple = (1, 1, 0, 0)    q.k = 2     scaled 1
 *   k_tree  = (1, 0, 1, 0)    q.k = 1     scaled 0.5
 *   k_juice = (0.5, 1, 0, 0)  q.k = 1.5   scaled 0.75
 *
 * exp: 1, e, e^0.5, e^0.75, sum 7.4840031157718485, so the weights are
 * 0.13361833026132658, 0.36321227909840337, 0.22029938325728377,
 * 0.28287000738298623 and lse = log(7.4840031157718485) = 2.012767824736162.
 * Values chat (1, 0), pomme (0, 1), arbre (1, 1), jus (0, 0) give
 * o = (p_cat + p_tree, p_apple + p_tree) = (0.35391771351861034,
 * 0.5835116623556871): "apple" lands nearest "pomme". */
#include "test.h"
#include "util.h"

#include "qkv.h"

static void check_example(qkv_impl impl)
{
    float q[4] = {1, 1, 0, 0};
    float k[16] = {0, 0, 1, 1, /* cat */ 1, 1, 0, 0, /* apple */
                   1, 0, 1, 0, /* tree */ 0.5f, 1, 0, 0 /* juice */};
    float v[8] = {1, 0, /* chat */ 0, 1, /* pomme */ 1, 1, /* arbre */ 0, 0 /* jus */};
    float o[2], p[4], lse;
    qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, 1, 1, 1, 4);
    qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, 1, 1, 4, 4);
    qkv_tensor tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, 1, 1, 4, 2);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, 1, 1, 1, 2);
    qkv_tensor tp = qkv_tensor_contiguous(p, QKV_DTYPE_F32, 1, 1, 1, 4);
    qkv_tensor tl = qkv_tensor_contiguous(&lse, QKV_DTYPE_F32, 1, 1, 1, 1);
    qkv_attention_options opt = {0};
    qkv_context *ctx = test_context(impl, QKV_ISA_AUTO, 0);
    CHECK(qkv_attention_forward(ctx, &to, &tp, &tl, &tq, &tk, &tv, &opt) == QKV_OK);

    const double want_p[4] = {0.13361833026132658, 0.36321227909840337, 0.22029938325728377,
                              0.28287000738298623};
    for (int j = 0; j < 4; j++) CHECK_NEAR(p[j], want_p[j], 1e-7);
    CHECK_NEAR(p[0] + p[1] + p[2] + p[3], 1.0, 1e-6);
    CHECK_NEAR(lse, 2.012767824736162, 1e-6);
    CHECK_NEAR(o[0], 0.35391771351861034, 1e-7);
    CHECK_NEAR(o[1], 0.5835116623556871, 1e-7);
    /* The largest weight is on the key "apple". */
    CHECK(p[1] > p[0] && p[1] > p[2] && p[1] > p[3]);

    /* An explicit scale of 1 (no division): scores 0, 2, 1, 1.5, exp sum
     * 1 + e^2 + e + e^1.5 = 15.6938335..., weight of apple e^2 / that. */
    opt.scale = 1.0;
    CHECK(qkv_attention_forward(ctx, &to, &tp, NULL, &tq, &tk, &tv, &opt) == QKV_OK);
    CHECK_NEAR(p[1], 7.38905609893065 / (1 + 7.38905609893065 + 2.718281828459045 +
                                         4.4816890703380645), 1e-7);
    qkv_context_free(ctx);
}

/* d_k = 64 divides the scores by 8: with q = k = 8 * e_0 the score is
 * 64 / 8 = 8 against a key of zeros scoring 0, so the weights are
 * e^8 / (e^8 + 1) and 1 / (e^8 + 1). */
static void check_divide_by_eight(void)
{
    float q[64] = {0}, k[128] = {0}, v[2] = {1, 0}, o, p[2];
    q[0] = 8;
    k[0] = 8;
    qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, 1, 1, 1, 64);
    qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, 1, 1, 2, 64);
    qkv_tensor tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, 1, 1, 2, 1);
    qkv_tensor to = qkv_tensor_contiguous(&o, QKV_DTYPE_F32, 1, 1, 1, 1);
    qkv_tensor tp = qkv_tensor_contiguous(p, QKV_DTYPE_F32, 1, 1, 1, 2);
    CHECK(qkv_attention_forward(NULL, &to, &tp, NULL, &tq, &tk, &tv, NULL) == QKV_OK);
    CHECK_NEAR(p[0], 2980.9579870417283 / 2981.9579870417283, 1e-7);
    CHECK_NEAR(p[1], 1.0 / 2981.9579870417283, 1e-9);
    CHECK_NEAR(o, p[0], 1e-7);
}

int main(void)
{
    check_example(QKV_IMPL_AUTO);
    check_example(QKV_IMPL_REFERENCE);
    check_divide_by_eight();
    return test_finish("test_worked_example");
}
