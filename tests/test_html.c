/* The interactive attention page (tools/qkv/html.c). Pages for the worked
 * example, two heads, no keys, no queries, hostile labels and 512 tokens
 * are checked as files; then, where a Chromium is installed, rendered
 * headless: the DOM after the script ran, selections through the URL
 * fragment and real click and hover events, and screenshots. Without a
 * browser the browser checks are skipped, except under CI (CI set), where
 * scripts/deps.sh --test has installed one and its absence is a failure.
 * Every page carries tools/qkv/page/page.css and page.js byte for byte.
 * QKV_TEST_KEEP=1 keeps the pages and screenshots and prints where. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "test.h"
#include "util.h"

#include "picture.h"

#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char *dir;           /* the test's temporary directory */
static const char *browser; /* the Chromium found, or NULL */
/* tools/qkv/page/'s style sheet and script, which every page carries whole
 * as the contents of its <style> and second <script>. */
static char *page_style, *page_script;

/* ------------------------------------------------------------ helpers */

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = test_malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            char *bigger = realloc(buf, cap);
            if (!bigger) {
                fprintf(stderr, "test: out of memory\n");
                exit(2);
            }
            buf = bigger;
        }
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = read_all(f, len);
    fclose(f);
    return s;
}

static char *path_in_dir(const char *name)
{
    char *p = test_malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

static int64_t count_of(const char *hay, const char *needle)
{
    int64_t n = 0;
    size_t len = strlen(needle);
    for (const char *p = hay; (p = strstr(p, needle)); p += len) n++;
    return n;
}

static int64_t count_nocase(const char *hay, const char *needle)
{
    int64_t n = 0;
    size_t len = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (strncasecmp(p, needle, len) == 0) n++;
    return n;
}

/* A row-stochastic (heads, lq, lk) array from seeded random scores. */
static float *softmax_rows(uint64_t seed, int64_t heads, int64_t lq, int64_t lk, double spread)
{
    test_rng r = test_rng_seed(seed);
    float *w = test_malloc((size_t)(heads * lq * lk) * sizeof *w);
    for (int64_t row = 0; row < heads * lq; row++) {
        double sum = 0, *e = test_malloc((size_t)lk * sizeof *e);
        for (int64_t j = 0; j < lk; j++) sum += e[j] = exp(spread * test_rand(&r));
        for (int64_t j = 0; j < lk; j++) w[row * lk + j] = (float)(e[j] / sum);
        free(e);
    }
    return w;
}

/* ------------------------------------------------- static file checks */

/* What every page must be: one document, self-contained, two scripts
 * (the data and the code), one chip per token. */
static void check_file(const char *html, const picture *p)
{
    CHECK(strncmp(html, "<!DOCTYPE html>", 15) == 0);
    CHECK(strstr(html, "</html>") != NULL);
    CHECK(strstr(html, "http://") == NULL);
    CHECK(strstr(html, "https://") == NULL);
    CHECK(count_nocase(html, "<link") == 0 && count_nocase(html, "<img") == 0 &&
          count_nocase(html, "<iframe") == 0);
    CHECK(count_nocase(html, "src=\"//") == 0 && count_nocase(html, "href=\"//") == 0);
    CHECK(count_nocase(html, "url(") == 0 && count_nocase(html, "@import") == 0);
    CHECK(strstr(html, "Content-Security-Policy") != NULL);
    CHECK(count_nocase(html, "<script") == 2);
    CHECK(count_nocase(html, "</script") == 2);
    CHECK(strstr(html, "<script type=\"application/json\" id=\"qkv-data\">") != NULL);
    CHECK(count_of(html, "data-q=\"") == p->lq + 1); /* and the status */
    CHECK(count_of(html, "data-k=\"") == p->lk);
    CHECK(count_of(html, "data-head=\"") == (p->heads > 1 ? p->heads : 0) + 1);
    char want[96];
    snprintf(want, sizeof want, "{\"heads\":%lld,\"lq\":%lld,\"lk\":%lld,",
             (long long)p->heads, (long long)p->lq, (long long)p->lk);
    CHECK(strstr(html, want) != NULL);
    CHECK(page_style && strstr(html, page_style) != NULL);
    CHECK(page_script && strstr(html, page_script) != NULL);
}

/* "<open>\n" + the file at QKV_TEST_DATA/../../path + "</close>\n". */
static char *element_of(const char *path, const char *open, const char *close)
{
    char full[4096];
    snprintf(full, sizeof full, "%s/../../%s", QKV_TEST_DATA, path);
    size_t len = 0;
    char *body = read_file(full, &len);
    CHECK(body != NULL && len > 0);
    if (!body) return NULL;
    char *el = test_malloc(strlen(open) + len + strlen(close) + 3);
    sprintf(el, "%s\n%s%s\n", open, body, close);
    free(body);
    return el;
}

static char *write_page(const char *name, const picture *p, const char *intro)
{
    char *path = path_in_dir(name);
    const char *why = picture_write_html(path, p, intro);
    CHECK(why == NULL);
    if (why) fprintf(stderr, "picture_write_html %s: %s\n", name, why);
    char *html = read_file(path, NULL);
    CHECK(html != NULL);
    if (html) check_file(html, p);
    free(path);
    return html;
}

/* ----------------------------------------------------------- browser */

static int executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* QKV_CHROMIUM, else chromium, chromium-browser, google-chrome(-stable)
 * on PATH. */
static const char *find_browser(void)
{
    static char found[4096];
    const char *env = getenv("QKV_CHROMIUM");
    if (env && *env) return executable(env) ? env : NULL;
    const char *names[] = {"chromium", "chromium-browser", "google-chrome",
                           "google-chrome-stable"};
    const char *path = getenv("PATH");
    if (!path) return NULL;
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
        for (const char *p = path; *p;) {
            const char *end = strchr(p, ':');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (len && len + strlen(names[n]) + 2 < sizeof found) {
                snprintf(found, sizeof found, "%.*s/%s", (int)len, p, names[n]);
                if (executable(found)) return found;
            }
            p += len + (end ? 1 : 0);
        }
    }
    return NULL;
}

