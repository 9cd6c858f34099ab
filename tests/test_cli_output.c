/* How qkv treats what it writes, run as a child process:
 *   - a signal (SIGINT, SIGTERM, SIGHUP) while outputs are written: exit 1,
 *     one line, no temporary left, existing outputs unchanged; the same for
 *     a file size limit (RLIMIT_FSIZE) that a write runs into;
 *   - standard output that cannot be written (/dev/full): exit 1, one line,
 *     for every subcommand's help, --version, explain and bench;
 *   - an output that replaces a file keeps the file's permission bits, and
 *     one named by a symbolic link (also a dangling one, or a chain) is
 *     written to the link's target, the link left as it was;
 *   - inputs are mapped: one truncated while `qkv run` reads it is one line
 *     about a bus error, exit 1, no temporary left, an existing output
 *     unchanged; and inputs that are FIFOs (read, not mapped) give run,
 *     grad and mha the outputs that regular files give, and PyTorch's. */
#include "test.h"
#include "util.h"
#include "cmdtest.h"
#include "stream.h"

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
    /* Bounded: the outputs are mapped before the computation, which
     * `qkv run` does into them (well under a minute even on a loaded
     * machine). Freeze it, then look: the old o.npy still there means the
     * child has not committed (its outputs are unnamed until the renames). */
    int landed = 0;
    const int mapped = wait_mapping_outputs(pid, 120000);
    if (mapped == 0 || (mapped == 1 && !stop_child(pid))) return 0; /* it finished first */
    if (mapped == 1) {
        landed = holds_old(out_path("o.npy"));
        if (landed) kill(pid, sig);
        kill(pid, SIGCONT);
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
            put_old(out_path("o.npy"));
            put_old(out_path("w.npy"));
            landed = signal_while_writing(sizes[s], sigs[i], i == 0 ? "1" : "2");
        }
        EXPECT(landed); /* a 256 MiB file written before we could stop it: unlikely */
        if (!landed) continue;
        if (g_rc == 128 + sigs[i]) {
            /* Stopped inside the commit, whose renames hold the signal
             * back: it acts once both outputs are in place (a window of
             * microseconds; the README's contract for it). */
            EXPECT(!holds_old(out_path("o.npy")));
            EXPECT(!holds_old(out_path("w.npy")));
            expect_out_files(2);
            continue;
        }
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
    put_old(out_path("o.npy"));
    put_old(out_path("w.npy"));
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
        put_old(out_path("o.npy"));
        put_old(out_path("w.npy"));
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
    put_old(out_path("dir/real.npy"));
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
    put_old(out_path("real.npy"));
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
    put_old(out_path("real.npy"));
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

/* ----------------------------------------------------- mapped inputs */

static const char bus_line[] = "qkv run: bus error: a mapped input or output file could not be read or written (did an input shrink while qkv read it, or the disk fill?); no output written\n";

/* Q, K, V of (8, L, 64) as "@bq.npy", "@bk.npy", "@bv.npy". */
static void write_bus_inputs(int64_t L)
{
    test_rng rng = test_rng_seed(77);
    float *x = test_rand_f32(&rng, 8 * L * 64, -1, 1);
    W("bq.npy", QKV_DTYPE_F32, x, 8, L, 64);
    W("bk.npy", QKV_DTYPE_F32, x, 8, L, 64);
    W("bv.npy", QKV_DTYPE_F32, x, 8, L, 64);
    free(x);
}

/* Runs `qkv run` on write_bus_inputs(L) and, once its temporary -o file
 * appears (the inputs are mapped by then and the work begins), cuts
 * @bk.npy to 4096 bytes. Returns 1 when the cut came while qkv was still
 * running and it did not succeed; 0 when it finished first (try a larger
 * L). */
