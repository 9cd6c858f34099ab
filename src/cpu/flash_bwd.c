/* The fast backward: the weights are recomputed tile by tile from the
 * forward's lse (nothing of size Lq x Lk is kept), with the forward's
 * kernels (kernels/kernels.h). One pass, per (batch, kv head, tile of
 * keys): the keys are the tile's rows and the query rows of the group
 * stream by in blocks (tile() says how dQ's sums keep one order). Blocks
 * that causal, the window or padding keep entirely from a tile are
 * skipped (but still passed through dQ's turn counter). The float mask's
 * gradient is left to the reference.
 *
 * bf16 Q, K, V and dO on kernels with bf16 dot products (AVX512-BF16)
 * take four of the five products on pairs, as the forward's pairs layout
 * does (flash.c): S and dP from the tile's keys and values as pairs along
 * their dims (not scaled: qk_pairs scales S) against the streamed rows'
 * pairs read in place; dV and dK from the weights and dU rounded to bf16
 * pairs of query rows against dO's and Q's rows joined in pairs. dQ = dU K
 * stays f32 (K widened), since its sums are the ones shared across tiles
 * in turn. Rounding P and dU adds about what it adds to the forward's O
 * (tests/test_dtypes.c holds dK and dV to twice the forward's bound). */
#include "cpu/flash.h"

#include "common.h"
#include "cpu/dispatch.h"
#include "threads.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#define TILE 64   /* keys of a tile */
#define STREAM 64 /* queries, streamed in blocks of this many (a block of dQ) */

/* Per-thread buffers, carved from the call's workspace (workspace_carve),
 * 64-byte aligned. */
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
    float *kbuf;   /* TILE x E: the tile's keys when K is strided */
    /* The pairs path only: */
    uint32_t *atp, *btp; /* ceil(E/2), ceil(Ev/2) x TILE: K's and V's pairs, keys along */
    uint32_t *sp, *dpp;  /* STREAM/2 x TILE: P and dU as bf16 pairs of query rows */
    uint32_t *qj, *doj;  /* STREAM/2 x E, x Ev: Q's and dO's rows joined in pairs */
    uint16_t *qh, *doh;  /* STREAM x E, x Ev: strided Q and dO rows as bf16 */
} bscratch;

typedef struct bplan {
    const qkv_bwd_problem *bp;
    const qkv_fwd_problem *p;
    const qkv_cpu_kernels *k;
    int64_t G;
    float *D; /* B x H x Lq: <dO_i, O_i> */
    /* dQ, accumulated: the output itself when it is f32 with contiguous
     * rows, else a B x H x Lq x E buffer copied out at the end. */
    float *dq;
    int64_t dq_s[3];      /* its strides for b, h, i (d is 1) */
    int64_t qblocks;      /* ceil(Lq / STREAM) */
    _Atomic int64_t *done; /* B x H x qblocks: key tiles that have added */
    int64_t ktiles;       /* ceil(Lk / TILE) */
    int64_t items;        /* B x Hkv x ktiles: the tiles, in key order per kv head */
    int in_place;         /* dq is the output itself */
    int pairs;            /* four products on bf16 pairs (the file's head says when) */
    int nthreads;         /* workers: num_threads, at most one per item */
    bscratch *w;          /* nthreads of them */
} bplan;

/* Rows r0.. of a 4-d view's (a, b) slice: in place when it is f32 with d
 * contiguous, else copied into buf (widened to f32). */
static const float *rows_of(const bplan *bl, const qkv_tensor *t, float *buf, int64_t a,
                            int64_t b, int64_t r0, int64_t n, int64_t width, int64_t *ld)
{
    if (t->stride[3] == 1 && t->dtype == QKV_DTYPE_F32) {
        *ld = t->stride[2];
        return qkv_view_at(t, a, b, r0, 0);
    }
    for (int64_t r = 0; r < n; r++) qkv_cpu_row_widen(bl->k, t, a, b, r0 + r, width, buf + r * width);
    *ld = width;
    return buf;
}

/* Rows r0..r0+n-1 of (a, b) transposed into dst (width x TILE), times
 * scale; columns past n are zero. */
static void pack_t(const qkv_tensor *t, float *dst, int64_t a, int64_t b, int64_t r0, int64_t n,
                   int64_t width, float scale)
{
    for (int64_t r = 0; r < TILE; r++) {
        if (r < n)
            qkv_row_get(t, a, b, r0 + r, width, scale, dst + r, TILE);
        else
            for (int64_t d = 0; d < width; d++) dst[d * TILE + r] = 0.0f;
    }
}

