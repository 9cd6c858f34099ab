/* The KV cache and the layer's decode step (qkv.h). The cache stores each
 * sequence's keys as (Hkv, max_len, E) and values as (Hkv, max_len, Ev),
 * in its format (f32, f16, bf16, q8_0 or q4_0), so that the attention of a step reads
 * every kv head's keys as one contiguous run and the views need no copy. */
#include "layer/mha.h"

#include "common.h"

#include <stdlib.h>
#include <string.h>

/* One side of the cache: the keys (width E) or the values (width Ev). */
typedef struct side {
    qkv_dtype dt;      /* the format's: F32, F16, BF16, Q8_0 or Q4_0 */
    int64_t width;     /* values a row */
    int64_t row_bytes; /* bytes a row */
    void *data;        /* (B, Hkv, max_len) rows */
} side;

struct qkv_kv_cache {
    int64_t batch, max_len, kv_heads, head_dim, v_head_dim;
    int64_t *len; /* tokens appended per sequence (held: kept()) */
    int rolling;    /* keep the first `sinks` and the last max_len - sinks */
    int64_t sinks;
    side k, v;
    qkv_dtype qdt; /* the step's query dtype: K's or V's float format, else F32 */
    size_t bytes;
};

/* The row of a sequence that token `pos` takes: pos itself, or in a
 * rolling cache past max_len, the oldest row past the sinks. */
static int64_t slot(const qkv_kv_cache *c, int64_t pos)
{
    if (!c->rolling || pos < c->max_len) return pos;
    return c->sinks + (pos - c->sinks) % (c->max_len - c->sinks);
}

/* The tokens sequence b holds: all of them, or a rolling cache's at most max_len. */
static int64_t kept(const qkv_kv_cache *c, int64_t b)
{
    return c->len[b] < c->max_len ? c->len[b] : c->max_len;
}

/* Row r (counted from the side's start, b * Hkv * L + g * L + t) of a side. */
static char *row_at(const side *s, int64_t r) { return (char *)s->data + r * s->row_bytes; }

/* The dtype a format stores, or an error naming the field. */
static qkv_status format_dtype(qkv_kv_format f, const char *name, qkv_dtype *dt)
{
    switch (f) {
    case QKV_KV_F32: *dt = QKV_DTYPE_F32; return QKV_OK;
    case QKV_KV_F16: *dt = QKV_DTYPE_F16; return QKV_OK;
    case QKV_KV_BF16: *dt = QKV_DTYPE_BF16; return QKV_OK;
    case QKV_KV_Q8_0: *dt = QKV_DTYPE_Q8_0; return QKV_OK;
    case QKV_KV_Q4_0: *dt = QKV_DTYPE_Q4_0; return QKV_OK;
    }
    return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "opts.%s: %d is not a qkv_kv_format", name, (int)f);
}

/* A side of format f for rows of `width` values: its dtype and row bytes. */
static qkv_status side_init(side *s, qkv_kv_format f, const char *name, int64_t width,
                            const char *dim)
{
    QKV_TRY(format_dtype(f, name, &s->dt));
    s->width = width;
    if (qkv_block_dtype(s->dt)) {
        if (width % QKV_QBLOCK != 0)
            return qkv_fail(QKV_ERR_SHAPE,
                            "opts.%s: %s's rows are blocks of %d values, and the layer's %s %lld "
                            "is not a multiple of %d", name, qkv_dtype_name(s->dt), QKV_QBLOCK, dim,
                            (long long)width, QKV_QBLOCK);
        s->row_bytes = width / QKV_QBLOCK * qkv_block_bytes(s->dt);
    } else {
        s->row_bytes = width * (int64_t)qkv_dtype_size(s->dt);
    }
    return QKV_OK;
}

qkv_status qkv_kv_cache_create(qkv_kv_cache **out, const qkv_mha *m, int64_t batch,
                               int64_t max_len)
{
    return qkv_kv_cache_create_with(out, m, batch, max_len, NULL);
}

