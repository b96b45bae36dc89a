/* The checker's repair hooks (struct qc2_fixer): each fix becomes plan entries, and the
 * in-memory state the passes use (L1, refblock cache, file size) follows the plan. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "format/be.h"
#include "qcow2/port.h"
#include "repair/repair.h"
#include "util/err.h"

void repair_drop_rb_cache(struct qc2 *s)
{
    qcow2_rb_cache_drop(&s->rb);
}

static void sync_size(struct qc2 *s)
{
    s->file_size = rp_plan(s)->size;
}

int repair_write(struct qc2 *s, unsigned ign, enum plan_class cls, uint64_t off,
                 const void *buf, size_t len, const char *fmt, ...)
{
    struct wport *w = &((struct repair_ctx *)s->fixer_ctx)->port.w;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->reason, sizeof(w->reason), fmt, ap);
    va_end(ap);
    w->cls = cls;
    return qcow2_meta_pwrite(&s->m, ign, off, buf, len);
}

int repair_set_refcount(struct qc2 *s, uint64_t k, uint64_t value, enum plan_class cls,
                        const char *why)
{
    uint64_t ti = k >> s->h.refcount_block_bits, idx = k & (s->h.refcount_block_entries - 1);
    uint8_t *blk;   /* the cache mirrors the planned image: patch the cached block */
    int rc = qc2_refblock_mut(s, ti, &blk);
    if (rc < 0)
        return rc;
    if (!blk)
        return -ENOSPC;   /* no refblock: only a rebuild can give this cluster a refcount */
    uint64_t old = qcow2_refblock_entry(blk, s->h.refcount_order, idx), byte;
    rc = qcow2_refblock_set(blk, (size_t)s->cs, s->h.refcount_order, idx, value);
    if (rc < 0)
        return rc;
    size_t nbytes;
    qcow2_refblock_entry_bytes(s->h.refcount_order, idx, &byte, &nbytes);
    uint64_t off = (s->rt[ti] & QCOW2_REFT_OFFSET_MASK) + byte;
    /* qemu checks the whole refblock when its cache writes it back: the guard rounds
     * the write out to its cluster */
    rc = repair_write(s, QCOW2_OL_REFCOUNT_BLOCK, cls, off, blk + byte, (size_t)nbytes,
                    "refcount of cluster %" PRIu64 ": %" PRIu64 " -> %" PRIu64 " (%s)", k, old,
                    value, why);
    sync_size(s);
    return rc;
}

int repair_refcount_run(struct qc2 *s, uint64_t first, uint64_t n, bool dec, uint64_t value,
                        enum plan_class cls, const char *why)
{
    uint64_t k = first, end = first + n;
    if (end < first)
        return -EINVAL;
    while (k < end) {
        uint64_t ti = k >> s->h.refcount_block_bits;
        uint64_t i0 = k & (s->h.refcount_block_entries - 1);
        uint64_t cnt = s->h.refcount_block_entries - i0 < end - k
                           ? s->h.refcount_block_entries - i0 : end - k;
        uint8_t *blk;   /* the cache mirrors the planned image: patch the cached block */
        int rc = qc2_refblock_mut(s, ti, &blk);
        if (rc < 0)
            return rc;
        if (!blk)
            return -ENOSPC;
        if (dec)
            for (uint64_t i = i0; i < i0 + cnt; i++)
                if (!qcow2_refblock_entry(blk, s->h.refcount_order, i))
                    return -EINVAL;
        for (uint64_t i = i0; i < i0 + cnt && rc >= 0; i++) {
            uint64_t v = dec ? qcow2_refblock_entry(blk, s->h.refcount_order, i) - 1 : value;
            rc = qcow2_refblock_set(blk, (size_t)s->cs, s->h.refcount_order, i, v);
        }
        if (rc < 0)
            return rc;
        uint64_t b0, b1;
        size_t nb;
        qcow2_refblock_entry_bytes(s->h.refcount_order, i0, &b0, &nb);
        qcow2_refblock_entry_bytes(s->h.refcount_order, i0 + cnt - 1, &b1, &nb);
        b1 += nb;
        uint64_t off = (s->rt[ti] & QCOW2_REFT_OFFSET_MASK) + b0;
        if (dec)
            rc = repair_write(s, QCOW2_OL_REFCOUNT_BLOCK, cls, off, blk + b0, (size_t)(b1 - b0),
                              "refcounts of clusters %" PRIu64 "..%" PRIu64 " decremented (%s)",
                              k, k + cnt - 1, why);
        else
            rc = repair_write(s, QCOW2_OL_REFCOUNT_BLOCK, cls, off, blk + b0, (size_t)(b1 - b0),
                              "refcounts of clusters %" PRIu64 "..%" PRIu64 " set to %" PRIu64
                              " (%s)", k, k + cnt - 1, value, why);
        sync_size(s);
        if (rc < 0)
            return rc;
        k += cnt;
    }
    return 0;
}

static int fx_set_refcount(struct qc2 *s, uint64_t k, uint64_t value)
{
    uint64_t old = 0;
    qc2_ondisk_refcount(s, k, &old);
    return repair_set_refcount(s, k, value, PC_REFCOUNT,
                               old > value ? "leaked" : "too low for its references");
}

