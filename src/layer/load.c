/* A layer's parameters from and to .safetensors (qkv.h, qkv_mha_load and
 * qkv_mha_save): PyTorch nn.MultiheadAttention's state-dict names and the
 * separate q/k/v/o projection names. */
#include "layer/mha.h"

#include "common.h"
#include "io/io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A name with the prefix prepended, and what the file holds under it. */
typedef struct entry {
    char name[512];
    int present;
    const char *file_dtype; /* as the file names it ("I8" too), when present */
    qkv_array info;         /* dtype and shape when present */
} entry;

static qkv_status look(const qkv_safetensors *st, const char *prefix, const char *name, entry *e)
{
    int w = snprintf(e->name, sizeof e->name, "%s%s", prefix, name);
    if (w < 0 || (size_t)w >= sizeof e->name)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "prefix: '%s' is too long", prefix);
    e->present = qkv_safetensors_find(st, e->name, &e->info);
    e->file_dtype = qkv_safetensors_dtype_str(st, e->name);
    return QKV_OK;
}

/* The shape of a present entry must be (rows, cols) (cols < 0: 1-d of
 * rows); a dim given as 0 is free and is returned through rows and cols. */
static qkv_status expect_shape(const entry *e, int64_t *rows, int64_t *cols)
{
    const qkv_array *a = &e->info;
    int ndim = *cols < 0 ? 1 : 2;
    if (!qkv_float_dtype(a->dtype))
        return qkv_fail(QKV_ERR_DTYPE, "%s: dtype %s is not F32, F16 or BF16", e->name,
                        e->file_dtype);
    int ok = a->ndim == ndim && (*rows == 0 || a->shape[0] == *rows) &&
             (ndim == 1 || *cols == 0 || a->shape[1] == *cols);
    if (!ok) {
        char want[96], got[160];
        if (ndim == 1)
            snprintf(want, sizeof want, "[%lld]", (long long)*rows);
        else
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)*rows, (long long)*cols);
        int p = snprintf(got, sizeof got, "[");
        for (int i = 0; i < a->ndim && p < (int)sizeof got - 24; i++)
            p += snprintf(got + p, sizeof got - (size_t)p, "%s%lld", i ? ", " : "",
                          (long long)a->shape[i]);
        snprintf(got + p, sizeof got - (size_t)p, "]");
        /* A 0 in `want` means any size there. */
        return qkv_fail(QKV_ERR_SHAPE, "%s: shape %s, expected %s (0 = any)", e->name, got, want);
    }
    for (int i = 0; i < ndim; i++)
        if (a->shape[i] < 1)
            return qkv_fail(QKV_ERR_SHAPE, "%s: dim %d is %lld; a layer's weights have no empty dims",
                            e->name, i, (long long)a->shape[i]);
    *rows = a->shape[0];
    if (ndim == 2) *cols = a->shape[1];
    return QKV_OK;
}

/* Copies rows [r0, r0 + n) of entry e (as F32) into dst. */
/* Rows r0 .. r0 + n - 1 of the tensor e, `width` wide, into m's parameter
 * `which`, converted to its dtype (exactly, from the same dtype). */
static qkv_status copy_rows(const qkv_safetensors *st, const entry *e, int64_t r0, int64_t n,
                            int64_t width, qkv_mha *m, int which)
{
    qkv_array a;
    const qkv_dtype dt = m->dtype[which];
    qkv_status s = qkv_safetensors_get(st, e->name, dt, &a);
    if (s) return s;
    const size_t es = qkv_dtype_size(dt);
    memcpy(m->param[which], (const char *)a.data + (size_t)(r0 * width) * es,
           (size_t)(n * width) * es);
    qkv_array_free(&a);
    return QKV_OK;
}

/* A dim of cfg that must match the file's, or 0 = take the file's. */
static qkv_status agree(const char *field, int64_t given, int64_t found, const char *source,
                        int64_t *out)
{
    if (given != 0 && given != found)
        return qkv_fail(QKV_ERR_SHAPE, "cfg.%s: %lld, but %s implies %lld", field,
                        (long long)given, source, (long long)found);
    *out = found;
    return QKV_OK;
}

enum { Q, K, V, O, NPROJ };

