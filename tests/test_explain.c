/* `qkv explain` end to end: the worked example's numbers against values
 * computed by hand (see below), the --scores softmax, the knobs, the user's
 * own vectors in both text formats, the page, and every error path (exit
 * code, one stderr line naming the flag or file, no page left behind).
 *
 * Hand computation of the default example (built-in table, d_k = 4):
 *   q = apple = (0, 2, 1, 0.3); keys cat (2, 0, .1, .1), apple, tree
 *   (.1, .5, 2, 0), juice (0, 1.5, 0, 2): q.k = 0.13, 5.09, 3.0, 3.6;
 *   divided by sqrt(4) = 2: 0.065, 2.545, 1.5, 1.8; softmax: 0.0438,
 *   0.5235, 0.1841, 0.2485; o = (0.1061, 1.5119, 0.8961, 0.6585);
 *   cos(o, pomme) = 0.9709, the largest.
 * --scores 0.9,0.95,0.2,0.6: exp = 2.4596, 2.5857, 1.2214, 1.8221, sum
 *   8.0888: 0.3041, 0.3197, 0.1510, 0.2253.
 * --causal --temperature 0.5: apple is key 2, so only cat and apple are
 *   seen; scale 0.5 / 0.5 = 1: softmax(0.13, 5.09) = 0.0070, 0.9930. */
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ASan reserves terabytes of address space, so RLIMIT_AS cannot be used there. */
#if defined(__SANITIZE_ADDRESS__)
#define EXPLAIN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EXPLAIN_ASAN 1
#endif
#endif

static char out[1 << 16], err[1 << 12];

static int run(char *const *argv) { return test_run_qkv(argv, out, sizeof out, err, sizeof err); }

/* Runs qkv explain with args (NULL-terminated, at most 13 of them). */
static int run_explain(const char *const *args)
{
    char *argv[16] = {"qkv", "explain"};
    int n = 2;
    for (int i = 0; args[i] && n < 15; i++) argv[n++] = (char *)args[i];
    argv[n] = NULL;
    return run(argv);
}

static void expect_all(const char *what, const char *const *needles)
{
    for (int i = 0; needles[i]; i++) {
        int found = strstr(out, needles[i]) != NULL;
        CHECK(found);
        if (!found) fprintf(stderr, "%s: missing \"%s\" in:\n%s\n", what, needles[i], out);
    }
}

static void check_default_example(void)
{
    char *argv[] = {"qkv", "explain", NULL};
    CHECK(run(argv) == 0);
    CHECK(err[0] == '\0');
    const char *const want[] = {
        "query apple      0.0000   2.0000   1.0000   0.3000", /* step 1 */
        "= 0.1300", "= 5.0900", "= 3.0000", "= 3.6000",       /* step 2 */
        "d_k = 4", "divides by 8",                            /* step 3 */
        "0.0650", "2.5450", "1.5000", "1.8000",
        "0.0438", "0.5235", "0.1841", "0.2485",               /* step 4 */
        "1.0000   <- the weights sum to 1",
        "o (sum)          0.1061   1.5119   0.8961   0.6585", /* step 5 */
        "cos(o, pomme) =  0.9709",                           /* step 6 */
        "nearest \"pomme\"", "translation of \"apple\"", NULL};
    expect_all("default", want);
}

static void check_scores(void)
{
    char *argv[] = {"qkv", "explain", "--scores", "0.9,0.95,0.2,0.6", NULL};
    CHECK(run(argv) == 0);
    const char *const want[] = {"0.3041", "0.3197", "0.1510", "0.2253", "1.0000",
                                "0.3396 0.3585 0.0755 0.2264", NULL};
    expect_all("--scores", want);
    /* Adding a constant to every score changes nothing. */
    char *shifted[] = {"qkv", "explain", "--scores", "10.9,10.95,10.2,10.6", NULL};
    CHECK(run(shifted) == 0);
    const char *const same[] = {"0.3041", "0.3197", "0.1510", "0.2253", NULL};
    expect_all("--scores shifted", same);
}

