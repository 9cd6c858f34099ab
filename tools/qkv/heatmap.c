/* `qkv heatmap`: draws attention weights (a .npy of rank 2-4, as `qkv run
 * --weights` writes them) as one heatmap per head, with token labels and a
 * colour legend, to SVG or PNG (figure.c lays it out, canvas.c draws it)
 * or the interactive page of html.c. This file reads the arguments and the
 * weights and writes the output. */
#include "cli.h"
#include "commands.h"
#include "figure.h"
#include "picture.h"
#include "text.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char heatmap_usage[] =
    "usage: qkv heatmap P.npy -o OUT.svg|OUT.png|OUT.html [options]\n"
    "\n"
    "Draws attention weights as heatmaps, one per head: keys across, queries\n"
    "down, with token labels and a colour legend. P.npy is (Lq, Lk),\n"
    "(H, Lq, Lk) or (B, H, Lq, Lk), as `qkv run --weights` writes it; float64\n"
    "and float16 are read as float32. Every value must be finite and in [0, 1]\n"
    "(rows of fully masked queries are all 0). OUT's extension picks the\n"
    "format: .svg, .png (RGB; built with libpng) or .html (the interactive\n"
    "page, every selected head at full size).\n"
    "\n"
    "options:\n"
    "  -o OUT              the picture to write\n"
    "  --labels-q A,B,...  Lq query token labels, comma-separated; \\, is a comma\n"
    "                      inside a label, \\\\ a backslash; empty labels allowed\n"
    "  --labels-k A,B,...  Lk key token labels (default for both: 0, 1, 2, ...)\n"
    "  --head N            draw head N only: rank 3: 0 to H-1; rank 4: N = b*H + h,\n"
    "                      the B*H heads in order (panels are named \"b1 h3\")\n"
    "  --grid              draw every head, side by side (at most 64)\n"
    "  --vmax V|auto       weight at the top of the colour scale, 0 < V <= 1\n"
    "                      (default 1); auto: the largest weight drawn\n"
    "  --title T           the picture's title (default: file name and shape)\n"
    "  -h, --help          show this help\n"
    "\n"
    "Without --head or --grid, one head is drawn as it is, and rank 3 or 4\n"
    "files with 2 to 16 heads are drawn as a grid; past 16, choose.\n"
    "Heads with more than 128 tokens a side (64, 48 or 32 in grids of up to 4,\n"
    "16 or 64 heads) are downsampled: each cell is the mean of a block of\n"
    "weights, ticks give a block's first token, and a note in the picture\n"
    "says so. Token labels are drawn where cells are at least 10 units tall\n"
    "(a single head keeps them up to 128 tokens a side); otherwise ticks give\n"
    "token indices and the note says the labels were left out. Heads of at\n"
    "most 16x16 show each weight in its cell where it fits (a single head\n"
    "always).\n"
    "Colours run from dark violet (0) through blue and green to yellow (1);\n"
    "lightness rises strictly with the weight, so the picture reads in grey.\n"
    "PNG text uses a built-in 5x7 font: ASCII, other characters as a box.\n"
    "\n"
    "Exit status: 0 success, 1 error, 2 usage error. On error no output file\n"
    "is written.\n";

/* ------------------------------------------------------------- arguments */

typedef struct hm_args {
    const char *in, *out, *labels_q, *labels_k, *head, *vmax, *title;
    int grid;
} hm_args;

/* CLI_OK, CLI_USAGE (error printed), or -1 for --help. */
static int parse_args(int argc, char **argv, hm_args *a)
{
    const cli_opt opts[] = {
        {"-o", &a->out, NULL, 0},
        {"--labels-q", &a->labels_q, NULL, 1}, /* "" is one empty label */
        {"--labels-k", &a->labels_k, NULL, 1},
        {"--head", &a->head, NULL, 0},
        {"--vmax", &a->vmax, NULL, 0},
        {"--title", &a->title, NULL, 1},
        {"--grid", NULL, &a->grid, 0},
    };
    int rc = cli_parse_args("heatmap", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]),
                            &a->in);
    if (rc != CLI_OK) return rc;
    if (!a->in) {
        cli_error("heatmap", "a weights file P.npy is required (see 'qkv heatmap --help')");
        return CLI_USAGE;
    }
    if (!a->out) {
        cli_error("heatmap", "-o is required (see 'qkv heatmap --help')");
        return CLI_USAGE;
    }
    if (a->head && a->grid) {
        cli_error("heatmap", "--head and --grid exclude each other");
        return CLI_USAGE;
    }
    return CLI_OK;
}

enum { FMT_SVG, FMT_PNG, FMT_HTML };

