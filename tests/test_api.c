/* The API contract of qkv.h: version, status and dtype names, contiguous
 * views, every validation error of qkv_attention_forward and of the
 * context's setters (status and a detail that names the argument), the
 * per-thread error detail, and the meaning of NULL options and absent
 * optional outputs. */
#include "test.h"
#include "util.h"

#include "qkv.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------- version, names */

static void check_version(void)
{
    CHECK(qkv_version_number() == QKV_VERSION_NUMBER);
    CHECK(QKV_VERSION_NUMBER ==
          QKV_VERSION_MAJOR * 10000 + QKV_VERSION_MINOR * 100 + QKV_VERSION_PATCH);
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", QKV_VERSION_MAJOR, QKV_VERSION_MINOR,
             QKV_VERSION_PATCH);
    const char *got = qkv_version_string();
    CHECK(got != NULL);
    if (got && strcmp(got, want) != 0)
        fprintf(stderr, "  version string \"%s\", want \"%s\"\n", got, want);
    CHECK(got && strcmp(got, want) == 0);
    CHECK(qkv_version_string() == got); /* static */
}

static void check_status_strings(void)
{
    const qkv_status all[] = {QKV_OK,           QKV_ERR_NULL_ARGUMENT, QKV_ERR_INVALID_ARGUMENT,
                              QKV_ERR_SHAPE,    QKV_ERR_DTYPE,         QKV_ERR_OVERFLOW,
                              QKV_ERR_OUT_OF_MEMORY, QKV_ERR_IO,       QKV_ERR_FORMAT,
                              QKV_ERR_THREAD,   QKV_ERR_UNSUPPORTED};
    const int n = (int)(sizeof all / sizeof all[0]);
    CHECK(n == QKV_ERR_UNSUPPORTED + 1); /* the list covers the enum */
    for (int a = 0; a < n; a++) {
        const char *s = qkv_status_string(all[a]);
        CHECK(s != NULL && s[0] != '\0');
        if (!s) continue;
        CHECK(strcmp(s, "unknown status") != 0);
        for (int b = 0; b < a; b++) {
            const char *t = qkv_status_string(all[b]);
            if (t && strcmp(s, t) == 0)
                fprintf(stderr, "  statuses %d and %d share the name \"%s\"\n", a, b, s);
            CHECK(t == NULL || strcmp(s, t) != 0);
        }
    }
    const char *u = qkv_status_string((qkv_status)999);
    CHECK(u != NULL && strcmp(u, "unknown status") == 0);
    u = qkv_status_string((qkv_status)-1);
    CHECK(u != NULL && strcmp(u, "unknown status") == 0);
    u = qkv_status_string((qkv_status)(QKV_ERR_UNSUPPORTED + 1));
    CHECK(u != NULL && strcmp(u, "unknown status") == 0);
}

static void check_dtypes(void)
{
    const struct {
        qkv_dtype t;
        size_t size;
        const char *name;
    } want[] = {{QKV_DTYPE_F32, 4, "f32"},   {QKV_DTYPE_F64, 8, "f64"}, {QKV_DTYPE_F16, 2, "f16"},
                {QKV_DTYPE_BF16, 2, "bf16"}, {QKV_DTYPE_BOOL, 1, "bool"},
                {QKV_DTYPE_I32, 4, "i32"},   {QKV_DTYPE_I64, 8, "i64"},
                {QKV_DTYPE_Q8_0, 0, "q8_0"}, {QKV_DTYPE_Q4_0, 0, "q4_0"}}; /* blocks: no size */
    for (size_t x = 0; x < sizeof want / sizeof want[0]; x++) {
        CHECK(qkv_dtype_size(want[x].t) == want[x].size);
        const char *nm = qkv_dtype_name(want[x].t);
        if (!nm || strcmp(nm, want[x].name) != 0)
            fprintf(stderr, "  dtype %d named \"%s\", want \"%s\"\n", (int)want[x].t,
                    nm ? nm : "(null)", want[x].name);
        CHECK(nm && strcmp(nm, want[x].name) == 0);
    }
    const qkv_dtype bad[] = {(qkv_dtype)9, (qkv_dtype)-1, (qkv_dtype)1000};
    for (size_t x = 0; x < sizeof bad / sizeof bad[0]; x++) {
        CHECK(qkv_dtype_size(bad[x]) == 0);
        const char *nm = qkv_dtype_name(bad[x]);
        CHECK(nm && strcmp(nm, "unknown") == 0);
    }
}

static void check_contiguous(void)
{
    float buf[1];
    qkv_tensor t = qkv_tensor_contiguous(buf, QKV_DTYPE_BF16, 2, 3, 5, 7);
    CHECK(t.data == buf);
    CHECK(t.dtype == QKV_DTYPE_BF16);
    CHECK(t.shape[0] == 2 && t.shape[1] == 3 && t.shape[2] == 5 && t.shape[3] == 7);
    CHECK(t.stride[0] == 105 && t.stride[1] == 35 && t.stride[2] == 7 && t.stride[3] == 1);
    t = qkv_tensor_contiguous(NULL, QKV_DTYPE_I64, 1, 1, 1, 1);
    CHECK(t.data == NULL && t.dtype == QKV_DTYPE_I64);
    CHECK(t.stride[0] == 1 && t.stride[1] == 1 && t.stride[2] == 1 && t.stride[3] == 1);
    t = qkv_tensor_contiguous(NULL, QKV_DTYPE_F32, 4, 0, 3, 2);
    CHECK(t.shape[1] == 0 && t.stride[3] == 1 && t.stride[2] == 2 && t.stride[1] == 6);
}

/* ---------------------------------------------------------- validation */

/* A valid problem: B 2, H 4, Hkv 2, Lq 3, Lk 5, E 8, Ev 6. */
enum { B = 2, H = 4, HKV = 2, LQ = 3, LK = 5, E = 8, EV = 6 };

