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
 * the way (a refblock offset unaligned, a refcount overflowing) is qemu's corruption event
 * and -EIO. */
#ifndef QIMG_QCOW2_ALLOC_H
#define QIMG_QCOW2_ALLOC_H

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
 * (m->discard_passthrough), the cluster is discarded in the file. */
int qcow2_update_refcount(struct qcow2_image *m, uint64_t off, uint64_t len, int64_t addend,
                          enum qcow2_discard_type type);

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

/* Write every dirty cached refblock (and nothing else) through the port. */
int qcow2_refcount_flush(struct qcow2_image *m);

#endif
