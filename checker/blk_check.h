/* Checkers for formats opened through the block layer (src/block/): QED and VDI.
 * Each function is one pass of qemu's bdrv_check() on an open image: it fills run->res and
 * run->findings (the caller sets run->format and the sink) and returns 0 or -errno, where a
 * negative value is qemu's "Check failed: <strerror>". */
#ifndef QIMG_CHECKER_BLK_CHECK_H
#define QIMG_CHECKER_BLK_CHECK_H

#include "block/image.h"
#include "checker/check.h"

/* block/qed-check.c: any fix mode zeroes invalid L1/L2 entries (written back whole, like
 * qemu) and, when nothing unfixable remains, clears NEED_CHECK. Leaks are never fixed.
 * img must be open read-write when fix != 0. */
int qed_check_pass(image_t *img, unsigned fix, struct check_run *run);
/* The same with the fixes written through w (a direct, journaled or plan port on
 * img->file, io/wport.h); a plan port needs no read-write open. */
struct wport;
int qed_check_pass_port(image_t *img, unsigned fix, struct check_run *run, struct wport *w);
/* qemu's bdrv_qed_close marks a read-write image clean (NEED_CHECK cleared) even when the
 * repair left corruptions: that header write, made now through w (so a journal holds it);
 * the driver's close then has nothing left to write. */
void qed_check_close_clean(image_t *img, struct wport *w);

/* vdi_co_check: -ENOTSUP for any fix mode (qemu-img then exits 63). */
int vdi_check_pass(image_t *img, unsigned fix, struct check_run *run);

#endif
