/* qkv_sgemm (qkv.h): C = alpha op(A) op(B) + beta C in the Goto/BLIS plan.
 * Blocks of op(A) and op(B) are packed into contiguous micro-panels, which
 * takes care of the transposes, so that one register-tile microkernel per
 * instruction set (kernels.h, chosen as for attention) serves all four
 * cases. Threads take rectangles of C. A bf16 x bf16 product on kernels
 * with bf16 dot products (AVX512-BF16) packs pairs of bf16 along k
 * instead of floats and runs the pairs microkernel (gemm_pairs). */
#include "common.h"
#include "context.h"
#include "cpu/dispatch.h"
#include "threads.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef QKV_HAVE_CBLAS
#include <cblas.h>
#include <limits.h>
#endif

/* The most depth of one pass over C: k is cut into equal passes of at
 * most GEMM_KC. The cut depends on k alone, so every element of C sums the
 * same products in the same order whatever the threads: a thread count
 * changes which rectangle an element lies in, never its arithmetic. */
#define GEMM_KC 512
/* The most rows of op(A) packed at once (an A block, meant for L3), and
 * columns of op(B) (a B block, KC x NC, meant for L2): each A micro-panel
 * sits in L1 while the B block's micro-panels stream past it. Measured on
 * Cascade Lake against KC 256-1024, NC 128-1024, MC 504-4116. */
#define GEMM_MC 1008
#define GEMM_NC 256
/* Work below which one more thread costs more than it gives, in FLOPs. */
#define GEMM_MIN_FLOPS_PER_THREAD 4e6

typedef struct gemm_job {
    const qkv_cpu_kernels *kern;
    qkv_gemm_transpose ta, tb;
    int64_t m, n, k;
    float alpha, beta;
    const void *a, *b;
    qkv_dtype adt, bdt; /* f32, f16 or bf16 each */
    int64_t lda, ldb;
    float *c;
    int64_t ldc;
    int64_t gm, gn;   /* C is split into gm x gn rectangles, one per thread */
    int64_t kc;       /* depth of a pass: the same for every thread count */
    int64_t mc, nc;   /* largest blocks: multiples of the register tile */
    float **pa, **pb; /* each thread's packing buffers */
    float **pw;       /* each thread's widened rows of a 16-bit A or B (NULL: both f32) */
    int64_t pw_floats;
    int pairs;        /* bf16 pairs: the panels hold uint32_t pairs along k */
} gemm_job;

/* n elements of a 16-bit matrix from element `at` of src, widened into
 * dst. */
