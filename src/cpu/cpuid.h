/* What this CPU can run, asked of cpuid once per process: the one place
 * outside the kernels that knows instruction sets (the library's isa
 * choice and the bench's FMA ceiling both ask here). */
#ifndef QKV_CPU_CPUID_H
#define QKV_CPU_CPUID_H

#include "qkv.h"

/* 1 when this CPU executes the instructions of isa (AVX2 means AVX2 and
 * FMA, AVX512 means AVX-512F, AVX512_BF16 AVX-512F, BW and BF16), whether or not this build has kernels for
 * it (every CPU with AVX2 and FMA also has F16C, which the AVX2 set's
 * f16 widening uses, and it is asked too); QKV_ISA_GENERIC and QKV_ISA_AUTO: 1. 0 on a CPU or compiler where
 * cpuid cannot be asked. Thread-safe. */
int qkv_cpu_runs(qkv_isa isa);

#endif
