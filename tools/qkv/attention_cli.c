/* The command-line attention inputs that `qkv run` and `qkv grad` share;
 * see attention_cli.h. */
#include "attention_cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int attention_opts(attention_args *a, cli_opt *opts)
{
    const cli_opt all[ATTENTION_OPTS] = {
        {"-q", &a->q, NULL, 0},           {"-k", &a->k, NULL, 0},
        {"-v", &a->v, NULL, 0},           {"--mask", &a->mask, NULL, 0},
        {"--kv-lens", &a->kv_lens, NULL, 0}, {"--scale", &a->scale, NULL, 0},
        {"--softcap", &a->softcap, NULL, 0}, {"--window", &a->window, NULL, 0},
        {"--threads", &a->threads, NULL, 0}, {"--dtype", &a->dtype, NULL, 0},
        {"--causal", NULL, &a->causal, 0},
        {"--causal-lower-right", NULL, &a->causal_lr, 0}, {"--reference", NULL, &a->reference, 0},
    };
    memcpy(opts, all, sizeof all);
    return ATTENTION_OPTS;
}

/* Option values that are wrong whatever the files hold: usage errors. */
static int parse_values(const char *cmd, attention_args *a, qkv_attention_options *opt)
{
    if (a->scale) {
        if (!cli_parse_scale(a->scale, &opt->scale)) {
            cli_error(cmd, "--scale: '%s', " CLI_SCALE_EXPECTED, a->scale);
            return 0;
        }
    }
    if (a->softcap) {
        if (!cli_parse_double(a->softcap, &opt->softcap) || !isfinite(opt->softcap) ||
            opt->softcap <= 0) {
            cli_error(cmd, "--softcap: '%s', expected a finite number > 0", a->softcap);
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
            cli_error(cmd,
                      "--window: '%s', expected LEFT,RIGHT with integers >= -1 "
                      "(-1 = unlimited)",
                      a->window);
            return 0;
        }
        opt->use_window = 1;
    }
    if (a->threads && !cli_parse_threads(cmd, a->threads, &a->num_threads)) return 0;
    a->compute = QKV_DTYPE_BOOL;
    if (a->dtype && !cli_parse_dtype(cmd, "--dtype", a->dtype, &a->compute)) return 0;
    opt->causal = a->causal || a->causal_lr;
    opt->align = a->causal_lr ? QKV_ALIGN_BOTTOM_RIGHT : QKV_ALIGN_TOP_LEFT;
    return 1;
}

int attention_args_check(const char *cmd, attention_args *a, qkv_attention_options *opt)
{
    const char *req[3][2] = {{"-q", a->q}, {"-k", a->k}, {"-v", a->v}};
    for (int r = 0; r < 3; r++)
        if (!req[r][1]) {
            cli_error(cmd, "%s is required (see 'qkv %s --help')", req[r][0], cmd);
            return 0;
        }
    if (a->causal && a->causal_lr) {
        cli_error(cmd, "--causal and --causal-lower-right exclude each other");
        return 0;
    }
    return parse_values(cmd, a, opt);
}

/* Rank 0..4 array as a (B, H, L, E) view, leading dims 1: the library's
 * qkv_array_as_tensor, for arrays whose rank the loaders have checked (a
 * view that fails anyway is absent, data NULL, and the call given it says
 * so). */
qkv_tensor attention_as_4d(const qkv_array *a)
{
    qkv_tensor t;
    (void)qkv_array_as_tensor(a, &t);
    return t;
}

static int check_rank(const char *cmd, const char *flag, const char *path, const qkv_array *a,
                      int lo, int hi)
{
    if (a->ndim < lo || a->ndim > hi) {
        cli_error(cmd, "%s %s: rank %d, expected %d to %d", flag, path, a->ndim, lo, hi);
        return 0;
    }
    return 1;
}

void attention_report_error(const char *cmd, const attention_args *a, const attention_inputs *in,
                            const attention_name *extra, int n)
{
    const char *d = qkv_error_detail();
    const attention_name names[] = {{"Q: ", "-q", a->q},
                                    {"K: ", "-k", a->k},
                                    {"V: ", "-v", a->v},
                                    {"mask: ", "--mask", a->mask},
                                    {"kv_lens", "--kv-lens", a->kv_lens}};
    const char *flag = NULL, *path = NULL;
    for (int x = 0; x < (int)(sizeof names / sizeof names[0]) + n && !flag; x++) {
        const attention_name *nm = x < (int)(sizeof names / sizeof names[0])
                                       ? &names[x]
                                       : &extra[x - (int)(sizeof names / sizeof names[0])];
        if (nm->path && strncmp(d, nm->prefix, strlen(nm->prefix)) == 0) {
            flag = nm->flag;
            path = nm->path;
        }
    }
    char sq[128], sk[128], sv[128];
    cli_format_shape(sq, sizeof sq, &in->q);
    cli_format_shape(sk, sizeof sk, &in->k);
    cli_format_shape(sv, sizeof sv, &in->v);
    if (flag)
        cli_error(cmd, "%s %s: %s (Q %s, K %s, V %s)", flag, path, d, sq, sk, sv);
    else
        cli_error(cmd, "%s (Q %s, K %s, V %s)", d, sq, sk, sv);
}

void attention_count_nonfinite(cli_warnings *w, const char *cmd, const attention_args *a,
                               const attention_inputs *in)
{
    cli_warnings_nonfinite(w, cmd, "-q", a->q, &in->q, 1);
    cli_warnings_nonfinite(w, cmd, "-k", a->k, &in->k, 1);
    cli_warnings_nonfinite(w, cmd, "-v", a->v, &in->v, 1);
    cli_warnings_nonfinite(w, cmd, "--mask", a->mask, &in->mask, 0);
}

