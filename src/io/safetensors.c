/* .safetensors files: a strict reader, which reads the header's JSON with
 * io/json.h in the one shape the format allows (so it needs no recursion
 * and no general values), and a writer. The whole file is kept in memory; tensors are copied out of
 * it on request, so unaligned data offsets are harmless. A pipe is read no
 * further than its header length and data_offsets promise, plus one byte to
 * see that it ends there. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* fileno, fstat, strerror_r */
#endif

#include "common.h"
#include "io/io.h"
#include "io/json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ST_NO_QKV (-1) /* a format dtype without a qkv_dtype */

/* The most header bytes a file may declare: the reference implementation's
 * limit (MAX_HEADER_SIZE in the safetensors crate). Real headers are
 * kilobytes; the limit keeps a stream's length field from being believed. */
#define ST_MAX_HEADER 100000000u

/* Every dtype the format defines, with its width in bits (F4 and the F6
 * pair are packed below a byte) and the qkv_dtype it maps to, if any. */
static const struct {
    const char *name;
    int bits;
    int qkv;
} st_dtypes[] = {
    {"F64", 64, QKV_DTYPE_F64},   {"F32", 32, QKV_DTYPE_F32},
    {"F16", 16, QKV_DTYPE_F16},   {"BF16", 16, QKV_DTYPE_BF16},
    {"I64", 64, QKV_DTYPE_I64},   {"I32", 32, QKV_DTYPE_I32},
    {"BOOL", 8, QKV_DTYPE_BOOL},  {"I16", 16, ST_NO_QKV},
    {"I8", 8, ST_NO_QKV},         {"U64", 64, ST_NO_QKV},
    {"U32", 32, ST_NO_QKV},       {"U16", 16, ST_NO_QKV},
    {"U8", 8, ST_NO_QKV},         {"C64", 64, ST_NO_QKV},
    {"F8_E4M3", 8, ST_NO_QKV},    {"F8_E5M2", 8, ST_NO_QKV},
    {"F8_E8M0", 8, ST_NO_QKV},    {"F8_E4M3FNUZ", 8, ST_NO_QKV},
    {"F8_E5M2FNUZ", 8, ST_NO_QKV}, {"F6_E2M3", 6, ST_NO_QKV},
    {"F6_E3M2", 6, ST_NO_QKV},    {"F4", 4, ST_NO_QKV},
};
#define ST_NDTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

typedef struct st_tensor {
    const char *name; /* in the parser's string arena */
    int dt;           /* index into st_dtypes */
    int ndim;
    int64_t shape[QKV_ARRAY_MAX_DIMS];
    uint64_t begin, end; /* byte range within the data section */
} st_tensor;

/* A name and where it is; sorted by name for lookups. */
typedef struct st_key {
    const char *s;
    size_t len;
    int64_t idx;
} st_key;

struct qkv_safetensors {
    char *file;                /* the name used in error details */
    unsigned char *image;      /* the whole file */
    const unsigned char *data; /* its data section */
    uint64_t data_len;
    char *arena;               /* every decoded header string, NUL-terminated */
    int64_t count;
    st_tensor *t;              /* in the header's order */
    st_key *by_name;           /* count entries sorted by name */
};


/* A tensor name fit for a one-line message: at most 60 bytes (cut at a
 * character boundary, "..." added), control bytes shown as '?'. */
