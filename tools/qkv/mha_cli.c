/* `qkv mha`: a multi-head attention layer whose parameters come from a
 * .safetensors file (qkv_mha_load), run on .npy inputs (qkv_mha_forward).
 * X of rank 2 (Lq, D) is one sequence, rank 3 (B, Lq, D) a batch; the
 * outputs keep X's rank. */
#include "cli.h"
#include "commands.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char mha_usage[] =
    "usage: qkv mha --params LAYER.safetensors --heads H --query X.npy -o Y.npy [options]\n"
    "       qkv mha --params LAYER.safetensors --heads H --query X.npy --kv-cost FORMAT[,VFORMAT]\n"
    "\n"
    "Runs a multi-head attention layer: Q = X Wq^T + bq, K = C Wk^T + bk,\n"
    "V = C Wv^T + bv, attention per head, Y = A Wo^T + bo. X is (B, Lq, D) or\n"
    "(Lq, D); Y has X's shape. The parameters are read by their PyTorch names:\n"
    "nn.MultiheadAttention's (in_proj_weight or q/k/v_proj_weight, in_proj_bias,\n"
    "out_proj.weight, out_proj.bias) or separate projections (q_proj.weight,\n"
    "k_proj.weight, v_proj.weight, o_proj.weight and optional .bias of each),\n"
    "stored as F32, F16 or BF16. float64/float16 inputs are read as float32;\n"
    "outputs are float32.\n"
    "\n"
    "options:\n"
    "  --params P.safetensors  the layer's weights and biases (required)\n"
    "  --heads H               query heads (required); D / H is the head dim of\n"
    "                          nn.MultiheadAttention, q_proj rows / H otherwise\n"
    "  --kv-heads HKV          key/value heads, dividing H (default H; fewer is\n"
    "                          grouped-query attention, separate projections only)\n"
    "  --query X.npy           the layer's input (B, Lq, D) or (Lq, D) (required)\n"
    "  --context C.npy         what the queries attend: (B, Lk, Dkv) or (Lk, Dkv),\n"
    "                          X's rank (default: X itself, self-attention)\n"
    "  -o Y.npy                the output, X's shape (required)\n"
    "  --weights W.npy         also write each head's attention weights:\n"
    "                          (B, H, Lq, Lk), or (H, Lq, Lk) for a rank-2 X\n"
    "  --causal                query i sees keys j <= i (PyTorch's is_causal)\n"
    "  --kv-lens LENS.npy      int32/int64 (B,): keys j >= LENS[b] are padding\n"
    "                          (PyTorch's key_padding_mask); values 0..Lk\n"
    "  --rope BASE             rotary position embedding on q and k, with this\n"
    "                          base (10000 for Llama), positions 0..L-1\n"
    "  --rope-style STYLE      half (dims i and i+E/2 paired: Llama, GPT-NeoX;\n"
    "                          the default) or interleaved (2i and 2i+1: GPT-J)\n"
    "  --prefix NAME           prepended to every parameter name, e.g.\n"
    "                          model.layers.0.self_attn.\n"
    "  --reference             use the reference attention kernel\n"
    "  --threads N             worker threads (default: all CPUs)\n"
    "  --weight-dtype D        keep the projection weights in f32 (the default),\n"
    "                          f16 or bf16 (a bf16 file's exactly, half the bytes)\n"
    "  --kv-cost K[,V]         print what a KV cache in format K (f32, f16, bf16,\n"
    "                          q8_0, q4_0; the values in V, default K) costs each\n"
    "                          head of X's causal self-attention: the mean KL\n"
    "                          divergence of its weights and the relative L2\n"
    "                          error of its output against an f32 cache (-o is\n"
    "                          then optional)\n"
    "  -h, --help              show this help\n"
    "\n"
    "Exit status: 0 success, 1 error, 2 usage error. On error no output file\n"
    "is written.\n";

typedef struct mha_args {
    const char *params, *heads, *kv_heads, *query, *context, *out, *weights, *kv_lens;
    const char *rope, *rope_style, *prefix, *threads, *weight_dtype, *kv_cost;
    int causal, reference;
    int num_threads; /* --threads parsed by check_args; 0 = all CPUs */
    qkv_kv_cache_options cost; /* --kv-cost parsed by check_args */
} mha_args;

/* The cache formats by qkv_kv_format, in qkv_dtype_name's spelling. */
static const char *const format_names[5] = {"f32", "f16", "bf16", "q8_0", "q4_0"};

