/* Where `qkv explain`'s words and vectors come from: the word lists of
 * the command line, qkv's built-in table (a few words on four features
 * chosen by hand), and word vectors in the GloVe / word2vec text format,
 * read with bounds so that no input takes all memory or runs forever. */
#define _XOPEN_SOURCE 700 /* getc_unlocked, strdup, strtok_r */
#include "explain.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Bounds on a --vectors file, so that /dev/zero or a pipe that never ends
 * stops with an error instead of taking all memory or running forever.
 * The largest common files (GloVe 840B, fastText's crawl vectors, word2vec
 * GoogleNews, ConceptNet Numberbatch) have under 10 million lines of a few
 * kilobytes. */
#define VECTORS_MAX_LINE ((size_t)16 << 20) /* bytes, the newline not counted */
#define VECTORS_MAX_LINES 16777216L          /* 2^24 */

/* ------------------------------------------------------------ messages */

const char *explain_show(char buf[SHOW_CAP], const char *s)
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

void words_free(words *l)
{
    for (int i = 0; i < l->n; i++) free(l->w[i]);
    free(l->w);
    l->n = 0;
    l->w = NULL;
}

/* Splits "a,b,c" into words; empty items are a usage error. */
int split_list(const char *flag, const char *s, words *out)
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
                      explain_show(b, s));
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

int default_values(const words *keys, int builtin, words *values)
{
    values->n = 0;
    values->w = calloc((size_t)keys->n, sizeof *values->w);
    if (!values->w) return 0;
    for (int j = 0; j < keys->n; j++) {
        const char *v = keys->w[j];
        for (int t = 0; t < BUILTIN_COUNT && builtin; t++)
            if (strcmp(builtin_words[t].en, v) == 0) v = builtin_words[t].fr;
        if (!(values->w[j] = strdup(v))) return 0;
        values->n++;
    }
    return 1;
}

/* ------------------------------------------------------------ vectors */

void lexicon_free(lexicon *lx)
{
    for (int i = 0; i < lx->n; i++) {
        free(lx->word[i]);
        free(lx->vec[i]);
    }
    free(lx->word);
    free(lx->vec);
}

const double *lexicon_find(const lexicon *lx, const char *w)
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

typedef enum line_status {
    LINE_OK, LINE_END, LINE_LONG, LINE_NUL, LINE_NOMEM, LINE_FAIL
} line_status;

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

/* Whether line is word2vec's "COUNT DIM" header (probed on a copy: line
 * stays as it is), and its numbers. */
static int word2vec_header(const char *line, long long *count, long long *dim)
{
    int64_t c, d;
    char *copy = strdup(line), *hs = NULL;
    char *t1 = copy ? strtok_r(copy, " \t", &hs) : NULL;
    char *t2 = t1 ? strtok_r(NULL, " \t", &hs) : NULL;
    int header = t2 && !strtok_r(NULL, " \t", &hs) && cli_parse_int64(t1, &c) &&
                 cli_parse_int64(t2, &d) && c >= 0 && d >= 1;
    free(copy);
    if (header) {
        *count = c;
        *dim = d;
    }
    return header;
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
        if (lineno == 1 && word2vec_header(line, &header_count, &header_dim)) continue;
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
                          path, lineno, explain_show(b1, num_text), explain_show(b2, word));
                goto done;
            }
            count++;
        }
        if (count == 0) {
            cli_error("explain", "--vectors %s:%ld: '%s' has no numbers", path, lineno,
                      explain_show(b1, word));
            goto done;
        }
        if (header_dim > 0 && count != header_dim) {
            cli_error("explain", "--vectors %s:%ld: %d number%s after '%s', expected %lld as the "
                      "header on line 1 says", path, lineno, count, count == 1 ? "" : "s",
                      explain_show(b1, word), header_dim);
            goto done;
        }
        if (lx->dim == 0) {
            lx->dim = count;
            first_line = lineno;
        } else if (count != lx->dim) {
            cli_error("explain", "--vectors %s:%ld: %d number%s after '%s', expected %d as on "
                      "line %ld", path, lineno, count, count == 1 ? "" : "s",
                      explain_show(b1, word), lx->dim, first_line);
            goto done;
        }
        data_lines++;
        if (!wanted(lists, nlists, word) || lexicon_find(lx, word)) continue;
        int bad = wanted(&floats, 1, word) ? past_float(x, count) : -1;
        if (bad >= 0) {
            cli_error("explain", "--vectors %s:%ld: '%s' is a value word and its number %g "
                      "does not fit float32 (|x| <= %g), the type libqkv computes the output "
                      "in", path, lineno, explain_show(b1, word), x[bad], FLT_MAX);
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

int lexicon_load(const char *path, const words *const lists[], int nlists, const words *floats,
                 lexicon *lx)
{
    return path ? read_vectors(path, lists, nlists, floats, lx)
                : builtin_vectors(lists, nlists, lx);
}

/* Every word of the list must have a vector. */
int check_known(const char *flag, const words *l, const lexicon *lx)
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
                      "--vectors FILE)", flag, explain_show(b, l->w[i]), known);
        } else {
            cli_error("explain", "%s: '%s' is not in %s", flag, explain_show(b, l->w[i]),
                      lx->source);
        }
        return 0;
    }
    return 1;
}
