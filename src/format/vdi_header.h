/* VDI header (512 bytes at offset 0, little-endian) and block map entries: decode and
 * validate in the order of qemu 7.2's vdi_open(), with its messages in err->qemu_msg. */
#ifndef QIMG_FORMAT_VDI_HEADER_H
#define QIMG_FORMAT_VDI_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/fmt_error.h"

#define VDI_SIGNATURE   0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_HEADER_LEN  512u
#define VDI_TYPE_DYNAMIC 1u
#define VDI_TYPE_STATIC  2u
#define VDI_SECTOR_SIZE 512u
#define VDI_BLOCK_SIZE  1048576u          /* the only block size qemu accepts */

#define VDI_UNALLOCATED 0xffffffffu        /* never written: reads as zeros */
#define VDI_DISCARDED   0xfffffffeu        /* discarded: reads as zeros */
#define VDI_IS_ALLOCATED(e) ((e) < VDI_DISCARDED)

/* qemu: the block map must fit in INT_MAX bytes after rounding up to a sector. */
#define VDI_BLOCKS_IN_IMAGE_MAX ((uint32_t)((2147483648u - 512u) / 4u))
#define VDI_DISK_SIZE_MAX ((uint64_t)VDI_BLOCKS_IN_IMAGE_MAX * VDI_BLOCK_SIZE)

enum {
    VDI_OFF_SIGNATURE = 0x40, VDI_OFF_VERSION = 0x44, VDI_OFF_HEADER_SIZE = 0x48,
    VDI_OFF_IMAGE_TYPE = 0x4c, VDI_OFF_IMAGE_FLAGS = 0x50, VDI_OFF_BMAP = 0x154,
    VDI_OFF_DATA = 0x158, VDI_OFF_SECTOR_SIZE = 0x168, VDI_OFF_DISK_SIZE = 0x170,
    VDI_OFF_BLOCK_SIZE = 0x178, VDI_OFF_BLOCK_EXTRA = 0x17c, VDI_OFF_BLOCKS = 0x180,
    VDI_OFF_ALLOCATED = 0x184, VDI_OFF_UUID_IMAGE = 0x188, VDI_OFF_UUID_SNAP = 0x198,
    VDI_OFF_UUID_LINK = 0x1a8, VDI_OFF_UUID_PARENT = 0x1b8,
};

struct vdi_header {
    uint32_t signature, version, header_size, image_type, image_flags;
    uint32_t offset_bmap, offset_data, sector_size;
    uint64_t disk_size;        /* rounded up to 512, as qemu does */
    uint64_t disk_size_raw;    /* as stored */
    uint32_t block_size, block_extra, blocks_in_image, blocks_allocated;
    uint8_t uuid_image[16], uuid_last_snap[16], uuid_link[16], uuid_parent[16];
    uint64_t bmap_bytes;       /* blocks_in_image * 4 rounded up to a sector: what qemu reads */
};

/* buf: the file's first bytes, zero-padded past EOF by the caller (qemu reads do that);
 * at least VDI_HEADER_LEN. Returns 0, -EINVAL or -ENOTSUP with err filled. */
int vdi_header_decode(const uint8_t *buf, size_t len, struct vdi_header *h,
                      struct fmt_error *err);

/* Host offset of byte in_block of physical block `entry`; no overflow possible (u32
 * offset + u32 * 2^20 + < 2^20). */
static inline uint64_t vdi_block_offset(const struct vdi_header *h, uint32_t entry,
                                        uint32_t in_block)
{
    return (uint64_t)h->offset_data + (uint64_t)entry * h->block_size + in_block;
}

#endif
