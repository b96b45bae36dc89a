/* The header's incompatible-features field (offset 72) across a repair: the crash guard's
 * corrupt bit set first, put back after a failed write, set alone after an overlap refusal,
 * and the final value once the double check has judged the result. Every write of it is a
 * plan entry, so it is journaled like the repair's own writes. The command that drives a
 * repair (src/cmd/check_repair.c) calls these in that order and prints the messages. */
#ifndef QIMG_REPAIR_INCOMPAT_H
#define QIMG_REPAIR_INCOMPAT_H

#include <stdint.h>

#include "checker/check.h"
#include "io/qio.h"
#include "journal/journal.h"
#include "journal/plan.h"

/* version and cluster_bits as the header on q holds them (zeros past EOF). */
void repair_header_peek(qio_t *q, uint32_t *version, uint32_t *cluster_bits);

/* incompatible_features as the header holds them now (v2: none). 0 or -errno. */
int repair_incompat_read(qio_t *q, uint32_t version, uint64_t *out);

/* The field after the repair: corrupt and dirty cleared iff the double check (rc, r) finds
 * the image consistent (qemu's rule), otherwise orig, as it was before. */
uint64_t repair_incompat_final(uint64_t orig, int rc, const struct check_result *r);

/* The guard: a v3 image's corrupt bit set by the first write of a non-empty plan (unless it
 * is set already), so no qemu writes to a half-repaired image. Returns the field's value
 * once the guard is written (orig if there is none). */
uint64_t repair_incompat_guard(struct plan *p, uint32_t version, uint64_t orig);

/* The dry run's last plan entry: the field from `from` to `to` (v3, when they differ). */
int repair_incompat_plan(struct plan *p, uint32_t version, uint64_t from, uint64_t to);

/* After the double check: the field from what it holds now to want (v3, when they
 * differ), journaled. 0 or -errno. */
int repair_incompat_settle(qio_t *q, journal_t *j, uint32_t version, uint64_t want);

/* After a failed write: the field put back to orig, journaled (the writes made so far are
 * ordered so that the image is no worse than before, so the guard need not stay; qemu,
 * which has no guard, leaves the bit as it was too). 0 (also: nothing to do) or -errno. */
int repair_incompat_restore(qio_t *q, journal_t *j, uint32_t version, uint64_t orig);

/* The overlap guard refused a fix: qemu's qcow2_signal_corruption marks the image corrupt
 * (v3: this field alone; v2 has no such bit) and its in-place fixes so far stay written.
 * qimg writes none of its planned fixes, only the corrupt bit (journaled when j is set, and
 * the journal finished), so the image keeps every byte it had and qemu refuses to open it
 * read-write until it is repaired. */
void repair_mark_corrupt(qio_t *q, journal_t *j, uint32_t version, uint64_t orig);

#endif