/* s in single quotes for sh. */
static void shell_quote(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    out[n++] = '\'';
    for (; *s && n + 5 < cap; s++) {
        if (*s == '\'') {
            memcpy(out + n, "'\\''", 4);
            n += 4;
        } else {
            out[n++] = *s;
        }
    }
    out[n++] = '\'';
    out[n] = '\0';
}

/* file:// URL of DIR/NAME with an optional fragment, bytes outside
 * [A-Za-z0-9/._~-] percent-encoded. */
static void file_url(char *out, size_t cap, const char *name, const char *fragment)
{
    char *path = path_in_dir(name);
    char *abs = realpath(path, NULL);
    const char *s = abs ? abs : path;
    size_t n = (size_t)snprintf(out, cap, "file://");
    for (; *s && n + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("/._~-", c))
            out[n++] = (char)c;
        else
            n += (size_t)snprintf(out + n, cap - n, "%%%02X", c);
    }
    out[n] = '\0';
    if (fragment) snprintf(out + n, cap - n, "#%s", fragment);
    free(abs);
    free(path);
}

/* Runs the browser headless on DIR/NAME#FRAGMENT with extra arguments and
 * returns its stdout (malloc'd), or NULL when it failed. The profile, HOME
 * and caches stay inside the temporary directory; stderr goes to
 * DIR/browser.log, printed when a run fails. */
static char *browse(const char *args, const char *name, const char *fragment)
{
    char url[8192], q_browser[4200], q_dir[4200], q_url[8300], *cmd;
    file_url(url, sizeof url, name, fragment);
    shell_quote(q_browser, sizeof q_browser, browser);
    shell_quote(q_dir, sizeof q_dir, dir);
    shell_quote(q_url, sizeof q_url, url);
    size_t cap = strlen(args) + 5 * sizeof q_dir + sizeof q_browser + sizeof q_url + 1024;
    cmd = test_malloc(cap);
    snprintf(cmd, cap,
             "cd %s && HOME=%s/home XDG_CONFIG_HOME=%s/home XDG_CACHE_HOME=%s/home TMPDIR=%s "
             "timeout -k 5 60 %s --headless --no-sandbox --disable-gpu "
             "--disable-dev-shm-usage --no-first-run --no-default-browser-check "
             "--disable-extensions --disable-background-networking --hide-scrollbars "
             "--user-data-dir=profile %s %s 2>>browser.log",
             q_dir, q_dir, q_dir, q_dir, q_dir, q_browser, args, q_url);
    FILE *f = popen(cmd, "r");
    char *out = NULL;
    if (f) {
        out = read_all(f, NULL);
        int st = pclose(f);
        if (st != 0) {
            fprintf(stderr, "browser exited with status %d: %s\n", st, cmd);
            char *log = path_in_dir("browser.log");
            char *text = read_file(log, NULL);
            if (text) {
                size_t len = strlen(text);
                fprintf(stderr, "browser.log (tail):\n%s\n", text + (len > 3000 ? len - 3000 : 0));
            }
            free(text);
            free(log);
            free(out);
            out = NULL;
        }
    }
    CHECK(out != NULL);
    free(cmd);
    return out;
}

