/* The fast forward driver: FlashAttention's plan on the CPU. A work unit is
 * one tile of query rows, all query heads of one kv head (GQA reads each
 * K/V block once for the whole group) times a run of queries; it walks the
 * key blocks its rows may see with an online softmax (running max, sum and
 * rescaled output), so Lq x Lk scores never exist at once. Masks, tails,
 * strides, packing and threads live here; the arithmetic of a tile is the
 * kernels' (kernels/kernels.h).
 *
 * Determinism: a unit's arithmetic depends only on the shape, never on
 * which thread runs it or how many there are, and a decode-shaped call
 * splits its keys into chunks fixed by the shape and merges them in order.
 * So results are bitwise the same for any thread count. */
#include "cpu/flash.h"

#include "common.h"
#include "cpu/dispatch.h"
#include "ref/attention_ref.h"
#include "threads.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Keys per block. */
#define BLOCK_KEYS 128
/* Query rows a unit aims for, a multiple of QKV_TILE_ROWS. */
#define UNIT_ROWS 64
/* Decode-shaped calls: with at most this many query rows in all (B x H x
 * Lq), too few units to keep the threads busy, the keys are split into
 * chunks, as many as make about WANT_ROW_CHUNKS query rows x chunks
 * (B=1, H=32, Lq=1: 16 chunks; with 8 kv heads, 128 work items): enough
 * for the threads of a large machine, while more, smaller chunks only add
 * packing, a merge and a restart of the prefetchers' stream each (1024-key
 * chunks read 4-5 % slower than 4096-key ones here). Chunks have at least
 * CHUNK_KEYS keys and there are at most MAX_CHUNKS of them. The choice
 * depends on the shape alone (never on the thread count) and counts query
 * heads, not kv heads, so that GQA takes the path its heads repeated
 * take. */
#define SPLIT_ROWS 1024
#define SPLIT_ITEMS 2048
#define WANT_ROW_CHUNKS 512
#define CHUNK_KEYS 1024
#define MAX_CHUNKS 64
/* Calls with at most this many queries (decode) compute their units
 * row-major with the dot_rows and axpy_rows kernels, so no work goes to
 * the padding of a QKV_TILE_ROWS tile (4 query heads of a kv head fill a
 * quarter of a 16-row tile). A row's arithmetic on that path does not
 * depend on the other rows of its unit, and the choice depends on Lq
 * alone, so GQA stays bitwise equal to its heads repeated. */
#define NARROW_QUERIES 4

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

typedef struct plan {
    const qkv_fwd_problem *p;
    const qkv_cpu_kernels *k;
    int64_t G;         /* query heads per kv head */
    int64_t bq;        /* queries per unit, per head */
    int64_t rows;      /* G * bq padded to QKV_TILE_ROWS */
    int64_t qtiles;    /* ceil(Lq / bq) */
    int64_t units;     /* B * Hkv * qtiles */
    int64_t chunks;    /* key chunks per unit (1: no split) */
    int64_t chunk;     /* keys per chunk, a multiple of BLOCK_KEYS */
    int64_t ev;        /* Ev, at least 1 (buffer sizes) */
    int pack_k, pack_v; /* K or V not contiguous along d / c: copy blocks */
    int64_t narrow;    /* 0, or G * bq, the real rows of a unit, when
                          Lq <= NARROW_QUERIES: the row-major path */
    /* Split mode: unnormalised partial results per (unit, chunk). */
    float *part_o;     /* [units][chunks][ev][rows] */
    float *part_m;     /* [units][chunks][rows] */
    double *part_l;    /* [units][chunks][rows] */
    _Atomic int *out_of_memory; /* set when a row's reference redo had no memory */
} plan;

/* Per-thread scratch; the float buffers are 64-byte aligned. */
typedef struct scratch {
    float *qt;         /* E x rows: the unit's queries times scale, transposed */
    float *st;         /* BLOCK_KEYS x rows: scores, then weights, transposed */
    float *o;          /* Ev x rows: the running output, transposed */
    float *kb, *vb;    /* BLOCK_KEYS x E, x Ev: copies of strided K, V blocks */
    float *mx, *alpha; /* rows */
    double *l;         /* rows */
    unsigned char *forbid; /* BLOCK_KEYS x rows, for the careful pv */
    int64_t *lo, *hi;  /* rows: the interval of keys each row may see */
    int64_t *head, *qi; /* rows: query head and query index, -1 for padding */
    /* The row-major path only: */
    float *qr;         /* narrow x E: the queries times scale */
    float *sr;         /* narrow x BLOCK_KEYS: scores, then weights */
    float *orr;        /* narrow x Ev: the running output */
    /* Only for rows whose scores overflowed (redo_overflowed_rows): */
    int64_t *bad;      /* Lk: the keys of one head with a non-finite K or V row */
    int64_t nbad;      /* how many */
    int64_t bad_for;   /* b * Hkv + hk of the list, -1 for none yet */
} scratch;

