/* NumPy .npy files (format 1.0, 2.0, 3.0): a strict reader that parses the
 * header as the Python dict literal it is, and a writer whose output is byte
 * for byte what numpy.save writes. Only C order, little-endian (or byte-order
 * free) f4 f8 f2 b1 i4 i8; everything else is refused with a clear detail. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* fileno, fstat, strerror_r, mmap */
#endif
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* madvise, MADV_POPULATE_READ */
#endif

#include "common.h"
#include "io/io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#if defined(QKV_HAVE_MMAP)
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#define NPY_MAGIC "\x93NUMPY"
#define NPY_ALIGN 64 /* numpy.save aligns the data to 64 bytes */
/* numpy.save leaves room after the header for the first dim to grow to
 * this many digits, so that appending can rewrite the header in place. */
#define NPY_GROWTH_DIGITS 21

_Static_assert(QKV_ARRAY_MAX_DIMS * 24 + 200 < 1024,
               "qkv_npy_write's header buffer must hold the largest header");

static const struct {
    const char *descr;
    qkv_dtype dtype;
} npy_types[] = {
    {"<f4", QKV_DTYPE_F32}, {"<f8", QKV_DTYPE_F64}, {"<f2", QKV_DTYPE_F16},
    {"|b1", QKV_DTYPE_BOOL}, {"<i4", QKV_DTYPE_I32}, {"<i8", QKV_DTYPE_I64},
};
#define NPY_NTYPES (sizeof npy_types / sizeof npy_types[0])

/* The longest header read: the dict this reader takes (six dtypes, up to
 * 32 dims) fits in well under 1 KiB with numpy's padding, so a length far
 * past that is a broken or hostile file, refused before anything is
 * allocated for it (a pipe cannot show its size first). NumPy's own
 * np.load refuses headers past 10000 bytes by default. */
#define NPY_MAX_READ_HEADER ((size_t)1 << 20)

/* What a parsed header promises. */
typedef struct npy_info {
    qkv_dtype dtype;
    int ndim;
    int64_t shape[QKV_ARRAY_MAX_DIMS];
    int64_t nbytes;
} npy_info;


