/* The L2 tables of the one qcow2 model: a bounded write-back cache (qemu's l2_table_cache,
 * block/qcow2-cache.c), lookup for guest reads and block status, allocation of new tables
 * (qemu's l2_allocate / get_cluster_table, with growth of the L1 table as
 * qcow2_grow_l1_table), OFLAG_COPIED maintenance and, with extended L2, the subcluster
 * bitmaps beside each entry.
 *
 * Memory: at most QCOW2_L2_CACHE_BYTES of tables per image and, for read-only images, at
 * most QCOW2_L2_CACHE_TOTAL for all open images together, so that a chain of thousands of
 * layers stays bounded (a read-only layer beyond the total reads into one shared scratch
 * buffer). A writable image always caches (its dirty tables must stay somewhere).
 *
 * Order (qemu's cache dependencies, kept with the refblock cache, qcow2/alloc.h): after
 * clusters were taken for new entries (qcow2_l2_depends_on_refblocks), the refblocks are
 * flushed before any table is written; after a refcount decrease, the tables are flushed
 * before any refblock (the allocator calls qcow2_l2_flush through m->rb.l2_flush). Guest
 * data (copy-on-write data included) is flushed before any table is written, so no entry
 * maps data that is not on disk. Tables are written through the metadata port
 * (qcow2_meta_pwrite, ign = QCOW2_OL_ACTIVE_L2). */
#ifndef QIMG_QCOW2_L2_H
#define QIMG_QCOW2_L2_H

#include <stdbool.h>
#include <stdint.h>

#include "format/be.h"
#include "qcow2/image.h"

#define QCOW2_L2_CACHE_BYTES (8u << 20)
#define QCOW2_L2_CACHE_TOTAL (32u << 20)

struct qcow2_l2_slot {
    uint64_t off;    /* host offset of the table; 0 = empty */
    uint64_t used;   /* LRU stamp */
    uint8_t *data;   /* one cluster, big-endian entries */
    bool dirty;
};

struct qcow2_l2_cache {
    struct qcow2_l2_slot *slot;
    size_t n;        /* slots */
    size_t filled;   /* slots 0..filled-1 have a buffer (counted in the total if !writable) */
    uint64_t tick;
    bool writable;
};

/* Make the cache of a writable image (RDWR open); read-only images get theirs on first
 * use. */
void qcow2_l2_cache_init(struct qcow2_image *m, bool writable);
/* Frees the cache (dirty tables are lost: flush first). */
void qcow2_l2_cache_free(struct qcow2_image *m);

/* The table at host offset off (cluster-aligned, checked by the caller) through the
 * cache. The pointer stays valid until the next qcow2_l2_load/_load_empty of this image
 * (of any image, for a read-only layer past the total). 0 or -errno. */
int qcow2_l2_load(struct qcow2_image *m, uint64_t off, uint8_t **t);
/* A slot for a new table at off, not read (qemu's qcow2_cache_get_empty). */
int qcow2_l2_load_empty(struct qcow2_image *m, uint64_t off, uint8_t **t);
void qcow2_l2_mark_dirty(struct qcow2_image *m, const uint8_t *t);
/* qemu's qcow2_cache_discard for a table whose cluster was freed: forgotten, not written. */
void qcow2_l2_forget(struct qcow2_image *m, uint64_t off);
/* Write every dirty table (refcounts and data first, see above), then flush the file. */
int qcow2_l2_flush(struct qcow2_image *m);

/* Entry i of table t (and its subcluster bitmap with extended L2, else 0). */
static inline uint64_t qcow2_l2_get(const struct qcow2_image *m, const uint8_t *t, uint64_t i)
{
    return be64_get(t + i * m->h.l2_entry_size);
}
static inline uint64_t qcow2_l2_get_bitmap(const struct qcow2_image *m, const uint8_t *t,
                                           uint64_t i)
{
    return m->geom.extended_l2 ? be64_get(t + i * 16 + 8) : 0;
}
static inline void qcow2_l2_set(const struct qcow2_image *m, uint8_t *t, uint64_t i,
                                uint64_t e)
{
    be64_put(t + i * m->h.l2_entry_size, e);
}
static inline void qcow2_l2_set_bitmap(const struct qcow2_image *m, uint8_t *t, uint64_t i,
                                       uint64_t b)
{
    if (m->geom.extended_l2)
        be64_put(t + i * 16 + 8, b);
}

/* qemu's qcow2_write_l1_entry: the entry l1_index (8 bytes: a buffered file's request
 * alignment is 1), written through the port (ign = QCOW2_OL_ACTIVE_L1) and flushed. */
int qcow2_write_l1_entry(struct qcow2_image *m, uint64_t l1_index);

/* qemu's qcow2_grow_l1_table: at least min_size entries (grown by 3/2 steps unless
 * exact); the new table allocated, written and flushed, the header pointed at it, the
 * old one freed. */
int qcow2_grow_l1_table(struct qcow2_image *m, uint64_t min_size, bool exact);

/* qemu's qcow2_shrink_l1_table: the entries from exact on zeroed on disk (l1_size kept)
 * and their tables freed (discarded). */
int qcow2_shrink_l1_table(struct qcow2_image *m, uint64_t exact);

/* qemu's get_cluster_table: the L2 table of guest offset off, made writable first (a
 * table without OFLAG_COPIED in its L1 entry is copied to a new one, l2_allocate, and the
 * old one's reference dropped; the L1 grows when too short). *l2_index is off's entry. */
int qcow2_l2_table_for_write(struct qcow2_image *m, uint64_t off, uint8_t **t,
                             uint64_t *l2_index);

#endif
