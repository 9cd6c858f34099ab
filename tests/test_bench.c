/* `qkv bench` end to end on tiny shapes (attention and SGEMM): the JSON
 * line carries every field the format promises with values that make sense
 * together (time, GFLOP/s from the stated FLOP count, ratio = GFLOP/s /
 * ceiling), and the usage errors exit 2 with one line naming the flag. */
#include "test.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char out[1 << 14], err[1 << 12];

/* The number after "key": in a one-line JSON object; NAN when absent. */
static double field(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(json, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

static void check_json(void)
{
    char *argv[] = {"qkv", "bench", "--shape", "1,4,2,24,40,16,causal", "--threads", "1",
                    "--json", NULL};
    int rc = test_run_qkv(argv, out, sizeof out, err, sizeof err);
    CHECK(rc == 0);
    if (rc != 0) fprintf(stderr, "bench: %s\n", err);
    CHECK(strchr(out, '\n') == out + strlen(out) - 1); /* one line */
    const char *keys[] = {"\"name\"", "\"B\"", "\"H\"", "\"Hkv\"", "\"Lq\"", "\"Lk\"", "\"E\"",
                          "\"causal\": true", "\"threads\": 1", "\"seconds\"", "\"gflops\"",
                          "\"ceiling_gflops\"", "\"ratio\""};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        CHECK(strstr(out, keys[k]) != NULL);
        if (!strstr(out, keys[k])) fprintf(stderr, "bench JSON lacks %s: %s\n", keys[k], out);
    }
    CHECK(field(out, "B") == 1 && field(out, "H") == 4 && field(out, "Hkv") == 2);
    CHECK(field(out, "Lq") == 24 && field(out, "Lk") == 40 && field(out, "E") == 16);
    const double s = field(out, "seconds"), gf = field(out, "gflops");
    CHECK(s > 0);
    /* 4 B H Lq Lk E, not halved: causal halves only when Lq == Lk. */
    CHECK(fabs(gf - 4.0 * 4 * 24 * 40 * 16 / s / 1e9) <= 0.01 * gf);
    const double ceil = field(out, "ceiling_gflops"), ratio = field(out, "ratio");
    if (ceil > 0) CHECK(fabs(ratio - gf / ceil) <= 0.01 * ratio + 1e-4);
}

/* --backward times forward and backward together, FLOPs 3.5x the forward's. */
static void check_backward_json(void)
{
    char *argv[] = {"qkv", "bench", "--shape", "1,2,1,16,24,8", "--backward", "--threads", "1",
                    "--json", NULL};
    CHECK(test_run_qkv(argv, out, sizeof out, err, sizeof err) == 0);
    CHECK(strstr(out, "\"backward\": true") != NULL);
    const double s = field(out, "seconds"), gf = field(out, "gflops");
    CHECK(s > 0 && fabs(gf - 3.5 * 4.0 * 2 * 16 * 24 * 8 / s / 1e9) <= 0.01 * gf);
}

/* --dtype bf16 (and f16, with --backward): the case in that dtype, its
 * f32 twin beside it, and the ratio of the two rates. */
static void check_dtype_json(void)
{
    const char *dts[2] = {"bf16", "f16"};
    for (int d = 0; d < 2; d++) {
        char *argv[] = {"qkv", "bench", "--shape", "1,2,2,16,24,8", "--dtype", (char *)dts[d],
                        "--threads", "1", "--json", d ? "--backward" : NULL, NULL};
        CHECK(test_run_qkv(argv, out, sizeof out, err, sizeof err) == 0);
        char want[32];
        snprintf(want, sizeof want, "\"dtype\": \"%s\"", dts[d]);
        CHECK(strstr(out, want) != NULL);
        const double s = field(out, "seconds"), s32 = field(out, "f32_seconds");
        const double gf = field(out, "gflops"), gf32 = field(out, "f32_gflops");
        CHECK(s > 0 && s32 > 0 && gf > 0 && gf32 > 0);
        CHECK(fabs(field(out, "vs_f32") - s32 / s) <= 0.01 * s32 / s + 1e-4);
        CHECK(fabs(gf / gf32 - s32 / s) <= 0.01 * s32 / s + 1e-4);
        /* the output's distance from the twin's: the dtype's rounding */
        const double e = field(out, "rel_l2_vs_f32");
        CHECK(e > 0 && e < (d ? 1e-2 : 2e-2));
    }
    /* The SGEMM (qkv_gemm on bf16 A and B) and the layer (bf16 weights)
     * beside their f32 twins. */
    const char *kinds[2][3] = {{"--gemm-shape", "8,16,32,NT", "gflops"},
                               {"--layer-shape", "decode,64,4,2,16,8", "tokens_per_s"}};
    for (int c = 0; c < 2; c++) {
        char *argv[] = {"qkv", "bench", (char *)kinds[c][0], (char *)kinds[c][1], "--dtype",
                        "bf16", "--threads", "1", "--json", NULL};
        CHECK(test_run_qkv(argv, out, sizeof out, err, sizeof err) == 0);
        CHECK(strstr(out, "\"dtype\": \"bf16\"") != NULL);
        char f32key[32];
        snprintf(f32key, sizeof f32key, "f32_%s", kinds[c][2]);
        const double s = field(out, "seconds"), s32 = field(out, "f32_seconds");
        const double rate = field(out, kinds[c][2]), rate32 = field(out, f32key);
        CHECK(s > 0 && s32 > 0 && rate > 0 && rate32 > 0);
        CHECK(fabs(field(out, "vs_f32") - s32 / s) <= 0.01 * s32 / s + 1e-4);
        CHECK(fabs(rate / rate32 - s32 / s) <= 0.01 * s32 / s + 1e-4);
    }
}

/* --kv q8_0 / q4_0: K and V (the layer's cache) in the block format
 * beside the f32 twin, named in the JSON. */
static void check_kv_json(void)
{
    const char *fmts[2] = {"q8_0", "q4_0"};
    for (int f = 0; f < 2; f++) {
        char *argv[] = {"qkv", "bench", f ? "--layer-shape" : "--shape",
                        f ? "decode,64,2,1,32,8" : "1,2,2,16,64,32", "--kv", (char *)fmts[f],
                        "--threads", "1", "--json", NULL};
        CHECK(test_run_qkv(argv, out, sizeof out, err, sizeof err) == 0);
        char want[32];
        snprintf(want, sizeof want, "\"kv\": \"%s\"", fmts[f]);
        CHECK(strstr(out, want) != NULL);
        const double s = field(out, "seconds"), s32 = field(out, "f32_seconds");
        CHECK(s > 0 && s32 > 0);
        CHECK(fabs(field(out, "vs_f32") - s32 / s) <= 0.01 * s32 / s + 1e-4);
        if (!f) { /* the attention case: its output's distance from the twin's */
            const double e = field(out, "rel_l2_vs_f32");
            CHECK(e > 0 && e < 2e-2);
        }
    }
}

static void check_decode_json(void)
{
    char *argv[] = {"qkv", "bench", "--shape", "1,4,1,1,256,8", "--json", NULL};
    CHECK(test_run_qkv(argv, out, sizeof out, err, sizeof err) == 0);
    CHECK(strstr(out, "\"ceiling_gbps\"") != NULL && strstr(out, "\"gbps\"") != NULL);
    const double gbps = field(out, "gbps"), ceil = field(out, "ceiling_gbps");
    CHECK(gbps > 0 && ceil > 0);
    CHECK(fabs(field(out, "ratio") - gbps / ceil) <= 0.01 * gbps / ceil + 1e-4);
}

/* An SGEMM case: qkv_sgemm against the BLAS on the same product, FLOPs
 * 2 M N K, the ratio of the two rates. */
static void check_gemm_json(void)
{
    char *argv[] = {"qkv", "bench", "--gemm-shape", "67,45,33,TN", "--gemm-shape", "5,7,3",
                    "--threads", "1", "--json", NULL};
    int rc = test_run_qkv(argv, out, sizeof out, err, sizeof err);
    CHECK(rc == 0);
    if (rc != 0) fprintf(stderr, "bench: %s\n", err);
    const char *second = strchr(out, '\n');
    CHECK(second && strchr(second + 1, '\n') == out + strlen(out) - 1); /* two lines */
    const char *keys[] = {"\"name\": \"gemm TN 67x45x33\"", "\"kind\": \"gemm\"",
                          "\"ops\": \"TN\"", "\"threads\": 1", "\"impl\"", "\"seconds\"",
                          "\"gflops\"", "\"ceiling_gflops\"", "\"ratio\""};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        CHECK(strstr(out, keys[k]) != NULL);
        if (!strstr(out, keys[k])) fprintf(stderr, "bench JSON lacks %s: %s\n", keys[k], out);
    }
    CHECK(field(out, "M") == 67 && field(out, "N") == 45 && field(out, "K") == 33);
    const double s = field(out, "seconds"), gf = field(out, "gflops");
    CHECK(s > 0 && fabs(gf - 2.0 * 67 * 45 * 33 / s / 1e9) <= 0.01 * gf);
    const double ceil = field(out, "ceiling_gflops"), ratio = field(out, "ratio");
    if (ceil > 0) CHECK(fabs(ratio - gf / ceil) <= 0.01 * ratio + 1e-4);
    /* the second case: NT by default */
    CHECK(second && strstr(second, "\"name\": \"gemm NT 5x7x3\"") != NULL);
}

