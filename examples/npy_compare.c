/* npy_compare: how far apart two float .npy arrays of one shape are, as the
 * relative L2 error ||a - b|| / ||b|| and the largest absolute difference.
 * Exits 0 when the relative error is within TOL (default 1e-5), 1 when not.
 *
 *   npy_compare A.npy B.npy [TOL]
 */
#include "qkv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int load(const char *path, qkv_array *out)
{
    qkv_array raw;
    if (qkv_npy_read(path, &raw) != QKV_OK || qkv_array_convert(out, &raw, QKV_DTYPE_F64) != QKV_OK) {
        fprintf(stderr, "npy_compare: %s\n", qkv_error_detail());
        qkv_array_free(&raw);
        return 0;
    }
    qkv_array_free(&raw);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: npy_compare A.npy B.npy [TOL]\n");
        return 2;
    }
    double tol = argc == 4 ? strtod(argv[3], NULL) : 1e-5;
    qkv_array a, b;
    if (!load(argv[1], &a)) return 1;
    if (!load(argv[2], &b)) {
        qkv_array_free(&a);
        return 1;
    }
    int same = a.ndim == b.ndim;
    for (int d = 0; same && d < a.ndim; d++) same = a.shape[d] == b.shape[d];
    if (!same) {
        fprintf(stderr, "npy_compare: %s and %s differ in shape\n", argv[1], argv[2]);
        qkv_array_free(&a);
        qkv_array_free(&b);
        return 1;
    }
    const double *x = a.data, *y = b.data;
    double num = 0, den = 0, maxd = 0;
    int64_t n = qkv_array_numel(&a);
    for (int64_t i = 0; i < n; i++) {
        if (isinf(x[i]) && x[i] == y[i]) continue; /* -inf lse of masked rows */
        double d = x[i] - y[i];
        num += d * d;
        den += y[i] * y[i];
        if (!(fabs(d) <= maxd)) maxd = fabs(d);
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    int ok = rel <= tol;
    printf("%s vs %s: %lld elements, relative L2 error %.3g, max |diff| %.3g: %s (tol %g)\n",
           argv[1], argv[2], (long long)n, rel, maxd, ok ? "ok" : "TOO FAR", tol);
    qkv_array_free(&a);
    qkv_array_free(&b);
    return ok ? 0 : 1;
}
