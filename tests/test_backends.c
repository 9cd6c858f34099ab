/* Every registered backend held to the reference, as the registry lists
 * them (src/backends.c), so that a new backend is tested by registering
 * it: on each problem it supports, its forward (O, weights, lse) and its
 * backward (dQ, dK, dV) stay within 1e-5 relative L2 of the reference's;
 * on each problem it does not, a call that forces it fails with
 * QKV_ERR_UNSUPPORTED and a detail saying why, writing nothing, and auto
 * dispatch gives the reference's answer bitwise. The reference itself is
 * held to PyTorch by test_oracle. */
#include "backend.h"
#include "test.h"
#include "util.h"

#include <string.h>

/* One problem: sizes, options, and whether to ask for dmask. */
typedef struct bcase {
    const char *name;
    test_shape s;
    qkv_attention_options opt;
    int float_mask, bool_mask, dmask;
    int64_t lens[4];
} bcase;

typedef struct bufs {
    float *q, *k, *v, *dout, *mask;
    unsigned char *bmask;
    float *o, *w, *l, *dq, *dk, *dv, *dm;
} bufs;

static void bufs_make(const bcase *c, bufs *b, uint64_t seed)
{
    const test_shape *s = &c->s;
    test_rng r = test_rng_seed(seed);
    b->q = test_rand_f32(&r, n_q(s), -1, 1);
    b->k = test_rand_f32(&r, n_k(s), -1, 1);
    b->v = test_rand_f32(&r, n_v(s), -1, 1);
    b->dout = test_rand_f32(&r, n_o(s), -1, 1);
    b->mask = test_rand_f32(&r, s->Lq * s->Lk, -2, 2);
    b->bmask = test_malloc((size_t)(s->Lq * s->Lk));
    for (int64_t x = 0; x < s->Lq * s->Lk; x++) b->bmask[x] = test_rand(&r) < 0.7;
    b->o = test_malloc((size_t)n_o(s) * sizeof(float));
    b->w = test_malloc((size_t)n_p(s) * sizeof(float));
    b->l = test_malloc((size_t)n_l(s) * sizeof(float));
    b->dq = test_malloc((size_t)n_q(s) * sizeof(float));
    b->dk = test_malloc((size_t)n_k(s) * sizeof(float));
    b->dv = test_malloc((size_t)n_v(s) * sizeof(float));
    b->dm = test_malloc((size_t)(s->Lq * s->Lk) * sizeof(float));
}

static void bufs_free(bufs *b)
{
    free(b->q), free(b->k), free(b->v), free(b->dout), free(b->mask), free(b->bmask);
    free(b->o), free(b->w), free(b->l), free(b->dq), free(b->dk), free(b->dv), free(b->dm);
}

/* The options of c with its mask (broadcast over B and H) pointing into b. */
static qkv_attention_options options(const bcase *c, const bufs *b)
{
    qkv_attention_options o = c->opt;
    if (c->float_mask)
        o.mask = qkv_tensor_contiguous(b->mask, QKV_DTYPE_F32, 1, 1, c->s.Lq, c->s.Lk);
    if (c->bool_mask)
        o.mask = qkv_tensor_contiguous(b->bmask, QKV_DTYPE_BOOL, 1, 1, c->s.Lq, c->s.Lk);
    if (c->lens[0]) o.kv_lens = c->lens;
    return o;
}

/* Results of one backend on c: forward then (from the reference's o and
 * lse, given in ref) backward. */
typedef struct result {
    qkv_status fwd, bwd;
    char fwd_detail[256], bwd_detail[256]; /* qkv_error_detail() after each */
    float *o, *w, *l, *dq, *dk, *dv, *dm;
} result;

static float *copy(const float *x, int64_t n)
{
    float *y = test_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}

static void result_free(result *r)
{
    free(r->o), free(r->w), free(r->l), free(r->dq), free(r->dk), free(r->dv), free(r->dm);
}

/* A byte pattern the outputs start from, to see whether a refused call
 * wrote anything. */
#define UNTOUCHED 0x7f

