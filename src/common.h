/* Internal helpers shared by every part of libqkv: error reporting and
 * overflow-checked size arithmetic. Not installed; the public API is qkv.h. */
#ifndef QKV_COMMON_H
#define QKV_COMMON_H

#include "half.h"
#include "qkv.h"
#include "quant.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define QKV_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define QKV_PRINTF(f, a)
#endif

/* Records a printf-style detail for the calling thread and returns st, so
 * that error paths read `return qkv_fail(QKV_ERR_SHAPE, "K: ...", ...);`. */
qkv_status qkv_fail(qkv_status st, const char *fmt, ...) QKV_PRINTF(2, 3);

/* The library's one way to pass an error up: evaluate a call that returns
 * a qkv_status and return its status from the enclosing function unless
 * it is QKV_OK (the detail is the callee's). Where something must be freed
 * on the way out, the code instead chains `if (st == QKV_OK) st = ...;`
 * and frees once at the end. */
#define QKV_TRY(call)                                                                        \
    do {                                                                                     \
        const qkv_status qkv_try_st_ = (call);                                               \
        if (qkv_try_st_ != QKV_OK) return qkv_try_st_;                                       \
    } while (0)

/* isa with QKV_ISA_AUTO resolved (src/isa.c): a set this build and CPU run,
 * or QKV_ERR_UNSUPPORTED / QKV_ERR_INVALID_ARGUMENT with a detail naming
 * "isa" (or "QKV_ISA" for an environment value that names nothing
 * runnable). */
qkv_status qkv_isa_resolve(qkv_isa isa, qkv_isa *out);

/* A caller's versioned struct (one that begins with size_t struct_size)
 * as this library's, `known` bytes, into out: NULL gives the defaults
 * (zeros); struct_size 0 means ours; a smaller size is refused, a larger
 * one taken when the bytes past ours are zero. `name` names the argument
 * in the details ("opts"), `type` the struct ("qkv_attention_options"). */
qkv_status qkv_struct_read(const void *in, void *out, size_t known, const char *name,
                           const char *type);

/* qkv_struct_read for the attention's options (attention.c). */
qkv_status qkv_options_read(const qkv_attention_options *opts, qkv_attention_options *out);

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

/* The bytes [lo, hi) a call reaches through one argument; lo == hi when it
 * reaches none (absent or empty). Overlap between arguments is decided on
 * these ranges, in O(1) per pair. A strided view may say more: with
 * period > 0 it reaches only blocks of `block` bytes that start at lo plus
 * multiples of `period` (a (B, L, 3, H, E) buffer's dQ, dK and dV, say),
 * so two such views with one period interleave without sharing a byte
 * when their blocks fall in each other's gaps; otherwise (period 0) every
 * byte of the range counts. */
typedef struct qkv_byte_range {
    const char *name;
    uintptr_t lo, hi;
    uintptr_t block, period;
} qkv_byte_range;

/* Do a and b share a byte? Both non-empty. */
static inline int qkv_ranges_meet(const qkv_byte_range *a, const qkv_byte_range *b)
{
    if (!(a->lo < b->hi && b->lo < a->hi)) return 0;
    if (!a->period || a->period != b->period) return 1;
    /* a's blocks start at a->lo + m P, b's at b->lo + m' P: b's first
     * block lies d past one of a's, and so do all its blocks. */
    const uintptr_t lo = a->lo < b->lo ? a->lo : b->lo;
    const uintptr_t d = a->lo < b->lo ? (b->lo - lo) % a->period : (a->lo - lo) % a->period;
    const uintptr_t first = a->lo < b->lo ? a->block : b->block; /* the block d is measured from */
    const uintptr_t second = a->lo < b->lo ? b->block : a->block;
    return !(d >= first && d + second <= a->period);
}

/* n elements of es bytes from p; empty for a NULL p or n <= 0. A range
 * that would run past the address space ends at its top instead of
 * wrapping, so that it still overlaps what lies above p. */
static inline qkv_byte_range qkv_range(const char *name, const void *p, int64_t n, size_t es)
{
    qkv_byte_range r = {name, 0, 0, 0, 0};
    if (!p || n <= 0) return r;
    r.lo = (uintptr_t)p;
    const uintptr_t room = (UINTPTR_MAX - r.lo) / es;
    r.hi = (uint64_t)n > room ? UINTPTR_MAX : r.lo + (uintptr_t)n * es;
    return r;
}

/* Outputs must not share a byte with each other or with any input (the
 * library writes outputs while it still reads inputs); the detail names
 * the first pair that does, output first. Inputs may share bytes. */
static inline qkv_status qkv_check_disjoint(const qkv_byte_range *out, int nout,
                                            const qkv_byte_range *in, int nin)
{
    for (int a = 0; a < nout; a++) {
        if (out[a].lo == out[a].hi) continue;
        for (int b = a + 1; b < nout + nin; b++) {
            const qkv_byte_range *o = b < nout ? &out[b] : &in[b - nout];
            if (o->lo == o->hi) continue;
            if (qkv_ranges_meet(&out[a], o))
                return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                                "%s and %s overlap in memory; an output may share no byte "
                                "with another output or an input", out[a].name, o->name);
        }
    }
    return QKV_OK;
}

