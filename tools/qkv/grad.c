/* `qkv grad`: the gradients of attention on .npy files. Given Q, K, V, the
 * attention options of `qkv run` and dO (the gradient of a loss with
 * respect to the output), writes dQ, dK, dV and, for a float mask, its
 * gradient. */
#include "attn_cli.h"
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
    "the dims it was broadcast along). Outputs are float32.\n"
    "\n"
    "options (as in qkv run):\n"
    "  --mask M.npy  --causal | --causal-lower-right  --scale S  --softcap C\n"
    "  --window LEFT,RIGHT  --kv-lens LENS.npy  --reference  --threads N\n"
    "  --dmask DM.npy   also write the gradient of a float --mask\n"
    "  -h, --help       show this help\n"
    "\n"
    "The fast backward runs unless --reference or --dmask is given (those use\n"
    "the reference backward, double accumulation).\n"
    "Exit status: 0 success, 1 error, 2 usage error. On error no output file\n"
    "is written.\n";

int cmd_grad(int argc, char **argv)
{
    attn_args a;
    const char *dout_path = NULL, *dq_path = NULL, *dk_path = NULL, *dv_path = NULL,
               *dm_path = NULL;
    memset(&a, 0, sizeof a);
    cli_opt opts[ATTN_OPTS + 5];
    int n = attn_opts(&a, opts);
    opts[n++] = (cli_opt){"--dout", &dout_path, NULL, 0};
    opts[n++] = (cli_opt){"--dq", &dq_path, NULL, 0};
    opts[n++] = (cli_opt){"--dk", &dk_path, NULL, 0};
    opts[n++] = (cli_opt){"--dv", &dv_path, NULL, 0};
    opts[n++] = (cli_opt){"--dmask", &dm_path, NULL, 0};
    int prc = cli_parse_args("grad", argc, argv, opts, n, NULL);
    if (prc == -1) {
        fputs(grad_usage, stdout);
        return CLI_OK;
    }
    if (prc != CLI_OK) return prc;
    qkv_attn_options opt = {0};
    if (!attn_args_check("grad", &a, &opt)) return CLI_USAGE;
    const char *req[4][2] = {{"--dout", dout_path}, {"--dq", dq_path}, {"--dk", dk_path},
                             {"--dv", dv_path}};
    for (int r = 0; r < 4; r++)
        if (!req[r][1]) {
            cli_error("grad", "%s is required (see 'qkv grad --help')", req[r][0]);
            return CLI_USAGE;
        }
    if (dm_path && !a.mask) {
        cli_error("grad", "--dmask needs a float --mask");
        return CLI_USAGE;
    }
    const char *const out_flags[4] = {"--dq", "--dk", "--dv", "--dmask"};
    const char *const out_paths[4] = {dq_path, dk_path, dv_path, dm_path};
    prc = cli_check_output_paths("grad", 4, out_flags, out_paths);
    if (prc != CLI_OK) return prc;

    int rc = CLI_ERROR;
    attn_inputs in;
    qkv_array dout = {0}, o = {0}, lse = {0}, dq = {0}, dk = {0}, dv = {0}, dm = {0};
    cli_outputs outs = {0};
    cli_warnings warn = {0};
    if (!attn_inputs_load("grad", &a, &opt, &in)) goto done;
    if (dm_path && in.mask.dtype != QKV_DTYPE_F32) {
        cli_error("grad", "--dmask: --mask %s is bool; only a float mask has a gradient", a.mask);
        goto done;
    }
    if (!cli_load_f32("grad", "--dout", dout_path, 0, &dout)) goto done;
    int same = dout.ndim == in.q.ndim;
    for (int d = 0; same && d < dout.ndim; d++)
        same = dout.shape[d] == (d == dout.ndim - 1 ? in.Ev : in.q.shape[d]);
    if (!same) {
        char sd[128];
        cli_format_shape(sd, sizeof sd, &dout);
        cli_error("grad", "--dout %s: shape %s, expected O's shape: Q's leading dims and Ev = %lld",
                  dout_path, sd, (long long)in.Ev);
        goto done;
    }
    /* The forward's O and lse, which the backward takes. */
    if (!attn_output_like("grad", "--dout", &in, in.Ev, 0, &o) ||
        !attn_output_like("grad", "--dout", &in, 1, 1, &lse) ||
        !attn_output_like("grad", "--dq", &in, in.E, 0, &dq))
        goto done;
    dk = in.k;
    dv = in.v;
    dk.data = dv.data = NULL;
    int64_t nk = qkv_array_numel(&dk), nv = qkv_array_numel(&dv);
    if (!(dk.data = malloc(nk ? (size_t)nk * 4 : 1)) || !(dv.data = malloc(nv ? (size_t)nv * 4 : 1))) {
        cli_error("grad", "--dk: cannot allocate %lld floats", (long long)(nk + nv));
        goto done;
    }
    if (dm_path) {
        dm = in.mask;
        dm.data = NULL;
        int64_t nm = qkv_array_numel(&dm);
        if (!(dm.data = malloc(nm ? (size_t)nm * 4 : 1))) {
            cli_error("grad", "--dmask: cannot allocate %lld floats", (long long)nm);
            goto done;
        }
    }
    qkv_tensor to = qkv_tensor_contiguous(o.data, QKV_DTYPE_F32, in.B, in.H, in.Lq, in.Ev);
    qkv_tensor tl = qkv_tensor_contiguous(lse.data, QKV_DTYPE_F32, in.B, in.H, in.Lq, 1);
    qkv_tensor tdo = attn_as_4d(&dout), tdq = attn_as_4d(&dq), tdk = attn_as_4d(&dk),
               tdv = attn_as_4d(&dv), tdm = attn_as_4d(&dm);
    cli_progress prog;
    cli_progress_init(&prog, "grad", "gradients");
    qkv_status st = qkv_attention_forward(&to, NULL, &tl, &in.tq, &in.tk, &in.tv, &opt);
    opt.progress = cli_progress_update; /* the backward is the long part */
    opt.progress_user = &prog;
    if (st == QKV_OK)
        st = qkv_attention_backward(&tdq, &tdk, &tdv, dm_path ? &tdm : NULL, &tdo, &in.tq, &in.tk,
                                    &in.tv, &to, &tl, &opt);
    cli_progress_done(&prog);
    if (st != QKV_OK) {
        const attn_name extra[] = {{"dO: ", "--dout", dout_path}};
        attn_report_error("grad", &a, &in, extra, 1);
        goto done;
    }
    qkv_array *bufs[4] = {&dq, &dk, &dv, dm_path ? &dm : NULL};
    for (int b = 0; b < 4; b++)
        if (bufs[b] && !cli_outputs_add(&outs, "grad", out_flags[b], out_paths[b], bufs[b]))
            goto done;
    attn_count_nonfinite(&warn, "grad", &a, &in); /* nothing reads the inputs after the commit */
    if (!cli_outputs_commit(&outs, "grad")) goto done;
    cli_warnings_print(&warn);
    rc = CLI_OK;

done:
    cli_warnings_free(&warn);
    cli_outputs_abort(&outs);
    attn_inputs_free(&in);
    qkv_array_free(&dout);
    free(o.data); /* the rest were allocated here */
    free(lse.data);
    free(dq.data);
    free(dk.data);
    free(dv.data);
    free(dm.data);
    return rc;
}
