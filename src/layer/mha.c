/* The multi-head attention layer (qkv.h): its configuration, parameters,
 * forward and backward. The projections are qkv_sgemm calls, the middle is
 * qkv_attention_forward / _backward on views of the projected rows, so
 * everything the attention takes (masks, causal, window, kv_lens, softcap)
 * works here unchanged. */
#include "layer/mha.h"

#include "common.h"
#include "context.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------------- config */

qkv_status qkv_mha_resolve_config(const qkv_mha_config *cfg, qkv_mha_config *out)
{
    if (!cfg) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "cfg: is NULL");
    qkv_mha_config c = *cfg;
    if (c.d_model < 1)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "d_model: %lld is not >= 1",
                        (long long)c.d_model);
    if (c.d_context == 0) c.d_context = c.d_model;
    if (c.d_context < 1)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "d_context: %lld is not >= 1 (0 means d_model)",
                        (long long)c.d_context);
    if (c.heads < 1)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "heads: %lld is not >= 1", (long long)c.heads);
    if (c.kv_heads == 0) c.kv_heads = c.heads;
    if (c.kv_heads < 1)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "kv_heads: %lld is not >= 1 (0 means heads)",
                        (long long)c.kv_heads);
    if (c.heads % c.kv_heads != 0)
        return qkv_fail(QKV_ERR_SHAPE, "heads: %lld is not a multiple of kv_heads = %lld",
                        (long long)c.heads, (long long)c.kv_heads);
    if (c.head_dim == 0) {
        if (c.d_model % c.heads != 0)
            return qkv_fail(QKV_ERR_SHAPE,
                            "head_dim: 0 means d_model / heads, but d_model = %lld is not a "
                            "multiple of heads = %lld",
                            (long long)c.d_model, (long long)c.heads);
        c.head_dim = c.d_model / c.heads;
    }
    if (c.head_dim < 1)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "head_dim: %lld is not >= 1",
                        (long long)c.head_dim);
    if (c.v_head_dim == 0) c.v_head_dim = c.head_dim;
    if (c.v_head_dim < 1)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "v_head_dim: %lld is not >= 1 (0 means head_dim)",
                        (long long)c.v_head_dim);
    if (c.rope != QKV_ROPE_NONE && c.rope != QKV_ROPE_INTERLEAVED && c.rope != QKV_ROPE_HALF)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "rope: %d is not a qkv_rope value", (int)c.rope);
    if (c.rope != QKV_ROPE_NONE && c.head_dim % 2 != 0)
        return qkv_fail(QKV_ERR_SHAPE, "head_dim: RoPE rotates pairs of dims, but %lld is odd",
                        (long long)c.head_dim);
    if (c.rope_base == 0) c.rope_base = 10000;
    if (!(c.rope_base > 0) || !isfinite(c.rope_base))
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "rope_base: %g is not finite and > 0",
                        c.rope_base);
    c.bias = c.bias != 0;
    if (!qkv_float_dtype(c.weight_dtype))
        return qkv_fail(QKV_ERR_DTYPE, "weight_dtype: %s, expected f32, f16 or bf16",
                        qkv_dtype_name(c.weight_dtype));
    /* Every projection's size must fit, and so must their sum. */
    int64_t hq, hk, hv, total = 0, t;
    if (!qkv_mul_ok(c.heads, c.head_dim, &hq) || !qkv_mul_ok(c.kv_heads, c.head_dim, &hk) ||
        !qkv_mul_ok(c.kv_heads, c.v_head_dim, &hv))
        return qkv_fail(QKV_ERR_OVERFLOW, "cfg: the projection widths overflow int64_t");
    const int64_t sizes[4][2] = {
        {hq, c.d_model}, {hk, c.d_context}, {hv, c.d_context}, {c.d_model, c.heads * c.v_head_dim}};
    if (!qkv_mul_ok(c.heads, c.v_head_dim, &t))
        return qkv_fail(QKV_ERR_OVERFLOW, "cfg: the projection widths overflow int64_t");
    for (int i = 0; i < 4; i++) {
        int64_t n;
        if (!qkv_mul_ok(sizes[i][0], sizes[i][1], &n) || !qkv_add_ok(total, n, &total) ||
            !qkv_add_ok(total, sizes[i][0], &total) ||
            (uint64_t)total > SIZE_MAX / sizeof(float))
            return qkv_fail(QKV_ERR_OVERFLOW, "cfg: the parameters would not fit in memory");
    }
    *out = c;
    return QKV_OK;
}

