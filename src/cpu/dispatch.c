/* Which kernel set runs: the isa asked for, resolved by src/isa.c (the
 * per-call choice, the QKV_ISA environment variable, or the best set this
 * CPU supports). */
#include "common.h"
#include "cpu/dispatch.h"

qkv_status qkv_cpu_kernels_get(qkv_isa isa, const qkv_cpu_kernels **out)
{
    QKV_TRY(qkv_isa_resolve(isa, &isa));
    switch (isa) {
#ifdef QKV_HAVE_X86_KERNELS
    case QKV_ISA_AVX2: *out = &qkv_kernels_avx2; break;
    case QKV_ISA_AVX512: *out = &qkv_kernels_avx512; break;
#endif
    default: *out = &qkv_kernels_generic; break;
    }
    return QKV_OK;
}
