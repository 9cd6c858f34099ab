/* Internal helpers shared by every part of libqkv: error reporting and
 * overflow-checked size arithmetic. Not installed; the public API is qkv.h. */
#ifndef QKV_COMMON_H
#define QKV_COMMON_H

#include "qkv.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define QKV_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define QKV_PRINTF(f, a)
#endif

/* Records a printf-style detail for the calling thread and returns st, so
 * that error paths read `return qkv_fail(QKV_ERR_SHAPE, "K: ...", ...);`. */
qkv_status qkv_fail(qkv_status st, const char *fmt, ...) QKV_PRINTF(2, 3);

/* Clears the calling thread's detail; every public entry point calls it. */
void qkv_clear_error(void);

/* a * b and a + b into *r for non-negative operands; 0 on overflow. */
static inline int qkv_mul_ok(int64_t a, int64_t b, int64_t *r)
{
    return !__builtin_mul_overflow(a, b, r);
}
static inline int qkv_add_ok(int64_t a, int64_t b, int64_t *r)
{
    return !__builtin_add_overflow(a, b, r);
}

/* A double as float, past float's range as the infinity of its sign (a
 * plain conversion of such a value is undefined behaviour in C; UBSan's
 * float-cast-overflow reports it). NaN stays NaN. */
static inline float qkv_narrow(double x)
{
    if (x > FLT_MAX) return INFINITY;
    if (x < -FLT_MAX) return -INFINITY;
    return (float)x;
}

#endif
