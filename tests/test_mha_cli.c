/* The multi-head attention layer against PyTorch, and `qkv mha`:
 *   - every case of tests/data/mha (written by tests/pytorch/make_mha_cases.py:
 *     nn.MultiheadAttention with and without bias, causal, padded, cross with
 *     kdim != embed_dim; Llama-style GQA with both RoPE pairings, BF16 and
 *     F16 parameters) through the library (qkv_safetensors_read,
 *     qkv_mha_load, qkv_mha_forward with both implementations) and through
 *     `qkv mha` with rank-3 and rank-2 inputs: Y and the per-head weights
 *     within a relative L2 error of 1e-5 of PyTorch's;
 *   - float64/float16 inputs, --prefix, threads giving the same bytes;
 *   - help, and every error path: exit status, one stderr line naming the
 *     flag and file, no output file left behind. */
#include "test.h"
#include "util.h"
#include "cmdtest.h"
#include "stream.h"

#include "qkv.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOL 1e-5

static const char *const cases[] = {
    "mha_self",       "mha_causal",       "mha_padding",    "mha_cross_kdim",
    "mha_cross_causal", "mha_nobias",     "llama_gqa_rope", "llama_rope_interleaved",
    "llama_bf16",     "llama_f16_bias",
};
#define NCASES (sizeof cases / sizeof cases[0])

/* The largest errors seen per case: library (reference, fast), CLI. */
static double worst[NCASES][3][2];

/* ------------------------------------------------------------ plumbing */

static const char *case_file(const char *cas, const char *name)
{
    static char bufs[8][4096];
    static int next;
    char *b = bufs[next++ % 8];
    fmt(b, sizeof bufs[0], "%s/mha/%s/%s", QKV_TEST_DATA, cas, name);
    return b;
}

/* An .npy of the case; a zeroed array when `optional` and absent. */
static int load_case(const char *cas, const char *name, int optional, qkv_array *out)
{
    memset(out, 0, sizeof *out);
    const char *path = case_file(cas, name);
    if (optional && !exists(path)) return 1;
    if (qkv_npy_read(path, out) != QKV_OK) {
        fprintf(stderr, "    cannot read %s: %s\n", path, qkv_error_detail());
        return 0;
    }
    return 1;
}

/* Compares n floats to the expected ones; returns the rel L2 error. */
static double expect_close(const float *got, const float *want, int64_t n, const char *what)
{
    double e = test_rel_l2(got, want, n);
    if (!(e <= TOL)) fprintf(stderr, "    %s: relative L2 error %g > %g\n", what, e, TOL);
    EXPECT(e <= TOL);
    return e;
}

/* Reads an output file of the given shape and compares it to want. */
static double expect_file(const char *path, int ndim, const int64_t *shape, const float *want,
                          const char *what)
{
    qkv_array got;
    if (qkv_npy_read(path, &got) != QKV_OK) {
        fprintf(stderr, "    cannot read %s: %s\n", path, qkv_error_detail());
        EXPECT(!"output readable");
        return INFINITY;
    }
    double e = INFINITY;
    EXPECT(got.dtype == QKV_DTYPE_F32);
    EXPECT(test_same_shape(&got, ndim, shape));
    if (got.dtype == QKV_DTYPE_F32 && test_same_shape(&got, ndim, shape))
        e = expect_close(got.data, want, qkv_array_numel(&got), what);
    qkv_array_free(&got);
    return e;
}

static void keep_worst(double *slot, double e)
{
    if (!(e <= *slot)) *slot = e;
}

/* args.txt: the options of `qkv mha` for the case, and the layer
 * configuration and attention options they mean. */
typedef struct case_args {
    char *text;
    const char *tok[32];
    int n;
    qkv_mha_config cfg;
    int causal;
    const char *prefix;
} case_args;

static int read_args(const char *cas, case_args *ca)
{
    memset(ca, 0, sizeof *ca);
    ca->text = slurp(case_file(cas, "args.txt"), NULL);
    if (!ca->text) return 0;
    for (char *t = strtok(ca->text, " \n"); t && ca->n < 32; t = strtok(NULL, " \n"))
        ca->tok[ca->n++] = t;
    for (int i = 0; i < ca->n; i++) {
        const char *t = ca->tok[i], *v = i + 1 < ca->n ? ca->tok[i + 1] : "";
        if (strcmp(t, "--heads") == 0) ca->cfg.heads = strtoll(v, NULL, 10);
        if (strcmp(t, "--kv-heads") == 0) ca->cfg.kv_heads = strtoll(v, NULL, 10);
        if (strcmp(t, "--causal") == 0) ca->causal = 1;
        if (strcmp(t, "--prefix") == 0) ca->prefix = v;
        if (strcmp(t, "--rope") == 0) {
            ca->cfg.rope = QKV_ROPE_HALF;
            ca->cfg.rope_base = strtod(v, NULL);
        }
        if (strcmp(t, "--rope-style") == 0 && strcmp(v, "interleaved") == 0)
            ca->cfg.rope = QKV_ROPE_INTERLEAVED;
    }
    return ca->cfg.heads > 0;
}

/* ------------------------------------------------------- the oracle cases */

