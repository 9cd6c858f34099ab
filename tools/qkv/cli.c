/* Shared CLI helpers; see cli.h. */
#define _XOPEN_SOURCE 700 /* realpath; before any header */
#define _GNU_SOURCE        /* O_TMPFILE */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "qkv%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_parse_double(const char *s, double *out)
{
    char *end;
    if (!s || !*s || isspace((unsigned char)*s)) return 0;
    errno = 0;
    double x = strtod(s, &end);
    /* ERANGE is overflow, or underflow: a subnormal result is still the
     * number asked for, a result flushed to zero is not. */
    if (*end != '\0' || (errno == ERANGE && (isinf(x) || x == 0))) return 0;
    *out = x;
    return 1;
}

int cli_parse_int64(const char *s, int64_t *out)
{
    char *end;
    if (!s || !*s || isspace((unsigned char)*s)) return 0;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (*end != '\0' || errno == ERANGE) return 0;
    *out = (int64_t)x;
    return 1;
}

int cli_convert(const char *cmd, const char *flag, const char *path, qkv_array *a, qkv_dtype to)
{
    if (a->dtype == to) return 1;
    qkv_array c;
    if (qkv_array_convert(&c, a, to) != QKV_OK) {
        cli_error(cmd, "%s %s: %s", flag, path, qkv_error_detail());
        return 0;
    }
    qkv_array_free(a);
    *a = c;
    return 1;
}

/* The tensor NAME of PATH.safetensors for spec "PATH.safetensors:NAME",
 * in its own dtype; 0 after printing. */
static int load_safetensors(const char *cmd, const char *flag, const char *spec,
                            const char *colon, qkv_array *out)
{
    char *path = malloc((size_t)(colon - spec) + 1);
    if (!path) {
        cli_error(cmd, "%s %s: out of memory", flag, spec);
        return 0;
    }
    memcpy(path, spec, (size_t)(colon - spec));
    path[colon - spec] = '\0';
    qkv_safetensors *st = NULL;
    qkv_array info;
    int ok = 0;
    if (qkv_safetensors_read(path, &st) != QKV_OK)
        cli_error(cmd, "%s %s", flag, qkv_error_detail()); /* detail starts "PATH: " */
    else if (!qkv_safetensors_find(st, colon + 1, &info))
        cli_error(cmd, "%s %s: %s has no tensor named '%s'", flag, spec, path, colon + 1);
    else if (qkv_dtype_size(info.dtype) == 0)
        cli_error(cmd, "%s %s: the tensor's dtype has no qkv dtype", flag, spec);
    else if (qkv_safetensors_get(st, colon + 1, info.dtype, out) != QKV_OK)
        cli_error(cmd, "%s %s: %s", flag, spec, qkv_error_detail());
    else
        ok = 1;
    qkv_safetensors_free(st);
    free(path);
    return ok;
}

int cli_load_float(const char *cmd, const char *flag, const char *path, int keep_bool,
                   qkv_array *out)
{
    qkv_array raw;
    const char *tag = ".safetensors:", *colon = NULL;
    for (const char *s = strstr(path, tag); s; s = strstr(s + 1, tag)) colon = s + strlen(tag) - 1;
    if (colon) {
        if (!load_safetensors(cmd, flag, path, colon, &raw)) return 0;
    } else if (qkv_npy_map(path, &raw) != QKV_OK) {
        cli_error(cmd, "%s %s", flag, qkv_error_detail()); /* detail starts "PATH: " */
        return 0;
    }
    if (raw.dtype == QKV_DTYPE_F32 || raw.dtype == QKV_DTYPE_F16 || raw.dtype == QKV_DTYPE_BF16 ||
        (keep_bool && raw.dtype == QKV_DTYPE_BOOL)) {
        *out = raw;
        return 1;
    }
    if (raw.dtype != QKV_DTYPE_F64) {
        cli_error(cmd, "%s %s: dtype %s, expected %sfloat32, float64, float16 or bfloat16", flag,
                  path, qkv_dtype_name(raw.dtype), keep_bool ? "bool, " : "");
        qkv_array_free(&raw);
        return 0;
    }
    *out = raw;
    if (!cli_convert(cmd, flag, path, out, QKV_DTYPE_F32)) {
        qkv_array_free(out);
        return 0;
    }
    return 1;
}

int cli_load_f32(const char *cmd, const char *flag, const char *path, int keep_bool,
                 qkv_array *out)
{
    if (!cli_load_float(cmd, flag, path, keep_bool, out)) return 0;
    if (out->dtype == QKV_DTYPE_BOOL || cli_convert(cmd, flag, path, out, QKV_DTYPE_F32)) return 1;
    qkv_array_free(out);
    return 0;
}

