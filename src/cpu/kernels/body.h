/* The kernels of kernels.h written once against a small vector vocabulary.
 * Each instruction-set file (generic.c, avx2.c, avx512.c) defines the
 * vocabulary and its register-tile sizes, then includes this file:
 *
 *   VF, VL            the vector type and its float count (VL divides 16)
 *   KNAME, KNAME_STRING   the qkv_cpu_kernels object to define, its name
 *   QK_RJ, QK_NV      register tile: QK_RJ keys (qk) or value columns (pv)
 *                     x QK_NV vectors of rows
 *   vld(p)            load VL floats from 64-byte-aligned p;  vst(p, x) store
 *   vldu(p)           load from any address;  vldu_n(p, n) the first n < VL
 *                     floats, zeros after;  vstu(p, x) store anywhere
 *   vset1(f) vzero()  broadcast, zeros
 *   vadd vsub vmul vdiv vfma(a, b, c) = a * b + c
 *   vmax(a, b)        larger; b when either is NaN (as MAXPS does)
 *   vround(x)         to the nearest integer, ties to even
 *   vpow2(p, n)       p * 2^n for integral n in [-126, 127]
 *   vsel_lt(x, y, a, b)  a where x < y, else b (false for NaN)
 *   vsel_eq(x, y, a, b)  a where x == y, else b
 *   vabs(x)
 *
 * Layout (kernels.h): scores and output are kept transposed, st[j][i] for
 * key j and row i, ot[c][i] for value column c, so that the rows of a tile
 * lie along the vector: both products are one register-tile shape and
 * every softmax step is a vertical operation. */

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

static void exp_inplace(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + VL <= n; i += VL) vstu(x + i, vexp(vldu(x + i)));
    if (i < n) {
        _Alignas(64) float buf[VL];
        vst(buf, vexp(vldu_n(x + i, (int)(n - i))));
        for (int k = 0; i + k < n; k++) x[i + k] = buf[k];
    }
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
    const VF vc = vset1(c), vinv = vset1(1.0f / c);
    int64_t i = 0;
    for (; i + VL <= n; i += VL) vstu(x + i, vsoftcap(vldu(x + i), vc, vinv));
    if (i < n) {
        _Alignas(64) float buf[VL];
        vst(buf, vsoftcap(vldu_n(x + i, (int)(n - i)), vc, vinv));
        for (int k = 0; i + k < n; k++) x[i + k] = buf[k];
    }
}

/* ------------------------------------------------------------ scores */

/* st[j0 + r][i0 + c*VL ..] for RJ keys and NV vectors of rows: the keys'
 * numbers are broadcast, the queries' columns loaded. */
#define DEFINE_QK_TILE(NAME, RJ, NV)                                                         \
    static inline void NAME(const float *qt, int64_t ldq, const float *k, int64_t ldk,      \
                            float *st, int64_t lds, int64_t e)                              \
    {                                                                                        \
        VF acc[RJ][NV];                                                                      \
        _Pragma("GCC unroll 8") for (int r = 0; r < RJ; r++)                                \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] = vzero();       \
        for (int64_t d = 0; d < e; d++) {                                                    \
            VF qv[NV];                                                                       \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) qv[c] =                    \
                vld(qt + d * ldq + c * VL);                                                  \
            _Pragma("GCC unroll 8") for (int r = 0; r < RJ; r++)                            \
            {                                                                                \
                VF kb = vset1(k[r * ldk + d]);                                               \
                _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] =            \
                    vfma(kb, qv[c], acc[r][c]);                                              \
            }                                                                                \
        }                                                                                    \
        _Pragma("GCC unroll 8") for (int r = 0; r < RJ; r++)                                \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++)                            \
                vst(st + r * lds + c * VL, acc[r][c]);                                       \
    }

/* Every tile shape the drivers below use: QK_RJ keys, then 4, 2, 1 for the
 * tail, times QK_NV or 1 vectors of rows. */