static int truncate_while_running(int64_t L, const char *threads)
{
    write_bus_inputs(L);
    int pid = start_qkv((const char *const[]){"run", "-q", "@bq.npy", "-k", "@bk.npy", "-v",
                                              "@bv.npy", "-o", "%o.npy", "--threads", threads,
                                              NULL},
                        NULL, 0);
    /* Bounded: loading 24 MiB of mapped inputs takes milliseconds. */
    const int mapped = wait_mapping_outputs(pid, 120000);
    if (mapped == 0) { /* it finished first */
        fprintf(stderr, "    qkv run on (8, %lld, 64) ended (exit %d) before the cut\n",
                (long long)L, g_rc);
        clear_out(NULL, 0);
        return 0;
    }
    const int cut = mapped == 1;
    if (cut) EXPECT(truncate(in_path("bk.npy"), 4096) == 0);
    wait_qkv(pid);
    if (cut && g_rc == 0) { /* done before the cut took effect */
        fprintf(stderr, "    qkv run on (8, %lld, 64) was done before the cut\n", (long long)L);
        put_old(out_path("o.npy"));
        return 0;
    }
    return cut;
}

static void test_truncated_input(void)
{
    static const int64_t sizes[] = {4096, 8192, 16384}; /* 8, 32, 128 MiB each */
    /* With several workers, several of them fault at once, each with its
     * own SIGBUS; still one line. The race is a matter of chance, hence
     * the repeats. */
    static const char *const threads[] = {"1", "2", "8", "8", "8", "8", "8", "8"};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        static char ctx[96];
        snprintf(ctx, sizeof ctx, "-k cut short while qkv run --threads %s reads it (run %zu)",
                 threads[t], t);
        set_ctx(ctx);
        int cut = 0;
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0] && !cut; s++) {
            put_old(out_path("o.npy"));
            cut = truncate_while_running(sizes[s], threads[t]);
        }
        EXPECT(cut); /* a (8, 16384, 64) run done within a millisecond: unlikely */
        if (!cut) continue;
        EXPECT(g_rc == 1);
        EXPECT(strcmp(g_stderr, bus_line) == 0);
        EXPECT(holds_old(out_path("o.npy")));
        expect_out_files(1); /* o.npy as it was, no temporary */
    }
    unlink(in_path("bq.npy"));
    unlink(in_path("bk.npy"));
    unlink(in_path("bv.npy"));
}

/* Runs `qkv run` with a float --mask of (L, L) on write_bus_inputs(L)
 * and, as soon as -o is in place, stops it, cuts the mask to 4096 bytes
 * and lets it go on. Whatever qkv still reads of its inputs then (the
 * checks for NaN on its way out) must not turn a run whose output is in
 * place into a failure that says "no output written": either it succeeds,
 * or it fails and leaves the old -o. */
static void truncate_after_commit(int64_t L)
{
    write_bus_inputs(L);
    test_rng rng = test_rng_seed(5);
    float *m = test_rand_f32(&rng, L * L, -1, 1);
    W("bm.npy", QKV_DTYPE_F32, m, L, L);
    free(m);
    put_old(out_path("o.npy"));
    int pid = start_qkv((const char *const[]){"run", "-q", "@bq.npy", "-k", "@bk.npy", "-v",
                                              "@bv.npy", "--mask", "@bm.npy", "-o", "%o.npy",
                                              "--threads", "2", NULL},
                        NULL, 0);
    int status, reaped = 0;
    const time_t give_up = time(NULL) + 300; /* the run itself takes a second or so */
    while (!reaped && time(NULL) < give_up) {
        struct stat sb;
        if (stat(out_path("o.npy"), &sb) == 0 && sb.st_size != (off_t)sizeof OLD_BYTES - 1) {
            kill(pid, SIGSTOP);
            if (waitpid(pid, &status, WUNTRACED) != pid) break;
            reaped = !WIFSTOPPED(status); /* it had ended */
            if (!reaped) {
                EXPECT(truncate(in_path("bm.npy"), 4096) == 0);
                kill(pid, SIGCONT);
            }
            break;
        }
        reaped = waitpid(pid, &status, WNOHANG) == pid;
        sleep_ms(0); /* a yield: the window is a few milliseconds wide */
    }
    if (reaped) {
        g_rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        g_stderr[0] = '\0';
    } else {
        wait_qkv(pid);
    }
    EXPECT(g_rc == 0 || g_rc == 1);
    if (g_rc == 1) {
        EXPECT(strcmp(g_stderr, bus_line) == 0);
        EXPECT(holds_old(out_path("o.npy")));
    } else {
        EXPECT(!holds_old(out_path("o.npy")));
    }
    expect_out_files(1);
}

