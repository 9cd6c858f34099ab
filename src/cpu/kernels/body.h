/* The kernels of kernels.h written once against a small vector vocabulary.
 * Each instruction-set file (generic.c, avx2.c, avx512.c) defines the
 * vocabulary and its register-tile sizes, then includes this file:
 *
 *   VF, VL            the vector type and its float count (VL divides 16)
 *   KNAME, KNAME_STRING   the qkv_cpu_kernels object to define, its name
 *   QK_RJ, QK_NV      register tile: QK_RJ keys (qk) or value columns (pv)
 *                     x QK_NV vectors of rows
 *   GEMM_MR, GEMM_NV  the SGEMM register tile: GEMM_MR rows x GEMM_NV vectors
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
 *   vsum_each(a)      from VL vectors a[0..VL-1], the vector whose lane j is
 *                     the sum of a[j]'s lanes
 *   vwiden_f16(p), vwiden_bf16(p)   VL 16-bit patterns at p (any
 *                     alignment) widened to floats
 *   vnarrow_f16(p, x), vnarrow_bf16(p, x)   x rounded to VL 16-bit
 *                     patterns stored at p, as half.h rounds
 *   vq8(p)            VL signed bytes at p (any alignment) as floats
 *   vq4(p, high)      the low (high = 0) or high nibbles of VL bytes at p,
 *                     less 8, as floats
 *
 * Layout (kernels.h): scores and output are kept transposed, st[j][i] for
 * key j and row i, ot[c][i] for value column c, so that the rows of a tile
 * lie along the vector: both products are one register-tile shape and
 * every softmax step is a vertical operation. */

#include "cpu/kernels/kernels.h"
#include "half.h"
#include "quant.h"

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

/* grad_row on the VL lanes at s, g and c (idx: the lanes' x, as floats). */
static inline void grad_lanes(float *s, float *g, const float *c, VF lse, VF d, VF scale, VF lo,
                              VF hi, VF idx)
{
    const VF ninf = vset1(-INFINITY);
    VF t = vsel_lt(idx, lo, ninf, vsub(vldu(s), lse));
    t = vexp(vsel_lt(hi, idx, ninf, t));
    VF r = vmul(t, vsub(vldu(g), d));
    if (c) r = vmul(r, vldu(c));
    r = vmul(r, scale);
    vstu(s, t);
    vstu(g, vsel_eq(t, vzero(), vzero(), r));
}

