#include <dlfcn.h>
#include <errno.h>

#include "util/dl.h"
#include "util/xalloc.h"

int dl_load(void **handle, const char *soname, const char *what, const char *lib,
            const struct dl_sym *syms, size_t n, char **errmsg)
{
    if (*handle)
        return 0;
    void *dl = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    size_t i = 0;
    while (dl && i < n && (*syms[i].slot = dlsym(dl, syms[i].name)))
        i++;
    if (dl && i == n) {
        *handle = dl;
        return 0;
    }
    /* the library or symbol i is missing: dlerror says which */
    *errmsg = xasprintf("%s needs %s: %s", what, lib, dlerror());
    while (i--)
        *syms[i].slot = NULL; /* they would point into the closed library */
    if (dl)
        dlclose(dl);
    return -ENOTSUP;
}