static void check_knobs(void)
{
    char *argv[] = {"qkv", "explain", "--causal", "--temperature", "0.5", NULL};
    CHECK(run(argv) == 0);
    const char *const want[] = {"position 2", "0.0070", "0.9930", "(hidden: score -inf)",
                                "without --causal and --temperature the weights are\n  "
                                "0.0438 0.5235 0.1841 0.2485", NULL};
    expect_all("--causal --temperature", want);
    /* --scale 1 on the default example: softmax(0.13, 5.09, 3.0, 3.6) =
     * 0.0052, 0.7374, 0.0912, 0.1662. */
    char *scale[] = {"qkv", "explain", "--scale", "1", NULL};
    CHECK(run(scale) == 0);
    const char *const want_scale[] = {"0.1300 * 1.0000 = 0.1300", "0.0052", "0.7374",
                                      "0.0912", "0.1662", NULL};
    expect_all("--scale", want_scale);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void check_own_vectors(const char *dir)
{
    char glove[512], w2v[512];
    snprintf(glove, sizeof glove, "%s/glove.txt", dir);
    snprintf(w2v, sizeof w2v, "%s/w2v.txt", dir);
    /* q = (1, 0); keys (1, 0) and (0, 1): q.k = 1, 0; scale 1/sqrt(2):
     * softmax(0.7071, 0) = 0.6698, 0.3302. */
    write_file(glove, "king 1 0\nqueen 0 1\nman 1 0\n");
    write_file(w2v, "3 2\nking 1 0\nqueen 0 1\nman 1 0\n");
    const char *files[2] = {glove, w2v};
    for (int f = 0; f < 2; f++) {
        char *argv[] = {"qkv", "explain", "--vectors", (char *)files[f], "--query", "man",
                        "--keys", "king,queen", NULL};
        CHECK(run(argv) == 0);
        const char *const want[] = {"0.6698", "0.3302", "d_k = 2", NULL};
        expect_all(files[f], want);
    }
}

typedef struct error_case {
    const char *args[12];
    int code;
    const char *names; /* stderr must contain it */
} error_case;

static void check_errors(const char *dir)
{
    char ragged[512], lying[512], nan[512], empty[512], page[512], huge[512], dots[512];
    snprintf(ragged, sizeof ragged, "%s/ragged.txt", dir);
    snprintf(lying, sizeof lying, "%s/lying.txt", dir);
    snprintf(nan, sizeof nan, "%s/nan.txt", dir);
    snprintf(empty, sizeof empty, "%s/empty.txt", dir);
    snprintf(page, sizeof page, "%s/page.html", dir);
    write_file(ragged, "a 1 2\nb 1 2 3\n");
    write_file(lying, "5 2\na 1 2\nb 2 1\n");
    write_file(nan, "a 1 nan\nb 1 2\n");
    write_file(empty, "");
    /* b's 1e39 does not fit the float32 libqkv takes values in; a.b = 1e400
     * does not fit a double. */
    snprintf(huge, sizeof huge, "%s/huge.txt", dir);
    snprintf(dots, sizeof dots, "%s/dots.txt", dir);
    write_file(huge, "a 1 1\nb 1e39 1\n");
    write_file(dots, "a 1e200 0\nb 1e200 0\nc 1 1\n");
    const error_case cases[] = {
        {{"--bogus"}, 2, "--bogus"},
        {{"--query"}, 2, "--query"},
        {{"--query", "apple", "--query", "cat"}, 2, "--query"},
        {{"--keys", "cat,,tree"}, 2, "--keys"},
        {{"--values", "chat"}, 2, "--values"},
        {{"--scale", "0"}, 2, "--scale"},
        {{"--scale", "abc"}, 2, "--scale"},
        {{"--temperature", "0"}, 2, "--temperature"},
        {{"--temperature", "-1"}, 2, "--temperature"},
        {{"--scores", "1,x"}, 2, "--scores"},
        {{"--scores", "1,2", "--keys", "a,b"}, 2, "--scores"},
        {{"--vectors", ragged}, 2, "--vectors"},
        {{"--html", ""}, 2, "--html"},
        {{"--query", "banana"}, 1, "--query: 'banana'"},
        {{"--keys", "cat,zebra"}, 1, "--keys: 'zebra'"},
        {{"--values", "chat,pomme,arbre,soda"}, 1, "--values: 'soda'"},
        {{"--vectors", ragged, "--query", "a", "--keys", "b"}, 1, "ragged.txt:2"},
        {{"--vectors", lying, "--query", "a", "--keys", "b"}, 1, "header says 5"},
        {{"--vectors", nan, "--query", "a", "--keys", "b"}, 1, "nan.txt:1"},
        {{"--vectors", empty, "--query", "a", "--keys", "b"}, 1, "no word vectors"},
        {{"--vectors", "/nonexistent/v.txt", "--query", "a", "--keys", "b"}, 1, "/nonexistent"},
        {{"--vectors", ragged, "--query", "a", "--keys", "zz", "--html", page}, 1, "ragged.txt"},
        {{"--html", "/nonexistent/dir/page.html"}, 1, "--html"},
        /* Numbers past what a double (or libqkv's float32) holds. */
        {{"--scores", "1e308,1", "--scale", "10"}, 2, "--scores"},
        {{"--temperature", "1e-320"}, 2, "--temperature"},
        {{"--scale", "1e308"}, 2, "--scale"},
        {{"--scale", "1e300", "--temperature", "1e-300"}, 2, "--scale"},
        {{"--vectors", huge, "--query", "a", "--keys", "b"}, 1, "huge.txt:2"},
        {{"--vectors", dots, "--query", "a", "--keys", "b", "--values", "c"}, 1, "dots.txt"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rc = run_explain(cases[c].args);
        size_t len = strlen(err);
        int one_line = len > 0 && err[len - 1] == '\n' && strchr(err, '\n') == err + len - 1;
        int named = strstr(err, cases[c].names) != NULL;
        CHECK(rc == cases[c].code);
        CHECK(one_line);
        CHECK(named);
        CHECK(out[0] == '\0'); /* nothing printed before the error */
        CHECK(access(page, F_OK) != 0);
        if (rc != cases[c].code || !one_line || !named || out[0])
            fprintf(stderr, "case %zu (%s ...): exit %d, stderr: %s\n", c, cases[c].args[0], rc,
                    err);
    }
}

static void check_html(const char *dir)
{
    char page[512];
    snprintf(page, sizeof page, "%s/explain.html", dir);
    char *argv[] = {"qkv", "explain", "--html", page, NULL};
    CHECK(run(argv) == 0);
    struct stat st;
    CHECK(stat(page, &st) == 0 && st.st_size > 100);
    FILE *f = fopen(page, "r");
    if (f) {
        static char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        CHECK(strstr(buf, "juice") != NULL); /* key labels */
        CHECK(strstr(buf, "apple") != NULL);
    }
}

/* The line of out that starts with "  LABEL " must hold want. */
static void expect_row(const char *what, const char *label, const char *want)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "\n  %s ", label);
    const char *row = strstr(out, prefix);
    const char *end = row ? strchr(row + 1, '\n') : NULL;
    int found = row && end;
    if (found) {
        const char *hit = strstr(row + 1, want);
        found = hit && hit < end;
    }
    CHECK(found);
    if (!found) fprintf(stderr, "%s: no row \"%s\" holding \"%s\" in:\n%s\n", what, label, want, out);
}

