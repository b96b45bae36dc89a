/* Writing the header of the one qcow2 model (qemu's qcow2_update_header and the header bits
 * it keeps: qcow2_mark_dirty, qcow2_mark_clean, qcow2_mark_corrupt, qcow2_mark_consistent),
 * and what qemu's qcow2_do_open writes when an image is opened read-write.
 *
 * The header cluster is rebuilt from the model as qemu rebuilds it: the v2 (72-byte) or v3
 * (112-byte, header_length 112 + unknown tail) header with the size rounded down to whole
 * sectors, the unknown header tail as read at open, then the extensions in qemu's order -
 * backing format, external data file name, crypto header, the feature table (v3 with
 * clusters over 4 KiB only: qemu's eight names, whatever table the image had), bitmaps,
 * the unknown extensions in reverse file order (qemu's list takes them at its head), END -
 * and the backing file name right after END; the rest of the cluster zero. Only the byte
 * span that differs from what the file holds is written (through the metadata port, not
 * guarded: qemu writes the header directly), so a header already in qemu's form is never
 * rewritten and the result is byte-identical to qemu's. The unknown parts come from the
 * copy of cluster 0 the model keeps (m->c0), as qemu keeps them in memory from open. */
#ifndef QIMG_QCOW2_HEADER_WRITE_H
#define QIMG_QCOW2_HEADER_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow2/image.h"

/* Cluster 0 as qemu's qcow2_update_header writes it, into buf (len == m->cs). Also sets
 * *backing_off / *backing_size to the backing file name's new place (0 when none).
 * 0, or -ENOSPC when it does not fit into one cluster (qemu's error too). */
int qcow2_header_build(const struct qcow2_image *m, uint8_t *buf, size_t len,
                       uint64_t *backing_off, uint32_t *backing_size);

/* The byte span [*from, *to) where the rebuilt cluster (new) differs from the file's
 * (cur, file_size bytes long): empty (from == to) when they are equal. A file that ends
 * inside cluster 0 gets the whole rest of the cluster, as qemu's write of it grows the
 * file. */
void qcow2_header_diff(const uint8_t *cur, const uint8_t *new, size_t cs, uint64_t file_size,
                       size_t *from, size_t *to);

/* qemu 7.2's rules for a read-write open (qcow2_do_open, qcow2_read_extensions): unknown
 * autoclear bits are cleared (the qcow2 spec asks it of every writer that does not know
 * them), and a bitmaps extension that is ignored because autoclear bit 0 is clear (its
 * bitmaps are inconsistent) is dropped. Applies them to m->h / m->ext and returns true
 * when the header must be rewritten. Used by the read-write open and by `check -r`. */
bool qcow2_header_open_update(struct qcow2_image *m);

/* qemu's qcow2_update_header: rebuild cluster 0 from the model and write what differs.
 * The model's header fields follow (header_length, backing name place, size rounding).
 * 0 or -errno. No flush (qemu's has none either). */
int qcow2_image_update_header(struct qcow2_image *m);

/* The tail of qemu's qcow2_do_open for a writable image (after the snapshot table and the
 * bitmaps are loaded): qcow2_header_open_update, the persistent bitmaps loaded and marked
 * in use (qcow2_bitmaps_load_rw, which may rewrite the header itself) and, if still
 * needed, the header rewrite.
 * 0 or -errno with *errmsg ("Could not update qcow2 header: ..."). */
int qcow2_image_activate(struct qcow2_image *m, char **errmsg);

/* Lazy refcounts (qemu's use_lazy_refcounts: the compat bit; qimg takes no option to
 * change it). */
static inline bool qcow2_image_lazy_refcounts(const struct qcow2_image *m)
{
    return m->h.version >= 3 && (m->h.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS);
}

/* qemu's qcow2_need_accurate_refcounts: false once the dirty bit is set, i.e. refcount
 * blocks need not reach the disk before the L2 entries that use their clusters (the
 * writer's dependency between its L2 and refblock caches is dropped; a crash leaves a
 * dirty image that the next read-write open repairs). */
static inline bool qcow2_image_need_accurate_refcounts(const struct qcow2_image *m)
{
    return !(m->h.incompatible_features & QCOW2_INCOMPAT_DIRTY);
}

/* May the image's guest data or metadata change? Always 0 now: persistent dirty bitmaps
 * are kept current as qemu keeps them (qcow2/bitmap_store.h: loaded and marked in use by
 * qcow2_image_activate, their bits set by every write, stored by qcow2_image_inactivate).
 * Kept as the writer's one place to refuse an image. */
int qcow2_image_may_write(const struct qcow2_image *m);

/* qemu's qcow2_mark_dirty: set the dirty bit (the 8-byte field alone) and flush, before
 * the first write whose refcount update is deferred. The writer calls it when
 * qcow2_image_lazy_refcounts(m) holds, before it links new clusters into an L2 table (as
 * qemu's qcow2_alloc_cluster_link_l2). v3 only (lazy refcounts need v3). The bit is set in
 * the model only once it is on disk. 0 or -errno. */
int qcow2_image_mark_dirty(struct qcow2_image *m);

/* qemu's qcow2_mark_clean (at a clean close, after the repair of a dirty image): caches
 * flushed first (qcow2_image_flush_caches), then the header rewritten without the dirty
 * bit. Nothing happens when the bit is clear. 0 or -errno. */
int qcow2_image_mark_clean(struct qcow2_image *m);

/* qemu's qcow2_mark_corrupt: the corrupt bit set and the header rewritten (v2 images have
 * no such bit; qemu rewrites their header anyway). 0 or -errno. */
int qcow2_image_mark_corrupt(struct qcow2_image *m);

/* qemu's qcow2_mark_consistent: caches flushed, the corrupt bit cleared, header rewritten
 * (nothing when the bit is clear). 0 or -errno. */
int qcow2_image_mark_consistent(struct qcow2_image *m);

/* qemu's qcow2_flush_caches: the writer's dirty L2 tables, then (unless the image is
 * dirty: qcow2_image_need_accurate_refcounts) its dirty refcount blocks written, as qemu's
 * qcow2_write_caches, then a flush of the image file. The caches are the writer's: it sets
 * the model's hooks m->l2_flush and m->rb_flush (NULL: nothing cached). 0 or -errno. */
int qcow2_image_flush_caches(struct qcow2_image *m);

/* qemu's qcow2_inactivate (close of a writable image): caches flushed and, if that
 * worked, the dirty bit cleared (qcow2_image_mark_clean). Errors are printed as qemu
 * prints them ("Failed to flush the ... cache: ..."). Only once, and only for a model
 * its user marked active (m->active: opened read-write and activated). 0 or -errno. */
int qcow2_image_inactivate(struct qcow2_image *m);

#endif
