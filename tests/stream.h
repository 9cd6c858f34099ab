/* Helpers of the tests that read files from pipes (test_npy,
 * test_safetensors): a FIFO fed by a child process, and a child that runs a
 * check under a time and memory bound, so that a reader that never stops
 * (or never stops growing) fails its test instead of hanging it. Static
 * functions, for the few programs that include this. */
#ifndef QKV_TEST_STREAM_H
#define QKV_TEST_STREAM_H

#include "qkv.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Sanitizer builds reserve terabytes of address space; no RLIMIT_AS there. */
#if defined(__SANITIZE_ADDRESS__)
#define STREAM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STREAM_ASAN 1
#endif
#endif

/* Seconds a bounded check may take, CPU and wall clock: a good read takes
 * milliseconds. */
#define STREAM_LIMIT_S 10

/* Forks a writer that opens the FIFO at path, writes the n bytes at p and
 * then, when zeros is set, zero bytes until the reader goes away (EPIPE);
 * else it closes, which the reader sees as the end of the file. The writer
 * gives up after STREAM_LIMIT_S * 2 seconds in any case. Returns its pid
 * (-1 when fork fails); reap it with stream_reap. */
static pid_t stream_feed(const char *path, const void *p, size_t n, int zeros)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    alarm(STREAM_LIMIT_S * 2);
    signal(SIGPIPE, SIG_IGN);
    int fd = open(path, O_WRONLY);
    if (fd < 0) _exit(3);
    const unsigned char *b = p;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, b + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) _exit(0); /* the reader stopped early: its verdict counts */
        off += (size_t)w;
    }
    static const unsigned char zero[4096];
    while (zeros)
        if (write(fd, zero, sizeof zero) < 0 && errno != EINTR) break;
    close(fd);
    _exit(0);
}

/* Ends the writer (it may still be blocked in open when the reader never
 * opened the FIFO) and waits for it. */
static void stream_reap(pid_t pid)
{
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* Runs fn(arg) in a child process limited to STREAM_LIMIT_S seconds (an
 * alarm, and RLIMIT_CPU, which the processes it starts inherit) and, outside
 * ASan, 2 GiB of address space. fn returns its count of failed checks.
 * Returns that count, or 100 + the signal that killed the child. */
static int stream_bounded(int (*fn)(const void *), const void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return 99;
    if (pid == 0) {
        struct rlimit cpu = {STREAM_LIMIT_S, STREAM_LIMIT_S + 1};
        setrlimit(RLIMIT_CPU, &cpu);
#ifndef STREAM_ASAN
        struct rlimit as = {(rlim_t)2 << 30, (rlim_t)2 << 30};
        setrlimit(RLIMIT_AS, &as);
#endif
        alarm(STREAM_LIMIT_S);
        int bad = fn(arg);
        fflush(NULL);
        exit(bad > 90 ? 90 : bad);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 98;
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "stream_bounded: the check was killed by signal %d (a read that never "
                        "ends?)\n",
                WTERMSIG(status));
        return 100 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}

/* One fed stream and what reading it must give: the status and, when not
 * NULL, words in the error detail. */
typedef struct stream_case {
    const unsigned char *img;
    size_t len; /* bytes fed before the end or the zeros */
    int zeros;  /* then endless zero bytes */
    qkv_status want;
    const char *detail; /* in the error detail, or NULL */
} stream_case;

#endif
