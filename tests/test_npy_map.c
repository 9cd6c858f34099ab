/* Tests of the mapped .npy files, qkv_npy_map and qkv_npy_create, against
 * what the copying functions do: qkv_npy_map must give qkv_npy_read's
 * result (or its very error) for every file we hold and for streams, map
 * only what the header says it maps, and never write to the file;
 * qkv_npy_create must leave the bytes qkv_npy_write writes. Whether a file
 * is mapped is read from /proc/self/maps (Linux), which names it. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "qkv.h"
#include "stream.h"
#include "test.h"
#include "util.h"

#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tmpdir; /* test_tmpdir(), removed by test_rmdir() */

static void tmp_path(char *buf, size_t n, const char *name)
{
    if (snprintf(buf, n, "%s/%s", tmpdir, name) >= (int)n)
        buf[0] = '\0'; /* too long: an empty path fails loudly */
}

/* ------------------------------------------------------------- helpers */

#if defined(__linux__)
#define HAVE_PROC_MAPS 1
#endif

/* Lines of /proc/self/maps that contain `name` (all lines when NULL); -1
 * where there is no such file. */
static int maps_lines(const char *name)
{
#if defined(HAVE_PROC_MAPS)
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096 + 256];
    int n = 0;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!name || strstr(line, name)) n++;
    fclose(f);
    return n;
#else
    (void)name;
    return -1;
#endif
}

/* How many mappings of the file at path this process holds (the maps
 * file names it by its canonical absolute path). */
static int mapped_count(const char *path)
{
    char real[PATH_MAX];
    if (!realpath(path, real)) return -1;
    return maps_lines(real);
}

/* Does the file at path hold exactly the len bytes at want? Read through
 * a buffer on the stack, so that counting mappings around it is not
 * disturbed by a large allocation (the sanitizers' allocator maps those). */
static int file_holds(const char *path, const unsigned char *want, size_t len)
{
    unsigned char buf[1 << 14];
    FILE *f = fopen(path, "rb");
    size_t at = 0, got;
    int same = f != NULL;
    while (same && (got = fread(buf, 1, sizeof buf, f)) > 0) {
        same = at + got <= len && memcmp(buf, want + at, got) == 0;
        at += got;
    }
    if (f) fclose(f);
    return same && at == len;
}

/* qkv_npy_write of the floats at x in this shape. */
static qkv_status write_f32(const char *path, const float *x, int ndim, const int64_t *shape)
{
    qkv_array a = {0};
    a.dtype = QKV_DTYPE_F32;
    a.ndim = ndim;
    memcpy(a.shape, shape, (size_t)ndim * sizeof shape[0]);
    a.data = (void *)x;
    return qkv_npy_write(path, &a);
}

static int64_t nbytes_of(const qkv_array *a)
{
    return qkv_array_numel(a) * (int64_t)qkv_dtype_size(a->dtype);
}

/* Reads path with qkv_npy_read and with qkv_npy_map and checks they agree:
 * the same status, and then the same dtype, shape and bytes, or the same
 * detail and a zeroed array. Returns qkv_npy_read's status. */
static qkv_status check_same(const char *path)
{
    qkv_array r, m;
    qkv_status sr = qkv_npy_read(path, &r);
    char dr[1024];
    snprintf(dr, sizeof dr, "%s", qkv_error_detail());
    qkv_status sm = qkv_npy_map(path, &m);
    const char *dm = qkv_error_detail();
    int same = sr == sm;
    if (same && sr == QKV_OK) {
        same = m.dtype == r.dtype && m.ndim == r.ndim && m.data != NULL &&
               memcmp(m.shape, r.shape, sizeof m.shape) == 0 &&
               memcmp(m.data, r.data, (size_t)nbytes_of(&r)) == 0 &&
               (uintptr_t)m.data % qkv_dtype_size(m.dtype) == 0;
    } else if (same) {
        same = strcmp(dr, dm) == 0 && test_array_zeroed(&m);
    }
    if (!same)
        fprintf(stderr, "check_same %s:\n  read: %s '%s'\n  map:  %s '%s'\n", path,
                qkv_status_string(sr), dr, qkv_status_string(sm), dm);
    CHECK(same);
    qkv_array_free(&r);
    qkv_array_free(&m);
    return sr;
}

