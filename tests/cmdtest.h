/* The harness of the tests that run the qkv binary as a child process
 * (test_cli, test_heatmap, test_mha_cli): an input and an output directory, "@name" and
 * "%name" arguments naming files in them, the last command's exit code and
 * output kept for the failure messages of EXPECT, and small file helpers.
 * The definitions are in cmdtest.c; EXPECT and expect_out_files count into
 * the including program's test_checks/test_failures (test.h), so they live
 * here, as a macro and a static inline function. */
#ifndef QKV_TEST_CMDTEST_H
#define QKV_TEST_CMDTEST_H

#include "test.h"

#include "qkv.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern char *g_in;          /* input fixtures, a fresh directory (cmdtest_open) */
extern char g_out[4096];    /* outputs; emptied by expect_out_files after each case */

/* Makes g_in and g_out, fresh temporary directories; main calls it first. */
void cmdtest_open(void);
/* For the tests that stop qkv (SIGSTOP) at moments of their choosing:
 * the qkv processes started from then on run without LeakSanitizer, whose
 * check at exit holds the process under ptrace, and a stop landing then
 * hangs it for ever. (Leaks in qkv are test_cli's to find.) Harmless in
 * builds without AddressSanitizer (nothing else reads the variable). */
void cmdtest_children_skip_leak_check(void);
/* Empties and removes both (subdirectories a test made are its own to
 * remove before); main calls it last. */
void cmdtest_close(void);
extern const char *g_ctx;   /* what is being tested, shown on failures */

/* The last command run and what it gave, shown with any failed check. */
extern char g_cmd[8192];
extern int g_rc;
extern char g_stdout[16384];
extern char g_stderr[8192];

/* CHECK, with the context and the last command shown on failure. */
#define EXPECT(cond)                                                                     \
    do {                                                                                 \
        test_checks++;                                                                   \
        if (!(cond)) {                                                                   \
            test_failures++;                                                             \
            fprintf(stderr, "%s:%d: [%s] CHECK failed: %s\n", __FILE__, __LINE__, g_ctx, \
                    #cond);                                                              \
            if (g_cmd[0])                                                                \
                fprintf(stderr, "    command: %s\n    exit %d; stderr: %s%s", g_cmd,     \
                        g_rc, g_stderr[0] ? g_stderr : "(empty)\n",                      \
                        g_stderr[0] && !strchr(g_stderr, '\n') ? "\n" : "");             \
        }                                                                                \
    } while (0)

/* snprintf that fails the test run on truncation (and keeps GCC's
 * -Wformat-truncation quiet about paths of unknown length). */
void fmt(char *dst, size_t len, const char *f, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Names what the next checks test and forgets the last command. */
void set_ctx(const char *ctx);

/* "dir/name", in one of 32 rotating buffers; in_path and out_path in the
 * input and the output directory. */
const char *pjoin(const char *dir, const char *name);
const char *in_path(const char *name);
const char *out_path(const char *name);

/* Expands "@name" to the input directory's file and "%name" to the output
 * directory's, also after the '=' of "--opt=@name". */
void expand(const char *arg, char *dst, size_t len);

/* Runs qkv with args (NULL-terminated, without argv[0], each expanded);
 * the result lands in g_rc, g_stdout and g_stderr. */
int run_args(const char *const *args);
#define RUN(...) run_args((const char *const[]){__VA_ARGS__, NULL})

/* Starts qkv with args (expanded as run_args does) without waiting for
 * it: stdout goes to stdout_path (/dev/null when NULL), stderr to a file
 * that wait_qkv reads back, and when fsize > 0 the child's RLIMIT_FSIZE is
 * fsize bytes. Returns the child's pid; exits the test when it cannot. */
int start_qkv(const char *const *args, const char *stdout_path, long long fsize);
/* Waits for a child of start_qkv: its exit code (128 + signal number when
 * a signal killed it) in g_rc and its stderr in g_stderr; g_stdout empty. */
int wait_qkv(int pid);
/* start_qkv then wait_qkv: qkv with its stdout written to stdout_path. */
int run_to(const char *stdout_path, const char *const *args);
#define RUN_TO(path, ...) run_to(path, (const char *const[]){__VA_ARGS__, NULL})

/* A successful command prints nothing at all. */
#define EXPECT_OK(call)                                     \
    do {                                                    \
        EXPECT((call) == 0);                                \
        EXPECT(g_stdout[0] == '\0' && g_stderr[0] == '\0'); \
    } while (0)

/* Exactly one line: one '\n', at the end, and something before it. */
int one_line(const char *s);

/* Fixture writers; both exit(2) when they cannot write. W("name", dtype,
 * data, dims...) writes the input directory's name.npy. */
void write_array(const char *path, qkv_dtype dt, int ndim, const int64_t *shape,
                 const void *data);
#define NDIM(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define W(name, dt, data, ...) \
    write_array(in_path(name), dt, NDIM(__VA_ARGS__), (int64_t[]){__VA_ARGS__}, data)
void write_bytes(const char *path, const void *data, size_t len);

/* The whole file, NUL-terminated and malloc'd; NULL if unreadable. *len
 * (when len is not NULL) gets its length without the NUL. */
char *slurp(const char *path, size_t *len);

/* Is there a file (or anything) at path? lstat, so a dangling link counts. */
int exists(const char *path);

/* Empties the output directory (files and empty subdirectories); returns
 * how many entries it held and lists them into names (may be NULL). */
int clear_out(char *names, size_t len);

/* How many ".tmp-" temporaries the output directory holds. */
int out_tmp_count(void);

/* What a test puts where an output will go, to see that a failed command
 * left it alone: not an .npy file, so no command writes these bytes. */
#define OLD_BYTES "the old contents, not an .npy file\n"
void put_old(const char *path);
/* Is the file at path exactly OLD_BYTES? */
int holds_old(const char *path);

void sleep_ms(long ms);

/* `qkv run` maps its outputs from before the work on (unnamed files,
 * which no directory listing shows: /proc/PID/maps does). Polls every
 * millisecond, for up to max_ms, until the child pid maps a file of the
 * output directory: 1 then; 0 when it ended first (reaped: g_rc is its
 * code); -1 when the time ran out (the child is still to reap). */
int wait_mapping_outputs(int pid, long max_ms);
/* Stops the child (SIGSTOP) and waits until it is: 1; 0 when it ended
 * instead (reaped: g_rc is its code). */
int stop_child(int pid);

/* Checks that the output directory holds exactly `want` entries (any
 * number when want < 0), none of them a temporary, and empties it. */
static inline void expect_out_files(int want)
{
    char names[2048];
    int tmp = out_tmp_count();
    EXPECT(tmp == 0);
    int n = clear_out(names, sizeof names);
    if (want >= 0 && n != want) fprintf(stderr, "    output directory held:%s\n", names);
    EXPECT(want < 0 || n == want);
}

#endif