/* The document after its script ran (--dump-dom). */
static char *dom_of(const char *name, const char *fragment)
{
    char *dom = browse("--dump-dom", name, fragment);
    if (dom) {
        CHECK(strstr(dom, "<body data-ready=\"1\">") != NULL); /* the script ran to the end */
        CHECK(count_nocase(dom, "<script") == 2);
    }
    return dom;
}

static void screenshot(const char *name, const char *fragment, const char *png)
{
    char args[4400], q_png[4200];
    char *png_path = path_in_dir(png);
    shell_quote(q_png, sizeof q_png, png_path);
    snprintf(args, sizeof args, "--screenshot=%s --window-size=1000,800", q_png);
    char *out = browse(args, name, fragment);
    free(out);
    size_t len = 0;
    char *img = read_file(png_path, &len);
    CHECK(img != NULL);
    /* A PNG, and not a blank page: a white 1000x800 PNG is about 5 kB. */
    CHECK(img && len > 8 && memcmp(img, "\x89PNG\r\n\x1a\n", 8) == 0);
    CHECK(len > 20000);
    if (len <= 20000) fprintf(stderr, "%s: only %zu bytes\n", png, len);
    free(img);
    free(png_path);
}

/* The start tag around the first occurrence of needle (which must lie in
 * a start tag written before any attribute holding '<'), as a string. */
static char *tag_of(const char *dom, const char *needle)
{
    const char *p = strstr(dom, needle);
    if (!p) return NULL;
    const char *lt = p;
    while (lt > dom && *lt != '<') lt--;
    const char *gt = strchr(p, '>');
    size_t len = gt ? (size_t)(gt - lt) + 1 : strlen(lt);
    char *t = test_malloc(len + 1);
    memcpy(t, lt, len);
    t[len] = '\0';
    return t;
}

/* The class attribute of the element whose tag has ATTR="INDEX". */
static int has_class(const char *dom, const char *attr, int64_t index, const char *cls)
{
    char needle[64], want[64];
    snprintf(needle, sizeof needle, "%s=\"%lld\"", attr, (long long)index);
    char *t = tag_of(dom, needle);
    if (!t) return 0;
    int yes = 0;
    const char *c = strstr(t, "class=\"");
    if (c && c < strstr(t, needle)) {
        c += 7;
        size_t len = strcspn(c, "\"");
        snprintf(want, sizeof want, " %s ", cls);
        char *padded = test_malloc(len + 3);
        snprintf(padded, len + 3, " %.*s ", (int)len, c);
        yes = strstr(padded, want) != NULL;
        free(padded);
    }
    free(t);
    return yes;
}

/* data-w of key j as shown, NaN when absent or empty. */
static double key_weight(const char *dom, int64_t j)
{
    char needle[64];
    snprintf(needle, sizeof needle, "data-k=\"%lld\" data-w=\"", (long long)j);
    const char *p = strstr(dom, needle);
    if (!p) return NAN;
    p += strlen(needle);
    char *end;
    double v = strtod(p, &end);
    return end == p || *end != '"' ? NAN : v;
}

/* The status element: the head and query it shows, and its text. */
static int status_of(const char *dom, int64_t *head, int64_t *q, char *text, size_t cap)
{
    const char *p = strstr(dom, "id=\"qkv-status\" data-head=\"");
    if (!p) return 0;
    p += strlen("id=\"qkv-status\" data-head=\"");
    *head = strtoll(p, NULL, 10);
    p = strstr(p, "data-q=\"");
    if (!p) return 0;
    *q = strtoll(p + 8, NULL, 10);
    p = strchr(p, '>');
    const char *end = p ? strstr(p, "</p>") : NULL;
    if (!end) return 0;
    snprintf(text, cap, "%.*s", (int)(end - p - 1), p + 1);
    return 1;
}

/* The page shows query q of head h: every key's data-w is that row's
 * weight to 3 decimals, q carries the class `cls`, the status says so. */
