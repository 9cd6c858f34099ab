/* The kernels of kernels.h written once against a small vector vocabulary.
 * Each instruction-set file (generic.c, avx2.c, avx512.c) defines the
 * vocabulary and the register-tile widths, then includes this file:
 *
 *   VF, VL            the vector type and its float count
 *   KNAME             the name of the qkv_cpu_kernels object to define
 *   QK_NV, PV_NV      vectors per register tile along keys (qk) and values (pv)
 *   vld(p)            load VL floats from 64-byte-aligned p;  vst(p, x) store
 *   vset1(f) vzero()  broadcast, zeros
 *   vadd vsub vmul vdiv vfma(a, b, c) = a * b + c
 *   vmax(a, b)        larger; b when either is NaN (as MAXPS does)
 *   vround(x)         to the nearest integer, ties to even
 *   vpow2(p, n)       p * 2^n for integral n in [-126, 127]
 *   vsel_lt(x, y, a, b)  a where x < y, else b (false for NaN)
 *   vabs(x)
 *   vhmax(x) vhsum(x) horizontal max and sum to a float
 *
 * Register tiles: qk keeps QKV_TILE_ROWS x QK_NV accumulators, pv keeps
 * QKV_TILE_ROWS x PV_NV; both must fit the register file with room for the
 * loaded operands. */

#include "kernels.h"

#include <math.h>

/* exp on [-87, 0] by 2^n * e^r with |r| <= ln2/2: n = round(x / ln 2), r
 * from a two-part ln 2 (its high part has few bits, so n * LN2_HI is exact),
 * e^r by its Taylor series to r^6 (truncation below 1.3e-7 relative).
 * Below -87 the result is flushed to 0, so -inf gives exactly 0; NaN passes
 * through every step. */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693145751953125f
#define EXP_LN2_LO 1.42860682030941723e-6f
#define EXP_FLOOR -87.0f

static inline VF vexp(VF x)
{
    VF xc = vmax(vset1(EXP_FLOOR), x); /* NaN stays: vmax returns x */
    VF n = vround(vmul(xc, vset1(EXP_LOG2E)));
    VF r = vfma(n, vset1(-EXP_LN2_HI), xc);
    r = vfma(n, vset1(-EXP_LN2_LO), r);
    VF p = vset1(1.0f / 720.0f);
    p = vfma(p, r, vset1(1.0f / 120.0f));
    p = vfma(p, r, vset1(1.0f / 24.0f));
    p = vfma(p, r, vset1(1.0f / 6.0f));
    p = vfma(p, r, vset1(0.5f));
    p = vfma(p, r, vset1(1.0f));
    p = vfma(p, r, vset1(1.0f));
    return vsel_lt(x, vset1(EXP_FLOOR), vzero(), vpow2(p, n));
}

/* Scalar edges (tails) go through the same vector code, one lane used. */
static inline float sexp(float x)
{
    _Alignas(64) float buf[VL];
    for (int i = 0; i < VL; i++) buf[i] = x;
    vst(buf, vexp(vld(buf)));
    return buf[0];
}

static void exp_inplace(float *x, int64_t n)
{
    _Alignas(64) float buf[VL];
    int64_t i = 0;
    for (; i + VL <= n; i += VL) {
        for (int k = 0; k < VL; k++) buf[k] = x[i + k];
        vst(buf, vexp(vld(buf)));
        for (int k = 0; k < VL; k++) x[i + k] = buf[k];
    }
    for (; i < n; i++) x[i] = sexp(x[i]);
}

/* c * tanh(y / c) as c * sign(y) * (1 - e) / (1 + e), e = exp(-2|y/c|):
 * exp only ever sees arguments <= 0, so nothing overflows. */
static inline VF vsoftcap(VF y, VF c, VF inv_c)
{
    VF t = vmul(y, inv_c);
    VF e = vexp(vmul(vset1(-2.0f), vabs(t)));
    VF th = vdiv(vsub(vset1(1.0f), e), vadd(vset1(1.0f), e));
    th = vsel_lt(t, vzero(), vsub(vzero(), th), th);
    return vmul(c, th);
}

static void softcap(float *x, int64_t n, float c)
{
    _Alignas(64) float buf[VL];
    const VF vc = vset1(c), vinv = vset1(1.0f / c);
    for (int64_t i = 0; i < n; i += VL) {
        int64_t w = n - i < VL ? n - i : VL;
        for (int k = 0; k < VL; k++) buf[k] = k < w ? x[i + k] : 0.0f;
        vst(buf, vsoftcap(vld(buf), vc, vinv));
        for (int k = 0; k < w; k++) x[i + k] = buf[k];
    }
}

