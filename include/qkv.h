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
 *
 * How each function is documented: a block that starts with its name,
 *
 *   name() : what it does, in a sentence or two.
 *     arg  in/out, dtype (shape): meaning        one line per argument
 *   Errors:  the statuses it returns, and when
 *   @return  what it returns
 *   Threads: who may call it at once (the convention above, unless it says
 *            otherwise)
 *   Memory:  what it allocates, who frees it, the scratch it takes (where
 *            there is any)
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

/*! qkv_version_number() :
 *  The version of the library actually linked (which may differ from the
 *  header a program was compiled with).
 *  Errors:  none.
 *  @return  the linked version as QKV_VERSION_NUMBER spells it.
 *  Threads: safe. */
QKV_API int qkv_version_number(void);

/*! qkv_version_string() :
 *  The linked library's version as "MAJOR.MINOR.PATCH".
 *  Errors:  none.
 *  @return  a static string, never NULL.
 *  Threads: safe.
 *  Memory:  static; never freed. */
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

/*! qkv_status_string() :
 *  A short fixed name for a status, e.g. "shape mismatch".
 *
 *    status  in: any value, inside the enum or not
 *
 *  Errors:  none.
 *  @return  a static string, never NULL; "unknown status" for a value outside
 *           the enum.
 *  Threads: safe.
 *  Memory:  static; never freed. */
QKV_API const char *qkv_status_string(qkv_status status);

/*! qkv_error_detail() :
 *  The detail message of the last failing call made by the calling thread,
 *  e.g. "K: head dim 32 differs from Q head dim 64".
 *  Errors:  none.
 *  @return  the message, never NULL; the empty string when the thread has
 *           seen no failure.
 *  Threads: each thread has its own message.
 *  Memory:  the library's; valid until the thread's next qkv call. */
QKV_API const char *qkv_error_detail(void);

/* ---------------------------------------------------------------- tensors */

typedef enum qkv_dtype {
    QKV_DTYPE_F32 = 0, /* IEEE binary32 */
    QKV_DTYPE_F64,     /* IEEE binary64 */
    QKV_DTYPE_F16,     /* IEEE binary16 */
    QKV_DTYPE_BF16,    /* bfloat16 */
    QKV_DTYPE_BOOL,    /* one byte, 0 = false, anything else = true */
    QKV_DTYPE_I32,
    QKV_DTYPE_I64,
    /* Block formats (llama.cpp's, byte for byte), for K and V only: 32
     * consecutive values of a row share one binary16 scale d at the start
     * of their block. Q8_0: 34-byte blocks, d then 32 signed bytes q,
     * x = q d. Q4_0: 18-byte blocks, d then 16 bytes whose low nibbles are
     * values 0..15 and high nibbles values 16..31, each n in 0..15,
     * x = (n - 8) d. A view in a block format has stride[3] = 1, a last
     * dim and other strides that are multiples of 32 (rows start at a
     * block), non-negative strides, and data aligned to 2 bytes; its
     * strides count values, so block b of a row is at byte b * 34 (18)
     * from the row's start, and the row of offset s at byte s / 32 * 34. */
    QKV_DTYPE_Q8_0,
    QKV_DTYPE_Q4_0
} qkv_dtype;

/* The block formats' sizes: values a block, bytes a block. */
#define QKV_BLOCK_VALUES 32
#define QKV_Q8_0_BLOCK_BYTES 34
#define QKV_Q4_0_BLOCK_BYTES 18

/*! qkv_dtype_size() :
 *  The size of one element of a dtype.
 *
 *    dtype  in: any value, inside the enum or not
 *
 *  Errors:  none.
 *  @return  bytes per element; 0 for a value outside the enum and for the
 *           block formats Q8_0 and Q4_0, whose values have no bytes of
 *           their own (a block of 32 is 34 or 18 bytes).
 *  Threads: safe. */
QKV_API size_t qkv_dtype_size(qkv_dtype dtype);

/*! qkv_quantize() :
 *  n floats into the blocks of QKV_DTYPE_Q8_0 or _Q4_0 (the layout above;
 *  llama.cpp's arithmetic), as a quantized KV cache stores its rows: for
 *  K and V views of attention in a block format.
 *
 *    dst  out: n / 32 blocks of 34 (Q8_0) or 18 (Q4_0) bytes, any alignment
 *    fmt  in: QKV_DTYPE_Q8_0 or QKV_DTYPE_Q4_0
 *    src  in: n floats
 *    n    in: >= 0, a multiple of 32
 *
 *  A block holding a NaN or an infinity is stored as NaN (its 32 values
 *  read back as NaN).
 *  Errors:  QKV_ERR_DTYPE for another fmt; QKV_ERR_INVALID_ARGUMENT, dst
 *           untouched, for n, for a finite value too large for the format
 *           ("src: block 3 holds values too large for q8_0 (|x| up to about
 *           8.3e6)"); QKV_ERR_NULL_ARGUMENT.
 *  @return  QKV_OK, or the error.
 *  Threads: safe. */
QKV_API qkv_status qkv_quantize(void *dst, qkv_dtype fmt, const float *src, int64_t n);

/*! qkv_dequantize() :
 *  And back: n values of blocks of QKV_DTYPE_Q8_0 or _Q4_0 into floats,
 *  each exactly q d (or (n - 8) d).
 *
 *    dst  out: n floats
 *    fmt  in: QKV_DTYPE_Q8_0 or QKV_DTYPE_Q4_0
 *    src  in: n / 32 blocks, any alignment
 *    n    in: >= 0, a multiple of 32
 *
 *  Errors:  QKV_ERR_DTYPE for another fmt; QKV_ERR_INVALID_ARGUMENT for n;
 *           QKV_ERR_NULL_ARGUMENT.
 *  @return  QKV_OK, or the error.
 *  Threads: safe. */
QKV_API qkv_status qkv_dequantize(float *dst, qkv_dtype fmt, const void *src, int64_t n);

/*! qkv_dtype_name() :
 *  The lower-case name of a dtype ("f32", "bool", "q8_0").
 *
 *    dtype  in: any value, inside the enum or not
 *
 *  Errors:  none.
 *  @return  a static string, never NULL; "unknown" outside the enum.
 *  Threads: safe.
 *  Memory:  static; never freed. */
QKV_API const char *qkv_dtype_name(qkv_dtype dtype);

/* The dtypes attention takes, one table for the forward, the backward and
 * every backend. "in" is the dtype Q, K and V share (f32, f16 or bf16):
 *
 *   tensor                      dtype
 *   Q, K, V                     one of f32, f16, bf16, the same for all three
 *   K, V (forward only)         or each on its own q8_0 or q4_0, with Q
 *                               in any of the three (a quantized KV cache)
 *   O, weights (forward)        in or f32
 *   lse (forward and backward)  f32
 *   mask                        bool, or a float mask in f32 or in
 *   dO, O (backward)            in or f32 (each on its own)
 *   dQ, dK, dV, dmask           in or f32 (each on its own)
 *   qkv_attention_merge         f32 throughout
 *
 * Whatever the dtypes, every score, maximum, sum and accumulator is kept in
 * f32 or wider: f16 and bf16 inputs are widened exactly (q8_0 and q4_0
 * dequantized exactly: q d is a float) and each result is
 * rounded once, to its own dtype, when it is stored. One exception, on
 * QKV_ISA_AVX512_BF16 with bf16 Q, K and V (more than 4 queries in the
 * forward; dO bf16 too in the backward): the products run on bf16 dot
 * products, so the attention weights (and the backward's dS) are rounded
 * to bf16 where they meet V (dO, Q); the error stays within the same
 * bounds (README). A tensor outside the
 * table is QKV_ERR_DTYPE with a detail naming it ("K: dtype f32, expected
 * bf16 as Q has (Q, K and V share one dtype)"). */

/* A strided 4-d view of memory the caller owns. Element (a, b, c, d) lives at
 * (elem *)data + a*stride[0] + b*stride[1] + c*stride[2] + d*stride[3].
 * Strides are in elements. A tensor whose data is NULL is "absent" wherever
 * a function takes an optional tensor.
 *
 * The overlap rule, for every function that takes views: an output may
 * share no byte with another output or with any input, or the call fails
 * with QKV_ERR_INVALID_ARGUMENT and a detail naming both ("O and Q overlap
 * in memory; ..."). The test is O(1): on the address ranges the views reach
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

/*! qkv_tensor_contiguous() :
 *  A view of contiguous row-major (C order) memory of shape (n0, n1, n2, n3):
 *  strides (n1 n2 n3, n2 n3, n3, 1). Nothing is checked or copied.
 *
 *    data    in: the memory, the caller's (NULL makes an absent tensor)
 *    dtype   in: its element type
 *    n0..n3  in: the shape
 *
 *  Errors:  none here. When the strides would overflow int64_t they are set
 *           to INT64_MAX, so that any function given the view fails with
 *           QKV_ERR_OVERFLOW.
 *  @return  the view.
 *  Threads: safe. */
QKV_API qkv_tensor qkv_tensor_contiguous(void *data, qkv_dtype dtype,
                                         int64_t n0, int64_t n1, int64_t n2, int64_t n3);

/* ---------------------------------------------------------- attention */

/* The most worker threads one call uses. */
#define QKV_MAX_THREADS 1024

/*! qkv_default_num_threads() :
 *  What num_threads = 0 means: the CPUs this process may run on (its
 *  affinity mask where the system has one, else the online CPUs).
 *  Errors:  none.
 *  @return  a count from 1 to QKV_MAX_THREADS.
 *  Threads: safe. */
QKV_API int qkv_default_num_threads(void);

