/* §3.6: computed (IMRT) vs stored refcounts, one refblock read per block. */
#include <errno.h>
#include <string.h>

#include "checker/qcow2_check.h"
#include "format/qcow2_refcount.h"

static void mismatch(struct qc2 *s, uint64_t i, uint64_t disk, uint64_t ref)
{
    struct finding f = finding_make(disk < ref ? (disk == 0 ? FK_REFCOUNT_ZERO : FK_REFCOUNT_LOW)
                                               : FK_REFCOUNT_LEAK);
    if (disk == 0)
        s->rebuild = true;
    f.cluster = i;
    f.offset = i << s->h.cluster_bits;
    f.found = disk;
    f.expected = ref;
    f.rt_index = i >> s->h.refcount_block_bits;
    /* a fixing compare (§3.6): leaks under -r leaks, too-low refcounts under -r all */
    if (disk && s->fixer &&
        ((disk > ref && (s->fix & CHECK_FIX_LEAKS)) || (disk < ref && (s->fix & CHECK_FIX_ERRORS)))) {
        f.flags |= FF_REPAIRING;
        if (s->fixer->set_refcount(s, i, ref) == 0) {
            findings_add(s->fl, &f);
            if (disk > ref)
                s->res->leaks_fixed++;
            else
                s->res->corruptions_fixed++;
            return;
        }
    }
    qc2_report(s, &f);
}

/* Whole-block fast path for the common widths: true if every stored refcount of the block
 * equals the computed one (then *hi becomes the last cluster in use, if any). A spilled
 * IMRT byte always takes the exact path. */
static bool block_matches(const struct qc2 *s, const uint8_t *blk, uint64_t base, uint64_t cnt,
                          int64_t *hi)
{
    const uint8_t *ref;
    unsigned bad = 0;
    if (s->imrt.bits < 8) {
        /* packed alike on disk and in the IMRT (base is a whole number of bytes in) */
        unsigned per = 8 / s->imrt.bits;
        uint64_t whole = cnt / per, rest = cnt % per;
        ref = s->imrt.v + base / per;
        if (memcmp(blk, ref, (size_t)whole))
            return false;
        if (rest && ((blk[whole] ^ ref[whole]) & ((1u << (rest * s->imrt.bits)) - 1)))
            return false;
        for (uint64_t i = cnt; i-- > 0;)
            if ((ref[i / per] >> ((i % per) * s->imrt.bits)) & ((1u << s->imrt.bits) - 1)) {
                *hi = (int64_t)(base + i);
                break;
            }
        return true;
    }
    ref = s->imrt.v + base;
    /* one loop per width with a constant order: the entry read inlines to a plain load and
     * the loops vectorize */
    if (s->h.refcount_order == 4) {
        for (uint64_t i = 0; i < cnt; i++)
            bad |= ((unsigned)qcow2_refblock_entry(blk, 4, i) ^ ref[i]) | (ref[i] == IMRT_SPILL);
    } else if (s->h.refcount_order == 3) {
        for (uint64_t i = 0; i < cnt; i++)
            bad |= ((unsigned)qcow2_refblock_entry(blk, 3, i) ^ ref[i]) | (ref[i] == IMRT_SPILL);
    } else if (s->h.refcount_order == 5) {
        for (uint64_t i = 0; i < cnt; i++)
            bad |= (qcow2_refblock_entry(blk, 5, i) != ref[i]) | (ref[i] == IMRT_SPILL);
    } else {
        for (uint64_t i = 0; i < cnt; i++)
            bad |= (qcow2_refblock_entry(blk, 6, i) != ref[i]) | (ref[i] == IMRT_SPILL);
    }
    if (bad)
        return false;
    for (uint64_t i = cnt; i-- > 0;)
        if (ref[i]) {
            *hi = (int64_t)(base + i);
            break;
        }
    return true;
}

/* One refblock's worth of clusters at a time: the block is fetched once. */
void qc2_pass_compare(struct qc2 *s)
{
    uint64_t per = s->h.refcount_block_entries;
    s->highest_cluster = 0;
    for (uint64_t base = 0; base < s->imrt.n; base += per) {
        uint64_t end = s->imrt.n - base < per ? s->imrt.n : base + per;
        uint64_t ti = base >> s->h.refcount_block_bits;
        const uint8_t *blk;
        bool was_signaled = s->signaled_corruption;
        int rc = qc2_refblock(s, ti, &blk);
        if (rc == 0 && blk && block_matches(s, blk, base, end - base, &s->highest_cluster))
            continue;
        for (uint64_t i = base; i < end; i++) {
            if (rc < 0) {
                /* qemu retries (and fails) for every cluster of the block */
                struct finding f = finding_make(FK_REFCOUNT_READ_ERROR);
                f.err = rc;
                f.cluster = i;
                f.rt_index = ti;
                f.offset = s->rt[ti] & QCOW2_REFT_OFFSET_MASK;
                /* qemu signals corruption for an unaligned refblock offset only (a
                 * failing read is -EIO too: an offset past 2^63 fails qemu's request check) */
                if (!was_signaled && rc == -EIO && (f.offset & (s->cs - 1))) {
                    s->signaled_corruption = true;
                    was_signaled = true;
                    f.flags |= FF_SIGNAL | (s->fixer ? FF_FATAL : 0);
                }
                qc2_report(s, &f);
                continue;
            }
            uint64_t disk = blk ? qcow2_refblock_entry(blk, s->h.refcount_order, i - base)
                                : 0;
            uint64_t ref = imrt_get(&s->imrt, i);
            if (disk | ref)
                s->highest_cluster = (int64_t)i;
            if (disk != ref)
                mismatch(s, i, disk, ref);
        }
    }
}
