/* The cases `qkv bench` times, each kind set up, timed against its
 * ceiling and reported as one line of text or one JSON object: attention
 * (its median against an SGEMM of the BLAS or, for decode, the copy),
 * qkv_sgemm against the BLAS's same product, and the multi-head attention
 * layer (a decode step against the copy, a forward against an SGEMM of the
 * projections' size). The SGEMM and layer cases count both sides' fastest
 * runs, called in turn (bench_time_pair). */
#include "bench.h"
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The copy ceiling as the JSON names it. */
static const char copy_ceiling_name[] = "memcpy 256 MiB, read+write";

int bench_threads(const bench_opts *bo)
{
    return bo->threads ? bo->threads : qkv_default_num_threads();
}

qkv_isa bench_isa(const bench_opts *bo) { return bo->isa ? bo->isa : qkv_isa_auto(); }

static float *random_floats(int64_t n, uint64_t seed)
{
    float *x = qkv_alloc((size_t)n * sizeof *x);
    if (!x) return NULL;
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        x[i] = (float)((s * 0x2545F4914F6CDD1Dull) >> 40) / 8388608.0f - 1.0f;
    }
    return x;
}

/* ------------------------------------------------------------ reports */

/* The FMA peak's fields of a JSON object, when there is a peak. */
static void json_fma_peak(double gflops, double peak)
{
    if (peak > 0) printf("\"fma_peak_gflops\": %.4g, \"of_fma_peak\": %.4f, ", peak, gflops / peak);
}

/* The last field of a JSON object: the ratio, null without a ceiling. */
static void json_ratio(double ratio)
{
    if (isnan(ratio))
        printf("\"ratio\": null}\n");
    else
        printf("\"ratio\": %.4f}\n", ratio);
}

/* The end of a compute-bound case's JSON object, after its own fields:
 * the FMA peak, the SGEMM ceiling and the ratio. */
static void json_gflops_tail(double gflops, double peak, double ceiling, int have_blas,
                             double ratio)
{
    json_fma_peak(gflops, peak);
    printf("\"ceiling_gflops\": %.4g, \"ceiling\": \"%s\", ", ceiling,
           have_blas ? "sgemm" : "none");
    json_ratio(ratio);
}

/* A compute-bound case's line of text (the ratio is a number exactly when
 * there is a ceiling). */
static void text_gflops_line(const char *name, double t, double gflops, double peak, double ceiling,
                             double ratio)
{
    printf("%-24s %9.4f s %8.1f GFLOP/s", name, t, gflops);
    if (ceiling > 0)
        printf("   sgemm %6.1f GFLOP/s   ratio %.3f", ceiling, ratio);
    else
        printf("   (no BLAS: no ceiling)");
    if (peak > 0) printf("   %.2f of FMA peak", gflops / peak);
    printf("\n");
}

/* n floats at x as a 1-d array converted to dt (rounded: a --dtype case's
 * copy of its twin's values); 0 when out of memory. */
static int narrowed(const float *x, int64_t n, qkv_dtype dt, qkv_array *out)
{
    qkv_array src = {(void *)x, QKV_DTYPE_F32, 1, {n}};
    return qkv_array_convert(out, &src, dt) == QKV_OK;
}

/* What a --dtype / --kv case is called beside its f32 twin: "bf16",
 * "q8_0 K V", "bf16, q8_0 K V". */
static const char *variant(const bench_opts *bo)
{
    static _Thread_local char name[32];
    if (bo->kv == QKV_DTYPE_F32) return qkv_dtype_name(bo->dtype);
    snprintf(name, sizeof name, "%s%s%s K V", bo->dtype != QKV_DTYPE_F32 ? qkv_dtype_name(bo->dtype) : "",
             bo->dtype != QKV_DTYPE_F32 ? ", " : "", qkv_dtype_name(bo->kv));
    return name;
}

/* The text line under a --dtype case: its f32 twin's time and rate, and
 * the case's rate over the twin's. */
static void twin_line(const bench_opts *bo, double t, double t32, double rate32, const char *unit)
{
    printf("%-24s %9.4f s %8.1f %s   %s / f32 %.3f\n", "  its f32 twin", t32, rate32, unit,
           variant(bo), t32 / t);
}

/* A case run in a 16-bit --dtype beside its f32 twin (the SGEMM and layer
 * cases): t and t32 seconds for `work` units of what `unit` names
 * ("GFLOP/s": work in FLOPs; "tokens/s": work 1), and their ratio. */
