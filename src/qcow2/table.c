/* The one qcow2 table loader (see table.h for the rule at EOF). */
#include <errno.h>
#include <stdlib.h>

#include "format/be.h"
#include "qcow2/table.h"
#include "util/xalloc.h"

int qcow2_table_load(qio_t *q, uint64_t file_size, uint64_t off, uint64_t entries,
                     unsigned flags, uint64_t **out, uint64_t *loaded)
{
    *out = NULL;
    *loaded = 0;
    /* qemu's request check: a read that ends past BDRV_MAX_LENGTH fails, while one merely
     * past EOF reads zeros (a raw snapshot L1 offset can be 0x8000000000090000) */
    if (qcow2_table_past_max(off, entries))
        return -EIO;
    uint64_t n = qcow2_table_in_file(off, entries, file_size);
    uint64_t alloc = (flags & QCOW2_TABLE_PAD) ? entries : n;
    if (!alloc) {
        if (flags & QCOW2_TABLE_PAD)
            *out = xcalloc(1, 8);
        return 0;
    }
    if (alloc > SIZE_MAX / 8)
        return -ENOMEM;
    uint64_t *t = (flags & QCOW2_TABLE_PAD) ? xcalloc((size_t)alloc, 8)
                                            : xmalloc((size_t)alloc * 8);
    if (n) {
        /* read into the table's own memory, then swap in place */
        int rc = qio_pread(q, t, (size_t)(n * 8), off);
        if (rc < 0) {
            free(t);
            return rc;
        }
        for (uint64_t i = 0; i < n; i++)
            t[i] = be64_get((const uint8_t *)&t[i]);
    }
    *out = t;
    *loaded = n;
    return 0;
}
