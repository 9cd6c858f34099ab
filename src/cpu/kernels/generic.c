/* The kernels in plain C11 for any compiler and CPU: a "vector" is a
 * struct of 8 floats and every operation a loop the compiler may
 * vectorise. Always built; the reference for what the SIMD sets do. */
#include "half.h"

#include <float.h>
#include <math.h>

typedef struct {
    float f[8];
} VF;
#define VL 8
#define QK_RJ 4
#define QK_NV 2
/* SGEMM: 4 rows x 2 vectors. */
#define GEMM_MR 4
#define GEMM_NV 2
#define KNAME qkv_kernels_generic
#define KNAME_STRING "generic"

#define VF_MAP1(name, expr)                                                    \
    static inline VF name(VF a)                                                \
    {                                                                          \
        VF r;                                                                  \
        for (int i = 0; i < VL; i++) r.f[i] = (expr);                          \
        return r;                                                              \
    }
#define VF_MAP2(name, expr)                                                    \
    static inline VF name(VF a, VF b)                                          \
    {                                                                          \
        VF r;                                                                  \
        for (int i = 0; i < VL; i++) r.f[i] = (expr);                          \
        return r;                                                              \
    }

static inline VF vld(const float *p)
{
    VF r;
    for (int i = 0; i < VL; i++) r.f[i] = p[i];
    return r;
}
static inline void vst(float *p, VF x)
{
    for (int i = 0; i < VL; i++) p[i] = x.f[i];
}
#define vldu vld
#define vstu vst
static inline VF vldu_n(const float *p, int n)
{
    VF r;
    for (int i = 0; i < VL; i++) r.f[i] = i < n ? p[i] : 0.0f;
    return r;
}
static inline VF vset1(float x)
{
    VF r;
    for (int i = 0; i < VL; i++) r.f[i] = x;
    return r;
}
static inline VF vzero(void) { return vset1(0.0f); }
VF_MAP2(vadd, a.f[i] + b.f[i])
VF_MAP2(vsub, a.f[i] - b.f[i])
VF_MAP2(vmul, a.f[i] * b.f[i])
VF_MAP2(vdiv, a.f[i] / b.f[i])
/* a > b ? a : b gives b for NaN, as the SIMD max does. */
VF_MAP2(vmax, a.f[i] > b.f[i] ? a.f[i] : b.f[i])
VF_MAP1(vround, nearbyintf(a.f[i]))
VF_MAP1(vabs, fabsf(a.f[i]))
/* A NaN exponent (from a NaN argument of exp) stays NaN: converting it to
 * int would be undefined. */
VF_MAP2(vpow2, isnan(b.f[i]) ? b.f[i] : ldexpf(a.f[i], (int)b.f[i]))
/* Not fused: fmaf is a slow library call on CPUs without FMA. */
static inline VF vfma(VF a, VF b, VF c)
{
    VF r;
    for (int i = 0; i < VL; i++) r.f[i] = a.f[i] * b.f[i] + c.f[i];
    return r;
}
static inline VF vsel_lt(VF x, VF y, VF a, VF b)
{
    VF r;
    for (int i = 0; i < VL; i++) r.f[i] = x.f[i] < y.f[i] ? a.f[i] : b.f[i];
    return r;
}
static inline VF vsel_eq(VF x, VF y, VF a, VF b)
{
    VF r;
    for (int i = 0; i < VL; i++) r.f[i] = x.f[i] == y.f[i] ? a.f[i] : b.f[i];
    return r;
}

/* Lane j of the result is the sum of a[j]'s lanes. */
static inline VF vsum_each(const VF *a)
{
    VF r;
    for (int j = 0; j < VL; j++) {
        float s = 0.0f;
        for (int i = 0; i < VL; i++) s += a[j].f[i];
        r.f[j] = s;
    }
    return r;
}

/* One pattern at a time, by half.h's exact conversions. */
static inline VF vwiden_f16(const uint16_t *p)
{
    VF r;
    for (int i = 0; i < VL; i++) r.f[i] = qkv_f16_to_f32(p[i]);
    return r;
}
static inline VF vwiden_bf16(const uint16_t *p)
{
    VF r;
    for (int i = 0; i < VL; i++) r.f[i] = qkv_bf16_to_f32(p[i]);
    return r;
}

static inline void vnarrow_f16(uint16_t *p, VF x)
{
    for (int i = 0; i < VL; i++) p[i] = qkv_f32_to_f16(x.f[i]);
}
static inline void vnarrow_bf16(uint16_t *p, VF x)
{
    for (int i = 0; i < VL; i++) p[i] = qkv_f32_to_bf16(x.f[i]);
}

/* q8_0's signed bytes and q4_0's nibbles less 8, one at a time. */
static inline VF vq8(const unsigned char *p)
{
    VF r;
    for (int i = 0; i < VL; i++) r.f[i] = (float)(int8_t)p[i];
    return r;
}
static inline VF vq4(const unsigned char *p, int high)
{
    VF r;
    for (int i = 0; i < VL; i++) r.f[i] = (float)((high ? p[i] >> 4 : p[i] & 15) - 8);
    return r;
}

/* The bf16 pairs, for the second table (kernels.h says why): VDPBF16PS
 * lane by lane, as Intel's manual gives it. The odd (high) products
 * first, each step one fmaf rounded to nearest; a denormal input or sum
 * reads and is written as a zero of its sign. */
#define VPAIRS 1
#define KNAME_PAIRS qkv_kernels_generic_pairs
typedef struct {
    uint32_t u[VL];
} VP;
static inline VP vpld(const uint32_t *p)
{
    VP r;
    for (int i = 0; i < VL; i++) r.u[i] = p[i];
    return r;
}
static inline void vpst(uint32_t *p, VP x)
{
    for (int i = 0; i < VL; i++) p[i] = x.u[i];
}
#define vpstu vpst
static inline VP vpset1(uint32_t x)
{
    VP r;
    for (int i = 0; i < VL; i++) r.u[i] = x;
    return r;
}
static inline float dp_flush(float x) { return fabsf(x) < FLT_MIN ? copysignf(0.0f, x) : x; }
static inline float dp_in(uint32_t h) { return dp_flush(qkv_bf16_to_f32((uint16_t)h)); }
static inline VF vdpbf16(VF acc, VP a, VP b)
{
    VF r;
    for (int i = 0; i < VL; i++) {
        float t = dp_flush(acc.f[i]);
        t = dp_flush(fmaf(dp_in(a.u[i] >> 16), dp_in(b.u[i] >> 16), t));
        r.f[i] = dp_flush(fmaf(dp_in(a.u[i] & 0xffffu), dp_in(b.u[i] & 0xffffu), t));
    }
    return r;
}
static inline VP vpair_bf16(VF lo, VF hi)
{
    VP r;
    for (int i = 0; i < VL; i++)
        r.u[i] = (uint32_t)qkv_f32_to_bf16(lo.f[i]) | (uint32_t)qkv_f32_to_bf16(hi.f[i]) << 16;
    return r;
}
static inline VP vpjoin(const uint16_t *a, const uint16_t *b)
{
    VP r;
    for (int i = 0; i < VL; i++) r.u[i] = (uint32_t)a[i] | (uint32_t)b[i] << 16;
    return r;
}

#include "cpu/kernels/body.h"
