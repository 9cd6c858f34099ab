/* What `qkv run` and `qkv grad` share: the attention options of the
 * command line, loading Q, K, V, the mask and the padding lengths from
 * .npy files (rank 2..4 arrays as 4-d views), and errors that name the
 * flag and file behind what the library calls Q, K, V, mask, ... */
#ifndef QKV_ATTN_CLI_H
#define QKV_ATTN_CLI_H

#include "cli.h"

typedef struct attn_args {
    const char *q, *k, *v, *mask, *kv_lens;
    const char *scale, *softcap, *window, *threads;
    int causal, causal_lr, reference;
} attn_args;

/* The cli_opt entries for these flags, written to opts (room for
 * ATTN_OPTS entries); returns how many. */
#define ATTN_OPTS 12
int attn_opts(attn_args *a, cli_opt *opts);

/* Usage checks after parsing: -q, -k, -v given; one causal flag at most;
 * the values of --scale, --softcap, --window, --threads. Fills opt (not
 * its mask or kv_lens). Prints and returns 0 on a usage error. */
int attn_args_check(const char *cmd, const attn_args *a, qkv_attention_options *opt);

/* The loaded inputs. */
typedef struct attn_inputs {
    qkv_array q, k, v, mask, lens_raw, lens;
    qkv_tensor tq, tk, tv;
    int64_t B, H, Hkv, Lq, Lk, E, Ev;
} attn_inputs;

/* Loads the files a names, checks ranks and the mask's broadcast, and
 * points opt->mask and opt->kv_lens at what it read. Prints and returns 0
 * on failure (attn_inputs_free still applies). */
int attn_inputs_load(const char *cmd, const attn_args *a, qkv_attention_options *opt,
                     attn_inputs *in);
void attn_inputs_free(attn_inputs *in);

/* Rank 0..4 array as a (B, H, L, E) view, leading dims 1. */
qkv_tensor attn_as_4d(const qkv_array *a);

/* The dtype (F32) and shape of an array of Q's rank and leading dims
 * whose last dim is `last` (or, with drop_last, Q's rank minus one: lse);
 * no data. */
void attn_output_shape(const attn_inputs *in, int64_t last, int drop_last, qkv_array *out);

/* The same with its data malloc'd (free it with free()). Prints and
 * returns 0 on failure. */
int attn_output_like(const char *cmd, const char *flag, const attn_inputs *in, int64_t last,
                     int drop_last, qkv_array *out);

/* A library error as one line naming the flag and file, with the shapes as
 * the files hold them. extra names more library prefixes ("dQ: ") and
 * their flags and paths, n of them. */
typedef struct attn_name {
    const char *prefix, *flag, *path;
} attn_name;
void attn_report_error(const char *cmd, const attn_args *a, const attn_inputs *in,
                       const attn_name *extra, int n);

/* Before the commit: keeps in w a warning for each input that holds NaN
 * (or infinities), for cli_warnings_print once the outputs are in place. */
void attn_count_nonfinite(cli_warnings *w, const char *cmd, const attn_args *a,
                          const attn_inputs *in);

#endif
