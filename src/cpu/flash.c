/* The fast forward driver: FlashAttention's plan on the CPU. A work unit is
 * one tile of query rows, all query heads of one kv head (GQA reads each
 * K/V block once for the whole group) times a run of queries; it walks the
 * key blocks its rows may see with an online softmax (running max, sum and
 * rescaled output), so Lq x Lk scores never exist at once. Masks, tails,
 * strides, packing and threads live here; the arithmetic of a tile is the
 * kernels' (kernels/kernels.h).
 *
 * A unit's rows are laid out one of three ways, each a set of functions
 * (struct layout): the tiled walk (rows down the columns of a
 * QKV_TILE_ROWS tile, the qk/softmax/pv kernels), the same walk on bf16
 * pairs where the kernels have bf16 dot products (qk_pairs/pv_pairs), and
 * the row-major walk of decode-shaped calls (dot_rows/softmax_rows/
 * axpy_rows). And a call runs
 * one of two paths: every unit over all its keys (forward_units), or,
 * when there are too few units for the threads, every unit's keys in
 * chunks merged afterwards (forward_split). qkv_flash_attention_forward
 * plans the call and picks both.
 *
 * Determinism: a unit's arithmetic depends only on the shape, never on
 * which thread runs it or how many there are, and a split call cuts its
 * keys into chunks fixed by the shape and merges them in order. So
 * results are bitwise the same for any thread count. */
#include "cpu/flash.h"

#include "common.h"
#include "cpu/dispatch.h"
#include "ref/attention_ref.h"
#include "threads.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

/* Keys per block. */
#define BLOCK_KEYS 128
/* Query rows a unit aims for, a multiple of QKV_TILE_ROWS. */
#define UNIT_ROWS 64
/* When keys split (plan_split says why): at most SPLIT_ROWS query rows
 * in all, about WANT_ROW_CHUNKS query rows x chunks, at most SPLIT_ITEMS
 * of them, chunks of at least CHUNK_KEYS keys and at most MAX_CHUNKS. */
#define SPLIT_ROWS 1024
#define SPLIT_ITEMS 2048
#define WANT_ROW_CHUNKS 512
#define CHUNK_KEYS 1024
#define MAX_CHUNKS 64
/* Calls with at most this many queries take the row-major layout
 * (layout_rows says why). */
#define NARROW_QUERIES 4

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

typedef struct layout layout;

typedef struct plan {
    const qkv_fwd_problem *p;
    const qkv_cpu_kernels *k;
    const layout *lay; /* how a unit's rows are laid out and walked */
    int64_t G;         /* query heads per kv head */
    int64_t bq;        /* queries per unit, per head */
    int64_t rows;      /* G * bq padded to QKV_TILE_ROWS */
    int64_t qtiles;    /* ceil(Lq / bq) */
    int64_t units;     /* B * Hkv * qtiles */
    int64_t chunks;    /* key chunks per unit (1: no split) */
    int64_t chunk;     /* keys per chunk, a multiple of BLOCK_KEYS */
    int64_t ev;        /* Ev, at least 1 (buffer sizes) */
    int pack_k, pack_v; /* K or V not contiguous along d / c: copy blocks */
    qkv_dtype rk, rv;  /* the row-major layout: what its kernels read K and V
                          as (row_dtype says) */
    int pairs;         /* the pairs layout (layout_pairs says when) */
    int64_t narrow;    /* 0, or G * bq, the real rows of a unit, when
                          Lq <= NARROW_QUERIES: the row-major layout */
    int nthreads;      /* workers: num_threads, at most one per item */
    /* Split mode: unnormalised partial results per (unit, chunk). */
    float *part_o;     /* [units][chunks][ev][rows] */
    float *part_m;     /* [units][chunks][rows] */
    double *part_l;    /* [units][chunks][rows] */
    _Atomic int *out_of_memory; /* set when a row's reference redo had no memory */
} plan;

/* Per-thread scratch, carved from the call's workspace (workspace_carve);
 * every buffer 64-byte aligned. */
typedef struct scratch {
    /* The tiled layout only: */
    float *qt;         /* E x rows: the unit's queries times scale, transposed */
    float *st;         /* BLOCK_KEYS x rows: scores, then weights, transposed */
    /* The pairs layout, besides st (its qt unused): */
    uint32_t *qp;      /* ceil(E/2) x rows: the queries' bf16 pairs, not scaled */
    uint32_t *pp;      /* BLOCK_KEYS/2 x rows: the weights rounded to bf16 pairs */
    uint32_t *vp;      /* BLOCK_KEYS/2 x Ev: the block's V as pairs of keys */
    uint16_t *kh;      /* BLOCK_KEYS x E: a strided K block's bf16 rows */
    uint16_t *vh;      /* BLOCK_KEYS x Ev: a strided V block's */
    /* The row-major layout only: */
    float *qr;         /* narrow x E: the queries times scale */
    float *sr;         /* narrow x BLOCK_KEYS: scores, then weights */
    float *orr;        /* narrow x Ev: the running output */
    /* Both: */
    float *o;          /* Ev x rows: the running output, transposed */
    float *kb, *vb;    /* BLOCK_KEYS x E, x Ev: copies of strided or 16-bit K, V blocks */
    float *orow;       /* Ev: an O row in f32 (before a 16-bit O's rounding; read back) */
    float *mx, *alpha; /* rows */
    double *l;         /* rows */
    unsigned char *forbid; /* BLOCK_KEYS x rows, for the careful pv */
    int64_t *lo, *hi;  /* rows: the interval of keys each row may see */
    int64_t *head, *qi; /* rows: query head and query index, -1 for padding */
    /* Only for rows whose scores overflowed (redo_overflowed_rows): */
    uint64_t *bad;     /* ceil(Lk / 64) words: bit j set when key j of one
                          head has a non-finite K or V row */
    int64_t bad_for;   /* b * Hkv + hk of the bits, -1 for none yet */
} scratch;