/* The case's inputs and PyTorch's outputs. */
typedef struct oracle {
    qkv_array x, c, lens, lens64, y, w;
    int64_t B, Lq, Lk, D, H;
} oracle;

static void oracle_free(oracle *o)
{
    qkv_array *all[] = {&o->x, &o->c, &o->lens, &o->lens64, &o->y, &o->w};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qkv_array_free(all[i]);
}

static int oracle_load(const char *cas, oracle *o)
{
    memset(o, 0, sizeof *o);
    if (!load_case(cas, "x.npy", 0, &o->x) || !load_case(cas, "c.npy", 1, &o->c) ||
        !load_case(cas, "lens.npy", 1, &o->lens) || !load_case(cas, "y.npy", 0, &o->y) ||
        !load_case(cas, "w.npy", 0, &o->w))
        return 0;
    if (o->x.ndim != 3 || o->w.ndim != 4 || o->x.dtype != QKV_DTYPE_F32) return 0;
    if (o->lens.data && qkv_array_convert(&o->lens64, &o->lens, QKV_DTYPE_I64) != QKV_OK)
        return 0;
    o->B = o->x.shape[0];
    o->Lq = o->x.shape[1];
    o->D = o->x.shape[2];
    o->H = o->w.shape[1];
    o->Lk = o->w.shape[3];
    return 1;
}

/* The library on the case: both implementations, and 1 and 3 threads of
 * the fast path giving the same bytes. */
static void test_library(size_t ci, const case_args *ca, const oracle *o)
{
    const char *cas = cases[ci];
    qkv_safetensors *st = NULL;
    qkv_mha *m = NULL;
    EXPECT(qkv_safetensors_read(case_file(cas, "params.safetensors"), &st) == QKV_OK);
    if (!st) {
        fprintf(stderr, "    %s\n", qkv_error_detail());
        return;
    }
    EXPECT(qkv_mha_load(&m, &ca->cfg, st, ca->prefix) == QKV_OK);
    if (!m) {
        fprintf(stderr, "    qkv_mha_load: %s\n", qkv_error_detail());
        qkv_safetensors_free(st);
        return;
    }
    qkv_mha_config got = qkv_mha_get_config(m);
    EXPECT(got.d_model == o->D && got.heads == o->H);
    const int64_t ny = qkv_array_numel(&o->y), nw = qkv_array_numel(&o->w);
    float *y = test_malloc((size_t)ny * sizeof(float)), *w = test_malloc((size_t)nw * sizeof(float));
    float *y1 = test_malloc((size_t)ny * sizeof(float)), *w1 = test_malloc((size_t)nw * sizeof(float));
    static const qkv_impl impls[2] = {QKV_IMPL_REFERENCE, QKV_IMPL_AUTO};
    for (int i = 0; i < 2; i++) {
        for (int threads = 1; threads <= 3; threads += 2) {
            qkv_attention_options opt = {0};
            opt.causal = ca->causal;
            opt.align = QKV_ALIGN_TOP_LEFT;
            opt.kv_lens = o->lens64.data;
            qkv_context *ctx = test_context(impls[i], QKV_ISA_AUTO, threads);
            qkv_status s = qkv_mha_forward(ctx, m, threads == 1 ? y1 : y, threads == 1 ? w1 : w,
                                           o->x.data, o->B, o->Lq, o->c.data, o->Lk, &opt);
            qkv_context_free(ctx);
            EXPECT(s == QKV_OK);
            if (s) {
                fprintf(stderr, "    qkv_mha_forward: %s\n", qkv_error_detail());
                break;
            }
        }
        keep_worst(&worst[ci][i][0], expect_close(y, o->y.data, ny, "library y"));
        keep_worst(&worst[ci][i][1], expect_close(w, o->w.data, nw, "library weights"));
        EXPECT(memcmp(y, y1, (size_t)ny * sizeof(float)) == 0);
        EXPECT(memcmp(w, w1, (size_t)nw * sizeof(float)) == 0);
    }
    free(y);
    free(w);
    free(y1);
    free(w1);
    qkv_mha_free(m);
    qkv_safetensors_free(st);
}

/* Runs `qkv mha` with the case's options, the given input files and
 * extra arguments; outputs to %y.npy and %w.npy. */
static int run_cli(const case_args *ca, const char *x, const char *c, const char *lens,
                   const char *params, const char *extra)
{
    const char *args[48];
    int n = 0;
    args[n++] = "mha";
    args[n++] = "--params";
    args[n++] = params;
    args[n++] = "--query";
    args[n++] = x;
    if (c) {
        args[n++] = "--context";
        args[n++] = c;
    }
    if (lens) {
        args[n++] = "--kv-lens";
        args[n++] = lens;
    }
    args[n++] = "-o";
    args[n++] = "%y.npy";
    args[n++] = "--weights";
    args[n++] = "%w.npy";
    for (int i = 0; i < ca->n; i++) args[n++] = ca->tok[i];
    if (extra) args[n++] = extra;
    args[n] = NULL;
    return run_args(args);
}

