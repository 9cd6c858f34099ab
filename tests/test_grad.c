/* `qkv grad` end to end: PyTorch's autograd answers for the grad_* oracle
 * cases; the float mask's gradient and every file output equal to the
 * library called in-process; and the error paths (exit code, one line
 * naming the flag or file, no output left behind). */
#include "test.h"
#include "util.h"

#include "qkv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char out[1 << 12], err[1 << 12];
static char *dir;

static const char *path(const char *name)
{
    static char bufs[16][1024];
    static int next;
    char *b = bufs[next++ % 16];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}


static int run(char **argv) { return test_run_qkv(argv, out, sizeof out, err, sizeof err); }

/* The .npy at got_path against the one at want_path: the same shape, and
 * within tol in relative L2. */
static void check_file(const char *got_path, const char *want_path, double tol, const char *what)
{
    qkv_array got = {0}, want = {0};
    const int read =
        qkv_npy_read(got_path, &got) == QKV_OK && qkv_npy_read(want_path, &want) == QKV_OK;
    if (!read) fprintf(stderr, "%s: %s\n", what, qkv_error_detail());
    CHECK(read && qkv_array_numel(&got) == qkv_array_numel(&want) && got.ndim == want.ndim);
    if (read && qkv_array_numel(&got) == qkv_array_numel(&want))
        CHECK_TENSOR(got.data, want.data, qkv_array_numel(&want), tol, "%s", what);
    qkv_array_free(&got);
    qkv_array_free(&want);
}

static void check_oracle(const char *cas, const char *flag, int has_mask)
{
    char *argv[20] = {"qkv", "grad", "-q", (char *)test_oracle_path(cas, "q"), "-k", (char *)test_oracle_path(cas, "k"),
                      "-v", (char *)test_oracle_path(cas, "v"), "--dout", (char *)test_oracle_path(cas, "dout"),
                      "--dq", (char *)path("dq.npy"), "--dk", (char *)path("dk.npy"), "--dv",
                      (char *)path("dv.npy")};
    int n = 16;
    if (flag) argv[n++] = (char *)flag;
    if (has_mask) {
        argv[n++] = "--mask";
        argv[n++] = (char *)test_oracle_path(cas, "mask");
    }
    argv[n] = NULL;
    int rc = run(argv);
    CHECK(rc == 0);
    if (rc) fprintf(stderr, "%s: %s\n", cas, err);
    static const char *const grads[3][2] = {{"dq", "dq.npy"}, {"dk", "dk.npy"}, {"dv", "dv.npy"}};
    for (int i = 0; i < 3; i++) {
        char what[160];
        snprintf(what, sizeof what, "qkv grad %s vs PyTorch: %s", cas, grads[i][0]);
        check_file(path(grads[i][1]), test_oracle_path(cas, grads[i][0]), 1e-4, what);
    }
}

static void write_f32(const char *p, int ndim, const int64_t *shape, const float *x)
{
    qkv_array a = {0};
    a.data = (void *)x;
    a.dtype = QKV_DTYPE_F32;
    a.ndim = ndim;
    for (int d = 0; d < ndim; d++) a.shape[d] = shape[d];
    CHECK(qkv_npy_write(p, &a) == QKV_OK);
}

/* A float mask of rank 2 and its gradient, bitwise as the library gives
 * them in-process, with a window and softcap for good measure. */
static void check_dmask(void)
{
    const int64_t H = 2, Lq = 3, Lk = 5, E = 4;
    test_rng r = test_rng_seed(5);
    float *q = test_rand_f32(&r, H * Lq * E, -1, 1), *k = test_rand_f32(&r, H * Lk * E, -1, 1);
    float *v = test_rand_f32(&r, H * Lk * E, -1, 1), *dout = test_rand_f32(&r, H * Lq * E, -1, 1);
    float *m = test_rand_f32(&r, Lq * Lk, -1, 1);
    const int64_t sq[3] = {H, Lq, E}, sk[3] = {H, Lk, E}, sm[2] = {Lq, Lk};
    write_f32(path("q.npy"), 3, sq, q);
    write_f32(path("k.npy"), 3, sk, k);
    write_f32(path("v.npy"), 3, sk, v);
    write_f32(path("do.npy"), 3, sq, dout);
    write_f32(path("m.npy"), 2, sm, m);
    char *argv[] = {"qkv", "grad", "-q", (char *)path("q.npy"), "-k", (char *)path("k.npy"), "-v",
                    (char *)path("v.npy"), "--dout", (char *)path("do.npy"), "--mask",
                    (char *)path("m.npy"), "--window", "1,1", "--softcap", "3", "--dq",
                    (char *)path("dq.npy"), "--dk", (char *)path("dk.npy"), "--dv",
                    (char *)path("dv.npy"), "--dmask", (char *)path("dm.npy"), NULL};
    CHECK(run(argv) == 0);

    float o[24], l[6], dq[24], dk[40], dv[40], dm[15];
    qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, 1, H, Lq, E);
    qkv_tensor tk = qkv_tensor_contiguous(k, QKV_DTYPE_F32, 1, H, Lk, E);
    qkv_tensor tv = qkv_tensor_contiguous(v, QKV_DTYPE_F32, 1, H, Lk, E);
    qkv_tensor tdo = qkv_tensor_contiguous(dout, QKV_DTYPE_F32, 1, H, Lq, E);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, 1, H, Lq, E);
    qkv_tensor tl = qkv_tensor_contiguous(l, QKV_DTYPE_F32, 1, H, Lq, 1);
    qkv_tensor tdq = qkv_tensor_contiguous(dq, QKV_DTYPE_F32, 1, H, Lq, E);
    qkv_tensor tdk = qkv_tensor_contiguous(dk, QKV_DTYPE_F32, 1, H, Lk, E);
    qkv_tensor tdv = qkv_tensor_contiguous(dv, QKV_DTYPE_F32, 1, H, Lk, E);
    qkv_tensor tdm = qkv_tensor_contiguous(dm, QKV_DTYPE_F32, 1, 1, Lq, Lk);
    qkv_attention_options opt = {0};
    opt.mask = qkv_tensor_contiguous(m, QKV_DTYPE_F32, 1, 1, Lq, Lk);
    opt.use_window = 1;
    opt.window_left = opt.window_right = 1;
    opt.softcap = 3;
    CHECK(qkv_attention_forward(NULL, &to, NULL, &tl, &tq, &tk, &tv, &opt) == QKV_OK);
    CHECK(qkv_attention_backward(NULL, &tdq, &tdk, &tdv, &tdm, &tdo, &tq, &tk, &tv, &to, &tl,
                                 &opt) == QKV_OK);
    const struct {
        const char *file;
        const float *want;
        int64_t n, ndim;
    } outs[] = {{"dq.npy", dq, 24, 3}, {"dk.npy", dk, 40, 3}, {"dv.npy", dv, 40, 3},
                {"dm.npy", dm, 15, 2}};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
        qkv_array a;
        CHECK(qkv_npy_read(path(outs[i].file), &a) == QKV_OK);
        CHECK(a.ndim == outs[i].ndim && qkv_array_numel(&a) == outs[i].n);
        CHECK(memcmp(a.data, outs[i].want, (size_t)outs[i].n * 4) == 0);
        qkv_array_free(&a);
    }
    free(q);
    free(k);
    free(v);
    free(dout);
    free(m);
}