/* Copies of the file at src cut to several lengths and grown by a byte,
 * each checked with check_same: every way a header or data can run short
 * must fail as it does when read. */
static void check_cut_copies(const char *src)
{
    size_t len = 0;
    unsigned char *b = test_read_file(src, &len);
    CHECK(b != NULL);
    if (!b) return;
    char cut[256];
    tmp_path(cut, sizeof cut, "cut.npy");
    size_t lens[32];
    int n = 0;
    for (size_t l = 0; l <= 13 && l < len; l++) lens[n++] = l;
    const size_t more[] = {63, 64, 65, 127, 128, 129, len / 2, len - 1};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        if (more[i] > 13 && more[i] < len) lens[n++] = more[i];
    for (int i = 0; i < n; i++) {
        CHECK(test_write_file(cut, b, lens[i]));
        check_same(cut);
    }
    /* One byte too many. */
    unsigned char *grown = test_malloc(len + 1);
    memcpy(grown, b, len);
    grown[len] = 0;
    CHECK(test_write_file(cut, grown, len + 1));
    check_same(cut);
    free(grown);
    free(b);
    remove(cut);
}

/* Every regular file under dir (walked recursively); the .npy files among
 * them also cut short. Returns how many files it checked and how many of
 * them qkv_npy_read took. */
static void walk(const char *dir, int *files, int *good)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    CHECK(d != NULL);
    while (d && (e = readdir(d))) {
        char path[1024];
        struct stat sb;
        if (e->d_name[0] == '.' ||
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            stat(path, &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            walk(path, files, good);
            continue;
        }
        if (!S_ISREG(sb.st_mode)) continue;
        (*files)++;
        if (check_same(path) == QKV_OK) (*good)++;
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".npy") == 0 && sb.st_size < (1 << 20))
            check_cut_copies(path);
    }
    if (d) closedir(d);
}

/* A .npy image of version 1.0 whose preamble and header take exactly
 * `data_at` bytes (a multiple of 64 in numpy.save's files, not here), then
 * dlen data bytes i * 7 + 1. 0 when it does not fit. */
static size_t make_at(unsigned char *buf, size_t cap, const char *text, size_t data_at,
                      size_t dlen)
{
    size_t tl = strlen(text);
    if (data_at < 10 + tl + 1 || data_at + dlen > cap) return 0;
    size_t hlen = data_at - 10;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)hlen;
    buf[9] = (unsigned char)(hlen >> 8);
    memcpy(buf + 10, text, tl);
    memset(buf + 10 + tl, ' ', hlen - tl - 1);
    buf[data_at - 1] = '\n';
    for (size_t i = 0; i < dlen; i++) buf[data_at + i] = (unsigned char)(i * 7 + 1);
    return data_at + dlen;
}

/* ------------------------------------------------ qkv_npy_map: results */

