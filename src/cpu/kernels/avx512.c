/* The kernels for AVX-512F: 16 floats a vector, 32 registers, so a
 * register tile is 6 keys (or value columns) x 64 rows, 24 accumulators. Compiled with -mavx512f; chosen only when cpuid
 * says the CPU has it (cpu/dispatch.c). */
#include <immintrin.h>

typedef __m512 VF;
#define VL 16
#define QK_RJ 6
#define QK_NV 4
#define KNAME qkv_kernels_avx512
#define KNAME_STRING "avx512"

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

#include "body.h"
