/* Internals of the multi-head attention layer shared by its parts:
 * mha.c (config, parameters, forward, backward), rope.c, load.c (from
 * .safetensors) and cache.c (the KV cache and decode). */
#ifndef QKV_LAYER_MHA_H
#define QKV_LAYER_MHA_H

#include "common.h"
#include "qkv.h"

struct qkv_mha {
    qkv_mha_config cfg; /* every 0 default resolved */
    void *param[QKV_MHA_NUM_PARAMS]; /* NULL for absent biases */
    qkv_dtype dtype[QKV_MHA_NUM_PARAMS]; /* weights cfg.weight_dtype, biases F32 */
    int64_t rows[QKV_MHA_NUM_PARAMS], cols[QKV_MHA_NUM_PARAMS];
    void *storage;        /* one allocation behind every param */
    size_t storage_bytes; /* its length */
};

/* Checks cfg and fills every 0 default into *out; the detail names the
 * field ("heads: 6 is not a multiple of kv_heads = 4"). */
qkv_status qkv_mha_resolve_config(const qkv_mha_config *cfg, qkv_mha_config *out);

/* y (rows x out) = x (rows x in) W^T + b, W being (out x in) in dtype wdt
 * and b (out) or NULL, run as ctx says. */
qkv_status qkv_mha_linear(qkv_context *ctx, float *y, const float *x, int64_t rows, const void *w,
                          qkv_dtype wdt, int64_t out, int64_t in, const float *b);

/* The layer's queries q (B, lq, H, E), keys k (B, lk, Hkv, E) and values
 * v (B, lk, Hkv, Ev) from x (B, lq, D) and context (B, lk, Dkv; NULL for
 * x itself), q and k rotated by RoPE from position 0: the forward's first
 * step, and the cost view's (cost.c). */
qkv_status qkv_mha_project(qkv_context *ctx, const qkv_mha *m, float *q, float *k, float *v,
                           const float *x, int64_t batch, int64_t lq, const float *context,
                           int64_t lk);

/* Rotates the `heads` heads of head dim E in each of n rows of width
 * `row_stride` (the heads are the first heads*E columns) by RoPE, row r
 * being at position pos0 + r (pos_step 1). inverse != 0 rotates by the
 * negative angles: the transpose, which is RoPE's backward. Nothing is
 * done when cfg->rope is QKV_ROPE_NONE. Fails only for want of memory. */
qkv_status qkv_rope_apply(const qkv_mha_config *cfg, float *rows, int64_t n, int64_t row_stride,
                          int64_t heads, int64_t pos0, int inverse);

/* The bytes behind all of m's parameters, named, for the overlap checks
 * of the calls that read or write them. */
qkv_byte_range qkv_mha_param_range(const char *name, const qkv_mha *m);

/* Whether n buffers of counts[i] floats (each count already known not to
 * overflow) fit in one allocation together, with one float more. */
int qkv_floats_fit(int n, const int64_t *counts);

/* The dtype a cache's decode step gives its queries: its float side's
 * (F16, BF16), or F32 (cache.c). */
qkv_dtype qkv_kv_cache_query_dtype(const qkv_kv_cache *c);

/* A (B, L, heads, dim) buffer seen as the attention's (B, heads, L, dim). */
qkv_tensor qkv_mha_heads_view(float *data, int64_t batch, int64_t len, int64_t heads,
                              int64_t dim);

#endif
