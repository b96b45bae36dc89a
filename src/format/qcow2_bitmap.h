/* Persistent dirty bitmaps: directory entries and bitmap table entries (digest §1.9). */
#ifndef QIMG_FORMAT_QCOW2_BITMAP_H
#define QIMG_FORMAT_QCOW2_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/fmt_error.h"

#define QCOW2_BME_HDR_SIZE          24u
#define QCOW2_BME_FLAG_IN_USE       (1u << 0)
#define QCOW2_BME_FLAG_AUTO         (1u << 1)
#define QCOW2_BME_FLAG_EXTRA_COMPAT (1u << 2)
#define QCOW2_BME_RESERVED_FLAGS    0xfffffffcu
#define QCOW2_BME_TYPE_DIRTY        1u
#define QCOW2_BME_MIN_GRANULARITY   9u
#define QCOW2_BME_MAX_GRANULARITY   31u
#define QCOW2_BME_MAX_NAME_SIZE     1023u
#define QCOW2_BME_MAX_TABLE_SIZE    0x8000000u
#define QCOW2_BME_MAX_PHYS_SIZE     0x20000000ull

#define QCOW2_BME_TABLE_OFFSET_MASK   0x00fffffffffffe00ull
#define QCOW2_BME_TABLE_RESERVED_MASK 0xff000000000001feull
#define QCOW2_BME_TABLE_ALL_ONES      1ull

struct qcow2_bitmap_dirent {
    uint64_t bitmap_table_offset;
    uint32_t bitmap_table_size;
    uint32_t flags;
    uint8_t type;
    uint8_t granularity_bits;
    uint16_t name_size;
    uint32_t extra_data_size;
    uint64_t extra_offset;    /* offset of extra data inside the directory buffer */
    char name[QCOW2_BME_MAX_NAME_SIZE + 1];   /* NUL-terminated copy (<= 1023 bytes) */
};

/* Decode one directory entry at buf (the rest of the directory). Structural errors
 * (entry runs past buf_len: qemu "Broken bitmap directory") give -EINVAL; *entry_len is
 * the 8-aligned size to the next entry. Does not apply the constraints: call
 * qcow2_bitmap_dirent_validate(). */
int qcow2_bitmap_dirent_decode(const uint8_t *buf, size_t buf_len, uint64_t entry_file_offset,
                               struct qcow2_bitmap_dirent *e, uint64_t *entry_len,
                               struct fmt_error *err);

/* qemu's per-entry constraints, in qemu's order: extra_data_size != 0 ("Bitmap extra
 * data is not supported"), then check_dir_entry ("Bitmap '%.*s' doesn't satisfy the
 * constraints"): table size 1..0x8000000, offset non-zero and cluster-aligned,
 * granularity 9..31, no reserved flags, name_size <= 1023, type 1,
 * table_size*cs <= 512 MiB, and if not in_use the table must cover virtual_size.
 * Also refuses name_size 0 (spec rule qemu skips): that error has an empty qemu_msg. */
int qcow2_bitmap_dirent_validate(const struct qcow2_bitmap_dirent *e, uint32_t cluster_bits,
                                 uint64_t virtual_size, uint64_t entry_file_offset,
                                 struct fmt_error *err);

/* Bitmap table entry. */
struct qcow2_bitmap_tentry {
    uint64_t offset;      /* data cluster; 0 = all zeros or all ones */
    bool all_ones;        /* bit 0 with offset 0 */
    uint64_t reserved;    /* entry & reserved mask */
};

void qcow2_bitmap_tentry_decode(uint64_t entry, struct qcow2_bitmap_tentry *out);
/* qemu's check_table_entry: reserved bits, bit 0 with an offset, alignment. */
int qcow2_bitmap_tentry_validate(uint64_t entry, uint32_t cluster_bits,
                                 uint64_t entry_file_offset, struct fmt_error *err);

/* Bitmap table entries qemu's load_bitmap_data requires for a bitmap of a disk of
 * virtual_size bytes (qemu's bdrv_getlength: size rounded down to 512): one bit per
 * granule, serialized in whole 64-bit words, in clusters. 0 for an empty disk (qemu then
 * refuses every table, whose size is at least 1). */
uint64_t qcow2_bitmap_table_clusters(uint64_t virtual_size, uint32_t granularity_bits,
                                     uint32_t cluster_bits);

/* Size of an encoded entry (8-aligned) for a name and extra data size. */
uint64_t qcow2_bitmap_dirent_size(uint32_t name_size, uint32_t extra_data_size);

#endif