static uint32_t load_le(const unsigned char *b, int n)
{
    uint32_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

/* Checks magic and version of the first len bytes; gives the major version,
 * where the header starts and its length. */
static qkv_status npy_preamble(const unsigned char *b, size_t len, const char *name,
                               int *major, size_t *hstart, size_t *hlen)
{
    if (memcmp(b, NPY_MAGIC, len < 6 ? len : 6) != 0)
        return qkv_file_fail(QKV_ERR_FORMAT, name,
                             "not a .npy file (it does not start with \\x93NUMPY)");
    if (len < 8)
        return qkv_file_fail(QKV_ERR_FORMAT, name, "truncated: %zu bytes, no format version",
                             len);
    if (b[6] < 1 || b[6] > 3 || b[7] != 0)
        return qkv_file_fail(QKV_ERR_FORMAT, name,
                             "unsupported .npy format version %d.%d (1.0, 2.0 and 3.0 are "
                             "read)",
                             b[6], b[7]);
    *major = b[6];
    *hstart = *major == 1 ? 10 : 12;
    if (len < *hstart)
        return qkv_file_fail(QKV_ERR_FORMAT, name, "truncated: %zu bytes, no header length",
                             len);
    *hlen = load_le(b + 8, *major == 1 ? 2 : 4);
    return QKV_OK;
}

/* ------------------------------------------------------- header parsing */

/* The header is a Python dict literal; this walks it with a cursor. */
typedef struct cursor {
    const char *s;
    size_t n, i;
    const char *name;
    int major;
} cursor;

static int peek(const cursor *c) { return c->i < c->n ? (unsigned char)c->s[c->i] : -1; }

static int is_digit(int ch) { return ch >= '0' && ch <= '9'; }

static void skip_space(cursor *c)
{
    /* Whitespace Python allows inside the braces. */
    int ch;
    while ((ch = peek(c)) == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f')
        c->i++;
}

static qkv_status syntax(const cursor *c, const char *expected)
{
    char buf[24];
    return qkv_file_fail(QKV_ERR_FORMAT, c->name, "header: expected %s at offset %zu, found %s",
                         expected, c->i, qkv_byte_name(buf, peek(c), "the end"));
}

/* A quoted string without escapes (NumPy never writes any). */
static qkv_status parse_string(cursor *c, const char **str, size_t *len)
{
    int q = peek(c);
    size_t start;
    if (q != '\'' && q != '"')
        return syntax(c, "a quoted string");
    start = ++c->i;
    for (int ch = peek(c); ch != q; ch = peek(c)) {
        if (ch < 0 || ch == '\n')
            return qkv_file_fail(QKV_ERR_FORMAT, c->name,
                                 "header: unterminated string at offset %zu", start - 1);
        if (ch == '\\' || ch < 0x20 || ch >= 0x7f)
            return syntax(c, "a plain printable ASCII character in the string");
        c->i++;
    }
    *str = c->s + start;
    *len = c->i - start;
    c->i++;
    return QKV_OK;
}

static int str_is(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

static qkv_status parse_descr(cursor *c, npy_info *h)
{
    const char *s;
    size_t len;
    qkv_status st;
    if (peek(c) == '[')
        return qkv_file_fail(QKV_ERR_FORMAT, c->name, "structured dtypes are not supported");
    if ((st = parse_string(c, &s, &len)) != QKV_OK)
        return st;
    for (size_t k = 0; k < NPY_NTYPES; k++)
        if (str_is(s, len, npy_types[k].descr)) {
            h->dtype = npy_types[k].dtype;
            return QKV_OK;
        }
    if (len > 0 && s[0] == '>')
        return qkv_file_fail(QKV_ERR_FORMAT, c->name,
                             "big-endian data is not supported (descr '%.*s')",
                             (int)(len < 40 ? len : 40), s);
    return qkv_file_fail(QKV_ERR_FORMAT, c->name,
                         "unsupported dtype descr '%.*s' (supported: <f4 <f8 <f2 |b1 <i4 "
                         "<i8)",
                         (int)(len < 40 ? len : 40), s);
}

static qkv_status parse_fortran(cursor *c)
{
    size_t start = c->i;
    int ch;
    while ((ch = peek(c)) == '_' || is_digit(ch) || (ch >= 'A' && ch <= 'Z') ||
           (ch >= 'a' && ch <= 'z'))
        c->i++;
    if (str_is(c->s + start, c->i - start, "False"))
        return QKV_OK;
    if (str_is(c->s + start, c->i - start, "True"))
        return qkv_file_fail(QKV_ERR_FORMAT, c->name,
                             "Fortran-order arrays are not supported (fortran_order is True)");
    c->i = start;
    return syntax(c, "True or False for 'fortran_order'");
}

static qkv_status parse_dim(cursor *c, int64_t *dim)
{
    size_t start = c->i;
    int64_t v = 0;
    int overflow = 0, ch;
    if (peek(c) == '-')
        return qkv_file_fail(QKV_ERR_FORMAT, c->name,
                             "header: negative dimension in 'shape' at offset %zu", c->i);
    if (!is_digit(peek(c)))
        return syntax(c, "a non-negative integer in 'shape'");
    for (; is_digit(ch = peek(c)); c->i++)
        if (!qkv_mul_ok(v, 10, &v) || !qkv_add_ok(v, ch - '0', &v))
            overflow = 1;
    if (overflow)
        return qkv_file_fail(QKV_ERR_OVERFLOW, c->name,
                             "header: dimension %.*s%s does not fit in 64 bits",
                             (int)(c->i - start < 30 ? c->i - start : 30), c->s + start,
                             c->i - start > 30 ? "..." : "");
    if (c->s[start] == '0' && c->i - start > 1)
        return qkv_file_fail(QKV_ERR_FORMAT, c->name,
                             "header: dimension with a leading zero at offset %zu", start);
    /* Headers written by Python 2 spell ints as 2L; NumPy's own reader
     * accepts that in the formats of that era. */
    if (c->major < 3 && peek(c) == 'L')
        c->i++;
    ch = peek(c);
    if (ch == '.' || ch == '_' || is_digit(ch) || (ch >= 'A' && ch <= 'Z') ||
        (ch >= 'a' && ch <= 'z'))
        return qkv_file_fail(QKV_ERR_FORMAT, c->name,
                             "header: dimension at offset %zu is not an integer", start);
    *dim = v;
    return QKV_OK;
}

/* A tuple of ints, as Python writes it: (), (5,), (2, 3), (2, 3,). */
static qkv_status parse_shape(cursor *c, npy_info *h)
{
    qkv_status st;
    if (peek(c) != '(')
        return syntax(c, "a tuple for 'shape'");
    c->i++;
    skip_space(c);
    h->ndim = 0;
    while (peek(c) != ')') {
        if (h->ndim == QKV_ARRAY_MAX_DIMS)
            return qkv_file_fail(QKV_ERR_FORMAT, c->name,
                                 "header: 'shape' has more than %d dimensions",
                                 QKV_ARRAY_MAX_DIMS);
        if ((st = parse_dim(c, &h->shape[h->ndim++])) != QKV_OK)
            return st;
        skip_space(c);
        if (peek(c) == ',') {
            c->i++;
            skip_space(c);
        } else if (peek(c) != ')') {
            return syntax(c, "',' or ')' in 'shape'");
        } else if (h->ndim == 1) {
            /* (5) is the int 5 in Python, not a tuple. */
            return qkv_file_fail(QKV_ERR_FORMAT, c->name,
                                 "header: 'shape' (%" PRId64 ") is not a tuple; a one-element "
                                 "tuple needs a trailing comma",
                                 h->shape[0]);
        }
    }
    c->i++;
    return QKV_OK;
}

static qkv_status parse_dict(cursor *c, npy_info *h)
{
    static const char *const keys[3] = {"descr", "fortran_order", "shape"};
    int seen[3] = {0, 0, 0};
    qkv_status st;
    skip_space(c);
    if (peek(c) != '{')
        return syntax(c, "'{' opening the header dict");
    c->i++;
    for (;;) {
        const char *key;
        size_t len;
        int k;
        skip_space(c);
        if (peek(c) == '}')
            break;
        if ((st = parse_string(c, &key, &len)) != QKV_OK)
            return st;
        for (k = 0; k < 3 && !str_is(key, len, keys[k]); k++)
            ;
        if (k == 3)
            return qkv_file_fail(QKV_ERR_FORMAT, c->name,
                                 "header: unexpected key '%.*s' (only 'descr', "
                                 "'fortran_order' and 'shape' are allowed)",
                                 (int)(len < 40 ? len : 40), key);
        if (seen[k]++)
            return qkv_file_fail(QKV_ERR_FORMAT, c->name, "header: duplicate key '%s'",
                                 keys[k]);
        skip_space(c);
        if (peek(c) != ':')
            return syntax(c, "':' after the key");
        c->i++;
        skip_space(c);
        st = k == 0 ? parse_descr(c, h) : k == 1 ? parse_fortran(c) : parse_shape(c, h);
        if (st != QKV_OK)
            return st;
        skip_space(c);
        if (peek(c) == ',')
            c->i++;
        else if (peek(c) != '}')
            return syntax(c, "',' or '}' after a value");
    }
    c->i++;
    skip_space(c);
    if (c->i != c->n)
        return syntax(c, "only whitespace after the closing '}'");
    for (int k = 0; k < 3; k++)
        if (!seen[k])
            return qkv_file_fail(QKV_ERR_FORMAT, c->name, "header: missing key '%s'", keys[k]);
    return QKV_OK;
}

/* Parses the hlen header bytes at s into *h, including the data size. */
static qkv_status parse_header(const char *s, size_t hlen, int major, const char *name,
                             npy_info *h)
{
    cursor c = {s, hlen, 0, name, major};
    int64_t n = 1;
    int zero = 0;
    qkv_status st;
    if (hlen == 0 || s[hlen - 1] != '\n')
        return qkv_file_fail(QKV_ERR_FORMAT, name, "header does not end with a newline");
    if ((st = parse_dict(&c, h)) != QKV_OK)
        return st;
    /* As NumPy does, refuse shapes whose nonzero dims overflow even if
     * another dim is 0. */
    for (int i = 0; i < h->ndim; i++) {
        if (h->shape[i] == 0)
            zero = 1;
        else if (!qkv_mul_ok(n, h->shape[i], &n))
            return qkv_file_fail(QKV_ERR_OVERFLOW, name,
                                 "shape has more elements than fit in 64 bits");
    }
    if (!qkv_mul_ok(n, (int64_t)qkv_dtype_size(h->dtype), &h->nbytes))
        return qkv_file_fail(QKV_ERR_OVERFLOW, name, "data size does not fit in 64 bits");
    if (zero)
        h->nbytes = 0;
    return QKV_OK;
}

static qkv_status check_data_size(const char *name, int64_t want, uint64_t have)
{
    if (have < (uint64_t)want)
        return qkv_file_fail(QKV_ERR_FORMAT, name,
                             "truncated: header says %" PRId64 " bytes of data, file has %" PRIu64,
                             want, have);
    if (have > (uint64_t)want)
        return qkv_file_fail(QKV_ERR_FORMAT, name,
                             "trailing bytes: header says %" PRId64
                             " bytes of data, file has %" PRIu64,
                             want, have);
    return QKV_OK;
}

/* Gives out the header's dtype and shape and a fresh data buffer (at least
 * one byte, so that a successful read always has data). */
static qkv_status alloc_array(qkv_array *out, const npy_info *h, const char *name)
{
    if ((uint64_t)h->nbytes > SIZE_MAX ||
        !(out->data = qkv_alloc(h->nbytes ? (size_t)h->nbytes : 1)))
        return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, name, "cannot allocate %" PRId64 " bytes",
                             h->nbytes);
    out->dtype = h->dtype;
    out->ndim = h->ndim;
    memcpy(out->shape, h->shape, (size_t)h->ndim * sizeof h->shape[0]);
    return QKV_OK;
}

static qkv_status check_header_length(const char *name, size_t hlen)
{
    if (hlen > NPY_MAX_READ_HEADER)
        return qkv_file_fail(QKV_ERR_FORMAT, name,
                             "header length %zu is more than the %zu bytes a header may have",
                             hlen, NPY_MAX_READ_HEADER);
    return QKV_OK;
}

/* A whole file's len bytes at b checked: the header into *h, and where
 * the data starts (whose size matches the header's promise). */
static qkv_status parse_buffer(const unsigned char *b, size_t len, const char *nm, npy_info *h,
                               size_t *data_at)
{
    size_t hstart, hlen;
    int major;
    qkv_status st;
    if ((st = npy_preamble(b, len, nm, &major, &hstart, &hlen)) != QKV_OK)
        return st;
    if (hlen > len - hstart)
        return qkv_file_fail(QKV_ERR_FORMAT, nm,
                             "header length %zu runs past the end of the file (%zu bytes)", hlen,
                             len);
    if ((st = check_header_length(nm, hlen)) != QKV_OK ||
        (st = parse_header((const char *)b + hstart, hlen, major, nm, h)) != QKV_OK ||
        (st = check_data_size(nm, h->nbytes, len - hstart - hlen)) != QKV_OK)
        return st;
    *data_at = hstart + hlen;
    return QKV_OK;
}

qkv_status qkv_npy_parse(const void *buf, size_t len, const char *name, qkv_array *out)
{
    const unsigned char *b = len ? buf : (const void *)"";
    const char *nm = name ? name : "<buffer>";
    size_t at;
    npy_info h;
    qkv_status st;
    qkv_clear_error();
    if (!out)
        return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, nm, "qkv_npy_parse: out is NULL");
    memset(out, 0, sizeof *out);
    if (!buf && len > 0)
        return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, nm, "qkv_npy_parse: buf is NULL");
    if ((st = parse_buffer(b, len, nm, &h, &at)) != QKV_OK ||
        (st = alloc_array(out, &h, nm)) != QKV_OK)
        return st;
    memcpy(out->data, b + at, (size_t)h.nbytes);
    if (!qkv_host_little_endian())
        qkv_swap_elements(out->data, (size_t)h.nbytes, qkv_dtype_size(h.dtype));
    return QKV_OK;
}

