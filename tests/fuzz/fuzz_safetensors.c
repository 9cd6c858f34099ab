/* The .safetensors parser's fuzz harness: whatever the bytes,
 * qkv_safetensors_parse must give either a table whose every tensor can be
 * looked up and copied out, or a clean error; never a crash, leak or
 * undefined behaviour. Linked with libFuzzer as fuzz_safetensors, or with
 * replay.c as fuzz_safetensors_replay. Broken invariants abort. */
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

static int same_shape(const qkv_array *a, const qkv_array *b)
{
    return a->ndim == b->ndim &&
           memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]) == 0;
}

/* Every tensor of a successful parse: named, found under its name, and
 * copied out as F32 (every dtype qkv has converts to F32) and as itself. */
static void check_table(const qkv_safetensors *st, const uint8_t *data, size_t size)
{
    int64_t count = qkv_safetensors_count(st), total = 0;
    uint64_t hlen = 0;
    if (count < 0 || qkv_safetensors_name(st, count) || qkv_safetensors_name(st, -1))
        abort();
    if (size < 8)
        abort();
    for (int k = 7; k >= 0; k--)
        hlen = hlen << 8 | data[k];
    if (hlen > size - 8)
        abort();
    for (int64_t i = 0; i < count; i++) {
        const char *name = qkv_safetensors_name(st, i);
        qkv_array info, f, same;
        qkv_status s;
        int64_t n;
        if (!name || qkv_safetensors_find(st, name, &info) != 1 || info.data)
            abort();
        if (info.ndim < 0 || info.ndim > QKV_ARRAY_MAX_DIMS)
            abort();
        s = qkv_safetensors_get(st, name, QKV_DTYPE_F32, &f);
        if ((int)info.dtype == -1) {
            if (s != QKV_ERR_DTYPE || !is_zeroed(&f))
                abort();
            continue;
        }
        if (s != QKV_OK || !f.data || f.dtype != QKV_DTYPE_F32 || !same_shape(&f, &info))
            abort();
        qkv_array_free(&f);
        /* As stored: its bytes lie within the data section. */
        if (qkv_safetensors_get(st, name, info.dtype, &same) != QKV_OK || !same.data ||
            !same_shape(&same, &info))
            abort();
        n = qkv_array_numel(&same);
        if (n < 0 || (uint64_t)n > size / qkv_dtype_size(info.dtype))
            abort();
        total += n * (int64_t)qkv_dtype_size(info.dtype);
        if ((uint64_t)total > size - 8 - hlen)
            abort();
        qkv_array_free(&same);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qkv_safetensors *st = (qkv_safetensors *)&st;
    const char *detail;
    qkv_status s = qkv_safetensors_parse(data, size, NULL, &st);
    if (s == QKV_OK) {
        if (!st)
            abort();
        check_table(st, data, size);
        qkv_safetensors_free(st);
        return 0;
    }
    detail = qkv_error_detail();
    if (st || strncmp(detail, "<buffer>: ", 10) != 0 || strlen(detail) <= 10)
        abort();
    if (s != QKV_ERR_FORMAT && s != QKV_ERR_OVERFLOW && s != QKV_ERR_OUT_OF_MEMORY)
        abort();
    return 0;
}