/* NumPy broadcasting of the mask against (B, H, Lq, Lk), checked here so
 * that the message shows the mask's own shape. */
static int check_mask_shape(const char *cmd, const char *path, const qkv_array *m,
                            const int64_t full[4])
{
    for (int d = 0; d < m->ndim; d++) {
        int64_t n = m->shape[d], want = full[4 - m->ndim + d];
        if (n != 1 && n != want) {
            char sm[128];
            cli_format_shape(sm, sizeof sm, m);
            cli_error(cmd,
                      "--mask %s: shape %s does not broadcast to (B, H, Lq, Lk) = "
                      "(%lld, %lld, %lld, %lld)",
                      path, sm, (long long)full[0], (long long)full[1], (long long)full[2],
                      (long long)full[3]);
            return 0;
        }
    }
    return 1;
}

int attention_inputs_load(const char *cmd, const attention_args *a, qkv_attention_options *opt,
                          attention_inputs *in)
{
    memset(in, 0, sizeof *in);
    if (!cli_load_float(cmd, "-q", a->q, 0, &in->q) ||
        !check_rank(cmd, "-q", a->q, &in->q, 2, 4) || !cli_load_float(cmd, "-k", a->k, 0, &in->k) ||
        !check_rank(cmd, "-k", a->k, &in->k, 2, 4) || !cli_load_float(cmd, "-v", a->v, 0, &in->v) ||
        !check_rank(cmd, "-v", a->v, &in->v, 2, 4))
        return 0;
    const int shared = in->q.dtype == in->k.dtype && in->q.dtype == in->v.dtype;
    in->dt = a->compute != QKV_DTYPE_BOOL ? a->compute : shared ? in->q.dtype : QKV_DTYPE_F32;
    in->out_dt = in->dt == QKV_DTYPE_BF16 ? QKV_DTYPE_F32 : in->dt;
    if (!cli_convert(cmd, "-q", a->q, &in->q, in->dt) ||
        !cli_convert(cmd, "-k", a->k, &in->k, in->dt) ||
        !cli_convert(cmd, "-v", a->v, &in->v, in->dt))
        return 0;
    if (in->k.ndim != in->q.ndim || in->v.ndim != in->q.ndim) {
        int kbad = in->k.ndim != in->q.ndim;
        cli_error(cmd, "%s %s: rank %d, expected Q's rank %d (-q %s)", kbad ? "-k" : "-v",
                  kbad ? a->k : a->v, kbad ? in->k.ndim : in->v.ndim, in->q.ndim, a->q);
        return 0;
    }
    in->tq = attention_as_4d(&in->q);
    in->tk = attention_as_4d(&in->k);
    in->tv = attention_as_4d(&in->v);
    in->B = in->tq.shape[0];
    in->H = in->tq.shape[1];
    in->Lq = in->tq.shape[2];
    in->E = in->tq.shape[3];
    in->Hkv = in->tk.shape[1];
    in->Lk = in->tk.shape[2];
    in->Ev = in->tv.shape[3];

    if (a->mask) {
        const int64_t full[4] = {in->B, in->H, in->Lq, in->Lk};
        if (!cli_load_float(cmd, "--mask", a->mask, 1, &in->mask) ||
            !check_rank(cmd, "--mask", a->mask, &in->mask, 0, 4) ||
            !check_mask_shape(cmd, a->mask, &in->mask, full))
            return 0;
        const qkv_dtype md = in->mask.dtype;
        if (md != QKV_DTYPE_BOOL && md != QKV_DTYPE_F32 && md != in->dt &&
            !cli_convert(cmd, "--mask", a->mask, &in->mask, QKV_DTYPE_F32))
            return 0;
        opt->mask = attention_as_4d(&in->mask);
    }
    if (a->kv_lens) {
        /* The values are the library's to check (kv_lens in its messages). */
        if (!cli_load_lens(cmd, "--kv-lens", a->kv_lens, in->B, -1, &in->lens_raw, &in->lens))
            return 0;
        opt->kv_lens = in->lens.data;
    }
    return 1;
}

void attention_inputs_free(attention_inputs *in)
{
    qkv_array *all[] = {&in->q, &in->k, &in->v, &in->mask, &in->lens_raw, &in->lens};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qkv_array_free(all[i]);
}

void attention_output_shape(const attention_inputs *in, int64_t last, int drop_last, qkv_array *out)
{
    memset(out, 0, sizeof *out);
    out->dtype = drop_last ? QKV_DTYPE_F32 : in->out_dt;
    out->ndim = drop_last ? in->q.ndim - 1 : in->q.ndim;
    for (int d = 0; d < in->q.ndim - 1; d++) out->shape[d] = in->q.shape[d];
    if (!drop_last) out->shape[in->q.ndim - 1] = last;
}

int attention_output_like(const char *cmd, const char *flag, const attention_inputs *in,
                          int64_t last, int drop_last, qkv_array *out)
{
    attention_output_shape(in, last, drop_last, out);
    int64_t n = qkv_array_numel(out);
    if (n < 0 || (uint64_t)n > SIZE_MAX / 4 || !(out->data = malloc(n ? (size_t)n * 4 : 1))) {
        cli_error(cmd, "%s: cannot allocate %lld floats", flag, (long long)n);
        return 0;
    }
    return 1;
}