/* ------------------------------------------------------------ file read */

/* fread that tells a read error from end of file. */
static qkv_status read_bytes(FILE *f, const char *path, void *p, size_t n, size_t *got)
{
    *got = fread(p, 1, n, f);
    if (*got < n && ferror(f))
        return qkv_io_fail(path, "read failed", errno);
    return QKV_OK;
}

/* Reads the preamble and header first, then the data straight into the
 * array, so that a file never sits in memory twice. */
static qkv_status read_npy(FILE *f, const char *path, qkv_array *out)
{
    unsigned char pre[12];
    char *hdr;
    size_t got, more, hstart = 0, hlen = 0;
    unsigned char rest[1];
    int major = 0;
    npy_info h;
    struct stat sb;
    qkv_status st;
    if (fstat(fileno(f), &sb) != 0)
        return qkv_io_fail(path, "cannot stat", errno);
    if (S_ISDIR(sb.st_mode))
        return qkv_file_fail(QKV_ERR_IO, path, "is a directory");
    /* 10 bytes hold a 1.0 preamble; later versions have 2 more. */
    if ((st = read_bytes(f, path, pre, 10, &got)) != QKV_OK)
        return st;
    if (got == 10 && memcmp(pre, NPY_MAGIC, 6) == 0 && pre[6] > 1) {
        if ((st = read_bytes(f, path, pre + 10, 2, &more)) != QKV_OK)
            return st;
        got += more;
    }
    if ((st = npy_preamble(pre, got, path, &major, &hstart, &hlen)) != QKV_OK)
        return st;
    /* A regular file's size exposes a lying header before any allocation. */
    if (S_ISREG(sb.st_mode) && (uint64_t)sb.st_size < (uint64_t)hstart + hlen)
        return qkv_file_fail(QKV_ERR_FORMAT, path,
                             "header length %zu runs past the end of the file (%" PRIu64
                             " bytes)",
                             hlen, (uint64_t)sb.st_size);
    if ((st = check_header_length(path, hlen)) != QKV_OK)
        return st;
    if (!(hdr = malloc(hlen ? hlen : 1)))
        return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, path, "cannot allocate %zu bytes", hlen);
    st = read_bytes(f, path, hdr, hlen, &got);
    if (st == QKV_OK && got < hlen)
        st = qkv_file_fail(QKV_ERR_FORMAT, path,
                           "header length %zu runs past the end of the file (%zu bytes)", hlen,
                           hstart + got);
    if (st == QKV_OK)
        st = parse_header(hdr, hlen, major, path, &h);
    free(hdr);
    if (st != QKV_OK)
        return st;
    if (S_ISREG(sb.st_mode) &&
        (st = check_data_size(path, h.nbytes,
                              (uint64_t)sb.st_size - hstart - hlen)) != QKV_OK)
        return st;
    if ((st = alloc_array(out, &h, path)) != QKV_OK ||
        (st = read_bytes(f, path, out->data, (size_t)h.nbytes, &got)) != QKV_OK ||
        (st = check_data_size(path, h.nbytes, got)) != QKV_OK)
        return st;
    /* A pipe (or a file that grew since fstat) may go on for ever, as
     * /dev/zero does: one byte past the data settles it. */
    if ((st = read_bytes(f, path, rest, 1, &more)) != QKV_OK)
        return st;
    if (more)
        return qkv_file_fail(QKV_ERR_FORMAT, path,
                             "trailing bytes after the %" PRId64 " bytes of data the header "
                             "promises",
                             h.nbytes);
    if (!qkv_host_little_endian())
        qkv_swap_elements(out->data, (size_t)h.nbytes, qkv_dtype_size(h.dtype));
    return QKV_OK;
}

