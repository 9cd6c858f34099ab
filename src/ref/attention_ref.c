/* The reference forward kernel: DESIGN.md §1 written as plain loops, one
 * query row at a time, every sum in double. It is the specification that
 * every faster path is tested against, so clarity wins over speed here;
 * rows are independent, which makes threading over them exact. */
#include "ref/attention_ref.h"

#include "common.h"
#include "threads.h"

#include <math.h>
#include <stdlib.h>

/* Per-thread scratch: Lk scores and Ev output accumulators. */
typedef struct ref_ctx {
    const qkv_fwd_problem *p;
    double **scratch;
} ref_ctx;

/* Step 4: may row i of (b, h) attend to key j? (The float mask is additive
 * and handled with the scores, not here.) */
static int allowed(const qkv_fwd_problem *p, int64_t b, int64_t h, int64_t i, int64_t j)
{
    const int64_t d = qkv_row_diag(p, b, i);
    if (p->kv_lens && j >= p->kv_lens[b]) return 0;
    if (p->causal && j > d) return 0;
    if (p->use_window) { /* d - j and j - d cannot overflow; d - left could */
        if (p->window_left >= 0 && d - j > p->window_left) return 0;
        if (p->window_right >= 0 && j - d > p->window_right) return 0;
    }
    if (p->mask && p->mask->dtype == QKV_DTYPE_BOOL && !qkv_mask_allows(p->mask, b, h, i, j))
        return 0;
    return 1;
}

/* Step 3's additive mask value of (b, h, i, j); 0 without a float mask. */
static float mask_add(const qkv_fwd_problem *p, int64_t b, int64_t h, int64_t i, int64_t j)
{
    return p->mask && p->mask->dtype != QKV_DTYPE_BOOL ? qkv_view_get(p->mask, b, h, i, j) : 0.0f;
}

int qkv_row_has_open_key(const qkv_fwd_problem *p, int64_t b, int64_t h, int64_t i)
{
    for (int64_t j = 0; j < p->Lk; j++)
        if (allowed(p, b, h, i, j) && mask_add(p, b, h, i, j) != -INFINITY) return 1;
    return 0;
}

static void ref_row(const qkv_fwd_problem *p, double *s, double *acc, int64_t b, int64_t h,
                    int64_t i)
{
    const int64_t hk = h / (p->H / p->Hkv);
    /* Steps 1-4: scores, softcap, float mask, disallowed -> -inf. */
    int any_nan = 0;
    double m = -INFINITY;
    for (int64_t j = 0; j < p->Lk; j++) {
        if (!allowed(p, b, h, i, j)) {
            s[j] = -INFINITY;
            continue;
        }
        double dot = 0.0;
        for (int64_t e = 0; e < p->E; e++)
            dot += (double)qkv_view_get(p->q, b, h, i, e) * (double)qkv_view_get(p->k, b, hk, j, e);
        double sj = p->scale * dot;
        if (p->softcap > 0) sj = p->softcap * tanh(sj / p->softcap);
        if (p->mask && p->mask->dtype != QKV_DTYPE_BOOL)
            sj += (double)qkv_view_get(p->mask, b, h, i, j);
        s[j] = sj;
        if (isnan(sj))
            any_nan = 1;
        else if (sj > m)
            m = sj;
    }
    if (any_nan) m = NAN; /* NaN reaches every weight of this row, and only it */

    if (m == -INFINITY) {
        /* No allowed position: o = 0, p = 0, lse = -inf (never NaN). */
        for (int64_t e = 0; e < p->Ev; e++) qkv_view_put(p->o, b, h, i, e, 0.0f);
        if (p->weights)
            for (int64_t j = 0; j < p->Lk; j++) qkv_view_put(p->weights, b, h, i, j, 0.0f);
        if (p->lse) *qkv_view_out(p->lse, b, h, i, 0) = -INFINITY;
        return;
    }

    /* Step 5: softmax relative to the row maximum. A forbidden position
     * (score -inf) is marked by a weight of -0.0, which exp never returns:
     * step 6 skips exactly those, so a NaN value nobody may attend to stays
     * out, while an allowed one whose weight underflowed to +0 still reads
     * its value (0 * NaN = NaN, as PyTorch gives). */
    double sum = 0.0;
    for (int64_t j = 0; j < p->Lk; j++) {
        s[j] = s[j] == -INFINITY && !any_nan ? -0.0 : exp(s[j] - m);
        sum += s[j];
    }

    /* Step 6: weighted sum of values. */
    for (int64_t e = 0; e < p->Ev; e++) acc[e] = 0.0;
    for (int64_t j = 0; j < p->Lk; j++) {
        if (signbit(s[j])) continue;
        for (int64_t e = 0; e < p->Ev; e++)
            acc[e] += s[j] * (double)qkv_view_get(p->v, b, hk, j, e);
    }
    /* Each result is rounded once, from double to the output's dtype. */
    for (int64_t e = 0; e < p->Ev; e++) qkv_view_put_f64(p->o, b, h, i, e, acc[e] / sum);
    if (p->weights)
        for (int64_t j = 0; j < p->Lk; j++)
            qkv_view_put_f64(p->weights, b, h, i, j, signbit(s[j]) ? 0.0 : s[j] / sum);
    if (p->lse) *qkv_view_out(p->lse, b, h, i, 0) = qkv_narrow(m + log(sum));
}

