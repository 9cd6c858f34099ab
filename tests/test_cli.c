/* End-to-end tests of the `qkv` command-line tool, run as a child process:
 *   - the PyTorch oracle cases through `qkv run` (default, --reference,
 *     --threads 1 and 2, the last two bitwise identical);
 *   - rank 2 = rank 3 = rank 4 inputs, float64/float16 inputs, and every
 *     option (mask ranks and dtypes, --kv-lens, --window, --softcap, --scale,
 *     causal alignments, --opt=value forms) checked bitwise against
 *     qkv_attention_forward called in-process with QKV_IMPL_REFERENCE;
 *   - NaN inputs: exit 0, one warning line, only the affected rows NaN;
 *   - help and version;
 *   - every error path, table-driven: exit code (2 usage, 1 other), never a
 *     signal, exactly one stderr line naming the flag or file, and no output
 *     (final or temporary) left behind; an existing output stays untouched.
 * Inputs are generated at run time in a temporary directory. */
#include "test.h"
#include "util.h"
#include "cmdtest.h"

#include "half.h"
#include "qkv.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ plumbing */

/* The command-test harness (EXPECT, RUN, set_ctx, "@in" and "%out"
 * arguments, slurp, expect_out_files, ...) is tests/cmdtest.h. */

static int count_char(const char *s, char c)
{
    int n = 0;
    for (; *s; s++) n += *s == c;
    return n;
}

/* Writes a .npy (version 1.0) by hand: dict padded to 64 bytes, then len
 * bytes of data. */
static void write_raw_npy(const char *path, const char *dict, const void *data, size_t len)
{
    char hdr[256];
    size_t dl = strlen(dict), hl = dl + 1;
    while ((10 + hl) % 64) hl++;
    memset(hdr, ' ', sizeof hdr);
    memcpy(hdr, dict, dl);
    hdr[hl - 1] = '\n';
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)hl,
                             (unsigned char)(hl >> 8)};
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(pre, 1, 10, f) != 10 || fwrite(hdr, 1, hl, f) != hl ||
        (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        fprintf(stderr, "test: cannot write fixture %s\n", path);
        exit(2);
    }
}

/* Reads an output file; 0 (and a failed check) if it cannot be read. */
static int read_out(const char *path, qkv_array *a)
{
    if (qkv_npy_read(path, a) != QKV_OK) {
        fprintf(stderr, "    cannot read %s: %s\n", path, qkv_error_detail());
        memset(a, 0, sizeof *a);
        return 0;
    }
    return 1;
}

static void print_shape(const char *what, const qkv_array *a)
{
    fprintf(stderr, "    %s shape (", what);
    for (int d = 0; d < a->ndim; d++)
        fprintf(stderr, "%s%lld", d ? ", " : "", (long long)a->shape[d]);
    fprintf(stderr, ")\n");
}

/* ------------------------------------------------------- help, version */

static void test_help_version(void)
{
    static const char *const flags[] = {
        "-q", "-k", "-v", "-o", "--mask", "--causal", "--causal-lower-right",
        "--scale", "--softcap", "--window", "--kv-lens", "--weights", "--lse",
        "--reference", "--threads", "--help",
    };
    set_ctx("qkv --help");
    EXPECT(RUN("--help") == 0);
    EXPECT(strstr(g_stdout, "usage") != NULL);
    EXPECT(strstr(g_stdout, "run") != NULL);
    EXPECT(strstr(g_stdout, "--version") != NULL);
    EXPECT(g_stderr[0] == '\0');

    const char *run_help[][3] = {{"run", "--help", NULL}, {"run", "-h", NULL}};
    for (int r = 0; r < 2; r++) {
        set_ctx("qkv run --help");
        EXPECT(run_args(run_help[r]) == 0);
        EXPECT(strstr(g_stdout, "usage") != NULL);
        EXPECT(g_stderr[0] == '\0');
        for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
            /* The flag as a word: followed by a space, ',', '=' or newline. */
            int found = 0;
            for (const char *p = g_stdout; (p = strstr(p, flags[f])); p++) {
                char after = p[strlen(flags[f])];
                char before = p == g_stdout ? ' ' : p[-1];
                if ((before == ' ' || before == '\n' || before == '[' || before == ',') &&
                    (after == ' ' || after == ',' || after == '=' || after == '\n' ||
                     after == ']'))
                    found = 1;
            }
            if (!found) fprintf(stderr, "    run --help does not mention %s\n", flags[f]);
            EXPECT(found);
        }
    }

    set_ctx("qkv --version");
    EXPECT(RUN("--version") == 0);
    EXPECT(strstr(g_stdout, qkv_version_string()) != NULL);
    EXPECT(one_line(g_stdout));
    EXPECT(g_stderr[0] == '\0');

    set_ctx("qkv (no arguments)");
    EXPECT(run_args((const char *const[]){NULL}) == 2);
    EXPECT(g_stdout[0] == '\0');
    EXPECT(g_stderr[0] != '\0');

    set_ctx("qkv unknown command");
    EXPECT(RUN("frobnicate") == 2);
    EXPECT(one_line(g_stderr));
    EXPECT(strstr(g_stderr, "frobnicate") != NULL);
    expect_out_files(0);
}

/* ------------------------------------------------------- oracle cases */

static const char *const oracle_cases[] = {
    "bool_mask_broadcast_heads", "causal_lower_right_rect", "causal_top_left_rect",
    "cross_rank3",               "float_mask_2d",           "gqa_6_3",
    "grad_small_causal",         "grad_small_gqa_mask",     "large_logits_small",
    "seed_example_like",
};

/* meta.json's "causal" (0 null, 1 "top_left", 2 "lower_right") and
 * "scale" (0 for null). Returns 0 when it cannot be understood. */
static int read_meta(const char *cas, int *causal, double *scale)
{
    char path[4096], buf[4096];
    snprintf(path, sizeof path, "%s/oracle/%s/meta.json", QKV_TEST_DATA, cas);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *c = strstr(buf, "\"causal\":"), *s = strstr(buf, "\"scale\":");
    if (!c || !s) return 0;
    for (c += 9; *c == ' '; c++) continue;
    for (s += 8; *s == ' '; s++) continue;
    if (strncmp(c, "null", 4) == 0)
        *causal = 0;
    else if (strncmp(c, "\"top_left\"", 10) == 0)
        *causal = 1;
    else if (strncmp(c, "\"lower_right\"", 13) == 0)
        *causal = 2;
    else
        return 0;
    if (strncmp(s, "null", 4) == 0) {
        *scale = 0;
    } else {
        char *end;
        *scale = strtod(s, &end);
        if (end == s) return 0;
    }
    return 1;
}

/* Compares an output file to an expected array: same shape, rel L2 <= tol. */
static void expect_close(const char *path, const qkv_array *want, double tol, const char *what)
{
    qkv_array got;
    EXPECT(read_out(path, &got));
    if (!got.data) return;
    EXPECT(got.dtype == QKV_DTYPE_F32);
    int shape_ok = test_same_shape(&got, want->ndim, want->shape);
    if (!shape_ok) {
        print_shape(what, &got);
        print_shape("expected", want);
    }
    EXPECT(shape_ok);
    if (shape_ok && got.dtype == QKV_DTYPE_F32) {
        double e = test_rel_l2(got.data, want->data, qkv_array_numel(want));
        if (!(e <= tol)) fprintf(stderr, "    %s: relative L2 error %g > %g\n", what, e, tol);
        EXPECT(e <= tol);
    }
    qkv_array_free(&got);
}