static void check_shows(const char *dom, const picture *p, int64_t h, int64_t q, const char *cls)
{
    int64_t sh = -1, sq = -1;
    char text[4096];
    CHECK(status_of(dom, &sh, &sq, text, sizeof text));
    CHECK(sh == h);
    CHECK(sq == q);
    CHECK(has_class(dom, "data-q", q, cls));
    for (int64_t i = 0; i < p->lq; i++)
        if (i != q) CHECK(!has_class(dom, "data-q", i, cls));
    int bad = 0;
    for (int64_t j = 0; j < p->lk; j++) {
        double want = p->w[(h * p->lq + q) * p->lk + j], got = key_weight(dom, j);
        if (!(fabs(got - want) <= 5e-4)) {
            if (bad++ < 3) fprintf(stderr, "key %lld: data-w %g, weight %g\n", (long long)j, got, want);
        }
    }
    CHECK(bad == 0);
    if (p->heads > 1) CHECK(has_class(dom, "data-head", h, "on"));
}

/* ------------------------------------------------------------- cases */

/* The worked example: "apple" against cat, apple, tree, juice (see
 * test_worked_example.c), with an intro. */
static void case_worked_example(void)
{
    static const float w[4] = {0.13361833f, 0.36321228f, 0.22029938f, 0.28287001f};
    static const char *const q[1] = {"apple"};
    static const char *const k[4] = {"cat", "apple", "tree", "juice"};
    picture p = {"The worked example", 1, 1, 4, w, NULL, q, k};
    const char *intro = "<p class=\"intro-test\">The query <em>apple</em> against four keys.</p>";
    char *html = write_page("worked.html", &p, intro);
    if (html) {
        CHECK(strstr(html, intro) != NULL);
        CHECK(strstr(html, "<title>The worked example</title>") != NULL);
        CHECK(strstr(html, "data-k=\"3\" data-w=\"\"><span class=\"t\">juice</span>") != NULL);
        CHECK(strstr(html, "0.1336,0.3632,0.2203,0.2829") != NULL);
        CHECK(strstr(html, "\"k\":[\"cat\",\"apple\",\"tree\",\"juice\"]") != NULL);
        CHECK(strstr(html, "id=\"qkv-heads\"") == NULL); /* one head: no selector */
    }
    free(html);
    if (!browser) return;

    char *dom = dom_of("worked.html", NULL);
    if (dom) {
        check_shows(dom, &p, 0, 0, "sel");
        CHECK(strstr(dom, intro) != NULL);
        CHECK(strstr(dom, "attends most to key 1 “apple” (0.363); its 4 weights sum to "
                          "1.000.") != NULL);
        CHECK(count_of(dom, "class=\"ln\"") == 4); /* a curve to every key */
        CHECK(count_of(dom, "<tr data-r=\"") == 1);
        CHECK(count_of(dom, "<td class=\"sum\">1.00</td>") == 1);
        CHECK(strstr(dom, "data-min=\"1.0000\" data-max=\"1.0000\"") != NULL);
        CHECK(strstr(dom, "<span class=\"w\">0.36</span>") != NULL);
    }
    free(dom);
    screenshot("worked.html", NULL, "worked.png");
}

static void case_two_heads(void)
{
    enum { LQ = 12, LK = 20 };
    static const char *const words[LK] = {
        "The", " cat", " sat", " on", " the", " mat", ",", " and", " the", " dog",
        " barked", " at", " it", " all", " day", " long", ".", " Then", " it", " slept"};
    static const char *const names[2] = {"b0 h0", "b0 h1"};
    float *w = softmax_rows(12, 2, LQ, LK, 4.0);
    picture p = {"Two heads", 2, LQ, LK, w, names, words, words};
    char *html = write_page("heads.html", &p, NULL);
    if (html) {
        CHECK(strstr(html, "data-head=\"1\" aria-pressed=\"false\">b0 h1</button>") != NULL);
        CHECK(strstr(html, "data-q=\"1\"> cat</span>") != NULL);
    }
    free(html);
    if (!browser) {
        free(w);
        return;
    }
    /* Straight from the fragment; then real click events on a head button
     * and a query token; then a hover, which previews without selecting. */
    char *dom = dom_of("heads.html", "q=2&head=1");
    if (dom) {
        check_shows(dom, &p, 1, 2, "sel");
        CHECK(count_of(dom, "<tr data-r=\"") == LQ);
        CHECK(count_of(dom, "<td class=\"sum\">1.00</td>") == LQ);
        CHECK(strstr(dom, "b0 h1: every weight") != NULL);
        int64_t lines = count_of(dom, "class=\"ln\"");
        CHECK(lines >= 1 && lines <= LK);
    }
    free(dom);
    dom = dom_of("heads.html", "clickhead=1&click=5");
    if (dom) check_shows(dom, &p, 1, 5, "sel");
    free(dom);
    dom = dom_of("heads.html", "hover=7");
    if (dom) {
        check_shows(dom, &p, 0, 7, "peek");
        CHECK(has_class(dom, "data-q", 0, "sel"));
    }
    free(dom);
    screenshot("heads.html", "q=2&head=1", "heads.png");
    free(w);
}

