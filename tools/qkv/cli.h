/* Pieces every qkv subcommand shares: the exit-code contract, strict
 * number parsing, loading .npy inputs as float32, and output files that
 * appear only when the whole command succeeds. Uses only qkv.h. */
#ifndef QKV_CLI_H
#define QKV_CLI_H

#include "qkv.h"

#include <stdint.h>

/* Exit codes: 0 success, 1 any error while doing the work, 2 usage. */
enum { CLI_OK = 0, CLI_ERROR = 1, CLI_USAGE = 2 };

/* Prints "qkv CMD: message" as one line on stderr. */
void cli_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Strict parsers: the whole string must be the number. 0 on failure. */
int cli_parse_double(const char *s, double *out);
int cli_parse_int64(const char *s, int64_t *out);

/* Reads an input array for flag: a .npy file, or with PATH.safetensors:NAME
 * the tensor NAME of a .safetensors file. float32, float16 and bfloat16
 * are kept as they are, float64 becomes float32, bool is kept when
 * keep_bool is nonzero; other dtypes fail. On failure prints "qkv CMD:
 * FLAG PATH: detail" and returns 0. */
int cli_load_float(const char *cmd, const char *flag, const char *path, int keep_bool,
                   qkv_array *out);

/* cli_load_float, then any float dtype converted to float32. */
int cli_load_f32(const char *cmd, const char *flag, const char *path, int keep_bool,
                 qkv_array *out);

/* *a (loaded for flag from path) converted in place to dtype `to`;
 * nothing when it already is. Prints and returns 0 on failure. */
int cli_convert(const char *cmd, const char *flag, const char *path, qkv_array *a, qkv_dtype to);

/* A --dtype value for flag: f32, f16 or bf16, into *out. Prints a usage
 * error and returns 0 for anything else. */
int cli_parse_dtype(const char *cmd, const char *flag, const char *s, qkv_dtype *out);

/* Reads padding lengths for flag (--kv-lens): an int32 or int64 .npy of
 * shape (batch,), into *raw as stored and *lens as int64. When max_len >= 0
 * every value must lie in 0 .. max_len. On failure prints "qkv CMD: FLAG
 * PATH: detail" and returns 0 (free both arrays either way). */
int cli_load_lens(const char *cmd, const char *flag, const char *path, int64_t batch,
                  int64_t max_len, qkv_array *raw, qkv_array *lens);

/* --scale S: a finite nonzero number, into *out; 0 when s is not one.
 * Zero is refused rather than passed on: the library reads a scale of 0
 * as "the default 1/sqrt(E)" (a zeroed options struct), which a user who
 * typed 0 would not expect. CLI_SCALE_EXPECTED is the usage error's
 * phrase for it. */
int cli_parse_scale(const char *s, double *out);
#define CLI_SCALE_EXPECTED "expected a finite nonzero number (leave --scale out for 1/sqrt(E))"

/* --threads N: an integer from 1 to 1024. Prints a usage error naming the
 * flag and returns 0 when s is not one. */
int cli_parse_threads(const char *cmd, const char *s, int *out);

/* The library's execution context for a command: threads (0 = all CPUs),
 * the reference backend or the fastest, an isa. NULL, after printing the
 * library's error, when it cannot be made. Free with qkv_context_free. */
qkv_context *cli_context(const char *cmd, int threads, int reference, qkv_isa isa);

/* "(2, 3)", "(5,)" or "()" into buf. */
void cli_format_shape(char *buf, size_t len, const qkv_array *a);

/* Input files are mapped, not copied (qkv_npy_map), and `qkv run`'s
 * outputs are mapped too (cli_outputs_map): if an input shrinks while qkv
 * reads it, or a write to an output finds no disk space after all, the
 * access is a SIGBUS. From here on such a signal removes the temporaries
 * of cli_outputs and ends qkv with exit 1 and one line saying so, instead
 * of a crash. main calls it once. */