static void widen(const qkv_cpu_kernels *kern, qkv_dtype dt, const void *src, int64_t at, int64_t n,
                  float *dst)
{
    qkv_cpu_widen(kern, dt, dst, (const uint16_t *)src + at, n);
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

/* Floats from one packed micro-panel of width w (mr or nr) to the next:
 * its kc x w numbers and one cache line more. Without the extra line,
 * panels 2^k bytes long would all start in the same L1 set, and packing,
 * which writes to many panels at once, would evict its own lines. */
static int64_t panel_stride(int64_t w, int64_t kc) { return round_up(w * kc, 16) + 16; }

/* dst[p * w + r] = src[r * ld + p] for r < h, p < kc: h stored rows become
 * the columns of one micro-panel, in blocks of 16 so that the part being
 * written stays in L1; columns h..w-1 are zeroed. */
static void pack_rows_across(float *dst, int64_t w, const float *src, int64_t ld, int64_t h,
                             int64_t kc)
{
    for (int64_t p0 = 0; p0 < kc; p0 += 16) {
        const int64_t pn = min64(16, kc - p0);
        for (int64_t r = 0; r < h; r++)
            for (int64_t p = 0; p < pn; p++) dst[(p0 + p) * w + r] = src[r * ld + p0 + p];
    }
    for (int64_t p = 0; h < w && p < kc; p++)
        for (int64_t r = h; r < w; r++) dst[p * w + r] = 0.0f;
}

/* One stored row s of len numbers into row p of each micro-panel from d
 * on (panels `stride` floats apart), zero-padded. */
static void pack_row_along(float *d, int64_t w, int64_t stride, const float *s, int64_t len)
{
    int64_t j = 0;
    for (; j + w <= len; j += w, d += stride) memcpy(d, s + j, (size_t)w * sizeof(float));
    if (j < len) {
        memcpy(d, s + j, (size_t)(len - j) * sizeof(float));
        for (int64_t q = len - j; q < w; q++) d[q] = 0.0f;
    }
}

/* dst panel q, row p = src[p * ld + q * w ..] for p < kc: kc stored rows
 * of `len` numbers cut into micro-panels of width w, zero-padded. */
static void pack_rows_along(float *dst, int64_t w, const float *src, int64_t ld, int64_t len,
                            int64_t kc)
{
    const int64_t stride = panel_stride(w, kc);
    for (int64_t p = 0; p < kc; p++) pack_row_along(dst + p * w, w, stride, src + p * ld, len);
}

/* pack_rows_across from a matrix of dtype dt: a 16-bit one's h rows are
 * widened into buf first (h x kc floats). */
static void pack_across(const gemm_job *g, float *dst, int64_t w, const void *src, qkv_dtype dt,
                        int64_t at, int64_t ld, int64_t h, int64_t kc, float *buf)
{
    if (dt == QKV_DTYPE_F32) {
        pack_rows_across(dst, w, (const float *)src + at, ld, h, kc);
        return;
    }
    for (int64_t r = 0; r < h; r++) widen(g->kern, dt, src, at + r * ld, kc, buf + r * kc);
    pack_rows_across(dst, w, buf, kc, h, kc);
}

/* pack_rows_along from a matrix of dtype dt: a 16-bit one row by row
 * through buf (len floats). */
static void pack_along(const gemm_job *g, float *dst, int64_t w, const void *src, qkv_dtype dt,
                       int64_t at, int64_t ld, int64_t len, int64_t kc, float *buf)
{
    if (dt == QKV_DTYPE_F32) {
        pack_rows_along(dst, w, (const float *)src + at, ld, len, kc);
        return;
    }
    const int64_t stride = panel_stride(w, kc);
    for (int64_t p = 0; p < kc; p++) {
        widen(g->kern, dt, src, at + p * ld, len, buf);
        pack_row_along(dst + p * w, w, stride, buf, len);
    }
}

/* rows x kc of op(A) from (i0, p0) as micro-panels of mr rows:
 * dst[q * stride + p * mr + r] = op(A)[i0 + q * mr + r][p0 + p]; buf for
 * a 16-bit A's widening. */
static void pack_a(const gemm_job *g, float *dst, int64_t i0, int64_t rows, int64_t p0, int64_t kc,
                   float *buf)
{
    const int64_t mr = g->kern->gemm_mr, stride = panel_stride(mr, kc);
    if (g->ta == QKV_GEMM_NO_TRANS) /* op(A) row i is stored row i */
        for (int64_t i = 0; i < rows; i += mr, dst += stride)
            pack_across(g, dst, mr, g->a, g->adt, (i0 + i) * g->lda + p0, g->lda,
                        min64(mr, rows - i), kc, buf);
    else /* op(A) column p is stored row p */
        pack_along(g, dst, mr, g->a, g->adt, p0 * g->lda + i0, g->lda, rows, kc, buf);
}

/* kc x cols of op(B) from (p0, j0) as micro-panels of nr columns:
 * dst[q * stride + p * nr + j] = op(B)[p0 + p][j0 + q * nr + j]. */
static void pack_b(const gemm_job *g, float *dst, int64_t p0, int64_t kc, int64_t j0, int64_t cols,
                   float *buf)
{
    const int64_t nr = g->kern->gemm_nr, stride = panel_stride(nr, kc);
    if (g->tb == QKV_GEMM_NO_TRANS) /* op(B) row p is stored row p */
        pack_along(g, dst, nr, g->b, g->bdt, p0 * g->ldb + j0, g->ldb, cols, kc, buf);
    else /* op(B) column j is stored row j */
        for (int64_t j = 0; j < cols; j += nr, dst += stride)
            pack_across(g, dst, nr, g->b, g->bdt, (j0 + j) * g->ldb + p0, g->ldb,
                        min64(nr, cols - j), kc, buf);
}

/* ------------------------------------------------------------ pairs */

/* A micro-panel of pairs from h stored bf16 rows contiguous along k:
 * dst[x * w + r] = (s[r][2x], s[r][2x+1]) for x < ceil(kc/2), the high
 * half 0 past kc, rows h..w-1 zero. */
static void pack_pairs_across(uint32_t *dst, int64_t w, const uint16_t *src, int64_t ld, int64_t h,
                              int64_t kc)
{
    const int64_t kp = (kc + 1) / 2;
    for (int64_t r = 0; r < h; r++) {
        const uint16_t *s = src + r * ld;
        for (int64_t x = 0; x < kp; x++)
            dst[x * w + r] = (uint32_t)s[2 * x] | (2 * x + 1 < kc ? (uint32_t)s[2 * x + 1] << 16 : 0u);
    }
    for (int64_t x = 0; h < w && x < kp; x++)
        for (int64_t r = h; r < w; r++) dst[x * w + r] = 0;
}

/* Micro-panels of pairs from kc stored bf16 rows of len numbers, pairs of
 * rows joined: panel q, pair row x = (s[2x][q * w + j], s[2x+1][q * w + j]),
 * zero-padded (and the high half 0 for the lone last row of an odd kc). */
static void pack_pairs_along(const qkv_cpu_kernels *kern, uint32_t *dst, int64_t w,
                             const uint16_t *src, int64_t ld, int64_t len, int64_t kc)
{
    const int64_t kp = (kc + 1) / 2, stride = panel_stride(w, kp);
    for (int64_t x = 0; x < kp; x++) {
        const uint16_t *s0 = src + 2 * x * ld;
        const int lone = 2 * x + 1 == kc;
        for (int64_t j = 0, q = 0; j < len; j += w, q++) {
            uint32_t *d = dst + q * stride + x * w;
            const int64_t n = min64(w, len - j);
            if (lone)
                for (int64_t t = 0; t < n; t++) d[t] = s0[j + t];
            else
                kern->pair_rows(d, s0 + j, s0 + ld + j, n);
            for (int64_t t = n; t < w; t++) d[t] = 0;
        }
    }
}

/* pack_a and pack_b for pairs: the same panels, pairs along k. */
static void pack_a_pairs(const gemm_job *g, uint32_t *dst, int64_t i0, int64_t rows, int64_t p0,
                         int64_t kc)
{
    const int64_t mr = g->kern->gemm_mr, stride = panel_stride(mr, (kc + 1) / 2);
    const uint16_t *a = g->a;
    if (g->ta == QKV_GEMM_NO_TRANS)
        for (int64_t i = 0; i < rows; i += mr, dst += stride)
            pack_pairs_across(dst, mr, a + (i0 + i) * g->lda + p0, g->lda, min64(mr, rows - i), kc);
    else
        pack_pairs_along(g->kern, dst, mr, a + p0 * g->lda + i0, g->lda, rows, kc);
}

static void pack_b_pairs(const gemm_job *g, uint32_t *dst, int64_t p0, int64_t kc, int64_t j0,
                         int64_t cols)
{
    const int64_t nr = g->kern->gemm_nr, stride = panel_stride(nr, (kc + 1) / 2);
    const uint16_t *b = g->b;
    if (g->tb == QKV_GEMM_NO_TRANS)
        pack_pairs_along(g->kern, dst, nr, b + p0 * g->ldb + j0, g->ldb, cols, kc);
    else
        for (int64_t j = 0; j < cols; j += nr, dst += stride)
            pack_pairs_across(dst, nr, b + (j0 + j) * g->ldb + p0, g->ldb, min64(nr, cols - j), kc);
}

/* The block size that cuts len into equal pieces (multiples of unit, at
 * most `most`, itself a multiple of unit), so that no thin last block pays
 * for a whole packing. */
static int64_t even_block(int64_t len, int64_t most, int64_t unit)
{
    const int64_t pieces = len > 0 ? (len + most - 1) / most : 1;
    return round_up((len + pieces - 1) / pieces, unit);
}

/* C[i0:i1, j0:j1]: for each block of rows and each depth pass, the A block
 * is packed once and every B block of the rectangle runs past it. */
static void gemm_rect(const gemm_job *g, float *pa, float *pb, float *pw, int64_t i0, int64_t i1,
                      int64_t j0, int64_t j1)
{
    const qkv_cpu_kernels *kern = g->kern;
    const int64_t mr = kern->gemm_mr, nr = kern->gemm_nr;
    const int64_t mcb = even_block(i1 - i0, g->mc, mr), ncb = even_block(j1 - j0, g->nc, nr);
    for (int64_t ic = i0; ic < i1; ic += mcb) {
        const int64_t mc = min64(mcb, i1 - ic);
        for (int64_t pc = 0; pc < g->k; pc += g->kc) {
            const int64_t kc = min64(g->kc, g->k - pc);
            const float beta = pc == 0 ? g->beta : 1.0f; /* later passes add */
            /* A panel's depth: kc numbers, or ceil(kc / 2) pairs. */
            const int64_t depth = g->pairs ? (kc + 1) / 2 : kc;
            const int64_t sa = panel_stride(mr, depth), sb = panel_stride(nr, depth);
            if (g->pairs)
                pack_a_pairs(g, (uint32_t *)pa, ic, mc, pc, kc);
            else
                pack_a(g, pa, ic, mc, pc, kc, pw);
            for (int64_t jc = j0; jc < j1; jc += ncb) {
                const int64_t nc = min64(ncb, j1 - jc);
                if (g->pairs)
                    pack_b_pairs(g, (uint32_t *)pb, pc, kc, jc, nc);
                else
                    pack_b(g, pb, pc, kc, jc, nc, pw);
                for (int64_t ir = 0; ir < mc; ir += mr) {
                    float *crow = g->c + (ic + ir) * g->ldc + jc;
                    const int rows = (int)min64(mr, mc - ir);
                    for (int64_t jr = 0; jr < nc; jr += nr) {
                        const int cols = (int)min64(nr, nc - jr);
                        if (g->pairs)
                            kern->gemm_pairs(depth, (const uint32_t *)pa + ir / mr * sa,
                                             (const uint32_t *)pb + jr / nr * sb, g->alpha, beta,
                                             crow + jr, g->ldc, rows, cols);
                        else
                            kern->gemm(kc, pa + ir / mr * sa, pb + jr / nr * sb, g->alpha, beta,
                                       crow + jr, g->ldc, rows, cols);
                    }
                }
            }
        }
    }
}

/* Part u of [0, len) in `parts` pieces, cut at multiples of `unit`. */
static int64_t split_at(int64_t len, int64_t unit, int64_t parts, int64_t u)
{
    const int64_t units = (len + unit - 1) / unit;
    return min64(len, units * u / parts * unit);
}

static void gemm_worker(void *ctx, int tid, int64_t begin, int64_t end)
{
    const gemm_job *g = ctx;
    const int64_t mr = g->kern->gemm_mr, nr = g->kern->gemm_nr;
    for (int64_t u = begin; u < end; u++) {
        const int64_t r = u / g->gn, s = u % g->gn;
        gemm_rect(g, g->pa[tid], g->pb[tid], g->pw ? g->pw[tid] : NULL,
                  split_at(g->m, mr, g->gm, r),
                  split_at(g->m, mr, g->gm, r + 1), split_at(g->n, nr, g->gn, s),
                  split_at(g->n, nr, g->gn, s + 1));
    }
}

/* The grid of rectangles for up to nt threads: as many rectangles as
 * threads where the tiles allow, then the shape that packs least per
 * thread (each packs its rows of A and its columns of B). */
static void choose_grid(gemm_job *g, int nt)
{
    const int64_t mt = (g->m + g->kern->gemm_mr - 1) / g->kern->gemm_mr;
    const int64_t ntl = (g->n + g->kern->gemm_nr - 1) / g->kern->gemm_nr;
    g->gm = g->gn = 1;
    double best = INFINITY;
    for (int64_t a = 1; a <= nt && a <= mt; a++) {
        const int64_t b = min64(nt / a, ntl);
        const double cost = (double)g->m / (double)a + (double)g->n / (double)b;
        if (a * b > g->gm * g->gn || (a * b == g->gm * g->gn && cost < best)) {
            g->gm = a;
            g->gn = b;
            best = cost;
        }
    }
}

static qkv_status check_matrix(const char *name, const char *ldname, const void *p, size_t es,
                               int64_t rows, int64_t cols, int64_t ld, const char *what)
{
    if (ld < cols)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "%s: %lld is less than %s", ldname,
                        (long long)ld, what);
    if (rows == 0 || cols == 0) return QKV_OK;
    if (!p)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "%s: NULL for a %lld x %lld matrix", name,
                        (long long)rows, (long long)cols);
    /* The last element read or written, in bytes from the first. */
    int64_t span;
    if (!qkv_mul_ok(rows - 1, ld, &span) || !qkv_add_ok(span, cols, &span) ||
        span > INT64_MAX / (int64_t)es)
        return qkv_fail(QKV_ERR_OVERFLOW, "%s: %lld rows of %s = %lld elements overflow", name,
                        (long long)rows, ldname, (long long)ld);
    return qkv_check_aligned(name, p, es);
}

