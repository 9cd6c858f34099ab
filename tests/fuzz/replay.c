/* fuzz_<format>_replay CORPUS_DIR N, one program per harness: runs the
 * harness over every file in the corpus, then over N mutations of them from a fixed-seed PRNG, so that the
 * harness runs in ctest with any compiler and no libFuzzer. Deterministic:
 * the same N gives the same inputs. A failure is a crash (an abort in the
 * harness, or a sanitizer report), so this only ever exits 0 on its own. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUT 4096 /* mutations never grow an input past this */

typedef struct input {
    uint8_t *data;
    size_t size;
} input;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    /* xorshift64 */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static size_t below(size_t n) { return n ? (size_t)(rng() % n) : 0; }

/* Runs one input from an exact-size heap copy, so that the sanitizers see
 * any read past its end. */
static void run(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) {
        fprintf(stderr, "fuzz replay: out of memory\n");
        exit(2);
    }
    if (size)
        memcpy(copy, data, size);
    LLVMFuzzerTestOneInput(copy, size);
    free(copy);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads every regular file of dir, in name order for determinism. */
static size_t load_corpus(const char *dir, input *out, size_t cap)
{
    char *names[256], path[4096];
    size_t n = 0, loaded = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d)
        return 0;
    while ((e = readdir(d)) && n < sizeof names / sizeof names[0])
        if (e->d_name[0] != '.' && (names[n] = malloc(strlen(e->d_name) + 1)))
            strcpy(names[n++], e->d_name);
    closedir(d);
    qsort(names, n, sizeof names[0], by_name);
    for (size_t i = 0; i < n; i++) {
        FILE *f;
        size_t got;
        uint8_t *buf = malloc(MAX_INPUT);
        if (buf && loaded < cap &&
            snprintf(path, sizeof path, "%s/%s", dir, names[i]) < (int)sizeof path &&
            (f = fopen(path, "rb"))) {
            got = fread(buf, 1, MAX_INPUT, f);
            fclose(f);
            out[loaded].data = buf;
            out[loaded++].size = got;
            buf = NULL;
        }
        free(buf);
        free(names[i]);
    }
    return loaded;
}

/* Numbers that sit on the edges the header parser checks. */
static const char *const numbers[] = {
    "0", "1", "2", "7", "10", "255", "65535", "65536", "2147483647", "2147483648",
    "4294967296", "1099511627776", "9223372036854775807", "9223372036854775808",
    "18446744073709551616", "99999999999999999999", "-1", "00", "1L", "1.5", "",
};

/* Replaces the run of digits around a random digit within the header with
 * one of the edge numbers. */
static void overwrite_digits(uint8_t *buf, size_t *size, size_t cap)
{
    size_t limit = *size < 256 ? *size : 256, start, end, len;
    const char *num = numbers[below(sizeof numbers / sizeof numbers[0])];
    size_t tries = 0;
    do
        start = below(limit);
    while (limit && !(buf[start] >= '0' && buf[start] <= '9') && ++tries < 64);
    if (!limit || !(buf[start] >= '0' && buf[start] <= '9'))
        return;
    for (end = start; end < *size && buf[end] >= '0' && buf[end] <= '9'; end++)
        ;
    while (start > 0 && buf[start - 1] >= '0' && buf[start - 1] <= '9')
        start--;
    len = strlen(num);
    if (*size - (end - start) + len > cap)
        return;
    memmove(buf + start + len, buf + end, *size - end);
    memcpy(buf + start, num, len);
    *size = *size - (end - start) + len;
}

