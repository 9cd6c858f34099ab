/* `qkv explain`'s parts: the words and their vectors (explain_vectors.c),
 * the mechanism step by step, each step computed and printed by its own
 * function (explain_steps.c), the softmax of given scores
 * (explain_scores.c) and the command (explain.c). */
#ifndef QKV_EXPLAIN_H
#define QKV_EXPLAIN_H

#include "cli.h"

/* ------------------------------------------------------------ messages */

/* User text fit for a one-line message, cut as libqkv's file readers cut
 * the names they quote: at most 60 bytes (at a character boundary, "..."
 * added), control bytes shown as '?'. Returns buf. */
enum { SHOW_MAX = 60, SHOW_CAP = SHOW_MAX + 4 };
const char *explain_show(char buf[SHOW_CAP], const char *s);

/* x with prec decimals, or with 4 significant digits from 1e6 up, so that
 * 1e39 stays a short cell instead of 40 digits. Long double: "s - max" can
 * pass a double's range (1e308 - -1e308). Returns buf. */
enum { NUM_CAP = 48 };
const char *explain_num(char buf[NUM_CAP], long double x, int prec);

/* ------------------------------------------------------------ words */

/* A list of words, each malloc'd. */
typedef struct words {
    int n;
    char **w;
} words;

void words_free(words *l);

/* Splits "a,b,c" into words; an empty item is a usage error, printed
 * naming flag (as out of memory is). 0 on either. */
int split_list(const char *flag, const char *s, words *out);

/* The values that go with keys when --values is not given: each key's
 * French partner in the built-in table (builtin set), else the key
 * itself. 0 when out of memory (values then holds those made so far). */
int default_values(const words *keys, int builtin, words *values);

/* ------------------------------------------------------------ vectors */

/* The vectors of the words asked for, each `dim` doubles; feature names
 * only for the built-in table. */
typedef struct lexicon {
    int dim;
    const char *const *features; /* NULL: columns are numbered */
    const char *source;          /* "the built-in table" or the file */
    int n;
    char **word;
    double **vec;
} lexicon;

void lexicon_free(lexicon *lx);

/* The vector of w, or NULL when lx does not hold it. */
const double *lexicon_find(const lexicon *lx, const char *w);

/* The vectors of the words of lists, from the GloVe / word2vec text file
 * at path (NULL: the built-in table). A file is checked whole, every line;
 * the words of `floats` (the values) must fit float32. 0 after printing
 * on an error. */
int lexicon_load(const char *path, const words *const lists[], int nlists, const words *floats,
                 lexicon *lx);

/* Every word of the list has a vector; else 0 after saying which does not,
 * naming flag. */
int check_known(const char *flag, const words *l, const lexicon *lx);

/* ------------------------------------------------------------ the maths */

/* Steps 4 and 5 through libqkv's reference kernel (double sums): the
 * weights w (n) and the output o (dv) of the scores s (n, finite) and the
 * values vf (n x dv, row-major); allowed[j] == 0 hides key j (NULL: none
 * hidden). Checked against the formula in double. 0 after printing on
 * failure. */
int attend(const double *s, const unsigned char *allowed, int n, const float *vf, int dv,
           float *w, float *o);

/* The factor of the dot products, base / temp (base: --scale, or
 * 1/sqrt(d_k), or 1 for --scores; base_name names the last two), into
 * *eff. 0 after a usage error when it passes a double. */
int factor(const char *scale_arg, const char *temp_arg, double base, double temp,
           const char *base_name, double *eff);

/* Which of --scale and --temperature set the factor, for messages. */
const char *knob_flags(const char *scale_arg, const char *temp_arg);

/* Step 4's table: scores s, s - max, exp(s - max), libqkv's weights w
 * (attend has checked them against the formula), bars; allowed as for
 * attend. */
void print_softmax(int width, const char *const *labels, const double *s, int n,
                   const unsigned char *allowed, const float *w);

/* ------------------------------------------------------------ the paths */

typedef struct explain_args {
    const char *vectors, *query, *keys, *values, *scale, *temperature, *scores, *html;
    int causal;
} explain_args;

/* The page of --html: written to a temporary in outs, put in place by
 * put_html once the text is out. 0 after printing on failure. */
int write_html(cli_outputs *outs, const char *path, const char *title, const char *query,
               const char *const *keys, int n, const float *w, const char *intro);
int put_html(cli_outputs *outs);

/* The numbers of the main path, computed before any is printed. */
typedef struct explained {
    int n, d, pos;         /* keys, numbers per word, the query's place */
    double eff, dk_scale;  /* the factor of the dot products; 1/sqrt(d_k) */
    const double *q;
    double **kvec, **vvec; /* the lexicon's rows, n each */
    double *dots, *s, *s0; /* q.k_j, the scores, the scores without the knobs */
    float *vf;             /* the values as libqkv takes them, n x d */
    float *w, *out, *w0, *out0;
    double *o; /* out in double, for step 6's sums */
    unsigned char *allowed;
} explained;

void explained_free(explained *x);

/* What the main path reads before it computes: the options and their
 * numbers (scale 0: 1/sqrt(d_k)), the words, and their vectors. */
typedef struct explain_input {
    const explain_args *a;
    double scale, temp;
    words query, keys, values; /* one query; one value per key */
    int default_values;        /* values not given: the table's translations */
    lexicon lx;
} explain_input;

/* Steps 2 to 5, and the comparison run without the knobs, for the query
 * against its keys (every word in in->lx). Returns CLI_OK, or CLI_ERROR /
 * CLI_USAGE after printing. */
int explain_compute(const explain_input *in, explained *x);

/* The report of x, one step after the other. */
void explain_print(const explain_input *in, const explained *x);

/* --scores: the softmax of the listed scores, times scale (0: 1) / temp.
 * The exit code. */
int explain_scores(const explain_args *a, double scale, double temp);

#endif