/* ------------------------------------------------------------ packing */

/* Rows of the unit: row r is head hk*G + r / bq, query qt*bq + r % bq.
 * Each row's interval [lo, hi] folds padding, causal and the window. */
static void pack_queries(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t qt)
{
    const qkv_fwd_problem *p = pl->p;
    const float scale = (float)p->scale;
    const int64_t R = pl->rows;
    /* Row r goes along row r of sc->qr on the row-major path (whose rows
     * past pl->narrow are padding that nothing reads), else down column r
     * of sc->qt. */
    const int64_t step = pl->narrow ? 1 : R;
    for (int64_t r = 0; r < R; r++) {
        int64_t g = r / pl->bq, i = qt * pl->bq + r % pl->bq;
        float *dst = !pl->narrow ? sc->qt + r : r < pl->narrow ? sc->qr + r * p->E : NULL;
        if (g >= pl->G || i >= p->Lq) {
            for (int64_t d = 0; dst && d < p->E; d++) dst[d * step] = 0.0f;
            sc->head[r] = sc->qi[r] = -1;
            sc->lo[r] = 0;
            sc->hi[r] = -1;
            continue;
        }
        int64_t h = hk * pl->G + g;
        sc->head[r] = h;
        sc->qi[r] = i;
        const float *src = qkv_view_at(p->q, b, h, i, 0);
        for (int64_t d = 0; d < p->E; d++) dst[d * step] = src[d * p->q->stride[3]] * scale;

        qkv_row_interval(p, b, i, &sc->lo[r], &sc->hi[r]);
    }
}

/* Where keys jb.. of kv head hk are, with the leading dimension to step
 * through them: in place when the tensor is contiguous along its last dim,
 * else copied into buf. */
static const float *key_rows(const qkv_tensor *t, int pack, float *buf, int64_t b, int64_t hk,
                             int64_t jb, int64_t n, int64_t width, int64_t *ld)
{
    if (!pack) {
        *ld = t->stride[2];
        return qkv_view_at(t, b, hk, jb, 0);
    }
    for (int64_t j = 0; j < n; j++) {
        const float *src = qkv_view_at(t, b, hk, jb + j, 0);
        for (int64_t d = 0; d < width; d++) buf[j * width + d] = src[d * t->stride[3]];
    }
    *ld = width;
    return buf;
}

/* ------------------------------------------------------------ one block */

/* Scores of the unit's rows against the n keys from jb, in sc->st: scaled
 * (via the packed queries), softcapped, masked. Returns whether a real
 * row has a forbidden (-inf) position in the block. */
static int block_scores(const plan *pl, scratch *sc, int64_t b, const float *k, int64_t ldk,
                        int64_t jb, int64_t n)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t R = pl->rows;
    pl->k->qk(sc->qt, R, k, ldk, sc->st, R, R, n, p->E);
    if (p->softcap > 0)
        for (int64_t j = 0; j < n; j++) pl->k->softcap(sc->st + j * R, R, (float)p->softcap);
    const int fmask = p->mask && p->mask->dtype == QKV_DTYPE_F32;
    const int bmask = p->mask && p->mask->dtype == QKV_DTYPE_BOOL;
    /* Does a real row see less than the whole block? (Padding rows are
     * masked too, their column all -inf, but no value reaches them.) */
    int partial = 0, padded = 0;
    for (int64_t r = 0; r < R; r++) {
        if (sc->head[r] < 0)
            padded = 1;
        else if (sc->lo[r] > jb || sc->hi[r] < jb + n - 1)
            partial = 1;
    }
    if (partial || padded) /* key by key, rows along the contiguous axis */
        for (int64_t j = 0; j < n; j++) {
            float *sj = sc->st + j * R;
            const int64_t key = jb + j;
            for (int64_t r = 0; r < R; r++)
                if (key < sc->lo[r] || key > sc->hi[r]) sj[r] = -INFINITY;
        }
    if (fmask || bmask) {
        const qkv_tensor *m = p->mask;
        for (int64_t r = 0; r < R; r++) {
            if (sc->head[r] < 0) continue;
            const int64_t h = sc->head[r], i = sc->qi[r];
            const int64_t from = sc->lo[r] > jb ? sc->lo[r] - jb : 0;
            const int64_t to = sc->hi[r] < jb + n - 1 ? sc->hi[r] - jb : n - 1;
            for (int64_t j = from; j <= to; j++) {
                float *x = sc->st + j * R + r;
                if (fmask) {
                    *x += *qkv_view_at(m, b, h, i, jb + j);
                } else if (!qkv_mask_allows(m, b, h, i, jb + j)) {
                    *x = -INFINITY;
                }
            }
        }
    }
    const int forbidden = partial || fmask || bmask;
    return forbidden;
}

