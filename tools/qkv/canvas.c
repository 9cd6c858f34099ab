/* The canvas's two backends (canvas.h): an SVG writer and an RGB bitmap
 * with its PNG writer (libpng, when built with it). */
#include "canvas.h"

#include "font.h"
#include "text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef QKV_HAVE_PNG
#include <png.h>
#endif

void cv_begin(const canvas *cv, int64_t w, int64_t h, const char *title)
{
    cv->ops->begin(cv->self, w, h, title);
}

void cv_end(const canvas *cv) { cv->ops->end(cv->self); }

void cv_rect(const canvas *cv, int64_t x, int64_t y, int64_t w, int64_t h, rgb c)
{
    cv->ops->rect(cv->self, x, y, w, h, c, NULL);
}

void cv_rect_tip(const canvas *cv, int64_t x, int64_t y, int64_t w, int64_t h, rgb c,
                 const char *tip)
{
    cv->ops->rect(cv->self, x, y, w, h, c, tip);
}

void cv_text(const canvas *cv, int64_t x, int64_t y, const char *s, int size, int anchor,
             int vertical, int bold, rgb c)
{
    cv->ops->text(cv->self, x, y, s, size, anchor, vertical, bold, c);
}

void cv_ramp_bar(const canvas *cv, int64_t x, int64_t y, int64_t w, int64_t h,
                 const rgb lut[RAMP_LEVELS])
{
    cv->ops->ramp_bar(cv->self, x, y, w, h, lut);
}

void cv_group_begin(const canvas *cv, const char *name) { cv->ops->group_begin(cv->self, name); }

void cv_group_end(const canvas *cv) { cv->ops->group_end(cv->self); }

int cv_tooltips(const canvas *cv) { return cv->ops->tooltips; }

/* ------------------------------------------------------------------- SVG */

static int same_rgb(rgb a, rgb b) { return a.r == b.r && a.g == b.g && a.b == b.b; }

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

/* The root sets the monospace font, size 10 and INK, which texts then
 * leave out; the legend's gradient runs through the scale's anchors. */
static void svg_begin(void *self, int64_t w, int64_t h, const char *title)
{
    FILE *f = self;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%lld\" height=\"%lld\" "
            "viewBox=\"0 0 %lld %lld\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, "
            "monospace\" font-size=\"10\" fill=\"#%02x%02x%02x\">\n<title>",
            (long long)w, (long long)h, (long long)w, (long long)h, INK.r, INK.g, INK.b);
    svg_escaped(f, title);
    fputs("</title>\n<defs><linearGradient id=\"qkv-ramp\" x1=\"0\" y1=\"1\" x2=\"0\" "
          "y2=\"0\">\n",
          f);
    for (int i = 0; i < RAMP_ANCHORS; i++)
        fprintf(f, "<stop offset=\"%.4f\" stop-color=\"#%02x%02x%02x\"/>\n",
                (double)i / (RAMP_ANCHORS - 1), ramp_anchor[i].r, ramp_anchor[i].g,
                ramp_anchor[i].b);
    fputs("</linearGradient></defs>\n", f);
}

static void svg_end(void *self) { fputs("</svg>\n", (FILE *)self); }

static void svg_rect(void *self, int64_t x, int64_t y, int64_t w, int64_t h, rgb c,
                     const char *tip)
{
    FILE *f = self;
    fprintf(f, "<rect x=\"%lld\" y=\"%lld\" width=\"%lld\" height=\"%lld\" fill=\"#%02x%02x%02x\"",
            (long long)x, (long long)y, (long long)w, (long long)h, c.r, c.g, c.b);
    if (!tip) {
        fputs("/>\n", f);
        return;
    }
    fputs("><title>", f);
    svg_escaped(f, tip);
    fputs("</title></rect>\n", f);
}

static void svg_text(void *self, int64_t x, int64_t y, const char *s, int size, int anchor,
                     int vertical, int bold, rgb c)
{
    FILE *f = self;
    fprintf(f, "<text x=\"%lld\" y=\"%lld\"", (long long)x, (long long)y);
    if (anchor != ANCHOR_START)
        fprintf(f, " text-anchor=\"%s\"", anchor == ANCHOR_MIDDLE ? "middle" : "end");
    if (size != 10) fprintf(f, " font-size=\"%d\"", size);
    if (bold) fputs(" font-weight=\"bold\"", f);
    if (!same_rgb(c, INK)) fprintf(f, " fill=\"#%02x%02x%02x\"", c.r, c.g, c.b);
    if (vertical) fprintf(f, " transform=\"rotate(-90 %lld %lld)\"", (long long)x, (long long)y);
    fputc('>', f);
    svg_escaped(f, s);
    fputs("</text>\n", f);
}

/* The gradient svg_begin defined; lut is for the bitmap. */
static void svg_ramp_bar(void *self, int64_t x, int64_t y, int64_t w, int64_t h,
                         const rgb lut[RAMP_LEVELS])
{
    (void)lut;
    fprintf((FILE *)self, "<rect id=\"legend-bar\" x=\"%lld\" y=\"%lld\" width=\"%lld\" "
                          "height=\"%lld\" fill=\"url(#qkv-ramp)\"/>\n",
            (long long)x, (long long)y, (long long)w, (long long)h);
}

