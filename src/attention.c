/* qkv_attention_forward and _backward: check every argument once, resolve
 * the options into a problem (backend.h) and hand it to the backend that
 * qkv_backend_choose picks. The error details name the argument as the
 * header does (Q, K, V, O, weights, lse, mask, ...). */
#include "backend.h"

#include "common.h"
#include "context.h"
#include "threads.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Dims must be non-negative, the furthest element's offset must fit in
 * int64_t bytes, and data may be NULL only for an empty tensor. */
/* A view in a block format (qkv.h): values contiguous along rows that
 * start at blocks, strides not negative. Its strides count values, which
 * check_view bounds as elements of 1 byte (a block is at least 18 bytes
 * for 32 values). */
static qkv_status check_block_view(const char *name, const qkv_tensor *t)
{
    const char *fmt = qkv_dtype_name(t->dtype);
    if (t->shape[3] % QKV_QBLOCK != 0)
        return qkv_fail(QKV_ERR_SHAPE, "%s: last dim %lld is not a multiple of %s's blocks of %d",
                        name, (long long)t->shape[3], fmt, QKV_QBLOCK);
    if (t->stride[3] != 1 && t->shape[3] > 1)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "%s: stride 3 is %lld; a %s view's values are contiguous along its rows",
                        name, (long long)t->stride[3], fmt);
    for (int d = 0; d < 3; d++)
        if (t->stride[d] < 0 || t->stride[d] % QKV_QBLOCK != 0)
            return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                            "%s: stride %d is %lld, expected a non-negative multiple of %d (%s "
                            "rows start at a block)", name, d, (long long)t->stride[d], QKV_QBLOCK,
                            fmt);
    return QKV_OK;
}

static qkv_status check_view(const char *name, const qkv_tensor *t, int64_t *numel)
{
    const int block = qkv_block_dtype(t->dtype);
    size_t es = block ? 1 : qkv_dtype_size(t->dtype);
    if (es == 0) return qkv_fail(QKV_ERR_DTYPE, "%s: dtype %d is not a qkv_dtype", name, (int)t->dtype);
    int64_t n = 1, reach = 0;
    for (int d = 0; d < 4; d++) {
        if (t->shape[d] < 0)
            return qkv_fail(QKV_ERR_SHAPE, "%s: dim %d is negative (%lld)", name, d,
                            (long long)t->shape[d]);
        if (!qkv_mul_ok(n, t->shape[d], &n))
            return qkv_fail(QKV_ERR_OVERFLOW, "%s: element count overflows int64", name);
    }
    if (n == 0) {
        *numel = 0;
        return QKV_OK;
    }
    for (int d = 0; d < 4; d++) {
        int64_t st = t->stride[d], span;
        if (st == INT64_MIN || !qkv_mul_ok(st < 0 ? -st : st, t->shape[d] - 1, &span) ||
            !qkv_add_ok(reach, span, &reach))
            return qkv_fail(QKV_ERR_OVERFLOW, "%s: stride %d reaches past int64 offsets", name, d);
    }
    if (!qkv_mul_ok(reach, (int64_t)es, &reach))
        return qkv_fail(QKV_ERR_OVERFLOW, "%s: strides reach past int64 byte offsets", name);
    if (!t->data) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "%s: data is NULL", name);
    if (block) QKV_TRY(check_block_view(name, t));
    QKV_TRY(qkv_check_aligned(name, t->data, block ? 2 : es));
    *numel = n;
    return QKV_OK;
}

/* The bytes a view reaches; empty for a view with no elements.
 * check_view has bounded every offset. When its strides are positive and
 * its innermost dims contiguous (after merging them: a block of `block`
 * elements) with every other stride a multiple of the next one, P, it
 * reaches only those blocks, P elements apart: block and period say so. */
