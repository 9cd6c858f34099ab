/*
 * qkv.h — the one public header of libqkv: scaled dot-product attention in C.
 *
 * What it computes (DESIGN.md §1 is the full contract). Named dimensions:
 *
 *   B        batch
 *   H, Hkv   query heads, key/value heads; H % Hkv == 0 and query head h reads
 *            kv head h / (H / Hkv)  (MHA when Hkv == H, GQA, MQA when Hkv == 1)
 *   Lq, Lk   query length, key/value length
 *   E, Ev    query/key head dim, value head dim (may differ)
 *
 *   Q (B, H, Lq, E)   K (B, Hkv, Lk, E)   V (B, Hkv, Lk, Ev)   O (B, H, Lq, Ev)
 *
 * For query row i of head h, with scale = 1/sqrt(E) unless given:
 *   s_j = scale * <q_i, k_j>;  s_j = c * tanh(s_j / c) if a softcap c > 0;
 *   s_j += mask[i, j] for a float mask;  s_j = -inf where a bool mask is false,
 *   where causal / the sliding window / the padding length forbid j;
 *   p_j = exp(s_j - m) / sum_j' exp(s_j' - m),  m = max_j s_j;
 *   lse_i = m + log sum_j exp(s_j - m);  o_i = sum_j p_j v_j.
 * A row with no allowed position gives o_i = 0, p = 0, lse = -inf, never NaN.
 * NaN in an input reaches only the rows that read it.
 *
 * Conventions used throughout:
 *   - Every function that can fail returns a qkv_status. On failure,
 *     qkv_error_detail() returns a one-line message for the calling thread
 *     that names the argument and what was expected.
 *   - The library never prints, never exits and never aborts on bad input.
 *   - Sizes and indices are int64_t; strides are counted in elements, not
 *     bytes, and may be negative; zero (broadcast) only for inputs. Data
 *     pointers must be aligned to their element size (a misaligned one is
 *     QKV_ERR_INVALID_ARGUMENT). A view must lie inside the caller's
 *     buffer: the library cannot know a buffer's size, so it cannot check.
 *   - The caller owns every buffer it passes in. Functions that allocate say
 *     so, and name the function that frees.
 *   - Thread safety: every function may be called from several threads at
 *     once on different outputs. Inputs may be shared between threads.
 */
#ifndef QKV_H
#define QKV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the functions libqkv exports: the library is built with hidden
 * visibility, so the shared object exports what this header declares and
 * nothing else. */
#if defined(__GNUC__) || defined(__clang__)
#define QKV_API __attribute__((visibility("default")))
#else
#define QKV_API
#endif

/* ---------------------------------------------------------------- version */

#define QKV_VERSION_MAJOR 0
#define QKV_VERSION_MINOR 1
#define QKV_VERSION_PATCH 0
/* One number for compile-time comparisons: major*10000 + minor*100 + patch. */
#define QKV_VERSION_NUMBER \
    (QKV_VERSION_MAJOR * 10000 + QKV_VERSION_MINOR * 100 + QKV_VERSION_PATCH)

/* The version of the library actually linked, as QKV_VERSION_NUMBER. */
QKV_API int qkv_version_number(void);
/* The same as "MAJOR.MINOR.PATCH"; a static string, never freed. */
QKV_API const char *qkv_version_string(void);

/* ----------------------------------------------------------------- errors */

typedef enum qkv_status {
    QKV_OK = 0,
    QKV_ERR_NULL_ARGUMENT,  /* a required pointer was NULL */
    QKV_ERR_INVALID_ARGUMENT, /* a value out of its range (scale NaN, ...) */
    QKV_ERR_SHAPE,          /* shapes do not agree with each other */
    QKV_ERR_DTYPE,          /* an element type this function does not take */
    QKV_ERR_OVERFLOW,       /* a size or offset would not fit in int64_t */
    QKV_ERR_OUT_OF_MEMORY,  /* an allocation failed */
    QKV_ERR_IO,             /* a file could not be opened, read or written */
    QKV_ERR_FORMAT,         /* a file's contents are malformed or unsupported */
    QKV_ERR_THREAD,         /* a worker thread could not be started */
    QKV_ERR_UNSUPPORTED     /* this build or this CPU cannot do what was asked */
} qkv_status;

/* A short fixed name for a status ("shape mismatch"); static, never NULL,
 * "unknown status" for values outside the enum. */
QKV_API const char *qkv_status_string(qkv_status status);

/* The detail message of the last failing call made by the calling thread,
 * e.g. "K: head dim 32 differs from Q head dim 64". Empty string when the
 * thread has seen no failure. Valid until the thread's next qkv call. */
QKV_API const char *qkv_error_detail(void);

/* ---------------------------------------------------------------- tensors */

typedef enum qkv_dtype {
    QKV_DTYPE_F32 = 0, /* IEEE binary32 */
    QKV_DTYPE_F64,     /* IEEE binary64 */
    QKV_DTYPE_F16,     /* IEEE binary16 */
    QKV_DTYPE_BF16,    /* bfloat16 */
    QKV_DTYPE_BOOL,    /* one byte, 0 = false, anything else = true */
    QKV_DTYPE_I32,
    QKV_DTYPE_I64
} qkv_dtype;

/* Size of one element in bytes; 0 for a value outside the enum. */
QKV_API size_t qkv_dtype_size(qkv_dtype dtype);
/* Lower-case name ("f32", "bool"); "unknown" outside the enum. */
QKV_API const char *qkv_dtype_name(qkv_dtype dtype);

