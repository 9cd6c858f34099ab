/* Tests of the .npy reader and writer, qkv_array_convert and the scalar
 * float16/bfloat16 conversions: hand-computed values, exhaustive rounding
 * checks, round trips, NumPy's exact byte layout and a table of malformed
 * files that must fail cleanly. */
#include "half.h"
#include "qkv.h"
#include "test.h"
#include "util.h"
#include "stream.h"

#include <dirent.h>
#include <float.h>
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


/* A .npy image: magic, version major.0, header text padded with spaces to
 * 64 bytes and a newline, then dlen bytes of data (a fixed pattern). */
static size_t make_npy(unsigned char *buf, size_t cap, int major, const char *text,
                       size_t dlen)
{
    size_t pre = major == 1 ? 10 : 12, tl = strlen(text), hlen, pos;
    hlen = tl + 1;
    hlen += (64 - (pre + hlen) % 64) % 64;
    if (pre + hlen + dlen > cap)
        return 0;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    for (size_t i = 0; i < pre - 8; i++)
        buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + pre, text, tl);
    memset(buf + pre + tl, ' ', hlen - tl - 1);
    buf[pre + hlen - 1] = '\n';
    pos = pre + hlen;
    for (size_t i = 0; i < dlen; i++)
        buf[pos + i] = (unsigned char)(i * 7 + 1);
    return pos + dlen;
}

/* --------------------------------------------------- half and bfloat16 */

