/* How qkv treats what it writes, run as a child process:
 *   - a signal (SIGINT, SIGTERM, SIGHUP) while outputs are written: exit 1,
 *     one line, no temporary left, existing outputs unchanged; the same for
 *     a file size limit (RLIMIT_FSIZE) that a write runs into;
 *   - standard output that cannot be written (/dev/full): exit 1, one line,
 *     for every subcommand's help, --version, explain and bench;
 *   - an output that replaces a file keeps the file's permission bits, and
 *     one named by a symbolic link (also a dangling one, or a chain) is
 *     written to the link's target, the link left as it was. */
#include "test.h"
#include "util.h"
#include "cmdtest.h"

#include "qkv.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char old_bytes[] = "the old contents, not an .npy file\n";

/* Is the file at path exactly old_bytes? */
static int holds_old(const char *path)
{
    size_t len = 0;
    char *b = slurp(path, &len);
    int same = b && len == sizeof old_bytes - 1 && memcmp(b, old_bytes, len) == 0;
    free(b);
    return same;
}

/* Q, K, V of (L, 2), (L, 2), (L, 1) as "@qL.npy", "@kL.npy", "@vL.npy". */
static void write_qkv(int64_t L)
{
    test_rng rng = test_rng_seed((uint64_t)L);
    float *q = test_rand_f32(&rng, 2 * L, -1, 1), *k = test_rand_f32(&rng, 2 * L, -1, 1),
          *v = test_rand_f32(&rng, L, -1, 1);
    char name[64];
    snprintf(name, sizeof name, "q%lld.npy", (long long)L);
    W(name, QKV_DTYPE_F32, q, L, 2);
    snprintf(name, sizeof name, "k%lld.npy", (long long)L);
    W(name, QKV_DTYPE_F32, k, L, 2);
    snprintf(name, sizeof name, "v%lld.npy", (long long)L);
    W(name, QKV_DTYPE_F32, v, L, 1);
    free(q);
    free(k);
    free(v);
}

/* The size of the first temporary of `prefix` in the output directory, -1
 * when there is none. */
static long long tmp_size(const char *prefix)
{
    long long size = -1;
    DIR *d = opendir(g_out);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (test_starts_with(e->d_name, prefix) && strstr(e->d_name, ".tmp-")) {
            struct stat sb;
            if (stat(out_path(e->d_name), &sb) == 0) size = (long long)sb.st_size;
            break;
        }
    if (d) closedir(d);
    return size;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs `qkv run` with a --weights output of L x L floats and, once the
 * child is caught (stopped) while that file is half written, sends it sig.
 * Returns 1 when the signal landed in the write phase, 0 when the child
 * got past it first (it finished before we looked: try a larger L). With
 * threads > 1 the library's workers live on while the outputs are
 * written, and a signal may land on one of them. */
static int signal_while_writing(int64_t L, int sig, const char *threads)
{
    char q[64], k[64], v[64];
    snprintf(q, sizeof q, "@q%lld.npy", (long long)L);
    snprintf(k, sizeof k, "@k%lld.npy", (long long)L);
    snprintf(v, sizeof v, "@v%lld.npy", (long long)L);
    int pid = start_qkv((const char *const[]){"run", "-q", q, "-k", k, "-v", v, "-o",
                                              "%o.npy", "--weights", "%w.npy", "--threads",
                                              threads, NULL},
                        NULL, 0);
    int landed = 0, status;
    /* Bounded: the temporary appears before the computation (`qkv run`
     * computes into it) or after it (well under a minute even on a loaded
     * machine). */
    for (int waited = 0; waited < 120000; waited++) {
        if (waitpid(pid, &status, WNOHANG) == pid) { /* it finished first */
            g_rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            return 0;
        }
        if (tmp_size("w.npy") < 0) {
            sleep_ms(1);
            continue;
        }
        /* Freeze it, then look: a temporary still there means the child
         * has not committed. (`qkv run` creates its outputs at full size
         * before computing into them, mapped; other commands write theirs
         * after: either way, the temporary exists until the rename.) */
        kill(pid, SIGSTOP);
        if (waitpid(pid, &status, WUNTRACED) != pid || !WIFSTOPPED(status)) {
            g_rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            return 0;
        }
        long long size = tmp_size("w.npy");
        landed = size >= 0;
        if (landed) kill(pid, sig);
        kill(pid, SIGCONT);
        break;
    }
    wait_qkv(pid);
    if (!landed) clear_out(NULL, 0);
    return landed;
}

static void test_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    static const int64_t sizes[] = {2048, 4096, 8192}; /* weights of 16, 64, 256 MiB */
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) write_qkv(sizes[s]);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        static char ctx[96];
        snprintf(ctx, sizeof ctx, "signal %s while --weights is written", strsignal(sigs[i]));
        set_ctx(ctx);
        int landed = 0;
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0] && !landed; s++) {
            write_bytes(out_path("o.npy"), old_bytes, sizeof old_bytes - 1);
            write_bytes(out_path("w.npy"), old_bytes, sizeof old_bytes - 1);
            landed = signal_while_writing(sizes[s], sigs[i], i == 0 ? "1" : "2");
        }
        EXPECT(landed); /* a 256 MiB file written before we could stop it: unlikely */
        if (!landed) continue;
        EXPECT(g_rc == 1);
        EXPECT(one_line(g_stderr));
        EXPECT(test_starts_with(g_stderr, "qkv run: "));
        EXPECT(holds_old(out_path("o.npy")));
        EXPECT(holds_old(out_path("w.npy")));
        expect_out_files(2); /* o.npy and w.npy, no temporary */
    }
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        char name[64];
        snprintf(name, sizeof name, "q%lld.npy", (long long)sizes[s]);
        unlink(in_path(name));
        snprintf(name, sizeof name, "k%lld.npy", (long long)sizes[s]);
        unlink(in_path(name));
        snprintf(name, sizeof name, "v%lld.npy", (long long)sizes[s]);
        unlink(in_path(name));
    }
}