static void check_errors(void)
{
    unlink(path("dq.npy"));
    unlink(path("dk.npy"));
    unlink(path("dv.npy"));
    unlink(path("dm.npy"));
    const char *Q = path("q.npy"), *K = path("k.npy"), *V = path("v.npy"), *D = path("do.npy");
    const char *DQ = path("dq.npy"), *DK = path("dk.npy"), *DV = path("dv.npy");
    const int64_t sb[1] = {15};
    unsigned char bm[15];
    for (int i = 0; i < 15; i++) bm[i] = (unsigned char)(i % 2);
    qkv_array ba = {0};
    ba.data = bm;
    ba.dtype = QKV_DTYPE_BOOL;
    ba.ndim = 1;
    ba.shape[0] = 5;
    CHECK(qkv_npy_write(path("b.npy"), &ba) == QKV_OK);
    write_f32(path("bad_do.npy"), 1, sb, (const float[15]){0});
    const struct {
        const char *args[16];
        int code;
        const char *names;
    } cases[] = {
        {{"-q", Q, "-k", K, "-v", V, "--dq", DQ, "--dk", DK, "--dv", DV}, 2, "--dout"},
        {{"-q", Q, "-k", K, "-v", V, "--dout", D, "--dq", DQ, "--dk", DK}, 2, "--dv"},
        {{"-q", Q, "-k", K, "-v", V, "--dout", D, "--dq", DQ, "--dk", DQ, "--dv", DV}, 2, "--dk"},
        {{"-q", Q, "-k", K, "-v", V, "--dout", D, "--dq", DQ, "--dk", DK, "--dv", DV, "--dmask",
          path("dm.npy")}, 2, "--dmask"},
        {{"-q", Q, "-k", K, "-v", V, "--dout", D, "--dq", DQ, "--dk", DK, "--dv", DV, "--bogus"},
         2, "--bogus"},
        {{"-q", Q, "-k", K, "-v", V, "--dout", path("bad_do.npy"), "--dq", DQ, "--dk", DK, "--dv",
          DV}, 1, "--dout"},
        {{"-q", Q, "-k", K, "-v", V, "--dout", path("missing.npy"), "--dq", DQ, "--dk", DK,
          "--dv", DV}, 1, "--dout"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *argv[24] = {"qkv", "grad"};
        int n = 2;
        for (int i = 0; i < 16 && cases[c].args[i]; i++) argv[n++] = (char *)cases[c].args[i];
        argv[n] = NULL;
        int rc = run(argv);
        size_t len = strlen(err);
        CHECK(rc == cases[c].code);
        CHECK(len > 0 && strchr(err, '\n') == err + len - 1);
        CHECK(strstr(err, cases[c].names) != NULL);
        CHECK(access(DQ, F_OK) != 0 && access(DK, F_OK) != 0 && access(DV, F_OK) != 0);
        if (rc != cases[c].code) fprintf(stderr, "grad case %zu: exit %d: %s", c, rc, err);
    }
    /* --dmask with a bool mask: the mask has no gradient. */
    char *argv[] = {"qkv", "grad", "-q", (char *)Q, "-k", (char *)K, "-v", (char *)V, "--dout",
                    (char *)D, "--mask", (char *)path("b.npy"), "--dq", (char *)DQ, "--dk",
                    (char *)DK, "--dv", (char *)DV, "--dmask", (char *)path("dm.npy"), NULL};
    CHECK(run(argv) == 1);
    CHECK(strstr(err, "--dmask") != NULL);
    CHECK(access(DQ, F_OK) != 0);
}

int main(void)
{
    dir = test_tmpdir();
    check_oracle("grad_small_causal", "--causal", 0);
    check_oracle("grad_small_gqa_mask", NULL, 1);
    check_dmask();
    check_errors();
    test_rmdir(dir);
    return test_finish("test_grad");
}