static result run_backend(const char *name, const bcase *c, bufs *b, const result *ref)
{
    const test_shape *s = &c->s;
    result r;
    memset(&r, 0, sizeof r);
    const qkv_attention_options opt = options(c, b);
    memset(b->o, UNTOUCHED, (size_t)n_o(s) * sizeof(float));
    memset(b->w, UNTOUCHED, (size_t)n_p(s) * sizeof(float));
    memset(b->l, UNTOUCHED, (size_t)n_l(s) * sizeof(float));
    qkv_tensor q = qkv_tensor_contiguous(b->q, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    qkv_tensor k = qkv_tensor_contiguous(b->k, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor v = qkv_tensor_contiguous(b->v, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    qkv_tensor o = qkv_tensor_contiguous(b->o, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor w = qkv_tensor_contiguous(b->w, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Lk);
    qkv_tensor l = qkv_tensor_contiguous(b->l, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
    r.fwd = qkv_attention_forward_on(name, NULL, &o, &w, &l, &q, &k, &v, &opt);
    snprintf(r.fwd_detail, sizeof r.fwd_detail, "%s", qkv_error_detail());
    r.o = copy(b->o, n_o(s));
    r.w = copy(b->w, n_p(s));
    r.l = copy(b->l, n_l(s));

    /* The backward reads the reference's forward results. */
    const result *f = ref ? ref : &r;
    qkv_tensor fo = qkv_tensor_contiguous(f->o, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    qkv_tensor fl = qkv_tensor_contiguous(f->l, QKV_DTYPE_F32, s->B, s->H, s->Lq, 1);
    qkv_tensor dout = qkv_tensor_contiguous(b->dout, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->Ev);
    memset(b->dq, UNTOUCHED, (size_t)n_q(s) * sizeof(float));
    memset(b->dk, UNTOUCHED, (size_t)n_k(s) * sizeof(float));
    memset(b->dv, UNTOUCHED, (size_t)n_v(s) * sizeof(float));
    memset(b->dm, UNTOUCHED, (size_t)(s->Lq * s->Lk) * sizeof(float));
    qkv_tensor dq = qkv_tensor_contiguous(b->dq, QKV_DTYPE_F32, s->B, s->H, s->Lq, s->E);
    qkv_tensor dk = qkv_tensor_contiguous(b->dk, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->E);
    qkv_tensor dv = qkv_tensor_contiguous(b->dv, QKV_DTYPE_F32, s->B, s->Hkv, s->Lk, s->Ev);
    qkv_tensor dm = qkv_tensor_contiguous(b->dm, QKV_DTYPE_F32, 1, 1, s->Lq, s->Lk);
    r.bwd = qkv_attention_backward_on(name, NULL, &dq, &dk, &dv, c->dmask ? &dm : NULL, &dout, &q,
                                      &k, &v, &fo, &fl, &opt);
    snprintf(r.bwd_detail, sizeof r.bwd_detail, "%s", qkv_error_detail());
    r.dq = copy(b->dq, n_q(s));
    r.dk = copy(b->dk, n_k(s));
    r.dv = copy(b->dv, n_v(s));
    r.dm = copy(b->dm, s->Lq * s->Lk);
    return r;
}

static int untouched(const float *x, int64_t n)
{
    const unsigned char *p = (const unsigned char *)x;
    for (int64_t i = 0; i < n * (int64_t)sizeof(float); i++)
        if (p[i] != UNTOUCHED) return 0;
    return 1;
}

static void check_close(const char *be, const char *cas, const char *what, const float *got,
                        const float *want, int64_t n)
{
    const double e = test_rel_l2(got, want, n);
    if (!(e <= 1e-5))
        fprintf(stderr, "  %s on %s: %s differs from the reference by %.3g relative L2\n", be,
                cas, what, e);
    CHECK(e <= 1e-5);
}

/* A call that forced backend be and was refused: QKV_ERR_UNSUPPORTED and
 * a detail that names be and the direction, then says why. */
static void check_refusal(const char *be, const char *cas, const char *dir, qkv_status st,
                          const char *detail)
{
    char want[96];
    snprintf(want, sizeof want, "impl: %s cannot compute this %s: ", be, dir);
    const int said = test_starts_with(detail, want) && strlen(detail) > strlen(want);
    if (st != QKV_ERR_UNSUPPORTED || !said)
        fprintf(stderr, "  %s on %s: %s status %d, detail \"%s\"\n", be, cas, dir, (int)st, detail);
    CHECK(st == QKV_ERR_UNSUPPORTED && said);
}

/* Whether backend be takes c's forward and backward, as its supports()
 * says on the problem the library validates (asked through a forced call:
 * QKV_ERR_UNSUPPORTED is the refusal). */
static void check_case(const bcase *c, uint64_t seed)
{
    bufs b;
    bufs_make(c, &b, seed);
    result ref = run_backend("reference", c, &b, NULL);
    CHECK(ref.fwd == QKV_OK && ref.bwd == QKV_OK);
    result aut = run_backend(NULL, c, &b, &ref);
    CHECK(aut.fwd == QKV_OK && aut.bwd == QKV_OK);
    const test_shape *s = &c->s;
    for (int i = 0; i < qkv_backend_count(); i++) {
        const qkv_backend *be = qkv_backend_at(i);
        result r = run_backend(be->name, c, &b, &ref);
        if (r.fwd == QKV_OK) {
            check_close(be->name, c->name, "O", r.o, ref.o, n_o(s));
            check_close(be->name, c->name, "weights", r.w, ref.w, n_p(s));
            check_close(be->name, c->name, "lse", r.l, ref.l, n_l(s));
        } else {
            /* A refusal names the backend, says why, and writes nothing;
             * auto dispatch then gives some other backend's answer, here
             * the reference's (the only other one that takes every call). */
            check_refusal(be->name, c->name, "forward", r.fwd, r.fwd_detail);
            CHECK(untouched(r.o, n_o(s)) && untouched(r.w, n_p(s)) && untouched(r.l, n_l(s)));
        }
        if (r.bwd == QKV_OK) {
            check_close(be->name, c->name, "dQ", r.dq, ref.dq, n_q(s));
            check_close(be->name, c->name, "dK", r.dk, ref.dk, n_k(s));
            check_close(be->name, c->name, "dV", r.dv, ref.dv, n_v(s));
            if (c->dmask) check_close(be->name, c->name, "dmask", r.dm, ref.dm, s->Lq * s->Lk);
        } else {
            check_refusal(be->name, c->name, "backward", r.bwd, r.bwd_detail);
            CHECK(untouched(r.dq, n_q(s)) && untouched(r.dk, n_k(s)) && untouched(r.dv, n_v(s)));
        }
        printf("  %-9s %-20s forward %s, backward %s\n", be->name, c->name,
               r.fwd == QKV_OK ? "matches" : r.fwd_detail,
               r.bwd == QKV_OK ? "matches" : r.bwd_detail);
        result_free(&r);
    }
    /* Auto dispatch: the first backend that takes the call. */
    int first_f = -1, first_b = -1;
    for (int i = 0; i < qkv_backend_count(); i++) {
        const qkv_backend *be = qkv_backend_at(i);
        result r = run_backend(be->name, c, &b, &ref);
        if (first_f < 0 && r.fwd == QKV_OK) {
            first_f = i;
            CHECK(memcmp(r.o, aut.o, (size_t)n_o(s) * sizeof(float)) == 0);
        }
        if (first_b < 0 && r.bwd == QKV_OK) {
            first_b = i;
            CHECK(memcmp(r.dq, aut.dq, (size_t)n_q(s) * sizeof(float)) == 0);
            CHECK(memcmp(r.dk, aut.dk, (size_t)n_k(s) * sizeof(float)) == 0);
        }
        result_free(&r);
    }
    CHECK(first_f >= 0 && first_b >= 0);
    result_free(&ref);
    result_free(&aut);
    bufs_free(&b);
}

static void check_registry(void)
{
    CHECK(qkv_backend_count() >= 2);
    CHECK(qkv_backend_at(-1) == NULL && qkv_backend_at(qkv_backend_count()) == NULL);
    /* Names are unique; the reference is last, since it takes every call. */
    for (int i = 0; i < qkv_backend_count(); i++)
        for (int j = i + 1; j < qkv_backend_count(); j++)
            CHECK(strcmp(qkv_backend_at(i)->name, qkv_backend_at(j)->name) != 0);
    CHECK(strcmp(qkv_backend_at(qkv_backend_count() - 1)->name, "reference") == 0);
    /* A name no backend has. */
    float x[4] = {0};
    qkv_tensor t = qkv_tensor_contiguous(x, QKV_DTYPE_F32, 1, 1, 1, 1);
    qkv_tensor o = qkv_tensor_contiguous(x + 1, QKV_DTYPE_F32, 1, 1, 1, 1);
    CHECK(qkv_attention_forward_on("abacus", NULL, &o, NULL, NULL, &t, &t, &t, NULL) ==
          QKV_ERR_UNSUPPORTED);
    CHECK(strstr(qkv_error_detail(), "abacus") != NULL);
}

/* Positions of the "positions" case: queries ahead of the keys, and keys
 * placed past the first queries. */
static const int64_t q_pos[2] = {12, 40}, k_pos[2] = {0, 20};

int main(void)
{
    check_registry();
    static const bcase cases[] = {
        {.name = "plain", .s = {2, 4, 4, 9, 13, 16, 16}},
        {.name = "gqa causal", .s = {1, 6, 2, 17, 17, 8, 12}, .opt = {.causal = 1}},
        {.name = "bottom-right window",
         .s = {2, 2, 1, 5, 40, 16, 8},
         .opt = {.causal = 1, .align = QKV_ALIGN_BOTTOM_RIGHT, .use_window = 1,
                 .window_left = 7, .window_right = -1}},
        {.name = "float mask softcap", .s = {1, 3, 3, 11, 21, 32, 16}, .opt = {.softcap = 5},
         .float_mask = 1},
        {.name = "bool mask kv_lens", .s = {2, 2, 2, 7, 19, 8, 8}, .bool_mask = 1,
         .lens = {19, 4}},
        {.name = "dmask", .s = {1, 2, 1, 6, 10, 8, 8}, .float_mask = 1, .dmask = 1},
        {.name = "scale past float", .s = {1, 2, 2, 4, 6, 8, 8}, .opt = {.scale = 1e-39}},
        {.name = "long keys split", .s = {1, 2, 2, 1, 4500, 16, 16}},
        {.name = "positions", .s = {2, 2, 1, 6, 30, 8, 8},
         .opt = {.causal = 1, .q_offsets = q_pos, .k_offsets = k_pos}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], 100 + i);
    return test_finish("test_backends");
}
