/* qkv_attention_forward and _backward: check every argument once, resolve
 * the options into a problem (backend.h) and hand it to the backend that
 * qkv_backend_choose picks. The error details name the argument as the
 * header does (Q, K, V, O, weights, lse, mask, ...). */
#include "backend.h"

#include "common.h"
#include "threads.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Dims must be non-negative, the furthest element's offset must fit in
 * int64_t bytes, and data may be NULL only for an empty tensor. */
static qkv_status check_view(const char *name, const qkv_tensor *t, int64_t *numel)
{
    size_t es = qkv_dtype_size(t->dtype);
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
    const qkv_status st = qkv_check_aligned(name, t->data, es);
    if (st != QKV_OK) return st;
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

static qkv_status check_f32(const char *name, const qkv_tensor *t)
{
    if (t->dtype != QKV_DTYPE_F32)
        return qkv_fail(QKV_ERR_DTYPE, "%s: dtype %s, expected f32", name, qkv_dtype_name(t->dtype));
    return QKV_OK;
}

#define TRY(x)                                                                               \
    do {                                                                                     \
        qkv_status try_st_ = (x);                                                            \
        if (try_st_ != QKV_OK) return try_st_;                                               \
    } while (0)

static qkv_status check_output(const char *name, const qkv_tensor *t, int64_t n0, int64_t n1,
                               int64_t n2, int64_t n3, const char *dims)
{
    int64_t n;
    TRY(check_f32(name, t));
    TRY(check_view(name, t, &n));
    TRY(check_shape(name, t, n0, n1, n2, n3, dims));
    return n ? check_no_self_overlap(name, t) : QKV_OK; /* nothing to write */
}

/* Broadcast dims of the mask get stride 0, so kernels index it as if it
 * were (B, H, Lq, Lk). */
static qkv_status resolve_mask(const qkv_tensor *m, const int64_t full[4], qkv_tensor *out)
{
    static const char *dimname[4] = {"B", "H", "Lq", "Lk"};
    int64_t n;
    if (m->dtype != QKV_DTYPE_F32 && m->dtype != QKV_DTYPE_BOOL)
        return qkv_fail(QKV_ERR_DTYPE, "mask: dtype %s, expected f32 (additive) or bool",
                        qkv_dtype_name(m->dtype));
    TRY(check_view("mask", m, &n));
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

/* Q, K, V and the options, checked and resolved into p (outputs not yet:
 * the forward and the backward each check their own). `mask` is storage
 * for the broadcast-resolved mask view that p->mask points to. */
static qkv_status resolve_inputs(const qkv_tensor *q, const qkv_tensor *k, const qkv_tensor *v,
                                 const qkv_attn_options *opts, qkv_fwd_problem *p,
                                 qkv_tensor *mask)
{
    if (!q) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "Q: NULL tensor");
    if (!k) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "K: NULL tensor");
    if (!v) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "V: NULL tensor");
    int64_t n;
    TRY(check_f32("Q", q));
    TRY(check_f32("K", k));
    TRY(check_f32("V", v));
    TRY(check_view("Q", q, &n));
    TRY(check_view("K", k, &n));
    TRY(check_view("V", v, &n));

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
        TRY(resolve_mask(&opts->mask, full, mask));
        p->mask = mask;
    }
    if (opts->kv_lens) {
        TRY(qkv_check_aligned("kv_lens", opts->kv_lens, sizeof *opts->kv_lens));
        for (int64_t b = 0; b < p->B; b++)
            if (opts->kv_lens[b] < 0 || opts->kv_lens[b] > p->Lk)
                return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                                "kv_lens[%lld]: %lld is outside 0..Lk = 0..%lld", (long long)b,
                                (long long)opts->kv_lens[b], (long long)p->Lk);
        p->kv_lens = opts->kv_lens;
    }
    if (opts->impl < QKV_IMPL_AUTO || opts->impl > QKV_IMPL_REFERENCE)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "impl: %d is not a qkv_impl", (int)opts->impl);
    if (opts->isa < QKV_ISA_AUTO || opts->isa > QKV_ISA_AVX512)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "isa: %d is not a qkv_isa", (int)opts->isa);
    p->isa = opts->isa;
    if (opts->num_threads < 0)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "num_threads: %d, expected 0 (all CPUs) or more",
                        opts->num_threads);
    p->num_threads = opts->num_threads ? opts->num_threads : qkv_cpu_count();
    if (p->num_threads > QKV_MAX_THREADS) p->num_threads = QKV_MAX_THREADS;
    p->progress = opts->progress;
    p->progress_user = opts->progress_user;
    return QKV_OK;
}

