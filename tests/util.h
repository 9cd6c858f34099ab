/* Helpers shared by the test programs: seeded random data, error measures,
 * the PyTorch oracle files and running the qkv binary. */
#ifndef QKV_TEST_UTIL_H
#define QKV_TEST_UTIL_H

#include "qkv.h"

#include <stddef.h>
#include <stdint.h>

/* An attention problem's sizes in DESIGN.md's names, and the element
 * counts of Q, K, V, O, the weights and lse for it. */
typedef struct test_shape {
    int64_t B, H, Hkv, Lq, Lk, E, Ev;
} test_shape;
static inline int64_t n_q(const test_shape *s) { return s->B * s->H * s->Lq * s->E; }
static inline int64_t n_k(const test_shape *s) { return s->B * s->Hkv * s->Lk * s->E; }
static inline int64_t n_v(const test_shape *s) { return s->B * s->Hkv * s->Lk * s->Ev; }
static inline int64_t n_o(const test_shape *s) { return s->B * s->H * s->Lq * s->Ev; }
static inline int64_t n_p(const test_shape *s) { return s->B * s->H * s->Lq * s->Lk; }
static inline int64_t n_l(const test_shape *s) { return s->B * s->H * s->Lq; }

/* xorshift64*: the same sequence on every machine for a given seed. */
typedef struct test_rng {
    uint64_t s;
} test_rng;
test_rng test_rng_seed(uint64_t seed);
double test_rand(test_rng *r); /* uniform in [0, 1) */
/* n floats uniform in [lo, hi); malloc'd, never NULL (aborts the test). */
float *test_rand_f32(test_rng *r, int64_t n, float lo, float hi);
void *test_malloc(size_t n);

/* ||a - b|| / ||b|| over n elements, in double. NaN in the same places in
 * both is equal; NaN in one only, or a differing infinity, gives INFINITY. */
double test_rel_l2(const float *a, const float *b, int64_t n);
double test_max_abs_diff(const float *a, const float *b, int64_t n);
/* ||got - want|| / ||want|| against an oracle in double (finite
 * differences, a reference written in the test); ||got - want|| when want
 * is all zero. Any NaN makes it NaN. */
double test_rel_l2_f64(const float *got, const double *want, int64_t n);

#if defined(__GNUC__) || defined(__clang__)
#define TEST_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TEST_PRINTF(f, a)
#endif

/* What CHECK_TENSOR (test.h) holds a result to: test_rel_l2,
 * test_max_abs_diff, or test_rel_l2_f64 against a double oracle. */
typedef enum test_measure { TEST_REL_L2, TEST_MAX_ABS, TEST_REL_L2_F64 } test_measure;

/* The verdict of got[0..n) against want[0..n) (float *, or double * for
 * TEST_REL_L2_F64): 1 when the measure is at most tol. Otherwise prints,
 * after "FILE:LINE: CHECK_TENSOR failed: " and the printf-style label, the
 * measure against tol, the max abs difference and where it is, how many
 * elements are off (more than their share of tol), and the first five of
 * them with their indices; returns 0. Counted by CHECK_TENSOR. */
int test_check_tensor(const char *file, int line, test_measure m, double tol, const float *got,
                      const void *want, int64_t n, const char *fmt, ...) TEST_PRINTF(8, 9);

/* A new execution context with these settings (free with
 * qkv_context_free); aborts the test when one cannot be made. */
qkv_context *test_context(qkv_impl impl, qkv_isa isa, int num_threads);

/* An array of rank 0..4 as a (B, H, L, E) view with leading dims 1
 * (qkv_array_as_tensor); aborts the test on failure. */
qkv_tensor test_as_tensor(const qkv_array *a);

/* QKV_TEST_DATA/oracle/CASE/NAME.npy, in one of 16 static buffers used in
 * turn (so a few may be held at once). */
const char *test_oracle_path(const char *cas, const char *name);

/* Reads QKV_TEST_DATA/oracle/CASE/NAME.npy as f32 (or as stored for bool
 * and int). Returns 1 on success, 0 (with a message) on failure. */
int test_load_oracle(const char *cas, const char *name, qkv_array *out);

/* Runs the qkv binary with argv (argv[0] ignored, NULL-terminated); stdout
 * and stderr are captured into the given buffers (NUL-terminated, may be
 * NULL). Returns the exit code, or 128 + signal number when it was killed
 * by a signal, or -1 when it could not be run. */
int test_run_qkv(char *const argv[], char *out, size_t outlen, char *err, size_t errlen);

/* The whole file at path, malloc'd with a NUL after its len bytes (len
 * may be NULL); NULL when it cannot be read. */
unsigned char *test_read_file(const char *path, size_t *len);
/* Writes n bytes to path; 1 on success, 0 otherwise. */
int test_write_file(const char *path, const void *p, size_t n);
/* Does s start with prefix? */
int test_starts_with(const char *s, const char *prefix);
/* Has a exactly rank ndim and these dims? */
int test_same_shape(const qkv_array *a, int ndim, const int64_t *shape);
/* Is *a all zero bytes (what a failed read leaves)? */
int test_array_zeroed(const qkv_array *a);

/* A fresh temporary directory (mkdtemp) and its removal with contents. */
char *test_tmpdir(void);
void test_rmdir(char *dir);

#endif