static const char *show(char *buf, size_t cap, const char *s)
{
    size_t n = 0, i = 0, limit = cap - 4 < 60 ? cap - 4 : 60;
    for (; s[i] && n < limit; i++)
        buf[n++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s[i]) {
        /* buf holds s[0..n) byte for byte, so back up to a character start. */
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

/* "[2, 3]", cut short with "...]" when it does not fit. */
static const char *show_shape(char *buf, size_t cap, const st_tensor *t)
{
    size_t n = 1;
    buf[0] = '[';
    for (int i = 0; i < t->ndim; i++) {
        int w = snprintf(buf + n, cap - n, "%s%" PRId64, i ? ", " : "", t->shape[i]);
        if (w < 0 || (size_t)w + 5 >= cap - n) {
            snprintf(buf + n, cap - n, "...");
            n += 3;
            break;
        }
        n += (size_t)w;
    }
    snprintf(buf + n, cap - n, "]");
    return buf;
}

/* ------------------------------------------------------- header parsing */

/* The header is JSON read with io/json.h, in the one shape the format
 * allows; its details say "header: ..." and count offsets from the start
 * of the file, as a hex dump shows them. */

static int str_is(const char *s, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

/* The entry of one tensor: an object with exactly dtype, shape and
 * data_offsets. Checks its size against its byte range. */
static qkv_status parse_tensor(qkv_json *c, st_tensor *t, uint64_t data_len)
{
    static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
    int seen[3] = {0, 0, 0};
    char nm[72], sh[160];
    uint64_t off[2] = {0, 0}, dims[QKV_ARRAY_MAX_DIMS];
    int64_t numel = 1, bits, nbytes;
    int zero = 0, more;
    qkv_status st;
    if (qkv_json_peek(c) != '{')
        return qkv_json_fail(c, QKV_ERR_FORMAT, "tensor '%s': expected an object at offset %zu",
                             show(nm, sizeof nm, t->name), qkv_json_offset(c));
    if ((st = qkv_json_open(c, '{', "'{'", &more)) != QKV_OK)
        return st;
    if (!more)
        return qkv_file_fail(QKV_ERR_FORMAT, c->file, "tensor '%s': missing field 'dtype'",
                             show(nm, sizeof nm, t->name));
    while (more) {
        const char *key;
        size_t len, mark = c->used;
        int k;
        qkv_json_skip_ws(c);
        if ((st = qkv_json_string(c, "a quoted field name", &key, &len)) != QKV_OK)
            return st;
        for (k = 0; k < 3 && !str_is(key, len, fields[k]); k++)
            ;
        if (k == 3)
            return qkv_file_fail(QKV_ERR_FORMAT, c->file,
                                 "tensor '%s': unknown field '%s' (only dtype, shape and "
                                 "data_offsets are allowed)",
                                 show(nm, sizeof nm, t->name), show(sh, 64, key));
        c->used = mark; /* field names need not be kept */
        if (seen[k]++)
            return qkv_file_fail(QKV_ERR_FORMAT, c->file, "tensor '%s': duplicate field '%s'",
                                 show(nm, sizeof nm, t->name), fields[k]);
        if ((st = qkv_json_colon(c, "':' after a field name")) != QKV_OK)
            return st;
        if (k == 0) {
            const char *dt;
            if ((st = qkv_json_string(c, "a quoted dtype", &dt, &len)) != QKV_OK)
                return st;
            for (t->dt = 0; t->dt < ST_NDTYPES && !str_is(dt, len, st_dtypes[t->dt].name);
                 t->dt++)
                ;
            if (t->dt == ST_NDTYPES)
                return qkv_file_fail(QKV_ERR_FORMAT, c->file, "tensor '%s': unknown dtype '%s'",
                                     show(nm, sizeof nm, t->name), show(sh, 64, dt));
            c->used = mark;
        } else if (k == 1) {
            int too_many;
            if ((st = qkv_json_uint_array(c, "'shape'", dims, QKV_ARRAY_MAX_DIMS, &t->ndim,
                                          &too_many)) != QKV_OK)
                return st;
            if (too_many)
                return qkv_file_fail(QKV_ERR_FORMAT, c->file,
                                     "tensor '%s': shape has more than %d dimensions, the most "
                                     "qkv handles (QKV_ARRAY_MAX_DIMS)",
                                     show(nm, sizeof nm, t->name), QKV_ARRAY_MAX_DIMS);
            for (int i = 0; i < t->ndim; i++) {
                if (dims[i] > INT64_MAX)
                    return qkv_file_fail(QKV_ERR_OVERFLOW, c->file,
                                         "tensor '%s': dimension %" PRIu64
                                         " does not fit in int64_t",
                                         show(nm, sizeof nm, t->name), dims[i]);
                t->shape[i] = (int64_t)dims[i];
            }
        } else {
            int n, too_many;
            if ((st = qkv_json_uint_array(c, "'data_offsets'", off, 2, &n, &too_many)) !=
                QKV_OK)
                return st;
            if (n != 2 || too_many)
                return qkv_file_fail(QKV_ERR_FORMAT, c->file,
                                     "tensor '%s': data_offsets must be [begin, end], two numbers",
                                     show(nm, sizeof nm, t->name));
        }
        if ((st = qkv_json_next(c, '}', "',' or '}' in a tensor's entry", &more)) != QKV_OK)
            return st;
    }
    for (int k = 0; k < 3; k++)
        if (!seen[k])
            return qkv_file_fail(QKV_ERR_FORMAT, c->file, "tensor '%s': missing field '%s'",
                                 show(nm, sizeof nm, t->name), fields[k]);

    t->begin = off[0];
    t->end = off[1];
    if (t->end < t->begin)
        return qkv_file_fail(QKV_ERR_FORMAT, c->file,
                             "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                             "] end before they begin",
                             show(nm, sizeof nm, t->name), t->begin, t->end);
    if (t->end > data_len)
        return qkv_file_fail(QKV_ERR_FORMAT, c->file,
                             "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                             "] run past the end of the data section (%" PRIu64 " bytes)",
                             show(nm, sizeof nm, t->name), t->begin, t->end, data_len);
    /* As qkv_array_numel: the nonzero dims must multiply without overflow
     * even when another dim is 0. */
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0)
            zero = 1;
        else if (!qkv_mul_ok(numel, t->shape[i], &numel))
            return qkv_file_fail(QKV_ERR_OVERFLOW, c->file,
                                 "tensor '%s': shape %s has more elements than fit in 64 bits",
                                 show(nm, sizeof nm, t->name), show_shape(sh, sizeof sh, t));
    }
    /* Whole-byte dtypes count in bytes, the packed ones (F4, F6) in bits. */
    bits = st_dtypes[t->dt].bits;
    if (!qkv_mul_ok(numel, bits % 8 ? bits : bits / 8, &nbytes))
        return qkv_file_fail(QKV_ERR_OVERFLOW, c->file,
                             "tensor '%s': shape %s of %s has more bytes than fit in 64 bits",
                             show(nm, sizeof nm, t->name), show_shape(sh, sizeof sh, t),
                             st_dtypes[t->dt].name);
    if (zero)
        nbytes = 0;
    if (bits % 8) {
        if (nbytes % 8 != 0)
            return qkv_file_fail(QKV_ERR_FORMAT, c->file,
                                 "tensor '%s': shape %s of %s is not a whole number of bytes",
                                 show(nm, sizeof nm, t->name), show_shape(sh, sizeof sh, t),
                                 st_dtypes[t->dt].name);
        nbytes /= 8;
    }
    if ((uint64_t)nbytes != t->end - t->begin)
        return qkv_file_fail(QKV_ERR_FORMAT, c->file,
                             "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                             " bytes but shape %s of %s needs %" PRId64,
                             show(nm, sizeof nm, t->name), t->begin, t->end, t->end - t->begin,
                             show_shape(sh, sizeof sh, t), st_dtypes[t->dt].name, nbytes);
    return QKV_OK;
}

