/* The JSON tokenizer of json.h: byte by byte over a buffer, every rule of
 * RFC 8259 that the pieces it reads have, and a detail for each way they
 * can be wrong. */
#include "io/json.h"

#include "io/io.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The file offset of position pos of the text. */
static size_t at(const qkv_json *j, size_t pos) { return j->base + pos; }

int qkv_json_peek(const qkv_json *j) { return j->i < j->n ? j->s[j->i] : -1; }

void qkv_json_skip_ws(qkv_json *j)
{
    int ch;
    while ((ch = qkv_json_peek(j)) == ' ' || ch == '\t' || ch == '\n' || ch == '\r')
        j->i++;
}

int qkv_json_take(qkv_json *j, int ch)
{
    if (qkv_json_peek(j) != ch)
        return 0;
    j->i++;
    return 1;
}

size_t qkv_json_offset(const qkv_json *j) { return at(j, j->i); }

qkv_status qkv_json_fail(const qkv_json *j, qkv_status st, const char *fmt, ...)
{
    char msg[448]; /* as qkv_file_fail's, so that a cut detail is cut where it was */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qkv_file_fail(st, j->file, "%s: %s", j->what, msg);
}

qkv_status qkv_json_expected(const qkv_json *j, const char *expected)
{
    char buf[24], end[40];
    snprintf(end, sizeof end, "the end of the %s", j->what);
    return qkv_json_fail(j, QKV_ERR_FORMAT, "expected %s at offset %zu, found %s", expected,
                         qkv_json_offset(j), qkv_byte_name(buf, qkv_json_peek(j), end));
}

qkv_status qkv_json_open(qkv_json *j, int open, const char *expected, int *more)
{
    *more = 0;
    if (!qkv_json_take(j, open))
        return qkv_json_expected(j, expected);
    qkv_json_skip_ws(j);
    *more = !qkv_json_take(j, open == '{' ? '}' : ']');
    return QKV_OK;
}

qkv_status qkv_json_colon(qkv_json *j, const char *expected)
{
    qkv_json_skip_ws(j);
    if (!qkv_json_take(j, ':'))
        return qkv_json_expected(j, expected);
    qkv_json_skip_ws(j);
    return QKV_OK;
}

qkv_status qkv_json_next(qkv_json *j, int close, const char *expected, int *more)
{
    qkv_json_skip_ws(j);
    *more = 0;
    if (qkv_json_take(j, close))
        return QKV_OK;
    if (!qkv_json_take(j, ','))
        return qkv_json_expected(j, expected);
    *more = 1;
    return QKV_OK;
}

/* ----------------------------------------------------------- strings */

