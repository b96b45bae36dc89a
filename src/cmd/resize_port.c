/* resize --dry-run / --journal: the whole resize (open, truncate, close) runs through
 * port_run (cmd/port_run.h) on a writable overlay of the image file whose writes land in a
 * plan; a dry run prints it, --journal replays it through the journaled write port, so
 * `qimg undo JOURNAL IMAGE` restores every byte. The driver's flushes are barriers, so the
 * replay keeps the write order qemu's resize relies on. What a plan cannot hold is
 * refused: images with an external data file (port_run), and falloc/full preallocation
 * (the new area's bytes and allocation; for raw every mode). A shrink keeps the file's
 * length (the journal holds no bytes of a cut; the space past the new end is free in the
 * refcounts). */
#include "cmd/resize_port.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/port_run.h"
#include "util/xalloc.h"

struct resize_job {
    image_t *orig;
    uint64_t size;
    enum img_prealloc prealloc;
    int r;
    char *msg;
};

/* The resize on the overlay (port_run: open, this, close; the close-time writes of the
 * driver, e.g. qcow2 bitmaps, belong to the resize too). */
static int plan_resize(image_t *img, void *ctx)
{
    struct resize_job *j = ctx;
    /* the backing chain decides whether the new area must be zeroed */
    if (j->orig->backing) {
        img->backing = j->orig->backing;
        j->orig->backing = NULL;
    }
    j->r = image_truncate(img, j->size, j->prealloc, &j->msg);
    if (j->r == 0)
        j->r = image_flush(img);
    j->orig->backing = img->backing;
    img->backing = NULL;
    return j->r < 0;
}

int resize_ported(image_t *orig, const char *filename, uint64_t size, enum img_prealloc prealloc,
                  bool dry_run, const char *journal, char **errmsg)
{
    if (prealloc == IMG_PREALLOC_FALLOC || prealloc == IMG_PREALLOC_FULL ||
        (!strcmp(orig->format, "raw") && prealloc != IMG_PREALLOC_OFF)) {
        *errmsg = xasprintf("--%s is not supported with --preallocation=%s",
                            dry_run ? "dry-run" : "journal",
                            prealloc == IMG_PREALLOC_FULL ? "full" :
                            prealloc == IMG_PREALLOC_FALLOC ? "falloc" : "metadata");
        return -ENOTSUP;
    }
    struct resize_job j = { .orig = orig, .size = size, .prealloc = prealloc };
    int st = port_run(orig, filename, 0, "resize", plan_resize, &j, dry_run, journal);
    if (j.r < 0) {
        *errmsg = j.msg;
        return j.r;
    }
    free(j.msg);
    return st ? -EIO : 0;   /* port_run printed why */
}
