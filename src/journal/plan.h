/* A plan: the ordered list of writes an in-place change makes (a repair, or a --dry-run /
 * --journal command), each with its reason: the write port's plan backend stores it
 * (io/wport.h). A first (simulated) pass records writes here instead of touching the
 * image; the plan is then printed (--dry-run) or journaled and applied (wport_apply).
 *
 * The overlay (plan_overlay_qio) is a read-only qio that shows the image as if the plan
 * had been applied, so the checker passes of a fixing run read back their own fixes,
 * exactly as qemu's in-place repair does. Memory: the plan holds the new and old bytes of
 * every write; writes are metadata (refcounts, table entries, tables), so this follows
 * the image's metadata size. */
#ifndef QIMG_JOURNAL_PLAN_H
#define QIMG_JOURNAL_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "io/qio.h"

enum plan_op { PLAN_WRITE, PLAN_TRUNCATE };

/* What a write belongs to; a flush separates writes of different classes. */
enum plan_class {
    PC_GUARD,        /* corrupt bit set while the repair runs */
    PC_SNAPSHOT,     /* nb_snapshots / snapshot table rewrite */
    PC_L2_ZERO,      /* unaligned preallocated zero cluster -> zero entry */
    PC_GROW,         /* file grown for a refblock past EOF */
    PC_REBUILD,      /* new refblocks and reftable */
    PC_REBUILD_HDR,  /* header switched to the new reftable */
    PC_REFCOUNT,     /* a stored refcount set to the computed one */
    PC_COPIED,       /* OFLAG_COPIED in L1/L2 */
    PC_HEADER,       /* final header bits (corrupt/dirty) */
    PC_TABLE,        /* QED: an L1 or L2 table with its invalid entries cleared */
};
#define PC_LAST PC_TABLE

struct plan_entry {
    enum plan_op op;
    enum plan_class cls;
    uint64_t offset;       /* write: file offset; truncate: new size */
    uint64_t len;          /* write length */
    uint8_t *new_bytes;    /* write: the bytes written */
    uint8_t *old_bytes;    /* write: the bytes there just before this write */
    uint64_t cap;          /* write: bytes allocated for new_bytes and old_bytes each */
    uint64_t old_size;     /* file size before this entry */
    char *reason;
};

struct plan_pages;

struct plan {
    qio_t *base;           /* the image, read-only */
    uint64_t base_size;
    uint64_t size;         /* size with the plan applied */
    struct plan_entry *v;
    size_t n, alloc;
    uint64_t lo, hi;       /* byte range any write touches (read fast path) */
    struct plan_pages *pages; /* the planned bytes of every page a write touched, so a
                               * read costs a lookup per page, not a walk of the plan */
    bool no_merge;         /* next write starts a new entry */
};

void plan_init(struct plan *p, qio_t *base);
void plan_free(struct plan *p);

/* Record a write (merged into the previous entry when it is the same class and extends
 * it contiguously within one cluster-sized run). reason is printf-style. */
int plan_write(struct plan *p, enum plan_class cls, uint64_t off, const void *buf,
               size_t len, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
int plan_truncate(struct plan *p, enum plan_class cls, uint64_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Insert a write at the front (the crash guard); old bytes read from the base. */
int plan_prepend_write(struct plan *p, enum plan_class cls, uint64_t off, const void *buf,
                       size_t len, const char *reason);

/* Read through the plan: base bytes (zeros past EOF) with every write applied. */
int plan_read(struct plan *p, void *buf, size_t n, uint64_t off);

/* A qio showing the planned image (reads only); close it before plan_free. */
qio_t *plan_overlay_qio(struct plan *p);

const char *plan_class_name(enum plan_class c);
/* The plan as JSON, key "repair-plan" of object j (ctx: the plan): a dry run's report. */
struct json;
void plan_add_json(struct json *j, const void *ctx);
void plan_print(const struct plan *p, FILE *out);
uint64_t plan_bytes(const struct plan *p);

#endif