static void test_cli_case(size_t ci, const case_args *ca, const oracle *o)
{
    const char *cas = cases[ci];
    const char *params = case_file(cas, "params.safetensors");
    char x[4096], c[4096], l[4096];
    fmt(x, sizeof x, "%s", case_file(cas, "x.npy"));
    fmt(c, sizeof c, "%s", case_file(cas, "c.npy"));
    fmt(l, sizeof l, "%s", case_file(cas, "lens.npy"));
    const int64_t ws[4] = {o->B, o->H, o->Lq, o->Lk};

    /* Rank 3, as stored: the fast path, the reference and 1 thread; with
     * 16-bit parameters also kept in their dtype (the same numbers). */
    const char *keep = strstr(cas, "bf16") ? "--weight-dtype=bf16"
                       : strstr(cas, "f16") ? "--weight-dtype=f16"
                                            : NULL;
    const char *const extra[4] = {NULL, "--reference", "--threads=1", keep};
    for (int v = 0; v < (keep ? 4 : 3); v++) {
        EXPECT_OK(run_cli(ca, x, o->c.data ? c : NULL, o->lens.data ? l : NULL, params, extra[v]));
        if (g_rc != 0) {
            clear_out(NULL, 0);
            continue;
        }
        keep_worst(&worst[ci][2][0], expect_file(out_path("y.npy"), 3, o->x.shape, o->y.data, "y"));
        keep_worst(&worst[ci][2][1], expect_file(out_path("w.npy"), 4, ws, o->w.data, "weights"));
        expect_out_files(2);
    }

    /* Rank 2: each sequence alone, B = 1. */
    for (int64_t b = 0; b < o->B; b++) {
        const int64_t xs[2] = {o->Lq, o->D}, w3[3] = {o->H, o->Lq, o->Lk};
        write_array(in_path("x2.npy"), QKV_DTYPE_F32, 2, xs,
                    (const float *)o->x.data + b * o->Lq * o->D);
        if (o->c.data) {
            const int64_t cs[2] = {o->Lk, o->c.shape[2]};
            write_array(in_path("c2.npy"), QKV_DTYPE_F32, 2, cs,
                        (const float *)o->c.data + b * o->Lk * cs[1]);
        }
        if (o->lens.data) {
            const int64_t one = 1;
            size_t es = o->lens.dtype == QKV_DTYPE_I32 ? 4 : 8;
            write_array(in_path("l2.npy"), o->lens.dtype, 1, &one,
                        (const char *)o->lens.data + (size_t)b * es);
        }
        EXPECT_OK(run_cli(ca, "@x2.npy", o->c.data ? "@c2.npy" : NULL,
                          o->lens.data ? "@l2.npy" : NULL, params, NULL));
        if (g_rc != 0) {
            clear_out(NULL, 0);
            continue;
        }
        keep_worst(&worst[ci][2][0],
                   expect_file(out_path("y.npy"), 2, xs, (const float *)o->y.data + b * o->Lq * o->D,
                               "rank-2 y"));
        keep_worst(&worst[ci][2][1],
                   expect_file(out_path("w.npy"), 3, w3,
                               (const float *)o->w.data + b * o->H * o->Lq * o->Lk,
                               "rank-2 weights"));
        expect_out_files(2);
    }
}

static void test_oracles(void)
{
    static char ctx[256];
    for (size_t ci = 0; ci < NCASES; ci++) {
        const char *cas = cases[ci];
        for (int i = 0; i < 3; i++) worst[ci][i][0] = worst[ci][i][1] = 0;
        fmt(ctx, sizeof ctx, "oracle %s", cas);
        set_ctx(ctx);
        case_args ca;
        oracle o;
        int ok = read_args(cas, &ca) && oracle_load(cas, &o);
        EXPECT(ok);
        if (ok) {
            EXPECT(o.D > 0 && o.H == ca.cfg.heads);
            test_library(ci, &ca, &o);
            test_cli_case(ci, &ca, &o);
        }
        oracle_free(&o);
        free(ca.text);
    }
    printf("relative L2 error against PyTorch, worst over the runs (y, weights):\n");
    printf("  %-24s %-21s %-21s %s\n", "case", "library reference", "library fast", "qkv mha");
    for (size_t ci = 0; ci < NCASES; ci++)
        printf("  %-24s %.1e %.1e     %.1e %.1e     %.1e %.1e\n", cases[ci], worst[ci][0][0],
               worst[ci][0][1], worst[ci][1][0], worst[ci][1][1], worst[ci][2][0],
               worst[ci][2][1]);
}

/* ------------------------------------------------------------ fixtures */

/* A layer with random parameters saved under the separate projection
 * names: D = 8, heads = 2 (E = 4), with biases; d_context 6 when cross. */
static void save_layer(const char *name, int64_t d_context, test_rng *rng)
{
    qkv_mha_config cfg = {0};
    cfg.d_model = 8;
    cfg.d_context = d_context;
    cfg.heads = 2;
    cfg.bias = 1;
    qkv_mha *m = NULL;
    if (qkv_mha_create(&m, &cfg) != QKV_OK) {
        fprintf(stderr, "test: qkv_mha_create: %s\n", qkv_error_detail());
        exit(2);
    }
    for (int p = 0; p < QKV_MHA_NUM_PARAMS; p++) {
        int64_t r, c;
        float *d = qkv_mha_param_data(m, (qkv_mha_param)p, &r, &c);
        for (int64_t i = 0; d && i < r * c; i++) d[i] = (float)(test_rand(rng) - 0.5);
    }
    if (qkv_mha_save(m, in_path(name), NULL) != QKV_OK) {
        fprintf(stderr, "test: qkv_mha_save: %s\n", qkv_error_detail());
        exit(2);
    }
    qkv_mha_free(m);
}