static qkv_byte_range view_range(const char *name, const qkv_tensor *t)
{
    qkv_byte_range r = {name, 0, 0, 0, 0};
    if (!t || !t->data) return r;
    int64_t first = 0, last = 0;
    for (int d = 0; d < 4; d++) {
        if (t->shape[d] == 0) return r;
        const int64_t span = t->stride[d] * (t->shape[d] - 1);
        if (span < 0) first += span;
        else last += span;
    }
    if (qkv_block_dtype(t->dtype)) { /* strides >= 0: blocks from data to the last one's end */
        r.lo = (uintptr_t)t->data;
        r.hi = r.lo + (uintptr_t)((last / QKV_QBLOCK + 1) * qkv_block_bytes(t->dtype));
        return r;
    }
    const int64_t es = (int64_t)qkv_dtype_size(t->dtype);
    r.lo = (uintptr_t)t->data + (uintptr_t)(first * es); /* wraps as pointer arithmetic would */
    r.hi = (uintptr_t)t->data + (uintptr_t)((last + 1) * es);

    int idx[4], n = 0; /* the dims of more than one element, by stride */
    for (int d = 0; d < 4; d++) {
        if (t->shape[d] < 2) continue;
        if (t->stride[d] <= 0) return r;
        int at = n++;
        while (at > 0 && t->stride[idx[at - 1]] > t->stride[d]) {
            idx[at] = idx[at - 1];
            at--;
        }
        idx[at] = d;
    }
    if (n == 0 || t->stride[idx[0]] != 1) return r;
    int64_t block = 1;
    int k = 0;
    while (k < n && t->stride[idx[k]] == block) block *= t->shape[idx[k++]];
    if (k == n) return r; /* one solid block: the range says it all */
    const int64_t period = t->stride[idx[k]];
    for (int j = k; j < n; j++)
        if (t->stride[idx[j]] % period != 0) return r;
    r.block = (uintptr_t)(block * es); /* block <= period: no self-overlap was checked */
    r.period = (uintptr_t)(period * es);
    return r;
}

/* An output must not map two indices to one element: sorted by stride,
 * each dim's stride must step over everything the smaller dims span. */
static qkv_status check_no_self_overlap(const char *name, const qkv_tensor *t)
{
    int idx[4] = {0, 1, 2, 3};
    for (int a = 1; a < 4; a++) /* insertion sort by |stride| */
        for (int b = a; b > 0; b--) {
            int64_t x = llabs(t->stride[idx[b - 1]]), y = llabs(t->stride[idx[b]]);
            if (x <= y) break;
            int tmp = idx[b];
            idx[b] = idx[b - 1];
            idx[b - 1] = tmp;
        }
    int64_t span = 0; /* largest offset reachable by the dims seen so far */
    for (int a = 0; a < 4; a++) {
        int d = idx[a];
        if (t->shape[d] <= 1) continue;
        int64_t st = llabs(t->stride[d]);
        if (st <= span)
            return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                            "%s: strides make elements overlap (dim %d stride %lld); "
                            "an output needs distinct elements", name, d, (long long)t->stride[d]);
        span += st * (t->shape[d] - 1); /* cannot overflow: check_view bounded it */
    }
    return QKV_OK;
}

static qkv_status check_shape(const char *name, const qkv_tensor *t, int64_t n0, int64_t n1,
                              int64_t n2, int64_t n3, const char *dims)
{
    if (t->shape[0] != n0 || t->shape[1] != n1 || t->shape[2] != n2 || t->shape[3] != n3)
        return qkv_fail(QKV_ERR_SHAPE,
                        "%s: shape (%lld, %lld, %lld, %lld), expected %s = (%lld, %lld, %lld, %lld)",
                        name, (long long)t->shape[0], (long long)t->shape[1],
                        (long long)t->shape[2], (long long)t->shape[3], dims, (long long)n0,
                        (long long)n1, (long long)n2, (long long)n3);
    return QKV_OK;
}

/* The dtype rules of qkv.h's table: Q, K and V share one float dtype,
 * the call's input dtype `in` (F32, F16 or BF16); O, weights, dO, dQ, dK
 * and dV are `in` or F32, and so are a float mask and dmask; lse (and the
 * merge's tensors) are F32, which `in` == F32 says. */
static qkv_status check_dtype(const char *name, const qkv_tensor *t, qkv_dtype in)
{
    if (t->dtype == QKV_DTYPE_F32 || t->dtype == in) return QKV_OK;
    if (in == QKV_DTYPE_F32)
        return qkv_fail(QKV_ERR_DTYPE, "%s: dtype %s, expected f32", name, qkv_dtype_name(t->dtype));
    return qkv_fail(QKV_ERR_DTYPE, "%s: dtype %s, expected %s (the inputs' dtype) or f32", name,
                    qkv_dtype_name(t->dtype), qkv_dtype_name(in));
}

/* Q, K and V: one float dtype, or K and V each in a block format (the
 * forward only: `blocks`). The detail names the odd one out. */
