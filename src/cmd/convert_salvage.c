/* convert --salvage through the salvage reader (see convert_salvage.h). */
#include "cmd/convert_salvage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/salvage.h"
#include "util/err.h"

bool convert_salvage_arg(const char *arg)
{
    if (!arg)
        return false;
    if (strcmp(arg, "reader"))
        err_usage("unrecognized option '--salvage=%s'", arg);
    return true;
}

image_t *convert_open_source(const char *name, const char *fmt, int flags, bool salvage,
                             bool reader)
{
    image_t *img = NULL;
    char *msg = NULL;
    /* the salvage reader opens a file by name: not an --image-opts list */
    bool plain = !(flags & IMG_OPEN_IMAGE_OPTS);
    if (plain && reader && (!fmt || !strcmp(fmt, "qcow2"))) {
        int r = salvage_open(name, flags & IMG_OPEN_SHARE, &img, &msg);
        if (r == 0)
            return img;
        free(msg);
        msg = NULL; /* not qcow2, or unusable: the usual open says why */
    }
    if (image_open(name, fmt, flags, &img, &msg) == 0)
        return img;
    err_report("%s", msg);
    free(msg);
    if (!plain || !salvage || (fmt && strcmp(fmt, "qcow2")))
        return NULL;
    char *smsg = NULL;
    if (salvage_open(name, flags & IMG_OPEN_SHARE, &img, &smsg) < 0) {
        free(smsg); /* qemu's message above says why; not a qcow2 image, or no L1 table */
        return NULL;
    }
    err_report("salvage: '%s' opened by the salvage reader: readable bytes are copied, "
               "lost ranges become zeros", name);
    return img;
}

int convert_salvage_finish(image_t *src, int ret)
{
    if (!image_is_salvage(src))
        return ret;
    fflush(stdout);
    int r = salvage_report(src, stderr);
    if (r == 2 || ret == 2)
        return 2;
    return r == 3 || ret == 3 ? 3 : ret;
}
