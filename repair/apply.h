#ifndef QIMG_REPAIR_APPLY_H
#define QIMG_REPAIR_APPLY_H

#include "io/qio.h"
#include "journal/journal.h"
#include "journal/plan.h"

/* Write every plan entry to q in order (journaled first when j is set), flushing between
 * classes and at the end. 0 or -errno; when the image write of an entry fails, *failed
 * is that entry (else NULL: the journal, which printed its message, or a flush failed).
 * Prints nothing itself. */
int repair_apply(qio_t *q, const struct plan *p, journal_t *j,
                 const struct plan_entry **failed);

#endif
