/* The contract between the public attention calls and the backends that
 * compute them: the validated problem (forward and backward), how kernels
 * read it, and the backend entry that src/backends.c registers.
 *
 * attention.c checks every argument once and resolves the options into a
 * problem; backends trust it. A backend is one file that defines a
 * `const qkv_backend qkv_backend_<name>` and one line in backends.c's list.
 * Auto dispatch asks the backends in the list's order and the first whose
 * supports() accepts the call computes it; a call that forces a backend
 * (QKV_IMPL_REFERENCE names "reference") fails with QKV_ERR_UNSUPPORTED
 * and the why that supports() gave when that backend cannot serve it. */
#ifndef QKV_BACKEND_H
#define QKV_BACKEND_H

#include "common.h"
#include "qkv.h"
#include "threads.h"

#include <stddef.h>
#include <stdint.h>

typedef struct qkv_fwd_problem {
    int64_t B, H, Hkv, Lq, Lk, E, Ev;
    const qkv_tensor *q, *k, *v, *o;
    const qkv_tensor *weights; /* NULL when not requested */
    const qkv_tensor *lse;     /* NULL when not requested */
    const qkv_tensor *mask;    /* NULL when absent; broadcast dims have stride 0 */
    double scale;              /* resolved: never 0 */
    double softcap;            /* 0 = none */
    int causal;
    int64_t diag_offset;       /* d_i = i + diag_offset: 0 or Lk - Lq */
    int use_window;
    int64_t window_left, window_right; /* negative = unlimited */
    const int64_t *kv_lens;    /* NULL or B entries in 0..Lk */
    const int64_t *q_offsets;  /* NULL or B positions in 0..2^60 */
    const int64_t *k_offsets;  /* likewise */
    qkv_isa isa;               /* as asked (AUTO not resolved): the CPU backend's */
    int num_threads;           /* resolved: >= 1 */
    qkv_pool *pool;            /* the context's workers */
    void (*progress)(void *user, double done); /* NULL = none; see qkv.h */
    void *progress_user;
} qkv_fwd_problem;

/* Element (a, b, c, d) of an f32 view. A view without data (one with no
 * elements: the caller's loop over it runs zero times) gives NULL, so no
 * arithmetic is ever done on a null pointer. */
static inline const float *qkv_view_at(const qkv_tensor *t, int64_t a, int64_t b, int64_t c,
                                       int64_t d)
{
    return t->data ? (const float *)t->data + a * t->stride[0] + b * t->stride[1] +
                         c * t->stride[2] + d * t->stride[3]
                   : NULL;
}

static inline float *qkv_view_out(const qkv_tensor *t, int64_t a, int64_t b, int64_t c,
                                  int64_t d)
{
    return t->data ? (float *)t->data + a * t->stride[0] + b * t->stride[1] + c * t->stride[2] +
                         d * t->stride[3]
                   : NULL;
}

/* Views of the three float dtypes a call takes (F32, F16, BF16; see the
 * dtype rules in qkv.h): element (a, b, c, d) widened to float (exactly),
 * and x stored there rounded to nearest even. The f32 pointers above stay
 * for the code that knows its view is f32. */
static inline int64_t qkv_view_offset(const qkv_tensor *t, int64_t a, int64_t b, int64_t c,
                                      int64_t d)
{
    return a * t->stride[0] + b * t->stride[1] + c * t->stride[2] + d * t->stride[3];
}

static inline float qkv_view_get(const qkv_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d)
{
    return qkv_elem_get(t->data, t->dtype, qkv_view_offset(t, a, b, c, d));
}

static inline void qkv_view_put(const qkv_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d,
                                float v)
{
    qkv_elem_put(t->data, t->dtype, qkv_view_offset(t, a, b, c, d), v);
}

/* The same from a double, rounded once to the view's dtype (through
 * float first a 16-bit result would be rounded twice); past float's range
 * as qkv_narrow does. */
