/* `qkv heatmap`: draws attention weights (a .npy of rank 2-4, as `qkv run
 * --weights` writes them) as one heatmap per head, with token labels and a
 * colour legend, to SVG (written here), PNG (libpng) or the page of html.c. */
#include "cli.h"
#include "commands.h"
#include "picture.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifdef QKV_HAVE_PNG
#include <png.h>
#endif

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

/* --------------------------------------------------------------- colours */

typedef struct rgb {
    uint8_t r, g, b;
} rgb;

/* The colour scale: anchors at weights 0, 1/12, ..., 1, picked on a path
 * through CIELAB whose lightness L* rises evenly from 10 to 94 while the
 * hue turns from violet through blue and green to yellow; in gamut, sRGB.
 * Linear interpolation between them into 256 levels keeps the relative
 * luminance strictly rising from one level to the next (test_heatmap
 * checks every level), so order survives greyscale and colour blindness. */
static const rgb ramp_anchor[13] = {
    {45, 1, 76},    {29, 32, 104},  {0, 56, 118},   {0, 76, 126},   {0, 96, 132},
    {0, 117, 139},  {0, 138, 145},  {0, 160, 145},  {9, 183, 128},  {107, 199, 104},
    {153, 216, 92}, {202, 230, 79}, {255, 242, 71},
};
#define RAMP_LEVELS 256

static void ramp_fill(rgb lut[RAMP_LEVELS])
{
    const int n = (int)(sizeof ramp_anchor / sizeof ramp_anchor[0]);
    for (int k = 0; k < RAMP_LEVELS; k++) {
        /* position k/255 along n-1 segments, in integers so that rounding
         * is exact: segment i, fraction rem/255 */
        int i = k * (n - 1) / (RAMP_LEVELS - 1);
        int rem = k * (n - 1) - i * (RAMP_LEVELS - 1);
        if (i == n - 1) i = n - 2, rem = RAMP_LEVELS - 1;
        const rgb *a = &ramp_anchor[i], *b = &ramp_anchor[i + 1];
        const int ca[3] = {a->r, a->g, a->b}, cb[3] = {b->r, b->g, b->b};
        int c[3];
        for (int ch = 0; ch < 3; ch++) /* round half up of ca + (cb-ca)*rem/255 */
            c[ch] = (2 * (255 * ca[ch] + (cb[ch] - ca[ch]) * rem) + 255) / 510;
        lut[k] = (rgb){(uint8_t)c[0], (uint8_t)c[1], (uint8_t)c[2]};
    }
}

static int ramp_level(double v, double vmax)
{
    double t = v / vmax;
    if (!(t > 0)) return 0;
    if (t >= 1) return RAMP_LEVELS - 1;
    return (int)(t * (RAMP_LEVELS - 1) + 0.5);
}

/* WCAG relative luminance of an sRGB colour. */
static double luminance(rgb c)
{
    double ch[3] = {c.r / 255.0, c.g / 255.0, c.b / 255.0};
    for (int i = 0; i < 3; i++)
        ch[i] = ch[i] <= 0.04045 ? ch[i] / 12.92 : pow((ch[i] + 0.055) / 1.055, 2.4);
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
}

/* Black or white, whichever contrasts more with the background (the two
 * contrast ratios are equal at luminance 0.179). */
static rgb text_on(rgb bg)
{
    return luminance(bg) > 0.179 ? (rgb){0, 0, 0} : (rgb){255, 255, 255};
}

static const rgb INK = {34, 34, 34}, NOTE_INK = {85, 85, 85}, WHITE = {255, 255, 255};

/* ------------------------------------------------------------------ text */

/* Labels come from the command line and may hold any bytes; the SVG must
 * stay well-formed XML. Longer texts are cut to these many characters. */
#define LABEL_CHARS 16
#define TITLE_CHARS 100
#define TEXT_BYTES (4 * TITLE_CHARS + 1)

/* The next character of NUL-terminated UTF-8; U+FFFD for a malformed
 * sequence (overlong, surrogate, past U+10FFFF, cut short). */