qkv_status qkv_mha_load(qkv_mha **out, const qkv_mha_config *cfg, const qkv_safetensors *st,
                        const char *prefix)
{
    qkv_clear_error();
    if (!out) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "out: is NULL");
    *out = NULL;
    if (!cfg) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "cfg: is NULL");
    if (!st) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "st: is NULL");
    if (!prefix) prefix = "";
    if (cfg->heads < 1)
        return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "heads: %lld is not >= 1", (long long)cfg->heads);
    const int64_t H = cfg->heads, Hkv = cfg->kv_heads ? cfg->kv_heads : cfg->heads;
    if (Hkv < 1 || H % Hkv != 0)
        return qkv_fail(QKV_ERR_SHAPE, "kv_heads: %lld does not divide heads = %lld",
                        (long long)Hkv, (long long)H);

    /* Which naming the file uses. */
    static const char *const packed[] = {"in_proj_weight", "in_proj_bias", "out_proj.weight",
                                         "out_proj.bias"};
    static const char *const split_mha[] = {"q_proj_weight", "k_proj_weight", "v_proj_weight"};
    static const char *const sep_w[NPROJ] = {"q_proj.weight", "k_proj.weight", "v_proj.weight",
                                             "o_proj.weight"};
    static const char *const sep_b[NPROJ] = {"q_proj.bias", "k_proj.bias", "v_proj.bias",
                                             "o_proj.bias"};
    static const char *const unsupported[] = {"bias_k", "bias_v"};
    entry pk[4], sm[3], sw[NPROJ], sb[NPROJ], un[2];
    qkv_status s = QKV_OK;
    for (int i = 0; i < 4 && !s; i++) s = look(st, prefix, packed[i], &pk[i]);
    for (int i = 0; i < 3 && !s; i++) s = look(st, prefix, split_mha[i], &sm[i]);
    for (int i = 0; i < NPROJ && !s; i++) s = look(st, prefix, sep_w[i], &sw[i]);
    for (int i = 0; i < NPROJ && !s; i++) s = look(st, prefix, sep_b[i], &sb[i]);
    for (int i = 0; i < 2 && !s; i++) s = look(st, prefix, unsupported[i], &un[i]);
    if (s) return s;
    for (int i = 0; i < 2; i++)
        if (un[i].present)
            return qkv_fail(QKV_ERR_UNSUPPORTED,
                            "%s: nn.MultiheadAttention's add_bias_kv is not supported", un[i].name);
    const int torch_style = pk[0].present || pk[2].present || sm[0].present;
    int sep_any = 0;
    for (int i = 0; i < NPROJ; i++) sep_any |= sw[i].present | sb[i].present;
    if (torch_style && sep_any)
        return qkv_fail(QKV_ERR_FORMAT,
                        "st: holds both nn.MultiheadAttention names (%s...) and separate "
                        "projection names (%s...); one layer takes one set",
                        pk[2].present ? pk[2].name : pk[0].name, sw[0].present ? sw[0].name : sb[0].name);
    if (!torch_style && !sep_any)
        return qkv_fail(QKV_ERR_FORMAT,
                        "st: has neither %s (nn.MultiheadAttention) nor %s (separate "
                        "projections)",
                        pk[0].name, sw[0].name);

    qkv_mha_config c = *cfg;
    c.kv_heads = Hkv;
    int64_t r, col;
    if (torch_style) {
        /* nn.MultiheadAttention: heads share one width D = H * E. */
        if (Hkv != H)
            return qkv_fail(QKV_ERR_SHAPE,
                            "kv_heads: %lld, but nn.MultiheadAttention weights have as many kv "
                            "heads as heads (%lld)",
                            (long long)Hkv, (long long)H);
        if (pk[0].present && sm[0].present)
            return qkv_fail(QKV_ERR_FORMAT, "st: holds both %s and %s", pk[0].name, sm[0].name);
        if (!pk[2].present)
            return qkv_fail(QKV_ERR_FORMAT, "%s: missing", pk[2].name);
        int64_t D = 0, Dkv = 0;
        r = 0, col = 0;
        if ((s = expect_shape(&pk[2], &r, &col))) return s;
        if (r != col)
            return qkv_fail(QKV_ERR_SHAPE, "%s: shape [%lld, %lld] is not square (D x D)",
                            pk[2].name, (long long)r, (long long)col);
        D = r;
        if (pk[0].present) {
            r = 3 * D, col = D;
            if ((s = expect_shape(&pk[0], &r, &col))) return s;
            Dkv = D;
        } else {
            for (int i = 0; i < 3; i++)
                if (!sm[i].present) return qkv_fail(QKV_ERR_FORMAT, "%s: missing", sm[i].name);
            r = D, col = D;
            if ((s = expect_shape(&sm[0], &r, &col))) return s;
            r = D, col = 0;
            if ((s = expect_shape(&sm[1], &r, &col))) return s;
            Dkv = col;
            r = D;
            if ((s = expect_shape(&sm[2], &r, &col))) return s;
        }
        if (D % H != 0)
            return qkv_fail(QKV_ERR_SHAPE, "heads: %lld does not divide the width %lld of %s",
                            (long long)H, (long long)D, pk[2].name);
        if (pk[1].present != pk[3].present)
            return qkv_fail(QKV_ERR_FORMAT, "%s: missing (the file has %s)",
                            pk[1].present ? pk[3].name : pk[1].name,
                            pk[1].present ? pk[1].name : pk[3].name);
        if (pk[1].present) {
            r = 3 * D, col = -1;
            if ((s = expect_shape(&pk[1], &r, &col))) return s;
            r = D;
            if ((s = expect_shape(&pk[3], &r, &col))) return s;
        }
        if ((s = agree("d_model", cfg->d_model, D, pk[2].name, &c.d_model)) ||
            (s = agree("d_context", cfg->d_context, Dkv, pk[0].present ? pk[0].name : sm[1].name,
                       &c.d_context)) ||
            (s = agree("head_dim", cfg->head_dim, D / H, "heads and d_model", &c.head_dim)) ||
            (s = agree("v_head_dim", cfg->v_head_dim, D / H, "heads and d_model",
                       &c.v_head_dim)))
            return s;
        c.bias = pk[1].present;
    } else {
        for (int i = 0; i < NPROJ; i++)
            if (!sw[i].present) return qkv_fail(QKV_ERR_FORMAT, "%s: missing", sw[i].name);
        int nb = 0;
        for (int i = 0; i < NPROJ; i++) nb += sb[i].present;
        if (nb != 0 && nb != NPROJ)
            for (int i = 0; i < NPROJ; i++)
                if (!sb[i].present)
                    return qkv_fail(QKV_ERR_FORMAT,
                                    "%s: missing (the file has biases for other projections)",
                                    sb[i].name);
        int64_t rq = 0, D = 0, rk = 0, Dkv = 0, rv = 0, dv2 = 0, ro = 0, co = 0;
        if ((s = expect_shape(&sw[Q], &rq, &D)) || (s = expect_shape(&sw[K], &rk, &Dkv)) ||
            (s = expect_shape(&sw[V], &rv, &dv2)) || (s = expect_shape(&sw[O], &ro, &co)))
            return s;
        if (rq % H != 0)
            return qkv_fail(QKV_ERR_SHAPE, "%s: %lld rows are not a multiple of heads = %lld",
                            sw[Q].name, (long long)rq, (long long)H);
        const int64_t E = rq / H;
        if (rk != Hkv * E)
            return qkv_fail(QKV_ERR_SHAPE,
                            "%s: %lld rows, expected kv_heads x head_dim = %lld x %lld",
                            sw[K].name, (long long)rk, (long long)Hkv, (long long)E);
        if (dv2 != Dkv)
            return qkv_fail(QKV_ERR_SHAPE, "%s: %lld columns differ from %s's %lld", sw[V].name,
                            (long long)dv2, sw[K].name, (long long)Dkv);
        if (rv % Hkv != 0)
            return qkv_fail(QKV_ERR_SHAPE, "%s: %lld rows are not a multiple of kv_heads = %lld",
                            sw[V].name, (long long)rv, (long long)Hkv);
        const int64_t Ev = rv / Hkv;
        if (ro != D || co != H * Ev)
            return qkv_fail(QKV_ERR_SHAPE, "%s: shape [%lld, %lld], expected [%lld, %lld]",
                            sw[O].name, (long long)ro, (long long)co, (long long)D,
                            (long long)(H * Ev));
        if (nb) {
            const int64_t want[NPROJ] = {rq, rk, rv, D};
            for (int i = 0; i < NPROJ; i++) {
                r = want[i], col = -1;
                if ((s = expect_shape(&sb[i], &r, &col))) return s;
            }
        }
        if ((s = agree("d_model", cfg->d_model, D, sw[Q].name, &c.d_model)) ||
            (s = agree("d_context", cfg->d_context, Dkv, sw[K].name, &c.d_context)) ||
            (s = agree("head_dim", cfg->head_dim, E, sw[Q].name, &c.head_dim)) ||
            (s = agree("v_head_dim", cfg->v_head_dim, Ev, sw[V].name, &c.v_head_dim)))
            return s;
        c.bias = nb != 0;
    }

    qkv_mha *m;
    if ((s = qkv_mha_create(&m, &c))) return s;
    const qkv_mha_config *rc = &m->cfg;
    const int64_t D = rc->d_model, Dkv = rc->d_context, nq = rc->heads * rc->head_dim,
                  nk = rc->kv_heads * rc->head_dim, nv = rc->kv_heads * rc->v_head_dim;
    if (torch_style) {
        if (pk[0].present) {
            s = copy_rows(st, &pk[0], 0, nq, D, m, QKV_MHA_WQ);
            if (!s) s = copy_rows(st, &pk[0], nq, nk, D, m, QKV_MHA_WK);
            if (!s) s = copy_rows(st, &pk[0], nq + nk, nv, D, m, QKV_MHA_WV);
        } else {
            s = copy_rows(st, &sm[0], 0, nq, D, m, QKV_MHA_WQ);
            if (!s) s = copy_rows(st, &sm[1], 0, nk, Dkv, m, QKV_MHA_WK);
            if (!s) s = copy_rows(st, &sm[2], 0, nv, Dkv, m, QKV_MHA_WV);
        }
        if (!s) s = copy_rows(st, &pk[2], 0, D, D, m, QKV_MHA_WO);
    }
    if (torch_style && !s && rc->bias) {
        /* in_proj_bias is bq, bk, bv one after another. */
        qkv_array a;
        s = qkv_safetensors_get(st, pk[1].name, QKV_DTYPE_F32, &a);
        if (!s) {
            const float *p = a.data;
            memcpy(m->param[QKV_MHA_BQ], p, (size_t)nq * sizeof(float));
            memcpy(m->param[QKV_MHA_BK], p + nq, (size_t)nk * sizeof(float));
            memcpy(m->param[QKV_MHA_BV], p + nq + nk, (size_t)nv * sizeof(float));
            qkv_array_free(&a);
            s = copy_rows(st, &pk[3], 0, 1, D, m, QKV_MHA_BO);
        }
    }
    if (!torch_style) {
        const int p_w[NPROJ] = {QKV_MHA_WQ, QKV_MHA_WK, QKV_MHA_WV, QKV_MHA_WO};
        for (int i = 0; i < NPROJ && !s; i++)
            s = copy_rows(st, &sw[i], 0, m->rows[p_w[i]], m->cols[p_w[i]], m, p_w[i]);
        for (int i = 0; i < NPROJ && !s && rc->bias; i++)
            s = copy_rows(st, &sb[i], 0, 1, m->cols[QKV_MHA_BQ + i], m, QKV_MHA_BQ + i);
    }
    if (s) {
        qkv_mha_free(m);
        return s;
    }
    *out = m;
    return QKV_OK;
}