static void test_same_as_read(void)
{
    int files = 0, good = 0;
    walk(QKV_TEST_DATA, &files, &good);
    walk(QKV_TEST_DATA "/../fuzz/corpus/npy", &files, &good);
    printf("  qkv_npy_map = qkv_npy_read on %d files (%d of them good) and their cut copies\n",
           files, good);
    CHECK(files >= 100 && good >= 100);

    /* What cannot be opened, or is not a file. */
    char p[256];
    tmp_path(p, sizeof p, "absent.npy");
    CHECK(check_same(p) == QKV_ERR_IO);
    CHECK(check_same(tmpdir) == QKV_ERR_IO);
    CHECK(check_same("/dev/null") == QKV_ERR_FORMAT);
    CHECK(check_same("/dev/zero") == QKV_ERR_FORMAT);
    CHECK(strstr(qkv_error_detail(), "not a .npy file") != NULL);
    if (geteuid() != 0) {
        unsigned char img[256];
        size_t n = make_at(img, sizeof img,
                           "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 128, 8);
        tmp_path(p, sizeof p, "unreadable.npy");
        CHECK(test_write_file(p, img, n) && chmod(p, 0200) == 0);
        CHECK(check_same(p) == QKV_ERR_IO);
        remove(p);
    } else {
        printf("  (running as root: no check of a file without read permission)\n");
    }

    qkv_array a;
    CHECK(qkv_npy_map(NULL, &a) == QKV_ERR_NULL_ARGUMENT && test_array_zeroed(&a));
    CHECK(qkv_npy_map(p, NULL) == QKV_ERR_NULL_ARGUMENT);
}

/* Data that starts where numpy.save never puts it: aligned for the dtype
 * (mapped) or not (read into aligned memory); either way the values. */
static void test_alignment(void)
{
    static const struct {
        const char *descr;
        qkv_dtype dtype;
        size_t data_at;
        int mapped; /* the data offset is a multiple of the element size */
    } cases[] = {
        {"<f4", QKV_DTYPE_F32, 70, 0}, {"<f4", QKV_DTYPE_F32, 71, 0},
        {"<f4", QKV_DTYPE_F32, 72, 1}, {"<f8", QKV_DTYPE_F64, 76, 0},
        {"<f8", QKV_DTYPE_F64, 80, 1}, {"<f2", QKV_DTYPE_F16, 69, 0},
        {"<f2", QKV_DTYPE_F16, 70, 1}, {"<i8", QKV_DTYPE_I64, 100, 0},
        {"<i4", QKV_DTYPE_I32, 100, 1}, {"|b1", QKV_DTYPE_BOOL, 69, 1},
        {"<f4", QKV_DTYPE_F32, 4094, 0}, {"<f4", QKV_DTYPE_F32, 4100, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char text[128], p[256];
        const size_t es = qkv_dtype_size(cases[c].dtype), n = 5;
        snprintf(text, sizeof text, "{'descr': '%s', 'fortran_order': False, 'shape': (%zu,), }",
                 cases[c].descr, n);
        unsigned char img[8192];
        size_t len = make_at(img, sizeof img, text, cases[c].data_at, n * es);
        if (cases[c].dtype == QKV_DTYPE_BOOL)
            for (size_t i = 0; i < n; i++) img[cases[c].data_at + i] = (unsigned char)(i & 1);
        tmp_path(p, sizeof p, "aligned.npy");
        CHECK(len > 0 && test_write_file(p, img, len));
        qkv_array a;
        qkv_status st = qkv_npy_map(p, &a);
        if (st != QKV_OK)
            fprintf(stderr, "alignment case %zu: %s\n", c, qkv_error_detail());
        CHECK(st == QKV_OK);
        if (st != QKV_OK) continue;
        CHECK(a.dtype == cases[c].dtype && a.ndim == 1 && a.shape[0] == (int64_t)n);
        CHECK((uintptr_t)a.data % es == 0);
        CHECK(memcmp(a.data, img + cases[c].data_at, n * es) == 0);
        const int held = mapped_count(p);
        if (held >= 0) {
            if (held != cases[c].mapped)
                fprintf(stderr, "alignment case %zu: data at %zu, %d mappings, want %d\n", c,
                        cases[c].data_at, held, cases[c].mapped);
            CHECK(held == cases[c].mapped);
        }
        qkv_array_free(&a);
        CHECK(mapped_count(p) <= 0);
        check_same(p);
        remove(p);
    }
}

/* Empty arrays have no data to map; a good file is mapped, once. */
static void test_what_is_mapped(void)
{
    if (maps_lines(NULL) < 0) {
        printf("  (no /proc/self/maps: which files are mapped is not checked)\n");
        return;
    }
    char p[256];
    tmp_path(p, sizeof p, "what.npy");
    const int64_t s0[3] = {2, 0, 3}, s1[2] = {64, 64};
    float *x = test_malloc(64 * 64 * sizeof(float));
    for (int i = 0; i < 64 * 64; i++) x[i] = (float)i;
    qkv_array a;
    CHECK(write_f32(p, x, 3, s0) == QKV_OK);
    CHECK(qkv_npy_map(p, &a) == QKV_OK && a.data != NULL && qkv_array_numel(&a) == 0);
    CHECK(mapped_count(p) == 0);
    qkv_array_free(&a);

    CHECK(write_f32(p, x, 2, s1) == QKV_OK);
    CHECK(qkv_npy_map(p, &a) == QKV_OK);
    CHECK(mapped_count(p) == 1);
    CHECK(a.data && memcmp(a.data, x, sizeof(float) * 64 * 64) == 0);
    qkv_free(a.data); /* the other way to free it */
    CHECK(mapped_count(p) == 0);
    free(x);
    remove(p);
}

/* ------------------------------------- streams: read, never mapped */

static char fifo[160];

typedef struct fifo_case {
    const unsigned char *img;
    size_t len;
    int zeros;
} fifo_case;

/* The FIFO fed twice, once for each reader: the same answer, and no
 * mapping of it. */
static int map_fifo(const void *arg)
{
    const fifo_case *c = arg;
    int before = test_failures;
    qkv_array r, m;
    pid_t pid = stream_feed(fifo, c->img, c->len, c->zeros);
    qkv_status sr = qkv_npy_read(fifo, &r);
    char dr[1024];
    snprintf(dr, sizeof dr, "%s", qkv_error_detail());
    stream_reap(pid);
    pid = stream_feed(fifo, c->img, c->len, c->zeros);
    qkv_status sm = qkv_npy_map(fifo, &m);
    stream_reap(pid);
    if (sr != sm || (sr != QKV_OK && strcmp(dr, qkv_error_detail()) != 0))
        fprintf(stderr, "map_fifo: read %s '%s', map %s '%s'\n", qkv_status_string(sr), dr,
                qkv_status_string(sm), qkv_error_detail());
    CHECK(sr == sm);
    if (sr == QKV_OK && sm == QKV_OK) {
        CHECK(m.dtype == r.dtype && m.ndim == r.ndim &&
              memcmp(m.shape, r.shape, sizeof m.shape) == 0);
        CHECK(memcmp(m.data, r.data, (size_t)nbytes_of(&r)) == 0);
        CHECK(mapped_count(fifo) <= 0);
    } else if (sr != QKV_OK) {
        CHECK(strcmp(dr, qkv_error_detail()) == 0);
        CHECK(test_array_zeroed(&m));
    }
    qkv_array_free(&r);
    qkv_array_free(&m);
    return test_failures - before;
}

static void test_fifo(void)
{
    unsigned char img[256];
    size_t n = make_at(img, sizeof img - 1,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 128, 24);
    img[n] = 0;
    tmp_path(fifo, sizeof fifo, "in.fifo");
    CHECK(n > 0 && mkfifo(fifo, 0600) == 0);
    const fifo_case cases[] = {
        {img, n, 0},     /* good */
        {img, n, 1},     /* then endless zeros */
        {img, n + 1, 0}, /* one byte too many */
        {img, n - 1, 0}, /* one too few */
        {img, 40, 0},    /* the header cut */
        {img, 0, 0},     /* nothing */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int bad = stream_bounded(map_fifo, &cases[i]);
        if (bad) fprintf(stderr, "test_fifo: case %zu failed\n", i);
        CHECK(bad == 0);
    }
    remove(fifo);
}

/* ------------------------------ a mapped array: private, freed in full */

static void test_private_and_freed(void)
{
    char p[256];
    tmp_path(p, sizeof p, "private.npy");
    const int64_t n = 3 * 1024 * 1024 / 4 + 5; /* pages and a tail */
    float *x = test_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = (float)(i % 1000) - 500.0f;
    CHECK(write_f32(p, x, 1, &n) == QKV_OK);
    size_t len0 = 0;
    unsigned char *before = test_read_file(p, &len0);

    /* One cycle first, so that what the C library allocates once (the
     * registry's first node, stdio buffers) is in place before counting. */
    qkv_array a;
    CHECK(qkv_npy_map(p, &a) == QKV_OK);
    qkv_array_free(&a);
    const int lines = maps_lines(NULL);

    CHECK(qkv_npy_map(p, &a) == QKV_OK);
    CHECK(a.data && memcmp(a.data, x, (size_t)n * sizeof(float)) == 0);
    memset(a.data, 0xab, (size_t)n * sizeof(float));
    /* The file is as it was, to a second reader and to a second map. */
    CHECK(before && file_holds(p, before, len0));
    qkv_array b;
    CHECK(qkv_npy_map(p, &b) == QKV_OK);
    CHECK(b.data && memcmp(b.data, x, (size_t)n * sizeof(float)) == 0);
    qkv_array_free(&b);

    /* Freeing leaves an earlier error's detail as it was. */
    qkv_array none;
    char absent[256], detail[1024];
    tmp_path(absent, sizeof absent, "absent.npy");
    CHECK(qkv_npy_read(absent, &none) == QKV_ERR_IO);
    snprintf(detail, sizeof detail, "%s", qkv_error_detail());
    CHECK(detail[0] != '\0');
    qkv_array_free(&a);
    CHECK(test_array_zeroed(&a));
    CHECK(strcmp(qkv_error_detail(), detail) == 0);
    qkv_array_free(&a); /* a second free of the zeroed struct: a no-op */

    if (lines >= 0) {
        const int now = maps_lines(NULL);
        if (now != lines) fprintf(stderr, "mappings: %d before, %d after\n", lines, now);
        CHECK(now == lines);
        CHECK(mapped_count(p) == 0);
    } else {
        printf("  (no /proc/self/maps: the unmapping is not counted)\n");
    }
    CHECK(before && file_holds(p, before, len0));
    free(before);
    free(x);
    remove(p);
}

/* Several threads mapping and freeing the same file at once: each sees
 * the data, and every mapping is gone at the end. */
typedef struct thread_arg {
    const char *path;
    const float *want;
    int64_t n;
    int bad;
} thread_arg;

static void *map_many(void *p)
{
    thread_arg *t = p;
    for (int i = 0; i < 40; i++) {
        qkv_array a;
        if (qkv_npy_map(t->path, &a) != QKV_OK ||
            memcmp(a.data, t->want, (size_t)t->n * sizeof(float)) != 0)
            t->bad++;
        ((float *)a.data)[0] = -1.0f; /* private: the others never see it */
        qkv_array_free(&a);
    }
    return NULL;
}

static void test_threads(void)
{
    char p[256];
    tmp_path(p, sizeof p, "threads.npy");
    const int64_t n = 20000;
    float *x = test_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = (float)i;
    CHECK(write_f32(p, x, 1, &n) == QKV_OK);
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){p, x, n, 0};
        CHECK(pthread_create(&th[i], NULL, map_many, &args[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].bad == 0);
    }
    CHECK(mapped_count(p) <= 0);
    free(x);
    remove(p);
}

/* ---------------------------------------------------- qkv_npy_create */

static void fill_pattern(void *p, size_t n, qkv_dtype dt, unsigned seed)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = dt == QKV_DTYPE_BOOL ? (unsigned char)((i * 5 + seed) % 3 == 0)
                                    : (unsigned char)(i * 131 + seed * 17 + 3);
}