/* A file size limit that the --weights file (4 MiB) passes: no SIGXFSZ
 * death but the write's own error, EFBIG, on one line. */
static void test_file_size_limit(void)
{
    set_ctx("RLIMIT_FSIZE of 1 MiB under a 4 MiB --weights");
    write_qkv(1024);
    write_bytes(out_path("o.npy"), old_bytes, sizeof old_bytes - 1);
    write_bytes(out_path("w.npy"), old_bytes, sizeof old_bytes - 1);
    wait_qkv(start_qkv((const char *const[]){"run", "-q", "@q1024.npy", "-k", "@k1024.npy", "-v",
                                             "@v1024.npy", "-o", "%o.npy", "--weights",
                                             "%w.npy", NULL},
                       NULL, 1 << 20));
    EXPECT(g_rc == 1);
    EXPECT(one_line(g_stderr));
    EXPECT(strstr(g_stderr, "--weights") != NULL);
    EXPECT(strstr(g_stderr, strerror(EFBIG)) != NULL);
    EXPECT(holds_old(out_path("o.npy")));
    EXPECT(holds_old(out_path("w.npy")));
    expect_out_files(2);
}

/* Standard output on a full device: exit 1 and one line that says so,
 * whichever command wrote to it. */
static void test_stdout_errors(void)
{
    static const char *const cases[][10] = {
        {"--help"},
        {"--version"},
        {"run", "--help"},
        {"grad", "--help"},
        {"mha", "--help"},
        {"explain", "--help"},
        {"bench", "--help"},
        {"heatmap", "--help"},
        {"explain"},
        {"bench", "--shape", "1,1,1,4,4,4", "--threads", "1", "--json"},
    };
    char want[128];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        static char ctx[128];
        snprintf(ctx, sizeof ctx, "qkv %s %s > /dev/full", cases[c][0],
                 cases[c][1] ? cases[c][1] : "");
        set_ctx(ctx);
        const char *args[11] = {NULL};
        for (int i = 0; i < 10 && cases[c][i]; i++) args[i] = cases[c][i];
        run_to("/dev/full", args);
        EXPECT(g_rc == 1);
        EXPECT(one_line(g_stderr));
        if (cases[c][0][0] == '-')
            snprintf(want, sizeof want, "qkv: standard output: ");
        else
            snprintf(want, sizeof want, "qkv %s: standard output: ", cases[c][0]);
        EXPECT(test_starts_with(g_stderr, want));
        /* The reason, unless the command's own fflush met the error (bench
         * does, after each case) and its errno is gone by the end. */
        if (strcmp(cases[c][0], "bench") != 0 || strcmp(cases[c][1], "--help") == 0)
            EXPECT(strstr(g_stderr, strerror(ENOSPC)) != NULL);
    }
    set_ctx("qkv --version to a file");
    const char *file = in_path("version.txt");
    EXPECT_OK(RUN_TO(file, "--version"));
    char *text = slurp(file, NULL);
    EXPECT(text && strstr(text, qkv_version_string()) && one_line(text));
    free(text);
    unlink(file);
}

static mode_t mode_of(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_mode & 07777 : (mode_t)-1;
}

/* An .npy of (3, 1): what `qkv run` on the (3, 2) inputs writes. */
static int is_output(const char *path)
{
    qkv_array a;
    if (qkv_npy_read(path, &a) != QKV_OK) return 0;
    int ok = test_same_shape(&a, 2, (int64_t[]){3, 1}) && a.dtype == QKV_DTYPE_F32;
    qkv_array_free(&a);
    return ok;
}

#define QKV3 "-q", "@q3.npy", "-k", "@k3.npy", "-v", "@v3.npy"