static int cmp_key(const void *a, const void *b)
{
    const st_key *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->s, y->s, n);
    if (r)
        return r;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* Sorts keys by name and reports the first name that occurs twice. */
static qkv_status sort_unique(st_key *keys, size_t n, const char *file, const char *what)
{
    char nm[72];
    if (n > 1)
        qsort(keys, n, sizeof keys[0], cmp_key);
    for (size_t i = 1; i < n; i++)
        if (cmp_key(&keys[i - 1], &keys[i]) == 0)
            return qkv_file_fail(QKV_ERR_FORMAT, file, "header: duplicate %s '%s'", what,
                                 show(nm, sizeof nm, keys[i].s));
    return QKV_OK;
}

/* "__metadata__": an object mapping strings to strings. */

/* "__metadata__": an object mapping strings to strings. */
static qkv_status parse_metadata(qkv_json *c)
{
    st_key *keys = NULL;
    size_t n = 0, cap = 0;
    qkv_status st;
    int more;
    if ((st = qkv_json_open(c, '{', "an object of strings for '__metadata__'", &more)) != QKV_OK)
        return st;
    while (more) {
        const char *s;
        size_t len;
        qkv_json_skip_ws(c);
        if ((st = qkv_json_string(c, "a quoted key in '__metadata__'", &s, &len)) != QKV_OK)
            break;
        if (n == cap) {
            st_key *k2;
            cap = cap ? 2 * cap : 16;
            if (!(k2 = realloc(keys, cap * sizeof *keys))) {
                st = qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, c->file,
                                   "cannot allocate the metadata's keys");
                break;
            }
            keys = k2;
        }
        keys[n].s = s;
        keys[n].len = len;
        keys[n++].idx = 0;
        if ((st = qkv_json_colon(c, "':' after a key in '__metadata__'")) != QKV_OK ||
            (st = qkv_json_string(c, "a string value in '__metadata__'", &s, &len)) != QKV_OK ||
            (st = qkv_json_next(c, '}', "',' or '}' in '__metadata__'", &more)) != QKV_OK)
            break;
    }
    if (st == QKV_OK)
        st = sort_unique(keys, n, c->file, "key in '__metadata__'");
    free(keys);
    return st;
}

/* The header object; fills s->t and s->count. */
static qkv_status parse_header(qkv_json *c, qkv_safetensors *s)
{
    int64_t cap = 0;
    int meta = 0, more;
    qkv_status st;
    char nm[72];
    if ((st = qkv_json_open(c, '{', "'{' opening the header", &more)) != QKV_OK)
        return st;
    while (more) {
        const char *key;
        size_t len;
        qkv_json_skip_ws(c);
        if ((st = qkv_json_string(c, "a quoted tensor name", &key, &len)) != QKV_OK ||
            (st = qkv_json_colon(c, "':' after a tensor name")) != QKV_OK)
            return st;
        if (str_is(key, len, "__metadata__")) {
            if (meta++)
                return qkv_json_fail(c, QKV_ERR_FORMAT, "duplicate key '__metadata__'");
            if ((st = parse_metadata(c)) != QKV_OK)
                return st;
        } else {
            st_tensor *t;
            if (strlen(key) != len)
                return qkv_file_fail(QKV_ERR_FORMAT, c->file,
                                     "tensor '%s': the name holds U+0000, which a C string "
                                     "cannot",
                                     show(nm, sizeof nm, key));
            if (s->count == cap) {
                st_tensor *t2;
                cap = cap ? 2 * cap : 16;
                if ((uint64_t)cap > SIZE_MAX / sizeof *t2 ||
                    !(t2 = realloc(s->t, (size_t)cap * sizeof *t2)))
                    return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, c->file,
                                         "cannot allocate the tensor table");
                s->t = t2;
            }
            t = &s->t[s->count++];
            memset(t, 0, sizeof *t);
            t->name = key;
            if ((st = parse_tensor(c, t, s->data_len)) != QKV_OK)
                return st;
        }
        if ((st = qkv_json_next(c, '}', "',' or '}' after a tensor's entry", &more)) != QKV_OK)
            return st;
    }
    /* The writer pads with spaces so that the data section is aligned. */
    while (qkv_json_take(c, ' '))
        ;
    if (qkv_json_peek(c) >= 0)
        return qkv_json_expected(c, "only spaces after the header's closing '}'");
    return QKV_OK;
}