static qkv_status check_input_dtypes(const qkv_tensor *q, const qkv_tensor *k,
                                     const qkv_tensor *v, int blocks)
{
    const qkv_tensor *t[3] = {q, k, v};
    const char *name[3] = {"Q", "K", "V"};
    for (int x = 0; x < 3; x++) {
        if (x > 0 && qkv_block_dtype(t[x]->dtype)) {
            if (blocks) continue;
            return qkv_fail(QKV_ERR_DTYPE,
                            "%s: dtype %s; the backward takes f32, f16 or bf16 (the block "
                            "formats are for a forward's K and V)", name[x],
                            qkv_dtype_name(t[x]->dtype));
        }
        if (!qkv_float_dtype(t[x]->dtype))
            return qkv_fail(QKV_ERR_DTYPE, "%s: dtype %s, expected f32, f16 or bf16%s", name[x],
                            qkv_dtype_name(t[x]->dtype), x > 0 ? ", or q8_0 or q4_0" : "");
    }
    /* A block-format K or V stands beside Q of any float dtype; the
     * float ones among K and V still share Q's. */
    const int kb = qkv_block_dtype(k->dtype), vb = qkv_block_dtype(v->dtype);
    if ((kb || q->dtype == k->dtype) && (vb || q->dtype == v->dtype)) return QKV_OK;
    if (kb || vb) {
        const int odd = kb ? 2 : 1;
        return qkv_fail(QKV_ERR_DTYPE, "%s: dtype %s, expected %s as Q has (or q8_0 or q4_0)",
                        name[odd], qkv_dtype_name(t[odd]->dtype), qkv_dtype_name(q->dtype));
    }
    if (q->dtype == k->dtype && q->dtype == v->dtype) return QKV_OK;
    const int odd = k->dtype == v->dtype ? 0 : q->dtype == k->dtype ? 2 : 1;
    const int other = odd == 0 ? 1 : 0;
    return qkv_fail(QKV_ERR_DTYPE, "%s: dtype %s, expected %s as %s has (Q, K and V share one dtype)",
                    name[odd], qkv_dtype_name(t[odd]->dtype), qkv_dtype_name(t[other]->dtype),
                    name[other]);
}

static qkv_status check_output(const char *name, const qkv_tensor *t, qkv_dtype in, int64_t n0,
                               int64_t n1, int64_t n2, int64_t n3, const char *dims)
{
    int64_t n;
    QKV_TRY(check_dtype(name, t, in));
    QKV_TRY(check_view(name, t, &n));
    QKV_TRY(check_shape(name, t, n0, n1, n2, n3, dims));
    return n ? check_no_self_overlap(name, t) : QKV_OK; /* nothing to write */
}

/* Broadcast dims of the mask get stride 0, so kernels index it as if it
 * were (B, H, Lq, Lk). */
static qkv_status resolve_mask(const qkv_tensor *m, qkv_dtype in, const int64_t full[4],
                               qkv_tensor *out)
{
    static const char *dimname[4] = {"B", "H", "Lq", "Lk"};
    int64_t n;
    if (m->dtype != QKV_DTYPE_F32 && m->dtype != QKV_DTYPE_BOOL && m->dtype != in)
        return qkv_fail(QKV_ERR_DTYPE, "mask: dtype %s, expected f32%s%s (additive) or bool",
                        qkv_dtype_name(m->dtype), in == QKV_DTYPE_F32 ? "" : " or ",
                        in == QKV_DTYPE_F32 ? "" : qkv_dtype_name(in));
    QKV_TRY(check_view("mask", m, &n));
    *out = *m;
    for (int d = 0; d < 4; d++) {
        if (m->shape[d] == full[d]) continue;
        if (m->shape[d] != 1)
            return qkv_fail(QKV_ERR_SHAPE,
                            "mask: dim %d is %lld, expected 1 or %s = %lld", d,
                            (long long)m->shape[d], dimname[d], (long long)full[d]);
        out->shape[d] = full[d];
        out->stride[d] = 0;
    }
    return QKV_OK;
}

qkv_status qkv_options_read(const qkv_attention_options *opts, qkv_attention_options *out)
{
    return qkv_struct_read(opts, out, sizeof *out, "opts", "qkv_attention_options");
}

/* The most a position may be: with Lq and Lk below 2^61 (their tensors'
 * byte offsets fit int64_t), d_i stays within +-2^62. */