static void test_modes(void)
{
    write_qkv(3);
    static const mode_t modes[] = {0600, 0640, 0604, 0444, 0755};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        static char ctx[64];
        snprintf(ctx, sizeof ctx, "an existing %04o -o and --weights keep their mode",
                 (unsigned)modes[m]);
        set_ctx(ctx);
        write_bytes(out_path("o.npy"), old_bytes, sizeof old_bytes - 1);
        write_bytes(out_path("w.npy"), old_bytes, sizeof old_bytes - 1);
        EXPECT(chmod(out_path("o.npy"), modes[m]) == 0 && chmod(out_path("w.npy"), modes[m]) == 0);
        EXPECT_OK(RUN("run", QKV3, "-o", "%o.npy", "--weights", "%w.npy"));
        EXPECT(is_output(out_path("o.npy")));
        EXPECT(mode_of(out_path("o.npy")) == modes[m]);
        EXPECT(mode_of(out_path("w.npy")) == modes[m]);
        expect_out_files(2);
    }
    set_ctx("a new output gets 0666 less the umask (022 here)");
    EXPECT_OK(RUN("run", QKV3, "-o", "%o.npy"));
    EXPECT(mode_of(out_path("o.npy")) == 0644);
    expect_out_files(1);
}

/* Is path a symbolic link to exactly `to`? */
static int links_to(const char *path, const char *to)
{
    char buf[4096];
    ssize_t n = readlink(path, buf, sizeof buf - 1);
    if (n < 0) return 0;
    buf[n] = '\0';
    return strcmp(buf, to) == 0;
}

static void test_symlinks(void)
{
    set_ctx("-o a symbolic link to an existing 0600 file in another directory");
    EXPECT(mkdir(out_path("dir"), 0700) == 0);
    write_bytes(out_path("dir/real.npy"), old_bytes, sizeof old_bytes - 1);
    EXPECT(chmod(out_path("dir/real.npy"), 0600) == 0);
    EXPECT(symlink("dir/real.npy", out_path("link.npy")) == 0);
    EXPECT_OK(RUN("run", QKV3, "-o", "%link.npy"));
    EXPECT(links_to(out_path("link.npy"), "dir/real.npy"));
    EXPECT(is_output(out_path("dir/real.npy")));
    EXPECT(mode_of(out_path("dir/real.npy")) == 0600);
    EXPECT(out_tmp_count() == 0);
    unlink(out_path("dir/real.npy"));
    rmdir(out_path("dir"));
    expect_out_files(1); /* link.npy, dangling now */

    set_ctx("-o a dangling link, through a chain of two");
    EXPECT(symlink("new.npy", out_path("first.npy")) == 0);
    EXPECT(symlink("first.npy", out_path("second.npy")) == 0);
    EXPECT_OK(RUN("run", QKV3, "-o", "%second.npy"));
    EXPECT(links_to(out_path("second.npy"), "first.npy"));
    EXPECT(links_to(out_path("first.npy"), "new.npy"));
    EXPECT(is_output(out_path("new.npy")));
    EXPECT(mode_of(out_path("new.npy")) == 0644);
    expect_out_files(3);

    set_ctx("a link and its target as two outputs");
    write_bytes(out_path("real.npy"), old_bytes, sizeof old_bytes - 1);
    EXPECT(symlink("real.npy", out_path("link.npy")) == 0);
    EXPECT(RUN("run", QKV3, "-o", "%link.npy", "--weights", "%real.npy") == 2);
    EXPECT(one_line(g_stderr));
    EXPECT(holds_old(out_path("real.npy")));
    unlink(out_path("real.npy"));
    set_ctx("a dangling link and its target as two outputs");
    EXPECT(RUN("run", QKV3, "-o", "%link.npy", "--weights", "%real.npy") == 2);
    EXPECT(one_line(g_stderr));
    EXPECT(!exists(out_path("real.npy")));
    expect_out_files(1);

    set_ctx("a failed run leaves a link's target as it was");
    write_bytes(out_path("real.npy"), old_bytes, sizeof old_bytes - 1);
    EXPECT(symlink("real.npy", out_path("link.npy")) == 0);
    EXPECT(RUN("run", QKV3, "-o", "%link.npy", "--lse", "%nodir/l.npy") == 1);
    EXPECT(one_line(g_stderr));
    EXPECT(links_to(out_path("link.npy"), "real.npy"));
    EXPECT(holds_old(out_path("real.npy")));
    expect_out_files(2);

    set_ctx("a link to a directory is refused like a directory");
    EXPECT(mkdir(out_path("dir"), 0700) == 0);
    EXPECT(symlink("dir", out_path("link.npy")) == 0);
    EXPECT(RUN("run", QKV3, "-o", "%link.npy") == 1);
    EXPECT(one_line(g_stderr));
    expect_out_files(2);

    set_ctx("a loop of links");
    EXPECT(symlink("b.npy", out_path("a.npy")) == 0);
    EXPECT(symlink("a.npy", out_path("b.npy")) == 0);
    EXPECT(RUN("run", QKV3, "-o", "%a.npy") == 1);
    EXPECT(one_line(g_stderr));
    EXPECT(strstr(g_stderr, "-o") != NULL);
    EXPECT(links_to(out_path("a.npy"), "b.npy") && links_to(out_path("b.npy"), "a.npy"));
    expect_out_files(2);
}

int main(void)
{
    umask(022); /* the modes below assume it */
    cmdtest_open();
    test_stdout_errors();
    test_modes();
    test_symlinks();
    test_file_size_limit();
    test_signals();
    cmdtest_close();
    return test_finish("test_cli_output");
}
