/* What `qkv bench` times: the fixed suite's cases, and the cases of the
 * command line (--shape, --gemm-shape, --layer-shape) read and checked
 * against the sizes a machine can hold. */
#define _XOPEN_SOURCE 700 /* strdup, strtok_r */
#include "bench.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void gemm_name(gcase *c)
{
    snprintf(c->name, sizeof c->name, "gemm %c%c %lldx%lldx%lld", c->ta ? 'T' : 'N',
             c->tb ? 'T' : 'N', (long long)c->m, (long long)c->n, (long long)c->k);
}

/* "M,N,K[,OPS]", OPS one of NN, NT, TN, TT (default NT). */
int parse_gemm_shape(const char *s, gcase *c)
{
    int64_t x[3] = {0, 0, 0};
    int n = 0, ta = 0, tb = 1;
    char *copy = strdup(s), *save = NULL;
    if (!copy) return 0;
    for (char *t = strtok_r(copy, ",", &save); t && n < 5; t = strtok_r(NULL, ",", &save), n++) {
        if (n == 3 && strlen(t) == 2 && strchr("NT", t[0]) && strchr("NT", t[1])) {
            ta = t[0] == 'T';
            tb = t[1] == 'T';
        } else if (n >= 3 || !cli_parse_int64(t, &x[n])) {
            n = 99;
        }
    }
    free(copy);
    if (n != 3 && n != 4) return 0;
    /* The BLAS takes int sizes; each matrix at most 2^31 floats (8 GiB). */
    for (int i = 0; i < 3; i++)
        if (x[i] < 1 || x[i] > (INT64_C(1) << 24)) return 0;
    if (x[0] * x[2] > (INT64_C(1) << 31) || x[1] * x[2] > (INT64_C(1) << 31) ||
        x[0] * x[1] > (INT64_C(1) << 31))
        return 0;
    *c = (gcase){"", x[0], x[1], x[2], ta, tb};
    gemm_name(c);
    return 1;
}

/* "decode|forward,D,H,Hkv,E,LEN" */
int parse_layer_shape(const char *s, lcase *c)
{
    int64_t x[5] = {0, 0, 0, 0, 0};
    int n = 0, decode = -1;
    char *copy = strdup(s), *save = NULL;
    if (!copy) return 0;
    for (char *t = strtok_r(copy, ",", &save); t && n < 7; t = strtok_r(NULL, ",", &save), n++) {
        if (n == 0)
            decode = strcmp(t, "decode") == 0 ? 1 : strcmp(t, "forward") == 0 ? 0 : -1;
        else if (n > 5 || !cli_parse_int64(t, &x[n - 1]))
            n = 99;
    }
    free(copy);
    if (n != 6 || decode < 0) return 0;
    for (int i = 0; i < 5; i++)
        if (x[i] < 1 || x[i] > (INT64_C(1) << 20)) return 0;
    if (x[1] % x[2] != 0 || x[3] % 2 != 0) return 0; /* RoPE rotates pairs: E even */
    /* Every weight, the cache and the activations at most 2^31 floats. */
    const int64_t lim = INT64_C(1) << 31;
    if (x[0] * x[1] * x[3] > lim || x[4] * x[0] > lim || x[4] * x[1] * x[3] > lim ||
        2 * x[4] * x[2] * x[3] > lim)
        return 0;
    *c = (lcase){"", decode, x[0], x[1], x[2], x[3], x[4]};
    snprintf(c->name, sizeof c->name, "mha %s D%lld H%lld/%lld E%lld %s%lld",
             decode ? "decode" : "forward", (long long)x[0], (long long)x[1], (long long)x[2],
             (long long)x[3], decode ? "ctx" : "L", (long long)x[4]);
    return 1;
}