static void twin_report(const char *name, const char *kind, const bench_opts *bo, double t,
                        double t32, double work, const char *unit)
{
    const double scale = strcmp(unit, "GFLOP/s") == 0 ? 1e9 : 1.0;
    const double rate = work / t / scale, rate32 = work / t32 / scale;
    if (bo->json) {
        printf("{\"name\": \"%s\", \"kind\": \"%s\", \"threads\": %d, \"impl\": \"%s\", "
               "\"dtype\": \"%s\", \"kv\": \"%s\", \"seconds\": %.6g, \"f32_seconds\": %.6g, "
               "\"%s\": %.4g, \"f32_%s\": %.4g, \"vs_f32\": %.4f}\n",
               name, kind, bench_threads(bo), qkv_isa_name(bench_isa(bo)), qkv_dtype_name(bo->dtype),
               qkv_dtype_name(bo->kv), t, t32, scale > 1 ? "gflops" : "tokens_per_s", rate,
               scale > 1 ? "gflops" : "tokens_per_s", rate32, t32 / t);
    } else {
        char label[80];
        snprintf(label, sizeof label, "%s %s", name, variant(bo));
        printf("%-24s %9.4f s %8.1f %s\n", label, t, rate, unit);
        twin_line(bo, t, t32, rate32, unit);
    }
}

/* ------------------------------------------------------------ attention */

typedef struct attention_ctx {
    float *data[5]; /* Q, K, V, O and, with --backward, lse, dO, dQ, dK, dV in one block */
    qkv_tensor q, k, v, o;
    qkv_tensor lse, dout, dq, dk, dv; /* with --backward */
    int backward;
    qkv_attention_options opt;
    qkv_context *ctx;
    qkv_array half[8]; /* with a 16-bit dtype: the tensors' 16-bit data (lse stays f32) */
    void *blocks[2];   /* with --kv: K's and V's blocks */
} attention_ctx;

/* One timed step: the forward, or the forward (with lse) and the backward. */
static int run_attention(void *vctx)
{
    attention_ctx *a = vctx;
    if (!a->backward)
        return qkv_attention_forward(a->ctx, &a->o, NULL, NULL, &a->q, &a->k, &a->v, &a->opt) ==
               QKV_OK;
    return qkv_attention_forward(a->ctx, &a->o, NULL, &a->lse, &a->q, &a->k, &a->v, &a->opt) ==
               QKV_OK &&
           qkv_attention_backward(a->ctx, &a->dq, &a->dk, &a->dv, NULL, &a->dout, &a->q, &a->k,
                                  &a->v, &a->o, &a->lse, &a->opt) == QKV_OK;
}

/* Random inputs, the options and the context of case c; 0 when out of
 * memory (attention_free frees what was allocated). */
static int attention_setup(const bcase *c, const bench_opts *bo, attention_ctx *a)
{
    const int64_t nq = c->B * c->H * c->Lq * c->E, nk = c->B * c->Hkv * c->Lk * c->E;
    const int64_t nl = c->B * c->H * c->Lq;
    memset(a, 0, sizeof *a);
    float *q = a->data[0] = random_floats(nq, 1), *k = a->data[1] = random_floats(nk, 2);
    float *v = a->data[2] = random_floats(nk, 3),
          *o = a->data[3] = qkv_alloc((size_t)nq * sizeof *o);
    float *grads = a->data[4] = bo->backward ? random_floats(nl + 2 * nq + 2 * nk, 4) : NULL;
    if (!q || !k || !v || !o || (bo->backward && !grads)) return 0;
    if (bo->backward) {
        a->backward = 1;
        a->lse = qkv_tensor_contiguous(grads, QKV_DTYPE_F32, c->B, c->H, c->Lq, 1);
        a->dout = qkv_tensor_contiguous(grads + nl, QKV_DTYPE_F32, c->B, c->H, c->Lq, c->E);
        a->dq = qkv_tensor_contiguous(grads + nl + nq, QKV_DTYPE_F32, c->B, c->H, c->Lq, c->E);
        a->dk =
            qkv_tensor_contiguous(grads + nl + 2 * nq, QKV_DTYPE_F32, c->B, c->Hkv, c->Lk, c->E);
        a->dv = qkv_tensor_contiguous(grads + nl + 2 * nq + nk, QKV_DTYPE_F32, c->B, c->Hkv, c->Lk,
                                      c->E);
    }
    a->q = qkv_tensor_contiguous(q, QKV_DTYPE_F32, c->B, c->H, c->Lq, c->E);
    a->k = qkv_tensor_contiguous(k, QKV_DTYPE_F32, c->B, c->Hkv, c->Lk, c->E);
    a->v = qkv_tensor_contiguous(v, QKV_DTYPE_F32, c->B, c->Hkv, c->Lk, c->E);
    a->o = qkv_tensor_contiguous(o, QKV_DTYPE_F32, c->B, c->H, c->Lq, c->E);
    a->opt.causal = c->causal;
    a->opt.align = QKV_ALIGN_BOTTOM_RIGHT;
    a->ctx = cli_context("bench", bo->threads, bo->reference, bo->isa);
    return a->ctx != NULL;
}

