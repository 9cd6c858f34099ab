/* `qkv run`: attention on .npy files. Q/K/V of rank 2 (L, E), 3 (H, L, E)
 * or 4 (B, H, L, E) become 4-d views; outputs keep Q's rank. */
#include "attention_cli.h"
#include "commands.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char run_usage[] =
    "usage: qkv run -q Q.npy -k K.npy -v V.npy -o OUT.npy [options]\n"
    "\n"
    "Computes softmax(scale * Q K^T + mask) V and writes it to OUT.npy.\n"
    "Q is (L, E), (H, L, E) or (B, H, L, E); K and V have Q's rank, with\n"
    "Hkv heads dividing H (grouped-query attention) and any Lk; V's last dim\n"
    "Ev may differ from E. Each input is a .npy file or, as FILE.safetensors:NAME,\n"
    "a tensor of a .safetensors file. Q, K and V of one dtype, float16 or\n"
    "bfloat16, are computed as they are (every sum in float32); otherwise all\n"
    "three are read as float32 (float64, mixed dtypes). Outputs have Q's rank\n"
    "and the compute dtype (bfloat16 results are written as float32: .npy has\n"
    "no bfloat16); lse is float32.\n"
    "\n"
    "options:\n"
    "  --mask M.npy           bool (True = may attend) or float (added to the\n"
    "                         scores), broadcast to (B, H, Lq, Lk) as NumPy does\n"
    "  --causal               row i sees keys j <= i (PyTorch's is_causal)\n"
    "  --causal-lower-right   row i sees keys j <= i + Lk - Lq (KV-cache decoding)\n"
    "  --scale S              score scale, finite and nonzero (default 1/sqrt(E))\n"
    "  --softcap C            scores become C*tanh(s/C) before the mask, C > 0\n"
    "  --window LEFT,RIGHT    row i sees keys d-LEFT..d+RIGHT around its diagonal d\n"
    "                         (aligned like the causal flag, top-left without one);\n"
    "                         -1 means unlimited on that side\n"
    "  --kv-lens LENS.npy     int32/int64 (B,): keys j >= LENS[b] are padding\n"
    "  --weights P.npy        also write the attention weights (.., Lq, Lk)\n"
    "  --lse LSE.npy          also write the log-sum-exp of the scores (.., Lq)\n"
    "  --reference            use the reference kernel (double accumulation)\n"
    "  --threads N            worker threads (default: all CPUs)\n"
    "  --dtype f32|f16|bf16   compute in this dtype (Q, K, V converted to it)\n"
    "  -h, --help             show this help\n"
    "\n"
    "Rows with no allowed key give output 0, weights 0 and lse -inf.\n"
    "Exit status: 0 success, 1 error, 2 usage error. On error no output file\n"
    "is written.\n";

int cmd_run(int argc, char **argv)
{
    attention_args a;
    const char *o = NULL, *weights = NULL, *lse_path = NULL;
    memset(&a, 0, sizeof a);
    cli_opt opts[ATTENTION_OPTS + 3];
    int n = attention_opts(&a, opts);
    opts[n++] = (cli_opt){"-o", &o, NULL, 0};
    opts[n++] = (cli_opt){"--weights", &weights, NULL, 0};
    opts[n++] = (cli_opt){"--lse", &lse_path, NULL, 0};
    int prc = cli_parse_args("run", argc, argv, opts, n, NULL);
    if (prc == -1) {
        fputs(run_usage, stdout);
        return CLI_OK;
    }
    if (prc != CLI_OK) return prc;
    qkv_attention_options opt = {0};
    if (!attention_args_check("run", &a, &opt)) return CLI_USAGE;
    if (!o) {
        cli_error("run", "-o is required (see 'qkv run --help')");
        return CLI_USAGE;
    }
    const char *const out_flags[3] = {"-o", "--weights", "--lse"};
    const char *const out_paths[3] = {o, weights, lse_path};
    prc = cli_check_output_paths("run", 3, out_flags, out_paths);
    if (prc != CLI_OK) return prc;

    int rc = CLI_ERROR;
    attention_inputs in;
    qkv_array out = {0}, w = {0}, lse = {0};
    cli_outputs outs = {0};
    cli_warnings warn = {0};
    qkv_context *ctx = NULL;
    if (!attention_inputs_load("run", &a, &opt, &in)) goto done;

    /* Outputs keep Q's rank: O (.., Lq, Ev), weights (.., Lq, Lk), lse (.., Lq).
     * The library writes them straight into their (temporary) files. */
    attention_output_shape(&in, in.Ev, 0, &out);
    attention_output_shape(&in, in.Lk, 0, &w);
    attention_output_shape(&in, 1, 1, &lse);
    if (!cli_outputs_map(&outs, "run", "-o", o, &out) ||
        (weights && !cli_outputs_map(&outs, "run", "--weights", weights, &w)) ||
        (lse_path && !cli_outputs_map(&outs, "run", "--lse", lse_path, &lse)))
        goto done;
    qkv_tensor to = qkv_tensor_contiguous(out.data, out.dtype, in.B, in.H, in.Lq, in.Ev);
    qkv_tensor tw = qkv_tensor_contiguous(w.data, w.dtype, in.B, in.H, in.Lq, in.Lk);
    qkv_tensor tl = qkv_tensor_contiguous(lse.data, QKV_DTYPE_F32, in.B, in.H, in.Lq, 1);
    if (!(ctx = cli_context("run", a.num_threads, a.reference, QKV_ISA_AUTO))) goto done;
    cli_progress prog;
    cli_progress_init(&prog, "run", "attention");
    qkv_context_set_progress(ctx, cli_progress_update, &prog);
    qkv_status st = qkv_attention_forward(ctx, &to, &tw, &tl, &in.tq, &in.tk, &in.tv, &opt);
    cli_progress_done(&prog);
    if (st != QKV_OK) {
        const attention_name extra[] = {
            {"O: ", "-o", o}, {"weights: ", "--weights", weights}, {"lse: ", "--lse", lse_path}};
        attention_report_error("run", &a, &in, extra, 3);
        goto done;
    }
    /* Nothing reads the inputs after the commit. */
    attention_count_nonfinite(&warn, "run", &a, &in);
    if (!cli_outputs_commit(&outs, "run")) goto done;
    cli_warnings_print(&warn);
    rc = CLI_OK;

done:
    qkv_context_free(ctx);
    cli_warnings_free(&warn);
    cli_outputs_abort(&outs);
    attention_inputs_free(&in);
    qkv_array_free(&out); /* unmaps the outputs, renamed or removed by now */
    qkv_array_free(&w);
    qkv_array_free(&lse);
    return rc;
}
