/* `qkv run`: attention on .npy files. Q/K/V of rank 2 (L, E), 3 (H, L, E)
 * or 4 (B, H, L, E) become 4-d views; outputs keep Q's rank. */
#include "cli.h"
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
    "Ev may differ from E. float64/float16 inputs are read as float32;\n"
    "outputs are float32 with Q's rank.\n"
    "\n"
    "options:\n"
    "  --mask M.npy           bool (True = may attend) or float (added to the\n"
    "                         scores), broadcast to (B, H, Lq, Lk) as NumPy does\n"
    "  --causal               row i sees keys j <= i (PyTorch's is_causal)\n"
    "  --causal-lower-right   row i sees keys j <= i + Lk - Lq (KV-cache decoding)\n"
    "  --scale S              score scale, nonzero (default 1/sqrt(E))\n"
    "  --softcap C            scores become C*tanh(s/C) before the mask, C > 0\n"
    "  --window LEFT,RIGHT    row i sees keys d-LEFT..d+RIGHT around its diagonal d\n"
    "                         (aligned like the causal flag, top-left without one);\n"
    "                         -1 means unlimited on that side\n"
    "  --kv-lens LENS.npy     int32/int64 (B,): keys j >= LENS[b] are padding\n"
    "  --weights P.npy        also write the attention weights (.., Lq, Lk)\n"
    "  --lse LSE.npy          also write the log-sum-exp of the scores (.., Lq)\n"
    "  --reference            use the reference kernel (double accumulation)\n"
    "  --threads N            worker threads (default: all CPUs)\n"
    "  -h, --help             show this help\n"
    "\n"
    "Rows with no allowed key give output 0, weights 0 and lse -inf.\n"
    "Exit status: 0 success, 1 error, 2 usage error. On error no output file\n"
    "is written.\n";

typedef struct run_args {
    const char *q, *k, *v, *o, *mask, *kv_lens, *weights, *lse;
    const char *scale, *softcap, *window, *threads;
    int causal, causal_lr, reference;
} run_args;

