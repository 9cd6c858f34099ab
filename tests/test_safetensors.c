/* Tests of the .safetensors reader and writer: round trips of every dtype
 * and rank, files built byte by byte (metadata, padding, escapes, offsets
 * out of order, unaligned data), files the reference `safetensors` package
 * wrote (tests/data/safetensors/make.py), a long table of malformed headers
 * that must fail cleanly, and the API's edges. */
#include "io/io.h"
#include "qkv.h"
#include "test.h"
#include "util.h"
#include "stream.h"

#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tmpdir; /* test_tmpdir(), removed by test_rmdir() */

/* ------------------------------------------------------------- helpers */

static void tmp_path(char *buf, size_t n, const char *name)
{
    if (snprintf(buf, n, "%s/%s", tmpdir, name) >= (int)n)
        buf[0] = '\0'; /* too long: an empty path fails loudly */
}


static void put_u64(unsigned char *p, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        p[k] = (unsigned char)(v >> (8 * k));
}

/* A .safetensors image: the header length, the tlen header bytes of text
 * exactly as given, then dlen data bytes of a fixed pattern (byte i is
 * i * 7 + 1). Returns the image's size, 0 if it does not fit. */
static size_t make_st_n(unsigned char *buf, size_t cap, const char *text, size_t tlen,
                        size_t dlen)
{
    if (8 + tlen + dlen > cap)
        return 0;
    put_u64(buf, tlen);
    memcpy(buf + 8, text, tlen);
    for (size_t i = 0; i < dlen; i++)
        buf[8 + tlen + i] = (unsigned char)(i * 7 + 1);
    return 8 + tlen + dlen;
}

static size_t make_st(unsigned char *buf, size_t cap, const char *text, size_t dlen)
{
    return make_st_n(buf, cap, text, strlen(text), dlen);
}

static qkv_array make_array(qkv_dtype t, void *data, int ndim, const int64_t *shape)
{
    qkv_array a;
    memset(&a, 0, sizeof a);
    a.data = data;
    a.dtype = t;
    a.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        a.shape[i] = shape[i];
    return a;
}

/* ---------------------------------------------------------- round trips */

static const qkv_dtype all_dtypes[] = {QKV_DTYPE_F32, QKV_DTYPE_F64, QKV_DTYPE_F16,
                                       QKV_DTYPE_BF16, QKV_DTYPE_BOOL, QKV_DTYPE_I32,
                                       QKV_DTYPE_I64};
#define N_DTYPES (sizeof all_dtypes / sizeof all_dtypes[0])

