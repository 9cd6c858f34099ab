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

#endif
