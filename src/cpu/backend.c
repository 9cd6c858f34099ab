/* The CPU backend: the tiled forward (flash.c) and backward (flash_bwd.c)
 * with the SIMD kernels of cpu/kernels/. Its scores are float, so it takes
 * the calls whose arithmetic fits float and leaves the rest to the
 * reference: a scale outside float's normal range, a float mask's
 * gradient, a backward whose forward overflowed, and head dims past its
 * tiles' indexing. */
#include "cpu/flash.h"

#include "common.h"
#include "ref/attention_ref.h"

#include <float.h>
#include <math.h>

/* The most E or Ev the tiles index. */
#define CPU_MAX_HEAD_DIM (INT64_C(1) << 20)

/* The fast path multiplies the queries by the scale in float: a scale
 * outside float's normal range (it would become inf, or lose its
 * precision to denormals or 0) is the reference's, which keeps it in
 * double. */
static int float_scale(double scale)
{
    const double a = fabs(scale);
    return a >= FLT_MIN && a <= FLT_MAX;
}

/* Whether the forward's lse shows scores past float's range: +inf, or
 * -inf for a row that had an open key (the forward gives those rows to
 * the reference, whose double lse the float cannot hold). The fast
 * backward recomputes the weights from float scores and lse, so such a
 * call is the reference backward's, which recomputes them in double. */
static int lse_overflowed(const qkv_fwd_problem *p)
{
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t h = 0; h < p->H; h++)
            for (int64_t i = 0; i < p->Lq; i++) {
                const float l = *qkv_view_at(p->lse, b, h, i, 0);
                if (l == INFINITY || (l == -INFINITY && qkv_row_has_open_key(p, b, h, i)))
                    return 1;
            }
    return 0;
}

/* Whether every element of the f32 view t is finite (or -inf, when
 * neg_inf_ok: lse of a fully masked row, a mask that forbids). */
static int all_finite(const qkv_tensor *t, int neg_inf_ok)
{
    for (int64_t a = 0; a < t->shape[0]; a++)
        for (int64_t b = 0; b < t->shape[1]; b++)
            for (int64_t c = 0; c < t->shape[2]; c++) {
                for (int64_t d = 0; d < t->shape[3]; d++) {
                    const float x = qkv_view_get(t, a, b, c, d);
                    if (!isfinite(x) && !(neg_inf_ok && x == -INFINITY)) return 0;
                }
            }
    return 1;
}

static int cpu_supports(const qkv_fwd_problem *f, const qkv_bwd_problem *b, const char **why)
{
    if (!float_scale(f->scale)) {
        *why = "the scale is outside float's normal range";
        return 0;
    }
    if (f->E > CPU_MAX_HEAD_DIM || f->Ev > CPU_MAX_HEAD_DIM) {
        *why = "head dims above 2^20 are the reference's";
        return 0;
    }
    if (b && b->dmask) {
        *why = "the float mask's gradient (dmask) is the reference's";
        return 0;
    }
    if (b && lse_overflowed(f)) {
        *why = "lse shows scores past float's range";
        return 0;
    }
    return 1;
}

/* Float scores that overflowed in the fast backward although lse is
 * finite (inputs of 1e20: the forward redid those rows in double) show as
 * gradients that are not finite; from finite inputs that is the
 * overflow's doing, and the reference, in double, gives the answer. */
static qkv_status cpu_backward(const qkv_bwd_problem *bp, void *ws)
{
    const qkv_fwd_problem *p = &bp->f;
    qkv_status st = qkv_flash_attention_backward(bp, ws);
    if (st == QKV_OK && !(all_finite(bp->dq, 0) && all_finite(bp->dk, 0) && all_finite(bp->dv, 0)) &&
        all_finite(p->q, 0) && all_finite(p->k, 0) && all_finite(p->v, 0) &&
        all_finite(bp->dout, 0) && all_finite(p->o, 0) && all_finite(p->lse, 1) &&
        (!p->mask || p->mask->dtype == QKV_DTYPE_BOOL || all_finite(p->mask, 1)))
        st = qkv_ref_attention_backward(bp);
    return st;
}

static qkv_status cpu_workspace(const qkv_fwd_problem *f, const qkv_bwd_problem *b, size_t *bytes)
{
    *bytes = b ? qkv_flash_backward_workspace(b) : qkv_flash_forward_workspace(f);
    if (*bytes == SIZE_MAX)
        return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "fast path: scratch for this call does not fit in "
                        "memory");
    return QKV_OK;
}

const qkv_backend qkv_backend_cpu = {
    .name = "cpu",
    .supports = cpu_supports,
    .workspace = cpu_workspace,
    .forward = qkv_flash_attention_forward,
    .backward = cpu_backward,
};