/* Where the diagonal d_i of query row i lies, for causal masking and the
 * sliding window. */
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
 * the environment variable QKV_ISA ("generic", "avx2", "avx512",
 * "avx512bf16"; read once per process) or else the best the CPU supports.
 * Every set computes every dtype; AVX512_BF16 differs from AVX512 only
 * where bf16 meets bf16 (attention of more than 4 queries, its backward
 * with a bf16 dO, qkv_gemm of bf16 x bf16), which it takes on bf16 dot
 * products (README, DESIGN.md section 2). */
typedef enum qkv_isa {
    QKV_ISA_AUTO = 0,
    QKV_ISA_GENERIC, /* plain C, every build and CPU */
    QKV_ISA_AVX2,    /* x86-64 with AVX2 and FMA */
    QKV_ISA_AVX512,  /* x86-64 with AVX-512F */
    QKV_ISA_AVX512_BF16 /* x86-64 with AVX-512F and AVX512_BF16 (VDPBF16PS) */
} qkv_isa;

/*! qkv_isa_name() :
 *  The name of an instruction set: "auto", "generic", "avx2", "avx512",
 *  "avx512bf16".
 *
 *    isa  in: any value, inside the enum or not
 *
 *  Errors:  none.
 *  @return  a static string, never NULL; "unknown" outside the enum.
 *  Threads: safe.
 *  Memory:  static; never freed. */
QKV_API const char *qkv_isa_name(qkv_isa isa);

/*! qkv_isa_supported() :
 *  Whether this build has an instruction set and this CPU runs it.
 *
 *    isa  in: the set to ask about
 *
 *  Errors:  none.
 *  @return  1 when the set can run here (QKV_ISA_AUTO: always 1), else 0.
 *  Threads: safe. */
QKV_API int qkv_isa_supported(qkv_isa isa);

/*! qkv_isa_auto() :
 *  What QKV_ISA_AUTO means in this process: the set the QKV_ISA variable
 *  names, or else the best this CPU supports.
 *  Errors:  none here; when QKV_ISA names no set this build and CPU can run,
 *           calls that use QKV_ISA_AUTO fail with QKV_ERR_UNSUPPORTED and a
 *           detail that says so.
 *  @return  the set; QKV_ISA_AUTO in the case just named.
 *  Threads: safe. */
QKV_API qkv_isa qkv_isa_auto(void);

/* ---------------------------------------------------- execution context */

/* How a call runs, as opposed to what it computes (the options): the
 * worker threads, the instruction set, which backend computes, and a
 * progress report. Every computing call (attention forward and backward,
 * GEMM, the layer) takes one as its first argument; NULL means the
 * default context: threads on every CPU this process may run on,
 * QKV_ISA_AUTO, QKV_IMPL_AUTO, no progress report. A context is changed
 * only by its setters and may be used by several threads at once while
 * nobody changes it. Opaque. Each context owns a pool of worker threads,
 * started on its first threaded call, kept asleep between calls and
 * stopped by qkv_context_free (the default context's pool lives as long
 * as the process), so calls on distinct contexts from distinct threads
 * each run on their own workers; a call that finds its context's pool
 * busy with another thread's call starts threads of its own for its
 * duration instead of waiting. After fork() the child's pools start
 * empty. */
typedef struct qkv_context qkv_context;

/*! qkv_context_create() :
 *  A new context with the defaults NULL stands for.
 *
 *    out  out: the context; NULL on failure
 *
 *  Errors:  QKV_ERR_NULL_ARGUMENT for out NULL; QKV_ERR_OUT_OF_MEMORY.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  free with qkv_context_free. */
QKV_API qkv_status qkv_context_create(qkv_context **out);

/*! qkv_context_free() :
 *  Frees a context and stops its worker threads; NULL is a no-op. No
 *  call may be using it.
 *  Errors:  none; leaves the error detail alone.
 *  Threads: safe on distinct contexts. */
QKV_API void qkv_context_free(qkv_context *ctx);

/*! qkv_context_set_threads() :
 *  The worker threads a call may use: 0 for one per CPU this process may
 *  run on (qkv_default_num_threads), more than QKV_MAX_THREADS for
 *  QKV_MAX_THREADS. Results are bitwise the same whatever the count.
 *
 *    ctx          in/out: the context
 *    num_threads  in: 0 or more
 *
 *  Errors:  QKV_ERR_NULL_ARGUMENT for ctx NULL; QKV_ERR_INVALID_ARGUMENT
 *           for a negative count ("num_threads: -1, ...").
 *  @return  QKV_OK, or the error (the context unchanged).
 *  Threads: not while a call uses ctx. */
QKV_API qkv_status qkv_context_set_threads(qkv_context *ctx, int num_threads);

/*! qkv_context_threads() :
 *  The worker threads a call with ctx uses at most: its count with 0
 *  resolved; for ctx NULL, the default context's.
 *  Errors:  none.
 *  @return  a count from 1 to QKV_MAX_THREADS.
 *  Threads: safe. */
QKV_API int qkv_context_threads(const qkv_context *ctx);

/*! qkv_context_set_isa() :
 *  The CPU backend's instruction set (the reference ignores it).
 *  QKV_ISA_AUTO picks what qkv_isa_auto says. A set this build or CPU
 *  lacks is refused by the calls that would use it (QKV_ERR_UNSUPPORTED),
 *  not here. Sets differ in rounding; one set gives bitwise the same
 *  results for any thread count.
 *
 *    ctx  in/out: the context
 *    isa  in: a qkv_isa
 *
 *  Errors:  QKV_ERR_NULL_ARGUMENT for ctx NULL; QKV_ERR_INVALID_ARGUMENT
 *           for a value outside the enum ("isa: 9 is not a qkv_isa").
 *  @return  QKV_OK, or the error (the context unchanged).
 *  Threads: not while a call uses ctx. */
QKV_API qkv_status qkv_context_set_isa(qkv_context *ctx, qkv_isa isa);

/*! qkv_context_set_impl() :
 *  Which backend computes the attention calls: QKV_IMPL_AUTO the first
 *  that can, QKV_IMPL_REFERENCE the reference (plain loops in double; the
 *  oracle every faster path is tested against). The fast path stays
 *  within a relative L2 error of 1e-5 of the reference on inputs of unit
 *  scale. GEMM and the layer's projections have one implementation.
 *
 *    ctx   in/out: the context
 *    impl  in: a qkv_impl
 *
 *  Errors:  QKV_ERR_NULL_ARGUMENT for ctx NULL; QKV_ERR_INVALID_ARGUMENT
 *           for a value outside the enum ("impl: 2 is not a qkv_impl").
 *  @return  QKV_OK, or the error (the context unchanged).
 *  Threads: not while a call uses ctx. */
QKV_API qkv_status qkv_context_set_impl(qkv_context *ctx, qkv_impl impl);

/*! qkv_context_set_progress() :
 *  A progress report for long calls: fn(user, done) is called on the
 *  calling thread with the fraction of the work done, rising from 0 to 1,
 *  at most about 200 times per attention call and last with 1.0 once
 *  everything is written. fn must not call back into the library with the
 *  same outputs, and must not fork. The layer reports the attention's
 *  share of its work; GEMM reports nothing.
 *
 *    ctx   in/out: the context
 *    fn    in, optional: the report; NULL for none
 *    user  in: handed to fn
 *
 *  Errors:  QKV_ERR_NULL_ARGUMENT for ctx NULL.
 *  @return  QKV_OK, or the error.
 *  Threads: not while a call uses ctx. */
QKV_API qkv_status qkv_context_set_progress(qkv_context *ctx, void (*fn)(void *user, double done),
                                            void *user);

/*! qkv_context_set_workspace() :
 *  Lends the context memory for its calls' scratch, so that attention
 *  (forward and backward) and qkv_sgemm on it allocate nothing: a call
 *  carves its scratch from mem instead of allocating a block, and fails
 *  when mem is too small for it. The size a call needs comes from
 *  qkv_attention_forward_workspace, qkv_attention_backward_workspace and
 *  qkv_sgemm_workspace, asked with the same context (it depends on the
 *  threads, the isa and the backend); lend the largest. NULL and 0 take
 *  the loan back: calls allocate again. The memory stays the caller's: it
 *  is never freed by the library and must outlive the loan. The layer's
 *  calls pass the context on to their attention and GEMM calls, which then
 *  use the workspace, while the layer's own activations are still
 *  allocated per call; so does the rare row of a fast call that the
 *  reference recomputes in double.
 *
 *    ctx    in/out: the context
 *    mem    in, optional: 64-byte aligned (qkv_alloc gives such memory);
 *           NULL for none
 *    bytes  in: its size; 0 with mem NULL
 *
 *  Errors:  QKV_ERR_NULL_ARGUMENT for ctx NULL; QKV_ERR_INVALID_ARGUMENT for
 *           mem without bytes (or bytes without mem) or a misaligned mem.
 *  @return  QKV_OK, or the error (the context unchanged).
 *  Threads: not while a call uses ctx. A context with a workspace serves
 *           one call at a time: a call that finds the workspace in use by
 *           another fails with QKV_ERR_INVALID_ARGUMENT ("workspace:
 *           another call is using ..."), and one that needs more than
 *           bytes fails with QKV_ERR_OUT_OF_MEMORY ("workspace: this call
 *           needs N bytes ..."), before anything is written. */
QKV_API qkv_status qkv_context_set_workspace(qkv_context *ctx, void *mem, size_t bytes);

/* Options for qkv_attention_forward and qkv_attention_backward: what is
 * computed (how it runs is the context's). A zero-initialised struct
 * (qkv_attention_options o = {0};) or a NULL pointer means every default.
 * The struct grows at its end in later versions; struct_size says which
 * version a caller was compiled with, so that a newer library reads an
 * older caller's struct, and an older library refuses a newer caller's
 * only when it sets a field the library does not know. */
