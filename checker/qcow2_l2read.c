#include "checker/qcow2_l2read.h"

#include <stdlib.h>

#include "checker/qcow2_check.h"
#include "util/hugebuf.h"
#include "util/xalloc.h"

void l2_reader_init(struct l2_reader *r, uint64_t cs, uint64_t file_size)
{
    uint64_t cap = file_size < L2_BATCH_BYTES ? file_size : L2_BATCH_BYTES;
    cap = cap < cs ? cs : (cap + cs - 1) / cs * cs;
    r->cap = cap;
    r->huge = cap >= HUGEBUF_MIN;   /* 4 MiB: 2 huge-page faults instead of 1024 */
    r->buf = r->huge ? hugebuf_alloc((size_t)cap) : xmalloc((size_t)cap);
    r->off = r->len = 0;
}

void l2_reader_free(struct l2_reader *r)
{
    if (r->huge)
        hugebuf_free(r->buf, (size_t)r->cap);
    else
        free(r->buf);
    r->buf = NULL;
}

int l2_reader_get(struct qc2 *s, struct l2_reader *r, const uint64_t *l1, uint64_t l1_n,
                  uint64_t i, uint64_t off, const uint8_t **out)
{
    uint64_t cs = s->cs;
    if (r->len && off >= r->off && off - r->off <= r->len - cs && !((off - r->off) & (cs - 1))) {
        *out = r->buf + (off - r->off);
        return 0;
    }
    uint64_t len = cs;
    if (!(off & (cs - 1))) {
        /* extend over following L1 entries whose tables follow this one on disk */
        uint64_t prev = off;
        for (uint64_t j = i + 1; j < l1_n && len + cs <= r->cap; j++) {
            uint64_t o = l1[j] & QCOW2_L1E_OFFSET_MASK;
            if (o != prev + cs)
                break;
            len += cs;
            prev = o;
        }
    }
    int rc = qc2_read(s, r->buf, len, off);
    if (rc < 0) {
        r->len = 0;
        return rc;
    }
    r->off = off;
    r->len = len;
    *out = r->buf;
    return 0;
}