/* ---------------------------------------------------------- range tiling */

typedef struct st_range {
    uint64_t begin, end;
    int64_t idx;
} st_range;

static int cmp_range(const void *a, const void *b)
{
    const st_range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* The tensors' byte ranges, sorted, must follow each other without gap or
 * overlap from 0 to the end of the data section. */
static qkv_status check_tiling(const qkv_safetensors *s)
{
    st_range *r;
    uint64_t at = 0;
    int64_t prev = -1;
    char a[72], b[72];
    qkv_status st = QKV_OK;
    if (s->count == 0) {
        if (s->data_len)
            return qkv_file_fail(QKV_ERR_FORMAT, s->file,
                                 "the header names no tensor but the data section holds %" PRIu64
                                 " bytes",
                                 s->data_len);
        return QKV_OK;
    }
    if (!(r = malloc((size_t)s->count * sizeof *r)))
        return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, s->file, "cannot allocate %" PRId64 " ranges",
                             s->count);
    for (int64_t i = 0; i < s->count; i++) {
        r[i].begin = s->t[i].begin;
        r[i].end = s->t[i].end;
        r[i].idx = i;
    }
    qsort(r, (size_t)s->count, sizeof *r, cmp_range);
    for (int64_t i = 0; i < s->count && st == QKV_OK; i++) {
        const st_tensor *t = &s->t[r[i].idx];
        if (r[i].begin > at)
            st = qkv_file_fail(QKV_ERR_FORMAT, s->file,
                               "bytes [%" PRIu64 ", %" PRIu64 ") of the data section belong to no "
                               "tensor (a gap before tensor '%s')",
                               at, r[i].begin, show(a, sizeof a, t->name));
        else if (r[i].begin < at)
            st = qkv_file_fail(QKV_ERR_FORMAT, s->file,
                               "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                               "] overlap those of tensor '%s' [%" PRIu64 ", %" PRIu64 "]",
                               show(a, sizeof a, t->name), t->begin, t->end,
                               show(b, sizeof b, s->t[prev].name), s->t[prev].begin,
                               s->t[prev].end);
        at = r[i].end;
        if (r[i].end > r[i].begin || prev < 0)
            prev = r[i].idx;
    }
    free(r);
    if (st == QKV_OK && at != s->data_len)
        st = qkv_file_fail(QKV_ERR_FORMAT, s->file,
                           "bytes [%" PRIu64 ", %" PRIu64 ") at the end of the data section "
                           "belong to no tensor",
                           at, s->data_len);
    return st;
}

/* -------------------------------------------------------------- parsing */

/* The 8-byte header length against what is known of the file: avail is
 * how many bytes follow the length field (known is 0 for a pipe). */
static qkv_status check_hlen(const char *file, uint64_t hlen, int known, uint64_t avail)
{
    if (hlen == 0)
        return qkv_file_fail(QKV_ERR_FORMAT, file,
                             "header length 0: no JSON header follows (a .safetensors file "
                             "starts with its header's length, at least 2 for \"{}\")");
    if (known && hlen > avail)
        return qkv_file_fail(QKV_ERR_FORMAT, file,
                             "header length %" PRIu64 " runs past the end of the file (%" PRIu64
                             " bytes)",
                             hlen, avail + 8);
    if (hlen > ST_MAX_HEADER)
        return qkv_file_fail(QKV_ERR_FORMAT, file,
                             "header length %" PRIu64 " is more than the %u bytes a header may "
                             "have",
                             hlen, ST_MAX_HEADER);
    return QKV_OK;
}

/* A table for file whose image (freed on failure) holds the length field
 * and hlen header bytes at least; NULL when out of memory. */
static qkv_safetensors *new_table(unsigned char *image, const char *file)
{
    qkv_safetensors *s = calloc(1, sizeof *s);
    if (!s || !(s->file = malloc(strlen(file) + 1))) {
        free(s);
        free(image);
        qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, file, "cannot allocate the file's table");
        return NULL;
    }
    strcpy(s->file, file);
    s->image = image;
    return s;
}

