/* Allocation that cannot fail silently: out of memory is reported ("out of memory
 * (allocating N bytes)") and exits with the current command's error code (1 unless the
 * command set another: compare uses 2 while opening and 4 while reading, because its 1
 * means "images differ"). Sizes passed here must already be bounded by validated metadata
 * (see README, "Limits"). */
#ifndef QIMG_UTIL_XALLOC_H
#define QIMG_UTIL_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xreallocarray(void *p, size_t nmemb, size_t size);
char *xstrdup(const char *s);
/* Reports an allocation of n bytes that failed and exits with the out-of-memory code. */
_Noreturn void xalloc_oom(size_t n);
/* Sets the exit code of an out-of-memory exit; returns the previous one. */
int xalloc_set_oom_exit(int code);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