static void attention_free(attention_ctx *a)
{
    qkv_context_free(a->ctx);
    for (int i = 0; i < 5; i++) qkv_free(a->data[i]);
    for (int i = 0; i < 8; i++) qkv_array_free(&a->half[i]);
    for (int i = 0; i < 2; i++) qkv_free(a->blocks[i]);
}

/* K and V quantized to the block format dt (--kv) from their f32 values. */
static int attention_quantize(attention_ctx *a, qkv_dtype dt)
{
    qkv_tensor *t[2] = {&a->k, &a->v};
    for (int i = 0; i < 2; i++) {
        const int64_t n = t[i]->shape[0] * t[i]->shape[1] * t[i]->shape[2] * t[i]->shape[3];
        const int64_t bytes = n / QKV_BLOCK_VALUES *
                              (dt == QKV_DTYPE_Q8_0 ? QKV_Q8_0_BLOCK_BYTES : QKV_Q4_0_BLOCK_BYTES);
        a->blocks[i] = qkv_alloc((size_t)(bytes > 0 ? bytes : 1));
        if (!a->blocks[i] || qkv_quantize(a->blocks[i], dt, a->data[1 + i], n) != QKV_OK) return 0;
        t[i]->data = a->blocks[i];
        t[i]->dtype = dt;
    }
    return 1;
}

/* The case's tensors in dtype dt instead of f32: the inputs' values
 * rounded, the outputs written in dt (lse stays f32, as the library
 * keeps it), K and V left as they are when in a block format; 0 when out
 * of memory. */
static int attention_narrow(attention_ctx *a, qkv_dtype dt)
{
    qkv_tensor *t[8] = {&a->q, &a->k, &a->v, &a->dout, &a->o, &a->dq, &a->dk, &a->dv};
    for (int i = 0; i < 8; i++) {
        if (!t[i]->data || t[i]->dtype != QKV_DTYPE_F32) continue;
        const int64_t n = t[i]->shape[0] * t[i]->shape[1] * t[i]->shape[2] * t[i]->shape[3];
        if (!narrowed(t[i]->data, n, dt, &a->half[i])) return 0;
        t[i]->data = a->half[i].data;
        t[i]->dtype = dt;
    }
    return 1;
}

/* The relative L2 distance of a --dtype / --kv case's output from its f32
 * twin's: what the dtype or format costs the result, beside its speed. */
static double output_error(const attention_ctx *a, const attention_ctx *twin)
{
    const int64_t n = a->o.shape[0] * a->o.shape[1] * a->o.shape[2] * a->o.shape[3];
    qkv_array src = {a->o.data, a->o.dtype, 1, {n}}, wide = {0};
    if (a->o.dtype != QKV_DTYPE_F32 && qkv_array_convert(&wide, &src, QKV_DTYPE_F32) != QKV_OK)
        return NAN;
    const float *got = a->o.dtype == QKV_DTYPE_F32 ? a->o.data : wide.data, *want = twin->o.data;
    double num = 0, den = 0;
    for (int64_t x = 0; x < n; x++) {
        num += ((double)got[x] - want[x]) * ((double)got[x] - want[x]);
        den += (double)want[x] * want[x];
    }
    qkv_array_free(&wide);
    return den > 0 ? sqrt(num / den) : 0.0;
}

/* Case c's rates for its time t, against its ceiling: the copy's
 * copy_gbps for decode (Lq = 1), else an SGEMM of min(L, 2048) squared
 * by E, measured here. With a 16-bit --dtype, t32 is the f32 twin's time
 * (timed in turn with it), reported beside it with the ratio of rates. */