static inline void qkv_view_put_f64(const qkv_tensor *t, int64_t a, int64_t b, int64_t c,
                                    int64_t d, double v)
{
    const int64_t x = qkv_view_offset(t, a, b, c, d);
    switch (t->dtype) {
    case QKV_DTYPE_F16: ((uint16_t *)t->data)[x] = qkv_f64_to_f16(v); break;
    case QKV_DTYPE_BF16: ((uint16_t *)t->data)[x] = qkv_f64_to_bf16(v); break;
    default: ((float *)t->data)[x] = qkv_narrow(v); break;
    }
}

/* n elements of row (a, b, c) of t, widened into dst[0], dst[step], ...
 * times scale (1 for a plain copy). n == 0 touches nothing (a view with
 * no elements may have no data). */
static inline void qkv_row_get(const qkv_tensor *t, int64_t a, int64_t b, int64_t c, int64_t n,
                               float scale, float *dst, int64_t step)
{
    if (n <= 0) return;
    const int64_t x0 = qkv_view_offset(t, a, b, c, 0), s = t->stride[3];
    if (t->dtype == QKV_DTYPE_F32) {
        const float *src = (const float *)t->data + x0;
        for (int64_t d = 0; d < n; d++) dst[d * step] = src[d * s] * scale;
    } else {
        const uint16_t *src = (const uint16_t *)t->data + x0;
        if (t->dtype == QKV_DTYPE_F16)
            for (int64_t d = 0; d < n; d++) dst[d * step] = qkv_f16_to_f32(src[d * s]) * scale;
        else
            for (int64_t d = 0; d < n; d++) dst[d * step] = qkv_bf16_to_f32(src[d * s]) * scale;
    }
}

/* n floats src[0], src[step], ... into row (a, b, c) of t, rounded;
 * n == 0 touches nothing. */
static inline void qkv_row_put(const qkv_tensor *t, int64_t a, int64_t b, int64_t c, int64_t n,
                               const float *src, int64_t step)
{
    if (n <= 0) return;
    const int64_t x0 = qkv_view_offset(t, a, b, c, 0), s = t->stride[3];
    if (t->dtype == QKV_DTYPE_F32) {
        float *dst = (float *)t->data + x0;
        for (int64_t d = 0; d < n; d++) dst[d * s] = src[d * step];
    } else {
        uint16_t *dst = (uint16_t *)t->data + x0;
        if (t->dtype == QKV_DTYPE_F16)
            for (int64_t d = 0; d < n; d++) dst[d * s] = qkv_f32_to_f16(src[d * step]);
        else
            for (int64_t d = 0; d < n; d++) dst[d * s] = qkv_f32_to_bf16(src[d * step]);
    }
}

/* d_i of query row i in batch b: the key index of its causal diagonal.
 * The bounds validation puts on Lq, Lk and the offsets keep it within
 * +-2^62. */
static inline int64_t qkv_row_diag(const qkv_fwd_problem *p, int64_t b, int64_t i)
{
    return i + p->diag_offset + (p->q_offsets ? p->q_offsets[b] : 0) -
           (p->k_offsets ? p->k_offsets[b] : 0);
}

/* The keys [*lo, *hi] query row i of batch b may see by padding, causal
 * and the window (empty when *lo > *hi); masks come on top. Compared so
 * that nothing overflows, whatever the window's bounds. */
static inline void qkv_row_interval(const qkv_fwd_problem *p, int64_t b, int64_t i, int64_t *lo,
                                    int64_t *hi)
{
    const int64_t diag = qkv_row_diag(p, b, i);
    int64_t l = 0, h = p->Lk - 1;
    if (p->kv_lens && p->kv_lens[b] - 1 < h) h = p->kv_lens[b] - 1;
    if (p->causal && diag < h) h = diag;
    if (p->use_window) {
        if (p->window_left >= 0 && p->window_left < diag - l) l = diag - p->window_left;
        if (p->window_right >= 0 && p->window_right < h - diag) h = diag + p->window_right;
    }
    *lo = l;
    *hi = h;
}