/* A layout: the functions a unit's rows go through, sharing the per-block
 * helpers below. */
struct layout {
    /* The unit's queries times scale, into the layout's buffer (the rows'
     * heads and queries are set: unit_rows). */
    void (*load_queries)(const plan *pl, scratch *sc, int64_t b);
    /* Walks the key blocks of [from, to] for the loaded unit: sc->mx,
     * sc->l and sc->o (transposed) hold the unnormalised running result
     * afterwards. */
    void (*walk)(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t from, int64_t to);
    /* The weights of the unit's rows from the final sc->mx and sc->l,
     * into the blocks some row visited (weights_clear did the rest). */
    void (*weights)(const plan *pl, scratch *sc, int64_t b, int64_t hk);
};

/* ------------------------------------------------------------ packing */

/* Rows of the unit: row r is head hk*G + r / bq, query qt*bq + r % bq.
 * Each row's interval [lo, hi] folds padding, causal and the window. */
static void unit_rows(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t qt)
{
    const qkv_fwd_problem *p = pl->p;
    for (int64_t r = 0; r < pl->rows; r++) {
        int64_t g = r / pl->bq, i = qt * pl->bq + r % pl->bq;
        if (g >= pl->G || i >= p->Lq) {
            sc->head[r] = sc->qi[r] = -1;
            sc->lo[r] = 0;
            sc->hi[r] = -1;
            continue;
        }
        sc->head[r] = hk * pl->G + g;
        sc->qi[r] = i;
        qkv_row_interval(p, b, i, &sc->lo[r], &sc->hi[r]);
    }
}

/* Row r's query times scale into dst[0], dst[step], ...; zeros for a
 * padding row. */
static void load_query(const plan *pl, const scratch *sc, int64_t b, int64_t r, float *dst,
                       int64_t step)
{
    const qkv_fwd_problem *p = pl->p;
    if (sc->head[r] < 0) {
        for (int64_t d = 0; d < p->E; d++) dst[d * step] = 0.0f;
        return;
    }
    qkv_row_get(p->q, b, sc->head[r], sc->qi[r], p->E, (float)p->scale, dst, step);
}

/* Where keys jb.. of kv head hk are, with the leading dimension to step
 * through them: in place when the tensor's rows are contiguous and of a
 * dtype the kernels read (f32; f16 and bf16 for the row-major layout),
 * else copied into buf (widened to f32). */
static const void *key_rows(const plan *pl, const qkv_tensor *t, int pack, float *buf, int64_t b,
                            int64_t hk, int64_t jb, int64_t n, int64_t width, int64_t *ld)
{
    if (!pack) {
        *ld = t->stride[2];
        return t->data ? (const unsigned char *)t->data +
                             qkv_view_offset(t, b, hk, jb, 0) * (int64_t)qkv_dtype_size(t->dtype)
                       : NULL;
    }
    for (int64_t j = 0; j < n; j++) qkv_cpu_row_widen(pl->k, t, b, hk, jb + j, width, buf + j * width);
    *ld = width;
    return buf;
}

/* ------------------------------------------------------------ blocks */

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

static int any_nonfinite(const float *v, int64_t ldv, int64_t n, int64_t ev)
{
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < ev; c++)
            if (!isfinite(v[j * ldv + c])) return 1;
    return 0;
}

/* The block of keys from jb to at most last of kv head (b, hk): its
 * length, its K rows in *k (floats; the pairs layout's bf16 patterns; the
 * row-major layout's pl->rk) and, unless v is NULL, its V rows in *v
 * (floats; the row-major layout's pl->rv). */
static int64_t block_at(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t jb,
                        int64_t last, const void **k, int64_t *ldk, const void **v, int64_t *ldv)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t n = block_len(jb, last);
    if (pl->pairs)
        *k = qkv_cpu_rows_bits(p->k, sc->kh, b, hk, jb, n, p->E, ldk);
    else
        *k = key_rows(pl, p->k, pl->pack_k, sc->kb, b, hk, jb, n, p->E, ldk);
    if (v) *v = key_rows(pl, p->v, pl->pack_v, sc->vb, b, hk, jb, n, p->Ev, ldv);
    return n;
}

/* Both walks start from nothing seen (max -inf, sum 0, output 0) and
 * visit the blocks of [*first, *last], the keys of [from, to] some row of
 * the unit may see. */
static void walk_start(const plan *pl, scratch *sc, int64_t from, int64_t to, int64_t *first,
                       int64_t *last)
{
    for (int64_t r = 0; r < pl->rows; r++) {
        sc->mx[r] = -INFINITY;
        sc->l[r] = 0.0;
    }
    memset(sc->o, 0, (size_t)(pl->rows * pl->ev) * sizeof *sc->o);
    unit_key_range(pl, sc, from, to, first, last);
}

/* ------------------------------------------------------------ tiled */