void cli_catch_bus_errors(const char *cmd);

/* Counts NaN (and, when count_inf, infinite) elements of an f32, f16 or
 * bf16 array. */
int64_t cli_count_nonfinite(const qkv_array *a, int count_inf);

/* Warnings about NaN or infinite inputs, counted before cli_outputs_commit
 * and printed after it: once the outputs are in place nothing may read a
 * mapped input again, since a file cut short meanwhile would make that
 * read a SIGBUS, whose message says no output was written. */
#define CLI_MAX_WARNINGS 32
typedef struct cli_warnings {
    int n;
    char *line[CLI_MAX_WARNINGS]; /* malloc'd, each ending in '\n' */
} cli_warnings;

/* Counts now: when the f32 input a (read from FLAG PATH) holds NaN (or,
 * with count_inf, infinite) values, keeps one warning line for
 * cli_warnings_print; nothing for other dtypes or an array without data. */
void cli_warnings_nonfinite(cli_warnings *w, const char *cmd, const char *flag, const char *path,
                            const qkv_array *a, int count_inf);
/* Prints the kept lines on stderr, in order, and frees them. */
void cli_warnings_print(cli_warnings *w);
/* Frees the kept lines unprinted (a failed command); safe to repeat. */
void cli_warnings_free(cli_warnings *w);

/* Standard output carries a command's result: flushes it (and closes it
 * when close_it) and, when some of it could not be written, prints "qkv
 * CMD: standard output: REASON" and returns 0. A command that also writes
 * files calls it before cli_outputs_commit, so that a result that did not
 * reach stdout leaves no file either; main calls it at the end. */
int cli_stdout_ok(const char *cmd, int close_it);

/* A set of output files written under temporary names beside their final
 * paths and renamed into place only by cli_outputs_commit, so that a
 * failed command leaves no output behind. An output named by a symbolic
 * link is written to the link's target (followed to its end, and created
 * when the link dangles), the link left as it was; an output that replaces
 * a file keeps that file's permission bits, a new one gets 0666 less the
 * umask (set at the commit: a read-only mode would keep the writer out).
 * While the set holds outputs, SIGINT, SIGTERM, SIGHUP and SIGQUIT (unless
 * ignored) remove the temporaries, print "qkv CMD: interrupted by SIGNAME;
 * no output written" and exit 1; the commit itself runs with those signals
 * blocked, so it finishes before one acts. One set at a time, on one
 * thread. */
#define CLI_MAX_OUTPUTS 8
typedef struct cli_outputs {
    int n;
    const char *final_path[CLI_MAX_OUTPUTS]; /* as given, for messages */
    const char *flag[CLI_MAX_OUTPUTS];
    char *target[CLI_MAX_OUTPUTS];   /* the file renamed onto (links resolved), malloc'd */
    char *tmp_path[CLI_MAX_OUTPUTS]; /* a slot of cli.c's list of temporaries, or fd_path */
    qkv_array *pending[CLI_MAX_OUTPUTS]; /* cli_outputs_map's arrays to write at commit */
    unsigned mode[CLI_MAX_OUTPUTS];      /* permission bits to give the file at commit */
    /* An unnamed temporary (O_TMPFILE, cli_outputs_map on Linux): 1 + its
     * descriptor, 0 for a named one; fd_path is "/proc/self/fd/N", the
     * name the writers open it by until the commit links it. */
    int unnamed_fd[CLI_MAX_OUTPUTS];
    char fd_path[CLI_MAX_OUTPUTS][32];
} cli_outputs;

/* Checks the output paths (NULL entries are skipped) before any work:
 * empty names and two flags naming one file (also through symbolic links)
 * are usage errors (CLI_USAGE), a path that exists and is not a regular
 * file, or a loop of links, is CLI_ERROR. Prints the error; returns CLI_OK
 * when all is well. */
int cli_check_output_paths(const char *cmd, int n, const char *const flags[],
                           const char *const paths[]);

