/* The reference forward kernel: DESIGN.md §1 written as plain loops, one
 * query row at a time, every sum in double. It is the specification that
 * every faster path is tested against, so clarity wins over speed here;
 * rows are independent, which makes threading over them exact. */
#include "../attention.h"
#include "../common.h"
#include "../threads.h"

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
    int64_t d = i + p->diag_offset;
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

static void ref_row(const qkv_fwd_problem *p, double *s, double *acc, int64_t b, int64_t h,
                    int64_t i)
{
    const int64_t hk = h / (p->H / p->Hkv);
    const float *q = qkv_view_at(p->q, b, h, i, 0);
    const int64_t qs = p->q->stride[3];

    /* Steps 1-4: scores, softcap, float mask, disallowed -> -inf. */
    int any_nan = 0;
    double m = -INFINITY;
    for (int64_t j = 0; j < p->Lk; j++) {
        if (!allowed(p, b, h, i, j)) {
            s[j] = -INFINITY;
            continue;
        }
        const float *k = qkv_view_at(p->k, b, hk, j, 0);
        const int64_t ks = p->k->stride[3];
        double dot = 0.0;
        for (int64_t e = 0; e < p->E; e++) dot += (double)q[e * qs] * (double)k[e * ks];
        double sj = p->scale * dot;
        if (p->softcap > 0) sj = p->softcap * tanh(sj / p->softcap);
        if (p->mask && p->mask->dtype == QKV_DTYPE_F32) sj += (double)*qkv_view_at(p->mask, b, h, i, j);
        s[j] = sj;
        if (isnan(sj))
            any_nan = 1;
        else if (sj > m)
            m = sj;
    }
    if (any_nan) m = NAN; /* NaN reaches every weight of this row, and only it */

    float *o = qkv_view_out(p->o, b, h, i, 0);
    const int64_t os = p->o->stride[3];
    if (m == -INFINITY) {
        /* No allowed position: o = 0, p = 0, lse = -inf (never NaN). */
        for (int64_t e = 0; e < p->Ev; e++) o[e * os] = 0.0f;
        if (p->weights) {
            float *w = qkv_view_out(p->weights, b, h, i, 0);
            for (int64_t j = 0; j < p->Lk; j++) w[j * p->weights->stride[3]] = 0.0f;
        }
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
        const float *v = qkv_view_at(p->v, b, hk, j, 0);
        const int64_t vs = p->v->stride[3];
        for (int64_t e = 0; e < p->Ev; e++) acc[e] += s[j] * (double)v[e * vs];
    }
    for (int64_t e = 0; e < p->Ev; e++) o[e * os] = (float)(acc[e] / sum);
    if (p->weights) {
        float *w = qkv_view_out(p->weights, b, h, i, 0);
        for (int64_t j = 0; j < p->Lk; j++)
            w[j * p->weights->stride[3]] = signbit(s[j]) ? 0.0f : (float)(s[j] / sum);
    }
    if (p->lse) *qkv_view_out(p->lse, b, h, i, 0) = (float)(m + log(sum));
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

qkv_status qkv_ref_attention_forward(const qkv_fwd_problem *p)
{
    int64_t rows = p->B * p->H * p->Lq; /* fits: O's element count was checked */
    if (rows == 0) return QKV_OK;
    int nt = p->num_threads;
    if (nt > rows) nt = (int)rows;

    int64_t per = p->Lk + p->Ev;
    if (per == 0) per = 1;
    double **scratch = calloc((size_t)nt, sizeof *scratch);
    if (!scratch) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "reference: cannot allocate scratch");
    qkv_status st = QKV_OK;
    for (int t = 0; t < nt; t++) {
        if ((uint64_t)per > SIZE_MAX / sizeof(double) ||
            !(scratch[t] = malloc((size_t)per * sizeof(double)))) {
            st = qkv_fail(QKV_ERR_OUT_OF_MEMORY,
                          "reference: cannot allocate %lld doubles of scratch per thread",
                          (long long)per);
            break;
        }
    }
    if (st == QKV_OK) {
        ref_ctx c = {p, scratch};
        st = qkv_parallel_for(rows, nt, ref_range, &c);
    }
    for (int t = 0; t < nt; t++) free(scratch[t]);
    free(scratch);
    return st;
}