static void make_fixtures(void)
{
    test_rng rng = test_rng_seed(606);
    save_layer("p.safetensors", 0, &rng);
    save_layer("p_cross.safetensors", 6, &rng);

    /* A file missing o_proj.weight: only the q, k, v projections. */
    float *wt = test_rand_f32(&rng, 64, -1, 1);
    const char *names[3] = {"q_proj.weight", "k_proj.weight", "v_proj.weight"};
    qkv_array arr[3];
    for (int i = 0; i < 3; i++) {
        memset(&arr[i], 0, sizeof arr[i]);
        arr[i].data = wt;
        arr[i].dtype = QKV_DTYPE_F32;
        arr[i].ndim = 2;
        arr[i].shape[0] = arr[i].shape[1] = 8;
    }
    if (qkv_safetensors_write(in_path("p_no_o.safetensors"), 3, names, arr) != QKV_OK) {
        fprintf(stderr, "test: qkv_safetensors_write: %s\n", qkv_error_detail());
        exit(2);
    }
    free(wt);

    float *x = test_rand_f32(&rng, 4096, -1, 1);
    int32_t i32[80] = {0};
    /* Values that float16 holds exactly, so that the three dtypes agree. */
    for (int i = 0; i < 80; i++) x[i] = (float)((i * 7) % 17 - 8) / 16.0f;
    qkv_array xf = {0}, xd, xh;
    xf.data = x;
    xf.dtype = QKV_DTYPE_F32;
    xf.ndim = 3;
    xf.shape[0] = 2, xf.shape[1] = 5, xf.shape[2] = 8;
    if (qkv_array_convert(&xd, &xf, QKV_DTYPE_F64) != QKV_OK ||
        qkv_array_convert(&xh, &xf, QKV_DTYPE_F16) != QKV_OK) {
        fprintf(stderr, "test: qkv_array_convert: %s\n", qkv_error_detail());
        exit(2);
    }
    W("x_f64.npy", QKV_DTYPE_F64, xd.data, 2, 5, 8);
    W("x_f16.npy", QKV_DTYPE_F16, xh.data, 2, 5, 8);
    qkv_array_free(&xd);
    qkv_array_free(&xh);
    W("x.npy", QKV_DTYPE_F32, x, 2, 5, 8);
    W("x2.npy", QKV_DTYPE_F32, x, 5, 8);
    W("x_r1.npy", QKV_DTYPE_F32, x, 8);
    W("x_r4.npy", QKV_DTYPE_F32, x, 1, 2, 5, 8);
    W("x_i32.npy", QKV_DTYPE_I32, i32, 2, 5, 8);
    W("x_w6.npy", QKV_DTYPE_F32, x, 2, 5, 6);
    W("c.npy", QKV_DTYPE_F32, x, 2, 7, 6);
    W("c_w5.npy", QKV_DTYPE_F32, x, 2, 7, 5);
    W("c_r2.npy", QKV_DTYPE_F32, x, 7, 6);
    W("c_b3.npy", QKV_DTYPE_F32, x, 3, 7, 6);
    int32_t l32[3] = {5, 3, 3};
    W("lens.npy", QKV_DTYPE_I32, l32, 2);
    W("lens_len3.npy", QKV_DTYPE_I32, l32, 3);
    W("lens_r2.npy", QKV_DTYPE_I32, l32, 2, 1);
    float lf[2] = {5, 3};
    W("lens_f32.npy", QKV_DTYPE_F32, lf, 2);
    int64_t l64[2] = {6, 1};
    W("lens_big.npy", QKV_DTYPE_I64, l64, 2); /* 6 > Lk = 5 */
    l64[0] = 7;
    W("lens_7.npy", QKV_DTYPE_I64, l64, 2); /* fine for the context's Lk = 7 */
    l64[0] = -1;
    W("lens_neg.npy", QKV_DTYPE_I64, l64, 2);
    free(x);
    /* A layer stored as int8, a dtype the format has and qkv_dtype has not. */
    {
        static const char hdr[] =
            "{\"q_proj.weight\":{\"dtype\":\"I8\",\"shape\":[8,8],\"data_offsets\":[0,64]},"
            "\"k_proj.weight\":{\"dtype\":\"I8\",\"shape\":[8,8],\"data_offsets\":[64,128]},"
            "\"v_proj.weight\":{\"dtype\":\"I8\",\"shape\":[8,8],\"data_offsets\":[128,192]},"
            "\"o_proj.weight\":{\"dtype\":\"I8\",\"shape\":[8,8],\"data_offsets\":[192,256]}}";
        unsigned char img[8 + sizeof hdr - 1 + 256] = {0};
        for (int k = 0; k < 8; k++) img[k] = (unsigned char)((sizeof hdr - 1) >> (8 * k));
        memcpy(img + 8, hdr, sizeof hdr - 1);
        write_bytes(in_path("p_i8.safetensors"), img, sizeof img);
    }
    write_bytes(in_path("notst.safetensors"), "\223NUMPY this is an .npy, not a layer\n", 36);
}