/* read_npy on an open file, which it closes (read-only: nothing to lose
 * on close); *out is freed on failure. */
static qkv_status read_and_close(FILE *f, const char *path, qkv_array *out)
{
    qkv_status st = read_npy(f, path, out);
    fclose(f);
    if (st != QKV_OK)
        qkv_array_free(out);
    return st;
}

#if defined(QKV_HAVE_MMAP)
/* The same on an open descriptor, which it closes. */
static qkv_status read_fd(int fd, const char *path, qkv_array *out)
{
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        const int err = errno;
        close(fd);
        return qkv_io_fail(path, "cannot open", err);
    }
    return read_and_close(f, path, out);
}
#endif

qkv_status qkv_npy_read(const char *path, qkv_array *out)
{
    FILE *f;
    qkv_clear_error();
    if (!out)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_npy_read: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_npy_read: path is NULL");
    if (!(f = fopen(path, "rb")))
        return qkv_io_fail(path, "cannot open", errno);
    return read_and_close(f, path, out);
}

/* ----------------------------------------------------------- file write */

/* The largest header: 32 dims of 19 digits, growth room and padding; far
 * below 64 KiB, so version 1.0 always suffices (NumPy moves to 2.0 only
 * past that). */
#define NPY_MAX_HEADER 1024

