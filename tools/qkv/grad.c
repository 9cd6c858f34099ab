/* `qkv grad`: the gradients of attention on .npy files. Given Q, K, V, the
 * attention options of `qkv run` and dO (the gradient of a loss with
 * respect to the output), writes dQ, dK, dV and, for a float mask, its
 * gradient. */
#include "attention_cli.h"
#include "commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char grad_usage[] =
    "usage: qkv grad -q Q.npy -k K.npy -v V.npy --dout DO.npy\n"
    "                --dq DQ.npy --dk DK.npy --dv DV.npy [--dmask DM.npy] [options]\n"
    "\n"
    "Computes the gradients of a loss L with respect to Q, K and V (and a float\n"
    "mask) from dO = dL/dO, for O = softmax(scale * Q K^T + mask) V as `qkv run`\n"
    "computes it with the same options. DO.npy has O's shape: (.., Lq, Ev) with\n"
    "Q's rank. dQ has Q's shape, dK and dV those of K and V (summed over the\n"
    "query heads that share a kv head), dM the mask's own shape (summed over\n"
    "the dims it was broadcast along). Inputs are read and computed as `qkv run`\n"
    "reads them (DO.npy in the compute dtype too); dQ, dK and dV are in the\n"
    "compute dtype (float32 for bfloat16), dM in float32.\n"
    "\n"
    "options (as in qkv run):\n"
    "  --mask M.npy  --causal | --causal-lower-right  --scale S  --softcap C\n"
    "  --window LEFT,RIGHT  --kv-lens LENS.npy  --reference  --threads N\n"
    "  --dtype f32|f16|bf16\n"
    "  --dmask DM.npy   also write the gradient of a float --mask\n"
    "  -h, --help       show this help\n"
    "\n"
    "The fast backward runs unless --reference or --dmask is given (those use\n"
    "the reference backward, double accumulation).\n"
    "Exit status: 0 success, 1 error, 2 usage error. On error no output file\n"
    "is written.\n";

/* The files of the gradients: dO read, dQ, dK, dV and dM written. */
typedef struct grad_paths {
    const char *dout, *dq, *dk, *dv, *dm;
} grad_paths;

/* The arrays the backward takes and makes: dO read, the forward's O and
 * lse, the gradients. All but dout are malloc'd here. */
typedef struct grad_arrays {
    qkv_array dout, o, lse, dq, dk, dv, dm;
} grad_arrays;

/* Usage checks of the gradients' flags: each required one given, --dmask
 * only with a --mask, no two outputs on one path. CLI_OK, or the exit
 * code after printing. */
static int check_paths(const attention_args *a, const grad_paths *p)
{
    const char *req[4][2] = {
        {"--dout", p->dout}, {"--dq", p->dq}, {"--dk", p->dk}, {"--dv", p->dv}};
    for (int r = 0; r < 4; r++)
        if (!req[r][1]) {
            cli_error("grad", "%s is required (see 'qkv grad --help')", req[r][0]);
            return CLI_USAGE;
        }
    if (p->dm && !a->mask) {
        cli_error("grad", "--dmask needs a float --mask");
        return CLI_USAGE;
    }
    const char *const out_flags[4] = {"--dq", "--dk", "--dv", "--dmask"};
    const char *const out_paths[4] = {p->dq, p->dk, p->dv, p->dm};
    return cli_check_output_paths("grad", 4, out_flags, out_paths);
}

/* dO from its file, which must have O's shape. 0 after printing. */
static int load_dout(const attention_inputs *in, const char *path, qkv_array *dout)
{
    if (!cli_load_float("grad", "--dout", path, 0, dout) ||
        !cli_convert("grad", "--dout", path, dout, in->dt))
        return 0;
    int same = dout->ndim == in->q.ndim;
    for (int d = 0; same && d < dout->ndim; d++)
        same = dout->shape[d] == (d == dout->ndim - 1 ? in->Ev : in->q.shape[d]);
    if (!same) {
        char sd[128];
        cli_format_shape(sd, sizeof sd, dout);
        cli_error("grad", "--dout %s: shape %s, expected O's shape: Q's leading dims and Ev = %lld",
                  path, sd, (long long)in->Ev);
        return 0;
    }
    return 1;
}

/* The forward's O and lse, and the gradients: dQ as Q, dK and dV as K
 * and V, dM (with --dmask) as the mask. 0 after printing. */
static int alloc_arrays(const attention_inputs *in, const grad_paths *p, grad_arrays *g)
{
    if (!attention_output_like("grad", "--dout", in, in->Ev, 0, &g->o) ||
        !attention_output_like("grad", "--dout", in, 1, 1, &g->lse) ||
        !attention_output_like("grad", "--dq", in, in->E, 0, &g->dq))
        return 0;
    g->dk = in->k;
    g->dv = in->v;
    g->dk.data = g->dv.data = NULL;
    g->dk.dtype = g->dv.dtype = in->out_dt;
    int64_t nk = qkv_array_numel(&g->dk), nv = qkv_array_numel(&g->dv);
    if (!(g->dk.data = malloc(nk ? (size_t)nk * 4 : 1)) ||
        !(g->dv.data = malloc(nv ? (size_t)nv * 4 : 1))) {
        cli_error("grad", "--dk: cannot allocate %lld floats", (long long)(nk + nv));
        return 0;
    }
    if (p->dm) {
        g->dm = in->mask;
        g->dm.data = NULL;
        g->dm.dtype = QKV_DTYPE_F32;
        int64_t nm = qkv_array_numel(&g->dm);
        if (!(g->dm.data = malloc(nm ? (size_t)nm * 4 : 1))) {
            cli_error("grad", "--dmask: cannot allocate %lld floats", (long long)nm);
            return 0;
        }
    }
    return 1;
}