static void attention_report(const bcase *c, const bench_opts *bo, const blas *bl, double t,
                             double t32, double error, double copy_gbps, double peak)
{
    const int decode = c->Lq == 1;
    double flops = 4.0 * (double)c->B * (double)c->H * (double)c->Lq * (double)c->Lk * (double)c->E;
    if (c->causal && c->Lq == c->Lk) flops /= 2;
    if (bo->backward) flops *= 3.5; /* the forward, and the backward counted as 2.5 of it */
    const double gflops = flops / t / 1e9;
    const double nk = (double)(c->B * c->Hkv * c->Lk * c->E);
    /* K and V, read once: their dtype's bytes a value, or a block's over 32 */
    const double per = bo->kv == QKV_DTYPE_Q8_0   ? (double)QKV_Q8_0_BLOCK_BYTES / QKV_BLOCK_VALUES
                       : bo->kv == QKV_DTYPE_Q4_0 ? (double)QKV_Q4_0_BLOCK_BYTES / QKV_BLOCK_VALUES
                                                  : (double)qkv_dtype_size(bo->dtype);
    const double bytes = 2.0 * nk * per;
    const double gbps = bytes / t / 1e9;
    double ceiling, ratio;
    if (decode) {
        ceiling = copy_gbps;
        ratio = ceiling > 0 ? gbps / ceiling : NAN;
    } else {
        int64_t side = c->Lq < 2048 ? c->Lq : 2048;
        ceiling = sgemm_ceiling(bl, (int)side, (int)side, (int)c->E);
        ratio = ceiling > 0 ? gflops / ceiling : NAN;
    }
    if (bo->json) {
        printf("{\"name\": \"%s\", \"B\": %lld, \"H\": %lld, \"Hkv\": %lld, \"Lq\": %lld, "
               "\"Lk\": %lld, \"E\": %lld, \"causal\": %s, \"backward\": %s, \"threads\": %d, "
               "\"impl\": \"%s\", \"dtype\": \"%s\", \"kv\": \"%s\", "
               "\"seconds\": %.6g, \"gflops\": %.4g, ",
               c->name, (long long)c->B, (long long)c->H, (long long)c->Hkv, (long long)c->Lq,
               (long long)c->Lk, (long long)c->E, c->causal ? "true" : "false",
               bo->backward ? "true" : "false", bench_threads(bo),
               bo->reference ? "reference" : qkv_isa_name(bench_isa(bo)),
               qkv_dtype_name(bo->dtype), qkv_dtype_name(bo->kv), t, gflops);
        if (t32 > 0)
            printf("\"f32_seconds\": %.6g, \"f32_gflops\": %.4g, \"vs_f32\": %.4f, "
                   "\"rel_l2_vs_f32\": %.4g, ", t32, flops / t32 / 1e9, t32 / t, error);
        if (!decode) {
            json_gflops_tail(gflops, peak, ceiling, bl->sgemm != NULL, ratio);
            return;
        }
        json_fma_peak(gflops, peak);
        printf("\"gbps\": %.4g, \"ceiling_gbps\": %.4g, \"ceiling\": \"%s\", ", gbps, ceiling,
               copy_ceiling_name);
        json_ratio(ratio);
    } else {
        char name[80];
        snprintf(name, sizeof name, "%s%s%s", c->name, t32 > 0 ? " " : "",
                 t32 > 0 ? variant(bo) : "");
        if (!decode) {
            text_gflops_line(name, t, gflops, peak, ceiling, ratio);
        } else {
            printf("%-24s %9.4f s %8.1f GFLOP/s", name, t, gflops);
            printf(" %7.1f GB/s   copy %6.1f GB/s", gbps, ceiling);
            if (!isnan(ratio)) printf("   ratio %.3f", ratio);
            printf("\n");
        }
        if (t32 > 0) {
            twin_line(bo, t, t32, flops / t32 / 1e9, "GFLOP/s");
            printf("%-24s %.3g relative L2 from the f32 twin's\n", "  its output", error);
        }
    }
}

