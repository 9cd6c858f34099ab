/* End-to-end tests of `qkv heatmap`, run as a child process on weights
 * generated here: the SVG is well-formed XML with every label escaped,
 * its cells' colours rise in luminance with the weights (every one of the
 * 256 colour levels strictly), the PNG (read back with libpng) shows the
 * same colours, the legend and the labels; 8x8 to 512x512, ranks 3 and 4
 * with --head and --grid, `qkv run --weights` output, and every error
 * path: exit code, one stderr line naming the flag or file, no file left.
 * The figure's layout is also checked in memory (figure.c, drawn on a
 * recording canvas): nothing off the canvas or over anything else. */
#include "test.h"
#include "util.h"
#include "cmdtest.h"

#include "figure.h"
#include "qkv.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef QKV_HAVE_PNG
#include <png.h>
#define HAVE_PNG 1
#else
#define HAVE_PNG 0 /* the PNG runs are skipped; test_labels_png checks the refusal */
#endif

/* ------------------------------------------------------------ fixtures */

/* n rows of softmax(scores / temperature), temperatures spread so that
 * the weights cover (0, 1) unevenly, the way attention does. */
static float *softmax_rows(test_rng *rng, int64_t rows, int64_t cols)
{
    float *w = test_malloc((size_t)(rows * cols) * sizeof *w);
    for (int64_t r = 0; r < rows; r++) {
        double t = 0.2 + 2.0 * (double)(r % 7) / 6.0, m = -INFINITY, sum = 0;
        double *s = test_malloc((size_t)cols * sizeof *s);
        for (int64_t c = 0; c < cols; c++) {
            s[c] = (test_rand(rng) * 4 - 2) / t;
            if (s[c] > m) m = s[c];
        }
        for (int64_t c = 0; c < cols; c++) sum += s[c] = exp(s[c] - m);
        for (int64_t c = 0; c < cols; c++) w[r * cols + c] = (float)(s[c] / sum);
        free(s);
    }
    return w;
}

/* ------------------------------------------------------------ SVG */

/* Well-formed XML, checked by a small parser: one root element, tags that
 * nest and close, quoted attributes, text and attribute values without a
 * raw '<' or a bare '&', comments and the declaration skipped; and the
 * bytes are valid UTF-8. Prints the reason when not. */
static int entity_ok(const char *p)
{
    static const char *const named[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    for (size_t i = 0; i < 5; i++)
        if (strncmp(p, named[i], strlen(named[i])) == 0) return 1;
    if (p[1] != '#') return 0;
    p += 2;
    int hex = *p == 'x';
    p += hex;
    int digits = 0;
    while (hex ? (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F')
               : (*p >= '0' && *p <= '9'))
        p++, digits++;
    return digits > 0 && *p == ';';
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == ':' || c == '.';
}

static int utf8_valid(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s;
        int n = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : (c & 0xF0) == 0xE0 ? 2
              : c >= 0xF0 && c <= 0xF4                ? 3 : -1;
        if (n < 0) return 0;
        for (int i = 1; i <= n; i++)
            if ((s[i] & 0xC0) != 0x80) return 0;
        s += n + 1;
    }
    return 1;
}

static int xml_wellformed(const char *doc)
{
    const char *p = doc, *why = NULL;
    char stack[64][32];
    int depth = 0, roots = 0;
    if (!utf8_valid((const unsigned char *)doc)) why = "not UTF-8";
    if (!why && strncmp(p, "<?xml", 5) == 0) {
        const char *e = strstr(p, "?>");
        if (!e) why = "unterminated declaration";
        else p = e + 2;
    }
    while (!why && *p) {
        if (*p == '&') {
            if (!entity_ok(p)) why = "bare '&' in text";
            p++;
            continue;
        }
        if (*p != '<') {
            if (depth == 0 && !(*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
                why = "text outside the root";
            p++;
            continue;
        }
        if (strncmp(p, "<!--", 4) == 0) {
            const char *e = strstr(p + 4, "-->");
            if (!e) why = "unterminated comment";
            else p = e + 3;
            continue;
        }
        int closing = p[1] == '/';
        p += 1 + closing;
        const char *name = p;
        while (is_name_char(*p)) p++;
        size_t nlen = (size_t)(p - name);
        if (nlen == 0 || nlen >= sizeof stack[0]) {
            why = "bad tag name";
            break;
        }
        if (closing) {
            while (*p == ' ' || *p == '\n') p++;
            if (*p != '>') why = "junk in closing tag";
            else if (depth == 0 || strlen(stack[depth - 1]) != nlen ||
                     strncmp(stack[depth - 1], name, nlen) != 0)
                why = "closing tag does not match";
            else
                depth--, p++;
            continue;
        }
        for (;;) { /* attributes */
            while (*p == ' ' || *p == '\n' || *p == '\t') p++;
            if (*p == '>' || (p[0] == '/' && p[1] == '>')) break;
            const char *an = p;
            while (is_name_char(*p)) p++;
            if (p == an || *p != '=' || (p[1] != '"' && p[1] != '\'')) {
                why = "bad attribute";
                break;
            }
            char q = p[1];
            p += 2;
            while (*p && *p != q) {
                if (*p == '<' || (*p == '&' && !entity_ok(p))) {
                    why = "raw '<' or bare '&' in an attribute";
                    break;
                }
                p++;
            }
            if (why) break;
            if (!*p) {
                why = "unterminated attribute";
                break;
            }
            p++;
        }
        if (why) break;
        if (depth == 0) roots++;
        if (*p == '/') {
            p += 2;
        } else {
            if (depth == 64) {
                why = "too deep";
                break;
            }
            memcpy(stack[depth], name, nlen);
            stack[depth++][nlen] = '\0';
            p++;
        }
    }
    if (!why && depth) why = "unclosed element";
    if (!why && roots != 1) why = "not exactly one root element";
    if (why) fprintf(stderr, "    not well-formed XML: %s near byte %ld\n", why, (long)(p - doc));
    return why == NULL;
}

/* The value of attribute `name` inside the tag starting at tag (before its
 * '>'), as a number; -1 when absent. */
static const char *attr_in(const char *tag, const char *name)
{
    const char *end = strchr(tag, '>');
    size_t nl = strlen(name);
    for (const char *p = tag; p && p < end; p = strchr(p + 1, ' ')) {
        if (strncmp(p + 1, name, nl) == 0 && p[1 + nl] == '=' && p[2 + nl] == '"')
            return p + 3 + nl;
    }
    return NULL;
}
static long attr_num(const char *tag, const char *name)
{
    const char *v = attr_in(tag, name);
    return v ? strtol(v, NULL, 10) : -1;
}

typedef struct svg_cell {
    int group;
    long x, y, w, h;
    unsigned char r, g, b;
} svg_cell;

/* The cells of every <g class="cells"> group, in document order (the
 * heatmap writes them row-major, one group per head). Returns the count;
 * *groups gets the number of groups. malloc'd into *out. */
static int64_t svg_cells(const char *svg, svg_cell **out, int *groups)
{
    int64_t n = 0, cap = 1024;
    svg_cell *c = test_malloc((size_t)cap * sizeof *c);
    *groups = 0;
    for (const char *g = strstr(svg, "<g class=\"cells\">"); g;
         g = strstr(g + 1, "<g class=\"cells\">")) {
        const char *end = strstr(g, "</g>");
        for (const char *r = strstr(g, "<rect "); r && r < end; r = strstr(r + 1, "<rect ")) {
            if (n == cap) {
                cap *= 2;
                svg_cell *nc = realloc(c, (size_t)cap * sizeof *c);
                if (!nc) exit(2);
                c = nc;
            }
            svg_cell *e = &c[n++];
            e->group = *groups;
            e->x = attr_num(r, "x"), e->y = attr_num(r, "y");
            e->w = attr_num(r, "width"), e->h = attr_num(r, "height");
            const char *f = attr_in(r, "fill");
            unsigned rr = 0, gg = 0, bb = 0;
            if (!f || sscanf(f, "#%2x%2x%2x", &rr, &gg, &bb) != 3) e->w = -1; /* flagged */
            e->r = (unsigned char)rr, e->g = (unsigned char)gg, e->b = (unsigned char)bb;
        }
        (*groups)++;
    }
    *out = c;
    return n;
}

static double luminance(unsigned char r, unsigned char g, unsigned char b)
{
    double ch[3] = {r / 255.0, g / 255.0, b / 255.0};
    for (int i = 0; i < 3; i++)
        ch[i] = ch[i] <= 0.04045 ? ch[i] / 12.92 : pow((ch[i] + 0.055) / 1.055, 2.4);
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
}

static const double *g_sort_w;
static int by_weight(const void *a, const void *b)
{
    double x = g_sort_w[*(const int64_t *)a], y = g_sort_w[*(const int64_t *)b];
    return x < y ? -1 : x > y;
}

/* Colours in the order of the weights: a larger weight never gets a
 * darker colour, and a weight larger by more than one colour level
 * (1/255 of vmax, with rounding) gets a strictly lighter one. Returns
 * the number of pairs out of order (0 is right). */
static int64_t order_violations(const double *w, const double *lum, int64_t n, double vmax)
{
    int64_t *idx = test_malloc((size_t)n * sizeof *idx), bad = 0;
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    g_sort_w = w;
    qsort(idx, (size_t)n, sizeof *idx, by_weight);
    double gap = 1.5 / 255 * vmax;
    int64_t j = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i + 1 < n && lum[idx[i + 1]] < lum[idx[i]]) bad++;
        if (w[idx[i]] > vmax) break; /* saturated from here on */
        while (j < n && w[idx[j]] <= w[idx[i]] + gap) j++;
        if (j < n && w[idx[j]] <= vmax && !(lum[idx[j]] > lum[idx[i]])) bad++;
    }
    if (bad)
        fprintf(stderr, "    %lld cell pairs whose colours are out of the weights' order\n",
                (long long)bad);
    free(idx);
    return bad;
}

/* The cells of group `group` against n = rows x cols weights: count,
 * row-major geometry, colours in the weights' order. */
static void expect_cells_follow(const svg_cell *c, int64_t ncells, int group, const float *w,
                                int64_t rows, int64_t cols, double vmax)
{
    int64_t n = rows * cols, first = -1, have = 0;
    for (int64_t i = 0; i < ncells; i++)
        if (c[i].group == group) {
            if (first < 0) first = i;
            have++;
        }
    EXPECT(have == n);
    if (have != n || first < 0) return;
    const svg_cell *g = c + first;
    double *lum = test_malloc((size_t)n * sizeof *lum), *wd = test_malloc((size_t)n * sizeof *wd);
    int geometry = 1;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = k / cols, j = k % cols;
        geometry &= g[k].w > 0 && g[k].w == g[0].w && g[k].h == g[0].w &&
                    g[k].x == g[0].x + j * g[0].w && g[k].y == g[0].y + i * g[0].w;
        lum[k] = luminance(g[k].r, g[k].g, g[k].b);
        wd[k] = w[k];
    }
    EXPECT(geometry);
    EXPECT(order_violations(wd, lum, n, vmax) == 0);
    free(lum);
    free(wd);
}

