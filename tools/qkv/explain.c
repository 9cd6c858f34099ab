/* `qkv explain`: one query's attention, step by step, every number on
 * screen. The default is the worked example (the English query "apple"
 * against the keys cat, apple, tree, juice, with the French values chat,
 * pomme, arbre, jus) on a small hand-made table of word vectors; users
 * bring their own vectors in the GloVe / word2vec text format. This file
 * is the command: its options, the words it is given, the page of --html
 * and the driver; the steps are in explain_steps.c. Everything is
 * computed before anything is printed, so a failure never leaves half a
 * report. */
#include "commands.h"
#include "explain.h"
#include "picture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char explain_usage[] =
    "usage: qkv explain [options]\n"
    "\n"
    "Shows how attention turns one query into an output, step by step: the\n"
    "query, key and value vectors, the dot products, the scaling by\n"
    "1/sqrt(d_k), the softmax weights, the weighted sum of the values and the\n"
    "value the output is nearest. Without options it runs the worked example:\n"
    "the query \"apple\" against the keys cat, apple, tree, juice, with the\n"
    "French values chat, pomme, arbre, jus.\n"
    "\n"
    "options:\n"
    "  --vectors FILE      word vectors in the GloVe text format (word x1 x2 ...)\n"
    "                      or word2vec's text format (a first line \"COUNT DIM\"),\n"
    "                      at most 16777216 lines of at most 16 MiB each; the\n"
    "                      value words' numbers must fit float32 (|x| <= 3.4e38),\n"
    "                      the type libqkv computes the output in;\n"
    "                      default: qkv's built-in table (see docs/guide.md)\n"
    "  --query WORD        the query word (default apple)\n"
    "  --keys W1,W2,...    the key words (default cat,apple,tree,juice)\n"
    "  --values W1,W2,...  the value words, one per key (default: the keys'\n"
    "                      French words in the built-in table, else the keys)\n"
    "  --causal            the query sits at its own word's place among the keys\n"
    "                      (after them all when it is not one) and may not see\n"
    "                      the keys after it\n"
    "  --scale S           multiply the dot products by S instead of 1/sqrt(d_k)\n"
    "  --temperature T     divide the scaled scores by T > 0: T < 1 sharpens the\n"
    "                      weights, T > 1 flattens them (default 1)\n"
    "  --scores S1,S2,...  skip the vectors: show the softmax of these scores\n"
    "                      (scale 1 unless --scale is given)\n"
    "  --html PAGE.html    also write an interactive page of the weights\n"
    "  -h, --help          show this help\n"
    "\n"
    "Scores are computed in double: one past a double's range (about 1.8e308)\n"
    "is an error naming the flag. Words are case-sensitive. Exit status:\n"
    "0 success, 1 error, 2 usage error.\n";

