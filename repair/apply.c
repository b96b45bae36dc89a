/* Applying a plan: journal the entry, then write it; a flush between entries of different
 * classes, so a later step never reaches the disk before the step it depends on. */
#include "repair/apply.h"

#include <errno.h>
#include <string.h>

int repair_apply(qio_t *q, const struct plan *p, journal_t *j,
                 const struct plan_entry **failed)
{
    uint64_t size;
    *failed = NULL;
    int rc = qio_size(q, &size);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_entry *e = &p->v[i];
        if (i && e->cls != p->v[i - 1].cls && (rc = qio_flush(q)) < 0)
            return rc;
        uint64_t new_size = size, seq = 0;
        if (e->op == PLAN_WRITE && e->offset + e->len > size)
            new_size = e->offset + e->len;
        if (e->op == PLAN_TRUNCATE && e->offset > size)
            new_size = e->offset;
        if (j && (rc = journal_record(j, e, new_size, &seq)) < 0)
            return rc;
        if (e->op == PLAN_WRITE)
            rc = qio_pwrite(q, e->new_bytes, (size_t)e->len, e->offset);
        else if (e->offset > size)
            rc = qio_truncate(q, e->offset);
        if (rc < 0) {
            /* a short write may have changed part of the range: say so in the journal */
            *failed = e;
            if (j)
                journal_mark_failed(j, seq);
            return rc;
        }
        size = new_size;
    }
    return qio_flush(q);
}
