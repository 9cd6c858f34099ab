/* A tiny test harness: each tests/test_*.c is one program, one ctest test.
 * CHECK records a failure and goes on; main returns nonzero if any failed. */
#ifndef QKV_TEST_H
#define QKV_TEST_H

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

/* Call at the end of main: prints a summary and gives the exit code. */
static inline int test_finish(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

#endif
