/* qemu's -t/-T cache modes (bdrv_parse_cache_mode). qimg accepts the names qemu accepts;
 * page-cache behaviour does not change results, so the mode is only validated. */
#ifndef QIMG_UTIL_CACHE_H
#define QIMG_UTIL_CACHE_H

#include <stdbool.h>

bool cache_mode_valid(const char *mode);

#endif