qkv_status qkv_mha_save(const qkv_mha *m, const char *path, const char *prefix)
{
    qkv_clear_error();
    if (!m) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "m: is NULL");
    if (!path) return qkv_fail(QKV_ERR_NULL_ARGUMENT, "path: is NULL");
    if (!prefix) prefix = "";
    static const char *const names[QKV_MHA_NUM_PARAMS] = {
        "q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
        "q_proj.bias",   "k_proj.bias",   "v_proj.bias",   "o_proj.bias"};
    char full[QKV_MHA_NUM_PARAMS][512];
    const char *ptr[QKV_MHA_NUM_PARAMS];
    qkv_array arr[QKV_MHA_NUM_PARAMS];
    int n = 0;
    for (int i = 0; i < QKV_MHA_NUM_PARAMS; i++) {
        if (!m->param[i]) continue;
        int w = snprintf(full[n], sizeof full[n], "%s%s", prefix, names[i]);
        if (w < 0 || (size_t)w >= sizeof full[n])
            return qkv_fail(QKV_ERR_INVALID_ARGUMENT, "prefix: '%s' is too long", prefix);
        ptr[n] = full[n];
        memset(&arr[n], 0, sizeof arr[n]);
        arr[n].data = m->param[i];
        arr[n].dtype = m->dtype[i];
        if (i >= QKV_MHA_BQ) {
            arr[n].ndim = 1;
            arr[n].shape[0] = m->cols[i];
        } else {
            arr[n].ndim = 2;
            arr[n].shape[0] = m->rows[i];
            arr[n].shape[1] = m->cols[i];
        }
        n++;
    }
    return qkv_safetensors_write(path, n, ptr, arr);
}