static void view_box(const char *svg, long *w, long *h)
{
    *w = *h = -1;
    const char *v = strstr(svg, "viewBox=\"0 0 ");
    if (v) sscanf(v + 13, "%ld %ld", w, h);
}

static int count_str(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* The same inside the group that starts at g (up to its "</g>"). */
static int count_in_group(const char *g, const char *needle)
{
    const char *end = g ? strstr(g, "</g>") : NULL;
    int n = 0;
    for (const char *p = g ? strstr(g, needle) : NULL; p && p < end; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Reads an SVG output and checks what every picture has. */
static char *read_svg(const char *path)
{
    char *svg = slurp(path, NULL);
    EXPECT(svg != NULL);
    if (!svg) return NULL;
    EXPECT(xml_wellformed(svg));
    EXPECT(strstr(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"") != NULL);
    long w, h;
    view_box(svg, &w, &h);
    EXPECT(w > 0 && h > 0);
    EXPECT(strstr(svg, "<title>") != NULL);
    EXPECT(strstr(svg, ">keys</text>") != NULL);
    EXPECT(strstr(svg, ">queries</text>") != NULL);
    EXPECT(strstr(svg, "id=\"legend-bar\"") != NULL);
    return svg;
}

/* ------------------------------------------------------------ PNG */

#ifdef QKV_HAVE_PNG
typedef struct image {
    long w, h;
    unsigned char *px; /* RGB */
} image;

/* Reads a PNG that must be 8-bit RGB without alpha. */
static int read_png(const char *path, image *im)
{
    png_image p;
    memset(&p, 0, sizeof p);
    p.version = PNG_IMAGE_VERSION;
    memset(im, 0, sizeof *im);
    if (!png_image_begin_read_from_file(&p, path)) {
        fprintf(stderr, "    %s: %s\n", path, p.message);
        return 0;
    }
    int rgb8 = p.format == PNG_FORMAT_RGB;
    if (!rgb8) fprintf(stderr, "    %s: PNG format %#x, expected 8-bit RGB\n", path, p.format);
    p.format = PNG_FORMAT_RGB;
    im->w = (long)p.width, im->h = (long)p.height;
    im->px = test_malloc(PNG_IMAGE_SIZE(p));
    if (!png_image_finish_read(&p, NULL, im->px, 0, NULL)) {
        fprintf(stderr, "    %s: %s\n", path, p.message);
        free(im->px);
        im->px = NULL;
        return 0;
    }
    return rgb8;
}

static const unsigned char *pixel(const image *im, long x, long y)
{
    static const unsigned char none[3] = {1, 2, 3};
    if (x < 0 || y < 0 || x >= im->w || y >= im->h) return none;
    return im->px + ((size_t)y * (size_t)im->w + (size_t)x) * 3;
}
#endif

/* The PNG draws the SVG's layout at 2 pixels per unit: same size, and
 * each cell's pixels (sampled off-centre, away from any value written in
 * it) have the SVG cell's colour; the legend bar runs from the brightest
 * colour at the top to the darkest; text is drawn left of the cells. */
static void expect_png_matches_svg(const char *png_path, const char *svg)
{
#ifdef QKV_HAVE_PNG
    image im;
    EXPECT(read_png(png_path, &im));
    if (!im.px) return;
    long vw, vh;
    view_box(svg, &vw, &vh);
    EXPECT(im.w == 2 * vw && im.h == 2 * vh);
    svg_cell *c;
    int groups;
    int64_t n = svg_cells(svg, &c, &groups), wrong = 0;
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p = pixel(&im, 2 * c[i].x + 1, 2 * c[i].y + 1);
        const unsigned char *q = pixel(&im, 2 * (c[i].x + c[i].w) - 2, 2 * (c[i].y + c[i].h) - 2);
        if (p[0] != c[i].r || p[1] != c[i].g || p[2] != c[i].b || q[0] != c[i].r ||
            q[1] != c[i].g || q[2] != c[i].b)
            wrong++;
    }
    if (wrong)
        fprintf(stderr, "    %lld PNG cells differ from the SVG's colours\n", (long long)wrong);
    EXPECT(n > 0 && wrong == 0);

    const char *bar = strstr(svg, "<rect id=\"legend-bar\"");
    EXPECT(bar != NULL);
    if (bar) {
        long x = 2 * attr_num(bar, "x") + attr_num(bar, "width"); /* the middle */
        long y0 = 2 * attr_num(bar, "y"), y1 = y0 + 2 * attr_num(bar, "height") - 1;
        const unsigned char *top = pixel(&im, x, y0), *bottom = pixel(&im, x, y1);
        EXPECT(luminance(top[0], top[1], top[2]) > 0.75);
        EXPECT(luminance(bottom[0], bottom[1], bottom[2]) < 0.03);
        int rising = 1;
        for (long y = y0 + 1; y <= y1; y++) {
            const unsigned char *a = pixel(&im, x, y - 1), *b = pixel(&im, x, y);
            rising &= luminance(a[0], a[1], a[2]) >= luminance(b[0], b[1], b[2]);
        }
        EXPECT(rising);
    }
    if (n > 0) { /* ink left of the first head's cells: the query labels */
        long ink = 0;
        for (long y = 2 * c[0].y; y < 2 * (c[0].y + c[0].h); y++)
            for (long x = 0; x < 2 * c[0].x; x++) {
                const unsigned char *p = pixel(&im, x, y);
                ink += p[0] < 128 && p[1] < 128 && p[2] < 128;
            }
        EXPECT(ink > 20);
    }
    free(c);
    free(im.px);
#else
    (void)png_path;
    (void)svg;
#endif
}

/* ------------------------------------------------------------ tests */

static void test_help(void)
{
    static const char *const flags[] = {"-o", "--labels-q", "--labels-k", "--head",
                                        "--grid", "--vmax", "--title", "--help"};
    set_ctx("heatmap --help");
    EXPECT(RUN("heatmap", "--help") == 0);
    for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
        int named = strstr(g_stdout, flags[f]) != NULL;
        if (!named) fprintf(stderr, "    help does not mention %s\n", flags[f]);
        EXPECT(named);
    }
    EXPECT(strstr(g_stdout, "mean") != NULL); /* how downsampling works */
    EXPECT(g_stderr[0] == '\0');
    set_ctx("qkv --help lists heatmap");
    EXPECT(RUN("--help") == 0);
    EXPECT(strstr(g_stdout, "heatmap") != NULL);
}

/* The 12x20 picture: labels, escaping, 240 cells in order. */
static float *g_w12;
/* Query labels with every character XML escapes, a comma, a backslash,
 * an empty label and UTF-8; a key label longer than is drawn. */
#define Q12_ARG                                                                               \
    "The,<s>,a&b,\"quoted\",it's,comma\\,inside,back\\\\slash,,\xc3\xa9t\xc3\xa9,fox,jumps," \
    "end"
#define K20_ARG                                                                               \
    "k0,k1,k2,k3,k4,k5,k6,k7,k8,k9,k10,k11,k12,k13,k14,k15,k16,k17,k18,"                 \
    "a label far longer than sixteen characters"

static void make_fixtures(void)
{
    test_rng rng = test_rng_seed(2024);
    g_w12 = softmax_rows(&rng, 12, 20);
    for (int c = 0; c < 20; c++) g_w12[7 * 20 + c] = 0; /* a fully masked query */
    for (int c = 0; c < 20; c++) g_w12[9 * 20 + c] = c == 3; /* one-hot: weight 1 */
    W("w12.npy", QKV_DTYPE_F32, g_w12, 12, 20);
    double *d = test_malloc(240 * sizeof *d);
    for (int i = 0; i < 240; i++) d[i] = g_w12[i];
    W("w12_f64.npy", QKV_DTYPE_F64, d, 12, 20);
    free(d);
}

static void test_labels_svg(void)
{
    set_ctx("12x20 with labels, SVG");
    EXPECT_OK(RUN("heatmap", "@w12.npy", "-o", "%h.svg", "--labels-q", Q12_ARG, "--labels-k",
                  K20_ARG));
    char *svg = read_svg(out_path("h.svg"));
    if (svg) {
        /* Every label, as the text of an element, escaped. */
        static const char *const q_escaped[12] = {
            ">The<", ">&lt;s&gt;<", ">a&amp;b<", ">&quot;quoted&quot;<", ">it&#39;s<",
            ">comma,inside<", ">back\\slash<", NULL, ">\xc3\xa9t\xc3\xa9<", ">fox<",
            ">jumps<", ">end<"};
        for (int i = 0; i < 12; i++) {
            if (!q_escaped[i]) continue;
            int found = strstr(svg, q_escaped[i]) != NULL;
            if (!found) fprintf(stderr, "    query label %s missing\n", q_escaped[i]);
            EXPECT(found);
        }
        for (int j = 0; j < 19; j++) {
            char want[32];
            fmt(want, sizeof want, ">k%d</text>", j);
            int found = strstr(svg, want) != NULL;
            if (!found) fprintf(stderr, "    key label %s missing\n", want);
            EXPECT(found);
        }
        /* The long label is cut to 16 characters, the last an ellipsis. */
        EXPECT(strstr(svg, ">a label far lon\xe2\x80\xa6</text>") != NULL);
        svg_cell *c;
        int groups;
        int64_t n = svg_cells(svg, &c, &groups);
        EXPECT(groups == 1 && n == 240);
        expect_cells_follow(c, n, 0, g_w12, 12, 20, 1.0);
        /* The masked row and the zero weights share the darkest colour;
         * the one-hot weight has the brightest. */
        if (n == 240) {
            EXPECT(c[7 * 20].r == c[7 * 20 + 19].r && c[7 * 20].b == c[7 * 20 + 19].b);
            EXPECT(luminance(c[9 * 20 + 3].r, c[9 * 20 + 3].g, c[9 * 20 + 3].b) > 0.75);
            EXPECT(luminance(c[7 * 20].r, c[7 * 20].g, c[7 * 20].b) < 0.03);
        }
        free(c);
        for (int k = 0; k < 5; k++) { /* the legend's ticks */
            static const char *const ticks[5] = {">0</text>", ">0.25</text>", ">0.5</text>",
                                                 ">0.75</text>", ">1</text>"};
            EXPECT(strstr(svg, ticks[k]) != NULL);
        }
        EXPECT(strstr(svg, "class=\"values\"") == NULL); /* 20 > 16 keys */
        EXPECT(strstr(svg, "shown as") == NULL);
        EXPECT(strstr(svg, "left out") == NULL);
        EXPECT(strstr(svg, "w12.npy (12, 20)") != NULL); /* the default title */
        free(svg);
    }
    expect_out_files(1);

    set_ctx("12x20 float64 draws the same picture as float32");
    EXPECT_OK(RUN("heatmap", "@w12.npy", "-o", "%a.svg", "--title", "t"));
    EXPECT_OK(RUN("heatmap", "@w12_f64.npy", "-o", "%b.svg", "--title", "t"));
    char *a = slurp(out_path("a.svg"), NULL), *b = slurp(out_path("b.svg"), NULL);
    EXPECT(a && b && strcmp(a, b) == 0);
    free(a);
    free(b);
    expect_out_files(2);

    set_ctx("a title that needs escaping");
    EXPECT_OK(RUN("heatmap", "@w12.npy", "-o", "%t.svg", "--title", "<b> & \"c\" \x01 \xff"));
    char *t = slurp(out_path("t.svg"), NULL);
    EXPECT(t && xml_wellformed(t));
    EXPECT(t && strstr(t, "&lt;b&gt; &amp; &quot;c&quot; \xef\xbf\xbd \xef\xbf\xbd") != NULL);
    free(t);
    expect_out_files(1);
}

static void test_labels_png(void)
{
    set_ctx("12x20 with labels, PNG");
#ifdef QKV_HAVE_PNG
    EXPECT_OK(RUN("heatmap", "@w12.npy", "-o", "%h.png", "--labels-q", Q12_ARG, "--labels-k",
                  K20_ARG));
    EXPECT_OK(RUN("heatmap", "@w12.npy", "-o", "%h.svg", "--labels-q", Q12_ARG, "--labels-k",
                  K20_ARG));
    char *svg = slurp(out_path("h.svg"), NULL);
    if (svg) expect_png_matches_svg(out_path("h.png"), svg);
    free(svg);
    expect_out_files(2);
#else
    printf("test_heatmap: built without libpng: PNG output not checked, only refused\n");
    EXPECT(RUN("heatmap", "@w12.npy", "-o", "%h.png") == 1);
    EXPECT(one_line(g_stderr) && strstr(g_stderr, "libpng") && strstr(g_stderr, "-o"));
    expect_out_files(0);
#endif
}

/* Weights k/255, k = 0..255: every colour level, each strictly lighter
 * than the one before; 16x16 cells show their values. */
static void test_every_level(void)
{
    float w[256];
    for (int k = 0; k < 256; k++) w[k] = (float)k / 255;
    W("levels.npy", QKV_DTYPE_F32, w, 16, 16);
    set_ctx("every colour level, strictly lighter");
    EXPECT_OK(RUN("heatmap", "@levels.npy", "-o", "%l.svg"));
    char *svg = read_svg(out_path("l.svg"));
    if (svg) {
        svg_cell *c;
        int groups;
        int64_t n = svg_cells(svg, &c, &groups);
        EXPECT(n == 256);
        int strict = n == 256, distinct = 1;
        for (int k = 1; k < n && k < 256; k++) {
            strict &= luminance(c[k].r, c[k].g, c[k].b) > luminance(c[k - 1].r, c[k - 1].g,
                                                                     c[k - 1].b);
            distinct &= c[k].r != c[k - 1].r || c[k].g != c[k - 1].g || c[k].b != c[k - 1].b;
        }
        EXPECT(strict && distinct);
        /* The values, in the same order, two decimals. */
        const char *v = strstr(svg, "<g class=\"values\">");
        EXPECT(v != NULL);
        int right = 0;
        for (int k = 0; v && k < 256; k++) {
            char want[32];
            fmt(want, sizeof want, ">%.2f</text>", (double)w[k]);
            const char *at = strstr(v, want);
            if (at) right++, v = at + 1;
        }
        EXPECT(right == 256);
        /* Each value contrasts with its cell (WCAG ratio 4.5 or more). */
        v = strstr(svg, "<g class=\"values\">");
        int legible = 0, k = 0;
        for (const char *t = v ? strstr(v, "<text ") : NULL; t && k < n;
             t = strstr(t + 1, "<text "), k++) {
            const char *f = attr_in(t, "fill");
            unsigned r = 0x22, g = 0x22, b = 0x22; /* the default ink */
            if (f) sscanf(f, "#%2x%2x%2x", &r, &g, &b);
            double lt = luminance((unsigned char)r, (unsigned char)g, (unsigned char)b);
            double lc = luminance(c[k].r, c[k].g, c[k].b);
            double ratio = lt > lc ? (lt + 0.05) / (lc + 0.05) : (lc + 0.05) / (lt + 0.05);
            legible += ratio >= 4.5;
        }
        EXPECT(legible == 256);
        free(c);
        free(svg);
    }
    expect_out_files(1);
}

static void test_sizes(void)
{
    test_rng rng = test_rng_seed(8);
    float *w8 = softmax_rows(&rng, 8, 8);
    W("w8.npy", QKV_DTYPE_F32, w8, 8, 8);
    set_ctx("8x8");
    EXPECT_OK(RUN("heatmap", "@w8.npy", "-o", "%8.svg"));
    if (HAVE_PNG) EXPECT_OK(RUN("heatmap", "@w8.npy", "-o", "%8.png"));
    char *svg = read_svg(out_path("8.svg"));
    if (svg) {
        svg_cell *c;
        int groups;
        int64_t n = svg_cells(svg, &c, &groups);
        expect_cells_follow(c, n, 0, w8, 8, 8, 1.0);
        EXPECT(n > 0 && c[0].w >= 28); /* room for the values */
        const char *v = strstr(svg, "<g class=\"values\">");
        EXPECT(count_in_group(v, "<text") == 64);
        for (int j = 0; j < 8; j++) { /* index ticks when no labels are given */
            char want[32];
            fmt(want, sizeof want, ">%d</text>", j);
            EXPECT(strstr(svg, want) != NULL);
        }
        expect_png_matches_svg(out_path("8.png"), svg);
        free(c);
        free(svg);
    }
    expect_out_files(1 + HAVE_PNG);
    free(w8);

    /* 512x512, causal: downsampled to 128x128 means of 4x4 blocks. */
    const int64_t L = 512;
    float *w = test_malloc((size_t)(L * L) * sizeof *w);
    for (int64_t i = 0; i < L; i++) {
        double sum = 0;
        for (int64_t j = 0; j < L; j++)
            sum += w[i * L + j] = j <= i ? (float)(1 + test_rand(&rng)) : 0;
        for (int64_t j = 0; j < L; j++) w[i * L + j] = (float)(w[i * L + j] / sum);
    }
    W("w512.npy", QKV_DTYPE_F32, w, 512, 512);
    set_ctx("512x512");
    EXPECT_OK(RUN("heatmap", "@w512.npy", "-o", "%5.svg"));
    if (HAVE_PNG) EXPECT_OK(RUN("heatmap", "@w512.npy", "-o", "%5.png"));
    svg = read_svg(out_path("5.svg"));
    if (svg) {
        EXPECT(strstr(svg, "512\xc3\x97" "512 shown as 128\xc3\x97" "128: mean of 4\xc3\x97"
                           "4 blocks") != NULL);
        EXPECT(strstr(svg, ">mean weight</text>") != NULL);
        float *means = test_malloc(128 * 128 * sizeof *means);
        for (int64_t bi = 0; bi < 128; bi++)
            for (int64_t bj = 0; bj < 128; bj++) {
                double s = 0;
                for (int64_t i = 0; i < 4; i++)
                    for (int64_t j = 0; j < 4; j++) s += w[(bi * 4 + i) * L + bj * 4 + j];
                means[bi * 128 + bj] = (float)(s / 16);
            }
        svg_cell *c;
        int groups;
        int64_t n = svg_cells(svg, &c, &groups);
        expect_cells_follow(c, n, 0, means, 128, 128, 1.0);
        EXPECT(strstr(svg, ">480</text>") != NULL); /* ticks give token indices */
        expect_png_matches_svg(out_path("5.png"), svg);
        free(c);
        free(means);
        free(svg);
    }
    expect_out_files(1 + HAVE_PNG);

    set_ctx("512x512 with labels: left out, and said so");
    char *labels = test_malloc(512 * 8);
    size_t used = 0;
    for (int i = 0; i < 512; i++) used += (size_t)sprintf(labels + used, "%st%d", i ? "," : "", i);
    EXPECT_OK(RUN("heatmap", "@w512.npy", "-o", "%5.svg", "--labels-q", labels));
    svg = read_svg(out_path("5.svg"));
    EXPECT(svg && strstr(svg, "token labels left out") != NULL);
    EXPECT(svg && strstr(svg, ">t4</text>") == NULL);
    free(svg);
    expect_out_files(1);
    free(labels);
    free(w);

    /* 100 labelled tokens: one head keeps every label. */
    float *w100 = softmax_rows(&rng, 100, 100);
    W("w100.npy", QKV_DTYPE_F32, w100, 100, 100);
    labels = test_malloc(100 * 8);
    used = 0;
    for (int i = 0; i < 100; i++) used += (size_t)sprintf(labels + used, "%sw%d", i ? "," : "", i);
    set_ctx("100x100 with labels: all drawn");
    EXPECT_OK(RUN("heatmap", "@w100.npy", "-o", "%c.svg", "--labels-q", labels, "--labels-k",
                  labels));
    svg = read_svg(out_path("c.svg"));
    if (svg) {
        int all = 1;
        for (int i = 0; i < 100; i++) {
            char want[32];
            fmt(want, sizeof want, ">w%d</text>", i);
            all &= count_str(svg, want) == 2; /* as query and as key */
        }
        EXPECT(all);
        EXPECT(strstr(svg, "left out") == NULL);
        svg_cell *c;
        int groups;
        int64_t n = svg_cells(svg, &c, &groups);
        expect_cells_follow(c, n, 0, w100, 100, 100, 1.0);
        free(c);
        free(svg);
    }
    expect_out_files(1);
    free(labels);
    free(w100);

    /* Only the long axis is downsampled. */
    float *w300 = softmax_rows(&rng, 12, 300);
    W("w12x300.npy", QKV_DTYPE_F32, w300, 12, 300);
    set_ctx("12x300");
    EXPECT_OK(RUN("heatmap", "@w12x300.npy", "-o", "%d.svg"));
    svg = read_svg(out_path("d.svg"));
    EXPECT(svg && strstr(svg, "12\xc3\x97" "300 shown as 12\xc3\x97" "100: mean of 1\xc3\x97"
                              "3 blocks") != NULL);
    free(svg);
    expect_out_files(1);
    free(w300);
}

/* Weights of a head slice, from the file's own floats. */
static void test_heads(void)
{
    test_rng rng = test_rng_seed(33);
    float *w3 = softmax_rows(&rng, 3 * 6, 7);
    W("r3.npy", QKV_DTYPE_F32, w3, 3, 6, 7);
    float *w4 = softmax_rows(&rng, 2 * 3 * 5, 6);
    W("r4.npy", QKV_DTYPE_F32, w4, 2, 3, 5, 6);
    float *w20 = softmax_rows(&rng, 20 * 4, 4);
    W("r20.npy", QKV_DTYPE_F32, w20, 20, 4, 4);
    svg_cell *c;
    int groups;
    int64_t n;
    char *svg;

    set_ctx("rank 3, default: a grid of every head");
    EXPECT_OK(RUN("heatmap", "@r3.npy", "-o", "%g.svg", "--labels-q", "a,b,c,d,e,f"));
    svg = read_svg(out_path("g.svg"));
    if (svg) {
        n = svg_cells(svg, &c, &groups);
        EXPECT(groups == 3);
        for (int h = 0; h < 3; h++) {
            char name[32];
            fmt(name, sizeof name, ">head %d</text>", h);
            EXPECT(strstr(svg, name) != NULL);
            expect_cells_follow(c, n, h, w3 + h * 42, 6, 7, 1.0);
        }
        EXPECT(count_str(svg, ">c</text>") == 3); /* labels on every head */
        free(c);
        free(svg);
    }
    expect_out_files(1);

    set_ctx("rank 3, --grid");
    EXPECT_OK(RUN("heatmap", "@r3.npy", "-o", "%g.svg", "--grid"));
    svg = read_svg(out_path("g.svg"));
    if (svg) {
        n = svg_cells(svg, &c, &groups);
        EXPECT(groups == 3 && n == 3 * 42);
        free(c);
        free(svg);
    }
    expect_out_files(1);

    set_ctx("rank 3, --head 1");
    EXPECT_OK(RUN("heatmap", "@r3.npy", "-o", "%h.svg", "--head", "1"));
    if (HAVE_PNG) EXPECT_OK(RUN("heatmap", "@r3.npy", "-o", "%h.png", "--head=1"));
    svg = read_svg(out_path("h.svg"));
    if (svg) {
        n = svg_cells(svg, &c, &groups);
        EXPECT(groups == 1);
        expect_cells_follow(c, n, 0, w3 + 42, 6, 7, 1.0);
        EXPECT(strstr(svg, ">head 1</text>") != NULL);
        EXPECT(strstr(svg, ">head 0</text>") == NULL);
        expect_png_matches_svg(out_path("h.png"), svg);
        free(c);
        free(svg);
    }
    expect_out_files(1 + HAVE_PNG);

    set_ctx("rank 4, --head 4 is b1 h1");
    EXPECT_OK(RUN("heatmap", "@r4.npy", "-o", "%h.svg", "--head", "4"));
    svg = read_svg(out_path("h.svg"));
    if (svg) {
        n = svg_cells(svg, &c, &groups);
        EXPECT(groups == 1);
        expect_cells_follow(c, n, 0, w4 + 4 * 30, 5, 6, 1.0);
        EXPECT(strstr(svg, ">b1 h1</text>") != NULL);
        free(c);
        free(svg);
    }
    expect_out_files(1);

    set_ctx("rank 4, default grid, PNG");
    EXPECT_OK(RUN("heatmap", "@r4.npy", "-o", "%g.svg"));
    if (HAVE_PNG) EXPECT_OK(RUN("heatmap", "@r4.npy", "-o", "%g.png"));
    svg = read_svg(out_path("g.svg"));
    if (svg) {
        n = svg_cells(svg, &c, &groups);
        EXPECT(groups == 6);
        for (int h = 0; h < 6; h++) expect_cells_follow(c, n, h, w4 + h * 30, 5, 6, 1.0);
        EXPECT(strstr(svg, ">b0 h0</text>") && strstr(svg, ">b1 h2</text>"));
        expect_png_matches_svg(out_path("g.png"), svg);
        free(c);
        free(svg);
    }
    expect_out_files(1 + HAVE_PNG);

    set_ctx("20 heads: --grid draws them all, --head 19 one");
    EXPECT_OK(RUN("heatmap", "@r20.npy", "-o", "%g.svg", "--grid"));
    svg = read_svg(out_path("g.svg"));
    if (svg) {
        n = svg_cells(svg, &c, &groups);
        EXPECT(groups == 20 && n == 20 * 16);
        expect_cells_follow(c, n, 19, w20 + 19 * 16, 4, 4, 1.0);
        free(c);
        free(svg);
    }
    EXPECT_OK(RUN("heatmap", "@r20.npy", "-o", "%h.svg", "--head", "19"));
    expect_out_files(2);

    set_ctx("rank 2: --head 0 and --grid draw its one head");
    EXPECT_OK(RUN("heatmap", "@w12.npy", "-o", "%a.svg", "--head", "0"));
    EXPECT_OK(RUN("heatmap", "@w12.npy", "-o", "%b.svg", "--grid"));
    char *a = slurp(out_path("a.svg"), NULL), *b = slurp(out_path("b.svg"), NULL);
    EXPECT(a && b && strcmp(a, b) == 0 && count_str(a, "<g class=\"cells\">") == 1);
    free(a);
    free(b);
    expect_out_files(2);
    free(w3);
    free(w4);
    free(w20);
}

/* What `qkv run --weights` writes is what heatmap reads. */
static void test_from_run(void)
{
    test_rng rng = test_rng_seed(99);
    float *q = test_rand_f32(&rng, 2 * 6 * 8, -2, 2), *k = test_rand_f32(&rng, 2 * 6 * 8, -2, 2);
    W("q.npy", QKV_DTYPE_F32, q, 2, 6, 8);
    W("k.npy", QKV_DTYPE_F32, k, 2, 6, 8);
    W("v.npy", QKV_DTYPE_F32, q, 2, 6, 8);
    free(q);
    free(k);
    set_ctx("qkv run --weights feeds heatmap");
    EXPECT(RUN("run", "-q", "@q.npy", "-k", "@k.npy", "-v", "@v.npy", "-o", "%o.npy",
               "--causal", "--weights", "%p.npy") == 0);
#define SENTENCE "--labels-q", "I,saw,a,cat,sit,down", "--labels-k", "I,saw,a,cat,sit,down"
    EXPECT_OK(RUN("heatmap", "%p.npy", "-o", "%p.svg", SENTENCE));
    if (HAVE_PNG) EXPECT_OK(RUN("heatmap", "%p.npy", "-o", "%p.png", SENTENCE));
    qkv_array p;
    memset(&p, 0, sizeof p);
    EXPECT(qkv_npy_read(out_path("p.npy"), &p) == QKV_OK);
    char *svg = read_svg(out_path("p.svg"));
    if (svg && p.data) {
        svg_cell *c;
        int groups;
        int64_t n = svg_cells(svg, &c, &groups);
        EXPECT(groups == 2);
        for (int h = 0; h < 2; h++) {
            const float *w = (const float *)p.data + h * 36;
            expect_cells_follow(c, n, h, w, 6, 6, 1.0);
            /* Above the diagonal (causal) every cell has the colour of 0. */
            int dark = n == 72;
            for (int i = 0; i < 6 && dark; i++)
                for (int j = i + 1; j < 6; j++) {
                    const svg_cell *e = &c[h * 36 + i * 6 + j];
                    dark &= e->r == c[1].r && e->g == c[1].g && e->b == c[1].b;
                }
            EXPECT(dark);
        }
        EXPECT(strstr(svg, ">cat</text>") != NULL);
        expect_png_matches_svg(out_path("p.png"), svg);
        free(c);
    }
    free(svg);
    qkv_array_free(&p);
    expect_out_files(3 + HAVE_PNG);
}

static void test_vmax_and_tolerance(void)
{
    float w[16] = {0.1f, 0.2f, 0.3f, 0.4f, 0.45f, 0.5f, 0.6f, 0.9f,
                   0, 0.05f, 0.15f, 0.25f, 0.35f, 0.55f, 1, 0.01f};
    W("v.npy", QKV_DTYPE_F32, w, 4, 4);
    set_ctx("--vmax 0.5: colours saturate");
    EXPECT_OK(RUN("heatmap", "@v.npy", "-o", "%v.svg", "--vmax", "0.5"));
    char *svg = read_svg(out_path("v.svg"));
    if (svg) {
        svg_cell *c;
        int groups;
        int64_t n = svg_cells(svg, &c, &groups);
        expect_cells_follow(c, n, 0, w, 4, 4, 0.5);
        if (n == 16) { /* 0.5, 0.6, 0.9, 0.55 and 1 share the top colour */
            int top = 1;
            const int sat[5] = {5, 6, 7, 13, 14};
            for (int s = 0; s < 5; s++)
                top &= c[sat[s]].r == c[14].r && c[sat[s]].g == c[14].g && c[sat[s]].b == c[14].b;
            EXPECT(top);
            EXPECT(c[4].r != c[14].r || c[4].g != c[14].g || c[4].b != c[14].b);
        }
        EXPECT(strstr(svg, "saturate at weight 0.5") != NULL);
        EXPECT(strstr(svg, ">0.125</text>") != NULL); /* legend ticks of 0..0.5 */
        free(c);
        free(svg);
    }
    expect_out_files(1);

    set_ctx("--vmax auto");
    float small[4] = {0.02f, 0.04f, 0.08f, 0.01f};
    W("small.npy", QKV_DTYPE_F32, small, 2, 2);
    EXPECT_OK(RUN("heatmap", "@small.npy", "-o", "%v.svg", "--vmax=auto"));
    svg = read_svg(out_path("v.svg"));
    if (svg) {
        svg_cell *c;
        int groups;
        int64_t n = svg_cells(svg, &c, &groups);
        expect_cells_follow(c, n, 0, small, 2, 2, 0.08);
        EXPECT(n == 4 && luminance(c[2].r, c[2].g, c[2].b) > 0.75); /* the largest: the top */
        EXPECT(strstr(svg, "largest weight drawn, 0.08") != NULL);
        free(c);
        free(svg);
    }
    expect_out_files(1);

    set_ctx("rounding outside [0, 1] within 1e-6 is accepted");
    float edge[4] = {-5e-7f, 1 + 5e-7f, 0.5f, 0.5f};
    W("edge.npy", QKV_DTYPE_F32, edge, 2, 2);
    EXPECT_OK(RUN("heatmap", "@edge.npy", "-o", "%e.svg"));
    expect_out_files(1);

    set_ctx("float16 weights");
    uint16_t half[4] = {0x3C00, 0x0000, 0x3800, 0x3800}; /* 1, 0, 0.5, 0.5 */
    W("half.npy", QKV_DTYPE_F16, half, 2, 2);
    EXPECT_OK(RUN("heatmap", "@half.npy", "-o", "%e.svg"));
    expect_out_files(1);
}

static void test_html(void)
{
    set_ctx("-o page.html: the interactive page");
    EXPECT_OK(RUN("heatmap", "@r3.npy", "-o", "%page.html", "--labels-q", "a,b,c,d,e,f"));
    size_t len = 0;
    char *page = slurp(out_path("page.html"), &len);
    EXPECT(page && len > 100);
    free(page);
    expect_out_files(1);
}

/* ------------------------------------------------------------ layout */

/* The figure's layout checked in memory, without a file: figure_init lays
 * out a picture and a canvas of this test's own records what figure_draw
 * puts where. Each text is taken as the box the 0.6 em monospace font the
 * layout assumes covers: its glyphs' ink, 0.7 em above the baseline and
 * 0.2 em below. The checks are what a reader needs, not numbers the code
 * printed: everything on the canvas, panels apart, no text over another
 * or over the cells (a weight written in a cell stays in it), tick steps
 * of 1, 2 or 5 times a power of ten spaced so texts fit, token labels
 * drawn whenever they are kept, and cells that are block means. */

enum { SHAPE_BACKGROUND, SHAPE_CELL, SHAPE_MARK, SHAPE_BAR, SHAPE_TEXT, SHAPE_VALUE };

typedef struct shape {
    double x0, y0, x1, y1; /* the box it covers, in units */
    int kind;
    char text[TEXT_BYTES]; /* texts only */
} shape;

typedef struct record {
    shape *s;
    int64_t n, cap;
    int64_t w, h; /* what begin said */
    int begun, ended, in_cells, in_values, groups;
} record;

static shape *record_add(record *r, int kind, double x0, double y0, double x1, double y1)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 1024;
        r->s = realloc(r->s, (size_t)r->cap * sizeof *r->s);
        if (!r->s) exit(2);
    }
    shape *s = &r->s[r->n++];
    *s = (shape){x0, y0, x1, y1, kind, ""};
    return s;
}

