/* The interactive attention page (`qkv heatmap -o page.html`, `qkv explain
 * --html`): one self-contained HTML file, inline CSS and JS, no network
 * (a Content-Security-Policy forbids it), the weights embedded as JSON.
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

/* Decodes one UTF-8 sequence at s (NUL-terminated); an invalid or
 * truncated one gives U+FFFD and consumes its lead and valid
 * continuation bytes, never the NUL. Returns the bytes consumed. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
    unsigned c = s[0];
    int n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3, v = c & 0x07, min = 0x10000;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    for (int i = 1; i <= n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return (size_t)i;
        }
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    *cp = (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) ? 0xFFFD : v;
    return (size_t)n + 1;
}

static void put_cp(sink *s, uint32_t cp)
{
    char b[4];
    size_t len;
    if (cp < 0x80) {
        b[0] = (char)cp, len = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6)), b[1] = (char)(0x80 | (cp & 0x3F)), len = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12)), b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F)), len = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18)), b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[3] = (char)(0x80 | (cp & 0x3F)), len = 4;
    }
    put_n(s, b, len);
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
        uint32_t cp;
        p += utf8_next(p, &cp);
        cp = visible_cp(cp);
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
        uint32_t cp;
        p += utf8_next(p, &cp);
        cp = visible_cp(cp);
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

static const char *const page_css[] = {
    ":root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;",
    "        --accent: #0969da; --q: #8250df; }",
    "* { box-sizing: border-box; }",
    "body { margin: 0; background: #fff; color: var(--ink);",
    "       font: 15px/1.5 'DejaVu Sans', system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; }",
    "main { max-width: 1180px; margin: 0 auto; padding: 20px 28px 40px; }",
    "h1 { font-size: 1.45em; margin: 0.2em 0 0.1em; }",
    "h2 { font-size: 1.05em; margin: 1.8em 0 0.4em; }",
    ".meta, .hint, .note, footer { color: var(--muted); font-size: 0.875em; }",
    ".meta { margin: 0 0 0.8em; }",
    ".heads { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 0 0 1em; }",
    ".heads button { font: inherit; font-size: 0.85em; padding: 1px 12px; cursor: pointer;",
    "                border: 1px solid var(--line); border-radius: 999px; background: var(--soft);",
    "                color: var(--ink); }",
    ".heads button:hover { border-color: var(--accent); }",
    ".heads button.on { background: var(--accent); border-color: var(--accent); color: #fff; }",
    ".stage { position: relative; }",
    ".lines { position: absolute; left: 0; top: 0; pointer-events: none; overflow: visible; }",
    ".lines path { fill: none; stroke: var(--accent); }",
    ".cap { position: relative; font-weight: 600; font-size: 0.9em; margin: 0.3em 0; }",
    ".cap .hint { font-weight: normal; }",
    ".row { position: relative; display: flex; flex-wrap: wrap; align-items: flex-start; gap: 6px 5px; }",
    ".gap { height: 72px; }",
    ".tok { font: 13px/1.35 'DejaVu Sans Mono', ui-monospace, Menlo, Consolas, monospace;",
    "       white-space: pre; overflow: hidden; text-overflow: ellipsis; max-width: 16em;",
    "       min-width: 2.4em; text-align: center; padding: 3px 7px; background: #fff;",
    "       border: 1px solid var(--line); border-radius: 6px; }",
    ".tok.q { cursor: pointer; }",
    ".tok.q:hover, .tok.q.peek { border-color: var(--q); box-shadow: 0 0 0 1px var(--q); }",
    ".tok.q.sel { background: var(--q); border-color: var(--q); color: #fff; }",
    ".tok.k { display: flex; flex-direction: column; align-items: center; }",
    ".tok.k .t { max-width: 100%; overflow: hidden; text-overflow: ellipsis; }",
    ".tok.k .w { font-size: 10px; line-height: 1.2; color: var(--muted); }",
    ".tok.k.dark { color: #fff; border-color: transparent; }",
    ".tok.k.dark .w { color: #dbe9ff; }",
    ".many .tok { font-size: 11.5px; padding: 1px 4px; min-width: 1.8em; max-width: 10em; }",
    ".many .tok.k .w { display: none; }",
    ".many .row { gap: 4px 3px; }",
    ".empty { color: var(--muted); font-style: italic; font-size: 0.9em; }",
    ".status { margin: 1.2em 0 0; padding: 8px 12px; background: var(--soft);",
    "          border-left: 3px solid var(--q); border-radius: 4px; }",
    ".heat { border-collapse: collapse; font: 11px/1 'DejaVu Sans Mono', ui-monospace, monospace; }",
    ".heat td { width: 1.6em; height: 1.6em; border: 1px solid #fff; text-align: center; }",
    ".heat.numbers td { width: 3.4em; height: 2em; }",
    ".heat td.dark { color: #fff; }",
    ".heat th { font-weight: normal; color: var(--muted); white-space: pre; max-width: 12em;",
    "           overflow: hidden; text-overflow: ellipsis; padding: 0 8px 0 0; text-align: right; }",
    ".heat thead th { vertical-align: bottom; text-align: center; padding: 0 0 4px; }",
    ".heat thead th span { display: inline-block; writing-mode: vertical-rl; transform: rotate(180deg);",
    "                      max-height: 9em; overflow: hidden; text-overflow: ellipsis; }",
    ".heat tbody tr { cursor: pointer; }",
    ".heat tr.sel th { color: var(--q); font-weight: bold; }",
    ".heat tr.sel td:not(.sum) { border-top: 2px solid var(--q); border-bottom: 2px solid var(--q); }",
    ".heat td.sum { width: auto; padding: 0 0 0 10px; text-align: left; color: var(--ink); }",
    ".heat-wrap { position: relative; display: inline-block; max-width: 100%; }",
    ".heat-img { display: block; max-width: 100%; image-rendering: pixelated; cursor: crosshair;",
    "            border: 1px solid var(--line); }",
    ".rowmark { position: absolute; left: -5px; right: -5px; pointer-events: none;",
    "           border: 2px solid var(--q); border-radius: 2px; }",
    "footer { margin-top: 2.5em; padding-top: 0.6em; border-top: 1px solid var(--line); }",
    NULL,
};

static const char *const page_js[] = {
    "(function () {",
    "  \"use strict\";",
    "  var D = JSON.parse(document.getElementById(\"qkv-data\").textContent);",
    "  var H = D.heads, LQ = D.lq, LK = D.lk;",
    "  var TABLE_MAX = 40;",
    "  function $(id) { return document.getElementById(id); }",
    "  var qBox = $(\"qkv-queries\"), kBox = $(\"qkv-keys\"), headBox = $(\"qkv-heads\");",
    "  var qEls = qBox.querySelectorAll(\"[data-q]\"), kEls = kBox.querySelectorAll(\"[data-k]\");",
    "  var hEls = headBox ? headBox.querySelectorAll(\"[data-head]\") : [];",
    "  var stage = $(\"qkv-stage\"), svg = $(\"qkv-lines\"), status = $(\"qkv-status\");",
    "  var heat = $(\"qkv-heat\"), heatTitle = $(\"qkv-heat-title\"), sums = $(\"qkv-sums\");",
    "  var head = 0, sel = LQ > 0 ? 0 : -1, shown = -1, row = [], rowMax = 0;",
    "  var trs = [], mark = null, started = false;",
    "  /* Past a few dozen curves the picture is a tangle: fewer with many tokens. */",
    "  var MAXLINES = stage.classList.contains(\"many\") ? 16 : 64;",
    "",
    "  function lab(a, i) { return a ? a[i] : String(i); }",
    "  function hname(h) { return D.names ? D.names[h] : \"Head \" + h; }",
    "  function wt(h, q, k) { var v = D.w[h][q * LK + k]; return typeof v === \"number\" ? v : NaN; }",
    "  function num(v, d) { return isFinite(v) ? v.toFixed(d) : \"NaN\"; }",
    "  function small(v) {",
    "    if (!isFinite(v)) return \"NaN\";",
    "    if (v === 0) return \"0\";",
    "    if (v > 0 && v < 0.005) return \"<0.01\";",
    "    return v.toFixed(2);",
    "  }",
    "  /* 0 -> white, 1 -> the accent blue rgb(9, 105, 218). */",
    "  function shade(a) {",
    "    a = isFinite(a) ? Math.max(0, Math.min(1, a)) : 0;",
    "    return \"rgb(\" + Math.round(255 - 246 * a) + \",\" + Math.round(255 - 150 * a) + \",\" +",
    "           Math.round(255 - 37 * a) + \")\";",
    "  }",
    "  function qname(q) { return \"query \" + q + \" “\" + lab(D.q, q) + \"”\"; }",
    "  function kname(k) { return \"key \" + k + \" “\" + lab(D.k, k) + \"”\"; }",
    "",
    "  function describe(q, top, max, sum) {",
    "    if (H === 0) return \"There are no heads to show.\";",
    "    if (LQ === 0) return \"There are no query tokens.\";",
    "    var s = H > 1 ? hname(head) + \": \" + qname(q) : \"Q\" + qname(q).slice(1);",
    "    if (LK === 0) return s + \" has no keys to attend to.\";",
    "    if (!(max > 0)) return s + \" attends to no key: its weights are all 0 (every key is masked).\";",
    "    return s + \" attends most to \" + kname(top) + \" (\" + num(max, 3) + \"); its \" + LK +",
    "           \" weights sum to \" + num(sum, 3) + \".\";",
    "  }",
    "",
    "  /* Shows query q's weights on the keys: the one code path for hover, click,",
    "   * keys and the URL fragment. */",
    "  function render(q) {",
    "    var i, v, a, el, max = 0, sum = 0, top = -1, have = H > 0 && q >= 0 && q < LQ;",
    "    shown = q;",
    "    row = [];",
    "    if (have) {",
    "      for (i = 0; i < LK; i++) {",
    "        v = wt(head, q, i);",
    "        row.push(v);",
    "        if (isFinite(v)) {",
    "          sum += v;",
    "          if (top < 0 || v > max) { max = v; top = i; }",
    "        }",
    "      }",
    "    }",
    "    rowMax = max;",
    "    for (i = 0; i < kEls.length; i++) {",
    "      el = kEls[i];",
    "      v = have ? row[i] : NaN;",
    "      a = max > 0 ? v / max : 0;",
    "      el.setAttribute(\"data-w\", have ? String(v) : \"\");",
    "      el.style.backgroundColor = have ? shade(a) : \"\";",
    "      el.classList.toggle(\"dark\", a > 0.55);",
    "      el.lastChild.textContent = have ? small(v) : \"\";",
    "      el.title = kname(i) + (have ? \" ← \" + qname(q) + \": \" + String(v) : \"\");",
    "    }",
    "    for (i = 0; i < qEls.length; i++) {",
    "      qEls[i].classList.toggle(\"sel\", i === sel);",
    "      qEls[i].classList.toggle(\"peek\", i === q && i !== sel);",
    "    }",
    "    status.setAttribute(\"data-head\", String(head));",
    "    status.setAttribute(\"data-q\", String(q));",
    "    status.textContent = describe(q, top, max, sum);",
    "    for (i = 0; i < trs.length; i++) trs[i].classList.toggle(\"sel\", i === q);",
    "    if (mark) {",
    "      mark.style.display = q >= 0 ? \"\" : \"none\";",
    "      mark.style.top = (100 * q / LQ) + \"%\";",
    "      mark.style.height = \"max(2px, \" + (100 / LQ) + \"%)\";",
    "    }",
    "    lines();",
    "  }",
    "",
    "  /* Curves from the shown query to its strongest keys, the strongest drawn",
    "   * last; at most MAXLINES, none below 2% of the row's largest weight.",
    "   * Each runs straight down out of the query block, fans out in the gap",
    "   * and runs straight down into the key block, so that with many rows of",
    "   * tokens the curves do not weave between them. */",
    "  function lines() {",
    "    var w = stage.clientWidth, h = stage.clientHeight, out = \"\", i;",
    "    svg.setAttribute(\"width\", w);",
    "    svg.setAttribute(\"height\", h);",
    "    svg.setAttribute(\"viewBox\", \"0 0 \" + w + \" \" + h);",
    "    if (row.length && rowMax > 0 && shown >= 0) {",
    "      var idx = [];",
    "      for (i = 0; i < row.length; i++) if (row[i] >= rowMax * 0.02) idx.push(i);",
    "      idx.sort(function (x, y) { return row[y] - row[x] || x - y; });",
    "      if (idx.length > MAXLINES) idx.length = MAXLINES;",
    "      var sr = stage.getBoundingClientRect(), qr = qEls[shown].getBoundingClientRect();",
    "      var x1 = (qr.left + qr.width / 2 - sr.left).toFixed(1), y1 = (qr.bottom - sr.top).toFixed(1);",
    "      var yb = qBox.getBoundingClientRect().bottom - sr.top;",
    "      var yk = kBox.getBoundingClientRect().top - sr.top, dy = Math.max(8, (yk - yb) / 2);",
    "      var from = \"M\" + x1 + \",\" + y1 + \"L\" + x1 + \",\" + yb.toFixed(1) + \"C\" + x1 + \",\" +",
    "                 (yb + dy).toFixed(1) + \" \";",
    "      for (i = idx.length - 1; i >= 0; i--) {",
    "        var k = idx[i], kr = kEls[k].getBoundingClientRect(), a = row[k] / rowMax;",
    "        var x2 = (kr.left + kr.width / 2 - sr.left).toFixed(1);",
    "        out += \"<path class=\\\"ln\\\" data-to=\\\"\" + k + \"\\\" d=\\\"\" + from + x2 + \",\" +",
    "               (yk - dy).toFixed(1) + \" \" + x2 + \",\" + yk.toFixed(1) + \"L\" + x2 + \",\" +",
    "               (kr.top - sr.top).toFixed(1) + \"\\\" stroke-opacity=\\\"\" +",
    "               (0.15 + 0.85 * a).toFixed(3) + \"\\\" stroke-width=\\\"\" + (0.75 + 3.25 * a).toFixed(2) +",
    "               \"\\\"></path>\";",
    "      }",
    "    }",
    "    svg.innerHTML = out;",
    "  }",
    "",
    "  /* The selected head's whole matrix: a table when small, else a canvas;",
    "   * and the row sums that the softmax makes 1. */",
    "  function buildHeat() {",
    "    var r, c, v, td, th, tr, rs = [], rm = [], lo = Infinity, hi = -Infinity;",
    "    heat.textContent = \"\";",
    "    trs = [];",
    "    mark = null;",
    "    heatTitle.textContent = H > 1 ? hname(head) + \": every weight\" : \"Every weight\";",
    "    if (H === 0 || LQ === 0) {",
    "      sums.textContent = \"\";",
    "      return;",
    "    }",
    "    for (r = 0; r < LQ; r++) {",
    "      var s = 0, m = 0;",
    "      for (c = 0; c < LK; c++) {",
    "        v = wt(head, r, c);",
    "        if (isFinite(v)) { s += v; if (v > m) m = v; }",
    "      }",
    "      rs.push(s);",
    "      rm.push(m);",
    "      lo = Math.min(lo, s);",
    "      hi = Math.max(hi, s);",
    "    }",
    "    sums.setAttribute(\"data-min\", num(lo, 4));",
    "    sums.setAttribute(\"data-max\", num(hi, 4));",
    "    if (LK === 0) {",
    "      sums.textContent = \"There are no keys: every row is empty.\";",
    "      return;",
    "    }",
    "    sums.textContent = \"Rows are queries, columns keys. Each row sums to \" +",
    "      (num(lo, 3) === num(hi, 3) ? num(lo, 3) : \"between \" + num(lo, 3) + \" and \" + num(hi, 3)) +",
    "      \" (softmax makes it 1; a fully masked row is 0). Shade: weight ÷ the largest of its row.\";",
    "    if (LQ <= TABLE_MAX && LK <= TABLE_MAX) {",
    "      var t = document.createElement(\"table\"), numbers = LK <= 12;",
    "      t.className = \"heat\" + (numbers ? \" numbers\" : \"\");",
    "      tr = t.createTHead().insertRow();",
    "      tr.appendChild(document.createElement(\"th\"));",
    "      for (c = 0; c < LK; c++) {",
    "        th = document.createElement(\"th\");",
    "        var sp = document.createElement(\"span\");",
    "        sp.textContent = lab(D.k, c);",
    "        th.appendChild(sp);",
    "        th.title = kname(c);",
    "        tr.appendChild(th);",
    "      }",
    "      th = document.createElement(\"th\");",
    "      th.textContent = \"Σ\";",
    "      th.title = \"row sum\";",
    "      tr.appendChild(th);",
    "      var tb = t.createTBody();",
    "      for (r = 0; r < LQ; r++) {",
    "        tr = tb.insertRow();",
    "        tr.setAttribute(\"data-r\", String(r));",
    "        th = document.createElement(\"th\");",
    "        th.textContent = lab(D.q, r);",
    "        th.title = qname(r);",
    "        tr.appendChild(th);",
    "        for (c = 0; c < LK; c++) {",
    "          v = wt(head, r, c);",
    "          td = tr.insertCell();",
    "          td.style.backgroundColor = shade(rm[r] > 0 ? v / rm[r] : 0);",
    "          if (rm[r] > 0 && v / rm[r] > 0.55) td.className = \"dark\";",
    "          if (numbers) td.textContent = small(v);",
    "          td.title = qname(r) + \" → \" + kname(c) + \": \" + String(v);",
    "        }",
    "        td = tr.insertCell();",
    "        td.className = \"sum\";",
    "        td.textContent = num(rs[r], 2);",
    "        trs.push(tr);",
    "      }",
    "      heat.appendChild(t);",
    "    } else {",
    "      var cv = document.createElement(\"canvas\"), wrap = document.createElement(\"div\");",
    "      cv.width = LK;",
    "      cv.height = LQ;",
    "      cv.className = \"heat-img\";",
    "      cv.style.width = Math.min(720, Math.max(240, LK * 3)) + \"px\";",
    "      cv.style.height = Math.min(720, Math.max(24, LQ * 3)) + \"px\";",
    "      var ctx = cv.getContext(\"2d\"), img = ctx.createImageData(LK, LQ), d = img.data, p = 0;",
    "      for (r = 0; r < LQ; r++) {",
    "        for (c = 0; c < LK; c++, p += 4) {",
    "          v = wt(head, r, c);",
    "          var a = rm[r] > 0 && isFinite(v) ? Math.max(0, Math.min(1, v / rm[r])) : 0;",
    "          d[p] = 255 - 246 * a;",
    "          d[p + 1] = 255 - 150 * a;",
    "          d[p + 2] = 255 - 37 * a;",
    "          d[p + 3] = 255;",
    "        }",
    "      }",
    "      ctx.putImageData(img, 0, 0);",
    "      wrap.className = \"heat-wrap\";",
    "      wrap.appendChild(cv);",
    "      mark = document.createElement(\"div\");",
    "      mark.className = \"rowmark\";",
    "      wrap.appendChild(mark);",
    "      heat.appendChild(wrap);",
    "      var at = function (e) {",
    "        var b = cv.getBoundingClientRect();",
    "        return [Math.max(0, Math.min(LQ - 1, Math.floor((e.clientY - b.top) / b.height * LQ))),",
    "                Math.max(0, Math.min(LK - 1, Math.floor((e.clientX - b.left) / b.width * LK)))];",
    "      };",
    "      cv.addEventListener(\"click\", function (e) { select(at(e)[0]); });",
    "      cv.addEventListener(\"mousemove\", function (e) {",
    "        var rc = at(e);",
    "        cv.title = qname(rc[0]) + \" → \" + kname(rc[1]) + \": \" + String(wt(head, rc[0], rc[1]));",
    "      });",
    "    }",
    "  }",
    "",
    "  function remember() {",
    "    if (!started) return;",
    "    try { history.replaceState(null, \"\", \"#head=\" + head + \"&q=\" + sel); } catch (e) { /* file: URLs may refuse */ }",
    "  }",
    "  function select(q) {",
    "    if (!(q >= 0 && q < LQ)) return;",
    "    sel = q;",
    "    render(q);",
    "    remember();",
    "  }",
    "  function setHead(h) {",
    "    if (!(h >= 0 && h < H)) return;",
    "    head = h;",
    "    for (var i = 0; i < hEls.length; i++) {",
    "      hEls[i].classList.toggle(\"on\", i === h);",
    "      hEls[i].setAttribute(\"aria-pressed\", i === h ? \"true\" : \"false\");",
    "    }",
    "    buildHeat();",
    "    render(sel);",
    "    remember();",
    "  }",
    "",
    "  for (var i = 0; i < qEls.length; i++) qEls[i].title = qname(i);",
    "  qBox.addEventListener(\"click\", function (e) {",
    "    var t = e.target.closest(\"[data-q]\");",
    "    if (t) select(+t.getAttribute(\"data-q\"));",
    "  });",
    "  qBox.addEventListener(\"mouseover\", function (e) {",
    "    var t = e.target.closest(\"[data-q]\");",
    "    if (t) render(+t.getAttribute(\"data-q\"));",
    "  });",
    "  qBox.addEventListener(\"mouseleave\", function () { if (shown !== sel) render(sel); });",
    "  if (headBox) headBox.addEventListener(\"click\", function (e) {",
    "    var t = e.target.closest(\"[data-head]\");",
    "    if (t) setHead(+t.getAttribute(\"data-head\"));",
    "  });",
    "  heat.addEventListener(\"click\", function (e) {",
    "    var t = e.target.closest(\"tr[data-r]\");",
    "    if (t) select(+t.getAttribute(\"data-r\"));",
    "  });",
    "  document.addEventListener(\"keydown\", function (e) {",
    "    if (e.altKey || e.ctrlKey || e.metaKey) return;",
    "    if (e.key === \"ArrowRight\" || e.key === \"ArrowLeft\") {",
    "      select(sel + (e.key === \"ArrowRight\" ? 1 : -1));",
    "      e.preventDefault();",
    "    } else if (e.key === \"]\" || e.key === \"[\") {",
    "      setHead(head + (e.key === \"]\" ? 1 : -1));",
    "    }",
    "  });",
    "  var pending = false;",
    "  window.addEventListener(\"resize\", function () {",
    "    if (pending) return;",
    "    pending = true;",
    "    requestAnimationFrame(function () { pending = false; lines(); });",
    "  });",
    "  window.addEventListener(\"load\", lines);",
    "",
    "  if (H > 0) setHead(0);",
    "  else { buildHeat(); render(sel); }",
    "  /* #head=H&q=Q selects as a click would; #click=Q, #clickhead=H and",
    "   * #hover=Q dispatch real events on the elements (what the tests use). */",
    "  var f = {};",
    "  location.hash.slice(1).split(\"&\").forEach(function (part) {",
    "    var kv = part.split(\"=\");",
    "    if (kv.length === 2 && /^[0-9]+$/.test(kv[1])) f[kv[0]] = +kv[1];",
    "  });",
    "  if (\"head\" in f) setHead(f.head);",
    "  if (\"q\" in f) select(f.q);",
    "  if (\"clickhead\" in f && hEls[f.clickhead])",
    "    hEls[f.clickhead].dispatchEvent(new MouseEvent(\"click\", { bubbles: true }));",
    "  if (\"click\" in f && qEls[f.click])",
    "    qEls[f.click].dispatchEvent(new MouseEvent(\"click\", { bubbles: true }));",
    "  if (\"hover\" in f && qEls[f.hover])",
    "    qEls[f.hover].dispatchEvent(new MouseEvent(\"mouseover\", { bubbles: true }));",
    "  started = true;",
    "  document.body.setAttribute(\"data-ready\", \"1\");",
    "})();",
    NULL,
};

static void put_lines(sink *s, const char *const *lines)
{
    for (; *lines; lines++) {
        put(s, *lines);
        put(s, "\n");
    }
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
    put_lines(&s, page_css);
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
    put_lines(&s, page_js);
    put(&s, "</script>\n</body>\n</html>\n");

    if (ferror(f)) {
        int e = errno;
        fclose(f);
        return e ? strerror(e) : "write error";
    }
    if (fclose(f) != 0) return strerror(errno);
    return NULL;
}