static int any_nonfinite(const float *v, int64_t ldv, int64_t n, int64_t ev)
{
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < ev; c++)
            if (!isfinite(v[j * ldv + c])) return 1;
    return 0;
}

/* o = o * alpha + P V skipping forbidden positions, for the rare block
 * where a forbidden key's value is NaN or infinite (0 * NaN would leak it
 * into rows that may not read it). */
static void careful_pv(const plan *pl, scratch *sc, const float *v, int64_t ldv, int64_t n)
{
    const int64_t R = pl->rows, ev = pl->p->Ev;
    for (int64_t r = 0; r < R; r++) {
        for (int64_t c = 0; c < ev; c++) sc->o[c * R + r] *= sc->alpha[r];
        for (int64_t j = 0; j < n; j++) {
            if (sc->forbid[j * R + r]) continue;
            const float pj = sc->st[j * R + r];
            for (int64_t c = 0; c < ev; c++) sc->o[c * R + r] += pj * v[j * ldv + c];
        }
    }
}

/* The key range [*first, *last] some row of the unit may see, within
 * [from, to]; empty when *first > *last. */
static void unit_key_range(const plan *pl, const scratch *sc, int64_t from, int64_t to,
                           int64_t *first, int64_t *last)
{
    int64_t lo = INT64_MAX, hi = -1;
    for (int64_t r = 0; r < pl->rows; r++) {
        if (sc->head[r] < 0 || sc->lo[r] > sc->hi[r]) continue;
        lo = sc->lo[r] < lo ? sc->lo[r] : lo;
        hi = sc->hi[r] > hi ? sc->hi[r] : hi;
    }
    *first = lo > from ? lo : from;
    *last = hi < to ? hi : to;
}

/* Blocks are the multiples of BLOCK_KEYS cut to [first, last], so where
 * they start does not depend on which rows share a unit, and keys no row
 * of the unit may see are never read (a NaN there cannot leak). The length
 * of the block starting at jb: */
static int64_t block_len(int64_t jb, int64_t last)
{
    const int64_t end = (jb / BLOCK_KEYS + 1) * BLOCK_KEYS; /* one past the block */
    return (end < last + 1 ? end : last + 1) - jb;
}

/* ------------------------------------------------------------ row-major */

/* The scores of the unit's pl->narrow rows against the n keys from jb, row
 * by row in sc->sr: scaled, softcapped, limited to each row's interval,
 * masked. Returns whether some row has a forbidden position. */
static int narrow_scores(const plan *pl, scratch *sc, int64_t b, const float *k, int64_t ldk,
                         int64_t jb, int64_t n)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t m = pl->narrow;
    pl->k->dot_rows(sc->qr, p->E, m, k, ldk, sc->sr, BLOCK_KEYS, n, p->E);
    const int fmask = p->mask && p->mask->dtype == QKV_DTYPE_F32;
    const int bmask = p->mask && p->mask->dtype == QKV_DTYPE_BOOL;
    int forbidden = fmask || bmask;
    for (int64_t r = 0; r < m; r++) {
        float *sj = sc->sr + r * BLOCK_KEYS;
        if (p->softcap > 0) pl->k->softcap(sj, n, (float)p->softcap);
        /* [from, to]: the block's keys inside the row's interval. */
        int64_t from = sc->lo[r] - jb, to = sc->hi[r] - jb;
        from = from < 0 ? 0 : from;
        to = to > n - 1 ? n - 1 : to;
        if (from > 0 || to < n - 1) forbidden = 1;
        for (int64_t j = 0; j < from && j < n; j++) sj[j] = -INFINITY;
        for (int64_t j = to + 1 > 0 ? to + 1 : 0; j < n; j++) sj[j] = -INFINITY;
        if (sc->head[r] < 0 || !(fmask || bmask)) continue;
        const int64_t h = sc->head[r], i = sc->qi[r];
        for (int64_t j = from; j <= to; j++) {
            if (fmask)
                sj[j] += *qkv_view_at(p->mask, b, h, i, jb + j);
            else if (!qkv_mask_allows(p->mask, b, h, i, jb + j))
                sj[j] = -INFINITY;
        }
    }
    return forbidden;
}

/* careful_pv for the row-major output. */
static void careful_rows(const plan *pl, scratch *sc, const float *v, int64_t ldv, int64_t n)
{
    const int64_t Ev = pl->p->Ev;
    for (int64_t r = 0; r < pl->narrow; r++) {
        float *o = sc->orr + r * pl->ev;
        for (int64_t c = 0; c < Ev; c++) o[c] *= sc->alpha[r];
        for (int64_t j = 0; j < n; j++) {
            if (sc->forbid[r * BLOCK_KEYS + j]) continue;
            for (int64_t c = 0; c < Ev; c++) o[c] += sc->sr[r * BLOCK_KEYS + j] * v[j * ldv + c];
        }
    }
}