static int hex_value(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The four hex digits after "\u" at j->i; -1 if they are not there. */
static long read_u4(qkv_json *j)
{
    long v = 0;
    if (j->n - j->i < 4)
        return -1;
    for (int k = 0; k < 4; k++) {
        int h = hex_value(j->s[j->i + (size_t)k]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    j->i += 4;
    return v;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes available) that
 * starts with a byte >= 0x80: 2 to 4, or 0 if it is not well formed
 * (overlong forms, surrogates and values past U+10FFFF are not). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char b = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (b >= 0xc2 && b <= 0xdf)
        len = 2;
    else if (b >= 0xe0 && b <= 0xef)
        len = 3;
    else if (b >= 0xf0 && b <= 0xf4)
        len = 4;
    else
        return 0;
    if (b == 0xe0)
        lo = 0xa0;
    else if (b == 0xed)
        hi = 0x9f;
    else if (b == 0xf0)
        lo = 0x90;
    else if (b == 0xf4)
        hi = 0x8f;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if (s[k] < 0x80 || s[k] > 0xbf)
            return 0;
    return len;
}

static size_t put_utf8(char *d, unsigned long cp)
{
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xc0 | cp >> 6);
        d[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xe0 | cp >> 12);
        d[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        d[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    d[0] = (char)(0xf0 | cp >> 18);
    d[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    d[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    d[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The escape whose backslash is at esc, j->i just past the backslash:
 * decoded into d (up to 4 bytes), *k advanced by their count. */
static qkv_status read_escape(qkv_json *j, size_t esc, char *d, size_t *k)
{
    static const char plain[] = "\"\\/bfnrt", means[] = "\"\\/\b\f\n\r\t";
    const int ch = qkv_json_peek(j);
    const char *hit = ch > 0 ? strchr(plain, ch) : NULL;
    long cp, lo = -1;
    if (hit) {
        d[(*k)++] = means[hit - plain];
        j->i++;
        return QKV_OK;
    }
    if (ch != 'u')
        return qkv_json_fail(j, QKV_ERR_FORMAT, "invalid escape at offset %zu in a string",
                             at(j, esc));
    j->i++;
    if ((cp = read_u4(j)) < 0)
        return qkv_json_fail(j, QKV_ERR_FORMAT,
                             "\\u at offset %zu is not followed by four hex digits", at(j, esc));
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return qkv_json_fail(j, QKV_ERR_FORMAT, "lone low surrogate \\u%04lX at offset %zu", cp,
                             at(j, esc));
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (j->n - j->i >= 2 && j->s[j->i] == '\\' && j->s[j->i + 1] == 'u') {
            j->i += 2;
            lo = read_u4(j);
        }
        if (lo < 0xdc00 || lo > 0xdfff)
            return qkv_json_fail(j, QKV_ERR_FORMAT,
                                 "high surrogate \\u%04lX at offset %zu is not followed by a low "
                                 "surrogate",
                                 cp, at(j, esc));
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    *k += put_utf8(d + *k, (unsigned long)cp);
    return QKV_OK;
}

/* The decoded form plus its NUL is never longer than the quoted source, so
 * an arena of the text's size plus one holds every string of the text. */
qkv_status qkv_json_string(qkv_json *j, const char *expected, const char **out, size_t *len)
{
    const size_t start = j->i;
    char *d = j->arena + j->used;
    size_t k = 0;
    qkv_status st;
    if (!qkv_json_take(j, '"'))
        return qkv_json_expected(j, expected);
    for (;;) {
        const int ch = qkv_json_peek(j);
        if (ch < 0)
            return qkv_json_fail(j, QKV_ERR_FORMAT, "unterminated string starting at offset %zu",
                                 at(j, start));
        if (ch == '"')
            break;
        if (ch < 0x20)
            return qkv_json_fail(j, QKV_ERR_FORMAT,
                                 "control byte 0x%02x in a string at offset %zu (JSON needs it "
                                 "escaped)",
                                 ch, qkv_json_offset(j));
        if (ch >= 0x80) {
            const size_t u = utf8_len(j->s + j->i, j->n - j->i);
            if (!u)
                return qkv_json_fail(j, QKV_ERR_FORMAT, "invalid UTF-8 at offset %zu",
                                     qkv_json_offset(j));
            memcpy(d + k, j->s + j->i, u);
            k += u;
            j->i += u;
        } else if (ch == '\\') {
            const size_t esc = j->i++;
            if ((st = read_escape(j, esc, d, &k)) != QKV_OK)
                return st;
        } else {
            d[k++] = (char)ch;
            j->i++;
        }
    }
    j->i++;
    d[k] = '\0';
    j->used += k + 1;
    *out = d;
    *len = k;
    return QKV_OK;
}

int qkv_json_valid_utf8(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    const size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        const size_t k = u[i] < 0x80 ? 1 : utf8_len(u + i, n - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

const char *qkv_json_escape(unsigned char ch, char buf[8])
{
    switch (ch) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\t': return "\\t";
    case '\r': return "\\r";
    case '\b': return "\\b";
    case '\f': return "\\f";
    default:
        if (ch >= 0x20)
            return NULL;
        snprintf(buf, 8, "\\u%04x", ch);
        return buf;
    }
}

/* ----------------------------------------------------------- numbers */

qkv_status qkv_json_uint(qkv_json *j, const char *what, uint64_t *v)
{
    const size_t start = j->i;
    int overflow = 0, ch;
    *v = 0;
    if (qkv_json_peek(j) == '-')
        return qkv_json_fail(j, QKV_ERR_FORMAT, "negative number in %s at offset %zu", what,
                             qkv_json_offset(j));
    if (!((ch = qkv_json_peek(j)) >= '0' && ch <= '9')) {
        char exp[80];
        snprintf(exp, sizeof exp, "a non-negative integer in %s", what);
        return qkv_json_expected(j, exp);
    }
    for (; (ch = qkv_json_peek(j)) >= '0' && ch <= '9'; j->i++) {
        if (*v > (UINT64_MAX - (uint64_t)(ch - '0')) / 10)
            overflow = 1;
        *v = *v * 10 + (uint64_t)(ch - '0');
    }
    if (ch == '.' || ch == 'e' || ch == 'E')
        return qkv_json_fail(j, QKV_ERR_FORMAT, "the number in %s at offset %zu is not an integer",
                             what, at(j, start));
    if (j->s[start] == '0' && j->i - start > 1)
        return qkv_json_fail(j, QKV_ERR_FORMAT,
                             "number with a leading zero in %s at offset %zu", what, at(j, start));
    if (overflow)
        return qkv_json_fail(j, QKV_ERR_OVERFLOW,
                             "the number in %s at offset %zu does not fit in 64 bits", what,
                             at(j, start));
    return QKV_OK;
}

qkv_status qkv_json_uint_array(qkv_json *j, const char *what, uint64_t *vals, int max,
                               int *count, int *too_many)
{
    char exp[80];
    qkv_status st;
    int more;
    *count = 0;
    *too_many = 0;
    snprintf(exp, sizeof exp, "'[' opening %s", what);
    if ((st = qkv_json_open(j, '[', exp, &more)) != QKV_OK)
        return st;
    snprintf(exp, sizeof exp, "',' or ']' in %s", what);
    while (more) {
        uint64_t v;
        qkv_json_skip_ws(j);
        if ((st = qkv_json_uint(j, what, &v)) != QKV_OK)
            return st;
        if (*count == max) {
            *too_many = 1;
            return QKV_OK;
        }
        vals[(*count)++] = v;
        if ((st = qkv_json_next(j, ']', exp, &more)) != QKV_OK)
            return st;
    }
    return QKV_OK;
}
