/* qkv_mha_kv_cost (qkv.h): the layer's attention over its own keys and
 * values in f32 against the same through a cache of another format, head
 * by head. The queries go in blocks so that two weight tiles of H x rows
 * x L floats stay near COST_TILE_FLOATS. */
#include "layer/mha.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define COST_TILE_FLOATS (INT64_C(16) << 20)

/* The f32 and the format's weights and outputs of one block of queries,
 * their KL and error sums added into kl[h] and num[h], den[h]. */
static void add_block(const float *w32, const float *wq, const float *o32, const float *oq,
                      int64_t H, int64_t rows, int64_t L, int64_t Ev, double *kl, double *num,
                      double *den)
{
    for (int64_t h = 0; h < H; h++)
        for (int64_t r = 0; r < rows; r++) {
            const float *p = w32 + (h * rows + r) * L, *q = wq + (h * rows + r) * L;
            double d = 0;
            for (int64_t j = 0; j < L; j++)
                if (p[j] > 0) d += q[j] > 0 ? p[j] * log((double)p[j] / q[j]) : INFINITY;
            kl[h] += d;
            const float *a = o32 + (h * rows + r) * Ev, *b = oq + (h * rows + r) * Ev;
            for (int64_t c = 0; c < Ev; c++) {
                num[h] += ((double)b[c] - a[c]) * ((double)b[c] - a[c]);
                den[h] += (double)a[c] * a[c];
            }
        }
}

/* sqrt(num / den): a relative L2 error from its two sums (0 / 0 is 0). */
static double rel_l2(double num, double den)
{
    return den > 0 ? sqrt(num / den) : num > 0 ? INFINITY : 0.0;
}

qkv_status qkv_mha_kv_cost(qkv_context *ctx, const qkv_mha *m, const float *x, int64_t batch,
                           int64_t len, const qkv_kv_cache_options *fmt, double *kl, double *err)
{
    qkv_clear_error();
    if (!m) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "m: is NULL");
    if (!x) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "x: is NULL");
    if (!kl) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "kl: is NULL");
    if (!err) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "err: is NULL");
    if (batch < 1) return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "batch: %lld is not >= 1", (long long)batch);
    if (len < 1) return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "len: %lld is not >= 1", (long long)len);
    const qkv_mha_config *c = &m->cfg;
    if (c->d_context != c->d_model)
        return qkv_fail(QKV_ERR_SHAPE, "m: the cost view is self-attention, but d_context = %lld "
                        "differs from d_model = %lld", (long long)c->d_context, (long long)c->d_model);
    const int64_t H = c->heads, Hkv = c->kv_heads, E = c->head_dim, Ev = c->v_head_dim;
    int64_t nq, nk, nv, rows = COST_TILE_FLOATS / (H * len);
    if (!qkv_mul_ok(batch, len, &nq) || !qkv_mul_ok(nq, H * E, &nq) ||
        !qkv_mul_ok(batch * len, Hkv * E, &nk) || !qkv_mul_ok(batch * len, Hkv * Ev, &nv))
        return qkv_fail(QKV_ERR_OVERFLOW, "batch, len: the projections would overflow");
    rows = rows < 1 ? 1 : rows > len ? len : rows;
    const int64_t tile = H * rows * len, otile = H * rows * Ev;
    if (!qkv_floats_fit(7, (int64_t[]){nq, nk, nv, tile, tile, otile, otile}))
        return qkv_fail(QKV_ERR_OVERFLOW, "batch, len: the cost view's buffers would not fit");
    qkv_kv_cache *cache = NULL;
    QKV_TRY(qkv_kv_cache_create_with(&cache, m, batch, len, fmt));
    const qkv_dtype qdt = qkv_kv_cache_query_dtype(cache);
    float *block = malloc((size_t)(nq + nk + nv + 2 * tile + 2 * otile + 1) * sizeof(float));
    uint16_t *q16 = qdt == QKV_DTYPE_F32 ? NULL : malloc((size_t)(nq + 1) * sizeof *q16);
    double *sums = calloc((size_t)(3 * H), sizeof *sums);
    qkv_status st = QKV_OK;
    if (!block || !sums || (qdt != QKV_DTYPE_F32 && !q16))
        st = qkv_fail(QKV_ERR_OUT_OF_MEMORY, "the cost view's buffers do not fit in memory");
    float *q = block, *k = q + nq, *v = k + nk, *w32 = v + nv, *wq = w32 + tile,
          *o32 = wq + tile, *oq = o32 + otile;
    if (st == QKV_OK) st = qkv_mha_project(ctx, m, q, k, v, x, batch, len, NULL, len);
    for (int64_t b = 0; b < batch && st == QKV_OK; b++)
        st = qkv_kv_cache_append(cache, b, k + b * len * Hkv * E, v + b * len * Hkv * Ev, len);
    if (st == QKV_OK && q16)
        for (int64_t e = 0; e < nq; e++) qkv_elem_put(q16, qdt, e, q[e]);
    double *klh = sums, *num = sums + H, *den = sums + 2 * H;
    for (int64_t b = 0; b < batch && st == QKV_OK; b++)
        for (int64_t i0 = 0; i0 < len && st == QKV_OK; i0 += rows) {
            const int64_t n = len - i0 < rows ? len - i0 : rows;
            /* Queries i0 .. i0 + n - 1 of sequence b, at their positions. */
            qkv_tensor tq = qkv_mha_heads_view(q + (b * len + i0) * H * E, 1, n, H, E);
            qkv_tensor tk = qkv_mha_heads_view(k + b * len * Hkv * E, 1, len, Hkv, E);
            qkv_tensor tv = qkv_mha_heads_view(v + b * len * Hkv * Ev, 1, len, Hkv, Ev);
            qkv_tensor kc, vc;
            st = qkv_kv_cache_view(cache, b, &kc, &vc);
            const int64_t pos[1] = {i0};
            qkv_attention_options o = {0};
            o.causal = 1;
            o.q_offsets = pos;
            qkv_tensor tw = qkv_tensor_contiguous(w32, QKV_DTYPE_F32, 1, H, n, len);
            qkv_tensor to = qkv_tensor_contiguous(o32, QKV_DTYPE_F32, 1, H, n, Ev);
            if (st == QKV_OK) st = qkv_attention_forward(ctx, &to, &tw, NULL, &tq, &tk, &tv, &o);
            if (q16) {
                tq.data = q16 + (b * len + i0) * H * E;
                tq.dtype = qdt;
            }
            tw.data = wq;
            to.data = oq;
            if (st == QKV_OK) st = qkv_attention_forward(ctx, &to, &tw, NULL, &tq, &kc, &vc, &o);
            if (st == QKV_OK) add_block(w32, wq, o32, oq, H, n, len, Ev, klh, num, den);
        }
    if (st == QKV_OK) {
        double kl_all = 0, num_all = 0, den_all = 0;
        for (int64_t h = 0; h < H; h++) {
            kl[h] = klh[h] / (double)(batch * len);
            err[h] = rel_l2(num[h], den[h]);
            kl_all += kl[h];
            num_all += num[h];
            den_all += den[h];
        }
        kl[H] = kl_all / (double)H;
        err[H] = rel_l2(num_all, den_all);
    }
    free(block);
    free(q16);
    free(sums);
    qkv_kv_cache_free(cache);
    return st;
}
