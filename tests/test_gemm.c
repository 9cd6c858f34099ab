/* qkv_sgemm against a double-precision triple loop, for every instruction
 * set this CPU runs (forced through the context's isa): all four transpose
 * cases, shapes with tails of every size and zeros, alpha and beta (beta 0
 * over a C full of NaN), leading dimensions wider than the rows (the gaps
 * hold NaN, which must not be read, and C's gaps must not be written),
 * bitwise determinism over thread counts, and every error case. Then
 * qkv_gemm with f16 and bf16 operands: bit for bit qkv_sgemm on the
 * widened matrices, on both paths (blocked and few rows), every transpose
 * and every set, its workspace query exact, and its dtype errors; except
 * bf16 x bf16 blocked on the sets with bf16 dot products (AVX512-BF16,
 * and the generic emulation of its kernels, forced), which sum pairs in
 * another order: held to the double loop and to the same bits for 1 and
 * 3 threads instead. */
#define _XOPEN_SOURCE 700 /* fork, setenv */
#include "test.h"
#include "util.h"

#include "cpu/dispatch.h"
#include "half.h"
#include "qkv.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const qkv_isa isas[] = {QKV_ISA_GENERIC, QKV_ISA_AVX2, QKV_ISA_AVX512,
                               QKV_ISA_AVX512_BF16};

/* A stored matrix: rows x cols inside ld columns, the gaps NaN. */
static float *stored(test_rng *rng, int64_t rows, int64_t cols, int64_t ld)
{
    int64_t n = rows * ld > 0 ? rows * ld : 1;
    float *x = test_malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = NAN;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) x[i * ld + j] = (float)(2 * test_rand(rng) - 1);
    return x;
}

typedef struct problem {
    qkv_gemm_transpose ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
} problem;

/* One call against the double loop. Each element's error is measured
 * against the size of what it sums, |alpha| sum |a b| + |beta c|. */
static void check_one(qkv_isa isa, const problem *pr, test_rng *rng, int threads, double *worst)
{
    const int64_t m = pr->m, n = pr->n, k = pr->k;
    const int64_t ar = pr->ta ? k : m, ac = pr->ta ? m : k;
    const int64_t br = pr->tb ? n : k, bc = pr->tb ? k : n;
    float *a = stored(rng, ar, ac, pr->lda);
    float *b = stored(rng, br, bc, pr->ldb);
    float *c = stored(rng, m, n, pr->ldc);
    if (pr->beta == 0) /* beta 0: C is only written */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * pr->ldc + j] = NAN;
    const int64_t nc = m * pr->ldc > 0 ? m * pr->ldc : 1;
    float *c0 = test_malloc((size_t)nc * sizeof *c0);
    memcpy(c0, c, (size_t)nc * sizeof *c0);

    qkv_context *ctx = test_context(QKV_IMPL_AUTO, isa, threads);
    qkv_status st = qkv_sgemm(ctx, pr->ta, pr->tb, m, n, k, pr->alpha, a, pr->lda, b, pr->ldb,
                              pr->beta, c, pr->ldc);
    qkv_context_free(ctx);
    CHECK(st == QKV_OK);
    int bad = 0;
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < pr->ldc; j++) {
            const float got = c[i * pr->ldc + j];
            if (j >= n) { /* C's gap: untouched (NaN stays NaN) */
                bad += !isnan(got);
                continue;
            }
            double sum = 0, mag = 0;
            for (int64_t p = 0; p < k; p++) {
                double x = pr->ta ? a[p * pr->lda + i] : a[i * pr->lda + p];
                double y = pr->tb ? b[j * pr->ldb + p] : b[p * pr->ldb + j];
                sum += x * y;
                mag += fabs(x * y);
            }
            double want = (double)pr->alpha * sum;
            mag = fabs((double)pr->alpha) * mag;
            if (pr->beta != 0) {
                want += (double)pr->beta * c0[i * pr->ldc + j];
                mag += fabs((double)pr->beta * c0[i * pr->ldc + j]);
            }
            const double err = fabs((double)got - want) / (mag > 0 ? mag : 1);
            if (!(err <= 3e-7 * (2 + sqrt((double)k)))) {
                if (bad < 3)
                    fprintf(stderr, "  %s ta %d tb %d %lldx%lldx%lld: C[%lld][%lld] = %.9g, want %.9g\n",
                            qkv_isa_name(isa), pr->ta, pr->tb, (long long)m, (long long)n,
                            (long long)k, (long long)i, (long long)j, got, want);
                bad++;
            } else if (err > *worst) {
                *worst = err;
            }
        }
    }
    CHECK(bad == 0);
    free(a);
    free(b);
    free(c);
    free(c0);
}