int bench_attention_case(const bcase *c, const bench_opts *bo, const blas *bl, double copy_gbps,
                         double peak)
{
    attention_ctx a, twin;
    const int narrow = bo->dtype != QKV_DTYPE_F32 || bo->kv != QKV_DTYPE_F32;
    int ok = 0;
    memset(&twin, 0, sizeof twin);
    if (!attention_setup(c, bo, &a) ||
        (narrow && (!attention_setup(c, bo, &twin) ||
                    (bo->kv != QKV_DTYPE_F32 && !attention_quantize(&a, bo->kv)) ||
                    (bo->dtype != QKV_DTYPE_F32 && !attention_narrow(&a, bo->dtype))))) {
        cli_error("bench", "%s: cannot allocate the inputs", c->name);
    } else {
        cli_progress prog;
        cli_progress_init(&prog, "bench", c->name);
        qkv_context_set_progress(a.ctx, cli_progress_update, &prog);
        /* A 16-bit case and its f32 twin are called in turn, each one's
         * fastest run counted: the same statistic, the same moments. */
        double t = -1, t32 = 0;
        if (!narrow)
            t = bench_time_median(run_attention, &a);
        else if (!bench_time_pair(run_attention, &a, run_attention, &twin, &t, &t32))
            t = -1;
        cli_progress_done(&prog);
        if (t < 0 || (narrow && t32 <= 0)) {
            cli_error("bench", "%s: %s", c->name, qkv_error_detail());
        } else {
            attention_report(c, bo, bl, t, t32, narrow ? output_error(&a, &twin) : 0.0, copy_gbps,
                             peak);
            fflush(stdout);
            ok = 1;
        }
    }
    attention_free(&a);
    if (narrow) attention_free(&twin);
    return ok;
}

/* ------------------------------------------------------------ SGEMM */

static int run_qkv_gemm(void *vctx)
{
    gemm_ctx *g = vctx;
    return qkv_sgemm(g->ctx, g->ta ? QKV_GEMM_TRANS : QKV_GEMM_NO_TRANS,
                     g->tb ? QKV_GEMM_TRANS : QKV_GEMM_NO_TRANS, g->m, g->n, g->k, 1.0f, g->a,
                     g->ta ? g->m : g->k, g->bm, g->tb ? g->k : g->n, 0.0f, g->c,
                     g->n) == QKV_OK;
}

/* Case c's rates for the fastest runs t (ours) and tb (the BLAS's, 0 for
 * none). */
static void gemm_report(const gcase *c, const bench_opts *bo, const blas *bl, double t, double tb,
                        double peak)
{
    const double flops = 2.0 * (double)c->m * (double)c->n * (double)c->k;
    const double gflops = flops / t / 1e9, ceiling = tb > 0 ? flops / tb / 1e9 : 0;
    const double ratio = ceiling > 0 ? gflops / ceiling : NAN;
    const char ops[3] = {c->ta ? 'T' : 'N', c->tb ? 'T' : 'N', '\0'};
    if (bo->json) {
        printf("{\"name\": \"%s\", \"kind\": \"gemm\", \"M\": %lld, \"N\": %lld, "
               "\"K\": %lld, \"ops\": \"%s\", \"threads\": %d, \"impl\": \"%s\", "
               "\"seconds\": %.6g, \"gflops\": %.4g, ",
               c->name, (long long)c->m, (long long)c->n, (long long)c->k, ops, bench_threads(bo),
               qkv_isa_name(bench_isa(bo)), t, gflops);
        json_gflops_tail(gflops, peak, ceiling, bl->sgemm != NULL, ratio);
    } else {
        text_gflops_line(c->name, t, gflops, peak, ceiling, ratio);
    }
}

/* qkv_gemm on A and B in a 16-bit dtype: g's matrices rounded. */
typedef struct gemm16_ctx {
    const gemm_ctx *g;
    qkv_array a, b;
} gemm16_ctx;

static int run_qkv_gemm16(void *vctx)
{
    const gemm16_ctx *h = vctx;
    const gemm_ctx *g = h->g;
    return qkv_gemm(g->ctx, g->ta ? QKV_GEMM_TRANS : QKV_GEMM_NO_TRANS,
                    g->tb ? QKV_GEMM_TRANS : QKV_GEMM_NO_TRANS, g->m, g->n, g->k, 1.0f, h->a.data,
                    h->a.dtype, g->ta ? g->m : g->k, h->b.data, h->b.dtype, g->tb ? g->k : g->n,
                    0.0f, g->c, g->n) == QKV_OK;
}