static int all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

static int same_file(const char *a, const char *b)
{
    size_t la = 0, lb = 0;
    unsigned char *x = test_read_file(a, &la), *y = test_read_file(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

static void test_create_bytes(void)
{
    static const qkv_dtype dtypes[] = {QKV_DTYPE_F32, QKV_DTYPE_F64,  QKV_DTYPE_F16,
                                       QKV_DTYPE_BOOL, QKV_DTYPE_I32, QKV_DTYPE_I64};
    static const struct {
        int ndim;
        int64_t shape[4];
    } shapes[] = {
        {0, {0}},           {1, {5}},          {1, {1}},          {2, {3, 7}},
        {3, {2, 3, 5}},     {4, {2, 1, 3, 4}}, {4, {1, 1, 1, 1}}, {3, {2, 0, 3}},
        {1, {0}},           {2, {1000, 1100}}, /* 4 MiB or more: many pages */
    };
    char made[256], written[256];
    tmp_path(made, sizeof made, "made.npy");
    tmp_path(written, sizeof written, "written.npy");
    unsigned char junk[100000];
    memset(junk, 'j', sizeof junk);
    int cases = 0;
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const qkv_dtype dt = dtypes[d];
            const int nd = shapes[s].ndim;
            qkv_array want = {0};
            want.dtype = dt;
            want.ndim = nd;
            memcpy(want.shape, shapes[s].shape, sizeof shapes[s].shape);
            const size_t nb = (size_t)nbytes_of(&want);
            want.data = test_malloc(nb ? nb : 1);
            fill_pattern(want.data, nb, dt, (unsigned)(d * 16 + s));
            CHECK(qkv_npy_write(written, &want) == QKV_OK);

            /* Over a longer file, which must not show through. */
            CHECK(test_write_file(made, junk, sizeof junk));
            qkv_array a;
            qkv_status st = qkv_npy_create(made, dt, nd, shapes[s].shape, &a);
            if (st != QKV_OK)
                fprintf(stderr, "create %s rank %d: %s\n", qkv_dtype_name(dt), nd,
                        qkv_error_detail());
            CHECK(st == QKV_OK);
            if (st != QKV_OK) {
                free(want.data);
                continue;
            }
            cases++;
            CHECK(a.dtype == dt && a.ndim == nd && a.data != NULL);
            CHECK(test_same_shape(&a, nd, shapes[s].shape));
            CHECK(all_zero(a.data, nb));
            CHECK((uintptr_t)a.data % qkv_dtype_size(dt) == 0);
            struct stat sb;
            size_t wlen = 0;
            unsigned char *wb = test_read_file(written, &wlen);
            /* The whole file's room is there from the start. */
            CHECK(stat(made, &sb) == 0 && (size_t)sb.st_size == wlen);
            if (nb == 0) {
                CHECK(same_file(made, written)); /* written at once */
            } else {
                const int held = mapped_count(made);
                CHECK(held < 0 || held == 1);
                memcpy(a.data, want.data, nb);
                /* Shared: a reader sees the new bytes before any unmap. */
                CHECK(same_file(made, written));
            }
            qkv_array_free(&a);
            CHECK(test_array_zeroed(&a));
            CHECK(mapped_count(made) <= 0);
            if (!same_file(made, written))
                fprintf(stderr, "create %s rank %d: the file differs from qkv_npy_write's\n",
                        qkv_dtype_name(dt), nd);
            CHECK(same_file(made, written));
            /* Read back as any reader would. */
            qkv_array r;
            CHECK(qkv_npy_read(made, &r) == QKV_OK);
            CHECK(r.dtype == dt && test_same_shape(&r, nd, shapes[s].shape));
            CHECK(r.data && memcmp(r.data, want.data, nb) == 0);
            qkv_array_free(&r);
            free(wb);
            free(want.data);
        }
    CHECK(cases == (int)(sizeof dtypes / sizeof dtypes[0] * (sizeof shapes / sizeof shapes[0])));
    remove(made);
    remove(written);
}

/* Shapes and dtypes that qkv_npy_write refuses are refused alike. */
static void test_create_refusals(void)
{
    char p[256];
    tmp_path(p, sizeof p, "refused.npy");
    static const struct {
        qkv_dtype dtype;
        int ndim;
        int64_t shape[3];
    } bad[] = {
        {QKV_DTYPE_BF16, 2, {2, 3}},
        {(qkv_dtype)99, 1, {4}},
        {QKV_DTYPE_F32, -1, {1}},
        {QKV_DTYPE_F32, QKV_ARRAY_MAX_DIMS + 1, {1}},
        {QKV_DTYPE_F32, 2, {3, -1}},
        {QKV_DTYPE_F64, 3, {INT64_MAX / 4, 4, 2}},
        {QKV_DTYPE_F32, 2, {INT64_MAX / 2, 3}},
    };
    int64_t big_shape[QKV_ARRAY_MAX_DIMS + 1];
    for (int i = 0; i <= QKV_ARRAY_MAX_DIMS; i++) big_shape[i] = 1;
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        qkv_array w = {0}, a;
        w.dtype = bad[c].dtype;
        w.ndim = bad[c].ndim;
        memcpy(w.shape, bad[c].shape, sizeof bad[c].shape);
        static char one[64];
        w.data = one;
        qkv_status sw = qkv_npy_write(p, &w);
        const int64_t *sh = bad[c].ndim > 3 ? big_shape : bad[c].shape;
        qkv_status sc = qkv_npy_create(p, bad[c].dtype, bad[c].ndim, sh, &a);
        if (sw == QKV_OK || sc != sw)
            fprintf(stderr, "refusal %zu: write %s, create %s (%s)\n", c, qkv_status_string(sw),
                    qkv_status_string(sc), qkv_error_detail());
        CHECK(sw != QKV_OK && sc == sw);
        CHECK(test_array_zeroed(&a));
        CHECK(test_starts_with(qkv_error_detail(), p));
        if (c == 0) CHECK(sc == QKV_ERR_DTYPE);
    }

    /* Where no file can be made. */
    char nodir[300], notdir[300];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/x.npy", tmpdir);
    tmp_path(notdir, sizeof notdir, "refused.npy/x.npy");
    CHECK(test_write_file(p, "x", 1));
    const char *places[] = {nodir, notdir, "/dev/full"};
    const int64_t s2[2] = {3, 4};
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++) {
        qkv_array a;
        qkv_status st = qkv_npy_create(places[i], QKV_DTYPE_F32, 2, s2, &a);
        if (st != QKV_ERR_IO)
            fprintf(stderr, "create %s: %s '%s'\n", places[i], qkv_status_string(st),
                    qkv_error_detail());
        CHECK(st == QKV_ERR_IO);
        CHECK(test_starts_with(qkv_error_detail(), places[i]));
        CHECK(test_array_zeroed(&a));
        if (st == QKV_OK) qkv_array_free(&a);
    }
    if (geteuid() != 0) {
        char ro[256], in_ro[300];
        tmp_path(ro, sizeof ro, "readonly");
        snprintf(in_ro, sizeof in_ro, "%s/x.npy", ro);
        CHECK(mkdir(ro, 0500) == 0);
        qkv_array a;
        CHECK(qkv_npy_create(in_ro, QKV_DTYPE_F32, 2, s2, &a) == QKV_ERR_IO);
        CHECK(test_starts_with(qkv_error_detail(), in_ro));
        rmdir(ro);
    } else {
        printf("  (running as root: a read-only directory is not checked)\n");
    }

    /* NULL arguments. */
    qkv_array a;
    CHECK(qkv_npy_create(NULL, QKV_DTYPE_F32, 2, s2, &a) == QKV_ERR_NULL_ARGUMENT);
    CHECK(test_array_zeroed(&a));
    CHECK(qkv_npy_create(p, QKV_DTYPE_F32, 2, NULL, &a) == QKV_ERR_NULL_ARGUMENT);
    CHECK(test_array_zeroed(&a));
    CHECK(test_starts_with(qkv_error_detail(), p));
    CHECK(qkv_npy_create(p, QKV_DTYPE_F32, 2, s2, NULL) == QKV_ERR_NULL_ARGUMENT);
    remove(p);
}