/* The format the n characters at s name; 0 for none. */
static int parse_format(const char *s, size_t n, qkv_kv_format *f)
{
    for (int i = 0; i < 5; i++)
        if (strlen(format_names[i]) == n && strncmp(s, format_names[i], n) == 0) {
            *f = (qkv_kv_format)i;
            return 1;
        }
    return 0;
}

/* Usage checks: what is wrong whatever the files hold. Fills cfg's heads,
 * kv_heads and rope, opt, and a->num_threads. Prints and returns 0 on an
 * error. */
static int check_args(mha_args *a, qkv_mha_config *cfg, qkv_attention_options *opt)
{
    const char *req[4][2] = {
        {"--params", a->params}, {"--heads", a->heads}, {"--query", a->query}, {"-o", a->out}};
    for (int r = 0; r < (a->kv_cost ? 3 : 4); r++)
        if (!req[r][1]) {
            cli_error("mha", "%s is required (see 'qkv mha --help')", req[r][0]);
            return 0;
        }
    if (!cli_parse_int64(a->heads, &cfg->heads) || cfg->heads < 1) {
        cli_error("mha", "--heads: '%s', expected an integer >= 1", a->heads);
        return 0;
    }
    if (a->kv_heads) {
        if (!cli_parse_int64(a->kv_heads, &cfg->kv_heads) || cfg->kv_heads < 1) {
            cli_error("mha", "--kv-heads: '%s', expected an integer >= 1", a->kv_heads);
            return 0;
        }
        if (cfg->heads % cfg->kv_heads != 0) {
            cli_error("mha", "--kv-heads %s does not divide --heads %s", a->kv_heads, a->heads);
            return 0;
        }
    }
    if (a->rope) {
        if (!cli_parse_double(a->rope, &cfg->rope_base) || !isfinite(cfg->rope_base) ||
            cfg->rope_base <= 0) {
            cli_error("mha", "--rope: '%s', expected the base, a finite number > 0 "
                             "(10000 for Llama)", a->rope);
            return 0;
        }
        cfg->rope = QKV_ROPE_HALF;
    }
    if (a->rope_style) {
        if (!a->rope) {
            cli_error("mha", "--rope-style needs --rope BASE");
            return 0;
        }
        if (strcmp(a->rope_style, "half") == 0) {
            cfg->rope = QKV_ROPE_HALF;
        } else if (strcmp(a->rope_style, "interleaved") == 0) {
            cfg->rope = QKV_ROPE_INTERLEAVED;
        } else {
            cli_error("mha", "--rope-style: '%s', expected half or interleaved", a->rope_style);
            return 0;
        }
    }
    if (a->threads && !cli_parse_threads("mha", a->threads, &a->num_threads)) return 0;
    if (a->weight_dtype &&
        !cli_parse_dtype("mha", "--weight-dtype", a->weight_dtype, &cfg->weight_dtype))
        return 0;
    if (a->kv_cost) {
        const char *comma = strchr(a->kv_cost, ',');
        const size_t kn = comma ? (size_t)(comma - a->kv_cost) : strlen(a->kv_cost);
        a->cost.struct_size = sizeof a->cost;
        if (!parse_format(a->kv_cost, kn, &a->cost.k_format) ||
            !parse_format(comma ? comma + 1 : a->kv_cost, comma ? strlen(comma + 1) : kn,
                          &a->cost.v_format)) {
            cli_error("mha", "--kv-cost: '%s', expected K or K,V with each f32, f16, bf16, "
                             "q8_0 or q4_0", a->kv_cost);
            return 0;
        }
        if (a->context || a->kv_lens) {
            cli_error("mha", "--kv-cost measures X's causal self-attention; it does not "
                             "combine with %s", a->context ? "--context" : "--kv-lens");
            return 0;
        }
    }
    opt->causal = a->causal;
    opt->align = QKV_ALIGN_TOP_LEFT;
    return 1;
}

/* qkv_mha_load's failure, naming --params and the file, and the options
 * the detail involves: the head counts, or --rope for an odd head dim. */
