/* The bitmap font the heatmap's PNG backend (canvas.c) draws text with:
 * 5x7 glyphs with two rows of descender, ASCII 32-126 and a few more. */
#ifndef QKV_FONT_H
#define QKV_FONT_H

#include <stdint.h>

/* A glyph is FONT_ROWS bytes, one a pixel row from the top, bit 4 the
 * leftmost of FONT_COLS pixels; the baseline lies under row FONT_BASELINE-1.
 * Glyphs advance FONT_ADVANCE pixels: 0.6 em at 10 font pixels to the em,
 * what text_width (text.h) assumes. */
enum { FONT_COLS = 5, FONT_ROWS = 9, FONT_BASELINE = 7, FONT_ADVANCE = 6 };

/* The glyph of character c: its own for ASCII 32-126, the ellipsis U+2026
 * and the multiplication sign U+00D7, a box for any other. */
const uint8_t *font_glyph(uint32_t c);

#endif