/* The layer's cases: a decode step against the copy (bytes: the four
 * weights and the cache read once) and a causal forward against an SGEMM
 * of L x D x D (FLOPs: the four projections and half the attention). */
static void check_layer_json(void)
{
    char *argv[] = {"qkv", "bench", "--layer-shape", "decode,64,4,2,16,100", "--layer-shape",
                    "forward,64,4,2,16,50", "--json", NULL};
    int rc = test_run_qkv(argv, out, sizeof out, err, sizeof err);
    CHECK(rc == 0);
    if (rc != 0) fprintf(stderr, "bench: %s\n", err);
    const char *second = strchr(out, '\n');
    CHECK(second && strchr(second + 1, '\n') == out + strlen(out) - 1); /* two lines */
    const char *keys[] = {"\"kind\": \"mha_decode\"", "\"context\": 100", "\"tokens_per_s\"",
                          "\"gbps\"", "\"ceiling_gbps\"", "\"ratio\""};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) CHECK(strstr(out, keys[k]) != NULL);
    const double s = field(out, "seconds"), gbps = field(out, "gbps");
    const double bytes = 4.0 * (64.0 * (2 * 64 + 2 * 32) + 2.0 * 32 * 101);
    CHECK(s > 0 && fabs(gbps - bytes / s / 1e9) <= 0.01 * gbps);
    CHECK(fabs(field(out, "tokens_per_s") - 1 / s) <= 0.01 / s);
    CHECK(fabs(field(out, "ratio") - gbps / field(out, "ceiling_gbps")) <= 0.01 * field(out, "ratio") + 1e-4);
    if (!second) return;
    CHECK(strstr(second, "\"kind\": \"mha_forward\"") != NULL);
    CHECK(field(second, "L") == 50 && field(second, "D") == 64 && field(second, "Hkv") == 2);
    const double sf = field(second, "seconds"), gf = field(second, "gflops");
    const double flops = 2.0 * 50 * 64 * (2 * 64 + 2 * 32) + 2.0 * 4 * 50 * 50 * 16;
    CHECK(sf > 0 && fabs(gf - flops / sf / 1e9) <= 0.01 * gf);
}