/* ------------------------------------------------------ help, successes */

static void test_help_and_successes(void)
{
    static const char *const flags[] = {
        "--params", "--heads", "--kv-heads", "--query", "--context", "-o", "--weights",
        "--causal", "--kv-lens", "--rope", "--rope-style", "--prefix", "--reference",
        "--threads", "--kv-cost", "--help",
    };
    set_ctx("qkv --help lists mha");
    EXPECT(RUN("--help") == 0);
    EXPECT(strstr(g_stdout, "  mha ") != NULL);
    set_ctx("qkv mha --help");
    EXPECT(RUN("mha", "--help") == 0);
    EXPECT(strstr(g_stdout, "usage: qkv mha") != NULL);
    EXPECT(g_stderr[0] == '\0');
    for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
        char word[64];
        fmt(word, sizeof word, "%s ", flags[f]);
        int found = strstr(g_stdout, word) != NULL;
        if (!found) fprintf(stderr, "    mha --help does not mention %s\n", flags[f]);
        EXPECT(found);
    }
    EXPECT(RUN("mha", "-h") == 0 && strstr(g_stdout, "usage: qkv mha") != NULL);
    expect_out_files(0);

    /* --kv-cost: a table per head on stdout, no file; f32 costs nothing. */
    set_ctx("--kv-cost bf16 and f32");
    EXPECT(RUN("mha", "--params", "@p.safetensors", "--heads", "2", "--query", "@x.npy",
               "--kv-cost", "bf16") == 0);
    EXPECT(strstr(g_stdout, "kv cost: keys bf16, values bf16, against f32") != NULL);
    EXPECT(strstr(g_stdout, "\n     0  ") != NULL && strstr(g_stdout, "\n     1  ") != NULL &&
           strstr(g_stdout, "\n   all  ") != NULL && g_stderr[0] == '\0');
    EXPECT(RUN("mha", "--params", "@p.safetensors", "--heads", "2", "--query", "@x.npy",
               "--kv-cost", "f32,f32") == 0);
    EXPECT(strstr(g_stdout, "   all               0               0\n") != NULL);
    expect_out_files(0);

    /* float32, float64 and float16 X holding the same values: same bytes. */
    set_ctx("X as float32, float64, float16");
    static const char *const xs[3] = {"@x.npy", "@x_f64.npy", "@x_f16.npy"};
    char *first = NULL;
    size_t first_len = 0;
    for (int i = 0; i < 3; i++) {
        EXPECT_OK(RUN("mha", "--params", "@p.safetensors", "--heads", "2", "--query", xs[i], "-o",
                      "%y.npy", "--causal", "--rope", "10000"));
        size_t len = 0;
        char *b = slurp(out_path("y.npy"), &len);
        EXPECT(b != NULL);
        if (i == 0) {
            first = b;
            first_len = len;
        } else {
            EXPECT(b && first && len == first_len && memcmp(b, first, len) == 0);
            free(b);
        }
        expect_out_files(1);
    }
    free(first);

    set_ctx("cross-attention with padding lengths up to the context's Lk");
    EXPECT_OK(RUN("mha", "--params", "@p_cross.safetensors", "--heads", "2", "--query", "@x.npy",
                  "--context", "@c.npy", "--kv-lens", "@lens_7.npy", "-o", "%y.npy",
                  "--weights", "%w.npy"));
    qkv_array w;
    if (qkv_npy_read(out_path("w.npy"), &w) == QKV_OK) {
        const int64_t ws[4] = {2, 2, 5, 7};
        EXPECT(test_same_shape(&w, 4, ws));
        /* Batch 1 has one key: every weight row of it is (1, 0, ...). */
        const float *p = (const float *)w.data + 2 * 5 * 7;
        int ok = 1;
        for (int64_t r = 0; r < 2 * 5; r++)
            for (int64_t j = 0; j < 7; j++) ok &= p[r * 7 + j] == (j == 0 ? 1.0f : 0.0f);
        EXPECT(ok);
        qkv_array_free(&w);
    } else {
        EXPECT(!"weights readable");
    }
    expect_out_files(2);

    set_ctx("rank 2, an empty --prefix, --opt=value forms");
    EXPECT_OK(RUN("mha", "--params=@p.safetensors", "--heads=2", "--kv-heads=2", "--query=@x2.npy",
                  "-o", "%y.npy", "--prefix=", "--threads=2"));
    qkv_array y;
    if (qkv_npy_read(out_path("y.npy"), &y) == QKV_OK) {
        const int64_t s[2] = {5, 8};
        EXPECT(test_same_shape(&y, 2, s));
        qkv_array_free(&y);
    }
    expect_out_files(1);
}

/* ---------------------------------------------------------------- errors */