/* "B,H,Hkv,Lq,Lk,E[,causal]" */
int parse_shape(const char *s, bcase *c)
{
    int64_t x[7] = {0, 0, 0, 0, 0, 0, 0};
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    if (!copy) return 0;
    for (char *t = strtok_r(copy, ",", &save); t && n < 8; t = strtok_r(NULL, ",", &save), n++) {
        if (n == 6 && strcmp(t, "causal") == 0)
            x[6] = 1;
        else if (n >= 7 || !cli_parse_int64(t, &x[n]))
            n = 99;
    }
    free(copy);
    if (n != 6 && n != 7) return 0;
    for (int i = 0; i < 6; i++)
        if (x[i] < 1 || x[i] > (INT64_C(1) << 24)) return 0;
    if (x[6] != 0 && x[6] != 1) return 0;
    if (x[1] % x[2] != 0) return 0;
    /* Q (and O) and K (and V) must be sizes a machine can hold: 2^33
     * floats (32 GiB) each at most, products checked for overflow. */
    int64_t nq, nk;
    if (__builtin_mul_overflow(x[0] * x[1], x[3], &nq) || __builtin_mul_overflow(nq, x[5], &nq) ||
        __builtin_mul_overflow(x[0] * x[2], x[4], &nk) || __builtin_mul_overflow(nk, x[5], &nk) ||
        nq > (INT64_C(1) << 33) || nk > (INT64_C(1) << 33))
        return 0;
    c->B = x[0];
    c->H = x[1];
    c->Hkv = x[2];
    c->Lq = x[3];
    c->Lk = x[4];
    c->E = x[5];
    c->causal = (int)x[6];
    snprintf(c->name, sizeof c->name, "%lld,%lld,%lld,%lld,%lld,%lld%s", (long long)c->B,
             (long long)c->H, (long long)c->Hkv, (long long)c->Lq, (long long)c->Lk,
             (long long)c->E, c->causal ? " causal" : "");
    return 1;
}

/* ------------------------------------------------------------ the suite */

void suite_attention_cases(bcase *cases, int *n, int quick)
{
    static const int64_t Ls[2] = {1024, 4096}, Es[2] = {64, 128};
    for (int li = 0; li < (quick ? 1 : 2); li++)
        for (int ei = 0; ei < 2; ei++)
            for (int causal = 0; causal < 2; causal++) {
                bcase *c = &cases[(*n)++];
                *c = (bcase){"", 1, 16, 16, Ls[li], Ls[li], Es[ei], causal};
                snprintf(c->name, sizeof c->name, "L%lld E%lld%s", (long long)Ls[li],
                         (long long)Es[ei], causal ? " causal" : "");
            }
    static const int64_t Lks[2] = {4096, 65536};
    for (int di = 0; di < (quick ? 1 : 2); di++) {
        bcase *c = &cases[(*n)++];
        *c = (bcase){"", 1, 32, 8, 1, Lks[di], 128, 0};
        snprintf(c->name, sizeof c->name, "decode Lk%lld GQA32/8", (long long)Lks[di]);
    }
}

void suite_gemm_cases(gcase *cases, int *n, int quick)
{
    static const int ops[3][2] = {{0, 1}, {0, 0}, {1, 0}}; /* NT, NN, TN */
    for (int i = 0; i < (quick ? 1 : 3); i++) {
        cases[*n] = (gcase){"", 4096, 1024, 1024, ops[i][0], ops[i][1]};
        gemm_name(&cases[(*n)++]);
    }
}

void suite_layer_cases(lcase *cases, int *n, int quick)
{
    /* Llama-like sizes: 32 query heads over 8 kv heads of 128. */
    static const int64_t ctx[2] = {4096, 32768};
    for (int i = 0; i < (quick ? 1 : 2); i++) {
        lcase *c = &cases[(*n)++];
        *c = (lcase){"", 1, 4096, 32, 8, 128, ctx[i]};
        snprintf(c->name, sizeof c->name, "mha decode ctx%lld", (long long)ctx[i]);
    }
    const int64_t L = quick ? 1024 : 2048;
    lcase *c = &cases[(*n)++];
    *c = (lcase){"", 0, L, L / 128, L / 128, 128, L};
    snprintf(c->name, sizeof c->name, "mha forward L%lld D%lld", (long long)L, (long long)L);
}