/* Under a 1 MiB file size limit, with SIGXFSZ ignored as the qkv tool
 * does: a 16 MiB array is the call's error, not a signal and not a later
 * SIGBUS; a 512 KiB one still fits. Runs in a child, whose exit code is
 * its count of failed checks. */
static void test_create_size_limit(void)
{
    char big[256], small[256];
    tmp_path(big, sizeof big, "big.npy");
    tmp_path(small, sizeof small, "small.npy");
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct rlimit lim = {1 << 20, 1 << 20};
        signal(SIGXFSZ, SIG_IGN);
        alarm(60);
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(90);
        const int64_t s16[3] = {4, 1024, 1024}, s05[2] = {512, 256};
        qkv_array a;
        int bad = 0;
        qkv_status st = qkv_npy_create(big, QKV_DTYPE_F32, 3, s16, &a);
        if (st != QKV_ERR_IO) fprintf(stderr, "16 MiB under a 1 MiB limit: %s\n",
                                      qkv_status_string(st));
        bad += st != QKV_ERR_IO;
        bad += !test_starts_with(qkv_error_detail(), big);
        bad += !test_array_zeroed(&a);
        if (st == QKV_OK) {
            memset(a.data, 1, 16 << 20);
            qkv_array_free(&a);
        }
        st = qkv_npy_create(small, QKV_DTYPE_F32, 2, s05, &a);
        bad += st != QKV_OK;
        if (st == QKV_OK) {
            memset(a.data, 1, 512 * 256 * 4);
            qkv_array_free(&a);
        }
        fflush(NULL);
        _exit(bad);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status))
        fprintf(stderr, "the file size limit child died of signal %d\n", WTERMSIG(status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    remove(big);
    remove(small);
}

int main(void)
{
    tmpdir = test_tmpdir();
    test_same_as_read();
    test_alignment();
    test_what_is_mapped();
    test_fifo();
    test_private_and_freed();
    test_threads();
    test_create_bytes();
    test_create_refusals();
    test_create_size_limit();
    test_rmdir(tmpdir);
    return test_finish("test_npy_map");
}