/* The ranges of the inputs of p into in[] (5 entries; 8 with the
 * backward's dO, O and lse); returns how many. */
static int input_ranges(const qkv_fwd_problem *p, const qkv_tensor *dout, qkv_byte_range *in)
{
    int n = 0;
    in[n++] = view_range("Q", p->q);
    in[n++] = view_range("K", p->k);
    in[n++] = view_range("V", p->v);
    if (p->mask) in[n++] = view_range("mask", p->mask);
    if (p->kv_lens) in[n++] = qkv_range("kv_lens", p->kv_lens, p->B, sizeof *p->kv_lens);
    if (dout) {
        in[n++] = view_range("dO", dout);
        in[n++] = view_range("O", p->o);
        in[n++] = view_range("lse", p->lse);
    }
    return n;
}

/* The backend impl forces: NULL (auto dispatch) for QKV_IMPL_AUTO. */
static const char *backend_name(qkv_impl impl)
{
    return impl == QKV_IMPL_REFERENCE ? "reference" : NULL;
}

qkv_status qkv_attention_forward(const qkv_tensor *o, const qkv_tensor *weights,
                                 const qkv_tensor *lse, const qkv_tensor *q,
                                 const qkv_tensor *k, const qkv_tensor *v,
                                 const qkv_attn_options *opts)
{
    return qkv_attention_forward_on(opts ? backend_name(opts->impl) : NULL, o, weights, lse, q, k,
                                    v, opts);
}

qkv_status qkv_attention_forward_on(const char *backend, const qkv_tensor *o,
                                    const qkv_tensor *weights, const qkv_tensor *lse,
                                    const qkv_tensor *q, const qkv_tensor *k, const qkv_tensor *v,
                                    const qkv_attn_options *opts)
{
    qkv_clear_error();
    static const qkv_attn_options defaults;
    if (!opts) opts = &defaults;
    qkv_fwd_problem p;
    qkv_tensor mask;
    TRY(resolve_inputs(q, k, v, opts, &p, &mask));
    if (!o) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "O: NULL tensor");
    if (weights && !weights->data) weights = NULL;
    if (lse && !lse->data) lse = NULL;
    TRY(check_output("O", o, p.B, p.H, p.Lq, p.Ev, "(B, H, Lq, Ev)"));
    if (weights) TRY(check_output("weights", weights, p.B, p.H, p.Lq, p.Lk, "(B, H, Lq, Lk)"));
    if (lse) TRY(check_output("lse", lse, p.B, p.H, p.Lq, 1, "(B, H, Lq, 1)"));
    p.o = o;
    p.weights = weights;
    p.lse = lse;
    const qkv_byte_range outs[3] = {view_range("O", o), view_range("weights", weights),
                                    view_range("lse", lse)};
    qkv_byte_range ins[5];
    const int nin = input_ranges(&p, NULL, ins);
    TRY(qkv_check_disjoint(outs, 3, ins, nin));

    qkv_status st;
    const qkv_backend *be = qkv_backend_choose(backend, &p, NULL, &st);
    if (!be) return st;
    st = be->forward(&p);
    if (st == QKV_OK && p.progress) p.progress(p.progress_user, 1.0);
    return st;
}