/* Parses the hlen header bytes of s->image into s's table, the tensors'
 * byte ranges checked against s->data_len. UINT64_MAX there means a stream
 * whose size is unknown: the data section is then taken to end where the
 * tensors do, and s->data_len is set so. Frees s on failure. */
static qkv_status parse_table(qkv_safetensors *s, uint64_t hlen)
{
    qkv_json c;
    qkv_status st = QKV_OK;
    if (!(s->arena = malloc((size_t)hlen + 1)))
        st = qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, s->file, "cannot allocate %" PRIu64 " bytes",
                           hlen + 1);
    if (st == QKV_OK) {
        c.s = s->image + 8;
        c.n = (size_t)hlen;
        c.i = 0;
        c.base = 8; /* the length field comes first */
        c.file = s->file;
        c.what = "header";
        c.arena = s->arena;
        c.used = 0;
        st = parse_header(&c, s);
    }
    if (st == QKV_OK && s->count > 0) {
        if (!(s->by_name = malloc((size_t)s->count * sizeof *s->by_name)))
            st = qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, s->file, "cannot allocate the name index");
        else {
            for (int64_t i = 0; i < s->count; i++) {
                s->by_name[i].s = s->t[i].name;
                s->by_name[i].len = strlen(s->t[i].name);
                s->by_name[i].idx = i;
            }
            st = sort_unique(s->by_name, (size_t)s->count, s->file, "tensor name");
        }
    }
    if (st == QKV_OK && s->data_len == UINT64_MAX) {
        s->data_len = 0;
        for (int64_t i = 0; i < s->count; i++)
            if (s->t[i].end > s->data_len)
                s->data_len = s->t[i].end;
    }
    /* After the duplicate check, whose detail says more than an overlap. */
    if (st == QKV_OK)
        st = check_tiling(s);
    if (st != QKV_OK)
        qkv_safetensors_free(s);
    return st;
}

/* Parses the len bytes at image, which it takes over (freed on failure). */
static qkv_status parse_image(unsigned char *image, size_t len, const char *file,
                              qkv_safetensors **out)
{
    qkv_safetensors *s = new_table(image, file);
    uint64_t hlen = 0;
    qkv_status st = QKV_OK;
    if (!s)
        return QKV_ERR_OUT_OF_MEMORY;
    if (len < 8)
        st = qkv_file_fail(QKV_ERR_FORMAT, file,
                           "truncated: %zu bytes, shorter than the 8-byte header length", len);
    else {
        for (int k = 7; k >= 0; k--)
            hlen = hlen << 8 | image[k];
        st = check_hlen(file, hlen, 1, len - 8);
    }
    if (st != QKV_OK) {
        qkv_safetensors_free(s);
        return st;
    }
    s->data_len = len - 8 - hlen;
    if ((st = parse_table(s, hlen)) != QKV_OK)
        return st;
    s->data = image + 8 + hlen;
    *out = s;
    return QKV_OK;
}

qkv_status qkv_safetensors_parse(const void *buf, size_t len, const char *name,
                                 qkv_safetensors **out)
{
    const char *nm = name ? name : "<buffer>";
    unsigned char *image;
    qkv_clear_error();
    if (!out)
        return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, nm, "qkv_safetensors_parse: out is NULL");
    *out = NULL;
    if (!buf && len > 0)
        return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, nm, "qkv_safetensors_parse: buf is NULL");
    if (!(image = malloc(len ? len : 1)))
        return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, nm, "cannot allocate %zu bytes", len);
    if (len)
        memcpy(image, buf, len);
    return parse_image(image, len, nm, out);
}

/* Reads up to want bytes of f into *buf from offset at, growing the
 * buffer (realloc) as the bytes arrive, so that a stream which ends early
 * never costs what it promised; *got is how many came. A regular file
 * (sized set), whose size bounded want, is read in one go. */
static qkv_status read_grow(FILE *f, const char *path, unsigned char **buf, size_t at,
                            size_t want, int sized, size_t *got)
{
    size_t step = sized || want < 65536 ? want : 65536;
    *got = 0;
    for (;;) {
        unsigned char *p = realloc(*buf, at + *got + step ? at + *got + step : 1);
        size_t k;
        if (!p)
            return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, path, "cannot allocate %zu bytes",
                                 at + *got + step);
        *buf = p;
        k = fread(p + at + *got, 1, step, f);
        *got += k;
        if (k < step) {
            if (ferror(f))
                return qkv_io_fail(path, "read failed", errno);
            return QKV_OK;
        }
        if (*got == want)
            return QKV_OK;
        /* Double what is held, up to what was promised. */
        step = want - *got < *got ? want - *got : *got;
    }
}

/* Reads the length field, then the header it announces, parses it, then
 * reads the data section its offsets cover (for a regular file, what its
 * size leaves), then one byte more, which must not be there. */