/* The bytes a stored matrix reaches: rows - 1 rows of ld, then a last row
 * only cols wide (check_matrix bounded the count). */
static qkv_byte_range matrix_range(const char *name, const void *p, size_t es, int64_t rows,
                                   int64_t cols, int64_t ld)
{
    return qkv_range(name, p, rows && cols ? (rows - 1) * ld + cols : 0, es);
}

/* C = beta C, for k == 0 or alpha == 0 (A and B are not read then, as in
 * BLAS); beta == 0 writes zeros without reading C. */
static void scale_c(float *c, int64_t ldc, int64_t m, int64_t n, float beta)
{
    if (beta == 1.0f) return;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? 0.0f : beta * c[i * ldc + j];
}

/* ------------------------------------------------------------ few rows */

/* A C of at most GEMM_SMALL_M rows (the projections of a decode step) is
 * a matrix-vector product: packing B would cost as much as the whole
 * product, so B is read where it lies (a 16-bit B widened in registers).
 * op(A)'s rows are made contiguous (m x k, small); each thread takes a
 * run of column slices of C and sums with dot_rows (B stored n x k: dot
 * products along k) or axpy_rows (B stored k x n: rows of B scaled and
 * added). An element's sum runs over k
 * in an order fixed by k, so the thread count does not change it. */
