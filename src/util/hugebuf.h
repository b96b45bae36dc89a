/* Big buffers on transparent huge pages. First-touch page faults can dominate a short
 * command (measured here: 30-45 us per 4 KiB fault inside a VM, so a 64 KiB L2 table costs
 * ~0.6 ms just to fault in), while one 2 MiB huge-page fault costs ~0.1 ms. Memory comes
 * zeroed, in whole 2 MiB units, and only touched units count towards RSS. */
#ifndef QIMG_UTIL_HUGEBUF_H
#define QIMG_UTIL_HUGEBUF_H

#include <stddef.h>

/* Below this size a buffer is cheaper as plain heap memory (the rounding to 2 MiB would
 * cost more than the faults it saves). */
#define HUGEBUF_MIN (1u << 20)

/* n bytes (rounded up to 2 MiB), 2 MiB aligned, zeroed; exits like xmalloc on failure. */
void *hugebuf_alloc(size_t n);

/* The same, but NULL on failure (for callers that report out-of-memory themselves). */
void *hugebuf_try_alloc(size_t n);

/* Frees a hugebuf_alloc(n) buffer (same n). NULL is fine. */
void hugebuf_free(void *p, size_t n);

/* n zeroed bytes on huge pages from HUGEBUF_MIN up, from the heap below (where rounding
 * to 2 MiB would cost more than the faults it saves); NULL on failure. Free with
 * bigbuf_free(p, n), same n. */
void *bigbuf_try_alloc(size_t n);
/* The same; exits like xmalloc on failure. */
void *bigbuf_alloc(size_t n);
void bigbuf_free(void *p, size_t n);

#endif
