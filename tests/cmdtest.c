/* The command-test harness declared in cmdtest.h: the state of the tests
 * that run the qkv binary (test_cli, test_heatmap), argument expansion,
 * running qkv, and the fixture and output-directory helpers. Linked into
 * every test program; unused by those that do not include cmdtest.h. */
#include "cmdtest.h"

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char *g_in;
char g_out[4096];
static char *out_dir; /* g_out's allocation, for test_rmdir */

void cmdtest_open(void)
{
    g_in = test_tmpdir();
    out_dir = test_tmpdir();
    fmt(g_out, sizeof g_out, "%s", out_dir);
}

void cmdtest_close(void)
{
    clear_out(NULL, 0);
    test_rmdir(g_in);
    test_rmdir(out_dir);
    g_in = out_dir = NULL;
    g_out[0] = '\0';
}
const char *g_ctx = "";

char g_cmd[8192];
int g_rc;
char g_stdout[16384];
char g_stderr[8192];

void fmt(char *dst, size_t len, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(dst, len, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len) {
        fprintf(stderr, "test: string too long: %s...\n", dst);
        exit(2);
    }
}

void set_ctx(const char *ctx)
{
    g_ctx = ctx;
    g_cmd[0] = '\0';
}

const char *pjoin(const char *dir, const char *name)
{
    static char bufs[32][4096];
    static int next;
    char *b = bufs[next++ % 32];
    fmt(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}
const char *in_path(const char *name) { return pjoin(g_in, name); }
const char *out_path(const char *name) { return pjoin(g_out, name); }

void expand(const char *arg, char *dst, size_t len)
{
    const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
    const char *val = eq ? eq + 1 : arg;
    int pre = (int)(val - arg);
    if (val[0] == '@')
        fmt(dst, len, "%.*s%s/%s", pre, arg, g_in, val + 1);
    else if (val[0] == '%')
        fmt(dst, len, "%.*s%s/%s", pre, arg, g_out, val + 1);
    else
        fmt(dst, len, "%s", arg);
}

/* argv for qkv from args (each expanded into pool), recorded in g_cmd. */
static void build_argv(const char *const *args, char *argv[66], char pool[64][4096])
{
    int n = 0;
    size_t used = 0;
    argv[n++] = "qkv";
    used += (size_t)snprintf(g_cmd, sizeof g_cmd, "qkv");
    for (; args[n - 1] && n < 65; n++) {
        expand(args[n - 1], pool[n - 1], 4096);
        argv[n] = pool[n - 1];
        if (used < sizeof g_cmd)
            used += (size_t)snprintf(g_cmd + used, sizeof g_cmd - used, " '%s'", argv[n]);
    }
    argv[n] = NULL;
}

int run_args(const char *const *args)
{
    static char pool[64][4096];
    char *argv[66];
    build_argv(args, argv, pool);
    g_rc = test_run_qkv(argv, g_stdout, sizeof g_stdout, g_stderr, sizeof g_stderr);
    return g_rc;
}

/* Where a started child's stderr goes: beside the inputs, so that the
 * output directory holds only what qkv wrote. */
static const char *stderr_file(void) { return in_path("qkv-stderr.txt"); }

int start_qkv(const char *const *args, const char *stdout_path, long long fsize)
{
    static char pool[64][4096];
    char *argv[66];
    build_argv(args, argv, pool);
    const char *err_path = stderr_file();
    fflush(NULL); /* the child must not write our buffered output again */
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "test: fork: %s\n", strerror(errno));
        exit(2);
    }
    if (pid == 0) {
        int out = open(stdout_path ? stdout_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0666);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        if (out < 0 || err < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(127);
        close(out);
        close(err);
        if (fsize > 0) {
            struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(127);
        }
        argv[0] = (char *)QKV_BIN;
        execv(QKV_BIN, argv);
        _exit(127);
    }
    return (int)pid;
}