#define GEMM_SMALL_M 4
#define SMALL_COLS 64 /* columns of C per slice */

typedef struct small_job {
    const qkv_cpu_kernels *kern;
    qkv_gemm_transpose tb;
    int64_t m, n, k;
    const float *a; /* m x k, ld k */
    const void *b;
    qkv_dtype bdt;
    int64_t ldb;
    float alpha, beta;
    float *c;
    int64_t ldc;
    float *tmp; /* per thread: m x SMALL_COLS */
} small_job;

static void small_worker(void *ctx, int tid, int64_t begin, int64_t end)
{
    const small_job *g = ctx;
    float *t = g->tmp + (int64_t)tid * g->m * SMALL_COLS;
    static const float zeros[GEMM_SMALL_M];
    for (int64_t s = begin; s < end; s++) {
        const int64_t j0 = s * SMALL_COLS, w = min64(SMALL_COLS, g->n - j0);
        const size_t es = qkv_dtype_size(g->bdt);
        if (g->tb) { /* B's rows j0.. */
            const char *b = (const char *)g->b + (size_t)(j0 * g->ldb) * es;
            qkv_cpu_dot_rows(g->kern, g->bdt, g->a, g->k, g->m, b, g->ldb, t, SMALL_COLS, w, g->k);
        } else { /* B's columns j0.. */
            memset(t, 0, (size_t)(g->m * SMALL_COLS) * sizeof *t);
            qkv_cpu_axpy_rows(g->kern, g->bdt, g->a, g->k, g->m, (const char *)g->b + (size_t)j0 * es,
                              g->ldb, t, SMALL_COLS, zeros, g->k, w);
        }
        for (int64_t r = 0; r < g->m; r++) {
            float *cr = g->c + r * g->ldc + j0;
            const float *tr = t + r * SMALL_COLS;
            if (g->beta == 0)
                for (int64_t j = 0; j < w; j++) cr[j] = g->alpha * tr[j];
            else
                for (int64_t j = 0; j < w; j++) cr[j] = g->alpha * tr[j] + g->beta * cr[j];
        }
    }
}