/* S = Q Kt, one QKV_TILE_ROWS x (QK_NV * VL) register tile at a time. */
static void qk(const float *q, int64_t ldq, const float *kt, int64_t ldk, float *s, int64_t lds,
               int64_t m, int64_t n, int64_t e)
{
    for (int64_t i0 = 0; i0 < m; i0 += QKV_TILE_ROWS) {
        for (int64_t j0 = 0; j0 < n; j0 += QK_NV * VL) {
            VF acc[QKV_TILE_ROWS][QK_NV];
#pragma GCC unroll 8
            for (int r = 0; r < QKV_TILE_ROWS; r++)
#pragma GCC unroll 8
                for (int c = 0; c < QK_NV; c++) acc[r][c] = vzero();
            const float *kp = kt + j0;
            const float *qp = q + i0 * ldq;
            for (int64_t d = 0; d < e; d++, kp += ldk) {
                VF kv[QK_NV];
#pragma GCC unroll 8
                for (int c = 0; c < QK_NV; c++) kv[c] = vld(kp + c * VL);
#pragma GCC unroll 8
                for (int r = 0; r < QKV_TILE_ROWS; r++) {
                    VF qb = vset1(qp[r * ldq + d]);
#pragma GCC unroll 8
                    for (int c = 0; c < QK_NV; c++) acc[r][c] = vfma(qb, kv[c], acc[r][c]);
                }
            }
#pragma GCC unroll 8
            for (int r = 0; r < QKV_TILE_ROWS; r++)
#pragma GCC unroll 8
                for (int c = 0; c < QK_NV; c++) vst(s + (i0 + r) * lds + j0 + c * VL, acc[r][c]);
        }
    }
}

static void softmax(float *s, int64_t lds, int64_t m, int64_t n, float *mx, double *l,
                    float *alpha)
{
    for (int64_t i = 0; i < m; i++) {
        float *row = s + i * lds;
        VF vm = vset1(-INFINITY);
        /* A NaN score is passed over here (vmax keeps vm), becomes a NaN
         * weight below and makes l NaN: the driver reads that as a NaN row. */
        for (int64_t j = 0; j < n; j += VL) vm = vmax(vld(row + j), vm);
        float bm = vhmax(vm);
        float mnew = bm > mx[i] ? bm : mx[i];
        if (mnew == -INFINITY) { /* nothing allowed yet: weights 0, state kept */
            for (int64_t j = 0; j < n; j++) {
                if (isnan(row[j])) l[i] = NAN; /* a row of NaN scores */
                row[j] = 0.0f;
            }
            alpha[i] = 1.0f;
            continue;
        }
        alpha[i] = sexp(mx[i] - mnew);
        const VF vmn = vset1(mnew);
        VF sum = vzero();
        for (int64_t j = 0; j < n; j += VL) {
            VF p = vexp(vsub(vld(row + j), vmn));
            vst(row + j, p);
            sum = vadd(sum, p);
        }
        l[i] = l[i] * alpha[i] + (double)vhsum(sum);
        mx[i] = mnew;
    }
}

/* One QKV_TILE_ROWS x (NV * VL) tile of O: load, rescale by alpha, add
 * P V over all n keys, store. */
#define DEFINE_PV_TILE(NAME, NV)                                                            \
    static inline void NAME(const float *p, int64_t ldp, const float *v, int64_t ldv,      \
                            float *o, int64_t ldo, const float *alpha, int64_t n)          \
    {                                                                                       \
        VF acc[QKV_TILE_ROWS][NV];                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < QKV_TILE_ROWS; r++)                    \
        {                                                                                   \
            VF a = vset1(alpha[r]);                                                         \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] =               \
                vmul(vld(o + r * ldo + c * VL), a);                                         \
        }                                                                                   \
        for (int64_t j = 0; j < n; j++) {                                                   \
            VF vv[NV];                                                                      \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) vv[c] =                   \
                vld(v + j * ldv + c * VL);                                                  \
            _Pragma("GCC unroll 8") for (int r = 0; r < QKV_TILE_ROWS; r++)                \
            {                                                                               \
                VF pb = vset1(p[r * ldp + j]);                                              \
                _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] =           \
                    vfma(pb, vv[c], acc[r][c]);                                             \
            }                                                                               \
        }                                                                                   \
        _Pragma("GCC unroll 8") for (int r = 0; r < QKV_TILE_ROWS; r++)                    \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++)                           \
                vst(o + r * ldo + c * VL, acc[r][c]);                                       \
    }

DEFINE_PV_TILE(pv_tile_wide, PV_NV)
DEFINE_PV_TILE(pv_tile_one, 1)

static void pv(const float *p, int64_t ldp, const float *v, int64_t ldv, float *o, int64_t ldo,
               const float *alpha, int64_t m, int64_t n, int64_t ev)
{
    for (int64_t i0 = 0; i0 < m; i0 += QKV_TILE_ROWS) {
        const float *pr = p + i0 * ldp;
        float *orow = o + i0 * ldo;
        int64_t c0 = 0;
        for (; c0 + PV_NV * VL <= ev; c0 += PV_NV * VL)
            pv_tile_wide(pr, ldp, v + c0, ldv, orow + c0, ldo, alpha + i0, n);
        for (; c0 < ev; c0 += VL) pv_tile_one(pr, ldp, v + c0, ldv, orow + c0, ldo, alpha + i0, n);
    }
}

const qkv_cpu_kernels KNAME = {KNAME_STRING, qk, softmax, pv, exp_inplace, softcap};
