/* q8_0 and q4_0 blocks (quant.h). */
#include "quant.h"

#include "common.h"
#include "half.h"

#include <math.h>
#include <string.h>

/* The binary16 NaN a block that cannot be stored gets as its scale. */
#define NAN_SCALE 0x7e00u

/* The scale's binary16, little-endian at the block's start. */
static void put_scale(unsigned char *b, uint16_t h)
{
    b[0] = (unsigned char)(h & 0xff);
    b[1] = (unsigned char)(h >> 8);
}


/* Whether the 32 values at x are all finite. */
static int finite_block(const float *x)
{
    int ok = 1;
    for (int j = 0; j < QKV_QBLOCK; j++) ok &= isfinite(x[j]) != 0;
    return ok;
}

/* 1 / d, or 0 for a d of 0 or one so small (an f32 subnormal) that 1 / d
 * overflows: the block's values then quantize to 0, the nearest a scale
 * that binary16 rounds to 0 can give. */
static float inverse(float d)
{
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    return isfinite(id) ? id : 0.0f;
}

/* d as binary16 in *h; 0 when that overflows (the caller stores NaN). */
static int scale_fits(float d, uint16_t *h)
{
    *h = qkv_f32_to_f16(d);
    return isfinite(qkv_f16_to_f32(*h));
}

int64_t qkv_q8_0_quantize(unsigned char *dst, const float *x, int64_t blocks)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < blocks; i++, x += QKV_QBLOCK, dst += QKV_Q8_0_BYTES) {
        float amax = 0.0f;
        for (int j = 0; j < QKV_QBLOCK; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        const float d = amax / 127.0f, id = inverse(d);
        uint16_t h;
        const int finite = finite_block(x);
        if (!finite || !scale_fits(d, &h)) {
            put_scale(dst, NAN_SCALE);
            memset(dst + 2, 0, QKV_QBLOCK);
            bad += finite;
            continue;
        }
        put_scale(dst, h);
        for (int j = 0; j < QKV_QBLOCK; j++) {
            /* |x id| <= 127 up to a rounding: roundf stays in int8's range */
            const int q = (int)roundf(x[j] * id);
            dst[2 + j] = (unsigned char)(int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
        }
    }
    return bad;
}

int64_t qkv_q4_0_quantize(unsigned char *dst, const float *x, int64_t blocks)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < blocks; i++, x += QKV_QBLOCK, dst += QKV_Q4_0_BYTES) {
        float amax = 0.0f, m = 0.0f;
        for (int j = 0; j < QKV_QBLOCK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                m = x[j];
            }
        const float d = m / -8.0f, id = inverse(d);
        uint16_t h;
        const int finite = finite_block(x);
        if (!finite || !scale_fits(d, &h)) {
            put_scale(dst, NAN_SCALE);
            memset(dst + 2, 0x88, QKV_QBLOCK / 2); /* n = 8: q = 0 */
            bad += finite;
            continue;
        }
        put_scale(dst, h);
        for (int j = 0; j < QKV_QBLOCK / 2; j++) {
            /* x id is in [-8, 8] up to a rounding, so the sum is >= 0 and
             * truncating it is rounding half up of x id + 8. */
            const int lo = (int)(x[j] * id + 8.5f), hi = (int)(x[j + 16] * id + 8.5f);
            dst[2 + j] = (unsigned char)((lo > 15 ? 15 : lo) | (hi > 15 ? 15 : hi) << 4);
        }
    }
    return bad;
}

void qkv_q8_0_dequantize(float *dst, const unsigned char *src, int64_t blocks)
{
    for (int64_t i = 0; i < blocks; i++, dst += QKV_QBLOCK, src += QKV_Q8_0_BYTES) {
        const float d = qkv_block_scale(src);
        for (int j = 0; j < QKV_QBLOCK; j++) dst[j] = (float)(int8_t)src[2 + j] * d;
    }
}

void qkv_q4_0_dequantize(float *dst, const unsigned char *src, int64_t blocks)
{
    for (int64_t i = 0; i < blocks; i++, dst += QKV_QBLOCK, src += QKV_Q4_0_BYTES) {
        const float d = qkv_block_scale(src);
        for (int j = 0; j < QKV_QBLOCK / 2; j++) {
            dst[j] = (float)((src[2 + j] & 0x0f) - 8) * d;
            dst[j + 16] = (float)((src[2 + j] >> 4) - 8) * d;
        }
    }
}

/* ------------------------------------------------------------ public */

static qkv_status check_call(const void *dst, qkv_dtype fmt, const void *src, int64_t n)
{
    if (fmt != QKV_DTYPE_Q8_0 && fmt != QKV_DTYPE_Q4_0)
        return qkv_fail(QKV_ERR_DTYPE, "fmt: %s is not a block format (q8_0 or q4_0)",
                        qkv_dtype_name(fmt));
    if (n < 0 || n % QKV_QBLOCK != 0)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "n: %lld is not a non-negative multiple of %d",
                        (long long)n, QKV_QBLOCK);
    if (n > 0 && !dst) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "dst: is NULL");
    if (n > 0 && !src) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "src: is NULL");
    return QKV_OK;
}

int64_t qkv_block_unfit(qkv_dtype fmt, const float *x, int64_t blocks, int64_t *first)
{
    unsigned char tmp[QKV_Q8_0_BYTES];
    int64_t bad = 0;
    if (first) *first = -1;
    for (int64_t b = 0; b < blocks; b++)
        if (qkv_block_quantize(fmt, tmp, x + b * QKV_QBLOCK, 1)) {
            if (first && bad == 0) *first = b;
            bad++;
        }
    return bad;
}

qkv_status qkv_quantize(void *dst, qkv_dtype fmt, const float *src, int64_t n)
{
    qkv_clear_error();
    QKV_TRY(check_call(dst, fmt, src, n));
    /* dst is written only when every finite value fits. */
    int64_t first;
    if (qkv_block_unfit(fmt, src, n / QKV_QBLOCK, &first))
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "src: block %lld holds values too large for %s (|x| up to about %g)",
                        (long long)first, qkv_dtype_name(fmt), qkv_block_limit(fmt));
    qkv_block_quantize(fmt, dst, src, n / QKV_QBLOCK);
    return QKV_OK;
}

qkv_status qkv_dequantize(float *dst, qkv_dtype fmt, const void *src, int64_t n)
{
    qkv_clear_error();
    QKV_TRY(check_call(dst, fmt, src, n));
    qkv_block_dequantize(fmt, dst, src, n / QKV_QBLOCK);
    return QKV_OK;
}