static void grad_row(float *s, float *g, const float *c, float lse, float d, float scale,
                     int64_t lo, int64_t hi, int64_t n)
{
    _Alignas(64) float iota[VL];
    for (int i = 0; i < VL; i++) iota[i] = (float)i;
    const VF vl = vset1(lse), vd = vset1(d), vs = vset1(scale);
    /* lo and hi clamped to [-1, n], exact as floats for any n a block has */
    const VF vlo = vset1((float)(lo < 0 ? -1 : lo > n ? n : lo));
    const VF vhi = vset1((float)(hi < -1 ? -1 : hi > n ? n : hi));
    int64_t x = 0;
    for (; x + VL <= n; x += VL)
        grad_lanes(s + x, g + x, c ? c + x : NULL, vl, vd, vs, vlo, vhi,
                   vadd(vld(iota), vset1((float)x)));
    if (x < n) { /* the last lanes staged, so they go through the same steps */
        _Alignas(64) float bs[VL] = {0}, bg[VL] = {0}, bc[VL] = {0};
        for (int64_t i = 0; x + i < n; i++) {
            bs[i] = s[x + i];
            bg[i] = g[x + i];
            bc[i] = c ? c[x + i] : 0.0f;
        }
        grad_lanes(bs, bg, c ? bc : NULL, vl, vd, vs, vlo, vhi, vadd(vld(iota), vset1((float)x)));
        for (int64_t i = 0; x + i < n; i++) {
            s[x + i] = bs[i];
            g[x + i] = bg[i];
        }
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
                            float *st, int64_t lds, int64_t e, float scale)                 \
    {                                                                                        \
        (void)scale; /* the driver scaled the queries */                                     \
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

/* Every tile shape the drivers below use, from TILE (DEFINE_QK_TILE or
 * the pairs' DEFINE_QKP_TILE): QK_RJ keys, then 4, 2, 1 for the tail,
 * times QK_NV vectors of rows (SUFFIX wide) or 1 (one); PRE##_all walks m
 * rows and n keys with them. */
#define DEFINE_QK_TILES_NV(TILE, PRE, NV, SUFFIX, QT, KT)                                    \
    TILE(PRE##_##SUFFIX, QK_RJ, NV)                                                          \
    TILE(PRE##_##SUFFIX##_4, 4, NV)                                                          \
    TILE(PRE##_##SUFFIX##_2, 2, NV)                                                          \
    TILE(PRE##_##SUFFIX##_1, 1, NV)                                                          \
    static void PRE##_cols_##SUFFIX(const QT *qt, int64_t ldq, const KT *k, int64_t ldk,     \
                                    float *st, int64_t lds, int64_t n, int64_t e, float scale) \
    {                                                                                         \
        int64_t j = 0;                                                                        \
        for (; j + QK_RJ <= n; j += QK_RJ)                                                    \
            PRE##_##SUFFIX(qt, ldq, k + j * ldk, ldk, st + j * lds, lds, e, scale);           \
        if (QK_RJ > 4 && j + 4 <= n) {                                                        \
            PRE##_##SUFFIX##_4(qt, ldq, k + j * ldk, ldk, st + j * lds, lds, e, scale);       \
            j += 4;                                                                           \
        }                                                                                     \
        if (j + 2 <= n) {                                                                     \
            PRE##_##SUFFIX##_2(qt, ldq, k + j * ldk, ldk, st + j * lds, lds, e, scale);       \
            j += 2;                                                                           \
        }                                                                                     \
        if (j < n) PRE##_##SUFFIX##_1(qt, ldq, k + j * ldk, ldk, st + j * lds, lds, e, scale); \
    }
#define DEFINE_QK_TILES(TILE, PRE, QT, KT)                                                   \
    DEFINE_QK_TILES_NV(TILE, PRE, QK_NV, wide, QT, KT)                                       \
    DEFINE_QK_TILES_NV(TILE, PRE, 1, one, QT, KT)                                            \
    static void PRE##_all(const QT *qt, int64_t ldq, const KT *k, int64_t ldk, float *st,    \
                          int64_t lds, int64_t m, int64_t n, int64_t e, float scale)          \
    {                                                                                         \
        int64_t i0 = 0;                                                                       \
        for (; i0 + QK_NV * VL <= m; i0 += QK_NV * VL)                                        \
            PRE##_cols_wide(qt + i0, ldq, k, ldk, st + i0, lds, n, e, scale);                 \
        for (; i0 < m; i0 += VL) PRE##_cols_one(qt + i0, ldq, k, ldk, st + i0, lds, n, e, scale); \
    }

DEFINE_QK_TILES(DEFINE_QK_TILE, qk, float, float)

static void qk(const float *qt, int64_t ldq, const float *k, int64_t ldk, float *st, int64_t lds,
               int64_t m, int64_t n, int64_t e)
{
    qk_all(qt, ldq, k, ldk, st, lds, m, n, e, 1.0f);
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

/* The same tile shapes as the scores, over value columns, from TILE
 * (DEFINE_PV_TILE or the pairs' DEFINE_PVP_TILE); PRE##_all walks m rows
 * and ev columns with them. */
#define DEFINE_PV_TILES_NV(TILE, PRE, NV, SUFFIX, PT, VT)                                    \
    TILE(PRE##_##SUFFIX, QK_RJ, NV)                                                          \
    TILE(PRE##_##SUFFIX##_4, 4, NV)                                                          \
    TILE(PRE##_##SUFFIX##_2, 2, NV)                                                          \
    TILE(PRE##_##SUFFIX##_1, 1, NV)                                                          \
    static void PRE##_cols_##SUFFIX(const PT *pt, int64_t ldp, const VT *v, int64_t ldv,     \
                                    float *ot, int64_t ldo, const float *alpha, int64_t n,   \
                                    int64_t ev)                                              \
    {                                                                                         \
        int64_t c = 0;                                                                        \
        for (; c + QK_RJ <= ev; c += QK_RJ)                                                   \
            PRE##_##SUFFIX(pt, ldp, v + c, ldv, ot + c * ldo, ldo, alpha, n);                 \
        if (QK_RJ > 4 && c + 4 <= ev) {                                                       \
            PRE##_##SUFFIX##_4(pt, ldp, v + c, ldv, ot + c * ldo, ldo, alpha, n);             \
            c += 4;                                                                           \
        }                                                                                     \
        if (c + 2 <= ev) {                                                                    \
            PRE##_##SUFFIX##_2(pt, ldp, v + c, ldv, ot + c * ldo, ldo, alpha, n);             \
            c += 2;                                                                           \
        }                                                                                     \
        if (c < ev) PRE##_##SUFFIX##_1(pt, ldp, v + c, ldv, ot + c * ldo, ldo, alpha, n);     \
    }
#define DEFINE_PV_TILES(TILE, PRE, PT, VT)                                                   \
    DEFINE_PV_TILES_NV(TILE, PRE, QK_NV, wide, PT, VT)                                       \
    DEFINE_PV_TILES_NV(TILE, PRE, 1, one, PT, VT)                                            \
    static void PRE(const PT *pt, int64_t ldp, const VT *v, int64_t ldv, float *ot,          \
                    int64_t ldo, const float *alpha, int64_t m, int64_t n, int64_t ev)        \
    {                                                                                         \
        int64_t i0 = 0;                                                                       \
        for (; i0 + QK_NV * VL <= m; i0 += QK_NV * VL)                                        \
            PRE##_cols_wide(pt + i0, ldp, v, ldv, ot + i0, ldo, alpha + i0, n, ev);           \
        for (; i0 < m; i0 += VL)                                                              \
            PRE##_cols_one(pt + i0, ldp, v, ldv, ot + i0, ldo, alpha + i0, n, ev);            \
    }

DEFINE_PV_TILES(DEFINE_PV_TILE, pv, float, float)

/* ------------------------------------------------------------ bf16 pairs */

/* The bf16 dot-product kernels of kernels.h, for a vocabulary with pairs
 * (VPAIRS defined):
 *   VP                a vector of VL pairs (two bf16 patterns in 32 bits)
 *   vpld(p)           load VL pairs from 64-byte-aligned p;  vpst(p, x) store
 *   vpstu(p, x)       store anywhere
 *   vpset1(u)         broadcast one pair
 *   vdpbf16(acc, a, b)  VDPBF16PS: lane i of acc plus a.hi * b.hi, then
 *                     plus a.lo * b.lo, each a rounded fused step,
 *                     denormals as zero
 *   vpair_bf16(lo, hi)  the pairs (bf16(lo[i]), bf16(hi[i])), rounded as
 *                     vnarrow_bf16 rounds
 *   vpjoin(a, b)      the pairs (a[i], b[i]) of VL bf16 patterns at a and
 *                     b, any alignment
 * Same tiles as the f32 products: the queries' (or weights') pairs along
 * the vector, the keys' (or values') pairs broadcast. */
#ifdef VPAIRS

/* Two bf16 patterns at kr (2-byte aligned) as one pair, kr[0] low. */
static inline uint32_t load_pair(const uint16_t *kr)
{
    return (uint32_t)kr[0] | (uint32_t)kr[1] << 16;
}

/* One pair x of the tile's queries times RJ keys' pairs, each read from
 * its row by PAIR: load_pair, or lone_pair for the last element of an odd
 * head dim (the pair (k, 0); the element after it is not read). */
static inline uint32_t lone_pair(const uint16_t *kr) { return (uint32_t)kr[0]; }
#define QKP_STEP(RJ, NV, x, PAIR)                                                             \
    do {                                                                                      \
        VP qv[NV];                                                                            \
        _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) qv[c] =                         \
            vpld(qp + (x) * ldq + c * VL);                                                    \
        _Pragma("GCC unroll 8") for (int r = 0; r < RJ; r++)                                 \
        {                                                                                     \
            const VP kb = vpset1(PAIR(k + r * ldk + 2 * (x)));                                \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] =                 \
                vdpbf16(acc[r][c], qv[c], kb);                                                \
        }                                                                                     \
    } while (0)

/* st[j0 + r][..] = scale * sum over pairs x of dp(qp[x][..], key r's pair
 * x), the scale applied once to the f32 sums. */
#define DEFINE_QKP_TILE(NAME, RJ, NV)                                                        \
    static inline void NAME(const uint32_t *qp, int64_t ldq, const uint16_t *k, int64_t ldk, \
                            float *st, int64_t lds, int64_t e, float scale)                 \
    {                                                                                        \
        VF acc[RJ][NV];                                                                      \
        _Pragma("GCC unroll 8") for (int r = 0; r < RJ; r++)                                \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] = vzero();       \
        const int64_t full = e / 2;                                                          \
        for (int64_t x = 0; x < full; x++) QKP_STEP(RJ, NV, x, load_pair);                   \
        if (e % 2) QKP_STEP(RJ, NV, full, lone_pair);                                        \
        const VF vs = vset1(scale);                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < RJ; r++)                                \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++)                            \
                vst(st + r * lds + c * VL, vmul(acc[r][c], vs));                             \
    }

DEFINE_QK_TILES(DEFINE_QKP_TILE, qkp, uint32_t, uint16_t)

static void qk_pairs(const uint32_t *qp, int64_t ldq, const uint16_t *k, int64_t ldk, float *st,
                     int64_t lds, int64_t m, int64_t n, int64_t e, float scale)
{
    qkp_all(qp, ldq, k, ldk, st, lds, m, n, e, scale);
}

/* ot[c0 + r][..] = ot * alpha + sum over pairs x of dp(pp[x][..],
 * vp[x][c0 + r]). */
#define DEFINE_PVP_TILE(NAME, RC, NV)                                                         \
    static inline void NAME(const uint32_t *pp, int64_t ldp, const uint32_t *vp, int64_t ldv, \
                            float *ot, int64_t ldo, const float *alpha, int64_t n)           \
    {                                                                                         \
        VF acc[RC][NV], a[NV];                                                                \
        _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) a[c] = vld(alpha + c * VL);     \
        _Pragma("GCC unroll 8") for (int r = 0; r < RC; r++)                                 \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] =                 \
                vmul(vld(ot + r * ldo + c * VL), a[c]);                                       \
        for (int64_t x = 0; x < (n + 1) / 2; x++) {                                           \
            VP pv[NV];                                                                        \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) pv[c] =                     \
                vpld(pp + x * ldp + c * VL);                                                  \
            _Pragma("GCC unroll 8") for (int r = 0; r < RC; r++)                             \
            {                                                                                 \
                const VP vb = vpset1(vp[x * ldv + r]);                                        \
                _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] =             \
                    vdpbf16(acc[r][c], pv[c], vb);                                            \
            }                                                                                 \
        }                                                                                     \
        _Pragma("GCC unroll 8") for (int r = 0; r < RC; r++)                                 \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++)                             \
                vst(ot + r * ldo + c * VL, acc[r][c]);                                        \
    }