static void case_no_keys(void)
{
    static const char *const q[3] = {"a", "b", "c"};
    static const float none[1] = {0};
    picture p = {NULL, 2, 3, 0, none, NULL, q, NULL};
    char *html = write_page("nokeys.html", &p, NULL);
    if (html) {
        CHECK(strstr(html, "\"w\":[\n[],\n[]]") != NULL);
        CHECK(strstr(html, "<title>Attention weights</title>") != NULL);
    }
    free(html);
    if (!browser) return;
    char *dom = dom_of("nokeys.html", "q=1");
    int64_t h = -1, qq = -1;
    char text[4096];
    if (dom) {
        CHECK(status_of(dom, &h, &qq, text, sizeof text));
        CHECK(h == 0 && qq == 1);
        CHECK(strstr(text, "query 1 “b” has no keys to attend to.") != NULL);
        CHECK(count_of(dom, "class=\"ln\"") == 0);
    }
    free(dom);
}

static void case_no_queries(void)
{
    picture p = {"Empty", 1, 0, 3, NULL, NULL, NULL, NULL};
    char *html = write_page("noqueries.html", &p, NULL);
    free(html);
    if (!browser) return;
    char *dom = dom_of("noqueries.html", "click=0");
    int64_t h = -1, q = 0;
    char text[4096];
    if (dom) {
        CHECK(status_of(dom, &h, &q, text, sizeof text));
        CHECK(q == -1);
        CHECK(strcmp(text, "There are no query tokens.") == 0);
        CHECK(isnan(key_weight(dom, 0))); /* data-w empty */
    }
    free(dom);
}

/* Labels that would break the page if written as they are. */
static void case_hostile_labels(void)
{
    static const char *const lab[6] = {
        "</script><script>document.body.dataset.pwned=1</script>",
        "<img src=x onerror=\"document.body.dataset.pwned=1\">",
        "a & b \"quoted\" 'single' \\ back",
        "</SCRIPT >\n<!--",
        "line\nbreak\ttab",
        "bad utf-8 \xff\xc3("};
    static const char *const names[2] = {"<b>h0</b>", "h1 & \"x\""};
    float *w = softmax_rows(6, 2, 6, 6, 2.0);
    picture p = {"<i>Labels</i> & \"quotes\"", 2, 6, 6, w, names, lab, lab};
    char *html = write_page("labels.html", &p, NULL);
    if (html) {
        CHECK(strstr(html, "<title>&lt;i&gt;Labels&lt;/i&gt; &amp; &quot;quotes&quot;</title>"));
        CHECK(strstr(html, "&lt;/script&gt;&lt;script&gt;document.body.dataset.pwned=1"));
        CHECK(strstr(html, "\\u003c/script\\u003e\\u003cscript\\u003edocument"));
        CHECK(strstr(html, "&lt;img src=x onerror=&quot;document"));
        CHECK(strstr(html, "a &amp; b &quot;quoted&quot; &#39;single&#39; \\ back"));
        CHECK(strstr(html, "\"a \\u0026 b \\\"quoted\\\" 'single' \\\\ back\""));
        CHECK(strstr(html, "&lt;/SCRIPT &gt;↵&lt;!--"));
        CHECK(strstr(html, "line↵break⇥tab"));
        CHECK(strstr(html, "bad utf-8 \xef\xbf\xbd\xef\xbf\xbd("));
        CHECK(strstr(html, "\xff") == NULL);
        CHECK(strstr(html, "&lt;b&gt;h0&lt;/b&gt;</button>"));
        CHECK(strstr(html, "<img") == NULL);
    }
    free(html);
    if (browser) {
        char *dom = dom_of("labels.html", "head=1&q=0");
        if (dom) {
            check_shows(dom, &p, 1, 0, "sel");
            CHECK(strstr(dom, "data-pwned") == NULL); /* no injected script ran */
            int64_t h, q;
            char text[4096];
            CHECK(status_of(dom, &h, &q, text, sizeof text));
            CHECK(strstr(text, "query 0 “&lt;/script&gt;&lt;script&gt;document.body") != NULL);
        }
        free(dom);
    }
    free(w);
}