/* How a call runs, decided from the context, the dtypes and the sizes
 * alone (not from the data), so that qkv_gemm and qkv_gemm_workspace
 * agree. */
typedef enum gemm_route {
    ROUTE_NOTHING, /* C is empty */
    ROUTE_SCALE,   /* k == 0 or alpha == 0: C = beta C */
    ROUTE_BLAS,    /* the system BLAS (f32 operands) */
    ROUTE_SMALL,   /* m <= GEMM_SMALL_M: slices of C's columns */
    ROUTE_BLOCKED  /* packed panels, threads over rectangles of C */
} gemm_route;

/* The route of a call that passed its checks, with g's kernels, sizes,
 * dtypes and (blocked) blocks, and *nt its threads. */
static qkv_status gemm_plan(const qkv_context *cx, qkv_gemm_transpose ta, qkv_gemm_transpose tb,
                            int64_t m, int64_t n, int64_t k, float alpha, qkv_dtype adt,
                            qkv_dtype bdt, int64_t lda, int64_t ldb, int64_t ldc, gemm_job *g,
                            int *nt, gemm_route *route)
{
    memset(g, 0, sizeof *g);
    g->adt = adt;
    g->bdt = bdt;
#ifdef QKV_HAVE_CBLAS
    const int use_blas = cx->isa == QKV_ISA_AUTO && adt == QKV_DTYPE_F32 && bdt == QKV_DTYPE_F32;
#else
    const int use_blas = 0;
    (void)lda, (void)ldb, (void)ldc;
#endif
    if (!use_blas) {
        QKV_TRY(qkv_cpu_kernels_get(cx->isa, &g->kern));
    }
    *nt = 1;
    if (m == 0 || n == 0) {
        *route = ROUTE_NOTHING;
        return QKV_OK;
    }
    if (k == 0 || alpha == 0) {
        *route = ROUTE_SCALE;
        return QKV_OK;
    }
#ifdef QKV_HAVE_CBLAS
    /* The BLAS takes int sizes: larger problems stay with our kernel. */
    if (use_blas && m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && lda <= INT_MAX &&
        ldb <= INT_MAX && ldc <= INT_MAX) {
        *route = ROUTE_BLAS;
        return QKV_OK;
    }
    if (use_blas) {
        QKV_TRY(qkv_cpu_kernels_get(QKV_ISA_AUTO, &g->kern));
    }
#endif
    g->ta = ta;
    g->tb = tb;
    g->m = m;
    g->n = n;
    g->k = k;
    int t = qkv_context_resolved_threads(cx);
    const double flops = 2.0 * (double)m * (double)n * (double)k;
    if (flops / GEMM_MIN_FLOPS_PER_THREAD < t)
        t = flops < GEMM_MIN_FLOPS_PER_THREAD ? 1 : (int)(flops / GEMM_MIN_FLOPS_PER_THREAD);
    if (m <= GEMM_SMALL_M) {
        const int64_t slices = (n + SMALL_COLS - 1) / SMALL_COLS;
        *nt = t > slices ? (int)slices : t;
        *route = ROUTE_SMALL;
        return QKV_OK;
    }
    choose_grid(g, t);
    *nt = (int)(g->gm * g->gn);
    const int64_t mr = g->kern->gemm_mr, nr = g->kern->gemm_nr;
    g->pairs = adt == QKV_DTYPE_BF16 && bdt == QKV_DTYPE_BF16 && g->kern->gemm_pairs;
    /* Passes of whole pairs (only the last may end on a lone number). */
    g->kc = even_block(k, GEMM_KC, g->pairs ? 2 : 1);
    g->mc = min64(round_up(GEMM_MC, mr), round_up((m + g->gm - 1) / g->gm + mr, mr));
    g->nc = min64(round_up(GEMM_NC, nr), round_up((n + g->gn - 1) / g->gn + nr, nr));
    /* A 16-bit operand is widened through a buffer as it is packed: rows
     * of a panel (at most mr or nr of kc) or a row of a block (mc or nc). */
    const int64_t across = (mr > nr ? mr : nr) * g->kc, along = g->mc > g->nc ? g->mc : g->nc;
    const int both_f32 = adt == QKV_DTYPE_F32 && bdt == QKV_DTYPE_F32;
    g->pw_floats = both_f32 || g->pairs ? 0 : across > along ? across : along;
    *route = ROUTE_BLOCKED;
    return QKV_OK;
}

