/* The kernels for AVX-512F with AVX512_BF16: avx512.h's vocabulary, and
 * the bf16 pair kernels of body.h on VDPBF16PS (16 lanes, each adding two
 * bf16 products to an f32 sum: twice the multiply-adds of an f32 FMA).
 * Compiled with -mavx512f -mavx512bf16; chosen only when cpuid says the
 * CPU has both (cpu/cpuid.c), so Cascade Lake, AVX-512 without BF16, runs
 * avx512.c's set instead. */
#include "cpu/kernels/avx512.h"

#define VPAIRS 1
typedef __m512i VP;
#define vpld(p) _mm512_load_si512((const void *)(p))
#define vpst(p, x) _mm512_store_si512((void *)(p), (x))
#define vpstu(p, x) _mm512_storeu_si512((void *)(p), (x))
#define vpset1(u) _mm512_set1_epi32((int)(u))
#define vdpbf16(acc, a, b) _mm512_dpbf16_ps((acc), (__m512bh)(a), (__m512bh)(b))
/* Both halves rounded by vbf16_bits, the high one shifted into place. */
#define vpair_bf16(lo, hi) _mm512_or_si512(vbf16_bits(lo), _mm512_slli_epi32(vbf16_bits(hi), 16))
static inline __m512i vpjoin(const uint16_t *a, const uint16_t *b)
{
    const __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)a));
    const __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)b));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

#define KNAME qkv_kernels_avx512bf16
#define KNAME_STRING "avx512bf16"

#include "cpu/kernels/body.h"