qkv_status qkv_kv_cache_create_with(qkv_kv_cache **out, const qkv_mha *m, int64_t batch,
                                    int64_t max_len, const qkv_kv_cache_options *opts)
{
    qkv_clear_error();
    if (!out) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "out: is NULL");
    *out = NULL;
    qkv_kv_cache_options o;
    QKV_TRY(qkv_struct_read(opts, &o, sizeof o, "opts", "qkv_kv_cache_options"));
    if (!m) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "m: is NULL");
    const qkv_mha_config *cfg = &m->cfg;
    side ks, vs;
    QKV_TRY(side_init(&ks, o.k_format, "k_format", cfg->head_dim, "head_dim"));
    QKV_TRY(side_init(&vs, o.v_format, "v_format", cfg->v_head_dim, "v_head_dim"));
    /* The attention takes K and V in Q's float dtype or a block format. */
    if (!qkv_block_dtype(ks.dt) && !qkv_block_dtype(vs.dt) && ks.dt != vs.dt)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "opts.v_format: %s differs from k_format %s; two float formats of a "
                        "cache must be one (a decode step's attention takes one float dtype "
                        "beside q8_0 and q4_0)", qkv_dtype_name(vs.dt), qkv_dtype_name(ks.dt));
    if (batch < 1) return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "batch: %lld is not >= 1", (long long)batch);
    if (max_len < 1)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "max_len: %lld is not >= 1", (long long)max_len);
    if (o.rolling ? o.sinks < 0 || o.sinks >= max_len : o.sinks != 0)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        o.rolling ? "opts.sinks: %lld is not in 0 .. max_len - 1 = %lld"
                                  : "opts.sinks: %lld, but sinks are a rolling cache's (opts.rolling 0)",
                        (long long)o.sinks, (long long)max_len - 1);
    int64_t rows, nk, nv, total;
    if (!qkv_mul_ok(batch, cfg->kv_heads, &rows) || !qkv_mul_ok(rows, max_len, &rows) ||
        !qkv_mul_ok(rows, ks.row_bytes, &nk) || !qkv_mul_ok(rows, vs.row_bytes, &nv) ||
        !qkv_add_ok(nk, nv, &total) || (uint64_t)total > SIZE_MAX / 2)
        return qkv_fail(QKV_ERR_OVERFLOW, "max_len: a cache of %lld x %lld tokens overflows",
                        (long long)batch, (long long)max_len);
    qkv_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "cache: out of memory");
    c->batch = batch;
    c->max_len = max_len;
    c->kv_heads = cfg->kv_heads;
    c->head_dim = cfg->head_dim;
    c->v_head_dim = cfg->v_head_dim;
    c->k = ks;
    c->v = vs;
    c->rolling = o.rolling != 0;
    c->sinks = o.sinks;
    c->qdt = !qkv_block_dtype(ks.dt) ? ks.dt : !qkv_block_dtype(vs.dt) ? vs.dt : QKV_DTYPE_F32;
    c->len = calloc((size_t)batch, sizeof *c->len);
    /* Not zeroed: a position is read only once a step has written it. On
     * huge pages where the OS gives them: decode streams the whole cache. */
    c->k.data = qkv_alloc((size_t)nk);
    c->v.data = qkv_alloc((size_t)nv);
    if (!c->len || !c->k.data || !c->v.data) {
        qkv_kv_cache_free(c);
        return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "cache: %lld bytes do not fit in memory",
                        (long long)total);
    }
    c->bytes = sizeof *c + (size_t)batch * sizeof *c->len + (size_t)total;
    *out = c;
    return QKV_OK;
}

void qkv_kv_cache_free(qkv_kv_cache *c)
{
    if (!c) return;
    free(c->len);
    qkv_free(c->k.data);
    qkv_free(c->v.data);
    free(c);
}

qkv_dtype qkv_kv_cache_query_dtype(const qkv_kv_cache *c) { return c->qdt; }

int64_t qkv_kv_cache_length(const qkv_kv_cache *c, int64_t b)
{
    return c && b >= 0 && b < c->batch ? c->len[b] : -1;
}