static void test_oracle(void)
{
    static char ctx[256];
    for (size_t c = 0; c < sizeof oracle_cases / sizeof oracle_cases[0]; c++) {
        const char *cas = oracle_cases[c];
        int causal = 0;
        double scale = 0;
        snprintf(ctx, sizeof ctx, "oracle %s", cas);
        set_ctx(ctx);
        EXPECT(read_meta(cas, &causal, &scale));
        qkv_array want_o, want_w = {0}, want_l = {0}, q;
        if (!test_load_oracle(cas, "out", &want_o) || !test_load_oracle(cas, "q", &q)) {
            EXPECT(!"oracle files readable");
            continue;
        }
        int has_w = access(test_oracle_path(cas, "weights"), F_OK) == 0;
        int has_mask = access(test_oracle_path(cas, "mask"), F_OK) == 0;
        if (has_w) {
            EXPECT(test_load_oracle(cas, "weights", &want_w));
            EXPECT(test_load_oracle(cas, "lse", &want_l));
        }
        char scale_s[64];
        snprintf(scale_s, sizeof scale_s, "%.17g", scale);

        /* Variants: default, --reference, --threads 1, --threads 2. */
        static const char *const variant[4][3] = {
            {NULL}, {"--reference", NULL}, {"--threads", "1", NULL}, {"--threads", "2", NULL}};
        char *files[2][3] = {{0}};
        size_t lens[2][3] = {{0}};
        for (int var = 0; var < 4; var++) {
            const char *args[32];
            int n = 0;
            args[n++] = "run";
            args[n++] = "-q";
            args[n++] = test_oracle_path(cas, "q");
            args[n++] = "-k";
            args[n++] = test_oracle_path(cas, "k");
            args[n++] = "-v";
            args[n++] = test_oracle_path(cas, "v");
            args[n++] = "-o";
            args[n++] = "%o.npy";
            args[n++] = "--weights";
            args[n++] = "%w.npy";
            args[n++] = "--lse";
            args[n++] = "%l.npy";
            if (has_mask) {
                args[n++] = "--mask";
                args[n++] = test_oracle_path(cas, "mask");
            }
            if (causal == 1) args[n++] = "--causal";
            if (causal == 2) args[n++] = "--causal-lower-right";
            if (scale != 0) {
                args[n++] = "--scale";
                args[n++] = scale_s;
            }
            for (int x = 0; variant[var][x]; x++) args[n++] = variant[var][x];
            args[n] = NULL;
            EXPECT(run_args(args) == 0);
            if (g_rc != 0) {
                clear_out(NULL, 0);
                continue;
            }
            EXPECT(g_stderr[0] == '\0');
            expect_close(out_path("o.npy"), &want_o, 1e-5, "out");
            if (has_w) {
                expect_close(out_path("w.npy"), &want_w, 1e-5, "weights");
                expect_close(out_path("l.npy"), &want_l, 1e-5, "lse");
            } else {
                /* No expected values: the shapes still follow Q's rank. */
                qkv_array w, l;
                int64_t ws[4], ls[4];
                int64_t lk = 0;
                qkv_array kk;
                if (test_load_oracle(cas, "k", &kk)) {
                    lk = kk.shape[kk.ndim - 2];
                    qkv_array_free(&kk);
                }
                for (int d = 0; d < q.ndim - 1; d++) ws[d] = ls[d] = q.shape[d];
                ws[q.ndim - 1] = lk;
                if (read_out(out_path("w.npy"), &w)) {
                    EXPECT(test_same_shape(&w, q.ndim, ws));
                    qkv_array_free(&w);
                } else {
                    EXPECT(!"weights readable");
                }
                if (read_out(out_path("l.npy"), &l)) {
                    EXPECT(test_same_shape(&l, q.ndim - 1, ls));
                    qkv_array_free(&l);
                } else {
                    EXPECT(!"lse readable");
                }
            }
            if (var >= 2) {
                static const char *const names[3] = {"o.npy", "w.npy", "l.npy"};
                for (int f = 0; f < 3; f++)
                    files[var - 2][f] = slurp(out_path(names[f]), &lens[var - 2][f]);
            }
            expect_out_files(3);
        }
        /* --threads 1 and --threads 2 write byte-identical files. */
        for (int f = 0; f < 3; f++) {
            EXPECT(files[0][f] && files[1][f] && lens[0][f] == lens[1][f] &&
                   memcmp(files[0][f], files[1][f], lens[0][f]) == 0);
            free(files[0][f]);
            free(files[1][f]);
        }
        qkv_array_free(&want_o);
        qkv_array_free(&want_w);
        qkv_array_free(&want_l);
        qkv_array_free(&q);
    }
}

/* ------------------------------------------- in-process reference runs */

/* 4-d f32 problem data kept by the test to compare the CLI against. */
typedef struct problem {
    int64_t B, H, Hkv, Lq, Lk, E, Ev;
    float *q, *k, *v;
} problem;

typedef struct lib_out {
    float *o, *w, *l;
    int64_t no, nw, nl;
} lib_out;

static void lib_out_free(lib_out *r)
{
    free(r->o);
    free(r->w);
    free(r->l);
    memset(r, 0, sizeof *r);
}

/* qkv_attention_forward with the reference kernel; 0 on failure. */
static int lib_forward(const problem *p, qkv_attention_options opt, lib_out *r)
{
    r->no = p->B * p->H * p->Lq * p->Ev;
    r->nw = p->B * p->H * p->Lq * p->Lk;
    r->nl = p->B * p->H * p->Lq;
    r->o = test_malloc((size_t)r->no * sizeof(float));
    r->w = test_malloc((size_t)r->nw * sizeof(float));
    r->l = test_malloc((size_t)r->nl * sizeof(float));
    qkv_tensor tq = qkv_tensor_contiguous(p->q, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->E);
    qkv_tensor tk = qkv_tensor_contiguous(p->k, QKV_DTYPE_F32, p->B, p->Hkv, p->Lk, p->E);
    qkv_tensor tv = qkv_tensor_contiguous(p->v, QKV_DTYPE_F32, p->B, p->Hkv, p->Lk, p->Ev);
    qkv_tensor to = qkv_tensor_contiguous(r->o, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->Ev);
    qkv_tensor tw = qkv_tensor_contiguous(r->w, QKV_DTYPE_F32, p->B, p->H, p->Lq, p->Lk);
    qkv_tensor tl = qkv_tensor_contiguous(r->l, QKV_DTYPE_F32, p->B, p->H, p->Lq, 1);
    qkv_context *ctx = test_context(QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 1);
    qkv_status st = qkv_attention_forward(ctx, &to, &tw, &tl, &tq, &tk, &tv, &opt);
    qkv_context_free(ctx);
    if (st != QKV_OK) fprintf(stderr, "    library: %s\n", qkv_error_detail());
    return st == QKV_OK;
}

/* The result of a problem with Lq = 0 or Lk = 0, from the header's
 * contract: no rows, or every row fully masked (o = 0, p = 0, lse = -inf). */
static void expected_empty(const problem *p, lib_out *r)
{
    r->no = p->B * p->H * p->Lq * p->Ev;
    r->nw = p->B * p->H * p->Lq * p->Lk;
    r->nl = p->B * p->H * p->Lq;
    r->o = test_malloc((size_t)r->no * sizeof(float));
    r->w = test_malloc((size_t)r->nw * sizeof(float));
    r->l = test_malloc((size_t)r->nl * sizeof(float));
    for (int64_t i = 0; i < r->no; i++) r->o[i] = 0.0f;
    for (int64_t i = 0; i < r->nw; i++) r->w[i] = 0.0f;
    for (int64_t i = 0; i < r->nl; i++) r->l[i] = -INFINITY;
}

/* The CLI's output file equals n floats bitwise (exact) or within rel L2
 * 1e-5, with the given shape. */
static void expect_file_equals(const char *path, const float *want, int64_t n, int ndim,
                               const int64_t *shape, int exact, const char *what)
{
    qkv_array got;
    EXPECT(read_out(path, &got));
    if (!got.data) return;
    EXPECT(got.dtype == QKV_DTYPE_F32);
    int shape_ok = test_same_shape(&got, ndim, shape);
    if (!shape_ok) {
        qkv_array w = {0};
        w.ndim = ndim;
        for (int d = 0; d < ndim; d++) w.shape[d] = shape[d];
        print_shape(what, &got);
        print_shape("expected", &w);
    }
    EXPECT(shape_ok);
    if (shape_ok && got.dtype == QKV_DTYPE_F32) {
        if (exact) {
            int same = n == 0 || memcmp(got.data, want, (size_t)n * sizeof(float)) == 0;
            if (!same)
                fprintf(stderr, "    %s differs from the library (max abs diff %g)\n", what,
                        test_max_abs_diff(got.data, want, n));
            EXPECT(same);
        } else {
            double e = test_rel_l2(got.data, want, n);
            if (!(e <= 1e-5)) fprintf(stderr, "    %s: relative L2 %g\n", what, e);
            EXPECT(e <= 1e-5);
        }
    }
    qkv_array_free(&got);
}

/* Checks o.npy, w.npy, l.npy in the output directory against the library
 * with Q's rank qrank (leading dims of the 4-d shape dropped). */
static void expect_outputs(const problem *p, const lib_out *r, int qrank, int exact)
{
    int64_t full_o[4] = {p->B, p->H, p->Lq, p->Ev};
    int64_t full_w[4] = {p->B, p->H, p->Lq, p->Lk};
    int drop = 4 - qrank;
    expect_file_equals(out_path("o.npy"), r->o, r->no, qrank, full_o + drop, exact, "out");
    expect_file_equals(out_path("w.npy"), r->w, r->nw, qrank, full_w + drop, exact,
                       "weights");
    expect_file_equals(out_path("l.npy"), r->l, r->nl, qrank - 1, full_w + drop, exact,
                       "lse");
}

/* Writes q/k/v of p as prefix_{q,k,v}.npy with rank `rank` (leading 1s
 * dropped; they must be 1) and dtype f32. */
static void write_problem(const problem *p, const char *prefix, int rank)
{
    char name[256];
    int64_t sq[4] = {p->B, p->H, p->Lq, p->E}, sk[4] = {p->B, p->Hkv, p->Lk, p->E},
            sv[4] = {p->B, p->Hkv, p->Lk, p->Ev};
    int drop = 4 - rank;
    snprintf(name, sizeof name, "%s_q.npy", prefix);
    write_array(in_path(name), QKV_DTYPE_F32, rank, sq + drop, p->q);
    snprintf(name, sizeof name, "%s_k.npy", prefix);
    write_array(in_path(name), QKV_DTYPE_F32, rank, sk + drop, p->k);
    snprintf(name, sizeof name, "%s_v.npy", prefix);
    write_array(in_path(name), QKV_DTYPE_F32, rank, sv + drop, p->v);
}

static problem make_problem(test_rng *rng, int64_t B, int64_t H, int64_t Hkv, int64_t Lq,
                            int64_t Lk, int64_t E, int64_t Ev)
{
    problem p = {B, H, Hkv, Lq, Lk, E, Ev, NULL, NULL, NULL};
    p.q = test_rand_f32(rng, B * H * Lq * E, -2, 2);
    p.k = test_rand_f32(rng, B * Hkv * Lk * E, -2, 2);
    p.v = test_rand_f32(rng, B * Hkv * Lk * Ev, -1, 1);
    return p;
}