static int output_format(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/')) {
        if (strcasecmp(dot, ".svg") == 0) return FMT_SVG;
        if (strcasecmp(dot, ".png") == 0) return FMT_PNG;
        if (strcasecmp(dot, ".html") == 0) return FMT_HTML;
    }
    return -1;
}

/* Comma-separated labels; "\," is a comma and "\\" a backslash inside a
 * label (tokens are often punctuation), any other backslash is itself. */
typedef struct labels {
    char *buf;
    char **v;
    int64_t n;
} labels;

static int parse_labels(const char *s, labels *l)
{
    size_t len = strlen(s);
    int64_t n = 1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' && (s[i + 1] == ',' || s[i + 1] == '\\'))
            i++;
        else if (s[i] == ',')
            n++;
    }
    l->buf = malloc(len + 1);
    l->v = malloc((size_t)n * sizeof *l->v);
    if (!l->buf || !l->v) return 0;
    char *d = l->buf;
    l->n = 0;
    l->v[l->n++] = d;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' && (s[i + 1] == ',' || s[i + 1] == '\\')) {
            *d++ = s[++i];
        } else if (s[i] == ',') {
            *d++ = '\0';
            l->v[l->n++] = d;
        } else {
            *d++ = s[i];
        }
    }
    *d = '\0';
    return 1;
}

static void free_labels(labels *l)
{
    free(l->buf);
    free(l->v);
}

/* ---------------------------------------------------------------- checks */

enum { MAX_GRID = 64, MAX_DEFAULT_GRID = 16 };

/* What the flags ask for, once checked. */
typedef struct hm_request {
    int fmt;        /* FMT_* */
    int64_t head;   /* --head, or -1 */
    double vmax;    /* --vmax, or -1: the default */
    int vmax_auto;  /* --vmax auto */
} hm_request;

/* What is wrong whatever the file holds: usage errors, before reading.
 * Returns CLI_OK or the exit status, the error printed. */
static int check_request(const hm_args *a, hm_request *r)
{
    if (!*a->out) {
        cli_error("heatmap", "-o: empty file name");
        return CLI_USAGE;
    }
    r->fmt = output_format(a->out);
    if (r->fmt < 0) {
        cli_error("heatmap", "-o %s: unknown picture format, expected a name ending in .svg, "
                             ".png or .html", a->out);
        return CLI_USAGE;
    }
    r->head = -1;
    if (a->head && (!cli_parse_int64(a->head, &r->head) || r->head < 0)) {
        cli_error("heatmap", "--head: '%s', expected a head number >= 0", a->head);
        return CLI_USAGE;
    }
    double vmax = 1;
    r->vmax_auto = a->vmax && strcmp(a->vmax, "auto") == 0;
    if (a->vmax && !r->vmax_auto &&
        (!cli_parse_double(a->vmax, &vmax) || !(vmax > 0) || !(vmax <= 1))) {
        cli_error("heatmap", "--vmax: '%s', expected a number in (0, 1] or auto", a->vmax);
        return CLI_USAGE;
    }
    r->vmax = a->vmax ? vmax : -1;
    const char *const out_flag[1] = {"-o"}, *const out_path[1] = {a->out};
    int prc = cli_check_output_paths("heatmap", 1, out_flag, out_path);
    if (prc != CLI_OK) return prc;
#ifndef QKV_HAVE_PNG
    if (r->fmt == FMT_PNG) {
        cli_error("heatmap", "-o %s: built without libpng; write .svg or rebuild after "
                             "installing libpng-dev", a->out);
        return CLI_ERROR;
    }
#endif
    return CLI_OK;
}

/* Every value finite and in [0, 1]; within 1e-6 outside it is rounding
 * (float16 weights, sums of exps) and clamped. Prints the first bad one. */
static int check_weights(const char *path, qkv_array *w)
{
    float *x = w->data;
    int64_t n = qkv_array_numel(w);
    for (int64_t e = 0; e < n; e++) {
        double v = x[e];
        if (v >= 0 && v <= 1) continue;
        if (v >= -1e-6 && v < 0) {
            x[e] = 0;
            continue;
        }
        if (v > 1 && v <= 1 + 1e-6) {
            x[e] = 1;
            continue;
        }
        char idx[256];
        size_t used = 0;
        int64_t rest = e;
        int64_t at[QKV_ARRAY_MAX_DIMS];
        for (int d = w->ndim - 1; d >= 0; d--) {
            at[d] = rest % w->shape[d];
            rest /= w->shape[d];
        }
        for (int d = 0; d < w->ndim && used < sizeof idx; d++)
            used += (size_t)snprintf(idx + used, sizeof idx - used, "%s%lld", d ? ", " : "",
                                     (long long)at[d]);
        cli_error("heatmap", "weights %s: element (%s) is %g, expected a weight in [0, 1]",
                  path, idx, v);
        return 0;
    }
    return 1;
}