/* ------------------------------------------------------------- parameters */

qkv_status qkv_mha_create(qkv_mha **out, const qkv_mha_config *cfg)
{
    qkv_clear_error();
    if (!out) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "out: is NULL");
    *out = NULL;
    qkv_mha_config c;
    QKV_TRY(qkv_mha_resolve_config(cfg, &c));
    qkv_mha *m = calloc(1, sizeof *m);
    if (!m) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "layer: out of memory");
    m->cfg = c;
    const int64_t shape[QKV_MHA_NUM_PARAMS][2] = {
        {c.heads * c.head_dim, c.d_model},        {c.kv_heads * c.head_dim, c.d_context},
        {c.kv_heads * c.v_head_dim, c.d_context}, {c.d_model, c.heads * c.v_head_dim},
        {1, c.heads * c.head_dim},                {1, c.kv_heads * c.head_dim},
        {1, c.kv_heads * c.v_head_dim},           {1, c.d_model}};
    int64_t total = 0;
    for (int i = 0; i < QKV_MHA_NUM_PARAMS; i++) {
        m->dtype[i] = i < QKV_MHA_BQ ? c.weight_dtype : QKV_DTYPE_F32;
        if (i >= QKV_MHA_BQ && !c.bias) continue;
        m->rows[i] = shape[i][0];
        m->cols[i] = shape[i][1];
        total += shape[i][0] * shape[i][1]; /* bounded by resolve_config */
    }
    /* One block, each parameter 64-byte aligned in it, sized and cut by one
     * carving. Decode reads every weight once per step: huge pages, as for
     * the cache. */
    qkv_carver cv = {NULL, 0};
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            m->storage_bytes = cv.used ? cv.used : 64;
            if (!(m->storage = qkv_alloc(m->storage_bytes))) {
                free(m);
                return qkv_fail(QKV_ERR_OUT_OF_MEMORY,
                                "layer: %lld parameters do not fit in memory", (long long)total);
            }
            memset(m->storage, 0, m->storage_bytes);
            cv = (qkv_carver){m->storage, 0};
        }
        for (int i = 0; i < QKV_MHA_NUM_PARAMS; i++) {
            if (!m->rows[i]) continue;
            const size_t bytes = (size_t)(m->rows[i] * m->cols[i]) * qkv_dtype_size(m->dtype[i]);
            void *p = qkv_carve(&cv, bytes);
            if (pass == 1) m->param[i] = p;
        }
    }
    *out = m;
    return QKV_OK;
}

void qkv_mha_free(qkv_mha *m)
{
    if (!m) return;
    qkv_free(m->storage);
    free(m);
}

qkv_byte_range qkv_mha_param_range(const char *name, const qkv_mha *m)
{
    return qkv_range(name, m->storage, (int64_t)m->storage_bytes, 1);
}

qkv_mha_config qkv_mha_get_config(const qkv_mha *m)
{
    qkv_mha_config none = {0};
    return m ? m->cfg : none;
}

void *qkv_mha_param_view(qkv_mha *m, qkv_mha_param which, qkv_dtype *dtype, int64_t *rows,
                         int64_t *cols)
{
    int ok = m && (int)which >= 0 && (int)which < QKV_MHA_NUM_PARAMS && m->param[which];
    if (rows) *rows = ok ? m->rows[which] : 0;
    if (cols) *cols = ok ? m->cols[which] : 0;
    if (dtype) *dtype = ok ? m->dtype[which] : QKV_DTYPE_F32;
    return ok ? m->param[which] : NULL;
}

float *qkv_mha_param_data(qkv_mha *m, qkv_mha_param which, int64_t *rows, int64_t *cols)
{
    qkv_dtype dt;
    void *p = qkv_mha_param_view(m, which, &dt, rows, cols);
    if (p && dt == QKV_DTYPE_F32) return p;
    if (rows) *rows = 0;
    if (cols) *cols = 0;
    return NULL;
}

/* ------------------------------------------------------------ projections */