static float f32_from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static void test_f16_known_values(void)
{
    static const struct {
        float in;
        uint16_t out;
    } cases[] = {
        {1.0f, 0x3c00},        {-2.0f, 0xc000},      {0.0f, 0x0000},
        {-0.0f, 0x8000},       {65504.0f, 0x7bff},   {65519.0f, 0x7bff},
        {65520.0f, 0x7c00},    {1e6f, 0x7c00},       {-1e6f, 0xfc00},
        {0.5f, 0x3800},        {0x1p-14f, 0x0400},   {0x1p-24f, 0x0001},
        {0x3p-24f, 0x0003},    {0x1p-25f, 0x0000},   {0x3p-25f, 0x0002},
        {0x5p-25f, 0x0002},    {0x1.000002p-25f, 0x0001}, {0x1p-26f, 0x0000},
        {0x3ffp-24f, 0x03ff},  {0x7ffp-25f, 0x0400}, {2048.0f, 0x6800},
        {2049.0f, 0x6800},     {2050.0f, 0x6801},    {2051.0f, 0x6802},
        {2047.5f, 0x6800},     {0.1f, 0x2e66},       {1.0f / 3, 0x3555},
        {1e-30f, 0x0000},      {-1e-30f, 0x8000},    {FLT_MAX, 0x7c00},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = qkv_f32_to_f16(cases[i].in);
        uint16_t hd = qkv_f64_to_f16(cases[i].in);
        if (h != cases[i].out || hd != cases[i].out)
            fprintf(stderr, "f16 of %a: got %04x / %04x, want %04x\n", cases[i].in, h, hd,
                    cases[i].out);
        CHECK(h == cases[i].out);
        CHECK(hd == cases[i].out);
    }
    CHECK(qkv_f32_to_f16(INFINITY) == 0x7c00);
    CHECK(qkv_f32_to_f16(-INFINITY) == 0xfc00);
    CHECK((qkv_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (qkv_f32_to_f16(NAN) & 0x3ff));
    CHECK((qkv_f64_to_f16(-NAN) & 0xfc00) == 0xfc00 && (qkv_f64_to_f16(-NAN) & 0x3ff));
    /* A NaN whose payload lives only in the low bits stays NaN. */
    CHECK((qkv_f32_to_f16(f32_from_bits(0x7f800001u)) & 0x3ff) != 0);

    CHECK(qkv_f16_to_f32(0x3c00) == 1.0f);
    CHECK(qkv_f16_to_f32(0xc000) == -2.0f);
    CHECK(qkv_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(qkv_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(qkv_f16_to_f32(0x03ff) == 0x3ffp-24f);
    CHECK(qkv_f16_to_f32(0x0400) == 0x1p-14f);
    CHECK(qkv_f16_to_f32(0x7c00) == INFINITY);
    CHECK(qkv_f16_to_f32(0xfc00) == -INFINITY);
    CHECK(isnan(qkv_f16_to_f32(0x7e00)) && isnan(qkv_f16_to_f32(0x7c01)));
    CHECK(qkv_f16_to_f32(0x8000) == 0.0f && signbit(qkv_f16_to_f32(0x8000)));

    /* Rounding straight from double: 1 + 2^-11 + 2^-40 is just above the
     * tie between 0x3c00 and 0x3c01; through float it would become the tie
     * itself and round to even, 0x3c00. */
    CHECK(qkv_f64_to_f16(1.0 + 0x1p-11 + 0x1p-40) == 0x3c01);
    CHECK(qkv_f64_to_f16(1.0 + 0x1p-11) == 0x3c00);
    CHECK(qkv_f64_to_f16(65520.0 - 0x1p-30) == 0x7bff);
    CHECK(qkv_f64_to_f16(1e300) == 0x7c00);
    CHECK(qkv_f64_to_f16(1e-300) == 0x0000);
    CHECK(qkv_f64_to_f16(0x1p-25 + 0x1p-60) == 0x0001);
}

/* Every finite f16 pair of neighbours: their midpoint rounds to the even
 * one, and the floats just either side of it round to the nearer one; every
 * f16 survives the trip through float and double. */
static void test_f16_exhaustive(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = qkv_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            bad += (qkv_f32_to_f16(f) & 0x7fff) <= 0x7c00;
            continue;
        }
        bad += qkv_f32_to_f16(f) != h;
        bad += qkv_f64_to_f16((double)f) != h;
        if ((h & 0x7fff) >= 0x7c00)
            continue;
        {
            /* The next magnitude up; past 65504 it is 65536, which rounds
             * to infinity. */
            float next = (h & 0x7fff) == 0x7bff ? copysignf(65536.0f, f)
                                                : qkv_f16_to_f32((uint16_t)(h + 1));
            float mid = (f + next) / 2; /* exact: 12 significant bits */
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            double dmid = ((double)f + next) / 2;
            bad += qkv_f32_to_f16(mid) != even;
            bad += qkv_f32_to_f16(nextafterf(mid, f)) != h;
            bad += qkv_f32_to_f16(nextafterf(mid, next)) != (uint16_t)(h + 1);
            bad += qkv_f64_to_f16(dmid) != even;
            bad += qkv_f64_to_f16(nextafter(dmid, f)) != h;
            bad += qkv_f64_to_f16(nextafter(dmid, next)) != (uint16_t)(h + 1);
        }
    }
    if (bad)
        fprintf(stderr, "f16 exhaustive: %d mismatches\n", bad);
    CHECK(bad == 0);
}

static void test_bf16(void)
{
    int bad = 0;
    CHECK(qkv_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(qkv_f32_to_bf16(-2.0f) == 0xc000);
    CHECK(qkv_f32_to_bf16(-0.0f) == 0x8000);
    CHECK(qkv_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);      /* tie, even down */
    CHECK(qkv_f32_to_bf16(1.0f + 0x3p-8f) == 0x3f82);      /* tie, even up */
    CHECK(qkv_f32_to_bf16(1.0f + 0x1.2p-8f) == 0x3f81);    /* above the tie */
    CHECK(qkv_f32_to_bf16(FLT_MAX) == 0x7f80);             /* rounds to inf */
    CHECK(qkv_f32_to_bf16(0x1.fep127f) == 0x7f7f);         /* largest finite */
    CHECK(qkv_f32_to_bf16(INFINITY) == 0x7f80);
    CHECK(qkv_f32_to_bf16(-INFINITY) == 0xff80);
    CHECK(qkv_f32_to_bf16(f32_from_bits(0x00010000u)) == 0x0001); /* subnormal */
    CHECK(qkv_f32_to_bf16(f32_from_bits(0x00008000u)) == 0x0000); /* tie to 0 */
    CHECK(qkv_f32_to_bf16(f32_from_bits(0x00018000u)) == 0x0002); /* tie to 2 */
    /* The rounding trick alone would turn this NaN into infinity. */
    CHECK((qkv_f32_to_bf16(f32_from_bits(0x7f800001u)) & 0x7f) != 0);
    CHECK(isnan(qkv_bf16_to_f32(qkv_f32_to_bf16(NAN))));
    CHECK(qkv_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(qkv_bf16_to_f32(0x4049) == 3.140625f);
    /* Straight from double, as for f16. */
    CHECK(qkv_f64_to_bf16(1.0 + 0x1p-8 + 0x1p-40) == 0x3f81);
    CHECK(qkv_f64_to_bf16(1.0 + 0x1p-8) == 0x3f80);
    CHECK(qkv_f64_to_bf16(1e300) == 0x7f80);
    CHECK(qkv_f64_to_bf16(-1e-300) == 0x8000);
    CHECK(qkv_f64_to_bf16(0x1p-133) == 0x0001);
    CHECK(qkv_f64_to_bf16(0x1p-134) == 0x0000);
    CHECK(qkv_f64_to_bf16(0x1p-134 + 0x1p-160) == 0x0001);
    CHECK((qkv_f64_to_bf16(NAN) & 0x7f80) == 0x7f80 && (qkv_f64_to_bf16(NAN) & 0x7f));
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = qkv_bf16_to_f32((uint16_t)h);
        if (isnan(f)) {
            bad += !isnan(qkv_bf16_to_f32(qkv_f32_to_bf16(f)));
            bad += !isnan(qkv_bf16_to_f32(qkv_f64_to_bf16(f)));
            continue;
        }
        bad += qkv_f32_to_bf16(f) != h;
        bad += qkv_f64_to_bf16(f) != h;
        if ((h & 0x7fff) < 0x7f7f) {
            float next = qkv_bf16_to_f32((uint16_t)(h + 1));
            double mid = ((double)f + next) / 2;
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            bad += qkv_f32_to_bf16((float)mid) != even;
            bad += qkv_f64_to_bf16(mid) != even;
            bad += qkv_f64_to_bf16(nextafter(mid, f)) != h;
            bad += qkv_f64_to_bf16(nextafter(mid, next)) != (uint16_t)(h + 1);
        }
    }
    if (bad)
        fprintf(stderr, "bf16 exhaustive: %d mismatches\n", bad);
    CHECK(bad == 0);
}

/* ------------------------------------------------------ array functions */

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

static void test_numel_free(void)
{
    int64_t s[QKV_ARRAY_MAX_DIMS + 1] = {2, 3, 4};
    qkv_array a = make_array(QKV_DTYPE_F32, NULL, 3, s);
    CHECK(qkv_array_numel(&a) == 24);
    a.ndim = 0;
    CHECK(qkv_array_numel(&a) == 1);
    a.ndim = QKV_ARRAY_MAX_DIMS + 1;
    CHECK(qkv_array_numel(&a) == -1);
    a.ndim = -1;
    CHECK(qkv_array_numel(&a) == -1);
    CHECK(qkv_array_numel(NULL) == -1);
    a.ndim = 3;
    a.shape[1] = -3;
    CHECK(qkv_array_numel(&a) == -1);
    a.shape[1] = 0;
    CHECK(qkv_array_numel(&a) == 0);
    a.shape[0] = a.shape[2] = (int64_t)1 << 40; /* nonzero dims overflow */
    CHECK(qkv_array_numel(&a) == -1);
    a.ndim = 2;
    a.shape[1] = (int64_t)1 << 22;
    CHECK(qkv_array_numel(&a) == (int64_t)1 << 62);
    a.shape[1] = (int64_t)1 << 23;
    CHECK(qkv_array_numel(&a) == -1);

    qkv_array_free(NULL);
    a = make_array(QKV_DTYPE_F32, malloc(16), 1, s);
    qkv_array_free(&a);
    CHECK(test_array_zeroed(&a));
    qkv_array_free(&a); /* twice is fine */
}

static void test_convert(void)
{
    float f[6] = {1.0f, -2.5f, 65520.0f, 0x1p-25f, INFINITY, NAN};
    int64_t s6[1] = {6}, s23[2] = {2, 3}, s0[2] = {4, 0};
    int64_t i64[3] = {-5, 0, (int64_t)1 << 60 | (int64_t)1 << 36 | 1};
    int32_t i32[3] = {7, 0, -1};
    unsigned char b[3] = {0, 1, 200};
    qkv_array src, d1, d2;
    qkv_status st;

    /* f32 -> f16 -> f64 -> bf16 -> f32. */
    src = make_array(QKV_DTYPE_F32, f, 1, s6);
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F16) == QKV_OK);
    CHECK(d1.dtype == QKV_DTYPE_F16 && d1.ndim == 1 && d1.shape[0] == 6);
    {
        const uint16_t *h = d1.data;
        CHECK(h[0] == 0x3c00 && h[1] == 0xc100 && h[2] == 0x7c00 && h[3] == 0 &&
              h[4] == 0x7c00 && (h[5] & 0x7c00) == 0x7c00 && (h[5] & 0x3ff));
    }
    CHECK(qkv_array_convert(&d2, &d1, QKV_DTYPE_F64) == QKV_OK);
    {
        const double *d = d2.data;
        CHECK(d[0] == 1.0 && d[1] == -2.5 && d[2] == INFINITY && d[3] == 0 &&
              isnan(d[5]));
    }
    qkv_array_free(&d1);
    CHECK(qkv_array_convert(&d1, &d2, QKV_DTYPE_BF16) == QKV_OK);
    CHECK(((uint16_t *)d1.data)[1] == 0xc020);
    qkv_array_free(&d2);
    CHECK(qkv_array_convert(&d2, &d1, QKV_DTYPE_F32) == QKV_OK);
    CHECK(((float *)d2.data)[1] == -2.5f && isnan(((float *)d2.data)[5]));
    qkv_array_free(&d1);
    qkv_array_free(&d2);

    /* f64 -> f16 rounds once, from the double. */
    {
        double dv = 1.0 + 0x1p-11 + 0x1p-40;
        src = make_array(QKV_DTYPE_F64, &dv, 0, NULL);
        CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F16) == QKV_OK);
        CHECK(d1.ndim == 0 && *(uint16_t *)d1.data == 0x3c01);
        qkv_array_free(&d1);
        CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_BF16) == QKV_OK);
        CHECK(*(uint16_t *)d1.data == 0x3f80);
        qkv_array_free(&d1);
    }

    /* Integers: to float once-rounded, among each other exactly. */
    src = make_array(QKV_DTYPE_I64, i64, 1, s6);
    src.shape[0] = 3;
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F32) == QKV_OK);
    CHECK(((float *)d1.data)[0] == -5.0f);
    CHECK(((float *)d1.data)[2] == 0x1p60f + 0x1p37f); /* not 2^60 via double */
    qkv_array_free(&d1);
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_BOOL) == QKV_OK);
    CHECK(memcmp(d1.data, "\1\0\1", 3) == 0);
    qkv_array_free(&d1);
    st = qkv_array_convert(&d1, &src, QKV_DTYPE_I32);
    CHECK(st == QKV_ERR_OVERFLOW && test_array_zeroed(&d1));
    CHECK(strstr(qkv_error_detail(), "element 2") != NULL);
    CHECK(strstr(qkv_error_detail(), "1152921573326323713") != NULL);
    i64[2] = (int64_t)INT32_MIN - 1;
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_I32) == QKV_ERR_OVERFLOW);
    i64[2] = INT32_MIN;
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_I32) == QKV_OK);
    CHECK(((int32_t *)d1.data)[0] == -5 && ((int32_t *)d1.data)[2] == INT32_MIN);
    qkv_array_free(&d1);

    {
        /* Ties and near-ties of int64 -> f32, which has 2^37 spacing at 2^60. */
        int64_t big[6] = {((int64_t)1 << 60) + ((int64_t)1 << 36),
                          ((int64_t)1 << 60) + ((int64_t)3 << 36),
                          ((int64_t)1 << 60) + ((int64_t)1 << 36) - 1,
                          -(((int64_t)1 << 60) + ((int64_t)1 << 36) + 1), INT64_MIN,
                          INT64_MAX};
        const float *r;
        src = make_array(QKV_DTYPE_I64, big, 1, s6);
        CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F32) == QKV_OK);
        r = d1.data;
        CHECK(r[0] == 0x1p60f && r[1] == 0x1p60f + 0x1p38f && r[2] == 0x1p60f);
        CHECK(r[3] == -(0x1p60f + 0x1p37f) && r[4] == -0x1p63f && r[5] == 0x1p63f);
        qkv_array_free(&d1);
    }

    src = make_array(QKV_DTYPE_I32, i32, 1, s6);
    src.shape[0] = 3;
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_I64) == QKV_OK);
    CHECK(((int64_t *)d1.data)[2] == -1);
    qkv_array_free(&d1);
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F64) == QKV_OK);
    CHECK(((double *)d1.data)[0] == 7.0 && ((double *)d1.data)[2] == -1.0);
    qkv_array_free(&d1);

    src = make_array(QKV_DTYPE_BOOL, b, 1, s6);
    src.shape[0] = 3;
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_I32) == QKV_OK);
    CHECK(((int32_t *)d1.data)[1] == 1 && ((int32_t *)d1.data)[2] == 1);
    qkv_array_free(&d1);
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F32) == QKV_OK);
    CHECK(((float *)d1.data)[0] == 0.0f && ((float *)d1.data)[2] == 1.0f);
    qkv_array_free(&d1);
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_BOOL) == QKV_OK); /* bytes kept */
    CHECK(memcmp(d1.data, b, 3) == 0);
    qkv_array_free(&d1);

    /* Refused: float to int or bool, int to half, bad arguments. */
    src = make_array(QKV_DTYPE_F32, f, 2, s23);
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_I32) == QKV_ERR_DTYPE && test_array_zeroed(&d1));
    CHECK(strstr(qkv_error_detail(), "f32") && strstr(qkv_error_detail(), "i32"));
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_BOOL) == QKV_ERR_DTYPE);
    CHECK(qkv_array_convert(&d1, &src, (qkv_dtype)99) == QKV_ERR_DTYPE);
    src = make_array(QKV_DTYPE_I32, i32, 1, s6);
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F16) == QKV_ERR_DTYPE);
    CHECK(qkv_array_convert(NULL, &src, QKV_DTYPE_F32) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_array_convert(&d1, NULL, QKV_DTYPE_F32) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_error_detail()[0] != '\0');
    src = make_array(QKV_DTYPE_F32, NULL, 1, s6);
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F64) == QKV_ERR_NULL_ARGUMENT);
    src = make_array(QKV_DTYPE_F32, f, 1, s6);
    src.shape[0] = -1;
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F64) == QKV_ERR_INVALID_ARGUMENT);
    src.ndim = 40;
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F64) == QKV_ERR_INVALID_ARGUMENT);
    src.ndim = 2;
    src.shape[0] = src.shape[1] = (int64_t)1 << 31;
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F64) == QKV_ERR_OVERFLOW);

    /* Zero-size arrays convert to an array with data. */
    src = make_array(QKV_DTYPE_F32, NULL, 2, s0);
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F16) == QKV_OK);
    CHECK(d1.data != NULL && d1.shape[0] == 4 && d1.shape[1] == 0);
    CHECK(qkv_error_detail()[0] == '\0');
    qkv_array_free(&d1);

    /* dst may alias src; the old buffer stays the caller's to free. */
    src = make_array(QKV_DTYPE_F32, f, 1, s6);
    CHECK(qkv_array_convert(&d1, &src, QKV_DTYPE_F64) == QKV_OK);
    {
        void *old = d1.data;
        CHECK(qkv_array_convert(&d1, &d1, QKV_DTYPE_F32) == QKV_OK);
        CHECK(d1.dtype == QKV_DTYPE_F32 && ((float *)d1.data)[1] == -2.5f);
        free(old);
        qkv_array_free(&d1);
    }
}