static void report_load_error(const mha_args *a)
{
    const char *d = qkv_error_detail();
    if (strncmp(d, "st: ", 4) == 0) d += 4; /* the library's name for the file */
    const char *why = "";
    char buf[160];
    if (strstr(d, "heads")) {
        snprintf(buf, sizeof buf, " (--heads %s%s%s)", a->heads, a->kv_heads ? ", --kv-heads " : "",
                 a->kv_heads ? a->kv_heads : "");
        why = buf;
    } else if (strncmp(d, "head_dim:", 9) == 0 && a->rope) {
        why = " (--rope)";
    }
    cli_error("mha", "--params %s: %s%s", a->params, d, why);
}

/* Every name qkv_mha_load reads a parameter by (qkv.h), both schemes; one
 * loaded layer holds one scheme's, as the help says. */
static const char *const param_names[] = {
    "in_proj_weight", "in_proj_bias",  "q_proj_weight", "k_proj_weight", "v_proj_weight",
    "out_proj.weight", "out_proj.bias", "q_proj.weight", "k_proj.weight", "v_proj.weight",
    "o_proj.weight",  "q_proj.bias",   "k_proj.bias",   "v_proj.bias",   "o_proj.bias",
};

/* As for the inputs: a warning for each of the layer's parameters in
 * --params that holds NaN or infinities, naming the file and the tensor. */
static void count_nonfinite_params(cli_warnings *w, const mha_args *a, const qkv_safetensors *st)
{
    const char *prefix = a->prefix ? a->prefix : "";
    for (size_t i = 0; i < sizeof param_names / sizeof param_names[0]; i++) {
        char name[512], what[1024];
        qkv_array p;
        if (snprintf(name, sizeof name, "%s%s", prefix, param_names[i]) >= (int)sizeof name ||
            !qkv_safetensors_find(st, name, NULL) ||
            qkv_safetensors_get(st, name, QKV_DTYPE_F32, &p) != QKV_OK)
            continue; /* the load read it, so get fails only for memory */
        snprintf(what, sizeof what, "%s: tensor '%s'", a->params, name);
        cli_warnings_nonfinite(w, "mha", "--params", what, &p, 1);
        qkv_array_free(&p);
    }
}

/* An f32 output of the given rank and shape, malloc'd (free its data with
 * free()). Prints and returns 0 on failure. */
static int alloc_output(const char *flag, int ndim, const int64_t *shape, qkv_array *out)
{
    memset(out, 0, sizeof *out);
    out->dtype = QKV_DTYPE_F32;
    out->ndim = ndim;
    for (int d = 0; d < ndim; d++) out->shape[d] = shape[d];
    int64_t n = qkv_array_numel(out);
    if (n < 0 || (uint64_t)n > SIZE_MAX / 4 || !(out->data = malloc(n ? (size_t)n * 4 : 1))) {
        cli_error("mha", "%s: cannot allocate %lld floats", flag, (long long)n);
        return 0;
    }
    return 1;
}

/* What one run reads and makes: the parameters' file and the layer, X
 * and C (their shapes as text, for messages), the lengths, Y and W. */
typedef struct mha_run {
    qkv_safetensors *st;
    qkv_mha *m;
    qkv_array x, c, lens_raw, lens, y, w;
    int batched;
    int64_t B, Lq, Lk, D;
    char sx[128], sc[128];
} mha_run;

static void mha_run_free(mha_run *r)
{
    qkv_mha_free(r->m);
    qkv_safetensors_free(r->st);
    qkv_array_free(&r->x);
    qkv_array_free(&r->c);
    qkv_array_free(&r->lens_raw);
    qkv_array_free(&r->lens);
    free(r->y.data); /* these two were allocated here */
    free(r->w.data);
}

/* CLI_OK, -1 for --help, or the exit code after printing. */
static int parse_args(int argc, char **argv, mha_args *a)
{
    const cli_opt opts[] = {
        {"--params", &a->params, NULL, 0},     {"--heads", &a->heads, NULL, 0},
        {"--kv-heads", &a->kv_heads, NULL, 0}, {"--query", &a->query, NULL, 0},
        {"--context", &a->context, NULL, 0},   {"-o", &a->out, NULL, 0},
        {"--weights", &a->weights, NULL, 0},   {"--kv-lens", &a->kv_lens, NULL, 0},
        {"--rope", &a->rope, NULL, 0},         {"--rope-style", &a->rope_style, NULL, 0},
        {"--prefix", &a->prefix, NULL, 1},     {"--threads", &a->threads, NULL, 0},
        {"--causal", NULL, &a->causal, 0},     {"--reference", NULL, &a->reference, 0},
        {"--weight-dtype", &a->weight_dtype, NULL, 0}, {"--kv-cost", &a->kv_cost, NULL, 0},
    };
    return cli_parse_args("mha", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL);
}