static qkv_status check_sequence(const qkv_kv_cache *c, int64_t b)
{
    if (!c) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "c: is NULL");
    if (b < 0 || b >= c->batch)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "b: %lld is not a sequence of the cache (0..%lld)",
                        (long long)b, (long long)c->batch - 1);
    return QKV_OK;
}

/* A row of floats into row r of a side, in its format (rounded once for a
 * 16-bit one, quantized for a block one). Returns the blocks of finite
 * values too large for a block format (stored as NaN: quant.h). */
static int64_t store_row(const side *s, int64_t r, const float *src)
{
    char *dst = row_at(s, r);
    if (qkv_block_dtype(s->dt))
        return qkv_block_quantize(s->dt, (unsigned char *)dst, src, s->width / QKV_QBLOCK);
    if (s->dt == QKV_DTYPE_F32)
        memcpy(dst, src, (size_t)s->width * sizeof(float));
    else
        for (int64_t x = 0; x < s->width; x++) qkv_elem_put(dst, s->dt, x, src[x]);
    return 0;
}

/* The error for kbad / vbad blocks too large for the cache's formats. */
static qkv_status unfit_error(const qkv_kv_cache *c, int64_t kbad, int64_t vbad)
{
    const qkv_dtype dt = kbad ? c->k.dt : c->v.dt;
    return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                    "%s: %lld blocks of 32 hold values too large for the cache's %s (|x| up "
                    "to about %g); nothing was added", kbad ? "k" : "v",
                    (long long)(kbad ? kbad : vbad), qkv_dtype_name(dt), qkv_block_limit(dt));
}

/* Whether `rows` rows of k (E values each) and of v (Ev) fit the cache's
 * formats, checked before anything is written: how a store that replaces
 * rows the cache holds (a rolling cache's, once full) is refused whole. */
static qkv_status check_fit(const qkv_kv_cache *c, const float *k, const float *v, int64_t rows)
{
    const int64_t kbad = qkv_block_dtype(c->k.dt)
                             ? qkv_block_unfit(c->k.dt, k, rows * c->head_dim / QKV_QBLOCK, NULL)
                             : 0;
    const int64_t vbad = qkv_block_dtype(c->v.dt)
                             ? qkv_block_unfit(c->v.dt, v, rows * c->v_head_dim / QKV_QBLOCK, NULL)
                             : 0;
    return kbad || vbad ? unfit_error(c, kbad, vbad) : QKV_OK;
}

/* Copies n tokens' rows k (n, Hkv, E) and v (n, Hkv, Ev) into sequence b
 * from position pos on. QKV_ERR_INVALID_ARGUMENT when a block format
 * cannot hold a value (the detail names k or v): harmless to what the
 * cache holds when the rows are past the sequence's length; a store that
 * replaces held rows (a full rolling cache) is checked first (check_fit). */
static qkv_status store_tokens(qkv_kv_cache *c, int64_t b, int64_t pos, const float *k,
                               const float *v, int64_t n)
{
    const int64_t Hkv = c->kv_heads, E = c->head_dim, Ev = c->v_head_dim, L = c->max_len;
    int64_t kbad = 0, vbad = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t g = 0; g < Hkv; g++) {
            const int64_t r = (b * Hkv + g) * L + slot(c, pos + t);
            kbad += store_row(&c->k, r, k + (t * Hkv + g) * E);
            vbad += store_row(&c->v, r, v + (t * Hkv + g) * Ev);
        }
    return kbad || vbad ? unfit_error(c, kbad, vbad) : QKV_OK;
}

qkv_status qkv_kv_cache_truncate(qkv_kv_cache *c, int64_t b, int64_t len)
{
    qkv_clear_error();
    QKV_TRY(check_sequence(c, b));
    if (len < 0 || len > c->len[b])
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "len: %lld is not between 0 and sequence %lld's length %lld",
                        (long long)len, (long long)b, (long long)c->len[b]);
    /* A rolling cache that has let tokens go cannot take them back. */
    if (c->rolling && c->len[b] > c->max_len && len != 0)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "len: %lld; sequence %lld's rolling cache has let tokens before its "
                        "last %lld go, so it truncates only to 0",
                        (long long)len, (long long)b, (long long)(c->max_len - c->sinks));
    c->len[b] = len;
    return QKV_OK;
}

