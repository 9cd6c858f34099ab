/* How qkv puts its outputs in place, run as a child process:
 *   - the NaN warnings read the mapped inputs before the commit: an input
 *     cut short once the outputs are in place changes nothing (exit 0, the
 *     warning, the new outputs), where reading it then would be a SIGBUS
 *     that says "no output written" about outputs that were written;
 *   - a command that prints its result and writes a file (explain --html)
 *     whose standard output fails leaves no file: exit 1, one line;
 *   - `qkv run` computes into unnamed temporaries (O_TMPFILE): SIGKILL
 *     during the work leaves nothing behind, SIGQUIT is handled like
 *     SIGINT, and a SIGBUS says what may have happened to which file;
 *   - as a user that is not root (when the tests can become one), a
 *     read-only output is replaced and keeps its mode, for mapped outputs
 *     and for those written at the commit. */
#define _GNU_SOURCE /* O_TMPFILE */
#include "test.h"
#include "util.h"
#include "cmdtest.h"

#include "qkv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/inotify.h>
#endif

/* Is the file at path an .npy of this shape? */
static int is_npy_of(const char *path, int ndim, const int64_t *shape)
{
    qkv_array a;
    if (qkv_npy_read(path, &a) != QKV_OK) return 0;
    int ok = test_same_shape(&a, ndim, shape);
    qkv_array_free(&a);
    return ok;
}

/* ------------------------------------------ A: warnings after the commit */

#if defined(__linux__)
/* Waits (up to a minute) for a file named `name` to be renamed into the
 * output directory; the watch is wd on fd. 1 when it was. */
static int wait_moved_to(int fd, const char *name)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    struct pollfd p = {fd, POLLIN, 0};
    while (poll(&p, 1, 60000) == 1) {
        ssize_t n = read(fd, buf, sizeof buf);
        for (ssize_t at = 0; n > 0 && at < n;) {
            const struct inotify_event *e = (const void *)(buf + at);
            if (e->len && strcmp(e->name, name) == 0) return 1;
            at += (ssize_t)(sizeof *e + e->len);
        }
    }
    return 0;
}

/* Starts qkv with args and, the moment `moved` is renamed into place,
 * stops it, cuts the input file `victim` to 4096 bytes and lets it go on.
 * Returns 1 when the cut came before qkv ended. */
static int cut_after_commit(const char *const *args, const char *moved, const char *victim)
{
    int fd = inotify_init1(IN_CLOEXEC);
    EXPECT(fd >= 0 && inotify_add_watch(fd, g_out, IN_MOVED_TO) >= 0);
    int pid = start_qkv(args, NULL, 0);
    int seen = wait_moved_to(fd, moved);
    if (seen) {
        kill(pid, SIGSTOP);
        EXPECT(truncate(victim, 4096) == 0);
        kill(pid, SIGCONT);
    }
    close(fd);
    wait_qkv(pid);
    return seen;
}
#endif

/* Q (8, L, 64) with one NaN, its last element; K (8, 16, 64), V (8, 16, 1)
 * and a float mask (L, 16). Reading Q for NaN takes two passes (one finds
 * that there is one, one counts), milliseconds that the mask, read last,
 * waits for: long enough for the cut to land before qkv reaches it when
 * it reads its inputs after the rename. */
static void write_nan_inputs(int64_t L)
{
    test_rng rng = test_rng_seed(11);
    float *q = test_rand_f32(&rng, 8 * L * 64, -1, 1);
    q[8 * L * 64 - 1] = NAN;
    W("nq.npy", QKV_DTYPE_F32, q, 8, L, 64);
    free(q);
    float *k = test_rand_f32(&rng, 8 * 16 * 64, -1, 1);
    W("nk.npy", QKV_DTYPE_F32, k, 8, 16, 64);
    W("nv.npy", QKV_DTYPE_F32, k, 8, 16, 1);
    free(k);
    float *m = test_rand_f32(&rng, L * 16, -1, 1);
    W("nm.npy", QKV_DTYPE_F32, m, L, 16);
    free(m);
}

