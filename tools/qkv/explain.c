/* `qkv explain`: one query's attention, step by step, every number on
 * screen. The default is the worked example (the English query "apple"
 * against the keys cat, apple, tree, juice, with the French values chat,
 * pomme, arbre, jus) on a small hand-made table of word vectors; users
 * bring their own vectors in the GloVe / word2vec text format. The weights
 * and the output come from libqkv itself; the steps before them are shown
 * in double precision and checked against what the library returned. */
#define _XOPEN_SOURCE 700 /* getline, strdup */
#include "cli.h"
#include "commands.h"
#include "picture.h"

#include <errno.h>
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
    "                      or word2vec's text format (a first line \"COUNT DIM\");\n"
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
    "Words are case-sensitive. Exit status: 0 success, 1 error, 2 usage error.\n";

/* ------------------------------------------------------------ the table */

/* Four named features; each word says by hand how much it is an animal, a
 * fruit, a plant and a drink. French words carry the same numbers as their
 * English partners: a value vector holds the meaning the output takes on. */
enum { BUILTIN_DIM = 4 };
static const char *const builtin_features[BUILTIN_DIM] = {"animal", "fruit", "plant", "drink"};
static const struct {
    const char *en, *fr;
    double x[BUILTIN_DIM];
} builtin_words[] = {
    {"cat", "chat", {2.0, 0.0, 0.1, 0.1}},
    {"dog", "chien", {2.0, 0.1, 0.0, 0.2}},
    {"apple", "pomme", {0.0, 2.0, 1.0, 0.3}},
    {"orange", "orange", {0.0, 2.0, 0.8, 0.8}},
    {"tree", "arbre", {0.1, 0.5, 2.0, 0.0}},
    {"flower", "fleur", {0.1, 0.2, 1.8, 0.0}},
    {"juice", "jus", {0.0, 1.5, 0.0, 2.0}},
    {"water", "eau", {0.2, 0.0, 0.5, 2.0}},
    {"milk", "lait", {0.5, 0.0, 0.0, 2.0}},
};
enum { BUILTIN_COUNT = sizeof builtin_words / sizeof builtin_words[0] };

/* ------------------------------------------------------------ word lists */

typedef struct words {
    int n;
    char **w;
} words;

static void words_free(words *l)
{
    for (int i = 0; i < l->n; i++) free(l->w[i]);
    free(l->w);
    l->n = 0;
    l->w = NULL;
}

/* Splits "a,b,c" into words; empty items are a usage error. */
static int split_list(const char *flag, const char *s, words *out)
{
    out->n = 0;
    out->w = NULL;
    size_t cap = 1;
    for (const char *c = s; *c; c++) cap += *c == ',';
    out->w = calloc(cap, sizeof *out->w);
    if (!out->w) {
        cli_error("explain", "%s: out of memory", flag);
        return 0;
    }
    const char *start = s;
    for (;;) {
        const char *end = strchr(start, ',');
        size_t len = end ? (size_t)(end - start) : strlen(start);
        if (len == 0) {
            cli_error("explain", "%s: '%s' has an empty item; expected W1,W2,...", flag, s);
            words_free(out);
            return 0;
        }
        char *w = malloc(len + 1);
        if (!w) {
            cli_error("explain", "%s: out of memory", flag);
            words_free(out);
            return 0;
        }
        memcpy(w, start, len);
        w[len] = '\0';
        out->w[out->n++] = w;
        if (!end) break;
        start = end + 1;
    }
    return 1;
}

/* ------------------------------------------------------------ vectors */

/* The vectors of the words asked for, each `dim` doubles; feature names
 * only for the built-in table. */
typedef struct lexicon {
    int dim;
    const char *const *features; /* NULL: columns are numbered */
    const char *source;          /* "built-in table" or the file */
    int n;
    char **word;
    double **vec;
} lexicon;

static void lexicon_free(lexicon *lx)
{
    for (int i = 0; i < lx->n; i++) {
        free(lx->word[i]);
        free(lx->vec[i]);
    }
    free(lx->word);
    free(lx->vec);
}

