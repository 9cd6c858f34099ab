/* The interactive attention page (`qkv heatmap -o page.html`, `qkv explain
 * --html`): one self-contained HTML file, no network (a Content-Security-
 * Policy forbids it): the style sheet and script of page/ inline (the
 * build embeds them, cmake/embed.cmake), the weights embedded as JSON.
 * Hovering or clicking a query token shades each key by its weight and
 * draws curves to the strongest keys; a table or canvas shows the selected
 * head's whole matrix and its row sums.
 *
 * What tests and scripts may rely on, once the page's script has run:
 *   <body data-ready="1">            the script ran to its end
 *   [data-q="i"]                     query token i; class "sel" on the
 *                                    selected one, "peek" on a hovered one
 *   [data-k="j"] data-w="..."        key token j and the weight it shows
 *                                    (data-w follows data-k in the tag)
 *   [data-head="h"]                  head buttons (only with 2+ heads),
 *                                    class "on" on the selected one
 *   #qkv-status data-head, data-q    the head and query shown, and in words
 *   #qkv-sums data-min, data-max     the smallest and largest row sum
 *   path.ln                          the curves (at most 64, 16 when many)
 * and the URL fragment: #head=H&q=Q selects as a click does; #clickhead=H,
 * #click=Q and #hover=Q dispatch real events on those elements. */
#include "picture.h"
#include "text.h"
#include "page/page.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Limits past which the page would be too heavy for a browser. */
#define PAGE_MAX_DATA ((uint64_t)64 << 20) /* bytes of embedded JSON */
#define PAGE_MAX_TOKENS 16384              /* query or key tokens */
#define PAGE_MAX_HEADS 1024
#define PAGE_MANY_TOKENS 96                /* past this, compact tokens */

/* Output that either writes to f or, with f NULL, only counts bytes (to
 * size the JSON before writing it). Write errors stay in f's error flag. */
typedef struct sink {
    FILE *f;
    uint64_t n;
} sink;

static void put_n(sink *s, const char *p, size_t len)
{
    s->n += len;
    if (s->f) fwrite(p, 1, len, s->f);
}

static void put(sink *s, const char *p) { put_n(s, p, strlen(p)); }

static void put_i64(sink *s, int64_t v)
{
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%lld", (long long)v);
    put_n(s, buf, (size_t)len);
}

static void put_cp(sink *s, uint32_t cp)
{
    char b[4];
    put_n(s, b, (size_t)(utf8_put(b, cp) - b));
}

/* Tokens often hold newlines and tabs: shown as visible symbols, as are
 * the other control characters (Unicode's control pictures). */
static uint32_t visible_cp(uint32_t cp)
{
    if (cp == '\n') return 0x21B5; /* ↵ */
    if (cp == '\t') return 0x21E5; /* ⇥ */
    if (cp < 0x20) return 0x2400 + cp;
    if (cp == 0x7F) return 0x2421;
    return cp;
}

/* Text for HTML content or a quoted attribute value. */
static void put_html(sink *s, const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    while (*p) {
        uint32_t cp = visible_cp(utf8_next(&p));
        switch (cp) {
        case '&': put(s, "&amp;"); break;
        case '<': put(s, "&lt;"); break;
        case '>': put(s, "&gt;"); break;
        case '"': put(s, "&quot;"); break;
        case '\'': put(s, "&#39;"); break;
        default: put_cp(s, cp);
        }
    }
}

/* A JSON string that is also safe inside a <script> element: no '<' (so
 * no "</script>" or "<!--"), no '>' or '&', and no U+2028/U+2029. */
static void put_json_string(sink *s, const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    put(s, "\"");
    while (*p) {
        uint32_t cp = visible_cp(utf8_next(&p));
        if (cp == '"') {
            put(s, "\\\"");
        } else if (cp == '\\') {
            put(s, "\\\\");
        } else if (cp < 0x20 || cp == '<' || cp == '>' || cp == '&' || cp == 0x2028 ||
                   cp == 0x2029) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\u%04x", (unsigned)cp);
            put_n(s, buf, 6);
        } else {
            put_cp(s, cp);
        }
    }
    put(s, "\"");
}