static void free_arrays(grad_arrays *g)
{
    qkv_array_free(&g->dout);
    free(g->o.data); /* the rest were allocated here */
    free(g->lse.data);
    free(g->dq.data);
    free(g->dk.data);
    free(g->dv.data);
    free(g->dm.data);
}

/* The forward, for the O and lse the backward takes, then the backward,
 * with a progress line. */
static qkv_status run_backward(qkv_context *ctx, const attention_inputs *in,
                               const qkv_attention_options *opt, int with_dm, grad_arrays *g)
{
    qkv_tensor to = qkv_tensor_contiguous(g->o.data, g->o.dtype, in->B, in->H, in->Lq, in->Ev);
    qkv_tensor tl = qkv_tensor_contiguous(g->lse.data, QKV_DTYPE_F32, in->B, in->H, in->Lq, 1);
    qkv_tensor tdo = attention_as_4d(&g->dout), tdq = attention_as_4d(&g->dq),
               tdk = attention_as_4d(&g->dk), tdv = attention_as_4d(&g->dv),
               tdm = attention_as_4d(&g->dm);
    cli_progress prog;
    cli_progress_init(&prog, "grad", "gradients");
    qkv_status st = qkv_attention_forward(ctx, &to, NULL, &tl, &in->tq, &in->tk, &in->tv, opt);
    qkv_context_set_progress(ctx, cli_progress_update, &prog); /* the backward is the long part */
    if (st == QKV_OK)
        st = qkv_attention_backward(ctx, &tdq, &tdk, &tdv, with_dm ? &tdm : NULL, &tdo, &in->tq,
                                    &in->tk, &in->tv, &to, &tl, opt);
    cli_progress_done(&prog);
    return st;
}

int cmd_grad(int argc, char **argv)
{
    attention_args a;
    grad_paths p = {NULL, NULL, NULL, NULL, NULL};
    memset(&a, 0, sizeof a);
    cli_opt opts[ATTENTION_OPTS + 5];
    int n = attention_opts(&a, opts);
    opts[n++] = (cli_opt){"--dout", &p.dout, NULL, 0};
    opts[n++] = (cli_opt){"--dq", &p.dq, NULL, 0};
    opts[n++] = (cli_opt){"--dk", &p.dk, NULL, 0};
    opts[n++] = (cli_opt){"--dv", &p.dv, NULL, 0};
    opts[n++] = (cli_opt){"--dmask", &p.dm, NULL, 0};
    int prc = cli_parse_args("grad", argc, argv, opts, n, NULL);
    if (prc == -1) {
        fputs(grad_usage, stdout);
        return CLI_OK;
    }
    if (prc != CLI_OK) return prc;
    qkv_attention_options opt = {0};
    if (!attention_args_check("grad", &a, &opt)) return CLI_USAGE;
    prc = check_paths(&a, &p);
    if (prc != CLI_OK) return prc;

    int rc = CLI_ERROR;
    attention_inputs in;
    grad_arrays g;
    memset(&g, 0, sizeof g);
    cli_outputs outs = {0};
    cli_warnings warn = {0};
    qkv_context *ctx = NULL;
    if (!attention_inputs_load("grad", &a, &opt, &in)) goto done;
    if (p.dm && in.mask.dtype == QKV_DTYPE_BOOL) {
        cli_error("grad", "--dmask: --mask %s is bool; only a float mask has a gradient", a.mask);
        goto done;
    }
    if (!load_dout(&in, p.dout, &g.dout) || !alloc_arrays(&in, &p, &g)) goto done;
    if (!(ctx = cli_context("grad", a.num_threads, a.reference, QKV_ISA_AUTO))) goto done;
    if (run_backward(ctx, &in, &opt, p.dm != NULL, &g) != QKV_OK) {
        const attention_name extra[] = {{"dO: ", "--dout", p.dout}};
        attention_report_error("grad", &a, &in, extra, 1);
        goto done;
    }
    if (!cli_outputs_add(&outs, "grad", "--dq", p.dq, &g.dq) ||
        !cli_outputs_add(&outs, "grad", "--dk", p.dk, &g.dk) ||
        !cli_outputs_add(&outs, "grad", "--dv", p.dv, &g.dv) ||
        (p.dm && !cli_outputs_add(&outs, "grad", "--dmask", p.dm, &g.dm)))
        goto done;
    /* Nothing reads the inputs after the commit. */
    attention_count_nonfinite(&warn, "grad", &a, &in);
    if (!cli_outputs_commit(&outs, "grad")) goto done;
    cli_warnings_print(&warn);
    rc = CLI_OK;

done:
    qkv_context_free(ctx);
    cli_warnings_free(&warn);
    cli_outputs_abort(&outs);
    attention_inputs_free(&in);
    free_arrays(&g);
    return rc;
}