/* A strided 4-d view of memory the caller owns. Element (a, b, c, d) lives at
 * (elem *)data + a*stride[0] + b*stride[1] + c*stride[2] + d*stride[3].
 * Strides are in elements. A tensor whose data is NULL is "absent" wherever
 * a function takes an optional tensor. An output may share no byte with
 * another output or with any input, or the call fails with
 * QKV_ERR_INVALID_ARGUMENT and a detail naming both ("O and Q overlap in
 * memory; ..."). The test is O(1): on the address ranges the views reach
 * (lowest to highest element), refined for views that interleave in one
 * buffer: when both have positive strides, contiguous innermost rows and
 * the same row period (dQ, dK, dV packed as (B, L, 3, H, E); O and the
 * weights side by side in each row), they pass if their rows fall in each
 * other's gaps. Other interleavings whose ranges overlap are refused even
 * when no element is shared. Inputs may overlap each other. Within an output,
 * sorted by |stride|, each dim's stride must exceed the span of the
 * smaller dims (so no two indices share an element; layouts that
 * interleave dims some other way are refused). */
typedef struct qkv_tensor {
    void *data;
    qkv_dtype dtype;
    int64_t shape[4];
    int64_t stride[4];
} qkv_tensor;

/* A view of contiguous row-major (C order) memory of shape (n0, n1, n2, n3).
 * When the strides would overflow int64_t they are set to INT64_MAX, so that
 * any function given the view fails with QKV_ERR_OVERFLOW. */
QKV_API qkv_tensor qkv_tensor_contiguous(void *data, qkv_dtype dtype,
                                         int64_t n0, int64_t n1, int64_t n2, int64_t n3);

/* ---------------------------------------------------------- attention */

/* Where the diagonal d_i of query row i lies, for causal masking and the
 * sliding window. */
/* The most worker threads one call uses. */
#define QKV_MAX_THREADS 1024

/* What num_threads = 0 means: the CPUs this process may run on (its
 * affinity mask where the system has one, else the online CPUs), from 1 to
 * QKV_MAX_THREADS. Thread-safe. */
QKV_API int qkv_default_num_threads(void);

typedef enum qkv_align {
    /* d_i = i: row 0 sees key 0 (PyTorch's is_causal=True). */
    QKV_ALIGN_TOP_LEFT = 0,
    /* d_i = i + Lk - Lq: the last query sees the last key, as in
     * FlashAttention's causal and every KV-cache decode step. */
    QKV_ALIGN_BOTTOM_RIGHT
} qkv_align;

typedef enum qkv_impl {
    QKV_IMPL_AUTO = 0,   /* the fastest backend that takes the call: the CPU
                          * backend (tiled, online softmax, SIMD, threads), or
                          * the reference for what the CPU one leaves it: a
                          * scale outside float's normal range, head dims
                          * above 2^20, dmask, a backward whose lse shows an
                          * overflow */
    QKV_IMPL_REFERENCE   /* the reference kernel: plain loops, double accumulation */
} qkv_impl;

/* Instruction sets of the fast path. QKV_ISA_AUTO picks the one named by
 * the environment variable QKV_ISA ("generic", "avx2", "avx512"; read once
 * per process) or else the best the CPU supports. */
typedef enum qkv_isa {
    QKV_ISA_AUTO = 0,
    QKV_ISA_GENERIC, /* plain C, every build and CPU */
    QKV_ISA_AVX2,    /* x86-64 with AVX2 and FMA */
    QKV_ISA_AVX512   /* x86-64 with AVX-512F */
} qkv_isa;

/* "auto", "generic", "avx2", "avx512"; "unknown" outside the enum. */
QKV_API const char *qkv_isa_name(qkv_isa isa);
/* 1 when this build has the set and this CPU runs it (AUTO: always 1). */
QKV_API int qkv_isa_supported(qkv_isa isa);
/* What QKV_ISA_AUTO means in this process, or QKV_ISA_AUTO when the
 * QKV_ISA variable names no set this build and CPU can run (calls then fail
 * with QKV_ERR_UNSUPPORTED and a detail that says so). Thread-safe. */
QKV_API qkv_isa qkv_isa_auto(void);

/* Options for qkv_attention_forward. A zero-initialised struct
 * (qkv_attention_options o = {0};) or a NULL pointer means every default. */
