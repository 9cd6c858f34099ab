/* Test helpers; see util.h. */
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

test_rng test_rng_seed(uint64_t seed)
{
    test_rng r = {seed * 0x9E3779B97F4A7C15ull + 1};
    return r;
}

double test_rand(test_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return (double)((r->s * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

void *test_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

float *test_rand_f32(test_rng *r, int64_t n, float lo, float hi)
{
    float *x = test_malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)test_rand(r);
    return x;
}

double test_rel_l2(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) {
            if (isnan(a[i]) && isnan(b[i])) continue;
            return INFINITY;
        }
        if (isinf(a[i]) || isinf(b[i])) {
            if (a[i] == b[i]) continue;
            return INFINITY;
        }
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

double test_max_abs_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) != isnan(b[i])) return INFINITY;
        if (isnan(a[i]) || a[i] == b[i]) continue;
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

double test_rel_l2_f64(const float *got, const double *want, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

int test_check_tensor(const char *file, int line, test_measure m, double tol, const float *got,
                      const void *want, int64_t n, const char *fmt, ...)
{
    const float *wf = m == TEST_REL_L2_F64 ? NULL : want;
    const double *wd = m == TEST_REL_L2_F64 ? want : NULL;
    const double err = m == TEST_REL_L2    ? test_rel_l2(got, wf, n)
                       : m == TEST_MAX_ABS ? test_max_abs_diff(got, wf, n)
                                           : test_rel_l2_f64(got, wd, n);
    if (err <= tol) return 1;

    /* An element is off past its share of tol: tol itself for max abs;
     * for a relative L2, tol times the RMS of want (or of ones, where the
     * measure turns absolute), so that a failed check always shows one. */
    double sum2 = 0, worst = 0, share = tol;
    int64_t at = -1, off = 0, first[5];
    int absolute = 0; /* test_rel_l2_f64 against an all-zero want */
    if (m != TEST_MAX_ABS) {
        for (int64_t i = 0; i < n; i++) {
            const double w = wd ? wd[i] : (double)wf[i];
            if (isfinite(w)) sum2 += w * w;
        }
        absolute = m == TEST_REL_L2_F64 && !(sum2 > 0);
        if (absolute) sum2 = (double)n;
        share = n > 0 ? tol * sqrt(sum2 / (double)n) : 0;
    }
    for (int64_t i = 0; i < n; i++) {
        const double g = got[i], w = wd ? wd[i] : (double)wf[i];
        /* NaN where want has NaN passes the float measures, never the f64 one. */
        if (g == w || (m != TEST_REL_L2_F64 && isnan(g) && isnan(w))) continue;
        const double d = isnan(g - w) ? INFINITY : fabs(g - w);
        if (at < 0 || d > worst) {
            worst = d;
            at = i;
        }
        if (!(d <= share)) {
            if (off < 5) first[off] = i;
            off++;
        }
    }

    char label[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(label, sizeof label, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s:%d: CHECK_TENSOR failed: %s: ", file, line, label);
    if (m == TEST_MAX_ABS)
        fprintf(stderr, "max abs diff %.3g at [%lld] > tol %g", worst, (long long)at, tol);
    else
        fprintf(stderr, "%s %.3g > tol %g; max abs diff %.3g at [%lld]",
                absolute ? "L2 (want is all zero)" : "rel L2", err, tol, worst, (long long)at);
    fprintf(stderr, "; %lld of %lld elements off\n", (long long)off, (long long)n);
    for (int64_t k = 0; k < off && k < 5; k++) {
        const int64_t i = first[k];
        fprintf(stderr, "    [%lld] got %.9g, want %.9g\n", (long long)i, (double)got[i],
                wd ? wd[i] : (double)wf[i]);
    }
    return 0;
}

const char *test_oracle_path(const char *cas, const char *name)
{
    static char bufs[16][1024];
    static int next;
    char *b = bufs[next++ % 16];
    snprintf(b, sizeof bufs[0], "%s/oracle/%s/%s.npy", QKV_TEST_DATA, cas, name);
    return b;
}

int test_load_oracle(const char *cas, const char *name, qkv_array *out)
{
    const char *path = test_oracle_path(cas, name);
    if (qkv_npy_read(path, out) != QKV_OK) {
        fprintf(stderr, "test: cannot read %s: %s\n", path, qkv_error_detail());
        return 0;
    }
    return 1;
}

/* Reads all of fd into buf (truncating past len - 1). */
static void drain(int fd, char *buf, size_t len)
{
    size_t used = 0;
    char tmp[4096];
    for (;;) {
        ssize_t got = read(fd, tmp, sizeof tmp);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        if (buf && used + 1 < len) {
            size_t take = (size_t)got;
            if (take > len - 1 - used) take = len - 1 - used;
            memcpy(buf + used, tmp, take);
            used += take;
        }
    }
    if (buf && len) buf[used] = '\0';
}

int test_run_qkv(char *const argv[], char *out, size_t outlen, char *err, size_t errlen)
{
    int po[2], pe[2];
    if (pipe(po) != 0) return -1;
    if (pipe(pe) != 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        close(po[1]);
        close(pe[1]);
        int n = 0;
        while (argv[n]) n++;
        char **args = calloc((size_t)n + 1, sizeof *args);
        if (!args) _exit(127);
        args[0] = (char *)QKV_BIN;
        for (int i = 1; i < n; i++) args[i] = argv[i];
        execv(QKV_BIN, args);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    /* stdout first, then stderr: the CLI's stderr is one line or a few, well
     * under a pipe buffer, so this cannot deadlock. */
    drain(po[0], out, outlen);
    drain(pe[0], err, errlen);
    close(po[0]);
    close(pe[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

char *test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *dir = test_malloc(strlen(base ? base : "/tmp") + 16);
    sprintf(dir, "%s/qkvtest-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "test: mkdtemp failed: %s\n", strerror(errno));
        exit(2);
    }
    return dir;
}

void test_rmdir(char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

unsigned char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *p = NULL;
    long n;
    if (len) *len = 0;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (p = malloc((size_t)n + 1)) && fread(p, 1, (size_t)n, f) == (size_t)n) {
        p[n] = '\0';
        if (len) *len = (size_t)n;
    }
    fclose(f);
    return p;
}

int test_write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    return ok;
}

int test_starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

int test_same_shape(const qkv_array *a, int ndim, const int64_t *shape)
{
    if (a->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (a->shape[d] != shape[d]) return 0;
    return 1;
}

int test_array_zeroed(const qkv_array *a)
{
    static const qkv_array zero;
    return memcmp(a, &zero, sizeof zero) == 0;
}

qkv_tensor test_as_tensor(const qkv_array *a)
{
    qkv_tensor t;
    if (qkv_array_as_tensor(a, &t) != QKV_OK) {
        fprintf(stderr, "test_as_tensor: %s\n", qkv_error_detail());
        abort();
    }
    return t;
}

qkv_context *test_context(qkv_impl impl, qkv_isa isa, int num_threads)
{
    qkv_context *ctx = NULL;
    if (qkv_context_create(&ctx) != QKV_OK || qkv_context_set_impl(ctx, impl) != QKV_OK ||
        qkv_context_set_isa(ctx, isa) != QKV_OK ||
        qkv_context_set_threads(ctx, num_threads) != QKV_OK) {
        fprintf(stderr, "test_context: %s\n", qkv_error_detail());
        abort();
    }
    return ctx;
}