static void rec_begin(void *self, int64_t w, int64_t h, const char *title)
{
    record *r = self;
    (void)title;
    r->begun++, r->w = w, r->h = h;
}

static void rec_end(void *self) { ((record *)self)->ended++; }

static void rec_rect(void *self, int64_t x, int64_t y, int64_t w, int64_t h, rgb c,
                     const char *tip)
{
    record *r = self;
    (void)c, (void)tip;
    int kind = r->n == 0 ? SHAPE_BACKGROUND : r->in_cells ? SHAPE_CELL : SHAPE_MARK;
    record_add(r, kind, (double)x, (double)y, (double)(x + w), (double)(y + h));
}

static void rec_text(void *self, int64_t x, int64_t y, const char *s, int size, int anchor,
                     int vertical, int bold, rgb c)
{
    record *r = self;
    (void)bold, (void)c;
    double em = size, ink = (double)(text_chars(s) * 6 - 1) * em / 10;
    double from = anchor == ANCHOR_MIDDLE ? -ink / 2 : anchor == ANCHOR_END ? -ink : 0;
    shape *sh;
    if (vertical) /* reads upwards, the glyphs' tops to the left */
        sh = record_add(r, SHAPE_TEXT, x - 0.7 * em, y - from - ink, x + 0.2 * em, y - from);
    else
        sh = record_add(r, SHAPE_TEXT, x + from, y - 0.7 * em, x + from + ink, y + 0.2 * em);
    if (r->in_values) sh->kind = SHAPE_VALUE;
    snprintf(sh->text, sizeof sh->text, "%s", s);
}

