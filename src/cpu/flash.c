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
#include "../attention.h"
#include "../common.h"
#include "../threads.h"
#include "dispatch.h"
#include "flash.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Keys per block: a multiple of QKV_TILE_KEYS. */
#define BLOCK_KEYS 128
/* Query rows a unit aims for: a multiple of QKV_TILE_ROWS that divides
 * evenly for groups of 1, 2, 3, 4, 6 and 8 heads. */
#define UNIT_ROWS 72
/* Decode-shaped calls: when there are fewer units than this, the keys are
 * split into chunks of at least CHUNK_KEYS (at most MAX_CHUNKS chunks). */
#define SPLIT_BELOW_UNITS 32
#define CHUNK_KEYS 1024
#define MAX_CHUNKS 64

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
    int64_t ldq;       /* E padded to 16 */
    int64_t ldv;       /* Ev padded to QKV_TILE_VALS */
    /* Split mode: unnormalised partial results per (unit, chunk). */
    float *part_o;     /* [units][chunks][rows][ldv] */
    float *part_m;     /* [units][chunks][rows] */
    double *part_l;    /* [units][chunks][rows] */
} plan;

/* Per-thread scratch, 64-byte aligned buffers. */
typedef struct scratch {
    float *q;          /* rows x ldq: the unit's queries, times scale */
    float *kt;         /* E x BLOCK_KEYS: a key block, transposed */
    float *v;          /* BLOCK_KEYS x ldv: a value block */
    float *s;          /* rows x BLOCK_KEYS: scores, then weights */
    float *o;          /* rows x ldv: the running output */
    float *mx, *alpha; /* rows */
    double *l;         /* rows */
    unsigned char *forbid; /* rows x BLOCK_KEYS, for the careful pv */
    int64_t *lo, *hi;  /* rows: the interval of keys each row may see */
    int64_t *head, *qi; /* rows: query head and query index, -1 for padding */
} scratch;

/* ------------------------------------------------------------ packing */

static const float *at4(const qkv_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d)
{
    return (const float *)t->data + a * t->stride[0] + b * t->stride[1] + c * t->stride[2] +
           d * t->stride[3];
}

/* Rows of the unit: row r is head hk*G + r / bq, query qt*bq + r % bq.
 * Each row's interval [lo, hi] folds padding, causal and the window. */
static void pack_queries(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t qt)
{
    const qkv_fwd_problem *p = pl->p;
    const float scale = (float)p->scale;
    for (int64_t r = 0; r < pl->rows; r++) {
        float *dst = sc->q + r * pl->ldq;
        int64_t g = r / pl->bq, i = qt * pl->bq + r % pl->bq;
        if (g >= pl->G || i >= p->Lq) {
            memset(dst, 0, (size_t)pl->ldq * sizeof *dst);
            sc->head[r] = sc->qi[r] = -1;
            sc->lo[r] = 0;
            sc->hi[r] = -1;
            continue;
        }
        int64_t h = hk * pl->G + g;
        sc->head[r] = h;
        sc->qi[r] = i;
        const float *src = at4(p->q, b, h, i, 0);
        for (int64_t d = 0; d < p->E; d++) dst[d] = src[d * p->q->stride[3]] * scale;
        for (int64_t d = p->E; d < pl->ldq; d++) dst[d] = 0.0f;

        int64_t diag = i + p->diag_offset, lo = 0, hi = p->Lk - 1;
        if (p->kv_lens && p->kv_lens[b] - 1 < hi) hi = p->kv_lens[b] - 1;
        if (p->causal && diag < hi) hi = diag;
        if (p->use_window) { /* compared so that nothing overflows */
            if (p->window_left >= 0 && p->window_left < diag - lo) lo = diag - p->window_left;
            if (p->window_right >= 0 && p->window_right < hi - diag) hi = diag + p->window_right;
        }
        sc->lo[r] = lo;
        sc->hi[r] = hi;
    }
}

