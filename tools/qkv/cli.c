/* Shared CLI helpers; see cli.h. */
#define _XOPEN_SOURCE 700 /* realpath; before any header */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
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

int cli_load_f32(const char *cmd, const char *flag, const char *path, int keep_bool,
                 qkv_array *out)
{
    qkv_array raw;
    if (qkv_npy_read(path, &raw) != QKV_OK) {
        cli_error(cmd, "%s %s", flag, qkv_error_detail()); /* detail starts "PATH: " */
        return 0;
    }
    if (raw.dtype == QKV_DTYPE_F32 || (keep_bool && raw.dtype == QKV_DTYPE_BOOL)) {
        *out = raw;
        return 1;
    }
    if (raw.dtype != QKV_DTYPE_F64 && raw.dtype != QKV_DTYPE_F16) {
        cli_error(cmd, "%s %s: dtype %s, expected %sfloat32, float64 or float16", flag, path,
                  qkv_dtype_name(raw.dtype), keep_bool ? "bool, " : "");
        qkv_array_free(&raw);
        return 0;
    }
    qkv_status st = qkv_array_convert(out, &raw, QKV_DTYPE_F32);
    qkv_array_free(&raw);
    if (st != QKV_OK) {
        cli_error(cmd, "%s %s: %s", flag, path, qkv_error_detail());
        return 0;
    }
    return 1;
}

int64_t cli_count_nonfinite(const qkv_array *a, int count_inf)
{
    const float *x = a->data;
    int64_t n = qkv_array_numel(a), bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (isnan(x[i]) || (count_inf && isinf(x[i]))) bad++;
    return bad;
}

void cli_warn_nonfinite(const char *cmd, const char *flag, const char *path, const qkv_array *a,
                        int count_inf)
{
    int64_t bad = a->data && a->dtype == QKV_DTYPE_F32 ? cli_count_nonfinite(a, count_inf) : 0;
    if (bad)
        fprintf(stderr,
                "qkv %s: warning: %s %s holds %lld %s value%s; output rows that read them "
                "may be NaN\n",
                cmd, flag, path, (long long)bad, count_inf ? "NaN or infinite" : "NaN",
                bad == 1 ? "" : "s");
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

int cli_outputs_add_with(cli_outputs *outs, const char *cmd, const char *flag,
                         const char *path, cli_write_fn write, void *ctx)
{
    if (outs->n == CLI_MAX_OUTPUTS) {
        cli_error(cmd, "%s: too many output files", flag);
        return 0;
    }
    size_t len = strlen(path);
    char *tmp = malloc(len + 16);
    if (!tmp) {
        cli_error(cmd, "%s: out of memory", flag);
        return 0;
    }
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp-XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        cli_error(cmd, "%s %s: cannot create: %s", flag, path, strerror(errno));
        free(tmp);
        return 0;
    }
    /* mkstemp makes the file 0600; give it the mode a plain fopen would. */
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    close(fd);
    int i = outs->n++;
    outs->final_path[i] = path;
    outs->flag[i] = flag;
    outs->tmp_path[i] = tmp;
    const char *why = write(tmp, ctx);
    if (why) {
        cli_error(cmd, "%s %s: cannot write: %s", flag, path, why);
        return 0;
    }
    return 1;
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

void cli_outputs_abort(cli_outputs *outs)
{
    for (int i = 0; i < outs->n; i++) {
        if (outs->tmp_path[i]) unlink(outs->tmp_path[i]);
        free(outs->tmp_path[i]);
        outs->tmp_path[i] = NULL;
    }
    outs->n = 0;
}

int cli_outputs_commit(cli_outputs *outs, const char *cmd)
{
    for (int i = 0; i < outs->n; i++) {
        if (rename(outs->tmp_path[i], outs->final_path[i]) != 0) {
            cli_error(cmd, "%s %s: cannot rename into place: %s", outs->flag[i],
                      outs->final_path[i], strerror(errno));
            /* All or nothing: take back the files already renamed. */
            for (int j = 0; j < i; j++) unlink(outs->final_path[j]);
            cli_outputs_abort(outs);
            return 0;
        }
        free(outs->tmp_path[i]);
        outs->tmp_path[i] = NULL;
    }
    outs->n = 0;
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

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0)
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char *ca = canonical_output(a), *cb = canonical_output(b);
    int same = ca && cb ? strcmp(ca, cb) == 0 : strcmp(a, b) == 0;
    free(ca);
    free(cb);
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
        struct stat st;
        if (paths[i] && stat(paths[i], &st) == 0 && !S_ISREG(st.st_mode)) {
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

int cli_parse_args(const char *cmd, int argc, char **argv, const cli_opt *opts, int nopts,
                   const char **positional)
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
        for (int k = 0; k < nopts && !o; k++)
            if (strlen(opts[k].name) == nlen && strncmp(arg, opts[k].name, nlen) == 0) o = &opts[k];
        if (!o) {
            cli_error(cmd, "unknown argument '%s' (see 'qkv %s --help')", arg, cmd);
            return CLI_USAGE;
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
        if (eq) {
            *o->value = eq + 1;
        } else if (i + 1 < argc) {
            *o->value = argv[++i];
        } else {
            cli_error(cmd, "%s needs a value (see 'qkv %s --help')", o->name, cmd);
            return CLI_USAGE;
        }
        if (!**o->value && !o->empty_ok) {
            cli_error(cmd, "%s: empty value", o->name);
            return CLI_USAGE;
        }
    }
    return CLI_OK;
}
