/* Scalar float16 (IEEE binary16) and bfloat16 conversions: the array
 * converter uses them today, the bf16/fp16 kernels will. Values travel as
 * their 16-bit patterns. Narrowing rounds to nearest even, overflows to infinity,
 * keeps subnormals, and turns NaN into a quiet NaN of the same sign. */
#ifndef QKV_HALF_H
#define QKV_HALF_H

#include <stdint.h>
#include <string.h>

/* Rounds the finite nonzero value (1 + frac / 2^fbits) * 2^exp, sign already
 * placed at bit 15, to a 16-bit format with mbits fraction bits, bias bias
 * and all-ones exponent field emax. One rounding from the exact value, so
 * narrowing a double gives the correctly rounded result (going through
 * float first would round twice). */
static inline uint16_t qkv_narrow16_(uint16_t sign, int exp, uint64_t frac, int fbits,
                                     int mbits, int bias, int emax)
{
    int e = exp + bias; /* the target's biased exponent */
    uint64_t h, rem, half;
    int shift;
    if (e >= emax)
        return (uint16_t)(sign | (emax << mbits)); /* overflow: infinity */
    if (e >= 1) {
        shift = fbits - mbits;
        h = ((uint64_t)e << mbits) | (frac >> shift);
    } else {
        /* Subnormal result: count in units of the smallest subnormal. */
        frac |= (uint64_t)1 << fbits;
        shift = fbits - mbits + 1 - e;
        if (shift > fbits + 1)
            return sign; /* below half the smallest subnormal: zero */
        h = frac >> shift;
    }
    rem = frac & (((uint64_t)1 << shift) - 1);
    half = (uint64_t)1 << (shift - 1);
    /* A carry out of the fraction correctly bumps the exponent, up to the
     * infinity pattern; a subnormal that rounds up becomes the smallest
     * normal the same way. */
    if (rem > half || (rem == half && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

static inline uint32_t qkv_f32_bits_(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static inline float qkv_bits_f32_(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline float qkv_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    int e = (h >> 10) & 0x1f;
    uint32_t m = h & 0x3ff;
    if (e == 0x1f) /* inf, or NaN keeping its payload */
        return qkv_bits_f32_(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0)
            return qkv_bits_f32_(sign);
        /* Subnormal: normalise; every f16 subnormal is a normal float. */
        e = 1;
        while (!(m & 0x400)) {
            m <<= 1;
            e--;
        }
        m &= 0x3ff;
    }
    return qkv_bits_f32_(sign | (uint32_t)(e + 127 - 15) << 23 | m << 13);
}

static inline uint16_t qkv_f32_to_f16(float f)
{
    uint32_t b = qkv_f32_bits_(f);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
    int e = (b >> 23) & 0xff;
    uint32_t m = b & 0x7fffff;
    if (e == 0xff)
        return (uint16_t)(sign | 0x7c00 | (m ? 0x200 | (m >> 13) : 0));
    if (e == 0) /* zero or a float subnormal, far below 2^-25 */
        return sign;
    return qkv_narrow16_(sign, e - 127, m, 23, 10, 15, 0x1f);
}

/* A double narrowed to a 16-bit format of mbits mantissa bits, exponent
 * bias `bias` and all-ones exponent emax, rounding once from the double. */
static inline uint16_t qkv_f64_to_16_(double d, int mbits, int bias, int emax)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    uint16_t sign = (uint16_t)((b >> 48) & 0x8000);
    int e = (int)((b >> 52) & 0x7ff);
    uint64_t m = b & 0xfffffffffffffull;
    if (e == 0x7ff) /* inf, or NaN made quiet with the payload's top bits */
        return (uint16_t)(sign | (uint16_t)(emax << mbits) |
                          (m ? (uint16_t)(1u << (mbits - 1)) | (uint16_t)(m >> (52 - mbits)) : 0));
    if (e == 0) /* zero or a double subnormal, far below any 16-bit value */
        return sign;
    return qkv_narrow16_(sign, e - 1023, m, 52, mbits, bias, emax);
}

static inline uint16_t qkv_f64_to_f16(double d) { return qkv_f64_to_16_(d, 10, 15, 0x1f); }

static inline float qkv_bf16_to_f32(uint16_t h)
{
    return qkv_bits_f32_((uint32_t)h << 16); /* exact: bf16 is float's top half */
}

static inline uint16_t qkv_f32_to_bf16(float f)
{
    uint32_t b = qkv_f32_bits_(f);
    if ((b & 0x7fffffff) > 0x7f800000) /* NaN: keep it NaN even if the payload
                                          lives only in the low half */
        return (uint16_t)((b >> 16) | 0x40);
    /* Adding 0x7fff plus the lowest kept bit rounds to nearest even; the
     * carry handles subnormals and overflow to infinity alike. */
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1)) >> 16);
}

static inline uint16_t qkv_f64_to_bf16(double d) { return qkv_f64_to_16_(d, 7, 127, 0xff); }

#endif