/* Scores of the unit's rows against the n keys from jb, in sc->st: scaled
 * (via the packed queries, or by qk_pairs), softcapped, masked. Returns
 * whether a real row has a forbidden (-inf) position in the block. */
static int block_scores(const plan *pl, scratch *sc, int64_t b, const void *k, int64_t ldk,
                        int64_t jb, int64_t n)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t R = pl->rows;
    if (pl->pairs)
        pl->k->qk_pairs(sc->qp, R, k, ldk, sc->st, R, R, n, p->E, (float)p->scale);
    else
        pl->k->qk(sc->qt, R, k, ldk, sc->st, R, R, n, p->E);
    if (p->softcap > 0)
        for (int64_t j = 0; j < n; j++) pl->k->softcap(sc->st + j * R, R, (float)p->softcap);
    const int bmask = p->mask && p->mask->dtype == QKV_DTYPE_BOOL;
    const int fmask = p->mask && !bmask;
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
            if (fmask)
                qkv_cpu_mask_add(m, b, h, i, jb, from, to, sc->st + r, R);
            else
                for (int64_t j = from; j <= to; j++)
                    if (!qkv_mask_allows(m, b, h, i, jb + j)) sc->st[j * R + r] = -INFINITY;
        }
    }
    const int forbidden = partial || fmask || bmask;
    return forbidden;
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

/* ------------------------------------------------------------ pairs */

/* The tiled layout on bf16 dot products, for bf16 Q, K and V when the
 * kernels have them (AVX512-BF16): the products read pairs of bf16
 * patterns, two multiply-adds a lane, into the same f32 scores, softmax
 * and output as the tiled layout, by the same walk (walk_tiled and
 * weights_tiled branch on pl->pairs where the products are taken).
 *   Scores: the queries are their own bf16 patterns in pairs along the
 *   rows (not scaled, so no rounding before the product); each key's pair
 *   is read from K where it is; qk_pairs scales the f32 sums.
 *   Output: the weights are rounded to bf16 in pairs of keys (pack_pairs)
 *   and V's block is repacked as pairs of keys (pair_rows).
 * Rounding the weights is the one rounding the tiled walk does not make:
 * each weight's relative error is at most 2^-8, unbiased, so the output's
 * relative L2 error grows by about that over the rounding of a bf16 O
 * (within the contract, 4e-3: tests/test_dtypes.c measures it through
 * the generic emulation of these kernels and, where the CPU has them, the
 * real ones). The weights output and the row sums stay f32: the rounded
 * weights feed only the product with V. */

/* Row r's query as pairs down column r of sc->qp; zeros for padding. */
static void load_pairs(const plan *pl, scratch *sc, int64_t b)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t R = pl->rows;
    for (int64_t r = 0; r < R; r++) {
        if (sc->head[r] >= 0)
            qkv_cpu_row_pairs(p->q, b, sc->head[r], sc->qi[r], p->E, sc->qp + r, R);
        else
            for (int64_t x = 0; 2 * x < p->E; x++) sc->qp[x * R + r] = 0;
    }
}

/* V's keys jb .. jb + n - 1 of kv head hk as pairs of keys in sc->vp (ld
 * Ev). */
static void value_pairs(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t jb, int64_t n)
{
    const qkv_fwd_problem *p = pl->p;
    int64_t ldv;
    const uint16_t *v = qkv_cpu_rows_bits(p->v, sc->vh, b, hk, jb, n, p->Ev, &ldv);
    qkv_cpu_join_rows(pl->k, v, ldv, n, p->Ev, sc->vp, p->Ev);
}

/* Whether one of the n words of pairs holds a bf16 that is not finite
 * (an exponent of all ones). */
static int pairs_nonfinite(const uint32_t *w, int64_t n)
{
    const uint32_t lo = 0x7f80u, hi = 0x7f800000u;
    uint32_t bad = 0;
    for (int64_t x = 0; x < n; x++) bad |= ((w[x] & lo) == lo) | ((w[x] & hi) == hi);
    return bad != 0;
}

/* Row r down column r of sc->qt. */
static void load_tiled(const plan *pl, scratch *sc, int64_t b)
{
    for (int64_t r = 0; r < pl->rows; r++) load_query(pl, sc, b, r, sc->qt + r, pl->rows);
}

/* The tiled walk: a block's scores are a BLOCK_KEYS x rows tile, keys
 * along the rows so that the kernels' vectors run down the query rows.
 * The pairs layout walks the same way, its V block as pairs (sc->vp). */
static void walk_tiled(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t key_from,
                       int64_t key_to)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t R = pl->rows;
    int64_t first, last;
    walk_start(pl, sc, key_from, key_to, &first, &last);
    for (int64_t jb = first, n; jb <= last; jb += n) {
        const void *k, *vrows = NULL;
        int64_t ldk, ldv = 0;
        n = block_at(pl, sc, b, hk, jb, last, &k, &ldk, pl->pairs ? NULL : &vrows, &ldv);
        const float *v = vrows;
        if (pl->pairs) value_pairs(pl, sc, b, hk, jb, n);
        const int careful = block_scores(pl, sc, b, k, ldk, jb, n) &&
                            (pl->pairs ? pairs_nonfinite(sc->vp, (n + 1) / 2 * p->Ev)
                                       : any_nonfinite(v, ldv, n, p->Ev));
        if (careful)
            for (int64_t x = 0; x < n * R; x++) sc->forbid[x] = sc->st[x] == -INFINITY;
        pl->k->softmax(sc->st, R, R, n, sc->mx, sc->l, sc->alpha);
        if (careful && pl->pairs) /* the careful product reads V widened */
            v = key_rows(pl, p->v, 1, sc->vb, b, hk, jb, n, p->Ev, &ldv);
        if (careful) {
            careful_pv(pl, sc, v, ldv, n);
        } else if (pl->pairs) {
            pl->k->pack_pairs(sc->pp, R, sc->st, R, R, n);
            pl->k->pv_pairs(sc->pp, R, sc->vp, p->Ev, sc->o, R, sc->alpha, R, n, p->Ev);
        } else {
            pl->k->pv(sc->st, R, v, ldv, sc->o, R, sc->alpha, R, n, p->Ev);
        }
    }
}