/* Writes the file at `path` (a temporary name); returns NULL on success or
 * a short reason ("No space left on device") on failure. */
typedef const char *(*cli_write_fn)(const char *path, void *ctx);

/* Writes an output through `write` to a temporary file beside `path` (its
 * link target); on failure prints "qkv CMD: FLAG PATH: cannot write:
 * reason" and returns 0 (then call cli_outputs_abort). */
int cli_outputs_add_with(cli_outputs *outs, const char *cmd, const char *flag,
                         const char *path, cli_write_fn write, void *ctx);

/* The same for an array written as .npy. */
int cli_outputs_add(cli_outputs *outs, const char *cmd, const char *flag, const char *path,
                    const qkv_array *a);
/* Creates the output for an array of a's dtype and shape (a->data is
 * ignored) as a temporary .npy beside path and gives a->data the file's
 * own data to fill (qkv_npy_create): the computation writes the file
 * itself, with no buffer in between and no copy. On Linux the temporary
 * has no name until the commit (O_TMPFILE in path's directory), so that
 * even a SIGKILL during the work leaves nothing behind; where the file
 * system or /proc does not allow that, it is named. Where files cannot be
 * mapped, a->data is a buffer that cli_outputs_commit writes out. Free
 * a's data with qkv_array_free after the commit (or the abort). On failure
 * prints "qkv CMD: FLAG PATH: cannot write: reason" and returns 0. */
int cli_outputs_map(cli_outputs *outs, const char *cmd, const char *flag, const char *path,
                    qkv_array *a);
/* Writes what is pending, sets the modes, then renames every temporary
 * into place (an unnamed one is first linked to a temporary name); on
 * failure prints the error, removes what remains and returns 0. */
int cli_outputs_commit(cli_outputs *outs, const char *cmd);
/* Removes every temporary file. */
void cli_outputs_abort(cli_outputs *outs);

/* A progress line on stderr for long work: shown only when stderr is a
 * terminal and the work has run for CLI_PROGRESS_AFTER seconds, redrawn in
 * place, erased by cli_progress_done. Scripts never see it. */
#define CLI_PROGRESS_AFTER 0.5
typedef struct cli_progress {
    const char *cmd, *what;
    double start;
    int enabled, shown, last_percent;
} cli_progress;
void cli_progress_init(cli_progress *p, const char *cmd, const char *what);
/* Has the signature of qkv_attention_options.progress; user is the cli_progress. */
void cli_progress_update(void *user, double done);
void cli_progress_done(cli_progress *p);

/* One option of a subcommand: a flag (flag != NULL, set to 1) or an
 * option with a value (value != NULL, set to the argument; an empty value
 * is an error unless empty_ok). */
typedef struct cli_opt {
    const char *name; /* "-q" or "--mask" */
    const char **value;
    int *flag;
    int empty_ok;
} cli_opt;

/* Parses argv[1 ..] against opts: "-x VALUE", "--name VALUE",
 * "--name=VALUE", flags without a value. When positional is not NULL an
 * argument that does not start with '-' (or is "-") is stored there, one
 * at most. Returns -1 for -h or --help (outside a value), CLI_OK, or
 * CLI_USAGE after printing one line that names the argument: unknown,
 * given twice, a missing or empty value, a value given to a flag, a second
 * positional argument. */
int cli_parse_args(const char *cmd, int argc, char **argv, const cli_opt *opts, int nopts,
                   const char **positional);

/* An option that may be given up to max times (qkv bench --shape): the
 * values land in values[0 .. *count - 1], none of them empty. */
typedef struct cli_list {
    const char *name;
    const char **values;
    int max;
    int *count;
} cli_list;

/* cli_parse_args with repeatable options besides; one more than max is a
 * usage error naming the option. */
int cli_parse_args_lists(const char *cmd, int argc, char **argv, const cli_opt *opts, int nopts,
                         const cli_list *lists, int nlists, const char **positional);

#endif