typedef struct qkv_attention_options {
    /* 0, or sizeof(qkv_attention_options) as the caller's header has it;
     * anything else is QKV_ERR_INVALID_ARGUMENT. 0 means this header's
     * size (so {0} works for the fields up to here and any later
     * version's first fields); a size larger than the library's is taken
     * when the bytes past the library's fields are all zero, else
     * QKV_ERR_UNSUPPORTED. */
    size_t struct_size;
    /* Multiplies <q, k>. 0 means the default 1/sqrt(E). Must be finite
     * (else QKV_ERR_INVALID_ARGUMENT). Any finite value gives the
     * reference's answer, forward and backward: what would overflow the
     * fast path's float scores is computed by the reference in double,
     * the whole call for a scale outside float's normal range (|scale| >
     * FLT_MAX or < FLT_MIN), else the rows whose float arithmetic
     * overflows while everything they read is finite (their lse, stored as
     * float, is then +-inf where it passes float's range). */
    double scale;
    /* Softcap c: scores become c * tanh(s / c), applied after scaling and
     * before the mask. 0 means none; otherwise must be finite and > 0. */
    double softcap;
    /* Optional mask; mask.data == NULL means none. A float mask (f32, or
     * the inputs' f16 or bf16: the dtype table above) is added to the
     * scores (-INFINITY forbids); QKV_DTYPE_BOOL keeps
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

/*! qkv_attention_forward() :
 *  Forward scaled dot-product attention: O = softmax(scale Q K^T + masks) V,
 *  as the top of this header defines it, and optionally the weights and lse.
 *
 *    ctx      in, optional: how the call runs (threads, isa, backend,
 *             progress); NULL for the default context
 *    o        out, in or F32 (B, H, Lq, Ev): the output
 *    weights  out, optional (NULL or data NULL), in or F32 (B, H, Lq, Lk):
 *             the softmax weights p; fully masked rows are all 0
 *    lse      out, optional (NULL or data NULL), F32 (B, H, Lq, 1): natural
 *             log-sum-exp of the final scores; -INFINITY for masked rows
 *    q        in, F32, F16 or BF16 (B, H, Lq, E): its dtype is "in"
 *    k        in, in (B, Hkv, Lk, E)
 *    v        in, in (B, Hkv, Lk, Ev)
 *    opts     in, optional: the options; NULL for every default
 *
 *  Any dim except E may be 0 (nothing is computed); E >= 1. Lk == 0 makes
 *  every row fully masked. The fast path takes head dims up to 2^20; beyond,
 *  the reference computes the call (QKV_IMPL_AUTO).
 *  Errors:  QKV_ERR_NULL_ARGUMENT for a NULL q, k, v or o (or a NULL data
 *           pointer of a non-empty tensor); QKV_ERR_DTYPE for a dtype outside
 *           the table (above qkv_tensor); QKV_ERR_SHAPE for shapes that
 *           disagree (E == 0, H % Hkv != 0, a mask dim that is neither 1 nor
 *           its full size); QKV_ERR_OVERFLOW for a view whose offsets do
 *           not fit int64_t; QKV_ERR_INVALID_ARGUMENT for an option out of
 *           its range, a misaligned pointer, or outputs that break the
 *           overlap rule (qkv_tensor); QKV_ERR_UNSUPPORTED for an isa this
 *           build or CPU lacks (or one QKV_ISA names); QKV_ERR_OUT_OF_MEMORY
 *           for scratch.
 *  @return  QKV_OK, or the error; on error nothing is promised about the
 *           outputs' contents.
 *  Threads: safe.
 *  Memory:  scratch is allocated per call and freed before returning, or
 *           carved from the context's workspace when it has one. The
 *           fast path takes O(threads x tile), a tile being max(64, H/Hkv)
 *           rows x (E + Ev + 128) floats — a few hundred KiB for common
 *           shapes — never anything proportional to Lq x Lk (a decode-shaped
 *           call that splits its keys also keeps their partial results: at
 *           most 2048 tiles of them, each the tile's rows x Ev floats); the
 *           reference O(threads x (Lk + Ev)). */
QKV_API qkv_status qkv_attention_forward(qkv_context *ctx, const qkv_tensor *o,
                                         const qkv_tensor *weights, const qkv_tensor *lse,
                                         const qkv_tensor *q, const qkv_tensor *k,
                                         const qkv_tensor *v, const qkv_attention_options *opts);

/*! qkv_attention_forward_workspace() :
 *  The scratch, in bytes, that qkv_attention_forward with these arguments
 *  takes under ctx (qkv_context_set_workspace): the call's checks and
 *  backend choice without computing anything. Pass the arguments of the
 *  call itself; their data is read only as the call's dispatch reads it.
 *
 *    bytes  out: the size; 0 when the call needs none
 *    the rest: as qkv_attention_forward
 *
 *  Errors:  those of qkv_attention_forward for its arguments;
 *           QKV_ERR_NULL_ARGUMENT for bytes NULL.
 *  @return  QKV_OK, or the error (*bytes 0).
 *  Threads: safe. */
QKV_API qkv_status qkv_attention_forward_workspace(qkv_context *ctx, const qkv_tensor *o,
                                                   const qkv_tensor *weights,
                                                   const qkv_tensor *lse, const qkv_tensor *q,
                                                   const qkv_tensor *k, const qkv_tensor *v,
                                                   const qkv_attention_options *opts,
                                                   size_t *bytes);

/*! qkv_attention_backward() :
 *  Backward of qkv_attention_forward: the gradients of a loss L with
 *  respect to Q, K, V (and a float mask), given dO = dL/dO.
 *
 *    ctx      in, optional: how the call runs (threads, isa, backend,
 *             progress); NULL for the default context
 *    dq     out, in or F32 (B, H, Lq, E): dL/dQ
 *    dk     out, in or F32 (B, Hkv, Lk, E): dL/dK, summed over the query heads of
 *           each kv head's group (GQA)
 *    dv     out, in or F32 (B, Hkv, Lk, Ev): dL/dV, summed likewise
 *    dmask  out, optional (NULL or data NULL), in or F32 with the float mask's own
 *           shape (opts->mask must be an F32 mask): dL/dmask, summed over
 *           the dims the mask was broadcast along
 *    dout   in, in or F32 (B, H, Lq, Ev): dL/dO
 *    q, k, v, opts   in: exactly as given to the forward
 *    o      in, in or F32 (B, H, Lq, Ev): the forward's O
 *    lse    in, F32 (B, H, Lq, 1): the forward's lse
 *
 *  With D_i = <dO_i, O_i>: dV = P^T dO, dP = dO V^T, dS = P o (dP - D),
 *  through the softcap dU = dS o (1 - tanh^2(u / c)), dQ = scale dU K,
 *  dK = scale dU^T Q, dmask = dS. Forbidden keys and fully masked rows get
 *  zero gradients, never NaN. QKV_IMPL_AUTO runs the fast backward, which
 *  recomputes the weights from o and lse: they must be what the forward
 *  returned for these inputs and options. A call that asks for dmask, or
 *  QKV_IMPL_REFERENCE, runs the reference backward, which recomputes P and
 *  O from Q, K, V in double (o and lse are checked for their shapes only).
 *  The fast backward stays within 1e-5 of the reference.
 *  Errors:  those of the forward, for its arguments and options and for the
 *           gradients as outputs (dq, dk, dv, dmask, the overlap rule
 *           against every input including dout, o and lse);
 *           QKV_ERR_INVALID_ARGUMENT for dmask without an F32 mask in opts.
 *  @return  QKV_OK, or the error; on error nothing is promised about the
 *           outputs' contents.
 *  Threads: safe. Either way results are bitwise the same for any thread
 *           count.
 *  Memory:  scratch per call, freed before returning (or the context's
 *           workspace). The fast backward
 *           takes O(threads x tiles) plus B x H x Lq floats, and
 *           B x H x Lq x E more when dq's last dim is strided; the reference
 *           backward O(threads x Lk x (E + Ev)) doubles. */
QKV_API qkv_status qkv_attention_backward(qkv_context *ctx, const qkv_tensor *dq,
                                          const qkv_tensor *dk, const qkv_tensor *dv,
                                          const qkv_tensor *dmask, const qkv_tensor *dout,
                                          const qkv_tensor *q, const qkv_tensor *k,
                                          const qkv_tensor *v, const qkv_tensor *o,
                                          const qkv_tensor *lse,
                                          const qkv_attention_options *opts);

/*! qkv_attention_backward_workspace() :
 *  The scratch, in bytes, that qkv_attention_backward with these arguments
 *  takes under ctx, as qkv_attention_forward_workspace is for the forward
 *  (the backend choice reads lse, so pass the forward's).
 *
 *    bytes  out: the size; 0 when the call needs none
 *    the rest: as qkv_attention_backward
 *
 *  Errors:  those of qkv_attention_backward for its arguments;
 *           QKV_ERR_NULL_ARGUMENT for bytes NULL.
 *  @return  QKV_OK, or the error (*bytes 0).
 *  Threads: safe. */
QKV_API qkv_status qkv_attention_backward_workspace(
    qkv_context *ctx, const qkv_tensor *dq, const qkv_tensor *dk, const qkv_tensor *dv,
    const qkv_tensor *dmask, const qkv_tensor *dout, const qkv_tensor *q, const qkv_tensor *k,
    const qkv_tensor *v, const qkv_tensor *o, const qkv_tensor *lse,
    const qkv_attention_options *opts, size_t *bytes);

/*! qkv_attention_merge() :
 *  Merges partial results of the same queries over two disjoint sets of
 *  keys into the result over their union: what a split of the keys (ring
 *  attention's blocks, a cascade's shared prefix and own suffix, keys
 *  spread over devices) computes in parts.
 *
 *    o, lse     out, F32 (B, H, Lq, Ev) and (B, H, Lq, 1): the merged result
 *    o1, lse1   in, F32 (B, H, Lq, Ev) and (B, H, Lq, 1): the forward's O and
 *               lse over the first set of keys
 *    o2, lse2   in, F32, the same shapes: the same over the second set
 *
 *  Row by row, in double: m = max(lse1, lse2), w_k = exp(lse_k - m),
 *  o = (w1 o1 + w2 o2) / (w1 + w2), lse = m + log(w1 + w2), narrowed to
 *  float. A part whose lse is -inf (its keys were all masked) has weight
 *  0; both -inf gives o = 0, lse = -inf, as a fully masked row does. A
 *  part whose lse is +inf (scores past float's range, see scale) takes the
 *  row: its O (the mean of both when both are +inf), lse +inf. NaN in a
 *  part's lse or O reaches that row only. Merging the parts of a split
 *  in a fixed order is bitwise reproducible, and equals one call over all
 *  the keys to rounding (within 1e-6 relative L2 on inputs of unit scale).
 *  Every view may be strided; o and lse may be exactly o1 and lse1 (the
 *  same data, shape and strides: merging into an accumulator).
 *  Errors:  QKV_ERR_NULL_ARGUMENT for a NULL view; QKV_ERR_DTYPE for a view
 *           that is not F32; QKV_ERR_SHAPE for shapes that disagree;
 *           QKV_ERR_OVERFLOW for a view whose offsets do not fit int64_t;
 *           QKV_ERR_INVALID_ARGUMENT for a misaligned pointer, or when o or
 *           lse shares a byte with the inputs or each other (but for the
 *           accumulator case above).
 *  @return  QKV_OK, or the error.
 *  Threads: safe; the merge itself runs on the calling thread.
 *  Memory:  no scratch. */
QKV_API qkv_status qkv_attention_merge(const qkv_tensor *o, const qkv_tensor *lse,
                                       const qkv_tensor *o1, const qkv_tensor *lse1,
                                       const qkv_tensor *o2, const qkv_tensor *lse2);

/* ------------------------------------------------------------------ memory */

/*! qkv_alloc() :
 *  Memory for large tensors, uninitialised: 64-byte aligned; a block of
 *  2 MiB or more is 2 MiB-aligned and, on Linux, marked for transparent huge
 *  pages, which the kernel grants when its THP policy is "madvise" or
 *  "always". Streaming K and V from huge pages is faster (decode;
 *  BENCHMARKS.md), so this is where a caller's KV tensors are best kept.
 *
 *    bytes  in: the size, >= 1
 *
 *  Errors:  no status is returned; qkv_error_detail() gives the detail of
 *           a QKV_ERR_INVALID_ARGUMENT when bytes is 0, of a
 *           QKV_ERR_OUT_OF_MEMORY when the allocation fails.
 *  @return  the block, or NULL on either error.
 *  Threads: safe.
 *  Memory:  the caller's; free with qkv_free, or free(). */
QKV_API void *qkv_alloc(size_t bytes);

/*! qkv_free() :
 *  Frees a block from qkv_alloc.
 *
 *    p  in: the block; NULL is a no-op
 *
 *  Errors:  none.
 *  @return  nothing.
 *  Threads: safe (on distinct blocks). */
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

/*! qkv_array_numel() :
 *  The number of elements of an array: the product of its shape, 1 for
 *  ndim 0.
 *
 *    a  in: the array (only ndim and shape are read)
 *
 *  Errors:  none; leaves the error detail alone.
 *  @return  the count; -1 when a is NULL, ndim is out of range, a dim is
 *           negative or the product of the nonzero dims overflows.
 *  Threads: safe. */
QKV_API int64_t qkv_array_numel(const qkv_array *a);

/*! qkv_array_free() :
 *  Frees the data of an array the library allocated and zeroes the struct.
 *
 *    a  in/out: the array; NULL, or an array already freed or zeroed, is a
 *       no-op
 *
 *  Errors:  none; leaves the error detail alone, so a caller may free before
 *           printing it.
 *  @return  nothing.
 *  Threads: safe (on distinct arrays). */
QKV_API void qkv_array_free(qkv_array *a);

/*! qkv_array_convert() :
 *  Converts src to dtype `to` into a new array. Supported: any of F32, F64,
 *  F16, BF16 to any of them (rounding to nearest even); BOOL, I32, I64 to
 *  F32/F64 and among each other.
 *
 *    dst  out: the new array; zeroed on failure
 *    src  in: the array to convert
 *    to   in: the dtype wanted
 *
 *  Errors:  QKV_ERR_NULL_ARGUMENT for a NULL pointer; QKV_ERR_INVALID_ARGUMENT
 *           for a rank or dim of src out of range; QKV_ERR_DTYPE for a
 *           conversion not listed above; QKV_ERR_OVERFLOW for I64 to I32 when
 *           a value does not fit (or a size that overflows);
 *           QKV_ERR_OUT_OF_MEMORY.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  allocates dst's data; free with qkv_array_free. */
QKV_API qkv_status qkv_array_convert(qkv_array *dst, const qkv_array *src, qkv_dtype to);

/*! qkv_array_as_tensor() :
 *  A view of a (rank 0 to 4) as the qkv_tensor the attention calls take:
 *  its dims with leading 1s, so (L, E) becomes (1, 1, L, E) and (B, H, L,
 *  E) stays; contiguous strides; the data not copied. The bridge between
 *  arrays read from files (or the layer's plain row-major buffers, described
 *  by a qkv_array) and the attention's strided views.
 *
 *    a    in: the array; ndim 0..4
 *    out  out: the view; zeroed (data NULL) on failure
 *
 *  Errors:  QKV_ERR_NULL_ARGUMENT for a or out NULL; QKV_ERR_SHAPE for a
 *           rank above 4, a negative rank or dim (the detail says which);
 *           QKV_ERR_OVERFLOW when the strides do not fit int64_t.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  none; the view lives as long as a's data. */
QKV_API qkv_status qkv_array_as_tensor(const qkv_array *a, qkv_tensor *out);

/* ------------------------------------------------------------------- .npy */

/*! qkv_npy_read() :
 *  Reads a NumPy .npy file (format versions 1.0, 2.0 and 3.0). Accepted:
 *  C order, little-endian (or byte-order-free) float32, float64, float16,
 *  bool, int32, int64; rank 0..QKV_ARRAY_MAX_DIMS. A pipe is read no
 *  further than the header promises, plus one byte.
 *
 *    path  in: the file
 *    out   out: the array; out->data is never NULL on success, even for
 *          zero elements; zeroed on failure
 *
 *  Errors:  anything else — Fortran order, big-endian, another dtype, a
 *           header that is not the dict NumPy writes or is longer than
 *           1 MiB, a data size that differs from the header's shape, a size
 *           that overflows (even when another dim is 0), one more byte from
 *           a pipe ("trailing bytes after the data") — fails with
 *           QKV_ERR_FORMAT (or QKV_ERR_OVERFLOW) and a detail that starts
 *           with the file name; QKV_ERR_IO when the file cannot be opened or
 *           read; QKV_ERR_NULL_ARGUMENT; QKV_ERR_OUT_OF_MEMORY.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  allocates out's data (qkv_alloc); the caller frees it with
 *           qkv_array_free. */
QKV_API qkv_status qkv_npy_read(const char *path, qkv_array *out);

/*! qkv_npy_parse() :
 *  The same as qkv_npy_read, from bytes in memory.
 *
 *    buf   in: the len bytes of a .npy file
 *    len   in: their count
 *    name  in, optional: used in error details (may be NULL)
 *    out   out: the array, as qkv_npy_read gives it
 *
 *  Errors:  as qkv_npy_read's, but for QKV_ERR_IO.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  allocates out's data (copied; buf may be freed after the call);
 *           free with qkv_array_free. */
QKV_API qkv_status qkv_npy_parse(const void *buf, size_t len, const char *name,
                                 qkv_array *out);

/*! qkv_npy_write() :
 *  Writes a as a .npy file, byte for byte as numpy.save would: version 1.0
 *  (a rank <= 32 header always fits), little-endian, C order. Creates or
 *  truncates path.
 *
 *    path  in: the file
 *    a     in: the array
 *
 *  Errors:  QKV_ERR_DTYPE for BF16, which has no .npy dtype;
 *           QKV_ERR_NULL_ARGUMENT; QKV_ERR_INVALID_ARGUMENT or
 *           QKV_ERR_OVERFLOW for a rank or shape out of range; QKV_ERR_IO.
 *           On failure the file may be partly written; callers that need
 *           atomic output write to a temporary name and rename.
 *  @return  QKV_OK, or the error.
 *  Threads: safe (on distinct paths). */
QKV_API qkv_status qkv_npy_write(const char *path, const qkv_array *a);

/*! qkv_npy_map() :
 *  Reads a .npy file as qkv_npy_read does (the same checks, the same
 *  result), but without copying its data where it can: a regular file on a
 *  little-endian host whose data is aligned for its dtype is mapped into
 *  memory (private, copy-on-write: out->data may be written, the file never
 *  changes). Anything else (a pipe, an empty array, a system without mmap)
 *  is read. Mind what every mapping implies: if the file is truncated while
 *  mapped, touching the pages it lost raises SIGBUS (the qkv tool catches it
 *  and says so); a file rewritten in place meanwhile shows its new bytes.
 *
 *    path  in: the file
 *    out   out: the array; zeroed on failure
 *
 *  Errors:  as qkv_npy_read's.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  the mapping or a block of the library's; free with
 *           qkv_array_free or qkv_free, never free(). */
QKV_API qkv_status qkv_npy_map(const char *path, qkv_array *out);

/*! qkv_npy_create() :
 *  Creates (or truncates) path as a .npy file of this dtype and shape,
 *  byte for byte what qkv_npy_write would write, and gives its data to fill
 *  in place: what the caller writes there is the file's content, with no
 *  copy. The disk space is reserved first, so a full disk fails here, never
 *  later. The system writes the pages back in its own time, as it does after
 *  write(). An array with no elements is written at once.
 *
 *    path   in: the file
 *    dtype  in: the element type
 *    ndim   in: the rank, 0..QKV_ARRAY_MAX_DIMS
 *    shape  in, (ndim): the dims
 *    out    out: the array; out->data (zeroed) is a shared mapping of the
 *           file's data (a one-byte buffer for no elements); zeroed on
 *           failure
 *
 *  Errors:  QKV_ERR_IO (a full disk among them); QKV_ERR_UNSUPPORTED where
 *           files cannot be mapped (no mmap, a big-endian host): use
 *           qkv_npy_write there; as qkv_npy_write's for the dtype and shape.
 *           On failure the file may exist, partly written.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  qkv_array_free (or qkv_free, never free()) unmaps it. */
QKV_API qkv_status qkv_npy_create(const char *path, qkv_dtype dtype, int ndim, const int64_t *shape,
                                  qkv_array *out);

/* -------------------------------------------------------------------- GEMM */

/* The matrix multiply under the layer's projections, callable on its own. */
typedef enum qkv_gemm_transpose {
    QKV_GEMM_NO_TRANS = 0, /* use the matrix as stored */
    QKV_GEMM_TRANS         /* use its transpose */
} qkv_gemm_transpose;

/*! qkv_sgemm() :
 *  C = alpha * op(A) * op(B) + beta * C in F32, every matrix row-major, with
 *  the library's own blocked kernel. A build configured with -DQKV_BLAS=ON
 *  calls the system BLAS (cblas_sgemm) instead when the context's isa is
 *  QKV_ISA_AUTO (its threads are the BLAS library's own).
 *
 *    ctx     in, optional: the threads and the isa; NULL for the default
 *    ta, tb  in: QKV_GEMM_TRANS to use A's (B's) transpose
 *    m, n, k in: op(A) is m x k, op(B) k x n, C m x n; each >= 0, any may be 0
 *    alpha   in: multiplies op(A) op(B)
 *    a, lda  in, F32: A stored m x k (lda >= k) or, with ta == QKV_GEMM_TRANS,
 *            k x m (lda >= m)
 *    b, ldb  in, F32: B stored k x n (ldb >= n) or, with tb == QKV_GEMM_TRANS,
 *            n x k (ldb >= k)
 *    beta    in: multiplies C; beta == 0 means C is only written (NaN or
 *            garbage in C does not leak through)
 *    c, ldc  in/out, F32: C, m x n (ldc >= n)
 *
 *  Leading dimensions are in elements. k == 0 or alpha == 0 scales C by beta
 *  without reading A or B. C must share no byte with A or B where they are
 *  read. The test is on the bytes a matrix reaches (rows - 1 rows of its
 *  leading dimension, then one row as wide as the matrix), so matrices that
 *  interleave in one buffer count as overlapping and matrices that only
 *  touch do not; A and B may share bytes.
 *  Errors:  QKV_ERR_INVALID_ARGUMENT for such an overlap, or a non-empty
 *           matrix whose pointer is not aligned to 4 bytes (a detail naming
 *           them: "C and A overlap in memory; ..."), a negative size, a
 *           leading dimension too small;
 *           QKV_ERR_NULL_ARGUMENT for a NULL non-empty matrix;
 *           QKV_ERR_OVERFLOW for a matrix whose extent does not fit;
 *           QKV_ERR_UNSUPPORTED for an isa this build or CPU lacks;
 *           QKV_ERR_OUT_OF_MEMORY.
 *  @return  QKV_OK, or the error.
 *  Threads: safe. Results are bitwise the same for any thread count with
 *           one instruction set.
 *  Memory:  scratch per call (or the context's workspace): O(threads x
 *           cache blocks), or for a C of at
 *           most 4 rows (a decode step's projections) m x k floats plus
 *           threads x m x 64. */
QKV_API qkv_status qkv_sgemm(qkv_context *ctx, qkv_gemm_transpose ta, qkv_gemm_transpose tb,
                             int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                             int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                             int64_t ldc);

/*! qkv_gemm() :
 *  qkv_sgemm with A and B in F32, F16 or BF16, each its own dtype, and C
 *  in F32: C = alpha * op(A) * op(B) + beta * C. The 16-bit operands are
 *  widened exactly as they are packed (or, for a C of at most 4 rows, as
 *  each slice of B is read) and every product and sum is F32, by the same
 *  microkernels as qkv_sgemm: the result equals qkv_sgemm's on the
 *  widened matrices, bit for bit, with one instruction set; except that
 *  with QKV_ISA_AVX512_BF16 a BF16 x BF16 product of more than 4 rows
 *  runs on bf16 dot products (the same exact products, summed two at a
 *  time in another order). A weight
 *  matrix kept in bf16 is read at half its F32 bytes (the layer's decode
 *  projections). Two F32 operands are qkv_sgemm exactly (the system BLAS
 *  too, where it is used).
 *
 *    a_dtype, b_dtype  in: F32, F16 or BF16
 *    a, b              in: A and B in those dtypes; lda, ldb in elements
 *    the rest: as qkv_sgemm
 *
 *  Errors:  those of qkv_sgemm; QKV_ERR_DTYPE for a_dtype or b_dtype
 *           outside the three ("a_dtype: dtype i32, ..."); pointers must be
 *           aligned to their dtype's size.
 *  @return  QKV_OK, or the error.
 *  Threads: safe; bitwise the same for any thread count with one
 *           instruction set.
 *  Memory:  as qkv_sgemm, plus for a 16-bit operand of a C of more than 4
 *           rows a widening buffer per thread (a block's row or a panel's
 *           rows; none for the pairs of BF16 x BF16 on AVX512_BF16). */
QKV_API qkv_status qkv_gemm(qkv_context *ctx, qkv_gemm_transpose ta, qkv_gemm_transpose tb,
                            int64_t m, int64_t n, int64_t k, float alpha, const void *a,
                            qkv_dtype a_dtype, int64_t lda, const void *b, qkv_dtype b_dtype,
                            int64_t ldb, float beta, float *c, int64_t ldc);

/*! qkv_gemm_workspace() :
 *  The scratch, in bytes, that qkv_gemm with these transposes, sizes and
 *  dtypes takes under ctx, as qkv_sgemm_workspace says for qkv_sgemm.
 *
 *    a_dtype, b_dtype  in: as qkv_gemm
 *    bytes             out: the size; 0 when the call needs none
 *    the rest: as qkv_sgemm_workspace
 *
 *  Errors:  those of qkv_sgemm_workspace; QKV_ERR_DTYPE as qkv_gemm's.
 *  @return  QKV_OK, or the error (*bytes 0).
 *  Threads: safe. */
QKV_API qkv_status qkv_gemm_workspace(qkv_context *ctx, qkv_gemm_transpose ta,
                                      qkv_gemm_transpose tb, int64_t m, int64_t n, int64_t k,
                                      qkv_dtype a_dtype, qkv_dtype b_dtype, size_t *bytes);

/*! qkv_sgemm_workspace() :
 *  The scratch, in bytes, that qkv_sgemm with these transposes and sizes
 *  takes under ctx (qkv_context_set_workspace), whatever alpha, beta and
 *  the leading dimensions (a call with alpha == 0 or k == 0 takes none).
 *
 *    bytes  out: the size; 0 when the call needs none (the system BLAS
 *           manages its own)
 *    the rest: as qkv_sgemm
 *
 *  Errors:  QKV_ERR_NULL_ARGUMENT for bytes NULL; QKV_ERR_INVALID_ARGUMENT
 *           for a bad transpose or a negative size; QKV_ERR_UNSUPPORTED for
 *           an isa this build or CPU lacks.
 *  @return  QKV_OK, or the error (*bytes 0).
 *  Threads: safe. */
QKV_API qkv_status qkv_sgemm_workspace(qkv_context *ctx, qkv_gemm_transpose ta,
                                       qkv_gemm_transpose tb, int64_t m, int64_t n, int64_t k,
                                       size_t *bytes);

/* ------------------------------------------------------------ .safetensors */

/* A parsed .safetensors file: a JSON header naming tensors (dtype, shape,
 * byte offsets) followed by their little-endian data. Opaque; free with
 * qkv_safetensors_free. */
typedef struct qkv_safetensors qkv_safetensors;

/*! qkv_safetensors_read() :
 *  Reads and checks a whole .safetensors file. Strict: the header must be
 *  valid JSON of the documented form (an object mapping names to
 *  {"dtype", "shape", "data_offsets"}, plus an optional "__metadata__" object
 *  of strings), names unique, dtypes among those the format defines, each
 *  tensor's byte length equal to its shape times its element size, and the
 *  tensors' byte ranges must tile the data section exactly; only spaces may
 *  follow the JSON object, and tensor names may not contain U+0000. The
 *  header length must be 1 to 100000000 bytes (the format's own limit) and
 *  within the file. A pipe or other stream is read no further than the
 *  header length and the data_offsets promise, plus one byte.
 *
 *    path  in: the file
 *    out   out: the parsed file; NULL on failure
 *
 *  Errors:  anything else — more bytes from a stream ("trailing bytes"), as
 *           .npy streams do, among it — fails with QKV_ERR_FORMAT (or
 *           QKV_ERR_OVERFLOW) and a detail that starts with the file name;
 *           QKV_ERR_IO when the file cannot be opened or read;
 *           QKV_ERR_NULL_ARGUMENT; QKV_ERR_OUT_OF_MEMORY.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  the whole file is held in *out; free with qkv_safetensors_free. */
QKV_API qkv_status qkv_safetensors_read(const char *path, qkv_safetensors **out);

/*! qkv_safetensors_parse() :
 *  The same as qkv_safetensors_read, from bytes in memory.
 *
 *    buf   in: the len bytes of a .safetensors file
 *    len   in: their count
 *    name  in, optional: used in error details (may be NULL)
 *    out   out: the parsed file; NULL on failure
 *
 *  Errors:  as qkv_safetensors_read's, but for QKV_ERR_IO.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  buf is copied (it may be freed after the call); free *out with
 *           qkv_safetensors_free. */
QKV_API qkv_status qkv_safetensors_parse(const void *buf, size_t len, const char *name,
                                         qkv_safetensors **out);

/*! qkv_safetensors_free() :
 *  Frees a parsed file and everything it holds.
 *
 *    st  in: the file; NULL is a no-op
 *
 *  Errors:  none; leaves the error detail alone.
 *  @return  nothing.
 *  Threads: not while another thread reads st. */
QKV_API void qkv_safetensors_free(qkv_safetensors *st);

/*! qkv_safetensors_count() :
 *  The number of tensors in a parsed file.
 *
 *    st  in: the file
 *
 *  Errors:  none.
 *  @return  the count (0 for a NULL st).
 *  Threads: safe. */
QKV_API int64_t qkv_safetensors_count(const qkv_safetensors *st);

/*! qkv_safetensors_name() :
 *  The name of tensor i, in the order of the file's header.
 *
 *    st  in: the file
 *    i   in: 0 <= i < qkv_safetensors_count(st)
 *
 *  Errors:  none.
 *  @return  the name; NULL for an i out of range.
 *  Threads: safe.
 *  Memory:  the string lives as long as st. */
QKV_API const char *qkv_safetensors_name(const qkv_safetensors *st, int64_t i);

/*! qkv_safetensors_find() :
 *  Looks a tensor up by name and describes it.
 *
 *    st    in: the file
 *    name  in: the tensor's name
 *    info  out, optional (NULL): its dtype, ndim and shape (info->data is
 *          set to NULL); the dtype of a tensor whose format dtype has no
 *          qkv_dtype (I8, U8, ...) is reported as -1 cast to qkv_dtype
 *
 *  Errors:  none; never fails.
 *  @return  1 when st has the tensor, 0 otherwise.
 *  Threads: safe. */
QKV_API int qkv_safetensors_find(const qkv_safetensors *st, const char *name, qkv_array *info);

/*! qkv_safetensors_get() :
 *  Copies one tensor out of a parsed file into a new array, converting as
 *  qkv_array_convert does; F32, F16, BF16, F64, I32, I64 and BOOL tensors
 *  are supported.
 *
 *    st    in: the file
 *    name  in: the tensor's name
 *    to    in: the dtype wanted
 *    out   out: the array; zeroed on failure
 *
 *  Errors:  QKV_ERR_INVALID_ARGUMENT for a missing name; QKV_ERR_DTYPE for
 *           an unsupported dtype (the detail names the file and the tensor);
 *           QKV_ERR_NULL_ARGUMENT; as qkv_array_convert's.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  allocates out's data; free with qkv_array_free. */
QKV_API qkv_status qkv_safetensors_get(const qkv_safetensors *st, const char *name, qkv_dtype to,
                                       qkv_array *out);

/*! qkv_safetensors_write() :
 *  Writes n named arrays as a .safetensors file in the given order, with no
 *  metadata. Creates or truncates path.
 *
 *    path    in: the file
 *    n       in: the number of arrays
 *    names   in, (n): their names: unique, non-empty, valid UTF-8 and not
 *            "__metadata__"
 *    arrays  in, (n): the arrays: F32, F64, F16, BF16, I32, I64 or BOOL
 *
 *  Errors:  QKV_ERR_INVALID_ARGUMENT for a name that breaks the rules above;
 *           QKV_ERR_DTYPE for another dtype; QKV_ERR_NULL_ARGUMENT;
 *           QKV_ERR_OVERFLOW; QKV_ERR_OUT_OF_MEMORY; QKV_ERR_IO. On failure
 *           the file may be partly written.
 *  @return  QKV_OK, or the error.
 *  Threads: safe (on distinct paths). */
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
 * Wo (D, H*Ev); biases bq (H*E), bk (Hkv*E), bv (Hkv*Ev), bo (D).
 *
 * The buffers of the layer's calls (x, y, context, their gradients, the
 * parameters, the KV cache's storage) are plain float pointers, checked as
 * byte ranges: an output may share no byte with another output, an input
 * or the layer's parameters, and every pointer of a non-empty buffer must
 * be aligned to 4 bytes (QKV_ERR_INVALID_ARGUMENT otherwise, the detail
 * naming the pair, "y and x overlap in memory; ...", or the pointer).
 * Inputs may share bytes. */

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
    /* The dtype the four projection weights are kept in: QKV_DTYPE_F32 (0,
     * the default), QKV_DTYPE_F16 or QKV_DTYPE_BF16 (biases stay F32). A
     * 16-bit layer's projections are qkv_gemm calls that read the weights
     * as they are, widened exactly, so its results are the F32 layer's
     * on the same (rounded) weights, bit for bit, and a decode step reads
     * half the weight bytes. */
    qkv_dtype weight_dtype;
} qkv_mha_config;

