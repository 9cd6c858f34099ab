/* The mechanism of `qkv explain`, one step at a time: each step of the
 * main path has a function that computes it (before anything is printed,
 * so that a failure never leaves half a report) and one that prints it,
 * with every number on screen. The dot products and scores are computed
 * here in double; libqkv (its reference kernel) turns the scores into the
 * weights and the output, which are checked against the formula. */
#include "explain.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *explain_num(char buf[NUM_CAP], long double x, int prec)
{
    if (fabsl(x) < 1e6L)
        snprintf(buf, NUM_CAP, "%.*Lf", prec, x);
    else
        snprintf(buf, NUM_CAP, "%.4Lg", x);
    return buf;
}

/* ------------------------------------------------------------ printing */

/* Columns shown for a vector: all of them up to 8, else the first 6. */
static int shown_dims(int dim) { return dim <= 8 ? dim : 6; }

/* The width of a vector table's cells: 8, or more for numbers that need it. */
static int widen(int cw, const double *x, int dim)
{
    char b[NUM_CAP];
    for (int e = 0; e < shown_dims(dim); e++) {
        int l = (int)strlen(explain_num(b, x[e], 4));
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
    for (int d = 0; d < shown_dims(dim); d++) printf(" %*s", cw, explain_num(b, x[d], 4));
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
void print_softmax(int width, const char *const *labels, const double *s, int n,
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
        int l1 = (int)strlen(explain_num(b1, s[j], 4));
        int l2 = (int)strlen(explain_num(b2, (long double)s[j] - m, 4));
        c1 = l1 > c1 ? l1 : c1;
        c2 = l2 > c2 ? l2 : c2;
    }
    printf("  %-*s %*s %*s %9s %8s\n", width, "key", c1, "score s", c2, "s - max", "exp",
           "weight");
    double wsum = 0;
    for (int j = 0; j < n; j++) {
        printf("  %-*s %*s", width, labels[j], c1, explain_num(b1, s[j], 4));
        if (allowed && !allowed[j]) {
            printf(" %*s %9s %8.4f   (hidden: score -inf)\n", c2, "-inf", "0", w[j]);
            continue;
        }
        printf(" %*s %9.4f %8.4f", c2, explain_num(b2, (long double)s[j] - m, 4), exp(s[j] - m),
               w[j]);
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
int attend(const double *s, const unsigned char *allowed, int n, const float *vf, int dv,
           float *w, float *o)
{
    int ok = 0;
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < n; j++)
        if (!allowed || allowed[j]) m = s[j] > m ? s[j] : m;
    float one = 1.0f;
    qkv_context *ctx = NULL;
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
    qkv_attention_options opt = {0};
    opt.scale = 1.0;
    if (allowed) opt.mask = qkv_tensor_contiguous((void *)allowed, QKV_DTYPE_BOOL, 1, 1, 1, n);
    ctx = cli_context("explain", 1, 1, QKV_ISA_AUTO);
    if (!ctx) goto done;
    if (qkv_attention_forward(ctx, &to, &tw, NULL, &tq, &tk, &tv, &opt) != QKV_OK) {
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
    qkv_context_free(ctx);
    free(kf);
    free(p);
    return ok;
}

/* The factor of the dot products, base / T (base: --scale, or 1/sqrt(d_k),
 * or 1 for --scores). 0 after a usage error when it passes a double. */
int factor(const char *scale_arg, const char *temp_arg, double base, double temp,
           const char *base_name, double *eff)
{
    *eff = base / temp;
    if (isfinite(*eff)) return 1;
    char b1[SHOW_CAP], b2[SHOW_CAP];
    if (scale_arg)
        cli_error("explain", "--scale %s, --temperature %s: S / T is beyond a double's range "
                  "(about %.2g)", explain_show(b1, scale_arg), explain_show(b2, temp_arg), DBL_MAX);
    else
        cli_error("explain", "--temperature %s: %s / T is beyond a double's range (about %.2g)",
                  explain_show(b1, temp_arg), base_name, DBL_MAX);
    return 0;
}

/* Which of --scale and --temperature set the factor, for messages. */
const char *knob_flags(const char *scale_arg, const char *temp_arg)
{
    return scale_arg && temp_arg ? "--scale, --temperature"
           : scale_arg           ? "--scale"
                                 : "--temperature";
}
/* ------------------------------------------------------------ computing */

void explained_free(explained *x)
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

static int explained_alloc(explained *x, int n, int d)
{
    x->n = n;
    x->d = d;
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
    return x->kvec && x->vvec && x->dots && x->s && x->s0 && x->vf && x->w && x->w0 && x->out &&
           x->out0 && x->o && x->allowed;
}

/* Step 1: the query's, the keys' and the values' vectors, the values also
 * as the float32 libqkv takes. */
static void compute_vectors(const explain_input *in, explained *x)
{
    const int d = x->d;
    x->q = lexicon_find(&in->lx, in->query.w[0]);
    for (int j = 0; j < x->n; j++) {
        x->kvec[j] = (double *)lexicon_find(&in->lx, in->keys.w[j]);
        x->vvec[j] = (double *)lexicon_find(&in->lx, in->values.w[j]);
        /* lexicon_load saw to it that the values fit float32 */
        for (int e = 0; e < d; e++) x->vf[(size_t)j * (size_t)d + (size_t)e] = (float)x->vvec[j][e];
    }
}

/* The mask of --causal: the query stands where its word first appears
 * among the keys (after them all when it is not one) and sees the keys up
 * to its place. */
static void compute_mask(const explain_input *in, explained *x)
{
    x->pos = x->n - 1;
    for (int j = x->n - 1; j >= 0; j--)
        if (strcmp(in->keys.w[j], in->query.w[0]) == 0) x->pos = j;
    for (int j = 0; j < x->n; j++) x->allowed[j] = !in->a->causal || j <= x->pos;
}

/* Steps 2 and 3: the dot products and the scores, with the knobs (s) and
 * without (s0, for the comparison). CLI_OK, or the exit code after saying
 * which passes a double's range. */
static int compute_scores(const explain_input *in, explained *x)
{
    const explain_args *a = in->a;
    char b1[SHOW_CAP], b2[SHOW_CAP], c1[NUM_CAP], c2[NUM_CAP];
    x->dk_scale = 1.0 / sqrt((double)x->d);
    if (!factor(a->scale, a->temperature, in->scale != 0 ? in->scale : x->dk_scale, in->temp,
                "1/sqrt(d_k)", &x->eff))
        return CLI_USAGE;
    for (int j = 0; j < x->n; j++) {
        x->dots[j] = dot(x->q, x->kvec[j], x->d);
        if (!isfinite(x->dots[j])) {
            cli_error("explain", "--vectors %s: q.k of '%s' and '%s' is beyond a double's range "
                      "(about %.2g)", in->lx.source, explain_show(b1, in->query.w[0]),
                      explain_show(b2, in->keys.w[j]), DBL_MAX);
            return CLI_ERROR;
        }
        x->s[j] = x->eff * x->dots[j];
        x->s0[j] = x->dk_scale * x->dots[j];
        if (!isfinite(x->s[j])) {
            cli_error("explain", "%s: score(%s) = %s * %s is beyond a double's range (about "
                      "%.2g)", knob_flags(a->scale, a->temperature),
                      explain_show(b1, in->keys.w[j]), explain_num(c1, x->dots[j], 4),
                      explain_num(c2, x->eff, 4), DBL_MAX);
            return CLI_USAGE;
        }
    }
    return CLI_OK;
}

int explain_compute(const explain_input *in, explained *x)
{
    const explain_args *a = in->a;
    if (!explained_alloc(x, in->keys.n, in->lx.dim)) {
        cli_error("explain", "out of memory");
        return CLI_ERROR;
    }
    compute_vectors(in, x);
    compute_mask(in, x);
    int rc = compute_scores(in, x);
    if (rc != CLI_OK) return rc;
    /* Steps 4 and 5: the weights and the output. */
    if (!attend(x->s, x->allowed, x->n, x->vf, x->d, x->w, x->out)) return CLI_ERROR;
    for (int e = 0; e < x->d; e++) x->o[e] = x->out[e];
    if ((a->causal || a->scale || a->temperature) &&
        !attend(x->s0, NULL, x->n, x->vf, x->d, x->w0, x->out0))
        return CLI_ERROR;
    return CLI_OK;
}

/* ------------------------------------------------------------ the report */

/* What every step prints with: the input, its numbers, and the layout. */
typedef struct report {
    const explain_input *in;
    const explained *x;
    int width; /* the labels' column */
    int cw;    /* a vector table's cells */
} report;

/* One label width for every step, and one cell width for every vector
 * table, wide enough for all of them. */
static report report_layout(const explain_input *in, const explained *x)
{
    report r = {in, x, 9 + (int)strlen(in->query.w[0]), 8};
    for (int j = 0; j < x->n; j++) {
        int l = 6 + (int)strlen(in->keys.w[j]), lv = 7 + (int)strlen(in->values.w[j]);
        r.width = l > r.width ? l : r.width;
        r.width = lv > r.width ? lv : r.width;
    }
    double row[8];
    r.cw = widen(r.cw, x->q, x->d);
    for (int j = 0; j < x->n; j++) {
        r.cw = widen(widen(r.cw, x->kvec[j], x->d), x->vvec[j], x->d);
        for (int e = 0; e < shown_dims(x->d); e++) row[e] = x->w[j] * x->vvec[j][e];
        r.cw = widen(r.cw, row, x->d);
    }
    r.cw = widen(r.cw, x->o, x->d);
    return r;
}

static void print_intro(const report *r)
{
    const explain_input *in = r->in;
    printf("Attention for one query, step by step: the query \"%s\" against %d key%s,\n"
           "word vectors from %s (%d numbers per word).\n\n",
           in->query.w[0], r->x->n, r->x->n == 1 ? "" : "s", in->lx.source, r->x->d);
}

static void print_step_vectors(const report *r)
{
    const explain_input *in = r->in;
    const explained *x = r->x;
    char label[256];
    printf("Step 1. The vectors. The query and the keys are compared; the values are\n"
           "what the output is made of.%s\n\n",
           in->lx.features ? " The built-in table's numbers say by hand how much\n"
                             "each word is an animal, a fruit, a plant and a drink."
                           : "");
    print_header_row(r->width, r->cw, &in->lx);
    snprintf(label, sizeof label, "query %s", in->query.w[0]);
    print_vector_row(r->width, r->cw, label, x->q, x->d);
    for (int j = 0; j < x->n; j++) {
        snprintf(label, sizeof label, "key   %s", in->keys.w[j]);
        print_vector_row(r->width, r->cw, label, x->kvec[j], x->d);
    }
    for (int j = 0; j < x->n; j++) {
        snprintf(label, sizeof label, "value %s", in->values.w[j]);
        print_vector_row(r->width, r->cw, label, x->vvec[j], x->d);
    }
}

static void print_step_dots(const report *r)
{
    const explained *x = r->x;
    const words *keys = &r->in->keys;
    char label[256], c1[NUM_CAP], c2[NUM_CAP];
    printf("\nStep 2. Compare the query with each key: the dot product q.k, the sum of\n"
           "the products of matching numbers. The more two words share, the larger it is.\n\n");
    const int w2 = label_width("q.", keys, "");
    for (int j = 0; j < x->n; j++) {
        snprintf(label, sizeof label, "q.%s", keys->w[j]);
        printf("  %-*s = ", w2, label);
        if (x->d <= 4) {
            for (int e = 0; e < x->d; e++)
                printf("%s%s*%s", e ? " + " : "", explain_num(c1, x->q[e], 2),
                       explain_num(c2, x->kvec[j][e], 2));
            printf(" = ");
        }
        printf("%s\n", explain_num(c1, x->dots[j], 4));
    }
}

static void print_step_scale(const report *r)
{
    const explain_input *in = r->in;
    const explained *x = r->x;
    char label[256], c1[NUM_CAP], c2[NUM_CAP], c3[NUM_CAP];
    printf("\nStep 3. Scale the dot products. d_k = %d is the length of the query and key\n"
           "vectors, and dividing by sqrt(d_k) = %.4g keeps the scores from growing with it\n"
           "(with the d_k = 64 of many models this divides by 8).",
           x->d, sqrt((double)x->d));
    if (in->scale != 0) printf("\nHere --scale multiplies by %g instead.", in->scale);
    if (in->temp != 1)
        printf("\n--temperature %g then divides by %g: the weights get %s.", in->temp, in->temp,
               in->temp < 1 ? "sharper" : "flatter");
    printf("\n\n");
    const int w3 = label_width("score(", &in->keys, ")");
    for (int j = 0; j < x->n; j++) {
        snprintf(label, sizeof label, "score(%s)", in->keys.w[j]);
        printf("  %-*s = %s * %s = %s\n", w3, label, explain_num(c1, x->dots[j], 4),
               explain_num(c2, x->eff, 4), explain_num(c3, x->s[j], 4));
    }
}

/* Step 4, with the mask of --causal. */
static void print_step_softmax(const report *r)
{
    const explained *x = r->x;
    printf("\nStep 4. Softmax turns the scores into weights that are positive and sum to 1:\n"
           "weight_j = exp(s_j - max) / sum_k exp(s_k - max). Subtracting the largest score\n"
           "first changes nothing in the result and keeps exp from overflowing.");
    if (r->in->a->causal)
        printf("\n--causal: the query stands at position %d (counting from 1), so the keys\n"
               "after it are hidden (score -inf, weight 0).", x->pos + 1);
    printf("\n\n");
    print_softmax(r->width - 2, (const char *const *)r->in->keys.w, x->s, x->n, x->allowed, x->w);
}

static void print_step_sum(const report *r)
{
    const explained *x = r->x;
    const words *values = &r->in->values;
    char label[256];
    double row[8];
    printf("\nStep 5. The output is the weighted sum of the value vectors:\n  o =");
    for (int j = 0; j < x->n; j++) printf("%s %.4f*%s", j ? " +" : "", x->w[j], values->w[j]);
    printf("\n\n");
    print_header_row(r->width, r->cw, &r->in->lx);
    for (int j = 0; j < x->n; j++) {
        if (!x->allowed[j]) continue;
        for (int e = 0; e < shown_dims(x->d); e++) row[e] = x->w[j] * x->vvec[j][e];
        snprintf(label, sizeof label, "%.4f*%s", x->w[j], values->w[j]);
        print_vector_row(r->width, r->cw, label, row, shown_dims(x->d));
    }
    print_vector_row(r->width, r->cw, "o (sum)", x->o, x->d);
}

static void print_step_nearest(const report *r)
{
    const explain_input *in = r->in;
    const explained *x = r->x;
    const words *values = &in->values;
    const int d = x->d;
    char label[256];
    printf("\nStep 6. Which value is the output nearest? Cosine similarity, from -1 to 1:\n\n");
    int best_v = 0, best_k = 0;
    double best_c = -2;
    const double on = sqrt(dot(x->o, x->o, d));
    const int w6 = label_width("cos(o, ", values, ")");
    for (int j = 0; j < x->n; j++) {
        double vn = sqrt(dot(x->vvec[j], x->vvec[j], d));
        double c = on > 0 && vn > 0 ? dot(x->o, x->vvec[j], d) / (on * vn) : 0;
        snprintf(label, sizeof label, "cos(o, %s)", values->w[j]);
        printf("  %-*s = %7.4f\n", w6, label, c);
        if (c > best_c) {
            best_c = c;
            best_v = j;
        }
        if (x->w[j] > x->w[best_k]) best_k = j;
    }
    printf("\n\"%s\" attends most to \"%s\" (weight %.3f),\nand its output is nearest \"%s\" "
           "(cosine %.3f)",
           in->query.w[0], in->keys.w[best_k], x->w[best_k], values->w[best_v], best_c);
    if (in->default_values && !in->a->vectors &&
        strcmp(values->w[best_v], in->keys.w[best_v]) != 0)
        printf(": the translation of \"%s\"", in->query.w[0]);
    printf(".\n");
    if (best_c < 0.9995)
        printf("The output is a blend: the other values add their share, which is why the\n"
               "cosine is below 1.\n");
}

/* The weights without the knobs given, when any is. */
static void print_comparison(const report *r)
{
    const explain_args *a = r->in->a;
    if (!a->causal && !a->scale && !a->temperature) return;
    /* "--causal", "--causal and --scale", "--causal, --scale and --temperature" */
    const char *knob[3];
    int k = 0;
    if (a->causal) knob[k++] = "--causal";
    if (a->scale) knob[k++] = "--scale";
    if (a->temperature) knob[k++] = "--temperature";
    printf("\nFor comparison, without ");
    for (int i = 0; i < k; i++) printf("%s%s", i == 0 ? "" : i == k - 1 ? " and " : ", ", knob[i]);
    printf(" the weights are\n ");
    for (int j = 0; j < r->x->n; j++) printf(" %.4f", r->x->w0[j]);
    printf(".\n");
}

void explain_print(const explain_input *in, const explained *x)
{
    const report r = report_layout(in, x);
    print_intro(&r);
    print_step_vectors(&r);
    print_step_dots(&r);
    print_step_scale(&r);
    print_step_softmax(&r);
    print_step_sum(&r);
    print_step_nearest(&r);
    print_comparison(&r);
}
