/* `qkv bench`: the speed of forward attention as a ratio to a ceiling
 * measured in the same process. Compute-bound cases are compared with an
 * SGEMM from the system BLAS (found at run time with dlopen, so the tool
 * never depends on one) and with the FMA peak of the threads used;
 * decode-shaped cases, bound by reading K and V once, with the bandwidth
 * of a large memory copy. Method: one warm-up call, then repeated calls
 * until both 3 runs and 0.5 s are reached; the median time counts for
 * attention, the fastest run for a ceiling (the best the machine did).
 * The GEMM and layer cases time ours and the ceiling (the system BLAS's
 * same product, an SGEMM of the projections' size, or the copy) called in
 * turn, and count each one's fastest run: the same statistic on both
 * sides, measured in the same moments of a noisy machine. */
#include "bench.h"
#include "cli.h"
#include "commands.h"

#include <stdio.h>
#include <string.h>

static const char bench_usage[] =
    "usage: qkv bench [options]\n"
    "\n"
    "Times forward attention and prints, for each case, the time, GFLOP/s and\n"
    "the ratio to a ceiling measured in the same run: an SGEMM of the system\n"
    "BLAS (M = N = min(L, 2048), K = E; none without a BLAS) for compute-bound\n"
    "cases, also shown as a fraction of the FMA peak of the threads used, and\n"
    "a large memory copy on as many threads for decode (Lq = 1). FLOPs are\n"
    "4*B*H*Lq*Lk*E, halved for causal self-attention; decode moves K and V once.\n"
    "Every buffer, timed or ceiling, comes from qkv_alloc: 2 MiB huge pages\n"
    "where Linux grants them (the header says the THP policy).\n"
    "\n"
    "The fixed suite: H=16, L=Lq=Lk in {1024, 4096}, E=Ev in {64, 128}, causal\n"
    "and not; decode Lq=1, Lk in {4096, 65536}, H=32, Hkv=8, E=128; then qkv's\n"
    "own SGEMM against the system BLAS's on the layer projection shape\n"
    "(4096 x 1024) x (1024 x 1024): NT (y = x W^T), NN and TN (dW = dY^T X),\n"
    "FLOPs 2*M*N*K, each side's fastest run counted, the two called in turn;\n"
    "then the multi-head attention layer: a decode step with the KV cache\n"
    "(B=1, H=32, Hkv=8, E=128, D=4096, context 4096 and 32768; the bytes of\n"
    "the four projection weights and the cached K and V read once, against\n"
    "the copy, and tokens per second) and a causal layer forward (L=D=2048,\n"
    "H=16; projections and attention FLOPs against an SGEMM of L x D x D).\n"
    "\n"
    "options:\n"
    "  --shape B,H,Hkv,Lq,Lk,E[,causal]   time this shape instead (repeatable);\n"
    "                     the last item is 0, 1 or the word causal\n"
    "  --gemm             the SGEMM cases only\n"
    "  --layer            the layer cases only\n"
    "  --layer-shape KIND,D,H,Hkv,E,LEN   time this layer case instead\n"
    "                     (repeatable): KIND decode (LEN = the context) or\n"
    "                     forward (LEN = the sequence, causal)\n"
    "  --gemm-shape M,N,K[,OPS]   time this SGEMM instead (repeatable); OPS is\n"
    "                     NN, NT (the default), TN or TT: whether A and B are\n"
    "                     transposed\n"
    "  --quick            the suite at L = 1024 and Lk = 4096 only, SGEMM NT only,\n"
    "                     the layer at context 4096 and L = D = 1024\n"
    "  --threads N        worker threads (default: all CPUs)\n"
    "  --isa NAME         generic, avx2, avx512 or avx512bf16 (default: the best here)\n"
    "  --backward         time the forward and the backward together (FLOPs:\n"
    "                     3.5 times the forward's)\n"
    "  --reference        time the reference kernel instead\n"
    "  --dtype NAME       f32 (the default), f16 or bf16: attention's Q, K, V, O\n"
    "                     (and dO, dQ, dK, dV), the SGEMM's A and B (qkv_gemm),\n"
    "                     the layer's weights in that dtype, each case timed in\n"
    "                     turn with its f32 twin (each side's fastest run) and\n"
    "                     printed beside it with the ratio of their rates\n"
    "  --kv NAME          q8_0 or q4_0: attention's K and V (the layer's KV\n"
    "                     cache) in that block format, Q in --dtype, against the\n"
    "                     f32 twin as --dtype is (forward and layer cases only)\n"
    "  --json             one JSON object per case and line, nothing else\n"
    "  -h, --help         show this help\n";

/* What one run times: the options and the cases of each kind, those of
 * the command line first, then the suite's. */
typedef struct bench_plan {
    bench_opts bo;
    int quick, gemm_only, layer_only;
    int nshape_args, ngemm_args, nlayer_args; /* the cases given as options */
    bcase cases[32];
    gcase gcases[32];
    lcase lcases[32];
    int n, ngemm, nlayer; /* all the cases */
} bench_plan;

