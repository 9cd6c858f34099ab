/* `qkv explain`: one query's attention, step by step, every number on
 * screen. The default is the worked example (the English query "apple"
 * against the keys cat, apple, tree, juice, with the French values chat,
 * pomme, arbre, jus) on a small hand-made table of word vectors; users
 * bring their own vectors in the GloVe / word2vec text format. The dot
 * products and scores are computed here in double; libqkv (its reference
 * kernel) turns the scores into the weights and the output, which are
 * checked against the formula. Everything is computed before anything is
 * printed, so a failure never leaves half a report. */
#define _XOPEN_SOURCE 700 /* getc_unlocked, strdup, strtok_r */
#include "cli.h"
#include "commands.h"
#include "picture.h"

#include <errno.h>
#include <float.h>
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

/* Bounds on a --vectors file, so that /dev/zero or a pipe that never ends
 * stops with an error instead of taking all memory or running forever.
 * The largest common files (GloVe 840B, fastText's crawl vectors, word2vec
 * GoogleNews, ConceptNet Numberbatch) have under 10 million lines of a few
 * kilobytes. */
#define VECTORS_MAX_LINE ((size_t)16 << 20) /* bytes, the newline not counted */
#define VECTORS_MAX_LINES 16777216L          /* 2^24 */

/* ------------------------------------------------------------ messages */

/* User text fit for a one-line message, cut as libqkv's file readers cut
 * the names they quote: at most 60 bytes (at a character boundary, "..."
 * added), control bytes shown as '?'. */