#define MAX_POSITION (INT64_C(1) << 60)

/* Per-batch positions: NULL, or B aligned entries in 0 .. MAX_POSITION. */
static qkv_status resolve_positions(const char *name, const int64_t *pos, int64_t B,
                                    const int64_t **out)
{
    *out = NULL;
    if (!pos) return QKV_OK;
    QKV_TRY(qkv_check_aligned(name, pos, sizeof *pos));
    for (int64_t b = 0; b < B; b++)
        if (pos[b] < 0 || pos[b] > MAX_POSITION)
            return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "%s[%lld]: %lld is outside 0..2^60", name,
                            (long long)b, (long long)pos[b]);
    *out = pos;
    return QKV_OK;
}

/* Q, K, V and the options, checked and resolved into p (outputs not yet:
 * the forward and the backward each check their own). `mask` is storage
 * for the broadcast-resolved mask view that p->mask points to; `blocks`
 * says whether K and V may be in a block format (the forward). */
static qkv_status resolve_inputs(const qkv_tensor *q, const qkv_tensor *k, const qkv_tensor *v,
                                 const qkv_attention_options *opts, const qkv_context *cx,
                                 int blocks, qkv_fwd_problem *p, qkv_tensor *mask)
{
    if (!q) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "Q: NULL tensor");
    if (!k) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "K: NULL tensor");
    if (!v) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "V: NULL tensor");
    int64_t n;
    QKV_TRY(check_input_dtypes(q, k, v, blocks));
    QKV_TRY(check_view("Q", q, &n));
    QKV_TRY(check_view("K", k, &n));
    QKV_TRY(check_view("V", v, &n));

    memset(p, 0, sizeof *p);
    p->B = q->shape[0];
    p->H = q->shape[1];
    p->Lq = q->shape[2];
    p->E = q->shape[3];
    p->Hkv = k->shape[1];
    p->Lk = k->shape[2];
    p->Ev = v->shape[3];
    if (p->E < 1) return qkv_fail(QKV_ERR_SHAPE, "Q: head dim E is 0, expected at least 1");
    if (k->shape[0] != p->B)
        return qkv_fail(QKV_ERR_SHAPE, "K: batch %lld differs from Q batch %lld",
                        (long long)k->shape[0], (long long)p->B);
    if (k->shape[3] != p->E)
        return qkv_fail(QKV_ERR_SHAPE, "K: head dim %lld differs from Q head dim %lld",
                        (long long)k->shape[3], (long long)p->E);
    if (p->Hkv == 0 ? p->H != 0 : p->H % p->Hkv != 0)
        return qkv_fail(QKV_ERR_SHAPE, "K: %lld heads do not divide Q's %lld heads",
                        (long long)p->Hkv, (long long)p->H);
    if (v->shape[0] != p->B || v->shape[1] != p->Hkv || v->shape[2] != p->Lk)
        return qkv_fail(QKV_ERR_SHAPE,
                        "V: shape (%lld, %lld, %lld, Ev) differs from K's (%lld, %lld, %lld, E)",
                        (long long)v->shape[0], (long long)v->shape[1], (long long)v->shape[2],
                        (long long)p->B, (long long)p->Hkv, (long long)p->Lk);
    p->q = q;
    p->k = k;
    p->v = v;

    if (!isfinite(opts->scale))
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "scale: %g is not finite", opts->scale);
    p->scale = opts->scale != 0.0 ? opts->scale : 1.0 / sqrt((double)p->E);
    if (!isfinite(opts->softcap) || opts->softcap < 0)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "softcap: %g, expected 0 (none) or finite > 0",
                        opts->softcap);
    p->softcap = opts->softcap;
    if (opts->align != QKV_ALIGN_TOP_LEFT && opts->align != QKV_ALIGN_BOTTOM_RIGHT)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "align: %d is not a qkv_align", (int)opts->align);
    p->causal = opts->causal != 0;
    p->diag_offset = opts->align == QKV_ALIGN_BOTTOM_RIGHT ? p->Lk - p->Lq : 0;
    p->use_window = opts->use_window != 0;
    p->window_left = opts->window_left;
    p->window_right = opts->window_right;
    if (opts->mask.data) {
        const int64_t full[4] = {p->B, p->H, p->Lq, p->Lk};
        QKV_TRY(resolve_mask(&opts->mask, q->dtype, full, mask));
        p->mask = mask;
    }
    if (opts->kv_lens) {
        QKV_TRY(qkv_check_aligned("kv_lens", opts->kv_lens, sizeof *opts->kv_lens));
        for (int64_t b = 0; b < p->B; b++)
            if (opts->kv_lens[b] < 0 || opts->kv_lens[b] > p->Lk)
                return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                                "kv_lens[%lld]: %lld is outside 0..Lk = 0..%lld", (long long)b,
                                (long long)opts->kv_lens[b], (long long)p->Lk);
        p->kv_lens = opts->kv_lens;
    }
    QKV_TRY(resolve_positions("q_offsets", opts->q_offsets, p->B, &p->q_offsets));
    QKV_TRY(resolve_positions("k_offsets", opts->k_offsets, p->B, &p->k_offsets));
    p->isa = cx->isa;
    p->num_threads = qkv_context_resolved_threads(cx);
    p->pool = cx->pool;
    p->progress = cx->progress;
    p->progress_user = cx->progress_user;
    return QKV_OK;
}