int bench_gemm_case(const gcase *c, const bench_opts *bo, const blas *bl, double peak)
{
    gemm_ctx g = {bl, (int)c->m, (int)c->n, (int)c->k, c->ta, c->tb, NULL, NULL, NULL, NULL};
    gemm16_ctx h = {&g, {0}, {0}};
    const int narrow = bo->dtype != QKV_DTYPE_F32;
    /* Our kernel even where AUTO would mean the system BLAS (QKV_BLAS=ON). */
    g.ctx = cli_context("bench", bo->threads, 0, bench_isa(bo));
    int ok = 0;
    double t, tb;
    if (!g.ctx) {
        /* cli_context said why */
    } else if (!gemm_alloc(&g) || (narrow && (!narrowed(g.a, c->m * c->k, bo->dtype, &h.a) ||
                                             !narrowed(g.bm, c->n * c->k, bo->dtype, &h.b)))) {
        cli_error("bench", "%s: cannot allocate the matrices", c->name);
    } else if (narrow ? !bench_time_pair(run_qkv_gemm16, &h, run_qkv_gemm, &g, &t, &tb)
                      : !bench_time_pair(run_qkv_gemm, &g, g.b->sgemm ? run_blas_gemm : NULL, &g,
                                         &t, &tb)) {
        cli_error("bench", "%s: %s", c->name, qkv_error_detail());
    } else {
        if (narrow)
            twin_report(c->name, "gemm", bo, t, tb, 2.0 * (double)c->m * (double)c->n * (double)c->k,
                        "GFLOP/s");
        else
            gemm_report(c, bo, bl, t, tb, peak);
        fflush(stdout);
        ok = 1;
    }
    qkv_array_free(&h.a);
    qkv_array_free(&h.b);
    gemm_free(&g);
    return ok;
}

/* ------------------------------------------------------------ the layer */

typedef struct layer_ctx {
    qkv_mha *m;
    qkv_kv_cache *cache;
    float *x, *y;
    int64_t len;
    qkv_attention_options opt;
    qkv_context *ctx;
} layer_ctx;

/* One decode step, then the cache cut back to its context. */
static int run_layer_decode(void *vctx)
{
    layer_ctx *l = vctx;
    return qkv_mha_decode(l->ctx, l->m, l->cache, l->y, NULL, l->x, 1, &l->opt) == QKV_OK &&
           qkv_kv_cache_truncate(l->cache, 0, l->len) == QKV_OK;
}

static int run_layer_forward(void *vctx)
{
    layer_ctx *l = vctx;
    return qkv_mha_forward(l->ctx, l->m, l->y, NULL, l->x, 1, l->len, NULL, l->len, &l->opt) ==
           QKV_OK;
}

/* A layer with random parameters, its weights kept in dt, and, for
 * decode, a cache in kvf (a block format) or dt holding `len` tokens of
 * random keys and values (appended in pieces). */
static int layer_setup(const lcase *c, qkv_dtype dt, qkv_dtype kvf, layer_ctx *l)
{
    qkv_mha_config cfg = {.d_model = c->D,
                          .heads = c->H,
                          .kv_heads = c->Hkv,
                          .head_dim = c->E,
                          .rope = QKV_ROPE_HALF,
                          .weight_dtype = dt};
    if (qkv_mha_create(&l->m, &cfg) != QKV_OK) return 0;
    for (int i = 0; i < QKV_MHA_NUM_PARAMS; i++) {
        int64_t rows, cols;
        qkv_dtype pdt;
        void *p = qkv_mha_param_view(l->m, (qkv_mha_param)i, &pdt, &rows, &cols);
        float *r = p ? random_floats(rows * cols, 10 + (uint64_t)i) : NULL;
        if (p && !r) return 0;
        for (int64_t j = 0; p && j < rows * cols; j++) r[j] /= sqrtf((float)cols);
        qkv_array conv = {0};
        const int ok = !p || pdt == QKV_DTYPE_F32 || narrowed(r, rows * cols, pdt, &conv);
        if (p && ok)
            memcpy(p, pdt == QKV_DTYPE_F32 ? (void *)r : conv.data,
                   (size_t)(rows * cols) * qkv_dtype_size(pdt));
        qkv_array_free(&conv);
        qkv_free(r);
        if (!ok) return 0;
    }
    const int64_t rows = c->decode ? 1 : c->len;
    l->x = random_floats(rows * c->D, 20);
    l->y = qkv_alloc((size_t)(rows * c->D) * sizeof(float));
    if (!l->x || !l->y) return 0;
    if (!c->decode) return 1;
    const qkv_kv_format f = kvf == QKV_DTYPE_Q8_0   ? QKV_KV_Q8_0
                            : kvf == QKV_DTYPE_Q4_0 ? QKV_KV_Q4_0
                            : dt == QKV_DTYPE_BF16 ? QKV_KV_BF16
                            : dt == QKV_DTYPE_F16  ? QKV_KV_F16
                                                   : QKV_KV_F32;
    const qkv_kv_cache_options co = {.struct_size = sizeof co, .k_format = f, .v_format = f};
    if (qkv_kv_cache_create_with(&l->cache, l->m, 1, c->len + 1, &co) != QKV_OK) return 0;
    const int64_t piece = 512;
    float *kv = random_floats(2 * piece * c->Hkv * c->E, 21);
    int ok = kv != NULL;
    for (int64_t t = 0; ok && t < c->len; t += piece) {
        const int64_t n = c->len - t < piece ? c->len - t : piece;
        ok = qkv_kv_cache_append(l->cache, 0, kv, kv + piece * c->Hkv * c->E, n) == QKV_OK;
    }
    qkv_free(kv);
    return ok;
}