static void rec_ramp_bar(void *self, int64_t x, int64_t y, int64_t w, int64_t h,
                         const rgb lut[RAMP_LEVELS])
{
    (void)lut;
    record_add(self, SHAPE_BAR, (double)x, (double)y, (double)(x + w), (double)(y + h));
}

static void rec_group_begin(void *self, const char *name)
{
    record *r = self;
    r->groups++;
    r->in_cells = strcmp(name, "cells") == 0;
    r->in_values = strcmp(name, "values") == 0;
}

static void rec_group_end(void *self)
{
    record *r = self;
    r->in_cells = r->in_values = 0;
}

static const canvas_ops record_ops = {
    rec_begin, rec_end, rec_rect, rec_text, rec_ramp_bar, rec_group_begin, rec_group_end, 0,
};

/* Boxes that share more than an edge. */
static int boxes_overlap(double ax0, double ay0, double ax1, double ay1, double bx0, double by0,
                         double bx1, double by1)
{
    return ax0 < bx1 && bx0 < ax1 && ay0 < by1 && by0 < ay1;
}

static int shapes_overlap(const shape *a, const shape *b)
{
    return boxes_overlap(a->x0, a->y0, a->x1, a->y1, b->x0, b->y0, b->x1, b->y1);
}

static int is_nice(int64_t s)
{
    while (s % 10 == 0) s /= 10;
    return s == 1 || s == 2 || s == 5;
}

