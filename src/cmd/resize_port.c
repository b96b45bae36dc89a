/* resize --dry-run / --journal: the whole resize (open, truncate, close) made through a plan
 * overlay (cmd/ported.h, shared with amend). A dry run prints the plan; --journal replays
 * it through the journaled write port, so `qimg undo JOURNAL IMAGE` restores every byte.
 * What a plan cannot hold is refused: images with an
 * external data file (a second file), and falloc/full preallocation (the new area's
 * bytes and allocation; for raw every mode). A
 * shrink keeps the file's length (the journal holds no bytes of a cut; the space past
 * the new end is free in the refcounts). */
#include "cmd/resize_port.h"

#include <errno.h>
#include <string.h>

#include "cmd/ported.h"
#include "util/xalloc.h"

struct resize_ctx {
    uint64_t size;
    enum img_prealloc prealloc;
};

/* The resize on the overlay's image (the close-time writes of the driver, e.g. qcow2
 * bitmaps, belong to the resize too: ported_run closes it). */
static int resize_work(image_t *img, void *ctx, char **errmsg)
{
    struct resize_ctx *c = ctx;
    return image_truncate(img, c->size, c->prealloc, errmsg);
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
    struct resize_ctx c = { size, prealloc };
    return ported_run(orig, filename, "Resize", resize_work, &c, dry_run, journal, errmsg);
}
