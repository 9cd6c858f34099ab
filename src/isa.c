/* The public instruction-set queries: what this build and CPU can run, and
 * what QKV_ISA_AUTO means in this process (the QKV_ISA environment
 * variable, or the best set here). cpu/cpuid.c asks the CPU. */
#include "common.h"
#include "cpu/cpuid.h"

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
    case QKV_ISA_AVX512_BF16: return "avx512bf16";
    }
    return "unknown";
}

int qkv_isa_supported(qkv_isa isa)
{
    switch (isa) {
    case QKV_ISA_AUTO:
    case QKV_ISA_GENERIC: return 1;
    case QKV_ISA_AVX2:
    case QKV_ISA_AVX512:
    case QKV_ISA_AVX512_BF16:
#ifdef QKV_HAVE_X86_KERNELS
        return qkv_cpu_runs(isa);
#else
        return 0;
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
        for (qkv_isa i = QKV_ISA_GENERIC; i <= QKV_ISA_AVX512_BF16; i++)
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
    auto_isa = qkv_isa_supported(QKV_ISA_AVX512_BF16) ? QKV_ISA_AVX512_BF16
               : qkv_isa_supported(QKV_ISA_AVX512)    ? QKV_ISA_AVX512
               : qkv_isa_supported(QKV_ISA_AVX2) ? QKV_ISA_AVX2
                                                  : QKV_ISA_GENERIC;
}

qkv_isa qkv_isa_auto(void)
{
    pthread_once(&auto_once, choose_auto);
    return auto_isa;
}

qkv_status qkv_isa_resolve(qkv_isa isa, qkv_isa *out)
{
    if (isa == QKV_ISA_AUTO) {
        isa = qkv_isa_auto();
        if (isa == QKV_ISA_AUTO)
            return qkv_fail(QKV_ERR_UNSUPPORTED,
                            "QKV_ISA: '%s' is not generic, avx2, avx512 or avx512bf16 runnable here",
                            auto_env);
    }
    if (isa < QKV_ISA_GENERIC || isa > QKV_ISA_AVX512_BF16)
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
    *out = isa;
    return QKV_OK;
}