/* The parameters' file, X, and C when given: X of rank 2 or 3, C of X's
 * rank and batch. 0 after printing. */
static int load_inputs(const mha_args *a, mha_run *r)
{
    if (qkv_safetensors_read(a->params, &r->st) != QKV_OK) {
        cli_error("mha", "--params %s", qkv_error_detail()); /* detail starts "PATH: " */
        return 0;
    }
    if (!cli_load_f32("mha", "--query", a->query, 0, &r->x)) return 0;
    cli_format_shape(r->sx, sizeof r->sx, &r->x);
    if (r->x.ndim != 2 && r->x.ndim != 3) {
        cli_error("mha", "--query %s: shape %s, expected (B, Lq, D) or (Lq, D)", a->query, r->sx);
        return 0;
    }
    r->batched = r->x.ndim == 3;
    r->B = r->batched ? r->x.shape[0] : 1;
    r->Lq = r->x.shape[r->x.ndim - 2];
    r->D = r->x.shape[r->x.ndim - 1];
    r->Lk = r->Lq;
    if (!a->context) return 1;
    if (!cli_load_f32("mha", "--context", a->context, 0, &r->c)) return 0;
    cli_format_shape(r->sc, sizeof r->sc, &r->c);
    if (r->c.ndim != r->x.ndim) {
        cli_error("mha", "--context %s: shape %s, expected rank %d like --query %s %s",
                  a->context, r->sc, r->x.ndim, a->query, r->sx);
        return 0;
    }
    if (r->batched && r->c.shape[0] != r->B) {
        cli_error("mha", "--context %s: batch %lld differs from --query %s's %lld", a->context,
                  (long long)r->c.shape[0], a->query, (long long)r->B);
        return 0;
    }
    r->Lk = r->c.shape[r->c.ndim - 2];
    return 1;
}

/* The layer from the file, every dim from there, and X and C checked
 * against its widths; then the key lengths, into opt. 0 after printing. */
static int load_layer(const mha_args *a, qkv_mha_config *cfg, qkv_attention_options *opt,
                      mha_run *r)
{
    if (qkv_mha_load(&r->m, cfg, r->st, a->prefix) != QKV_OK) {
        report_load_error(a);
        return 0;
    }
    const qkv_mha_config lc = qkv_mha_get_config(r->m);
    if (r->D != lc.d_model) {
        cli_error("mha", "--query %s: shape %s, but the layer in --params %s has width D = %lld",
                  a->query, r->sx, a->params, (long long)lc.d_model);
        return 0;
    }
    if (a->context && r->c.shape[r->c.ndim - 1] != lc.d_context) {
        cli_error("mha",
                  "--context %s: shape %s, but the layer in --params %s has context width "
                  "Dkv = %lld",
                  a->context, r->sc, a->params, (long long)lc.d_context);
        return 0;
    }
    if (!a->context && lc.d_context != lc.d_model) {
        cli_error("mha",
                  "--params %s: the layer's keys and values read a context of width %lld, not "
                  "X's %lld: give it with --context",
                  a->params, (long long)lc.d_context, (long long)lc.d_model);
        return 0;
    }
    if (a->kv_lens) {
        if (!cli_load_lens("mha", "--kv-lens", a->kv_lens, r->B, r->Lk, &r->lens_raw, &r->lens))
            return 0;
        opt->kv_lens = r->lens.data;
    }
    return 1;
}

/* Y, and W with --weights, then the layer's forward with a progress line.
 * 0 after printing. */
static int run_layer(const mha_args *a, const qkv_attention_options *opt, mha_run *r)
{
    /* Y has X's shape; W is (B, H, Lq, Lk), without B for a rank-2 X. */
    const int64_t wshape[4] = {r->B, qkv_mha_get_config(r->m).heads, r->Lq, r->Lk};
    if (!alloc_output("-o", r->x.ndim, r->x.shape, &r->y) ||
        (a->weights && !alloc_output("--weights", r->x.ndim + 1, wshape + !r->batched, &r->w)))
        return 0;
    qkv_context *ctx = cli_context("mha", a->num_threads, a->reference, QKV_ISA_AUTO);
    if (!ctx) return 0;
    cli_progress prog;
    cli_progress_init(&prog, "mha", "attention");
    qkv_context_set_progress(ctx, cli_progress_update, &prog);
    qkv_status s = qkv_mha_forward(ctx, r->m, r->y.data, a->weights ? r->w.data : NULL, r->x.data,
                                   r->B, r->Lq, a->context ? r->c.data : NULL, r->Lk, opt);
    cli_progress_done(&prog);
    qkv_context_free(ctx);
    if (s != QKV_OK) {
        /* The checks above leave little to fail here: memory, mostly. */
        cli_error("mha", "%s (--query %s %s, --params %s)", qkv_error_detail(), a->query, r->sx,
                  a->params);
        return 0;
    }
    return 1;
}

