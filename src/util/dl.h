/* Libraries qimg loads at their first use (dlopen) rather than links: libnbd and libssh
 * bring tens of MiB of dependencies that a run on plain files need not map. One loader for
 * both: the library, then every symbol of a table, or a one-line reason. */
#ifndef QIMG_UTIL_DL_H
#define QIMG_UTIL_DL_H

#include <stddef.h>

/* A symbol to look up and the function pointer it fills (its address, as void **). */
struct dl_sym {
    const char *name;
    void **slot;
};

/* Loads soname (RTLD_NOW | RTLD_LOCAL) into *handle and fills every slot of syms; does
 * nothing when *handle is already set. 0, or -ENOTSUP with *errmsg (malloc'd) set to
 * "<what> needs <lib>: <dlerror>" when the library or one of its symbols is missing
 * (nothing is kept loaded then, every slot NULL). */
int dl_load(void **handle, const char *soname, const char *what, const char *lib,
            const struct dl_sym *syms, size_t n, char **errmsg);

#endif
