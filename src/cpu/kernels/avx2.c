/* The kernels for AVX2 with FMA: 8 floats a vector, 16 registers, so a
 * register tile is 4 keys (or value columns) x 16 rows, 8 accumulators. Compiled with -mavx2 -mfma; chosen only when cpuid
 * says the CPU has both (cpu/dispatch.c). */
#include <immintrin.h>
#include <stdint.h>

typedef __m256 VF;
#define VL 8
#define QK_RJ 4
#define QK_NV 2
/* SGEMM: 6 rows x 2 vectors, 12 accumulators. */
#define GEMM_MR 6
#define GEMM_NV 2
#define KNAME qkv_kernels_avx2
#define KNAME_STRING "avx2"

#define vld(p) _mm256_load_ps(p)
#define vst(p, x) _mm256_store_ps((p), (x))
#define vldu(p) _mm256_loadu_ps(p)
#define vstu(p, x) _mm256_storeu_ps((p), (x))
#define vset1(f) _mm256_set1_ps(f)
#define vzero() _mm256_setzero_ps()
#define vadd(a, b) _mm256_add_ps((a), (b))
#define vsub(a, b) _mm256_sub_ps((a), (b))
#define vmul(a, b) _mm256_mul_ps((a), (b))
#define vdiv(a, b) _mm256_div_ps((a), (b))
#define vfma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define vmax(a, b) _mm256_max_ps((a), (b))
#define vround(x) _mm256_round_ps((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vsel_lt(x, y, a, b) _mm256_blendv_ps((b), (a), _mm256_cmp_ps((x), (y), _CMP_LT_OQ))
#define vsel_eq(x, y, a, b) _mm256_blendv_ps((b), (a), _mm256_cmp_ps((x), (y), _CMP_EQ_OQ))
#define vabs(x) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), (x))

/* The first n < 8 floats at p, zeros after: lanes below n get a mask. */
static inline __m256 vldu_n(const float *p, int n)
{
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
}

/* p * 2^n: n's bits moved into an exponent field (n >= -126 by contract). */
static inline __m256 vpow2(__m256 p, __m256 n)
{
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* Lane j of the result is the sum of a[j]'s lanes: a transpose and add
 * in three rounds; reading the inputs in the order the rounds leave the
 * sums in (an involution) puts sum j in lane j. */
static inline __m256 vsum_each(const __m256 *a)
{
    static const int ord[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    __m256 b[4], c[2];
    for (int j = 0; j < 4; j++) {
        __m256 x = a[ord[j]], y = a[ord[j + 4]];
        b[j] = _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
    }
    for (int j = 0; j < 2; j++)
        c[j] = _mm256_add_ps(_mm256_shuffle_ps(b[j], b[j + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(b[j], b[j + 2], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_shuffle_ps(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm256_shuffle_ps(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* 8 f16 patterns by F16C's VCVTPH2PS; 8 bf16 patterns as the high halves
 * of floats. */
#define vwiden_f16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define vwiden_bf16(p)                                                                 \
    _mm256_castsi256_ps(_mm256_slli_epi32(                                            \
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))), 16))

/* And back: F16C's VCVTPS2PH rounding to nearest even; bf16 by adding
 * 0x7fff plus the lowest kept bit (half.h's rounding), NaN lanes made
 * quiet NaNs instead, then the 32-bit lanes packed to 16. */
#define vnarrow_f16(p, x)                                                              \
    _mm_storeu_si128((__m128i *)(void *)(p),                                          \
                     _mm256_cvtps_ph((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
static inline void vnarrow_bf16(uint16_t *p, __m256 x)
{
    const __m256i b = _mm256_castps_si256(x), hi = _mm256_srli_epi32(b, 16);
    const __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff),
                                          _mm256_and_si256(hi, _mm256_set1_epi32(1)));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, bias), 16);
    const __m256i nan = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
    r = _mm256_blendv_epi8(r, nan, _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128((__m128i *)(void *)p, _mm256_castsi256_si128(packed));
}

/* 8 signed bytes (q8_0's q), and 8 nibbles (q4_0's n, the low or high
 * ones of 8 bytes) less 8, as floats. */
#define vq8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p))))
static inline __m256 vq4(const unsigned char *p, int high)
{
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
    const __m256i n = high ? _mm256_srli_epi32(b, 4) : _mm256_and_si256(b, _mm256_set1_epi32(15));
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(n, _mm256_set1_epi32(8)));
}

#include "cpu/kernels/body.h"