DEFINE_PV_TILES(DEFINE_PVP_TILE, pv_pairs, uint32_t, uint32_t)

static void pack_pairs(uint32_t *pp, int64_t ldp, const float *st, int64_t lds, int64_t m,
                       int64_t n)
{
    for (int64_t x = 0; x < (n + 1) / 2; x++) {
        const float *lo = st + 2 * x * lds, *hi = lo + lds;
        const int lone = 2 * x + 1 == n;
        for (int64_t i = 0; i < m; i += VL)
            vpst(pp + x * ldp + i, vpair_bf16(vld(lo + i), lone ? vzero() : vld(hi + i)));
    }
}

static void pair_rows(uint32_t *dst, const uint16_t *a, const uint16_t *b, int64_t n)
{
    int64_t c = 0;
    for (; c + VL <= n; c += VL) vpstu(dst + c, vpjoin(a + c, b + c));
    for (; c < n; c++) dst[c] = (uint32_t)a[c] | (uint32_t)b[c] << 16;
}

#define KERNEL_PAIRS                                                                          \
    .qk_pairs = qk_pairs, .pack_pairs = pack_pairs, .pv_pairs = pv_pairs,                    \
    .pair_rows = pair_rows, .gemm_pairs = gemm_pairs
#endif

/* ------------------------------------------------------------ rows */

