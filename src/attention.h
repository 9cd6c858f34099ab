/* The validated form of one forward attention call, shared by the public
 * entry point (attention.c) and every kernel that computes it (ref/, later
 * cpu/). Validation happens once, in attention.c; kernels trust this. */
#ifndef QKV_ATTENTION_H
#define QKV_ATTENTION_H

#include "qkv.h"

typedef struct qkv_fwd_problem {
    int64_t B, H, Hkv, Lq, Lk, E, Ev;
    const qkv_tensor *q, *k, *v, *o;
    const qkv_tensor *weights; /* NULL when not requested */
    const qkv_tensor *lse;     /* NULL when not requested */
    const qkv_tensor *mask;    /* NULL when absent; broadcast dims have stride 0 */
    double scale;              /* resolved: never 0 */
    double softcap;            /* 0 = none */
    int causal;
    int64_t diag_offset;       /* d_i = i + diag_offset: 0 or Lk - Lq */
    int use_window;
    int64_t window_left, window_right; /* negative = unlimited */
    const int64_t *kv_lens;    /* NULL or B entries in 0..Lk */
    int num_threads;           /* resolved: >= 1 */
    void (*progress)(void *user, double done); /* NULL = none; see qkv.h */
    void *progress_user;
} qkv_fwd_problem;

/* The reference kernel: DESIGN.md §1 step by step, double accumulation. */
qkv_status qkv_ref_attention_forward(const qkv_fwd_problem *p);

#endif