/* -------------------------------------------------------------- the job */

/* What the command reads and builds; job_free frees it. */
typedef struct hm_job {
    qkv_array w;
    char shape[128];
    int64_t B, H, Lq, Lk;
    labels labels_q, labels_k;
    int64_t first, count; /* the heads drawn: [first, first + count) */
    char (*names)[48];
    const char **name_ptrs;
    char title[TEXT_BYTES];
    picture pic; /* what is drawn, pointing into the above */
} hm_job;

static void job_free(hm_job *j)
{
    qkv_array_free(&j->w);
    free_labels(&j->labels_q);
    free_labels(&j->labels_k);
    free(j->names);
    free(j->name_ptrs);
}

/* The weights: rank 2 to 4, not empty, every one in [0, 1]. */
static int load_weights(const char *path, hm_job *j)
{
    if (!cli_load_f32("heatmap", "weights", path, 0, &j->w)) return 0;
    const qkv_array *w = &j->w;
    cli_format_shape(j->shape, sizeof j->shape, w);
    if (w->ndim < 2 || w->ndim > 4) {
        cli_error("heatmap", "weights %s: rank %d %s, expected (Lq, Lk), (H, Lq, Lk) or "
                             "(B, H, Lq, Lk)", path, w->ndim, j->shape);
        return 0;
    }
    if (qkv_array_numel(w) == 0) {
        cli_error("heatmap", "weights %s: shape %s holds no weights to draw", path, j->shape);
        return 0;
    }
    if (!check_weights(path, &j->w)) return 0;
    j->Lq = w->shape[w->ndim - 2], j->Lk = w->shape[w->ndim - 1];
    j->H = w->ndim >= 3 ? w->shape[w->ndim - 3] : 1, j->B = w->ndim == 4 ? w->shape[0] : 1;
    return 1;
}

/* --labels-q and --labels-k, one label per token. */
static int load_labels(const hm_args *a, hm_job *j)
{
    const char *src[2] = {a->labels_q, a->labels_k}, *flag[2] = {"--labels-q", "--labels-k"};
    labels *dst[2] = {&j->labels_q, &j->labels_k};
    const int64_t want[2] = {j->Lq, j->Lk};
    for (int k = 0; k < 2; k++) {
        if (!src[k]) continue;
        if (!parse_labels(src[k], dst[k])) {
            cli_error("heatmap", "%s: out of memory", flag[k]);
            return 0;
        }
        if (dst[k]->n != want[k]) {
            cli_error("heatmap", "%s: %lld label%s, but %s has %s = %lld (shape %s)", flag[k],
                      (long long)dst[k]->n, dst[k]->n == 1 ? "" : "s", a->in, k ? "Lk" : "Lq",
                      (long long)want[k], j->shape);
            return 0;
        }
    }
    return 1;
}

/* Which heads: --head N, or all of them if a picture has room. */
static int select_heads(const hm_args *a, const hm_request *r, hm_job *j)
{
    const int64_t heads = j->B * j->H, head = r->head;
    j->first = 0, j->count = heads;
    if (head >= 0) {
        if (head >= heads) {
            if (j->w.ndim == 4)
                cli_error("heatmap", "--head %lld: %s has B*H = %lld*%lld = %lld heads (0 to "
                                     "%lld; N = b*%lld + h)", (long long)head, a->in,
                          (long long)j->B, (long long)j->H, (long long)heads,
                          (long long)heads - 1, (long long)j->H);
            else
                cli_error("heatmap", "--head %lld: %s has %lld head%s (0 to %lld)",
                          (long long)head, a->in, (long long)heads, heads == 1 ? "" : "s",
                          (long long)heads - 1);
            return 0;
        }
        j->first = head, j->count = 1;
    } else if (r->fmt != FMT_HTML && a->grid && heads > MAX_GRID) {
        cli_error("heatmap", "--grid: %s has %lld heads, at most %d fit one picture; draw one "
                             "with --head N", a->in, (long long)heads, MAX_GRID);
        return 0;
    } else if (r->fmt != FMT_HTML && !a->grid && heads > MAX_DEFAULT_GRID) {
        cli_error("heatmap", "weights %s: %lld heads; draw one with --head N (0 to %lld) or "
                             "all with --grid (up to %d)", a->in, (long long)heads,
                  (long long)heads - 1, MAX_GRID);
        return 0;
    }
    return 1;
}

/* The picture of the selected heads: their names ("head 3", "b1 h3"; none
 * for rank 2), the title (--title, else file name and shape), the labels. */