/* One random edit of the size bytes at buf (room for cap). */
static void mutate(uint8_t *buf, size_t *size, size_t cap, const input *corpus,
                   size_t ncorpus)
{
    static const uint8_t special[] = {0,   0xff, 0x7f, 0x80, '(',  ')',  ',', '\'',
                                      '"', '\n', ' ',  '{',  '}',  ':',  '<', '>',
                                      '|', 'L',  '0',  '9',  0x93, '\\', '-', '.'};
    size_t pos = below(*size + 1), k;
    switch (rng() % 9) {
    case 0: /* flip a bit */
        if (*size)
            buf[below(*size)] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* set a byte to one the parser cares about */
        if (*size)
            buf[below(*size)] = special[below(sizeof special)];
        break;
    case 2: /* insert a few bytes */
        k = 1 + below(8);
        if (*size + k <= cap) {
            memmove(buf + pos + k, buf + pos, *size - pos);
            for (size_t i = 0; i < k; i++)
                buf[pos + i] = rng() & 1 ? special[below(sizeof special)] : (uint8_t)rng();
            *size += k;
        }
        break;
    case 3: /* delete a range */
        k = below(*size - pos + 1);
        k = k > 16 && rng() % 4 ? 1 + below(16) : k;
        memmove(buf + pos, buf + pos + k, *size - pos - k);
        *size -= k;
        break;
    case 4: /* truncate */
        *size = pos;
        break;
    case 5: { /* splice: this input's head, another's tail */
        const input *o = ncorpus ? &corpus[below(ncorpus)] : NULL;
        size_t from = o ? below(o->size + 1) : 0;
        if (o && pos + (o->size - from) <= cap) {
            memcpy(buf + pos, o->data + from, o->size - from);
            *size = pos + (o->size - from);
        }
        break;
    }
    case 6:
        overwrite_digits(buf, size, cap);
        break;
    case 7: /* the header length field */
        if (*size >= 12)
            buf[8 + below(4)] = (uint8_t)rng();
        break;
    default: /* duplicate a chunk elsewhere */
        k = below(*size - pos + 1) % 32;
        if (*size + k <= cap) {
            size_t to = below(*size + 1);
            uint8_t tmp[32];
            memcpy(tmp, buf + pos, k);
            memmove(buf + to + k, buf + to, *size - to);
            memcpy(buf + to, tmp, k);
            *size += k;
        }
        break;
    }
}

/* Edits only the header text, then fixes the length field to match, so
 * that the edits reach the dict parser instead of failing the length check. */
static void mutate_header(uint8_t *buf, size_t *size)
{
    static uint8_t text[MAX_INPUT];
    size_t pre, hlen, tlen, dlen;
    if (*size < 12 || memcmp(buf, "\x93NUMPY", 6) != 0)
        return;
    pre = buf[6] == 1 ? 10 : 12;
    hlen = pre == 10 ? (size_t)(buf[8] | buf[9] << 8)
                     : (size_t)(buf[8] | buf[9] << 8 | buf[10] << 16) | (size_t)buf[11] << 24;
    if (hlen > *size - pre)
        return;
    tlen = hlen;
    dlen = *size - pre - hlen;
    memcpy(text, buf + pre, tlen);
    for (int rounds = 1 + (int)below(3); rounds--;)
        mutate(text, &tlen, MAX_INPUT - pre - dlen, NULL, 0);
    if (pre == 10 && tlen > 0xffff)
        return;
    memmove(buf + pre + tlen, buf + pre + hlen, dlen);
    memcpy(buf + pre, text, tlen);
    for (size_t i = 0; i < pre - 8; i++)
        buf[8 + i] = (uint8_t)(tlen >> (8 * i));
    *size = pre + tlen + dlen;
}

int main(int argc, char **argv)
{
    static input corpus[256];
    static uint8_t buf[MAX_INPUT];
    size_t ncorpus, size;
    long n;
    long long inputs = 0;
    const char *prog = argc > 0 && strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1
                       : argc > 0                      ? argv[0]
                                                       : "fuzz_replay";
    if (argc != 3 || (n = strtol(argv[2], NULL, 10)) < 0) {
        fprintf(stderr, "usage: %s CORPUS_DIR N\n", prog);
        return 2;
    }
    ncorpus = load_corpus(argv[1], corpus, sizeof corpus / sizeof corpus[0]);
    if (ncorpus == 0) {
        fprintf(stderr, "%s: no corpus files in %s\n", prog, argv[1]);
        return 2;
    }
    run(NULL, 0);
    inputs++;
    for (size_t i = 0; i < ncorpus; i++, inputs++)
        run(corpus[i].data, corpus[i].size);
    for (long i = 0; i < n; i++, inputs++) {
        const input *seed = &corpus[below(ncorpus)];
        int rounds = 1 + (int)below(4);
        memcpy(buf, seed->data, seed->size);
        size = seed->size;
        if (rng() % 2)
            mutate_header(buf, &size);
        else
            while (rounds--)
                mutate(buf, &size, MAX_INPUT, corpus, ncorpus);
        run(buf, size);
    }
    for (size_t i = 0; i < ncorpus; i++)
        free(corpus[i].data);
    printf("%s: %lld inputs, 0 crashes\n", prog, inputs);
    return 0;
}
