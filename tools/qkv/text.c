/* UTF-8 and display text for pictures (text.h). */
#include "text.h"

uint32_t utf8_next(const unsigned char **p)
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

char *utf8_put(char *d, uint32_t c)
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

int64_t text_chars(const char *s)
{
    int64_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; n++) utf8_next(&p);
    return n;
}

int64_t display_text(const char *s, int64_t maxc, char *out)
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

int64_t text_width(const char *s, int size) { return text_chars(s) * size * 6 / 10; }
