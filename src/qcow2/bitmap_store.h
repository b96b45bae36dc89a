/* Persistent dirty bitmaps of a writable qcow2 image, in memory, as qemu 7.2 keeps them
 * (block/qcow2-bitmap.c):
 *   - qcow2_bitmaps_load_rw at a read-write open (qcow2_load_dirty_bitmaps): every bitmap
 *     of the directory (m->bm) read into memory; one already in use is kept as
 *     inconsistent (no data, never stored); the others get the IN_USE flag, written back
 *     in place (update_ext_header_and_dir_in_place: autoclear bit off, header, directory,
 *     autoclear bit on, header);
 *   - qcow2_bitmaps_set_dirty for every guest write, zero write and discard
 *     (bdrv_set_dirty: the bits of each enabled bitmap the range touches);
 *   - qcow2_bitmaps_store at close (qcow2_store_persistent_dirty_bitmaps): each
 *     consistent bitmap's data clusters then its table written to newly allocated
 *     clusters, in directory order; the directory written to new clusters, caches
 *     flushed, the header switched to it; the old directory, then the old tables and
 *     their data clusters freed.
 * The bitmap command (add, remove, clear, merge) builds on qcow2_dbitmap_add / _find and
 * on the store, which writes new bitmaps at the end of the directory as qemu does.
 * Memory: each consistent bitmap holds its serialized bits (at most qemu's 512 MiB
 * physical limit per bitmap, validated at load). */
#ifndef QIMG_QCOW2_BITMAP_STORE_H
#define QIMG_QCOW2_BITMAP_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "format/qcow2_bitmap.h"
#include "qcow2/image.h"

struct qcow2_dbitmap {
    char *name;
    uint32_t gran_bits;
    bool enabled;        /* the AUTO flag: guest writes set its bits */
    bool inconsistent;   /* in use when loaded: no data, the close leaves its entry as is */
    uint64_t nbits;      /* granules of the disk */
    uint64_t nbytes;     /* serialized size: whole 64-bit words, bit i in byte i/8 bit i%8 */
    uint8_t *bits;       /* nbytes; NULL when inconsistent */
};

/* m->dbm: the bitmaps in creation (directory) order. */
struct qcow2_dbitmaps {
    struct qcow2_dbitmap *v;
    uint32_t n;
};

/* qemu's qcow2_load_dirty_bitmaps for a writable image (after qcow2_image_load_bitmaps).
 * *header_updated: the header was rewritten (the caller's own header update is then not
 * needed: qemu's update_header && !header_updated). 0 or -errno with *errmsg. */
int qcow2_bitmaps_load_rw(struct qcow2_image *m, bool *header_updated, char **errmsg);

/* bdrv_set_dirty: [off, off+len) touched in every enabled, consistent bitmap. */
void qcow2_bitmaps_set_dirty(struct qcow2_image *m, uint64_t off, uint64_t len);

/* qemu's qcow2_store_persistent_dirty_bitmaps (needs the writer: allocator, caches).
 * Nothing when no consistent bitmap is loaded. 0 or -errno with *errmsg. */
int qcow2_bitmaps_store(struct qcow2_image *m, char **errmsg);

/* The in-memory bitmap of that name (consistent or not), NULL if none. */
struct qcow2_dbitmap *qcow2_dbitmap_find(struct qcow2_image *m, const char *name);

/* A new empty bitmap (qemu's bdrv_create_dirty_bitmap + persistence) for the disk's
 * size; stored at the next qcow2_bitmaps_store. NULL on allocation failure. */
struct qcow2_dbitmap *qcow2_dbitmap_add(struct qcow2_image *m, const char *name,
                                        uint32_t gran_bits, bool enabled);

/* qemu's block-dirty-bitmap-remove of a persistent bitmap: the entry dropped from the
 * directory on disk (qcow2_co_remove_persistent_dirty_bitmap: new directory, header,
 * then the entry's table and data clusters freed), then the bitmap released from memory.
 * A name on neither is no error. 0 or -errno with *errmsg. */
int qcow2_bitmap_remove(struct qcow2_image *m, const char *name, char **errmsg);

/* qcow2_load_dirty_bitmaps of a read-only image (a merge source): every bitmap of the
 * directory read into m->dbm, in-use ones as inconsistent; nothing written. 0 or -errno
 * with *errmsg. */
int qcow2_bitmaps_load_ro(struct qcow2_image *m, char **errmsg);

/* qemu's qcow2_truncate_bitmaps_check: every bitmap of the directory must be in memory
 * and usable (not inconsistent). 0, or -ENOTSUP with *errmsg. */
int qcow2_bitmaps_truncate_check(struct qcow2_image *m, char **errmsg);

/* bdrv_dirty_bitmap_truncate after a resize to size bytes: bits past the end cleared,
 * new bits clear. 0 or -ENOMEM (the bitmaps keep their old size then). */
int qcow2_bitmaps_resize(struct qcow2_image *m, uint64_t size);

/* The serialized bits of directory entry e (load_bitmap_data), for a reader of any open
 * mode: *bits malloc'd, *nbytes long. 0 or -errno. */
int qcow2_bitmap_read_bits(struct qcow2_image *m, const struct qcow2_bitmap_dirent *e,
                           uint8_t **bits, uint64_t *nbytes);

/* Frees m->dbm. */
void qcow2_bitmaps_free(struct qcow2_image *m);

#endif
