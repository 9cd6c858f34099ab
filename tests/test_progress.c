/* Progress reporting: the library calls the context's progress report on
 * the calling thread with fractions that rise to exactly 1.0, and `qkv run`
 * draws its progress line only when stderr is a terminal (a pseudo-terminal
 * here), erasing it at the end; with stderr a pipe it stays silent. */
#define _XOPEN_SOURCE 700 /* posix_openpt, grantpt, ptsname */
#include "test.h"
#include "util.h"

#include "qkv.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define TEST_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_UNDER_TSAN 1
#endif
#endif

typedef struct seen {
    int calls, rising, off_thread;
    double last;
    pthread_t caller;
} seen;

static void on_progress(void *user, double done)
{
    seen *s = user;
    if (!pthread_equal(pthread_self(), s->caller)) s->off_thread = 1;
    if (done < s->last || done < 0 || done > 1) s->rising = 0;
    s->last = done;
    s->calls++;
}

static void check_library_progress(void)
{
    const int64_t H = 3, L = 300, E = 8;
    test_rng r = test_rng_seed(7);
    float *q = test_rand_f32(&r, H * L * E, -1, 1);
    float *o = test_malloc((size_t)(H * L * E) * sizeof(float));
    qkv_tensor t = qkv_tensor_contiguous(q, QKV_DTYPE_F32, 1, H, L, E);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, 1, H, L, E);
    for (int threads = 1; threads <= 2; threads++) {
        seen s = {0, 1, 0, 0.0, pthread_self()};
        qkv_attention_options opt = {0};
        qkv_context *ctx = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, threads);
        CHECK(qkv_context_set_progress(ctx, on_progress, &s) == QKV_OK);
        CHECK(qkv_attention_forward(ctx, &to, NULL, NULL, &t, &t, &t, &opt) == QKV_OK);
        qkv_context_free(ctx);
        /* One thread reports along the way; with two the other may take
         * every work item, leaving only the final report. */
        CHECK(s.calls >= (threads == 1 ? 2 : 1) && s.calls <= 210);
        CHECK(s.rising);
        CHECK(s.last == 1.0);
        CHECK(!s.off_thread);
    }
    free(q);
    free(o);

    /* A decode-shaped call splits its keys and merges them: two loops, one
     * progress that still only rises. */
    const int64_t Lk = 5000;
    float *kv = test_rand_f32(&r, Lk * E, -1, 1), q1[8], o1[8];
    for (int d = 0; d < 8; d++) q1[d] = 0.1f * (float)d;
    qkv_tensor tq1 = qkv_tensor_contiguous(q1, QKV_DTYPE_F32, 1, 1, 1, E);
    qkv_tensor tk1 = qkv_tensor_contiguous(kv, QKV_DTYPE_F32, 1, 1, Lk, E);
    qkv_tensor to1 = qkv_tensor_contiguous(o1, QKV_DTYPE_F32, 1, 1, 1, E);
    seen s = {0, 1, 0, 0.0, pthread_self()};
    qkv_attention_options opt = {0};
    qkv_context *ctx = test_context(QKV_IMPL_AUTO, QKV_ISA_AUTO, 1);
    CHECK(qkv_context_set_progress(ctx, on_progress, &s) == QKV_OK);
    CHECK(qkv_attention_forward(ctx, &to1, NULL, NULL, &tq1, &tk1, &tk1, &opt) == QKV_OK);
    qkv_context_free(ctx);
    CHECK(s.calls >= 2 && s.rising && s.last == 1.0);
    free(kv);
}

/* Runs `qkv run` on the inputs in dir with stderr on a pseudo-terminal (or
 * a pipe) and returns what it wrote there. */
static int run_with_stderr(const char *dir, int use_pty, char *buf, size_t len)
{
    char qp[512], kp[512], op[512];
    snprintf(qp, sizeof qp, "%s/q.npy", dir);
    snprintf(kp, sizeof kp, "%s/k.npy", dir);
    snprintf(op, sizeof op, "%s/o.npy", dir);
    int master = -1, fds[2] = {-1, -1}, slave;
    if (use_pty) {
        master = posix_openpt(O_RDWR | O_NOCTTY);
        if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) return -1;
        slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    } else {
        if (pipe(fds) != 0) return -1;
        master = fds[0];
        slave = fds[1];
    }
    if (slave < 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(slave, 2);
        close(master);
        close(slave);
        execl(QKV_BIN, QKV_BIN, "run", "-q", qp, "-k", kp, "-v", kp, "-o", op, "--threads", "1",
              "--reference", (char *)NULL);
        _exit(127);
    }
    close(slave);
    size_t used = 0;
    for (;;) {
        ssize_t got = read(master, buf + used, len - 1 - used);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break; /* EIO on a pty once the child has gone */
        used += (size_t)got;
        if (used == len - 1) break;
    }
    buf[used] = '\0';
    close(master);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void check_cli_progress(void)
{
#ifdef TEST_UNDER_TSAN
    /* Two runs of the instrumented CLI, on one thread with the reference
     * kernel, take half a minute under ThreadSanitizer and give it no
     * threads to watch: the library part above is the one it checks. */
    printf("  qkv run's progress line: skipped under ThreadSanitizer\n");
    return;
#endif
    /* Big enough that the reference kernel (forced: faster paths may come)
     * runs past 0.5 s on one thread: 2 * 4 * 1024^2 * 128 multiply-adds. */
    const int64_t H = 4, L = 1024, E = 128;
    char *dir = test_tmpdir();
    test_rng r = test_rng_seed(3);
    float *x = test_rand_f32(&r, H * L * E, -1, 1);
    qkv_array a = {0};
    a.data = x;
    a.dtype = QKV_DTYPE_F32;
    a.ndim = 3;
    a.shape[0] = H;
    a.shape[1] = L;
    a.shape[2] = E;
    char path[512];
    snprintf(path, sizeof path, "%s/q.npy", dir);
    CHECK(qkv_npy_write(path, &a) == QKV_OK);
    snprintf(path, sizeof path, "%s/k.npy", dir);
    CHECK(qkv_npy_write(path, &a) == QKV_OK);
    free(x);

    static char out[1 << 16];
    int rc = run_with_stderr(dir, 1, out, sizeof out);
    CHECK(rc == 0);
    CHECK(strstr(out, "\rqkv run: attention") != NULL);
    CHECK(strstr(out, "%") != NULL);
    size_t n = strlen(out);
    CHECK(n >= 4 && strcmp(out + n - 4, "\r\033[K") == 0); /* erased at the end */
    if (rc != 0 || !strstr(out, "\rqkv run")) fprintf(stderr, "pty stderr: %s\n", out);

    rc = run_with_stderr(dir, 0, out, sizeof out);
    CHECK(rc == 0);
    CHECK(out[0] == '\0'); /* a pipe: not a word */
    test_rmdir(dir);
}

int main(void)
{
    check_library_progress();
    check_cli_progress();
    return test_finish("test_progress");
}