/* A layer: its configuration and its parameters. Opaque. A layer may be
 * read by several threads at once (forward, backward, decode) but must not
 * be written (qkv_mha_param's pointer) meanwhile. */
typedef struct qkv_mha qkv_mha;

/*! qkv_mha_create() :
 *  Creates a layer with every parameter zero.
 *
 *    out  out: the layer; NULL on failure
 *    cfg  in: the configuration, checked
 *
 *  Errors:  QKV_ERR_INVALID_ARGUMENT / QKV_ERR_SHAPE / QKV_ERR_OVERFLOW for a
 *           configuration out of range (the detail names the field);
 *           QKV_ERR_NULL_ARGUMENT; QKV_ERR_OUT_OF_MEMORY.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  allocates the layer (its parameters in one qkv_alloc block);
 *           free with qkv_mha_free. */
QKV_API qkv_status qkv_mha_create(qkv_mha **out, const qkv_mha_config *cfg);

/*! qkv_mha_free() :
 *  Frees a layer and its parameters.
 *
 *    m  in: the layer; NULL is a no-op
 *
 *  Errors:  none.
 *  @return  nothing.
 *  Threads: not while another thread uses m. */
QKV_API void qkv_mha_free(qkv_mha *m);

/*! qkv_mha_get_config() :
 *  The layer's configuration with every 0 default filled in.
 *
 *    m  in: the layer
 *
 *  Errors:  none.
 *  @return  the configuration.
 *  Threads: safe. */
