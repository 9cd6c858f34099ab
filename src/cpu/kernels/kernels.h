/* The contract between the fast CPU driver (cpu/flash.c) and the kernels,
 * one set per instruction set, all compiled from kernels/body.h. The driver
 * owns blocking, masks, tails and threads; a kernel computes one tile on
 * padded, packed buffers, so it never sees a stride, a mask or a tail.
 *
 * Tile geometry (every set uses the same numbers, so the driver is one):
 *   rows    m is a multiple of QKV_TILE_ROWS (padded rows hold zeros);
 *   keys    n is a multiple of QKV_TILE_KEYS (padded keys are masked);
 *   values  ev is a multiple of QKV_TILE_VALS (padded columns hold zeros).
 * All buffers are float, row-major, 64-byte aligned, their leading
 * dimensions multiples of 16 floats. */
#ifndef QKV_CPU_KERNELS_H
#define QKV_CPU_KERNELS_H

#include <stdint.h>

#define QKV_TILE_ROWS 6
#define QKV_TILE_KEYS 64
#define QKV_TILE_VALS 16

typedef struct qkv_cpu_kernels {
    const char *name;

    /* s[i][j] = sum_d q[i][d] * kt[d][j] for i < m, j < n.
     *   q  (m, e), leading dim ldq;  kt (e, n), leading dim ldk (K packed
     *   transposed);  s (m, n), leading dim lds. */
    void (*qk)(const float *q, int64_t ldq, const float *kt, int64_t ldk, float *s, int64_t lds,
               int64_t m, int64_t n, int64_t e);

    /* Online softmax step for m rows of n scores (forbidden ones already
     * -inf). For each row i with running max mx[i] and sum l[i]:
     *   mnew = max(mx[i], max_j s[i][j]);
     *   alpha[i] = exp(mx[i] - mnew) (1 when mnew = -inf);
     *   s[i][j] = exp(s[i][j] - mnew) (0 for -inf);
     *   l[i] = l[i] * alpha[i] + sum_j s[i][j];  mx[i] = mnew.
     * A NaN score is left out of the max and makes l[i] NaN for good. */
    void (*softmax)(float *s, int64_t lds, int64_t m, int64_t n, float *mx, double *l,
                    float *alpha);

    /* o[i][c] = o[i][c] * alpha[i] + sum_j p[i][j] * v[j][c] for i < m,
     * c < ev.  p (m, n) ld ldp;  v (n, ev) ld ldv;  o (m, ev) ld ldo. */
    void (*pv)(const float *p, int64_t ldp, const float *v, int64_t ldv, float *o, int64_t ldo,
               const float *alpha, int64_t m, int64_t n, int64_t ev);

    /* x[i] = exp(x[i]) in place for x[i] <= 0, -inf or NaN (n any):
     * relative error below 3e-7 (tests/test_kernels.c measures it), -inf
     * gives exactly 0, NaN stays NaN, results below 2^-126 flush to 0. */
    void (*exp_inplace)(float *x, int64_t n);

    /* x[i] = c * tanh(x[i] / c) in place (n any), absolute error below
     * 2e-7 * c. */
    void (*softcap)(float *x, int64_t n, float c);
} qkv_cpu_kernels;

/* Every set this build has: generic always; the x86 sets when the build
 * compiled them (CMake defines QKV_HAVE_X86_KERNELS then). */
extern const qkv_cpu_kernels qkv_kernels_generic;
#ifdef QKV_HAVE_X86_KERNELS
extern const qkv_cpu_kernels qkv_kernels_avx2;
extern const qkv_cpu_kernels qkv_kernels_avx512;
#endif

#endif