/* The shape sweep: tails of every size around the register tiles (14, 6
 * and 4 rows; 32 and 16 columns), then sizes past the depth of a pass
 * (512), the row block (1008) and the column block (256). */
static void check_shapes(qkv_isa isa)
{
    static const int64_t sizes[] = {1, 2, 3, 5, 13, 17, 31, 33, 47, 64};
    static const float ab[][2] = {{1, 0}, {0.5f, -1.25f}, {-2, 1}, {1.5f, 0}};
    const int nsz = (int)(sizeof sizes / sizeof sizes[0]);
    test_rng rng = test_rng_seed(42 + (uint64_t)isa);
    double worst = 0;
    int count = 0;
    for (int t = 0; t < 4; t++) {
        for (int im = 0; im < nsz; im++)
            for (int in = 0; in < nsz; in++) {
                /* every (m, n) pair, k cycling through the sizes */
                const int64_t m = sizes[im], n = sizes[in], k = sizes[(im * 3 + in * 7 + t) % nsz];
                const int pad = (im + in + t) % 3 == 0 ? 3 : 0;
                problem pr = {(qkv_gemm_transpose)(t & 1), (qkv_gemm_transpose)(t >> 1),
                              m, n, k, 0, 0, n + pad, ab[(im + in) % 4][0],
                              ab[(im + in) % 4][1]};
                pr.lda = (pr.ta ? m : k) + pad;
                pr.ldb = (pr.tb ? k : n) + 2 * pad;
                check_one(isa, &pr, &rng, 1 + (im + in) % 3, &worst);
                count++;
            }
        /* Larger: past the depth pass, the row block and the column block,
         * and over several threads. */
        static const int64_t big[][3] = {
            {1, 1, 1000}, {29, 37, 1537}, {2100, 3, 20}, {3, 1100, 20}, {150, 290, 777}, {1019, 67, 2}};
        for (size_t s = 0; s < sizeof big / sizeof big[0]; s++) {
            const int64_t m = big[s][0], n = big[s][1], k = big[s][2];
            problem pr = {(qkv_gemm_transpose)(t & 1), (qkv_gemm_transpose)(t >> 1), m, n, k,
                          (t & 1 ? m : k) + 1, (t >> 1 ? k : n) + 5, n + 7, 0.75f,
                          s % 2 ? 0.0f : 0.5f};
            check_one(isa, &pr, &rng, 3, &worst);
            count++;
        }
    }
    printf("  %s: %d products, worst error %.3g of the summed magnitude\n", qkv_isa_name(isa), count,
           worst);
}

/* Zero sizes: nothing read where nothing is (NULL is allowed then); k == 0
 * and alpha == 0 scale C by beta, beta == 0 clearing a NaN C. */