/* The preamble and header numpy.save writes for a's dtype and shape into
 * hdr (NPY_MAX_HEADER bytes), its length into *len, the data's size into
 * *nbytes; a->data is not looked at. */
static qkv_status build_header(const char *path, const qkv_array *a, unsigned char *out,
                               size_t *out_len, int64_t *out_nbytes)
{
    char *hdr = (char *)out + 10;
    char shape[QKV_ARRAY_MAX_DIMS * 24 + 8];
    const char *descr = NULL;
    size_t pos = 0, len, pad;
    int64_t numel, nbytes;
    if (a->ndim < 0 || a->ndim > QKV_ARRAY_MAX_DIMS)
        return qkv_file_fail(QKV_ERR_INVALID_ARGUMENT, path, "ndim %d is outside 0..%d",
                             a->ndim, QKV_ARRAY_MAX_DIMS);
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] < 0)
            return qkv_file_fail(QKV_ERR_INVALID_ARGUMENT, path,
                                 "shape[%d] is %" PRId64 ", negative", i, a->shape[i]);
    if (a->dtype == QKV_DTYPE_BF16)
        return qkv_file_fail(QKV_ERR_DTYPE, path,
                             ".npy has no bfloat16; convert to f32 first");
    for (size_t k = 0; k < NPY_NTYPES; k++)
        if (npy_types[k].dtype == a->dtype)
            descr = npy_types[k].descr;
    if (!descr)
        return qkv_file_fail(QKV_ERR_DTYPE, path, "dtype %d is unknown", (int)a->dtype);
    numel = qkv_array_numel(a);
    if (numel < 0 || !qkv_mul_ok(numel, (int64_t)qkv_dtype_size(a->dtype), &nbytes) ||
        (uint64_t)nbytes > SIZE_MAX)
        return qkv_file_fail(QKV_ERR_OVERFLOW, path, "the array's size overflows");

    /* Python's repr of the shape tuple: (), (5,), (2, 3). */
    shape[pos++] = '(';
    for (int i = 0; i < a->ndim; i++)
        pos += (size_t)snprintf(shape + pos, sizeof shape - pos, "%s%" PRId64,
                                i ? ", " : "", a->shape[i]);
    snprintf(shape + pos, sizeof shape - pos, "%s", a->ndim == 1 ? ",)" : ")");
    len = (size_t)snprintf(hdr, NPY_MAX_HEADER - 10,
                           "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
                           shape);
    if (a->ndim > 0) {
        size_t room = NPY_GROWTH_DIGITS - (size_t)snprintf(NULL, 0, "%" PRId64, a->shape[0]);
        memset(hdr + len, ' ', room);
        len += room;
    }
    /* Spaces and a final newline pad magic + length + header to the
     * alignment; like numpy.save, at least one space. */
    pad = NPY_ALIGN - (10 + len + 1) % NPY_ALIGN;
    memset(hdr + len, ' ', pad);
    len += pad;
    hdr[len++] = '\n';
    const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)len,
                                   (unsigned char)(len >> 8)};
    memcpy(out, pre, sizeof pre);
    *out_len = sizeof pre + len;
    *out_nbytes = nbytes;
    return QKV_OK;
}