qkv_status qkv_mha_linear(qkv_context *ctx, float *y, const float *x, int64_t rows, const void *w,
                          qkv_dtype wdt, int64_t out, int64_t in, const float *b)
{
    if (b)
        for (int64_t r = 0; r < rows; r++) memcpy(y + r * out, b, (size_t)out * sizeof(float));
    return qkv_gemm(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_TRANS, rows, out, in, 1.0f, x, QKV_DTYPE_F32,
                    in, w, wdt, in, b ? 1.0f : 0.0f, y, out);
}

qkv_tensor qkv_mha_heads_view(float *data, int64_t batch, int64_t len, int64_t heads,
                              int64_t dim)
{
    qkv_tensor t = {data, QKV_DTYPE_F32, {batch, heads, len, dim},
                    {len * heads * dim, dim, heads * dim, 1}};
    return t;
}

/* ---------------------------------------------------------------- forward */

/* The activations of one forward, kept for the backward. */
typedef struct activations {
    float *q, *k, *v, *a, *lse; /* (B, Lq, H*E), (B, Lk, Hkv*E), ..., (B, H, Lq) */
    float *block;               /* one allocation behind them */
} activations;

static void activations_free(activations *act)
{
    free(act->block);
    memset(act, 0, sizeof *act);
}

/* Whether n buffers of the given float counts fit in one allocation. */
int qkv_floats_fit(int n, const int64_t *counts)
{
    int64_t total = 1; /* the allocations add one float */
    for (int i = 0; i < n; i++)
        if (counts[i] < 0 || !qkv_add_ok(total, counts[i], &total)) return 0;
    return (uint64_t)total <= SIZE_MAX / sizeof(float);
}

/* Checks the arguments common to forward and backward. */
static qkv_status check_call(const qkv_mha *m, const float *x, int64_t batch, int64_t lq,
                             const float *context, int64_t lk)
{
    if (!m) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "m: is NULL");
    if (batch < 0) return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "batch: %lld is negative", (long long)batch);
    if (lq < 0) return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "lq: %lld is negative", (long long)lq);
    if (lk < 0) return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "lk: %lld is negative", (long long)lk);
    if (!context) {
        if (lk != lq)
            return qkv_fail(QKV_ERR_SHAPE,
                            "lk: %lld differs from lq = %lld, but context is NULL "
                            "(self-attention)",
                            (long long)lk, (long long)lq);
        if (m->cfg.d_context != m->cfg.d_model)
            return qkv_fail(QKV_ERR_SHAPE,
                            "context: is NULL (self-attention), but the layer's d_context = %lld "
                            "differs from d_model = %lld",
                            (long long)m->cfg.d_context, (long long)m->cfg.d_model);
    }
    /* Every buffer of the call must fit; the largest is bounded by these. */
    const qkv_mha_config *c = &m->cfg;
    int64_t wide = c->d_model;
    const int64_t widths[] = {c->d_context, c->heads * c->head_dim, c->heads * c->v_head_dim,
                              c->kv_heads * c->head_dim, c->kv_heads * c->v_head_dim};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        if (widths[i] > wide) wide = widths[i];
    int64_t rows, n, w;
    if (!qkv_mul_ok(batch, lq > lk ? lq : lk, &rows) || !qkv_mul_ok(rows, wide, &n) ||
        !qkv_mul_ok(batch, c->heads, &w) || !qkv_mul_ok(w, lq, &w) || !qkv_mul_ok(w, lk, &w) ||
        (uint64_t)n > SIZE_MAX / 8)
        return qkv_fail(QKV_ERR_OVERFLOW, "batch, lq, lk: the layer's buffers would overflow");
    if (rows * c->d_model > 0 && !x) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "x: is NULL");
    return QKV_OK;
}

