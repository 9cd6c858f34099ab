/* The attention weights a picture shows, whatever draws it (heatmap.c:
 * SVG and PNG; html.c: the interactive page): `heads` matrices of Lq x Lk
 * weights with optional token labels. Both `qkv heatmap` and
 * `qkv explain --html` fill one of these. */
#ifndef QKV_PICTURE_H
#define QKV_PICTURE_H

#include <stdint.h>
#include <stdio.h>

typedef struct picture {
    const char *title;          /* shown above the picture; may be NULL */
    int64_t heads, lq, lk;      /* w holds heads * lq * lk floats, C order */
    const float *w;
    const char *const *head_names; /* `heads` names ("b0 h3"), or NULL */
    const char *const *labels_q;   /* lq query token labels, or NULL (0, 1, ...) */
    const char *const *labels_k;   /* lk key token labels, or NULL */
} picture;

/* The interactive page: one self-contained HTML document (no network) that
 * shows the tokens and, on hover or click of a query token, shades each key
 * by its weight, per head. intro_html (may be NULL) is trusted HTML placed
 * under the title. Returns NULL on success or a reason, as cli_write_fn does.
 * Implemented in html.c. */
const char *picture_write_html(const char *path, const picture *p, const char *intro_html);

#endif