/* An input of the backward: f32, the given shape. */
static qkv_status check_input(const char *name, const qkv_tensor *t, int64_t n0, int64_t n1,
                              int64_t n2, int64_t n3, const char *dims)
{
    int64_t n;
    if (!t) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "%s: NULL tensor", name);
    TRY(check_f32(name, t));
    TRY(check_view(name, t, &n));
    return check_shape(name, t, n0, n1, n2, n3, dims);
}

qkv_status qkv_attention_backward(const qkv_tensor *dq, const qkv_tensor *dk,
                                  const qkv_tensor *dv, const qkv_tensor *dmask,
                                  const qkv_tensor *dout, const qkv_tensor *q,
                                  const qkv_tensor *k, const qkv_tensor *v, const qkv_tensor *o,
                                  const qkv_tensor *lse, const qkv_attn_options *opts)
{
    return qkv_attention_backward_on(opts ? backend_name(opts->impl) : NULL, dq, dk, dv, dmask,
                                     dout, q, k, v, o, lse, opts);
}

qkv_status qkv_attention_backward_on(const char *backend, const qkv_tensor *dq,
                                     const qkv_tensor *dk, const qkv_tensor *dv,
                                     const qkv_tensor *dmask, const qkv_tensor *dout,
                                     const qkv_tensor *q, const qkv_tensor *k,
                                     const qkv_tensor *v, const qkv_tensor *o,
                                     const qkv_tensor *lse, const qkv_attn_options *opts)
{
    qkv_clear_error();
    static const qkv_attn_options defaults;
    if (!opts) opts = &defaults;
    qkv_bwd_problem bp;
    qkv_fwd_problem *p = &bp.f;
    qkv_tensor mask;
    TRY(resolve_inputs(q, k, v, opts, p, &mask));
    TRY(check_input("dO", dout, p->B, p->H, p->Lq, p->Ev, "(B, H, Lq, Ev)"));
    TRY(check_input("O", o, p->B, p->H, p->Lq, p->Ev, "(B, H, Lq, Ev)"));
    TRY(check_input("lse", lse, p->B, p->H, p->Lq, 1, "(B, H, Lq, 1)"));
    if (!dq) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "dQ: NULL tensor");
    if (!dk) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "dK: NULL tensor");
    if (!dv) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "dV: NULL tensor");
    TRY(check_output("dQ", dq, p->B, p->H, p->Lq, p->E, "(B, H, Lq, E)"));
    TRY(check_output("dK", dk, p->B, p->Hkv, p->Lk, p->E, "(B, Hkv, Lk, E)"));
    TRY(check_output("dV", dv, p->B, p->Hkv, p->Lk, p->Ev, "(B, Hkv, Lk, Ev)"));
    if (dmask && !dmask->data) dmask = NULL;
    if (dmask) {
        if (!opts->mask.data || opts->mask.dtype != QKV_DTYPE_F32)
            return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                            "dmask: requested without a float mask in the options");
        const qkv_tensor *m = &opts->mask;
        TRY(check_output("dmask", dmask, m->shape[0], m->shape[1], m->shape[2], m->shape[3],
                         "the mask's shape"));
    }
    p->o = o;
    p->lse = lse;
    const qkv_byte_range outs[4] = {view_range("dQ", dq), view_range("dK", dk),
                                    view_range("dV", dv), view_range("dmask", dmask)};
    qkv_byte_range ins[8];
    const int nin = input_ranges(p, dout, ins);
    TRY(qkv_check_disjoint(outs, 4, ins, nin));
    bp.dout = dout;
    bp.dq = dq;
    bp.dk = dk;
    bp.dv = dv;
    bp.dmask = dmask;
    qkv_status st;
    const qkv_backend *be = qkv_backend_choose(backend, p, &bp, &st);
    if (!be) return st;
    st = be->backward(&bp);
    if (st == QKV_OK && p->progress) p->progress(p->progress_user, 1.0);
    return st;
}
