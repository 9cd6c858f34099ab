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

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char out[1 << 16], err[1 << 12];

static int run(char *const *argv) { return test_run_qkv(argv, out, sizeof out, err, sizeof err); }

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
                                "without --causal, --temperature the weights are\n  "
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
    char ragged[512], lying[512], nan[512], empty[512], page[512];
    snprintf(ragged, sizeof ragged, "%s/ragged.txt", dir);
    snprintf(lying, sizeof lying, "%s/lying.txt", dir);
    snprintf(nan, sizeof nan, "%s/nan.txt", dir);
    snprintf(empty, sizeof empty, "%s/empty.txt", dir);
    snprintf(page, sizeof page, "%s/page.html", dir);
    write_file(ragged, "a 1 2\nb 1 2 3\n");
    write_file(lying, "5 2\na 1 2\nb 2 1\n");
    write_file(nan, "a 1 nan\nb 1 2\n");
    write_file(empty, "");
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
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *argv[16] = {"qkv", "explain"};
        int n = 2;
        for (int i = 0; cases[c].args[i]; i++) argv[n++] = (char *)cases[c].args[i];
        argv[n] = NULL;
        int rc = run(argv);
        size_t len = strlen(err);
        int one_line = len > 0 && err[len - 1] == '\n' && strchr(err, '\n') == err + len - 1;
        int named = strstr(err, cases[c].names) != NULL;
        CHECK(rc == cases[c].code);
        CHECK(one_line);
        CHECK(named);
        CHECK(access(page, F_OK) != 0);
        if (rc != cases[c].code || !one_line || !named)
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

int main(void)
{
    char *dir = test_tmpdir();
    check_default_example();
    check_scores();
    check_knobs();
    check_own_vectors(dir);
    check_errors(dir);
    check_html(dir);
    test_rmdir(dir);
    return test_finish("test_explain");
}