/* ------------------------------------------------------------ the walk */

/* Walks the key blocks of [key_from, key_to] for the packed unit: sc->mx,
 * sc->l and sc->o hold the unnormalised running result afterwards. A
 * narrow unit works row-major (sc->sr, sc->orr) and transposes its output
 * into sc->o at the end for the code that follows. */
static void run_keys(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t key_from,
                     int64_t key_to)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t R = pl->rows, m = pl->narrow;
    for (int64_t r = 0; r < R; r++) {
        sc->mx[r] = -INFINITY;
        sc->l[r] = 0.0;
    }
    memset(sc->o, 0, (size_t)(R * pl->ev) * sizeof *sc->o);
    if (m) memset(sc->orr, 0, (size_t)(m * pl->ev) * sizeof *sc->orr);
    /* The scores of a block and their count, in the layout of the path. */
    float *const s = m ? sc->sr : sc->st;
    int64_t first, last;
    unit_key_range(pl, sc, key_from, key_to, &first, &last);
    for (int64_t jb = first, n; jb <= last; jb += n) {
        n = block_len(jb, last);
        int64_t ldk, ldv;
        const float *k = key_rows(p->k, pl->pack_k, sc->kb, b, hk, jb, n, p->E, &ldk);
        const float *v = key_rows(p->v, pl->pack_v, sc->vb, b, hk, jb, n, p->Ev, &ldv);
        const int forbidden =
            m ? narrow_scores(pl, sc, b, k, ldk, jb, n) : block_scores(pl, sc, b, k, ldk, jb, n);
        const int careful = forbidden && any_nonfinite(v, ldv, n, p->Ev);
        if (careful)
            for (int64_t x = 0; x < (m ? m * BLOCK_KEYS : n * R); x++)
                sc->forbid[x] = s[x] == -INFINITY;
        if (m)
            pl->k->softmax_rows(sc->sr, BLOCK_KEYS, m, n, sc->mx, sc->l, sc->alpha);
        else
            pl->k->softmax(sc->st, R, R, n, sc->mx, sc->l, sc->alpha);
        if (careful && m)
            careful_rows(pl, sc, v, ldv, n);
        else if (careful)
            careful_pv(pl, sc, v, ldv, n);
        else if (m)
            pl->k->axpy_rows(sc->sr, BLOCK_KEYS, m, v, ldv, sc->orr, pl->ev, sc->alpha, n, p->Ev);
        else
            pl->k->pv(sc->st, R, v, ldv, sc->o, R, sc->alpha, R, n, p->Ev);
    }
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < p->Ev; c++) sc->o[c * R + r] = sc->orr[r * pl->ev + c];
}

/* ------------------------------------------------------------ results */

/* The weights of the unit's rows, recomputed block by block from the final
 * max and sum: p = exp(s - mx) / l; zero where no block was visited. */
static void write_weights(const plan *pl, scratch *sc, int64_t b, int64_t hk)
{
    const qkv_fwd_problem *p = pl->p;
    const qkv_tensor *w = p->weights;
    const int64_t ws = w->stride[3], R = pl->rows;
    for (int64_t r = 0; r < R; r++) {
        if (sc->head[r] < 0) continue;
        float *row = qkv_view_out(w, b, sc->head[r], sc->qi[r], 0);
        const float fill = isnan(sc->l[r]) ? NAN : 0.0f;
        for (int64_t j = 0; j < p->Lk; j++) row[j * ws] = fill;
    }
    int64_t first, last;
    unit_key_range(pl, sc, 0, p->Lk - 1, &first, &last);
    for (int64_t jb = first, n; jb <= last; jb += n) {
        n = block_len(jb, last);
        int64_t ldk;
        const float *k = key_rows(p->k, pl->pack_k, sc->kb, b, hk, jb, n, p->E, &ldk);
        if (pl->narrow) { /* the scores the run used, row-major */
            narrow_scores(pl, sc, b, k, ldk, jb, n);
            for (int64_t r = 0; r < pl->narrow; r++) {
                if (sc->head[r] < 0 || sc->mx[r] == -INFINITY || isnan(sc->l[r])) continue;
                float *sj = sc->sr + r * BLOCK_KEYS;
                for (int64_t j = 0; j < n; j++) sj[j] -= sc->mx[r];
                pl->k->exp_inplace(sj, n);
                const float inv = (float)(1.0 / sc->l[r]);
                float *row = qkv_view_out(w, b, sc->head[r], sc->qi[r], 0);
                for (int64_t j = 0; j < n; j++) row[(jb + j) * ws] = sj[j] * inv;
            }
            continue;
        }
        block_scores(pl, sc, b, k, ldk, jb, n);
        for (int64_t j = 0; j < n; j++) { /* s - mx, row by row along the vector */
            float *sj = sc->st + j * R;
            for (int64_t r = 0; r < R; r++) sj[r] -= sc->mx[r] == -INFINITY ? 0.0f : sc->mx[r];
            pl->k->exp_inplace(sj, R);
        }
        for (int64_t r = 0; r < R; r++) {
            if (sc->head[r] < 0 || sc->mx[r] == -INFINITY || isnan(sc->l[r])) continue;
            const float inv = (float)(1.0 / sc->l[r]);
            float *row = qkv_view_out(w, b, sc->head[r], sc->qi[r], 0);
            for (int64_t j = 0; j < n; j++) row[(jb + j) * ws] = sc->st[j * R + r] * inv;
        }
    }
}