qkv_status qkv_mha_project(qkv_context *ctx, const qkv_mha *m, float *q, float *k, float *v,
                           const float *x, int64_t batch, int64_t lq, const float *context,
                           int64_t lk)
{
    const qkv_mha_config *c = &m->cfg;
    const int64_t H = c->heads, Hkv = c->kv_heads, E = c->head_dim, Ev = c->v_head_dim;
    const float *cin = context ? context : x;
    const int64_t dkv = c->d_context;
    qkv_status st = qkv_mha_linear(ctx, q, x, batch * lq, m->param[QKV_MHA_WQ],
                                   m->dtype[QKV_MHA_WQ], H * E, c->d_model, m->param[QKV_MHA_BQ]);
    if (st == QKV_OK)
        st = qkv_mha_linear(ctx, k, cin, batch * lk, m->param[QKV_MHA_WK], m->dtype[QKV_MHA_WK],
                            Hkv * E, dkv, m->param[QKV_MHA_BK]);
    if (st == QKV_OK)
        st = qkv_mha_linear(ctx, v, cin, batch * lk, m->param[QKV_MHA_WV], m->dtype[QKV_MHA_WV],
                            Hkv * Ev, dkv, m->param[QKV_MHA_BV]);
    for (int64_t b = 0; b < batch && st == QKV_OK; b++) {
        st = qkv_rope_apply(c, q + b * lq * H * E, lq, H * E, H, 0, 0);
        if (st == QKV_OK) st = qkv_rope_apply(c, k + b * lk * Hkv * E, lk, Hkv * E, Hkv, 0, 0);
    }
    return st;
}

/* Projects and rotates Q, K, V, runs the attention into act->a and
 * act->lse, and writes the weights when asked. */
static qkv_status forward_core(qkv_context *ctx, const qkv_mha *m, activations *act,
                               float *weights, const float *x, int64_t batch, int64_t lq,
                               const float *context, int64_t lk, const qkv_attention_options *opts)
{
    const qkv_mha_config *c = &m->cfg;
    const int64_t H = c->heads, Hkv = c->kv_heads, E = c->head_dim, Ev = c->v_head_dim;
    const int64_t nq = batch * lq * H * E, nk = batch * lk * Hkv * E, nv = batch * lk * Hkv * Ev,
                  na = batch * lq * H * Ev, nl = batch * H * lq;
    memset(act, 0, sizeof *act);
    if (!qkv_floats_fit(5, (int64_t[]){nq, nk, nv, na, nl}))
        return qkv_fail(QKV_ERR_OVERFLOW, "batch, lq, lk: the layer's activations would not fit "
                        "in memory");
    act->block = malloc((size_t)(nq + nk + nv + na + nl + 1) * sizeof(float));
    if (!act->block) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "layer: activations do not fit in memory");
    act->q = act->block;
    act->k = act->q + nq;
    act->v = act->k + nk;
    act->a = act->v + nv;
    act->lse = act->a + na;

    QKV_TRY(qkv_mha_project(ctx, m, act->q, act->k, act->v, x, batch, lq, context, lk));
    qkv_tensor tq = qkv_mha_heads_view(act->q, batch, lq, H, E);
    qkv_tensor tk = qkv_mha_heads_view(act->k, batch, lk, Hkv, E);
    qkv_tensor tv = qkv_mha_heads_view(act->v, batch, lk, Hkv, Ev);
    qkv_tensor ta = qkv_mha_heads_view(act->a, batch, lq, H, Ev);
    qkv_tensor tl = qkv_tensor_contiguous(act->lse, QKV_DTYPE_F32, batch, H, lq, 1);
    qkv_tensor tw = qkv_tensor_contiguous(weights, QKV_DTYPE_F32, batch, H, lq, lk);
    return qkv_attention_forward(ctx, &ta, weights ? &tw : NULL, &tl, &tq, &tk, &tv, opts);
}

/* n floats from p, for the overlap and alignment checks. */
static qkv_byte_range floats(const char *name, const float *p, int64_t n)
{
    return qkv_range(name, p, n, sizeof *p);
}

qkv_status qkv_mha_forward(qkv_context *ctx, const qkv_mha *m, float *y, float *weights,
                           const float *x, int64_t batch, int64_t lq, const float *context,
                           int64_t lk, const qkv_attention_options *opts)
{
    qkv_clear_error();
    QKV_TRY(check_call(m, x, batch, lq, context, lk));
    qkv_status st = QKV_OK;
    const qkv_mha_config *c = &m->cfg;
    const int64_t ny = batch * lq * c->d_model, nw = batch * c->heads * lq * lk;
    if (ny > 0 && !y) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "y: is NULL");
    const qkv_byte_range outs[2] = {floats("y", y, ny), floats("weights", weights, nw)};
    const qkv_byte_range ins[3] = {
        floats("x", x, ny), floats("context", context, batch * lk * c->d_context),
        qkv_mha_param_range("the layer's parameters", m)};
    QKV_TRY(qkv_check_buffers(outs, 2, ins, 3, sizeof(float)));
    activations act;
    st = forward_core(ctx, m, &act, weights, x, batch, lq, context, lk, opts);
    if (st == QKV_OK)
        st = qkv_mha_linear(ctx, y, act.a, batch * lq, m->param[QKV_MHA_WO],
                            m->dtype[QKV_MHA_WO], c->d_model, c->heads * c->v_head_dim,
                            m->param[QKV_MHA_BO]);
    activations_free(&act);
    return st;
}

