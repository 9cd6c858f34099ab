/* The contract between the fast CPU driver (cpu/flash.c) and the kernels,
 * one set per instruction set, all compiled from kernels/body.h. The driver
 * owns blocking, masks, packing and threads; a kernel computes one tile.
 *
 * Layout: the queries of a tile are packed transposed, qt[d][i] (dim d,
 * row i), and scores and output are kept transposed too, st[j][i] (key j),
 * ot[c][i] (value column c): rows lie along the vector, so neither product
 * needs a transposed copy of K or V and the softmax works down columns
 * without horizontal reductions.
 *   rows    m is a multiple of QKV_TILE_ROWS (padded rows hold zeros);
 *   keys    any n; K and V rows are read where they are (d, c contiguous);
 *   values  any ev.
 * Buffers the driver owns (qt, st, o, mx, alpha) are 64-byte aligned with
 * leading dimensions that are multiples of 16 floats. */
#ifndef QKV_CPU_KERNELS_H
#define QKV_CPU_KERNELS_H

#include <stdint.h>

#define QKV_TILE_ROWS 16

typedef struct qkv_cpu_kernels {
    const char *name;

    /* st[j][i] = sum_d k[j][d] * qt[d][i] for j < n, i < m.
     *   qt (e, m) ld ldq;  k (n, e) ld ldk, any alignment;  st (n, m) ld lds. */
    void (*qk)(const float *qt, int64_t ldq, const float *k, int64_t ldk, float *st, int64_t lds,
               int64_t m, int64_t n, int64_t e);

    /* Online softmax step over n keys for m rows (forbidden scores already
     * -inf). For each row i with running max mx[i] and sum l[i]:
     *   mnew = max(mx[i], max_j st[j][i]); a row with mnew = -inf has seen
     *   nothing allowed and subtracts 0 below instead;
     *   alpha[i] = exp(mx[i] - mnew);  st[j][i] = exp(st[j][i] - mnew);
     *   l[i] = l[i] * alpha[i] + sum_j st[j][i];  mx[i] = mnew.
     * A NaN score is left out of the max and makes l[i] NaN for good. */
    void (*softmax)(float *st, int64_t lds, int64_t m, int64_t n, float *mx, double *l,
                    float *alpha);

    /* ot[c][i] = ot[c][i] * alpha[i] + sum_j v[j][c] * pt[j][i] for c < ev,
     * i < m: the output, transposed like the scores.
     *   pt (n, m) ld ldp;  v (n, ev) ld ldv, any alignment;  ot (ev, m) ld ldo. */
    void (*pv)(const float *pt, int64_t ldp, const float *v, int64_t ldv, float *ot, int64_t ldo,
               const float *alpha, int64_t m, int64_t n, int64_t ev);

    /* x[i] = exp(x[i]) in place for x[i] <= 0, -inf or NaN (n any):
     * relative error below 3e-7 (tests/test_kernels.c measures it), -inf
     * gives exactly 0, NaN stays NaN, results below e^-87 flush to 0. */
    void (*exp_inplace)(float *x, int64_t n);

    /* x[i] = c * tanh(x[i] / c) in place (n any), absolute error below
     * 3e-7 * c. */
    void (*softcap)(float *x, int64_t n, float c);

    /* The SGEMM microkernel (cpu/gemm.c owns packing, blocking, threads):
     * a register tile of gemm_mr rows x gemm_nr columns of C,
     *   acc[i][j] = sum_{p < kc} a[p * gemm_mr + i] * b[p * gemm_nr + j],
     * summed in order of p, then for i < rows, j < cols (rows <= gemm_mr,
     * cols <= gemm_nr):
     *   c[i * ldc + j] = alpha * acc[i][j] + beta * c[i * ldc + j],
     * where beta == 0 writes alpha * acc[i][j] without reading c. The
     * arithmetic of an element does not depend on rows and cols (a partial
     * tile goes through the same vector code), so neither does the result.
     *   a  packed op(A) panel, kc x gemm_mr, zero-padded, any alignment;
     *   b  packed op(B) panel, kc x gemm_nr, 64-byte aligned, zero-padded;
     *   c  any alignment; kc >= 1. */
    int gemm_mr, gemm_nr;
    void (*gemm)(int64_t kc, const float *a, const float *b, float alpha, float beta, float *c,
                 int64_t ldc, int rows, int cols);

    /* Row-major kernels for tiles of few rows (decode-shaped attention,
     * matrix-vector products), vectors along the long dims:
     *   dot_rows:  c[r][j] = sum_{d < k} a[r][d] * b[j][d], r < m, j < n;
     *              a (m, k) ld lda, b (n, k) ld ldb, c (m, n) ld ldc, any
     *              alignment. Each c[r][j] is summed in an order that
     *              depends only on k.
     *   axpy_rows: o[r][c] = o[r][c] * alpha[r] + sum_j p[r][j] * v[j][c],
     *              r < m, c < ev, j < n summed in order; p (m, n) ld ldp,
     *              v (n, ev) ld ldv, o (m, ev) ld ldo, any alignment. */
    void (*dot_rows)(const float *a, int64_t lda, int64_t m, const float *b, int64_t ldb,
                     float *c, int64_t ldc, int64_t n, int64_t k);
    /* dot_rows with b of f16 or bf16 patterns, widened in registers: the
     * bits dot_rows gives on b's widened copy, from half the bytes. */
    void (*dot_rows_f16)(const float *a, int64_t lda, int64_t m, const uint16_t *b, int64_t ldb,
                         float *c, int64_t ldc, int64_t n, int64_t k);
    void (*dot_rows_bf16)(const float *a, int64_t lda, int64_t m, const uint16_t *b, int64_t ldb,
                          float *c, int64_t ldc, int64_t n, int64_t k);
    /* The softmax step above for row-major scores: row r is s[r][j], j < n,
     * ld lds; the same results up to the order of the sum. */
    void (*softmax_rows)(float *s, int64_t lds, int64_t m, int64_t n, float *mx, double *l,
                         float *alpha);
    void (*axpy_rows)(const float *p, int64_t ldp, int64_t m, const float *v, int64_t ldv,
                      float *o, int64_t ldo, const float *alpha, int64_t n, int64_t ev);

    /* dst[x] = src[x] widened to float (exactly), x < n, any alignment:
     * IEEE binary16 (widen_f16) or bfloat16 (widen_bf16) patterns. How the
     * driver reads f16 and bf16 views into the f32 tiles the kernels
     * above compute on. */
    void (*widen_f16)(float *dst, const uint16_t *src, int64_t n);
    void (*widen_bf16)(float *dst, const uint16_t *src, int64_t n);
    /* And back: dst[x] = src[x] rounded to nearest even, x < n, any
     * alignment, exactly as half.h's qkv_f32_to_f16 and qkv_f32_to_bf16
     * round (NaN stays NaN). */
    void (*narrow_f16)(uint16_t *dst, const float *src, int64_t n);
    void (*narrow_bf16)(uint16_t *dst, const float *src, int64_t n);
} qkv_cpu_kernels;

/* Every set this build has: generic always; the x86 sets when the build
 * compiled them (CMake defines QKV_HAVE_X86_KERNELS then). */
extern const qkv_cpu_kernels qkv_kernels_generic;
#ifdef QKV_HAVE_X86_KERNELS
extern const qkv_cpu_kernels qkv_kernels_avx2;
extern const qkv_cpu_kernels qkv_kernels_avx512;
#endif

#endif