typedef struct call {
    qkv_tensor o, w, l, q, k, v;
    const qkv_tensor *po, *pw, *pl, *pq, *pk, *pv;
    qkv_attention_options opt;
    int64_t lens[B];
} call;

static float g_q[B * H * LQ * E], g_k[B * HKV * LK * E], g_v[B * HKV * LK * EV];
static float g_o[B * H * LQ * EV], g_w[B * H * LQ * LK], g_l[B * H * LQ];
static float g_mask[B * H * LQ * LK];

static void call_init(call *c)
{
    memset(c, 0, sizeof *c);
    c->q = qkv_tensor_contiguous(g_q, QKV_DTYPE_F32, B, H, LQ, E);
    c->k = qkv_tensor_contiguous(g_k, QKV_DTYPE_F32, B, HKV, LK, E);
    c->v = qkv_tensor_contiguous(g_v, QKV_DTYPE_F32, B, HKV, LK, EV);
    c->o = qkv_tensor_contiguous(g_o, QKV_DTYPE_F32, B, H, LQ, EV);
    c->w = qkv_tensor_contiguous(g_w, QKV_DTYPE_F32, B, H, LQ, LK);
    c->l = qkv_tensor_contiguous(g_l, QKV_DTYPE_F32, B, H, LQ, 1);
    c->po = &c->o;
    c->pw = &c->w;
    c->pl = &c->l;
    c->pq = &c->q;
    c->pk = &c->k;
    c->pv = &c->v;
    c->lens[0] = LK;
    c->lens[1] = 2;
}

static qkv_status call_run(call *c)
{
    return qkv_attention_forward(NULL, c->po, c->pw, c->pl, c->pq, c->pk, c->pv, &c->opt);
}

/* A call returned st: it should be `want` with a detail starting with
 * `prefix` (the argument's name) and containing `needle` when given. */
static void expect_status(const char *what, qkv_status st, qkv_status want, const char *prefix,
                          const char *needle)
{
    const char *d = qkv_error_detail();
    int ok_st = st == want;
    int ok_d = d != NULL && strncmp(d, prefix, strlen(prefix)) == 0 &&
               (!needle || strstr(d, needle) != NULL) && strlen(d) < 512;
    if (!ok_st || !ok_d)
        fprintf(stderr,
                "  %s: got %s (%d), detail \"%s\"; want %s (%d), detail starting \"%s\"%s%s%s\n",
                what, qkv_status_string(st), (int)st, d ? d : "(null)", qkv_status_string(want),
                (int)want, prefix, needle ? " containing \"" : "", needle ? needle : "",
                needle ? "\"" : "");
    CHECK(ok_st);
    CHECK(ok_d);
}

/* The call fails with `want` and a detail as expect_status says. */
static void expect(const char *what, call *c, qkv_status want, const char *prefix,
                   const char *needle)
{
    expect_status(what, call_run(c), want, prefix, needle);
}

static void check_valid_base(void)
{
    call c;
    call_init(&c);
    qkv_status st = call_run(&c);
    if (st != QKV_OK) fprintf(stderr, "  valid base call: %s\n", qkv_error_detail());
    CHECK(st == QKV_OK);
    CHECK(strcmp(qkv_error_detail(), "") == 0);
}

static void check_null_and_dtype(void)
{
    call c;
    call_init(&c);
    c.pq = NULL;
    expect("NULL q", &c, QKV_ERR_NULL_ARGUMENT, "Q", NULL);
    call_init(&c);
    c.pk = NULL;
    expect("NULL k", &c, QKV_ERR_NULL_ARGUMENT, "K", NULL);
    call_init(&c);
    c.pv = NULL;
    expect("NULL v", &c, QKV_ERR_NULL_ARGUMENT, "V", NULL);
    call_init(&c);
    c.po = NULL;
    expect("NULL o", &c, QKV_ERR_NULL_ARGUMENT, "O", NULL);

    const qkv_dtype bad[] = {QKV_DTYPE_F64, QKV_DTYPE_F16, QKV_DTYPE_BF16, QKV_DTYPE_BOOL,
                             QKV_DTYPE_I32, (qkv_dtype)42};
    for (size_t x = 0; x < sizeof bad / sizeof bad[0]; x++) {
        char what[64];
        qkv_tensor *ts[6];
        const char *names[6] = {"Q:", "K:", "V:", "O:", "weights:", "lse:"};
        for (int t = 0; t < 6; t++) {
            call_init(&c);
            ts[0] = &c.q;
            ts[1] = &c.k;
            ts[2] = &c.v;
            ts[3] = &c.o;
            ts[4] = &c.w;
            ts[5] = &c.l;
            ts[t]->dtype = bad[x];
            snprintf(what, sizeof what, "%s dtype %d", names[t], (int)bad[x]);
            expect(what, &c, QKV_ERR_DTYPE, names[t], NULL);
        }
    }
}

