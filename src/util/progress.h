/* The one progress bar, as qemu's util/qemu-progress.c: "    (x.xx/100%)\r" on stdout when
 * enabled (-p); when disabled, SIGUSR1 makes the next update print one line on stderr.
 * Arithmetic is in float like qemu's, so the printed values match qemu-img's exactly. */
#ifndef QIMG_UTIL_PROGRESS_H
#define QIMG_UTIL_PROGRESS_H

#include <stdbool.h>

/* min_skip: percentage points that must pass between two prints (0, 100 always print). */
void progress_init(bool enabled, float min_skip);

/* max == 0: set the position to delta percent. Else advance by delta percent of max. */
void progress_print(float delta, int max);

/* Ends the bar (a newline when enabled). */
void progress_end(void);

#endif
