/* qkv_array: element counts, freeing, and dtype conversion. Every float
 * conversion rounds once from the exact source value (to nearest even);
 * integer conversions are exact or fail. */
#include "common.h"
#include "half.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int64_t qkv_array_numel(const qkv_array *a)
{
    int64_t n = 1;
    int zero = 0;
    if (!a || a->ndim < 0 || a->ndim > QKV_ARRAY_MAX_DIMS)
        return -1;
    /* Like NumPy, the nonzero dims must multiply without overflow even when
     * another dim is 0, so that every accepted shape has a sane size. */
    for (int i = 0; i < a->ndim; i++) {
        if (a->shape[i] < 0)
            return -1;
        if (a->shape[i] == 0)
            zero = 1;
        else if (!qkv_mul_ok(n, a->shape[i], &n))
            return -1;
    }
    return zero ? 0 : n;
}

void qkv_array_free(qkv_array *a)
{
    if (!a)
        return;
    qkv_free(a->data);
    memset(a, 0, sizeof *a);
}

static int is_float(qkv_dtype t)
{
    return t == QKV_DTYPE_F32 || t == QKV_DTYPE_F64 || t == QKV_DTYPE_F16 ||
           t == QKV_DTYPE_BF16;
}

/* Every float dtype widens to double exactly. */
static double load_float(const void *p, qkv_dtype t, int64_t i)
{
    switch (t) {
    case QKV_DTYPE_F32: return ((const float *)p)[i];
    case QKV_DTYPE_F64: return ((const double *)p)[i];
    case QKV_DTYPE_F16: return qkv_f16_to_f32(((const uint16_t *)p)[i]);
    case QKV_DTYPE_BF16: return qkv_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return 0;
    }
}

static void store_float(void *p, qkv_dtype t, int64_t i, double v)
{
    switch (t) {
    case QKV_DTYPE_F32: ((float *)p)[i] = qkv_narrow(v); break;
    case QKV_DTYPE_F64: ((double *)p)[i] = v; break;
    case QKV_DTYPE_F16: ((uint16_t *)p)[i] = qkv_f64_to_f16(v); break;
    case QKV_DTYPE_BF16: ((uint16_t *)p)[i] = qkv_f64_to_bf16(v); break;
    default: break;
    }
}

/* Booleans load as 0 or 1 whatever their byte. */
static int64_t load_int(const void *p, qkv_dtype t, int64_t i)
{
    switch (t) {
    case QKV_DTYPE_BOOL: return ((const unsigned char *)p)[i] != 0;
    case QKV_DTYPE_I32: return ((const int32_t *)p)[i];
    case QKV_DTYPE_I64: return ((const int64_t *)p)[i];
    default: return 0;
    }
}

/* int64 to float, rounded once. Large values first fold their low 11 bits
 * into one sticky bit, which leaves at most 53 significant bits: exact in
 * double, and far below float's rounding point, so the final narrowing is
 * the only rounding. (A plain (float)v is right on real hardware, but
 * valgrind emulates it through double and rounds twice.) */
static float i64_to_f32(int64_t v)
{
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    if (u >= (uint64_t)1 << 53)
        u = (u & ~(uint64_t)0x7ff) | ((u & 0x7ff) ? 0x800 : 0);
    return v < 0 ? -(float)(double)u : (float)(double)u;
}

