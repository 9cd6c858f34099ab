/* The CPU backend's two paths: the tiled forward (flash.c) and the tiled
 * backward (flash_bwd.c); cpu/backend.c says which calls they take. */
#ifndef QKV_CPU_FLASH_H
#define QKV_CPU_FLASH_H

#include "backend.h"

#include <stddef.h>

extern const qkv_backend qkv_backend_cpu;

/* Computes p with the kernels of p->isa (AUTO resolved by cpu/dispatch.c). */
qkv_status qkv_flash_attention_forward(const qkv_fwd_problem *p);

/* The fast backward; the float mask's gradient is not its business
 * (cpu/backend.c leaves those calls to the reference). */
qkv_status qkv_flash_attention_backward(const qkv_bwd_problem *bp);

/* The bytes of scratch the forward and the backward take for p (0 when
 * the call has nothing to compute): one 64-byte aligned block, allocated
 * once per call and carved into the per-thread buffers and the shared
 * ones. The same code sizes and carves, so the figure is exact. */
size_t qkv_flash_forward_workspace(const qkv_fwd_problem *p);
size_t qkv_flash_backward_workspace(const qkv_bwd_problem *bp);

/* Carving a workspace: each piece starts 64 bytes from the last at least
 * (so threads' pieces share no cache line) and with base NULL nothing is
 * written, only counted: one function lays a workspace out for both
 * uses, sizing it (base NULL) and cutting it (base the block). */
typedef struct qkv_carver {
    char *base; /* NULL: count only */
    size_t used;
} qkv_carver;

static inline void *qkv_carve(qkv_carver *c, size_t bytes)
{
    void *at = c->base ? c->base + c->used : NULL;
    c->used += (bytes + 63) / 64 * 64;
    return at;
}

#endif