static qkv_status read_file(FILE *f, const char *path, qkv_safetensors **out)
{
    struct stat sb;
    unsigned char *image = NULL;
    qkv_safetensors *s;
    uint64_t hlen = 0, avail = 0;
    size_t got;
    int known;
    qkv_status st;
    if (fstat(fileno(f), &sb) != 0)
        return qkv_io_fail(path, "cannot stat", errno);
    if (S_ISDIR(sb.st_mode))
        return qkv_file_fail(QKV_ERR_IO, path, "is a directory");
    known = S_ISREG(sb.st_mode);
    if (known && (uint64_t)sb.st_size >= SIZE_MAX)
        return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, path, "too large to read into memory");
    if ((st = read_grow(f, path, &image, 0, 8, 1, &got)) != QKV_OK) {
        free(image);
        return st;
    }
    if (got < 8) {
        free(image);
        return qkv_file_fail(QKV_ERR_FORMAT, path,
                             "truncated: %zu bytes, shorter than the 8-byte header length", got);
    }
    for (int k = 7; k >= 0; k--)
        hlen = hlen << 8 | image[k];
    if (known)
        avail = (uint64_t)sb.st_size > 8 ? (uint64_t)sb.st_size - 8 : 0;
    if ((st = check_hlen(path, hlen, known, avail)) != QKV_OK ||
        (st = read_grow(f, path, &image, 8, (size_t)hlen, known, &got)) != QKV_OK) {
        free(image);
        return st;
    }
    if (got < hlen) {
        free(image);
        return qkv_file_fail(QKV_ERR_FORMAT, path,
                             "header length %" PRIu64 " runs past the end of the file (%zu "
                             "bytes)",
                             hlen, 8 + got);
    }
    if (!(s = new_table(image, path)))
        return QKV_ERR_OUT_OF_MEMORY;
    s->data_len = known ? avail - hlen : UINT64_MAX;
    if ((st = parse_table(s, hlen)) != QKV_OK)
        return st;
    if (s->data_len > SIZE_MAX - 8 - hlen) {
        st = qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, path,
                           "the data_offsets need %" PRIu64 " bytes of data, more than can be "
                           "held in memory",
                           s->data_len);
    } else if ((st = read_grow(f, path, &s->image, 8 + (size_t)hlen, (size_t)s->data_len,
                               known, &got)) == QKV_OK) {
        unsigned char one;
        if (got < s->data_len)
            st = qkv_file_fail(QKV_ERR_FORMAT, path,
                               "truncated: the data_offsets need %" PRIu64 " bytes of data, the "
                               "file has %zu",
                               s->data_len, got);
        else if (fread(&one, 1, 1, f) == 1)
            /* A pipe, or a regular file that grew since fstat. */
            st = qkv_file_fail(QKV_ERR_FORMAT, path,
                               "trailing bytes after the %" PRIu64 " bytes of data the "
                               "data_offsets cover",
                               s->data_len);
        else if (ferror(f))
            st = qkv_io_fail(path, "read failed", errno);
    }
    if (st != QKV_OK) {
        qkv_safetensors_free(s);
        return st;
    }
    s->data = s->image + 8 + hlen;
    *out = s;
    return QKV_OK;
}

qkv_status qkv_safetensors_read(const char *path, qkv_safetensors **out)
{
    FILE *f;
    qkv_status st;
    qkv_clear_error();
    if (!out)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_safetensors_read: out is NULL");
    *out = NULL;
    if (!path)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_safetensors_read: path is NULL");
    if (!(f = fopen(path, "rb")))
        return qkv_io_fail(path, "cannot open", errno);
    st = read_file(f, path, out);
    fclose(f); /* read-only: nothing to lose on close */
    return st;
}

void qkv_safetensors_free(qkv_safetensors *st)
{
    if (!st)
        return;
    free(st->by_name);
    free(st->t);
    free(st->arena);
    free(st->image);
    free(st->file);
    free(st);
}

int64_t qkv_safetensors_count(const qkv_safetensors *st) { return st ? st->count : 0; }

const char *qkv_safetensors_name(const qkv_safetensors *st, int64_t i)
{
    return st && i >= 0 && i < st->count ? st->t[i].name : NULL;
}

static const st_tensor *lookup(const qkv_safetensors *st, const char *name)
{
    st_key key, *hit;
    if (!st || !name || st->count == 0)
        return NULL;
    key.s = name;
    key.len = strlen(name);
    key.idx = 0;
    hit = bsearch(&key, st->by_name, (size_t)st->count, sizeof key, cmp_key);
    return hit ? &st->t[hit->idx] : NULL;
}

int qkv_safetensors_find(const qkv_safetensors *st, const char *name, qkv_array *info)
{
    const st_tensor *t = lookup(st, name);
    if (!t)
        return 0;
    if (info) {
        memset(info, 0, sizeof *info);
        info->dtype = (qkv_dtype)st_dtypes[t->dt].qkv;
        info->ndim = t->ndim;
        memcpy(info->shape, t->shape, (size_t)t->ndim * sizeof t->shape[0]);
    }
    return 1;
}

