/* The CPU backend's two paths: the tiled forward (flash.c) and the tiled
 * backward (flash_bwd.c); cpu/backend.c says which calls they take. */
#ifndef QKV_CPU_FLASH_H
#define QKV_CPU_FLASH_H

#include "backend.h"

extern const qkv_backend qkv_backend_cpu;

/* Computes p with the kernels of p->isa (AUTO resolved by cpu/dispatch.c). */
qkv_status qkv_flash_attention_forward(const qkv_fwd_problem *p);

/* The fast backward; the float mask's gradient is not its business
 * (cpu/backend.c leaves those calls to the reference). */
qkv_status qkv_flash_attention_backward(const qkv_bwd_problem *bp);

#endif