/* Row-major kernels for small tiles (decode): dot products run along the
 * vector and VL of them are reduced together by vsum_each. */

/* Lane j: sum over d < k of ar[d] * b[j * ldb + d], for the first nj <= VL
 * rows of b (lanes past nj are 0); b's elements of type T read by LOAD(p)
 * (VL of them) and LOADN(p, t) (the first t, zeros after): written once
 * for f32 rows and for f16 and bf16 rows, which are widened in registers,
 * so a 16-bit B is read at half the bytes and gives the bits its widened
 * copy would. */
#define DEFINE_DOT_BLOCK(NAME, T, LOAD, LOADN)                                              \
    static inline VF NAME(const float *ar, const T *b, int64_t ldb, int nj, int64_t k)      \
    {                                                                                       \
        VF acc[VL];                                                                         \
        _Pragma("GCC unroll 16") for (int j = 0; j < VL; j++) acc[j] = vzero();             \
        int64_t d = 0;                                                                      \
        if (nj == VL) {                                                                     \
            /* Four rows of b at a time along all of d: four streams the prefetchers    \
             * follow (a GEMV's rows are long), each element of ar loaded once for the  \
             * four; each accumulator still sums along d in order. */                   \
            const int64_t dv = k - k % VL;                                                  \
            _Pragma("GCC unroll 1") for (int j0 = 0; j0 < VL; j0 += 4) {                    \
                const T *p0 = b + j0 * ldb;                                                 \
                _Pragma("GCC unroll 4") for (int64_t e = 0; e < dv; e += VL) {              \
                    const VF av = vldu(ar + e);                                             \
                    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) acc[j0 + j] =       \
                        vfma(av, LOAD(p0 + j * ldb + e), acc[j0 + j]);                      \
                }                                                                           \
            }                                                                               \
            d = dv;                                                                         \
        } else {                                                                            \
            for (; d + VL <= k; d += VL) {                                                  \
                const VF av = vldu(ar + d);                                                 \
                for (int j = 0; j < nj; j++) acc[j] = vfma(av, LOAD(b + j * ldb + d), acc[j]); \
            }                                                                               \
        }                                                                                   \
        if (d < k) {                                                                        \
            const int t = (int)(k - d);                                                     \
            const VF av = vldu_n(ar + d, t);                                                \
            for (int j = 0; j < nj; j++) acc[j] = vfma(av, LOADN(b + j * ldb + d, t), acc[j]); \
        }                                                                                   \
        return vsum_each(acc);                                                              \
    }

/* The first t < VL 16-bit patterns at p widened, zeros after. */
static inline VF vwiden_f16_n(const uint16_t *p, int t)
{
    uint16_t h[VL] = {0};
    for (int i = 0; i < t; i++) h[i] = p[i];
    return vwiden_f16(h);
}
static inline VF vwiden_bf16_n(const uint16_t *p, int t)
{
    uint16_t h[VL] = {0};
    for (int i = 0; i < t; i++) h[i] = p[i];
    return vwiden_bf16(h);
}

DEFINE_DOT_BLOCK(dot_block, float, vldu, vldu_n)
DEFINE_DOT_BLOCK(dot_block_f16, uint16_t, vwiden_f16, vwiden_f16_n)
DEFINE_DOT_BLOCK(dot_block_bf16, uint16_t, vwiden_bf16, vwiden_bf16_n)

/* Four rows of a at once against DOT4_KEYS rows of b: lane r * DOT4_KEYS
 * + j is row r's sum with row j of b, for the first nj <= DOT4_KEYS rows
 * of b (the other lanes 0). Each element of b is loaded (and widened)
 * once for the four rows, where the one-row block above loads it once a
 * row: decode's query heads of one kv head read a 16-bit key once. Each
 * lane's sum runs along d in the order the one-row block's does and goes
 * through the same vsum_each, so the two give the same bits. */