static void check_zeros(qkv_isa isa)
{
    qkv_context *ctx = test_context(QKV_IMPL_AUTO, isa, 0);
    float c[6] = {1, 2, 3, 4, 5, 6}, big[16] = {0};
    CHECK(qkv_sgemm(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, 0, 0, 0, 1, NULL, 0, NULL, 0, 0,
                    NULL, 0) == QKV_OK);
    CHECK(qkv_sgemm(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, 0, 3, 5, 1, NULL, 5, big, 3, 0, NULL,
                    3) == QKV_OK);
    CHECK(qkv_sgemm(ctx, QKV_GEMM_TRANS, QKV_GEMM_TRANS, 3, 0, 5, 1, big, 3, NULL, 5, 0, NULL, 0) ==
          QKV_OK);
    CHECK(c[0] == 1 && c[5] == 6);
    /* k == 0: A and B may be NULL; C = beta C. */
    CHECK(qkv_sgemm(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, 2, 3, 0, 1, NULL, 0, NULL, 3, 2, c,
                    3) == QKV_OK);
    CHECK(c[0] == 2 && c[5] == 12);
    for (int i = 0; i < 6; i++) c[i] = NAN;
    CHECK(qkv_sgemm(ctx, QKV_GEMM_TRANS, QKV_GEMM_NO_TRANS, 2, 3, 0, 1, NULL, 2, NULL, 3, 0, c,
                    3) == QKV_OK);
    for (int i = 0; i < 6; i++) CHECK(c[i] == 0 && !signbit(c[i]));
    /* alpha == 0: C = beta C, A and B not read (as BLAS does). */
    float a[4] = {NAN, NAN, NAN, NAN}, b[6] = {NAN, 1, 2, 3, 4, 5};
    for (int i = 0; i < 6; i++) c[i] = (float)i;
    CHECK(qkv_sgemm(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, 2, 3, 2, 0, a, 2, b, 3, -1, c, 3) ==
          QKV_OK);
    for (int i = 0; i < 6; i++) CHECK(c[i] == -(float)i);
    /* k == 1, beta == 1: an outer product added. */
    float x[2] = {2, 3}, y[3] = {1, 10, 100};
    for (int i = 0; i < 6; i++) c[i] = 1;
    CHECK(qkv_sgemm(ctx, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, 2, 3, 1, 1, x, 1, y, 3, 1, c, 3) ==
          QKV_OK);
    CHECK(c[0] == 3 && c[2] == 201 && c[3] == 4 && c[5] == 301);
    qkv_context_free(ctx);
}

/* The same call with 1, 2, 3 and 5 threads gives the same bytes, for the
 * blocked kernel and for the few-rows path (m <= 4). */
static void check_determinism(qkv_isa isa)
{
    test_rng rng = test_rng_seed(7);
    static const int64_t shapes[][3] = {{211, 301, 800}, {3, 1000, 700}, {1, 333, 1025}};
    for (int t = 0; t < 12; t++) {
        const int64_t m = shapes[t / 4][0], n = shapes[t / 4][1], k = shapes[t / 4][2];
        const qkv_gemm_transpose ta = (qkv_gemm_transpose)(t & 1),
                                 tb = (qkv_gemm_transpose)((t >> 1) & 1);
        float *a = test_rand_f32(&rng, m * k, -1, 1);
        float *b = test_rand_f32(&rng, k * n, -1, 1);
        float *c0 = test_rand_f32(&rng, m * n, -1, 1);
        float *c1 = test_malloc((size_t)(m * n) * sizeof *c1);
        float *c2 = test_malloc((size_t)(m * n) * sizeof *c2);
        memcpy(c1, c0, (size_t)(m * n) * sizeof *c1);
        qkv_context *ctx = test_context(QKV_IMPL_AUTO, isa, 1);
        CHECK(qkv_sgemm(ctx, ta, tb, m, n, k, 1.25f, a, ta ? m : k, b, tb ? k : n, 0.5f, c1, n) ==
              QKV_OK);
        static const int counts[] = {2, 3, 5};
        for (int i = 0; i < 3; i++) {
            memcpy(c2, c0, (size_t)(m * n) * sizeof *c2);
            CHECK(qkv_context_set_threads(ctx, counts[i]) == QKV_OK);
            CHECK(qkv_sgemm(ctx, ta, tb, m, n, k, 1.25f, a, ta ? m : k, b, tb ? k : n, 0.5f, c2,
                            n) == QKV_OK);
            CHECK(memcmp(c1, c2, (size_t)(m * n) * sizeof *c1) == 0);
        }
        qkv_context_free(ctx);
        free(a);
        free(b);
        free(c0);
        free(c1);
        free(c2);
    }
}

static int detail_is(const char *want)
{
    if (strcmp(qkv_error_detail(), want) == 0) return 1;
    fprintf(stderr, "  detail \"%s\", expected \"%s\"\n", qkv_error_detail(), want);
    return 0;
}

/* Every argument error: the status, a detail naming the argument, C left
 * alone. */