/* The cells a side a head may have, as `qkv heatmap --help` says. */
static int64_t side_limit(int64_t heads)
{
    return heads == 1 ? 128 : heads <= 4 ? 64 : heads <= 16 ? 48 : 32;
}

/* Downsampling by f of n tokens: as few blocks as the limit allows. */
static void expect_blocks(int64_t n, int64_t f, int64_t cells, int64_t limit)
{
    EXPECT(f >= 1 && cells == (n + f - 1) / f && cells <= limit);
    EXPECT(f == 1 || (n + f - 2) / (f - 1) > limit); /* f - 1 would not fit */
}

typedef struct layout_case {
    const char *name;
    int64_t heads, lq, lk;
    int labels, names; /* labels: 0 none, 1 short, 2 long (cut to 16 characters) */
    const char *title;
} layout_case;

static const char long_title[] =
    "a title long enough to be cut: it goes on past the hundred characters that a picture's "
    "title keeps, and further";

static const layout_case layout_cases[] = {
    {"one token", 1, 1, 1, 0, 0, "t"},
    {"4x4 labelled, values in the cells", 1, 4, 4, 1, 0, "t"},
    {"12x20 long labels", 1, 12, 20, 2, 0, "t"},
    {"16x16, the largest with values", 1, 16, 16, 0, 0, "t"},
    {"17x17", 1, 17, 17, 1, 0, "t"},
    {"100x100 labelled", 1, 100, 100, 1, 0, "t"},
    {"128x128 labelled, the largest kept", 1, 128, 128, 2, 0, "t"},
    {"129x129 labelled, downsampled", 1, 129, 129, 1, 0, "t"},
    {"512x512", 1, 512, 512, 0, 0, long_title},
    {"12x300", 1, 12, 300, 0, 0, ""},
    {"300x12 labelled", 1, 300, 12, 1, 0, "t"},
    {"1x1000", 1, 1, 1000, 0, 0, "t"},
    {"3 heads 6x6 labelled", 3, 6, 6, 1, 1, "t"},
    {"4 heads 64x64", 4, 64, 64, 0, 1, "t"},
    {"6 heads 7x9", 6, 7, 9, 2, 1, long_title},
    {"16 heads 48x49", 16, 48, 49, 0, 1, "t"},
    {"20 heads 5x5", 20, 5, 5, 1, 1, "t"},
    {"64 heads 33x40", 64, 33, 40, 0, 1, "t"},
    {"2 heads 1x300", 2, 1, 300, 0, 0, "t"},
    {"9 heads 3x3 labelled", 9, 3, 3, 2, 1, "t"},
    {"64 heads 2x2", 64, 2, 2, 0, 1, "t"},
    {"1x40, one row", 1, 1, 40, 0, 0, "t"},
    {"2x2", 1, 2, 2, 0, 0, "t"},
    {"4 heads 1x20 labelled", 4, 1, 20, 1, 1, "t"},
    {"3x500", 1, 3, 500, 0, 0, "t"},
};

