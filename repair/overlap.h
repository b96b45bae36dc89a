/* The overlap guard of every repair write (qemu's qcow2_check_metadata_overlap and
 * qcow2_pre_write_overlap_check), plus one class of qimg's own: clusters that an L2 entry
 * maps as guest data. One place for all of it; the write engine absorbs it later.
 *
 * Classes and their test order are qemu's (block/qcow2-refcount.c); each fix passes qemu's
 * `ign` set (fix_l2_entry_by_zero: both L2 classes; check_oflag_copied: active L1 for the
 * L1 entry, the L2 classes for the L2 table; refblock writes: refcount blocks; rebuild and
 * the new snapshot table: none). Header-field writes (corrupt bit, nb_snapshots, reftable
 * switch) are not checked, as in qemu.
 *
 * The classes checked are qemu's default "cached" set (OL_DEFAULT): inactive L2 tables are
 * known but not checked, as in qemu 7.2 (a snapshot's garbage L1 entry would otherwise block
 * fixes of the real structure it names, e.g. the active L1). Deliberate differences
 * (README, "Differences from qemu-img"):
 *   - a snapshot L1 whose l1_size exceeds qemu's limit (the check skips it as corrupt)
 *     guards only the entries its virtual disk needs, not a garbage 64 MiB+ range;
 *   - OL_GUEST_DATA: no write lands in a cluster that an L2 entry of the active image or
 *     of a snapshot maps as guest data (judged on the image before the repair). */
#ifndef QIMG_REPAIR_OVERLAP_H
#define QIMG_REPAIR_OVERLAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qc2;
struct plan;

enum ol_class {
    OL_MAIN_HEADER = 1u << 0,
    OL_ACTIVE_L1 = 1u << 1,
    OL_ACTIVE_L2 = 1u << 2,
    OL_REFCOUNT_TABLE = 1u << 3,
    OL_REFCOUNT_BLOCK = 1u << 4,
    OL_SNAPSHOT_TABLE = 1u << 5,
    OL_INACTIVE_L1 = 1u << 6,
    OL_INACTIVE_L2 = 1u << 7,
    OL_BITMAP_DIRECTORY = 1u << 8,
    OL_GUEST_DATA = 1u << 9,      /* qimg only */
};
#define OL_NCLASSES 10
#define OL_L2_TABLES (OL_ACTIVE_L2 | OL_INACTIVE_L2)
/* qemu's overlap-check=cached, plus guest data */
#define OL_DEFAULT (((1u << OL_NCLASSES) - 1) & ~OL_INACTIVE_L2)

struct ol_range {
    uint64_t start, end;          /* bytes [start, end) */
};

struct ol_set {
    struct ol_range *v;           /* sorted by start */
    uint64_t *max_end;            /* max_end[i] = max end of v[0..i] */
    size_t n, alloc;
};

/* Zero-initialised = nothing built yet. Lives in struct repair_ctx. */
struct overlap_guard {
    bool built;                   /* class ranges match the current metadata */
    struct ol_set cls[OL_NCLASSES];
    bool data_built;              /* guest data maps (built once, before any fix) */
    uint8_t *data_active, *data_snap;   /* bit per cluster [0, data_clusters) */
    uint64_t data_clusters;
    /* the first refused write (0: none) */
    unsigned refused, refused_ign;
    uint64_t refused_off, refused_len;
};

void overlap_guard_free(struct overlap_guard *g);
/* The reftable or the snapshot list changed: rebuild the class ranges on the next check. */
void overlap_guard_invalidate(struct overlap_guard *g);

/* Build what the guard needs from s now (done lazily by the first check). 0 or -errno. */
int overlap_guard_prepare(struct qc2 *s, struct overlap_guard *g);
/* Is cluster k mapped as guest data (allocators keep clear of it)? Needs prepare. */
bool overlap_data_cluster(const struct overlap_guard *g, uint64_t k);

/* The class (qemu's order, then OL_GUEST_DATA) of metadata that the write [off, off+len)
 * would overlap, ign excluded; 0 if none; -errno if the metadata cannot be read. */
int overlap_find(struct qc2 *s, struct overlap_guard *g, unsigned ign, uint64_t off,
                 uint64_t len);

/* qemu's qcow2_pre_write_overlap_check for a repair write: 0, or on a hit prints qemu's
 * "Marking image as corrupt: Preventing invalid write on ..." once, records the refusal
 * (the repair then marks the image corrupt, as qemu does) and returns -EIO. */
int overlap_pre_write(struct qc2 *s, unsigned ign, uint64_t off, uint64_t len);

const char *overlap_class_name(unsigned cls);

/* After a refusal: name the tables that cannot be real (an L1 table lying on other
 * metadata or on guest data of the active image) and what -r all would have to drop. */
void overlap_explain(struct qc2 *s);

/* The last line of defence before anything is written: no planned write outside the
 * header cluster touches a guest data cluster. 0, or -EIO with a message. */
int overlap_verify_plan(const struct overlap_guard *g, const struct plan *p, uint64_t cs);

#endif