QKV_API qkv_mha_config qkv_mha_get_config(const qkv_mha *m);

typedef enum qkv_mha_param {
    QKV_MHA_WQ = 0, QKV_MHA_WK, QKV_MHA_WV, QKV_MHA_WO,
    QKV_MHA_BQ, QKV_MHA_BK, QKV_MHA_BV, QKV_MHA_BO
} qkv_mha_param;
#define QKV_MHA_NUM_PARAMS 8

/*! qkv_mha_param_data() :
 *  The layer's own storage for one parameter, row-major, to read or fill.
 *
 *    m      in: the layer
 *    which  in: the parameter
 *    rows   out, optional (NULL): its rows (a bias is 1 x n)
 *    cols   out, optional (NULL): its columns
 *
 *  Errors:  none.
 *  @return  the parameter's floats; NULL, with *rows = *cols = 0, for a bias
 *           the layer does not have, a value outside the enum, or a weight
 *           kept in F16 or BF16 (qkv_mha_param_view gives those).
 *  Threads: writing through the pointer is not safe while another thread
 *           reads the layer (qkv_mha).
 *  Memory:  the layer's; valid until qkv_mha_free. */
QKV_API float *qkv_mha_param_data(qkv_mha *m, qkv_mha_param which, int64_t *rows, int64_t *cols);

