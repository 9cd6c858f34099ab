/* The kernels for AVX2 with FMA: 8 floats a vector, 16 registers, so the
 * qk tile is 6 rows x 16 keys and the pv tile 6 rows x 16 values (12
 * accumulators each). Compiled with -mavx2 -mfma; chosen only when cpuid
 * says the CPU has both (cpu/dispatch.c). */
#include <immintrin.h>

typedef __m256 VF;
#define VL 8
#define QK_NV 2
#define PV_NV 2
#define KNAME qkv_kernels_avx2
#define KNAME_STRING "avx2"

#define vld(p) _mm256_load_ps(p)
#define vst(p, x) _mm256_store_ps((p), (x))
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
#define vabs(x) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), (x))

/* p * 2^n: n's bits moved into an exponent field (n >= -126 by contract). */
static inline __m256 vpow2(__m256 p, __m256 n)
{
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline float vhmax(__m256 x)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline float vhsum(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#include "body.h"
