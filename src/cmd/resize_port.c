/* resize --dry-run / --journal: the whole resize (open, truncate, close) runs on a writable
 * overlay of the image file whose writes land in a plan (journal/plan.h) instead of the
 * file. A dry run prints the plan; --journal then replays it through the journaled write
 * port (io/wport.h wport_apply), so `qimg undo JOURNAL IMAGE` restores every byte.
 *
 * The driver's flushes are barriers in the plan: each flush after writes starts a new
 * plan class, and wport_apply flushes between classes, so the replay keeps the write
 * order qemu's resize relies on. What a plan cannot hold is refused: images with an
 * external data file (a second file), and falloc/full preallocation (the new area's
 * bytes and allocation; for raw every mode). A
 * shrink keeps the file's length (the journal holds no bytes of a cut; the space past
 * the new end is free in the refcounts). */
#include "cmd/resize_port.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/open_mem.h"
#include "cmd/ported.h"
#include "io/qio.h"
#include "journal/plan.h"
#include "util/err.h"
#include "util/xalloc.h"

/* The resize made on the overlay: open, truncate, close (the close-time writes of the
 * driver, e.g. qcow2 bitmaps, belong to the resize too). */
static int plan_resize(struct plan *p, qio_t *base, image_t *orig, const char *filename,
                       uint64_t size, enum img_prealloc prealloc, char **errmsg)
{
    image_t *img;
    int r = image_open_qio(ported_overlay(p, filename, "resize"), filename, orig->format,
                           IMG_OPEN_RDWR,
                           &img, errmsg);
    if (r < 0) {
        char *m = *errmsg;
        *errmsg = xasprintf("Could not open '%s': %s", filename, m ? m : strerror(-r));
        free(m);
        return r;
    }
    (void)base;
    /* the backing chain decides whether the new area must be zeroed */
    if (orig->backing) {
        img->backing = orig->backing;
        orig->backing = NULL;
    }
    r = image_truncate(img, size, prealloc, errmsg);
    if (r == 0)
        r = image_flush(img);
    image_t *b = img->backing;
    img->backing = NULL;
    orig->backing = b;
    image_close(img);
    return r;
}

int resize_ported(image_t *orig, const char *filename, uint64_t size, enum img_prealloc prealloc,
                  bool dry_run, const char *journal, char **errmsg)
{
    if (orig->data_file_name) {
        *errmsg = xasprintf("--%s is not supported for images with an external data file",
                            dry_run ? "dry-run" : "journal");
        return -ENOTSUP;
    }
    if (prealloc == IMG_PREALLOC_FALLOC || prealloc == IMG_PREALLOC_FULL ||
        (!strcmp(orig->format, "raw") && prealloc != IMG_PREALLOC_OFF)) {
        *errmsg = xasprintf("--%s is not supported with --preallocation=%s",
                            dry_run ? "dry-run" : "journal",
                            prealloc == IMG_PREALLOC_FULL ? "full" :
                            prealloc == IMG_PREALLOC_FALLOC ? "falloc" : "metadata");
        return -ENOTSUP;
    }
    qio_t *q = orig->file;   /* read-only: the plan's base */
    struct plan plan;
    plan_init(&plan, q);
    int r = plan_resize(&plan, q, orig, filename, size, prealloc, errmsg);
    if (r < 0)
        goto out;
    if (dry_run) {
        ported_print_plan(&plan, "Resize", NULL);
        goto out;
    }
    r = ported_apply_journal(&plan, filename, journal, errmsg);
out:
    plan_free(&plan);
    return r;
}