/* Every option in its --name=VALUE form, as in every other subcommand;
 * the repeatable shapes may still be given twice. */
static void check_equals_forms(void)
{
    char *argv[] = {"qkv", "bench", "--shape=1,2,1,8,8,8", "--shape=1,1,1,4,6,8,causal",
                    "--threads=1", "--isa=generic", "--json", NULL};
    int rc = test_run_qkv(argv, out, sizeof out, err, sizeof err);
    CHECK(rc == 0);
    if (rc != 0) fprintf(stderr, "bench: %s\n", err);
    const char *second = strchr(out, '\n');
    CHECK(second && strchr(second + 1, '\n') == out + strlen(out) - 1); /* two lines */
    CHECK(strstr(out, "\"name\": \"1,2,1,8,8,8\"") != NULL);
    CHECK(second && strstr(second, "\"name\": \"1,1,1,4,6,8 causal\"") != NULL);
    CHECK(strstr(out, "\"threads\": 1,") != NULL && strstr(out, "\"impl\": \"generic\"") != NULL);

    char *gemm[] = {"qkv", "bench", "--gemm-shape=5,7,3,TN", "--threads=1", "--json", NULL};
    rc = test_run_qkv(gemm, out, sizeof out, err, sizeof err);
    CHECK(rc == 0);
    if (rc != 0) fprintf(stderr, "bench: %s\n", err);
    CHECK(strstr(out, "\"name\": \"gemm TN 5x7x3\"") != NULL);

    char *layer[] = {"qkv", "bench", "--layer-shape=forward,16,2,1,8,4", "--threads=1", "--json",
                     NULL};
    rc = test_run_qkv(layer, out, sizeof out, err, sizeof err);
    CHECK(rc == 0);
    if (rc != 0) fprintf(stderr, "bench: %s\n", err);
    CHECK(strstr(out, "\"kind\": \"mha_forward\"") != NULL && field(out, "L") == 4);
}