typedef struct qkv_attention_options {
    /* Multiplies <q, k>. 0 means the default 1/sqrt(E). Must be finite;
     * any finite value gives the reference's answer. The fast path
     * computes the scores in float, so a scale outside float's normal
     * range (|scale| > FLT_MAX or < FLT_MIN) sends the call to the
     * reference kernel, and a row whose float arithmetic overflows (a
     * max score of +inf, inf - inf, every open score -inf, or an output
     * that is not finite) while everything it reads is finite is
     * recomputed by the reference in double (lse, stored as float, is
     * then +-inf where it passes float's range); the backward goes to the
     * reference when lse shows such an overflow, or when its gradients
     * come out not finite from finite inputs. */
    double scale;
    /* Softcap c: scores become c * tanh(s / c), applied after scaling and
     * before the mask. 0 means none; otherwise must be finite and > 0. */
    double softcap;
    /* Optional mask; mask.data == NULL means none. dtype QKV_DTYPE_F32 is
     * added to the scores (-INFINITY forbids); QKV_DTYPE_BOOL keeps
     * positions whose byte is nonzero (true = may attend, as in PyTorch).
     * Shape (Bm, Hm, Lqm, Lkm) where each dim is 1 (broadcast) or equal to
     * B, H, Lq, Lk respectively. */
    qkv_tensor mask;
    /* Causal: when nonzero, row i may see keys j <= d_i. */
    int causal;
    /* Where the diagonal d_i lies, for causal and the window; the
     * positions below move it further. */
    qkv_align align;
    /* Sliding window: when use_window is nonzero, row i may see
     * d_i - window_left <= j <= d_i + window_right; a negative bound means
     * unlimited on that side. Combines with causal (both must allow j). */
    int use_window;
    int64_t window_left;
    int64_t window_right;
    /* Optional per-batch key lengths, B entries, each 0..Lk: in batch b the
     * keys j >= kv_lens[b] are padding and never attended. NULL = none.
     * Padding does not move the causal diagonal. */
    const int64_t *kv_lens;
    /* Which implementation computes the result. The fast path stays
     * within a relative L2 error of 1e-5 of the reference on inputs of unit
     * scale. */
    qkv_impl impl;
    /* The fast path's instruction set (ignored by the reference). A set
     * this build or CPU lacks fails with QKV_ERR_UNSUPPORTED. Results are
     * bitwise the same for every thread count with one set; sets differ in
     * rounding. */
    qkv_isa isa;
    /* Worker threads; 0 means one per CPU this process may run on, more than
     * QKV_MAX_THREADS means QKV_MAX_THREADS. The result is bitwise the
     * same whatever the count. Threads are kept in a pool between calls. */
    int num_threads;
    /* Optional progress report for long calls: when not NULL, called on the
     * calling thread with progress_user and the fraction of the work done,
     * rising from 0 to 1, at most about 200 times per call and last with
     * 1.0 once everything is written. It must not call back into the
     * library with the same outputs, and must not fork. */
    void (*progress)(void *user, double done);
    void *progress_user;
    /* Optional positions per batch, B entries each, 0 .. 2^60; NULL means
     * all 0. Query row i of batch b sits at position q_offsets[b] + i and
     * key j at k_offsets[b] + j, so that d_i, the diagonal for causal and
     * the window, is i + q_offsets[b] - k_offsets[b] (plus Lk - Lq for
     * QKV_ALIGN_BOTTOM_RIGHT). For queries that continue a sequence whose
     * earlier keys sit elsewhere: a decode step over a cache of len_b
     * tokens is q_offsets[b] = len_b with the keys at 0 (what
     * qkv_mha_decode does, for every sequence in one call), a block of
     * keys from a ring or a split sets k_offsets to where it starts.
     * Padding (kv_lens) does not move positions. */
    const int64_t *q_offsets;
    const int64_t *k_offsets;
} qkv_attention_options;

/* Forward scaled dot-product attention.
 *
 *   o        out, F32 (B, H, Lq, Ev)
 *   weights  out, optional (NULL or data NULL): F32 (B, H, Lq, Lk), the
 *            softmax weights p; fully masked rows are all 0
 *   lse      out, optional (NULL or data NULL): F32 (B, H, Lq, 1), natural
 *            log-sum-exp of the final scores; -INFINITY for masked rows
 *   q        F32 (B, H, Lq, E)
 *   k        F32 (B, Hkv, Lk, E)
 *   v        F32 (B, Hkv, Lk, Ev)
 *   opts     options, NULL for every default
 *
 * Any dim except E may be 0 (nothing is computed); E >= 1. Lk == 0 makes
 * every row fully masked. Returns QKV_OK or an error with nothing promised
 * about the outputs' contents. The fast path takes head dims up to 2^20
 * (beyond, QKV_ERR_UNSUPPORTED: use the reference). Scratch memory is
 * allocated per call and freed before returning: the fast path takes
 * O(threads x tile), a tile being max(64, H/Hkv) rows x (E + Ev + 128)
 * floats — a few hundred KiB for common shapes — never anything
 * proportional to Lq x Lk (a call with at most 1024 query rows in all,
 * B x H x Lq, and Lk >= 2048 splits the keys into chunks and keeps their
 * partial results: at most 2048 tiles of them, each the tile's rows x Ev
 * floats); the reference O(threads x (Lk + Ev)). Thread-safe. */
QKV_API qkv_status qkv_attention_forward(const qkv_tensor *o, const qkv_tensor *weights,
                                         const qkv_tensor *lse, const qkv_tensor *q,
                                         const qkv_tensor *k, const qkv_tensor *v,
                                         const qkv_attention_options *opts);

/* Backward of qkv_attention_forward: the gradients of a loss L with
 * respect to Q, K, V (and a float mask), given dO = dL/dO.
 *
 *   dq     out, F32 (B, H, Lq, E)
 *   dk     out, F32 (B, Hkv, Lk, E): summed over the query heads of each
 *          kv head's group (GQA)
 *   dv     out, F32 (B, Hkv, Lk, Ev), summed likewise
 *   dmask  out, optional (NULL or data NULL): F32 with the float mask's own
 *          shape (opts->mask must be an F32 mask): dL/dmask, summed over
 *          the dims the mask was broadcast along
 *   dout   F32 (B, H, Lq, Ev): dL/dO
 *   q, k, v, opts   exactly as given to the forward
 *   o, lse  the forward's results: O (B, H, Lq, Ev) and lse (B, H, Lq, 1)
 *
 * With D_i = <dO_i, O_i>: dV = P^T dO, dP = dO V^T, dS = P o (dP - D),
 * through the softcap dU = dS o (1 - tanh^2(u / c)), dQ = scale dU K,
 * dK = scale dU^T Q, dmask = dS. Forbidden keys and fully masked rows get
 * zero gradients, never NaN. QKV_IMPL_AUTO runs the fast backward: it
 * recomputes the weights tile by tile from o and lse (which must be what
 * the forward returned for these inputs and options) with the forward's
 * SIMD kernels, in one pass over tiles of keys: each tile owns its dK and
 * dV, and the tiles of a kv head add their shares of dQ to each block of
 * queries in the order of their keys (a tile waits for the one before), so
 * dQ's sums keep one order; O(threads x tiles) scratch plus B x H x Lq
 * floats, and B x H x Lq x E more when dq's last dim is strided; within
 * 1e-5 of the reference. A call
 * that asks for dmask, or QKV_IMPL_REFERENCE, runs the reference backward:
 * it recomputes P and O from Q, K, V in double (o and lse are checked for
 * their shapes only), works on B x Hkv groups in parallel (one thread when
 * dmask is asked for, so that its sums keep one order) and takes
 * O(threads x Lk x (E + Ev)) doubles of scratch. Either way results are
 * bitwise the same for any thread count. Thread-safe. */