/* p = exp(s - mx) / l, block by block from the scores the walk used. */
static void weights_tiled(const plan *pl, scratch *sc, int64_t b, int64_t hk)
{
    const qkv_fwd_problem *p = pl->p;
    const qkv_tensor *w = p->weights;
    const int64_t R = pl->rows;
    int64_t first, last;
    unit_key_range(pl, sc, 0, p->Lk - 1, &first, &last);
    for (int64_t jb = first, n; jb <= last; jb += n) {
        const void *k;
        int64_t ldk;
        n = block_at(pl, sc, b, hk, jb, last, &k, &ldk, NULL, NULL);
        block_scores(pl, sc, b, k, ldk, jb, n);
        for (int64_t j = 0; j < n; j++) { /* s - mx, row by row along the vector */
            float *sj = sc->st + j * R;
            for (int64_t r = 0; r < R; r++) sj[r] -= sc->mx[r] == -INFINITY ? 0.0f : sc->mx[r];
            pl->k->exp_inplace(sj, R);
        }
        for (int64_t r = 0; r < R; r++) {
            if (sc->head[r] < 0 || sc->mx[r] == -INFINITY || isnan(sc->l[r])) continue;
            const float inv = (float)(1.0 / sc->l[r]);
            for (int64_t j = 0; j < n; j++)
                qkv_view_put(w, b, sc->head[r], sc->qi[r], jb + j, sc->st[j * R + r] * inv);
        }
    }
}

static const layout layout_tiled = {load_tiled, walk_tiled, weights_tiled};

static const layout layout_pairs = {load_pairs, walk_tiled, weights_tiled};

/* ------------------------------------------------------------ row-major */

/* The row-major layout, for calls with at most NARROW_QUERIES queries
 * (decode): a unit's pl->narrow real rows are computed one by one with
 * the dot_rows and axpy_rows kernels, so no work goes to the padding of a
 * QKV_TILE_ROWS tile (4 query heads of a kv head fill a quarter of a
 * 16-row tile). A row's arithmetic on this path does not depend on the
 * other rows of its unit, and the choice depends on Lq alone, so GQA stays
 * bitwise equal to its heads repeated. */

/* The scores of the unit's pl->narrow rows against the n keys from jb, row
 * by row in sc->sr: scaled, softcapped, limited to each row's interval,
 * masked. Returns whether some row has a forbidden position. */
static int narrow_scores(const plan *pl, scratch *sc, int64_t b, const void *k, int64_t ldk,
                         int64_t jb, int64_t n)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t m = pl->narrow;
    qkv_cpu_dot_rows(pl->k, pl->rk, sc->qr, p->E, m, k, ldk, sc->sr, BLOCK_KEYS, n, p->E);
    const int bmask = p->mask && p->mask->dtype == QKV_DTYPE_BOOL;
    const int fmask = p->mask && !bmask;
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
        if (fmask)
            qkv_cpu_mask_add(p->mask, b, h, i, jb, from, to, sj, 1);
        else
            for (int64_t j = from; j <= to; j++)
                if (!qkv_mask_allows(p->mask, b, h, i, jb + j)) sj[j] = -INFINITY;
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

/* Row r along row r of sc->qr; rows past pl->narrow are padding that
 * nothing reads. */
static void load_rows(const plan *pl, scratch *sc, int64_t b)
{
    for (int64_t r = 0; r < pl->narrow; r++) load_query(pl, sc, b, r, sc->qr + r * pl->p->E, 1);
}

/* The row-major walk: scores and output in sc->sr and sc->orr, row by
 * row; the output is transposed into sc->o at the end, the layout that
 * finish_unit and the split's merge read. */
static void walk_rows(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t key_from,
                      int64_t key_to)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t R = pl->rows, m = pl->narrow;
    int64_t first, last;
    walk_start(pl, sc, key_from, key_to, &first, &last);
    memset(sc->orr, 0, (size_t)(m * pl->ev) * sizeof *sc->orr);
    for (int64_t jb = first, n; jb <= last; jb += n) {
        const void *k, *v;
        int64_t ldk, ldv;
        n = block_at(pl, sc, b, hk, jb, last, &k, &ldk, &v, &ldv);
        qkv_dtype vdt = pl->rv;
        const int forbidden = narrow_scores(pl, sc, b, k, ldk, jb, n);
        if (forbidden && vdt != QKV_DTYPE_F32) { /* the check and careful_rows read floats */
            v = key_rows(pl, p->v, 1, sc->vb, b, hk, jb, n, p->Ev, &ldv);
            vdt = QKV_DTYPE_F32;
        }
        const int careful = forbidden && any_nonfinite(v, ldv, n, p->Ev);
        if (careful)
            for (int64_t x = 0; x < m * BLOCK_KEYS; x++) sc->forbid[x] = sc->sr[x] == -INFINITY;
        pl->k->softmax_rows(sc->sr, BLOCK_KEYS, m, n, sc->mx, sc->l, sc->alpha);
        if (careful)
            careful_rows(pl, sc, v, ldv, n);
        else
            qkv_cpu_axpy_rows(pl->k, vdt, sc->sr, BLOCK_KEYS, m, v, ldv, sc->orr, pl->ev,
                              sc->alpha, n, p->Ev);
    }
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < p->Ev; c++) sc->o[c * R + r] = sc->orr[r * pl->ev + c];
}