static int warns_one_nan(const char *cmd, const char *flag)
{
    char want[4096];
    fmt(want, sizeof want, "qkv %s: warning: %s %s holds 1 NaN or infinite value;", cmd, flag,
        in_path("nq.npy"));
    return one_line(g_stderr) && test_starts_with(g_stderr, want);
}

/* A layer of width 64, two heads, random parameters, as @layer.safetensors. */
static void write_layer(void)
{
    qkv_mha_config cfg = {0};
    cfg.d_model = 64;
    cfg.heads = 2;
    qkv_mha *m = NULL;
    EXPECT(qkv_mha_create(&m, &cfg) == QKV_OK);
    test_rng rng = test_rng_seed(13);
    for (int p = 0; m && p < QKV_MHA_NUM_PARAMS; p++) {
        int64_t r, c;
        float *d = qkv_mha_param_data(m, (qkv_mha_param)p, &r, &c);
        for (int64_t i = 0; d && i < r * c; i++) d[i] = (float)(test_rand(&rng) - 0.5) / 8;
    }
    EXPECT(m && qkv_mha_save(m, in_path("layer.safetensors"), NULL) == QKV_OK);
    qkv_mha_free(m);
}

static void test_warnings_before_commit(void)
{
#if defined(__linux__)
    const int64_t L = 16384; /* Q of 32 MiB */
    for (int rep = 0; rep < 3; rep++) {
        set_ctx("qkv run: the mask cut short once -o is in place");
        write_nan_inputs(L);
        put_old(out_path("o.npy"));
        int cut = cut_after_commit(
            (const char *const[]){"run", "-q", "@nq.npy", "-k", "@nk.npy", "-v", "@nv.npy",
                                  "--mask", "@nm.npy", "-o", "%o.npy", NULL},
            "o.npy", in_path("nm.npy"));
        EXPECT(cut);
        EXPECT(g_rc == 0);
        EXPECT(warns_one_nan("run", "-q"));
        EXPECT(is_npy_of(out_path("o.npy"), 3, (int64_t[]){8, L, 1}));
        expect_out_files(1);

        set_ctx("qkv grad: the mask cut short once --dv is in place");
        write_nan_inputs(L);
        {
            test_rng rng = test_rng_seed(12);
            float *d = test_rand_f32(&rng, 8 * L, -1, 1);
            W("nd.npy", QKV_DTYPE_F32, d, 8, L, 1);
            free(d);
        }
        cut = cut_after_commit(
            (const char *const[]){"grad", "-q", "@nq.npy", "-k", "@nk.npy", "-v", "@nv.npy",
                                  "--mask", "@nm.npy", "--dout", "@nd.npy", "--dq", "%dq.npy",
                                  "--dk", "%dk.npy", "--dv", "%dv.npy", NULL},
            "dv.npy", in_path("nm.npy"));
        EXPECT(cut);
        EXPECT(g_rc == 0);
        EXPECT(warns_one_nan("grad", "-q"));
        EXPECT(is_npy_of(out_path("dv.npy"), 3, (int64_t[]){8, 16, 1}));
        expect_out_files(3);

        /* Q as the layer's input, (8, L / 2, 64); K as its context. */
        set_ctx("qkv mha: --context cut short once -o is in place");
        write_nan_inputs(L / 2);
        write_layer();
        cut = cut_after_commit(
            (const char *const[]){"mha", "--params", "@layer.safetensors", "--heads", "2",
                                  "--query", "@nq.npy", "--context", "@nk.npy", "-o", "%y.npy",
                                  NULL},
            "y.npy", in_path("nk.npy"));
        EXPECT(cut);
        EXPECT(g_rc == 0);
        EXPECT(warns_one_nan("mha", "--query"));
        EXPECT(is_npy_of(out_path("y.npy"), 3, (int64_t[]){8, L / 2, 64}));
        expect_out_files(1);
    }
    const char *const names[] = {"nq.npy", "nk.npy", "nv.npy", "nm.npy", "nd.npy",
                                 "layer.safetensors"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unlink(in_path(names[i]));
#endif
}

/* ------------------------------------------- B: stdout fails, no file */

static void test_stdout_and_files(void)
{
    static const char *const cases[][6] = {
        {"explain", "--html", "%p.html"},
        {"explain", "--scores", "1,2,3", "--html", "%p.html"},
        {"explain", "--query", "tree", "--html=%p.html"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int old = 0; old < 2; old++) {
            static char ctx[160];
            snprintf(ctx, sizeof ctx, "qkv %s %s %s %s > /dev/full%s", cases[c][0], cases[c][1],
                     cases[c][2], cases[c][3] ? cases[c][3] : "", old ? ", p.html there before" : "");
            set_ctx(ctx);
            if (old) put_old(out_path("p.html"));
            run_to("/dev/full", (const char *const *)cases[c]);
            EXPECT(g_rc == 1);
            EXPECT(one_line(g_stderr));
            EXPECT(test_starts_with(g_stderr, "qkv explain: standard output: "));
            EXPECT(strstr(g_stderr, strerror(ENOSPC)) != NULL);
            if (old) EXPECT(holds_old(out_path("p.html")));
            expect_out_files(old);
        }
    }
    set_ctx("qkv explain --html to a working stdout");
    EXPECT(RUN_TO("/dev/null", "explain", "--html", "%p.html") == 0);
    EXPECT(g_stderr[0] == '\0');
    char *page = slurp(out_path("p.html"), NULL);
    EXPECT(page && strstr(page, "<html") != NULL);
    free(page);
    expect_out_files(1);
}

/* ------------------------------- D, F: signals while qkv run computes */

/* Q, K, V of (8, L, 64) as @sq.npy, @sk.npy, @sv.npy. */
static void write_big_inputs(int64_t L)
{
    test_rng rng = test_rng_seed(3);
    float *x = test_rand_f32(&rng, 8 * L * 64, -1, 1);
    W("sq.npy", QKV_DTYPE_F32, x, 8, L, 64);
    W("sk.npy", QKV_DTYPE_F32, x, 8, L, 64);
    W("sv.npy", QKV_DTYPE_F32, x, 8, L, 64);
    free(x);
}

/* Can the output directory hold unnamed files? Where it cannot, qkv
 * falls back to named temporaries, which a SIGKILL leaves. */
static int tmpfile_supported(void)
{
#if defined(O_TMPFILE)
    int fd = open(g_out, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);
    return fd >= 0;
#else
    return 0;
#endif
}

/* Starts `qkv run` on write_big_inputs with -o and --weights (an L x L
 * per head: 8 L^2 floats), waits until it maps its outputs (it computes
 * into them), sends sig and reaps it. Returns 1 when the signal came
 * during the work; named temporaries seen then are counted in *named. */
static int signal_while_computing(int sig, int *named)
{
    int pid = start_qkv((const char *const[]){"run", "-q", "@sq.npy", "-k", "@sk.npy", "-v",
                                              "@sv.npy", "-o", "%o.npy", "--weights", "%w.npy",
                                              "--threads", "2", NULL},
                        NULL, 0);
    int landed = 0;
    const int mapped = wait_mapping_outputs(pid, 60000);
    if (mapped == 0 || (mapped == 1 && !stop_child(pid))) return 0;
    if (mapped == 1) {
        /* Still before the commit when -o is not in place. */
        landed = holds_old(out_path("o.npy"));
        *named = out_tmp_count();
        if (landed) kill(pid, sig);
        kill(pid, SIGCONT);
    }
    wait_qkv(pid);
    return landed;
}

static void test_signals_while_computing(void)
{
    if (!tmpfile_supported()) {
        fprintf(stderr, "test_cli_commit: %s cannot hold O_TMPFILE files; signal cases skipped\n",
                g_out);
        return;
    }
    write_big_inputs(2048); /* weights of 128 MiB: a second or more of work */
    static const int sigs[] = {SIGKILL, SIGQUIT, SIGINT, SIGTERM, SIGHUP, SIGBUS};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        static char ctx[96];
        snprintf(ctx, sizeof ctx, "%s while qkv run computes into its outputs",
                 strsignal(sigs[i]));
        set_ctx(ctx);
        put_old(out_path("o.npy"));
        put_old(out_path("w.npy"));
        int named = -1;
        int landed = signal_while_computing(sigs[i], &named);
        EXPECT(landed); /* more than a second of work done before we looked: unlikely */
        if (!landed) {
            clear_out(NULL, 0);
            continue;
        }
        EXPECT(named == 0); /* nothing named while the work runs */
        if (sigs[i] == SIGKILL) {
            EXPECT(g_rc == 128 + SIGKILL);
        } else if (sigs[i] == SIGBUS) {
            EXPECT(g_rc == 1);
            EXPECT(strcmp(g_stderr,
                          "qkv run: bus error: a mapped input or output file could not be read "
                          "or written (did an input shrink while qkv read it, or the disk "
                          "fill?); no output written\n") == 0);
        } else {
            char want[96];
            snprintf(want, sizeof want, "qkv run: interrupted by SIG%s; no output written\n",
                     sigs[i] == SIGQUIT  ? "QUIT"
                     : sigs[i] == SIGINT ? "INT"
                     : sigs[i] == SIGTERM ? "TERM"
                                          : "HUP");
            EXPECT(g_rc == 1);
            EXPECT(strcmp(g_stderr, want) == 0);
        }
        EXPECT(holds_old(out_path("o.npy")));
        EXPECT(holds_old(out_path("w.npy")));
        expect_out_files(2); /* o.npy and w.npy as they were, no temporary */
    }
    unlink(in_path("sq.npy"));
    unlink(in_path("sk.npy"));
    unlink(in_path("sv.npy"));
}