/* The keys of kv head (b, hk) whose K or V row holds a NaN or an
 * infinity, ascending, into sc->bad (once per unit, for its first suspect
 * row: a scan of the head's K and V, 1/64 of what the unit's attention
 * reads). 0 when the list cannot be allocated. */
static int find_bad_keys(const plan *pl, scratch *sc, int64_t b, int64_t hk)
{
    const qkv_fwd_problem *p = pl->p;
    if (sc->bad_for == b * p->Hkv + hk) return 1;
    if (!sc->bad && !(sc->bad = malloc((size_t)(p->Lk > 0 ? p->Lk : 1) * sizeof *sc->bad)))
        return 0;
    sc->nbad = 0;
    for (int64_t j = 0; j < p->Lk; j++) {
        int bad = 0;
        for (int64_t e = 0; e < p->E && !bad; e++) bad = !isfinite(*qkv_view_at(p->k, b, hk, j, e));
        for (int64_t e = 0; e < p->Ev && !bad; e++) bad = !isfinite(*qkv_view_at(p->v, b, hk, j, e));
        if (bad) sc->bad[sc->nbad++] = j;
    }
    sc->bad_for = b * p->Hkv + hk;
    return 1;
}

/* Does row r read a NaN or an infinity: in its query, in a float mask
 * value it may see (NaN or +inf; -inf only forbids), or in the K or V row
 * of a key it may attend? (sc->bad holds the head's bad keys.) */
static int row_reads_nonfinite(const plan *pl, const scratch *sc, int64_t b, int64_t r)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t h = sc->head[r], i = sc->qi[r], lo = sc->lo[r], hi = sc->hi[r];
    const qkv_tensor *m = p->mask;
    const int fmask = m && m->dtype == QKV_DTYPE_F32;
    for (int64_t e = 0; e < p->E; e++)
        if (!isfinite(*qkv_view_at(p->q, b, h, i, e))) return 1;
    for (int64_t j = lo; fmask && j <= hi; j++) {
        const float x = *qkv_view_at(m, b, h, i, j);
        if (isnan(x) || x == INFINITY) return 1;
    }
    for (int64_t x = 0; x < sc->nbad; x++) {
        const int64_t j = sc->bad[x];
        if (j < lo || j > hi) continue;
        if (m && (fmask ? *qkv_view_at(m, b, h, i, j) == -INFINITY
                        : !qkv_mask_allows(m, b, h, i, j)))
            continue;
        return 1;
    }
    return 0;
}

/* Scores are float: scale * <q, k> can overflow where the reference's
 * double does not (a large scale, large inputs), and so can the float sum
 * of weighted values. A row that overflowed shows it in its statistics or
 * its output: a max of +inf, a NaN from inf - inf, a max of -inf although
 * some key was open to it, or an output that is not finite. When the row
 * reads only finite inputs, that is the overflow's doing, not the data's,
 * and the reference recomputes the row (its O, weights, lse) in double,
 * so any scale the reference handles gets the reference's answer. Rows
 * that read NaN or inf keep the fast path's NaN. Costs nothing unless a
 * row is suspect. */
static void redo_overflowed_rows(const plan *pl, scratch *sc, int64_t b, int64_t hk)
{
    const qkv_fwd_problem *p = pl->p;
    for (int64_t r = 0; r < pl->rows; r++) {
        if (sc->head[r] < 0) continue;
        const int64_t h = sc->head[r], i = sc->qi[r];
        const float m = sc->mx[r];
        int suspect = m == INFINITY || isnan(m) || isnan(sc->l[r]) ||
                      (m == -INFINITY && sc->lo[r] <= sc->hi[r] &&
                       qkv_row_has_open_key(p, b, h, i));
        const float *o = qkv_view_at(p->o, b, h, i, 0);
        for (int64_t c = 0; c < p->Ev && !suspect; c++) suspect = !isfinite(o[c * p->o->stride[3]]);
        if (!suspect) continue;
        if (!find_bad_keys(pl, sc, b, hk)) {
            atomic_store(pl->out_of_memory, 1);
            return;
        }
        if (!row_reads_nonfinite(pl, sc, b, r) && !qkv_ref_attention_row(p, b, h, i))
            atomic_store(pl->out_of_memory, 1);
    }
}