QKV_API qkv_status qkv_attention_backward(const qkv_tensor *dq, const qkv_tensor *dk,
                                          const qkv_tensor *dv, const qkv_tensor *dmask,
                                          const qkv_tensor *dout, const qkv_tensor *q,
                                          const qkv_tensor *k, const qkv_tensor *v,
                                          const qkv_tensor *o, const qkv_tensor *lse,
                                          const qkv_attention_options *opts);

/* Merges partial results of the same queries over two disjoint sets of
 * keys into the result over their union: what a split of the keys (ring
 * attention's blocks, a cascade's shared prefix and own suffix, keys
 * spread over devices) computes in parts.
 *
 *   o, lse     out, F32 (B, H, Lq, Ev) and (B, H, Lq, 1)
 *   o1, lse1   F32, the forward's O and lse over the first set of keys
 *   o2, lse2   F32, the same over the second set
 *
 * Row by row, in double: m = max(lse1, lse2), w_k = exp(lse_k - m),
 * o = (w1 o1 + w2 o2) / (w1 + w2), lse = m + log(w1 + w2), narrowed to
 * float. A part whose lse is -inf (its keys were all masked) has weight
 * 0; both -inf gives o = 0, lse = -inf, as a fully masked row does. NaN in
 * a part's lse or O reaches that row only. Merging the parts of a split
 * in a fixed order is bitwise reproducible, and equals one call over all
 * the keys to rounding (within 1e-6 relative L2 on inputs of unit scale).
 * Every view may be strided; o and lse may be exactly o1 and lse1 (the
 * same data, shape and strides: merging into an accumulator) but must
 * otherwise share no byte with the inputs or each other
 * (QKV_ERR_INVALID_ARGUMENT). Shapes that disagree are QKV_ERR_SHAPE.
 * No scratch. Thread-safe. */
QKV_API qkv_status qkv_attention_merge(const qkv_tensor *o, const qkv_tensor *lse,
                                       const qkv_tensor *o1, const qkv_tensor *lse1,
                                       const qkv_tensor *o2, const qkv_tensor *lse2);

/* ------------------------------------------------------------------ memory */

/* Memory for large tensors, uninitialised: 64-byte aligned; a block of 2 MiB
 * or more is 2 MiB-aligned and, on Linux, marked for transparent huge pages
 * (madvise MADV_HUGEPAGE), which the kernel grants when its THP policy is
 * "madvise" or "always". Streaming K and V from huge pages is faster
 * (decode; BENCHMARKS.md), so this is where a caller's KV tensors are best
 * kept; the library's own large buffers (KV cache, layer parameters, .npy
 * data) come from it. NULL when bytes is 0 (QKV_ERR_INVALID_ARGUMENT's
 * detail) or the allocation fails (QKV_ERR_OUT_OF_MEMORY's). Free with
 * qkv_free, or free(). */
QKV_API void *qkv_alloc(size_t bytes);

/* Frees a block from qkv_alloc; NULL is a no-op. */
QKV_API void qkv_free(void *p);

/* ------------------------------------------------------------------ arrays */

/* The largest rank a qkv_array holds (NumPy's own limit is 64). */
#define QKV_ARRAY_MAX_DIMS 32

/* A contiguous row-major n-d array owned by the library (from qkv_npy_read
 * or qkv_array_convert) or by the caller (when handed to qkv_npy_write).
 * ndim may be 0 (a scalar, one element). */
typedef struct qkv_array {
    void *data;
    qkv_dtype dtype;
    int ndim;
    int64_t shape[QKV_ARRAY_MAX_DIMS];
} qkv_array;

/* Number of elements (product of shape; 1 for ndim 0). -1 when ndim is out
 * of range, a dim is negative or the product of the nonzero dims overflows.
 * Never fails otherwise and leaves the error detail alone. */
QKV_API int64_t qkv_array_numel(const qkv_array *a);

/* Frees the data of an array the library allocated and zeroes the struct.
 * NULL, or an array already freed or zeroed, is a no-op. Leaves the error
 * detail alone, so a caller may free before printing it. */
QKV_API void qkv_array_free(qkv_array *a);

/* Converts src to dtype `to` into a new array *dst (free with
 * qkv_array_free). Supported: any of F32, F64, F16, BF16 to any of them
 * (rounding to nearest even); BOOL, I32, I64 to F32/F64 and among each other
 * (I64 to I32 fails with QKV_ERR_OVERFLOW when a value does not fit). On
 * failure *dst is zeroed. */
QKV_API qkv_status qkv_array_convert(qkv_array *dst, const qkv_array *src, qkv_dtype to);

