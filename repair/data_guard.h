/* Repair's additions to the model's overlap guard (qcow2/overlap.h, which every repair
 * write passes through qcow2_meta_pwrite with qemu's `ign` sets: fix_l2_entry_by_zero
 * both L2 classes; check_oflag_copied the active L1 for an L1 entry, the L2 classes for
 * an L2 table; refblock writes refcount blocks; the rebuild and the new snapshot table
 * none; header fields (corrupt bit, nb_snapshots, reftable switch) are not checked, as in
 * qemu):
 *   - qimg's own class, guest data (QCOW2_OL_EXTRA): no write lands in a cluster that an
 *     L2 entry of the active image or of a snapshot maps as guest data (judged on the
 *     image before the repair; README, "Differences from qemu-img"), with its own event
 *     text naming the owner;
 *   - the refusal kept for the repair (which marks the image corrupt and explains it);
 *   - the explanation of a refusal and the last check of the plan before it is applied.
 * The model guards a snapshot L1 whose l1_size exceeds qemu's limit only over the entries
 * its virtual disk needs, not a garbage 64 MiB+ range (also a documented difference). */
#ifndef QIMG_REPAIR_DATA_GUARD_H
#define QIMG_REPAIR_DATA_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow2/overlap.h"

struct qc2;
struct plan;

#define OL_GUEST_DATA QCOW2_OL_EXTRA

/* Zero-initialised = nothing built yet. Lives in struct repair_ctx. */
struct overlap_guard {
    bool data_built;              /* guest data maps (built once, before any fix) */
    uint8_t *data_active, *data_snap;   /* bit per cluster [0, data_clusters) */
    uint64_t data_clusters;
    /* the first refused write (0: none) */
    unsigned refused, refused_ign;
    uint64_t refused_off, refused_len;
};

/* Add the guest-data class and the refusal record to s's model guard (after open). */
void overlap_guard_attach(struct qc2 *s);
void overlap_guard_free(struct overlap_guard *g);

/* Build what the guard needs from s now (the model's class ranges, then the guest data
 * maps; done lazily by the first check). 0 or -errno. */
int overlap_guard_prepare(struct qc2 *s, struct overlap_guard *g);
/* Is cluster k mapped as guest data (allocators keep clear of it)? Needs prepare. */
bool overlap_data_cluster(const struct overlap_guard *g, uint64_t k);

/* The class (qemu's order, then guest data) of metadata that the write [off, off+len)
 * would overlap, ign excluded; 0 if none; -errno if the metadata cannot be read. */
int overlap_find(struct qc2 *s, struct overlap_guard *g, unsigned ign, uint64_t off,
                 uint64_t len);

/* After a refusal: name the tables that cannot be real (an L1 table lying on other
 * metadata or on guest data of the active image) and what -r all would have to drop. */
void overlap_explain(struct qc2 *s);

/* The last line of defence before anything is written: no planned write outside the
 * header cluster touches a guest data cluster. 0, or -EIO with a message. */
int overlap_verify_plan(const struct overlap_guard *g, const struct plan *p, uint64_t cs);

#endif
