/* qkv_alloc: memory for large tensors. Decode reads all of K and V for a
 * few FLOPs a byte, and on 4 KiB pages every 4 KiB of that stream costs a
 * TLB miss (under a hypervisor, a two-level page walk) and restarts the
 * hardware prefetcher; on 2 MiB pages the same read ran 7-10 % faster on
 * our bench machine (BENCHMARKS.md). So a large block is aligned to 2 MiB
 * and, on Linux, marked for transparent huge pages, which the kernel
 * grants when its policy ("madvise" or "always") allows and memory is not
 * too fragmented; elsewhere, or when it refuses, the block is ordinary
 * memory. The library's own large buffers come from here for that reason:
 * the KV cache (layer/cache.c), the layer's parameters (layer/mha.c) and
 * the data of arrays read from files (array.c, io/npy.c). */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#endif
#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#if defined(QKV_HAVE_MMAP)
#include <sys/mman.h>
#endif

/* Blocks of at least this many bytes go on huge pages. */
#define HUGE_PAGE ((size_t)2 << 20)

void *qkv_alloc(size_t bytes)
{
    if (bytes == 0) {
        qkv_fail(QKV_ERR_INVALID_ARGUMENT, "qkv_alloc: bytes is 0");
        return NULL;
    }
    const size_t align = bytes >= HUGE_PAGE ? HUGE_PAGE : 64;
    if (bytes > SIZE_MAX - align) {
        qkv_fail(QKV_ERR_OUT_OF_MEMORY, "qkv_alloc: %zu bytes is more than can be addressed",
                 bytes);
        return NULL;
    }
    /* aligned_alloc wants a multiple of the alignment. */
    const size_t size = (bytes + align - 1) / align * align;
    void *p = aligned_alloc(align, size);
    if (!p) {
        qkv_fail(QKV_ERR_OUT_OF_MEMORY, "qkv_alloc: cannot allocate %zu bytes", bytes);
        return NULL;
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    /* Advice only: a kernel without THP says EINVAL and nothing changes. */
    if (align == HUGE_PAGE) (void)madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

/* Arrays that live in a mapped file (qkv_npy_map, qkv_npy_create): their
 * data pointers, so that qkv_free, and so qkv_array_free, unmap them. A
 * short list under a lock: a process holds a few of them at a time. */
typedef struct mapping {
    void *data, *base;
    size_t len;
    struct mapping *next;
} mapping;
static mapping *mappings;
static pthread_mutex_t mappings_lock = PTHREAD_MUTEX_INITIALIZER;

int qkv_mapping_add(void *data, void *base, size_t len)
{
    mapping *m = malloc(sizeof *m);
    if (!m) return 0;
    m->data = data;
    m->base = base;
    m->len = len;
    pthread_mutex_lock(&mappings_lock);
    m->next = mappings;
    mappings = m;
    pthread_mutex_unlock(&mappings_lock);
    return 1;
}

/* Unmaps p when it is a mapped array's data; 0 when it is not one. */
static int unmap_if_mapped(void *p)
{
    mapping *found = NULL;
    pthread_mutex_lock(&mappings_lock);
    for (mapping **m = &mappings; *m; m = &(*m)->next)
        if ((*m)->data == p) {
            found = *m;
            *m = found->next;
            break;
        }
    pthread_mutex_unlock(&mappings_lock);
    if (!found) return 0;
#if defined(QKV_HAVE_MMAP)
    munmap(found->base, found->len);
#endif
    free(found);
    return 1;
}

void qkv_free(void *p)
{
    if (p && !unmap_if_mapped(p)) free(p);
}