#define DEFINE_QK_TILES(NV, SUFFIX)                                                          \
    DEFINE_QK_TILE(qk_##SUFFIX, QK_RJ, NV)                                                   \
    DEFINE_QK_TILE(qk_##SUFFIX##_4, 4, NV)                                                   \
    DEFINE_QK_TILE(qk_##SUFFIX##_2, 2, NV)                                                   \
    DEFINE_QK_TILE(qk_##SUFFIX##_1, 1, NV)                                                   \
    static void qk_cols_##SUFFIX(const float *qt, int64_t ldq, const float *k, int64_t ldk,  \
                                 float *st, int64_t lds, int64_t n, int64_t e)               \
    {                                                                                         \
        int64_t j = 0;                                                                        \
        for (; j + QK_RJ <= n; j += QK_RJ) qk_##SUFFIX(qt, ldq, k + j * ldk, ldk, st + j * lds, lds, e); \
        if (QK_RJ > 4 && j + 4 <= n) {                                                        \
            qk_##SUFFIX##_4(qt, ldq, k + j * ldk, ldk, st + j * lds, lds, e);                 \
            j += 4;                                                                           \
        }                                                                                     \
        if (j + 2 <= n) {                                                                     \
            qk_##SUFFIX##_2(qt, ldq, k + j * ldk, ldk, st + j * lds, lds, e);                 \
            j += 2;                                                                           \
        }                                                                                     \
        if (j < n) qk_##SUFFIX##_1(qt, ldq, k + j * ldk, ldk, st + j * lds, lds, e);         \
    }

DEFINE_QK_TILES(QK_NV, wide)
DEFINE_QK_TILES(1, one)

static void qk(const float *qt, int64_t ldq, const float *k, int64_t ldk, float *st, int64_t lds,
               int64_t m, int64_t n, int64_t e)
{
    int64_t i0 = 0;
    for (; i0 + QK_NV * VL <= m; i0 += QK_NV * VL) qk_cols_wide(qt + i0, ldq, k, ldk, st + i0, lds, n, e);
    for (; i0 < m; i0 += VL) qk_cols_one(qt + i0, ldq, k, ldk, st + i0, lds, n, e);
}

/* ------------------------------------------------------------ softmax */

static void softmax(float *st, int64_t lds, int64_t m, int64_t n, float *mx, double *l,
                    float *alpha)
{
    const VF ninf = vset1(-INFINITY);
    for (int64_t i0 = 0; i0 < m; i0 += VL) {
        /* A NaN score is passed over by the max (vmax keeps the running
         * value), becomes a NaN weight below and makes l NaN: the driver
         * reads that as a NaN row. */
        VF bm = ninf;
        for (int64_t j = 0; j < n; j++) bm = vmax(vld(st + j * lds + i0), bm);
        VF mold = vld(mx + i0);
        VF mnew = vmax(bm, mold);
        /* Rows that have seen nothing allowed yet subtract 0 instead of
         * -inf: their weights are exp(-inf) = 0 and alpha is 0, applied to
         * an output and sum that are still 0. */
        VF msafe = vsel_eq(mnew, ninf, vzero(), mnew);
        vst(alpha + i0, vexp(vsub(mold, msafe)));
        VF sum = vzero();
        for (int64_t j = 0; j < n; j++) {
            VF p = vexp(vsub(vld(st + j * lds + i0), msafe));
            vst(st + j * lds + i0, p);
            sum = vadd(sum, p);
        }
        vst(mx + i0, mnew);
        _Alignas(64) float s[VL];
        vst(s, sum);
        for (int r = 0; r < VL; r++) l[i0 + r] = l[i0 + r] * alpha[i0 + r] + (double)s[r];
    }
}

/* ------------------------------------------------------------ output */

/* ot[c0 + r][i0 + c*VL ..] = ot * alpha + sum_j v[j][c0 + r] pt[j][i0 ..]
 * for RC value columns and NV vectors of rows: the same shape of work as
 * the scores, with the output kept transposed. */
#define DEFINE_PV_TILE(NAME, RC, NV)                                                          \
    static inline void NAME(const float *pt, int64_t ldp, const float *v, int64_t ldv,       \
                            float *ot, int64_t ldo, const float *alpha, int64_t n)           \
    {                                                                                         \
        VF acc[RC][NV], a[NV];                                                                \
        _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) a[c] = vld(alpha + c * VL);     \
        _Pragma("GCC unroll 8") for (int r = 0; r < RC; r++)                                 \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] =                 \
                vmul(vld(ot + r * ldo + c * VL), a[c]);                                       \
        for (int64_t j = 0; j < n; j++) {                                                     \
            VF pv[NV];                                                                        \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) pv[c] =                     \
                vld(pt + j * ldp + c * VL);                                                   \
            _Pragma("GCC unroll 8") for (int r = 0; r < RC; r++)                             \
            {                                                                                 \
                VF vb = vset1(v[j * ldv + r]);                                                \
                _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] =             \
                    vfma(vb, pv[c], acc[r][c]);                                               \
            }                                                                                 \
        }                                                                                     \
        _Pragma("GCC unroll 8") for (int r = 0; r < RC; r++)                                 \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++)                             \
                vst(ot + r * ldo + c * VL, acc[r][c]);                                        \
    }