static void put_json_labels(sink *s, const char *const *labels, int64_t n)
{
    if (!labels) {
        put(s, "null");
        return;
    }
    put(s, "[");
    for (int64_t i = 0; i < n; i++) {
        if (i) put(s, ",");
        put_json_string(s, labels[i] ? labels[i] : "");
    }
    put(s, "]");
}

/* Four significant digits: enough to read, a third of the bytes of %.9g.
 * JSON has no NaN or infinity: those become null. */
static void put_weight(sink *s, float w)
{
    char buf[32];
    if (!isfinite(w)) {
        put(s, "null");
    } else if (w == 0) {
        put(s, "0");
    } else {
        int len = snprintf(buf, sizeof buf, "%.4g", (double)w);
        put_n(s, buf, (size_t)len);
    }
}

/* {"heads":H,"lq":LQ,"lk":LK,"names":[..]|null,"q":[..]|null,"k":[..]|null,
 *  "w":[[head 0, Lq*Lk weights in C order], ...]} */
static void put_json(sink *s, const picture *p)
{
    put(s, "{\"heads\":");
    put_i64(s, p->heads);
    put(s, ",\"lq\":");
    put_i64(s, p->lq);
    put(s, ",\"lk\":");
    put_i64(s, p->lk);
    put(s, ",\n\"names\":");
    put_json_labels(s, p->head_names, p->heads);
    put(s, ",\n\"q\":");
    put_json_labels(s, p->labels_q, p->lq);
    put(s, ",\n\"k\":");
    put_json_labels(s, p->labels_k, p->lk);
    put(s, ",\n\"w\":[");
    int64_t per_head = p->lq * p->lk;
    for (int64_t h = 0; h < p->heads; h++) {
        put(s, h ? ",\n[" : "\n[");
        for (int64_t i = 0; i < per_head; i++) {
            if (!s->f && s->n > PAGE_MAX_DATA) return; /* sizing: too large already */
            if (i) put(s, i % p->lk == 0 ? ",\n" : ",");
            put_weight(s, p->w[h * per_head + i]);
        }
        put(s, "]");
    }
    put(s, "]}");
}

static void put_label_or_index(sink *s, const char *const *labels, int64_t i)
{
    if (labels)
        put_html(s, labels[i] ? labels[i] : "");
    else
        put_i64(s, i);
}

/* Checks the picture before anything is written; NULL when it can be
 * drawn. The weights are not read here. */
static const char *check_picture(const picture *p)
{
    if (p->heads < 0 || p->lq < 0 || p->lk < 0) return "negative dimension in the weights";
    if (p->heads > PAGE_MAX_HEADS) return "too many heads for the page (at most 1024)";
    if (p->lq > PAGE_MAX_TOKENS || p->lk > PAGE_MAX_TOKENS)
        return "too many tokens for the page (at most 16384 queries and 16384 keys)";
    /* Each weight takes at least two bytes of JSON ("0,"). */
    uint64_t n = (uint64_t)p->heads * (uint64_t)p->lq * (uint64_t)p->lk;
    if (n > PAGE_MAX_DATA / 2) return "weights too large for the page (over 64 MiB of JSON)";
    if (n && !p->w) return "no weights to draw";
    return NULL;
}