/* --------------------------------------------------------- .npy: files */

/* Fills n bytes with a pattern that differs per position. */
static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 37 + seed * 11 + (i >> 8));
}

static void test_round_trips(void)
{
    static const qkv_dtype types[] = {QKV_DTYPE_F32, QKV_DTYPE_F64, QKV_DTYPE_F16,
                                      QKV_DTYPE_BOOL, QKV_DTYPE_I32, QKV_DTYPE_I64};
    static const struct {
        int ndim;
        int64_t shape[7];
    } shapes[] = {
        {0, {0}},          {1, {5}},          {2, {2, 3}},           {4, {2, 1, 3, 2}},
        {7, {1, 2, 1, 2, 1, 2, 3}}, {1, {0}}, {3, {3, 0, 2}},       {1, {70001}},
    };
    char path[128];
    tmp_path(path, sizeof path, "rt.npy");
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            qkv_array a = make_array(types[t], NULL, shapes[s].ndim, shapes[s].shape), b, c;
            size_t nbytes = (size_t)qkv_array_numel(&a) * qkv_dtype_size(types[t]), flen;
            unsigned char *file;
            a.data = malloc(nbytes + 1);
            fill(a.data, nbytes, (unsigned)(t * 10 + s));
            CHECK(qkv_npy_write(path, &a) == QKV_OK);
            CHECK(qkv_npy_read(path, &b) == QKV_OK);
            CHECK(b.data != NULL && b.dtype == a.dtype && b.ndim == a.ndim);
            CHECK(memcmp(b.shape, a.shape, sizeof a.shape) == 0);
            CHECK(b.data && memcmp(b.data, a.data, nbytes) == 0);
            /* The data starts 64-aligned, right after the header. */
            file = test_read_file(path, &flen);
            CHECK(file && flen >= nbytes && (flen - nbytes) % 64 == 0);
            CHECK(file && file[flen - nbytes - 1] == '\n');
            CHECK(file && qkv_npy_parse(file, flen, "rt", &c) == QKV_OK);
            CHECK(c.data && c.ndim == a.ndim && memcmp(c.data, a.data, nbytes) == 0);
            free(file);
            free(a.data);
            qkv_array_free(&b);
            qkv_array_free(&c);
        }
}