size_t qkv_kv_cache_bytes(const qkv_kv_cache *c)
{
    return c ? c->bytes : 0;
}

qkv_status qkv_kv_cache_append(qkv_kv_cache *c, int64_t b, const float *k, const float *v,
                               int64_t n)
{
    qkv_clear_error();
    QKV_TRY(check_sequence(c, b));
    if (n < 0) return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "n: %lld is negative", (long long)n);
    if (!c->rolling && n > c->max_len - c->len[b])
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "n: %lld tokens would take sequence %lld past the cache's max_len %lld "
                        "(it holds %lld)",
                        (long long)n, (long long)b, (long long)c->max_len, (long long)c->len[b]);
    if (n > 0 && !k) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "k: is NULL");
    if (n > 0 && !v) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "v: is NULL");
    /* k and v may come from the cache itself (another sequence's view, to
     * fork it), but not from the bytes they are copied to: sequence b's
     * rows from position len on, in its first kv head, to len + n in its
     * last (a run inside sequence b's block). */
    const int64_t Hkv = c->kv_heads, L = c->max_len;
    /* A rolling cache may write any of the sequence's rows. */
    const int64_t first = b * Hkv * L + (c->rolling ? 0 : c->len[b]);
    const int64_t span = c->rolling ? Hkv * L : (Hkv - 1) * L + n;
    const qkv_byte_range outs[2] = {
        qkv_range("the cache's keys", row_at(&c->k, first), n > 0 ? span * c->k.row_bytes : 0, 1),
        qkv_range("the cache's values", row_at(&c->v, first), n > 0 ? span * c->v.row_bytes : 0, 1)};
    const qkv_byte_range ins[2] = {qkv_range("k", k, n * Hkv * c->head_dim, sizeof(float)),
                                   qkv_range("v", v, n * Hkv * c->v_head_dim, sizeof(float))};
    QKV_TRY(qkv_check_buffers(outs, 2, ins, 2, sizeof(float)));
    if (c->rolling && c->len[b] + n > L) QKV_TRY(check_fit(c, k, v, n * Hkv));
    QKV_TRY(store_tokens(c, b, c->len[b], k, v, n));
    c->len[b] += n;
    return QKV_OK;
}

qkv_status qkv_kv_cache_view(qkv_kv_cache *c, int64_t b, qkv_tensor *k, qkv_tensor *v)
{
    qkv_clear_error();
    QKV_TRY(check_sequence(c, b));
    const int64_t Hkv = c->kv_heads, E = c->head_dim, Ev = c->v_head_dim, L = c->max_len;
    if (k) {
        qkv_tensor t = {row_at(&c->k, b * Hkv * L), c->k.dt, {1, Hkv, kept(c, b), E},
                        {Hkv * L * E, L * E, E, 1}};
        *k = t;
    }
    if (v) {
        qkv_tensor t = {row_at(&c->v, b * Hkv * L), c->v.dt, {1, Hkv, kept(c, b), Ev},
                        {Hkv * L * Ev, L * Ev, Ev, 1}};
        *v = t;
    }
    return QKV_OK;
}

/* A rolling cache's step, token by token: token t of every sequence is
 * stored (taking the oldest row past the sinks once the cache is full),
 * then its query attends to every row the sequence holds, which are its
 * sinks and its last max_len - sinks tokens, in whatever order the rows
 * hold them (attention does not depend on it; the keys carry their
 * positions through RoPE). q (B, n, H, E) in tq's dtype, k and v the
 * step's rows, a (B, n, H, Ev) out, weights (B, H, n, max_len) per row. A
 * row the rolling refused leaves the cache as it was; the lengths move
 * once every token is in. */