/* The ranges of the inputs of p into in[] (7 entries; 10 with the
 * backward's dO, O and lse); returns how many. */
static int input_ranges(const qkv_fwd_problem *p, const qkv_tensor *dout, qkv_byte_range *in)
{
    int n = 0;
    in[n++] = view_range("Q", p->q);
    in[n++] = view_range("K", p->k);
    in[n++] = view_range("V", p->v);
    if (p->mask) in[n++] = view_range("mask", p->mask);
    if (p->kv_lens) in[n++] = qkv_range("kv_lens", p->kv_lens, p->B, sizeof *p->kv_lens);
    if (p->q_offsets) in[n++] = qkv_range("q_offsets", p->q_offsets, p->B, sizeof(int64_t));
    if (p->k_offsets) in[n++] = qkv_range("k_offsets", p->k_offsets, p->B, sizeof(int64_t));
    if (dout) {
        in[n++] = view_range("dO", dout);
        in[n++] = view_range("O", p->o);
        in[n++] = view_range("lse", p->lse);
    }
    return n;
}

/* Runs the forward (b NULL) or backward b that backend be accepted, in
 * the workspace it asks for: the context's, or one block for the call. */
static qkv_status run_on(const qkv_backend *be, const qkv_context *ctx, const qkv_fwd_problem *f,
                         const qkv_bwd_problem *b)
{
    size_t bytes;
    void *ws;
    QKV_TRY(be->workspace(f, b, &bytes));
    QKV_TRY(qkv_scratch_get(ctx, bytes, be->name, &ws));
    const qkv_status st = b ? be->backward(b, ws) : be->forward(f, ws);
    if (st == QKV_OK && f->progress) f->progress(f->progress_user, 1.0);
    qkv_scratch_release(ctx, ws);
    return st;
}

/* The backend impl forces: NULL (auto dispatch) for QKV_IMPL_AUTO. */
static const char *backend_name(qkv_impl impl)
{
    return impl == QKV_IMPL_REFERENCE ? "reference" : NULL;
}

qkv_status qkv_attention_forward(qkv_context *ctx, const qkv_tensor *o, const qkv_tensor *weights,
                                 const qkv_tensor *lse, const qkv_tensor *q, const qkv_tensor *k,
                                 const qkv_tensor *v, const qkv_attention_options *opts)
{
    return qkv_attention_forward_on(backend_name(qkv_context_get(ctx)->impl), ctx, o, weights,
                                    lse, q, k, v, opts);
}

/* A forward call checked, into p (its mask view in *mask, its options
 * in *op), and the backend that computes it. */
