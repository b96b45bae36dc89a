/* Persistent bitmaps: the open-time directory load and the check pass (§3.3 step 8). */
#ifndef QIMG_CHECKER_QCOW2_BITMAPS_H
#define QIMG_CHECKER_QCOW2_BITMAPS_H

#include <stddef.h>

struct qc2;

/* qemu's bitmap_list_load + load_bitmap at open. 0, or -errno with qemu's message. */
int qc2_bitmaps_load(struct qc2 *s, char *msg, size_t msg_len);
void qc2_bitmaps_free(struct qc2 *s);

#endif