static qkv_status rolling_steps(qkv_context *ctx, qkv_kv_cache *c, const qkv_tensor *tq,
                                const float *k, const float *v, float *a, float *weights,
                                int64_t n, const qkv_attention_options *opts)
{
    const int64_t B = c->batch, H = tq->shape[1], Hkv = c->kv_heads, E = c->head_dim,
                  Ev = c->v_head_dim, L = c->max_len;
    int64_t *held = malloc((size_t)B * sizeof *held);
    if (!held) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "decode: buffers do not fit in memory");
    if (weights) memset(weights, 0, (size_t)(B * H * n * L) * sizeof *weights);
    qkv_attention_options o = *opts;
    o.causal = 0; /* every held row is before the query or is its own */
    o.q_offsets = NULL;
    o.kv_lens = held;
    /* Every row of the step checked before the first is stored: the rows
     * it will replace are the cache's. The lengths (c->len) move only
     * after the step. */
    qkv_status st = check_fit(c, k, v, B * n * Hkv);
    for (int64_t t = 0; t < n && st == QKV_OK; t++) {
        int64_t most = 0;
        for (int64_t b = 0; b < B && st == QKV_OK; b++) {
            st = store_tokens(c, b, c->len[b] + t, k + (b * n + t) * Hkv * E,
                              v + (b * n + t) * Hkv * Ev, 1);
            const int64_t seen = c->len[b] + t + 1;
            held[b] = seen < L ? seen : L;
            most = held[b] > most ? held[b] : most;
        }
        if (st != QKV_OK) break;
        const size_t qs = tq->dtype == QKV_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
        qkv_tensor q1 = *tq, a1 = qkv_mha_heads_view(a, B, n, H, Ev);
        q1.data = (char *)tq->data + (size_t)(t * H * E) * qs;
        q1.shape[2] = 1;
        a1.data = a + t * H * Ev;
        a1.shape[2] = 1;
        const qkv_tensor tk = {c->k.data, c->k.dt, {B, Hkv, most, E}, {Hkv * L * E, L * E, E, 1}};
        const qkv_tensor tv = {c->v.data, c->v.dt, {B, Hkv, most, Ev}, {Hkv * L * Ev, L * Ev, Ev, 1}};
        const qkv_tensor tw = {weights ? weights + t * L : NULL, QKV_DTYPE_F32, {B, H, 1, most},
                               {H * n * L, n * L, L, 1}};
        st = qkv_attention_forward(ctx, &a1, weights ? &tw : NULL, NULL, &q1, &tk, &tv, &o);
    }
    free(held);
    return st;
}

