/* VDI guest writes, as qemu 7.2's vdi_co_pwritev: an allocated block (static images: all)
 * is written in place; an unallocated or discarded one gets the next physical block
 * (blocks_allocated, i.e. appended in order), written whole with zeros around the new
 * bytes. After the data, the header (blocks_allocated; disk_size as rounded at open) and
 * the map sectors from the first to the last entry the request changed are rewritten from
 * the copies read at open, through the write port.
 *
 * Crash order (qemu's): data, header, map. Cut after the header, the header counts a block
 * no map entry names: qemu's check reports "allocated blocks mismatch", the guest bytes
 * are the old ones and the next allocation skips that block; never two entries for one
 * block (map before header would allow that). qimg does better where it can: when the map
 * starts right after the header (every qemu-made image) and the span up to the last
 * changed sector is at most VDI_META_MERGE_MAX, header and map go in one write, so a
 * killed process leaves old or new metadata, never a mismatch. Otherwise a flush orders
 * the header before the map (qemu has none there). Also stricter than qemu: the new blocks
 * are flushed before the metadata that maps them.
 *
 * Only the metadata goes through the write port (so journal and plan backends can take it
 * later); guest data is written to the file directly, as the qcow2 writer does, so the
 * port's idea of the file size may lag behind the data's growth (harmless for the direct
 * port, which is the only one used here).
 *
 * Deliberately different from qemu: an allocation when blocks_allocated already reaches
 * blocks_in_image fails with EIO (qemu would write an entry its own check calls "block
 * index too large", or past 2^32 blocks); memory is rolled back when a data write fails. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/vdi_int.h"
#include "format/be.h"
#include "io/wport.h"
#include "util/xalloc.h"

#define VDI_META_MERGE_MAX (1u << 20)
#define VDI_ENTRIES_PER_SECTOR (VDI_SECTOR_SIZE / 4)

/* Map sector k as qemu's in-memory map holds it: entries, then the padding read at open. */
static void map_sector(const struct vdi_state *s, uint64_t k, uint8_t *out)
{
    uint64_t used = (uint64_t)s->h.blocks_in_image * 4;
    for (uint32_t j = 0; j < VDI_ENTRIES_PER_SECTOR; j++) {
        uint64_t i = k * VDI_ENTRIES_PER_SECTOR + j;
        if (i < s->h.blocks_in_image)
            le32_put(out + j * 4, vdi_entry(s, i));
        else
            memcpy(out + j * 4, s->map_pad + (i * 4 - used), 4);
    }
}

static void header_bytes(const struct vdi_state *s, uint8_t *out)
{
    memcpy(out, s->raw_header, VDI_HEADER_LEN);
    le64_put(out + VDI_OFF_DISK_SIZE, s->h.disk_size);
    le32_put(out + VDI_OFF_ALLOCATED, s->h.blocks_allocated);
}

/* Header and map entries first..last (guest block indices) to the file. */
static int write_meta(struct vdi_state *s, uint64_t first, uint64_t last)
{
    uint64_t k0 = first / VDI_ENTRIES_PER_SECTOR, k1 = last / VDI_ENTRIES_PER_SECTOR;
    bool merge = s->h.offset_bmap == VDI_HEADER_LEN &&
                 s->h.offset_data >= (uint64_t)s->h.offset_bmap + s->h.bmap_bytes &&
                 VDI_HEADER_LEN + (k1 + 1) * VDI_SECTOR_SIZE <= VDI_META_MERGE_MAX;
    if (merge)
        k0 = 0; /* sectors before `first` are the file's bytes already: no overlap */
    size_t head = merge ? VDI_HEADER_LEN : 0;
    size_t len = head + (size_t)(k1 - k0 + 1) * VDI_SECTOR_SIZE;
    uint8_t *buf = xmalloc(len);
    if (merge)
        header_bytes(s, buf);
    for (uint64_t k = k0; k <= k1; k++)
        map_sector(s, k, buf + head + (k - k0) * VDI_SECTOR_SIZE);
    int r = 0;
    if (!merge) {
        uint8_t hb[VDI_HEADER_LEN];
        header_bytes(s, hb);
        wport_label(s->port, PC_HEADER, "VDI header: %u blocks allocated",
                    s->h.blocks_allocated);
        r = wport_pwrite(s->port, 0, hb, sizeof(hb));
        if (r == 0)
            r = wport_flush(s->port);
    }
    if (r == 0) {
        wport_label(s->port, merge ? PC_HEADER : PC_TABLE,
                    "VDI %sblock map entries %llu..%llu", merge ? "header and " : "",
                    (unsigned long long)first, (unsigned long long)last);
        r = wport_pwrite(s->port, merge ? 0 : s->h.offset_bmap + k0 * VDI_SECTOR_SIZE, buf,
                         len);
    }
    free(buf);
    return r;
}

int vdi_write(image_t *img, uint64_t off, const void *buf, size_t n)
{
    struct vdi_state *s = img->priv;
    const uint8_t *p = buf;
    const uint32_t bs = s->h.block_size;
    const uint32_t allocated0 = s->h.blocks_allocated;
    uint64_t first = UINT64_MAX, last = 0;
    uint8_t *block = NULL;
    struct { uint64_t b; uint32_t old; } *fresh = NULL; /* this request's allocations */
    size_t n_fresh = 0;
    int r = 0;
    if (!s->port)
        return -EPERM;
    while (n && r == 0) {
        uint64_t b = off / bs; /* < blocks_in_image: off < disk_size <= room */
        uint32_t in = (uint32_t)(off % bs);
        size_t len = bs - in < n ? bs - in : n;
        uint32_t e = vdi_entry(s, b);
        if (VDI_IS_ALLOCATED(e)) {
            r = qio_pwrite(img->file, p, len, vdi_block_offset(&s->h, e, in));
        } else if (s->h.blocks_allocated >= s->h.blocks_in_image) {
            r = -EIO; /* the map is inconsistent: see the top comment */
        } else {
            /* b < n_stored: entries past EOF read as 0, i.e. allocated */
            fresh = xreallocarray(fresh, n_fresh + 1, sizeof(*fresh));
            fresh[n_fresh].b = b;
            fresh[n_fresh++].old = e;
            e = s->h.blocks_allocated++;
            s->bmap[b] = e;
            if (first == UINT64_MAX)
                first = b;
            last = b;
            if (!block)
                block = xmalloc(bs);
            memset(block, 0, in);
            memcpy(block + in, p, len);
            memset(block + in + len, 0, bs - in - len);
            r = qio_pwrite(img->file, block, bs, vdi_block_offset(&s->h, e, 0));
        }
        off += len;
        p += len;
        n -= len;
    }
    free(block);
    if (r < 0) {
        /* nothing of this request's allocations reached the metadata: forget them */
        while (n_fresh--)
            s->bmap[fresh[n_fresh].b] = fresh[n_fresh].old;
        s->h.blocks_allocated = allocated0;
        free(fresh);
        return r;
    }
    free(fresh);
    if (first == UINT64_MAX)
        return 0;
    /* new blocks on disk before a map entry names them (qemu leaves that to the guest's
     * flushes), as qimg's qcow2 writer does before an L2 table */
    r = qio_flush(img->file);
    return r < 0 ? r : write_meta(s, first, last);
}
