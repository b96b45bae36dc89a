/* Refcount updates and cluster allocation of the one qcow2 model, with qemu's rules and
 * order (block/qcow2-refcount.c), so that images qimg writes are laid out where qemu puts
 * them (`map` shows host offsets):
 *   - qcow2_alloc_clusters searches free clusters from m->free_cluster_index as qemu's
 *     alloc_clusters_noref does, then takes the references (update_refcount);
 *   - a refcount update that needs a new refblock allocates it as alloc_refcount_block
 *     does (a refblock that must describe itself; growth of the refcount table through
 *     qcow2_refcount_area, the old table freed after the switch);
 *   - refblocks are cached write-back (m->rb, dirty slots written through the metadata
 *     port, qcow2/port.h) and reach the disk before any L2 entry that uses the clusters
 *     they count (the L2 cache calls qcow2_refcount_flush first; with lazy refcounts the
 *     image is marked dirty instead).
 * Every function returns 0 (or the offset) or -errno; an impossible metadata state met on
 * the way (a refblock offset unaligned, a new refblock at offset 0) is qemu's corruption
 * event and -EIO; a refcount that would overflow or drop below 0 is -EINVAL, as in qemu.
 * Discards of freed clusters go to the file directly (qio_fallocate punch-hole, errors
 * ignored as qemu ignores them); the opener sets m->discard_passthrough as qemu's open does
 * (all false when the file is not opened with discard=unmap: qemu's discards are no-ops
 * then). */
#ifndef QIMG_QCOW2_ALLOC_H
#define QIMG_QCOW2_ALLOC_H

#include <stdbool.h>
#include <stdint.h>

#include "qcow2/image.h"

/* qemu's enum qcow2_discard_type: which freed clusters are passed down as discards. */
enum qcow2_discard_type {
    QCOW2_DISCARD_NEVER,
    QCOW2_DISCARD_ALWAYS,
    QCOW2_DISCARD_REQUEST,
    QCOW2_DISCARD_SNAPSHOT,
    QCOW2_DISCARD_OTHER,
};

/* qemu's update_refcount: add addend (may be negative) to the refcount of every cluster
 * touching [off, off+len); refblocks allocated as needed; rolled back on failure. A
 * refcount that drops to 0 moves free_cluster_index back and, if the discard type passes
 * (m->discard_passthrough), the cluster is discarded in the file. As in qemu, -EAGAIN
 * means a new refblock was placed (maybe inside the range) and everything was rolled back:
 * an allocating caller searches again; the others call again. */
int qcow2_update_refcount(struct qcow2_image *m, uint64_t off, uint64_t len, int64_t addend,
                          enum qcow2_discard_type type);

/* qemu's s->cache_discards = true: from now on the discards of freed clusters are collected
 * (adjacent ones merged) instead of passed down at once ... */
void qcow2_discards_cache(struct qcow2_image *m);
/* ... until qemu's qcow2_process_discards: passed down in their order (none when ret < 0),
 * and collecting stops. */
void qcow2_discards_process(struct qcow2_image *m, int ret);

/* qemu's qcow2_alloc_clusters: size bytes (rounded up to clusters) of contiguous free
 * clusters with refcount 1; the file is not grown here (writes past EOF grow it). */
int64_t qcow2_alloc_clusters(struct qcow2_image *m, uint64_t size);

/* qemu's qcow2_alloc_clusters_at: allocate up to n clusters starting exactly at off (cluster
 * aligned), stopping at the first one in use. Returns how many were allocated (0 if the
 * first is in use) or -errno. */
int64_t qcow2_alloc_clusters_at(struct qcow2_image *m, uint64_t off, uint64_t n);

/* qemu's qcow2_alloc_bytes: size bytes (<= one cluster) for a compressed cluster, packed
 * after the last such allocation (m->free_byte_offset) as qemu packs them. */
int64_t qcow2_alloc_bytes(struct qcow2_image *m, uint64_t size);

/* qemu's qcow2_free_clusters: refcount -1 over [off, off+size); failures are reported
 * (qemu's "qcow2_free_clusters failed" line) and leak the clusters. */
void qcow2_free_clusters(struct qcow2_image *m, uint64_t off, uint64_t size,
                         enum qcow2_discard_type type);

/* qemu's qcow2_free_any_cluster: frees what an L2 entry references (a normal cluster, a
 * compressed cluster's sectors; nothing for zero/unallocated; with an external data file
 * the data cluster is only discarded, never refcounted). */
void qcow2_free_any_cluster(struct qcow2_image *m, uint64_t l2_entry,
                            enum qcow2_discard_type type);

/* Write every dirty cached refblock (and nothing else) through the port (qemu's
 * qcow2_cache_write on the refblock cache: if a refcount was decreased, the L2 cache's
 * l2_flush hook runs first). */
int qcow2_refcount_flush(struct qcow2_image *m);

/* qemu's qcow2_cache_flush on the refblock cache: qcow2_refcount_flush, then a barrier
 * (qcow2_meta_flush). Clears rb.l2_waits_rb: the L2 cache calls this before writing a
 * table while rb.l2_waits_rb is set. */
int qcow2_refcount_cache_flush(struct qcow2_image *m);

/* qemu's qcow2_cache_set_dependency(l2_table_cache, refcount_block_cache), for the L2 module
 * after it takes clusters from the allocator and before it writes entries naming them: L2
 * tables are written only after the refblocks (rb.l2_waits_rb). A pending opposite order
 * (a decrease waiting for the L2 cache) is settled first by the l2_flush hook. */
int qcow2_l2_depends_on_refblocks(struct qcow2_image *m);

/* Writes cache slot `slot` (dirty) through m's port, the L2 cache first when
 * rb.rb_waits_l2 (the eviction path of qcow2_rb_cache_take). 0 or -errno. */
int qcow2_refcount_write_slot(struct qcow2_image *m, unsigned slot);

/* qemu's qcow2_refcount_metadata_size: refcount blocks + table bytes that cover `clusters`
 * clusters and themselves (with generous_increase, room for a table 1.5x as large);
 * *refblock_count, if not NULL, the number of refblocks. */
int64_t qcow2_refcount_metadata_size(int64_t clusters, uint64_t cluster_size,
                                     unsigned refcount_order, bool generous_increase,
                                     uint64_t *refblock_count);

/* qemu's qcow2_refcount_area: new self-describing refcount structures starting at
 * start_offset (cluster aligned; only free space from there on): refblocks, then a new
 * reftable covering them, additional_clusters beyond their end, and the image's current
 * clusters; exact_size false gives the table 50 % spare entries. A refblock offset
 * new_rb_offset (not 0) is entered at index new_rb_index. The blocks and the table are
 * written and flushed, the header switched in one write (refcount_table_offset and
 * refcount_table_clusters), the model switched (m->rt, rt_entries, the header fields) and
 * the old table freed. Returns the offset after the new structures or -errno. */
int64_t qcow2_refcount_area(struct qcow2_image *m, uint64_t start_offset,
                            uint64_t additional_clusters, bool exact_size,
                            uint64_t new_rb_index, uint64_t new_rb_offset);

#endif
