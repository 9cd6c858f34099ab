/* The q8_0 and q4_0 blocks (src/quant.h) against hand-computed blocks:
 * their layout (the scale's binary16 first, the bytes and nibbles in
 * llama.cpp's order), q8_0's rounding of halves away from zero and q4_0's
 * truncation of x / d + 8.5 with its clamp at 15, the sign of q4_0's
 * scale; then random blocks read back within each format's bound (half a
 * step, a whole step for q4_0's clamped value, plus the scale's binary16
 * rounding), every value exactly an integer times the stored scale; a
 * block of zeros; and what the formats cannot hold (NaN, infinities,
 * scales past binary16, scales too small to invert) read back as NaN or
 * zeros, the too large finite values counted, never undefined behaviour
 * (UBSan runs this).
 * Then attention with K and V in the block formats (each on its own, Q in
 * f32 and bf16): the CPU backend's forward is bit for bit its forward on
 * the dequantized K and V in f32 (it dequantizes exactly as it packs),
 * the reference's within 1e-6 relative L2 of it (measured 9e-8 to
 * 2.8e-7), and against the unquantized f32 keys and values the output
 * moves by what the format costs on unit-scale random keys and values:
 * q8_0 within issue 15's 1e-2 (measured 4.1e-3), q4_0 within 8e-2
 * (measured 7.0e-2; 6.6e-2 with K in q8_0); and the views the formats
 * refuse. */
#include "half.h"
#include "qkv.h"
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
            CHECK(quant(b, x, 2) == (s == 3)); /* counted: the finite value too large */
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

/* n values of x quantized to dt and dequantized back into *wide. */
static unsigned char *quantized(const float *x, int64_t n, qkv_dtype dt, float **wide)
{
    const int64_t blocks = n / 32, bytes = dt == QKV_DTYPE_Q8_0 ? QKV_Q8_0_BYTES : QKV_Q4_0_BYTES;
    unsigned char *q = test_malloc((size_t)(blocks * bytes));
    *wide = test_malloc((size_t)n * sizeof **wide);
    CHECK((dt == QKV_DTYPE_Q8_0 ? qkv_q8_0_quantize : qkv_q4_0_quantize)(q, x, blocks) == 0);
    (dt == QKV_DTYPE_Q8_0 ? qkv_q8_0_dequantize : qkv_q4_0_dequantize)(*wide, q, blocks);
    return q;
}