static void check_written(const char *what, const qkv_array *a, const char *text,
                          size_t hlen)
{
    unsigned char want[256];
    size_t tl = strlen(text), flen, nbytes = (size_t)qkv_array_numel(a) *
                                              qkv_dtype_size(a->dtype);
    char path[128];
    unsigned char *got;
    memcpy(want, "\x93NUMPY\x01\x00", 8);
    want[8] = (unsigned char)hlen;
    want[9] = (unsigned char)(hlen >> 8);
    memcpy(want + 10, text, tl);
    memset(want + 10 + tl, ' ', hlen - tl - 1);
    want[10 + hlen - 1] = '\n';
    tmp_path(path, sizeof path, "layout.npy");
    CHECK(qkv_npy_write(path, a) == QKV_OK);
    got = test_read_file(path, &flen);
    CHECK(got && flen == 10 + hlen + nbytes);
    CHECK(got && flen == 10 + hlen + nbytes && memcmp(got, want, 10 + hlen) == 0 &&
          (nbytes == 0 || memcmp(got + 10 + hlen, a->data, nbytes) == 0));
    if (got && flen >= 10 + hlen && memcmp(got, want, 10 + hlen) != 0)
        fprintf(stderr, "%s: header is '%.*s'\n", what, (int)flen - 10, got + 10);
    free(got);
}

/* What numpy.save writes, byte for byte: sorted keys, Python reprs, 21 -
 * len(repr(shape[0])) spaces of room for the first dim to grow, then 1 to 64
 * spaces and a newline up to a multiple of 64. */
static void test_layout(void)
{
    float f[6] = {1, 2, 3, 4, 5, 6};
    double d = 0.5;
    int64_t i[5] = {1, 2, 3, 4, 5};
    int64_t s23[2] = {2, 3}, s5[1] = {5}, s1x16[16], sz[10] = {0, 1, 1, 1, 1, 1, 1, 1,
                                                                 10000000, 10000000};
    qkv_array a;
    for (int k = 0; k < 16; k++)
        s1x16[k] = 1;
    a = make_array(QKV_DTYPE_F32, f, 2, s23);
    check_written("(2, 3) f4", &a,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 118);
    a = make_array(QKV_DTYPE_F64, &d, 0, NULL);
    check_written("() f8", &a, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
                  118);
    a = make_array(QKV_DTYPE_I64, i, 1, s5);
    check_written("(5,) i8", &a,
                  "{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }", 118);
    /* The growth room pushes this header past 128 bytes. */
    a = make_array(QKV_DTYPE_F32, f, 16, s1x16);
    check_written("16 dims", &a,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, "
                  "1, 1, 1, 1, 1, 1, 1, 1, 1, 1), }",
                  182);
    /* Here magic + length + text + room + newline is exactly 128, and
     * numpy.save still adds 64 spaces. */
    a = make_array(QKV_DTYPE_F32, NULL, 10, sz);
    check_written("exact fit", &a,
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1, 1, 1, 1, 1, "
                  "1, 1, 10000000, 10000000), }",
                  182);
}

/* Every oracle file was written by numpy.save: reading and writing it back
 * must reproduce it byte for byte. */