/* May row i of (b, h) attend key j, as far as a bool mask says? */
static inline int qkv_mask_allows(const qkv_tensor *m, int64_t b, int64_t h, int64_t i, int64_t j)
{
    return *((const unsigned char *)m->data + b * m->stride[0] + h * m->stride[1] +
             i * m->stride[2] + j * m->stride[3]) != 0;
}

/* One backward call: the forward's problem (f.o and f.lse are the given
 * forward results) plus the incoming gradient and the outputs. */
typedef struct qkv_bwd_problem {
    qkv_fwd_problem f;
    const qkv_tensor *dout;            /* (B, H, Lq, Ev) */
    const qkv_tensor *dq, *dk, *dv;    /* outputs */
    const qkv_tensor *dmask;           /* NULL, or the float mask's own shape */
} qkv_bwd_problem;

/* A backend: what it computes and when it can.
 *
 * supports(f, b, &why): whether it computes the forward f (b NULL) or the
 * backward b (then f == &b->f); when not, *why is a static phrase saying
 * why ("dmask is the reference's alone"), used in the detail of a call
 * that forced this backend.
 *
 * workspace(f, b, &bytes): the scratch memory, in bytes, that forward(f)
 * or backward(b) takes: one block (0 for none), 64-byte aligned, laid out
 * by the backend (qkv_carve, common.h). The dispatcher allocates it once per
 * call (later: the execution context supplies it) and frees it after.
 * Fails (QKV_ERR_OUT_OF_MEMORY, with a detail) when the size does not fit
 * size_t.
 *
 * forward(p, ws) and backward(p, ws) compute a problem that supports()
 * accepted, in the workspace ws of the size asked (NULL when 0); they
 * allocate nothing else but in rare paths (a row the reference redoes)
 * and may still fail (memory, threads, an isa this CPU lacks) with
 * qkv_fail's detail. */
typedef struct qkv_backend {
    const char *name; /* lower case: "cpu", "reference" */
    int (*supports)(const qkv_fwd_problem *f, const qkv_bwd_problem *b, const char **why);
    qkv_status (*workspace)(const qkv_fwd_problem *f, const qkv_bwd_problem *b, size_t *bytes);
    qkv_status (*forward)(const qkv_fwd_problem *p, void *ws);
    qkv_status (*backward)(const qkv_bwd_problem *p, void *ws);
} qkv_backend;

/* The registered backends (backends.c), in the order auto dispatch asks
 * them: i from 0 to qkv_backend_count() - 1; NULL outside. */
int qkv_backend_count(void);
const qkv_backend *qkv_backend_at(int i);

/* The backend that computes f (b NULL) or b: the first that supports it
 * when name is NULL, else the one so named. NULL, with *st and the error
 * detail set, when no backend has that name or the one named cannot serve
 * the call (QKV_ERR_UNSUPPORTED, "impl: cpu cannot compute this backward:
 * why"). */
const qkv_backend *qkv_backend_choose(const char *name, const qkv_fwd_problem *f,
                                      const qkv_bwd_problem *b, qkv_status *st);

/* qkv_attention_forward and _backward on the backend so named (NULL: auto
 * dispatch), whatever ctx's impl says; the public calls are these with
 * the name that impl gives. For the tests that hold every backend to the
 * reference. */
qkv_status qkv_attention_forward_on(const char *backend, qkv_context *ctx, const qkv_tensor *o,
                                    const qkv_tensor *weights, const qkv_tensor *lse,
                                    const qkv_tensor *q, const qkv_tensor *k, const qkv_tensor *v,
                                    const qkv_attention_options *opts);
qkv_status qkv_attention_backward_on(const char *backend, qkv_context *ctx, const qkv_tensor *dq,
                                     const qkv_tensor *dk, const qkv_tensor *dv,
                                     const qkv_tensor *dmask, const qkv_tensor *dout,
                                     const qkv_tensor *q, const qkv_tensor *k, const qkv_tensor *v,
                                     const qkv_tensor *o, const qkv_tensor *lse,
                                     const qkv_attention_options *opts);

#endif