static void free_problem(problem *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
}

/* Runs `qkv run` on prefix_{q,k,v}.npy with -o/--weights/--lse in the
 * output directory plus extra args (NULL-terminated). */
static int run_problem(const char *prefix, const char *const *extra)
{
    char qa[300], ka[300], va[300];
    snprintf(qa, sizeof qa, "@%s_q.npy", prefix);
    snprintf(ka, sizeof ka, "@%s_k.npy", prefix);
    snprintf(va, sizeof va, "@%s_v.npy", prefix);
    const char *args[48] = {"run", "-q", qa, "-k", ka, "-v", va, "-o", "%o.npy",
                            "--weights", "%w.npy", "--lse", "%l.npy"};
    int n = 13;
    for (int x = 0; extra && extra[x] && n < 47; x++) args[n++] = extra[x];
    args[n] = NULL;
    return run_args(args);
}

/* ------------------------------------------------------------- ranks */

static void test_ranks(void)
{
    test_rng rng = test_rng_seed(11);
    static const char *const ref[] = {"--reference", NULL};
    qkv_attention_options opt = {0};
    lib_out r;

    /* One head: rank 2 (L, E) = rank 3 (1, L, E) = rank 4 (1, 1, L, E). */
    problem p = make_problem(&rng, 1, 1, 1, 4, 6, 8, 5);
    EXPECT(lib_forward(&p, opt, &r));
    for (int rank = 2; rank <= 4; rank++) {
        char prefix[32];
        static char ctx[64];
        snprintf(prefix, sizeof prefix, "rank%d", rank);
        snprintf(ctx, sizeof ctx, "rank %d inputs, one head", rank);
        set_ctx(ctx);
        write_problem(&p, prefix, rank);
        EXPECT(run_problem(prefix, ref) == 0);
        EXPECT(g_stderr[0] == '\0');
        if (g_rc == 0) expect_outputs(&p, &r, rank, 1);
        expect_out_files(g_rc == 0 ? 3 : 0);
    }
    lib_out_free(&r);
    free_problem(&p);

    /* Several heads, GQA: rank 3 (H, L, E) = rank 4 (1, H, L, E). */
    p = make_problem(&rng, 1, 4, 2, 3, 7, 6, 4);
    EXPECT(lib_forward(&p, opt, &r));
    for (int rank = 3; rank <= 4; rank++) {
        char prefix[32];
        static char ctx[64];
        snprintf(prefix, sizeof prefix, "gqa%d", rank);
        snprintf(ctx, sizeof ctx, "rank %d inputs, 4 heads over 2", rank);
        set_ctx(ctx);
        write_problem(&p, prefix, rank);
        EXPECT(run_problem(prefix, ref) == 0);
        if (g_rc == 0) expect_outputs(&p, &r, rank, 1);
        expect_out_files(g_rc == 0 ? 3 : 0);
    }
    lib_out_free(&r);
    free_problem(&p);
}

/* ------------------------------------------------------------ dtypes */

/* IEEE binary16 bits of x, which must be exactly representable as a
 * normal f16 or zero (the test's values are k/16, |k| <= 32). */
static uint16_t f16_bits(float x)
{
    if (x == 0) return signbit(x) ? 0x8000 : 0;
    int ex;
    double f = frexp(fabs((double)x), &ex); /* x = f * 2^ex, f in [0.5, 1) */
    double mant = (2 * f - 1) * 1024;
    uint16_t h = (uint16_t)((x < 0 ? 0x8000 : 0) | (unsigned)((ex - 1 + 15) << 10) |
                            (unsigned)mant);
    if (mant != floor(mant) || ex - 1 < -14 || ex - 1 > 15) {
        fprintf(stderr, "test: %g is not an exact f16\n", (double)x);
        exit(2);
    }
    return h;
}

static void write_converted(const char *name, qkv_dtype dt, int ndim, const int64_t *shape,
                            const float *x, int64_t n)
{
    void *buf = test_malloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++) {
        if (dt == QKV_DTYPE_F64) ((double *)buf)[i] = x[i];
        else if (dt == QKV_DTYPE_F16) ((uint16_t *)buf)[i] = f16_bits(x[i]);
        else ((float *)buf)[i] = x[i];
    }
    write_array(in_path(name), dt, ndim, shape, buf);
    free(buf);
}

/* The f32 run's o.npy, w.npy and l.npy, as read back, for the runs in
 * other dtypes to be compared with. */
static qkv_array f32_out[3];
static const char *const out_names[3] = {"o.npy", "w.npy", "l.npy"};

static void keep_f32_outputs(void)
{
    for (int f = 0; f < 3; f++) {
        qkv_array_free(&f32_out[f]);
        EXPECT(qkv_npy_read(out_path(out_names[f]), &f32_out[f]) == QKV_OK);
    }
}

/* o.npy and w.npy in dt, each element the f32 run's rounded to dt; l.npy
 * the f32 run's lse exactly. */
static void expect_rounded_outputs(qkv_dtype dt)
{
    for (int f = 0; f < 3; f++) {
        qkv_array got;
        if (!f32_out[f].data || qkv_npy_read(out_path(out_names[f]), &got) != QKV_OK) {
            EXPECT(!"outputs readable");
            continue;
        }
        const int64_t n = qkv_array_numel(&got);
        EXPECT(n == qkv_array_numel(&f32_out[f]));
        const float *want = f32_out[f].data;
        int64_t bad = 0;
        if (f == 2) {
            EXPECT(got.dtype == QKV_DTYPE_F32);
            bad = got.dtype != QKV_DTYPE_F32 || memcmp(got.data, want, (size_t)n * 4) != 0;
        } else {
            EXPECT(got.dtype == dt);
            for (int64_t i = 0; got.dtype == dt && i < n; i++)
                bad += ((const uint16_t *)got.data)[i] != qkv_f32_to_f16(want[i]);
        }
        EXPECT(bad == 0);
        qkv_array_free(&got);
    }
}

static void test_dtypes(void)
{
    test_rng rng = test_rng_seed(22);
    problem p = {2, 2, 2, 3, 5, 4, 3, NULL, NULL, NULL};
    int64_t nq = p.B * p.H * p.Lq * p.E, nk = p.B * p.Hkv * p.Lk * p.E,
            nv = p.B * p.Hkv * p.Lk * p.Ev;
    float *x[3];
    int64_t n[3] = {nq, nk, nv};
    for (int t = 0; t < 3; t++) {
        x[t] = test_malloc((size_t)n[t] * sizeof(float));
        /* k/16 with |k| <= 32: exact in f16, f32 and f64. */
        for (int64_t i = 0; i < n[t]; i++) x[t][i] = (float)(floor(test_rand(&rng) * 65) - 32) / 16;
    }
    p.q = x[0];
    p.k = x[1];
    p.v = x[2];
    int64_t shapes[3][4] = {{2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 3}};
    static const char *const tn[3] = {"q", "k", "v"};
    static const struct {
        const char *prefix;
        qkv_dtype dt[3];
    } combos[] = {
        {"dt_f32", {QKV_DTYPE_F32, QKV_DTYPE_F32, QKV_DTYPE_F32}},
        {"dt_f64", {QKV_DTYPE_F64, QKV_DTYPE_F64, QKV_DTYPE_F64}},
        {"dt_f16", {QKV_DTYPE_F16, QKV_DTYPE_F16, QKV_DTYPE_F16}},
        {"dt_mix", {QKV_DTYPE_F16, QKV_DTYPE_F64, QKV_DTYPE_F32}},
    };
    qkv_attention_options opt = {0};
    lib_out r;
    EXPECT(lib_forward(&p, opt, &r));
    char *base[3] = {0};
    size_t blen[3] = {0};
    for (size_t c = 0; c < sizeof combos / sizeof combos[0]; c++) {
        static char ctx[64];
        snprintf(ctx, sizeof ctx, "dtypes %s", combos[c].prefix);
        set_ctx(ctx);
        for (int t = 0; t < 3; t++) {
            char name[64];
            snprintf(name, sizeof name, "%s_%s.npy", combos[c].prefix, tn[t]);
            write_converted(name, combos[c].dt[t], 4, shapes[t], x[t], n[t]);
        }
        EXPECT(run_problem(combos[c].prefix, NULL) == 0);
        EXPECT(g_stderr[0] == '\0');
        if (g_rc == 0 && combos[c].dt[0] == QKV_DTYPE_F16 && combos[c].dt[1] == QKV_DTYPE_F16) {
            /* f16 inputs are computed in f16: O and the weights come out
             * f16, the f32 run's rounded once more; lse as in f32. */
            expect_rounded_outputs(QKV_DTYPE_F16);
        } else if (g_rc == 0) {
            expect_outputs(&p, &r, 4, 0);
            /* Byte-identical to the float32 run of the same values. */
            static const char *const names[3] = {"o.npy", "w.npy", "l.npy"};
            for (int f = 0; f < 3; f++) {
                size_t len = 0;
                char *b = slurp(out_path(names[f]), &len);
                if (c == 0) {
                    base[f] = b;
                    blen[f] = len;
                } else {
                    EXPECT(b && base[f] && len == blen[f] && memcmp(b, base[f], len) == 0);
                    free(b);
                }
            }
        }
        if (c == 0 && g_rc == 0) keep_f32_outputs();
        expect_out_files(g_rc == 0 ? 3 : 0);
    }
    /* bf16 tensors named in a .safetensors file: computed in bf16 on
     * values bf16 holds exactly, so the f32-written outputs are the f32
     * run's bytes. */
    {
        set_ctx("dtypes: bf16 from FILE.safetensors:NAME");
        qkv_array arr[3];
        const char *names[3] = {"q", "k", "v"};
        for (int t = 0; t < 3; t++) {
            uint16_t *h = test_malloc((size_t)n[t] * sizeof *h);
            for (int64_t i = 0; i < n[t]; i++) h[i] = qkv_f32_to_bf16(x[t][i]);
            arr[t] = (qkv_array){h, QKV_DTYPE_BF16, 4, {0}};
            memcpy(arr[t].shape, shapes[t], sizeof shapes[t]);
        }
        EXPECT(qkv_safetensors_write(in_path("bf.safetensors"), 3, names, arr) == QKV_OK);
        for (int t = 0; t < 3; t++) free(arr[t].data);
        EXPECT(RUN("run", "-q", "@bf.safetensors:q", "-k", "@bf.safetensors:k", "-v",
                   "@bf.safetensors:v", "-o", "%o.npy", "--weights", "%w.npy", "--lse",
                   "%l.npy") == 0);
        EXPECT(g_stderr[0] == '\0');
        static const char *const outs[3] = {"o.npy", "w.npy", "l.npy"};
        for (int f = 0; f < 3 && g_rc == 0; f++) {
            size_t len = 0;
            char *b = slurp(out_path(outs[f]), &len);
            EXPECT(b && base[f] && len == blen[f] && memcmp(b, base[f], len) == 0);
            free(b);
        }
        expect_out_files(g_rc == 0 ? 3 : 0);
        /* A name the file lacks, and a file that is not there. */
        EXPECT(RUN("run", "-q", "@bf.safetensors:nope", "-k", "@bf.safetensors:k", "-v",
                   "@bf.safetensors:v", "-o", "%o.npy") == 1);
        EXPECT(strstr(g_stderr, "-q ") && strstr(g_stderr, "no tensor named 'nope'"));
        expect_out_files(0);
        EXPECT(RUN("run", "-q", "@gone.safetensors:q", "-k", "@bf.safetensors:k", "-v",
                   "@bf.safetensors:v", "-o", "%o.npy") == 1);
        EXPECT(strstr(g_stderr, "-q ") != NULL);
        expect_out_files(0);
    }
    /* --dtype f16 on f32 files: computed in f16, written f16. */
    {
        set_ctx("dtypes: --dtype f16");
        static const char *const f16[] = {"--dtype", "f16", NULL};
        EXPECT(run_problem("dt_f32", f16) == 0);
        if (g_rc == 0) expect_rounded_outputs(QKV_DTYPE_F16);
        expect_out_files(g_rc == 0 ? 3 : 0);
        static const char *const bad[] = {"--dtype", "f64", NULL};
        EXPECT(run_problem("dt_f32", bad) == 2);
        EXPECT(strstr(g_stderr, "--dtype: 'f64', expected f32, f16 or bf16") != NULL);
        expect_out_files(0);
    }
    for (int f = 0; f < 3; f++) free(base[f]), qkv_array_free(&f32_out[f]);
    lib_out_free(&r);
    for (int t = 0; t < 3; t++) free(x[t]);
}

