#ifndef QIMG_REPAIR_UNDO_H
#define QIMG_REPAIR_UNDO_H

/* Restore image to its pre-repair bytes from a repair journal (or finish an interrupted
 * undo); returns the exit code: 0 restored, 1 the image cannot be restored (cannot be
 * opened, changed since the repair, already restored, I/O error), 2 the journal cannot
 * be used (cannot be opened, invalid); 2 and "changed" write nothing. */
int repair_undo(const char *journal, const char *image);

#endif