/* --------------------------------------------------------------- backward */

/* db[j] = sum over rows of d[r][j], in row order. */
static void column_sums(float *db, const float *d, int64_t rows, int64_t cols)
{
    if (!db) return;
    memset(db, 0, (size_t)cols * sizeof(float));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) db[j] += d[r * cols + j];
}

/* Whether two resolved configurations describe the same layer, whatever
 * dtype each keeps its weights in (field by field: the struct has
 * padding). */
static int same_shape(const qkv_mha_config *a, const qkv_mha_config *b)
{
    return a->d_model == b->d_model && a->d_context == b->d_context && a->heads == b->heads &&
           a->kv_heads == b->kv_heads && a->head_dim == b->head_dim &&
           a->v_head_dim == b->v_head_dim && a->bias == b->bias && a->rope == b->rope &&
           a->rope_base == b->rope_base;
}

/* The backward of y = x W^T + b for one projection: dW = dY^T x, db, and
 * dx (+)= dY W (accumulating when accumulate is nonzero). */
static qkv_status linear_backward(qkv_context *ctx, const float *dy, const float *x, int64_t rows,
                                  int64_t out, int64_t in, const void *w, qkv_dtype wdt, float *dw,
                                  float *db, float *dx, int accumulate)
{
    QKV_TRY(qkv_sgemm(ctx, QKV_GEMM_TRANS, QKV_GEMM_NO_TRANS, out, in, rows, 1.0f, dy, out, x, in,
                      0.0f, dw, in));
    column_sums(db, dy, rows, out);
    if (!dx) return QKV_OK;
    return qkv_gemm(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, rows, in, out, 1.0f, dy,
                    QKV_DTYPE_F32, out, w, wdt, in, accumulate ? 1.0f : 0.0f, dx, in);
}