int qkv_ref_attention_row(const qkv_fwd_problem *p, int64_t b, int64_t h, int64_t i)
{
    const int64_t per = p->Lk + p->Ev > 0 ? p->Lk + p->Ev : 1;
    double *s = (uint64_t)per <= SIZE_MAX / sizeof(double) ? malloc((size_t)per * sizeof(double))
                                                          : NULL;
    if (!s) return 0;
    ref_row(p, s, s + p->Lk, b, h, i);
    free(s);
    return 1;
}

static void ref_range(void *vctx, int tid, int64_t begin, int64_t end)
{
    const ref_ctx *c = vctx;
    const qkv_fwd_problem *p = c->p;
    double *s = c->scratch[tid];
    double *acc = s + p->Lk;
    /* Worker 0 runs on the calling thread (threads.h) and its slice is as
     * long as any other, so its share done is the call's progress. */
    const int report = tid == 0 && p->progress;
    const int64_t step = (end - begin) / 100 + 1;
    for (int64_t r = begin; r < end; r++) {
        int64_t i = r % p->Lq;
        int64_t bh = r / p->Lq;
        ref_row(p, s, acc, bh / p->H, bh % p->H, i);
        if (report && (r - begin + 1) % step == 0)
            p->progress(p->progress_user, (double)(r - begin + 1) / (double)(end - begin));
    }
}

/* The forward's workspace: min(threads, rows) slices of Lk + Ev doubles,
 * then the array of their addresses. Returns its size (SIZE_MAX when it
 * does not fit), and with a base the slices in *scratch. */
static size_t fwd_carve(const qkv_fwd_problem *p, void *base, int *nt, double ***scratch)
{
    const int64_t rows = p->B * p->H * p->Lq; /* fits: O's element count was checked */
    *nt = p->num_threads < rows ? p->num_threads : (int)rows;
    const uint64_t per = (uint64_t)(p->Lk + p->Ev > 0 ? p->Lk + p->Ev : 1);
    qkv_carver c = {base, 0};
    *scratch = qkv_carve(&c, (size_t)*nt * sizeof **scratch);
    for (int t = 0; t < *nt; t++) {
        double *slice = qkv_carve(&c, per > SIZE_MAX / sizeof(double) ? SIZE_MAX
                                                                       : (size_t)per * sizeof(double));
        if (*scratch) (*scratch)[t] = slice;
    }
    return c.used;
}

static qkv_status ref_forward_workspace(const qkv_fwd_problem *p, size_t *bytes)
{
    int nt;
    double **scratch;
    *bytes = p->B * p->H * p->Lq == 0 ? 0 : fwd_carve(p, NULL, &nt, &scratch);
    if (*bytes == SIZE_MAX)
        return qkv_fail(QKV_ERR_OUT_OF_MEMORY,
                        "reference: cannot allocate %lld doubles of scratch per thread",
                        (long long)(p->Lk + p->Ev));
    return QKV_OK;
}

static qkv_status ref_forward(const qkv_fwd_problem *p, void *ws)
{
    const int64_t rows = p->B * p->H * p->Lq;
    if (rows == 0) return QKV_OK;
    ref_ctx c = {p, NULL};
    int nt;
    fwd_carve(p, ws, &nt, &c.scratch);
    return qkv_parallel_for(p->pool, rows, nt, ref_range, &c);
}