static void test_oracle_files(void)
{
    char path[512], out[128];
    qkv_array a;
    DIR *top, *sub;
    struct dirent *e, *f;
    int files = 0;

    CHECK(qkv_npy_read(QKV_TEST_DATA "/oracle/seed_example_like/q.npy", &a) == QKV_OK);
    CHECK(a.dtype == QKV_DTYPE_F32 && a.ndim == 4 && a.shape[0] == 1 && a.shape[1] == 1 &&
          a.shape[2] == 4 && a.shape[3] == 64);
    CHECK(a.data && isfinite(((float *)a.data)[255]));
    qkv_array_free(&a);
    CHECK(qkv_npy_read(QKV_TEST_DATA "/oracle/mha_small_padded/kv_lens.npy", &a) ==
          QKV_OK);
    CHECK(a.dtype == QKV_DTYPE_I32 && a.ndim == 1 && a.shape[0] == 2);
    CHECK(a.data && ((int32_t *)a.data)[0] == 6 && ((int32_t *)a.data)[1] == 3);
    qkv_array_free(&a);

    tmp_path(out, sizeof out, "oracle.npy");
    top = opendir(QKV_TEST_DATA "/oracle");
    CHECK(top != NULL);
    while (top && (e = readdir(top))) {
        if (e->d_name[0] == '.')
            continue;
        if (snprintf(path, sizeof path, "%s/oracle/%s", QKV_TEST_DATA, e->d_name) >=
                (int)sizeof path ||
            !(sub = opendir(path)))
            continue;
        while ((f = readdir(sub))) {
            size_t n = strlen(f->d_name), len1, len2;
            unsigned char *b1, *b2;
            if (n < 4 || strcmp(f->d_name + n - 4, ".npy") != 0 ||
                snprintf(path, sizeof path, "%s/oracle/%s/%s", QKV_TEST_DATA, e->d_name,
                         f->d_name) >= (int)sizeof path)
                continue;
            files++;
            CHECK(qkv_npy_read(path, &a) == QKV_OK);
            CHECK(qkv_npy_write(out, &a) == QKV_OK);
            b1 = test_read_file(path, &len1);
            b2 = test_read_file(out, &len2);
            CHECK(b1 && b2 && len1 == len2 && memcmp(b1, b2, len1) == 0);
            free(b1);
            free(b2);
            qkv_array_free(&a);
        }
        closedir(sub);
    }
    if (top)
        closedir(top);
    CHECK(files >= 60);
}

/* -------------------------------------------------- .npy: header syntax */

static void test_header_variants(void)
{
    static const struct {
        int major;
        const char *text;
        qkv_dtype dtype;
        int ndim;
        int64_t shape[3];
    } ok[] = {
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", QKV_DTYPE_F32, 2, {2, 3}},
        {1, "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}", QKV_DTYPE_F32, 2, {2, 3}},
        {1, "{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (3,)}", QKV_DTYPE_F64, 1, {3}},
        {1, "{'descr':'<f2','fortran_order':False,'shape':(1,2,3)}", QKV_DTYPE_F16, 3, {1, 2, 3}},
        {1, "  {  'fortran_order'  :  False ,\t'descr' : '|b1' , 'shape' : ( 4 , ) , } ",
         QKV_DTYPE_BOOL, 1, {4}},
        {1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3,), }", QKV_DTYPE_I32, 2, {2, 3}},
        {1, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }", QKV_DTYPE_I64, 0, {0}},
        {1, "{'descr': '<f4',\n 'fortran_order': False,\r\n 'shape': (0, 7)}", QKV_DTYPE_F32, 2, {0, 7}},
        {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 1L), }", QKV_DTYPE_F32, 2, {2, 1}},
        {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", QKV_DTYPE_F32, 2, {2, 3}},
        {3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", QKV_DTYPE_F32, 2, {2, 3}},
        {3, "{'shape': (0,), 'descr': '<f8', 'fortran_order': False}", QKV_DTYPE_F64, 1, {0}},
    };
    static unsigned char buf[1024];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        qkv_array a = make_array(ok[i].dtype, NULL, ok[i].ndim, ok[i].shape), r;
        size_t nbytes = (size_t)qkv_array_numel(&a) * qkv_dtype_size(ok[i].dtype);
        size_t len = make_npy(buf, sizeof buf, ok[i].major, ok[i].text, nbytes);
        qkv_status st = qkv_npy_parse(buf, len, "variant", &r);
        if (st != QKV_OK)
            fprintf(stderr, "variant %zu: %s\n", i, qkv_error_detail());
        CHECK(st == QKV_OK);
        CHECK(r.dtype == ok[i].dtype && r.ndim == ok[i].ndim &&
              memcmp(r.shape, a.shape, sizeof a.shape) == 0);
        CHECK(r.data && memcmp(r.data, buf + len - nbytes, nbytes) == 0);
        qkv_array_free(&r);
        /* The same from a file, mapped. */
        char path[128];
        tmp_path(path, sizeof path, "variant.npy");
        CHECK(test_write_file(path, buf, len));
        CHECK(qkv_npy_map(path, &r) == QKV_OK);
        CHECK(r.dtype == ok[i].dtype && r.ndim == ok[i].ndim &&
              memcmp(r.shape, a.shape, sizeof a.shape) == 0);
        CHECK(r.data && memcmp(r.data, buf + len - nbytes, nbytes) == 0);
        qkv_array_free(&r);
        remove(path);
    }
    /* A header NumPy pads with nothing but the newline, and one with no
     * padding to 64 at all. */
    {
        static const char t[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}\n";
        unsigned char b[10 + sizeof t - 1 + 4];
        qkv_array r;
        memcpy(b, "\x93NUMPY\x01\x00", 8);
        b[8] = (unsigned char)(sizeof t - 1);
        b[9] = 0;
        memcpy(b + 10, t, sizeof t - 1);
        memcpy(b + 10 + sizeof t - 1, "\0\0\x80\x3f", 4);
        CHECK(qkv_npy_parse(b, sizeof b, NULL, &r) == QKV_OK);
        CHECK(r.data && ((float *)r.data)[0] == 1.0f);
        qkv_array_free(&r);
    }
}

#define F QKV_ERR_FORMAT
#define O QKV_ERR_OVERFLOW