static qkv_status forward_prepare(const char *backend, const qkv_context *ctx, const qkv_tensor *o,
                                  const qkv_tensor *weights, const qkv_tensor *lse,
                                  const qkv_tensor *q, const qkv_tensor *k, const qkv_tensor *v,
                                  const qkv_attention_options *opts, qkv_attention_options *op,
                                  qkv_fwd_problem *p, qkv_tensor *mask, const qkv_backend **be)
{
    QKV_TRY(qkv_options_read(opts, op));
    QKV_TRY(resolve_inputs(q, k, v, op, qkv_context_get(ctx), 1, p, mask));
    if (!o) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "O: NULL tensor");
    if (weights && !weights->data) weights = NULL;
    if (lse && !lse->data) lse = NULL;
    const qkv_dtype in = q->dtype;
    QKV_TRY(check_output("O", o, in, p->B, p->H, p->Lq, p->Ev, "(B, H, Lq, Ev)"));
    if (weights)
        QKV_TRY(check_output("weights", weights, in, p->B, p->H, p->Lq, p->Lk, "(B, H, Lq, Lk)"));
    if (lse)
        QKV_TRY(check_output("lse", lse, QKV_DTYPE_F32, p->B, p->H, p->Lq, 1, "(B, H, Lq, 1)"));
    p->o = o;
    p->weights = weights;
    p->lse = lse;
    const qkv_byte_range outs[3] = {view_range("O", o), view_range("weights", weights),
                                    view_range("lse", lse)};
    qkv_byte_range ins[7];
    const int nin = input_ranges(p, NULL, ins);
    QKV_TRY(qkv_check_disjoint(outs, 3, ins, nin));
    qkv_status st;
    if (!(*be = qkv_backend_choose(backend, p, NULL, &st))) return st;
    return QKV_OK;
}

qkv_status qkv_attention_forward_on(const char *backend, qkv_context *ctx, const qkv_tensor *o,
                                    const qkv_tensor *weights, const qkv_tensor *lse,
                                    const qkv_tensor *q, const qkv_tensor *k, const qkv_tensor *v,
                                    const qkv_attention_options *opts)
{
    qkv_clear_error();
    qkv_attention_options op;
    qkv_fwd_problem p;
    qkv_tensor mask;
    const qkv_backend *be;
    QKV_TRY(forward_prepare(backend, ctx, o, weights, lse, q, k, v, opts, &op, &p, &mask, &be));
    return run_on(be, ctx, &p, NULL);
}

qkv_status qkv_attention_forward_workspace(qkv_context *ctx, const qkv_tensor *o,
                                           const qkv_tensor *weights, const qkv_tensor *lse,
                                           const qkv_tensor *q, const qkv_tensor *k,
                                           const qkv_tensor *v, const qkv_attention_options *opts,
                                           size_t *bytes)
{
    qkv_clear_error();
    if (!bytes) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "bytes: is NULL");
    *bytes = 0;
    qkv_attention_options op;
    qkv_fwd_problem p;
    qkv_tensor mask;
    const qkv_backend *be;
    QKV_TRY(forward_prepare(backend_name(qkv_context_get(ctx)->impl), ctx, o, weights, lse, q, k,
                            v, opts, &op, &p, &mask, &be));
    return be->workspace(&p, NULL, bytes);
}

/* An input of the backward: f32, the given shape. */
static qkv_status check_input(const char *name, const qkv_tensor *t, qkv_dtype in, int64_t n0,
                              int64_t n1, int64_t n2, int64_t n3, const char *dims)
{
    int64_t n;
    if (!t) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "%s: NULL tensor", name);
    QKV_TRY(check_dtype(name, t, in));
    QKV_TRY(check_view(name, t, &n));
    return check_shape(name, t, n0, n1, n2, n3, dims);
}

qkv_status qkv_attention_backward(qkv_context *ctx, const qkv_tensor *dq, const qkv_tensor *dk,
                                  const qkv_tensor *dv, const qkv_tensor *dmask,
                                  const qkv_tensor *dout,
                                  const qkv_tensor *q, const qkv_tensor *k, const qkv_tensor *v,
                                  const qkv_tensor *o, const qkv_tensor *lse,
                                  const qkv_attention_options *opts)
{
    return qkv_attention_backward_on(backend_name(qkv_context_get(ctx)->impl), ctx, dq, dk, dv,
                                     dmask, dout, q, k, v, o, lse, opts);
}

/* A backward call checked, into bp (its mask view in *mask, its options
 * in *op), and the backend that computes it. */