/* weights_tiled for the row-major layout: the scores the walk used. */
static void weights_rows(const plan *pl, scratch *sc, int64_t b, int64_t hk)
{
    const qkv_fwd_problem *p = pl->p;
    const qkv_tensor *w = p->weights;
    int64_t first, last;
    unit_key_range(pl, sc, 0, p->Lk - 1, &first, &last);
    for (int64_t jb = first, n; jb <= last; jb += n) {
        const void *k;
        int64_t ldk;
        n = block_at(pl, sc, b, hk, jb, last, &k, &ldk, NULL, NULL);
        narrow_scores(pl, sc, b, k, ldk, jb, n);
        for (int64_t r = 0; r < pl->narrow; r++) {
            if (sc->head[r] < 0 || sc->mx[r] == -INFINITY || isnan(sc->l[r])) continue;
            float *sj = sc->sr + r * BLOCK_KEYS;
            for (int64_t j = 0; j < n; j++) sj[j] -= sc->mx[r];
            pl->k->exp_inplace(sj, n);
            const float inv = (float)(1.0 / sc->l[r]);
            for (int64_t j = 0; j < n; j++)
                qkv_view_put(w, b, sc->head[r], sc->qi[r], jb + j, sj[j] * inv);
        }
    }
}

static const layout layout_rows = {load_rows, walk_rows, weights_rows};

/* ------------------------------------------------------------ results */

/* The weights of the unit's rows outside the blocks the layout writes:
 * zero, or NaN for a NaN row. */
static void weights_clear(const plan *pl, const scratch *sc, int64_t b)
{
    const qkv_fwd_problem *p = pl->p;
    const qkv_tensor *w = p->weights;
    for (int64_t r = 0; r < pl->rows; r++) {
        if (sc->head[r] < 0) continue;
        const float fill = isnan(sc->l[r]) ? NAN : 0.0f;
        for (int64_t j = 0; j < p->Lk; j++) qkv_view_put(w, b, sc->head[r], sc->qi[r], j, fill);
    }
}

/* Sets the bits of the keys of kv head (b, hk) whose K or V row holds a
 * NaN or an infinity in sc->bad (once per unit, for its first suspect
 * row: a scan of the head's K and V, 1/64 of what the unit's attention
 * reads). */
static void find_bad_keys(const plan *pl, scratch *sc, int64_t b, int64_t hk)
{
    const qkv_fwd_problem *p = pl->p;
    if (sc->bad_for == b * p->Hkv + hk) return;
    memset(sc->bad, 0, (size_t)((p->Lk + 63) / 64) * sizeof *sc->bad);
    for (int64_t j = 0; j < p->Lk; j++) {
        int bad = 0;
        for (int64_t e = 0; e < p->E && !bad; e++) bad = !isfinite(qkv_view_get(p->k, b, hk, j, e));
        for (int64_t e = 0; e < p->Ev && !bad; e++) bad = !isfinite(qkv_view_get(p->v, b, hk, j, e));
        if (bad) sc->bad[j / 64] |= UINT64_C(1) << (j % 64);
    }
    sc->bad_for = b * p->Hkv + hk;
}

/* Does row r read a NaN or an infinity: in its query, in a float mask
 * value it may see (NaN or +inf; -inf only forbids), or in the K or V row
 * of a key it may attend? (sc->bad marks the head's bad keys.) */