/* CLI_OK, CLI_USAGE (printed), or -1 for --help. */
static int parse_args(int argc, char **argv, explain_args *a)
{
    const cli_opt opts[] = {
        {"--vectors", &a->vectors, NULL, 0}, {"--query", &a->query, NULL, 0},
        {"--keys", &a->keys, NULL, 0},       {"--values", &a->values, NULL, 0},
        {"--scale", &a->scale, NULL, 0},     {"--temperature", &a->temperature, NULL, 0},
        {"--scores", &a->scores, NULL, 0},   {"--html", &a->html, NULL, 0},
        {"--causal", NULL, &a->causal, 0},
    };
    int rc = cli_parse_args("explain", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL);
    if (rc != CLI_OK) return rc;
    if (a->scores && (a->vectors || a->query || a->keys || a->values || a->causal)) {
        cli_error("explain", "--scores works without vectors: drop --vectors, --query, --keys, "
                             "--values and --causal");
        return CLI_USAGE;
    }
    if (a->vectors && (!a->query || !a->keys)) {
        cli_error("explain", "--vectors needs --query and --keys (words of that file)");
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* The numbers of --scale (0 when not given) and --temperature (1), and
 * the --html path checked. CLI_OK, or the exit code after printing. */
static int parse_knobs(const explain_args *a, double *scale, double *temp)
{
    char b1[SHOW_CAP];
    *scale = 0;
    *temp = 1;
    if (a->scale && !cli_parse_scale(a->scale, scale)) {
        cli_error("explain", "--scale: '%s', " CLI_SCALE_EXPECTED,
                  explain_show(b1, a->scale));
        return CLI_USAGE;
    }
    if (a->temperature &&
        (!cli_parse_double(a->temperature, temp) || !isfinite(*temp) || *temp <= 0)) {
        cli_error("explain", "--temperature: '%s', expected a finite number > 0",
                  explain_show(b1, a->temperature));
        return CLI_USAGE;
    }
    if (a->html) {
        const char *const flags[1] = {"--html"};
        const char *const paths[1] = {a->html};
        return cli_check_output_paths("explain", 1, flags, paths);
    }
    return CLI_OK;
}

/* ------------------------------------------------------------ the page */

typedef struct page {
    picture pic;
    const char *intro;
} page;

static const char *write_page(const char *path, void *ctx)
{
    const page *pg = ctx;
    return picture_write_html(path, &pg->pic, pg->intro);
}

int write_html(cli_outputs *outs, const char *path, const char *title, const char *query,
               const char *const *keys, int n, const float *w, const char *intro)
{
    const char *labels_q[1] = {query};
    page pg = {{title, 1, 1, n, w, NULL, labels_q, keys}, intro};
    return cli_outputs_add_with(outs, "explain", "--html", path, write_page, &pg);
}

/* The text on stdout is the command's result: the page is renamed into
 * place only when all of the text was written. */
int put_html(cli_outputs *outs)
{
    return outs->n == 0 || (cli_stdout_ok("explain", 0) && cli_outputs_commit(outs, "explain"));
}

/* ------------------------------------------------------------ main path */

/* The query, the keys and the values (given, or the defaults), then their
 * vectors. CLI_OK, or the exit code after printing. */
static int read_input(explain_input *in)
{
    const explain_args *a = in->a;
    char b1[SHOW_CAP];
    if (!split_list("--query", a->query ? a->query : "apple", &in->query) ||
        !split_list("--keys", a->keys ? a->keys : "cat,apple,tree,juice", &in->keys))
        return CLI_USAGE;
    if (in->query.n != 1) {
        cli_error("explain", "--query: '%s' is %d words, expected one", explain_show(b1, a->query),
                  in->query.n);
        return CLI_USAGE;
    }
    const int n = in->keys.n;
    in->default_values = !a->values;
    if (a->values) {
        if (!split_list("--values", a->values, &in->values)) return CLI_USAGE;
        if (in->values.n != n) {
            cli_error("explain", "--values: %d words, expected %d: one per key", in->values.n, n);
            return CLI_USAGE;
        }
    } else if (!default_values(&in->keys, !a->vectors, &in->values)) {
        cli_error("explain", "out of memory");
        return CLI_ERROR;
    }
    const words *const lists[3] = {&in->query, &in->keys, &in->values};
    if (!lexicon_load(a->vectors, lists, 3, &in->values, &in->lx) ||
        !check_known("--query", &in->query, &in->lx) ||
        !check_known("--keys", &in->keys, &in->lx) ||
        !check_known("--values", &in->values, &in->lx))
        return CLI_ERROR;
    return CLI_OK;
}

/* The query against its keys: computed, the page written, the report
 * printed, the page put in place. The exit code. */
static int explain_query(const explain_input *in)
{
    explained x = {0};
    cli_outputs outs = {0};
    int rc = explain_compute(in, &x);
    if (rc == CLI_OK && in->a->html) {
        char intro[512];
        snprintf(intro, sizeof intro,
                 "<p>One query against %d keys; scores multiplied by %.4g before the softmax. "
                 "Hover or click the query to see its weight on each key.</p>", x.n, x.eff);
        if (!write_html(&outs, in->a->html, "qkv explain", in->query.w[0],
                        (const char *const *)in->keys.w, x.n, x.w, intro))
            rc = CLI_ERROR;
    }
    if (rc == CLI_OK) {
        explain_print(in, &x);
        if (!put_html(&outs)) rc = CLI_ERROR;
    }
    cli_outputs_abort(&outs);
    explained_free(&x);
    return rc;
}

int cmd_explain(int argc, char **argv)
{
    explain_args a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc == -1) {
        fputs(explain_usage, stdout);
        return CLI_OK;
    }
    explain_input in = {.a = &a, .scale = 0, .temp = 1};
    if (rc == CLI_OK) rc = parse_knobs(&a, &in.scale, &in.temp);
    if (rc != CLI_OK) return rc;
    if (a.scores) return explain_scores(&a, in.scale, in.temp);
    rc = read_input(&in);
    if (rc == CLI_OK) rc = explain_query(&in);
    words_free(&in.query);
    words_free(&in.keys);
    words_free(&in.values);
    lexicon_free(&in.lx);
    return rc;
}