static qkv_status backward_prepare(const char *backend, const qkv_context *ctx,
                                   const qkv_tensor *dq, const qkv_tensor *dk,
                                   const qkv_tensor *dv, const qkv_tensor *dmask,
                                   const qkv_tensor *dout, const qkv_tensor *q,
                                   const qkv_tensor *k, const qkv_tensor *v, const qkv_tensor *o,
                                   const qkv_tensor *lse, const qkv_attention_options *opts,
                                   qkv_attention_options *op, qkv_bwd_problem *bp,
                                   qkv_tensor *mask, const qkv_backend **be)
{
    QKV_TRY(qkv_options_read(opts, op));
    opts = op;
    qkv_fwd_problem *p = &bp->f;
    QKV_TRY(resolve_inputs(q, k, v, opts, qkv_context_get(ctx), 0, p, mask));
    const qkv_dtype in = q->dtype;
    QKV_TRY(check_input("dO", dout, in, p->B, p->H, p->Lq, p->Ev, "(B, H, Lq, Ev)"));
    QKV_TRY(check_input("O", o, in, p->B, p->H, p->Lq, p->Ev, "(B, H, Lq, Ev)"));
    QKV_TRY(check_input("lse", lse, QKV_DTYPE_F32, p->B, p->H, p->Lq, 1, "(B, H, Lq, 1)"));
    if (!dq) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "dQ: NULL tensor");
    if (!dk) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "dK: NULL tensor");
    if (!dv) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "dV: NULL tensor");
    QKV_TRY(check_output("dQ", dq, in, p->B, p->H, p->Lq, p->E, "(B, H, Lq, E)"));
    QKV_TRY(check_output("dK", dk, in, p->B, p->Hkv, p->Lk, p->E, "(B, Hkv, Lk, E)"));
    QKV_TRY(check_output("dV", dv, in, p->B, p->Hkv, p->Lk, p->Ev, "(B, Hkv, Lk, Ev)"));
    if (dmask && !dmask->data) dmask = NULL;
    if (dmask) {
        if (!opts->mask.data || opts->mask.dtype == QKV_DTYPE_BOOL)
            return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                            "dmask: requested without a float mask in the options");
        const qkv_tensor *m = &opts->mask;
        QKV_TRY(check_output("dmask", dmask, in, m->shape[0], m->shape[1], m->shape[2],
                             m->shape[3], "the mask's shape"));
    }
    p->o = o;
    p->lse = lse;
    const qkv_byte_range outs[4] = {view_range("dQ", dq), view_range("dK", dk),
                                    view_range("dV", dv), view_range("dmask", dmask)};
    qkv_byte_range ins[10];
    const int nin = input_ranges(p, dout, ins);
    QKV_TRY(qkv_check_disjoint(outs, 4, ins, nin));
    bp->dout = dout;
    bp->dq = dq;
    bp->dk = dk;
    bp->dv = dv;
    bp->dmask = dmask;
    qkv_status st;
    if (!(*be = qkv_backend_choose(backend, p, bp, &st))) return st;
    return QKV_OK;
}

qkv_status qkv_attention_backward_on(const char *backend, qkv_context *ctx, const qkv_tensor *dq,
                                     const qkv_tensor *dk, const qkv_tensor *dv,
                                     const qkv_tensor *dmask, const qkv_tensor *dout,
                                     const qkv_tensor *q, const qkv_tensor *k, const qkv_tensor *v,
                                     const qkv_tensor *o, const qkv_tensor *lse,
                                     const qkv_attention_options *opts)
{
    qkv_clear_error();
    qkv_attention_options op;
    qkv_bwd_problem bp;
    qkv_tensor mask;
    const qkv_backend *be;
    QKV_TRY(backward_prepare(backend, ctx, dq, dk, dv, dmask, dout, q, k, v, o, lse, opts, &op,
                             &bp, &mask, &be));
    return run_on(be, ctx, &bp.f, &bp);
}

qkv_status qkv_attention_backward_workspace(qkv_context *ctx, const qkv_tensor *dq,
                                            const qkv_tensor *dk, const qkv_tensor *dv,
                                            const qkv_tensor *dmask, const qkv_tensor *dout,
                                            const qkv_tensor *q, const qkv_tensor *k,
                                            const qkv_tensor *v, const qkv_tensor *o,
                                            const qkv_tensor *lse,
                                            const qkv_attention_options *opts, size_t *bytes)
{
    qkv_clear_error();
    if (!bytes) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "bytes: is NULL");
    *bytes = 0;
    qkv_attention_options op;
    qkv_bwd_problem bp;
    qkv_tensor mask;
    const qkv_backend *be;
    QKV_TRY(backward_prepare(backend_name(qkv_context_get(ctx)->impl), ctx, dq, dk, dv, dmask,
                             dout, q, k, v, o, lse, opts, &op, &bp, &mask, &be));
    return be->workspace(&bp.f, &bp, bytes);
}

