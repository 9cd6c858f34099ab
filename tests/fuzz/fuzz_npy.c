/* The .npy parser's fuzz harness: whatever the bytes, qkv_npy_parse must give
 * either a consistent array or a clean error, never a crash, leak or
 * undefined behaviour. Linked with libFuzzer as fuzz_npy, or with replay.c
 * as fuzz_npy_replay. Broken invariants abort, so they count as crashes. */
#include "qkv.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_zeroed(const qkv_array *a)
{
    static const qkv_array zero;
    return memcmp(a, &zero, sizeof zero) == 0;
}

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* The data of a successful parse: all there, equal to the input's tail
 * (trailing bytes are refused), and convertible as qkv.h promises. */
static void check_array(const qkv_array *a, const uint8_t *data, size_t size)
{
    int64_t n = qkv_array_numel(a);
    size_t nbytes;
    qkv_array f, back;
    if (n < 0 || !a->data || a->ndim > QKV_ARRAY_MAX_DIMS || qkv_dtype_size(a->dtype) == 0)
        abort();
    if ((uint64_t)n > size / qkv_dtype_size(a->dtype))
        abort();
    nbytes = (size_t)n * qkv_dtype_size(a->dtype);
    if (host_is_little_endian() && memcmp(a->data, data + size - nbytes, nbytes) != 0)
        abort();

    /* Every dtype the reader returns converts to f32. */
    if (qkv_array_convert(&f, a, QKV_DTYPE_F32) != QKV_OK || f.ndim != a->ndim ||
        memcmp(f.shape, a->shape, sizeof f.shape) != 0)
        abort();
    if (a->dtype == QKV_DTYPE_F16) {
        /* f16 -> f32 -> f16 is exact, NaNs aside. */
        const uint16_t *h = a->data, *g;
        if (qkv_array_convert(&back, &f, QKV_DTYPE_F16) != QKV_OK)
            abort();
        g = back.data;
        for (int64_t i = 0; i < n; i++)
            if (h[i] != g[i] && !((h[i] & 0x7fff) > 0x7c00 && (g[i] & 0x7fff) > 0x7c00))
                abort();
        qkv_array_free(&back);
    } else if (a->dtype == QKV_DTYPE_F64 || a->dtype == QKV_DTYPE_F32) {
        if (qkv_array_convert(&back, a, QKV_DTYPE_BF16) != QKV_OK)
            abort();
        qkv_array_free(&back);
    } else if (a->dtype == QKV_DTYPE_I64) {
        qkv_status st = qkv_array_convert(&back, a, QKV_DTYPE_I32);
        if (st != QKV_OK && (st != QKV_ERR_OVERFLOW || !is_zeroed(&back)))
            abort();
        qkv_array_free(&back);
    }
    qkv_array_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qkv_array a;
    const char *detail;
    qkv_status st = qkv_npy_parse(data, size, NULL, &a);
    if (st == QKV_OK) {
        check_array(&a, data, size);
        qkv_array_free(&a);
        return 0;
    }
    detail = qkv_error_detail();
    if (!is_zeroed(&a) || strncmp(detail, "<buffer>: ", 10) != 0 || strlen(detail) <= 10)
        abort();
    if (st != QKV_ERR_FORMAT && st != QKV_ERR_OVERFLOW && st != QKV_ERR_OUT_OF_MEMORY)
        abort();
    return 0;
}
