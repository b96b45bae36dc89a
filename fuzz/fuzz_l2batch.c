/* Linked into the check (and repair) targets with -Wl,--wrap=l2_reader_init: the checker's
 * batched L2 reader allocates a 4 MiB buffer per pass, which under ASan costs ~10 ms of
 * page faults per input and dominated the check target's time (2 exec/s). A smaller batch
 * (at least one cluster, as the reader requires) reads the same bytes in more preads and
 * exercises the batch-boundary logic more often. */
#include <stdlib.h>

#include "checker/qcow2_l2read.h"
#include "util/xalloc.h"

void __wrap_l2_reader_init(struct l2_reader *r, uint64_t cs);

void __wrap_l2_reader_init(struct l2_reader *r, uint64_t cs)
{
    r->cap = cs > 16384 ? cs : 16384;
    r->buf = xmalloc((size_t)r->cap);
    r->off = r->len = 0;
}