int cli_parse_dtype(const char *cmd, const char *flag, const char *s, qkv_dtype *out)
{
    const qkv_dtype known[3] = {QKV_DTYPE_F32, QKV_DTYPE_F16, QKV_DTYPE_BF16};
    for (int x = 0; x < 3; x++)
        if (strcmp(s, qkv_dtype_name(known[x])) == 0) {
            *out = known[x];
            return 1;
        }
    cli_error(cmd, "%s: '%s', expected f32, f16 or bf16", flag, s);
    return 0;
}

static inline uint32_t exponent_all_ones(const float *x)
{
    uint32_t u;
    memcpy(&u, x, sizeof u); /* the bits, without reading a float as an integer */
    return (u & 0x7f800000u) == 0x7f800000u;
}

/* Whether any of the n floats at x is NaN or infinite: the exponent bits
 * all set. Sixteen lanes of integer compares, so that the compiler makes
 * it vector code at -O2 (packed compares: the memcpy loads are plain
 * loads): at the memory's speed, a 32 MiB input costs a few milliseconds,
 * which a `qkv run` of that size should not spend twice. */
static int any_nonfinite(const float *x, int64_t n)
{
    uint32_t lane[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) lane[j] |= exponent_all_ones(x + i + j);
    uint32_t any = 0;
    for (int j = 0; j < 16; j++) any |= lane[j];
    for (; i < n; i++) any |= exponent_all_ones(x + i);
    return any != 0;
}

int64_t cli_count_nonfinite(const qkv_array *a, int count_inf)
{
    int64_t n = qkv_array_numel(a), bad = 0;
    if (a->dtype == QKV_DTYPE_F16 || a->dtype == QKV_DTYPE_BF16) {
        /* The exponent all ones: infinity with a zero fraction, else NaN. */
        const uint16_t e = a->dtype == QKV_DTYPE_F16 ? 0x7c00 : 0x7f80;
        const uint16_t *h = a->data;
        for (int64_t i = 0; i < n; i++)
            if ((h[i] & e) == e && (count_inf || (h[i] & (0x7fff & ~e)) != 0)) bad++;
        return bad;
    }
    const float *x = a->data;
    if (!any_nonfinite(x, n)) return 0;
    for (int64_t i = 0; i < n; i++)
        if (isnan(x[i]) || (count_inf && isinf(x[i]))) bad++;
    return bad;
}

void cli_warnings_nonfinite(cli_warnings *w, const char *cmd, const char *flag, const char *path,
                            const qkv_array *a, int count_inf)
{
    const int floats = a->dtype == QKV_DTYPE_F32 || a->dtype == QKV_DTYPE_F16 ||
                       a->dtype == QKV_DTYPE_BF16;
    int64_t bad = a->data && floats ? cli_count_nonfinite(a, count_inf) : 0;
    if (!bad) return;
    const char *fmt = "qkv %s: warning: %s %s holds %lld %s value%s; output rows that read "
                      "them may be NaN\n";
    const char *what = count_inf ? "NaN or infinite" : "NaN";
    const char *plural = bad == 1 ? "" : "s";
    int len = snprintf(NULL, 0, fmt, cmd, flag, path, (long long)bad, what, plural);
    char *line = len > 0 && w->n < CLI_MAX_WARNINGS ? malloc((size_t)len + 1) : NULL;
    if (!line) { /* no room to keep it: better early than never */
        fprintf(stderr, fmt, cmd, flag, path, (long long)bad, what, plural);
        return;
    }
    snprintf(line, (size_t)len + 1, fmt, cmd, flag, path, (long long)bad, what, plural);
    w->line[w->n++] = line;
}

void cli_warnings_print(cli_warnings *w)
{
    for (int i = 0; i < w->n; i++) fputs(w->line[i], stderr);
    cli_warnings_free(w);
}

void cli_warnings_free(cli_warnings *w)
{
    for (int i = 0; i < w->n; i++) free(w->line[i]);
    w->n = 0;
}

int cli_stdout_ok(const char *cmd, int close_it)
{
    errno = 0;
    int failed = fflush(stdout) != 0;
    int err = errno;
    failed |= ferror(stdout) != 0;
    if (close_it && fclose(stdout) != 0 && !failed) {
        failed = 1;
        err = errno;
    }
    if (!failed) return 1;
    /* The error flag of an earlier write (a command's own fflush) whose
     * errno is gone by now. */
    cli_error(cmd, "standard output: %s", err ? strerror(err) : "write error");
    return 0;
}

