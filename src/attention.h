/* The validated form of one forward attention call, shared by the public
 * entry point (attention.c) and every kernel that computes it (ref/, later
 * cpu/). Validation happens once, in attention.c; kernels trust this. */
#ifndef QKV_ATTENTION_H
#define QKV_ATTENTION_H

#include "qkv.h"

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
    int num_threads;           /* resolved: >= 1 */
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

/* The keys [*lo, *hi] query row i of batch b may see by padding, causal
 * and the window (empty when *lo > *hi); masks come on top. Compared so
 * that nothing overflows, whatever the window's bounds. */
static inline void qkv_row_interval(const qkv_fwd_problem *p, int64_t b, int64_t i, int64_t *lo,
                                    int64_t *hi)
{
    const int64_t diag = i + p->diag_offset;
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

/* The reference kernel: DESIGN.md §1 step by step, double accumulation. */
qkv_status qkv_ref_attention_forward(const qkv_fwd_problem *p);

/* One query row (b, h, i) of p by the reference, on the calling thread,
 * writing its O, weights and lse; for the fast path's rows whose float
 * scores overflowed. Returns 0 when its Lk + Ev doubles of scratch cannot
 * be allocated (nothing written), and sets no error detail (it may run on
 * a worker thread). */
int qkv_ref_attention_row(const qkv_fwd_problem *p, int64_t b, int64_t h, int64_t i);

/* Whether row (b, h, i) may attend some key whose float mask value is not
 * -inf: a row for which -inf scores everywhere are not the mask's doing. */
int qkv_row_has_open_key(const qkv_fwd_problem *p, int64_t b, int64_t h, int64_t i);


/* One backward call: the forward's problem (f.o and f.lse are the given
 * forward results) plus the incoming gradient and the outputs. */
typedef struct qkv_bwd_problem {
    qkv_fwd_problem f;
    const qkv_tensor *dout;            /* (B, H, Lq, Ev) */
    const qkv_tensor *dq, *dk, *dv;    /* outputs */
    const qkv_tensor *dmask;           /* NULL, or the float mask's own shape */
} qkv_bwd_problem;

/* The reference backward: DESIGN.md §1's formulas, double accumulation. */
qkv_status qkv_ref_attention_backward(const qkv_bwd_problem *p);

#endif