/* A view of a (rank 0 to 4) as the qkv_tensor the attention calls take:
 * its dims with leading 1s, so (L, E) becomes (1, 1, L, E) and (B, H, L,
 * E) stays; contiguous strides; the data not copied (the view lives as
 * long as a's data). The bridge between arrays read from files (or the
 * layer's plain row-major buffers, described by a qkv_array) and the
 * attention's strided views.
 *
 *   a    the array; ndim 0..4
 *   out  the view; zeroed (data NULL) on failure
 *
 * @return QKV_OK; QKV_ERR_NULL_ARGUMENT for a or out NULL;
 *         QKV_ERR_SHAPE for a rank above 4, a negative rank or dim
 *         (the detail says which); QKV_ERR_OVERFLOW when the strides do
 *         not fit int64_t. Thread-safe. */
QKV_API qkv_status qkv_array_as_tensor(const qkv_array *a, qkv_tensor *out);

/* ------------------------------------------------------------------- .npy */

/* Reads a NumPy .npy file (format versions 1.0, 2.0 and 3.0) into *out,
 * which the caller frees with qkv_array_free.
 * Accepted: C order, little-endian (or byte-order-free) float32, float64,
 * float16, bool, int32, int64; rank 0..QKV_ARRAY_MAX_DIMS. Anything else —
 * Fortran order, big-endian, another dtype, a header that is not the dict
 * NumPy writes or is longer than 1 MiB (the dict fits in well under 1 KiB;
 * NumPy's np.load stops at 10000 bytes), a data size that differs from the
 * header's shape, a size that overflows (even when another dim is 0) —
 * fails with QKV_ERR_FORMAT
 * (or QKV_ERR_OVERFLOW) and a detail that starts with the file name. A pipe
 * is read no further than the header promises, plus one byte: one more
 * byte fails ("trailing bytes after the data"). On success out->data is
 * never NULL, even for zero elements; on failure *out
 * is zeroed. */
QKV_API qkv_status qkv_npy_read(const char *path, qkv_array *out);

/* The same, from the len bytes at buf; `name` is used in error details
 * (may be NULL). */
QKV_API qkv_status qkv_npy_parse(const void *buf, size_t len, const char *name,
                                 qkv_array *out);

/* Writes a as a .npy file, byte for byte as numpy.save would: version 1.0
 * (a rank <= 32 header always fits), little-endian, C order. BF16 has no
 * .npy dtype and fails with QKV_ERR_DTYPE. Creates or truncates path. On failure the file may
 * be partly written; callers that need atomic output write to a temporary
 * name and rename. */
QKV_API qkv_status qkv_npy_write(const char *path, const qkv_array *a);

/* Reads a .npy file as qkv_npy_read does (the same checks, the same
 * result), but without copying its data where it can: a regular file on a
 * little-endian host whose data is aligned for its dtype is mapped into
 * memory (private, copy-on-write: out->data may be written, the file never
 * changes) and its pages are taken from the page cache as they are, where
 * reading would zero fresh memory and copy every byte into it. Anything
 * else (a pipe, an empty array, a system without mmap) is read. Free with
 * qkv_array_free or qkv_free, never free(). Mind what every mapping
 * implies: if the file is truncated while mapped, touching the pages it
 * lost raises SIGBUS (the qkv tool catches it and says so); a file
 * rewritten in place meanwhile shows its new bytes. Thread-safe. */
QKV_API qkv_status qkv_npy_map(const char *path, qkv_array *out);

/* Creates (or truncates) path as a .npy file of this dtype and shape,
 * byte for byte what qkv_npy_write would write, and gives its data to fill
 * in place: out->data (zeroed) is a shared mapping of the file's data, so
 * what the caller writes there is the file's content, with no copy. The
 * disk space is reserved first, so a full disk fails here (QKV_ERR_IO),
 * never later. qkv_array_free (or qkv_free, never free()) unmaps it; the
 * system writes the pages back in its own time, as it does after write().
 * An array with no elements is written at once (out->data is then a
 * one-byte buffer). Fails with QKV_ERR_UNSUPPORTED where files cannot be
 * mapped (no mmap, a big-endian host): use qkv_npy_write there. On failure
 * *out is zeroed and the file may exist, partly written. Thread-safe. */
QKV_API qkv_status qkv_npy_create(const char *path, qkv_dtype dtype, int ndim, const int64_t *shape,
                                  qkv_array *out);

/* -------------------------------------------------------------------- GEMM */

/* The matrix multiply under the layer's projections, callable on its own. */
typedef enum qkv_gemm_transpose {
    QKV_GEMM_NO_TRANS = 0, /* use the matrix as stored */
    QKV_GEMM_TRANS         /* use its transpose */
} qkv_gemm_transpose;

/* Options for qkv_sgemm; a NULL pointer or a zeroed struct means the
 * defaults. isa and num_threads mean what they mean in qkv_attention_options. */
typedef struct qkv_gemm_options {
    qkv_isa isa;
    int num_threads;
} qkv_gemm_options;

/* C = alpha * op(A) * op(B) + beta * C in F32, every matrix row-major.
 *
 *   op(A) is m x k: A is stored m x k (lda >= k) or, with ta == QKV_GEMM_TRANS,
 *         k x m (lda >= m); likewise op(B) is k x n: B stored k x n
 *         (ldb >= n) or, with tb == QKV_GEMM_TRANS, n x k (ldb >= k); C is m x n
 *         (ldc >= n). Leading dimensions are in elements.
 *   beta == 0 means C is only written (NaN or garbage in C does not leak
 *   through); k == 0 or alpha == 0 scales C by beta without reading A or
 *   B. m, n, k >= 0; any may be 0.
 *   C must share no byte with A or B where they are read. The test is on
 *   the bytes a matrix reaches (rows - 1 rows of its leading dimension,
 *   then one row as wide as the matrix), so matrices that interleave in
 *   one buffer count as overlapping and matrices that only touch do not;
 *   A and B may share bytes. Such an overlap, or a non-empty matrix whose
 *   pointer is not aligned to 4 bytes, fails with QKV_ERR_INVALID_ARGUMENT
 *   and a detail naming them ("C and A overlap in memory; ...").
 *
 * Our own blocked kernel (packing, cache blocking, threads over blocks of
 * C); a C of at most 4 rows (a decode step's projections) skips packing
 * and reads B where it lies, as a matrix-vector product. Results are
 * bitwise the same for any thread count with one instruction set. A build
 * configured with -DQKV_BLAS=ON calls the system BLAS (cblas_sgemm)
 * instead when opts->isa is QKV_ISA_AUTO (its threads are the BLAS
 * library's own). Scratch: O(threads x cache blocks), or for at most 4
 * rows m x k floats plus threads x m x 64. Thread-safe. */
