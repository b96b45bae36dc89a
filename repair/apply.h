#ifndef QIMG_REPAIR_APPLY_H
#define QIMG_REPAIR_APPLY_H

#include "io/qio.h"
#include "repair/journal.h"
#include "repair/plan.h"

/* Write every plan entry to q in order (journaled first when j is set, rows numbered
 * from first_seq), flushing between classes and at the end. 0 or -errno. */
int repair_apply(qio_t *q, const struct plan *p, journal_t *j, uint64_t first_seq);

#endif