/* Checks src and allocates the destination buffer into *out. */
static qkv_status prepare(qkv_array *out, const qkv_array *src, qkv_dtype to,
                          int64_t *numel)
{
    int64_t n, nbytes = 0;
    if (!src)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_array_convert: src is NULL");
    if (src->ndim < 0 || src->ndim > QKV_ARRAY_MAX_DIMS)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "qkv_array_convert: src ndim %d is outside 0..%d", src->ndim,
                        QKV_ARRAY_MAX_DIMS);
    for (int i = 0; i < src->ndim; i++)
        if (src->shape[i] < 0)
            return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                            "qkv_array_convert: src shape[%d] is %" PRId64
                            ", negative",
                            i, src->shape[i]);
    if (qkv_dtype_size(src->dtype) == 0)
        return qkv_fail(QKV_ERR_DTYPE, "qkv_array_convert: src dtype %d is unknown",
                        (int)src->dtype);
    if (qkv_dtype_size(to) == 0)
        return qkv_fail(QKV_ERR_DTYPE, "qkv_array_convert: target dtype %d is unknown",
                        (int)to);
    if (is_float(src->dtype) && !is_float(to))
        return qkv_fail(QKV_ERR_DTYPE,
                        "qkv_array_convert: cannot convert %s to %s: float to "
                        "integer or bool is not supported",
                        qkv_dtype_name(src->dtype), qkv_dtype_name(to));
    if (!is_float(src->dtype) && is_float(to) && to != QKV_DTYPE_F32 &&
        to != QKV_DTYPE_F64)
        return qkv_fail(QKV_ERR_DTYPE,
                        "qkv_array_convert: cannot convert %s to %s: integers and "
                        "bool convert only to f32 and f64",
                        qkv_dtype_name(src->dtype), qkv_dtype_name(to));
    n = qkv_array_numel(src);
    if (n < 0 || !qkv_mul_ok(n, (int64_t)qkv_dtype_size(to), &nbytes) ||
        (uint64_t)nbytes > SIZE_MAX)
        return qkv_fail(QKV_ERR_OVERFLOW,
                        "qkv_array_convert: src has too many elements for %s",
                        qkv_dtype_name(to));
    if (n > 0 && !src->data)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT,
                        "qkv_array_convert: src data is NULL with %" PRId64
                        " elements",
                        n);
    /* One byte at least, so that a successful result always has data. */
    out->data = qkv_alloc(nbytes ? (size_t)nbytes : 1);
    if (!out->data)
        return qkv_fail(QKV_ERR_OUT_OF_MEMORY,
                        "qkv_array_convert: cannot allocate %" PRId64 " bytes", nbytes);
    out->dtype = to;
    out->ndim = src->ndim;
    memcpy(out->shape, src->shape, (size_t)src->ndim * sizeof src->shape[0]);
    *numel = n;
    return QKV_OK;
}

static qkv_status convert(qkv_array *out, const qkv_array *src, qkv_dtype to)
{
    int64_t n = 0;
    qkv_status st = prepare(out, src, to, &n);
    const void *s;
    void *d;
    qkv_dtype from;
    if (st != QKV_OK)
        return st;
    s = src->data;
    d = out->data;
    from = src->dtype;
    if (from == to) {
        if (n > 0)
            memcpy(d, s, (size_t)n * qkv_dtype_size(to));
        return QKV_OK;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t v;
        if (is_float(from)) {
            store_float(d, to, i, load_float(s, from, i));
            continue;
        }
        v = load_int(s, from, i);
        switch (to) {
        case QKV_DTYPE_F32: ((float *)d)[i] = i64_to_f32(v); break;
        case QKV_DTYPE_F64: ((double *)d)[i] = (double)v; break;
        case QKV_DTYPE_BOOL: ((unsigned char *)d)[i] = v != 0; break;
        case QKV_DTYPE_I64: ((int64_t *)d)[i] = v; break;
        case QKV_DTYPE_I32:
            if (v < INT32_MIN || v > INT32_MAX)
                return qkv_fail(QKV_ERR_OVERFLOW,
                                "qkv_array_convert: element %" PRId64 " = %" PRId64
                                " does not fit in i32",
                                i, v);
            ((int32_t *)d)[i] = (int32_t)v;
            break;
        default: break; /* excluded by prepare() */
        }
    }
    return QKV_OK;
}

qkv_status qkv_array_convert(qkv_array *dst, const qkv_array *src, qkv_dtype to)
{
    qkv_array out;
    qkv_status st;
    qkv_clear_error();
    if (!dst)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_array_convert: dst is NULL");
    /* Build into a local so that dst may alias src. */
    memset(&out, 0, sizeof out);
    st = convert(&out, src, to);
    if (st != QKV_OK)
        qkv_array_free(&out);
    *dst = out;
    return st;
}

qkv_status qkv_array_as_tensor(const qkv_array *a, qkv_tensor *out)
{
    qkv_clear_error();
    if (!out) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "out: NULL");
    memset(out, 0, sizeof *out);
    if (!a) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "a: NULL array");
    if (a->ndim < 0 || a->ndim > 4)
        return qkv_fail(QKV_ERR_SHAPE, "a: rank %d, a tensor view has 0 to 4 dims", a->ndim);
    int64_t s[4] = {1, 1, 1, 1};
    for (int d = 0; d < a->ndim; d++) {
        if (a->shape[d] < 0)
            return qkv_fail(QKV_ERR_SHAPE, "a: dim %d is negative (%lld)", d,
                            (long long)a->shape[d]);
        s[4 - a->ndim + d] = a->shape[d];
    }
    const qkv_tensor t = qkv_tensor_contiguous(a->data, a->dtype, s[0], s[1], s[2], s[3]);
    for (int d = 0; d < 4; d++)
        if (t.stride[d] == INT64_MAX)
            return qkv_fail(QKV_ERR_OVERFLOW, "a: strides of shape (%lld, %lld, %lld, %lld) "
                            "overflow int64", (long long)s[0], (long long)s[1], (long long)s[2],
                            (long long)s[3]);
    *out = t;
    return QKV_OK;
}
