/* Status names, the per-thread error detail, version and dtype facts. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>

#define QKV_STR2(x) #x
#define QKV_STR(x) QKV_STR2(x)

static _Thread_local char detail[512];

qkv_status qkv_fail(qkv_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return st;
}

void qkv_clear_error(void) { detail[0] = '\0'; }

const char *qkv_error_detail(void) { return detail; }

int qkv_version_number(void) { return QKV_VERSION_NUMBER; }

const char *qkv_version_string(void)
{
    return QKV_STR(QKV_VERSION_MAJOR) "." QKV_STR(QKV_VERSION_MINOR) "." QKV_STR(
        QKV_VERSION_PATCH);
}

const char *qkv_status_string(qkv_status status)
{
    switch (status) {
    case QKV_OK: return "ok";
    case QKV_ERR_NULL_ARGUMENT: return "null argument";
    case QKV_ERR_INVALID_ARGUMENT: return "invalid argument";
    case QKV_ERR_SHAPE: return "shape mismatch";
    case QKV_ERR_DTYPE: return "unsupported dtype";
    case QKV_ERR_OVERFLOW: return "size overflow";
    case QKV_ERR_OUT_OF_MEMORY: return "out of memory";
    case QKV_ERR_IO: return "i/o error";
    case QKV_ERR_FORMAT: return "malformed file";
    case QKV_ERR_THREAD: return "thread creation failed";
    case QKV_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}

size_t qkv_dtype_size(qkv_dtype dtype)
{
    switch (dtype) {
    case QKV_DTYPE_F32: return 4;
    case QKV_DTYPE_F64: return 8;
    case QKV_DTYPE_F16: return 2;
    case QKV_DTYPE_BF16: return 2;
    case QKV_DTYPE_BOOL: return 1;
    case QKV_DTYPE_I32: return 4;
    case QKV_DTYPE_I64: return 8;
    case QKV_DTYPE_Q8_0:
    case QKV_DTYPE_Q4_0: return 0; /* blocks, not elements */
    }
    return 0;
}

const char *qkv_dtype_name(qkv_dtype dtype)
{
    switch (dtype) {
    case QKV_DTYPE_F32: return "f32";
    case QKV_DTYPE_F64: return "f64";
    case QKV_DTYPE_F16: return "f16";
    case QKV_DTYPE_BF16: return "bf16";
    case QKV_DTYPE_BOOL: return "bool";
    case QKV_DTYPE_I32: return "i32";
    case QKV_DTYPE_I64: return "i64";
    case QKV_DTYPE_Q8_0: return "q8_0";
    case QKV_DTYPE_Q4_0: return "q4_0";
    }
    return "unknown";
}

qkv_tensor qkv_tensor_contiguous(void *data, qkv_dtype dtype, int64_t n0, int64_t n1,
                                 int64_t n2, int64_t n3)
{
    qkv_tensor t;
    t.data = data;
    t.dtype = dtype;
    t.shape[0] = n0;
    t.shape[1] = n1;
    t.shape[2] = n2;
    t.shape[3] = n3;
    t.stride[3] = 1;
    t.stride[2] = n3;
    if (!qkv_mul_ok(n2, n3, &t.stride[1])) t.stride[1] = INT64_MAX;
    if (t.stride[1] == INT64_MAX || !qkv_mul_ok(n1, t.stride[1], &t.stride[0]))
        t.stride[0] = INT64_MAX;
    return t;
}

qkv_status qkv_struct_read(const void *in, void *out, size_t known, const char *name,
                           const char *type)
{
    memset(out, 0, known);
    if (!in) return QKV_OK;
    size_t given;
    memcpy(&given, in, sizeof given);
    if (given == 0) given = known;
    if (given < known)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "%s.struct_size: %zu, expected 0 or sizeof(%s) (%zu or more)", name, given,
                        type, known);
    /* A newer caller's fields past ours must be unset for us to know what
     * it asks. */
    for (size_t x = known; x < given; x++)
        if (((const unsigned char *)in)[x] != 0)
            return qkv_fail(QKV_ERR_UNSUPPORTED,
                            "%s: a field at byte %zu is set, which this libqkv (%s of %zu "
                            "bytes) does not know", name, x, type, known);
    memcpy(out, in, known);
    memcpy(out, &known, sizeof known);
    return QKV_OK;
}