static void check_shapes(void)
{
    call c;
    char what[96];
    /* Negative dims, each tensor, each dim. */
    const char *names[6] = {"Q:", "K:", "V:", "O:", "weights:", "lse:"};
    for (int t = 0; t < 6; t++)
        for (int d = 0; d < 4; d++) {
            call_init(&c);
            qkv_tensor *ts[6] = {&c.q, &c.k, &c.v, &c.o, &c.w, &c.l};
            ts[t]->shape[d] = -1;
            snprintf(what, sizeof what, "%s dim %d negative", names[t], d);
            expect(what, &c, QKV_ERR_SHAPE, names[t], "negative");
        }

    call_init(&c);
    c.q.shape[3] = 0;
    c.k.shape[3] = 0;
    expect("E == 0", &c, QKV_ERR_SHAPE, "Q:", "head dim");
    call_init(&c);
    c.q.shape[3] = 0;
    expect("E == 0 in Q only", &c, QKV_ERR_SHAPE, "Q:", NULL);

    call_init(&c);
    c.k.shape[0] = 1;
    expect("K batch mismatch", &c, QKV_ERR_SHAPE, "K:", "batch");
    call_init(&c);
    c.k.shape[3] = E - 1;
    expect("K head dim mismatch", &c, QKV_ERR_SHAPE, "K: head dim", NULL);
    call_init(&c);
    c.k.shape[1] = 3;
    c.v.shape[1] = 3;
    expect("H % Hkv != 0", &c, QKV_ERR_SHAPE, "K:", NULL);
    call_init(&c);
    c.k.shape[1] = 0;
    c.v.shape[1] = 0;
    expect("Hkv == 0 < H", &c, QKV_ERR_SHAPE, "K:", NULL);
    call_init(&c);
    c.k.shape[1] = 8; /* more kv heads than query heads */
    c.v.shape[1] = 8;
    c.k.stride[0] = 0; /* keep the view inside g_k: we never get that far */
    c.v.stride[0] = 0;
    expect("Hkv > H", &c, QKV_ERR_SHAPE, "K:", NULL);

    for (int d = 0; d < 3; d++) {
        call_init(&c);
        c.v.shape[d] -= 1;
        snprintf(what, sizeof what, "V dim %d mismatch", d);
        expect(what, &c, QKV_ERR_SHAPE, "V:", NULL);
    }
    for (int d = 0; d < 4; d++) {
        snprintf(what, sizeof what, "O dim %d wrong", d);
        call_init(&c);
        c.o.shape[d] -= 1;
        expect(what, &c, QKV_ERR_SHAPE, "O:", NULL);
        call_init(&c);
        c.w.shape[d] -= 1;
        snprintf(what, sizeof what, "weights dim %d wrong", d);
        expect(what, &c, QKV_ERR_SHAPE, "weights:", NULL);
        call_init(&c);
        snprintf(what, sizeof what, "lse dim %d wrong", d);
        if (d == 3) {
            c.l.shape[3] = 0; /* (B, H, Lq, 0) instead of (B, H, Lq, 1) */
        } else {
            c.l.shape[d] -= 1;
        }
        expect(what, &c, QKV_ERR_SHAPE, "lse:", NULL);
    }
    /* lse given as (B, H, Lq, 2) is wrong too (a view inside g_w). */
    call_init(&c);
    c.l = qkv_tensor_contiguous(g_w, QKV_DTYPE_F32, B, H, LQ, 2);
    expect("lse last dim 2", &c, QKV_ERR_SHAPE, "lse:", NULL);
}

static void check_strides(void)
{
    call c;
    /* Outputs whose strides map two indices to one element. */
    call_init(&c);
    c.o.stride[2] = 0;
    expect("O stride 0 with Lq > 1", &c, QKV_ERR_INVALID_ARGUMENT, "O:", "overlap");
    call_init(&c);
    c.o.stride[2] = EV - 1;
    expect("O rows overlapping", &c, QKV_ERR_INVALID_ARGUMENT, "O:", NULL);
    call_init(&c);
    c.o.stride[0] = c.o.stride[1];
    expect("O batch stride == head stride", &c, QKV_ERR_INVALID_ARGUMENT, "O:", NULL);
    call_init(&c);
    c.w.stride[3] = 0;
    expect("weights stride 0 with Lk > 1", &c, QKV_ERR_INVALID_ARGUMENT, "weights:", NULL);
    call_init(&c);
    c.l.stride[1] = 0;
    expect("lse stride 0 with H > 1", &c, QKV_ERR_INVALID_ARGUMENT, "lse:", NULL);
    call_init(&c);
    c.l.stride[1] = c.l.stride[2]; /* heads and rows collide */
    expect("lse heads and rows collide", &c, QKV_ERR_INVALID_ARGUMENT, "lse:", NULL);

    /* Non-overlapping odd outputs are accepted: O written (B, Lq, H, Ev),
     * lse with any stride on its dim of 1. */
    call_init(&c);
    c.o.stride[0] = LQ * H * EV;
    c.o.stride[1] = EV;
    c.o.stride[2] = H * EV;
    c.l.stride[3] = 0;
    qkv_status st = call_run(&c);
    if (st != QKV_OK) fprintf(stderr, "  permuted O: %s\n", qkv_error_detail());
    CHECK(st == QKV_OK);

    /* Inputs may overlap themselves (stride 0 broadcast) and be negative. */
    call_init(&c);
    c.q.stride[2] = 0;
    c.k.stride[0] = 0;
    c.v.stride[1] = 0;
    st = call_run(&c);
    if (st != QKV_OK) fprintf(stderr, "  stride-0 inputs: %s\n", qkv_error_detail());
    CHECK(st == QKV_OK);

    /* Reach past int64. */
    const char *names[6] = {"Q:", "K:", "V:", "O:", "weights:", "lse:"};
    for (int t = 0; t < 6; t++) {
        char what[96];
        call_init(&c);
        qkv_tensor *ts[6] = {&c.q, &c.k, &c.v, &c.o, &c.w, &c.l};
        ts[t]->stride[2] = INT64_MAX / 2; /* times (Lq or Lk) - 1 >= 2 overflows */
        snprintf(what, sizeof what, "%s stride INT64_MAX/2", names[t]);
        expect(what, &c, QKV_ERR_OVERFLOW, names[t], NULL);
        call_init(&c);
        ts[t]->stride[0] = INT64_MIN;
        snprintf(what, sizeof what, "%s stride INT64_MIN", names[t]);
        expect(what, &c, QKV_ERR_OVERFLOW, names[t], NULL);
        call_init(&c);
        ts[t]->stride[0] = INT64_MAX / 4 + 1; /* fits in elements, not in bytes */
        snprintf(what, sizeof what, "%s byte offset overflow", names[t]);
        expect(what, &c, QKV_ERR_OVERFLOW, names[t], NULL);
    }
    /* A 3-element dim: the brief's example. */
    call_init(&c);
    c.q.stride[2] = INT64_MAX / 2;
    c.q.shape[2] = 3;
    expect("Q stride INT64_MAX/2 with dim 3", &c, QKV_ERR_OVERFLOW, "Q:", NULL);
    /* Element count overflow. */
    call_init(&c);
    c.q.shape[0] = INT64_MAX / 2;
    c.q.shape[1] = 3;
    expect("Q element count overflow", &c, QKV_ERR_OVERFLOW, "Q:", NULL);
}

