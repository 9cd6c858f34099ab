/* `qkv explain --scores`: step 4 alone, the softmax of scores given on
 * the command line, with what it is not (each score's share of the
 * total) and what it depends on (only the differences). */
#include "explain.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The listed scores as numbers (raw) and multiplied by the factor eff (s).
 * CLI_OK, or CLI_USAGE after naming the item that is not a finite number
 * or passes a double's range. */
static int read_scores(const explain_args *a, double scale, double temp, const words *items,
                       double *raw, double *s, double *eff)
{
    char b1[SHOW_CAP];
    for (int j = 0; j < items->n; j++) {
        if (!cli_parse_double(items->w[j], &raw[j]) || !isfinite(raw[j])) {
            cli_error("explain", "--scores: '%s' is not a finite number",
                      explain_show(b1, items->w[j]));
            return CLI_USAGE;
        }
    }
    if (!factor(a->scale, a->temperature, scale != 0 ? scale : 1.0, temp, "1", eff))
        return CLI_USAGE;
    for (int j = 0; j < items->n; j++) {
        s[j] = *eff * raw[j];
        if (!isfinite(s[j])) {
            cli_error("explain", "--scores: %s times %g (%s) is beyond a double's range (about "
                      "%.2g)", explain_show(b1, items->w[j]), *eff,
                      knob_flags(a->scale, a->temperature), DBL_MAX);
            return CLI_USAGE;
        }
    }
    return CLI_OK;
}

/* Softmax is not each score's share of the total: those shares, where
 * they are defined, and what softmax depends on instead. */
static void print_not_shares(const double *raw, int n)
{
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
}

int explain_scores(const explain_args *a, double scale, double temp)
{
    words items;
    if (!split_list("--scores", a->scores, &items)) return CLI_USAGE;
    int n = items.n, rc = CLI_ERROR;
    cli_outputs outs = {0};
    double *s = calloc((size_t)n, sizeof *s);
    double *raw = calloc((size_t)n, sizeof *raw);
    float *w = calloc((size_t)n, sizeof *w);
    float *ones = calloc((size_t)n, sizeof *ones);
    double eff;
    float out;
    if (!s || !raw || !w || !ones) {
        cli_error("explain", "out of memory");
        goto done;
    }
    if ((rc = read_scores(a, scale, temp, &items, raw, s, &eff)) != CLI_OK) goto done;
    rc = CLI_ERROR;
    for (int j = 0; j < n; j++) ones[j] = 1.0f; /* o = the sum of the weights */
    if (!attend(s, NULL, n, ones, 1, w, &out)) goto done;
    if (a->html && !write_html(&outs, a->html, "softmax of the given scores", "scores",
                               (const char *const *)items.w, n, w, NULL))
        goto done;

    int width = 5;
    for (int j = 0; j < n; j++) {
        int l = (int)strlen(items.w[j]);
        width = l > width ? l : width;
    }
    printf("The softmax of the scores %s", a->scores);
    if (eff != 1.0) printf(", each multiplied by %g", eff);
    printf(":\n\n  weight_j = exp(s_j - max) / sum_k exp(s_k - max)\n\n");
    print_softmax(width, (const char *const *)items.w, s, n, NULL, w);
    print_not_shares(raw, n);
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