static void expect_layout(const layout_case *lc)
{
    test_rng rng = test_rng_seed(77);
    const int64_t per = lc->lq * lc->lk;
    float *w = softmax_rows(&rng, lc->heads * lc->lq, lc->lk);
    int64_t nl = lc->lq > lc->lk ? lc->lq : lc->lk;
    char (*lab)[40] = test_malloc((size_t)nl * sizeof *lab);
    const char **labp = test_malloc((size_t)nl * sizeof *labp);
    for (int64_t i = 0; i < nl; i++) {
        snprintf(lab[i], sizeof lab[i], lc->labels == 2 ? "token \xc3\xa9 number %lld of many"
                                                        : "t%lld", (long long)i);
        labp[i] = lab[i];
    }
    char (*names)[48] = test_malloc((size_t)lc->heads * sizeof *names);
    const char **namep = test_malloc((size_t)lc->heads * sizeof *namep);
    for (int64_t p = 0; p < lc->heads; p++) {
        snprintf(names[p], sizeof names[p], "b%lld h%lld", (long long)(p / 8),
                 (long long)(p % 8));
        namep[p] = names[p];
    }
    picture pic = {lc->title, lc->heads, lc->lq, lc->lk, w, lc->names ? namep : NULL,
                   lc->labels ? labp : NULL, lc->labels ? labp : NULL};
    figure *f = test_malloc(sizeof *f);
    EXPECT(figure_init(f, &pic, -1, 0));
    record r = {0};
    canvas cv = {&record_ops, &r};
    figure_draw(f, &cv);

    /* The canvas: opened once at the figure's size, closed once, and
     * everything on it but the background clear of the margin. */
    EXPECT(r.begun == 1 && r.ended == 1 && r.w == f->width && r.h == f->height);
    EXPECT(r.n > 0 && r.s[0].kind == SHAPE_BACKGROUND && r.s[0].x0 == 0 && r.s[0].y0 == 0 &&
           r.s[0].x1 == (double)f->width && r.s[0].y1 == (double)f->height);
    int64_t outside = 0;
    const double m = MARGIN, right = (double)(f->width - MARGIN);
    const double bottom = (double)(f->height - MARGIN);
    for (int64_t i = 1; i < r.n; i++) {
        const shape *a = &r.s[i];
        if (a->x0 < m || a->y0 < m || a->x1 > right || a->y1 > bottom) {
            if (outside++ < 3)
                fprintf(stderr, "    '%s' (%g, %g)-(%g, %g) outside %lldx%lld\n", a->text, a->x0,
                        a->y0, a->x1, a->y1, (long long)f->width, (long long)f->height);
        }
    }
    EXPECT(outside == 0);

    /* Downsampling: as few blocks as fit, each cell a block's mean. */
    const int64_t limit = side_limit(lc->heads);
    expect_blocks(lc->lq, f->fq, f->nq, limit);
    expect_blocks(lc->lk, f->fk, f->nk, limit);
    EXPECT(f->npanels == lc->heads);
    for (int64_t p = 0; p < lc->heads; p++) {
        double total = 0, shown = 0;
        for (int64_t e = 0; e < per; e++) total += w[p * per + e];
        for (int64_t i = 0; i < f->nq; i++)
            for (int64_t j = 0; j < f->nk; j++) {
                int64_t bq = (i + 1) * f->fq < lc->lq ? f->fq : lc->lq - i * f->fq;
                int64_t bk = (j + 1) * f->fk < lc->lk ? f->fk : lc->lk - j * f->fk;
                shown += f->shown[(p * f->nq + i) * f->nk + j] * (double)(bq * bk);
            }
        EXPECT(fabs(shown - total) <= 1e-4 * (1 + total));
    }

    /* Panels: in a grid as near square as whole rows allow, apart from
     * each other and from the legend bar, the cells tiling each matrix. */
    EXPECT(f->cols * f->cols >= f->npanels && (f->cols - 1) * (f->cols - 1) < f->npanels);
    EXPECT(f->rows * f->cols >= f->npanels && (f->rows - 1) * f->cols < f->npanels);
    EXPECT(f->mx + f->nk * f->cell == f->pw && f->my + f->nq * f->cell == f->ph);
    int64_t overlapping = 0, misplaced = 0, ncells = 0, nbars = 0;
    const shape *bar = NULL;
    for (int64_t i = 0; i < r.n; i++)
        if (r.s[i].kind == SHAPE_BAR) bar = &r.s[i], nbars++;
    EXPECT(nbars == 1);
    for (int64_t p = 0; p < f->npanels; p++) {
        int64_t ox, oy;
        figure_panel_at(f, p, &ox, &oy);
        for (int64_t q = p + 1; q < f->npanels; q++) {
            int64_t qx, qy;
            figure_panel_at(f, q, &qx, &qy);
            overlapping += boxes_overlap((double)ox, (double)oy, (double)(ox + f->pw),
                                         (double)(oy + f->ph), (double)qx, (double)qy,
                                         (double)(qx + f->pw), (double)(qy + f->ph));
        }
        if (bar)
            overlapping += boxes_overlap((double)ox, (double)oy, (double)(ox + f->pw),
                                         (double)(oy + f->ph), bar->x0, bar->y0, bar->x1,
                                         bar->y1);
    }
    EXPECT(overlapping == 0);
    for (int64_t i = 0; i < r.n; i++) {
        if (r.s[i].kind != SHAPE_CELL) continue;
        int64_t k = ncells++, p = k / (f->nq * f->nk), ci = k / f->nk % f->nq, cj = k % f->nk;
        int64_t ox, oy;
        figure_panel_at(f, p, &ox, &oy);
        double x = (double)(ox + f->mx + cj * f->cell), y = (double)(oy + f->my + ci * f->cell);
        misplaced += r.s[i].x0 != x || r.s[i].y0 != y || r.s[i].x1 != x + (double)f->cell ||
                     r.s[i].y1 != y + (double)f->cell;
    }
    EXPECT(ncells == f->npanels * f->nq * f->nk);
    EXPECT(misplaced == 0);

    /* Texts: none over another, over a matrix or over the legend bar; a
     * weight in a cell lies inside that cell. */
    int64_t crowded = 0, on_cells = 0, values = 0, stray_values = 0;
    for (int64_t i = 0; i < r.n; i++) {
        const shape *a = &r.s[i];
        if (a->kind != SHAPE_TEXT && a->kind != SHAPE_VALUE) continue;
        for (int64_t k = i + 1; k < r.n; k++)
            if ((r.s[k].kind == SHAPE_TEXT || r.s[k].kind == SHAPE_VALUE) &&
                shapes_overlap(a, &r.s[k])) {
                if (crowded++ < 3)
                    fprintf(stderr, "    '%s' overlaps '%s'\n", a->text, r.s[k].text);
            }
        if (bar && shapes_overlap(a, bar)) crowded++;
        if (a->kind == SHAPE_VALUE) {
            values++;
            double cx = (a->x0 + a->x1) / 2, cy = (a->y0 + a->y1) / 2;
            int inside = 0;
            for (int64_t p = 0; p < f->npanels && !inside; p++) {
                int64_t ox, oy;
                figure_panel_at(f, p, &ox, &oy);
                double mx0 = (double)(ox + f->mx), my0 = (double)(oy + f->my), c = (double)f->cell;
                double j = floor((cx - mx0) / c), i2 = floor((cy - my0) / c);
                inside = j >= 0 && j < (double)f->nk && i2 >= 0 && i2 < (double)f->nq &&
                         a->x0 >= mx0 + j * c && a->x1 <= mx0 + (j + 1) * c &&
                         a->y0 >= my0 + i2 * c && a->y1 <= my0 + (i2 + 1) * c;
            }
            stray_values += !inside;
            continue;
        }
        for (int64_t p = 0; p < f->npanels; p++) {
            int64_t ox, oy;
            figure_panel_at(f, p, &ox, &oy);
            if (boxes_overlap(a->x0, a->y0, a->x1, a->y1, (double)(ox + f->mx),
                              (double)(oy + f->my), (double)(ox + f->pw), (double)(oy + f->ph))) {
                if (on_cells++ < 3) fprintf(stderr, "    '%s' lies over the cells\n", a->text);
            }
        }
    }
    EXPECT(crowded == 0);
    EXPECT(on_cells == 0);
    EXPECT(stray_values == 0);
    /* A single head of at most 16x16 writes every weight. */
    if (lc->heads == 1 && lc->lq <= 16 && lc->lk <= 16)
        EXPECT(f->values && values == lc->lq * lc->lk);
    EXPECT(values == (f->values ? f->npanels * f->nq * f->nk : 0));

    /* Ticks: a nice step, the smallest that keeps them TICK_SPACING apart
     * when a cell is too small for a text; one per token otherwise. */
    EXPECT(is_nice(f->step));
    if (f->cell >= LABEL_PITCH) {
        EXPECT(f->step == 1);
    } else {
        EXPECT(f->step * f->cell >= TICK_SPACING);
        int64_t smaller = f->step;
        do smaller--;
        while (smaller > 1 && !is_nice(smaller));
        EXPECT(f->step == 1 || smaller * f->cell < TICK_SPACING);
    }

    /* Labels: kept whenever the cells are whole tokens and tall enough,
     * always for one head up to 128 tokens a side; each drawn where kept,
     * and a note says when they were left out. */
    int kept = f->token_labels && lc->labels;
    if (lc->labels && lc->heads == 1 && lc->lq <= 128 && lc->lk <= 128) EXPECT(kept);
    if (kept) EXPECT(f->cell >= LABEL_PITCH && f->fq == 1 && f->fk == 1);
    int64_t missing = 0;
    for (int64_t i = 0; kept && i < nl; i++) {
        char want[TEXT_BYTES];
        display_text(labp[i], LABEL_CHARS, want);
        int found = 0;
        for (int64_t k = 0; k < r.n && !found; k++)
            found = r.s[k].kind == SHAPE_TEXT && strcmp(r.s[k].text, want) == 0;
        missing += !found;
    }
    EXPECT(missing == 0);
    int noted = 0;
    for (int k = 0; k < f->nnotes; k++) noted |= strstr(f->notes[k], "labels left out") != NULL;
    EXPECT(noted == (lc->labels && !kept));

    figure_free(f);
    free(f);
    free(r.s);
    free(w);
    free(lab);
    free(labp);
    free(names);
    free(namep);
}