/* O = o / l and lse = mx + log l for the unit's rows; the conventions of
 * DESIGN.md §1 for rows with nothing allowed (0, -inf) and NaN rows. */
static void finish_unit(const plan *pl, scratch *sc, int64_t b, int64_t hk)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t os = p->o->stride[3];
    for (int64_t r = 0; r < pl->rows; r++) {
        if (sc->head[r] < 0) continue;
        const int64_t h = sc->head[r], i = sc->qi[r];
        float *o = qkv_view_out(p->o, b, h, i, 0);
        const float *acc = sc->o + r; /* column r of the transposed output */
        float lse;
        if (isnan(sc->l[r])) {
            for (int64_t c = 0; c < p->Ev; c++) o[c * os] = NAN;
            lse = NAN;
        } else if (sc->mx[r] == -INFINITY) {
            for (int64_t c = 0; c < p->Ev; c++) o[c * os] = 0.0f;
            lse = -INFINITY;
        } else {
            const double inv = 1.0 / sc->l[r];
            for (int64_t c = 0; c < p->Ev; c++) o[c * os] = (float)(acc[c * pl->rows] * inv);
            lse = qkv_narrow((double)sc->mx[r] + log(sc->l[r]));
        }
        if (p->lse) *qkv_view_out(p->lse, b, h, i, 0) = lse;
    }
    if (p->weights) write_weights(pl, sc, b, hk);
    redo_overflowed_rows(pl, sc, b, hk);
}

/* ------------------------------------------------------------ parallel */

typedef struct run_ctx {
    const plan *pl;
    scratch *sc;
    _Atomic int64_t next;   /* the next work item to take */
    int64_t items;
    void (*item)(const plan *pl, scratch *sc, int64_t it);
    void (*progress)(void *user, double done);
    void *progress_user;
    double base, span; /* this loop's share of the call's progress */
} run_ctx;

static void unit_coords(const plan *pl, int64_t u, int64_t *b, int64_t *hk, int64_t *qt)
{
    *qt = u % pl->qtiles;
    *hk = (u / pl->qtiles) % pl->p->Hkv;
    *b = u / pl->qtiles / pl->p->Hkv;
}

/* Whole unit: all keys, then the results. */
static void item_unit(const plan *pl, scratch *sc, int64_t u)
{
    int64_t b, hk, qt;
    unit_coords(pl, u, &b, &hk, &qt);
    pack_queries(pl, sc, b, hk, qt);
    run_keys(pl, sc, b, hk, 0, pl->p->Lk - 1);
    finish_unit(pl, sc, b, hk);
}

/* One key chunk of a unit, kept unnormalised for the merge. */
static void item_chunk(const plan *pl, scratch *sc, int64_t it)
{
    const int64_t u = it / pl->chunks, c = it % pl->chunks;
    int64_t b, hk, qt;
    unit_coords(pl, u, &b, &hk, &qt);
    pack_queries(pl, sc, b, hk, qt);
    const int64_t from = c * pl->chunk;
    const int64_t to = from + pl->chunk - 1 < pl->p->Lk - 1 ? from + pl->chunk - 1 : pl->p->Lk - 1;
    run_keys(pl, sc, b, hk, from, to);
    const int64_t base = it * pl->rows;
    memcpy(pl->part_o + it * pl->ev * pl->rows, sc->o, (size_t)(pl->rows * pl->ev) * sizeof(float));
    memcpy(pl->part_m + base, sc->mx, (size_t)pl->rows * sizeof(float));
    memcpy(pl->part_l + base, sc->l, (size_t)pl->rows * sizeof(double));
}

/* The chunks of a unit merged in chunk order by their maxima, then the
 * results as for a whole unit. */