static void test_truncated_after_commit(void)
{
    set_ctx("--mask cut short once qkv run's -o is in place");
    for (int i = 0; i < 4; i++) truncate_after_commit(2048);
    unlink(in_path("bq.npy"));
    unlink(in_path("bk.npy"));
    unlink(in_path("bv.npy"));
    unlink(in_path("bm.npy"));
}

/* The file at src fed into the FIFO @name (made here when absent) by a
 * child; reap it with stream_reap. */
static pid_t feed_fifo(const char *name, const char *src)
{
    const char *fifo = in_path(name);
    struct stat sb;
    if (stat(fifo, &sb) != 0 && mkfifo(fifo, 0600) != 0) {
        fprintf(stderr, "test: mkfifo %s: %s\n", fifo, strerror(errno));
        exit(2);
    }
    size_t len = 0;
    unsigned char *b = test_read_file(src, &len);
    if (!b) {
        fprintf(stderr, "test: cannot read %s\n", src);
        exit(2);
    }
    pid_t pid = stream_feed(fifo, b, len, 0);
    free(b);
    return pid;
}

/* Are the two files the same bytes? */
static int same_bytes(const char *a, const char *b)
{
    size_t la = 0, lb = 0;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* ||got - want|| / ||want|| of two f32 .npy files of the same shape;
 * INFINITY when either cannot be read or their shapes differ. */
static double file_rel_l2(const char *got_path, const char *want_path)
{
    qkv_array got, want;
    double e = INFINITY;
    if (qkv_npy_read(got_path, &got) != QKV_OK) return e;
    if (qkv_npy_read(want_path, &want) == QKV_OK) {
        if (got.dtype == QKV_DTYPE_F32 && want.dtype == QKV_DTYPE_F32 &&
            test_same_shape(&got, want.ndim, want.shape))
            e = test_rel_l2(got.data, want.data, qkv_array_numel(&want));
        qkv_array_free(&want);
    }
    qkv_array_free(&got);
    return e;
}

static const char *case_path(const char *dir, const char *cas, const char *name)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    fmt(p, sizeof buf[0], "%s/%s/%s/%s", QKV_TEST_DATA, dir, cas, name);
    return p;
}
#define ORACLE(name) case_path("oracle", cas, name)

/* qkv run on an oracle case from regular files and from FIFOs: the same
 * bytes, and PyTorch's O and weights. */
static int run_from_fifos(const void *arg)
{
    (void)arg;
    const int before = test_failures;
    const char *cas = "seed_example_like";
    EXPECT_OK(RUN("run", "-q", ORACLE("q.npy"), "-k", ORACLE("k.npy"), "-v", ORACLE("v.npy"),
                  "-o", "%o_file.npy", "--weights", "%w_file.npy", "--lse", "%l_file.npy"));
    pid_t p[3] = {feed_fifo("q.fifo", ORACLE("q.npy")), feed_fifo("k.fifo", ORACLE("k.npy")),
                  feed_fifo("v.fifo", ORACLE("v.npy"))};
    EXPECT_OK(RUN("run", "-q", "@q.fifo", "-k", "@k.fifo", "-v", "@v.fifo", "-o", "%o.npy",
                  "--weights", "%w.npy", "--lse", "%l.npy"));
    for (int i = 0; i < 3; i++) stream_reap(p[i]);
    EXPECT(same_bytes(out_path("o.npy"), out_path("o_file.npy")));
    EXPECT(same_bytes(out_path("w.npy"), out_path("w_file.npy")));
    EXPECT(same_bytes(out_path("l.npy"), out_path("l_file.npy")));
    EXPECT(file_rel_l2(out_path("o.npy"), ORACLE("out.npy")) <= 1e-5);
    EXPECT(file_rel_l2(out_path("w.npy"), ORACLE("weights.npy")) <= 1e-5);
    expect_out_files(6);
    return test_failures - before;
}

