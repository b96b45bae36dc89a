/* compare's fast path for plain host data: proves a step equal (or zero) cheaply, or says
 * it could not, and compare redoes the step qemu's way for the exact message. */
#ifndef QIMG_CMD_COMPARE_FAST_H
#define QIMG_CMD_COMPARE_FAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/qio.h"

typedef struct fastcmp fastcmp_t;

fastcmp_t *fastcmp_new(void);
void fastcmp_free(fastcmp_t *f);

/* True iff n bytes at a[ma] and b[mb] read without error and are equal (b NULL: a's bytes
 * are all zero). The locations come from block status (DATA|OFFSET_VALID: the guest bytes
 * are the file's bytes there), so no block-layer state is touched and the two threads can
 * share the files. False proves nothing: a difference, or a read error. Prints nothing. */
bool fastcmp_equal(fastcmp_t *f, qio_t *a, uint64_t ma, qio_t *b, uint64_t mb, size_t n);

#endif
