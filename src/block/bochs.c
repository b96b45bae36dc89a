/* Bochs growing ("redolog") images, read-only, as qemu 7.2's block/bochs.c: bochs_probe,
 * bochs_open's checks and messages, and seek_to_sector's per-sector lookup (catalog entry
 * of the extent, then the extent's bitmap bit). The catalog is bounded by qemu's own limit
 * (1M entries, 4 MiB); no other metadata is kept in memory. qemu's driver has no block
 * status, so the block layer reports every range as data (no offset): so does this one. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/driver.h"
#include "format/be.h"
#include "format/probe.h"
#include "util/xalloc.h"

#define BOCHS_HEADER_SIZE 512
#define BOCHS_V1 0x00010000u
#define BOCHS_MAX_CATALOG 0x100000u /* qemu: "largest image bximage can create" */
#define BOCHS_UNALLOCATED 0xffffffffu

struct bochs_state {
    uint32_t *catalog;
    uint32_t catalog_size;
    uint64_t data_offset;
    uint32_t bitmap_blocks, extent_blocks, extent_size;
};

static int bochs_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    return bochs_header_ok(buf, len) ? 100 : 0;
}

static int bochs_open(image_t *img, char **errmsg)
{
    struct bochs_state *s = xcalloc(1, sizeof(*s));
    img->priv = s;
    if (img->flags & IMG_OPEN_RDWR) { /* a read-only driver (bdrv_apply_auto_read_only) */
        *errmsg = xstrdup("Block node is read-only");
        return -EACCES;
    }
    uint8_t b[BOCHS_HEADER_SIZE];
    int r = qio_pread(img->file, b, sizeof(b), 0);
    if (r < 0) {
        *errmsg = xstrdup(strerror(-r));
        return r;
    }
    if (!bochs_header_ok(b, sizeof(b))) {
        *errmsg = xstrdup("Image not in Bochs format");
        return -EINVAL;
    }
    /* v1 has no timestamp: its disk size sits 4 bytes earlier */
    uint64_t disk = le32_get(b + 64) == BOCHS_V1 ? le64_get(b + 84) : le64_get(b + 88);
    uint64_t total_sectors = disk / 512;
    uint32_t header = le32_get(b + 68), bitmap = le32_get(b + 76);
    s->catalog_size = le32_get(b + 72);
    s->extent_size = le32_get(b + 80);
    if (s->catalog_size > BOCHS_MAX_CATALOG) {
        *errmsg = xstrdup("Catalog size is too large");
        return -EFBIG;
    }
    size_t cbytes = (size_t)s->catalog_size * 4;
    uint8_t *raw = xmalloc(cbytes ? cbytes : 1);
    r = cbytes ? qio_pread(img->file, raw, cbytes, header) : 0;
    if (r < 0) {
        free(raw);
        *errmsg = xstrdup(strerror(-r));
        return r;
    }
    s->catalog = xmalloc(cbytes ? cbytes : 1);
    for (uint32_t i = 0; i < s->catalog_size; i++)
        s->catalog[i] = le32_get(raw + 4 * (size_t)i);
    free(raw);
    s->data_offset = (uint64_t)header + cbytes;
    /* qemu's 1 + (x - 1) / 512 in unsigned arithmetic (x == 0 wraps as there) */
    s->bitmap_blocks = 1 + (bitmap - 1) / 512;
    s->extent_blocks = 1 + (s->extent_size - 1) / 512;
    if (s->extent_size < 512) {
        *errmsg = xstrdup("Extent size must be at least 512");
        return -EINVAL;
    }
    if (s->extent_size & (s->extent_size - 1)) {
        *errmsg = xasprintf("Extent size %u is not a power of two", s->extent_size);
        return -EINVAL;
    }
    if (s->extent_size > 0x800000) {
        *errmsg = xasprintf("Extent size %u is too large", s->extent_size);
        return -EINVAL;
    }
    uint64_t per = s->extent_size / 512;
    if (s->catalog_size < (total_sectors + per - 1) / per) {
        *errmsg = xstrdup("Catalog size is too small for this disk size");
        return -EINVAL;
    }
    img->size = total_sectors * 512;
    return 0;
}

static void bochs_close(image_t *img)
{
    struct bochs_state *s = img->priv;
    if (s)
        free(s->catalog);
    free(s);
    img->priv = NULL;
}

/* seek_to_sector: the file offset of the guest sector at off, 0 when unallocated. */
static int sector_offset(image_t *img, uint64_t off, uint64_t *host)
{
    struct bochs_state *s = img->priv;
    uint64_t idx = off / s->extent_size, in = (off % s->extent_size) / 512;
    *host = 0;
    if (idx >= s->catalog_size || s->catalog[idx] == BOCHS_UNALLOCATED)
        return 0;
    uint64_t bm = s->data_offset + 512 * (uint64_t)s->catalog[idx] *
                                       ((uint64_t)s->extent_blocks + s->bitmap_blocks);
    uint8_t bit;
    int r = qio_pread(img->file, &bit, 1, bm + in / 8);
    if (r < 0)
        return r;
    if ((bit >> (in % 8)) & 1)
        *host = bm + 512 * ((uint64_t)s->bitmap_blocks + in);
    return 0;
}

static int64_t bochs_read_step(image_t *img, uint64_t off, uint8_t *p, size_t n)
{
    size_t len = 512 - (off % 512);
    if (len > n)
        len = n;
    uint64_t host;
    int r = sector_offset(img, off - off % 512, &host);
    if (r < 0)
        return r;
    if (!host)
        memset(p, 0, len);
    else if ((r = qio_pread(img->file, p, len, host + off % 512)) < 0)
        return r;
    return (int64_t)len;
}

static int bochs_read(image_t *img, uint64_t off, void *buf, size_t n)
{
    return read_in_steps(img, off, buf, n, bochs_read_step);
}

static int bochs_block_status(image_t *img, uint64_t off, uint64_t bytes, block_status_t *st)
{
    (void)img, (void)off;
    st->flags = BS_DATA; /* bdrv_co_block_status without a driver callback */
    st->pnum = bytes;
    return 0;
}

const struct driver bochs_driver = {
    .name = "bochs",
    .no_get_info = true,
    .probe = bochs_probe,
    .open = bochs_open,
    .close = bochs_close,
    .read = bochs_read,
    .block_status = bochs_block_status,
};