/* Keys j0+from..j0+n-1 of kv head hk: K transposed into kt, V into v,
 * zeros elsewhere (keys no row of the unit may see are never read, so a
 * NaN there cannot leak). Returns whether V holds a NaN or infinity. */
static int pack_keys(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t j0,
                     int64_t from, int64_t n)
{
    const qkv_fwd_problem *p = pl->p;
    const int64_t ks = p->k->stride[3], vs = p->v->stride[3];
    for (int64_t j = 0; j < BLOCK_KEYS; j++) {
        if (j >= from && j < n) {
            const float *src = at4(p->k, b, hk, j0 + j, 0);
            for (int64_t d = 0; d < p->E; d++) sc->kt[d * BLOCK_KEYS + j] = src[d * ks];
        } else {
            for (int64_t d = 0; d < p->E; d++) sc->kt[d * BLOCK_KEYS + j] = 0.0f;
        }
    }
    int nonfinite = 0;
    for (int64_t j = 0; j < BLOCK_KEYS; j++) {
        float *dst = sc->v + j * pl->ldv;
        int64_t c = 0;
        if (j >= from && j < n) {
            const float *src = at4(p->v, b, hk, j0 + j, 0);
            for (; c < p->Ev; c++) {
                dst[c] = src[c * vs];
                nonfinite |= !isfinite(dst[c]);
            }
        }
        for (; c < pl->ldv; c++) dst[c] = 0.0f;
    }
    return nonfinite;
}

/* ------------------------------------------------------------ one block */

/* Scores of the unit's rows against keys j0..j0+n-1, in sc->s: scaled
 * (via the packed queries), softcapped, masked. Returns whether any score
 * of a real row and key may be -inf (a forbidden position). */
static int block_scores(const plan *pl, scratch *sc, int64_t b, int64_t j0, int64_t n,
                        int64_t npad)
{
    const qkv_fwd_problem *p = pl->p;
    pl->k->qk(sc->q, pl->ldq, sc->kt, BLOCK_KEYS, sc->s, BLOCK_KEYS, pl->rows, npad, p->E);
    const int fmask = p->mask && p->mask->dtype == QKV_DTYPE_F32;
    const int bmask = p->mask && p->mask->dtype == QKV_DTYPE_BOOL;
    int forbidden = 0;
    for (int64_t r = 0; r < pl->rows; r++) {
        float *row = sc->s + r * BLOCK_KEYS;
        if (sc->head[r] < 0) { /* padding row: nothing to see */
            for (int64_t j = 0; j < npad; j++) row[j] = -INFINITY;
            continue;
        }
        if (p->softcap > 0) pl->k->softcap(row, n, (float)p->softcap);
        const int64_t lo = sc->lo[r] - j0, hi = sc->hi[r] - j0; /* block-relative */
        const int inside = lo <= 0 && hi >= n - 1;
        if (inside && !fmask && !bmask) {
            for (int64_t j = n; j < npad; j++) row[j] = -INFINITY;
            continue;
        }
        forbidden = 1;
        const int64_t h = sc->head[r], i = sc->qi[r];
        for (int64_t j = 0; j < npad; j++) {
            if (j >= n || j < lo || j > hi) {
                row[j] = -INFINITY;
                continue;
            }
            if (fmask) row[j] += *at4(p->mask, b, h, i, j0 + j);
            if (bmask) {
                const qkv_tensor *m = p->mask;
                const unsigned char *mb = (const unsigned char *)m->data + b * m->stride[0] +
                                          h * m->stride[1] + i * m->stride[2] +
                                          (j0 + j) * m->stride[3];
                if (!*mb) row[j] = -INFINITY;
            }
        }
    }
    return forbidden;
}

/* o = o * alpha + P V skipping forbidden positions, for the rare block
 * where a forbidden key's value is NaN or infinite (0 * NaN would leak it
 * into rows that may not read it). */