/* Headers that must be refused, each with the status it must give. */
static const struct {
    qkv_status want;
    int major;
    const char *text;
    size_t dlen;
    const char *detail; /* a part of the detail, or NULL */
} bad_headers[] = {
    {F, 1, "{'descr': '<f4', 'fortran_order': False, }", 0, "missing key 'shape'"},
    {F, 1, "{'fortran_order': False, 'shape': (2,), }", 8, "missing key 'descr'"},
    {F, 1, "{'descr': '<f4', 'shape': (2,), }", 8, "missing key 'fortran_order'"},
    {F, 1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8,
     "duplicate key 'descr'"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (2,)}", 8,
     "duplicate"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1, }", 8,
     "unexpected key 'extra'"},
    {F, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8,
     "big-endian data is not supported"},
    {F, 1, "{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }", 16, "big-endian"},
    {F, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (2,), }", 4, "'<u2'"},
    {F, 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", 16, "'<c8'"},
    {F, 1, "{'descr': '|i1', 'fortran_order': False, 'shape': (2,), }", 2, "'|i1'"},
    {F, 1, "{'descr': '<b1', 'fortran_order': False, 'shape': (2,), }", 2, "'<b1'"},
    {F, 1, "{'descr': '|f4', 'fortran_order': False, 'shape': (2,), }", 8, "'|f4'"},
    {F, 1, "{'descr': '=f4', 'fortran_order': False, 'shape': (2,), }", 8, "'=f4'"},
    {F, 1, "{'descr': '', 'fortran_order': False, 'shape': (2,), }", 8, "descr ''"},
    {F, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8,
     "structured"},
    {F, 1, "{'descr': 4, 'fortran_order': False, 'shape': (2,), }", 8, "quoted string"},
    {F, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24, "Fortran"},
    {F, 1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", 8, "True or False"},
    {F, 1, "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2,), }", 8, NULL},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 0, "negative"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", 0, "negative"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,), }", 8,
     "not an integer"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2e3,), }", 8,
     "not an integer"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0x10,), }", 64, NULL},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (02,), }", 8, "leading zero"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': ('2',), }", 8, NULL},
    {O, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
     0, "does not fit"},
    {O, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, "
           "1099511627776), }", 0, NULL},
    {O, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, "
           "1099511627776, 0), }", 0, NULL},
    {O, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }",
     0, NULL},
    {O, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775808,), }",
     0, NULL},
    {F, 1, "{'descr': '<f4", 0, "unterminated string"},
    {F, 1, "{'descr\": '<f4', 'fortran_order': False, 'shape': (2,), }", 8, NULL},
    {F, 1, "{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2,), }", 8, NULL},
    {F, 1, "{'descr': '<f4\xc3\xa9', 'fortran_order': False, 'shape': (2,), }", 8, NULL},
    {F, 3, "{'descr': '<f4\xc3\xa9', 'fortran_order': False, 'shape': (2,), }", 8, NULL},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, }", 24, NULL},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': 2, 3), }", 24, NULL},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': ((2, 3), }", 24, NULL},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", 24, NULL},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}}", 24, "after"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} x", 24, "after"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5), }", 20, "trailing comma"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }", 24, "tuple"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': 6, }", 24, "tuple"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", 24, NULL},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (,), }", 4, NULL},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,,), }", 8, NULL},
    {F, 3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }", 8, "not an integer"},
    {F, 1, "{descr: '<f4', 'fortran_order': False, 'shape': (2,), }", 8, "quoted string"},
    {F, 1, "{'descr' '<f4', 'fortran_order': False, 'shape': (2,), }", 8, "':'"},
    {F, 1, "{'descr': '<f4' 'fortran_order': False, 'shape': (2,), }", 8, NULL},
    {F, 1, "{'descr': '<f4',, 'fortran_order': False, 'shape': (2,), }", 8, NULL},
    {F, 1, "{, 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8, NULL},
    {F, 1, "['descr', '<f4']", 8, "'{'"},
    {F, 1, "", 0, "'{'"},
    {F, 1, "{}", 0, "missing key"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, "
           "1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), }",
     4, "more than 32"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 7,
     "truncated: header says 8 bytes of data, file has 7"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 9,
     "trailing bytes: header says 8 bytes of data, file has 9"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 0, "truncated"},
    {F, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }", 1, "trailing"},
};
#undef F
#undef O