/* Shapes of ranks 0 to 4, some with zero-size dims. */
static const struct {
    int ndim;
    int64_t shape[4];
} shapes[] = {
    {0, {0}},          {1, {5}},          {1, {0}},          {2, {2, 3}},
    {2, {3, 0}},       {3, {2, 1, 3}},    {3, {0, 2, 2}},    {4, {1, 2, 3, 2}},
    {4, {2, 2, 0, 3}}, {4, {1, 1, 1, 1}},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

static void fill(unsigned char *p, size_t n, unsigned seed, qkv_dtype t)
{
    for (size_t i = 0; i < n; i++)
        p[i] = t == QKV_DTYPE_BOOL ? (unsigned char)((i * 5 + seed) % 3 == 0)
                                   : (unsigned char)(i * 31 + seed * 17 + 3);
}

/* Every dtype in every shape, all in one file, read back byte for byte;
 * then each dtype in a file of its own. */
static void test_round_trips(void)
{
    enum { N = N_DTYPES * N_SHAPES };
    static unsigned char data[N][256];
    static char namebuf[N][32];
    const char *names[N];
    qkv_array arrays[N];
    char path[128];
    qkv_safetensors *st = NULL;
    size_t len;
    unsigned char *img;
    int64_t n = 0;

    for (size_t d = 0; d < N_DTYPES; d++)
        for (size_t s = 0; s < N_SHAPES; s++, n++) {
            qkv_array *a = &arrays[n];
            *a = make_array(all_dtypes[d], data[n], shapes[s].ndim, shapes[s].shape);
            fill(data[n], (size_t)qkv_array_numel(a) * qkv_dtype_size(a->dtype),
                 (unsigned)n, a->dtype);
            snprintf(namebuf[n], sizeof namebuf[n], "t%02d.%s", (int)n,
                     qkv_dtype_name(all_dtypes[d]));
            names[n] = namebuf[n];
        }
    tmp_path(path, sizeof path, "all.safetensors");
    CHECK(qkv_safetensors_write(path, n, names, arrays) == QKV_OK);
    CHECK(qkv_error_detail()[0] == '\0');

    /* The layout: header length, a header padded with spaces to 8 bytes,
     * then the data in the given order with no gaps. */
    img = test_read_file(path, &len);
    CHECK(img != NULL && len > 8);
    if (img && len > 8) {
        uint64_t hlen = 0;
        size_t pos;
        for (int k = 7; k >= 0; k--)
            hlen = hlen << 8 | img[k];
        CHECK(hlen % 8 == 0 && 8 + hlen <= len);
        CHECK(img[8] == '{');
        pos = 8 + (size_t)hlen;
        while (pos > 8 && img[pos - 1] == ' ')
            pos--;
        CHECK(img[pos - 1] == '}');
        {
            static const char first[] =
                "{\"t00.f32\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},";
            CHECK(memcmp(img + 8, first, sizeof first - 1) == 0);
        }
        pos = 8 + (size_t)hlen;
        for (int64_t i = 0; i < n; i++) {
            size_t nb = (size_t)qkv_array_numel(&arrays[i]) * qkv_dtype_size(arrays[i].dtype);
            CHECK(pos + nb <= len && memcmp(img + pos, arrays[i].data, nb) == 0);
            pos += nb;
        }
        CHECK(pos == len);
    }
    free(img);

    CHECK(qkv_safetensors_read(path, &st) == QKV_OK);
    CHECK(st != NULL);
    CHECK(qkv_safetensors_count(st) == n);
    for (int64_t i = 0; st && i < n; i++) {
        qkv_array info, got;
        size_t nb = (size_t)qkv_array_numel(&arrays[i]) * qkv_dtype_size(arrays[i].dtype);
        CHECK(qkv_safetensors_name(st, i) && strcmp(qkv_safetensors_name(st, i), names[i]) == 0);
        memset(&info, 0x5a, sizeof info);
        CHECK(qkv_safetensors_find(st, names[i], &info) == 1);
        CHECK(info.data == NULL && info.dtype == arrays[i].dtype);
        CHECK(test_same_shape(&info, arrays[i].ndim, arrays[i].shape));
        CHECK(qkv_safetensors_get(st, names[i], arrays[i].dtype, &got) == QKV_OK);
        CHECK(got.data != NULL && got.dtype == arrays[i].dtype);
        CHECK(test_same_shape(&got, arrays[i].ndim, arrays[i].shape));
        CHECK(got.data && memcmp(got.data, arrays[i].data, nb) == 0);
        qkv_array_free(&got);
    }
    qkv_safetensors_free(st);

    /* One file per dtype, and the same bytes through qkv_safetensors_parse. */
    for (size_t d = 0; d < N_DTYPES; d++) {
        int64_t first = (int64_t)(d * N_SHAPES);
        img = NULL;
        CHECK(qkv_safetensors_write(path, (int64_t)N_SHAPES, names + first, arrays + first) ==
              QKV_OK);
        img = test_read_file(path, &len);
        st = NULL;
        CHECK(img && qkv_safetensors_parse(img, len, "one.safetensors", &st) == QKV_OK);
        free(img); /* the parse copied it */
        CHECK(qkv_safetensors_count(st) == (int64_t)N_SHAPES);
        for (size_t s = 0; st && s < N_SHAPES; s++) {
            qkv_array got;
            const qkv_array *a = &arrays[first + (int64_t)s];
            size_t nb = (size_t)qkv_array_numel(a) * qkv_dtype_size(a->dtype);
            CHECK(qkv_safetensors_get(st, names[first + (int64_t)s], a->dtype, &got) == QKV_OK);
            CHECK(got.data && memcmp(got.data, a->data, nb) == 0);
            qkv_array_free(&got);
        }
        qkv_safetensors_free(st);
    }

    /* No tensors at all: an 8-byte header "{}" and six spaces. */
    CHECK(qkv_safetensors_write(path, 0, NULL, NULL) == QKV_OK);
    img = test_read_file(path, &len);
    CHECK(img && len == 16 && memcmp(img, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
    free(img);
    CHECK(qkv_safetensors_read(path, &st) == QKV_OK);
    CHECK(qkv_safetensors_count(st) == 0);
    CHECK(qkv_safetensors_name(st, 0) == NULL);
    qkv_safetensors_free(st);
    remove(path);
}

/* Names that need escaping, and the widest UTF-8, survive the trip. */
static void test_write_escapes(void)
{
    static const char *const names[] = {
        "quote\"back\\slash", "tab\there\nnewline\x01\x1f", "caf\xc3\xa9/\xe2\x82\xac",
        "\xf0\x9f\x98\x80 emoji", "sl/ash \x7f del",
    };
    enum { N = sizeof names / sizeof names[0] };
    float v[N];
    qkv_array arrays[N];
    int64_t one = 1;
    char path[128];
    qkv_safetensors *st;
    unsigned char *img;
    size_t len;
    for (int i = 0; i < N; i++) {
        v[i] = (float)i + 0.5f;
        arrays[i] = make_array(QKV_DTYPE_F32, &v[i], 1, &one);
    }
    tmp_path(path, sizeof path, "esc.safetensors");
    CHECK(qkv_safetensors_write(path, N, names, arrays) == QKV_OK);
    img = test_read_file(path, &len);
    CHECK(img && strstr((const char *)img + 8, "\"quote\\\"back\\\\slash\"") != NULL);
    CHECK(img && strstr((const char *)img + 8, "\"tab\\there\\nnewline\\u0001\\u001f\"") !=
                     NULL);
    free(img);
    CHECK(qkv_safetensors_read(path, &st) == QKV_OK);
    for (int i = 0; i < N; i++) {
        qkv_array got;
        CHECK(strcmp(qkv_safetensors_name(st, i), names[i]) == 0);
        CHECK(qkv_safetensors_get(st, names[i], QKV_DTYPE_F64, &got) == QKV_OK);
        CHECK(got.data && ((double *)got.data)[0] == v[i]);
        qkv_array_free(&got);
    }
    qkv_safetensors_free(st);
    remove(path);
}

/* ------------------------------------------------- hand-built files */

static qkv_safetensors *parse_ok(const char *what, const unsigned char *buf, size_t len)
{
    qkv_safetensors *st = NULL;
    qkv_status s = qkv_safetensors_parse(buf, len, "good.safetensors", &st);
    if (s != QKV_OK)
        fprintf(stderr, "%s: %s: %s\n", what, qkv_status_string(s), qkv_error_detail());
    CHECK(s == QKV_OK && st != NULL);
    return st;
}

static void test_known_good(void)
{
    static unsigned char buf[4096];
    qkv_safetensors *st;
    qkv_array a, info;
    size_t len;

    /* A F32 (2, 3) with metadata, padded with spaces as the writers do;
     * values 1..6 written out byte by byte. */
    {
        static const char hdr[] =
            "{\"__metadata__\":{\"format\":\"pt\",\"\":\"\"},"
            "\"q_proj.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}  ";
        static const unsigned char vals[24] = {
            0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40,
            0, 0, 0x80, 0x40, 0, 0, 0xa0, 0x40, 0, 0, 0xc0, 0x40};
        int64_t sh[2] = {2, 3};
        len = make_st(buf, sizeof buf, hdr, 0);
        memcpy(buf + len, vals, sizeof vals);
        len += sizeof vals;
        st = parse_ok("metadata", buf, len);
        CHECK(qkv_safetensors_count(st) == 1);
        CHECK(strcmp(qkv_safetensors_name(st, 0), "q_proj.weight") == 0);
        CHECK(qkv_safetensors_find(st, "__metadata__", NULL) == 0);
        CHECK(qkv_safetensors_get(st, "q_proj.weight", QKV_DTYPE_F32, &a) == QKV_OK);
        CHECK(test_same_shape(&a, 2, sh) && a.dtype == QKV_DTYPE_F32);
        for (int i = 0; i < 6; i++)
            CHECK(a.data && ((float *)a.data)[i] == (float)(i + 1));
        qkv_array_free(&a);
        /* Converted on the way: to bf16, f16 and f64. */
        CHECK(qkv_safetensors_get(st, "q_proj.weight", QKV_DTYPE_BF16, &a) == QKV_OK);
        CHECK(a.data && ((uint16_t *)a.data)[5] == 0x40c0);
        qkv_array_free(&a);
        CHECK(qkv_safetensors_get(st, "q_proj.weight", QKV_DTYPE_F16, &a) == QKV_OK);
        CHECK(a.data && ((uint16_t *)a.data)[0] == 0x3c00);
        qkv_array_free(&a);
        CHECK(qkv_safetensors_get(st, "q_proj.weight", QKV_DTYPE_F64, &a) == QKV_OK);
        CHECK(a.data && ((double *)a.data)[2] == 3.0);
        qkv_array_free(&a);
        /* Float to int is refused by the converter: the detail still names
         * the file and the tensor. */
        memset(&a, 0x5a, sizeof a);
        CHECK(qkv_safetensors_get(st, "q_proj.weight", QKV_DTYPE_I32, &a) == QKV_ERR_DTYPE);
        CHECK(test_array_zeroed(&a));
        CHECK(test_starts_with(qkv_error_detail(), "good.safetensors: tensor 'q_proj.weight': "));
        CHECK(strstr(qkv_error_detail(), "cannot convert f32 to i32") != NULL);
        qkv_safetensors_free(st);
    }

    /* Tensors listed out of offset order, JSON whitespace between tokens,
     * unaligned offsets (an odd-sized I8 first), and zero-size tensors at
     * the start, the middle and the end. */
    {
        static const char hdr[] =
            "{ \"w\" : { \"data_offsets\" : [ 3 , 11 ] ,\n\t\"shape\" : [ 2 ] , "
            "\"dtype\" : \"F32\" } ,\r\n"
            "\"b\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[0,3]},"
            "\"z_end\":{\"dtype\":\"F64\",\"shape\":[0,5],\"data_offsets\":[19,19]},"
            "\"h\":{\"dtype\":\"BF16\",\"shape\":[2,1,2],\"data_offsets\":[11,19]},"
            "\"z_mid\":{\"dtype\":\"F16\",\"shape\":[4,0],\"data_offsets\":[11,11]},"
            "\"z0\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[0,0]}}";
        static const unsigned char data[19] = {
            0x80, 0x00, 0x7f,                           /* b: -128, 0, 127 */
            0x00, 0x00, 0x20, 0xc0, 0x00, 0x00, 0x80, 0x3e, /* w: -2.5, 0.25 */
            0x80, 0x3f, 0x00, 0xc0, 0x80, 0x7f, 0xc0, 0x7f};   /* h: 1, -2, inf, nan */
        int64_t sh_h[3] = {2, 1, 2}, sh_z[2] = {0, 5};
        len = make_st(buf, sizeof buf, hdr, 0);
        memcpy(buf + len, data, sizeof data);
        len += sizeof data;
        st = parse_ok("unordered", buf, len);
        CHECK(qkv_safetensors_count(st) == 6);
        CHECK(strcmp(qkv_safetensors_name(st, 0), "w") == 0);
        CHECK(strcmp(qkv_safetensors_name(st, 5), "z0") == 0);
        CHECK(qkv_safetensors_get(st, "w", QKV_DTYPE_F32, &a) == QKV_OK);
        CHECK(a.data && ((float *)a.data)[0] == -2.5f && ((float *)a.data)[1] == 0.25f);
        qkv_array_free(&a);
        CHECK(qkv_safetensors_get(st, "h", QKV_DTYPE_F32, &a) == QKV_OK);
        CHECK(test_same_shape(&a, 3, sh_h));
        CHECK(a.data && ((float *)a.data)[0] == 1.0f && ((float *)a.data)[1] == -2.0f &&
              isinf(((float *)a.data)[2]) && isnan(((float *)a.data)[3]));
        qkv_array_free(&a);
        CHECK(qkv_safetensors_get(st, "z_end", QKV_DTYPE_F32, &a) == QKV_OK);
        CHECK(a.data != NULL && test_same_shape(&a, 2, sh_z) && qkv_array_numel(&a) == 0);
        qkv_array_free(&a);
        CHECK(qkv_safetensors_get(st, "z0", QKV_DTYPE_I64, &a) == QKV_OK);
        CHECK(a.data != NULL && a.ndim == 1 && a.shape[0] == 0);
        qkv_array_free(&a);
        /* I8 has no qkv dtype: found, reported as -1, not gettable. */
        memset(&info, 0x5a, sizeof info);
        CHECK(qkv_safetensors_find(st, "b", &info) == 1);
        CHECK((int)info.dtype == -1 && info.ndim == 1 && info.shape[0] == 3 && !info.data);
        memset(&a, 0x5a, sizeof a);
        CHECK(qkv_safetensors_get(st, "b", QKV_DTYPE_F32, &a) == QKV_ERR_DTYPE);
        CHECK(test_array_zeroed(&a));
        CHECK(test_starts_with(qkv_error_detail(), "good.safetensors: tensor 'b': "));
        CHECK(strstr(qkv_error_detail(), "I8") != NULL);
        qkv_safetensors_free(st);
    }

    /* Escapes in names: every JSON escape, \u for the BMP and a surrogate
     * pair, raw UTF-8, and an escaped spelling of a plain name. */
    {
        static const char hdr[] =
            "{\"a\\\"q\\\\b\\/c\\b\\f\\n\\r\\t\":{\"dtype\":\"U8\",\"shape\":[1],"
            "\"data_offsets\":[0,1]},"
            "\"\\u00e9t\\u00C9 \\ud83d\\ude00 \\u20ac\":{\"dtype\":\"BOOL\",\"shape\":[1],"
            "\"data_offsets\":[1,2]},"
            "\"caf\xc3\xa9 \xf0\x9f\x98\x80\":{\"dtype\":\"U8\",\"shape\":[],"
            "\"data_offsets\":[2,3]},"
            "\"\\u0070lain\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[3,5]},"
            "\"\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[5,6]}}";
        len = make_st(buf, sizeof buf, hdr, 6);
        st = parse_ok("escapes", buf, len);
        CHECK(qkv_safetensors_count(st) == 5);
        CHECK(strcmp(qkv_safetensors_name(st, 0), "a\"q\\b/c\b\f\n\r\t") == 0);
        CHECK(strcmp(qkv_safetensors_name(st, 1),
                     "\xc3\xa9t\xc3\x89 \xf0\x9f\x98\x80 \xe2\x82\xac") == 0);
        CHECK(qkv_safetensors_find(st, "caf\xc3\xa9 \xf0\x9f\x98\x80", NULL) == 1);
        CHECK(qkv_safetensors_find(st, "plain", NULL) == 1);
        CHECK(qkv_safetensors_find(st, "", NULL) == 1);
        CHECK(qkv_safetensors_get(st, "\xc3\xa9t\xc3\x89 \xf0\x9f\x98\x80 \xe2\x82\xac",
                                  QKV_DTYPE_BOOL, &a) == QKV_OK);
        CHECK(a.data && ((unsigned char *)a.data)[0] == 8); /* pattern byte 1 * 7 + 1 */
        qkv_array_free(&a);
        qkv_safetensors_free(st);
    }

    /* The format's other dtypes parse, with sizes in bits for the packed
     * ones; none converts. Also an empty metadata object. */
    {
        static const char hdr[] =
            "{\"__metadata__\":{},"
            "\"c\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]},"
            "\"u64\":{\"dtype\":\"U64\",\"shape\":[1],\"data_offsets\":[8,16]},"
            "\"u32\":{\"dtype\":\"U32\",\"shape\":[1],\"data_offsets\":[16,20]},"
            "\"u16\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[20,22]},"
            "\"e5\":{\"dtype\":\"F8_E5M2\",\"shape\":[2],\"data_offsets\":[22,24]},"
            "\"e8\":{\"dtype\":\"F8_E8M0\",\"shape\":[1],\"data_offsets\":[24,25]},"
            "\"fz\":{\"dtype\":\"F8_E4M3FNUZ\",\"shape\":[1],\"data_offsets\":[25,26]},"
            "\"fy\":{\"dtype\":\"F8_E5M2FNUZ\",\"shape\":[1],\"data_offsets\":[26,27]},"
            "\"f4\":{\"dtype\":\"F4\",\"shape\":[3,2],\"data_offsets\":[27,30]},"
            "\"f6\":{\"dtype\":\"F6_E2M3\",\"shape\":[4],\"data_offsets\":[30,33]},"
            "\"f6b\":{\"dtype\":\"F6_E3M2\",\"shape\":[0],\"data_offsets\":[33,33]}}";
        static const char *const names[] = {"c", "u64", "u32", "u16", "e5", "e8",
                                            "fz", "fy", "f4", "f6", "f6b"};
        len = make_st(buf, sizeof buf, hdr, 33);
        st = parse_ok("other dtypes", buf, len);
        CHECK(qkv_safetensors_count(st) == 11);
        static const char *const dtypes[] = {"C64", "U64", "U32", "U16", "F8_E5M2", "F8_E8M0",
                                             "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4", "F6_E2M3",
                                             "F6_E3M2"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            const char *d = qkv_safetensors_dtype_str(st, names[i]);
            CHECK(qkv_safetensors_find(st, names[i], &info) == 1 && (int)info.dtype == -1);
            CHECK(qkv_safetensors_get(st, names[i], QKV_DTYPE_F32, &a) == QKV_ERR_DTYPE);
            /* Details can name the file's own dtype, which qkv_dtype cannot. */
            CHECK(d && strcmp(d, dtypes[i]) == 0);
        }
        CHECK(qkv_safetensors_dtype_str(st, "nope") == NULL);
        qkv_safetensors_free(st);
    }

    /* The largest rank we take, an empty header and a scalar. */
    {
        char hdr[512];
        int64_t shape[QKV_ARRAY_MAX_DIMS];
        size_t pos = (size_t)snprintf(hdr, sizeof hdr, "{\"r\":{\"dtype\":\"F16\",\"shape\":[");
        for (int i = 0; i < QKV_ARRAY_MAX_DIMS; i++) {
            pos += (size_t)snprintf(hdr + pos, sizeof hdr - pos, "%s%d", i ? "," : "",
                                    i == 5 ? 2 : 1);
            shape[i] = i == 5 ? 2 : 1;
        }
        snprintf(hdr + pos, sizeof hdr - pos, "],\"data_offsets\":[0,4]}}");
        len = make_st(buf, sizeof buf, hdr, 4);
        st = parse_ok("rank 32", buf, len);
        CHECK(qkv_safetensors_get(st, "r", QKV_DTYPE_F32, &a) == QKV_OK);
        CHECK(test_same_shape(&a, QKV_ARRAY_MAX_DIMS, shape));
        qkv_array_free(&a);
        qkv_safetensors_free(st);

        len = make_st(buf, sizeof buf, "{}", 0);
        st = parse_ok("empty", buf, len);
        CHECK(qkv_safetensors_count(st) == 0);
        CHECK(qkv_safetensors_find(st, "x", NULL) == 0);
        qkv_safetensors_free(st);

        len = make_st(buf, sizeof buf, "{ }        ", 0);
        st = parse_ok("empty padded", buf, len);
        qkv_safetensors_free(st);

        len = make_st(buf, sizeof buf,
                      "{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}", 8);
        st = parse_ok("scalar", buf, len);
        CHECK(qkv_safetensors_get(st, "s", QKV_DTYPE_I64, &a) == QKV_OK);
        CHECK(a.ndim == 0 && a.data && ((int64_t *)a.data)[0] == 0x322b241d160f0801);
        qkv_array_free(&a);
        /* 0x322b241d160f0801 does not fit in i32: the converter's overflow,
         * with the file and tensor in front. */
        CHECK(qkv_safetensors_get(st, "s", QKV_DTYPE_I32, &a) == QKV_ERR_OVERFLOW);
        CHECK(test_starts_with(qkv_error_detail(), "good.safetensors: tensor 's': "));
        qkv_safetensors_free(st);
    }
}

/* ------------------------------------------- the reference's own files */

static void check_reference(const char *cas, const char *const *names,
                            const char *const *npy_names, size_t n, int64_t count)
{
    char path[512];
    qkv_safetensors *st = NULL;
    snprintf(path, sizeof path, "%s/safetensors/%s.safetensors", QKV_TEST_DATA, cas);
    CHECK(qkv_safetensors_read(path, &st) == QKV_OK);
    if (!st) {
        fprintf(stderr, "%s: %s\n", path, qkv_error_detail());
        return;
    }
    CHECK(qkv_safetensors_count(st) == count);
    for (size_t i = 0; i < n; i++) {
        qkv_array want, got, info;
        int64_t numel;
        int same = 1;
        snprintf(path, sizeof path, "%s/safetensors/%s/%s.npy", QKV_TEST_DATA, cas,
                 npy_names[i]);
        CHECK(qkv_npy_read(path, &want) == QKV_OK);
        CHECK(qkv_safetensors_find(st, names[i], &info) == 1);
        CHECK(test_same_shape(&info, want.ndim, want.shape));
        /* The .npy holds bf16 as f32; compare in the .npy's dtype. */
        CHECK(qkv_safetensors_get(st, names[i], want.dtype, &got) == QKV_OK);
        CHECK(got.dtype == want.dtype && test_same_shape(&got, want.ndim, want.shape));
        numel = qkv_array_numel(&want);
        if (got.data && want.data && numel > 0)
            same = memcmp(got.data, want.data, (size_t)numel * qkv_dtype_size(want.dtype)) == 0;
        if (!same)
            fprintf(stderr, "%s: tensor %s differs from %s\n", cas, names[i], path);
        CHECK(same);
        qkv_array_free(&want);
        qkv_array_free(&got);
    }
    qkv_safetensors_free(st);
}

static void test_reference_files(void)
{
    static const char *const mix[] = {"f32_2x3", "f64_scalar", "f16_vec", "i32_3x1",
                                      "i64_2x2", "bool_5", "f32_1x2x1x3", "f32_empty_0x4"};
    static const char *const torch_names[] = {"layers.0.q_proj.weight",
                                              "layers.0.k_proj.weight",
                                              "layers.0.norm.weight", "layers.0.bias"};
    static const char *const torch_npy[] = {"layers_0_q_proj_weight", "layers_0_k_proj_weight",
                                            "layers_0_norm_weight", "layers_0_bias"};
    char path[512];
    qkv_safetensors *st;
    qkv_array info, a;
    check_reference("numpy_mix", mix, mix, sizeof mix / sizeof mix[0], 10);
    check_reference("torch_bf16", torch_names, torch_npy, 4, 4);

    snprintf(path, sizeof path, "%s/safetensors/numpy_mix.safetensors", QKV_TEST_DATA);
    CHECK(qkv_safetensors_read(path, &st) == QKV_OK);
    CHECK(qkv_safetensors_find(st, "i8_3", &info) == 1 && (int)info.dtype == -1);
    CHECK(qkv_safetensors_find(st, "u8_2", &info) == 1 && (int)info.dtype == -1);
    CHECK(qkv_safetensors_get(st, "u8_2", QKV_DTYPE_I32, &a) == QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), path));
    CHECK(strstr(qkv_error_detail(), "'u8_2'") && strstr(qkv_error_detail(), "U8"));
    qkv_safetensors_free(st);

    /* The bf16 weights as stored: their bits are the f32's upper half. */
    snprintf(path, sizeof path, "%s/safetensors/torch_bf16.safetensors", QKV_TEST_DATA);
    CHECK(qkv_safetensors_read(path, &st) == QKV_OK);
    CHECK(qkv_safetensors_find(st, "layers.0.q_proj.weight", &info) == 1 &&
          info.dtype == QKV_DTYPE_BF16);
    CHECK(qkv_safetensors_get(st, "layers.0.q_proj.weight", QKV_DTYPE_BF16, &a) == QKV_OK);
    {
        qkv_array f;
        snprintf(path, sizeof path, "%s/safetensors/torch_bf16/layers_0_q_proj_weight.npy",
                 QKV_TEST_DATA);
        CHECK(qkv_npy_read(path, &f) == QKV_OK);
        for (int64_t i = 0; a.data && f.data && i < qkv_array_numel(&f); i++) {
            uint32_t bits;
            memcpy(&bits, (float *)f.data + i, 4);
            CHECK(((uint16_t *)a.data)[i] == bits >> 16 && (bits & 0xffff) == 0);
        }
        qkv_array_free(&f);
    }
    qkv_array_free(&a);
    qkv_safetensors_free(st);
}

/* ---------------------------------------------------------- malformed */

#define F QKV_ERR_FORMAT
#define O QKV_ERR_OVERFLOW
#define T(x) "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" x "}}"
#define E(x) "{\"a\":{" x "}}"
#define NAME(x) "{\"" x "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
#define SH(x) "{\"a\":{\"dtype\":\"F32\",\"shape\":" x ",\"data_offsets\":[0,8]}}"
#define A8 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
#define B(o) "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" o "}"
#define ONES8 "1,1,1,1,1,1,1,1"

/* Headers that must be refused: the status, the header text, the data
 * size and a part of the detail. */
static const struct {
    qkv_status want;
    const char *text;
    size_t dlen;
    const char *detail;
} bad_headers[] = {
    /* The outer object. */
    {F, "", 0, "header length 0: no JSON header follows"},
    {F, " ", 0, "expected '{' opening the header at offset 8, found ' '"},
    {F, "{", 0, "expected a quoted tensor name at offset 9, found the end of the header"},
    {F, " " T("[0,8]"), 8, "'{' opening the header"},
    {F, "\xef\xbb\xbf" T("[0,8]"), 8, "'{' opening the header"},
    {F, "[" A8 "]", 8, "'{' opening the header"},
    {F, "{" A8, 8, "',' or '}' after a tensor's entry"},
    {F, T("[0,8]") "x", 8, "only spaces after the header's closing '}'"},
    {F, T("[0,8]") "\n", 8, "only spaces after"},
    {F, T("[0,8]") "  \t", 8, "only spaces after"},
    {F, T("[0,8]") "}", 8, "only spaces after"},
    {F, T("[0,8]") " {}", 8, "only spaces after"},
    {F, "{" A8 ",}", 8, "a quoted tensor name"},
    {F, "{," A8 "}", 8, "a quoted tensor name"},
    {F, "{" A8 ",," B("[8,16]") "}", 16, "a quoted tensor name"},
    {F, "{" A8 " " B("[8,16]") "}", 16, "',' or '}' after a tensor's entry"},
    {F, "{'a':{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "a quoted tensor name"},
    {F, "{a:{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "a quoted tensor name"},
    {F, "{1:{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "a quoted tensor name"},
    {F, "{\"a\" {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "':' after a tensor name"},
    {F, "{\"a\"=" "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "':'"},
    {F, "{/* c */" A8 "}", 8, "a quoted tensor name"},
    {F, "{\xc3\xa9" A8 "}", 8, "found byte 0xc3"},
    {F, "{\"a\":[0,8]}", 8, "tensor 'a': expected an object"},
    {F, "{\"a\":null}", 0, "expected an object"},
    {F, "{\"a\":\"F32\"}", 0, "expected an object"},
    /* A tensor's entry. */
    {F, "{\"a\":{}}", 0, "tensor 'a': missing field 'dtype'"},
    {F, E("\"shape\":[2],\"data_offsets\":[0,8]"), 8, "missing field 'dtype'"},
    {F, E("\"dtype\":\"F32\",\"data_offsets\":[0,8]"), 8, "missing field 'shape'"},
    {F, E("\"dtype\":\"F32\",\"shape\":[2]"), 8, "missing field 'data_offsets'"},
    {F, E("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1"), 8,
     "tensor 'a': unknown field 'extra'"},
    {F, E("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"Dtype\":\"F32\""), 8,
     "unknown field 'Dtype'"},
    {F, E("\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]"), 8,
     "tensor 'a': duplicate field 'dtype'"},
    {F, E("\"dtype\":\"F32\",\"shape\":[2],\"shape\":[2],\"data_offsets\":[0,8]"), 8,
     "duplicate field 'shape'"},
    {F, E("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],"), 8, "a quoted field name"},
    {F, E("\"dtype\":\"F32\" \"shape\":[2],\"data_offsets\":[0,8]"), 8,
     "',' or '}' in a tensor's entry"},
    {F, E("\"dtype\" \"F32\",\"shape\":[2],\"data_offsets\":[0,8]"), 8,
     "':' after a field name"},
    {F, E("\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]"), 8,
     "tensor 'a': unknown dtype 'F128'"},
    {F, E("\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]"), 8, "unknown dtype 'f32'"},
    {F, E("\"dtype\":\"F32 \",\"shape\":[2],\"data_offsets\":[0,8]"), 8, "unknown dtype"},
    {F, E("\"dtype\":\"\",\"shape\":[2],\"data_offsets\":[0,8]"), 8, "unknown dtype ''"},
    {F, E("\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]"), 8, "a quoted dtype"},
    {F, E("\"dtype\":[\"F32\"],\"shape\":[2],\"data_offsets\":[0,8]"), 8, "a quoted dtype"},
    /* Shapes. */
    {F, SH("[-2]"), 8, "negative number in 'shape'"},
    {F, SH("[2.0]"), 8, "is not an integer"},
    {F, SH("[2e0]"), 8, "is not an integer"},
    {F, SH("[2E0]"), 8, "is not an integer"},
    {F, SH("[02]"), 8, "leading zero"},
    {F, SH("[+2]"), 8, "a non-negative integer in 'shape'"},
    {F, SH("[\"2\"]"), 8, "a non-negative integer in 'shape'"},
    {F, SH("[[2]]"), 8, "a non-negative integer in 'shape'"},
    {F, SH("[null]"), 8, "a non-negative integer in 'shape'"},
    {F, SH("[2,]"), 8, "a non-negative integer in 'shape'"},
    {F, SH("[,2]"), 8, "a non-negative integer in 'shape'"},
    {F, SH("[2 1]"), 8, "',' or ']' in 'shape'"},
    {F, SH("[0x2]"), 8, "',' or ']' in 'shape'"},
    {F, SH("[2"), 8, "a non-negative integer in 'shape' at offset 39, found '\"'"},
    {F, SH("2"), 8, "'[' opening 'shape'"},
    {F, SH("{}"), 8, "'[' opening 'shape'"},
    {F, SH("[" ONES8 "," ONES8 "," ONES8 "," ONES8 ",2]"), 8,
     "tensor 'a': shape has more than 32 dimensions, the most qkv handles"},
    {O, SH("[9223372036854775808]"), 8, "dimension 9223372036854775808 does not fit in int64_t"},
    {O, SH("[18446744073709551616]"), 8, "does not fit in 64 bits"},
    {O, SH("[99999999999999999999999]"), 8, "does not fit in 64 bits"},
    {O, SH("[4294967296,4294967296]"), 8,
     "shape [4294967296, 4294967296] has more elements than fit in 64 bits"},
    {O, SH("[4294967296,4294967296,0]"), 8, "more elements than fit"},
    {O, "{\"a\":{\"dtype\":\"F64\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,8]}}",
     8, "shape [2147483648, 2147483648] of F64 has more bytes than fit in 64 bits"},
    {O, "{\"a\":{\"dtype\":\"F4\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}",
     8, "more bytes than fit"},
    /* Sizes against offsets. */
    {F, "{\"q_proj.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 12,
     "tensor 'q_proj.weight': data_offsets [0, 12] hold 12 bytes but shape [2, 3] of F32 "
     "needs 24"},
    {F, "{\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
     "hold 4 bytes but shape [] of F64 needs 8"},
    {F, "{\"a\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[0,2]}}", 2,
     "hold 2 bytes but shape [3, 0] of BF16 needs 0"},
    {F, "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
     "shape [3] of F4 is not a whole number of bytes"},
    {F, "{\"a\":{\"dtype\":\"F6_E3M2\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
     "not a whole number of bytes"},
    {F, "{\"a\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
     "hold 4 bytes but shape [4] of F4 needs 2"},
    /* Offsets. */
    {F, T("[0,8,16]"), 16, "tensor 'a': data_offsets must be [begin, end], two numbers"},
    {F, T("[8]"), 8, "two numbers"},
    {F, T("[]"), 8, "two numbers"},
    {F, T("[-1,7]"), 8, "negative number in 'data_offsets'"},
    {F, T("[0,8.0]"), 8, "not an integer"},
    {F, T("[\"0\",8]"), 8, "a non-negative integer in 'data_offsets'"},
    {F, T("{\"begin\":0}"), 8, "'[' opening 'data_offsets'"},
    {F, T("[8,0]"), 8, "data_offsets [8, 0] end before they begin"},
    {F, T("[0,16]"), 8,
     "data_offsets [0, 16] run past the end of the data section (8 bytes)"},
    {F, T("[8,16]"), 8, "run past the end of the data section"},
    {O, T("[0,18446744073709551616]"), 8, "does not fit in 64 bits"},
    {F, T("[18446744073709551608,18446744073709551615]"), 8, "run past the end"},
    /* Tiling of the data section. */
    {F, T("[4,12]"), 12,
     "bytes [0, 4) of the data section belong to no tensor (a gap before tensor 'a')"},
    {F, "{" A8 "," B("[12,20]") "}", 20, "bytes [8, 12) of the data section belong to no tensor"},
    {F, "{" A8 "," B("[4,12]") "}", 12,
     "tensor 'b': data_offsets [4, 12] overlap those of tensor 'a' [0, 8]"},
    {F, "{" B("[4,12]") "," A8 "}", 12, "overlap those of tensor 'a'"},
    {F, "{" A8 "," B("[0,8]") "}", 16, "overlap"},
    {F, "{" A8 ",\"z\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8,
     "tensor 'z': data_offsets [4, 4] overlap those of tensor 'a' [0, 8]"},
    {F, T("[0,8]"), 12, "bytes [8, 12) at the end of the data section belong to no tensor"},
    {F, "{}", 4, "the header names no tensor but the data section holds 4 bytes"},
    {F, "{\"__metadata__\":{\"a\":\"b\"}}", 1, "names no tensor"},
    /* Names. */
    {F, "{" A8 "," A8 "}", 16, "duplicate tensor name 'a'"},
    {F, "{" A8 ",\"\\u0061\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16,
     "duplicate tensor name 'a'"},
    {F, NAME("a\\u0000b"), 8, "the name holds U+0000"},
    {F, "{\"a", 0, "unterminated string starting at offset 9"},
    {F, "{\"a\\\"}", 0, "unterminated string"},
    {F, NAME("a\\qb"), 8, "invalid escape at offset 11"},
    {F, NAME("a\\'b"), 8, "invalid escape"},
    {F, NAME("a\\x41"), 8, "invalid escape"},
    {F, NAME("a\\u12G4"), 8, "is not followed by four hex digits"},
    {F, NAME("a\\u12"), 8, "four hex digits"},
    {F, NAME("a\\udc00b"), 8, "lone low surrogate \\uDC00"},
    {F, NAME("a\\ud800b"), 8, "high surrogate \\uD800 at offset 11 is not followed by a low"},
    {F, NAME("a\\ud800\\u0041"), 8, "is not followed by a low surrogate"},
    {F, NAME("a\\ud800\\ud800"), 8, "is not followed by a low surrogate"},
    {F, NAME("a\\ud800\\n"), 8, "is not followed by a low surrogate"},
    {F, NAME("a\tb"), 8, "control byte 0x09 in a string at offset 11"},
    {F, NAME("a\nb"), 8, "control byte 0x0a"},
    {F, NAME("a\x1f"), 8, "control byte 0x1f"},
    {F, NAME("a\xff"), 8, "invalid UTF-8 at offset 11"},
    {F, NAME("a\x80"), 8, "invalid UTF-8"},
    {F, NAME("\xc0\xaf"), 8, "invalid UTF-8"},
    {F, NAME("\xc1\xbf"), 8, "invalid UTF-8"},
    {F, NAME("\xe0\x80\xaf"), 8, "invalid UTF-8"},
    {F, NAME("\xed\xa0\x80"), 8, "invalid UTF-8"},
    {F, NAME("\xf0\x80\x80\xaf"), 8, "invalid UTF-8"},
    {F, NAME("\xf4\x90\x80\x80"), 8, "invalid UTF-8"},
    {F, NAME("\xf5\x80\x80\x80"), 8, "invalid UTF-8"},
    {F, NAME("\xe2\x82"), 8, "invalid UTF-8"},
    {F, NAME("\xc3\xc3"), 8, "invalid UTF-8"},
    /* Metadata. */
    {F, "{\"__metadata__\":{},\"__metadata__\":{}," A8 "}", 8, "duplicate key '__metadata__'"},
    {F, "{\"__metadata__\":{},\"\\u005f_metadata__\":{}," A8 "}", 8,
     "duplicate key '__metadata__'"},
    {F, "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}," A8 "}", 8,
     "duplicate key in '__metadata__' 'k'"},
    {F, "{\"__metadata__\":{\"k\":1}," A8 "}", 8, "a string value in '__metadata__'"},
    {F, "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}," A8 "}", 8, "a string value in '__metadata__'"},
    {F, "{\"__metadata__\":{\"k\":[\"x\"]}," A8 "}", 8, "a string value"},
    {F, "{\"__metadata__\":{\"k\":null}," A8 "}", 8, "a string value"},
    {F, "{\"__metadata__\":\"pt\"," A8 "}", 8, "an object of strings for '__metadata__'"},
    {F, "{\"__metadata__\":null," A8 "}", 8, "an object of strings"},
    {F, "{\"__metadata__\":[]," A8 "}", 8, "an object of strings"},
    {F, "{\"__metadata__\":{1:\"x\"}," A8 "}", 8, "a quoted key in '__metadata__'"},
    {F, "{\"__metadata__\":{\"k\":\"v\",}," A8 "}", 8, "a quoted key in '__metadata__'"},
    {F, "{\"__metadata__\":{\"k\" \"v\"}," A8 "}", 8, "':' after a key in '__metadata__'"},
    {F, "{\"__metadata__\":{\"k\":\"v\" \"l\":\"w\"}," A8 "}", 8,
     "',' or '}' in '__metadata__'"},
    {F, "{\"__metadata__\":{\"k\":\"\xff\"}," A8 "}", 8, "invalid UTF-8"},
    {F, "{\"__metadata__\":{\"k\":\"\\ud800\"}," A8 "}", 8, "high surrogate"},
};

/* Raw images that must be refused, built by hand. */
static size_t make_raw(int which, unsigned char *buf, size_t cap, const char **detail)
{
    static const char good[] = T("[0,8]");
    size_t n = make_st(buf, cap, good, 8);
    *detail = NULL;
    switch (which) {
    case 0: *detail = "truncated: 0 bytes, shorter than the 8-byte header length"; return 0;
    case 1: *detail = "truncated: 7 bytes"; return 7;
    case 2: /* a header length past the end */
        put_u64(buf, 1000);
        *detail = "header length 1000 runs past the end of the file";
        return n;
    case 3:
        put_u64(buf, UINT64_MAX);
        *detail = "header length 18446744073709551615 runs past the end";
        return n;
    case 4:
        put_u64(buf, (uint64_t)1 << 63);
        *detail = "runs past the end";
        return n;
    case 5: /* one byte short: the closing '}' becomes data */
        put_u64(buf, sizeof good - 2);
        *detail = "',' or '}' after a tensor's entry";
        return n;
    case 6: /* one byte long: the first data byte is taken for padding */
        put_u64(buf, sizeof good);
        *detail = "run past the end of the data section (7 bytes)";
        return n;
    case 7: /* a NUL in the padding */
        n = make_st_n(buf, cap, T("[0,8]") " \0 ", sizeof good - 1 + 3, 8);
        *detail = "found byte 0x00";
        return n;
    case 8: /* a NUL inside a name */
        n = make_st_n(buf, cap, NAME("a\0b"), sizeof NAME("a\0b") - 1, 8);
        *detail = "control byte 0x00";
        return n;
    case 9: /* the file stops inside the data */
        *detail = "run past the end of the data section (7 bytes)";
        return n - 1;
    case 10: /* an .npy file */
        memcpy(buf, "\x93NUMPY\x01\x00", 8);
        *detail = "runs past the end";
        return n;
    case 11: /* only the length, 0: what /dev/zero starts with */
        put_u64(buf, 0);
        *detail = "header length 0";
        return 8;
    case 12: /* a length of 0 before a header */
        put_u64(buf, 0);
        *detail = "header length 0";
        return n;
    default: return (size_t)-1;
    }
}

static void check_bad(const char *what, const unsigned char *buf, size_t len,
                      qkv_status want, const char *detail)
{
    qkv_safetensors *st = (qkv_safetensors *)&st;
    char path[128];
    qkv_status s;
    s = qkv_safetensors_parse(buf, len, "LAYER.safetensors", &st);
    if (s != want || (detail && !strstr(qkv_error_detail(), detail)))
        fprintf(stderr, "%s: got %s '%s', want %s '%s'\n", what, qkv_status_string(s),
                qkv_error_detail(), qkv_status_string(want), detail ? detail : "");
    CHECK(s == want);
    CHECK(st == NULL);
    CHECK(test_starts_with(qkv_error_detail(), "LAYER.safetensors: ") &&
          strlen(qkv_error_detail()) > strlen("LAYER.safetensors: "));
    CHECK(!detail || strstr(qkv_error_detail(), detail));
    CHECK(qkv_safetensors_parse(buf, len, NULL, &st) == want);
    CHECK(test_starts_with(qkv_error_detail(), "<buffer>: "));
    /* The file reader reaches the same verdict. */
    tmp_path(path, sizeof path, "bad.safetensors");
    CHECK(test_write_file(path, buf, len));
    st = (qkv_safetensors *)&st;
    s = qkv_safetensors_read(path, &st);
    if (s != want)
        fprintf(stderr, "%s (file): got %s '%s'\n", what, qkv_status_string(s),
                qkv_error_detail());
    CHECK(s == want);
    CHECK(st == NULL);
    CHECK(test_starts_with(qkv_error_detail(), path));
    CHECK(!detail || strstr(qkv_error_detail(), detail));
}

static void test_malformed(void)
{
    static unsigned char buf[4096];
    const char *detail;
    size_t len;
    int count = 0;
    char what[32];
    qkv_safetensors *st;
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        len = make_st(buf, sizeof buf, bad_headers[i].text, bad_headers[i].dlen);
        snprintf(what, sizeof what, "bad header %zu", i);
        check_bad(what, buf, len, bad_headers[i].want, bad_headers[i].detail);
        count++;
    }
    for (int i = 0; (len = make_raw(i, buf, sizeof buf, &detail)) != (size_t)-1; i++) {
        snprintf(what, sizeof what, "bad raw %d", i);
        check_bad(what, buf, len, QKV_ERR_FORMAT, detail);
        count++;
    }
    CHECK(count >= 60);
    printf("test_safetensors: %d malformed files refused\n", count);

    /* Every proper prefix of a valid file is refused, as is the file with
     * any one byte of its header replaced by a byte JSON cannot hold there. */
    len = make_st(buf, sizeof buf,
                  "{\"__metadata__\":{\"k\":\"v\"},\"x\":{\"dtype\":\"BF16\",\"shape\":[2,2],"
                  "\"data_offsets\":[0,8]}}",
                  8);
    st = parse_ok("prefix base", buf, len);
    qkv_safetensors_free(st);
    for (size_t cut = 0; cut < len; cut++) {
        qkv_status s = qkv_safetensors_parse(buf, cut, NULL, &st);
        CHECK(s == QKV_ERR_FORMAT && st == NULL);
    }
    for (size_t pos = 8; pos < len - 8; pos++) {
        unsigned char keep = buf[pos];
        buf[pos] = 0x01;
        CHECK(qkv_safetensors_parse(buf, len, NULL, &st) == QKV_ERR_FORMAT && st == NULL);
        buf[pos] = keep;
    }
}

/* ------------------------------------------------------------- the API */

static void test_api_edges(void)
{
    static unsigned char buf[512];
    size_t len = make_st(buf, sizeof buf, T("[0,8]"), 8);
    qkv_safetensors *st = NULL, *st2 = NULL;
    qkv_array a, info;
    char path[128];

    /* NULL arguments. */
    CHECK(qkv_safetensors_parse(buf, len, "x", NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "x: "));
    st = (qkv_safetensors *)&st;
    CHECK(qkv_safetensors_parse(NULL, 8, "x", &st) == QKV_ERR_NULL_ARGUMENT && st == NULL);
    CHECK(qkv_safetensors_parse(NULL, 0, "x", &st) == QKV_ERR_FORMAT && st == NULL);
    CHECK(qkv_safetensors_read(NULL, &st) == QKV_ERR_NULL_ARGUMENT && st == NULL);
    CHECK(qkv_safetensors_read("x", NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_safetensors_count(NULL) == 0);
    CHECK(qkv_safetensors_name(NULL, 0) == NULL);
    CHECK(qkv_safetensors_find(NULL, "a", &info) == 0);
    qkv_safetensors_free(NULL);

    /* I/O errors name the path. */
    st = (qkv_safetensors *)&st;
    CHECK(qkv_safetensors_read(QKV_TEST_DATA "/no/such.safetensors", &st) == QKV_ERR_IO);
    CHECK(st == NULL);
    CHECK(test_starts_with(qkv_error_detail(), QKV_TEST_DATA "/no/such.safetensors: "));
    CHECK(qkv_safetensors_read(tmpdir, &st) == QKV_ERR_IO && st == NULL);
    CHECK(test_starts_with(qkv_error_detail(), tmpdir));

    /* A copy: the caller's buffer may go away. */
    {
        unsigned char *copy = malloc(len);
        memcpy(copy, buf, len);
        CHECK(qkv_safetensors_parse(copy, len, "copy", &st) == QKV_OK);
        memset(copy, 0, len);
        free(copy);
    }
    CHECK(qkv_error_detail()[0] == '\0');
    CHECK(qkv_safetensors_count(st) == 1);
    CHECK(strcmp(qkv_safetensors_name(st, 0), "a") == 0);
    CHECK(qkv_safetensors_name(st, 1) == NULL && qkv_safetensors_name(st, -1) == NULL);
    CHECK(qkv_safetensors_name(st, INT64_MAX) == NULL);
    CHECK(qkv_safetensors_find(st, "a", NULL) == 1);
    CHECK(qkv_safetensors_find(st, "b", &info) == 0);
    CHECK(qkv_safetensors_find(st, "A", NULL) == 0);
    CHECK(qkv_safetensors_find(st, "a ", NULL) == 0);
    CHECK(qkv_safetensors_find(st, "", NULL) == 0);
    CHECK(qkv_safetensors_find(st, NULL, NULL) == 0);

    /* _get: missing names, bad targets, NULLs; *out zeroed on failure. */
    memset(&a, 0x5a, sizeof a);
    CHECK(qkv_safetensors_get(st, "b", QKV_DTYPE_F32, &a) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_array_zeroed(&a));
    CHECK(strcmp(qkv_error_detail(), "copy: no tensor named 'b'") == 0);
    CHECK(qkv_safetensors_get(st, NULL, QKV_DTYPE_F32, &a) == QKV_ERR_NULL_ARGUMENT);
    CHECK(test_array_zeroed(&a));
    CHECK(qkv_safetensors_get(NULL, "a", QKV_DTYPE_F32, &a) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_safetensors_get(st, "a", QKV_DTYPE_F32, NULL) == QKV_ERR_NULL_ARGUMENT);
    memset(&a, 0x5a, sizeof a);
    CHECK(qkv_safetensors_get(st, "a", (qkv_dtype)42, &a) == QKV_ERR_DTYPE);
    CHECK(test_array_zeroed(&a));
    CHECK(test_starts_with(qkv_error_detail(), "copy: tensor 'a': "));
    CHECK(qkv_safetensors_get(st, "a", QKV_DTYPE_F32, &a) == QKV_OK);
    CHECK(a.data && ((unsigned char *)a.data)[0] == 1 && ((unsigned char *)a.data)[7] == 50);
    qkv_array_free(&a);
    /* A long name is cut in details. */
    {
        char longname[300];
        memset(longname, 'n', sizeof longname - 1);
        longname[sizeof longname - 1] = '\0';
        CHECK(qkv_safetensors_get(st, longname, QKV_DTYPE_F32, &a) ==
              QKV_ERR_INVALID_ARGUMENT);
        CHECK(strstr(qkv_error_detail(), "nnn...'") != NULL);
        CHECK(strlen(qkv_error_detail()) < 100);
        /* Cut between characters, never inside one. */
        for (size_t i = 0; i + 2 < sizeof longname; i += 2)
            memcpy(longname + i, "\xc3\xa9", 2);
        longname[sizeof longname - 2] = '\0';
        for (int shift = 0; shift < 2; shift++) {
            const char *d, *cut;
            CHECK(qkv_safetensors_get(st, longname + shift, QKV_DTYPE_F32, &a) ==
                  QKV_ERR_INVALID_ARGUMENT);
            d = qkv_error_detail();
            cut = strstr(d, "...'");
            CHECK(cut && cut > d && (unsigned char)cut[-1] == 0xa9);
        }
    }

    /* Two parses are independent; frees leave the error detail alone. */
    CHECK(qkv_safetensors_parse(buf, len, NULL, &st2) == QKV_OK);
    CHECK(qkv_safetensors_get(st, "zz", QKV_DTYPE_F32, &a) == QKV_ERR_INVALID_ARGUMENT);
    qkv_safetensors_free(st2);
    qkv_safetensors_free(st);
    CHECK(strstr(qkv_error_detail(), "'zz'") != NULL);

    /* Reading from a pipe-like path: /dev/stdin is not used; a regular
     * file read twice gives the same tensors. */
    tmp_path(path, sizeof path, "twice.safetensors");
    CHECK(test_write_file(path, buf, len));
    CHECK(qkv_safetensors_read(path, &st) == QKV_OK);
    CHECK(qkv_safetensors_read(path, &st2) == QKV_OK);
    CHECK(qkv_safetensors_count(st) == qkv_safetensors_count(st2));
    qkv_safetensors_free(st);
    qkv_safetensors_free(st2);
    remove(path);
}

static void test_write_errors(void)
{
    float f[2] = {1, 2};
    int64_t s2[1] = {2};
    qkv_array a[2], b;
    const char *names[2] = {"x", "y"};
    char path[128];
    struct stat sb;
    a[0] = make_array(QKV_DTYPE_F32, f, 1, s2);
    a[1] = a[0];
    tmp_path(path, sizeof path, "w.safetensors");

    CHECK(qkv_safetensors_write(NULL, 2, names, a) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_safetensors_write(path, -1, names, a) == QKV_ERR_INVALID_ARGUMENT);
    CHECK(qkv_safetensors_write(path, 2, NULL, a) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_safetensors_write(path, 2, names, NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), path));
    {
        const char *dup[2] = {"x", "x"}, *empty[2] = {"x", ""}, *null[2] = {"x", NULL},
                   *meta[2] = {"__metadata__", "y"}, *bad[2] = {"x", "\xc3("};
        CHECK(qkv_safetensors_write(path, 2, dup, a) == QKV_ERR_INVALID_ARGUMENT);
        CHECK(strstr(qkv_error_detail(), "duplicate name 'x'") != NULL);
        CHECK(qkv_safetensors_write(path, 2, empty, a) == QKV_ERR_INVALID_ARGUMENT);
        CHECK(strstr(qkv_error_detail(), "empty") != NULL);
        CHECK(qkv_safetensors_write(path, 2, null, a) == QKV_ERR_NULL_ARGUMENT);
        CHECK(qkv_safetensors_write(path, 2, meta, a) == QKV_ERR_INVALID_ARGUMENT);
        CHECK(strstr(qkv_error_detail(), "reserved") != NULL);
        CHECK(qkv_safetensors_write(path, 2, bad, a) == QKV_ERR_INVALID_ARGUMENT);
        CHECK(strstr(qkv_error_detail(), "UTF-8") != NULL);
    }
    CHECK(stat(path, &sb) != 0); /* all refused before creating the file */
    b = a[0];
    b.dtype = (qkv_dtype)42;
    CHECK(qkv_safetensors_write(path, 1, names, &b) == QKV_ERR_DTYPE);
    b = a[0];
    b.ndim = QKV_ARRAY_MAX_DIMS + 1;
    CHECK(qkv_safetensors_write(path, 1, names, &b) == QKV_ERR_INVALID_ARGUMENT);
    b.ndim = -1;
    CHECK(qkv_safetensors_write(path, 1, names, &b) == QKV_ERR_INVALID_ARGUMENT);
    b.ndim = 1;
    b.shape[0] = -2;
    CHECK(qkv_safetensors_write(path, 1, names, &b) == QKV_ERR_INVALID_ARGUMENT);
    b.ndim = 2;
    b.shape[0] = b.shape[1] = (int64_t)1 << 32;
    CHECK(qkv_safetensors_write(path, 1, names, &b) == QKV_ERR_OVERFLOW);
    b = a[0];
    b.data = NULL;
    CHECK(qkv_safetensors_write(path, 1, names, &b) == QKV_ERR_NULL_ARGUMENT);
    b.shape[0] = 0; /* zero elements need no data */
    CHECK(qkv_safetensors_write(path, 1, names, &b) == QKV_OK);
    /* Two tensors whose sizes together overflow. */
    {
        qkv_array big[2];
        big[0] = make_array(QKV_DTYPE_F64, f, 1, s2);
        big[0].shape[0] = (int64_t)1 << 59;
        big[1] = big[0];
        CHECK(qkv_safetensors_write(path, 2, names, big) == QKV_ERR_OVERFLOW);
    }
    CHECK(stat(path, &sb) == 0);
    CHECK(qkv_safetensors_write(QKV_TEST_DATA "/no/such/dir/w.safetensors", 2, names, a) ==
          QKV_ERR_IO);
    CHECK(test_starts_with(qkv_error_detail(), QKV_TEST_DATA "/no/such/dir/w.safetensors: "));
    CHECK(qkv_safetensors_write(tmpdir, 2, names, a) == QKV_ERR_IO);
    if (stat("/dev/full", &sb) == 0) {
        CHECK(qkv_safetensors_write("/dev/full", 2, names, a) == QKV_ERR_IO);
        CHECK(test_starts_with(qkv_error_detail(), "/dev/full: "));
    }
    CHECK(qkv_safetensors_write(path, 2, names, a) == QKV_OK);
    CHECK(qkv_error_detail()[0] == '\0');
    remove(path);
}

/* -------------------------------------------------------------- streams */

/* From a pipe, the 8-byte length bounds the header, the data_offsets the
 * data, and one byte more than they promise is an error; nothing is read
 * past that, nor allocated beyond it. */

static char fifo[160];

static int check_read(const char *path, const stream_case *c)
{
    int before = test_failures;
    qkv_safetensors *st = (qkv_safetensors *)&st;
    pid_t pid = c->img ? stream_feed(path, c->img, c->len, c->zeros) : 0;
    qkv_status s = qkv_safetensors_read(path, &st);
    stream_reap(pid);
    if (s != c->want || (c->detail && !strstr(qkv_error_detail(), c->detail)))
        fprintf(stderr, "check_read: got %s '%s', want %s '%s'\n", qkv_status_string(s),
                qkv_error_detail(), qkv_status_string(c->want), c->detail ? c->detail : "");
    CHECK(s == c->want);
    CHECK(!c->detail || strstr(qkv_error_detail(), c->detail));
    if (s == QKV_OK) {
        qkv_array a;
        CHECK(qkv_safetensors_count(st) == 1);
        CHECK(qkv_safetensors_get(st, "a", QKV_DTYPE_F32, &a) == QKV_OK);
        /* make_st's data pattern, read back as bytes. */
        for (int i = 0; i < 8 && a.data; i++)
            CHECK(((unsigned char *)a.data)[i] == (unsigned char)(i * 7 + 1));
        qkv_array_free(&a);
    } else {
        CHECK(st == NULL);
        CHECK(test_starts_with(qkv_error_detail(), path));
    }
    qkv_safetensors_free(st);
    return test_failures - before;
}

static int read_fifo(const void *arg) { return check_read(fifo, arg); }
static int read_dev_zero(const void *arg) { return check_read("/dev/zero", arg); }

static void test_streams(void)
{
    static const char good[] = T("[0,8]");
    static const unsigned char zero8[8];
    unsigned char img[256], huge[16], big_data[256];
    size_t n = make_st(img, sizeof img - 1, good, 8);
    img[n] = 0; /* one byte past the data */
    put_u64(huge, (uint64_t)1 << 40); /* a length no header needs */
    memset(huge + 8, ' ', 8);
    /* Offsets that promise 2^40 bytes of data from a stream that has 8. */
    size_t nb = make_st(big_data, sizeof big_data,
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1099511627776],"
                        "\"data_offsets\":[0,1099511627776]}}",
                        8);
    tmp_path(fifo, sizeof fifo, "in.fifo");
    CHECK(n > 0 && nb > 0 && mkfifo(fifo, 0600) == 0);
    const stream_case cases[] = {
        {img, n, 0, QKV_OK, NULL},
        {img, n, 1, QKV_ERR_FORMAT, "trailing bytes after the 8 bytes of data"},
        {img, n + 1, 0, QKV_ERR_FORMAT, "trailing bytes after the 8 bytes of data"},
        {img, n - 1, 0, QKV_ERR_FORMAT, "truncated: the data_offsets need 8 bytes of data, "
                                        "the file has 7"},
        {img, 20, 0, QKV_ERR_FORMAT, "header length 54 runs past the end of the file (20 "
                                     "bytes)"},
        {img, 5, 0, QKV_ERR_FORMAT, "truncated: 5 bytes, shorter than the 8-byte header"},
        {huge, 16, 1, QKV_ERR_FORMAT, "header length 1099511627776 is more than the "
                                      "100000000 bytes"},
        {zero8, 8, 1, QKV_ERR_FORMAT, "header length 0"},
        {big_data, nb, 0, QKV_ERR_FORMAT, "the file has 8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int bad = stream_bounded(read_fifo, &cases[i]);
        if (bad) fprintf(stderr, "test_streams: FIFO case %zu failed\n", i);
        CHECK(bad == 0);
    }
    {
        const stream_case z = {NULL, 0, 0, QKV_ERR_FORMAT, "header length 0"};
        CHECK(stream_bounded(read_dev_zero, &z) == 0);
    }
    remove(fifo);

    /* A regular file is bounded by its size: a length past it fails before
     * anything is allocated for it. */
    {
        char path[160];
        tmp_path(path, sizeof path, "huge.safetensors");
        CHECK(test_write_file(path, huge, 16));
        const stream_case c = {NULL, 0, 0, QKV_ERR_FORMAT,
                               "header length 1099511627776 runs past the end of the file (16 "
                               "bytes)"};
        CHECK(check_read(path, &c) == 0);
        remove(path);
    }
}

int main(void)
{
    tmpdir = test_tmpdir();
    test_round_trips();
    test_write_escapes();
    test_known_good();
    test_reference_files();
    test_malformed();
    test_api_edges();
    test_write_errors();
    test_streams();
    test_rmdir(tmpdir);
    return test_finish("test_safetensors");
}
