/* Internal snapshots written into the one qcow2 model, as qemu 7.2's block/qcow2-snapshot.c
 * and qcow2_update_snapshot_refcount (block/qcow2-refcount.c) write them, in qemu's order
 * and with qemu's allocations (qcow2/alloc.h), so that the resulting files are qemu's:
 *   create   the active L1 copied to new clusters, +1 on every L2 table and cluster it
 *            reaches (OFLAG_COPIED cleared where the refcount is no longer 1), the snapshot
 *            table rewritten into new clusters, the header switched, the old table freed;
 *   delete   the entry removed (table rewritten), -1 on what its L1 reaches, its L1 freed,
 *            then OFLAG_COPIED set again in the active tables where refcounts went to 1;
 *   goto     +1 on the snapshot's tables, its L1 copied over the active one, -1 on the old
 *            active tables, OFLAG_COPIED brought up to date.
 * The model is a writable image (RDWR, activated, with the block driver's writer caches);
 * every write goes through the metadata port (qcow2/port.h), so --dry-run and --journal
 * see them all. A crash between any two writes leaves leaks at worst (qemu's order:
 * refcounts before the tables that use them, tables before the pointers to them).
 *
 * Errors: -errno. A metadata inconsistency met on the way (an unaligned L2 table or cluster
 * offset) is qemu's fatal corruption event: -EIO with *corrupt (malloc'd) the event's text
 * for the caller to report (block/image.h image_corrupt). */
#ifndef QIMG_QCOW2_SNAPSHOT_WRITE_H
#define QIMG_QCOW2_SNAPSHOT_WRITE_H

#include <stdint.h>

#include "qcow2/image.h"

/* qemu's QCOW_MAX_SNAPSHOTS */
#define QCOW2_MAX_SNAPSHOTS 65536u

/* qemu's qcow2_update_snapshot_refcount: addend -1, 0 or +1 on every L2 table and cluster
 * the L1 table at l1_off (l1_size entries; the active one is taken from the model) reaches,
 * OFLAG_COPIED recomputed in the L2 tables and (addend >= 0) the L1 table. */
int qcow2_update_snapshot_refcount(struct qcow2_image *m, uint64_t l1_off, uint64_t l1_size,
                                   int addend, char **corrupt);

/* qemu's qcow2_write_snapshots: m->sn[0..nb_sn) written to newly allocated clusters, the
 * header's nb_snapshots and snapshots_offset switched, the old table freed. */
int qcow2_write_snapshots(struct qcow2_image *m);

/* qemu's qcow2_snapshot_create for a disk-only snapshot named name (id: the next free
 * number), with the given date, VM clock 0, VM state 0, icount 0 (qemu-img's memset). */
int qcow2_snapshot_create(struct qcow2_image *m, const char *name, uint32_t date_sec,
                          uint32_t date_nsec, char **corrupt);

/* qemu's find_snapshot_by_id_and_name (id or name may be NULL) / find_snapshot_by_id_or_name:
 * the index or -1. */
long qcow2_snapshot_find(const struct qcow2_image *m, const char *id, const char *name);
long qcow2_snapshot_find_id_or_name(const struct qcow2_image *m, const char *s);

/* qemu's qcow2_validate_table for snapshot index's L1 table: 0, or -EFBIG / -EINVAL with
 * *msg ("Snapshot L1 table too large" / "... offset invalid", static). */
int qcow2_snapshot_validate_l1(const struct qcow2_image *m, uint32_t index, const char **msg);

/* qemu's qcow2_snapshot_delete after the lookup and table validation: snapshot index
 * removed. On failure *what (static) is qemu's message before the errno text. */
int qcow2_snapshot_delete_at(struct qcow2_image *m, uint32_t index, const char **what,
                             char **corrupt);

/* qemu's qcow2_snapshot_goto after the lookup, the table validation and the resize to the
 * snapshot's disk size (the caller's: it goes through the block driver). */
int qcow2_snapshot_goto_at(struct qcow2_image *m, uint32_t index, char **corrupt);

#endif