static void test_layout(void)
{
    static char ctx[160];
    for (size_t c = 0; c < sizeof layout_cases / sizeof layout_cases[0]; c++) {
        snprintf(ctx, sizeof ctx, "layout of %s", layout_cases[c].name);
        set_ctx(ctx);
        expect_layout(&layout_cases[c]);
    }
}

/* ------------------------------------------------------------ errors */

static void make_error_fixtures(void)
{
    float w[80];
    for (int i = 0; i < 80; i++) w[i] = 0.25f;
    W("ok.npy", QKV_DTYPE_F32, w, 4, 4);
    W("r1.npy", QKV_DTYPE_F32, w, 4);
    W("r5.npy", QKV_DTYPE_F32, w, 1, 1, 1, 4, 4);
    write_array(in_path("r0.npy"), QKV_DTYPE_F32, 0, NULL, w);
    W("zero.npy", QKV_DTYPE_F32, w, 0, 4);
    W("zero_h.npy", QKV_DTYPE_F32, w, 2, 0, 4, 4);
    int32_t i32[16] = {0};
    W("i32.npy", QKV_DTYPE_I32, i32, 4, 4);
    unsigned char b8[16] = {0};
    W("bool.npy", QKV_DTYPE_BOOL, b8, 4, 4);
    w[6] = NAN;
    W("nan.npy", QKV_DTYPE_F32, w, 4, 4); /* element (1, 2) */
    w[6] = INFINITY;
    W("inf.npy", QKV_DTYPE_F32, w, 4, 4);
    w[6] = -0.01f;
    W("neg.npy", QKV_DTYPE_F32, w, 2, 2, 4); /* element (0, 1, 2) */
    w[6] = 1.01f;
    W("big.npy", QKV_DTYPE_F32, w, 1, 2, 2, 4); /* element (0, 0, 1, 2) */
    w[6] = 0.25f;
    W("h3.npy", QKV_DTYPE_F32, w, 3, 4, 4);
    W("h2x3.npy", QKV_DTYPE_F32, w, 2, 3, 2, 2);
    float *many = test_malloc(65 * 4 * sizeof *many);
    for (int i = 0; i < 65 * 4; i++) many[i] = 0.5f;
    W("h17.npy", QKV_DTYPE_F32, many, 17, 2, 2);
    W("h65.npy", QKV_DTYPE_F32, many, 65, 2, 2);
    free(many);
    write_bytes(in_path("badmagic.npy"), "PK\003\004 this is not a .npy file\n", 30);
    write_bytes(in_path("empty.npy"), "", 0);
    /* A good header whose data is cut short. */
    size_t len = 0;
    char *whole = slurp(in_path("ok.npy"), &len);
    if (!whole) exit(2);
    write_bytes(in_path("trunc.npy"), whole, len - 10);
    free(whole);
    if (mkdir(in_path("adir.npy"), 0700) != 0) {
        fprintf(stderr, "test: mkdir failed: %s\n", strerror(errno));
        exit(2);
    }
}

typedef struct err_case {
    const char *name;
    int rc;                /* 2 usage, 1 error */
    const char *needle[2]; /* stderr names these */
    const char *args[16];  /* after "qkv"; @ input dir, % output dir */
} err_case;