enum { SHOW_MAX = 60, SHOW_CAP = SHOW_MAX + 4 };
static const char *show(char buf[SHOW_CAP], const char *s)
{
    size_t n = 0, i = 0;
    for (; s[i] && n < SHOW_MAX; i++)
        buf[n++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s[i]) {
        /* buf holds s[0..n) byte for byte, so back up to a character start. */
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--;
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

/* x with prec decimals, or with 4 significant digits from 1e6 up, so that
 * 1e39 stays a short cell instead of 40 digits. Long double: "s - max" can
 * pass a double's range (1e308 - -1e308). */
enum { NUM_CAP = 48 };
static const char *num(char buf[NUM_CAP], long double x, int prec)
{
    if (fabsl(x) < 1e6L)
        snprintf(buf, NUM_CAP, "%.*Lf", prec, x);
    else
        snprintf(buf, NUM_CAP, "%.4Lg", x);
    return buf;
}

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
            char b[SHOW_CAP];
            cli_error("explain", "%s: '%s' has an empty item; expected W1,W2,...", flag,
                      show(b, s));
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

typedef enum line_status { LINE_OK, LINE_END, LINE_LONG, LINE_NUL, LINE_NOMEM, LINE_FAIL } line_status;

/* Reads one line into *buf (NUL-terminated, without its newline), its
 * length into *len. Stops at a NUL byte or past VECTORS_MAX_LINE bytes
 * without reading on, so no input grows the buffer beyond that; a failed
 * allocation is an error of its own, never taken for the end of the file. */
static line_status read_line(FILE *f, char **buf, size_t *cap, size_t *len)
{
    size_t n = 0;
    int c;
    *len = 0;
    if (!*buf) {
        if (!(*buf = malloc(256))) return LINE_NOMEM;
        *cap = 256;
    }
    while ((c = getc_unlocked(f)) != EOF && c != '\n') {
        if (c == '\0') return LINE_NUL;
        if (n + 1 == *cap) {
            if (*cap > VECTORS_MAX_LINE) return LINE_LONG;
            size_t ncap = *cap * 2 < VECTORS_MAX_LINE + 1 ? *cap * 2 : VECTORS_MAX_LINE + 1;
            char *nb = realloc(*buf, ncap);
            if (!nb) {
                *len = n;
                return LINE_NOMEM;
            }
            *buf = nb;
            *cap = ncap;
        }
        (*buf)[n++] = (char)c;
    }
    if (c == EOF && ferror(f)) return LINE_FAIL;
    if (c == EOF && n == 0) return LINE_END;
    (*buf)[n] = '\0';
    *len = n;
    return LINE_OK;
}

/* The first number of x[0..n) that float32 cannot hold, or -1. */
static int past_float(const double *x, int n)
{
    for (int i = 0; i < n; i++)
        if (fabs(x[i]) > FLT_MAX) return i;
    return -1;
}

/* Reads a GloVe / word2vec text file, keeping only the wanted words (files
 * of a million words stay cheap) while checking every line: the same count
 * of finite numbers on each, and a word2vec header that tells the truth.
 * The first line for a word wins. The words of `floats` (the values) go to
 * libqkv as float32, so their numbers must fit one. */
static int read_vectors(const char *path, const words *const lists[], int nlists,
                        const words *floats, lexicon *lx)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_error("explain", "--vectors %s: cannot open: %s", path, strerror(errno));
        return 0;
    }
    char *line = NULL;
    size_t cap = 0, len;
    line_status ls;
    long lineno = 0, first_line = 0, data_lines = 0;
    long long header_count = -1, header_dim = -1;
    double *x = NULL;
    int ok = 0, xcap = 0;
    char b1[SHOW_CAP], b2[SHOW_CAP];
    lx->dim = 0;
    lx->source = path;
    while ((ls = read_line(f, &line, &cap, &len)) != LINE_END) {
        lineno++;
        if (ls == LINE_NUL) {
            cli_error("explain", "--vectors %s:%ld: a NUL byte; expected text", path, lineno);
            goto done;
        }
        if (ls == LINE_LONG) {
            cli_error("explain", "--vectors %s:%ld: a line longer than 16 MiB, the most explain "
                      "reads; expected a word and its numbers", path, lineno);
            goto done;
        }
        if (ls == LINE_NOMEM) {
            cli_error("explain", "--vectors %s:%ld: out of memory after %zu bytes of the line",
                      path, lineno, len);
            goto done;
        }
        if (ls == LINE_FAIL) {
            cli_error("explain", "--vectors %s:%ld: read error: %s", path, lineno,
                      strerror(errno));
            goto done;
        }
        if (lineno > VECTORS_MAX_LINES) {
            cli_error("explain", "--vectors %s: more than %ld lines, the most explain reads",
                      path, VECTORS_MAX_LINES);
            goto done;
        }
        while (len > 0 && line[len - 1] == '\r') line[--len] = '\0';
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
        char *num_text;
        while ((num_text = strtok_r(NULL, " \t", &save))) {
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
            if (!cli_parse_double(num_text, &x[count]) || !isfinite(x[count])) {
                cli_error("explain", "--vectors %s:%ld: '%s' after '%s' is not a finite number",
                          path, lineno, show(b1, num_text), show(b2, word));
                goto done;
            }
            count++;
        }
        if (count == 0) {
            cli_error("explain", "--vectors %s:%ld: '%s' has no numbers", path, lineno,
                      show(b1, word));
            goto done;
        }
        if (header_dim > 0 && count != header_dim) {
            cli_error("explain", "--vectors %s:%ld: %d number%s after '%s', expected %lld as the "
                      "header on line 1 says", path, lineno, count, count == 1 ? "" : "s",
                      show(b1, word), header_dim);
            goto done;
        }
        if (lx->dim == 0) {
            lx->dim = count;
            first_line = lineno;
        } else if (count != lx->dim) {
            cli_error("explain", "--vectors %s:%ld: %d number%s after '%s', expected %d as on "
                      "line %ld", path, lineno, count, count == 1 ? "" : "s", show(b1, word),
                      lx->dim, first_line);
            goto done;
        }
        data_lines++;
        if (!wanted(lists, nlists, word) || lexicon_find(lx, word)) continue;
        int bad = wanted(&floats, 1, word) ? past_float(x, count) : -1;
        if (bad >= 0) {
            cli_error("explain", "--vectors %s:%ld: '%s' is a value word and its number %g "
                      "does not fit float32 (|x| <= %g), the type libqkv computes the output "
                      "in", path, lineno, show(b1, word), x[bad], FLT_MAX);
            goto done;
        }
        if (!lexicon_add(lx, word, x)) {
            cli_error("explain", "--vectors %s:%ld: out of memory", path, lineno);
            goto done;
        }
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
        char b[SHOW_CAP];
        if (lx->features) { /* the built-in table: say what it has */
            char known[512];
            size_t used = 0;
            for (int j = 0; j < BUILTIN_COUNT && used < sizeof known; j++)
                used += (size_t)snprintf(known + used, sizeof known - used, "%s%s/%s",
                                         j ? ", " : "", builtin_words[j].en, builtin_words[j].fr);
            cli_error("explain", "%s: '%s' is not in the built-in table (it has %s; or use "
                      "--vectors FILE)", flag, show(b, l->w[i]), known);
        } else {
            cli_error("explain", "%s: '%s' is not in %s", flag, show(b, l->w[i]), lx->source);
        }
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ printing */

/* Columns shown for a vector: all of them up to 8, else the first 6. */
static int shown_dims(int dim) { return dim <= 8 ? dim : 6; }

/* The width of a vector table's cells: 8, or more for numbers that need it. */
static int widen(int cw, const double *x, int dim)
{
    char b[NUM_CAP];
    for (int e = 0; e < shown_dims(dim); e++) {
        int l = (int)strlen(num(b, x[e], 4));
        cw = l > cw ? l : cw;
    }
    return cw;
}

static void print_header_row(int width, int cw, const lexicon *lx)
{
    printf("  %-*s", width, "");
    for (int d = 0; d < shown_dims(lx->dim); d++) {
        if (lx->features)
            printf(" %*s", cw, lx->features[d]);
        else
            printf(" %*sx%-2d", cw - 3, "", d + 1);
    }
    if (shown_dims(lx->dim) < lx->dim) printf("   ... (%d numbers)", lx->dim);
    printf("\n");
}

static void print_vector_row(int width, int cw, const char *label, const double *x, int dim)
{
    char b[NUM_CAP];
    printf("  %-*s", width, label);
    for (int d = 0; d < shown_dims(dim); d++) printf(" %*s", cw, num(b, x[d], 4));
    if (shown_dims(dim) < dim) printf("   ...");
    printf("\n");
}

/* 30 columns for a weight of 1: lines stay within 80. */
static void print_bar(double w)
{
    int n = w > 0 ? (int)(fmin(w, 1.0) * 30.0 + 0.5) : 0;
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

/* Step 4's table: scores s, s - max, exp(s - max), libqkv's weights w
 * (attend has checked them against the formula), bars. */
static void print_softmax(int width, const char *const *labels, const double *s, int n,
                          const unsigned char *allowed, const float *w)
{
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++)
        if (!allowed || allowed[j]) m = s[j] > m ? s[j] : m;
    for (int j = 0; j < n; j++)
        if (!allowed || allowed[j]) sum += exp(s[j] - m);
    char b1[NUM_CAP], b2[NUM_CAP];
    int c1 = 9, c2 = 9; /* the score and s - max columns widen for large numbers */
    for (int j = 0; j < n; j++) {
        int l1 = (int)strlen(num(b1, s[j], 4)), l2 = (int)strlen(num(b2, (long double)s[j] - m, 4));
        c1 = l1 > c1 ? l1 : c1;
        c2 = l2 > c2 ? l2 : c2;
    }
    printf("  %-*s %*s %*s %9s %8s\n", width, "key", c1, "score s", c2, "s - max", "exp",
           "weight");
    double wsum = 0;
    for (int j = 0; j < n; j++) {
        printf("  %-*s %*s", width, labels[j], c1, num(b1, s[j], 4));
        if (allowed && !allowed[j]) {
            printf(" %*s %9s %8.4f   (hidden: score -inf)\n", c2, "-inf", "0", w[j]);
            continue;
        }
        printf(" %*s %9.4f %8.4f", c2, num(b2, (long double)s[j] - m, 4), exp(s[j] - m), w[j]);
        print_bar(w[j]);
        printf("\n");
        wsum += w[j];
    }
    printf("  %-*s %*s %*s %9.4f %8.4f   <- the weights sum to 1\n", width, "sum", c1, "", c2,
           "", sum, wsum);
}

/* ------------------------------------------------------------ the maths */

/* Steps 4 and 5 through libqkv's reference kernel (double sums): the
 * weights w (n) and the output o (dv) of the scores s (n, finite) and the
 * values vf (n x dv, row-major); allowed[j] == 0 hides key j (NULL: none
 * hidden). libqkv gets q = (1), k_j = (s_j - max) and scale 1: the same
 * softmax, since a shift changes nothing, with every score in float's
 * range however large s is (a key more than FLT_MAX below the largest has
 * weight 0 either way). Its results are checked against the formula in
 * double. Returns 0 after printing on failure. */
static int attend(const double *s, const unsigned char *allowed, int n, const float *vf, int dv,
                  float *w, float *o)
{
    int ok = 0;
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++)
        if (!allowed || allowed[j]) m = s[j] > m ? s[j] : m;
    float one = 1.0f;
    float *kf = malloc((size_t)n * sizeof *kf);
    double *p = malloc((size_t)n * sizeof *p);
    if (!kf || !p) {
        cli_error("explain", "out of memory");
        goto done;
    }
    for (int j = 0; j < n; j++) {
        const int open = !allowed || allowed[j];
        const double d = open ? s[j] - m : 0.0; /* <= 0, or -inf past a double */
        kf[j] = d < -FLT_MAX ? -FLT_MAX : (float)d;
        p[j] = open ? exp(d) : 0.0;
        sum += p[j];
    }
    qkv_tensor tq = qkv_tensor_contiguous(&one, QKV_DTYPE_F32, 1, 1, 1, 1);
    qkv_tensor tk = qkv_tensor_contiguous(kf, QKV_DTYPE_F32, 1, 1, n, 1);
    qkv_tensor tv = qkv_tensor_contiguous((void *)vf, QKV_DTYPE_F32, 1, 1, n, dv);
    qkv_tensor to = qkv_tensor_contiguous(o, QKV_DTYPE_F32, 1, 1, 1, dv);
    qkv_tensor tw = qkv_tensor_contiguous(w, QKV_DTYPE_F32, 1, 1, 1, n);
    qkv_attn_options opt = {0};
    opt.scale = 1.0;
    opt.impl = QKV_IMPL_REFERENCE;
    opt.num_threads = 1;
    if (allowed) opt.mask = qkv_tensor_contiguous((void *)allowed, QKV_DTYPE_BOOL, 1, 1, 1, n);
    if (qkv_attention_forward(&to, &tw, NULL, &tq, &tk, &tv, &opt) != QKV_OK) {
        cli_error("explain", "%s", qkv_error_detail());
        goto done;
    }
    /* The library sums in double and rounds to float32: the float32
     * tolerance, relative, with a floor for weights near 0 and outputs near
     * float's smallest. */
    int agree = 1;
    for (int j = 0; j < n; j++) {
        p[j] /= sum;
        agree &= fabs(p[j] - w[j]) <= 1e-5 * p[j] + 1e-7;
    }
    for (int e = 0; e < dv; e++) {
        double oe = 0, mag = 0;
        for (int j = 0; j < n; j++) {
            const double x = vf[(size_t)j * (size_t)dv + (size_t)e];
            oe += p[j] * x;
            mag += p[j] * fabs(x);
        }
        agree &= fabs(oe - o[e]) <= 1e-5 * mag + FLT_TRUE_MIN;
    }
    if (!agree) {
        cli_error("explain", "internal error: libqkv's weights differ from the formula");
        goto done;
    }
    ok = 1;
done:
    free(kf);
    free(p);
    return ok;
}

/* The factor of the dot products, base / T (base: --scale, or 1/sqrt(d_k),
 * or 1 for --scores). 0 after a usage error when it passes a double. */
static int factor(const char *scale_arg, const char *temp_arg, double base, double temp,
                  const char *base_name, double *eff)
{
    *eff = base / temp;
    if (isfinite(*eff)) return 1;
    char b1[SHOW_CAP], b2[SHOW_CAP];
    if (scale_arg)
        cli_error("explain", "--scale %s, --temperature %s: S / T is beyond a double's range "
                  "(about %.2g)", show(b1, scale_arg), show(b2, temp_arg), DBL_MAX);
    else
        cli_error("explain", "--temperature %s: %s / T is beyond a double's range (about %.2g)",
                  show(b1, temp_arg), base_name, DBL_MAX);
    return 0;
}

/* Which of --scale and --temperature set the factor, for messages. */
static const char *knob_flags(const char *scale_arg, const char *temp_arg)
{
    return scale_arg && temp_arg ? "--scale, --temperature" : scale_arg ? "--scale" : "--temperature";
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

/* Writes the page to a temporary in outs; put_html puts it in place once
 * the text is out. */
static int write_html(cli_outputs *outs, const char *path, const char *title, const char *query,
                      const char *const *keys, int n, const float *w, const char *intro)
{
    const char *labels_q[1] = {query};
    page pg = {{title, 1, 1, n, w, NULL, labels_q, keys}, intro};
    return cli_outputs_add_with(outs, "explain", "--html", path, write_page, &pg);
}

/* The text on stdout is the command's result: the page is renamed into
 * place only when all of the text was written. */
static int put_html(cli_outputs *outs)
{
    return outs->n == 0 || (cli_stdout_ok("explain", 0) && cli_outputs_commit(outs, "explain"));
}

/* ------------------------------------------------------------ --scores */

static int explain_scores(const char *list, const char *scale_arg, const char *temp_arg,
                          double scale, double temp, const char *html)
{
    words items;
    if (!split_list("--scores", list, &items)) return CLI_USAGE;
    int n = items.n, rc = CLI_ERROR;
    cli_outputs outs = {0};
    double *s = calloc((size_t)n, sizeof *s);
    double *raw = calloc((size_t)n, sizeof *raw);
    float *w = calloc((size_t)n, sizeof *w);
    float *ones = calloc((size_t)n, sizeof *ones);
    char b1[SHOW_CAP];
    if (!s || !raw || !w || !ones) {
        cli_error("explain", "out of memory");
        goto done;
    }
    for (int j = 0; j < n; j++) {
        if (!cli_parse_double(items.w[j], &raw[j]) || !isfinite(raw[j])) {
            cli_error("explain", "--scores: '%s' is not a finite number", show(b1, items.w[j]));
            rc = CLI_USAGE;
            goto done;
        }
    }
    double eff;
    if (!factor(scale_arg, temp_arg, scale != 0 ? scale : 1.0, temp, "1", &eff)) {
        rc = CLI_USAGE;
        goto done;
    }
    for (int j = 0; j < n; j++) {
        s[j] = eff * raw[j];
        ones[j] = 1.0f; /* o = the sum of the weights */
        if (!isfinite(s[j])) {
            cli_error("explain", "--scores: %s times %g (%s) is beyond a double's range (about "
                      "%.2g)", show(b1, items.w[j]), eff, knob_flags(scale_arg, temp_arg),
                      DBL_MAX);
            rc = CLI_USAGE;
            goto done;
        }
    }
    float out;
    if (!attend(s, NULL, n, ones, 1, w, &out)) goto done;
    if (html && !write_html(&outs, html, "softmax of the given scores", "scores",
                            (const char *const *)items.w, n, w, NULL))
        goto done;

    int width = 5;
    for (int j = 0; j < n; j++) {
        int l = (int)strlen(items.w[j]);
        width = l > width ? l : width;
    }
    printf("The softmax of the scores %s", list);
    if (eff != 1.0) printf(", each multiplied by %g", eff);
    printf(":\n\n  weight_j = exp(s_j - max) / sum_k exp(s_k - max)\n\n");
    print_softmax(width, (const char *const *)items.w, s, n, NULL, w);
    /* The shares of the total, each score divided by the largest first so
     * that the total of 1e308 and 1e308 does not overflow. */
    double big = 0, total = 0;
    int nonneg = 1;
    for (int j = 0; j < n; j++) big = fmax(big, fabs(raw[j]));
    for (int j = 0; j < n; j++) {
        total += big > 0 ? raw[j] / big : 0;
        nonneg &= raw[j] >= 0;
    }
    printf("\nSoftmax is not \"each score's share of the total\"");
    if (nonneg && total > 0) {
        printf(". Those shares would be\n ");
        for (int j = 0; j < n; j++) printf(" %.4f", raw[j] / big / total);
        printf(".\n");
    } else {
        printf(" (with negative scores or a zero\ntotal that is not even defined).\n");
    }
    printf("It depends only on the differences between scores: adding the same number to\n"
           "every score changes nothing, and a gap of 1 always means a ratio of e = 2.718\n"
           "between two weights. Weights quoted for these scores that do not match the\n"
           "table above did not come from a softmax.\n");
    if (put_html(&outs)) rc = CLI_OK;
done:
    cli_outputs_abort(&outs);
    free(s);
    free(raw);
    free(w);
    free(ones);
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

/* The numbers of one run of the main path, computed before any is printed. */
typedef struct explained {
    int n, d, pos;
    double eff, dk_scale;
    const double *q;
    double **kvec, **vvec; /* the lexicon's rows, n each */
    double *dots, *s, *s0; /* q.k_j, the scores, the scores without the knobs */
    float *vf;             /* the values as libqkv takes them, n x d */
    float *w, *out, *w0, *out0;
    double *o; /* out in double, for step 6's sums */
    unsigned char *allowed;
} explained;

static void explained_free(explained *x)
{
    free(x->kvec);
    free(x->vvec);
    free(x->dots);
    free(x->s);
    free(x->s0);
    free(x->vf);
    free(x->w);
    free(x->out);
    free(x->w0);
    free(x->out0);
    free(x->o);
    free(x->allowed);
}

/* Steps 2 to 5 and the comparison run without the knobs. Returns CLI_OK,
 * or CLI_ERROR / CLI_USAGE after printing. */
static int compute(const explain_args *a, double scale, double temp, const words *query,
                   const words *keys, const words *values, const lexicon *lx, explained *x)
{
    const int n = keys->n, d = lx->dim;
    char b1[SHOW_CAP], b2[SHOW_CAP], c1[NUM_CAP], c2[NUM_CAP];
    x->n = n;
    x->d = d;
    x->q = lexicon_find(lx, query->w[0]);
    x->kvec = calloc((size_t)n, sizeof *x->kvec);
    x->vvec = calloc((size_t)n, sizeof *x->vvec);
    x->dots = calloc((size_t)n, sizeof *x->dots);
    x->s = calloc((size_t)n, sizeof *x->s);
    x->s0 = calloc((size_t)n, sizeof *x->s0);
    x->vf = calloc((size_t)n * (size_t)d, sizeof *x->vf);
    x->w = calloc((size_t)n, sizeof *x->w);
    x->w0 = calloc((size_t)n, sizeof *x->w0);
    x->out = calloc((size_t)d, sizeof *x->out);
    x->out0 = calloc((size_t)d, sizeof *x->out0);
    x->o = calloc((size_t)d, sizeof *x->o);
    x->allowed = calloc((size_t)n, 1);
    if (!x->kvec || !x->vvec || !x->dots || !x->s || !x->s0 || !x->vf || !x->w || !x->w0 ||
        !x->out || !x->out0 || !x->o || !x->allowed) {
        cli_error("explain", "out of memory");
        return CLI_ERROR;
    }
    for (int j = 0; j < n; j++) {
        x->kvec[j] = (double *)lexicon_find(lx, keys->w[j]);
        x->vvec[j] = (double *)lexicon_find(lx, values->w[j]);
        /* read_vectors saw to it that the values fit float32 */
        for (int e = 0; e < d; e++) x->vf[(size_t)j * (size_t)d + (size_t)e] = (float)x->vvec[j][e];
    }
    /* Causal: the query stands where its word first appears among the keys. */
    x->pos = n - 1;
    for (int j = n - 1; j >= 0; j--)
        if (strcmp(keys->w[j], query->w[0]) == 0) x->pos = j;
    for (int j = 0; j < n; j++) x->allowed[j] = !a->causal || j <= x->pos;

    x->dk_scale = 1.0 / sqrt((double)d);
    if (!factor(a->scale, a->temperature, scale != 0 ? scale : x->dk_scale, temp, "1/sqrt(d_k)",
                &x->eff))
        return CLI_USAGE;
    for (int j = 0; j < n; j++) {
        x->dots[j] = dot(x->q, x->kvec[j], d);
        if (!isfinite(x->dots[j])) {
            cli_error("explain", "--vectors %s: q.k of '%s' and '%s' is beyond a double's range "
                      "(about %.2g)", lx->source, show(b1, query->w[0]), show(b2, keys->w[j]),
                      DBL_MAX);
            return CLI_ERROR;
        }
        x->s[j] = x->eff * x->dots[j];
        x->s0[j] = x->dk_scale * x->dots[j];
        if (!isfinite(x->s[j])) {
            cli_error("explain", "%s: score(%s) = %s * %s is beyond a double's range (about "
                      "%.2g)", knob_flags(a->scale, a->temperature), show(b1, keys->w[j]),
                      num(c1, x->dots[j], 4), num(c2, x->eff, 4), DBL_MAX);
            return CLI_USAGE;
        }
    }
    if (!attend(x->s, x->allowed, n, x->vf, d, x->w, x->out)) return CLI_ERROR;
    for (int e = 0; e < d; e++) x->o[e] = x->out[e];
    if ((a->causal || a->scale || a->temperature) &&
        !attend(x->s0, NULL, n, x->vf, d, x->w0, x->out0))
        return CLI_ERROR;
    return CLI_OK;
}

static void print_report(const explain_args *a, double scale, double temp, const words *query,
                         const words *keys, const words *values, const lexicon *lx,
                         const explained *x, int default_values)
{
    const int n = x->n, d = x->d;
    const double *q = x->q, eff = x->eff;
    double *const *kvec = x->kvec, *const *vvec = x->vvec;
    const float *w = x->w;
    char c1[NUM_CAP], c2[NUM_CAP], c3[NUM_CAP];

    int width = 9 + (int)strlen(query->w[0]);
    for (int j = 0; j < n; j++) {
        int l = 6 + (int)strlen(keys->w[j]), lv = 7 + (int)strlen(values->w[j]);
        width = l > width ? l : width;
        width = lv > width ? lv : width;
    }
    /* One cell width for every vector table, wide enough for all of them. */
    const double *o = x->o;
    double row[8];
    int cw = widen(8, q, d);
    for (int j = 0; j < n; j++) {
        cw = widen(widen(cw, kvec[j], d), vvec[j], d);
        for (int e = 0; e < shown_dims(d); e++) row[e] = w[j] * vvec[j][e];
        cw = widen(cw, row, d);
    }
    cw = widen(cw, o, d);
    char label[256];

    printf("Attention for one query, step by step: the query \"%s\" against %d key%s,\n"
           "word vectors from %s (%d numbers per word).\n\n",
           query->w[0], n, n == 1 ? "" : "s", lx->source, d);

    printf("Step 1. The vectors. The query and the keys are compared; the values are\n"
           "what the output is made of.%s\n\n",
           lx->features ? " The built-in table's numbers say by hand how much\n"
                          "each word is an animal, a fruit, a plant and a drink."
                        : "");
    print_header_row(width, cw, lx);
    snprintf(label, sizeof label, "query %s", query->w[0]);
    print_vector_row(width, cw, label, q, d);
    for (int j = 0; j < n; j++) {
        snprintf(label, sizeof label, "key   %s", keys->w[j]);
        print_vector_row(width, cw, label, kvec[j], d);
    }
    for (int j = 0; j < n; j++) {
        snprintf(label, sizeof label, "value %s", values->w[j]);
        print_vector_row(width, cw, label, vvec[j], d);
    }

    printf("\nStep 2. Compare the query with each key: the dot product q.k, the sum of\n"
           "the products of matching numbers. The more two words share, the larger it is.\n\n");
    const int w2 = label_width("q.", keys, "");
    for (int j = 0; j < n; j++) {
        snprintf(label, sizeof label, "q.%s", keys->w[j]);
        printf("  %-*s = ", w2, label);
        if (d <= 4) {
            for (int e = 0; e < d; e++)
                printf("%s%s*%s", e ? " + " : "", num(c1, q[e], 2), num(c2, kvec[j][e], 2));
            printf(" = ");
        }
        printf("%s\n", num(c1, x->dots[j], 4));
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
    const int w3 = label_width("score(", keys, ")");
    for (int j = 0; j < n; j++) {
        snprintf(label, sizeof label, "score(%s)", keys->w[j]);
        printf("  %-*s = %s * %s = %s\n", w3, label, num(c1, x->dots[j], 4), num(c2, eff, 4),
               num(c3, x->s[j], 4));
    }

    printf("\nStep 4. Softmax turns the scores into weights that are positive and sum to 1:\n"
           "weight_j = exp(s_j - max) / sum_k exp(s_k - max). Subtracting the largest score\n"
           "first changes nothing in the result and keeps exp from overflowing.");
    if (a->causal)
        printf("\n--causal: the query stands at position %d (counting from 1), so the keys\n"
               "after it are hidden (score -inf, weight 0).", x->pos + 1);
    printf("\n\n");
    print_softmax(width - 2, (const char *const *)keys->w, x->s, n, x->allowed, w);

    printf("\nStep 5. The output is the weighted sum of the value vectors:\n  o =");
    for (int j = 0; j < n; j++) printf("%s %.4f*%s", j ? " +" : "", w[j], values->w[j]);
    printf("\n\n");
    print_header_row(width, cw, lx);
    for (int j = 0; j < n; j++) {
        if (!x->allowed[j]) continue;
        for (int e = 0; e < shown_dims(d); e++) row[e] = w[j] * vvec[j][e];
        snprintf(label, sizeof label, "%.4f*%s", w[j], values->w[j]);
        print_vector_row(width, cw, label, row, shown_dims(d));
    }
    print_vector_row(width, cw, "o (sum)", o, d);

    printf("\nStep 6. Which value is the output nearest? Cosine similarity, from -1 to 1:\n\n");
    int best_v = 0, best_k = 0;
    double best_c = -2;
    const double on = sqrt(dot(o, o, d));
    const int w6 = label_width("cos(o, ", values, ")");
    for (int j = 0; j < n; j++) {
        double vn = sqrt(dot(vvec[j], vvec[j], d));
        double c = on > 0 && vn > 0 ? dot(o, vvec[j], d) / (on * vn) : 0;
        snprintf(label, sizeof label, "cos(o, %s)", values->w[j]);
        printf("  %-*s = %7.4f\n", w6, label, c);
        if (c > best_c) {
            best_c = c;
            best_v = j;
        }
        if (w[j] > w[best_k]) best_k = j;
    }
    printf("\n\"%s\" attends most to \"%s\" (weight %.3f),\nand its output is nearest \"%s\" "
           "(cosine %.3f)",
           query->w[0], keys->w[best_k], w[best_k], values->w[best_v], best_c);
    if (default_values && !a->vectors && strcmp(values->w[best_v], keys->w[best_v]) != 0)
        printf(": the translation of \"%s\"", query->w[0]);
    printf(".\n");
    if (best_c < 0.9995)
        printf("The output is a blend: the other values add their share, which is why the\n"
               "cosine is below 1.\n");

    if (a->causal || a->scale || a->temperature) {
        /* "--causal", "--causal and --scale", "--causal, --scale and --temperature" */
        const char *knob[3];
        int k = 0;
        if (a->causal) knob[k++] = "--causal";
        if (a->scale) knob[k++] = "--scale";
        if (a->temperature) knob[k++] = "--temperature";
        printf("\nFor comparison, without ");
        for (int i = 0; i < k; i++) printf("%s%s", i == 0 ? "" : i == k - 1 ? " and " : ", ", knob[i]);
        printf(" the weights are\n ");
        for (int j = 0; j < n; j++) printf(" %.4f", x->w0[j]);
        printf(".\n");
    }
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
    char b1[SHOW_CAP];
    if (a.scale && (!cli_parse_double(a.scale, &scale) || !isfinite(scale) || scale == 0)) {
        cli_error("explain", "--scale: '%s', expected a finite nonzero number", show(b1, a.scale));
        return CLI_USAGE;
    }
    if (a.temperature &&
        (!cli_parse_double(a.temperature, &temp) || !isfinite(temp) || temp <= 0)) {
        cli_error("explain", "--temperature: '%s', expected a finite number > 0",
                  show(b1, a.temperature));
        return CLI_USAGE;
    }
    if (a.html) {
        const char *const flags[1] = {"--html"};
        const char *const paths[1] = {a.html};
        int c = cli_check_output_paths("explain", 1, flags, paths);
        if (c != CLI_OK) return c;
    }
    if (a.scores) return explain_scores(a.scores, a.scale, a.temperature, scale, temp, a.html);

    int rc = CLI_ERROR;
    cli_outputs outs = {0};
    words query = {0}, keys = {0}, values = {0};
    lexicon lx = {0};
    explained x = {0};
    int default_values = !a.values;

    if (!split_list("--query", a.query ? a.query : "apple", &query) ||
        !split_list("--keys", a.keys ? a.keys : "cat,apple,tree,juice", &keys)) {
        rc = CLI_USAGE;
        goto done;
    }
    if (query.n != 1) {
        cli_error("explain", "--query: '%s' is %d words, expected one", show(b1, a.query),
                  query.n);
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
    if (a.vectors ? !read_vectors(a.vectors, lists, 3, &values, &lx)
                  : !builtin_vectors(lists, 3, &lx))
        goto done;
    if (!check_known("--query", &query, &lx) || !check_known("--keys", &keys, &lx) ||
        !check_known("--values", &values, &lx))
        goto done;

    rc = compute(&a, scale, temp, &query, &keys, &values, &lx, &x);
    if (rc != CLI_OK) goto done;
    rc = CLI_ERROR;
    if (a.html) {
        char intro[512];
        snprintf(intro, sizeof intro,
                 "<p>One query against %d keys; scores multiplied by %.4g before the softmax. "
                 "Hover or click the query to see its weight on each key.</p>", n, x.eff);
        if (!write_html(&outs, a.html, "qkv explain", query.w[0], (const char *const *)keys.w,
                        n, x.w, intro))
            goto done;
    }
    print_report(&a, scale, temp, &query, &keys, &values, &lx, &x, default_values);
    if (put_html(&outs)) rc = CLI_OK;
    goto done;
oom:
    cli_error("explain", "out of memory");
done:
    cli_outputs_abort(&outs);
    words_free(&query);
    words_free(&keys);
    words_free(&values);
    lexicon_free(&lx);
    explained_free(&x);
    return rc;
}