int cli_load_lens(const char *cmd, const char *flag, const char *path, int64_t batch,
                  int64_t max_len, qkv_array *raw, qkv_array *lens)
{
    if (qkv_npy_read(path, raw) != QKV_OK) {
        cli_error(cmd, "%s %s", flag, qkv_error_detail()); /* detail starts "PATH: " */
        return 0;
    }
    if (raw->dtype != QKV_DTYPE_I32 && raw->dtype != QKV_DTYPE_I64) {
        cli_error(cmd, "%s %s: dtype %s, expected int32 or int64", flag, path,
                  qkv_dtype_name(raw->dtype));
        return 0;
    }
    if (raw->ndim != 1 || raw->shape[0] != batch) {
        char sl[128];
        cli_format_shape(sl, sizeof sl, raw);
        cli_error(cmd, "%s %s: shape %s, expected (%lld,): one length per batch", flag, path, sl,
                  (long long)batch);
        return 0;
    }
    if (qkv_array_convert(lens, raw, QKV_DTYPE_I64) != QKV_OK) {
        cli_error(cmd, "%s %s: %s", flag, path, qkv_error_detail());
        return 0;
    }
    const int64_t *v = lens->data;
    for (int64_t b = 0; max_len >= 0 && b < batch; b++)
        if (v[b] < 0 || v[b] > max_len) {
            cli_error(cmd, "%s %s: length %lld in batch %lld is outside 0..%lld (the number of keys)",
                      flag, path, (long long)v[b], (long long)b, (long long)max_len);
            return 0;
        }
    return 1;
}

int cli_parse_scale(const char *s, double *out)
{
    return cli_parse_double(s, out) && isfinite(*out) && *out != 0;
}

int cli_parse_threads(const char *cmd, const char *s, int *out)
{
    int64_t n;
    if (!cli_parse_int64(s, &n) || n < 1 || n > 1024) {
        cli_error(cmd, "--threads: '%s', expected an integer from 1 to 1024", s);
        return 0;
    }
    *out = (int)n;
    return 1;
}