/* Whether a and b are the same view: same data, shape and strides. */
static int same_view(const qkv_tensor *a, const qkv_tensor *b)
{
    return a->data == b->data && a->dtype == b->dtype &&
           memcmp(a->shape, b->shape, sizeof a->shape) == 0 &&
           memcmp(a->stride, b->stride, sizeof a->stride) == 0;
}

/* One row of qkv_attention_merge: (o1, l1) and (o2, l2) over disjoint keys
 * into (o, *l) over both; o may be o1. A part of lse -inf weighs 0; a part
 * of lse +inf (scores past float's range) takes the row. */
static void merge_row(float *o, int64_t os, float *l, const float *o1, int64_t s1, float l1,
                      const float *o2, int64_t s2, float l2, int64_t ev)
{
    const double m = l1 > l2 ? l1 : l2;
    if (m == -INFINITY) {
        for (int64_t e = 0; e < ev; e++) o[e * os] = 0.0f;
        *l = -INFINITY;
        return;
    }
    /* NaN in either lse makes m or a weight NaN, and so the row. */
    const double w1 = m == INFINITY ? (l1 == INFINITY) : exp((double)l1 - m);
    const double w2 = m == INFINITY ? (l2 == INFINITY) : exp((double)l2 - m);
    const double sum = w1 + w2;
    for (int64_t e = 0; e < ev; e++) {
        /* A part of weight 0 adds nothing, whatever its O holds. */
        double acc = 0;
        if (w1 != 0) acc += w1 * (double)o1[e * s1];
        if (w2 != 0) acc += w2 * (double)o2[e * s2];
        o[e * os] = qkv_narrow(acc / sum);
    }
    *l = qkv_narrow(m == INFINITY || isnan(m) ? m : m + log(sum));
}

qkv_status qkv_attention_merge(const qkv_tensor *o, const qkv_tensor *lse, const qkv_tensor *o1,
                               const qkv_tensor *lse1, const qkv_tensor *o2,
                               const qkv_tensor *lse2)
{
    qkv_clear_error();
    if (!o1) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "o1: NULL tensor");
    QKV_TRY(check_dtype("o1", o1, QKV_DTYPE_F32));
    int64_t n;
    QKV_TRY(check_view("o1", o1, &n));
    const int64_t B = o1->shape[0], H = o1->shape[1], Lq = o1->shape[2], Ev = o1->shape[3];
    const qkv_dtype f32 = QKV_DTYPE_F32;
    QKV_TRY(check_input("lse1", lse1, f32, B, H, Lq, 1, "(B, H, Lq, 1) of o1"));
    QKV_TRY(check_input("o2", o2, f32, B, H, Lq, Ev, "o1's (B, H, Lq, Ev)"));
    QKV_TRY(check_input("lse2", lse2, f32, B, H, Lq, 1, "(B, H, Lq, 1) of o1"));
    if (!o) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "O: NULL tensor");
    if (!lse) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "lse: NULL tensor");
    QKV_TRY(check_output("O", o, f32, B, H, Lq, Ev, "o1's (B, H, Lq, Ev)"));
    QKV_TRY(check_output("lse", lse, f32, B, H, Lq, 1, "(B, H, Lq, 1) of o1"));
    /* Each element of o (lse) is read from o1 (lse1) at the same index
     * just before it is written, so the very same view may be both. */
    const qkv_byte_range outs[2] = {view_range("O", o), view_range("lse", lse)};
    qkv_byte_range ins[4];
    int nin = 0;
    if (!same_view(o, o1)) ins[nin++] = view_range("o1", o1);
    if (!same_view(lse, lse1)) ins[nin++] = view_range("lse1", lse1);
    ins[nin++] = view_range("o2", o2);
    ins[nin++] = view_range("lse2", lse2);
    QKV_TRY(qkv_check_disjoint(outs, 2, ins, nin));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++)
                merge_row(qkv_view_out(o, b, h, i, 0), o->stride[3], qkv_view_out(lse, b, h, i, 0),
                          qkv_view_at(o1, b, h, i, 0), o1->stride[3],
                          *qkv_view_at(lse1, b, h, i, 0), qkv_view_at(o2, b, h, i, 0),
                          o2->stride[3], *qkv_view_at(lse2, b, h, i, 0), Ev);
    return QKV_OK;
}