QKV_API qkv_status qkv_sgemm(qkv_gemm_transpose ta, qkv_gemm_transpose tb, int64_t m, int64_t n,
                             int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                             int64_t ldb, float beta, float *c, int64_t ldc,
                             const qkv_gemm_options *opts);

/* ------------------------------------------------------------ .safetensors */

/* A parsed .safetensors file: a JSON header naming tensors (dtype, shape,
 * byte offsets) followed by their little-endian data. Opaque; free with
 * qkv_safetensors_free. */
typedef struct qkv_safetensors qkv_safetensors;

/* Reads and checks a whole .safetensors file. Strict: the header must be
 * valid JSON of the documented form (an object mapping names to
 * {"dtype", "shape", "data_offsets"}, plus an optional "__metadata__" object
 * of strings), names unique, dtypes among those the format defines, each
 * tensor's byte length equal to its shape times its element size, and the
 * tensors' byte ranges must tile the data section exactly; only spaces may
 * follow the JSON object, and tensor names may not contain U+0000. The
 * header length must be 1 to 100000000 bytes (the format's own limit) and
 * within the file. A pipe or other stream is read no further than the
 * header length and the data_offsets promise, plus one byte: more bytes
 * fail ("trailing bytes"), as .npy streams do. Anything else
 * fails with QKV_ERR_FORMAT (or QKV_ERR_OVERFLOW) and a detail that starts
 * with the file name. On failure *out is NULL. */
QKV_API qkv_status qkv_safetensors_read(const char *path, qkv_safetensors **out);

/* The same from the len bytes at buf (copied; buf may be freed after the
 * call); `name` is used in error details (may be NULL). */
QKV_API qkv_status qkv_safetensors_parse(const void *buf, size_t len, const char *name,
                                         qkv_safetensors **out);

/* Frees st; NULL is a no-op. Leaves the error detail alone. */
QKV_API void qkv_safetensors_free(qkv_safetensors *st);

/* Number of tensors, and the name of tensor i (0 <= i < count) in the
 * order of the file's header; the string lives as long as st. NULL for an
 * i out of range. */
QKV_API int64_t qkv_safetensors_count(const qkv_safetensors *st);
QKV_API const char *qkv_safetensors_name(const qkv_safetensors *st, int64_t i);

/* Looks a tensor up by name. Returns 1 and, when info is not NULL, fills
 * info's dtype, ndim and shape (info->data is set to NULL) when st has it;
 * 0 otherwise. The dtype of a tensor whose format dtype has no qkv_dtype
 * (I8, U8, ...) is reported as -1 cast to qkv_dtype. Never fails. */
QKV_API int qkv_safetensors_find(const qkv_safetensors *st, const char *name, qkv_array *info);

/* Copies tensor `name` into a new array *out of dtype `to` (free with
 * qkv_array_free), converting as qkv_array_convert does; F32, F16, BF16,
 * F64, I32, I64 and BOOL tensors are supported. A missing name fails with
 * QKV_ERR_INVALID_ARGUMENT, an unsupported dtype with QKV_ERR_DTYPE; the
 * detail names the file and the tensor. On failure *out is zeroed. */
QKV_API qkv_status qkv_safetensors_get(const qkv_safetensors *st, const char *name, qkv_dtype to,
                                       qkv_array *out);

/* Writes n named arrays (F32, F64, F16, BF16, I32, I64, BOOL) as a
 * .safetensors file in the given order, with no metadata. Names must be
 * unique, non-empty, valid UTF-8 and not "__metadata__"
 * (QKV_ERR_INVALID_ARGUMENT otherwise). Creates or truncates path; on failure the file may
 * be partly written. */
QKV_API qkv_status qkv_safetensors_write(const char *path, int64_t n, const char *const *names,
                                         const qkv_array *arrays);

/* -------------------------------------------------- multi-head attention layer */

/* The layer real models use (DESIGN.md §1, the projections around
 * attention). With row-major inputs X (B, Lq, D) and context C (B, Lk, Dkv)
 * (C = X for self-attention):
 *
 *   Q = X Wq^T + bq   (B, Lq, H*E)      K = C Wk^T + bk   (B, Lk, Hkv*E)
 *   V = C Wv^T + bv   (B, Lk, Hkv*Ev)
 *   Q, K rotated by RoPE at their positions when the layer has it;
 *   A = attention(Q, K, V) per head, with the attention options given
 *       (Q, K, V, A read as (B, L, heads, head dim): head h is columns
 *       h*E .. h*E+E-1 of its row);
 *   Y = A Wo^T + bo   (B, Lq, D)
 *
 * with PyTorch's nn.Linear convention for each weight (out_features x
 * in_features, row-major): Wq (H*E, D), Wk (Hkv*E, Dkv), Wv (Hkv*Ev, Dkv),
 * Wo (D, H*Ev); biases bq (H*E), bk (Hkv*E), bv (Hkv*Ev), bo (D). */