/* A run that is let finish after the same wait: both outputs in place,
 * with the modes of the files they replaced. */
static void test_unnamed_outputs_commit(void)
{
    set_ctx("qkv run into unnamed temporaries, replacing 0640 and 0604 files");
    test_rng rng = test_rng_seed(9);
    float *x = test_rand_f32(&rng, 4 * 64 * 8, -1, 1);
    W("uq.npy", QKV_DTYPE_F32, x, 4, 64, 8);
    free(x);
    put_old(out_path("o.npy"));
    put_old(out_path("w.npy"));
    EXPECT(chmod(out_path("o.npy"), 0640) == 0 && chmod(out_path("w.npy"), 0604) == 0);
    EXPECT_OK(RUN("run", "-q", "@uq.npy", "-k", "@uq.npy", "-v", "@uq.npy", "-o", "%o.npy",
                  "--weights", "%w.npy"));
    struct stat so, sw;
    EXPECT(stat(out_path("o.npy"), &so) == 0 && (so.st_mode & 0777) == 0640);
    EXPECT(stat(out_path("w.npy"), &sw) == 0 && (sw.st_mode & 0777) == 0604);
    EXPECT(is_npy_of(out_path("o.npy"), 3, (int64_t[]){4, 64, 8}));
    EXPECT(is_npy_of(out_path("w.npy"), 3, (int64_t[]){4, 64, 64}));
    /* Each weights row sums to 1: the data reached the file. */
    qkv_array w;
    EXPECT(qkv_npy_read(out_path("w.npy"), &w) == QKV_OK);
    const float *p = w.data;
    double worst = 0;
    for (int64_t r = 0; p && r < 4 * 64; r++) {
        double s = 0;
        for (int j = 0; j < 64; j++) s += p[r * 64 + j];
        worst = fmax(worst, fabs(s - 1));
    }
    EXPECT(p && worst < 1e-5);
    qkv_array_free(&w);
    expect_out_files(2);
    unlink(in_path("uq.npy"));
}