static void check_errors(void)
{
    float a[12] = {0}, b[12] = {0}, c[12];
    for (int i = 0; i < 12; i++) c[i] = (float)i;
    const qkv_gemm_transpose N = QKV_GEMM_NO_TRANS, T = QKV_GEMM_TRANS;
#define SGEMM(ta, tb, m, n, k, pa, lda, pb, ldb, pc, ldc, ctx) \
    qkv_sgemm((ctx), (ta), (tb), (m), (n), (k), 1.0f, (pa), (lda), (pb), (ldb), 0.0f, (pc), (ldc))
    CHECK(SGEMM((qkv_gemm_transpose)2, N, 3, 4, 2, a, 2, b, 4, c, 4, NULL) ==
          QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("ta: 2 is not a qkv_gemm_transpose"));
    CHECK(SGEMM(N, (qkv_gemm_transpose)-1, 3, 4, 2, a, 2, b, 4, c, 4, NULL) ==
          QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("tb: -1 is not a qkv_gemm_transpose"));
    CHECK(SGEMM(N, N, -1, 4, 2, a, 2, b, 4, c, 4, NULL) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("m: -1 is negative"));
    CHECK(SGEMM(N, N, 3, -4, 2, a, 2, b, 4, c, 4, NULL) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("n: -4 is negative"));
    CHECK(SGEMM(N, N, 3, 4, -2, a, 2, b, 4, c, 4, NULL) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("k: -2 is negative"));
    CHECK(SGEMM(N, N, 3, 1, 4, a, 3, b, 1, c, 1, NULL) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("lda: 3 is less than k = 4"));
    CHECK(SGEMM(T, N, 3, 1, 2, a, 2, b, 1, c, 1, NULL) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("lda: 2 is less than m = 3"));
    CHECK(SGEMM(N, N, 3, 4, 2, a, 2, b, 3, c, 4, NULL) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("ldb: 3 is less than n = 4"));
    CHECK(SGEMM(N, T, 3, 4, 2, a, 2, b, 1, c, 4, NULL) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("ldb: 1 is less than k = 2"));
    CHECK(SGEMM(N, N, 3, 4, 2, a, 2, b, 4, c, 3, NULL) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("ldc: 3 is less than n = 4"));
    CHECK(SGEMM(N, N, 0, 0, 0, a, -1, b, 0, c, 0, NULL) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("lda: -1 is less than k = 0"));
    CHECK(SGEMM(N, N, 3, 4, 2, NULL, 2, b, 4, c, 4, NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(detail_is("a: NULL for a 3 x 2 matrix"));
    CHECK(SGEMM(N, T, 3, 4, 2, a, 2, NULL, 2, c, 4, NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(detail_is("b: NULL for a 4 x 2 matrix"));
    CHECK(SGEMM(N, N, 3, 4, 2, a, 2, b, 4, NULL, 4, NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(detail_is("c: NULL for a 3 x 4 matrix"));
    /* C is m x n even when k is 0 */
    CHECK(SGEMM(N, N, 3, 4, 0, NULL, 0, NULL, 4, NULL, 4, NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(SGEMM(N, N, 3, 4, 2, a, INT64_MAX / 2, b, 4, c, 4, NULL) == QKV_ERR_OVERFLOW);
    CHECK(strncmp(qkv_error_detail(), "a: ", 3) == 0);
    CHECK(SGEMM(N, N, 3, 4, 2, a, 2, b, 4, c, INT64_MAX / 8, NULL) == QKV_ERR_OVERFLOW);
    CHECK(strncmp(qkv_error_detail(), "c: ", 3) == 0);
    /* the context's settings: bad values refused by its setters */
    qkv_context *ctx = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 0);
    CHECK(qkv_context_set_isa(ctx, (qkv_isa)9) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("isa: 9 is not a qkv_isa"));
    CHECK(qkv_context_set_threads(ctx, -1) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(detail_is("num_threads: -1, expected 0 (all CPUs) or more"));
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (qkv_isa_supported(isas[i])) continue;
        CHECK(qkv_context_set_isa(ctx, isas[i]) == QKV_OK);
        CHECK(SGEMM(N, N, 3, 4, 2, a, 2, b, 4, c, 4, ctx) == QKV_ERR_UNSUPPORTED);
        CHECK(strstr(qkv_error_detail(), qkv_isa_name(isas[i])) != NULL);
    }
    qkv_context_free(ctx);
    for (int i = 0; i < 12; i++) CHECK(c[i] == (float)i);
    /* success clears the detail */
    CHECK(SGEMM(N, N, 3, 4, 2, a, 2, b, 4, c, 4, NULL) == QKV_OK);
    CHECK(qkv_error_detail()[0] == '\0');
#undef SGEMM
}

/* A float pointer one byte past p: misaligned, never dereferenced. */
static float *misaligned(float *p)
{
    return (float *)(void *)((char *)p + 1);
}

/* C must share no byte with A or B where they are read; the test is on the
 * bytes each matrix reaches (rows - 1 full rows of ld, then one row as
 * wide as the matrix), so matrices in one buffer that only touch are
 * fine, and so are A and B on one buffer (both only read). Misaligned
 * pointers are refused. A refused call leaves C alone. */
static void check_overlap_and_alignment(void)
{
    const qkv_gemm_transpose N = QKV_GEMM_NO_TRANS, T = QKV_GEMM_TRANS;
    float buf[64];
    for (int i = 0; i < 64; i++) buf[i] = (float)(i % 7);
    float keep[64];
    memcpy(keep, buf, sizeof keep);
    struct {
        const char *what, *prefix;
        qkv_gemm_transpose ta;
        int64_t m, n, k, lda, ldc;
        int a_at, b_at, c_at; /* offsets into buf; B is k x n, ldb n */
    } bad[] = {
        {"C = A", "C and A", N, 3, 3, 3, 3, 3, 0, 20, 0},
        {"C = B", "C and B", N, 3, 3, 3, 3, 3, 0, 20, 20},
        {"C on A's last element", "C and A", N, 4, 4, 4, 4, 4, 0, 40, 15},
        {"A on C's last row", "C and A", N, 2, 2, 2, 2, 5, 6, 20, 0},
        {"C over transposed A", "C and A", T, 2, 2, 3, 2, 2, 0, 20, 5},
        {"C under B", "C and B", N, 3, 2, 3, 3, 2, 0, 30, 25},
    };
    for (size_t x = 0; x < sizeof bad / sizeof bad[0]; x++) {
        qkv_status st = qkv_sgemm(NULL, bad[x].ta, N, bad[x].m, bad[x].n, bad[x].k, 1.0f,
                                  buf + bad[x].a_at, bad[x].lda, buf + bad[x].b_at, bad[x].n, 0.0f,
                                  buf + bad[x].c_at, bad[x].ldc);
        const char *d = qkv_error_detail();
        const int ok = st == QKV_ERR_INVALID_ARGUMENT && test_starts_with(d, bad[x].prefix) &&
                       strstr(d, "overlap in memory") != NULL;
        if (!ok) fprintf(stderr, "  %s: %s (%s)\n", bad[x].what, qkv_status_string(st), d);
        CHECK(ok);
        CHECK(memcmp(buf, keep, sizeof buf) == 0);
    }

    /* Touching but not overlapping: C (2 x 2, ldc 5) ends at buf + 7, its
     * last row being only 2 wide; A starts there, B after A. */
    for (int i = 0; i < 11; i++) buf[i] = 0;
    float *c = buf, *a = buf + 7, *b = buf + 9; /* A 2 x 1, B 1 x 2 */
    a[0] = 2;
    a[1] = 3;
    b[0] = 5;
    b[1] = 7;
    c[2] = c[3] = c[4] = -1; /* C's gap: not written */
    qkv_status st = qkv_sgemm(NULL, N, N, 2, 2, 1, 1.0f, a, 1, b, 2, 0.0f, c, 5);
    CHECK(st == QKV_OK);
    CHECK(c[0] == 10 && c[1] == 14 && c[5] == 15 && c[6] == 21);
    CHECK(c[2] == -1 && c[3] == -1 && c[4] == -1 && a[0] == 2 && b[0] == 5);
    /* A and B on one buffer: A A^T for A = [[1, 2], [3, 4]]. */
    float sq[4] = {1, 2, 3, 4}, out[4];
    CHECK(qkv_sgemm(NULL, N, T, 2, 2, 2, 1.0f, sq, 2, sq, 2, 0.0f, out, 2) == QKV_OK);
    CHECK(out[0] == 5 && out[1] == 11 && out[2] == 11 && out[3] == 25);
    /* A and B not read (alpha == 0, k == 0) or nothing written (m or n
     * 0): C may lie on them; C = beta C still holds. */
    float s[6] = {1, 2, 3, 4, 5, 6};
    CHECK(qkv_sgemm(NULL, N, N, 2, 3, 2, 0.0f, s, 3, s, 3, 2.0f, s, 3) == QKV_OK);
    for (int i = 0; i < 6; i++) CHECK(s[i] == 2.0f * (float)(i + 1));
    CHECK(qkv_sgemm(NULL, N, N, 2, 3, 0, 1.0f, s, 1, s, 3, 0.5f, s, 3) == QKV_OK);
    for (int i = 0; i < 6; i++) CHECK(s[i] == (float)(i + 1));
    CHECK(qkv_sgemm(NULL, N, N, 0, 3, 2, 1.0f, s, 2, s, 3, 0.0f, s, 3) == QKV_OK);
    CHECK(qkv_sgemm(NULL, N, N, 2, 0, 2, 1.0f, s, 2, s, 1, 0.0f, s, 1) == QKV_OK);
    for (int i = 0; i < 6; i++) CHECK(s[i] == (float)(i + 1));

    /* Misaligned pointers, each refused naming the matrix. */
    float ma[8] = {0}, mb[8] = {0}, mc[8] = {0};
    const char *names[3] = {"a:", "b:", "c:"};
    for (int t = 0; t < 3; t++) {
        float *p[3] = {ma, mb, mc};
        p[t] = misaligned(p[t]);
        st = qkv_sgemm(NULL, N, N, 2, 2, 2, 1.0f, p[0], 2, p[1], 2, 0.0f, p[2], 2);
        const char *d = qkv_error_detail();
        const int ok = st == QKV_ERR_INVALID_ARGUMENT && test_starts_with(d, names[t]) &&
                       strstr(d, "aligned") != NULL;
        if (!ok) fprintf(stderr, "  %s misaligned: %s (%s)\n", names[t], qkv_status_string(st), d);
        CHECK(ok);
    }
    /* An empty matrix's pointer is not looked at (NULL would do). */
    CHECK(qkv_sgemm(NULL, N, N, 2, 2, 0, 1.0f, misaligned(ma), 0, misaligned(mb), 2, 0.0f, mc, 2) ==
          QKV_OK);
}

/* QKV_ISA naming nothing runnable fails an AUTO call (in a child, as the
 * variable is read once per process), unless AUTO means the system BLAS. */
static void check_env(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        setenv("QKV_ISA", "sse9", 1);
        float a[1] = {2}, b[1] = {3}, c[1] = {0};
        qkv_status st =
            qkv_sgemm(NULL, QKV_GEMM_NO_TRANS, QKV_GEMM_NO_TRANS, 1, 1, 1, 1, a, 1, b, 1, 0, c, 1);
#ifdef QKV_HAVE_CBLAS
        _exit(st == QKV_OK && c[0] == 6 ? 0 : 1);
#else
        _exit(st == QKV_ERR_UNSUPPORTED && strstr(qkv_error_detail(), "sse9") ? 0 : 1);
#endif
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
          WEXITSTATUS(status) == 0);
}

/* A stored matrix (gaps NaN, as stored() makes them) rounded to dt: the
 * 16-bit patterns, and the same values widened in *wide. */
static uint16_t *narrowed(const float *x, int64_t n, qkv_dtype dt, float **wide)
{
    uint16_t *h = test_malloc((size_t)(n > 0 ? n : 1) * sizeof *h);
    *wide = test_malloc((size_t)(n > 0 ? n : 1) * sizeof **wide);
    for (int64_t i = 0; i < n; i++) {
        h[i] = dt == QKV_DTYPE_F16 ? qkv_f32_to_f16(x[i]) : qkv_f32_to_bf16(x[i]);
        (*wide)[i] = dt == QKV_DTYPE_F16 ? qkv_f16_to_f32(h[i]) : qkv_bf16_to_f32(h[i]);
    }
    return h;
}

/* c (m x n, ld n) against alpha op(A) op(B) + beta c0 in double, each
 * element within the rounding of an f32 sum of its terms. */
static int near_double(const float *c, const float *c0, const float *a, int64_t lda, int ta,
                       const float *b, int64_t ldb, int tb, int64_t m, int64_t n, int64_t k,
                       float alpha, float beta)
{
    int bad = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double sum = 0, mag = 0;
            for (int64_t p = 0; p < k; p++) {
                const double x = ta ? a[p * lda + i] : a[i * lda + p];
                const double y = tb ? b[j * ldb + p] : b[p * ldb + j];
                sum += x * y;
                mag += fabs(x * y);
            }
            const double want = alpha * sum + beta * (double)c0[i * n + j];
            mag = fabs(alpha) * mag + fabs(beta * (double)c0[i * n + j]);
            bad += !(fabs(c[i * n + j] - want) <= 3e-7 * (2 + sqrt((double)k)) * (mag > 0 ? mag : 1));
        }
    return bad;
}

/* pairs: the set has bf16 dot products (qkv_isa_name(isa) or the forced
 * emulation, named by `name`). */
static void check_dtypes(qkv_isa isa, int pairs, const char *name)
{
    test_rng rng = test_rng_seed(41);
    qkv_context *ctx = test_context(QKV_IMPL_AUTO, isa, 3);
    qkv_context *one = test_context(QKV_IMPL_AUTO, isa, 1);
    /* Blocked (m > 4) and few-rows shapes; leading dims wider than rows;
     * depths odd, past one pass (512) and both. */
    const int64_t shapes[][3] = {{37, 29, 53}, {70, 140, 600}, {20, 40, 1031}, {3, 150, 70},
                                 {1, 65, 9}};
    const qkv_dtype dts[3] = {QKV_DTYPE_F32, QKV_DTYPE_F16, QKV_DTYPE_BF16};
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
        for (int t = 0; t < 4; t++)
            for (int da = 0; da < 3; da++)
                for (int db = 0; db < 3; db++) {
                    if (da == 0 && db == 0) continue;
                    const qkv_gemm_transpose ta = t & 1 ? QKV_GEMM_TRANS : QKV_GEMM_NO_TRANS;
                    const qkv_gemm_transpose tb = t & 2 ? QKV_GEMM_TRANS : QKV_GEMM_NO_TRANS;
                    const int64_t m = shapes[sh][0], n = shapes[sh][1], k = shapes[sh][2];
                    const int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k,
                                  bc = tb ? k : n;
                    const int64_t lda = ac + 3, ldb = bc + 1;
                    float *a = stored(&rng, ar, ac, lda), *b = stored(&rng, br, bc, ldb);
                    float *aw = a, *bw = b;
                    uint16_t *ah = NULL, *bh = NULL;
                    if (da) ah = narrowed(a, ar * lda, dts[da], &aw);
                    if (db) bh = narrowed(b, br * ldb, dts[db], &bw);
                    float *c0 = stored(&rng, m, n, n), *c1 = test_malloc((size_t)(m * n) * 4);
                    float *cinit = test_malloc((size_t)(m * n) * 4);
                    memcpy(c1, c0, (size_t)(m * n) * 4);
                    memcpy(cinit, c0, (size_t)(m * n) * 4);
                    CHECK(qkv_sgemm(ctx, ta, tb, m, n, k, 0.75f, aw, lda, bw, ldb, 0.5f, c0, n) ==
                          QKV_OK);
                    size_t bytes = 0;
                    CHECK(qkv_gemm_workspace(ctx, ta, tb, m, n, k, dts[da], dts[db], &bytes) ==
                          QKV_OK);
                    void *ws = bytes ? qkv_alloc(bytes) : NULL;
                    if (ws) CHECK(qkv_context_set_workspace(ctx, ws, bytes) == QKV_OK);
                    CHECK(qkv_gemm(ctx, ta, tb, m, n, k, 0.75f, da ? (const void *)ah : a,
                                   dts[da], lda, db ? (const void *)bh : b, dts[db], ldb, 0.5f,
                                   c1, n) == QKV_OK);
                    CHECK(qkv_context_set_workspace(ctx, NULL, 0) == QKV_OK);
                    if (pairs && da == 2 && db == 2 && m > 4) { /* the pairs microkernel */
                        float *c3 = test_malloc((size_t)(m * n) * 4);
                        memcpy(c3, cinit, (size_t)(m * n) * 4);
                        CHECK(qkv_gemm(one, ta, tb, m, n, k, 0.75f, ah, dts[da], lda, bh, dts[db],
                                       ldb, 0.5f, c3, n) == QKV_OK);
                        const int bad = near_double(c1, cinit, aw, lda, ta, bw, ldb, tb, m, n, k,
                                                    0.75f, 0.5f);
                        CHECK(bad == 0);
                        CHECK(memcmp(c1, c3, (size_t)(m * n) * 4) == 0);
                        if (bad)
                            fprintf(stderr, "  %s pairs %lldx%lldx%lld %c%c: %d elements off\n",
                                    name, (long long)m, (long long)n, (long long)k,
                                    ta ? 'T' : 'N', tb ? 'T' : 'N', bad);
                        free(c3);
                    } else if (memcmp(c0, c1, (size_t)(m * n) * 4) != 0) {
                        CHECK(!"qkv_gemm on 16-bit operands is qkv_sgemm on them widened");
                        fprintf(stderr, "  %s %lldx%lldx%lld %c%c a %s b %s\n", name,
                                (long long)m, (long long)n, (long long)k, ta ? 'T' : 'N',
                                tb ? 'T' : 'N', qkv_dtype_name(dts[da]), qkv_dtype_name(dts[db]));
                    }
                    qkv_free(ws);
                    if (da) free(aw), free(ah);
                    if (db) free(bw), free(bh);
                    free(a), free(b), free(c0), free(c1), free(cinit);
                }
    qkv_context_free(ctx), qkv_context_free(one);
}

static void check_dtype_errors(void)
{
    float c[4] = {0};
    uint16_t h[8] = {0};
    const qkv_gemm_transpose N = QKV_GEMM_NO_TRANS;
    CHECK(qkv_gemm(NULL, N, N, 2, 2, 2, 1, h, QKV_DTYPE_I32, 2, h, QKV_DTYPE_F16, 2, 0, c, 2) ==
          QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "a_dtype: dtype i32"));
    CHECK(qkv_gemm(NULL, N, N, 2, 2, 2, 1, h, QKV_DTYPE_BF16, 2, h, QKV_DTYPE_F64, 2, 0, c, 2) ==
          QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "b_dtype: dtype f64"));
    /* A 16-bit matrix one byte off its alignment. */
    CHECK(qkv_gemm(NULL, N, N, 2, 2, 2, 1, (const char *)h + 1, QKV_DTYPE_BF16, 2, h,
                   QKV_DTYPE_BF16, 2, 0, c, 2) == QKV_ERR_INVALID_ARGUMENT);
    size_t bytes = 1;
    CHECK(qkv_gemm_workspace(NULL, N, N, 2, 2, 2, QKV_DTYPE_BOOL, QKV_DTYPE_F32, &bytes) ==
              QKV_ERR_DTYPE &&
          bytes == 0);
}

int main(void)
{
    check_dtype_errors();
    check_env();
    check_errors();
    check_overlap_and_alignment();
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (!qkv_isa_supported(isas[i])) {
            printf("  %s: not supported here, skipped\n", qkv_isa_name(isas[i]));
            continue;
        }
        check_zeros(isas[i]);
        check_shapes(isas[i]);
        check_dtypes(isas[i], isas[i] == QKV_ISA_AVX512_BF16, qkv_isa_name(isas[i]));
        check_determinism(isas[i]);
    }
    qkv_cpu_kernels_force(&qkv_kernels_generic_pairs);
    check_dtypes(QKV_ISA_GENERIC, 1, "generic-pairs");
    qkv_cpu_kernels_force(NULL);
    /* the defaults: all CPUs, AUTO (or the system BLAS) */
    test_rng rng = test_rng_seed(3);
    double worst = 0;
    problem pr = {QKV_GEMM_NO_TRANS, QKV_GEMM_TRANS, 67, 45, 129, 129, 129, 45, 1, 0};
    check_one(QKV_ISA_AUTO, &pr, &rng, 0, &worst);
    check_zeros(QKV_ISA_AUTO);
    return test_finish("test_gemm");
}