/* Rotary position embedding on q and k. A token at position p rotates
 * each pair (x_a, x_b) of a head's E dims by the angle
 * p * base^(-2i/E), i = 0 .. E/2-1 indexing the pairs:
 * x_a' = x_a cos - x_b sin, x_b' = x_a sin + x_b cos. Positions are the
 * token's index in its sequence (0 .. L-1), in a decode step its index in
 * the cache. */
typedef enum qkv_rope {
    QKV_ROPE_NONE = 0,
    QKV_ROPE_INTERLEAVED, /* pair i is dims (2i, 2i+1): GPT-J, RoFormer */
    QKV_ROPE_HALF         /* pair i is dims (i, i + E/2): GPT-NeoX, Llama */
} qkv_rope;

typedef struct qkv_mha_config {
    int64_t d_model;    /* D: width of X and of Y (>= 1) */
    int64_t d_context;  /* Dkv: width of the context; 0 means D */
    int64_t heads;      /* H (>= 1) */
    int64_t kv_heads;   /* Hkv; 0 means H; H % Hkv == 0 */
    int64_t head_dim;   /* E; 0 means D / H (D % H must then be 0) */
    int64_t v_head_dim; /* Ev; 0 means E */
    int bias;           /* nonzero: the four projections have biases */
    qkv_rope rope;      /* RoPE on q and k; E must be even */
    double rope_base;   /* base frequency; 0 means 10000 */
} qkv_mha_config;

/* A layer: its configuration and its parameters. Opaque. A layer may be
 * read by several threads at once (forward, backward, decode) but must not
 * be written (qkv_mha_param's pointer) meanwhile. */
typedef struct qkv_mha qkv_mha;

/* Creates a layer with every parameter zero; free with qkv_mha_free. The
 * config is checked (QKV_ERR_INVALID_ARGUMENT / QKV_ERR_SHAPE / overflow,
 * the detail names the field); on failure *out is NULL. */
QKV_API qkv_status qkv_mha_create(qkv_mha **out, const qkv_mha_config *cfg);

/* Frees m; NULL is a no-op. */
QKV_API void qkv_mha_free(qkv_mha *m);

/* The configuration with every 0 default filled in. */
QKV_API qkv_mha_config qkv_mha_get_config(const qkv_mha *m);

typedef enum qkv_mha_param {
    QKV_MHA_WQ = 0, QKV_MHA_WK, QKV_MHA_WV, QKV_MHA_WO,
    QKV_MHA_BQ, QKV_MHA_BK, QKV_MHA_BV, QKV_MHA_BO
} qkv_mha_param;
#define QKV_MHA_NUM_PARAMS 8

/* The layer's own storage for one parameter, row-major, to read or fill;
 * *rows and *cols (either may be NULL) receive its shape (a bias is
 * 1 x n). NULL, with *rows = *cols = 0, for a bias the layer does not have
 * or a value outside the enum. Valid until qkv_mha_free. */
QKV_API float *qkv_mha_param_data(qkv_mha *m, qkv_mha_param which, int64_t *rows, int64_t *cols);

/* Creates a layer from parameters in a .safetensors file, converted to
 * F32 from F32, F16 or BF16. Names, each looked up with `prefix`
 * prepended (NULL or "" for none, e.g. "layers.0.self_attn."):
 *   PyTorch nn.MultiheadAttention: in_proj_weight (3D, D) holding Wq, Wk,
 *     Wv stacked, or q_proj_weight, k_proj_weight, v_proj_weight (when
 *     kdim = vdim differs from D; kdim != vdim is refused, the layer
 *     having one context); in_proj_bias (3D); out_proj.weight,
 *     out_proj.bias;
 *   separate projections: q_proj.weight, k_proj.weight, v_proj.weight,
 *     o_proj.weight and optional .bias of each (these allow Hkv < H).
 * cfg gives heads, kv_heads, rope and rope_base; its dims may be 0, to be
 * taken from the tensors' shapes, or given, to be checked against them;
 * bias is taken from the file (all four present, or none). A missing,
 * duplicated or mis-shaped tensor fails with a detail naming it and the
 * shape expected. On failure *out is NULL. */
QKV_API qkv_status qkv_mha_load(qkv_mha **out, const qkv_mha_config *cfg, const qkv_safetensors *st,
                                const char *prefix);

/* Saves the layer's parameters to path under the separate-projection names
 * (q_proj.weight, ..., o_proj.bias) with `prefix` prepended. */
QKV_API qkv_status qkv_mha_save(const qkv_mha *m, const char *path, const char *prefix);

/* Forward of the layer.
 *
 *   y        out, F32 (B, Lq, D) contiguous
 *   weights  out, optional (NULL): F32 (B, H, Lq, Lk) contiguous, the
 *            attention weights of every head
 *   x        F32 (B, Lq, D) contiguous
 *   context  F32 (B, Lk, Dkv) contiguous, or NULL for self-attention
 *            (then Lk = Lq and the context is x; Dkv must equal D)
 *   opts     the attention options (masks of (B, H, Lq, Lk) broadcasting,
 *            causal, window, kv_lens, softcap, scale, impl, isa,
 *            num_threads, progress); NULL for the defaults. The projections
 *            use opts' isa and num_threads; progress reports the
 *            attention's share of the work.
 *
 * y and weights must share no byte with each other, with x, context or
 * the layer's parameters, and every pointer of a non-empty buffer must be
 * aligned to 4 bytes: QKV_ERR_INVALID_ARGUMENT otherwise, the detail
 * naming the pair ("y and x overlap in memory; ...") or the pointer.
 * Inputs may share bytes. Scratch: Q, K, V and A, about
 * B x (Lq (H E + H Ev) + Lk Hkv (E + Ev)) floats, plus the attention's.
 * Bitwise the same for any thread count. Thread-safe. */