/* ------------------------------------------------------------ backward */

/* Per-thread scratch of the reference backward, all double: the scores,
 * weights and softcap derivatives of one row, its output, dQ row, and the
 * dK, dV of one (b, kv head) group. */
typedef struct bwd_scratch {
    double *s, *pw, *deriv, *o, *dq, *dk, *dv;
    double *qrow, *drow; /* the row's Q and dO, widened */
} bwd_scratch;

typedef struct bwd_ctx {
    const qkv_bwd_problem *bp;
    bwd_scratch *sc;
    double *dmask; /* NULL, or the mask's own shape, when requested (one thread) */
} bwd_ctx;

/* Index into the float mask's own (unbroadcast) shape of (b, h, i, j). */
static int64_t mask_index(const qkv_tensor *m, int64_t b, int64_t h, int64_t i, int64_t j)
{
    const int64_t ib = m->shape[0] == 1 ? 0 : b, ih = m->shape[1] == 1 ? 0 : h;
    const int64_t ii = m->shape[2] == 1 ? 0 : i, ij = m->shape[3] == 1 ? 0 : j;
    return ((ib * m->shape[1] + ih) * m->shape[2] + ii) * m->shape[3] + ij;
}

/* One query row: the forward recomputed in double, then
 *   D = <dO_i, O_i>;  dP_j = <dO_i, v_j>;  dS_j = p_j (dP_j - D);
 *   through the softcap, dU_j = dS_j (1 - tanh^2(u_j / c));
 *   dQ_i += scale dU_j k_j;  dK_j += scale dU_j q_i;  dV_j += p_j dO_i;
 *   the float mask's gradient is dS itself. Forbidden keys get nothing. */
static void bwd_row(const bwd_ctx *c, bwd_scratch *w, int64_t b, int64_t h, int64_t i)
{
    const qkv_bwd_problem *bp = c->bp;
    const qkv_fwd_problem *p = &bp->f;
    const int64_t hk = h / (p->H / p->Hkv);
    const int fmask = p->mask && p->mask->dtype != QKV_DTYPE_BOOL;
    /* Q's and dO's row, widened once (exactly). */
    double *q = w->qrow, *dout = w->drow;
    for (int64_t e = 0; e < p->E; e++) q[e] = qkv_view_get(p->q, b, h, i, e);
    for (int64_t e = 0; e < p->Ev; e++) dout[e] = qkv_view_get(bp->dout, b, h, i, e);

    int any_nan = 0;
    double m = -INFINITY;
    for (int64_t j = 0; j < p->Lk; j++) {
        if (!allowed(p, b, h, i, j)) {
            w->s[j] = -INFINITY;
            continue;
        }
        double dot = 0.0;
        for (int64_t e = 0; e < p->E; e++) dot += q[e] * (double)qkv_view_get(p->k, b, hk, j, e);
        double u = p->scale * dot, sj = u;
        w->deriv[j] = 1.0;
        if (p->softcap > 0) {
            const double t = tanh(u / p->softcap);
            sj = p->softcap * t;
            w->deriv[j] = 1.0 - t * t;
        }
        if (fmask) sj += (double)qkv_view_get(p->mask, b, h, i, j);
        w->s[j] = sj;
        if (isnan(sj))
            any_nan = 1;
        else if (sj > m)
            m = sj;
    }
    if (any_nan) m = NAN;
    for (int64_t e = 0; e < p->E; e++) w->dq[e] = 0.0;
    if (m != -INFINITY) {
        double sum = 0.0;
        for (int64_t j = 0; j < p->Lk; j++) {
            /* -0.0 marks a forbidden key, as in the forward. */
            w->pw[j] = w->s[j] == -INFINITY && !any_nan ? -0.0 : exp(w->s[j] - m);
            sum += w->pw[j];
        }
        for (int64_t e = 0; e < p->Ev; e++) w->o[e] = 0.0;
        for (int64_t j = 0; j < p->Lk; j++) {
            if (signbit(w->pw[j])) continue;
            w->pw[j] /= sum;
            for (int64_t e = 0; e < p->Ev; e++)
                w->o[e] += w->pw[j] * (double)qkv_view_get(p->v, b, hk, j, e);
        }
        double D = 0.0;
        for (int64_t e = 0; e < p->Ev; e++) D += dout[e] * w->o[e];
        for (int64_t j = 0; j < p->Lk; j++) {
            if (signbit(w->pw[j])) continue;
            double dp = 0.0;
            for (int64_t e = 0; e < p->Ev; e++)
                dp += dout[e] * (double)qkv_view_get(p->v, b, hk, j, e);
            const double dsj = w->pw[j] * (dp - D);
            if (c->dmask) c->dmask[mask_index(bp->dmask, b, h, i, j)] += dsj;
            const double du = dsj * w->deriv[j] * p->scale;
            double *dkj = w->dk + j * p->E, *dvj = w->dv + j * p->Ev;
            for (int64_t e = 0; e < p->E; e++) {
                w->dq[e] += du * (double)qkv_view_get(p->k, b, hk, j, e);
                dkj[e] += du * q[e];
            }
            for (int64_t e = 0; e < p->Ev; e++) dvj[e] += w->pw[j] * dout[e];
        }
    }
    for (int64_t e = 0; e < p->E; e++) qkv_view_put_f64(bp->dq, b, h, i, e, w->dq[e]);
}