/* ----------------------------------------------------------- options */

/* Shapes the option runs use: B must be 2 (the --kv-lens fixtures). */
enum { SET_MAIN, SET_TALL, SET_EMPTY_Q, SET_EMPTY_K, NSETS };
static const int64_t set_dims[NSETS][7] = {
    /* B, H, Hkv, Lq, Lk, E, Ev */
    {2, 4, 2, 5, 7, 8, 3}, /* GQA, Lq < Lk */
    {2, 2, 1, 7, 4, 4, 4}, /* MQA, Lq > Lk: lower-right leaves rows empty */
    {2, 2, 2, 0, 4, 4, 3},
    {2, 2, 2, 3, 0, 4, 3},
};

/* Masks for SET_MAIN, each written as a file with its own rank and dtype
 * and expanded by the test (NumPy broadcasting) to the full (B,H,Lq,Lk)
 * tensor the library gets. */
typedef struct mask_fix {
    const char *file;
    qkv_dtype dtype; /* of the file */
    int ndim;
    int64_t shape[4];
    int is_bool;
    float *data;           /* file values as f32 (or 0/1) */
    unsigned char *full_b; /* expanded */
    float *full_f;
} mask_fix;

static mask_fix masks[] = {
    {"m_r1_bool.npy", QKV_DTYPE_BOOL, 1, {7}, 1, 0, 0, 0},
    {"m_r2_bool.npy", QKV_DTYPE_BOOL, 2, {5, 7}, 1, 0, 0, 0},
    {"m_r3_bool.npy", QKV_DTYPE_BOOL, 3, {4, 5, 7}, 1, 0, 0, 0},
    {"m_r3_bcast.npy", QKV_DTYPE_BOOL, 3, {1, 5, 1}, 1, 0, 0, 0},
    {"m_r4_bool.npy", QKV_DTYPE_BOOL, 4, {2, 1, 5, 7}, 1, 0, 0, 0},
    {"m_r4_full.npy", QKV_DTYPE_BOOL, 4, {2, 4, 5, 7}, 1, 0, 0, 0},
    {"m_r2_f64.npy", QKV_DTYPE_F64, 2, {5, 7}, 0, 0, 0, 0},
    {"m_r4_f32.npy", QKV_DTYPE_F32, 4, {2, 1, 1, 7}, 0, 0, 0, 0},
    {"m_r1_f16.npy", QKV_DTYPE_F16, 1, {7}, 0, 0, 0, 0},
    {"m_r3_f32.npy", QKV_DTYPE_F32, 3, {4, 1, 7}, 0, 0, 0, 0},
};
#define NMASKS (int)(sizeof masks / sizeof masks[0])

static void make_masks(test_rng *rng)
{
    const int64_t *d = set_dims[SET_MAIN];
    const int64_t full[4] = {d[0], d[1], d[3], d[4]};
    for (int m = 0; m < NMASKS; m++) {
        mask_fix *mf = &masks[m];
        qkv_array a = {0};
        a.ndim = mf->ndim;
        for (int x = 0; x < mf->ndim; x++) a.shape[x] = mf->shape[x];
        int64_t n = qkv_array_numel(&a);
        mf->data = test_malloc((size_t)n * sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            double u = test_rand(rng);
            if (mf->is_bool)
                mf->data[i] = u < 0.75 ? 1.0f : 0.0f;
            else /* exact in f16: k/4, and -inf now and then */
                mf->data[i] = u < 0.2 ? -INFINITY : (float)(floor(u * 17) - 8) / 4;
        }
        if (mf->is_bool) {
            unsigned char *b = test_malloc((size_t)n);
            for (int64_t i = 0; i < n; i++) b[i] = mf->data[i] != 0;
            write_array(in_path(mf->file), QKV_DTYPE_BOOL, mf->ndim, mf->shape, b);
            free(b);
        } else if (mf->dtype == QKV_DTYPE_F16) {
            uint16_t *h = test_malloc((size_t)n * 2);
            for (int64_t i = 0; i < n; i++)
                h[i] = isinf(mf->data[i]) ? 0xFC00 : f16_bits(mf->data[i]);
            write_array(in_path(mf->file), QKV_DTYPE_F16, mf->ndim, mf->shape, h);
            free(h);
        } else {
            write_converted(mf->file, mf->dtype, mf->ndim, mf->shape, mf->data, n);
        }
        /* Broadcast: right-align the mask's dims with (B, H, Lq, Lk). */
        int64_t total = full[0] * full[1] * full[2] * full[3];
        mf->full_b = test_malloc((size_t)total);
        mf->full_f = test_malloc((size_t)total * sizeof(float));
        int64_t idx[4];
        int64_t t = 0;
        for (idx[0] = 0; idx[0] < full[0]; idx[0]++)
            for (idx[1] = 0; idx[1] < full[1]; idx[1]++)
                for (idx[2] = 0; idx[2] < full[2]; idx[2]++)
                    for (idx[3] = 0; idx[3] < full[3]; idx[3]++, t++) {
                        int64_t src = 0;
                        for (int x = 0; x < mf->ndim; x++) {
                            int64_t i = mf->shape[x] == 1 ? 0 : idx[4 - mf->ndim + x];
                            src = src * mf->shape[x] + i;
                        }
                        mf->full_b[t] = mf->data[src] != 0;
                        mf->full_f[t] = mf->data[src];
                    }
    }
}

static void free_masks(void)
{
    for (int m = 0; m < NMASKS; m++) {
        free(masks[m].data);
        free(masks[m].full_b);
        free(masks[m].full_f);
    }
}

static const int64_t lens_vals[2][2] = {{3, 7}, {0, 4}};
static const char *const lens_files[2] = {"lens_i32.npy", "lens_i64.npy"};

typedef struct opt_case {
    const char *name;
    int set;           /* SET_* */
    double scale;      /* 0: not given */
    double softcap;    /* 0: not given */
    int causal;        /* 0 none, 1 --causal, 2 --causal-lower-right */
    int window;        /* nonzero: --window WL,WR */
    int64_t wl, wr;
    int mask;          /* 1 + index into masks[], 0 none */
    int lens;          /* 1 + index into lens_files, 0 none */
    int eq;            /* --opt=value forms */
    const char *threads; /* --threads value or NULL */
} opt_case;