static void layer_free(layer_ctx *l)
{
    qkv_context_free(l->ctx);
    qkv_kv_cache_free(l->cache);
    qkv_mha_free(l->m);
    qkv_free(l->x);
    qkv_free(l->y);
}

/* The four projection weights, Wq, Wk, Wv and Wo, in floats. */
static double layer_weights(const lcase *c)
{
    return (double)c->D * (2.0 * (double)(c->H * c->E) + 2.0 * (double)(c->Hkv * c->E));
}

/* A decode step of t seconds against the copy's fastest, tc: the bytes of
 * the weights and of the cached K and V, read once. */
static void layer_decode_report(const lcase *c, const bench_opts *bo, const copy_ctx *cp, double t,
                                double tc)
{
    const double kw = (double)(c->Hkv * c->E);
    const double copy_gbps = tc > 0 ? copy_gbps_of(cp, tc) : 0;
    const double bytes = sizeof(float) * (layer_weights(c) + 2.0 * kw * (double)(c->len + 1));
    const double gbps = bytes / t / 1e9, ratio = copy_gbps > 0 ? gbps / copy_gbps : NAN;
    if (bo->json) {
        printf("{\"name\": \"%s\", \"kind\": \"mha_decode\", \"B\": 1, \"D\": %lld, "
               "\"H\": %lld, \"Hkv\": %lld, \"E\": %lld, \"context\": %lld, \"threads\": %d, "
               "\"impl\": \"%s\", \"seconds\": %.6g, \"tokens_per_s\": %.4g, \"gbps\": %.4g, "
               "\"ceiling_gbps\": %.4g, \"ceiling\": \"%s\", ",
               c->name, (long long)c->D, (long long)c->H, (long long)c->Hkv, (long long)c->E,
               (long long)c->len, bench_threads(bo), qkv_isa_name(bench_isa(bo)), t, 1.0 / t, gbps,
               copy_gbps, copy_ceiling_name);
        json_ratio(ratio);
    } else {
        printf("%-24s %9.4f s %8.1f tokens/s %6.1f GB/s   copy %6.1f GB/s", c->name, t, 1.0 / t,
               gbps, copy_gbps);
        if (!isnan(ratio)) printf("   ratio %.3f", ratio);
        printf("\n");
    }
}

/* A causal forward of t seconds against an SGEMM of L x D x D taking tc
 * (0: no BLAS): the projections' FLOPs and half the attention's. */
static void layer_forward_report(const lcase *c, const bench_opts *bo, const blas *bl, double t,
                                 double tc, double peak)
{
    const double L = (double)c->len, D = (double)c->D;
    const double flops = 2.0 * L * layer_weights(c) + 2.0 * (double)c->H * L * L * (double)c->E;
    const double gflops = flops / t / 1e9;
    const double ceiling = tc > 0 ? 2.0 * L * D * D / tc / 1e9 : 0;
    const double ratio = ceiling > 0 ? gflops / ceiling : NAN;
    if (bo->json) {
        printf("{\"name\": \"%s\", \"kind\": \"mha_forward\", \"B\": 1, \"L\": %lld, "
               "\"D\": %lld, \"H\": %lld, \"Hkv\": %lld, \"E\": %lld, \"causal\": true, "
               "\"threads\": %d, \"impl\": \"%s\", \"seconds\": %.6g, \"gflops\": %.4g, ",
               c->name, (long long)c->len, (long long)c->D, (long long)c->H, (long long)c->Hkv,
               (long long)c->E, bench_threads(bo), qkv_isa_name(bench_isa(bo)), t, gflops);
        json_gflops_tail(gflops, peak, ceiling, bl->sgemm != NULL, ratio);
    } else {
        text_gflops_line(c->name, t, gflops, peak, ceiling, ratio);
    }
}

