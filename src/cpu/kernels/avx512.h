/* The AVX-512F vocabulary of kernels/body.h: 16 floats a vector, 32
 * registers, so a register tile is 6 keys (or value columns) x 64 rows, 24
 * accumulators. Shared by the AVX-512 set (avx512.c) and the AVX-512 set
 * with bf16 dot products (avx512bf16.c), which define KNAME and include
 * body.h after it. */
#ifndef QKV_CPU_KERNELS_AVX512_H
#define QKV_CPU_KERNELS_AVX512_H

#include <immintrin.h>
#include <stdint.h>

typedef __m512 VF;
#define VL 16
#define QK_RJ 6
#define QK_NV 4
/* Row-major output (decode): 4 rows x 8 vectors, a whole 128-float row of
 * V per pass; 32 accumulators, the compiler keeps V in memory operands. */
#define AXPY_NV 8
/* SGEMM: 14 rows x 2 vectors, 28 accumulators. */
#define GEMM_MR 14
#define GEMM_NV 2

#define vld(p) _mm512_load_ps(p)
#define vst(p, x) _mm512_store_ps((p), (x))
#define vldu(p) _mm512_loadu_ps(p)
#define vldu_n(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1u), (p))
#define vstu(p, x) _mm512_storeu_ps((p), (x))
#define vset1(f) _mm512_set1_ps(f)
#define vzero() _mm512_setzero_ps()
#define vadd(a, b) _mm512_add_ps((a), (b))
#define vsub(a, b) _mm512_sub_ps((a), (b))
#define vmul(a, b) _mm512_mul_ps((a), (b))
#define vdiv(a, b) _mm512_div_ps((a), (b))
#define vfma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define vmax(a, b) _mm512_max_ps((a), (b))
#define vround(x) _mm512_roundscale_ps((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vpow2(p, n) _mm512_scalef_ps((p), (n))
#define vsel_lt(x, y, a, b) _mm512_mask_blend_ps(_mm512_cmp_ps_mask((x), (y), _CMP_LT_OQ), (b), (a))
#define vsel_eq(x, y, a, b) _mm512_mask_blend_ps(_mm512_cmp_ps_mask((x), (y), _CMP_EQ_OQ), (b), (a))
#define vabs(x) _mm512_abs_ps(x)

/* Lane j of the result is the sum of a[j]'s lanes: a transpose and add
 * in four rounds of shuffles. The rounds leave the sums in the lane order
 * VSUM_ORDER, an involution, so reading the inputs in that order puts sum
 * j in lane j. */
static inline VF vsum_each(const VF *a)
{
    static const int ord[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};
    VF b[8], c[4], d[2];
    for (int j = 0; j < 8; j++) {
        VF x = a[ord[j]], y = a[ord[j + 8]];
        b[j] = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    for (int j = 0; j < 4; j++)
        c[j] = _mm512_add_ps(_mm512_shuffle_f32x4(b[j], b[j + 4], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(b[j], b[j + 4], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int j = 0; j < 2; j++)
        d[j] = _mm512_add_ps(_mm512_shuffle_ps(c[j], c[j + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(c[j], c[j + 2], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(d[0], d[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* 16 f16 patterns by VCVTPH2PS (AVX-512F); 16 bf16 patterns as the high
 * halves of floats. */
#define vwiden_f16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define vwiden_bf16(p)                                                                 \
    _mm512_castsi512_ps(_mm512_slli_epi32(                                            \
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(p))), 16))

/* And back, as in avx2.c: VCVTPS2PH; bf16 by half.h's rounding
 * (vbf16_bits), then VPMOVDW. */
#define vnarrow_f16(p, x)                                                              \
    _mm256_storeu_si256((__m256i *)(void *)(p),                                       \
                        _mm512_cvtps_ph((x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
/* x rounded to bf16 as half.h rounds (to nearest even, NaN lanes quiet
 * NaNs), each pattern in the low half of its 32-bit lane. */
static inline __m512i vbf16_bits(__m512 x)
{
    const __m512i b = _mm512_castps_si512(x), hi = _mm512_srli_epi32(b, 16);
    const __m512i bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                          _mm512_and_si512(hi, _mm512_set1_epi32(1)));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, bias), 16);
    const __m512i nan = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));
    return _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), r, nan);
}
static inline void vnarrow_bf16(uint16_t *p, __m512 x)
{
    _mm256_storeu_si256((__m256i *)(void *)p, _mm512_cvtepi32_epi16(vbf16_bits(x)));
}

/* 16 signed bytes (q8_0's q), and 16 nibbles (q4_0's n, the low or high
 * ones of 16 bytes) less 8, as floats. */
#define vq8(p) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))))
static inline __m512 vq4(const unsigned char *p, int high)
{
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
    const __m512i n = high ? _mm512_srli_epi32(b, 4) : _mm512_and_si512(b, _mm512_set1_epi32(15));
    return _mm512_cvtepi32_ps(_mm512_sub_epi32(n, _mm512_set1_epi32(8)));
}

#endif
