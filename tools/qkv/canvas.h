/* What the heatmap's figure is drawn on: a table of drawing operations in
 * integer units (canvas_ops) with two backends, an SVG document written as
 * it is drawn and an RGB bitmap at CANVAS_PX pixels per unit, saved as PNG.
 * Whole units make both show the same layout and bitmap cells whole
 * pixels. A test may bring its own table to see what is drawn where. */
#ifndef QKV_CANVAS_H
#define QKV_CANVAS_H

#include "colour.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CANVAS_PX 2

enum { ANCHOR_START, ANCHOR_MIDDLE, ANCHOR_END };

/* Every text is display text (text.h). `self` is the backend's state. */
typedef struct canvas_ops {
    /* The picture opens, w x h units, titled `title`; end closes it. */
    void (*begin)(void *self, int64_t w, int64_t h, const char *title);
    void (*end)(void *self);
    /* A filled rectangle; tip (NULL: none) is its tooltip. */
    void (*rect)(void *self, int64_t x, int64_t y, int64_t w, int64_t h, rgb c, const char *tip);
    /* One line of text of font size `size` with its baseline at (x, y),
     * placed by anchor; vertical text reads upwards from (x, y), the
     * glyphs' tops to the left. */
    void (*text)(void *self, int64_t x, int64_t y, const char *s, int size, int anchor,
                 int vertical, int bold, rgb c);
    /* The colour scale as a bar, lut[0] at the bottom, lut[RAMP_LEVELS-1]
     * at the top. */
    void (*ramp_bar)(void *self, int64_t x, int64_t y, int64_t w, int64_t h,
                     const rgb lut[RAMP_LEVELS]);
    /* What is drawn until group_end belongs to the group called `name`. */
    void (*group_begin)(void *self, const char *name);
    void (*group_end)(void *self);
    int tooltips; /* 0: rect ignores tips, so callers need not make them */
} canvas_ops;

typedef struct canvas {
    const canvas_ops *ops;
    void *self;
} canvas;

/* The calls a figure makes, each through cv's table. */
void cv_begin(const canvas *cv, int64_t w, int64_t h, const char *title);
void cv_end(const canvas *cv);
void cv_rect(const canvas *cv, int64_t x, int64_t y, int64_t w, int64_t h, rgb c);
void cv_rect_tip(const canvas *cv, int64_t x, int64_t y, int64_t w, int64_t h, rgb c,
                 const char *tip);
void cv_text(const canvas *cv, int64_t x, int64_t y, const char *s, int size, int anchor,
             int vertical, int bold, rgb c);
void cv_ramp_bar(const canvas *cv, int64_t x, int64_t y, int64_t w, int64_t h,
                 const rgb lut[RAMP_LEVELS]);
void cv_group_begin(const canvas *cv, const char *name);
void cv_group_end(const canvas *cv);
int cv_tooltips(const canvas *cv);

/* SVG: the document goes to f as it is drawn; write errors stay in f's
 * error flag. Text is left to the viewer's monospace font. */
canvas canvas_svg(FILE *f);

/* The bitmap: w x h pixels, 3 bytes (R, G, B) each, row-major; text in
 * the 5x7 font of font.h. */
typedef struct bitmap {
    uint8_t *px;
    int64_t w, h;
} bitmap;

/* A white bitmap for a picture of w x h units (CANVAS_PX pixels each);
 * returns 0 when out of memory. bitmap_free frees it. */
int bitmap_init(bitmap *b, int64_t w_units, int64_t h_units);
void bitmap_free(bitmap *b);
canvas canvas_bitmap(bitmap *b);

#ifdef QKV_HAVE_PNG
/* Writes b to path as an 8-bit RGB PNG. Returns NULL on success, else the
 * reason: strerror's, or libpng's written into why (len bytes). */
const char *bitmap_write_png(const bitmap *b, const char *path, char *why, size_t len);
#endif

#endif