qkv_status qkv_npy_write(const char *path, const qkv_array *a)
{
    unsigned char hdr[NPY_MAX_HEADER];
    size_t len;
    int64_t nbytes;
    qkv_status st;
    FILE *f;
    qkv_clear_error();
    if (!path)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_npy_write: path is NULL");
    if (!a)
        return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, path, "qkv_npy_write: array is NULL");
    if ((st = build_header(path, a, hdr, &len, &nbytes)) != QKV_OK)
        return st;
    if (nbytes > 0 && !a->data)
        return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, path, "data is NULL");
    if (!(f = fopen(path, "wb")))
        return qkv_io_fail(path, "cannot open for writing", errno);
    const int ok = fwrite(hdr, 1, len, f) == len &&
                   qkv_write_le(f, a->data, (size_t)nbytes, qkv_dtype_size(a->dtype));
    return qkv_close_written(f, path, ok);
}

/* ------------------------------------------------------ mapped files */

/* Mapping is worth it for large inputs: the file's pages are taken from the
 * page cache as they are, where reading would zero fresh memory and then
 * copy every byte into it. */
qkv_status qkv_npy_map(const char *path, qkv_array *out)
{
#if defined(QKV_HAVE_MMAP)
    qkv_clear_error();
    if (!out)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_npy_map: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_npy_map: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qkv_io_fail(path, "cannot open", errno);
    struct stat sb;
    /* What cannot be mapped as it is (a pipe, an empty or huge-for-size_t
     * file, a big-endian host, which must swap) is read. */
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 1 ||
        (uint64_t)sb.st_size > SIZE_MAX || !qkv_host_little_endian())
        return read_fd(fd, path, out); /* the same open file: a FIFO has one go */
    const size_t size = (size_t)sb.st_size;
    unsigned char *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd); /* the mapping keeps the file */
    if (base == MAP_FAILED)
        return qkv_npy_read(path, out);
    npy_info h;
    size_t at;
    qkv_status st = parse_buffer(base, size, path, &h, &at);
    if (st == QKV_OK && (h.nbytes == 0 || at % qkv_dtype_size(h.dtype) != 0)) {
        /* No data to point at, or data misaligned for its elements. */
        munmap(base, size);
        return qkv_npy_read(path, out);
    }
    if (st == QKV_OK && !qkv_mapping_add(base + at, base, size))
        st = qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, path, "cannot allocate a mapping's record");
    if (st != QKV_OK) {
        munmap(base, size);
        return st;
    }