/* Scores and vectors far past float's range (or a double's precision at
 * float's) have exact answers: the largest score takes all the weight
 * once it leads by more than about 750. Hand-computed weights; no NaN. */
static void check_large_numbers(const char *dir)
{
    char big[512];
    snprintf(big, sizeof big, "%s/big.txt", dir);
    /* q = a = (1e30, 0): q.big = 1e60, q.other = 0; scale 1/sqrt(2). */
    write_file(big, "a 1e30 0\nbig 1e30 1e30\nother 0 1e30\n");
    struct {
        const char *args[8];
        const char *rows[4][2]; /* label, what its row holds */
    } cases[] = {
        {{"--scores", "1e39,1"}, {{"1e39", "1.0000"}, {"1", "0.0000"}, {"sum", "1.0000"}}},
        {{"--scores", "1e308,-1e308"},
         {{"1e308", "1.0000"}, {"-1e308", "0.0000"}, {"-1e308", "-2e+308"}}},
        /* Both round to one float32; in double they keep their gap of 1:
         * softmax(1, 0) = 0.7311, 0.2689. */
        {{"--scores", "10000000001,10000000000"},
         {{"10000000001", "0.7311"}, {"10000000000", "0.2689"}}},
        {{"--scale", "1e38"},
         {{"apple", "1.0000"}, {"cat", "0.0000"}, {"juice", "0.0000"}, {"o (sum)", "2.0000"}}},
        {{"--temperature", "1e-39"},
         {{"apple", "1.0000"}, {"tree", "0.0000"}, {"cos(o, pomme)", "1.0000"}}},
        {{"--vectors", big, "--query", "a", "--keys", "big,other"},
         {{"big", "1.0000"}, {"other", "0.0000"}, {"sum", "1.0000"}}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rc = run_explain(cases[c].args);
        CHECK(rc == 0);
        CHECK(err[0] == '\0');
        CHECK(strstr(out, "nan") == NULL && strstr(out, "inf ") == NULL);
        if (rc != 0 || err[0]) fprintf(stderr, "large case %zu: exit %d, stderr: %s\n", c, rc, err);
        for (int r = 0; r < 4 && cases[c].rows[r][0]; r++)
            expect_row(cases[c].args[1], cases[c].rows[r][0], cases[c].rows[r][1]);
    }
}

/* A vector of 2^20 + 1 numbers: the fast path's limit on head dims, whose
 * message suggests a --reference flag explain does not have. q = a =
 * (1, 0, ...), keys a and b = (0, 1, 0, ...): q.k = 1, 0, scale
 * 1/sqrt(1048577) = 0.00097656: softmax = 0.50024, 0.49976. */
static void check_wide_vectors(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/wide.txt", dir);
    const int dim = (1 << 20) + 1;
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    for (int w = 0; w < 2; w++) {
        fputs(w ? "b" : "a", f);
        for (int e = 0; e < dim; e++) fputs(e == w ? " 1" : " 0", f);
        fputc('\n', f);
    }
    fclose(f);
    char *argv[] = {"qkv", "explain", "--vectors", path, "--query", "a", "--keys", "a,b", NULL};
    int rc = run(argv);
    CHECK(rc == 0);
    CHECK(strstr(err, "reference") == NULL);
    if (rc != 0) fprintf(stderr, "wide vectors: exit %d, stderr: %s\n", rc, err);
    expect_row("wide", "a", "0.5002");
    expect_row("wide", "b", "0.4998");
    remove(path);
}

/* Runs qkv like run(), under RLIMIT_AS of as_mib MiB (none when 0) and a
 * CPU and wall-clock bound, so that a reader that never stops fails its
 * check instead of hanging the test. stdout and stderr go through files
 * in dir (no pipe to fill). */
static int run_limited(char **argv, long as_mib, const char *dir)
{
    char opath[512], epath[512];
    snprintf(opath, sizeof opath, "%s/limited.out", dir);
    snprintf(epath, sizeof epath, "%s/limited.err", dir);
    argv[0] = (char *)QKV_BIN;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int o = open(opath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(epath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) _exit(127);
        struct rlimit cpu = {60, 61};
        setrlimit(RLIMIT_CPU, &cpu);
        if (as_mib > 0) {
            struct rlimit as = {(rlim_t)as_mib << 20, (rlim_t)as_mib << 20};
            if (setrlimit(RLIMIT_AS, &as) != 0) _exit(127);
        }
        alarm(120); /* kept across exec */
        execv(QKV_BIN, argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    const char *paths[2] = {opath, epath};
    char *bufs[2] = {out, err};
    size_t caps[2] = {sizeof out, sizeof err};
    for (int i = 0; i < 2; i++) {
        bufs[i][0] = '\0';
        FILE *f = fopen(paths[i], "r");
        if (!f) continue;
        size_t got = fread(bufs[i], 1, caps[i] - 1, f);
        bufs[i][got] = '\0';
        fclose(f);
        remove(paths[i]);
    }
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

/* One error line on stderr holding each of the needles, exit 1, nothing on stdout. */
static void expect_error(const char *what, int rc, const char *const *needles)
{
    size_t len = strlen(err);
    int ok = rc == 1 && len > 0 && strchr(err, '\n') == err + len - 1 && out[0] == '\0';
    for (int i = 0; needles[i]; i++) ok &= strstr(err, needles[i]) != NULL;
    CHECK(ok);
    if (!ok) fprintf(stderr, "%s: exit %d, stderr: %s\nstdout: %.200s\n", what, rc, err, out);
}

/* A long line that memory cannot hold, after good lines: an error naming
 * the file and the line, not a silent end of the file there. The limit is
 * the smallest power of two of MiB under which the good lines alone run;
 * the long line needs 15 MiB more. */
static void check_line_out_of_memory(const char *dir)
{
#ifdef EXPLAIN_ASAN
    (void)dir;
    printf("test_explain: out-of-memory check skipped under ASan (no RLIMIT_AS)\n");
#else
    char good[512], longer[512];
    snprintf(good, sizeof good, "%s/good.txt", dir);
    snprintf(longer, sizeof longer, "%s/longline.txt", dir);
    write_file(good, "a 1 2\nb 2 1\n");
    FILE *f = fopen(longer, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("a 1 2\nb 2 1\n", f);
    static char chunk[1 << 16];
    memset(chunk, 'w', sizeof chunk);
    for (int i = 0; i < 15 * 16; i++) fwrite(chunk, 1, sizeof chunk, f);
    fputs(" 1 2\n", f);
    fclose(f);
    long lim = 8;
    for (; lim <= 256; lim *= 2) {
        char *argv[] = {"qkv", "explain", "--vectors", good, "--query", "a", "--keys", "b", NULL};
        if (run_limited(argv, lim, dir) == 0) break;
    }
    CHECK(lim <= 256);
    char *argv[] = {"qkv", "explain", "--vectors", longer, "--query", "a", "--keys", "b", NULL};
    int rc = run_limited(argv, lim, dir);
    const char *const want[] = {"longline.txt:3", "memory", NULL};
    expect_error("long line under RLIMIT_AS", rc, want);
    remove(good);
    remove(longer);
#endif
}

/* Forks a writer that opens the FIFO at path and writes the n bytes at p
 * over and over until the reader goes away. */
static pid_t feed_forever(const char *path, const char *p, size_t n)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid != 0) return pid;
    alarm(150);
    signal(SIGPIPE, SIG_IGN);
    int fd = open(path, O_WRONLY);
    if (fd < 0) _exit(3);
    for (;;)
        if (write(fd, p, n) < 0 && errno != EINTR) break;
    _exit(0);
}

static void reap(pid_t pid)
{
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* /dev/zero and pipes that never end: one line naming the file, within
 * bounded memory and time. */
static void check_endless_input(const char *dir)
{
    long lim = 0; /* MiB of address space; the old reader grew until it ran out */
#ifndef EXPLAIN_ASAN
    lim = 1024;
#endif
    {
        char *argv[] = {"qkv", "explain", "--vectors", "/dev/zero", "--query", "a", "--keys",
                        "b", NULL};
        int rc = run_limited(argv, lim, dir);
        const char *const want[] = {"/dev/zero:1", "NUL", NULL};
        expect_error("/dev/zero", rc, want);
    }
    char fifo[512];
    snprintf(fifo, sizeof fifo, "%s/endless", dir);
    static char lines[1 << 16], word[1 << 16];
    for (size_t i = 0; i + 4 <= sizeof lines; i += 4) memcpy(lines + i, "a 1\n", 4);
    memset(word, 'x', sizeof word);
    const struct {
        const char *what, *data, *needle;
    } feeds[] = {
        {"endless lines", lines, "16777216 lines"},
        {"endless line", word, "endless:1"},
    };
    for (int i = 0; i < 2; i++) {
        CHECK(mkfifo(fifo, 0600) == 0);
        pid_t w = feed_forever(fifo, feeds[i].data, sizeof lines);
        char *argv[] = {"qkv", "explain", "--vectors", fifo, "--query", "a", "--keys", "a", NULL};
        int rc = run_limited(argv, lim, dir);
        reap(w);
        remove(fifo);
        const char *const want[] = {"endless", feeds[i].needle, NULL};
        expect_error(feeds[i].what, rc, want);
    }
}

/* User text in error messages is cut to a short prefix and "...": a 20 kB
 * token gives a line of a few hundred bytes, not 20 kB. */
static void check_quoting(const char *dir)
{
    static char tok[20001], list[20010], values[20030], keys[20010], text[40100];
    memset(tok, 'x', sizeof tok - 1);
    snprintf(list, sizeof list, "cat,%s", tok);
    snprintf(values, sizeof values, "chat,pomme,arbre,%s", tok);
    snprintf(keys, sizeof keys, "a,%s", tok);
    static char scores[20010];
    snprintf(scores, sizeof scores, "1,%s", tok);
    char badnum[512], noword[512], ragged[512], good[512];
    snprintf(good, sizeof good, "%s/goodwords.txt", dir);
    write_file(good, "a 1 2\n");
    snprintf(badnum, sizeof badnum, "%s/badnum.txt", dir);
    snprintf(noword, sizeof noword, "%s/nonumbers.txt", dir);
    snprintf(ragged, sizeof ragged, "%s/raggedword.txt", dir);
    snprintf(text, sizeof text, "a 1 2\nb 1 %s\n", tok);
    write_file(badnum, text);
    snprintf(text, sizeof text, "a 1 2\n%s\n", tok);
    write_file(noword, text);
    snprintf(text, sizeof text, "a 1 2\n%s 1 2 3\n", tok);
    write_file(ragged, text);
    static char empty_item[20010];
    snprintf(empty_item, sizeof empty_item, "%s,,a", tok);
    const error_case cases[] = {
        {{"--keys", list}, 1, "--keys"},
        {{"--query", tok}, 1, "--query"},
        {{"--query", list}, 2, "--query"},
        {{"--values", values}, 1, "--values"},
        {{"--keys", empty_item}, 2, "--keys"},
        {{"--scores", scores}, 2, "--scores"},
        {{"--scale", tok}, 2, "--scale"},
        {{"--temperature", tok}, 2, "--temperature"},
        {{"--vectors", badnum, "--query", "a", "--keys", "b"}, 1, "badnum.txt:2"},
        {{"--vectors", noword, "--query", "a", "--keys", "a"}, 1, "nonumbers.txt:2"},
        {{"--vectors", ragged, "--query", "a", "--keys", "a"}, 1, "raggedword.txt:2"},
        {{"--vectors", good, "--query", "a", "--keys", keys}, 1, "--keys"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rc = run_explain(cases[c].args);
        size_t len = strlen(err);
        int ok = rc == cases[c].code && len > 0 && len < 400 && err[len - 1] == '\n' &&
                 strchr(err, '\n') == err + len - 1 && strstr(err, cases[c].names) &&
                 strstr(err, "xxx...");
        CHECK(ok);
        if (!ok)
            fprintf(stderr, "quoting case %zu (%s): exit %d, %zu bytes of stderr: %.300s\n", c,
                    cases[c].args[0], rc, len, err);
    }
}

int main(void)
{
    char *dir = test_tmpdir();
    check_default_example();
    check_scores();
    check_knobs();
    check_own_vectors(dir);
    check_errors(dir);
    check_html(dir);
    check_large_numbers(dir);
    check_wide_vectors(dir);
    check_quoting(dir);
    check_line_out_of_memory(dir);
    check_endless_input(dir);
    test_rmdir(dir);
    return test_finish("test_explain");
}