static void item_merge(const plan *pl, scratch *sc, int64_t u)
{
    int64_t b, hk, qt;
    unit_coords(pl, u, &b, &hk, &qt);
    pack_queries(pl, sc, b, hk, qt);
    for (int64_t r = 0; r < pl->rows; r++) {
        float m = -INFINITY;
        for (int64_t c = 0; c < pl->chunks; c++) {
            float mc = pl->part_m[(u * pl->chunks + c) * pl->rows + r];
            m = mc > m ? mc : m;
        }
        double l = 0.0;
        float *o = sc->o;
        for (int64_t x = 0; x < pl->ev; x++) o[x * pl->rows + r] = 0.0f;
        for (int64_t c = 0; c < pl->chunks && m != -INFINITY; c++) {
            const int64_t base = (u * pl->chunks + c) * pl->rows + r;
            const float mc = pl->part_m[base];
            if (mc == -INFINITY) continue; /* the chunk saw nothing */
            const double f = exp((double)mc - (double)m);
            l += pl->part_l[base] * f;
            const float *po = pl->part_o + (u * pl->chunks + c) * pl->ev * pl->rows;
            for (int64_t x = 0; x < pl->ev; x++)
                o[x * pl->rows + r] += (float)(po[x * pl->rows + r] * f);
        }
        for (int64_t c = 0; c < pl->chunks; c++) /* a NaN chunk makes the row NaN */
            if (isnan(pl->part_l[(u * pl->chunks + c) * pl->rows + r])) l = NAN;
        sc->mx[r] = m;
        sc->l[r] = l;
    }
    finish_unit(pl, sc, b, hk);
}

static void worker(void *vctx, int tid, int64_t begin, int64_t end)
{
    (void)begin;
    (void)end;
    run_ctx *c = vctx;
    scratch *sc = &c->sc[tid];
    const int64_t step = c->items / 100 + 1;
    for (;;) {
        int64_t it = atomic_fetch_add(&c->next, 1);
        if (it >= c->items) break;
        c->item(c->pl, sc, it);
        /* Worker 0 is the calling thread: it reports, others never do. */
        if (tid == 0 && c->progress && it % step == 0)
            c->progress(c->progress_user, c->base + c->span * (double)it / (double)c->items);
    }
}

/* Runs item(0 .. items-1) on nthreads threads; progress reports cover
 * [base, base + span] of the whole call. */
static qkv_status run_items(const plan *pl, scratch *sc, int nthreads, int64_t items,
                            void (*item)(const plan *, scratch *, int64_t), double base,
                            double span)
{
    run_ctx c;
    c.pl = pl;
    c.sc = sc;
    atomic_init(&c.next, 0);
    c.items = items;
    c.item = item;
    c.progress = pl->p->progress;
    c.progress_user = pl->p->progress_user;
    c.base = base;
    c.span = span;
    /* One slice per thread: the slices are ignored, items are taken from
     * the shared counter so that causal's uneven units balance. */
    return qkv_parallel_for(nthreads, nthreads, worker, &c);
}

/* ------------------------------------------------------------ the call */

static void *alloc64(size_t bytes) { return aligned_alloc(64, round_up((int64_t)bytes, 64)); }

static void scratch_free(scratch *sc)
{
    free(sc->qt);
    free(sc->st);
    free(sc->o);
    free(sc->kb);
    free(sc->vb);
    free(sc->mx);
    free(sc->alpha);
    free(sc->l);
    free(sc->forbid);
    free(sc->lo);
    free(sc->hi);
    free(sc->head);
    free(sc->qi);
    free(sc->qr);
    free(sc->sr);
    free(sc->orr);
    free(sc->bad);
}

static int scratch_alloc(const plan *pl, scratch *sc)
{
    const size_t f = sizeof(float), rows = (size_t)pl->rows;
    const size_t e = (size_t)pl->p->E, ev = (size_t)(pl->p->Ev > 0 ? pl->p->Ev : 1);
    memset(sc, 0, sizeof *sc);
    sc->bad_for = -1;
    sc->qt = alloc64(e * rows * f);
    sc->st = alloc64((size_t)BLOCK_KEYS * rows * f);
    sc->o = alloc64(rows * (size_t)pl->ev * f);
    sc->kb = pl->pack_k ? alloc64((size_t)BLOCK_KEYS * e * f) : NULL;
    sc->vb = pl->pack_v ? alloc64((size_t)BLOCK_KEYS * ev * f) : NULL;
    sc->mx = alloc64(rows * f);
    sc->alpha = alloc64(rows * f);
    sc->l = alloc64(rows * sizeof(double));
    sc->forbid = alloc64((size_t)BLOCK_KEYS * rows);
    sc->lo = alloc64(rows * sizeof(int64_t));
    sc->hi = alloc64(rows * sizeof(int64_t));
    sc->head = alloc64(rows * sizeof(int64_t));
    sc->qi = alloc64(rows * sizeof(int64_t));
    if (pl->narrow) {
        const size_t m = (size_t)pl->narrow;
        sc->qr = alloc64(m * e * f);
        sc->sr = alloc64(m * (size_t)BLOCK_KEYS * f);
        sc->orr = alloc64(m * (size_t)pl->ev * f);
        if (!sc->qr || !sc->sr || !sc->orr) return 0;
    }
    return sc->qt && sc->st && sc->o && (sc->kb || !pl->pack_k) && (sc->vb || !pl->pack_v) &&
           sc->mx && sc->alpha && sc->l && sc->forbid && sc->lo && sc->hi && sc->head && sc->qi;
}