/* Outputs may share no byte with another output or an input, and data
 * pointers must be aligned to their elements (qkv.h's tensor contract). */
static void check_overlap_and_alignment(void)
{
    call c;
    static float buf[B * H * LQ * (EV + LK) + 8];
    call_init(&c);
    c.w.data = g_o; /* O and weights on one buffer */
    expect("O and weights on one buffer", &c, QKV_ERR_INVALID_ARGUMENT, "O and weights", "overlap");
    call_init(&c);
    c.o.data = g_q; /* O = Q */
    expect("O = Q", &c, QKV_ERR_INVALID_ARGUMENT, "O and Q", "overlap");
    call_init(&c);
    c.l.data = g_k + 3; /* lse inside K */
    expect("lse inside K", &c, QKV_ERR_INVALID_ARGUMENT, "lse and K", "overlap");
    call_init(&c);
    static float arena[4096]; /* room for any one view at any of its offsets below */
    c.opt.mask = qkv_tensor_contiguous(arena, QKV_DTYPE_F32, 1, 1, LQ, LK);
    c.w.data = arena + 2; /* weights over the mask */
    expect("weights over the mask", &c, QKV_ERR_INVALID_ARGUMENT, "weights and mask", "overlap");
    call_init(&c);
    memset(g_o, 0, sizeof g_o); /* valid lengths (0) if it were read */
    c.opt.kv_lens = (const int64_t *)(void *)g_o;
    expect("kv_lens inside O", &c, QKV_ERR_INVALID_ARGUMENT, "O and kv_lens", "overlap");
    /* O and weights interleaved row by row in one buffer, (B, H, Lq,
     * Ev + Lk): they share no element, so the call is accepted and gives
     * what separate buffers give; shifted one float into O's rows, it is
     * refused. */
    call_init(&c);
    CHECK(call_run(&c) == QKV_OK);
    static float want_o[B * H * LQ * EV], want_w[B * H * LQ * LK];
    memcpy(want_o, g_o, sizeof want_o);
    memcpy(want_w, g_w, sizeof want_w);
    for (int shift = 0; shift < 2; shift++) {
        call_init(&c);
        c.o.data = buf;
        c.o.stride[2] = EV + LK;
        c.o.stride[1] = LQ * (EV + LK);
        c.o.stride[0] = H * LQ * (EV + LK);
        c.w = c.o;
        c.w.data = buf + EV - shift;
        c.w.shape[3] = LK;
        if (shift) {
            expect("O and weights interleaved, sharing a float", &c, QKV_ERR_INVALID_ARGUMENT,
                   "O and weights", "overlap");
            continue;
        }
        qkv_status ist = call_run(&c);
        if (ist != QKV_OK) fprintf(stderr, "  O and weights interleaved: %s\n", qkv_error_detail());
        CHECK(ist == QKV_OK);
        int same = 1;
        for (int64_t r = 0; r < B * H * LQ; r++)
            same &= memcmp(buf + r * (EV + LK), want_o + r * EV, EV * sizeof(float)) == 0 &&
                    memcmp(buf + r * (EV + LK) + EV, want_w + r * LK, LK * sizeof(float)) == 0;
        CHECK(same);
    }
    /* Adjacent, not overlapping: accepted; so are inputs sharing a buffer. */
    call_init(&c);
    c.o.data = buf;
    c.w.data = buf + B * H * LQ * EV;
    c.k.data = g_q; /* K and V read from Q's buffer (fused projections) */
    c.v.data = g_q;
    qkv_status st = call_run(&c);
    if (st != QKV_OK) fprintf(stderr, "  adjacent outputs: %s\n", qkv_error_detail());
    CHECK(st == QKV_OK);
    /* Negative strides: the range runs below the data pointer. O's last
     * row starts at g_o, its first sits below: w right below O overlaps. */
    call_init(&c);
    c.o.data = buf + B * H * LQ * EV - EV;
    c.o.stride[2] = -EV;
    c.o.stride[1] = -LQ * EV;
    c.o.stride[0] = -H * LQ * EV;
    c.w.data = buf + B * H * LQ * EV - EV - 1;
    expect("negative strides reaching into weights", &c, QKV_ERR_INVALID_ARGUMENT,
           "O and weights", "overlap");

    /* Misaligned data pointers. */
    const char *names[6] = {"Q:", "K:", "V:", "O:", "weights:", "lse:"};
    for (int t = 0; t < 6; t++) {
        char what[64];
        call_init(&c);
        qkv_tensor *ts[6] = {&c.q, &c.k, &c.v, &c.o, &c.w, &c.l};
        ts[t]->data = (char *)ts[t]->data + 1;
        snprintf(what, sizeof what, "%s misaligned", names[t]);
        expect(what, &c, QKV_ERR_INVALID_ARGUMENT, names[t], "aligned");
    }
    call_init(&c);
    c.opt.mask = qkv_tensor_contiguous((char *)g_mask + 2, QKV_DTYPE_F32, 1, 1, LQ, LK);
    expect("f32 mask misaligned", &c, QKV_ERR_INVALID_ARGUMENT, "mask:", "aligned");
    call_init(&c);
    static int64_t lens[B + 1];
    lens[0] = lens[1] = lens[2] = 0;
    c.opt.kv_lens = (const int64_t *)(const void *)((const char *)lens + 4);
    expect("kv_lens misaligned", &c, QKV_ERR_INVALID_ARGUMENT, "kv_lens:", "aligned");
    call_init(&c); /* a bool mask's bytes may start anywhere */
    static unsigned char bmask[LQ * LK + 1];
    memset(bmask, 1, sizeof bmask);
    c.opt.mask = qkv_tensor_contiguous(bmask + 1, QKV_DTYPE_BOOL, 1, 1, LQ, LK);
    st = call_run(&c);
    CHECK(st == QKV_OK);

    /* The backward: dQ on Q, dK and dV on one buffer, dmask on the mask. */
    call_init(&c);
    CHECK(call_run(&c) == QKV_OK);
    static float dq[B * H * LQ * E], dk[B * HKV * LK * E], dv[B * HKV * LK * EV];
    qkv_tensor tdq = qkv_tensor_contiguous(dq, QKV_DTYPE_F32, B, H, LQ, E);
    qkv_tensor tdk = qkv_tensor_contiguous(dk, QKV_DTYPE_F32, B, HKV, LK, E);
    qkv_tensor tdv = qkv_tensor_contiguous(dv, QKV_DTYPE_F32, B, HKV, LK, EV);
    static float g_do[B * H * LQ * EV]; /* any values: only the checks run */
    qkv_tensor tdo = qkv_tensor_contiguous(g_do, QKV_DTYPE_F32, B, H, LQ, EV);
    struct {
        const char *what, *prefix;
        qkv_tensor *t;
        void *data;
        void *o, *l; /* where O and lse are read from for this case */
    } bad[] = {{"dQ = Q", "dQ and Q", &tdq, g_q, g_o, g_l},
               {"dK on dV", "dK and dV", &tdk, dv, g_o, g_l},
               {"dV = dO", "dV and dO", &tdv, g_do, g_o, g_l},
               {"dQ = O", "dQ and O", &tdq, arena, arena, g_l},
               {"dK over lse", "dK and lse", &tdk, arena + 8, g_o, arena + 8}};
    for (size_t x = 0; x < sizeof bad / sizeof bad[0]; x++) {
        void *keep = bad[x].t->data;
        bad[x].t->data = bad[x].data;
        c.o.data = bad[x].o;
        c.l.data = bad[x].l;
        st = qkv_attention_backward(NULL, &tdq, &tdk, &tdv, NULL, &tdo, &c.q, &c.k, &c.v, &c.o,
                                    &c.l, &c.opt);
        const char *d = qkv_error_detail();
        CHECK(st == QKV_ERR_INVALID_ARGUMENT && test_starts_with(d, bad[x].prefix) &&
              strstr(d, "overlap"));
        if (st != QKV_ERR_INVALID_ARGUMENT || !test_starts_with(d, bad[x].prefix))
            fprintf(stderr, "  backward %s: %s (%s)\n", bad[x].what, qkv_status_string(st), d);
        bad[x].t->data = keep;
        c.o.data = g_o;
        c.l.data = g_l;
    }
    st = qkv_attention_backward(NULL, &tdq, &tdk, &tdv, NULL, &tdo, &c.q, &c.k, &c.v, &c.o, &c.l,
                                &c.opt);
    CHECK(st == QKV_OK);

    /* dQ, dK, dV packed as one (B, L, 3, H, E) buffer (H = Hkv, Lq = Lk,
     * E = Ev, the layout of a fused QKV projection's gradient): they
     * interleave without sharing an element, so the call is accepted and
     * gives what separate buffers give. */
    enum { PB = 2, PH = 3, PL = 5, PE = 4 };
    static float pq[PB * PH * PL * PE], pk[PB * PH * PL * PE], pv[PB * PH * PL * PE];
    static float po[PB * PH * PL * PE], pl[PB * PH * PL], pdo[PB * PH * PL * PE];
    static float sep[3][PB * PH * PL * PE], packed[PB * PL * 3 * PH * PE];
    test_rng rng = test_rng_seed(21);
    for (int i = 0; i < PB * PH * PL * PE; i++) {
        pq[i] = (float)test_rand(&rng) - 0.5f;
        pk[i] = (float)test_rand(&rng) - 0.5f;
        pv[i] = (float)test_rand(&rng) - 0.5f;
        pdo[i] = (float)test_rand(&rng) - 0.5f;
    }
    qkv_tensor xq = qkv_tensor_contiguous(pq, QKV_DTYPE_F32, PB, PH, PL, PE);
    qkv_tensor xk = qkv_tensor_contiguous(pk, QKV_DTYPE_F32, PB, PH, PL, PE);
    qkv_tensor xv = qkv_tensor_contiguous(pv, QKV_DTYPE_F32, PB, PH, PL, PE);
    qkv_tensor xo = qkv_tensor_contiguous(po, QKV_DTYPE_F32, PB, PH, PL, PE);
    qkv_tensor xl = qkv_tensor_contiguous(pl, QKV_DTYPE_F32, PB, PH, PL, 1);
    qkv_tensor xd = qkv_tensor_contiguous(pdo, QKV_DTYPE_F32, PB, PH, PL, PE);
    CHECK(qkv_attention_forward(NULL, &xo, NULL, &xl, &xq, &xk, &xv, NULL) == QKV_OK);
    qkv_tensor g[3];
    for (int t = 0; t < 3; t++) g[t] = qkv_tensor_contiguous(sep[t], QKV_DTYPE_F32, PB, PH, PL, PE);
    CHECK(qkv_attention_backward(NULL, &g[0], &g[1], &g[2], NULL, &xd, &xq, &xk, &xv, &xo, &xl,
                                 NULL) == QKV_OK);
    for (int t = 0; t < 3; t++) {
        g[t].data = packed + t * PH * PE;
        g[t].stride[0] = PL * 3 * PH * PE;
        g[t].stride[1] = PE;
        g[t].stride[2] = 3 * PH * PE;
        g[t].stride[3] = 1;
    }
    st = qkv_attention_backward(NULL, &g[0], &g[1], &g[2], NULL, &xd, &xq, &xk, &xv, &xo, &xl,
                                NULL);
    if (st != QKV_OK) fprintf(stderr, "  packed dQ, dK, dV: %s\n", qkv_error_detail());
    CHECK(st == QKV_OK);
    int same = 1;
    for (int t = 0; t < 3; t++)
        for (int b = 0; b < PB; b++)
            for (int h = 0; h < PH; h++)
                for (int i = 0; i < PL; i++)
                    same &= memcmp(packed + ((b * PL + i) * 3 + t) * PH * PE + h * PE,
                                   sep[t] + ((b * PH + h) * PL + i) * PE, PE * sizeof(float)) == 0;
    CHECK(same);
    g[1].data = packed + PH * PE - 1; /* dK one float into dQ's heads */
    st = qkv_attention_backward(NULL, &g[0], &g[1], &g[2], NULL, &xd, &xq, &xk, &xv, &xo, &xl,
                                NULL);
    CHECK(st == QKV_ERR_INVALID_ARGUMENT && test_starts_with(qkv_error_detail(), "dQ and dK"));
}