#if defined(MADV_POPULATE_READ)
    /* Map every page now, in one call, rather than fault them one by one
     * in the hot loops; the pages are the page cache's, nothing is copied.
     * Advice only: older kernels say EINVAL. */
    (void)madvise(base, size, MADV_POPULATE_READ);
#endif
    out->data = base + at;
    out->dtype = h.dtype;
    out->ndim = h.ndim;
    memcpy(out->shape, h.shape, (size_t)h.ndim * sizeof h.shape[0]);
    return QKV_OK;
#else
    return qkv_npy_read(path, out);
#endif
}

qkv_status qkv_npy_create(const char *path, qkv_dtype dtype, int ndim, const int64_t *shape,
                          qkv_array *out)
{
    unsigned char hdr[NPY_MAX_HEADER];
    size_t len;
    int64_t nbytes;
    qkv_status st;
    qkv_clear_error();
    if (!out)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_npy_create: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_npy_create: path is NULL");
    if (!shape && ndim > 0)
        return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, path, "qkv_npy_create: shape is NULL");
    qkv_array a = {0};
    a.dtype = dtype;
    a.ndim = ndim;
    for (int d = 0; d < ndim && d < QKV_ARRAY_MAX_DIMS; d++) a.shape[d] = shape[d];
    if ((st = build_header(path, &a, hdr, &len, &nbytes)) != QKV_OK)
        return st;
    if ((uint64_t)nbytes > SIZE_MAX - len)
        return qkv_file_fail(QKV_ERR_OVERFLOW, path, "the array's size overflows");
#if defined(QKV_HAVE_MMAP)
    if (nbytes > 0 && qkv_host_little_endian()) {
        const size_t total = len + (size_t)nbytes;
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (fd < 0)
            return qkv_io_fail(path, "cannot open for writing", errno);
        /* Reserve the blocks now: a full disk is this call's error, never
         * a SIGBUS when a page of the mapping is first written. */
        int err = posix_fallocate(fd, 0, (off_t)total);
        const char *what = "cannot reserve space";
        unsigned char *base = err ? MAP_FAILED
                                  : mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (!err && base == MAP_FAILED) {
            err = errno;
            what = "cannot map";
        }
        close(fd);
        if (!err && !qkv_mapping_add(base + len, base, total)) {
            munmap(base, total);
            return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, path, "cannot allocate a mapping's record");
        }
        if (err)
            return qkv_io_fail(path, what, err);
        memcpy(base, hdr, len);
        out->data = base + len;
        out->dtype = dtype;
        out->ndim = ndim;
        memcpy(out->shape, a.shape, (size_t)ndim * sizeof a.shape[0]);
        return QKV_OK;
    }
#endif
    if (nbytes > 0)
        return qkv_file_fail(QKV_ERR_UNSUPPORTED, path,
                             "qkv_npy_create: files cannot be mapped on this system");
    /* No data: the header is the whole file, written now. */
    if (!(a.data = qkv_alloc(1)))
        return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, path, "cannot allocate 1 byte");
    if ((st = qkv_npy_write(path, &a)) != QKV_OK) {
        qkv_free(a.data);
        return st;
    }
    *out = a;
    return QKV_OK;
}
