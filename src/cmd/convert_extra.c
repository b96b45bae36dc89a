/* qimg convert -l and --bitmaps (see convert_extra.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/convert_extra.h"
#include "util/err.h"
#include "util/xalloc.h"

int convert_snapshot_opts_check(const char *optstr, char **why)
{
    (void)optstr;
    (void)why;
    return 0;
}

int convert_snapshot_load(image_t *img, const char *sn_opts, const char *id_or_name,
                          char **why)
{
    (void)img;
    (void)sn_opts;
    (void)id_or_name;
    *why = xstrdup("not supported by qimg yet");
    return -1;
}

int convert_check_bitmaps(image_t *src, bool skip_broken)
{
    (void)skip_broken;
    if (strcmp(src->format, "qcow2")) {
        err_report("Source lacks bitmap support");
        return -1;
    }
    return 0;
}

int convert_copy_bitmaps(image_t *src, image_t *dst, bool skip_broken)
{
    (void)src;
    (void)dst;
    (void)skip_broken;
    return 0;
}