static void check_null_data(void)
{
    call c;
    const char *names[4] = {"Q:", "K:", "V:", "O:"};
    for (int t = 0; t < 4; t++) {
        call_init(&c);
        qkv_tensor *ts[4] = {&c.q, &c.k, &c.v, &c.o};
        ts[t]->data = NULL;
        char what[64];
        snprintf(what, sizeof what, "%s data NULL", names[t]);
        expect(what, &c, QKV_ERR_NULL_ARGUMENT, names[t], NULL);
    }
}

static void check_mask_and_options(void)
{
    call c;
    char what[96];
    call_init(&c);
    c.opt.mask = qkv_tensor_contiguous(g_mask, QKV_DTYPE_I32, B, H, LQ, LK);
    expect("mask dtype i32", &c, QKV_ERR_DTYPE, "mask:", NULL);
    call_init(&c);
    c.opt.mask = qkv_tensor_contiguous(g_mask, QKV_DTYPE_F64, 1, 1, LQ, 1);
    expect("mask dtype f64", &c, QKV_ERR_DTYPE, "mask:", NULL);
    const int64_t full[4] = {B, H, LQ, LK};
    for (int d = 0; d < 4; d++) {
        int64_t ms[4] = {1, 1, 1, 1};
        ms[d] = full[d] + 1; /* neither 1 nor full */
        call_init(&c);
        c.opt.mask = qkv_tensor_contiguous(g_mask, QKV_DTYPE_F32, ms[0], ms[1], ms[2], ms[3]);
        snprintf(what, sizeof what, "mask dim %d = %lld", d, (long long)ms[d]);
        expect(what, &c, QKV_ERR_SHAPE, "mask:", NULL);
        call_init(&c);
        ms[d] = -1;
        c.opt.mask = qkv_tensor_contiguous(g_mask, QKV_DTYPE_BOOL, ms[0], ms[1], ms[2], ms[3]);
        snprintf(what, sizeof what, "mask dim %d negative", d);
        expect(what, &c, QKV_ERR_SHAPE, "mask:", NULL);
    }
    call_init(&c);
    c.opt.mask = qkv_tensor_contiguous(g_mask, QKV_DTYPE_F32, 1, 1, 1, 1);
    c.opt.mask.stride[0] = INT64_MIN; /* a broadcast dim, yet a bad view */
    c.opt.mask.shape[3] = LK;
    c.opt.mask.stride[3] = INT64_MAX / 2;
    expect("mask stride overflow", &c, QKV_ERR_OVERFLOW, "mask:", NULL);
    /* Every broadcast shape is accepted. */
    for (int bits = 0; bits < 16; bits++) {
        int64_t ms[4];
        for (int d = 0; d < 4; d++) ms[d] = bits >> d & 1 ? full[d] : 1;
        call_init(&c);
        c.opt.mask = qkv_tensor_contiguous(g_mask, bits & 1 ? QKV_DTYPE_BOOL : QKV_DTYPE_F32,
                                           ms[0], ms[1], ms[2], ms[3]);
        qkv_status st = call_run(&c);
        if (st != QKV_OK) fprintf(stderr, "  mask shape bits %d: %s\n", bits, qkv_error_detail());
        CHECK(st == QKV_OK);
    }

    call_init(&c);
    c.lens[1] = -1;
    c.opt.kv_lens = c.lens;
    expect("kv_lens negative", &c, QKV_ERR_INVALID_ARGUMENT, "kv_lens[1]", NULL);
    call_init(&c);
    c.lens[0] = LK + 1;
    c.opt.kv_lens = c.lens;
    expect("kv_lens > Lk", &c, QKV_ERR_INVALID_ARGUMENT, "kv_lens[0]", NULL);
    call_init(&c);
    c.lens[0] = 0;
    c.lens[1] = LK;
    c.opt.kv_lens = c.lens;
    CHECK(call_run(&c) == QKV_OK);

    const double bad_scale[] = {NAN, INFINITY, -INFINITY};
    for (int x = 0; x < 3; x++) {
        call_init(&c);
        c.opt.scale = bad_scale[x];
        snprintf(what, sizeof what, "scale %g", bad_scale[x]);
        expect(what, &c, QKV_ERR_INVALID_ARGUMENT, "scale", NULL);
    }
    call_init(&c);
    c.opt.scale = -0.5; /* finite: accepted */
    CHECK(call_run(&c) == QKV_OK);
    const double bad_cap[] = {-1.0, -1e-300, NAN, INFINITY, -INFINITY};
    for (int x = 0; x < 5; x++) {
        call_init(&c);
        c.opt.softcap = bad_cap[x];
        snprintf(what, sizeof what, "softcap %g", bad_cap[x]);
        expect(what, &c, QKV_ERR_INVALID_ARGUMENT, "softcap", NULL);
    }
    /* How a call runs is the context's: its setters refuse a bad value. */
    qkv_context *ctx = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 0);
    expect_status("num_threads -1", qkv_context_set_threads(ctx, -1), QKV_ERR_INVALID_ARGUMENT,
                  "num_threads", NULL);
    const int bad_align[] = {2, -1, 99};
    for (int x = 0; x < 3; x++) {
        call_init(&c);
        c.opt.align = (qkv_align)bad_align[x];
        snprintf(what, sizeof what, "align %d", bad_align[x]);
        expect(what, &c, QKV_ERR_INVALID_ARGUMENT, "align", NULL);
        snprintf(what, sizeof what, "impl %d", bad_align[x]);
        expect_status(what, qkv_context_set_impl(ctx, (qkv_impl)bad_align[x]),
                      QKV_ERR_INVALID_ARGUMENT, "impl", NULL);
    }
    qkv_context_free(ctx);
}

