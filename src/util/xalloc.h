/* Allocation that cannot fail silently: out of memory is reported and exits 1. Sizes passed
 * here must already be bounded by validated metadata (see README, "Limits"). */
#ifndef QIMG_UTIL_XALLOC_H
#define QIMG_UTIL_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xreallocarray(void *p, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
