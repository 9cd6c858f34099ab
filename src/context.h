/* The execution context's fields (qkv.h's qkv_context): how a call runs.
 * Calls read it through qkv_context_get, which stands the default context
 * in for NULL. */
#ifndef QKV_CONTEXT_H
#define QKV_CONTEXT_H

#include "qkv.h"
#include "threads.h"

struct qkv_context {
    int num_threads; /* as set: 0 = one per CPU this process may run on */
    qkv_isa isa;
    qkv_impl impl;
    void (*progress)(void *user, double done); /* NULL = none */
    void *progress_user;
    qkv_pool *pool; /* its workers; NULL (the default context) = the default pool */
};

/* ctx, or the default context for NULL. */
const qkv_context *qkv_context_get(const qkv_context *ctx);

/* The worker threads a call under ctx uses at most, 0 resolved:
 * 1 .. QKV_MAX_THREADS. */
int qkv_context_resolved_threads(const qkv_context *ctx);

#endif