/* Items are (b, kv head) groups: a group's dK and dV belong to it alone, so
 * no two threads ever add to one element and the sums keep one order. */
static void bwd_range(void *vctx, int tid, int64_t begin, int64_t end)
{
    const bwd_ctx *c = vctx;
    const qkv_fwd_problem *p = &c->bp->f;
    bwd_scratch *w = &c->sc[tid];
    const int64_t G = p->H / p->Hkv;
    for (int64_t it = begin; it < end; it++) {
        /* Worker 0 is the calling thread: its share done is the call's. */
        if (tid == 0 && p->progress && it > begin)
            p->progress(p->progress_user, (double)(it - begin) / (double)(end - begin));
        const int64_t b = it / p->Hkv, hk = it % p->Hkv;
        for (int64_t x = 0; x < p->Lk * p->E; x++) w->dk[x] = 0.0;
        for (int64_t x = 0; x < p->Lk * p->Ev; x++) w->dv[x] = 0.0;
        for (int64_t h = hk * G; h < (hk + 1) * G; h++)
            for (int64_t i = 0; i < p->Lq; i++) bwd_row(c, w, b, h, i);
        const qkv_tensor *dk = c->bp->dk, *dv = c->bp->dv;
        for (int64_t j = 0; j < p->Lk; j++) {
            for (int64_t e = 0; e < p->E; e++) qkv_view_put_f64(dk, b, hk, j, e, w->dk[j * p->E + e]);
            for (int64_t e = 0; e < p->Ev; e++)
                qkv_view_put_f64(dv, b, hk, j, e, w->dv[j * p->Ev + e]);
        }
    }
}

/* The backward's workspace: min(threads, B x Hkv) scratches (one thread
 * with dmask, so that its sums keep one order), each Lk x (E + Ev) + 3 Lk
 * + 2 (E + Ev) doubles, then dmask's sums in its own shape. Returns its size
 * (SIZE_MAX when it does not fit), and with a base fills c. */
