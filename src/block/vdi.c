/* VDI driver (read side): qemu 7.2's vdi_open checks via the pure decoder, then guest reads
 * and block status through the block map. Unallocated and discarded blocks read as zeros
 * (VDI has no backing file); static images ask the file about holes (RECURSE). Writes:
 * vdi_write.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "block/vdi_int.h"
#include "format/be.h"
#include "io/wport.h"
#include "util/xalloc.h"

static int vdi_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return len >= VDI_HEADER_LEN && le32_get(buf + VDI_OFF_SIGNATURE) == VDI_SIGNATURE ? 100 : 0;
}

int vdi_load(qio_t *f, struct vdi_state *s, char **errmsg)
{
    uint8_t buf[VDI_HEADER_LEN];
    int r = qio_pread(f, buf, sizeof(buf), 0); /* zero-filled past EOF, as qemu's read */
    if (r < 0) {
        *errmsg = xasprintf("Could not read VDI header: %s", strerror(-r));
        return r;
    }
    memcpy(s->raw_header, buf, sizeof(buf));
    struct fmt_error e;
    fmt_error_clear(&e);
    r = vdi_header_decode(buf, sizeof(buf), &s->h, &e);
    if (r < 0) {
        char tmp[FMT_ERROR_MSG_MAX];
        *errmsg = xstrdup(fmt_error_user_msg(&e, tmp, sizeof(tmp)));
        return r;
    }
    uint64_t size;
    r = qio_size(f, &size);
    if (r < 0) {
        *errmsg = xasprintf("Could not get file size: %s", strerror(-r));
        return r;
    }
    /* qemu reads the whole map, zero-filled past EOF; keep only the entries the file
     * holds so memory is bounded by the file, not by blocks_in_image. */
    uint64_t have = 0;
    if (size > s->h.offset_bmap)
        have = (size - s->h.offset_bmap) / 4;
    if (have > s->h.blocks_in_image)
        have = s->h.blocks_in_image;
    s->n_stored = (uint32_t)have;
    s->bmap = xmalloc(have ? have * 4 : 1);
    if (have) {
        uint8_t *raw = xmalloc(have * 4);
        r = qio_pread(f, raw, have * 4, s->h.offset_bmap);
        if (r == 0)
            for (uint64_t i = 0; i < have; i++)
                s->bmap[i] = le32_get(raw + i * 4);
        free(raw);
        if (r < 0) {
            *errmsg = xasprintf("Could not read block map: %s", strerror(-r));
            return r;
        }
    }
    uint64_t used = (uint64_t)s->h.blocks_in_image * 4; /* pad < 512: bmap_bytes rounds */
    r = qio_pread(f, s->map_pad, (size_t)(s->h.bmap_bytes - used), s->h.offset_bmap + used);
    if (r < 0) {
        *errmsg = xasprintf("Could not read block map: %s", strerror(-r));
        return r;
    }
    return 0;
}

static int vdi_open(image_t *img, char **errmsg)
{
    struct vdi_state *s = xcalloc(1, sizeof(*s));
    img->priv = s;
    int r = vdi_load(img->file, s, errmsg);
    if (r < 0)
        return r;
    img->size = s->h.disk_size;
    img->cluster_size = s->h.block_size;
    if (img->flags & IMG_OPEN_RDWR) {
        s->port = xcalloc(1, sizeof(*s->port));
        r = wport_init_direct(s->port, img->file);
        if (r < 0) {
            *errmsg = xasprintf("Could not get file size: %s", strerror(-r));
            return r;
        }
    }
    return 0;
}

static void vdi_close(image_t *img)
{
    struct vdi_state *s = img->priv;
    if (!s)
        return;
    free(s->bmap);
    free(s->port);
    free(s);
    img->priv = NULL;
}

/* The rest of one block of a read: its data, or zeros when unallocated. */
static int64_t vdi_read_step(image_t *img, uint64_t off, uint8_t *p, size_t n)
{
    struct vdi_state *s = img->priv;
    uint64_t block = off / s->h.block_size; /* < blocks_in_image: off < disk_size */
    uint32_t in = (uint32_t)(off % s->h.block_size);
    size_t len = s->h.block_size - in;
    if (len > n)
        len = n;
    uint32_t e = vdi_entry(s, block);
    int r = 0;
    if (VDI_IS_ALLOCATED(e))
        r = qio_pread(img->file, p, len, vdi_block_offset(&s->h, e, in));
    else
        memset(p, 0, len);
    return r < 0 ? r : (int64_t)len;
}

static int vdi_read(image_t *img, uint64_t off, void *buf, size_t n)
{
    return read_in_steps(img, off, buf, n, vdi_read_step);
}

static int vdi_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st)
{
    struct vdi_state *s = img->priv;
    uint64_t block = off / s->h.block_size;
    uint32_t in = (uint32_t)(off % s->h.block_size);
    st->pnum = s->h.block_size - in < bytes ? s->h.block_size - in : bytes;
    uint32_t e = vdi_entry(s, block);
    if (!VDI_IS_ALLOCATED(e)) {
        st->flags = BS_ZERO;
        return 0;
    }
    st->flags = BS_DATA | BS_OFFSET_VALID |
                (s->h.image_type == VDI_TYPE_STATIC ? BS_RECURSE : 0);
    st->map = vdi_block_offset(&s->h, e, in);
    st->file = img->file;
    st->filename = img->filename;
    return 0;
}

const struct driver vdi_driver = {
    .name = "vdi",
    .supports_backing = false,
    .probe = vdi_probe,
    .open = vdi_open,
    .close = vdi_close,
    .read = vdi_read,
    .block_status = vdi_block_status,
    /* qemu's VDI has no write_zeroes (image.c writes zero buffers, allocating as qemu's
     * fallback does), no truncate (image.c: "Image format driver does not support
     * resize") and no flush of its own (the file is flushed). */
    .write = vdi_write,
};