#define DOT4_KEYS (VL / 4)
#define DEFINE_DOT4_BLOCK(NAME, T, LOAD, LOADN)                                             \
    static inline VF NAME(const float *a, int64_t lda, const T *b, int64_t ldb, int nj,     \
                          int64_t k)                                                        \
    {                                                                                       \
        VF acc[VL];                                                                         \
        _Pragma("GCC unroll 16") for (int j = 0; j < VL; j++) acc[j] = vzero();             \
        int64_t d = 0;                                                                      \
        for (; d + VL <= k; d += VL) {                                                      \
            VF av[4];                                                                       \
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) av[r] = vldu(a + r * lda + d); \
            _Pragma("GCC unroll 4") for (int j = 0; j < DOT4_KEYS; j++) {                   \
                if (j >= nj) break;                                                         \
                const VF bv = LOAD(b + j * ldb + d);                                        \
                _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) acc[r * DOT4_KEYS + j] = \
                    vfma(av[r], bv, acc[r * DOT4_KEYS + j]);                                \
            }                                                                               \
        }                                                                                   \
        if (d < k) {                                                                        \
            const int t = (int)(k - d);                                                     \
            VF av[4];                                                                       \
            for (int r = 0; r < 4; r++) av[r] = vldu_n(a + r * lda + d, t);                 \
            for (int j = 0; j < nj; j++) {                                                  \
                const VF bv = LOADN(b + j * ldb + d, t);                                    \
                for (int r = 0; r < 4; r++) acc[r * DOT4_KEYS + j] =                        \
                    vfma(av[r], bv, acc[r * DOT4_KEYS + j]);                                \
            }                                                                               \
        }                                                                                   \
        return vsum_each(acc);                                                              \
    }

DEFINE_DOT4_BLOCK(dot4_block, float, vldu, vldu_n)
DEFINE_DOT4_BLOCK(dot4_block_f16, uint16_t, vwiden_f16, vwiden_f16_n)
DEFINE_DOT4_BLOCK(dot4_block_bf16, uint16_t, vwiden_bf16, vwiden_bf16_n)

/* dot_rows for b of type T through BLOCK4 (rows four at a time) and BLOCK
 * (the rows left over), two of the above. */
#define DEFINE_DOT_ROWS(NAME, T, BLOCK, BLOCK4)                                             \
    static void NAME(const float *a, int64_t lda, int64_t m, const T *b, int64_t ldb, float *c, \
                     int64_t ldc, int64_t n, int64_t k)                                     \
    {                                                                                       \
        const int64_t m4 = m - m % 4;                                                       \
        for (int64_t j0 = 0; j0 < n; j0 += VL) {                                            \
            const int nj = n - j0 < VL ? (int)(n - j0) : VL;                                \
            for (int jq = 0; jq < nj && m4 > 0; jq += DOT4_KEYS) {                          \
                const int nq = nj - jq < DOT4_KEYS ? nj - jq : DOT4_KEYS;                   \
                for (int64_t r = 0; r < m4; r += 4) {                                       \
                    _Alignas(64) float buf[VL];                                             \
                    vst(buf, BLOCK4(a + r * lda, lda, b + (j0 + jq) * ldb, ldb, nq, k));    \
                    for (int i = 0; i < 4; i++)                                             \
                        for (int j = 0; j < nq; j++)                                        \
                            c[(r + i) * ldc + j0 + jq + j] = buf[i * DOT4_KEYS + j];        \
                }                                                                           \
            }                                                                               \
            for (int64_t r = m4; r < m; r++) {                                              \
                const VF s = BLOCK(a + r * lda, b + j0 * ldb, ldb, nj, k);                  \
                if (nj == VL) {                                                             \
                    vstu(c + r * ldc + j0, s);                                              \
                } else {                                                                    \
                    _Alignas(64) float buf[VL];                                             \
                    vst(buf, s);                                                            \
                    for (int j = 0; j < nj; j++) c[r * ldc + j0 + j] = buf[j];              \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

DEFINE_DOT_ROWS(dot_rows, float, dot_block, dot4_block)
DEFINE_DOT_ROWS(dot_rows_f16, uint16_t, dot_block_f16, dot4_block_f16)
DEFINE_DOT_ROWS(dot_rows_bf16, uint16_t, dot_block_bf16, dot4_block_bf16)

/* The online softmax step of softmax() for row-major scores: row r is
 * s[r * lds ..], n long. The maximum and the sum run along the vector;
 * the last n % VL scores go through the same vexp one vector at a time. */
static void softmax_rows(float *s, int64_t lds, int64_t m, int64_t n, float *mx, double *l,
                         float *alpha)
{
    const VF ninf = vset1(-INFINITY);
    const int64_t nv = n - n % VL, t = n - nv;
    for (int64_t r = 0; r < m; r++) {
        float *x = s + r * lds;
        VF bm = ninf;
        for (int64_t j = 0; j < nv; j += VL) bm = vmax(vldu(x + j), bm); /* NaN passed over */
        _Alignas(64) float buf[VL];
        vst(buf, bm);
        float mnew = mx[r];
        for (int i = 0; i < VL; i++) mnew = buf[i] > mnew ? buf[i] : mnew;
        for (int64_t j = nv; j < n; j++) mnew = x[j] > mnew ? x[j] : mnew;
        const float msafe = mnew == -INFINITY ? 0.0f : mnew;
        const VF vm = vset1(msafe);
        vst(buf, vexp(vsub(vset1(mx[r]), vm)));
        alpha[r] = buf[0];
        VF sum = vzero();
        for (int64_t j = 0; j < nv; j += VL) {
            const VF p = vexp(vsub(vldu(x + j), vm));
            vstu(x + j, p);
            sum = vadd(sum, p);
        }
        vst(buf, sum);
        float total = 0.0f;
        for (int i = 0; i < VL; i++) total += buf[i];
        if (t > 0) {
            vst(buf, vexp(vsub(vldu_n(x + nv, (int)t), vm)));
            for (int64_t i = 0; i < t; i++) {
                x[nv + i] = buf[i];
                total += buf[i];
            }
        }
        l[r] = l[r] * alpha[r] + (double)total;
        mx[r] = mnew;
    }
}

/* o[r][c0 ..] = o * alpha[r] + sum_j p[r][j] v[j][c0 ..] for MR rows and NV
 * whole vectors of columns: each v row loaded once for all MR rows. V's
 * elements are T, read by LOAD (vldu, or a 16-bit widening). */
#define DEFINE_AXPY_TILE(NAME, MR, NV, T, LOAD)                                               \
    static inline void NAME(const float *p, int64_t ldp, const T *v, int64_t ldv, float *o,  \
                            int64_t ldo, const float *alpha, int64_t n)                      \
    {                                                                                         \
        VF acc[MR][NV];                                                                       \
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)                                 \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] =                 \
                vmul(vldu(o + r * ldo + c * VL), vset1(alpha[r]));                            \
        for (int64_t j = 0; j < n; j++) {                                                     \
            VF vv[NV];                                                                        \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) vv[c] =                     \
                LOAD(v + j * ldv + c * VL);                                                   \
            _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)                             \
            {                                                                                 \
                const VF pb = vset1(p[r * ldp + j]);                                          \
                _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++) acc[r][c] =             \
                    vfma(pb, vv[c], acc[r][c]);                                               \
            }                                                                                 \
        }                                                                                     \
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; r++)                                 \
            _Pragma("GCC unroll 8") for (int c = 0; c < NV; c++)                             \
                vstu(o + r * ldo + c * VL, acc[r][c]);                                        \
    }

