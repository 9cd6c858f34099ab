/* The kernels for AVX-512F (the vocabulary is avx512.h's). Compiled with
 * -mavx512f; chosen only when cpuid says the CPU has it (cpu/dispatch.c). */
#include "cpu/kernels/avx512.h"

#define KNAME qkv_kernels_avx512
#define KNAME_STRING "avx512"

#include "cpu/kernels/body.h"