QKV_API qkv_status qkv_mha_forward(const qkv_mha *m, float *y, float *weights, const float *x,
                                   int64_t batch, int64_t lq, const float *context, int64_t lk,
                                   const qkv_attention_options *opts);

/* Backward of qkv_mha_forward for the same inputs and options, given
 * dy = dL/dY (B, Lq, D):
 *
 *   grad      out: a layer created with m's configuration whose parameters
 *             are overwritten with dL/dW and dL/db of m's
 *   dx        out, optional (NULL): (B, Lq, D) dL/dX; for self-attention
 *             it includes the paths through K and V
 *   dcontext  out, optional (NULL): (B, Lk, Dkv) dL/dC; only with a context
 *
 * The forward's activations are recomputed from x and context (one more
 * forward's work), so nothing needs keeping between the calls; the
 * attention part uses qkv_attention_backward. dx, dcontext and grad's
 * parameters must share no byte with each other, with dy, x, context or
 * m's parameters, and pointers must be aligned to 4 bytes, as for the
 * forward (QKV_ERR_INVALID_ARGUMENT). Bitwise the same for any
 * thread count. Thread-safe (distinct grad layers). */
QKV_API qkv_status qkv_mha_backward(const qkv_mha *m, qkv_mha *grad, float *dx, float *dcontext,
                                    const float *dy, const float *x, int64_t batch, int64_t lq,
                                    const float *context, int64_t lk,
                                    const qkv_attention_options *opts);

/* ---------------------------------------------------------------- KV cache */

/* Keys and values (after RoPE) of a batch of sequences for one layer,
 * each sequence up to max_len tokens, for incremental decoding. Memory:
 * B x Hkv x max_len x (E + Ev) floats, allocated once. Opaque. */
typedef struct qkv_kv_cache qkv_kv_cache;

/* Creates an empty cache for `batch` sequences of layer m's shape (the
 * cache keeps m's Hkv, E, Ev, not m itself). On failure *out is NULL. */
QKV_API qkv_status qkv_kv_cache_create(qkv_kv_cache **out, const qkv_mha *m, int64_t batch,
                                       int64_t max_len);
QKV_API void qkv_kv_cache_free(qkv_kv_cache *c);

/* Tokens held for sequence b; -1 for a b out of range. */
QKV_API int64_t qkv_kv_cache_length(const qkv_kv_cache *c, int64_t b);

/* Keeps the first len tokens of sequence b (0 <= len <= its length);
 * len = 0 resets it. */
QKV_API qkv_status qkv_kv_cache_truncate(qkv_kv_cache *c, int64_t b, int64_t len);

/* Bytes the cache holds (its storage and bookkeeping). */
QKV_API size_t qkv_kv_cache_bytes(const qkv_kv_cache *c);

/* Appends n tokens' keys and values to sequence b as they are to be
 * stored, i.e. already rotated by RoPE where the layer has it: k (n, Hkv,
 * E) and v (n, Hkv, Ev) row-major, the layout of the K and V projections'
 * rows. For keys computed elsewhere (a prompt processed by another
 * program, a saved cache). k and v may be read from the cache itself (a
 * view of another sequence, to copy it) but must not overlap the rows
 * they are stored to (sequence b's from its length on), and must be
 * aligned to 4 bytes (QKV_ERR_INVALID_ARGUMENT, the detail naming them).
 * Fails, changing nothing, when the sequence would pass max_len. */
QKV_API qkv_status qkv_kv_cache_append(qkv_kv_cache *c, int64_t b, const float *k, const float *v,
                                       int64_t n);

/* Views of sequence b's cached keys (1, Hkv, len, E) and values (1, Hkv,
 * len, Ev), valid until the cache is freed; their data may be read, and
 * written to change the cache. Either pointer may be NULL. */
QKV_API qkv_status qkv_kv_cache_view(qkv_kv_cache *c, int64_t b, qkv_tensor *k, qkv_tensor *v);

/* One decode step for every sequence of the cache: x (B, n, D) holds n new
 * tokens per sequence (n >= 1; B is the cache's). Their k and v are
 * appended to the cache at positions len_b .. len_b + n - 1 (after RoPE
 * there), then their queries attend the sequence's len_b + n cached tokens
 * with causal bottom-right alignment (token t sees positions up to
 * len_b + t), and y (B, n, D) is written; weights, when not NULL, is
 * (B, H, n, len_max + n) with len_max the longest sequence before the
 * step, zero beyond each sequence's own length. The same output as the
 * full sequence through qkv_mha_forward with opts->causal set (to rounding
 * of the attention's key splitting). opts may set scale, softcap, the
 * window, impl, isa and num_threads; a mask or kv_lens is refused (the
 * cache knows the lengths), causal is implied, progress is not reported. A step that would pass
 * max_len fails with QKV_ERR_INVALID_ARGUMENT and leaves the cache as it
 * was; so do y, weights or the cache's storage sharing a byte with each
 * other, with x or with the layer's parameters, and a pointer not aligned
 * to 4 bytes (the detail names them). Not thread-safe on one cache. */
QKV_API qkv_status qkv_mha_decode(const qkv_mha *m, qkv_kv_cache *c, float *y, float *weights,
                                  const float *x, int64_t n, const qkv_attention_options *opts);

#ifdef __cplusplus
}
#endif

#endif /* QKV_H */