const char *qkv_safetensors_dtype_str(const qkv_safetensors *st, const char *name)
{
    const st_tensor *t = lookup(st, name);
    return t ? st_dtypes[t->dt].name : NULL;
}

qkv_status qkv_safetensors_get(const qkv_safetensors *st, const char *name, qkv_dtype to,
                               qkv_array *out)
{
    const st_tensor *t;
    qkv_array src;
    size_t nbytes;
    qkv_status s;
    char nm[72];
    qkv_clear_error();
    if (!out)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_safetensors_get: out is NULL");
    memset(out, 0, sizeof *out);
    if (!st)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_safetensors_get: st is NULL");
    if (!name)
        return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, st->file, "qkv_safetensors_get: name is NULL");
    if (!(t = lookup(st, name)))
        return qkv_file_fail(QKV_ERR_INVALID_ARGUMENT, st->file, "no tensor named '%s'",
                             show(nm, sizeof nm, name));
    if (st_dtypes[t->dt].qkv == ST_NO_QKV)
        return qkv_file_fail(QKV_ERR_DTYPE, st->file,
                             "tensor '%s': dtype %s is not supported (F32, F16, BF16, F64, I32, "
                             "I64 and BOOL are)",
                             show(nm, sizeof nm, name), st_dtypes[t->dt].name);
    if (qkv_dtype_size(to) == 0)
        return qkv_file_fail(QKV_ERR_DTYPE, st->file, "tensor '%s': target dtype %d is unknown",
                             show(nm, sizeof nm, name), (int)to);
    /* A copy at malloc's alignment: the file's offsets need not be. */
    nbytes = (size_t)(t->end - t->begin);
    memset(&src, 0, sizeof src);
    src.dtype = (qkv_dtype)st_dtypes[t->dt].qkv;
    src.ndim = t->ndim;
    memcpy(src.shape, t->shape, (size_t)t->ndim * sizeof t->shape[0]);
    if (!(src.data = malloc(nbytes ? nbytes : 1)))
        return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, st->file,
                             "tensor '%s': cannot allocate %zu bytes", show(nm, sizeof nm, name),
                             nbytes);
    if (nbytes)
        memcpy(src.data, st->data + t->begin, nbytes);
    if (!qkv_host_little_endian())
        qkv_swap_elements(src.data, nbytes, qkv_dtype_size(src.dtype));
    if (src.dtype == to) {
        *out = src;
        return QKV_OK;
    }
    s = qkv_array_convert(out, &src, to);
    qkv_array_free(&src);
    if (s != QKV_OK) {
        /* Put the file and the tensor in front of the converter's words. */
        static const char prefix[] = "qkv_array_convert: ";
        char why[400];
        const char *d = qkv_error_detail();
        if (strncmp(d, prefix, sizeof prefix - 1) == 0)
            d += sizeof prefix - 1;
        snprintf(why, sizeof why, "%s", d);
        return qkv_file_fail(s, st->file, "tensor '%s': %s", show(nm, sizeof nm, name), why);
    }
    return QKV_OK;
}

/* --------------------------------------------------------------- writing */

/* A growing text buffer; ok turns 0 for good on a failed allocation. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int ok;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (!b->ok)
        return;
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap - b->n < n && cap <= SIZE_MAX / 2)
            cap *= 2;
        if (cap - b->n < n || !(p = realloc(b->p, cap))) {
            b->ok = 0;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* A JSON string literal of s (valid UTF-8, checked by the caller). */
static void sb_quoted(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        char buf[8];
        const char *esc = qkv_json_escape((unsigned char)*s, buf);
        if (esc)
            sb_str(b, esc);
        else
            sb_put(b, s, 1);
    }
    sb_put(b, "\"", 1);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Checks the arguments of qkv_safetensors_write and sizes each array. */