qkv_context *cli_context(const char *cmd, int threads, int reference, qkv_isa isa)
{
    qkv_context *ctx = NULL;
    if (qkv_context_create(&ctx) != QKV_OK ||
        qkv_context_set_threads(ctx, threads) != QKV_OK ||
        qkv_context_set_impl(ctx, reference ? QKV_IMPL_REFERENCE : QKV_IMPL_AUTO) != QKV_OK ||
        qkv_context_set_isa(ctx, isa) != QKV_OK) {
        cli_error(cmd, "%s", qkv_error_detail());
        qkv_context_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ------------------------------------------------ temporaries, signals */

/* The temporaries that exist now, kept where a signal handler can read
 * them: fixed buffers, a slot in use while its name is not empty. Slots
 * change only with the exit signals blocked on the thread that owns the
 * set, and the handler passes a signal that lands on another thread (the
 * library's workers) on to that one, so it never sees a slot half
 * written. An unnamed temporary (O_TMPFILE) has no slot until the commit
 * links it: the system removes it when qkv ends, however it ends; but it
 * counts in live_count, so that the handlers are there while it exists.
 * SIGQUIT is among the exit signals (as git cleans up its temporaries on
 * it): a core dump of qkv is worth less than leaving no temporaries. */
#define N_EXIT_SIGNALS 4
static const int exit_signals[N_EXIT_SIGNALS] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
static const char *const exit_signal_names[N_EXIT_SIGNALS] = {"SIGINT", "SIGTERM", "SIGHUP",
                                                              "SIGQUIT"};
static char live_tmp[CLI_MAX_OUTPUTS][PATH_MAX];
static int live_count; /* outputs that exist, named or not */
static pthread_t live_owner;
static char live_prefix[64]; /* "qkv CMD: " */
static struct sigaction saved_action[N_EXIT_SIGNALS];
static int handler_installed[N_EXIT_SIGNALS];

static void append(char *buf, size_t *n, size_t cap, const char *s)
{
    while (*s && *n + 1 < cap) buf[(*n)++] = *s++;
}

/* Only async-signal-safe calls here (unlink, write, _exit, pthread_self,
 * pthread_kill; pthread_equal only compares). Exits 1, the code of any
 * other error, as the error contract asks. */
static void on_exit_signal(int sig)
{
    if (!pthread_equal(pthread_self(), live_owner)) {
        pthread_kill(live_owner, sig);
        return;
    }
    for (int i = 0; i < CLI_MAX_OUTPUTS; i++)
        if (live_tmp[i][0]) unlink(live_tmp[i]);
    char msg[160];
    size_t n = 0;
    append(msg, &n, sizeof msg, live_prefix);
    append(msg, &n, sizeof msg, "interrupted by ");
    for (int i = 0; i < N_EXIT_SIGNALS; i++)
        if (sig == exit_signals[i]) append(msg, &n, sizeof msg, exit_signal_names[i]);
    append(msg, &n, sizeof msg, "; no output written\n");
    ssize_t w = write(STDERR_FILENO, msg, n);
    (void)w;
    _exit(CLI_ERROR);
}

static char bus_prefix[64]; /* "qkv CMD: " */

/* A SIGBUS comes on the thread whose access faulted: a mapped input cut
 * short, or a page of a mapped output that the file system could not
 * store after all (one whose fallocate reserves nothing). Several workers
 * may fault at once: the first one says so and ends qkv, the others wait
 * for that (returning would only fault again). Only async-signal-safe
 * calls, as in on_exit_signal (pause; a lock-free atomic_flag). */
static atomic_flag bus_seen = ATOMIC_FLAG_INIT;

static void on_bus_error(int sig)
{
    (void)sig;
    if (atomic_flag_test_and_set(&bus_seen))
        for (;;) pause();
    for (int i = 0; i < CLI_MAX_OUTPUTS; i++)
        if (live_tmp[i][0]) unlink(live_tmp[i]);
    char msg[256];
    size_t n = 0;
    append(msg, &n, sizeof msg, bus_prefix);
    append(msg, &n, sizeof msg,
           "bus error: a mapped input or output file could not be read or written (did an "
           "input shrink while qkv read it, or the disk fill?); no output written\n");
    ssize_t w = write(STDERR_FILENO, msg, n);
    (void)w;
    _exit(CLI_ERROR);
}

void cli_catch_bus_errors(const char *cmd)
{
    if (cmd)
        snprintf(bus_prefix, sizeof bus_prefix, "qkv %s: ", cmd);
    else
        snprintf(bus_prefix, sizeof bus_prefix, "qkv: ");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_bus_error;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

static void block_exit_signals(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < N_EXIT_SIGNALS; i++) sigaddset(&set, exit_signals[i]);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

static void restore_signal_mask(const sigset_t *old) { pthread_sigmask(SIG_SETMASK, old, NULL); }

/* For the first output; a signal the caller ignores (nohup) stays
 * ignored. Exit signals are blocked. */
static void install_handlers(const char *cmd)
{
    live_owner = pthread_self();
    snprintf(live_prefix, sizeof live_prefix, "qkv %s: ", cmd);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_exit_signal;
    sa.sa_flags = SA_RESTART; /* workers that pass a signal on go back to their wait */
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < N_EXIT_SIGNALS; i++) sigaddset(&sa.sa_mask, exit_signals[i]);
    for (int i = 0; i < N_EXIT_SIGNALS; i++) {
        handler_installed[i] = sigaction(exit_signals[i], NULL, &saved_action[i]) == 0 &&
                               saved_action[i].sa_handler != SIG_IGN &&
                               sigaction(exit_signals[i], &sa, NULL) == 0;
    }
}

/* After the last output: what was there before. Exit signals are
 * blocked; one pending now takes its usual course when they are not. */
static void remove_handlers(void)
{
    for (int i = 0; i < N_EXIT_SIGNALS; i++)
        if (handler_installed[i]) sigaction(exit_signals[i], &saved_action[i], NULL);
}

/* One more output exists / one is gone. Exit signals are blocked. */
static void live_hold(const char *cmd)
{
    if (live_count++ == 0) install_handlers(cmd);
}

static void live_release(void)
{
    if (--live_count == 0) remove_handlers();
}

/* Creates an empty file named target + ".tmp-XXXXXX" in a free slot and
 * returns the slot, or NULL with errno set. Exit signals are blocked. */
static char *slot_create(const char *target)
{
    static const char suffix[] = ".tmp-XXXXXX";
    size_t len = strlen(target);
    char *slot = NULL;
    for (int i = 0; i < CLI_MAX_OUTPUTS && !slot; i++)
        if (!live_tmp[i][0]) slot = live_tmp[i];
    if (len + sizeof suffix > PATH_MAX || !slot) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    memcpy(slot, target, len);
    memcpy(slot + len, suffix, sizeof suffix);
    int fd = mkstemp(slot);
    if (fd < 0) {
        slot[0] = '\0';
        return NULL;
    }
    close(fd);
    return slot;
}

/* A named temporary beside target, counted. Exit signals are blocked. */
static char *live_create(const char *cmd, const char *target)
{
    char *slot = slot_create(target);
    if (slot) live_hold(cmd);
    return slot;
}

/* Forgets a slot whose file is gone (removed or renamed). Exit signals
 * are blocked. */
static void live_forget(char *slot)
{
    slot[0] = '\0';
    live_release();
}

/* The file a write to path lands on: symbolic links followed to a name
 * that is not one, or does not exist (a dangling link: its target is
 * created, as a shell's > does). malloc'd; NULL with errno ELOOP after 40
 * links, or ENOMEM. */
static char *link_target(const char *path)
{
    size_t len = strlen(path);
    char *cur = malloc(len + 1);
    if (!cur) return NULL;
    memcpy(cur, path, len + 1);
    for (int hops = 0;; hops++) {
        struct stat st;
        char to[PATH_MAX];
        ssize_t n;
        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode) ||
            (n = readlink(cur, to, sizeof to - 1)) < 0)
            return cur; /* what is wrong with it, the write will say */
        if (hops == 40) {
            free(cur);
            errno = ELOOP;
            return NULL;
        }
        to[n] = '\0';
        /* A relative link is relative to the directory that holds it. */
        const char *slash = to[0] == '/' ? NULL : strrchr(cur, '/');
        size_t dir = slash ? (size_t)(slash - cur) + 1 : 0;
        char *next = malloc(dir + (size_t)n + 1);
        if (next) {
            memcpy(next, cur, dir);
            memcpy(next + dir, to, (size_t)n + 1);
        }
        free(cur);
        if (!(cur = next)) return NULL;
    }
}