static void check_attention(void)
{
    enum { B = 2, H = 4, HKV = 2, LQ = 37, LK = 150, E = 64, EV = 96 };
    test_rng r = test_rng_seed(808);
    float *q = test_rand_f32(&r, B * H * LQ * E, -1, 1);
    float *k = test_rand_f32(&r, B * HKV * LK * E, -1, 1);
    float *v = test_rand_f32(&r, B * HKV * LK * EV, -1, 1);
    const qkv_tensor tq = qkv_tensor_contiguous(q, QKV_DTYPE_F32, B, H, LQ, E);
    const int64_t no = B * H * LQ * EV;
    float *exact = test_malloc(no * sizeof *exact), *got = test_malloc(no * sizeof *got);
    float *want = test_malloc(no * sizeof *want), *ref = test_malloc(no * sizeof *ref);
    qkv_tensor to = qkv_tensor_contiguous(got, QKV_DTYPE_F32, B, H, LQ, EV);
    qkv_tensor tw = qkv_tensor_contiguous(want, QKV_DTYPE_F32, B, H, LQ, EV);
    qkv_tensor tr = qkv_tensor_contiguous(ref, QKV_DTYPE_F32, B, H, LQ, EV);
    qkv_tensor te = qkv_tensor_contiguous(exact, QKV_DTYPE_F32, B, H, LQ, EV);
    const qkv_tensor tk32 = qkv_tensor_contiguous(k, QKV_DTYPE_F32, B, HKV, LK, E);
    const qkv_tensor tv32 = qkv_tensor_contiguous(v, QKV_DTYPE_F32, B, HKV, LK, EV);
    qkv_context *refc = test_context(QKV_IMPL_REFERENCE, QKV_ISA_AUTO, 2);
    qkv_attention_options causal = {0};
    causal.causal = 1;
    CHECK(qkv_attention_forward(refc, &te, NULL, NULL, &tq, &tk32, &tv32, NULL) == QKV_OK);
    const qkv_dtype fmts[3] = {QKV_DTYPE_F32, QKV_DTYPE_Q8_0, QKV_DTYPE_Q4_0};
    /* K's and V's format pairs: q8_0 both, q4_0 both, K q8_0 and V q4_0 */
    const int pairs[3][2] = {{1, 1}, {2, 2}, {1, 2}};
    const double cost[3] = {1e-2, 8e-2, 8e-2}; /* against the unquantized K and V */
    for (int c = 0; c < 3; c++) {
        const qkv_dtype kf = fmts[pairs[c][0]], vf = fmts[pairs[c][1]];
        float *kw, *vw;
        unsigned char *kq = quantized(k, B * HKV * LK * E, kf, &kw);
        unsigned char *vq = quantized(v, B * HKV * LK * EV, vf, &vw);
        const qkv_tensor tk = qkv_tensor_contiguous(kq, kf, B, HKV, LK, E);
        const qkv_tensor tv = qkv_tensor_contiguous(vq, vf, B, HKV, LK, EV);
        const qkv_tensor tkw = qkv_tensor_contiguous(kw, QKV_DTYPE_F32, B, HKV, LK, E);
        const qkv_tensor tvw = qkv_tensor_contiguous(vw, QKV_DTYPE_F32, B, HKV, LK, EV);
        for (int o = 0; o < 2; o++) {
            const qkv_attention_options *opt = o ? &causal : NULL;
            CHECK(qkv_attention_forward(NULL, &to, NULL, NULL, &tq, &tk, &tv, opt) == QKV_OK);
            CHECK(qkv_attention_forward(NULL, &tw, NULL, NULL, &tq, &tkw, &tvw, opt) == QKV_OK);
            CHECK(memcmp(got, want, no * sizeof *got) == 0);
            CHECK(qkv_attention_forward(refc, &tr, NULL, NULL, &tq, &tk, &tv, opt) == QKV_OK);
            CHECK_TENSOR(got, ref, no, 1e-6, "K %s V %s%s: the fast path against the reference",
                         qkv_dtype_name(kf), qkv_dtype_name(vf), o ? ", causal" : "");
        }
        CHECK(qkv_attention_forward(NULL, &to, NULL, NULL, &tq, &tk, &tv, NULL) == QKV_OK);
        CHECK_TENSOR(got, exact, no, cost[c], "K %s V %s: against the unquantized keys and values",
                     qkv_dtype_name(kf), qkv_dtype_name(vf));
        /* A bf16 Q beside them, and a decode-shaped call (the row-major walk). */
        uint16_t *qh = test_malloc(B * H * LQ * E * sizeof *qh);
        for (int64_t x = 0; x < B * H * LQ * E; x++) qh[x] = qkv_f32_to_bf16(q[x]);
        qkv_tensor tqh = qkv_tensor_contiguous(qh, QKV_DTYPE_BF16, B, H, LQ, E);
        CHECK(qkv_attention_forward(NULL, &to, NULL, NULL, &tqh, &tk, &tv, NULL) == QKV_OK);
        CHECK(qkv_attention_forward(refc, &tr, NULL, NULL, &tqh, &tk, &tv, NULL) == QKV_OK);
        CHECK_TENSOR(got, ref, no, 1e-6, "bf16 Q, K %s V %s", qkv_dtype_name(kf), qkv_dtype_name(vf));
        tqh.shape[2] = 1;
        to.shape[2] = tr.shape[2] = 1;
        to.stride[1] = tr.stride[1] = EV; /* (B, H, 1, Ev) in the first B*H rows */
        to.stride[0] = tr.stride[0] = H * EV;
        CHECK(qkv_attention_forward(NULL, &to, NULL, NULL, &tqh, &tk, &tv, NULL) == QKV_OK);
        CHECK(qkv_attention_forward(refc, &tr, NULL, NULL, &tqh, &tk, &tv, NULL) == QKV_OK);
        CHECK_TENSOR(got, ref, B * H * EV, 1e-6, "decode, K %s V %s", qkv_dtype_name(kf),
                     qkv_dtype_name(vf));
        to = qkv_tensor_contiguous(got, QKV_DTYPE_F32, B, H, LQ, EV);
        tr = qkv_tensor_contiguous(ref, QKV_DTYPE_F32, B, H, LQ, EV);
        free(qh), free(kq), free(vq), free(kw), free(vw);
    }
    /* What the formats refuse. */
    unsigned char blk[4 * QKV_Q8_0_BYTES] = {0};
    float f[256] = {0};
    qkv_tensor qv = qkv_tensor_contiguous(f, QKV_DTYPE_F32, 1, 1, 2, 32);
    qkv_tensor o2 = qkv_tensor_contiguous(f + 64, QKV_DTYPE_F32, 1, 1, 2, 32);
    qkv_tensor kb = qkv_tensor_contiguous(blk, QKV_DTYPE_Q8_0, 1, 1, 2, 32);
    qkv_tensor vb = qkv_tensor_contiguous(blk + 2 * QKV_Q8_0_BYTES, QKV_DTYPE_Q4_0, 1, 1, 2, 32);
    CHECK(qkv_attention_forward(NULL, &o2, NULL, NULL, &qv, &kb, &vb, NULL) == QKV_OK);
    qkv_tensor bad = kb;
    bad.shape[3] = 16;
    bad.stride[2] = 16;
    qkv_tensor q16 = qkv_tensor_contiguous(f, QKV_DTYPE_F32, 1, 1, 2, 16);
    CHECK(qkv_attention_forward(NULL, &o2, NULL, NULL, &q16, &bad, &vb, NULL) == QKV_ERR_SHAPE);
    CHECK(test_starts_with(qkv_error_detail(), "K: last dim 16 is not a multiple of q8_0's blocks of 32"));
    bad = kb;
    bad.stride[2] = 40;
    CHECK(qkv_attention_forward(NULL, &o2, NULL, NULL, &qv, &bad, &vb, NULL) ==
          QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "K: stride 2 is 40, expected a non-negative multiple of 32"));
    bad = vb;
    bad.stride[3] = 2;
    CHECK(qkv_attention_forward(NULL, &o2, NULL, NULL, &qv, &kb, &bad, NULL) ==
          QKV_ERR_INVALID_ARGUMENT);
    CHECK(test_starts_with(qkv_error_detail(), "V: stride 3 is 2"));
    qkv_tensor qq = qkv_tensor_contiguous(blk, QKV_DTYPE_Q8_0, 1, 1, 2, 32);
    CHECK(qkv_attention_forward(NULL, &o2, NULL, NULL, &qq, &kb, &vb, NULL) == QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "Q: dtype q8_0, expected f32, f16 or bf16"));
    uint16_t h[64] = {0};
    qkv_tensor kh = qkv_tensor_contiguous(h, QKV_DTYPE_BF16, 1, 1, 2, 32);
    CHECK(qkv_attention_forward(NULL, &o2, NULL, NULL, &qv, &kh, &vb, NULL) == QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "K: dtype bf16, expected f32 as Q has (or q8_0 or q4_0)"));
    qkv_tensor d1 = qkv_tensor_contiguous(f + 128, QKV_DTYPE_F32, 1, 1, 2, 32);
    qkv_tensor d2 = qkv_tensor_contiguous(f + 192, QKV_DTYPE_F32, 1, 1, 2, 32);
    qkv_tensor d3 = qkv_tensor_contiguous(f + 160, QKV_DTYPE_F32, 1, 1, 2, 32);
    float lse[2] = {0};
    qkv_tensor tl = qkv_tensor_contiguous(lse, QKV_DTYPE_F32, 1, 1, 2, 1);
    CHECK(qkv_attention_backward(NULL, &d1, &d2, &d3, NULL, &o2, &qv, &kb, &vb, &o2, &tl, NULL) ==
          QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "K: dtype q8_0; the backward takes f32, f16 or bf16"));
    CHECK(qkv_dtype_size(QKV_DTYPE_Q8_0) == 0 && qkv_dtype_size(QKV_DTYPE_Q4_0) == 0);
    CHECK(strcmp(qkv_dtype_name(QKV_DTYPE_Q4_0), "q4_0") == 0);
    qkv_context_free(refc);
    free(q), free(k), free(v), free(exact), free(got), free(want), free(ref);
}