/* The scratch of a small or blocked call, carved from cv (only counted
 * while cv->base is NULL): the small path's copy of A's rows (*rows) and
 * each worker's tile of results (s->tmp); the blocked path's tables of
 * panels, each worker's A and B panels and, for a 16-bit operand, its
 * widening buffer. */
static void gemm_layout(gemm_route route, gemm_job *g, int nt, qkv_carver *cv, small_job *s,
                        float **rows)
{
    if (route == ROUTE_SMALL) {
        *rows = qkv_carve(cv, (size_t)(g->m * g->k) * sizeof(float));
        s->tmp = qkv_carve(cv, (size_t)(nt * g->m * SMALL_COLS) * sizeof(float));
    } else if (route == ROUTE_BLOCKED) {
        const size_t pa_bytes =
            (size_t)(g->mc / g->kern->gemm_mr * panel_stride(g->kern->gemm_mr, g->kc)) *
            sizeof(float);
        const size_t pb_bytes =
            (size_t)(g->nc / g->kern->gemm_nr * panel_stride(g->kern->gemm_nr, g->kc)) *
            sizeof(float);
        const size_t pw_bytes = (size_t)g->pw_floats * sizeof(float);
        g->pa = qkv_carve(cv, (size_t)nt * sizeof *g->pa);
        g->pb = qkv_carve(cv, (size_t)nt * sizeof *g->pb);
        g->pw = pw_bytes ? qkv_carve(cv, (size_t)nt * sizeof *g->pw) : NULL;
        for (int t = 0; t < nt; t++) {
            float *pa = qkv_carve(cv, pa_bytes), *pb = qkv_carve(cv, pb_bytes);
            float *pw = pw_bytes ? qkv_carve(cv, pw_bytes) : NULL;
            if (cv->base) {
                g->pa[t] = pa, g->pb[t] = pb;
                if (g->pw) g->pw[t] = pw;
            }
        }
    }
}