/* CLI_OK, CLI_USAGE (error printed), or -1 for --help. */
static int parse_args(int argc, char **argv, run_args *a)
{
    const cli_opt opts[] = {
        {"-q", &a->q, NULL, 0},           {"-k", &a->k, NULL, 0},
        {"-v", &a->v, NULL, 0},           {"-o", &a->o, NULL, 0},
        {"--mask", &a->mask, NULL, 0},    {"--kv-lens", &a->kv_lens, NULL, 0},
        {"--weights", &a->weights, NULL, 0}, {"--lse", &a->lse, NULL, 0},
        {"--scale", &a->scale, NULL, 0},  {"--softcap", &a->softcap, NULL, 0},
        {"--window", &a->window, NULL, 0}, {"--threads", &a->threads, NULL, 0},
        {"--causal", NULL, &a->causal, 0}, {"--causal-lower-right", NULL, &a->causal_lr, 0},
        {"--reference", NULL, &a->reference, 0},
    };
    int rc = cli_parse_args("run", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL);
    if (rc != CLI_OK) return rc;
    const char *req[4][2] = {{"-q", a->q}, {"-k", a->k}, {"-v", a->v}, {"-o", a->o}};
    for (int r = 0; r < 4; r++)
        if (!req[r][1]) {
            cli_error("run", "%s is required (see 'qkv run --help')", req[r][0]);
            return CLI_USAGE;
        }
    if (a->causal && a->causal_lr) {
        cli_error("run", "--causal and --causal-lower-right exclude each other");
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* Option values that are wrong whatever the files hold: usage errors. */
static int parse_options(const run_args *a, qkv_attn_options *opt)
{
    if (a->scale) {
        if (!cli_parse_double(a->scale, &opt->scale) || !isfinite(opt->scale) ||
            opt->scale == 0) {
            cli_error("run", "--scale: '%s', expected a finite nonzero number", a->scale);
            return 0;
        }
    }
    if (a->softcap) {
        if (!cli_parse_double(a->softcap, &opt->softcap) || !isfinite(opt->softcap) ||
            opt->softcap <= 0) {
            cli_error("run", "--softcap: '%s', expected a finite number > 0", a->softcap);
            return 0;
        }
    }
    if (a->window) {
        const char *comma = strchr(a->window, ',');
        char left[32];
        size_t ll = comma ? (size_t)(comma - a->window) : 0;
        if (!comma || ll >= sizeof left ||
            (memcpy(left, a->window, ll), left[ll] = '\0',
             !cli_parse_int64(left, &opt->window_left)) ||
            !cli_parse_int64(comma + 1, &opt->window_right) || opt->window_left < -1 ||
            opt->window_right < -1) {
            cli_error("run", "--window: '%s', expected LEFT,RIGHT with integers >= -1 "
                             "(-1 = unlimited)", a->window);
            return 0;
        }
        opt->use_window = 1;
    }
    if (a->threads) {
        int64_t n;
        if (!cli_parse_int64(a->threads, &n) || n < 1 || n > 1024) {
            cli_error("run", "--threads: '%s', expected an integer from 1 to 1024", a->threads);
            return 0;
        }
        opt->num_threads = (int)n;
    }
    opt->causal = a->causal || a->causal_lr;
    opt->align = a->causal_lr ? QKV_ALIGN_BOTTOM_RIGHT : QKV_ALIGN_TOP_LEFT;
    opt->impl = a->reference ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO;
    return 1;
}

/* Rank 0..4 array as a (B, H, L, E) view, leading dims 1. */
static qkv_tensor as_4d(const qkv_array *a)
{
    int64_t s[4] = {1, 1, 1, 1};
    for (int d = 0; d < a->ndim; d++) s[4 - a->ndim + d] = a->shape[d];
    return qkv_tensor_contiguous(a->data, a->dtype, s[0], s[1], s[2], s[3]);
}

static int check_rank(const char *flag, const char *path, const qkv_array *a, int lo, int hi)
{
    if (a->ndim < lo || a->ndim > hi) {
        cli_error("run", "%s %s: rank %d, expected %d to %d", flag, path, a->ndim, lo, hi);
        return 0;
    }
    return 1;
}

/* The library names tensors Q, K, V, O, mask, ...; say which flag and file
 * that was, and add the shapes as the files hold them, since the library
 * only sees their 4-d views. */
static void report_attention_error(const run_args *a, const qkv_array *q, const qkv_array *k,
                                   const qkv_array *v)
{
    const char *d = qkv_error_detail();
    struct {
        const char *prefix, *flag, *path;
    } names[] = {{"Q: ", "-q", a->q},         {"K: ", "-k", a->k},
                 {"V: ", "-v", a->v},         {"O: ", "-o", a->o},
                 {"weights: ", "--weights", a->weights}, {"lse: ", "--lse", a->lse},
                 {"mask: ", "--mask", a->mask}, {"kv_lens", "--kv-lens", a->kv_lens}};
    const char *flag = NULL, *path = NULL;
    for (size_t n = 0; n < sizeof names / sizeof names[0] && !flag; n++)
        if (names[n].path && strncmp(d, names[n].prefix, strlen(names[n].prefix)) == 0) {
            flag = names[n].flag;
            path = names[n].path;
        }
    char sq[128], sk[128], sv[128];
    cli_format_shape(sq, sizeof sq, q);
    cli_format_shape(sk, sizeof sk, k);
    cli_format_shape(sv, sizeof sv, v);
    if (flag)
        cli_error("run", "%s %s: %s (Q %s, K %s, V %s)", flag, path, d, sq, sk, sv);
    else
        cli_error("run", "%s (Q %s, K %s, V %s)", d, sq, sk, sv);
}

/* Says, after a successful run, that non-finite inputs made NaN rows. */
static void warn_nonfinite(const char *flag, const char *path, const qkv_array *a, int count_inf)
{
    int64_t bad = a->data && a->dtype == QKV_DTYPE_F32 ? cli_count_nonfinite(a, count_inf) : 0;
    if (bad)
        fprintf(stderr,
                "qkv run: warning: %s %s holds %lld %s value%s; output rows that read them "
                "may be NaN\n",
                flag, path, (long long)bad, count_inf ? "NaN or infinite" : "NaN",
                bad == 1 ? "" : "s");
}

/* NumPy broadcasting of the mask against (B, H, Lq, Lk), checked here so
 * that the message shows the mask's own shape. */
static int check_mask_shape(const char *path, const qkv_array *m, const int64_t full[4])
{
    for (int d = 0; d < m->ndim; d++) {
        int64_t n = m->shape[d], want = full[4 - m->ndim + d];
        if (n != 1 && n != want) {
            char sm[128];
            cli_format_shape(sm, sizeof sm, m);
            cli_error("run",
                      "--mask %s: shape %s does not broadcast to (B, H, Lq, Lk) = "
                      "(%lld, %lld, %lld, %lld)",
                      path, sm, (long long)full[0], (long long)full[1], (long long)full[2],
                      (long long)full[3]);
            return 0;
        }
    }
    return 1;
}

int cmd_run(int argc, char **argv)
{
    run_args a = {0};
    qkv_attn_options opt = {0};
    int prc = parse_args(argc, argv, &a);
    if (prc == -1) {
        fputs(run_usage, stdout);
        return CLI_OK;
    }
    if (prc != CLI_OK || !parse_options(&a, &opt)) return CLI_USAGE;
    const char *const out_flags[3] = {"-o", "--weights", "--lse"};
    const char *const out_paths[3] = {a.o, a.weights, a.lse};
    prc = cli_check_output_paths("run", 3, out_flags, out_paths);
    if (prc != CLI_OK) return prc;

    int rc = CLI_ERROR;
    qkv_array q = {0}, k = {0}, v = {0}, mask = {0}, lens_raw = {0}, lens = {0};
    qkv_array out = {0}, w = {0}, lse = {0};
    cli_outputs outs = {0};

    if (!cli_load_f32("run", "-q", a.q, 0, &q) || !check_rank("-q", a.q, &q, 2, 4)) goto done;
    if (!cli_load_f32("run", "-k", a.k, 0, &k) || !check_rank("-k", a.k, &k, 2, 4)) goto done;
    if (!cli_load_f32("run", "-v", a.v, 0, &v) || !check_rank("-v", a.v, &v, 2, 4)) goto done;
    if (k.ndim != q.ndim || v.ndim != q.ndim) {
        int kbad = k.ndim != q.ndim;
        cli_error("run", "%s %s: rank %d, expected Q's rank %d (-q %s)", kbad ? "-k" : "-v",
                  kbad ? a.k : a.v, kbad ? k.ndim : v.ndim, q.ndim, a.q);
        goto done;
    }
    qkv_tensor tq = as_4d(&q), tk = as_4d(&k), tv = as_4d(&v);
    const int64_t B = tq.shape[0], H = tq.shape[1], Lq = tq.shape[2];
    const int64_t Lk = tk.shape[2], Ev = tv.shape[3];

    if (a.mask) {
        const int64_t full[4] = {B, H, Lq, Lk};
        if (!cli_load_f32("run", "--mask", a.mask, 1, &mask) ||
            !check_rank("--mask", a.mask, &mask, 0, 4) || !check_mask_shape(a.mask, &mask, full))
            goto done;
        opt.mask = as_4d(&mask);
    }
    if (a.kv_lens) {
        if (qkv_npy_read(a.kv_lens, &lens_raw) != QKV_OK) {
            cli_error("run", "--kv-lens %s", qkv_error_detail());
            goto done;
        }
        if (lens_raw.dtype != QKV_DTYPE_I32 && lens_raw.dtype != QKV_DTYPE_I64) {
            cli_error("run", "--kv-lens %s: dtype %s, expected int32 or int64", a.kv_lens,
                      qkv_dtype_name(lens_raw.dtype));
            goto done;
        }
        if (lens_raw.ndim != 1 || lens_raw.shape[0] != B) {
            char sl[128];
            cli_format_shape(sl, sizeof sl, &lens_raw);
            cli_error("run", "--kv-lens %s: shape %s, expected (%lld,): one length per batch",
                      a.kv_lens, sl, (long long)B);
            goto done;
        }
        if (qkv_array_convert(&lens, &lens_raw, QKV_DTYPE_I64) != QKV_OK) {
            cli_error("run", "--kv-lens %s: %s", a.kv_lens, qkv_error_detail());
            goto done;
        }
        opt.kv_lens = lens.data;
    }

    /* Outputs keep Q's rank: O (.., Lq, Ev), weights (.., Lq, Lk), lse (.., Lq). */
    out.dtype = w.dtype = lse.dtype = QKV_DTYPE_F32;
    out.ndim = w.ndim = q.ndim;
    lse.ndim = q.ndim - 1;
    for (int d = 0; d < q.ndim - 1; d++) out.shape[d] = w.shape[d] = lse.shape[d] = q.shape[d];
    out.shape[q.ndim - 1] = Ev;
    w.shape[q.ndim - 1] = Lk;
    qkv_array *bufs[3] = {&out, a.weights ? &w : NULL, a.lse ? &lse : NULL};
    for (int b = 0; b < 3; b++) {
        if (!bufs[b]) continue;
        int64_t n = qkv_array_numel(bufs[b]);
        if (n < 0 || (uint64_t)n > SIZE_MAX / 4 ||
            !(bufs[b]->data = malloc(n ? (size_t)n * 4 : 1))) {
            cli_error("run", "%s: cannot allocate %lld floats", out_flags[b], (long long)n);
            goto done;
        }
    }
    qkv_tensor to = qkv_tensor_contiguous(out.data, QKV_DTYPE_F32, B, H, Lq, Ev);
    qkv_tensor tw = qkv_tensor_contiguous(w.data, QKV_DTYPE_F32, B, H, Lq, Lk);
    qkv_tensor tl = qkv_tensor_contiguous(lse.data, QKV_DTYPE_F32, B, H, Lq, 1);
    cli_progress prog;
    cli_progress_init(&prog, "run", "attention");
    opt.progress = cli_progress_update;
    opt.progress_user = &prog;
    qkv_status st = qkv_attention_forward(&to, &tw, &tl, &tq, &tk, &tv, &opt);
    cli_progress_done(&prog);
    if (st != QKV_OK) {
        report_attention_error(&a, &q, &k, &v);
        goto done;
    }
    for (int b = 0; b < 3; b++)
        if (bufs[b] && !cli_outputs_add(&outs, "run", out_flags[b], out_paths[b], bufs[b]))
            goto done;
    if (!cli_outputs_commit(&outs, "run")) goto done;
    warn_nonfinite("-q", a.q, &q, 1);
    warn_nonfinite("-k", a.k, &k, 1);
    warn_nonfinite("-v", a.v, &v, 1);
    warn_nonfinite("--mask", a.mask, &mask, 0);
    rc = CLI_OK;

done:
    cli_outputs_abort(&outs);
    qkv_array *all[] = {&q, &k, &v, &mask, &lens_raw, &lens};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qkv_array_free(all[i]);
    free(out.data); /* these three were allocated here */
    free(w.data);
    free(lse.data);
    return rc;
}