/*! qkv_mha_param_view() :
 *  qkv_mha_param_data for a parameter of any dtype: its storage and the
 *  dtype it is kept in (the config's weight_dtype for a weight, F32 for a
 *  bias).
 *
 *    m, which, rows, cols  as qkv_mha_param_data
 *    dtype  out, optional (NULL): the dtype
 *
 *  Errors:  none.
 *  @return  the parameter's data; NULL (rows, cols 0) as qkv_mha_param_data
 *           says, but for 16-bit weights, which it gives.
 *  Threads: as qkv_mha_param_data.
 *  Memory:  the layer's; valid until qkv_mha_free. */
QKV_API void *qkv_mha_param_view(qkv_mha *m, qkv_mha_param which, qkv_dtype *dtype, int64_t *rows,
                                 int64_t *cols);

/*! qkv_mha_load() :
 *  Creates a layer from parameters in a .safetensors file, F32, F16 or
 *  BF16, converted to the weight_dtype cfg asks for (F32 by default; a
 *  bf16 checkpoint loaded with weight_dtype BF16 keeps its weights
 *  exactly, at half the memory) and biases to F32. Names, each looked up
 *  with `prefix`
 *  prepended:
 *    PyTorch nn.MultiheadAttention: in_proj_weight (3D, D) holding Wq, Wk,
 *      Wv stacked, or q_proj_weight, k_proj_weight, v_proj_weight (when
 *      kdim = vdim differs from D; kdim != vdim is refused, the layer
 *      having one context); in_proj_bias (3D); out_proj.weight,
 *      out_proj.bias;
 *    separate projections: q_proj.weight, k_proj.weight, v_proj.weight,
 *      o_proj.weight and optional .bias of each (these allow Hkv < H).
 *
 *    out     out: the layer; NULL on failure
 *    cfg     in: heads, kv_heads, rope, rope_base, weight_dtype; its dims may be 0, to
 *            be taken from the tensors' shapes, or given, to be checked
 *            against them; bias is taken from the file (all four present, or
 *            none)
 *    st      in: the parsed file
 *    prefix  in, optional: NULL or "" for none, e.g. "layers.0.self_attn."
 *
 *  Errors:  a missing, duplicated or mis-shaped tensor fails (QKV_ERR_FORMAT,
 *           QKV_ERR_SHAPE, QKV_ERR_DTYPE) with a detail naming it and the
 *           shape expected; QKV_ERR_UNSUPPORTED for what the layer cannot
 *           hold; QKV_ERR_INVALID_ARGUMENT for a configuration or prefix out
 *           of range; QKV_ERR_NULL_ARGUMENT; QKV_ERR_OUT_OF_MEMORY.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  as qkv_mha_create; free with qkv_mha_free. */
