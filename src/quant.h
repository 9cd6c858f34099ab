/* The block formats of the quantized KV cache: llama.cpp's q8_0 and q4_0,
 * byte for byte, so that a cache's numbers can be compared with its. A
 * block holds 32 consecutive values (along a row: a head's dims) and
 * starts with its scale d, an IEEE binary16 (little-endian):
 *
 *   q8_0, 34 bytes: d, then 32 signed bytes q[j];  x[j] = q[j] * d,
 *         d = max |x| / 127 and q[j] = round(x[j] / d), halves away from 0.
 *   q4_0, 18 bytes: d, then 16 bytes; byte j holds value j in its low
 *         nibble and value j + 16 in its high one, each as n = q + 8 in
 *         0..15;  x[j] = (n[j] - 8) * d, d = -m / 8 where m is the value
 *         of largest magnitude (m maps to n = 0, that is -8 d), and
 *         n[j] = min(15, trunc(x[j] / d + 8.5)).
 *
 * As in llama.cpp, the quotients use 1 / d in f32 before d is rounded to
 * binary16 (a block of zeros has d = 0 and every q 0).
 *
 * What the formats cannot hold is never turned into numbers silently: a
 * block with a NaN or an infinity, or whose d overflows binary16 (|x|
 * from about 65504 * 127 for q8_0, 65504 * 8 for q4_0), is stored with
 * d = NaN and q = 0, so that all its 32 values read back as NaN; the
 * quantizers count the blocks of finite values too large for the format,
 * which the caller reports as an error (a NaN or infinity read back as
 * NaN is the input's own). */
#ifndef QKV_QUANT_H
#define QKV_QUANT_H

#include <stdint.h>

#include "half.h"
#include "qkv.h"

/* qkv.h's sizes, by shorter names */
#define QKV_QBLOCK QKV_BLOCK_VALUES
#define QKV_Q8_0_BYTES QKV_Q8_0_BLOCK_BYTES
#define QKV_Q4_0_BYTES QKV_Q4_0_BLOCK_BYTES

/* blocks x 32 values of x into blocks at dst (any alignment). Returns
 * the blocks of finite values too large for the format (stored as NaN,
 * see above): 0 when every finite value fit. */
int64_t qkv_q8_0_quantize(unsigned char *dst, const float *x, int64_t blocks);
int64_t qkv_q4_0_quantize(unsigned char *dst, const float *x, int64_t blocks);

/* And back: blocks x 32 values, each exactly q * d (or (n - 8) * d), the
 * products of a small integer and a binary16 exact in f32. */
void qkv_q8_0_dequantize(float *dst, const unsigned char *src, int64_t blocks);
void qkv_q4_0_dequantize(float *dst, const unsigned char *src, int64_t blocks);

/* The blocks of x (blocks x 32 values) whose finite values are too large
 * for fmt (QKV_DTYPE_Q8_0 or _Q4_0), found by quantizing each into
 * scratch (nothing is written); *first, unless NULL, the first of them
 * (-1: none). How a caller refuses a row before it writes anything. */
int64_t qkv_block_unfit(qkv_dtype fmt, const float *x, int64_t blocks, int64_t *first);

/* Whether a dtype is a block format, and a block's bytes. */
static inline int qkv_block_dtype(qkv_dtype d)
{
    return d == QKV_DTYPE_Q8_0 || d == QKV_DTYPE_Q4_0;
}

static inline int64_t qkv_block_bytes(qkv_dtype d)
{
    return d == QKV_DTYPE_Q8_0 ? QKV_Q8_0_BYTES : QKV_Q4_0_BYTES;
}

/* A block's scale d (the binary16 at its start, little-endian) as a float. */
static inline float qkv_block_scale(const unsigned char *b)
{
    return qkv_f16_to_f32((uint16_t)(b[0] | b[1] << 8));
}

/* About the largest |x| fmt holds: 127 (Q8_0) or 8 (Q4_0) steps of the
 * largest binary16 scale, for the details that name it. */
static inline double qkv_block_limit(qkv_dtype fmt)
{
    return 65504.0 * (fmt == QKV_DTYPE_Q8_0 ? 127 : 8);
}

/* fmt's quantizer and dequantizer above, chosen by dtype. */
static inline int64_t qkv_block_quantize(qkv_dtype fmt, unsigned char *dst, const float *x,
                                         int64_t blocks)
{
    return (fmt == QKV_DTYPE_Q8_0 ? qkv_q8_0_quantize : qkv_q4_0_quantize)(dst, x, blocks);
}

static inline void qkv_block_dequantize(qkv_dtype fmt, float *dst, const unsigned char *src,
                                        int64_t blocks)
{
    (fmt == QKV_DTYPE_Q8_0 ? qkv_q8_0_dequantize : qkv_q4_0_dequantize)(dst, src, blocks);
}

#endif
