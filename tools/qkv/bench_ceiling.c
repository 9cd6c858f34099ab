/* What the machine does at its best, measured in the same process as the
 * cases: an SGEMM of the system BLAS (found at run time with dlopen, so
 * the tool never depends on one) and a large memory copy on as many
 * threads as the cases use. The FMA peak is in bench_fma.c. */
#define _XOPEN_SOURCE 700
#include "bench.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ the BLAS */

void blas_open(blas *b, int threads)
{
    static const char *libs[] = {"libopenblas.so.0", "libopenblas.so", "libblas.so.3"};
    memset(b, 0, sizeof *b);
    for (size_t i = 0; i < sizeof libs / sizeof libs[0] && !b->sgemm; i++) {
        void *h = dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        bench_sgemm_fn f;
        *(void **)&f = dlsym(h, "cblas_sgemm");
        if (!f) {
            dlclose(h);
            continue;
        }
        void (*set_threads)(int);
        *(void **)&set_threads = dlsym(h, "openblas_set_num_threads");
        if (set_threads) set_threads(threads);
        char *(*config)(void);
        *(void **)&config = dlsym(h, "openblas_get_config");
        snprintf(b->name, sizeof b->name, "%s%s%s", libs[i], config ? " " : "",
                 config ? config() : "");
        b->lib = h;
        b->sgemm = f;
    }
}

void blas_close(blas *b)
{
    if (b->lib) dlclose(b->lib);
}

int run_blas_gemm(void *vctx)
{
    gemm_ctx *g = vctx;
    /* CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112. */
    g->b->sgemm(101, g->ta ? 112 : 111, g->tb ? 112 : 111, g->m, g->n, g->k, 1.0f, g->a,
                g->ta ? g->m : g->k, g->bm, g->tb ? g->k : g->n, 0.0f, g->c, g->n);
    return 1;
}

int gemm_alloc(gemm_ctx *g)
{
    const size_t m = (size_t)g->m, n = (size_t)g->n, k = (size_t)g->k;
    g->a = qkv_alloc(m * k * sizeof(float));
    g->bm = qkv_alloc(n * k * sizeof(float));
    g->c = qkv_alloc(m * n * sizeof(float));
    if (!g->a || !g->bm || !g->c) return 0;
    for (size_t i = 0; i < m * k; i++) g->a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < n * k; i++) g->bm[i] = (float)(i % 5) * 0.1f;
    return 1;
}

void gemm_free(gemm_ctx *g)
{
    qkv_context_free(g->ctx);
    qkv_free(g->a);
    qkv_free(g->bm);
    qkv_free(g->c);
}

double sgemm_ceiling(const blas *b, int m, int n, int k)
{
    if (!b->sgemm) return 0;
    gemm_ctx g = {b, m, n, k, 0, 1, NULL, NULL, NULL, NULL};
    double gf = 0;
    if (gemm_alloc(&g)) {
        double t = bench_time_best(run_blas_gemm, &g);
        if (t > 0) gf = 2.0 * m * n * k / t / 1e9;
    }
    gemm_free(&g);
    return gf;
}

/* ------------------------------------------------------------ the copy */

typedef struct copy_slice {
    const copy_ctx *c;
    int t;
} copy_slice;

static void *copy_one(void *arg)
{
    const copy_slice *s = arg;
    const size_t from = s->c->n / (size_t)s->c->threads * (size_t)s->t;
    const size_t to = s->t + 1 == s->c->threads ? s->c->n : from + s->c->n / (size_t)s->c->threads;
    memcpy(s->c->dst + from, s->c->src + from, to - from);
    return NULL;
}

/* Each thread copies its share of the buffer, as attention's threads each
 * read their share of K and V. */
int run_copy(void *vctx)
{
    copy_ctx *c = vctx;
    pthread_t th[1024];
    copy_slice sl[1024];
    int started[1024] = {0};
    for (int t = 0; t < c->threads; t++) sl[t] = (copy_slice){c, t};
    for (int t = 1; t < c->threads; t++)
        started[t] = pthread_create(&th[t], NULL, copy_one, &sl[t]) == 0;
    copy_one(&sl[0]);
    for (int t = 1; t < c->threads; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            copy_one(&sl[t]);
    }
    return 1;
}

int copy_alloc(copy_ctx *c, int threads)
{
    *c = (copy_ctx){NULL, NULL, (size_t)256 << 20,
                    threads < 1 ? 1 : threads > 1024 ? 1024 : threads};
    c->src = qkv_alloc(c->n);
    c->dst = qkv_alloc(c->n);
    if (!c->src || !c->dst) return 0;
    memset(c->src, 1, c->n);
    memset(c->dst, 2, c->n);
    return 1;
}

void copy_free(copy_ctx *c)
{
    qkv_free(c->src);
    qkv_free(c->dst);
}

double copy_gbps_of(const copy_ctx *c, double t) { return 2.0 * (double)c->n / t / 1e9; }

double copy_ceiling(int threads)
{
    copy_ctx c;
    double gbps = 0;
    if (copy_alloc(&c, threads)) {
        double t = bench_time_best(run_copy, &c);
        if (t > 0) gbps = copy_gbps_of(&c, t);
    }
    copy_free(&c);
    return gbps;
}

/* ------------------------------------------------------------ memory */

const char *thp_policy(char *buf, size_t size)
{
    char line[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        if (!fgets(line, sizeof line, f)) line[0] = '\0';
        fclose(f);
    }
    const char *open = strchr(line, '['), *close = open ? strchr(open, ']') : NULL;
    if (!close || (size_t)(close - open - 1) >= size) return "unknown";
    memcpy(buf, open + 1, (size_t)(close - open - 1));
    buf[close - open - 1] = '\0';
    return buf;
}