qkv_status qkv_mha_backward(qkv_context *ctx, const qkv_mha *m, qkv_mha *grad, float *dx,
                            float *dcontext, const float *dy, const float *x, int64_t batch,
                            int64_t lq, const float *context, int64_t lk,
                            const qkv_attention_options *opts)
{
    qkv_clear_error();
    QKV_TRY(check_call(m, x, batch, lq, context, lk));
    qkv_status st = QKV_OK;
    const qkv_mha_config *c = &m->cfg;
    if (!grad) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "grad: is NULL");
    if (!same_shape(&grad->cfg, c))
        return qkv_fail(QKV_ERR_SHAPE, "grad: its configuration differs from the layer's");
    if (grad->cfg.weight_dtype != QKV_DTYPE_F32)
        return qkv_fail(QKV_ERR_DTYPE, "grad: its weights are %s; gradients are kept in f32 "
                        "(create grad with weight_dtype f32)",
                        qkv_dtype_name(grad->cfg.weight_dtype));
    if (grad == m) return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "grad: is the layer itself");
    if (dcontext && !context)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "dcontext: given, but context is NULL (self-attention: dx holds it)");
    const int64_t H = c->heads, Hkv = c->kv_heads, E = c->head_dim, Ev = c->v_head_dim;
    const int64_t D = c->d_model, Dkv = c->d_context;
    const int64_t ny = batch * lq * D;
    if (ny > 0 && !dy) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "dy: is NULL");
    /* grad's parameters are outputs too; m's are read throughout. */
    const qkv_byte_range outs[3] = {
        floats("dx", dx, ny), floats("dcontext", dcontext, batch * lk * Dkv),
        qkv_mha_param_range("grad's parameters", grad)};
    const qkv_byte_range ins[4] = {
        floats("dy", dy, ny), floats("x", x, ny), floats("context", context, batch * lk * Dkv),
        qkv_mha_param_range("the layer's parameters", m)};
    QKV_TRY(qkv_check_buffers(outs, 3, ins, 4, sizeof(float)));

    /* The recomputed forward reports no progress, so that the backward's
     * own reports rise once from 0 to 1. */
    qkv_context quiet = *qkv_context_get(ctx);
    quiet.progress = NULL;
    activations act;
    st = forward_core(&quiet, m, &act, NULL, x, batch, lq, context, lk, opts);
    if (st != QKV_OK) {
        activations_free(&act);
        return st;
    }
    const int64_t nq = batch * lq * H * E, nk = batch * lk * Hkv * E, nv = batch * lk * Hkv * Ev,
                  na = batch * lq * H * Ev;
    float *block = qkv_floats_fit(4, (int64_t[]){nq, nk, nv, na})
                       ? malloc((size_t)(nq + nk + nv + na + 1) * sizeof(float))
                       : NULL;
    if (!block) {
        activations_free(&act);
        return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "layer: gradients do not fit in memory");
    }
    float *dq = block, *dk = dq + nq, *dv = dk + nk, *da = dv + nv;
    float *gp[QKV_MHA_NUM_PARAMS]; /* grad's are f32 (checked above) */
    for (int i = 0; i < QKV_MHA_NUM_PARAMS; i++) gp[i] = grad->param[i];

    /* Y = A Wo^T + bo. */
    st = linear_backward(ctx, dy, act.a, batch * lq, D, H * Ev, m->param[QKV_MHA_WO],
                         m->dtype[QKV_MHA_WO], gp[QKV_MHA_WO],
                         gp[QKV_MHA_BO], da, 0);
    if (st == QKV_OK) {
        qkv_tensor tq = qkv_mha_heads_view(act.q, batch, lq, H, E);
        qkv_tensor tk = qkv_mha_heads_view(act.k, batch, lk, Hkv, E);
        qkv_tensor tv = qkv_mha_heads_view(act.v, batch, lk, Hkv, Ev);
        qkv_tensor ta = qkv_mha_heads_view(act.a, batch, lq, H, Ev);
        qkv_tensor tda = qkv_mha_heads_view(da, batch, lq, H, Ev);
        qkv_tensor tdq = qkv_mha_heads_view(dq, batch, lq, H, E);
        qkv_tensor tdk = qkv_mha_heads_view(dk, batch, lk, Hkv, E);
        qkv_tensor tdv = qkv_mha_heads_view(dv, batch, lk, Hkv, Ev);
        qkv_tensor tl = qkv_tensor_contiguous(act.lse, QKV_DTYPE_F32, batch, H, lq, 1);
        st = qkv_attention_backward(ctx, &tdq, &tdk, &tdv, NULL, &tda, &tq, &tk, &tv, &ta, &tl,
                                    opts);
    }
    if (st == QKV_OK) {
        /* RoPE is a rotation: its backward rotates the gradient back. */
        for (int64_t b = 0; b < batch && st == QKV_OK; b++) {
            st = qkv_rope_apply(c, dq + b * lq * H * E, lq, H * E, H, 0, 1);
            if (st == QKV_OK) st = qkv_rope_apply(c, dk + b * lk * Hkv * E, lk, Hkv * E, Hkv, 0, 1);
        }
    }
    if (st == QKV_OK) {
        const float *cin = context ? context : x;
        float *dcin = context ? dcontext : dx;
        st = linear_backward(ctx, dq, x, batch * lq, H * E, D, m->param[QKV_MHA_WQ],
                             m->dtype[QKV_MHA_WQ], gp[QKV_MHA_WQ],
                             gp[QKV_MHA_BQ], dx, 0);
        if (st == QKV_OK)
            st = linear_backward(ctx, dk, cin, batch * lk, Hkv * E, Dkv, m->param[QKV_MHA_WK],
                                 m->dtype[QKV_MHA_WK], gp[QKV_MHA_WK], gp[QKV_MHA_BK], dcin, !context);
        if (st == QKV_OK)
            st = linear_backward(ctx, dv, cin, batch * lk, Hkv * Ev, Dkv, m->param[QKV_MHA_WV],
                                 m->dtype[QKV_MHA_WV], gp[QKV_MHA_WV], gp[QKV_MHA_BV], dcin, 1);
    }
    free(block);
    activations_free(&act);
    return st;
}
