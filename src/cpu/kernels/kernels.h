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

    /* The backward's row of a block (n any): s[x] = exp(s[x] - lse), the
     * weight, for lo <= x <= hi and 0 elsewhere, by exp_inplace's exp;
     * then g[x] = ((s[x] * (g[x] - d)) * c[x]) * scale (c NULL: no c[x]
     * factor), or 0 where s[x] is 0, every step rounded as written. */
    void (*grad_row)(float *s, float *g, const float *c, float lse, float d, float scale,
                     int64_t lo, int64_t hi, int64_t n);

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
    /* axpy_rows with v of f16 or bf16 patterns, widened in registers: the
     * bits axpy_rows gives on v's widened copy (how decode reads a 16-bit
     * cache's values in place). */
    void (*axpy_rows_f16)(const float *p, int64_t ldp, int64_t m, const uint16_t *v, int64_t ldv,
                          float *o, int64_t ldo, const float *alpha, int64_t n, int64_t ev);
    void (*axpy_rows_bf16)(const float *p, int64_t ldp, int64_t m, const uint16_t *v,
                           int64_t ldv, float *o, int64_t ldo, const float *alpha, int64_t n,
                           int64_t ev);

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
    /* blocks of q8_0 or q4_0 (quant.h) at src, any alignment, into
     * blocks x 32 floats at dst, any alignment: the bits of quant.h's
     * qkv_q8_0_dequantize / _q4_0_ (how the driver reads K and V views
     * in a block format). */
    void (*dequant_q8_0)(float *dst, const unsigned char *src, int64_t blocks);
    void (*dequant_q4_0)(float *dst, const unsigned char *src, int64_t blocks);

    /* bf16 dot products, in the sets that have them (NULL elsewhere: those
     * compute bf16 calls with widen_bf16 and the f32 kernels above). A
     * pair is two bf16 patterns in one uint32_t, the element of lower
     * index in the low half; dp(acc, a, b) is one lane of VDPBF16PS:
     * acc + a.hi * b.hi rounded to f32, then + a.lo * b.lo rounded, each
     * step one fused multiply-add (to nearest even), denormal inputs and
     * results read and written as zero. The tile layout is the f32
     * kernels', with pairs in the place of floats:
     *   qk_pairs:   st[j][i] = scale * sum_x dp(qp[x][i], (k[j][2x], k[j][2x+1]))
     *               for j < n, i < m, x < ceil(e/2) in order from 0: the
     *               queries' pairs along the vector, each key's pair
     *               broadcast (for odd e its last pair is (k[j][e-1], 0)
     *               and k[j][e] is not read). qp (ceil(e/2), m) ld ldq,
     *               64-byte aligned; k (n, e) bf16 ld ldk, 2-byte aligned.
     *   pack_pairs: pp[x][i] = (bf16(st[2x][i]), bf16(st[2x+1][i])) for
     *               x < ceil(n/2), i < m, rounded as narrow_bf16 rounds;
     *               the high half 0 where 2x + 1 = n. pp ld ldp, 64-byte
     *               aligned.
     *   pv_pairs:   ot[c][i] = ot[c][i] * alpha[i] + sum_x dp(pp[x][i], vp[x][c])
     *               for c < ev, i < m, x < ceil(n/2) in order; vp
     *               (ceil(n/2), ev) ld ldv, 4-byte aligned.
     *   pair_rows:  dst[c] = a[c] | b[c] << 16 for c < n: two bf16 rows
     *               (keys 2x and 2x + 1 of V) as the pairs pv_pairs reads. */
    void (*qk_pairs)(const uint32_t *qp, int64_t ldq, const uint16_t *k, int64_t ldk, float *st,
                     int64_t lds, int64_t m, int64_t n, int64_t e, float scale);
    void (*pack_pairs)(uint32_t *pp, int64_t ldp, const float *st, int64_t lds, int64_t m,
                       int64_t n);
    void (*pv_pairs)(const uint32_t *pp, int64_t ldp, const uint32_t *vp, int64_t ldv, float *ot,
                     int64_t ldo, const float *alpha, int64_t m, int64_t n, int64_t ev);
    void (*pair_rows)(uint32_t *dst, const uint16_t *a, const uint16_t *b, int64_t n);
    /* The SGEMM microkernel on pairs: gemm's contract with
     *   acc[i][j] = sum_{x < kp} dp(b[x * gemm_nr + j], a[x * gemm_mr + i])
     * from 0, in order of x: a and b packed panels of kp pairs, a's
     * (op(A)[i][2x], op(A)[i][2x+1]), b's (op(B)[2x][j], op(B)[2x+1][j]),
     * zero-padded; b 64-byte aligned; kp >= 1. */
    void (*gemm_pairs)(int64_t kp, const uint32_t *a, const uint32_t *b, float alpha, float beta,
                       float *c, int64_t ldc, int rows, int cols);
} qkv_cpu_kernels;

/* Every set this build has: generic always; the x86 sets when the build
 * compiled them (CMake defines QKV_HAVE_X86_KERNELS then). The generic
 * set computes bf16 in f32; qkv_kernels_generic_pairs is the same set with
 * the pair kernels above in plain C, VDPBF16PS emulated lane by lane: not
 * an isa anyone picks (it is slow), but how the tests hold the bf16 pair
 * path (its packing, pairing and tails) to the reference on every machine. */
extern const qkv_cpu_kernels qkv_kernels_generic;
extern const qkv_cpu_kernels qkv_kernels_generic_pairs;
#ifdef QKV_HAVE_X86_KERNELS
extern const qkv_cpu_kernels qkv_kernels_avx2;
extern const qkv_cpu_kernels qkv_kernels_avx512;
extern const qkv_cpu_kernels qkv_kernels_avx512bf16;
#endif

#endif
