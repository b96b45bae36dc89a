#ifndef QIMG_REPAIR_UNDO_H
#define QIMG_REPAIR_UNDO_H

/* Restore image to its pre-repair bytes from a repair journal; returns the exit code
 * (0, or 1 with a message: unreadable journal, image changed since the repair, I/O). */
int repair_undo(const char *journal, const char *image);

#endif
