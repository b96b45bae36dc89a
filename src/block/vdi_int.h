/* VDI driver internals shared with the checker (checker/vdi_check.c). */
#ifndef QIMG_BLOCK_VDI_INT_H
#define QIMG_BLOCK_VDI_INT_H

#include <stdint.h>

#include "format/vdi_header.h"
#include "io/qio.h"

struct vdi_state {
    struct vdi_header h;
    uint32_t *bmap;        /* the entries the file holds (host order) */
    uint32_t n_stored;     /* <= blocks_in_image; later entries lie past EOF */
};

/* Entry of guest block b: entries past the end of the file read as 0, exactly as qemu's
 * zero-filled read of the map gives them (0 = allocated at physical block 0). */
static inline uint32_t vdi_entry(const struct vdi_state *s, uint64_t b)
{
    return b < s->n_stored ? s->bmap[b] : 0;
}

/* Reads and validates header and block map (qemu's messages in *errmsg). */
int vdi_load(qio_t *f, struct vdi_state *s, char **errmsg);

#endif
