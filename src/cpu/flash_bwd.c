/* The fast backward: the weights are recomputed tile by tile from the
 * forward's lse (nothing of size Lq x Lk is kept), with the forward's
 * kernels (kernels/kernels.h). Two passes, so that every output element has
 * one owner and one order of sums, whatever the thread count:
 *   pass 1, per (batch, kv head, tile of keys): the keys are the tile's
 *     rows; the query rows of the group stream by. dV^T += dO^T P,
 *     dK^T += scale Q^T dU;
 *   pass 2, per (batch, head, tile of queries): as the forward, the
 *     queries are the rows; the keys stream by. dQ^T += scale K^T dU.
 * With P = exp(S - lse), dS = P o (dP - D), D_i = <dO_i, O_i>, and dU = dS
 * times the softcap's derivative. The float mask's gradient is left to the
 * reference. */
#include "../attention.h"
#include "../common.h"
#include "../threads.h"
#include "dispatch.h"
#include "flash.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TILE 64   /* rows of a tile: keys in pass 1, queries in pass 2 */
#define STREAM 64 /* the other side, streamed in blocks of this many */

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

typedef struct bplan {
    const qkv_bwd_problem *bp;
    const qkv_fwd_problem *p;
    const qkv_cpu_kernels *k;
    int64_t G;
    float *D; /* B x H x Lq: <dO_i, O_i> */
} bplan;

/* Per-thread buffers, 64-byte aligned. */
typedef struct bscratch {
    float *at;  /* max(E, Ev) x TILE: a tile's side packed transposed */
    float *bt;  /* Ev x TILE */
    float *s;   /* STREAM x TILE: scores, then weights */
    float *dp;  /* STREAM x TILE */
    float *g1;  /* E x TILE: an accumulated gradient, transposed */
    float *g2;  /* Ev x TILE */
    float *ones;
    float *tmp;    /* TILE: the softcap's derivatives of a row */
    float *rowbuf; /* STREAM x max(E, Ev): packed rows when a view is strided */
    float *rowbuf2;
} bscratch;

static void *alloc64(size_t bytes) { return aligned_alloc(64, (size_t)round_up((int64_t)bytes, 64)); }

/* Rows r0.. of a 4-d view's (a, b) slice with d contiguous: in place, or
 * copied into buf. */
static const float *rows_of(const qkv_tensor *t, float *buf, int64_t a, int64_t b, int64_t r0,
                            int64_t n, int64_t width, int64_t *ld)
{
    if (t->stride[3] == 1) {
        *ld = t->stride[2];
        return qkv_view_at(t, a, b, r0, 0);
    }
    for (int64_t r = 0; r < n; r++) {
        const float *src = qkv_view_at(t, a, b, r0 + r, 0);
        for (int64_t d = 0; d < width; d++) buf[r * width + d] = src[d * t->stride[3]];
    }
    *ld = width;
    return buf;
}

/* Rows r0..r0+n-1 of (a, b) transposed into dst (width x TILE), times
 * scale; columns past n are zero. */
static void pack_t(const qkv_tensor *t, float *dst, int64_t a, int64_t b, int64_t r0, int64_t n,
                   int64_t width, float scale)
{
    for (int64_t r = 0; r < TILE; r++) {
        const float *src = r < n ? qkv_view_at(t, a, b, r0 + r, 0) : NULL;
        for (int64_t d = 0; d < width; d++)
            dst[d * TILE + r] = src ? src[d * t->stride[3]] * scale : 0.0f;
    }
}

/* The softcap of a row of raw scores, keeping its derivative in tmp. */
static void softcap_row(const bplan *bl, float *srow, float *tmp, int64_t n)
{
    const float c = (float)bl->p->softcap;
    bl->k->softcap(srow, n, c);
    for (int64_t x = 0; x < n; x++) tmp[x] = 1.0f - (srow[x] / c) * (srow[x] / c);
}

/* P = exp(s - lse) is in srow; dprow (dP) becomes scale dU =
 * scale P (dP - D) times the softcap's derivative. Weights of exactly 0
 * give 0 (no 0 * NaN from a value nobody may read). */
static void grad_row(const bplan *bl, const float *srow, float *dprow, float *tmp,
                     const float *D, int64_t dstep, int64_t n)
{
    const float scale = (float)bl->p->scale;
    if (bl->p->softcap <= 0)
        for (int64_t x = 0; x < n; x++) tmp[x] = 1.0f;
    if (dstep == 0) { /* one D for the row: loops the compiler can vectorise */
        const float d = D[0];
        for (int64_t x = 0; x < n; x++) {
            const float g = srow[x] * (dprow[x] - d) * tmp[x] * scale;
            dprow[x] = srow[x] == 0.0f ? 0.0f : g;
        }
    } else {
        for (int64_t x = 0; x < n; x++) {
            const float g = srow[x] * (dprow[x] - D[x]) * tmp[x] * scale;
            dprow[x] = srow[x] == 0.0f ? 0.0f : g;
        }
    }
}