static uint32_t utf8_next(const unsigned char **p)
{
    const unsigned char *s = *p;
    uint32_t c = s[0], min;
    int n;
    if (c < 0x80) {
        *p += 1;
        return c;
    }
    if (c >= 0xC2 && c <= 0xDF)
        n = 1, c &= 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        n = 2, c &= 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 3, c &= 0x07, min = 0x10000;
    else {
        *p += 1;
        return 0xFFFD;
    }
    for (int i = 1; i <= n; i++) {
        if ((s[i] & 0xC0) != 0x80) { /* also stops at the terminating NUL */
            *p += i;
            return 0xFFFD;
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *p += n + 1;
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0xFFFD;
    return c;
}

static char *utf8_put(char *d, uint32_t c)
{
    if (c < 0x80) {
        *d++ = (char)c;
    } else if (c < 0x800) {
        *d++ = (char)(0xC0 | (c >> 6));
        *d++ = (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        *d++ = (char)(0xE0 | (c >> 12));
        *d++ = (char)(0x80 | ((c >> 6) & 0x3F));
        *d++ = (char)(0x80 | (c & 0x3F));
    } else {
        *d++ = (char)(0xF0 | (c >> 18));
        *d++ = (char)(0x80 | ((c >> 12) & 0x3F));
        *d++ = (char)(0x80 | ((c >> 6) & 0x3F));
        *d++ = (char)(0x80 | (c & 0x3F));
    }
    return d;
}

static int64_t text_chars(const char *s)
{
    int64_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; n++) utf8_next(&p);
    return n;
}

/* Copies s into out (TEXT_BYTES) as UTF-8 that XML 1.0 accepts: malformed
 * bytes and control characters become U+FFFD; more than maxc characters
 * are cut to maxc, the last an ellipsis. Returns the character count. */
static int64_t display_text(const char *s, int64_t maxc, char *out)
{
    int64_t total = text_chars(s);
    int64_t keep = total > maxc ? maxc - 1 : total;
    char *d = out;
    const unsigned char *p = (const unsigned char *)s;
    for (int64_t i = 0; i < keep; i++) {
        uint32_t c = utf8_next(&p);
        if (c < 0x20 || (c >= 0x7F && c < 0xA0) || c == 0xFFFE || c == 0xFFFF) c = 0xFFFD;
        d = utf8_put(d, c);
    }
    if (keep < total) d = utf8_put(d, 0x2026);
    *d = '\0';
    return keep < total ? maxc : total;
}

/* Text sizes in units: 10 (labels) and 15 (the title). Widths assume a
 * monospace font whose advance is 0.6 em, as the PNG font's is. */
static int64_t text_width(const char *s, int size) { return text_chars(s) * size * 6 / 10; }

/* The PNG font, 5x7 with two rows of descender: ASCII 32-126, then a box
 * for any other character, the ellipsis and the multiplication sign. Each
 * byte is one row, bit 4 the leftmost pixel. */
enum { GLYPH_BOX = 95, GLYPH_ELLIPSIS = 96, GLYPH_TIMES = 97 };
static const uint8_t font5x7[98][9] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /*   */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04, 0x00, 0x00}, /* ! */
    {0x0a, 0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* " */
    {0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a, 0x00, 0x00}, /* # */
    {0x04, 0x0f, 0x14, 0x0e, 0x05, 0x1e, 0x04, 0x00, 0x00}, /* $ */
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03, 0x00, 0x00}, /* % */
    {0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d, 0x00, 0x00}, /* & */
    {0x04, 0x04, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* quote */
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02, 0x00, 0x00}, /* ( */
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08, 0x00, 0x00}, /* ) */
    {0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00, 0x00, 0x00}, /* * */
    {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00, 0x00, 0x00}, /* + */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08, 0x00}, /* , */
    {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x00}, /* - */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c, 0x00, 0x00}, /* . */
    {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10, 0x00, 0x00}, /* / */
    {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e, 0x00, 0x00}, /* 0 */
    {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00, 0x00}, /* 1 */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f, 0x00, 0x00}, /* 2 */
    {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e, 0x00, 0x00}, /* 3 */
    {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02, 0x00, 0x00}, /* 4 */
    {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e, 0x00, 0x00}, /* 5 */
    {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e, 0x00, 0x00}, /* 6 */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0x00, 0x00}, /* 7 */
    {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e, 0x00, 0x00}, /* 8 */
    {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c, 0x00, 0x00}, /* 9 */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00, 0x00, 0x00}, /* : */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x04, 0x08, 0x00, 0x00}, /* ; */
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02, 0x00, 0x00}, /* < */
    {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00, 0x00, 0x00}, /* = */
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08, 0x00, 0x00}, /* > */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04, 0x00, 0x00}, /* ? */
    {0x0e, 0x11, 0x17, 0x15, 0x17, 0x10, 0x0f, 0x00, 0x00}, /* @ */
    {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00, 0x00}, /* A */
    {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e, 0x00, 0x00}, /* B */
    {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e, 0x00, 0x00}, /* C */
    {0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c, 0x00, 0x00}, /* D */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f, 0x00, 0x00}, /* E */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10, 0x00, 0x00}, /* F */
    {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f, 0x00, 0x00}, /* G */
    {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00, 0x00}, /* H */
    {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00, 0x00}, /* I */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c, 0x00, 0x00}, /* J */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11, 0x00, 0x00}, /* K */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f, 0x00, 0x00}, /* L */
    {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11, 0x00, 0x00}, /* M */
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x00, 0x00}, /* N */
    {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00, 0x00}, /* O */
    {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10, 0x00, 0x00}, /* P */
    {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d, 0x00, 0x00}, /* Q */
    {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11, 0x00, 0x00}, /* R */
    {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e, 0x00, 0x00}, /* S */
    {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x00}, /* T */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00, 0x00}, /* U */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00, 0x00}, /* V */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a, 0x00, 0x00}, /* W */
    {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11, 0x00, 0x00}, /* X */
    {0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04, 0x00, 0x00}, /* Y */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f, 0x00, 0x00}, /* Z */
    {0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e, 0x00, 0x00}, /* [ */
    {0x10, 0x10, 0x08, 0x04, 0x02, 0x01, 0x01, 0x00, 0x00}, /* backslash */
    {0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e, 0x00, 0x00}, /* ] */
    {0x04, 0x0a, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ^ */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f, 0x00}, /* _ */
    {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ` */
    {0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f, 0x00, 0x00}, /* a */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e, 0x00, 0x00}, /* b */
    {0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e, 0x00, 0x00}, /* c */
    {0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f, 0x00, 0x00}, /* d */
    {0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e, 0x00, 0x00}, /* e */
    {0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08, 0x00, 0x00}, /* f */
    {0x00, 0x00, 0x0f, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x0e}, /* g */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00, 0x00}, /* h */
    {0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e, 0x00, 0x00}, /* i */
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c}, /* j */
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12, 0x00, 0x00}, /* k */
    {0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00, 0x00}, /* l */
    {0x00, 0x00, 0x1a, 0x15, 0x15, 0x15, 0x15, 0x00, 0x00}, /* m */
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00, 0x00}, /* n */
    {0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e, 0x00, 0x00}, /* o */
    {0x00, 0x00, 0x1e, 0x11, 0x11, 0x11, 0x1e, 0x10, 0x10}, /* p */
    {0x00, 0x00, 0x0f, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x01}, /* q */
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10, 0x00, 0x00}, /* r */
    {0x00, 0x00, 0x0f, 0x10, 0x0e, 0x01, 0x1e, 0x00, 0x00}, /* s */
    {0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06, 0x00, 0x00}, /* t */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d, 0x00, 0x00}, /* u */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00, 0x00}, /* v */
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a, 0x00, 0x00}, /* w */
    {0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x00, 0x00}, /* x */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x0e}, /* y */
    {0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f, 0x00, 0x00}, /* z */
    {0x03, 0x04, 0x04, 0x08, 0x04, 0x04, 0x03, 0x00, 0x00}, /* { */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x00}, /* | */
    {0x18, 0x04, 0x04, 0x02, 0x04, 0x04, 0x18, 0x00, 0x00}, /* } */
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00, 0x00, 0x00}, /* ~ */
    {0x00, 0x1f, 0x11, 0x11, 0x11, 0x11, 0x1f, 0x00, 0x00}, /* BOX */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x15, 0x00, 0x00}, /* ELLIPSIS */
    {0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x00, 0x00, 0x00}, /* TIMES */
};

static int glyph_of(uint32_t c)
{
    if (c >= 32 && c <= 126) return (int)c - 32;
    if (c == 0x2026) return GLYPH_ELLIPSIS;
    if (c == 0xD7) return GLYPH_TIMES;
    return GLYPH_BOX;
}

/* ---------------------------------------------------------------- canvas */

/* What the picture is drawn on: an SVG file being written, or an RGB
 * bitmap at PX pixels per unit. Coordinates are integer units, so both
 * show the same layout and PNG cells are whole pixels. */
#define PX 2
typedef struct canvas {
    FILE *svg;
    uint8_t *px;
    int64_t w, h; /* bitmap size in pixels */
} canvas;

enum { ANCHOR_START, ANCHOR_MIDDLE, ANCHOR_END };

static void svg_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* A rectangle in pixels, clipped to the bitmap. */
static void px_fill(canvas *cv, int64_t x, int64_t y, int64_t w, int64_t h, rgb c)
{
    int64_t x1 = x + w, y1 = y + h;
    if (x < 0) x = 0;
    if (y < 0) y = 0;
    if (x1 > cv->w) x1 = cv->w;
    if (y1 > cv->h) y1 = cv->h;
    for (int64_t yy = y; yy < y1; yy++)
        for (int64_t xx = x; xx < x1; xx++) {
            uint8_t *p = cv->px + (yy * cv->w + xx) * 3;
            p[0] = c.r, p[1] = c.g, p[2] = c.b;
        }
}

static void cv_rect(canvas *cv, int64_t x, int64_t y, int64_t w, int64_t h, rgb c)
{
    if (cv->svg)
        fprintf(cv->svg, "<rect x=\"%lld\" y=\"%lld\" width=\"%lld\" height=\"%lld\" "
                         "fill=\"#%02x%02x%02x\"/>\n",
                (long long)x, (long long)y, (long long)w, (long long)h, c.r, c.g, c.b);
    else
        px_fill(cv, x * PX, y * PX, w * PX, h * PX, c);
}

/* One line of display text (from display_text) with its baseline at
 * (x, y); vertical text reads upwards from (x, y), the glyphs' tops to
 * the left. */
static void cv_text(canvas *cv, int64_t x, int64_t y, const char *s, int size, int anchor,
                    int vertical, int bold, rgb c)
{
    if (cv->svg) {
        FILE *f = cv->svg;
        fprintf(f, "<text x=\"%lld\" y=\"%lld\"", (long long)x, (long long)y);
        if (anchor != ANCHOR_START)
            fprintf(f, " text-anchor=\"%s\"", anchor == ANCHOR_MIDDLE ? "middle" : "end");
        if (size != 10) fprintf(f, " font-size=\"%d\"", size);
        if (bold) fputs(" font-weight=\"bold\"", f);
        if (c.r != INK.r || c.g != INK.g || c.b != INK.b)
            fprintf(f, " fill=\"#%02x%02x%02x\"", c.r, c.g, c.b);
        if (vertical)
            fprintf(f, " transform=\"rotate(-90 %lld %lld)\"", (long long)x, (long long)y);
        fputc('>', f);
        svg_escaped(f, s);
        fputs("</text>\n", f);
        return;
    }
    int64_t gp = size * PX / 10; /* pixels per font pixel */
    int64_t width = text_chars(s) * 6 * gp - gp;
    int64_t pos = anchor == ANCHOR_MIDDLE ? -width / 2 : anchor == ANCHOR_END ? -width : 0;
    x *= PX;
    y *= PX;
    for (const unsigned char *p = (const unsigned char *)s; *p; pos += 6 * gp) {
        const uint8_t *g = font5x7[glyph_of(utf8_next(&p))];
        for (int r = 0; r < 9; r++)
            for (int col = 0; col < 5; col++) {
                if (!(g[r] & (0x10 >> col))) continue;
                /* (tx, ty): along the text and down from the baseline */
                int64_t tx = pos + col * gp, ty = (r - 7) * gp;
                if (vertical)
                    px_fill(cv, x + ty, y - tx - gp - bold, gp, gp + bold, c);
                else
                    px_fill(cv, x + tx, y + ty, gp + bold, gp, c);
            }
    }
}

/* ---------------------------------------------------------------- figure */

/* The picture: what is drawn and where, in units. */
typedef struct figure {
    int64_t npanels;
    float *shown;              /* npanels x nq x nk shown weights (owned) */
    const char *const *names;  /* panel names, or NULL */
    int64_t fq, fk;            /* block sizes of the downsampling, 1 = none */
    int64_t nq, nk;            /* cells a side */
    const labels *labels_q, *labels_k; /* NULL: token indices */
    double vmax;
    int token_labels; /* a tick per token, with its label when given */
    int values;       /* each cell's weight written in it */
    int tooltips;     /* SVG cells carry a <title> */
    int64_t step;           /* a tick every step cells, both axes */
    int keys_across;        /* key ticks written across, not upwards */
    char title[TEXT_BYTES];
    char notes[3][TEXT_BYTES];
    int nnotes;
    /* layout */
    int64_t cell, cols, rows;
    int64_t mx, my;   /* the matrix's offset inside a panel */
    int64_t pw, ph;   /* panel size */
    int64_t px0, py0; /* the first panel's corner */
    int64_t lx, ly, lh, lw; /* legend bar corner, bar height, legend width */
    int64_t notes_y;  /* baseline of the first note */
    int64_t width, height;
    rgb lut[RAMP_LEVELS];
} figure;

enum { MARGIN = 16, GAP = 24, BAR_W = 16, LABEL_PITCH = 10, AXIS_W = 18 };

/* The text beside cell i of an axis: the token's label when token labels
 * are drawn and were given, else the index of the cell's first token. */
static void tick_text(const figure *f, int keys, int64_t i, char *out)
{
    const labels *l = keys ? f->labels_k : f->labels_q;
    if (f->token_labels && l) {
        display_text(l->v[i], LABEL_CHARS, out);
    } else {
        snprintf(out, TEXT_BYTES, "%lld", (long long)(i * (keys ? f->fk : f->fq)));
    }
}

/* The width of the widest tick text of an axis. */
static int64_t tick_width(const figure *f, int keys)
{
    int64_t n = keys ? f->nk : f->nq, w = 0;
    char t[TEXT_BYTES];
    for (int64_t i = 0; i < n; i += f->step) {
        tick_text(f, keys, i, t);
        int64_t tw = text_width(t, 10);
        if (tw > w) w = tw;
    }
    return w;
}

/* 1, 2, 5, 10, 20, ...: the first at least `min`. */
static int64_t nice_step(int64_t min)
{
    for (int64_t s = 1;; s *= 10) {
        if (s >= min) return s;
        if (2 * s >= min) return 2 * s;
        if (5 * s >= min) return 5 * s;
    }
}

static void legend_tick(const figure *f, int k, char *out)
{
    snprintf(out, TEXT_BYTES, "%.3g", f->vmax * k / 4);
}

static void layout(figure *f)
{
    f->cols = (int64_t)ceil(sqrt((double)f->npanels));
    while (f->cols * f->cols < f->npanels) f->cols++; /* sqrt's rounding */
    f->rows = (f->npanels + f->cols - 1) / f->cols;

    f->token_labels = f->cell >= LABEL_PITCH && f->fq == 1 && f->fk == 1;
    /* Cells too small for a text each: sparser ticks, 14 units apart or more. */
    f->step = f->cell >= LABEL_PITCH ? 1 : nice_step((14 + f->cell - 1) / f->cell);
    f->values = f->fq == 1 && f->fk == 1 && f->nq <= 16 && f->nk <= 16 && f->cell >= 28;
    f->tooltips = f->fq == 1 && f->fk == 1 && f->npanels * f->nq * f->nk <= 16384;

    /* Key ticks run upwards unless they fit across their cells. */
    int64_t kw = tick_width(f, 1), marks = f->step > 1 ? 4 : 0;
    f->keys_across = kw <= f->step * f->cell - 2;
    f->my = (f->names ? 16 : 0) + 16 + (f->keys_across ? 9 : kw) + 4 + marks;
    f->mx = AXIS_W + tick_width(f, 0) + 4 + marks;
    f->pw = f->mx + f->nk * f->cell;
    f->ph = f->my + f->nq * f->cell;
    f->px0 = MARGIN;
    f->py0 = MARGIN + 26;
    int64_t panels_w = f->cols * f->pw + (f->cols - 1) * GAP;
    int64_t panels_h = f->rows * f->ph + (f->rows - 1) * GAP;

    f->lx = f->px0 + panels_w + GAP;
    f->ly = f->py0 + f->my;
    f->lh = f->nq * f->cell;
    if (f->lh < 120) f->lh = 120;
    if (f->lh > 320) f->lh = 320;
    char t[TEXT_BYTES];
    int64_t tick_w = 0;
    for (int k = 0; k <= 4; k++) {
        legend_tick(f, k, t);
        if (text_width(t, 10) > tick_w) tick_w = text_width(t, 10);
    }
    f->lw = BAR_W + 8 + tick_w;
    int64_t lt = text_width(f->fq * f->fk > 1 ? "mean weight" : "weight", 10);
    if (lt > f->lw) f->lw = lt;

    int64_t right = f->lx + f->lw;
    if (MARGIN + text_width(f->title, 15) > right) right = MARGIN + text_width(f->title, 15);
    int64_t bottom = f->py0 + panels_h;
    if (f->ly + f->lh + 6 > bottom) bottom = f->ly + f->lh + 6;
    f->notes_y = bottom + 20;
    for (int k = 0; k < f->nnotes; k++) {
        int64_t w = MARGIN + text_width(f->notes[k], 10);
        if (w > right) right = w;
    }
    f->width = right + MARGIN;
    f->height = (f->nnotes ? f->notes_y + (f->nnotes - 1) * 14 + 4 : bottom) + MARGIN;
}

/* A cell's tooltip: which query and key, and the weight. */
static void cell_title(const figure *f, int64_t i, int64_t j, float v, char *out, size_t len)
{
    char lq[TEXT_BYTES] = "", lk[TEXT_BYTES] = "";
    if (f->labels_q) {
        lq[0] = ' ';
        display_text(f->labels_q->v[i], LABEL_CHARS, lq + 1);
    }
    if (f->labels_k) {
        lk[0] = ' ';
        display_text(f->labels_k->v[j], LABEL_CHARS, lk + 1);
    }
    snprintf(out, len, "query %lld%s, key %lld%s: %.4f", (long long)i, lq, (long long)j, lk,
             (double)v);
}

static void draw_panel(const figure *f, canvas *cv, int64_t p)
{
    int64_t ox = f->px0 + (p % f->cols) * (f->pw + GAP);
    int64_t oy = f->py0 + (p / f->cols) * (f->ph + GAP);
    int64_t c = f->cell, x0 = ox + f->mx, y0 = oy + f->my;
    int64_t mw = f->nk * c, mh = f->nq * c;
    char t[TEXT_BYTES];
    if (f->names) {
        display_text(f->names[p], TITLE_CHARS, t);
        cv_text(cv, x0 + mw / 2, oy + 11, t, 10, ANCHOR_MIDDLE, 0, 1, INK);
    }
    cv_text(cv, x0 + mw / 2, oy + (f->names ? 16 : 0) + 10, "keys", 10, ANCHOR_MIDDLE, 0, 0,
            INK);
    cv_text(cv, ox + 10, y0 + mh / 2, "queries", 10, ANCHOR_MIDDLE, 1, 0, INK);

    int64_t tick_len = f->step > 1 ? 4 : 0;
    for (int64_t j = 0; j < f->nk; j += f->step) {
        tick_text(f, 1, j, t);
        if (f->keys_across)
            cv_text(cv, x0 + j * c + c / 2, y0 - 4 - tick_len, t, 10, ANCHOR_MIDDLE, 0, 0, INK);
        else
            cv_text(cv, x0 + j * c + (c + 7) / 2, y0 - 4 - tick_len, t, 10, ANCHOR_START, 1, 0,
                    INK);
        if (tick_len) cv_rect(cv, x0 + j * c + c / 2, y0 - 3, 1, 3, INK);
    }
    for (int64_t i = 0; i < f->nq; i += f->step) {
        tick_text(f, 0, i, t);
        cv_text(cv, x0 - 4 - tick_len, y0 + i * c + (c + 7) / 2, t, 10, ANCHOR_END, 0, 0, INK);
        if (tick_len) cv_rect(cv, x0 - 3, y0 + i * c + c / 2, 3, 1, INK);
    }

    /* The cells, row-major in one group per head: the test reads them back
     * in this order. */
    const float *v = f->shown + p * f->nq * f->nk;
    if (cv->svg) fputs("<g class=\"cells\">\n", cv->svg);
    for (int64_t i = 0; i < f->nq; i++)
        for (int64_t j = 0; j < f->nk; j++) {
            rgb col = f->lut[ramp_level(v[i * f->nk + j], f->vmax)];
            if (cv->svg && f->tooltips) {
                char tip[3 * TEXT_BYTES];
                cell_title(f, i, j, v[i * f->nk + j], tip, sizeof tip);
                fprintf(cv->svg, "<rect x=\"%lld\" y=\"%lld\" width=\"%lld\" height=\"%lld\" "
                                 "fill=\"#%02x%02x%02x\"><title>",
                        (long long)(x0 + j * c), (long long)(y0 + i * c), (long long)c,
                        (long long)c, col.r, col.g, col.b);
                svg_escaped(cv->svg, tip);
                fputs("</title></rect>\n", cv->svg);
            } else {
                cv_rect(cv, x0 + j * c, y0 + i * c, c, c, col);
            }
        }
    if (cv->svg) fputs("</g>\n", cv->svg);
    if (!f->values) return;
    if (cv->svg) fputs("<g class=\"values\">\n", cv->svg);
    for (int64_t i = 0; i < f->nq; i++)
        for (int64_t j = 0; j < f->nk; j++) {
            float w = v[i * f->nk + j];
            snprintf(t, sizeof t, "%.2f", (double)w);
            cv_text(cv, x0 + j * c + c / 2, y0 + i * c + (c + 7) / 2, t, 10, ANCHOR_MIDDLE, 0, 0,
                    text_on(f->lut[ramp_level(w, f->vmax)]));
        }
    if (cv->svg) fputs("</g>\n", cv->svg);
}

static void draw_legend(const figure *f, canvas *cv)
{
    char t[TEXT_BYTES];
    cv_text(cv, f->lx, f->ly - 8, f->fq * f->fk > 1 ? "mean weight" : "weight", 10,
            ANCHOR_START, 0, 0, INK);
    if (cv->svg) {
        fprintf(cv->svg, "<rect id=\"legend-bar\" x=\"%lld\" y=\"%lld\" width=\"%d\" "
                         "height=\"%lld\" fill=\"url(#qkv-ramp)\"/>\n",
                (long long)f->lx, (long long)f->ly, BAR_W, (long long)f->lh);
    } else {
        /* One colour per pixel row, the top row the top level. */
        int64_t rows = f->lh * PX;
        for (int64_t r = 0; r < rows; r++) {
            int level = (int)(((rows - 1 - r) * (RAMP_LEVELS - 1) + (rows - 1) / 2) / (rows - 1));
            px_fill(cv, f->lx * PX, f->ly * PX + r, BAR_W * PX, 1, f->lut[level]);
        }
    }
    for (int k = 0; k <= 4; k++) {
        int64_t y = f->ly + f->lh - f->lh * k / 4;
        cv_rect(cv, f->lx + BAR_W, y - (k == 4 ? 0 : 1), 4, 1, INK);
        legend_tick(f, k, t);
        cv_text(cv, f->lx + BAR_W + 8, y + 3, t, 10, ANCHOR_START, 0, 0, INK);
    }
}

static void draw_figure(const figure *f, canvas *cv)
{
    FILE *s = cv->svg;
    if (s) {
        fprintf(s,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%lld\" height=\"%lld\" "
                "viewBox=\"0 0 %lld %lld\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, "
                "monospace\" font-size=\"10\" fill=\"#%02x%02x%02x\">\n<title>",
                (long long)f->width, (long long)f->height, (long long)f->width,
                (long long)f->height, INK.r, INK.g, INK.b);
        svg_escaped(s, f->title);
        fputs("</title>\n<defs><linearGradient id=\"qkv-ramp\" x1=\"0\" y1=\"1\" x2=\"0\" "
              "y2=\"0\">\n",
              s);
        const int n = (int)(sizeof ramp_anchor / sizeof ramp_anchor[0]);
        for (int i = 0; i < n; i++)
            fprintf(s, "<stop offset=\"%.4f\" stop-color=\"#%02x%02x%02x\"/>\n",
                    (double)i / (n - 1), ramp_anchor[i].r, ramp_anchor[i].g, ramp_anchor[i].b);
        fputs("</linearGradient></defs>\n", s);
    }
    cv_rect(cv, 0, 0, f->width, f->height, WHITE);
    cv_text(cv, MARGIN, MARGIN + 12, f->title, 15, ANCHOR_START, 0, 1, INK);
    for (int64_t p = 0; p < f->npanels; p++) draw_panel(f, cv, p);
    draw_legend(f, cv);
    for (int k = 0; k < f->nnotes; k++)
        cv_text(cv, MARGIN, f->notes_y + 14 * k, f->notes[k], 10, ANCHOR_START, 0, 0, NOTE_INK);
    if (s) fputs("</svg>\n", s);
}

/* --------------------------------------------------------------- writers */

static const char *write_svg(const char *path, void *ctx)
{
    FILE *f = fopen(path, "w");
    if (!f) return strerror(errno);
    canvas cv = {f, NULL, 0, 0};
    draw_figure(ctx, &cv);
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    if (fclose(f) != 0 && !err) err = errno;
    return err ? strerror(err) : NULL;
}

#ifdef QKV_HAVE_PNG
typedef struct png_job {
    const figure *fig;
    char why[200]; /* libpng's reason for a failure */
} png_job;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_job *job = png_get_error_ptr(png);
    snprintf(job->why, sizeof job->why, "libpng: %s", msg);
    png_longjmp(png, 1);
}

/* Warnings would break the one-line stderr contract; errors are reported. */
static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static const char *png_save(const char *path, const canvas *cv, png_job *job)
{
    FILE *f = fopen(path, "wb");
    if (!f) return strerror(errno);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, job, png_on_error,
                                              png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        fclose(f);
        return "out of memory";
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return job->why;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)cv->w, (png_uint_32)cv->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int64_t y = 0; y < cv->h; y++) png_write_row(png, cv->px + y * cv->w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) return strerror(errno);
    return NULL;
}

static const char *write_png(const char *path, void *ctx)
{
    png_job *job = ctx;
    canvas cv = {NULL, NULL, job->fig->width * PX, job->fig->height * PX};
    if ((uint64_t)cv.w * (uint64_t)cv.h > ((uint64_t)1 << 31) / 3)
        return "picture too large for a PNG (draw fewer heads)";
    cv.px = malloc((size_t)(cv.w * cv.h * 3));
    if (!cv.px) return "out of memory";
    memset(cv.px, 255, (size_t)(cv.w * cv.h * 3));
    draw_figure(job->fig, &cv);
    const char *why = png_save(path, &cv, job);
    free(cv.px);
    return why;
}
#endif

static const char *write_html(const char *path, void *ctx)
{
    return picture_write_html(path, ctx, NULL);
}

/* ---------------------------------------------------------------- checks */

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

/* Cells a side and the panel span, by number of heads drawn: one head may
 * use 640 units and 128 cells, a grid less per head. */
static void panel_limits(int64_t heads, int64_t *side, int64_t *span)
{
    if (heads == 1) *side = 128, *span = 640;
    else if (heads <= 4) *side = 64, *span = 384;
    else if (heads <= 16) *side = 48, *span = 240;
    else *side = 32, *span = 160;
}

/* Means of fq x fk blocks (the last ones may be smaller) of one head. */
static void downsample(float *out, const float *w, int64_t lq, int64_t lk, int64_t fq,
                       int64_t fk, int64_t nq, int64_t nk)
{
    for (int64_t i = 0; i < nq; i++) {
        int64_t r0 = i * fq, r1 = r0 + fq < lq ? r0 + fq : lq;
        for (int64_t j = 0; j < nk; j++) {
            int64_t c0 = j * fk, c1 = c0 + fk < lk ? c0 + fk : lk;
            double s = 0;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t k = c0; k < c1; k++) s += w[r * lk + k];
            out[i * nk + j] = (float)(s / (double)((r1 - r0) * (c1 - c0)));
        }
    }
}

/* Fills what fig shows: the heads' weights, downsampled to the cells a
 * picture of `count` heads has room for, the cell size, the colour scale
 * (vmax < 0: the default, 1) and the notes that say what was changed.
 * Returns 0 when out of memory. */
static int figure_init(figure *fig, const float *w, int64_t count, int64_t lq, int64_t lk,
                       const char *const *names, const labels *labels_q,
                       const labels *labels_k, double vmax, int vmax_auto)
{
    int64_t side, span;
    panel_limits(count, &side, &span);
    fig->npanels = count;
    fig->names = names;
    fig->fq = (lq + side - 1) / side, fig->fk = (lk + side - 1) / side;
    fig->nq = (lq + fig->fq - 1) / fig->fq, fig->nk = (lk + fig->fk - 1) / fig->fk;
    fig->labels_q = labels_q, fig->labels_k = labels_k;
    int64_t per = fig->nq * fig->nk;
    fig->shown = malloc((size_t)(count * per) * sizeof *fig->shown);
    if (!fig->shown) return 0;
    double largest = 0;
    for (int64_t p = 0; p < count; p++)
        downsample(fig->shown + p * per, w + p * lq * lk, lq, lk, fig->fq, fig->fk, fig->nq,
                   fig->nk);
    for (int64_t e = 0; e < count * per; e++)
        if (fig->shown[e] > largest) largest = fig->shown[e];
    fig->vmax = vmax_auto ? (largest > 0 ? largest : 1) : vmax > 0 ? vmax : 1;

    int64_t big = fig->nq > fig->nk ? fig->nq : fig->nk;
    fig->cell = span / big;
    if (fig->cell > 48) fig->cell = 48;
    if (fig->cell < 4) fig->cell = 4;
    int labelled = labels_q || labels_k, full = fig->fq == 1 && fig->fk == 1;
    /* One head keeps its labels readable by growing past the span. */
    if (count == 1 && labelled && full && fig->cell < LABEL_PITCH) fig->cell = LABEL_PITCH;

    if (!full) /* "\xc3\x97" is U+00D7, the multiplication sign */
        snprintf(fig->notes[fig->nnotes++], TEXT_BYTES,
                 "%s%lld\xc3\x97%lld shown as %lld\xc3\x97%lld: mean of %lld\xc3\x97%lld blocks; "
                 "ticks give a block's first token",
                 count > 1 ? "each head " : "", (long long)lq, (long long)lk, (long long)fig->nq,
                 (long long)fig->nk, (long long)fig->fq, (long long)fig->fk);
    if (labelled && (!full || fig->cell < LABEL_PITCH))
        snprintf(fig->notes[fig->nnotes++], TEXT_BYTES,
                 "token labels left out: too many tokens to read");
    if (vmax_auto)
        snprintf(fig->notes[fig->nnotes++], TEXT_BYTES,
                 "colour scale from 0 to the largest weight drawn, %.3g (--vmax auto)",
                 fig->vmax);
    else if (vmax > 0 && vmax < 1)
        snprintf(fig->notes[fig->nnotes++], TEXT_BYTES, "colours saturate at weight %.3g (--vmax)",
                 fig->vmax);
    else if (vmax < 0 && largest < 0.25) /* a dark picture: say how to see more */
        snprintf(fig->notes[fig->nnotes++], TEXT_BYTES,
                 "the largest weight drawn is %.3g: --vmax auto spreads the colours over 0 to it",
                 largest);
    ramp_fill(fig->lut);
    return 1;
}

/* ------------------------------------------------------------ subcommand */

enum { MAX_GRID = 64, MAX_DEFAULT_GRID = 16 };

int cmd_heatmap(int argc, char **argv)
{
    hm_args a = {0};
    int prc = parse_args(argc, argv, &a);
    if (prc == -1) {
        fputs(heatmap_usage, stdout);
        return CLI_OK;
    }
    if (prc != CLI_OK) return prc;

    /* What is wrong whatever the file holds: usage errors, before reading. */
    if (!*a.out) {
        cli_error("heatmap", "-o: empty file name");
        return CLI_USAGE;
    }
    int fmt = output_format(a.out);
    if (fmt < 0) {
        cli_error("heatmap", "-o %s: unknown picture format, expected a name ending in .svg, "
                             ".png or .html", a.out);
        return CLI_USAGE;
    }
    int64_t head = -1;
    if (a.head && (!cli_parse_int64(a.head, &head) || head < 0)) {
        cli_error("heatmap", "--head: '%s', expected a head number >= 0", a.head);
        return CLI_USAGE;
    }
    double vmax = 1;
    int vmax_auto = a.vmax && strcmp(a.vmax, "auto") == 0;
    if (a.vmax && !vmax_auto &&
        (!cli_parse_double(a.vmax, &vmax) || !(vmax > 0) || !(vmax <= 1))) {
        cli_error("heatmap", "--vmax: '%s', expected a number in (0, 1] or auto", a.vmax);
        return CLI_USAGE;
    }
    const char *const out_flag[1] = {"-o"}, *const out_path[1] = {a.out};
    prc = cli_check_output_paths("heatmap", 1, out_flag, out_path);
    if (prc != CLI_OK) return prc;
#ifndef QKV_HAVE_PNG
    if (fmt == FMT_PNG) {
        cli_error("heatmap", "-o %s: built without libpng; write .svg or rebuild after "
                             "installing libpng-dev", a.out);
        return CLI_ERROR;
    }
#endif

    int rc = CLI_ERROR;
    qkv_array w = {0};
    labels lq_labels = {0}, lk_labels = {0};
    char (*names)[48] = NULL;
    const char **name_ptrs = NULL;
    figure *fig = NULL;
    cli_outputs outs = {0};

    if (!cli_load_f32("heatmap", "weights", a.in, 0, &w)) goto done;
    char shape[128];
    cli_format_shape(shape, sizeof shape, &w);
    if (w.ndim < 2 || w.ndim > 4) {
        cli_error("heatmap", "weights %s: rank %d %s, expected (Lq, Lk), (H, Lq, Lk) or "
                             "(B, H, Lq, Lk)", a.in, w.ndim, shape);
        goto done;
    }
    if (qkv_array_numel(&w) == 0) {
        cli_error("heatmap", "weights %s: shape %s holds no weights to draw", a.in, shape);
        goto done;
    }
    if (!check_weights(a.in, &w)) goto done;
    const int64_t Lq = w.shape[w.ndim - 2], Lk = w.shape[w.ndim - 1];
    const int64_t H = w.ndim >= 3 ? w.shape[w.ndim - 3] : 1, B = w.ndim == 4 ? w.shape[0] : 1;
    const int64_t heads = B * H;

    if (a.labels_q || a.labels_k) {
        const char *src[2] = {a.labels_q, a.labels_k}, *flag[2] = {"--labels-q", "--labels-k"};
        labels *dst[2] = {&lq_labels, &lk_labels};
        const int64_t want[2] = {Lq, Lk};
        for (int k = 0; k < 2; k++) {
            if (!src[k]) continue;
            if (!parse_labels(src[k], dst[k])) {
                cli_error("heatmap", "%s: out of memory", flag[k]);
                goto done;
            }
            if (dst[k]->n != want[k]) {
                cli_error("heatmap", "%s: %lld label%s, but %s has %s = %lld (shape %s)",
                          flag[k], (long long)dst[k]->n, dst[k]->n == 1 ? "" : "s", a.in,
                          k ? "Lk" : "Lq", (long long)want[k], shape);
                goto done;
            }
        }
    }

    /* Which heads: [first, first + count). */
    int64_t first = 0, count = heads;
    if (head >= 0) {
        if (head >= heads) {
            if (w.ndim == 4)
                cli_error("heatmap", "--head %lld: %s has B*H = %lld*%lld = %lld heads (0 to "
                                     "%lld; N = b*%lld + h)", (long long)head, a.in,
                          (long long)B, (long long)H, (long long)heads, (long long)heads - 1,
                          (long long)H);
            else
                cli_error("heatmap", "--head %lld: %s has %lld head%s (0 to %lld)",
                          (long long)head, a.in, (long long)heads, heads == 1 ? "" : "s",
                          (long long)heads - 1);
            goto done;
        }
        first = head, count = 1;
    } else if (fmt != FMT_HTML && a.grid && heads > MAX_GRID) {
        cli_error("heatmap", "--grid: %s has %lld heads, at most %d fit one picture; draw one "
                             "with --head N", a.in, (long long)heads, MAX_GRID);
        goto done;
    } else if (fmt != FMT_HTML && !a.grid && heads > MAX_DEFAULT_GRID) {
        cli_error("heatmap", "weights %s: %lld heads; draw one with --head N (0 to %lld) or "
                             "all with --grid (up to %d)", a.in, (long long)heads,
                  (long long)heads - 1, MAX_GRID);
        goto done;
    }

    if (w.ndim > 2) {
        names = calloc((size_t)count, sizeof *names);
        name_ptrs = calloc((size_t)count, sizeof *name_ptrs);
        if (!names || !name_ptrs) {
            cli_error("heatmap", "weights %s: out of memory", a.in);
            goto done;
        }
        for (int64_t p = 0; p < count; p++) {
            int64_t n = first + p;
            if (B > 1)
                snprintf(names[p], sizeof names[p], "b%lld h%lld", (long long)(n / H),
                         (long long)(n % H));
            else
                snprintf(names[p], sizeof names[p], "head %lld", (long long)n);
            name_ptrs[p] = names[p];
        }
    }
    char title[TEXT_BYTES];
    if (a.title) {
        display_text(a.title, TITLE_CHARS, title);
    } else {
        const char *base = strrchr(a.in, '/');
        char t[TEXT_BYTES];
        snprintf(t, sizeof t, "%s %s", base ? base + 1 : a.in, shape);
        display_text(t, TITLE_CHARS, title);
    }
    const float *sel = (const float *)w.data + first * Lq * Lk;

    if (fmt == FMT_HTML) {
        picture pic = {title, count, Lq, Lk, sel, name_ptrs,
                       a.labels_q ? (const char *const *)lq_labels.v : NULL,
                       a.labels_k ? (const char *const *)lk_labels.v : NULL};
        if (!cli_outputs_add_with(&outs, "heatmap", "-o", a.out, write_html, &pic)) goto done;
    } else {
        fig = calloc(1, sizeof *fig);
        if (!fig || !figure_init(fig, sel, count, Lq, Lk, name_ptrs,
                                 a.labels_q ? &lq_labels : NULL,
                                 a.labels_k ? &lk_labels : NULL, a.vmax ? vmax : -1,
                                 vmax_auto)) {
            cli_error("heatmap", "weights %s: out of memory", a.in);
            goto done;
        }
        memcpy(fig->title, title, sizeof title);
        layout(fig);
        cli_write_fn writer = write_svg;
        void *ctx = fig;
#ifdef QKV_HAVE_PNG
        png_job job = {fig, ""};
        if (fmt == FMT_PNG) writer = write_png, ctx = &job;
#endif
        if (!cli_outputs_add_with(&outs, "heatmap", "-o", a.out, writer, ctx)) goto done;
    }
    if (!cli_outputs_commit(&outs, "heatmap")) goto done;
    rc = CLI_OK;

done:
    cli_outputs_abort(&outs);
    qkv_array_free(&w);
    free_labels(&lq_labels);
    free_labels(&lk_labels);
    if (fig) free(fig->shown);
    free(names);
    free(name_ptrs);
    free(fig);
    return rc;
}
