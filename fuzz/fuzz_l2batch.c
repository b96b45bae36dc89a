/* Linked into the check (and repair) targets with -Wl,--wrap=l2_reader_init: a batch of
 * 16 KiB (at least one cluster, as the reader requires) instead of one sized by the file
 * reads the same bytes in more preads and exercises the batch-boundary logic more often. */
#include <stdlib.h>
#include <string.h>

#include "checker/qcow2_l2read.h"
#include "util/hugebuf.h"

void __wrap_l2_reader_init(struct l2_reader *r, uint64_t cs, uint64_t file_size);

void __wrap_l2_reader_init(struct l2_reader *r, uint64_t cs, uint64_t file_size)
{
    (void)file_size;
    memset(r, 0, sizeof(*r));
    r->cap = cs > 16384 ? cs : 16384;
    r->buf = bigbuf_alloc((size_t)r->cap);   /* l2_reader_free frees it so */
}
