/* Kernel-set lookup for the fast driver; see dispatch.c. */
#ifndef QKV_CPU_DISPATCH_H
#define QKV_CPU_DISPATCH_H

#include "qkv.h"
#include "cpu/kernels/kernels.h"

/* The kernels for isa (AUTO resolved), or an error with a detail. */
qkv_status qkv_cpu_kernels_get(qkv_isa isa, const qkv_cpu_kernels **out);

/* Tests only: every call takes k's kernels, whatever its isa, until
 * k is NULL again (qkv_kernels_generic_pairs, say, which no isa names).
 * Atomic, but a call in flight may take either set. */
void qkv_cpu_kernels_force(const qkv_cpu_kernels *k);

/* n 16-bit patterns of dtype dt (F16 or BF16) widened into floats, and
 * floats narrowed into them, by k's vector kernels. */
static inline void qkv_cpu_widen(const qkv_cpu_kernels *k, qkv_dtype dt, float *dst,
                                 const uint16_t *src, int64_t n)
{
    if (dt == QKV_DTYPE_F16)
        k->widen_f16(dst, src, n);
    else
        k->widen_bf16(dst, src, n);
}

static inline void qkv_cpu_narrow(const qkv_cpu_kernels *k, qkv_dtype dt, uint16_t *dst,
                                  const float *src, int64_t n)
{
    if (dt == QKV_DTYPE_F16)
        k->narrow_f16(dst, src, n);
    else
        k->narrow_bf16(dst, src, n);
}

/* dot_rows with b, and axpy_rows with v, of dtype dt: F32, or F16 / BF16
 * patterns widened in registers (the same bits as on a widened copy). */
static inline void qkv_cpu_dot_rows(const qkv_cpu_kernels *k, qkv_dtype dt, const float *a,
                                    int64_t lda, int64_t m, const void *b, int64_t ldb, float *c,
                                    int64_t ldc, int64_t n, int64_t kk)
{
    if (dt == QKV_DTYPE_F32)
        k->dot_rows(a, lda, m, b, ldb, c, ldc, n, kk);
    else
        (dt == QKV_DTYPE_F16 ? k->dot_rows_f16 : k->dot_rows_bf16)(a, lda, m, b, ldb, c, ldc, n, kk);
}

static inline void qkv_cpu_axpy_rows(const qkv_cpu_kernels *k, qkv_dtype dt, const float *p,
                                     int64_t ldp, int64_t m, const void *v, int64_t ldv, float *o,
                                     int64_t ldo, const float *alpha, int64_t n, int64_t ev)
{
    if (dt == QKV_DTYPE_F32)
        k->axpy_rows(p, ldp, m, v, ldv, o, ldo, alpha, n, ev);
    else
        (dt == QKV_DTYPE_F16 ? k->axpy_rows_f16 : k->axpy_rows_bf16)(p, ldp, m, v, ldv, o, ldo,
                                                                     alpha, n, ev);
}

#endif