typedef struct err_case {
    const char *name;
    int rc;                /* expected exit status: 2 usage, 1 error */
    const char *needle[2]; /* stderr must contain these (flag, file or value) */
    const char *args[28];  /* after "qkv"; @ = input dir, % = output dir */
} err_case;

#define P "--params", "@p.safetensors"
#define X "--query", "@x.npy"
#define Y "-o", "%y.npy"
#define HD "--heads", "2"
#define GOOD P, HD, X, Y

static const err_case err_cases[] = {
    /* ---- usage errors: exit 2 */
    {"no arguments", 2, {"--params"}, {"mha"}},
    {"missing --params", 2, {"--params"}, {"mha", HD, X, Y}},
    {"missing --heads", 2, {"--heads"}, {"mha", P, X, Y}},
    {"missing --query", 2, {"--query"}, {"mha", P, HD, Y}},
    {"missing -o", 2, {"-o"}, {"mha", P, HD, X, "--weights", "%w.npy"}},
    {"unknown flag", 2, {"--bogus"}, {"mha", GOOD, "--bogus"}},
    {"run's -q is not an mha flag", 2, {"-q"}, {"mha", GOOD, "-q", "@x.npy"}},
    {"stray argument", 2, {"stray"}, {"mha", GOOD, "stray"}},
    {"--heads twice", 2, {"--heads"}, {"mha", GOOD, "--heads", "2"}},
    {"--heads 0", 2, {"--heads", "'0'"}, {"mha", P, "--heads", "0", X, Y}},
    {"--heads -2", 2, {"--heads"}, {"mha", P, "--heads", "-2", X, Y}},
    {"--heads abc", 2, {"--heads", "abc"}, {"mha", P, "--heads", "abc", X, Y}},
    {"--heads 2.5", 2, {"--heads"}, {"mha", P, "--heads=2.5", X, Y}},
    {"--kv-heads 0", 2, {"--kv-heads"}, {"mha", GOOD, "--kv-heads", "0"}},
    {"--kv-heads does not divide --heads", 2, {"--kv-heads", "--heads"},
     {"mha", P, "--heads", "4", "--kv-heads", "3", X, Y}},
    {"--rope without a number", 2, {"--rope"}, {"mha", GOOD, "--rope"}},
    {"--rope followed by a flag", 2, {"--rope", "--causal"}, {"mha", GOOD, "--rope", "--causal"}},
    {"--rope abc", 2, {"--rope", "abc"}, {"mha", GOOD, "--rope", "abc"}},
    {"--rope 0", 2, {"--rope"}, {"mha", GOOD, "--rope", "0"}},
    {"--rope -10000", 2, {"--rope"}, {"mha", GOOD, "--rope=-10000"}},
    {"--rope inf", 2, {"--rope"}, {"mha", GOOD, "--rope", "inf"}},
    {"--weight-dtype f64", 2, {"--weight-dtype", "'f64'"}, {"mha", GOOD, "--weight-dtype", "f64"}},
    {"--rope-style bad", 2, {"--rope-style", "sideways"},
     {"mha", GOOD, "--rope", "10000", "--rope-style", "sideways"}},
    {"--rope-style without --rope", 2, {"--rope-style", "--rope"},
     {"mha", GOOD, "--rope-style", "half"}},
    {"--threads 0", 2, {"--threads"}, {"mha", GOOD, "--threads", "0"}},
    {"--threads x", 2, {"--threads", "x"}, {"mha", GOOD, "--threads", "x"}},
    {"--threads 5000", 2, {"--threads"}, {"mha", GOOD, "--threads=5000"}},
    {"--causal=1", 2, {"--causal"}, {"mha", GOOD, "--causal=1"}},
    {"-o and --weights one file", 2, {"-o", "--weights"}, {"mha", GOOD, "--weights", "%y.npy"}},
    {"empty --query", 2, {"--query"}, {"mha", P, HD, "--query=", Y}},
    {"usage error wins over a missing file", 2, {"--heads"},
     {"mha", "--params", "@nope.safetensors", "--heads", "x", X, Y}},

    /* ---- other errors: exit 1 */
    {"missing params file", 1, {"--params", "nope.safetensors"},
     {"mha", "--params", "@nope.safetensors", HD, X, Y}},
    {"params file is not .safetensors", 1, {"--params", "notst.safetensors"},
     {"mha", "--params", "@notst.safetensors", HD, X, Y}},
    {"params file is an .npy", 1, {"--params", "x.npy"}, {"mha", "--params", "@x.npy", HD, X, Y}},
    {"params stored as I8", 1, {"--params", "q_proj.weight: dtype I8 is not F32, F16 or BF16"},
     {"mha", "--params", "@p_i8.safetensors", HD, X, Y}},
    {"params missing o_proj.weight", 1, {"--params", "o_proj.weight"},
     {"mha", "--params", "@p_no_o.safetensors", HD, X, Y}},
    {"--prefix naming nothing", 1, {"--params", "model.q_proj.weight"},
     {"mha", GOOD, "--prefix", "model."}},
    {"--heads 3 does not divide the layer", 1, {"--params", "--heads 3"},
     {"mha", P, "--heads", "3", X, Y}},
    {"--kv-heads 1 against the file", 1, {"--params", "--kv-heads 1"},
     {"mha", GOOD, "--kv-heads", "1"}},
    {"--rope with an odd head dim", 1, {"--params", "--rope"},
     {"mha", P, "--heads", "8", X, Y, "--rope", "10000"}},
    {"missing --query file", 1, {"--query", "nope.npy"}, {"mha", P, HD, "--query", "@nope.npy", Y}},
    {"int32 X", 1, {"--query", "x_i32.npy"}, {"mha", P, HD, "--query", "@x_i32.npy", Y}},
    {"X of rank 1", 1, {"--query", "x_r1.npy"}, {"mha", P, HD, "--query", "@x_r1.npy", Y}},
    {"X of rank 4", 1, {"--query", "x_r4.npy"}, {"mha", P, HD, "--query", "@x_r4.npy", Y}},
    {"X of the wrong width", 1, {"--query", "x_w6.npy"}, {"mha", P, HD, "--query", "@x_w6.npy", Y}},
    {"cross layer without --context", 1, {"--context", "p_cross.safetensors"},
     {"mha", "--params", "@p_cross.safetensors", HD, X, Y}},
    {"--context of the wrong width", 1, {"--context", "c_w5.npy"},
     {"mha", "--params", "@p_cross.safetensors", HD, X, "--context", "@c_w5.npy", Y}},
    {"--context width against a self layer", 1, {"--context", "c.npy"},
     {"mha", GOOD, "--context", "@c.npy"}},
    {"--context rank differs from X", 1, {"--context", "c_r2.npy"},
     {"mha", "--params", "@p_cross.safetensors", HD, X, "--context", "@c_r2.npy", Y}},
    {"--context batch differs from X", 1, {"--context", "c_b3.npy"},
     {"mha", "--params", "@p_cross.safetensors", HD, X, "--context", "@c_b3.npy", Y}},
    {"missing --context file", 1, {"--context", "nope.npy"},
     {"mha", "--params", "@p_cross.safetensors", HD, X, "--context", "@nope.npy", Y}},
    {"--kv-lens float32", 1, {"--kv-lens", "lens_f32.npy"}, {"mha", GOOD, "--kv-lens", "@lens_f32.npy"}},
    {"--kv-lens of length 3", 1, {"--kv-lens", "lens_len3.npy"},
     {"mha", GOOD, "--kv-lens", "@lens_len3.npy"}},
    {"--kv-lens of rank 2", 1, {"--kv-lens", "lens_r2.npy"}, {"mha", GOOD, "--kv-lens", "@lens_r2.npy"}},
    {"--kv-lens value > Lk", 1, {"--kv-lens", "lens_big.npy"},
     {"mha", GOOD, "--kv-lens", "@lens_big.npy"}},
    {"--kv-lens value < 0", 1, {"--kv-lens", "lens_neg.npy"},
     {"mha", GOOD, "--kv-lens", "@lens_neg.npy"}},
    {"--kv-lens missing file", 1, {"--kv-lens", "nope.npy"}, {"mha", GOOD, "--kv-lens", "@nope.npy"}},
    {"-o in a missing directory", 1, {"-o", "nodir"}, {"mha", P, HD, X, "-o", "%nodir/y.npy"}},
    {"--weights in a missing directory", 1, {"--weights", "nodir"},
     {"mha", GOOD, "--weights", "%nodir/w.npy"}},
    {"-o is a directory", 1, {"-o", "isdir"}, {"mha", P, HD, X, "-o", "%isdir"}},
    {"--kv-cost of no format", 2, {"--kv-cost", "'q9'"}, {"mha", P, HD, X, "--kv-cost", "q9"}},
    {"--kv-cost q8_0 on head dim 4", 1, {"--kv-cost q8_0", "multiple of 32"},
     {"mha", P, HD, X, "--kv-cost", "q8_0"}},
    {"--kv-cost with --context", 2, {"--kv-cost", "--context"},
     {"mha", "--params", "@p_cross.safetensors", HD, X, "--context", "@c.npy", "--kv-cost", "bf16"}},
};