static qkv_status check_write_args(const char *path, int64_t n, const char *const *names,
                                   const qkv_array *arrays, int64_t *nbytes)
{
    const char **sorted;
    char nm[72];
    qkv_status st = QKV_OK;
    for (int64_t i = 0; i < n; i++) {
        const qkv_array *a = &arrays[i];
        int64_t numel;
        if (!names[i])
            return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, path, "name %" PRId64 " is NULL", i);
        if (!names[i][0])
            return qkv_file_fail(QKV_ERR_INVALID_ARGUMENT, path, "name %" PRId64 " is empty", i);
        if (!qkv_json_valid_utf8(names[i]))
            return qkv_file_fail(QKV_ERR_INVALID_ARGUMENT, path,
                                 "name %" PRId64 " is not valid UTF-8", i);
        if (strcmp(names[i], "__metadata__") == 0)
            return qkv_file_fail(QKV_ERR_INVALID_ARGUMENT, path,
                                 "'__metadata__' is reserved and cannot name a tensor");
        if (qkv_dtype_size(a->dtype) == 0)
            return qkv_file_fail(QKV_ERR_DTYPE, path, "tensor '%s': dtype %d is unknown",
                                 show(nm, sizeof nm, names[i]), (int)a->dtype);
        if (a->ndim < 0 || a->ndim > QKV_ARRAY_MAX_DIMS)
            return qkv_file_fail(QKV_ERR_INVALID_ARGUMENT, path,
                                 "tensor '%s': ndim %d is outside 0..%d",
                                 show(nm, sizeof nm, names[i]), a->ndim, QKV_ARRAY_MAX_DIMS);
        for (int d = 0; d < a->ndim; d++)
            if (a->shape[d] < 0)
                return qkv_file_fail(QKV_ERR_INVALID_ARGUMENT, path,
                                     "tensor '%s': shape[%d] is %" PRId64 ", negative",
                                     show(nm, sizeof nm, names[i]), d, a->shape[d]);
        numel = qkv_array_numel(a);
        if (numel < 0 || !qkv_mul_ok(numel, (int64_t)qkv_dtype_size(a->dtype), &nbytes[i]) ||
            (uint64_t)nbytes[i] > SIZE_MAX)
            return qkv_file_fail(QKV_ERR_OVERFLOW, path, "tensor '%s': its size overflows",
                                 show(nm, sizeof nm, names[i]));
        if (nbytes[i] > 0 && !a->data)
            return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, path, "tensor '%s': data is NULL",
                                 show(nm, sizeof nm, names[i]));
    }
    if (n < 2)
        return QKV_OK;
    if (!(sorted = malloc((size_t)n * sizeof *sorted)))
        return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, path, "cannot allocate %" PRId64 " names", n);
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str_ptr);
    for (int64_t i = 1; i < n && st == QKV_OK; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0)
            st = qkv_file_fail(QKV_ERR_INVALID_ARGUMENT, path, "duplicate name '%s'",
                               show(nm, sizeof nm, sorted[i]));
    free(sorted);
    return st;
}

static const char *format_name(qkv_dtype t)
{
    for (int k = 0; k < ST_NDTYPES; k++)
        if (st_dtypes[k].qkv == (int)t)
            return st_dtypes[k].name;
    return "?";
}

qkv_status qkv_safetensors_write(const char *path, int64_t n, const char *const *names,
                                 const qkv_array *arrays)
{
    sbuf h = {NULL, 0, 0, 1};
    int64_t *nbytes = NULL, off = 0;
    unsigned char len8[8];
    qkv_status st;
    FILE *f;
    int ok;
    qkv_clear_error();
    if (!path)
        return qkv_fail(QKV_ERR_NULL_ARGUMENT, "qkv_safetensors_write: path is NULL");
    if (n < 0)
        return qkv_file_fail(QKV_ERR_INVALID_ARGUMENT, path, "n is %" PRId64 ", negative", n);
    if (n > 0 && (!names || !arrays))
        return qkv_file_fail(QKV_ERR_NULL_ARGUMENT, path, "qkv_safetensors_write: %s is NULL",
                             names ? "arrays" : "names");
    if ((uint64_t)n > SIZE_MAX / sizeof *nbytes ||
        !(nbytes = malloc(n ? (size_t)n * sizeof *nbytes : 1)))
        return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, path, "cannot allocate %" PRId64 " sizes", n);
    if ((st = check_write_args(path, n, names, arrays, nbytes)) != QKV_OK) {
        free(nbytes);
        return st;
    }

    sb_put(&h, "{", 1);
    for (int64_t i = 0; i < n; i++) {
        char num[96];
        int64_t end;
        if (!qkv_add_ok(off, nbytes[i], &end)) {
            free(nbytes);
            free(h.p);
            return qkv_file_fail(QKV_ERR_OVERFLOW, path, "the tensors' total size overflows");
        }
        if (i)
            sb_put(&h, ",", 1);
        sb_quoted(&h, names[i]);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, format_name(arrays[i].dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < arrays[i].ndim; d++) {
            snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", arrays[i].shape[d]);
            sb_str(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRId64 ",%" PRId64 "]}", off, end);
        sb_str(&h, num);
        off = end;
    }
    sb_put(&h, "}", 1);
    /* Spaces so that the data section starts at a multiple of 8. */
    while (h.ok && h.n % 8 != 0)
        sb_put(&h, " ", 1);
    if (!h.ok) {
        free(nbytes);
        free(h.p);
        return qkv_file_fail(QKV_ERR_OUT_OF_MEMORY, path, "cannot allocate the header");
    }
    for (int k = 0; k < 8; k++)
        len8[k] = (unsigned char)((uint64_t)h.n >> (8 * k));

    if (!(f = fopen(path, "wb"))) {
        int err = errno;
        free(nbytes);
        free(h.p);
        return qkv_io_fail(path, "cannot open for writing", err);
    }
    ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.p, 1, h.n, f) == h.n;
    for (int64_t i = 0; ok && i < n; i++)
        ok = qkv_write_le(f, arrays[i].data, (size_t)nbytes[i], qkv_dtype_size(arrays[i].dtype));
    free(nbytes);
    free(h.p);
    return qkv_close_written(f, path, ok);
}