/* The softcap of a row of raw scores, keeping its derivative in tmp. */
static void softcap_row(const bplan *bl, float *srow, float *tmp, int64_t n)
{
    const float c = (float)bl->p->softcap;
    bl->k->softcap(srow, n, c);
    for (int64_t x = 0; x < n; x++) tmp[x] = 1.0f - (srow[x] / c) * (srow[x] / c);
}

/* A row of a block: query i against keys j0 .. j0+n-1 (nk of them real). */
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
    if (p->mask && p->mask->dtype == QKV_DTYPE_BOOL) {
        for (int64_t x = xlo; x <= xhi; x++)
            if (!qkv_mask_allows(p->mask, b, h, i, j0 + x)) srow[x] = -INFINITY;
    } else if (p->mask) {
        qkv_cpu_mask_add(p->mask, b, h, i, j0, xlo, xhi, srow, 1);
    }
    /* P = exp(s - lse) in srow; dprow (dP) becomes scale dU = scale P (dP - D)
     * times the softcap's derivative. Weights of exactly 0 give 0 (no 0 * NaN
     * from a value nobody may read). */
    bl->k->grad_row(srow, dprow, p->softcap > 0 ? tmp : NULL, lse, D, (float)p->scale, xlo, xhi,
                    n);
}

/* ------------------------------------------------------------ one tile */

/* Does some query of rows i0..i0+n-1 of batch b see a key of [j0, j1]? */
static int block_sees(const qkv_fwd_problem *p, int64_t b, int64_t i0, int64_t n, int64_t j0,
                      int64_t j1)
{
    for (int64_t i = i0; i < i0 + n; i++) {
        int64_t lo, hi;
        qkv_row_interval(p, b, i, &lo, &hi);
        if (lo <= j1 && hi >= j0 && lo <= hi) return 1;
    }
    return 0;
}

/* A block's scores, weights and dU (left in w->s and w->dp), and its
 * share of dV and dK, for queries i0 .. i0 + n - 1 of head h against the
 * tile's keys j0 .. j0 + nk - 1: in f32, or on bf16 pairs. */
static void block_f32(const bplan *bl, bscratch *w, int64_t b, int64_t h, int64_t i0, int64_t n,
                      int64_t j0, int64_t nk)
{
    const qkv_fwd_problem *p = bl->p;
    int64_t ldq, ldo;
    const float *q = rows_of(bl, p->q, w->rowbuf, b, h, i0, n, p->E, &ldq);
    const float *dout = rows_of(bl, bl->bp->dout, w->rowbuf2, b, h, i0, n, p->Ev, &ldo);
    /* s[i][j] = scale <q_i, k_j>, dp[i][j] = <dO_i, v_j> (keys along the vector) */
    bl->k->qk(w->at, TILE, q, ldq, w->s, TILE, TILE, n, p->E);
    bl->k->qk(w->bt, TILE, dout, ldo, w->dp, TILE, TILE, n, p->Ev);
    for (int64_t r = 0; r < n; r++)
        weights_keys(bl, w->s + r * TILE, w->dp + r * TILE, w->tmp, b, h, i0 + r, j0, TILE, nk);
    /* dV^T[c][j] += sum_i dO[i][c] P[i][j];  dK^T[d][j] += sum_i Q[i][d] scale dU[i][j] */
    bl->k->pv(w->s, TILE, dout, ldo, w->g2, TILE, w->ones, TILE, n, p->Ev);
    bl->k->pv(w->dp, TILE, q, ldq, w->g1, TILE, w->ones, TILE, n, p->E);
}