/* Raw images that must be refused, built by hand. */
static size_t make_raw(int which, unsigned char *buf, size_t cap, const char **detail)
{
    static const char good[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    size_t n = make_npy(buf, cap, 1, good, 8);
    *detail = NULL;
    switch (which) {
    case 0: return 0; /* empty */
    case 1: *detail = "truncated"; return 5;
    case 2: buf[5] = 'Z'; *detail = "not a .npy file"; return n;
    case 3: memcpy(buf, "PK\x03\x04", 4); return n; /* an .npz */
    case 4: buf[6] = 4; *detail = "version 4.0"; return n;
    case 5: buf[7] = 1; *detail = "version 1.1"; return n;
    case 6: buf[6] = 0; return n;
    case 7: buf[8] = 0xff; *detail = "runs past the end"; return n; /* header length */
    case 8: buf[9] = 0x7f; *detail = "runs past the end"; return n;
    case 9: buf[10 + 117] = ' '; *detail = "newline"; return n;
    case 10: buf[8] = buf[9] = 0; *detail = "newline"; return n; /* length 0 */
    case 11: buf[6] = 2; *detail = "truncated"; return 9;
    case 12: buf[6] = 2; *detail = "truncated"; return 11;
    case 13: /* version 2.0 with a 4 GiB header */
        n = make_npy(buf, cap, 2, good, 8);
        memset(buf + 8, 0xff, 4);
        *detail = "runs past the end";
        return n;
    case 14: return 8; /* magic and version only */
    case 15: buf[10] = '\0'; return n;
    case 16: return 10 + 118 - 1; /* cut inside the header */
    default: return (size_t)-1;
    }
}

static void check_bad(const char *what, const unsigned char *buf, size_t len,
                      qkv_status want, const char *detail)
{
    qkv_array a;
    char path[128];
    qkv_status st;
    memset(&a, 0x5a, sizeof a);
    st = qkv_npy_parse(buf, len, "bad.npy", &a);
    if (st != want || (detail && !strstr(qkv_error_detail(), detail)))
        fprintf(stderr, "%s: got %s '%s', want %s '%s'\n", what, qkv_status_string(st),
                qkv_error_detail(), qkv_status_string(want), detail ? detail : "");
    CHECK(st == want);
    CHECK(test_array_zeroed(&a));
    CHECK(test_starts_with(qkv_error_detail(), "bad.npy: ") &&
          strlen(qkv_error_detail()) > strlen("bad.npy: "));
    CHECK(!detail || strstr(qkv_error_detail(), detail));
    CHECK(qkv_npy_parse(buf, len, NULL, &a) == want);
    CHECK(test_starts_with(qkv_error_detail(), "<buffer>: "));
    /* The file reader takes a different path to the same verdict. */
    tmp_path(path, sizeof path, "bad.npy");
    CHECK(test_write_file(path, buf, len));
    memset(&a, 0x5a, sizeof a);
    st = qkv_npy_read(path, &a);
    if (st != want || (detail && !strstr(qkv_error_detail(), detail)))
        fprintf(stderr, "%s (file): got %s '%s'\n", what, qkv_status_string(st),
                qkv_error_detail());
    CHECK(st == want);
    CHECK(test_array_zeroed(&a));
    CHECK(test_starts_with(qkv_error_detail(), path));
    CHECK(!detail || strstr(qkv_error_detail(), detail));
    /* So does the mapping reader, word for word. */
    char said[512];
    snprintf(said, sizeof said, "%s", qkv_error_detail());
    memset(&a, 0x5a, sizeof a);
    st = qkv_npy_map(path, &a);
    if (st != want || strcmp(qkv_error_detail(), said) != 0)
        fprintf(stderr, "%s (mapped): got %s '%s', read said '%s'\n", what,
                qkv_status_string(st), qkv_error_detail(), said);
    CHECK(st == want);
    CHECK(test_array_zeroed(&a));
    CHECK(strcmp(qkv_error_detail(), said) == 0);
}

static void test_malformed(void)
{
    static unsigned char buf[2048];
    const char *detail;
    size_t len;
    int count = 0;
    char what[32];
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        len = make_npy(buf, sizeof buf, bad_headers[i].major, bad_headers[i].text,
                       bad_headers[i].dlen);
        snprintf(what, sizeof what, "bad header %zu", i);
        check_bad(what, buf, len, bad_headers[i].want, bad_headers[i].detail);
        count++;
    }
    for (int i = 0; (len = make_raw(i, buf, sizeof buf, &detail)) != (size_t)-1; i++) {
        snprintf(what, sizeof what, "bad raw %d", i);
        check_bad(what, buf, len, QKV_ERR_FORMAT, detail);
        count++;
    }
    CHECK(count >= 30);
    /* Every prefix of a valid file is refused. */
    len = make_npy(buf, sizeof buf, 1,
                   "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8);
    for (size_t cut = 0; cut < len; cut++) {
        qkv_array a;
        CHECK(qkv_npy_parse(buf, cut, NULL, &a) == QKV_ERR_FORMAT);
    }
}

static void test_read_write_errors(void)
{
    qkv_array a, b;
    char path[128];
    float f[2] = {1, 2};
    int64_t s2[1] = {2};
    struct stat sb;

    CHECK(qkv_npy_read(QKV_TEST_DATA "/no/such/file.npy", &a) == QKV_ERR_IO);
    CHECK(test_array_zeroed(&a));
    CHECK(test_starts_with(qkv_error_detail(), QKV_TEST_DATA "/no/such/file.npy: "));
    CHECK(qkv_npy_read(tmpdir, &a) == QKV_ERR_IO);
    CHECK(test_starts_with(qkv_error_detail(), tmpdir));
    CHECK(qkv_npy_read(NULL, &a) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_npy_read(tmpdir, NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_npy_parse(NULL, 10, NULL, &a) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_npy_parse("", 0, NULL, NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_npy_parse(NULL, 0, NULL, &a) == QKV_ERR_FORMAT);

    a = make_array(QKV_DTYPE_F32, f, 1, s2);
    tmp_path(path, sizeof path, "w.npy");
    CHECK(qkv_npy_write(NULL, &a) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_npy_write(path, NULL) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_npy_write(QKV_TEST_DATA "/no/such/dir/w.npy", &a) == QKV_ERR_IO);
    CHECK(test_starts_with(qkv_error_detail(), QKV_TEST_DATA "/no/such/dir/w.npy: "));
    CHECK(qkv_npy_write(tmpdir, &a) == QKV_ERR_IO);
    b = a;
    b.dtype = QKV_DTYPE_BF16;
    CHECK(qkv_npy_write(path, &b) == QKV_ERR_DTYPE);
    CHECK(strstr(qkv_error_detail(), "bfloat16") != NULL);
    CHECK(stat(path, &sb) != 0); /* refused before creating the file */
    b.dtype = (qkv_dtype)42;
    CHECK(qkv_npy_write(path, &b) == QKV_ERR_DTYPE);
    b = a;
    b.ndim = QKV_ARRAY_MAX_DIMS + 1;
    CHECK(qkv_npy_write(path, &b) == QKV_ERR_INVALID_ARGUMENT);
    b.ndim = 1;
    b.shape[0] = -2;
    CHECK(qkv_npy_write(path, &b) == QKV_ERR_INVALID_ARGUMENT);
    b.ndim = 2;
    b.shape[0] = b.shape[1] = (int64_t)1 << 32;
    CHECK(qkv_npy_write(path, &b) == QKV_ERR_OVERFLOW);
    b = a;
    b.data = NULL;
    CHECK(qkv_npy_write(path, &b) == QKV_ERR_NULL_ARGUMENT);
    CHECK(qkv_npy_write(path, &a) == QKV_OK);
    CHECK(qkv_error_detail()[0] == '\0');
    /* /dev/full takes the open but fails the write. */
    if (stat("/dev/full", &sb) == 0) {
        CHECK(qkv_npy_write("/dev/full", &a) == QKV_ERR_IO);
        CHECK(test_starts_with(qkv_error_detail(), "/dev/full: "));
    }
    /* A file whose data is cut short, through the file reader. */
    {
        size_t len;
        unsigned char *p = test_read_file(path, &len);
        CHECK(p && test_write_file(path, p, len - 3));
        CHECK(qkv_npy_read(path, &b) == QKV_ERR_FORMAT);
        CHECK(strstr(qkv_error_detail(),
                     "truncated: header says 8 bytes of data, file has 5") != NULL);
        free(p);
    }
    remove(path);
}

/* ------------------------------------------------------------ streams */

/* A FIFO's reader cannot know the size in advance: the header bounds the
 * read, and one byte more than it promises is an error, found without
 * reading on to an end that /dev/zero never reaches. */

static char fifo[160];

static int read_fifo(const void *arg)
{
    const stream_case *c = arg;
    int before = test_failures;
    qkv_array a;
    pid_t pid = stream_feed(fifo, c->img, c->len, c->zeros);
    qkv_status s = qkv_npy_read(fifo, &a);
    stream_reap(pid);
    if (s != c->want || (c->detail && !strstr(qkv_error_detail(), c->detail)))
        fprintf(stderr, "read_fifo: got %s '%s', want %s '%s'\n", qkv_status_string(s),
                qkv_error_detail(), qkv_status_string(c->want), c->detail ? c->detail : "");
    CHECK(s == c->want);
    CHECK(!c->detail || strstr(qkv_error_detail(), c->detail));
    if (s == QKV_OK) {
        /* The data bytes as fed: make_npy's pattern. */
        const unsigned char *d = a.data;
        CHECK(a.dtype == QKV_DTYPE_F32 && a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 3);
        for (int i = 0; i < 24; i++) CHECK(d[i] == (unsigned char)(i * 7 + 1));
    } else {
        CHECK(test_array_zeroed(&a));
        CHECK(test_starts_with(qkv_error_detail(), fifo));
    }
    qkv_array_free(&a);
    return test_failures - before;
}

/* `qkv run -q FIFO`, the FIFO fed a good Q and then zeros: one line that
 * names -q and the trailing bytes, exit 1, no output. */
static int run_fifo(const void *arg)
{
    const stream_case *c = arg;
    int before = test_failures;
    char k[160], out[160], err[1024];
    tmp_path(k, sizeof k, "k.npy");
    tmp_path(out, sizeof out, "o.npy");
    pid_t pid = stream_feed(fifo, c->img, c->len, c->zeros);
    char *argv[] = {"qkv", "run", "-q", fifo, "-k", k, "-v", k, "-o", out, NULL};
    int rc = test_run_qkv(argv, NULL, 0, err, sizeof err);
    stream_reap(pid);
    if (rc != 1 || !strstr(err, "trailing bytes")) fprintf(stderr, "run_fifo: exit %d: %s", rc, err);
    CHECK(rc == 1);
    CHECK(test_starts_with(err, "qkv run: -q ") && strstr(err, fifo));
    CHECK(strstr(err, "trailing bytes") != NULL);
    CHECK(strchr(err, '\n') == err + strlen(err) - 1);
    struct stat sb;
    CHECK(stat(out, &sb) != 0);
    return test_failures - before;
}

static void test_streams(void)
{
    unsigned char img[256];
    size_t n = make_npy(img, sizeof img - 1, 1,
                        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24);
    img[n] = 0; /* one byte past the data */
    static const unsigned char huge[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0, 0, 0, 0x80};
    tmp_path(fifo, sizeof fifo, "in.fifo");
    CHECK(n > 0 && mkfifo(fifo, 0600) == 0);
    const stream_case cases[] = {
        {img, n, 0, QKV_OK, NULL},
        {img, n, 1, QKV_ERR_FORMAT, "trailing bytes after the 24 bytes of data"},
        {img, n + 1, 0, QKV_ERR_FORMAT, "trailing bytes after the 24 bytes of data"},
        {img, n - 1, 0, QKV_ERR_FORMAT, "truncated: header says 24 bytes of data, file has 23"},
        {img, 40, 0, QKV_ERR_FORMAT, "runs past the end of the file (40 bytes)"},
        /* A 2.0 preamble that promises a 2 GiB header, then endless zeros:
         * refused before a byte of it is read or allocated. */
        {huge, sizeof huge, 1, QKV_ERR_FORMAT,
         "header length 2147483648 is more than the 1048576 bytes a header may have"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int bad = stream_bounded(read_fifo, &cases[i]);
        if (bad) fprintf(stderr, "test_streams: FIFO case %zu failed\n", i);
        CHECK(bad == 0);
    }

    /* A well-formed header padded past 1 MiB: refused in a buffer as from
     * a stream, with the same words. */
    {
        const size_t hl = ((size_t)1 << 20) + 52; /* 12 + hl is a multiple of 64 */
        unsigned char *big = calloc(12 + hl + 24, 1);
        CHECK(big != NULL);
        if (big) {
            static const char dict[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
            memcpy(big, "\x93NUMPY\x02\x00", 8);
            big[8] = (unsigned char)(hl & 0xff);
            big[9] = (unsigned char)(hl >> 8 & 0xff);
            big[10] = (unsigned char)(hl >> 16 & 0xff);
            big[11] = 0;
            memset(big + 12, ' ', hl);
            memcpy(big + 12, dict, sizeof dict - 1);
            big[12 + hl - 1] = '\n';
            qkv_array a;
            CHECK(qkv_npy_parse(big, 12 + hl + 24, "big", &a) == QKV_ERR_FORMAT);
            CHECK(strstr(qkv_error_detail(), "is more than the 1048576 bytes") != NULL);
            free(big);
        }
    }

    /* /dev/zero has no magic; its endless bytes must not be read on. */
    {
        qkv_array a;
        CHECK(qkv_npy_read("/dev/zero", &a) == QKV_ERR_FORMAT);
        CHECK(strstr(qkv_error_detail(), "not a .npy file") != NULL);
    }

    /* Through the CLI, with K and V a good (1, 2, 3) file. */
    {
        float kv[6] = {1, 2, 3, 4, 5, 6};
        int64_t s3[3] = {1, 2, 3};
        qkv_array k = make_array(QKV_DTYPE_F32, kv, 3, s3);
        char kp[160];
        tmp_path(kp, sizeof kp, "k.npy");
        CHECK(qkv_npy_write(kp, &k) == QKV_OK);
        n = make_npy(img, sizeof img, 1,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }", 24);
        const stream_case c = {img, n, 1, QKV_ERR_FORMAT, NULL};
        CHECK(stream_bounded(run_fifo, &c) == 0);
        remove(kp);
    }
    remove(fifo);
}

int main(void)
{
    tmpdir = test_tmpdir();
    test_f16_known_values();
    test_f16_exhaustive();
    test_bf16();
    test_numel_free();
    test_convert();
    test_round_trips();
    test_layout();
    test_oracle_files();
    test_header_variants();
    test_malformed();
    test_read_write_errors();
    test_streams();
    test_rmdir(tmpdir);
    return test_finish("test_npy");
}