static int row_reads_nonfinite(const plan *pl, const scratch *sc, int64_t b, int64_t r)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t h = sc->head[r], i = sc->qi[r], lo = sc->lo[r], hi = sc->hi[r];
    const qkv_tensor *m = p->mask;
    const int fmask = m && m->dtype != QKV_DTYPE_BOOL;
    for (int64_t e = 0; e < p->E; e++)
        if (!isfinite(qkv_view_get(p->q, b, h, i, e))) return 1;
    for (int64_t j = lo; fmask && j <= hi; j++) {
        const float x = qkv_view_get(m, b, h, i, j);
        if (isnan(x) || x == INFINITY) return 1;
    }
    for (int64_t j = lo; j <= hi; j++) {
        if (!(sc->bad[j / 64] >> (j % 64) & 1)) continue;
        if (m && (fmask ? qkv_view_get(m, b, h, i, j) == -INFINITY
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
        if (!suspect) { /* O's row as written, read back widened */
            qkv_row_get(p->o, b, h, i, p->Ev, 1.0f, sc->orow, 1);
            for (int64_t c = 0; c < p->Ev && !suspect; c++) suspect = !isfinite(sc->orow[c]);
        }
        if (!suspect) continue;
        find_bad_keys(pl, sc, b, hk);
        if (!row_reads_nonfinite(pl, sc, b, r) && !qkv_ref_attention_row(p, b, h, i))
            atomic_store(pl->out_of_memory, 1);
    }
}

/* O = o / l and lse = mx + log l for the unit's rows; the conventions of
 * DESIGN.md §1 for rows with nothing allowed (0, -inf) and NaN rows. */
static void finish_unit(const plan *pl, scratch *sc, int64_t b, int64_t hk)
{
    const qkv_fwd_problem *p = pl->p;
    const qkv_tensor *o = p->o;
    for (int64_t r = 0; r < pl->rows; r++) {
        if (sc->head[r] < 0) continue;
        const int64_t h = sc->head[r], i = sc->qi[r];
        const float *acc = sc->o + r; /* column r of the transposed output */
        float lse;
        if (isnan(sc->l[r])) {
            for (int64_t c = 0; c < p->Ev; c++) qkv_view_put(o, b, h, i, c, NAN);
            lse = NAN;
        } else if (sc->mx[r] == -INFINITY) {
            for (int64_t c = 0; c < p->Ev; c++) qkv_view_put(o, b, h, i, c, 0.0f);
            lse = -INFINITY;
        } else {
            /* The row in f32: straight into an f32 O with contiguous rows,
             * else through sc->orow into O's dtype (a 16-bit O is rounded
             * a second time there, by the kernels' narrowing, within the
             * contract: test_dtypes). l >= 1 (the maximum's own term is
             * 1), so acc / l stays in float's range. */
            const double inv = 1.0 / sc->l[r];
            const int direct = o->dtype == QKV_DTYPE_F32 && o->stride[3] == 1;
            float *dst = direct ? qkv_view_out(o, b, h, i, 0) : sc->orow;
            for (int64_t c = 0; c < p->Ev; c++) dst[c] = (float)(acc[c * pl->rows] * inv);
            if (!direct) qkv_cpu_row_narrow(pl->k, o, b, h, i, p->Ev, sc->orow);
            lse = qkv_narrow((double)sc->mx[r] + log(sc->l[r]));
        }
        if (p->lse) *qkv_view_out(p->lse, b, h, i, 0) = lse;
    }
    if (p->weights) {
        weights_clear(pl, sc, b);
        pl->lay->weights(pl, sc, b, hk);
    }
    redo_overflowed_rows(pl, sc, b, hk);
}

/* ------------------------------------------------------------ items */

static void unit_coords(const plan *pl, int64_t u, int64_t *b, int64_t *hk, int64_t *qt)
{
    *qt = u % pl->qtiles;
    *hk = (u / pl->qtiles) % pl->p->Hkv;
    *b = u / pl->qtiles / pl->p->Hkv;
}

/* Unit u's rows and queries, in the plan's layout. */
static void unit_load(const plan *pl, scratch *sc, int64_t u, int64_t *b, int64_t *hk)
{
    int64_t qt;
    unit_coords(pl, u, b, hk, &qt);
    unit_rows(pl, sc, *b, *hk, qt);
    pl->lay->load_queries(pl, sc, *b);
}

/* Whole unit: all keys, then the results. */
static void item_unit(const plan *pl, scratch *sc, int64_t u)
{
    int64_t b, hk;
    unit_load(pl, sc, u, &b, &hk);
    pl->lay->walk(pl, sc, b, hk, 0, pl->p->Lk - 1);
    finish_unit(pl, sc, b, hk);
}

/* One key chunk of a unit, kept unnormalised for the merge. */
static void item_chunk(const plan *pl, scratch *sc, int64_t it)
{
    const int64_t u = it / pl->chunks, c = it % pl->chunks;
    int64_t b, hk;
    unit_load(pl, sc, u, &b, &hk);
    const int64_t from = c * pl->chunk;
    const int64_t to = from + pl->chunk - 1 < pl->p->Lk - 1 ? from + pl->chunk - 1 : pl->p->Lk - 1;
    pl->lay->walk(pl, sc, b, hk, from, to);
    const int64_t base = it * pl->rows;
    memcpy(pl->part_o + it * pl->ev * pl->rows, sc->o, (size_t)(pl->rows * pl->ev) * sizeof(float));
    memcpy(pl->part_m + base, sc->mx, (size_t)pl->rows * sizeof(float));
    memcpy(pl->part_l + base, sc->l, (size_t)pl->rows * sizeof(double));
}

/* The chunks of a unit merged in chunk order by their maxima, then the
 * results as for a whole unit. */
static void item_merge(const plan *pl, scratch *sc, int64_t u)
{
    int64_t b, hk;
    unit_load(pl, sc, u, &b, &hk);
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

/* ------------------------------------------------------------ paths */

typedef struct run_ctx {
    const plan *pl;
    scratch *sc; /* one per worker */
    void (*item)(const plan *pl, scratch *sc, int64_t it);
    int64_t items, step;
    double base, span; /* this loop's share of the call's progress */
} run_ctx;

static void run_item(void *vctx, int tid, int64_t it)
{
    const run_ctx *c = vctx;
    const qkv_fwd_problem *p = c->pl->p;
    c->item(c->pl, &c->sc[tid], it);
    /* Worker 0 is the calling thread: it reports, others never do. */
    if (tid == 0 && p->progress && it % c->step == 0)
        p->progress(p->progress_user, c->base + c->span * (double)it / (double)c->items);
}

/* Runs item(0 .. items-1) on the plan's threads, taken one at a time so
 * that causal's uneven units balance; progress reports cover [base,
 * base + span] of the whole call. */
static qkv_status run_items(const plan *pl, scratch *sc, int64_t items,
                            void (*item)(const plan *, scratch *, int64_t), double base,
                            double span)
{
    run_ctx c = {pl, sc, item, items, items / 100 + 1, base, span};
    return qkv_parallel_items(pl->p->pool, items, pl->nthreads, run_item, &c);
}

/* The common path: every unit over all its keys. */
static qkv_status forward_units(const plan *pl, scratch *sc)
{
    return run_items(pl, sc, pl->units, item_unit, 0.0, 1.0);
}

/* Split keys and merge, for decode-shaped calls (plan_split): every
 * (unit, chunk) walks its chunk's keys and keeps its unnormalised result
 * (max, sum, output) in pl->part_*; then every unit merges its chunks in
 * chunk order, whichever thread computed them, and finishes as a whole
 * unit does. Progress: the chunks, then the (shorter) merges. */
static qkv_status forward_split(const plan *pl, scratch *sc)
{
    const int64_t items = pl->units * pl->chunks;
    const double split = (double)items / (double)(items + pl->units);
    qkv_status st = run_items(pl, sc, items, item_chunk, 0.0, split);
    if (st == QKV_OK) st = run_items(pl, sc, pl->units, item_merge, split, 1.0 - split);
    return st;
}

/* ------------------------------------------------------------ the plan */

/* Whether to split the keys, and how: a decode-shaped call, at most
 * SPLIT_ROWS query rows in all (B x H x Lq), has too few units to keep
 * the threads busy, so its keys are cut into chunks, as many as make
 * about WANT_ROW_CHUNKS query rows x chunks (B=1, H=32, Lq=1: 16 chunks;
 * with 8 kv heads, 128 work items): enough for the threads of a large
 * machine, while more, smaller chunks only add packing, a merge and a
 * restart of the prefetchers' stream each (1024-key chunks read 4-5 %
 * slower than 4096-key ones here). Chunks have at least CHUNK_KEYS keys
 * and there are at most MAX_CHUNKS of them, and at most SPLIT_ITEMS /
 * qrows, so that the partial results stay O(SPLIT_ITEMS x tile x Ev).
 * The choice depends on the shape alone (never on the thread count) and
 * counts query heads, not kv heads, so that GQA takes the path its heads
 * repeated take. */
static void plan_split(plan *pl)
{
    const qkv_fwd_problem *p = pl->p;
    pl->chunks = 1;
    pl->chunk = round_up(p->Lk > 0 ? p->Lk : 1, BLOCK_KEYS);
    const int64_t qrows = p->B * p->H * p->Lq;
    if (qrows > SPLIT_ROWS || p->Lk < 2 * CHUNK_KEYS) return;
    int64_t most = SPLIT_ITEMS / qrows;
    most = most < MAX_CHUNKS ? most : MAX_CHUNKS;
    int64_t want = (WANT_ROW_CHUNKS + qrows - 1) / qrows;
    want = want < 2 ? 2 : want;
    most = want < most ? want : most;
    if (most < 2) return;
    pl->chunk = round_up((p->Lk + most - 1) / most, BLOCK_KEYS);
    if (pl->chunk < CHUNK_KEYS) pl->chunk = CHUNK_KEYS;
    pl->chunks = (p->Lk + pl->chunk - 1) / pl->chunk;
}

/* What the row-major layout's kernels read t as: an f16 or bf16 view
 * with contiguous rows as itself, widened in registers (each element once
 * for four query rows: dot_rows), so decode reads a 16-bit cache's bytes
 * once and computes on them as they arrive; anything else as f32 (a
 * widened block copy). The tiled layouts read f32. */
static qkv_dtype row_dtype(const plan *pl, const qkv_tensor *t)
{
    const int half = t->dtype == QKV_DTYPE_F16 || t->dtype == QKV_DTYPE_BF16;
    return pl->narrow && half && t->stride[3] == 1 ? t->dtype : QKV_DTYPE_F32;
}

/* The plan of a call with something to compute (B, H, Lq > 0) on the
 * kernels k: units, layout, split and threads. */
static void plan_init(plan *pl, const qkv_fwd_problem *p, const qkv_cpu_kernels *k)
{
    memset(pl, 0, sizeof *pl);
    pl->p = p;
    pl->k = k;
    pl->G = p->H / p->Hkv;
    pl->bq = UNIT_ROWS / pl->G > 1 ? UNIT_ROWS / pl->G : 1;
    if (pl->bq > p->Lq) pl->bq = p->Lq;
    pl->rows = round_up(pl->G * pl->bq, QKV_TILE_ROWS);
    pl->narrow = p->Lq <= NARROW_QUERIES ? pl->G * pl->bq : 0;
    /* Pairs for bf16 Q, K and V on kernels with bf16 dot products, except
     * decode's row-major walk (it reads the cache's bytes once whatever
     * the products cost). */
    pl->pairs = !pl->narrow && k->qk_pairs && p->q->dtype == QKV_DTYPE_BF16 &&
                p->k->dtype == QKV_DTYPE_BF16 && p->v->dtype == QKV_DTYPE_BF16;
    pl->lay = pl->narrow ? &layout_rows : pl->pairs ? &layout_pairs : &layout_tiled;
    pl->qtiles = (p->Lq + pl->bq - 1) / pl->bq;
    pl->units = p->B * p->Hkv * pl->qtiles;
    pl->ev = p->Ev > 0 ? p->Ev : 1;
    pl->rk = row_dtype(pl, p->k);
    pl->rv = row_dtype(pl, p->v);
    pl->pack_k = p->k->stride[3] != 1 || p->k->dtype != pl->rk;
    pl->pack_v = p->v->stride[3] != 1 || p->v->dtype != pl->rv;
    plan_split(pl);
    const int64_t items = pl->units * pl->chunks;
    pl->nthreads = p->num_threads < items ? p->num_threads : (int)items;
}

/* One thread's scratch, carved from c (sizes only when c counts). */
static void scratch_carve(const plan *pl, qkv_carver *c, scratch *sc)
{
    const size_t f = sizeof(float), rows = (size_t)pl->rows, bk = BLOCK_KEYS;
    const size_t e = (size_t)pl->p->E, ev = (size_t)pl->ev, i8 = sizeof(int64_t);
    memset(sc, 0, sizeof *sc);
    sc->bad_for = -1;
    if (pl->narrow) {
        const size_t m = (size_t)pl->narrow;
        sc->qr = qkv_carve(c, m * e * f);
        sc->sr = qkv_carve(c, m * bk * f);
        sc->orr = qkv_carve(c, m * ev * f);
    } else if (pl->pairs) {
        const size_t u = sizeof(uint32_t);
        sc->st = qkv_carve(c, bk * rows * f);
        sc->qp = qkv_carve(c, (e + 1) / 2 * rows * u);
        sc->pp = qkv_carve(c, bk / 2 * rows * u);
        sc->vp = qkv_carve(c, bk / 2 * ev * u);
        if (pl->p->k->stride[3] != 1) sc->kh = qkv_carve(c, bk * e * sizeof(uint16_t));
        if (pl->p->v->stride[3] != 1) sc->vh = qkv_carve(c, bk * ev * sizeof(uint16_t));
    } else {
        sc->qt = qkv_carve(c, e * rows * f);
        sc->st = qkv_carve(c, bk * rows * f);
    }
    sc->o = qkv_carve(c, rows * ev * f);
    if (pl->pack_k && !pl->pairs) sc->kb = qkv_carve(c, bk * e * f);
    if (pl->pack_v || pl->rv != QKV_DTYPE_F32) sc->vb = qkv_carve(c, bk * ev * f);
    sc->orow = qkv_carve(c, ev * f);
    sc->mx = qkv_carve(c, rows * f);
    sc->alpha = qkv_carve(c, rows * f);
    sc->l = qkv_carve(c, rows * sizeof(double));
    sc->forbid = qkv_carve(c, bk * rows);
    sc->lo = qkv_carve(c, rows * i8);
    sc->hi = qkv_carve(c, rows * i8);
    sc->head = qkv_carve(c, rows * i8);
    sc->qi = qkv_carve(c, rows * i8);
    sc->bad = qkv_carve(c, (size_t)((pl->p->Lk + 63) / 64 + 1) * sizeof *sc->bad);
}

/* The call's workspace laid out from base: the threads' scratch, then the
 * split's partial results. Returns its size in bytes (base NULL: only
 * that) and, with a base, the scratch array in *sc and the partial
 * results in the plan. */
static size_t workspace_carve(plan *pl, void *base, scratch **sc)
{
    qkv_carver c = {base, 0};
    *sc = qkv_carve(&c, (size_t)pl->nthreads * sizeof **sc);
    for (int t = 0; t < pl->nthreads; t++) {
        scratch one;
        scratch_carve(pl, &c, &one);
        if (*sc) (*sc)[t] = one;
    }
    if (pl->chunks > 1) {
        const size_t n = (size_t)(pl->units * pl->chunks * pl->rows);
        pl->part_o = qkv_carve(&c, n * (size_t)pl->ev * sizeof(float));
        pl->part_m = qkv_carve(&c, n * sizeof(float));
        pl->part_l = qkv_carve(&c, n * sizeof(double));
    }
    return c.used;
}

/* ------------------------------------------------------------ the call */

size_t qkv_flash_forward_workspace(const qkv_fwd_problem *p)
{
    const qkv_cpu_kernels *k;
    /* An isa that cannot run: the call itself fails, before the workspace. */
    if (p->B == 0 || p->H == 0 || p->Lq == 0 || qkv_cpu_kernels_get(p->isa, &k) != QKV_OK) return 0;
    plan pl;
    scratch *sc;
    plan_init(&pl, p, k);
    return workspace_carve(&pl, NULL, &sc);
}

qkv_status qkv_flash_attention_forward(const qkv_fwd_problem *p, void *ws)
{
    const qkv_cpu_kernels *k;
    qkv_status st = qkv_cpu_kernels_get(p->isa, &k);
    if (st != QKV_OK) return st;
    if (p->B == 0 || p->H == 0 || p->Lq == 0) return QKV_OK;
    plan pl;
    plan_init(&pl, p, k);
    _Atomic int out_of_memory = 0;
    pl.out_of_memory = &out_of_memory;
    scratch *sc;
    workspace_carve(&pl, ws, &sc);
    st = pl.chunks > 1 ? forward_split(&pl, sc) : forward_units(&pl, sc);
    if (st == QKV_OK && atomic_load(&out_of_memory))
        st = qkv_fail(QKV_ERR_OUT_OF_MEMORY, "fast path: cannot allocate the reference's scratch "
                      "for a row whose float scores overflowed");
    return st;
}
