/* VDI driver internals shared with the checker (checker/vdi_check.c). */
#ifndef QIMG_BLOCK_VDI_INT_H
#define QIMG_BLOCK_VDI_INT_H

#include <stdint.h>

#include "block/image.h"
#include "format/vdi_header.h"
#include "io/qio.h"

struct wport;

struct vdi_state {
    struct vdi_header h;
    uint32_t *bmap;        /* the entries the file holds (host order) */
    uint32_t n_stored;     /* <= blocks_in_image; later entries lie past EOF */
    /* Writer (vdi_write.c): qemu rewrites the header and map sectors from the copies it
     * read at open, so we keep those bytes: the header as read, and the padding after the
     * last map entry up to the map's last sector (zeros past EOF, as qemu reads them). */
    uint8_t raw_header[VDI_HEADER_LEN];
    uint8_t map_pad[VDI_SECTOR_SIZE];
    struct wport *port;    /* metadata writes; NULL when opened read-only */
};

/* Entry of guest block b: entries past the end of the file read as 0, exactly as qemu's
 * zero-filled read of the map gives them (0 = allocated at physical block 0). */
static inline uint32_t vdi_entry(const struct vdi_state *s, uint64_t b)
{
    return b < s->n_stored ? s->bmap[b] : 0;
}

/* Reads and validates header and block map (qemu's messages in *errmsg). */
int vdi_load(qio_t *f, struct vdi_state *s, char **errmsg);

/* Guest write (qemu's vdi_co_pwritev); vdi_write.c. */
int vdi_write(image_t *img, uint64_t off, const void *buf, size_t n);

#endif
