/* Kernel-set lookup for the fast driver; see dispatch.c. */
#ifndef QKV_CPU_DISPATCH_H
#define QKV_CPU_DISPATCH_H

#include "qkv.h"
#include "cpu/kernels/kernels.h"

/* The kernels for isa (AUTO resolved), or an error with a detail. */
qkv_status qkv_cpu_kernels_get(qkv_isa isa, const qkv_cpu_kernels **out);

#endif