static const opt_case opt_cases[] = {
    {.name = "defaults"},
    {.name = "scale 0.25", .scale = 0.25},
    {.name = "scale -0.5", .scale = -0.5},
    {.name = "scale 3 (large logits)", .scale = 3},
    {.name = "softcap 2", .softcap = 2},
    {.name = "softcap 0.5, scale 2", .softcap = 0.5, .scale = 2},
    {.name = "causal", .causal = 1},
    {.name = "causal-lower-right", .causal = 2},
    {.name = "causal, Lq > Lk", .set = SET_TALL, .causal = 1},
    {.name = "causal-lower-right, Lq > Lk", .set = SET_TALL, .causal = 2},
    {.name = "window 1,1", .window = 1, .wl = 1, .wr = 1},
    {.name = "window 0,0", .window = 1, .wl = 0, .wr = 0},
    {.name = "window -1,0", .window = 1, .wl = -1, .wr = 0},
    {.name = "window 2,-1", .window = 1, .wl = 2, .wr = -1},
    {.name = "window 2,-1 causal-lower-right", .window = 1, .wl = 2, .wr = -1, .causal = 2},
    {.name = "window 1,3 causal", .window = 1, .wl = 1, .wr = 3, .causal = 1},
    {.name = "window 0,1 Lq > Lk lower-right", .set = SET_TALL, .window = 1, .wl = 0, .wr = 1,
     .causal = 2},
    {.name = "mask rank 1 bool (Lk,)", .mask = 1},
    {.name = "mask rank 2 bool (Lq,Lk)", .mask = 2},
    {.name = "mask rank 3 bool (H,Lq,Lk)", .mask = 3},
    {.name = "mask rank 3 bool (1,Lq,1)", .mask = 4},
    {.name = "mask rank 4 bool (B,1,Lq,Lk)", .mask = 5},
    {.name = "mask rank 4 bool full", .mask = 6},
    {.name = "mask rank 2 float64 with -inf", .mask = 7},
    {.name = "mask rank 4 float32 (B,1,1,Lk)", .mask = 8},
    {.name = "mask rank 1 float16", .mask = 9},
    {.name = "mask rank 3 float32 (H,1,Lk)", .mask = 10},
    {.name = "mask bool + causal", .mask = 2, .causal = 1},
    {.name = "kv-lens int32", .lens = 1},
    {.name = "kv-lens int64 with a 0", .lens = 2},
    {.name = "kv-lens int64 + causal-lower-right", .lens = 2, .causal = 2},
    {.name = "threads 3", .threads = "3"},
    {.name = "threads 1024", .threads = "1024"},
    {.name = "--opt=value forms", .eq = 1, .scale = 0.5, .window = 1, .wl = 1, .wr = 2,
     .mask = 7, .lens = 1, .threads = "2"},
    {.name = "everything at once", .eq = 1, .scale = 0.75, .softcap = 1.5, .causal = 2,
     .window = 1, .wl = 3, .wr = -1, .mask = 8, .lens = 1, .threads = "3"},
    {.name = "empty Lq", .set = SET_EMPTY_Q},
    {.name = "empty Lk (all rows masked)", .set = SET_EMPTY_K},
    {.name = "empty Lk, causal", .set = SET_EMPTY_K, .causal = 1},
};

static void test_options(void)
{
    test_rng rng = test_rng_seed(33);
    problem sets[NSETS];
    for (int s = 0; s < NSETS; s++) {
        const int64_t *d = set_dims[s];
        char prefix[32];
        sets[s] = make_problem(&rng, d[0], d[1], d[2], d[3], d[4], d[5], d[6]);
        snprintf(prefix, sizeof prefix, "set%d", s);
        write_problem(&sets[s], prefix, 4);
    }
    make_masks(&rng);
    for (int l = 0; l < 2; l++) {
        if (l == 0) {
            int32_t v[2] = {(int32_t)lens_vals[0][0], (int32_t)lens_vals[0][1]};
            write_array(in_path(lens_files[0]), QKV_DTYPE_I32, 1, (int64_t[]){2}, v);
        } else {
            write_array(in_path(lens_files[1]), QKV_DTYPE_I64, 1, (int64_t[]){2}, lens_vals[1]);
        }
    }

    for (size_t c = 0; c < sizeof opt_cases / sizeof opt_cases[0]; c++) {
        const opt_case *oc = &opt_cases[c];
        const problem *p = &sets[oc->set];
        static char ctx[128];
        snprintf(ctx, sizeof ctx, "option run: %s", oc->name);
        set_ctx(ctx);

        /* The library's options. */
        qkv_attention_options opt = {0};
        opt.scale = oc->scale;
        opt.softcap = oc->softcap;
        opt.causal = oc->causal != 0;
        opt.align = oc->causal == 2 ? QKV_ALIGN_BOTTOM_RIGHT : QKV_ALIGN_TOP_LEFT;
        opt.use_window = oc->window;
        opt.window_left = oc->wl;
        opt.window_right = oc->wr;
        if (oc->mask) {
            const mask_fix *mf = &masks[oc->mask - 1];
            opt.mask = mf->is_bool ? qkv_tensor_contiguous(mf->full_b, QKV_DTYPE_BOOL, p->B,
                                                           p->H, p->Lq, p->Lk)
                                   : qkv_tensor_contiguous(mf->full_f, QKV_DTYPE_F32, p->B,
                                                           p->H, p->Lq, p->Lk);
        }
        if (oc->lens) opt.kv_lens = lens_vals[oc->lens - 1];
        lib_out r;
        if (p->Lq == 0 || p->Lk == 0) {
            /* Known by the contract, without the library: nothing at all,
             * or every row fully masked (o = 0, lse = -inf). */
            expected_empty(p, &r);
        } else if (!lib_forward(p, opt, &r)) {
            EXPECT(!"library call succeeds");
            lib_out_free(&r);
            continue;
        }

        /* The same as flags: "--flag value" or "--flag=value". */
        const char *flag[6];
        char val[6][320];
        int nv = 0;
        if (oc->scale) {
            flag[nv] = "--scale";
            snprintf(val[nv++], sizeof val[0], "%.17g", oc->scale);
        }
        if (oc->softcap) {
            flag[nv] = "--softcap";
            snprintf(val[nv++], sizeof val[0], "%.17g", oc->softcap);
        }
        if (oc->window) {
            flag[nv] = "--window";
            snprintf(val[nv++], sizeof val[0], "%lld,%lld", (long long)oc->wl,
                     (long long)oc->wr);
        }
        if (oc->mask) {
            flag[nv] = "--mask";
            snprintf(val[nv++], sizeof val[0], "@%s", masks[oc->mask - 1].file);
        }
        if (oc->lens) {
            flag[nv] = "--kv-lens";
            snprintf(val[nv++], sizeof val[0], "@%s", lens_files[oc->lens - 1]);
        }
        if (oc->threads) {
            flag[nv] = "--threads";
            snprintf(val[nv++], sizeof val[0], "%s", oc->threads);
        }
        char joined[6][400];
        const char *extra[24];
        int n = 0;
        for (int x = 0; x < nv; x++) {
            if (oc->eq) {
                fmt(joined[x], sizeof joined[0], "%s=%s", flag[x], val[x]);
                extra[n++] = joined[x];
            } else {
                extra[n++] = flag[x];
                extra[n++] = val[x];
            }
        }
        if (oc->causal == 1) extra[n++] = "--causal";
        if (oc->causal == 2) extra[n++] = "--causal-lower-right";
        char prefix[32];
        snprintf(prefix, sizeof prefix, "set%d", oc->set);

        /* --reference: bitwise the library's reference; default: close. */
        for (int pass = 0; pass < 2; pass++) {
            extra[n] = pass == 0 ? "--reference" : NULL;
            extra[n + 1] = NULL;
            EXPECT(run_problem(prefix, extra) == 0);
            if (g_rc == 0) {
                EXPECT(g_stderr[0] == '\0');
                expect_outputs(p, &r, 4, pass == 0);
            }
            expect_out_files(g_rc == 0 ? 3 : 0);
        }
        lib_out_free(&r);
    }
    free_masks();
    for (int s = 0; s < NSETS; s++) free_problem(&sets[s]);
}

/* ---------------------------------------------------------------- NaN */

/* Row `row` of an n-wide f32 output: 1 if all NaN, 0 if none, -1 if
 * mixed. */
static int row_state(const float *x, int64_t row, int64_t n)
{
    int nan = 0;
    for (int64_t j = 0; j < n; j++) nan += isnan(x[row * n + j]) != 0;
    return nan == n ? 1 : nan == 0 ? 0 : -1;
}