static void test_errors(void)
{
    static char ctx[160];
    for (size_t c = 0; c < sizeof err_cases / sizeof err_cases[0]; c++) {
        const err_case *e = &err_cases[c];
        fmt(ctx, sizeof ctx, "error case '%s'", e->name);
        set_ctx(ctx);
        int want_dir = strcmp(e->name, "-o is a directory") == 0;
        if (want_dir) EXPECT(mkdir(out_path("isdir"), 0700) == 0);
        int rc = run_args(e->args);
        if (getenv("QKV_TEST_VERBOSE")) /* to review the messages */
            printf("%-40s exit %d: %s", e->name, rc, g_stderr[0] ? g_stderr : "\n");
        EXPECT(rc >= 0 && rc < 128); /* not killed by a signal */
        EXPECT(rc == e->rc);
        if (rc == e->rc) {
            EXPECT(one_line(g_stderr));
            EXPECT(strncmp(g_stderr, "qkv mha: ", 9) == 0);
            for (int x = 0; x < 2; x++)
                if (e->needle[x]) {
                    int named = strstr(g_stderr, e->needle[x]) != NULL;
                    if (!named) fprintf(stderr, "    stderr does not name '%s'\n", e->needle[x]);
                    EXPECT(named);
                }
            EXPECT(g_stdout[0] == '\0');
        }
        expect_out_files(want_dir ? 1 : 0);
    }

    /* A failure leaves an existing output as it was. */
    static const char precious[] = "precious, not an .npy\n";
    set_ctx("existing -o kept on failure");
    write_bytes(out_path("y.npy"), precious, sizeof precious - 1);
    EXPECT(RUN("mha", GOOD, "--kv-lens", "@lens_big.npy") == 1);
    size_t len = 0;
    char *b = slurp(out_path("y.npy"), &len);
    EXPECT(b && len == sizeof precious - 1 && memcmp(b, precious, len) == 0);
    free(b);
    expect_out_files(1);
}