/* Checks a decode call; *lmax receives the longest sequence before it. */
static qkv_status check_decode(const qkv_mha *m, const qkv_kv_cache *c, const float *y,
                               const float *x, int64_t n, const qkv_attention_options *opts,
                               int64_t *lmax)
{
    if (!m) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "m: is NULL");
    if (!c) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "c: is NULL");
    if (!x) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "x: is NULL");
    if (!y) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "y: is NULL");
    const qkv_mha_config *cfg = &m->cfg;
    if (c->kv_heads != cfg->kv_heads || c->head_dim != cfg->head_dim ||
        c->v_head_dim != cfg->v_head_dim)
        return qkv_fail(QKV_ERR_SHAPE,
                        "c: made for kv_heads %lld, head_dim %lld, v_head_dim %lld; the layer "
                        "has %lld, %lld, %lld",
                        (long long)c->kv_heads, (long long)c->head_dim,
                        (long long)c->v_head_dim, (long long)cfg->kv_heads,
                        (long long)cfg->head_dim, (long long)cfg->v_head_dim);
    if (cfg->d_context != cfg->d_model)
        return qkv_fail(QKV_ERR_SHAPE,
                        "m: decode is self-attention, but d_context = %lld differs from "
                        "d_model = %lld",
                        (long long)cfg->d_context, (long long)cfg->d_model);
    if (n < 1) return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "n: %lld is not >= 1", (long long)n);
    if (opts && opts->mask.data)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "opts.mask: decode takes no mask (the cache knows the lengths)");
    if (opts && opts->kv_lens)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "opts.kv_lens: decode takes no kv_lens (the cache knows the lengths)");
    if (opts && (opts->q_offsets || opts->k_offsets))
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "opts.%s: decode takes no positions (the cache "
                        "knows them)", opts->q_offsets ? "q_offsets" : "k_offsets");
    if (opts && opts->use_window && c->rolling)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "opts.use_window: a rolling cache is its own window (its sinks and "
                        "last max_len - sinks tokens)");
    *lmax = 0;
    for (int64_t b = 0; b < c->batch; b++) {
        if (!c->rolling && n > c->max_len - c->len[b])
            return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                            "n: %lld new tokens would take sequence %lld past the cache's "
                            "max_len %lld (it holds %lld)",
                            (long long)n, (long long)b, (long long)c->max_len,
                            (long long)c->len[b]);
        if (c->len[b] > *lmax) *lmax = c->len[b];
    }
    int64_t t;
    /* The widths' sum fits: qkv_mha_create bounded the parameters. */
    const int64_t width = cfg->d_model + cfg->heads * (cfg->head_dim + cfg->v_head_dim) +
                          cfg->kv_heads * (cfg->head_dim + cfg->v_head_dim);
    if (!qkv_mul_ok(c->batch, n, &t) || !qkv_mul_ok(t, width, &t) ||
        !qkv_mul_ok(c->batch, cfg->heads, &t) || !qkv_mul_ok(t, n, &t) ||
        !qkv_mul_ok(t, *lmax + n, &t))
        return qkv_fail(QKV_ERR_OVERFLOW, "n: %lld new tokens overflow the step's buffers",
                        (long long)n);
    return QKV_OK;
}