/* qkv grad with Q, K, V, dO and a float mask all FIFOs. */
static int grad_from_fifos(const void *arg)
{
    (void)arg;
    const int before = test_failures;
    const char *cas = "grad_small_gqa_mask";
    EXPECT_OK(RUN("grad", "-q", ORACLE("q.npy"), "-k", ORACLE("k.npy"), "-v", ORACLE("v.npy"),
                  "--dout", ORACLE("dout.npy"), "--mask", ORACLE("mask.npy"), "--dq",
                  "%dq_file.npy", "--dk", "%dk_file.npy", "--dv", "%dv_file.npy"));
    pid_t p[5] = {feed_fifo("q.fifo", ORACLE("q.npy")), feed_fifo("k.fifo", ORACLE("k.npy")),
                  feed_fifo("v.fifo", ORACLE("v.npy")), feed_fifo("d.fifo", ORACLE("dout.npy")),
                  feed_fifo("m.fifo", ORACLE("mask.npy"))};
    EXPECT_OK(RUN("grad", "-q", "@q.fifo", "-k", "@k.fifo", "-v", "@v.fifo", "--dout", "@d.fifo",
                  "--mask", "@m.fifo", "--dq", "%dq.npy", "--dk", "%dk.npy", "--dv", "%dv.npy"));
    for (int i = 0; i < 5; i++) stream_reap(p[i]);
    static const char *const g[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++) {
        char mine[32], file[32], want[32];
        fmt(mine, sizeof mine, "%s.npy", g[i]);
        fmt(file, sizeof file, "%s_file.npy", g[i]);
        fmt(want, sizeof want, "%s.npy", g[i]);
        EXPECT(same_bytes(out_path(mine), out_path(file)));
        EXPECT(file_rel_l2(out_path(mine), ORACLE(want)) <= 1e-4);
    }
    expect_out_files(6);
    return test_failures - before;
}

/* qkv mha with its query and context FIFOs (the parameters a file). */
static int mha_from_fifos(const void *arg)
{
    (void)arg;
    const int before = test_failures;
    const char *cas = "mha_cross_causal";
    const char *params = case_path("mha", cas, "params.safetensors");
    EXPECT_OK(RUN("mha", "--params", params, "--heads", "2", "--causal", "--query",
                  case_path("mha", cas, "x.npy"), "--context", case_path("mha", cas, "c.npy"),
                  "-o", "%y_file.npy", "--weights", "%w_file.npy"));
    pid_t p[2] = {feed_fifo("x.fifo", case_path("mha", cas, "x.npy")),
                  feed_fifo("c.fifo", case_path("mha", cas, "c.npy"))};
    EXPECT_OK(RUN("mha", "--params", params, "--heads", "2", "--causal", "--query", "@x.fifo",
                  "--context", "@c.fifo", "-o", "%y.npy", "--weights", "%w.npy"));
    for (int i = 0; i < 2; i++) stream_reap(p[i]);
    EXPECT(same_bytes(out_path("y.npy"), out_path("y_file.npy")));
    EXPECT(same_bytes(out_path("w.npy"), out_path("w_file.npy")));
    EXPECT(file_rel_l2(out_path("y.npy"), case_path("mha", cas, "y.npy")) <= 1e-5);
    EXPECT(file_rel_l2(out_path("w.npy"), case_path("mha", cas, "w.npy")) <= 1e-5);
    expect_out_files(4);
    return test_failures - before;
}

/* Each under a time bound, so that a reader stuck on a FIFO fails. */
static void test_fifo_inputs(void)
{
    static const struct {
        const char *ctx;
        int (*fn)(const void *);
    } cases[] = {{"qkv run with Q, K, V FIFOs", run_from_fifos},
                 {"qkv grad with Q, K, V, dO, mask FIFOs", grad_from_fifos},
                 {"qkv mha with --query and --context FIFOs", mha_from_fifos}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        set_ctx(cases[c].ctx);
        int bad = stream_bounded(cases[c].fn, NULL);
        EXPECT(bad == 0);
        clear_out(NULL, 0);
    }
    static const char *const fifos[] = {"q.fifo", "k.fifo", "v.fifo", "d.fifo",
                                        "m.fifo", "x.fifo", "c.fifo"};
    for (size_t i = 0; i < sizeof fifos / sizeof fifos[0]; i++) unlink(in_path(fifos[i]));
}

int main(void)
{
    umask(022); /* the modes below assume it */
    cmdtest_open();
    cmdtest_children_skip_leak_check(); /* they stop qkv: see cmdtest.h */
    test_stdout_errors();
    test_modes();
    test_symlinks();
    test_file_size_limit();
    test_signals();
    test_truncated_input();
    test_truncated_after_commit();
    test_fifo_inputs();
    cmdtest_close();
    return test_finish("test_cli_output");
}
