/* qimg-only deep checks (--deep). Each finding kind is FK_DEEP_*; with --deep they
 * count as corruptions (exit 2), without it they never run. */
#ifndef QIMG_CHECKER_QCOW2_DEEP_H
#define QIMG_CHECKER_QCOW2_DEEP_H

#include "checker/qcow2_check.h"

/* A compressed descriptor reached in an L2 walk (f: location, for the finding). */
void qc2_deep_compressed(struct qc2 *s, uint64_t entry, const struct qcow2_compressed *c,
                         const struct finding *where);
/* A NORMAL / ZERO_ALLOC / ZERO_PLAIN entry. */
void qc2_deep_l2_entry(struct qc2 *s, enum qcow2_cluster_type type, uint64_t entry,
                       const struct finding *where);
/* Snapshot i, before its L1 is walked. */
void qc2_deep_snapshot(struct qc2 *s, uint32_t i);

#endif
