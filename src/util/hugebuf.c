#include "util/hugebuf.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "util/xalloc.h"

#define HUGE (2u << 20)

static size_t round_up(size_t n)
{
    return n ? (n + HUGE - 1) & ~(size_t)(HUGE - 1) : HUGE;
}

void *hugebuf_try_alloc(size_t n)
{
    if (n > SIZE_MAX - 2 * (size_t)HUGE)
        return NULL;
    size_t len = round_up(n);
    /* over-allocate by one unit and trim, so the buffer starts on a 2 MiB boundary */
    uint8_t *raw = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    if (p + len < raw + len + HUGE)
        munmap(p + len, (size_t)(raw + len + HUGE - (p + len)));
    /* a hint; without THP this is plain memory. A big buffer's partial last unit stays on
     * 4 KiB pages, so touching its few bytes does not cost a whole 2 MiB of RSS. */
    madvise(p, n >= HUGE ? n & ~(size_t)(HUGE - 1) : len, MADV_HUGEPAGE);
    return p;
}

void *hugebuf_alloc(size_t n)
{
    void *p = hugebuf_try_alloc(n);
    if (!p) {
        xalloc_oom(round_up(n));
    }
    return p;
}

void hugebuf_free(void *p, size_t n)
{
    if (p)
        munmap(p, round_up(n));
}

void *bigbuf_try_alloc(size_t n)
{
    return n >= HUGEBUF_MIN ? hugebuf_try_alloc(n) : calloc(n ? n : 1, 1);
}

void *bigbuf_alloc(size_t n)
{
    if (n >= HUGEBUF_MIN)
        return hugebuf_alloc(n);
    void *p = calloc(n ? n : 1, 1);
    if (!p) {
        xalloc_oom(n);
    }
    return p;
}

void bigbuf_free(void *p, size_t n)
{
    if (n >= HUGEBUF_MIN)
        hugebuf_free(p, n);
    else
        free(p);
}