/* Pass 1's row: query i against keys j0 .. j0+n-1 (nk of them real). */
static void weights_keys(const bplan *bl, float *srow, float *dprow, float *tmp, int64_t b,
                         int64_t h, int64_t i, int64_t j0, int64_t n, int64_t nk)
{
    const qkv_fwd_problem *p = bl->p;
    int64_t lo, hi;
    qkv_row_interval(p, b, i, &lo, &hi);
    const float lse = *qkv_view_at(p->lse, b, h, i, 0);
    const float D = bl->D[(b * p->H + h) * p->Lq + i];
    int64_t xlo = lo - j0 > 0 ? lo - j0 : 0, xhi = hi - j0 < nk - 1 ? hi - j0 : nk - 1;
    if (lse == -INFINITY) xhi = -1; /* a row with nothing allowed */
    if (p->softcap > 0) softcap_row(bl, srow, tmp, n);
    if (p->mask)
        for (int64_t x = xlo; x <= xhi; x++) {
            if (p->mask->dtype == QKV_DTYPE_BOOL) {
                if (!qkv_mask_allows(p->mask, b, h, i, j0 + x)) srow[x] = -INFINITY;
            } else {
                srow[x] += *qkv_view_at(p->mask, b, h, i, j0 + x);
            }
        }
    for (int64_t x = 0; x < n; x++) srow[x] = x >= xlo && x <= xhi ? srow[x] - lse : -INFINITY;
    bl->k->exp_inplace(srow, n);
    grad_row(bl, srow, dprow, tmp, &D, 0, n);
}

/* Pass 2's row: key j against queries i0 .. i0+n-1, whose intervals, lse
 * (+inf for a query with nothing allowed, so that s - lse is -inf) and D
 * are given. */
static void weights_queries(const bplan *bl, float *srow, float *dprow, float *tmp, int64_t b,
                            int64_t h, int64_t j, int64_t i0, int64_t n, const int64_t *lo,
                            const int64_t *hi, const float *lse, const float *D)
{
    const qkv_fwd_problem *p = bl->p;
    if (p->softcap > 0) softcap_row(bl, srow, tmp, n);
    if (p->mask)
        for (int64_t x = 0; x < n; x++) {
            if (j < lo[x] || j > hi[x]) continue;
            if (p->mask->dtype == QKV_DTYPE_BOOL) {
                if (!qkv_mask_allows(p->mask, b, h, i0 + x, j)) srow[x] = -INFINITY;
            } else {
                srow[x] += *qkv_view_at(p->mask, b, h, i0 + x, j);
            }
        }
    for (int64_t x = 0; x < n; x++) srow[x] = j >= lo[x] && j <= hi[x] ? srow[x] - lse[x] : -INFINITY;
    bl->k->exp_inplace(srow, n);
    grad_row(bl, srow, dprow, tmp, D, 1, n);
}

/* ------------------------------------------------------------ pass 1 */

/* dK and dV of keys j0..j0+nk-1 of (b, hk). */
static void dkdv_tile(const bplan *bl, bscratch *w, int64_t b, int64_t hk, int64_t j0, int64_t nk)
{
    const qkv_fwd_problem *p = bl->p;
    const qkv_bwd_problem *bp = bl->bp;
    const float scale = (float)p->scale;
    pack_t(p->k, w->at, b, hk, j0, nk, p->E, scale); /* scores come out scaled */
    pack_t(p->v, w->bt, b, hk, j0, nk, p->Ev, 1.0f);
    memset(w->g1, 0, (size_t)(p->E * TILE) * sizeof(float));
    memset(w->g2, 0, (size_t)(p->Ev * TILE) * sizeof(float));
    for (int64_t h = hk * bl->G; h < (hk + 1) * bl->G; h++) {
        for (int64_t i0 = 0; i0 < p->Lq; i0 += STREAM) {
            const int64_t n = p->Lq - i0 < STREAM ? p->Lq - i0 : STREAM;
            int64_t ldq, ldo;
            const float *q = rows_of(p->q, w->rowbuf, b, h, i0, n, p->E, &ldq);
            const float *dout = rows_of(bp->dout, w->rowbuf2, b, h, i0, n, p->Ev, &ldo);
            /* s[i][j] = scale <q_i, k_j>, dp[i][j] = <dO_i, v_j> (keys along the vector) */
            bl->k->qk(w->at, TILE, q, ldq, w->s, TILE, TILE, n, p->E);
            bl->k->qk(w->bt, TILE, dout, ldo, w->dp, TILE, TILE, n, p->Ev);
            for (int64_t r = 0; r < n; r++)
                weights_keys(bl, w->s + r * TILE, w->dp + r * TILE, w->tmp, b, h, i0 + r, j0, TILE,
                             nk);
            /* dV^T[c][j] += sum_i dO[i][c] P[i][j];  dK^T[d][j] += sum_i Q[i][d] scale dU[i][j] */
            bl->k->pv(w->s, TILE, dout, ldo, w->g2, TILE, w->ones, TILE, n, p->Ev);
            bl->k->pv(w->dp, TILE, q, ldq, w->g1, TILE, w->ones, TILE, n, p->E);
        }
    }
    for (int64_t c = 0; c < nk; c++) {
        float *dk = qkv_view_out(bp->dk, b, hk, j0 + c, 0), *dv = qkv_view_out(bp->dv, b, hk, j0 + c, 0);
        for (int64_t d = 0; d < p->E; d++) dk[d * bp->dk->stride[3]] = w->g1[d * TILE + c];
        for (int64_t d = 0; d < p->Ev; d++) dv[d * bp->dv->stride[3]] = w->g2[d * TILE + c];
    }
}