static void test_nan(void)
{
    test_rng rng = test_rng_seed(44);
    problem p = make_problem(&rng, 2, 2, 2, 3, 5, 4, 6);
    const int64_t bad_row = (1 * 2 + 0) * 3 + 2; /* (b=1, h=0, i=2) */

    /* NaN in one element of Q: only that query row is NaN. */
    set_ctx("NaN in Q");
    p.q[bad_row * 4 + 1] = NAN;
    write_problem(&p, "nanq", 4);
    EXPECT(run_problem("nanq", NULL) == 0);
    EXPECT(one_line(g_stderr));
    EXPECT(strstr(g_stderr, "warning") != NULL);
    EXPECT(strstr(g_stderr, "-q") != NULL);
    if (g_rc == 0) {
        qkv_array o, w, l;
        if (read_out(out_path("o.npy"), &o) && read_out(out_path("w.npy"), &w) &&
            read_out(out_path("l.npy"), &l)) {
            for (int64_t row = 0; row < 12; row++) {
                int want = row == bad_row;
                if (row_state(o.data, row, 6) != want || row_state(w.data, row, 5) != want ||
                    row_state(l.data, row, 1) != want)
                    fprintf(stderr, "    row %lld: NaN state out %d weights %d lse %d, "
                                    "expected %d\n",
                            (long long)row, row_state(o.data, row, 6),
                            row_state(w.data, row, 5), row_state(l.data, row, 1), want);
                EXPECT(row_state(o.data, row, 6) == want);
                EXPECT(row_state(w.data, row, 5) == want);
                EXPECT(row_state(l.data, row, 1) == want);
            }
        } else {
            EXPECT(!"outputs readable");
        }
        qkv_array_free(&o);
        qkv_array_free(&w);
        qkv_array_free(&l);
    }
    expect_out_files(g_rc == 0 ? 3 : 0);
    p.q[bad_row * 4 + 1] = 0.5f;

    /* NaN in K and V at key 4, which --kv-lens 4,4 pads away: no NaN
     * anywhere (a warning is fine). */
    set_ctx("NaN in padded K/V");
    p.k[(1 * 2 + 1) * 5 * 4 + 4 * 4 + 2] = NAN;
    p.v[(0 * 2 + 0) * 5 * 6 + 4 * 6 + 3] = NAN;
    write_problem(&p, "nankv", 4);
    write_array(in_path("lens44.npy"), QKV_DTYPE_I64, 1, (int64_t[]){2},
                (int64_t[]){4, 4});
    EXPECT(run_problem("nankv", (const char *const[]){"--kv-lens", "@lens44.npy", NULL}) ==
           0);
    EXPECT(count_char(g_stderr, '\n') <= 2);
    if (g_rc == 0) {
        qkv_array o;
        if (read_out(out_path("o.npy"), &o)) {
            int any = 0;
            for (int64_t i = 0; i < qkv_array_numel(&o); i++)
                any |= isnan(((float *)o.data)[i]) != 0;
            EXPECT(!any);
            qkv_array_free(&o);
        }
    }
    expect_out_files(g_rc == 0 ? 3 : 0);

    free_problem(&p);

    /* NaN in a float mask at (i=1, j=2): every row i = 1 is NaN, only those. */
    set_ctx("NaN in a float mask");
    p = make_problem(&rng, 2, 2, 2, 3, 5, 4, 6);
    write_problem(&p, "nanm", 4);
    float m[15] = {0};
    m[1 * 5 + 2] = NAN;
    write_array(in_path("nanmask.npy"), QKV_DTYPE_F32, 2, (int64_t[]){3, 5}, m);
    EXPECT(run_problem("nanm", (const char *const[]){"--mask", "@nanmask.npy", NULL}) == 0);
    EXPECT(one_line(g_stderr));
    EXPECT(strstr(g_stderr, "--mask") != NULL);
    if (g_rc == 0) {
        qkv_array o;
        if (read_out(out_path("o.npy"), &o)) {
            for (int64_t row = 0; row < 12; row++)
                EXPECT(row_state(o.data, row, 6) == (row % 3 == 1));
            qkv_array_free(&o);
        } else {
            EXPECT(!"output readable");
        }
    }
    expect_out_files(g_rc == 0 ? 3 : 0);
    free_problem(&p);
}

/* ------------------------------------------------------------- errors */

/* Fixtures for the error cases: q (2,2,3,4), k (2,2,5,4), v (2,2,5,6) are
 * good; every other file is wrong in one way. */
static void make_error_fixtures(void)
{
    test_rng rng = test_rng_seed(55);
    float *x = test_rand_f32(&rng, 1024, -1, 1);
    int32_t i32[64] = {0};
    int64_t i64[4] = {0};
    unsigned char b8[64] = {0};
    W("q.npy", QKV_DTYPE_F32, x, 2, 2, 3, 4);
    W("k.npy", QKV_DTYPE_F32, x, 2, 2, 5, 4);
    W("v.npy", QKV_DTYPE_F32, x, 2, 2, 5, 6);
    W("q_i32.npy", QKV_DTYPE_I32, i32, 2, 2, 3, 4);
    W("q_bool.npy", QKV_DTYPE_BOOL, b8, 2, 2, 3, 4);
    W("v_i64.npy", QKV_DTYPE_I64, x, 2, 2, 5, 6);
    W("q_r1.npy", QKV_DTYPE_F32, x, 4);
    W("q_r5.npy", QKV_DTYPE_F32, x, 1, 2, 2, 3, 4);
    write_array(in_path("q_r0.npy"), QKV_DTYPE_F32, 0, NULL, x);
    W("k_r3.npy", QKV_DTYPE_F32, x, 2, 5, 4);
    W("v_r3.npy", QKV_DTYPE_F32, x, 2, 5, 6);
    W("k_e5.npy", QKV_DTYPE_F32, x, 2, 2, 5, 5);
    W("v_lk4.npy", QKV_DTYPE_F32, x, 2, 2, 4, 6);
    W("q_h3.npy", QKV_DTYPE_F32, x, 2, 3, 3, 4);
    W("k_b3.npy", QKV_DTYPE_F32, x, 3, 2, 5, 4);
    W("v_b3.npy", QKV_DTYPE_F32, x, 3, 2, 5, 6);
    W("q_e0.npy", QKV_DTYPE_F32, x, 2, 2, 3, 0);
    W("k_e0.npy", QKV_DTYPE_F32, x, 2, 2, 5, 0);
    W("m_badlk.npy", QKV_DTYPE_BOOL, b8, 3, 4);
    W("m_badb.npy", QKV_DTYPE_F32, x, 3, 2, 3, 5);
    W("m_i32.npy", QKV_DTYPE_I32, i32, 3, 5);
    W("m_r5.npy", QKV_DTYPE_BOOL, b8, 1, 1, 1, 3, 5);
    float lf[2] = {3, 5};
    W("lens_f32.npy", QKV_DTYPE_F32, lf, 2);
    i32[0] = 3, i32[1] = 5, i32[2] = 5;
    W("lens_len3.npy", QKV_DTYPE_I32, i32, 3);
    W("lens_r2.npy", QKV_DTYPE_I32, i32, 2, 1);
    i32[0] = 5, i32[1] = 6;
    W("lens_big.npy", QKV_DTYPE_I32, i32, 2);
    i64[0] = -1, i64[1] = 5;
    W("lens_neg.npy", QKV_DTYPE_I64, i64, 2);
    i64[0] = 3, i64[1] = (int64_t)1 << 40;
    W("lens_huge.npy", QKV_DTYPE_I64, i64, 2);
    x[7] = NAN;
    W("q_nan.npy", QKV_DTYPE_F32, x, 2, 2, 3, 4);
    x[7] = 0.25f;

    /* Malformed files, by hand. */
    const char *good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 3, 4), }";
    write_raw_npy(in_path("raw_ok.npy"), good, x, 48 * 4); /* sanity check of the writer */
    write_bytes(in_path("badmagic.npy"), "PK\003\004 this is not a .npy file\n", 30);
    write_bytes(in_path("empty.npy"), "", 0);
    write_raw_npy(in_path("trunc.npy"), good, x, 100);
    write_raw_npy(in_path("fortran.npy"),
                  "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2, 3, 4), }", x,
                  48 * 4);
    write_raw_npy(in_path("bigend.npy"),
                  "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2, 3, 4), }", x,
                  48 * 4);
    /* The header says fewer (or more) elements than the data holds. */
    write_raw_npy(in_path("lying_small.npy"),
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 3, 3), }", x,
                  48 * 4);
    write_raw_npy(in_path("lying_big.npy"),
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 5, 8), }", x,
                  80 * 4);
    if (mkdir(in_path("adir.npy"), 0700) != 0) {
        fprintf(stderr, "test: mkdir failed: %s\n", strerror(errno));
        exit(2);
    }
    free(x);
}

typedef struct err_case {
    const char *name;
    int rc;                /* expected exit status: 2 usage, 1 error */
    const char *needle[2]; /* stderr must contain these (flag, file or value) */
    const char *args[28];  /* after "qkv"; @ = input dir, % = output dir */
} err_case;

#define QKV3 "-q", "@q.npy", "-k", "@k.npy", "-v", "@v.npy"
#define OUTS "-o", "%o.npy", "--weights", "%w.npy", "--lse", "%l.npy"
#define KV "-k", "@k.npy", "-v", "@v.npy"