static void svg_group_begin(void *self, const char *name)
{
    fprintf((FILE *)self, "<g class=\"%s\">\n", name);
}

static void svg_group_end(void *self) { fputs("</g>\n", (FILE *)self); }

static const canvas_ops svg_ops = {
    svg_begin, svg_end, svg_rect, svg_text, svg_ramp_bar, svg_group_begin, svg_group_end, 1,
};

canvas canvas_svg(FILE *f) { return (canvas){&svg_ops, f}; }

/* ---------------------------------------------------------------- bitmap */

int bitmap_init(bitmap *b, int64_t w_units, int64_t h_units)
{
    b->w = w_units * CANVAS_PX, b->h = h_units * CANVAS_PX;
    b->px = malloc((size_t)(b->w * b->h * 3));
    if (!b->px) return 0;
    memset(b->px, 255, (size_t)(b->w * b->h * 3));
    return 1;
}

void bitmap_free(bitmap *b)
{
    free(b->px);
    b->px = NULL;
}

/* A rectangle in pixels, clipped to the bitmap. */
static void px_fill(bitmap *b, int64_t x, int64_t y, int64_t w, int64_t h, rgb c)
{
    int64_t x1 = x + w, y1 = y + h;
    if (x < 0) x = 0;
    if (y < 0) y = 0;
    if (x1 > b->w) x1 = b->w;
    if (y1 > b->h) y1 = b->h;
    for (int64_t yy = y; yy < y1; yy++)
        for (int64_t xx = x; xx < x1; xx++) {
            uint8_t *p = b->px + (yy * b->w + xx) * 3;
            p[0] = c.r, p[1] = c.g, p[2] = c.b;
        }
}

static void bm_nothing(void *self) { (void)self; }

static void bm_begin(void *self, int64_t w, int64_t h, const char *title)
{
    (void)self, (void)w, (void)h, (void)title;
}

static void bm_rect(void *self, int64_t x, int64_t y, int64_t w, int64_t h, rgb c,
                    const char *tip)
{
    (void)tip;
    px_fill(self, x * CANVAS_PX, y * CANVAS_PX, w * CANVAS_PX, h * CANVAS_PX, c);
}

/* Each font pixel is gp x gp bitmap pixels, one wider across the text
 * when bold. */
static void bm_text(void *self, int64_t x, int64_t y, const char *s, int size, int anchor,
                    int vertical, int bold, rgb c)
{
    int64_t gp = size * CANVAS_PX / 10; /* pixels per font pixel */
    int64_t width = text_chars(s) * FONT_ADVANCE * gp - gp;
    int64_t pos = anchor == ANCHOR_MIDDLE ? -width / 2 : anchor == ANCHOR_END ? -width : 0;
    x *= CANVAS_PX;
    y *= CANVAS_PX;
    for (const unsigned char *p = (const unsigned char *)s; *p; pos += FONT_ADVANCE * gp) {
        const uint8_t *g = font_glyph(utf8_next(&p));
        for (int r = 0; r < FONT_ROWS; r++)
            for (int col = 0; col < FONT_COLS; col++) {
                if (!(g[r] & (1 << (FONT_COLS - 1 - col)))) continue;
                /* (tx, ty): along the text and down from the baseline */
                int64_t tx = pos + col * gp, ty = (r - FONT_BASELINE) * gp;
                if (vertical)
                    px_fill(self, x + ty, y - tx - gp - bold, gp, gp + bold, c);
                else
                    px_fill(self, x + tx, y + ty, gp + bold, gp, c);
            }
    }
}

/* One level per pixel row, the top row the top level. */
static void bm_ramp_bar(void *self, int64_t x, int64_t y, int64_t w, int64_t h,
                        const rgb lut[RAMP_LEVELS])
{
    int64_t rows = h * CANVAS_PX;
    for (int64_t r = 0; r < rows; r++) {
        int level = rows == 1 ? RAMP_LEVELS - 1
                              : (int)(((rows - 1 - r) * (RAMP_LEVELS - 1) + (rows - 1) / 2) /
                                      (rows - 1));
        px_fill(self, x * CANVAS_PX, y * CANVAS_PX + r, w * CANVAS_PX, 1, lut[level]);
    }
}

static void bm_group_begin(void *self, const char *name) { (void)self, (void)name; }

static const canvas_ops bitmap_ops = {
    bm_begin, bm_nothing, bm_rect, bm_text, bm_ramp_bar, bm_group_begin, bm_nothing, 0,
};

canvas canvas_bitmap(bitmap *b) { return (canvas){&bitmap_ops, b}; }

#ifdef QKV_HAVE_PNG
typedef struct png_why {
    char *buf;
    size_t len;
} png_why;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_why *why = png_get_error_ptr(png);
    snprintf(why->buf, why->len, "libpng: %s", msg);
    png_longjmp(png, 1);
}

/* Warnings would break the CLI's one-line stderr contract; errors are
 * reported. */
static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

const char *bitmap_write_png(const bitmap *b, const char *path, char *why, size_t len)
{
    png_why reason = {why, len};
    FILE *f = fopen(path, "wb");
    if (!f) return strerror(errno);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &reason, png_on_error,
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
        return why;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)b->w, (png_uint_32)b->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int64_t y = 0; y < b->h; y++) png_write_row(png, b->px + y * b->w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) return strerror(errno);
    return NULL;
}
#endif