QKV_API qkv_status qkv_mha_load(qkv_mha **out, const qkv_mha_config *cfg, const qkv_safetensors *st,
                                const char *prefix);

/*! qkv_mha_save() :
 *  Saves the layer's parameters to a .safetensors file under the
 *  separate-projection names (q_proj.weight, ..., o_proj.bias).
 *
 *    m       in: the layer
 *    path    in: the file, created or truncated
 *    prefix  in, optional: prepended to every name
 *
 *  Errors:  as qkv_safetensors_write's; QKV_ERR_NULL_ARGUMENT;
 *           QKV_ERR_INVALID_ARGUMENT for a prefix too long.
 *  @return  QKV_OK, or the error.
 *  Threads: safe (on distinct paths). */
QKV_API qkv_status qkv_mha_save(const qkv_mha *m, const char *path, const char *prefix);

/*! qkv_mha_forward() :
 *  Forward of the layer: Y from X (and a context), as the section's
 *  introduction defines it.
 *
 *    ctx      in, optional: how the call runs (threads, isa, backend,
 *             progress); NULL for the default context
 *    m        in: the layer
 *    y        out, F32 (B, Lq, D) contiguous
 *    weights  out, optional (NULL), F32 (B, H, Lq, Lk) contiguous: the
 *             attention weights of every head
 *    x        in, F32 (B, Lq, D) contiguous
 *    batch    in: B
 *    lq       in: Lq
 *    context  in, optional, F32 (B, Lk, Dkv) contiguous, or NULL for
 *             self-attention (then Lk = Lq and the context is x; Dkv must
 *             equal D)
 *    lk       in: Lk
 *    opts     in, optional: the attention options (masks of (B, H, Lq, Lk)
 *             broadcasting, causal, window, kv_lens, softcap, scale); NULL
 *             for the defaults. The projections and the attention run as
 *             ctx says; its progress reports the attention's share of the
 *             work.
 *
 *  Errors:  QKV_ERR_INVALID_ARGUMENT for buffers that break the section's
 *           rule (y and weights are the outputs; x, context and the
 *           parameters the inputs) or a negative size; QKV_ERR_SHAPE for a
 *           NULL context with lk != lq
 *           or Dkv != D; QKV_ERR_NULL_ARGUMENT; QKV_ERR_OVERFLOW;
 *           QKV_ERR_OUT_OF_MEMORY; the attention's and qkv_sgemm's.
 *  @return  QKV_OK, or the error.
 *  Threads: safe. Bitwise the same for any thread count.
 *  Memory:  scratch: Q, K, V and A, about
 *           B x (Lq (H E + H Ev) + Lk Hkv (E + Ev)) floats, plus the
 *           attention's. */
QKV_API qkv_status qkv_mha_forward(qkv_context *ctx, const qkv_mha *m, float *y, float *weights,
                                   const float *x, int64_t batch, int64_t lq,
                                   const float *context, int64_t lk,
                                   const qkv_attention_options *opts);

/*! qkv_mha_backward() :
 *  Backward of qkv_mha_forward for the same inputs and options, given
 *  dy = dL/dY. The forward's activations are recomputed from x and context
 *  (one more forward's work), so nothing needs keeping between the calls;
 *  the attention part uses qkv_attention_backward.
 *
 *    ctx      in, optional: how the call runs (threads, isa, backend,
 *             progress); NULL for the default context
 *    m         in: the layer
 *    grad      out: a layer created with m's configuration (its weight_dtype
 *              F32 whatever m's: gradients are kept in F32) whose parameters
 *              are overwritten with dL/dW and dL/db of m's
 *    dx        out, optional (NULL), F32 (B, Lq, D): dL/dX; for
 *              self-attention it includes the paths through K and V
 *    dcontext  out, optional (NULL), F32 (B, Lk, Dkv): dL/dC; only with a
 *              context
 *    dy        in, F32 (B, Lq, D): dL/dY
 *    x, batch, lq, context, lk, opts   in: as given to the forward
 *
 *  Errors:  as the forward's, with dx, dcontext and grad's parameters as
 *           the outputs and dy, x, context and m's parameters as the inputs
 *           of the section's rule; QKV_ERR_SHAPE for a grad of another
 *           configuration; QKV_ERR_INVALID_ARGUMENT for grad == m, or
 *           dcontext without a context.
 *  @return  QKV_OK, or the error.
 *  Threads: safe (distinct grad layers). Bitwise the same for any thread
 *           count.
 *  Memory:  scratch: the forward's activations and their gradients. */
QKV_API qkv_status qkv_mha_backward(qkv_context *ctx, const qkv_mha *m, qkv_mha *grad, float *dx,
                                    float *dcontext, const float *dy, const float *x,
                                    int64_t batch, int64_t lq, const float *context, int64_t lk,
                                    const qkv_attention_options *opts);

/* ---------------------------------------------------------------- KV cache */

/* Keys and values (after RoPE) of a batch of sequences for one layer,
 * each sequence up to max_len tokens, for incremental decoding. Memory:
 * B x Hkv x max_len x (E + Ev) elements of its format, allocated once.
 * Opaque. */
typedef struct qkv_kv_cache qkv_kv_cache;

/* How a cache stores its keys and values. F32 keeps what the layer
 * computes; F16 and BF16 round each appended element once (to nearest
 * even) and halve the bytes a decode step reads; Q8_0 and Q4_0 (the block
 * formats of QKV_DTYPE_Q8_0 and _Q4_0, llama.cpp's) quantize each row of
 * the head dim in blocks of 32 as it is appended, about 1.06 and 0.56
 * bytes a value, and need a head dim that is a multiple of 32. */
typedef enum qkv_kv_format {
    QKV_KV_F32 = 0,
    QKV_KV_F16,
    QKV_KV_BF16,
    QKV_KV_Q8_0,
    QKV_KV_Q4_0
} qkv_kv_format;

/* Options for qkv_kv_cache_create_with; zero-initialised (or NULL) means
 * an F32 cache, what qkv_kv_cache_create makes. Versioned as
 * qkv_attention_options is (struct_size). */
typedef struct qkv_kv_cache_options {
    size_t struct_size; /* 0, or sizeof(qkv_kv_cache_options) */
    /* The keys' and the values' format, each on its own (K in Q8_0 and
     * V in Q4_0, say), except that two float formats must be the same: a
     * decode step's attention takes K and V in one float dtype (and
     * rounds its queries to it: qkv_mha_decode) or a block format. */
    qkv_kv_format k_format, v_format;
    /* A rolling cache (StreamingLLM's, and a sliding-window layer's):
     * nonzero keeps, of every sequence, its first `sinks` tokens and its
     * last max_len - sinks, in max_len rows, however long it runs; a new
     * token takes the row of the oldest one past the sinks. Its length
     * (qkv_kv_cache_length) counts every token appended, so RoPE's
     * positions stay right, and a decode step attends to the kept tokens
     * only. 0: the cache holds max_len tokens and refuses more. */
    int rolling;
    int64_t sinks; /* 0 <= sinks < max_len; a rolling cache's only */
} qkv_kv_cache_options;

/*! qkv_kv_cache_create() :
 *  Creates an empty cache for `batch` sequences of layer m's shape (the
 *  cache keeps m's Hkv, E, Ev, not m itself).
 *
 *    out      out: the cache; NULL on failure
 *    m        in: the layer
 *    batch    in: B, >= 1
 *    max_len  in: the most tokens a sequence holds, >= 1
 *
 *  Errors:  QKV_ERR_INVALID_ARGUMENT for batch or max_len < 1;
 *           QKV_ERR_OVERFLOW for a cache too large to count;
 *           QKV_ERR_NULL_ARGUMENT; QKV_ERR_OUT_OF_MEMORY.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  allocates the cache (its storage from qkv_alloc); free with
 *           qkv_kv_cache_free. */
QKV_API qkv_status qkv_kv_cache_create(qkv_kv_cache **out, const qkv_mha *m, int64_t batch,
                                       int64_t max_len);

/*! qkv_kv_cache_create_with() :
 *  qkv_kv_cache_create with options: the format of the keys and values.
 *
 *    out, m, batch, max_len  as qkv_kv_cache_create
 *    opts     in, optional: NULL (or zeros) for F32
 *
 *  Errors:  those of qkv_kv_cache_create; QKV_ERR_INVALID_ARGUMENT for a
 *           format outside qkv_kv_format ("opts.k_format: 7 is not a
 *           qkv_kv_format"), for two float formats that differ, and for a
 *           struct_size below the struct's; QKV_ERR_SHAPE for a block
 *           format on a head dim that is not a multiple of 32;
 *           QKV_ERR_UNSUPPORTED for a newer caller's field this library
 *           does not know.
 *  @return  QKV_OK, or the error.
 *  Threads: safe.
 *  Memory:  as qkv_kv_cache_create. */
QKV_API qkv_status qkv_kv_cache_create_with(qkv_kv_cache **out, const qkv_mha *m, int64_t batch,
                                            int64_t max_len, const qkv_kv_cache_options *opts);

/*! qkv_kv_cache_free() :
 *  Frees a cache and its storage; its views are then invalid.
 *
 *    c  in: the cache; NULL is a no-op
 *
 *  Errors:  none.
 *  @return  nothing.
 *  Threads: not while another thread uses c. */
