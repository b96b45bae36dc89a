#include "util/cache.h"

#include <string.h>

bool cache_mode_valid(const char *mode)
{
    static const char *const modes[] = { "none", "off", "writeback", "writethrough",
                                         "directsync", "unsafe" };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (!strcmp(mode, modes[i]))
            return true;
    return false;
}