/* What every output starts with: room in the set, the file written to
 * (links followed, malloc'd into *target) and the mode it will get: the
 * one of the file it replaces, or what a plain fopen would give. Prints
 * and returns 0 on failure. */
static int output_begin(cli_outputs *outs, const char *cmd, const char *flag, const char *path,
                        char **target, unsigned *mode)
{
    if (outs->n == CLI_MAX_OUTPUTS) {
        cli_error(cmd, "%s: too many output files", flag);
        return 0;
    }
    if (!(*target = link_target(path))) {
        cli_error(cmd, "%s %s: cannot create: %s", flag, path, strerror(errno));
        return 0;
    }
    struct stat st;
    if (stat(*target, &st) == 0) {
        *mode = st.st_mode & 0777;
    } else {
        mode_t mask = umask(0);
        umask(mask);
        *mode = 0666 & ~mask;
    }
    return 1;
}

/* Takes the output as the set's next entry, its temporary at tmp. */
static int output_push(cli_outputs *outs, const char *flag, const char *path, char *target,
                       unsigned mode, char *tmp)
{
    int i = outs->n++;
    outs->final_path[i] = path;
    outs->flag[i] = flag;
    outs->target[i] = target;
    outs->tmp_path[i] = tmp;
    outs->pending[i] = NULL;
    outs->mode[i] = mode;
    outs->unnamed_fd[i] = 0;
    return i;
}

/* Writes the output at the set's entry i through write; prints on failure. */
static int output_write(cli_outputs *outs, int i, const char *cmd, cli_write_fn write, void *ctx)
{
    const char *why = write(outs->tmp_path[i], ctx);
    if (why) cli_error(cmd, "%s %s: cannot write: %s", outs->flag[i], outs->final_path[i], why);
    return !why;
}

/* cli_outputs_add_with once output_begin is done. */
static int add_named(cli_outputs *outs, const char *cmd, const char *flag, const char *path,
                     char *target, unsigned mode, cli_write_fn write, void *ctx)
{
    sigset_t old;
    block_exit_signals(&old);
    char *tmp = live_create(cmd, target);
    int err = errno;
    restore_signal_mask(&old);
    if (!tmp) {
        cli_error(cmd, "%s %s: cannot create: %s", flag, path, strerror(err));
        free(target);
        return 0;
    }
    return output_write(outs, output_push(outs, flag, path, target, mode, tmp), cmd, write, ctx);
}

int cli_outputs_add_with(cli_outputs *outs, const char *cmd, const char *flag,
                         const char *path, cli_write_fn write, void *ctx)
{
    char *target;
    unsigned mode;
    if (!output_begin(outs, cmd, flag, path, &target, &mode)) return 0;
    return add_named(outs, cmd, flag, path, target, mode, write, ctx);
}

static const char *write_npy(const char *path, void *ctx)
{
    if (qkv_npy_write(path, ctx) == QKV_OK) return NULL;
    /* The detail starts with the temporary name; keep what follows it. */
    const char *d = qkv_error_detail();
    const char *after = strstr(d, ": ");
    return after ? after + 2 : d;
}

int cli_outputs_add(cli_outputs *outs, const char *cmd, const char *flag, const char *path,
                    const qkv_array *a)
{
    return cli_outputs_add_with(outs, cmd, flag, path, write_npy, (void *)a);
}

typedef struct map_ctx {
    qkv_array *a;
    int pending; /* not mapped: a buffer to write at commit */
} map_ctx;