/* The layer's fastest run against its ceiling's, called in turn
 * (bench_time_pair): a copy for decode, an SGEMM of the projections' size
 * for the forward. */
/* A layer case with 16-bit weights and cache (--dtype) against its f32 twin, each
 * side's fastest run: tokens per second for decode, GFLOP/s for the
 * forward. */
static int layer_twin_case(const lcase *c, const bench_opts *bo)
{
    layer_ctx l, twin;
    memset(&l, 0, sizeof l);
    memset(&twin, 0, sizeof twin);
    l.len = twin.len = c->len;
    l.opt.causal = twin.opt.causal = 1;
    double t = -1, t32 = 0;
    int ok = 0;
    if (!(l.ctx = cli_context("bench", bo->threads, 0, bo->isa)) ||
        !(twin.ctx = cli_context("bench", bo->threads, 0, bo->isa))) {
        /* cli_context said why */
    } else if (!layer_setup(c, bo->dtype, bo->kv, &l) ||
               !layer_setup(c, QKV_DTYPE_F32, QKV_DTYPE_F32, &twin)) {
        cli_error("bench", "%s: %s", c->name,
                  *qkv_error_detail() ? qkv_error_detail() : "cannot allocate the layer");
    } else if (!bench_time_pair(c->decode ? run_layer_decode : run_layer_forward, &l,
                                c->decode ? run_layer_decode : run_layer_forward, &twin, &t,
                                &t32)) {
        cli_error("bench", "%s: %s", c->name, qkv_error_detail());
    } else {
        const double L = (double)c->len;
        const double flops = 2.0 * L * layer_weights(c) + 2.0 * (double)c->H * L * L * (double)c->E;
        twin_report(c->name, c->decode ? "mha_decode" : "mha_forward", bo, t, t32,
                    c->decode ? 1.0 : flops, c->decode ? "tokens/s" : "GFLOP/s");
        fflush(stdout);
        ok = 1;
    }
    layer_free(&l);
    layer_free(&twin);
    return ok;
}

int bench_layer_case(const lcase *c, const bench_opts *bo, const blas *bl, double peak)
{
    /* --kv is the decode's cache: a forward has none */
    if (bo->dtype != QKV_DTYPE_F32 || (bo->kv != QKV_DTYPE_F32 && c->decode))
        return layer_twin_case(c, bo);
    layer_ctx l;
    memset(&l, 0, sizeof l);
    copy_ctx cp = {NULL, NULL, 0, 1};
    gemm_ctx g = {bl, (int)c->len, (int)c->D, (int)c->D, 0, 1, NULL, NULL, NULL, NULL};
    double t = -1, tc = 0;
    l.len = c->len;
    l.opt.causal = 1;
    int ok = 0;
    if (!(l.ctx = cli_context("bench", bo->threads, 0, bo->isa))) {
        /* cli_context said why */
    } else if (!layer_setup(c, QKV_DTYPE_F32, QKV_DTYPE_F32, &l)) {
        cli_error("bench", "%s: %s", c->name,
                  *qkv_error_detail() ? qkv_error_detail() : "cannot allocate the layer");
    } else if (c->decode ? !copy_alloc(&cp, bench_threads(bo)) : bl->sgemm && !gemm_alloc(&g)) {
        cli_error("bench", "%s: cannot allocate the ceiling's buffers", c->name);
    } else if (!(c->decode ? bench_time_pair(run_layer_decode, &l, run_copy, &cp, &t, &tc)
                           : bench_time_pair(run_layer_forward, &l,
                                             bl->sgemm ? run_blas_gemm : NULL, &g, &t, &tc))) {
        cli_error("bench", "%s: %s", c->name, qkv_error_detail());
    } else {
        if (c->decode)
            layer_decode_report(c, bo, &cp, t, tc);
        else
            layer_forward_report(c, bo, bl, t, tc, peak);
        fflush(stdout);
        ok = 1;
    }
    copy_free(&cp);
    gemm_free(&g);
    layer_free(&l);
    return ok;
}
