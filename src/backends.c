/* The backend registry: every backend the library has, in the order auto
 * dispatch asks them (the fastest first, the reference last, since it
 * takes every call). A new backend is one file defining
 * `const qkv_backend qkv_backend_<name>` and one entry in QKV_BACKENDS. */
#include "backend.h"

#include "common.h"

#include <string.h>

#define QKV_BACKENDS(X) X(cpu) X(reference)

#define QKV_DECLARE_BACKEND(name) extern const qkv_backend qkv_backend_##name;
#define QKV_LIST_BACKEND(name) &qkv_backend_##name,
QKV_BACKENDS(QKV_DECLARE_BACKEND)
static const qkv_backend *const registry[] = {QKV_BACKENDS(QKV_LIST_BACKEND)};

int qkv_backend_count(void) { return (int)(sizeof registry / sizeof registry[0]); }

const qkv_backend *qkv_backend_at(int i)
{
    return i >= 0 && i < qkv_backend_count() ? registry[i] : NULL;
}

const qkv_backend *qkv_backend_choose(const char *name, const qkv_fwd_problem *f,
                                      const qkv_bwd_problem *b, qkv_status *st)
{
    const char *why = "";
    for (int i = 0; i < qkv_backend_count(); i++) {
        const qkv_backend *be = registry[i];
        if (name && strcmp(name, be->name) != 0) continue;
        if (be->supports(f, b, &why)) return be;
        if (name) {
            *st = qkv_fail(QKV_ERR_UNSUPPORTED, "impl: %s cannot compute this %s: %s", be->name,
                           b ? "backward" : "forward", why);
            return NULL;
        }
    }
    /* The reference takes every call, so auto dispatch always finds one. */
    *st = name ? qkv_fail(QKV_ERR_UNSUPPORTED, "impl: this build has no backend '%s'", name)
               : qkv_fail(QKV_ERR_UNSUPPORTED, "impl: no backend computes this call: %s", why);
    return NULL;
}