/* A shape that times in no time: on a build that took a repeated flag,
 * the case below fails quickly instead of running the suite. */
#define TINY "--shape", "1,1,1,1,1,1"

static void check_errors(void)
{
    const char *cases[][8] = {
        /* Each flag once, as everywhere else in qkv. */
        {"--threads", "1", "--threads", "2", TINY, NULL, "--threads"},
        {"--threads=1", "--threads", "1", TINY, NULL, NULL, "--threads"},
        {"--isa", "generic", "--isa", "generic", TINY, NULL, "--isa"},
        {"--json", "--json", TINY, NULL, NULL, NULL, "--json"},
        {"--backward", "--backward", TINY, NULL, NULL, NULL, "--backward"},
        {"--reference", "--reference", TINY, NULL, NULL, NULL, "--reference"},
        {"--quick", "--quick", NULL, NULL, NULL, NULL, NULL, "--quick"},
        {"--gemm", "--gemm", NULL, NULL, NULL, NULL, NULL, "--gemm"},
        {"--layer", "--layer", NULL, NULL, NULL, NULL, NULL, "--layer"},
        {"--json=yes", NULL, NULL, NULL, NULL, NULL, NULL, "--json"},
        {"--threads=", NULL, NULL, NULL, NULL, NULL, NULL, "--threads"},
        {"--threads", NULL, NULL, NULL, NULL, NULL, NULL, "--threads"},
        {"--shape", NULL, NULL, NULL, NULL, NULL, NULL, "--shape"},
        {"--shape=1,1,1,1,1", NULL, NULL, NULL, NULL, NULL, NULL, "--shape"},
        {"--threads=0", NULL, NULL, NULL, NULL, NULL, NULL, "--threads"},
        {"--isa=sse9", NULL, NULL, NULL, NULL, NULL, NULL, "--isa"},
        {"--shape", "1,4,3,8,8,8", NULL, NULL, NULL, NULL, NULL, "--shape"},  /* Hkv does not divide H */
        {"--shape", "1,4,2,8,8", NULL, NULL, NULL, NULL, NULL, "--shape"},    /* five numbers */
        {"--shape", "1,4,2,8,8,8,2", NULL, NULL, NULL, NULL, NULL, "--shape"},
        {"--threads", "0", NULL, NULL, NULL, NULL, NULL, "--threads"},
        {"--isa", "sse9", NULL, NULL, NULL, NULL, NULL, "--isa"},
        {"--quick", "--shape", "1,1,1,1,1,1", NULL, NULL, NULL, NULL, "--quick"},
        {"--bogus", NULL, NULL, NULL, NULL, NULL, NULL, "--bogus"},
        {"--gemm-shape", "4,4", NULL, NULL, NULL, NULL, NULL, "--gemm-shape"},
        {"--gemm-shape", "4,4,0", NULL, NULL, NULL, NULL, NULL, "--gemm-shape"},
        {"--gemm-shape", "4,4,4,NX", NULL, NULL, NULL, NULL, NULL, "--gemm-shape"},
        {"--gemm-shape", "65536,65536,1", NULL, NULL, NULL, NULL, NULL, "--gemm-shape"}, /* C of 2^32 floats */
        {"--gemm", "--shape", "1,1,1,1,1,1", NULL, NULL, NULL, NULL, "--gemm"},
        {"--gemm", "--backward", NULL, NULL, NULL, NULL, NULL, "--backward"},
        {"--reference", "--gemm-shape", "4,4,4", NULL, NULL, NULL, NULL, "--reference"},
        {"--quick", "--gemm-shape", "4,4,4", NULL, NULL, NULL, NULL, "--quick"},
        {"--layer-shape", "decode,64,4,3,16,8", NULL, NULL, NULL, NULL, NULL, "--layer-shape"}, /* Hkv does not divide */
        {"--layer-shape", "sideways,64,4,2,16,8", NULL, NULL, NULL, NULL, NULL, "--layer-shape"},
        {"--layer-shape", "decode,64,2,1,3,16", NULL, NULL, NULL, NULL, NULL, "--layer-shape"}, /* odd E */
        {"--layer-shape", "forward,64,4,2,16", NULL, NULL, NULL, NULL, NULL, "--layer-shape"},
        {"--layer-shape", "decode,65536,65536,1,65536,1", NULL, NULL, NULL, NULL, NULL, "--layer-shape"},
        {"--layer", "--gemm", NULL, NULL, NULL, NULL, NULL, "--layer"},
        {"--layer", "--backward", NULL, NULL, NULL, NULL, NULL, "--backward"},
        {"--quick", "--layer-shape", "forward,8,1,1,8,8", NULL, NULL, NULL, NULL, "--quick"},
        {"--dtype", "f64", TINY, NULL, NULL, NULL, "--dtype"},
        {"--dtype", "f16", "--dtype", "f16", TINY, NULL, "--dtype"},
        {"--kv", "q5", TINY, NULL, NULL, NULL, "--kv"},
        {"--kv", "q8_0", "--backward", TINY, NULL, NULL, "--kv"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *argv[10] = {"qkv", "bench"};
        int n = 2;
        for (int i = 0; i < 7 && cases[c][i]; i++) argv[n++] = (char *)cases[c][i];
        argv[n] = NULL;
        int rc = test_run_qkv(argv, out, sizeof out, err, sizeof err);
        size_t len = strlen(err);
        CHECK(rc == 2);
        CHECK(len > 0 && strchr(err, '\n') == err + len - 1);
        CHECK(strstr(err, cases[c][7]) != NULL);
        if (rc != 2) fprintf(stderr, "bench case %zu: exit %d, %s\n", c, rc, err);
    }
}

int main(void)
{
    check_json();
    check_backward_json();
    check_decode_json();
    check_dtype_json();
    check_kv_json();
    check_gemm_json();
    check_layer_json();
    check_equals_forms();
    check_errors();
    return test_finish("test_bench");
}
