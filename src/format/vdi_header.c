/* VDI header decoder: qemu 7.2 vdi_open() order and messages. */
#include "format/vdi_header.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "format/be.h"

#define HDR "VDI header"
#define FAIL(code, field, value, off, ...) \
    fmt_error_set(err, code, HDR, field, value, true, off, __VA_ARGS__)

static bool uuid_null(const uint8_t *u)
{
    for (int i = 0; i < 16; i++)
        if (u[i])
            return false;
    return true;
}

int vdi_header_decode(const uint8_t *buf, size_t len, struct vdi_header *h,
                      struct fmt_error *err)
{
    memset(h, 0, sizeof(*h));
    if (len < VDI_HEADER_LEN)
        return FAIL(-EINVAL, NULL, len, 0, "buffer of %zu bytes is shorter than the %u-byte "
                    "header", len, VDI_HEADER_LEN);
    h->signature = le32_get(buf + VDI_OFF_SIGNATURE);
    h->version = le32_get(buf + VDI_OFF_VERSION);
    h->header_size = le32_get(buf + VDI_OFF_HEADER_SIZE);
    h->image_type = le32_get(buf + VDI_OFF_IMAGE_TYPE);
    h->image_flags = le32_get(buf + VDI_OFF_IMAGE_FLAGS);
    h->offset_bmap = le32_get(buf + VDI_OFF_BMAP);
    h->offset_data = le32_get(buf + VDI_OFF_DATA);
    h->sector_size = le32_get(buf + VDI_OFF_SECTOR_SIZE);
    h->disk_size_raw = h->disk_size = le64_get(buf + VDI_OFF_DISK_SIZE);
    h->block_size = le32_get(buf + VDI_OFF_BLOCK_SIZE);
    h->block_extra = le32_get(buf + VDI_OFF_BLOCK_EXTRA);
    h->blocks_in_image = le32_get(buf + VDI_OFF_BLOCKS);
    h->blocks_allocated = le32_get(buf + VDI_OFF_ALLOCATED);
    memcpy(h->uuid_image, buf + VDI_OFF_UUID_IMAGE, 16);
    memcpy(h->uuid_last_snap, buf + VDI_OFF_UUID_SNAP, 16);
    memcpy(h->uuid_link, buf + VDI_OFF_UUID_LINK, 16);
    memcpy(h->uuid_parent, buf + VDI_OFF_UUID_PARENT, 16);

    /* qemu tests the size before the signature */
    if (h->disk_size > VDI_DISK_SIZE_MAX) {
        FAIL(-ENOTSUP, "disk_size", h->disk_size, VDI_OFF_DISK_SIZE,
             "must be at most %#" PRIx64, VDI_DISK_SIZE_MAX);
        fmt_error_qemu(err, "Unsupported VDI image size (size is 0x%" PRIx64 ", max "
                       "supported is 0x%" PRIx64 ")", h->disk_size, VDI_DISK_SIZE_MAX);
        return -ENOTSUP;
    }
    /* odd sizes (VBoxManage convertfromraw) are accepted and rounded up */
    h->disk_size = (h->disk_size + 511) & ~(uint64_t)511;

    if (h->signature != VDI_SIGNATURE) {
        FAIL(-EINVAL, "signature", h->signature, VDI_OFF_SIGNATURE, "must be 0x%08x",
             VDI_SIGNATURE);
        fmt_error_qemu(err, "Image not in VDI format (bad signature %08" PRIx32 ")",
                       h->signature);
        return -EINVAL;
    }
    if (h->version != VDI_VERSION_1_1) {
        FAIL(-ENOTSUP, "version", h->version, VDI_OFF_VERSION, "must be 1.1");
        fmt_error_qemu(err, "unsupported VDI image (version %" PRIu32 ".%" PRIu32 ")",
                       h->version >> 16, h->version & 0xffff);
        return -ENOTSUP;
    }
    if (h->offset_bmap % VDI_SECTOR_SIZE) {
        FAIL(-ENOTSUP, "offset_bmap", h->offset_bmap, VDI_OFF_BMAP,
             "must be a multiple of 512");
        fmt_error_qemu(err, "unsupported VDI image (unaligned block map offset 0x%" PRIx32
                       ")", h->offset_bmap);
        return -ENOTSUP;
    }
    if (h->offset_data % VDI_SECTOR_SIZE) {
        FAIL(-ENOTSUP, "offset_data", h->offset_data, VDI_OFF_DATA,
             "must be a multiple of 512");
        fmt_error_qemu(err, "unsupported VDI image (unaligned data offset 0x%" PRIx32 ")",
                       h->offset_data);
        return -ENOTSUP;
    }
    if (h->sector_size != VDI_SECTOR_SIZE) {
        FAIL(-ENOTSUP, "sector_size", h->sector_size, VDI_OFF_SECTOR_SIZE, "must be 512");
        fmt_error_qemu(err, "unsupported VDI image (sector size %" PRIu32 " is not 512)",
                       h->sector_size);
        return -ENOTSUP;
    }
    if (h->block_size != VDI_BLOCK_SIZE) {
        FAIL(-ENOTSUP, "block_size", h->block_size, VDI_OFF_BLOCK_SIZE, "must be %u",
             VDI_BLOCK_SIZE);
        fmt_error_qemu(err, "unsupported VDI image (block size %" PRIu32 " is not %u)",
                       h->block_size, VDI_BLOCK_SIZE);
        return -ENOTSUP;
    }
    uint64_t room = (uint64_t)h->blocks_in_image * h->block_size;
    if (h->disk_size > room) {
        FAIL(-ENOTSUP, "disk_size", h->disk_size, VDI_OFF_DISK_SIZE,
             "must fit in blocks_in_image (%" PRIu32 ") blocks", h->blocks_in_image);
        fmt_error_qemu(err, "unsupported VDI image (disk size %" PRIu64 ", image bitmap has "
                       "room for %" PRIu64 ")", h->disk_size, room);
        return -ENOTSUP;
    }
    if (!uuid_null(h->uuid_link)) {
        FAIL(-ENOTSUP, "uuid_link", 0, VDI_OFF_UUID_LINK, "must be the null UUID");
        fmt_error_qemu(err, "unsupported VDI image (non-NULL link UUID)");
        return -ENOTSUP;
    }
    if (!uuid_null(h->uuid_parent)) {
        FAIL(-ENOTSUP, "uuid_parent", 0, VDI_OFF_UUID_PARENT, "must be the null UUID");
        fmt_error_qemu(err, "unsupported VDI image (non-NULL parent UUID)");
        return -ENOTSUP;
    }
    if (h->blocks_in_image > VDI_BLOCKS_IN_IMAGE_MAX) {
        FAIL(-ENOTSUP, "blocks_in_image", h->blocks_in_image, VDI_OFF_BLOCKS,
             "must be at most %" PRIu32, VDI_BLOCKS_IN_IMAGE_MAX);
        fmt_error_qemu(err, "unsupported VDI image (too many blocks %" PRIu32 ", max is %"
                       PRIu32 ")", h->blocks_in_image, VDI_BLOCKS_IN_IMAGE_MAX);
        return -ENOTSUP;
    }
    h->bmap_bytes = ((uint64_t)h->blocks_in_image * 4 + 511) / 512 * 512;
    return 0;
}
