/* qkv_context: create, free, the setters (each checks its value, so that
 * a call never meets a bad one), and the default context. */
#include "context.h"

#include "common.h"
#include "threads.h"

#include <stdlib.h>
#include <string.h>

/* All zero: every CPU, QKV_ISA_AUTO, QKV_IMPL_AUTO, no progress, the
 * default pool. */
static const qkv_context default_context;

const qkv_context *qkv_context_get(const qkv_context *ctx)
{
    return ctx ? ctx : &default_context;
}

int qkv_context_resolved_threads(const qkv_context *ctx)
{
    const int n = qkv_context_get(ctx)->num_threads;
    const int t = n ? n : qkv_cpu_count();
    return t > QKV_MAX_THREADS ? QKV_MAX_THREADS : t;
}

qkv_status qkv_context_create(qkv_context **out)
{
    qkv_clear_error();
    if (!out) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "out: is NULL");
    qkv_context *c = calloc(1, sizeof *c);
    if (c && (!(c->pool = qkv_pool_create()) || !(c->lent = malloc(sizeof *c->lent)))) {
        qkv_pool_free(c->pool);
        free(c);
        c = NULL;
    }
    if (c) {
        c->lent->mem = NULL;
        c->lent->bytes = 0;
        atomic_flag_clear(&c->lent->busy);
    }
    *out = c;
    if (!c) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "context: out of memory");
    return QKV_OK;
}

void qkv_context_free(qkv_context *ctx)
{
    if (!ctx) return;
    qkv_pool_free(ctx->pool);
    free(ctx->lent);
    free(ctx);
}

int qkv_context_threads(const qkv_context *ctx) { return qkv_context_resolved_threads(ctx); }

qkv_status qkv_context_set_threads(qkv_context *ctx, int num_threads)
{
    qkv_clear_error();
    if (!ctx) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "ctx: is NULL");
    if (num_threads < 0)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "num_threads: %d, expected 0 (all CPUs) or more",
                        num_threads);
    ctx->num_threads = num_threads;
    return QKV_OK;
}

qkv_status qkv_context_set_isa(qkv_context *ctx, qkv_isa isa)
{
    qkv_clear_error();
    if (!ctx) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "ctx: is NULL");
    if (isa < QKV_ISA_AUTO || isa > QKV_ISA_AVX512_BF16)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "isa: %d is not a qkv_isa", (int)isa);
    ctx->isa = isa;
    return QKV_OK;
}

qkv_status qkv_context_set_impl(qkv_context *ctx, qkv_impl impl)
{
    qkv_clear_error();
    if (!ctx) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "ctx: is NULL");
    if (impl != QKV_IMPL_AUTO && impl != QKV_IMPL_REFERENCE)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "impl: %d is not a qkv_impl", (int)impl);
    ctx->impl = impl;
    return QKV_OK;
}

qkv_status qkv_context_set_workspace(qkv_context *ctx, void *mem, size_t bytes)
{
    qkv_clear_error();
    if (!ctx) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "ctx: is NULL");
    if (!mem != !bytes)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "workspace: mem %s with bytes %zu; give both, or NULL and 0 for none",
                        mem ? "given" : "NULL", bytes);
    if ((uintptr_t)mem % 64 != 0)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                        "workspace: mem %p is not 64-byte aligned (qkv_alloc or aligned_alloc(64, "
                        "...) give such memory)",
                        mem);
    ctx->lent->mem = mem;
    ctx->lent->bytes = bytes;
    return QKV_OK;
}

qkv_status qkv_scratch_get(const qkv_context *ctx, size_t bytes, const char *what, void **out)
{
    *out = NULL;
    if (bytes == 0) return QKV_OK;
    qkv_workspace *w = qkv_context_get(ctx)->lent;
    if (w && w->mem) {
        if (bytes > w->bytes)
            return qkv_fail(QKV_ERR_OUT_OF_MEMORY,
                            "workspace: this call needs %zu bytes of scratch, the context's "
                            "workspace has %zu (the *_workspace functions tell a call's size)",
                            bytes, w->bytes);
        if (atomic_flag_test_and_set(&w->busy))
            return qkv_fail(QKV_ERR_INVALID_ARGUMENT,
                            "workspace: another call is using this context's workspace (a "
                            "context with a workspace runs one call at a time)");
        *out = w->mem;
    } else if (!(*out = qkv_alloc(bytes))) {
        return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes of scratch for this "
                        "call", what, bytes);
    }
#ifdef QKV_POISON_WORKSPACE
    /* Sanitizer builds hand every call scratch of NaN bytes, so code that
     * reads scratch it has not written shows in the tests. */
    memset(*out, 0xff, bytes);
#endif
    return QKV_OK;
}

void qkv_scratch_release(const qkv_context *ctx, void *scratch)
{
    if (!scratch) return;
    qkv_workspace *w = qkv_context_get(ctx)->lent;
    if (w && scratch == w->mem)
        atomic_flag_clear(&w->busy);
    else
        qkv_free(scratch);
}

qkv_status qkv_context_set_progress(qkv_context *ctx, void (*fn)(void *user, double done),
                                    void *user)
{
    qkv_clear_error();
    if (!ctx) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "ctx: is NULL");
    ctx->progress = fn;
    ctx->progress_user = user;
    return QKV_OK;
}