static void block_pairs(const bplan *bl, bscratch *w, int64_t b, int64_t h, int64_t i0, int64_t n,
                        int64_t j0, int64_t nk)
{
    const qkv_fwd_problem *p = bl->p;
    const qkv_cpu_kernels *k = bl->k;
    int64_t ldq, ldo;
    const uint16_t *q = qkv_cpu_rows_bits(p->q, w->qh, b, h, i0, n, p->E, &ldq);
    const uint16_t *dout = qkv_cpu_rows_bits(bl->bp->dout, w->doh, b, h, i0, n, p->Ev, &ldo);
    k->qk_pairs(w->atp, TILE, q, ldq, w->s, TILE, TILE, n, p->E, (float)p->scale);
    k->qk_pairs(w->btp, TILE, dout, ldo, w->dp, TILE, TILE, n, p->Ev, 1.0f);
    for (int64_t r = 0; r < n; r++)
        weights_keys(bl, w->s + r * TILE, w->dp + r * TILE, w->tmp, b, h, i0 + r, j0, TILE, nk);
    k->pack_pairs(w->sp, TILE, w->s, TILE, TILE, n);
    qkv_cpu_join_rows(k, dout, ldo, n, p->Ev, w->doj, p->Ev);
    k->pv_pairs(w->sp, TILE, w->doj, p->Ev, w->g2, TILE, w->ones, TILE, n, p->Ev);
    k->pack_pairs(w->dpp, TILE, w->dp, TILE, TILE, n);
    qkv_cpu_join_rows(k, q, ldq, n, p->E, w->qj, p->E);
    k->pv_pairs(w->dpp, TILE, w->qj, p->E, w->g1, TILE, w->ones, TILE, n, p->E);
}

/* Waits until `want` key tiles have added to the dQ block behind *cnt. */
static void wait_turn(_Atomic int64_t *cnt, int64_t want)
{
    for (int spins = 0; atomic_load_explicit(cnt, memory_order_acquire) != want; spins++)
        if (spins > 64) sched_yield();
}

/* Key tile t (keys j0..j0+nk-1) of (b, hk): its dK and dV, and its share
 * of dQ added in turn. For each block of STREAM queries of each head of
 * the group
 *   dV^T += dO^T P,  dK^T += scale Q^T dU   (the tile's own: one owner),
 *   dQ += scale dU K                         (shared by every key tile),
 * with P = exp(S - lse), dS = P o (dP - D), D_i = <dO_i, O_i>, and dU = dS
 * times the softcap's derivative. dQ's sums keep one order whatever the
 * thread count: the tiles of a kv head add to a block of dQ in the order
 * of their keys, each waiting (a counter per block, bl->done) until the
 * tile before it has added, so that tile t + 1 follows tile t through the
 * query blocks a step behind. Tiles are items taken in key order
 * (qkv_parallel_items), so the tile waited for is always running or
 * done. */
static void tile(const bplan *bl, bscratch *w, int64_t b, int64_t hk, int64_t t, int64_t j0,
                 int64_t nk)
{
    const qkv_fwd_problem *p = bl->p;
    const qkv_bwd_problem *bp = bl->bp;
    const float scale = (float)p->scale;
    if (bl->pairs)
        for (int64_t j = 0; j < TILE; j++) {
            if (j < nk) {
                qkv_cpu_row_pairs(p->k, b, hk, j0 + j, p->E, w->atp + j, TILE);
                qkv_cpu_row_pairs(p->v, b, hk, j0 + j, p->Ev, w->btp + j, TILE);
                continue;
            }
            for (int64_t x = 0; 2 * x < p->E; x++) w->atp[x * TILE + j] = 0;
            for (int64_t x = 0; 2 * x < p->Ev; x++) w->btp[x * TILE + j] = 0;
        }
    else {
        pack_t(p->k, w->at, b, hk, j0, nk, p->E, scale); /* scores come out scaled */
        pack_t(p->v, w->bt, b, hk, j0, nk, p->Ev, 1.0f);
    }
    int64_t ldkr;
    const float *krows = rows_of(bl, p->k, w->kbuf, b, hk, j0, nk, p->E, &ldkr);
    memset(w->g1, 0, (size_t)(p->E * TILE) * sizeof(float));
    memset(w->g2, 0, (size_t)(p->Ev * TILE) * sizeof(float));
    for (int64_t h = hk * bl->G; h < (hk + 1) * bl->G; h++) {
        for (int64_t i0 = 0; i0 < p->Lq; i0 += STREAM) {
            const int64_t n = p->Lq - i0 < STREAM ? p->Lq - i0 : STREAM;
            _Atomic int64_t *cnt = &bl->done[(b * p->H + h) * bl->qblocks + i0 / STREAM];
            if (!block_sees(p, b, i0, n, j0, j0 + nk - 1)) {
                wait_turn(cnt, t);
                atomic_store_explicit(cnt, t + 1, memory_order_release);
                continue;
            }
            if (bl->pairs)
                block_pairs(bl, w, b, h, i0, n, j0, nk);
            else
                block_f32(bl, w, b, h, i0, n, j0, nk);
            /* dQ[i][d] += sum_j scale dU[i][j] K[j][d], after the tile before. */
            float *dq = bl->dq + b * bl->dq_s[0] + h * bl->dq_s[1] + i0 * bl->dq_s[2];
            wait_turn(cnt, t);
            bl->k->axpy_rows(w->dp, TILE, n, krows, ldkr, dq, bl->dq_s[2], w->ones, nk, p->E);
            atomic_store_explicit(cnt, t + 1, memory_order_release);
        }
    }
    for (int64_t c = 0; c < nk; c++) {
        qkv_row_put(bp->dk, b, hk, j0 + c, p->E, w->g1 + c, TILE);
        qkv_row_put(bp->dv, b, hk, j0 + c, p->Ev, w->g2 + c, TILE);
    }
}