static const double *lexicon_find(const lexicon *lx, const char *w)
{
    for (int i = 0; i < lx->n; i++)
        if (strcmp(lx->word[i], w) == 0) return lx->vec[i];
    return NULL;
}

static int lexicon_add(lexicon *lx, const char *w, const double *x)
{
    char **nw = realloc(lx->word, (size_t)(lx->n + 1) * sizeof *nw);
    if (nw) lx->word = nw;
    double **nv = realloc(lx->vec, (size_t)(lx->n + 1) * sizeof *nv);
    if (nv) lx->vec = nv;
    char *wc = strdup(w);
    double *xc = malloc((size_t)lx->dim * sizeof *xc);
    if (!nw || !nv || !wc || !xc) {
        free(wc);
        free(xc);
        return 0;
    }
    memcpy(xc, x, (size_t)lx->dim * sizeof *xc);
    lx->word[lx->n] = wc;
    lx->vec[lx->n] = xc;
    lx->n++;
    return 1;
}

static int wanted(const words *const lists[], int nlists, const char *w)
{
    for (int l = 0; l < nlists; l++)
        for (int i = 0; i < lists[l]->n; i++)
            if (strcmp(lists[l]->w[i], w) == 0) return 1;
    return 0;
}

/* Reads a GloVe / word2vec text file, keeping only the wanted words (files
 * of a million words stay cheap) while checking every line: the same count
 * of finite numbers on each, and a word2vec header that tells the truth.
 * The first line for a word wins. */
static int read_vectors(const char *path, const words *const lists[], int nlists, lexicon *lx)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_error("explain", "--vectors %s: cannot open: %s", path, strerror(errno));
        return 0;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, first_line = 0, data_lines = 0;
    long long header_count = -1, header_dim = -1;
    double *x = NULL;
    int ok = 0, xcap = 0;
    lx->dim = 0;
    lx->source = path;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if ((size_t)len != strlen(line)) {
            cli_error("explain", "--vectors %s:%ld: a NUL byte; expected text", path, lineno);
            goto done;
        }
        if (lineno == 1) { /* word2vec's "COUNT DIM" header? Probe a copy. */
            int64_t c, d;
            char *copy = strdup(line), *hs = NULL;
            char *t1 = copy ? strtok_r(copy, " \t", &hs) : NULL;
            char *t2 = t1 ? strtok_r(NULL, " \t", &hs) : NULL;
            int header = t2 && !strtok_r(NULL, " \t", &hs) && cli_parse_int64(t1, &c) &&
                         cli_parse_int64(t2, &d) && c >= 0 && d >= 1;
            free(copy);
            if (header) {
                header_count = c;
                header_dim = d;
                continue;
            }
        }
        char *save = NULL, *tok = strtok_r(line, " \t", &save);
        if (!tok) {
            cli_error("explain", "--vectors %s:%ld: empty line; expected a word and numbers",
                      path, lineno);
            goto done;
        }
        const char *word = tok;
        int count = 0;
        char *num;
        while ((num = strtok_r(NULL, " \t", &save))) {
            if (count == xcap) {
                int ncap = xcap ? 2 * xcap : 64;
                double *nx = realloc(x, (size_t)ncap * sizeof *nx);
                if (!nx) {
                    cli_error("explain", "--vectors %s:%ld: out of memory", path, lineno);
                    goto done;
                }
                x = nx;
                xcap = ncap;
            }
            if (!cli_parse_double(num, &x[count]) || !isfinite(x[count])) {
                cli_error("explain", "--vectors %s:%ld: '%s' after '%s' is not a finite number",
                          path, lineno, num, word);
                goto done;
            }
            count++;
        }
        if (count == 0) {
            cli_error("explain", "--vectors %s:%ld: '%s' has no numbers", path, lineno, word);
            goto done;
        }
        if (header_dim > 0 && count != header_dim) {
            cli_error("explain", "--vectors %s:%ld: %d number%s after '%s', expected %lld as the "
                      "header on line 1 says", path, lineno, count, count == 1 ? "" : "s", word,
                      header_dim);
            goto done;
        }
        if (lx->dim == 0) {
            lx->dim = count;
            first_line = lineno;
        } else if (count != lx->dim) {
            cli_error("explain", "--vectors %s:%ld: %d number%s after '%s', expected %d as on "
                      "line %ld", path, lineno, count, count == 1 ? "" : "s", word, lx->dim,
                      first_line);
            goto done;
        }
        data_lines++;
        if (wanted(lists, nlists, word) && !lexicon_find(lx, word) && !lexicon_add(lx, word, x)) {
            cli_error("explain", "--vectors %s:%ld: out of memory", path, lineno);
            goto done;
        }
    }
    if (ferror(f)) {
        cli_error("explain", "--vectors %s: read error: %s", path, strerror(errno));
        goto done;
    }
    if (data_lines == 0) {
        cli_error("explain", "--vectors %s: no word vectors in the file", path);
        goto done;
    }
    if (header_count >= 0 && header_count != data_lines) {
        cli_error("explain", "--vectors %s: the header says %lld words, the file has %ld", path,
                  header_count, data_lines);
        goto done;
    }
    ok = 1;
