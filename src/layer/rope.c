/* Rotary position embedding (qkv.h, qkv_rope): each pair of a head's dims
 * turned by an angle that grows with the token's position and shrinks
 * along the pairs. The angles are computed in double once per row and
 * shared by all heads of that row. */
#include "layer/mha.h"

#include "common.h"

#include <math.h>
#include <stdlib.h>

qkv_status qkv_rope_apply(const qkv_mha_config *cfg, float *rows, int64_t n, int64_t row_stride,
                          int64_t heads, int64_t pos0, int inverse)
{
    if (cfg->rope == QKV_ROPE_NONE || n == 0) return QKV_OK;
    const int64_t E = cfg->head_dim, half = E / 2;
    /* Pair i of the interleaved style is dims (2i, 2i+1); of the half style
     * (i, i + E/2). */
    const int64_t step = cfg->rope == QKV_ROPE_INTERLEAVED ? 2 : 1;
    const int64_t other = cfg->rope == QKV_ROPE_INTERLEAVED ? 1 : half;
    double *freq = malloc((size_t)half * 3 * sizeof(double));
    if (!freq) return qkv_fail(QKV_ERR_OUT_OF_MEMORY, "layer: RoPE table does not fit in memory");
    double *cs = freq + half, *sn = freq + 2 * half;
    for (int64_t i = 0; i < half; i++) freq[i] = pow(cfg->rope_base, -2.0 * (double)i / (double)E);
    for (int64_t r = 0; r < n; r++) {
        for (int64_t i = 0; i < half; i++) {
            double a = (double)(pos0 + r) * freq[i];
            cs[i] = cos(a);
            sn[i] = inverse ? -sin(a) : sin(a);
        }
        for (int64_t h = 0; h < heads; h++) {
            float *x = rows + r * row_stride + h * E;
            for (int64_t i = 0; i < half; i++) {
                float *pa = x + i * step, *pb = pa + other;
                float xa = *pa, xb = *pb, c = (float)cs[i], s = (float)sn[i];
                *pa = xa * c - xb * s;
                *pb = xa * s + xb * c;
            }
        }
    }
    free(freq);
    return QKV_OK;
}