static const char *create_mapped(const char *path, void *ctx)
{
    map_ctx *m = ctx;
    const qkv_array shape = *m->a;
    qkv_status st = qkv_npy_create(path, shape.dtype, shape.ndim, shape.shape, m->a);
    if (st == QKV_ERR_UNSUPPORTED) {
        const int64_t n = qkv_array_numel(&shape);
        const size_t es = qkv_dtype_size(shape.dtype);
        *m->a = shape;
        if (n < 0 || (uint64_t)n > SIZE_MAX / es || !(m->a->data = qkv_alloc(n ? (size_t)n * es : 1)))
            return "out of memory";
        m->pending = 1;
        return NULL;
    }
    if (st == QKV_OK) return NULL;
    const char *d = qkv_error_detail(); /* starts with the temporary name */
    const char *after = strstr(d, ": ");
    return after ? after + 2 : d;
}

/* An unnamed file in target's directory, open for reading and writing,
 * whose "/proc/self/fd/N" (written to proc_path) opens it again: its
 * descriptor, or -1 where the system, the file system or a missing /proc
 * does not allow that (the caller then names its temporary). */
static int open_unnamed(const char *target, char proc_path[32])
{
#if defined(O_TMPFILE) && defined(__linux__)
    const char *slash = strrchr(target, '/');
    char dir[PATH_MAX];
    if (!slash) {
        memcpy(dir, ".", 2);
    } else {
        size_t len = slash == target ? 1 : (size_t)(slash - target);
        if (len >= sizeof dir) return -1;
        memcpy(dir, target, len);
        dir[len] = '\0';
    }
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return -1; /* EOPNOTSUPP, EISDIR (an older kernel), ... */
    struct stat by_fd, by_path;
    snprintf(proc_path, 32, "/proc/self/fd/%d", fd);
    if (fstat(fd, &by_fd) != 0 || stat(proc_path, &by_path) != 0 ||
        by_fd.st_dev != by_path.st_dev || by_fd.st_ino != by_path.st_ino) {
        close(fd);
        return -1;
    }
    return fd;
#else
    (void)target;
    (void)proc_path;
    return -1;
#endif
}

int cli_outputs_map(cli_outputs *outs, const char *cmd, const char *flag, const char *path,
                    qkv_array *a)
{
    map_ctx m = {a, 0};
    a->data = NULL;
    char *target;
    unsigned mode;
    if (!output_begin(outs, cmd, flag, path, &target, &mode)) return 0;
    int slot = outs->n;
    int fd = open_unnamed(target, outs->fd_path[slot]);
    if (fd < 0) {
        if (!add_named(outs, cmd, flag, path, target, mode, create_mapped, &m)) return 0;
    } else {
        sigset_t old;
        block_exit_signals(&old);
        live_hold(cmd);
        output_push(outs, flag, path, target, mode, outs->fd_path[slot]);
        outs->unnamed_fd[slot] = fd + 1;
        restore_signal_mask(&old);
        if (!output_write(outs, slot, cmd, create_mapped, &m)) return 0;
    }
    outs->pending[slot] = m.pending ? a : NULL;
    return 1;
}

/* cli_outputs_abort with the exit signals already blocked. */
static void abort_blocked(cli_outputs *outs)
{
    for (int i = 0; i < outs->n; i++) {
        if (outs->unnamed_fd[i]) { /* nameless: it goes with its descriptor */
            close(outs->unnamed_fd[i] - 1);
            outs->unnamed_fd[i] = 0;
            live_release();
        } else if (outs->tmp_path[i]) {
            unlink(outs->tmp_path[i]);
            live_forget(outs->tmp_path[i]);
        }
        outs->tmp_path[i] = NULL;
        outs->pending[i] = NULL;
        free(outs->target[i]);
        outs->target[i] = NULL;
    }
    outs->n = 0;
}

void cli_outputs_abort(cli_outputs *outs)
{
    sigset_t old;
    block_exit_signals(&old);
    abort_blocked(outs);
    restore_signal_mask(&old);
}

/* Gives the unnamed temporary of entry i a name in the list of
 * temporaries (where the exit signals' handler finds it), beside its
 * target, and closes it. linkat cannot replace a name, so the name that
 * mkstemp makes is given up just before the link; another program that
 * takes it meanwhile makes this try another. Exit signals are blocked. */