done:
    free(line);
    free(x);
    fclose(f);
    return ok;
}

static int builtin_vectors(const words *const lists[], int nlists, lexicon *lx)
{
    lx->dim = BUILTIN_DIM;
    lx->features = builtin_features;
    lx->source = "the built-in table";
    for (int i = 0; i < BUILTIN_COUNT; i++) {
        const char *names[2] = {builtin_words[i].en, builtin_words[i].fr};
        for (int t = 0; t < 2; t++)
            if (wanted(lists, nlists, names[t]) && !lexicon_find(lx, names[t]) &&
                !lexicon_add(lx, names[t], builtin_words[i].x)) {
                cli_error("explain", "out of memory");
                return 0;
            }
    }
    return 1;
}

/* Every word of the list must have a vector. */
static int check_known(const char *flag, const words *l, const lexicon *lx)
{
    for (int i = 0; i < l->n; i++) {
        if (lexicon_find(lx, l->w[i])) continue;
        if (lx->features) { /* the built-in table: say what it has */
            char known[512];
            size_t used = 0;
            for (int j = 0; j < BUILTIN_COUNT && used < sizeof known; j++)
                used += (size_t)snprintf(known + used, sizeof known - used, "%s%s/%s",
                                         j ? ", " : "", builtin_words[j].en, builtin_words[j].fr);
            cli_error("explain", "%s: '%s' is not in the built-in table (it has %s; or use "
                      "--vectors FILE)", flag, l->w[i], known);
        } else {
            cli_error("explain", "%s: '%s' is not in %s", flag, l->w[i], lx->source);
        }
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ printing */

/* Columns shown for a vector: all of them up to 8, else the first 6. */
static int shown_dims(int dim) { return dim <= 8 ? dim : 6; }

static void print_header_row(int width, const lexicon *lx)
{
    printf("  %-*s", width, "");
    for (int d = 0; d < shown_dims(lx->dim); d++) {
        if (lx->features)
            printf(" %8s", lx->features[d]);
        else
            printf("      x%-2d", d + 1);
    }
    if (shown_dims(lx->dim) < lx->dim) printf("   ... (%d numbers)", lx->dim);
    printf("\n");
}

static void print_vector_row(int width, const char *label, const double *x, int dim)
{
    printf("  %-*s", width, label);
    for (int d = 0; d < shown_dims(dim); d++) printf(" %8.4f", x[d]);
    if (shown_dims(dim) < dim) printf("   ...");
    printf("\n");
}

static void print_bar(double w)
{
    int n = (int)(w * 30.0 + 0.5); /* 30 columns: lines stay within 80 */
    printf("  ");
    for (int i = 0; i < n; i++) putchar('#');
}

static double dot(const double *a, const double *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* The width of the longest "PREFIX word SUFFIX" label over a list, so
 * that the "=" signs of a step line up. */
static int label_width(const char *prefix, const words *l, const char *suffix)
{
    int w = 0;
    for (int i = 0; i < l->n; i++) {
        int n = (int)(strlen(prefix) + strlen(l->w[i]) + strlen(suffix));
        w = n > w ? n : w;
    }
    return w;
}

/* ------------------------------------------------------------ the maths */

/* One query against n keys through libqkv: weights (n) and output (dv).
 * allowed[j] == 0 hides key j. Returns 0 after printing on failure. */
static int attend(const double *q, double *const *k, double *const *v, int n, int d, int dv,
                  double scale, const unsigned char *allowed, float *weights, float *out,
                  float *lse)
{
    int ok = 0;
    float *qf = malloc((size_t)d * sizeof *qf);
    float *kf = malloc((size_t)n * (size_t)d * sizeof *kf);
    float *vf = malloc((size_t)n * (size_t)dv * sizeof *vf);
    if (!qf || !kf || !vf) {
        cli_error("explain", "out of memory");
        goto done;
    }
    for (int e = 0; e < d; e++) qf[e] = (float)q[e];
    for (int j = 0; j < n; j++) {
        for (int e = 0; e < d; e++) kf[j * d + e] = (float)k[j][e];
        for (int e = 0; e < dv; e++) vf[j * dv + e] = (float)v[j][e];
    }
    qkv_tensor tq = qkv_tensor_contiguous(qf, QKV_DTYPE_F32, 1, 1, 1, d);
    qkv_tensor tk = qkv_tensor_contiguous(kf, QKV_DTYPE_F32, 1, 1, n, d);
    qkv_tensor tv = qkv_tensor_contiguous(vf, QKV_DTYPE_F32, 1, 1, n, dv);
    qkv_tensor to = qkv_tensor_contiguous(out, QKV_DTYPE_F32, 1, 1, 1, dv);
    qkv_tensor tw = qkv_tensor_contiguous(weights, QKV_DTYPE_F32, 1, 1, 1, n);
    qkv_tensor tl = qkv_tensor_contiguous(lse, QKV_DTYPE_F32, 1, 1, 1, 1);
    qkv_attn_options opt = {0};
    opt.scale = scale;
    opt.num_threads = 1;
    if (allowed) opt.mask = qkv_tensor_contiguous((void *)allowed, QKV_DTYPE_BOOL, 1, 1, 1, n);
    if (qkv_attention_forward(&to, &tw, &tl, &tq, &tk, &tv, &opt) != QKV_OK) {
        cli_error("explain", "%s", qkv_error_detail());
        goto done;
    }
    ok = 1;
done:
    free(qf);
    free(kf);
    free(vf);
    return ok;
}

/* Step 4's table: scores, exp(s - max), weights (from the library, checked
 * against the formula), bars. Returns 0 when the two disagree. */
static int print_softmax(int width, const char *const *labels, const double *s, int n,
                         const unsigned char *allowed, const float *w)
{
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++)
        if (!allowed || allowed[j]) m = s[j] > m ? s[j] : m;
    for (int j = 0; j < n; j++)
        if (!allowed || allowed[j]) sum += exp(s[j] - m);
    printf("  %-*s %9s %9s %9s %8s\n", width, "key", "score s", "s - max", "exp", "weight");
    double wsum = 0;
    int agree = 1;
    for (int j = 0; j < n; j++) {
        printf("  %-*s %9.4f", width, labels[j], s[j]);
        if (allowed && !allowed[j]) {
            printf(" %9s %9s %8.4f   (hidden: score -inf)\n", "-inf", "0", w[j]);
            agree &= w[j] == 0.0f;
            continue;
        }
        double e = exp(s[j] - m);
        printf(" %9.4f %9.4f %8.4f", s[j] - m, e, w[j]);
        print_bar(w[j]);
        printf("\n");
        wsum += w[j];
        /* The library computes in float32 (within 1e-5 of exact): the same
         * tolerance, relative, with a floor for weights near 0. */
        agree &= fabs(e / sum - w[j]) <= 1e-5 * (e / sum) + 1e-7;
    }
    printf("  %-*s %9s %9s %9.4f %8.4f   <- the weights sum to 1\n", width, "sum", "", "", sum,
           wsum);
    if (!agree) cli_error("explain", "internal error: libqkv's weights differ from the formula");
    return agree;
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

static int write_html(const char *path, const char *title, const char *query,
                      const char *const *keys, int n, const float *w, const char *intro)
{
    cli_outputs outs = {0};
    const char *labels_q[1] = {query};
    page pg = {{title, 1, 1, n, w, NULL, labels_q, keys}, intro};
    if (!cli_outputs_add_with(&outs, "explain", "--html", path, write_page, &pg) ||
        !cli_outputs_commit(&outs, "explain")) {
        cli_outputs_abort(&outs);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ --scores */

static int explain_scores(const char *list, double scale, double temp, const char *html)
{
    words items;
    if (!split_list("--scores", list, &items)) return CLI_USAGE;
    int n = items.n, rc = CLI_ERROR;
    double *s = calloc((size_t)n, sizeof *s);
    double *raw = calloc((size_t)n, sizeof *raw);
    float *w = calloc((size_t)n, sizeof *w);
    double **kv = calloc((size_t)n, sizeof *kv);
    if (!s || !raw || !w || !kv) {
        cli_error("explain", "out of memory");
        goto done;
    }
    for (int j = 0; j < n; j++) {
        if (!cli_parse_double(items.w[j], &raw[j]) || !isfinite(raw[j])) {
            cli_error("explain", "--scores: '%s' is not a finite number", items.w[j]);
            rc = CLI_USAGE;
            goto done;
        }
    }
    double eff = (scale != 0 ? scale : 1.0) / temp;
    /* The library computes softmax(eff * <q, k_j>): with q = (1) and
     * k_j = (raw_j) the dot products are the scores themselves. */
    double one = 1.0;
    for (int j = 0; j < n; j++) kv[j] = &raw[j];
    float out, lse;
    if (!attend(&one, kv, kv, n, 1, 1, eff, NULL, w, &out, &lse)) goto done;
    int width = 5;
    for (int j = 0; j < n; j++) {
        /* The scores as the library saw them: scale and score in float32. */
        s[j] = (double)((float)eff * (float)raw[j]);
        int l = (int)strlen(items.w[j]);
        width = l > width ? l : width;
    }
    printf("The softmax of the scores %s", list);
    if (eff != 1.0) printf(", each multiplied by %g", eff);
    printf(":\n\n  weight_j = exp(s_j - max) / sum_k exp(s_k - max)\n\n");
    if (!print_softmax(width, (const char *const *)items.w, s, n, NULL, w)) goto done;
    double total = 0;
    int nonneg = 1;
    for (int j = 0; j < n; j++) {
        total += raw[j];
        nonneg &= raw[j] >= 0;
    }
    printf("\nSoftmax is not \"each score's share of the total\"");
    if (nonneg && total > 0) {
        printf(". Those shares would be\n ");
        for (int j = 0; j < n; j++) printf(" %.4f", raw[j] / total);
        printf(".\n");
    } else {
        printf(" (with negative scores or a zero\ntotal that is not even defined).\n");
    }
    printf("It depends only on the differences between scores: adding the same number to\n"
           "every score changes nothing, and a gap of 1 always means a ratio of e = 2.718\n"
           "between two weights. Weights quoted for these scores that do not match the\n"
           "table above did not come from a softmax.\n");
    if (html && !write_html(html, "softmax of the given scores", "scores",
                            (const char *const *)items.w, n, w, NULL))
        goto done;
    rc = CLI_OK;
done:
    free(s);
    free(raw);
    free(w);
    free(kv);
    words_free(&items);
    return rc;
}

/* ------------------------------------------------------------ main path */

typedef struct explain_args {
    const char *vectors, *query, *keys, *values, *scale, *temperature, *scores, *html;
    int causal;
} explain_args;

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

int cmd_explain(int argc, char **argv)
{
    explain_args a = {0};
    int prc = parse_args(argc, argv, &a);
    if (prc == -1) {
        fputs(explain_usage, stdout);
        return CLI_OK;
    }
    if (prc != CLI_OK) return prc;
    double scale = 0, temp = 1;
    if (a.scale && (!cli_parse_double(a.scale, &scale) || !isfinite(scale) || scale == 0)) {
        cli_error("explain", "--scale: '%s', expected a finite nonzero number", a.scale);
        return CLI_USAGE;
    }
    if (a.temperature &&
        (!cli_parse_double(a.temperature, &temp) || !isfinite(temp) || temp <= 0)) {
        cli_error("explain", "--temperature: '%s', expected a finite number > 0", a.temperature);
        return CLI_USAGE;
    }
    if (a.html) {
        const char *const flags[1] = {"--html"};
        const char *const paths[1] = {a.html};
        int c = cli_check_output_paths("explain", 1, flags, paths);
        if (c != CLI_OK) return c;
    }
    if (a.scores) return explain_scores(a.scores, scale, temp, a.html);

    int rc = CLI_ERROR;
    words query = {0}, keys = {0}, values = {0};
    lexicon lx = {0};
    double **kvec = NULL, **vvec = NULL, *s = NULL, *o = NULL;
    float *w = NULL, *out = NULL, *w0 = NULL, *out0 = NULL;
    unsigned char *allowed = NULL;
    int default_values = !a.values;

    if (!split_list("--query", a.query ? a.query : "apple", &query) ||
        !split_list("--keys", a.keys ? a.keys : "cat,apple,tree,juice", &keys)) {
        rc = CLI_USAGE;
        goto done;
    }
    if (query.n != 1) {
        cli_error("explain", "--query: '%s' is %d words, expected one", a.query, query.n);
        rc = CLI_USAGE;
        goto done;
    }
    const int n = keys.n;
    if (a.values) {
        if (!split_list("--values", a.values, &values)) {
            rc = CLI_USAGE;
            goto done;
        }
        if (values.n != n) {
            cli_error("explain", "--values: %d words, expected %d: one per key", values.n, n);
            rc = CLI_USAGE;
            goto done;
        }
    } else {
        /* Each key's French partner in the built-in table, else the key. */
        values.w = calloc((size_t)n, sizeof *values.w);
        if (!values.w) goto oom;
        for (int j = 0; j < n; j++) {
            const char *v = keys.w[j];
            for (int t = 0; t < BUILTIN_COUNT && !a.vectors; t++)
                if (strcmp(builtin_words[t].en, v) == 0) v = builtin_words[t].fr;
            if (!(values.w[j] = strdup(v))) goto oom;
            values.n++;
        }
    }
    const words *const lists[3] = {&query, &keys, &values};
    if (a.vectors ? !read_vectors(a.vectors, lists, 3, &lx) : !builtin_vectors(lists, 3, &lx))
        goto done;
    if (!check_known("--query", &query, &lx) || !check_known("--keys", &keys, &lx) ||
        !check_known("--values", &values, &lx))
        goto done;

    const int d = lx.dim;
    const double *q = lexicon_find(&lx, query.w[0]);
    kvec = calloc((size_t)n, sizeof *kvec);
    vvec = calloc((size_t)n, sizeof *vvec);
    s = calloc((size_t)n, sizeof *s);
    o = calloc((size_t)d, sizeof *o);
    w = calloc((size_t)n, sizeof *w);
    w0 = calloc((size_t)n, sizeof *w0);
    out = calloc((size_t)d, sizeof *out);
    out0 = calloc((size_t)d, sizeof *out0);
    allowed = calloc((size_t)n, 1);
    if (!kvec || !vvec || !s || !o || !w || !w0 || !out || !out0 || !allowed) goto oom;
    for (int j = 0; j < n; j++) {
        kvec[j] = (double *)lexicon_find(&lx, keys.w[j]);
        vvec[j] = (double *)lexicon_find(&lx, values.w[j]);
    }
    /* Causal: the query stands where its word first appears among the keys. */
    int pos = n - 1;
    for (int j = n - 1; j >= 0; j--)
        if (strcmp(keys.w[j], query.w[0]) == 0) pos = j;
    for (int j = 0; j < n; j++) allowed[j] = !a.causal || j <= pos;

    const double dk_scale = 1.0 / sqrt((double)d);
    const double eff = (scale != 0 ? scale : dk_scale) / temp;
    float lse, lse0;
    if (!attend(q, kvec, vvec, n, d, d, eff, allowed, w, out, &lse)) goto done;

    int width = 9 + (int)strlen(query.w[0]);
    for (int j = 0; j < n; j++) {
        int l = 6 + (int)strlen(keys.w[j]), lv = 7 + (int)strlen(values.w[j]);
        width = l > width ? l : width;
        width = lv > width ? lv : width;
    }
    char label[256];

    printf("Attention for one query, step by step: the query \"%s\" against %d key%s,\n"
           "word vectors from %s (%d numbers per word).\n\n",
           query.w[0], n, n == 1 ? "" : "s", lx.source, d);

    printf("Step 1. The vectors. The query and the keys are compared; the values are\n"
           "what the output is made of.%s\n\n",
           lx.features ? " The built-in table's numbers say by hand how much\n"
                         "each word is an animal, a fruit, a plant and a drink."
                       : "");
    print_header_row(width, &lx);
    snprintf(label, sizeof label, "query %s", query.w[0]);
    print_vector_row(width, label, q, d);
    for (int j = 0; j < n; j++) {
        snprintf(label, sizeof label, "key   %s", keys.w[j]);
        print_vector_row(width, label, kvec[j], d);
    }
    for (int j = 0; j < n; j++) {
        snprintf(label, sizeof label, "value %s", values.w[j]);
        print_vector_row(width, label, vvec[j], d);
    }

    printf("\nStep 2. Compare the query with each key: the dot product q.k, the sum of\n"
           "the products of matching numbers. The more two words share, the larger it is.\n\n");
    const int w2 = label_width("q.", &keys, "");
    for (int j = 0; j < n; j++) {
        double p = dot(q, kvec[j], d);
        snprintf(label, sizeof label, "q.%s", keys.w[j]);
        printf("  %-*s = ", w2, label);
        if (d <= 4) {
            for (int e = 0; e < d; e++)
                printf("%s%.2f*%.2f", e ? " + " : "", q[e], kvec[j][e]);
            printf(" = ");
        }
        printf("%.4f\n", p);
        s[j] = eff * p;
    }

    printf("\nStep 3. Scale the dot products. d_k = %d is the length of the query and key\n"
           "vectors, and dividing by sqrt(d_k) = %.4g keeps the scores from growing with it\n"
           "(with the d_k = 64 of many models this divides by 8).",
           d, sqrt((double)d));
    if (scale != 0) printf("\nHere --scale multiplies by %g instead.", scale);
    if (temp != 1)
        printf("\n--temperature %g then divides by %g: the weights get %s.", temp, temp,
               temp < 1 ? "sharper" : "flatter");
    printf("\n\n");
    const int w3 = label_width("score(", &keys, ")");
    for (int j = 0; j < n; j++) {
        snprintf(label, sizeof label, "score(%s)", keys.w[j]);
        printf("  %-*s = %.4f * %.4f = %.4f\n", w3, label, dot(q, kvec[j], d), eff, s[j]);
    }

    printf("\nStep 4. Softmax turns the scores into weights that are positive and sum to 1:\n"
           "weight_j = exp(s_j - max) / sum_k exp(s_k - max). Subtracting the largest score\n"
           "first changes nothing in the result and keeps exp from overflowing.");
    if (a.causal)
        printf("\n--causal: the query stands at position %d (counting from 1), so the keys\n"
               "after it are hidden (score -inf, weight 0).", pos + 1);
    printf("\n\n");
    if (!print_softmax(width - 2, (const char *const *)keys.w, s, n, allowed, w)) goto done;

    printf("\nStep 5. The output is the weighted sum of the value vectors:\n  o =");
    for (int j = 0; j < n; j++) printf("%s %.4f*%s", j ? " +" : "", w[j], values.w[j]);
    printf("\n\n");
    print_header_row(width, &lx);
    for (int j = 0; j < n; j++) {
        if (!allowed[j]) continue;
        double row[8];
        for (int e = 0; e < shown_dims(d); e++) row[e] = w[j] * vvec[j][e];
        snprintf(label, sizeof label, "%.4f*%s", w[j], values.w[j]);
        print_vector_row(width, label, row, shown_dims(d));
    }
    for (int e = 0; e < d; e++) o[e] = out[e];
    print_vector_row(width, "o (sum)", o, d);

    printf("\nStep 6. Which value is the output nearest? Cosine similarity, from -1 to 1:\n\n");
    int best_v = 0, best_k = 0;
    double best_c = -2;
    const double on = sqrt(dot(o, o, d));
    const int w6 = label_width("cos(o, ", &values, ")");
    for (int j = 0; j < n; j++) {
        double vn = sqrt(dot(vvec[j], vvec[j], d));
        double c = on > 0 && vn > 0 ? dot(o, vvec[j], d) / (on * vn) : 0;
        snprintf(label, sizeof label, "cos(o, %s)", values.w[j]);
        printf("  %-*s = %7.4f\n", w6, label, c);
        if (c > best_c) {
            best_c = c;
            best_v = j;
        }
        if (w[j] > w[best_k]) best_k = j;
    }
    printf("\n\"%s\" attends most to \"%s\" (weight %.3f),\nand its output is nearest \"%s\" "
           "(cosine %.3f)",
           query.w[0], keys.w[best_k], w[best_k], values.w[best_v], best_c);
    if (default_values && !a.vectors && strcmp(values.w[best_v], keys.w[best_v]) != 0)
        printf(": the translation of \"%s\"", query.w[0]);
    printf(".\n");
    if (best_c < 0.9995)
        printf("The output is a blend: the other values add their share, which is why the\n"
               "cosine is below 1.\n");

    if (a.causal || a.scale || a.temperature) {
        if (!attend(q, kvec, vvec, n, d, d, dk_scale, NULL, w0, out0, &lse0)) goto done;
        printf("\nFor comparison, without %s%s%s%s%s the weights are\n ",
               a.causal ? "--causal" : "", a.causal && (a.scale || a.temperature) ? ", " : "",
               a.scale ? "--scale" : "", a.scale && a.temperature ? ", " : "",
               a.temperature ? "--temperature" : "");
        for (int j = 0; j < n; j++) printf(" %.4f", w0[j]);
        printf(".\n");
    }

    if (a.html) {
        char intro[512];
        snprintf(intro, sizeof intro,
                 "<p>One query against %d keys; scores multiplied by %.4g before the softmax. "
                 "Hover or click the query to see its weight on each key.</p>", n, eff);
        if (!write_html(a.html, "qkv explain", query.w[0], (const char *const *)keys.w, n, w,
                        intro))
            goto done;
    }
    rc = CLI_OK;
    goto done;
oom:
    cli_error("explain", "out of memory");
done:
    words_free(&query);
    words_free(&keys);
    words_free(&values);
    lexicon_free(&lx);
    free(kvec);
    free(vvec);
    free(s);
    free(o);
    free(w);
    free(w0);
    free(out);
    free(out0);
    free(allowed);
    return rc;
}