static void careful_pv(const plan *pl, scratch *sc, int64_t npad)
{
    for (int64_t r = 0; r < pl->rows; r++) {
        float *o = sc->o + r * pl->ldv;
        for (int64_t c = 0; c < pl->ldv; c++) o[c] *= sc->alpha[r];
        for (int64_t j = 0; j < npad; j++) {
            if (sc->forbid[r * BLOCK_KEYS + j]) continue;
            const float pj = sc->s[r * BLOCK_KEYS + j];
            const float *v = sc->v + j * pl->ldv;
            for (int64_t c = 0; c < pl->ldv; c++) o[c] += pj * v[c];
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

/* The block at j0 within the unit's range [first, last]: keys j0+from to
 * j0+n-1 are packed, n rounded up to whole kernel tiles is npad. Block
 * starts are multiples of BLOCK_KEYS whatever the unit, so a row's
 * arithmetic does not depend on which rows share its unit. */
static void block_extent(int64_t j0, int64_t first, int64_t last, int64_t *from, int64_t *n,
                         int64_t *npad)
{
    *from = first > j0 ? first - j0 : 0;
    *n = last - j0 + 1 < BLOCK_KEYS ? last - j0 + 1 : BLOCK_KEYS;
    *npad = round_up(*n, QKV_TILE_KEYS);
}

/* Walks the key blocks of [from, to] for the packed unit: sc->mx, sc->l
 * and sc->o hold the unnormalised running result afterwards. */
static void run_keys(const plan *pl, scratch *sc, int64_t b, int64_t hk, int64_t key_from,
                     int64_t key_to)
{
    for (int64_t r = 0; r < pl->rows; r++) {
        sc->mx[r] = -INFINITY;
        sc->l[r] = 0.0;
    }
    memset(sc->o, 0, (size_t)(pl->rows * pl->ldv) * sizeof *sc->o);
    int64_t first, last;
    unit_key_range(pl, sc, key_from, key_to, &first, &last);
    if (first > last) return;
    for (int64_t j0 = first / BLOCK_KEYS * BLOCK_KEYS; j0 <= last; j0 += BLOCK_KEYS) {
        int64_t from, n, npad;
        block_extent(j0, first, last, &from, &n, &npad);
        const int v_nonfinite = pack_keys(pl, sc, b, hk, j0, from, n);
        const int forbidden = block_scores(pl, sc, b, j0, n, npad);
        const int careful = forbidden && v_nonfinite;
        if (careful)
            for (int64_t x = 0; x < pl->rows * BLOCK_KEYS; x++)
                sc->forbid[x] = x % BLOCK_KEYS < npad && sc->s[x] == -INFINITY;
        pl->k->softmax(sc->s, BLOCK_KEYS, pl->rows, npad, sc->mx, sc->l, sc->alpha);
        if (careful)
            careful_pv(pl, sc, npad);
        else
            pl->k->pv(sc->s, BLOCK_KEYS, sc->v, pl->ldv, sc->o, pl->ldv, sc->alpha, pl->rows,
                      npad, pl->ldv);
    }
}

/* ------------------------------------------------------------ results */

static float *out4(const qkv_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d)
{
    return (float *)t->data + a * t->stride[0] + b * t->stride[1] + c * t->stride[2] +
           d * t->stride[3];
}

/* The weights of the unit's rows, recomputed block by block from the final
 * max and sum: p = exp(s - mx) / l; zero where no block was visited. */
static void write_weights(const plan *pl, scratch *sc, int64_t b, int64_t hk)
{
    const qkv_fwd_problem *p = pl->p;
    const qkv_tensor *w = p->weights;
    const int64_t ws = w->stride[3];
    for (int64_t r = 0; r < pl->rows; r++) {
        if (sc->head[r] < 0) continue;
        float *row = out4(w, b, sc->head[r], sc->qi[r], 0);
        const float fill = isnan(sc->l[r]) ? NAN : 0.0f;
        for (int64_t j = 0; j < p->Lk; j++) row[j * ws] = fill;
    }
    int64_t first, last;
    unit_key_range(pl, sc, 0, p->Lk - 1, &first, &last);
    if (first > last) return;
    for (int64_t j0 = first / BLOCK_KEYS * BLOCK_KEYS; j0 <= last; j0 += BLOCK_KEYS) {
        int64_t from, n, npad;
        block_extent(j0, first, last, &from, &n, &npad);
        pack_keys(pl, sc, b, hk, j0, from, n);
        block_scores(pl, sc, b, j0, n, npad);
        for (int64_t r = 0; r < pl->rows; r++) {
            if (sc->head[r] < 0 || sc->mx[r] == -INFINITY || isnan(sc->l[r])) continue;
            float *s = sc->s + r * BLOCK_KEYS;
            for (int64_t j = 0; j < n; j++) s[j] -= sc->mx[r];
            pl->k->exp_inplace(s, n);
            const float inv = (float)(1.0 / sc->l[r]);
            float *row = out4(w, b, sc->head[r], sc->qi[r], 0);
            for (int64_t j = 0; j < n; j++) row[(j0 + j) * ws] = s[j] * inv;
        }
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
        float *o = out4(p->o, b, h, i, 0);
        const float *acc = sc->o + r * pl->ldv;
        float lse;
        if (isnan(sc->l[r])) {
            for (int64_t c = 0; c < p->Ev; c++) o[c * os] = NAN;
            lse = NAN;
        } else if (sc->mx[r] == -INFINITY) {
            for (int64_t c = 0; c < p->Ev; c++) o[c * os] = 0.0f;
            lse = -INFINITY;
        } else {
            const double inv = 1.0 / sc->l[r];
            for (int64_t c = 0; c < p->Ev; c++) o[c * os] = (float)(acc[c] * inv);
            lse = (float)((double)sc->mx[r] + log(sc->l[r]));
        }
        if (p->lse) *out4(p->lse, b, h, i, 0) = lse;
    }
    if (p->weights) write_weights(pl, sc, b, hk);
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
    memcpy(pl->part_o + base * pl->ldv, sc->o, (size_t)(pl->rows * pl->ldv) * sizeof(float));
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
        float *o = sc->o + r * pl->ldv;
        for (int64_t x = 0; x < pl->ldv; x++) o[x] = 0.0f;
        for (int64_t c = 0; c < pl->chunks && m != -INFINITY; c++) {
            const int64_t base = (u * pl->chunks + c) * pl->rows + r;
            const float mc = pl->part_m[base];
            if (mc == -INFINITY) continue; /* the chunk saw nothing */
            const double f = exp((double)mc - (double)m);
            l += pl->part_l[base] * f;
            const float *po = pl->part_o + base * pl->ldv;
            for (int64_t x = 0; x < pl->ldv; x++) o[x] += (float)(po[x] * f);
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
            c->progress(c->progress_user, (double)it / (double)c->items);
    }
}

static qkv_status run_items(const plan *pl, scratch *sc, int nthreads, int64_t items,
                            void (*item)(const plan *, scratch *, int64_t))
{
    run_ctx c;
    c.pl = pl;
    c.sc = sc;
    atomic_init(&c.next, 0);
    c.items = items;
    c.item = item;
    c.progress = pl->p->progress;
    c.progress_user = pl->p->progress_user;
    /* One slice per thread: the slices are ignored, items are taken from
     * the shared counter so that causal's uneven units balance. */
    return qkv_parallel_for(nthreads, nthreads, worker, &c);
}

/* ------------------------------------------------------------ the call */

static void *alloc64(size_t bytes) { return aligned_alloc(64, round_up((int64_t)bytes, 64)); }

static void scratch_free(scratch *sc)
{
    free(sc->q);
    free(sc->kt);
    free(sc->v);
    free(sc->s);
    free(sc->o);
    free(sc->mx);
    free(sc->alpha);
    free(sc->l);
    free(sc->forbid);
    free(sc->lo);
    free(sc->hi);
    free(sc->head);
    free(sc->qi);
}

static int scratch_alloc(const plan *pl, scratch *sc)
{
    const size_t f = sizeof(float), rows = (size_t)pl->rows;
    memset(sc, 0, sizeof *sc);
    sc->q = alloc64(rows * (size_t)pl->ldq * f);
    sc->kt = alloc64((size_t)pl->p->E * BLOCK_KEYS * f);
    sc->v = alloc64((size_t)BLOCK_KEYS * (size_t)pl->ldv * f);
    sc->s = alloc64(rows * BLOCK_KEYS * f);
    sc->o = alloc64(rows * (size_t)pl->ldv * f);
    sc->mx = alloc64(rows * f);
    sc->alpha = alloc64(rows * f);
    sc->l = alloc64(rows * sizeof(double));
    sc->forbid = alloc64(rows * BLOCK_KEYS);
    sc->lo = alloc64(rows * sizeof(int64_t));
    sc->hi = alloc64(rows * sizeof(int64_t));
    sc->head = alloc64(rows * sizeof(int64_t));
    sc->qi = alloc64(rows * sizeof(int64_t));
    return sc->q && sc->kt && sc->v && sc->s && sc->o && sc->mx && sc->alpha && sc->l &&
           sc->forbid && sc->lo && sc->hi && sc->head && sc->qi;
}

qkv_status qkv_flash_attention_forward(const qkv_fwd_problem *p, qkv_isa isa)
{
    plan pl;
    memset(&pl, 0, sizeof pl);
    qkv_status st = qkv_cpu_kernels_get(isa, &pl.k);
    if (st != QKV_OK) return st;
    if (p->B == 0 || p->H == 0 || p->Lq == 0) return QKV_OK;
    if (p->E > (INT64_C(1) << 20) || p->Ev > (INT64_C(1) << 20))
        return qkv_fail(QKV_ERR_UNSUPPORTED, "fast path: head dims above 2^20 are not "
                        "supported (E %lld, Ev %lld); use QKV_IMPL_REFERENCE",
                        (long long)p->E, (long long)p->Ev);
    pl.p = p;
    pl.G = p->H / p->Hkv;
    pl.bq = (UNIT_ROWS + pl.G - 1) / pl.G;
    if (pl.bq > p->Lq) pl.bq = p->Lq;
    pl.rows = round_up(pl.G * pl.bq, QKV_TILE_ROWS);
    pl.qtiles = (p->Lq + pl.bq - 1) / pl.bq;
    pl.units = p->B * p->Hkv * pl.qtiles;
    pl.ldq = round_up(p->E, 16);
    pl.ldv = round_up(p->Ev > 0 ? p->Ev : 1, QKV_TILE_VALS);
    pl.chunks = 1;
    pl.chunk = round_up(p->Lk > 0 ? p->Lk : 1, BLOCK_KEYS);
    if (pl.units < SPLIT_BELOW_UNITS && p->Lk >= 2 * CHUNK_KEYS) {
        pl.chunk = round_up((p->Lk + MAX_CHUNKS - 1) / MAX_CHUNKS, BLOCK_KEYS);
        if (pl.chunk < CHUNK_KEYS) pl.chunk = CHUNK_KEYS;
        pl.chunks = (p->Lk + pl.chunk - 1) / pl.chunk;
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
        pl.part_o = alloc64(n * (size_t)pl.ldv * sizeof(float));
        pl.part_m = alloc64(n * sizeof(float));
        pl.part_l = alloc64(n * sizeof(double));
        if (!pl.part_o || !pl.part_m || !pl.part_l)
            st = qkv_fail(QKV_ERR_OUT_OF_MEMORY, "fast path: cannot allocate %lld key chunks",
                          (long long)items);
    }
    if (st == QKV_OK) {
        if (pl.chunks == 1) {
            st = run_items(&pl, sc, nt, pl.units, item_unit);
        } else {
            st = run_items(&pl, sc, nt, items, item_chunk);
            if (st == QKV_OK) {
                int nm = nt < pl.units ? nt : (int)pl.units;
                st = run_items(&pl, sc, nm, pl.units, item_merge);
            }
        }
    }
    for (int t = 0; t < nt; t++) scratch_free(&sc[t]);
    free(sc);
    free(pl.part_o);
    free(pl.part_m);
    free(pl.part_l);
    return st;
}
