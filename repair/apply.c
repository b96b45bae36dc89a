/* Applying a plan: replayed through the write port's journaled or direct backend
 * (io/wport.h wport_apply: journal the entry, then write it; a flush between entries of
 * different classes, so a later step never reaches the disk before the step it depends
 * on). */
#include "repair/apply.h"

#include "io/wport.h"

int repair_apply(qio_t *q, const struct plan *p, journal_t *j,
                 const struct plan_entry **failed)
{
    struct wport w;
    *failed = NULL;
    int rc = j ? wport_init_journal(&w, q, j) : wport_init_direct(&w, q);
    return rc < 0 ? rc : wport_apply(&w, p, failed);
}
