/* Text for pictures: a UTF-8 decoder and encoder, and "display text", the
 * form every label and title takes before it is drawn (valid UTF-8 that
 * XML 1.0 accepts, cut to a length). Shared by the heatmap's figure and
 * canvas and by the attention page (html.c). */
#ifndef QKV_TEXT_H
#define QKV_TEXT_H

#include <stdint.h>

/* Labels come from the command line and may hold any bytes. Longer texts
 * are cut to these many characters; TEXT_BYTES holds the longest. */
#define LABEL_CHARS 16
#define TITLE_CHARS 100
#define TEXT_BYTES (4 * TITLE_CHARS + 1)

/* The next character of NUL-terminated UTF-8, advancing *p past it;
 * U+FFFD for a malformed sequence (overlong, surrogate, past U+10FFFF, cut
 * short), which consumes its lead and valid continuation bytes, never the
 * terminating NUL. */
uint32_t utf8_next(const unsigned char **p);

/* Writes c (at most U+10FFFF) as 1 to 4 bytes at d; returns the end. */
char *utf8_put(char *d, uint32_t c);

/* Characters in NUL-terminated UTF-8, each malformed sequence one. */
int64_t text_chars(const char *s);

/* Copies s into out (TEXT_BYTES) as UTF-8 that XML 1.0 accepts: malformed
 * bytes and control characters become U+FFFD; more than maxc characters
 * (maxc <= TITLE_CHARS) are cut to maxc, the last an ellipsis. Returns the
 * character count. Applied twice it changes nothing more. */
int64_t display_text(const char *s, int64_t maxc, char *out);

/* The width in units of a line of text of font size `size` (10: labels,
 * 15: the title). Widths assume a monospace font whose advance is 0.6 em,
 * as the PNG font's is (font.h). */
int64_t text_width(const char *s, int size);

#endif