/* ------------------------------------------------- error detail lifetime */

static void check_detail_cleared(void)
{
    call c;
    call_init(&c);
    c.opt.scale = NAN;
    CHECK(call_run(&c) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(qkv_error_detail()[0] != '\0');
    call_init(&c);
    CHECK(call_run(&c) == QKV_OK);
    if (qkv_error_detail()[0] != '\0')
        fprintf(stderr, "  detail after success: \"%s\"\n", qkv_error_detail());
    CHECK(strcmp(qkv_error_detail(), "") == 0);
}

typedef struct thread_result {
    int empty_at_start;
    int failed_right;
    char detail[512];
} thread_result;

static void *thread_fail(void *arg)
{
    thread_result *r = arg;
    r->empty_at_start = strcmp(qkv_error_detail(), "") == 0;
    qkv_context *ctx = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 0);
    r->failed_right = qkv_context_set_threads(ctx, -3) == QKV_ERR_INVALID_ARGUMENT;
    snprintf(r->detail, sizeof r->detail, "%s", qkv_error_detail());
    qkv_context_free(ctx);
    return NULL;
}

static void check_detail_per_thread(void)
{
    /* The main thread: success, so its detail is empty; a thread fails. */
    call c;
    call_init(&c);
    CHECK(call_run(&c) == QKV_OK);
    thread_result r;
    memset(&r, 0, sizeof r);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, thread_fail, &r) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(r.empty_at_start);
    CHECK(r.failed_right);
    CHECK(strncmp(r.detail, "num_threads", 11) == 0);
    if (qkv_error_detail()[0] != '\0')
        fprintf(stderr, "  main thread sees another thread's detail \"%s\"\n", qkv_error_detail());
    CHECK(strcmp(qkv_error_detail(), "") == 0);

    /* The main thread fails; the thread's failure does not replace it. */
    call_init(&c);
    c.opt.softcap = -2;
    CHECK(call_run(&c) == QKV_ERR_INVALID_ARGUMENT);
    char mine[512];
    snprintf(mine, sizeof mine, "%s", qkv_error_detail());
    memset(&r, 0, sizeof r);
    CHECK(pthread_create(&t, NULL, thread_fail, &r) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(r.empty_at_start); /* a new thread starts clean */
    CHECK(strcmp(qkv_error_detail(), mine) == 0);
    CHECK(strncmp(mine, "softcap", 7) == 0);
}

