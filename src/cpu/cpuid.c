/* cpuid through the compiler's builtins; see cpuid.h. */
#include "cpu/cpuid.h"

int qkv_cpu_runs(qkv_isa isa)
{
    switch (isa) {
    case QKV_ISA_AUTO:
    case QKV_ISA_GENERIC: return 1;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    case QKV_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    case QKV_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f");
#else
    case QKV_ISA_AVX2:
    case QKV_ISA_AVX512: return 0;
#endif
    }
    return 0;
}