/* The same tile shapes as the scores, over value columns. */
#define DEFINE_PV_TILES(NV, SUFFIX)                                                          \
    DEFINE_PV_TILE(pv_##SUFFIX, QK_RJ, NV)                                                   \
    DEFINE_PV_TILE(pv_##SUFFIX##_4, 4, NV)                                                   \
    DEFINE_PV_TILE(pv_##SUFFIX##_2, 2, NV)                                                   \
    DEFINE_PV_TILE(pv_##SUFFIX##_1, 1, NV)                                                   \
    static void pv_cols_##SUFFIX(const float *pt, int64_t ldp, const float *v, int64_t ldv,  \
                                 float *ot, int64_t ldo, const float *alpha, int64_t n,      \
                                 int64_t ev)                                                 \
    {                                                                                         \
        int64_t c = 0;                                                                        \
        for (; c + QK_RJ <= ev; c += QK_RJ) pv_##SUFFIX(pt, ldp, v + c, ldv, ot + c * ldo, ldo, alpha, n); \
        if (QK_RJ > 4 && c + 4 <= ev) {                                                       \
            pv_##SUFFIX##_4(pt, ldp, v + c, ldv, ot + c * ldo, ldo, alpha, n);                \
            c += 4;                                                                           \
        }                                                                                     \
        if (c + 2 <= ev) {                                                                    \
            pv_##SUFFIX##_2(pt, ldp, v + c, ldv, ot + c * ldo, ldo, alpha, n);                \
            c += 2;                                                                           \
        }                                                                                     \
        if (c < ev) pv_##SUFFIX##_1(pt, ldp, v + c, ldv, ot + c * ldo, ldo, alpha, n);       \
    }

DEFINE_PV_TILES(QK_NV, wide)
DEFINE_PV_TILES(1, one)

static void pv(const float *pt, int64_t ldp, const float *v, int64_t ldv, float *ot, int64_t ldo,
               const float *alpha, int64_t m, int64_t n, int64_t ev)
{
    int64_t i0 = 0;
    for (; i0 + QK_NV * VL <= m; i0 += QK_NV * VL)
        pv_cols_wide(pt + i0, ldp, v, ldv, ot + i0, ldo, alpha + i0, n, ev);
    for (; i0 < m; i0 += VL) pv_cols_one(pt + i0, ldp, v, ldv, ot + i0, ldo, alpha + i0, n, ev);
}

const qkv_cpu_kernels KNAME = {KNAME_STRING, qk, softmax, pv, exp_inplace, softcap};
