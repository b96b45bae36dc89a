/* The persistent bitmaps qemu loads when it opens a qcow2 image (qcow2_load_dirty_bitmaps,
 * qemu-img info, map, check and the rest alike): the model loads the directory once
 * (qcow2_image_load_bitmaps, qcow2/image.h) for the block layer and the checker, so both
 * refuse the same images with the same message and read the same entries. */
#ifndef QIMG_QCOW2_BITMAPS_H
#define QIMG_QCOW2_BITMAPS_H

#include <stdint.h>

#include "format/qcow2_bitmap.h"

/* Reads len bytes at off of the image file (past EOF reads zeros); 0 or -errno. */
typedef int (*qcow2_bitmap_pread_fn)(void *ctx, void *buf, uint64_t len, uint64_t off);

/* qemu's order: bitmap_list_load (the whole directory: size, read, entry layout, counts,
 * per-entry constraints), then each bitmap in directory order as load_bitmap does it
 * (a name already loaded: "Bitmap already exists", unless this one is in use and is
 * skipped; in-use data is not read; table entries; table size for the disk). On success
 * *out holds the *n_out directory entries (the caller frees it); else -errno and
 * *errmsg (qemu's text, malloc'd). virtual_size: the disk size qemu uses (size rounded
 * down to 512). */
int qcow2_bitmaps_open(qcow2_bitmap_pread_fn rd, void *ctx, uint32_t cluster_bits,
                       uint64_t virtual_size, uint64_t dir_offset, uint64_t dir_size,
                       uint32_t nb_bitmaps, struct qcow2_bitmap_dirent **out,
                       uint32_t *n_out, char **errmsg);

/* One bitmap table (table_size entries at table_offset), each entry checked as qemu's
 * bitmap_table_load does. *bad_index: the first bad entry. 0, -EINVAL or the read error;
 * *out (malloc'd, host order) on success. */
int qcow2_bitmap_table_load(qcow2_bitmap_pread_fn rd, void *ctx, uint32_t cluster_bits,
                            const struct qcow2_bitmap_dirent *e, uint64_t **out,
                            uint64_t *bad_index);

#endif