const char *picture_write_html(const char *path, const picture *p, const char *intro_html)
{
    if (!path || !p) return "no picture to write";
    const char *bad = check_picture(p);
    if (bad) return bad;
    sink count = {NULL, 0};
    put_json(&count, p);
    if (count.n > PAGE_MAX_DATA) return "weights too large for the page (over 64 MiB of JSON)";

    FILE *f = fopen(path, "w");
    if (!f) return strerror(errno);
    errno = 0;
    sink s = {f, 0};
    const char *title = p->title && p->title[0] ? p->title : "Attention weights";
    int many = p->lq > PAGE_MANY_TOKENS || p->lk > PAGE_MANY_TOKENS;

    put(&s, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            /* Nothing may load from anywhere: the page is all there is. */
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n"
            "<title>");
    put_html(&s, title);
    put(&s, "</title>\n<style>\n");
    put_n(&s, (const char *)page_css, page_css_len);
    put(&s, "</style>\n</head>\n<body data-ready=\"0\">\n<main>\n");
    put(&s, "<h1>");
    put_html(&s, title);
    put(&s, "</h1>\n");
    if (intro_html) {
        put(&s, "<div class=\"intro\">\n");
        put(&s, intro_html);
        put(&s, "\n</div>\n");
    }
    put(&s, "<p class=\"meta\">");
    put_i64(&s, p->heads);
    put(&s, p->heads == 1 ? " head · " : " heads · ");
    put_i64(&s, p->lq);
    put(&s, p->lq == 1 ? " query × " : " queries × ");
    put_i64(&s, p->lk);
    put(&s, p->lk == 1 ? " key" : " keys");
    put(&s, "</p>\n");

    if (p->heads > 1) {
        put(&s, "<div class=\"heads\" id=\"qkv-heads\" title=\"[ and ] step through the heads\">"
                "<span class=\"hint\">Head</span>\n");
        for (int64_t h = 0; h < p->heads; h++) {
            put(&s, "<button type=\"button\" class=\"head\" data-head=\"");
            put_i64(&s, h);
            put(&s, "\" aria-pressed=\"false\">");
            put_label_or_index(&s, p->head_names, h);
            put(&s, "</button>\n");
        }
        put(&s, "</div>\n");
    }

    put(&s, many ? "<div class=\"stage many\" id=\"qkv-stage\">\n"
                 : "<div class=\"stage\" id=\"qkv-stage\">\n");
    put(&s, "<svg class=\"lines\" id=\"qkv-lines\" aria-hidden=\"true\"></svg>\n"
            "<div class=\"cap\">Queries <span class=\"hint\">· hover or click a token; "
            "← → step through them</span></div>\n"
            "<div class=\"row\" id=\"qkv-queries\">\n");
    for (int64_t i = 0; i < p->lq; i++) {
        put(&s, "<span class=\"tok q\" data-q=\"");
        put_i64(&s, i);
        put(&s, "\">");
        put_label_or_index(&s, p->labels_q, i);
        put(&s, "</span>\n");
    }
    if (p->lq == 0) put(&s, "<span class=\"empty\">no query tokens</span>\n");
    put(&s, "</div>\n<div class=\"gap\"></div>\n<div class=\"row\" id=\"qkv-keys\">\n");
    for (int64_t j = 0; j < p->lk; j++) {
        put(&s, "<span class=\"tok k\" data-k=\"");
        put_i64(&s, j);
        put(&s, "\" data-w=\"\"><span class=\"t\">");
        put_label_or_index(&s, p->labels_k, j);
        put(&s, "</span><span class=\"w\"></span></span>\n");
    }
    if (p->lk == 0) put(&s, "<span class=\"empty\">no keys</span>\n");
    put(&s, "</div>\n<div class=\"cap\">Keys <span class=\"hint\">· shade and curves: "
            "weight ÷ the largest of the row; number: the weight</span></div>\n</div>\n"
            "<p class=\"status\" id=\"qkv-status\" data-head=\"\" data-q=\"\" role=\"status\">"
            "This page needs JavaScript to show the weights.</p>\n"
            "<h2 id=\"qkv-heat-title\">Every weight</h2>\n"
            "<div id=\"qkv-heat\"></div>\n"
            "<p class=\"note\" id=\"qkv-sums\" data-min=\"\" data-max=\"\"></p>\n"
            "<footer>Written by qkv. Self-contained: it loads nothing from the network.</footer>\n"
            "</main>\n<script type=\"application/json\" id=\"qkv-data\">\n");
    put_json(&s, p);
    put(&s, "\n</script>\n<script>\n");
    put_n(&s, (const char *)page_js, page_js_len);
    put(&s, "</script>\n</body>\n</html>\n");

    if (ferror(f)) {
        int e = errno;
        fclose(f);
        return e ? strerror(e) : "write error";
    }
    if (fclose(f) != 0) return strerror(errno);
    return NULL;
}