static int fx_zero_l2_entry(struct qc2 *s, const struct finding *f, uint64_t bmp)
{
    uint8_t b[16];
    size_t n = s->h.l2_entry_size;
    bool data = f->kind == FK_DATA_UNALIGNED;
    if (s->geom.extended_l2) {
        be64_put(b, 0);
        be64_put(b + 8, (bmp | bmp << 32) & 0xffffffff00000000ull);
    } else {
        /* v2 has no zero flag: an unallocated entry is the only "no data" it has */
        be64_put(b, s->h.version >= 3 || !data ? QCOW2_OFLAG_ZERO : 0);
    }
    /* fix_l2_entry_by_zero: every class but the L2 tables */
    if (qcow2_overlap_check(&s->m, QCOW2_OL_L2_TABLES, f->entry_offset, n) < 0) {
        err_plain("ERROR: Overlap check failed\n");
        return -EIO;
    }
    int rc = repair_write(s, QCOW2_OL_L2_TABLES, PC_L2_ZERO, f->entry_offset, b, n,
                        "L2 entry %" PRIx64 " -> zero cluster (%s at unaligned offset 0x%" PRIx64 ")",
                        f->entry, data ? "data cluster" : "preallocated zero cluster", f->offset);
    if (rc < 0) {
        err_plain("ERROR: Failed to overwrite L2 table entry: %s\n", strerror(-rc));
        return rc;
    }
    if (data) {
        /* qemu never repairs this and cannot read the cluster (digest §13.4) */
        if (f->guest_offset != FIND_NONE)
            err_report("dropped the unaligned data cluster mapping of guest offset 0x%" PRIx64
                       " (l2_entry=%" PRIx64 " at file offset 0x%" PRIx64 "); the guest now "
                       "reads zeros %s", f->guest_offset, f->entry, f->entry_offset,
                       s->geom.extended_l2 ? "in the subclusters it had allocated" : "there");
        else
            err_report("dropped the unaligned data cluster mapping l2_entry=%" PRIx64
                       " at file offset 0x%" PRIx64 " (snapshot L2 table); the snapshot now "
                       "reads zeros there", f->entry, f->entry_offset);
    }
    return 0;
}

/* A refblock past EOF: grow the file as qemu does, but not to a size only a hostile
 * reftable entry asks for (README, "Differences from qemu-img"). An end past INT64_MAX
 * (UINT64_MAX from the caller when offset + cluster size overflows) is qemu's own
 * refusal, -EINVAL. */
static int fx_grow_file(struct qc2 *s, uint64_t new_size)
{
    struct plan *p = rp_plan(s);
    uint64_t limit = p->size * 2 + (1ull << 30);
    int err = new_size > INT64_MAX ? EINVAL : new_size > limit ? EFBIG : 0;
    if (err) {
        err_plain("ERROR could not resize image: %s\n", strerror(err));
        return -err;
    }
    wport_label(&((struct repair_ctx *)s->fixer_ctx)->port.w, PC_GROW,
                "grow the file for a refcount block past its end");
    int rc = qcow2_meta_truncate(&s->m, new_size);
    sync_size(s);
    return rc;
}

static int fx_write_l1_entry(struct qc2 *s, uint64_t i, uint64_t e)
{
    uint8_t b[8];
    be64_put(b, e);
    /* qcow2_write_l1_entry: every class but the active L1 (no message of its own) */
    int rc = repair_write(s, QCOW2_OL_ACTIVE_L1, PC_COPIED, s->h.l1_table_offset + i * 8, b, 8,
                        "OFLAG_COPIED of L1[%" PRIu64 "]: %" PRIx64 " -> %" PRIx64, i, s->l1[i], e);
    if (rc == 0)
        s->l1[i] = e;
    sync_size(s);
    return rc;
}

static int fx_write_l2_entries(struct qc2 *s, uint64_t l2, const uint8_t *t, uint64_t first,
                               uint64_t n)
{
    uint64_t esz = s->h.l2_entry_size;
    /* check_oflag_copied checks the whole table, ignoring the L2 classes */
    int orc = qcow2_overlap_check(&s->m, QCOW2_OL_L2_TABLES, l2, s->cs);
    if (orc < 0) {
        err_plain("ERROR: Could not write L2 table; metadata overlap check failed: %s\n",
                  strerror(-orc));
        return orc;
    }
    int rc = repair_write(s, QCOW2_OL_L2_TABLES, PC_COPIED, l2 + first * esz, t + first * esz,
                        (size_t)(n * esz), "OFLAG_COPIED of L2 table 0x%" PRIx64 " entries %"
                        PRIu64 "..%" PRIu64, l2, first, first + n - 1);
    if (rc < 0)
        err_plain("ERROR: Could not write L2 table: %s\n", strerror(-rc));
    sync_size(s);
    return rc;
}

const struct qc2_fixer repair_fixer = {
    .zero_l2_entry = fx_zero_l2_entry,
    .grow_file = fx_grow_file,
    .set_refcount = fx_set_refcount,
    .write_l1_entry = fx_write_l1_entry,
    .write_l2_entries = fx_write_l2_entries,
};