int wait_qkv(int pid)
{
    int status;
    while (waitpid((pid_t)pid, &status, 0) < 0)
        if (errno != EINTR) {
            fprintf(stderr, "test: waitpid: %s\n", strerror(errno));
            exit(2);
        }
    g_rc = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    g_stdout[0] = '\0';
    size_t len = 0;
    char *e = slurp(stderr_file(), &len);
    fmt(g_stderr, sizeof g_stderr, "%.*s", (int)(len < sizeof g_stderr - 1 ? len : sizeof g_stderr - 1),
        e ? e : "");
    free(e);
    unlink(stderr_file());
    return g_rc;
}

int run_to(const char *stdout_path, const char *const *args)
{
    return wait_qkv(start_qkv(args, stdout_path, 0));
}

int one_line(const char *s)
{
    size_t n = strlen(s);
    if (n < 2 || s[n - 1] != '\n') return 0;
    return strchr(s, '\n') == s + n - 1;
}

void write_array(const char *path, qkv_dtype dt, int ndim, const int64_t *shape,
                 const void *data)
{
    qkv_array a;
    memset(&a, 0, sizeof a);
    a.data = (void *)data;
    a.dtype = dt;
    a.ndim = ndim;
    for (int d = 0; d < ndim; d++) a.shape[d] = shape[d];
    if (qkv_npy_write(path, &a) != QKV_OK) {
        fprintf(stderr, "test: cannot write fixture %s: %s\n", path, qkv_error_detail());
        exit(2);
    }
}

void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        fprintf(stderr, "test: cannot write %s\n", path);
        exit(2);
    }
}

char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = test_malloc(cap);
    for (;;) {
        n += fread(b + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        cap *= 2;
        char *nb = realloc(b, cap);
        if (!nb) {
            free(b);
            fclose(f);
            return NULL;
        }
        b = nb;
    }
    fclose(f);
    b[n] = '\0';
    if (len) *len = n;
    return b;
}

int clear_out(char *names, size_t len)
{
    int n = 0;
    size_t used = 0;
    if (names && len) names[0] = '\0';
    DIR *d = opendir(g_out);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        n++;
        if (names && used < len)
            used += (size_t)snprintf(names + used, len - used, " %s", e->d_name);
        const char *p = out_path(e->d_name);
        if (unlink(p) != 0) rmdir(p);
    }
    closedir(d);
    return n;
}

void put_old(const char *path) { write_bytes(path, OLD_BYTES, sizeof OLD_BYTES - 1); }

int holds_old(const char *path)
{
    size_t len = 0;
    char *b = slurp(path, &len);
    int same = b && len == sizeof OLD_BYTES - 1 && memcmp(b, OLD_BYTES, len) == 0;
    free(b);
    return same;
}

void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The code a reaped child's status gives, as wait_qkv counts it. */
static int status_code(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int maps_output(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    char *maps = slurp(path, NULL);
    char dir[4200];
    fmt(dir, sizeof dir, "%s/", g_out);
    int found = maps && strstr(maps, dir) != NULL;
    free(maps);
    return found;
}

int wait_mapping_outputs(int pid, long max_ms)
{
    int status;
    for (long waited = 0; waited < max_ms; waited++) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            g_rc = status_code(status);
            return 0;
        }
        if (maps_output(pid)) return 1;
        sleep_ms(1);
    }
    return -1;
}

int stop_child(int pid)
{
    int status;
    kill(pid, SIGSTOP);
    if (waitpid(pid, &status, WUNTRACED) != pid || !WIFSTOPPED(status)) {
        g_rc = status_code(status);
        return 0;
    }
    return 1;
}

int out_tmp_count(void)
{
    int tmp = 0;
    DIR *d = opendir(g_out);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strstr(e->d_name, ".tmp-")) tmp++;
        closedir(d);
    }
    return tmp;
}

int exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

void cmdtest_children_skip_leak_check(void)
{
    char opts[2048];
    const char *old = getenv("ASAN_OPTIONS");
    snprintf(opts, sizeof opts, "%s%sdetect_leaks=0", old ? old : "", old && *old ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1); /* read only by sanitized children */
}