static const err_case err_cases[] = {
    /* ---- usage errors: exit 2 */
    {"unknown flag", 2, {"--bogus"}, {"run", QKV3, OUTS, "--bogus"}},
    {"unknown short flag", 2, {"-x"}, {"run", QKV3, OUTS, "-x"}},
    {"stray positional argument", 2, {"stray.npy"}, {"run", QKV3, OUTS, "stray.npy"}},
    {"missing -q", 2, {"-q"}, {"run", KV, OUTS}},
    {"missing -k", 2, {"-k"}, {"run", "-q", "@q.npy", "-v", "@v.npy", OUTS}},
    {"missing -v", 2, {"-v"}, {"run", "-q", "@q.npy", "-k", "@k.npy", OUTS}},
    {"missing -o", 2, {"-o"}, {"run", QKV3, "--weights", "%w.npy", "--lse", "%l.npy"}},
    {"no arguments to run", 2, {"-q"}, {"run"}},
    {"-q given twice", 2, {"-q"}, {"run", QKV3, "-q", "@q.npy", OUTS}},
    {"-o given twice", 2, {"-o"}, {"run", QKV3, OUTS, "-o", "%o2.npy"}},
    {"--scale given twice", 2, {"--scale"}, {"run", QKV3, OUTS, "--scale", "1", "--scale", "2"}},
    {"--scale twice, = form", 2, {"--scale"}, {"run", QKV3, OUTS, "--scale=1", "--scale", "1"}},
    {"--mask given twice", 2, {"--mask"}, {"run", QKV3, OUTS, "--mask", "@m_i32.npy", "--mask", "@m_i32.npy"}},
    {"--causal given twice", 2, {"--causal"}, {"run", QKV3, OUTS, "--causal", "--causal"}},
    {"--reference given twice", 2, {"--reference"}, {"run", QKV3, OUTS, "--reference", "--reference"}},
    {"-o without value", 2, {"-o"}, {"run", QKV3, "--weights", "%w.npy", "--lse", "%l.npy", "-o"}},
    {"--scale without value", 2, {"--scale"}, {"run", QKV3, OUTS, "--scale"}},
    {"--kv-lens without value", 2, {"--kv-lens"}, {"run", QKV3, OUTS, "--kv-lens"}},
    {"--causal and --causal-lower-right", 2, {"--causal"}, {"run", QKV3, OUTS, "--causal", "--causal-lower-right"}},
    {"--scale abc", 2, {"--scale", "abc"}, {"run", QKV3, OUTS, "--scale", "abc"}},
    {"--scale 0", 2, {"--scale"}, {"run", QKV3, OUTS, "--scale", "0"}},
    {"--scale nan", 2, {"--scale", "nan"}, {"run", QKV3, OUTS, "--scale", "nan"}},
    {"--scale inf", 2, {"--scale", "inf"}, {"run", QKV3, OUTS, "--scale", "inf"}},
    {"--scale -inf", 2, {"--scale"}, {"run", QKV3, OUTS, "--scale", "-inf"}},
    {"--scale 1e999", 2, {"--scale"}, {"run", QKV3, OUTS, "--scale", "1e999"}},
    {"--scale 0.5x", 2, {"--scale", "0.5x"}, {"run", QKV3, OUTS, "--scale", "0.5x"}},
    {"--scale= (empty)", 2, {"--scale"}, {"run", QKV3, OUTS, "--scale="}},
    {"--softcap 0", 2, {"--softcap"}, {"run", QKV3, OUTS, "--softcap", "0"}},
    {"--softcap -1", 2, {"--softcap"}, {"run", QKV3, OUTS, "--softcap", "-1"}},
    {"--softcap x", 2, {"--softcap"}, {"run", QKV3, OUTS, "--softcap", "x"}},
    {"--softcap inf", 2, {"--softcap"}, {"run", QKV3, OUTS, "--softcap=inf"}},
    {"--window 3", 2, {"--window"}, {"run", QKV3, OUTS, "--window", "3"}},
    {"--window a,b", 2, {"--window", "a,b"}, {"run", QKV3, OUTS, "--window", "a,b"}},
    {"--window -2,1", 2, {"--window"}, {"run", QKV3, OUTS, "--window", "-2,1"}},
    {"--window 1,-2", 2, {"--window"}, {"run", QKV3, OUTS, "--window", "1,-2"}},
    {"--window 1,2,3", 2, {"--window"}, {"run", QKV3, OUTS, "--window", "1,2,3"}},
    {"--window 1,", 2, {"--window"}, {"run", QKV3, OUTS, "--window", "1,"}},
    {"--window ,1", 2, {"--window"}, {"run", QKV3, OUTS, "--window", ",1"}},
    {"--window huge", 2, {"--window"}, {"run", QKV3, OUTS, "--window", "99999999999999999999,1"}},
    {"--threads 0", 2, {"--threads"}, {"run", QKV3, OUTS, "--threads", "0"}},
    {"--threads -1", 2, {"--threads"}, {"run", QKV3, OUTS, "--threads", "-1"}},
    {"--threads x", 2, {"--threads"}, {"run", QKV3, OUTS, "--threads", "x"}},
    {"--threads 5000", 2, {"--threads"}, {"run", QKV3, OUTS, "--threads", "5000"}},
    {"--threads 1.5", 2, {"--threads"}, {"run", QKV3, OUTS, "--threads=1.5"}},
    {"-o and --weights the same path", 2, {"-o", "--weights"},
     {"run", QKV3, "-o", "%o.npy", "--weights", "%o.npy"}},
    {"-o and --lse the same path", 2, {"-o", "--lse"},
     {"run", QKV3, "-o", "%o.npy", "--lse", "%o.npy"}},
    {"--weights and --lse the same path", 2, {"--weights", "--lse"},
     {"run", QKV3, "-o", "%o.npy", "--weights", "%w.npy", "--lse", "%w.npy"}},
    /* The same file spelled another way: without the check, --weights
     * overwrites -o and the command succeeds with the wrong data. */
    {"-o and --weights the same file via ./", 2, {"-o", "--weights"},
     {"run", QKV3, "-o", "%o.npy", "--weights", "%./o.npy"}},
    {"--causal=1", 2, {"--causal"}, {"run", QKV3, OUTS, "--causal=1"}},
    {"--causal-lower-right=1", 2, {"--causal-lower-right"}, {"run", QKV3, OUTS, "--causal-lower-right=1"}},
    {"--reference=yes", 2, {"--reference"}, {"run", QKV3, OUTS, "--reference=yes"}},
    {"usage error wins over a missing file", 2, {"--scale"},
     {"run", "-q", "@nope.npy", KV, OUTS, "--scale", "abc"}},

    /* ---- other errors: exit 1 */
    {"nonexistent -q", 1, {"-q", "nope.npy"}, {"run", "-q", "@nope.npy", KV, OUTS}},
    {"nonexistent -k", 1, {"-k", "nope.npy"}, {"run", "-q", "@q.npy", "-k", "@nope.npy", "-v", "@v.npy", OUTS}},
    {"nonexistent -v", 1, {"-v", "nope.npy"}, {"run", "-q", "@q.npy", "-k", "@k.npy", "-v", "@nope.npy", OUTS}},
    {"nonexistent --mask", 1, {"--mask", "nope.npy"}, {"run", QKV3, OUTS, "--mask", "@nope.npy"}},
    {"nonexistent --kv-lens", 1, {"--kv-lens", "nope.npy"}, {"run", QKV3, OUTS, "--kv-lens", "@nope.npy"}},
    {"directory as -q", 1, {"-q", "adir.npy"}, {"run", "-q", "@adir.npy", KV, OUTS}},
    {"directory as --mask", 1, {"--mask", "adir.npy"}, {"run", QKV3, OUTS, "--mask", "@adir.npy"}},
    {"bad magic", 1, {"-q", "badmagic.npy"}, {"run", "-q", "@badmagic.npy", KV, OUTS}},
    {"empty file", 1, {"-q", "empty.npy"}, {"run", "-q", "@empty.npy", KV, OUTS}},
    {"truncated data", 1, {"-k", "trunc.npy"}, {"run", "-q", "@q.npy", "-k", "@trunc.npy", "-v", "@v.npy", OUTS}},
    {"Fortran order", 1, {"-v", "fortran.npy"}, {"run", "-q", "@q.npy", "-k", "@k.npy", "-v", "@fortran.npy", OUTS}},
    {"big-endian >f4", 1, {"-q", "bigend.npy"}, {"run", "-q", "@bigend.npy", KV, OUTS}},
    {"header shape smaller than data", 1, {"-q", "lying_small.npy"}, {"run", "-q", "@lying_small.npy", KV, OUTS}},
    {"header shape larger than data", 1, {"-k", "lying_big.npy"},
     {"run", "-q", "@q.npy", "-k", "@lying_big.npy", "-v", "@v.npy", OUTS}},
    {"int32 Q", 1, {"-q", "q_i32.npy"}, {"run", "-q", "@q_i32.npy", KV, OUTS}},
    {"bool Q", 1, {"-q", "q_bool.npy"}, {"run", "-q", "@q_bool.npy", KV, OUTS}},
    {"int64 V", 1, {"-v", "v_i64.npy"}, {"run", "-q", "@q.npy", "-k", "@k.npy", "-v", "@v_i64.npy", OUTS}},
    {"rank 0 Q", 1, {"-q", "q_r0.npy"}, {"run", "-q", "@q_r0.npy", KV, OUTS}},
    {"rank 1 Q", 1, {"-q", "q_r1.npy"}, {"run", "-q", "@q_r1.npy", KV, OUTS}},
    {"rank 5 Q", 1, {"-q", "q_r5.npy"}, {"run", "-q", "@q_r5.npy", KV, OUTS}},
    {"K rank differs from Q", 1, {"-k"}, {"run", "-q", "@q.npy", "-k", "@k_r3.npy", "-v", "@v.npy", OUTS}},
    {"V rank differs from Q", 1, {"-v"}, {"run", "-q", "@q.npy", "-k", "@k.npy", "-v", "@v_r3.npy", OUTS}},
    {"head dim mismatch", 1, {"-k", "k_e5.npy"}, {"run", "-q", "@q.npy", "-k", "@k_e5.npy", "-v", "@v.npy", OUTS}},
    {"Lk mismatch K vs V", 1, {"-v", "v_lk4.npy"}, {"run", "-q", "@q.npy", "-k", "@k.npy", "-v", "@v_lk4.npy", OUTS}},
    {"H not divisible by Hkv", 1, {"heads"}, {"run", "-q", "@q_h3.npy", KV, OUTS}},
    {"batch mismatch K", 1, {"-k", "k_b3.npy"}, {"run", "-q", "@q.npy", "-k", "@k_b3.npy", "-v", "@v.npy", OUTS}},
    {"batch mismatch V", 1, {"-v", "v_b3.npy"}, {"run", "-q", "@q.npy", "-k", "@k.npy", "-v", "@v_b3.npy", OUTS}},
    {"head dim 0", 1, {"-q", "q_e0.npy"}, {"run", "-q", "@q_e0.npy", "-k", "@k_e0.npy", "-v", "@v.npy", OUTS}},
    {"mask with wrong Lk", 1, {"--mask", "m_badlk.npy"}, {"run", QKV3, OUTS, "--mask", "@m_badlk.npy"}},
    {"mask with wrong B", 1, {"--mask", "m_badb.npy"}, {"run", QKV3, OUTS, "--mask", "@m_badb.npy"}},
    {"mask of dtype int32", 1, {"--mask", "m_i32.npy"}, {"run", QKV3, OUTS, "--mask", "@m_i32.npy"}},
    {"mask of rank 5", 1, {"--mask", "m_r5.npy"}, {"run", QKV3, OUTS, "--mask", "@m_r5.npy"}},
    {"malformed mask", 1, {"--mask", "bigend.npy"}, {"run", QKV3, OUTS, "--mask=@bigend.npy"}},
    {"kv-lens float", 1, {"--kv-lens", "lens_f32.npy"}, {"run", QKV3, OUTS, "--kv-lens", "@lens_f32.npy"}},
    {"kv-lens wrong length", 1, {"--kv-lens", "lens_len3.npy"}, {"run", QKV3, OUTS, "--kv-lens", "@lens_len3.npy"}},
    {"kv-lens rank 2", 1, {"--kv-lens", "lens_r2.npy"}, {"run", QKV3, OUTS, "--kv-lens", "@lens_r2.npy"}},
    {"kv-lens value > Lk", 1, {"--kv-lens", "lens_big.npy"}, {"run", QKV3, OUTS, "--kv-lens", "@lens_big.npy"}},
    {"kv-lens value < 0", 1, {"--kv-lens", "lens_neg.npy"}, {"run", QKV3, OUTS, "--kv-lens", "@lens_neg.npy"}},
    {"kv-lens value 2^40", 1, {"--kv-lens", "lens_huge.npy"}, {"run", QKV3, OUTS, "--kv-lens=@lens_huge.npy"}},
    {"-o directory does not exist", 1, {"-o", "nodir"},
     {"run", QKV3, "-o", "%nodir/o.npy", "--weights", "%w.npy", "--lse", "%l.npy"}},
    {"--weights directory does not exist", 1, {"--weights", "nodir"},
     {"run", QKV3, "-o", "%o.npy", "--weights", "%nodir/w.npy", "--lse", "%l.npy"}},
    {"--lse directory does not exist (-o fine)", 1, {"--lse", "nodir"},
     {"run", QKV3, "-o", "%o.npy", "--weights", "%w.npy", "--lse", "%nodir/l.npy"}},
    {"--lse directory does not exist, no --weights", 1, {"--lse", "nodir"},
     {"run", QKV3, "-o", "%o.npy", "--lse", "%nodir/l.npy"}},
    /* The contract is one stderr line on error, even when a NaN warning
     * would come first. */
    {"NaN in Q and a head dim mismatch", 1, {"-k", "k_e5.npy"},
     {"run", "-q", "@q_nan.npy", "-k", "@k_e5.npy", "-v", "@v.npy", OUTS}},
};