static int link_unnamed(cli_outputs *outs, int i)
{
    for (int tries = 0; tries < 100; tries++) {
        char *slot = slot_create(outs->target[i]);
        if (!slot) return 0;
        unlink(slot);
        if (linkat(AT_FDCWD, outs->fd_path[i], AT_FDCWD, slot, AT_SYMLINK_FOLLOW) == 0) {
            close(outs->unnamed_fd[i] - 1);
            outs->unnamed_fd[i] = 0; /* a named temporary from now on, still counted */
            outs->tmp_path[i] = slot;
            return 1;
        }
        int err = errno;
        slot[0] = '\0';
        errno = err;
        if (err != EEXIST) return 0;
    }
    return 0;
}

int cli_outputs_commit(cli_outputs *outs, const char *cmd)
{
    for (int i = 0; i < outs->n; i++) {
        const char *why = outs->pending[i] ? write_npy(outs->tmp_path[i], outs->pending[i]) : NULL;
        /* The mode only now: a read-only one would have kept the pending
         * write out (a non-root user cannot open a 0444 file to write). */
        if (!why && (outs->unnamed_fd[i] ? fchmod(outs->unnamed_fd[i] - 1, outs->mode[i])
                                         : chmod(outs->tmp_path[i], outs->mode[i])) != 0)
            why = strerror(errno);
        if (why) {
            cli_error(cmd, "%s %s: cannot write: %s", outs->flag[i], outs->final_path[i], why);
            cli_outputs_abort(outs);
            return 0;
        }
    }
    /* No signal between the first rename and the last: all or nothing. */
    sigset_t old;
    block_exit_signals(&old);
    for (int i = 0; i < outs->n; i++) {
        if (outs->unnamed_fd[i] && !link_unnamed(outs, i)) {
            cli_error(cmd, "%s %s: cannot create: %s", outs->flag[i], outs->final_path[i],
                      strerror(errno));
            abort_blocked(outs);
            restore_signal_mask(&old);
            return 0;
        }
    }
    for (int i = 0; i < outs->n; i++) {
        if (rename(outs->tmp_path[i], outs->target[i]) != 0) {
            cli_error(cmd, "%s %s: cannot rename into place: %s", outs->flag[i],
                      outs->final_path[i], strerror(errno));
            /* Take back the files already renamed. */
            for (int j = 0; j < i; j++) unlink(outs->target[j]);
            abort_blocked(outs);
            restore_signal_mask(&old);
            return 0;
        }
        live_forget(outs->tmp_path[i]);
        outs->tmp_path[i] = NULL;
    }
    abort_blocked(outs); /* frees the targets; no temporary is left */
    restore_signal_mask(&old);
    return 1;
}

/* dirname's realpath + "/" + basename, so that "d/o.npy" and "d/./o.npy"
 * compare equal; the path itself when the directory cannot be resolved. */
static char *canonical_output(const char *path)
{
    size_t len = strlen(path);
    char *d = malloc(len + 1), *b = malloc(len + 1), *out = NULL;
    if (d && b) {
        memcpy(d, path, len + 1);
        memcpy(b, path, len + 1);
        char *dir = realpath(dirname(d), NULL);
        const char *base = basename(b);
        if (dir && (out = malloc(strlen(dir) + strlen(base) + 2)))
            sprintf(out, "%s/%s", dir, base);
        free(dir);
    }
    free(d);
    free(b);
    if (!out && (out = malloc(len + 1))) memcpy(out, path, len + 1);
    return out;
}

/* Do a and b name one file, once their links are followed? */
static int same_file(const char *a, const char *b)
{
    char *ta = link_target(a), *tb = link_target(b);
    const char *ra = ta ? ta : a, *rb = tb ? tb : b;
    struct stat sa, sb;
    int same;
    if (stat(ra, &sa) == 0 && stat(rb, &sb) == 0) {
        same = sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    } else {
        char *ca = canonical_output(ra), *cb = canonical_output(rb);
        same = ca && cb ? strcmp(ca, cb) == 0 : strcmp(ra, rb) == 0;
        free(ca);
        free(cb);
    }
    free(ta);
    free(tb);
    return same;
}

int cli_check_output_paths(const char *cmd, int n, const char *const flags[],
                           const char *const paths[])
{
    for (int i = 0; i < n; i++) {
        if (!paths[i]) continue;
        if (!*paths[i]) {
            cli_error(cmd, "%s: empty file name", flags[i]);
            return CLI_USAGE;
        }
        for (int j = i + 1; j < n; j++)
            if (paths[j] && *paths[j] && same_file(paths[i], paths[j])) {
                cli_error(cmd, "%s and %s name the same file '%s'", flags[i], flags[j], paths[i]);
                return CLI_USAGE;
            }
    }
    for (int i = 0; i < n; i++) {
        if (!paths[i]) continue;
        struct stat st;
        char *t = link_target(paths[i]);
        if (!t) {
            cli_error(cmd, "%s %s: %s", flags[i], paths[i], strerror(errno));
            return CLI_ERROR;
        }
        int bad = stat(t, &st) == 0 && !S_ISREG(st.st_mode);
        free(t);
        if (bad) {
            cli_error(cmd, "%s %s: exists and is not a regular file", flags[i], paths[i]);
            return CLI_ERROR;
        }
    }
    return CLI_OK;
}

