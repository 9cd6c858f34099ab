/* cpuid through the compiler's builtins; see cpuid.h. */
#include "cpu/cpuid.h"

#include <stdatomic.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>

/* F16C: leaf 1, ECX bit 29 (asked directly: clang 14's
 * __builtin_cpu_supports does not know the name). */
static int has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}

/* AVX512_BF16: leaf 7 subleaf 1, EAX bit 5 (after leaf 7's maximum
 * subleaf, in EAX of subleaf 0, says subleaf 1 exists). */
static int has_avx512_bf16(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || a < 1) return 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5)) != 0;
}
#endif

static int ask_cpu(qkv_isa isa)
{
    switch (isa) {
    case QKV_ISA_AUTO:
    case QKV_ISA_GENERIC: return 1;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    case QKV_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case QKV_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f");
    case QKV_ISA_AVX512_BF16:
        __builtin_cpu_init();
        /* -mavx512bf16 implies AVX512BW, which the compiler may use too */
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               has_avx512_bf16();
#else
    case QKV_ISA_AVX2:
    case QKV_ISA_AVX512:
    case QKV_ISA_AVX512_BF16: return 0;
#endif
    }
    return 0;
}

/* The answers, asked once per isa: cpuid can trap to the hypervisor in a
 * virtual machine (tens of microseconds), and every call resolves its isa.
 * 0: not asked yet; else 1 + the answer. */
static _Atomic int answers[QKV_ISA_AVX512_BF16 + 1];

int qkv_cpu_runs(qkv_isa isa)
{
    if (isa < 0 || isa > QKV_ISA_AVX512_BF16) return 0;
    int a = atomic_load_explicit(&answers[isa], memory_order_relaxed);
    if (a == 0) {
        a = 1 + ask_cpu(isa);
        atomic_store_explicit(&answers[isa], a, memory_order_relaxed);
    }
    return a - 1;
}
