/* The metadata overlap guard of the qcow2 model (qemu's qcow2_check_metadata_overlap and
 * qcow2_pre_write_overlap_check, block/qcow2-refcount.c). qcow2_overlap_check (port.h) is
 * the guard every metadata write passes through (qcow2_meta_pwrite calls it); this header
 * holds what its users need beyond that.
 *
 * Classes (QCOW2_OL_*, port.h) and their test order are qemu's; the ranges come from the
 * model: header (cluster 0), active L1 (h.l1_table_offset, l1_size), active L2 (m->l1),
 * refcount table (rt_entries), refcount blocks (m->rt), snapshot table (sn_offset,
 * sn_size), inactive L1 (m->sn), inactive L2 (the snapshots' L1 tables, read from the
 * file: qemu's overlap-check=all only) and bitmap directory (ext, with the autoclear bit).
 * A write is rounded out to whole clusters, as qemu does; the class ranges are exact.
 * The checked set is qemu's default "cached" one (every class but inactive L2) unless
 * qcow2_overlap_set_checks says otherwise.
 *
 * Cost: the class ranges are built once, on the first check, and kept sorted (util/
 * rangeset.h); a check is O(log n) per class. WRITERS MUST TELL THE GUARD when they change
 * where metadata lies, after updating the model (m->l1, m->rt, h, sn...):
 *   - new metadata only (a new L2 table, a new refblock): qcow2_overlap_add(m, class, off,
 *     len), cheap (a short list checked beside the sorted ranges; a full one triggers a
 *     rebuild);
 *   - anything moved or freed (L1 table grown and moved, reftable grown, a snapshot
 *     created or deleted, the snapshot table rewritten, bitmap directory changed, an L2
 *     table or refblock freed): qcow2_overlap_invalidate(m); the next check rebuilds
 *     from the model (O(L1 + reftable entries), as one of qemu's own checks costs).
 * A stale guard refuses writes into freed metadata and misses new metadata.
 *
 * A refusal is qemu's qcow2_signal_corruption: the event
 *   qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with
 *   CLASS); further corruption events will be suppressed
 * on stderr once per image, the corrupt bit written on v3 images (offset 72, through the
 * port like any metadata write; not itself guarded: qemu's qcow2_mark_corrupt writes the
 * header field directly), and -EIO for this and every later guarded write that hits.
 *
 * A user may add one class of its own (QCOW2_OL_EXTRA, checked after qemu's; repair adds
 * "guest data": clusters an L2 entry maps) and may print the event itself (hook). */
#ifndef QIMG_QCOW2_OVERLAP_H
#define QIMG_QCOW2_OVERLAP_H

#include <stdbool.h>
#include <stdint.h>

#include "qcow2/image.h"
#include "qcow2/port.h"

#define QCOW2_OL_EXTRA (1u << 9)      /* the user's own class (hook.hits) */
#define QCOW2_OL_NCLASSES 10
#define QCOW2_OL_L2_TABLES (QCOW2_OL_ACTIVE_L2 | QCOW2_OL_INACTIVE_L2)
/* qemu's overlap-check=cached (its default) and =all */
#define QCOW2_OL_CACHED (0x1ffu & ~QCOW2_OL_INACTIVE_L2)
#define QCOW2_OL_CHECK_ALL 0x1ffu
#define QCOW2_OL_RECENT_MAX 64   /* qcow2_overlap_add ranges kept before a rebuild */

struct qcow2_ol_hook {
    void *ctx;
    /* QCOW2_OL_EXTRA: does the write [a, b) (whole clusters) hit the user's class? */
    bool (*hits)(void *ctx, uint64_t a, uint64_t b);
    /* every refusal (cls the class hit), before the event */
    void (*refused)(void *ctx, unsigned cls, unsigned ign, uint64_t off, uint64_t len);
    /* print the event for cls instead of the model (true: printed) */
    bool (*event)(void *ctx, unsigned cls, uint64_t off, uint64_t len);
};

/* Which classes are checked (qemu's overlap-check option; QCOW2_OL_CACHED by default);
 * QCOW2_OL_EXTRA is checked when a hook with hits is set. */
void qcow2_overlap_set_checks(struct qcow2_image *m, unsigned classes);
/* The user's class and event (copied; NULL removes it). */
void qcow2_overlap_set_hook(struct qcow2_image *m, const struct qcow2_ol_hook *hook);

/* The class ranges no longer match the metadata: rebuild them on the next check. */
void qcow2_overlap_invalidate(struct qcow2_image *m);
/* New metadata of class cls at [off, off+len) (see above). */
void qcow2_overlap_add(struct qcow2_image *m, unsigned cls, uint64_t off, uint64_t len);
/* Build the class ranges now (done lazily by the first check). 0 or -errno. */
int qcow2_overlap_prepare(struct qcow2_image *m);
/* Are they built (a check got past the header test since the last invalidation)? */
bool qcow2_overlap_ready(const struct qcow2_image *m);

/* The class (qemu's order, then QCOW2_OL_EXTRA) that the write [off, off+len) would
 * overlap, ign excluded; 0 if none; -errno if metadata cannot be read. No event. */
int qcow2_overlap_find(struct qcow2_image *m, unsigned ign, uint64_t off, uint64_t len);

/* Exact byte queries on the built class ranges (diagnostics; prepare first): does a
 * range of any class in cls overlap [a, b), and how many ranges of class cls do. */
bool qcow2_overlap_hits(const struct qcow2_image *m, unsigned cls, uint64_t a, uint64_t b);
uint64_t qcow2_overlap_count(const struct qcow2_image *m, unsigned cls, uint64_t a,
                             uint64_t b);

/* How many entries of snapshot sn's L1 table the inactive-L1 class covers: all (qemu),
 * except for an l1_size past qemu's limit, which the check reports as corrupt and never
 * walks: then only the entries its virtual disk needs (README, "Differences"). */
uint64_t qcow2_overlap_snapshot_l1_entries(const struct qcow2_image *m,
                                           const struct qcow2_snapshot *sn);

/* The first refusal since open (0: none), for callers that explain it. */
unsigned qcow2_overlap_refused(const struct qcow2_image *m, unsigned *ign, uint64_t *off,
                               uint64_t *len);

/* qemu's metadata_ol_names ("active L1 table", ...); "guest data" for QCOW2_OL_EXTRA. */
const char *qcow2_overlap_class_name(unsigned cls);

/* Frees the guard's state (qcow2_image_close does). */
void qcow2_overlap_free(struct qcow2_image *m);

#endif
