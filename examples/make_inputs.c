/* make_inputs: writes seeded random Q, K, V (and padding lengths) as .npy
 * files, for the README's demonstration and for trying `qkv run`. Shows the
 * library's .npy writer in use.
 *
 *   make_inputs DIR [B H Hkv L E]     (defaults: 2 8 2 256 64)
 */
#include "qkv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uint64_t state = 0x853C49E6748FEA9Bull;

/* Uniform in [-1, 1), xorshift64*. */
static float next_uniform(void)
{
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    uint64_t x = (state * 0x2545F4914F6CDD1Dull) >> 40; /* 24 bits */
    return (float)x / 8388608.0f - 1.0f;
}

static int write_random(const char *dir, const char *name, int64_t b, int64_t h, int64_t l,
                        int64_t e)
{
    qkv_array a = {0};
    a.dtype = QKV_DTYPE_F32;
    a.ndim = 4;
    a.shape[0] = b;
    a.shape[1] = h;
    a.shape[2] = l;
    a.shape[3] = e;
    int64_t n = qkv_array_numel(&a);
    float *x = malloc((size_t)n * sizeof *x);
    if (!x) return 0;
    for (int64_t i = 0; i < n; i++) x[i] = next_uniform();
    a.data = x;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    qkv_status st = qkv_npy_write(path, &a);
    free(x);
    if (st != QKV_OK) {
        fprintf(stderr, "make_inputs: %s\n", qkv_error_detail());
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: make_inputs DIR [B H Hkv L E]\n\n"
               "Writes seeded random q.npy (B, H, L, E), k.npy and v.npy (B, Hkv, L, E)\n"
               "with values in [-1, 1), and kv_lens.npy (B,) int64, into DIR (created\n"
               "if missing). Defaults: 2 8 2 256 64.\n");
        return 0;
    }
    if (argc != 2 && argc != 7) {
        fprintf(stderr, "usage: make_inputs DIR [B H Hkv L E]\n");
        return 2;
    }
    if (mkdir(argv[1], 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_inputs: %s: cannot create: %s\n", argv[1], strerror(errno));
        return 1;
    }
    int64_t d[5] = {2, 8, 2, 256, 64};
    for (int i = 0; i < 5 && argc == 7; i++) {
        char *end;
        d[i] = strtoll(argv[2 + i], &end, 10);
        if (*end || d[i] < 1 || d[i] > 1 << 20) {
            fprintf(stderr, "make_inputs: '%s' is not a size from 1 to 2^20\n", argv[2 + i]);
            return 2;
        }
    }
    int64_t B = d[0], H = d[1], Hkv = d[2], L = d[3], E = d[4];
    if (!write_random(argv[1], "q.npy", B, H, L, E) || !write_random(argv[1], "k.npy", B, Hkv, L, E) ||
        !write_random(argv[1], "v.npy", B, Hkv, L, E))
        return 1;
    /* Batch b keeps the first L - b*L/(2B) keys: the later ones are padding. */
    int64_t *lens = malloc((size_t)B * sizeof *lens);
    if (!lens) return 1;
    for (int64_t b = 0; b < B; b++) lens[b] = L - b * L / (2 * B);
    qkv_array la = {0};
    la.data = lens;
    la.dtype = QKV_DTYPE_I64;
    la.ndim = 1;
    la.shape[0] = B;
    char path[4096];
    snprintf(path, sizeof path, "%s/kv_lens.npy", argv[1]);
    qkv_status st = qkv_npy_write(path, &la);
    free(lens);
    if (st != QKV_OK) {
        fprintf(stderr, "make_inputs: %s\n", qkv_error_detail());
        return 1;
    }
    printf("make_inputs: wrote %s/{q,k,v,kv_lens}.npy: Q (%lld, %lld, %lld, %lld), "
           "K and V (%lld, %lld, %lld, %lld)\n",
           argv[1], (long long)B, (long long)H, (long long)L, (long long)E, (long long)B,
           (long long)Hkv, (long long)L, (long long)E);
    return 0;
}
