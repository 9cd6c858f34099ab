/* The attention page's style sheet and script, page.css and page.js
 * beside this header, as bytes: the build writes them into a C source
 * (cmake/embed.cmake) that html.c's writer copies into every page. */
#ifndef QKV_PAGE_H
#define QKV_PAGE_H

#include <stddef.h>

extern const unsigned char page_css[]; /* page_css_len bytes, then a NUL */
extern const size_t page_css_len;
extern const unsigned char page_js[];  /* page_js_len bytes, then a NUL */
extern const size_t page_js_len;

#endif
