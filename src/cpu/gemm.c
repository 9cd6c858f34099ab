/* qkv_sgemm: C = alpha op(A) op(B) + beta C (qkv.h). A plain loop version;
 * the blocked kernel replaces it. */
#include "common.h"

qkv_status qkv_sgemm(qkv_transpose ta, qkv_transpose tb, int64_t m, int64_t n, int64_t k,
                     float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                     float beta, float *c, int64_t ldc, const qkv_gemm_options *opts)
{
    (void)opts;
    qkv_clear_error();
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float acc = 0;
            for (int64_t p = 0; p < k; p++) {
                float x = ta ? a[p * lda + i] : a[i * lda + p];
                float y = tb ? b[j * ldb + p] : b[p * ldb + j];
                acc += x * y;
            }
            float *cij = &c[i * ldc + j];
            *cij = alpha * acc + (beta == 0 ? 0 : beta * *cij);
        }
    return QKV_OK;
}