/* ------------------------------------------------------------ pass 2 */

/* dQ of queries i0..i0+nq-1 of (b, h). */
static void dq_tile(const bplan *bl, bscratch *w, int64_t b, int64_t h, int64_t i0, int64_t nq)
{
    const qkv_fwd_problem *p = bl->p;
    const qkv_bwd_problem *bp = bl->bp;
    const float scale = (float)p->scale;
    const int64_t hk = h / bl->G;
    pack_t(p->q, w->at, b, h, i0, nq, p->E, scale);
    pack_t(bp->dout, w->bt, b, h, i0, nq, p->Ev, 1.0f);
    memset(w->g1, 0, (size_t)(p->E * TILE) * sizeof(float));
    /* Per query of the tile; padding queries (past nq) and queries with
     * nothing allowed get an empty interval. */
    int64_t lo[TILE], hi[TILE];
    float lse[TILE], D[TILE];
    int64_t first = INT64_MAX, last = -1;
    for (int64_t r = 0; r < TILE; r++) {
        lo[r] = 0;
        hi[r] = -1;
        lse[r] = 0.0f;
        D[r] = 0.0f;
        if (r >= nq) continue;
        lse[r] = *qkv_view_at(p->lse, b, h, i0 + r, 0);
        D[r] = bl->D[(b * p->H + h) * p->Lq + i0 + r];
        if (lse[r] == -INFINITY) continue;
        qkv_row_interval(p, b, i0 + r, &lo[r], &hi[r]);
        if (lo[r] <= hi[r]) {
            first = lo[r] < first ? lo[r] : first;
            last = hi[r] > last ? hi[r] : last;
        }
    }
    for (int64_t j0 = first; j0 <= last; j0 += STREAM) {
        const int64_t n = last + 1 - j0 < STREAM ? last + 1 - j0 : STREAM;
        int64_t ldk, ldv;
        const float *k = rows_of(p->k, w->rowbuf, b, hk, j0, n, p->E, &ldk);
        const float *v = rows_of(p->v, w->rowbuf2, b, hk, j0, n, p->Ev, &ldv);
        /* s[j][i] = scale <q_i, k_j>, dp[j][i] = <dO_i, v_j> (queries along the vector) */
        bl->k->qk(w->at, TILE, k, ldk, w->s, TILE, TILE, n, p->E);
        bl->k->qk(w->bt, TILE, v, ldv, w->dp, TILE, TILE, n, p->Ev);
        for (int64_t c = 0; c < n; c++)
            weights_queries(bl, w->s + c * TILE, w->dp + c * TILE, w->tmp, b, h, j0 + c, i0, TILE,
                            lo, hi, lse, D);
        /* dQ^T[d][i] += sum_j K[j][d] scale dU[j][i] */
        bl->k->pv(w->dp, TILE, k, ldk, w->g1, TILE, w->ones, TILE, n, p->E);
    }
    for (int64_t r = 0; r < nq; r++) {
        float *dq = qkv_view_out(bp->dq, b, h, i0 + r, 0);
        for (int64_t d = 0; d < p->E; d++) dq[d * bp->dq->stride[3]] = w->g1[d * TILE + r];
    }
}

/* ------------------------------------------------------------ the call */

typedef struct bctx {
    const bplan *bl;
    bscratch *w;
    int64_t ktiles, qtiles;
    int pass;
} bctx;

