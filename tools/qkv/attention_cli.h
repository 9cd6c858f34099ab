/* What `qkv run` and `qkv grad` share: the attention options of the
 * command line, loading Q, K, V, the mask and the padding lengths from
 * .npy files (rank 2..4 arrays as 4-d views), and errors that name the
 * flag and file behind what the library calls Q, K, V, mask, ... */
#ifndef QKV_ATTENTION_CLI_H
#define QKV_ATTENTION_CLI_H

#include "cli.h"

typedef struct attention_args {
    const char *q, *k, *v, *mask, *kv_lens;
    const char *scale, *softcap, *window, *threads, *dtype;
    int causal, causal_lr, reference;
    int num_threads; /* --threads parsed by attention_args_check; 0 = all CPUs */
    qkv_dtype compute; /* --dtype parsed; QKV_DTYPE_BOOL when not given (the inputs decide) */
} attention_args;

/* The cli_opt entries for these flags, written to opts (room for
 * ATTENTION_OPTS entries); returns how many. */
#define ATTENTION_OPTS 13
int attention_opts(attention_args *a, cli_opt *opts);

/* Usage checks after parsing: -q, -k, -v given; one causal flag at most;
 * the values of --scale, --softcap, --window, --threads. Fills opt (not
 * its mask or kv_lens) and a->num_threads. Prints and returns 0 on a
 * usage error. */
int attention_args_check(const char *cmd, attention_args *a, qkv_attention_options *opt);

/* The loaded inputs. */
typedef struct attention_inputs {
    qkv_array q, k, v, mask, lens_raw, lens;
    qkv_tensor tq, tk, tv;
    int64_t B, H, Hkv, Lq, Lk, E, Ev;
    qkv_dtype dt;     /* the compute dtype: Q, K and V are in it */
    qkv_dtype out_dt; /* O, the weights and the gradients: dt, or f32 for bf16 (.npy has none) */
} attention_inputs;

/* Loads the files a names, checks ranks and the mask's broadcast, and
 * points opt->mask and opt->kv_lens at what it read. Q, K and V are
 * computed in --dtype when it is given, else in the dtype they share
 * when that is f16 or bf16, else in f32; each is converted to it as
 * needed, and a float mask in neither f32 nor that dtype to f32. Prints
 * and returns 0 on failure (attention_inputs_free still applies). */
int attention_inputs_load(const char *cmd, const attention_args *a, qkv_attention_options *opt,
                          attention_inputs *in);
void attention_inputs_free(attention_inputs *in);

/* Rank 0..4 array as a (B, H, L, E) view, leading dims 1. */
qkv_tensor attention_as_4d(const qkv_array *a);

/* The dtype (in->out_dt; F32 with drop_last: lse) and shape of an array
 * of Q's rank and leading dims whose last dim is `last` (or, with
 * drop_last, Q's rank minus one: lse); no data. */
void attention_output_shape(const attention_inputs *in, int64_t last, int drop_last,
                            qkv_array *out);

/* The same with its data malloc'd (room for floats; free it with
 * free()). Prints and returns 0 on failure. */
int attention_output_like(const char *cmd, const char *flag, const attention_inputs *in,
                          int64_t last, int drop_last, qkv_array *out);

/* A library error as one line naming the flag and file, with the shapes as
 * the files hold them. extra names more library prefixes ("dQ: ") and
 * their flags and paths, n of them. */
typedef struct attention_name {
    const char *prefix, *flag, *path;
} attention_name;
void attention_report_error(const char *cmd, const attention_args *a, const attention_inputs *in,
                            const attention_name *extra, int n);

/* Before the commit: keeps in w a warning for each input that holds NaN
 * (or infinities), for cli_warnings_print once the outputs are in place. */
void attention_count_nonfinite(cli_warnings *w, const char *cmd, const attention_args *a,
                               const attention_inputs *in);

#endif
