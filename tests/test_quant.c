/* The q8_0 and q4_0 blocks (src/quant.h) against hand-computed blocks:
 * their layout (the scale's binary16 first, the bytes and nibbles in
 * llama.cpp's order), q8_0's rounding of halves away from zero and q4_0's
 * truncation of x / d + 8.5 with its clamp at 15, the sign of q4_0's
 * scale; then random blocks read back within each format's bound (half a
 * step, a whole step for q4_0's clamped value, plus the scale's binary16
 * rounding), every value exactly an integer times the stored scale; a
 * block of zeros; and what the formats cannot hold (NaN, infinities,
 * scales past binary16, scales too small to invert) counted and read
 * back as NaN or zeros, never undefined behaviour (UBSan runs this). */
#include "half.h"
#include "quant.h"
#include "test.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint16_t scale_bits(const unsigned char *b) { return (uint16_t)(b[0] | b[1] << 8); }

static void check_q8_0_by_hand(void)
{
    float x[32];
    unsigned char b[QKV_Q8_0_BYTES];
    /* -16 .. 15: d = 16 / 127, q = round(x * 127 / 16) */
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    CHECK(qkv_q8_0_quantize(b, x, 1) == 0);
    CHECK(scale_bits(b) == qkv_f32_to_f16(16.0f / 127.0f));
    CHECK((int8_t)b[2] == -127);          /* -16 */
    CHECK((int8_t)b[2 + 16] == 0);        /* 0 */
    CHECK((int8_t)b[2 + 17] == 8);        /* 7.9375 */
    CHECK((int8_t)b[2 + 31] == 119);      /* 15 * 7.9375 = 119.06 */
    CHECK((int8_t)b[2 + 1] == -119);      /* -15 * 7.9375 */
    /* d = 1: halves go away from zero */
    const float h[8] = {127, 2.5f, -2.5f, 0.5f, -0.5f, 1.5f, -126.5f, 0.49f};
    const int want[8] = {127, 3, -3, 1, -1, 2, -127, 0};
    for (int j = 0; j < 32; j++) x[j] = j < 8 ? h[j] : 0.0f;
    CHECK(qkv_q8_0_quantize(b, x, 1) == 0);
    CHECK(scale_bits(b) == 0x3c00); /* 1.0 */
    for (int j = 0; j < 8; j++) CHECK((int8_t)b[2 + j] == want[j]);
    float back[32];
    qkv_q8_0_dequantize(back, b, 1);
    for (int j = 0; j < 8; j++) CHECK(back[j] == (float)want[j]);
}

static void check_q4_0_by_hand(void)
{
    float x[32];
    unsigned char b[QKV_Q4_0_BYTES];
    /* the largest magnitude -8: d = 1; n = trunc(x + 8.5), at most 15 */
    const float v[10] = {-8, 7, 7.6f, 0.5f, -0.5f, 1.49f, -7.5f, 3, -3, 0};
    const int n[10] = {0, 15, 15, 9, 8, 9, 1, 11, 5, 8};
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    for (int j = 0; j < 10; j++) x[j < 5 ? j : j + 11] = v[j]; /* values 0..4 and 16..20 */
    CHECK(qkv_q4_0_quantize(b, x, 1) == 0);
    CHECK(scale_bits(b) == 0x3c00);
    for (int j = 0; j < 5; j++) {
        CHECK((b[2 + j] & 0x0f) == n[j]);     /* value j: the low nibble */
        CHECK((b[2 + j] >> 4) == n[j + 5]);   /* value j + 16: the high one */
    }
    CHECK(b[2 + 10] == 0x88); /* zeros: n = 8 in both nibbles */
    float back[32];
    qkv_q4_0_dequantize(back, b, 1);
    CHECK(back[0] == -8.0f && back[1] == 7.0f && back[2] == 7.0f && back[3] == 1.0f &&
          back[4] == 0.0f && back[16] == 1.0f && back[17] == -7.0f && back[18] == 3.0f &&
          back[19] == -3.0f && back[20] == 0.0f);
    /* the largest magnitude positive: d is negative, and the value itself
     * comes back exactly (n = 0, (0 - 8) d) */
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    x[5] = 8.0f;
    x[6] = -4.0f;
    CHECK(qkv_q4_0_quantize(b, x, 1) == 0);
    CHECK(scale_bits(b) == 0xbc00); /* -1.0 */
    qkv_q4_0_dequantize(back, b, 1);
    CHECK(back[5] == 8.0f && back[6] == -4.0f && back[0] == 0.0f);
}

/* Random blocks of every scale: each value back within the format's step,
 * and exactly an integer times the stored scale. */