static void test_errors(void)
{
    static char ctx[160];
    /* The fixtures themselves are sound: the good files and the hand
     * writer's good file run. */
    set_ctx("error fixtures sanity");
    EXPECT(RUN("run", QKV3, OUTS) == 0);
    expect_out_files(3);
    EXPECT(RUN("run", "-q", "@raw_ok.npy", KV, OUTS) == 0);
    expect_out_files(3);

    for (size_t c = 0; c < sizeof err_cases / sizeof err_cases[0]; c++) {
        const err_case *e = &err_cases[c];
        snprintf(ctx, sizeof ctx, "error case '%s'", e->name);
        set_ctx(ctx);
        int rc = run_args(e->args);
        if (getenv("QKV_TEST_VERBOSE")) /* to review the messages */
            printf("%-44s exit %d: %s", e->name, rc, g_stderr[0] ? g_stderr : "\n");
        EXPECT(rc >= 0 && rc < 128); /* not killed by a signal */
        EXPECT(rc == e->rc);
        if (rc == e->rc) { /* else the message is not the one for this error */
            EXPECT(one_line(g_stderr));
            for (int x = 0; x < 2; x++)
                if (e->needle[x]) {
                    int named = strstr(g_stderr, e->needle[x]) != NULL;
                    if (!named)
                        fprintf(stderr, "    stderr does not name '%s'\n", e->needle[x]);
                    EXPECT(named);
                }
            EXPECT(g_stdout[0] == '\0');
        }
        expect_out_files(0);
    }
}

/* A failing command leaves an existing output file byte for byte as it
 * was; a successful one replaces it with the usual file mode. */
static void test_existing_outputs(void)
{
    static const char precious[] = "precious bytes, not an .npy file\n";
    char o[4096];
    size_t len = 0;
    fmt(o, sizeof o, "%s", out_path("o.npy"));
    char *b;

    static const struct {
        const char *name;
        int rc;
        const char *args[20];
    } fails[] = {
        {"shape error", 1, {"run", "-q", "@q.npy", "-k", "@k_e5.npy", "-v", "@v.npy", OUTS}},
        {"usage error", 2, {"run", QKV3, OUTS, "--scale", "abc"}},
        {"--lse in a missing directory", 1,
         {"run", QKV3, "-o", "%o.npy", "--lse", "%nodir/l.npy"}},
        /* The rename of --lse fails after -o was renamed into place. */
        {"--lse is an existing directory", 1,
         {"run", QKV3, "-o", "%o.npy", "--weights", "%w.npy", "--lse", "%isdir"}},
        {"--weights is an existing directory", 1,
         {"run", QKV3, "-o", "%o.npy", "--weights", "%isdir"}},
    };
    for (size_t f = 0; f < sizeof fails / sizeof fails[0]; f++) {
        static char ctx[160];
        snprintf(ctx, sizeof ctx, "existing -o kept on failure: %s", fails[f].name);
        set_ctx(ctx);
        write_bytes(o, precious, sizeof precious - 1);
        EXPECT(mkdir(out_path("isdir"), 0700) == 0);
        EXPECT(run_args(fails[f].args) == fails[f].rc);
        EXPECT(one_line(g_stderr));
        b = slurp(o, &len);
        int kept = b && len == sizeof precious - 1 && memcmp(b, precious, len) == 0;
        if (!kept)
            fprintf(stderr, "    %s: %s\n", o,
                    !b ? "was removed" : "was changed");
        EXPECT(kept);
        free(b);
        struct stat sb;
        EXPECT(stat(out_path("isdir"), &sb) == 0 && S_ISDIR(sb.st_mode));
        EXPECT(!exists(out_path("w.npy")));
        EXPECT(!exists(out_path("l.npy")));
        expect_out_files(-1); /* o.npy (checked above) and isdir */
    }

    set_ctx("-o is an existing directory");
    EXPECT(mkdir(out_path("isdir"), 0700) == 0);
    EXPECT(RUN("run", QKV3, "-o", "%isdir", "--weights", "%w.npy", "--lse", "%l.npy") == 1);
    EXPECT(one_line(g_stderr));
    EXPECT(strstr(g_stderr, "-o") != NULL);
    expect_out_files(1); /* isdir only */

    set_ctx("success replaces an existing output");
    write_bytes(o, precious, sizeof precious - 1);
    EXPECT(RUN("run", QKV3, "-o", "%o.npy") == 0);
    qkv_array a;
    if (read_out(o, &a)) {
        EXPECT(a.dtype == QKV_DTYPE_F32 && a.ndim == 4 && a.shape[3] == 6);
        qkv_array_free(&a);
    } else {
        EXPECT(!"output replaced by an .npy");
    }
    struct stat sb;
    mode_t mask = umask(0);
    umask(mask);
    EXPECT(stat(o, &sb) == 0 && (sb.st_mode & 0777) == (0666 & ~mask));
    expect_out_files(1);
}

int main(void)
{
    cmdtest_open();

    test_help_version();
    test_oracle();
    test_ranks();
    test_dtypes();
    test_options();
    test_nan();
    make_error_fixtures();
    test_errors();
    test_existing_outputs();

    printf("test_cli: %zu oracle cases, %zu option runs, %zu error cases\n",
           sizeof oracle_cases / sizeof oracle_cases[0],
           sizeof opt_cases / sizeof opt_cases[0], sizeof err_cases / sizeof err_cases[0]);
    rmdir(in_path("adir.npy"));
    cmdtest_close();
    return test_finish("test_cli");
}