qkv_status qkv_flash_attention_forward(const qkv_fwd_problem *p)
{
    plan pl;
    memset(&pl, 0, sizeof pl);
    qkv_status st = qkv_cpu_kernels_get(p->isa, &pl.k);
    if (st != QKV_OK) return st;
    if (p->B == 0 || p->H == 0 || p->Lq == 0) return QKV_OK;
    _Atomic int out_of_memory = 0;
    pl.p = p;
    pl.out_of_memory = &out_of_memory;
    pl.G = p->H / p->Hkv;
    pl.bq = UNIT_ROWS / pl.G > 1 ? UNIT_ROWS / pl.G : 1;
    if (pl.bq > p->Lq) pl.bq = p->Lq;
    pl.rows = round_up(pl.G * pl.bq, QKV_TILE_ROWS);
    pl.narrow = p->Lq <= NARROW_QUERIES ? pl.G * pl.bq : 0;
    pl.qtiles = (p->Lq + pl.bq - 1) / pl.bq;
    pl.units = p->B * p->Hkv * pl.qtiles;
    pl.ev = p->Ev > 0 ? p->Ev : 1;
    pl.pack_k = p->k->stride[3] != 1;
    pl.pack_v = p->v->stride[3] != 1;
    pl.chunks = 1;
    pl.chunk = round_up(p->Lk > 0 ? p->Lk : 1, BLOCK_KEYS);
    const int64_t qrows = p->B * p->H * p->Lq;
    if (qrows <= SPLIT_ROWS && p->Lk >= 2 * CHUNK_KEYS) {
        /* About WANT_ROW_CHUNKS / qrows; at most MAX_CHUNKS, and at most
         * SPLIT_ITEMS / qrows, so that the partial results stay
         * O(SPLIT_ITEMS x tile x Ev). */
        int64_t most = SPLIT_ITEMS / qrows;
        most = most < MAX_CHUNKS ? most : MAX_CHUNKS;
        int64_t want = (WANT_ROW_CHUNKS + qrows - 1) / qrows;
        want = want < 2 ? 2 : want;
        most = want < most ? want : most;
        if (most >= 2) {
            pl.chunk = round_up((p->Lk + most - 1) / most, BLOCK_KEYS);
            if (pl.chunk < CHUNK_KEYS) pl.chunk = CHUNK_KEYS;
            pl.chunks = (p->Lk + pl.chunk - 1) / pl.chunk;
        }
    }

    int nt = p->num_threads;
    const int64_t items = pl.units * pl.chunks;
    if (nt > items) nt = (int)items;
    scratch *sc = calloc((size_t)nt, sizeof *sc);
    if (!sc) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "fast path: cannot allocate scratch");
    st = QKV_OK;
    for (int t = 0; t < nt && st == QKV_OK; t++)
        if (!scratch_alloc(&pl, &sc[t]))
            st = qkv_fail(QKV_ERR_OUT_OF_MEMORY, "fast path: cannot allocate tile buffers");
    if (st == QKV_OK && pl.chunks > 1) {
        const size_t n = (size_t)(items * pl.rows);
        pl.part_o = alloc64(n * (size_t)pl.ev * sizeof(float));
        pl.part_m = alloc64(n * sizeof(float));
        pl.part_l = alloc64(n * sizeof(double));
        if (!pl.part_o || !pl.part_m || !pl.part_l)
            st = qkv_fail(QKV_ERR_OUT_OF_MEMORY, "fast path: cannot allocate %lld key chunks",
                          (long long)items);
    }
    if (st == QKV_OK) {
        if (pl.chunks == 1) {
            st = run_items(&pl, sc, nt, pl.units, item_unit, 0.0, 1.0);
        } else { /* progress: the chunks, then the (shorter) merges */
            const double split = (double)items / (double)(items + pl.units);
            st = run_items(&pl, sc, nt, items, item_chunk, 0.0, split);
            if (st == QKV_OK) {
                int nm = nt < pl.units ? nt : (int)pl.units;
                st = run_items(&pl, sc, nm, pl.units, item_merge, split, 1.0 - split);
            }
        }
    }
    if (st == QKV_OK && atomic_load(&out_of_memory))
        st = qkv_fail(QKV_ERR_OUT_OF_MEMORY, "fast path: cannot allocate the reference's scratch "
                      "for a row whose float scores overflowed");
    for (int t = 0; t < nt; t++) scratch_free(&sc[t]);
    free(sc);
    free(pl.part_o);
    free(pl.part_m);
    free(pl.part_l);
    return st;
}