/* ------------------------------------------ defaults and absent outputs */

static void fill_inputs(void)
{
    test_rng r = test_rng_seed(42);
    for (size_t x = 0; x < sizeof g_q / sizeof g_q[0]; x++) g_q[x] = (float)(2 * test_rand(&r) - 1);
    for (size_t x = 0; x < sizeof g_k / sizeof g_k[0]; x++) g_k[x] = (float)(2 * test_rand(&r) - 1);
    for (size_t x = 0; x < sizeof g_v / sizeof g_v[0]; x++) g_v[x] = (float)(2 * test_rand(&r) - 1);
    for (size_t x = 0; x < sizeof g_mask / sizeof g_mask[0]; x++)
        g_mask[x] = (float)(test_rand(&r) - 0.5);
}

static void check_defaults(void)
{
    static float o1[sizeof g_o / sizeof g_o[0]], w1[sizeof g_w / sizeof g_w[0]],
        l1[sizeof g_l / sizeof g_l[0]];
    call c;
    call_init(&c);
    /* opts == NULL */
    CHECK(qkv_attention_forward(NULL, c.po, c.pw, c.pl, c.pq, c.pk, c.pv, NULL) == QKV_OK);
    memcpy(o1, g_o, sizeof o1);
    memcpy(w1, g_w, sizeof w1);
    memcpy(l1, g_l, sizeof l1);
    /* A zeroed struct: the same bits. */
    memset(g_o, 0, sizeof g_o);
    memset(g_w, 0, sizeof g_w);
    memset(g_l, 0, sizeof g_l);
    CHECK(call_run(&c) == QKV_OK);
    CHECK(memcmp(o1, g_o, sizeof o1) == 0);
    CHECK(memcmp(w1, g_w, sizeof w1) == 0);
    CHECK(memcmp(l1, g_l, sizeof l1) == 0);
    /* The default scale is 1/sqrt(E): the weights of row 0 sum to 1 and
     * follow exp(s_j / sqrt(E)) computed here. */
    double sj[LK], m = -INFINITY, sum = 0;
    for (int j = 0; j < LK; j++) {
        double d = 0;
        for (int e = 0; e < E; e++) d += (double)g_q[e] * (double)g_k[j * E + e];
        sj[j] = d / sqrt((double)E);
        if (sj[j] > m) m = sj[j];
    }
    for (int j = 0; j < LK; j++) sum += exp(sj[j] - m);
    for (int j = 0; j < LK; j++) CHECK_NEAR(w1[j], exp(sj[j] - m) / sum, 1e-6);
    CHECK_NEAR(l1[0], m + log(sum), 1e-5);

    /* weights / lse absent as NULL or as a tensor with data NULL: O is the
     * same, and an absent tensor's shape and dtype are not looked at. */
    for (int variant = 0; variant < 4; variant++) {
        call_init(&c);
        memset(g_o, 0, sizeof g_o);
        memset(g_w, 0x7f, sizeof g_w);
        memset(g_l, 0x7f, sizeof g_l);
        if (variant == 0) {
            c.pw = NULL;
            c.pl = NULL;
        } else {
            c.w.data = NULL;
            c.l.data = NULL;
            if (variant >= 2) { /* junk everywhere else */
                c.w.dtype = QKV_DTYPE_I64;
                c.w.shape[0] = -5;
                c.l.shape[3] = 7;
                c.l.stride[0] = INT64_MIN;
            }
            if (variant == 3) c.pl = NULL;
        }
        qkv_status st = call_run(&c);
        if (st != QKV_OK)
            fprintf(stderr, "  absent weights/lse variant %d: %s\n", variant, qkv_error_detail());
        CHECK(st == QKV_OK);
        CHECK(memcmp(o1, g_o, sizeof o1) == 0);
        /* Nothing was written to the buffers those tensors would name. */
        int untouched = 1;
        for (size_t x = 0; x < sizeof g_w; x++) untouched &= ((unsigned char *)g_w)[x] == 0x7f;
        for (size_t x = 0; x < sizeof g_l; x++) untouched &= ((unsigned char *)g_l)[x] == 0x7f;
        CHECK(untouched);
    }
    /* Only one of them requested. */
    call_init(&c);
    c.pw = NULL;
    memset(g_l, 0, sizeof g_l);
    CHECK(call_run(&c) == QKV_OK);
    CHECK(memcmp(l1, g_l, sizeof l1) == 0);
    call_init(&c);
    c.l.data = NULL;
    memset(g_w, 0, sizeof g_w);
    CHECK(call_run(&c) == QKV_OK);
    CHECK(memcmp(w1, g_w, sizeof w1) == 0);
    /* A mask tensor with data NULL is no mask, whatever its other fields. */
    call_init(&c);
    c.opt.mask.dtype = QKV_DTYPE_I32;
    c.opt.mask.shape[0] = 99;
    memset(g_o, 0, sizeof g_o);
    CHECK(call_run(&c) == QKV_OK);
    CHECK(memcmp(o1, g_o, sizeof o1) == 0);
}

