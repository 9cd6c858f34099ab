/* The fast forward path; see flash.c. */
#ifndef QKV_CPU_FLASH_H
#define QKV_CPU_FLASH_H

#include "../attention.h"

/* Computes p with the kernels of isa (AUTO resolved by cpu/dispatch.c). */
qkv_status qkv_flash_attention_forward(const qkv_fwd_problem *p, qkv_isa isa);

/* The fast backward (flash_bwd.c); the float mask's gradient is not its
 * business (the caller sends those calls to the reference). */
qkv_status qkv_flash_attention_backward(const qkv_bwd_problem *bp, qkv_isa isa);

#endif
