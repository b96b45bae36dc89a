#include "cmd/resize_port.h"

#include <errno.h>

#include "util/xalloc.h"

int resize_ported(image_t *img, const char *filename, uint64_t size, enum img_prealloc prealloc,
                  bool dry_run, const char *journal, char **errmsg)
{
    (void)img, (void)filename, (void)size, (void)prealloc, (void)dry_run, (void)journal;
    *errmsg = xstrdup("--dry-run and --journal are not implemented for resize yet");
    return -ENOTSUP;
}
