/* The undo engine (journal/undo.c): restores an image to its pre-repair bytes from a repair
 * journal, or finishes an interrupted undo. `qimg undo` (src/cmd/undo.c) opens the journal
 * with undo_open, then opens and locks the image and calls undo_restore.
 *
 * Exit codes: 0 restored, 1 the image cannot be restored (cannot be opened, changed since
 * the repair, already restored, I/O error), 2 the journal cannot be used (cannot be opened,
 * invalid); 2 and "changed" write nothing. Each function prints its own messages. */
#ifndef QIMG_JOURNAL_UNDO_H
#define QIMG_JOURNAL_UNDO_H

#include <stddef.h>

#include "io/qio.h"

struct undo;

/* Step 1, the journal alone: opens and validates it (image: the name it is for, kept for
 * messages). 0 with *out, or the exit code (2 invalid, 1 already undone). */
int undo_open(const char *journal, const char *image, struct undo **out);
/* Steps 2 and 3 on q, the image opened read-write and locked by the caller: validated
 * against the journal, then restored. 0 or the exit code. q stays the caller's. */
int undo_restore(struct undo *u, qio_t *q);
/* Writes the journal records (after undo_open). */
size_t undo_writes(const struct undo *u);
void undo_close(struct undo *u);

#endif