/* Reads the options and the shapes given. CLI_OK, -1 for --help, or the
 * exit code after printing the error. */
static int parse_args(int argc, char **argv, bench_plan *p)
{
    /* Each option once, the three kinds of shape as often as there is
     * room for them (the suite adds its cases only when none is given). */
    const char *threads = NULL, *isa = NULL, *dtype = NULL, *kv = NULL;
    const char *shape_args[32], *gemm_args[32], *layer_args[32];
    const cli_opt opts[] = {
        {"--json", NULL, &p->bo.json, 0},         {"--quick", NULL, &p->quick, 0},
        {"--gemm", NULL, &p->gemm_only, 0},       {"--layer", NULL, &p->layer_only, 0},
        {"--backward", NULL, &p->bo.backward, 0}, {"--reference", NULL, &p->bo.reference, 0},
        {"--threads", &threads, NULL, 0},         {"--isa", &isa, NULL, 0},
        {"--dtype", &dtype, NULL, 0},             {"--kv", &kv, NULL, 0},
    };
    const cli_list lists[] = {
        {"--shape", shape_args, 32, &p->nshape_args},
        {"--gemm-shape", gemm_args, 32, &p->ngemm_args},
        {"--layer-shape", layer_args, 32, &p->nlayer_args},
    };
    int prc = cli_parse_args_lists("bench", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                                   lists, (int)(sizeof lists / sizeof lists[0]), NULL);
    if (prc != CLI_OK) return prc;
    for (int i = 0; i < p->nlayer_args; i++)
        if (!parse_layer_shape(layer_args[i], &p->lcases[i])) {
            cli_error("bench", "--layer-shape: '%s', expected decode or forward, then "
                               "D,H,Hkv,E,LEN with sizes from 1 to 2^20, Hkv dividing H, "
                               "E even and tensors of at most 2^31 floats",
                      layer_args[i]);
            return CLI_USAGE;
        }
    for (int i = 0; i < p->ngemm_args; i++)
        if (!parse_gemm_shape(gemm_args[i], &p->gcases[i])) {
            cli_error("bench", "--gemm-shape: '%s', expected M,N,K[,OPS] with sizes from 1 "
                               "to 2^24, matrices of at most 2^31 floats and OPS NN, NT, "
                               "TN or TT",
                      gemm_args[i]);
            return CLI_USAGE;
        }
    for (int i = 0; i < p->nshape_args; i++)
        if (!parse_shape(shape_args[i], &p->cases[i])) {
            cli_error("bench", "--shape: '%s', expected B,H,Hkv,Lq,Lk,E[,causal] with "
                               "sizes >= 1, Hkv dividing H, tensors of at most 2^33 "
                               "floats and causal 0, 1 or 'causal'",
                      shape_args[i]);
            return CLI_USAGE;
        }
    p->n = p->nshape_args;
    p->ngemm = p->ngemm_args;
    p->nlayer = p->nlayer_args;
    if (threads && !cli_parse_threads("bench", threads, &p->bo.threads)) return CLI_USAGE;
    if (isa) {
        qkv_isa found = QKV_ISA_AUTO;
        for (qkv_isa x = QKV_ISA_GENERIC; x <= QKV_ISA_AVX512_BF16; x++)
            if (strcmp(isa, qkv_isa_name(x)) == 0) found = x;
        if (found == QKV_ISA_AUTO) {
            cli_error("bench", "--isa: '%s', expected generic, avx2, avx512 or avx512bf16", isa);
            return CLI_USAGE;
        }
        if (!qkv_isa_supported(found)) {
            cli_error("bench", "--isa: %s is not supported by this build or CPU", isa);
            return CLI_ERROR;
        }
        p->bo.isa = found;
    }
    p->bo.dtype = QKV_DTYPE_F32;
    if (dtype && !cli_parse_dtype("bench", "--dtype", dtype, &p->bo.dtype)) return CLI_USAGE;
    p->bo.kv = QKV_DTYPE_F32;
    if (kv) {
        if (strcmp(kv, "q8_0") == 0) {
            p->bo.kv = QKV_DTYPE_Q8_0;
        } else if (strcmp(kv, "q4_0") == 0) {
            p->bo.kv = QKV_DTYPE_Q4_0;
        } else {
            cli_error("bench", "--kv: '%s', expected q8_0 or q4_0", kv);
            return CLI_USAGE;
        }
    }
    return CLI_OK;
}

/* The options that pick cases, and those that are about attention only,
 * do not combine: CLI_OK, or CLI_USAGE after saying which clash. */