static const err_case err_cases[] = {
    /* ---- usage errors: exit 2 */
    {"missing -o", 2, {"-o"}, {"heatmap", "@ok.npy"}},
    {"missing input", 2, {"P.npy"}, {"heatmap", "-o", "%h.svg"}},
    {"no arguments", 2, {"required"}, {"heatmap"}},
    {"two inputs", 2, {"ok.npy", "h3.npy"}, {"heatmap", "@ok.npy", "@h3.npy", "-o", "%h.svg"}},
    {"unknown flag", 2, {"--bogus"}, {"heatmap", "@ok.npy", "-o", "%h.svg", "--bogus"}},
    {"-o given twice", 2, {"-o"}, {"heatmap", "@ok.npy", "-o", "%h.svg", "-o", "%i.svg"}},
    {"-o without value", 2, {"-o"}, {"heatmap", "@ok.npy", "-o"}},
    {"-o empty", 2, {"-o"}, {"heatmap", "@ok.npy", "-o", ""}},
    {"unknown extension", 2, {"-o", "h.jpg"}, {"heatmap", "@ok.npy", "-o", "%h.jpg"}},
    {"no extension", 2, {"-o", "picture"}, {"heatmap", "@ok.npy", "-o", "%picture"}},
    {"extension of a directory only", 2, {"-o"}, {"heatmap", "@ok.npy", "-o", "%d.svg/pic"}},
    {"--head with --grid", 2, {"--head", "--grid"},
     {"heatmap", "@h3.npy", "-o", "%h.svg", "--head", "1", "--grid"}},
    {"--head -1", 2, {"--head", "-1"}, {"heatmap", "@h3.npy", "-o", "%h.svg", "--head", "-1"}},
    {"--head abc", 2, {"--head", "abc"}, {"heatmap", "@h3.npy", "-o", "%h.svg", "--head=abc"}},
    {"--head given twice", 2, {"--head"},
     {"heatmap", "@h3.npy", "-o", "%h.svg", "--head", "1", "--head", "1"}},
    {"--grid given twice", 2, {"--grid"},
     {"heatmap", "@h3.npy", "-o", "%h.svg", "--grid", "--grid"}},
    {"--grid=1", 2, {"--grid"}, {"heatmap", "@h3.npy", "-o", "%h.svg", "--grid=1"}},
    {"--labels-q given twice", 2, {"--labels-q"},
     {"heatmap", "@ok.npy", "-o", "%h.svg", "--labels-q", "a,b,c,d", "--labels-q", "a,b,c,d"}},
    {"--labels-k without value", 2, {"--labels-k"},
     {"heatmap", "@ok.npy", "-o", "%h.svg", "--labels-k"}},
    {"--vmax 0", 2, {"--vmax"}, {"heatmap", "@ok.npy", "-o", "%h.svg", "--vmax", "0"}},
    {"--vmax 2", 2, {"--vmax", "2"}, {"heatmap", "@ok.npy", "-o", "%h.svg", "--vmax", "2"}},
    {"--vmax abc", 2, {"--vmax", "abc"}, {"heatmap", "@ok.npy", "-o", "%h.svg", "--vmax=abc"}},
    {"--vmax nan", 2, {"--vmax"}, {"heatmap", "@ok.npy", "-o", "%h.svg", "--vmax", "nan"}},
    {"usage error wins over a missing file", 2, {"--vmax"},
     {"heatmap", "@nope.npy", "-o", "%h.svg", "--vmax", "0"}},

    /* ---- other errors: exit 1 */
    {"nonexistent file", 1, {"nope.npy"}, {"heatmap", "@nope.npy", "-o", "%h.svg"}},
    {"directory as input", 1, {"adir.npy"}, {"heatmap", "@adir.npy", "-o", "%h.svg"}},
    {"malformed: bad magic", 1, {"badmagic.npy"}, {"heatmap", "@badmagic.npy", "-o", "%h.svg"}},
    {"malformed: empty", 1, {"empty.npy"}, {"heatmap", "@empty.npy", "-o", "%h.svg"}},
    {"malformed: truncated", 1, {"trunc.npy"}, {"heatmap", "@trunc.npy", "-o", "%h.svg"}},
    {"int32 weights", 1, {"i32.npy", "dtype"}, {"heatmap", "@i32.npy", "-o", "%h.svg"}},
    {"bool weights", 1, {"bool.npy"}, {"heatmap", "@bool.npy", "-o", "%h.svg"}},
    {"rank 0", 1, {"r0.npy", "rank 0"}, {"heatmap", "@r0.npy", "-o", "%h.svg"}},
    {"rank 1", 1, {"r1.npy", "rank 1"}, {"heatmap", "@r1.npy", "-o", "%h.svg"}},
    {"rank 5", 1, {"r5.npy", "rank 5"}, {"heatmap", "@r5.npy", "-o", "%h.svg"}},
    {"Lq = 0", 1, {"zero.npy", "(0, 4)"}, {"heatmap", "@zero.npy", "-o", "%h.svg"}},
    {"H = 0", 1, {"zero_h.npy"}, {"heatmap", "@zero_h.npy", "-o", "%h.svg"}},
    {"NaN", 1, {"nan.npy", "(1, 2)"}, {"heatmap", "@nan.npy", "-o", "%h.svg"}},
    {"infinity", 1, {"inf.npy", "(1, 2)"}, {"heatmap", "@inf.npy", "-o", "%h.svg"}},
    {"negative weight", 1, {"neg.npy", "(0, 1, 2)"}, {"heatmap", "@neg.npy", "-o", "%h.svg"}},
    {"weight above 1", 1, {"big.npy", "(0, 0, 1, 2)"}, {"heatmap", "@big.npy", "-o", "%h.svg"}},
    {"--labels-q count", 1, {"--labels-q", "3 labels"},
     {"heatmap", "@ok.npy", "-o", "%h.svg", "--labels-q", "a,b,c"}},
    {"--labels-k count", 1, {"--labels-k", "5 labels"},
     {"heatmap", "@ok.npy", "-o", "%h.svg", "--labels-k", "a,b\\,c,d,e,f"}},
    {"--labels-k empty is one label", 1, {"--labels-k", "1 label,"},
     {"heatmap", "@ok.npy", "-o", "%h.svg", "--labels-k="}},
    {"--head out of range, rank 3", 1, {"--head 3", "3 heads"},
     {"heatmap", "@h3.npy", "-o", "%h.svg", "--head", "3"}},
    {"--head out of range, rank 4", 1, {"--head 6", "6 heads"},
     {"heatmap", "@h2x3.npy", "-o", "%h.svg", "--head", "6"}},
    {"--head 1 of rank 2", 1, {"--head 1", "1 head"},
     {"heatmap", "@ok.npy", "-o", "%h.svg", "--head", "1"}},
    {"17 heads without --head or --grid", 1, {"--head", "17 heads"},
     {"heatmap", "@h17.npy", "-o", "%h.svg"}},
    {"--grid of 65 heads", 1, {"--grid", "65"}, {"heatmap", "@h65.npy", "-o", "%h.svg", "--grid"}},
    {"-o in a missing directory", 1, {"-o", "nodir"}, {"heatmap", "@ok.npy", "-o", "%nodir/h.svg"}},
    {"-o is a directory", 1, {"-o", "isdir.svg"}, {"heatmap", "@ok.npy", "-o", "%isdir.svg"}},
};

static void test_errors(void)
{
    static char ctx[160];
    set_ctx("error fixtures sanity");
    EXPECT_OK(RUN("heatmap", "@ok.npy", "-o", "%h.svg"));
    EXPECT_OK(RUN("heatmap", "@h3.npy", "-o", "%i.svg", "--head", "2"));
    EXPECT_OK(RUN("heatmap", "@h2x3.npy", "-o", "%j.svg", "--head", "5"));
    EXPECT_OK(RUN("heatmap", "@h65.npy", "-o", "%k.svg", "--head", "64"));
    EXPECT_OK(RUN("heatmap", "@ok.npy", "-o", "%l.svg", "--labels-k", "a,b\\,c,d,e"));
    expect_out_files(5);

    for (size_t c = 0; c < sizeof err_cases / sizeof err_cases[0]; c++) {
        const err_case *e = &err_cases[c];
        snprintf(ctx, sizeof ctx, "error case '%s'", e->name);
        set_ctx(ctx);
        if (strcmp(e->name, "-o is a directory") == 0)
            EXPECT(mkdir(out_path("isdir.svg"), 0700) == 0);
        int rc = run_args(e->args);
        if (getenv("QKV_TEST_VERBOSE")) printf("%-40s exit %d: %s", e->name, rc, g_stderr);
        EXPECT(rc >= 0 && rc < 128);
        EXPECT(rc == e->rc);
        if (rc == e->rc) {
            EXPECT(one_line(g_stderr));
            EXPECT(strncmp(g_stderr, "qkv heatmap: ", 13) == 0);
            for (int x = 0; x < 2; x++)
                if (e->needle[x]) {
                    int named = strstr(g_stderr, e->needle[x]) != NULL;
                    if (!named) fprintf(stderr, "    stderr does not name '%s'\n", e->needle[x]);
                    EXPECT(named);
                }
            EXPECT(g_stdout[0] == '\0');
        }
        expect_out_files(strcmp(e->name, "-o is a directory") == 0 ? 1 : 0);
    }

    /* A failure leaves an existing picture as it was. */
    static const char precious[] = "<svg>precious</svg>\n";
    set_ctx("existing output kept on failure");
    write_bytes(out_path("h.svg"), precious, sizeof precious - 1);
    EXPECT(RUN("heatmap", "@nan.npy", "-o", "%h.svg") == 1);
    char *kept = slurp(out_path("h.svg"), NULL);
    EXPECT(kept && strcmp(kept, precious) == 0);
    free(kept);
    EXPECT(RUN("heatmap", "@ok.npy", "-o", "%h.svg") == 0);
    kept = slurp(out_path("h.svg"), NULL);
    EXPECT(kept && strstr(kept, "<g class=\"cells\">") != NULL);
    free(kept);
    expect_out_files(1);
}

int main(void)
{
    cmdtest_open();

    test_layout();
    test_help();
    make_fixtures();
    test_labels_svg();
    test_labels_png();
    test_every_level();
    test_sizes();
    test_heads();
    test_from_run();
    test_vmax_and_tolerance();
    test_html();
    make_error_fixtures();
    test_errors();

    printf("test_heatmap: %zu layouts, %zu error cases\n",
           sizeof layout_cases / sizeof layout_cases[0], sizeof err_cases / sizeof err_cases[0]);
    rmdir(in_path("adir.npy"));
    cmdtest_close();
    free(g_w12);
    return test_finish("test_heatmap");
}