/* The public qkv_quantize / qkv_dequantize: the blocks above, and their
 * argument errors, dst untouched by a refused call. */
static void check_public(void)
{
    float x[64], back[64];
    for (int j = 0; j < 64; j++) x[j] = 0.1f * (float)(j - 30);
    unsigned char want[2 * QKV_Q8_0_BYTES], got[2 * QKV_Q8_0_BYTES];
    for (int fmt = 0; fmt < 2; fmt++) {
        const qkv_dtype dt = fmt ? QKV_DTYPE_Q4_0 : QKV_DTYPE_Q8_0;
        const size_t bytes = 2 * (size_t)(fmt ? QKV_Q4_0_BYTES : QKV_Q8_0_BYTES);
        (fmt ? qkv_q4_0_quantize : qkv_q8_0_quantize)(want, x, 2);
        CHECK(qkv_quantize(got, dt, x, 64) == QKV_OK && memcmp(got, want, bytes) == 0);
        CHECK(qkv_dequantize(back, dt, got, 64) == QKV_OK);
        float ref[64];
        (fmt ? qkv_q4_0_dequantize : qkv_q8_0_dequantize)(ref, want, 2);
        CHECK(memcmp(back, ref, sizeof ref) == 0);
        x[40] = 1e9f; /* too large: refused, got untouched */
        CHECK(qkv_quantize(got, dt, x, 64) == QKV_ERR_INVALID_ARGUMENT);
        CHECK(test_starts_with(qkv_error_detail(), "src: block 1 holds values too large for"));
        CHECK(memcmp(got, want, bytes) == 0);
        x[40] = 0.1f * 10;
        CHECK(qkv_quantize(got, dt, x, 33) == QKV_ERR_INVALID_ARGUMENT);
        CHECK(test_starts_with(qkv_error_detail(), "n: 33 is not a non-negative multiple of 32"));
        CHECK(qkv_quantize(NULL, dt, x, 32) == QKV_ERR_NULL_ARGUMENT);
        CHECK(qkv_dequantize(back, dt, NULL, 32) == QKV_ERR_NULL_ARGUMENT);
        CHECK(qkv_quantize(NULL, dt, NULL, 0) == QKV_OK);
    }
    CHECK(qkv_quantize(got, QKV_DTYPE_BF16, x, 32) == QKV_ERR_DTYPE);
    CHECK(test_starts_with(qkv_error_detail(), "fmt: bf16 is not a block format"));
    CHECK(qkv_dequantize(back, (qkv_dtype)99, got, 32) == QKV_ERR_DTYPE);
}

int main(void)
{
    CHECK(QKV_Q8_0_BYTES == 2 + 32 && QKV_Q4_0_BYTES == 2 + 16);
    check_q8_0_by_hand();
    check_q4_0_by_hand();
    check_random();
    check_edges();
    check_attention();
    check_public();
    return test_finish("test_quant");
}
