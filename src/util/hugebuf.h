/* Big buffers on transparent huge pages. First-touch page faults can dominate a short
 * command (measured here: 30-45 us per 4 KiB fault inside a VM, so a 64 KiB L2 table costs
 * ~0.6 ms just to fault in), while one 2 MiB huge-page fault costs ~0.1 ms. Memory comes
 * zeroed, in whole 2 MiB units, and only touched units count towards RSS. */
#ifndef QIMG_UTIL_HUGEBUF_H
#define QIMG_UTIL_HUGEBUF_H

#include <stddef.h>

/* n bytes (rounded up to 2 MiB), 2 MiB aligned, zeroed; exits like xmalloc on failure. */
void *hugebuf_alloc(size_t n);

/* Frees a hugebuf_alloc(n) buffer (same n). NULL is fine. */
void hugebuf_free(void *p, size_t n);

#endif