/* The transposes, sizes and dtypes: what the call and the size query
 * share. */
static qkv_status check_sizes(qkv_gemm_transpose ta, qkv_gemm_transpose tb, int64_t m, int64_t n,
                              int64_t k, qkv_dtype adt, qkv_dtype bdt)
{
    if (ta != QKV_GEMM_NO_TRANS && ta != QKV_GEMM_TRANS)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "ta: %d is not a qkv_gemm_transpose", (int)ta);
    if (tb != QKV_GEMM_NO_TRANS && tb != QKV_GEMM_TRANS)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "tb: %d is not a qkv_gemm_transpose", (int)tb);
    const int64_t dims[3] = {m, n, k};
    for (int i = 0; i < 3; i++)
        if (dims[i] < 0)
            return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "%c: %lld is negative", "mnk"[i],
                            (long long)dims[i]);
    const qkv_dtype dts[2] = {adt, bdt};
    for (int i = 0; i < 2; i++)
        if (!qkv_float_dtype(dts[i]))
            return qkv_fail(QKV_ERR_DTYPE, "%s: dtype %s, expected f32, f16 or bf16",
                            i ? "b_dtype" : "a_dtype", qkv_dtype_name(dts[i]));
    return QKV_OK;
}

/* Checks the arguments of a call and plans it. */
static qkv_status gemm_check(const qkv_context *cx, qkv_gemm_transpose ta, qkv_gemm_transpose tb,
                             int64_t m, int64_t n, int64_t k, float alpha, const void *a,
                             qkv_dtype adt, int64_t lda, const void *b, qkv_dtype bdt, int64_t ldb,
                             const float *c, int64_t ldc, gemm_job *g, int *nt, gemm_route *route)
{
    QKV_TRY(check_sizes(ta, tb, m, n, k, adt, bdt));
    const size_t as = qkv_dtype_size(adt), bs = qkv_dtype_size(bdt);
    char what[64];
    /* A is stored m x k, or k x m when transposed; B k x n, or n x k. */
    snprintf(what, sizeof what, ta ? "m = %lld" : "k = %lld", (long long)(ta ? m : k));
    QKV_TRY(check_matrix("a", "lda", a, as, ta ? k : m, ta ? m : k, lda, what));
    snprintf(what, sizeof what, tb ? "k = %lld" : "n = %lld", (long long)(tb ? k : n));
    QKV_TRY(check_matrix("b", "ldb", b, bs, tb ? n : k, tb ? k : n, ldb, what));
    snprintf(what, sizeof what, "n = %lld", (long long)n);
    QKV_TRY(check_matrix("c", "ldc", c, sizeof(float), m, n, ldc, what));
    /* A and B are read only when there is a product to add; then C, which
     * is written while they are read, may share no byte with them. */
    if (m > 0 && n > 0 && k > 0 && alpha != 0) {
        const qkv_byte_range out = matrix_range("C", c, sizeof(float), m, n, ldc);
        const qkv_byte_range in[2] = {matrix_range("A", a, as, ta ? k : m, ta ? m : k, lda),
                                      matrix_range("B", b, bs, tb ? n : k, tb ? k : n, ldb)};
        QKV_TRY(qkv_check_disjoint(&out, 1, in, 2));
    }
    return gemm_plan(cx, ta, tb, m, n, k, alpha, adt, bdt, lda, ldb, ldc, g, nt, route);
}

