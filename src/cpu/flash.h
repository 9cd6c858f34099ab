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
 * rows, by blocks for a block format (whose rows are whole blocks), else
 * element by element. How both paths pack the f16, bf16, q8_0 and q4_0
 * rows their f32 kernels read. */
static inline void qkv_cpu_row_widen(const qkv_cpu_kernels *k, const qkv_tensor *t, int64_t a,
                                     int64_t b, int64_t c, int64_t n, float *dst)
{
    if (n <= 0) return;
    if (qkv_block_dtype(t->dtype)) {
        const int64_t at = qkv_view_offset(t, a, b, c, 0) / QKV_QBLOCK * qkv_block_bytes(t->dtype);
        (t->dtype == QKV_DTYPE_Q8_0 ? k->dequant_q8_0 : k->dequant_q4_0)(
            dst, (const unsigned char *)t->data + at, n / QKV_QBLOCK);
        return;
    }
    if (t->stride[3] != 1 || t->dtype == QKV_DTYPE_F32) {
        qkv_row_get(t, a, b, c, n, 1.0f, dst, 1);
        return;
    }
    qkv_cpu_widen(k, t->dtype, dst, (const uint16_t *)t->data + qkv_view_offset(t, a, b, c, 0), n);
}

/* The bf16 pairs layouts (forward and backward, on kernels with bf16 dot
 * products; kernels.h says what a pair is). */

/* n elements of row (a, b, c) of a bf16 view as pairs, dst[x * step] =
 * (t[2x], t[2x+1]), the high half 0 past n: a query row of the forward's
 * tile, a key or value row of the backward's. */
static inline void qkv_cpu_row_pairs(const qkv_tensor *t, int64_t a, int64_t b, int64_t c,
                                     int64_t n, uint32_t *dst, int64_t step)
{
    const uint16_t *base = (const uint16_t *)t->data;
    for (int64_t x = 0; 2 * x < n; x++) {
        const uint32_t lo = base[qkv_view_offset(t, a, b, c, 2 * x)];
        const uint32_t hi = 2 * x + 1 < n ? base[qkv_view_offset(t, a, b, c, 2 * x + 1)] : 0u;
        dst[x * step] = lo | hi << 16;
    }
}

/* Rows r0 .. r0 + n - 1 (width elements each) of a bf16 view's (a, b)
 * slice as bf16 patterns: in place when the rows are contiguous, else
 * copied into buf (ld width); *ld their leading dimension. */
static inline const uint16_t *qkv_cpu_rows_bits(const qkv_tensor *t, uint16_t *buf, int64_t a,
                                                int64_t b, int64_t r0, int64_t n, int64_t width,
                                                int64_t *ld)
{
    const uint16_t *base = (const uint16_t *)t->data;
    if (t->stride[3] == 1) {
        *ld = t->stride[2];
        return base + qkv_view_offset(t, a, b, r0, 0);
    }
    for (int64_t r = 0; r < n; r++)
        for (int64_t d = 0; d < width; d++)
            buf[r * width + d] = base[qkv_view_offset(t, a, b, r0 + r, d)];
    *ld = width;
    return buf;
}

/* n bf16 rows (ld ld, width elements) joined in pairs of rows, dst[x][c]
 * = (rows[2x][c], rows[2x+1][c]) with leading dimension ldd, an odd n's
 * last row paired with 0: the operand a pairs product broadcasts across
 * the rows it sums over (the forward's V, the backward's dO and Q). */
static inline void qkv_cpu_join_rows(const qkv_cpu_kernels *k, const uint16_t *rows, int64_t ld,
                                     int64_t n, int64_t width, uint32_t *dst, int64_t ldd)
{
    for (int64_t x = 0; 2 * x < n; x++) {
        const uint16_t *r0 = rows + 2 * x * ld;
        if (2 * x + 1 < n)
            k->pair_rows(dst + x * ldd, r0, r0 + ld, width);
        else
            for (int64_t c = 0; c < width; c++) dst[x * ldd + c] = r0[c];
    }
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