/* --kv-cost: the table of qkv_mha_kv_cost. 0 after printing. */
static int print_cost(const mha_args *a, mha_run *r)
{
    const int64_t H = qkv_mha_get_config(r->m).heads;
    double *kl = malloc((size_t)(H + 1) * sizeof *kl), *err = malloc((size_t)(H + 1) * sizeof *err);
    qkv_context *ctx = kl && err ? cli_context("mha", a->num_threads, a->reference, QKV_ISA_AUTO)
                                 : NULL;
    qkv_status s = ctx ? qkv_mha_kv_cost(ctx, r->m, r->x.data, r->B, r->Lq, &a->cost, kl, err)
                       : QKV_ERR_OUT_OF_MEMORY;
    qkv_context_free(ctx);
    if (s != QKV_OK) {
        cli_error("mha", "--kv-cost %s: %s", a->kv_cost,
                  kl && err ? qkv_error_detail() : "out of memory");
    } else {
        const char *kf = format_names[a->cost.k_format], *vf = format_names[a->cost.v_format];
        printf("kv cost: keys %s, values %s, against f32; %lld x %lld queries, causal\n", kf, vf,
               (long long)r->B, (long long)r->Lq);
        printf("%6s  %14s  %14s\n", "head", "KL(weights)", "rel L2(output)");
        for (int64_t h = 0; h <= H; h++) {
            char name[24];
            snprintf(name, sizeof name, h < H ? "%lld" : "all", (long long)h);
            printf("%6s  %14.4g  %14.4g\n", name, kl[h], err[h]);
        }
    }
    free(kl);
    free(err);
    return s == QKV_OK;
}

int cmd_mha(int argc, char **argv)
{
    mha_args a;
    memset(&a, 0, sizeof a);
    int prc = parse_args(argc, argv, &a);
    if (prc == -1) {
        fputs(mha_usage, stdout);
        return CLI_OK;
    }
    if (prc != CLI_OK) return prc;
    qkv_mha_config cfg = {0};
    qkv_attention_options opt = {0};
    if (!check_args(&a, &cfg, &opt)) return CLI_USAGE;
    const char *const out_flags[2] = {"-o", "--weights"};
    const char *const out_paths[2] = {a.out, a.weights};
    prc = cli_check_output_paths("mha", 2, out_flags, out_paths);
    if (prc != CLI_OK) return prc;

    int rc = CLI_ERROR;
    mha_run r;
    memset(&r, 0, sizeof r);
    cli_outputs outs = {0};
    cli_warnings warn = {0};
    if (!load_inputs(&a, &r) || !load_layer(&a, &cfg, &opt, &r)) goto done;
    if (a.kv_cost && !print_cost(&a, &r)) goto done;
    if (!a.out) { /* --kv-cost alone */
        rc = CLI_OK;
        goto done;
    }
    if (!run_layer(&a, &opt, &r)) goto done;
    /* Counted before the commit: nothing reads the mapped inputs after it. */
    cli_warnings_nonfinite(&warn, "mha", "--query", a.query, &r.x, 1);
    if (a.context) cli_warnings_nonfinite(&warn, "mha", "--context", a.context, &r.c, 1);
    count_nonfinite_params(&warn, &a, r.st);
    if (!cli_outputs_add(&outs, "mha", "-o", a.out, &r.y) ||
        (a.weights && !cli_outputs_add(&outs, "mha", "--weights", a.weights, &r.w)) ||
        !cli_outputs_commit(&outs, "mha"))
        goto done;
    cli_warnings_print(&warn);
    rc = CLI_OK;

done:
    cli_warnings_free(&warn);
    cli_outputs_abort(&outs);
    mha_run_free(&r);
    return rc;
}