void cli_format_shape(char *buf, size_t len, const qkv_array *a)
{
    size_t used = (size_t)snprintf(buf, len, "(");
    for (int d = 0; d < a->ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", d ? ", " : "",
                                 (long long)a->shape[d]);
    if (used < len) snprintf(buf + used, len - used, a->ndim == 1 ? ",)" : ")");
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress_init(cli_progress *p, const char *cmd, const char *what)
{
    p->cmd = cmd;
    p->what = what;
    p->start = now_seconds();
    p->enabled = isatty(STDERR_FILENO);
    p->shown = 0;
    p->last_percent = -1;
}

void cli_progress_update(void *user, double done)
{
    cli_progress *p = user;
    if (!p->enabled) return;
    double elapsed = now_seconds() - p->start;
    int percent = (int)(done * 100.0);
    if (elapsed < CLI_PROGRESS_AFTER || percent == p->last_percent) return;
    p->last_percent = percent;
    p->shown = 1;
    fprintf(stderr, "\rqkv %s: %s %3d%% (%.1f s)", p->cmd, p->what, percent, elapsed);
    fflush(stderr);
}

void cli_progress_done(cli_progress *p)
{
    if (p->shown) {
        fputs("\r\033[K", stderr); /* erase the line: errors and warnings start clean */
        fflush(stderr);
    }
    p->shown = 0;
}

/* The value of option `name` at argv[*i] ("--name=VALUE" when eq, else
 * the next argument); NULL after printing the usage error. */
static const char *option_value(const char *cmd, int argc, char **argv, int *i, const char *eq,
                                const char *name, int empty_ok)
{
    const char *v;
    if (eq) {
        v = eq + 1;
    } else if (*i + 1 < argc) {
        v = argv[++*i];
    } else {
        cli_error(cmd, "%s needs a value (see 'qkv %s --help')", name, cmd);
        return NULL;
    }
    if (!*v && !empty_ok) {
        cli_error(cmd, "%s: empty value", name);
        return NULL;
    }
    return v;
}

int cli_parse_args(const char *cmd, int argc, char **argv, const cli_opt *opts, int nopts,
                   const char **positional)
{
    return cli_parse_args_lists(cmd, argc, argv, opts, nopts, NULL, 0, positional);
}

int cli_parse_args_lists(const char *cmd, int argc, char **argv, const cli_opt *opts, int nopts,
                         const cli_list *lists, int nlists, const char **positional)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) return -1;
        if (positional && (arg[0] != '-' || arg[1] == '\0')) {
            if (*positional) {
                cli_error(cmd, "one input only: '%s' and '%s'", *positional, arg);
                return CLI_USAGE;
            }
            *positional = arg;
            continue;
        }
        const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
        const size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        const cli_opt *o = NULL;
        const cli_list *l = NULL;
        for (int k = 0; k < nopts && !o; k++)
            if (strlen(opts[k].name) == nlen && strncmp(arg, opts[k].name, nlen) == 0) o = &opts[k];
        for (int k = 0; k < nlists && !o && !l; k++)
            if (strlen(lists[k].name) == nlen && strncmp(arg, lists[k].name, nlen) == 0)
                l = &lists[k];
        if (!o && !l) {
            cli_error(cmd, "unknown argument '%s' (see 'qkv %s --help')", arg, cmd);
            return CLI_USAGE;
        }
        if (l) {
            const char *v = option_value(cmd, argc, argv, &i, eq, l->name, 0);
            if (!v) return CLI_USAGE;
            if (*l->count == l->max) {
                cli_error(cmd, "%s: at most %d of them", l->name, l->max);
                return CLI_USAGE;
            }
            l->values[(*l->count)++] = v;
            continue;
        }
        if (o->flag) {
            if (eq) {
                cli_error(cmd, "%s takes no value", o->name);
                return CLI_USAGE;
            }
            if (*o->flag) {
                cli_error(cmd, "%s given twice", o->name);
                return CLI_USAGE;
            }
            *o->flag = 1;
            continue;
        }
        if (*o->value) {
            cli_error(cmd, "%s given twice", o->name);
            return CLI_USAGE;
        }
        if (!(*o->value = option_value(cmd, argc, argv, &i, eq, o->name, o->empty_ok)))
            return CLI_USAGE;
    }
    return CLI_OK;
}