static int check_combinations(const bench_plan *p)
{
    const bench_opts *bo = &p->bo;
    const int nshapes = p->nshape_args, ngemm = p->ngemm_args, nlayer = p->nlayer_args;
    if ((nshapes || ngemm || nlayer) && p->quick) {
        cli_error("bench", "--quick picks from the fixed suite; it does not combine with %s",
                  nshapes ? "--shape" : ngemm ? "--gemm-shape" : "--layer-shape");
        return CLI_USAGE;
    }
    if (p->gemm_only && (nshapes || ngemm)) {
        cli_error("bench", "--gemm picks the suite's SGEMM cases; it does not combine with %s",
                  nshapes ? "--shape" : "--gemm-shape");
        return CLI_USAGE;
    }
    if (p->layer_only && (p->gemm_only || nshapes || ngemm || nlayer)) {
        cli_error("bench", "--layer picks the suite's layer cases; it does not combine with %s",
                  p->gemm_only ? "--gemm" : nshapes ? "--shape" : ngemm ? "--gemm-shape"
                                                                   : "--layer-shape");
        return CLI_USAGE;
    }
    if (p->gemm_only && nlayer) {
        cli_error("bench", "--gemm picks the suite's SGEMM cases; it does not combine with "
                           "--layer-shape");
        return CLI_USAGE;
    }
    if ((p->layer_only || nlayer) && (bo->backward || bo->reference)) {
        cli_error("bench", "--layer times the layer's forward and decode; it does not combine "
                           "with %s",
                  bo->backward ? "--backward" : "--reference");
        return CLI_USAGE;
    }
    if (bo->kv != QKV_DTYPE_F32 && (bo->backward || p->gemm_only || ngemm)) {
        cli_error("bench", "--kv times forwards and the layer; it does not combine with %s",
                  bo->backward ? "--backward" : p->gemm_only ? "--gemm" : "--gemm-shape");
        return CLI_USAGE;
    }
    if ((p->gemm_only || ngemm) && (bo->backward || bo->reference)) {
        cli_error("bench", "%s times attention only; it does not combine with %s",
                  bo->backward ? "--backward" : "--reference",
                  p->gemm_only ? "--gemm" : "--gemm-shape");
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* Without cases on the command line, the suite: attention, then (unless
 * --backward or --reference, which are about attention) the SGEMM and
 * layer cases; --gemm and --layer keep only theirs. */
static void add_suite(bench_plan *p)
{
    if (p->nshape_args || p->ngemm_args || p->nlayer_args) return;
    const int attention_only = p->bo.backward || p->bo.reference;
    if (!attention_only && !p->gemm_only) suite_layer_cases(p->lcases, &p->nlayer, p->quick);
    if (!attention_only && !p->layer_only) suite_gemm_cases(p->gcases, &p->ngemm, p->quick);
    if (!p->gemm_only && !p->layer_only) suite_attention_cases(p->cases, &p->n, p->quick);
}

/* The text output's first lines: what runs, on how many threads, against
 * which ceilings, on which memory. */
static void print_header(const bench_opts *bo, const blas *bl, int nthreads, int any_decode,
                         double peak)
{
    printf("qkv bench: %s, %d thread%s; ceiling: %s%s\n",
           bo->reference ? "reference kernel" : qkv_isa_name(bench_isa(bo)), nthreads,
           nthreads == 1 ? "" : "s",
           bl->sgemm ? bl->name : "no BLAS found (install libopenblas0) for SGEMM",
           any_decode ? "; memcpy for decode" : "");
    char thp[32];
    printf("memory: qkv_alloc; transparent huge pages: %s\n", thp_policy(thp, sizeof thp));
    if (peak > 0)
        printf("FMA peak of %d thread%s: %.1f GFLOP/s\n", nthreads, nthreads == 1 ? "" : "s",
               peak);
}

int cmd_bench(int argc, char **argv)
{
    bench_plan p;
    memset(&p, 0, sizeof p);
    p.bo.isa = QKV_ISA_AUTO;
    int prc = parse_args(argc, argv, &p);
    if (prc == -1) {
        fputs(bench_usage, stdout);
        return CLI_OK;
    }
    if (prc != CLI_OK) return prc;
    if ((prc = check_combinations(&p)) != CLI_OK) return prc;
    add_suite(&p);

    /* The ceilings the cases need, measured before any case. */
    blas bl;
    blas_open(&bl, p.bo.threads);
    int any_decode = 0;
    for (int i = 0; i < p.n; i++) any_decode |= p.cases[i].Lq == 1;
    const int nthreads = bench_threads(&p.bo);
    double copy_gbps = any_decode ? copy_ceiling(nthreads) : 0;
    double peak = 0;
    for (int r = 0; r < 3 && !p.bo.reference; r++) { /* the best of three */
        double x = fma_peak(nthreads);
        peak = x > peak ? x : peak;
    }
    if (!p.bo.json) print_header(&p.bo, &bl, nthreads, any_decode, peak);

    int rc = CLI_OK;
    for (int i = 0; i < p.n; i++)
        if (!bench_attention_case(&p.cases[i], &p.bo, &bl, copy_gbps, peak)) rc = CLI_ERROR;
    for (int i = 0; i < p.ngemm; i++)
        if (!bench_gemm_case(&p.gcases[i], &p.bo, &bl, peak)) rc = CLI_ERROR;
    for (int i = 0; i < p.nlayer; i++)
        if (!bench_layer_case(&p.lcases[i], &p.bo, &bl, peak)) rc = CLI_ERROR;
    blas_close(&bl);
    return rc;
}
