/* Which kernel set runs: the isa asked for, resolved by src/isa.c (the
 * per-call choice, the QKV_ISA environment variable, or the best set this
 * CPU supports). */
#include "common.h"
#include "cpu/dispatch.h"

#include <stdatomic.h>

static _Atomic(const qkv_cpu_kernels *) forced;

void qkv_cpu_kernels_force(const qkv_cpu_kernels *k) { atomic_store(&forced, k); }

qkv_status qkv_cpu_kernels_get(qkv_isa isa, const qkv_cpu_kernels **out)
{
    const qkv_cpu_kernels *f = atomic_load(&forced);
    if (f) {
        *out = f;
        return QKV_OK;
    }
    QKV_TRY(qkv_isa_resolve(isa, &isa));
    switch (isa) {
#ifdef QKV_HAVE_X86_KERNELS
    case QKV_ISA_AVX2: *out = &qkv_kernels_avx2; break;
    case QKV_ISA_AVX512: *out = &qkv_kernels_avx512; break;
    case QKV_ISA_AVX512_BF16: *out = &qkv_kernels_avx512bf16; break;
#endif
    default: *out = &qkv_kernels_generic; break;
    }
    return QKV_OK;
}