static size_t bwd_carve(const qkv_bwd_problem *bp, void *base, int *nt, bwd_ctx *c)
{
    const qkv_fwd_problem *p = &bp->f;
    const int64_t items = p->B * p->Hkv;
    *nt = bp->dmask ? 1 : p->num_threads;
    if (*nt > items) *nt = (int)items;
    int64_t per_thread; /* doubles, checked for overflow like every size */
    if (!qkv_mul_ok(p->Lk, p->E + p->Ev, &per_thread) ||
        !qkv_add_ok(per_thread, 3 * p->Lk + 2 * (p->E + p->Ev), &per_thread) ||
        (uint64_t)per_thread > SIZE_MAX / sizeof(double))
        return SIZE_MAX;
    qkv_carver cv = {base, 0};
    c->bp = bp;
    c->sc = qkv_carve(&cv, (size_t)*nt * sizeof(bwd_scratch));
    for (int t = 0; t < *nt; t++) {
        bwd_scratch w;
        const size_t d = sizeof(double);
        w.s = qkv_carve(&cv, (size_t)p->Lk * d);
        w.pw = qkv_carve(&cv, (size_t)p->Lk * d);
        w.deriv = qkv_carve(&cv, (size_t)p->Lk * d);
        w.o = qkv_carve(&cv, (size_t)p->Ev * d);
        w.dq = qkv_carve(&cv, (size_t)p->E * d);
        w.dk = qkv_carve(&cv, (size_t)(p->Lk * p->E) * d);
        w.dv = qkv_carve(&cv, (size_t)(p->Lk * p->Ev) * d);
        w.qrow = qkv_carve(&cv, (size_t)p->E * d);
        w.drow = qkv_carve(&cv, (size_t)p->Ev * d);
        if (c->sc) c->sc[t] = w;
    }
    c->dmask = NULL;
    if (bp->dmask) {
        const qkv_tensor *dm = bp->dmask; /* its element count was checked */
        const int64_t nm = dm->shape[0] * dm->shape[1] * dm->shape[2] * dm->shape[3];
        c->dmask = qkv_carve(&cv, (size_t)nm * sizeof(double));
    }
    return cv.used;
}

static qkv_status ref_backward_workspace(const qkv_bwd_problem *bp, size_t *bytes)
{
    int nt;
    bwd_ctx c;
    *bytes = bp->f.B * bp->f.Hkv == 0 ? 0 : bwd_carve(bp, NULL, &nt, &c);
    if (*bytes == SIZE_MAX)
        return qkv_fail(QKV_ERR_OVERFLOW, "reference backward: scratch of Lk x (E + Ev) overflows");
    return QKV_OK;
}

static qkv_status ref_backward(const qkv_bwd_problem *bp, void *ws)
{
    const qkv_fwd_problem *p = &bp->f;
    const int64_t items = p->B * p->Hkv;
    if (items == 0) return QKV_OK;
    int nt;
    bwd_ctx c;
    bwd_carve(bp, ws, &nt, &c);
    const qkv_tensor *dm = bp->dmask;
    const int64_t nm = dm ? dm->shape[0] * dm->shape[1] * dm->shape[2] * dm->shape[3] : 0;
    for (int64_t x = 0; x < nm; x++) c.dmask[x] = 0.0; /* the sums start at 0 */
    qkv_status st = qkv_parallel_for(p->pool, items, nt, bwd_range, &c);
    if (st == QKV_OK && c.dmask)
        for (int64_t a = 0; a < dm->shape[0]; a++)
            for (int64_t h = 0; h < dm->shape[1]; h++)
                for (int64_t i = 0; i < dm->shape[2]; i++)
                    for (int64_t j = 0; j < dm->shape[3]; j++)
                        qkv_view_put_f64(dm, a, h, i, j,
                                         c.dmask[((a * dm->shape[1] + h) * dm->shape[2] + i) *
                                                     dm->shape[3] +
                                                 j]);
    return st;
}

/* The workspace asked of every backend, forward (b NULL) or backward. */
static qkv_status ref_workspace(const qkv_fwd_problem *f, const qkv_bwd_problem *b, size_t *bytes)
{
    return b ? ref_backward_workspace(b, bytes) : ref_forward_workspace(f, bytes);
}

/* A whole backward run with a workspace of its own, for the CPU backend,
 * which hands the reference the calls whose float gradients overflowed. */
qkv_status qkv_ref_attention_backward(const qkv_bwd_problem *bp)
{
    size_t bytes;
    QKV_TRY(ref_backward_workspace(bp, &bytes));
    void *ws = bytes ? qkv_alloc(bytes) : NULL;
    if (bytes && !ws)
        return qkv_fail(QKV_ERR_OUT_OF_MEMORY,
                        "reference backward: cannot allocate %zu bytes of scratch", bytes);
    const qkv_status st = ref_backward(bp, ws);
    qkv_free(ws);
    return st;
}
/* The reference computes every problem the library validates. */
static int ref_supports(const qkv_fwd_problem *f, const qkv_bwd_problem *b, const char **why)
{
    (void)f;
    (void)b;
    (void)why;
    return 1;
}

const qkv_backend qkv_backend_reference = {
    .name = "reference",
    .supports = ref_supports,
    .workspace = ref_workspace,
    .forward = ref_forward,
    .backward = ref_backward,
};
