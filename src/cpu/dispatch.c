/* Which kernel set runs: the per-call choice, the QKV_ISA environment
 * variable, or the best set this CPU supports according to cpuid. */
#include "../common.h"
#include "dispatch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

const char *qkv_isa_name(qkv_isa isa)
{
    switch (isa) {
    case QKV_ISA_AUTO: return "auto";
    case QKV_ISA_GENERIC: return "generic";
    case QKV_ISA_AVX2: return "avx2";
    case QKV_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

int qkv_isa_supported(qkv_isa isa)
{
    switch (isa) {
    case QKV_ISA_AUTO:
    case QKV_ISA_GENERIC: return 1;
#if defined(QKV_HAVE_X86_KERNELS) && (defined(__GNUC__) || defined(__clang__))
    case QKV_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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

static qkv_isa auto_isa;
static char auto_env[32]; /* the QKV_ISA value that named nothing runnable */
static pthread_once_t auto_once = PTHREAD_ONCE_INIT;

static void choose_auto(void)
{
    const char *env = getenv("QKV_ISA");
    if (env && *env) {
        for (qkv_isa i = QKV_ISA_GENERIC; i <= QKV_ISA_AVX512; i++)
            if (strcmp(env, qkv_isa_name(i)) == 0 && qkv_isa_supported(i)) {
                auto_isa = i;
                return;
            }
        size_t n = strlen(env);
        if (n >= sizeof auto_env) n = sizeof auto_env - 1;
        memcpy(auto_env, env, n);
        auto_isa = QKV_ISA_AUTO;
        return;
    }
    auto_isa = qkv_isa_supported(QKV_ISA_AVX512) ? QKV_ISA_AVX512
               : qkv_isa_supported(QKV_ISA_AVX2) ? QKV_ISA_AVX2
                                                  : QKV_ISA_GENERIC;
}

qkv_isa qkv_isa_auto(void)
{
    pthread_once(&auto_once, choose_auto);
    return auto_isa;
}

qkv_status qkv_cpu_kernels_get(qkv_isa isa, const qkv_cpu_kernels **out)
{
    if (isa == QKV_ISA_AUTO) {
        isa = qkv_isa_auto();
        if (isa == QKV_ISA_AUTO)
            return qkv_fail(QKV_ERR_UNSUPPORTED,
                            "QKV_ISA: '%s' is not generic, avx2 or avx512 runnable here",
                            auto_env);
    }
    if (isa < QKV_ISA_GENERIC || isa > QKV_ISA_AVX512)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "isa: %d is not a qkv_isa", (int)isa);
    if (!qkv_isa_supported(isa))
        return qkv_fail(QKV_ERR_UNSUPPORTED, "isa: %s is not supported by this %s",
                        qkv_isa_name(isa),
#ifdef QKV_HAVE_X86_KERNELS
                        "CPU"
#else
                        "build"
#endif
        );
    switch (isa) {
#ifdef QKV_HAVE_X86_KERNELS
    case QKV_ISA_AVX2: *out = &qkv_kernels_avx2; break;
    case QKV_ISA_AVX512: *out = &qkv_kernels_avx512; break;
#endif
    default: *out = &qkv_kernels_generic; break;
    }
    return QKV_OK;
}