static void brange(void *vctx, int tid, int64_t begin, int64_t end)
{
    const bctx *c = vctx;
    const qkv_fwd_problem *p = c->bl->p;
    for (int64_t it = begin; it < end; it++) {
        if (c->pass == 1) {
            const int64_t t = it % c->ktiles, g = it / c->ktiles;
            const int64_t j0 = t * TILE;
            dkdv_tile(c->bl, &c->w[tid], g / p->Hkv, g % p->Hkv, j0,
                      p->Lk - j0 < TILE ? p->Lk - j0 : TILE);
        } else {
            const int64_t t = it % c->qtiles, g = it / c->qtiles;
            const int64_t i0 = t * TILE;
            dq_tile(c->bl, &c->w[tid], g / p->H, g % p->H, i0, p->Lq - i0 < TILE ? p->Lq - i0 : TILE);
        }
    }
}

qkv_status qkv_flash_attention_backward(const qkv_bwd_problem *bp, qkv_isa isa)
{
    const qkv_fwd_problem *p = &bp->f;
    bplan bl = {bp, p, NULL, 0, NULL};
    qkv_status st = qkv_cpu_kernels_get(isa, &bl.k);
    if (st != QKV_OK) return st;
    if (p->B == 0 || p->Hkv == 0) return QKV_OK;
    bl.G = p->H / p->Hkv;
    const int64_t rows = p->B * p->H * p->Lq;
    bl.D = malloc((size_t)(rows > 0 ? rows : 1) * sizeof(float));
    if (!bl.D) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "fast backward: cannot allocate D");
    for (int64_t b = 0; b < p->B; b++) /* D_i = <dO_i, O_i>, in double */
        for (int64_t h = 0; h < p->H; h++)
            for (int64_t i = 0; i < p->Lq; i++) {
                const float *o = qkv_view_at(p->o, b, h, i, 0), *d = qkv_view_at(bp->dout, b, h, i, 0);
                double acc = 0;
                for (int64_t c = 0; c < p->Ev; c++)
                    acc += (double)o[c * p->o->stride[3]] * (double)d[c * bp->dout->stride[3]];
                bl.D[(b * p->H + h) * p->Lq + i] = (float)acc;
            }
    bctx c = {&bl, NULL, (p->Lk + TILE - 1) / TILE, (p->Lq + TILE - 1) / TILE, 1};
    const int64_t items1 = p->B * p->Hkv * c.ktiles, items2 = p->B * p->H * c.qtiles;
    int nt = p->num_threads;
    const int64_t most = items1 > items2 ? items1 : items2;
    if (nt > most) nt = (int)(most > 0 ? most : 1);
    c.w = calloc((size_t)nt, sizeof *c.w);
    const int64_t wide = p->E > p->Ev ? p->E : p->Ev;
    const size_t f = sizeof(float);
    for (int t = 0; c.w && t < nt; t++) {
        bscratch *w = &c.w[t];
        w->at = alloc64((size_t)(wide * TILE) * f);
        w->bt = alloc64((size_t)(wide * TILE) * f);
        w->s = alloc64((size_t)(STREAM * TILE) * f);
        w->dp = alloc64((size_t)(STREAM * TILE) * f);
        w->g1 = alloc64((size_t)(wide * TILE) * f);
        w->g2 = alloc64((size_t)(wide * TILE) * f);
        w->ones = alloc64((size_t)TILE * f);
        w->tmp = alloc64((size_t)TILE * f);
        w->rowbuf = alloc64((size_t)(STREAM * wide) * f);
        w->rowbuf2 = alloc64((size_t)(STREAM * wide) * f);
        if (!w->at || !w->bt || !w->s || !w->dp || !w->g1 || !w->g2 || !w->ones || !w->tmp ||
            !w->rowbuf || !w->rowbuf2) {
            st = qkv_fail(QKV_ERR_OUT_OF_MEMORY, "fast backward: cannot allocate tiles");
            break;
        }
        for (int64_t x = 0; x < TILE; x++) w->ones[x] = 1.0f;
    }
    if (!c.w) st = qkv_fail(QKV_ERR_OUT_OF_MEMORY, "fast backward: cannot allocate scratch");
    if (st == QKV_OK && items1 > 0) st = qkv_parallel_for(items1, nt, brange, &c);
    c.pass = 2;
    if (st == QKV_OK && items2 > 0) st = qkv_parallel_for(items2, nt, brange, &c);
    for (int t = 0; c.w && t < nt; t++) {
        bscratch *w = &c.w[t];
        free(w->at);
        free(w->bt);
        free(w->s);
        free(w->dp);
        free(w->g1);
        free(w->g2);
        free(w->ones);
        free(w->tmp);
        free(w->rowbuf);
        free(w->rowbuf2);
    }
    free(c.w);
    free(bl.D);
    return st;
}