static void check_random(void)
{
    test_rng r = test_rng_seed(32);
    enum { BLOCKS = 2000 };
    float *x = test_malloc(BLOCKS * 32 * sizeof *x), *back = test_malloc(BLOCKS * 32 * sizeof *back);
    /* at odd addresses: blocks are read and written with any alignment */
    unsigned char *b = test_malloc(BLOCKS * QKV_Q8_0_BYTES + 1);
    for (int i = 0; i < BLOCKS; i++) {
        /* scales from where d becomes a binary16 subnormal to the top of
         * q4_0's range (its d = max / 8 must stay below 65504) */
        const float s = powf(2.0f, (float)(test_rand(&r) * 30 - 12));
        for (int j = 0; j < 32; j++) x[i * 32 + j] = s * (float)(2 * test_rand(&r) - 1);
    }
    for (int fmt = 0; fmt < 2; fmt++) {
        const int bytes = fmt ? QKV_Q4_0_BYTES : QKV_Q8_0_BYTES;
        CHECK((fmt ? qkv_q4_0_quantize : qkv_q8_0_quantize)(b + 1, x, BLOCKS) == 0);
        (fmt ? qkv_q4_0_dequantize : qkv_q8_0_dequantize)(back, b + 1, BLOCKS);
        int64_t bad = 0;
        for (int i = 0; i < BLOCKS; i++) {
            const float *xi = x + i * 32, *bi = back + i * 32;
            double amax = 0, m = 0;
            for (int j = 0; j < 32; j++)
                if (fabs(xi[j]) > amax) amax = fabs(xi[j]), m = xi[j];
            const double d = fmt ? m / -8.0 : amax / 127.0;
            const double d16 = qkv_f16_to_f32(scale_bits(b + 1 + i * bytes));
            const double steps = fmt ? 8 : 127;
            /* half a step (q4_0: a whole one, for the value clamped at 15)
             * plus the scale's rounding over at most `steps` steps */
            const double bound = (fmt ? 1.0 : 0.5) * fabs(d16) + steps * fabs(d - d16) + 1e-30;
            for (int j = 0; j < 32; j++) {
                const double q = d16 != 0 ? bi[j] / d16 : 0;
                bad += fabs(bi[j] - xi[j]) > bound || q != nearbyint(q) || fabs(q) > (fmt ? 8 : 127) ||
                       (d16 == 0 && bi[j] != 0);
            }
        }
        CHECK(bad == 0);
        if (bad) fprintf(stderr, "  %s: %lld values off\n", fmt ? "q4_0" : "q8_0", (long long)bad);
    }
    free(x), free(back), free(b);
}

/* Zeros, NaN, infinities, overflowing and vanishing scales. */
static void check_edges(void)
{
    float x[64], back[64];
    unsigned char b[2 * QKV_Q8_0_BYTES];
    for (int fmt = 0; fmt < 2; fmt++) {
        int64_t (*quant)(unsigned char *, const float *, int64_t) =
            fmt ? qkv_q4_0_quantize : qkv_q8_0_quantize;
        void (*dequant)(float *, const unsigned char *, int64_t) =
            fmt ? qkv_q4_0_dequantize : qkv_q8_0_dequantize;
        const char *name = fmt ? "q4_0" : "q8_0";
        const float fits = fmt ? 5e5f : 8e6f, past = fmt ? 6e5f : 1e7f;
        memset(x, 0, sizeof x);
        CHECK(quant(b, x, 2) == 0);
        dequant(back, b, 2);
        CHECK((scale_bits(b) & 0x7fff) == 0 && back[0] == 0.0f && back[63] == 0.0f); /* d = +-0 */
        /* one bad value spoils its own block only */
        const float spoil[4] = {NAN, INFINITY, -INFINITY, past};
        for (int s = 0; s < 4; s++) {
            for (int j = 0; j < 64; j++) x[j] = (float)(j % 7) - 3.0f;
            x[40] = spoil[s];
            CHECK(quant(b, x, 2) == 1);
            dequant(back, b, 2);
            int nan2 = 1, ok1 = 1;
            for (int j = 32; j < 64; j++) nan2 &= isnan(back[j]) != 0;
            for (int j = 0; j < 32; j++) ok1 &= fabsf(back[j] - x[j]) <= 0.5f;
            CHECK(nan2 && ok1);
            if (!nan2 || !ok1) fprintf(stderr, "  %s: spoiling value %d\n", name, s);
        }
        x[40] = fits;
        CHECK(quant(b, x, 2) == 0);
        dequant(back, b, 2);
        CHECK(fabsf(back[40] - fits) <= fits * 0x1p-10f);
        /* scales below f32's normal range: no overflowing 1 / d, zeros back */
        for (int j = 0; j < 64; j++) x[j] = j == 3 ? 1e-39f : j == 50 ? -4e-45f : 0.0f;
        CHECK(quant(b, x, 2) == 0);
        dequant(back, b, 2);
        CHECK(fabsf(back[3]) <= 1e-39f && back[50] == 0.0f && !isnan(back[3]));
    }
}

int main(void)
{
    CHECK(QKV_Q8_0_BYTES == 2 + 32 && QKV_Q4_0_BYTES == 2 + 16);
    check_q8_0_by_hand();
    check_q4_0_by_hand();
    check_random();
    check_edges();
    return test_finish("test_quant");
}
