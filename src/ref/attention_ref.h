/* The reference backend (attention_ref.c): DESIGN.md §1 step by step,
 * every sum in double. Besides its backend entry it offers other backends
 * the pieces they hand back to it: one row of a forward whose float
 * arithmetic overflowed, and a whole call. */
#ifndef QKV_REF_ATTENTION_REF_H
#define QKV_REF_ATTENTION_REF_H

#include "backend.h"

extern const qkv_backend qkv_backend_reference;

/* The reference backward of a whole call, in scratch it allocates. */
qkv_status qkv_ref_attention_backward(const qkv_bwd_problem *p);

/* One query row (b, h, i) of p by the reference, on the calling thread,
 * writing its O, weights and lse; for the fast path's rows whose float
 * scores overflowed. Returns 0 when its Lk + Ev doubles of scratch cannot
 * be allocated (nothing written), and sets no error detail (it may run on
 * a worker thread). */
int qkv_ref_attention_row(const qkv_fwd_problem *p, int64_t b, int64_t h, int64_t i);

/* Whether row (b, h, i) may attend some key whose float mask value is not
 * -inf: a row for which -inf scores everywhere are not the mask's doing. */
int qkv_row_has_open_key(const qkv_fwd_problem *p, int64_t b, int64_t h, int64_t i);

#endif