QKV_API void qkv_kv_cache_free(qkv_kv_cache *c);

/*! qkv_kv_cache_length() :
 *  The number of tokens held for one sequence.
 *
 *    c  in: the cache
 *    b  in: the sequence, 0 <= b < B
 *
 *  Errors:  none.
 *  @return  the length; -1 for a b out of range.
 *  Threads: not while another thread changes c. */
QKV_API int64_t qkv_kv_cache_length(const qkv_kv_cache *c, int64_t b);

/*! qkv_kv_cache_truncate() :
 *  Keeps the first len tokens of one sequence; len = 0 resets it. A
 *  rolling cache that has let tokens go truncates only to 0.
 *
 *    c    in/out: the cache
 *    b    in: the sequence, 0 <= b < B
 *    len  in: 0 <= len <= its length
 *
 *  Errors:  QKV_ERR_INVALID_ARGUMENT for b or len out of range;
 *           QKV_ERR_NULL_ARGUMENT.
 *  @return  QKV_OK, or the error.
 *  Threads: not thread-safe on one cache. */
QKV_API qkv_status qkv_kv_cache_truncate(qkv_kv_cache *c, int64_t b, int64_t len);

/*! qkv_kv_cache_bytes() :
 *  The bytes a cache holds (its storage and bookkeeping).
 *
 *    c  in: the cache
 *
 *  Errors:  none.
 *  @return  the bytes.
 *  Threads: safe. */
QKV_API size_t qkv_kv_cache_bytes(const qkv_kv_cache *c);

/*! qkv_kv_cache_append() :
 *  Appends n tokens' keys and values to one sequence as they are to be
 *  stored, i.e. already rotated by RoPE where the layer has it: for keys
 *  computed elsewhere (a prompt processed by another program, a saved
 *  cache). A 16-bit cache stores each element rounded to its format, a
 *  Q8_0 or Q4_0 one each row quantized (quant: a NaN or an infinity turns
 *  its block of 32 to NaN; a finite value too large for the format, |x|
 *  above about 8.3e6 for Q8_0 or 5.2e5 for Q4_0, is an error).
 *
 *    c  in/out: the cache
 *    b  in: the sequence, 0 <= b < B
 *    k  in, F32 (n, Hkv, E) row-major: the keys, the layout of the K
 *       projection's rows
 *    v  in, F32 (n, Hkv, Ev) row-major: the values, likewise
 *    n  in: the tokens, >= 0
 *
 *  k and v may be read from an F32 cache itself (a view of another
 *  sequence, to copy it) but must not overlap the rows they are stored to
 *  (sequence b's from its length on).
 *  Errors:  QKV_ERR_INVALID_ARGUMENT, changing nothing, when the sequence
 *           would pass max_len (never for a rolling cache, whose oldest
 *           rows past the sinks go), for a value a block format cannot hold
 *           ("k: 1 blocks of 32 hold values too large for the cache's
 *           q8_0 ..."), for such an overlap, for k or v not aligned
 *           to 4 bytes (the detail naming them), or b or n out of range;
 *           QKV_ERR_NULL_ARGUMENT.
 *  @return  QKV_OK, or the error.
 *  Threads: not thread-safe on one cache. */
QKV_API qkv_status qkv_kv_cache_append(qkv_kv_cache *c, int64_t b, const float *k, const float *v,
                                       int64_t n);

/*! qkv_kv_cache_view() :
 *  Views of one sequence's cached keys and values.
 *
 *    c  in: the cache
 *    b  in: the sequence, 0 <= b < B
 *    k  out, optional (NULL), (1, Hkv, len, E): the keys, in the cache's
 *       format (QKV_DTYPE_F32, _F16 or _BF16)
 *    v  out, optional (NULL), (1, Hkv, len, Ev): the values, likewise
 *
 *  Errors:  QKV_ERR_INVALID_ARGUMENT for b out of range;
 *           QKV_ERR_NULL_ARGUMENT.
 *  @return  QKV_OK, or the error.
 *  Threads: safe to read while no thread changes c.
 *  Memory:  the cache's; valid until the cache is freed. Their data may be
 *           read, and written to change the cache. */
QKV_API qkv_status qkv_kv_cache_view(qkv_kv_cache *c, int64_t b, qkv_tensor *k, qkv_tensor *v);

/*! qkv_mha_decode() :
 *  One decode step for every sequence of the cache: the new tokens' k and v
 *  are appended to the cache at positions len_b .. len_b + n - 1 (after
 *  RoPE there), then their queries attend the sequence's len_b + n cached
 *  tokens with causal bottom-right alignment (token t sees positions up to
 *  len_b + t), and y is written. The same output as the full sequence
 *  through qkv_mha_forward with opts->causal set (to rounding of the
 *  attention's key splitting). A rolling cache takes the step token by
 *  token, each attending to the rows the cache holds after storing it
 *  (its sinks and the latest tokens): the forward under the mask that
 *  keeps those. With a Q8_0 or Q4_0 side the attention
 *  reads its keys (values) dequantized exactly, the queries as they are.
 *  With an F16 or BF16 cache the attention
 *  runs in that dtype: the step's queries are rounded to it as the new
 *  keys and values are, the attention's output and weights stay F32, and
 *  the result differs from the F32 layer's by those roundings: each
 *  score moves by about the dtype's unit roundoff (2^-8 for BF16, 2^-11
 *  for F16) times the size of its terms, and each weight by as much in
 *  relative terms, so with scores of order one the output stays within
 *  that unit roundoff in relative L2 (tests/test_mha.c and the Python
 *  tests measure it), larger scores moving it more.
 *
 *    ctx      in, optional: how the call runs (threads, isa, backend,
 *             progress); NULL for the default context
 *    m        in: the layer
 *    c        in/out: the cache, made for m's shape
 *    y        out, F32 (B, n, D)
 *    weights  out, optional (NULL), F32 (B, H, n, len_max + n), with len_max
 *             the longest sequence before the step: zero beyond each
 *             sequence's own length; for a rolling cache (B, H, n,
 *             max_len), one weight per row it holds (zero past them)
 *    x        in, F32 (B, n, D): n new tokens per sequence (B is the cache's)
 *    n        in: >= 1
 *    opts     in, optional: may set scale, softcap and the window; causal
 *             is implied; the step's one attention call reports progress
 *
 *  Errors:  QKV_ERR_INVALID_ARGUMENT, leaving the cache as it was, for a
 *           step that would pass max_len or whose keys or values a block
 *           format cannot hold; for buffers that break the
 *           section's rule (y, weights and the cache's storage are the
 *           outputs; x and the layer's parameters the inputs); for a mask,
 *           kv_lens or positions in opts, or a window with a rolling cache
 *           (the cache knows the lengths). QKV_ERR_SHAPE for a cache of
 *           another shape; QKV_ERR_NULL_ARGUMENT; QKV_ERR_OVERFLOW;
 *           QKV_ERR_OUT_OF_MEMORY; the attention's and qkv_sgemm's.
 *  @return  QKV_OK, or the error.
 *  Threads: not thread-safe on one cache.
 *  Memory:  scratch: the step's Q, K, V and A, B x n x (H E + Hkv (E + Ev) +
 *           H Ev) floats (and for a 16-bit cache the queries rounded, B x
 *           n x H E halves), plus the attention's. */
QKV_API qkv_status qkv_mha_decode(qkv_context *ctx, const qkv_mha *m, qkv_kv_cache *c, float *y,
                                  float *weights, const float *x, int64_t n,
                                  const qkv_attention_options *opts);

/*! qkv_mha_kv_cost() :
 *  What a KV cache format costs each head: the layer's causal
 *  self-attention over x, its keys and values once as the layer computes
 *  them (f32) and once as a cache of `fmt`'s formats holds them (rounded
 *  or quantized on append; the queries rounded too where a format is F16
 *  or BF16, as decode does), compared head by head.
 *
 *    ctx    in, optional: how the attention calls run
 *    m      in: the layer (self-attention: d_context = d_model)
 *    x      in, F32 (B, L, D): the tokens, from position 0
 *    batch  in: B >= 1;  len: L >= 1
 *    fmt    in, optional: the formats (NULL or zeros: F32, which costs 0)
 *    kl     out, H + 1 doubles: for each head the mean over its B x L
 *           queries of the KL divergence of the weights, sum_j p_j
 *           log(p_j / p~_j) in nats (p the f32 cache's, p~ the format's;
 *           INFINITY where a weight the f32 cache gives is 0 in p~), then
 *           the mean over heads
 *    err    out, H + 1 doubles: for each head the relative L2 error of its
 *           attention output (B x L x Ev, before W_o), then over all heads
 *
 *  Errors:  those of qkv_kv_cache_create_with for fmt (a block format on
 *           a head dim that is not a multiple of 32, say) and of the
 *           attention; QKV_ERR_INVALID_ARGUMENT for batch or len < 1, or a
 *           value a block format cannot hold; QKV_ERR_SHAPE for a
 *           cross-attention layer; QKV_ERR_NULL_ARGUMENT;
 *           QKV_ERR_OUT_OF_MEMORY.
 *  @return  QKV_OK, or the error.
 *  Threads: safe (the attention's threads as ctx says).
 *  Memory:  a cache of B x L tokens in fmt, the f32 projections, and per
 *           block of queries two weight tiles of H x rows x L floats
 *           (rows chosen to keep them near 64 MB). */
QKV_API qkv_status qkv_mha_kv_cost(qkv_context *ctx, const qkv_mha *m, const float *x,
                                   int64_t batch, int64_t len, const qkv_kv_cache_options *fmt,
                                   double *kl, double *err);

#ifdef __cplusplus
}
#endif

#endif /* QKV_H */