/* num_threads = 0 has a meaning the caller can read. */
static void check_default_threads(void)
{
    int n = qkv_default_num_threads();
    CHECK(n >= 1 && n <= QKV_MAX_THREADS);
}

/* qkv_alloc: the alignment it promises, memory that can be written end to
 * end (ASan sees an overrun), 0 bytes and an impossible size refused with
 * a detail. Whether the OS gave huge pages is not the API's promise. */
static void check_alloc(void)
{
    const size_t sizes[] = {1, 63, 64, 4097, (size_t)2 << 20, ((size_t)2 << 20) + 1,
                            (size_t)5 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = qkv_alloc(sizes[i]);
        CHECK(p != NULL);
        if (!p) continue;
        const uintptr_t align = sizes[i] >= ((size_t)2 << 20) ? (uintptr_t)2 << 20 : 64;
        CHECK((uintptr_t)p % align == 0);
        memset(p, 0xA5, sizes[i]);
        CHECK(p[0] == 0xA5 && p[sizes[i] - 1] == 0xA5);
        qkv_free(p);
    }
    qkv_free(NULL);
    CHECK(qkv_alloc(0) == NULL);
    CHECK(strstr(qkv_error_detail(), "bytes is 0") != NULL);
    CHECK(qkv_alloc(SIZE_MAX) == NULL);
    CHECK(strstr(qkv_error_detail(), "qkv_alloc") != NULL);
}

/* qkv_array_as_tensor: leading 1s, contiguous strides, the same data;
 * ranks above 4 and negative dims refused with the view zeroed. */
static void check_array_as_tensor(void)
{
    float x[24];
    qkv_array a = {x, QKV_DTYPE_F32, 2, {4, 6}};
    qkv_tensor t;
    CHECK(qkv_array_as_tensor(&a, &t) == QKV_OK);
    CHECK(t.data == x && t.dtype == QKV_DTYPE_F32);
    CHECK(t.shape[0] == 1 && t.shape[1] == 1 && t.shape[2] == 4 && t.shape[3] == 6);
    CHECK(t.stride[2] == 6 && t.stride[3] == 1);
    qkv_array b = {x, QKV_DTYPE_F32, 4, {1, 2, 3, 4}};
    CHECK(qkv_array_as_tensor(&b, &t) == QKV_OK);
    CHECK(t.shape[1] == 2 && t.stride[0] == 24 && t.stride[1] == 12 && t.stride[2] == 4);
    qkv_array s = {x, QKV_DTYPE_F32, 0, {0}};
    CHECK(qkv_array_as_tensor(&s, &t) == QKV_OK);
    CHECK(t.shape[0] == 1 && t.shape[3] == 1);
    qkv_array five = {x, QKV_DTYPE_F32, 5, {1, 1, 1, 1, 24}};
    CHECK(qkv_array_as_tensor(&five, &t) == QKV_ERR_SHAPE);
    CHECK(test_starts_with(qkv_error_detail(), "a: rank 5"));
    CHECK(t.data == NULL && t.shape[3] == 0);
    qkv_array neg = {x, QKV_DTYPE_F32, 2, {4, -6}};
    CHECK(qkv_array_as_tensor(&neg, &t) == QKV_ERR_SHAPE);
    qkv_array huge = {x, QKV_DTYPE_F32, 3, {INT64_C(1) << 40, INT64_C(1) << 40, 1 << 20}};
    CHECK(qkv_array_as_tensor(&huge, &t) == QKV_ERR_OVERFLOW);
    CHECK(qkv_array_as_tensor(NULL, &t) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_array_as_tensor(&a, NULL) == QKV_ERR_NULL_ARGUMENT);
}

int main(void)
{
    check_alloc();
    check_array_as_tensor();
    check_default_threads();
    fill_inputs();
    check_version();
    check_status_strings();
    check_dtypes();
    check_contiguous();
    check_valid_base();
    check_null_and_dtype();
    check_shapes();
    check_strides();
    check_overlap_and_alignment();
    check_null_data();
    check_mask_and_options();
    check_detail_cleared();
    check_detail_per_thread();
    check_defaults();
    return test_finish("test_api");
}
