/* The CPU backend's two paths: the tiled forward (flash.c) and the tiled
 * backward (flash_bwd.c); cpu/backend.c says which calls they take. */
#ifndef QKV_CPU_FLASH_H
#define QKV_CPU_FLASH_H

#include "backend.h"
#include "cpu/dispatch.h"

#include <stddef.h>

extern const qkv_backend qkv_backend_cpu;

/* Computes p with the kernels of p->isa (AUTO resolved by cpu/dispatch.c)
 * in the workspace ws of qkv_flash_forward_workspace(p) bytes. */
qkv_status qkv_flash_attention_forward(const qkv_fwd_problem *p, void *ws);

/* The fast backward, in ws of qkv_flash_backward_workspace(bp) bytes; the
 * float mask's gradient is not its business (cpu/backend.c leaves those
 * calls to the reference). */
qkv_status qkv_flash_attention_backward(const qkv_bwd_problem *bp, void *ws);

/* The bytes of scratch the forward and the backward take for p (0 when
 * the call has nothing to compute): one 64-byte aligned block, carved
 * into the per-thread buffers and the shared ones. The same code sizes
 * and carves, so the figure is exact. */
size_t qkv_flash_forward_workspace(const qkv_fwd_problem *p);
size_t qkv_flash_backward_workspace(const qkv_bwd_problem *bp);

/* n elements of row (a, b, c) of t into dst, contiguous, widened to
 * float: by k's vector widening when t is a 16-bit view with contiguous
 * rows, else element by element. How both paths pack the f16 and bf16
 * rows their f32 kernels read. */
static inline void qkv_cpu_row_widen(const qkv_cpu_kernels *k, const qkv_tensor *t, int64_t a,
                                     int64_t b, int64_t c, int64_t n, float *dst)
{
    if (n <= 0) return;
    if (t->stride[3] != 1 || t->dtype == QKV_DTYPE_F32) {
        qkv_row_get(t, a, b, c, n, 1.0f, dst, 1);
        return;
    }
    qkv_cpu_widen(k, t->dtype, dst, (const uint16_t *)t->data + qkv_view_offset(t, a, b, c, 0), n);
}

/* x[j * xs] += the float mask m at (b, h, i, jb + j) for j in [from, to]:
 * an f32 mask's row by pointer, a 16-bit one's element by element. The
 * forward's scores and the backward's recomputed ones take it alike. */
static inline void qkv_cpu_mask_add(const qkv_tensor *m, int64_t b, int64_t h, int64_t i,
                                    int64_t jb, int64_t from, int64_t to, float *x, int64_t xs)
{
    if (from > to) return;
    if (m->dtype == QKV_DTYPE_F32) {
        const float *row = qkv_view_at(m, b, h, i, jb);
        for (int64_t j = from; j <= to; j++) x[j * xs] += row[j * m->stride[3]];
    } else {
        for (int64_t j = from; j <= to; j++) x[j * xs] += qkv_view_get(m, b, h, i, jb + j);
    }
}

/* n floats of src into row (a, b, c) of t, rounded to its dtype: by k's
 * vector narrowing when t is a 16-bit view with contiguous rows. */
static inline void qkv_cpu_row_narrow(const qkv_cpu_kernels *k, const qkv_tensor *t, int64_t a,
                                      int64_t b, int64_t c, int64_t n, const float *src)
{
    if (n <= 0) return;
    if (t->stride[3] != 1 || t->dtype == QKV_DTYPE_F32) {
        qkv_row_put(t, a, b, c, n, src, 1);
        return;
    }
    qkv_cpu_narrow(k, t->dtype, (uint16_t *)t->data + qkv_view_offset(t, a, b, c, 0), src, n);
}

#endif