qkv_status qkv_mha_decode(qkv_context *ctx, const qkv_mha *m, qkv_kv_cache *c, float *y,
                          float *weights, const float *x, int64_t n,
                          const qkv_attention_options *opts)
{
    qkv_clear_error();
    int64_t lmax = 0;
    qkv_attention_options o;
    QKV_TRY(qkv_options_read(opts, &o));
    QKV_TRY(check_decode(m, c, y, x, n, &o, &lmax));
    qkv_status st = QKV_OK;
    const qkv_mha_config *cfg = &m->cfg;
    /* The weights' last dim: positions up to the longest sequence, or a
     * rolling cache's rows. */
    const int64_t B = c->batch, H = cfg->heads, Hkv = cfg->kv_heads, E = cfg->head_dim,
                  Ev = cfg->v_head_dim, D = cfg->d_model, L = c->max_len,
                  Lw = c->rolling ? L : lmax + n;
    const int64_t nq = B * n * H * E, nk = B * n * Hkv * E, nv = B * n * Hkv * Ev,
                  na = B * n * H * Ev;
    if (!qkv_floats_fit(4, (int64_t[]){nq, nk, nv, na}))
        return qkv_fail(QKV_ERR_OVERFLOW, "n: %lld new tokens need more memory than exists",
                        (long long)n);
    /* The whole cache is read and written, so it counts as an output. */
    const qkv_byte_range outs[4] = {
        qkv_range("y", y, B * n * D, sizeof(float)),
        qkv_range("weights", weights, B * H * n * Lw, sizeof(float)),
        qkv_range("the cache's keys", c->k.data, B * Hkv * L * c->k.row_bytes, 1),
        qkv_range("the cache's values", c->v.data, B * Hkv * L * c->v.row_bytes, 1)};
    const qkv_byte_range ins[2] = {
        qkv_range("x", x, B * n * D, sizeof(float)),
        qkv_mha_param_range("the layer's parameters", m)};
    QKV_TRY(qkv_check_buffers(outs, 4, ins, 2, sizeof(float)));
    float *block = malloc((size_t)(nq + nk + nv + na + 1) * sizeof(float));
    int64_t *pos = malloc((size_t)(2 * B) * sizeof(int64_t));
    /* A 16-bit cache: the attention takes its queries in the cache's dtype. */
    uint16_t *q16 = c->qdt == QKV_DTYPE_F32 ? NULL : malloc((size_t)(nq + 1) * sizeof *q16);
    if (!block || !pos || (c->qdt != QKV_DTYPE_F32 && !q16)) {
        free(block);
        free(pos);
        free(q16);
        return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "decode: buffers do not fit in memory");
    }
    float *q = block, *k = q + nq, *v = k + nk, *a = v + nv;

    /* Every sequence in one attention call over the longest one's keys:
     * sequence b's new tokens sit at positions len_b .. len_b + n - 1 and
     * see its len_b + n cached keys, the rest being padding. */
    int64_t *q_pos = pos, *k_len = pos + B;
    for (int64_t b = 0; b < B; b++) {
        q_pos[b] = c->len[b];
        k_len[b] = c->len[b] + n;
    }
    o.causal = 1;
    o.align = QKV_ALIGN_TOP_LEFT;
    o.q_offsets = q_pos;
    o.kv_lens = k_len;

    st = qkv_mha_linear(ctx, q, x, B * n, m->param[QKV_MHA_WQ], m->dtype[QKV_MHA_WQ], H * E, D,
                        m->param[QKV_MHA_BQ]);
    if (st == QKV_OK)
        st = qkv_mha_linear(ctx, k, x, B * n, m->param[QKV_MHA_WK], m->dtype[QKV_MHA_WK], Hkv * E,
                            D, m->param[QKV_MHA_BK]);
    if (st == QKV_OK)
        st = qkv_mha_linear(ctx, v, x, B * n, m->param[QKV_MHA_WV], m->dtype[QKV_MHA_WV], Hkv * Ev,
                            D, m->param[QKV_MHA_BV]);
    for (int64_t b = 0; b < B && st == QKV_OK; b++) {
        st = qkv_rope_apply(cfg, q + b * n * H * E, n, H * E, H, c->len[b], 0);
        if (st == QKV_OK)
            st = qkv_rope_apply(cfg, k + b * n * Hkv * E, n, Hkv * E, Hkv, c->len[b], 0);
    }
    if (st == QKV_OK && !c->rolling) {
        /* Append the new tokens past each sequence's end; lengths move
         * only once the whole step has succeeded. */
        for (int64_t b = 0; b < B && st == QKV_OK; b++)
            st = store_tokens(c, b, c->len[b], k + b * n * Hkv * E, v + b * n * Hkv * Ev, n);
    }
    qkv_tensor tq = qkv_mha_heads_view(q, B, n, H, E);
    if (st == QKV_OK && q16) { /* the same layout in the cache's dtype */
        for (int64_t e = 0; e < nq; e++) qkv_elem_put(q16, c->qdt, e, q[e]);
        tq.data = q16;
        tq.dtype = c->qdt;
    }
    if (st == QKV_OK && c->rolling) {
        st = rolling_steps(ctx, c, &tq, k, v, a, weights, n, &o);
    } else if (st == QKV_OK) {
        qkv_tensor ta = qkv_mha_heads_view(a, B, n, H, Ev);
        qkv_tensor tk = {c->k.data, c->k.dt, {B, Hkv, Lw, E}, {Hkv * L * E, L * E, E, 1}};
        qkv_tensor tv = {c->v.data, c->v.dt, {B, Hkv, Lw, Ev}, {Hkv * L * Ev, L * Ev, Ev, 1}};
        qkv_tensor tw = qkv_tensor_contiguous(weights, QKV_DTYPE_F32, B, H, n, Lw);
        st = qkv_attention_forward(ctx, &ta, weights ? &tw : NULL, NULL, &tq, &tk, &tv, &o);
    }
    if (st == QKV_OK)
        st = qkv_mha_linear(ctx, y, a, B * n, m->param[QKV_MHA_WO], m->dtype[QKV_MHA_WO], D, H * Ev,
                            m->param[QKV_MHA_BO]);
    if (st == QKV_OK)
        for (int64_t b = 0; b < B; b++) c->len[b] += n;
    free(block);
    free(pos);
    free(q16);
    return st;
}