/* ------------------------------------------------------------ the call */

static void tile_item(void *vctx, int tid, int64_t it)
{
    const bplan *bl = vctx;
    const qkv_fwd_problem *p = bl->p;
    const int64_t t = it % bl->ktiles, g = it / bl->ktiles, j0 = t * TILE;
    tile(bl, &bl->w[tid], g / p->Hkv, g % p->Hkv, t, j0, p->Lk - j0 < TILE ? p->Lk - j0 : TILE);
}

/* The plan of a call with something to compute (B, Hkv > 0) on the
 * kernels k, but for the workspace. */
static void bplan_init(bplan *bl, const qkv_bwd_problem *bp, const qkv_cpu_kernels *k)
{
    const qkv_fwd_problem *p = &bp->f;
    memset(bl, 0, sizeof *bl);
    bl->bp = bp;
    bl->p = p;
    bl->k = k;
    bl->pairs = k->qk_pairs && p->q->dtype == QKV_DTYPE_BF16 && p->k->dtype == QKV_DTYPE_BF16 &&
                p->v->dtype == QKV_DTYPE_BF16 && bp->dout->dtype == QKV_DTYPE_BF16;
    bl->G = p->H / p->Hkv;
    bl->qblocks = (p->Lq + STREAM - 1) / STREAM;
    bl->ktiles = (p->Lk + TILE - 1) / TILE;
    bl->items = p->B * p->Hkv * bl->ktiles;
    bl->in_place = bp->dq->dtype == QKV_DTYPE_F32 && (bp->dq->stride[3] == 1 || p->E == 1);
    bl->nthreads = p->num_threads;
    if (bl->nthreads > bl->items) bl->nthreads = (int)(bl->items > 0 ? bl->items : 1);
}

/* One thread's buffers, carved from c (sizes only when c counts). */
static void bscratch_carve(const bplan *bl, qkv_carver *c, bscratch *w)
{
    const qkv_fwd_problem *p = bl->p;
    const size_t f = sizeof(float), keys = TILE, queries = STREAM;
    const size_t wide = (size_t)(p->E > p->Ev ? p->E : p->Ev);
    if (bl->pairs) {
        const size_t u = sizeof(uint32_t), h = sizeof(uint16_t);
        const size_t e = (size_t)p->E, ev = (size_t)p->Ev;
        w->atp = qkv_carve(c, (e + 1) / 2 * keys * u);
        w->btp = qkv_carve(c, (ev + 1) / 2 * keys * u);
        w->sp = qkv_carve(c, queries / 2 * keys * u);
        w->dpp = qkv_carve(c, queries / 2 * keys * u);
        w->qj = qkv_carve(c, queries / 2 * e * u);
        w->doj = qkv_carve(c, queries / 2 * ev * u);
        if (p->q->stride[3] != 1) w->qh = qkv_carve(c, queries * e * h);
        if (bl->bp->dout->stride[3] != 1) w->doh = qkv_carve(c, queries * ev * h);
    } else {
        w->at = qkv_carve(c, wide * keys * f);
        w->bt = qkv_carve(c, wide * keys * f);
        w->rowbuf = qkv_carve(c, queries * wide * f);
        w->rowbuf2 = qkv_carve(c, queries * wide * f);
    }
    w->s = qkv_carve(c, queries * keys * f);
    w->dp = qkv_carve(c, queries * keys * f);
    w->g1 = qkv_carve(c, wide * keys * f);
    w->g2 = qkv_carve(c, wide * keys * f);
    w->ones = qkv_carve(c, keys * f);
    w->tmp = qkv_carve(c, keys * f);
    w->kbuf = qkv_carve(c, keys * (size_t)p->E * f);
}

/* The call's workspace laid out from base: the threads' buffers, D, the
 * turn counters and, when dq is strided, its contiguous copy. Returns
 * its size in bytes (base NULL: only that) and, with a base, sets the
 * plan's pointers. */
