/* The CPU backend's two paths: the tiled forward (flash.c) and the tiled
 * backward (flash_bwd.c); cpu/backend.c says which calls they take. */
#ifndef QKV_CPU_FLASH_H
#define QKV_CPU_FLASH_H

#include "backend.h"

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

#endif