/* ---------------------------------------------- non-finite parameters */

/* Like `qkv run` for its inputs, `qkv mha` succeeds but warns on stderr,
 * one line per tensor of --params that holds NaN or infinities. */
static void test_nonfinite_params(void)
{
    qkv_mha_config cfg = {0};
    cfg.d_model = 8;
    cfg.heads = 2;
    cfg.bias = 1;
    qkv_mha *m = NULL;
    test_rng rng = test_rng_seed(707);
    EXPECT(qkv_mha_create(&m, &cfg) == QKV_OK);
    for (int p = 0; m && p < QKV_MHA_NUM_PARAMS; p++) {
        int64_t r, c;
        float *d = qkv_mha_param_data(m, (qkv_mha_param)p, &r, &c);
        for (int64_t i = 0; d && i < r * c; i++) d[i] = (float)(test_rand(&rng) - 0.5);
        if (p == QKV_MHA_WK) d[5] = d[9] = NAN;
        if (p == QKV_MHA_BO) d[0] = INFINITY;
    }
    EXPECT(m && qkv_mha_save(m, in_path("p_nan.safetensors"), "l.") == QKV_OK);
    qkv_mha_free(m);

    set_ctx("NaN and inf in --params: warnings");
    EXPECT(RUN("mha", "--params", "@p_nan.safetensors", "--prefix", "l.", HD, X, "-o",
               "%y.npy") == 0);
    /* Two lines, each a warning. */
    const char *nl = strchr(g_stderr, '\n');
    EXPECT(test_starts_with(g_stderr, "qkv mha: warning: --params ") && nl &&
           test_starts_with(nl + 1, "qkv mha: warning: --params ") && one_line(nl + 1));
    EXPECT(strstr(g_stderr, "p_nan.safetensors: tensor 'l.k_proj.weight' holds 2 NaN or "
                            "infinite values") != NULL);
    EXPECT(strstr(g_stderr, "p_nan.safetensors: tensor 'l.o_proj.bias' holds 1 NaN or "
                            "infinite value;") != NULL);
    EXPECT(g_stdout[0] == '\0');
    expect_out_files(1);

    set_ctx("finite --params: no warning");
    EXPECT_OK(RUN("mha", GOOD));
    expect_out_files(1);
}

/* ------------------------------------------------------------ streams */

/* --params that never ends: /dev/zero (a header length of 0) and a FIFO fed
 * a good layer and then zeros; each fails at once with one line, bounded so
 * that a reader which reads on fails this test instead of hanging it. */
static char fifo[4200];

static int params_stream(const void *arg)
{
    const char *what = arg;
    int before = test_failures;
    pid_t pid = 0;
    if (strcmp(what, "fifo") == 0) {
        size_t len = 0;
        char *img = slurp(in_path("p.safetensors"), &len);
        EXPECT(img != NULL);
        pid = stream_feed(fifo, img, len, 1);
        free(img);
        EXPECT(RUN("mha", "--params", fifo, HD, X, Y) == 1);
        EXPECT(strstr(g_stderr, "trailing bytes after the") != NULL);
    } else {
        EXPECT(RUN("mha", "--params", "/dev/zero", HD, X, Y) == 1);
        EXPECT(strstr(g_stderr, "qkv mha: --params /dev/zero: header length 0") == g_stderr);
    }
    stream_reap(pid);
    EXPECT(one_line(g_stderr));
    return test_failures - before;
}

static void test_param_streams(void)
{
    set_ctx("--params /dev/zero");
    EXPECT(stream_bounded(params_stream, "zero") == 0);
    expect_out_files(0);
    set_ctx("--params FIFO: a good layer, then zeros");
    fmt(fifo, sizeof fifo, "%s", in_path("p.fifo"));
    EXPECT(mkfifo(fifo, 0600) == 0);
    EXPECT(stream_bounded(params_stream, "fifo") == 0);
    remove(fifo);
    expect_out_files(0);
}

int main(void)
{
    cmdtest_open();

    test_oracles();
    make_fixtures();
    test_help_and_successes();
    test_errors();
    test_nonfinite_params();
    test_param_streams();

    printf("test_mha_cli: %zu PyTorch cases, %zu error cases\n", NCASES,
           sizeof err_cases / sizeof err_cases[0]);
    cmdtest_close();
    return test_finish("test_mha_cli");
}