static size_t workspace_carve(bplan *bl, void *base)
{
    const qkv_fwd_problem *p = bl->p;
    qkv_carver c = {base, 0};
    bl->w = qkv_carve(&c, (size_t)bl->nthreads * sizeof *bl->w);
    for (int t = 0; t < bl->nthreads; t++) {
        bscratch one;
        bscratch_carve(bl, &c, &one);
        if (bl->w) bl->w[t] = one;
    }
    const int64_t rows = p->B * p->H * p->Lq, nq = rows * p->E;
    const int64_t nblocks = p->B * p->H * bl->qblocks;
    bl->D = qkv_carve(&c, (size_t)(rows > 0 ? rows : 1) * sizeof(float));
    bl->done = qkv_carve(&c, (size_t)(nblocks > 0 ? nblocks : 1) * sizeof *bl->done);
    bl->dq = bl->in_place ? bl->bp->dq->data
                          : qkv_carve(&c, (size_t)(nq > 0 ? nq : 1) * sizeof(float));
    return c.used;
}

size_t qkv_flash_backward_workspace(const qkv_bwd_problem *bp)
{
    const qkv_cpu_kernels *k;
    /* An isa that cannot run: the call itself fails, before the workspace. */
    if (bp->f.B == 0 || bp->f.Hkv == 0 || qkv_cpu_kernels_get(bp->f.isa, &k) != QKV_OK) return 0;
    bplan bl;
    bplan_init(&bl, bp, k);
    return workspace_carve(&bl, NULL);
}

qkv_status qkv_flash_attention_backward(const qkv_bwd_problem *bp, void *ws)
{
    const qkv_fwd_problem *p = &bp->f;
    const qkv_cpu_kernels *k;
    qkv_status st = qkv_cpu_kernels_get(p->isa, &k);
    if (st != QKV_OK) return st;
    if (p->B == 0 || p->Hkv == 0) return QKV_OK;
    bplan bl;
    bplan_init(&bl, bp, k);
    workspace_carve(&bl, ws);
    for (int t = 0; t < bl.nthreads; t++)
        for (int64_t x = 0; x < TILE; x++) bl.w[t].ones[x] = 1.0f;
    for (int64_t b = 0; b < p->B; b++) /* D_i = <dO_i, O_i>, in double */
        for (int64_t h = 0; h < p->H; h++)
            for (int64_t i = 0; i < p->Lq; i++) {
                double acc = 0;
                for (int64_t c = 0; c < p->Ev; c++)
                    acc += (double)qkv_view_get(p->o, b, h, i, c) *
                           (double)qkv_view_get(bp->dout, b, h, i, c);
                bl.D[(b * p->H + h) * p->Lq + i] = (float)acc;
            }
    /* dQ starts at 0 and every key tile adds to it. */
    const qkv_tensor *tdq = bp->dq;
    for (int64_t x = 0; x < p->B * p->H * bl.qblocks; x++) atomic_init(&bl.done[x], 0);
    if (bl.in_place) {
        bl.dq_s[0] = tdq->stride[0];
        bl.dq_s[1] = tdq->stride[1];
        bl.dq_s[2] = tdq->stride[2];
        for (int64_t b = 0; b < p->B; b++)
            for (int64_t h = 0; h < p->H; h++)
                for (int64_t i = 0; i < p->Lq; i++) {
                    float *row = qkv_view_out(tdq, b, h, i, 0);
                    for (int64_t d = 0; d < p->E; d++) row[d * tdq->stride[3]] = 0.0f;
                }
    } else {
        bl.dq_s[0] = p->H * p->Lq * p->E;
        bl.dq_s[1] = p->Lq * p->E;
        bl.dq_s[2] = p->E;
        memset(bl.dq, 0, (size_t)(p->B * p->H * p->Lq * p->E) * sizeof(float));
    }
    st = qkv_parallel_items(p->pool, bl.items, bl.nthreads, tile_item, &bl);
    if (st == QKV_OK && !bl.in_place)
        for (int64_t b = 0; b < p->B; b++)
            for (int64_t h = 0; h < p->H; h++)
                for (int64_t i = 0; i < p->Lq; i++) /* rounded to dQ's dtype here */
                    qkv_row_put(tdq, b, h, i, p->E,
                                bl.dq + b * bl.dq_s[0] + h * bl.dq_s[1] + i * bl.dq_s[2], 1);
    return st;
}
