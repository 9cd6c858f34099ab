/* The execution context's fields (qkv.h's qkv_context): how a call runs.
 * Calls read it through qkv_context_get, which stands the default context
 * in for NULL. */
#ifndef QKV_CONTEXT_H
#define QKV_CONTEXT_H

#include "qkv.h"
#include "threads.h"

#include <stdatomic.h>
#include <stddef.h>

/* Memory the caller lent a context for its calls' scratch
 * (qkv_context_set_workspace); busy while a call is using it. */
typedef struct qkv_workspace {
    void *mem; /* NULL: none lent, calls allocate */
    size_t bytes;
    atomic_flag busy;
} qkv_workspace;

struct qkv_context {
    int num_threads; /* as set: 0 = one per CPU this process may run on */
    qkv_isa isa;
    qkv_impl impl;
    void (*progress)(void *user, double done); /* NULL = none */
    void *progress_user;
    qkv_pool *pool; /* its workers; NULL (the default context) = the default pool */
    qkv_workspace *lent; /* NULL for the default context */
};

/* ctx, or the default context for NULL. */
const qkv_context *qkv_context_get(const qkv_context *ctx);

/* The worker threads a call under ctx uses at most, 0 resolved:
 * 1 .. QKV_MAX_THREADS. */
int qkv_context_resolved_threads(const qkv_context *ctx);

/* A call's scratch of `bytes` under ctx, into *out: the context's lent
 * memory when it has some (QKV_ERR_OUT_OF_MEMORY when it is too small
 * for the call, QKV_ERR_INVALID_ARGUMENT when another call is using it),
 * else a block allocated for the call; NULL for 0 bytes. `what` names the
 * call in the detail ("cpu", "qkv_sgemm"). Give it back with
 * qkv_scratch_release. */
qkv_status qkv_scratch_get(const qkv_context *ctx, size_t bytes, const char *what, void **out);

/* Gives back what qkv_scratch_get gave: the lent memory becomes free for
 * the next call, an allocated block is freed. */
void qkv_scratch_release(const qkv_context *ctx, void *scratch);

#endif