/* 512 tokens, labels missing: compact chips, a canvas for the matrix and
 * at most 64 curves. */
static void case_many_tokens(void)
{
    enum { L = 512 };
    float *w = softmax_rows(512, 1, L, L, 6.0);
    picture p = {"512 tokens", 1, L, L, w, NULL, NULL, NULL};
    char *html = write_page("many.html", &p, NULL);
    if (html) {
        CHECK(strstr(html, "data-q=\"511\">511</span>") != NULL);
        CHECK(strstr(html, "data-k=\"7\" data-w=\"\"><span class=\"t\">7</span>") != NULL);
        CHECK(strstr(html, "class=\"stage many\"") != NULL);
        CHECK(strstr(html, "\"q\":null,\n\"k\":null") != NULL);
    }
    free(html);
    if (!browser) {
        free(w);
        return;
    }
    char *dom = dom_of("many.html", "click=300");
    if (dom) {
        check_shows(dom, &p, 0, 300, "sel");
        int64_t lines = count_of(dom, "class=\"ln\"");
        CHECK(lines >= 1 && lines <= 64);
        CHECK(strstr(dom, "<canvas") != NULL);
        CHECK(count_of(dom, "<tr data-r=\"") == 0);
    }
    free(dom);
    screenshot("many.html", "q=300", "many.png");
    free(w);
}

/* Refusals and write errors come back as reasons, as cli_write_fn says. */
static void case_errors(void)
{
    static const float w[4] = {0.25f, 0.25f, 0.25f, 0.25f};
    picture ok = {NULL, 1, 1, 4, w, NULL, NULL, NULL};
    const char *why = picture_write_html("/nonexistent-qkv-dir/page.html", &ok, NULL);
    CHECK(why && strstr(why, "No such file") != NULL);
    if (access("/dev/full", W_OK) == 0) {
        why = picture_write_html("/dev/full", &ok, NULL);
        CHECK(why && strstr(why, "No space") != NULL);
    }
    char *path = path_in_dir("refused.html");
    CHECK(picture_write_html(NULL, &ok, NULL) != NULL);
    CHECK(picture_write_html(path, NULL, NULL) != NULL);
    picture neg = ok;
    neg.lk = -1;
    CHECK(picture_write_html(path, &neg, NULL) != NULL);
    picture no_w = ok;
    no_w.w = NULL;
    CHECK(picture_write_html(path, &no_w, NULL) != NULL);
    /* Too large: refused before the weights are read (w is 4 floats). */
    picture big = {NULL, 64, 4096, 4096, w, NULL, NULL, NULL};
    why = picture_write_html(path, &big, NULL);
    CHECK(why && strstr(why, "too large") != NULL);
    picture tokens = {NULL, 1, 100000, 0, w, NULL, NULL, NULL};
    CHECK(picture_write_html(path, &tokens, NULL) != NULL);
    picture heads = {NULL, 5000, 0, 0, w, NULL, NULL, NULL};
    CHECK(picture_write_html(path, &heads, NULL) != NULL);
    CHECK(access(path, F_OK) != 0); /* nothing was written */
    /* 64 heads is fine. */
    float *w64 = softmax_rows(64, 64, 3, 5, 3.0);
    picture many_heads = {NULL, 64, 3, 5, w64, NULL, NULL, NULL};
    char *html = write_page("heads64.html", &many_heads, NULL);
    free(html);
    free(w64);
    free(path);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

int main(void)
{
    dir = test_tmpdir();
    browser = find_browser();
    if (browser) {
        printf("browser: %s\n", browser);
    } else if (getenv("CI")) {
        fprintf(stderr, "chromium not found, and CI is set: scripts/deps.sh --test installs it\n");
        CHECK(browser != NULL);
    } else {
        printf("chromium not found: browser checks skipped\n");
    }
    page_style = element_of("tools/qkv/page/page.css", "<style>", "</style>");
    page_script = element_of("tools/qkv/page/page.js", "<script>", "</script>");
    time_t t0 = time(NULL);
    case_worked_example();
    case_two_heads();
    case_no_keys();
    case_no_queries();
    case_hostile_labels();
    case_many_tokens();
    case_errors();
    printf("took %lld s\n", (long long)(time(NULL) - t0));
    free(page_style);
    free(page_script);
    if (getenv("QKV_TEST_KEEP")) {
        printf("pages kept in %s\n", dir);
        free(dir);
    } else {
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(dir);
    }
    return test_finish("test_html");
}