qkv_status qkv_gemm_workspace(qkv_context *ctx, qkv_gemm_transpose ta, qkv_gemm_transpose tb,
                              int64_t m, int64_t n, int64_t k, qkv_dtype a_dtype,
                              qkv_dtype b_dtype, size_t *bytes)
{
    qkv_clear_error();
    if (!bytes) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "bytes: is NULL");
    *bytes = 0;
    QKV_TRY(check_sizes(ta, tb, m, n, k, a_dtype, b_dtype));
    gemm_job g;
    small_job sm;
    float *rows;
    int nt;
    gemm_route route;
    /* Leading dimensions as small as they may be: the route does not
     * depend on them unless they pass the BLAS's int range. */
    QKV_TRY(gemm_plan(qkv_context_get(ctx), ta, tb, m, n, k, 1.0f, a_dtype, b_dtype, 1, 1, 1, &g,
                      &nt, &route));
    qkv_carver cv = {NULL, 0};
    gemm_layout(route, &g, nt, &cv, &sm, &rows);
    *bytes = cv.used;
    return QKV_OK;
}

qkv_status qkv_sgemm_workspace(qkv_context *ctx, qkv_gemm_transpose ta, qkv_gemm_transpose tb,
                               int64_t m, int64_t n, int64_t k, size_t *bytes)
{
    return qkv_gemm_workspace(ctx, ta, tb, m, n, k, QKV_DTYPE_F32, QKV_DTYPE_F32, bytes);
}

qkv_status qkv_gemm(qkv_context *ctx, qkv_gemm_transpose ta, qkv_gemm_transpose tb, int64_t m,
                    int64_t n, int64_t k, float alpha, const void *a, qkv_dtype a_dtype,
                    int64_t lda, const void *b, qkv_dtype b_dtype, int64_t ldb, float beta,
                    float *c, int64_t ldc)
{
    qkv_clear_error();
    const qkv_context *cx = qkv_context_get(ctx);
    gemm_job g;
    int nt;
    gemm_route route;
    QKV_TRY(gemm_check(cx, ta, tb, m, n, k, alpha, a, a_dtype, lda, b, b_dtype, ldb, c, ldc, &g,
                       &nt, &route));
    if (route == ROUTE_NOTHING) return QKV_OK;
    if (route == ROUTE_SCALE) {
        scale_c(c, ldc, m, n, beta);
        return QKV_OK;
    }
#ifdef QKV_HAVE_CBLAS
    if (route == ROUTE_BLAS) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
        return QKV_OK;
    }
#endif
    small_job sm = {g.kern, tb, m, n, k, NULL, b, b_dtype, ldb, alpha, beta, c, ldc, NULL};
    float *rows = NULL;
    qkv_carver cv = {NULL, 0};
    gemm_layout(route, &g, nt, &cv, &sm, &rows);
    void *scratch;
    QKV_TRY(qkv_scratch_get(cx, cv.used, "qkv_gemm", &scratch));
    cv = (qkv_carver){scratch, 0};
    gemm_layout(route, &g, nt, &cv, &sm, &rows);
    qkv_status st;
    if (route == ROUTE_SMALL) {
        for (int64_t r = 0; r < m; r++)
            for (int64_t p = 0; p < k; p++)
                rows[r * k + p] = qkv_elem_get(a, a_dtype, ta ? p * lda + r : r * lda + p);
        sm.a = rows;
        const int64_t slices = (n + SMALL_COLS - 1) / SMALL_COLS;
        st = qkv_parallel_for(cx->pool, slices, nt, small_worker, &sm);
    } else {
        g.alpha = alpha;
        g.beta = beta;
        g.a = a;
        g.b = b;
        g.lda = lda;
        g.ldb = ldb;
        g.c = c;
        g.ldc = ldc;
        st = qkv_parallel_for(cx->pool, g.gm * g.gn, nt, gemm_worker, &g);
    }
    qkv_scratch_release(cx, scratch);
    return st;
}

qkv_status qkv_sgemm(qkv_context *ctx, qkv_gemm_transpose ta, qkv_gemm_transpose tb, int64_t m,
                     int64_t n, int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                     int64_t ldb, float beta, float *c, int64_t ldc)
{
    return qkv_gemm(ctx, ta, tb, m, n, k, alpha, a, QKV_DTYPE_F32, lda, b, QKV_DTYPE_F32, ldb, beta,
                    c, ldc);
}