static int make_picture(const hm_args *a, hm_job *j)
{
    if (j->w.ndim > 2) {
        j->names = calloc((size_t)j->count, sizeof *j->names);
        j->name_ptrs = calloc((size_t)j->count, sizeof *j->name_ptrs);
        if (!j->names || !j->name_ptrs) {
            cli_error("heatmap", "weights %s: out of memory", a->in);
            return 0;
        }
        for (int64_t p = 0; p < j->count; p++) {
            int64_t n = j->first + p;
            if (j->B > 1)
                snprintf(j->names[p], sizeof j->names[p], "b%lld h%lld", (long long)(n / j->H),
                         (long long)(n % j->H));
            else
                snprintf(j->names[p], sizeof j->names[p], "head %lld", (long long)n);
            j->name_ptrs[p] = j->names[p];
        }
    }
    if (a->title) {
        display_text(a->title, TITLE_CHARS, j->title);
    } else {
        const char *base = strrchr(a->in, '/');
        char t[TEXT_BYTES];
        snprintf(t, sizeof t, "%s %s", base ? base + 1 : a->in, j->shape);
        display_text(t, TITLE_CHARS, j->title);
    }
    j->pic = (picture){j->title, j->count, j->Lq, j->Lk,
                       (const float *)j->w.data + j->first * j->Lq * j->Lk, j->name_ptrs,
                       a->labels_q ? (const char *const *)j->labels_q.v : NULL,
                       a->labels_k ? (const char *const *)j->labels_k.v : NULL};
    return 1;
}

/* --------------------------------------------------------------- writers */

static const char *write_svg(const char *path, void *ctx)
{
    FILE *f = fopen(path, "w");
    if (!f) return strerror(errno);
    canvas cv = canvas_svg(f);
    figure_draw(ctx, &cv);
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    if (fclose(f) != 0 && !err) err = errno;
    return err ? strerror(err) : NULL;
}

#ifdef QKV_HAVE_PNG
typedef struct png_job {
    const figure *fig;
    char why[200]; /* libpng's reason for a failure */
} png_job;

static const char *write_png(const char *path, void *ctx)
{
    png_job *job = ctx;
    const int64_t w = job->fig->width * CANVAS_PX, h = job->fig->height * CANVAS_PX;
    if ((uint64_t)w * (uint64_t)h > ((uint64_t)1 << 31) / 3)
        return "picture too large for a PNG (draw fewer heads)";
    bitmap bm;
    if (!bitmap_init(&bm, job->fig->width, job->fig->height)) return "out of memory";
    canvas cv = canvas_bitmap(&bm);
    figure_draw(job->fig, &cv);
    const char *why = bitmap_write_png(&bm, path, job->why, sizeof job->why);
    bitmap_free(&bm);
    return why;
}
#endif

static const char *write_html(const char *path, void *ctx)
{
    return picture_write_html(path, ctx, NULL);
}

/* Draws the picture into the output -o names: the page, or the figure as
 * SVG or PNG. */
static int write_output(cli_outputs *outs, const hm_args *a, const hm_request *r, hm_job *j)
{
    if (r->fmt == FMT_HTML)
        return cli_outputs_add_with(outs, "heatmap", "-o", a->out, write_html, &j->pic);
    figure *fig = malloc(sizeof *fig);
    if (!fig || !figure_init(fig, &j->pic, r->vmax, r->vmax_auto)) {
        free(fig);
        cli_error("heatmap", "weights %s: out of memory", a->in);
        return 0;
    }
    cli_write_fn writer = write_svg;
    void *ctx = fig;
#ifdef QKV_HAVE_PNG
    png_job job = {fig, ""};
    if (r->fmt == FMT_PNG) writer = write_png, ctx = &job;
#endif
    int ok = cli_outputs_add_with(outs, "heatmap", "-o", a->out, writer, ctx);
    figure_free(fig);
    free(fig);
    return ok;
}

/* ------------------------------------------------------------ subcommand */

int cmd_heatmap(int argc, char **argv)
{
    hm_args a = {0};
    int prc = parse_args(argc, argv, &a);
    if (prc == -1) {
        fputs(heatmap_usage, stdout);
        return CLI_OK;
    }
    if (prc != CLI_OK) return prc;
    hm_request req;
    prc = check_request(&a, &req);
    if (prc != CLI_OK) return prc;

    int rc = CLI_ERROR;
    hm_job job = {0};
    cli_outputs outs = {0};
    if (!load_weights(a.in, &job) || !load_labels(&a, &job) || !select_heads(&a, &req, &job) ||
        !make_picture(&a, &job))
        goto done;
    if (!write_output(&outs, &a, &req, &job)) goto done;
    if (!cli_outputs_commit(&outs, "heatmap")) goto done;
    rc = CLI_OK;

done:
    cli_outputs_abort(&outs);
    job_free(&job);
    return rc;
}