/* A data pointer must be aligned to its element size (qkv.h's
 * conventions): the kernels load whole elements, and a misaligned load of
 * a float is undefined behaviour in C. */
static inline qkv_status qkv_check_aligned(const char *name, const void *p, size_t es)
{
    if ((uintptr_t)p % es != 0)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "%s: data pointer %p is not aligned to its %zu-byte elements", name, p,
                        es);
    return QKV_OK;
}

/* Both checks on the buffers of a call whose elements are es bytes: every
 * non-empty one aligned, then no output sharing a byte with another
 * output or an input. */
static inline qkv_status qkv_check_buffers(const qkv_byte_range *out, int nout,
                                           const qkv_byte_range *in, int nin, size_t es)
{
    for (int i = 0; i < nout + nin; i++) {
        const qkv_byte_range *r = i < nout ? &out[i] : &in[i - nout];
        if (r->lo == r->hi) continue;
        const qkv_status st = qkv_check_aligned(r->name, (const void *)r->lo, es);
        if (st != QKV_OK) return st;
    }
    return qkv_check_disjoint(out, nout, in, nin);
}

/* Files are mapped where POSIX mmap exists (qkv_npy_map, qkv_npy_create);
 * elsewhere they are read and written. */
#if defined(__unix__) || defined(__APPLE__)
#define QKV_HAVE_MMAP 1
#endif

/* Records the data pointer of an array that lives in the mapping
 * [base, base + len), so that qkv_free unmaps it (memory.c); 0 when the
 * record cannot be allocated. */
int qkv_mapping_add(void *data, void *base, size_t len);

/* A double as float, rounded to nearest as a plain conversion rounds, but
 * defined past float's range too: there the conversion is undefined
 * behaviour in C (UBSan's float-cast-overflow), here it is what IEEE
 * rounding gives, FLT_MAX up to the midpoint towards 2^128 and the
 * infinity of the sign from it on. NaN stays NaN. */
static inline float qkv_narrow(double x)
{
    const double inf_from = 0x1.ffffffp+127; /* FLT_MAX + half its ulp */
    if (x >= inf_from) return INFINITY;
    if (x <= -inf_from) return -INFINITY;
    if (x > FLT_MAX) return FLT_MAX;
    if (x < -FLT_MAX) return -FLT_MAX;
    return (float)x;
}

/* Carving a workspace: each piece starts 64 bytes from the last at least
 * (so threads' pieces share no cache line) and with base NULL nothing is
 * written, only counted: one function lays a workspace out for both
 * uses, sizing it (base NULL) and cutting it (base the block). A size
 * past SIZE_MAX saturates there, which no allocation can give. */
typedef struct qkv_carver {
    char *base; /* NULL: count only */
    size_t used;
} qkv_carver;

static inline void *qkv_carve(qkv_carver *c, size_t bytes)
{
    void *at = c->base ? c->base + c->used : NULL;
    const size_t rounded = bytes > SIZE_MAX - 63 ? SIZE_MAX : (bytes + 63) / 64 * 64;
    c->used = rounded > SIZE_MAX - c->used ? SIZE_MAX : c->used + rounded;
    return at;
}

/* The float dtypes attention, GEMM and the layer's weights take. */
static inline int qkv_float_dtype(qkv_dtype d)
{
    return d == QKV_DTYPE_F32 || d == QKV_DTYPE_F16 || d == QKV_DTYPE_BF16;
}

/* Value i (counted in values) of a block-format array (quant.h),
 * dequantized. */
static inline float qkv_block_get(const void *p, qkv_dtype dt, int64_t i)
{
    const unsigned char *b = (const unsigned char *)p + i / QKV_QBLOCK * qkv_block_bytes(dt);
    const int j = (int)(i % QKV_QBLOCK);
    const float d = qkv_block_scale(b);
    if (dt == QKV_DTYPE_Q8_0) return (float)(int8_t)b[2 + j] * d;
    const int n = j < QKV_QBLOCK / 2 ? b[2 + j] & 0x0f : b[2 + j - QKV_QBLOCK / 2] >> 4;
    return (float)(n - 8) * d;
}

/* Element i of an array of one of those dtypes (or a block format),
 * widened to float (exactly), and v stored there, rounded to nearest
 * even for a 16-bit one (never a block format: those are only read). */
static inline float qkv_elem_get(const void *p, qkv_dtype dt, int64_t i)
{
    switch (dt) {
    case QKV_DTYPE_F16: return qkv_f16_to_f32(((const uint16_t *)p)[i]);
    case QKV_DTYPE_BF16: return qkv_bf16_to_f32(((const uint16_t *)p)[i]);
    case QKV_DTYPE_Q8_0:
    case QKV_DTYPE_Q4_0: return qkv_block_get(p, dt, i);
    default: return ((const float *)p)[i];
    }
}

static inline void qkv_elem_put(void *p, qkv_dtype dt, int64_t i, float v)
{
    switch (dt) {
    case QKV_DTYPE_F16: ((uint16_t *)p)[i] = qkv_f32_to_f16(v); break;
    case QKV_DTYPE_BF16: ((uint16_t *)p)[i] = qkv_f32_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

#endif