/* ---------------------------------------- C: read-only, not as root */

/* Runs qkv with args (NULL-terminated, not expanded) as user and group
 * 65534 when the tests run as root, else as the tests' own user; its exit
 * code, or -1 when root cannot become that user. */
static int run_not_root(const char *const *args, char *err, size_t errlen, const char *err_path)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        if (e < 0 || dup2(e, 2) < 0) _exit(126);
        if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
            _exit(125);
        /* A build tree under a directory only root may enter (mktemp -d
         * makes 0700) keeps the binary out of that user's reach. */
        if (access(QKV_BIN, X_OK) != 0) _exit(125);
        char *argv[32];
        int n = 0;
        argv[n++] = (char *)QKV_BIN;
        for (; args[n - 1] && n < 31; n++) argv[n] = (char *)args[n - 1];
        argv[n] = NULL;
        execv(QKV_BIN, argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    char *text = slurp(err_path, NULL);
    snprintf(err, errlen, "%s", text ? text : "");
    free(text);
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return rc == 125 ? -1 : rc;
}

static mode_t mode_of(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_mode & 0777 : (mode_t)-1;
}

static void test_read_only_targets(void)
{
    set_ctx("read-only outputs replaced by a user that is not root");
    char *dir = test_tmpdir();
    EXPECT(chmod(dir, 0777) == 0); /* the user below writes here */
    test_rng rng = test_rng_seed(21);
    float *x = test_rand_f32(&rng, 2 * 32 * 8, -1, 1);
    const char *q = pjoin(dir, "q.npy"), *o = pjoin(dir, "o.npy"), *w = pjoin(dir, "w.npy"),
               *dq = pjoin(dir, "dq.npy"), *dk = pjoin(dir, "dk.npy"), *dv = pjoin(dir, "dv.npy"),
               *err = pjoin(dir, "err.txt");
    write_array(q, QKV_DTYPE_F32, 3, (int64_t[]){2, 32, 8}, x);
    free(x);
    const char *const outs[] = {o, w, dq, dk, dv};
    static const mode_t modes[] = {0444, 0400, 0444, 0440, 0404};
    for (int i = 0; i < 5; i++) {
        put_old(outs[i]);
        EXPECT(chmod(outs[i], modes[i]) == 0);
    }
    char msg[4096];
    /* run's outputs are mapped temporaries; grad's are written at the commit. */
    int rc = run_not_root((const char *const[]){"run", "-q", q, "-k", q, "-v", q, "-o", o,
                                                "--weights", w, NULL},
                          msg, sizeof msg, err);
    if (rc < 0) {
        fprintf(stderr, "test_cli_commit: cannot run qkv as user 65534 (no such user, or the "
                        "build tree is out of its reach); read-only case skipped\n");
    } else {
        EXPECT(rc == 0);
        EXPECT(msg[0] == '\0');
        if (msg[0]) fprintf(stderr, "    qkv run said: %s", msg);
        rc = run_not_root((const char *const[]){"grad", "-q", q, "-k", q, "-v", q, "--dout", q,
                                                "--dq", dq, "--dk", dk, "--dv", dv, NULL},
                          msg, sizeof msg, err);
        EXPECT(rc == 0);
        EXPECT(msg[0] == '\0');
        if (msg[0]) fprintf(stderr, "    qkv grad said: %s", msg);
        const int64_t *shapes[5] = {(int64_t[]){2, 32, 8}, (int64_t[]){2, 32, 32},
                                    (int64_t[]){2, 32, 8}, (int64_t[]){2, 32, 8},
                                    (int64_t[]){2, 32, 8}};
        for (int i = 0; i < 5; i++) {
            EXPECT(mode_of(outs[i]) == modes[i]);
            EXPECT(is_npy_of(outs[i], 3, shapes[i]));
        }
    }
    test_rmdir(dir);
}

int main(void)
{
    umask(022);
    cmdtest_open();
    cmdtest_children_skip_leak_check(); /* they stop qkv: see cmdtest.h */
    test_stdout_and_files();
    test_unnamed_outputs_commit();
    test_read_only_targets();
    test_signals_while_computing();
    test_warnings_before_commit();
    cmdtest_close();
    return test_finish("test_cli_commit");
}