/* The widest tile takes whole rows of V where it can (AXPY_NV vectors, an
 * ISA may set it above QK_NV), so that each line of V is read from memory
 * by one pass, then QK_NV and single vectors take what is left. Each
 * column's sum runs over j in the same order in every tile, so the tiling
 * does not change the result; nor does V's type: ELEM(v, i) widens one
 * element exactly, as LOAD does a vector. */
#ifndef AXPY_NV
#define AXPY_NV QK_NV
#endif
#define DEFINE_AXPY_ROWS(NAME, T, LOAD, ELEM)                                                 \
    DEFINE_AXPY_TILE(NAME##_4x, 4, AXPY_NV, T, LOAD)                                          \
    DEFINE_AXPY_TILE(NAME##_4w, 4, QK_NV, T, LOAD)                                            \
    DEFINE_AXPY_TILE(NAME##_4n, 4, 1, T, LOAD)                                                \
    DEFINE_AXPY_TILE(NAME##_1x, 1, AXPY_NV, T, LOAD)                                          \
    DEFINE_AXPY_TILE(NAME##_1w, 1, QK_NV, T, LOAD)                                            \
    DEFINE_AXPY_TILE(NAME##_1n, 1, 1, T, LOAD)                                                \
    static void NAME(const float *p, int64_t ldp, int64_t m, const T *v, int64_t ldv,        \
                     float *o, int64_t ldo, const float *alpha, int64_t n, int64_t ev)       \
    {                                                                                         \
        int64_t r = 0;                                                                        \
        for (; r < m; r += r + 4 <= m ? 4 : 1) {                                              \
            const int four = r + 4 <= m;                                                      \
            const float *pr = p + r * ldp;                                                    \
            float *orow = o + r * ldo;                                                        \
            int64_t c = 0;                                                                    \
            for (; c + AXPY_NV * VL <= ev; c += AXPY_NV * VL) {                               \
                if (four)                                                                     \
                    NAME##_4x(pr, ldp, v + c, ldv, orow + c, ldo, alpha + r, n);              \
                else                                                                          \
                    NAME##_1x(pr, ldp, v + c, ldv, orow + c, ldo, alpha + r, n);              \
            }                                                                                 \
            for (; c + QK_NV * VL <= ev; c += QK_NV * VL) {                                   \
                if (four)                                                                     \
                    NAME##_4w(pr, ldp, v + c, ldv, orow + c, ldo, alpha + r, n);              \
                else                                                                          \
                    NAME##_1w(pr, ldp, v + c, ldv, orow + c, ldo, alpha + r, n);              \
            }                                                                                 \
            for (; c + VL <= ev; c += VL) {                                                   \
                if (four)                                                                     \
                    NAME##_4n(pr, ldp, v + c, ldv, orow + c, ldo, alpha + r, n);              \
                else                                                                          \
                    NAME##_1n(pr, ldp, v + c, ldv, orow + c, ldo, alpha + r, n);              \
            }                                                                                 \
            /* The last columns, fewer than a vector, one by one in the same                  \
             * order of j. */                                                                 \
            for (int64_t i = 0; i < (four ? 4 : 1); i++)                                      \
                for (int64_t cc = c; cc < ev; cc++) {                                         \
                    float acc = orow[i * ldo + cc] * alpha[r + i];                            \
                    for (int64_t j = 0; j < n; j++)                                           \
                        acc = fmaf(pr[i * ldp + j], ELEM(v, j * ldv + cc), acc);              \
                    orow[i * ldo + cc] = acc;                                                 \
                }                                                                             \
        }                                                                                     \
    }

#define ELEM_F32(v, i) ((v)[i])
#define ELEM_F16(v, i) qkv_f16_to_f32((v)[i])
#define ELEM_BF16(v, i) qkv_bf16_to_f32((v)[i])
DEFINE_AXPY_ROWS(axpy_rows, float, vldu, ELEM_F32)
DEFINE_AXPY_ROWS(axpy_rows_f16, uint16_t, vwiden_f16, ELEM_F16)
DEFINE_AXPY_ROWS(axpy_rows_bf16, uint16_t, vwiden_bf16, ELEM_BF16)

/* ------------------------------------------------------------ gemm */

/* The SGEMM microkernel of kernels.h: GEMM_MR rows of op(A), each number
 * broadcast, times GEMM_NV vectors of op(B)'s columns, all accumulators in
 * registers. A partial tile is staged through a local tile so that every
 * element goes through the same vector instructions as in a whole one. */
#define GEMM_NR (GEMM_NV * VL)

/* C's rows of the tile about to be written: fetched while the products
 * run (whole tiles only). */
static inline void gemm_prefetch(float *c, int64_t ldc, int rows)
{
    if (rows == GEMM_MR)
        _Pragma("GCC unroll 16") for (int r = 0; r < GEMM_MR; r++)
        {
            __builtin_prefetch(c + r * ldc, 1, 3);
            __builtin_prefetch(c + r * ldc + GEMM_NR - 1, 1, 3);
        }
}

/* c = alpha * acc + beta * c for the tile's rows x cols (kernels.h). */
static inline void gemm_store(VF acc[GEMM_MR][GEMM_NV], float alpha, float beta, float *c,
                              int64_t ldc, int rows, int cols)
{
    _Alignas(64) float tile[GEMM_MR * GEMM_NR];
    float *d = c;
    int64_t ldd = ldc;
    if (rows < GEMM_MR || cols < GEMM_NR) {
        d = tile;
        ldd = GEMM_NR;
        if (beta != 0)
            for (int r = 0; r < GEMM_MR; r++)
                for (int j = 0; j < GEMM_NR; j++)
                    tile[r * GEMM_NR + j] = r < rows && j < cols ? c[r * ldc + j] : 0.0f;
    }
    const VF va = vset1(alpha), vb = vset1(beta);
    if (beta == 0) {
        _Pragma("GCC unroll 16") for (int r = 0; r < GEMM_MR; r++)
            _Pragma("GCC unroll 8") for (int v = 0; v < GEMM_NV; v++)
                vstu(d + r * ldd + v * VL, vmul(va, acc[r][v]));
    } else {
        _Pragma("GCC unroll 16") for (int r = 0; r < GEMM_MR; r++)
            _Pragma("GCC unroll 8") for (int v = 0; v < GEMM_NV; v++)
            {
                float *dp = d + r * ldd + v * VL;
                vstu(dp, vfma(vb, vldu(dp), vmul(va, acc[r][v])));
            }
    }
    if (d == tile)
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++) c[r * ldc + j] = tile[r * GEMM_NR + j];
}

static void gemm(int64_t kc, const float *a, const float *b, float alpha, float beta, float *c,
                 int64_t ldc, int rows, int cols)
{
    VF acc[GEMM_MR][GEMM_NV];
    _Pragma("GCC unroll 16") for (int r = 0; r < GEMM_MR; r++)
        _Pragma("GCC unroll 8") for (int v = 0; v < GEMM_NV; v++) acc[r][v] = vzero();
    gemm_prefetch(c, ldc, rows);
    for (int64_t p = 0; p < kc; p++) {
        VF bv[GEMM_NV];
        _Pragma("GCC unroll 8") for (int v = 0; v < GEMM_NV; v++) bv[v] =
            vld(b + p * GEMM_NR + v * VL);
        _Pragma("GCC unroll 16") for (int r = 0; r < GEMM_MR; r++)
        {
            VF ar = vset1(a[p * GEMM_MR + r]);
            _Pragma("GCC unroll 8") for (int v = 0; v < GEMM_NV; v++) acc[r][v] =
                vfma(ar, bv[v], acc[r][v]);
        }
    }
    gemm_store(acc, alpha, beta, c, ldc, rows, cols);
}

#ifdef VPAIRS
/* The microkernel on bf16 pairs: the same tile, B's pairs loaded, A's
 * broadcast. */
static void gemm_pairs(int64_t kp, const uint32_t *a, const uint32_t *b, float alpha, float beta,
                       float *c, int64_t ldc, int rows, int cols)
{
    VF acc[GEMM_MR][GEMM_NV];
    _Pragma("GCC unroll 16") for (int r = 0; r < GEMM_MR; r++)
        _Pragma("GCC unroll 8") for (int v = 0; v < GEMM_NV; v++) acc[r][v] = vzero();
    gemm_prefetch(c, ldc, rows);
    for (int64_t x = 0; x < kp; x++) {
        VP bv[GEMM_NV];
        _Pragma("GCC unroll 8") for (int v = 0; v < GEMM_NV; v++) bv[v] =
            vpld(b + x * GEMM_NR + v * VL);
        _Pragma("GCC unroll 16") for (int r = 0; r < GEMM_MR; r++)
        {
            const VP ar = vpset1(a[x * GEMM_MR + r]);
            _Pragma("GCC unroll 8") for (int v = 0; v < GEMM_NV; v++) acc[r][v] =
                vdpbf16(acc[r][v], bv[v], ar);
        }
    }
    gemm_store(acc, alpha, beta, c, ldc, rows, cols);
}
#endif

static void widen_f16(float *dst, const uint16_t *src, int64_t n)
{
    int64_t x = 0;
    for (; x + VL <= n; x += VL) vstu(dst + x, vwiden_f16(src + x));
    for (; x < n; x++) dst[x] = qkv_f16_to_f32(src[x]);
}

static void widen_bf16(float *dst, const uint16_t *src, int64_t n)
{
    int64_t x = 0;
    for (; x + VL <= n; x += VL) vstu(dst + x, vwiden_bf16(src + x));
    for (; x < n; x++) dst[x] = qkv_bf16_to_f32(src[x]);
}

static void narrow_f16(uint16_t *dst, const float *src, int64_t n)
{
    int64_t x = 0;
    for (; x + VL <= n; x += VL) vnarrow_f16(dst + x, vldu(src + x));
    for (; x < n; x++) dst[x] = qkv_f32_to_f16(src[x]);
}

static void narrow_bf16(uint16_t *dst, const float *src, int64_t n)
{
    int64_t x = 0;
    for (; x + VL <= n; x += VL) vnarrow_bf16(dst + x, vldu(src + x));
    for (; x < n; x++) dst[x] = qkv_f32_to_bf16(src[x]);
}

/* q8_0 and q4_0 blocks (quant.h's layout) into floats: q d, (n - 8) d,
 * each product exact, so the bits of quant.c's scalar loops. */
static void dequant_q8_0(float *dst, const unsigned char *src, int64_t blocks)
{
    for (int64_t b = 0; b < blocks; b++, src += QKV_Q8_0_BYTES, dst += QKV_QBLOCK) {
        const VF d = vset1(qkv_block_scale(src));
        for (int j = 0; j < QKV_QBLOCK; j += VL) vstu(dst + j, vmul(vq8(src + 2 + j), d));
    }
}

static void dequant_q4_0(float *dst, const unsigned char *src, int64_t blocks)
{
    for (int64_t b = 0; b < blocks; b++, src += QKV_Q4_0_BYTES, dst += QKV_QBLOCK) {
        const VF d = vset1(qkv_block_scale(src));
        for (int j = 0; j < QKV_QBLOCK / 2; j += VL) {
            vstu(dst + j, vmul(vq4(src + 2 + j, 0), d));
            vstu(dst + QKV_QBLOCK / 2 + j, vmul(vq4(src + 2 + j, 1), d));
        }
    }
}

/* The table: every set's f32 kernels; the pairs where the vocabulary has
 * them, in KNAME unless the file asks for them in a second table
 * (KNAME_PAIRS: generic.c's emulation, kernels.h says why). */
#define KERNEL_F32                                                                            \
    .qk = qk, .softmax = softmax, .pv = pv, .exp_inplace = exp_inplace, .softcap = softcap,   \
    .grad_row = grad_row,                                                                     \
    .gemm_mr = GEMM_MR, .gemm_nr = GEMM_NR, .gemm = gemm, .dot_rows = dot_rows,               \
    .dot_rows_f16 = dot_rows_f16, .dot_rows_bf16 = dot_rows_bf16,                             \
    .softmax_rows = softmax_rows, .axpy_rows = axpy_rows, .axpy_rows_f16 = axpy_rows_f16,      \
    .axpy_rows_bf16 = axpy_rows_bf16, .widen_f16 = widen_f16,                                 \
    .widen_bf16 = widen_bf16, .narrow_f16 = narrow_f16, .narrow_bf16 = narrow_bf16,          \
    .dequant_q8_0 = dequant_q8_0, .dequant_q4_0 = dequant_q4_0

#if defined(VPAIRS) && !defined(KNAME_PAIRS)
const qkv_cpu_kernels KNAME = {.name = KNAME_STRING, KERNEL_F32, KERNEL_PAIRS};
#else
const qkv_cpu_kernels KNAME = {.name = KNAME_STRING, KERNEL_F32};
#endif
#ifdef KNAME_PAIRS
const qkv_cpu_kernels KNAME_PAIRS = {.name = KNAME_STRING "-pairs", KERNEL_F32, KERNEL_PAIRS};
#endif
