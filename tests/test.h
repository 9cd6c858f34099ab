/* A tiny test harness: each tests/test_*.c is one program, one ctest test.
 * CHECK records a failure and goes on; main returns nonzero if any failed. */
#ifndef QKV_TEST_H
#define QKV_TEST_H

#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int test_failures;
static int test_checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        test_checks++;                                                               \
        if (!(cond)) {                                                               \
            test_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

/* |a - b| <= tol, with the values printed on failure. */
#define CHECK_NEAR(a, b, tol)                                                        \
    do {                                                                             \
        double ca_ = (double)(a), cb_ = (double)(b), ct_ = (double)(tol);            \
        test_checks++;                                                               \
        if (!(fabs(ca_ - cb_) <= ct_)) {                                             \
            test_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.17g, %s = %.17g, tol %g\n", \
                    __FILE__, __LINE__, #a, ca_, #b, cb_, ct_);                      \
        }                                                                            \
    } while (0)

/* got[0..n) (float) against want[0..n), one check: CHECK_TENSOR holds the
 * relative L2 error (test_rel_l2) to tol, CHECK_TENSOR_ABS the max abs
 * difference, CHECK_TENSOR_F64 the relative L2 against a double oracle
 * (test_rel_l2_f64). The rest is a printf-style label for the report a
 * failure prints: the error, the worst element, the first mismatches
 * (test_check_tensor in util.h). */
#define CHECK_TENSOR(got, want, n, tol, ...) \
    CHECK_TENSOR_BY_(TEST_REL_L2, got, test_f32_(want), n, tol, __VA_ARGS__)
#define CHECK_TENSOR_ABS(got, want, n, tol, ...) \
    CHECK_TENSOR_BY_(TEST_MAX_ABS, got, test_f32_(want), n, tol, __VA_ARGS__)
#define CHECK_TENSOR_F64(got, want, n, tol, ...) \
    CHECK_TENSOR_BY_(TEST_REL_L2_F64, got, test_f64_(want), n, tol, __VA_ARGS__)
/* So that want's element type is checked at compile time. */
static inline const void *test_f32_(const float *p) { return p; }
static inline const void *test_f64_(const double *p) { return p; }
#define CHECK_TENSOR_BY_(m, got, want, n, tol, ...)                                      \
    do {                                                                                 \
        test_checks++;                                                                   \
        if (!test_check_tensor(__FILE__, __LINE__, m, tol, got, want, n, __VA_ARGS__))   \
            test_failures++;                                                             \
    } while (0)

/* Call at the end of main: prints a summary and gives the exit code. */
static inline int test_finish(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

#endif
